// The start form: the kinds it offers (loaded from /v1/kinds), the example
// params of the chosen kind, its labels, and starting a job with its outcome
// (the new job, its worker token for an external kind, or the problem's
// detail).

import { getKinds, postJob, problemText, readJson } from './api.js';
import { $ } from './dom.js';
import { shortId } from './format.js';
import { parsePairs } from './labels.js';
import { applyJob, markFiltersDirty, state } from './store.js';

const form = {
  kind: $('kind'), params: $('params'), labels: $('labels'), description: $('kind-description'),
  error: $('start-error'), ok: $('start-ok'), button: $('start-button'),
};

function showFormMessage(node, text) {
  node.textContent = text;
  node.hidden = !text;
}

function fillExample() {
  const kind = state.kinds.get(form.kind.value);
  form.description.textContent = kind && kind.description ? kind.description : '';
  const example = kind && kind.example !== undefined ? kind.example : {};
  form.params.value = JSON.stringify(example, null, 2);
  showFormMessage(form.error, '');
}

let kindsLoading = null;

/** Loads the kinds once at a time; callers share a load in flight. */
export function loadKinds() {
  kindsLoading ??= fetchKinds().finally(() => {
    kindsLoading = null;
  });
  return kindsLoading;
}

async function fetchKinds() {
  try {
    const body = await getKinds();
    const kinds = Array.isArray(body.kinds) ? body.kinds : [];
    state.kinds = new Map(kinds.map((k) => [k.name, k]));
    const chosen = form.kind.value;
    form.kind.replaceChildren(...kinds.map((k) => new Option(k.name, k.name)));
    if (state.kinds.has(chosen)) form.kind.value = chosen;
    form.button.disabled = kinds.length === 0;
    showFormMessage(form.error, '');
    if (!chosen || !state.kinds.has(chosen)) fillExample();
    markFiltersDirty();
  } catch {
    form.button.disabled = true;
    showFormMessage(form.error, 'Could not load the job kinds; retrying when the server is back.');
  }
}

async function startJob(event) {
  event.preventDefault();
  showFormMessage(form.error, '');
  showFormMessage(form.ok, '');
  const text = form.params.value.trim();
  let params = null;
  if (text) {
    try {
      params = JSON.parse(text);
    } catch (err) {
      showFormMessage(form.error, `Params are not valid JSON: ${err.message}`);
      form.params.focus();
      return;
    }
  }
  let labels;
  try {
    labels = Object.fromEntries(parsePairs(form.labels.value));
  } catch (err) {
    showFormMessage(form.error, `Labels: ${err.message}; write key=value, separated by commas.`);
    form.labels.focus();
    return;
  }
  form.button.disabled = true;
  form.button.textContent = 'Starting…';
  try {
    const response = await postJob(form.kind.value, params, labels);
    const body = await readJson(response);
    if (response.ok && body) {
      applyJob(body);
      // An external kind's worker token is in this answer only: show it.
      const token = body.worker_token ? ` Its worker token, shown only now: ${body.worker_token}` : '';
      showFormMessage(form.ok, `Started ${body.kind} job ${shortId(body.id)}.${token}`);
    } else {
      showFormMessage(form.error, problemText(response, body));
    }
  } catch {
    showFormMessage(form.error, 'Could not reach the server.');
  } finally {
    form.button.disabled = false;
    form.button.textContent = 'Start job';
  }
}

/** Wires the form and loads the kinds; starting stays disabled until they are in. */
export function initStartForm() {
  $('start-form').addEventListener('submit', startJob);
  form.kind.addEventListener('change', fillExample);
  $('reset-params').addEventListener('click', fillExample);
  form.button.disabled = true;
  loadKinds();
}
