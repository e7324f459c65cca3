// Herald's device code flow (RFC 8628) against an authorization server nobody here wrote:
// `oidc-provider` with `features.deviceFlow`, its device authorization endpoint named in its
// discovery document (where Herald finds it for a custom provider), its user-code, sign-in and
// consent pages completed headlessly; `smtp-server` checks the tokens by introspection. Herald
// polls at the default interval (5 s, oidc-provider names none), so this file takes a while.
//
// Run alone: cd e2e && HERALD_BIN=$PWD/../target/debug/herald node --test device-code.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Provider from 'oidc-provider';
import { SMTPServer } from 'smtp-server';
import { HERALD, certificates, cookieSession, formOf, heraldEnv, listen, startHerald, stop, submit } from './support.mjs';

const SMTP_SEND = 'https://outlook.office.com/SMTP.Send';
const USER = 'alice@contoso.example';
const CLIENT_ID = 'herald-device';
const CLIENT_SECRET = 'device~secret.value-0123456789abcdefghij';
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

let dir;
let idpServer;
let idpBase;
let smtp;
let smtpPort;
let herald;
let heraldBase;
let apiKey;
const received = [];

async function startIdp() {
  idpServer = createServer();
  const port = await listen(idpServer);
  idpBase = `http://localhost:${port}`;
  const idp = new Provider(`${idpBase}/contoso/v2.0`, {
    clients: [{
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      redirect_uris: [],
      grant_types: [DEVICE_GRANT, 'refresh_token'],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_post',
      introspection_endpoint_auth_method: 'client_secret_post',
    }],
    routes: {
      device_authorization: '/contoso/oauth2/v2.0/devicecode',
      code_verification: '/contoso/devicelogin',
      token: '/contoso/oauth2/v2.0/token',
      introspection: '/contoso/oauth2/v2.0/introspect',
      jwks: '/contoso/discovery/v2.0/keys',
    },
    scopes: ['openid', 'offline_access', SMTP_SEND],
    claims: { openid: ['sub'], email: ['email'], profile: ['preferred_username'] },
    features: { introspection: { enabled: true }, deviceFlow: { enabled: true } },
    async findAccount(_ctx, sub) {
      return { accountId: sub, async claims() { return { sub, email: sub, preferred_username: sub }; } };
    },
    // oidc-provider drops offline_access from a device authorization without prompt=consent
    // (RFC 8628 requests carry no prompt); the person consents on its pages all the same, and
    // Microsoft issues the refresh token for offline_access: so does this server.
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  });
  idp.proxy = false;
  const callback = idp.callback();
  idpServer.on('request', (req, res) => {
    if (req.url.startsWith('/contoso/v2.0/.well-known/')) req.url = req.url.slice('/contoso/v2.0'.length);
    callback(req, res);
  });
}

/**
 * A person at oidc-provider's verification page: enters the code, confirms (or aborts), signs
 * in and consents, as a browser would. Answers the last page.
 */
async function enterCode(verificationUri, userCode, { abort = false } = {}) {
  const request = cookieSession();
  let response = await request(verificationUri);
  for (let step = 0; step < 12; step += 1) {
    const location = response.headers.get('location');
    if (location) {
      response = await request(new URL(location, idpBase).href);
      continue;
    }
    const html = await response.text();
    const { action, fields } = formOf(html);
    // Done: the success page, or the page after an abort (the code input again).
    if (!action || /interrupted/.test(html)) return html;
    if (/name="user_code"/.test(html) && !fields.get('user_code')) fields.set('user_code', userCode);
    if (abort && fields.get('confirm')) {
      fields.delete('confirm');
      fields.set('abort', 'yes');
    }
    if (/name="login"/.test(html)) {
      fields.set('login', USER);
      fields.set('password', 'any password');
    }
    response = await submit(request, new URL(action, idpBase).href, fields);
  }
  throw new Error('the provider\'s pages did not end');
}

