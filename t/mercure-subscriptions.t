# Mercure's active subscriptions (docs/mercure.md, SSEMercureSubscriptions) against a real
# httpd: off by default (the API answers 404, no event is published); on, a subscriber's
# connect and disconnect publish one private event per selector (with its token's
# mercure.payload), received by a watcher whose claims select the subscriptions' topics and not
# by one whose claims don't; the API's three forms list the subscriptions of streams held by
# several child processes; no token is 401, claims that do not select the URL 403; the API's
# lastEventID resumes the events after the snapshot (reconciliation).
use strict;
use warnings;
use lib 't/lib';
use File::Temp ();
use SSEMercure;
use SSETest;
use Test::More;

my $keys = File::Temp::tempdir('mod_sse-msubs-XXXXXX', TMPDIR => 1, CLEANUP => 1);
chmod 0755, $keys;
my $key = SSEMercure::secret_file($keys);
my $events_template = '/.well-known/mercure/subscriptions{/topic}{/subscriber}';
my $everything = SSEMercure::token($key, {subscribe => ['*'], publish => ['*']});
my $watcher = SSEMercure::token($key, {subscribe => [$events_template]});
my $stranger = SSEMercure::token($key, {subscribe => ['https://example.com/{x}']});
my $alice = SSEMercure::token($key, {subscribe => ['https://example.com/{x}'],
                                     payload => {name => 'alice'}});

