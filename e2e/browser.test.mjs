// The seed's flow in a real browser (Debian's chromium, driven by playwright-core), by the
// seed's own words: Settings › System › Outgoing Mail → Add → OAuth2 → the labelled fields →
// Authorize → Continue → sign in → Accept → Verified → Send test email. Also the failure paths
// an admin meets, what a member may see, and screenshots of the pages.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const HERALD = resolve(process.env.HERALD_BIN ?? new URL('../target/debug/herald', import.meta.url).pathname);
const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
const SCREENSHOTS = resolve(new URL('./screenshots', import.meta.url).pathname);

let dir;
let demo;
let facts = {};
let browser;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'herald-browser-'));
  mkdirSync(SCREENSHOTS, { recursive: true });
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('HERALD_')));
  Object.assign(env, { HERALD_LISTEN: '127.0.0.1:0', HERALD_SANDBOX_LISTEN: '127.0.0.1:0', HERALD_SANDBOX_SMTP_LISTEN: '127.0.0.1:0', HERALD_LOG: 'warn' });
  demo = spawn(HERALD, ['demo', '--data-dir', join(dir, 'demo')], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise((done, fail) => {
    const timer = setTimeout(() => fail(new Error('herald demo printed nothing within 30 s')), 30_000);
    createInterface({ input: demo.stdout }).on('line', (line) => {
      const at = line.indexOf(': ');
      if (at > 0) facts[line.slice(0, at)] = line.slice(at + 2);
      if (line.startsWith('Data directory: ')) {
        clearTimeout(timer);
        done();
      }
    });
  });
  assert.ok(existsSync(CHROMIUM), `chromium is not at ${CHROMIUM}; scripts/test installs Debian's chromium`);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await browser?.close();
  if (demo && demo.exitCode === null) {
    const exited = new Promise((done) => demo.once('exit', done));
    demo.kill('SIGTERM');
    await exited;
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
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

async function signIn(page, email, password) {
  await page.goto(facts['Herald URL']);
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(`${facts['Herald URL']}/`);
}

/** The guide's way: Settings > System, then Outgoing Mail at the upper right of the tab. */
async function openOutgoingMail(page) {
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Settings' }).click();
  await page.getByRole('heading', { name: 'System' }).waitFor();
  assert.ok(await page.getByRole('navigation', { name: 'Settings' }).getByRole('link', { name: 'System' }).isVisible());
  await page.locator('.titlebar').getByRole('link', { name: 'Outgoing Mail' }).click();
  await page.getByRole('heading', { name: 'Outgoing Mail' }).waitFor();
}

async function addSandboxMailbox(page, username, extra = {}) {
  await page.getByRole('button', { name: 'Add ▾' }).click();
  await page.getByRole('menuitem', { name: 'OAuth2' }).click();
  const dialog = page.getByRole('dialog', { name: 'Add' });
  await dialog.waitFor();
  await dialog.getByLabel('Provider').selectOption({ label: 'Sandbox' });
  assert.match(await dialog.getByLabel('Authorization URL').inputValue(), /\/sandbox\/oauth2\/v2\.0\/authorize$/);
  assert.match(await dialog.getByLabel('Token URL').inputValue(), /\/sandbox\/oauth2\/v2\.0\/token$/);
  assert.equal(await dialog.getByLabel('Redirect URI', { exact: true }).inputValue(), facts['Redirect URI']);
  assert.ok(await dialog.getByLabel('Host Name').inputValue(), 'Host Name is filled by the provider');
  await dialog.getByLabel('Client ID').fill(facts['Sandbox app client ID']);
  await dialog.getByLabel('Client Secret', { exact: true }).fill(extra.secret ?? word('Sandbox app client secret'));
  await dialog.getByLabel('Username').fill(username);
  await dialog.getByLabel('Reply to').fill('help@contoso.com');
  await dialog.getByLabel('Signature').fill('Contoso Support');
  return dialog;
}

/** Deletes the organization's mailboxes of `address` (earlier walks may have left one). */
async function removeMailboxesOf(page, address) {
  await page.evaluate(async (username) => {
    const csrf = document.querySelector('meta[name="csrf-token"]').content;
    const list = await (await fetch('/api/v1/mailboxes')).json();
    for (const m of list.items.filter((item) => item.username === username)) {
      await fetch(`/api/v1/mailboxes/${m.id}`, { method: 'DELETE', headers: { 'x-csrf-token': csrf } });
    }
  }, address);
  await page.reload();
}

/** Authorize → Continue → the sandbox's sign-in → Accept or Cancel → back on the list. */
async function authorize(page, row, decision) {
  const [user, password] = credentials('Sandbox user sign-in');
  await row.getByRole('button', { name: 'Authorize' }).click();
  await page.getByRole('dialog', { name: 'Authorize' }).getByRole('button', { name: 'Continue' }).click();
  await page.waitForURL((url) => url.href.startsWith(sandbox()));
  assert.equal(await page.getByLabel('Email, phone, or Skype').inputValue(), user, 'login_hint pre-fills the sign-in');
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Permissions requested' }).waitFor();
  await page.getByRole('button', { name: decision }).click();
  await page.waitForURL(/\/settings\/system\/outgoing-mail\?attempt=/);
}

test('the seed flow: Add → OAuth2 → Authorize → Continue → sign in → Accept → Verified → test email', async () => {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const [admin, password] = credentials('Admin sign-in');
  const [user] = credentials('Sandbox user sign-in');
  await signIn(page, admin, password);
  await openOutgoingMail(page);
  const dialog = await addSandboxMailbox(page, user);
  await page.screenshot({ path: join(SCREENSHOTS, 'add-window.png') });
  await dialog.getByRole('button', { name: 'Save' }).click();
  const row = page.getByRole('row', { name: new RegExp(user) });
  await row.getByText('Not Verified').waitFor();

  await authorize(page, row, 'Accept');
  await page.getByText('Authorized: the mailbox is Verified.').waitFor();
  await row.getByText('Verified', { exact: true }).waitFor();

  await row.getByRole('button', { name: 'Send test email' }).click();
  const testDialog = page.getByRole('dialog', { name: 'Send test email' });
  await testDialog.getByLabel('To').fill('someone@example.com');
  await testDialog.getByRole('button', { name: 'Send' }).click();
  await testDialog.getByText(/^Sent: 250/).waitFor();
  // Closing the dialog reloads the list; wait for the new page before the screenshot.
  await Promise.all([page.waitForEvent('load'), testDialog.getByRole('button', { name: 'Close' }).click()]);
  await page.getByRole('row', { name: new RegExp(user) }).getByText('Verified', { exact: true }).waitFor();
  await page.screenshot({ path: join(SCREENSHOTS, 'mailbox-list.png') });

  const inbox = await (await fetch(`${sandbox()}/_sandbox/messages`)).json();
  const message = inbox.items.find((m) => m.rcpt_to.includes('someone@example.com'));
  assert.ok(message, 'the test email is in the sandbox inbox');
  assert.match(message.raw, /Reply-To: help@contoso\.com/);
  assert.match(message.raw, /Contoso Support/);
  await page.close();
});

test('a field error keeps what was typed', async () => {
  const page = await browser.newPage();
  const [admin, password] = credentials('Admin sign-in');
  await signIn(page, admin, password);
  await openOutgoingMail(page);
  const dialog = await addSandboxMailbox(page, 'typo@contoso.com', { secret: '8c3a4a9e-2f4b-4f1e-9a6e-3b1f0c2d4e5f' });
  await dialog.getByRole('button', { name: 'Save' }).click();
  await dialog.getByText('this looks like the Secret ID').waitFor();
  assert.equal(await dialog.getByLabel('Username').inputValue(), 'typo@contoso.com');
  assert.equal(await dialog.getByLabel('Reply to').inputValue(), 'help@contoso.com');
  assert.equal(await dialog.getByLabel('Signature').inputValue(), 'Contoso Support');
  const secret = dialog.getByLabel('Client Secret', { exact: true });
  assert.equal(await secret.getAttribute('aria-invalid'), 'true', 'the field at fault is marked for assistive technology');
  assert.ok(await secret.evaluate((el) => el === document.activeElement), 'focus moves to the field at fault');
  // Closing the window gives focus back to the Add button.
  await dialog.getByRole('button', { name: 'Cancel' }).click();
  assert.ok(await page.getByRole('button', { name: 'Add ▾' }).evaluate((el) => el === document.activeElement));
  await page.close();
});

test('Cancel at consent, and an expired client secret, leave Not Verified with the reason in words', async () => {
  const page = await browser.newPage();
  const [admin, password] = credentials('Admin sign-in');
  await signIn(page, admin, password);
  await openOutgoingMail(page);
  const row = page.getByRole('row', { name: /support@contoso\.com/ });
  await row.waitFor();

  await authorize(page, row, 'Cancel');
  await page.getByText('The authorization did not succeed.').waitFor();
  await page.getByText('The permissions were declined', { exact: false }).first().waitFor();

  await setSwitches({ client_secret_expired: true });
  try {
    await authorize(page, row, 'Accept');
    await row.getByText('Not Verified').waitFor();
    await row.getByText(/The client secret has expired/).waitFor();
    await row.getByText(/New client secret/).waitFor();
  } finally {
    await setSwitches({ client_secret_expired: false });
  }
  await page.close();
});

test('a member sees the list but none of the admin actions', async () => {
  const admin = await browser.newPage();
  const [adminEmail, adminPassword] = credentials('Admin sign-in');
  await signIn(admin, adminEmail, adminPassword);
  const created = await admin.evaluate(async () => {
    const csrf = document.querySelector('input[name="csrf_token"]').value;
    const response = await fetch('/api/v1/users', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-csrf-token': csrf },
      body: JSON.stringify({ email: 'member@contoso.com', password: 'a member password', role: 'member' }),
    });
    return response.status;
  });
  assert.equal(created, 201);
  await admin.close();

  const context = await browser.newContext();
  const page = await context.newPage();
  await signIn(page, 'member@contoso.com', 'a member password');
  await openOutgoingMail(page);
  await page.getByRole('row', { name: /support@contoso\.com/ }).waitFor();
  assert.equal(await page.getByRole('button', { name: 'Add ▾' }).count(), 0);
  for (const name of ['Authorize', 'Verify', 'Send test email', 'Edit', 'Delete']) {
    assert.equal(await page.getByRole('button', { name }).count(), 0, `a member must not see ${name}`);
  }
  await context.close();
});

test('API keys are shown once and revoked; the audit log and the sandbox inbox show what happened', async () => {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const [admin, password] = credentials('Admin sign-in');
  await signIn(page, admin, password);
  await openOutgoingMail(page);
  await page.getByRole('link', { name: 'API keys' }).click();
  await page.getByRole('heading', { name: 'API keys' }).waitFor();
  await page.getByLabel('Name').fill('ticketing');
  await page.getByLabel('Role').selectOption('sender');
  await page.getByRole('button', { name: 'Create key' }).click();
  const shown = page.getByRole('dialog', { name: 'Your new API key' });
  const key = await shown.getByLabel('New API key').inputValue();
  assert.match(key, /^hk_[A-Za-z0-9_-]{43}$/);
  await Promise.all([page.waitForEvent('load'), shown.getByRole('button', { name: 'Done' }).click()]);
  const row = page.getByRole('row', { name: /ticketing/ });
  await row.getByText('Live').waitFor();
  assert.ok(!(await page.content()).includes(key), 'the key is never shown again');
  const me = await fetch(`${facts['Herald URL']}/api/v1/me`, { headers: { authorization: `Bearer ${key}` } });
  assert.equal(me.status, 200);
  page.once('dialog', (dialog) => dialog.accept());
  await Promise.all([page.waitForEvent('load'), row.getByRole('button', { name: 'Revoke' }).click()]);
  await page.getByRole('row', { name: /ticketing/ }).getByText('Revoked').waitFor();
  const after = await fetch(`${facts['Herald URL']}/api/v1/me`, { headers: { authorization: `Bearer ${key}` } });
  assert.equal(after.status, 401);

  await page.getByRole('link', { name: 'Audit log' }).click();
  await page.getByRole('heading', { name: 'Audit log' }).waitFor();
  await page.getByText('api_key.revoke').first().waitFor();
  await page.getByText('mailbox.create').first().waitFor();

  await page.getByRole('navigation', { name: 'Settings' }).getByRole('link', { name: 'System' }).click();
  await page.getByRole('link', { name: 'Sandbox inbox' }).click();
  await page.getByRole('heading', { name: 'Sandbox inbox' }).waitFor();
  await page.getByRole('cell', { name: 'Herald test message' }).first().waitFor();
  await page.screenshot({ path: join(SCREENSHOTS, 'sandbox-inbox.png') });
  await page.close();
});

test('Edit keeps a secret left blank, and Delete asks first', async () => {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const [admin, password] = credentials('Admin sign-in');
  await signIn(page, admin, password);
  await openOutgoingMail(page);
  const row = page.getByRole('row', { name: /support@contoso\.com/ });
  await row.getByRole('button', { name: 'Edit' }).click();
  const dialog = page.getByRole('dialog', { name: 'Edit' });
  assert.equal(await dialog.getByLabel('Client Secret', { exact: true }).inputValue(), '', 'secrets are never shown');
  await dialog.getByText('Leave blank to keep the stored secret.').waitFor();
  await dialog.getByLabel('Reply to').fill('desk@contoso.com');
  await Promise.all([page.waitForEvent('load'), dialog.getByRole('button', { name: 'Save' }).click()]);
  const id = await page.getByRole('row', { name: /support@contoso\.com/ }).getAttribute('data-mailbox');
  const mailbox = await page.evaluate(async (mailboxId) => (await fetch(`/api/v1/mailboxes/${mailboxId}`)).json(), id);
  assert.equal(mailbox.reply_to, 'desk@contoso.com');
  assert.equal(mailbox.has_client_secret, true, 'the blank secret kept the stored one');

  await page.getByRole('row', { name: /support@contoso\.com/ }).getByRole('button', { name: 'Delete' }).click();
  const confirm = page.getByRole('dialog', { name: 'Delete mailbox' });
  await confirm.getByRole('button', { name: 'Cancel' }).click();
  await page.getByRole('row', { name: /support@contoso\.com/ }).waitFor();
  await page.getByRole('row', { name: /support@contoso\.com/ }).getByRole('button', { name: 'Delete' }).click();
  await Promise.all([page.waitForEvent('load'), confirm.getByRole('button', { name: 'Delete' }).click()]);
  await page.getByText('No mailbox yet.').waitFor();
  await page.close();
});

test('the message log shows a message in words, and an admin saves the sending settings', async () => {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const [admin, password] = credentials('Admin sign-in');
  await signIn(page, admin, password);
  // One message through the API, with the page's session and CSRF token.
  const accepted = await page.evaluate(async () => {
    const csrf = document.querySelector('input[name="csrf_token"]').value;
    const response = await fetch('/api/v1/messages', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-csrf-token': csrf },
      body: JSON.stringify({ to: ['log-reader@example.com'], subject: 'Seen in the message log', text: 'Hello' }),
    });
    return { status: response.status, body: await response.json() };
  });
  assert.equal(accepted.status, 202, JSON.stringify(accepted.body));

  await openOutgoingMail(page);
  await page.getByRole('navigation', { name: 'Settings' }).getByRole('link', { name: 'System' }).click();
  await page.locator('.system-items').getByRole('link', { name: 'Message log' }).click();
  await page.getByRole('heading', { name: 'Message log' }).waitFor();
  const row = page.getByRole('row', { name: /Seen in the message log/ });
  await row.getByText('log-reader@example.com').waitFor();
  await row.getByText(/^(Queued|Sending|Sent|Failed|Held)$/).waitFor();
  await page.screenshot({ path: join(SCREENSHOTS, 'message-log.png') });
  await row.getByRole('link', { name: 'Seen in the message log' }).click();
  await page.getByRole('heading', { name: 'Seen in the message log' }).waitFor();
  await page.getByText(accepted.body.id, { exact: true }).waitFor();

  await page.getByRole('navigation', { name: 'Breadcrumb' }).getByRole('link', { name: 'Outgoing Mail' }).click();
  await page.getByRole('heading', { name: 'Outgoing Mail' }).waitFor();
  const settings = page.getByRole('region', { name: 'Sending settings' });
  await settings.getByText('This installation has no default sender', { exact: false }).waitFor();
  await settings.getByLabel('Hold mail until a mailbox is verified').check();
  await settings.getByLabel('Reply-To for mail sent by the default sender').fill('desk@contoso.com');
  await settings.getByRole('button', { name: 'Save' }).click();
  await settings.getByText('Saved.').waitFor();
  await page.reload();
  const reloaded = page.getByRole('region', { name: 'Sending settings' });
  assert.ok(await reloaded.getByLabel('Hold mail until a mailbox is verified').isChecked());
  assert.equal(await reloaded.getByLabel('Reply-To for mail sent by the default sender').inputValue(), 'desk@contoso.com');
  const org = await page.evaluate(async () => (await fetch('/api/v1/organization')).json());
  assert.equal(org.no_mailbox_policy, 'hold');
  assert.equal(org.reply_to, 'desk@contoso.com');
  await page.close();
});

