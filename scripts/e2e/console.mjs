// Drives the Inlet console in headless Chromium (Debian's /usr/bin/chromium through
// playwright-core; Playwright never downloads a browser here) like an operator would:
// sign in at the OpenID provider, find a dead-lettered event, replay it (confirming in a dialog
// that shows what will be sent), see it delivered, cancel a replay of the delivered one; with
// --replay-to, replay the replayed event to that destination too, with the config it was
// routed with ("as received"), and see the new delivery with its lineage and config delivered;
// with --dismiss-event-id, dismiss that event's dead letter with a note and see it shown; with
// --bulk-text, bulk-replay the dead letters whose event id contains it with each event's config
// as received (dry run, then confirm the previewed selection) and see the job finish; filter
// events by a UTC time from a New York browser; run a query in the API explorer (GraphiQL)
// without breaking its CSP.
//
//   node console.mjs --url http://127.0.0.1:PORT --email admin@example.com --event-id EVT [--bulk-text T]
//                    [--dismiss-event-id EVT2] [--replay-to DESTINATION] [--screenshot out.png]
//
// Prints {"ok":true,...} and exits 0 on success; prints the failure (and saves a screenshot if
// asked) and exits 1 otherwise.
import { parseArgs } from 'node:util';
import { join } from 'node:path';
import { openBrowser, requireArgs } from './browser.mjs';

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    email: { type: 'string' },
    'event-id': { type: 'string' },
    'bulk-text': { type: 'string' },
    'dismiss-event-id': { type: 'string' },
    'replay-to': { type: 'string' },
    screenshot: { type: 'string' },
  },
});
requireArgs('console.mjs', args, ['url', 'email', 'event-id']);

const browser = await openBrowser('console.mjs', {
  screenshot: args.screenshot,
  // Not UTC: the console shows and takes times in UTC whatever the browser's zone.
  timezoneId: 'America/New_York',
});
// Screenshots of the views along the way (`--screenshot x.png` also keeps `x-<name>.png`).
const { context, page, logs, step, shot } = browser;

