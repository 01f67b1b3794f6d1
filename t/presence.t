# Presence: connect, reconnect and disconnect events on SSEPresenceChannel, read by a
# subscriber and from the publish socket's point of view (any channel), including the
# disconnects of streams whose process was killed.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;
use Time::HiRes qw(sleep time);

my $srv = SSETest::Server->start(global => "SSEPresenceChannel presence\n", conf => <<'EOF');
<Location /who>
    SetHandler sse-subscribe
    SSEClientId %{req:X-Client-Id} unauthenticated
</Location>
<Location /watch>
    SetHandler sse-subscribe
    SSEPresenceSubscribe on
</Location>
EOF
$srv->expect_log(qr/AH00052: child pid \d+ exit signal Killed \(9\)/);
$srv->expect_burst_notices;

my $watch = $srv->subscribe('/watch/presence');
ok($watch->read_until(sub { scalar $watch->comments }, 5), 'watching the presence channel');

# The next presence event of `type` for `client`, decoded.
sub next_presence {
    my ($type, $client, $seconds) = @_;
    my $found;
    $watch->read_until(sub {
        for my $e ($watch->all_events) {
            next if $e->{seen};
            my $j = SSETest::json_decode($e->{data});
            if ($e->{event} eq $type && ($j->{client} // '') eq $client) { $e->{seen} = 1; $found = $j; return 1 }
        }
        return 0;
    }, $seconds // 10);
    return $found;
}

subtest 'connect, disconnect, reconnect' => sub {
    my $s = $srv->subscribe('/who/lobby,hall', headers => {'X-Client-Id' => 'ivy'});
    my $c = next_presence('connect', 'ivy');
    ok($c, 'connect event');
    is_deeply($c->{channels}, ['lobby', 'hall'], 'with the channels');
    is($c->{channel_count}, 2, 'and their count');
    is($c->{remote}, '127.0.0.1', 'the remote address');
    cmp_ok(abs($c->{time} / 1000 - time), '<', 30, 'the time (ms since the epoch)');
    my $id = $srv->publish('/publish/lobby', 'x')->{json}{id};
    $s->events(1, 5);
    $s->close;
    my $d = next_presence('disconnect', 'ivy');
    ok($d, 'disconnect event');
    is($d->{reason}, 'client-closed', 'reason client-closed');
    my $again = $srv->subscribe('/who/lobby', headers => {'X-Client-Id' => 'ivy', 'Last-Event-ID' => $id});
    my $r = next_presence('reconnect', 'ivy');
    ok($r, 'reconnect event when a Last-Event-ID is sent');
    ok($r && !exists $r->{lastEventId}, 'without the id (the requester\'s own business)');
    $again->close;
    ok(next_presence('disconnect', 'ivy'), 'disconnect again');
    # Found by a channel only this stream has, not as "the next connect of anyone".
    my $anon = $srv->subscribe('/events/lobby,anon-probe');
    my $ac;
    $watch->read_until(sub {
        ($ac) = grep { !$_->{seen} && $_->{event} eq 'connect'
                       && grep { $_ eq 'anon-probe' } @{SSETest::json_decode($_->{data})->{channels} // []} }
                $watch->all_events;
        $ac }, 30);
    ok($ac && !defined SSETest::json_decode($ac->{data})->{client}, 'an anonymous subscriber is announced with client null');
    $ac->{seen} = 1 if $ac;
    $anon->close;
};

subtest 'a subscribe to a closed channel (204) is not announced' => sub {
    $srv->publish('/publish/doomed', 'x');
    is($srv->request(DELETE => '/publish/doomed')->{status}, 200, 'DELETE');
    my $r = $srv->request(GET => '/who/doomed', headers => {'X-Client-Id' => 'zed'}, timeout => 3);
    is($r->{status}, 204, 'subscribe to the closed channel answered 204');
    # A later stream's connect shows that the presence channel got this far in order.
    my $s = $srv->subscribe('/who/lobby', headers => {'X-Client-Id' => 'yan'});
    ok(next_presence('connect', 'yan'), 'the next stream is announced');
    ok(!(grep { $_->{event} eq 'connect' && $_->{data} =~ /"zed"/ } $watch->all_events),
       'no connect for the subscribe answered 204');
    $s->close;
    ok(next_presence('disconnect', 'yan'), 'and its disconnect');
};

subtest 'a killed process: its streams are announced gone' => sub {
    my @subs = map { $srv->subscribe('/who/crowd', headers => {'X-Client-Id' => "k$_"}) } 1 .. 6;
    next_presence('connect', "k$_") for 1 .. 6;
    # The process holding most streams. Under prefork each holds one, and it may be the
    # watcher's: then the next one, until one of the six has gone with its process.
    my $st = SSETest::json_decode($srv->request(GET => '/sse-status')->{body});
    my @candidates = map { $_->{pid} } sort { $b->{subscribers} <=> $a->{subscribers} } @{$st->{processes}};
    ok(@candidates, 'processes hold streams');
    for my $victim (@candidates[0 .. ($#candidates < 7 ? $#candidates : 7)]) {
        kill 'KILL', $victim;
        my $until = time + 3;
        while (time < $until && !grep { $_->closed } @subs) {
            $_->pump(0.05) for grep { !$_->closed } @subs;
        }
        last if grep { $_->closed } @subs;
    }
    # The watcher may have been on a killed process too: then it reconnects and replays.
    my $end = time + 20;
    my %gone;
    while (time < $end && keys %gone < 6) {
        if ($watch->closed) {
            my $last = (grep { $_->{id} ne '' } $watch->all_events)[-1];
            $watch = $srv->subscribe('/watch/presence', headers => $last ? {'Last-Event-ID' => $last->{id}} : {});
        }
        $watch->pump(0.5);
        for my $e ($watch->all_events) {
            next unless $e->{event} eq 'disconnect';
            my $j = SSETest::json_decode($e->{data});
            $gone{$j->{client}} = $j->{reason} if ($j->{client} // '') =~ /^k\d$/;
        }
        for my $s (@subs) { $s->pump(0.05) unless $s->closed }
        my @closed = grep { $_->closed } @subs;
        last if @closed && keys %gone >= @closed;
    }
    my @closed = grep { $_->closed } @subs;
    cmp_ok(scalar @closed, '>=', 1, scalar(@closed) . ' streams ended with the process');
    my @dead = grep { ($gone{$_} // '') eq 'process-died' } keys %gone;
    is(scalar @dead, scalar @closed, scalar(@closed) . ' streams were on the killed process, each announced with reason process-died')
        or diag(explain(\%gone));
    $_->close for @subs;
};

$srv->stop;
done_testing;
