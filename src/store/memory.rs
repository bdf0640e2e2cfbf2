//! The single-process store: published states in memory, fan-out on tokio
//! broadcast channels. Nothing outlives the process.
//!
//! Each job has a `Slot`: its latest published state and its broadcast
//! sender, behind one std mutex held only for short, non-async critical
//! sections. Subscribing takes the snapshot and the receiver under that
//! lock, and appending sends under it, so no state falls between a snapshot
//! and the live updates. A server-wide `Hub` (its own mutex, always taken
//! after a slot's, never before) numbers every state with a server-wide
//! event id and keeps each job's latest state for the all-jobs stream,
//! listings and resumption.
//!
//! Broadcast channels are bounded: a subscriber that falls behind is told it
//! lagged and resynchronises from the latest state, so appending never
//! waits and a stalled reader costs no memory. A job's sender is dropped as
//! soon as its terminal state is sent, so an ended job keeps only its latest
//! state until retention removes it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;

use super::{AllFeed, AppendError, Census, JobFeed, ListQuery, NewState, Published, Store, StoreFuture};
use crate::jobs::JobId;

/// Per-job channel capacity: enough to absorb bursts for readers that keep
/// up; beyond it a reader resynchronises to the latest state.
const JOB_CHANNEL_CAPACITY: usize = 32;
/// The all-jobs channel carries every job's changes, so it is deeper.
const ALL_CHANNEL_CAPACITY: usize = 4096;

pub struct MemoryStore {
    /// Jobs by id. A read lock finds a slot; writes only insert and remove.
    slots: RwLock<HashMap<JobId, Arc<Slot>>>,
    hub: Mutex<Hub>,
}

struct Slot {
    state: Mutex<SlotState>,
}

impl Slot {
    /// A job's slot holding `latest`, with a channel for what follows
    /// unless it has ended.
    fn holding(latest: Arc<Published>) -> Slot {
        let sender = (!latest.status.is_terminal()).then(|| broadcast::channel(JOB_CHANNEL_CAPACITY).0);
        Slot {
            state: Mutex::new(SlotState { latest, sender }),
        }
    }
}

struct SlotState {
    latest: Arc<Published>,
    /// None once the job has ended.
    sender: Option<broadcast::Sender<Arc<Published>>>,
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

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

/// What an earlier run of the server left, for a durable store to start
/// from: its jobs' latest states and its event-id history.
pub(crate) struct History {
    /// The first event id the store ever issued.
    pub(crate) first_event_id: u64,
    /// Above every event id issued before.
    pub(crate) next_event_id: u64,
    /// The highest event id of any removed job.
    pub(crate) horizon: u64,
    /// Each job's latest state with its event id (0: not known, which
    /// gives it a new one).
    pub(crate) jobs: Vec<(NewState, u64)>,
}

/// Event ids start from the start time in microseconds, so that they grow
/// across restarts.
fn event_ids_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_micros() as u64)
        .unwrap_or(1)
        .max(1)
}

impl MemoryStore {
    pub fn new() -> Self {
        let first_event_id = event_ids_now();
        Self::with_hub(Hub {
            next_event_id: first_event_id,
            first_event_id,
            horizon: 0,
            sender: broadcast::channel(ALL_CHANNEL_CAPACITY).0,
            latest: BTreeMap::new(),
        })
    }

    fn with_hub(hub: Hub) -> Self {
        MemoryStore {
            slots: RwLock::new(HashMap::new()),
            hub: Mutex::new(hub),
        }
    }

    /// A store holding what an earlier run left. Jobs whose event id is
    /// not known get new ones, above every earlier id, in id order; the
    /// answer lists them with the ids they got.
    pub(crate) fn restored(history: History) -> (Self, Vec<Arc<Published>>) {
        let store = Self::with_hub(Hub {
            next_event_id: history.next_event_id.max(event_ids_now()),
            first_event_id: history.first_event_id,
            horizon: history.horizon,
            sender: broadcast::channel(ALL_CHANNEL_CAPACITY).0,
            latest: BTreeMap::new(),
        });
        let mut renumbered = Vec::new();
        {
            let mut slots = write(&store.slots);
            let mut hub = store.hub();
            for (state, known_event_id) in history.jobs {
                let event_id = match known_event_id {
                    0 => {
                        hub.next_event_id += 1;
                        hub.next_event_id - 1
                    }
                    known => known,
                };
                let published = Arc::new(Published::stamp(state, event_id));
                if known_event_id == 0 {
                    renumbered.push(published.clone());
                }
                hub.latest.insert(published.job_id, published.clone());
                slots.insert(published.job_id, Arc::new(Slot::holding(published.clone())));
            }
        }
        (store, renumbered)
    }

    /// The first event id this store issued (or an earlier run of it).
    pub(crate) fn first_event_id(&self) -> u64 {
        self.hub().first_event_id
    }

