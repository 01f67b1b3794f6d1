# The Node SSE clients people use, against a real httpd: eventsource@4, eventsource-client and
# undici's EventSource (t/js/sse-client.mjs) each receive a scripted sequence (named types,
# multi-line data, unicode beyond the BMP, ids, retry; published over HTTP and the publish
# socket), lose their stream to a graceful restart, come back by themselves with Last-Event-ID
# and get exactly what was published while they were away, then live events again.
use strict;
use warnings;
use utf8;
use lib 't/lib';
use IO::Select;
use JSON::PP;
use POSIX qw(:sys_wait_h);
use SSETest;
use Test::More;
use Time::HiRes qw(sleep time);

my $js = "$SSETest::ROOT/t/js";
if (system('node --version >/dev/null 2>&1') != 0 || !-d "$js/node_modules/eventsource") {
    fail('node and the npm packages of t/js are there (tools/install-deps installs them)');
    done_testing;
    exit;
}

# One client library in a node process, reporting JSON lines (see t/js/sse-client.mjs).
package NodeClient {
    use IO::Select;
    use POSIX qw(:sys_wait_h);
    use Time::HiRes qw(sleep time);

    sub start {
        my ($class, $name, $url, $types, $stderr) = @_;
        my $pid = open(my $out, '-|') // die "fork: $!";
        if (!$pid) {
            open STDERR, '>', $stderr or die "$stderr: $!";
            exec 'node', "$js/sse-client.mjs", $name, $url, $types, 120 or die "node: $!";
        }
        return bless {pid => $pid, out => $out, buf => '', reports => [], stderr => $stderr},
                     $class;
    }

    sub reports { @{$_[0]{reports}} }
    sub events  { grep { $_->{kind} eq 'event' } $_[0]->reports }
    sub count   { my ($self, $kind) = @_; scalar grep { $_->{kind} eq $kind } $self->reports }

    # Reads reports until cond() holds or the time is up; returns cond().
    sub wait_for {
        my ($self, $cond, $seconds) = @_;
        my $end = time + $seconds;
        my $sel = IO::Select->new($self->{out});
        while (!$cond->() && time < $end) {
            next unless $sel->can_read($end - time > 0 ? $end - time : 0);
            my $n = sysread($self->{out}, my $buf, 65536);
            last unless $n;
            $self->{buf} .= $buf;
            while ($self->{buf} =~ s/^([^\n]*)\n//) {
                push @{$self->{reports}}, JSON::PP->new->utf8->decode($1);
            }
        }
        return $cond->();
    }

    sub wait_events {
        my ($self, $n, $seconds) = @_;
        return $self->wait_for(sub { $self->events >= $n }, $seconds);
    }

    sub pause  { kill 'STOP', $_[0]{pid} }
    sub resume { kill 'CONT', $_[0]{pid} }

    sub stderr_text {
        my ($self) = @_;
        open my $fh, '<', $self->{stderr} or return '';
        local $/;
        return <$fh>;
    }

    sub stop {
        my ($self) = @_;
        return unless $self->{pid};
        SSETest::end_child($self->{pid});
        close $self->{out};
        $self->{pid} = undef;
    }

    sub DESTROY { $_[0]->stop }
}

my $retry = 300;
my $srv = SSETest::Server->start(
    global => "SSEPublishSocket pub.sock\n",
    conf   => "SSERetry $retry\n"
            . "LogFormat \"%r last-event-id=%{Last-Event-ID}i\" lei\n"
            . "CustomLog \"\${dir}/logs/last-event-id.log\" lei\n");

my $json = JSON::PP->new->utf8->canonical;

