//! The handle job code gets: declare stages, move counters, set messages,
//! and notice cancellation. Every call is synchronous and cheap; the job's
//! [`Publisher`] decides whether a change is published now or merged into
//! the next publish.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::model::{Change, JobModel, StageSpec};
use super::publish::{Flush, Publisher};
use super::{JobError, JobId};

impl From<(&str, f64)> for StageSpec {
    fn from((name, weight): (&str, f64)) -> Self {
        StageSpec::new(name, weight)
    }
}

/// What a running job uses to report progress and observe cancellation.
/// Cheap to clone; every clone reports to the same job.
#[derive(Clone)]
pub struct JobContext {
    inner: Arc<Inner>,
}

struct Inner {
    publisher: Arc<Publisher>,
    cancel: CancellationToken,
}

impl JobContext {
    pub(crate) fn new(publisher: Arc<Publisher>, cancel: CancellationToken) -> Self {
        JobContext {
            inner: Arc::new(Inner { publisher, cancel }),
        }
    }

    /// This job's id.
    pub fn id(&self) -> JobId {
        self.inner.publisher.id()
    }

    fn apply<T>(&self, mutate: impl FnOnce(&mut JobModel) -> (T, Change)) -> T {
        self.inner.publisher.update(mutate)
    }

    fn apply_fallible(&self, mutate: impl FnOnce(&mut JobModel) -> Result<Change, JobError>) -> Result<(), JobError> {
        self.apply(|model| match mutate(model) {
            Ok(change) => (Ok(()), change),
            Err(error) => (Err(error), Change::None),
        })
    }

    /// Declares the job's weighted stages, all pending. Weights need not sum
    /// to 1; progress is the weighted mean of the stages' fractions.
    pub fn declare_stages<S: Into<StageSpec>>(&self, stages: impl IntoIterator<Item = S>) -> Result<(), JobError> {
        let specs: Vec<StageSpec> = stages.into_iter().map(Into::into).collect();
        self.apply_fallible(|model| model.declare_stages(&specs))
    }

    /// Starts the named stage with a counter at 0 of `total` `unit`s (either
    /// may be unknown). Earlier stages become done.
    pub fn start_stage(&self, name: &str, total: Option<u64>, unit: Option<&str>) -> Result<(), JobError> {
        self.apply_fallible(|model| model.start_stage(name, total, unit))
    }

    /// Sets the running stage's counter.
    pub fn set_current(&self, current: u64) {
        self.apply(|model| ((), model.set_current(current)));
    }

    /// Sets the running stage's counter and the message in one change.
    pub fn report(&self, current: u64, message: &str) {
        self.apply(|model| ((), model.report(current, message)));
    }

    /// Adds `by` to the running stage's counter.
    pub fn advance(&self, by: u64) {
        self.apply(|model| ((), model.advance(by)));
    }

    /// Sets (or, with None, forgets) the running stage's total.
    pub fn set_total(&self, total: Option<u64>) {
        self.apply(|model| ((), model.set_total(total)));
    }

    /// For a job without stages: the fraction done, 0 to 1.
    pub fn set_fraction(&self, fraction: f64) {
        self.apply(|model| ((), model.set_fraction(fraction)));
    }

    /// A short message for people watching.
    pub fn set_message(&self, message: &str) {
        self.apply(|model| ((), model.set_message(message)));
    }

    /// Publishes now any counter change still waiting for the publish interval.
    pub fn flush(&self) {
        self.inner.publisher.flush(Flush::Now);
    }

    /// Resolves when the job is asked to stop.
    pub async fn cancelled(&self) {
        self.inner.cancel.cancelled().await
    }

    /// Whether the job has been asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// `Err(JobError::cancelled())` once the job has been asked to stop, for
    /// use with `?` between units of work.
    pub fn check_cancelled(&self) -> Result<(), JobError> {
        if self.is_cancelled() {
            Err(JobError::cancelled())
        } else {
            Ok(())
        }
    }
}
