# `make install` and Debian's a2enmod, without the system's Apache: the module, sse-publish, sse-follow,
# sse.load, sse.conf and sse-mpm.conf are installed into a DESTDIR; Debian's own apache2 package (the .deb,
# downloaded from Debian's archive once and kept in build/debian/) is unpacked into the run
# directory, which gives a pristine /etc/apache2 tree and Debian's a2enmod, a2ensite and
# apache2ctl; the tree is set up as a fresh install of that package sets it up, sse is enabled
# with a2enmod, and Debian's unmodified apache2.conf runs mod_sse: configtest, start (mod_sse
# says that Debian's MPM sizing cannot hold SSEMaxSubscribers streams), a2enconf sse-mpm and a
# graceful restart (now it can), a stream that gets events published over HTTP and with the
# installed sse-publish, a2dismod, stop.
# Nothing outside the run directory is written (a2enmod's state markers included).
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;
use File::Copy qw(copy);
use File::Path qw(make_path remove_tree);
use Time::HiRes qw(time);

my $root = $SSETest::ROOT;
my $mpm = $ENV{SSE_TEST_MPM} // 'event';
my $run = SSETest::run_dir("packaging-$mpm-$$");
make_path("$run/logs", "$run/www", "$run/state");
chmod 0755, $run;
my @took;
my $t0 = time;
sub lap { my ($what) = @_; push @took, sprintf('%s %.1f s', $what, time - $t0); $t0 = time }

sub slurp { my ($f) = @_; open my $fh, '<', $f or return; local $/; return scalar <$fh> }
sub spew { my ($f, $t) = @_; open my $fh, '>', $f or die "$f: $!"; print $fh $t; close $fh }
# Edits a file of the tree in place, every line matching $re (a pattern for one whole line);
# stops the test when there is none (Debian's layout changed): the server must never start with
# a file that still names the system's paths or port.
sub edit {
    my ($f, $re, $to, $what) = @_;
    my $t = slurp($f) // die "$f: $!";
    ok($t =~ s/^$re$/$to/gm, $what) or BAIL_OUT("no line $re in $f");
    spew($f, $t);
}
sub sh { my ($cmd) = @_; my $out = `$cmd 2>&1`; return ($? >> 8, $out) }

# --- Debian's apache2 package, the version of the installed apache2-bin -----------------
my $cache = "$root/build/debian";
make_path($cache);
my $ver = `dpkg-query -W -f='\${Version}' apache2-bin 2>/dev/null`;
BAIL_OUT('apache2-bin is not installed (tools/install-deps installs it)') unless $ver;
(my $file_ver = $ver) =~ s/:/%3a/g;
my ($deb) = glob "$cache/apache2_${file_ver}_*.deb";
if (!$deb) {
    # As root, apt's download sandbox user (_apt) cannot write to the build directory.
    my $sandbox = $> == 0 ? '-o APT::Sandbox::User=root' : '';
    my ($rc, $out) = sh("cd $cache && apt-get download $sandbox apache2=$ver");
    ($deb) = glob "$cache/apache2_${file_ver}_*.deb";
    if (!$deb) {
        fail("apt-get download apache2=$ver (Debian's archive) failed: this test needs "
             . "the apache2 package's /etc/apache2 and a2enmod. Is Debian's archive "
             . "reachable? Are the package lists current (apt-get update)?");
        diag $out;
        done_testing;
        exit;
    }
}
lap('apache2 .deb (download or cache)');
my $deb_root = "$run/debian";
my ($rc, $out) = sh("dpkg-deb -x $deb $deb_root && dpkg-deb -e $deb $run/debian-control");
is($rc, 0, 'apache2 .deb unpacked') or diag $out;
my $tree = "$deb_root/etc/apache2";
my $sbin = "$deb_root/usr/sbin";
ok(-f "$tree/apache2.conf" && -x "$sbin/a2enmod" && -x "$sbin/apache2ctl",
   'the package gives apache2.conf, a2enmod and apache2ctl');

