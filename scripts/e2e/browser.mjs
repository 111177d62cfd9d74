// What every console script shares: Debian's Chromium through playwright-core (Playwright never
// downloads a browser here) with a throw-away profile, the steps reached and the browser's
// console kept for the failure report, and the exit protocol the Rust tests read: a summary
// line `{"ok":true,...}` and exit 0, or the failure (what, where, the page's text, the browser's
// console, a screenshot if asked) on stderr and exit 1. A missing argument exits 64. Also the
// steps every script takes the same way: signing in at the OpenID provider (provider.mjs) and
// the screenshots named after `--screenshot`.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

/** Exits 64 naming the first of `names` missing from `args`. */
export function requireArgs(script, args, names) {
  for (const name of names) {
    if (!args[name]) { console.error(`${script}: --${name} is required`); process.exit(64); }
  }
}

/** At the OpenID provider's form (provider.mjs): signs in as `email`. */
export async function atProvider(page, email) {
  await page.locator('input[name=email]').fill(email);
  await page.locator('button[type=submit]').click();
}

/**
 * Opens the browser. `screenshot` is the script's `--screenshot` path (or none: no screenshots);
 * the other `options` are launchPersistentContext's (timezoneId, viewport, …).
 */
export async function openBrowser(script, { screenshot, ...options } = {}) {
  const profile = mkdtempSync(join(tmpdir(), 'inlet-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium',
    headless: true,
    ...options,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  const page = context.pages()[0] || await context.newPage();
  page.setDefaultTimeout(30000);
  const steps = [];
  const logs = [];
  page.on('console', (message) => logs.push(`${message.type()}: ${message.text()}`));
  page.on('pageerror', (error) => logs.push(`pageerror: ${error.message}`));
  const started = performance.now();
  const step = (name) => steps.push({ name, ms: Math.round(performance.now()) });
  const close = async () => {
    await context.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
  };
  return {
    context,
    page,
    steps,
    logs,
    step,
    /**
     * Opens the console at `url` and signs in at the provider as `email` (who the provider has
     * not seen in this browser yet); done when the console shows who is signed in.
     */
    async signIn(url, email) {
      await page.goto(`${url}/console`);
      await page.locator('#signin').click();
      await atProvider(page, email);
      await page.locator('#user').filter({ hasText: email }).waitFor();
      step('signed in');
    },
    /**
     * Saves a screenshot of the whole page at `--screenshot`, or with `name` beside it
     * (`x.png` → `x-<name>.png`); `fullPage: false` keeps what the screen shows. Nothing without
     * `--screenshot`.
     */
    async shot(name, { fullPage = true } = {}) {
      if (!screenshot) return;
      const path = name ? screenshot.replace(/\.png$/, `-${name}.png`) : screenshot;
      await page.screenshot({ path, fullPage });
    },
    /** Prints the summary and exits 0. */
    async succeed() {
      console.log(JSON.stringify({ ok: true, ms: Math.round(performance.now() - started), steps }));
      await close();
      process.exit(0);
    },
    /** Reports `error` (saving a screenshot at `failureShot`, by default `--screenshot`) and exits 1. */
    async fail(error, failureShot = screenshot) {
      console.error(`${script}: ${error.message}`);
      console.error(`steps: ${JSON.stringify(steps)} url: ${page.url()}`);
      const text = await page.locator('body').innerText().catch(() => '');
      console.error(`page: ${text.slice(0, 2000)}`);
      console.error(`browser console: ${logs.join('\n')}`);
      if (failureShot) await page.screenshot({ path: failureShot, fullPage: true }).catch(() => {});
      await close();
      process.exit(1);
    },
  };
}
