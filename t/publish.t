# Publish: raw, query, JSON and form bodies; publisher ids; every refusal with its status,
# JSON body and log line; nothing accepted is lost around refusals.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;

my $srv = SSETest::Server->start(global => "SSEBusSize 64K\n", conf => <<'EOF');
<Location /small>
    SetHandler sse-publish
    SSEMaxMessageSize 1K
</Location>
<Location /big>
    SetHandler sse-publish
    SSEMaxMessageSize 1M
</Location>
<Location /fixedpub>
    SetHandler sse-publish
    SSEChannel "fixed"
</Location>
EOF
$srv->expect_log(qr/SSE011\d: publish refused \((?:400|405|413)\)/,
                 qr/SSE0100: publish refused \(400\)/);

my $sub = $srv->subscribe('/events/p,q,fixed');
my @accepted;

sub accepted {
    my ($res, $what) = @_;
    is($res->{status}, 201, "$what: 201") or diag($res->{body});
    is($res->{headers}{'content-type'}, 'application/json', "$what: JSON answer");
    ok(defined $res->{json}{id} && length $res->{json}{id}, "$what: answer has the id");
    push @accepted, $res->{json}{id};
    return $res;
}

subtest 'raw body with fields in the query' => sub {
    my $res = accepted($srv->publish('/publish/p?event=update&id=u-1&retry=1500',
                                     "line 1\nline 2", headers => {'Content-Type' => 'text/plain'}),
                       'raw');
    is($res->{json}{id}, 'u-1', 'publisher id kept');
    is_deeply($res->{json}{channels}, ['p'], 'channels in the answer');
    my ($ev) = $sub->events(1, 5);
    is($ev->{data}, "line 1\nline 2", 'data');
    is($ev->{event}, 'update', 'event type');
    is($ev->{id}, 'u-1', 'id on the wire');
    is($sub->retry, 1500, 'retry on the wire');
};

subtest 'curl -d style body' => sub {
    accepted($srv->publish('/publish/p', 'hello',
                           headers => {'Content-Type' => 'application/x-www-form-urlencoded'}),
             'curl -d hello');
    my ($ev) = $sub->events(1, 5);
    is($ev->{data}, 'hello', 'the text as it was posted');
};

subtest 'JSON body' => sub {
    my $res = accepted($srv->publish('/publish',
        '{"data":"h\u00e9 \ud83c\udf89","event":"chat","id":"j-1","channel":["p","q"]}',
        headers => {'Content-Type' => 'application/json; charset=utf-8'}), 'JSON');
    is_deeply($res->{json}{channels}, ['p', 'q'], 'channels from the body');
    my ($ev) = $sub->events(1, 5);
    is($ev->{data}, "h\xC3\xA9 \xF0\x9F\x8E\x89", 'unicode data (UTF-8 bytes)');
    is($ev->{event}, 'chat', 'type');
    is($ev->{id}, 'j-1', 'id');
    is(scalar $sub->events(1, 0.5), 0, 'one event for two subscribed channels');

    accepted($srv->publish('/publish/q', '{"data":{"n":[1,2]}}',
                           headers => {'Content-Type' => 'application/json'}), 'JSON object data');
    ($ev) = $sub->events(1, 5);
    is($ev->{data}, '{"n":[1,2]}', 'non-string data is sent as JSON');
};

subtest 'form body' => sub {
    accepted($srv->publish('/publish', 'data=a%0D%0Ab&event=form&channel=q',
                           headers => {'Content-Type' => 'application/x-www-form-urlencoded'}),
             'form');
    my ($ev) = $sub->events(1, 5);
    is($ev->{data}, "a\nb", 'CRLF in data comes back as LF');
    is($ev->{event}, 'form', 'type');
};

subtest 'SSEChannel on the publish location' => sub {
    accepted($srv->publish('/fixedpub/whatever', 'to fixed'), 'fixed channel');
    my ($ev) = $sub->events(1, 5);
    is($ev->{data}, 'to fixed', 'delivered on the configured channel');
    my $res = $srv->publish('/fixedpub', '{"data":"x","channel":"p"}',
                            headers => {'Content-Type' => 'application/json'});
    is($res->{status}, 400, 'a body naming a channel is refused there');
    like($res->{json}{error}, qr/SSEChannel/, 'and told why');
};

