# A stream reached through an internal redirect (a per-directory RewriteRule into the events
# location; ErrorDocument and Action redirect the same way) is held by its worker in the
# blocking mode, never handed to the hub: after such a redirect the MPM still owns the
# connection (write completion, lingering close), and a hub that took it wrote into a socket
# being closed and freed a connection pool the MPM was to recycle for another client.
# Checked under load: rewritten and direct streams held side by side while other clients
# connect and leave through both URLs, and every stream must carry its own channel's events,
# whole and in order, and nothing else; no child may crash.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;
use Time::HiRes qw(sleep time);
use IO::Socket::INET;
use File::Path qw(make_path);

my $mods = SSETest::apxs_q('LIBEXECDIR');
my $srv = SSETest::Server->start(conf => <<"EOF");
LoadModule rewrite_module $mods/mod_rewrite.so
<Directory "\${dir}/htdocs/live">
    RewriteEngine On
    RewriteRule ^(.*)\$ /events/\$1 [L]
</Directory>
EOF
make_path($srv->dir . '/htdocs/live');
$srv->expect_burst_notices;

my $channels = 4;
my $rounds = 20;

# Churn: clients that open a stream through either URL, read its head and leave at once.
my @kids;
for my $k (1 .. 2) {
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        my $end = time + 20;
        for my $i (1 .. 400) {
            last if time > $end;
            $srv->open_and_leave(($i % 2 ? '/live/' : '/events/') . 'churn' . ($i % $channels));
        }
        $srv->{stopped} = 1; # the parent owns the server
        exit 0;
    }
    push @kids, $pid;
}

# Held streams: 3 per channel through the rewrite, 2 direct.
my @held;
for my $c (0 .. $channels - 1) {
    push @held, [$c, $srv->subscribe("/live/ch$c")] for 1 .. 3;
    push @held, [$c, $srv->subscribe("/events/ch$c")] for 1 .. 2;
}
is(scalar(grep { $_->[1]->status == 200 } @held), 5 * $channels, 'every held stream opened');
ok((grep { $_->[1]->read_until(sub { scalar $_->[1]->comments }, 5) } @held) == @held,
   'each got its first bytes');

for my $r (1 .. $rounds) {
    for my $c (0 .. $channels - 1) {
        my $res = $srv->publish("/publish/ch$c", "ch$c-$r");
        $res->{status} == 201 or diag "publish ch$c-$r: $res->{status}";
    }
    $_->[1]->pump(0.01) for @held;
}

my @want = map { my $c = $_; [map { "ch$c-$_" } 1 .. $rounds] } 0 .. $channels - 1;
my ($whole, $clean) = (0, 0);
for my $h (@held) {
    my ($c, $sub) = @$h;
    $sub->read_until(sub { grep { $_->{data} eq "ch$c-$rounds" } $sub->all_events }, 10);
    my @data = map { $_->{data} } grep { $_->{event} eq 'message' } $sub->all_events;
    my $mine = is_deeply(\@data, $want[$c], "stream on ch$c: its own events, whole, in order")
        or diag 'got: ' . join(' ', @data);
    $whole++ if $mine;
    my @bad = $sub->bad_fields;
    $clean++ if !@bad && !$sub->closed;
    ok(!@bad, "stream on ch$c: no foreign bytes") or diag explain \@bad;
    ok(!$sub->closed, "stream on ch$c still open");
}
is($whole, scalar @held, 'every stream had exactly its events');

waitpid $_, 0 for @kids;
is($? >> 8, 0, 'churn clients finished');
# Under the event MPM a rewritten stream takes a worker (blocking mode): the MPM keeps its
# connection, so it is logged as a normal stream.
$_->[1]->close for @held;
ok($srv->wait_for(sub { $srv->access_log =~ m{"GET /live/ch0 HTTP/1.1" 200 .* end=client-closed} }, 10),
   'a rewritten stream ends and is logged when its client leaves');
unlike($srv->log_text, qr/exit signal|Segmentation/, 'no child crashed');
$srv->stop;
done_testing;
