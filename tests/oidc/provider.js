// A real OpenID Provider for the gateway's tests: panva's certified `oidc-provider`, on
// loopback, with an in-memory account table, a sign-in page of its own and a few control
// endpoints for the tests under /_test/.
//
//   node provider.js SETTINGS.json
//
// SETTINGS (written by tests/oidc/support.py):
//   port                   the port on 127.0.0.1; the issuer is http://127.0.0.1:<port>
//   accounts               [{login, sub, email, email_verified, name, groups}]
//   clients                client metadata known at start (more: PUT /_test/clients)
//   conformIdTokenClaims   true: scope claims only at userinfo when an access token is issued
//                          (oidc-provider's default); false (ours): in the ID token as well
//   rotateRefreshToken     true: every refresh_token grant returns a new refresh token and
//                          the old one is spent (a second use revokes the whole grant)
//   ttl                    seconds per model (AccessToken, IdToken, RefreshToken, Session...)
//
// The sign-in page: GET /interaction/:uid shows a form (username only, no password); POST
// .../login signs that account in, POST .../abort answers the client `access_denied`.
// Consent is granted at once (loadExistingGrant): the gateway is a first-party client.
//
// Control endpoints (tests only; they answer JSON):
//   PUT  /_test/clients            register or replace a client (its metadata as the body)
//   POST /_test/disable?user=L     the account is gone: refresh_token grants fail with
//                                  invalid_grant, its grants and sessions are dropped, no
//                                  back-channel logout is sent (a disabled user, not a logout)
//   POST /_test/enable?user=L
//   POST /_test/claims?user=L      change L's claims from now on (JSON body: {groups: [...]},
//                                  {email: ...}); login and sub stay
//   POST /_test/logout?user=L      the provider ends every session of L: a back-channel
//                                  logout token to each client that has a
//                                  backchannel_logout_uri, then grants and sessions dropped
//   POST /_test/delay?ms=N         every later provider request waits N ms first (0: none)
//   POST /_test/drop-reused?path=P the next request to P (default /token) that arrives on
//                                  a connection which already served one is dropped unanswered
//                                  (an idle keep-alive connection closed as it was reused)
//   GET  /_test/events             what happened: grants, errors, back-channel deliveries
//   GET  /_test/sessions?user=L    the live sessions of L and their sid per client

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';

import Provider from 'oidc-provider';

const settings = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const port = Number(settings.port);
const issuer = `http://127.0.0.1:${port}`;
const accounts = settings.accounts ?? [];
const disabled = new Set();
const events = [];
let delayMs = 0;
let dropReused = null; // a path: its next request on a reused connection is dropped

function record(event) {
  const entry = { at: Date.now() / 1000, ...event };
  events.push(entry);
  process.stdout.write(`${JSON.stringify(entry)}\n`);
}

// -- storage: one Map, so that the control endpoints can find a user's sessions and grants --

const store = new Map(); // `${model}:${id}` -> { payload, expiresAt }

function live(entry) {
  return entry !== undefined && entry.expiresAt > Date.now();
}

function entries(model) {
  const out = [];
  for (const [key, entry] of store) {
    if (key.startsWith(`${model}:`) && live(entry)) out.push([key, entry.payload]);
  }
  return out;
}

function dropWhere(predicate) {
  let dropped = 0;
  for (const [key, entry] of [...store]) {
    if (predicate(key, entry.payload)) {
      store.delete(key);
      dropped += 1;
    }
  }
  return dropped;
}

class MapAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const expiresAt = expiresIn ? Date.now() + expiresIn * 1000 : Number.POSITIVE_INFINITY;
    store.set(this.key(id), { payload: structuredClone(payload), expiresAt });
  }

  async find(id) {
    const entry = store.get(this.key(id));
    return live(entry) ? structuredClone(entry.payload) : undefined;
  }

  async findByUid(uid) {
    const found = entries(this.model).find(([, payload]) => payload.uid === uid);
    return found ? structuredClone(found[1]) : undefined;
  }

  async findByUserCode(userCode) {
    const found = entries(this.model).find(([, payload]) => payload.userCode === userCode);
    return found ? structuredClone(found[1]) : undefined;
  }

  async consume(id) {
    const entry = store.get(this.key(id));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    dropWhere((key, payload) => key.startsWith(`${this.model}:`) && payload.grantId === grantId);
  }
}

