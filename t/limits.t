# Refusals and figures as docs/errors.md, docs/directives.md and docs/endpoints.md give them,
# through a real httpd: SSEMaxSubscribers and SSEMaxChannels (503, Retry-After, JSON body,
# SSE0108/SSE0109), the tags SSE0102, SSE0114, SSE0118, SSE0208 and SSE0401, compression
# kept off the stream (no-gzip, no-brotli), the ?auto fields and the sse-status figures of the
# bus (events_evicted, bus_lock_recoveries), and the last `retry:` at a stop.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;
use Time::HiRes qw(sleep time);

my $mods = SSETest::apxs_q('LIBEXECDIR');
# SSEMaxUnpublishedChannels 2: the whole table for channels only subscribers named (the default
# share, half, would refuse the second with SSE0150 first; t/channel-table.t tests the share).
my $global = "SSEMaxSubscribers 4\nSSEMaxChannels 2\nSSEMaxUnpublishedChannels 2\nSSEBusSize 64K\nSSEHistory 100000 0\n"
           . "ExtendedStatus On\n"
           . "LoadModule filter_module $mods/mod_filter.so\n"
           . "LoadModule deflate_module $mods/mod_deflate.so\n"
           . "LoadModule brotli_module $mods/mod_brotli.so\n"
           . "LoadModule include_module $mods/mod_include.so\n";
my $conf = <<'EOF';
<Directory "${dir}/htdocs">
    Options +Includes
    AddOutputFilter INCLUDES .shtml
</Directory>
<Location /gz>
    SetHandler sse-subscribe
    SetOutputFilter DEFLATE
</Location>
<Location /br>
    SetHandler sse-subscribe
    SetOutputFilter BROTLI_COMPRESS
</Location>
<Location /expr-sub>
    SetHandler sse-subscribe
    SSEChannel "%{file:/nonexistent/sse-channel}"
</Location>
<Location /expr-pub>
    SetHandler sse-publish
    SSEChannel "%{file:/nonexistent/sse-channel}"
</Location>
EOF
my $srv = SSETest::Server->start(global => $global, conf => $conf);
$srv->expect_log(qr/SSE0108: subscribe refused \(503\)/, qr/SSE0109: subscribe refused \(503\)/,
                 qr/SSE0102: /, qr/Evaluation of expression from .* failed: Cannot open file/, qr/SSE0114: publish refused \(400\)/,
                 qr/SSE0118: .* refused \(405\)/, qr/SSE0208: SSEMaxSubscribers or SSEMaxChannels changed/);

