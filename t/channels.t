# Channel administration: GET figures on the publish location, DELETE closes a channel,
# a retry-only publish reaches current and new subscribers, the sse-status handler, and
# mod_status's mod_sse section.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;
use Time::HiRes qw(sleep time);

my $srv = SSETest::Server->start(global => "ExtendedStatus On\n");
$srv->expect_log(qr/SSE0116: publish refused \(404\)/, qr/SSE0115: publish refused \(400\)/);

sub get_json {
    my ($path) = @_;
    my $res = $srv->request(GET => $path);
    $res->{json} = SSETest::json_decode($res->{body});
    return $res;
}

subtest 'GET a channel: figures across processes' => sub {
    my @subs = map { $srv->subscribe('/events/stats') } 1 .. 6;
    my $res = get_json('/publish/stats');
    is($res->{status}, 200, '200 for a channel with subscribers');
    is($res->{json}{subscribers}, 6, 'six subscribers, whichever process holds them');
    is($res->{json}{events_published}, 0, 'nothing published yet');
    is($res->{json}{last_event_id}, undef, 'no last event id');
    my $last;
    $last = $srv->publish('/publish/stats', "e$_")->{json}{id} for 1 .. 3;
    $res = get_json('/publish/stats');
    is($res->{json}{events_published}, 3, 'three published');
    is($res->{json}{events_retained}, 3, 'three retained');
    is($res->{json}{last_event_id}, $last, 'the last id');
    $_->close for @subs[0 .. 3];
    ok($srv->wait_for(sub { get_json('/publish/stats')->{json}{subscribers} == 2 }, 10),
       'closed streams are counted out');
    $_->close for @subs[4, 5];
    $res = get_json('/publish/never-used');
    is($res->{status}, 404, '404 for a channel that never existed');
    like($res->{json}{error}, qr/no channel/, 'the body says so');
    is(get_json('/publish/a,b')->{status}, 400, 'one channel at a time');
};

subtest 'retry without data: current and new subscribers' => sub {
    my $cur = $srv->subscribe('/events/slow');
    ok($cur->read_until(sub { scalar $cur->comments }, 5), 'subscribed');
    my $res = $srv->publish('/publish/slow?retry=7000', '');
    is($res->{status}, 201, 'retry-only publish accepted');
    ok($cur->read_until(sub { ($cur->retry // 0) == 7000 }, 5), 'current subscriber gets retry: 7000');
    is(scalar $cur->all_events, 0, 'and no event');
    my $new = $srv->subscribe('/events/slow');
    ok($new->read_until(sub { defined $new->retry }, 5), 'a new subscriber gets a retry');
    is($new->retry, 7000, 'the published one');
    is(get_json('/publish/slow')->{json}{retry}, 7000, 'GET shows it');
    $_->close for $cur, $new;
};

subtest 'DELETE closes a channel' => sub {
    my $first = $srv->publish('/publish/doomed', 'old-1')->{json}{id};
    $srv->publish('/publish/doomed', 'old-2');
    my @subs = map { $srv->subscribe('/events/doomed') } 1 .. 4;
    my $bystander = $srv->subscribe('/events/other');
    ok($srv->wait_for(sub { get_json('/publish/doomed')->{json}{subscribers} == 4 }, 5), 'four subscribers');
    my $res = $srv->request(DELETE => '/publish/doomed');
    is($res->{status}, 200, 'DELETE is 200');
    my $j = SSETest::json_decode($res->{body});
    is_deeply($j->{closed}, ['doomed'], 'names the closed channel');
    is($j->{subscribers}, 4, 'and its subscribers');
    for my $i (0 .. $#subs) {
        my $s = $subs[$i];
        ok($s->read_until(sub { $s->closed }, 10), "subscriber $i: stream ended");
        my ($close) = grep { $_->{event} eq 'sse-close' } $s->all_events;
        ok($close, "subscriber $i: got sse-close");
        is_deeply(SSETest::json_decode($close->{data})->{channels}, ['doomed'], "subscriber $i: names the channel");
    }
    # The bystander is read (closed is known only from reading): it still gets its channel.
    $srv->publish('/publish/other', 'still open');
    my ($still) = $bystander->events(1, 30);
    ok($still && $still->{data} eq 'still open' && !$bystander->closed, 'another channel is untouched');
    $res = $srv->request(GET => '/events/doomed', headers => {'Last-Event-ID' => $first}, timeout => 3);
    is($res->{status}, 204, 'a reconnect is answered 204 (EventSource stops)');
    ok($srv->wait_for(sub { get_json('/publish/doomed')->{json}{subscribers} == 0 }, 5), 'counted out');
    is(get_json('/publish/doomed')->{json}{closed}, JSON::PP::true, 'GET says closed');
    is(get_json('/publish/doomed')->{json}{events_retained}, 0, 'history dropped');
    is($srv->request(DELETE => '/publish/nothing-here')->{status}, 404, 'DELETE of an unknown channel is 404');

    # A publish reopens it; the old history stays gone.
    is($srv->publish('/publish/doomed', 'new-1')->{status}, 201, 'publish reopens');
    my $back = $srv->subscribe('/events/doomed', headers => {'Last-Event-ID' => $first});
    is($back->status, 200, 'subscribing works again');
    my @got = map { $_->{data} } $back->events(1, 5);
    $back->pump(0.3);
    is_deeply([map { $_->{data} } grep { $_->{event} eq 'message' } $back->all_events], ['new-1'],
              'only what came after the close is replayed');
    $_->close for $back, $bystander;
};

subtest 'sse-status and mod_status' => sub {
    my @subs = map { $srv->subscribe('/events/status-room') } 1 .. 3;
    # Streams closed by earlier subtests: a blocking stream (prefork) notices within a second.
    ok($srv->wait_for(sub { get_json('/sse-status')->{json}{subscribers} == 3 }, 10),
       'earlier streams counted out');
    my $res = get_json('/sse-status');
    is($res->{status}, 200, 'sse-status answers');
    my $j = $res->{json};
    is($j->{subscribers}, 3, 'three streams open');
    my $sum = 0;
    $sum += $_->{subscribers} for @{$j->{processes}};
    is($sum, 3, 'per process counts add up');
    ok($j->{events_published} >= 5, 'events published counted');
    ok($j->{bus_bytes} > 0 && $j->{bus_bytes_used} <= $j->{bus_bytes}, 'bus bytes used of the size');
    ok(exists $j->{socket_clients}, 'socket clients');
    my ($room) = grep { $_->{channel} eq 'status-room' } @{$j->{channels}};
    is($room->{subscribers}, 3, 'the channel is listed with its subscribers');
    my $page = $srv->request(GET => '/server-status');
    like($page->{body}, qr{<h2>mod_sse</h2>}, 'mod_status shows a mod_sse section');
    like($page->{body}, qr{Open streams: 3 of}, 'with the open streams');
    is($srv->status_field('SSESubscribers'), 3, 'and in ?auto');
    $_->close for @subs;
};

$srv->stop;
done_testing;
