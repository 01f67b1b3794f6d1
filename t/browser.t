# A real browser: Debian's Chromium (headless, driven through t/js/browser.mjs) opens EventSource
# streams from a page this httpd serves, on the same origin and on two others (another port of
# the same site, and another host name) with the CORS configuration docs/deployment.md shows. Checked:
# events published over HTTP and over the publish socket arrive with their type, multi-line and
# unicode data and lastEventId; at a graceful restart the browser reconnects by itself with
# Last-Event-ID (cookies too) and gets exactly what was published while it was away; a reconnect
# answered 204, 404 or 503 (or without CORS headers) ends the stream for good; a fetch()-based
# stream with a Last-Event-ID header is preflighted and the preflight is answered.
use strict;
use warnings;
use utf8;
use lib 't/lib';
use Encode qw(encode_utf8 decode_utf8);
use File::Copy qw(copy);
use JSON::PP;
use SSETest;
use SSEBrowser;
use Test::More;
use Time::HiRes qw(sleep time);

SSEBrowser::require_or_skip();
binmode(Test::More->builder->$_, ':encoding(UTF-8)') for qw(output failure_output todo_output);

# The three publishes of the restart subtest (one through an sse-publish process) must all be
# done while the browser waits out this retry: 5 s leaves a loaded machine room (it was 2 s).
my $retry_ms = 5000;
my $mods = SSETest::apxs_q('LIBEXECDIR');
my $port2 = SSETest::free_port();

# The CORS block of docs/deployment.md, as it is written there, with this page's origin allowed.
my $readme = do { local (@ARGV, $/) = "$SSETest::ROOT/docs/deployment.md"; <> };
my ($cors) = $readme =~ /<!-- t\/browser\.t runs this block -->\s*```apache\n(.*?)```/s
    or BAIL_OUT('docs/deployment.md has no CORS block marked for t/browser.t');
ok($cors =~ s/"\^\((.*?)\)\$"/"^(http:\/\/127\\.0\\.0\\.1:\${port})\$"/, 'docs/deployment.md block has an origin list');

my $srv = SSETest::Server->start(port2 => $port2, global => <<"GLOBAL", conf => <<"CONF");
Listen 127.0.0.1:$port2
LoadModule headers_module $mods/mod_headers.so
LoadModule setenvif_module $mods/mod_setenvif.so
LoadModule rewrite_module $mods/mod_rewrite.so
AddType text/html .html
SSEPublishSocket pub.sock
# Every request with what this test looks at; a stream's line is written when it ends.
LogFormat "%{local}p %m %U %>s lei=\\"%{Last-Event-ID}i\\" origin=\\"%{Origin}i\\" cookie=\\"%{session}C\\" acrh=\\"%{Access-Control-Request-Headers}i\\" acao=\\"%{Access-Control-Allow-Origin}o\\" events=%{SSE_EVENTS}e end=%{SSE_END}e" browser
CustomLog "\${dir}/logs/requests.log" browser
GLOBAL
<Location /events>
    SSERetry $retry_ms
</Location>
$cors
# The same streams without CORS headers.
<Location /plain>
    SetHandler sse-subscribe
</Location>
# Once the file "gone" exists, these streams answer 204, 404 or 503.
RewriteEngine On
RewriteCond "\${dir}/gone" -f
RewriteRule "^/events/end-204\$" - [R=204]
RewriteCond "\${dir}/gone" -f
RewriteRule "^/events/end-404\$" - [R=404]
RewriteCond "\${dir}/gone" -f
RewriteRule "^/events/end-503\$" - [R=503]
CONF
$srv->expect_burst_notices;
copy("$SSETest::ROOT/t/js/pages/es.html", $srv->dir . '/htdocs/es.html') or die "copy: $!";

my $port = $srv->port;
my $t0 = time;
my $b = SSEBrowser->start(log => $srv->dir . '/logs/browser.log');
note(sprintf 'Chromium %s started in %.1f s', $b->version, time - $t0);
ok($b->goto("http://127.0.0.1:$port/es.html"), 'the test page loads');

# A session cookie for each host (cookies ignore ports): 127.0.0.1 is the page's site,
# localhost another site.
$b->add_cookies({name => 'session', value => 'same-site', domain => '127.0.0.1', path => '/',
                 sameSite => 'Lax'},
                {name => 'session', value => 'cross-site', domain => 'localhost', path => '/',
                 sameSite => 'None', secure => JSON::PP::true});

my $J = JSON::PP->new->canonical;
sub js { $J->encode($_[0]) }

