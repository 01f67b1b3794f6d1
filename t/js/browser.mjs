// A Chromium driven by a test: Debian's /usr/bin/chromium (never a downloaded browser) through
// playwright-core, headless, one page in a fresh profile.
//
// The test talks to it over stdin/stdout, one JSON object a line. It prints
//   {"ready":true,"version":"..."}
// once the browser runs, then answers each request {"id":n,"cmd":...} with
//   {"id":n,"ok":true,"value":...}  or  {"id":n,"ok":false,"error":"..."}
// in order. Commands:
//   goto {url}                  load a page (waits for `load`)
//   eval {expr}                 evaluate a JavaScript expression in the page, return its value
//   wait {expr, timeout}        wait until the expression is truthy (polling), return its value
//   screenshot {path, fullPage} write a PNG
//   add_cookies {cookies}       BrowserContext.addCookies
//   console {}                  the console messages and page errors seen so far
//   close {}                    close the browser and exit
// The browser is closed when stdin ends, so the driver never outlives the test.
import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';

const executablePath = process.env.SSE_TEST_CHROMIUM || '/usr/bin/chromium';
const browser = await chromium.launch({
  executablePath,
  args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
         '--disable-background-networking', '--no-first-run', '--no-default-browser-check',
         '--disable-component-update', '--disable-sync', '--metrics-recording-only',
         '--password-store=basic', '--use-mock-keychain'],
  timeout: 60000,
});
const context = await browser.newContext({ viewport: { width: 1100, height: 820 } });
const page = await context.newPage();
const consoleLines = [];
page.on('console', (m) => consoleLines.push({ type: m.type(), text: m.text() }));
page.on('pageerror', (e) => consoleLines.push({ type: 'pageerror', text: String(e) }));

const send = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

async function run(req) {
  switch (req.cmd) {
    case 'goto':
      await page.goto(req.url, { waitUntil: 'load', timeout: req.timeout ?? 30000 });
      return page.url();
    case 'eval':
      return await page.evaluate(req.expr);
    case 'wait': {
      const handle = await page.waitForFunction(req.expr, null,
        { timeout: req.timeout ?? 10000, polling: 100 });
      const value = await handle.jsonValue();
      await handle.dispose();
      return value;
    }
    case 'screenshot':
      await page.screenshot({ path: req.path, fullPage: !!req.fullPage });
      return req.path;
    case 'add_cookies':
      await context.addCookies(req.cookies);
      return true;
    case 'console':
      return consoleLines;
    case 'close':
      await browser.close();
      return true;
    default:
      throw new Error(`unknown command ${req.cmd}`);
  }
}

send({ ready: true, version: browser.version() });

// Requests are served one after the other, in the order they came.
let queue = Promise.resolve();
const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  queue = queue.then(async () => {
    let req;
    try {
      req = JSON.parse(line);
      const value = await run(req);
      send({ id: req.id, ok: true, value: value ?? null });
      if (req.cmd === 'close') process.exit(0);
    } catch (e) {
      send({ id: req?.id ?? null, ok: false, error: String(e?.message ?? e) });
    }
  });
});
rl.on('close', () => {
  queue.then(() => browser.close()).finally(() => process.exit(0));
});
