# sse-publish against a real httpd's socket: what no restart explains fails at once with what
# to do (exit 3), what a restart explains is retried within -w.
# "At once" is checked as an outcome, not a speed: -w is 120 s and the command runs under a
# 60 s `timeout`, so exit 3 (not timeout's 124) means it did not wait out -w.
use strict;
use warnings;
use lib 't/lib';
use IO::Socket::UNIX;
use Socket qw(AF_UNIX SOCK_STREAM pack_sockaddr_un);
use SSETest;
use Test::More;

my $srv = SSETest::Server->start(global => "SSEPublishSocket pub.sock\n");
my $dir = $srv->dir;

subtest 'a path that does not exist' => sub {
    my $r = $srv->run_publish(['-w', '120', 'news', 'x'], socket => "$dir/nothing.sock",
                              prefix => 'timeout 60');
    is($r->{rc}, 3, 'exit 3, before -w ran out');
    like($r->{err}, qr{no such socket: \Q$dir\E/nothing\.sock; check the path .*SSEPublishSocket},
         'says to check the path and SSEPublishSocket');
};

SKIP: {
    skip 'needs root to run the tool as another user', 1 unless $> == 0;
    subtest 'a user outside the socket group' => sub {
        chmod 0755, $dir;
        my $r = $srv->run_publish(['-w', '120', 'news', 'x'],
                                  prefix => 'timeout 60 setpriv --reuid=nobody --regid=nogroup --clear-groups');
        is($r->{rc}, 3, 'exit 3, before -w ran out');
        like($r->{err}, qr{permission denied on \Q$dir\E/pub\.sock: .*join its group},
             'says to join the socket group');
    };
}

subtest 'a refused connection is retried until the socket answers' => sub {
    # A socket file nobody listens on: connect() gets ECONNREFUSED, as while httpd restarts.
    my $path = "$dir/later.sock";
    socket(my $dead, AF_UNIX, SOCK_STREAM, 0) or die "socket: $!";
    bind($dead, pack_sockaddr_un($path)) or die "bind $path: $!";
    close $dead;
    my $out = "$dir/later.out";
    my $pid = $srv->spawn_publish(['-w', '120', 'news', 'x'], socket => $path, out => $out);
    sleep 1;  # not needed for the outcome: the tool either is retrying or has not started yet
    # The listener is made beside it and renamed over it: the path never goes missing (which
    # before a first connection is a mistake, not a restart).
    my $l = IO::Socket::UNIX->new(Local => "$path.new", Listen => 1) or die "listen: $!";
    rename "$path.new", $path or die "rename: $!";
    $l->timeout(30);
    my $c = $l->accept;
    ok($c, 'the tool connected once the socket listened');
    my $frame = '';
    while ($c && defined(my $line = <$c>)) {
        $frame .= $line;
        last if $line eq "\n";
    }
    like($frame, qr/^channel: news\n.*data: x\n\n\z/s, 'and sent its event');
    print $c "ok 7\n" if $c;
    waitpid $pid, 0;
    is($? >> 8, 0, 'exit 0');
    open my $fh, '<', $out or die;
    is(do { local $/; <$fh> }, "7\n", 'printed the id');
};

$srv->stop;
done_testing;