my @refusals = (
    ['/publish/bad%20name', 'x', {}, 400, qr/channel name "bad name"/, 'bad channel'],
    ['/publish/p?event=a%0Ab', 'x', {}, 400, qr/event type must not contain CR, LF or NUL/, 'LF in event'],
    ['/publish/p?event=a%0Db', 'x', {}, 400, qr/event type must not contain/, 'CR in event'],
    ['/publish/p?id=a%00b', 'x', {}, 400, qr/event id must not contain/, 'NUL in id'],
    ['/publish/p?id=a%0Ab', 'x', {}, 400, qr/event id must not contain/, 'LF in id'],
    ['/publish/p?retry=soon', 'x', {}, 400, qr/retry must be a number/, 'retry not digits'],
    ['/publish/p', '{"data":', {'Content-Type' => 'application/json'}, 400, qr/malformed JSON/, 'malformed JSON'],
    ['/publish/p', '{"data":"x","colour":1}', {'Content-Type' => 'application/json'}, 400, qr/unknown member "colour"/, 'unknown JSON member'],
    ['/publish/p', 'data=%zz', {'Content-Type' => 'application/x-www-form-urlencoded'}, 400, qr/malformed form data/, 'malformed form'],
    ['/publish/p', "caf\xE9", {'Content-Type' => 'text/plain'}, 400, qr/not valid UTF-8/, 'Latin-1 data'],
    ['/publish/p', '', {}, 400, qr/nothing to publish/, 'empty body'],
    ['/publish', 'x', {}, 400, qr/no channel/, 'no channel'],
    ['/small/p', 'x' x 1025, {}, 413, qr/larger than SSEMaxMessageSize \(1024 bytes\)/, 'over SSEMaxMessageSize'],
    ['/big/p', 'x' x 40000, {}, 413, qr/more than the bus holds for one event/, 'over what the bus holds'],
);
subtest 'refusals' => sub {
    for my $r (@refusals) {
        my ($path, $body, $h, $status, $msg, $what) = @$r;
        my $res = $srv->publish($path, $body, headers => $h);
        is($res->{status}, $status, "$what: $status");
        like($res->{json}{error} // '', $msg, "$what: the body says what was wrong")
            or diag($res->{body});
        is($res->{json}{status}, $status, "$what: status in the body");
    }
    my $res = $srv->request(PUT => '/publish/p');
    is($res->{status}, 405, 'PUT is 405');
    is($res->{headers}{allow}, 'POST, GET, HEAD, DELETE', 'Allow names the methods served');
    # One log line per refusal, saying what was wrong (one 400 line must not stand for all).
    my $log = $srv->log_text;
    for my $r (@refusals) {
        my ($status, $msg, $what) = @$r[3, 4, 5];
        like($log, qr/\[sse:(?:error|warn)\].*SSE01\d\d: publish refused \($status\).*$msg/,
             "log line for $what");
    }
};

subtest 'chunked body over the limit' => sub {
    my $chunk = sprintf("%x\r\n%s\r\n", 600, 'y' x 600);
    my $res = $srv->request(POST => '/small/p', body => $chunk x 2 . "0\r\n\r\n",
                            headers => {'Transfer-Encoding' => 'chunked'});
    is($res->{status}, 413, 'chunked body counted as it arrives');
    $res = $srv->publish('/small/p', sprintf("%x\r\n%s\r\n0\r\n\r\n", 5, 'small'),
                         headers => {'Transfer-Encoding' => 'chunked'});
    is($res->{status}, 201, 'a small chunked body is accepted');
    push @accepted, $res->{json}{id};
};

subtest 'nothing accepted was lost' => sub {
    my $replay = $srv->subscribe('/events/p,q,fixed?last_event_id=none');
    my @ev = $replay->events(scalar @accepted + 1, 5);   # + the sse-missed notice
    my @ids = map { $_->{id} } grep { $_->{event} ne 'sse-missed' } @ev;
    is_deeply(\@ids, \@accepted, 'every accepted event replays, in order, none else');
    $replay->close;
};

$sub->close;
$srv->stop;
done_testing;
