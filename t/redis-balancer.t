# Two httpd servers joined through one Redis, behind a third httpd with mod_proxy_balancer
# (round-robin): browser-like clients subscribe through the balancer and, when their stream
# ends (a graceful restart of their server, or the process holding it killed), reconnect
# through it with Last-Event-ID, landing on the other server or on the restarted one;
# publishes alternate between the two servers, and go on on one while the other restarts or
# loses processes. Every accepted event reaches every client
# exactly once, in order, on whichever servers it was held.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;
use Time::HiRes qw(sleep time);

my $mods = SSETest::apxs_q('LIBEXECDIR');
my $redis = SSETest::Redis->start(appendonly => 1);
my $backend = sub {
    my ($name) = @_;
    return SSETest::Server->start(
        global => "SSERedis @{[$redis->url]}\nLoadModule headers_module $mods/mod_headers.so\n",
        conf => "Header always set X-Backend $name\n<Location /events>\n    SSEKeepalive 1\n"
              . "</Location>\n");
};
my %backend = (a => $backend->('a'), b => $backend->('b'));

# mod_proxy_http needs nothing to stream text/event-stream: it reads the backend without
# blocking and flushes to the client whenever nothing more is there (ap_proxy_http_process_
# response), so each event goes out when it comes. The backends' keep-alives (1 s) stay under
# ProxyTimeout. /lb is proxied rather than /events, whose SetHandler would win over the proxy.
# disablereuse: a stream holds its backend connection for its life, so there is nothing to
# pool, and a pooled connection that a restarting backend closes could fail a reconnect.
my $members = join '', map { "    BalancerMember http://127.0.0.1:@{[$backend{$_}->port]} "
                               . "route=$_ disablereuse=on\n" }
                       sort keys %backend;
my $lb = SSETest::Server->start(global => <<"EOF");
LoadModule proxy_module $mods/mod_proxy.so
LoadModule proxy_http_module $mods/mod_proxy_http.so
LoadModule proxy_balancer_module $mods/mod_proxy_balancer.so
LoadModule lbmethod_byrequests_module $mods/mod_lbmethod_byrequests.so
LoadModule slotmem_shm_module $mods/mod_slotmem_shm.so
<Proxy "balancer://sse">
$members    ProxySet lbmethod=byrequests timeout=10
</Proxy>
ProxyPass "/lb/" "balancer://sse/events/"
EOF

# A stream cut by a killed backend process: the balancer reports the broken response.
$lb->expect_log(qr/AH01110: error reading response/);
$_->expect_log(qr/AH00052: child pid \d+ exit signal Killed \(9\)/) for values %backend;

ok(SSETest::Redis->wait_joined($backend{a}, $backend{a}, $backend{b}), 'A and B read the stream');
ok(SSETest::Redis->wait_joined($backend{b}, $backend{a}, $backend{b}), 'B publishes to both');

# An EventSource: one stream at a time on $server (the balancer, or a backend directly); when
# the stream ends it reconnects with the last id it saw, as a browser does after `retry`.
{
    package Viewer;
    sub new {
        my ($class, $server, $path) = @_;
        my $self = bless {server => $server, path => $path, events => [], backends => [],
                          streams => 0}, $class;
        $self->connect;
        return $self;
    }
    sub connect {
        my ($self) = @_;
        my %h = (Connection => 'close'); # the end of the response is the end of the stream
        $h{'Last-Event-ID'} = $self->{last} if defined $self->{last};
        my $c = SSETest::Client->open($self->{server}, $self->{path}, headers => \%h);
        die "subscribe answered " . $c->status unless $c->status == 200;
        $self->{c} = $c;
        $self->{streams}++;
        push @{$self->{backends}}, $c->headers->{'x-backend'} // '?';
    }
    # Reads for up to $seconds, taking the events; reconnects if the stream ended.
    sub pump {
        my ($self, $seconds) = @_;
        my $c = $self->{c};
        $c->read_until(sub { $c->{dechunk} && $c->{dechunk}{done} }, $seconds);
        for my $e ($c->events(0, 0)) {
            push @{$self->{events}}, $e;
            $self->{last} = $e->{id};
        }
        return unless $c->closed || ($c->{dechunk} && $c->{dechunk}{done});
        $c->close;
        $self->connect;
    }
    sub events   { @{$_[0]{events}} }
    sub backends { @{$_[0]{backends}} }
    sub streams  { $_[0]{streams} }
    sub close    { $_[0]{c}->close }
}

