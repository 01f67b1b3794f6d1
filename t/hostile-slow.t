# Slow and half-open clients against a server run with the shipped conf/sse.conf (its
# RequestReadTimeout) and conf/sse-mpm.conf (the event MPM's worker and connection settings) and
# Debian's default Timeout of 300 s:
# - 200 connections that send a request line and nothing more, and a subscriber that sends its
#   headers a byte a second, hold every worker while httpd reads their headers; mod_reqtimeout
#   ends them with 408, after which a publish, a subscribe and /server-status are answered.
#   Without the RequestReadTimeout line they would hold the workers for 300 s.
# - Half-open subscribers: connected, request sent, stream open, never reading a byte and never
#   closing (what a client that vanished without a FIN looks like until TCP gives up). 5,000
#   under the event MPM (held without workers); under prefork each holds a process, so as many
#   as leave some processes free. Others are served meanwhile, a subscriber connected
#   throughout receives every event, the children's memory stays bounded, and the server lets
#   them go when they close.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use IO::Select;
use IO::Socket::INET;
use POSIX qw(:sys_wait_h);
use Test::More;
use Time::HiRes qw(time sleep);

# Every half-open subscriber is a descriptor of this process too: raise the limit (the hard
# one as root) before anything is opened, by running again under a shell that sets it.
if (!$ENV{SSE_HOSTILE_NOFILE}) {
    $ENV{SSE_HOSTILE_NOFILE} = 1;
    exec('sh', '-c', 'ulimit -Hn 20000 2>/dev/null; ulimit -n 20000 2>/dev/null; exec "$0" "$@"',
         $^X, map({ "-I$_" } @INC), $0, @ARGV) or die "exec: $!";
}
$SIG{PIPE} = 'IGNORE';

my $mods = SSETest::apxs_q('LIBEXECDIR');
# sse-mpm.conf: the event MPM's sizing (ignored by prefork). SSEMaxSubscribers within what the
# server holds here (the open files a child has, or prefork's MaxRequestWorkers 40), else
# mod_sse rightly warns (SSE0210) that sse.conf's 50,000 do not fit.
my $max_subscribers = ($ENV{SSE_TEST_MPM} // 'event') eq 'prefork' ? 40 : 19000;
my $srv = SSETest::Server->start(global => <<"EOF");
LoadModule reqtimeout_module $mods/mod_reqtimeout.so
Include $SSETest::ROOT/conf/sse.conf
Include $SSETest::ROOT/conf/sse-mpm.conf
SSEMaxSubscribers $max_subscribers
Timeout 300
EOF
$srv->expect_burst_notices;
my $prefork = $srv->mpm eq 'prefork';

sub connect_raw {
    return IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $srv->port, Timeout => 10);
}

# Reads from each socket until the server answers and closes it, for up to `seconds`. Returns
# how many were ended, and how many of those with a 408.
sub wait_ended {
    my ($socks, $seconds) = @_;
    my %raw = map { ($_ => '') } @$socks;
    my $sel = IO::Select->new(@$socks);
    my ($ended, $timeouts) = (0, 0);
    my $end = time + $seconds;
    while ($sel->count && time < $end) {
        for my $s ($sel->can_read(1)) {
            my $n = sysread($s, my $buf, 4096);
            if ($n) { $raw{$s} .= $buf; next }
            $sel->remove($s);
            ++$ended;
            ++$timeouts if $raw{$s} =~ m{^HTTP/1\.1 408 };
        }
    }
    return ($ended, $timeouts);
}

# The shipped file sets a header limit tighter than mod_reqtimeout's built-in 20-40 s (which
# applies whenever the module is loaded), and this server runs with it.
open my $conf, '<', "$SSETest::ROOT/conf/sse.conf" or die "conf/sse.conf: $!";
my ($header_max) = join('', <$conf>) =~ /^\s*RequestReadTimeout\s.*\bheader=\d+-(\d+)/m;
ok(defined $header_max && $header_max <= 20,
   'conf/sse.conf sets RequestReadTimeout header=..., at most 20 s') or diag($header_max);

my $witness = $srv->subscribe('/events/news');
is($witness->status, 200, 'a subscriber connected throughout');
my @published;

sub publish_news {
    my ($data, $what, %o) = @_;
    my $res = $srv->publish('/publish/news', $data, %o);
    is($res->{status}, 201, "$what: published") or diag($res->{raw});
    push @published, $data if $res->{status} == 201;
}

