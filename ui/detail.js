// The detail view of one job: a dialog with its facts, params and result,
// and the raw events of its own stream (/v1/jobs/{id}/events), newest last.
// The stream's states also feed the store, like any other source.

import { jobEventsUrl } from './api.js';
import { $, el, setText } from './dom.js';
import { clockTime, counterText, formatEta, pad, percentOf, rateText, shortId } from './format.js';
import { schedule } from './frame.js';
import { JOB_EVENTS, TERMINAL } from './status.js';
import { applyJob, state } from './store.js';

/** Raw events kept in the detail view. */
const MAX_DETAIL_EVENTS = 500;

const detail = {
  source: null, dirty: false, pending: [], count: 0,
  dialog: $('detail'), events: $('detail-events'), facts: $('detail-facts'),
};

export function openDetail(id) {
  closeDetailStream();
  state.detailId = id;
  detail.dirty = true;
  detail.pending = [];
  detail.count = 0;
  detail.events.replaceChildren();
  $('detail-count').textContent = '';
  const url = jobEventsUrl(id);
  $('detail-url').textContent = `GET ${url}`;
  setStreamState('connecting…');
  const source = new EventSource(url);
  detail.source = source;
  source.onopen = () => setStreamState('streaming');
  source.onerror = () => {
    if (detail.source !== source) return;
    if (source.readyState === EventSource.CLOSED) {
      setStreamState(state.gone.has(id) ? 'closed: the job no longer exists' : 'closed');
    } else {
      setStreamState('reconnecting…');
    }
  };
  const onEvent = (event) => {
    if (detail.source !== source) return;
    detail.pending.push({ type: event.type, id: event.lastEventId, data: event.data, at: new Date() });
    let job = null;
    try {
      job = JSON.parse(event.data);
    } catch {
      // Shown raw all the same.
    }
    if (job) applyJob(job);
    if (TERMINAL.has(event.type)) {
      // The server ends the stream after the terminal event; closing here
      // spares the reconnect that would only be answered 204.
      source.close();
      setStreamState(`ended with ${event.type}`);
    }
    schedule();
  };
  for (const type of JOB_EVENTS) source.addEventListener(type, onEvent);
  if (!detail.dialog.open) detail.dialog.showModal();
  schedule();
}

function setStreamState(text) {
  $('detail-stream').textContent = text;
}

function closeDetailStream() {
  if (detail.source) detail.source.close();
  detail.source = null;
}

function fact(label, value, className) {
  const dt = el('dt', null, label);
  const dd = el('dd', className || null, value);
  return [dt, dd];
}

/** Updates the open dialog: its facts if its job is among `changedJobs`, and new events. */
export function renderDetail(changedJobs) {
  if (changedJobs.has(state.detailId)) detail.dirty = true;
  if (!state.detailId || !detail.dialog.open) return;
  const job = state.jobs.get(state.detailId);
  if (detail.dirty && job) {
    detail.dirty = false;
    $('detail-title').textContent = `${job.kind} job ${shortId(job.id)}`;
    const rows = [
      ...fact('Id', job.id, 'mono'),
      ...fact('Status', state.gone.has(job.id) ? `${job.status} (no longer on the server)` : job.status),
      ...fact('Progress', `${percentOf(job)}%`),
      ...fact('Seq', String(job.seq), 'mono'),
    ];
    if (job.stage) {
      const counter = counterText(job.stage);
      rows.push(...fact('Stage', `${job.stage.name} (${job.stage.index + 1} of ${job.stage.count})${counter ? `, ${counter}` : ''}`));
    }
    if (job.message) rows.push(...fact('Message', job.message));
    if (rateText(job)) rows.push(...fact('Rate', rateText(job)));
    if (!TERMINAL.has(job.status) && formatEta(job.eta_seconds)) rows.push(...fact('ETA', formatEta(job.eta_seconds)));
    const labels = Object.entries(job.labels || {});
    if (labels.length) rows.push(...fact('Labels', labels.map(([k, v]) => `${k}=${v}`).join(', '), 'mono'));
    if (job.owner) rows.push(...fact('Owner', job.owner));
    if (job.retry_of) rows.push(...fact('Retry of', job.retry_of, 'mono'));
    rows.push(...fact('Created', job.created_at || '', 'mono'));
    if (job.started_at) rows.push(...fact('Started', job.started_at, 'mono'));
    if (job.finished_at) rows.push(...fact('Finished', job.finished_at, 'mono'));
    if (job.error) {
      const e = job.error;
      rows.push(...fact('Error', `${e.code}: ${e.message}${e.stage ? ` (stage ${e.stage})` : ''}${e.retryable ? ', retryable' : ''}`, 'err'));
    }
    detail.facts.replaceChildren(...rows);
    $('detail-params').textContent = JSON.stringify(job.params ?? {}, null, 2);
    const hasResult = job.status === 'completed';
    $('detail-result-box').hidden = !hasResult;
    if (hasResult) $('detail-result').textContent = JSON.stringify(job.result, null, 2);
  }
  if (detail.pending.length) {
    const box = detail.events;
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 24;
    const items = detail.pending.map(eventItem);
    detail.pending = [];
    box.append(...items);
    detail.count += items.length;
    while (box.childElementCount > MAX_DETAIL_EVENTS) box.firstElementChild.remove();
    setText($('detail-count'), `${detail.count} ${detail.count === 1 ? 'event' : 'events'}`
      + (detail.count > MAX_DETAIL_EVENTS ? `, the last ${MAX_DETAIL_EVENTS} shown` : ''));
    // Follow new events unless the reader has scrolled up.
    if (atBottom) box.scrollTop = box.scrollHeight;
  }
}

/** One raw event: a summary line that opens to the exact `data:` text. */
function eventItem(ev) {
  const li = el('li', 'event');
  li.dataset.type = ev.type;
  const box = el('details');
  const summary = el('summary', 'ev-head');
  let gist = '';
  try {
    const job = JSON.parse(ev.data);
    const counter = job.stage ? ` · ${job.stage.name} ${counterText(job.stage)}` : '';
    gist = `seq ${job.seq} · ${job.status} · ${percentOf(job)}%${counter}`;
  } catch {
    gist = 'not a job';
  }
  summary.append(el('span', 'ev-type', ev.type), el('span', 'ev-id', `id ${ev.id}`),
    el('span', 'ev-gist', gist),
    el('time', 'ev-at', `${clockTime(ev.at.toISOString())}.${pad(ev.at.getMilliseconds(), 3)}`));
  box.append(summary, el('pre', 'ev-data', ev.data));
  li.append(box);
  return li;
}

/** Wires closing: the × button, Escape (the dialog's own), and a click on the backdrop. */
export function initDetail() {
  $('detail-close').addEventListener('click', () => detail.dialog.close());
  detail.dialog.addEventListener('close', () => {
    closeDetailStream();
    state.detailId = null;
  });
  detail.dialog.addEventListener('click', (event) => {
    // A click on the backdrop (outside the dialog's box) closes it.
    if (event.target === detail.dialog) detail.dialog.close();
  });
}
