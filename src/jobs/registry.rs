//! The job engine: creates jobs, runs each in its own tokio task behind a
//! FIFO queue of running slots, cancels them, ends them on shutdown, and
//! forgets them when their retention runs out.
//!
//! The registry owns each live job's cancel token (a child of the server's
//! shutdown token) and an `ended` token that fires once the job is terminal.
//! Every mutation it makes goes through `Registry::apply`, which notices
//! the moment a job becomes terminal and releases what tracked it. The
//! terminal outcome itself is decided by `JobModel::finish` under the
//! store's lock, so whatever races (completion, failure, panic, cancel, the
//! grace period, shutdown), exactly one outcome is recorded.
//!
//! Jobs of external kinds run the same way, except that they take no
//! running slot: they leave the queue at their worker's first call, and
//! their task applies the worker's calls (see [`super::worker`]).
//!
//! Knows nothing about HTTP; handlers reach it through `AppState`.

use std::any::Any;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use futures_util::FutureExt;
use serde_json::Value;
use tokio::sync::{oneshot, Notify, Semaphore};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::context::{FlushSchedule, JobContext};
use super::kind::{Kind, Prepared, PreparedJob};
use super::model::{CancelRequest, Change, JobModel, Outcome};
use super::report::ProgressReport;
use super::worker::{self, Mailbox, WorkerCall, WorkerToken};
use super::{JobError, JobId, JobStatus};
use crate::metrics::{self, Metrics};
use crate::store::{Flush, JobNotFound, Published, Store, UpdateOutcome};

/// The engine's limits and timings.
#[derive(Clone, Debug)]
pub struct EngineSettings {
    /// Jobs running at once; more wait, first in first out.
    pub max_running: usize,
    /// Jobs waiting for a running slot; beyond this, creation is refused.
    pub max_queued: usize,
    /// How long a cancel waits for the job's task before aborting it.
    pub cancel_grace: Duration,
    /// How long a finished job is kept.
    pub retention: Duration,
    /// How many finished jobs are kept at most; the oldest go first.
    pub max_finished: usize,
}

/// Why a job could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("unknown job kind {0:?}")]
    UnknownKind(String),
    #[error("invalid params: {0}")]
    InvalidParams(String),
    #[error("the queue holds {0} jobs, its limit")]
    QueueFull(usize),
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// A job just created.
#[derive(Debug)]
pub struct Created {
    pub job: Arc<Published>,
    /// For a job of an external kind: its worker's token, shown only here.
    pub worker_token: Option<WorkerToken>,
}

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

/// Why a cancel request did not end in a cancelled job.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error("job {0} not found")]
    NotFound(JobId),
    #[error("the job already ended {}", .0.status.as_str())]
    AlreadyEnded(Arc<Published>),
}

/// A live job's handles. Removed the moment the job becomes terminal.
#[derive(Clone)]
struct JobControl {
    /// Asks the job's task to stop (a child of the shutdown token).
    cancel: CancellationToken,
    /// Fires once the job is terminal, whoever ended it.
    ended: CancellationToken,
    /// Whether the job still holds a place in the queue: given back once,
    /// when it starts or when it ends while queued, whichever comes first.
    queued: Arc<AtomicBool>,
    /// Fires once the job's task has dropped the job's work: a cancel that
    /// had to end the job itself waits for it, so that its answer comes
    /// after the work was torn down.
    stopped: CancellationToken,
}

