# SSERedis, presence from every server (docs/redis.md, "Presence from every server"): two
# httpd servers on one Redis. A presence subscriber on either server gets the connect,
# reconnect and disconnect records of both servers' clients, each once, with the data its
# own server wrote; with Redis stopped (SIGSTOP) connects still open and a server's own
# presence subscribers still get them, the other server once Redis is back; entries of the
# kind "presence" that are stale or malformed are dropped or skipped.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;
use Time::HiRes qw(sleep time);

my $redis = SSETest::Redis->start;
# A watcher reads the presence channel and "sync": a publish on sync comes through Redis to
# both servers in the stream's order, so once a watcher has it, every presence entry added
# to the stream before it has reached that watcher (or never will).
my $conf = <<'EOF';
<Location /watch>
    SetHandler sse-subscribe
    SSEPresenceSubscribe on
    SSEClientId %{req:X-Client-Id} unauthenticated
</Location>
<Location /events>
    SSEClientId %{req:X-Client-Id} unauthenticated
</Location>
EOF
# sse:info: SSE0743 (stale connects dropped) is asked about.
my $global = "SSERedis " . $redis->url . "\nSSEPresenceChannel presence\nLogLevel warn sse:info\n";
my $a = SSETest::Server->start(global => $global, conf => $conf);
my $b = SSETest::Server->start(global => $global, conf => $conf);
# Redis stopped: the readers' outage line.
$_->expect_log(qr/SSE0703: lost Redis at /) for $a, $b;
ok(SSETest::Redis->wait_joined($a, $a, $b) && SSETest::Redis->wait_joined($b, $a, $b),
   'A and B read the stream');

my %watch = map { my $s = $_ eq 'a' ? $a : $b;
                  ($_ => $s->subscribe('/watch/presence,sync', headers => {'X-Client-Id' => "watcher-$_"})) }
            qw(a b);
for my $w (values %watch) {
    ok($w->read_until(sub { scalar $w->comments }, 10), 'watching presence');
}

