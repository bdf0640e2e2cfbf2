//! The relay of external workers' calls: checks a call's worker token,
//! hands the call to the job's task through its mailbox (see
//! [`crate::jobs::worker`]), and answers with what the task did. A call for
//! a job that has ended, or ends before answering, gets the job as it ended.
//!
//! With a store several instances share, a worker may call any instance:
//! one that does not run the job checks the token against the one the
//! store keeps and relays the call ([`Store::relay_call`]) to the instance
//! that runs it, which answers as for a call of its own.
//!
//! [`Store::relay_call`]: crate::store::Store::relay_call

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::{lock, until_ended, Registry};
use crate::jobs::report::ProgressReport;
use crate::jobs::worker::{Mailbox, WorkerCall, WorkerToken};
use crate::jobs::{JobError, JobId, JobStatus};
use crate::store::{Published, RelayedCall};

/// How long a call relayed to another instance waits, once answered, for
/// that instance's end of the job to reach this one.
const END_ARRIVAL_WAIT: Duration = Duration::from_secs(5);

/// Why a worker's call was refused.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("job {0} not found")]
    NotFound(JobId),
    #[error("the request has no worker token")]
    MissingToken,
    #[error("the worker token does not belong to this job")]
    WrongToken,
    #[error("the job already ended {}", .0.status.as_str())]
    Ended(Arc<Published>),
    #[error("{0}")]
    Refused(JobError),
    #[error("the instance that runs job {0} did not answer")]
    RunnerUnreachable(JobId),
}

/// Where a job's task is, for a call whose token was checked.
enum Runner {
    Here(Mailbox),
    /// On another instance of a shared store.
    Elsewhere,
}

/// A worker's call as relayed to the instance that runs the job, with the
/// token it presented (that instance checks it again against its own).
#[derive(Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
enum Relayed {
    Heartbeat { token: String, report: ProgressReport },
    Complete { token: String, result: Value },
    Fail { token: String, error: JobError },
}

/// The answer of the instance that runs the job.
#[derive(Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
enum RelayedAnswer {
    Heartbeat {
        cancel_requested: bool,
    },
    /// A completion or failure was recorded; the job's end follows.
    Recorded,
    NotFound,
    MissingToken,
    WrongToken,
    Ended,
    Refused {
        error: JobError,
    },
}

impl RelayedAnswer {
    fn of_error(error: WorkerError) -> RelayedAnswer {
        match error {
            WorkerError::NotFound(_) | WorkerError::RunnerUnreachable(_) => RelayedAnswer::NotFound,
            WorkerError::MissingToken => RelayedAnswer::MissingToken,
            WorkerError::WrongToken => RelayedAnswer::WrongToken,
            WorkerError::Ended(_) => RelayedAnswer::Ended,
            WorkerError::Refused(error) => RelayedAnswer::Refused { error },
        }
    }
}

impl Registry {
    /// Checks a worker's token for job `id` and answers where its task is:
    /// here, with its mailbox, or on another instance, whose store keeps
    /// the token.
    async fn authorize(&self, id: JobId, token: Option<&str>) -> Result<Runner, WorkerError> {
        let mailbox = lock(&self.inner.mailboxes).get(&id).cloned();
        if let Some(mailbox) = mailbox {
            let token = token.ok_or(WorkerError::MissingToken)?;
            return match mailbox.token.matches(token) {
                true => Ok(Runner::Here(mailbox)),
                false => Err(WorkerError::WrongToken),
            };
        }
        let Some(job) = self.job(id).await else {
            return Err(WorkerError::NotFound(id));
        };
        let token = token.ok_or(WorkerError::MissingToken)?;
        if self.control(id).is_some() || job.status.is_terminal() && !self.inner.store.queues_jobs() {
            // Runs here, or ran here, without a worker.
            return Err(WorkerError::WrongToken);
        }
        let stored = self.inner.store.secrets(id).await;
        let stored = stored.and_then(|secrets| secrets.worker_token.clone());
        match stored.map(WorkerToken::restored) {
            Some(stored) if stored.matches(token) => Ok(Runner::Elsewhere),
            // Its secrets went with it if the job was forgotten meanwhile.
            _ if self.job(id).await.is_none() => Err(WorkerError::NotFound(id)),
            _ => Err(WorkerError::WrongToken),
        }
    }

    /// Whether `token` is job `id`'s worker token: the check every worker
    /// call starts with.
    pub async fn check_worker(&self, id: JobId, token: Option<&str>) -> Result<(), WorkerError> {
        self.authorize(id, token).await.map(|_| ())
    }