test('an admin adds a relay credential, sees its password once, and deletes it', async () => {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const [admin, password] = credentials('Admin sign-in');
  await signIn(page, admin, password);
  // A mailbox of its own, so this check does not depend on the others' order.
  const mailbox = await page.evaluate(async () => {
    const csrf = document.querySelector('input[name="csrf_token"]').value;
    const response = await fetch('/api/v1/mailboxes', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-csrf-token': csrf },
      body: JSON.stringify({ name: 'Front desk', auth: 'basic', provider: 'sandbox', username: 'frontdesk@contoso.com', password: 'not checked here' }),
    });
    return { status: response.status, body: await response.json() };
  });
  assert.equal(mailbox.status, 201, JSON.stringify(mailbox.body));

  await openOutgoingMail(page);
  await page.getByRole('navigation', { name: 'Settings' }).getByRole('link', { name: 'System' }).click();
  await page.locator('.system-items').getByRole('link', { name: 'Relay credentials' }).click();
  await page.getByRole('heading', { name: 'Relay credentials', level: 1 }).waitFor();
  await page.getByRole('region', { name: 'How a device connects' }).getByText('HERALD_RELAY_LISTEN').waitFor();

  await page.getByRole('button', { name: 'Add', exact: true }).click();
  const dialog = page.getByRole('dialog', { name: 'Add relay credential' });
  await dialog.getByLabel('Name').fill('Scanner, 2nd floor');
  await dialog.getByLabel('Front desk').check();
  await dialog.getByLabel('Allowed networks').fill('192.168.10.0/24\n10.0.0.300');
  await dialog.getByRole('button', { name: 'Add', exact: true }).click();
  await dialog.getByText('`10.0.0.300` is not an address', { exact: false }).waitFor();
  assert.equal(await dialog.getByLabel('Name').inputValue(), 'Scanner, 2nd floor', 'what was typed stays');
  await dialog.getByLabel('Allowed networks').fill('192.168.10.0/24, 10.0.0.7');
  await dialog.getByRole('button', { name: 'Add', exact: true }).click();

  const shown = page.getByRole('dialog', { name: 'Relay credential added' });
  await shown.getByText('cannot show it again', { exact: false }).waitFor();
  const username = await shown.getByRole('textbox', { name: 'Username' }).inputValue();
  const secret = await shown.getByRole('textbox', { name: 'Password' }).inputValue();
  assert.match(username, /^relay-[a-z0-9]{12}$/);
  assert.match(secret, /^[A-Za-z0-9]{32}$/);
  await page.screenshot({ path: join(SCREENSHOTS, 'relay-password.png') });
  await Promise.all([page.waitForEvent('load'), shown.getByRole('button', { name: 'Done' }).click()]);

  const row = page.getByRole('row', { name: /Scanner, 2nd floor/ });
  await row.getByText(username).waitFor();
  await row.getByRole('cell', { name: 'Front desk', exact: true }).waitFor();
  await row.getByText('192.168.10.0/24, 10.0.0.7/32').waitFor();
  await row.getByText("Sent as the mailbox; the device's address becomes Reply-To").waitFor();
  await row.getByRole('cell', { name: 'Never' }).waitFor();
  assert.ok(!(await page.content()).includes(secret), 'the password is never shown again');

  await row.getByRole('button', { name: 'Delete Scanner, 2nd floor' }).click();
  const confirm = page.getByRole('dialog', { name: 'Delete relay credential' });
  await confirm.getByText('Scanner, 2nd floor').waitFor();
  await Promise.all([page.waitForEvent('load'), confirm.getByRole('button', { name: 'Delete' }).click()]);
  await page.getByText('No relay credential yet.', { exact: false }).waitFor();

  // A printer that cannot log in: known by its private network alone, with no password.
  await page.getByRole('button', { name: 'Add', exact: true }).click();
  await dialog.getByLabel('Name').fill('Printer, lobby');
  await dialog.getByLabel('Front desk').check();
  await dialog.getByLabel('The device cannot log in', { exact: false }).check();
  await dialog.getByLabel('Allowed networks').fill('8.8.8.0/24');
  await dialog.getByRole('button', { name: 'Add', exact: true }).click();
  await dialog.getByText('is not a private or loopback network', { exact: false }).waitFor();
  await dialog.getByLabel('Allowed networks').fill('192.168.20.0/24');
  await dialog.getByRole('button', { name: 'Add', exact: true }).click();
  await shown.getByText('This credential has no password', { exact: false }).waitFor();
  assert.equal(await shown.getByRole('textbox', { name: 'Password' }).count(), 0);
  await Promise.all([page.waitForEvent('load'), shown.getByRole('button', { name: 'Done' }).click()]);
  await page.getByRole('row', { name: /Printer, lobby/ }).getByText('192.168.20.0/24 (no login: known by its network)').waitFor();
  await page.close();
});