# Four clients through the balancer (round-robin: a, b, a, b) and one on each server directly.
my @through = map { Viewer->new($lb, '/lb/news') } 1 .. 4;
my %direct = map { $_ => Viewer->new($backend{$_}, '/events/news') } sort keys %backend;
my @viewers = (@through, values %direct);
is_deeply([map { ($_->backends)[0] } @through], [qw(a b a b)],
          'the balancer spreads the clients over both servers');

my @accepted; # [id, data], in the order the publishes were accepted (one publisher: Redis's order)
my $n = 0;
sub publish_on {
    my ($name) = @_;
    my $data = "e" . ++$n . " from $name";
    my $r = $backend{$name}->publish('/publish/news', $data);
    is($r->{status}, 201, "$data accepted") or return;
    push @accepted, [$r->{json}{id}, $data];
}
sub pump_all { $_->pump($_[0]) for @viewers }

# The count of "resuming normal operations" in a server's log: a graceful restart is done when
# it grows (SSETest::Server::graceful waits for it too, but this test publishes meanwhile).
sub restarts { my ($srv) = @_; return () = $srv->log_text =~ /resuming normal operations/g }

for my $round (1 .. 2) {
    for my $restarting (qw(a b)) {
        my $other = $restarting eq 'a' ? 'b' : 'a';
        publish_on($_) for qw(a b a b);
        pump_all(0.2);
        # A graceful restart of one server while the other keeps publishing.
        my $before = restarts($backend{$restarting});
        kill 'USR1', $backend{$restarting}{pid};
        for (1 .. 6) {
            publish_on($other);
            pump_all(0.1);
        }
        ok($backend{$restarting}->wait_for(sub { restarts($backend{$restarting}) > $before }, 20),
           "round $round: $restarting restarted gracefully while $other published");
        $backend{$restarting}->wait_for(sub { $backend{$restarting}->accepts }, 10);
        publish_on($_) for qw(b a);
        pump_all(0.2);
    }
}

# The processes of B holding streams killed (kill -9) while A publishes: their streams end
# without a last retry (the balancer cuts its responses), the clients come back; B's bus and
# its Redis reader (sse-publishd, not killed) carry on.
my $status = SSETest::json_decode($backend{b}->request(GET => '/sse-status')->{body});
my @victims = map { $_->{pid} } grep { $_->{subscribers} > 0 } @{$status->{processes}};
ok(@victims, 'B has processes holding streams: ' . join(',', @victims));
kill 'KILL', @victims;
for (1 .. 6) {
    publish_on('a');
    pump_all(0.1);
}
publish_on($_) for qw(b a);
pump_all(0.2);

# Every client has every accepted event once, in order: waited for, at most 20 s in all.
my @want = map { [$_->[0], 'message', $_->[1]] } @accepted;
my $end = time + 20;
while (time < $end && grep { $_->events < @want } @viewers) {
    pump_all(0.2);
}
for my $i (0 .. $#through) {
    my $v = $through[$i];
    is_deeply([map { [$_->{id}, $_->{event}, $_->{data}] } $v->events], \@want,
              "client $i through the balancer: all " . @want . " events once, in order, over "
              . $v->streams . " streams (" . join(',', $v->backends) . ")");
}
for my $name (sort keys %direct) {
    is_deeply([map { [$_->{id}, $_->{event}, $_->{data}] } $direct{$name}->events], \@want,
              "the client on $name directly: the same");
}
# Round-robin sends some reconnects to the other server than the one that restarted: resumes
# there are served from that server's bus, with the ids the other server gave.
ok((grep { my @b = $_->backends; grep { $b[$_] ne $b[$_ - 1] } 1 .. $#b } @through),
   'some client resumed on the other server');
cmp_ok($_->streams, '>=', 3, 'each client reconnected at least twice') for @through;
cmp_ok($direct{b}->streams, '>', 3,
       'the client on B directly came back after its process was killed');

$_->close for @viewers;
$lb->stop;
$_->stop for values %backend;
$redis->stop;
done_testing;
