// A real OpenID Provider (oidc-provider, OpenID Certified) on loopback, for Inlet's login
// tests and for local development (scripts/run.sh). Never for production: it listens on
// 127.0.0.1 only, and its login page signs in whoever types an email address.
//
//   node provider.mjs --redirect-uri http://127.0.0.1:8090/auth/callback [--port 0]
//        [--client-id inlet] [--client-secret dev-secret] [--test-controls]
//
// Prints one JSON line on stdout once listening: {"issuer": "http://127.0.0.1:PORT"}.
// With --test-controls, `POST /__test/tamper?claim=aud|nonce|iss` makes the next token
// response carry an ID token whose claim is wrong but whose signature is valid (re-signed with
// the provider's own key): the "hostile OP" the relying party must reject.
import http from 'node:http';
import { parseArgs } from 'node:util';
import crypto from 'node:crypto';
import * as jose from 'jose';
import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    'redirect-uri': { type: 'string', multiple: true },
    'client-id': { type: 'string', default: 'inlet' },
    'client-secret': { type: 'string', default: 'inlet-dev-client-secret' },
    'test-controls': { type: 'boolean', default: false },
  },
});
if (!args['redirect-uri'] || args['redirect-uri'].length === 0) {
  console.error('provider.mjs: --redirect-uri is required');
  process.exit(64);
}

const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
const jwk = { ...(await jose.exportJWK(privateKey)), kid: 'k1', alg: 'RS256', use: 'sig' };

let tamper = null;
let handler = (_req, res) => { res.writeHead(503); res.end(); };
const server = http.createServer((req, res) => handler(req, res));
await new Promise((resolve) => server.listen(Number(args.port), '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: args['client-id'],
    client_secret: args['client-secret'],
    redirect_uris: args['redirect-uri'],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  pkce: { required: () => true },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  findAccount: async (_ctx, id) => ({
    accountId: id,
    claims: async () => ({ sub: id, email: id, email_verified: true, name: id.split('@')[0] }),
  }),
  features: { devInteractions: { enabled: false } },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  jwks: { keys: [jwk] },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
});

// The hostile variant: rewrite one claim of the next ID token and sign it again.
provider.use(async (ctx, next) => {
  await next();
  if (ctx.path === '/token' && tamper && ctx.body && ctx.body.id_token) {
    const claims = jose.decodeJwt(ctx.body.id_token);
    if (tamper === 'aud') claims.aud = 'someone-else';
    if (tamper === 'nonce') claims.nonce = 'not-the-nonce-you-sent';
    if (tamper === 'iss') claims.iss = 'http://127.0.0.1:1';
    ctx.body.id_token = await new jose.SignJWT(claims)
      .setProtectedHeader({ alg: 'RS256', kid: 'k1' })
      .sign(privateKey);
    tamper = null;
  }
});

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

async function interaction(req, res, uid, action) {
  if (action === 'login' && req.method === 'POST') {
    const body = await new Promise((resolve) => {
      let data = '';
      req.on('data', (chunk) => { data += chunk; });
      req.on('end', () => resolve(new URLSearchParams(data)));
    });
    const email = (body.get('email') || '').trim().toLowerCase();
    if (!email.includes('@')) {
      res.writeHead(400, { 'content-type': 'text/plain' });
      res.end('an email address is required');
      return;
    }
    const details = await provider.interactionDetails(req, res);
    const grant = new provider.Grant({ accountId: email, clientId: details.params.client_id });
    grant.addOIDCScope(details.params.scope);
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, { login: { accountId: email }, consent: { grantId } },
      { mergeWithLastSubmission: false });
    return;
  }
  const details = await provider.interactionDetails(req, res);
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
  res.end(`<!doctype html><html><head><title>Inlet development sign-in</title></head><body>
<h1>Inlet development identity provider</h1>
<p>Local development only: anyone may sign in as any email address.</p>
<form method="post" action="/interaction/${escape(details.uid)}/login">
<label>Email <input name="email" type="email" autofocus required></label>
<button type="submit">Sign in</button></form></body></html>`);
}

const providerCallback = provider.callback();
handler = async (req, res) => {
  try {
    const url = new URL(req.url, issuer);
    const match = url.pathname.match(/^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login))?$/);
    if (match) {
      await interaction(req, res, match[1], match[2]);
      return;
    }
    if (args['test-controls'] && url.pathname === '/__test/tamper' && req.method === 'POST') {
      tamper = url.searchParams.get('claim');
      res.writeHead(204);
      res.end();
      return;
    }
    providerCallback(req, res);
  } catch (error) {
    res.writeHead(500, { 'content-type': 'text/plain' });
    res.end(`provider error: ${error.message}`);
  }
};

// Whoever started us may stop reading after this line.
process.stdout.on('error', () => {});
console.log(JSON.stringify({ issuer }));
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(0));
