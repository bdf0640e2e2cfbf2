//! Job state and event fan-out behind one interface, so that a shared
//! backend (Redis, for several server instances) can replace the in-memory
//! one without touching the engine or the HTTP layer.
//!
//! A store keeps each job's [`JobModel`], applies mutations to it under its
//! own lock, and publishes each new state exactly once as a [`Published`]:
//! the job serialised once, with its SSE frames encoded once, shared by every
//! subscriber as reference-counted `Bytes`. Publishing never waits for a
//! subscriber.

pub mod memory;

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::jobs::model::{Change, JobModel};
use crate::jobs::{JobId, JobStatus};

/// One published state of one job, serialised once.
#[derive(Debug)]
pub struct Published {
    pub job_id: JobId,
    pub kind: Arc<str>,
    pub status: JobStatus,
    /// The job's own sequence number: the id of per-job stream events.
    pub seq: u64,
    /// The server-wide sequence number: the id of `/v1/events` events.
    pub event_id: u64,
    /// When it was published: how far behind a subscriber is.
    pub published_at: Instant,
    /// The job resource as JSON.
    pub json: Bytes,
    /// The SSE frame for the job's own stream (`id:` is `seq`).
    pub job_frame: Bytes,
    /// The SSE frame for the all-jobs stream (`id:` is `event_id`).
    pub global_frame: Bytes,
}

impl Published {
    pub fn new(job_id: JobId, kind: Arc<str>, status: JobStatus, seq: u64, event_id: u64, json: Bytes) -> Self {
        let event = Self::live_event_name(status);
        Published {
            job_frame: encode_frame(event, seq, &json),
            global_frame: encode_frame(event, event_id, &json),
            job_id,
            kind,
            status,
            seq,
            event_id,
            published_at: Instant::now(),
            json,
        }
    }

    fn live_event_name(status: JobStatus) -> &'static str {
        if status.is_terminal() {
            status.as_str()
        } else {
            "progress"
        }
    }

    /// The first frame on a job's own stream: a `snapshot` event, or the
    /// terminal event itself when the job has ended.
    pub fn job_snapshot_frame(&self) -> Bytes {
        if self.status.is_terminal() {
            self.job_frame.clone()
        } else {
            encode_frame("snapshot", self.seq, &self.json)
        }
    }

    /// The same for the all-jobs stream, with the server-wide id.
    pub fn global_snapshot_frame(&self) -> Bytes {
        if self.status.is_terminal() {
            self.global_frame.clone()
        } else {
            encode_frame("snapshot", self.event_id, &self.json)
        }
    }
}

/// Encodes one SSE event. The JSON has no newlines, so one `data:` line.
fn encode_frame(event: &str, id: u64, json: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(json.len() + event.len() + 40);
    write!(frame, "event: {event}\nid: {id}\ndata: ").expect("writing to a Vec cannot fail");
    frame.extend_from_slice(json);
    frame.extend_from_slice(b"\n\n");
    Bytes::from(frame)
}

/// What an update did.
#[derive(Debug, Default)]
pub struct UpdateOutcome {
    /// The state published by this update, if it published one.
    pub published: Option<Arc<Published>>,
    /// A counter change waits to be merged into a publish at this time; the
    /// job's runner calls [`Store::flush`] then.
    pub flush_at: Option<Instant>,
    /// This update moved the job to a terminal status.
    pub became_terminal: bool,
}

/// When [`Store::flush`] may publish a waiting change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flush {
    /// Now, whatever the publish interval says (the job asked for it).
    Now,
    /// Only once the publish interval since the last publish has passed.
    WhenDue,
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

/// One page of jobs, newest first.
#[derive(Debug, Default)]
pub struct ListQuery {
    pub statuses: Vec<JobStatus>,
    pub kinds: Vec<String>,
    /// Only jobs older than this one (the cursor).
    pub before: Option<JobId>,
    pub limit: usize,
}

/// How many jobs the store holds, by status.
#[derive(Debug, Default, Clone, Copy)]
pub struct Census {
    pub by_status: [usize; 6],
}

impl Census {
    pub fn count(&self, status: JobStatus) -> usize {
        self.by_status[JobStatus::ALL
            .iter()
            .position(|s| *s == status)
            .expect("ALL holds every status")]
    }

    pub fn total(&self) -> usize {
        self.by_status.iter().sum()
    }
}

/// The job named no job the store holds.
#[derive(Debug, thiserror::Error)]
#[error("job {0} not found")]
pub struct JobNotFound(pub JobId);

/// A mutation of one job's model, applied under the store's lock for that job.
pub type Mutation<'a> = &'a mut dyn FnMut(&mut JobModel) -> Change;

/// Job state and fan-out. Implementations keep each job's mutations and
/// publishes serialised, so `seq` grows by exactly one per publish and
/// subscribers see states in order.
pub trait Store: Send + Sync + 'static {
    /// Adds a new job and publishes its first state (`seq` 1).
    fn insert(&self, model: JobModel) -> Arc<Published>;

    /// Applies a mutation and publishes as its [`Change`] asks: at once,
    /// merged into a later publish within the publish interval, or not at all.
    fn update(&self, id: JobId, mutation: Mutation<'_>) -> Result<UpdateOutcome, JobNotFound>;

    /// Publishes a merged counter change that is still waiting, if any:
    /// at once with [`Flush::Now`], or with [`Flush::WhenDue`] only once the
    /// publish interval since the last publish has passed, returning the
    /// time it falls due if that is still ahead.
    fn flush(&self, id: JobId, when: Flush) -> Option<Instant>;

    /// The latest published state.
    fn get(&self, id: JobId) -> Option<Arc<Published>>;

    /// Up to `limit + 1` jobs matching the query, newest first (the extra
    /// one tells the caller there is a next page).
    fn list(&self, query: &ListQuery) -> Vec<Arc<Published>>;

    /// The job's latest state and a receiver of every later one.
    fn subscribe(&self, id: JobId) -> Option<JobFeed>;

    /// Every job changed after `after` (or every job not yet terminal when
    /// `after` is absent or can no longer be answered), and a receiver of
    /// every later change of every job.
    fn subscribe_all(&self, after: Option<u64>) -> AllFeed;

    /// Forgets a job: its state, its channel, and its place in listings.
    fn remove(&self, id: JobId);

    fn census(&self) -> Census;
}
