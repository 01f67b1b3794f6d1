package SSETest;
# Integration-test harness: starts Debian's apache2 with a generated config on a free loopback
# port, with its own run directory, and talks to it with real HTTP clients.
#
#   my $srv = SSETest::Server->start(conf => '...extra config...');
#   my $res = $srv->request(POST => '/publish/news', body => 'hello');
#   my $sub = $srv->subscribe('/events/news');   # an EventSource-like client
#   my @ev  = $sub->events(1, 5);                # wait up to 5 s for 1 event
#   $srv->stop;                                  # and fail the test on unexpected log lines
#
# The MPM comes from $ENV{SSE_TEST_MPM} (event or prefork). Everything runs on 127.0.0.1,
# every wait is bounded, the server is stopped by its own pid.
use strict;
use warnings;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use Encode ();
use File::Path qw(make_path remove_tree);
use File::Temp ();
use IO::Select;
use IO::Socket::INET;
use IO::Socket::UNIX;
use IO::Socket::SSL;
use JSON::PP;
use POSIX qw(:sys_wait_h);
use Scalar::Util ();
use Test2::API ();
use Test::More;
use Time::HiRes qw(time sleep);

our $ROOT = abs_path(dirname(__FILE__) . '/../..');
# Node.js 20, when tools/install-deps had to fetch it because the system's is older.
$ENV{PATH} = "$ROOT/build/node/bin:$ENV{PATH}" if -x "$ROOT/build/node/bin/node";
# The build the tests run: mod_sse.so and sse-publish come from $BUILD (SSE_TEST_BUILD, e.g.
# build-asan for `make test-asan`; build by default).
our $BUILD = abs_path($ENV{SSE_TEST_BUILD} // "$ROOT/build");

# Under `make test-asan` the module is instrumented but Debian's apache2 is not: the sanitizer
# runtimes must be loaded first, so httpd gets SSE_TEST_PRELOAD (the paths of g++'s libasan.so and
# libubsan.so) as LD_PRELOAD, only httpd (not perl). Each sanitizer writes its reports to files
# in the server's sanitizer/ directory (log_path), which stop() and check_log() check: any report
# fails the test, and the Makefile checks the directory it gives the other binaries too.
sub sanitizer_env {
    my ($dir) = @_;
    return '' unless sanitized();
    # detect_leaks=0: httpd and the libraries it loads exit without freeing what they keep for
    # the process's life (the `apache2 -k start` process reports APR's apr_allocator_create and,
    # with mod_ssl, OpenSSL's CRYPTO_zalloc), none of it mod_sse's. Leaks of mod_sse's core are
    # looked for in the unit tests, the stress and the fuzzers, which keep detect_leaks=1.
    my $asan = join ':', grep { length } $ENV{ASAN_OPTIONS} // '', 'detect_leaks=0';
    my $ubsan = $ENV{UBSAN_OPTIONS} // '';
    return join ' ', 'LD_PRELOAD=' . shell_quote($ENV{SSE_TEST_PRELOAD}),
        'ASAN_OPTIONS=' . shell_quote(join ':', grep { length } $asan, "log_path=$dir/asan"),
        'UBSAN_OPTIONS=' . shell_quote(join ':', grep { length } $ubsan, "log_path=$dir/ubsan");
}

# True under `make test-asan`. Memory figures mean nothing there (ASan's quarantine keeps freed
# memory for a while, to catch a use after free): tests skip their memory-growth checks, which
# the normal suite makes.
sub sanitized { $ENV{SSE_TEST_PRELOAD} ? 1 : 0 }

# The sanitizer reports written under $dir (log_path files: asan.<pid>, ubsan.<pid>), each shown
# with diag(). Returns their paths.
sub sanitizer_reports {
    my ($dir) = @_;
    my @files = grep { -s } glob "$dir/*";
    for my $f (@files) {
        open my $fh, '<', $f or next;
        my @lines = <$fh>;
        $#lines = 59 if @lines > 60;
        Test::More::diag("sanitizer report $f:\n", @lines);
    }
    return @files;
}

sub apxs_q {
    my ($var) = @_;
    my $v = `apxs -q $var 2>/dev/null`;
    chomp $v;
    return $v;
}

sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp',
                                  Listen => 1, ReuseAddr => 1) or die "no free port: $!";
    my $port = $s->sockport;
    close $s;
    return $port;
}

# Where a server's files go (config, logs, htdocs, sockets): t/run/<name>, created empty. The
# children run as www-data when the tests run as root, and must be able to enter it: with a
# clone where they cannot (in /root, mode 0700, the usual place for root's clone on a fresh
# machine), the run directories go to a directory under /tmp made for this test process instead
# (removed at its end if nothing was kept in it; SSE_TEST_KEEP keeps them; its path is shown).
my $run_root;
my $run_root_owner = $$;
sub run_dir {
    my ($name) = @_;
    $run_root //= do {
        my $want = "$ROOT/t/run";
        make_path($want);
        my $enterable = 1;
        if ($> == 0) {
            for (my $p = $want; $p ne '/'; $p = dirname($p)) {
                $enterable = 0 unless ((stat $p)[2] // 0) & 01;
            }
        }
        my $dir = $want;
        if (!$enterable) {
            $dir = File::Temp::tempdir('mod_sse-t-XXXXXX', TMPDIR => 1);
            chmod 0755, $dir;
            Test::More::note("$want cannot be entered by www-data: run directories are in $dir");
        }
        $dir;
    };
    my $dir = "$run_root/$name";
    remove_tree($dir);
    make_path($dir);
    return $dir;
}
END { rmdir $run_root if $run_root && $$ == $run_root_owner && $run_root ne "$ROOT/t/run" }

sub json_decode { my ($t) = @_; return eval { JSON::PP->new->utf8->decode($t) } }

