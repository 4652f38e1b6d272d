// Attacks the admin server from Debian's headless Chromium for ConsoleAttackTest (JUnit): the
// operator's browser holds the console's cookie, then opens a page of another origin that tries
// to read the console's bus and the admin paths, and a page of a DNS name rebound to 127.0.0.1.
// Prints one line RESULT <json> (or FAIL <why>, exit 1).
// Usage: node attack-test.mjs CONSOLE_URL EVIL_URL REBIND_HOST:PORT USER_DATA_DIR
import { chromium } from 'playwright-core';

const [consoleUrl, evilUrl, rebind, userDataDir] = process.argv.slice(2);
const say = (s) => process.stdout.write(s + '\n');
const rebindName = rebind.split(':')[0];

// what a hostile page runs against one admin server: its websocket bridge, then the admin paths
const ATTACK = async (target) => {
  const addresses = ['console.docker.events', 'console.etcd.changes', 'console.reconcile.report',
    'console.kernel.batch', 'console.etcd.status', 'console.docker.status'];
  const ws = await new Promise((done) => {
    const r = { opened: false, recs: 0, sample: '', error: null };
    let sock;
    try {
      sock = new WebSocket('ws://' + target + '/console/eventbus/websocket');
    } catch (e) {
      r.error = String(e);
      done(r);
      return;
    }
    sock.binaryType = 'arraybuffer';
    sock.onopen = () => {
      r.opened = true;
      for (const a of addresses) sock.send(JSON.stringify({ type: 'register', address: a }));
    };
    sock.onmessage = (ev) => {
      const d = typeof ev.data === 'string' ? ev.data : new TextDecoder().decode(ev.data);
      if (d.includes('"rec"')) { r.recs++; if (!r.sample) r.sample = d.slice(0, 200); }
    };
    sock.onerror = () => { r.error = 'websocket error'; };
    setTimeout(() => { try { sock.close(); } catch (e) { /* closed */ } done(r); }, 4000);
  });
  const read = async (path, init) => {
    try {
      const resp = await fetch('http://' + target + path, { credentials: 'include', ...init });
      return { read: true, status: resp.status, body: (await resp.text()).slice(0, 300) };
    } catch (e) {
      return { read: false, error: String(e) };
    }
  };
  return {
    ws,
    health: await read('/health'),
    metrics: await read('/metrics'),
    info: await read('/console/eventbus/info'),
    // SockJS's streaming transport: it answered any Origin with Allow-Credentials
    xhr: await read('/console/eventbus/000/fnpattack/xhr_streaming', { method: 'POST' }),
  };
};

let context;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      `--host-resolver-rules=MAP ${rebindName} 127.0.0.1`],
  });
  const result = {};

  // the operator's console: the cookie is set, and the bus streams (the control: data is there)
  const consolePage = context.pages()[0] || await context.newPage();
  await consolePage.goto(consoleUrl);
  await consolePage.waitForFunction(() => document.getElementById('status').textContent === 'connected', null,
    { timeout: 15000 });
  await consolePage.waitForFunction(() => window.fnpConsole.counts['console.etcd.changes'] > 0, null,
    { timeout: 15000 });
  result.console = {
    url: consolePage.url(),
    etcdChanges: await consolePage.evaluate(() => window.fnpConsole.counts['console.etcd.changes']),
    cookies: (await context.cookies()).map((c) => ({ name: c.name, httpOnly: c.httpOnly, sameSite: c.sameSite })),
  };
  // the same attack from the console's own origin must work: proves the attack would see data
  const own = new URL(consoleUrl).host;
  result.ownOrigin = await consolePage.evaluate(ATTACK, own);

  // a page of another origin on the same host (same site: the SameSite cookie goes with it)
  const evil = await context.newPage();
  await evil.goto(evilUrl);
  const targets = new URL(evilUrl).searchParams.get('targets').split(',');
  result.evil = {};
  for (const t of targets) result.evil[t] = await evil.evaluate(ATTACK, t);

  // DNS rebinding: a name the attacker controls now resolves to 127.0.0.1; the page is then
  // same-origin with whatever answers there
  const rebound = await context.newPage();
  result.rebind = {};
  for (const path of ['/health', '/metrics']) {
    const resp = await rebound.goto('http://' + rebind + path);
    result.rebind[path] = { status: resp.status(), body: (await rebound.content()).slice(0, 300) };
  }
  result.rebind.attack = await rebound.evaluate(ATTACK, rebind);

  say('RESULT ' + JSON.stringify(result));
  await context.close();
  process.exit(0);
} catch (e) {
  say('FAIL ' + String(e && e.stack || e).replace(/\n/g, ' | '));
  if (context) await context.close().catch(() => {});
  process.exit(1);
}
