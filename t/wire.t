# The stream as a strict WHATWG parser sees it: multi-line data with CR, LF and CRLF, unicode,
# event types, ids; every byte the server sent must parse without unknown fields.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;

my $srv = SSETest::Server->start;
my $sub = $srv->subscribe('/events/wire');

my @cases = (
    ["one line", 'message'],
    ["two\nlines", 'message'],
    ["crlf\r\nlines", 'message', "crlf\nlines"],
    ["lone\rcr", 'message', "lone\ncr"],
    ["trailing newline\n", 'message'],
    ["\n\nblank lines around\n\n", 'message'],
    [" leading space and trailing space ", 'message'],
    ["data: looks like a field\nid: 99\nevent: nope\n: comment", 'message'],
    ["\xC3\xA9t\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x8E\x89 \xE4\xB8\xAD", 'unicode'],
    ["", 'empty'],
    ['{"json": "value", "n": [1, 2]}', 'json'],
);

my @ids;
for my $c (@cases) {
    my ($data, $type) = @$c;
    # An empty raw body means "no data": an empty string is published as JSON.
    my $res = $data eq ''
        ? $srv->publish("/publish/wire?event=$type", '{"data":""}',
                        headers => {'Content-Type' => 'application/json'})
        : $srv->publish("/publish/wire?event=$type", $data,
                        headers => {'Content-Type' => 'text/plain; charset=utf-8'});
    is($res->{status}, 201, "published " . ($type eq 'message' ? 'data' : $type)) or diag $res->{body};
    push @ids, $res->{json}{id};
}
my @ev = $sub->events(scalar @cases, 10);
is(scalar @ev, scalar @cases, 'every event arrived');
for my $i (0 .. $#cases) {
    my ($data, $type, $expect) = @{$cases[$i]};
    $expect //= $data;
    $expect =~ s/\r\n?/\n/g;
    is($ev[$i]{data}, $expect, "data of case $i reassembled exactly");
    is($ev[$i]{event}, $type, "type of case $i");
    is($ev[$i]{id}, $ids[$i], "id of case $i");
}
is(scalar $sub->bad_fields, 0, 'no field a strict parser rejects') or diag join "\n", $sub->bad_fields;

my $raw = $sub->raw_stream;
like($raw, qr/\A: ok\n\n/, 'stream opens with a comment');
unlike($raw, qr/\r/, 'the server writes LF line ends only');
like($raw, qr/\ndata: \n\n/, 'an empty line of data is "data: "');
like($raw, qr/data:  leading space/, 'the value keeps its own leading space');
$sub->close;
$srv->stop;
done_testing;
