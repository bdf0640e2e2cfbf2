//! Where published job states live and how they reach subscribers, behind
//! one trait, so that a durable or a shared backend can replace the
//! in-memory one without touching the engine or the HTTP layer.
//!
//! A store takes finished states only ([`NewState`], made by the engine in
//! [`crate::jobs::publish`]), never the job model: it appends each with a
//! compare-and-set on the job's previous `seq` and on "not terminal" (the
//! fence against a second writer), numbers it server-wide, fans it out to
//! this process's subscribers, and answers reads. It imports nothing of the
//! engine but job ids, statuses and labels.
//!
//! The trait is ready for backends that do I/O. Appending a progress state
//! never waits ([`Store::append`]: a durable backend may write it behind),
//! while a job's first and terminal states are committed before anyone sees
//! them ([`Store::commit`]). Reads answer a [`StoreFuture`], which the
//! memory store fills at once without allocating, so the hot path (one state,
//! many subscribers) pays nothing for the backends that must wait.

pub mod memory;
pub mod redis;
pub mod sqlite;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::sync::{broadcast, mpsc, oneshot, Notify};

use crate::jobs::labels::{LabelFilter, Labels};
use crate::jobs::{JobId, JobStatus};
pub use crate::published::{JobSecrets, NewState, Published};

/// A job's state as a store keeps it (its JSON, with `kind`, `status` and
/// `seq` beside it), ready to be published again: its labels and owner
/// read from the JSON. None when they are malformed.
pub(crate) fn stored_state(
    job_id: JobId,
    kind: Arc<str>,
    status: JobStatus,
    seq: u64,
    json: Bytes,
) -> Option<NewState> {
    #[derive(serde::Deserialize)]
    struct Stored {
        #[serde(default)]
        labels: Option<serde_json::Value>,
        #[serde(default)]
        owner: Option<String>,
    }
    let stored: Stored = serde_json::from_slice(&json).ok()?;
    let labels = match stored.labels {
        None | Some(serde_json::Value::Null) => Arc::default(),
        Some(labels) => Arc::new(Labels::from_json(labels).ok()?),
    };
    let owner = stored.owner.map(Arc::from);
    Some(NewState::new(job_id, kind, labels, status, seq, json).with_owner(owner))
}

/// A job's current state and the live updates after it, with no gap.
pub struct JobFeed {
    pub snapshot: Arc<Published>,
    /// None once the job has ended: nothing more will be published.
    pub receiver: Option<broadcast::Receiver<Arc<Published>>>,
}

/// The state of every job a client should be shown, and the live updates
/// after them, with no gap and no overlap.
pub struct AllFeed {
    /// In `event_id` order.
    pub initial: Vec<Arc<Published>>,
    pub receiver: broadcast::Receiver<Arc<Published>>,
    /// The last event id covered by `initial`: live events at or below it are
    /// already accounted for.
    pub position: u64,
    /// Whether the requested resume point was honoured (else it counted as absent).
    pub resumed: bool,
}

/// A cancel request relayed from another instance: the job, and the
/// subject that asked (None without authentication).
#[derive(Debug)]
pub struct CancelRequestFor {
    pub id: JobId,
    pub by: Option<Arc<str>>,
}

/// A call relayed from another instance for a job it does not run: the
/// job, the call (what it is is the engine's business), and where the
/// instance that runs the job answers; an instance that does not run it
/// answers None.
pub struct RelayedCall {
    pub id: JobId,
    pub call: serde_json::Value,
    pub answer: oneshot::Sender<Option<serde_json::Value>>,
}

/// A running job whose instance died.
pub struct LostJob {
    pub job: Arc<Published>,
    /// The instance that ran it.
    pub runner: Arc<str>,
}

/// One page of jobs, newest first.
#[derive(Debug, Default)]
pub struct ListQuery {
    pub statuses: Vec<JobStatus>,
    pub kinds: Vec<String>,
    /// Every one must match.
    pub labels: Vec<LabelFilter>,
    /// Only this owner's jobs, when set.
    pub owner: Option<Arc<str>>,
    /// Only jobs older than this one (the cursor).
    pub before: Option<JobId>,
    pub limit: usize,
}

/// How many jobs the store holds, by status.
#[derive(Debug, Default, Clone, Copy)]
pub struct Census {
    by_status: [usize; JobStatus::ALL.len()],
}

impl Census {
    /// Counts one more job of `status`.
    pub fn add(&mut self, status: JobStatus) {
        self.by_status[status.index()] += 1;
    }

    pub fn count(&self, status: JobStatus) -> usize {
        self.by_status[status.index()]
    }
}

