// What every page's script shares: calls to the JSON API with the session's CSRF token, and
// problem details shown next to the fields they name.
(() => {
  'use strict';
  const csrf = document.querySelector('meta[name="csrf-token"]').content;

  async function api(method, path, body) {
    const response = await fetch(`/api/v1${path}`, {
      method,
      credentials: 'same-origin',
      headers: { 'content-type': 'application/json', 'x-csrf-token': csrf },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = null; }
    return { ok: response.ok, status: response.status, data };
  }

  let errorIds = 0;

  function showErrors(root, problem) {
    root.querySelectorAll('[data-error-for]').forEach((el) => { el.textContent = ''; });
    root.querySelectorAll('[aria-invalid]').forEach((el) => {
      el.removeAttribute('aria-invalid');
      el.removeAttribute('aria-describedby');
    });
    if (!problem) return;
    let placed = false;
    let first = null;
    for (const error of problem.errors ?? []) {
      const slot = root.querySelector(`[data-error-for="${error.field}"]`);
      if (slot) {
        slot.textContent = error.message;
        placed = true;
        if (!slot.id) { errorIds += 1; slot.id = `error-${errorIds}`; }
        // Tie the message to its input, so assistive technology reads it with the field.
        const input = root.querySelector(`[name="${error.field}"]`);
        if (input) {
          input.setAttribute('aria-invalid', 'true');
          input.setAttribute('aria-describedby', slot.id);
          first = first ?? input;
        }
      }
    }
    if (first) first.focus();
    if (!placed) {
      const slot = root.querySelector('[data-error-for="form"]') ?? root.querySelector('[data-error-for]');
      if (slot) slot.textContent = problem.detail ?? 'Something went wrong.';
    }
  }

  window.Herald = { api, showErrors };
})();
