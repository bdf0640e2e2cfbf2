// The job lifecycle as the API names it: which statuses are still live,
// which are final, which may be retried, and which SSE event types carry a
// job's state.

export const TERMINAL = new Set(['completed', 'failed', 'cancelled']);
export const LIVE = new Set(['queued', 'running', 'cancelling']);
export const RETRYABLE = new Set(['failed', 'cancelled']);
export const JOB_EVENTS = ['snapshot', 'progress', 'completed', 'failed', 'cancelled'];
