// Drives the console's "Rejected requests" view in headless Chromium (Debian's /usr/bin/chromium
// through playwright-core) as an admin would after a provider rotated its secret:
//
//   --phase look:  sign in, open Rejected requests, see the --count requests of --source with the
//                  diagnosis "signed with a secret that is not configured", and no signature shown;
//   --phase admit: (after the secret was added and the worker restarted) sign in, re-verify and
//                  admit them all, see "--count admitted", follow an admitted event and see it
//                  delivered.
//
//   node console-quarantine.mjs --url http://127.0.0.1:PORT --email admin@example.com --source gh
//                               --count 3 --phase look|admit [--screenshot out.png]
//
// Prints {"ok":true,...} and exits 0 on success; prints the failure (and saves a screenshot if
// asked) and exits 1 otherwise.
import { parseArgs } from 'node:util';
import { openBrowser, requireArgs } from './browser.mjs';

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    email: { type: 'string' },
    source: { type: 'string' },
    count: { type: 'string' },
    phase: { type: 'string' },
    screenshot: { type: 'string' },
  },
});
requireArgs('console-quarantine.mjs', args, ['url', 'email', 'source', 'count', 'phase']);
const count = Number(args.count);

const browser = await openBrowser('console-quarantine.mjs', { screenshot: args.screenshot });
const { context, page, logs, step, shot } = browser;

try {
  await browser.signIn(args.url, args.email);
  await page.locator('nav a[href="#rejected"]').click();
  await page.locator('#rejected-source').selectOption(args.source);
  const rows = page.locator('#rejected tbody tr[data-id]');
  if (args.phase === 'look') {
    await rows.nth(count - 1).waitFor();
    if (await rows.count() !== count) throw new Error(`${await rows.count()} rejected requests listed, not ${count}`);
    const unknown = rows.filter({ has: page.locator('td.diagnosis', { hasText: 'signed with a secret that is not configured' }) });
    if (await unknown.count() !== count) throw new Error(`${await unknown.count()} of ${count} diagnosed as signed with an unknown secret`);
    await rows.first().locator('details summary').click();
    const shown = await page.locator('#rejected').innerText();
    if (/x-hub-signature|sha256=/i.test(shown)) throw new Error('a signature is shown');
    step('rejected requests listed with their diagnosis');
    await shot('look');
  } else if (args.phase === 'admit') {
    await rows.nth(count - 1).waitFor();
    await page.locator('#admit-all').click();
    await page.locator('#admit-summary').filter({ hasText: `${count} admitted` }).waitFor();
    await page.locator('#rejected-empty').waitFor();
    step('admitted');
    await shot('admitted');
    const first = (await page.locator('#admitted-ids').innerText()).split(', ')[0];
    await page.locator('#admit-result a[href="#events"]').click();
    // Recorded by the worker moments after the admission: the list is loaded again until it shows.
    const row = page.locator(`tr[data-event-id="${first}"]`);
    for (let tries = 0; !(await row.count()) && tries < 50; tries += 1) {
      await page.waitForTimeout(200);
      await page.reload();
    }
    await row.click();
    await page.locator('.delivery .delivery-status .status.delivered').waitFor();
    step('an admitted event delivered');
    await shot('delivered');
    await page.locator('nav a[href="#audit"]').click();
    await page.locator('td').filter({ hasText: 'admit quarantined' }).first().waitFor();
    step('audited');
  } else {
    throw new Error(`unknown phase ${args.phase}`);
  }
  await shot();
  await browser.succeed();
} catch (error) {
  await browser.fail(error);
}
