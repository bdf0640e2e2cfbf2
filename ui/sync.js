// Catching up after every (re)connect: the stream does not replay jobs that
// finished while we were away, and a restarted server never sends the
// terminal event of a job it forgot. So load the recent and the active jobs,
// and ask about each job we show as active that the server did not list.

import { getActiveJobs, getJob, getRecentJobs, readJson } from './api.js';
import { loadKinds } from './form.js';
import { LIVE } from './status.js';
import { applyJob, markGone, state } from './store.js';

/** How many finished jobs the page loads when it (re)connects. */
const RECENT_LIMIT = 200;

let syncing = false;
let syncAgain = false;

export async function syncWithServer() {
  if (syncing) {
    syncAgain = true;
    return;
  }
  syncing = true;
  try {
    if (state.kinds.size === 0) loadKinds();
    const labels = state.filter.labels;
    const [recent, active] = await Promise.all([getRecentJobs(RECENT_LIMIT, labels), getActiveJobs(labels)]);
    for (const job of recent.jobs) applyJob(job);
    for (const job of active.jobs) applyJob(job);
    const activeIds = new Set(active.jobs.map((job) => job.id));
    const suspects = [...state.jobs.values()]
      .filter((job) => LIVE.has(job.status) && !activeIds.has(job.id) && !state.gone.has(job.id))
      .map((job) => job.id);
    for (let i = 0; i < suspects.length; i += 8) {
      await Promise.all(suspects.slice(i, i + 8).map(checkJob));
    }
  } catch {
    // The stream's own error handling reports a lost server; the next
    // reconnect syncs again.
  } finally {
    syncing = false;
    if (syncAgain) {
      syncAgain = false;
      syncWithServer();
    }
  }
}

async function checkJob(id) {
  const response = await getJob(id);
  if (response.status === 404) {
    markGone(id);
  } else if (response.ok) {
    applyJob(await readJson(response));
  }
}
