//! Per-owner limits: at most `--max-queued-per-owner` of one owner's jobs
//! wait at once (beyond, creation is refused), and at most
//! `--max-running-per-owner` run at once. An owner's job first waits for
//! one of its owner's running places, and only then joins the server's
//! FIFO queue of running slots: so an owner's extra jobs wait without
//! holding a place in that queue, and other owners' jobs take the free
//! slots. Only owners with live jobs are tracked. On a store several
//! instances share, the store holds a job to both limits across instances
//! before an instance takes it from the shared queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::lock;

/// The per-owner limits and every owner's live jobs.
pub(super) struct OwnerLimits {
    max_running: Option<usize>,
    max_queued: Option<usize>,
    /// Owners with live jobs (std mutex: short sections, no `.await` inside).
    owners: Mutex<HashMap<Arc<str>, OwnerState>>,
}

struct OwnerState {
    /// Live jobs, each holding an [`OwnerPlace`].
    live: usize,
    queued: usize,
    /// One permit per job of the owner's allowed to run at once.
    running: Option<Arc<Semaphore>>,
}

/// One live job's place in its owner's limits; the job's owner forgets it
/// when the last handle on the job is dropped.
pub(super) struct OwnerPlace {
    limits: Arc<OwnerLimits>,
    owner: Arc<str>,
    running: Option<Arc<Semaphore>>,
}

/// The owner already has its limit of queued jobs.
#[derive(Debug)]
pub(super) struct OwnerQueueFull(pub usize);

impl OwnerLimits {
    pub(super) fn new(max_running: Option<usize>, max_queued: Option<usize>) -> Self {
        OwnerLimits {
            max_running: max_running.map(|max| max.max(1)),
            max_queued,
            owners: Mutex::default(),
        }
    }

    /// A queued place for a new job of `owner`, or None when no limit applies.
    pub(super) fn admit(self: &Arc<Self>, owner: Option<&Arc<str>>) -> Result<Option<OwnerPlace>, OwnerQueueFull> {
        let Some(owner) = owner.filter(|_| self.max_running.is_some() || self.max_queued.is_some()) else {
            return Ok(None);
        };
        let mut owners = lock(&self.owners);
        let state = owners.entry(owner.clone()).or_insert_with(|| OwnerState {
            live: 0,
            queued: 0,
            running: self.max_running.map(|max| Arc::new(Semaphore::new(max))),
        });
        if let Some(max) = self.max_queued.filter(|&max| state.queued >= max) {
            if state.live == 0 {
                owners.remove(owner);
            }
            return Err(OwnerQueueFull(max));
        }
        state.live += 1;
        state.queued += 1;
        Ok(Some(OwnerPlace {
            limits: self.clone(),
            owner: owner.clone(),
            running: state.running.clone(),
        }))
    }
}

impl OwnerPlace {
    /// The job no longer waits: it started, or ended while queued. Called
    /// once per job.
    pub(super) fn leave_queue(&self) {
        if let Some(state) = lock(&self.limits.owners).get_mut(&self.owner) {
            state.queued -= 1;
        }
    }

    /// Waits, first in first out among the owner's jobs, for one of the
    /// owner's running places.
    pub(super) async fn running_permit(&self) -> Option<OwnedSemaphorePermit> {
        let running = self.running.clone()?;
        Some(
            running
                .acquire_owned()
                .await
                .expect("an owner's running semaphore is never closed"),
        )
    }
}

impl Drop for OwnerPlace {
    fn drop(&mut self) {
        let mut owners = lock(&self.limits.owners);
        if let Some(state) = owners.get_mut(&self.owner) {
            state.live -= 1;
            if state.live == 0 {
                owners.remove(&self.owner);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_is_held_to_its_queue_limit_and_forgotten_with_its_last_job() {
        let limits = Arc::new(OwnerLimits::new(None, Some(2)));
        let alice: Arc<str> = Arc::from("alice");
        let first = limits.admit(Some(&alice)).unwrap().unwrap();
        let second = limits.admit(Some(&alice)).unwrap().unwrap();
        assert!(limits.admit(Some(&alice)).is_err());
        assert!(limits.admit(Some(&Arc::from("bob"))).unwrap().is_some());
        first.leave_queue();
        let third = limits.admit(Some(&alice)).unwrap().unwrap();
        drop((first, second, third));
        assert!(lock(&limits.owners).is_empty());
        assert!(limits.admit(None).unwrap().is_none());
    }
}
