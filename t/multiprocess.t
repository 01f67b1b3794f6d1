# Every child process sees every event: subscribers held by several processes (prefork: one
# each; event: more than one child's threads) all get everything published through any child.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;

# Streams on a worker each (SSEAsync Off), so that where they are held does not depend on which
# child accepts them: event: 25 threads per child, so 36 streams need both children; prefork: 36
# processes. (With the hub, one child may accept them all.)
my $srv = SSETest::Server->start(conf => "<Location /events>\n    SSEAsync Off\n</Location>\n");
# Holding 36 of 50 workers is what this test means to do; the MPM says so.
$srv->expect_burst_notices;
my $n = 36;
my @subs = map { $srv->subscribe('/events/fan' . ($_ % 2 ? ',odd' : '')) } 1 .. $n;
is(scalar(grep { $_->status == 200 } @subs), $n, "$n streams open");

# ss shows the process of each socket to root and to the processes' own user: the server's
# children run as www-data under root, and as the tester's user otherwise; either way they show.
my $port = $srv->port;
my %holders;
for (`ss -Htnp state established '( sport = :$port )' 2>/dev/null`) {
    $holders{$1}++ if /pid=(\d+)/;
}
my $procs = keys %holders;
cmp_ok($procs, '>=', 2, "streams are held by $procs processes");

my @ids;
for my $i (1 .. 20) {
    my $res = $srv->publish('/publish/fan', "event $i");
    push @ids, $res->{json}{id};
}
$srv->publish('/publish/odd', 'odd only');

my $all_ok = 1;
for my $k (0 .. $#subs) {
    my $want = 20 + (($k + 1) % 2 ? 1 : 0);
    my @ev = $subs[$k]->events($want, 30);
    my @got = map { $_->{id} } @ev[0 .. 19];
    $all_ok &&= is_deeply(\@got, \@ids, "stream $k got all 20, in order") ;
    is($ev[20]{data}, 'odd only', "stream $k also got its other channel") if $want == 21;
}
ok($all_ok, 'every stream got every event');
$_->close for @subs;
$srv->stop;
done_testing;
