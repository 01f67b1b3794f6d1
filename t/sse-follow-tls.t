# sse-follow over https (issue 17): the server's certificate is checked (the system's CAs by
# default, --cacert FILE, the URL's host against the certificate's names) and a refused one
# fails the stream with why and what to do; --insecure skips the check.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;
use Time::HiRes qw(sleep time);
use POSIX ();

# /down redirects to an http URL: sse-follow refuses to leave https for http.
my $srv = SSETest::Server->start(
    tls => 1,
    global => 'LoadModule alias_module ' . SSETest::apxs_q('LIBEXECDIR') . "/mod_alias.so\n",
    conf => "Redirect 302 /down http://127.0.0.1:9/events/tls\n");
$srv->expect_log(qr/AH01882: Init: this version of mod_ssl was compiled against a newer library/);
my $url = 'https://127.0.0.1:' . $srv->port . '/events/tls';
my $dir = $srv->dir;
my $n = 0;

sub slurp { my ($f) = @_; open my $fh, '<', $f or return ''; local $/; return <$fh> // '' }

# Runs sse-follow to its end; publishes one event once it is subscribed (unless it ends
# first). Returns its exit status, stdout and stderr.
sub run_follow {
    my (@args) = @_;
    my $run = "$dir/follow" . ++$n;
    my $pid = $srv->spawn_follow(['-n', 1, '-t', 30, @args, $url],
                                 out => "$run.out", err => "$run.err");
    my $status;
    my $subscribed = $srv->wait_for(sub {
        if (waitpid($pid, POSIX::WNOHANG()) == $pid) { $status = $?; $pid = 0; return 1 }
        return (SSETest::json_decode($srv->request(GET => '/publish/tls')->{body}) // {})
            ->{subscribers} }, 20);
    $srv->publish('/publish/tls', "event $n") if $subscribed && $pid;
    if ($pid) { waitpid($pid, 0); $status = $? }
    return ($status >> 8, slurp("$run.out"), slurp("$run.err"));
}

my ($rc, $out, $err) = run_follow();
is($rc, 1, "a certificate unknown to the CAs installed here: exit 1");
like($err, qr/: the certificate of 127\.0\.0\.1 was refused: self-signed certificate \(--cacert FILE trusts another CA; --insecure skips the check\)/,
     'it says why and what to do');

($rc, $out, $err) = run_follow('--insecure');
is($rc, 0, '--insecure: exit 0 after the event') or diag $err;
like($out, qr/^id: \S+\ndata: event 2\n\n\z/, '--insecure: the event');

($rc, $out, $err) = run_follow('--cacert', "$dir/cert.pem");
is($rc, 1, '--cacert: a certificate without the IP address among its names: exit 1');
like($err, qr/was refused: IP address mismatch/, 'it says so');

($rc, $out, $err) = run_follow('--cacert', "$dir/missing.pem");
is($rc, 1, 'a --cacert file that does not exist: exit 1');
like($err, qr/cannot load the CA certificates from \Q$dir\E\/missing\.pem/, 'it says so');

# A certificate naming 127.0.0.1 (subjectAltName), taken by a graceful restart.
system("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 "
       . "-addext basicConstraints=critical,CA:FALSE -addext subjectAltName=IP:127.0.0.1 -keyout $dir/key.pem -out $dir/cert.pem "
       . ">/dev/null 2>&1") == 0 or die 'openssl failed';
$srv->graceful;
($rc, $out, $err) = run_follow('--cacert', "$dir/cert.pem");
is($rc, 0, '--cacert with a certificate naming the address: exit 0') or diag $err;
like($out, qr/\ndata: event 5\n\n\z/, 'the event');

{
    my $run = "$dir/follow-down";
    my $pid = $srv->spawn_follow(['-t', 30, '--insecure', 'https://127.0.0.1:' . $srv->port . '/down'],
                                 out => "$run.out", err => "$run.err");
    waitpid($pid, 0);
    is($? >> 8, 1, 'a redirect from https to http: exit 1');
    like(slurp("$run.err"), qr/redirect to http:\/\/127\.0\.0\.1:9\/events\/tls refused: it leaves https for http/,
         'it says so');
}

$srv->stop;
done_testing;
