# The channel table against one anonymous client (security finding 2), through a real httpd
# with a small table (SSEMaxChannels 200, so the share of channels only subscribers named is
# the default half: 100):
# - a channel closed with DELETE answers 204 however many fresh channels come and go (the
#   least-recently-used rule dropped it, and it answered 200 again);
# - a client holding streams on made-up names takes at most the share: it is then refused
#   (503, a JSON body naming SSEMaxUnpublishedChannels, SSE0150 logged, not once per refusal),
#   while publishers' channels keep working and a victim subscribes to a published channel.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;

my $srv = SSETest::Server->start(global => "SSEMaxChannels 200\n");
$srv->expect_log(qr/SSE0150: subscribe refused \(503\)/, qr/SSE0151: /);

sub stat_json { SSETest::json_decode($srv->request(GET => '/sse-status')->{body}) // {} }
sub names { my ($prefix, $n) = @_; join ',', map { "$prefix$_" } 0 .. $n - 1 }
sub stream_status {
    $srv->request(GET => "/events/$_[0]", headers => {Accept => 'text/event-stream'})->{status};
}
# Streams that end are released once the server notices: wait for none to be left.
sub all_released {
    ok($srv->wait_for(sub { (stat_json()->{subscribers} // -1) == 0 }, 30), $_[0]);
}

subtest 'a closed channel stays closed through churn' => sub {
    is($srv->publish('/publish/gone', 'last')->{status}, 201, 'publish to gone');
    is($srv->request(DELETE => '/publish/gone')->{status}, 200, 'DELETE gone');
    is(stream_status('gone'), 204, 'a browser returning to gone gets 204');
    # Strangers' churn, more than the table holds: publishes to 256 fresh channels, and
    # streams on 192 fresh names that end.
    for my $i (0 .. 3) {
        is($srv->publish('/publish/' . names("c$i-", 64), 'x')->{status}, 201,
           "publish to 64 fresh channels ($i)");
    }
    for my $i (0 .. 2) {
        my $s = $srv->subscribe('/events/' . names("s$i-", 64));
        is($s->status, 200, "a stream on 64 fresh names ($i)");
        $s->close;
        all_released("and it is released ($i)");
    }
    cmp_ok(stat_json()->{channels_forgotten} // 0, '>=', 200, 'the churn made the table drop entries');
    is(stream_status('gone'), 204, 'gone still answers 204');
    # Until the next publish, as before.
    is($srv->publish('/publish/gone', 'back')->{status}, 201, 'publish to gone again');
    my $s = $srv->subscribe('/events/gone');
    is($s->status, 200, 'gone is open again');
    $s->close;
    all_released('released');
};

subtest 'one client holding made-up channels leaves room for the others' => sub {
    # The attacker opens streams of fresh names, 64 at a time, then fewer, until refused.
    my (@held, $refusals);
    my $names = 0;
    my $k = 0;
    for my $n (64, 64, 64, 32, 16, 8, 4, 2, 1) {
        my $s = $srv->subscribe('/events/' . names('a' . $k++ . '-', $n));
        if ($s->status == 200) {
            push @held, $s;
            $names += $n;
        } else {
            is($s->status, 503, "$n more made-up names refused: 503");
            $refusals++;
            $s->close;
        }
    }
    is($names, 100, 'the attacker holds the share: 100 channels of 200');
    ok($refusals, 'and was refused beyond it');
    my $res = $srv->request(GET => '/events/one-more', headers => {Accept => 'text/event-stream'});
    is($res->{status}, 503, 'one more made-up name: 503');
    is($res->{headers}{'retry-after'}, '5', 'Retry-After: 5');
    like($res->{headers}{'content-type'} // '', qr{^application/json}, 'a JSON body');
    my $j = SSETest::json_decode($res->{body}) // {};
    is($j->{status}, 503, 'the body says 503');
    like($j->{error} // '', qr/SSEMaxUnpublishedChannels/, 'and which limit: ' . ($j->{error} // 'none'));
    ok($srv->wait_for(sub { $srv->log_text =~ /SSE0150: subscribe refused \(503\)/ }, 10),
       'SSE0150 logged');
    is(stat_json()->{channels_unpublished}, 100, 'sse-status: 100 unpublished channels');

    # Publishers' channels keep working while the attacker holds its streams.
    is($srv->publish('/publish/news', 'first')->{status}, 201, 'publish to a new channel');
    is($srv->request(GET => '/publish/news')->{status}, 200, 'the channel is known');
    my $victim = $srv->subscribe('/events/news');
    is($victim->status, 200, 'a victim subscribes to the published channel');
    is($srv->publish('/publish/' . names('p', 50), 'many')->{status}, 201, 'publish to 50 new channels');
    my $victim2 = $srv->subscribe('/events/p7');
    is($victim2->status, 200, 'a victim subscribes to one of them');
    is($srv->publish('/publish/news,p7', 'hello')->{status}, 201, 'publish');
    is_deeply([map { $_->{data} } $victim->events(1, 10)], ['hello'], 'the victim gets it');
    is_deeply([map { $_->{data} } $victim2->events(1, 10)], ['hello'], 'the second victim gets it');

    # The attacker's refusals repeat at will; the log does not get a line for each.
    my $refused = 0;
    for my $i (1 .. 60) {
        $refused++ if stream_status("again$i") == 503;
    }
    is($refused, 60, 'sixty more made-up names refused');
    my $lines = () = $srv->log_text =~ /SSE0150: subscribe refused/g;
    my $all = ($refusals // 0) + 61;
    cmp_ok($lines, '<', 60, "SSE0150 is not logged for each refusal ($lines lines for $all)");
    is(stat_json()->{subscribes_refused_unpublished}, $all, 'sse-status counts every refusal');

    $_->close for @held, $victim, $victim2;
    all_released('every stream released');
};

$srv->stop;

subtest 'SSEMaxUnpublishedChannels: checked at configuration time, read at a restart' => sub {
    for my $bad ('0', 'half', '10000001') {
        my ($rc, $out) = SSETest::Server->configtest(global => "SSEMaxUnpublishedChannels $bad");
        isnt($rc, 0, "configtest fails: SSEMaxUnpublishedChannels $bad");
        like($out, qr/SSEMaxUnpublishedChannels: "\Q$bad\E" must be a whole number from 1 to 10000000/,
             '  and says why') or diag $out;
    }
    my ($rc, $out) = SSETest::Server->configtest(global => "<VirtualHost 127.0.0.1:1>\nSSEMaxUnpublishedChannels 5\n</VirtualHost>");
    like($out, qr/SSEMaxUnpublishedChannels cannot occur within <VirtualHost> section/, 'global only');
    my $s2 = SSETest::Server->start(global => "SSEMaxChannels 200\nSSEMaxUnpublishedChannels 3\n");
    $s2->expect_log(qr/SSE0150: subscribe refused \(503\)/);
    my $st = sub { SSETest::json_decode($s2->request(GET => '/sse-status')->{body}) // {} };
    is($st->()->{max_unpublished_channels}, 3, 'sse-status: max_unpublished_channels 3');
    my $held = $s2->subscribe('/events/a,b,c');
    is($held->status, 200, 'three made-up names');
    is($s2->request(GET => '/events/d', headers => {Accept => 'text/event-stream'})->{status}, 503,
       'a fourth: 503');
    $s2->{global} = "SSEMaxChannels 200\nSSEMaxUnpublishedChannels 4\n";
    $s2->write_config;
    $s2->graceful;
    ok($s2->wait_for(sub { ($st->()->{max_unpublished_channels} // 0) == 4 }, 30),
       'a graceful restart reads the new value');
    my $more = $s2->subscribe('/events/d');
    is($more->status, 200, 'then the fourth fits');
    $_->close for $held, $more;
    $s2->stop;
};

done_testing;
