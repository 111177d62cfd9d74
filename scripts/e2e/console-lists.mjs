// Drives the Inlet console's lists in headless Chromium (Debian's /usr/bin/chromium through
// playwright-core) like an operator would, in a New York browser (the console takes and shows
// UTC): sign in; page through the dead letters whose event id contains --text (--rows of them)
// ten at a time with the filter kept, back and forth; a time range that ends before them hides
// them and the "last 1 h" pick shows them again; page through the audit log's CREATE_API_TOKEN
// rows (--audit-rows) the same way, with a range that hides and one that shows them; a long
// detail (ending in --note-end) stays within the page and opens in place; then at phone width
// (390×844) every view and a dialog fit the screen with no page-level horizontal scroll and the
// navigation works; and in dark mode the page, its tables and dialogs are dark. Screenshots of
// desktop light, desktop dark and phone (light and dark) go to --screenshots.
//
//   node console-lists.mjs --url http://127.0.0.1:PORT --email ops@example.com --text evt-list- --rows 12
//                          --audit-rows 12 --note-end end-of-note --screenshots DIR
//
// Prints {"ok":true,...} and exits 0 on success; prints the failure (with a screenshot in DIR)
// and exits 1 otherwise.
import { parseArgs } from 'node:util';
import { join } from 'node:path';
import { openBrowser, requireArgs } from './browser.mjs';

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    email: { type: 'string' },
    text: { type: 'string' },
    rows: { type: 'string' },
    'audit-rows': { type: 'string' },
    'note-end': { type: 'string' },
    screenshots: { type: 'string' },
  },
});
requireArgs('console-lists.mjs', args, ['url', 'email', 'text', 'rows', 'audit-rows', 'note-end', 'screenshots']);
const rows = Number(args.rows);
const auditRows = Number(args['audit-rows']);

const browser = await openBrowser('console-lists.mjs', {
  timezoneId: 'America/New_York',
  viewport: { width: 1280, height: 900 },
});
const { context, page, logs, step } = browser;
// The whole page, or (a modal dialog) what the screen shows.
const shot = (name, fullPage = true) => page.screenshot({ path: join(args.screenshots, `lists-${name}.png`), fullPage });

const fail = (message) => { throw new Error(message); };
// The page never scrolls sideways: whatever is wide scrolls inside its own box.
const noSidewaysScroll = async (where) => {
  const { scrollWidth, innerWidth } = await page.evaluate(() => ({ scrollWidth: document.scrollingElement.scrollWidth, innerWidth: window.innerWidth }));
  if (scrollWidth > innerWidth) fail(`${where}: the page scrolls sideways (${scrollWidth} > ${innerWidth})`);
};
// Waits until the pager `id` has loaded and says `text`.
const pagerSays = async (id, text) => {
  await page.locator(`#${id}[aria-busy=false] .page-where`).filter({ hasText: text }).waitFor();
};
const ids = async (selector, attribute) => page.locator(selector).evaluateAll((nodes, name) => nodes.map((n) => n.getAttribute(name)), attribute);
// A `datetime-local` value far before anything in this run.
const LONG_AGO = '2000-01-01T00:00:00';