try {
  await browser.signIn(args.url, args.email);
  const cookies = await context.cookies(args.url);
  const session = cookies.find((c) => c.name === '__Host-inlet_session');
  if (!session || !session.secure || !session.httpOnly || session.sameSite !== 'Lax') {
    throw new Error(`unexpected session cookie: ${JSON.stringify(session && { ...session, value: '…' })}`);
  }
  await page.locator('nav a[href="#dead-letters"]').click();
  const row = page.locator(`tr[data-event-id="${args['event-id']}"]`);
  await row.waitFor();
  step('dead letter listed');
  // A replay is confirmed in a dialog that shows what will be sent: destination, headers, body.
  await row.locator('button.replay').click();
  const dialog = page.locator('dialog#replay-dialog[open]');
  await dialog.locator('.plan-destination').filter({ hasText: 'orders' }).waitFor();
  await dialog.locator('.plan-headers td').filter({ hasText: 'Idempotency-Key' }).waitFor();
  await dialog.locator('.plan-body').filter({ hasText: '"order": 42' }).waitFor();
  if (await row.locator('.replay-result').count() !== 0) throw new Error('replayed before it was confirmed');
  // The replay runs the current config's transform unless the operator picks the event's own.
  if (await dialog.locator('#replay-config').inputValue() !== 'CURRENT') throw new Error('the replay config is not "current" by default');
  await shot('replay-dialog');
  await dialog.locator('button.confirm').click();
  await row.locator('.replay-result').filter({ hasText: 'enqueued · current config' }).waitFor();
  step('replay confirmed');
  await row.locator('a.event-link').click();
  await page.locator('.delivery .delivery-status .status.delivered').waitFor();
  // The event says which routing config routed it: its short hash, the worker's current one.
  await page.locator('#config-version').filter({ hasText: /config [0-9a-f]{12} · current/ }).waitFor();
  await page.locator('.delivery .delivery-config').filter({ hasText: 'current config' }).waitFor();
  step('delivered');
  // The route orders by `/order`: the delivery shows its key (and no wait: nothing before it).
  const ordering = page.locator('.delivery[data-destination="orders"] .ordering');
  await ordering.filter({ hasText: 'Ordering key 42' }).waitFor();
  if ((await ordering.textContent()).includes('waiting')) throw new Error('a delivered one shown as waiting');
  step('ordering key shown');
  // Replaying a delivered one warns that the destination gets it again; cancelling does nothing.
  await page.locator('.delivery button.replay').click();
  await page.locator('dialog#replay-dialog[open] #replay-warning').filter({ hasText: 'Already delivered' }).waitFor();
  await shot('replay-delivered-warning');
  await page.locator('dialog#replay-dialog[open] button.cancel').click();
  await page.locator('dialog#replay-dialog').waitFor({ state: 'detached' });
  await page.locator('.delivery button.replay:not([disabled])').waitFor();
  step('replay of a delivered one cancelled');
  if (args['replay-to']) {
    // Replaying the event to another destination: pick it, see what goes there, confirm; a new
    // delivery appears with its lineage and is delivered.
    await page.locator('.delivery[data-destination="orders"] button.replay-to').click();
    const toDialog = page.locator('dialog#replay-to-dialog[open]');
    await toDialog.locator('#replay-to-destination').selectOption(args['replay-to']);
    await toDialog.locator('.plan-destination').filter({ hasText: args['replay-to'] }).waitFor();
    await toDialog.locator('.plan-headers tr').filter({ hasText: 'Idempotency-Key' }).filter({ hasText: 'assigned when the delivery is created' }).waitFor();
    await toDialog.locator('.plan-body').filter({ hasText: '"order": 42' }).waitFor();
    await toDialog.locator('#replay-config').selectOption('AS_RECEIVED');
    await shot('replay-to-dialog');
    await toDialog.locator('button.confirm').click();
    const replayed = page.locator(`.delivery[data-destination="${args['replay-to']}"]`);
    await replayed.locator('.lineage').filter({ hasText: 'Replay of dlv_' }).filter({ hasText: `by ${args.email}` }).waitFor();
    await replayed.locator('.delivery-config').filter({ hasText: /as received \([0-9a-f]{12}\)/ }).waitFor();
    await replayed.locator('.delivery-status .status.delivered').waitFor();
    await shot('replayed-to');
    step('replayed to another destination');
  }
  if (args['dismiss-event-id']) {
    // Dismissing a dead letter: a dialog says what it means and takes a note; the dead letter
    // leaves the list, and its event shows who dismissed it, when and why.
    await page.locator('nav a[href="#dead-letters"]').click();
    const doomed = page.locator(`tr[data-event-id="${args['dismiss-event-id']}"]`);
    await doomed.locator('button.dismiss').click();
    const dismissDialog = page.locator('dialog#dismiss-dialog[open]');
    await dismissDialog.locator('#dismiss-note').fill('duplicate order, refunded by hand');
    await shot('dismiss-dialog');
    await dismissDialog.locator('button.confirm').click();
    await doomed.waitFor({ state: 'detached' });
    step('dead letter dismissed');
    await page.locator('nav a[href="#events"]').click();
    await page.locator(`tr[data-event-id="${args['dismiss-event-id']}"]`).click();
    await page.locator('.delivery .delivery-status .status.dismissed').waitFor();
    await page.locator('.delivery .dismissal').filter({ hasText: `Dismissed by ${args.email}` })
      .filter({ hasText: 'duplicate order, refunded by hand' }).waitFor();
    await shot('dismissed-event');
    step('dismissal shown');
  }
  if (args['bulk-text']) {
    await page.locator('nav a[href="#dead-letters"]').click();
    await page.locator('#dead-filters input[name=text]').fill(args['bulk-text']);
    await page.locator('#dead-filters button[type=submit]').click();
    // Each event's transform as it was routed: the dry run and the job say so.
    await page.locator('#bulk-config').selectOption('AS_RECEIVED');
    await page.locator('#bulk-preview').click();
    await page.locator('#bulk-count')
      .filter({ hasText: "Dry run: 1 dead letters match, to be transformed with each event's config as received" }).waitFor();
    step('bulk previewed');
    await page.locator('#bulk-start').click();
    await page.locator('#bulk-status').filter({ hasText: 'finished' }).waitFor();
    await page.locator('#bulk-status')
      .filter({ hasText: "1/1 processed, 1 re-queued at ≤ 10/s, with each event's config as received" }).waitFor();
    step('bulk replayed');
  }
  // Provider-controlled text (event ids, payloads) must never run as markup.
  await page.locator('nav a[href="#events"]').click();
  await page.locator('tr[data-event-id]').nth(2).waitFor();
  // "Received after" takes the time as the table shows it (UTC), in a New York browser too.
  const newest = page.locator('tr[data-event-id]').first();
  const newestId = await newest.getAttribute('data-event-id');
  const shown = (await newest.locator('td').first().innerText()).trim(); // 2026-12-03 16:04:05.123
  await page.locator('#event-filters input[name=after]').fill(shown.slice(0, 19).replace(' ', 'T'));
  await page.locator('#event-filters button[type=submit]').click(); // the list is busy until it has reloaded
  await page.locator('#events-body[aria-busy=false]').waitFor();
  if (await page.locator(`tr[data-event-id="${newestId}"]`).count() !== 1) throw new Error(`the filter (UTC ${shown}) hid the newest event`);
  step('filtered by UTC time');
  await page.locator('tr[data-event-id]').first().click(); // the newest: the hostile one
  await page.locator('#payload').filter({ hasText: '<script>' }).waitFor();
  await page.locator('td').filter({ hasText: '<img src=x onerror' }).first().waitFor();
  if (await page.evaluate(() => window.pwned !== undefined)) throw new Error('hostile event text was executed');
  step('hostile text inert');
  await shot();
  // Overview: one bar per minute of the last hour; the webhooks of this run are counted.
  await page.locator('nav a[href="#overview"]').click();
  await page.locator('[data-chart=received] svg rect').nth(59).waitFor();
  const sum = async (kind) => (await page.locator(`[data-chart=${kind}] svg rect`).evaluateAll(
    (bars) => bars.map((bar) => Number(bar.getAttribute('data-value'))))).reduce((a, b) => a + b, 0);
  if (await sum('received') < 3) throw new Error(`the overview counts ${await sum('received')} received events`);
  if (await sum('delivered') < 1) throw new Error('the overview counts no delivery');
  step('overview charts');
  await shot('overview');
  // The API explorer (GraphiQL, served from this origin under a strict CSP): it runs a query
  // through POST /graphql with the session, and nothing it loads breaks the policy.
  await page.goto(`${args.url}/graphql`);
  await page.locator('.graphiql-container').waitFor();
  await page.locator('.graphiql-execute-button').click();
  await page.locator('.graphiql-response').filter({ hasText: '"deadLettered"' }).waitFor();
  const violations = logs.filter((line) => /Content Security Policy|Refused to/i.test(line));
  if (violations.length) throw new Error(`the explorer broke its CSP: ${violations.join(' | ')}`);
  step('explorer ran a query');
  await shot('explorer', { fullPage: false });
  await browser.succeed();
} catch (error) {
  await browser.fail(error);
}