async function startSmtp(tls) {
  smtp = new SMTPServer({
    key: tls.key,
    cert: tls.cert,
    authMethods: ['XOAUTH2'],
    async onAuth(auth, _session, callback) {
      const result = await fetch(`${idpBase}/contoso/oauth2/v2.0/introspect`, {
        method: 'POST',
        body: new URLSearchParams({ token: auth.accessToken ?? '', client_id: CLIENT_ID, client_secret: CLIENT_SECRET }),
      }).then((r) => r.json());
      if (result.active && (result.scope ?? '').split(' ').includes(SMTP_SEND) && result.sub === auth.username) {
        return callback(null, { user: auth.username });
      }
      return callback(null, { data: { status: '401', schemes: 'bearer', scope: SMTP_SEND } });
    },
    onData(stream, session, callback) {
      const chunks = [];
      stream.on('data', (c) => chunks.push(c));
      stream.on('end', () => {
        received.push({ user: session.user, raw: Buffer.concat(chunks).toString() });
        callback();
      });
    },
  });
  smtpPort = await new Promise((done) => smtp.listen(0, '127.0.0.1', () => done(smtp.server.address().port)));
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'herald-device-interop-'));
  const tls = certificates(dir, 'Device CA');
  const env = heraldEnv(dir, { HERALD_SMTP_CA_FILE: tls.ca });
  const cli = (...args) => execFileSync(HERALD, args, { env, encoding: 'utf8' });
  const org = cli('org', 'add', 'Contoso').trim();
  apiKey = cli('apikey', 'add', '--org', org, '--role', 'admin', '--name', 'device').trim().split('\n').pop();
  ({ process: herald, base: heraldBase } = await startHerald(env));
  await startIdp();
  await startSmtp(tls);
});

after(async () => {
  await stop(herald);
  await new Promise((done) => (smtp ? smtp.close(done) : done()));
  await new Promise((done) => (idpServer ? idpServer.close(done) : done()));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const api = (path, options = {}) => fetch(`${heraldBase}/api/v1${path}`, {
  ...options,
  headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json', ...(options.headers ?? {}) },
});

/** Follows the attempt until it ends (Herald polls every 5 s). */
async function outcome(mailboxId) {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const attempt = await (await api(`/mailboxes/${mailboxId}/authorization`)).json();
    if (attempt.status !== 'pending') return attempt;
    assert.ok(Date.now() < deadline, 'the attempt ended within a minute');
    await new Promise((done) => setTimeout(done, 250));
  }
}

let mailbox;

test('Herald finds oidc-provider\'s device endpoint, polls until the person accepts, and sends', async () => {
  const created = await api('/mailboxes', {
    method: 'POST',
    body: JSON.stringify({
      name: 'Headless',
      auth: 'oauth2',
      provider: 'custom',
      host: 'localhost',
      port: smtpPort,
      security: 'starttls',
      username: USER,
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      authorization_url: `${idpBase}/contoso/oauth2/v2.0/authorize`,
      token_url: `${idpBase}/contoso/oauth2/v2.0/token`,
      issuer: `${idpBase}/contoso/v2.0`,
      scopes: ['openid', 'offline_access', SMTP_SEND],
    }),
  });
  assert.equal(created.status, 201, await created.clone().text());
  mailbox = await created.json();

  const response = await api(`/mailboxes/${mailbox.id}/authorize/device`, { method: 'POST' });
  assert.equal(response.status, 200, await response.clone().text());
  const started = await response.json();
  assert.equal(started.verification_uri, `${idpBase}/contoso/devicelogin`);
  assert.equal(started.interval, 5, 'RFC 8628\'s default when the server names none');
  assert.ok(started.user_code && started.message.includes(started.user_code), JSON.stringify(started));
  assert.equal((await (await api(`/mailboxes/${mailbox.id}/authorization`)).json()).status, 'pending');

  const done = await enterCode(started.verification_uri, started.user_code);
  assert.match(done, /Sign-in Success/);
  const attempt = await outcome(mailbox.id);
  assert.equal(attempt.status, 'completed', JSON.stringify(attempt));
  const verified = await (await api(`/mailboxes/${mailbox.id}`)).json();
  assert.equal(verified.status, 'verified', JSON.stringify(verified.status_reason));

  const sent = await api(`/mailboxes/${mailbox.id}/test-message`, { method: 'POST', body: JSON.stringify({ to: 'bob@example.com' }) });
  assert.equal(sent.status, 200, await sent.clone().text());
  assert.equal(received.at(-1).user, USER);
});

test('an aborted device sign-in (RFC 8628 access_denied) ends as device_code_declined', async () => {
  assert.ok(mailbox, 'the first test created the mailbox');
  const started = await (await api(`/mailboxes/${mailbox.id}/authorize/device`, { method: 'POST' })).json();
  const page = await enterCode(started.verification_uri, started.user_code, { abort: true });
  assert.match(page, /interrupted/);
  const attempt = await outcome(mailbox.id);
  assert.equal(attempt.status, 'failed');
  assert.equal(attempt.reason?.code, 'device_code_declined', JSON.stringify(attempt));
  const still = await (await api(`/mailboxes/${mailbox.id}`)).json();
  assert.equal(still.status, 'verified', 'a declined re-authorization keeps the working tokens');
});
