# The access-log line of a held stream, written when it ends (docs/how-it-works.md, "What a
# held stream costs"): the status, the body bytes the client got (%B), the duration (%D, at
# least the time it was held), a request header (%{X-Log-Probe}i), the connection's remote
# address and how the stream ended; plain HTTP and TLS, under the MPM the run names (event:
# the hub holds the stream; prefork: its worker does).
use strict;
use warnings;
use lib 't/lib';
use IO::Select;
use IO::Socket::INET;
use IO::Socket::SSL;
use SSETest;
use Test::More;
use Time::HiRes qw(sleep time);

my $kHeld = 1.2;   # seconds the client holds the stream after its events

# Opens /events/$channel with an X-Log-Probe header, reads until `$events` events came,
# holds the stream $kHeld seconds more, closes; returns the body bytes it got.
sub hold_stream {
    my ($srv, $channel, $probe, $events) = @_;
    my $s = $srv->{tls}
        ? IO::Socket::SSL->new(PeerAddr => '127.0.0.1', PeerPort => $srv->port, Timeout => 10,
                               SSL_verify_mode => 0)
        : IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $srv->port, Timeout => 10);
    die "connect: $!" unless $s;
    syswrite($s, "GET /events/$channel HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Log-Probe: $probe\r\n\r\n");
    my $raw = '';
    my $sel = IO::Select->new($s);
    my $read = sub {
        my ($until, $seconds) = @_;
        my $end = time + $seconds;
        while ($raw !~ $until && time < $end) {
            next unless $s->can('pending') && $s->pending || $sel->can_read(0.2);
            my $n = sysread($s, my $buf, 65536);
            last unless $n;
            $raw .= $buf;
        }
    };
    $read->(qr/\r\n\r\n:[^\n]*\n/, 10);   # the headers and the first comment: it is held
    for my $i (1 .. $events) {
        $srv->publish("/publish/$channel", "event $i of $probe");
        $read->(qr/data: event $i of \Q$probe\E\n\n/, 10);
    }
    sleep $kHeld;
    $read->(qr/(?!)/, 0.3);   # whatever came meanwhile (nothing is published)
    close $s;
    my ($head, $body) = split /\r\n\r\n/, $raw, 2;
    return ($head, $body // '');
}

for my $tls (0, 1) {
    subtest($tls ? 'TLS' : 'plain HTTP', sub {
        my $srv = SSETest::Server->start(tls => $tls, conf => <<'EOF');
LogFormat "held %>s %B %D probe=%{X-Log-Probe}i remote=%a events=%{SSE_EVENTS}e end=%{SSE_END}e" held
CustomLog "${dir}/logs/held.log" held
EOF
        # Debian's mod_ssl and its OpenSSL are of different patch levels (as in t/async.t).
        $srv->expect_log(qr/AH01882: Init: this version of mod_ssl was compiled against a newer library/)
            if $tls;
        my $probe = "p$tls-" . int(rand(1e6));
        my ($head, $body) = hold_stream($srv, 'logged', $probe, 3);
        like($head, qr{^HTTP/1.1 200}, 'the stream was answered');
        like($body, qr/data: event 3 of \Q$probe\E\n\n/, 'and got its three events');
        my $line;
        ok($srv->wait_for(sub {
            open my $fh, '<', $srv->dir . '/logs/held.log' or return 0;
            ($line) = grep { /probe=\Q$probe\E / } <$fh>;
            return defined $line;
        }, 15), 'the stream has its line once it ended');
        $line //= '';
        chomp $line;
        note($line);
        my ($status, $bytes, $micros) = $line =~ /^held (\d+) (\d+|-) (\d+) /;
        is($status, 200, '%>s: the status');
        is($bytes, length($body), '%B: the body bytes the client got');
        ok(defined $micros && $micros >= $kHeld * 1e6, '%D: at least the time it was held');
        like($line, qr/ remote=127\.0\.0\.1 /, '%a: the client');
        like($line, qr/ events=3 end=client-closed$/, 'its events and how it ended');
        $srv->stop;
    });
}
done_testing();
