# Streams without a worker thread each (event MPM): many streams on few workers, disconnects
# released at once (and the 2.4 teardown pinned through mod_status's counters), a client that
# stops reading dropped without delaying the others and made whole by its replay, graceful
# restart telling streams to come back, TLS, and one access-log line per stream.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;
use Time::HiRes qw(sleep time);
use IO::Socket::INET;

plan skip_all => 'streams are suspended only under the event MPM'
    unless ($ENV{SSE_TEST_MPM} // 'event') eq 'event';

my $srv = SSETest::Server->start(global => "SSEHistory 100000 0\nSSEBusSize 64M\n", conf => <<'EOF');
AsyncRequestWorkerFactor 100
<Location /slow>
    SetHandler sse-subscribe
    SSEMaxPending 64K
</Location>
EOF

# Bursts of 1,000 new streams keep every worker briefly busy with first bytes and replay.
$srv->expect_burst_notices;

sub status { $srv->status_field($_[0]) }

# ConnsTotal etc. are refreshed by the MPM's listener about once a second.
sub settled_conns {
    my ($want) = @_;
    return $srv->wait_for(sub { (status('ConnsTotal') // -1) <= $want }, 6);
}

subtest 'many streams, few workers' => sub {
    my @subs = map { $srv->subscribe('/events/many' . ($_ % 3)) } 1 .. 300;
    is(scalar(grep { $_->status == 200 } @subs), 300, '300 streams open');
    sleep 1.5;
    cmp_ok(status('BusyWorkers'), '<=', 2, 'they hold no worker (BusyWorkers ' . status('BusyWorkers') . ')');
    my $t0 = time;
    my $ok = $srv->request(GET => '/server-status?auto');
    is($ok->{status}, 200, 'ordinary requests are served');
    cmp_ok(time - $t0, '<', 1, 'promptly');
    $srv->publish('/publish/many0,many1,many2', 'to all');
    $srv->publish('/publish/many1', 'to one third');
    $srv->publish('/publish/many0,many1,many2', 'end');
    my ($all, $third) = (0, 0);
    for my $sub (@subs) {
        $sub->read_until(sub { grep { $_->{data} eq 'end' } $sub->all_events }, 5);
        my @data = map { $_->{data} } $sub->all_events;
        $all++ if grep { $_ eq 'to all' } @data;
        $third++ if grep { $_ eq 'to one third' } @data;
    }
    is($all, 300, 'every stream got the event for all');
    is($third, 100, 'a channel reaches only its streams');
    $_->close for @subs;
};

subtest 'disconnects are released at once, MPM counters return (2.4 teardown pin)' => sub {
    ok(settled_conns(1), 'no connection left after the streams closed')
        or diag 'ConnsTotal ' . status('ConnsTotal');
    for my $round (1 .. 5) {
        my @subs = map { $srv->subscribe('/events/churn') } 1 .. 200;
        $_->close for @subs;
    }
    ok(settled_conns(1), '1000 more connect/disconnect cycles: ConnsTotal back to 0 or 1')
        or diag 'ConnsTotal ' . status('ConnsTotal');
    for my $f (qw(ConnsAsyncWriting ConnsAsyncKeepAlive ConnsAsyncClosing)) {
        my $v = status($f);
        # An underflow shows as a huge number: httpd's event MPM changed under the teardown.
        cmp_ok($v, '<', 1000, "$f is $v (a huge value means the teardown no longer matches "
                              . "httpd's event MPM: see src/httpd/async_hub.h)");
    }
    like($srv->access_log, qr/"GET \/events\/churn HTTP\/1.1" 200 \d+ \d+ events=0 bytes=\d+ end=client-closed/,
         'each stream has its access-log line, with how it ended');
};

subtest 'clients that close right after the headers (the stream ends while being handed over)' => sub {
    # The suspend hook hands the stream to the hub before the MPM's last writes to the
    # connection; a stream that ends at once must not free the connection under the worker.
    # Before the fix, 31 to 60 of 6,000 such cycles crashed a child.
    my @kids;
    for my $k (1 .. 3) {
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            $srv->open_and_leave("/events/race$k") for 1 .. 1000;
            $srv->{stopped} = 1; # the parent owns the server
            exit 0;
        }
        push @kids, $pid;
    }
    waitpid $_, 0 for @kids;
    ok(settled_conns(1), '3,000 cycles: ConnsTotal back to 0 or 1');
    unlike($srv->log_text, qr/exit signal Segmentation fault/, 'no child crashed');
};

# Private resident memory of the server's children, in kB (RssAnon: the bus is shared memory,
# and its pages count in VmRSS as events fill them).
sub children_rss {
    my $kb = 0;
    for my $pid ($srv->children) {
        open my $fh, '<', "/proc/$pid/status" or next;
        while (<$fh>) { $kb += $1 if /^RssAnon:\s+(\d+)/ }
    }
    return $kb;
}

subtest '5,000 connect/disconnect cycles leave memory and counters where they were' => sub {
    my $load = "$SSETest::ROOT/build/sse-load";
    plan skip_all => 'build/sse-load is not built' unless -x $load;
    my $port = $srv->port;
    # Warm-up: the allocators reach their working size.
    for (1 .. 3) {
        system("$load -n 1000 -e 1 -r 0 -w 5 127.0.0.1 $port >/dev/null") == 0 or die 'warm-up failed';
    }
    ok(settled_conns(1), 'warm-up connections gone');
    # Allocators keep and return memory in steps of megabytes, so single readings are noisy; a
    # leak grows with every stream. It fails only when even the lowest of the last three
    # readings is above the highest of the first three by 1 KiB per stream in between.
    my @rss;
    for (1 .. 8) {
        is(system("$load -n 625 -e 1 -r 0 -w 5 127.0.0.1 $port >/dev/null"), 0, '625 streams opened, served, closed');
        settled_conns(1);
        push @rss, children_rss();
    }
    ok(settled_conns(1), 'ConnsTotal back to 0 or 1') or diag 'ConnsTotal ' . status('ConnsTotal');
    my ($max_first) = sort { $b <=> $a } @rss[0 .. 2];
    my ($min_last) = sort { $a <=> $b } @rss[5 .. 7];
    my $growth = $min_last - $max_first;
    SKIP: {
        skip 'memory figures under AddressSanitizer', 1 if SSETest::sanitized();
        cmp_ok($growth * 1024 / 3125, '<', 1024,
               "private memory after each round: @rss kB; growth $growth kB over 3,125 streams");
    }
};

subtest 'a client that stops reading is dropped, others are not delayed, replay makes it whole' => sub {
    my $fast = $srv->subscribe('/events/flood');
    my $slow = $srv->subscribe('/slow/flood');
    ok($slow->read_until(sub { scalar $slow->comments }, 3), 'slow stream open');
    # The slow client reads nothing from now on.
    # More than the kernel's socket buffers on loopback hold (several MB), so that the
    # server's queue for the slow client fills.
    my $n = 1500;
    my $payload = 'p' x 16000;
    my @ids;
    my $t0 = time;
    for my $i (1 .. $n) {
        push @ids, $srv->publish('/publish/flood', "$i $payload")->{json}{id};
        $fast->pump(0.01);   # the fast client keeps reading
    }
    my @got = $fast->events($n, 20);
    is(scalar @got, $n, "the reading client got all $n events (24 MB)");
    cmp_ok(time - $t0, '<', 30, 'without waiting for the slow one');
    # The slow one was dropped: reading now ends at a close, before all events.
    $slow->read_until(sub { 0 }, 5);
    ok($slow->closed, 'the slow stream was closed by the server');
    my @partial = grep { $_->{event} eq 'message' } $slow->all_events;
    cmp_ok(scalar @partial, '<', $n, 'it had received ' . scalar(@partial) . ' events');
    my $last = @partial ? $partial[-1]{id} : 'none';
    my $again = $srv->subscribe('/slow/flood', headers => {'Last-Event-ID' => $last});
    my @rest = grep { $_->{event} eq 'message' } $again->events($n - @partial + (@partial ? 0 : 1), 20);
    my @all_ids = ((map { $_->{id} } @partial), (map { $_->{id} } @rest));
    is_deeply(\@all_ids, \@ids, 'after reconnecting with Last-Event-ID it has every event once');
    like($srv->access_log, qr/"GET \/slow\/flood HTTP\/1.1" 200 \d+ \d+ events=\d+ bytes=\d+ end=fell-behind/,
         'logged as fell-behind');
    $_->close for $fast, $slow, $again;
};

subtest 'graceful restart: streams told to come back, nothing lost or twice' => sub {
    my @subs = map { $srv->subscribe('/events/gr') } 1 .. 20;
    my $first = $srv->publish('/publish/gr', 'before')->{json}{id};
    $_->events(1, 5) for @subs;
    my $children_before = () = $srv->children;
    $srv->graceful;
    my $ended = grep { $_->read_until(sub { 0 }, 5); $_->closed } @subs;
    is($ended, 20, 'every held stream was closed');
    my $retries = grep { defined $_->retry } @subs;
    is($retries, 20, 'each got a retry: field first');
    $srv->publish('/publish/gr', 'during');
    my $after = $srv->subscribe('/events/gr', headers => {'Last-Event-ID' => $first});
    is_deeply([map { $_->{data} } $after->events(1, 5)], ['during'], 'resume gets exactly what was missed');
    ok($srv->wait_for(sub { my @c = $srv->children; @c <= 2 }, 10), 'old children exited');
    $after->close;
};

SKIP: {
    skip 'openssl and curl are needed for the TLS test', 1
        unless -x '/usr/bin/openssl' && -x '/usr/bin/curl';
    subtest 'TLS' => sub {
        my $tls = SSETest::Server->start(tls => 1);
        # Debian's mod_ssl may be built against a newer OpenSSL than the one installed.
        $tls->expect_log(qr/AH01882: Init: this version of mod_ssl was compiled against a newer library/);
        my $out = $tls->dir . '/curl.out';
        my $pid = fork // die;
        if ($pid == 0) {
            exec 'curl', '-skN', '--max-time', '4', '-o', $out,
                 'https://127.0.0.1:' . $tls->port . '/events/secure';
        }
        sleep 1;
        is($tls->publish('/publish/secure', 'over tls')->{status}, 201, 'published over TLS');
        cmp_ok($tls->status_field('BusyWorkers'), '<=', 2, 'the TLS stream holds no worker');
        waitpid($pid, 0);
        open my $fh, '<', $out or die;
        local $/;
        my $body = <$fh>;
        like($body, qr/data: over tls\n\n/, 'event received over TLS');
        $tls->stop;
    };
}

SKIP: {
    skip 'curl with HTTP/2 is needed for the h2 test', 1
        unless `curl --version 2>/dev/null` =~ /HTTP2/;
    subtest 'HTTP/2: a stream falls back to the blocking mode (mod_http2 runs it on its own worker) and works' => sub {
        my $h2 = SSETest::Server->start(tls => 1, h2 => 1);
        $h2->expect_log(qr/AH01882: Init: this version of mod_ssl was compiled against a newer library/);
        my $out = $h2->dir . '/curl.out';
        my $pid = fork // die;
        if ($pid == 0) {
            exec 'curl', '--http2', '-skN', '--max-time', '4', '-o', $out,
                 'https://127.0.0.1:' . $h2->port . '/events/h2';
        }
        sleep 1;
        is($h2->publish('/publish/h2', 'over h2')->{status}, 201, 'published');
        waitpid($pid, 0);
        open my $fh, '<', $out or die;
        local $/;
        like(<$fh>, qr/data: over h2\n\n/, 'event received');
        ok($h2->wait_for(sub { $h2->access_log =~ m{"GET /events/h2 HTTP/2.0" 200} }, 5),
           'over HTTP/2, and the stream ended when the client left');
        $h2->stop;
    };
}

$srv->stop;
done_testing;
