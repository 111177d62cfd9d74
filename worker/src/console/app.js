// Inlet console: vanilla JS over the GraphQL API. Every value from the server is inserted as
// text (never as HTML). Cookie session + X-CSRF-Token on every POST.
'use strict';

const session = { csrf: '', role: '', actor: '', logins: [] };
let refreshTimer = null;

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (key === 'className') node.className = value;
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const $ = (id) => document.getElementById(id);
// Timestamps come as RFC 3339 in UTC (`2026-12-03T16:04:05.123Z`) and are shown in UTC, labelled.
const time = (at) => (at ? at.replace('T', ' ').replace('Z', '') : '');
// The API's enum values (`DEAD_LETTERED`) as the console shows them (`dead lettered`).
const label = (value) => value.toLowerCase().replaceAll('_', ' ');
const chip = (status) => h('span', { className: `status ${status.toLowerCase()}` }, label(status));
// A `datetime-local` value (`2026-12-03T16:04` or with seconds) read as UTC, in RFC 3339.
const utc = (local) => `${local.length === 16 ? `${local}:00` : local}Z`;
const canReplay = () => session.role === 'operator' || session.role === 'admin';

function showError(error) {
  const box = $('error');
  box.textContent = error ? String(error.message || error) : '';
  box.hidden = !error;
}

async function gql(query, variables = {}) {
  const response = await fetch('/graphql', {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'content-type': 'application/json', 'x-csrf-token': session.csrf },
    body: JSON.stringify({ query, variables }),
  });
  if (response.status === 401) {
    // The session ended (logout elsewhere, expiry): back to the sign-in page.
    location.reload();
    throw new Error('signed out');
  }
  const answer = await response.json().catch(() => ({ errors: [{ message: `HTTP ${response.status}` }] }));
  if (answer.errors && answer.errors.length) throw new Error(answer.errors.map((e) => e.message).join('; '));
  return answer.data;
}

function render(...nodes) {
  const main = $('main');
  main.replaceChildren(...nodes.flat(Infinity).filter((n) => n !== null && n !== undefined));
}

function every(ms, task) {
  clearInterval(refreshTimer);
  refreshTimer = setInterval(() => task().catch(showError), ms);
}

async function refreshCounts() {
  const { counts } = await gql('{ counts { events unrouted pending delivered deadLettered dismissed } }');
  $('counts').replaceChildren(
    h('span', {}, `${counts.events} events`),
    h('span', {}, `${counts.pending} pending`),
    h('span', {}, `${counts.delivered} delivered`),
    h('span', { id: 'count-dead' }, `${counts.deadLettered} dead letters`),
    h('span', { id: 'count-dismissed' }, `${counts.dismissed} dismissed`),
  );
}

// ---- Lists: time ranges and pages ----------------------------------------------------------

// Quick picks of a list's time range: from that long ago, up to now and whatever arrives next.
const QUICK_RANGES = [['1h', 3600e3, 'last 1 h'], ['24h', 86400e3, 'last 24 h'], ['7d', 7 * 86400e3, 'last 7 d']];
const PAGE_SIZES = [10, 25, 50, 100];
// A `datetime-local` value for `at`, in UTC like every time the console shows.
const utcField = (at) => at.toISOString().slice(0, 19);

// A list's time range: from/to fields (UTC, labelled) and quick picks; a pick fills `from`,
// empties `to` and submits the form. `fromName`/`toName` are the fields' names in the form.
function timeRangeFields(what, fromName, toName) {
  const from = h('input', { name: fromName, type: 'datetime-local', step: 1 });
  const to = h('input', { name: toName, type: 'datetime-local', step: 1 });
  const pick = (value, clear) => (event) => {
    from.value = value ? utcField(new Date(Date.now() - value)) : '';
    if (clear) to.value = '';
    event.currentTarget.form.requestSubmit();
  };
  return [h('label', {}, `${what} from (UTC)`, from), h('label', {}, 'to (UTC)', to),
    h('span', { className: 'quick-range', role: 'group', 'aria-label': 'Quick time range' },
      QUICK_RANGES.map(([key, ms, text]) => h('button', { type: 'button', 'data-range': key, onclick: pick(ms, true) }, text)),
      h('button', { type: 'button', 'data-range': 'any', onclick: pick(0, true) }, 'any time'))];
}

// The range in `data` (a FormData) as the API takes it: RFC 3339, read as UTC.
function timeRange(data, fromName, toName) {
  return { from: data.get(fromName) ? utc(data.get(fromName)) : undefined, to: data.get(toName) ? utc(data.get(toName)) : undefined };
}

// Pages through a newest-first list over the API's cursors (Previous / Next) with the page size
// shown and chosen. `fetchPage(filter, first, after)` answers `{ nodes, pageInfo }`, `show(nodes)`
// draws them. The filter is the one `reload` was given: paging keeps it even while the form is
// being edited; `refresh` reads the current page again (after a change to one of its rows).
function pager(id, fetchPage, show) {
  const state = { filter: {}, cursors: [null], next: null, size: 50 };
  const size = h('select', { name: 'pageSize', className: 'page-size' }, PAGE_SIZES.map((n) => h('option', { value: n, selected: n === state.size }, n)));
  const previous = h('button', { type: 'button', className: 'page-previous', disabled: true }, '← Previous');
  const next = h('button', { type: 'button', className: 'page-next', disabled: true }, 'Next →');
  const where = h('span', { className: 'page-where', 'aria-live': 'polite' });
  const element = h('div', { className: 'pager', id, role: 'navigation', 'aria-label': 'Pages' },
    previous, next, where, h('label', { className: 'inline' }, 'Per page', size));
  const load = async () => {
    element.setAttribute('aria-busy', 'true');
    const index = state.cursors.length - 1;
    const page = await fetchPage(state.filter, state.size, state.cursors[index]);
    await show(page.nodes, page.pageInfo.hasNextPage);
    for (const table of element.parentNode?.querySelectorAll('table.stack') || []) labelCells(table);
    state.next = page.pageInfo.endCursor;
    const first = index * state.size;
    where.textContent = page.nodes.length ? `Rows ${first + 1}–${first + page.nodes.length} · ${state.size} per page`
      : `No rows${index ? ' on this page' : ''} · ${state.size} per page`;
    previous.disabled = index === 0;
    next.disabled = !page.pageInfo.hasNextPage;
    element.dataset.page = index + 1;
    element.setAttribute('aria-busy', 'false');
  };
  previous.addEventListener('click', () => { if (state.cursors.length > 1) state.cursors.pop(); load().catch(showError); });
  next.addEventListener('click', () => { state.cursors.push(state.next); load().catch(showError); });
  size.addEventListener('change', () => { state.size = Number(size.value); state.cursors = [null]; load().catch(showError); });
  return {
    element,
    reload: (filter) => { state.filter = filter; state.cursors = [null]; return load(); },
    refresh: load,
  };
}

// A list's table: at phone width its rows are stacked (each cell under its column's name), and
// whatever is still too wide scrolls inside the table's own box, never the page.
function scrolling(table) {
  table.classList.add('stack');
  return h('div', { className: 'table-scroll' }, table);
}

