# Mercure updates resumed from Redis (docs/redis.md, "Resume on another server"): hub B starts
# after updates were published on hub A (one SSEMercureHub name), so B's bus never had them. A
# subscriber on B resuming with Last-Event-ID (or lastEventID) of an update of A gets the
# updates after it from Redis: those its topic selectors select, private ones only when its
# claims select a topic, then live ones; the answered Last-Event-ID names its id.
use strict;
use warnings;
use lib 't/lib';
use File::Temp ();
use SSEMercure;
use SSETest;
use Test::More;

my $keys = File::Temp::tempdir('mod_sse-mreplay-XXXXXX', TMPDIR => 1, CLEANUP => 1);
chmod 0755, $keys;
my $key = SSEMercure::secret_file($keys);
my $redis = SSETest::Redis->start;
my $global = "SSERedis " . $redis->url . "\nAllowEncodedSlashes NoDecode\nLogLevel warn sse:info\n";
my $hub = SSEMercure::hub_location('/.well-known/mercure', "HS256 $key->{file}",
                                   anonymous => 1, hub => 'shop');
my $publisher = SSEMercure::token($key, {publish => ['*']});
my $books_reader = SSEMercure::token($key, {subscribe => ['https://example.com/books/{id}']});

sub esc { my ($s) = @_; $s =~ s/([^A-Za-z0-9\-._~])/sprintf('%%%02X', ord $1)/ge; $s }

# Publishes `data` to `topic` on $srv's hub with more form fields; the update's id.
sub update {
    my ($srv, $topic, $data, @more) = @_;
    my %f = (topic => $topic, data => $data, @more);
    my $res = $srv->request(POST => '/.well-known/mercure',
                            body => join('&', map { esc($_) . '=' . esc($f{$_}) } sort keys %f),
                            headers => {Authorization => "Bearer $publisher",
                                        'Content-Type' => 'application/x-www-form-urlencoded'});
    is($res->{status}, 200, "published \"$data\"") or diag $res->{body};
    return $res->{body};
}

my $a = SSETest::Server->start(global => $global, conf => $hub);
ok(SSETest::Redis->wait_joined($a, $a), 'A reads the stream');
my %id;
$id{$_->[1]} = update($a, @$_) for ['https://example.com/books/1', 'b1'],
    ['https://example.com/authors/1', 'a1'], ['https://example.com/books/2', 'secret', private => 'on'],
    ['https://example.com/books/3', 'b3'];
my $b = SSETest::Server->start(global => $global, conf => $hub);
ok(SSETest::Redis->wait_joined($a, $a, $b), 'B reads the stream (from after those updates)');

my $sel = 'topic=' . esc('https://example.com/books/{id}');
my %want = (reader => [qw(secret b3 b4)], anonymous => [qw(b3 b4)]);
my %c = (reader => $b->subscribe("/.well-known/mercure?$sel",
                                 headers => {'Last-Event-ID' => $id{b1}, Authorization => "Bearer $books_reader"}),
         anonymous => $b->subscribe("/.well-known/mercure?$sel&lastEventID=" . esc($id{b1})));
my %got = map { $_ => [map { $_->{data} } $c{$_}->events(scalar(@{$want{$_}}) - 1, 10)] } keys %c;
update($a, 'https://example.com/books/4', 'b4');
for my $who (sort keys %c) {
    push @{$got{$who}}, map { $_->{data} } $c{$who}->events(1, 10);
    is_deeply($got{$who}, $want{$who}, "$who: the updates after b1 it may read, from Redis, then live");
    is($c{$who}->headers->{'last-event-id'}, $id{b1}, "$who: answered Last-Event-ID names b1");
    is(scalar($c{$who}->events(1, 1)), 0, "$who: nothing more");
    $c{$who}->close;
}
like($b->log_text, qr/SSE0730: resume after "\Q$id{b1}\E" served from Redis/, 'SSE0730 on B');

$_->stop for $a, $b;
$redis->stop;
done_testing;
