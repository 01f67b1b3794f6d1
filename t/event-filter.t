# The subscribe-side event-type filter (websse's ?event=): live and in replay, on the hub
# (/events: held by the hub under event, by its worker under prefork) and on a worker
# (SSEAsync Off); "message" opts into the untyped event; repeated and comma lists; with
# ?stream=; mod_sse's own notices unfiltered. SSEEventTypes refusing a publish and a
# subscribe with 400, a JSON body and an SSE0120 line; a bad ?event= (SSE0119).
#
# A filtered stream is checked without waiting for an absence: the events it must not get are
# published before ones it must get, so a stream that got one would show it in order.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;

my $srv = SSETest::Server->start(global => "SSEPublishSocket pub.sock\n", conf => <<'EOF');
<Location /blocking>
    SetHandler sse-subscribe
    SSEAsync Off
</Location>
<Location /typed>
    SetHandler sse-subscribe
    SSEEventTypes update message
</Location>
<Location /typed-publish>
    SetHandler sse-publish
    SSEEventTypes update message
</Location>
<Location /typed/open>
    SetHandler sse-subscribe
    SSEEventTypes *
</Location>
EOF
$srv->expect_log(qr/SSE0412: publish socket refused a subscriber: event-types: event type must not contain CR, LF or NUL/,
                 qr/SSE0120: publish refused \(400\): event type "other" is not one of this location's SSEEventTypes: update, message/,
                 qr/SSE0120: subscribe refused \(400\): event type "other" is not one of this location's SSEEventTypes: update, message/,
                 qr/SSE0119: subscribe refused \(400\): the event parameter: event type must not contain CR, LF or NUL/);

sub publish_ok {
    my ($path, $body) = @_;
    my $res = $srv->publish($path, $body);
    die "publish failed: $res->{status} $res->{body}" unless $res->{status} == 201;
    return $res->{json}{id};
}

# "type:data" of each event.
sub seen { return [map { "$_->{event}:$_->{data}" } @_] }

for my $where ('/events', '/blocking') {
    subtest "live, $where" => sub {
        my $one = $srv->subscribe("$where/lv$where?event=a");
        my $msg = $srv->subscribe("$where/lv$where?event=message");
        my $all = $srv->subscribe("$where/lv$where");
        is($_->status, 200, 'subscribed') for $one, $msg, $all;
        publish_ok("/publish/lv$where?event=b", 'b1');
        publish_ok("/publish/lv$where", 'm1');
        publish_ok("/publish/lv$where?event=a", 'a1');
        publish_ok("/publish/lv$where?event=message", 'm2');
        publish_ok("/publish/lv$where?event=a", 'a2');
        is_deeply(seen($one->events(2, 10)), ['a:a1', 'a:a2'], 'only type a');
        is_deeply(seen($msg->events(2, 10)), ['message:m1', 'message:m2'],
                  'message: the untyped event and "event: message"');
        is_deeply(seen($all->events(5, 10)),
                  ['b:b1', 'message:m1', 'a:a1', 'message:m2', 'a:a2'], 'no filter: everything');
        $_->close for $one, $msg, $all;
    };
}

# A retry-only publish (no data, no type) dispatches no event: it reaches a filtered stream,
# live and in replay, on the hub and on a worker.
for my $where ('/events', '/blocking') {
    subtest "a retry-only publish passes the filter, $where" => sub {
        my $sub = $srv->subscribe("$where/rt$where?event=a");
        is($sub->status, 200, 'subscribed');
        my $first = publish_ok("/publish/rt$where?event=a", 'a0');
        publish_ok("/publish/rt$where?retry=4321", '');
        publish_ok("/publish/rt$where?event=a", 'a1');
        is_deeply(seen($sub->events(2, 10)), ['a:a0', 'a:a1'], 'the events of type a');
        like($sub->raw_stream, qr/^retry: ?4321\r?$/m, 'and the retry line between them');
        $sub->close;
        my $again = $srv->subscribe("$where/rt$where?event=a", headers => { 'Last-Event-ID' => $first });
        is_deeply(seen($again->events(1, 10)), ['a:a1'], 'replayed: the later event');
        like($again->raw_stream, qr/^retry: ?4321\r?$/m, 'and the retry line');
        $again->close;
    };
}

subtest 'several types: repeated and comma lists' => sub {
    my $sub = $srv->subscribe('/events/several?event=a,b&event=c&event=');
    publish_ok('/publish/several?event=d', 'd1');
    publish_ok('/publish/several', 'm1');
    publish_ok("/publish/several?event=$_", "${_}1") for qw(a b c);
    is_deeply(seen($sub->events(3, 10)), ['a:a1', 'b:b1', 'c:c1'], 'a, b and c; not d nor message');
    $sub->close;
};