// Gives each cell its column's name (`data-label`, which the stacked rows show).
function labelCells(table) {
  const names = [...table.querySelectorAll('thead th')].map((th) => th.textContent);
  for (const row of table.tBodies[0]?.rows || []) {
    [...row.cells].forEach((cell, i) => { if (cell.colSpan === 1) cell.dataset.label = names[i] || ''; });
  }
}

// ---- Overview: activity charts ----------------------------------------------------------

const RANGES = { '1h': 3600e3, '24h': 86400e3, '7d': 7 * 86400e3 };
const ACTIVITY = `query($from: DateTime!, $to: DateTime!, $source: String, $destination: String) {
  activity(from: $from, to: $to, source: $source, destination: $destination) {
    bucketSeconds buckets { start received delivered failed deadLettered latencyAvgMs latencyMaxMs } } }`;

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

// One bar per bucket, scaled to the range's peak; each bar's <title> says when and how many.
function chart(title, kind, activity, value, unit) {
  const width = 720;
  const height = 110;
  const values = activity.buckets.map(value);
  const peak = Math.max(0, ...values);
  const step = width / Math.max(1, values.length);
  const bars = values.map((v, i) => {
    const barHeight = peak ? Math.max(v ? 1 : 0, (v / peak) * (height - 4)) : 0;
    return svg('rect', { x: (i * step).toFixed(2), y: (height - barHeight).toFixed(2), width: Math.max(1, step - 1).toFixed(2),
      height: barHeight.toFixed(2), 'data-value': v }, svg('title', {}, `${time(activity.buckets[i].start)} UTC: ${Math.round(v)}${unit}`));
  });
  const total = values.reduce((a, b) => a + b, 0);
  const summary = unit ? `peak ${Math.round(peak)}${unit}` : `${total} in all · peak ${peak} per ${activity.bucketSeconds / 60} min`;
  return h('div', { className: 'card chart-card', 'data-chart': kind },
    h('h2', {}, title, h('span', { className: 'muted' }, ` ${summary}`)),
    svg('svg', { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: 'none', class: `chart ${kind}`, role: 'img', 'aria-label': `${title}, ${summary}` }, ...bars));
}

async function overviewView() {
  const { sources, destinations } = await gql('{ sources { name } destinations { name } }');
  const form = h('form', { className: 'filters', id: 'overview-filters' },
    h('label', {}, 'Range', h('select', { name: 'range' }, Object.keys(RANGES).map((r) => h('option', { value: r }, `last ${r}`)))),
    h('label', {}, 'Source', h('select', { name: 'source' }, h('option', { value: '' }, 'any'), sources.map((s) => h('option', { value: s.name }, s.name)))),
    h('label', {}, 'Destination', h('select', { name: 'destination' }, h('option', { value: '' }, 'any'),
      destinations.map((d) => h('option', { value: d.name }, d.name)))),
    h('button', { type: 'submit', className: 'primary' }, 'Show'));
  const charts = h('div', { id: 'charts' });
  const range = h('p', { className: 'muted', id: 'overview-range' });
  const draw = async () => {
    const data = new FormData(form);
    const to = new Date();
    const from = new Date(to.getTime() - RANGES[data.get('range')]);
    const { activity } = await gql(ACTIVITY, { from: from.toISOString(), to: to.toISOString(),
      source: data.get('source') || null, destination: data.get('destination') || null });
    range.textContent = `${time(from.toISOString())} – ${time(to.toISOString())} UTC, ${activity.bucketSeconds / 60} min per bar`;
    charts.replaceChildren(
      chart('Received', 'received', activity, (b) => b.received, ''),
      chart('Delivered', 'delivered', activity, (b) => b.delivered, ''),
      chart('Failed attempts', 'failed', activity, (b) => b.failed, ''),
      chart('Dead-lettered', 'dead', activity, (b) => b.deadLettered, ''),
      chart('Receipt to delivery, mean', 'latency', activity, (b) => b.latencyAvgMs || 0, ' ms'),
      chart('Receipt to delivery, slowest', 'latency', activity, (b) => b.latencyMaxMs || 0, ' ms'));
  };
  form.addEventListener('submit', (event) => { event.preventDefault(); draw().catch(showError); });
  render(h('h1', {}, 'Overview'), form, range, charts);
  await draw();
  every(30000, draw);
}

// ---- Events -------------------------------------------------------------------------------

const EVENTS = `query($filter: EventFilter, $first: Int, $after: String) {
  events(filter: $filter, first: $first, after: $after) {
    nodes { id source eventId eventType receivedAt routeStatus deliveries { destination status }
      searchMatch { snippet highlights { start end } truncatedStart truncatedEnd } }
    pageInfo { hasNextPage endCursor } } }`;

async function eventsView() {
  const { sources } = await gql('{ sources { name } }');
  const form = h('form', { className: 'filters', id: 'event-filters' },
    h('label', {}, 'Source', h('select', { name: 'source' }, h('option', { value: '' }, 'any'),
      sources.map((s) => h('option', { value: s.name }, s.name)))),
    h('label', {}, 'Type', h('input', { name: 'eventType', placeholder: 'push' })),
    h('label', {}, 'Status', h('select', { name: 'status' }, h('option', { value: '' }, 'any'),
      ['PENDING', 'DELIVERED', 'DEAD_LETTERED', 'DISMISSED', 'UNROUTED'].map((s) => h('option', { value: s }, label(s))))),
    h('label', {}, 'Event id contains', h('input', { name: 'text' })),
    h('label', {}, 'Body contains', h('input', { name: 'search', type: 'search', maxlength: 200, placeholder: 'ord_123 "order paid"',
      title: 'Every word or "quoted phrase" (3 characters or more) appears in the body, in any case, also inside longer words' })),
    timeRangeFields('Received', 'after', 'before'),
    h('button', { type: 'submit', className: 'primary' }, 'Filter'));
  const body = h('tbody', { id: 'events-body' });
  const filter = () => {
    const data = new FormData(form);
    const f = {};
    for (const key of ['source', 'eventType', 'status', 'text', 'search']) if (data.get(key)) f[key] = data.get(key);
    // The field is read as UTC, like every time the console shows (not the browser's zone).
    const range = timeRange(data, 'after', 'before');
    if (range.from) f.receivedAfter = range.from;
    if (range.to) f.receivedBefore = range.to;
    return f;
  };
  const show = async (nodes, hasNextPage) => {
    const rows = nodes.flatMap((e) => [h('tr', { className: 'clickable', 'data-event-id': e.eventId,
      onclick: () => { location.hash = `#event/${e.id}`; } },
    h('td', { className: 'mono' }, time(e.receivedAt)), h('td', {}, e.source), h('td', {}, e.eventType || ''),
    h('td', { className: 'mono' }, e.eventId),
    h('td', {}, e.routeStatus === 'UNROUTED' ? chip('UNROUTED') : null, e.deliveries.map((d) => [chip(d.status), d.destination, ' ']))),
    // With a search, the body's text around the match, under the event's row.
    e.searchMatch ? snippetRow(e) : []]);
    body.replaceChildren(...rows);
    // A search examines a bounded number of matches per page: none kept by the other filters
    // yet does not mean none at all.
    if (!rows.length) {
      body.append(h('tr', {}, h('td', { colspan: 5, className: 'muted' }, hasNextPage
        ? 'No match among the newest events searched so far; Next searches older ones.' : 'No events match.')));
    }
  };
  const pages = pager('events-pages', async (f, first, after) => (await gql(EVENTS, { filter: f, first, after })).events, show);
  // The list is busy until it has reloaded (the browser tests wait for it).
  const load = async () => {
    body.setAttribute('aria-busy', 'true');
    await pages.reload(filter());
    body.setAttribute('aria-busy', 'false');
  };
  form.addEventListener('submit', (event) => { event.preventDefault(); load().catch(showError); });
  render(h('h1', {}, 'Events'), form, pages.element,
    scrolling(h('table', {}, h('thead', {}, h('tr', {}, ['Received (UTC)', 'Source', 'Type', 'Event id', 'Deliveries'].map((t) => h('th', {}, t)))), body)));
  await load();
}

