// Settings pages: forms and buttons that call the JSON API with the session's CSRF token.
(() => {
  'use strict';
  const { api, showErrors } = window.Herald;

  document.querySelectorAll('form[data-api-form]').forEach((form) => {
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const body = {};
      for (const element of form.elements) {
        if (element.name) body[element.name] = element.value;
      }
      const result = await api(form.dataset.method, form.dataset.path, body);
      if (!result.ok) { showErrors(form, result.data); return; }
      if (result.data && result.data.key) {
        const dialog = document.getElementById('key-dialog');
        document.getElementById('new-key').value = result.data.key;
        dialog.showModal();
        return;
      }
      window.location.reload();
    });
  });

  // However the key window closes (Done or Esc), the list must show the new key.
  const keyDialog = document.getElementById('key-dialog');
  if (keyDialog) keyDialog.addEventListener('close', () => window.location.reload());

  document.addEventListener('click', async (event) => {
    const close = event.target.closest('[data-close-reload]');
    if (close) { close.closest('dialog').close(); return; }
    const copy = event.target.closest('[data-copy]');
    if (copy) { navigator.clipboard?.writeText(document.getElementById(copy.dataset.copy).value); return; }
    const button = event.target.closest('[data-api-delete]');
    if (!button) return;
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    const result = await api('DELETE', button.dataset.apiDelete);
    if (result.ok) { window.location.reload(); return; }
    const error = document.getElementById('page-error');
    if (error) error.textContent = result.data?.detail ?? 'Refused.';
  });
})();
