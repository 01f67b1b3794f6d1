# 10,000 streams on this 2-core machine with the shipped configuration (conf/sse.conf: at most
# 2 children of 64 threads): every stream opens, every event reaches every stream once and in
# order, and ordinary requests on the same port are still answered promptly.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;
use Time::HiRes qw(sleep time);

plan skip_all => 'streams without a thread each need the event MPM'
    unless ($ENV{SSE_TEST_MPM} // 'event') eq 'event';
my $hard = `sh -c 'ulimit -Hn'`;
plan skip_all => "needs 12,000 open files (hard limit $hard)" if $hard !~ /unlimited/ && $hard < 12000;

my $n = 10000;
my $srv = SSETest::Server->start(conf => "Include $SSETest::ROOT/conf/sse.conf\n");
$srv->expect_burst_notices;
my $out = $srv->dir . '/load.out';
my $pid = fork // die;
if ($pid == 0) {
    exec "sh -c '$SSETest::ROOT/build/sse-load -n $n -e 20 -r 10 -w 30 127.0.0.1 "
         . $srv->port . " > $out 2>&1'";
}
ok($srv->wait_for(sub { -s $out && `cat $out` =~ /opened=/ }, 90), 'streams connected');
my ($opened) = `cat $out` =~ /opened=(\d+)/;
is($opened, $n, "$n streams open");

# While they are held and events flow: ordinary requests on the same port.
my @times;
for (1 .. 10) {
    my $t0 = time;
    my $res = $srv->request(GET => '/server-status?auto');
    push @times, time - $t0 if $res->{status} == 200;
    sleep 0.1;
}
is(scalar @times, 10, 'ordinary requests answered');
my ($worst) = sort { $b <=> $a } @times;
cmp_ok($worst, '<', 1, sprintf('promptly (slowest %.0f ms)', $worst * 1000));
cmp_ok($srv->status_field('BusyWorkers'), '<=', 4, 'the streams hold no workers');

waitpid($pid, 0);
my $rc = $? >> 8;
my $report = `cat $out`;
diag $report;
is($rc, 0, 'sse-load: every stream got every event once, in order');
like($report, qr/lost=0 duplicated=0 out_of_order=0/, 'no loss, duplicate or disorder');
like($report, qr/delivered=200000 /, '200,000 deliveries');
$srv->stop;
done_testing;
