# SSEMaxSubscribers and SSEMaxChannels at 1,000,000: the registry's tables (about 1.1 GB of
# shared memory) are touched only when used, so the parent's resident memory stays small
# (security finding 9: clearing them at start-up made the parent's RSS 1.1 GB).
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;

# VmRSS of a process in kB, from /proc (counts the shared pages it touched).
sub rss_kb {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/status" or return;
    while (<$fh>) { return $1 if /^VmRSS:\s+(\d+) kB/ }
    return;
}

my $srv = SSETest::Server->start(global => "SSEMaxSubscribers 1000000\nSSEMaxChannels 1000000\n");
# The test's MPM holds far fewer streams: mod_sse says so (SSE0210), rightly.
$srv->expect_log(qr/SSE0210: /);

# It works: a stream gets what is published (a slot and channel entries are used).
my $c = $srv->subscribe('/events/big');
is($c->status, 200, 'subscribe with 1,000,000 slots');
is($srv->publish('/publish/big', 'hello')->{status}, 201, 'publish');
my @ev = $c->events(1, 10);
is($ev[0]{data}, 'hello', 'the stream got the event');
$c->close;

# The bound is far under the tables' size (over 1 GB) and far over what httpd itself needs
# (a few MB), so it does not depend on the allocator or the MPM.
my $rss = rss_kb($srv->{pid});
ok(defined $rss, 'parent RSS read from /proc');
cmp_ok($rss, '<', 200 * 1024, "the parent's RSS is under 200 MB (${\ int(($rss // 0) / 1024)} MB)");
for my $child ($srv->children) {
    my $crss = rss_kb($child) // next;
    cmp_ok($crss, '<', 200 * 1024, "child $child RSS under 200 MB (${\ int($crss / 1024)} MB)");
}

$srv->stop;
done_testing;
