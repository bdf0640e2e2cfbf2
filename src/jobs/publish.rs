//! The publish path: the one place that decides when a live job's change
//! becomes a published state, and makes that state.
//!
//! A [`Publisher`] owns a live job's [`JobModel`] behind a std mutex held
//! for short, non-async sections. Every mutation, from the job's code
//! ([`super::context::JobContext`]) or from the engine, runs under that
//! lock and reports a [`Change`], which decides:
//! - nothing changed: nothing is published;
//! - a counter, total, fraction or message changed within the publish
//!   interval of the last publish: the change waits and merges into the
//!   next publish, at the latest when the interval has passed (the merge
//!   timer, [`Publisher::publish_merged_changes`], which the job's runner
//!   polls);
//! - otherwise, and always for a status or stage change: published now.
//!
//! Publishing serialises the job once and frames it once
//! ([`crate::published::NewState`]), then hands it to the store, still under
//! the lock, so a job's states reach the store in `seq` order. A progress
//! state is appended without waiting; a job's first state and its terminal
//! state are committed, and their callers wait for the commit before anyone
//! is told. Once the model is terminal every mutation is a no-op, so
//! nothing follows a terminal state.
//!
//! A durable store may hold a job's progress back ([`Store::admit`])
//! while its writer is far behind (a full disk): the change then waits as a
//! merged change does, and is published, with the next `seq`, once the
//! store catches up, so that a subscriber that keeps up still sees every
//! `seq`. The store admits many states at a time; the publisher asks again
//! only once they are used up.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use tokio::sync::Notify;

use super::model::{CancelRequest, Change, JobModel, Outcome};
use super::JobId;
use crate::metrics::Metrics;
use crate::published::{JobSecrets, NewState};
use crate::store::{Admission, AppendError, Published, Store, StoreFuture};

/// Room for a state to grow past the last one (a message, a result, an
/// error) and, for a job's first state, room for all of a small job.
const JSON_SLACK: usize = 512;
/// How often a change held back by the store is offered again.
const HOLD_BACK_RETRY: Duration = Duration::from_millis(10);

/// A commit the caller must wait for before telling anyone.
type Commit<'a> = StoreFuture<'a, Result<Arc<Published>, AppendError>>;

/// What a new job's first state carries besides the job, for the store.
#[derive(Debug, Default)]
pub struct FirstState {
    pub secrets: Option<JobSecrets>,
    /// The job waits in the store's shared queue for any instance to take
    /// it ([`Store::queues_jobs`]), rather than run where it was admitted.
    pub shared_queue: bool,
}

/// A live job's model and the decision when its changes are published.
pub struct Publisher {
    id: JobId,
    store: Arc<dyn Store>,
    /// Counter changes closer together than this merge into one state.
    interval: Duration,
    metrics: Arc<Metrics>,
    draft: Mutex<Draft>,
    /// Wakes the merge timer when a change first waits.
    deferred: Notify,
}

/// The model and what the merge window needs to know about it.
struct Draft {
    model: JobModel,
    /// A counter change waits to be published at this time.
    deferred_until: Option<Instant>,
    last_publish: Instant,
    /// The size of the last state's JSON, which the next one is close to,
    /// so that it is written without reallocating.
    last_len: usize,
    /// The store lets the job publish states up to this `seq` without
    /// asking again.
    admitted_until: u64,
}

/// When [`Publisher::flush`] may publish a waiting change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flush {
    /// Now, whatever the publish interval says (the job asked for it).
    Now,
    /// Only once the publish interval since the last publish has passed.
    WhenDue,
}