# a2enmod writes to $APACHE_CONFDIR (else /etc/apache2) and keeps markers in
# $APACHE_STATE_DIRECTORY (else /var/lib/apache2): if it ever stops honouring them, stop here
# rather than let it change the system's configuration.
my $a2 = slurp("$sbin/a2enmod") // '';
ok($a2 =~ /\$ENV\{APACHE_CONFDIR\}/ && $a2 =~ /APACHE_STATE_DIRECTORY/,
   'a2enmod honours APACHE_CONFDIR and APACHE_STATE_DIRECTORY')
    or BAIL_OUT('a2enmod would write to /etc/apache2 or /var/lib/apache2');
my $env = "env APACHE_CONFDIR=$tree APACHE_STATE_DIRECTORY=$run/state"
        . " APACHE_HTTPD=" . SSETest::Server::httpd();
sub a2 {
    my ($cmd, @args) = @_;
    return sh("$env $sbin/$cmd @args");
}

# --- make install ----------------------------------------------------------------------
my $dest = "$run/dest";
my $libexec = SSETest::apxs_q('LIBEXECDIR');
my $mods_avail = '/etc/apache2/mods-available';
my $conf_avail = '/etc/apache2/conf-available';
($rc, $out) = sh("make -s -C $root install DESTDIR=$dest");
is($rc, 0, 'make install DESTDIR=...') or diag $out;
lap('make install');
my @installed = sort map { substr($_, length $dest) } split /\n/, `find $dest -type f`;
is_deeply(\@installed, [sort "$libexec/mod_sse.so", '/usr/local/bin/sse-publish',
                        '/usr/local/bin/sse-follow', "$mods_avail/sse.load", "$mods_avail/sse.conf",
                        "$conf_avail/sse-mpm.conf"],
          'it installs the module, sse-publish, sse-follow, sse.load, sse.conf and sse-mpm.conf')
    or diag "@installed";
is(system('cmp', '-s', "$root/build/mod_sse.so", "$dest$libexec/mod_sse.so"), 0,
   '  the module is the one built');
is((stat "$dest$libexec/mod_sse.so")[2] & 07777, 0644, '  mode 0644');
is((stat "$dest/usr/local/bin/sse-publish")[2] & 07777, 0755, '  sse-publish mode 0755');
($rc, my $help) = sh("$dest/usr/local/bin/sse-publish --help");
is($rc, 0, '  the installed sse-publish runs: --help');
like($help, qr/^usage: sse-publish /, '  and prints its usage');
is((stat "$dest/usr/local/bin/sse-follow")[2] & 07777, 0755, '  sse-follow mode 0755');
($rc, my $follow_help) = sh("$dest/usr/local/bin/sse-follow --help");
is($rc, 0, '  the installed sse-follow runs: --help');
like($follow_help, qr/^usage: sse-follow /, '  and prints its usage');
my $load = slurp("$dest$mods_avail/sse.load");
like($load, qr{^LoadModule sse_module \Q$libexec\E/mod_sse\.so$}m,
     "  sse.load loads the module from where it is installed ($libexec)");
is(slurp("$dest$mods_avail/sse.conf"), slurp("$root/conf/sse.conf"), '  sse.conf as shipped');
is(slurp("$dest$conf_avail/sse-mpm.conf"), slurp("$root/conf/sse-mpm.conf"),
   '  sse-mpm.conf as shipped, in conf-available');
unlike(slurp("$dest$mods_avail/sse.conf"), qr/^\s*(?:ThreadsPerChild|AsyncRequestWorkerFactor|MaxRequestWorkers)/mi,
       '  sse.conf leaves the MPM alone');

# An admin's sse.conf survives the next make install; the shipped one goes beside it.
spew("$run/sse.conf.edited", slurp("$dest$mods_avail/sse.conf") . "SSEHistory 10\n");
copy("$run/sse.conf.edited", "$dest$mods_avail/sse.conf") or die;
($rc, $out) = sh("make -s -C $root install DESTDIR=$dest");
is($rc, 0, 'make install again');
is(slurp("$dest$mods_avail/sse.conf"), slurp("$run/sse.conf.edited"), '  keeps an edited sse.conf');
is(slurp("$dest$mods_avail/sse.conf.new"), slurp("$root/conf/sse.conf"),
   '  and puts the shipped one beside it as sse.conf.new');
