// A real OAuth 2.1 / OIDC identity provider for the e2e suite: npm `oidc-provider` 9.x.
//
//   node e2e/idp/provider.mjs [--port 9600] [--key-file PATH] [--access-token-ttl 600]
//                             [--tls-cert PEM --tls-key PEM]   (serve https: a company issuer)
//
// Prints `idp: issuer http://127.0.0.1:PORT` when ready (port 0 picks a free one).
//
// - Access tokens are JWTs (RS256) for the requested resource (RFC 8707 resource indicators):
//   `aud` = the resource, scope `mcp`, plus a `groups` claim.
// - Users (login form at /interaction/<uid>, POST login/password):
//     alice/alice -> groups [finance], bob/bob -> [engineering], carol/carol -> [],
//     dave/dave -> [engineering, contractors].
//   An optional one-time code (field `otp`, the code is 000000) makes the sign-in multi-factor:
//   the user's access tokens then carry `amr: ["pwd", "otp", "mfa"]`, otherwise `amr: ["pwd"]`
//   (RFC 8176; an access-conditions test tells the two apart). A wrong code fails the login.
// - Client-credentials clients: ci-bot/ci-bot-secret -> [engineering],
//   reader-bot/reader-bot-secret -> [finance].
// - Dynamic client registration is open; PKCE is required; consent is implied (first party).
// - --key-file: the signing key as a private JWK; created if missing. Tests read it to forge
//   tokens the portal must still reject (expired, wrong audience, ...).
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '9600' },
    host: { type: 'string', default: '127.0.0.1' },
    'key-file': { type: 'string' },
    'access-token-ttl': { type: 'string', default: '600' },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
  },
});
const ttl = Number(args['access-token-ttl']);

const ACCOUNTS = {
  alice: { password: 'alice', groups: ['finance'] },
  bob: { password: 'bob', groups: ['engineering'] },
  carol: { password: 'carol', groups: [] },
  dave: { password: 'dave', groups: ['engineering', 'contractors'] },
};
const CLIENTS = {
  'ci-bot': { secret: 'ci-bot-secret', groups: ['engineering'] },
  'reader-bot': { secret: 'reader-bot-secret', groups: ['finance'] },
};

function signingKey() {
  const file = args['key-file'];
  if (file && fs.existsSync(file)) return JSON.parse(fs.readFileSync(file, 'utf8'));
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: `idp-${crypto.randomBytes(4).toString('hex')}`, alg: 'RS256', use: 'sig' };
  if (file) fs.writeFileSync(file, JSON.stringify(jwk), { mode: 0o600 });
  return jwk;
}

// Listen first: the issuer URL needs the port.
let handler = (_req, res) => { res.statusCode = 503; res.end(); };
const tls = args['tls-cert'] && args['tls-key'];
const server = tls
  ? https.createServer({ cert: fs.readFileSync(args['tls-cert']), key: fs.readFileSync(args['tls-key']) }, (req, res) => handler(req, res))
  : http.createServer((req, res) => handler(req, res));
await new Promise((resolve) => server.listen(Number(args.port), args.host, resolve));
const issuer = `${tls ? 'https' : 'http'}://${args.host}:${server.address().port}`;

const resourceScopes = (resource) => (Array.isArray(resource) ? resource : resource ? [resource] : []);

const provider = new Provider(issuer, {
  clients: Object.entries(CLIENTS).map(([id, c]) => ({
    client_id: id,
    client_secret: c.secret,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_basic',
  })),
  jwks: { keys: [signingKey()] },
  cookies: { keys: ['portcullis-e2e-cookie-key'] },
  scopes: ['openid', 'offline_access', 'mcp'],
  claims: { openid: ['sub'], groups: ['groups'] },
  pkce: { required: () => true },
  ttl: { AccessToken: ttl, ClientCredentials: ttl, AuthorizationCode: 60, Interaction: 600, Session: 3600, Grant: 3600, IdToken: 600 },
  async findAccount(_ctx, id) {
    if (!ACCOUNTS[id]) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, groups: ACCOUNTS[id].groups }) };
  },
  async extraTokenClaims(ctx, token) {
    if (token.accountId && ACCOUNTS[token.accountId]) {
      // How the user signed in (the login's amr), from the code or refresh token being redeemed.
      const source = ctx?.oidc?.entities?.AuthorizationCode ?? ctx?.oidc?.entities?.RefreshToken;
      return { groups: ACCOUNTS[token.accountId].groups, ...(source?.amr ? { amr: source.amr } : {}) };
    }
    if (token.clientId && CLIENTS[token.clientId] && !token.accountId) return { groups: CLIENTS[token.clientId].groups };
    return undefined;
  },
  // First-party IdP: consent is implied for every requested scope and resource. (Native
  // clients still pass one consent interaction, which the interaction handler approves.)
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId;
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid offline_access mcp');
    grant.addOIDCClaims(['sub', 'groups']);
    for (const r of resourceScopes(ctx.oidc.params.resource)) grant.addResourceScope(r, 'mcp');
    await grant.save();
    return grant;
  },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  features: {
    devInteractions: { enabled: false },
    registration: { enabled: true },
    clientCredentials: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, _client, oneOf) => oneOf ?? undefined,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resourceIndicator) => ({
        scope: 'mcp',
        audience: resourceIndicator,
        accessTokenTTL: ttl,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  clientBasedCORS: () => true,
});

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (uid, error = '') => `<!doctype html><title>Sign in</title>
<form method="post" action="/interaction/${esc(uid)}/login">
${error ? `<p class="error">${esc(error)}</p>` : ''}
<input name="login" autofocus> <input name="password" type="password"> <input name="otp" placeholder="one-time code (optional)"> <button type="submit">Sign in</button>
</form>`;

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 65536) throw new Error('body too large');
  }
  return new URLSearchParams(body);
}

const callback = provider.callback();
handler = async (req, res) => {
  const m = req.url.match(/^\/interaction\/([A-Za-z0-9_-]+)(\/login)?(?:\?|$)/);
  if (!m) return callback(req, res);
  try {
    const details = await provider.interactionDetails(req, res);
    if (req.method === 'POST' && m[2]) {
      const form = await readForm(req);
      const account = ACCOUNTS[form.get('login')];
      if (!account || account.password !== form.get('password')) {
        res.writeHead(401, { 'content-type': 'text/html' });
        return res.end(page(details.uid, 'wrong login or password'));
      }
      const otp = form.get('otp') ?? '';
      if (otp !== '' && otp !== '000000') {
        res.writeHead(401, { 'content-type': 'text/html' });
        return res.end(page(details.uid, 'wrong one-time code'));
      }
      const amr = otp ? ['pwd', 'otp', 'mfa'] : ['pwd'];
      return await provider.interactionFinished(req, res, { login: { accountId: form.get('login'), amr } }, { mergeWithLastSubmission: false });
    }
    if (details.prompt.name === 'login') {
      res.writeHead(200, { 'content-type': 'text/html' });
      return res.end(page(details.uid));
    }
    // Consent (not expected: loadExistingGrant grants everything): approve.
    const grant = new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    const d = details.prompt.details;
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
    if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(d.missingResourceScopes ?? {})) grant.addResourceScope(indicator, scopes.join(' '));
    const grantId = await grant.save();
    return await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  } catch (e) {
    res.writeHead(400, { 'content-type': 'text/plain' });
    res.end(`interaction failed: ${e.message}`);
  }
};

provider.on('server_error', (_ctx, e) => console.error('idp server_error', e));
console.log(`idp: issuer ${issuer}`);
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)));
