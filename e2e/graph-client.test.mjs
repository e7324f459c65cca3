// Interoperability: Microsoft's own JavaScript Graph client (@microsoft/microsoft-graph-client)
// sends mail through the sandbox's Microsoft Graph `sendMail` and understands its errors.
//
// - The delegated token for `https://graph.microsoft.com/Mail.Send` comes from the sandbox's
//   Entra ID authorization-code flow, run with openid-client as interop.test.mjs does.
// - The Graph client's request builder, response handler, GraphErrorHandler and RetryHandler are
//   Microsoft's. Only the authentication step is ours: the client's AuthenticationHandler sends
//   the bearer token to https URLs only (and strips the Authorization header from anything
//   else), while the sandbox runs on plain http on loopback, so a one-line middleware sets it.
//
// `herald demo` runs as a real process on loopback ports chosen by the OS.

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import * as oidc from 'openid-client';
import {
  Client,
  GraphError,
  HTTPMessageHandler,
  RetryHandler,
  RetryHandlerOptions,
} from '@microsoft/microsoft-graph-client';

const HERALD = resolve(process.env.HERALD_BIN ?? new URL('../target/debug/herald', import.meta.url).pathname);
const GRAPH_MAIL_SEND = 'https://graph.microsoft.com/Mail.Send';

let demo;
let facts = {};
let dataDir;
let defaultSwitches;

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
  defaultSwitches = await (await fetch(`${sandbox()}/_sandbox/switches`)).json();
});

after(async () => {
  if (demo && demo.exitCode === null) {
    const exited = new Promise((done) => demo.once('exit', done));
    demo.kill('SIGTERM');
    await exited;
  }
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

/** Every test leaves the sandbox's switches as the demo started with them. */
afterEach(async () => {
  if (defaultSwitches) await setSwitches(defaultSwitches);
});

const word = (label) => facts[label].split(/\s+/)[0];
const credentials = (label) => facts[label].split(' / ');
const sandbox = () => word('Sandbox URL');

async function setSwitches(switches) {
  const current = await (await fetch(`${sandbox()}/_sandbox/switches`)).json();
  const response = await fetch(`${sandbox()}/_sandbox/switches`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...current, ...switches }),
  });
  assert.equal(response.status, 200);
}

const messages = async () => (await (await fetch(`${sandbox()}/_sandbox/messages`)).json()).items;
const graphRequests = async () => (await (await fetch(`${sandbox()}/_sandbox/counters`)).json()).graph_requests;

/** What a browser does on the sandbox's pages: sign in, then accept the consent page. */
async function signInAndConsent(authorizationUrl, user, password) {
  const page = await fetch(authorizationUrl);
  assert.equal(page.status, 200);
  const html = await page.text();
  const txn = html.match(/name="txn" value="([^"]+)"/)[1];
  const tenantBase = new URL(authorizationUrl);
  const tenant = tenantBase.pathname.split('/')[1];
  const consent = await fetch(new URL(`/${tenant}/login`, tenantBase), {
    method: 'POST',
    body: new URLSearchParams({ txn, username: user, password }),
  });
  const consentPage = await consent.text();
  assert.match(consentPage, /Permissions requested/);
  assert.match(consentPage, /Send mail as you/, 'the consent page lists Mail.Send');
  const answer = await fetch(new URL(`/${tenant}/consent`, tenantBase), {
    method: 'POST',
    body: new URLSearchParams({ txn, decision: 'accept' }),
    redirect: 'manual',
  });
  assert.equal(answer.status, 303);
  // The redirect goes to Herald's redirect URI; it is not followed, the code is redeemed here.
  return new URL(answer.headers.get('location'));
}

let graphToken;