    /// The highest event id of any removed job: what a durable store keeps
    /// so that a resume point below it is not answered after a restart.
    pub(crate) fn horizon(&self) -> u64 {
        self.hub().horizon
    }

    /// Whether `state` would be accepted as its job's next state.
    pub(crate) fn check_follows(&self, state: &NewState) -> Result<(), AppendError> {
        let stored = self.slot(state.job_id).map(|slot| {
            let latest = &lock(&slot.state).latest;
            (latest.seq, latest.status.is_terminal())
        });
        let follows = match stored {
            None => state.follows == 0,
            Some((seq, terminal)) => !terminal && state.follows == seq,
        };
        if follows {
            Ok(())
        } else {
            Err(AppendError::Conflict {
                job_id: state.job_id,
                seq: state.seq,
                stored,
            })
        }
    }

    fn slot(&self, id: JobId) -> Option<Arc<Slot>> {
        read(&self.slots).get(&id).cloned()
    }

    fn hub(&self) -> MutexGuard<'_, Hub> {
        lock(&self.hub)
    }

    /// Numbers the state server-wide and sends it to the all-jobs channel.
    fn stamp(&self, state: NewState) -> Arc<Published> {
        let mut hub = self.hub();
        let event_id = hub.next_event_id;
        hub.next_event_id += 1;
        let published = Arc::new(Published::stamp(state, event_id));
        hub.latest.insert(published.job_id, published.clone());
        // An error only means nobody is listening right now.
        let _ = hub.sender.send(published.clone());
        published
    }

    /// Adds a job with its first state.
    fn insert(&self, state: NewState) -> Result<Arc<Published>, AppendError> {
        let conflict = |stored| AppendError::Conflict {
            job_id: state.job_id,
            seq: state.seq,
            stored,
        };
        if state.follows != 0 {
            return Err(conflict(None));
        }
        let mut slots = write(&self.slots);
        if let Some(slot) = slots.get(&state.job_id) {
            let latest = &lock(&slot.state).latest;
            return Err(conflict(Some((latest.seq, latest.status.is_terminal()))));
        }
        let job_id = state.job_id;
        let latest = self.stamp(state);
        slots.insert(job_id, Arc::new(Slot::holding(latest.clone())));
        Ok(latest)
    }

    /// Appends a later state after checking that it follows the stored one.
    fn append_next(&self, state: NewState) -> Result<Arc<Published>, AppendError> {
        let Some(slot) = self.slot(state.job_id) else {
            return Err(AppendError::Conflict {
                job_id: state.job_id,
                seq: state.seq,
                stored: None,
            });
        };
        let mut slot = lock(&slot.state);
        let (stored_seq, stored_terminal) = (slot.latest.seq, slot.latest.status.is_terminal());
        if stored_terminal || state.follows != stored_seq {
            return Err(AppendError::Conflict {
                job_id: state.job_id,
                seq: state.seq,
                stored: Some((stored_seq, stored_terminal)),
            });
        }
        let published = self.stamp(state);
        slot.latest = published.clone();
        if let Some(sender) = &slot.sender {
            let _ = sender.send(published.clone());
        }
        if published.status.is_terminal() {
            // Receivers still get what was sent, then see the channel closed.
            slot.sender = None;
        }
        Ok(published)
    }

    /// An empty store whose event ids are given by another (a shared
    /// backend), starting at 1: see [`MemoryStore::mirror`].
    pub(crate) fn numbered_elsewhere() -> Self {
        Self::with_hub(Hub {
            next_event_id: 1,
            first_event_id: 1,
            horizon: 0,
            sender: broadcast::channel(ALL_CHANNEL_CAPACITY).0,
            latest: BTreeMap::new(),
        })
    }

    /// Takes a state that a shared backend has stored and numbered
    /// `event_id`, if it is newer than the one held (a mirror may have
    /// missed states, and may be sent one twice), as published at
    /// `published_at`; answers it as published.
    pub(crate) fn mirror(&self, state: NewState, event_id: u64, published_at: Instant) -> Option<Arc<Published>> {
        let mut slots = write(&self.slots);
        let slot = slots.get(&state.job_id).cloned();
        let published = Arc::new(Published::stamp_at(state, event_id, published_at));
        match slot {
            Some(slot) => {
                let mut slot = lock(&slot.state);
                if published.seq <= slot.latest.seq || slot.latest.status.is_terminal() {
                    return None;
                }
                slot.latest = published.clone();
                if let Some(sender) = &slot.sender {
                    let _ = sender.send(published.clone());
                }
                if published.status.is_terminal() {
                    slot.sender = None;
                }
            }
            None => {
                slots.insert(published.job_id, Arc::new(Slot::holding(published.clone())));
            }
        }
        drop(slots);
        let mut hub = self.hub();
        hub.next_event_id = hub.next_event_id.max(event_id + 1);
        hub.latest.insert(published.job_id, published.clone());
        let _ = hub.sender.send(published.clone());
        Some(published)
    }

    /// Appends (or, for `seq` 1, inserts) a state and answers it as
    /// published: for a store that keeps this one as its in-memory side.
    pub(crate) fn publish(&self, state: NewState) -> Result<Arc<Published>, AppendError> {
        if state.follows == 0 {
            self.insert(state)
        } else {
            self.append_next(state)
        }
    }
}

