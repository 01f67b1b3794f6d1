# SSERedis, the group's state (docs/redis.md, "Cluster-wide figures"): two httpd servers on one
# Redis. GET channel figures and sse-status give totals across servers and each server's
# figures; presence records reach every server (in detail: t/redis-presence.t); only/except
# and DELETE reach every server; a server killed with kill -9 (all its processes) drops out
# of the counts within the documented bound; with Redis away, the figures are this server's
# with a mark saying the group's cannot be read; without SSERedis the answers have no
# "cluster" member.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Sys::Hostname qw(hostname);
use IO::Socket::INET;
use List::Util qw(max);
use Test::More;
use Time::HiRes qw(sleep time);

my $redis = SSETest::Redis->start;
my $url = $redis->url;
my $conf = <<'EOF';
<Location /presence>
    SetHandler sse-subscribe
    SSEChannel presence
    SSEPresenceSubscribe on
</Location>
# Without the header, a subscriber is anonymous.
<Location /events>
    SSEClientId %{req:X-Client-Id} unauthenticated
</Location>
EOF
# sse:info: SSE0722, one line per read of the group's figures that failed (counted below).
my $global = "SSERedis $url\nSSEPresenceChannel presence\nLogLevel warn sse:info\n";
my $a = SSETest::Server->start(global => $global, conf => $conf);
my $b = SSETest::Server->start(global => $global, conf => $conf);
# Redis stopped at the end: the reader's and the writers' outage lines.
$_->expect_log(qr/SSE0701: Redis at /, qr/SSE0703: lost Redis at /) for $a, $b;
my %id = (a => hostname() . ':' . $a->port, b => hostname() . ':' . $b->port);

