// Inlet console, admin views: API tokens (list, create — the value shown once —, revoke),
// users with their roles, and provider backfill. Loaded after app.js, whose helpers (h, gql,
// render, confirmDialog, time, label, showError, session) it uses; app.js routes `#tokens`,
// `#users` and `#backfill` here. The API
// refuses these calls to anyone but an admin; the console does not offer them to others.
'use strict';

const isAdmin = () => session.role === 'admin';

// What a non-admin sees at an admin view's address (the API would refuse the calls anyway).
function adminOnly(title) {
  render(h('h1', {}, title), h('p', { className: 'muted', id: 'admin-only' }, 'Only admins see this page.'));
}

// ---- API tokens -----------------------------------------------------------------------------

// A created token's value, shown once: copied or not, it is gone from the page at "Done" or
// when the view is left, and the API never returns it again (only its hash is stored).
function newTokenCard(created) {
  const value = h('code', { id: 'new-token-value', className: 'mono' }, created.token);
  const copy = h('button', { type: 'button', id: 'copy-token', onclick: async () => {
    try {
      await navigator.clipboard.writeText(created.token);
      copy.textContent = 'Copied';
    } catch (error) {
      // No clipboard (an insecure origin, a refused permission): select it for a manual copy.
      getSelection().selectAllChildren(value);
      copy.textContent = 'Select and copy by hand';
    }
  } }, 'Copy');
  const card = h('div', { className: 'card new-token', id: 'new-token', role: 'status' },
    h('h2', {}, `Token ${created.apiToken.name} (${label(created.apiToken.role)})`),
    h('p', { className: 'warn' }, 'Copy it now: it is shown this once. Inlet keeps only its hash and cannot show it again.'),
    h('p', { className: 'token-line' }, value, ' ', copy),
    h('p', { className: 'muted' }, 'Use it as ', h('code', { className: 'mono' }, 'Authorization: Bearer <token>'), ' on /graphql.'),
    h('button', { type: 'button', id: 'token-done', onclick: () => card.remove() }, 'Done'));
  return card;
}

async function tokensView() {
  if (!isAdmin()) { adminOnly('API tokens'); return; }
  const created = h('div', { id: 'new-token-slot' });
  const body = h('tbody', { id: 'tokens-body' });
  const load = async () => {
    const { apiTokens } = await gql('{ apiTokens { id name role createdBy createdAt lastUsed revokedAt } }');
    // Newest first: the one just created is at the top.
    const rows = apiTokens.slice().reverse().map((t) => h('tr', { 'data-token-name': t.name, className: t.revokedAt ? 'revoked' : null },
      h('td', {}, t.name), h('td', {}, label(t.role)), h('td', {}, t.createdBy),
      h('td', { className: 'mono' }, time(t.createdAt)), h('td', { className: 'mono' }, t.lastUsed ? time(t.lastUsed) : h('span', { className: 'muted' }, 'never')),
      h('td', { className: 'token-state' }, t.revokedAt ? [chip('REVOKED'), h('span', { className: 'mono muted' }, time(t.revokedAt))] : chip('ACTIVE')),
      h('td', { className: 'actions' }, t.revokedAt ? '' : revokeButton(t, load))));
    body.replaceChildren(...rows);
    if (!rows.length) body.append(h('tr', {}, h('td', { colspan: 7, className: 'muted' }, 'No API tokens yet.')));
  };
  const name = h('input', { name: 'name', id: 'token-name', required: true, maxlength: 64, pattern: '[A-Za-z0-9._\\-]{1,64}',
    placeholder: 'ci-deploy', autocomplete: 'off' });
  const role = h('select', { name: 'role', id: 'token-role' }, ['VIEWER', 'OPERATOR', 'ADMIN'].map((r) => h('option', { value: r }, label(r))));
  const form = h('form', { className: 'filters', id: 'token-form' },
    h('label', {}, 'Name (letters, digits, . _ -)', name), h('label', {}, 'Role', role),
    h('button', { type: 'submit', className: 'primary' }, 'Create token'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      const { createApiToken } = await gql('mutation($name: String!, $role: RoleName!) { createApiToken(name: $name, role: $role) { token apiToken { id name role } } }',
        { name: name.value.trim(), role: role.value });
      created.replaceChildren(newTokenCard(createApiToken));
      form.reset();
      await load();
    } catch (error) { showError(error); }
  });
  render(h('h1', {}, 'API tokens'),
    h('p', { className: 'muted' }, 'Tokens call the API with Authorization: Bearer. Viewers read, operators also replay, admins also manage tokens and see users. Every creation and revocation goes to the audit log.'),
    form, created,
    h('table', { id: 'tokens' }, h('thead', {}, h('tr', {}, ['Name', 'Role', 'Created by', 'Created (UTC)', 'Last used (UTC)', 'State', ''].map((t) => h('th', {}, t)))), body));
  await load();
}

// Revokes after a confirmation: callers using the token are refused from then on.
function revokeButton(token, after) {
  return h('button', { type: 'button', className: 'danger revoke', 'data-token': token.id, onclick: async (event) => {
    const button = event.currentTarget;
    button.disabled = true;
    try {
      const confirmed = await confirmDialog({ id: 'revoke-dialog', title: `Revoke token ${token.name}?`, confirm: 'Revoke', danger: true,
        content: [h('p', {}, `Every caller using ${token.name} (${label(token.role)}) is refused from now on (401). This cannot be undone: make a new token to give access again. Your name and the time go to the audit log.`)] });
      if (!confirmed) { button.disabled = false; return; }
      await gql('mutation($id: ID!) { revokeApiToken(id: $id) { id revokedAt } }', { id: token.id });
      await after();
    } catch (error) { button.disabled = false; showError(error); }
  } }, 'Revoke');
}