try {
  await browser.signIn(args.url, args.email);

  // Dead letters: ten a page, the filter kept on the next page and back.
  await page.locator('nav a[href="#dead-letters"]').click();
  await pagerSays('dead-pages', 'per page');
  await page.locator('#dead-filters input[name=text]').fill(args.text);
  await page.locator('#dead-filters button[type=submit]').click();
  await pagerSays('dead-pages', `Rows 1–${Math.min(rows, 50)} · 50 per page`);
  await page.locator('#dead-pages select[name=pageSize]').selectOption('10');
  await pagerSays('dead-pages', 'Rows 1–10 · 10 per page');
  const first = await ids('#dead-body tr[data-event-id]', 'data-event-id');
  if (first.length !== 10) fail(`page 1 lists ${first.length} dead letters`);
  // Edited but not applied: paging keeps the filter the list was loaded with.
  await page.locator('#dead-filters input[name=text]').fill('');
  await page.locator('#dead-pages button.page-next').click();
  await pagerSays('dead-pages', `Rows 11–${rows} · 10 per page`);
  const second = await ids('#dead-body tr[data-event-id]', 'data-event-id');
  const all = new Set([...first, ...second]);
  if (second.length !== rows - 10 || all.size !== rows || [...all].some((id) => !id.startsWith(args.text))) {
    fail(`pages 1 and 2 list ${JSON.stringify([first, second])}`);
  }
  if (!(await page.locator('#dead-pages button.page-next').isDisabled())) fail('a page after the last');
  await page.locator('#dead-pages button.page-previous').click();
  await pagerSays('dead-pages', 'Rows 1–10 · 10 per page');
  if (JSON.stringify(await ids('#dead-body tr[data-event-id]', 'data-event-id')) !== JSON.stringify(first)) fail('page 1 changed');
  step('dead letters paged');
  // A range that ends before them hides them; "last 1 h" shows them again (to left open).
  await page.locator('#dead-filters input[name=text]').fill(args.text);
  await page.locator('#dead-filters input[name=to]').fill(LONG_AGO);
  await page.locator('#dead-filters button[type=submit]').click();
  await page.locator('#dead-body td').filter({ hasText: 'No dead letters match.' }).waitFor();
  await pagerSays('dead-pages', 'No rows · 10 per page');
  await page.locator('#dead-filters button[data-range="1h"]').click();
  await pagerSays('dead-pages', 'Rows 1–10 · 10 per page');
  if (await page.locator('#dead-filters input[name=to]').inputValue() !== '') fail('the quick pick left `to` set');
  const from = await page.locator('#dead-filters input[name=from]').inputValue();
  const fromMs = Date.parse(`${from}Z`);
  if (!(Math.abs(Date.now() - 3600e3 - fromMs) < 120e3)) fail(`"last 1 h" set from=${from} (not UTC an hour ago)`);
  step('dead letters by time range');
  await noSidewaysScroll('dead letters (desktop)');
  await shot('desktop-light-dead-letters');

  // The audit log: ten a page by what, a range that hides them and one that shows them.
  await page.locator('nav a[href="#audit"]').click();
  await pagerSays('audit-pages', 'per page');
  await page.locator('#audit-filters select[name=action]').selectOption('CREATE_API_TOKEN');
  await page.locator('#audit-filters button[type=submit]').click();
  await pagerSays('audit-pages', `Rows 1–${auditRows} · 50 per page`);
  await page.locator('#audit-pages select[name=pageSize]').selectOption('10');
  await pagerSays('audit-pages', 'Rows 1–10 · 10 per page');
  const auditFirst = await ids('#audit-body tr[data-audit-id]', 'data-audit-id');
  await page.locator('#audit-pages button.page-next').click();
  await pagerSays('audit-pages', `Rows 11–${auditRows} · 10 per page`);
  const auditSecond = await ids('#audit-body tr[data-audit-id]', 'data-audit-id');
  if (new Set([...auditFirst, ...auditSecond]).size !== auditRows) fail(`audit pages list ${JSON.stringify([auditFirst, auditSecond])}`);
  if (await page.locator('#audit-body td').filter({ hasText: 'create api token' }).count() !== auditRows - 10) fail('another action listed');
  await page.locator('#audit-filters input[name=to]').fill(LONG_AGO);
  await page.locator('#audit-filters button[type=submit]').click();
  await page.locator('#audit-body td').filter({ hasText: 'No audit entries match.' }).waitFor();
  await page.locator('#audit-filters button[data-range="24h"]').click();
  await pagerSays('audit-pages', 'Rows 1–10 · 10 per page');
  step('audit log paged and by time range');
  // The whole log: the long note stays within the page, cut, and opens in place.
  await page.locator('#audit-filters select[name=action]').selectOption('');
  await page.locator('#audit-filters button[data-range="any"]').click();
  const long = page.locator('#audit-body details.long');
  await long.waitFor();
  await noSidewaysScroll('audit log (desktop)');
  const overflow = await page.locator('#main .table-scroll').evaluate((box) => box.scrollWidth - box.clientWidth);
  if (overflow > 0) fail(`the audit log is ${overflow}px wider than the page`);
  if (await long.locator('.full').isVisible()) fail('the long detail is shown whole before it is asked for');
  await shot('desktop-light-audit');
  await long.locator('summary').click();
  await long.locator('.full').filter({ hasText: args['note-end'] }).waitFor();
  await noSidewaysScroll('audit log with the long detail open (desktop)');
  await shot('desktop-light-audit-open');
  step('audit detail fits');

  // Dark mode: the page, a card and the tables are dark, the text light.
  await page.emulateMedia({ colorScheme: 'dark' });
  const luminance = (css) => {
    const [r, g, b] = css.match(/\d+(\.\d+)?/g).slice(0, 3).map(Number);
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;
  };
  const colours = await page.evaluate(() => {
    const style = (selector) => getComputedStyle(document.querySelector(selector));
    return { body: style('body').backgroundColor, text: style('body').color, table: style('#main table').backgroundColor,
      header: style('header').backgroundColor, input: style('#audit-filters input').backgroundColor };
  });
  for (const part of ['body', 'table', 'header', 'input']) {
    if (luminance(colours[part]) > 0.2) fail(`dark mode: ${part} background is ${colours[part]}`);
  }
  if (luminance(colours.text) < 0.7) fail(`dark mode: text is ${colours.text}`);
  await shot('desktop-dark-audit');
  await page.locator('nav a[href="#overview"]').click();
  await page.locator('[data-chart=received] svg rect').first().waitFor({ state: 'attached' });
  const chart = await page.locator('svg.chart').first().evaluate((node) => getComputedStyle(node).backgroundColor);
  if (luminance(chart) > 0.2) fail(`dark mode: the chart's background is ${chart}`);
  await shot('desktop-dark-overview');
  await page.locator('nav a[href="#dead-letters"]').click();
  await page.locator('#dead-body tr[data-event-id]').first().waitFor();
  await page.locator('#dead-body tr[data-event-id]').first().locator('button.replay').click();
  const dialog = page.locator('dialog#replay-dialog[open]');
  await dialog.locator('.plan-body').waitFor();
  const dialogColour = await dialog.evaluate((node) => getComputedStyle(node).backgroundColor);
  if (luminance(dialogColour) > 0.2) fail(`dark mode: the dialog's background is ${dialogColour}`);
  await shot('desktop-dark-dialog');
  await dialog.locator('button.cancel').click();
  await page.locator('dialog#replay-dialog').waitFor({ state: 'detached' });
  step('dark mode');

  // Phone width: every view fits the screen; the navigation works; a dialog fits.
  await page.emulateMedia({ colorScheme: 'light' });
  await page.setViewportSize({ width: 390, height: 844 });
  for (const [hash, ready] of [['#events', '#events-body tr[data-event-id]'], ['#dead-letters', '#dead-body tr[data-event-id]'],
    ['#audit', '#audit-body tr[data-audit-id]'], ['#destinations', '#main table td'], ['#overview', '[data-chart=received] svg']]) {
    await page.locator(`nav a[href="${hash}"]`).click();
    await page.locator(ready).first().waitFor();
    await noSidewaysScroll(`${hash} at phone width`);
    if (hash === '#dead-letters') await shot('phone-light-dead-letters');
    if (hash === '#audit') await shot('phone-light-audit');
  }
  await page.locator('nav a[href="#events"]').click();
  await page.locator('#events-body tr[data-event-id]').first().click();
  await page.locator('#payload').waitFor();
  await noSidewaysScroll('an event at phone width');
  await page.locator('.delivery button.replay').first().click();
  const phoneDialog = page.locator('dialog#replay-dialog[open]');
  await phoneDialog.locator('.plan-body').waitFor();
  const box = await phoneDialog.boundingBox();
  if (box.x < 0 || box.y < 0 || box.x + box.width > 390 || box.y + box.height > 844) fail(`the dialog leaves the screen: ${JSON.stringify(box)}`);
  if (!(await phoneDialog.locator('button.cancel').isVisible()) || !(await phoneDialog.locator('button.confirm').isVisible())) fail('the dialog hides its buttons');
  await noSidewaysScroll('a dialog at phone width');
  await shot('phone-light-dialog', false);
  await phoneDialog.locator('button.cancel').click();
  await page.emulateMedia({ colorScheme: 'dark' });
  await page.locator('nav a[href="#audit"]').click();
  await page.locator('#audit-body tr[data-audit-id]').first().waitFor();
  await shot('phone-dark-audit');
  step('phone width');

  await browser.succeed();
} catch (error) {
  await browser.fail(error, join(args.screenshots, 'lists-failure.png'));
}
