// The status, kind and label filters, and the summary line above the list:
// which jobs a filter shows, the kind filter's options, and the counts. The
// label filter also chooses what the page loads: a new one replaces the
// page's stream and drops the jobs it leaves out.

import { $, setHidden, setText } from './dom.js';
import {
  hasLabels, pairsFromAddress, pairsText, pairsToAddress, parsePairs,
} from './labels.js';
import { LIVE } from './status.js';
import { dropJobs, markFiltersDirty, state } from './store.js';
import { reconnect } from './stream.js';

export function matchesFilter(job) {
  const { status, kind, labels } = state.filter;
  if (kind && job.kind !== kind) return false;
  if (!hasLabels(job, labels)) return false;
  if (!status) return true;
  if (status === 'live') return LIVE.has(job.status) && !state.gone.has(job.id);
  return job.status === status;
}

/** Offers every kind known or seen in the kind filter, keeping the choice. */
export function renderKindFilter() {
  const select = $('filter-kind');
  const names = [...new Set([...state.kinds.keys(), ...state.kindsSeen])].sort();
  const have = [...select.options].slice(1).map((o) => o.value);
  if (have.join('\u0000') !== names.join('\u0000')) {
    const chosen = select.value;
    select.replaceChildren(new Option('All', ''), ...names.map((n) => new Option(n, n)));
    select.value = names.includes(chosen) ? chosen : '';
  }
}

export function renderSummary() {
  const counts = { live: 0, completed: 0, failed: 0, cancelled: 0, lost: 0 };
  let shown = 0;
  for (const job of state.jobs.values()) {
    if (state.gone.has(job.id)) counts.lost += 1;
    else if (LIVE.has(job.status)) counts.live += 1;
    else if (counts[job.status] != null) counts[job.status] += 1;
    if (matchesFilter(job)) shown += 1;
  }
  const total = state.jobs.size;
  const parts = [`${total} ${total === 1 ? 'job' : 'jobs'}`, `${counts.live} active`,
    `${counts.completed} completed`, `${counts.failed} failed`, `${counts.cancelled} cancelled`];
  if (counts.lost) parts.push(`${counts.lost} lost`);
  setText($('summary'), parts.join(' · '));
  const empty = $('empty');
  setText(empty, total === 0 ? 'No jobs yet. Start one with the form.' : 'No jobs match these filters.');
  setHidden(empty, shown > 0);
}

/** Shows only the jobs with every label of `pairs`, over a new stream. */
function setLabelFilter(pairs) {
  $('filter-labels').value = pairsText(pairs);
  if (pairsText(pairs) === pairsText(state.filter.labels)) return;
  state.filter.labels = pairs;
  pairsToAddress(pairs);
  dropJobs((job) => hasLabels(job, pairs));
  reconnect();
}

/** Adds one label to the label filter (a click on a card's label). */
export function addLabelFilter(key, value) {
  const others = state.filter.labels.filter(([k, v]) => k !== key || v !== value);
  setLabelFilter([...others, [key, value]]);
}

function readLabelFilter(event) {
  const error = $('filter-labels-error');
  try {
    const pairs = parsePairs(event.target.value);
    setHidden(error, true);
    event.target.removeAttribute('aria-invalid');
    setLabelFilter(pairs);
  } catch (err) {
    setText(error, `Label filter: ${err.message}; write key=value, separated by commas.`);
    setHidden(error, false);
    event.target.setAttribute('aria-invalid', 'true');
  }
}

/** Wires the filters; the label filter starts from the page's address. */
export function initFilters() {
  try {
    state.filter.labels = pairsFromAddress();
  } catch {
    state.filter.labels = [];
  }
  $('filter-labels').value = pairsText(state.filter.labels);
  $('filter-labels').addEventListener('change', readLabelFilter);
  $('filter-status').addEventListener('change', (event) => {
    state.filter.status = event.target.value;
    markFiltersDirty();
  });
  $('filter-kind').addEventListener('change', (event) => {
    state.filter.kind = event.target.value;
    markFiltersDirty();
  });
}
