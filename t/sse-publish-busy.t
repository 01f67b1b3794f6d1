# sse-publish against a socket daemon at its client limit (SSEPublishSocketClients): the daemon
# answers `error busy: ...` and closes without taking the event; the tool comes back within -w,
# as for a socket that is restarting, and publishes once a place is free. Still busy when -w
# runs out, it says so and exits 1. (Before, a plain publish gave up at the first busy answer:
# only -f retried, though the docs said both did.)
use strict;
use warnings;
use lib 't/lib';
use IO::Socket::UNIX;
use SSETest;
use Test::More;

my $srv = SSETest::Server->start(global => "SSEPublishSocket pub.sock\nSSEPublishSocketClients 1\n");
$srv->expect_log(qr/SSE0411: /);
my $dir = $srv->dir;
my $path = "$dir/pub.sock";
my $sub = $srv->subscribe('/events/news');
is($sub->status, 200, 'a subscriber to news');

# The one place is taken by a client that published once and stays connected.
my $held = IO::Socket::UNIX->new(Peer => $path, Timeout => 10) or die "connect: $!";
print $held "channel: held\ndata: h\n\n";
$held->timeout(30);
like(scalar(<$held> // ''), qr/^ok /, 'a client holds the only place');

subtest 'still busy when -w runs out: refused, exit 1' => sub {
    my $r = $srv->run_publish(['-w', '1', 'news', 'first'], prefix => 'timeout 60');
    is($r->{rc}, 1, 'exit 1');
    like($r->{err}, qr/refused: busy: /, 'says the daemon is busy');
};

subtest 'busy, then a place frees up: published' => sub {
    my $count = sub { scalar(() = $srv->log_text =~ /SSE0411: /g) };
    my $before = $count->();
    my $out = "$dir/busy.out";
    my $pid = $srv->spawn_publish(['-w', '50', 'news', 'second'], out => $out);
    # The daemon logs each client it turns away: the tool has been told busy at least once.
    ok($srv->wait_for(sub { $count->() > $before }, 30), 'the tool was told busy');
    close $held;
    waitpid $pid, 0;
    is($? >> 8, 0, 'exit 0 once the held client left');
    open my $fh, '<', $out or die;
    like(do { local $/; <$fh> }, qr/^\d+\n\z/, 'printed the id');
    my @e = $sub->events(1, 15);
    is($e[0]{data} // '', 'second', 'the subscriber got the event');
};

$srv->stop;
done_testing;
