// Interoperability: independent, widely used clients accept Herald's sandbox provider.
//
// - openid-client (a certified OpenID Connect relying party) runs the authorization-code flow
//   with PKCE, checks the RFC 9207 `iss` parameter and the ID token's signature against the
//   published keys, and refreshes the token.
// - nodemailer sends with SMTP AUTH XOAUTH2 over STARTTLS, verifying the sandbox's certificate
//   against the CA that `herald demo` exports.
//
// `herald demo` runs as a real process on loopback ports chosen by the OS.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import * as oidc from 'openid-client';
import nodemailer from 'nodemailer';

const HERALD = resolve(process.env.HERALD_BIN ?? new URL('../target/debug/herald', import.meta.url).pathname);
const SMTP_SEND = 'https://outlook.office.com/SMTP.Send';

let demo;
let facts = {};
let dataDir;

/** Starts `herald demo` and collects the `label: value` lines it prints. */
before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'herald-e2e-'));
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('HERALD_')));
  Object.assign(env, {
    HERALD_LISTEN: '127.0.0.1:0',
    HERALD_SANDBOX_LISTEN: '127.0.0.1:0',
    HERALD_SANDBOX_SMTP_LISTEN: '127.0.0.1:0',
    HERALD_LOG: 'warn',
  });
  demo = spawn(HERALD, ['demo', '--data-dir', join(dataDir, 'demo')], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = createInterface({ input: demo.stdout });
  await new Promise((done, fail) => {
    const timer = setTimeout(() => fail(new Error('herald demo printed nothing within 30 s')), 30_000);
    demo.once('exit', (code) => fail(new Error(`herald demo exited early with ${code}`)));
    lines.on('line', (line) => {
      const at = line.indexOf(': ');
      if (at > 0) facts[line.slice(0, at)] = line.slice(at + 2);
      if (line.startsWith('Data directory: ')) {
        clearTimeout(timer);
        done();
      }
    });
  });
});

after(async () => {
  if (demo && demo.exitCode === null) {
    const exited = new Promise((done) => demo.once('exit', done));
    demo.kill('SIGTERM');
    await exited;
  }
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

const word = (label) => facts[label].split(/\s+/)[0];
const credentials = (label) => facts[label].split(' / ');

/** What a browser does on the sandbox's pages: sign in, then answer the consent page. */
async function signInAndConsent(authorizationUrl, user, password, decision) {
  const page = await fetch(authorizationUrl);
  assert.equal(page.status, 200);
  const html = await page.text();
  assert.match(html, new RegExp(`value="${user.replace('.', '\\.')}"`), 'login_hint pre-fills the form');
  const txn = html.match(/name="txn" value="([^"]+)"/)[1];
  const tenantBase = new URL(authorizationUrl);
  const tenant = tenantBase.pathname.split('/')[1];
  const consent = await fetch(new URL(`/${tenant}/login`, tenantBase), {
    method: 'POST',
    body: new URLSearchParams({ txn, username: user, password }),
  });
  assert.match(await consent.text(), /Permissions requested/);
  const answer = await fetch(new URL(`/${tenant}/consent`, tenantBase), {
    method: 'POST',
    body: new URLSearchParams({ txn, decision }),
    redirect: 'manual',
  });
  assert.equal(answer.status, 303);
  return new URL(answer.headers.get('location'));
}

async function discover() {
  const issuer = new URL(`${word('Sandbox URL')}/sandbox/v2.0`);
  return oidc.discovery(issuer, facts['Sandbox app client ID'], word('Sandbox app client secret'), undefined, {
    // The sandbox runs on plain http on loopback; a real tenant is https.
    execute: [oidc.allowInsecureRequests],
  });
}

let accessToken;

test('openid-client completes authorization code + PKCE + iss + ID token, then refreshes', async () => {
  const config = await discover();
  const [user, password] = credentials('Sandbox user sign-in');
  const codeVerifier = oidc.randomPKCECodeVerifier();
  const state = oidc.randomState();
  const nonce = oidc.randomNonce();
  const authorizationUrl = oidc.buildAuthorizationUrl(config, {
    redirect_uri: facts['Redirect URI'],
    scope: `${SMTP_SEND} offline_access openid profile email`,
    code_challenge: await oidc.calculatePKCECodeChallenge(codeVerifier),
    code_challenge_method: 'S256',
    state,
    nonce,
    login_hint: user,
  });
  const callback = await signInAndConsent(authorizationUrl.href, user, password, 'accept');
  assert.equal(callback.searchParams.get('iss'), config.serverMetadata().issuer);

  const tokens = await oidc.authorizationCodeGrant(config, callback, {
    pkceCodeVerifier: codeVerifier,
    expectedState: state,
    expectedNonce: nonce,
  });
  assert.equal(tokens.token_type.toLowerCase(), 'bearer');
  assert.ok(tokens.refresh_token, 'offline_access gives a refresh token');
  assert.equal(tokens.claims().preferred_username, user);

  const refreshed = await oidc.refreshTokenGrant(config, tokens.refresh_token);
  assert.ok(refreshed.access_token);
  assert.notEqual(refreshed.refresh_token, tokens.refresh_token, 'refresh tokens rotate');
  accessToken = refreshed.access_token;
});

test('openid-client sees access_denied when the user cancels at consent', async () => {
  const config = await discover();
  const [user, password] = credentials('Sandbox user sign-in');
  const state = oidc.randomState();
  const authorizationUrl = oidc.buildAuthorizationUrl(config, {
    redirect_uri: facts['Redirect URI'],
    scope: `${SMTP_SEND} offline_access`,
    state,
    login_hint: user,
  });
  const callback = await signInAndConsent(authorizationUrl.href, user, password, 'cancel');
  await assert.rejects(
    oidc.authorizationCodeGrant(config, callback, { expectedState: state }),
    (err) => err.error === 'access_denied' && /^AADSTS65004:/.test(err.error_description),
  );
});

function transport(user, token) {
  const [host, port] = word('Sandbox SMTP').split(':');
  const ca = readFileSync(facts['Sandbox SMTP'].match(/CA certificate (.+)\)$/)[1]);
  return nodemailer.createTransport({
    host,
    port: Number(port),
    secure: false,
    requireTLS: true,
    tls: { ca: [ca], servername: 'localhost' },
    auth: { type: 'OAuth2', user, accessToken: token },
  });
}

test('nodemailer sends with XOAUTH2 over verified STARTTLS', async () => {
  assert.ok(accessToken, 'the OAuth test ran first');
  const [user] = credentials('Sandbox user sign-in');
  const info = await transport(user, accessToken).sendMail({
    from: user,
    to: 'someone@example.com',
    subject: 'Interop',
    text: 'Sent by nodemailer',
  });
  assert.match(info.response, /^250 2\.0\.0 OK/);
  const received = await (await fetch(`${word('Sandbox URL')}/_sandbox/messages`)).json();
  const message = received.items.find((m) => m.raw.includes('Subject: Interop'));
  assert.ok(message, 'the sandbox kept the message');
  assert.equal(message.mechanism, 'XOAUTH2');
  assert.equal(message.user, user);
});

test('nodemailer gets Exchange\'s 535 5.7.3 for a token that is not valid', async () => {
  const [user] = credentials('Sandbox user sign-in');
  await assert.rejects(
    transport(user, 'sbx.not-a-token').sendMail({ from: user, to: 'someone@example.com', text: 'x' }),
    (err) => err.code === 'EAUTH' && /535 5\.7\.3/.test(err.response),
  );
});