subtest 'replay (Last-Event-ID) filtered too, then live' => sub {
    my $first = publish_ok('/publish/rp?event=a', 'a0');
    publish_ok('/publish/rp?event=b', 'b1');
    publish_ok('/publish/rp', 'm1');
    publish_ok('/publish/rp?event=a', 'a1');
    publish_ok('/publish/rp?event=b', 'b2');
    for my $where ('/events', '/blocking') {
        my $sub = $srv->subscribe("$where/rp?event=a,message",
                                  headers => {'Last-Event-ID' => $first});
        is_deeply(seen($sub->events(2, 10)), ['message:m1', 'a:a1'], "$where: replay of a and message");
        $sub->close;
    }
    my $sub = $srv->subscribe('/events/rp?event=b', headers => {'Last-Event-ID' => $first});
    is_deeply(seen($sub->events(2, 10)), ['b:b1', 'b:b2'], 'replay of b');
    publish_ok('/publish/rp?event=a', 'a2');
    publish_ok('/publish/rp?event=b', 'b3');
    is_deeply(seen($sub->events(1, 10)), ['b:b3'], 'then live, filtered');
    $sub->close;
};

subtest 'an unknown Last-Event-ID: the sse-missed notice is not filtered' => sub {
    my $sub = $srv->subscribe('/events/rp?event=b', headers => {'Last-Event-ID' => 'no-such-id'});
    my @ev = $sub->events(1, 10);
    is($ev[0]{event}, 'sse-missed', 'the notice comes though the filter names only b');
    $sub->close;
};

subtest 'with ?stream= (r3labs)' => sub {
    my $sub = $srv->subscribe('/events?stream=st&event=x');
    is($sub->status, 200, 'subscribed');
    publish_ok('/publish/st?event=y', 'y1');
    publish_ok('/publish/st?event=x', 'x1');
    is_deeply(seen($sub->events(1, 10)), ['x:x1'], 'only x');
    $sub->close;
};

subtest 'SSEEventTypes refuses a publish of another type' => sub {
    my $res = $srv->publish('/typed-publish/tp?event=other', 'no');
    is($res->{status}, 400, 'answered 400');
    is($res->{json}{event}, 'other', 'the body names the type');
    is_deeply($res->{json}{allowed}, ['update', 'message'], 'and what is allowed');
    like($res->{json}{error}, qr/"other" is not one of this location's SSEEventTypes/, 'and says why');
    is($srv->publish('/typed-publish/tp?event=update', 'yes')->{status}, 201, 'a listed type');
    is($srv->publish('/typed-publish/tp', 'plain')->{status}, 201, 'message, listed');
    is($srv->publish('/typed-publish/tp?retry=500', '')->{status}, 201,
       'a retry-only publish is no event type');
    is($srv->publish('/publish/tp?event=other', 'elsewhere')->{status}, 201,
       'a location without SSEEventTypes: every type');
};

subtest 'SSEEventTypes refuses ?event= naming another type' => sub {
    my $res = $srv->request(GET => '/typed/ts?event=update,other');
    is($res->{status}, 400, 'answered 400');
    my $json = SSETest::json_decode($res->{body});
    is($json->{event}, 'other', 'the body names the type');
    is_deeply($json->{allowed}, ['update', 'message'], 'and what is allowed');
    my $sub = $srv->subscribe('/typed/ts?event=update');
    is($sub->status, 200, 'a listed type subscribes');
    my $any = $srv->subscribe('/typed/ts');
    is($any->status, 200, 'no ?event=: subscribes');
    my $open = $srv->subscribe('/typed/open/ts?event=other');
    is($open->status, 200, 'SSEEventTypes * in a nested location: every type again');
    $_->close for $sub, $any, $open;
};

subtest 'a bad ?event= name' => sub {
    my $res = $srv->request(GET => '/events/bad?event=a%0Ab');
    is($res->{status}, 400, '400 for a type with LF');
    like($res->{body}, qr/must not contain CR, LF or NUL/, 'says why');
};

subtest 'socket subscribers: event-types, live and replayed' => sub {
    my $first = publish_ok('/publish/sk?event=a', 'a0');
    publish_ok('/publish/sk?event=b', 'b1');
    publish_ok('/publish/sk?event=a', 'a1');
    my $sock = $srv->subscribe_socket('sk', last_event_id => $first, event_types => 'a,message');
    ok(!$sock->refused, 'subscribed');
    publish_ok('/publish/sk?event=b', 'b2');
    publish_ok('/publish/sk', 'm1');
    is_deeply(seen($sock->events(2, 10)), ['a:a1', 'message:m1'], 'a and message, replay then live');
    $sock->close;
    my $bad = $srv->subscribe_socket('sk', event_types => "x\ry");
    like($bad->refused // '', qr/event-types: event type must not contain CR/, 'a bad name refused');
    $bad->close;
};

subtest 'sse-publish -f -e' => sub {
    my $out = $srv->dir . '/follow-e.out';
    my $pid = $srv->spawn_publish(['-f', '-e', 'a', 'fe'], out => $out);
    my $read = sub { open my $fh, '<', $out or return ''; local $/; <$fh> // '' };
    ok($srv->wait_for(sub { $read->() =~ /^: ok/ }, 10), 'subscribed');
    publish_ok('/publish/fe?event=b', 'b1');
    publish_ok('/publish/fe?event=a', 'a1');
    $srv->request(DELETE => '/publish/fe');
    my $done = 0;
    $srv->wait_for(sub { $done = waitpid($pid, 1) == $pid }, 10);
    ok($done, 'ends when the channel is closed');
    kill 'KILL', $pid unless $done;
    my $text = $read->();
    like($text, qr/event: a\ndata: a1\n/, 'prints a');
    unlike($text, qr/b1/, 'not b');
    like($text, qr/event: sse-close/, 'the close notice is not filtered');
};

$srv->stop;
done_testing;
