// Herald's own OAuth client and SMTP client against independent servers: the whole mailbox
// flow (create → Authorize → sign-in and consent → redirect → Verified → test message) with
//
// - `oidc-provider` as the authorization server, on Microsoft-shaped routes
//   (`/{tenant}/oauth2/v2.0/authorize` and `/token`), with a confidential client and refresh
//   tokens; its sign-in and consent pages are completed headlessly;
// - `smtp-server` as the SMTP server, STARTTLS with a certificate from a test CA, validating
//   XOAUTH2 tokens by introspection at oidc-provider.
//
// So Herald is shown to work with implementations nobody here wrote, not only its own sandbox.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createPublicKey } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Provider from 'oidc-provider';
import { SMTPServer } from 'smtp-server';
import { HERALD, certificates, cookieSession, formOf, heraldEnv, listen, startHerald, stop, submit } from './support.mjs';
import { chromium } from 'playwright-core';

const SMTP_SEND = 'https://outlook.office.com/SMTP.Send';
const USER = 'alice@contoso.example';
const CLIENT_ID = 'herald-interop';
const CLIENT_SECRET = 'interop~secret.value-0123456789abcdefghij';
// An app that sends as itself (client credentials): no person signs in.
const DAEMON_ID = 'herald-daemon';
const DAEMON_SECRET = 'daemon~secret.value-0123456789abcdefghij';
const APP_SCOPE = 'https://outlook.office365.com/.default';
// An app that proves itself with a certificate (private_key_jwt, RFC 7523) instead of a secret.
const KEYED_ID = 'herald-keyed-daemon';

let dir;
let idp;
let idpServer;
let idpBase;
let smtp;
let smtpPort;
let herald;
let heraldBase;
let apiKey;
const ADMIN = 'admin@contoso.example';
const ADMIN_PASSWORD = 'interop admin password 0123';
const received = [];
/** The certificate of the smtp-servers Herald trusts (HERALD_SMTP_CA_FILE). */
let smtpTls;
let refuseAll = false;

/** The keyed app's RSA key and self-signed certificate, made with openssl. */
function clientCertificate() {
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'client.key', '-out', 'client.pem',
    '-days', '30', '-subj', '/CN=Herald keyed daemon'], { cwd: dir, stdio: 'pipe' });
  return { key: readFileSync(join(dir, 'client.key'), 'utf8'), cert: readFileSync(join(dir, 'client.pem'), 'utf8') };
}
let clientCert;

async function startIdp(redirectUri) {
  clientCert = clientCertificate();
  const jwk = createPublicKey(clientCert.cert).export({ format: 'jwk' });
  idpServer = createServer();
  const port = await listen(idpServer);
  idpBase = `http://localhost:${port}`;
  idp = new Provider(`${idpBase}/contoso/v2.0`, {
    clients: [{
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_post',
      introspection_endpoint_auth_method: 'client_secret_post',
    }, {
      client_id: DAEMON_ID,
      client_secret: DAEMON_SECRET,
      redirect_uris: [],
      grant_types: ['client_credentials'],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_post',
      scope: APP_SCOPE,
    }, {
      client_id: KEYED_ID,
      redirect_uris: [],
      grant_types: ['client_credentials'],
      response_types: [],
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'RS256',
      jwks: { keys: [{ ...jwk, use: 'sig', alg: 'RS256' }] },
      scope: APP_SCOPE,
    }],
    routes: {
      authorization: '/contoso/oauth2/v2.0/authorize',
      token: '/contoso/oauth2/v2.0/token',
      introspection: '/contoso/oauth2/v2.0/introspect',
      jwks: '/contoso/discovery/v2.0/keys',
    },
    scopes: ['openid', 'offline_access', SMTP_SEND, APP_SCOPE],
    claims: { openid: ['sub'], email: ['email'], profile: ['preferred_username'] },
    features: { introspection: { enabled: true }, clientCredentials: { enabled: true } },
    pkce: { required: () => true },
    async findAccount(_ctx, sub) {
      return { accountId: sub, async claims() { return { sub, email: sub, preferred_username: sub }; } };
    },
    // Issue a refresh token whenever the client may use one, as Microsoft does with offline_access.
    issueRefreshToken: async (_ctx, client, code) => client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access'),
  });
  idp.proxy = false;
  // oidc-provider serves its discovery document at the root; a provider whose issuer has a path
  // serves it under the issuer (OpenID Connect Discovery §4), where Herald looks.
  const callback = idp.callback();
  idpServer.on('request', (req, res) => {
    if (req.url.startsWith('/contoso/v2.0/.well-known/')) req.url = req.url.slice('/contoso/v2.0'.length);
    callback(req, res);
  });
}

