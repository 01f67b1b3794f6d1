# Signed tokens (docs/tokens.md) against a real httpd: locations with SSETokenKey HS256, RS256
# and ES256 (keys made here with openssl), tokens minted with Crypt::JWT (the valid ones) and
# edited by hand (the bad ones). For subscribe, publish (POST), GET figures and DELETE: a valid
# token from each source (Authorization: Bearer, the cookie, the authorization query parameter)
# is served; a missing, malformed, expired, not yet valid, wrongly signed (other key, alg none,
# HS256 over the RS256/ES256 public key's PEM), tampered (payload, signature) token is answered
# 401 with the reason, and a valid one that does not name a channel 403 naming it. A stream
# whose token expires gets an sse-close notice (token-expired) and ends; its reconnect with the
# same token gets 401. The token's sub is REMOTE_USER: SSEClientId %{REMOTE_USER} makes
# `only=<sub>` reach that token's holder only. Startup refuses bad key files.
use strict;
use warnings;
use lib 't/lib';
use Crypt::JWT qw(encode_jwt);
use File::Temp ();
use JSON::PP;
use MIME::Base64 qw(encode_base64url);
use SSETest;
use Test::More;
use Time::HiRes qw(time sleep);

# ---- keys, made for this run ----
my $keys = File::Temp::tempdir('mod_sse-token-XXXXXX', TMPDIR => 1, CLEANUP => 1);
chmod 0755, $keys;
sub run_openssl {
    my ($args) = @_;
    system("openssl $args >/dev/null 2>&1") == 0 or die "openssl $args failed";
}
sub slurp { my ($f) = @_; open my $fh, '<', $f or die "$f: $!"; local $/; return <$fh> }
sub spew { my ($f, $t) = @_; open my $fh, '>', $f or die "$f: $!"; print $fh $t; close $fh }

my $secret = `openssl rand -hex 32`;
chomp $secret;
spew("$keys/hs.secret", "$secret\n"); # the trailing newline is not part of the secret
run_openssl("genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out $keys/rs.key");
run_openssl("pkey -in $keys/rs.key -pubout -out $keys/rs.pub");
run_openssl("genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out $keys/rs-other.key");
run_openssl("genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $keys/es.key");
run_openssl("pkey -in $keys/es.key -pubout -out $keys/es.pub");
run_openssl("genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $keys/es-other.key");

my %alg = (
    HS256 => {file => "$keys/hs.secret", sign => $secret, other => "${secret}x"},
    RS256 => {file => "$keys/rs.pub", sign => \slurp("$keys/rs.key"),
              other => \slurp("$keys/rs-other.key"), pub => slurp("$keys/rs.pub")},
    ES256 => {file => "$keys/es.pub", sign => \slurp("$keys/es.key"),
              other => \slurp("$keys/es-other.key"), pub => slurp("$keys/es.pub")},
);