// A search's snippet under its event's row: the body's text with every matched part in a
// <mark>. Built from text nodes only (the body is the sender's text, never HTML); the ranges are
// UTF-16 offsets, as String.prototype.slice takes them.
function snippetView(match) {
  const parts = [];
  let at = 0;
  for (const { start, end } of match.highlights) {
    if (start > at) parts.push(match.snippet.slice(at, start));
    parts.push(h('mark', {}, match.snippet.slice(start, end)));
    at = end;
  }
  parts.push(match.snippet.slice(at));
  return h('div', { className: 'snippet mono' }, match.truncatedStart ? '…' : null, parts, match.truncatedEnd ? '…' : null);
}

function snippetRow(e) {
  return h('tr', { className: 'clickable snippet-row', 'data-snippet-of': e.eventId, onclick: () => { location.hash = `#event/${e.id}`; } },
    h('td', { colspan: 5 }, snippetView(e.searchMatch)));
}

// ---- Event detail -------------------------------------------------------------------------

// The routing config an event was routed with: its short hash and whether the worker runs it
// now (the full hash in the tooltip).
function configVersionView(event) {
  if (!event.configVersion) return h('span', { id: 'config-version', className: 'muted' }, 'config version not recorded');
  return h('span', { id: 'config-version', title: event.configVersion }, 'config ',
    h('span', { className: 'mono' }, event.configVersion.slice(0, 12)), ' · ', event.configIsCurrent ? 'current' : 'older');
}

// Which routes' transform a replay runs, for its confirmation: the current ones (the default),
// or those the event was routed with (offered only when the event recorded its version).
function replayConfigPicker(event) {
  const select = h('select', { id: 'replay-config', name: 'config' },
    h('option', { value: 'CURRENT' }, 'current config'),
    h('option', { value: 'AS_RECEIVED', disabled: !event.configVersion },
      event.configVersion ? `as received (${event.configVersion.slice(0, 12)}${event.configIsCurrent ? ', the current one' : ''})` : 'as received (not recorded for this event)'));
  return { select, view: h('label', { className: 'pick' }, 'Transform with', select) };
}

// The config a replay used, as its result and a delivery's card say it.
function configUsed(replayConfig, configVersion) {
  return replayConfig === 'AS_RECEIVED' ? `as received (${(configVersion || '').slice(0, 12)})` : 'current config';
}

// What replaying an event to a destination would send there.
const REPLAY_TO_PLAN = `query($id: ID!, $destination: String!) { event(id: $id) {
  source eventId eventType receivedAt contentType configVersion configIsCurrent content { body bodyBytes }
  requestTo(destination: $destination) { destination url attempt headers { name value } } } }`;

// Replays an event (`deliveryId`: the one it starts from, kept as its lineage) to a destination
// the operator picks, routed there or not, after a confirmation showing what will be sent there.
function replayToButton({ eventId, deliveryId, from, text, after }) {
  return h('button', { type: 'button', className: 'replay-to', 'data-delivery': deliveryId, onclick: async (event) => {
    const button = event.currentTarget;
    button.disabled = true;
    try {
      const { destinations } = await gql('{ destinations { name } }');
      const names = destinations.map((d) => d.name);
      const select = h('select', { id: 'replay-to-destination', name: 'destination' }, names.map((name) => h('option', { value: name }, name)));
      select.value = names.find((name) => name !== from) || names[0] || '';
      const plan = h('div', { id: 'replay-to-plan' });
      const show = async () => {
        const { event: planned } = await gql(REPLAY_TO_PLAN, { id: eventId, destination: select.value });
        plan.replaceChildren(...requestView(planned.requestTo, planned));
      };
      select.addEventListener('change', () => show().catch(showError));
      await show();
      const { event: routed } = await gql('query($id: ID!) { event(id: $id) { configVersion configIsCurrent } }', { id: eventId });
      const config = replayConfigPicker(routed);
      const confirmed = await confirmDialog({ id: 'replay-to-dialog', confirm: 'Replay', focus: select,
        title: deliveryId ? `Replay ${deliveryId} to a destination` : 'Replay this event to a destination',
        content: [h('p', {}, 'A new delivery of this event, with an Idempotency-Key of its own: the destination receives it even if it received this event before.',
          deliveryId ? ' The delivery it starts from stays as it is.' : ''), h('label', { className: 'pick' }, 'Destination', select), config.view, plan] });
      if (!confirmed) { button.disabled = false; return; }
      await gql('mutation($d: ID, $e: ID, $to: String!, $config: ReplayConfig!) { replayToDestination(deliveryId: $d, eventId: $e, destination: $to, config: $config) { id } }',
        { d: deliveryId || null, e: deliveryId ? null : eventId, to: select.value, config: config.select.value });
      button.disabled = false;
      if (after) await after();
    } catch (error) { button.disabled = false; showError(error); }
  } }, text);
}

// Dismisses a dead letter (resolved without delivery) after a confirmation that says what that
// means and takes an optional note; `after` runs once it is done.
function dismissButton(deliveryId, after) {
  return h('button', { type: 'button', className: 'dismiss', 'data-delivery': deliveryId, onclick: async (event) => {
    const button = event.currentTarget;
    button.disabled = true;
    try {
      const note = h('textarea', { name: 'note', id: 'dismiss-note', rows: 3, maxlength: 500, placeholder: 'e.g. the order was cancelled upstream' });
      const confirmed = await confirmDialog({ id: 'dismiss-dialog', title: `Dismiss ${deliveryId}?`, confirm: 'Dismiss', danger: true, focus: note,
        content: [h('p', {}, 'It is resolved without being delivered: it leaves the dead letters (their list, counts and bulk replays) and is never attempted again. It can still be replayed later. Your name, the time and the note go to the audit log.'),
          h('label', { className: 'note' }, 'Note (optional, at most 500 characters)', note)] });
      if (!confirmed) { button.disabled = false; return; }
      await gql('mutation($id: ID!, $note: String) { dismissDeadLetter(id: $id, note: $note) { status } }', { id: deliveryId, note: note.value || null });
      button.replaceWith(h('span', { className: 'dismiss-result' }, 'dismissed'));
      if (after) await after();
    } catch (error) { button.disabled = false; showError(error); }
  } }, 'Dismiss');
}

