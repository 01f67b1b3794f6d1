# tools/check-deps (run by `make test` after tools/install-deps) finds what the tests use but
# install-deps does not install: here on a copy of the tree whose install-deps forgot two
# packages and whose Node client imports a package missing from package.json. And on this tree
# itself it finds nothing.
use strict;
use warnings;
use lib 't/lib';
use File::Path qw(make_path remove_tree);
use SSETest;
use Test::More;

my $root = $SSETest::ROOT;
my $copy = "$root/t/run/check-deps-$$";
remove_tree($copy) unless $ENV{SSE_TEST_KEEP};
make_path("$copy/t/js", "$copy/.ci");
system("cp", "-r", "$root/tools", "$root/bench", "$root/Makefile", $copy) == 0 && system("cp", "-r", "$root/t/lib", "$copy/t/") == 0
    or die 'cp failed';
system('cp', glob("$root/t/*.t"), "$copy/t/") == 0 or die 'cp failed';
system('cp', "$root/t/js/package.json", glob("$root/t/js/*.mjs"), "$copy/t/js/") == 0 or die 'cp';
system('cp', "$root/.ci/run", "$copy/.ci/") == 0 or die 'cp failed';

sub edit {
    my ($file, $change) = @_;
    open my $in, '<', $file or die "$file: $!";
    local $_ = do { local $/; <$in> };
    close $in;
    $change->();
    open my $out, '>', $file or die "$file: $!";
    print $out $_;
    close $out;
}

my $out = `$root/tools/check-deps $root 2>&1`;
is($? >> 8, 0, 'this tree: every module, command and npm package is covered') or diag $out;

edit("$copy/tools/install-deps", sub { s/ libio-socket-ssl-perl\b//g; s/ gdb\b//g });
edit("$copy/t/js/sse-client.mjs", sub { $_ = "import leftpad from 'left-pad';\n$_" });
$out = `$root/tools/check-deps $copy 2>&1`;
is($? >> 8, 1, 'a copy with two packages and an npm dependency forgotten fails');
like($out, qr{t/[\w/-]+\.(?:t|pm):\d+: Perl module IO::Socket::SSL comes from Debian package 'libio-socket-ssl-perl'},
     'the Perl module is named with its package and where it is used');
like($out, qr{: command 'gdb' comes from Debian package 'gdb'}, 'the command too');
like($out, qr{t/js/sse-client\.mjs:1: npm package 'left-pad' is not in t/js/package.json},
     'and the npm package');
remove_tree($copy) unless $ENV{SSE_TEST_KEEP};
done_testing;