my $types = ['update', 'alert', 'sse-missed'];
my %streams = (
    same  => "/events/news",                                   # same origin
    port  => "http://127.0.0.1:$port2/events/news",            # same site, another origin
    host  => "http://localhost:$port2/events/news",            # another site
    plain => "http://localhost:$port2/plain/news",             # another site, no CORS headers
    map { ("end$_" => "/events/end-$_") } 204, 404, 503,
);
for my $name (sort keys %streams) {
    my $cred = $streams{$name} =~ /^http/ ? 'true' : 'false';
    $b->eval("openStream(@{[js($name)]}, @{[js($streams{$name})]}, {withCredentials: $cred, types: @{[js($types)]}})");
}
my @live = qw(same port host);
my @ends = qw(end204 end404 end503);
wait_ok(join(' && ', map { "count('$_', 'open') == 1" } @live, @ends), 15,
        'every stream with CORS headers (or on the same origin) opens');

sub events { $b->eval("events('$_[0]')") }
sub log_of { $b->eval("window.streams['$_[0]'].log") }

# ok() on a page condition awaited for up to $seconds; on failure shows what the streams saw.
sub wait_ok {
    my ($expr, $seconds, $name) = @_;
    my $ok = defined $b->try_wait($expr, $seconds);
    ok($ok, $name) or diag(js($b->eval('Object.fromEntries(Object.entries(window.streams).map(([k, v]) => [k, v.log]))')));
    return $ok;
}

# Publishing: over HTTP (raw, JSON, form) and over the socket (build/sse-publish).
my @expected;
sub http_publish {
    my ($type, $data, %o) = @_;
    my $res = $o{json}
        ? $srv->publish('/publish/news', JSON::PP->new->utf8->encode($o{json}),
                        headers => {'Content-Type' => 'application/json'})
        : $srv->publish('/publish/news', encode_utf8($o{raw}));
    is($res->{status}, 201, "published over HTTP: $o{what}") or diag($res->{body});
    push @expected, {type => $type, data => $data, lastEventId => $res->{json}{id}};
}
sub socket_publish {
    my ($type, $data, $args, $what) = @_;
    my $r = $srv->run_publish([map { encode_utf8($_) } @$args]);
    is($r->{rc}, 0, "published over the socket: $what") or diag($r->{err});
    chomp(my $id = decode_utf8($r->{out}));
    push @expected, {type => $type, data => $data, lastEventId => $id};
}

# An id that is long and has bytes a CORS safelist would refuse: quotes, colons, braces, spaces,
# non-ASCII. It ends the first batch, so the reconnect's Last-Event-ID carries it.
my $long_id = 'order:{"n": 42} ünïcødé 😀 ' . ('x' x 600);

subtest 'events arrive with type, multi-line and unicode data, lastEventId' => sub {
    @expected = ();
    http_publish('message', 'hello', raw => 'hello', what => 'raw body');
    http_publish('update', "line one\nline two\nline three\nline four",
                 json => {event => 'update', data => "line one\nline two\r\nline three\rline four"},
                 what => 'JSON, CR, LF and CRLF line ends');
    http_publish('alert', "héllo wörld ✓ 😀 𝄞 中文 🇫🇷\n\n  indented after a blank line",
                 json => {event => 'alert', id => 'ïd-😀-1',
                          data => "héllo wörld ✓ 😀 𝄞 中文 🇫🇷\n\n  indented after a blank line"},
                 what => 'unicode, emoji, an explicit unicode id');
    http_publish('message', '{"name":"café","price":3}',
                 json => {data => {price => 3, name => 'café'}}, what => 'a JSON value as data');
    socket_publish('update', "from the socket\nsecond line 😀",
                   ['-e', 'update', 'news', "from the socket\nsecond line 😀"], 'typed, two lines');
    socket_publish('message', 'with a long id', ['-i', $long_id, 'news', 'with a long id'],
                   'an id of ' . length(encode_utf8($long_id)) . ' bytes');
    my $n = @expected;
    for my $name (@live) {
        wait_ok("events('$name').length >= $n", 10, "$name: $n events");
        is_deeply(events($name), \@expected, "$name: each event's type, data and lastEventId");
    }
};

# The access log: one line per request; a stream's line is written when it ends.
sub requests {
    open my $fh, '<', $srv->dir . '/logs/requests.log' or return ();
    my @r;
    while (my $line = <$fh>) {
        my ($p, $m, $u, $s) = $line =~ /^(\d+) (\S+) (\S+) (\d+) / or next;
        my %f = $line =~ /(\w+)="((?:[^"\\]|\\.)*)"/g;
        for (values %f) {   # mod_log_config's escapes back to the bytes, then to characters
            s/\\x([0-9a-f]{2})/chr hex $1/ge;
            s/\\(["\\])/$1/g;
            $_ = decode_utf8($_);
        }
        my ($events, $end) = $line =~ /events=(\S+) end=(\S+)$/;
        push @r, {port => $p, method => $m, uri => $u, status => $s, %f,
                  events => $events, end => $end};
    }
    return @r;
}