# The command line of one of the build's tools (build/sse-publish, build/sse-follow: the
# sanitizer build's under test-asan, its reports to $dir/sanitizer); $o{prefix} goes before it
# (e.g. `timeout 60`).
sub tool_command {
    my ($dir, $tool, $args, %o) = @_;
    my $cmd = join ' ', map { shell_quote($_) } ("$BUILD/$tool", @$args);
    $cmd = "$o{prefix} $cmd" if $o{prefix};
    return sanitizer_env("$dir/sanitizer") . " $cmd";
}

# Starts a shell command in the background, stdout to $out and stderr to $err (or $out too);
# $in_child runs in the child first. Returns its pid, for the caller to waitpid.
sub spawn {
    my ($cmd, $out, $err, $in_child) = @_;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        $in_child->() if $in_child;
        exec $err ? "$cmd >$out 2>$err" : "$cmd >$out 2>&1";
        exit 127;
    }
    return $pid;
}

# Ends a child process this test forked (a stopped one too): SIGCONT and SIGTERM, up to 10 s
# for it to exit, then SIGKILL; reaped either way.
sub end_child {
    my ($pid) = @_;
    kill 'CONT', $pid;
    kill 'TERM', $pid;
    my $end = time + 10;
    sleep 0.05 while waitpid($pid, WNOHANG) == 0 && time < $end;
    if (kill 0, $pid) {
        kill 'KILL', $pid;
        waitpid($pid, 0);
    }
}

sub shell_quote { my ($s) = @_; $s =~ s/'/'\\''/g; return "'$s'" }

package SSETest::Server;
use strict;
use warnings;
use File::Path qw(make_path remove_tree);
use POSIX qw(:sys_wait_h);
use Scalar::Util ();
use Test::More;
use Time::HiRes qw(time sleep);

my $seq = 0;

# start(conf => text inside the server, global => text before it, mpm => 'event'|'prefork')
sub start {
    my ($class, %o) = @_;
    my $mpm = $o{mpm} // $ENV{SSE_TEST_MPM} // 'event';
    my $name = $0;
    $name =~ s{.*/}{};
    $name =~ s{\.t$}{};
    my $dir = SSETest::run_dir("$name-$mpm-$$-" . $seq++);
    make_path("$dir/htdocs", "$dir/logs", "$dir/cores", "$dir/sanitizer");
    # Children run as User: they must be able to write a core or a sanitizer report.
    chmod 0777, "$dir/cores", "$dir/sanitizer";
    my $self = bless {dir => $dir, mpm => $mpm, port => SSETest::free_port(),
                      expected => [], owner => $$, %o}, $class;
    SSETest::Server::track($self);
    $self->write_config;
    $self->launch unless $o{no_start};
    return $self;
}

# Runs `apache2 -t` on a generated config; returns (exit code, output). Nothing is started.
sub configtest {
    my ($class, %o) = @_;
    my $self = $class->start(%o, no_start => 1);
    my $out = `@{[$self->httpd_command('-t')]} 2>&1`;
    my $rc = $? >> 8;
    $self->{stopped} = 1;
    my @reports = SSETest::sanitizer_reports("$self->{dir}/sanitizer");
    fail('the configtest wrote a sanitizer report') if @reports;
    File::Path::remove_tree($self->{dir}) unless @reports;
    return ($rc, $out);
}

