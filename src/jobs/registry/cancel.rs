//! Cancel requests: a queued job ends at once; a running job is told to
//! stop and the request waits for its task, at most the grace period, after
//! which the engine ends the job `cancel_forced` itself. The answer is the
//! job's final state: `cancelled`, or the outcome that won the race.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{timeout, Instant};

use super::Registry;
use crate::jobs::model::{CancelRequest, Outcome};
use crate::jobs::{JobId, JobStatus};
use crate::store::Published;

/// How long a forced cancel waits for the job's task to drop its work.
const TEARDOWN_WAIT: Duration = Duration::from_millis(100);

/// Why a cancel request did not end in a cancelled job.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error("job {0} not found")]
    NotFound(JobId),
    #[error("the job already ended {}", .0.status.as_str())]
    AlreadyEnded(Arc<Published>),
}

impl Registry {
    /// Cancels a job at the request of `by` (None without authentication)
    /// and answers once it has stopped: its final state if it ended
    /// cancelled, or [`CancelError::AlreadyEnded`] if it ended otherwise.
    pub async fn cancel(&self, id: JobId, by: Option<Arc<str>>) -> Result<Arc<Published>, CancelError> {
        let asked_at = Instant::now();
        let Some(control) = self.control(id) else {
            // Ended before this request, or never existed.
            return self.final_answer(id).await;
        };
        let grace = self.inner.settings.cancel_grace;
        match control.publisher.request_cancel(by).await {
            (CancelRequest::CancelledWhileQueued, ended) => {
                if ended.is_some() {
                    self.job_ended(id);
                }
            }
            (CancelRequest::AlreadyEnded(_), _) => {
                // Another outcome won; its state is being committed.
                let _ = timeout(grace, control.ended.cancelled()).await;
                return self.final_answer(id).await;
            }
            (CancelRequest::TaskToldToStop | CancelRequest::AlreadyCancelling, _) => {
                control.cancel.cancel();
                if timeout(grace, control.ended.cancelled()).await.is_err() {
                    self.finish(&control, Outcome::Cancelled { forced: true }).await;
                    // The task drops the work as soon as it sees the job ended.
                    let _ = timeout(TEARDOWN_WAIT, control.stopped.cancelled()).await;
                }
            }
        }
        self.inner
            .metrics
            .cancel_latency
            .observe(asked_at.elapsed().as_secs_f64());
        self.final_answer(id).await
    }

    /// The answer to a cancel of a job that has ended: 200 with it if it was
    /// cancelled, else the conflict with the outcome it has.
    async fn final_answer(&self, id: JobId) -> Result<Arc<Published>, CancelError> {
        let job = self.job(id).await.ok_or(CancelError::NotFound(id))?;
        match job.status {
            JobStatus::Cancelled => Ok(job),
            _ => Err(CancelError::AlreadyEnded(job)),
        }
    }
}
