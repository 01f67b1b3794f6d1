# Apache as a Mercure hub (docs/mercure.md) against a real httpd: updates POSTed as forms with
# a publisher's token (Crypt::JWT, HS256 and RS256 keys made here), subscribers reading the
# stream with `topic` selectors. Exact topics, raw strings, several topics, several selectors,
# URI templates, `*`, non-matching updates (a later matching update shows they were skipped),
# private updates for subscribers whose mercure.subscribe claims select a topic and not for the
# others, the token from the header, the cookie or the query, refused tokens (wrong key,
# expired, claims not covering the topics), Last-Event-ID / lastEventID / earliest, the
# response's Last-Event-ID header, generated urn:uuid ids, multi-line data, type and retry, bad
# input, a hub without a key, and that native channels and Mercure topics do not meet.
use strict;
use warnings;
use lib 't/lib';
use Crypt::JWT qw(encode_jwt);
use File::Temp ();
use SSEMercure;
use SSETest;
use Test::More;

my $keys = File::Temp::tempdir('mod_sse-mercure-XXXXXX', TMPDIR => 1, CLEANUP => 1);
chmod 0755, $keys;
sub slurp { my ($f) = @_; open my $fh, '<', $f or die "$f: $!"; local $/; return <$fh> }
my $key = SSEMercure::secret_file($keys);
my $secret = $key->{secret};
system("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out $keys/rs.key "
       . ">/dev/null 2>&1 && openssl pkey -in $keys/rs.key -pubout -out $keys/rs.pub "
       . ">/dev/null 2>&1") == 0 or die 'openssl failed';

# The shipped example (conf/mercure-hub.conf), its key file put here: with its CORS lines.
my $mods = SSETest::apxs_q('LIBEXECDIR');
(my $example = slurp('conf/mercure-hub.conf'))
    =~ s{(SSETokenKey HS256) /etc/apache2/mercure\.secret}{$1 $key->{file}}
    or die 'no key file in conf/mercure-hub.conf';
$example =~ s{<Location /\.well-known/mercure>}{<Location /example-hub>} or die 'no hub location';

my $srv = SSETest::Server->start(global => <<"EOF", conf => <<"EOF2");
LoadModule headers_module $mods/mod_headers.so
LoadModule setenvif_module $mods/mod_setenvif.so
EOF
$example
@{[SSEMercure::hub_location('/.well-known/mercure', "HS256 $key->{file}", hub => 'main')]}
@{[SSEMercure::hub_location('/anon-hub', "HS256 $key->{file}", anonymous => 1, hub => 'main')]}
@{[SSEMercure::hub_location('/rs-hub', "RS256 $keys/rs.pub")]}
@{[SSEMercure::hub_location('/nokey-hub', undef, anonymous => 1)]}
@{[SSEMercure::hub_location('/closed-hub', undef)]}
EOF2
$srv->expect_log(qr/SSE08\d\d: mercure (?:subscribe|publish) refused \(40\d\)/,
                 qr/SSE014[0-3]: (?:subscribe|publish) refused \(401\)/,
                 qr/SSE01\d\d: subscribe refused \(400\)/);

