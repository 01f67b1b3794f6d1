# The publisher Symfony applications use: Debian's php-symfony-mercure (Hub::publish(), with a
# StaticTokenProvider holding a token minted here) publishes to mod_sse's Mercure hub, public
# and private updates (several topics, an id of its own, a type, multi-line data); subscribers
# receive them with the id Hub::publish() returned, the private one only where the token's
# claims select its topic. Needs php-cli and php-symfony-mercure (tools/install-deps).
use strict;
use warnings;
use lib 't/lib';
use File::Temp ();
use SSEMercure;
use SSETest;
use Test::More;

my $dir = File::Temp::tempdir('mod_sse-symfony-XXXXXX', TMPDIR => 1, CLEANUP => 1);
chmod 0755, $dir;
my $key = SSEMercure::secret_file($dir);
# The application's side, as a Symfony service would call it.
my $publish_php = SSEMercure::symfony_publisher($dir);
plan skip_all => 'php-cli and php-symfony-mercure are not installed (tools/install-deps)'
    unless $publish_php;

my $srv = SSETest::Server->start(
    conf => SSEMercure::hub_location('/.well-known/mercure', "HS256 $key->{file}", anonymous => 1));
$srv->expect_log(qr/SSE0806: mercure publish refused \(403\)/);

my $url = 'http://127.0.0.1:' . $srv->port . '/.well-known/mercure';
sub jwt { SSEMercure::token($key, $_[0]) }
my $app = jwt({publish => ['*']});
# publish.php with the application's token, or the one given as `token => ...` first.
sub symfony_publish {
    my $token = $_[0] eq 'token' ? (splice @_, 0, 2)[1] : $app;
    return $publish_php->($url, $token, @_);
}
sub subscriber {
    my ($token, @topics) = @_;
    my $q = join '&', map { my $t = $_; $t =~ s/([^A-Za-z0-9\-._~])/sprintf('%%%02X', ord $1)/ge; "topic=$t" } @topics;
    return $srv->subscribe("/.well-known/mercure?$q",
                           headers => $token ? {Authorization => "Bearer $token"} : {});
}

my $reader = subscriber(jwt({subscribe => ['https://example.com/books/{id}']}),
                        'https://example.com/books/{id}');
my $anon = subscriber(undef, 'https://example.com/books/{id}');
is($_->status, 200, 'a subscriber') for $reader, $anon;

my ($rc, $public) = symfony_publish('https://example.com/books/1 https://example.com/authors/2',
                                    "{\"title\":\"one\"}\nsecond line", '', '', 'book.updated');
is($rc, 0, 'Hub::publish() of a public update') or diag($public);
like($public, qr/^urn:uuid:[0-9a-f-]{36}$/, 'it returns the id the hub generated');
my ($rc2, $private) = symfony_publish('https://example.com/books/2', 'secret', 'private',
                                      'https://example.com/updates/42');
is($rc2, 0, 'Hub::publish() of a private update') or diag($private);
is($private, 'https://example.com/updates/42', 'it returns the id it gave');
my ($rc3, $last) = symfony_publish('https://example.com/books/3', 'last');
is($rc3, 0, 'a third update');

my @got = $reader->events(3, 10);
is_deeply([map { $_->{data} } @got], ["{\"title\":\"one\"}\nsecond line", 'secret', 'last'],
          'the subscriber with claims gets all three, data intact');
is_deeply([map { $_->{id} } @got], [$public, $private, $last], 'with the ids Hub::publish() returned');
is($got[0]{event}, 'book.updated', 'and the type');
$anon->read_until(sub { grep { $_->{data} eq 'last' } $anon->all_events }, 10);
is_deeply([map { $_->{data} } $anon->all_events], ["{\"title\":\"one\"}\nsecond line", 'last'],
          'an anonymous subscriber gets the public ones only');

my ($rc4, $refused) = symfony_publish(token => jwt({publish => ['https://example.com/authors/{id}']}),
                                      'https://example.com/books/1', 'x');
isnt($rc4, 0, 'a token whose claims do not select the topic: Hub::publish() fails');
like($refused, qr/403/, 'with the hub\'s 403');
$_->close for $reader, $anon;
$srv->stop;
done_testing;
