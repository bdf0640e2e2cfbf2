// The job list: one card per job, newest first, built once and then updated
// in place, touching only what changed (badge, times, cancel and retry
// buttons, bar, stage segments, counter, rate, ETA, message, error, result,
// note). A job's labels and the job it retries never change: they are drawn
// once, with the card.

import { $, el, setAttr, setHidden, setText } from './dom.js';
import { matchesFilter } from './filters.js';
import {
  clockTime, compactJson, counterText, formatDuration, formatEta, percentOf, rateText, shortId,
} from './format.js';
import { LIVE, RETRYABLE, TERMINAL } from './status.js';
import { state } from './store.js';

/** id → { li, parts…, stagesKey } */
const views = new Map();
const list = $('jobs');

function createView(job) {
  const li = el('li', 'job');
  li.dataset.id = job.id;

  const top = el('div', 'job-top');
  const badge = el('span', 'badge');
  const title = el('button', 'job-title');
  title.type = 'button';
  title.setAttribute('aria-haspopup', 'dialog');
  const kind = el('span', 'kind', job.kind);
  const jid = el('span', 'jid', shortId(job.id));
  jid.title = job.id;
  title.append(kind, jid);
  const times = el('span', 'times');
  const started = el('span', 'started');
  const finished = el('span', 'finished');
  times.append(started, finished);
  const cancel = el('button', 'cancel', 'Cancel');
  cancel.type = 'button';
  cancel.setAttribute('aria-label', `Cancel ${job.kind} job ${shortId(job.id)}`);
  const retry = el('button', 'retry', 'Retry');
  retry.type = 'button';
  top.append(badge, title, times, cancel, retry);

  const barRow = el('div', 'bar-row');
  const bar = el('div', 'bar');
  bar.setAttribute('role', 'progressbar');
  bar.setAttribute('aria-valuemin', '0');
  bar.setAttribute('aria-valuemax', '100');
  bar.setAttribute('aria-label', `Progress of ${job.kind} job ${shortId(job.id)}`);
  const fill = el('div', 'fill');
  bar.append(fill);
  const pct = el('span', 'pct');
  pct.setAttribute('aria-hidden', 'true');
  barRow.append(bar, pct);

  const segments = el('ol', 'segments');
  segments.setAttribute('aria-label', 'Stages');

  const stageLine = el('p', 'stage-line');
  const stageName = el('span', 'stage-name');
  const stagePos = el('span', 'stage-pos');
  const counter = el('span', 'counter');
  const rate = el('span', 'rate');
  const eta = el('span', 'eta');
  stageLine.append(stageName, stagePos, counter, rate, eta);

  const message = el('p', 'message');

  const errorBox = el('div', 'error-box');
  const errCode = el('code', 'err-code');
  const errMsg = el('span', 'err-msg');
  const errStage = el('span', 'err-stage');
  const errHint = el('span', 'err-hint');
  errorBox.append(errCode, errMsg, errStage, errHint);

  const result = el('p', 'result');
  const note = el('p', 'note');
  note.setAttribute('role', 'status');

  li.append(top, ...originParts(job), barRow, segments, stageLine, message, errorBox, result, note);
  const view = {
    li, badge, started, finished, cancel, retry, bar, fill, pct, segments, stageLine,
    stageName, stagePos, counter, rate, eta, message, errorBox, errCode, errMsg,
    errStage, errHint, result, note, stagesKey: null, segViews: [],
  };
  views.set(job.id, view);
  insertInOrder(li, job.id);
  return view;
}

/**
 * The job's owner (with authentication on), its labels, each a button that
 * adds it to the label filter, and the job it retries; nothing for a job
 * with none of them.
 */
function originParts(job) {
  const parts = [];
  if (job.owner) {
    const owner = el('p', 'owner', `owner: ${job.owner}`);
    owner.title = `Owned by ${job.owner}`;
    parts.push(owner);
  }
  const labels = Object.entries(job.labels || {});
  if (labels.length) {
    const list = el('ul', 'labels');
    list.setAttribute('aria-label', 'Labels');
    for (const [key, value] of labels) {
      const chip = el('button', 'label-chip', `${key}=${value}`);
      chip.type = 'button';
      chip.dataset.key = key;
      chip.dataset.value = value;
      chip.title = `Show only jobs labelled ${key}=${value}`;
      const item = el('li');
      item.append(chip);
      list.append(item);
    }
    parts.push(list);
  }
  if (job.retry_of) {
    const origin = el('p', 'retry-of', `retries job ${shortId(job.retry_of)}`);
    origin.title = job.retry_of;
    parts.push(origin);
  }
  return parts;
}

