# Hostile requests against a real httpd: each gets a clear status (JSON body, tagged log line),
# the children's memory stays bounded, and a subscriber connected throughout receives every
# event that was accepted. Slow and half-open clients are in t/hostile-slow.t.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use IO::Select;
use IO::Socket::INET;
use Test::More;
use Time::HiRes qw(time sleep);

$SIG{PIPE} = 'IGNORE'; # the server may close a connection whose body it refused

my $srv = SSETest::Server->start(conf => <<'EOF');
<Location /small-pending>
    SetHandler sse-subscribe
    SSEMaxPending 16K
</Location>
<Location /events/private>
    Require all denied
</Location>
# mod_sse's locations are not mapped to files: this does not apply to them.
<Directory "${dir}/htdocs">
    Require all denied
</Directory>
EOF
$srv->expect_log(qr/SSE01(?:00|04|10|11): (?:subscribe|publish) refused \((?:400|413)\)/);
$srv->expect_log(qr/AH01630: client denied by server configuration/);

my $rss_before = $srv->children_rss;
my $witness = $srv->subscribe('/events/news');
is($witness->status, 200, 'a subscriber stays connected throughout');
my @published;

sub publish_news {
    my ($data, $what) = @_;
    my $res = $srv->publish('/publish/news', $data, headers => {'Content-Type' => 'text/plain'});
    is($res->{status}, 201, "$what: published") or diag($res->{raw});
    push @published, $data;
}