/** A delegated Graph token for the demo's sandbox user, by authorization code + PKCE. */
async function delegatedGraphToken() {
  if (graphToken) return graphToken;
  const config = await oidc.discovery(
    new URL(`${sandbox()}/sandbox/v2.0`),
    facts['Sandbox app client ID'],
    word('Sandbox app client secret'),
    undefined,
    { execute: [oidc.allowInsecureRequests] },
  );
  const [user, password] = credentials('Sandbox user sign-in');
  const codeVerifier = oidc.randomPKCECodeVerifier();
  const state = oidc.randomState();
  const authorizationUrl = oidc.buildAuthorizationUrl(config, {
    redirect_uri: facts['Redirect URI'],
    scope: `${GRAPH_MAIL_SEND} offline_access`,
    code_challenge: await oidc.calculatePKCECodeChallenge(codeVerifier),
    code_challenge_method: 'S256',
    state,
    login_hint: user,
  });
  const callback = await signInAndConsent(authorizationUrl.href, user, password);
  const tokens = await oidc.authorizationCodeGrant(config, callback, {
    pkceCodeVerifier: codeVerifier,
    expectedState: state,
  });
  assert.equal(tokens.token_type.toLowerCase(), 'bearer');
  assert.ok(tokens.scope.split(' ').includes(GRAPH_MAIL_SEND), `granted scope: ${tokens.scope}`);
  assert.ok(tokens.refresh_token, 'offline_access gives a refresh token');
  graphToken = tokens.access_token;
  return graphToken;
}

/**
 * Sets `Authorization: Bearer` from an AuthenticationProvider. Microsoft's AuthenticationHandler
 * does the same but only for https Graph hosts; the sandbox is http on loopback.
 */
class LoopbackAuthentication {
  constructor(authProvider) {
    this.authProvider = authProvider;
  }
  async execute(context) {
    const token = await this.authProvider.getAccessToken();
    context.options.headers = { ...context.options.headers, Authorization: `Bearer ${token}` };
    return this.nextMiddleware.execute(context);
  }
  setNext(next) {
    this.nextMiddleware = next;
  }
}

/** Microsoft's Graph client, pointed at the sandbox, with its own RetryHandler. */
function graphClient(token) {
  const authProvider = { getAccessToken: async () => token };
  return Client.initWithMiddleware({
    baseUrl: `${sandbox()}/`,
    defaultVersion: 'v1.0',
    middleware: [
      new LoopbackAuthentication(authProvider),
      new RetryHandler(new RetryHandlerOptions()),
      new HTTPMessageHandler(),
    ],
  });
}

/** Asserts a GraphError as the client builds it from Graph's error body. */
function assertGraphError(err, statusCode, code) {
  assert.ok(err instanceof GraphError, `a GraphError, not ${err?.constructor?.name}: ${err}`);
  assert.equal(err.statusCode, statusCode);
  assert.equal(err.code, code);
  assert.ok(err.message.length > 0, 'the message is filled');
  assert.match(err.requestId ?? '', /^[0-9a-f-]{36}$/, 'requestId from innerError.request-id');
  assert.ok(err.date instanceof Date && !Number.isNaN(err.date.getTime()), 'date from innerError.date');
  // innerError.date has no zone (as Graph's has not): the client reads it as local time.
  assert.ok(Math.abs(err.date.getTime() - Date.now()) < 36 * 3600 * 1000, `date is today: ${err.date}`);
  assert.ok(err.body, 'the raw error body is kept');
  return true;
}

test('Graph client: /me/sendMail with a JSON message resolves, Bcc kept out of the raw message', async () => {
  const [user] = credentials('Sandbox user sign-in');
  const client = graphClient(await delegatedGraphToken());
  const subject = `Graph client JSON ${Date.now()}`;
  const result = await client.api('/me/sendMail').post({
    message: {
      subject,
      body: { contentType: 'Text', content: 'Sent by @microsoft/microsoft-graph-client' },
      toRecipients: [{ emailAddress: { address: 'someone@example.com' } }],
      bccRecipients: [{ emailAddress: { address: 'hidden@example.com' } }],
    },
    saveToSentItems: false,
  });
  assert.ok(result === undefined || result === null || result === '' || (typeof result === 'object' && Object.keys(result).length === 0), `202 with no body, got ${JSON.stringify(result)}`);

  const message = (await messages()).find((m) => m.raw.includes(`Subject: ${subject}`));
  assert.ok(message, 'the sandbox kept the message');
  assert.equal(message.mechanism, 'graph');
  assert.equal(message.user, user.toLowerCase());
  assert.equal(message.mail_from, user.toLowerCase());
  assert.deepEqual([...message.rcpt_to].sort(), ['hidden@example.com', 'someone@example.com']);
  assert.ok(!message.raw.includes('hidden@example.com'), 'Bcc is not in the raw message');
  assert.match(message.raw, /someone@example\.com/);
  const [head, body] = message.raw.split('\r\n\r\n');
  assert.match(head, /^Content-Transfer-Encoding: base64$/im);
  assert.equal(Buffer.from(body, 'base64').toString(), 'Sent by @microsoft/microsoft-graph-client');
  assert.equal(message.save_to_sent_items, false);
});

