// Drives the console's "Backfill" page in headless Chromium (Debian's /usr/bin/chromium through
// playwright-core) as an admin would after an outage: sign in, open Backfill, pick --source, give
// --since, run a dry run and see "--listed listed, … --missing to recover", then run it for real
// (confirming) and see "--missing recovered", and find the run in the audit log.
//
//   node console-backfill.mjs --url http://127.0.0.1:PORT --email admin@example.com --source stripe
//                             --since 2026-12-03T09:00:00Z --listed 4 --missing 3 [--screenshot out.png]
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
    since: { type: 'string' },
    listed: { type: 'string' },
    missing: { type: 'string' },
    screenshot: { type: 'string' },
  },
});
requireArgs('console-backfill.mjs', args, ['url', 'email', 'source', 'since', 'listed', 'missing']);

const browser = await openBrowser('console-backfill.mjs', { screenshot: args.screenshot });
const { page, step, shot } = browser;

try {
  await browser.signIn(args.url, args.email);
  await page.locator('nav a[href="#backfill"]').click();
  await page.locator('#backfill-source').selectOption(args.source);
  await page.locator('#backfill-since').fill(args.since);
  if (!(await page.locator('#backfill-dry').isChecked())) throw new Error('a dry run is not the default');
  await page.locator('#backfill-run').click();
  const dry = `Dry run: ${args.listed} listed, ${Number(args.listed) - Number(args.missing)} already stored, ${args.missing} to recover, 0 failed.`;
  await page.locator('#backfill-summary').filter({ hasText: dry }).waitFor();
  step('dry run');
  await shot('dry-run');
  await page.locator('#backfill-dry').uncheck();
  await page.locator('#backfill-run').click();
  await page.locator('#backfill-dialog').waitFor();
  await shot('confirm');
  await page.locator('#backfill-dialog button.confirm').click();
  await page.locator('#backfill-summary').filter({ hasText: `${args.missing} recovered, 0 failed.` }).waitFor();
  step('backfilled');
  await shot('done');
  await page.locator('nav a[href="#audit"]').click();
  await page.locator('td').filter({ hasText: `source:${args.source}` }).first().waitFor();
  step('audited');
  await shot();
  await browser.succeed();
} catch (error) {
  await browser.fail(error);
}