sub esc { my ($s) = @_; $s =~ s/([^A-Za-z0-9\-._~])/sprintf('%%%02X', ord $1)/ge; $s }
sub bearer { {Authorization => "Bearer $_[0]"} }
sub subscribe {
    my ($srv, $token, $selectors, %o) = @_;
    my $q = join '&', map { 'topic=' . esc($_) } @$selectors;
    $q .= "&$o{query}" if $o{query};
    return $srv->subscribe(($o{path} // '/.well-known/mercure') . "?$q",
                           headers => bearer($token));
}
sub publish {
    my ($srv, $topic, $data) = @_;
    my $res = $srv->request(POST => '/.well-known/mercure',
                            body => 'topic=' . esc($topic) . '&data=' . esc($data),
                            headers => {%{bearer($everything)},
                                        'Content-Type' => 'application/x-www-form-urlencoded'});
    is($res->{status}, 200, "published $data");
    return $res->{body};
}
sub api {
    my ($srv, $path, $token) = @_;
    my $res = $srv->request(GET => "/.well-known/mercure/subscriptions$path",
                            headers => defined $token ? bearer($token) : {});
    $res->{json} = SSETest::json_decode($res->{body});
    return $res;
}
# The events `c` got before the one whose data is `last`, their data decoded (watchers are
# subscribers too: their own subscriptions' events may come before or after).
sub docs_until {
    my ($c, $last) = @_;
    $c->read_until(sub { grep { $_->{data} eq $last } $c->all_events }, 10);
    my @before;
    for my $e ($c->all_events) {
        return @before if $e->{data} eq $last;
        push @before, {%{SSETest::json_decode($e->{data}) // {}}, sse_id => $e->{id}};
    }
    fail("the sentinel \"$last\" came");
    return @before;
}
sub of { my ($who, @docs) = @_; grep { ($_->{subscriber} // '') eq $who } @docs }
my $n = 0;
sub sentinel { 'https://example.com/sentinel' . ++$n }

# ---- off by default ----
{
    my $srv = SSETest::Server->start(conf => "AllowEncodedSlashes NoDecode\n"
        . SSEMercure::hub_location('/.well-known/mercure', "HS256 $key->{file}"));
    $srv->expect_log(qr/SSE0814: mercure subscriptions refused \(404\)/);
    my $res = api($srv, '', $everything);
    is($res->{status}, 404, 'off: the API answers 404');
    like($res->{json}{error} // '', qr/SSEMercureSubscriptions/, 'saying which directive');
    my $sentinel = sentinel();
    my $w = subscribe($srv, $everything, [$events_template, $sentinel]);
    my $s = subscribe($srv, $alice, ['https://example.com/books/1']);
    is($s->status, 200, 'off: a subscriber connects');
    $s->close;
    publish($srv, $sentinel, 'off sentinel');
    is(scalar(my @d = docs_until($w, 'off sentinel')), 0, 'off: no subscription event');
    $w->close;
    $srv->stop;
}

my $srv = SSETest::Server->start(conf => "AllowEncodedSlashes NoDecode\n"
    . SSEMercure::hub_location('/.well-known/mercure', "HS256 $key->{file}", subscriptions => 1,
                               hub => 'one-hub')
    # The same hub (SSEMercureHub), its streams held by workers: listed and announced alike.
    . SSEMercure::hub_location('/blocking-hub', "HS256 $key->{file}", subscriptions => 1,
                               blocking => 1, hub => 'one-hub')
    # A hub of its own (the default name: the server's and the section's).
    . SSEMercure::hub_location('/other-hub', "HS256 $key->{file}", subscriptions => 1));
$srv->expect_burst_notices;
$srv->expect_log(qr/SSE081[345]: mercure subscriptions refused \(40[34]\)/,
                 qr/SSE0810: mercure subscribe refused \(400\)/,
                 qr/SSE0816: mercure publish refused \(400\)/,
                 qr/SSE0140: subscribe refused \(401\)/);

# ---- events on connect and disconnect ----
my @topics = ('https://example.com/books/1', 'https://example.com/{x}?q=a b');
{
    my $sentinel = sentinel();
    my $w = subscribe($srv, $watcher, [$events_template, $sentinel]);
    my $other = subscribe($srv, $stranger, [$events_template, $sentinel]);
    is($w->status, 200, 'a watcher subscribes to the subscriptions topics');
    my $s = subscribe($srv, $alice, \@topics);
    is($s->status, 200, 'a subscriber with two selectors connects');
    # Its subscriber id, from the API (the subscriber is not told it).
    my $list = api($srv, '/' . esc($topics[0]), $everything);
    is(scalar(@{$list->{json}{subscriptions} // []}), 1, 'the API lists it');
    my $id = $list->{json}{subscriptions}[0]{subscriber} // '';
    like($id, qr/^urn:uuid:[0-9a-f-]{36}$/, 'a generated urn:uuid subscriber id');
    $s->close;
    # The disconnect is published when the hub sees the stream end: wait for it, bounded.
    my $ended = sub { grep { $_->{data} =~ /"active":false/ } $w->all_events };
    $w->read_until(sub { $ended->() >= 2 }, 10);
    publish($srv, $sentinel, 'sentinel 1');
    my @docs = of($id, docs_until($w, 'sentinel 1'));
    is(scalar(@docs), 4, 'the watcher got 2 connect and 2 disconnect events');
    for my $i (0 .. 1) {
        my $topic = "/.well-known/mercure/subscriptions/" . esc($topics[$i]) . '/' . esc($id);
        my @on = grep { $_->{topic} eq $topics[$i] } @docs;
        ok(@on == 2 && $on[0]{active} && !$on[1]{active}, "selector $i: active, then not");
        my ($on) = map { my %d = %$_; delete $d{sse_id}; \%d } @on;
        is_deeply($on, {'@context' => 'https://mercure.rocks/', id => $topic,
                        type => 'Subscription', topic => $topics[$i], subscriber => $id,
                        active => JSON::PP::true(), payload => {name => 'alice'}},
                  "selector $i: the draft's document with the token's payload");
    }
    my %ids = map { ($_->{sse_id} // '') => 1 } @docs;
    is(scalar(grep { /^urn:uuid:/ } keys %ids), 4, 'each event has an id of its own');
    is_deeply([of($id, docs_until($other, 'sentinel 1'))], [],
              'a watcher whose claims do not select the topics gets none (private)');
    $w->close;
    $other->close;
}

# ---- a subscription over the store's 1 KB is refused ----
{
    my $q = join '&', map { 'topic=' . esc('https://example.com/long/' . ('x' x 100) . $_) } 1 .. 10;
    my $res = $srv->request(GET => "/.well-known/mercure?$q", headers => bearer($alice));
    is($res->{status}, 400, 'selectors over 1024 bytes: 400');
    like(SSETest::json_decode($res->{body})->{error} // '',
         qr/more than the 1024 bytes a subscription may have/, 'saying so');
    like($srv->log_text, qr/SSE0810: mercure subscribe refused \(400\)/, 'logged');
}

# ---- nobody but the hub publishes in its namespace ----
for my $forged ('/.well-known/mercure/subscriptions/a/urn%3Auuid%3A1',
                'https://hub.example.com/.well-known/mercure/subscriptions/a/b',
                '/.well-known/%6Dercure/subscriptions/a/b', '//hub/.well-known/mercure/subscriptions/a') {
    my $res = $srv->request(POST => '/.well-known/mercure',
                            body => 'topic=' . esc($forged) . '&data=forged&private=on',
                            headers => {%{bearer($everything)},
                                        'Content-Type' => 'application/x-www-form-urlencoded'});
    is($res->{status}, 400, "publishing to $forged: 400");
    like(SSETest::json_decode($res->{body})->{error} // '', qr/hub's own namespace/,
         'saying the namespace is the hub\'s');
}

# ---- the API: streams of several processes, three forms ----
my $held_topic = 'https://example.com/held/{id}';
my @held = map { subscribe($srv, $alice, [$held_topic], path => '/blocking-hub') } 1 .. 26;
is(scalar(grep { $_->status == 200 } @held), 26, '26 streams held on workers');
{
    my $port = $srv->port;
    my %holders;
    for (`ss -Htnp state established '( sport = :$port )' 2>/dev/null`) {
        $holders{$1}++ if /pid=(\d+)/;
    }
    cmp_ok(scalar(keys %holders), '>=', 2, 'by more than one child process');

    my $all = api($srv, '', $everything);
    is($all->{status}, 200, 'GET .../subscriptions: 200');
    like($all->{headers}{'content-type'} // '', qr{^application/ld\+json}, 'application/ld+json');
    my $doc = $all->{json};
    is($doc->{'@context'}, 'https://mercure.rocks/', '@context');
    is($doc->{id}, '/.well-known/mercure/subscriptions', 'id: the path');
    is($doc->{type}, 'Subscriptions', 'type');
    ok(defined $doc->{lastEventID} && length $doc->{lastEventID}, 'lastEventID');
    my @mine = grep { $_->{topic} eq $held_topic } @{$doc->{subscriptions}};
    is(scalar(@mine), 26, 'every held stream is listed, whichever process holds it');
    my %distinct = map { $_->{subscriber} => 1 } @mine;
    is(scalar(keys %distinct), 26, 'each with its own subscriber id');

    my $path = '/' . esc($held_topic);
    my $one_topic = api($srv, $path, $everything);
    is($one_topic->{json}{id}, "/.well-known/mercure/subscriptions$path", 'by topic: its id');
    is(scalar(@{$one_topic->{json}{subscriptions}}), 26, 'by topic: the 26');
    my $sub = $mine[0]{subscriber};
    my $single = api($srv, "$path/" . esc($sub), $everything);
    is($single->{status}, 200, 'one subscription: 200');
    is($single->{json}{subscriber}, $sub, 'one subscription: its subscriber');
    is($single->{json}{type}, 'Subscription', 'one subscription: its type');
    is($single->{json}{id}, "/.well-known/mercure/subscriptions$path/" . esc($sub),
       'one subscription: its id');
    is_deeply($single->{json}{payload}, {name => 'alice'}, 'one subscription: its payload');
    ok(defined $single->{json}{lastEventID}, 'one subscription: lastEventID');
    my $none = api($srv, "$path/" . esc('urn:uuid:nobody'), $everything);
    is($none->{status}, 404, 'an unknown subscription: 404');
    like($none->{json}{error} // '', qr/no active subscription/, 'saying so');

    # Authorization: the token's mercure.subscribe selects the URL, or 401/403.
    my $anon = api($srv, '', undef);
    is($anon->{status}, 401, 'no token: 401');
    my $denied = api($srv, '', $stranger);
    is($denied->{status}, 403, 'claims that do not select the URL: 403');
    like($denied->{json}{error} // '', qr/mercure\.subscribe claim does not select/,
         'the JSON body says why');
    like($srv->log_text, qr/SSE0140: subscribe refused \(401\)/, 'the 401 is logged');
    like($srv->log_text, qr{SSE0813: mercure subscriptions refused \(403\): the token's mercure\.subscribe claim does not select /\.well-known/mercure/subscriptions$}m,
         'the 403 is logged, with the path');
    is(api($srv, $path, $watcher)->{status}, 200,
       'the template selecting the subscriptions topics selects the API too');
    is(api($srv, '', $watcher)->{status}, 200, 'and the collection');
    is(api($srv, "$path/a/b", $everything)->{status}, 404, 'a path too deep: 404');
    # Bytes that are not UTF-8 name no subscription (raw, as httpd lets them through, or
    # escaped): 404, not a 500 from the JSON answer.
    is(api($srv, "/a\xffb", $everything)->{status}, 404, 'a raw byte that is not UTF-8: 404');
    is(api($srv, "/a%FFb", $everything)->{status}, 404, 'an escaped one: 404');

    # Reconciliation: the snapshot's lastEventID resumes the events after it.
    my $cursor = api($srv, $path, $watcher)->{json}{lastEventID};
    my $late = subscribe($srv, $alice, [$held_topic], path => '/blocking-hub');
    is($late->status, 200, 'one more subscriber after the snapshot');
    my $sentinel = sentinel();
    publish($srv, $sentinel, 'sentinel 2');
    my $w = subscribe($srv, $watcher, [$events_template, $sentinel],
                      query => 'lastEventID=' . esc($cursor));
    my @docs = grep { ($_->{topic} // '') eq $held_topic } docs_until($w, 'sentinel 2');
    is(scalar(@docs), 1, 'resuming at lastEventID replays the one event after the snapshot');
    ok(($docs[0]{active} // 0) && $docs[0]{topic} eq $held_topic, 'its connect event');
    my $after = api($srv, $path, $watcher)->{json}{subscriptions};
    is(scalar(@$after), 27, 'the snapshot plus the event is the new list');
    ok((grep { $_->{subscriber} eq $docs[0]{subscriber} } @$after), 'with the new subscriber');
    # A stream held on a worker (SSEAsync Off) announces its end too.
    my $late_id = $docs[0]{subscriber} // '';
    $late->close;
    my $gone = sub { grep { $_->{data} =~ /"active":false/ && $_->{data} =~ /\Q$late_id\E/ }
                          $w->all_events };
    $w->read_until(sub { $gone->() }, 10);
    is(scalar($gone->()), 1, 'a blocking stream\'s end: its disconnect event');
    $w->close;
}
$_->close for @held;
# Another hub's subscribers are not this hub's to list.
{
    my $topic = 'https://example.com/other/{id}';
    my $other = subscribe($srv, $alice, [$topic], path => '/other-hub');
    is($other->status, 200, 'a subscriber of another hub');
    my $mine = subscribe($srv, $alice, [$topic]);
    is($mine->status, 200, 'and one of this hub, with the same selector');
    my $doc = api($srv, '', $everything)->{json};
    is(scalar(grep { $_->{topic} eq $topic } @{$doc->{subscriptions} // []}), 1,
       "this hub's API lists its own only");
    $_->close for $other, $mine;
}

$srv->stop;
done_testing;
