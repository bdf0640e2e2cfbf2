//! External workers: jobs that a program outside the server runs and
//! reports over HTTP, in any language.
//!
//! Creating such a job makes a worker token, shown once. The worker's calls
//! (heartbeat, complete, fail) reach the job's task through its mailbox, so
//! that they are applied in order by the same task that an in-process job
//! would run in; the registry's runner around it still enforces the cancel
//! grace period and shutdown. A job waits `queued` until its worker's first
//! call, and fails `heartbeat_timeout` if its worker falls silent.
//!
//! The registry owns the tokens and mailboxes; HTTP handlers reach them
//! through [`super::registry::Registry`].

use std::fmt;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::context::JobContext;
use super::kind::JobResult;
use super::report::{ProgressReport, Reporter, StageDecl};
use super::JobError;

/// How a kind's external workers are held to account.
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// Longest silence between a worker's calls before its job fails
    /// `heartbeat_timeout`.
    pub heartbeat_timeout: Duration,
    /// Longest wait for a worker's first call before the job fails
    /// `start_timeout`; None waits as long as the job is kept queued.
    pub start_timeout: Option<Duration>,
    /// The kind's stages, declared when a worker starts the job.
    pub stages: Vec<StageDecl>,
}

/// Error codes a worker may not use in `fail`: they mean something the
/// server decides.
pub const RESERVED_CODES: [&str; 7] = [
    JobError::CANCELLED,
    "cancel_forced",
    "shutdown",
    "interrupted",
    "instance_lost",
    "heartbeat_timeout",
    "start_timeout",
];

/// A job's worker token: the bearer secret for its worker endpoints.
#[derive(Clone, PartialEq, Eq)]
pub struct WorkerToken(String);

impl WorkerToken {
    /// A new token: 244 random bits from two UUIDv4s, `jcw_` and hex.
    pub(crate) fn generate() -> Self {
        WorkerToken(format!(
            "jcw_{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        ))
    }

    /// The token a job was given before a restart, as its store kept it.
    pub(crate) fn restored(token: String) -> Self {
        WorkerToken(token)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Compares in time that does not depend on where the texts differ.
    pub(crate) fn matches(&self, presented: &str) -> bool {
        let (expected, presented) = (self.0.as_bytes(), presented.as_bytes());
        expected.len() == presented.len()
            && expected
                .iter()
                .zip(presented)
                .fold(0u8, |difference, (a, b)| difference | (a ^ b))
                == 0
    }
}

impl fmt::Debug for WorkerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WorkerToken(…)")
    }
}

/// A worker's call, with where to send the answer.
pub(crate) enum WorkerCall {
    Heartbeat {
        report: ProgressReport,
        /// Whether the job was asked to stop, or why the report was refused.
        reply: oneshot::Sender<Result<bool, JobError>>,
    },
    Complete {
        result: Value,
        reply: oneshot::Sender<()>,
    },
    Fail {
        error: JobError,
        reply: oneshot::Sender<()>,
    },
}

/// A live external job's side of the mailbox: what the registry keeps.
#[derive(Clone)]
pub(crate) struct Mailbox {
    pub(crate) token: WorkerToken,
    pub(crate) calls: mpsc::Sender<WorkerCall>,
    /// Fires at the worker's first call: the job leaves the queue.
    pub(crate) arrived: CancellationToken,
}

/// The job's side of the mailbox.
pub(crate) struct Inbox {
    calls: mpsc::Receiver<WorkerCall>,
    settings: WorkerSettings,
}

/// Calls waiting for the job's task beyond this make the worker wait.
const MAILBOX_DEPTH: usize = 16;

/// A new mailbox, opened by `token`.
pub(crate) fn mailbox(settings: WorkerSettings, token: WorkerToken) -> (Mailbox, Inbox) {
    let (sender, receiver) = mpsc::channel(MAILBOX_DEPTH);
    (
        Mailbox {
            token,
            calls: sender,
            arrived: CancellationToken::new(),
        },
        Inbox {
            calls: receiver,
            settings,
        },
    )
}

impl Inbox {
    /// The external job's work: applies the worker's calls until one ends
    /// the job. The first heartbeat after a cancel request acknowledges it.
    pub(crate) async fn drive(mut self, ctx: JobContext) -> JobResult {
        let mut reporter = Reporter::new(ctx.clone());
        reporter.declare_and_start(&self.settings.stages)?;
        let silence = self.settings.heartbeat_timeout;
        loop {
            let call = match timeout(silence, self.calls.recv()).await {
                Ok(Some(call)) => call,
                Ok(None) | Err(_) => {
                    return Err(JobError::new(
                        "heartbeat_timeout",
                        format!("the worker sent nothing for {}", humantime::format_duration(silence)),
                    )
                    .retryable(true))
                }
            };
            match call {
                WorkerCall::Heartbeat { reply, .. } if ctx.is_cancelled() => {
                    let _ = reply.send(Ok(true));
                    return Err(JobError::cancelled());
                }
                WorkerCall::Heartbeat { report, reply } => {
                    let _ = reply.send(reporter.apply(&report).map(|()| false));
                }
                WorkerCall::Complete { result, reply } => {
                    let _ = reply.send(());
                    return Ok(result);
                }
                WorkerCall::Fail { error, reply } => {
                    let _ = reply.send(());
                    return Err(error);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_compared_whole() {
        let token = WorkerToken::generate();
        assert_eq!(token.as_str().len(), 4 + 64);
        assert_ne!(token, WorkerToken::generate());
        assert!(token.matches(token.as_str()));
        assert!(!token.matches(&token.as_str()[..67]));
        assert!(!token.matches(""));
        assert!(!format!("{token:?}").contains(&token.as_str()[4..]));
    }
}
