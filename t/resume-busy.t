# Resume on a busy server (review finding 1): with the default 16 MB bus full of small events,
# every publish evicts, so the ring's tail moves while a resume scans it. Many clients resume
# with a Last-Event-ID 300 events back while a publisher keeps publishing; each must get
# exactly the events published after that id, in order, then the live ones, none missing or
# repeated. Nothing of the resumed channel can have been evicted here (the ring holds far more
# records than the test publishes on it after the fill), so an sse-missed notice would be
# wrong too.
use strict;
use warnings;
use lib 't/lib';
use IO::Select;
use IO::Socket::UNIX;
use POSIX qw(:sys_wait_h);
use SSETest;
use Test::More;
use Time::HiRes qw(sleep time);

my $clients = 30;
my $back = 300;      # events between the resume id and the resume
my $live = 30;       # live events each client waits for after its resume
my $max_busy = 20000; # bound on the publisher's events (200 s at 100/s)

my $srv = SSETest::Server->start(global => "SSEPublishSocket pub.sock\nSSEHistory 1000 0\n");
$srv->expect_burst_notices;
my $sock_path = $srv->dir . '/pub.sock';

sub status {
    my $res = $srv->request(GET => '/sse-status');
    return SSETest::json_decode($res->{body}) // {};
}

# Reads answer lines from a socket until $n arrived or $seconds passed; returns them.
sub read_answers {
    my ($s, $buf, $n, $seconds) = @_;
    my @lines;
    my $sel = IO::Select->new($s);
    my $end = time + $seconds;
    while (@lines < $n && time < $end) {
        if ($$buf =~ s/^([^\n]*)\n//) { push @lines, $1; next }
        last unless $sel->can_read($end - time > 0 ? $end - time : 0);
        my $got = sysread($s, my $chunk, 65536);
        last unless $got;
        $$buf .= $chunk;
    }
    return @lines;
}

# Fill: one socket connection, events sent in batches of 2,000 (their answers, ~40 KB, stay
# below the 64 KiB the daemon lets wait) until the bus has evicted 20,000 records.
my ($filled, $fill_err, $retained) = (0, '', 0);
{
    my $s = IO::Socket::UNIX->new(Peer => $sock_path, Timeout => 10) or die "connect: $!";
    my $buf = '';
    my $started = time;
    for my $batch (1 .. 300) {
        if (time - $started > 120) {
            $fill_err = "the bus did not evict after $filled events in 120 s";
            last;
        }
        my $frames = join '', map { "channel: fill\ndata: f\n\n" } 1 .. 2000;
        while (length $frames) {
            my $w = syswrite($s, $frames);
            die "write to the publish socket: $!" unless defined $w;
            substr($frames, 0, $w) = '';
        }
        my @ans = read_answers($s, \$buf, 2000, 30);
        my @bad = grep { !/^ok \d+$/ } @ans;
        if (@ans != 2000 || @bad) {
            $fill_err = @bad ? "answer: $bad[0]" : 'only ' . scalar(@ans) . ' answers within 30 s';
            last;
        }
        $filled += 2000;
        next if $batch % 10;
        my $st = status();
        if (($st->{events_evicted} // 0) >= 20000) {
            $retained = $st->{events_retained};
            last;
        }
    }
    close $s;
    diag(sprintf 'filled: %d events in %.1f s, %d retained', $filled, time - $started, $retained);
}
is($fill_err, '', 'the fill was accepted');
cmp_ok($retained, '>', 5 * $max_busy,
       'the bus evicts and holds far more records than the test publishes after the fill')
    or BAIL_OUT('the fill did not fill the bus');

# The publisher: ~100 events/s on "busy", data "n<i>"; each id goes to a file, "i id" a line.
my $ids_file = $srv->dir . '/busy-ids';
my $pid = fork // die "fork: $!";
if ($pid == 0) {
    my $s = IO::Socket::UNIX->new(Peer => $sock_path, Timeout => 10) or POSIX::_exit(2);
    open my $out, '>', $ids_file or POSIX::_exit(2);
    $out->autoflush(1);
    my $buf = '';
    my $next = time;
    for my $i (1 .. $max_busy) {
        syswrite($s, "channel: busy\ndata: n$i\n\n") or POSIX::_exit(3);
        my ($ans) = read_answers($s, \$buf, 1, 10);
        POSIX::_exit(4) unless defined $ans && $ans =~ /^ok (\d+)$/;
        print $out "$i $1\n";
        $next += 0.01;
        my $wait = $next - time;
        sleep $wait if $wait > 0;
    }
    POSIX::_exit(0);
}

# The publisher's "i id" lines so far.
sub published {
    open my $fh, '<', $ids_file or return {};
    local $/;
    my $text = <$fh> // '';
    my %id = $text =~ /^(\d+) (\d+)\n/mg;
    return \%id;
}
sub last_index { my ($ids) = @_; my @k = sort { $b <=> $a } keys %$ids; return $k[0] // 0 }

ok($srv->wait_for(sub { last_index(published()) > $back + 50 }, 60),
   "the publisher published more than $back events")
    or BAIL_OUT('the publisher did not run');

# The resumes, one after another while the publisher runs: client c resumes after event k_c.
my @subs;
for my $c (1 .. $clients) {
    my $ids = published();
    my $k = last_index($ids) - $back;
    my $sub = $srv->subscribe('/events/busy', headers => {'Last-Event-ID' => $ids->{$k}});
    push @subs, {sub => $sub, k => $k, upto => last_index(published()) + $live};
}

my @failed;
my $deadline = time + 60; # for all the clients together
for my $i (0 .. $#subs) {
    my $c = $subs[$i];
    my $want = $c->{upto} - $c->{k};
    my $left = $deadline - time;
    my @ev = $c->{sub}->events($want, $left > 1 ? $left : 1);
    my @got;
    my $problem = '';
    for my $e (@ev) {
        if ($e->{event} ne 'message') {
            $problem ||= "an event of type $e->{event}: $e->{data}";
            next;
        }
        push @got, $e->{data} =~ /^n(\d+)$/ ? $1 : -1;
    }
    my $expected = $c->{k} + 1;
    for my $n (@got) {
        last if $problem;
        $problem = $n > $expected ? 'missing: n' . join(' n', $expected .. $n - 1) . ", then n$n"
                                  : "n$n after n" . ($expected - 1)
            if $n != $expected;
        $expected++;
    }
    $problem ||= 'got ' . scalar(@got) . " events of $want" if @got < $want;
    $c->{sub}->close;
    push @failed, "client " . ($i + 1) . " (resumed after n$c->{k}): $problem" if $problem;
}
is(scalar @failed, 0, "each of $clients resumes got exactly the $back missed events, in order, then live ones")
    or diag(join "\n", @failed);

is(waitpid($pid, WNOHANG), 0, 'the publisher was still publishing at the end');
kill 'TERM', $pid;
waitpid($pid, 0);
$srv->stop;
done_testing;
