//! Cancel requests: a queued job ends at once; a running job is told to
//! stop and the request waits for its task, at most the grace period, after
//! which the engine ends the job `cancel_forced` itself. The answer is the
//! job's final state: `cancelled`, or the outcome that won the race. A job
//! that another instance runs is cancelled by that instance, asked through
//! the store.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

use super::{until_ended, Registry};
use crate::jobs::model::{CancelRequest, Outcome};
use crate::jobs::{JobId, JobStatus};
use crate::store::{CancelRequestFor, Published};

/// How long a cancel waits for a job's end, decided, to be stored (a slow
/// or unreachable store delays it).
const END_STORED_WAIT: Duration = Duration::from_secs(10);
/// How long a forced cancel waits for the job's task to drop its work.
const TEARDOWN_WAIT: Duration = Duration::from_millis(100);
/// How long, beyond the grace period, a cancel asked of another instance
/// waits for that instance's answer.
const RELAY_MARGIN: Duration = Duration::from_secs(1);
/// How often a cancel asked of another instance is asked again while the
/// job goes on.
const ASK_AGAIN: Duration = Duration::from_millis(500);

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
            // Ended before this request, never existed, or runs elsewhere.
            return self.cancel_elsewhere(id, by).await;
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
                let _ = timeout(END_STORED_WAIT, control.ended.cancelled()).await;
                return self.final_answer(id).await;
            }
            (CancelRequest::TaskToldToStop | CancelRequest::AlreadyCancelling, _) => {
                control.cancel.cancel();
                if timeout(grace, control.ended.cancelled()).await.is_err() {
                    self.finish(&control, Outcome::Cancelled { forced: true }).await;
                    // The task's own end may still be on its way to the
                    // store (the forced one was then too late).
                    let _ = timeout(END_STORED_WAIT, control.ended.cancelled()).await;
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

    /// Cancels a job this instance does not run: asks the instance that runs
    /// it, through the store, and answers once the job has ended (that
    /// instance enforces the grace period as for its own requests).
    async fn cancel_elsewhere(&self, id: JobId, by: Option<Arc<str>>) -> Result<Arc<Published>, CancelError> {
        let Some(feed) = self.inner.store.subscribe(id).await else {
            return Err(CancelError::NotFound(id));
        };
        let Some(mut updates) = feed.receiver else {
            return self.final_answer(id).await;
        };
        if feed.snapshot.status == JobStatus::Queued && self.inner.store.queues_jobs() {
            // Waiting in the shared queue: ended here, unless an instance
            // takes it first (then the store refuses this end).
            let publisher = self.resumed_publisher(&feed.snapshot);
            if let (_, Some(_)) = publisher.request_cancel(by.clone()).await {
                return self.final_answer(id).await;
            }
        }
        // Asked again every so often: a request sent while an instance's
        // subscription was cut is lost (asking twice is harmless).
        let deadline = Instant::now() + self.inner.settings.cancel_grace + RELAY_MARGIN;
        loop {
            self.inner.store.ask_to_cancel(id, by.clone());
            let ask_again = (Instant::now() + ASK_AGAIN).min(deadline);
            if tokio::time::timeout_at(ask_again, until_ended(&mut updates))
                .await
                .is_ok()
            {
                break;
            }
            if ask_again == deadline {
                tracing::warn!(job_id = %id, "the instance running the job did not end it in time");
                break;
            }
        }
        self.final_answer(id).await
    }

    /// Acts on the cancel requests other instances relay to this one, for
    /// the jobs it runs, until shutdown.
    pub(super) async fn cancel_when_asked(self, mut requests: mpsc::UnboundedReceiver<CancelRequestFor>) {
        loop {
            let request = tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                request = requests.recv() => match request {
                    Some(request) => request,
                    None => return,
                },
            };
            self.cancel_if_running_here(request);
        }
    }

    /// Acts on a cancel request relayed from another instance if this
    /// instance runs its job.
    pub(super) fn cancel_if_running_here(&self, CancelRequestFor { id, by }: CancelRequestFor) {
        if self.control(id).is_some() {
            let registry = self.clone();
            self.inner.tracker.spawn(async move {
                let _ = registry.cancel(id, by).await;
            });
        }
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
