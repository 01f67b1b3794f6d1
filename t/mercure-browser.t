# The reference Mercure hub's public conformance cases (its conformance-tests/, Playwright),
# written again here and run the same way: in Debian's Chromium (t/js/browser.mjs), a page of the
# hub's origin opens an EventSource on /.well-known/mercure with the case's topic selectors,
# POSTs the case's update with fetch() and a publisher's token, and says whether the update
# arrived (its id and its multi-line data intact) and how the publish was answered (200,
# text/plain, the id). The cases: raw string, several selectors, URI, URI template, the three
# non-matching ones and the three private ones (an anonymous EventSource must not get a private
# update). The reference suite waits 2 s for an update that must not come; here the page also
# subscribes to a sentinel topic and publishes to it after the case's update, so "not received"
# is read when the sentinel arrives (the bus keeps publish order), whatever the machine's speed.
use strict;
use warnings;
use lib 't/lib';
use File::Temp ();
use JSON::PP;
use SSETest;
use SSEBrowser;
use SSEMercure;
use Test::More;

SSEBrowser::require_or_skip();

my $keys = File::Temp::tempdir('mod_sse-mercure-browser-XXXXXX', TMPDIR => 1, CLEANUP => 1);
chmod 0755, $keys;
my $key = SSEMercure::secret_file($keys);
my $srv = SSETest::Server->start(
    global => "AddType text/html .html\n",
    conf => SSEMercure::hub_location('/.well-known/mercure', "HS256 $key->{file}", anonymous => 1));
{
    open my $fh, '>', $srv->dir . '/htdocs/index.html' or die $!;
    print $fh "<!doctype html><html><head><title>hub</title></head><body></body></html>\n";
    close $fh;
}
my $publisher = SSEMercure::token($key, {publish => ['*'], subscribe => ['*']});

my @r = map { sprintf '%08x%08x', int(rand 2**32), int(rand 2**32) } 1 .. 6;
my @cases = (
    {name => 'raw string', received => 1, topics => [$r[0]], selectors => [$r[0]]},
    {name => 'multiple topic selectors', received => 1, topics => [$r[2]],
     selectors => ['foo', $r[2]]},
    {name => 'URI', received => 1, topics => ["https://example.net/foo/$r[3]"],
     selectors => ["https://example.net/foo/$r[3]"]},
    {name => 'URI template', received => 1, topics => ["https://example.net/foo/$r[4]"],
     selectors => ['https://example.net/foo/{random}']},
    {name => 'nonmatching raw string', received => 0, topics => ['will-not-match'],
     selectors => ['another-name']},
    {name => 'nonmatching URI', received => 0, topics => ['https://example.net/foo/will-not-match'],
     selectors => ['https://example.net/foo/another-name']},
    {name => 'nonmatching URI template', received => 0,
     topics => ['https://example.net/foo/will-not-match'],
     selectors => ['https://example.net/bar/{var}']},
    {name => 'private raw string', received => 0, private => 1, topics => [$r[0]],
     selectors => [$r[0]]},
    {name => 'private URI', received => 0, private => 1,
     topics => ["https://example.net/foo/$r[3]"], selectors => ["https://example.net/foo/$r[3]"]},
    {name => 'private URI template', received => 0, private => 1,
     topics => ["https://example.net/foo/$r[4]"], selectors => ['https://example.net/foo/{random}']},
);

# One case in the page: subscribe (the case's selectors and a sentinel), publish the case's
# update, then the sentinel's; resolves once the sentinel arrived, at most after 15 s.
my $page_case = <<'JS';
async (c) => {
  const url = new URL('/.well-known/mercure', window.origin);
  for (const s of c.selectors) url.searchParams.append('topic', s);
  url.searchParams.append('topic', c.sentinel);
  const data = 'data for\n\n        ' + c.name;
  let received = false, opened, sentinel;
  const open = new Promise((resolve) => { opened = resolve; });
  const done = new Promise((resolve) => { sentinel = resolve; });
  const es = new EventSource(url);
  es.onopen = () => opened();
  es.onmessage = (e) => {
    if (e.lastEventId === c.id && e.data === data) received = true;
    if (e.lastEventId === c.sentinel) sentinel(true);
  };
  const post = (topics, id, body, priv) => {
    const form = new URLSearchParams();
    for (const t of topics) form.append('topic', t);
    form.set('id', id);
    form.set('data', body);
    if (priv) form.set('private', 'on');
    return fetch('/.well-known/mercure', {method: 'POST', body: form,
                                          headers: {Authorization: 'Bearer ' + c.token}});
  };
  const limit = new Promise((resolve) => setTimeout(resolve, 15000, false));
  if (!await Promise.race([open.then(() => true), limit])) return {error: 'no open'};
  const resp = await post(c.topics, c.id, data, c.private);
  const answer = {status: resp.status, contentType: resp.headers.get('Content-Type'),
                  body: await resp.text()};
  await post([c.sentinel], c.sentinel, 'sentinel', false);
  const arrived = await Promise.race([done, limit]);
  es.close();
  return {...answer, received, sentinel: arrived};
}
JS

my $b = SSEBrowser->start(log => $srv->dir . '/browser.log');
$b->goto('http://127.0.0.1:' . $srv->port . '/index.html');
my $json = JSON::PP->new->canonical;
for my $c (@cases) {
    my %arg = (%$c, id => 'id-' . $json->encode($c->{topics}), token => $publisher,
               sentinel => 'sentinel-' . $c->{name} . '-' . $r[5],
               private => $c->{private} ? JSON::PP::true : JSON::PP::false);
    delete $arg{received};
    my $res = $b->eval('(' . $page_case . ')(' . $json->encode(\%arg) . ')');
    ok($res->{sentinel}, "$c->{name}: the sentinel arrived") or diag($json->encode($res));
    is($res->{received} ? 1 : 0, $c->{received},
       "$c->{name}: " . ($c->{received} ? 'received' : 'not received'));
    is($res->{status}, 200, "$c->{name}: publish answered 200");
    like($res->{contentType} // '', qr{^text/plain(?:$|;)}, "$c->{name}: text/plain");
    is($res->{body}, $arg{id}, "$c->{name}: the body is the update's id");
}
$b->stop;
$srv->stop;
done_testing;
