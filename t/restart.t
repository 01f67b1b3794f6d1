# Restarts keep the bus: events published before a graceful restart (or a SIGHUP restart) replay
# after it; held streams end at a graceful restart so clients come back to the new generation,
# and resume from where they were without losing an event.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;
use Time::HiRes qw(sleep time);

my $srv = SSETest::Server->start;
$srv->expect_log(qr/SSE0203: SSEBusSize changed/);

my @before = map { $srv->publish('/publish/rs', "before $_")->{json}{id} } 1 .. 3;
my $held = $srv->subscribe('/events/rs');
ok($held->read_until(sub { scalar $held->comments }, 30), 'a stream is open');

$srv->graceful;
ok($held->read_until(sub { 0 }, 5) || $held->closed, 'the held stream ends at the graceful restart');
like($held->raw_stream, qr/\nretry: 2000\n\n\z/,
     'with a last retry (2000 ms where SSERetry is not set), in every MPM');

my $during = $srv->publish('/publish/rs', 'after restart');
is($during->{status}, 201, 'publish after the restart');

subtest 'resume after a graceful restart' => sub {
    my $sub = $srv->subscribe('/events/rs', headers => {'Last-Event-ID' => $before[0]});
    my @ev = $sub->events(3, 5);
    is_deeply([map { $_->{data} } @ev], ['before 2', 'before 3', 'after restart'],
              'events from before the restart replay, then the new one');
    $sub->close;
};

subtest 'old generation does not linger' => sub {
    # The held stream was closed, so nothing keeps an old child alive.
    my $max = $srv->mpm eq 'prefork' ? 8 : 2;
    ok($srv->wait_for(sub { $srv->children <= $max }, 10),
       "at most $max children after the restart");
};

subtest 'SIGHUP restart keeps the bus too' => sub {
    my $last = $during->{json}{id};
    # The listener survives a restart, so accepting connections proves nothing: the log's
    # "resuming normal operations" once more does.
    my $restarts = () = $srv->log_text =~ /resuming normal operations/g;
    kill 'HUP', $srv->{pid};
    ok($srv->wait_for(sub { (() = $srv->log_text =~ /resuming normal operations/g) > $restarts }, 60),
       'the SIGHUP restart completed');
    like($srv->log_text, qr/SIGHUP received\.  Attempting to restart/, 'as a SIGHUP restart');
    ok($srv->wait_for(sub { $srv->accepts }, 30), 'back after SIGHUP');
    $srv->publish('/publish/rs', 'after hup');
    my $sub = $srv->subscribe('/events/rs', headers => {'Last-Event-ID' => $last});
    is_deeply([map { $_->{data} } $sub->events(1, 5)], ['after hup'], 'resume across SIGHUP');
    $sub->close;
};

subtest 'a changed SSEBusSize keeps the running bus until a stop' => sub {
    open my $fh, '>>', $srv->dir . '/httpd.conf' or die;
    print $fh "SSEBusSize 32M\n";
    close $fh;
    $srv->graceful;
    like($srv->log_text, qr/SSE0203: SSEBusSize changed to 33554432 bytes, but a restart keeps the bus of 16777216 bytes/, 'the admin is told');
    my $sub = $srv->subscribe('/events/rs', headers => {'Last-Event-ID' => $before[2]});
    is_deeply([map { $_->{data} } $sub->events(2, 5)], ['after restart', 'after hup'],
              'events kept');
    $sub->close;
};
$srv->stop;

subtest 'a stopped server forgets; old ids are recognised as unknown' => sub {
    my $fresh = SSETest::Server->start;
    my $sub = $fresh->subscribe('/events/rs', headers => {'Last-Event-ID' => $before[0]});
    my ($ev) = $sub->events(1, 5);
    is($ev->{event}, 'sse-missed', 'the client is told events may be missing');
    $sub->close;
    $fresh->stop;
};

done_testing;
