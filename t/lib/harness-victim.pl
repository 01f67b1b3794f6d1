# A test that goes wrong on purpose, run by t/harness.t to show that the harness fails it:
#   perl -I t/lib t/lib/harness-victim.pl MODE
# MODE: segv (a child process segfaults), dies (a child segfaults, then the test dies before
# stop()), daemon (the publish socket daemon segfaults), report (a sanitizer report is written).
use strict;
use warnings;
use SSETest;
use Test::More;

my $mode = shift // die "usage: $0 segv|dies|daemon|report\n";
my $srv = SSETest::Server->start(global => "SSEPublishSocket pub.sock\n");
diag('run directory: ' . $srv->dir); # for t/harness.t to remove (a failed test keeps it)
# What t/socket.t allows: the daemon killed with -9, not one that crashed.
$srv->expect_log(qr/SSE0402: the publish socket daemon \(pid \d+\) died \(exit code or signal 9\)/);
# segv, dies: an MPM child, not the daemon (httpd forks it first: the lowest child pid).
# The daemon is forked at start-up and renames itself sse-publishd a moment later: wait for it.
my $daemon;
$srv->wait_for(sub { $daemon = $srv->socket_daemon }, 30) or die "no sse-publishd process\n";
my $victim = $mode eq 'daemon' ? $daemon : (grep { $_ != $daemon } $srv->children)[0];
if ($mode eq 'report') {
    open my $fh, '>', $srv->dir . '/sanitizer/asan.1' or die;
    print $fh "==1==ERROR: AddressSanitizer: heap-use-after-free (written by t/harness.t)\n";
    close $fh;
} else {
    ok($victim, "a process to crash ($mode)");
    kill 'SEGV', $victim;
    ok($srv->wait_for(sub { $srv->log_text =~ /exit signal/ }, 20), 'httpd saw it die');
}
die "the test dies before stop()\n" if $mode eq 'dies';
$srv->stop;
done_testing;