test('SMTP AUTH off: the row offers Send with Microsoft Graph, which authorizes and sends', async () => {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const [admin, password] = credentials('Admin sign-in');
  const [user] = credentials('Sandbox user sign-in');
  await signIn(page, admin, password);
  await openOutgoingMail(page);
  await removeMailboxesOf(page, user);
  await setSwitches({ smtp_auth_disabled: true });
  try {
    const dialog = await addSandboxMailbox(page, user);
    assert.equal(await dialog.getByLabel('Send with').inputValue(), 'smtp', 'SMTP is the default');
    await Promise.all([page.waitForEvent('load'), dialog.getByRole('button', { name: 'Save' }).click()]);
    const row = () => page.getByRole('row', { name: new RegExp(user) });
    await authorize(page, row(), 'Accept');
    await row().getByText(/SMTP AUTH is disabled/).waitFor();

    await Promise.all([page.waitForEvent('load'), row().getByRole('button', { name: 'Send with Microsoft Graph instead' }).click()]);
    await row().getByText('Microsoft Graph', { exact: true }).waitFor();
    await authorize(page, row(), 'Accept');
    await page.getByText('Authorized: the mailbox is Verified.').waitFor();
    await row().getByText('Verified', { exact: true }).waitFor();

    await row().getByRole('button', { name: 'Send test email' }).click();
    const testDialog = page.getByRole('dialog', { name: 'Send test email' });
    await testDialog.getByLabel('To').fill('graph-reader@example.com');
    await testDialog.getByRole('button', { name: 'Send' }).click();
    await testDialog.getByText(/^Sent: 250/).waitFor();
    await page.screenshot({ path: join(SCREENSHOTS, 'graph-test-email.png') });
    const inbox = await (await fetch(`${sandbox()}/_sandbox/messages`)).json();
    const message = inbox.items.find((m) => m.rcpt_to.includes('graph-reader@example.com'));
    assert.ok(message, 'the test email is in the sandbox inbox');
    assert.equal(message.mechanism, 'graph', 'it went through Microsoft Graph, not SMTP');
    assert.match(message.raw, /Reply-To: help@contoso\.com/);
  } finally {
    await setSwitches({ smtp_auth_disabled: false });
  }
  await page.close();
});

