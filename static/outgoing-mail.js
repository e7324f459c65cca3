// Settings › System › Outgoing Mail: the Add window, provider presets, and the row actions.
// Small and dependency-free; every change goes through the JSON API with the session's CSRF
// token, and errors are shown next to their fields without losing what was typed.
(() => {
  'use strict';
  const { api, showErrors } = window.Herald;
  const $ = (selector, root = document) => root.querySelector(selector);
  const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

  function closeOnButtons(dialog) {
    $$('[data-close]', dialog).forEach((b) => b.addEventListener('click', () => dialog.close()));
  }
  $$('dialog').forEach(closeOnButtons);

  // Copy buttons.
  document.addEventListener('click', (event) => {
    const button = event.target.closest('[data-copy], [data-copy-text]');
    if (!button) return;
    const text = button.dataset.copyText ?? document.getElementById(button.dataset.copy).value;
    navigator.clipboard?.writeText(text).then(() => {
      const label = button.textContent;
      button.textContent = 'Copied';
      setTimeout(() => { button.textContent = label; }, 1500);
    });
  });

  // Add ▾ menu.
  const addButton = $('#add-button');
  const addMenu = $('#add-menu');
  const toggleMenu = (open) => {
    addMenu.hidden = !open;
    addButton.setAttribute('aria-expanded', String(open));
    if (open) $('[role="menuitem"]', addMenu).focus();
  };
  addButton.addEventListener('click', () => toggleMenu(addMenu.hidden));
  addMenu.addEventListener('keydown', (event) => {
    const items = $$('[role="menuitem"]', addMenu);
    const at = items.indexOf(document.activeElement);
    if (event.key === 'Escape') { toggleMenu(false); addButton.focus(); }
    if (event.key === 'ArrowDown') { event.preventDefault(); items[(at + 1) % items.length].focus(); }
    if (event.key === 'ArrowUp') { event.preventDefault(); items[(at - 1 + items.length) % items.length].focus(); }
  });
  addMenu.addEventListener('focusout', (event) => {
    if (!addMenu.contains(event.relatedTarget)) toggleMenu(false);
  });
  document.addEventListener('click', (event) => {
    if (!event.target.closest('.menu')) toggleMenu(false);
  });

  // The Add window.
  const dialog = $('#mailbox-dialog');
  const form = $('#mailbox-form');
  const field = (name) => form.elements.namedItem(name);
  // Microsoft's clouds: the sign-in host and the SMTP host of each (as Herald's presets have them).
  const clouds = {
    global: { login: 'login.microsoftonline.com', smtp: 'smtp.office365.com' },
    usgov: { login: 'login.microsoftonline.us', smtp: 'smtp.office365.us' },
    dod: { login: 'login.microsoftonline.us', smtp: 'smtp.office365.us' },
    china: { login: 'login.chinacloudapi.cn', smtp: 'smtp.partner.outlook.cn' },
  };
  const cloudOf = () => clouds[field('cloud').value] ?? clouds.global;
  const presets = {
    microsoft: (tenant) => ({
      authorization_url: tenant ? `https://${cloudOf().login}/${tenant}/oauth2/v2.0/authorize` : '',
      token_url: tenant ? `https://${cloudOf().login}/${tenant}/oauth2/v2.0/token` : '',
      host: cloudOf().smtp, port: '587', security: 'starttls',
    }),
    google: () => ({
      authorization_url: 'https://accounts.google.com/o/oauth2/v2/auth',
      token_url: 'https://oauth2.googleapis.com/token',
      host: 'smtp.gmail.com', port: '587', security: 'starttls',
    }),
    sandbox: () => {
      const d = dialog.dataset;
      return {
        authorization_url: `${d.sandboxBase}/${d.sandboxTenant}/oauth2/v2.0/authorize`,
        token_url: `${d.sandboxBase}/${d.sandboxTenant}/oauth2/v2.0/token`,
        host: d.sandboxHost, port: d.sandboxPort, security: 'starttls',
      };
    },
    custom: () => ({}),
  };

  function applyPreset() {
    const provider = field('provider').value;
    const values = presets[provider](field('tenant').value.trim());
    for (const [name, value] of Object.entries(values)) field(name).value = value;
    $$('.provider-microsoft', form).forEach((el) => { el.hidden = provider !== 'microsoft' || field('auth').value !== 'oauth2'; });
    showTransport(field('auth').value, provider);
    $('.guide-microsoft', dialog).hidden = provider === 'google';
    $('.guide-google', dialog).hidden = provider !== 'google';
    showCustom();
  }

  // Scopes are asked for a provider that is not a preset, and filled in when its
  // Authorization URL is Microsoft's (any cloud) or Google's.
  const MICROSOFT_LOGIN = /^https:\/\/(login\.microsoftonline\.(com|us)|login\.chinacloudapi\.cn)\//i;
  const knownScopes = (url) => {
    if (MICROSOFT_LOGIN.test(url)) {
      const resource = /\.us\//i.test(url) ? 'https://outlook.office365.us' : /chinacloudapi/i.test(url) ? 'https://partner.outlook.cn' : 'https://outlook.office.com';
      return `${resource}/SMTP.Send offline_access openid profile email`;
    }
    if (/^https:\/\/accounts\.google\.com\//i.test(url)) return 'https://mail.google.com/ openid email';
    return null;
  };
  let scopesFilled = '';
  function showCustom() {
    const custom = field('auth').value === 'oauth2' && field('provider').value === 'custom';
    $$('.provider-custom', form).forEach((el) => { el.hidden = !custom; });
  }
  field('authorization_url').addEventListener('input', () => {
    if (field('provider').value !== 'custom') return;
    const scopes = knownScopes(field('authorization_url').value.trim());
    // Fill only what Herald filled before, never over what the admin typed.
    if (scopes && (!field('scopes').value.trim() || field('scopes').value === scopesFilled)) {
      field('scopes').value = scopes;
      scopesFilled = scopes;
    }
  });

  // Microsoft Graph is Microsoft's (and the sandbox's, which stands in for it), with OAuth2.
  function showTransport(auth, provider) {
    const graph = auth === 'oauth2' && (provider === 'microsoft' || provider === 'sandbox');
    $$('.provider-graph', form).forEach((el) => { el.hidden = !graph; });
    if (!graph) field('transport').value = 'smtp';
    // App-only: client credentials (Microsoft's, and any other server that grants it), or a
    // Google Workspace service account.
    const app = auth === 'oauth2';
    $$('.provider-app', form).forEach((el) => { el.hidden = !app; });
    if (!app) field('credential').value = 'delegated';
    showGoogleApp();
  }

  // A Google service account brings its own client and token URL in its JSON key.
  function showGoogleApp() {
    const googleApp = field('auth').value === 'oauth2' && field('provider').value === 'google'
      && field('credential').value === 'app';
    const oauth2 = field('auth').value === 'oauth2';
    $$('.google-app', form).forEach((el) => { el.hidden = !googleApp; });
    for (const name of ['client_id', 'client_auth']) {
      field(name).closest('.field').hidden = googleApp || !oauth2;
    }
    if (googleApp) {
      $$('.secret-only, .certificate-only', form).forEach((el) => { el.hidden = true; });
    } else {
      showCredential(field('id').value ? currentMailbox : null);
    }
  }

  // A certificate replaces the client secret: its fields give way to the certificate's.
  function showCredential(mailbox) {
    const oauth2 = field('auth').value === 'oauth2';
    const certificate = oauth2 && field('client_auth').value === 'certificate';
    $$('.secret-only', form).forEach((el) => { el.hidden = !oauth2 || certificate; });
    $$('.certificate-only', form).forEach((el) => { el.hidden = !certificate; });
    const current = mailbox?.certificate;
    $('.certificate-new', form).hidden = Boolean(current);
    $('.certificate-current', form).hidden = !current;
    if (!current) return;
    const set = (name, value) => { $(`[data-certificate="${name}"]`, form).textContent = value ?? ''; };
    set('thumbprint', current.thumbprint);
    set('expires_at', String(current.expires_at).slice(0, 10));
    const next = mailbox.next_certificate;
    $('.certificate-next', form).hidden = !next;
    set('next_thumbprint', next?.thumbprint);
    set('next_expires_at', next ? String(next.expires_at).slice(0, 10) : '');
    $('[data-certificate-link="current"]', form).href = `/api/v1/mailboxes/${mailbox.id}/certificate`;
    $('[data-certificate-link="next"]', form).href = `/api/v1/mailboxes/${mailbox.id}/certificate?renewed=true`;
  }

  function showFor(auth, editing) {
    field('auth').value = auth;
    $$('.oauth2-only', dialog).forEach((el) => { el.hidden = auth !== 'oauth2'; });
    $$('.basic-only', dialog).forEach((el) => { el.hidden = auth !== 'basic'; });
    $$('.edit-only', dialog).forEach((el) => { el.hidden = !editing; });
    $$('.provider-microsoft', dialog).forEach((el) => { el.hidden = auth !== 'oauth2' || field('provider').value !== 'microsoft'; });
    showTransport(auth, field('provider').value);
    showCredential(null);
    showCustom();
    // The provider of a saved mailbox is fixed: changing it would rewrite its settings.
    field('provider').disabled = editing;
    updateBasicNote();
  }

  function updateBasicNote() {
    const basic = field('auth').value === 'basic';
    const host = field('host').value.trim();
    // High Volume Email keeps taking passwords on its own endpoint.
    const microsoftHost = /(^|\.)office365\.com$|(^|\.)outlook\.com$/i.test(host) && !/hve/i.test(host);
    $('.basic-microsoft', form).hidden = !(basic && microsoftHost);
  }

  function openAdd(auth) {
    form.reset();
    field('id').value = '';
    $('#mailbox-title').textContent = 'Add';
    showErrors(form, null);
    showFor(auth, false);
    if (auth === 'oauth2') {
      field('provider').value = 'microsoft';
      applyPreset();
    } else {
      field('port').value = '587';
    }
    addButton.focus();
    toggleMenu(false);
    dialog.showModal();
    field(auth === 'oauth2' ? 'provider' : 'host').focus();
  }

  function openEdit(mailbox) {
    form.reset();
    showErrors(form, null);
    field('id').value = mailbox.id;
    $('#mailbox-title').textContent = 'Edit';
    showFor(mailbox.auth, true);
    for (const name of ['provider', 'cloud', 'tenant', 'credential', 'transport', 'client_auth', 'host', 'port', 'security', 'authorization_url', 'token_url', 'client_id', 'username', 'from_name', 'sign_in_account', 'reply_to', 'signature']) {
      if (field(name) && mailbox[name] !== null && mailbox[name] !== undefined) field(name).value = mailbox[name];
    }
    currentMailbox = mailbox;
    showCredential(mailbox);
    $('.secret-date-read', form).hidden = mailbox.client_secret_expiry_source !== 'microsoft';
    field('scopes').value = (mailbox.scopes ?? []).join(' ');
    // A sign-in account that is the mailbox itself is shown blank: it follows the Username.
    if (mailbox.sign_in_account === mailbox.username) field('sign_in_account').value = '';
    showCustom();
    if (mailbox.client_secret_expires_at) field('client_secret_expires_at').value = mailbox.client_secret_expires_at;
    $$('.provider-microsoft', form).forEach((el) => { el.hidden = mailbox.auth !== 'oauth2' || mailbox.provider !== 'microsoft'; });
    showTransport(mailbox.auth, mailbox.provider);
    if (mailbox.transport) field('transport').value = mailbox.transport;
    $('.guide-microsoft', dialog).hidden = mailbox.provider === 'google';
    $('.guide-google', dialog).hidden = mailbox.provider !== 'google';
    dialog.showModal();
  }

  $$('[data-add]').forEach((b) => b.addEventListener('click', () => openAdd(b.dataset.add)));
  // Closing a window gives focus back to what opened it.
  let opener = null;
  document.addEventListener('click', (event) => {
    const b = event.target.closest('[data-action], #add-button');
    if (b) opener = b;
  }, true);
  $$('dialog').forEach((d) => d.addEventListener('close', () => {
    if (opener && document.contains(opener)) opener.focus(); else addButton.focus();
  }));
  field('provider').addEventListener('change', applyPreset);
  field('tenant').addEventListener('input', () => {
    if (field('provider').value !== 'microsoft') return;
    if (field('id').value) {
      // Editing: only the endpoints follow the tenant; the server, port and security stay.
      const tenant = field('tenant').value.trim();
      const values = presets.microsoft(tenant);
      field('authorization_url').value = values.authorization_url;
      field('token_url').value = values.token_url;
    } else {
      applyPreset();
    }
  });
  field('host').addEventListener('input', updateBasicNote);
  // Another cloud: its sign-in endpoints and SMTP host.
  field('cloud').addEventListener('change', () => {
    if (field('provider').value !== 'microsoft') return;
    const values = presets.microsoft(field('tenant').value.trim());
    field('authorization_url').value = values.authorization_url;
    field('token_url').value = values.token_url;
    field('host').value = values.host;
  });
  let currentMailbox = null;
  field('credential').addEventListener('change', showGoogleApp);
  field('client_auth').addEventListener('change', () => showCredential(field('id').value ? currentMailbox : null));
  $('[data-renew]', form).addEventListener('click', async (event) => {
    const id = field('id').value;
    event.target.disabled = true;
    const result = await api('POST', `/mailboxes/${id}/certificate/renew`);
    event.target.disabled = false;
    if (!result.ok) { showErrors(form, result.data); return; }
    currentMailbox = { ...currentMailbox, ...result.data };
    showCredential(currentMailbox);
    $('.certificate-next a', form).focus();
  });

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const id = field('id').value;
    const auth = field('auth').value;
    const body = { auth };
    const names = auth === 'oauth2'
      ? ['provider', 'cloud', 'tenant', 'credential', 'transport', 'client_auth', 'host', 'port', 'security', 'authorization_url', 'token_url', 'scopes', 'client_id', 'client_secret', 'next_client_secret', 'service_account_key', 'client_secret_expires_at', 'username', 'from_name', 'sign_in_account', 'reply_to', 'signature']
      : ['host', 'port', 'security', 'username', 'from_name', 'password', 'reply_to', 'signature'];
    for (const name of names) {
      const value = field(name).value.trim();
      if (name === 'port') {
        if (value && !/^\d+$/.test(value)) {
          showErrors(form, { errors: [{ field: 'port', message: 'must be a number between 1 and 65535' }] });
          field('port').focus();
          return;
        }
        if (value) body.port = Number(value);
        continue;
      }
      if (['client_secret', 'next_client_secret', 'password'].includes(name) && !value) continue; // blank keeps the stored secret
      if (['client_secret', 'next_client_secret', 'client_secret_expires_at'].includes(name) && body.client_auth === 'certificate') continue;
      const googleApp = body.provider === 'google' && body.credential === 'app';
      if (name === 'service_account_key') {
        if (googleApp && value) body.service_account_key = field(name).value;
        continue;
      }
      if (googleApp && ['client_id', 'client_secret', 'client_secret_expires_at'].includes(name)) continue;
      if ((name === 'tenant' || name === 'cloud') && (body.provider !== 'microsoft')) continue;
      if (name === 'scopes') {
        if (body.provider === 'custom' || (id && currentMailbox?.provider === 'custom')) {
          if (value) body.scopes = value.split(/\s+/);
        }
        continue;
      }
      if (!value) { if (id && ['reply_to', 'signature', 'client_secret_expires_at', 'from_name', 'sign_in_account'].includes(name)) body[name] = null; continue; }
      body[name] = name === 'signature' ? field(name).value : value;
    }
    if (!id) {
      body.name = body.username ?? '';
      if (auth === 'basic') body.provider = /office365\.com$/i.test(body.host ?? '') ? 'microsoft' : 'custom';
    } else {
      delete body.auth;
      delete body.provider;
    }
    const save = form.querySelector('button[type="submit"]');
    save.disabled = true;
    const result = id ? await api('PATCH', `/mailboxes/${id}`, body) : await api('POST', '/mailboxes', body);
    save.disabled = false;
    if (result.ok) {
      window.location.reload();
      return;
    }
    // The name defaults to the username: show a name clash there.
    if (result.data?.errors) {
      for (const e of result.data.errors) if (e.field === 'name') e.field = 'username';
    }
    showErrors(form, result.data);
  });

  // Row actions.
  const authorizeDialog = $('#authorize-dialog');
  const testDialog = $('#test-dialog');
  const deleteDialog = $('#delete-dialog');
  let current = null;

  function fill(dialogElement, mailbox) {
    $$('[data-fill]', dialogElement).forEach((el) => { el.textContent = mailbox[el.dataset.fill] ?? ''; });
  }

  function pageMessage(text, ok) {
    const el = $('#page-message');
    el.textContent = text;
    el.className = `notice ${ok ? 'ok' : 'bad'}`;
    el.hidden = false;
  }

  document.addEventListener('click', async (event) => {
    const button = event.target.closest('[data-action]');
    if (!button) return;
    const row = button.closest('tr');
    current = JSON.parse(row.dataset.mailboxJson);
    switch (button.dataset.action) {
      case 'authorize':
        fill(authorizeDialog, current);
        showErrors(authorizeDialog, null);
        authorizeDialog.showModal();
        break;
      case 'verify': {
        button.disabled = true;
        const result = await api('POST', `/mailboxes/${current.id}/verify`);
        if (result.ok && result.data.status === current.status) {
          // The status did not move: the check could not be completed (a delay, or one message refused).
          pageMessage(result.data.status === 'verified'
            ? 'Checked: the mailbox works.'
            : `Still Not Verified: ${result.data.status_reason?.message ?? 'see the reason in the list.'}`, result.data.status === 'verified');
        } else if (result.ok) window.location.reload();
        else pageMessage(result.data?.detail ?? 'Verification failed.', false);
        button.disabled = false;
        break;
      }
      case 'test':
        showErrors(testDialog, null);
        $('.result', testDialog).textContent = '';
        testDialog.showModal();
        break;
      case 'use-graph': {
        // SMTP AUTH is off: send with Microsoft Graph, which asks for its own permission, so
        // the mailbox is authorized again.
        button.disabled = true;
        const result = await api('PATCH', `/mailboxes/${current.id}`, { transport: 'graph' });
        button.disabled = false;
        if (result.ok) window.location.reload();
        else pageMessage(result.data?.detail ?? result.data?.errors?.[0]?.message ?? 'Could not switch to Microsoft Graph.', false);
        break;
      }
      case 'edit':
        openEdit(current);
        break;
      case 'delete':
        fill(deleteDialog, current);
        deleteDialog.showModal();
        break;
      default:
    }
  });

  $('#authorize-continue').addEventListener('click', async (event) => {
    const button = event.currentTarget;
    button.disabled = true;
    const result = await api('POST', `/mailboxes/${current.id}/authorize`);
    button.disabled = false;
    if (result.ok) {
      window.location.assign(result.data.authorization_url);
    } else {
      showErrors(authorizeDialog, { errors: [{ field: 'authorize', message: result.data?.detail ?? 'Could not start the authorization.' }] });
    }
  });

  // ---- Device code: "Use a code instead" in the Authorize window. -------------------------
  // Asks Herald for a device code (RFC 8628), shows the code and the provider's page, and
  // follows GET …/authorization until the attempt ends, then shows its outcome as the
  // redirect of the code flow does.
  function setUpDeviceCode() {
    const link = $('#authorize-device-link');
    if (!link) return;
    const panel = $('#authorize-device');
    let timer = null;
    authorizeDialog.addEventListener('close', () => {
      clearTimeout(timer);
      timer = null;
      panel.hidden = true;
      link.hidden = false;
    });
    link.addEventListener('click', async (event) => {
      event.preventDefault();
      const mailbox = current;
      link.hidden = true;
      showErrors(authorizeDialog, null);
      const result = await api('POST', `/mailboxes/${mailbox.id}/authorize/device`);
      if (!result.ok) {
        link.hidden = false;
        showErrors(authorizeDialog, { errors: [{ field: 'authorize', message: result.data?.detail ?? result.data?.errors?.[0]?.message ?? 'Could not get a code.' }] });
        return;
      }
      const started = result.data;
      const uri = $('#device-uri');
      uri.href = started.verification_uri;
      uri.textContent = started.verification_uri;
      $('#device-code').textContent = started.user_code;
      panel.hidden = false;
      const every = Math.min(Math.max(started.interval, 1), 5) * 1000;
      const follow = async () => {
        const attempt = await api('GET', `/mailboxes/${mailbox.id}/authorization`);
        if (attempt.ok && attempt.data.id === started.attempt_id && attempt.data.status !== 'pending') {
          window.location.assign(`/settings/system/outgoing-mail?attempt=${encodeURIComponent(started.attempt_id)}`);
          return;
        }
        if (authorizeDialog.open) timer = setTimeout(follow, every);
      };
      timer = setTimeout(follow, every);
    });
  }
  setUpDeviceCode();
  // ---- End of device code. -----------------------------------------------------------------

  $('#test-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const to = $('#test-to').value.trim();
    const result = await api('POST', `/mailboxes/${current.id}/test-message`, { to });
    const out = $('.result', testDialog);
    if (result.ok) {
      showErrors(testDialog, null);
      out.textContent = `Sent: ${result.data.smtp_reply}`;
    } else if (result.status === 422) {
      showErrors(testDialog, result.data);
    } else {
      showErrors(testDialog, null);
      out.textContent = `Not sent: ${result.data?.detail ?? 'the server refused.'}`;
    }
  });
  testDialog.addEventListener('close', () => {
    if ($('.result', testDialog).textContent) window.location.reload();
  });

  $('#delete-confirm').addEventListener('click', async (event) => {
    const button = event.currentTarget;
    button.disabled = true;
    const result = await api('DELETE', `/mailboxes/${current.id}`);
    if (result.ok) { window.location.reload(); return; }
    button.disabled = false;
    showErrors(deleteDialog, { errors: [{ field: 'delete', message: result.data?.detail ?? 'Could not delete the mailbox.' }] });
  });

  // Sending settings: one PATCH of the organization, the same call and audit event as the API.
  const sendingForm = $('#sending-form');
  if (sendingForm) {
    sendingForm.addEventListener('submit', async (event) => {
      event.preventDefault();
      const saved = $('#sending-saved');
      saved.textContent = '';
      const policy = $('input[name="no_mailbox_policy"]:checked', sendingForm);
      const body = { reply_to: sendingForm.elements.namedItem('reply_to').value.trim() };
      if (policy) body.no_mailbox_policy = policy.value;
      const result = await api('PATCH', '/organization', body);
      if (!result.ok) { showErrors(sendingForm, result.data); return; }
      showErrors(sendingForm, null);
      sendingForm.elements.namedItem('reply_to').value = result.data.reply_to ?? '';
      saved.textContent = 'Saved.';
    });
  }
})();
