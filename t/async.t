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

# ConnsTotal etc. are refreshed by the MPM's listener about once a second, so it can read low
# while the last streams are still held: settled also needs /sse-status's exact count of open
# streams (the registry's, which SSEMaxSubscribers counts) at 0. Without it a 625-stream run
# started while the hub still held the previous one's streams, and got 503s (SSE0108). A status
# request that fails (no field) is not "settled": it is asked again, within a generous bound
# (120 s: in a loaded run, 2,500 streams closed at once took the hub's ender thread over 30 s
# to tear down, and ConnsTotal read 0 right after the 30 s bound expired).
sub settled_conns {
    my ($want) = @_;
    return $srv->wait_for(sub {
        my $open = (SSETest::json_decode($srv->request(GET => '/sse-status')->{body}) // {})->{subscribers};
        return 0 unless defined $open && $open == 0;
        my $v = status('ConnsTotal');
        defined $v && $v <= $want
    }, 120);
}

# The number of streams on a channel, as the publish location's GET tells (-1 if it cannot).
sub subscribers {
    my ($server, $channel) = @_;
    return SSETest::json_decode($server->request(GET => "/publish/$channel")->{body})->{subscribers} // -1;
}

subtest 'many streams, few workers' => sub {
    my @subs = map { $srv->subscribe('/events/many' . ($_ % 3)) } 1 .. 300;
    is(scalar(grep { $_->status == 200 } @subs), 300, '300 streams open');
    # Streams that held a worker each would take all 50 (and 250 would never open); a worker
    # that is still finishing a stream's first bytes is not a held one: wait for them to
    # settle below half, bounded.
    my $busy;
    ok($srv->wait_for(sub { $busy = status('BusyWorkers'); defined $busy && $busy < 25 }, 30),
       'they hold no worker (BusyWorkers ' . ($busy // 'unknown') . ' of 50)');
    my $ok = $srv->request(GET => '/server-status?auto', timeout => 30);
    is($ok->{status}, 200, 'ordinary requests are served');
    $srv->publish('/publish/many0,many1,many2', 'to all');
    $srv->publish('/publish/many1', 'to one third');
    $srv->publish('/publish/many0,many1,many2', 'end');
    my ($all, $third) = (0, 0);
    for my $sub (@subs) {
        $sub->read_until(sub { grep { $_->{data} eq "end" } $sub->all_events }, 30);
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
        # A missing field (a failed status request) is a failure too, not a small number.
        ok(defined $v && $v < 1000, "$f is " . ($v // 'missing') . " (a huge value means the "
                                    . "teardown no longer matches httpd's event MPM: see src/httpd/async_hub.h)");
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
            my $done = grep { $srv->open_and_leave("/events/race$k") } 1 .. 1000;
            $srv->{stopped} = 1; # the parent owns the server
            exit($done == 1000 ? 0 : 1);
        }
        push @kids, $pid;
    }
    my $failed = 0;
    for (@kids) { waitpid $_, 0; $failed++ if $? != 0 }
    is($failed, 0, 'each of 3 clients made its 1,000 connect-and-leave cycles');
    ok(settled_conns(1), '3,000 cycles: ConnsTotal back to 0 or 1');
    unlike($srv->log_text, qr/exit signal Segmentation fault/, 'no child crashed');
};

# Private resident memory of the server's children, in kB (RssAnon: the bus is shared memory,
# and its pages count in VmRSS as events fill them).
# By pid, the lowest of readings over 3 s: a child's private memory right after a round swung
# between 2.5 and 13 MB from round to round (what 2,500 ended streams held is given back a
# little later, by the allocator's own schedule); it settles back to its floor, which a leak
# raises and nothing else does.
sub children_rss {
    my %kb;
    for (1 .. 7) {
        for my $pid ($srv->children) {
            open my $fh, '<', "/proc/$pid/status" or next;
            while (<$fh>) { $kb{$pid} = $1 if /^RssAnon:\s+(\d+)/ && (!defined $kb{$pid} || $1 < $kb{$pid}) }
        }
        sleep 0.5;
    }
    return \%kb;
}

subtest '23,000 connect/disconnect cycles leave memory and counters where they were' => sub {
    my $load = "$SSETest::ROOT/build/sse-load";
    # `make integration` builds it; a missing one is a failure, not a skip.
    ok(-x $load, 'build/sse-load is built') or return diag('make build/sse-load');
    my $port = $srv->port;
    # Warm-up: the allocators reach their working size.
    # Each run waits for the previous one's streams to be gone: the hub ends them when it sees
    # their clients leave, which a loaded (or sanitized) server does later than sse-load exits,
    # and SSEMaxSubscribers (1,000 here) counts them until then.
    for (1 .. 3) {
        settled_conns(1);
        system("$load -n 1000 -e 1 -r 0 -w 5 127.0.0.1 $port >/dev/null") == 0 or die 'warm-up failed';
    }
    ok(settled_conns(1), 'warm-up connections gone');
    # A leak grows with every stream: rounds of 2,500 streams, and per child that lived through
    # all rounds, the floor of the last three rounds compared with the floor of the first three:
    # half a KiB per stream over the five rounds in between is 6 MB in all, against floors that
    # moved by 0.6 MB in all when measured (a 2 KiB leak put in for a check: 26 MB).
    my @rss;
    for (1 .. 8) {
        my $ok = grep { settled_conns(1); system("$load -n 625 -e 1 -r 0 -w 5 127.0.0.1 $port >/dev/null") == 0 } 1 .. 4;
        is($ok, 4, '4 x 625 streams opened, served, closed');
        settled_conns(1);
        push @rss, children_rss();
    }
    ok(settled_conns(1), 'ConnsTotal back to 0 or 1') or diag 'ConnsTotal ' . status('ConnsTotal');
    my @lasting = grep { my $pid = $_; !grep { !exists $_->{$pid} } @rss } sort keys %{$rss[0]};
    ok(@lasting, 'a child served every round (' . scalar(@lasting) . ')');
    my ($growth, @table) = (0);
    for my $pid (@lasting) {
        my @kb = map { $_->{$pid} } @rss;
        my ($min_first) = sort { $a <=> $b } @kb[0 .. 2];
        my ($min_last) = sort { $a <=> $b } @kb[5 .. 7];
        $growth += $min_last - $min_first;
        push @table, "$pid: @kb";
    }
    SKIP: {
        skip 'memory figures under AddressSanitizer', 1 if SSETest::sanitized();
        cmp_ok($growth * 1024 / 12500, '<', 512,
               "private memory after each round (kB) of " . join('; ', @table)
               . "; growth $growth kB over 12,500 streams");
    }
};

subtest 'a client that stops reading is dropped, others are not delayed, replay makes it whole' => sub {
    my $fast = $srv->subscribe('/events/flood');
    my $slow = $srv->subscribe('/slow/flood');
    ok($slow->read_until(sub { scalar $slow->comments }, 10), 'slow stream open');
    # The slow client reads nothing from now on. How much the kernel's socket buffers take
    # before the server's queue for it fills depends on the kernel: publish until the server
    # has dropped it (its access-log line says fell-behind), bounded at 100 MB.
    my $payload = 'p' x 16000;
    my ($n, @ids) = (0);
    my $dropped = sub { $srv->access_log =~ m{"GET /slow/flood HTTP/1.1" 200 .* end=fell-behind} };
    while ($n < 6000 && !($n % 100 == 0 && $n > 0 && $dropped->())) {
        $n++;
        push @ids, $srv->publish('/publish/flood', "$n $payload")->{json}{id};
        $fast->pump(0.01);   # the fast client keeps reading
    }
    ok($dropped->(), "the server dropped the slow client (after $n events of 16 KB)");
    # The reading client was never held back by the one that stopped.
    my @got = $fast->events($n, 60);
    is(scalar @got, $n, "the reading client got all $n events");
    # The slow one was dropped: reading now ends at a close, before all events.
    $slow->read_until(sub { 0 }, 30);
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
    $_->events(1, 30) for @subs;
    my $children_before = () = $srv->children;
    $srv->graceful;
    my $ended = grep { $_->read_until(sub { 0 }, 30); $_->closed } @subs;
    is($ended, 20, 'every held stream was closed');
    my $retries = grep { defined $_->retry } @subs;
    is($retries, 20, 'each got a retry: field first');
    $srv->publish('/publish/gr', 'during');
    my $after = $srv->subscribe('/events/gr', headers => {'Last-Event-ID' => $first});
    is_deeply([map { $_->{data} } $after->events(1, 30)], ['during'], 'resume gets exactly what was missed');
    ok($srv->wait_for(sub { my @c = $srv->children; @c <= 2 }, 60), 'old children exited');
    $after->close;
};

# A curl stream (curl's own TLS and HTTP/2 clients) on a TLS server: published to once curl's
# stream is subscribed (not after a guessed delay), read until the event is in curl's output,
# then curl is stopped; $while_open (if given) runs before that. Returns what curl wrote.
sub curl_stream {
    my ($server, $channel, $data, $while_open, @curl_args) = @_;
    my $out = $server->dir . '/curl.out';
    my $pid = fork // die;
    if ($pid == 0) {
        exec 'curl', @curl_args, '-skN', '--max-time', '120', '-o', $out,
             'https://127.0.0.1:' . $server->port . "/events/$channel";
    }
    my $body = sub { open my $fh, '<', $out or return ''; local $/; <$fh> // '' };
    ok($server->wait_for(sub { subscribers($server, $channel) == 1 }, 60), "curl's stream is subscribed");
    is($server->publish("/publish/$channel", $data)->{status}, 201, 'published');
    $server->wait_for(sub { $body->() =~ /\Q$data\E/ }, 60);
    $while_open->() if $while_open;
    kill 'TERM', $pid;
    waitpid($pid, 0);
    return $body->();
}

subtest 'TLS' => sub {
    # openssl makes the throwaway certificate, curl is the client: a missing one is a failure
    # that names its Debian package (tools/install-deps installs both), not a skip.
    for my $tool (qw(openssl curl)) {
        ok(-x "/usr/bin/$tool", "$tool is installed") or return diag("apt-get install $tool");
    }
    my $tls = SSETest::Server->start(tls => 1);
    # Debian's mod_ssl may be built against a newer OpenSSL than the one installed.
    $tls->expect_log(qr/AH01882: Init: this version of mod_ssl was compiled against a newer library/);
    # While the stream is open, only the status request itself is busy (a stream held on a
    # worker would be a second one for as long as it lasts); other workers settle, bounded.
    my $busy;
    my $no_worker = sub {
        ok($tls->wait_for(sub { $busy = $tls->status_field('BusyWorkers'); defined $busy && $busy == 1 }, 30),
           'the TLS stream holds no worker (BusyWorkers ' . ($busy // 'unknown') . ')');
    };
    my $body = curl_stream($tls, 'secure', 'over tls', $no_worker);
    like($body, qr/data: over tls\n\n/, 'event received over TLS');
    $tls->stop;
};

SKIP: {
    skip 'curl with HTTP/2 is needed for the h2 test', 1
        unless `curl --version 2>/dev/null` =~ /HTTP2/;
    subtest 'HTTP/2: a stream falls back to the blocking mode (mod_http2 runs it on its own worker) and works' => sub {
        my $h2 = SSETest::Server->start(tls => 1, h2 => 1);
        $h2->expect_log(qr/AH01882: Init: this version of mod_ssl was compiled against a newer library/);
        like(curl_stream($h2, 'h2', 'over h2', undef, '--http2'), qr/data: over h2\n\n/, 'event received');
        ok($h2->wait_for(sub { $h2->access_log =~ m{"GET /events/h2 HTTP/2.0" 200} }, 5),
           'over HTTP/2, and the stream ended when the client left');
        $h2->stop;
    };
}

$srv->stop;
done_testing;