impl Publisher {
    /// Publishes a new job's first state (`seq` 1), with what the store
    /// keeps besides. The returned commit is already in the store's hands,
    /// so the publisher may be shared before it resolves: any later state
    /// follows it.
    pub fn start<'a>(
        model: JobModel,
        extra: FirstState,
        store: &'a Arc<dyn Store>,
        interval: Duration,
        metrics: Arc<Metrics>,
    ) -> (Arc<Publisher>, Commit<'a>) {
        let now = Instant::now();
        let mut draft = Draft {
            model,
            deferred_until: None,
            last_publish: now,
            last_len: 0,
            admitted_until: 0,
        };
        let mut first = next_state(&mut draft, now);
        first.secrets = extra.secrets.map(Arc::new);
        first.shared_queue = extra.shared_queue;
        metrics.events_published.inc();
        let commit = store.commit(first);
        let publisher = Publisher {
            id: draft.model.id(),
            store: store.clone(),
            interval,
            metrics,
            draft: Mutex::new(draft),
            deferred: Notify::new(),
        };
        (Arc::new(publisher), commit)
    }

    /// A publisher for a job whose latest state the store already holds
    /// (a queued job restored after a restart): nothing is published now.
    pub fn resume(
        model: JobModel,
        store: &Arc<dyn Store>,
        interval: Duration,
        metrics: Arc<Metrics>,
    ) -> Arc<Publisher> {
        Arc::new(Publisher {
            id: model.id(),
            store: store.clone(),
            interval,
            metrics,
            draft: Mutex::new(Draft {
                model,
                deferred_until: None,
                last_publish: Instant::now(),
                last_len: 0,
                admitted_until: 0,
            }),
            deferred: Notify::new(),
        })
    }

    pub fn id(&self) -> JobId {
        self.id
    }

    fn draft(&self) -> MutexGuard<'_, Draft> {
        self.draft.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies a change that cannot end the job, and publishes it as its
    /// [`Change`] asks.
    pub fn update<T>(&self, mutate: impl FnOnce(&mut JobModel) -> (T, Change)) -> T {
        let (value, commit) = self.change(mutate);
        debug_assert!(commit.is_none(), "only finish and request_cancel end a job");
        value
    }

    /// The one terminal decision: ends the job with `outcome` unless it has
    /// already ended. Answers the terminal state, once committed, to the
    /// caller whose outcome won; None to every other.
    pub async fn finish(&self, outcome: Outcome) -> Option<Arc<Published>> {
        let (_, commit) = self.change(|model| ((), model.finish(outcome, Utc::now()).unwrap_or(Change::None)));
        self.committed(commit?).await
    }

    /// A cancel request: a queued job ends at once (its terminal state
    /// committed before this answers); a running one moves to `cancelling`.
    /// The terminal state comes with the answer when this request ended the job.
    pub async fn request_cancel(&self, by: Option<Arc<str>>) -> (CancelRequest, Option<Arc<Published>>) {
        let (request, commit) = self.change(|model| model.request_cancel(Utc::now(), by));
        let ended = match commit {
            Some(commit) => self.committed(commit).await,
            None => None,
        };
        (request, ended)
    }

    async fn committed(&self, commit: Commit<'_>) -> Option<Arc<Published>> {
        match commit.await {
            Ok(published) => Some(published),
            Err(error) => {
                tracing::error!(job_id = %self.id, %error, "the store refused a job's terminal state");
                None
            }
        }
    }

    /// Publishes now any counter change that is still waiting.
    pub fn flush(&self, when: Flush) {
        let mut draft = self.draft();
        let Some(due) = draft.deferred_until else {
            return;
        };
        let now = Instant::now();
        if when == Flush::WhenDue && now < due {
            return;
        }
        if self.held_back(&mut draft) {
            draft.deferred_until = Some(now + HOLD_BACK_RETRY.max(self.interval));
            return;
        }
        let state = next_state(&mut draft, now);
        self.append(state);
    }

    /// The merge timer: publishes each waiting counter change when its
    /// publish interval has passed. Never returns; the job's runner polls
    /// it beside the job's work and drops it when the job ends.
    pub async fn publish_merged_changes(&self) -> std::convert::Infallible {
        loop {
            let due = self.draft().deferred_until;
            match due {
                None => self.deferred.notified().await,
                Some(due) => {
                    tokio::time::sleep_until(due.into()).await;
                    self.flush(Flush::WhenDue);
                }
            }
        }
    }

    /// Applies a mutation under the lock and publishes as its [`Change`]
    /// asks; a terminal state comes back as a commit to wait for.
    fn change<T>(&self, mutate: impl FnOnce(&mut JobModel) -> (T, Change)) -> (T, Option<Commit<'_>>) {
        let mut draft = self.draft();
        let (value, change) = mutate(&mut draft.model);
        let now = Instant::now();
        match change {
            Change::None => return (value, None),
            Change::Counter if now < draft.last_publish + self.interval => {
                let due = draft.last_publish + self.interval;
                self.defer(&mut draft, due);
                return (value, None);
            }
            Change::Counter | Change::Immediate => {}
        }
        if !draft.model.status().is_terminal() && self.held_back(&mut draft) {
            self.defer(&mut draft, now + HOLD_BACK_RETRY);
            return (value, None);
        }
        let mut state = next_state(&mut draft, now);
        state.milestone = change == Change::Immediate;
        if state.status.is_terminal() {
            self.metrics.events_published.inc();
            return (value, Some(self.store.commit(state)));
        }
        self.append(state);
        (value, None)
    }

    /// Whether the store holds the job's next state back; asks it only once
    /// the states it admitted are used up.
    fn held_back(&self, draft: &mut Draft) -> bool {
        let seq = draft.model.seq() + 1;
        if seq <= draft.admitted_until {
            return false;
        }
        match self.store.admit(self.id, seq) {
            Admission::Until(until) => {
                draft.admitted_until = until;
                false
            }
            Admission::HeldBack => true,
        }
    }

    /// Lets a change wait for the merge timer, due at `until` unless it is
    /// due sooner already.
    fn defer(&self, draft: &mut Draft, until: Instant) {
        if draft.deferred_until.is_none() {
            draft.deferred_until = Some(until);
            self.deferred.notify_one();
        }
    }

    fn append(&self, state: NewState) {
        self.metrics.events_published.inc();
        if let Err(error) = self.store.append(state) {
            tracing::error!(job_id = %self.id, %error, "the store refused a job's state");
        }
    }
}

/// The model's next published state: the next `seq`, progress, rate and
/// ETA as of `now`, serialised and framed once.
fn next_state(draft: &mut Draft, now: Instant) -> NewState {
    let model = &mut draft.model;
    model.prepare_publish(now, Utc::now());
    let mut json = Vec::with_capacity(draft.last_len + JSON_SLACK);
    serde_json::to_writer(&mut json, &model.view()).expect("a job view always serialises");
    draft.last_len = json.len();
    draft.last_publish = now;
    draft.deferred_until = None;
    NewState::new(
        model.id(),
        model.kind().clone(),
        model.labels().clone(),
        model.status(),
        model.seq(),
        Bytes::from(json),
    )
    .with_owner(model.owner().cloned())
}