/** Newest first: UUIDv7 ids sort by creation time. */
function insertInOrder(li, id) {
  let child = list.firstElementChild;
  while (child && child.dataset.id > id) child = child.nextElementSibling;
  list.insertBefore(li, child);
}

function renderSegments(view, job) {
  const stages = Array.isArray(job.stages) ? job.stages : [];
  const key = stages.map((s) => `${s.name}\u0000${s.weight}`).join('\u0001');
  if (key !== view.stagesKey) {
    view.stagesKey = key;
    view.segments.replaceChildren();
    view.segViews = [];
    const total = stages.reduce((sum, s) => sum + (Number(s.weight) > 0 ? Number(s.weight) : 0), 0);
    for (const s of stages) {
      const weight = Number(s.weight) > 0 ? Number(s.weight) : 0;
      const seg = el('li', 'seg');
      // Widths follow the weights; with no positive weight, stages share equally.
      // (Normalised: flex-grow factors summing below 1 would leave a gap.)
      seg.style.flexGrow = String(total > 0 ? weight / total : 1);
      if (total > 0 && weight === 0) seg.classList.add('zero');
      const track = el('span', 'seg-track');
      const segFill = el('span', 'seg-fill');
      track.append(segFill);
      const name = el('span', 'seg-name', s.name);
      const status = el('span', 'visually-hidden');
      seg.append(track, name, status);
      view.segments.append(seg);
      view.segViews.push({ seg, segFill, status, name: s.name, weight });
    }
  }
  // One stage would only repeat the overall bar.
  setHidden(view.segments, stages.length < 2);
  stages.forEach((s, i) => {
    const sv = view.segViews[i];
    if (!sv) return;
    let fraction = 0;
    if (s.status === 'done') fraction = 1;
    else if (job.stage && job.stage.index === i && s.status !== 'pending') {
      const { current, total } = job.stage;
      fraction = total > 0 ? Math.min(1, current / total) : s.status === 'running' ? -1 : 0;
    }
    setAttr(sv.seg, 'data-status', s.status);
    sv.seg.classList.toggle('indeterminate', fraction < 0);
    const scale = `scaleX(${Math.round(Math.max(0, fraction) * 1000) / 1000})`;
    if (sv.segFill.style.transform !== scale) sv.segFill.style.transform = scale;
    setAttr(sv.seg, 'title', `${s.name}: ${s.status} (weight ${s.weight})`);
    setText(sv.status, `: ${s.status}`);
  });
}

/** What the server's restart codes mean for the job, and what to do. */
const RESTART_HINTS = {
  interrupted: 'The server stopped unexpectedly while this job ran. Retry runs it again.',
  shutdown: 'The server was shut down while this job ran. Retry runs it again.',
};

