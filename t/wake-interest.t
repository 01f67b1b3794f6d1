# A child's hub is woken only by publishes on the channels of the streams it holds (its
# interest slot in the bus, docs/how-it-works.md "The wake-up path"): with one stream on
# "wi-a", publishes on "wi-b" (held nowhere) wake no hub (`hub_wakeups` does not move, and
# `hub_wakeups_spared` counts the hub let sleep), and a publish on "wi-a" wakes it and reaches
# the stream. With a second stream on "wi-b" in the other child (streams are opened until one
# lands there, 10 at most), each publish on "wi-b" wakes at most one hub and spares the "wi-a"
# child. Under prefork there is no hub: streams are held by their workers, asleep on the
# bus's shared word, woken by every publish (`hubs_asleep` stays 0); delivery is the same.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;

my $srv = SSETest::Server->start();
my $event = $srv->mpm eq 'event';

sub status {
    return SSETest::json_decode($srv->request(GET => '/sse-status')->{body}) // {};
}
sub field { status()->{$_[0]} // -1 }

my $sa = $srv->subscribe('/events/wi-a');
is($sa->status, 200, 'stream on wi-a');
ok($srv->wait_for(sub { field('subscribers') == 1 }, 30), 'it is counted');
if ($event) {
    ok($srv->wait_for(sub { field('hubs_asleep') >= 1 }, 30), 'its hub sleeps');
}

subtest 'publishes on a channel nobody holds wake no hub' => sub {
    my $before = status();
    my $spared = 0;
    # Bounded: the hub is asleep but for its 1 s tick, so the first publish is nearly always
    # spared; up to 50 publishes.
    for my $i (1 .. 50) {
        is($srv->publish('/publish/wi-b', "b$i")->{status}, 201, "publish $i on wi-b")
            or last;
        $spared = field('hub_wakeups_spared') - $before->{hub_wakeups_spared};
        last if !$event || ($i >= 10 && $spared > 0);
    }
    is(field('hub_wakeups'), $before->{hub_wakeups}, 'no hub woken');
    if ($event) {
        ok($spared > 0, "the hub holding wi-a was let sleep ($spared times)");
    } else {
        is(field('hubs_asleep'), 0, 'prefork: no hub');
    }
};

subtest 'a publish on its channel wakes it' => sub {
    my $before = field('hub_wakeups');
    my $woken = 0;
    for my $i (1 .. 5) {
        is($srv->publish('/publish/wi-a', "a$i")->{status}, 201, "publish $i on wi-a");
        my ($e) = $sa->events(1, 30);
        is($e && $e->{data}, "a$i", "event $i reaches the stream");
        $woken = field('hub_wakeups') - $before;
        last if !$event || $woken > 0;
    }
    if ($event) {
        ok($woken > 0, 'its hub was woken for it');
    } else {
        is($woken, 0, 'prefork: no hub woken');
    }
};

subtest 'with a stream on wi-b in the other child, a publish on wi-b wakes only that one' => sub {
    my %count = map { ($_->{pid} => $_->{subscribers}) } @{status()->{processes} // []};
    my ($holder_a) = grep { $count{$_} > 0 } keys %count;
    # Which child takes a connection is the MPM's choice: streams that land in the wi-a child
    # are closed and another is opened, 10 times at most.
    my ($sb, $apart);
    for my $try (1 .. 10) {
        $sb = $srv->subscribe('/events/wi-b');
        is($sb->status, 200, "stream on wi-b ($try)") or last;
        ok($srv->wait_for(sub { field('subscribers') == 2 }, 30), 'both counted');
        my %now = map { ($_->{pid} => $_->{subscribers}) } @{status()->{processes} // []};
        $apart = ($now{$holder_a} // 0) == 1;
        # The last try's stream is kept wherever it landed (closed, the events below would
        # have no stream to reach).
        last if $apart || !$event || $try == 10;
        $sb->close;
        ok($srv->wait_for(sub { field('subscribers') == 1 }, 30), 'back to one stream');
    }
    my $before = status();
    for my $i (1 .. 10) {
        is($srv->publish('/publish/wi-b', "b2-$i")->{status}, 201, "publish $i on wi-b");
        my ($e) = $sb->events(1, 30);
        is($e && $e->{data}, "b2-$i", "event $i reaches the wi-b stream");
    }
    my $after = status();
    my $woken = $after->{hub_wakeups} - $before->{hub_wakeups};
    ok($woken <= 10, "at most one hub woken per publish ($woken for 10)");
    if ($event && $apart) {
        ok($after->{hub_wakeups_spared} > $before->{hub_wakeups_spared},
           'the wi-a child was let sleep');
    } elsif ($event) {
        note('every wi-b stream landed in the wi-a child');
    }
    $sb->close;
};

ok(!(grep { $_->{data} =~ /^b/ } $sa->all_events), 'the wi-a stream got nothing of wi-b');
$sa->close;
$srv->stop;
done_testing;
