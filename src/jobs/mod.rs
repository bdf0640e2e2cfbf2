//! Job domain: identifiers, statuses, the error a job returns, and the
//! public job resource as it is serialised to clients.
//!
//! The state machine and progress arithmetic live in [`model`]; running,
//! queueing and cancelling jobs live in [`registry`]; what job code sees is
//! [`context::JobContext`]; job kinds are declared with [`kind::Kind`].

pub mod context;
pub mod kind;
pub mod model;
pub mod registry;
pub mod report;
pub mod worker;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};
use uuid::Uuid;

/// A job's identifier: a UUIDv7, so that ids sort by creation time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(Uuid);

impl JobId {
    /// A new, time-ordered id.
    pub fn generate() -> Self {
        JobId(Uuid::now_v7())
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// The text is not a job id (a hyphenated UUID).
#[derive(Debug, thiserror::Error)]
#[error("not a job id")]
pub struct MalformedJobId;

impl FromStr for JobId {
    type Err = MalformedJobId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Only the canonical hyphenated form names a job: other spellings
        // (braces, URNs, simple hex) would make one job reachable by many URLs.
        if s.len() != 36 {
            return Err(MalformedJobId);
        }
        Uuid::parse_str(s).map(JobId).map_err(|_| MalformedJobId)
    }
}

impl Serialize for JobId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Where a job is in its life. The last three are terminal: a job in one of
/// them never changes again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Cancelling,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Cancelling,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Cancelling => "cancelling",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }
}

/// The text names no job status.
#[derive(Debug, thiserror::Error)]
#[error("unknown status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for JobStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// A stage's own status. `Failed` and `Cancelled` mark the stage that was
/// running when the job ended that way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StageStatus {
    Pending,
    Running,
    Done,
    Failed,
    Cancelled,
}

/// How a job function reports failure: a machine-readable code, a message
/// for people, and whether trying again may succeed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct JobError {
    pub code: String,
    pub message: String,
    pub retryable: bool,
}

impl JobError {
    /// The code job code returns when it stops because it was cancelled.
    pub const CANCELLED: &'static str = "cancelled";

    /// A non-retryable failure.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        JobError {
            code: code.into(),
            message: message.into(),
            retryable: false,
        }
    }

    /// Marks the failure as worth retrying.
    pub fn retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// The error that tells the engine the job stopped for a cancel request.
    pub fn cancelled() -> Self {
        JobError::new(Self::CANCELLED, "the job was cancelled")
    }

    pub fn is_cancelled(&self) -> bool {
        self.code == Self::CANCELLED
    }
}

/// The `error` member of a failed or cancelled job.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ErrorInfo {
    pub code: String,
    pub message: String,
    pub stage: Option<String>,
    pub retryable: bool,
}

/// Serialises a time as RFC 3339 UTC with exactly six fractional digits.
pub(crate) fn serialize_time<S: Serializer>(time: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&time.to_rfc3339_opts(SecondsFormat::Micros, true))
}

pub(crate) fn serialize_optional_time<S: Serializer>(
    time: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match time {
        Some(time) => serialize_time(time, serializer),
        None => serializer.serialize_none(),
    }
}
