# Where a publisher's or subscriber's token may come from (docs/tokens.md): the header, then the
# query parameter, then the cookie (an expired cookie does not hide a valid ?authorization=, a
# bad query token is not rescued by a good cookie), at a Mercure hub and a native location;
# cross-site request forgery with the token cookie refused at a Mercure hub and at a native
# publish location (SSETokenCookieOrigins: Origin, else Referer, must be allowed; the header and
# the query parameter are no such risk).
use strict;
use warnings;
use lib 't/lib';
use File::Temp ();
use SSEMercure;
use SSETest;
use Test::More;

my $dir = File::Temp::tempdir('mod_sse-mauth-XXXXXX', TMPDIR => 1, CLEANUP => 1);
chmod 0755, $dir;
my $key = SSEMercure::secret_file($dir);
my $srv = SSETest::Server->start(conf => SSEMercure::hub_location('/hub', "HS256 $key->{file}")
    . <<"EOF");
<Location /app-hub>
    SetHandler mercure-hub
    SSEMercureHub app
    SSETokenKey HS256 $key->{file}
    SSETokenCookieOrigins https://app.example.com HTTP://Admin.Example.com:8443
</Location>
<Location /publish>
    SetHandler sse-publish
    SSETokenKey HS256 $key->{file}
</Location>
<Location /events>
    SetHandler sse-subscribe
    SSETokenKey HS256 $key->{file}
</Location>
EOF
$srv->expect_log(qr/SSE0144: (?:mercure )?publish refused \(403\)/,
                 qr/SSE014[12]: (?:subscribe|publish) refused \(401\)/);

my $pub = SSEMercure::token($key, {publish => ['*']});
my $own = 'http://127.0.0.1:' . $srv->port;
sub post {
    my ($path, %h) = @_;
    return $srv->request(POST => $path, body => 'topic=https%3A%2F%2Fexample.com%2Fa&data=x',
                         headers => {'Content-Type' => 'application/x-www-form-urlencoded', %h});
}
sub refused {
    my ($r, $re, $what) = @_;
    is($r->{status}, 403, "$what: 403");
    like(SSETest::json_decode($r->{body})->{error} // '', $re, "$what: the body says why");
    like($srv->log_text, qr/SSE0144: [^\n]*refused \(403\)/, "$what: SSE0144 logged");
}
my %cookie = (Cookie => "mercureAuthorization=$pub");

# ---- which token counts: header, then query, then cookie ----
{
    my $both = SSEMercure::token($key, {publish => ['*'], subscribe => ['*']});
    my $expired = SSEMercure::token($key, {publish => ['*'], subscribe => ['*']}, exp => time - 60);
    my $status = sub {
        my ($method, $path, $query, %h) = @_;
        my $url = $path . ($path =~ /\?/ ? '&' : '?') . ($query ? "authorization=$query" : 'x=');
        if ($method eq 'GET') {
            my $c = $srv->subscribe($url, headers => \%h);
            my $st = $c->status;
            $c->close;
            return $st;
        }
        return $srv->request(POST => $url, body => 'topic=a&data=x',
                             headers => {'Content-Type' => 'application/x-www-form-urlencoded',
                                         Origin => $own, %h})->{status};
    };
    for my $case (['GET', '/hub?topic=a', 200, 'Mercure subscribe'],
                  ['POST', '/hub', 200, 'Mercure publish'],
                  ['GET', '/events/news', 200, 'native subscribe']) {
        my ($m, $path, $ok, $what) = @$case;
        is($status->($m, $path, $both, Cookie => "mercureAuthorization=$expired"), $ok,
           "$what: an expired cookie and a valid query token: the query wins");
        is($status->($m, $path, $expired, Cookie => "mercureAuthorization=$both"), 401,
           "$what: an expired query token and a valid cookie: the query wins (401)");
        is($status->($m, $path, $expired, Authorization => "Bearer $both"), $ok,
           "$what: a valid header and an expired query token: the header wins");
        is($status->($m, $path, $both, Authorization => "Bearer $expired"), 401,
           "$what: an expired header and a valid query token: the header wins (401)");
        is($status->($m, $path, undef, Authorization => "Bearer $both",
                     Cookie => "mercureAuthorization=$expired"), $ok,
           "$what: a valid header and an expired cookie: the header wins");
    }
}

# ---- the cookie: only from an allowed origin ----
refused(post('/hub', %cookie, Origin => 'https://evil.example'), qr/"https:\/\/evil\.example" is not one/,
        'cookie token, another site\'s Origin');
refused(post('/hub', %cookie), qr/neither/, 'cookie token, no Origin nor Referer');
refused(post('/hub', %cookie, Referer => 'https://evil.example/page'), qr/evil/,
        'cookie token, another site\'s Referer');
refused(post('/hub', %cookie, Origin => 'null'), qr/neither|not one/, 'cookie token, Origin null');
is(post('/hub', %cookie, Origin => $own)->{status}, 200, 'cookie token, the server\'s own origin: 200');
is(post('/hub', %cookie, Referer => "$own/page?x")->{status}, 200,
   'cookie token, a Referer of the server\'s own origin: 200');
is(post('/app-hub', %cookie, Origin => 'https://app.example.com')->{status}, 200,
   'SSETokenCookieOrigins: a listed origin');
is(post('/app-hub', %cookie, Origin => 'http://admin.example.com:8443')->{status}, 200,
   'SSETokenCookieOrigins: origins compare without case');
refused(post('/app-hub', %cookie, Origin => $own), qr/not one/,
        'SSETokenCookieOrigins: the own origin is not implied');
is(post('/hub', Authorization => "Bearer $pub", Origin => 'https://evil.example')->{status}, 200,
   'the Authorization header: no origin check (a browser does not add it by itself)');
is($srv->request(POST => "/hub?authorization=$pub", body => 'topic=a&data=x', headers =>
                 {'Content-Type' => 'application/x-www-form-urlencoded', Origin => 'https://evil.example'})
       ->{status}, 200, 'the query parameter: no origin check');

# ---- a native publish location: the same ----
refused($srv->request(POST => '/publish/news', body => 'x',
                      headers => {%cookie, Origin => 'https://evil.example'}),
        qr/evil/, 'native publish, cookie token, another site\'s Origin');
is($srv->request(POST => '/publish/news', body => 'x', headers => {%cookie, Origin => $own})->{status},
   201, 'native publish, cookie token, own origin: 201');
is($srv->request(GET => '/publish/news', headers => {%cookie, Origin => 'https://evil.example'})->{status},
   200, 'native publish location, GET figures: no origin check (it changes nothing)');

$srv->stop;
done_testing;