/** Completes oidc-provider's development sign-in and consent pages, as a browser would. */
async function signInAndConsent(authorizationUrl) {
  const request = cookieSession();
  let response = await request(authorizationUrl);
  for (let step = 0; step < 10; step += 1) {
    const location = response.headers.get('location');
    if (location && location.startsWith(heraldBase)) return location;
    if (location) {
      response = await request(new URL(location, idpBase).href);
      continue;
    }
    const html = await response.text();
    const { action, fields } = formOf(html);
    assert.ok(action, `a form on the provider's page: ${html.slice(0, 300)}`);
    if (/name="login"/.test(html)) {
      fields.set('login', USER);
      fields.set('password', 'any password');
    }
    response = await submit(request, new URL(action, idpBase).href, fields);
  }
  throw new Error('the provider did not redirect back to Herald');
}

async function startSmtp(tls) {
  smtp = new SMTPServer({
    key: tls.key,
    cert: tls.cert,
    authMethods: ['XOAUTH2'],
    authOptional: false,
    disabledCommands: [],
    async onAuth(auth, _session, callback) {
      // Validate the bearer token by introspection at the authorization server.
      const result = await fetch(`${idpBase}/contoso/oauth2/v2.0/introspect`, {
        method: 'POST',
        body: new URLSearchParams({ token: auth.accessToken ?? '', client_id: CLIENT_ID, client_secret: CLIENT_SECRET }),
      }).then((r) => r.json());
      const scopes = (result.scope ?? '').split(' ');
      if (!refuseAll && auth.method === 'XOAUTH2' && result.active && scopes.includes(SMTP_SEND) && result.sub === auth.username) {
        return callback(null, { user: auth.username });
      }
      // An app's own token (no sub): the apps may send as the one mailbox they were given.
      if (!refuseAll && auth.method === 'XOAUTH2' && result.active && !result.sub && [DAEMON_ID, KEYED_ID].includes(result.client_id)
        && scopes.includes(APP_SCOPE) && auth.username === USER) {
        return callback(null, { user: auth.username });
      }
      return callback(null, { data: { status: '401', schemes: 'bearer', scope: SMTP_SEND } });
    },
    onData(stream, session, callback) {
      const chunks = [];
      stream.on('data', (c) => chunks.push(c));
      stream.on('end', () => {
        received.push({ user: session.user, from: session.envelope.mailFrom.address, raw: Buffer.concat(chunks).toString() });
        callback();
      });
    },
  });
  smtpPort = await new Promise((done) => smtp.listen(0, '127.0.0.1', () => done(smtp.server.address().port)));
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'herald-oauth-interop-'));
  const tls = certificates(dir, 'Interop CA');
  smtpTls = tls;
  const env = heraldEnv(dir, { HERALD_SMTP_CA_FILE: tls.ca });
  const cli = (...args) => execFileSync(HERALD, args, { env, encoding: 'utf8' });
  const org = cli('org', 'add', 'Contoso').trim();
  apiKey = cli('apikey', 'add', '--org', org, '--role', 'admin', '--name', 'interop').trim().split('\n').pop();
  execFileSync(HERALD, ['user', 'add', '--org', org, '--email', ADMIN, '--role', 'admin', '--password-stdin'],
    { env, input: `${ADMIN_PASSWORD}\n`, encoding: 'utf8' });

  ({ process: herald, base: heraldBase } = await startHerald(env));
  await startIdp(`${heraldBase}/web/um/smtp/redirect`);
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