sub refused {
    my ($res, $status, $pattern, $what) = @_;
    is($res->{status}, $status, "$what: $status");
    is($res->{headers}{'content-type'}, 'application/json', "$what: JSON body");
    my $json = SSETest::json_decode($res->{body}) // {};
    like($json->{error} // '', $pattern, "$what: the body says what was wrong");
}

# A raw exchange: sends `head`, then `body_bytes` of body (raw or in 64K chunks), stopping as
# soon as the server answers. Returns (response, body bytes written).
sub send_until_answered {
    my ($head, $body_bytes, %o) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $srv->port, Timeout => 10)
        or die "connect: $!";
    $s->blocking(0);
    my $out = $head;
    my ($written, $raw) = (0, '');
    my $sel = IO::Select->new($s);
    my $end = time + 60;
    while (time < $end) {
        if ($out eq '' && $written < $body_bytes) {
            my $n = $body_bytes - $written < 65536 ? $body_bytes - $written : 65536;
            $out = $o{chunked} ? sprintf("%x\r\n%s\r\n", $n, 'x' x $n) : 'x' x $n;
            $written += $n;
            $out .= "0\r\n\r\n" if $o{chunked} && $written == $body_bytes;
        }
        my ($r, $w) = IO::Select->select($sel, $out ne '' ? $sel : undef, undef, 1);
        if ($r && @$r) {
            my $n = sysread($s, my $buf, 65536);
            last unless $n;
            $raw .= $buf;
            last if $raw =~ /\r\n\r\n/ && $raw !~ m{^HTTP/1\.1 100 }; # a final answer's head
        } elsif ($w && @$w) {
            my $n = syswrite($s, $out);
            last unless defined $n || $!{EAGAIN};
            substr($out, 0, $n // 0, '');
        }
    }
    # The rest of the answer (its body), bounded.
    $s->blocking(1);
    my $rsel = IO::Select->new($s);
    my $rend = time + 10;
    while (time < $rend && $rsel->can_read($rend - time)) {
        my $n = sysread($s, my $buf, 65536);
        last unless $n;
        $raw .= $buf;
    }
    return (SSETest::parse_response($raw), $written - length $out);
}

subtest '1,000 channels in one subscribe' => sub {
    # Short names keep the request line under LimitRequestLine (8190): this is mod_sse's limit,
    # not core's. The path is one segment of ~4.9 KB, longer than a file name may be: core's
    # translation to a file refused it with an HTML 403 (AH00127) before mod_sse saw it.
    my $path = '/events/' . join(',', map { "c$_" } 1 .. 1000);
    my $res = $srv->request(GET => $path, headers => {Accept => 'text/event-stream'});
    refused($res, 400, qr/more than 64/, '1,000 channels');
    like($srv->log_text, qr/SSE0100: subscribe refused \(400\)/, 'tagged log line');
    unlike($srv->log_text, qr/AH00127/, 'not mapped to a file');
    # The same limit on publish.
    (my $pub = $path) =~ s{^/events}{/publish};
    refused($srv->publish($pub, 'x'), 400, qr/more than 64/, 'publish to 1,000 channels');
};

subtest '<Location> rules apply to mod_sse locations, <Directory> rules do not' => sub {
    is($witness->status, 200, 'a subscribe under a denying <Directory> is served');
    my $res = $srv->request(GET => '/events/private', headers => {Accept => 'text/event-stream'});
    is($res->{status}, 403, 'a denying <Location> is obeyed');
    is($srv->request(GET => '/index.html')->{status}, 403, 'the <Directory> denies files');
};

subtest 'a URI rewritten out of a mod_sse location ([PT]) keeps its file mapping' => sub {
    # mod_sse decides "no file system" from the location sections of the URI httpd walked; a
    # server-level RewriteRule with [PT] sends the request elsewhere before that decision.
    my $mods = SSETest::apxs_q('LIBEXECDIR');
    my $other = SSETest::Server->start(conf => <<"EOF");
LoadModule rewrite_module $mods/mod_rewrite.so
RewriteEngine On
RewriteRule ^/events/legacy/(.*)\$ /static/\$1 [PT]
EOF
    my $dir = $other->dir . '/htdocs/static';
    mkdir $dir or die "$dir: $!";
    open my $fh, '>', "$dir/page.txt" or die;
    print $fh "a file\n";
    close $fh;
    chmod 0755, $dir;
    chmod 0644, "$dir/page.txt";
    my $direct = $other->request(GET => '/static/page.txt');
    is($direct->{status}, 200, 'the file is served at its own path');
    my $res = $other->request(GET => '/events/legacy/page.txt');
    is($res->{status}, 200, 'and through the rewrite out of /events');
    is($res->{body}, "a file\n", 'with its content');
    $other->stop;
};

subtest 'NUL and invalid UTF-8 in channel names and ids' => sub {
    for my $path ('/events/a%00b', '/events/a%ffb', '/events/news,a%c0%afb',
                  '/events?channel=a%00b', '/events?channel=a%ffb') {
        my $res = $srv->request(GET => $path, headers => {Accept => 'text/event-stream'});
        refused($res, 400, qr/channel name/, "subscribe $path");
    }
    for my $path ('/publish/a%00b', '/publish/a%ffb', '/publish?channel=a%00b') {
        refused($srv->publish($path, 'x'), 400, qr/channel name/, "publish $path");
    }
    for my $q ('lastEventId=a%00b', 'lastEventId=a%ffb', 'last_event_id=%0d') {
        my $res = $srv->request(GET => "/events/news?$q",
                                headers => {Accept => 'text/event-stream'});
        refused($res, 400, qr/Last-Event-ID/, "resume from $q");
    }
    for my $q ('id=a%00b', 'id=a%ffb', 'event=a%00b') {
        refused($srv->publish("/publish/news?$q", 'x'), 400, qr/event (?:id|type)/, "publish $q");
    }
    refused($srv->publish('/publish/news', qq({"data":"x","id":"a\\u0000b"}),
                          headers => {'Content-Type' => 'application/json'}),
            400, qr/event id/, 'publish a JSON id with NUL');
    refused($srv->publish('/publish/news', "\xff\xfe", headers => {'Content-Type' => 'text/plain'}),
            400, qr/UTF-8/, 'publish data that is not UTF-8');
    like($srv->log_text, qr/SSE0104: subscribe refused \(400\)/, 'resume refusals are tagged');
};

subtest 'Range on a stream is ignored' => sub {
    # RFC 9110 14.2: a server MAY ignore Range; a stream has no length to take a range of.
    my $sub = $srv->subscribe('/events/news', headers => {Range => 'bytes=0-10',
                                                           'If-Range' => 'x'});
    is($sub->status, 200, '200, the whole stream');
    ok(!exists $sub->headers->{'content-range'}, 'no Content-Range');
    is($sub->headers->{'accept-ranges'}, 'none', 'Accept-Ranges: none');
    publish_news('after a Range request', 'Range');
    my ($ev) = $sub->events(1, 10);
    is($ev && $ev->{data}, 'after a Range request', 'events flow on it');
    $sub->close;
};

subtest 'chunked and Expect: 100-continue publishes' => sub {
    my $data = join('', map { "line $_\n" } 1 .. 3000); # ~30 KB in several chunks
    my $head = "POST /publish/news HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
             . "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    my $body = join('', map { sprintf("%x\r\n%s\r\n", length $_, $_) } unpack('(a4000)*', $data))
             . "0\r\n\r\n";
    my $res = $srv->request(POST => '/publish/news', body => $body,
                            headers => {'Transfer-Encoding' => 'chunked',
                                        'Content-Type' => 'text/plain'});
    is($res->{status}, 201, 'chunked publish accepted') or diag($res->{raw});
    push @published, $data if $res->{status} == 201;

    # Chunked over SSEMaxMessageSize (256K): 413 once the limit is passed, not at the end.
    my ($big, $sent) = send_until_answered($head, 64 << 20, chunked => 1);
    refused($big, 413, qr/SSEMaxMessageSize/, 'chunked body over the limit');
    cmp_ok($sent, '<', 64 << 20, "answered before the whole body was sent ($sent bytes sent)");

    # Expect: 100-continue: the body goes after the interim answer.
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $srv->port, Timeout => 10)
        or die "connect: $!";
    syswrite($s, "POST /publish/news HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                 . "Content-Length: 9\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n");
    my $interim = '';
    my $sel = IO::Select->new($s);
    my $end = time + 10;
    while ($interim !~ /\r\n\r\n/ && time < $end && $sel->can_read($end - time)) {
        sysread($s, $interim, 4096, length $interim) or last;
    }
    like($interim, qr{^HTTP/1\.1 100 Continue\r\n}, '100 Continue before the body');
    syswrite($s, 'continued');
    my $final = '';
    $end = time + 10;
    while (time < $end && $sel->can_read($end - time)) {
        sysread($s, $final, 65536, length $final) or last;
    }
    my $r = SSETest::parse_response($final);
    is($r->{status}, 201, 'Expect: 100-continue publish accepted') or diag($final);
    push @published, 'continued' if $r->{status} == 201;

    # A body announced over the limit with Expect is refused before it is sent.
    my ($no, $nsent) = send_until_answered(
        "POST /publish/news HTTP/1.1\r\nHost: x\r\nContent-Length: 67108864\r\n"
        . "Expect: 100-continue\r\nConnection: close\r\n\r\n", 0);
    refused($no, 413, qr/SSEMaxMessageSize/, 'Expect with 64 MB announced');
    unlike($no->{raw}, qr{HTTP/1\.1 100}, 'no 100 Continue for a body that is refused');
};

subtest '64 MB publish against the 256K limit' => sub {
    my ($res, $sent) = send_until_answered(
        "POST /publish/news HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
        . "Content-Length: 67108864\r\nConnection: close\r\n\r\n", 64 << 20);
    refused($res, 413, qr/SSEMaxMessageSize/, '64 MB body');
    cmp_ok($sent, '<', 64 << 20, "answered before the whole body was sent ($sent bytes sent)");
    publish_news('after the 64 MB body', 'a publish after it');
};

subtest 'an event whose encoding is larger than SSEMaxPending' => sub {
    # 20,000 bare CRs are 20,000 lines: each becomes "data: \n" on the wire (140 KB), over
    # this location's 16K SSEMaxPending. One event larger than the limit goes through; before,
    # every suspended stream that received it was closed as fell-behind.
    my @subs = map { $srv->subscribe('/small-pending/big') } 1 .. 5;
    is((grep { $_->status == 200 } @subs), 5, 'five subscribers');
    my $crs = "\r" x 20000;
    for my $data ($crs, 'small one after') {
        my $res = $srv->publish('/publish/big', $data, headers => {'Content-Type' => 'text/plain'});
        is($res->{status}, 201, 'published') or diag($res->{raw});
    }
    for my $i (0 .. $#subs) {
        my @ev = $subs[$i]->events(2, 30);
        is(scalar @ev, 2, "subscriber $i received both events");
        is($ev[0] && $ev[0]{data}, "\n" x 20000, "subscriber $i: the large one, whole");
        is($ev[1] && $ev[1]{data}, 'small one after', "subscriber $i: the next one");
        ok(!$subs[$i]->closed, "subscriber $i kept its stream");
        $subs[$i]->close;
    }
};

publish_news('last', 'a last event');
my @got = $witness->events(scalar @published, 30);
is_deeply([map { $_->{data} } @got], \@published,
          'the subscriber connected throughout received every accepted event, in order');
ok(!$witness->closed, 'and is still connected');
$witness->close;

my $rss_after = $srv->children_rss;
diag("children's private memory (RssAnon): $rss_before kB before, $rss_after kB after");
cmp_ok($rss_after, '<', $rss_before + 512 * 1024, "children's memory stays bounded");

$srv->stop;
done_testing;