my $before = @expected;
subtest 'a graceful restart: the browser comes back with Last-Event-ID and gets what it missed' => sub {
    open my $fh, '>', $srv->dir . '/gone' or die;   # from now on end-* answer 204, 404, 503
    close $fh;
    my $restarts = () = $srv->log_text =~ /resuming normal operations/g;
    kill 'USR1', $srv->{pid};
    # Publish while the browser waits out its retry: these it has to fetch with Last-Event-ID.
    wait_ok(join(' && ', map { "count('$_', 'error') >= 1" } @live), 15, 'the server ended every stream');
    is_deeply($b->eval('[' . join(',', map { "state('$_')" } @live) . ']'), [(0) x @live],
              'each EventSource is CONNECTING (it will reconnect)');
    http_publish('message', 'missed 1', raw => 'missed 1', what => 'while away');
    socket_publish('update', 'missed 2', ['-e', 'update', 'news', 'missed 2'], 'while away');
    http_publish('alert', "missed 3\nsecond line", json => {event => 'alert', data => "missed 3\nsecond line"},
                 what => 'while away');
    my $published_ms = time * 1000;
    ok($srv->wait_for(sub { (() = $srv->log_text =~ /resuming normal operations/g) > $restarts }, 30),
       'the graceful restart completed');
    my $n = @expected;
    for my $name (@live) {
        wait_ok("count('$name', 'open') == 2 && events('$name').length >= $n", 20,
                "$name: reopened by itself and got $n events in all");
        is_deeply(events($name), \@expected, "$name: the missed ones once each, in order, none lost");
        my @log = @{log_of($name)};
        my ($err) = grep { $_->{kind} eq 'error' } @log;
        my ($reopen) = grep { $_->{kind} eq 'open' } @log[1 .. $#log];
        cmp_ok($reopen->{t}, '>', $published_ms, "$name: it was away while they were published");
        cmp_ok($reopen->{t} - $err->{t}, '>=', $retry_ms * 0.9, "$name: it waited SSERetry ($retry_ms ms)");
    }

    http_publish('message', 'live again', raw => 'live again', what => 'after the reconnect');
    for my $name (@live) {
        wait_ok("events('$name').length == " . scalar(@expected), 10, "$name: live again");
        is_deeply(events($name)->[-1], $expected[-1], "$name: the live event");
    }

    my @gets = grep { $_->{method} eq 'GET' && $_->{uri} eq '/events/news' } requests();
    my @first = grep { $_->{lei} eq '-' } @gets;
    is(scalar @first, 3, 'three first requests without Last-Event-ID, logged when they ended');
    is($_->{events}, $before, "a first stream sent $before events") for @first;
    is($_->{end}, 'server-restart', 'it ended at the restart') for @first;
};

subtest 'cross-origin: the documented configuration, credentials, a long Last-Event-ID' => sub {
    # The reconnect requests are still open: their headers are seen in mod_status-free ways only
    # once they end, so end them now.
    $b->eval("closeStream('$_')") for @live;
    ok($srv->wait_for(sub { (grep { $_->{method} eq 'GET' && $_->{uri} eq '/events/news' } requests()) >= 6 }, 15),
       'the reconnected streams ended and were logged');
    my @gets = grep { $_->{method} eq 'GET' && $_->{uri} eq '/events/news' } requests();
    my %by = (same => sub { $_[0]{port} == $port },
              port => sub { $_[0]{port} == $port2 && $_[0]{cookie} eq 'same-site' },
              host => sub { $_[0]{port} == $port2 && $_[0]{cookie} ne 'same-site' });
    for my $name (@live) {
        my @r = grep { $by{$name}->($_) } @gets;
        is(scalar @r, 2, "$name: two requests (the stream and its reconnect)");
        is($r[0]{lei}, '-', "$name: the first without Last-Event-ID");
        is($r[1]{lei}, $long_id, "$name: the reconnect with Last-Event-ID, " . length(encode_utf8($long_id)) . ' bytes, as sent');
        next if $name eq 'same';
        is($_->{origin}, "http://127.0.0.1:$port", "$name: Origin sent") for @r;
        is($_->{acao}, "http://127.0.0.1:$port", "$name: Access-Control-Allow-Origin echoes it") for @r;
    }
    is(scalar(grep { $by{port}->($_) } @gets), 2, 'same site, another port: the SameSite=Lax cookie went with both requests');
    my ($host) = grep { $by{host}->($_) } @gets;
    note("another site: the SameSite=None; Secure cookie was "
         . ($host->{cookie} eq 'cross-site' ? 'sent' : 'not sent (Chromium blocks third-party cookies)'));
    # Whether Chromium preflights an EventSource reconnect is its own business (an assertion
    # over "any preflight" passed with none): the fetch() subtest below makes one for certain
    # and checks its answer.
    my @options = grep { $_->{method} eq 'OPTIONS' } requests();
    note('Chromium sent ' . scalar(@options) . ' preflight(s) for EventSource reconnects with a '
         . length(encode_utf8($long_id)) . '-byte Last-Event-ID, answered '
         . join(' ', map { $_->{status} } @options));

    my $plain = log_of('plain');
    is($b->eval("state('plain')"), 2, 'no CORS headers: the EventSource is CLOSED');
    is_deeply([map { $_->{kind} } @$plain], ['error'], 'no CORS headers: one error event, never open');
};

subtest 'a fetch()-based client sends Last-Event-ID as a header: preflighted, answered' => sub {
    my $from = $expected[$before];   # resume after the first missed one
    my $want = @expected - $before - 1;
    $b->eval("(fetchStream('resume', 'http://localhost:$port2/events/news', "
             . js({'Last-Event-ID' => $from->{lastEventId}}) . ", $want, 15000), true)");
    ok($b->try_wait('window.fetched.resume.done', 30), 'the fetch ended');
    my $f = $b->eval('window.fetched.resume');
    is($f->{error}, undef, 'no CORS error') or diag(js($b->console));
    is($f->{status}, 200, 'status 200');
    is_deeply([map { $_->{data} } @{$f->{events}}], [map { $_->{data} } @expected[$before + 1 .. $#expected]],
              'the events after that id');
    ok($srv->wait_for(sub { grep { $_->{method} eq 'GET' && $_->{lei} eq $from->{lastEventId} } requests() }, 10),
       'the GET is logged');
    my ($pre) = grep { $_->{method} eq 'OPTIONS' && $_->{uri} eq '/events/news' } requests();
    ok($pre, 'Chromium sent a preflight first');
    is($pre->{status}, 200, 'mod_sse answered it 200');
    is($pre->{acrh}, 'last-event-id', 'for the Last-Event-ID header');
    is($pre->{acao}, "http://127.0.0.1:$port", 'with the CORS headers of the documented block');

    my $res = $srv->request(OPTIONS => '/events/news',
                            headers => {Origin => "http://127.0.0.1:$port",
                                        'Access-Control-Request-Method' => 'GET',
                                        'Access-Control-Request-Headers' => 'last-event-id'});
    is($res->{status}, 200, 'a direct preflight: 200');
    is($res->{headers}{'access-control-allow-origin'}, "http://127.0.0.1:$port", 'Access-Control-Allow-Origin');
    is($res->{headers}{'access-control-allow-credentials'}, 'true', 'Access-Control-Allow-Credentials');
    like($res->{headers}{'access-control-allow-headers'} // '', qr/^Last-Event-ID$/i, 'Access-Control-Allow-Headers');
    like($res->{headers}{vary} // '', qr/\bOrigin\b/, 'Vary: Origin');
    $res = $srv->request(OPTIONS => '/events/news', headers => {Origin => 'http://evil.example',
                                                                 'Access-Control-Request-Method' => 'GET'});
    is($res->{headers}{'access-control-allow-origin'}, undef, 'another origin: no Access-Control-Allow-Origin');
};

subtest '204, 404, 503 on reconnect: the browser stops for good' => sub {
    for my $name (@ends) {
        wait_ok("state('$name') == 2", 30, "$name: CLOSED");
        is_deeply([map { [$_->{kind}, $_->{readyState}] } @{log_of($name)}],
                  [['open', 1], ['error', 0], ['error', 2]],
                  "$name: open, the restart (error, CONNECTING), the refusal (error, CLOSED)");
    }
    # Long enough for several retries, had there been any.
    sleep 3 * $retry_ms / 1000;
    for my $code (204, 404, 503) {
        my @r = grep { $_->{uri} eq "/events/end-$code" } requests();
        is_deeply([map { $_->{status} } @r], [200, $code], "end-$code: the stream, one refused reconnect, nothing after");
    }
    my @plain = grep { $_->{uri} eq '/plain/news' } requests();
    is(scalar @plain, 1, 'no CORS headers: one request, no retry');
};

my $console = $b->console;
note('browser console: ' . js($_)) for @$console;
$b->stop;
$srv->stop;
done_testing;