    /// The answer to a call on a job that has ended: the job as it ended,
    /// or not found once it is forgotten.
    async fn ended(&self, id: JobId) -> WorkerError {
        match self.job(id).await {
            Some(job) => WorkerError::Ended(job),
            None => WorkerError::NotFound(id),
        }
    }

    /// Hands a call to the task of a job that runs here and waits for its
    /// answer; a job that has ended, or ends before answering, is
    /// [`WorkerError::Ended`].
    async fn call<T>(
        &self,
        id: JobId,
        mailbox: Mailbox,
        call: impl FnOnce(oneshot::Sender<T>) -> WorkerCall,
    ) -> Result<T, WorkerError> {
        let Some(control) = self.control(id) else {
            return Err(self.ended(id).await);
        };
        let (reply, answer) = oneshot::channel();
        mailbox.arrived.cancel();
        // Biased: an answer given just before the job ended is still the answer.
        let sent = tokio::select! {
            biased;
            sent = mailbox.calls.send(call(reply)) => sent.is_ok(),
            _ = control.ended.cancelled() => false,
        };
        let answer = if sent {
            tokio::select! {
                biased;
                answer = answer => answer.ok(),
                _ = control.ended.cancelled() => None,
            }
        } else {
            None
        };
        match answer {
            Some(answer) => Ok(answer),
            None => Err(self.ended(id).await),
        }
    }

    /// A worker's heartbeat with its progress; answers whether the job was
    /// asked to stop (the job then ends `cancelled`, acknowledged).
    pub async fn heartbeat(&self, id: JobId, token: Option<&str>, report: ProgressReport) -> Result<bool, WorkerError> {
        match self.authorize(id, token).await? {
            Runner::Here(mailbox) => self
                .call(id, mailbox, |reply| WorkerCall::Heartbeat { report, reply })
                .await?
                .map_err(WorkerError::Refused),
            Runner::Elsewhere => {
                let token = token.unwrap_or_default().to_owned();
                match self.relay(id, Relayed::Heartbeat { token, report }).await? {
                    RelayedAnswer::Heartbeat { cancel_requested } => Ok(cancel_requested),
                    other => Err(self.relayed_refusal(id, other).await),
                }
            }
        }
    }

    /// A worker's result: the job completes, unless it had already ended.
    pub async fn complete(&self, id: JobId, token: Option<&str>, result: Value) -> Result<Arc<Published>, WorkerError> {
        match self.authorize(id, token).await? {
            Runner::Here(mailbox) => {
                self.call(id, mailbox, |reply| WorkerCall::Complete { result, reply })
                    .await?;
                self.final_state(id, JobStatus::Completed).await
            }
            Runner::Elsewhere => {
                let token = token.unwrap_or_default().to_owned();
                self.relay_end(id, Relayed::Complete { token, result }, JobStatus::Completed)
                    .await
            }
        }
    }

    /// A worker's failure: the job fails, unless it had already ended.
    pub async fn fail(&self, id: JobId, token: Option<&str>, error: JobError) -> Result<Arc<Published>, WorkerError> {
        match self.authorize(id, token).await? {
            Runner::Here(mailbox) => {
                self.call(id, mailbox, |reply| WorkerCall::Fail { error, reply })
                    .await?;
                self.final_state(id, JobStatus::Failed).await
            }
            Runner::Elsewhere => {
                let token = token.unwrap_or_default().to_owned();
                self.relay_end(id, Relayed::Fail { token, error }, JobStatus::Failed)
                    .await
            }
        }
    }

    /// Relays a call to the instance that runs job `id`; no answer in time
    /// is [`WorkerError::Ended`] if the job has ended meanwhile (its
    /// instance may have died), else [`WorkerError::RunnerUnreachable`].
    async fn relay(&self, id: JobId, call: Relayed) -> Result<RelayedAnswer, WorkerError> {
        let call = serde_json::to_value(call).expect("a worker call serialises");
        let answer = self.inner.store.relay_call(id, call).await;
        match answer.and_then(|answer| serde_json::from_value(answer).ok()) {
            Some(answer) => Ok(answer),
            None => match self.job(id).await {
                Some(job) if job.status.is_terminal() => Err(WorkerError::Ended(job)),
                Some(_) => Err(WorkerError::RunnerUnreachable(id)),
                None => Err(WorkerError::NotFound(id)),
            },
        }
    }

