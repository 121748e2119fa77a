// Headless Debian chromium driven over the DevTools protocol (CDP on a pipe:
// --remote-debugging-pipe, fds 3/4, NUL-terminated JSON; no WebSocket, no
// npm packages, no downloaded browser). Shared by the review app's browser
// scripts (review.mjs, review_nodule.mjs).
//
// run(main): starts chromium, attaches to its page, sends `Authorization:
// Bearer $ACCESS_TOKEN` with every request, records requests to hosts other
// than $REVIEW_URL's, calls `main(page)`, prints one JSON summary
// ({ok, checks, ...what main returned}) and exits non-zero on any failed
// check or error.
//
// env: REVIEW_URL, ACCESS_TOKEN, SCREENSHOT_DIR, CHROMIUM (default: chromium)
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const env = process.env;

export async function run(main) {
  const profile = mkdtempSync(join(tmpdir(), 'oncohooks-chromium-'));
  const browser = spawn(env.CHROMIUM || 'chromium', [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--no-first-run', '--no-default-browser-check', '--hide-scrollbars',
    `--user-data-dir=${profile}`, '--remote-debugging-pipe', 'about:blank',
  ], { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] });
  let stderr = '';
  browser.stderr.on('data', (d) => { stderr += d; });

  const toBrowser = browser.stdio[3];
  const fromBrowser = browser.stdio[4];
  let nextId = 1;
  const pending = new Map();
  const waiters = [];
  const listeners = [];
  let buf = Buffer.alloc(0);
  fromBrowser.on('data', (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    let i;
    while ((i = buf.indexOf(0)) >= 0) {
      const msg = JSON.parse(buf.subarray(0, i).toString('utf8'));
      buf = buf.subarray(i + 1);
      if (msg.id && pending.has(msg.id)) {
        const { resolve, reject } = pending.get(msg.id);
        pending.delete(msg.id);
        if (msg.error) reject(new Error(JSON.stringify(msg.error))); else resolve(msg.result);
      } else if (msg.method) {
        for (const l of listeners) if (l.method === msg.method) l.fn(msg.params);
        for (const w of [...waiters]) {
          if (w.method === msg.method && (!w.sessionId || w.sessionId === msg.sessionId)) {
            waiters.splice(waiters.indexOf(w), 1);
            w.resolve(msg.params);
          }
        }
      }
    }
  });

  function send(method, params = {}, sessionId) {
    const id = nextId++;
    const msg = { id, method, params };
    if (sessionId) msg.sessionId = sessionId;
    toBrowser.write(JSON.stringify(msg) + '\0');
    return new Promise((resolve, reject) => pending.set(id, { resolve, reject }));
  }

  function waitFor(method, sessionId, ms = 20000) {
    return new Promise((resolve, reject) => {
      const w = { method, sessionId, resolve };
      waiters.push(w);
      setTimeout(() => reject(new Error(`timed out waiting for ${method}`)), ms);
    });
  }

  const checks = [];
  const check = (name, ok, detail) => { checks.push({ name, ok: !!ok, detail }); };

  async function open() {
    const { targetInfos } = await send('Target.getTargets');
    const target = targetInfos.find((t) => t.type === 'page');
    const { sessionId: s } = await send('Target.attachToTarget', { targetId: target.targetId, flatten: true });
    await send('Page.enable', {}, s);
    await send('Network.enable', {}, s);
    await send('Emulation.setDeviceMetricsOverride', { width: 1200, height: 900, deviceScaleFactor: 1, mobile: false }, s);
    await send('Network.setExtraHTTPHeaders', { headers: { Authorization: `Bearer ${env.ACCESS_TOKEN}` } }, s);

    // Any request leaving for another host would mean an external asset.
    const external = [];
    const own = new URL(env.REVIEW_URL);
    listeners.push({
      method: 'Network.requestWillBeSent',
      fn: (p) => {
        const u = new URL(p.request.url);
        if (u.protocol !== 'data:' && u.host !== own.host) external.push(p.request.url);
      },
    });

    const evaluate = async (expr) => {
      const r = await send('Runtime.evaluate', { expression: expr, returnByValue: true, awaitPromise: true }, s);
      if (r.exceptionDetails) throw new Error(`page evaluation failed: ${JSON.stringify(r.exceptionDetails)}`);
      return r.result.value;
    };
    const navigate = async (url) => {
      const loaded = waitFor('Page.loadEventFired', s);
      await send('Page.navigate', { url }, s);
      await loaded;
    };
    // Click something that submits a form, and wait for the next page.
    const submit = async (expr) => {
      const loaded = waitFor('Page.loadEventFired', s);
      await evaluate(expr);
      await loaded;
    };
    const screenshot = async (name) => {
      const { data } = await send('Page.captureScreenshot', { format: 'png', captureBeyondViewport: true }, s);
      const path = join(env.SCREENSHOT_DIR, name);
      writeFileSync(path, Buffer.from(data, 'base64'));
      return path;
    };
    return { evaluate, navigate, submit, screenshot, check, external };
  }

  let code = 1;
  try {
    const page = await open();
    const out = await main(page);
    page.check('no external requests', page.external.length === 0, page.external);
    const failed = checks.filter((c) => !c.ok);
    console.log(JSON.stringify({ ok: failed.length === 0, checks, ...out }, null, 1));
    code = failed.length === 0 ? 0 : 1;
  } catch (e) {
    console.log(JSON.stringify({ ok: false, error: String(e && e.stack || e), checks, chromium_stderr: stderr.slice(-2000) }));
  } finally {
    try { await Promise.race([send('Browser.close'), new Promise((r) => setTimeout(r, 2000))]); } catch {}
    browser.kill('SIGKILL');
    try { rmSync(profile, { recursive: true, force: true }); } catch {}
    process.exit(code);
  }
}