# The presence records of $client a watcher got, in order: [type, data, id] each.
sub records {
    my ($w, $client) = @_;
    return map { [$_->{event}, $_->{data}, $_->{id}] }
           grep { $_->{event} ne 'message'
                  && (SSETest::json_decode($_->{data})->{client} // '') eq $client } $w->all_events;
}
sub types { my ($w, $client) = @_; [map { $_->[0] } records($w, $client)] }

# Waits until watcher $w has $n records of $client.
sub seen {
    my ($w, $client, $n) = @_;
    return $w->read_until(sub { records($w, $client) >= $n }, 20);
}

# Publishes $tag on sync from $from; every watcher reads up to it.
sub sync {
    my ($from, $tag) = @_;
    is($from->publish('/publish/sync', $tag)->{status}, 201, "$tag published");
    for my $name (sort keys %watch) {
        my $w = $watch{$name};
        ok($w->read_until(sub { grep { $_->{data} eq $tag } $w->all_events }, 20),
           "watcher on \U$name\E reached $tag");
    }
}

# XADDs Redis ran so far (INFO commandstats).
sub xadds { ($redis->cli('INFO', 'commandstats') =~ /cmdstat_xadd:calls=(\d+)/)[0] // 0 }

subtest 'each server\'s clients seen on both, once each, with the same data' => sub {
    # The watchers' own records (they read a channel besides presence, so they are announced)
    # have crossed before the XADDs are counted.
    ok(seen($watch{b}, 'watcher-a', 1) && seen($watch{a}, 'watcher-b', 1), 'the watchers seen across');
    my $xadds_before = xadds();
    my $amy = $a->subscribe('/events/lobby', headers => {'X-Client-Id' => 'amy'});
    ok(seen($watch{$_}, 'amy', 1), "\U$_\E's watcher sees amy connect on A") for qw(a b);
    my $bob = $b->subscribe('/events/lobby,hall', headers => {'X-Client-Id' => 'bob'});
    ok(seen($watch{$_}, 'bob', 1), "\U$_\E's watcher sees bob connect on B") for qw(a b);
    $amy->close;
    $bob->close;
    ok(seen($watch{$_}, 'amy', 2) && seen($watch{$_}, 'bob', 2), "\U$_\E's watcher sees both leave")
        for qw(a b);
    # amy comes back on B with the id of an event: a reconnect.
    my $again = $b->subscribe('/events/lobby', headers => {'X-Client-Id' => 'amy', 'Last-Event-ID' => '1-0'});
    ok(seen($watch{$_}, 'amy', 3), "\U$_\E's watcher sees amy reconnect on B") for qw(a b);
    $again->close;
    ok(seen($watch{$_}, 'amy', 4), "\U$_\E's watcher sees amy leave B") for qw(a b);

    # Every record has reached the other server, so each entry is in the stream before sync.
    sync($a, 'sync-1');
    # Six records and the sync publish; one more only if an XADD's answer timed out (sent again).
    my $xadds = xadds() - $xadds_before;
    ok($xadds >= 7 && $xadds <= 8, "one XADD per record ($xadds for 6 records and 1 publish)");
    for my $name (qw(a b)) {
        is_deeply(types($watch{$name}, 'amy'), [qw(connect disconnect reconnect disconnect)],
                  "\U$name\E: amy's records, once each, in order");
        is_deeply(types($watch{$name}, 'bob'), [qw(connect disconnect)],
                  "\U$name\E: bob's records, once each");
    }
    for my $client (qw(amy bob)) {
        is_deeply([map { $_->[1] } records($watch{a}, $client)],
                  [map { $_->[1] } records($watch{b}, $client)],
                  "$client\'s records carry the same data on both servers");
    }
    my ($local, $remote) = ((records($watch{a}, 'amy'))[0], (records($watch{b}, 'amy'))[0]);
    like($local->[2], qr/^\d+$/, 'on its own server, a record\'s id is the bus\'s');
    like($remote->[2], qr/^\d+-\d+$/, 'on the other, the Redis entry\'s');
    my $data = SSETest::json_decode($remote->[1]);
    is_deeply($data->{channels}, ['lobby'], 'the data as A wrote it: channels');
    is($data->{remote}, '127.0.0.1', 'remote address');
    is_deeply(SSETest::json_decode((records($watch{a}, 'bob'))[0][1])->{channels}, ['lobby', 'hall'],
              'bob\'s channels on A, as B wrote them');
};

subtest 'Redis stopped: connects do not wait, the own server\'s watcher gets them' => sub {
    $redis->pause;
    my @clients = map { "carl$_" } 1 .. 5;
    my $t0 = time;
    my @subs;
    for my $c (@clients) {
        my $s = $a->subscribe('/events/lobby', headers => {'X-Client-Id' => $c});
        ok($s->read_until(sub { scalar $s->comments }, 20) && $s->status == 200,
           "$c connected to A while Redis is stopped");
        push @subs, $s;
    }
    my $took = time - $t0;
    ok(seen($watch{a}, $_, 1), "A's watcher sees $_ connect") for @clients;
    $_->close for @subs;
    ok(seen($watch{a}, $_, 2), "and leave") for @clients;
    # Nothing crosses a stopped Redis: B's watcher cannot have them yet (what it has read
    # in a second).
    $watch{b}->pump(1);
    is(scalar(grep { records($watch{b}, $_) } @clients), 0, 'B has none of them yet');
    diag(sprintf('5 connects to A with Redis stopped took %.2f s in all (each record '
                 . 'through Redis would wait up to 0.9 s)', $took));
    ok($a->wait_for(sub { $a->log_text =~ /SSE0740: cannot send this server's presence records/ }, 20),
       'A says it cannot send its presence records (SSE0740)');
    $redis->resume;
    ok(seen($watch{b}, $_, 2), "after Redis is back, B's watcher sees $_ connect and leave")
        for @clients;
    ok($a->wait_for(sub { $a->log_text =~ /SSE0741: sending this server's presence records to Redis again/ }, 30),
       'and A says it sends them again (SSE0741)');
    sync($b, 'sync-2');
    for my $name (qw(a b)) {
        is_deeply(types($watch{$name}, $_), [qw(connect disconnect)], "\U$name\E: $_ once each")
            for @clients;
    }
};

subtest 'entries of kind presence: stale connects dropped, malformed ones skipped' => sub {
    $_->expect_log(qr/SSE0705: skipped Redis entry \S+ of sse:stream: a presence record without its server and token/)
        for $a, $b;
    my $now = int(time * 1000);
    my $seq = 0;
    my $add = sub {
        my ($type, $client, $time, $channel, @from) = @_;
        my $data = qq({"channel_count":1,"channels":["lobby"],"client":"$client","remote":null,"time":$time});
        return $redis->cli('XADD', 'sse:stream', '*', kind => 'presence', channels => $channel,
                           event => $type, data => $data, time => $time, seq => ++$seq, @from);
    };
    my @from = (server => 'elsewhere:1', token => 'x');
    like($add->('connect', 'old', $now - 120_000, 'presence', @from), qr/^\d+-\d+$/,
         'a connect of 2 minutes ago');
    like($add->('disconnect', 'old', $now - 120_000, 'presence', @from), qr/^\d+-\d+$/, 'its disconnect');
    like($add->('connect', 'nobody', $now, 'presence'), qr/^\d+-\d+$/, 'a connect without server nor token');
    like($add->('connect', 'new', $now, 'presence', @from), qr/^\d+-\d+$/, 'a fresh connect');
    $seq--;
    like($add->('connect', 'again', $now, 'presence', @from), qr/^\d+-\d+$/,
         'one with the seq of the one before (sent again)');
    like($add->('connect', 'other', $now, 'not-presence', @from), qr/^\d+-\d+$/,
         'a connect on another channel');
    sync($a, 'sync-3');
    for my $name (qw(a b)) {
        my $w = $watch{$name};
        is_deeply(types($w, 'old'), ['disconnect'], "\U$name\E: the stale connect dropped, its disconnect delivered");
        is_deeply(types($w, 'new'), ['connect'], "\U$name\E: the fresh connect delivered");
        is_deeply(types($w, 'nobody'), [], "\U$name\E: the malformed one skipped");
        is_deeply(types($w, 'again'), [], "\U$name\E: the one sent again skipped");
        is_deeply(types($w, 'other'), [], "\U$name\E: another channel's left out");
    }
    for my $srv ($a, $b) {
        ok($srv->wait_for(sub { $srv->log_text =~ /SSE0743: 1 presence connects of other servers dropped as older than 30 s .*from elsewhere:1/ }, 10),
           'SSE0743 says so');
    }
};

$_->close for values %watch;
$_->stop for $a, $b;
$redis->stop;
done_testing;
