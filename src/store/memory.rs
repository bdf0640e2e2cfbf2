//! The single-node store: jobs in memory, fan-out on tokio broadcast channels.
//!
//! Each job has a `Slot`: its model, its latest published state and its
//! broadcast sender, behind one std mutex held only for short, non-async
//! critical sections. Subscribing takes the snapshot and the receiver under
//! that lock, and publishing sends under it, so no state falls between a
//! snapshot and the live updates. A server-wide `Hub` (its own mutex, always
//! taken after a slot's, never before) numbers every publish with a
//! server-wide event id and keeps each job's latest state for the all-jobs
//! stream, listings and resumption.
//!
//! Broadcast channels are bounded: a subscriber that falls behind is told it
//! lagged and resynchronises from the latest state, so publishing never
//! waits and a stalled reader costs no memory. A job's sender is dropped as
//! soon as its terminal state is sent, so an ended job keeps only its latest
//! state until retention removes it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chrono::Utc;
use tokio::sync::broadcast;

use super::{AllFeed, Census, Flush, JobFeed, JobNotFound, ListQuery, Mutation, Published, Store, UpdateOutcome};
use crate::jobs::model::{Change, JobModel};
use crate::jobs::{JobId, JobStatus};
use crate::metrics::Metrics;

/// Per-job channel capacity: enough to absorb bursts for readers that keep
/// up; beyond it a reader resynchronises to the latest state.
const JOB_CHANNEL_CAPACITY: usize = 32;
/// The all-jobs channel carries every job's changes, so it is deeper.
const ALL_CHANNEL_CAPACITY: usize = 4096;
/// Room for a state to grow past the last one (a message, a result, an
/// error) and, for a job's first state, room for all of a small job.
const JSON_SLACK: usize = 512;

pub struct MemoryStore {
    /// Jobs by id. A read lock finds a slot; writes only insert and remove.
    slots: RwLock<HashMap<JobId, Arc<Slot>>>,
    hub: Mutex<Hub>,
    publish_interval: Duration,
    metrics: Arc<Metrics>,
}

struct Slot {
    state: Mutex<SlotState>,
}

struct SlotState {
    model: JobModel,
    latest: Arc<Published>,
    /// None once the job has ended.
    sender: Option<broadcast::Sender<Arc<Published>>>,
    /// A counter change made since `latest` and not yet published.
    dirty: bool,
    last_publish: Instant,
}

struct Hub {
    next_event_id: u64,
    /// Event ids below this were issued by an earlier run of the server (ids
    /// start from the start time in microseconds, so they grow across restarts).
    first_event_id: u64,
    /// The highest event id of any removed job: a resume point below it
    /// cannot be answered completely.
    horizon: u64,
    sender: broadcast::Sender<Arc<Published>>,
    /// Every job's latest state, by id (so by creation time).
    latest: BTreeMap<JobId, Arc<Published>>,
}

impl MemoryStore {
    pub fn new(publish_interval: Duration, metrics: Arc<Metrics>) -> Self {
        let first_event_id = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|since| since.as_micros() as u64)
            .unwrap_or(1)
            .max(1);
        MemoryStore {
            slots: RwLock::new(HashMap::new()),
            hub: Mutex::new(Hub {
                next_event_id: first_event_id,
                first_event_id,
                horizon: 0,
                sender: broadcast::channel(ALL_CHANNEL_CAPACITY).0,
                latest: BTreeMap::new(),
            }),
            publish_interval,
            metrics,
        }
    }

    fn slot(&self, id: JobId) -> Option<Arc<Slot>> {
        read(&self.slots).get(&id).cloned()
    }

    fn hub(&self) -> MutexGuard<'_, Hub> {
        lock(&self.hub)
    }

    /// Serialises the model's next state once and sends it to both channels.
    /// `previous_len`: the size of the job's last state, which the next one
    /// is close to, so the JSON is written without reallocating.
    fn publish(&self, model: &mut JobModel, now: Instant, previous_len: usize) -> Arc<Published> {
        model.prepare_publish(now, Utc::now());
        let mut json = Vec::with_capacity(previous_len + JSON_SLACK);
        serde_json::to_writer(&mut json, &model.view()).expect("a job view always serialises");
        let json = Bytes::from(json);
        let mut hub = self.hub();
        let event_id = hub.next_event_id;
        hub.next_event_id += 1;
        let published = Arc::new(Published::new(
            model.id(),
            model.kind().clone(),
            model.status(),
            model.seq(),
            event_id,
            json,
        ));
        hub.latest.insert(model.id(), published.clone());
        // An error only means nobody is listening right now.
        let _ = hub.sender.send(published.clone());
        drop(hub);
        self.metrics.events_published.inc();
        published
    }

    fn publish_slot(&self, state: &mut SlotState, now: Instant) -> Arc<Published> {
        let published = self.publish(&mut state.model, now, state.latest.json.len());
        state.latest = published.clone();
        state.dirty = false;
        state.last_publish = now;
        if let Some(sender) = &state.sender {
            let _ = sender.send(published.clone());
        }
        if published.status.is_terminal() {
            // Receivers still get what was sent, then see the channel closed.
            state.sender = None;
        }
        published
    }
}

