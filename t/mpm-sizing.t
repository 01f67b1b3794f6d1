# SSE0210: at start-up, and at each restart, mod_sse says once in the error log when the MPM's
# settings cannot hold SSEMaxSubscribers streams, with the lines to add; nothing when they can.
# And conf/sse-mpm.conf (the event MPM's sizing, a2enconf sse-mpm) holds what it says.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;

my $mpm = $ENV{SSE_TEST_MPM} // 'event';
my $root = $SSETest::ROOT;
sub sse0210 { my ($srv) = @_; return grep { /SSE0210/ } split /\n/, $srv->log_text }

# The open-files limit the servers get: the harness raises its soft limit to the hard one, here
# at most 20,000 (a child with sse-mpm.conf may hold 32,064 streams: the advice depends on it).
my ($hard) = `sh -c 'ulimit -Hn'` =~ /(\S+)/;
my $files = $hard eq 'unlimited' || $hard > 20000 ? 20000 : $hard;
system('prlimit', "--pid=$$", "--nofile=$files:$files") == 0 or BAIL_OUT('prlimit failed');

if ($mpm eq 'event') {
    # The harness's sizing: 2 children x 25 threads x (1 + 50) = 2,550 connections.
    my $srv = SSETest::Server->start(global => "SSEMaxSubscribers 5000\n");
    $srv->expect_log(qr/SSE0210: /);
    my @lines = sse0210($srv);
    is(scalar @lines, 1, 'too small: one SSE0210 line') or diag $srv->log_text;
    like($lines[0] // '', qr/\[sse:warn\].* SSE0210: the event MPM holds about 2550 streams \(2 children x ThreadsPerChild 25 x \(1 \+ AsyncRequestWorkerFactor 50\)\), fewer than SSEMaxSubscribers 5000: add \x60AsyncRequestWorkerFactor 99\x60 to the server configuration \(or enable conf\/sse-mpm.conf: a2enconf sse-mpm\)$/,
         '  it names the capacity and the line to add (5,000 / 50 workers - 1)');
    $srv->graceful;
    is(scalar(() = sse0210($srv)), 2, 'said again at a restart, once');
    $srv->stop;

    # The line it names is enough: the same server with it says nothing.
    $srv = SSETest::Server->start(global => "SSEMaxSubscribers 5000\nAsyncRequestWorkerFactor 99\n");
    is(scalar(() = sse0210($srv)), 0, 'with the line it named: no SSE0210');
    $srv->stop;
    # Quoted, as httpd's parser allows.
    $srv = SSETest::Server->start(global => "SSEMaxSubscribers 5000\nAsyncRequestWorkerFactor \"99\"\n");
    is(scalar(() = sse0210($srv)), 0, 'with the factor quoted: no SSE0210');
    $srv->stop;

    # Not queryable from the MPM, the factor is read from the configuration in force: a
    # section that is not taken does not count, the last line wins.
    $srv = SSETest::Server->start(global => "SSEMaxSubscribers 5000\nAsyncRequestWorkerFactor 99\n"
        . "<IfModule mpm_prefork_module>\nAsyncRequestWorkerFactor 1\n</IfModule>\n"
        . "<IfDefine NOT_DEFINED>\nAsyncRequestWorkerFactor 1\n</IfDefine>\n");
    is(scalar(() = sse0210($srv)), 0, '  sections not in force are not read');
    $srv->stop;

    # The shipped snippet, with the shipped sse.conf (SSEMaxSubscribers 50000): the MPM holds
    # them (~64,000); only the open-files limit, if below the 32,064 streams a child may hold
    # plus 200, is named.
    $srv = SSETest::Server->start(conf => "Include $root/conf/sse.conf\nInclude $root/conf/sse-mpm.conf\n");
    $srv->expect_log(qr/SSE0210: the open-files limit of $files holds fewer than the 32064 streams a child may hold: raise it to 32264 \(\x60ulimit -n 32264\x60 before httpd starts; Debian: APACHE_ULIMIT_MAX_FILES="ulimit -n 32264" in \/etc\/apache2\/envvars\)$/);
    @lines = sse0210($srv);
    ok(!grep(/MPM holds/, @lines), 'sse-mpm.conf holds sse.conf\'s SSEMaxSubscribers 50000')
        or diag "@lines";
    is(scalar @lines, $files < 32264 ? 1 : 0, "  the open-files limit ($files) named only if short of 32,264");
    $srv->stop;

    # As many streams as this machine's limit allows: nothing to say.
    my $n = $files - 1000;
    $srv = SSETest::Server->start(conf => "Include $root/conf/sse.conf\nInclude $root/conf/sse-mpm.conf\n"
                                        . "SSEMaxSubscribers $n\n");
    is(scalar(() = sse0210($srv)), 0, "sse-mpm.conf and SSEMaxSubscribers $n (open files $files): no SSE0210");
    $srv->stop;

    # SSEHoldMode socket (anywhere, here in one <Location>): the MPM does not count such
    # streams, so a child may hold every one of them: the open-files limit must hold
    # SSEMaxSubscribers. 3,000 holds the 2,500 a child holds in request mode, not 5,000.
    system('prlimit', "--pid=$$", '--nofile=3000:3000') == 0 or BAIL_OUT('prlimit failed');
    my $sized = "SSEMaxSubscribers 5000\nAsyncRequestWorkerFactor 99\n";
    $srv = SSETest::Server->start(global => $sized);
    is(scalar(() = sse0210($srv)), 0, 'open files 3,000, request mode, 2,500 streams a child: no SSE0210');
    $srv->stop;
    $srv = SSETest::Server->start(global => $sized, conf => "<Location /events>\n    SSEHoldMode socket\n</Location>\n");
    $srv->expect_log(qr/SSE0210: /);
    @lines = sse0210($srv);
    is(scalar @lines, 1, 'SSEHoldMode socket in a <Location>: one SSE0210 line') or diag $srv->log_text;
    like($lines[0] // '', qr/SSE0210: the open-files limit of 3000 holds fewer than the 5000 streams a child may hold \(SSEHoldMode socket: the MPM does not count those streams, so one child may take them all\): raise it to 5200 \(\x60ulimit -n 5200\x60 /,
         '  it names SSEMaxSubscribers + 200 and why') or diag "@lines";
    $srv->stop;

    # Open files short: the limit to raise it to (the last server of this test: the hard limit
    # cannot be raised back).
    system('prlimit', "--pid=$$", '--nofile=1024:1024') == 0 or BAIL_OUT('prlimit failed');
    $srv = SSETest::Server->start(global => "SSEMaxSubscribers 1000\n");
    $srv->expect_log(qr/SSE0210: /);
    @lines = sse0210($srv);
    like($lines[0] // '', qr/SSE0210: the open-files limit of 1024 holds fewer than the 1000 streams a child may hold: raise it to 1200 \(\x60ulimit -n 1200\x60 /,
         'open files 1,024 for 1,000 streams a child: raise it to 1,200') or diag "@lines";
    $srv->stop;
} else {
    # prefork: a stream holds a process; the harness's MaxRequestWorkers 40 holds 40.
    my $srv = SSETest::Server->start(global => "SSEMaxSubscribers 100\n");
    $srv->expect_log(qr/SSE0210: /);
    my @lines = sse0210($srv);
    is(scalar @lines, 1, 'prefork, too small: one SSE0210 line') or diag $srv->log_text;
    like($lines[0] // '', qr/SSE0210: the prefork MPM holds each stream on a worker of its own: MaxRequestWorkers 40 holds 40 streams \(and answers nothing else then\), fewer than SSEMaxSubscribers 100: add \x60SSEMaxSubscribers 40\x60 to answer the streams beyond with 503, or use the event MPM, where a stream holds no worker \(Debian: a2dismod mpm_prefork; a2enmod mpm_event; a2enconf sse-mpm\)$/,
         '  it says what a stream takes and the lines');
    $srv->stop;
    $srv = SSETest::Server->start(global => "SSEMaxSubscribers 40\n");
    is(scalar(() = sse0210($srv)), 0, 'prefork, SSEMaxSubscribers 40: no SSE0210');
    $srv->stop;
}
done_testing;
