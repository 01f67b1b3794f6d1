# The stream linter that every test runs on the streams its clients received (SSETest.pm,
# streams_dir): t/js/lint-streams.mjs feeds them through eventsource-parser, the parser of the
# eventsource and eventsource-client packages. This test shows that the linter fails on each
# kind of bad stream, and that a test whose client received a bad stream fails through the
# harness, also when that client is still open when the test ends.
use strict;
use warnings;
use lib 't/lib';
use File::Path qw(make_path remove_tree);
use SSETest;
use Test::More;

my $lint = "$SSETest::ROOT/t/js/lint-streams.mjs";
if (system('node --version >/dev/null 2>&1') != 0
    || !-d "$SSETest::ROOT/t/js/node_modules/eventsource-parser") {
    fail('node and the npm packages of t/js are there (tools/install-deps installs them)');
    done_testing;
    exit;
}

sub run_lint {
    my ($dir) = @_;
    my $out = `node $lint $dir 2>&1`;
    return ($? >> 8, $out);
}

sub write_file {
    my ($path, $bytes) = @_;
    open my $fh, '>:raw', $path or die "$path: $!";
    print $fh $bytes;
    close $fh;
}

subtest 'the linter can fail' => sub {
    my $dir = "$SSETest::ROOT/t/run/lint-selftest-$$";
    remove_tree($dir);
    make_path("$dir/good", "$dir/bad", "$dir/empty");
    my $events = '{"retry":null,"events":[{"data":"a","event":"message","id":"1"}]}';
    write_file("$dir/good/good.sse", ": ok\n\nid: 1\ndata: a\n\n");
    write_file("$dir/good/good.json", $events);
    my ($rc, $out) = run_lint("$dir/good");
    is($rc, 0, 'a clean stream passes') or diag $out;
    like($out, qr/linted 1 streams, 1 events/, 'and is counted');

    my %bad = (
        'unknown-field' => ["id: 1\ndata: a\nfoo: bar\n\n", qr/unknown-field: "foo: bar"/],
        'invalid-retry' => ["retry: 1x\n\nid: 1\ndata: a\n\n", qr/invalid-retry: "retry: 1x"/],
        'not-utf8'      => ["id: 1\ndata: \xff\n\n", qr/not UTF-8/],
        'other-events'  => ["id: 1\ndata: b\n\n", qr/event 0: eventsource-parser .*"b".*harness .*"a"/],
    );
    for my $name (sort keys %bad) {
        write_file("$dir/bad/$name.sse", $bad{$name}[0]);
        write_file("$dir/bad/$name.json", $events);
    }
    ($rc, $out) = run_lint("$dir/bad");
    is($rc, 1, 'bad streams fail');
    like($out, qr/^\Q$_.sse\E: .*$bad{$_}[1]/m, "$_ is reported") for sort keys %bad;

    ($rc, $out) = run_lint("$dir/empty");
    is($rc, 1, 'no stream at all fails');
    remove_tree($dir);
};

# A test script whose client got a stream with a field browsers reject, or a clean one; the client
# is still referenced when the script ends, so the harness saves it on its way out.
sub run_test_with_stream {
    my ($bytes) = @_;
    my $script = "$SSETest::ROOT/t/run/lint-hook-$$.pl";
    write_file($script, <<'PERL');
use strict;
use warnings;
use SSETest;
use Test::More;
my $client = bless {head => {status => 200, headers => {}}, pid => $$, retry => undef,
                    stream_bytes => $ENV{LINT_STREAM},
                    events => [{data => 'a', event => 'message', id => '1'}]},
                   'SSETest::Client';
$client->track;
ok(1, 'a test that passes');
done_testing;
PERL
    local $ENV{LINT_STREAM} = $bytes;
    local $ENV{SSE_TEST_KEEP};
    my $out = `$^X -I$SSETest::ROOT/t/lib $script 2>&1`;
    my $rc = $? >> 8;
    unlink $script;
    return ($rc, $out);
}

subtest 'a test whose client received a bad stream fails' => sub {
    my ($rc, $out) = run_test_with_stream("id: 1\ndata: a\nfoo: bar\n\n");
    isnt($rc, 0, 'the test exits with a failure status') or diag $out;
    like($out, qr/unknown-field: "foo: bar"/, 'and says what eventsource-parser rejected');
    File::Path::remove_tree($1) if $out =~ /kept in (\S+):/;
    ($rc, $out) = run_test_with_stream("id: 1\ndata: a\n\n");
    is($rc, 0, 'the same test with a clean stream passes') or diag $out;
};

done_testing;
