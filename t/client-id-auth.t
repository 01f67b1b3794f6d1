# Client ids the client chooses (issue 12, finding 5 of the security review): an SSEClientId
# expression that reads a request header, the query string or the URI is refused at start-up
# unless the admin writes `unauthenticated` after it; with %{REMOTE_USER} and basic
# authentication, a client sending another user's id in a header neither receives that
# user's `only` events nor replaces that user's stream.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;
use Digest::SHA qw(sha1);
use MIME::Base64 qw(encode_base64);

my $mods = SSETest::apxs_q('LIBEXECDIR');

subtest 'an id the client chooses is refused at start-up' => sub {
    for my $expr ('%{req:X-Client-Id}', '%{http:X-Client-Id}', '%{req_novary:X-User}',
                  '%{query_param:client}', '%{HTTP_COOKIE}', '%{QUERY_STRING}', '%{REQUEST_URI}',
                  '%{THE_REQUEST}', '"user-%{tolower:%{req:X-Client-Id}}"',
                  '"%{REMOTE_USER}%{HTTP_HOST}"',
                  # The Host header (UseCanonicalName Off), the request line, the client's
                  # port, how it connected, its TLS hello (mod_ssl loaded below).
                  '%{SERVER_NAME}', '"%{REMOTE_USER}@%{SERVER_PORT}"', '%{REMOTE_PORT}',
                  '%{REQUEST_METHOD}', '%{REQUEST_SCHEME}', '%{SERVER_PROTOCOL}',
                  '%{CONTENT_TYPE}', '%{HTTPS}', '%{HTTP2}',
                  '%{SSL_TLS_SNI}', '%{SSL_CIPHER}', '%{SSL_PROTOCOL}',
                  '%{SSL_CLIENTHELLO_CIPHERS}', '%{SSL:TLS_SNI}') {
        my ($rc, $out) = SSETest::Server->configtest(
            global => "LoadModule ssl_module $mods/mod_ssl.so\n",
            conf => "<Location /x>\nSetHandler sse-subscribe\nSSEClientId $expr\n</Location>\n");
        isnt($rc, 0, "SSEClientId $expr: httpd does not start");
        like($out, qr/SSEClientId: .* which the client chooses: anyone could claim another client's id, receive the events published for it \(only=\) and replace its stream/,
             '  and says why') or diag $out;
        like($out, qr/Use an authenticated identity, %\{REMOTE_USER\}.*unauthenticated/,
             '  and what to use instead');
    }
    my ($rc, $out) = SSETest::Server->configtest(
        conf => "<Location /x>\nSSEClientId %{req:X-Client-Id} trusted\n</Location>\n");
    isnt($rc, 0, 'a word other than unauthenticated after the expression is refused');
    like($out, qr/"trusted" after the expression must be the word unauthenticated/, '  saying so');
    for my $ok ('%{REMOTE_USER}', '%{req:X-Client-Id} unauthenticated',
                '%{query_param:client} Unauthenticated', '"%{reqenv:OIDC_CLAIM_sub}"',
                '%{SSL_CLIENT_S_DN_CN}', '"%{REMOTE_ADDR}"', '%{SERVER_NAME} unauthenticated') {
        ($rc, $out) = SSETest::Server->configtest(
            global => "LoadModule ssl_module $mods/mod_ssl.so\n",
            conf => "<Location /x>\nSetHandler sse-subscribe\nSSEClientId $ok\n</Location>\n");
        is($rc, 0, "SSEClientId $ok: accepted") or diag $out;
    }
};

# Basic authentication: alice and mallory, passwords in httpd's {SHA} format.
my $srv = SSETest::Server->start(
    global => join('', map { "LoadModule ${_}_module $mods/mod_$_.so\n" }
                       qw(authn_core authn_file auth_basic authz_user)),
    conf => <<'EOF', no_start => 1);
<Location /chat>
    SetHandler sse-subscribe
    SSEClientId %{REMOTE_USER}
    SSEDuplicateClient replace
    AuthType Basic
    AuthName chat
    AuthBasicProvider file
    AuthUserFile ${dir}/users
    Require valid-user
</Location>
EOF
{
    open my $fh, '>', $srv->dir . '/users' or die;
    print $fh "$_->[0]:{SHA}" . encode_base64(sha1($_->[1]), '') . "\n"
        for ['alice', 'alice-pw'], ['mallory', 'mallory-pw'];
    close $fh;
}
$srv->launch;
$srv->expect_log(qr/AH01618: user nobody not found/);

sub basic { 'Basic ' . encode_base64("$_[0]:$_[1]", '') }

subtest 'with REMOTE_USER, a header does not make a client alice' => sub {
    my $r = $srv->request(GET => '/chat/room', headers => {'X-Client-Id' => 'alice'}, timeout => 5);
    is($r->{status}, 401, 'no credentials: 401, whatever the header says');
    $r = $srv->request(GET => '/chat/room', headers => {Authorization => basic('nobody', 'x')},
                       timeout => 5);
    is($r->{status}, 401, 'unknown user: 401');

    my $alice = $srv->subscribe('/chat/room', headers => {Authorization => basic('alice', 'alice-pw')});
    is($alice->status, 200, 'alice subscribes');
    my $mallory = $srv->subscribe('/chat/room', headers => {Authorization => basic('mallory', 'mallory-pw'),
                                                            'X-Client-Id' => 'alice'});
    is($mallory->status, 200, 'mallory subscribes, claiming to be alice in a header');
    is($srv->publish('/publish/room?only=alice', 'for alice')->{status}, 201, 'an event only for alice');
    is($srv->publish('/publish/room', 'for all')->{status}, 201, 'then one for everyone');
    is_deeply([map { $_->{data} } $alice->events(2, 10)], ['for alice', 'for all'],
              'alice gets both');
    is_deeply([map { $_->{data} } $mallory->events(1, 10)], ['for all'],
              'mallory gets only the one for everyone');
    ok(!grep({ $_->{event} eq 'sse-close' } $alice->all_events), 'alice was not replaced');
    ok(!$alice->closed, "and alice's stream is open");
    is($srv->publish('/publish/room?only=alice', 'still alice')->{status}, 201, 'another one for alice');
    is(($alice->events(1, 10))[0]{data}, 'still alice', 'reaches her');
    $_->close for $alice, $mallory;
};

$srv->stop;
done_testing;
