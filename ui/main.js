// The dashboard's entry point: a live view of every job, built on the public
// API only. Wires the modules together and draws each frame: the cards that
// changed, the filters, the summary and the detail view.
//
// Modules: status (lifecycle names), api (requests), store (job states and
// what changed), frame (one render per animation frame), stream and sync
// (the all-jobs stream and catching up), card, filters, form, cancel,
// retry, detail (the parts of the page), session (signing in when the
// server has authentication on), dom, format and labels (helpers).

import { cancelJob } from './cancel.js';
import { refilterCards, renderCard } from './card.js';
import { initDetail, openDetail, renderDetail } from './detail.js';
import { $ } from './dom.js';
import {
  addLabelFilter, initFilters, renderKindFilter, renderSummary,
} from './filters.js';
import { initStartForm } from './form.js';
import { onFrame } from './frame.js';
import { retryJob } from './retry.js';
import { ensureSession } from './session.js';
import { evict, flushRawStates, takeChanges } from './store.js';
import { connect } from './stream.js';

function render() {
  flushRawStates();
  evict();
  const changes = takeChanges();
  for (const id of changes.jobs) renderCard(id);
  if (changes.filters) {
    renderKindFilter();
    refilterCards();
  }
  if (changes.jobs.size > 0 || changes.filters) renderSummary();
  renderDetail(changes.jobs);
}

$('jobs').addEventListener('click', (event) => {
  const li = event.target.closest('li.job');
  if (!li) return;
  const id = li.dataset.id;
  if (event.target.closest('button.cancel')) {
    cancelJob(id);
    return;
  }
  if (event.target.closest('button.retry')) {
    retryJob(id);
    return;
  }
  const chip = event.target.closest('button.label-chip');
  if (chip) {
    addLabelFilter(chip.dataset.key, chip.dataset.value);
    return;
  }
  // Selecting text on a card should not open it.
  if (window.getSelection && String(window.getSelection()).length > 0) return;
  openDetail(id);
});

onFrame(render);
initDetail();
await ensureSession();
initStartForm();
initFilters();
connect();
renderSummary();