test('Herald authorizes against oidc-provider and sends through smtp-server', async () => {
  const created = await api('/mailboxes', {
    method: 'POST',
    body: JSON.stringify({
      name: 'Interop',
      auth: 'oauth2',
      provider: 'custom',
      host: 'localhost',
      port: smtpPort,
      security: 'starttls',
      username: USER,
      from_name: 'Alice',
      signature: 'Alice at Contoso',
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      // oidc-provider grants offline_access only with prompt=consent (OpenID Connect Core 11).
      authorization_url: `${idpBase}/contoso/oauth2/v2.0/authorize?prompt=consent`,
      token_url: `${idpBase}/contoso/oauth2/v2.0/token`,
      // The admin names the issuer; Herald reads its discovery document when the mailbox is saved.
      issuer: `${idpBase}/contoso/v2.0`,
      scopes: ['openid', 'offline_access', SMTP_SEND],
    }),
  });
  assert.equal(created.status, 201, await created.clone().text());
  const mailbox = await created.json();

  // oidc-provider advertises authorization_response_iss_parameter_supported: a redirect without
  // iss is refused, before the code is redeemed.
  const first = await (await api(`/mailboxes/${mailbox.id}/authorize`, { method: 'POST' })).json();
  const unsigned = new URL(await signInAndConsent(first.authorization_url));
  unsigned.searchParams.delete('iss');
  const refused = await fetch(unsigned, { redirect: 'manual' });
  assert.equal(refused.status, 303);
  const attempt = await (await api(`/mailboxes/${mailbox.id}/authorization`)).json();
  assert.equal(attempt.reason?.code, 'issuer_missing', JSON.stringify(attempt));

  const started = await (await api(`/mailboxes/${mailbox.id}/authorize`, { method: 'POST' })).json();
  const callback = await signInAndConsent(started.authorization_url);
  assert.ok(new URL(callback).searchParams.get('iss'), 'oidc-provider sends iss (RFC 9207)');
  const landing = await fetch(callback, { redirect: 'manual' });
  assert.equal(landing.status, 303);
  assert.match(landing.headers.get('location'), /^\/settings\/system\/outgoing-mail\?attempt=/);

  const verified = await (await api(`/mailboxes/${mailbox.id}`)).json();
  assert.equal(verified.status, 'verified', JSON.stringify(verified.status_reason));
  assert.equal(verified.issuer, `${idpBase}/contoso/v2.0`, 'the issuer is the one named and discovered');

  const sent = await api(`/mailboxes/${mailbox.id}/test-message`, { method: 'POST', body: JSON.stringify({ to: 'bob@example.com' }) });
  assert.equal(sent.status, 200, await sent.clone().text());
  const message = received.at(-1);
  assert.equal(message.user, USER);
  assert.equal(message.from, USER);
  assert.match(message.raw, /From: Alice <alice@contoso\.example>/);
  assert.match(message.raw, /Alice at Contoso/);
});

test('a token smtp-server refuses with its 334 challenge is refreshed once, then named token_rejected', async () => {
  const list = await (await api('/mailboxes')).json();
  const mailbox = list.items.find((m) => m.name === 'Interop');
  assert.ok(mailbox, 'the first test created it');
  refuseAll = true;
  try {
    const verified = await (await api(`/mailboxes/${mailbox.id}/verify`, { method: 'POST' })).json();
    assert.equal(verified.status, 'not_verified');
    assert.equal(verified.status_reason.code, 'token_rejected');
  } finally {
    refuseAll = false;
  }
  const again = await (await api(`/mailboxes/${mailbox.id}/verify`, { method: 'POST' })).json();
  assert.equal(again.status, 'verified', 'refreshed tokens work once the server accepts them');
});

/** An smtp-server with implicit TLS (as on port 465) and PLAIN/LOGIN; answers its port. */
async function startSmtps(tls, password, got) {
  const server = new SMTPServer({
    secure: true,
    key: tls.key,
    cert: tls.cert,
    authMethods: ['PLAIN', 'LOGIN'],
    onAuth(auth, _session, callback) {
      if (auth.username === USER && auth.password === password) return callback(null, { user: auth.username });
      return callback(new Error('Authentication credentials invalid'));
    },
    onData(stream, session, callback) {
      const chunks = [];
      stream.on('data', (c) => chunks.push(c));
      stream.on('end', () => {
        got.push({ user: session.user, secure: session.secure, raw: Buffer.concat(chunks).toString() });
        callback();
      });
    },
  });
  // A client that refuses the certificate ends the handshake; smtp-server reports it here.
  server.on('error', () => {});
  const port = await new Promise((done) => server.listen(0, '127.0.0.1', () => done(server.server.address().port)));
  return { server, port };
}

