//! A job's state machine, with no I/O and no locks: the job's
//! [`Publisher`](super::publish::Publisher) owns a `JobModel` behind its
//! lock and publishes it.
//!
//! Every mutation reports a [`Change`], which tells the publisher whether
//! to publish now, merge into the next publish, or do nothing. A mutation
//! that leaves the state as it was reports [`Change::None`], so repeated
//! identical reports publish nothing. [`JobModel::finish`] is the only
//! place a terminal status is set: it decides the outcome once, and every
//! mutation after it is a no-op.
//!
//! This file holds the lifecycle (queued, running, cancelling, the terminal
//! decision); [`progress`] the stages, counters, progress and pace; [`view`]
//! the job resource as clients see it.

pub mod progress;
pub mod view;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use serde_json::Value;

use super::labels::Labels;
use super::{CancelledBy, ErrorInfo, JobError, JobId, JobStatus, StageStatus};
pub use progress::{check_stages, StageSpec, PROGRESS_CAP};
use progress::{Pace, Stage};
pub use view::{JobView, StageView};

/// What a mutation did to the job, which decides when it is published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Nothing visible changed: publish nothing.
    None,
    /// A counter, total, fraction or message changed: may be merged with
    /// other such changes within one publish interval.
    Counter,
    /// A status or stage changed: publish at once.
    Immediate,
}

/// How a job ended. Passed to [`JobModel::finish`], the one terminal decision.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Completed(Value),
    Failed(JobError),
    /// `forced` when the task did not stop within the grace period and was
    /// aborted.
    Cancelled {
        forced: bool,
    },
}

/// The job was already terminal; it keeps the status it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the job is already {}", .0.as_str())]
pub struct AlreadyTerminal(pub JobStatus);

/// What a cancel request found, decided under the store's lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelRequest {
    /// The job was queued: it is now `cancelled`, and no task needs telling.
    CancelledWhileQueued,
    /// The job was running: it is now `cancelling`; its task must be told.
    TaskToldToStop,
    /// An earlier request is already waiting for the task.
    AlreadyCancelling,
    /// The job had already ended with this status.
    AlreadyEnded(JobStatus),
}

/// The whole state of one job.
#[derive(Clone, Debug)]
pub struct JobModel {
    id: JobId,
    kind: Arc<str>,
    params: Arc<Value>,
    /// `params` serialised once: they never change, and every published
    /// state echoes them.
    params_json: Arc<RawValue>,
    /// Shared with every published state, which the store filters on.
    labels: Arc<Labels>,
    /// The failed or cancelled job this one retries.
    retry_of: Option<JobId>,
    /// The subject that owns the job; None without authentication.
    owner: Option<Arc<str>>,
    /// Where the job's stream is read, ticket included when authentication is on.
    stream_url: Arc<str>,
    /// The subject whose cancel request ended (or is ending) the job.
    cancelled_by: Option<Arc<str>>,
    status: JobStatus,
    seq: u64,
    stages: Vec<Stage>,
    current_stage: Option<usize>,
    /// Fraction reported by a job without stages.
    own_fraction: f64,
    /// Last published progress: the floor for the next one.
    progress: f64,
    message: Option<String>,
    result: Value,
    error: Option<ErrorInfo>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    stage_pace: Pace,
    job_pace: Pace,
    rate: Option<f64>,
    eta_seconds: Option<f64>,
}

impl JobModel {
    /// A new queued job. Its first publish gives it `seq` 1.
    pub fn new(id: JobId, kind: Arc<str>, params: Arc<Value>, now: DateTime<Utc>) -> Self {
        let params_json = serde_json::value::to_raw_value(&*params).expect("a JSON value always serialises");
        JobModel {
            id,
            kind,
            params,
            params_json: Arc::from(params_json),
            labels: Arc::default(),
            retry_of: None,
            owner: None,
            stream_url: Arc::from(format!("/v1/jobs/{id}/events")),
            cancelled_by: None,
            status: JobStatus::Queued,
            seq: 0,
            stages: Vec::new(),
            current_stage: None,
            own_fraction: 0.0,
            progress: 0.0,
            message: None,
            result: Value::Null,
            error: None,
            created_at: now,
            started_at: None,
            updated_at: now,
            finished_at: None,
            stage_pace: Pace::default(),
            job_pace: Pace::default(),
            rate: None,
            eta_seconds: None,
        }
    }

