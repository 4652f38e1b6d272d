// Drives the console's cluster page in Debian's headless Chromium for FaultIT (JUnit), over lines:
// prints READY once the page shows a view, then for each line "WAIT <ms> <what> <js>" from the test
// waits until <js> (an expression over v, the view the page draws, and document) is true and prints
// "OK <what>" or "FAIL <what> <why>"; "DONE" on stdin closes the browser. Usage:
// node cluster-test.mjs URL USER_DATA_DIR
import { chromium } from 'playwright-core';
import readline from 'node:readline';

const [url, userDataDir] = process.argv.slice(2);
const say = (s) => process.stdout.write(s + '\n');
let context;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = context.pages()[0] || await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(url);
  await page.waitForFunction(() => window.fnpCluster && window.fnpCluster.view, null, { timeout: 30000 });
  say('READY');
  for await (const line of readline.createInterface({ input: process.stdin })) {
    if (line === 'DONE') break;
    const m = line.match(/^WAIT (\d+) (\S+) (.*)$/);
    if (!m) { say('FAIL ? bad line: ' + line); continue; }
    const [, ms, what, expr] = m;
    try {
      await page.waitForFunction((e) => {
        const v = window.fnpCluster.view;
        return Boolean(v && new Function('v', 'document', 'return (' + e + ');')(v, document));
      }, expr, { timeout: Number(ms), polling: 200 });
      say(errors.length ? `FAIL ${what} page errors: ${errors.join('; ')}` : `OK ${what}`);
    } catch (e) {
      const shown = await page.evaluate(() => document.body.innerText.slice(0, 1500)).catch(() => '');
      say(`FAIL ${what} ${String(e.message || e).split('\n')[0]} | page: ${shown.replace(/\n/g, ' | ')}`);
    }
  }
  await context.close();
  process.exit(0);
} catch (e) {
  say('FAIL start ' + String(e && e.stack || e).replace(/\n/g, ' | '));
  if (context) await context.close().catch(() => {});
  process.exit(1);
}
