# Channel access control (issue 12): every way of naming a channel — path, comma list,
# ?channel= (single, list, repeated), SSEChannel, a publish body (JSON, form), GET stats,
# DELETE, HEAD, the presence channel — is authorized as if the channel were requested alone at
# its own path, against the issue's configuration plus <LocationMatch>, <If> and nested
# <Location> rules; and `Require sse-channel <expr>` with its documented recipes (per-user
# channels with basic auth, public/private split, a publish location per user).
# A refused channel gets 403 (401 when a login is needed) with a JSON body naming it; nothing
# is delivered, published or counted: a trusted subscriber on the publish socket and GET stats
# from a trusted location watch the private channels.
# Review fixes: a handler not set by a <Location> prefix (<If>, <LocationMatch>, <Directory>,
# RewriteRule [H=]) refuses channels (403, SSE0136) unless SSEChannelBase says where their rules
# are; a URI rule of the request's own section is re-run for every channel; POST/DELETE to the
# presence channel over HTTP is refused (403, SSE0158).
use strict;
use warnings;
use lib 't/lib';
use SSETest;
use Test::More;

my $mods = SSETest::apxs_q('LIBEXECDIR');

my $srv = SSETest::Server->start(
    global => "SSEPublishSocket pub.sock\nSSEPresenceChannel presence\n", conf => <<'EOF');
<Location /events>
    SetHandler sse-subscribe
    Require all granted
</Location>
<Location /events/private>
    Require all denied
</Location>
<Location /events/presence>
    Require all denied
</Location>
<LocationMatch "^/events/secret-">
    Require all denied
</LocationMatch>
<If "%{REQUEST_URI} =~ m#^/events/iffy(/|$)#">
    Require all denied
</If>
<Location /events/room>
    SSEChannel %{query_param:room}
</Location>
<Location /events/open>
    Require all granted
</Location>
<Location /publish/private>
    Require all denied
</Location>
<Location /publish/presence>
    Require all denied
</Location>
<Location /publish/room>
    SSEChannel %{query_param:room}
</Location>
<Location /admin>
    SetHandler sse-publish
    Require ip 127.0.0.1
</Location>
<LocationMatch "^/feed/[a-z]+$">
    SetHandler sse-subscribe
    SSEChannelBase /feed
</LocationMatch>
<Location /feed/private>
    Require all denied
</Location>
<Location "/ev ents">
    SetHandler sse-subscribe
</Location>
<Location "/ev ents/private">
    Require all denied
</Location>
EOF
# httpd's own refusals of the lookups, and ours.
$srv->expect_log(qr/AH01630: client denied by server configuration/,
                 qr/SSE013[02]: (?:subscribe|publish) refused \(403\)/,
                 qr/SSE0100: (?:subscribe|publish) refused \(400\)/);

