// Drives the console's search by body content in headless Chromium (Debian's /usr/bin/chromium
// through playwright-core) like an operator would: sign in at the OpenID provider, open Events,
// search the bodies, and check what is listed: the events found, newest first, each with its
// body's text around the match and the matched parts in <mark> elements; a hostile body's text
// shown as text (never run); the search combined with the event type filter; a search the API
// refuses (a term under 3 characters) said on the page.
//
//   node console-search.mjs --url http://127.0.0.1:PORT --email viewer@viewers.example --search TERMS
//                           --expect ID,ID,... --marked TEXT --type TYPE --expect-typed ID,...
//                           --hostile-id ID [--screenshot out.png]
//
// Prints {"ok":true,...} and exits 0 on success; prints the failure (and saves a screenshot if
// asked) and exits 1 otherwise.
import { parseArgs } from 'node:util';
import { openBrowser, requireArgs } from './browser.mjs';

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    email: { type: 'string' },
    search: { type: 'string' },
    expect: { type: 'string' },
    marked: { type: 'string' },
    type: { type: 'string' },
    'expect-typed': { type: 'string' },
    'hostile-id': { type: 'string' },
    screenshot: { type: 'string' },
  },
});
requireArgs('console-search.mjs', args, ['url', 'email', 'search', 'expect', 'marked', 'type', 'expect-typed', 'hostile-id']);

const browser = await openBrowser('console-search.mjs', {
  screenshot: args.screenshot,
  viewport: { width: 1100, height: 700 },
});
const { context, page, logs, step, shot } = browser;

// Searches with the form as it is and waits for the list to reload.
const submit = async () => {
  await page.locator('#event-filters button[type=submit]').click();
  await page.locator('#events-body[aria-busy=false]').waitFor();
};
const listed = () => page.locator('tr[data-event-id]').evaluateAll((rows) => rows.map((row) => row.dataset.eventId));
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

try {
  // Signed in, the console opens on Events. (Clicking its link now would draw the view again
  // after a hashchange that may come after the wait below: the old list, already loaded, would
  // satisfy the wait and the new one, still empty, be read.)
  await browser.signIn(args.url, args.email);
  await page.locator('#events-body[aria-busy=false]').waitFor();
  const everything = await listed();

  // The search: only the events whose body has every term, newest first, each followed by its
  // snippet with the matched parts marked.
  await page.locator('#event-filters input[name=search]').fill(args.search);
  await submit();
  const expected = args.expect.split(',');
  const found = await listed();
  if (!same(found, expected)) throw new Error(`the search listed ${JSON.stringify(found)}, not ${JSON.stringify(expected)} (of ${JSON.stringify(everything)})`);
  for (const id of expected) {
    const snippet = page.locator(`tr[data-snippet-of="${id}"] .snippet`);
    const marks = await snippet.locator('mark').allInnerTexts();
    if (!marks.length || !marks.every((mark) => mark.toLowerCase() === args.marked.toLowerCase())) {
      throw new Error(`${id}'s snippet marks ${JSON.stringify(marks)}, not ${args.marked}`);
    }
  }
  step('searched, matches marked');

  // The hostile body is shown as text: its markup is in the snippet's text, no element of it is
  // in the page, and nothing of it ran.
  const hostile = page.locator(`tr[data-snippet-of="${args['hostile-id']}"] .snippet`);
  if (!(await hostile.innerText()).includes('<img src=x onerror=')) throw new Error('the hostile body is not shown as text');
  if (await hostile.locator('img, script').count() !== 0) throw new Error('the hostile body became markup');
  if (await page.evaluate(() => window.pwned !== undefined)) throw new Error('hostile body text was executed');
  step('hostile text inert');
  await shot();

  // Combined with another filter.
  await page.locator('#event-filters input[name=eventType]').fill(args.type);
  await submit();
  const typed = await listed();
  if (!same(typed, args['expect-typed'].split(','))) throw new Error(`search and type ${args.type} listed ${JSON.stringify(typed)}`);
  step('combined with the type filter');

  // A search the index cannot answer is refused with a reason, shown on the page.
  await page.locator('#event-filters input[name=eventType]').fill('');
  await page.locator('#event-filters input[name=search]').fill('ab');
  await page.locator('#event-filters button[type=submit]').click();
  await page.locator('#error').filter({ hasText: 'at least 3 characters' }).waitFor();
  step('a short term is refused with its reason');

  // Cleared: every event again, without snippets.
  await page.locator('#event-filters input[name=search]').fill('');
  await submit();
  const cleared = await listed();
  if (!same(cleared, everything)) throw new Error(`clearing the search listed ${JSON.stringify(cleared)}, not every event again (${JSON.stringify(everything)})`);
  if (await page.locator('tr.snippet-row').count() !== 0) throw new Error('snippets without a search');
  step('cleared');
  await browser.succeed();
} catch (error) {
  await browser.fail(error);
}