    /// The same job with `labels`, given when it is created.
    pub fn with_labels(mut self, labels: Arc<Labels>) -> Self {
        self.labels = labels;
        self
    }

    /// The same job, as the retry of job `retry_of`, if any.
    pub fn with_retry_of(mut self, retry_of: Option<JobId>) -> Self {
        self.retry_of = retry_of;
        self
    }

    /// A job that was queued when an earlier run of the server stopped,
    /// with its last published `seq`: it stays queued, and its next publish
    /// follows that `seq`.
    pub fn restored_queued(id: JobId, kind: Arc<str>, params: Arc<Value>, created_at: DateTime<Utc>, seq: u64) -> Self {
        let mut model = JobModel::new(id, kind, params, created_at);
        model.seq = seq;
        model
    }

    /// The same job, owned by `owner` and read at `stream_url`.
    pub fn with_owner(mut self, owner: Option<Arc<str>>, stream_url: Arc<str>) -> Self {
        self.owner = owner;
        self.stream_url = stream_url;
        self
    }

    pub fn owner(&self) -> Option<&Arc<str>> {
        self.owner.as_ref()
    }

    pub fn id(&self) -> JobId {
        self.id
    }

    pub fn kind(&self) -> &Arc<str> {
        &self.kind
    }

    pub fn labels(&self) -> &Arc<Labels> {
        &self.labels
    }

