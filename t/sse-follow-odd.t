# sse-follow against a deliberately odd server written here (issue 17): a Perl server on
# 127.0.0.1 (a free port) answers each connection from a script, writing the stream in small
# pieces with pauses: a BOM split across writes (and again on the next connection), comments,
# CRLF and lone CR line ends, a CRLF and a UTF-8 character split between writes, `retry` with
# garbage, a chunked body whose chunks split lines, a silence that the keep-alive timeout (-k)
# ends, then 204. Also: a wrong Content-Type and a 500 fail at once (no reconnect), a redirect
# is followed and the reconnect starts again from the URL given.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(sleep time);
use POSIX ':sys_wait_h';
use File::Path ();

my $dir = SSETest::run_dir("sse-follow-odd-$$");
my $n = 0;

sub slurp { my ($f) = @_; open my $fh, '<', $f or return ''; local $/; return <$fh> // '' }

# A server on 127.0.0.1 answering its connections in turn from @script: each answer is a list
# of steps, a string (written as is, "{port}" replaced by the port), {pause => seconds} or {hold => 1} (keep the connection
# open, silent, and go on to the next one); the connection is closed after its last step
# unless held. Each request head goes to $requests, after "=== <time>\n". Returns the server's
# pid, its port and the file of the requests.
sub odd_server {
    my (@script) = @_;
    my $requests = "$dir/requests" . ++$n;
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 5,
                                  ReuseAddr => 1) or die "listen: $!";
    my $port = $l->sockport;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        my @held;
        $SIG{ALRM} = sub { POSIX::_exit(0) };
        alarm 60;
        for my $answer (@script) {
            my $c = $l->accept or last;
            my $head = '';
            while ($head !~ /\r\n\r\n/) { sysread($c, $head, 4096, length $head) or last }
            open my $log, '>>', $requests or die;
            printf $log "=== %.3f\n%s", time, $head;
            close $log;
            my $hold = 0;
            for my $step (@$answer) {
                if (!ref $step)        { syswrite $c, $step =~ s/\{port\}/$port/gr; sleep 0.05 }
                elsif ($step->{pause}) { sleep $step->{pause} }
                elsif ($step->{hold})  { $hold = 1 }
            }
            $hold ? push @held, $c : close $c;
        }
        sleep 1 while @held; # until killed
        POSIX::_exit(0);
    }
    close $l;
    return ($pid, $port, $requests);
}

sub stop_server { my ($pid) = @_; kill 'TERM', $pid; waitpid $pid, 0 }

# Runs sse-follow to its end (at most 60 s): its exit status, stdout, stderr.
sub run_follow {
    my (@args) = @_;
    my $run = "$dir/follow" . ++$n;
    my $pid = SSETest::spawn(SSETest::tool_command($dir, 'sse-follow', \@args, prefix => 'timeout 60'),
                             "$run.out", "$run.err");
    waitpid $pid, 0;
    return ($? >> 8, slurp("$run.out"), slurp("$run.err"));
}

