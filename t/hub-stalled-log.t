# A stalled access logger must not stall the held streams. The hub writes a stream's
# access-log line when the stream ends; before the fix it did so on the I/O thread that serves
# every held stream, so a piped logger that stopped reading (here: one that reads only once
# the test lets it) froze
# all streams of the child once the pipe was full. Now an ender thread logs, and only the
# release of ended streams waits.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;
use Time::HiRes qw(sleep time);
use IO::Socket::INET;
use IO::Select;
use File::Temp qw(tempdir);

plan skip_all => 'streams are held by the hub only under the event MPM'
    unless ($ENV{SSE_TEST_MPM} // 'event') eq 'event';

# The logger reads nothing until the file `go` exists. It ignores SIGTERM: httpd's stop signals
# its process group, and a logger gone before the child has logged its last streams would leave
# the child blocked on a pipe nobody drains.
my $tmp = tempdir(CLEANUP => 1);
open my $sh, '>', "$tmp/logger.sh" or die;
# (At most 120 s, and not past the test's end, when the directory goes.) Its stdout goes to
# /dev/null first: httpd starts piped loggers with its own stdout, and the logger of the
# configuration pass made before httpd detaches holds the pipe of the harness's `apache2 -k start`
# backticks, which then waited the logger's 120 s whenever the logger set its trap before httpd's
# SIGTERM reached it.
print $sh "exec >/dev/null\ntrap '' TERM\nn=0\nwhile [ ! -e $tmp/go ] && [ -d $tmp ] && [ \$n -lt 600 ]; do sleep 0.2; n=\$((n+1)); done\n"
        . "[ -d $tmp ] || exit 0\nexec cat >/dev/null\n";
close $sh;
my $srv = SSETest::Server->start(global => "SSEPublishSocket pub.sock\n",
                                 conf => "ServerLimit 1\nStartServers 1\nMaxRequestWorkers 25\n"
                                       . "MinSpareThreads 5\nMaxSpareThreads 30\n"
                                       . "CustomLog \"|/bin/sh $tmp/logger.sh\" timed\n");
$srv->expect_burst_notices;

my @live = map { $srv->subscribe('/events/live') } 1 .. 5;
is(scalar(grep { $_->status == 200 } @live), 5, 'five streams held');
ok($srv->run_publish(['live', 'before'])->{rc} == 0, 'published on the socket');
is(scalar(grep { my @e = $_->events(1, 10); @e } @live), 5, 'they receive');

# Streams that end at once: each one's log line goes down the pipe nobody reads; 1,500 lines
# (about 200 KB) are more than a pipe holds (64 KiB by default, 1 MiB at most unprivileged).
my $port = $srv->port;
my ($sent, $answered) = (0, 0);
my $churn_end = time + 60;
for my $i (1 .. 1500) {
    last if time > $churn_end;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 5) or next;
    syswrite $s, "GET /events/churn HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n";
    my $buf = '';
    my $end = time + 2;
    my $sel = IO::Select->new($s);
    while ($buf !~ /\r\n\r\n/ && time < $end && $sel->can_read($end - time > 0 ? $end - time : 0)) {
        my $n = sysread $s, $buf, 4096, length $buf;
        last unless $n;
    }
    $answered++ if $buf =~ /\r\n\r\n/;
    close $s;
    $sent++;
    $_->pump(0) for @live;
}
cmp_ok($sent, '>', 1000, "$sent streams opened and closed");

ok($srv->run_publish(['live', 'after'])->{rc} == 0, 'published on the socket');
my $got = grep { my @e = $_->events(1, 15); @e && $e[0]{data} eq 'after' } @live;
is($got, 5, 'the held streams still receive while the access log is stuck');
$_->close for @live;
# The logger starts reading: the blocked log writes finish and the child can exit.
open my $go, '>', "$tmp/go" or die;
close $go;
# Released means logged: the ender writes a stream's access-log line as it releases it. (Not
# mod_status's ConnsTotal: the listener refreshes it only now and then, and it read 1 while
# hundreds of ended streams still waited for the ender.)
my $logged = sub { my $log = $srv->access_log; scalar(() = $log =~ m{"GET /events/churn }g) };
ok($srv->wait_for(sub { $logged->() >= $answered }, 60),
   'then the ended streams are released') or diag('logged ' . $logged->() . " of $answered answered");
$srv->stop;
done_testing;
