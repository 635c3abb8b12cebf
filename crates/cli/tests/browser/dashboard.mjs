// Drives the mqlink dashboard in Debian's headless Chromium (driven by ../dashboard.rs).
//
//   node dashboard.mjs '<json options>'
//
// Options (JSON, first argument):
//   base          http://127.0.0.1:PORT of `mqlink run` (required)
//   event         event name POSTed to /v1/events/{event} once the page is live
//   event_body    JSON object posted as that event
//   event_topic   MQTT topic the route gives that event (must appear in the topic tree)
//   form_topic    topic published through the page's form (must appear in the tree too)
//   form_payload  payload typed into the form (a JSON object, pretty-printed when selected)
//   warmup_s      seconds of background events before the screenshot (fills the chart)
//   warmup_events [[event, body], ...] cycled during the warm-up
//   screenshot    path of the PNG to write
//   kill_step     if true: print "KILL_DAEMON", wait for a line on stdin, then expect the
//                 page to say "disconnected from mqlink"
//   chromium      path of the browser (default /usr/bin/chromium)
//
// Prints progress lines, and "RESULT {json}" at the end; exits non-zero on any failure.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';

const opts = JSON.parse(process.argv[2] || '{}');
const base = opts.base;
if (!base) {
  console.error('usage: node dashboard.mjs \'{"base":"http://127.0.0.1:PORT", ...}\'');
  process.exit(2);
}
const log = (...a) => console.log('[dashboard]', ...a);
const fail = (msg) => { throw new Error(msg); };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function post(path, body) {
  const r = await fetch(base + path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await r.text();
  if (r.status !== 202) fail(`POST ${path} answered ${r.status}: ${text}`);
  return text;
}

const userDataDir = mkdtempSync(join(tmpdir(), 'mqlink-chromium-'));
const result = { ok: false };
let context;
const pageErrors = [];
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: opts.chromium || '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--no-first-run',
      '--disable-component-update',
      '--disable-sync',
      '--disable-quic',
    ],
    viewport: { width: 1440, height: 900 },
    deviceScaleFactor: 1,
    colorScheme: opts.color_scheme || 'light',
    timeout: 60_000,
  });
  const page = context.pages()[0] || (await context.newPage());
  page.on('pageerror', (e) => { pageErrors.push(String(e)); console.error('[page error]', e); });
  page.on('console', (m) => { if (m.type() === 'error') console.error('[page console]', m.text()); });
  // The page must not reach anything but mqlink itself (assets are embedded, no CDN).
  const foreign = [];
  page.on('request', (req) => {
    const u = req.url();
    if (!u.startsWith(base) && !u.startsWith('data:')) foreign.push(u);
  });

  // 1. The page loads from mqlink, with its assets, and goes live.
  const resp = await page.goto(base + '/', { waitUntil: 'load', timeout: 20_000 });
  if (!resp || resp.status() !== 200) fail(`GET / answered ${resp && resp.status()}`);
  const ct = resp.headers()['content-type'] || '';
  if (!ct.startsWith('text/html')) fail(`GET / content-type is ${ct}`);
  const title = await page.locator('.brand .name').textContent();
  if (title !== 'mqlink') fail(`page did not render (brand is ${JSON.stringify(title)})`);
  await page.locator('#stream[data-state="live"]').waitFor({ timeout: 15_000 });
  await page.waitForFunction(
    () => document.getElementById('broker-state').textContent === 'Connected',
    null,
    { timeout: 15_000 },
  );
  result.health = await page.locator('#health').getAttribute('data-level');
  result.health_text = await page.locator('#health-text').textContent();
  log('page live; broker connected; health', result.health, JSON.stringify(result.health_text));

  // 2. An event POSTed over HTTP appears in the topic tree within a few seconds.
  if (opts.event) {
    const t0 = Date.now();
    await post(`/v1/events/${encodeURIComponent(opts.event)}`, opts.event_body || {});
    const row = page.locator(`#topics .node[data-topic="${opts.event_topic}"]`);
    await row.waitFor({ timeout: 5_000 });
    result.event_visible_ms = Date.now() - t0;
    const count = await row.locator('.count').textContent();
    if (Number(count.replace(/\D/g, '')) < 1) fail(`count of ${opts.event_topic} is ${count}`);
    log(`event ${opts.event} -> ${opts.event_topic} in the tree after ${result.event_visible_ms} ms`);
  }

  // 3. The publish form: an error is shown as the server's JSON error, a good message
  //    is accepted and appears in the tree, and selecting it pretty-prints the payload.
  if (opts.form_topic) {
    await page.fill('#pub-topic', 'bad/#/topic');
    await page.fill('#pub-payload', 'x');
    await page.click('#pub-send');
    await page.locator('#pub-result.err').waitFor({ timeout: 5_000 });
    result.form_error = (await page.locator('#pub-result').textContent()).trim();
    if (!/^4\d\d /.test(result.form_error)) fail(`form error not shown as a 4xx: ${result.form_error}`);
    log('form error shown:', JSON.stringify(result.form_error));

    const t0 = Date.now();
    await page.fill('#pub-topic', opts.form_topic);
    await page.fill('#pub-payload', opts.form_payload || '{"hello":"from the dashboard"}');
    await page.selectOption('#pub-qos', '1');
    await page.click('#pub-send');
    await page.locator('#pub-result.ok').waitFor({ timeout: 5_000 });
    result.form_answer = (await page.locator('#pub-result').textContent()).trim();
    const row = page.locator(`#topics .node[data-topic="${opts.form_topic}"]`);
    await row.waitFor({ timeout: 5_000 });
    result.form_visible_ms = Date.now() - t0;
    await row.click();
    await page.locator(`#detail-payload[data-topic="${opts.form_topic}"]`).waitFor({ timeout: 2_000 });
    const shown = await page.locator('#detail-payload').textContent();
    const expected = JSON.stringify(JSON.parse(opts.form_payload || '{"hello":"from the dashboard"}'), null, 2);
    if (shown !== expected) fail(`payload panel shows ${JSON.stringify(shown)}, expected ${JSON.stringify(expected)}`);
    log(`form publish answered ${JSON.stringify(result.form_answer)}; in the tree after ${result.form_visible_ms} ms; payload pretty-printed`);
  }

  // 4. Collapse / expand a level.
  if (opts.event_topic && opts.event_topic.includes('/')) {
    const top = opts.event_topic.split('/')[0];
    const branch = page.locator(`#topics .node[data-path="${top}"]`);
    await branch.locator('.twisty').click();
    await page.locator(`#topics .node[data-topic="${opts.event_topic}"]`).waitFor({ state: 'detached', timeout: 2_000 });
    await branch.locator('.twisty').click();
    await page.locator(`#topics .node[data-topic="${opts.event_topic}"]`).waitFor({ timeout: 2_000 });
    log('collapse / expand of', top, 'works');
  }

  // 5. Some traffic so the chart has a shape, then the screenshot.
  const warm = Number(opts.warmup_s || 0);
  if (warm > 0) {
    const evs = opts.warmup_events || [[opts.event, opts.event_body || {}]];
    const end = Date.now() + warm * 1000;
    let i = 0;
    while (Date.now() < end) {
      const phase = Math.sin(((Date.now() % 60_000) / 60_000) * 2 * Math.PI);
      const n = 1 + Math.round(3 + 3 * phase);
      for (let k = 0; k < n; k++) {
        const [ev, body] = evs[i++ % evs.length];
        await post(`/v1/events/${encodeURIComponent(ev)}`, body);
      }
      await sleep(250);
    }
    await sleep(1500);
  }
  const rate = await page.locator('#rate-accepted').textContent();
  result.accepted_rate_shown = rate;
  if (opts.screenshot) {
    // The header is sticky: from the top, a full-page shot shows it once, in place.
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.locator('#topics').evaluate((e) => { e.scrollTop = 0; });
    mkdirSync(dirname(opts.screenshot), { recursive: true });
    await page.screenshot({ path: opts.screenshot, fullPage: true });
    result.screenshot = opts.screenshot;
    log('screenshot', opts.screenshot);
  }

  // 6. mqlink goes away: the page says so.
  if (opts.kill_step) {
    console.log('KILL_DAEMON');
    const rl = createInterface({ input: process.stdin });
    await new Promise((res) => rl.once('line', res));
    rl.close();
    await page.locator('#banner', { hasText: 'disconnected from mqlink' }).waitFor({ timeout: 10_000 });
    const s = await page.locator('#stream').getAttribute('data-state');
    if (s !== 'down') fail(`stream indicator is ${s} after mqlink stopped`);
    result.disconnected_banner = (await page.locator('#banner').textContent()).trim();
    log('after mqlink stopped the page says', JSON.stringify(result.disconnected_banner));
  }

  if (foreign.length) fail(`the page requested foreign URLs: ${foreign.join(', ')}`);
  if (pageErrors.length) fail(`JavaScript errors on the page: ${pageErrors.join(' | ')}`);
  result.ok = true;
} catch (e) {
  result.error = String(e && e.stack ? e.stack : e);
  console.error('[dashboard] FAILED:', result.error);
  if (context && opts.screenshot) {
    try {
      const p = context.pages()[0];
      const failShot = opts.screenshot.replace(/\.png$/, '') + '-failure.png';
      await p.screenshot({ path: failShot, fullPage: true });
      console.error('[dashboard] failure screenshot', failShot);
    } catch (_) { /* best effort */ }
  }
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
}
console.log('RESULT ' + JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
