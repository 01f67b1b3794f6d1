# SSERedis: what a reader does when the stream's history has a hole, and what open streams and
# resuming clients are told (docs/redis.md). Two httpd servers on one Redis without persistence:
# - entries trimmed away while B's reader was stopped: B logs SSE0711; B's open streams (HTTP,
#   and a subscriber of B's publish socket) get one sse-missed at the gap, then the next
#   events; a client resuming on B from before gets one sse-missed with what B holds after its
#   id (over HTTP and over the socket), one from after gets none;
# - Redis stopped (SIGSTOP) for 5 s: publishes refused with 503 within the bound, streams get
#   their keep-alives, the reader's last read ages in sse-status, delivery resumes after;
# - Redis restarted without its data: both readers log SSE0710 and read the new stream from its
#   start; the open streams get sse-missed once; a client resuming from before gets it once and
#   nothing from before again; new
#   publishes flow on both servers, once, httpd not restarted.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;
use Time::HiRes qw(sleep time);

my $redis = SSETest::Redis->start(appendonly => 0);
my $url = $redis->url;
my $conf = SSETest::Redis::server_conf();
my $a = SSETest::Server->start(global => "SSERedis $url\nSSEPublishSocket pub.sock\n", conf => $conf);
my $b = SSETest::Server->start(global => "SSERedis $url\nSSEPublishSocket pub.sock\n", conf => $conf);
my $redis_at = qr/Redis at redis:\/\/127\.0\.0\.1:\d+\/0/;
$_->expect_log(qr/SSE0701: $redis_at did not accept a publish/, qr/SSE0703: lost $redis_at/,
               qr/SSE0710: $redis_at lost the history of sse:stream/,
               qr/SSE0712: the epoch key of sse:stream in $redis_at was replaced, but the stream still holds entry \d+-\d+/,
               qr/SSE0713: the epoch key sse:epoch in $redis_at holds a value no server wrote \((80|0) bytes, not 32 hex digits\)/) for $a, $b;
$b->expect_log(qr/SSE0711: entries of sse:stream after \d+-\d+ were trimmed before this server read them \(the oldest left: (\d+-\d+|none)\)/);

sub status { SSETest::json_decode($_[0]->request(GET => '/sse-status')->{body})->{redis} }