/** Brings the card of job `id` up to date: creates it, updates it, or removes it. */
export function renderCard(id) {
  const job = state.jobs.get(id);
  let view = views.get(id);
  if (!job) {
    if (view) {
      view.li.remove();
      views.delete(id);
    }
    return;
  }
  if (!view) view = createView(job);
  const gone = state.gone.has(id);
  const terminal = TERMINAL.has(job.status);

  setAttr(view.li, 'data-status', job.status);
  view.li.classList.toggle('gone', gone);
  // A job the server forgot keeps its last known state, marked as lost.
  setAttr(view.badge, 'data-status', gone ? 'gone' : job.status);
  setText(view.badge, gone ? 'lost' : job.status);
  setAttr(view.badge, 'title', gone ? `last known status: ${job.status}` : '');

  // Times: created while queued, then started; finished with the duration.
  if (job.started_at) setText(view.started, `started ${clockTime(job.started_at)}`);
  else setText(view.started, `created ${clockTime(job.created_at)}`);
  if (job.finished_at) {
    const took = job.started_at ? Date.parse(job.finished_at) - Date.parse(job.started_at) : NaN;
    const tookText = formatDuration(took);
    setText(view.finished, `finished ${clockTime(job.finished_at)}${tookText ? ` (${tookText})` : ''}`);
  } else {
    setText(view.finished, '');
  }
  setHidden(view.finished, !job.finished_at);

  // Cancel: "Cancelling…" from the click until the server answers.
  const pending = state.cancelPending.has(id);
  setHidden(view.cancel, !(pending || (LIVE.has(job.status) && !gone)));
  const cancelling = pending || job.status === 'cancelling';
  setText(view.cancel, cancelling ? 'Cancelling…' : 'Cancel');
  view.cancel.disabled = cancelling;

  // Retry: on a failed or cancelled job, marked when its error is retryable.
  const retrying = state.retryPending.has(id);
  const retryable = Boolean(job.error && job.error.retryable);
  setHidden(view.retry, !(RETRYABLE.has(job.status) && !gone));
  setText(view.retry, retrying ? 'Retrying…' : 'Retry');
  view.retry.disabled = retrying;
  view.retry.classList.toggle('retryable', retryable);
  setAttr(view.retry, 'aria-label', `Retry ${job.kind} job ${shortId(job.id)} as a new job`
    + (retryable ? ' (its error is marked retryable)' : ''));
  setAttr(view.retry, 'title', retryable ? 'The error is marked retryable: trying again may succeed' : 'Run this job again as a new job');

  // Overall progress.
  const percent = percentOf(job);
  setAttr(view.bar, 'aria-valuenow', String(percent));
  const stageText = job.stage ? `, stage ${job.stage.name}` : '';
  setAttr(view.bar, 'aria-valuetext', `${percent}%, ${job.status}${stageText}`);
  // Fills are scaled rather than resized: a transform needs no layout.
  const fraction = Number.isFinite(job.progress) ? Math.min(1, Math.max(0, job.progress)) : 0;
  const scale = `scaleX(${Math.round(fraction * 1000) / 1000})`;
  if (view.fill.style.transform !== scale) view.fill.style.transform = scale;
  setText(view.pct, `${percent}%`);

  renderSegments(view, job);

  // Current stage with its own counter, rate and ETA.
  const stage = job.stage;
  if (stage) {
    setText(view.stageName, stage.name);
    setText(view.stagePos, stage.count > 1 ? `stage ${stage.index + 1} of ${stage.count}` : '');
    setText(view.counter, counterText(stage));
  } else {
    setText(view.stageName, job.status === 'queued' ? 'waiting to start' : '');
    setText(view.stagePos, '');
    setText(view.counter, '');
  }
  setText(view.rate, gone ? '' : rateText(job));
  setText(view.eta, terminal || gone ? '' : formatEta(job.eta_seconds));
  for (const part of [view.stageName, view.stagePos, view.counter, view.rate, view.eta]) {
    setHidden(part, part.textContent === '');
  }
  setHidden(view.stageLine, view.stageName.textContent === '' && view.counter.textContent === '');

  setText(view.message, job.message || '');
  setHidden(view.message, !job.message);

  const error = job.error;
  if (error) {
    setText(view.errCode, error.code || 'error');
    setText(view.errMsg, error.message || '');
    setText(view.errStage, error.stage ? `in stage ${error.stage}` : '');
    setHidden(view.errStage, !error.stage);
    const hint = RESTART_HINTS[error.code] || '';
    setText(view.errHint, hint);
    setHidden(view.errHint, !hint);
  }
  setAttr(view.errorBox, 'data-kind', job.status);
  setHidden(view.errorBox, !error);

  const hasResult = job.status === 'completed' && job.result != null;
  setText(view.result, hasResult ? `Result: ${compactJson(job.result, 160)}` : '');
  setHidden(view.result, !hasResult);

  let noteText = state.notes.get(id) || '';
  if (gone) noteText = 'The server no longer knows this job (it may have restarted); this is its last known state.';
  setText(view.note, noteText);
  setHidden(view.note, !noteText);

  setHidden(view.li, !matchesFilter(job));
}

/** Shows or hides every card by the current filters. */
export function refilterCards() {
  for (const [id, job] of state.jobs) {
    const view = views.get(id);
    if (view) setHidden(view.li, !matchesFilter(job));
  }
}

/** Immediate feedback on a click of the card's Cancel button, before the next frame. */
export function showCancelling(id) {
  const view = views.get(id);
  if (view) {
    view.cancel.textContent = 'Cancelling…';
    view.cancel.disabled = true;
  }
}