subtest 'request lines only, and headers a byte a second' => sub {
    # The subscriber that sends its headers a byte a second, in a process of its own: it says
    # (exit status 0) whether the server ended it before it had sent them all.
    my $head = "GET /events/news HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
             . "User-Agent: one byte a second\r\n\r\n";
    my $trickle = fork // die "fork: $!";
    if (!$trickle) {
        my $s = connect_raw() or POSIX::_exit(2);
        my $sel = IO::Select->new($s);
        for my $byte (split //, $head) {
            POSIX::_exit(1) unless defined syswrite($s, $byte); # ended: reset
            if ($sel->can_read(1)) {
                my $n = sysread($s, my $buf, 4096);
                POSIX::_exit(!$n || $buf =~ m{^HTTP/1\.1 408 } ? 0 : 3);
            }
        }
        POSIX::_exit(4); # the whole head went out: nothing ended it
    }
    my @slow = map { connect_raw() // die "connect: $!" } 1 .. 200;
    syswrite($_, "GET /events/news HTTP/1.1\r\n") for @slow;
    sleep 1; # they have the workers now (or wait for one)

    # Normal requests: answered once mod_reqtimeout has ended the slow ones (a safety net of
    # 120 s, well under the 300 s Timeout that would free them otherwise).
    publish_news('during the flood', 'a publish during the flood', timeout => 120);
    my $status = $srv->request(GET => '/server-status?auto', timeout => 60);
    is($status->{status}, 200, '/server-status answers');
    my $sub = $srv->subscribe('/events/news', timeout => 60);
    is($sub->status, 200, 'a new subscriber is served');
    publish_news('after the flood', 'a publish after the flood');
    my ($ev) = $sub->events(1, 30);
    is($ev && $ev->{data}, 'after the flood', 'and receives events');
    $sub->close;

    my ($ended, $timeouts) = wait_ended(\@slow, 60);
    is($ended, 200, 'every request-line-only connection was ended by the server');
    cmp_ok($timeouts, '>', 0, "with 408 ($timeouts of them; others were closed unanswered)");
    my $deadline = time + 90;
    my $waited;
    while (!($waited = waitpid($trickle, WNOHANG)) && time < $deadline) { sleep 0.2 }
    kill 'KILL', $trickle unless $waited;
    is($waited > 0 ? $? >> 8 : -1, 0,
       'the byte-a-second subscriber was ended (408) before it finished its headers');
};

subtest 'half-open subscribers' => sub {
    my $n = $prefork ? 30 : 5000;
    chomp(my $nofile = `sh -c 'ulimit -n'`);
    ok($nofile eq 'unlimited' || $nofile >= $n + 500,
       "open-files limit ($nofile) allows $n connections (raising it needs root)") or return;
    my $rss_before = $srv->children_rss;
    my @held;
    my $req = "GET /events/held HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n";
    my $counted = sub {
        my $j = SSETest::json_decode($srv->request(GET => '/sse-status', timeout => 30)->{body});
        return $j ? $j->{subscribers} : -1;
    };
    # Paced to the server: at most 200 connections wait for it at once, so its accept queue
    # (ListenBacklog 511) never overflows. A dropped SYN is retried after 1, 3, 7 s, past
    # connect_raw's 10 s on a slow server (a sanitizer build).
    for my $i (1 .. $n) {
        my $s = connect_raw() or last;
        syswrite($s, $req) or last;
        push @held, $s;
        $srv->wait_for(sub { $counted->() >= $i - 200 }, 60) or last if $i % 200 == 0;
    }
    is(scalar @held, $n, "$n half-open subscribers connected");
    ok($srv->wait_for(sub { $counted->() >= $n + 1 }, 120),
       "the server holds them all (and the witness)") or diag('sse-status: ' . $counted->());
    for my $i (1 .. 10) {
        publish_news("event $i while they do not read " . ('x' x 500), "event $i");
        my $r = $srv->publish('/publish/held', 'for nobody who reads');
        is($r->{status}, 201, "event $i to the half-open ones");
    }
    my $sub = $srv->subscribe('/events/news', timeout => 30);
    is($sub->status, 200, 'a new subscriber is served meanwhile');
    is($srv->request(GET => '/server-status?auto', timeout => 30)->{status}, 200,
       '/server-status answers meanwhile');
    $sub->close;
    my $rss_held = $srv->children_rss;
    diag("children's private memory (RssAnon): $rss_before kB before, "
         . "$rss_held kB with $n half-open subscribers");
    # Generous: about 480 bytes of shared memory per stream, its connection's pools and the
    # queued references to shared events are far below 1 MB each.
    cmp_ok($rss_held - $rss_before, '<', $n * 1024 + 256 * 1024, "children's memory bounded");
    close $_ for @held;
    ok($srv->wait_for(sub { $counted->() == 1 }, 120),
       'the server lets them go when they close') or diag('sse-status: ' . $counted->());
};

publish_news('last', 'a last event');
my @got = $witness->events(scalar @published, 30);
is_deeply([map { $_->{data} } @got], \@published,
          'the subscriber connected throughout received every accepted event, in order');
$witness->close;
$srv->stop;
done_testing;
