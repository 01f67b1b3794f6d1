# Subscribe: headers, first bytes, channels from path, query and SSEChannel, keep-alives,
# retry, HEAD, bad requests, and a client that goes away freeing its worker.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;
use Time::HiRes qw(sleep time);
use IO::Select;
use IO::Socket::INET;

my $srv = SSETest::Server->start(conf => <<'EOF');
<Location /fast>
    SetHandler sse-subscribe
    SSEKeepalive 1
    SSERetry 2500
</Location>
<Location /blocking>
    SetHandler sse-subscribe
    SSEAsync Off
    SSEKeepalive 1
</Location>
<Location /fixed>
    SetHandler sse-subscribe
    SSEChannel "room-%{req:X-Room}"
</Location>
EOF
$srv->expect_log(qr/SSE0100: subscribe refused \(400\)/, qr/SSE0103: subscribe refused \(405\)/,
                 qr/SSE0101: subscribe refused \(400\): bad query string/);

subtest 'headers and first bytes' => sub {
    my $sub = $srv->subscribe('/events/news');
    is($sub->status, 200, 'status 200');
    is($sub->headers->{'content-type'}, 'text/event-stream', 'Content-Type');
    is($sub->headers->{'cache-control'}, 'no-cache', 'Cache-Control');
    is($sub->headers->{'x-accel-buffering'}, 'no', 'X-Accel-Buffering');
    ok(!exists $sub->headers->{'content-length'}, 'no Content-Length');
    ok($sub->read_until(sub { scalar $sub->comments }, 30), 'a comment arrives before any event');
    is(scalar $sub->all_events, 0, 'no event yet');
    my $res = $srv->publish('/publish/news', 'hello');
    is($res->{status}, 201, 'published');
    my ($ev) = $sub->events(1, 5);
    is($ev->{data}, 'hello', 'onmessage gets the data');
    is($ev->{event}, 'message', 'untyped event');
    is($ev->{id}, $res->{json}{id}, 'the id the publisher was told');
    $sub->close;
};

subtest 'channels from the path, the query, several at once' => sub {
    my $both = $srv->subscribe('/events/news,sports');
    my $q = $srv->subscribe('/events?channel=sports&channel=weather');
    my $comma = $srv->subscribe('/events/?channel=news,weather');
    my $nested = $srv->subscribe('/events/city/paris');
    $srv->publish('/publish/news', 'n1');
    $srv->publish('/publish/sports', 's1');
    $srv->publish('/publish/weather', 'w1');
    $srv->publish('/publish?channel=city/paris', 'p1');
    $srv->publish('/publish/news,sports', 'ns'); # one event on two channels
    is_deeply([map { $_->{data} } $both->events(3, 5)], [qw(n1 s1 ns)], 'path with a comma');
    is_deeply([map { $_->{data} } $q->events(3, 5)], [qw(s1 w1 ns)], 'repeated channel parameter');
    is_deeply([map { $_->{data} } $comma->events(3, 5)], [qw(n1 w1 ns)], 'comma-separated parameter');
    is_deeply([map { $_->{data} } $nested->events(1, 5)], [qw(p1)], 'a name with a slash');
    $_->close for $both, $q, $comma, $nested;
};

subtest 'SSEChannel expression' => sub {
    my $sub = $srv->subscribe('/fixed/ignored?channel=ignored', headers => {'X-Room' => 'blue'});
    is($sub->status, 200, 'subscribed');
    $srv->publish('/publish/room-blue', 'to blue');
    $srv->publish('/publish/ignored', 'not for it');
    $srv->publish('/publish/room-blue', 'again');
    is_deeply([map { $_->{data} } $sub->events(2, 5)], ['to blue', 'again'], 'channel from the expression');
    $sub->close;
};

subtest 'retry and keep-alive' => sub {
    my $sub = $srv->subscribe('/fast/news');
    ok($sub->read_until(sub { defined $sub->retry }, 30), 'retry field sent');
    is($sub->retry, 2500, 'SSERetry value');
    # SSEKeepalive 1 and nothing published: keep-alive comments keep coming. Three within 20 s
    # (the default interval, 15 s, gives at most one), and not all at once (they take 2 s at
    # least): a loaded machine only makes them later, which the 20 s leave room for.
    my $t0 = time;
    my $keepalives = sub { scalar grep { /keepalive/ } $sub->comments };
    ok($sub->read_until(sub { $keepalives->() >= 3 }, 20), 'three keep-alive comments within 20 s')
        or diag('got ' . $keepalives->());
    cmp_ok(time - $t0, '>=', 1.9, 'one per SSEKeepalive interval, not sooner');
    is(scalar $sub->bad_fields, 0, 'nothing a parser would reject');
    $sub->close;
};