test('Graph client: /users/{user}/sendMail with base64 MIME (text/plain) resolves', async () => {
  const [user] = credentials('Sandbox user sign-in');
  const client = graphClient(await delegatedGraphToken());
  const subject = `Graph client MIME ${Date.now()}`;
  const mime = [
    `From: ${user}`,
    'To: someone@example.com',
    'Bcc: secret@example.com',
    `Subject: ${subject}`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    '',
    'Sent as MIME by @microsoft/microsoft-graph-client',
    '',
  ].join('\r\n');
  await client
    .api(`/users/${encodeURIComponent(user)}/sendMail`)
    .header('Content-Type', 'text/plain')
    .post(Buffer.from(mime).toString('base64'));

  const message = (await messages()).find((m) => m.raw.includes(`Subject: ${subject}`));
  assert.ok(message, 'the sandbox kept the message');
  assert.equal(message.mechanism, 'graph');
  assert.equal(message.user, user.toLowerCase());
  assert.deepEqual([...message.rcpt_to].sort(), ['secret@example.com', 'someone@example.com']);
  assert.doesNotMatch(message.raw, /^Bcc:/im, 'the Bcc header is removed');
  assert.match(message.raw, /Sent as MIME by/);
  assert.equal(message.save_to_sent_items, true, 'Graph saves MIME sends by default');
});

test('Graph client: a token that is not valid is a GraphError 401 InvalidAuthenticationToken', async () => {
  const before = await graphRequests();
  await assert.rejects(
    graphClient('sbx.not-a-token').api('/me/sendMail').post({
      message: { subject: 'x', body: { contentType: 'Text', content: 'x' }, toRecipients: [{ emailAddress: { address: 'someone@example.com' } }] },
    }),
    (err) => assertGraphError(err, 401, 'InvalidAuthenticationToken'),
  );
  assert.equal(await graphRequests(), before + 1, 'a 401 is not retried');
});

test('Graph client: an unknown user is a GraphError 404 ErrorInvalidUser', async () => {
  const nobody = 'nobody@contoso.com';
  await setSwitches({ graph_unknown_users: [nobody] });
  const client = graphClient(await delegatedGraphToken());
  await assert.rejects(
    client.api(`/users/${nobody}/sendMail`).post({
      message: { subject: 'x', body: { contentType: 'Text', content: 'x' }, toRecipients: [{ emailAddress: { address: 'someone@example.com' } }] },
    }),
    (err) => assertGraphError(err, 404, 'ErrorInvalidUser') && err.message.includes(nobody),
  );
});

test('Graph client: its RetryHandler waits out a 429 Retry-After and the send goes through', async () => {
  const client = graphClient(await delegatedGraphToken());
  await setSwitches({ graph_throttled: 1, graph_retry_after_secs: 1 });
  const before = await graphRequests();
  const subject = `Graph client throttled ${Date.now()}`;
  const started = Date.now();
  await client.api('/me/sendMail').post({
    message: {
      subject,
      body: { contentType: 'Text', content: 'Sent after a 429' },
      toRecipients: [{ emailAddress: { address: 'someone@example.com' } }],
    },
  });
  const waited = Date.now() - started;
  assert.equal(await graphRequests(), before + 2, 'one 429, then the retry');
  assert.ok(waited >= 900, `the client waited Retry-After (1 s) before retrying: ${waited} ms`);
  const message = (await messages()).find((m) => m.raw.includes(`Subject: ${subject}`));
  assert.ok(message, 'the retried send landed');
  assert.equal(message.mechanism, 'graph');
  assert.equal(message.save_to_sent_items, true, 'saveToSentItems defaults to true');
});

test('Graph client: a 429 that outlasts its retries is a GraphError with Graph\'s innerError', async () => {
  const client = graphClient(await delegatedGraphToken());
  await setSwitches({ graph_throttled: 10, graph_retry_after_secs: 0 });
  const before = await graphRequests();
  await assert.rejects(
    client.api('/me/sendMail').post({
      message: { subject: 'x', body: { contentType: 'Text', content: 'x' }, toRecipients: [{ emailAddress: { address: 'someone@example.com' } }] },
    }),
    (err) => assertGraphError(err, 429, 'ApplicationThrottled'),
  );
  assert.equal(await graphRequests(), before + 1 + RetryHandlerOptions.DEFAULT_MAX_RETRIES, 'the first try and 3 retries');
});