# Publishes one step of the script to `channel`; returns the event the client should see (or
# none for a retry without data).
sub publish_step {
    my ($channel, $step) = @_;
    my %s = %$step;
    my $via = delete $s{via};
    my $id;
    if ($via eq 'socket') {
        my @args = ((map { defined $s{$_->[1]} ? ($_->[0], $s{$_->[1]}) : () }
                     ['-e', 'event'], ['-i', 'id'], ['-r', 'retry']), $channel);
        my @bytes = map { utf8::is_utf8($_) ? do { my $b = $_; utf8::encode($b); $b } : $_ }
                    @args, $s{data};
        my $r = $srv->run_publish(\@bytes);
        is($r->{rc}, 0, "sse-publish to $channel") or diag $r->{err};
        ($id) = $r->{out} =~ /^(\S+)/;
        utf8::decode($id) if defined $id;
    } else {
        my $res;
        if ($via eq 'json') {
            $res = $srv->publish("/publish/$channel", $json->encode(\%s),
                                 headers => {'Content-Type' => 'application/json'});
        } else {   # the body is the data; type and id in the query
            my $q = join '&', map { "$_=$s{$_}" } grep { defined $s{$_} } qw(event id retry);
            my $body = $s{data};
            utf8::encode($body);
            $res = $srv->publish("/publish/$channel?$q", $body,
                                 headers => {'Content-Type' => 'text/plain; charset=utf-8'});
        }
        is($res->{status}, 201, "POST to /publish/$channel ($via)") or diag $res->{body};
        $id = $res->{json}{id};
    }
    return () unless defined $step->{data};
    my $data = ref $step->{data} ? $json->encode($step->{data}) : $step->{data};
    utf8::decode($data) if ref $step->{data};
    $data =~ s/\r\n?/\n/g;
    return {kind => 'event', type => $step->{event} // 'message', data => $data, id => $id};
}

# The script. Before the restart: every kind of event a page meets.
my @before = (
    {via => 'raw', data => 'hello'},
    {via => 'json', event => 'update', id => 'u-1', data => {price => 3, name => 'Zoë'}},
    {via => 'raw', event => 'multi',
     data => "line one\nline two\r\nline three\rline four\n\n  indented\n"
           . "id: not-a-field\ndata: nor this\n: nor a comment\n"},
    {via => 'socket', event => 'ünïcode', id => 'sock-1',
     data => "héllo wörld — 日本語 ✓ 😀🎉 𝄞 \x{10FFFF}"},
    {via => 'json', retry => 450},                       # a retry alone: no event
    {via => 'json', event => 'update', id => 'u-2', retry => 500, data => ''},
    {via => 'socket', id => 'last-before', data => "😀\n\n😀"},
);
# While the client is away (its process stopped, its stream closed by the restart).
my @away = (
    {via => 'socket', event => 'update', data => "away 1\n🎉 astral\nend"},
    {via => 'raw', data => 'away 2'},
    {via => 'json', event => 'multi', id => 'away-3', data => "x\r\ny"},
);
# Live again after the client came back; `end` closes the script.
my @after = (
    {via => 'socket', data => 'back 😀'},
    {via => 'json', event => 'end', id => 'the-end', data => 'done'},
);
my $types = join ',', qw(update multi ünïcode end);
utf8::encode($types);

for my $client (qw(eventsource eventsource-client undici)) {
    subtest $client => sub {
        my $channel = "clients-$client";
        my $node = NodeClient->start($client, 'http://127.0.0.1:' . $srv->port . "/events/$channel",
                                     $types, $srv->dir . "/$client.stderr");
        ok($node->wait_for(sub { $node->count('open') >= 1 }, 30), 'connected')
            or return diag $node->stderr_text;

        my @want = map { publish_step($channel, $_) } @before;
        ok($node->wait_events(scalar @want, 20), 'events before the restart arrived')
            or diag explain [$node->reports];

        # Stopped, the client cannot come back before the events it must replay are published;
        # its stream ends at the restart (mod_sse sends retry: $retry and closes it).
        $node->pause;
        $srv->graceful;
        push @want, map { publish_step($channel, $_) } @away;
        $node->resume;
        ok($node->wait_events(scalar @want, 30), 'reconnected and got what it missed')
            or diag explain [$node->reports];

        push @want, map { publish_step($channel, $_) } @after;
        ok($node->wait_events(scalar @want, 20), 'live events after the reconnect');
        is_deeply([$node->events], \@want,
                  'every event exactly once, in order: type, data, lastEventId')
            or diag explain [$node->reports];
        is($node->count('open'), 2, 'two connections: the first and one reconnect');
        cmp_ok($node->count('error'), '>=', 1, 'the end of the first stream was reported');
        if ($client eq 'eventsource-client') {   # the only one that tells its delay
            is_deeply([map { $_->{delay} } grep { $_->{kind} eq 'reconnect' } $node->reports],
                      [$retry], "reconnected after the server's last retry ($retry ms)");
        }
        $node->stop;
        # A stream's log line is written when it ends.
        my @lines;
        $srv->wait_for(sub {
            open my $fh, '<', $srv->dir . '/logs/last-event-id.log' or return;
            @lines = grep { m{^GET /events/\Q$channel\E } } <$fh>;
            @lines >= 2;
        }, 10);
        is(scalar @lines, 2, 'two requests');
        like($lines[0] // '', qr/last-event-id=-$/, 'the first without Last-Event-ID');
        like($lines[1] // '', qr/last-event-id=last-before$/,
             'the reconnect with Last-Event-ID of the last event before the restart');
        my $err = $node->stderr_text;
        note "$client stderr: $err" if length $err;
    };
}

$srv->stop;
done_testing;
