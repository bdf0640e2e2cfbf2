// Retrying a failed or cancelled job from its card: one request at a time
// per job; the new job joins the list, and the old card notes which job
// runs it again (or why the server refused).

import { postRetry, problemText, readJson } from './api.js';
import { shortId } from './format.js';
import { applyJob, markDirty, state } from './store.js';

export async function retryJob(id) {
  if (state.retryPending.has(id)) return;
  state.retryPending.add(id);
  state.notes.delete(id);
  markDirty(id);
  try {
    const response = await postRetry(id);
    const body = await readJson(response);
    if (response.ok && body) {
      applyJob(body);
      state.notes.set(id, `Retried as job ${shortId(body.id)}.`);
    } else if (response.status === 409 && body && body.job) {
      applyJob(body.job);
      state.notes.set(id, `Not retried: ${problemText(response, body)}`);
    } else {
      state.notes.set(id, `Retry failed: ${problemText(response, body)}`);
    }
  } catch {
    state.notes.set(id, 'Retry failed: could not reach the server.');
  } finally {
    state.retryPending.delete(id);
    markDirty(id);
  }
}
