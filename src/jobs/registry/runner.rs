//! A job's task: waits for its start (a running slot, or its external
//! worker's first call), runs the job's work beside the merge timer of its
//! publisher, enforces the cancel grace period and shutdown, and records
//! the outcome through [`Registry::finish`].

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::Utc;
use futures_util::FutureExt;
use serde_json::Value;
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;

use super::{JobControl, Registry};
use crate::jobs::context::JobContext;
use crate::jobs::kind::PreparedJob;
use crate::jobs::model::{Change, Outcome};
use crate::jobs::JobError;

/// A job's wait for one of the running slots.
type SlotWait = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// What a job waits for before it runs.
pub(super) enum Start {
    /// One of the running slots, first in first out: its place in their
    /// queue taken at launch, or, for a job that waits for its owner's
    /// running place first, taken once it has that place.
    RunningSlot(Option<SlotWait>),
    /// Its external worker's first call, for at most the given time.
    WorkerArrived(CancellationToken, Option<Duration>),
}

impl Start {
    /// A job that holds its running slot already.
    pub(super) fn holding(slot: OwnedSemaphorePermit) -> Start {
        Start::RunningSlot(Some(Box::pin(std::future::ready(Ok(slot)))))
    }

    /// A place in the running slots' queue, taken now: polled once here, the
    /// wait joins the semaphore's FIFO queue in the order jobs are launched,
    /// not in the order the runtime first polls their tasks.
    pub(super) fn running_slot(slots: &Arc<Semaphore>) -> Start {
        let mut wait: SlotWait = Box::pin(slots.clone().acquire_owned());
        match wait
            .as_mut()
            .poll(&mut Context::from_waker(futures_util::task::noop_waker_ref()))
        {
            Poll::Ready(taken) => Start::RunningSlot(Some(Box::pin(std::future::ready(taken)))),
            Poll::Pending => Start::RunningSlot(Some(wait)),
        }
    }

    /// A running slot, waited for once the job has its owner's running place.
    pub(super) fn after_owner_place() -> Start {
        Start::RunningSlot(None)
    }
}

impl Registry {
    /// A job's task, from its start to its recorded outcome.
    pub(super) async fn run(self, start: Start, work: PreparedJob, control: JobControl) {
        let _stopped = control.stopped.clone().drop_guard();
        let started = async {
            match start {
                Start::RunningSlot(wait) => {
                    // The owner's place first: waiting for it holds no place
                    // in the server's queue.
                    let owner_permit = match &control.owner {
                        Some(owner) => owner.running_permit().await,
                        None => None,
                    };
                    let wait = wait.unwrap_or_else(|| Box::pin(self.inner.running_slots.clone().acquire_owned()));
                    let slot = wait.await.expect("the running-slot semaphore is never closed");
                    Ok(Some((slot, owner_permit)))
                }
                Start::WorkerArrived(arrived, start_timeout) => {
                    let waited = async {
                        match start_timeout {
                            Some(limit) => timeout(limit, arrived.cancelled()).await.is_ok(),
                            None => {
                                arrived.cancelled().await;
                                true
                            }
                        }
                    };
                    if waited.await {
                        Ok(None)
                    } else {
                        Err(JobError::new("start_timeout", "no worker took the job in time").retryable(true))
                    }
                }
            }
        };
        let slot = tokio::select! {
            biased;
            _ = self.inner.shutdown.cancelled() => {
                // A durable store keeps a queued job queued, to run after
                // the restart; otherwise it would be lost, so it ends.
                if !self.inner.store.durable() {
                    self.finish(&control, Outcome::Failed(shutdown_error())).await;
                }
                return;
            }
            _ = control.ended.cancelled() => return,
            started = started => match started {
                Ok(slot) => slot,
                Err(error) => {
                    self.finish(&control, Outcome::Failed(error)).await;
                    return;
                }
            },
        };
        control.leave_queue(&self.inner.queued);
        let publisher = control.publisher.clone();
        let started = publisher.update(|model| {
            let change = model.start(Utc::now());
            (change != Change::None, change)
        });
        if !started {
            // Cancelled while it waited for the slot.
            return;
        }
        tracing::debug!("job started");

        let ctx = JobContext::new(publisher.clone(), control.cancel.clone());
        let mut work = Box::pin(AssertUnwindSafe(work(ctx)).catch_unwind());
        let merged_changes = publisher.publish_merged_changes();
        tokio::pin!(merged_changes);
        let mut grace_deadline: Option<Instant> = None;
        let outcome = loop {
            tokio::select! {
                biased;
                _ = self.inner.shutdown.cancelled() => break Some(Outcome::Failed(shutdown_error())),
                _ = control.ended.cancelled() => break None,
                result = &mut work => break Some(outcome_of(result)),
                _ = control.cancel.cancelled(), if grace_deadline.is_none() => {
                    grace_deadline = Some(Instant::now() + self.inner.settings.cancel_grace);
                }
                _ = sleep_until(grace_deadline.unwrap_or_else(Instant::now)), if grace_deadline.is_some() => {
                    tracing::warn!("job ignored cancel for the grace period; aborting it");
                    break Some(Outcome::Cancelled { forced: true });
                }
                never = &mut merged_changes => match never {},
            }
        };
        // Dropping the job's future aborts whatever it was still doing (a
        // command's process group is killed), before anyone hears the outcome.
        drop(work);
        if let Some(outcome) = outcome {
            self.finish(&control, outcome).await;
        }
        drop(slot);
    }
}

fn shutdown_error() -> JobError {
    JobError::new("shutdown", "the server shut down while the job was live").retryable(true)
}

fn outcome_of(result: Result<Result<Value, JobError>, Box<dyn Any + Send>>) -> Outcome {
    match result {
        Ok(Ok(value)) => Outcome::Completed(value),
        Ok(Err(error)) if error.is_cancelled() => Outcome::Cancelled { forced: false },
        Ok(Err(error)) => Outcome::Failed(error),
        Err(panic) => {
            let detail = panic
                .downcast_ref::<&str>()
                .map(|message| message.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "the job's task panicked".to_owned());
            tracing::error!(panic = %detail, "job panicked");
            Outcome::Failed(JobError::new("panic", detail))
        }
    }
}