like($out, qr/keeping .*sse\.conf \(changed\)/, '  and says so');

# --- the tree as a fresh install of the apache2 package leaves it -----------------------
# The package's postinst enables these on a fresh install (a2enmod -m, a2enconf -m, a2ensite);
# they are read from the postinst itself so that this follows Debian's defaults.
my $postinst = slurp("$run/debian-control/postinst") // '';
my ($default_mpm) = $postinst =~ /a2enmod -m -q (mpm_\w+)/;
my ($modules) = $postinst =~ /for module in (.*?)\s*;\s*do/s;
my ($confs) = $postinst =~ /for conf in (.*?)\s*;\s*do/s;
my ($site) = $postinst =~ /a2ensite -q (\S+)/;
ok($default_mpm && $modules && $confs && $site, "postinst's defaults: $default_mpm, modules, "
   . 'conf and site') or BAIL_OUT('cannot read the defaults from the package\'s postinst');
s/\\\s*/ /g for $modules, $confs;
my @failed;
for my $step (['a2enmod', $default_mpm, split ' ', $modules],
              ['a2enconf', split ' ', $confs], ['a2ensite', $site]) {
    my ($cmd, @names) = @$step;
    for (@names) {
        ($rc, $out) = a2($cmd, '-m', '-q', $_);
        push @failed, "$cmd $_: $out" if $rc != 0;
    }
}
ok(!@failed, 'the fresh-install defaults enabled') or diag @failed;
if ($mpm ne $default_mpm =~ s/^mpm_//r) {
    # What an admin does to change the MPM; a2enmod refuses while the other is enabled
    # (mpm_*.load declare "# Conflicts:").
    ($rc, $out) = a2('a2enmod', "mpm_$mpm");
    isnt($rc, 0, "a2enmod mpm_$mpm refuses while $default_mpm is enabled");
    ($rc, $out) = a2('a2dismod', $default_mpm);
    is($rc, 0, "a2dismod $default_mpm") or diag $out;
    ($rc, $out) = a2('a2enmod', "mpm_$mpm");
    is($rc, 0, "a2enmod mpm_$mpm") or diag $out;
}

# What must differ from /etc/apache2 to run here: where the pid, run, lock and log files go, and
# the port. apache2.conf itself is Debian's, unmodified.
my $pristine_run_dir = `env -i sh -c '. $tree/envvars; echo \$APACHE_RUN_DIR'`;
chomp $pristine_run_dir;
my $port = SSETest::free_port();
edit("$tree/envvars", qr/export APACHE_PID_FILE=.*/, "export APACHE_PID_FILE=$run/httpd.pid",
     'envvars: pid file in the run directory');
edit("$tree/envvars", qr/export APACHE_RUN_DIR=.*/, "export APACHE_RUN_DIR=$run/run",
     'envvars: run directory');
edit("$tree/envvars", qr/export APACHE_LOCK_DIR=.*/, "export APACHE_LOCK_DIR=$run/lock",
     'envvars: lock directory');
edit("$tree/envvars", qr/export APACHE_LOG_DIR=.*/, "export APACHE_LOG_DIR=$run/logs",
     'envvars: log directory');
# apache2ctl (as root) sets `ulimit -n 8192` unless APACHE_ULIMIT_MAX_FILES says otherwise: as
# an admin does, the most this machine allows (its hard limit, at most 20,000).
my ($hard_files) = `sh -c 'ulimit -Hn'` =~ /(\S+)/;
my $files = $hard_files eq 'unlimited' || $hard_files > 20000 ? 20000 : $hard_files;
edit("$tree/envvars", qr/#APACHE_ULIMIT_MAX_FILES=.*/,
     "APACHE_ULIMIT_MAX_FILES='ulimit -n $files'", "envvars: APACHE_ULIMIT_MAX_FILES $files");
