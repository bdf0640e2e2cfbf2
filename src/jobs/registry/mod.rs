//! The job engine: creates jobs, runs each in its own tokio task behind a
//! FIFO queue of running slots, cancels them, ends them on shutdown, and
//! forgets them when their retention runs out. Knows nothing about HTTP;
//! handlers call its methods, and read jobs through it.
//!
//! The registry owns each live job's `JobControl`: its [`Publisher`] (the
//! model and the publish path), its cancel token (a child of the server's
//! shutdown token) and an `ended` token that fires once the job's terminal
//! state is committed. Every terminal state goes through
//! `Registry::finish` or a cancel of a queued job, both of which end in
//! `JobModel::finish`, under the publisher's lock: whatever races
//! (completion, failure, panic, cancel, the grace period, shutdown),
//! exactly one outcome is recorded, and `Registry::job_ended` runs once.
//!
//! Each part of the engine has its own file:
//! - `admission.rs`: checking and queueing a new job;
//! - `idempotency.rs`: the jobs that idempotency keys name;
//! - `owners.rs`: the per-owner limits;
//! - `runner.rs`: a job's task, from its running slot to its outcome;
//! - `cancel.rs`: cancel requests and the grace period;
//! - `retention.rs`: forgetting ended jobs;
//! - `retry.rs`: running a failed or cancelled job again, as a new job;
//! - `recovery.rs`: taking over what an earlier run left in a durable store;
//! - `lost.rs`: ending the running jobs of instances that died;
//! - `shared_queue.rs`: taking jobs from the queue instances share;
//! - `worker_calls.rs`: relaying external workers' calls to their jobs.

mod admission;
mod cancel;
mod idempotency;
mod lost;
mod owners;
mod recovery;
mod retention;
mod retry;
mod runner;
mod shared_queue;
mod worker_calls;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{broadcast, Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::kind::Kind;
use super::publish::Publisher;
use super::worker::Mailbox;
use super::{JobId, JobStatus};
use crate::metrics::{self, Metrics};
use crate::store::{AllFeed, JobFeed, ListQuery, Published, Store};

pub use admission::{CreateError, Created, JobRequest};
pub use cancel::CancelError;
pub use idempotency::{IdempotencyKey, KeyError};
pub use retry::RetryError;
pub use worker_calls::WorkerError;

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
    /// Counter changes closer together than this merge into one state.
    pub publish_interval: Duration,
    /// Jobs of one owner running at once; its others wait (None: no limit).
    pub max_running_per_owner: Option<usize>,
    /// Jobs of one owner waiting to run; beyond, creation is refused.
    pub max_queued_per_owner: Option<usize>,
    /// How a job's `stream_url` is made.
    pub stream_urls: StreamUrls,
}

/// Makes a job's `stream_url` from its id, once per job: the HTTP layer
/// decides what it holds (a ticket, when authentication is on).
#[derive(Clone)]
pub struct StreamUrls(Arc<dyn Fn(JobId) -> String + Send + Sync>);

impl StreamUrls {
    pub fn new(make: impl Fn(JobId) -> String + Send + Sync + 'static) -> Self {
        StreamUrls(Arc::new(make))
    }

    pub fn of(&self, id: JobId) -> String {
        (self.0)(id)
    }
}

impl Default for StreamUrls {
    /// The plain stream path, for a server without authentication.
    fn default() -> Self {
        StreamUrls::new(|id| format!("/v1/jobs/{id}/events"))
    }
}

impl std::fmt::Debug for StreamUrls {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("StreamUrls")
    }
}

/// A live job's handles. Removed the moment the job becomes terminal.
#[derive(Clone)]
struct JobControl {
    publisher: Arc<Publisher>,
    /// Asks the job's task to stop (a child of the shutdown token).
    cancel: CancellationToken,
    /// Fires once the job's terminal state is committed, whoever ended it.
    ended: CancellationToken,
    /// Whether the job still holds a place in the queue: given back once,
    /// when it starts or when it ends while queued, whichever comes first.
    queued: Arc<AtomicBool>,
    /// Fires once the job's task has dropped the job's work: a cancel that
    /// had to end the job itself waits for it, so that its answer comes
    /// after the work was torn down.
    stopped: CancellationToken,
    /// The job's place in its owner's limits, when any apply.
    owner: Option<Arc<owners::OwnerPlace>>,
}