sub mint {
    my ($alg, $claims, %o) = @_;
    return encode_jwt(payload => $claims, alg => $o{as} // $alg,
                      key => $o{key} // $alg{$alg}{sign});
}
sub b64json { encode_base64url(JSON::PP->new->canonical->encode($_[0])) }

# ---- the server ----
my $locations = '';
for my $a (sort keys %alg) {
    my $l = lc substr($a, 0, 2);
    $locations .= <<"EOF";
<Location /$l>
    SetHandler sse-subscribe
    SSETokenKey $a $alg{$a}{file}
</Location>
<Location /$l-pub>
    SetHandler sse-publish
    SSETokenKey $a $alg{$a}{file}
</Location>
EOF
}
my $srv = SSETest::Server->start(conf => <<"EOF");
$locations
<Location /hs/open>
    SSETokenKey off
</Location>
<Location /hs-cookie>
    SetHandler sse-subscribe
    SSETokenKey HS256 $keys/hs.secret
    SSETokenCookie appToken
</Location>
<Location /hs-blocking>
    SetHandler sse-subscribe
    SSETokenKey HS256 $keys/hs.secret
    SSEAsync Off
</Location>
<Location /who>
    SetHandler sse-subscribe
    SSETokenKey HS256 $keys/hs.secret
    SSEClientId %{REMOTE_USER}
</Location>
EOF
# Every refusal below is logged (warn for subscribe, error for publish); they are checked one
# by one, and each must name its reason.
$srv->expect_log(qr/SSE014[0-3]: (?:subscribe|publish) refused \(40[13]\)/);

my $now = int time;
sub bearer { {Authorization => "Bearer $_[0]"} }
sub json_of { SSETest::json_decode($_[0]{body}) // {} }

# A refusal: status, the JSON body's status and error, the log line with its tag; the token
# itself never in the log.
sub refused {
    my ($res, $status, $tag, $reason, $what, $token) = @_;
    my $j = json_of($res);
    is($res->{status}, $status, "$what: $status");
    is($j->{status}, $status, "$what: JSON body with the status");
    like($j->{error} // '', $reason, "$what: the body says why");
    if ($status == 401) {
        like($res->{headers}{'www-authenticate'} // '', qr/^Bearer realm="mod_sse"/,
             "$what: WWW-Authenticate: Bearer");
    }
    my $log = $srv->log_text;
    ok($log =~ /\Q$tag\E: \w+ refused \($status\): [^\n]*$reason/, "$what: $tag logged with why")
        or diag("no $tag line matching $reason");
    if (defined $token && length $token > 20) {
        my ($sig) = $token =~ /([^.]{12,})$/;
        ok(index($log, $token) < 0 && (!defined $sig || index($log, $sig) < 0),
           "$what: the token is not in the log");
    }
}

# A subscribe that is served: 200, and an event published afterwards arrives.
my $n = 0;
sub served {
    my ($path, $headers, $what, $channel) = @_;
    $channel //= 'news';
    my $c = $srv->subscribe($path, headers => $headers);
    is($c->status, 200, "$what: 200");
    my $data = "ev-" . ++$n;
    is($srv->publish("/publish/$channel", $data)->{status}, 201, "$what: published");
    my @ev = $c->events(1, 10);
    is($ev[0]{data} // '', $data, "$what: the event arrives");
    $c->close;
}

for my $a (sort keys %alg) {
    my $l = lc substr($a, 0, 2);
    my $sub = mint($a, {sub => 'alice', exp => $now + 3600,
                        mercure => {subscribe => ['news', 'user/{id}', 'logs/{+path}']}});
    my $pub = mint($a, {mercure => {publish => ['news', 'room/{r}']}});

    # ---- valid, from each source ----
    served("/$l/news", bearer($sub), "$a subscribe, Authorization: Bearer");
    served("/$l/news", {Cookie => "other=1; mercureAuthorization=$sub"}, "$a subscribe, cookie");
    served("/$l/news?authorization=$sub", {}, "$a subscribe, query parameter");
    served("/$l/user/bob", bearer($sub), "$a subscribe, {id} template", 'user/bob');
    served("/$l/logs/a/b/c", bearer($sub), "$a subscribe, {+path} template", 'logs/a/b/c');
    is($srv->request(HEAD => "/$l/news", headers => bearer($sub))->{status}, 200,
       "$a HEAD with a token: 200");

    # ---- refused ----
    my $r = sub { $srv->request(GET => "/$l/news", headers => bearer($_[0])) };
    refused($srv->request(GET => "/$l/news"), 401, 'SSE0140', qr/a token is required/,
            "$a subscribe without a token");
    is($srv->request(HEAD => "/$l/news")->{status}, 401, "$a HEAD without a token: 401");
    refused($r->('abc.def'), 401, 'SSE0141', qr/not a JWT/, "$a malformed token");
    refused($r->('!!!.e30.x'), 401, 'SSE0141', qr/header is not base64url/, "$a bad header");
    my $expired = mint($a, {exp => $now - 10, mercure => {subscribe => ['*']}});
    refused($r->($expired), 401, 'SSE0142', qr/the token expired/, "$a expired", $expired);
    my $early = mint($a, {nbf => $now + 3600, mercure => {subscribe => ['*']}});
    refused($r->($early), 401, 'SSE0142', qr/not valid yet/, "$a not yet valid", $early);
    my $other = mint($a, {mercure => {subscribe => ['*']}}, key => $alg{$a}{other});
    refused($r->($other), 401, 'SSE0141', qr/signature does not verify/, "$a other key", $other);
    my $none = b64json({alg => 'none', typ => 'JWT'}) . '.'
             . b64json({mercure => {subscribe => ['*']}}) . '.';
    refused($r->($none), 401, 'SSE0141', qr/signed with "none"/, "$a alg none", $none);
    if ($alg{$a}{pub}) {
        # HS256 with the public key's PEM text as the secret: libjwt alone would accept it.
        my $confused = mint($a, {mercure => {subscribe => ['*']}}, as => 'HS256',
                            key => $alg{$a}{pub});
        refused($r->($confused), 401, 'SSE0141', qr/signed with "HS256"; this location accepts $a only/,
                "$a: HS256 signed with the public key", $confused);
    } else {
        my $rs = mint('RS256', {mercure => {subscribe => ['*']}});
        refused($r->($rs), 401, 'SSE0141', qr/signed with "RS256"; this location accepts HS256/,
                "$a: an RS256 token", $rs);
    }
    my ($h, $p, $s) = split /\./, $sub;
    my $wider = b64json({sub => 'alice', exp => $now + 3600, mercure => {subscribe => ['*']}});
    refused($r->("$h.$wider.$s"), 401, 'SSE0141', qr/signature does not verify/,
            "$a tampered payload");
    (my $s2 = $s) =~ s/^(.)/$1 eq 'A' ? 'B' : 'A'/e;
    refused($r->("$h.$p.$s2"), 401, 'SSE0141', qr/signature does not verify/,
            "$a tampered signature");
    refused($srv->request(GET => "/$l/secret", headers => bearer($sub)), 403, 'SSE0143',
            qr/does not allow subscribing to channel "secret"/, "$a channel not named");
    refused($srv->request(GET => "/$l/news,secret", headers => bearer($sub)), 403, 'SSE0143',
            qr/channel "secret"/, "$a one of two channels not named");
    refused($srv->request(GET => "/$l/news?channel=news,secret", headers => bearer($sub)), 403,
            'SSE0143', qr/channel "secret"/, "$a a channel named in the query");
    refused($srv->request(GET => "/$l/user/bob/inbox", headers => bearer($sub)), 403, 'SSE0143',
            qr/channel "user\/bob\/inbox"/, "$a {id} does not span a /");
    refused($srv->request(GET => "/$l/news", headers => bearer($pub)), 403, 'SSE0143',
            qr/subscribing to channel "news"/, "$a a publish-only token does not subscribe");

    # ---- publish, GET figures, DELETE ----
    my $post = sub {
        my ($path, $token, %o) = @_;
        $srv->request(POST => $path, body => 'x',
                      headers => defined $token ? bearer($token) : {}, %o);
    };
    is($post->("/$l-pub/news", $pub)->{status}, 201, "$a publish with a token: 201");
    is($srv->request(POST => "/$l-pub/room/1?authorization=$pub", body => 'x')->{status}, 201,
       "$a publish, token in the query parameter (not taken for an event field): 201");
    is($srv->request(POST => "/$l-pub/news", body => 'x',
                     headers => {Cookie => "mercureAuthorization=$pub",
                                 Origin => 'http://127.0.0.1:' . $srv->port})->{status}, 201,
       "$a publish, token in the cookie, from the server's own origin: 201");
    my $published_before = json_of($srv->request(GET => "/$l-pub/news", headers => bearer($pub)))
                           ->{events_published};
    refused($post->("/$l-pub/news"), 401, 'SSE0140', qr/a token is required/,
            "$a publish without a token");
    refused($post->("/$l-pub/news", $sub), 403, 'SSE0143',
            qr/does not allow publishing to channel "news"/, "$a publish with a subscribe token");
    refused($post->("/$l-pub/news,secret", $pub), 403, 'SSE0143', qr/channel "secret"/,
            "$a publish to a channel not named");
    refused($srv->request(POST => "/$l-pub/news", body => '{"channel":"secret","data":"x"}',
                          headers => {%{bearer($pub)}, 'Content-Type' => 'application/json'}),
            403, 'SSE0143', qr/channel "secret"/, "$a publish naming a channel in the body");
    my $pub_expired = mint($a, {exp => $now - 1, mercure => {publish => ['*']}});
    refused($post->("/$l-pub/news", $pub_expired), 401, 'SSE0142', qr/expired/,
            "$a publish with an expired token");
    refused($post->("/$l-pub/news", $none), 401, 'SSE0141', qr/"none"/, "$a publish, alg none");
    is($srv->request(GET => "/$l-pub/news", headers => bearer($pub))->{status}, 200,
       "$a GET figures with a publish token: 200");
    refused($srv->request(GET => "/$l-pub/news", headers => bearer($sub)), 403, 'SSE0143',
            qr/publishing to channel "news"/, "$a GET figures with a subscribe token");
    refused($srv->request(GET => "/$l-pub/news"), 401, 'SSE0140', qr/a token is required/,
            "$a GET figures without a token");
    refused($srv->request(DELETE => "/$l-pub/news", headers => bearer($sub)), 403, 'SSE0143',
            qr/publishing to channel "news"/, "$a DELETE with a subscribe token");
    refused($srv->request(DELETE => "/$l-pub/news", headers => bearer($other)), 401, 'SSE0141',
            qr/does not verify/, "$a DELETE with a token of another key");
    is($srv->request(DELETE => "/$l-pub/room/1", headers => bearer($pub))->{status}, 200,
       "$a DELETE with a publish token: 200");
    # Nothing refused was published: no publish to news succeeded since the count was read.
    my $fig = json_of($srv->request(GET => "/$l-pub/news", headers => bearer($pub)));
    ok(defined $published_before, "$a figures of news");
    is($fig->{events_published}, $published_before, "$a none of the refused publishes went out");
}

# The token is checked before the body is read: an anonymous client with a malformed body is
# told it needs a token (401), not what is wrong with its body.
refused($srv->request(POST => '/hs-pub/news', body => '{"data":',
                      headers => {'Content-Type' => 'application/json'}),
        401, 'SSE0140', qr/a token is required/, 'a malformed JSON body without a token');
# sub becomes REMOTE_USER and a log field: a control character in it makes the token bad (a NUL
# is refused already by libjwt's JSON parser, as a token that does not verify).
refused($srv->request(GET => '/hs/news', headers => bearer(
            mint('HS256', {sub => "alice\x01x", mercure => {subscribe => ['*']}}))),
        401, 'SSE0141', qr/claim sub must not hold control characters/, 'sub holding a control character');
is($srv->request(GET => '/hs/news', headers => bearer(
       mint('HS256', {sub => "alice\0x", mercure => {subscribe => ['*']}})))->{status}, 401,
   'sub holding a NUL: 401');

# ---- where the token comes from ----
my $tok = mint('HS256', {mercure => {subscribe => ['*']}});
served('/hs-cookie/news', {Cookie => "appToken=$tok"}, 'SSETokenCookie appToken');
refused($srv->request(GET => '/hs-cookie/news', headers => {Cookie => "mercureAuthorization=$tok"}),
        401, 'SSE0140', qr/cookie appToken/, 'the default cookie is not read there');
# The header comes first: a bad Bearer token is not saved by a good cookie.
refused($srv->request(GET => '/hs/news', headers => {%{bearer('x.y.z')},
                                                    Cookie => "mercureAuthorization=$tok"}),
        401, 'SSE0141', qr/from the Authorization header/, 'Bearer before the cookie');
# Another scheme is not a token: the cookie is used.
served('/hs/news', {Authorization => 'Basic YTpi', Cookie => "mercureAuthorization=$tok"},
       'Authorization: Basic is not a token; the cookie is');
# The channel is open/news: a nested <Location> without SetHandler does not move the channels' base (docs/directives.md).
served('/hs/open/news', {}, 'SSETokenKey off in a nested location: no token needed', 'open/news');
# The cookie twice with different values: which one to believe? Neither (httpd's cookie reader
# logs AH00011 about it).
$srv->expect_log(qr/AH00011: .*client submitted cookie 'mercureAuthorization' more than once/);
refused($srv->request(GET => '/hs/news',
                      headers => {Cookie => "mercureAuthorization=$tok; mercureAuthorization=x"}),
        401, 'SSE0141', qr/cookie mercureAuthorization is sent more than once/,
        'the cookie twice, with different values');

# ---- REMOTE_USER is the token's sub ----
{
    my $alice = mint('HS256', {sub => 'alice', mercure => {subscribe => ['room']}});
    my $bob = mint('HS256', {sub => 'bob', mercure => {subscribe => ['room']}});
    my $ca = $srv->subscribe('/who/room', headers => bearer($alice));
    my $cb = $srv->subscribe('/who/room', headers => bearer($bob));
    is($ca->status, 200, 'alice subscribed');
    is($cb->status, 200, 'bob subscribed');
    is($srv->publish('/publish/room?only=alice', 'for-alice')->{status}, 201, 'only=alice');
    is($srv->publish('/publish/room', 'for-all')->{status}, 201, 'to everyone');
    my @a = $ca->events(2, 10);
    my @b = $cb->events(1, 10);
    is_deeply([map { $_->{data} } @a], ['for-alice', 'for-all'], 'alice gets her event');
    is_deeply([map { $_->{data} } @b], ['for-all'], 'bob does not get alice\'s');
    $ca->close;
    $cb->close;
}

# ---- a stream ends when its token expires ----
for my $path ('/hs/news', '/hs-blocking/news') {
    my $exp = int(time) + 3;
    my $t = mint('HS256', {exp => $exp, mercure => {subscribe => ['news']}});
    my $c = $srv->subscribe($path, headers => bearer($t));
    is($c->status, 200, "$path: a token valid for 3 s: 200");
    is($srv->publish('/publish/news', 'before-expiry')->{status}, 201, 'published');
    my @ev = $c->events(2, $exp - time + 15);
    is_deeply([map { [$_->{event}, $_->{data}] } @ev],
              [['message', 'before-expiry'], ['sse-close', '{"reason":"token-expired"}']],
              "$path: the event, then the token-expired notice");
    $c->read_until(sub { 0 }, 10) unless $c->closed;
    ok($c->closed, "$path: the stream ended");
    ok(time >= $exp, "$path: not before exp");
    ok($srv->wait_for(sub { $srv->access_log =~ m{GET \Q$path\E HTTP/1.1" 200 .* end=token-expired} },
                      10), "$path: SSE_END=token-expired in the access log");
    # EventSource reconnects with the same token: refused, so it stops.
    refused($srv->request(GET => $path, headers => bearer($t)), 401, 'SSE0142',
            qr/the token expired/, "$path: the reconnect");
}

$srv->stop;

# ---- startup refuses bad key files ----
spew("$keys/short.secret", "tooshort\n");
mkdir "$keys/a-dir";
my @bad = (
    ["SSETokenKey HS256 $keys/missing.secret", qr/SSETokenKey: cannot read the key file "\Q$keys\E\/missing.secret": No such file/],
    ["SSETokenKey HS256 $keys/short.secret", qr/an HS256 secret of 8 bytes; at least 32/],
    ["SSETokenKey HS256 $keys/a-dir", qr/is not a regular file/],
    ["SSETokenKey RS256 $keys/es.pub", qr/not an RSA public key/],
    ["SSETokenKey ES256 $keys/rs.pub", qr/not an EC public key/],
    ["SSETokenKey RS256 $keys/rs.key", qr/not a PEM public key/],
    ["SSETokenKey RS256 $keys/hs.secret", qr/not a PEM public key/],
    ["SSETokenKey HS512 $keys/hs.secret", qr/"HS512" is not HS256, RS256 or ES256/],
    ["SSETokenKey none", qr/"none" is not HS256, RS256 or ES256/],
    ["SSETokenKey HS256", qr/HS256 needs a key file/],
    ["SSETokenCookie a=b", qr/SSETokenCookie: "a=b" is not a cookie name/],
);
for my $case (@bad) {
    my ($line, $want) = @$case;
    my ($rc, $out) = SSETest::Server->configtest(
        conf => "<Location /x>\nSetHandler sse-subscribe\n$line\n</Location>\n");
    isnt($rc, 0, "configtest fails: $line");
    like($out, $want, "it says why: $line");
}

done_testing;
