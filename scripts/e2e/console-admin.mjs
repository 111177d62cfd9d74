// Drives the Inlet console's accounts and admin views in headless Chromium (Debian's
// /usr/bin/chromium through playwright-core), with a real OpenID provider (provider.mjs):
//
// 1. an account the allowlist refuses signs in and gets the refusal page; signing in again
//    plainly gets the same account from the provider's session (no question asked); the
//    refusal page's "Sign in with another account" makes the provider ask, and the admin
//    signs in;
// 2. the admin creates an API token: its value is shown once, with a copy button (checked
//    against the clipboard); the script prints {"token": …} and waits for a line on stdin
//    while the test uses it; after a reload (admin.js arriving late) the value is nowhere on
//    the page;
// 3. the admin revokes it after a confirmation (prints {"revoked": …}) and sees the users list;
// 4. "Switch account" signs in as an operator, who is not offered the admin views.
//
//   node console-admin.mjs --url http://127.0.0.1:PORT --refused EMAIL --admin EMAIL --operator EMAIL
//                          [--screenshot out.png]
//
// Prints one JSON line per step the test acts on, then {"ok":true,...}, and exits 0; prints the
// failure (and saves a screenshot if asked) and exits 1 otherwise.
import { parseArgs } from 'node:util';
import { createInterface } from 'node:readline';
import { atProvider, openBrowser, requireArgs } from './browser.mjs';

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    refused: { type: 'string' },
    admin: { type: 'string' },
    operator: { type: 'string' },
    screenshot: { type: 'string' },
  },
});
requireArgs('console-admin.mjs', args, ['url', 'refused', 'admin', 'operator']);

// The test's answers, one line each, read as they come.
const stdin = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const waitForTest = async (what) => {
  const { value, done } = await stdin.next();
  if (done || value.trim() !== 'go') throw new Error(`the test did not say go after ${what} (${done ? 'stdin closed' : value})`);
};

const browser = await openBrowser('console-admin.mjs', { screenshot: args.screenshot });
const { context, page, logs, step, shot } = browser;
await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: args.url });
const said = (line) => console.log(JSON.stringify(line));

try {
  // 1. Refused, silently refused again, then another account.
  await page.goto(`${args.url}/console`);
  await page.locator('#signin-another').waitFor();
  await shot('signin');
  await page.locator('#signin').click();
  await atProvider(page, args.refused);
  await page.locator('h1').filter({ hasText: 'Not authorised' }).waitFor();
  await page.locator('#message').filter({ hasText: args.refused }).waitFor();
  await shot('refused');
  step('refused');
  await page.goto(`${args.url}/console`);
  await page.locator('#signin').click();
  await page.locator('h1').filter({ hasText: 'Not authorised' }).waitFor();
  if (await page.locator('input[name=email]').count()) throw new Error('the provider asked, so nothing was wrong to begin with');
  step('the plain sign-in brought the same account back');
  await page.locator('#another-account').click();
  await page.locator('input[name=email]').waitFor(); // the provider asks this time
  await atProvider(page, args.admin);
  await page.locator('#user').filter({ hasText: args.admin }).waitFor();
  // The first view (events) finishes loading before another is opened: a slower answer of its
  // would otherwise draw over the next view (the console does not cancel a view's loading).
  await page.locator('#events-body[aria-busy="false"]').waitFor();
  step('signed in as another account');

  // 2. Create a token: shown once, copied.
  await page.locator('nav a[href="#tokens"]').click();
  await page.locator('#token-form').waitFor();
  await page.locator('#token-name').fill('ci-deploy');
  await page.locator('#token-role').selectOption('OPERATOR');
  await page.locator('#token-form button[type=submit]').click();
  const value = (await page.locator('#new-token-value').innerText()).trim();
  if (!/^inlet_[A-Za-z0-9_-]{20,}$/.test(value)) throw new Error(`unexpected token value ${value}`);
  await page.locator('tr[data-token-name="ci-deploy"] .token-state').filter({ hasText: 'active' }).waitFor();
  await page.locator('#copy-token').click();
  await page.locator('#copy-token').filter({ hasText: 'Copied' }).waitFor();
  const copied = await page.evaluate(() => navigator.clipboard.readText());
  if (copied !== value) throw new Error('the copy button did not copy the token');
  await shot('token-created');
  step('token created and copied');
  said({ token: value });
  await waitForTest('the token was shown');

  // Shown once: "Done" takes it off the page, and after a reload it is nowhere on it.
  await page.locator('#token-done').click();
  if (await page.locator('#new-token').count()) throw new Error('"Done" left the token on the page');
  // Reloaded with admin.js arriving late (a slow network): held until the console's session
  // answer has come, or for 2 s if the console rightly waits for every script before asking.
  // The token view it defines is shown all the same.
  const lateAdminScript = async (route) => {
    await page.waitForResponse((response) => response.url().endsWith('/auth/session'), { timeout: 2000 }).catch(() => {});
    await route.continue();
  };
  await page.route('**/console/admin.js', lateAdminScript);
  await page.reload();
  await page.locator('tr[data-token-name="ci-deploy"]').waitFor();
  await page.unroute('**/console/admin.js', lateAdminScript);
  if ((await page.content()).includes(value)) throw new Error('the token value is shown again');
  if (await page.locator('#new-token').count()) throw new Error('the new-token card survived a reload');
  step('not shown again');

  // 3. Revoke, confirmed in a dialog; then the users list.
  const row = page.locator('tr[data-token-name="ci-deploy"]');
  await row.locator('button.revoke').click();
  const dialog = page.locator('dialog#revoke-dialog[open]');
  await dialog.filter({ hasText: 'refused from now on' }).waitFor();
  await shot('revoke-dialog');
  await dialog.locator('button.confirm').click();
  await row.locator('.token-state').filter({ hasText: 'revoked' }).waitFor();
  if (await row.locator('button.revoke').count()) throw new Error('a revoked token can still be revoked');
  await shot('tokens');
  step('revoked');
  said({ revoked: 'ci-deploy' });
  await waitForTest('the token was revoked');

  await page.locator('nav a[href="#users"]').click();
  const admin = page.locator(`tr[data-user="${args.admin}"]`);
  await admin.locator('.user-role').filter({ hasText: 'admin' }).waitFor();
  await admin.locator('.user-accounts').filter({ hasText: 'oidc' }).waitFor();
  if (await page.locator(`tr[data-user="${args.refused}"]`).count()) throw new Error('the refused account is listed');
  await shot('users');
  step('users listed');

  // 4. Switch account: the provider asks, an operator signs in and is not offered admin views.
  await page.locator('#switch-account').click();
  await page.locator('input[name=email]').waitFor();
  await atProvider(page, args.operator);
  await page.locator('#user').filter({ hasText: args.operator }).waitFor();
  if (await page.locator('nav a[href="#tokens"]').isVisible()) throw new Error('an operator is offered the token view');
  if (await page.locator('nav a[href="#users"]').isVisible()) throw new Error('an operator is offered the users view');
  await page.goto(`${args.url}/console#tokens`);
  await page.locator('#admin-only').waitFor();
  if (await page.locator('#token-form').count()) throw new Error('an operator got the token form');
  await shot('operator');
  step('switched to an operator');

  await browser.succeed();
} catch (error) {
  await browser.fail(error);
}
