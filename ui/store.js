// The page's model: the newest state of every job by id, what the page
// knows about each beyond it (lost, cancel or retry pending, notes), the
// kinds and filters, and which of these changed since the last frame.
//
// A state whose `seq` is not newer than the one held is ignored, so replays
// and overlapping sources (stream, list, cancel answers) never duplicate a
// job or move it backwards. Changes only mark jobs dirty and ask for a frame.

import { schedule } from './frame.js';
import { LIVE, TERMINAL } from './status.js';

/** Finished jobs beyond this many are dropped from the page, oldest first. */
const MAX_JOBS = 1000;

export const state = {
  /** id → the newest job state we have. */
  jobs: new Map(),
  /** Ids of jobs the server no longer knows (it restarted, or forgot them). */
  gone: new Set(),
  /** Ids whose cancel request has not been answered yet. */
  cancelPending: new Set(),
  /** Ids whose retry request has not been answered yet. */
  retryPending: new Set(),
  /** id → a short note shown on the card (cancel outcome, errors). */
  notes: new Map(),
  /** Kinds from /v1/kinds, by name. */
  kinds: new Map(),
  /** Every kind seen, for the kind filter. */
  kindsSeen: new Set(),
  /**
   * The status and kind filters choose among the jobs the page holds; the
   * label filter ([key, value] pairs) chooses the jobs the page's stream
   * and lists carry at all.
   */
  filter: { status: '', kind: '', labels: [] },
  /** The server-wide id of the last event received, for manual resumes. */
  lastEventId: null,
  /** The job the detail view shows, if open: kept however old it is. */
  detailId: null,
};

let dirty = new Set();
let filtersDirty = true;

export function markDirty(id) {
  dirty.add(id);
  schedule();
}

export function markFiltersDirty() {
  filtersDirty = true;
  schedule();
}

/** The ids of the jobs changed, and whether the filters did, since the last call. */
export function takeChanges() {
  const changes = { jobs: dirty, filters: filtersDirty };
  dirty = new Set();
  filtersDirty = false;
  return changes;
}

/** Takes `job` if it is newer than what we hold. Returns whether it was. */
export function applyJob(job) {
  if (!job || typeof job.id !== 'string' || typeof job.seq !== 'number') return false;
  const held = state.jobs.get(job.id);
  if (held && job.seq <= held.seq) return false;
  state.jobs.set(job.id, job);
  state.gone.delete(job.id);
  if (!state.kindsSeen.has(job.kind)) {
    state.kindsSeen.add(job.kind);
    filtersDirty = true;
  }
  markDirty(job.id);
  return true;
}

/** Marks a job we show as active but the server no longer knows as lost. */
export function markGone(id) {
  const job = state.jobs.get(id);
  if (job && LIVE.has(job.status)) {
    state.gone.add(id);
    markDirty(id);
  }
}

/**
 * id → the newest raw state from the all-jobs stream, not yet parsed. A
 * busy job sends many states per frame; only the last one is parsed. This
 * is safe because ids on one connection strictly increase, so a later
 * event is a newer state. The id is read from the head of the text when the
 * server put it first (it does); any other shape is parsed at once.
 */
const rawStates = new Map();
const ID_HEAD = /^\{"id":"([0-9a-f-]{36})",/;

export function queueRaw(data) {
  const head = ID_HEAD.exec(data.slice(0, 48));
  if (head) {
    rawStates.set(head[1], data);
    schedule();
    return;
  }
  try {
    applyJob(JSON.parse(data));
  } catch {
    // Not a job: nothing to show.
  }
}

export function flushRawStates() {
  for (const data of rawStates.values()) {
    try {
      applyJob(JSON.parse(data));
    } catch {
      // Not a job: nothing to show.
    }
  }
  rawStates.clear();
}

/**
 * Drops every job that `keep` refuses (but the one the detail view shows):
 * the jobs a new label filter leaves out, which its stream will not update.
 */
export function dropJobs(keep) {
  for (const job of [...state.jobs.values()]) {
    if (keep(job) || job.id === state.detailId) continue;
    state.jobs.delete(job.id);
    state.gone.delete(job.id);
    state.notes.delete(job.id);
    markDirty(job.id);
  }
  markFiltersDirty();
}

/** Drops the oldest finished jobs once the page holds more than MAX_JOBS. */
export function evict() {
  if (state.jobs.size <= MAX_JOBS) return;
  const finished = [...state.jobs.values()]
    .filter((job) => TERMINAL.has(job.status) || state.gone.has(job.id))
    .map((job) => job.id)
    .sort();
  for (const id of finished.slice(0, state.jobs.size - MAX_JOBS)) {
    if (id === state.detailId) continue;
    state.jobs.delete(id);
    state.gone.delete(id);
    state.notes.delete(id);
    dirty.add(id);
  }
}
