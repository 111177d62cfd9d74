// Drives the Inlet console in headless Chromium (Debian's /usr/bin/chromium through
// playwright-core; Playwright never downloads a browser here) like an operator would:
// sign in at the OpenID provider, find a dead-lettered event, replay it, see it delivered; with
// --bulk-text, bulk-replay the dead letters whose event id contains it (dry run, then confirm
// the previewed selection) and see the job finish.
//
//   node console.mjs --url http://127.0.0.1:PORT --email admin@example.com --event-id EVT [--bulk-text T] [--screenshot out.png]
//
// Prints {"ok":true,...} and exits 0 on success; prints the failure (and saves a screenshot if
// asked) and exits 1 otherwise.
import { parseArgs } from 'node:util';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    email: { type: 'string' },
    'event-id': { type: 'string' },
    'bulk-text': { type: 'string' },
    screenshot: { type: 'string' },
  },
});
for (const required of ['url', 'email', 'event-id']) {
  if (!args[required]) { console.error(`console.mjs: --${required} is required`); process.exit(64); }
}

const profile = mkdtempSync(join(tmpdir(), 'inlet-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
const page = context.pages()[0] || await context.newPage();
page.setDefaultTimeout(30000);
const steps = [];
const logs = [];
page.on('console', (message) => logs.push(`${message.type()}: ${message.text()}`));
page.on('pageerror', (error) => logs.push(`pageerror: ${error.message}`));
const step = (name) => steps.push({ name, ms: Math.round(performance.now()) });
const started = performance.now();

try {
  await page.goto(`${args.url}/console`);
  await page.locator('#signin').click();
  step('at the provider');
  await page.locator('input[name=email]').fill(args.email);
  await page.locator('button[type=submit]').click();
  await page.locator('#user').filter({ hasText: args.email }).waitFor();
  step('signed in');
  const cookies = await context.cookies(args.url);
  const session = cookies.find((c) => c.name === '__Host-inlet_session');
  if (!session || !session.secure || !session.httpOnly || session.sameSite !== 'Lax') {
    throw new Error(`unexpected session cookie: ${JSON.stringify(session && { ...session, value: '…' })}`);
  }
  await page.locator('nav a[href="#dead-letters"]').click();
  const row = page.locator(`tr[data-event-id="${args['event-id']}"]`);
  await row.waitFor();
  step('dead letter listed');
  await row.locator('button.replay').click();
  await row.locator('.replay-result').filter({ hasText: 'enqueued' }).waitFor();
  step('replayed');
  await row.locator('a.event-link').click();
  await page.locator('.delivery .delivery-status .status.delivered').waitFor();
  step('delivered');
  if (args['bulk-text']) {
    await page.locator('nav a[href="#dead-letters"]').click();
    await page.locator('#dead-filters input[name=text]').fill(args['bulk-text']);
    await page.locator('#dead-filters button[type=submit]').click();
    await page.locator('#bulk-preview').click();
    await page.locator('#bulk-count').filter({ hasText: 'Dry run: 1 dead letters match' }).waitFor();
    step('bulk previewed');
    await page.locator('#bulk-start').click();
    await page.locator('#bulk-status').filter({ hasText: 'finished' }).waitFor();
    await page.locator('#bulk-status').filter({ hasText: '1/1 processed, 1 re-queued' }).waitFor();
    step('bulk replayed');
  }
  // Provider-controlled text (event ids, payloads) must never run as markup.
  await page.locator('nav a[href="#events"]').click();
  await page.locator('tr[data-event-id]').nth(2).waitFor();
  await page.locator('tr[data-event-id]').first().click(); // the newest: the hostile one
  await page.locator('#payload').filter({ hasText: '<script>' }).waitFor();
  await page.locator('td').filter({ hasText: '<img src=x onerror' }).first().waitFor();
  if (await page.evaluate(() => window.pwned !== undefined)) throw new Error('hostile event text was executed');
  step('hostile text inert');
  if (args.screenshot) await page.screenshot({ path: args.screenshot, fullPage: true });
  console.log(JSON.stringify({ ok: true, ms: Math.round(performance.now() - started), steps }));
  await context.close();
  rmSync(profile, { recursive: true, force: true });
  process.exit(0);
} catch (error) {
  console.error(`console.mjs: ${error.message}`);
  console.error(`steps: ${JSON.stringify(steps)} url: ${page.url()}`);
  const text = await page.locator('body').innerText().catch(() => '');
  console.error(`page: ${text.slice(0, 2000)}`);
  console.error(`browser console: ${logs.join('\n')}`);
  if (args.screenshot) await page.screenshot({ path: args.screenshot, fullPage: true }).catch(() => {});
  await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  process.exit(1);
}