edit("$tree/ports.conf", qr/Listen 80/, "Listen 127.0.0.1:$port", "ports.conf: Listen $port");
# (the default site's document root would be /var/www/html, which this test does not use)
edit("$tree/sites-available/000-default.conf", qr/<VirtualHost \*:80>/, "<VirtualHost *:$port>",
     '000-default: the port');
edit("$tree/sites-available/000-default.conf", qr{[ \t]*DocumentRoot /var/www/html},
     "\tDocumentRoot $run/www",
     '000-default: document root');

# Before anything starts apache2 (apache2ctl also creates the run and lock directories): every
# path that envvars gives is in the run directory.
my %envvars = map { /^(APACHE_\w+)=(.*)$/ ? ($1 => $2) : () }
              `env -i APACHE_CONFDIR=$tree sh -c '. $tree/envvars; env'`;
my @outside = grep { /_(?:FILE|DIR)$/ && index($envvars{$_}, "$run/") != 0 } sort keys %envvars;
ok(!@outside, 'every APACHE_*_DIR and _FILE of envvars is in the run directory')
    or BAIL_OUT("envvars still names @outside outside $run");

# --- a2enmod sse -----------------------------------------------------------------------
# The installed sse.load names $libexec/mod_sse.so, where a real install puts the module; here
# it is under DESTDIR, so this copy names that instead (the only change to the file).
my $sse_conf = slurp("$dest$mods_avail/sse.conf.new");
$load = slurp("$dest$mods_avail/sse.load");
$load =~ s{\Q$libexec\E/mod_sse\.so}{$dest$libexec/mod_sse.so};
spew("$tree/mods-available/sse.load", $load);
# The publish socket is off as shipped; an admin who wants it removes the '#' of its line.
my ($socket_line) = $sse_conf =~ /^[ \t]*#(SSEPublishSocket \S+.*)$/m;
ok($socket_line, 'sse.conf has the SSEPublishSocket line, commented out');
$sse_conf =~ s/^([ \t]*)#(SSEPublishSocket )/$1$2/m;
# What this machine's open files hold (a child may hold all the streams, 200 files beside them).
my $max_subs = $files - 1000;
ok($sse_conf =~ s/^([ \t]*SSEMaxSubscribers) \d+$/$1 $max_subs/m, "sse.conf: SSEMaxSubscribers $max_subs");
spew("$tree/mods-available/sse.conf", $sse_conf);
# sse-mpm.conf as installed, into the tree's conf-available (enabled later, on purpose).
spew("$tree/conf-available/sse-mpm.conf", slurp("$dest$conf_avail/sse-mpm.conf"));
my ($socket_name) = ($socket_line // '') =~ /^SSEPublishSocket (\S+)/;
like($help, qr{\Q$pristine_run_dir/$socket_name\E}, "sse-publish's default socket is "
     . "$pristine_run_dir/$socket_name: Debian's APACHE_RUN_DIR (DefaultRuntimeDir) and "
     . "sse.conf's name");

my @before = sort glob "$tree/mods-enabled/*";
($rc, $out) = a2('a2enmod', 'sse');
is($rc, 0, 'a2enmod sse') or diag $out;
like($out, qr/Enabling module sse\./, '  says so');
my @after = sort glob "$tree/mods-enabled/*";
my %was = map { $_ => 1 } @before;
is_deeply([grep { !$was{$_} } @after],
          ["$tree/mods-enabled/sse.conf", "$tree/mods-enabled/sse.load"],
          '  links sse.load and sse.conf, and nothing else (sse.load declares no dependency)');
is(readlink("$tree/mods-enabled/sse.load"), '../mods-available/sse.load', '  relative links');
lap('a2enmod and the tree');

# A site with sse.conf's example, as its comment says to use it: inside a <VirtualHost>.
my ($example) =
    $sse_conf =~ /^[ \t]*# Example \(put it in a <VirtualHost>\):\n(.*?)^<\/IfModule>/ms;
ok($example, "sse.conf's example found");
$example =~ s/^[ \t]*#(?: |$)//mg;
like($example, qr/SetHandler sse-subscribe/, '  it has a subscribe location');
spew("$tree/sites-available/sse-example.conf", <<"EOF");
<VirtualHost *:$port>
ServerName sse.test
DocumentRoot $run/www
$example
</VirtualHost>
EOF
($rc, $out) = a2('a2ensite', 'sse-example');
is($rc, 0, 'a2ensite sse-example') or diag $out;

# --- configtest, start --------------------------------------------------------------------
($rc, $out) = a2('apache2ctl', 'configtest');
is($rc, 0, 'apache2ctl configtest') or diag $out;
like($out, qr/Syntax OK/, '  Syntax OK');
# `apache2ctl start` would run `systemctl start apache2` (the system's service) on a host whose
# init is systemd; `apache2ctl -k start` runs apache2 -d <tree> -k start itself.
sub start_apache2 {
    my ($rc, $out) = a2('apache2ctl', '-k', 'start');
    is($rc, 0, 'apache2ctl -k start') or diag $out;
    # No CoreDumpDirectory in Debian's apache2.conf: cores go to ServerRoot, the tree.
    my $srv = SSETest::Server->attach(dir => $run, port => $port, marker => $tree, mpm => $mpm,
                                      cores => $tree);
    $srv->wait_for(sub { -s "$run/httpd.pid" && $srv->accepts }, 15)
        or BAIL_OUT("apache2 did not come up:\n$out\n" . $srv->log_text);
    $srv->{pid} = $srv->read_pid;
    return $srv;
}
my $srv = start_apache2();
lap('configtest and start');
is($srv->status_field('ServerMPM'), $mpm, "running with mpm_$mpm (Debian's mod_status)");
# Debian's MPM sizing does not hold SSEMaxSubscribers streams: mod_sse says so once, with the
# lines to add.
my @sse0210 = grep { /SSE0210/ } split /\n/, $srv->log_text;
$srv->expect_log(qr/SSE0210: /);
is(scalar @sse0210, 1, 'SSE0210 once at start-up') or diag $srv->log_text;
if ($mpm eq 'event') {
    # mpm_event.conf: 6 children (MaxRequestWorkers 150) of 25 threads, factor 2: 450.
    my $factor = int(($max_subs + 149) / 150) - 1;
    like($sse0210[0] // '', qr/SSE0210: the event MPM holds about 450 streams \(6 children x ThreadsPerChild 25 x \(1 \+ AsyncRequestWorkerFactor 2\)\), fewer than SSEMaxSubscribers $max_subs: add \x60AsyncRequestWorkerFactor $factor\x60 to the server configuration \(or enable conf\/sse-mpm.conf: a2enconf sse-mpm\)$/,
         "  Debian's mpm_event.conf holds 450: it names AsyncRequestWorkerFactor $factor and sse-mpm");

    # The admin enables the snippet: its sizing replaces mpm_event.conf's (read before it).
    ($rc, $out) = a2('a2enconf', 'sse-mpm');
    is($rc, 0, 'a2enconf sse-mpm') or diag $out;
    ok(-l "$tree/conf-enabled/sse-mpm.conf", '  links conf-enabled/sse-mpm.conf');
    ($rc, $out) = a2('apache2ctl', 'configtest');
    is($rc, 0, '  configtest') or diag $out;
    # A stop and a start: httpd changes ServerLimit only then (AH00501 at a restart).
    { local $ENV{SSE_TEST_KEEP} = 1; $srv->stop } # checks the log; keeps the run directory
    $srv = start_apache2();
    $srv->expect_log(qr/SSE0210: /); # the first start's line
    @sse0210 = grep { /SSE0210/ } split /\n/, $srv->log_text;
    is(scalar @sse0210, 1, '  after a stop and a start: no new SSE0210 (it holds them)')
        or diag "@sse0210";
    # 2 children (StartServers 2) of 64 threads.
    # Busy + idle from one snapshot of the scoreboard (two requests saw a worker move from
    # idle to busy in between and counted 127); a thread still starting counts in neither, so
    # a busy machine may take a while: wait for the count, bounded.
    my $workers = sub {
        my $page = $srv->request(GET => '/server-status?auto')->{body};
        my ($busy, $idle) = ($page =~ /^BusyWorkers: (\d+)$/m, $page =~ /^IdleWorkers: (\d+)$/m);
        return defined $busy && defined $idle ? $busy + $idle : -1;
    };
    my $seen;
    $srv->wait_for(sub { ($seen = $workers->()) == 128 }, 60);
    is($seen, 128, "sse-mpm.conf's ThreadsPerChild 64 replaces mpm_event.conf's 25: 2 x 64 workers");
} else {
    # mpm_prefork.conf: MaxRequestWorkers 150, a stream a process.
    like($sse0210[0] // '', qr/SSE0210: the prefork MPM holds each stream on a worker of its own: MaxRequestWorkers 150 holds 150 streams .*fewer than SSEMaxSubscribers $max_subs: add \x60SSEMaxSubscribers 150\x60 /,
         "  Debian's mpm_prefork.conf holds 150: it names SSEMaxSubscribers 150");
}

my %host = (headers => {Host => 'sse.test'});
my $sub = $srv->subscribe('/events/news', %host);
is($sub->status, 200, "the example's subscribe location streams");
like($sub->headers->{'content-type'} // '', qr{^text/event-stream}, '  text/event-stream');
my $res = $srv->publish('/publish/news', 'over http', %host);
is($res->{status}, 201, "published over HTTP to the example's publish location");
my @ev = $sub->events(1, 5);
is_deeply([map { [$_->{data}, $_->{id}] } @ev], [['over http', $res->{json}{id}]],
          '  the stream gets it');
ok(-S "$run/run/$socket_name", "the publish socket is in APACHE_RUN_DIR");
($rc, $out) = sh("SSE_PUBLISH_SOCKET=$run/run/$socket_name $dest/usr/local/bin/sse-publish "
                 . "-e note news 'over the socket'");
is($rc, 0, 'the installed sse-publish publishes (SSE_PUBLISH_SOCKET)') or diag $out;
chomp $out;
@ev = $sub->events(1, 5);
is_deeply([map { [$_->{event}, $_->{data}, $_->{id}] } @ev], [['note', 'over the socket', $out]],
          '  the stream gets it, with the id sse-publish printed');
($rc, $out) = sh("$dest/usr/local/bin/sse-follow -j -n 1 -t 30 -H 'Host: sse.test' "
                 . "-L $res->{json}{id} http://127.0.0.1:" . $srv->port . "/events/news");
is($rc, 0, 'the installed sse-follow follows the stream, resuming after an id') or diag $out;
is_deeply([map { SSETest::json_decode($_)->{data} } split /\n/, $out], ['over the socket'],
          '  and prints the event after it');
$sub->close;
lap('streams');

# --- a2dismod sse ----------------------------------------------------------------------------
($rc, $out) = a2('a2dismod', 'sse');
is($rc, 0, 'a2dismod sse') or diag $out;
ok(!-e "$tree/mods-enabled/sse.load" && !-l "$tree/mods-enabled/sse.load"
   && !-l "$tree/mods-enabled/sse.conf", '  removes both links');
is_deeply([sort glob "$tree/mods-enabled/*"], \@before, '  and only those');
# A site that still uses mod_sse's directives then fails the configtest, as with any module.
($rc, $out) = a2('apache2ctl', 'configtest');
isnt($rc, 0, 'configtest without the module fails while a site uses its directives');
like($out, qr/Invalid command 'SSEKeepalive'/, '  naming the directive');
($rc, $out) = a2('a2dissite', 'sse-example');
($rc, $out) = a2('apache2ctl', 'configtest');
is($rc, 0, 'after a2dissite sse-example: Syntax OK') or diag $out;

$srv->stop;
lap('a2dismod and stop');
diag 'took: ' . join ', ', @took;
done_testing;
