# Resume: Last-Event-ID (header or query) replays what was missed, in order, without
# duplicates, then continues live; an id the bus does not hold gives everything retained and an
# in-band "sse-missed" event; SSEHistory bounds the replay.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;

my $srv = SSETest::Server->start(global => "SSEHistory 5\n");

sub publish_ok {
    my ($path, $body) = @_;
    my $res = $srv->publish($path, $body);
    die "publish failed: $res->{status} $res->{body}" unless $res->{status} == 201;
    return $res->{json}{id};
}

my @a = map { publish_ok('/publish/ra', "a$_") } 1 .. 3;
my $both = publish_ok('/publish/ra,rb', 'ab');
my @b = map { publish_ok('/publish/rb', "b$_") } 1 .. 2;

subtest 'Last-Event-ID header' => sub {
    my $sub = $srv->subscribe('/events/ra,rb', headers => {'Last-Event-ID' => $a[0]});
    my @ev = $sub->events(5, 5);
    is_deeply([map { $_->{data} } @ev], [qw(a2 a3 ab b1 b2)], 'missed events, publish order, no duplicate');
    is_deeply([map { $_->{id} } @ev], [@a[1, 2], $both, @b], 'with their ids');
    is(scalar $sub->events(1, 0.5), 0, 'nothing more');
    my $live = publish_ok('/publish/rb', 'live');
    my ($ev) = $sub->events(1, 5);
    is($ev->{data}, 'live', 'then live');
    $sub->close;
};

subtest 'lastEventId and last_event_id query parameters' => sub {
    for my $param (qw(lastEventId last_event_id)) {
        my $sub = $srv->subscribe("/events/rb?$param=$b[0]");
        my @ev = $sub->events(2, 5);
        is_deeply([map { $_->{data} } @ev], [qw(b2 live)], $param);
        $sub->close;
    }
};

subtest 'a publisher-given id resumes too' => sub {
    my $res = $srv->publish('/publish/rc?id=order-17', 'o17');
    is($res->{json}{id}, 'order-17', 'id kept');
    publish_ok('/publish/rc', 'after');
    my $sub = $srv->subscribe('/events/rc', headers => {'Last-Event-ID' => 'order-17'});
    my @ev = $sub->events(1, 5);
    is_deeply([map { $_->{data} } @ev], ['after'], 'replay after a custom id');
    $sub->close;
};

subtest 'a non-ASCII id sent back as Latin-1 (fetch-based clients) resumes' => sub {
    my $res = $srv->publish('/publish/rl?id=%C3%BC-1', 'u1');   # id "ü-1" in UTF-8
    is($res->{json}{id}, "\x{fc}-1", 'id kept');
    publish_ok('/publish/rl', 'after-u');
    # What Node's eventsource and undici send: the id's characters as Latin-1 bytes.
    my $sub = $srv->subscribe('/events/rl', headers => {'Last-Event-ID' => "\xfc-1"});
    my @ev = $sub->events(1, 5);
    is_deeply([map { $_->{data} } @ev], ['after-u'], 'replay after it, no sse-missed');
    $sub->close;
};

subtest 'an unknown id: everything retained, and a notice' => sub {
    my $sub = $srv->subscribe('/events/ra', headers => {'Last-Event-ID' => 'never-issued'});
    my @ev = $sub->events(5, 5);
    is($ev[0]{event}, 'sse-missed', 'first an sse-missed event');
    my $notice = SSETest::json_decode($ev[0]{data});
    is($notice->{reason}, 'unknown-last-event-id', 'with a reason');
    is($notice->{lastEventId}, 'never-issued', 'and the id asked for');
    is_deeply([map { $_->{data} } @ev[1 .. $#ev]], [qw(a1 a2 a3 ab)], 'then all that is retained');
    is($ev[1]{id}, $a[0], 'ids as before');
    $sub->close;
};

subtest 'SSEHistory count bounds the replay per channel' => sub {
    publish_ok('/publish/rd', "d$_") for 1 .. 8;
    my $sub = $srv->subscribe('/events/rd?lastEventId=0');
    my @ev = grep { $_->{event} eq 'message' } $sub->events(6, 5);
    is_deeply([map { $_->{data} } @ev], [qw(d4 d5 d6 d7 d8)], 'the newest 5');
    $sub->close;
};

subtest 'an id held but older than SSEHistory reaches: what it allows, and a notice' => sub {
    publish_ok('/publish/rw?id=w-0', 'w0');
    publish_ok('/publish/rw', "w$_") for 1 .. 6;
    my $sub = $srv->subscribe('/events/rw', headers => {'Last-Event-ID' => 'w-0'});
    my @ev = $sub->events(6, 5);
    is($ev[0]{event}, 'sse-missed', 'first an sse-missed event (w1 is not replayed)');
    is(SSETest::json_decode($ev[0]{data})->{lastEventId}, 'w-0', 'naming the id asked for');
    is_deeply([map { $_->{data} } @ev[1 .. $#ev]], [qw(w2 w3 w4 w5 w6)], 'then the newest 5');
    $sub->close;
    $sub = $srv->subscribe('/events/rw', headers => {'Last-Event-ID' => $ev[1]{id}});
    publish_ok('/publish/rw', 'w7');
    is_deeply([map { $_->{event} . ':' . $_->{data} } $sub->events(5, 5)],
              [map { "message:w$_" } 3 .. 7], 'an id within reach: no notice');
    $sub->close;
};

subtest 'no Last-Event-ID: live only' => sub {
    my $sub = $srv->subscribe('/events/ra');
    is(scalar $sub->events(1, 0.7), 0, 'no replay');
    publish_ok('/publish/ra', 'fresh');
    is(($sub->events(1, 5))[0]{data}, 'fresh', 'live');
    $sub->close;
};

subtest 'Last-Event-ID too long' => sub {
    $srv->expect_log(qr/SSE0104: subscribe refused \(400\)/);
    my $res = $srv->request(GET => '/events/ra', headers => {'Last-Event-ID' => 'x' x 1100});
    is($res->{status}, 400, 'status 400');
    like($res->{body}, qr/Last-Event-ID is longer than 1024 bytes/, 'says so');
};
$srv->stop;

subtest 'SSEHistory seconds bounds the replay by age' => sub {
    # 'old' is older than the 5 s limit at the subscribe (published, then 6 s of sleep), 'new' is
    # younger if the subscribe was answered within 5 s of publishing it. On a machine so loaded
    # that it was not, the attempt says nothing: another one on a fresh channel, at most 4.
    my $aged = SSETest::Server->start(global => "SSEHistory 100 5\n");
    my ($conclusive, @ev);
    for my $try (1 .. 4) {
        $aged->publish("/publish/old$try", 'old');
        sleep 6;
        my $t0 = time;
        $aged->publish("/publish/old$try", 'new');
        my $sub = $aged->subscribe("/events/old$try?lastEventId=x");
        next if time - $t0 >= 5;
        $conclusive = 1;
        @ev = grep { $_->{event} eq 'message' } $sub->events(2, 10);
        last;
    }
    ok($conclusive, 'a subscribe was answered within 5 s of a publish (4 tries)');
    is_deeply([map { $_->{data} } @ev], ['new'], 'only events younger than 5 s are replayed');
    $aged->stop;
};

done_testing;
