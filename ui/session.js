// Signing in, when the server has authentication on: the page asks for an
// API key (or a JWT) once, posts it to /v1/session as a bearer credential,
// and from then on the browser sends the HttpOnly session cookie the server
// set with every request and every EventSource of this origin. The key is
// never stored by the page; the cookie lasts until the browser closes, the
// key is revoked, or the JWT expires, and then the page asks again.

import { problemText, readJson } from './api.js';
import { $ } from './dom.js';

/** Resolves once requests are let in: at once without authentication. */
export async function ensureSession() {
  const probe = await fetch('/v1/kinds', { headers: { accept: 'application/json' } });
  if (probe.status !== 401) return;
  await askForKey();
}

function askForKey() {
  const dialog = $('login');
  const form = $('login-form');
  const input = $('login-key');
  const error = $('login-error');
  error.hidden = true;
  input.value = '';
  dialog.showModal();
  input.focus();
  return new Promise((resolve) => {
    // The dialog cannot be dismissed: nothing works without a session.
    dialog.oncancel = (event) => event.preventDefault();
    form.onsubmit = async (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (!key) return;
      const response = await fetch('/v1/session', {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, accept: 'application/json' },
      });
      if (response.status === 204) {
        input.value = '';
        dialog.close();
        resolve();
        return;
      }
      error.textContent = response.status === 401
        ? 'That key was not accepted.'
        : problemText(response, await readJson(response));
      error.hidden = false;
      input.select();
    };
  });
}
