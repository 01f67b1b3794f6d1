package SSEMercure;
# What the Mercure hub tests (t/mercure*.t) share: a shared secret made for the run, the hub's
# <Location> block, and tokens signed with the secret.
#
#   my $key = SSEMercure::secret_file($dir);          # {file => ..., secret => ...}
#   my $conf = SSEMercure::hub_location('/.well-known/mercure', "HS256 $key->{file}", anonymous => 1);
#   my $jwt = SSEMercure::token($key, {publish => ['*']});
use strict;
use warnings;
use Crypt::JWT qw(encode_jwt);

# A fresh HS256 secret (64 hex digits) in `$dir/hs.secret`, with the trailing newline an editor
# leaves (mod_sse drops it).
sub secret_file {
    my ($dir) = @_;
    my $secret = `openssl rand -hex 32`;
    chomp $secret;
    die 'openssl rand failed' unless length $secret == 64;
    open my $fh, '>', "$dir/hs.secret" or die "$dir/hs.secret: $!";
    print $fh "$secret\n";
    close $fh;
    return {file => "$dir/hs.secret", secret => $secret};
}

# A <Location> mapping `path` to the hub; `key` is SSETokenKey's arguments (none: no key);
# options anonymous, subscriptions (SSEMercureSubscriptions on), blocking (SSEAsync Off);
# `hub => name` makes it that SSEMercureHub (locations with one name share their updates).
sub hub_location {
    my ($path, $key, %o) = @_;
    return "<Location $path>\n    SetHandler mercure-hub\n"
         . (defined $key ? "    SSETokenKey $key\n" : '')
         . ($o{anonymous} ? "    SSEMercureAnonymous on\n" : '')
         . ($o{subscriptions} ? "    SSEMercureSubscriptions on\n" : '')
         . ($o{blocking} ? "    SSEAsync Off\n" : '')
         . ($o{hub} ? "    SSEMercureHub $o{hub}\n" : '')
         . "</Location>\n";
}

# The publisher Symfony applications use (Debian's php-symfony-mercure: Hub::publish() with a
# StaticTokenProvider), as a script in $dir; undef when php-cli or the component is missing.
# Returns a sub ($url, $jwt, $topics (space-separated), $data, 'private' or '', $id, $type)
# that runs it and returns (exit code, the id Hub::publish() returned or the error).
sub symfony_publisher {
    my ($dir) = @_;
    my $autoload = '/usr/share/php/Symfony/Component/Mercure/autoload.php';
    return undef unless -x '/usr/bin/php' && -f $autoload;
    open my $fh, '>', "$dir/publish.php" or die "$dir/publish.php: $!";
    print $fh <<"PHP";
<?php
require '$autoload';
[, \$url, \$jwt, \$topics, \$data, \$private, \$id, \$type] = \$argv + array_fill(0, 8, '');
\$hub = new \\Symfony\\Component\\Mercure\\Hub(
    \$url, new \\Symfony\\Component\\Mercure\\Jwt\\StaticTokenProvider(\$jwt));
try {
    echo \$hub->publish(new \\Symfony\\Component\\Mercure\\Update(explode(' ', \$topics), \$data, \$private === 'private',
                                   \$id === '' ? null : \$id, \$type === '' ? null : \$type));
} catch (\\Throwable \$e) {
    echo 'failed: ', \$e->getMessage(), \$e->getPrevious() ? ': ' . \$e->getPrevious()->getMessage() : '';
    exit(1);
}
PHP
    close $fh;
    return sub {
        my @args = map { my $a = $_; $a =~ s/'/'\\''/g; "'$a'" } @_;
        my $out = `php $dir/publish.php @args 2>&1`;
        return ($? >> 8, $out);
    };
}

# An HS256 token whose `mercure` claim is `$mercure`, plus `%claims` (exp, sub, ...).
sub token {
    my ($key, $mercure, %claims) = @_;
    return encode_jwt(payload => {%claims, mercure => $mercure}, alg => 'HS256',
                      key => $key->{secret});
}

1;