/// Why a state was not appended.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The job's latest state is not the one this state follows: another
    /// writer got there first, or the job has ended or is gone.
    #[error("job {job_id}: state {seq} does not follow the stored state {stored:?}")]
    Conflict {
        job_id: JobId,
        seq: u64,
        /// The stored `seq` and whether that state is terminal; None when the
        /// store holds no such job.
        stored: Option<(u64, bool)>,
    },
    /// A new job's idempotency key already names this job, created through
    /// another instance of a shared store.
    #[error("the idempotency key already names job {0}")]
    KeyTaken(JobId),
    /// A new job would join a shared queue that holds its most jobs.
    #[error("the shared queue is full")]
    QueueFull,
    /// A new job would join a shared queue that holds its owner's most jobs.
    #[error("the owner's share of the shared queue is full")]
    OwnerQueueFull,
    /// The backend could not store it (a full disk, a lost connection).
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
}

/// A store's answer: ready at once (the memory store, which never
/// allocates for it) or after the backend's I/O.
pub enum StoreFuture<'a, T> {
    Ready(Option<T>),
    Waiting(BoxFuture<'a, T>),
}

impl<T> StoreFuture<'_, T> {
    pub fn ready(value: T) -> Self {
        StoreFuture::Ready(Some(value))
    }
}

// Nothing here is pinned structurally: `Ready` moves its value out, and
// `Waiting` is a pinned box of its own.
impl<T> Unpin for StoreFuture<'_, T> {}

impl<T> Future for StoreFuture<'_, T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.get_mut() {
            StoreFuture::Ready(value) => Poll::Ready(value.take().expect("a StoreFuture is polled after it completed")),
            StoreFuture::Waiting(future) => future.as_mut().poll(cx),
        }
    }
}

/// How far a job's published `seq` may run ahead of its stored one in a
/// durable store ([`Store::admit`]).
pub const MAX_UNSTORED_STATES: u64 = 500;

/// Whether a job's progress state may be published now ([`Store::admit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Now, and so may every later state up to this `seq` without asking
    /// again (the store only ever catches up).
    Until(u64),
    /// Not until the store's writer catches up: ask again later.
    HeldBack,
}

