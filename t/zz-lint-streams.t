# Every event stream the tests of this prove run received (SSETest::Client keeps them, see
# save_stream) through eventsource-parser, the parser of the eventsource and eventsource-client
# packages (t/js/lint-streams.mjs): no field a client rejects, UTF-8 throughout, and the same
# events as the harness's own parser. Runs last (prove runs t/*.t in sorted order, one at a
# time); run alone, it finds no streams and fails.
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

my $dir = SSETest::Client::streams_dir();
my ($rc, $out) = (1, "no stream was saved in $dir by the tests of this run\n");
($rc, $out) = run_lint($dir) if -d $dir;
is($rc, 0, 'every stream of this run is clean for eventsource-parser') or diag $out;
my ($streams) = $out =~ /linted (\d+) streams/;
diag $out =~ /^(linted .*)$/m ? $1 : $out;
cmp_ok($streams // 0, '>', 0, 'streams were linted');
remove_tree($dir) if $rc == 0 && !$ENV{SSE_TEST_KEEP};
done_testing;
