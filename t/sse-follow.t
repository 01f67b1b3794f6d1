# sse-follow against mod_sse (issue 17): it receives events as JSON lines and as event-stream
# text, resumes with Last-Event-ID through a graceful restart without losing or repeating one,
# stops on the 204 of a closed channel, fails on 404, 403 and 400 with the server's reason, and
# on a Content-Type that is not text/event-stream; -n, -t, -L, -H; the ?stream= alias.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;
use Time::HiRes qw(sleep time);
use POSIX ':sys_wait_h';

my $srv = SSETest::Server->start(conf => <<'EOF');
<Location /events/private>
    Require all denied
</Location>
<Location /events/token>
    Require expr "%{HTTP:X-Token} == 's3cret'"
</Location>
EOF
$srv->expect_log(qr/SSE0203: SSEBusSize changed/, qr/AH01630: client denied by server configuration/,
                 qr/AH01797: client denied by server configuration/,
                 qr/SSE0100: subscribe refused \(400\)/, qr/SSE0130: subscribe refused \(403\)/);
my $base = 'http://127.0.0.1:' . $srv->port;
my $n = 0;

sub slurp { my ($f) = @_; open my $fh, '<', $f or return ''; local $/; return <$fh> // '' }

# Runs sse-follow in the background: returns {pid, out, err} (files).
sub follow {
    my (@args) = @_;
    my $run = $srv->dir . '/follow' . ++$n;
    my $pid = $srv->spawn_follow(\@args, out => "$run.out", err => "$run.err");
    return {pid => $pid, out => "$run.out", err => "$run.err"};
}

# Waits (at most $secs) for the follower to exit: its exit status, or undef if it did not.
sub finish {
    my ($f, $secs) = @_;
    my $end = time + ($secs // 30);
    while (time < $end) {
        return $? >> 8 if waitpid($f->{pid}, WNOHANG) == $f->{pid};
        sleep 0.05;
    }
    kill 'TERM', $f->{pid};
    waitpid($f->{pid}, 0);
    return undef;
}

sub json_lines { map { SSETest::json_decode($_) } grep { length } split /\n/, slurp($_[0]{out}) }

sub stats {
    my ($ch) = @_;
    my $res = $srv->request(GET => "/publish/$ch");
    return SSETest::json_decode($res->{body}) // {};
}
sub wait_subscribed { my ($ch) = @_; $srv->wait_for(sub { (stats($ch)->{subscribers} // 0) >= 1 }, 20) }

subtest 'JSON lines, resumed through a graceful restart without loss or repeat' => sub {
    my @ids = map { $srv->publish('/publish/fl', "e$_")->{json}{id} } 0 .. 1;
    # -L: start after e0, so e1 replays first.
    my $f = follow('-v', '-j', '-n', 5, '-L', $ids[0], "$base/events/fl");
    ok($srv->wait_for(sub { json_lines($f) >= 1 }, 20), 'the replayed event arrives');
    push @ids, $srv->publish('/publish/fl', 'e2')->{json}{id};
    ok($srv->wait_for(sub { json_lines($f) >= 2 }, 20), 'a live event arrives');
    $srv->graceful;
    push @ids, map { $srv->publish('/publish/fl', "e$_")->{json}{id} } 3 .. 5;
    is(finish($f, 30), 0, '-n 5: exit 0 after five events');
    my @ev = json_lines($f);
    is_deeply([map { $_->{data} } @ev], [map { "e$_" } 1 .. 5],
              'e1 to e5, once each and in order, across the restart');
    is_deeply([map { $_->{id} } @ev], [@ids[1 .. 5]], 'each with its id');
    is_deeply([map { $_->{event} } @ev], [('message') x 5], 'typed "message"');
    my @connected = slurp($f->{err}) =~ /: HTTP 200 OK: connected, after id (\S+)/g;
    cmp_ok(scalar @connected, '>=', 2, 'it connected again after the restart (-v says so)')
        or diag slurp($f->{err});
    is($connected[0], $ids[0], 'the first time after the id of -L');
    # The old child may still deliver e3 (or e4) before its `retry:` ends the stream, so the
    # reconnect's id is the last one printed by then: e2's at least, never e5's (e5 ends it).
    my %printed = map { $_ => 1 } @ids[2 .. 4];
    my @unknown = grep { !$printed{$_} } @connected[1 .. $#connected];
    is("@unknown", '', 'then after an id it printed before the reconnect (Last-Event-ID)')
        or diag slurp($f->{err});
};

subtest 'event-stream text, -t, ?stream=' => sub {
    my $f = follow('-t', 3, "$base/events?stream=txt");
    ok(wait_subscribed('txt'), 'subscribed with ?stream=');
    $srv->publish('/publish/txt?event=update&id=7', "two\nlines");
    is(finish($f, 30), 0, '-t 3: exit 0');
    is(slurp($f->{out}), "id: 7\nevent: update\ndata: two\ndata: lines\n\n",
       'the event as event-stream text');
    is(slurp($f->{err}), '', 'nothing on stderr');
};

subtest 'a closed channel: 204 stops it' => sub {
    my $f = follow('-j', '-r', 100, "$base/events/cl");
    ok(wait_subscribed('cl'), 'subscribed');
    $srv->publish('/publish/cl', 'last');
    is($srv->request(DELETE => '/publish/cl')->{status}, 200, 'channel closed');
    is(finish($f, 30), 0, 'exit 0 on the 204 of its reconnect');
    my @ev = json_lines($f);
    is_deeply([map { $_->{event} } @ev], ['message', 'sse-close'], 'the event, then sse-close');
};

subtest 'answers that fail the stream' => sub {
    my %cases = (
        '404'                  => ["$base/nothing-here", qr{: HTTP 404 Not Found}],
        '403'                  => ["$base/events/private", qr{: HTTP 403 Forbidden}],
        '403 via ?stream='     => ["$base/events?stream=private",
                                   qr{: HTTP 403 Forbidden: .*channel "private"}],
        '400 with the reason'  => ["$base/events?channel=a&stream=b",
                                   qr{: HTTP 400 Bad Request: both channel and stream parameters}],
        'not an event stream'  => ["$base/server-status",
                                   qr{: the answer is not an event stream \(Content-Type: text/html}],
        'without the header'   => ["$base/events/token", qr{: HTTP 403 Forbidden}],
    );
    for my $what (sort keys %cases) {
        my ($url, $msg) = @{$cases{$what}};
        my $f = follow('-t', 20, $url);
        is(finish($f, 30), 1, "$what: exit 1");
        like(slurp($f->{err}), $msg, "$what: says why");
        is(slurp($f->{out}), '', "$what: prints no event");
    }
};

subtest '-H sends a header' => sub {
    my $f = follow('-n', 1, '-H', 'X-Token: s3cret', "$base/events/token");
    ok(wait_subscribed('token'), 'subscribed with the header');
    $srv->publish('/publish/token', 'for the token');
    is(finish($f, 30), 0, 'exit 0 after one event');
    is(slurp($f->{out}), "id: " . stats('token')->{last_event_id} . "\ndata: for the token\n\n",
       'the event');
};

subtest 'usage errors' => sub {
    for my $args (['ftp://x/'], ['-n', 'x', "$base/"], ['--cacert', 'a', '--insecure', "$base/"]) {
        my $f = follow(@$args);
        is(finish($f, 30), 2, "@$args: exit 2");
        like(slurp($f->{err}), qr/^sse-follow: /, "@$args: a message");
    }
};

$srv->stop;
done_testing;
