// Drives headless Debian chromium over the DevTools protocol (CDP on a pipe:
// --remote-debugging-pipe, fds 3/4, NUL-terminated JSON; no WebSocket, no
// npm packages, no downloaded browser).
//
// Opens the review app for one prediction, checks that values and trend
// plots rendered, records a verdict through the form, checks the page shows
// it, and saves screenshots. Prints a JSON summary; exits non-zero on any
// failed check.
//
// env: REVIEW_URL, DASHBOARD_URL, ACCESS_TOKEN (sent as Authorization header),
//      SCREENSHOT_DIR, CHROMIUM (default: chromium), VERDICT_COMMENT
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const env = process.env;
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
function check(name, ok, detail) {
  checks.push({ name, ok: !!ok, detail });
}

async function main() {
  const { targetInfos } = await send('Target.getTargets');
  const page = targetInfos.find((t) => t.type === 'page');
  const { sessionId: s } = await send('Target.attachToTarget', { targetId: page.targetId, flatten: true });
  await send('Page.enable', {}, s);
  await send('Network.enable', {}, s);
  await send('Emulation.setDeviceMetricsOverride', { width: 1200, height: 900, deviceScaleFactor: 1, mobile: false }, s);
  await send('Network.setExtraHTTPHeaders', { headers: { Authorization: `Bearer ${env.ACCESS_TOKEN}` } }, s);

  // Any request leaving for another host would mean an external asset.
  const external = [];
  const seen = (p) => {
    const u = new URL(p.request.url);
    const own = new URL(env.REVIEW_URL);
    if (u.protocol !== 'data:' && u.host !== own.host) external.push(p.request.url);
  };
  listeners.push({ method: 'Network.requestWillBeSent', fn: seen });

  const evaluate = async (expr) => {
    const r = await send('Runtime.evaluate', { expression: expr, returnByValue: true }, s);
    return r.result.value;
  };
  const navigate = async (url) => {
    const loaded = waitFor('Page.loadEventFired', s);
    await send('Page.navigate', { url }, s);
    await loaded;
  };
  const screenshot = async (name) => {
    const { data } = await send('Page.captureScreenshot', { format: 'png', captureBeyondViewport: true }, s);
    const path = join(env.SCREENSHOT_DIR, name);
    writeFileSync(path, Buffer.from(data, 'base64'));
    return path;
  };

  await navigate(env.REVIEW_URL);
  const view = await evaluate(`(() => {
    const q = (sel) => document.querySelector(sel);
    const pts = (id) => document.querySelectorAll('#' + id + ' circle.point').length;
    return {
      title: document.title,
      tier: q('#risk-tier') && q('#risk-tier').textContent,
      risk: q('#risk-value') && q('#risk-value').textContent,
      review: q('#review') && q('#review').textContent,
      patient: q('#patient') && q('#patient').textContent,
      weightPoints: pts('trend-weight'),
      albuminPoints: pts('trend-albumin'),
      crpPoints: pts('trend-crp'),
      weightDeclared: q('#trend-weight') && Number(q('#trend-weight').getAttribute('data-points')),
      polylines: document.querySelectorAll('svg.chart polyline').length,
      indices: document.querySelectorAll('#indices tr.index').length,
      form: !!q('#verdict-form'),
      scripts: document.scripts.length,
    };
  })()`);
  check('page title', view.title === 'Review', view.title);
  check('risk tier shown', /^(low|elevated|high|unknown)$/.test(view.tier || ''), view.tier);
  check('risk value cell', (view.risk || '').length > 0, view.risk);
  check('patient shown', view.patient === env.EXPECT_PATIENT, view.patient);
  check('weight trend plotted', view.weightPoints >= 2 && view.weightPoints === view.weightDeclared, view.weightPoints);
  check('albumin trend plotted', view.albuminPoints >= 1, view.albuminPoints);
  check('crp trend plotted', view.crpPoints >= 1, view.crpPoints);
  check('lines drawn', view.polylines >= 3, view.polylines);
  check('classic indices listed', view.indices >= 4, view.indices);
  check('verdict form present', view.form, view.form);
  check('no scripts', view.scripts === 0, view.scripts);
  const before = await screenshot('review-app.png');

  // Record a verdict through the form (a real form POST, then the redirect).
  const comment = env.VERDICT_COMMENT || 'Disagree: weight loss explained by recent surgery';
  await evaluate(`(() => {
    document.querySelector('input[name=verdict][value=disagree]').click();
    document.querySelector('#comment').value = ${JSON.stringify(comment)};
  })()`);
  const loaded = waitFor('Page.loadEventFired', s);
  await evaluate(`document.querySelector('#submit-verdict').click()`);
  await loaded;
  const after = await evaluate(`(() => ({
    url: location.href,
    saved: !!document.querySelector('#saved'),
    outcomes: [...document.querySelectorAll('.feedback-item .feedback-outcome')].map((e) => e.textContent),
    comments: [...document.querySelectorAll('.feedback-item .feedback-comment')].map((e) => e.textContent),
  }))()`);
  check('redirected back with saved=1', after.url.endsWith('?saved=1'), after.url);
  check('saved banner', after.saved, after.saved);
  check('verdict listed as overridden', after.outcomes.includes('overridden'), after.outcomes);
  check('comment listed', after.comments.includes(comment), after.comments);
  const saved = await screenshot('review-app-saved.png');

  let dashboard = null;
  if (env.DASHBOARD_URL) {
    await navigate(env.DASHBOARD_URL);
    dashboard = await evaluate(`(() => ({
      groups: document.querySelectorAll('section.group').length,
      bars: document.querySelectorAll('svg.chart rect.bar').length,
      volume: document.querySelector('section.group .volume') && document.querySelector('section.group .volume').textContent,
    }))()`);
    check('dashboard group', dashboard.groups >= 1, dashboard);
    check('dashboard bars', dashboard.bars >= 2, dashboard.bars);
    await screenshot('dashboard.png');
  }
  check('no external requests', external.length === 0, external);
  return { view, after, dashboard, screenshots: [before, saved] };
}

let code = 1;
try {
  const out = await main();
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
