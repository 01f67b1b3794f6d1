# Every directive rejects a bad value at `apachectl configtest` time, with a message that names
# the directive and what is allowed; good values pass.
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;

my @bad = (
    [global => 'SSEBusSize 10', qr/SSEBusSize: "10" is not a size from 64K to 64G/],
    [global => 'SSEBusSize 16X', qr/SSEBusSize: "16X"/],
    [global => 'SSEBusSize 65G', qr/SSEBusSize: "65G"/],
    [global => 'SSEBusSize -1M', qr/SSEBusSize: "-1M"/],
    [global => 'SSEHistory many', qr/SSEHistory: count "many" must be a whole number/],
    [global => 'SSEHistory 10 -5', qr/SSEHistory: seconds "-5" must be a whole number/],
    [global => 'SSEHistory 10 20 30', qr/SSEHistory takes 1-2 arguments, <count> \[<seconds>\]/],
    [global => "<VirtualHost 127.0.0.1:1>\nSSEBusSize 1M\n</VirtualHost>", qr/SSEBusSize cannot occur within <VirtualHost> section/],
    [conf => "<Location /x>\nSSEHistory 5\n</Location>", qr/SSEHistory (?:cannot occur within|not allowed in)/],
    [conf => "<Location /x>\nSSEKeepalive 0\n</Location>", qr/SSEKeepalive: "0" must be a whole number of seconds from 1 to 3600/],
    [conf => "<Location /x>\nSSEKeepalive 1.5\n</Location>", qr/SSEKeepalive: "1.5"/],
    [conf => "<Location /x>\nSSERetry soon\n</Location>", qr/SSERetry: "soon" must be a whole number of milliseconds from 0 to 86400000/],
    [conf => "<Location /x>\nSSERetry 86400001\n</Location>", qr/SSERetry: "86400001"/],
    [conf => "<Location /x>\nSSEMaxMessageSize 0\n</Location>", qr/SSEMaxMessageSize: "0" is not a size from 1 to 64M/],
    [conf => "<Location /x>\nSSEMaxMessageSize 65M\n</Location>", qr/SSEMaxMessageSize: "65M"/],
    [conf => "<Location /x>\nSSEChannel \"%{req:X\"\n</Location>", qr/SSEChannel: cannot parse expression/],
    [global => 'SSEPublishSocket p.sock 0999', qr/SSEPublishSocket: mode "0999" must be octal, 0 to 0777/],
    [global => 'SSEPublishSocket p.sock rw', qr/SSEPublishSocket: mode "rw" must be octal/],
    [global => 'SSEPublishSocket p.sock 0660 no-such-group-here', qr/SSEPublishSocket: unknown group "no-such-group-here"/],
    [global => 'SSEPublishSocket ' . ('d' x 120) . '.sock', qr/SSEPublishSocket: ".*" is \d+ bytes long; a Unix socket path holds at most 107/],
    [global => "<VirtualHost 127.0.0.1:1>\nSSEPublishSocket p.sock\n</VirtualHost>", qr/SSEPublishSocket cannot occur within <VirtualHost> section/],
    [conf => "<Location /x>\nSSEAsync maybe\n</Location>", qr/SSEAsync must be On or Off/],
    [conf => "<Location /x>\nSSEMaxPending 10\n</Location>", qr/SSEMaxPending: "10" is not a size from 1K to 64M/],
    [global => 'SSEPublishSocketClients 0', qr/SSEPublishSocketClients: "0" must be a whole number from 1 to 10000/],
    [conf => "<Location /x>\nSSEClientId \"%{req:X\"\n</Location>", qr/SSEClientId: cannot parse expression/],
    [conf => "<Location /x>\nSSEClientId %{no_such_function:x}\n</Location>", qr/SSEClientId: cannot parse expression/],
    [conf => "<Location /x>\nSSEDuplicateClient kick\n</Location>", qr/SSEDuplicateClient: "kick" must be allow, reject or replace/],
    [global => 'SSEPresenceChannel "bad name"', qr/SSEPresenceChannel: .*bad name/],
    [global => "<VirtualHost 127.0.0.1:1>\nSSEPresenceChannel p\n</VirtualHost>", qr/SSEPresenceChannel cannot occur within <VirtualHost> section/],
    [global => 'SSEMaxSubscribers 0', qr/SSEMaxSubscribers: "0" must be a whole number from 1 to 10000000/],
    [global => 'SSEMaxChannels lots', qr/SSEMaxChannels: "lots" must be a whole number from 1 to 10000000/],
);
for my $case (@bad) {
    my ($where, $text, $msg) = @$case;
    my ($rc, $out) = SSETest::Server->configtest($where => $text);
    isnt($rc, 0, "configtest fails: $text");
    like($out, $msg, "  and says why") or diag $out;
}

my $good = join "\n", '<Location /x>', 'SetHandler sse-subscribe', 'SSEKeepalive 30',
    'SSERetry 0', 'SSEMaxMessageSize 64K', 'SSEAsync Off', 'SSEMaxPending 1M', 'SSEChannel "%{REMOTE_USER},public"',
    'SSEClientId %{query_param:client} unauthenticated', 'SSEDuplicateClient replace', '</Location>';
my ($rc, $out) = SSETest::Server->configtest(global => "SSEBusSize 1M\nSSEHistory 50 0\n"
                                             . "SSEPublishSocket p.sock 0600 root\n"
                                             . "SSEPublishSocketClients 10\n"
                                             . "SSEPresenceChannel presence\nSSEMaxSubscribers 1000\n"
                                             . "SSEMaxChannels 100\n",
                                             conf => $good);
is($rc, 0, 'good values pass') or diag $out;
done_testing;
