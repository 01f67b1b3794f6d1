# SSERedis: a resume on a server whose bus does not hold the client's id is served from Redis
# (docs/redis.md, "Resume on another server"). Server B starts after events were published
# on A, so its bus never had them:
# - a client resuming on B with the id of an event of A gets exactly the events after it, in
#   order, with A's ids, no duplicates, no sse-missed, then live events; other channels'
#   events in between are not sent; only/except reach the right clients;
# - a publisher's id (not an entry id) is found too;
# - an unknown id, and an id older than SSEHistory's count allows, get sse-missed;
# - Redis stopped (SIGSTOP) during a resume: sse-missed within the bound, the stream stays
#   open, and delivers once Redis is back (SIGCONT).
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;
use Time::HiRes qw(sleep time);

my $redis = SSETest::Redis->start(appendonly => 0);
my $url = $redis->url;
my $conf = SSETest::Redis::server_conf(who => 1);
my $global = "SSERedis $url\nSSEHistory 8 3600\nLogLevel warn sse:info\n";
my $redis_at = qr/Redis at redis:\/\/127\.0\.0\.1:\d+\/0/;
my @outage = (qr/SSE0703: lost $redis_at/);
my $a = SSETest::Server->start(global => $global, conf => $conf);
$a->expect_log(@outage);
ok(SSETest::Redis->wait_joined($a, $a), 'A reads the stream');

sub datas { map { $_->{event} eq 'sse-missed' ? '<missed>' : $_->{data} } @_ }

sub published {
    my ($path, $data) = @_;
    my $r = $a->publish($path, $data);
    is($r->{status}, 201, "$data published on A");
    return $r->{json}{id};
}

# On A, before B exists: news with another channel's events in between, targeted events, a
# publisher's id; and more events on one channel than SSEHistory's count (8).
my %id;
$id{$_->[1]} = published(@$_) for ['/publish/news', 'n1'], ['/publish/sport', 's1'],
    ['/publish/news', 'n2'], ['/publish/news?only=alice', 'n3'],
    ['/publish/news?except=alice', 'n4'], ['/publish/sport', 's2'],
    ['/publish/news?id=pub-5', 'n5'], ['/publish/news', 'n6'];
is($id{n5}, 'pub-5', "the publisher's id");
like($id{n1}, qr/^\d+-\d+$/, 'the others: entry ids');
$id{$_} = published('/publish/many', $_) for map { "m$_" } 1 .. 12;

my $b = SSETest::Server->start(global => $global, conf => $conf);
$b->expect_log(@outage);
ok(SSETest::Redis->wait_joined($a, $a, $b), 'B reads the stream (from after those events)');
my $on_a = $a->subscribe('/events/news', headers => {'Last-Event-ID' => $id{n1}});
is_deeply([datas($on_a->events(4, 10))], [qw(n2 n4 n5 n6)], "A's own bus: the reference resume");
$on_a->close;

subtest 'an entry id of A resumed on B: exactly the rest, then live' => sub {
    my $r = $b->subscribe('/events/news', headers => {'Last-Event-ID' => $id{n1}});
    my @got = $r->events(4, 10);
    is_deeply([datas(@got)], [qw(n2 n4 n5 n6)], 'the rest of news, other channels and alice\'s left out');
    is_deeply([map { $_->{id} } @got], [@id{qw(n2 n4 n5 n6)}], "with A's ids");
    is($b->publish('/publish/news', 'n7')->{status}, 201, 'n7 published on B');
    is_deeply([datas($r->events(1, 10))], ['n7'], 'then live');
    is(scalar($r->events(1, 1)), 0, 'nothing more: no duplicate');
    $r->close;
    like($b->log_text, qr/SSE0730: resume after "\Q$id{n1}\E" served from Redis: \d+ entries up to \d+-\d+/,
         'SSE0730 on B');
};

subtest 'only/except: each client its own events' => sub {
    my %want = (alice => [qw(n2 n3 n5 n6 n7)], bob => [qw(n2 n4 n5 n6 n7)]);
    for my $who (sort keys %want) {
        my $r = $b->subscribe('/who/news', headers => {'Last-Event-ID' => $id{n1}, 'X-Client-Id' => $who});
        is_deeply([datas($r->events(5, 10))], $want{$who}, "$who: its events");
        is(scalar($r->events(1, 1)), 0, "$who: nothing more");
        $r->close;
    }
};

subtest "a publisher's id" => sub {
    my $r = $b->subscribe('/events/news', headers => {'Last-Event-ID' => 'pub-5'});
    is_deeply([datas($r->events(2, 10))], [qw(n6 n7)], 'the events after it');
    is(scalar($r->events(1, 1)), 0, 'nothing more');
    $r->close;
};

subtest 'unknown ids, and one older than SSEHistory allows: sse-missed' => sub {
    for my $unknown ('nope', '1-0', '99999999999999-0') {
        my $r = $b->subscribe('/events/news', headers => {'Last-Event-ID' => $unknown});
        is_deeply([datas($r->events(2, 10))], ['<missed>', 'n7'],
                  "\"$unknown\": sse-missed, then what B's bus holds");
        is(scalar($r->events(1, 1)), 0, 'nothing more');
        $r->close;
    }
    like($b->log_text, qr/SSE0731: resume after "nope" not served from Redis \(not in the \d+ entries read back from \d+-\d+\)/,
         'SSE0731 says why');
    my $r = $b->subscribe('/events/many', headers => {'Last-Event-ID' => $id{m1}});
    is_deeply([datas($r->events(9, 10))], ['<missed>', map { "m$_" } 5 .. 12],
              'm1 (12 after it, SSEHistory 8): sse-missed, then the newest 8');
    is(scalar($r->events(1, 1)), 0, 'nothing more');
    $r->close;
};

subtest 'Redis stopped during a resume: sse-missed within the bound, the stream stays' => sub {
    $redis->pause;
    my $t0 = time;
    my $r = $b->subscribe('/events/news', headers => {'Last-Event-ID' => $id{n2}});
    my @first = $r->events(2, 10);
    my $took = time - $t0;
    is_deeply([datas(@first)], ['<missed>', 'n7'], "sse-missed, then what B's bus holds");
    # The bound is 0.5 s; far above it here so that load cannot fail it: no resume waits
    # for Redis to come back.
    cmp_ok($took, '<', 5, sprintf('answered while Redis is stopped (%.2f s)', $took));
    my $comments = scalar(() = $r->comments);
    ok($r->read_until(sub { scalar(() = $r->comments) > $comments }, 5), 'keep-alives go on');
    ok(!$r->closed, 'the stream is open');
    $redis->resume;
    like($b->log_text, qr/SSE0731: resume after "\Q$id{n2}\E" not served from Redis/, 'SSE0731 on B');
    ok(defined SSETest::Redis->publish_when_back($a, '/publish/news', 'n8'), 'n8 published after SIGCONT');
    $r->read_until(sub { grep { $_->{data} eq 'n8' } $r->all_events }, 15);
    is_deeply([datas($r->events(0, 0))], ['n8'], 'delivered once');
    $r->close;
    my $again = $b->subscribe('/events/news', headers => {'Last-Event-ID' => $id{n2}});
    is_deeply([datas($again->events(5, 15))], [qw(n4 n5 n6 n7 n8)], 'Redis back: served from it again');
    $again->close;
};

$_->stop for $a, $b;
$redis->stop;
done_testing;
