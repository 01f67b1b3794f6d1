# Client ids and targeted delivery: SSEClientId from a header and from a query parameter,
# only/except on publish (query, JSON, form, socket), replay that honours the audience,
# SSEDuplicateClient reject and replace, and bad ids.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;
use Time::HiRes qw(sleep time);

my $srv = SSETest::Server->start(global => "SSEPublishSocket pub.sock\n", conf => <<'EOF');
<Location /who>
    SetHandler sse-subscribe
    SSEClientId %{req:X-Client-Id} unauthenticated
</Location>
<Location /byquery>
    SetHandler sse-subscribe
    SSEClientId %{query_param:client} unauthenticated
</Location>
<Location /single>
    SetHandler sse-subscribe
    SSEClientId %{req:X-Client-Id} unauthenticated
    SSEDuplicateClient reject
</Location>
<Location /latest>
    SetHandler sse-subscribe
    SSEClientId %{req:X-Client-Id} unauthenticated
    SSEDuplicateClient replace
</Location>
EOF
$srv->expect_log(qr/SSE0107: subscribe refused \(409\)/, qr/SSE0106: subscribe refused \(400\)/,
                 qr/SSE0110: publish refused \(400\): client id/,
                 qr/SSE0410: publish socket refused an event: client id/);

sub who { my ($id, $path) = @_; $srv->subscribe($path // '/who/room', headers => {'X-Client-Id' => $id}) }
sub datas { map { $_->{data} } @_ }

subtest 'only and except, over HTTP and the socket' => sub {
    my %c = (alice => who('alice'), bob => who('bob'), carol => who('carol'));
    my $anon = $srv->subscribe('/events/room');
    is($c{$_}->status, 200, "$_ subscribed") for sort keys %c;
    is($srv->publish('/publish/room', 'all')->{status}, 201, 'to everyone');
    is($srv->publish('/publish/room?only=alice', 'q-only-alice')->{status}, 201, 'only by query');
    is($srv->publish('/publish/room', '{"data":"j-except-alice-bob","except":["alice","bob"]}',
                     headers => {'Content-Type' => 'application/json'})->{status}, 201, 'except by JSON');
    is($srv->publish('/publish/room', 'data=f-only-bob-carol&only=bob,carol',
                     headers => {'Content-Type' => 'application/x-www-form-urlencoded'})->{status},
       201, 'only by form');
    my $r = $srv->run_publish(['-o', 'carol', 'room', 's-only-carol']);
    is($r->{rc}, 0, 'only through sse-publish') or diag($r->{err});
    $r = $srv->run_publish(['-x', 'carol', 'room', 's-except-carol']);
    is($r->{rc}, 0, 'except through sse-publish') or diag($r->{err});
    my %want = (
        alice => [qw(all q-only-alice s-except-carol)],
        bob   => [qw(all f-only-bob-carol s-except-carol)],
        carol => [qw(all j-except-alice-bob f-only-bob-carol s-only-carol)],
    );
    for my $id (sort keys %want) {
        my @got = datas($c{$id}->events(scalar @{$want{$id}}, 5));
        $c{$id}->pump(0.3);
        push @got, datas($c{$id}->events(0, 0));
        is_deeply(\@got, $want{$id}, "$id got what was meant for it");
    }
    my @anon = datas($anon->events(3, 5));
    is_deeply(\@anon, [qw(all j-except-alice-bob s-except-carol)],
              'an anonymous subscriber is never in only, never excluded by except');
    $_->close for values %c, $anon;
};

subtest 'replay keeps the audience' => sub {
    my $first = $srv->publish('/publish/replay', 'r0')->{json}{id};
    $srv->publish('/publish/replay?only=alice', 'r-alice');
    $srv->publish('/publish/replay?except=alice', 'r-not-alice');
    my $a = $srv->subscribe('/who/replay', headers => {'X-Client-Id' => 'alice', 'Last-Event-ID' => $first});
    my $b = $srv->subscribe('/who/replay', headers => {'X-Client-Id' => 'bob', 'Last-Event-ID' => $first});
    is_deeply([datas($a->events(1, 5))], ['r-alice'], 'alice replays hers');
    is_deeply([datas($b->events(1, 5))], ['r-not-alice'], 'bob replays his');
    $a->pump(0.3); $b->pump(0.3);
    is(scalar $a->all_events, 1, 'alice nothing else');
    is(scalar $b->all_events, 1, 'bob nothing else');
    $_->close for $a, $b;
};

subtest 'client id from a query parameter' => sub {
    my $q = $srv->subscribe('/byquery/qroom?client=dave');
    is($q->status, 200, 'subscribed with ?client=dave');
    $srv->publish('/publish/qroom?only=dave', 'for dave');
    $srv->publish('/publish/qroom?only=erin', 'for erin');
    $srv->publish('/publish/qroom', 'end');
    is_deeply([datas($q->events(2, 5))], ['for dave', 'end'], 'targeted by its query id');
    $q->close;
};

subtest 'SSEDuplicateClient reject' => sub {
    my $one = who('frank', '/single/d');
    is($one->status, 200, 'first stream');
    my $res = $srv->request(GET => '/single/d', headers => {'X-Client-Id' => 'frank'});
    is($res->{status}, 409, 'second one is 409');
    like(SSETest::json_decode($res->{body})->{error}, qr/already connected/, 'JSON body says why');
    my $other = who('gina', '/single/d');
    is($other->status, 200, 'another id is fine');
    $one->close;
    my $again;
    ok($srv->wait_for(sub { $again = who('frank', '/single/d'); $again->status == 200 }, 10),
       'after the first closes, the id connects again');
    $_->close for $again, $other;
};

subtest 'SSEDuplicateClient replace, whichever process holds the older stream' => sub {
    for my $round (1 .. 4) {
        my $old = who('henry', '/latest/r');
        is($old->status, 200, "round $round: first stream");
        my $new = who('henry', '/latest/r');
        is($new->status, 200, "round $round: second stream accepted");
        ok($old->read_until(sub { $old->closed }, 10), "round $round: the older stream is closed");
        my ($close) = grep { $_->{event} eq 'sse-close' } $old->all_events;
        ok($close && SSETest::json_decode($close->{data})->{reason} eq 'replaced',
           "round $round: told it was replaced");
        $srv->publish('/publish/r', "after $round");
        is_deeply([datas($new->events(1, 5))], ["after $round"], "round $round: the newer one carries on");
        $new->close;
    }
};

subtest 'bad client ids' => sub {
    my $res = $srv->request(GET => '/who/room', headers => {'X-Client-Id' => 'a,b'});
    is($res->{status}, 400, 'a comma in the id is 400');
    like(SSETest::json_decode($res->{body})->{error}, qr/client id/, 'and says so');
    $res = $srv->publish('/publish/room?only=' . ('x' x 200), 'too long');
    is($res->{status}, 400, 'an overlong id in only is 400');
    my $r = $srv->run_publish(['-o', 'a b', 'room', 'x']);
    is($r->{rc}, 1, 'the socket refuses a bad id too');
    like($r->{err}, qr/client id/, 'and says why');
};

$srv->stop;
done_testing;
