# How a stream ends, as docs/endpoints.md says: the SSE_END value in the access log and the
# presence `disconnect` reason for write-failed, channel-closed, replaced, fell-behind (event
# MPM) and server-restart; streams of the presence channel alone are not announced; and the
# last `retry:` every held stream gets at a graceful stop (t/limits.t: at a stop; t/restart.t:
# at a graceful restart).
use strict;
use warnings;
use lib 't/lib';
use IO::Socket::INET;
use Socket qw(SOL_SOCKET SO_LINGER);
use SSETest;
use Test::More;
use Time::HiRes qw(sleep time);

my $srv = SSETest::Server->start(global => "SSEPresenceChannel presence\nSSEClientId \"%{query_param:client}\" unauthenticated\n",
                                 conf => <<'EOF');
<Location /watch>
    SetHandler sse-subscribe
    SSEPresenceSubscribe on
</Location>
<Location /replace>
    SetHandler sse-subscribe
    SSEDuplicateClient replace
</Location>
<Location /slow>
    SetHandler sse-subscribe
    SSEMaxPending 1K
</Location>
<Location /retry>
    SetHandler sse-subscribe
    SSERetry 1234
</Location>
EOF

# Every presence event, in order, from one watcher (a stream of the presence channel alone).
my $watch = $srv->subscribe('/watch/presence');
is($watch->status, 200, 'presence watcher');
my @presence;
sub presence_of {
    my ($type, $client, $seconds) = @_;
    my $find = sub {
        for (@presence) {
            my $d = SSETest::json_decode($_->{data}) // {};
            return $d if $_->{event} eq $type && ($d->{client} // '') eq $client;
        }
        return;
    };
    my $end = time + ($seconds // 15);
    until ($find->() || time > $end || $watch->closed) {
        push @presence, $watch->events(1, 0.5);
    }
    return $find->();
}
sub access_line {
    my ($path) = @_;
    my $line;
    $srv->wait_for(sub { ($line) = $srv->access_log =~ /^(.*"GET \Q$path\E HTTP\/1.1".*)$/m }, 15);
    return $line // '';
}

# The stream at $path (of client $client) ended for $reason: its access-log line says so
# (SSE_END) and so does its presence disconnect event.
sub ended_as {
    my ($path, $client, $reason) = @_;
    like(access_line($path), qr/ 200 .* end=\Q$reason\E$/, "SSE_END=$reason");
    my $d = presence_of('disconnect', $client);
    is($d && $d->{reason}, $reason, "presence disconnect reason $reason");
}

subtest 'a stream of the presence channel alone is not announced' => sub {
    my $quiet = $srv->subscribe('/watch/presence?client=quiet');
    my $loud = $srv->subscribe('/events/room?client=loud');
    ok(presence_of('connect', 'loud'), 'a stream of another channel is announced');
    $quiet->close;
    $loud->close;
    ok(presence_of('disconnect', 'loud'), 'and its end');
    # Checked again at the end of the file, when any late announcement would have come.
};

subtest 'write-failed: the client was gone when the stream was written' => sub {
    # The request goes out and the connection is reset (SO_LINGER 0) while the server's
    # processes are stopped, so that the server reads the request from its receive queue after
    # the reset: the stream's first write fails, whatever the MPM and however fast it is.
    # The reset reaches the server's socket through the loopback's softirq, which a loaded
    # machine may run later than close() returns: the children go on only once the kernel has
    # no established server side of the connection left (/proc/net/tcp), or the stream's first
    # write may go out before the reset (end=client-closed; it happened once).
    my @kids = $srv->children;
    kill 'STOP', @kids;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $srv->port, Timeout => 5);
    my $reset = 0;
    if ($s) {
        my $peer = sprintf '0100007F:%04X', $s->sockport;
        my $local = sprintf '0100007F:%04X', $srv->port;
        syswrite $s, "GET /events/wf?client=wf HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n";
        setsockopt($s, SOL_SOCKET, SO_LINGER, pack('ii', 1, 0)) or diag "SO_LINGER: $!";
        close $s;
        my $end = time + 10;
        until ($reset || time > $end) {
            open my $tcp, '<', '/proc/net/tcp' or last;
            $reset = !grep { /^\s*\d+: $local $peer 01 / } <$tcp>;
            sleep 0.01 unless $reset;
        }
    }
    kill 'CONT', @kids;
    ok($s, 'connected and reset') or diag "connect: $!";
    ok($reset, 'the server side of the connection was reset before the server went on');
    ended_as('/events/wf?client=wf', 'wf', 'write-failed');
};

subtest 'channel-closed: DELETE of its channel' => sub {
    my $s = $srv->subscribe('/events/cc?client=cc');
    ok(presence_of('connect', 'cc'), 'connected');
    is($srv->request(DELETE => '/publish/cc')->{status}, 200, 'DELETE');
    my @ev = $s->events(1, 10);
    is($ev[0]{event}, 'sse-close', 'the stream gets sse-close');
    ok($s->read_until(sub { 0 }, 10) || $s->closed, 'and ends');
    ended_as('/events/cc?client=cc', 'cc', 'channel-closed');
};

subtest 'replaced: the same client id connects again (SSEDuplicateClient replace)' => sub {
    my $old = $srv->subscribe('/replace/rep?client=rep');
    ok(presence_of('connect', 'rep'), 'connected');
    my $new = $srv->subscribe('/replace/rep?client=rep');
    is($new->status, 200, 'the new stream is accepted');
    my @ev = $old->events(1, 10);
    is($ev[0]{event}, 'sse-close', 'the older stream gets sse-close');
    is((SSETest::json_decode($ev[0]{data}) // {})->{reason}, 'replaced', 'reason replaced');
    ok($old->read_until(sub { 0 }, 10) || $old->closed, 'and ends');
    ended_as('/replace/rep?client=rep', 'rep', 'replaced');
    $srv->publish('/publish/rep', 'to the new one');
    is(($new->events(1, 10))[0]{data}, 'to the new one', 'the new stream goes on');
    $new->close;
};

SKIP: {
    skip 'fell-behind is the async hub\'s (event MPM); a blocking stream waits on its write', 1
        if $srv->mpm ne 'event';
    subtest 'fell-behind: a client that does not read (SSEMaxPending 1K)' => sub {
        my $slow = $srv->subscribe('/slow/fb?client=fb');
        ok(presence_of('connect', 'fb'), 'connected');
        my $big = 'x' x 100_000;
        my $d;
        for my $i (1 .. 40) {   # 4 MB at most per round of 10, 40 rounds bounded
            $srv->publish('/publish/fb', $big) for 1 .. 5;
            last if $d = presence_of('disconnect', 'fb', 0.2);
        }
        $d //= presence_of('disconnect', 'fb', 10);
        is($d && $d->{reason}, 'fell-behind', 'presence disconnect reason fell-behind');
        $slow->close;
    };
}

subtest 'server-restart: a graceful restart' => sub {
    my $s = $srv->subscribe('/events/sr?client=sr');
    ok(presence_of('connect', 'sr'), 'connected');
    my $last = $watch->{lastEventId};
    $srv->graceful;
    ok($s->read_until(sub { 0 }, 20) || $s->closed, 'the stream ends');
    # The watcher ended too: it resumes, as a browser would.
    $watch = $srv->subscribe('/watch/presence', headers => {'Last-Event-ID' => $last});
    ended_as('/events/sr?client=sr', 'sr', 'server-restart');
};

# Every presence event so far, replayed: none names the presence-only stream.
my $all = $srv->subscribe('/watch/presence?lastEventId=0');
my @names = map { (SSETest::json_decode($_->{data}) // {})->{client} // '' }
            grep { $_->{event} ne 'sse-missed' } $all->events(1000, 3);
ok(scalar(grep { $_ eq 'loud' } @names), 'the replay holds the announced streams');
ok(!grep({ $_ eq 'quiet' } @names), 'and nothing of the stream of the presence channel alone');
$all->close;
$watch->close;

subtest 'graceful-stop: every held stream gets a last retry' => sub {
    my $set = $srv->subscribe('/retry/gs');
    my $dflt = $srv->subscribe('/events/gs');
    $srv->publish('/publish/gs', 'before the stop');
    is(($set->events(1, 10))[0]{data}, 'before the stop', 'an event reached the stream');
    is(($dflt->events(1, 10))[0]{data}, 'before the stop', 'and the other');
    my $pid = $srv->read_pid;
    kill 'WINCH', $pid;
    ok($set->read_until(sub { 0 }, 30) || $set->closed, 'the stream ends at the graceful stop');
    ok($dflt->read_until(sub { 0 }, 30) || $dflt->closed, 'both do');
    like($set->raw_stream, qr/data: before the stop\n\nretry: 1234\n\n\z/,
         'with a last retry: SSERetry');
    like($dflt->raw_stream, qr/data: before the stop\n\nretry: 2000\n\n\z/,
         'or 2000 ms where SSERetry is not set');
    ok($srv->wait_for(sub { !kill(0, $pid) }, 30), 'httpd stopped');
};

$srv->expect_log(qr/AH00492: caught SIGWINCH/);
$srv->stop;
done_testing;