sub json_of { SSETest::json_decode($_[0]{body}) // {} }

sub refused_ok {
    my ($res, $channel, $what) = @_;
    is($res->{status}, 403, "$what: 403");
    my $j = json_of($res);
    is($j->{channel}, $channel, "$what: the body names channel \"$channel\"");
    is($j->{status}, 403, "$what: status in the body");
    like($j->{error} // '', qr/channel "\Q$channel\E"/, "$what: the error names it");
}

# Trusted watchers: a socket subscriber of every protected channel, and their figures.
my $watch = $srv->subscribe_socket('private,secret-x,iffy,open/private');
ok(!$watch->refused, 'the socket subscriber watches the protected channels');
sub stats { json_of($srv->request(GET => "/admin/$_[0]")) }

subtest 'subscribe: every way of naming a refused channel' => sub {
    my $subscribers = stats('private')->{subscribers} // 0;
    is($srv->request(GET => '/events/private')->{status}, 403,
       'its own path: refused by httpd, as before');
    my %paths = (
        'comma list in the path'    => ['/events/news,private', 'private'],
        '?channel='                 => ['/events/news?channel=private', 'private'],
        '?channel= list'            => ['/events/news?channel=news,private', 'private'],
        'repeated ?channel='        => ['/events/news?channel=news&channel=private', 'private'],
        '?stream= (r3labs/sse)'     => ['/events?stream=private', 'private'],
        '?stream= list'             => ['/events/news?stream=news,private', 'private'],
        'repeated ?stream='         => ['/events?stream=news&stream=private', 'private'],
        '?stream= presence'         => ['/events/news?stream=presence', 'presence'],
        '?stream= <LocationMatch>'  => ['/events/news?stream=secret-x', 'secret-x'],
        '?stream= handler <LocationMatch>' => ['/feed/tv?stream=private', 'private'],
        'SSEChannel'                => ['/events/room?room=private', 'private'],
        'presence channel'          => ['/events/news?channel=presence', 'presence'],
        '<LocationMatch> rule'      => ['/events/news?channel=secret-x', 'secret-x'],
        '<If> rule'                 => ['/events/news?channel=iffy', 'iffy'],
        'channel under a denied one'=> ['/events/news?channel=private/sub', 'private/sub'],
        'handler <LocationMatch>'   => ['/feed/tv?channel=private', 'private'],
        'Location path with a space'=> ['/ev%20ents/news?channel=private', 'private'],
        'a ".." segment'            => ['/events/news?channel=news/../private', 'news/../private'],
        'an empty segment'          => ['/events/news?channel=a//b', 'a//b'],
    );
    for my $what (sort keys %paths) {
        my ($path, $channel) = @{$paths{$what}};
        refused_ok($srv->request(GET => $path), $channel, "GET $what");
    }
    my $head = $srv->request(HEAD => '/events/news?channel=private');
    is($head->{status}, 403, 'HEAD ?channel=: 403');
    is(stats('private')->{subscribers} // 0, $subscribers, 'no subscriber was counted on "private"');
};

subtest 'subscribe: names that are no channel are refused before any lookup' => sub {
    for my $name ('a%20b', '%25', '%3F', '%23', '%C3%A9') {
        my $res = $srv->request(GET => "/events/news?channel=$name");
        is($res->{status}, 400, "?channel=$name: 400");
        like(json_of($res)->{error} // '', qr/contains/, "?channel=$name: a bad name");
    }
};

subtest 'subscribe: allowed channels still work' => sub {
    my $s = $srv->subscribe('/events/news?channel=news,sports');
    is($s->status, 200, 'two open channels: 200');
    my $f = $srv->subscribe('/feed/tv?channel=ok');
    is($f->status, 200, 'under a handler <LocationMatch>: 200');
    my $ft = $srv->subscribe('/feed/tv');
    is($ft->status, 200, 'under a handler <LocationMatch> with SSEChannelBase: the path names "tv"');
    my $o = $srv->subscribe('/events/open/private');
    is($o->status, 200, 'a nested open <Location>: 200');
    is($srv->request(HEAD => '/events/news?channel=sports')->{status}, 200, 'HEAD: 200');
    is($srv->publish('/admin/sports', 'go')->{status}, 201, 'published to sports');
    is(($s->events(1, 10))[0]{data}, 'go', 'the subscriber gets it');
    $srv->publish('/admin/ok', 'tv');
    is(($f->events(1, 10))[0]{data}, 'tv', 'the <LocationMatch> subscriber gets its channel');
    $srv->publish('/admin/tv', 'on tv');
    is(($ft->events(1, 10))[0]{data}, 'on tv', 'the path after SSEChannelBase is the channel');
    # Under a nested <Location> the channel is still the path after the handler's location:
    # "open/private", not "private" (which would escape <Location /events/private>).
    $srv->publish('/admin/private', 'not for the open location');
    $srv->publish('/admin/open/private', 'nested');
    is(($o->events(1, 10))[0]{data}, 'nested', 'the nested location streams "open/private"');
    $_->close for $s, $f, $ft, $o;
};

subtest 'subscribe: ?stream= is ?channel= (r3labs/sse), both at once refused' => sub {
    my $s = $srv->subscribe('/events?stream=news,sports');
    is($s->status, 200, '?stream= with two open channels: 200');
    is($srv->publish('/admin/sports', 'via stream')->{status}, 201, 'published to sports');
    is(($s->events(1, 10))[0]{data}, 'via stream', 'the ?stream= subscriber gets it');
    $s->close;
    for my $q ('channel=news&stream=sports', 'stream=news&channel=news') {
        my $res = $srv->request(GET => "/events?$q");
        is($res->{status}, 400, "?$q: 400");
        like(json_of($res)->{error} // '', qr/both channel and stream parameters/,
             "?$q: the error says why");
    }
    is($srv->request(GET => '/events/news?stream=a%20b')->{status}, 400,
       '?stream= with a bad name: 400, as ?channel=');
};

subtest 'publish: every way of naming a refused channel' => sub {
    my $before = stats('private')->{events_published};
    is($srv->publish('/publish/private', 'x')->{status}, 403,
       'its own path: refused by httpd, as before');
    my %posts = (
        'comma list in the path' => ['/publish/news,private', 'x', {}],
        '?channel='              => ['/publish/news?channel=private', 'x', {}],
        '?channel= list'         => ['/publish/news?channel=news,private', 'x', {}],
        'repeated ?channel='     => ['/publish/news?channel=news&channel=private', 'x', {}],
        '?stream='               => ['/publish/news?stream=private', 'x', {}],
        'SSEChannel'             => ['/publish/room?room=private', 'x', {}],
        'JSON body channel'      => ['/publish/news', '{"channel":"private","data":"x"}',
                                     {'Content-Type' => 'application/json'}],
        'JSON body channel list' => ['/publish', '{"channel":["news","private"],"data":"x"}',
                                     {'Content-Type' => 'application/json'}],
        'form body channel'      => ['/publish/news', 'channel=private&data=x',
                                     {'Content-Type' => 'application/x-www-form-urlencoded'}],
    );
    for my $what (sort keys %posts) {
        my ($path, $body, $h) = @{$posts{$what}};
        refused_ok($srv->request(POST => $path, body => $body, headers => $h), 'private',
                   "POST $what");
    }
    refused_ok($srv->request(POST => '/publish/news?channel=presence', body => 'x'), 'presence',
               'POST to the presence channel');
    refused_ok($srv->request(GET => '/publish/news?channel=private'), 'private', 'GET stats');
    refused_ok($srv->request(DELETE => '/publish/news?channel=private'), 'private', 'DELETE');
    is(stats('private')->{events_published}, $before, 'nothing was published to "private"');
    ok(!stats('private')->{closed}, '"private" was not closed');
    # The watcher's first event is the one the trusted location publishes now: nothing came
    # before it.
    $srv->publish('/admin/private', 'trusted');
    my @ev = $watch->events(3, 10);
    is_deeply([map { $_->{data} } @ev], ['not for the open location', 'nested', 'trusted'],
              'the watcher saw the trusted publishes only');
    is(scalar(grep { $_->{data} eq 'x' } $watch->all_events), 0, 'no refused event arrived');
};

subtest 'publish: allowed channels still work' => sub {
    my $res = $srv->request(POST => '/publish/news', body => '{"channel":"news,sports","data":"y"}',
                            headers => {'Content-Type' => 'application/json'});
    is($res->{status}, 201, 'JSON body with open channels: 201');
    is($srv->request(POST => '/publish/news?channel=news,sports', body => 'y')->{status}, 201,
       '?channel= list of open channels: 201');
    is($srv->request(GET => '/publish/news')->{status}, 200, 'GET stats of an open channel');
    is($srv->request(DELETE => '/publish/sports')->{status}, 200, 'DELETE an open channel');
};
$watch->close;
$srv->stop;

# ---- Review fixes: the client must not pick where its channels are checked ----
# (1) a handler set by anything but a prefix <Location> (<If>, <LocationMatch>, <Directory>,
# RewriteRule [H=]) has no channel base: refused 403 (SSE0136) unless SSEChannelBase gives one;
# (2) a URI rule in the request's own section is re-run for every channel's path;
# (3) the presence channel is written by mod_sse only: POST/DELETE over HTTP refused (SSE0158).
my $fix = SSETest::Server->start(
    global => "LoadModule rewrite_module $mods/mod_rewrite.so\nSSEPresenceChannel presence\n",
    conf => <<'EOF');
<If "%{REQUEST_URI} =~ m#^/live/#">
    SetHandler sse-subscribe
</If>
<Location /live/private>
    Require all denied
</Location>
<If "%{REQUEST_URI} =~ m#^/live2/#">
    SetHandler sse-subscribe
    SSEChannelBase /live2
</If>
<Location /live2/private>
    Require all denied
</Location>
<LocationMatch "^/lm/[a-z]+$">
    SetHandler sse-subscribe
</LocationMatch>
<Location /lm/tv/private>
    Require all denied
</Location>
<Directory "${dir}/htdocs/dir">
    SetHandler sse-subscribe
</Directory>
RewriteEngine On
RewriteRule ^/rw/ - [H=sse-subscribe]
<Location /ev2>
    SetHandler sse-subscribe
    Require expr "%{REQUEST_URI} !~ m#^/ev2/private#"
</Location>
<Location /watch>
    SetHandler sse-subscribe
    SSEChannel presence
    SSEPresenceSubscribe on
</Location>
EOF
mkdir($fix->dir . '/htdocs/dir') or die "mkdir: $!";
$fix->expect_log(qr/AH01630: client denied by server configuration/,
                 qr/SSE013[06]: subscribe refused \(403\)/,
                 qr/SSE0158: publish refused \(403\)/);

subtest 'a handler not set by a <Location> prefix: no channel base, refused (SSE0136)' => sub {
    my %paths = (
        'top-level <If>'        => '/live/x?channel=private',
        '<LocationMatch>'       => '/lm/radio?channel=private',
        '<Directory>'           => '/dir/x?channel=private',
        'RewriteRule [H=]'      => '/rw/x?channel=private',
        '<If>, an open channel' => '/live/x?channel=news',
    );
    for my $what (sort keys %paths) {
        is($fix->request(HEAD => $paths{$what})->{status}, 403, "HEAD under a $what: 403");
        my $res = $fix->request(GET => $paths{$what}, timeout => 5);
        is($res->{status}, 403, "GET under a $what: 403");
        my $j = json_of($res);
        is($j->{status}, 403, "$what: status in the body");
        like($j->{error} // '', qr/SSEChannelBase/, "$what: the error names SSEChannelBase");
    }
};

subtest 'SSEChannelBase under an <If>: channels checked at <base>/<channel>' => sub {
    refused_ok($fix->request(GET => '/live2/x?channel=private', timeout => 5), 'private',
               '?channel=private under <If> with SSEChannelBase');
    is($fix->request(HEAD => '/live2/anything?channel=private')->{status}, 403, 'HEAD: 403');
    my $s = $fix->subscribe('/live2/news');
    is($s->status, 200, 'the path after SSEChannelBase names the channel: 200');
    is($fix->publish('/publish/news', 'n')->{status}, 201, 'published to news');
    is(($s->events(1, 10))[0]{data}, 'n', 'the stream of /live2/news gets "news"');
    $s->close;
};

subtest 'a URI rule of the same section is re-run for every channel' => sub {
    is($fix->request(HEAD => '/ev2/private')->{status}, 403, 'its own path: refused by httpd');
    refused_ok($fix->request(GET => '/ev2/news?channel=private', timeout => 5), 'private',
               '?channel=private');
    refused_ok($fix->request(GET => '/ev2/news,private', timeout => 5), 'private',
               'a comma list');
    is($fix->request(HEAD => '/ev2/news?channel=news,sports')->{status}, 200,
       'channels the rule allows: 200');
};

subtest 'the presence channel is written by mod_sse only' => sub {
    # A trusted reader of the presence channel; its records up to the connect record of a
    # marker stream (opened after every refused write had been answered) are all there is.
    my $watch = $fix->subscribe('/watch');
    is($watch->status, 200, 'a presence reader');
    # Returns the records the watcher read up to the connect record of a stream on $channel
    # (bounded: 50 records, 10 s each).
    my $until_connect = sub {
        my ($channel) = @_;
        my @seen;
        # events() gives every record read since the last call (several when they came in one
        # read, as on a loaded machine): each is looked at.
        for (1 .. 50) {
            my @got = $watch->events(1, 10) or last;
            for my $e (@got) {
                push @seen, $e;
                my $j = SSETest::json_decode($e->{data}) // {};
                return @seen if $e->{event} eq 'connect' && grep { $_ eq $channel } @{$j->{channels} // []};
            }
        }
        fail("no connect record for $channel");
        return @seen;
    };
    my $s = $fix->subscribe('/events/someone');
    is($s->status, 200, 'a subscriber');
    $until_connect->('someone');
    my $before = $fix->request(GET => '/publish/presence');
    is($before->{status}, 200, 'GET figures of the presence channel: allowed');
    my %json = ('Content-Type' => 'application/json');
    my %writes = (
        'POST to its path' => [POST => '/publish/presence', 'forged', {}],
        'POST ?channel='   => [POST => '/publish/news?channel=news,presence', 'forged', {}],
        'POST with a body' => [POST => '/publish',
                               '{"channel":"presence","event":"disconnect","data":"forged"}',
                               \%json],
        'DELETE'           => [DELETE => '/publish/presence', '', {}],
        'DELETE ?channel=' => [DELETE => '/publish/news?channel=presence', '', {}],
    );
    for my $what (sort keys %writes) {
        my ($m, $path, $body, $h) = @{$writes{$what}};
        my $res = $fix->request($m => $path, body => $body, headers => $h);
        is($res->{status}, 403, "$what: 403");
        my $j = json_of($res);
        is($j->{channel}, 'presence', "$what: the body names the channel");
        like($j->{error} // '', qr/written by mod_sse only/, "$what: and says why");
    }
    my $marker = $fix->subscribe('/events/marker');
    is($marker->status, 200, 'a marker stream');
    my @after = $until_connect->('marker');
    is(scalar(grep { $_->{data} eq 'forged' } @after), 0, 'no forged record reached the reader');
    ok(!json_of($fix->request(GET => '/publish/presence'))->{closed}, 'it was not closed');
    is($fix->publish('/publish/news', 'still')->{status}, 201, 'other channels still publish');
    $_->close for $s, $marker, $watch;
};
$fix->stop;

# ---- Require sse-channel: the recipes of docs/access-control.md ----

my $auth = SSETest::Server->start(global => <<"EOF", conf => <<'EOF');
LoadModule authn_core_module $mods/mod_authn_core.so
LoadModule authn_file_module $mods/mod_authn_file.so
LoadModule auth_basic_module $mods/mod_auth_basic.so
LoadModule authz_user_module $mods/mod_authz_user.so
EOF
# Per-user channels: a user reads user/<name>, everyone reads public/...
<Location /u>
    SetHandler sse-subscribe
    AuthType Basic
    AuthName "events"
    AuthBasicProvider file
    AuthUserFile ${dir}/htpasswd
    AuthzSendForbiddenOnFailure On
    Require sse-channel %{SSE_CHANNEL} == "user/%{REMOTE_USER}" || %{SSE_CHANNEL} =~ m#^public/#
</Location>
# The README's example: a nested section for one channel replaces the channel rule for it.
<Location /u/admin>
    Require user alice
</Location>
# Public/private split: public/... for everyone, anything else for users who log in.
<Location /pp>
    SetHandler sse-subscribe
    AuthType Basic
    AuthName "events"
    AuthBasicProvider file
    AuthUserFile ${dir}/htpasswd
    <RequireAny>
        Require sse-channel %{SSE_CHANNEL} =~ m#^public/#
        Require valid-user
    </RequireAny>
</Location>
# A channel whose rules cannot be checked (the password file is missing): 500.
<Location /pp/broken>
    AuthUserFile ${dir}/no-such-htpasswd
    Require valid-user
</Location>
# Publishing: a user writes only user/<name>, whichever way the request names it.
<Location /upub>
    SetHandler sse-publish
    AuthType Basic
    AuthName "publish"
    AuthBasicProvider file
    AuthUserFile ${dir}/htpasswd
    AuthzSendForbiddenOnFailure On
    Require sse-channel %{SSE_CHANNEL} == "user/%{REMOTE_USER}"
</Location>
# Methods as usual: anyone POSTs and reads figures, only temp/... channels may be closed.
<Location /pubm>
    SetHandler sse-publish
    <RequireAny>
        Require method POST GET
        Require sse-channel %{SSE_CHANNEL} =~ m#^temp/#
    </RequireAny>
</Location>
# A negated rule: every channel is judged alone, so one bad channel is not hidden by others.
<Location /neg>
    SetHandler sse-subscribe
    <RequireAll>
        Require all granted
        Require not sse-channel %{SSE_CHANNEL} =~ m#^secret#
    </RequireAll>
</Location>
EOF
{
    open my $fh, '>', $auth->dir . '/htpasswd' or die;
    for my $u (qw(alice bob)) {
        my $hash = `openssl passwd -apr1 -salt s4lt$u pw-$u`;
        chomp $hash;
        print $fh "$u:$hash\n";
    }
    close $fh;
}
$auth->expect_log(qr/AH01630: client denied by server configuration/,
                  qr/AH01631: user \w+: authorization failure/,
                  qr/AH01629: authorization failure \(no authenticated user\)/,
                  qr/SSE013[01]: (?:subscribe|publish) refused \(40[13]\)/,
                  qr/AH01620: Could not open password file/,
                  qr/SSE0133: subscribe refused \(500\)/);

# The status a subscribe gets (a stream is closed at once).
sub sub_status {
    my ($srv, $path, $headers) = @_;
    my $s = $srv->subscribe($path, headers => $headers // {});
    my $status = $s->status;
    $s->close;
    return $status;
}

sub basic { my ($u) = @_; {Authorization => 'Basic ' . MIME::Base64::encode_base64("$u:pw-$u", '')} }
use MIME::Base64 ();

subtest 'Require sse-channel: per-user channels with basic auth' => sub {
    is(sub_status($auth, '/u/public/news'), 200, 'public/news without a login');
    my $res = $auth->request(GET => '/u/user/alice');
    is($res->{status}, 401, 'user/alice without a login: 401');
    like($res->{headers}{'www-authenticate'} // '', qr/^Basic realm="events"/, 'with a challenge');
    is(sub_status($auth, '/u/user/alice', basic('alice')), 200, 'alice reads user/alice');
    is($auth->request(GET => '/u/user/bob', headers => basic('alice'))->{status}, 403,
       'alice cannot read user/bob');
    is($auth->request(GET => '/u/public/news?channel=user/bob', headers => basic('alice'))
       ->{status}, 403, 'nor through ?channel=');
    is($auth->request(GET => '/u/user/alice,user/bob', headers => basic('alice'))->{status},
       403, 'nor in a list with her own');
    my $s = $auth->subscribe('/u/user/alice,public/news', headers => basic('alice'));
    is($s->status, 200, 'alice reads her channel and a public one together');
    $s->close;
    $res = $auth->request(GET => '/u/public/news?channel=public/news,user/alice');
    is($res->{status}, 401, 'a list with a private channel, without a login: 401');
};

subtest "the README's example: a nested Location for one channel, however it is named" => sub {
    is(sub_status($auth, '/u/admin', basic('alice')), 200, 'alice reads admin (Require user alice)');
    # A list sent to /u must also pass /u's channel rule for admin (docs/access-control.md):
    # stricter than each channel alone, never looser.
    is($auth->request(GET => '/u/public/news,admin', headers => basic('alice'))->{status}, 403,
       "in a list sent to /u, admin must also pass /u's rule");
    for my $path ('/u/admin', '/u/public/news,admin', '/u/public/news?channel=admin',
                  '/u/user/bob?channel=admin') {
        is($auth->request(GET => $path, headers => basic('bob'))->{status}, 403, "bob: $path 403");
    }
    is($auth->request(GET => '/u/public/news?channel=admin')->{status}, 401,
       'without a login: 401');
};

subtest 'Require sse-channel: public/private split' => sub {
    is(sub_status($auth, '/pp/public/x'), 200, 'public/x for everyone');
    is($auth->request(GET => '/pp/private/x')->{status}, 401, 'private/x asks for a login');
    is($auth->request(GET => '/pp/public/x?channel=public/x,private/x')->{status}, 401,
       'and so does a list naming it');
    is(sub_status($auth, '/pp/private/x', basic('bob')), 200, 'a user reads private/x');
    my $res = $auth->request(GET => '/pp/private/x?channel=broken/x', headers => basic('bob'));
    is($res->{status}, 500, 'a channel whose rules fail to run: 500');
    is(json_of($res)->{channel}, 'broken/x', 'naming the channel');
};

subtest 'Require sse-channel: publishing to user channels' => sub {
    my %json = ('Content-Type' => 'application/json');
    is($auth->request(POST => '/upub/user/alice', body => 'hi', headers => basic('alice'))
       ->{status}, 201, 'alice publishes to user/alice');
    is($auth->request(POST => '/upub/user/bob', body => 'hi', headers => basic('alice'))
       ->{status}, 403, 'not to user/bob');
    is($auth->request(POST => '/upub', body => '{"channel":"user/alice","data":"b"}',
                      headers => {%json, %{basic('alice')}})->{status}, 201,
       'a JSON body naming user/alice');
    refused_ok($auth->request(POST => '/upub', body => '{"channel":"user/bob","data":"b"}',
                              headers => {%json, %{basic('alice')}}),
               'user/bob', 'a JSON body naming user/bob');
    refused_ok($auth->request(POST => '/upub/user/alice', body => '{"channel":"user/bob","data":"b"}',
                              headers => {%json, %{basic('alice')}}),
               'user/bob', 'a body channel replacing an allowed path');
    my $res = $auth->request(POST => '/upub', body => '{"channel":"user/alice","data":"b"}',
                             headers => \%json);
    is($res->{status}, 401, 'a body channel without a login: 401');
    is(json_of($res)->{channel}, 'user/alice', 'naming the channel');
    like($res->{headers}{'www-authenticate'} // '', qr/^Basic realm="publish"/,
         'with the lookup\'s challenge');
    is($auth->request(GET => '/upub/user/bob', headers => basic('alice'))->{status}, 403,
       'GET stats of user/bob: 403');
    is($auth->request(DELETE => '/upub/user/bob', headers => basic('alice'))->{status}, 403,
       'DELETE user/bob: 403');
};

subtest 'Require sse-channel with Require method' => sub {
    is($auth->request(POST => '/pubm/news', body => 'n')->{status}, 201, 'POST news: 201');
    is($auth->request(POST => '/pubm/temp/x', body => 't')->{status}, 201, 'POST temp/x: 201');
    is($auth->request(DELETE => '/pubm/news')->{status}, 403, 'DELETE news: 403');
    is($auth->request(DELETE => '/pubm/temp/x?channel=temp/x,news')->{status}, 403,
       'DELETE temp/x,news by the query: 403 (httpd refuses the request as a whole)');
    is($auth->request(DELETE => '/pubm/temp/x')->{status}, 200, 'DELETE temp/x: 200');
};

subtest 'Require sse-channel: no channel is denied' => sub {
    is($auth->request(GET => '/u/')->{status}, 403, 'GET /u/ (no channel): 403');
    is($auth->request(GET => '/u/x?channel=a%20b')->{status}, 403, 'a bad name: 403');
};

subtest 'Require not sse-channel: each channel judged alone' => sub {
    is(sub_status($auth, '/neg/news'), 200, 'news: 200');
    is($auth->request(GET => '/neg/secret1')->{status}, 403, 'secret1: 403');
    is($auth->request(GET => '/neg/news,secret1')->{status}, 403, 'news,secret1: 403');
    is($auth->request(GET => '/neg/news?channel=news,secret1')->{status}, 403,
       '?channel=news,secret1: 403');
};
$auth->stop;

subtest 'Require sse-channel: a bad expression stops configtest' => sub {
    my ($rc, $out) = SSETest::Server->configtest(
        conf => "<Location /x>\n    Require sse-channel %{SSE_CHANNEL} ==\n</Location>\n");
    isnt($rc, 0, 'configtest fails');
    like($out, qr/Require sse-channel: cannot parse the expression "%\{SSE_CHANNEL\} =="/, 'naming the expression');
};

subtest 'SSEChannelBase: a value that is no URL path stops configtest' => sub {
    for my $bad ('feed', '/feed/../x', '/a//b', '/feed?x') {
        my ($rc, $out) = SSETest::Server->configtest(
            conf => "<LocationMatch \"^/feed/\">\n    SSEChannelBase $bad\n</LocationMatch>\n");
        isnt($rc, 0, "SSEChannelBase $bad: configtest fails");
        like($out, qr/SSEChannelBase: "\Q$bad\E" is not a URL path/, "  naming the directive and value");
    }
};

done_testing;