const EVENT = `query($id: ID!) { event(id: $id) {
  id source eventId eventType receivedAt contentType routeStatus duplicates conflicts scheme configVersion configIsCurrent
  content { headers { name value } body bodyBytes bodySha256 }
  deliveries { id destination status attemptCount replays lastStatusCode lastError deadLetterReason nextAttemptAt
    dismissal { by at note } replayOf createdBy createdAt orderingKey waitingForEarlier replayConfig configVersion
    attempts { attempt startedAt durationMs outcome statusCode error responseSnippet } } } }`;

function pretty(body, contentType) {
  if ((contentType || '').includes('json') || /^\s*[[{]/.test(body)) {
    try { return JSON.stringify(JSON.parse(body), null, 2); } catch { /* not JSON after all */ }
  }
  return body;
}

// A modal confirmation (a `<dialog>`): resolves true when confirmed, false when cancelled
// (the Cancel button or Escape). Nothing happens before the operator has seen `content`.
function confirmDialog({ id, title, content, confirm, danger, focus }) {
  return new Promise((resolve) => {
    const dialog = h('dialog', { id, className: 'confirm', 'aria-labelledby': `${id}-title` });
    const done = (confirmed) => { dialog.close(); dialog.remove(); resolve(confirmed); };
    // Title and buttons stay in view; what is shown between them scrolls. Cancel has the focus.
    dialog.append(h('h2', { id: `${id}-title` }, title), h('div', { className: 'dialog-content' }, content),
      h('p', { className: 'actions' },
        h('button', { type: 'button', className: 'cancel', autofocus: true, onclick: () => done(false) }, 'Cancel'),
        h('button', { type: 'button', className: danger ? 'danger confirm' : 'primary confirm', onclick: () => done(true) }, confirm)));
    dialog.addEventListener('cancel', (event) => { event.preventDefault(); done(false); });
    document.body.append(dialog);
    dialog.showModal();
    if (focus) focus.focus();
  });
}

// At most this much of a body is shown in a confirmation (the event view shows all of it).
const SHOWN_BODY = 64 * 1024;

// What a request will carry: destination, event, headers (those made later say when) and body.
function requestView(plan, event) {
  const later = (name) => (/^webhook-(timestamp|signature)$/i.test(name) ? 'made when sent (signed with the destination\'s secret)' : 'assigned when the delivery is created');
  const body = event.content.body.length > SHOWN_BODY ? `${event.content.body.slice(0, SHOWN_BODY)}\n…` : pretty(event.content.body, event.contentType);
  return [
    h('dl', { className: 'plan' },
      h('dt', {}, 'Destination'), h('dd', { className: 'plan-destination' }, plan.destination, ' ', h('span', { className: 'mono muted' }, plan.url || '(no longer configured)')),
      h('dt', {}, 'Event'), h('dd', {}, `${event.source} · ${event.eventType || '(no type)'} · `, h('span', { className: 'mono' }, event.eventId), ` · received ${time(event.receivedAt)} UTC`),
      h('dt', {}, 'Attempt'), h('dd', {}, `#${plan.attempt} (Inlet-Delivery-Attempt)`)),
    h('h3', {}, 'Headers'),
    h('table', { className: 'plan-headers' }, h('tbody', {}, plan.headers.map((header) => h('tr', {}, h('td', { className: 'mono' }, header.name),
      header.value === null ? h('td', { className: 'muted' }, later(header.name)) : h('td', { className: 'mono' }, header.value))))),
    h('h3', {}, `Body (${event.content.bodyBytes} bytes)`), h('pre', { className: 'mono plan-body' }, body)];
}

// A delivery with what replaying it sends: asked when its Replay button is pressed.
const DELIVERY_PLAN = `query($id: ID!) { delivery(id: $id) {
  id destination status attemptCount deliveredAt deadLetterReason dismissal { by at }
  nextRequest { destination url attempt headers { name value } }
  event { source eventId eventType receivedAt contentType configVersion configIsCurrent content { body bodyBytes } } } }`;

// Replays only after a confirmation that shows what will be sent: always (an operator replays
// one delivery at a time and sees the body that goes out); for a delivered one it says that the
// destination gets the event a second time.
function replayButton(deliveryId, after) {
  return h('button', { type: 'button', className: 'replay', 'data-delivery': deliveryId, onclick: async (event) => {
    const button = event.currentTarget;
    button.disabled = true;
    try {
      const { delivery } = await gql(DELIVERY_PLAN, { id: deliveryId });
      if (!delivery) throw new Error(`delivery ${deliveryId} is gone`);
      const state = {
        DELIVERED: h('p', { className: 'warn', id: 'replay-warning' }, `Already delivered ${time(delivery.deliveredAt)} UTC: ${delivery.destination} will receive this event again, with the same Idempotency-Key.`),
        DEAD_LETTERED: h('p', {}, `Dead-lettered (${label(delivery.deadLetterReason || 'UNKNOWN')}) after ${delivery.attemptCount} attempt${delivery.attemptCount === 1 ? '' : 's'}; the replay starts a fresh retry schedule.`),
        DISMISSED: h('p', { className: 'warn' }, `Dismissed by ${delivery.dismissal?.by} ${time(delivery.dismissal?.at)} UTC: replaying it ends the dismissal.`),
      }[delivery.status];
      const config = replayConfigPicker(delivery.event);
      const confirmed = await confirmDialog({ id: 'replay-dialog', title: `Replay ${delivery.id}?`, confirm: 'Replay',
        content: [state, config.view, requestView(delivery.nextRequest, delivery.event)] });
      if (!confirmed) { button.disabled = false; return; }
      const { replayDelivery } = await gql('mutation($id: ID!, $config: ReplayConfig!) { replayDelivery(id: $id, config: $config) { result enqueued replayConfig configVersion } }',
        { id: deliveryId, config: config.select.value });
      button.replaceWith(h('span', { className: 'replay-result' },
        `${label(replayDelivery.result)} · ${configUsed(replayDelivery.replayConfig, replayDelivery.configVersion)}`));
      if (after) await after();
    } catch (error) { button.disabled = false; showError(error); }
  } }, 'Replay');
}

async function eventView(id) {
  let watching = false;
  const redraw = async () => { watching = await draw(); };
  const draw = async () => {
    const { event } = await gql(EVENT, { id });
    if (!event) { render(h('p', {}, 'No such event.')); return false; }
    const deliveries = await Promise.all(event.deliveries.map(async (d) => h('div', { className: 'card delivery', 'data-destination': d.destination },
      h('h2', {}, d.destination, ' ', h('span', { className: 'delivery-status' }, chip(d.status)),
        d.status !== 'PENDING' && canReplay() ? replayButton(d.id, redraw) : null,
        d.status === 'DEAD_LETTERED' && canReplay() ? dismissButton(d.id, redraw) : null,
        canReplay() ? replayToButton({ eventId: event.id, deliveryId: d.id, from: d.destination, text: 'Replay to…', after: redraw }) : null),
      d.createdBy ? h('p', { className: 'lineage' }, d.replayOf ? ['Replay of ', h('span', { className: 'mono' }, d.replayOf)] : 'Replay of this event',
        ` to ${d.destination} by ${d.createdBy} ${time(d.createdAt)} UTC`) : null,
      h('p', { className: 'muted mono' }, `${d.id} · ${d.attemptCount} attempts · ${d.replays} replays`,
        d.deadLetterReason ? ` · ${label(d.deadLetterReason)}` : '', d.nextAttemptAt && d.status === 'PENDING' ? ` · next ${time(d.nextAttemptAt)} UTC` : '',
        ' · ', h('span', { className: 'delivery-config' }, configUsed(d.replayConfig, d.configVersion))),
      d.orderingKey ? h('p', { className: 'ordering' }, 'Ordering key ', h('span', { className: 'mono' }, d.orderingKey),
        d.waitingForEarlier ? ' · waiting for an earlier delivery of this key' : '') : null,
      d.dismissal ? h('p', { className: 'dismissal' }, `Dismissed by ${d.dismissal.by} ${time(d.dismissal.at)} UTC`, d.dismissal.note ? `: ${d.dismissal.note}` : '') : null,
      h('table', {}, h('thead', {}, h('tr', {}, ['#', 'Started (UTC)', 'Latency', 'Outcome', 'Status', 'Error / response'].map((t) => h('th', {}, t)))),
        h('tbody', {}, d.attempts.map((a) => h('tr', {}, h('td', {}, a.attempt), h('td', { className: 'mono' }, time(a.startedAt)),
          h('td', {}, `${a.durationMs} ms`), h('td', {}, label(a.outcome)), h('td', {}, a.statusCode ?? ''),
          h('td', { className: 'mono' }, a.error || a.responseSnippet || ''))))))));
    render(
      h('p', {}, h('a', { href: '#events' }, '← Events')),
      h('h1', {}, `${event.source} · ${event.eventType || '(no type)'} · `, h('span', { className: 'mono' }, event.eventId)),
      h('p', { className: 'muted' }, `received ${time(event.receivedAt)} UTC · verified by ${event.scheme} · ${event.content.bodyBytes} bytes · `,
        `duplicates ${event.duplicates} · conflicts ${event.conflicts} · sha256 ${event.content.bodySha256.slice(0, 16)}… · `, configVersionView(event)),
      h('h2', {}, 'Deliveries', canReplay() ? replayToButton({ eventId: event.id, text: 'Replay to a destination…', after: redraw }) : null),
      event.routeStatus === 'UNROUTED' ? h('p', {}, chip('UNROUTED'), ' no route matched') : null, deliveries,
      h('h2', {}, 'Payload'), h('pre', { className: 'mono', id: 'payload' }, pretty(event.content.body, event.contentType)),
      h('h2', {}, 'Headers'), h('table', {}, h('tbody', {}, event.content.headers.map((header) => h('tr', {}, h('td', { className: 'mono' }, header.name), h('td', { className: 'mono' }, header.value))))));
    return event.deliveries.some((d) => d.status === 'PENDING');
  };
  await redraw();
  every(2000, async () => { if (watching) await redraw(); });
}

// ---- Dead letters -------------------------------------------------------------------------

const DEAD = `query($filter: DeadLetterFilter, $first: Int, $after: String) { deadLetters(filter: $filter, first: $first, after: $after) {
  nodes { id destination deadLetterReason attemptCount lastStatusCode lastError updatedAt event { id source eventId eventType } }
  pageInfo { hasNextPage endCursor } } }`;

async function deadLettersView() {
  const { destinations, sources } = await gql('{ destinations { name } sources { name } }');
  const form = h('form', { className: 'filters', id: 'dead-filters' },
    h('label', {}, 'Destination', h('select', { name: 'destination' }, h('option', { value: '' }, 'any'), destinations.map((d) => h('option', { value: d.name }, d.name)))),
    h('label', {}, 'Source', h('select', { name: 'source' }, h('option', { value: '' }, 'any'), sources.map((s) => h('option', { value: s.name }, s.name)))),
    h('label', {}, 'Reason', h('select', { name: 'reason' }, h('option', { value: '' }, 'any'),
      ['PERMANENT_4XX', 'RETRIES_EXHAUSTED', 'UNKNOWN_DESTINATION', 'TRANSFORM_FAILED'].map((r) => h('option', { value: r }, label(r))))),
    h('label', {}, 'Event id contains', h('input', { name: 'text' })),
    timeRangeFields('Dead-lettered', 'from', 'to'),
    h('button', { type: 'submit', className: 'primary' }, 'Filter'));
  const filter = () => {
    const data = new FormData(form);
    const f = {};
    for (const key of ['destination', 'source', 'reason', 'text']) if (data.get(key)) f[key] = data.get(key);
    const range = timeRange(data, 'from', 'to');
    if (range.from) f.deadAfter = range.from;
    if (range.to) f.deadBefore = range.to;
    return f;
  };
  const body = h('tbody', { id: 'dead-body' });
  const bulk = h('div', { className: 'card', id: 'bulk' });
  // After a dismissal or a bulk replay the page is read again, where it is.
  const load = () => pages.refresh();
  const show = async (nodes) => {
    const rows = await Promise.all(nodes.map(async (d) => h('tr', { 'data-event-id': d.event.eventId },
      h('td', { className: 'mono' }, time(d.updatedAt)), h('td', {}, d.destination), h('td', {}, d.event.source),
      h('td', { className: 'mono' }, h('a', { href: `#event/${d.event.id}`, className: 'event-link' }, d.event.eventId)),
      h('td', {}, label(d.deadLetterReason)), h('td', {}, `${d.attemptCount} · ${d.lastStatusCode ?? d.lastError ?? ''}`),
      h('td', { className: 'actions' }, canReplay() ? [replayButton(d.id), ' ', dismissButton(d.id, load)] : ''))));
    body.replaceChildren(...rows);
    if (!rows.length) body.append(h('tr', {}, h('td', { colspan: 7, className: 'muted' }, 'No dead letters match.')));
  };
  const pages = pager('dead-pages', async (f, first, after) => (await gql(DEAD, { filter: f, first, after })).deadLetters, show);
  form.addEventListener('submit', (event) => { event.preventDefault(); pages.reload(filter()).catch(showError); });
  const rate = h('input', { type: 'number', min: 1, value: 10, name: 'rate', id: 'bulk-rate' });
  // Which routes' transform every item runs: the current ones, or each event's own as received
  // (an item whose event recorded no version is then left as it is, counted as not re-queued).
  const bulkConfig = h('select', { id: 'bulk-config', name: 'config' },
    h('option', { value: 'CURRENT' }, 'current config'),
    h('option', { value: 'AS_RECEIVED' }, 'as received (each event\'s own)'));
  const bulkConfigText = (config) => (config === 'AS_RECEIVED' ? 'each event\'s config as received' : 'the current config');
  const preview = h('button', { type: 'button', id: 'bulk-preview', onclick: async () => {
    // The confirmation replays exactly what this dry run counted: its filter, its config and its
    // token (dead letters arriving later are left out; if the previewed ones changed, it is refused).
    const previewed = filter();
    const config = bulkConfig.value;
    const { bulkReplay } = await gql(`mutation($f: DeadLetterFilter!, $c: ReplayConfig!) { bulkReplay(filter: $f, dryRun: true, config: $c) { count previewToken sample { id destination event { eventId } } } }`, { f: previewed, c: config });
    const start = h('button', { type: 'button', className: 'primary', id: 'bulk-start', disabled: bulkReplay.count === 0, onclick: async () => {
      try {
        const started = await gql(`mutation($f: DeadLetterFilter!, $r: Int, $t: String!, $c: ReplayConfig!) { bulkReplay(filter: $f, dryRun: false, ratePerSecond: $r, previewToken: $t, config: $c) { job { id total ratePerSecond } } }`,
          { f: previewed, r: Number(rate.value) || null, t: bulkReplay.previewToken, c: config });
        await followJob(started.bulkReplay.job.id, load, config);
      } catch (error) { showError(error); }
    } }, `Replay ${bulkReplay.count} dead letters`);
    bulk.replaceChildren(h('h2', {}, 'Bulk replay'), h('p', { id: 'bulk-count' }, `Dry run: ${bulkReplay.count} dead letters match, to be transformed with ${bulkConfigText(config)}. First ones:`),
      h('ul', {}, bulkReplay.sample.map((s) => h('li', { className: 'mono' }, `${s.event.eventId} → ${s.destination}`))),
      h('label', {}, 'Rate per second', rate), start);
  } }, 'Bulk replay: preview (dry run)');
  const followJob = async (jobId, reload, config) => {
    const status = h('p', { id: 'bulk-status' });
    const cancel = h('button', { type: 'button', className: 'danger', id: 'bulk-cancel', onclick: async () => {
      await gql('mutation($id: ID!) { cancelBulkReplay(id: $id) { status } }', { id: jobId });
    } }, 'Cancel');
    bulk.replaceChildren(h('h2', {}, 'Bulk replay'), status, cancel);
    const poll = async () => {
      const { bulkReplay } = await gql('query($id: ID!) { bulkReplay(id: $id) { status total done enqueued ratePerSecond } }', { id: jobId });
      status.replaceChildren(chip(bulkReplay.status), ` ${bulkReplay.done}/${bulkReplay.total} processed, ${bulkReplay.enqueued} re-queued at ≤ ${bulkReplay.ratePerSecond}/s, with ${bulkConfigText(config)}`);
      if (bulkReplay.status !== 'RUNNING') { cancel.hidden = true; clearInterval(refreshTimer); await reload(); }
    };
    await poll();
    every(1000, poll);
  };
  render(h('h1', {}, 'Dead letters'), form, canReplay() ? h('p', {}, h('label', { className: 'pick' }, 'Transform with', bulkConfig), ' ', preview) : null, bulk, pages.element,
    scrolling(h('table', {}, h('thead', {}, h('tr', {}, ['Dead since (UTC)', 'Destination', 'Source', 'Event id', 'Reason', 'Attempts · last', ''].map((t) => h('th', {}, t)))), body)));
  await pages.reload(filter());
}

// ---- Destinations, audit ------------------------------------------------------------------

async function destinationsView() {
  const draw = async () => {
    const { destinations } = await gql('{ destinations { name url breakerState pending deadLettered delivered dismissed } }');
    render(h('h1', {}, 'Destinations'), h('table', {},
      h('thead', {}, h('tr', {}, ['Name', 'URL', 'Breaker', 'Pending', 'Dead letters', 'Delivered', 'Dismissed'].map((t) => h('th', {}, t)))),
      h('tbody', {}, destinations.map((d) => h('tr', {}, h('td', {}, d.name), h('td', { className: 'mono' }, d.url),
        h('td', {}, chip(d.breakerState)), h('td', {}, d.pending), h('td', {}, d.deadLettered), h('td', {}, d.delivered), h('td', {}, d.dismissed))))));
  };
  await draw();
  every(3000, draw);
}

const AUDIT = `query($filter: AuditFilter, $first: Int, $after: String) { auditLog(filter: $filter, first: $first, after: $after) {
  nodes { id at actor action target count detail } pageInfo { hasNextPage endCursor } } }`;
const AUDIT_ACTIONS = ['REPLAY_DELIVERY', 'DISMISS_DEAD_LETTER', 'REPLAY_TO_DESTINATION', 'BULK_REPLAY', 'CANCEL_BULK_REPLAY',
  'SIGN_IN', 'SESSION_ENDED', 'LINK_ACCOUNT', 'UNLINK_ACCOUNT', 'CREATE_API_TOKEN', 'REVOKE_API_TOKEN', 'ADMIT_QUARANTINED',
  'BACKFILL'];
// Longer details (a bulk replay's filter, say) are cut here; the rest opens in place.
const SHOWN_DETAIL = 120;

// A detail that may be long: its start, and all of it on demand (never wider than its cell).
function detailCell(detail) {
  if (!detail || detail.length <= SHOWN_DETAIL) return h('td', { className: 'mono detail' }, detail || '');
  return h('td', { className: 'mono detail' }, h('details', { className: 'long' },
    h('summary', {}, h('span', { className: 'preview' }, `${detail.slice(0, SHOWN_DETAIL)}…`), h('span', { className: 'more' }, ` show all (${detail.length} characters)`),
      h('span', { className: 'less' }, 'hide')),
    h('div', { className: 'full' }, detail)));
}

async function auditView() {
  const form = h('form', { className: 'filters', id: 'audit-filters' },
    h('label', {}, 'Who (exactly)', h('input', { name: 'actor', placeholder: 'ops@example.com or token:name' })),
    h('label', {}, 'What', h('select', { name: 'action' }, h('option', { value: '' }, 'any'), AUDIT_ACTIONS.map((a) => h('option', { value: a }, label(a))))),
    timeRangeFields('Logged', 'from', 'to'),
    h('button', { type: 'submit', className: 'primary' }, 'Filter'));
  const filter = () => {
    const data = new FormData(form);
    const f = {};
    for (const key of ['actor', 'action']) if (data.get(key)) f[key] = data.get(key).trim();
    Object.assign(f, Object.fromEntries(Object.entries(timeRange(data, 'from', 'to')).filter(([, at]) => at)));
    return f;
  };
  const body = h('tbody', { id: 'audit-body' });
  const show = async (nodes) => {
    body.replaceChildren(...nodes.map((n) => h('tr', { 'data-audit-id': n.id }, h('td', { className: 'mono' }, time(n.at)), h('td', { className: 'wrap' }, n.actor),
      h('td', {}, label(n.action)), h('td', { className: 'mono wrap' }, n.target), h('td', {}, n.count), detailCell(n.detail))));
    if (!nodes.length) body.append(h('tr', {}, h('td', { colspan: 6, className: 'muted' }, 'No audit entries match.')));
  };
  const pages = pager('audit-pages', async (f, first, after) => (await gql(AUDIT, { filter: f, first, after })).auditLog, show);
  form.addEventListener('submit', (event) => { event.preventDefault(); pages.reload(filter()).catch(showError); });
  render(h('h1', {}, 'Audit log'), form, pages.element, scrolling(h('table', { className: 'audit' },
    h('colgroup', {}, ['when', 'who', 'what', 'target', 'count', 'detail'].map((c) => h('col', { className: `col-${c}` }))),
    h('thead', {}, h('tr', {}, ['When (UTC)', 'Who', 'What', 'Target', 'How many', 'Detail'].map((t) => h('th', {}, t)))), body)));
  await pages.reload(filter());
}

// ---- Rejected requests (admin): the quarantine ------------------------------------------------

// Requests ingest answered 401/400, kept with why; after a secret is fixed (and the worker
// restarted with it), an admin re-verifies and admits them: those that verify now enter the
// pipeline with their original receipt time.
async function rejectedView() {
  const { sources } = await gql('{ sources { name } }');
  const chosen = sessionStorage.getItem('rejected-source') || (sources[0] && sources[0].name) || '';
  const picker = h('select', { id: 'rejected-source', name: 'source' },
    sources.map((s) => h('option', { value: s.name, selected: s.name === chosen }, s.name)));
  const summary = h('p', { id: 'rejected-counts', className: 'muted' });
  const result = h('div', { id: 'admit-result' });
  const body = h('tbody', {});
  const admit = async (ids) => {
    try {
      const { admitRejected } = await gql(`mutation($s: String!, $ids: [ID!]) { admitRejected(source: $s, ids: $ids) {
        admitted duplicates eventIds stillRejected { id diagnosis detail } } }`, { s: picker.value, ids });
      const a = admitRejected;
      result.replaceChildren(h('div', { className: 'card' },
        h('p', { id: 'admit-summary' }, `${a.admitted} admitted${a.duplicates ? ` (${a.duplicates} already stored)` : ''}, ${a.stillRejected.length} still rejected.`),
        a.eventIds.length ? h('p', {}, 'Event ids: ', h('span', { className: 'mono', id: 'admitted-ids' }, a.eventIds.join(', ')), ' — ',
          h('a', { href: '#events' }, 'see them among the events')) : null,
        a.stillRejected.length ? h('ul', {}, a.stillRejected.map((r) => h('li', {}, `#${r.id}: `, chip(r.diagnosis), ` ${r.detail}`))) : null));
      await load();
    } catch (error) { showError(error); }
  };
  const load = async () => {
    sessionStorage.setItem('rejected-source', picker.value);
    const { rejectedRequests, rejectedCounts } = await gql(`query($s: String!) {
      rejectedRequests(source: $s, first: 100) { nodes { id slot receivedAt diagnosis detail contentType bodyBytes admissible headers { name value } } pageInfo { hasNextPage } }
      rejectedCounts { source slot count } }`, { s: picker.value });
    const mine = rejectedCounts.filter((c) => c.source === picker.value);
    summary.textContent = mine.map((c) => `${c.count} in ${label(c.slot)}`).join(' · ')
      + (rejectedRequests.pageInfo.hasNextPage ? ' (the oldest 100 shown)' : '');
    body.replaceChildren(...rejectedRequests.nodes.map((r) => h('tr', { 'data-id': r.id, 'data-diagnosis': r.diagnosis },
      h('td', { className: 'mono' }, time(r.receivedAt)),
      h('td', {}, label(r.slot)),
      h('td', { className: 'diagnosis' }, chip(r.diagnosis), h('div', { className: 'detail' }, r.detail)),
      h('td', {}, `${r.bodyBytes} B`, r.contentType ? h('div', { className: 'muted mono' }, r.contentType) : null),
      h('td', {}, h('details', {}, h('summary', {}, `${r.headers.length} headers`),
        h('table', { className: 'headers' }, r.headers.map((x) => h('tr', {}, h('td', { className: 'mono' }, x.name), h('td', { className: 'mono' }, x.value)))))),
      h('td', {}, r.admissible
        ? h('button', { type: 'button', className: 'admit-one', onclick: () => admit([r.id]) }, 'Re-verify and admit')
        : h('span', { className: 'muted' }, 'not admissible')))));
    if (!rejectedRequests.nodes.length) body.append(h('tr', {}, h('td', { colspan: 6, className: 'muted', id: 'rejected-empty' }, 'No rejected requests kept for this source.')));
  };
  picker.addEventListener('change', () => { result.replaceChildren(); load().catch(showError); });
  const all = h('button', { type: 'button', className: 'primary', id: 'admit-all', onclick: () => admit(null) }, 'Re-verify and admit all');
  render(h('h1', {}, 'Rejected requests'),
    h('p', { className: 'muted' }, 'Requests that failed signature verification (answered 401/400), kept with why. After fixing the source\'s secrets in the configuration and restarting the worker, re-verify them: only those that verify with the configured secrets are admitted, with their original receipt time.'),
    h('div', { className: 'filters' }, h('label', {}, 'Source', picker), all), summary, result,
    h('table', { id: 'rejected' }, h('thead', {}, h('tr', {}, ['Received (UTC)', 'Slot', 'Diagnosis', 'Body', 'Headers', ''].map((t) => h('th', {}, t)))), body));
  await load();
}

// ---- Dry run ------------------------------------------------------------------------------

// A route filter (CEL) and transform (jq) tried on stored events before they go into the
// config: nothing is written. Each event's input and the transform's output side by side.
const DRY_RUN = `query($source: String!, $filter: String, $transform: String, $last: Int) {
  dryRun(source: $source, filter: $filter, transform: $transform, last: $last) {
    event { id eventId eventType receivedAt } matched filterError input output outputHeaders { name value } transformError } }`;

async function dryRunView() {
  if (!canReplay()) {
    render(h('h1', {}, 'Dry run'), h('p', { className: 'muted', id: 'operators-only' }, 'Only operators and admins can run programs.'));
    return;
  }
  const { sources } = await gql('{ sources { name } }');
  const source = h('select', { name: 'source', id: 'dry-source' }, sources.map((s) => h('option', { value: s.name }, s.name)));
  const filter = h('textarea', { name: 'filter', id: 'dry-filter', rows: 4, spellcheck: false, maxlength: 4096,
    placeholder: 'body.data.object.amount > 1000 && type == "payment_intent.succeeded"' });
  const transform = h('textarea', { name: 'transform', id: 'dry-transform', rows: 4, spellcheck: false, maxlength: 4096,
    placeholder: '{text: "Paid \\(.data.object.amount / 100) \\(.data.object.currency)"}' });
  const last = h('input', { name: 'last', id: 'dry-last', type: 'number', min: 1, max: 100, value: 20 });
  const summary = h('p', { id: 'dry-summary', className: 'muted', role: 'status' });
  const results = h('div', { id: 'dry-results' });
  const form = h('form', { className: 'dry-run', id: 'dry-form' },
    h('div', { className: 'filters' }, h('label', {}, 'Source', source), h('label', {}, 'Newest events', last)),
    h('div', { className: 'programs' },
      h('label', {}, 'Filter (CEL over body, headers, source, type; empty: every event)', filter),
      h('label', {}, 'Transform (jq over the body; empty: the body as is)', transform)),
    h('button', { type: 'submit', className: 'primary', id: 'dry-submit' }, 'Run'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    showError(null);
    results.setAttribute('aria-busy', 'true');
    try {
      const { dryRun } = await gql(DRY_RUN, { source: source.value, filter: filter.value || null,
        transform: transform.value || null, last: Number(last.value) || 20 });
      const matched = dryRun.filter((r) => r.matched).length;
      summary.textContent = `${matched} of ${dryRun.length} events matched.`;
      results.replaceChildren(...dryRun.map((r) => h('div', { className: `dry-result ${r.matched ? 'matched' : 'unmatched'}`, 'data-event-id': r.event.eventId },
        h('h3', {}, r.matched ? chip('MATCHED') : chip('NOT_MATCHED'), ' ', h('a', { href: `#event/${encodeURIComponent(r.event.id)}` }, r.event.eventId),
          ' ', h('span', { className: 'muted' }, `${r.event.eventType || ''} · ${time(r.event.receivedAt)} UTC`)),
        r.filterError ? h('p', { className: 'filter-error warn' }, `Filter: ${r.filterError}`) : null,
        h('div', { className: 'side-by-side' },
          h('div', {}, h('h4', {}, 'Input'), h('pre', { className: 'input mono' }, pretty(r.input || ''))),
          h('div', {}, h('h4', {}, 'Output'),
            r.transformError ? h('p', { className: 'transform-error warn' }, r.transformError)
              : r.output !== null ? [h('pre', { className: 'output mono' }, pretty(r.output, 'application/json')),
                r.outputHeaders.length ? h('table', { className: 'headers' }, r.outputHeaders.map((x) => h('tr', {}, h('td', { className: 'mono' }, x.name), h('td', { className: 'mono' }, x.value)))) : null]
                : h('p', { className: 'muted' }, r.matched ? 'sent as is' : 'not delivered by this route'))))));
      if (!dryRun.length) results.append(h('p', { className: 'muted' }, 'No stored events of this source.'));
    } catch (error) { showError(error); results.replaceChildren(); summary.textContent = ''; }
    results.setAttribute('aria-busy', 'false');
  });
  render(h('h1', {}, 'Dry run'),
    h('p', { className: 'muted' }, 'Try a route\'s filter and transform on stored events before putting them in the configuration. Nothing is sent or written.'),
    form, summary, results);
}

// ---- Account --------------------------------------------------------------------------------

async function accountView() {
  const { myAccounts } = await gql('{ myAccounts { id provider email createdAt } }');
  const unlink = (id) => async () => {
    try { await gql('mutation($id: ID!) { unlinkAccount(id: $id) { id } }', { id }); await accountView(); } catch (error) { showError(error); }
  };
  const link = (provider) => async () => {
    const response = await fetch(`/auth/link?provider=${provider}`, { method: 'POST', credentials: 'same-origin', headers: { 'x-csrf-token': session.csrf } });
    if (!response.ok) { showError(`linking failed: HTTP ${response.status}`); return; }
    location.assign((await response.json()).url);
  };
  render(h('h1', {}, 'Your sign-in methods'),
    h('table', {}, h('thead', {}, h('tr', {}, ['Provider', 'Email', 'Linked (UTC)', ''].map((t) => h('th', {}, t)))),
      h('tbody', {}, myAccounts.map((a) => h('tr', {}, h('td', {}, a.provider), h('td', {}, a.email || ''), h('td', { className: 'mono' }, time(a.createdAt)),
        h('td', {}, myAccounts.length > 1 ? h('button', { type: 'button', className: 'danger', onclick: unlink(a.id) }, 'Unlink') : h('span', { className: 'muted' }, 'last method')))))),
    h('h2', {}, 'Link another'), session.logins.map((l) => h('button', { type: 'button', className: 'link-provider', onclick: link(l.provider) }, l.label)));
}

// ---- Shell --------------------------------------------------------------------------------

async function route() {
  clearInterval(refreshTimer);
  showError(null);
  const hash = location.hash || '#events';
  for (const link of document.querySelectorAll('#nav a')) link.classList.toggle('active', hash.startsWith(link.getAttribute('href')));
  try {
    if (hash.startsWith('#event/')) await eventView(decodeURIComponent(hash.slice(7)));
    else if (hash === '#overview') await overviewView();
    else if (hash === '#dead-letters') await deadLettersView();
    else if (hash === '#destinations') await destinationsView();
    else if (hash === '#audit') await auditView();
    else if (hash === '#rejected' && session.role === 'admin') await rejectedView();
    else if (hash === '#account') await accountView();
    else if (hash === '#dry-run') await dryRunView();
    else if (hash === '#tokens') await tokensView(); // admin.js
    else if (hash === '#users') await usersView(); // admin.js
    else if (hash === '#backfill') await backfillView(); // admin.js
    else await eventsView();
    await refreshCounts();
  } catch (error) { showError(error); }
}

async function start() {
  const me = await (await fetch('/auth/session', { credentials: 'same-origin' })).json();
  if (!me.authenticated) {
    const returnTo = encodeURIComponent(location.pathname + location.hash);
    // "Use another account": the provider is told to ask which account rather than sign in
    // the one it has a session for (after a refusal, or to switch).
    render(h('div', { className: 'signin' }, h('h1', {}, 'Inlet console'),
      me.logins.length ? me.logins.map((login, n) => h('p', {}, h('a', { id: n === 0 ? 'signin' : null, className: 'signin-link',
        href: `${login.url}?return_to=${returnTo}` }, login.label),
      h('br'), h('a', { id: n === 0 ? 'signin-another' : null, className: 'another-account', href: `${login.anotherUrl}&return_to=${returnTo}` }, 'Use another account')))
        : h('p', {}, 'No sign-in provider is configured ([console.oidc] or [console.github]). Use the API with a token.')));
    return;
  }
  Object.assign(session, { csrf: me.csrfToken, role: me.role, actor: me.actor, logins: me.logins || [] });
  $('user').replaceChildren(h('a', { href: '#account' }, `${me.actor} (${me.role})`));
  $('nav').hidden = false;
  for (const link of document.querySelectorAll('#nav a.admin-only')) link.hidden = me.role !== 'admin';
  const switchAccount = $('switch-account');
  switchAccount.hidden = !session.logins.length;
  switchAccount.addEventListener('click', async () => {
    // Sign out here, then sign in with the provider told to ask which account (one provider:
    // straight there; several: the sign-in page offers each).
    await fetch('/auth/logout', { method: 'POST', credentials: 'same-origin', headers: { 'x-csrf-token': session.csrf } });
    const [only] = session.logins;
    if (session.logins.length === 1) location.assign(`${only.anotherUrl}&return_to=${encodeURIComponent(location.pathname + location.hash)}`);
    else location.reload();
  });
  $('nav-rejected').hidden = session.role !== 'admin';
  const signout = $('signout');
  signout.hidden = false;
  signout.addEventListener('click', async () => {
    await fetch('/auth/logout', { method: 'POST', credentials: 'same-origin', headers: { 'x-csrf-token': session.csrf } });
    location.assign('/console');
  });
  window.addEventListener('hashchange', route);
  await route();
  setInterval(() => refreshCounts().catch(() => {}), 5000);
}

// After every deferred script has run (DOMContentLoaded waits for them): app.js runs first, and
// the first await in start() could otherwise route to an admin view (#tokens, loaded directly or
// reloaded) before admin.js, still downloading, has defined it ("tokensView is not defined").
document.addEventListener('DOMContentLoaded', () => start().catch(showError));
