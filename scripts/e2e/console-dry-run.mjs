// Drives the console's dry run in headless Chromium (Debian's /usr/bin/chromium through
// playwright-core) like an operator would: sign in at the OpenID provider, open Dry run, paste
// a filter and a transform, run them on the newest events of a source, and check the page: the
// events the filter matched and those it did not, each matched one's transform output beside
// its input; then a transform that does not compile, refused with its position on the page.
//
//   node console-dry-run.mjs --url http://127.0.0.1:PORT --email ops@example.com --source gh
//                            --filter CEL --transform JQ --expect-matched ID,... --expect-unmatched ID,...
//                            --expect-output TEXT [--screenshot out.png]
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
    filter: { type: 'string' },
    transform: { type: 'string' },
    'expect-matched': { type: 'string' },
    'expect-unmatched': { type: 'string' },
    'expect-output': { type: 'string' },
    screenshot: { type: 'string' },
  },
});
requireArgs('console-dry-run.mjs', args, ['url', 'email', 'source', 'filter', 'transform', 'expect-matched', 'expect-unmatched', 'expect-output']);

const browser = await openBrowser('console-dry-run.mjs', { screenshot: args.screenshot, viewport: { width: 1200, height: 900 } });
const { page, step, shot } = browser;
const ids = (kind) => page.locator(`.dry-result.${kind}`).evaluateAll((nodes) => nodes.map((n) => n.dataset.eventId).sort());
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

try {
  await browser.signIn(args.url, args.email);
  await page.locator('nav a[href="#dry-run"]').click();
  await page.locator('#dry-source').selectOption(args.source);
  await page.locator('#dry-filter').fill(args.filter);
  await page.locator('#dry-transform').fill(args.transform);
  await page.locator('#dry-submit').click();
  await page.locator('#dry-results[aria-busy=false]').waitFor();
  const matched = await ids('matched');
  const unmatched = await ids('unmatched');
  const expectedMatched = args['expect-matched'].split(',').sort();
  const expectedUnmatched = args['expect-unmatched'].split(',').sort();
  if (!same(matched, expectedMatched)) throw new Error(`matched ${JSON.stringify(matched)}, not ${JSON.stringify(expectedMatched)}`);
  if (!same(unmatched, expectedUnmatched)) throw new Error(`unmatched ${JSON.stringify(unmatched)}, not ${JSON.stringify(expectedUnmatched)}`);
  step('matched and unmatched listed');
  // Each matched event shows its input beside the transform's output.
  for (const id of expectedMatched) {
    const result = page.locator(`.dry-result[data-event-id="${id}"]`);
    const input = await result.locator('pre.input').innerText();
    const output = await result.locator('pre.output').innerText();
    if (!input.includes(id.replace('evt-', ''))) throw new Error(`${id}'s input is ${input}`);
    if (!output.includes(args['expect-output'])) throw new Error(`${id}'s output is ${output}, without ${args['expect-output']}`);
  }
  step('outputs beside inputs');
  await shot();

  // A transform that does not compile is refused, with where, and nothing is listed.
  await page.locator('#dry-transform').fill('{a: }');
  await page.locator('#dry-submit').click();
  await page.locator('#error').filter({ hasText: 'transform: line 1, column' }).waitFor();
  if (await page.locator('.dry-result').count() !== 0) throw new Error('results listed for a transform that does not compile');
  step('a bad transform is refused with its position');
  await browser.succeed();
} catch (error) {
  await browser.fail(error);
}