# A server started some other way (t/packaging.t: Debian's apache2ctl on an /etc/apache2
# tree), for the same clients, stop and log checks: attach(dir => ..., port => ..., pid => ...,
# marker => a string in the command line of each of its processes, cores => its
# CoreDumpDirectory). Its error log is dir/logs/error.log.
sub attach {
    my ($class, %o) = @_;
    my $self = bless {mpm => $ENV{SSE_TEST_MPM} // 'event', expected => [], owner => $$, %o},
                     $class;
    track($self);
    return $self;
}

# Every server started in this process, stopped and checked by the END block below if the test
# did not stop it (it died midway, or forgot): a crash or an unexpected log line is reported
# whichever way the test ends.
my %live;
sub track {
    my ($self) = @_;
    $live{"$self"} = $self;
    Scalar::Util::weaken($live{"$self"});
}

END {
    local $?; # stop() runs commands; the test's exit status is Test::More's to report
    $_->stop_left_running for grep { defined } values %live;
}

# stop() for a server the test did not stop, once, in the process that started it.
sub stop_left_running {
    my ($self) = @_;
    return if $self->{stopped} || !$self->{pid} || ($self->{owner} // $$) != $$;
    local ($?, $@);
    diag("stopping the server of $self->{dir} (the test did not)");
    $self->stop;
}

sub dir  { $_[0]{dir} }
sub port { $_[0]{port} }
sub mpm  { $_[0]{mpm} }
sub error_log { "$_[0]{dir}/logs/error.log" }

sub write_config {
    my ($self) = @_;
    my $mods = SSETest::apxs_q('LIBEXECDIR');
    my $dir = $self->{dir};
    my $user = $> == 0 ? "User www-data\nGroup www-data\n" : '';
    # event: 2 children of 25 threads; ServerLimit leaves room for the old generation's
    # children while they finish after a graceful restart.
    my $mpm_conf = $self->{mpm} eq 'prefork'
        ? "StartServers 4\nMinSpareServers 4\nMaxSpareServers 8\nMaxRequestWorkers 40\nServerLimit 40\n"
        : "StartServers 2\nServerLimit 4\nThreadsPerChild 25\nMaxRequestWorkers 50\nAsyncRequestWorkerFactor 50\n"
          . "MinSpareThreads 25\nMaxSpareThreads 50\nThreadLimit 25\n";
    # SSEMaxSubscribers within what that sizing holds, else mod_sse warns at start-up (SSE0210):
    # prefork holds a stream per process (MaxRequestWorkers 40); event about ThreadsPerChild x
    # (1 + AsyncRequestWorkerFactor) a child, 1275 in the one child some tests keep. A test's
    # own SSEMaxSubscribers (in `global`) comes later and wins.
    $mpm_conf .= $self->{mpm} eq 'prefork' ? "SSEMaxSubscribers 40\n" : "SSEMaxSubscribers 1000\n";
    $self->{$_} //= '' for qw(global conf);
    # SSE_TEST_HOLD_MODE=socket: every server holds its streams by their sockets (SSEHoldMode,
    # docs/directives.md), to run the suite in that mode; a test's own SSEHoldMode comes later
    # and wins. Tests that check when a request-mode stream's access-log line is written fail
    # by design.
    my $hold = ($ENV{SSE_TEST_HOLD_MODE} // '') eq 'socket' ? "SSEHoldMode socket\n" : '';
    my $so = $self->{module} // "$SSETest::BUILD/mod_sse.so";
    my $tls = '';
    if ($self->{tls}) {
        # A throwaway self-signed certificate, made for this run.
        system("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 "
               . "-addext basicConstraints=critical,CA:FALSE "
               . "-keyout $dir/key.pem -out $dir/cert.pem >/dev/null 2>&1") == 0
            or die "openssl failed";
        $tls = "LoadModule socache_shmcb_module $mods/mod_socache_shmcb.so\n"
             . "LoadModule ssl_module $mods/mod_ssl.so\n"
             . "SSLSessionCache shmcb:$dir/ssl_scache(512000)\n"
             . "SSLEngine on\nSSLCertificateFile $dir/cert.pem\n"
             . "SSLCertificateKeyFile $dir/key.pem\n";
        $tls .= "LoadModule http2_module $mods/mod_http2.so\nProtocols h2 http/1.1\n"
            if $self->{h2};
    }
    my $conf = <<"EOF";
ServerRoot "$dir"
PidFile "$dir/httpd.pid"
DefaultRuntimeDir "$dir"
ErrorLog "$dir/logs/error.log"
CoreDumpDirectory "$dir/cores"
LogLevel warn
Listen 127.0.0.1:$self->{port}
ServerName 127.0.0.1
$user
LoadModule mpm_$self->{mpm}_module $mods/mod_mpm_$self->{mpm}.so
LoadModule authz_core_module $mods/mod_authz_core.so
LoadModule authz_host_module $mods/mod_authz_host.so
LoadModule mime_module $mods/mod_mime.so
LoadModule status_module $mods/mod_status.so
TypesConfig "$dir/mime.types"
LoadModule sse_module $so
$tls
$mpm_conf
Timeout 30
LogFormat "%h %t \\"%r\\" %>s %b %D events=%{SSE_EVENTS}e bytes=%{SSE_BYTES}e end=%{SSE_END}e" timed
CustomLog "$dir/logs/access.log" timed
DocumentRoot "$dir/htdocs"
$hold$self->{global}
<Location /events>
    SetHandler sse-subscribe
</Location>
<Location /publish>
    SetHandler sse-publish
    Require ip 127.0.0.1
</Location>
<Location /server-status>
    SetHandler server-status
</Location>
<Location /sse-status>
    SetHandler sse-status
</Location>
$self->{conf}
EOF
    $conf =~ s/\$\{(\w+)\}/$self->{$1}/g; # ${port}, ${dir} in caller snippets
    open my $types, '>', "$dir/mime.types" or die "$dir/mime.types: $!";
    close $types;
    open my $fh, '>', "$dir/httpd.conf" or die "$dir/httpd.conf: $!";
    print $fh $conf;
    close $fh;
    chmod 0755, $dir;
}

sub httpd { $ENV{SSE_TEST_HTTPD} // '/usr/sbin/apache2' }

# The shell command that runs this server's httpd with `args` (e.g. '-k start'): with the
# sanitizer runtimes preloaded under `make test-asan`. For tests that start httpd themselves.
sub httpd_command {
    my ($self, $args) = @_;
    return SSETest::sanitizer_env("$self->{dir}/sanitizer")
         . " @{[httpd()]} -f $self->{dir}/httpd.conf $args";
}

sub launch {
    my ($self) = @_;
    my $started = () = $self->log_text =~ /resuming normal operations/g;
    # Core files (if a child crashes) land in the run directory, which is kept on failure.
    # As many open files as allowed: every held stream is a file descriptor.
    my $out = `ulimit -c unlimited 2>/dev/null; ulimit -n \$(ulimit -Hn) 2>/dev/null; @{[$self->httpd_command('-k start')]} 2>&1`;
    # A failed start may still have left a server running (e.g. `-k start` exiting non-zero
    # after it forked the daemon): stopped by its pid file's pid before bailing out.
    my $bail = sub {
        # The daemon writes its pid file after `-k start` returns: a bounded wait for it.
        $self->wait_for(sub { -s "$self->{dir}/httpd.pid" }, 5);
        my $pid = $self->read_pid;
        kill 'TERM', $pid if $pid;
        BAIL_OUT("@_\n" . $self->log_text);
    };
    $bail->("apache2 did not start: $out") if $? != 0;
    $self->wait_for(sub { -s "$self->{dir}/httpd.pid" && $self->accepts }, 15,
                    'httpd accepts connections')
        or $bail->('apache2 did not come up:');
    # The listeners accept before the parent logs "resuming normal operations": graceful()
    # counts those lines, so a restart asked for before this one is written would take it for
    # its own (t/socket-symlink.t under make test-asan read the log before the restart's lines).
    $self->wait_for(sub { (() = $self->log_text =~ /resuming normal operations/g) > $started }, 15,
                    'httpd logs that it is up')
        or $bail->('apache2 did not log "resuming normal operations":');
    $self->{pid} = $self->read_pid;
}

sub read_pid {
    my ($self) = @_;
    open my $fh, '<', "$self->{dir}/httpd.pid" or return;
    my $pid = <$fh>;
    chomp $pid if defined $pid;
    return $pid;
}

sub accepts {
    my ($self) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $self->{port},
                                  Timeout => 1);
    return $s ? 1 : 0;
}

sub wait_for {
    my ($self, $cond, $seconds, $what) = @_;
    my $end = time + $seconds;
    while (time < $end) {
        return 1 if $cond->();
        sleep 0.05;
    }
    return 0;
}

sub access_log {
    my ($self) = @_;
    open my $fh, '<', "$self->{dir}/logs/access.log" or return '';
    local $/;
    return <$fh>;
}

sub log_text {
    my ($self) = @_;
    open my $fh, '<', $self->error_log or return '';
    local $/;
    return <$fh>;
}

# Lines of the error log matching these patterns are expected (and not a failure).
sub expect_log {
    my ($self, @patterns) = @_;
    push @{$self->{expected}}, @patterns;
}

# For tests that open connections in bursts (hundreds at once): while each new stream's
# request is read and subscribed it takes a worker, so a burst can take all of them for a
# moment, and the event MPM's parent says so once per run at [error] level (AH10159 "within
# MinSpareThreads of MaxRequestWorkers", AH00484 "reached MaxRequestWorkers", depending on
# when its once-a-second check lands; prefork's is AH00161, a stream holding a process). The
# connections wait in the listen backlog; tests that expect this still check that no stream
# was refused. Whether the notice comes depends on the machine's speed (t/scale.t's 10,000
# streams got AH10159 under `make test-asan`, not in the normal run), so it cannot be what tells
# that streams hold workers: t/async.t and t/scale.t assert that with BusyWorkers.
sub expect_burst_notices {
    my ($self) = @_;
    $self->expect_log(qr/AH10159: server is within MinSpareThreads of MaxRequestWorkers/,
                      qr/AH00484: server reached MaxRequestWorkers setting/,
                      qr/AH00161: server reached MaxRequestWorkers setting/);
}

# The PIDs of the server's child processes.
sub children {
    my ($self) = @_;
    my @pids = map { chomp; $_ } `pgrep -P $self->{pid}`;
    return grep { /^\d+$/ } @pids;
}

# Private resident memory of the server's children, in kB (RssAnon: the bus is shared memory,
# and its pages count in VmRSS as events fill them).
sub children_rss {
    my ($self) = @_;
    my $kb = 0;
    for my $pid ($self->children) {
        open my $fh, '<', "/proc/$pid/status" or next;
        while (<$fh>) { $kb += $1 if /^RssAnon:\s+(\d+)/ }
    }
    return $kb;
}

sub graceful {
    my ($self) = @_;
    my $before = () = $self->log_text =~ /resuming normal operations/g;
    kill 'USR1', $self->{pid};
    $self->wait_for(sub { (() = $self->log_text =~ /resuming normal operations/g) > $before },
                    20, 'graceful restart') or die "graceful restart did not complete";
    $self->wait_for(sub { $self->accepts }, 10);
}

sub stop {
    my ($self) = @_;
    return if $self->{stopped}++;
    my $pid = $self->{pid};
    $self->{stop_offset} = -s $self->error_log // 0;
    # httpd's ungraceful stop reads every worker's socket without a lock (close_worker_sockets):
    # a worker closing a connection at that instant frees it under the reader, and the exiting
    # child dies of SIGSEGV in apr_os_sock_get (an httpd race, read from cores of
    # t/hub-stalled-log.t and t/token.t). The harness's own last request is such a connection:
    # the server's lingering close of it ends when this client's FIN arrives. It gets a moment
    # to finish before the TERM; this lowers the odds of httpd's race, it decides no outcome.
    my $since = time - ($self->{last_close} // 0);
    sleep(0.5 - $since) if $since >= 0 && $since < 0.5;
    kill 'TERM', $pid if $pid;
    my $gone = $self->wait_for(sub { !kill(0, $pid) }, 30, 'httpd stops');
    ok($gone, "httpd ($self->{mpm}) stopped");
    # Every process of this server (children, the publish socket daemon) must be gone too.
    my $conf = $self->{marker} // "$self->{dir}/httpd.conf";
    my $left = sub {
        grep {
            # A process may exit between the glob and the open.
            my $fh;
            my $cmd = open($fh, '<', "/proc/$_/cmdline") ? do { local $/; <$fh> } // '' : '';
            $_ != $$ && index($cmd, $conf) >= 0;
        } map { m{/proc/(\d+)$} ? $1 : () } glob '/proc/[0-9]*';
    };
    $self->wait_for(sub { !$left->() }, 5);
    my @left = $left->();
    ok(!@left, 'no process of this server is left') or diag("left running: @left");
    kill 'KILL', @left if @left;
    $self->check_log;
}

# Fails the test for every warn-or-worse line, crash or assertion in the error log that was not
# announced with expect_log(), for every core file and for every sanitizer report. A crash is
# seen whatever the machine's core_pattern: httpd logs a child (or the publish socket daemon)
# killed by a signal other than KILL/TERM/HUP as "exit signal" at notice level, which is logged
# at any LogLevel; a core file in cores/ (where CoreDumpDirectory puts it when core_pattern is a
# plain name) is a second witness, with its backtrace when gdb is there.
sub check_log {
    my ($self) = @_;
    my @bad;
    my $log = $self->log_text;
    my $until_stop = $self->{stop_offset} // length $log;
    my @lines = ((map { [$_, 0] } split /\n/, substr($log, 0, $until_stop)),
                 (map { [$_, 1] } split /\n/, substr($log, $until_stop)));
    for (@lines) {
        my ($line, $stopping) = @$_;
        # The stop is ungraceful: each child's close_worker_sockets() (event.c) closes the
        # sockets its workers are serving, and a worker between a lingering close's read and
        # its pollset add then logs AH03092 with EBADF (seen once under `make test-asan`, in
        # t/proxy.t). httpd's race, allowed only in what the stop logged.
        next if $stopping
             && $line =~ /\(9\)Bad file descriptor: AH03092: process_lingering_close/;
        next unless $line =~ /\[(?:[\w]+:)?(?:warn|error|crit|alert|emerg)\]/
                 || $line =~ /exit signal|Segmentation|Assertion|AddressSanitizer|LeakSanitizer
                              |runtime\ error:|core\ dumped/x;
        next if grep { $line =~ $_ } @{$self->{expected}};
        push @bad, $line;
    }
    ok(!@bad, "no unexpected lines in the error log ($self->{mpm})")
        or diag(join "\n", @bad);
    my @cores = glob(($self->{cores} // "$self->{dir}/cores") . '/core*');
    ok(!@cores, "no core file ($self->{mpm})") or diag("core files: @cores");
    for my $core (@cores) {
        push @bad, $core;
        diag(`gdb -batch -ex 'bt 30' -ex 'thread apply all bt 12' @{[httpd()]} $core 2>/dev/null | grep -E '^(#|Thread)' | head -80`)
            if -x '/usr/bin/gdb';
    }
    my @reports = SSETest::sanitizer_reports("$self->{dir}/sanitizer");
    ok(!@reports, "no sanitizer report ($self->{mpm})");
    push @bad, @reports;
    remove_tree($self->{dir}) if !@bad && !$ENV{SSE_TEST_KEEP};
}

# A server the test did not stop (a test that dies frees its lexicals before END blocks run) is
# stopped and checked here; one still referenced at the end by the END block above.
sub DESTROY { $_[0]->stop_left_running }

# A whole HTTP/1.1 exchange over a new connection:
#   request(METHOD => path, headers => {..}, body => '...')
# returns {status, headers => {lowercase name => value}, body}.
sub request {
    my ($self, $method, $path, %o) = @_;
    my $s = $self->{tls}
        ? IO::Socket::SSL->new(PeerAddr => '127.0.0.1', PeerPort => $self->{port}, Timeout => 10,
                               SSL_verify_mode => 0)
        : IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $self->{port}, Timeout => 10);
    die "connect: $!" unless $s;
    my $body = $o{body} // '';
    my %h = (Host => "127.0.0.1:$self->{port}", Connection => 'close', %{$o{headers} // {}});
    $h{'Content-Length'} = length($body) if $method ne 'GET' && $method ne 'HEAD'
                                            && !exists $h{'Transfer-Encoding'};
    my $req = "$method $path HTTP/1.1\r\n" . join('', map { "$_: $h{$_}\r\n" } sort keys %h)
            . "\r\n" . $body;
    syswrite($s, $req);
    my $raw = '';
    my $sel = IO::Select->new($s);
    my $end = time + ($o{timeout} // 10);
    while (time < $end && ($self->{tls} ? 1 : $sel->can_read($end - time))) {
        my $n = sysread($s, my $buf, 65536);
        last unless $n;
        $raw .= $buf;
    }
    close $s;
    $self->{last_close} = time;
    return SSETest::parse_response($raw, $method eq 'HEAD');
}

# POST to the publish location; returns the response with {json} decoded.
sub publish {
    my ($self, $path, $body, %o) = @_;
    my $res = $self->request(POST => $path, body => $body, %o);
    $res->{json} = SSETest::json_decode($res->{body});
    return $res;
}

# A field of mod_status's machine-readable page, e.g. status_field('BusyWorkers').
sub status_field {
    my ($self, $name) = @_;
    my $res = $self->request(GET => '/server-status?auto');
    return $res->{body} =~ /^\Q$name\E: (\S+)/m ? $1 : undef;
}

# SSETest::tool_command for this server's directory.
sub tool_command {
    my ($self, $tool, $args, %o) = @_;
    return SSETest::tool_command($self->{dir}, $tool, $args, %o);
}

# The command line of sse-publish against this server's socket, or $o{socket}.
sub publish_command {
    my ($self, $args, %o) = @_;
    my $sock = $o{socket} // "$self->{dir}/pub.sock";
    return $self->tool_command('sse-publish', ['-S', $sock, @$args], %o);
}

# SSETest::spawn, in a child whose exit does not stop this server.
sub spawn_command {
    my ($self, $cmd, $out, $err) = @_;
    return SSETest::spawn($cmd, $out, $err, sub { $self->{stopped} = 1 });
}

# Starts build/sse-publish in the background under `timeout 60`, stdout and stderr to $o{out}
# (socket => as for publish_command); returns its pid, for the caller to waitpid.
sub spawn_publish {
    my ($self, $args, %o) = @_;
    return $self->spawn_command($self->publish_command($args, %o, prefix => 'timeout 60'),
                                $o{out});
}

# Starts build/sse-follow @$args under `timeout 60`, stdout to $o{out}, stderr to $o{err};
# returns its pid, for the caller to waitpid.
sub spawn_follow {
    my ($self, $args, %o) = @_;
    return $self->spawn_command($self->tool_command('sse-follow', $args, prefix => 'timeout 60'),
                                $o{out}, $o{err});
}

# Runs build/sse-publish against this server's socket: run_publish(\@args, stdin => '...').
# Returns {rc, out, err}.
sub run_publish {
    my ($self, $args, %o) = @_;
    my $in = "$self->{dir}/publish.stdin";
    open my $fh, '>', $in or die;
    print $fh $o{stdin} // '';
    close $fh;
    my $cmd = $self->publish_command($args, %o);
    my $out = `$cmd <$in 2>$self->{dir}/publish.stderr`;
    my $rc = $? >> 8;
    open my $eh, '<', "$self->{dir}/publish.stderr";
    local $/;
    my $err = <$eh> // '';
    return {rc => $rc, out => $out, err => $err};
}

# The pid of the publish socket daemon (named sse-publishd), if running.
# The pid of the running publish socket daemon; undef when there is none, or only one that died
# and httpd has not reaped yet (a zombie: httpd looks once a second, then starts a new one).
sub socket_daemon {
    my ($self) = @_;
    for my $pid (`pgrep -P $self->{pid} -x sse-publishd` =~ /(\d+)/g) {
        open my $fh, '<', "/proc/$pid/stat" or next;
        my $stat = <$fh> // '';
        return $pid if $stat !~ /^\d+ \(.*\) Z /;
    }
    return undef;
}

# A client that leaves as soon as its stream started: sends a stream request for `path`, reads
# the response head, closes. False when the connection could not be made.
sub open_and_leave {
    my ($self, $path) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $self->{port}, Timeout => 5)
        or return 0;
    syswrite $s, "GET $path HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n";
    my $buf = '';
    while ($buf !~ /\r\n\r\n/) { my $n = sysread $s, $buf, 4096, length $buf; last unless $n }
    close $s;
    return 1;
}

sub subscribe {
    my ($self, $path, %o) = @_;
    return SSETest::Client->open($self, $path, %o);
}

# A subscriber on the publish socket: subscribe_socket('a,b', last_event_id => '42',
# event_types => 'x,message').
# The same client as subscribe() (events, comments, closed, ...); refused() holds the
# daemon's "error ..." line when the subscribe block was refused.
sub subscribe_socket {
    my ($self, $channels, %o) = @_;
    return SSETest::Client->open_socket($o{socket} // "$self->{dir}/pub.sock", $channels, %o);
}

package SSETest;

sub parse_response {
    my ($raw, $head_only) = @_;
    my ($head, $rest) = split /\r\n\r\n/, $raw, 2;
    return {status => 0, headers => {}, body => '', raw => $raw} unless defined $head;
    my @lines = split /\r\n/, $head;
    my ($status) = (shift(@lines) // '') =~ m{^HTTP/\d\.\d (\d+)};
    my %h;
    for (@lines) {
        my ($k, $v) = /^([^:]+):\s*(.*)$/ or next;
        $h{lc $k} = $v;
    }
    my $body = $rest // '';
    if (!$head_only && ($h{'transfer-encoding'} // '') =~ /chunked/i) {
        my $dec = SSETest::Chunked->new;
        $body = $dec->feed($body);
    }
    return {status => $status // 0, headers => \%h, body => $body, raw => $raw};
}

# A redis-server of its own (Debian's), for SSERedis: 127.0.0.1, a free port, its own
# directory, run in the foreground (--daemonize no) by a forked child and stopped by its pid.
#   my $redis = SSETest::Redis->start(appendonly => 1);
#   $redis->url; $redis->cli('XLEN', 'sse:stream');
#   $redis->pause; $redis->resume;          # SIGSTOP, SIGCONT
#   $redis->kill9; $redis->launch;           # the same port and directory (and its AOF)
package SSETest::Redis;
use strict;
use warnings;
use POSIX qw(:sys_wait_h);
use Test::More;
use Time::HiRes qw(time sleep);

my $redis_seq = 0;

sub start {
    my ($class, %o) = @_;
    my $name = $0;
    $name =~ s{.*/}{};
    $name =~ s{\.t$}{};
    my $self = bless {dir => SSETest::run_dir("redis-$name-$$-" . $redis_seq++),
                      port => SSETest::free_port(), owner => $$, %o}, $class;
    $self->launch;
    return $self;
}

sub port { $_[0]{port} }
sub dir  { $_[0]{dir} }
sub url  { "redis://127.0.0.1:$_[0]{port}" }

# The configuration the Redis tests give each server: streams at /events with a 1 s keep-alive
# (so a test sees a stream is alive), and with who => 1, /who: streams whose client id comes
# from the X-Client-Id header (for only/except targeting).
sub server_conf {
    my (%o) = @_;
    my $conf = "<Location /events>\n    SSEKeepalive 1\n</Location>\n";
    $conf .= "<Location /who>\n    SetHandler sse-subscribe\n"
           . "    SSEClientId %{req:X-Client-Id} unauthenticated\n</Location>\n" if $o{who};
    return $conf;
}
# With start(password => P): also listens on this Unix socket, and requires P.
sub socket_path { "$_[0]{dir}/redis.sock" }

# Starts redis-server and waits (15 s at most) until it answers PING.
sub launch {
    my ($self) = @_;
    my @args = ('--port', $self->{port}, '--bind', '127.0.0.1', '--dir', $self->{dir},
                '--save', '', '--appendonly', $self->{appendonly} ? 'yes' : 'no',
                '--daemonize', 'no', '--logfile', "$self->{dir}/redis.log");
    push @args, '--unixsocket', $self->socket_path, '--unixsocketperm', '777', # httpd's children run as another user
                '--requirepass', $self->{password} if defined $self->{password};
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        exec 'redis-server', @args;
        exit 127;
    }
    $self->{pid} = $pid;
    my $end = time + 15;
    while (time < $end) {
        return 1 if ($self->cli('PING') // '') eq 'PONG';
        die "redis-server exited:\n" . `cat $self->{dir}/redis.log` if waitpid($pid, WNOHANG) == $pid;
        sleep 0.05;
    }
    die "redis-server did not answer PING within 15 s";
}

# redis-cli against this server (at most 5 s); its output without the last newline.
sub cli {
    my ($self, @args) = @_;
    my $cmd = join ' ', map { SSETest::shell_quote($_) }
                        ('timeout', '5', 'redis-cli', '-h', '127.0.0.1', '-p', $self->{port},
                         (defined $self->{password} ? ('--no-auth-warning', '-a', $self->{password}) : ()),
                         @args);
    my $out = `$cmd 2>/dev/null`;
    chomp $out if defined $out;
    return $out;
}

# Each server's reader starts at the stream's end once it is connected: publishes on $from
# until a subscriber of every server in @servers got one, so that what follows reaches all of
# them (30 tries). True when they all did.
sub wait_joined {
    my ($class, $from, @servers) = @_;
    my @subs = map { $_->subscribe('/events/warmup') } @servers;
    for my $try (1 .. 30) {
        $from->publish('/publish/warmup', "w$try");
        my $all = 1;
        for my $s (@subs) {
            $all = 0 unless $s->read_until(sub { scalar $s->all_events }, 1);
        }
        if ($all) {
            $_->close for @subs;
            return 1;
        }
    }
    return 0;
}

# Publishes $data to $path on $srv until one is accepted (at most 80 tries, 0.25 s apart);
# its id, undef when none was.
sub publish_when_back {
    my ($class, $srv, $path, $data) = @_;
    for (1 .. 80) {
        my $r = $srv->publish($path, $data);
        return $r->{json}{id} if $r->{status} == 201;
        sleep 0.25;
    }
    return undef;
}

sub pause  { kill 'STOP', $_[0]{pid} }
sub resume { kill 'CONT', $_[0]{pid} }

sub kill9 {
    my ($self) = @_;
    return unless $self->{pid};
    kill 'KILL', $self->{pid};
    waitpid($self->{pid}, 0);
    $self->{pid} = undef;
}

sub stop {
    my ($self) = @_;
    return unless $self->{pid} && $self->{owner} == $$;
    SSETest::end_child($self->{pid});
    $self->{pid} = undef;
    # Kept, with its log, when a test failed.
    File::Path::remove_tree($self->{dir})
        if Test::More->builder->is_passing && !$ENV{SSE_TEST_KEEP};
}

sub DESTROY { $_[0]->stop }

package SSETest;

# Incremental chunked-transfer decoder.
package SSETest::Chunked;
sub new { bless {buf => '', left => 0, done => 0}, shift }
sub feed {
    my ($self, $data) = @_;
    $self->{buf} .= $data;
    my $out = '';
    for (;;) {
        if ($self->{left} > 0) {
            my $take = substr($self->{buf}, 0, $self->{left}, '');
            $out .= $take;
            $self->{left} -= length $take;
            last if $self->{left} > 0;
            $self->{need_crlf} = 1;
        }
        if ($self->{need_crlf}) {
            last if length($self->{buf}) < 2;
            substr($self->{buf}, 0, 2, '');
            $self->{need_crlf} = 0;
        }
        last unless $self->{buf} =~ s/^([0-9a-fA-F]+)[^\r\n]*\r\n//;
        my $n = hex $1;
        if ($n == 0) { $self->{done} = 1; last }
        $self->{left} = $n;
    }
    return $out;
}

# An EventSource-like client: one GET, then the stream parsed by the WHATWG rules.
package SSETest::Client;
use strict;
use warnings;
use IO::Select;
use Time::HiRes qw(time);

sub open {
    my ($class, $srv, $path, %o) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $srv->port,
                                  Timeout => 10) or die "connect: $!";
    my %h = (Host => '127.0.0.1:' . $srv->port, Accept => 'text/event-stream',
             %{$o{headers} // {}});
    syswrite($s, "GET $path HTTP/1.1\r\n" . join('', map { "$_: $h{$_}\r\n" } sort keys %h)
                 . "\r\n");
    my $self = bless {sock => $s, raw => '', head => undef, text => '', events => [],
                      comments => [], retry => undef, closed => 0, lastEventId => '',
                      data => '', type => '', id_buf => undef, pid => $$}, $class;
    $self->track;
    $self->read_until(sub { defined $self->{head} }, $o{timeout} // 10);
    return $self;
}

sub open_socket {
    my ($class, $path, $channels, %o) = @_;
    my $s = IO::Socket::UNIX->new(Peer => $path, Timeout => 10) or die "connect $path: $!";
    syswrite($s, "subscribe: $channels\n"
                 . (defined $o{last_event_id} ? "last-event-id: $o{last_event_id}\n" : '')
                 . (defined $o{event_types} ? "event-types: $o{event_types}\n" : '') . "\n");
    my $self = bless {sock => $s, raw => '', text => '', events => [], comments => [],
                      retry => undef, closed => 0, lastEventId => '', data => '', type => '',
                      id_buf => undef, pid => $$, chunked => 0,
                      head => {status => 200, headers => {}}}, $class;
    $self->track;
    # The first line tells: ": ok" (a stream follows) or "error <reason>".
    $self->read_until(sub { ($self->{stream_bytes} // '') =~ /\n/ }, $o{timeout} // 10);
    if (($self->{stream_bytes} // '') =~ /^error ([^\n]*)\n/) {
        $self->{refused} = $1;
        $self->{head}{status} = 0; # not a stream: not saved for the linter
    }
    return $self;
}
sub refused { $_[0]{refused} }

sub status  { $_[0]{head} ? $_[0]{head}{status} : 0 }
sub headers { $_[0]{head} ? $_[0]{head}{headers} : {} }
sub closed  { $_[0]{closed} }
sub raw_stream { $_[0]{stream_bytes} // '' }

sub close {
    my ($self) = @_;
    $self->save_stream;
    close $self->{sock} if $self->{sock};
    $self->{sock} = undef;
}

# Reads until cond() holds, the stream ends, or the time is up. Returns cond().
sub read_until {
    my ($self, $cond, $seconds) = @_;
    my $end = time + $seconds;
    my $sel = IO::Select->new($self->{sock});
    while (!$cond->() && !$self->{closed} && time < $end) {
        next unless $sel->can_read($end - time > 0 ? $end - time : 0);
        my $n = sysread($self->{sock}, my $buf, 65536);
        if (!$n) { $self->{closed} = 1; last }
        $self->absorb($buf);
    }
    return $cond->();
}

sub absorb {
    my ($self, $buf) = @_;
    if (!defined $self->{head}) {
        $self->{raw} .= $buf;
        my $i = index($self->{raw}, "\r\n\r\n");
        return if $i < 0;
        my $head = substr($self->{raw}, 0, $i + 4);
        $buf = substr($self->{raw}, $i + 4);
        $self->{head} = SSETest::parse_response($head, 1);
        $self->{chunked} = ($self->{head}{headers}{'transfer-encoding'} // '') =~ /chunked/i;
        $self->{dechunk} = SSETest::Chunked->new;
    }
    my $bytes = $self->{chunked} ? $self->{dechunk}->feed($buf) : $buf;
    $self->{stream_bytes} .= $bytes;
    $self->{text} .= $bytes;
    $self->parse;
}

# The WHATWG "interpreting an event stream" algorithm, over complete lines.
sub parse {
    my ($self) = @_;
    while ($self->{text} =~ s/^([^\r\n]*)(\r\n|\r(?=[^\n])|\n)//) {
        my $line = $1;
        if ($line eq '') { $self->dispatch; next }
        if ($line =~ /^:(.*)/) { push @{$self->{comments}}, $1; next }
        my ($field, $value) = $line =~ /^([^:]*)(?::(.*))?$/;
        $value //= '';
        $value =~ s/^ //;
        if ($field eq 'event') { $self->{type} = $value }
        elsif ($field eq 'data') { $self->{data} .= "$value\n" }
        elsif ($field eq 'id') { $self->{lastEventId} = $value unless $value =~ /\0/ }
        elsif ($field eq 'retry') {
            if ($value =~ /^\d+$/) { $self->{retry} = $value }
            else { push @{$self->{bad_fields}}, $line }
        }
        else { push @{$self->{bad_fields}}, $line }
    }
}

sub dispatch {
    my ($self) = @_;
    my $data = $self->{data};
    my $type = $self->{type};
    $self->{data} = '';
    $self->{type} = '';
    return if $data eq '';
    $data =~ s/\n$//;
    push @{$self->{events}}, {data => $data, event => $type eq '' ? 'message' : $type,
                              id => $self->{lastEventId}};
}

# Waits up to $seconds for $n events in all (counting those already received) and returns
# the ones not yet taken.
sub events {
    my ($self, $n, $seconds) = @_;
    $self->{taken} //= 0;
    $self->read_until(sub { @{$self->{events}} - $self->{taken} >= $n }, $seconds // 5);
    my @new = @{$self->{events}}[$self->{taken} .. $#{$self->{events}}];
    $self->{taken} = @{$self->{events}};
    return @new;
}

# Reads whatever arrives for up to $seconds (keeps a client draining its socket).
sub pump {
    my ($self, $seconds) = @_;
    $self->read_until(sub { 0 }, $seconds);
}

sub all_events { @{$_[0]{events}} }
sub comments { @{$_[0]{comments}} }
sub retry { $_[0]{retry} }
sub bad_fields { @{$_[0]{bad_fields} // []} }

# Every stream a client received is linted by a parser that shares no code with mod_sse or this
# harness: when the client is closed or destroyed (or, if still open, when its test ends), the
# bytes of its event stream go to <streams_dir>/<n>.sse and what this parser made of them to the
# .json beside it; when the test ends, t/js/lint-streams.mjs (eventsource-parser) reads them all
# and the test fails (exit status 1, the problems as diagnostics) if any stream has a field a
# client rejects, is not UTF-8, or gives other events than this parser saw. Each test lints its
# own streams, so the result depends neither on which tests ran before nor on prove's -j.
my $stream_seq = 0;
my $test_pid = $$;
my %unsaved;   # open clients, weak references: saved when the test ends

sub streams_dir {
    my $mpm = $ENV{SSE_TEST_MPM} // 'event';
    my $name = $0;
    $name =~ s{.*/}{};
    $name =~ s{\.t$}{};
    return "$SSETest::ROOT/t/run/streams/$mpm-$name-$test_pid";
}

sub track {
    my ($self) = @_;
    $unsaved{"$self"} = $self;
    Scalar::Util::weaken($unsaved{"$self"});
}

Test2::API::test2_add_callback_exit(sub {
    my ($ctx, $real, $new) = @_;
    return if $$ != $test_pid;
    $_->save_stream for grep { defined } values %unsaved;
    my $dir = streams_dir();
    return unless -d $dir;
    my $out = `node $SSETest::ROOT/t/js/lint-streams.mjs $dir 2>&1`;
    if ($? != 0) {
        $ctx->diag("eventsource-parser (t/js/lint-streams.mjs) disagrees with the streams of "
                   . "this test, kept in $dir:\n$out");
        $$new ||= 1;
    } elsif (!$ENV{SSE_TEST_KEEP}) {
        File::Path::remove_tree($dir);
    }
});

sub save_stream {
    my ($self) = @_;
    delete $unsaved{"$self"};
    # Once, by the process that opened the client (not by a forked copy), and only event streams.
    return if $self->{saved}++ || $self->{pid} != $$ || $self->status != 200
              || !length($self->{stream_bytes} // '');
    my $dir = streams_dir();
    File::Path::make_path($dir);
    my $base = "$dir/" . $stream_seq++;
    my $text = sub { Encode::decode('UTF-8', $_[0]) };
    my $json = {retry => $self->{retry},
                events => [map { my $e = $_; +{map { $_ => $text->($e->{$_}) } keys %$e} }
                           @{$self->{events}}]};
    for (["$base.sse", $self->{stream_bytes}],
         ["$base.json", JSON::PP->new->utf8->canonical->encode($json)]) {
        CORE::open(my $fh, '>:raw', $_->[0]) or die "$_->[0]: $!";
        print $fh $_->[1];
        CORE::close($fh);
    }
}

sub DESTROY { $_[0]->save_stream }

1;