test('app-only with Microsoft Graph: Sign in as App-only, no Authorize, Verify after admin consent, and the test email goes through Graph', async () => {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const [admin, password] = credentials('Admin sign-in');
  const [user] = credentials('Sandbox user sign-in');
  const clientId = facts['Sandbox app client ID'];
  await signIn(page, admin, password);
  await openOutgoingMail(page);
  await removeMailboxesOf(page, user);
  // Admin consent not given yet: the app has no application permission.
  const grant = (permissions) => fetch(`${sandbox()}/_sandbox/apps/${clientId}/permissions`, {
    method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify(permissions),
  });
  assert.equal((await grant([])).status, 200);

  const dialog = await addSandboxMailbox(page, user);
  await dialog.getByLabel('Sign in as').selectOption({ label: 'App-only' });
  await dialog.getByLabel('Send with').selectOption({ label: 'Microsoft Graph' });
  await Promise.all([page.waitForEvent('load'), dialog.getByRole('button', { name: 'Save' }).click()]);
  const row = () => page.getByRole('row', { name: new RegExp(user) });
  await row().getByText('Microsoft Graph', { exact: true }).waitFor();
  assert.equal(await row().getByRole('button', { name: 'Authorize' }).count(), 0, 'nobody signs in for an app-only mailbox');
  await row().getByText(/Click Verify/).waitFor();

  // Still Not Verified: the page says why, in Microsoft's terms.
  await row().getByRole('button', { name: 'Verify' }).click();
  await page.getByText(/Still Not Verified: .*application permission Mail\.Send/).waitFor();

  assert.equal((await grant(['Mail.Send'])).status, 200);
  await Promise.all([page.waitForEvent('load'), row().getByRole('button', { name: 'Verify' }).click()]);
  await row().getByText('Verified', { exact: true }).waitFor();

  await row().getByRole('button', { name: 'Send test email' }).click();
  const testDialog = page.getByRole('dialog', { name: 'Send test email' });
  await testDialog.getByLabel('To').fill('app-reader@example.com');
  await testDialog.getByRole('button', { name: 'Send' }).click();
  await testDialog.getByText(/^Sent: 250/).waitFor();
  await page.screenshot({ path: join(SCREENSHOTS, 'app-only-graph.png') });
  const inbox = await (await fetch(`${sandbox()}/_sandbox/messages`)).json();
  const message = inbox.items.find((m) => m.rcpt_to.includes('app-reader@example.com'));
  assert.ok(message, 'the test email is in the sandbox inbox');
  assert.equal(message.mechanism, 'graph');
  await page.close();
});