# A refusal as docs/errors.md describes it: the status, a JSON body naming it, the tag logged.
sub refused_as {
    my ($res, $status, $tag, $what, %o) = @_;
    is($res->{status}, $status, "$what: $status");
    ok($srv->wait_for(sub { $srv->log_text =~ /\Q$tag\E/ }, 10), "$what: $tag logged");
    return if defined $o{json} && !$o{json};
    like($res->{headers}{'content-type'} // '', qr{^application/json}, "$what: a JSON body");
    my $j = SSETest::json_decode($res->{body}) // {};
    is($j->{status}, $status, "$what: the body says $status");
    ok(length($j->{error} // ''), "$what: and what was wrong: " . ($j->{error} // 'nothing'));
}

sub stat_json { SSETest::json_decode($srv->request(GET => '/sse-status')->{body}) // {} }

subtest 'SSEMaxChannels and SSEMaxSubscribers: 503 with Retry-After' => sub {
    # Two channels with subscribers fill SSEMaxChannels 2.
    my @held = map { $srv->subscribe($_) } '/events/a', '/events/a', '/events/b';
    is($_->status, 200, 'a stream opens') for @held;
    my $res = $srv->request(GET => '/events/c', headers => {Accept => 'text/event-stream'});
    refused_as($res, 503, 'SSE0109', 'a new channel while all have subscribers');
    is($res->{headers}{'retry-after'}, '5', 'Retry-After: 5');
    # A fourth stream fills SSEMaxSubscribers 4.
    push @held, $srv->subscribe('/events/a');
    is($held[-1]->status, 200, 'the fourth stream opens');
    $res = $srv->request(GET => '/events/b', headers => {Accept => 'text/event-stream'});
    refused_as($res, 503, 'SSE0108', 'a fifth stream');
    is($res->{headers}{'retry-after'}, '5', 'Retry-After: 5');
    # Streams that end make room (a slot is released once its end is noticed): with every
    # stream of channel a gone, a new channel fits again.
    $_->close for @held[0, 1, 3];
    my $again;
    ok($srv->wait_for(sub { $again = $srv->subscribe('/events/c'); $again->status == 200 || do { $again->close; 0 } }, 15),
       'once streams end, a new channel is accepted again');
    $again->close if $again;
    $held[2]->close;
    ok($srv->wait_for(sub { (stat_json()->{subscribers} // -1) == 0 }, 15), 'every stream released');
};

subtest 'compression stays off the stream (no-gzip, no-brotli)' => sub {
    for (['gz', 'gzip'], ['br', 'br']) {
        my ($loc, $enc) = @$_;
        my $s = $srv->subscribe("/$loc/z$loc", headers => {'Accept-Encoding' => $enc});
        is($s->status, 200, "$loc: stream opens (Accept-Encoding: $enc)");
        ok(!exists $s->headers->{'content-encoding'},
           "$loc: not compressed (Content-Encoding: " . ($s->headers->{'content-encoding'} // 'none') . ')');
        $srv->publish("/publish/z$loc", "plain $loc");
        is(($s->events(1, 10))[0]{data}, "plain $loc", "$loc: the event arrives as it was sent");
        $s->close;
    }
};

subtest 'SSE0102: the SSEChannel expression fails' => sub {
    my $res = $srv->request(GET => '/expr-sub', headers => {Accept => 'text/event-stream'});
    refused_as($res, 500, 'SSE0102: SSEChannel expression failed', 'subscribe');
    $res = $srv->request(POST => '/expr-pub', body => 'x');
    refused_as($res, 500, 'SSE0102', 'publish');
};

subtest 'SSE0114: a publish body that cannot be read' => sub {
    my $res = $srv->request(POST => '/publish/chunky', body => "zz\r\nhello\r\n0\r\n\r\n",
                            headers => {'Transfer-Encoding' => 'chunked'});
    # httpd's HTTP_IN filter answers a malformed chunk itself (its own 400 page, sent down the
    # output filters before the module hears of the error): no JSON body here.
    refused_as($res, 400, 'SSE0114', 'broken chunked encoding', json => 0);
    is($srv->request(GET => '/publish/chunky')->{status}, 404, 'nothing was published');
};

subtest 'SSE0118: a method other than GET on sse-status' => sub {
    my $res = $srv->request(POST => '/sse-status', body => 'x');
    refused_as($res, 405, 'SSE0118', 'POST /sse-status');
    is($res->{headers}{allow}, 'GET, HEAD', 'Allow: GET, HEAD');
};

subtest '?auto fields and sse-status figures of the bus' => sub {
    my $auto = sub {
        my $body = $srv->request(GET => '/server-status?auto')->{body};
        return {map { /^(SSE\w+): (\d+)$/ ? ($1 => $2) : () } split /\n/, $body};
    };
    my $a0 = $auto->();
    ok(exists $a0->{$_}, "?auto has $_") for qw(SSESubscribers SSEChannels SSEEventsPublished SSEBusBytesUsed);
    my $s = $srv->subscribe('/events/fig');
    my $a1;
    # (streams of the earlier subtests are released once their end is noticed)
    ok($srv->wait_for(sub { $a1 = $auto->(); $a1->{SSESubscribers} == 1 }, 15),
       'SSESubscribers counts the open stream');
    my $st = stat_json();
    is($a1->{SSEChannels}, $st->{channels_known}, 'SSEChannels is sse-status channels_known');
    cmp_ok($a1->{SSEChannels}, '>=', 1, 'and counts the stream\'s channel');
    # 60 events of 2 KB: more than a 64K bus holds.
    my @ids = map { $srv->publish('/publish/fig', ('e' x 2000) . $_)->{json}{id} } 1 .. 60;
    my $a2 = $auto->();
    is($a2->{SSEEventsPublished} - $a1->{SSEEventsPublished}, 60, 'SSEEventsPublished counts every event');
    $st = stat_json();
    is($a2->{SSEEventsPublished}, $st->{events_published}, 'as sse-status events_published');
    is($a2->{SSEBusBytesUsed}, $st->{bus_bytes_used}, 'SSEBusBytesUsed is sse-status bus_bytes_used');
    cmp_ok($a2->{SSEBusBytesUsed}, '>', 60_000, 'a full bus');
    cmp_ok($a2->{SSEBusBytesUsed}, '<=', $st->{bus_bytes}, 'within its size');
    cmp_ok($st->{events_evicted}, '>', 0, "events_evicted: $st->{events_evicted}");
    is($st->{events_evicted} + $st->{events_retained}, $st->{events_published},
       'evicted and retained make up what was published');
    is($st->{bus_lock_recoveries}, 0, 'bus_lock_recoveries: none (no process died publishing)');
    my @replay = $srv->subscribe("/events/fig?lastEventId=$ids[0]")->events(1, 10);
    is($replay[0]{event}, 'sse-missed', 'a resume from an evicted event is told it missed events');
    is(scalar(my @got = $s->events(60, 15)), 60, 'the live stream got all 60');
    $s->close;
};

subtest 'SSEAsync falls back to a worker for a subrequest' => sub {
    # An SSI page that includes a stream: the stream is a subrequest, which cannot be
    # suspended (the MPM goes on with the main request); it is held by its worker instead and
    # works all the same, under every MPM.
    open my $fh, '>', $srv->dir . '/htdocs/ssi.shtml' or die;
    print $fh qq{<!--#include virtual="/events/ssi" -->};
    close $fh;
    my $s = $srv->subscribe('/ssi.shtml');
    is($s->status, 200, 'the page is served');
    ok($s->read_until(sub { $s->raw_stream =~ /^: ok\n/ }, 10), 'it starts with the stream');
    ok($srv->wait_for(sub { (stat_json()->{subscribers} // 0) == 1 }, 10), 'the stream is counted');
    $srv->publish('/publish/ssi', "to the page $_") for 1 .. 3;
    is_deeply([map { $_->{data} } $s->events(3, 10)], [map { "to the page $_" } 1 .. 3],
              'events reach the page as they are published');
    $s->close;
    ok($srv->wait_for(sub { (stat_json()->{subscribers} // -1) == 0 }, 15),
       'the stream ends when the client leaves');
    my $after = $srv->subscribe('/events/ssi');
    $srv->publish('/publish/ssi', 'after');
    is(($after->events(1, 10))[0]{data}, 'after', 'the server goes on serving streams');
    $after->close;
    ok($srv->wait_for(sub { (stat_json()->{subscribers} // -1) == 0 }, 15), 'released');
};

subtest 'SSE0208: a restart keeps the registry, whatever SSEMaxSubscribers says' => sub {
    (my $more = $global) =~ s/SSEMaxSubscribers 4/SSEMaxSubscribers 5/;
    $srv->{global} = $more;
    $srv->write_config;
    my @old_children = $srv->children;
    $srv->graceful;
    ok($srv->wait_for(sub { $srv->log_text =~ /SSE0208/ }, 10), 'SSE0208 logged');
    is(stat_json()->{max_subscribers}, 4, 'the old size stays until a stop and start');
    # An old child may still accept a connection before it sees the restart, then end the
    # stream at once (a last retry) and free its slot: the fifth would then fit. Counted
    # once the old generation is gone.
    ok($srv->wait_for(sub { !grep { kill 0, $_ } @old_children }, 30), 'the old children are gone');
    my @held = map { $srv->subscribe('/events/a') } 1 .. 4;
    is(scalar(grep { $_->status == 200 } @held), 4, 'four streams');
    my $res = $srv->request(GET => '/events/a', headers => {Accept => 'text/event-stream'});
    is($res->{status}, 503, 'a fifth is refused (SSE0108)');
    $_->close for @held;
};

subtest 'stop: every held stream gets a last retry' => sub {
    my $s;
    ok($srv->wait_for(sub { $s = $srv->subscribe('/events/stop'); $s->status == 200 || do { $s->close; 0 } }, 15),
       'a stream is held');
    $srv->publish('/publish/stop', 'before the stop');
    is(($s->events(1, 10))[0]{data}, 'before the stop', 'an event reached it');
    $srv->stop;
    ok($s->read_until(sub { 0 }, 10) || $s->closed, 'the stream ended');
    like($s->raw_stream, qr/data: before the stop\n\nretry: 2000\n\n\z/,
         'with a last retry (2000 ms where SSERetry is not set)');
};

subtest 'SSE0401: the publish socket path is taken by something else' => sub {
    my $bad = SSETest::Server->start(no_start => 1, global => "SSEPublishSocket taken.sock\n");
    my $file = $bad->dir . '/taken.sock';
    open my $fh, '>', $file or die;
    print $fh "not a socket\n";
    close $fh;
    my $out = `@{[$bad->httpd_command('-k start')]} 2>&1`;
    my $rc = $? >> 8;
    my $pid = $bad->wait_for(sub { -s $bad->dir . '/httpd.pid' }, 3) && $bad->read_pid;
    ok($rc != 0 || !$pid || !kill(0, $pid), "httpd does not start (exit $rc)");
    like($out . $bad->log_text, qr/SSE0401: SSEPublishSocket \S+taken.sock exists and is not a socket/,
         'SSE0401 says why');
    open $fh, '<', $file or die;
    is(scalar <$fh>, "not a socket\n", 'the file is left alone');
    close $fh;
    kill 'TERM', $pid if $pid && kill(0, $pid);
    $bad->{stopped} = 1;
};

done_testing;