    /// Relays a completion or a failure and answers the job once its end,
    /// `expected` or another, has reached this instance.
    async fn relay_end(&self, id: JobId, call: Relayed, expected: JobStatus) -> Result<Arc<Published>, WorkerError> {
        match self.relay(id, call).await? {
            RelayedAnswer::Recorded => match self.end_from_elsewhere(id).await {
                Some(job) if job.status == expected => Ok(job),
                Some(job) if job.status.is_terminal() => Err(WorkerError::Ended(job)),
                Some(_) => Err(WorkerError::RunnerUnreachable(id)),
                None => Err(WorkerError::NotFound(id)),
            },
            other => Err(self.relayed_refusal(id, other).await),
        }
    }

    /// The error an instance that runs the job answered with.
    async fn relayed_refusal(&self, id: JobId, answer: RelayedAnswer) -> WorkerError {
        match answer {
            RelayedAnswer::NotFound => WorkerError::NotFound(id),
            RelayedAnswer::MissingToken => WorkerError::MissingToken,
            RelayedAnswer::WrongToken => WorkerError::WrongToken,
            RelayedAnswer::Refused { error } => WorkerError::Refused(error),
            RelayedAnswer::Ended | RelayedAnswer::Heartbeat { .. } | RelayedAnswer::Recorded => {
                match self.end_from_elsewhere(id).await {
                    Some(job) if job.status.is_terminal() => WorkerError::Ended(job),
                    Some(_) => WorkerError::RunnerUnreachable(id),
                    None => WorkerError::NotFound(id),
                }
            }
        }
    }

    /// Job `id` once its end, committed by another instance, has reached
    /// this one (or as it is after [`END_ARRIVAL_WAIT`]).
    async fn end_from_elsewhere(&self, id: JobId) -> Option<Arc<Published>> {
        let feed = self.inner.store.subscribe(id).await?;
        let Some(mut updates) = feed.receiver else {
            return Some(feed.snapshot);
        };
        let _ = tokio::time::timeout(END_ARRIVAL_WAIT, until_ended(&mut updates)).await;
        self.job(id).await
    }

    /// Answers the calls other instances relay for the external jobs this
    /// one runs (their mailboxes are here), until shutdown.
    pub(super) async fn answer_relayed_calls(self, mut calls: mpsc::UnboundedReceiver<RelayedCall>) {
        loop {
            let RelayedCall { id, call, answer } = tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                call = calls.recv() => match call {
                    Some(call) => call,
                    None => return,
                },
            };
            let mailbox = lock(&self.inner.mailboxes).get(&id).cloned();
            let (Some(mailbox), Ok(call)) = (mailbox, serde_json::from_value::<Relayed>(call)) else {
                let _ = answer.send(None);
                continue;
            };
            let registry = self.clone();
            self.inner.tracker.spawn(async move {
                let answered = registry.answer_here(id, mailbox, call).await;
                let _ = answer.send(Some(serde_json::to_value(answered).expect("an answer serialises")));
            });
        }
    }

    /// Does what a relayed call asks of a job whose mailbox is here.
    async fn answer_here(&self, id: JobId, mailbox: Mailbox, call: Relayed) -> RelayedAnswer {
        let token = match &call {
            Relayed::Heartbeat { token, .. } | Relayed::Complete { token, .. } | Relayed::Fail { token, .. } => token,
        };
        if !mailbox.token.matches(token) {
            return RelayedAnswer::WrongToken;
        }
        let done = match call {
            Relayed::Heartbeat { report, .. } => {
                return match self
                    .call(id, mailbox, |reply| WorkerCall::Heartbeat { report, reply })
                    .await
                {
                    Ok(Ok(cancel_requested)) => RelayedAnswer::Heartbeat { cancel_requested },
                    Ok(Err(error)) => RelayedAnswer::Refused { error },
                    Err(error) => RelayedAnswer::of_error(error),
                };
            }
            Relayed::Complete { result, .. } => {
                self.call(id, mailbox, |reply| WorkerCall::Complete { result, reply })
                    .await
            }
            Relayed::Fail { error, .. } => self.call(id, mailbox, |reply| WorkerCall::Fail { error, reply }).await,
        };
        if let Some(control) = self.control(id) {
            control.ended.cancelled().await;
        }
        match done {
            Ok(()) => RelayedAnswer::Recorded,
            Err(error) => RelayedAnswer::of_error(error),
        }
    }

    /// The job's state once its task has recorded the outcome: the job if
    /// it ended `expected`, else [`WorkerError::Ended`] (something else, such
    /// as a forced cancel, ended it first).
    async fn final_state(&self, id: JobId, expected: JobStatus) -> Result<Arc<Published>, WorkerError> {
        if let Some(control) = self.control(id) {
            control.ended.cancelled().await;
        }
        let job = self.job(id).await.ok_or(WorkerError::NotFound(id))?;
        if job.status == expected {
            Ok(job)
        } else {
            Err(WorkerError::Ended(job))
        }
    }
}