test('app-only with Microsoft Graph and a certificate: Herald makes it, the admin downloads and uploads it, Verify, send, and Renew makes the next one', async () => {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 }, acceptDownloads: true });
  const [admin, password] = credentials('Admin sign-in');
  const [user] = credentials('Sandbox user sign-in');
  const clientId = facts['Sandbox app client ID'];
  await signIn(page, admin, password);
  await openOutgoingMail(page);
  await removeMailboxesOf(page, user);
  const granted = await fetch(`${sandbox()}/_sandbox/apps/${clientId}/permissions`, {
    method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify(['Mail.Send']),
  });
  assert.equal(granted.status, 200);

  const dialog = await addSandboxMailbox(page, user);
  await dialog.getByLabel('Sign in as').selectOption({ label: 'App-only' });
  await dialog.getByLabel('Send with').selectOption({ label: 'Microsoft Graph' });
  await dialog.getByLabel('Credential').selectOption({ label: 'Certificate' });
  assert.equal(await dialog.getByLabel('Client Secret', { exact: true }).isVisible(), false, 'a certificate replaces the secret');
  await dialog.getByText(/Herald makes the certificate when you click Save/).waitFor();
  await Promise.all([page.waitForEvent('load'), dialog.getByRole('button', { name: 'Save' }).click()]);
  const row = () => page.getByRole('row', { name: new RegExp(user) });
  await row().getByText(/Certificate until \d{4}-\d{2}-\d{2}/).waitFor();
  await row().getByText(/has not accepted yet/).waitFor();

  // Not uploaded yet: Verify says what to upload, and where.
  await row().getByRole('button', { name: 'Verify' }).click();
  await page.getByText(/Still Not Verified: .*does not hold it \(AADSTS700027\)/).waitFor();

  // Download certificate (.cer), then upload it to the app registration as the portal does.
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    row().getByRole('link', { name: 'Download certificate' }).click(),
  ]);
  assert.match(download.suggestedFilename(), /\.cer$/);
  const cer = readFileSync(await download.path());
  const uploaded = await fetch(`${sandbox()}/_sandbox/apps/${clientId}/certificates`, { method: 'POST', body: cer });
  assert.equal(uploaded.status, 200);
  const app = await uploaded.json();
  assert.ok(app.certificates.length >= 1);

  await Promise.all([page.waitForEvent('load'), row().getByRole('button', { name: 'Verify' }).click()]);
  await row().getByText('Verified', { exact: true }).waitFor();
  await row().getByRole('button', { name: 'Send test email' }).click();
  const testDialog = page.getByRole('dialog', { name: 'Send test email' });
  await testDialog.getByLabel('To').fill('cert-reader@example.com');
  await testDialog.getByRole('button', { name: 'Send' }).click();
  await testDialog.getByText(/^Sent: 250/).waitFor();
  await Promise.all([page.waitForEvent('load'), testDialog.getByRole('button', { name: 'Close' }).click()]);
  const inbox = await (await fetch(`${sandbox()}/_sandbox/messages`)).json();
  const message = inbox.items.find((m) => m.rcpt_to.includes('cert-reader@example.com'));
  assert.ok(message, 'the test email is in the sandbox inbox');
  assert.equal(message.mechanism, 'graph');

  // Renew in Edit: the next certificate waits beside the one in use.
  await row().getByRole('button', { name: 'Edit' }).click();
  const edit = page.getByRole('dialog', { name: 'Edit' });
  const thumbprint = await edit.locator('[data-certificate="thumbprint"]').textContent();
  assert.ok(app.certificates.some((c) => c.thumbprint === thumbprint), 'the portal lists the thumbprint Herald shows');
  await edit.getByRole('button', { name: 'Renew certificate' }).click();
  await edit.getByRole('link', { name: 'Download renewed certificate' }).waitFor();
  await page.screenshot({ path: join(SCREENSHOTS, 'app-only-certificate.png') });
  await edit.getByRole('button', { name: 'Cancel' }).click();
  await page.close();
});

