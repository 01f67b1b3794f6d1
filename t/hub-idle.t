# A child that holds no stream is not woken by publishes (its hub sleeps on its own word, and
# a publish skips FUTEX_WAKE when no reader sleeps on the bus): what is published meanwhile,
# more than the whole bus here, must not reach its next stream as an overrun (`sse-missed`),
# and that stream must get its replay and then every live event. Twice, so that a child that
# had streams and has none again is tested too. Under prefork (no hub) the same must hold for
# streams held by their workers. Which child a stream lands in is the MPM's choice, so the
# deterministic check of a fan-out that had streams and has none again is the unit test's
# (fanout_first_stream_after_none); here the whole path runs through httpd.
# While no stream is held, no reader sleeps on the bus (bus_sleepers 0): a hub without streams
# sleeps on its own word, so publishes make no FUTEX_WAKE call.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;

# The smallest bus: 100 events of 2 KB overrun it several times.
my $srv = SSETest::Server->start(global => "SSEBusSize 64K\n");

sub status_of {
    my $j = SSETest::json_decode($srv->request(GET => '/sse-status')->{body});
    return $j ? $j->{$_[0]} // -1 : -1;
}
sub subscribers { status_of('subscribers') }

for my $round (1, 2) {
    subtest "round $round: a burst while no stream is held, then a stream" => sub {
        ok($srv->wait_for(sub { subscribers() == 0 }, 30), 'no stream held');
        ok($srv->wait_for(sub { status_of('bus_sleepers') == 0 }, 30),
           'no reader asleep on the bus');
        my $last;
        for my $i (1 .. 100) {
            my $res = $srv->publish('/publish/idle', "r$round-$i " . ('x' x 2000));
            is($res->{status}, 201, "publish $i") unless $res->{status} == 201;
            $last = $res->{json}{id};
        }
        my $tail = $srv->publish('/publish/idle', "r$round-tail");
        is($tail->{status}, 201, 'one more publish');
        my $c = $srv->subscribe('/events/idle', headers => {'Last-Event-ID' => $last});
        is($c->status, 200, 'stream open, resuming after the burst');
        my ($replayed) = $c->events(1, 30);
        is($replayed && $replayed->{data}, "r$round-tail", 'replays what followed its id');
        ok($srv->wait_for(sub { subscribers() == 1 }, 30), 'the stream is counted');
        for my $n (1 .. 3) {
            is($srv->publish('/publish/idle', "r$round-live-$n")->{status}, 201, "live publish $n");
            my ($e) = $c->events(1, 30);
            is($e && $e->{data}, "r$round-live-$n", "live event $n arrives");
        }
        ok(!(grep { $_->{event} eq 'sse-missed' } $c->all_events), 'no sse-missed notice');
        is(scalar($c->all_events), 4, 'nothing else');
        $c->close;
    };
}

$srv->stop;
done_testing;
