# The parent never waits for a lock a child can hold (bus.md 8). A child is stopped (by gdb)
# inside a registry join, holding the registry's lock; another child is killed. The parent
# must go on: here, carry out a graceful restart while the lock is still held. Then, once the
# stopped child goes on, the killed child's streams are freed by the children.
# The restart is asked for only once the parent has collected the killed child: asked for
# earlier, it can be done before the parent reaches child_status (the old module then passed),
# and the event MPM was seen (with the old module too) to leave a new child that never read
# its pipe of death at the stop.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;
use IO::Select;
use IO::Socket::INET;
use IPC::Open2;
use Time::HiRes qw(sleep time);

-x '/usr/bin/gdb' or die "t/parent-stall.t needs gdb (Debian package gdb; tools/install-deps installs it)\n";

my $srv = SSETest::Server->start;
$srv->expect_log(qr/AH00052: child pid \d+ exit signal Killed \(9\)/);
$srv->expect_burst_notices;

sub status { SSETest::json_decode($srv->request(GET => '/sse-status')->{body}) }

# A stream request that nobody waits for (it hangs while its child is stopped).
my @streams;
sub open_stream {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $srv->port) or return;
    print $s "GET /events/stall HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    push @streams, $s;
}

my ($held) = $srv->children;
ok($held, "child $held will hold the lock");

# gdb stops the child at its next join, then at the first channel-table lookup of that join's
# thread: ChannelSet::hash called from the registry under its lock (in every version of it).
my $gdb_pid = open2(my $gdb_out, my $gdb_in, 'gdb', '-q', '-nx', '-p', $held);
print $gdb_in join("\n", 'set pagination off', 'set confirm off', 'break sse::Registry::join',
                   'continue', 'delete', 'eval "break sse::ChannelSet::hash thread %d", $_thread',
                   'continue', 'delete', 'echo HELD-LOCK\n', '');
$gdb_in->flush;
my $gdb_text = '';
my $sel = IO::Select->new($gdb_out);
my $end = time + 60;
my $opened = 0;
while (time < $end && $gdb_text !~ /HELD-LOCK/) {
    if ($opened < 40 && $gdb_text =~ /Continuing/) {
        open_stream();
        $opened++;
    }
    if ($sel->can_read(0.2)) {
        my $n = sysread($gdb_out, my $buf, 4096);
        last unless $n;
        $gdb_text .= $buf;
    }
}
my $stopped = $gdb_text =~ /HELD-LOCK/;
ok($stopped, "child $held stopped inside a join, holding the registry lock ($opened streams opened)")
    or diag($gdb_text);

my $parent_went_on = 0;
if ($stopped) {
    my ($victim) = grep { $_ != $held } $srv->children;
    ok($victim, "another child ($victim) is killed");
    kill 'KILL', $victim;
    # Gone from the process table: the parent has collected it, and called child_status.
    ok($srv->wait_for(sub { !kill(0, $victim) }, 10), 'the parent collected it');
    # A stalled parent neither restarts nor replaces children; it does not even log the
    # restart it was asked for.
    $parent_went_on = eval { $srv->graceful; 1 };
    ok($parent_went_on, 'the parent carried out a graceful restart while the lock was held');
}

print $gdb_in "detach\nquit\n";
close $gdb_in;
waitpid($gdb_pid, 0);

# The child goes on; every stream is closed; the counts come back to 0 (the killed child's
# streams included, freed by the children from the parent's note).
close $_ for @streams;
ok($srv->wait_for(sub { status()->{subscribers} == 0 }, 20), 'counts back to 0')
    or diag(explain(status()));

$srv->stop;
done_testing;
