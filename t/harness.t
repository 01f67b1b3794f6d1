# The harness fails a test whose server crashed, whichever way the test ends: t/lib/harness-victim.pl
# goes wrong on purpose (a child or the publish socket daemon segfaults, the test dies before
# stop(), a sanitizer report is written) and must fail, naming what happened.
use strict;
use warnings;
use lib 't/lib';
use File::Path qw(remove_tree);
use SSETest;
use Test::More;

my $mpm = $ENV{SSE_TEST_MPM} // 'event';
# Cores land in CoreDumpDirectory (the server's cores/) only when core_pattern is a plain name;
# a pipe (systemd-coredump, apport) takes them elsewhere, and then only the log tells. Under
# `make test-asan` there is no core at all (ASan sets RLIMIT_CORE to 0: disable_coredump).
my $pattern = do { open my $fh, '<', '/proc/sys/kernel/core_pattern'; <$fh> // '' };
my $cores_here = $pattern !~ m{^\||/} && !SSETest::sanitized();

sub victim {
    my ($mode) = @_;
    my $out = `$^X -I $SSETest::ROOT/t/lib $SSETest::ROOT/t/lib/harness-victim.pl $mode 2>&1`;
    my $rc = $? >> 8;
    remove_tree($1) if $out =~ /^# run directory: (.*)$/m;
    return ($rc, $out);
}

for my $mode (qw(segv dies daemon)) {
    my ($rc, $out) = victim($mode);
    isnt($rc, 0, "$mode: the test fails");
    like($out, qr/^not ok \d+ - no unexpected lines in the error log/m,
         "$mode: on the error log") or diag $out;
    like($out, qr/^# .*exit signal Segmentation fault/m, "$mode: which shows the exit signal line");
    if ($cores_here) {
        like($out, qr/^not ok \d+ - no core file/m, "$mode: and on the core file") or diag $out;
    }
}
my ($rc, $out) = victim('dies');
like($out, qr/^# stopping the server of .* \(the test did not\)/m,
     'a test that died is stopped and checked all the same');
($rc, $out) = victim('report');
isnt($rc, 0, 'report: the test fails');
like($out, qr/^not ok \d+ - no sanitizer report/m, 'report: on the sanitizer report') or diag $out;
like($out, qr/^# ==1==ERROR: AddressSanitizer: heap-use-after-free/m, 'report: which is shown');
done_testing;
