// Settings › System › Outgoing Mail › Relay credentials (admins): the Add window, the window
// that shows a new credential's password once, and Delete with a confirmation. Every change
// goes through the JSON API with the session's CSRF token; field errors appear next to their
// fields without losing what was typed.
(() => {
  'use strict';
  const { api, showErrors } = window.Herald;
  const $ = (selector, root = document) => root.querySelector(selector);
  const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

  const addButton = $('#relay-add');
  const dialog = $('#relay-dialog');
  const form = $('#relay-form');
  const created = $('#created-dialog');
  const deleteDialog = $('#relay-delete-dialog');

  // Closing a window gives focus back to what opened it.
  let opener = null;
  $$('dialog').forEach((d) => {
    $$('[data-close]', d).forEach((b) => b.addEventListener('click', () => d.close()));
    d.addEventListener('close', () => { if (opener && document.contains(opener)) opener.focus(); });
  });

  // Copy buttons.
  document.addEventListener('click', (event) => {
    const button = event.target.closest('[data-copy]');
    if (!button) return;
    navigator.clipboard?.writeText(document.getElementById(button.dataset.copy).value).then(() => {
      const label = button.textContent;
      button.textContent = 'Copied';
      setTimeout(() => { button.textContent = label; }, 1500);
    });
  });

  // Reply-To is kept only when the From is rewritten.
  const keepReplyTo = form?.elements.namedItem('keep_reply_to');
  const syncReplyTo = () => {
    keepReplyTo.disabled = $('input[name="from_policy"]:checked', form)?.value !== 'rewrite';
  };
  $$('input[name="from_policy"]', form ?? document).forEach((r) => r.addEventListener('change', syncReplyTo));

  if (addButton) {
    addButton.addEventListener('click', () => {
      opener = addButton;
      form.reset();
      showErrors(form, null);
      syncReplyTo();
      dialog.showModal();
      $('#r-name').focus();
    });
  }

  // "10.0.0.0/8, 192.168.1.7" or one per line; blank entries are dropped.
  const networks = (text) => text.split(/[\n,]/).map((s) => s.trim()).filter(Boolean);

  // The API names list items (`mailboxes[0]`, `allowed_networks[1]`); the form has one slot per
  // list, so their messages are gathered there.
  function toFormFields(problem) {
    if (!problem?.errors) return problem;
    const byField = new Map();
    for (const e of problem.errors) {
      const field = e.field.replace(/\[\d+\]$/, '');
      let message = e.message;
      if (field === 'mailboxes' && field !== e.field) {
        message = 'A mailbox ticked here no longer exists: reload the page and choose again.';
      }
      const messages = byField.get(field) ?? [];
      if (!messages.includes(message)) messages.push(message);
      byField.set(field, messages);
    }
    const errors = [...byField].map(([field, messages]) => ({ field, message: messages.join(' ') }));
    return { ...problem, errors };
  }

  form?.addEventListener('submit', async (event) => {
    event.preventDefault();
    const policy = $('input[name="from_policy"]:checked', form)?.value ?? 'rewrite';
    const body = {
      name: form.elements.namedItem('name').value.trim(),
      mailboxes: $$('input[name="mailboxes"]:checked', form).map((c) => c.value),
      allowed_networks: networks(form.elements.namedItem('allowed_networks').value),
      from_policy: policy,
      keep_reply_to: policy === 'rewrite' && keepReplyTo.checked,
      network_only: form.elements.namedItem('network_only').checked,
    };
    const save = $('button[type="submit"]', form);
    save.disabled = true;
    const result = await api('POST', '/relay-credentials', body);
    save.disabled = false;
    if (!result.ok) {
      showErrors(form, toFormFields(result.data));
      return;
    }
    dialog.close();
    form.reset();
    $('#created-username').value = result.data.username;
    $('#created-password').value = result.data.password ?? '';
    const networkOnly = result.data.password == null;
    $('#created-once').hidden = networkOnly;
    $('#created-network-only').hidden = !networkOnly;
    $$('.password-only', created).forEach((el) => { el.hidden = networkOnly; });
    created.showModal();
    $('#created-username').focus();
  });

  // However the password window closes (Done or Esc), the password leaves the page and the list
  // shows the new credential.
  created?.addEventListener('close', () => {
    $('#created-password').value = '';
    window.location.reload();
  });

  let deleting = null;
  document.addEventListener('click', (event) => {
    const button = event.target.closest('[data-relay-delete]');
    if (!button) return;
    opener = button;
    deleting = button.dataset.relayDelete;
    $('[data-fill="name"]', deleteDialog).textContent = button.dataset.name;
    showErrors(deleteDialog, null);
    $('#relay-delete-confirm').disabled = false;
    deleteDialog.showModal();
    // The safe choice has the focus.
    $('[data-close]', deleteDialog).focus();
  });

  $('#relay-delete-confirm')?.addEventListener('click', async (event) => {
    const button = event.currentTarget;
    button.disabled = true;
    const result = await api('DELETE', `/relay-credentials/${deleting}`);
    if (result.ok) { window.location.reload(); return; }
    button.disabled = false;
    showErrors(deleteDialog, { errors: [{ field: 'delete', message: result.data?.detail ?? 'Could not delete the credential.' }] });
  });
})();