subtest 'HEAD' => sub {
    # The head only, and the connection closed after it (Connection: close): a HEAD that
    # streamed would send bytes after the head, or never end. Read to the end, bounded.
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $srv->port, Timeout => 10)
        or die "connect: $!";
    syswrite $s, "HEAD /events/news HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    my ($raw, $ended) = ('', 0);
    my $sel = IO::Select->new($s);
    my $end = time + 30;
    while (!$ended && time < $end && $sel->can_read($end - time)) {
        my $n = sysread $s, $raw, 65536, length $raw;
        $ended = 1 unless $n;
    }
    ok($ended, 'the server ended the connection after the head');
    my $res = SSETest::parse_response($raw, 1);
    is($res->{status}, 200, 'status 200');
    is($res->{headers}{'content-type'}, 'text/event-stream', 'Content-Type');
    is($res->{body}, '', 'no byte after the head');
};

subtest 'OPTIONS (a CORS preflight)' => sub {
    my $res = $srv->request(OPTIONS => '/events/news',
                            headers => {Origin => 'http://app.example',
                                        'Access-Control-Request-Method' => 'GET',
                                        'Access-Control-Request-Headers' => 'last-event-id'});
    is($res->{status}, 200, 'OPTIONS is 200, as httpd answers it');
    is_deeply([sort split /\s*,\s*/, $res->{headers}{allow} // ''], [qw(GET HEAD OPTIONS TRACE)],
              'Allow: GET, HEAD, OPTIONS (and TRACE, which TraceEnable allows)');
    is($res->{headers}{'content-length'}, '0', 'no body');
    is($res->{body}, '', 'nothing after the headers');
    unlike($srv->log_text, qr/method OPTIONS/, 'not refused');
};

subtest 'bad requests' => sub {
    my $res = $srv->request(POST => '/events/news', body => 'x');
    is($res->{status}, 405, 'POST is 405');
    is($res->{headers}{allow}, 'GET, HEAD, OPTIONS', 'Allow names GET, HEAD, OPTIONS');
    like($res->{body}, qr/"error":"method POST is not served here/, 'JSON body says why');

    $res = $srv->request(GET => '/events/bad%20name');
    is($res->{status}, 400, 'bad channel name is 400');
    like($res->{body}, qr/channel name \\"bad name\\" contains 0x20/, 'says which name and why');
    is($res->{headers}{'content-type'}, 'application/json', 'JSON error');

    $res = $srv->request(GET => '/events/' . ('x' x 256));
    is($res->{status}, 400, 'name over 255 bytes');
    like($res->{body}, qr/256 bytes long/, 'says how long');

    $res = $srv->request(GET => '/events');
    is($res->{status}, 400, 'no channel');
    like($res->{body}, qr/no channel/, 'says there is none');

    $res = $srv->request(GET => '/events/a;b');
    is($res->{status}, 400, 'semicolon');

    $res = $srv->request(GET => '/events?channel=%zz');
    is($res->{status}, 400, 'bad escape in the query');
    like($res->{body}, qr/bad query string/, 'says so');
};

subtest 'a client that goes away frees its worker (SSEAsync Off: a worker per stream)' => sub {
    # Only the status request itself is busy once earlier streams are gone.
    ok($srv->wait_for(sub { ($srv->status_field('BusyWorkers') // -1) == 1 }, 30), 'server idle');
    my $idle = 1;
    my @subs = map { $srv->subscribe("/blocking/gone$_") } 1 .. 8;
    is(scalar(grep { $_->status == 200 } @subs), 8, '8 streams open');
    # The scoreboard is read without a lock while the children write it: a reading may trail
    # (in a loaded prefork run it once showed 8 of the 9), so the held workers are waited for.
    my $busy;
    $srv->wait_for(sub { $busy = $srv->status_field('BusyWorkers'); defined $busy && $busy >= $idle + 8 }, 30);
    cmp_ok($busy // -1, '>=', $idle + 8, '8 workers held (' . ($busy // 'unknown') . ' busy)');
    $_->close for @subs;
    # A failed status request (no field) is not "freed".
    my $freed = $srv->wait_for(sub { my $b = $srv->status_field('BusyWorkers'); defined $b && $b <= $idle }, 30);
    ok($freed, 'all of them freed (a blocking stream notices at its next keep-alive write)')
        or diag('BusyWorkers: ' . $srv->status_field('BusyWorkers'));
};

$srv->stop;
done_testing;
