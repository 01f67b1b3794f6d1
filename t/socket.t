# The publish socket: sse-publish and raw clients, delivery to every process, errors that leave
# the connection usable, permissions, limits, a killed daemon, a graceful restart while a client
# keeps publishing, and the socket gone at stop.
use strict;
use warnings;
use lib 't/lib';
use IO::Socket::UNIX;
use IO::Select;
use SSETest;
use Test::More;
use Time::HiRes qw(sleep time);

# SSEMaxMessageSize at server level bounds one event on the socket too.
my $srv = SSETest::Server->start(global => "SSEPublishSocket pub.sock\nSSEPublishSocketClients 8\n"
                                           . "SSEMaxMessageSize 1K\nSSEHistory 100000\n");
# The refusals this file provokes, each for its reason (an "internal error" is not one of them).
$srv->expect_log(map { qr/SSE0410: publish socket refused an event: \Q$_\E/ }
                     'channel name "bad name" contains 0x20', 'unknown field "foo"',
                     'event id must not contain CR, LF or NUL', 'data is not valid UTF-8',
                     'event larger than 1024 bytes');
$srv->expect_log(qr/SSE0411: publish socket refused a client: 8 clients already connected/);
$srv->expect_burst_notices;
my $path = $srv->dir . '/pub.sock';

sub raw_client {
    my $s = IO::Socket::UNIX->new(Peer => $path, Timeout => 5) or die "connect $path: $!";
    return $s;
}