sub datas { map { $_->{event} eq 'sse-missed' ? '<missed>' : $_->{data} } @_ }
# The reasons of the sse-missed notices among the events.
sub reasons {
    map { (SSETest::json_decode($_->{data}) // {})->{reason} // '?' }
    grep { $_->{event} eq 'sse-missed' } @_
}

ok(SSETest::Redis->wait_joined($a, $a, $b), 'A and B read the stream');

subtest 'entries trimmed while B\'s reader was stopped: sse-missed on B' => sub {
    my $live = $b->subscribe('/events/trim');
    my $sock = $b->subscribe_socket('trim');
    my $p1 = $a->publish('/publish/trim', 'p1')->{json}{id};
    is_deeply([datas($live->events(1, 10))], ['p1'], 'B got p1');
    is_deeply([datas($sock->events(1, 10))], ['p1'], "and B's socket subscriber");
    my $daemon = $b->socket_daemon;
    ok($daemon, "B's sse-publishd") or return;
    kill 'STOP', $daemon;
    # Redis answers the stopped reader's XREAD with p2; p3 to p5 are then trimmed away.
    my @ids = map { $a->publish('/publish/trim', "p$_")->{json}{id} } 2 .. 5;
    is(scalar(grep { defined } @ids), 4, 'p2 to p5 accepted meanwhile');
    # Its last read ages while it is stopped (the test's bound: more than 1.5 s old).
    ok($b->wait_for(sub { (status($b)->{last_read_age_ms} // 0) > 1500 }, 10),
       "sse-status on B: the stopped reader's last read ages")
        or diag explain status($b);
    $redis->cli('XTRIM', 'sse:stream', 'MAXLEN', '0');
    is($redis->cli('XLEN', 'sse:stream'), '0', 'the stream trimmed to nothing');
    my $p6 = $a->publish('/publish/trim', 'p6')->{json}{id};
    kill 'CONT', $daemon;
    ok($b->wait_for(sub { $b->log_text =~ /SSE0711/ }, 15), 'B logs SSE0711');
    # p2 comes only if the stopped reader's XREAD was still waiting when p2 was published
    # (it may have timed out first): either way the gap's notice, once, then p6.
    for my $sub ($live, $sock) {
        $sub->read_until(sub { grep { $_->{data} eq 'p6' } $sub->all_events }, 15);
    }
    my @live = $live->events(0, 0);
    my @got = datas(@live);
    ok(join(',', @got) eq '<missed>,p6' || join(',', @got) eq 'p2,<missed>,p6',
       'the open stream: sse-missed once at the gap, then the next events, in order')
        or diag explain \@got;
    is_deeply([reasons(@live)], ['lost'], 'its reason: lost');
    is_deeply([datas($sock->events(0, 0))], \@got, 'the socket subscriber: the same');
    ok($b->wait_for(sub { (status($b)->{last_read_age_ms} // 1e9) < 5000 }, 10),
       'the resumed reader reads again (sse-status)');

    my @held = grep { $_ ne '<missed>' } @got;
    my $before = $b->subscribe('/events/trim', headers => {'Last-Event-ID' => $p1});
    my @resumed = $before->events(@held + 1, 10);
    is_deeply([datas(@resumed)], ['<missed>', @held],
              'resumed from before the gap: one sse-missed, then what B holds after the id');
    is_deeply([reasons(@resumed)], ['unknown-last-event-id'], 'its reason');
    is(scalar($before->events(1, 1)), 0, 'nothing more');
    my $sock_before = $b->subscribe_socket('trim', last_event_id => $p1);
    is_deeply([datas($sock_before->events(@held + 1, 10))], ['<missed>', @held],
              'the same through the publish socket');
    is(scalar($sock_before->events(1, 1)), 0, 'nothing more');
    my $after = $b->subscribe('/events/trim', headers => {'Last-Event-ID' => $p6});
    is(scalar($after->events(1, 2)), 0, 'resumed from after the gap: nothing, no notice');
    my $sock_after = $b->subscribe_socket('trim', last_event_id => $p6);
    is(scalar($sock_after->events(1, 2)), 0, 'the same through the publish socket');
    is($a->publish('/publish/trim', 'p7')->{status}, 201, 'p7 published');
    for my $sub ($after, $sock_after, $live, $before, $sock_before) {
        is_deeply([datas($sub->events(1, 10))], ['p7'], 'then live: p7 alone');
    }
    $_->close for $live, $sock, $before, $sock_before, $after, $sock_after;
    is_deeply([datas($a->subscribe('/events/trim', headers => {'Last-Event-ID' => $p1})->events(6, 10))],
              ['p2', 'p3', 'p4', 'p5', 'p6', 'p7'], 'on A (no gap): the resume is whole, no notice');
};

subtest 'Redis stopped for 5 s: 503s within the bound, streams stay, delivery resumes' => sub {
    my $sa = $a->subscribe('/events/stop');
    my $sb = $b->subscribe('/events/stop');
    is($a->publish('/publish/stop', 'before')->{status}, 201, 'accepted before');
    is_deeply([datas($sb->events(1, 10))], ['before'], 'B got it');
    is_deeply([datas($sa->events(1, 10))], ['before'], 'A too');
    my @comments = map { scalar(() = $_->comments) } $sa, $sb;
    $redis->pause;
    my $end = time + 5;
    my (@status, $slowest);
    while (time < $end) {
        my $t0 = time;
        push @status, $b->publish('/publish/stop', 'while stopped')->{status};
        my $took = time - $t0;
        $slowest = $took if !defined $slowest || $took > $slowest;
        sleep 0.3;
    }
    # What the streams got while Redis was stopped (SSEKeepalive 1: about five each).
    my $kept = 1;
    for my $i (0, 1) {
        my $sub = ($sa, $sb)[$i];
        $kept = 0 unless $sub->read_until(sub { scalar(() = $sub->comments) >= $comments[$i] + 2 }, 2);
    }
    ok($kept, 'both streams got keep-alives during the stop');
    ok(!$sa->closed && !$sb->closed, 'both streams are open');
    $redis->resume;
    ok(@status >= 2 && !(grep { $_ != 503 } @status), scalar(@status) . ' publishes during the stop: each 503');
    # Far above the 0.9 s design bound, so that load cannot fail it: no publish waits for Redis.
    cmp_ok($slowest, '<', 5, sprintf('each answered, none held until Redis returned (slowest %.2f s)', $slowest));
    ok(defined SSETest::Redis->publish_when_back($a, '/publish/stop', 'after'), 'accepted again after SIGCONT');
    for my $sub ($sa, $sb) {
        $sub->read_until(sub { grep { $_->{data} eq 'after' } $sub->all_events }, 15);
        my @got = datas($sub->events(0, 0));
        is(scalar(grep { $_ eq 'after' } @got), 1, 'delivered once');
        ok(!(grep { !/^(while stopped|after)$/ } @got), 'nothing else (a refused XADD may yet run)')
            or diag explain \@got;
    }
    $_->close for $sa, $sb;
};

subtest 'Redis restarted without its data: sse-missed, no repeats, new publishes flow' => sub {
    my $sa = $a->subscribe('/events/loss');
    my $sb = $b->subscribe('/events/loss');
    my @ids = map { $a->publish('/publish/loss', "old$_")->{json}{id} } 1 .. 3;
    is_deeply([datas($sb->events(3, 10))], ['old1', 'old2', 'old3'], 'B got the old events');
    is_deeply([datas($sa->events(3, 10))], ['old1', 'old2', 'old3'], 'A too');
    $redis->kill9;
    $redis->launch;
    is($redis->cli('EXISTS', 'sse:stream'), '0', 'Redis came back empty');
    my $new = SSETest::Redis->publish_when_back($a, '/publish/loss', 'new1');
    ok(defined $new, 'a publish is accepted again');
    for my $s ($a, $b) {
        ok($s->wait_for(sub { $s->log_text =~ /SSE0710/ }, 15), 'SSE0710 logged');
    }
    for my $sub ($sa, $sb) {
        $sub->read_until(sub { grep { $_->{data} eq 'new1' } $sub->all_events }, 15);
        my @got = $sub->events(0, 0);
        is_deeply([datas(@got)], ['<missed>', 'new1'],
                  'the open stream: sse-missed once at the loss, then the new event, once');
        is_deeply([reasons(@got)], ['lost'], 'its reason: lost');
    }
    my $r = $b->subscribe('/events/loss', headers => {'Last-Event-ID' => $ids[1]});
    is_deeply([datas($r->events(3, 10))], ['<missed>', 'old3', 'new1'],
              'resumed on B from before the loss: one sse-missed, then the rest, once');
    is(scalar($r->events(1, 1)), 0, 'nothing more');
    is($b->publish('/publish/loss', 'new2')->{status}, 201, 'published on B');
    for my $sub ($sa, $sb, $r) {
        is_deeply([datas($sub->events(1, 10))], ['new2'], 'delivered, once');
    }
    my $again = $a->subscribe('/events/loss', headers => {'Last-Event-ID' => $new});
    is_deeply([datas($again->events(1, 10))], ['new2'], 'resumed from after the loss: no notice');
    $_->close for $sa, $sb, $r, $again;
    is(() = $b->log_text =~ /SSE0710/g, 1, 'one SSE0710 line on B');
};

subtest 'the epoch key deleted after a reconnect, the stream intact: nothing again, no notice' => sub {
    my $sa = $a->subscribe('/events/epoch');
    my $sb = $b->subscribe('/events/epoch');
    my $e1 = $a->publish('/publish/epoch', 'e1')->{json}{id};
    is_deeply([datas($_->events(1, 10))], ['e1'], 'e1 delivered') for $sa, $sb;
    my @up = map { scalar(() = $_->log_text =~ /SSE0704/g) } $a, $b;
    my @lost = map { scalar(() = $_->log_text =~ /SSE0710/g) } $a, $b;
    $redis->cli('CLIENT', 'KILL', 'TYPE', 'normal');
    for my $i (0, 1) {
        my $s = ($a, $b)[$i];
        ok($s->wait_for(sub { scalar(() = $s->log_text =~ /SSE0704/g) > $up[$i] }, 15),
           'the reader reconnected (SSE0704)');
    }
    is($redis->cli('DEL', 'sse:epoch'), '1', 'the epoch key deleted');
    ok(defined SSETest::Redis->publish_when_back($a, '/publish/epoch', 'e2'), 'e2 published');
    for my $sub ($sa, $sb) {
        $sub->read_until(sub { grep { $_->{data} eq 'e2' } $sub->all_events }, 15);
        is_deeply([datas($sub->events(0, 0))], ['e2'], 'the live stream: e2 once, nothing again')
            or diag explain [datas($sub->all_events)];
    }
    for my $i (0, 1) {
        my $s = ($a, $b)[$i];
        ok($s->wait_for(sub { $s->log_text =~ /SSE0712/ }, 15), 'SSE0712 logged');
        is(scalar(() = $s->log_text =~ /SSE0710/g), $lost[$i], 'no SSE0710');
    }
    my $r = $b->subscribe('/events/epoch', headers => {'Last-Event-ID' => $e1});
    is_deeply([datas($r->events(1, 10))], ['e2'], 'resumed from e1: e2, no sse-missed');
    is(scalar($r->events(1, 1)), 0, 'nothing more');
    $_->close for $sa, $sb, $r;
};

subtest 'the epoch key set by someone else: delivery goes on, one line' => sub {
    my $sa = $a->subscribe('/events/foreign');
    my $sb = $b->subscribe('/events/foreign');
    my @lost = map { scalar(() = $_->log_text =~ /SSE0710/g) } $a, $b;
    my @marked;
    for my $value ('x' x 80, '') {
        is($redis->cli('SET', 'sse:epoch', $value), 'OK', 'the epoch key holds ' . length($value) . ' bytes');
        my $data = 'f' . length($value);
        ok(defined SSETest::Redis->publish_when_back($a, '/publish/foreign', $data), "$data published");
        for my $sub ($sa, $sb) {
            $sub->read_until(sub { grep { $_->{data} eq $data } $sub->all_events }, 15);
            is_deeply([datas($sub->events(0, 0))], [$data], "$data delivered once")
                or diag explain [datas($sub->all_events)];
        }
        push @marked, $a->publish('/publish/foreign', "after-$data")->{json}{id};
        for my $sub ($sa, $sb) {
            $sub->read_until(sub { grep { $_->{data} eq "after-$data" } $sub->all_events }, 15);
            $sub->events(0, 0);
        }
    }
    for my $i (0, 1) {
        my $s = ($a, $b)[$i];
        is(scalar(() = $s->log_text =~ /SSE0713/g), 1, 'one SSE0713 for both foreign values');
        is(scalar(() = $s->log_text =~ /SSE0710/g), $lost[$i], 'no SSE0710: no gap, nothing dropped');
    }
    my $r = $b->subscribe('/events/foreign', headers => {'Last-Event-ID' => $marked[0]});
    is_deeply([datas($r->events(2, 10))], ['f0', 'after-f0'], 'resume across them: no sse-missed');
    is($redis->cli('DEL', 'sse:epoch'), '1', 'the foreign value deleted: a server sets an epoch again');
    ok(defined SSETest::Redis->publish_when_back($a, '/publish/foreign', 'g'), 'g published');
    $sb->read_until(sub { grep { $_->{data} eq 'g' } $sb->all_events }, 15);
    ok(scalar(grep { $_->{data} eq 'g' } $sb->all_events), 'g delivered');
    $_->close for $sa, $sb, $r;
};

$_->stop for $a, $b;
$redis->stop;
done_testing;