sub status { SSETest::json_decode($_[0]->request(GET => '/sse-status')->{body}) // {} }
sub figures { SSETest::json_decode($_[0]->request(GET => "/publish/$_[1]")->{body}) // {} }

# Each server's reader starts at the stream's end once connected: publishes on $from until a
# subscriber of both servers got one.
sub wait_joined {
    my ($from) = @_;
    my @subs = map { $_->subscribe('/events/warmup') } $a, $b;
    for my $try (1 .. 30) {
        $from->publish('/publish/warmup', "w$try");
        my $all = 1;
        for my $s (@subs) {
            $all = 0 unless $s->read_until(sub { scalar $s->all_events }, 1);
        }
        next unless $all;
        $_->close for @subs;
        return 1;
    }
    return 0;
}
ok(wait_joined($a) && wait_joined($b), 'A and B read the stream');

subtest 'totals across servers, and each server\'s figures' => sub {
    is($a->publish('/publish/news', 'x')->{status}, 201, 'news published');
    is($a->publish('/publish/sport', 'x')->{status}, 201, 'sport published');
    my @subs = ($a->subscribe('/events/news'), $a->subscribe('/events/news'),
                $b->subscribe('/events/news'), $b->subscribe('/events/sport'));
    # Both servers know news once their readers brought its event; B's report comes within
    # one period (2 s): waited for, at most 30 s.
    my $f;
    ok($a->wait_for(sub { $f = figures($a, 'news'); ($f->{cluster}{subscribers} // 0) == 3 }, 30),
       'GET news on A: 3 subscribers across the servers') or diag explain $f;
    is($f->{subscribers}, 2, 'its own figure is still this server\'s');
    is($f->{cluster}{available}, JSON::PP::true, 'available');
    is($f->{cluster}{this_server}, $id{a}, 'this server\'s id: host and port');
    is_deeply({map { $_->{server} => $_->{subscribers} } @{$f->{cluster}{servers} // []}},
              {$id{a} => 2, $id{b} => 1}, 'each server\'s subscribers of news');
    my $fb;
    ok($b->wait_for(sub { $fb = figures($b, 'news'); ($fb->{cluster}{subscribers} // 0) == 3 }, 30),
       'GET news on B: the same total') or diag explain $fb;
    is($fb->{subscribers}, 1, 'B\'s own: 1');

    # Each child keeps what it read for 1 s: the child answering may have read before B's
    # report came. Waited for, at most 30 s.
    my ($sa, $c);
    ok($a->wait_for(sub { $sa = status($a); $c = $sa->{cluster};
                          ($c->{channels}{news} // 0) == 3 && ($c->{channels}{sport} // 0) == 1 }, 30),
       'sse-status on A: news has 3 subscribers in all') or diag explain $c;
    is($c->{channels}{sport}, 1, 'sport 1');
    my %per = map { $_->{server} => $_ } @{$c->{servers} // []};
    is_deeply([sort keys %per], [sort values %id], 'both servers listed');
    is($per{$id{a}}{subscribers}, $sa->{subscribers}, 'A\'s figure is A\'s own count');
    ok($a->wait_for(sub {
            %per = map { $_->{server} => $_ } @{status($a)->{cluster}{servers} // []};
            ($per{$id{b}}{subscribers} // -1) == status($b)->{subscribers} }, 30),
       'B\'s figure is B\'s own count (within a report period)');
    is_deeply($per{$id{b}}{channels}, {news => 1, sport => 1}, 'B\'s channels');
    $c = status($a)->{cluster};
    is($c->{subscribers}, $c->{servers}[0]{subscribers} + $c->{servers}[1]{subscribers},
       'the total is the sum of both');
    $_->close for @subs;
};

subtest 'presence records come from every server' => sub {
    my $watch_a = $a->subscribe('/presence');
    my $watch_b = $b->subscribe('/presence');
    for my $w ($watch_a, $watch_b) {
        ok($w->read_until(sub { scalar $w->comments }, 10), 'watching presence');
    }
    my $clients = sub {
        my ($watch, $type) = @_;
        # The anonymous warm-up streams of wait_joined() are left out: amy and bob are asked about.
        return grep { $_ eq 'amy' || $_ eq 'bob' }
               map { SSETest::json_decode($_->{data})->{client} // '' }
               grep { $_->{event} eq $type } $watch->all_events;
    };
    my $seen = sub {
        my ($watch, $type, $client) = @_;
        return $watch->read_until(sub { grep { $_ eq $client } $clients->($watch, $type) }, 15);
    };
    my $bob = $b->subscribe('/events/lobby', headers => {'X-Client-Id' => 'bob'});
    ok($seen->($watch_b, 'connect', 'bob'), 'B\'s watcher sees bob connect on B');
    ok($seen->($watch_a, 'connect', 'bob'), 'and A\'s, through Redis');
    my $amy = $a->subscribe('/events/lobby', headers => {'X-Client-Id' => 'amy'});
    ok($seen->($watch_a, 'connect', 'amy'), 'A\'s watcher sees amy connect on A');
    ok($seen->($watch_b, 'connect', 'amy'), 'and B\'s, through Redis');
    $bob->close;
    ok($seen->($watch_a, 'disconnect', 'bob'), 'A\'s watcher sees bob leave B');
    $amy->close;
    ok($seen->($watch_b, 'disconnect', 'amy'), 'B\'s watcher sees amy leave A');
    ok($seen->($watch_a, 'disconnect', 'amy') && $seen->($watch_b, 'disconnect', 'bob'),
       'and each its own server\'s');
    # A publish crossing the stream after those records: once each watcher's server has read
    # it, a second copy of a record would have arrived before it (t/redis-presence.t checks
    # it on the watchers' own streams).
    is($a->publish('/publish/presence-mark', 'x')->{status}, 201, 'a mark published');
    ok(wait_joined($a), 'both servers read the stream past the records');
    for my $w ($watch_a, $watch_b) {
        is_deeply([sort($clients->($w, 'connect'), $clients->($w, 'disconnect'))],
                  ['amy', 'amy', 'bob', 'bob'], 'each watcher got each record once');
    }
    $_->close for $watch_a, $watch_b;
};

subtest 'only and except reach the right clients on either server' => sub {
    my $alice = $a->subscribe('/events/room', headers => {'X-Client-Id' => 'alice'});
    my $bob = $b->subscribe('/events/room', headers => {'X-Client-Id' => 'bob'});
    my $carol = $b->subscribe('/events/room', headers => {'X-Client-Id' => 'carol'});
    is($a->publish('/publish/room?only=bob', 'only-bob')->{status}, 201, 'only=bob on A');
    is($b->publish('/publish/room?except=alice', 'not-alice')->{status}, 201, 'except=alice on B');
    is($a->publish('/publish/room?only=alice', 'only-alice')->{status}, 201, 'only=alice on A');
    is($b->publish('/publish/room', 'all')->{status}, 201, 'to everyone on B');
    is_deeply([map { $_->{data} } $alice->events(2, 10)], ['only-alice', 'all'], 'alice (on A)');
    is_deeply([map { $_->{data} } $bob->events(3, 10)], ['only-bob', 'not-alice', 'all'], 'bob (on B)');
    is_deeply([map { $_->{data} } $carol->events(2, 10)], ['not-alice', 'all'], 'carol (on B)');
    $_->close for $alice, $bob, $carol;
};

subtest 'DELETE on B closes the channel on both servers' => sub {
    my $sa = $a->subscribe('/events/hall');
    my $sb = $b->subscribe('/events/hall');
    is($a->publish('/publish/hall', 'hi')->{status}, 201, 'published');
    is(scalar($_->events(1, 10)), 1, 'got it') for $sa, $sb;
    is($b->request(DELETE => '/publish/hall')->{status}, 200, 'DELETE on B');
    for my $s ($sa, $sb) {
        my @ev = $s->events(1, 10);
        is($ev[0]{event}, 'sse-close', 'sse-close');
        ok($s->read_until(sub { $s->closed }, 10), 'and the stream ended');
    }
    is($a->subscribe('/events/hall')->status, 204, 'a reconnect to A is answered 204');
};

subtest 'ids: the lowest Listen port; two servers of one id are told' => sub {
    # A server with a second Listen, after the harness's: its id takes the lower of the two
    # ports. The second is taken above the usual ephemeral range (where the harness's port
    # comes from), so that it is the higher one, and the last Listen, which httpd puts at the
    # head of its listeners, is not the answer.
    my $extra;
    for my $try (1 .. 50) {
        my $p = 61000 + int(rand(4000));
        my $probe = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $p,
                                          Proto => 'tcp', Listen => 1, ReuseAddr => 1) or next;
        close $probe;
        $extra = $p;
        last;
    }
    ok(defined $extra, 'a free port above the ephemeral range') or return;
    my $c = SSETest::Server->start(global => "${global}Listen 127.0.0.1:$extra\n", conf => $conf);
    my $low = $extra < $c->port ? $extra : $c->port;
    my $self;
    ok($c->wait_for(sub { $self = status($c)->{cluster}{this_server}; defined $self }, 30),
       'C answers with its id');
    is($self, hostname() . ":$low", "C's id: the host and its lowest port ($low)");
    ok($a->wait_for(sub { grep { $_->{server} eq hostname() . ":$low" }
                          @{status($a)->{cluster}{servers} // []} }, 30),
       'A lists C under that id');
    $c->stop;

    # Another server's report under A's id (another start token): A's reporter sees it
    # before its next write and says so.
    $a->expect_log(qr/SSE0724: another server reports to Redis/);
    my $now_ms = int(time * 1000);
    my $fake = qq({"server":"$id{a}","token":"another-start","time_ms":$now_ms,"subscribers":0,)
             . qq("socket_clients":0,"channels":{},"truncated":false});
    is($redis->cli('SET', "sse:server:$id{a}", $fake, 'PX', 6000), 'OK', 'a report of A\'s id, another token');
    ok($a->wait_for(sub { $a->log_text =~ /SSE0724: .*"\Q$id{a}\E" \(its start token another-start/ }, 30),
       'A logs SSE0724 (warning), naming the other token');
    my $n = () = $a->log_text =~ /SSE0724/g;
    is($n, 1, 'once');
};

subtest 'a server killed with kill -9 drops out of the counts' => sub {
    my $sb = $b->subscribe('/events/news');
    ok($a->wait_for(sub { (figures($a, 'news')->{cluster}{subscribers} // 0) == 1 }, 30),
       'B\'s subscriber counted on A');
    # The bound is the report key's TTL: checked on Redis, not by the clock.
    my $ttl = $redis->cli('PTTL', "sse:server:$id{b}");
    ok($ttl > 0 && $ttl <= 6000, "B's report expires within 6 s of its last write (PTTL $ttl)");
    my @pids = ($b->{pid}, $b->children);
    ok(@pids >= 2, "B's processes: @pids");
    kill 'KILL', @pids;
    ok($b->wait_for(sub { !grep { kill 0, $_ } @pids }, 10), 'all of them gone');
    my %p;
    ok($a->wait_for(sub { %p = map { $_->{server} => 1 } @{status($a)->{cluster}{servers} // []};
                          !$p{$id{b}} && $p{$id{a}} }, 30),
       'B is no longer in A\'s figures (6 s after its last report; waited for, at most 30 s)');
    # Each child keeps what it read for 1 s: waited for.
    ok($a->wait_for(sub { (figures($a, 'news')->{cluster}{subscribers} // -1) == 0 }, 10),
       'nor in the channel\'s total');
    $sb->close;
};
$b->stop;

# Stopped (SIGSTOP): connecting works, the commands get no answer, so the read's deadline is
# what ends the wait.
subtest 'Redis stopped: this server\'s figures, marked' => sub {
    my $s = $a->subscribe('/events/news');
    ok($a->wait_for(sub { (figures($a, 'news')->{subscribers} // 0) == 1 }, 10), 'subscribed');
    my $reads_before = () = $a->log_text =~ /SSE0722/g;
    $redis->pause;
    # A child answers from what it read for 1 s: the mark comes at its next read.
    my ($r, $f, $took) = ({}, {});
    ok($a->wait_for(sub {
            my $t0 = time;
            $r = $a->request(GET => '/publish/news');
            $took = time - $t0;
            $f = SSETest::json_decode($r->{body}) // {};
            defined $f->{cluster}{available} && !$f->{cluster}{available} }, 30),
       'GET news: the group\'s figures marked unavailable');
    is($r->{status}, 200, 'GET news: 200');
    is($f->{subscribers}, 1, 'with this server\'s figure');
    like($f->{cluster}{error}, qr/cannot be read from Redis/, 'saying why');
    # Far above the design's 300 ms: catches a read without a deadline, not a slow one.
    cmp_ok($took, '<', 20, sprintf('answered without waiting for Redis (%.2f s; the test\'s bound: 20 s)', $took));
    my $st;
    ok($a->wait_for(sub { $st = status($a); defined $st->{cluster}{available} && !$st->{cluster}{available} }, 30),
       'sse-status: marked too');
    is($st->{subscribers}, 1, 'with this server\'s figures');

    # Many GETs while Redis is stopped: each child tries Redis at most once a second (each
    # try is an SSE0722 line with its pid), answering the others from the failed read. First
    # past the cache's life (1 s): a child that read Redis just before the stop answers from
    # that read until then (figures up to 3 s old, as documented), not marked.
    sleep 2;
    my $gets = 30;
    my $t0 = time;
    my $marked = 0;
    for (1 .. $gets) {
        my $g = SSETest::json_decode($a->request(GET => '/publish/news')->{body}) // {};
        if (defined $g->{cluster}{available} && !$g->{cluster}{available}) { $marked++ }
        else { diag explain $g }
    }
    my $elapsed = time - $t0;
    is($marked, $gets, "all $gets GETs answered available: false");
    my @lines = grep { /SSE0722/ } split /\n/, $a->log_text;
    splice @lines, 0, $reads_before;
    my %reads;
    $reads{$_}++ for map { /\[pid (\d+)/ ? $1 : 'unknown' } @lines;
    my $most = max(0, values %reads);
    my $bound = int($elapsed) + 2; # one read at the start, then one per second at most
    cmp_ok($most, '<=', $bound, sprintf('at most one read of Redis a second per child '
           . '(%d reads by the busiest child in %.1f s, %d GETs)', $most, $elapsed, $gets));
    $redis->resume;
    ok($a->wait_for(sub { status($a)->{cluster}{available} }, 30), 'available again once Redis is back');
    ok($a->wait_for(sub { (figures($a, 'news')->{cluster}{subscribers} // 0) == 1 }, 30),
       'and the figures are read again (the cache converges)');
    $s->close;
};

subtest 'without SSERedis: no cluster member' => sub {
    my $alone = SSETest::Server->start;
    $alone->publish('/publish/solo', 'x');
    ok(!exists status($alone)->{cluster}, 'sse-status');
    ok(!exists figures($alone, 'solo')->{cluster}, 'GET of a channel');
    $alone->stop;
};

$a->stop;
$redis->stop;
done_testing;