my $now = time;
sub hs { encode_jwt(payload => $_[0], alg => 'HS256', key => $_[1] // $secret) }
my $publisher = hs({mercure => {publish => ['*']}});
my $books_pub = hs({mercure => {publish => ['https://example.com/books/{id}']}});
my $reader = hs({mercure => {subscribe => ['https://example.com/books/{id}']}});
my $other_reader = hs({mercure => {subscribe => ['https://example.com/authors/{id}']}});
my $everything = hs({mercure => {subscribe => ['*']}});

sub esc { my ($s) = @_; utf8::encode($s) if utf8::is_utf8($s); $s =~ s/([^A-Za-z0-9\-._~])/sprintf('%%%02X', ord $1)/ge; $s }
sub form { my @kv = @_; join '&', map { esc($kv[2 * $_]) . '=' . esc($kv[2 * $_ + 1]) } 0 .. $#kv / 2 }
sub bearer { {Authorization => "Bearer $_[0]"} }

# POSTs an update; returns the response.
sub post {
    my (%o) = @_;
    my $token = exists $o{token} ? $o{token} : $publisher;
    my %h = ('Content-Type' => $o{type} // 'application/x-www-form-urlencoded',
             defined $token ? %{bearer($token)} : ());
    return $srv->request(POST => $o{path} // '/.well-known/mercure', body => form(@{$o{form}}),
                         headers => {%h, %{$o{headers} // {}}});
}
# Publishes `data` to `topics` (array) and returns the update's id.
sub update {
    my ($topics, $data, %o) = @_;
    my $res = post(form => [(map { (topic => $_) } @$topics), data => $data, @{$o{more} // []}],
                   %o);
    is($res->{status}, 200, "published \"$data\"") or diag($res->{body});
    return $res->{body};
}
sub hub_url {
    my ($selectors, %o) = @_;
    my $q = join '&', map { 'topic=' . esc($_) } @$selectors;
    $q .= '&' . $o{query} if $o{query};
    return ($o{path} // '/.well-known/mercure') . "?$q";
}
sub subscribe {
    my ($selectors, %o) = @_;
    my $token = exists $o{token} ? $o{token} : $everything;
    my %h = (defined $token ? %{bearer($token)} : (), %{$o{headers} // {}});
    return $srv->subscribe(hub_url($selectors, %o), headers => \%h);
}
# The data of the events `c` got, waiting for the last one to be `last`.
sub got_until {
    my ($c, $last) = @_;
    $c->read_until(sub { grep { $_->{data} eq $last } $c->all_events }, 10);
    return map { $_->{data} } $c->all_events;
}
my $n = 0;
sub fresh { 'https://example.com/t' . ++$n }

# ---- publish and receive: exact, raw string, several topics, several selectors ----
{
    my $topic = fresh();
    my $c = subscribe([$topic]);
    is($c->status, 200, 'subscribe: 200');
    like($c->headers->{'content-type'} // '', qr{^text/event-stream}, 'text/event-stream');
    my $res = post(form => [topic => $topic, data => 'hello']);
    is($res->{status}, 200, 'publish: 200');
    like($res->{headers}{'content-type'} // '', qr{^text/plain; charset=utf-8}, 'text/plain');
    like($res->{body}, qr/^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
         'a generated id is a urn:uuid IRI');
    my ($ev) = $c->events(1, 10);
    is($ev->{data} // '', 'hello', 'exact topic: the update arrives');
    is($ev->{id} // '', $res->{body}, 'with the id the publish answered');
    $c->close;

    my $raw = "raw string \xc3\xa9t\xc3\xa9 with spaces";
    $c = subscribe([$raw]);
    update([$raw], 'raw');
    is(($c->events(1, 10))[0]{data} // '', 'raw', 'a raw string topic (spaces, unicode)');
    $c->close;

    my ($a, $b, $x) = (fresh(), fresh(), fresh());
    my $cb = subscribe([$b]);
    my $cab = subscribe([$a, $x]);
    update([$a, $b], 'two-topics');
    update([$x], 'x-only');
    update([fresh()], 'elsewhere');
    update([$b], 'b-end');
    update([$a], 'a-end');
    is_deeply([got_until($cb, 'b-end')], ['two-topics', 'b-end'],
              'several topics: a subscriber of the second gets it; others not');
    is_deeply([got_until($cab, 'a-end')], ['two-topics', 'x-only', 'a-end'],
              'several selectors: each selects its updates, an update once');
    $_->close for $cb, $cab;
}

# ---- URI templates, *, non-matching ----
{
    my $c = subscribe(['https://example.com/books/{id}']);
    my $star = subscribe(['*']);
    update(['https://example.com/books/1'], 'book-1');
    update(['https://example.com/books/1/reviews'], 'review');
    update(['https://example.com/authors/1'], 'author');
    update(['https://example.com/books/caf%C3%A9'], 'book-escaped');
    update(['https://example.com/books/2'], 'book-2');
    is_deeply([got_until($c, 'book-2')], ['book-1', 'book-escaped', 'book-2'],
              'URI template {id}: its books, not a review or an author');
    is_deeply([got_until($star, 'book-2')],
              ['book-1', 'review', 'author', 'book-escaped', 'book-2'], '*: every update');
    $_->close for $c, $star;
    my $t = subscribe(['https://example.com/{+path}{?q}']);
    update(['https://example.com/a/b?q=1'], 'reserved');
    update(['http://example.com/a'], 'other-scheme');
    update(['https://example.com/end'], 'end');
    is_deeply([got_until($t, 'end')], ['reserved', 'end'], 'URI template {+path}{?q}');
    $t->close;
}

# ---- private updates ----
{
    my $mine = subscribe(['https://example.com/books/{id}'], token => $reader);
    my $others = subscribe(['https://example.com/books/{id}'], token => $other_reader);
    my $all = subscribe(['*'], token => $everything);
    my $anon = subscribe(['*'], token => undef, path => '/anon-hub');
    is($anon->status, 200, 'an anonymous subscriber where SSEMercureAnonymous is on');
    update(['https://example.com/books/9'], 'secret', more => [private => 'on']);
    update(['https://example.com/books/10', 'https://example.com/authors/3'], 'secret-2',
           more => [private => '']);
    update(['https://example.com/books/11'], 'public');
    is_deeply([got_until($mine, 'public')], ['secret', 'secret-2', 'public'],
              'private: claims selecting its topic receive it');
    is_deeply([got_until($others, 'public')], ['secret-2', 'public'],
              'private: claims selecting another of its topics receive it; others not');
    is_deeply([got_until($all, 'public')], ['secret', 'secret-2', 'public'],
              'private: claims * receive it');
    is_deeply([got_until($anon, 'public')], ['public'], 'private: not an anonymous subscriber');
    $_->close for $mine, $others, $all, $anon;
}

# ---- tokens: sources and refusals ----
{
    my $topic = fresh();
    my $h = subscribe([$topic], token => undef, headers => {Cookie => "mercureAuthorization=$everything"});
    my $q = subscribe([$topic], token => undef, query => "authorization=$everything");
    is($h->status, 200, 'subscribe with the token in the cookie');
    is($q->status, 200, 'subscribe with the token in the query');
    my $res = $srv->request(POST => '/.well-known/mercure?authorization=' . $publisher,
                            body => form(topic => $topic, data => 'by-query'),
                            headers => {'Content-Type' => 'application/x-www-form-urlencoded'});
    is($res->{status}, 200, 'publish with the token in the query');
    $res = post(token => undef, headers => {Cookie => "mercureAuthorization=$publisher",
                                            Origin => 'http://127.0.0.1:' . $srv->port},
                form => [topic => $topic, data => 'by-cookie']);
    is($res->{status}, 200, 'publish with the token in the cookie');
    is_deeply([got_until($h, 'by-cookie')], ['by-query', 'by-cookie'], 'cookie subscriber gets both');
    is_deeply([got_until($q, 'by-cookie')], ['by-query', 'by-cookie'], 'query subscriber gets both');
    $_->close for $h, $q;

    my $check = sub {
        my ($r, $status, $tag, $what) = @_;
        is($r->{status}, $status, "$what: $status");
        like($srv->log_text, qr/\Q$tag\E: [^\n]*refused \($status\)/, "$what: $tag logged");
    };
    $check->(post(token => undef, form => [topic => $topic]), 401, 'SSE0140', 'publish without a token');
    $check->(post(token => hs({mercure => {publish => ['*']}}, "x$secret"), form => [topic => $topic]),
             401, 'SSE0141', 'publish signed with another key');
    $check->(post(token => hs({exp => $now - 10, mercure => {publish => ['*']}}), form => [topic => $topic]),
             401, 'SSE0142', 'publish with an expired token');
    my $scope = post(token => $reader, form => [topic => $topic]);
    $check->($scope, 403, 'SSE0806', 'publish with a subscriber token');
    like($scope->{headers}{'www-authenticate'} // '', qr/^Bearer .*error="insufficient_scope"/,
         'publish with a subscriber token: WWW-Authenticate says insufficient_scope');
    $check->(post(token => $books_pub, form => [topic => 'https://example.com/books/1', topic => $topic]),
             403, 'SSE0806', 'publish claims not selecting every topic');
    is(post(token => $books_pub, form => [topic => 'https://example.com/books/1'])->{status}, 200,
       'publish claims selecting the topic: 200');
    $check->($srv->request(GET => hub_url([$topic])), 401, 'SSE0140',
             'subscribe without a token where anonymous is off');
    $check->($srv->request(GET => hub_url([$topic], path => '/closed-hub')), 401, 'SSE0802',
             'subscribe to a hub without a key where anonymous is off');
    $check->($srv->request(GET => hub_url([$topic]), headers => bearer(hs({}, "y$secret"))),
             401, 'SSE0141', 'subscribe with a token of another key');
    $check->($srv->request(GET => hub_url([$topic]),
                           headers => bearer(hs({exp => $now - 10, mercure => {subscribe => ['*']}}))),
             401, 'SSE0142', 'subscribe with an expired token');

    # RS256 keys from a file.
    my $rs = encode_jwt(payload => {mercure => {publish => ['*'], subscribe => ['*']}},
                        alg => 'RS256', key => \slurp("$keys/rs.key"));
    my $c = subscribe([$topic], token => $rs, path => '/rs-hub');
    is(post(path => '/rs-hub', token => $rs, form => [topic => $topic, data => 'rs'])->{status},
       200, 'RS256: publish');
    is(($c->events(1, 10))[0]{data} // '', 'rs', 'RS256: received');
    $c->close;
    $check->(post(path => '/rs-hub', token => $publisher, form => [topic => $topic]), 401,
             'SSE0141', 'RS256 hub: an HS256 token');
}

# ---- reconciliation: Last-Event-ID, lastEventID, earliest, the response header ----
{
    my $topic = fresh();
    my @ids = map { update([$topic], "r$_", more => [id => "https://example.com/ev/$topic/$_"]) } 1 .. 3;
    is($ids[0], "https://example.com/ev/$topic/1", 'the publisher\'s id is answered as given');
    my $c = subscribe([$topic], headers => {'Last-Event-ID' => $ids[0]});
    is($c->headers->{'last-event-id'} // '', $ids[0],
       'the response Last-Event-ID is the id just before the first update sent: the one asked');
    is_deeply([got_until($c, 'r3')], ['r2', 'r3'], 'Last-Event-ID header: what came after it');
    $c->close;
    $c = subscribe([$topic], query => 'lastEventID=' . esc($ids[1]));
    is($c->headers->{'last-event-id'} // '', $ids[1], 'lastEventID: the answer names it');
    is_deeply([got_until($c, 'r3')], ['r3'], 'lastEventID query parameter');
    $c->close;
    update([fresh()], 'private-elsewhere', more => [private => 'on', id => 'https://example.com/ev/secret']);
    $c = subscribe([$topic], token => undef, path => '/anon-hub');
    ok(!exists $c->headers->{'last-event-id'},
       'no Last-Event-ID asked: none answered (not the id of the newest, private, update)');
    $c->close;
    $c = subscribe([$topic], query => 'lastEventID=earliest');
    is($c->headers->{'last-event-id'} // '', 'earliest', 'earliest: the answer says earliest');
    is_deeply([got_until($c, 'r3')], ['r1', 'r2', 'r3'], 'earliest: everything held');
    ok(!grep({ /sse-missed/ } $c->raw_stream), 'earliest: no missed notice');
    $c->close;
    $c = subscribe([$topic], headers => {'Last-Event-ID' => 'urn:uuid:never-published'});
    is($c->headers->{'last-event-id'} // '', 'earliest', 'an unknown id: the answer says earliest');
    got_until($c, 'r3');
    is_deeply([map { "$_->{event}:" . ($_->{event} eq 'sse-missed' ? '' : $_->{data}) } $c->all_events],
              ['sse-missed:', 'message:r1', 'message:r2', 'message:r3'],
              'an unknown id: an sse-missed event, then what the hub holds');
    $c->close;
}

# ---- the wire: multi-line data, type, retry ----
{
    my $topic = fresh();
    my $c = subscribe([$topic]);
    update([$topic], "line 1\nline 2\r\nline 3", more => [type => 'book.updated', retry => 5000]);
    my ($ev) = $c->events(1, 10);
    is($ev->{data} // '', "line 1\nline 2\nline 3", 'data with newlines: several data lines');
    is($ev->{event} // '', 'book.updated', 'type is the event type');
    is($c->retry // '', 5000, 'retry is the retry field');
    update([$topic], 'first', more => [data => 'second', id => 'urn:first', id => 'urn:second',
                                       type => 't1', type => 't2']);
    ($ev) = $c->events(1, 10);
    is_deeply([@$ev{qw(data id event)}], ['first', 'urn:first', 't1'],
              'a field given twice: its first value (as the reference hub)');
    $c->close;
}

# ---- bad input ----
{
    my $bad = sub {
        my ($r, $status, $tag, $re, $what) = @_;
        is($r->{status}, $status, "$what: $status");
        like(SSETest::json_decode($r->{body})->{error} // '', $re, "$what: the body says why");
        like($srv->log_text, qr/\Q$tag\E: mercure \w+ refused \($status\)/, "$what: $tag logged");
    };
    $bad->(post(form => [data => 'x']), 400, 'SSE0805', qr/at least one topic/, 'publish without a topic');
    $bad->(post(form => [topic => 'a', retry => 'soon']), 400, 'SSE0805', qr/retry/, 'a bad retry');
    $bad->(post(type => 'text/plain', form => [topic => 'a']), 400, 'SSE0805',
           qr/x-www-form-urlencoded/, 'not a form');
    $bad->(post(form => [topic => 'a', id => 'earliest']), 400, 'SSE0807', qr/earliest/, 'id earliest');
    $bad->(post(form => [topic => 'a', id => '#1']), 400, 'SSE0807', qr/'#'/, 'id starting with #');
    $bad->(post(form => [topic => 'a', type => 'mercure']), 400, 'SSE0807', qr/reserved/, 'type mercure');
    $bad->(post(form => [topic => '*']), 400, 'SSE0807', qr/no topic/, 'topic *');
    $bad->(post(form => [topic => "a\x{202e}b"]), 400, 'SSE0807', qr/format character/,
           'a topic with a bidi control');
    $bad->(post(form => [topic => "a\tb"]), 400, 'SSE0807', qr/control character/, 'a topic with a tab');
    $bad->($srv->request(GET => '/.well-known/mercure', headers => bearer($everything)), 400,
           'SSE0801', qr/at least one topic selector/, 'subscribe without a selector');
    $bad->($srv->request(GET => '/.well-known/mercure?topic=a%0Ab', headers => bearer($everything)),
           400, 'SSE0801', qr/control character/, 'a selector with a newline');
    my $vars = sub { '{' . join(',', map { "v$_" } 1 .. $_[0]) . '}' };
    $bad->($srv->request(GET => hub_url(['https://example.com/' . $vars->(17)], path => '/anon-hub')),
           400, 'SSE0801', qr/at most 16 variables/, 'a template expression with 17 variables');
    $bad->($srv->request(GET => hub_url([map { "https://example.com/$_/" . $vars->(16) } 1 .. 7],
                                        path => '/anon-hub')),
           400, 'SSE0801', qr/at most 1024 matching states/, 'selectors too costly together');
    my $ok = subscribe([map { "https://example.com/$_/" . $vars->(16) } 1 .. 6], token => undef,
                       path => '/anon-hub');
    is($ok->status, 200, 'selectors within the limits: 200');
    $ok->close;
    $bad->($srv->request(GET => '/.well-known/mercure?topic=a&lastEventID=a%0Ab',
                         headers => bearer($everything)),
           400, 'SSE0803', qr/Last-Event-ID/, 'a Last-Event-ID with a newline');
    $bad->($srv->request(PUT => '/.well-known/mercure', headers => bearer($publisher)), 405,
           'SSE0809', qr/PUT is not served/, 'PUT');
    my $options = $srv->request(OPTIONS => '/.well-known/mercure');
    is($options->{status}, 200, 'OPTIONS: 200');
    my %allow = map { $_ => 1 } split /,/, $options->{headers}{allow} // '';
    ok($allow{GET} && $allow{POST} && $allow{OPTIONS}, 'OPTIONS: Allow names GET, POST, OPTIONS');
    $bad->(post(path => '/nokey-hub', token => undef, form => [topic => 'a']), 403, 'SSE0804',
           qr/no SSETokenKey/, 'publish to a hub without a key');
    is(subscribe(['a'], token => undef, path => '/nokey-hub')->status, 200,
       'a hub without a key serves anonymous subscribers (SSEMercureAnonymous on)');
}

# ---- the shipped example: anonymous subscribers, CORS for the listed origin only ----
{
    my $topic = fresh();
    my $c = subscribe([$topic], token => undef, path => '/example-hub',
                      headers => {Origin => 'https://app.example.com'});
    is($c->status, 200, 'example: an anonymous subscriber');
    is($c->headers->{'access-control-allow-origin'} // '', 'https://app.example.com',
       'example: the listed origin is allowed');
    is($c->headers->{'access-control-allow-credentials'} // '', 'true',
       'example: with credentials (the cookie)');
    like($c->headers->{vary} // '', qr/Origin/, 'example: Vary: Origin');
    is(post(path => '/example-hub', form => [topic => $topic, data => 'via-example'])->{status},
       200, 'example: publish');
    is(($c->events(1, 10))[0]{data} // '', 'via-example', 'example: received');
    $c->close;
    my $other = subscribe([$topic], token => undef, path => '/example-hub',
                          headers => {Origin => 'https://evil.example.net'});
    ok(!exists $other->headers->{'access-control-allow-origin'},
       'example: another origin gets no Access-Control-Allow-Origin');
    $other->close;
}

# ---- native channels and Mercure topics do not meet ----
{
    my $star = subscribe(['*']);
    my $native = $srv->subscribe('/events/mercure');
    is($srv->publish('/publish/mercure', 'native')->{status}, 201, 'a native publish');
    update(['mercure'], 'from-mercure');
    $srv->publish('/publish/mercure', 'native-end');
    is_deeply([got_until($star, 'from-mercure')], ['from-mercure'],
              'a native publish does not reach Mercure subscribers');
    is_deeply([got_until($native, 'native-end')], ['native', 'native-end'],
              'nor an update a native subscriber');
    is($srv->request(GET => '/events/%23mercure')->{status}, 400,
       "the hub's bus channel is no channel name");
    $_->close for $star, $native;
}

$srv->stop;
done_testing;
