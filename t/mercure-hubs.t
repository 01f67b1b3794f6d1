# Several Mercure hubs in one server (docs/mercure.md, SSEMercureHub): each mercure-hub
# location is its own hub, with its own bus channel, so a subscriber of one never gets an
# update published to another (private or public, whatever the keys), and a publisher of one
# cannot reach another's subscribers; locations naming the same SSEMercureHub share one.
use strict;
use warnings;
use lib 't/lib';
use File::Temp ();
use SSEMercure;
use SSETest;
use Test::More;

my @dirs = map { File::Temp::tempdir("mod_sse-hubs$_-XXXXXX", TMPDIR => 1, CLEANUP => 1) } 1, 2;
chmod 0755, @dirs;
my ($ka, $kb) = map { SSEMercure::secret_file($_) } @dirs;
my $srv = SSETest::Server->start(global => "SSEHistory 3\n", conf => join '',
    SSEMercure::hub_location('/hub-h', "HS256 $ka->{file}", anonymous => 1),
    SSEMercure::hub_location('/hub-a', "HS256 $ka->{file}", anonymous => 1),
    SSEMercure::hub_location('/hub-b', "HS256 $kb->{file}", anonymous => 1),
    map({ "<Location /shared-$_>\n    SetHandler mercure-hub\n    SSEMercureHub shared\n"
          . "    SSETokenKey HS256 $ka->{file}\n</Location>\n" } 1, 2));

my %pub = (a => SSEMercure::token($ka, {publish => ['*']}), b => SSEMercure::token($kb, {publish => ['*']}));
my %sub = (a => SSEMercure::token($ka, {subscribe => ['*']}), b => SSEMercure::token($kb, {subscribe => ['*']}));
my $topic = 'https://example.com/secret';

sub update {
    my ($path, $token, $data, @more) = @_;
    my $esc = sub { my ($s) = @_; $s =~ s/([^A-Za-z0-9\-._~])/sprintf('%%%02X', ord $1)/ge; $s };
    my $body = join '&', "topic=" . $esc->($topic), "data=" . $esc->($data), @more;
    my $res = $srv->request(POST => $path, body => $body,
                            headers => {'Content-Type' => 'application/x-www-form-urlencoded',
                                        Authorization => "Bearer $token"});
    is($res->{status}, 200, "published \"$data\" at $path") or diag($res->{body});
}
sub subscribe {
    my ($path, $token, $query) = @_;
    return $srv->subscribe("$path?topic=*" . ($query ? "&$query" : ''),
                           headers => $token ? {Authorization => "Bearer $token"} : {});
}
sub got_until {
    my ($c, $last) = @_;
    $c->read_until(sub { grep { $_->{data} eq $last } $c->all_events }, 10);
    return map { $_->{data} } $c->all_events;
}

my $b_reader = subscribe('/hub-b', $sub{b});
my $b_anon = subscribe('/hub-b');
my $a_reader = subscribe('/hub-a', $sub{a});
is($b_reader->status, 200, 'a subscriber of hub B');
update('/hub-a', $pub{a}, 'a-private', 'private=on');
update('/hub-a', $pub{a}, 'a-public');
update('/hub-b', $pub{b}, 'b-injected');
update('/hub-b', $pub{b}, 'b-end');
update('/hub-a', $pub{a}, 'a-end');
is_deeply([got_until($b_reader, 'b-end')], ['b-injected', 'b-end'],
          "hub B's subscriber with B's claims: none of hub A's updates, private or public");
is_deeply([got_until($b_anon, 'b-end')], ['b-injected', 'b-end'], "hub B's anonymous subscriber: the same");
is_deeply([got_until($a_reader, 'a-end')], ['a-private', 'a-public', 'a-end'],
          "hub A's subscriber: nothing a publisher of hub B sent");
$_->close for $b_reader, $b_anon, $a_reader;

my $c = subscribe('/hub-b', $sub{b}, 'lastEventID=earliest');
is_deeply([got_until($c, 'b-end')], ['b-injected', 'b-end'], "earliest at hub B: only hub B's updates");
$c->close;

my $shared = subscribe('/shared-2', $sub{a});
update('/shared-1', $pub{a}, 'shared');
is_deeply([got_until($shared, 'shared')], ['shared'], 'two locations with one SSEMercureHub share it');
$shared->close;

# A resume whose id the hub holds but SSEHistory (3 updates) does not reach back to: the
# update between is lost, and the subscriber is told (sse-missed), not left to believe it
# got everything.
{
    my $esc = sub { my ($s) = @_; $s =~ s/([^A-Za-z0-9\-._~])/sprintf('%%%02X', ord $1)/ge; $s };
    my $send = sub {
        my ($t, $data, @more) = @_;
        my $res = $srv->request(POST => '/hub-h', body => join('&', 'topic=' . $esc->($t),
                                                              "data=$data", @more),
                                headers => {'Content-Type' => 'application/x-www-form-urlencoded',
                                            Authorization => "Bearer $pub{a}"});
        is($res->{status}, 200, "published $data");
    };
    $send->('https://example.com/a', 'x0', 'id=urn%3Ax0');
    $send->('https://example.com/a', 'A1');
    $send->('https://example.com/b', "b$_") for 1 .. 5;
    my $c = $srv->subscribe('/hub-h?topic=' . $esc->('https://example.com/a'),
                            headers => {'Last-Event-ID' => 'urn:x0'});
    $send->('https://example.com/a', 'a-live');
    got_until($c, 'a-live');
    is_deeply([map { "$_->{event}:" . ($_->{event} eq 'sse-missed' ? '' : $_->{data}) } $c->all_events],
              ['sse-missed:', 'message:a-live'], 'Mercure: A1 is out of reach: sse-missed, then live');
    is($c->headers->{'last-event-id'} // '', 'earliest',
       'and the answer\'s Last-Event-ID is not the id asked for');
    $c->close;
}

$srv->stop;
done_testing;
