# A stream whose body another module's output filter rewrites (mod_substitute on
# text/event-stream, by AddOutputFilterByType): every byte of it passes the filter, the replay
# the handler writes as the live events the async hub writes. The hub writes such a stream
# through the request's output filters, never straight to the socket (writes_as_is(),
# src/httpd/stream_transport.h), and SSEHoldMode socket holds it in request mode. Under event
# MPM with SSEHoldMode request and socket, and under prefork (no hub: the worker writes).
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;

my $event = ($ENV{SSE_TEST_MPM} // 'event') eq 'event';
my $mods = SSETest::apxs_q('LIBEXECDIR');
plan skip_all => "mod_substitute or mod_filter not in $mods"
    unless -f "$mods/mod_substitute.so" && -f "$mods/mod_filter.so";

# `n`: a plain string, not a pattern. Nothing else in a stream says "apple".
my $global = <<"EOF";
LogLevel warn sse:info
LoadModule filter_module $mods/mod_filter.so
LoadModule substitute_module $mods/mod_substitute.so
AddOutputFilterByType SUBSTITUTE text/event-stream
Substitute "s/apple/pear/n"
SSEKeepalive 1
EOF

sub publish_ok {
    my ($srv, $ch, $body) = @_;
    my $res = $srv->publish("/publish/$ch", $body);
    die "publish failed: $res->{status} $res->{body}" unless $res->{status} == 201;
    return $res->{json}{id};
}
sub lines_of {
    my ($srv, $path) = @_;
    return grep { /"GET \Q$path\E HTTP\/1.1"/ } split /\n/, $srv->access_log;
}

sub check_mode {
    my ($mode) = @_;
    my $srv = SSETest::Server->start(global => $global . "SSEHoldMode $mode\n");
    my $ch = "fruit-$mode";

    # Live events only: without a replay, the hub writes everything after the headers.
    my $live = $srv->subscribe("/events/$ch?client=live");
    is($live->status, 200, 'stream open');
    if ($event) {
        # The worker is back (only this status request is busy): the hub holds the stream.
        ok($srv->wait_for(sub { ($srv->status_field('BusyWorkers') // -1) == 1 }, 30),
           'held by the hub, not a worker');
    }
    my $first = publish_ok($srv, $ch, 'apple 1');
    is_deeply([map { $_->{data} } $live->events(1, 10)], ['pear 1'], 'a live event is rewritten');
    $live->close;

    # The replay (written by the handler) then more live events (the hub).
    publish_ok($srv, $ch, "apple $_") for 2, 3;
    my $path = "/events/$ch?client=resumed";
    my $resumed = $srv->subscribe($path, headers => {'Last-Event-ID' => $first});
    is_deeply([map { $_->{data} } $resumed->events(2, 10)], ['pear 2', 'pear 3'],
              'the replay is rewritten');
    if ($event) {
        ok($srv->wait_for(sub { ($srv->status_field('BusyWorkers') // -1) == 1 }, 30),
           'then held by the hub');
    }
    publish_ok($srv, $ch, "apple $_\napple again $_") for 4, 5;
    is_deeply([map { $_->{data} } $resumed->events(2, 10)],
              ["pear 4\npear again 4", "pear 5\npear again 5"],
              'live events after it are rewritten, every line');
    my $comments = () = $resumed->comments;
    $resumed->read_until(sub { $resumed->comments >= $comments + 2 }, 10);
    cmp_ok(scalar($resumed->comments), '>=', $comments + 2, 'keep-alives pass the filter too');
    unlike($resumed->raw_stream, qr/apple/, 'no "apple" on the wire');
    # socket mode cannot take a filtered stream's socket: held in request mode, whose
    # access-log line is written when the stream ends (socket mode's at take-over).
    is(scalar(lines_of($srv, $path)), 0, 'no access-log line while it is held (request mode)');
    $resumed->close;
    ok($srv->wait_for(sub { lines_of($srv, $path) }, 15), 'its line when it ends');
    like((lines_of($srv, $path))[0] // '', qr/end=client-closed$/, 'end=client-closed');
    $srv->stop;
}

for my $mode (qw(request socket)) {
    subtest "SSEHoldMode $mode" => sub { check_mode($mode) };
}

done_testing;