impl Store for MemoryStore {
    fn insert(&self, mut model: JobModel) -> Arc<Published> {
        let id = model.id();
        let now = Instant::now();
        let latest = self.publish(&mut model, now, 0);
        let slot = Arc::new(Slot {
            state: Mutex::new(SlotState {
                model,
                latest: latest.clone(),
                sender: Some(broadcast::channel(JOB_CHANNEL_CAPACITY).0),
                dirty: false,
                last_publish: now,
            }),
        });
        write(&self.slots).insert(id, slot);
        latest
    }

    fn update(&self, id: JobId, mutation: Mutation<'_>) -> Result<UpdateOutcome, JobNotFound> {
        let slot = self.slot(id).ok_or(JobNotFound(id))?;
        let mut state = lock(&slot.state);
        let was_terminal = state.model.status().is_terminal();
        let change = mutation(&mut state.model);
        let now = Instant::now();
        let mut outcome = UpdateOutcome::default();
        match change {
            Change::None => {}
            Change::Counter if now < state.last_publish + self.publish_interval => {
                state.dirty = true;
                outcome.flush_at = Some(state.last_publish + self.publish_interval);
            }
            Change::Counter | Change::Immediate => {
                outcome.published = Some(self.publish_slot(&mut state, now));
            }
        }
        outcome.became_terminal = !was_terminal && state.model.status().is_terminal();
        Ok(outcome)
    }

    fn flush(&self, id: JobId, when: Flush) -> Option<Instant> {
        let slot = self.slot(id)?;
        let mut state = lock(&slot.state);
        if !state.dirty || state.model.status().is_terminal() {
            return None;
        }
        let now = Instant::now();
        let due = state.last_publish + self.publish_interval;
        if when == Flush::WhenDue && now < due {
            return Some(due);
        }
        self.publish_slot(&mut state, now);
        None
    }

    fn get(&self, id: JobId) -> Option<Arc<Published>> {
        let slot = self.slot(id)?;
        let latest = lock(&slot.state).latest.clone();
        Some(latest)
    }

    fn list(&self, query: &ListQuery) -> Vec<Arc<Published>> {
        let hub = self.hub();
        let older = match query.before {
            Some(before) => hub.latest.range(..before),
            None => hub.latest.range(..),
        };
        older
            .rev()
            .map(|(_, job)| job)
            .filter(|job| query.statuses.is_empty() || query.statuses.contains(&job.status))
            .filter(|job| query.kinds.is_empty() || query.kinds.iter().any(|kind| **kind == *job.kind))
            .take(query.limit + 1)
            .cloned()
            .collect()
    }

    fn subscribe(&self, id: JobId) -> Option<JobFeed> {
        let slot = self.slot(id)?;
        let state = lock(&slot.state);
        Some(JobFeed {
            snapshot: state.latest.clone(),
            receiver: state.sender.as_ref().map(broadcast::Sender::subscribe),
        })
    }

    fn subscribe_all(&self, after: Option<u64>) -> AllFeed {
        let hub = self.hub();
        let position = hub.next_event_id - 1;
        // Answerable: issued by this run (or just before its first id), not
        // older than a removed job's last change, and not from the future.
        let after = after.filter(|&after| after + 1 >= hub.first_event_id && after >= hub.horizon && after <= position);
        let mut initial: Vec<Arc<Published>> = match after {
            Some(after) => hub
                .latest
                .values()
                .filter(|job| job.event_id > after)
                .cloned()
                .collect(),
            None => hub
                .latest
                .values()
                .filter(|job| !job.status.is_terminal())
                .cloned()
                .collect(),
        };
        initial.sort_unstable_by_key(|job| job.event_id);
        AllFeed {
            initial,
            receiver: hub.sender.subscribe(),
            position,
            resumed: after.is_some(),
        }
    }

    fn remove(&self, id: JobId) {
        write(&self.slots).remove(&id);
        let mut hub = self.hub();
        if let Some(removed) = hub.latest.remove(&id) {
            hub.horizon = hub.horizon.max(removed.event_id);
        }
    }

    fn census(&self) -> Census {
        let hub = self.hub();
        let mut census = Census::default();
        for job in hub.latest.values() {
            let index = JobStatus::ALL
                .iter()
                .position(|s| *s == job.status)
                .expect("ALL holds every status");
            census.by_status[index] += 1;
        }
        census
    }
}

/// Locks a mutex, even one poisoned by a panic elsewhere: every critical
/// section here leaves the data consistent before anything that can panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}