// -- accounts -----------------------------------------------------------------------------

function accountBySub(sub) {
  return accounts.find((account) => account.sub === sub);
}

function accountByLogin(login) {
  return accounts.find((account) => account.login === login);
}

async function findAccount(ctx, sub) {
  const account = accountBySub(sub);
  if (!account || disabled.has(account.login)) return undefined;
  return {
    accountId: sub,
    async claims() {
      const { login, ...claims } = account;
      return claims;
    },
  };
}

// -- the provider -------------------------------------------------------------------------

function signingKey() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return {
    ...privateKey.export({ format: 'jwk' }),
    kid: crypto.randomBytes(8).toString('hex'),
    use: 'sig',
    alg: 'RS256',
  };
}

function page(title, body) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>${title}</title></head>
<body><h1>${title}</h1>${body}</body></html>`;
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const provider = new Provider(issuer, {
  adapter: MapAdapter,
  clients: settings.clients ?? [],
  findAccount,
  jwks: { keys: [signingKey()] },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
  },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
  conformIdTokenClaims: settings.conformIdTokenClaims ?? false,
  features: {
    devInteractions: { enabled: false },
    backchannelLogout: { enabled: true },
    revocation: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      async logoutSource(ctx, form) {
        // the xsrf form oidc-provider gives, with a visible "yes" button inside it
        const yes = '<input type="hidden" name="logout" value="yes"/>'
          + '<button type="submit" id="logout-yes">Yes, sign me out</button></form>';
        ctx.body = page('Sign out of the test provider?', form.replace('</form>', yes));
      },
      async postLogoutSuccessSource(ctx) {
        ctx.body = page('Signed out of the test provider', '<p id="signed-out">Signed out.</p>');
      },
    },
  },
  interactions: {
    url(ctx, interaction) {
      return `/interaction/${interaction.uid}`;
    },
  },
  // the gateway is a first-party client: consent is granted without asking
  async loadExistingGrant(ctx) {
    const clientId = ctx.oidc.client.clientId;
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(clientId);
    if (grantId) {
      const grant = await ctx.oidc.provider.Grant.find(grantId);
      if (grant) return grant;
    }
    const grant = new ctx.oidc.provider.Grant({ clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid offline_access email profile groups');
    await grant.save();
    return grant;
  },
  // a refresh token for every client allowed the grant, offline_access asked for or not
  async issueRefreshToken(ctx, client) {
    return client.grantTypeAllowed('refresh_token');
  },
  rotateRefreshToken: settings.rotateRefreshToken ?? true,
  // oidc-provider refuses to call special-use addresses (SSRF protection) with a dispatcher
  // of its own; every party here is on loopback, so its outgoing calls (the back-channel
  // logout tokens) go through the plain fetch
  fetch(url, options) {
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  },
  ttl: {
    AccessToken: 600,
    AuthorizationCode: 60,
    ClientCredentials: 600,
    Grant: 3600,
    IdToken: 600,
    Interaction: 600,
    RefreshToken: 86400,
    Session: 3600,
    ...(settings.ttl ?? {}),
  },
  renderError(ctx, out) {
    ctx.type = 'html';
    const details = Object.entries(out)
      .map(([k, v]) => `<p><b>${escapeHtml(k)}</b>: <span class="${escapeHtml(k)}">${escapeHtml(v)}</span></p>`)
      .join('');
    ctx.body = page('Test provider error', details);
  },
});

provider.on('grant.success', (ctx) => record({
  event: 'grant.success',
  grant_type: ctx.oidc.params.grant_type,
  client: ctx.oidc.client?.clientId,
  sub: ctx.oidc.account?.accountId,
}));
provider.on('grant.error', (ctx, err) => record({
  event: 'grant.error',
  grant_type: ctx.oidc.params?.grant_type,
  error: err.error ?? err.message,
  description: err.error_description,
}));
provider.on('authorization.error', (ctx, err) => record({
  event: 'authorization.error', error: err.error ?? err.message, description: err.error_description,
}));
provider.on('end_session.success', (ctx) => record({ event: 'end_session.success', client: ctx.oidc.client?.clientId }));
provider.on('end_session.error', (ctx, err) => record({ event: 'end_session.error', error: err.error ?? err.message, description: err.error_description }));
provider.on('backchannel.success', (ctx, client, sub, sid) => record({
  event: 'backchannel.success', client: client.clientId, sub, sid,
}));
provider.on('backchannel.error', (ctx, err, client, sub, sid) => record({
  event: 'backchannel.error', client: client.clientId, sub, sid, error: String(err.message),
}));
provider.on('server_error', (ctx, err) => record({ event: 'server_error', error: String(err.stack) }));

// -- the sign-in page ---------------------------------------------------------------------

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

async function readForm(req) {
  return new URLSearchParams(await readBody(req));
}

function send(res, status, type, body) {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

function loginForm(uid, clientId, error) {
  return page('Test provider sign-in', `
