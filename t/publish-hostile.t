# Hostile publish bodies (security findings 4 and 8): a JSON body nested 70,000 deep crashed the
# child (dump() recursed) and is now a 400 SSE0125; 65,000 only ids in a form body, and an
# event of 200,000 only ids on the publish socket, are refused with the cap's message without
# holding up anyone else. Subscribers keep their streams throughout.
use strict;
use warnings;
use lib 't/lib';
use IO::Socket::UNIX;
use IO::Select;
use SSETest;
use Test::More;
use Time::HiRes qw(time);

my $srv = SSETest::Server->start(global => "SSEPublishSocket pub.sock\nSSEMaxMessageSize 2M\n");
$srv->expect_log(qr/SSE0125: publish refused \(400\): the JSON body nests arrays and objects more than 64 deep/,
                 qr/SSE0110: publish refused \(400\): too many client ids in only\/except: more than 1000/,
                 qr/SSE0410: publish socket refused an event: too many client ids in only\/except: more than 1000/);
my $sock_path = $srv->dir . '/pub.sock';

my $sub = $srv->subscribe('/events/h');
is($sub->status, 200, 'a subscriber is streaming');

# Publishes one event and checks that the subscriber, on the connection it had from the start,
# gets it: the refusals before it cost nobody their stream.
my $n = 0;
sub still_streaming {
    my ($what) = @_;
    my $data = 'after ' . ++$n;
    my $res = $srv->publish('/publish/h', $data, headers => {'Content-Type' => 'text/plain'});
    is($res->{status}, 201, "$what: the next publish is accepted");
    my ($ev) = $sub->events(1, 15);
    is($ev && $ev->{data}, $data, "$what: the subscriber got it on its first connection");
    ok(!$sub->closed, "$what: its stream is still open");
}

subtest 'JSON nested 70,000 deep' => sub {
    my $depth = 70000;
    my $body = '{"data":' . ('[' x $depth) . (']' x $depth) . '}';
    cmp_ok(length $body, '<', 256 * 1024, 'under the default SSEMaxMessageSize (the old crash)');
    my $res = $srv->publish('/publish/h', $body, headers => {'Content-Type' => 'application/json'},
                            timeout => 60);
    is($res->{status}, 400, '400, not a crashed child') or diag(substr($res->{raw}, 0, 300));
    like($res->{json}{error} // '', qr/more than 64 deep/, 'the JSON answer says why');
    like($srv->log_text, qr/SSE0125: publish refused \(400\)/, 'a tagged log line');
    unlike($srv->log_text, qr/exit signal/, 'no child died');
    still_streaming('deep JSON');

    my $ok = '{"data":' . ('[' x 63) . (']' x 63) . '}';
    is($srv->publish('/publish/h', $ok, headers => {'Content-Type' => 'application/json'})->{status},
       201, '64 levels (the body object and 63 arrays) are accepted');
    my ($ev) = $sub->events(1, 15);
    is($ev && $ev->{data}, ('[' x 63) . (']' x 63), 'and delivered as compact JSON');
};

subtest '65,000 only ids in a form body' => sub {
    my $body = 'data=x&only=' . join(',', map { "id$_" } 1 .. 65000);
    my $res = $srv->publish('/publish/h', $body,
                            headers => {'Content-Type' => 'application/x-www-form-urlencoded'},
                            timeout => 60);
    is($res->{status}, 400, 'refused with 400');
    like($res->{json}{error} // '', qr/too many client ids in only\/except: more than 1000/,
         'the cap is named');
    still_streaming('65,000 ids');
};

subtest 'an event of 200,000 only ids on the publish socket' => sub {
    my $hostile = IO::Socket::UNIX->new(Peer => $sock_path, Timeout => 10) or die "connect: $!";
    my $other = IO::Socket::UNIX->new(Peer => $sock_path, Timeout => 10) or die "connect: $!";
    # One 1.5 MB line (under the 2M SSEMaxMessageSize). De-duplicating it pairwise, as before,
    # is 2 * 10^10 comparisons: the single-threaded daemon stalled and the other publisher
    # waited. Now the list stops at its cap.
    my $event = "channel: h\nonly: " . join(',', map { "i$_" } 1 .. 200000) . "\ndata: no\n\n";
    for (my $off = 0; $off < length $event;) {
        # The daemon may answer while we write; the write side never blocks for long.
        my $w = syswrite($hostile, $event, 65536, $off);
        die "write: $!" unless defined $w;
        $off += $w;
    }
    syswrite($other, "channel: h\ndata: from the other publisher\n\n");
    my %answer;
    my $end = time + 30; # a safety net: the expected path answers at once
    for my $c ([$hostile, 'hostile'], [$other, 'other']) {
        my ($s, $name) = @$c;
        my $buf = '';
        my $sel1 = IO::Select->new($s);
        while ($buf !~ /\n/ && time < $end && $sel1->can_read($end - time)) {
            my $r = sysread($s, $buf, 4096, length $buf);
            last unless $r;
        }
        ($answer{$name}) = $buf =~ /^([^\n]*)\n/;
    }
    like($answer{hostile} // 'no answer within 30 s',
         qr/^error too many client ids in only\/except: more than 1000/, 'the hostile event is refused');
    like($answer{other} // 'no answer within 30 s', qr/^ok /, 'the other publisher got its answer');
    my ($ev) = $sub->events(1, 15);
    is($ev && $ev->{data}, 'from the other publisher', 'and its event was delivered');
    still_streaming('socket');
};

$srv->stop;
done_testing;
