# SSEDuplicateClient replace when SSEMaxChannels is reached: a reconnect that cannot get its
# channel entries is refused (503) and leaves the older stream as it was: still counted,
# still served (bus.md 3: its slot was freed, and it was never told to end).
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;

# SSEMaxUnpublishedChannels 2: the whole table for channels only subscribers named (the default
# share, half, would refuse the second with SSE0150 first; t/channel-table.t tests the share).
my $srv = SSETest::Server->start(global => "SSEMaxChannels 2\nSSEMaxUnpublishedChannels 2\n", conf => <<'EOF');
<Location /latest>
    SetHandler sse-subscribe
    SSEClientId %{req:X-Client-Id} unauthenticated
    SSEDuplicateClient replace
</Location>
EOF
$srv->expect_log(qr/SSE0109: subscribe refused \(503\)/);

sub who { my ($id, $ch) = @_; $srv->subscribe("/latest/$ch", headers => {'X-Client-Id' => $id}) }
sub status { SSETest::json_decode($srv->request(GET => '/sse-status')->{body}) }
sub channel_subs {
    my $j = SSETest::json_decode($srv->request(GET => "/publish/$_[0]")->{body});
    return $j ? $j->{subscribers} : -1;
}

# Both entries of the table in use: x by bob, a by carol and alice.
my $bob = who('bob', 'x');
my $carol = who('carol', 'a');
my $alice = who('alice', 'a');
is($_->status, 200, 'subscribed') for $bob, $carol, $alice;

# alice again, on a new channel: no entry for it, even once her older stream's slot is free.
my $res = $srv->request(GET => '/latest/c', headers => {'X-Client-Id' => 'alice'});
is($res->{status}, 503, 'the reconnect on a new channel is refused: no channel entry');

is(status()->{subscribers}, 3, 'all three streams still counted');
is(channel_subs('a'), 2, 'channel a: carol and alice');
is($srv->publish('/publish/a', 'still here')->{status}, 201, 'publish on a');
is_deeply([map { $_->{data} } $alice->events(1, 5)], ['still here'], 'alice\'s older stream is served');
ok(!grep({ $_->{event} eq 'sse-close' } $alice->all_events), 'and was not told to end');

# The replace still works when it can: on channel a, alice's older stream ends.
my $again = who('alice', 'a');
is($again->status, 200, 'alice again on a');
ok($alice->read_until(sub { $alice->closed }, 10), 'the older stream is closed');
is(channel_subs('a'), 2, 'channel a: carol and the new alice');

$_->close for $bob, $carol, $again;
$srv->stop;
done_testing;