test('a basic-auth mailbox sends through smtp-server over implicit TLS (port 465 style), its certificate verified', async () => {
  const password = 'smtps password 0123456789';
  const got = [];
  const trusted = await startSmtps(smtpTls, password, got);
  const unknownCa = mkdtempSync(join(tmpdir(), 'herald-smtps-'));
  const untrusted = await startSmtps(certificates(unknownCa, 'Unknown CA'), password, got);
  const mailbox = async (name, port) => {
    const created = await api('/mailboxes', {
      method: 'POST',
      body: JSON.stringify({ name, auth: 'basic', provider: 'custom', host: 'localhost', port, security: 'tls', username: USER, password }),
    });
    assert.equal(created.status, 201, await created.clone().text());
    return (await created.json()).id;
  };
  try {
    const id = await mailbox('Scanner', trusted.port);
    const verified = await (await api(`/mailboxes/${id}/verify`, { method: 'POST' })).json();
    assert.equal(verified.status, 'verified', JSON.stringify(verified.status_reason));
    const sent = await api(`/mailboxes/${id}/test-message`, { method: 'POST', body: JSON.stringify({ to: 'dave@example.com' }) });
    assert.equal(sent.status, 200, await sent.clone().text());
    assert.equal(got.length, 1);
    assert.equal(got[0].user, USER);
    assert.equal(got[0].secure, true, 'TLS from the first byte');
    assert.match(got[0].raw, /dave@example\.com/);

    // A server whose CA Herald does not trust is refused, as a fault of the settings.
    const other = await mailbox('Untrusted', untrusted.port);
    const refused = await (await api(`/mailboxes/${other}/verify`, { method: 'POST' })).json();
    assert.equal(refused.status, 'not_verified');
    assert.equal(refused.status_reason?.code, 'smtp_connection_failed', JSON.stringify(refused.status_reason));
    assert.equal(got.length, 1, 'nothing reached the untrusted server');
  } finally {
    await new Promise((done) => trusted.server.close(done));
    await new Promise((done) => untrusted.server.close(done));
    rmSync(unknownCa, { recursive: true, force: true });
  }
});

test('an app-only mailbox gets its own token from oidc-provider (client credentials) and sends through smtp-server', async () => {
  const created = await api('/mailboxes', {
    method: 'POST',
    body: JSON.stringify({
      name: 'Daemon',
      auth: 'oauth2',
      credential: 'app',
      provider: 'custom',
      host: 'localhost',
      port: smtpPort,
      security: 'starttls',
      username: USER,
      client_id: DAEMON_ID,
      client_secret: DAEMON_SECRET,
      token_url: `${idpBase}/contoso/oauth2/v2.0/token`,
      scopes: [APP_SCOPE],
    }),
  });
  assert.equal(created.status, 201, await created.clone().text());
  const mailbox = await created.json();
  assert.equal(mailbox.credential, 'app');
  const authorize = await api(`/mailboxes/${mailbox.id}/authorize`, { method: 'POST' });
  assert.ok(authorize.status >= 400 && authorize.status < 500, 'nobody signs in for an app');
  const verified = await (await api(`/mailboxes/${mailbox.id}/verify`, { method: 'POST' })).json();
  assert.equal(verified.status, 'verified', JSON.stringify(verified.status_reason));
  const before = received.length;
  const sent = await api(`/mailboxes/${mailbox.id}/test-message`, { method: 'POST', body: JSON.stringify({ to: 'carol@example.com' }) });
  assert.equal(sent.status, 200, await sent.clone().text());
  assert.equal(received.length, before + 1);
  assert.equal(received.at(-1).user, USER);
});

test('an app-only mailbox with a certificate signs its client assertion (private_key_jwt) and oidc-provider accepts it', async () => {
  const created = await api('/mailboxes', {
    method: 'POST',
    body: JSON.stringify({
      name: 'Keyed daemon',
      auth: 'oauth2',
      credential: 'app',
      provider: 'custom',
      host: 'localhost',
      port: smtpPort,
      security: 'starttls',
      username: USER,
      client_id: KEYED_ID,
      client_auth: 'certificate',
      certificate_pem: clientCert.cert,
      private_key_pem: clientCert.key,
      token_url: `${idpBase}/contoso/oauth2/v2.0/token`,
      scopes: [APP_SCOPE],
    }),
  });
  assert.equal(created.status, 201, await created.clone().text());
  const mailbox = await created.json();
  assert.equal(mailbox.client_auth, 'certificate');
  assert.equal(mailbox.has_client_secret, false);
  assert.ok(!JSON.stringify(mailbox).includes('PRIVATE KEY'), 'the key is never shown');
  const verified = await (await api(`/mailboxes/${mailbox.id}/verify`, { method: 'POST' })).json();
  assert.equal(verified.status, 'verified', JSON.stringify(verified.status_reason));
  const before = received.length;
  const sent = await api(`/mailboxes/${mailbox.id}/test-message`, { method: 'POST', body: JSON.stringify({ to: 'dave@example.com' }) });
  assert.equal(sent.status, 200, await sent.clone().text());
  assert.equal(received.length, before + 1);
  assert.equal(received.at(-1).user, USER);
});