/// Published job states and their fan-out. A job's states are appended by
/// one writer at a time (the engine holds the job's lock), in `seq` order,
/// and subscribers receive them in that order.
pub trait Store: Send + Sync + 'static {
    /// Appends a job's next state and fans it out once it is accepted. A
    /// durable backend may write it behind; it never waits for I/O.
    fn append(&self, state: NewState) -> Result<(), AppendError>;

    /// Appends a state that must be durable before anyone sees it, a job's
    /// first (`seq` 1, which adds the job) or its terminal state, and
    /// resolves once it is stored and fanned out.
    fn commit(&self, state: NewState) -> StoreFuture<'_, Result<Arc<Published>, AppendError>>;

    /// The latest published state.
    fn get(&self, id: JobId) -> StoreFuture<'_, Option<Arc<Published>>>;

    /// Up to `limit + 1` jobs matching the query, newest first (the extra
    /// one tells the caller there is a next page).
    fn list<'a>(&'a self, query: &'a ListQuery) -> StoreFuture<'a, Vec<Arc<Published>>>;

    /// The job's latest state and a receiver of every later one.
    fn subscribe(&self, id: JobId) -> StoreFuture<'_, Option<JobFeed>>;

    /// Every job changed after `after` (or every job not yet terminal when
    /// `after` is absent or can no longer be answered), and a receiver of
    /// every later change of every job.
    fn subscribe_all(&self, after: Option<u64>) -> StoreFuture<'_, AllFeed>;

    /// Forgets an ended job: its state, its channel, and its place in listings.
    fn remove(&self, id: JobId);

    /// How many jobs the store holds, by status.
    fn census(&self) -> StoreFuture<'_, Census>;

    /// Whether jobs outlive the process: then a job still queued at
    /// shutdown stays queued, to run after the restart.
    fn durable(&self) -> bool {
        false
    }

    /// Whether several instances share this store's queue: a new job of a
    /// kind that runs in-process is committed with
    /// [`NewState::shared_queue`] and waits in the store until an instance
    /// with a free slot takes it ([`Store::take_queued`]).
    fn queues_jobs(&self) -> bool {
        false
    }

    /// Takes the oldest job of the shared queue whose kind is one of
    /// `kinds`, for this instance to run; None when there is none.
    fn take_queued<'a>(&'a self, _kinds: &'a [Arc<str>]) -> StoreFuture<'a, Option<Arc<Published>>> {
        StoreFuture::ready(None)
    }

    /// Notified when a job may have joined the shared queue.
    fn queue_changed(&self) -> Option<Arc<Notify>> {
        None
    }

    /// Tells whichever instance runs job `id` that a client asked to cancel
    /// it: for a store several instances share (in a store of one process,
    /// this process runs every job, and nothing needs telling).
    fn ask_to_cancel(&self, _id: JobId, _by: Option<Arc<str>>) {}

    /// The cancel request [`Store::ask_to_cancel`] made for job `id`, if
    /// any: an instance that has just taken the job from the shared queue
    /// looks, since the request may have been relayed before it knew that
    /// it runs the job.
    fn cancel_asked(&self, _id: JobId) -> StoreFuture<'_, Option<CancelRequestFor>> {
        StoreFuture::ready(None)
    }

    /// The cancel requests other instances relay to this one
    /// ([`Store::ask_to_cancel`]), taken once by the engine at start; None
    /// for a store of one process.
    fn take_cancel_requests(&self) -> Option<mpsc::UnboundedReceiver<CancelRequestFor>> {
        None
    }

    /// Hands `call` for job `id` to whichever instance runs it, and answers
    /// with that instance's answer; None if no instance answered in time
    /// (or, in a store of one process, where nothing needs relaying).
    fn relay_call(&self, _id: JobId, _call: serde_json::Value) -> StoreFuture<'_, Option<serde_json::Value>> {
        StoreFuture::ready(None)
    }

    /// The calls other instances relay to this one ([`Store::relay_call`]),
    /// taken once by the engine at start; None for a store of one process.
    fn take_relayed_calls(&self) -> Option<mpsc::UnboundedReceiver<RelayedCall>> {
        None
    }

    /// The secrets a shared store keeps with job `id`, for an instance that
    /// does not run the job to check a worker's token; None for a store of
    /// one process (the engine holds its jobs' tokens).
    fn secrets(&self, _id: JobId) -> StoreFuture<'_, Option<Arc<JobSecrets>>> {
        StoreFuture::ready(None)
    }

    /// The running jobs of instances that died (their lease ran out), for
    /// the engine to end, taken once at start; None for a store of one
    /// process.
    fn take_lost_jobs(&self) -> Option<mpsc::UnboundedReceiver<LostJob>> {
        None
    }

    /// The jobs this instance runs whose states a shared store refused
    /// because another instance ended them (this one's lease had run out)
    /// or runs them, for the engine to stop here, taken once at start; None
    /// for a store of one process.
    fn take_jobs_ended_elsewhere(&self) -> Option<mpsc::UnboundedReceiver<JobId>> {
        None
    }

    /// Commits the terminal state of a lost job, if its instance is still
    /// gone and the job still live (any number of instances may try; one
    /// succeeds).
    fn end_lost(&self, state: NewState, _runner: Arc<str>) -> StoreFuture<'_, Result<Arc<Published>, AppendError>> {
        self.commit(state)
    }

    /// The secrets of the jobs an earlier run of the server left, taken once
    /// at start (a store that keeps nothing has none).
    fn take_restored_secrets(&self) -> HashMap<JobId, Arc<JobSecrets>> {
        HashMap::new()
    }

    /// Whether a job's progress state `seq` may be published now: a
    /// durable store whose stored `seq` of the job is [`MAX_UNSTORED_STATES`]
    /// behind holds the job's progress back until its writer catches up, so
    /// that after a crash no client has seen a `seq` more than that above
    /// the stored one. An admission covers the job's states up to a limit,
    /// so that a job asks once per many states, not for each.
    fn admit(&self, _id: JobId, _seq: u64) -> Admission {
        Admission::Until(u64::MAX)
    }

    /// Whether the backend is writing: false while a durable store cannot
    /// (a full disk, a lost connection), when the server is not ready and
    /// refuses new jobs.
    fn is_available(&self) -> bool {
        true
    }

    /// Why this process can no longer answer from its store, if it cannot
    /// (a shared backend lost what the process has seen): only a restart
    /// helps, and `/healthz` says so.
    fn broken(&self) -> Option<String> {
        None
    }

    /// Rows a durable store has written to its backend so far (none for a
    /// store that writes nothing), for `/metrics`.
    fn rows_written(&self) -> u64 {
        0
    }

    /// At shutdown, once no job will change any more: ends every job's
    /// subscriptions (a job still queued gets no terminal state now) and
    /// resolves once everything appended is stored.
    fn close(&self) -> StoreFuture<'_, ()>;
}
