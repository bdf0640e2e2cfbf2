// The status and kind filters, and the summary line above the list: which
// jobs a filter shows, the kind filter's options, and the counts.

import { $, setHidden, setText } from './dom.js';
import { LIVE } from './status.js';
import { markFiltersDirty, state } from './store.js';

export function matchesFilter(job) {
  const { status, kind } = state.filter;
  if (kind && job.kind !== kind) return false;
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

export function initFilters() {
  $('filter-status').addEventListener('change', (event) => {
    state.filter.status = event.target.value;
    markFiltersDirty();
  });
  $('filter-kind').addEventListener('change', (event) => {
    state.filter.kind = event.target.value;
    markFiltersDirty();
  });
}
