# Around the module: mod_deflate loaded and even forced on everything does not compress or hold
# back events; httpd as a reverse proxy (mod_proxy_http) in front of a mod_sse server passes
# events through at once with the settings docs/deployment.md gives.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;
use Time::HiRes qw(sleep time);
use IO::Uncompress::Gunzip ();

my $mods = SSETest::apxs_q('LIBEXECDIR');

subtest 'mod_deflate' => sub {
    # Debian's deflate.conf, plus the worst case: DEFLATE on every response.
    # No keep-alive comment for an hour: nothing written after an event can push it out of a
    # buffer, so an event that arrives at all (the wait is 30 s) was not held back.
    my $srv = SSETest::Server->start(global => "SSEKeepalive 3600\n", conf => <<"EOF");
LoadModule filter_module $mods/mod_filter.so
LoadModule deflate_module $mods/mod_deflate.so
AddOutputFilterByType DEFLATE text/html text/plain text/xml text/css text/javascript
AddOutputFilterByType DEFLATE application/javascript application/json application/xml
<Location /events>
    SetOutputFilter DEFLATE
</Location>
<Location /publish>
    SetOutputFilter DEFLATE
</Location>
EOF
    my $sub = $srv->subscribe('/events/z', headers => {'Accept-Encoding' => 'gzip, deflate'});
    is($sub->status, 200, 'stream open');
    ok(!exists $sub->headers->{'content-encoding'}, 'not compressed');
    $srv->publish('/publish/z', 'not held back');
    my ($ev) = $sub->events(1, 30);
    is($ev->{data}, 'not held back', 'event readable as sent, with nothing written after it');
    $sub->close;
    # A JSON answer compressed by DEFLATE keeps its Content-Length: the answer is written at
    # once (a FLUSH down the connection's filters), not by a FLUSH through DEFLATE, which would
    # make it end the compressed body early and the answer go chunked.
    my $long_id = 'an-id-long-enough-that-DEFLATE-compresses-the-answer-' x 2;
    my $res = $srv->request(POST => "/publish/z?id=$long_id", body => 'compressed answer',
                            headers => {'Accept-Encoding' => 'gzip'});
    is($res->{status}, 201, 'publish accepted');
    is($res->{headers}{'content-encoding'}, 'gzip', 'its JSON answer compressed');
    ok(!exists $res->{headers}{'transfer-encoding'}, 'not chunked');
    is($res->{headers}{'content-length'}, length($res->{body}), 'Content-Length is the body\'s');
    my $json;
    IO::Uncompress::Gunzip::gunzip(\$res->{body} => \$json);
    is((SSETest::json_decode($json // '') // {})->{id}, $long_id, 'the body is the JSON answer');
    $srv->stop;
};

subtest 'behind mod_proxy_http' => sub {
    # As above: no keep-alive comment can push a buffered event through.
    my $back = SSETest::Server->start(global => "SSEKeepalive 3600\n");
    my $bport = $back->port;
    my $front = SSETest::Server->start(conf => <<"EOF");
LoadModule proxy_module $mods/mod_proxy.so
LoadModule proxy_http_module $mods/mod_proxy_http.so
# As docs/deployment.md shows: no response buffering for the stream, a long enough timeout for the
# keep-alive interval, and one connection per stream to the backend.
<Location /live>
    ProxyPass http://127.0.0.1:$bport/events flushpackets=on timeout=120 disablereuse=on
</Location>
EOF
    my $sub = $front->subscribe('/live/p');
    is($sub->status, 200, 'stream open through the proxy');
    is($sub->headers->{'content-type'}, 'text/event-stream', 'Content-Type passed');
    ok($sub->read_until(sub { scalar $sub->comments }, 30), 'first bytes arrive through the proxy');
    # Each event must arrive before the next is published: one held in a buffer would come only
    # with later bytes, and none are written until it has arrived.
    my $arrived = 0;
    for my $i (1 .. 5) {
        $back->publish('/publish/p', "through $i");
        my ($ev) = $sub->events(1, 30);
        $arrived++ if $ev && $ev->{data} eq "through $i";
    }
    is($arrived, 5, 'every event arrived, in order, each with nothing written after it');
    $sub->close;
    # The front's proxy worker notices the client left only when it next writes (a keep-alive
    # at the latest); stopping the backend ends its stream at once.
    $back->stop;
    $front->stop;
};

done_testing;