sub answers {
    my ($s, $n, $seconds) = @_;
    my @lines;
    my $sel = IO::Select->new($s);
    my $buf = '';
    my $end = time + ($seconds // 5);
    while (@lines < $n && time < $end && $sel->can_read($end - time)) {
        my $r = sysread($s, my $chunk, 65536);
        last unless $r;
        $buf .= $chunk;
        push @lines, $1 while $buf =~ s/^([^\n]*)\n//;
    }
    return @lines;
}

subtest 'the socket file' => sub {
    ok(-S $path, 'a socket at the path relative to DefaultRuntimeDir');
    my @st = stat $path;
    is(sprintf('%04o', $st[2] & 07777), '0660', 'mode 0660');
    # The harness runs httpd with User/Group www-data only as root (as CI does).
    ok($> == 0, 'the test runs as root (needed to check the owner and group)')
        or diag 'run the integration tests as root: httpd then switches to www-data';
    is(scalar getpwuid($st[4]), 'www-data', 'owned by User');
    is(scalar getgrgid($st[5]), 'www-data', 'group is Group');
    ok($srv->wait_for(sub { $srv->socket_daemon }, 30), 'the daemon runs as sse-publishd');
};

subtest 'sse-publish' => sub {
    my $sub = $srv->subscribe('/events/news,logs');
    my $r = $srv->run_publish(['-e', 'update', '-i', 'cli-1', '-r', '2500', 'news', "two\nlines"]);
    is($r->{rc}, 0, 'exit 0') or diag $r->{err};
    is($r->{out}, "cli-1\n", 'prints the event id');
    $r = $srv->run_publish(['news'], stdin => "from stdin\n");
    is($r->{rc}, 0, 'data from stdin');
    like($r->{out}, qr/^\d+\n$/, 'a bus id');
    $r = $srv->run_publish(['-l', 'logs'], stdin => "line 1\nline 2\r\nline 3\n");
    is($r->{rc}, 0, '-l');
    is(scalar(() = $r->{out} =~ /^\d+$/mg), 3, 'one id per line');
    my @ev = $sub->events(5, 5);
    is_deeply([map { [$_->{event}, $_->{data}] } @ev],
              [['update', "two\nlines"], ['message', 'from stdin'], ['message', 'line 1'],
               ['message', 'line 2'], ['message', 'line 3']], 'subscribers got them all');
    is($ev[0]{id}, 'cli-1', 'id on the wire');
    is($sub->retry, 2500, 'retry on the wire');
    $sub->close;

    $r = $srv->run_publish(['bad name', 'x']);
    is($r->{rc}, 1, 'a refused event exits 1');
    like($r->{err}, qr/refused: channel name "bad name" contains 0x20/, 'and says why');
    $r = $srv->run_publish([]);
    is($r->{rc}, 2, 'no channel is a usage error');
    $r = $srv->run_publish(['--help']);
    like($r->{out}, qr/^usage: sse-publish/, '--help');
    $r = $srv->run_publish(['-w', '0.5', 'news', 'x'], socket => $srv->dir . '/nothing.sock');
    is($r->{rc}, 3, 'no socket: exit 3 after retrying');
    like($r->{err}, qr/no such socket/, 'with a message');
};

subtest 'raw client: many events, errors in between, nothing accepted lost' => sub {
    my $sub = $srv->subscribe('/events/raw');
    my $s = raw_client();
    print $s "channel: raw\ndata: one\n\n",
             "channel: raw\nevent: bad\nevent: x\nfoo: bar\n\n",
             "channel: raw\r\nid: two-id\r\ndata: two\r\n\r\n",
             "channel: bad name\ndata: x\n\n",
             "channel: raw\nid: a\x00b\ndata: x\n\n",
             "channel: raw\ndata: \xC3\x28\n\n",
             "channel: raw\ndata: three\n\n";
    my @a = answers($s, 7);
    is(scalar @a, 7, 'one answer per event');
    like($a[0], qr/^ok \d+$/, 'ok');
    like($a[1], qr/^error unknown field "foo"/, 'unknown field');
    is($a[2], 'ok two-id', 'CRLF lines, publisher id');
    like($a[3], qr/^error channel name "bad name"/, 'bad channel');
    like($a[4], qr/^error event id must not contain CR, LF or NUL/, 'NUL in id');
    like($a[5], qr/^error data is not valid UTF-8/, 'bad UTF-8');
    like($a[6], qr/^ok /, 'still usable');
    is_deeply([map { $_->{data} } $sub->events(3, 5)], [qw(one two three)], 'accepted events delivered');
    print $s "channel: raw\ndata: never finished";
    close $s;
    is(scalar $sub->events(1, 1), 0, 'an event cut off by a disconnect is not published');
    $sub->close;
};

subtest 'limits: event size, client count, stalled and flooding clients' => sub {
    my $s = raw_client();
    print $s "channel: raw\ndata: " . ('x' x 2000) . "\n\nchannel: raw\ndata: small\n\n";
    my @a = answers($s, 2);
    like($a[0], qr/^error event larger than 1024 bytes/, 'SSEMaxMessageSize of the main server');
    like($a[1], qr/^ok /, 'next event fine');

    my $stalled = raw_client();
    print $stalled "channel: raw\ndata: half an event";
    # A client that floods events and never reads its answers: what it manages to write
    # depends on the kernel's socket buffers, so the test asserts outcomes only: its events
    # are read and published, and another client is served meanwhile.
    my $flooded = $srv->subscribe('/events/flood');
    my $flood = raw_client();
    $flood->blocking(0);
    my $chunk = "channel: flood\ndata: " . ('f' x 1000) . "\n\n";
    my $written = 0;
    for (1 .. 5000) { my $n = syswrite($flood, $chunk); last unless $n; $written += $n }
    cmp_ok($written, '>', 0, "a client wrote $written bytes without reading answers");
    cmp_ok(scalar $flooded->events(1, 10), '>=', 1, "the flooding client's events are published");
    $flooded->close;
    my $r = $srv->run_publish(['raw', 'meanwhile'], prefix => 'timeout 30');
    is($r->{rc}, 0, 'another client is served meanwhile');

    # Three clients are connected ($s, $stalled, $flood); of 8 more, the ones past the limit
    # are told "busy" and closed, the others get nothing (they have not sent an event). Wait
    # (bounded) for the first refusal from any of them, however long the daemon takes.
    my @extra = map { raw_client() } 1 .. 8;
    my $refused;
    my $sel = IO::Select->new(@extra);
    my $end = time + 30;
    while (!defined $refused && time < $end) {
        for my $c ($sel->can_read($end - time)) {
            my ($line) = answers($c, 1, 5);
            $sel->remove($c);
            $refused = $line if defined $line;
        }
    }
    like($refused // 'no refusal within 30 s', qr/^error busy: 8 clients are connected/,
         'over SSEPublishSocketClients: told busy');
    close $_ for @extra, $stalled, $flood, $s;
};

subtest 'garbage' => sub {
    my $s = raw_client();
    print $s join('', map { chr(($_ * 7919) % 256) } 1 .. 20000), "\n\n";
    print $s "channel: raw\ndata: after garbage\n\n";
    my @a = answers($s, 2, 5);
    like($a[-1] // '', qr/^ok /, 'the connection survives garbage');
    close $s;
};

subtest 'delivery to streams in several processes' => sub {
    my @subs = map { $srv->subscribe('/events/spread') } 1 .. 30;
    my $r = $srv->run_publish(['spread', 'to all']);
    is($r->{rc}, 0, 'published');
    is(scalar(grep { my ($e) = $_->events(1, 5); $e && $e->{data} eq 'to all' } @subs), 30,
       'all 30 streams got it');
    $_->close for @subs;
};

subtest 'a user outside the socket\'s group' => sub {
    # setpriv needs root to change users; CI runs as root: fail, do not skip, elsewhere.
    ok($> == 0, 'the test runs as root (needed to run sse-publish as another user)')
        or return;
    chmod 0755, $srv->dir;
    my $r = $srv->run_publish(['-w', '0', 'news', 'x'],
                              prefix => 'setpriv --reuid=nobody --regid=nogroup --clear-groups');
    is($r->{rc}, 3, 'a user outside the group cannot publish');
    like($r->{err}, qr/permission denied/, 'the kernel refuses the connection');
};

subtest 'kill -9 of the daemon' => sub {
    my $old = $srv->socket_daemon;
    # Only this daemon's death, by this signal: a daemon that crashes or exits is a failure.
    $srv->expect_log(qr/SSE0402: the publish socket daemon \(pid $old\) died \(exit code or signal 9\)/);
    kill 'KILL', $old;
    my $r = $srv->run_publish(['news', 'after kill']);
    is($r->{rc}, 0, 'publishing works right after') or diag $r->{err};
    ok($srv->wait_for(sub { my $p = $srv->socket_daemon; $p && $p != $old }, 30), 'a new daemon');
};

subtest 'graceful restart while a client keeps publishing' => sub {
    my $sub = $srv->subscribe('/events/steady');
    pipe(my $rd, my $wr) or die;
    my $pid = fork // die;
    if ($pid == 0) {
        close $wr;
        open STDIN, '<&', $rd or die;
        open STDOUT, '>', $srv->dir . '/steady.out' or die;
        exec "$SSETest::BUILD/sse-publish", '-S', $path, '-l', 'steady';
    }
    close $rd;
    $wr->autoflush(1);
    # Lines before the restart, during it, and after it completed (the log says "resuming
    # normal operations" once more): the restart is awaited, bounded, not assumed.
    my $restarts = () = $srv->log_text =~ /resuming normal operations/g;
    my $n = 0;
    my $line = sub { print $wr "line ", ++$n, "\n"; sleep 0.01 };
    $line->() for 1 .. 50;
    kill 'USR1', $srv->{pid};
    my $restarted = sub { (() = $srv->log_text =~ /resuming normal operations/g) > $restarts };
    my $end = time + 60;
    $line->() while !$restarted->() && time < $end;
    ok($restarted->(), 'the graceful restart completed (within 60 s) while sse-publish published');
    my $after = $n;
    $line->() for 1 .. 50;
    close $wr;
    waitpid($pid, 0);
    is($? >> 8, 0, "sse-publish published $n lines across the restart without a failure");
    my $r = $srv->run_publish(['steady', 'from a new client']);
    is($r->{rc}, 0, 'a client of the new generation publishes too');
    open my $fh, '<', $srv->dir . '/steady.out' or die;
    my @ids = <$fh>;
    is(scalar @ids, $n, 'an id for every line');
    my $replay = $srv->subscribe('/events/steady?lastEventId=start');
    my @ev = grep { $_->{event} eq 'message' } $replay->events($n + 2, 30);
    is_deeply([map { $_->{data} } @ev], [(map { "line $_" } 1 .. $n), 'from a new client'],
              "every line once, in order ($after sent before the restart completed)");
    $replay->close;
    $sub->close;
};

$srv->stop;
ok(!-e $path, 'the socket is unlinked at stop');
done_testing;
