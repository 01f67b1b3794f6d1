# What docs/coming-from-go.md claims that no other test covers: a handler's custom response
# headers (itcomusic/sse sets CORS and the like per handler) are httpd's `Header set` in the
# subscribe location, on the stream's answer whether the hub or a worker holds it.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;

my $mods = SSETest::apxs_q('LIBEXECDIR');
my $srv = SSETest::Server->start(global => "LoadModule headers_module $mods/mod_headers.so\n",
                                 conf => <<'EOF');
<Location /with-headers>
    SetHandler sse-subscribe
    Header set X-Stream-Owner "billing"
    Header always set Access-Control-Allow-Origin "*"
</Location>
<Location /with-headers-blocking>
    SetHandler sse-subscribe
    SSEAsync Off
    Header set X-Stream-Owner "billing"
</Location>
EOF

for my $where ('/with-headers', '/with-headers-blocking') {
    subtest "Header set on a stream, $where" => sub {
        my $sub = $srv->subscribe("$where/gh");
        is($sub->status, 200, 'a stream');
        is($sub->headers->{'x-stream-owner'}, 'billing', 'the custom header');
        is($sub->headers->{'access-control-allow-origin'}, '*', 'Header always set too')
            if $where eq '/with-headers';
        $srv->publish('/publish/gh', 'after the headers');
        my ($ev) = $sub->events(1, 10);
        is($ev->{data}, 'after the headers', 'and events flow');
        $sub->close;
    };
}

$srv->stop;
done_testing;