<p>Signing in to <b id="client">${escapeHtml(clientId)}</b>.</p>
${error ? `<p id="error">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/interaction/${uid}/login" id="login">
  <label>Username <input name="username" id="username" autocomplete="off" autofocus></label>
  <button type="submit" id="sign-in">Sign in</button>
</form>
<form method="post" action="/interaction/${uid}/abort" id="abort">
  <button type="submit" id="cancel">Cancel</button>
</form>`);
}

async function interaction(req, res, uid, action) {
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    send(res, 400, 'text/html', page('Test provider error', `<p>${escapeHtml(err.message)}</p>`));
    return;
  }
  if (details.uid !== uid) {
    send(res, 400, 'text/html', page('Test provider error', '<p>interaction mismatch</p>'));
    return;
  }
  if (req.method === 'GET' && !action) {
    send(res, 200, 'text/html', loginForm(uid, details.params.client_id));
    return;
  }
  if (req.method === 'POST' && action === 'abort') {
    const result = { error: 'access_denied', error_description: 'End-User aborted interaction' };
    await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
    return;
  }
  if (req.method === 'POST' && action === 'login') {
    const login = (await readForm(req)).get('username') ?? '';
    const account = accountByLogin(login);
    if (!account || disabled.has(login)) {
      send(res, 200, 'text/html', loginForm(uid, details.params.client_id, `no such user: ${login}`));
      return;
    }
    const result = { login: { accountId: account.sub } };
    await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
    return;
  }
  send(res, 405, 'text/plain', 'method not allowed');
}

// -- the control endpoints ----------------------------------------------------------------

function sessionsOf(sub) {
  return entries('Session').filter(([, payload]) => payload.accountId === sub);
}

async function endSessions(sub) {
  const delivered = [];
  const sessions = sessionsOf(sub);
  for (const [key, session] of sessions) {
    for (const [clientId, authorization] of Object.entries(session.authorizations ?? {})) {
      const client = await provider.Client.find(clientId);
      if (client?.backchannelLogoutUri) {
        try {
          await client.backchannelLogout(sub, authorization.sid);
          record({ event: 'backchannel.success', client: clientId, sub, sid: authorization.sid });
          delivered.push({ client: clientId, sid: authorization.sid, ok: true });
        } catch (err) {
          record({ event: 'backchannel.error', client: clientId, sub, sid: authorization.sid, error: String(err.cause ?? err.message) });
          delivered.push({ client: clientId, sid: authorization.sid, ok: false, error: String(err.cause ?? err.message) });
        }
      }
      if (authorization.grantId) {
        dropWhere((k, payload) => payload.grantId === authorization.grantId || k === `Grant:${authorization.grantId}`);
      }
    }
    store.delete(key);
  }
  return { sessions: sessions.length, delivered };
}