impl JobControl {
    fn leave_queue(&self, queued_jobs: &AtomicUsize) {
        if self.queued.swap(false, Ordering::AcqRel) {
            queued_jobs.fetch_sub(1, Ordering::AcqRel);
            if let Some(owner) = &self.owner {
                owner.leave_queue();
            }
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
    /// Whether the shared queue's taker holds a free slot while it waits
    /// for a job: a permit taken, but no job running.
    slot_awaits_shared_job: AtomicBool,
    /// Jobs created and not yet running or ended: bounded by `max_queued`.
    queued: AtomicUsize,
    owners: Arc<owners::OwnerLimits>,
    /// Live jobs only (std mutex: short sections, no `.await` inside).
    controls: Mutex<HashMap<JobId, JobControl>>,
    /// External jobs' tokens and mailboxes, kept until the job is forgotten
    /// so that a late call still gets a 409 rather than a 404.
    mailboxes: Mutex<HashMap<JobId, Mailbox>>,
    /// The jobs idempotency keys name, kept as long as those jobs.
    keys: Mutex<idempotency::KeyIndex>,
    /// Ended jobs in the order they ended, for retention.
    ended: Mutex<VecDeque<(Instant, JobId)>>,
    reaper_wake: Notify,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
}

/// Locks a mutex, even one poisoned by a panic elsewhere: every critical
/// section in the engine leaves its data consistent before anything that
/// can panic.
/// Waits until a job's `updates` bring its terminal state (or end).
async fn until_ended(updates: &mut broadcast::Receiver<Arc<Published>>) {
    loop {
        match updates.recv().await {
            Ok(state) if state.status.is_terminal() => return,
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
                slot_awaits_shared_job: AtomicBool::new(false),
                owners: Arc::new(owners::OwnerLimits::new(
                    settings.max_running_per_owner,
                    settings.max_queued_per_owner,
                )),
                settings,
                queued: AtomicUsize::new(0),
                controls: Mutex::new(HashMap::new()),
                mailboxes: Mutex::new(HashMap::new()),
                keys: Mutex::default(),
                ended: Mutex::new(VecDeque::new()),
                reaper_wake: Notify::new(),
                tracker: TaskTracker::new(),
                shutdown,
                metrics,
            }),
        };
        registry.inner.tracker.spawn(registry.clone().reap());
        if registry.inner.store.queues_jobs() {
            registry.inner.tracker.spawn(registry.clone().take_from_shared_queue());
        }
        if let Some(lost) = registry.inner.store.take_lost_jobs() {
            registry.inner.tracker.spawn(registry.clone().end_lost_jobs(lost));
        }
        if let Some(requests) = registry.inner.store.take_cancel_requests() {
            registry
                .inner
                .tracker
                .spawn(registry.clone().cancel_when_asked(requests));
        }
        if let Some(ended) = registry.inner.store.take_jobs_ended_elsewhere() {
            registry
                .inner
                .tracker
                .spawn(registry.clone().stop_jobs_ended_elsewhere(ended));
        }
        if let Some(calls) = registry.inner.store.take_relayed_calls() {
            registry
                .inner
                .tracker
                .spawn(registry.clone().answer_relayed_calls(calls));
        }
        registry
    }

    pub fn kinds(&self) -> impl Iterator<Item = &Kind> {
        self.inner.kinds.values()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutdown.is_cancelled()
    }

    /// Whether the store is writing (see [`Store::is_available`]).
    pub fn is_store_available(&self) -> bool {
        self.inner.store.is_available()
    }

    /// Why the store can no longer serve this process, if it cannot.
    pub fn store_broken(&self) -> Option<String> {
        self.inner.store.broken()
    }

    /// The job's latest state.
    pub async fn job(&self, id: JobId) -> Option<Arc<Published>> {
        self.inner.store.get(id).await
    }

    /// One page of jobs, newest first, with one more when a next page exists.
    pub async fn jobs(&self, query: &ListQuery) -> Vec<Arc<Published>> {
        self.inner.store.list(query).await
    }

    /// The job's latest state and every later one.
    pub async fn watch(&self, id: JobId) -> Option<JobFeed> {
        self.inner.store.subscribe(id).await
    }

    /// Every job changed after `after` (see [`Store::subscribe_all`]) and
    /// every later change.
    pub async fn watch_all(&self, after: Option<u64>) -> AllFeed {
        self.inner.store.subscribe_all(after).await
    }

    /// The engine's facts for `/metrics`. On a shared queue the queued
    /// jobs are the service's, not this instance's.
    pub async fn metrics_snapshot(&self) -> metrics::EngineSnapshot {
        let census = self.inner.store.census().await;
        let queued = if self.inner.store.queues_jobs() {
            census.count(JobStatus::Queued)
        } else {
            self.inner.queued.load(Ordering::Acquire)
        };
        let slots_taken = self.inner.settings.max_running.max(1) - self.inner.running_slots.available_permits();
        let slot_awaiting_job = self.inner.slot_awaits_shared_job.load(Ordering::Acquire);
        metrics::EngineSnapshot {
            jobs_by_status: JobStatus::ALL
                .iter()
                .map(|&status| (status.as_str(), census.count(status)))
                .collect(),
            queued,
            running_tasks: slots_taken - usize::from(slot_awaiting_job),
            job_tasks: self.inner.tracker.len(),
            store_writes: self.inner.store.rows_written(),
        }
    }

    fn controls(&self) -> MutexGuard<'_, HashMap<JobId, JobControl>> {
        lock(&self.inner.controls)
    }

    fn control(&self, id: JobId) -> Option<JobControl> {
        self.controls().get(&id).cloned()
    }

    /// Ends the job with `outcome` unless it has already ended.
    async fn finish(&self, control: &JobControl, outcome: super::model::Outcome) {
        if let Some(ended) = control.publisher.finish(outcome).await {
            tracing::info!(status = ended.status.as_str(), "job ended");
            self.job_ended(control.publisher.id());
        }
    }

    /// Releases what tracked a job whose terminal state was just committed.
    fn job_ended(&self, id: JobId) {
        if let Some(control) = self.controls().remove(&id) {
            control.leave_queue(&self.inner.queued);
            control.ended.cancel();
        }
        self.retain_ended_since(id, Instant::now());
    }

    /// Waits until every job has ended (or, with a durable store, stays
    /// queued) and every task has finished, then closes the store. Call
    /// after cancelling the shutdown token.
    pub async fn wait_for_jobs(&self) {
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
        self.inner.store.close().await;
    }
}
