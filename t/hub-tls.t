# Over TLS a client that stops reading must not stall the other streams of its child. The hub's
# I/O thread serves every held stream; before the fix it handed a large event to mod_ssl in one
# piece while the socket still had the server's Timeout, and once more than FlushMaxThreshold
# (64 KiB) waited behind a full socket the core output filter waited for that socket for up to
# Timeout (120 s here): every stream of the child got nothing meanwhile.
#
# One child, three TLS streams read by curl, one TLS client that never reads (small receive
# buffer), 8 events of 1 MiB (more than the kernel buffers for the stuck client hold: its
# server-side send buffer grows at most to tcp_wmem's maximum, 4 MiB by default), then 20
# small events: the reading streams must get all of them within the test's 30 s. Under
# prefork every stream has its own process and the test passes the same way.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;
use IO::Select;
use Time::HiRes qw(sleep time);
use Socket qw(PF_INET SOCK_STREAM SOL_SOCKET SO_RCVBUF pack_sockaddr_in inet_aton);
use IO::Socket::SSL;

-x '/usr/bin/curl' or die "t/hub-tls.t needs curl (Debian package curl; tools/install-deps installs it)\n";

my $one_child = ($ENV{SSE_TEST_MPM} // 'event') eq 'event'
    ? "ServerLimit 1\nStartServers 1\nMaxRequestWorkers 25\nMinSpareThreads 5\nMaxSpareThreads 30\n"
    : '';
my $srv = SSETest::Server->start(tls => 1,
                                 global => "SSEBusSize 64M\nSSEMaxMessageSize 2M\n",
                                 conf => "Timeout 120\n$one_child" . <<'EOF');
<Location /events>
    SSEMaxPending 64M
</Location>
EOF
$srv->expect_log(qr/AH01882: Init: this version of mod_ssl was compiled against a newer library/);
my $port = $srv->port;

# The readers.
my @readers;
for my $i (1 .. 3) {
    my $out = $srv->dir . "/reader$i.out";
    my $pid = fork // die;
    if ($pid == 0) {
        exec 'curl', '-skN', '--max-time', '60', '-o', $out, "https://127.0.0.1:$port/events/tls";
    }
    push @readers, [$pid, $out];
}

# A TLS stream request on a socket with a small receive window (4 KiB): returns the TLS handle
# and the plain socket under it.
sub small_window_stream {
    my ($path) = @_;
    socket(my $raw, PF_INET, SOCK_STREAM, 0) or die "socket: $!";
    setsockopt($raw, SOL_SOCKET, SO_RCVBUF, 4096) or die "setsockopt: $!";
    connect($raw, pack_sockaddr_in($port, inet_aton('127.0.0.1'))) or die "connect: $!";
    my $tls = IO::Socket::SSL->start_SSL($raw, SSL_verify_mode => 0) or die "TLS: $SSL_ERROR";
    print $tls "GET $path HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n";
    return ($tls, $raw);
}

# The client that never reads: the request, the response head, then nothing.
my ($stuck) = small_window_stream('/events/tls');
my $head = '';
my $t0 = time;
while ($head !~ /\r\n\r\n/ && time - $t0 < 10) {
    my $n = sysread($stuck, $head, 4096, length $head);
    last unless $n;
}
like($head, qr{^HTTP/1.1 200}, 'the client that will not read has its stream');

sub received {
    my ($file) = @_;
    open my $fh, '<', $file or return '';
    local $/;
    return <$fh> // '';
}
ok($srv->wait_for(sub { 3 == grep { received($_->[1]) =~ /^: ok/m } @readers }, 10),
   'the three reading streams are open');

# Publishes "<tag> <i> " followed by 1 MiB of `fill` on `channel`, for i in 1..8. curl sends the
# large bodies (the harness's request() writes one TLS record at most).
my $body = $srv->dir . '/big.body';
sub publish_large_events {
    my ($channel, $tag, $fill) = @_;
    for my $i (1 .. 8) {
        open my $fh, '>', $body or die;
        print $fh "$tag $i " . ($fill x (1024 * 1024));
        close $fh;
        my $code = `curl -sk -o /dev/null -w '%{http_code}' --max-time 20 --data-binary \@$body https://127.0.0.1:$port/publish/$channel`;
        is($code, '201', "1 MiB event $tag $i published");
    }
}
publish_large_events('tls', 'big', 'x');
$srv->publish('/publish/tls', "tick $_") for 1 .. 20;

my $start = time;
my $done = $srv->wait_for(sub { 3 == grep { received($_->[1]) =~ /^data: tick 20$/m } @readers }, 30);
ok($done, sprintf('the reading streams got all 8 large and 20 small events (%.1f s)', time - $start));
for my $r (@readers) {
    my $text = received($r->[1]);
    my @ticks = $text =~ /^data: tick (\d+)$/mg;
    my @bigs = $text =~ /^data: big (\d+) /mg;
    is_deeply([@bigs, @ticks], [1 .. 8, 1 .. 20], "reader got every event once, in order")
        or diag sprintf('%d bytes, %d large, ticks: %s', length $text, scalar @bigs, "@ticks");
}

kill 'TERM', $_->[0] for @readers;
waitpid $_->[0], 0 for @readers;
close $stuck;

# A graceful restart while a slow TLS reader is in the middle of a large event: the hub hands
# mod_ssl large events in pieces, and the restart's last `retry:` must not be written inside
# one (the client would dispatch a cut event under its id and never get it whole). The reader
# drains a little at a time through the restart, then reads to the end of the stream; every
# `retry:` it got must follow a blank line, and every event it got must be whole.
my ($slow, $slow_raw) = small_window_stream('/events/cut');
my $got = '';
my $read_some = sub {
    my ($max, $seconds) = @_;
    my $until = time + $seconds;
    my $sel = IO::Select->new($slow_raw);
    while (time < $until) {
        if ($slow->pending || $sel->can_read(0.05)) {
            my $n = sysread($slow, $got, 16384, length $got);
            return 0 if defined $n && $n == 0;
            $max -= $n // 0;
            return 1 if $max <= 0;
        }
    }
    return 1;
};
$read_some->(1, 5);
like($got, qr{^HTTP/1.1 200}, 'the slow reader has its stream');
# More than the kernel's buffers hold for this socket (tcp_wmem's maximum, 4 MiB by default),
# so the hub is still handing pieces down when the restart comes.
publish_large_events('cut', 'cut', 'y');
$read_some->(40_000, 5); # in the middle of the first events
$srv->graceful;
my $open = 1;
my $deadline = time + 30;
$open = $read_some->(1 << 30, 1) while $open && time < $deadline;
ok(!$open, 'the stream ended at the restart');
my ($stream) = $got =~ /\r\n\r\n(.*)\z/s;
$stream //= '';
unlike($stream, qr/[^\n]\n?retry:/, 'the restart\'s retry: follows a complete event');
# Events are complete blocks (a cut one at the close has no blank line after it: dropped).
my @events = grep { defined } map { /^data: (.*)$/m ? $1 : undef } $stream =~ /(.*?)\n\n/sg;
my @cut = grep { !(/^cut \d (y+)$/ && length($1) == 1024 * 1024) } @events;
is(scalar @cut, 0, sprintf('every event the slow reader got is whole (%d events)', scalar @events))
    or diag(substr($cut[0], 0, 40) . '... ' . length($cut[0]) . ' bytes');
close $slow;
$srv->stop;
done_testing;
