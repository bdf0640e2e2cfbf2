//! The relay of external workers' calls: checks a call's worker token,
//! hands the call to the job's task through its mailbox (see
//! [`crate::jobs::worker`]), and answers with what the task did. A call for
//! a job that has ended, or ends before answering, gets the job as it ended.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::oneshot;

use super::{lock, Registry};
use crate::jobs::report::ProgressReport;
use crate::jobs::worker::{Mailbox, WorkerCall};
use crate::jobs::{JobError, JobId, JobStatus};
use crate::store::Published;

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
}

impl Registry {
    /// Checks a worker's token for job `id` and answers its mailbox.
    async fn authorize(&self, id: JobId, token: Option<&str>) -> Result<Mailbox, WorkerError> {
        let mailbox = lock(&self.inner.mailboxes).get(&id).cloned();
        match (mailbox, token) {
            (None, _) if self.job(id).await.is_none() => Err(WorkerError::NotFound(id)),
            (_, None) => Err(WorkerError::MissingToken),
            (Some(mailbox), Some(token)) if mailbox.token.matches(token) => Ok(mailbox),
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

    /// Hands a call to the job's task and waits for its answer; a job that
    /// has ended, or ends before answering, is [`WorkerError::Ended`].
    async fn call<T>(
        &self,
        id: JobId,
        token: Option<&str>,
        call: impl FnOnce(oneshot::Sender<T>) -> WorkerCall,
    ) -> Result<T, WorkerError> {
        let mailbox = self.authorize(id, token).await?;
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
        self.call(id, token, |reply| WorkerCall::Heartbeat { report, reply })
            .await?
            .map_err(WorkerError::Refused)
    }

    /// A worker's result: the job completes, unless it had already ended.
    pub async fn complete(&self, id: JobId, token: Option<&str>, result: Value) -> Result<Arc<Published>, WorkerError> {
        self.call(id, token, |reply| WorkerCall::Complete { result, reply })
            .await?;
        self.final_state(id, JobStatus::Completed).await
    }

    /// A worker's failure: the job fails, unless it had already ended.
    pub async fn fail(&self, id: JobId, token: Option<&str>, error: JobError) -> Result<Arc<Published>, WorkerError> {
        self.call(id, token, |reply| WorkerCall::Fail { error, reply }).await?;
        self.final_state(id, JobStatus::Failed).await
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
