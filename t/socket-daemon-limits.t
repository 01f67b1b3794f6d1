# The publish socket daemon at its limits: out of file descriptors it still answers the clients
# that wait "error busy" instead of leaving them in the backlog (before, accept4() failed with
# EMFILE at every poll round: the listening socket stayed readable and the daemon spun).
use strict;
use warnings;
use lib 't/lib';
use IO::Socket::UNIX;
use IO::Select;
use SSETest;
use Test::More;
use Time::HiRes qw(sleep time);

-x '/usr/bin/prlimit' or die "t/socket-daemon-limits.t needs prlimit (Debian package util-linux)\n";

# httpd (and so the daemon) with 64 open files at most: the daemon has about 10 open, so some
# of 70 clients find none left.
my $limit = 64;
local $ENV{SSE_TEST_HTTPD} = "prlimit --nofile=$limit:$limit " . SSETest::Server::httpd();
my $srv = SSETest::Server->start(global => "SSEPublishSocket pub.sock\nSSEPublishSocketClients 200\n");
# With so few open files, mod_sse rightly says at start-up that a child cannot hold
# SSEMaxSubscribers streams (SSE0210).
$srv->expect_log(qr/SSE0210: the open-files limit of $limit /);
$srv->expect_log(qr/SSE0413: publish socket refused a client: no file descriptor left/);
my $path = $srv->dir . '/pub.sock';
ok($srv->wait_for(sub { $srv->socket_daemon }, 5), 'the daemon runs');

sub first_line {
    my ($s, $seconds) = @_;
    my $sel = IO::Select->new($s);
    my $buf = '';
    my $end = time + $seconds;
    while ($buf !~ /\n/ && time < $end && $sel->can_read($end - time)) {
        my $r = sysread($s, $buf, 4096, length $buf);
        return $buf eq '' ? 'EOF' : $buf unless $r;
    }
    return $buf =~ /^([^\n]*)\n/ ? $1 : undef;
}

subtest 'no file descriptor left: waiting clients are answered' => sub {
    my @clients = map { IO::Socket::UNIX->new(Peer => $path, Timeout => 5) or die "connect: $!" } 1 .. 70;
    my $publisher = $clients[0];
    print $publisher "channel: lim\ndata: accepted\n\n";
    like(first_line($publisher, 5) // '', qr/^ok /, 'a client within the limit publishes');
    my $last_told = like(first_line($clients[-1], 10) // 'no answer in 10 s', qr/^error busy: .*no file descriptor left/,
         'the last client, beyond the limit, is told "error busy" (not left waiting)');
    my ($told, $silent) = ($last_told ? 1 : 0, 0);
    for my $c (@clients[1 .. $#clients - 1]) {
        my $line = first_line($c, 0.2);
        if (!defined $line) { $silent++; next }
        $told++ if $line =~ /^error busy: .*no file descriptor left/;
    }
    cmp_ok($told, '>', 0, "clients beyond the limit were told \"error busy\" ($told told, $silent accepted and quiet)");
    close $_ for @clients;
    my $again = IO::Socket::UNIX->new(Peer => $path, Timeout => 5) or die "connect: $!";
    print $again "channel: lim\ndata: later\n\n";
    like(first_line($again, 5) // '', qr/^ok /, 'then the daemon serves clients as before');
    close $again;
};

$srv->stop;
done_testing;