impl JobControl {
    fn leave_queue(&self, queued_jobs: &AtomicUsize) {
        if self.queued.swap(false, Ordering::AcqRel) {
            queued_jobs.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The job engine. Cheap to clone: every clone is the same engine.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    kinds: BTreeMap<String, Kind>,
    settings: EngineSettings,
    /// One permit per running job; tokio's semaphore queues waiters FIFO.
    running_slots: Arc<Semaphore>,
    /// Jobs created and not yet running or ended: bounded by `max_queued`.
    queued: AtomicUsize,
    /// Live jobs only (std mutex: short sections, no `.await` inside).
    controls: Mutex<HashMap<JobId, JobControl>>,
    /// External jobs' tokens and mailboxes, kept until the job is forgotten
    /// so that a late call still gets a 409 rather than a 404.
    mailboxes: Mutex<HashMap<JobId, Mailbox>>,
    /// Ended jobs in the order they ended, for retention.
    ended: Mutex<VecDeque<(Instant, JobId)>>,
    reaper_wake: Notify,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
}

impl Registry {
    /// A new engine; it stops taking jobs and ends every live one when
    /// `shutdown` is cancelled.
    pub fn new(
        store: Arc<dyn Store>,
        kinds: impl IntoIterator<Item = Kind>,
        settings: EngineSettings,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        let registry = Registry {
            inner: Arc::new(Inner {
                store,
                kinds: kinds.into_iter().map(|kind| (kind.name().to_owned(), kind)).collect(),
                running_slots: Arc::new(Semaphore::new(settings.max_running.max(1))),
                settings,
                queued: AtomicUsize::new(0),
                controls: Mutex::new(HashMap::new()),
                mailboxes: Mutex::new(HashMap::new()),
                ended: Mutex::new(VecDeque::new()),
                reaper_wake: Notify::new(),
                tracker: TaskTracker::new(),
                shutdown,
                metrics,
            }),
        };
        registry.inner.tracker.spawn(registry.clone().reap());
        registry
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub fn kinds(&self) -> impl Iterator<Item = &Kind> {
        self.inner.kinds.values()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutdown.is_cancelled()
    }

    /// Facts for `/metrics`.
    pub fn metrics_snapshot(&self) -> metrics::Snapshot {
        metrics::Snapshot {
            census: self.inner.store.census(),
            queued: self.inner.queued.load(Ordering::Acquire),
            running_tasks: self.inner.settings.max_running.max(1) - self.inner.running_slots.available_permits(),
            job_tasks: self.inner.tracker.len(),
            streams_open: 0,
        }
    }

    /// Creates a job of `kind` and queues it to run.
    pub fn create(&self, kind: &str, params: Value) -> Result<Created, CreateError> {
        if self.is_shutting_down() {
            return Err(CreateError::ShuttingDown);
        }
        let kind = self
            .inner
            .kinds
            .get(kind)
            .ok_or_else(|| CreateError::UnknownKind(kind.to_owned()))?;
        let params = match params {
            Value::Null => Value::Object(Default::default()),
            Value::Object(params) => Value::Object(params),
            _ => return Err(CreateError::InvalidParams("params must be an object".to_owned())),
        };
        let prepared = kind.prepare(params.clone()).map_err(CreateError::InvalidParams)?;
        let max_queued = self.inner.settings.max_queued;
        if self.inner.queued.fetch_add(1, Ordering::AcqRel) >= max_queued {
            self.inner.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(CreateError::QueueFull(max_queued));
        }
        let id = JobId::generate();
        let control = JobControl {
            cancel: self.inner.shutdown.child_token(),
            ended: CancellationToken::new(),
            queued: Arc::new(AtomicBool::new(true)),
            stopped: CancellationToken::new(),
        };
        // Tracked before it exists, so that a cancel arriving at once finds
        // its control and releases it.
        self.controls().insert(id, control.clone());
        let published = self
            .inner
            .store
            .insert(JobModel::new(id, kind.shared_name(), Arc::new(params), Utc::now()));
        self.inner.metrics.jobs_created.inc();
        let (start, job, worker_token) = match prepared {
            Prepared::InProcess(job) => (Start::RunningSlot, job, None),
            Prepared::External(settings) => {
                let start_timeout = settings.start_timeout;
                let (mailbox, inbox) = worker::mailbox(settings);
                let start = Start::WorkerArrived(mailbox.arrived.clone(), start_timeout);
                let token = mailbox.token.clone();
                self.mailboxes().insert(id, mailbox);
                let job: PreparedJob = Box::new(move |ctx| Box::pin(inbox.drive(ctx)));
                (start, job, Some(token))
            }
        };
        // A root span: the job outlives the request that created it.
        let span = tracing::info_span!(parent: None, "job", job_id = %id, kind = %kind.name());
        self.inner
            .tracker
            .spawn(self.clone().run(id, start, job, control).instrument(span));
        tracing::info!(job_id = %id, kind = %kind.name(), "job created");
        Ok(Created {
            job: published,
            worker_token,
        })
    }

    fn mailboxes(&self) -> MutexGuard<'_, HashMap<JobId, Mailbox>> {
        self.inner
            .mailboxes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn controls(&self) -> MutexGuard<'_, HashMap<JobId, JobControl>> {
        self.inner
            .controls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies a mutation through the store and, if it ended the job,
    /// releases what tracked it. Every mutation the engine makes goes here.
    fn apply(
        &self,
        id: JobId,
        mutation: &mut dyn FnMut(&mut JobModel) -> Change,
    ) -> Result<UpdateOutcome, JobNotFound> {
        let outcome = self.inner.store.update(id, mutation)?;
        if outcome.became_terminal {
            self.job_ended(id);
        }
        Ok(outcome)
    }

    /// Ends the job with `outcome` unless it has already ended.
    fn finish(&self, id: JobId, outcome: Outcome) {
        let mut outcome = Some(outcome);
        let result = self.apply(id, &mut |model| match outcome.take() {
            Some(outcome) => model.finish(outcome, Utc::now()).unwrap_or(Change::None),
            None => Change::None,
        });
        if let Ok(UpdateOutcome {
            published: Some(published),
            ..
        }) = result
        {
            tracing::info!(status = published.status.as_str(), "job ended");
        }
    }

    fn job_ended(&self, id: JobId) {
        if let Some(control) = self.controls().remove(&id) {
            control.leave_queue(&self.inner.queued);
            control.ended.cancel();
        }
        let mut ended = self.inner.ended.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // The reaper sleeps until the oldest ended job expires, so it needs
        // waking only when this job is the oldest. Waking it for every job
        // would also cost each job's watchers: the wake would take their
        // place as the task the runtime polls next.
        let reaper_idle = ended.is_empty();
        ended.push_back((Instant::now(), id));
        self.evict(&mut ended, Instant::now());
        drop(ended);
        if reaper_idle {
            self.inner.reaper_wake.notify_one();
        }
    }

    /// Forgets ended jobs past their retention, and the oldest beyond the
    /// maximum count.
    fn evict(&self, ended: &mut VecDeque<(Instant, JobId)>, now: Instant) {
        while let Some(&(ended_at, id)) = ended.front() {
            if ended.len() > self.inner.settings.max_finished || now >= ended_at + self.inner.settings.retention {
                ended.pop_front();
                self.inner.store.remove(id);
                self.mailboxes().remove(&id);
            } else {
                break;
            }
        }
    }

    /// Wakes when the oldest ended job expires, and forgets it.
    async fn reap(self) {
        loop {
            let next_expiry = {
                let ended = self.inner.ended.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                ended
                    .front()
                    .map(|&(ended_at, _)| ended_at + self.inner.settings.retention)
            };
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = self.inner.reaper_wake.notified() => {}
                _ = sleep_until(next_expiry.unwrap_or_else(Instant::now)), if next_expiry.is_some() => {}
            }
            let mut ended = self.inner.ended.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            self.evict(&mut ended, Instant::now());
        }
    }

    /// A job's task: wait for its start, run the job's function, merge
    /// counter changes, enforce the cancel grace period, record the outcome.
    async fn run(self, id: JobId, start: Start, job: PreparedJob, control: JobControl) {
        let _stopped = control.stopped.clone().drop_guard();
        let started = async {
            match start {
                Start::RunningSlot => Ok(Some(
                    self.inner
                        .running_slots
                        .clone()
                        .acquire_owned()
                        .await
                        .expect("the running-slot semaphore is never closed"),
                )),
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
                self.finish(id, Outcome::Failed(shutdown_error()));
                return;
            }
            _ = control.ended.cancelled() => return,
            started = started => match started {
                Ok(slot) => slot,
                Err(error) => {
                    self.finish(id, Outcome::Failed(error));
                    return;
                }
            },
        };
        control.leave_queue(&self.inner.queued);
        let started = self.apply(id, &mut |model| model.start(Utc::now()));
        if !matches!(started, Ok(UpdateOutcome { published: Some(_), .. })) {
            // Cancelled while it waited for the slot.
            return;
        }
        tracing::debug!("job started");

        let flush = Arc::new(FlushSchedule::default());
        let ctx = JobContext::new(id, self.inner.store.clone(), control.cancel.clone(), flush.clone());
        let mut work = Box::pin(AssertUnwindSafe(job(ctx)).catch_unwind());
        let mut grace_deadline: Option<Instant> = None;
        let outcome = loop {
            let flush_due = flush.due().map(Instant::from_std);
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
                _ = sleep_until(flush_due.unwrap_or_else(Instant::now)), if flush_due.is_some() => {
                    flush.set(self.inner.store.flush(id, Flush::WhenDue));
                }
                _ = flush.scheduled.notified() => {}
            }
        };
        // Dropping the job's future aborts whatever it was still doing (a
        // command's process group is killed), before anyone hears the outcome.
        drop(work);
        if let Some(outcome) = outcome {
            self.finish(id, outcome);
        }
        drop(slot);
    }

    /// Cancels a job and answers once it has stopped: its final state if it
    /// ended cancelled, or [`CancelError::AlreadyEnded`] if it ended otherwise.
    pub async fn cancel(&self, id: JobId) -> Result<Arc<Published>, CancelError> {
        let asked_at = Instant::now();
        let control = self.controls().get(&id).cloned();
        let mut request = None;
        self.apply(id, &mut |model| {
            let (answer, change) = model.request_cancel(Utc::now());
            request = Some(answer);
            change
        })
        .map_err(|_| CancelError::NotFound(id))?;
        match request.expect("the mutation ran") {
            CancelRequest::CancelledWhileQueued | CancelRequest::AlreadyEnded(_) => {}
            CancelRequest::TaskToldToStop | CancelRequest::AlreadyCancelling => {
                if let Some(control) = control {
                    control.cancel.cancel();
                    let grace = self.inner.settings.cancel_grace;
                    if timeout(grace, control.ended.cancelled()).await.is_err() {
                        self.finish(id, Outcome::Cancelled { forced: true });
                        // The task drops the work as soon as it sees the job ended.
                        let _ = timeout(TEARDOWN_WAIT, control.stopped.cancelled()).await;
                    }
                }
            }
        }
        let job = self.inner.store.get(id).ok_or(CancelError::NotFound(id))?;
        if matches!(request, Some(CancelRequest::AlreadyEnded(_))) {
            if job.status == JobStatus::Cancelled {
                return Ok(job);
            }
            return Err(CancelError::AlreadyEnded(job));
        }
        self.inner
            .metrics
            .cancel_latency
            .observe(asked_at.elapsed().as_secs_f64());
        match job.status {
            JobStatus::Cancelled => Ok(job),
            _ => Err(CancelError::AlreadyEnded(job)),
        }
    }

    /// Checks a worker's token for job `id` and answers its mailbox.
    fn authorize(&self, id: JobId, token: Option<&str>) -> Result<Mailbox, WorkerError> {
        let mailbox = self.mailboxes().get(&id).cloned();
        match (mailbox, token) {
            (None, _) if self.inner.store.get(id).is_none() => Err(WorkerError::NotFound(id)),
            (_, None) => Err(WorkerError::MissingToken),
            (Some(mailbox), Some(token)) if mailbox.token.matches(token) => Ok(mailbox),
            _ => Err(WorkerError::WrongToken),
        }
    }

    /// Whether `token` is job `id`'s worker token: the check every worker
    /// call starts with.
    pub fn check_worker(&self, id: JobId, token: Option<&str>) -> Result<(), WorkerError> {
        self.authorize(id, token).map(|_| ())
    }

    /// Hands a call to the job's task and waits for its answer; a job that
    /// has ended, or ends before answering, is [`WorkerError::Ended`].
    async fn call<T>(
        &self,
        id: JobId,
        token: Option<&str>,
        call: impl FnOnce(oneshot::Sender<T>) -> WorkerCall,
    ) -> Result<T, WorkerError> {
        let mailbox = self.authorize(id, token)?;
        let ended = || WorkerError::Ended(self.inner.store.get(id).expect("an ended job is kept until forgotten"));
        let control = self.controls().get(&id).cloned();
        let Some(control) = control else {
            return Err(ended());
        };
        let (reply, answer) = oneshot::channel();
        mailbox.arrived.cancel();
        // Biased: an answer given just before the job ended is still the answer.
        tokio::select! {
            biased;
            sent = mailbox.calls.send(call(reply)) => {
                if sent.is_err() {
                    return Err(ended());
                }
            }
            _ = control.ended.cancelled() => return Err(ended()),
        }
        tokio::select! {
            biased;
            answer = answer => answer.map_err(|_| ended()),
            _ = control.ended.cancelled() => Err(ended()),
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
        let control = self.controls().get(&id).cloned();
        if let Some(control) = control {
            control.ended.cancelled().await;
        }
        let job = self.inner.store.get(id).ok_or(WorkerError::NotFound(id))?;
        if job.status == expected {
            Ok(job)
        } else {
            Err(WorkerError::Ended(job))
        }
    }

    /// Waits until every job has ended and every task has finished. Call
    /// after cancelling the shutdown token.
    pub async fn wait_for_jobs(&self) {
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }
}

/// How long a forced cancel waits for the job's task to drop its work.
const TEARDOWN_WAIT: Duration = Duration::from_millis(100);

/// What a job waits for before it runs.
enum Start {
    /// One of the running slots, first in first out.
    RunningSlot,
    /// Its external worker's first call, for at most the given time.
    WorkerArrived(CancellationToken, Option<Duration>),
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
