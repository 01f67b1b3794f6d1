# Exact counts: after connect/disconnect churn, a kill -9 of a child that holds streams, and a
# graceful restart, the subscriber counts (sse-status, GET on the publish location) equal the
# streams that are really open.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;
use Time::HiRes qw(sleep time);

# Event MPM: 30 held streams beside 1,000 at a time (the harness's default SSEMaxSubscribers is
# 1,000; its event MPM holds 2,550). Prefork keeps the default (its 40 processes).
my $srv = SSETest::Server->start(global => ($ENV{SSE_TEST_MPM} // 'event') eq 'prefork'
                                           ? '' : "SSEMaxSubscribers 2000\n");
$srv->expect_log(qr/AH00052: child pid \d+ exit signal Killed \(9\)/);
$srv->expect_burst_notices;
my $prefork = $srv->mpm eq 'prefork';

sub status { SSETest::json_decode($srv->request(GET => '/sse-status')->{body}) }
sub channel_subs {
    my $j = SSETest::json_decode($srv->request(GET => "/publish/$_[0]")->{body});
    return $j ? $j->{subscribers} : -1;
}
# Reads what arrived on every client (so closed ones are noticed) and returns the open ones.
sub open_clients {
    my @c = @_;
    $_->pump(0.05) for grep { !$_->closed } @c;
    return grep { !$_->closed } @c;
}
# Waits until the server's counts equal the open clients; returns the last reading.
sub counts_settle {
    my ($channel, @clients) = @_;
    my ($total, $chan, $open);
    $srv->wait_for(sub {
        $open = scalar open_clients(@clients);
        $total = status()->{subscribers};
        $chan = channel_subs($channel);
        $total == $open && $chan == $open;
    }, 15);
    return ($total, $chan, $open);
}

my $held_n = $prefork ? 10 : 30;
my @held = map { $srv->subscribe('/events/held') } 1 .. $held_n;
is(scalar(grep { $_->status == 200 } @held), $held_n, "$held_n streams held");

subtest 'churn' => sub {
    my $load = "$SSETest::ROOT/build/sse-load";
    plan skip_all => 'build/sse-load is not built' unless -x $load;
    my $port = $srv->port;
    # Event MPM: 10 rounds of 1,000 streams. Prefork holds a process per stream, and a
    # blocking stream notices its client left within a second: 60 rounds of 10 (600 cycles)
    # stay within its 40 processes and keep the run short.
    my ($rounds, $n) = $prefork ? (60, 10) : (10, 1000);
    my $ok = 0;
    for my $round (1 .. $rounds) {
        $ok++ if system("$load -n $n -e 1 -r 0 -w 10 -P churn 127.0.0.1 $port >/dev/null") == 0;
    }
    is($ok, $rounds, ($rounds * $n) . " streams opened, served an event, closed");
    my ($total, $chan, $open) = counts_settle('held', @held);
    is($total, $open, "sse-status: $total subscribers, $open streams open");
    is($chan, $open, "channel held: $chan subscribers");
    is(channel_subs('churn0'), 0, 'the churn channel is back to 0');
};

subtest 'kill -9 of a child holding streams' => sub {
    my $st = status();
    my ($victim) = map { $_->{pid} } sort { $b->{subscribers} <=> $a->{subscribers} } @{$st->{processes}};
    ok($victim, "process $victim holds streams");
    kill 'KILL', $victim;
    my $lost = 0;
    $srv->wait_for(sub { $lost = $held_n - scalar open_clients(@held); $lost > 0 }, 10);
    cmp_ok($lost, '>', 0, "$lost streams ended with it");
    my ($total, $chan, $open) = counts_settle('held', @held);
    is($total, $open, "sse-status: $total subscribers, $open streams open");
    is($chan, $open, "channel held: $chan subscribers");
    ok(!grep({ $_->{pid} == $victim } @{status()->{processes}}), 'the dead process holds nothing');
    # The lost ones reconnect.
    @held = ((open_clients(@held)), map { $srv->subscribe('/events/held') } 1 .. $lost);
    ($total, $chan, $open) = counts_settle('held', @held);
    is($total, $held_n, "all $held_n back, counted once");
};

subtest 'graceful restart' => sub {
    $srv->graceful;
    # Streams of the old generation end; their clients come back to the new one.
    my $end = time + 20;
    my @now;
    while (time < $end) {
        my @open = open_clients(@held);
        push @open, map { $srv->subscribe('/events/held') } 1 .. ($held_n - @open)
            if @open < $held_n && $srv->accepts;
        @held = @open;
        last if @held == $held_n && status()->{subscribers} == $held_n;
        sleep 0.2;
    }
    my ($total, $chan, $open) = counts_settle('held', @held);
    is($open, $held_n, "$held_n streams open after the restart");
    is($total, $open, "sse-status: $total subscribers");
    is($chan, $open, "channel held: $chan subscribers");
    $_->close for @held;
    ($total, $chan, $open) = counts_settle('held');
    is($total, 0, 'all closed: 0');
};

$srv->stop;
done_testing;