// ---- Users ----------------------------------------------------------------------------------

async function usersView() {
  if (!isAdmin()) { adminOnly('Users'); return; }
  const { users } = await gql('{ users { id email name role createdAt lastSignInAt liveSessions accounts { provider email createdAt } } }');
  render(h('h1', {}, 'Users'),
    h('p', { className: 'muted' }, 'Everyone who has signed in to this console. Roles come from [console.access] (or an allowed GitHub organisation) at each sign-in, so a role is changed there; shown is the role of the user\'s last sign-in, which their sessions carry.'),
    h('table', { id: 'users' }, h('thead', {}, h('tr', {}, ['Email', 'Name', 'Role', 'Sign-in methods', 'First sign-in (UTC)', 'Last sign-in (UTC)', 'Signed in now'].map((t) => h('th', {}, t)))),
      h('tbody', {}, users.length ? users.map((u) => h('tr', { 'data-user': u.email },
        h('td', {}, u.email), h('td', {}, u.name || ''), h('td', { className: 'user-role' }, label(u.role)),
        h('td', { className: 'user-accounts' }, u.accounts.map((a) => h('div', {}, a.provider, a.email && a.email !== u.email ? h('span', { className: 'muted' }, ` (${a.email})`) : null))),
        h('td', { className: 'mono' }, time(u.createdAt)), h('td', { className: 'mono' }, u.lastSignInAt ? time(u.lastSignInAt) : ''),
        h('td', {}, u.liveSessions ? `${u.liveSessions} session${u.liveSessions === 1 ? '' : 's'}` : h('span', { className: 'muted' }, 'no'))))
        : h('tr', {}, h('td', { colspan: 7, className: 'muted' }, 'No one has signed in yet.')))));
}

// ---- Backfill -------------------------------------------------------------------------------

// Asks a source's provider (a Stripe or GitHub source with a [[backfill]]) for what it sent
// since a time and recovers what is not stored; a dry run (the default) only counts. A real
// run asks for a confirmation and goes to the audit log. docs/backfill.md says what each kind
// can and cannot recover.
async function backfillView() {
  if (!isAdmin()) { adminOnly('Backfill'); return; }
  const { sources } = await gql('{ sources { name kind backfill } }');
  const ready = sources.filter((s) => s.backfill);
  const intro = h('p', { className: 'muted' }, 'After an outage: Stripe events listed by its events API and not stored are published into the pipeline; GitHub deliveries that never got a 2xx and are not stored are redelivered by GitHub. Other kinds have no such API.');
  if (!ready.length) {
    render(h('h1', {}, 'Backfill'), intro, h('p', { className: 'muted', id: 'backfill-none' }, 'No source has a [[backfill]] in the worker\'s configuration.'));
    return;
  }
  const picker = h('select', { id: 'backfill-source', name: 'source' }, ready.map((s) => h('option', { value: s.name }, `${s.name} (${s.kind})`)));
  const anHourAgo = new Date(Date.now() - 3600 * 1000).toISOString().replace(/\.\d+Z$/, 'Z');
  const since = h('input', { id: 'backfill-since', name: 'since', required: true, size: 22, value: anHourAgo, autocomplete: 'off' });
  const dry = h('input', { type: 'checkbox', id: 'backfill-dry', name: 'dry', checked: true });
  const run = h('button', { type: 'submit', className: 'primary', id: 'backfill-run' }, 'Run');
  const result = h('div', { id: 'backfill-result' });
  const form = h('form', { className: 'filters', id: 'backfill-form' },
    h('label', {}, 'Source', picker), h('label', {}, 'Since (RFC 3339)', since), h('label', {}, dry, ' Dry run (only count)'), run);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    run.disabled = true;
    try {
      if (!dry.checked) {
        const confirmed = await confirmDialog({ id: 'backfill-dialog', title: `Backfill ${picker.value} since ${since.value.trim()}?`, confirm: 'Backfill',
          content: [h('p', {}, 'What is not stored is recovered now (Stripe: published; GitHub: redelivery requested). Your name, the time and the counts go to the audit log.')] });
        if (!confirmed) return;
      }
      const { backfill: b } = await gql(`mutation($s: String!, $since: DateTime!, $dry: Boolean!) { backfill(source: $s, since: $since, dryRun: $dry) {
        listed alreadyStored recovered failed complete dryRun } }`, { s: picker.value, since: since.value.trim(), dry: dry.checked });
      result.replaceChildren(h('div', { className: 'card', role: 'status' },
        h('p', { id: 'backfill-summary' }, `${b.dryRun ? 'Dry run: ' : ''}${b.listed} listed, ${b.alreadyStored} already stored, ${b.recovered} ${b.dryRun ? 'to recover' : 'recovered'}, ${b.failed} failed.`),
        b.complete ? null : h('p', { className: 'warn' }, 'Stopped at max_pages before the end of the provider\'s list: run it again.')));
    } catch (error) { showError(error); } finally { run.disabled = false; }
  });
  render(h('h1', {}, 'Backfill'), intro, form, result);
}