test('a shared mailbox: Sign-in account and From name in the window, Authorize as the user, and the mail comes from the shared mailbox', async () => {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const [admin, password] = credentials('Admin sign-in');
  const [user] = credentials('Sandbox user sign-in');
  const shared = word('Sandbox shared mailbox');
  await signIn(page, admin, password);
  await openOutgoingMail(page);
  await removeMailboxesOf(page, shared);
  const dialog = await addSandboxMailbox(page, shared);
  await dialog.getByLabel('Sign-in account').fill(user);
  await dialog.getByLabel('From name').fill('Contoso Sales');
  await Promise.all([page.waitForEvent('load'), dialog.getByRole('button', { name: 'Save' }).click()]);
  const row = () => page.getByRole('row', { name: new RegExp(shared) });
  // The sign-in page is filled with the account that signs in, not the shared mailbox.
  await authorize(page, row(), 'Accept');
  await row().getByText('Verified', { exact: true }).waitFor();

  await row().getByRole('button', { name: 'Edit' }).click();
  const edit = page.getByRole('dialog', { name: 'Edit' });
  assert.equal(await edit.getByLabel('Sign-in account').inputValue(), user);
  assert.equal(await edit.getByLabel('From name').inputValue(), 'Contoso Sales');
  await edit.getByRole('button', { name: 'Cancel' }).click();

  await row().getByRole('button', { name: 'Send test email' }).click();
  const testDialog = page.getByRole('dialog', { name: 'Send test email' });
  await testDialog.getByLabel('To').fill('shared-reader@example.com');
  await testDialog.getByRole('button', { name: 'Send' }).click();
  await testDialog.getByText(/^Sent: 250/).waitFor();
  const inbox = await (await fetch(`${sandbox()}/_sandbox/messages`)).json();
  const message = inbox.items.find((m) => m.rcpt_to.includes('shared-reader@example.com'));
  assert.ok(message, 'the test email is in the sandbox inbox');
  assert.equal(message.mail_from, shared);
  await page.close();
});

