# kill -9 of child processes during a publish storm: the bus is never left locked or corrupt,
# and every publish that was answered 201 is still there afterwards.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;
use Time::HiRes qw(sleep time);

my $srv = SSETest::Server->start(global => "SSEBusSize 8M\nSSEHistory 100000 0\n");
$srv->expect_log(qr/AH00052: child pid \d+ exit signal Killed \(9\)/,
                 qr/SSE0202: a process died while publishing/);
$srv->expect_burst_notices;

my @watchers = map { $srv->subscribe('/events/storm') } 1 .. 4;
my $accepted_file = $srv->dir . '/accepted';
my @publishers;
for my $p (1 .. 3) {
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open my $fh, '>', "$accepted_file.$p" or die;
        $fh->autoflush(1);
        my $stop_at = time + 4;   # a storm of 4 seconds (at most 3000 events each)
        for my $i (1 .. 3000) {
            last if time > $stop_at;
            my $res = eval { $srv->publish('/publish/storm', "p$p-$i") };
            print $fh "$res->{json}{id} p$p-$i\n" if $res && $res->{status} == 201;
        }
        close $fh;
        $srv->{stopped} = 1; # the parent owns the server
        exit 0;
    }
    push @publishers, $pid;
}

my $kills = 0;
my $end = time + 20;
while (time < $end && grep { kill 0, $_ } @publishers) {
    my @children = $srv->children;
    if (@children) {
        kill 'KILL', $children[rand @children];
        $kills++;
    }
    sleep 0.25;
    waitpid($_, POSIX::WNOHANG()) for @publishers;
    last if $kills >= 12;
}
waitpid($_, 0) for @publishers;
cmp_ok($kills, '>=', 3, "killed $kills child processes during the storm");

my %accepted;
for my $p (1 .. 3) {
    open my $fh, '<', "$accepted_file.$p" or next;
    while (<$fh>) { chomp; my ($id, $data) = split / /; $accepted{$id} = $data }
}
cmp_ok(scalar keys %accepted, '>', 100, scalar(keys %accepted) . ' publishes accepted');

# The bus still works, and holds every accepted event, whole and once.
ok($srv->wait_for(sub { $srv->accepts }, 10), 'server still accepts');
my $after = $srv->publish('/publish/storm', 'after the storm');
is($after->{status}, 201, 'publishing works after the kills');
my $replay = $srv->subscribe('/events/storm?lastEventId=start');
my @ev = grep { $_->{event} eq 'message' } $replay->events(scalar(keys %accepted) + 2, 15);
my (%seen, @dups, @bad);
for my $e (@ev) {
    push @dups, $e->{id} if $seen{$e->{id}}++;
    push @bad, $e->{data} unless $e->{data} =~ /^p\d-\d+$|^after the storm$/;
}
is(scalar @dups, 0, 'no event twice');
is(scalar @bad, 0, 'no corrupt event') or diag "@bad[0..4]";
my @lost = grep { !$seen{$_} } keys %accepted;
is(scalar @lost, 0, 'every accepted event is on the bus') or diag "lost: @lost[0..4]";
is($ev[-1]{data}, 'after the storm', 'the newest event last');
my @order = map { $_->{id} } @ev;
is_deeply(\@order, [sort { $a <=> $b } @order], 'replay in publish order');

# Watchers that survived (their child was not killed) saw events in order, none twice.
for my $w (@watchers) {
    next if $w->closed;
    my @got = map { $_->{id} } $w->events(1e9, 2);
    my %once;
    ok(!(grep { $once{$_}++ } @got) && join(',', @got) eq join(',', sort { $a <=> $b } @got),
       'a surviving watcher saw ' . scalar(@got) . ' events in order, none twice');
}
$_->close for @watchers, $replay;
$srv->stop;
done_testing;
