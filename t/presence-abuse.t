# The presence channel against anonymous clients (issue 12, findings 3 of the security review):
# it is refused over HTTP unless the location allows it (SSEPresenceSubscribe), its records
# are small and bounded (no Last-Event-ID, a few channel names and a count), and a storm of
# connects and disconnects cannot evict another channel's retained events from a small bus.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;
use Time::HiRes qw(sleep time);
use POSIX ();

# 256K: a small bus, so that a storm of 200 connections would turn it over without the
# budget (the finding wiped a 1 MB one with 150 connections of larger records).
my $srv = SSETest::Server->start(
    global => "SSEPresenceChannel presence\nSSEBusSize 256K\nSSEHistory 1000 0\n",
    conf => <<'EOF');
<Location /watch>
    SetHandler sse-subscribe
    SSEPresenceSubscribe on
    Require ip 127.0.0.1
</Location>
EOF
$srv->expect_log(qr/SSE0155: .*presence channel/);
$srv->expect_burst_notices;

subtest 'the presence channel is refused over HTTP unless the location allows it' => sub {
    for my $path ('/events/presence', '/events/news,presence', '/events/news?channel=presence',
                  '/events/news?channel=news,presence') {
        my $r = $srv->request(GET => $path, timeout => 5);
        is($r->{status}, 403, "GET $path: 403");
        my $j = SSETest::json_decode($r->{body}) // {};
        like($j->{error} // '', qr/SSEPresenceSubscribe/, '  the JSON error names the directive');
        is($j->{status}, 403, '  and the status');
        unlike($r->{body}, qr/event:/, '  no event delivered');
    }
    like($srv->log_text, qr/SSE0155: .*presence channel/, 'a tagged log line');
};

# The watcher, on the allowed location; later records are read from it.
my $watch = $srv->subscribe('/watch/presence');
is($watch->status, 200, 'a location with SSEPresenceSubscribe on reads the presence channel');
ok($watch->read_until(sub { scalar $watch->comments }, 10), 'its stream is open');

# The next presence record naming `marker` among its channels, decoded with its size.
sub next_with {
    my ($type, $marker) = @_;
    my $found;
    $watch->read_until(sub {
        for my $e ($watch->all_events) {
            next if $e->{seen} || $e->{event} ne $type;
            my $j = SSETest::json_decode($e->{data}) or next;
            next unless grep { $_ eq $marker } @{$j->{channels} // []};
            $e->{seen} = 1;
            $found = [$j, length $e->{data}];
            return 1;
        }
        return 0;
    }, 20);
    return $found ? @$found : ();
}

subtest 'records are small: no Last-Event-ID, a few channel names and a count' => sub {
    # 31 channels of 240 bytes and a 1000-byte Last-Event-ID: ~8.5 KB per record before.
    my @names = ('marker1', map { sprintf('c%02d-', $_) . ('x' x 236) } 1 .. 30);
    my $s = $srv->subscribe('/events/' . join(',', @names),
                            headers => {'Last-Event-ID' => 'i' x 1000});
    is($s->status, 200, 'a subscriber of 31 long channels, resuming from a 1000-byte id');
    my ($r, $bytes) = next_with('reconnect', 'marker1');
    ok($r, 'its reconnect record');
    ok(!exists $r->{lastEventId}, 'carries no lastEventId');
    is($r->{channel_count}, 31, 'counts every channel');
    cmp_ok(scalar @{$r->{channels}}, '<', 31, 'lists only some of them');
    cmp_ok($bytes, '<=', 512, "the record's data is at most 512 bytes ($bytes)");
    is($r->{remote}, '127.0.0.1', 'the remote address, for the allowed subscriber');
    $s->close;
    my ($d, $dbytes) = next_with('disconnect', 'marker1');
    ok($d, 'its disconnect record');
    cmp_ok($dbytes, '<=', 512, "at most 512 bytes too ($dbytes)");
};

subtest "a connect/disconnect storm does not evict another channel's history" => sub {
    my $st = status();
    my $ring = $st->{bus_bytes};
    # The budget (docs/endpoints.md): bus_bytes / 8 / 1 KB records a minute, in bursts as large.
    my $per_minute = int($ring / 8 / 1024) || 1;
    # 3 events of 40 KB: about half of the 256 KB bus.
    my @ids;
    for my $i (1 .. 3) {
        my $r = $srv->publish('/publish/keep', "$i:" . ('k' x 40000));
        is($r->{status}, 201, "publish $i") or last;
        push @ids, $r->{json}{id};
    }
    my $published_before = presence_published();
    my $skipped_before = status()->{presence_skipped} // 0;
    my @names = ('storm', map { sprintf('s%02d-', $_) . ('y' x 236) } 1 .. 30);
    my $path = '/events/' . join(',', @names);
    # 200 connections, 400 records of about 600 bytes: without the budget they fill the
    # ~130 KB the retained events leave about twice over and evict them all.
    my $n = 200;
    my $opened = 0;
    my $started = time;
    my $until = $started + 120;
    for my $i (1 .. $n) {
        last if time > $until;
        $opened += open_with_id($path, 'j' x 1000) ? 1 : 0;
    }
    is($opened, $n, "$n anonymous clients connected and left");
    # Every stream has ended (each announced or skipped) before anything is counted.
    my $gone = $srv->wait_for(sub { (status()->{subscribers} // 99) == 1 }, 60,
                              'the storm streams end');
    ok($gone, 'only the watcher is left');
    my $minutes = POSIX::ceil((time - $started) / 60) || 1;
    # Every announcement is either on the bus or counted as skipped: nothing vanishes.
    my $written = presence_published() - $published_before;
    my $skipped = (status()->{presence_skipped} // 0) - $skipped_before;
    ok(defined status()->{presence_skipped}, "sse-status counts skipped presence records");
    is($written + $skipped, 2 * $n, "records written ($written) and skipped ($skipped) add up to "
                                    . 2 * $n . ' announcements');
    # A token bucket takes at most a burst plus its rate over the time measured here (the
    # measured time only loosens the bound: a slow machine cannot fail it).
    my $bound = $per_minute + $per_minute * $minutes;
    cmp_ok($written, '<=', $bound, "at most $bound records written in $minutes minute(s) "
                                   . "($per_minute a minute, in bursts as large)");
    cmp_ok($skipped, '>', 0, 'the storm went over the budget: records were skipped');
    like($srv->log_text, qr/SSE0156: presence records over their budget \($per_minute a minute/,
         'skipping is logged (SSE0156, notice), with the budget');
    my $all = $srv->subscribe('/events/keep?lastEventId=0');
    # "0" is no id of this bus: an sse-missed notice, then every retained event of the channel.
    my @got = grep { $_->{event} eq 'message' } $all->events(4, 30);
    is_deeply([map { $_->{id} } @got], \@ids, 'a resume from 0 still gets all 3 retained events');
    $all->close;
    # What the watcher saw says how many it missed.
    my $seen = 0;
    my $told = 0;
    $watch->read_until(sub {
        ($seen, $told) = (0, 0);
        for my $e ($watch->all_events) {
            my $j = SSETest::json_decode($e->{data}) or next;
            $told += $j->{skipped} // 0;
            $seen++ if grep { $_ eq 'storm' } @{$j->{channels} // []};
        }
        $seen == $written }, 20);
    is($seen, $written, "the watcher got every record written ($seen)");
    my $skipped_now = status()->{presence_skipped} // 0;
    cmp_ok($told, '<=', $skipped_now, "the records' skipped fields ($told) tell of skipped records ($skipped_now)");
};

sub status { SSETest::json_decode($srv->request(GET => '/sse-status')->{body}) // {} }

# events_published of the presence channel (GET stats on the publish location).
sub presence_published {
    my $r = $srv->request(GET => '/publish/presence');
    return (SSETest::json_decode($r->{body}) // {})->{events_published} // 0;
}

# Opens a stream with a Last-Event-ID and leaves as soon as its head arrived.
sub open_with_id {
    my ($path, $id) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $srv->port, Timeout => 10)
        or return 0;
    syswrite $s, "GET $path HTTP/1.1\r\nHost: x\r\nLast-Event-ID: $id\r\n\r\n";
    my $buf = '';
    my $end = time + 10;
    while ($buf !~ /\r\n\r\n/ && time < $end) {
        my $n = sysread $s, $buf, 4096, length $buf;
        last unless $n;
    }
    close $s;
    return $buf =~ m{^HTTP/1\.1 200};
}

$watch->close;
$srv->stop;
done_testing;