test('Use a code instead: the Authorize window shows a device code, a person enters it on another device, and the row turns Verified', async () => {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const [admin, password] = credentials('Admin sign-in');
  const [user, userPassword] = credentials('Sandbox user sign-in');
  // The sandbox asks for a poll every second, so the walk does not wait five.
  await setSwitches({ device_interval_secs: 1 });
  await signIn(page, admin, password);
  await openOutgoingMail(page);
  await removeMailboxesOf(page, user);
  const dialog = await addSandboxMailbox(page, user);
  await Promise.all([page.waitForEvent('load'), dialog.getByRole('button', { name: 'Save' }).click()]);
  const row = () => page.getByRole('row', { name: new RegExp(user) });
  await row().getByRole('button', { name: 'Authorize' }).click();
  const authorize = page.getByRole('dialog', { name: 'Authorize' });
  await authorize.getByRole('link', { name: 'Use a code instead' }).click();
  await authorize.locator('#authorize-device').waitFor({ state: 'visible' });
  const code = (await authorize.locator('#device-code').textContent()).trim();
  assert.match(code, /^[A-Z0-9]{9}$/);
  const uri = await authorize.locator('#device-uri').getAttribute('href');
  assert.ok(uri.startsWith(sandbox()), uri);

  // On another device (another page here): the code, the sign-in, Accept.
  const other = await browser.newPage();
  await other.goto(uri);
  await other.getByLabel('Code').fill(code);
  await other.getByRole('button', { name: 'Next' }).click();
  // The device's page knows no account: the person types it, as at Microsoft.
  await other.getByLabel('Email, phone, or Skype').fill(user);
  await other.getByLabel('Password').fill(userPassword);
  await other.getByRole('button', { name: 'Sign in' }).click();
  await other.getByRole('button', { name: 'Accept' }).click();
  await other.close();

  await page.waitForURL(/\/settings\/system\/outgoing-mail\?attempt=/);
  await row().getByText('Verified', { exact: true }).waitFor();
  await setSwitches({ device_interval_secs: 5 });
  await page.close();
});

