# The demo of `make run`: tools/run-demo starts it (on a free port, in its own run directory),
# Chromium opens the page, the publish commands the page shows are run as they are, and the page
# shows the events, its connection state through a graceful restart and a close/reopen; then a
# screenshot, and the demo is stopped by its pid.
use strict;
use warnings;
use utf8;
use lib 't/lib';
use Encode qw(encode_utf8);
use File::Copy qw(move);
use File::Path qw(make_path remove_tree);
use MIME::Base64 ();
use SSETest;
use SSEBrowser;
use Test::More;
use Time::HiRes qw(sleep time);

SSEBrowser::require_or_skip();
binmode(Test::More->builder->$_, ':encoding(UTF-8)') for qw(output failure_output todo_output);
plan skip_all => 'the demo runs the event MPM: tested in the event pass'
    if ($ENV{SSE_TEST_MPM} // 'event') ne 'event';

my $root = $SSETest::ROOT;
my $port = SSETest::free_port();
my $run = SSETest::run_dir("demo-$$");
my $env = "SSE_DEMO_PORT=$port SSE_DEMO_RUNDIR=" . SSETest::shell_quote($run);

my $out = `cd / && $env $root/tools/run-demo start 2>&1`;
is($?, 0, 'tools/run-demo starts the demo') or diag($out);
like($out, qr{open\s+http://127\.0\.0\.1:$port/}, 'it says where');
my $pid = do { open my $fh, '<', "$run/httpd.pid" or die "no pid file in $run\n$out"; local $/; <$fh> };
chomp $pid;
ok(kill(0, $pid), "httpd runs (pid $pid)");

# Whatever happens below, the demo is stopped by its pid.
my $stopped;
sub stop_demo {
    return if $stopped++;
    my $o = `$env $root/tools/run-demo stop 2>&1`;
    my $end = time + 30;
    sleep 0.1 while kill(0, $pid) && time < $end;
    if (kill 0, $pid) { kill 'KILL', $pid; return 0 }
    return 1;
}
END { stop_demo() if $pid }

my $b = SSEBrowser->start(log => "$run/browser.log");
$b->goto("http://127.0.0.1:$port/");
ok($b->try_wait("window.demo.state === 'open'", 15), 'the page shows the stream open');
is($b->eval("document.getElementById('state').textContent"), 'open', 'state: open');

my $shell = $b->try_wait("document.getElementById('shell').textContent.includes('sse-publish') && document.getElementById('shell').textContent", 10);
like($shell, qr{^curl -d 'hello from curl' http://127\.0\.0\.1:$port/publish/demo$}m, 'curl, with the port');
like($shell, qr{^\Q$root\E/build/sse-publish -S \Q$run\E/sse-publish\.sock demo 'hello from the socket'$}m,
     'sse-publish, with the socket');
# The commands as the page shows them, from another directory.
my $sh = `cd / && sh -e -c @{[SSETest::shell_quote($shell)]} 2>&1`;
is($?, 0, 'the shown commands run') or diag($sh);

my @want = (['message', 'hello from curl'], ['update', 'a typed event'], ['alert', "two\nlines"],
            ['message', 'hello from the socket'], ['update', qr/\d\d:\d\d/]);
ok($b->try_wait('window.demo.events.length >= ' . @want, 10), scalar(@want) . ' events on the page');
my $events = $b->eval('window.demo.events');
is(scalar @$events, scalar @want, 'no more');
for my $i (0 .. $#want) {
    is($events->[$i]{type}, $want[$i][0], "event $i: type");
    ref $want[$i][1] ? like($events->[$i]{data}, $want[$i][1], "event $i: data")
                     : is($events->[$i]{data}, $want[$i][1], "event $i: data");
}
my $rows = $b->eval(q{[...document.querySelectorAll('#events tr')].map(tr => [...tr.cells].map(td => td.textContent))});
is(scalar @$rows, scalar @want, 'one table row per event');
is_deeply([map { [@$_[2, 3]] } reverse @$rows[1 .. $#$rows]],
          [map { [@$_] } @want[0 .. 3]], 'each row shows type and data (newest first)');
is($b->eval("document.getElementById('count').textContent"), scalar(@want), 'the count');

sub publish {
    system('curl', '-sf', '-o', '/dev/null', '-d', encode_utf8($_[0]), "http://127.0.0.1:$port/publish/demo") == 0;
}

subtest 'a graceful restart: connecting, then open again with what was missed' => sub {
    kill 'USR1', $pid;
    ok($b->try_wait("window.demo.state === 'connecting'", 15), 'state: connecting');
    ok(publish('published while you were away'), 'publish meanwhile');
    ok($b->try_wait("window.demo.state === 'open' && window.demo.reconnects === 1", 20), 'open again, 1 reconnect');
    ok($b->try_wait("window.demo.events.some(e => e.data === 'published while you were away')", 10),
       'the missed event is shown');
    my $log = $b->eval('window.demo.log');
    like($log->[-2], qr/connection lost/, 'the connection log says it was lost');
    like($log->[-1], qr/open again: the browser reconnected with Last-Event-ID \d+/, 'and resumed');
};

subtest 'Close, then Reopen resumes from the last id' => sub {
    $b->eval("document.getElementById('close').click()");
    is($b->eval('window.demo.state'), 'closed', 'state: closed');
    ok(publish('published while closed'), 'publish meanwhile');
    $b->eval("document.getElementById('reopen').click()");
    ok($b->try_wait("window.demo.state === 'open'", 15), 'open');
    ok($b->try_wait("window.demo.events.at(-1).data === 'published while closed'", 10), 'the missed event is shown');
    ok(publish("héllo wörld ✓ → live again"), 'and live ones');
    ok($b->try_wait("window.demo.events.at(-1).data === 'héllo wörld ✓ → live again'", 10), 'shown');
};

my $png = "$run/demo.png";
$b->screenshot($png);
my $size = -s $png // 0;
my $head = do { open my $fh, '<:raw', $png or die; local $/ = \24; <$fh> } // '';
is(substr($head, 0, 8), "\x89PNG\r\n\x1a\n", 'the screenshot is a PNG');
my ($w, $h) = unpack 'NN', substr($head, 16, 8);
is("${w}x$h", '1100x820', 'of the window size');
# Not blank, whatever the PNG encoder makes of it (its size is no measure): the browser decodes
# the screenshot and counts the colours of a sample of its pixels; a blank page has one.
my $b64 = do { open my $fh, '<:raw', $png or die; local $/; MIME::Base64::encode_base64(<$fh>, '') };
$b->eval(<<"JS");
window.shotColours = null;
(() => {
    const img = new Image();
    img.onload = () => {
        const c = document.createElement('canvas');
        c.width = img.width;
        c.height = img.height;
        const g = c.getContext('2d');
        g.drawImage(img, 0, 0);
        const d = g.getImageData(0, 0, c.width, c.height).data;
        const seen = new Set();
        for (let i = 0; i < d.length && seen.size < 100; i += 4 * 7)
            seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
        window.shotColours = seen.size;
    };
    img.onerror = () => { window.shotColours = -1; };
    img.src = 'data:image/png;base64,$b64';
})();
true
JS
$b->try_wait('window.shotColours !== null', 30);
my $colours = $b->eval('window.shotColours');
cmp_ok($colours, '>=', 10, "and not blank ($colours colours in a sample of its pixels, $size bytes)");
$b->stop;

ok(stop_demo(), 'tools/run-demo stop stopped it');
ok(!kill(0, $pid), 'httpd is gone');
my @left = grep {
    open my $fh, '<', "/proc/$_/cmdline" or ();
    $fh && index(do { local $/; <$fh> } // '', "$run/httpd.conf") >= 0;
} map { m{/proc/(\d+)$} ? $1 : () } glob '/proc/[0-9]*';
ok(!@left, 'no process of the demo is left') or kill 'KILL', @left;
my $log = do { open my $fh, '<', "$run/error.log" or die; local $/; <$fh> };
my @bad = grep { /\[(?:\w+:)?(?:warn|error|crit|alert|emerg)\]|exit signal|Segmentation|Assertion
                  |AddressSanitizer|runtime\ error:|core\ dumped/x } split /\n/, $log;
ok(!@bad, 'no warning or error in the demo error log') or diag(join "\n", @bad);
# A crash is in the log above ("exit signal"); a core file (in ServerRoot, the run directory,
# when core_pattern is a plain name) fails too.
my @cores = glob "$run/core*";
ok(!@cores, 'no core file') or diag("core files: @cores");

# On success only the screenshot stays, as t/run/demo.png.
if (Test::More->builder->is_passing && !$ENV{SSE_TEST_KEEP}) {
    move($png, "$root/t/run/demo.png");
    remove_tree($run);
    note("screenshot: t/run/demo.png");
}
done_testing;