sub requests {
    my ($file) = @_;
    my @r;
    for my $rec (split /^=== /m, slurp($file)) {
        next unless $rec =~ /^([\d.]+)\n(.*)/s;
        my ($t, $head) = ($1, $2);
        my %h = map { /^([^:]+):\s*(.*?)\r?$/ ? (lc $1 => $2) : () } split /\n/, $head;
        my ($path) = $head =~ /^GET (\S+) HTTP\/1\.1\r\n/;
        push @r, {time => $t, path => $path // '?', headers => \%h};
    }
    return @r;
}

my $stream_head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
                . "Connection: close\r\n\r\n";
sub chunk { my ($s) = @_; return (sprintf("%x\r\n", length $s), $s, "\r\n") }

subtest 'odd line ends, BOM, comments, retry garbage, split writes, chunks, keep-alive' => sub {
    my ($pid, $port, $requests) = odd_server(
        [$stream_head,
         "\xEF\xBB", "\xBF: a comment\r\n",             # a BOM split across writes
         "retry: 1500\r\n", "retry: 1x\r\n", "retry: -3\r", "retry\n", "retry: 2 0\n\n",
         "id: 1\r\ndata: crlf\r\n\r\n",
         "id: 2\rdata: lone\rdata: cr\r\r",
         "da", "ta: spl", "it \xE2\x82", "\xAC\r", "\n\r", "\n", # CRLF and UTF-8 split
         ":\n", "event: t\nda", "ta: typed\n\n",
         "data: never dispatched"],                       # the end of the stream drops it
        ["HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
         chunk("\xEF\xBB\xBFid: 3\r"), chunk("\ndata: chunk"), chunk("ed\r\n\r\n"),
         {hold => 1}],                                    # then silence
        ["HTTP/1.1 204 No Content\r\n\r\n"],
    );
    my ($rc, $out, $err) = run_follow('-j', '-k', 1, '-t', 50, "http://127.0.0.1:$port/odd");
    stop_server($pid);
    is($rc, 0, 'exit 0 at the 204') or diag $err;
    my @ev = map { SSETest::json_decode($_) } split /\n/, $out;
    is_deeply(\@ev, [
        {id => '1', event => 'message', data => 'crlf'},
        {id => '2', event => 'message', data => "lone\ncr"},
        {id => '2', event => 'message', data => "split \x{20AC}"},
        {id => '2', event => 't', data => 'typed'},
        {id => '3', event => 'message', data => 'chunked'},
    ], 'the events, as the WHATWG rules read them') or diag $out;
    my @r = requests($requests);
    is(scalar @r, 3, 'three connections');
    is($r[0]{headers}{accept}, 'text/event-stream', 'Accept: text/event-stream');
    ok(!exists $r[0]{headers}{'last-event-id'}, 'no Last-Event-ID the first time');
    is($r[1]{headers}{'last-event-id'}, '2', 'then Last-Event-ID: 2');
    is($r[2]{headers}{'last-event-id'}, '3', 'and after the chunked stream, 3');
    cmp_ok($r[1]{time} - $r[0]{time}, '>=', 1.4,
           'it waited the retry: 1500 (the garbage retry lines were ignored)');
    like($err, qr/nothing received for 1\S* s \(-k\): connecting again/,
         'the silent connection was dropped by the keep-alive timeout');
};

subtest 'a wrong Content-Type or a 500 fails at once, without reconnecting' => sub {
    for my $case (["HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
                   qr/: the answer is not an event stream \(Content-Type: text\/plain\)/],
                  ["HTTP/1.1 500 Internal Server Error\r\nContent-Length: 9\r\n\r\nbroken \n\n",
                   qr/: HTTP 500 Internal Server Error: broken$/m]) {
        my ($answer, $msg) = @$case;
        my ($pid, $port, $requests) = odd_server([$answer], [$answer]);
        my ($rc, $out, $err) = run_follow('-r', 100, '-t', 30, "http://127.0.0.1:$port/");
        stop_server($pid);
        is($rc, 1, 'exit 1');
        like($err, $msg, 'says why');
        is($out, '', 'no event');
        is(scalar(() = requests($requests)), 1, 'one request only');
    }
};

subtest 'a redirect is followed; the reconnect starts from the URL given' => sub {
    my ($pid, $port, $requests) = odd_server(
        ["HTTP/1.1 302 Found\r\nLocation: /next?x=1\r\nContent-Length: 0\r\n\r\n"],
        [$stream_head, "retry: 100\ndata: moved\n\n"],
        ["HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{port}/gone\r\n\r\n"],
        ["HTTP/1.1 204 No Content\r\n\r\n"],
    );
    my ($rc, $out, $err) = run_follow('-t', 30, "http://127.0.0.1:$port/start");
    stop_server($pid);
    is($rc, 0, 'exit 0 at the 204') or diag $err;
    is($out, "data: moved\n\n", 'the event of the redirected stream');
    is_deeply([map { $_->{path} } requests($requests)], ['/start', '/next?x=1', '/start', '/gone'],
              'the paths requested');
};

subtest 'a redirect to another origin does not get the -H headers' => sub {
    my ($pid_b, $port_b, $requests_b) = odd_server(["HTTP/1.1 204 No Content\r\n\r\n"]);
    my ($pid, $port, $requests) = odd_server(
        ["HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:$port_b/other\r\n\r\n"]);
    my ($rc, $out, $err) = run_follow('-t', 30, '-H', 'Authorization: Bearer secret',
                                      "http://127.0.0.1:$port/start");
    stop_server($_) for $pid, $pid_b;
    is($rc, 0, 'exit 0 at the 204 of the other origin') or diag $err;
    my ($first) = requests($requests);
    my ($other) = requests($requests_b);
    is($first->{headers}{authorization}, 'Bearer secret', 'the URL given gets the header');
    is($other->{path}, '/other', 'the redirect is followed to the other port');
    ok(!exists $other->{headers}{authorization}, 'which does not get it');
    is($other->{headers}{accept}, 'text/event-stream', 'but gets the tool\'s own');
};

subtest 'the connection refused: it keeps trying until -t' => sub {
    my $port = SSETest::free_port();
    my ($rc, $out, $err) = run_follow('-r', 200, '-t', 2, "http://127.0.0.1:$port/");
    is($rc, 0, 'exit 0 at the end of -t');
    like($err, qr/cannot connect to 127\.0\.0\.1 port $port: Connection refused/, 'says why');
    cmp_ok(scalar(() = $err =~ /Connection refused/g), '>=', 2, 'and tried again');
};

ok(!SSETest::sanitizer_reports("$dir/sanitizer"), 'no sanitizer report');
File::Path::remove_tree($dir) if Test::More->builder->is_passing && !$ENV{SSE_TEST_KEEP};
done_testing;