async function control(req, res, url) {
  const user = url.searchParams.get('user') ?? '';
  const account = accountByLogin(user);
  const json = (status, body) => send(res, status, 'application/json', JSON.stringify(body));
  const route = `${req.method} ${url.pathname}`;
  if (route === 'GET /_test/events') return json(200, events);
  if (route === 'PUT /_test/clients') {
    const metadata = JSON.parse(await readBody(req));
    store.set(`Client:${metadata.client_id}`, { payload: metadata, expiresAt: Number.POSITIVE_INFINITY });
    try {
      const client = await provider.Client.find(metadata.client_id); // validates the metadata
      return json(200, { client_id: client.clientId });
    } catch (err) {
      store.delete(`Client:${metadata.client_id}`);
      return json(400, { error: err.message, description: err.error_description });
    }
  }
  if (route === 'POST /_test/drop-reused') {
    dropReused = url.searchParams.get('path') ?? '/token';
    return json(200, { drop_reused: dropReused });
  }
  if (route === 'POST /_test/delay') {
    delayMs = Number(url.searchParams.get('ms') ?? 0);
    return json(200, { delay_ms: delayMs });
  }
  if (!account) return json(404, { error: `no such user: ${user}` });
  if (route === 'GET /_test/sessions') {
    return json(200, sessionsOf(account.sub).map(([, s]) => ({
      uid: s.uid,
      sids: Object.fromEntries(Object.entries(s.authorizations ?? {}).map(([c, a]) => [c, a.sid])),
    })));
  }
  if (route === 'POST /_test/disable') {
    disabled.add(user);
    const dropped = dropWhere((key, payload) => payload.accountId === account.sub);
    record({ event: 'test.disable', sub: account.sub, dropped });
    return json(200, { disabled: user, dropped });
  }
  if (route === 'POST /_test/claims') {
    const changes = JSON.parse(await readBody(req));
    delete changes.login;
    delete changes.sub;
    Object.assign(account, changes);
    record({ event: 'test.claims', sub: account.sub, changed: Object.keys(changes) });
    return json(200, account);
  }
  if (route === 'POST /_test/enable') {
    disabled.delete(user);
    return json(200, { enabled: user });
  }
  if (route === 'POST /_test/logout') {
    const done = await endSessions(account.sub);
    record({ event: 'test.logout', sub: account.sub, ...done });
    return json(200, done);
  }
  return json(404, { error: `no control endpoint ${route}` });
}

// -- the server ---------------------------------------------------------------------------

const callback = provider.callback();
const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, issuer);
  try {
    if (url.pathname.startsWith('/_test/')) {
      await control(req, res, url);
      return;
    }
    req.socket.served = (req.socket.served ?? 0) + 1;
    if (dropReused === url.pathname && req.socket.served > 1) {
      // what a server closing an idle keep-alive connection looks like to a client that
      // reused it at that moment: the connection ends, no answer
      dropReused = null;
      record({ event: 'test.dropped', path: url.pathname });
      req.socket.destroy();
      return;
    }
    if (delayMs > 0) await new Promise((resolve) => { setTimeout(resolve, delayMs); });
    const match = url.pathname.match(/^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|abort))?$/);
    if (match) {
      await interaction(req, res, match[1], match[2]);
      return;
    }
    callback(req, res);
  } catch (err) {
    record({ event: 'server_error', error: String(err.stack) });
    if (!res.headersSent) send(res, 500, 'text/plain', 'test provider error');
  }
});

// Node closes an idle keep-alive connection after 5 s by default. A client that reuses
// its pooled connection at that very moment sees it closed before any answer (the
// gateway once answered such a sign-in 503: test_oidc_provider.py's
// test_a_connection_the_provider_closed_as_it_was_reused_is_not_a_503). The tests
// keep connections open longer than any client keeps them, so that race never decides
// an unrelated test; /_test/drop-reused reproduces it on purpose.
server.keepAliveTimeout = Number(settings.keepAliveTimeoutMs ?? 120000);
server.headersTimeout = server.keepAliveTimeout + 1000;
server.listen(port, '127.0.0.1', () => record({ event: 'listening', issuer }));
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.closeAllConnections();
    server.close(() => process.exit(0));
  });
}