    pub fn status(&self) -> JobStatus {
        self.status
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn progress(&self) -> f64 {
        self.progress
    }

    /// Queued → running, when the job's task gets a running slot.
    pub fn start(&mut self, now: DateTime<Utc>) -> Change {
        if self.status != JobStatus::Queued {
            return Change::None;
        }
        self.status = JobStatus::Running;
        self.started_at = Some(now);
        Change::Immediate
    }

    /// A cancel request by `by` (None: authentication is off): a queued job
    /// ends at once; a running one moves to `cancelling` and waits for its
    /// task. The first request's subject is the job's `cancelled_by`.
    pub fn request_cancel(&mut self, now: DateTime<Utc>, by: Option<Arc<str>>) -> (CancelRequest, Change) {
        if matches!(self.status, JobStatus::Queued | JobStatus::Running) {
            self.cancelled_by = by;
        }
        match self.status {
            JobStatus::Queued => {
                let change = self
                    .finish(Outcome::Cancelled { forced: false }, now)
                    .expect("a queued job is not terminal");
                (CancelRequest::CancelledWhileQueued, change)
            }
            JobStatus::Running => {
                self.status = JobStatus::Cancelling;
                (CancelRequest::TaskToldToStop, Change::Immediate)
            }
            JobStatus::Cancelling => (CancelRequest::AlreadyCancelling, Change::None),
            ended => (CancelRequest::AlreadyEnded(ended), Change::None),
        }
    }

    /// The one terminal decision. The first call wins; every later call
    /// returns the status that won and changes nothing.
    pub fn finish(&mut self, outcome: Outcome, now: DateTime<Utc>) -> Result<Change, AlreadyTerminal> {
        if self.status.is_terminal() {
            return Err(AlreadyTerminal(self.status));
        }
        let running = self
            .current_stage
            .filter(|&index| self.stages[index].status == StageStatus::Running);
        let running_name = running.map(|index| self.stages[index].name.clone());
        match outcome {
            Outcome::Completed(result) => {
                for stage in &mut self.stages {
                    stage.status = StageStatus::Done;
                }
                self.status = JobStatus::Completed;
                self.result = result;
            }
            Outcome::Failed(error) => {
                if let Some(index) = running {
                    self.stages[index].status = StageStatus::Failed;
                }
                self.status = JobStatus::Failed;
                self.error = Some(ErrorInfo {
                    code: error.code,
                    message: error.message,
                    stage: running_name,
                    retryable: error.retryable,
                    cancelled_by: None,
                });
            }
            Outcome::Cancelled { forced } => {
                if let Some(index) = running {
                    self.stages[index].status = StageStatus::Cancelled;
                }
                self.status = JobStatus::Cancelled;
                let (code, message) = if forced {
                    (
                        "cancel_forced",
                        "the job did not stop within the cancel grace period and was aborted",
                    )
                } else {
                    (JobError::CANCELLED, "the job was cancelled")
                };
                self.error = Some(ErrorInfo {
                    code: code.to_owned(),
                    message: message.to_owned(),
                    stage: running_name,
                    retryable: false,
                    cancelled_by: Some(CancelledBy(self.cancelled_by.as_deref().map(str::to_owned))),
                });
            }
        }
        self.finished_at = Some(now);
        Ok(Change::Immediate)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Instant;

    pub(super) fn job() -> JobModel {
        JobModel::new(JobId::generate(), Arc::from("test"), Arc::new(json!({})), Utc::now())
    }

    pub(super) fn publish(model: &mut JobModel, now: Instant) -> Value {
        model.prepare_publish(now, Utc::now());
        serde_json::to_value(model.view()).unwrap()
    }

    pub(super) fn running_with(stages: &[(&str, f64)]) -> JobModel {
        let mut model = job();
        model.start(Utc::now());
        let specs: Vec<_> = stages
            .iter()
            .map(|(name, weight)| StageSpec::new(*name, *weight))
            .collect();
        model.declare_stages(&specs).unwrap();
        model
    }

    #[test]
    fn the_first_terminal_outcome_wins() {
        let mut model = running_with(&[("a", 1.0), ("b", 1.0)]);
        model.start_stage("a", Some(10), None).unwrap();
        let (request, _) = model.request_cancel(Utc::now(), None);
        assert_eq!(request, CancelRequest::TaskToldToStop);
        assert_eq!(model.status(), JobStatus::Cancelling);
        model.finish(Outcome::Completed(Value::Null), Utc::now()).unwrap();
        assert_eq!(
            model.finish(Outcome::Cancelled { forced: true }, Utc::now()),
            Err(AlreadyTerminal(JobStatus::Completed))
        );
        assert_eq!(model.set_current(4), Change::None);
        assert_eq!(
            model.request_cancel(Utc::now(), None).0,
            CancelRequest::AlreadyEnded(JobStatus::Completed)
        );
    }

    #[test]
    fn a_failed_job_names_the_stage_it_failed_in() {
        let mut model = running_with(&[("a", 1.0), ("b", 1.0), ("c", 1.0)]);
        model.start_stage("b", Some(4), None).unwrap();
        model
            .finish(
                Outcome::Failed(JobError::new("boom", "it broke").retryable(true)),
                Utc::now(),
            )
            .unwrap();
        let view = publish(&mut model, Instant::now());
        assert_eq!(view["stages"][0]["status"], json!("done"));
        assert_eq!(view["stages"][1]["status"], json!("failed"));
        assert_eq!(view["stages"][2]["status"], json!("pending"));
        assert_eq!(
            view["error"],
            json!({"code": "boom", "message": "it broke", "stage": "b", "retryable": true})
        );
        assert!(view["finished_at"].is_string());
    }

    #[test]
    fn a_queued_job_cancels_at_once_without_starting() {
        let mut model = job();
        let (request, change) = model.request_cancel(Utc::now(), None);
        assert_eq!(
            (request, change),
            (CancelRequest::CancelledWhileQueued, Change::Immediate)
        );
        let view = publish(&mut model, Instant::now());
        assert_eq!(view["status"], json!("cancelled"));
        assert_eq!(view["started_at"], Value::Null);
        assert_eq!(view["error"]["code"], json!("cancelled"));
        assert_eq!(view["error"]["stage"], Value::Null);
        assert_eq!(view["error"]["retryable"], json!(false));
    }
}