test('Google with Sign in as App-only asks for the service account key instead of the client ID and secret', async () => {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const [admin, password] = credentials('Admin sign-in');
  await signIn(page, admin, password);
  await openOutgoingMail(page);
  await page.getByRole('button', { name: 'Add ▾' }).click();
  await page.getByRole('menuitem', { name: 'OAuth2' }).click();
  const dialog = page.getByRole('dialog', { name: 'Add' });
  await dialog.getByLabel('Provider').selectOption({ label: 'Google' });
  assert.ok(await dialog.getByLabel('Client ID').isVisible());
  await dialog.getByLabel('Sign in as').selectOption({ label: 'App-only' });
  await dialog.getByLabel('Service account key (JSON)').waitFor();
  assert.equal(await dialog.getByLabel('Client ID').isVisible(), false);
  assert.equal(await dialog.getByLabel('Client Secret', { exact: true }).isVisible(), false);
  await dialog.getByText('Manage Domain Wide Delegation', { exact: false }).waitFor();
  // A key that is no JSON is refused at its own field.
  await dialog.getByLabel('Service account key (JSON)').fill('not a key');
  await dialog.getByLabel('Username').fill('reports@contoso.com');
  await dialog.getByRole('button', { name: 'Save' }).click();
  await dialog.locator('[data-error-for="service_account_key"]').getByText(/\S/).waitFor();
  await dialog.getByLabel('Sign in as').selectOption({ label: 'Delegated' });
  assert.ok(await dialog.getByLabel('Client ID').isVisible());
  assert.equal(await dialog.getByLabel('Service account key (JSON)').isVisible(), false);
  await dialog.getByRole('button', { name: 'Cancel' }).click();
  await page.close();
});

test("a client secret's whole life: a new secret is applied and the mailbox stays Verified; an expired one is replaced and the mailbox comes back without Authorize", async () => {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const [admin, password] = credentials('Admin sign-in');
  const [user] = credentials('Sandbox user sign-in');
  const clientId = facts['Sandbox app client ID'];
  // Tokens that live a minute: every check goes back to the token endpoint with the secret.
  await setSwitches({ access_token_lifetime_secs: 60 });
  const newSecret = async () => {
    const response = await fetch(`${sandbox()}/_sandbox/apps/${clientId}/secrets`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ days: 365 }),
    });
    assert.equal(response.status, 200);
    return response.json();
  };
  const expire = async (secret) => {
    const response = await fetch(`${sandbox()}/_sandbox/apps/${clientId}/secrets/${secret.key_id}/expire`, { method: 'POST' });
    assert.equal(response.status, 200);
  };
  const applySecret = async (value) => {
    await row().getByRole('button', { name: 'Edit' }).click();
    const edit = page.getByRole('dialog', { name: 'Edit' });
    await edit.getByLabel('Client Secret', { exact: true }).fill(value);
    return edit;
  };
  const row = () => page.getByRole('row', { name: new RegExp(user) });

  await signIn(page, admin, password);
  await openOutgoingMail(page);
  await removeMailboxesOf(page, user);
  const dialog = await addSandboxMailbox(page, user);
  await Promise.all([page.waitForEvent('load'), dialog.getByRole('button', { name: 'Save' }).click()]);
  await authorize(page, row(), 'Accept');
  await row().getByText('Verified', { exact: true }).waitFor();

  // "Before the secret expires you must create a new secret and apply it."
  const second = await newSecret();
  let edit = await applySecret(second.value);
  await Promise.all([page.waitForEvent('load'), edit.getByRole('button', { name: 'Save' }).click()]);
  await row().getByText('Verified', { exact: true }).waitFor();
  await row().getByText(/Unknown/).waitFor();

  // A wrong Value is refused at once, and the secret in use keeps working.
  edit = await applySecret('abc8Q~not.the.value.of.any.secret.0123456');
  await edit.getByRole('button', { name: 'Save' }).click();
  await edit.locator('[data-error-for="client_secret"]').getByText(/AADSTS7000215/).waitFor();
  await edit.getByRole('button', { name: 'Cancel' }).click();

  // Left to expire: the mailbox turns Not Verified with the reason.
  await expire(second);
  await Promise.all([page.waitForEvent('load'), row().getByRole('button', { name: 'Verify' }).click()]);
  await row().getByText('Not Verified', { exact: true }).waitFor();
  await row().getByText(/AADSTS7000222/).waitFor();

  // A new secret restores it, with no Authorize: the refresh token still works.
  const third = await newSecret();
  edit = await applySecret(third.value);
  await Promise.all([page.waitForEvent('load'), edit.getByRole('button', { name: 'Save' }).click()]);
  await row().getByText('Verified', { exact: true }).waitFor();
  await page.screenshot({ path: join(SCREENSHOTS, 'secret-rotated.png') });
  await setSwitches({ access_token_lifetime_secs: 3599 });
  await page.close();
});
