// Cancelling a job from its card: one request at a time per job, and a
// note that tells the real outcome (cancelled, aborted after the grace
// period, or ended first with its own outcome).

import { postCancel, problemText, readJson } from './api.js';
import { showCancelling } from './card.js';
import { applyJob, markDirty, state } from './store.js';

export async function cancelJob(id) {
  if (state.cancelPending.has(id)) return;
  state.cancelPending.add(id);
  state.notes.delete(id);
  // Immediate feedback on the click itself; the next frame renders the rest.
  showCancelling(id);
  markDirty(id);
  try {
    const response = await postCancel(id);
    const body = await readJson(response);
    if (response.ok) {
      applyJob(body);
      if (body && body.error && body.error.code === 'cancel_forced') {
        state.notes.set(id, 'The job did not stop in time and was aborted.');
      }
    } else if (response.status === 409 && body && body.job) {
      // The job ended first: it keeps its own outcome.
      applyJob(body.job);
      state.notes.set(id, `The job ${body.job.status} before the cancel took effect.`);
    } else {
      state.notes.set(id, `Cancel failed: ${problemText(response, body)}`);
    }
  } catch {
    state.notes.set(id, 'Cancel failed: could not reach the server.');
  } finally {
    state.cancelPending.delete(id);
    markDirty(id);
  }
}
