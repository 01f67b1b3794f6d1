# A dead hub (one of its threads ends with an exception, or it cannot start) takes no new
# stream, ends and releases the ones it held, and the child keeps serving: new streams are
# held by their workers. Faults are injected with SSE_TEST_FAULT (docs/tests.md), read by each
# child when it starts its hub; one child, so every stream is in the faulty hub.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;

plan skip_all => 'the hub exists only under the event MPM (prefork holds streams on workers)'
    unless ($ENV{SSE_TEST_MPM} // 'event') eq 'event';

my $one_child = "StartServers 1\nMinSpareThreads 1\nMaxSpareThreads 25\nMaxRequestWorkers 25\n";

sub start_with_fault {
    my ($fault) = @_;
    local $ENV{SSE_TEST_FAULT} = $fault;
    return SSETest::Server->start(global => $one_child);
}

sub subscribers {
    my ($srv) = @_;
    my $j = SSETest::json_decode($srv->request(GET => '/sse-status')->{body});
    return $j ? $j->{subscribers} : -1;
}

# Streams of one channel that all got a first event: they are held (by the hub while it lives).
sub open_streams {
    my ($srv, $n, $tag) = @_;
    my @c = map { $srv->subscribe("/events/$tag") } 1 .. $n;
    is(scalar(grep { $_->status == 200 } @c), $n, "$n streams open");
    ok($srv->wait_for(sub { subscribers($srv) == $n }, 30), "$n subscribers counted");
    is($srv->publish("/publish/$tag", 'first')->{status}, 201, 'publish');
    is(scalar(grep { my ($e) = $_->events(1, 30); $e && $e->{data} eq 'first' } @c), $n,
       'every stream got it');
    return @c;
}

# After the hub died: held streams ended, slots freed, a new stream is served.
sub after_death {
    my ($srv, $held) = @_;
    is(scalar(grep { $_->read_until(sub { 0 }, 30); $_->closed } @$held), scalar(@$held),
       'every stream the hub held ended');
    ok($srv->wait_for(sub { subscribers($srv) == 0 }, 30), 'their registry slots are free')
        or diag('subscribers: ' . subscribers($srv));
    my $late = $srv->subscribe('/events/after');
    is($late->status, 200, 'a new stream is accepted');
    ok($srv->wait_for(sub { subscribers($srv) == 1 }, 30), 'and counted');
    is($srv->publish('/publish/after', 'second')->{status}, 201, 'publish');
    my ($e) = $late->events(1, 30);
    is($e && $e->{data}, 'second', 'and served (held by its worker)');
    ok(!$late->closed, 'it stays open');
    $late->close;
}

subtest 'the ender thread throws' => sub {
    my $srv = start_with_fault('hub-ender-throw-after:1');
    $srv->expect_log(qr/SSE0500: async hub ender thread failed: an exception that is not a std::exception/);
    my ($gone, @held) = open_streams($srv, 4, 'ender');
    $gone->close; # the ender's first task: this stream's release; then it throws
    after_death($srv, \@held);
    like($srv->log_text, qr/SSE0500: async hub ender thread failed/, 'logged SSE0500');
    $srv->stop;
};

subtest 'the I/O thread throws' => sub {
    my $srv = start_with_fault('hub-io-throw-after:3');
    $srv->expect_log(qr/SSE0500: async hub I\/O thread failed: an exception that is not a std::exception/);
    my @held = open_streams($srv, 2, 'io');
    # The third stream is the one the I/O thread fails on: it ends with the others.
    push @held, $srv->subscribe('/events/io');
    after_death($srv, \@held);
    like($srv->log_text, qr/SSE0500: async hub I\/O thread failed/, 'logged SSE0500');
    $srv->stop;
};

# Not a failure: where the kernel has no futex_waitv, a relay thread turns publishes into
# wake-ups of the I/O thread, which then sleeps on its own word only.
subtest 'a kernel without futex_waitv' => sub {
    my $srv = start_with_fault('hub-no-waitv');
    my ($gone, @held) = open_streams($srv, 3, 'relay');
    $gone->close;
    ok($srv->wait_for(sub { subscribers($srv) == 2 }, 30), 'a client that left is seen');
    push @held, $srv->subscribe('/events/relay');
    ok($srv->wait_for(sub { subscribers($srv) == 3 }, 30), 'a new stream is held');
    is($srv->publish('/publish/relay', 'second')->{status}, 201, 'publish');
    is(scalar(grep { my ($e) = $_->events(1, 30); $e && $e->{data} eq 'second' } @held), 3,
       'every stream got it');
    ok(!(grep { $_->closed } @held), 'and stays open');
    $_->close for @held;
    $srv->stop;
};

# futex_waitv worked at the start, then fails (a seccomp filter installed later, say): the hub
# says so once and goes over to the relay thread; streams are served as before.
subtest 'futex_waitv fails while the hub runs' => sub {
    my $srv = start_with_fault('hub-waitv-fails');
    $srv->expect_log(qr/SSE0504: the async hub can no longer wait on the bus and its own word at once \(futex_waitv: SSE_TEST_FAULT=hub-waitv-fails\); a relay thread wakes it from now on$/);
    my @held = open_streams($srv, 2, 'later');
    ok($srv->wait_for(sub { $srv->log_text =~ /SSE0504/ }, 30), 'logged SSE0504');
    for my $n (1 .. 3) {
        is($srv->publish('/publish/later', "event $n")->{status}, 201, "publish $n");
        is(scalar(grep { my ($e) = $_->events(1, 30); $e && $e->{data} eq "event $n" } @held), 2,
           "both streams got event $n");
    }
    ok(!(grep { $_->closed } @held), 'and stay open');
    my @lines = $srv->log_text =~ /SSE0504/g;
    cmp_ok(scalar @lines, '<=', 2, 'said once per child (2 children at most)');
    $_->close for @held;
    $srv->stop;
};

subtest 'the hub cannot start' => sub {
    my $srv = start_with_fault('hub-start-fail');
    $srv->expect_log(qr/SSE0501: cannot start the async hub \(SSE_TEST_FAULT=hub-start-fail\)/);
    my @c = open_streams($srv, 2, 'nohub');
    ok(!(grep { $_->closed } @c), 'the streams stay open (held by their workers)');
    like($srv->log_text, qr/SSE0501: cannot start the async hub/, 'logged SSE0501');
    $_->close for @c;
    $srv->stop;
};

done_testing;
