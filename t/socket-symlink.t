# The publish socket's mode and owner are set by root (the parent) without following links
# (security finding 1): httpd's User, who owns the socket, replaces it with a symbolic link
# to a root-owned 0600 file and asks for a graceful restart; the file must stay as it was
# (it became 0660 www-data:www-data), and the server goes on. A socket removed while httpd runs
# is made anew at a graceful restart (the restart used to stop the whole server). And a socket
# directory that another user owns is refused at start with a clear message.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;
use File::Path qw(make_path);

plan skip_all => 'needs root: the socket is made by root and chowned to User' unless $> == 0;

my $as_user = 'setpriv --reuid=www-data --regid=www-data --clear-groups';

subtest 'a socket replaced by a symlink is not followed at a restart' => sub {
    my $srv = SSETest::Server->start(global => "SSEPublishSocket shared/pub.sock\n",
                                     no_start => 1);
    my $dir = $srv->dir;
    # A sticky, world-writable directory (like /tmp): accepted, since only the owner of a file
    # may replace it there; the socket's owner is User.
    make_path("$dir/shared");
    chmod 01777, "$dir/shared";
    my $secret = "$dir/secret";
    open my $fh, '>', $secret or die "$secret: $!";
    print $fh "root only\n";
    close $fh;
    chmod 0600, $secret;
    $srv->launch;
    my @st = lstat "$dir/shared/pub.sock";
    ok(-S _, 'the socket is there');
    is(scalar getpwuid($st[4]), 'www-data', 'owned by User');

    is(system("$as_user sh -c 'rm $dir/shared/pub.sock && ln -s $secret $dir/shared/pub.sock'"),
       0, 'User replaced the socket with a symlink to a root-only file');
    ok(-l "$dir/shared/pub.sock", 'the path is a symlink now');

    $srv->expect_log(qr/SSE0405: SSEPublishSocket \S+ is no longer the socket httpd made/);
    $srv->graceful;   # dies unless the restart completes
    like($srv->log_text, qr/SSE0405: SSEPublishSocket \S+shared\/pub\.sock is no longer the socket/,
         'the restart logs SSE0405');
    is($srv->request(GET => '/sse-status')->{status}, 200,
       'and the server goes on serving (a refused restart would stop every process)');
    my @after = stat $secret;
    is(sprintf('%04o', $after[2] & 07777), '0600', "the file's mode is unchanged");
    is("$after[4]:$after[5]", '0:0', "the file's owner is unchanged (root:root)");
    $srv->stop;
};

subtest 'a socket removed while httpd runs is made anew at a graceful restart' => sub {
    my $srv = SSETest::Server->start(global => "SSEPublishSocket pub.sock\n");
    my $sock = $srv->dir . '/pub.sock';
    ok(-S $sock, 'the socket is there');
    unlink $sock or die "unlink $sock: $!";
    $srv->expect_log(qr/SSE0403: SSEPublishSocket \S+pub\.sock was removed while httpd ran; making it anew/);
    $srv->graceful;   # dies unless the restart completes
    # Waited for, bounded: under AddressSanitizer 1 run in 3 did not see it right after the
    # restart's "resuming normal operations" (not understood yet: see the issue 12 note).
    ok($srv->wait_for(sub { -S $sock }, 15), 'after the restart the socket is there again')
        or diag(join '', grep { /SSE04|resuming|SIGUSR1|SIGHUP/ } split /^/m, $srv->log_text);
    my $sub = $srv->subscribe('/events/back');
    is($srv->run_publish(['back', 'through the new socket'])->{rc}, 0, 'sse-publish reaches it');
    my ($e) = $sub->events(1, 30);
    is($e && $e->{data}, 'through the new socket', 'and its event is delivered');
    $sub->close;
    $srv->stop;
};

subtest 'a socket directory owned by another user is refused' => sub {
    my $srv = SSETest::Server->start(global => "SSEPublishSocket theirs/pub.sock\n",
                                     no_start => 1);
    my $dir = $srv->dir;
    make_path("$dir/theirs");
    my $nobody = getpwnam('nobody');
    chown $nobody, -1, "$dir/theirs";
    my $out = `@{[$srv->httpd_command('-k start')]} 2>&1`;
    # apache2 -k start has detached before post_config fails: the outcome is in the log.
    $srv->wait_for(sub { $srv->log_text =~ /Configuration Failed|resuming normal operations/ }, 20);
    like($srv->log_text, qr/AH000(?:16|20): Configuration Failed/, 'httpd does not start');
    like($srv->log_text . $out,
         qr/SSE0405: SSEPublishSocket \S+theirs\/pub\.sock: its directory \S+ is owned by another user/,
         'SSE0405 says why');
    ok(!-e "$dir/theirs/pub.sock", 'no socket was made there');
    if (my $pid = $srv->read_pid) { kill 'TERM', $pid }   # the old code started
    $srv->{stopped} = 1;
};

done_testing;
