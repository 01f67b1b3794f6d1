package SSEBrowser;
# Drives Debian's Chromium from a test, through the node driver t/js/browser.mjs (playwright-core,
# headless, a fresh profile):
#
#   SSEBrowser::available() or plan skip_all => SSEBrowser::why_not();
#   my $b = SSEBrowser->start(log => "$dir/browser.log");
#   $b->goto("http://127.0.0.1:$port/page.html");
#   my $v = $b->eval('window.received.length');
#   $b->wait('window.received.length >= 3', 10);      # dies when not true in time
#   $b->screenshot("$dir/page.png");
#   $b->stop;
#
# Every call is bounded in time; the driver is stopped by its pid.
use strict;
use warnings;
use IO::Select;
use IPC::Open3 qw(open3);
use JSON::PP;
use POSIX qw(:sys_wait_h);
use Symbol qw(gensym);
use Time::HiRes qw(time sleep);

my $ROOT = $SSETest::ROOT // do {
    require Cwd; require File::Basename;
    Cwd::abs_path(File::Basename::dirname(__FILE__) . '/../..');
};
my $DRIVER = "$ROOT/t/js/browser.mjs";

sub chromium { $ENV{SSE_TEST_CHROMIUM} // '/usr/bin/chromium' }

sub why_not {
    return 'no chromium at ' . chromium() unless -x chromium();
    return 'no node' unless grep { -x "$_/node" } split /:/, $ENV{PATH} // '';
    return 'no playwright-core in t/js/node_modules (tools/install-deps runs npm ci)'
        unless -d "$ROOT/t/js/node_modules/playwright-core";
    return '';
}

sub available { why_not() eq '' }

# For a test file's start: carries on when the browser can run; else skips the file, or,
# under `make test` (SSE_TEST_REQUIRE_BROWSER=1, where tools/install-deps installed it all),
# fails it, so a missing Chromium cannot pass for a green run.
sub require_or_skip {
    my $why = why_not();
    return if $why eq '';
    if ($ENV{SSE_TEST_REQUIRE_BROWSER}) {
        Test::More::plan(tests => 1);
        Test::More::fail("browser test cannot run: $why");
        exit 1;
    }
    Test::More::plan(skip_all => "browser test: $why");
}

sub start {
    my ($class, %o) = @_;
    my $log = $o{log} // '/dev/null';
    open my $err, '>>', $log or die "$log: $!";
    my ($in, $out);
    my $pid = open3($in, $out, '>&' . fileno($err), 'node', $DRIVER);
    close $err;
    $in->autoflush(1);
    my $self = bless {pid => $pid, in => $in, out => $out, buf => '', seq => 0,
                      log => $log}, $class;
    my $ready = $self->read_line($o{timeout} // 90)
        or do { $self->terminate; $self->{stopped} = 1; die "chromium did not start (see $log)\n" };
    my $msg = JSON::PP->new->utf8->decode($ready);
    die "chromium did not start: $ready\n" unless $msg->{ready};
    $self->{version} = $msg->{version};
    return $self;
}

sub version { $_[0]{version} }
sub pid { $_[0]{pid} }

sub read_line {
    my ($self, $seconds) = @_;
    my $end = time + $seconds;
    my $sel = IO::Select->new($self->{out});
    while ($self->{buf} !~ /\n/) {
        my $left = $end - time;
        return undef if $left <= 0;
        next unless $sel->can_read($left);
        my $n = sysread($self->{out}, my $chunk, 65536);
        return undef unless $n;
        $self->{buf} .= $chunk;
    }
    $self->{buf} =~ s/^([^\n]*)\n//;
    return $1;
}

# One request to the driver; returns its value, dies with the driver's error or on time-out.
sub call {
    my ($self, $cmd, %args) = @_;
    my $id = ++$self->{seq};
    my $wait = delete $args{reply_within} // 60;
    # A driver that died must fail the call, not kill the test with SIGPIPE (which would skip
    # the harness's clean-up and leave its httpd running).
    local $SIG{PIPE} = 'IGNORE';
    print {$self->{in}} JSON::PP->new->utf8->canonical->encode({id => $id, cmd => $cmd, %args}), "\n";
    my $line = $self->read_line($wait);
    die "browser: no answer to $cmd within ${wait}s\n" unless defined $line;
    my $msg = JSON::PP->new->utf8->allow_nonref->decode($line);
    die "browser: answer $msg->{id} to request $id\n" unless ($msg->{id} // -1) == $id;
    die "browser: $cmd failed: $msg->{error}\n" unless $msg->{ok};
    return $msg->{value};
}

sub goto { my ($self, $url) = @_; $self->call(goto => url => $url) }
sub eval { my ($self, $expr) = @_; $self->call(eval => expr => $expr) }
sub console { $_[0]->call('console') }
sub add_cookies { my ($self, @c) = @_; $self->call(add_cookies => cookies => \@c) }

# Waits until the page expression is truthy; returns its value. Dies after $seconds.
sub wait {
    my ($self, $expr, $seconds) = @_;
    $seconds //= 10;
    return $self->call(wait => expr => $expr, timeout => int($seconds * 1000),
                       reply_within => $seconds + 30);
}

# Like wait, but returns undef instead of dying when the time is up.
sub try_wait {
    my ($self, $expr, $seconds) = @_;
    my $v = eval { $self->wait($expr, $seconds) };
    return $@ ? undef : $v;
}

sub screenshot {
    my ($self, $path, %o) = @_;
    return $self->call(screenshot => path => $path, fullPage => $o{full_page} ? JSON::PP::true : JSON::PP::false);
}

sub stop {
    my ($self) = @_;
    return if $self->{stopped}++;
    eval { $self->call('close', reply_within => 20) };
    close $self->{in};
    my $end = time + 20;
    while (time < $end) {
        return 1 if waitpid($self->{pid}, WNOHANG) == $self->{pid};
        sleep 0.1;
    }
    $self->terminate;
    return 0;
}

sub terminate {
    my ($self) = @_;
    kill 'KILL', $self->{pid};
    waitpid($self->{pid}, 0);
}

sub DESTROY {
    my ($self) = @_;
    local ($@, $?);
    $self->stop unless $self->{stopped};
}

1;