impl Store for MemoryStore {
    fn append(&self, state: NewState) -> Result<(), AppendError> {
        self.publish(state).map(drop)
    }

    fn commit(&self, state: NewState) -> StoreFuture<'_, Result<Arc<Published>, AppendError>> {
        StoreFuture::ready(self.publish(state))
    }

    fn get(&self, id: JobId) -> StoreFuture<'_, Option<Arc<Published>>> {
        StoreFuture::ready(self.slot(id).map(|slot| lock(&slot.state).latest.clone()))
    }

    fn list<'a>(&'a self, query: &'a ListQuery) -> StoreFuture<'a, Vec<Arc<Published>>> {
        let hub = self.hub();
        let older = match query.before {
            Some(before) => hub.latest.range(..before),
            None => hub.latest.range(..),
        };
        let page = older
            .rev()
            .map(|(_, job)| job)
            .filter(|job| query.statuses.is_empty() || query.statuses.contains(&job.status))
            .filter(|job| query.kinds.is_empty() || query.kinds.iter().any(|kind| **kind == *job.kind))
            .filter(|job| job.labels.matches_all(&query.labels))
            .filter(|job| query.owner.is_none() || job.owner == query.owner)
            .take(query.limit + 1)
            .cloned()
            .collect();
        StoreFuture::ready(page)
    }

    fn subscribe(&self, id: JobId) -> StoreFuture<'_, Option<JobFeed>> {
        StoreFuture::ready(self.slot(id).map(|slot| {
            let state = lock(&slot.state);
            JobFeed {
                snapshot: state.latest.clone(),
                receiver: state.sender.as_ref().map(broadcast::Sender::subscribe),
            }
        }))
    }

    fn subscribe_all(&self, after: Option<u64>) -> StoreFuture<'_, AllFeed> {
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
        StoreFuture::ready(AllFeed {
            initial,
            receiver: hub.sender.subscribe(),
            position,
            resumed: after.is_some(),
        })
    }

    fn remove(&self, id: JobId) {
        write(&self.slots).remove(&id);
        let mut hub = self.hub();
        if let Some(removed) = hub.latest.remove(&id) {
            hub.horizon = hub.horizon.max(removed.event_id);
        }
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        for slot in read(&self.slots).values() {
            lock(&slot.state).sender = None;
        }
        StoreFuture::ready(())
    }

    fn census(&self) -> StoreFuture<'_, Census> {
        let hub = self.hub();
        let mut census = Census::default();
        for job in hub.latest.values() {
            census.add(job.status);
        }
        StoreFuture::ready(census)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::JobStatus;
    use bytes::Bytes;

    fn state(job_id: JobId, seq: u64, status: JobStatus) -> NewState {
        NewState::new(
            job_id,
            Arc::from("test"),
            Arc::default(),
            status,
            seq,
            Bytes::from_static(b"{}"),
        )
    }

    #[test]
    fn a_state_must_follow_the_stored_one() {
        let store = MemoryStore::new();
        let id = JobId::generate();
        assert!(store.append(state(id, 2, JobStatus::Running)).is_err(), "no job yet");
        store.append(state(id, 1, JobStatus::Queued)).unwrap();
        assert!(store.append(state(id, 1, JobStatus::Queued)).is_err(), "seq 1 twice");
        assert!(store.append(state(id, 3, JobStatus::Running)).is_err(), "a gap");
        store.append(state(id, 2, JobStatus::Running)).unwrap();
        store.append(state(id, 3, JobStatus::Failed)).unwrap();
        let after_end = store.append(state(id, 4, JobStatus::Running));
        assert!(
            matches!(
                after_end,
                Err(AppendError::Conflict {
                    stored: Some((3, true)),
                    ..
                })
            ),
            "{after_end:?}"
        );
    }

    #[tokio::test]
    async fn event_ids_grow_across_jobs_and_a_terminal_state_closes_the_job_channel() {
        let store = MemoryStore::new();
        let (a, b) = (JobId::generate(), JobId::generate());
        let first = store.commit(state(a, 1, JobStatus::Running)).await.unwrap();
        let second = store.commit(state(b, 1, JobStatus::Running)).await.unwrap();
        assert!(second.event_id > first.event_id);
        let mut feed = store.subscribe(a).await.unwrap();
        let end = store.commit(state(a, 2, JobStatus::Completed)).await.unwrap();
        let mut receiver = feed.receiver.take().unwrap();
        assert_eq!(receiver.recv().await.unwrap().seq, 2);
        assert!(receiver.recv().await.is_err(), "closed after the terminal state");
        assert!(end.event_id > second.event_id);
        assert!(store.subscribe(a).await.unwrap().receiver.is_none());
    }
}