test('the guide in a browser with a provider that is not a preset: Settings › System › Outgoing Mail, Add ▾ OAuth2, Custom with Scopes, Authorize at oidc-provider, Verified, test email', async () => {
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM_BIN ?? '/usr/bin/chromium', args: ['--no-sandbox'] });
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    await page.goto(`${heraldBase}/login`);
    await page.getByLabel('Email').fill(ADMIN);
    await page.getByLabel('Password').fill(ADMIN_PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL(`${heraldBase}/`);
    // "Go to Settings > System", then "click Outgoing Mail in the upper right corner".
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Settings' }).click();
    await page.getByRole('heading', { name: 'System' }).waitFor();
    await page.locator('.titlebar').getByRole('link', { name: 'Outgoing Mail' }).click();
    await page.getByRole('button', { name: 'Add ▾' }).click();
    await page.getByRole('menuitem', { name: 'OAuth2' }).click();
    const dialog = page.getByRole('dialog', { name: 'Add' });
    await dialog.getByLabel('Provider').selectOption({ label: 'Custom' });
    await dialog.getByLabel('Host Name').fill('localhost');
    await dialog.getByLabel('Port').fill(String(smtpPort));
    await dialog.getByLabel('Authorization URL').fill(`${idpBase}/contoso/oauth2/v2.0/authorize?prompt=consent`);
    await dialog.getByLabel('Token URL').fill(`${idpBase}/contoso/oauth2/v2.0/token`);
    await dialog.getByLabel('Client ID').fill(CLIENT_ID);
    await dialog.getByLabel('Client Secret', { exact: true }).fill(CLIENT_SECRET);
    await dialog.getByLabel('Username').fill(USER);
    await dialog.getByLabel('Reply to').fill('help@contoso.example');
    await dialog.getByLabel('Signature').fill('Alice at Contoso');
    // Without scopes, Save says so at the Scopes field, which a custom provider shows.
    await dialog.getByRole('button', { name: 'Save' }).click();
    await dialog.locator('[data-error-for="scopes"]').getByText(/scope/).waitFor();
    await dialog.getByLabel('Scopes').fill(`openid offline_access ${SMTP_SEND}`);
    await Promise.all([page.waitForEvent('load'), dialog.getByRole('button', { name: 'Save' }).click()]);

    // The row this walk made is named after its Username (other tests' mailboxes share the
    // address under other names).
    const row = () => page.locator('tr').filter({ has: page.locator('td:first-child', { hasText: new RegExp(`^${USER}`) }) });
    await row().getByRole('button', { name: 'Authorize' }).click();
    await page.getByRole('dialog', { name: 'Authorize' }).getByRole('button', { name: 'Continue' }).click();
    // oidc-provider's own sign-in and consent pages.
    await page.waitForURL((url) => url.href.startsWith(idpBase));
    await page.locator('input[name="login"]').fill(USER);
    await page.locator('input[name="password"]').fill('any password');
    await page.locator('button[type="submit"]').click();
    await page.locator('button[type="submit"]').waitFor();
    await page.locator('button[type="submit"]').click();
    await page.waitForURL((url) => url.href.startsWith(heraldBase));
    await row().getByText('Verified', { exact: true }).waitFor();

    const before = received.length;
    await row().getByRole('button', { name: 'Send test email' }).click();
    const testDialog = page.getByRole('dialog', { name: 'Send test email' });
    await testDialog.getByLabel('To').fill('carol@example.com');
    await testDialog.getByRole('button', { name: 'Send' }).click();
    await testDialog.getByText(/^Sent: 250/).waitFor();
    assert.equal(received.length, before + 1);
    assert.equal(received.at(-1).user, USER);
    assert.match(received.at(-1).raw, /Alice at Contoso/);
  } finally {
    await browser.close();
  }
});
