//! Job domain: identifiers, statuses, the error a job returns, and the
//! engine around them.
//!
//! The state machine, progress arithmetic and the job resource live in
//! [`model`]; when a change is published, in [`publish`]; running,
//! queueing, cancelling and forgetting jobs, in [`registry`]; what job code
//! sees is [`context::JobContext`]; job kinds are declared with
//! [`kind::Kind`]; counts and names that clients send are read by
//! [`counts`] and [`names`]; a job's [`labels`] are checked in their own
//! module.

pub mod abandoned;
pub mod context;
pub mod counts;
pub mod kind;
pub mod labels;
pub mod model;
pub mod names;
pub mod publish;
pub mod registry;
pub mod report;
pub mod worker;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
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

    /// The id's 16 bytes, as a stream ticket carries them.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        JobId(Uuid::from_bytes(bytes))
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
        serializer.serialize_str(self.0.hyphenated().encode_lower(&mut Uuid::encode_buffer()))
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

    /// The status's place in [`JobStatus::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

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
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
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
    /// Only in a cancelled job's error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancelled_by: Option<CancelledBy>,
}

/// Who asked for a cancel: a subject, or null when authentication is off
/// or the server ended the job itself.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(transparent)]
pub struct CancelledBy(pub Option<String>);

/// Serialises a time as RFC 3339 UTC with exactly six fractional digits.
/// Every published state has up to four times, so they are written into a
/// stack buffer rather than a `String` each.
pub(crate) fn serialize_time<S: Serializer>(time: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    match rfc3339_micros(time) {
        Some(text) => serializer.serialize_str(std::str::from_utf8(&text).expect("only ASCII digits and separators")),
        None => serializer.serialize_str(&time.to_rfc3339_opts(SecondsFormat::Micros, true)),
    }
}

/// `time` as `chrono` writes it with `SecondsFormat::Micros` and `Z`
/// (`2026-11-22T18:00:03.250000Z`), for years 0 to 9999; None for others,
/// which `chrono` writes with a sign.
fn rfc3339_micros(time: &DateTime<Utc>) -> Option<[u8; 27]> {
    let year = u32::try_from(time.year()).ok().filter(|year| *year <= 9999)?;
    let (mut second, mut nanosecond) = (time.second(), time.nanosecond());
    // A leap second is stored as a nanosecond count past 1e9.
    if nanosecond >= 1_000_000_000 {
        second += 1;
        nanosecond -= 1_000_000_000;
    }
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |end: usize, digits: usize, mut value: u32| {
        for at in (end - digits..end).rev() {
            text[at] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(4, 4, year);
    put(7, 2, time.month());
    put(10, 2, time.day());
    put(13, 2, time.hour());
    put(16, 2, time.minute());
    put(19, 2, second);
    put(26, 6, nanosecond / 1000);
    Some(text)
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone};

    #[test]
    fn times_are_written_as_chrono_writes_them() {
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|day| day.and_hms_nano_opt(23, 59, 59, 1_999_999_999))
            .expect("a valid leap second")
            .and_utc();
        let times = [
            Utc::now(),
            Utc.with_ymd_and_hms(2026, 11, 22, 18, 0, 3).unwrap(),
            Utc.timestamp_opt(0, 1_000).unwrap(),
            Utc.timestamp_opt(1_790_000_000, 999_999_999).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-1, 1, 1, 0, 0, 0).unwrap(),
            leap,
        ];
        for time in times {
            let expected = serde_json::to_string(&time.to_rfc3339_opts(SecondsFormat::Micros, true)).unwrap();
            let mut written = Vec::new();
            serialize_time(&time, &mut serde_json::Serializer::new(&mut written)).unwrap();
            assert_eq!(String::from_utf8(written).unwrap(), expected, "{time:?}");
        }
    }

    #[test]
    fn a_job_id_is_written_hyphenated() {
        let id = JobId::generate();
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{id}\""));
    }
}
