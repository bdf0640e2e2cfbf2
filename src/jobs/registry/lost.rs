//! Jobs of instances that died: on a store that several instances share,
//! a job whose instance stopped renewing its lease ends `failed` with error
//! code `instance_lost`, retryable, its running stage `failed`, published
//! by whichever live instance gets there first (CONTRACT.md, "Several
//! instances"). Every state of the job went through the shared store, so
//! the next `seq` is above any a client has seen. Its retention is kept by
//! the instance that ended it.
//!
//! The instance that was taken for dead (paused past its lease, or cut off
//! from Redis) learns it when it comes back: the store refuses its jobs'
//! next states, and it stops those jobs' tasks without another word.

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Registry;
use crate::jobs::abandoned::abandoned_end;
use crate::jobs::JobId;
use crate::store::LostJob;

impl Registry {
    /// Ends each lost job the store reports, until shutdown.
    pub(super) async fn end_lost_jobs(self, mut lost: mpsc::UnboundedReceiver<LostJob>) {
        loop {
            let LostJob { job, runner } = tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                next = lost.recv() => match next {
                    Some(lost) => lost,
                    None => return,
                },
            };
            let message = "the instance running the job stopped";
            let Some(state) = abandoned_end(&job, "instance_lost", message, job.seq + 1) else {
                tracing::error!(job_id = %job.job_id, "a lost job is not a JSON object; left as it is");
                continue;
            };
            match self.inner.store.end_lost(state, runner.clone()).await {
                Ok(_) => {
                    tracing::warn!(job_id = %job.job_id, %runner, "job of a lost instance ended failed");
                    self.retain_ended_since(job.job_id, Instant::now());
                }
                Err(error) => tracing::debug!(job_id = %job.job_id, %error, "a lost job was ended elsewhere"),
            }
        }
    }

    /// Stops here each job the store reports another instance ended (or
    /// runs), until shutdown: its task is told to stop, and the job is no
    /// longer this instance's (what it publishes, the store refuses).
    pub(super) async fn stop_jobs_ended_elsewhere(self, mut ended: mpsc::UnboundedReceiver<JobId>) {
        loop {
            let id = tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                next = ended.recv() => match next {
                    Some(id) => id,
                    None => return,
                },
            };
            let Some(control) = self.control(id) else {
                continue;
            };
            tracing::warn!(job_id = %id, "another instance ended this instance's job; stopping it here");
            control.cancel.cancel();
            self.job_ended(id);
        }
    }
}
