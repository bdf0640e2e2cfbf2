//! Retention: ended jobs are kept for `retention`, and at most
//! `max_finished` of them; then the store forgets them, with their worker
//! mailboxes and idempotency keys. A reaper task sleeps until the oldest ended job expires.

use std::collections::VecDeque;

use tokio::time::{sleep_until, Instant};

use super::{lock, Registry};
use crate::jobs::JobId;

impl Registry {
    /// Starts the retention of a job that ended at `ended_at`, no earlier
    /// than any job whose retention started before.
    pub(super) fn retain_ended_since(&self, id: JobId, ended_at: Instant) {
        let mut ended = lock(&self.inner.ended);
        // The reaper sleeps until the oldest ended job expires, so it needs
        // waking only when this job is the oldest. Waking it for every job
        // would also cost each job's watchers: the wake would take their
        // place as the task the runtime polls next.
        let reaper_idle = ended.is_empty();
        ended.push_back((ended_at, id));
        self.evict(&mut ended, Instant::now());
        drop(ended);
        if reaper_idle {
            self.inner.reaper_wake.notify_one();
        }
    }

    /// Forgets ended jobs past their retention, and the oldest beyond the
    /// maximum count.
    fn evict(&self, ended: &mut VecDeque<(Instant, JobId)>, now: Instant) {
        let settings = &self.inner.settings;
        while let Some(&(ended_at, id)) = ended.front() {
            if ended.len() > settings.max_finished || now >= ended_at + settings.retention {
                ended.pop_front();
                // The key first: a key found in the index names a stored job.
                self.forget_key(id);
                self.inner.store.remove(id);
                lock(&self.inner.mailboxes).remove(&id);
            } else {
                break;
            }
        }
    }

    /// The reaper: wakes when the oldest ended job expires, and forgets it.
    pub(super) async fn reap(self) {
        loop {
            let next_expiry = lock(&self.inner.ended)
                .front()
                .map(|&(ended_at, _)| ended_at + self.inner.settings.retention);
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = self.inner.reaper_wake.notified() => {}
                _ = sleep_until(next_expiry.unwrap_or_else(Instant::now)), if next_expiry.is_some() => {}
            }
            let mut ended = lock(&self.inner.ended);
            self.evict(&mut ended, Instant::now());
        }
    }
}
