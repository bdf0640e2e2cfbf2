//! A published state of one job: the job resource serialised once, with the
//! SSE frames every subscriber is sent, shared as reference-counted `Bytes`.
//!
//! This is the one shape that travels from the engine ([`crate::jobs`]),
//! through a store ([`crate::store`]), to the streams ([`crate::http::sse`]).
//! It is a leaf: it knows job ids, statuses and labels and nothing else of
//! the engine, so a store can hold, filter and fan out states without the
//! job model.
//!
//! A state is made in two steps. The engine serialises the job and frames it
//! for the job's own stream ([`NewState`]), whose event id is the job's
//! `seq`. The store then numbers it with the server-wide event id (which only
//! the store can assign, atomically with its fan-out, and across instances
//! when it is shared) and frames it for the all-jobs stream
//! ([`Published::stamp`]). Both frames are encoded here, once per state.

use std::fmt;
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::jobs::labels::Labels;
use crate::jobs::{JobId, JobStatus};

/// What a store keeps of a job but never shows: the idempotency key that
/// created it and its external worker's token, so that both still work
/// after a restart. Only a job's first state carries them.
#[derive(Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobSecrets {
    /// The owner that sent the key (None without authentication), and the key.
    pub idempotency_key: Option<(Option<String>, String)>,
    pub worker_token: Option<String>,
}

impl fmt::Debug for JobSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobSecrets")
            .field("idempotency_key", &self.idempotency_key)
            .field("worker_token", &self.worker_token.as_ref().map(|_| "…"))
            .finish()
    }
}

/// A job's next state as the engine hands it to the store: serialised, and
/// framed for the job's own stream, but not yet numbered server-wide.
#[derive(Debug)]
pub struct NewState {
    pub job_id: JobId,
    pub kind: Arc<str>,
    /// The job's labels, shared by all its states: what listings and the
    /// all-jobs stream filter on.
    pub labels: Arc<Labels>,
    /// The job's owner (None without authentication): who may see it.
    pub owner: Option<Arc<str>>,
    pub status: JobStatus,
    /// The job's own sequence number: the id of per-job stream events.
    pub seq: u64,
    /// The `seq` of the stored state this one follows (0 for a new job): what
    /// the store's compare-and-set checks. One below `seq`, except for the
    /// state that ends a job interrupted by a restart, which jumps past any
    /// `seq` a client may have seen.
    pub follows: u64,
    /// The job resource as JSON.
    pub json: Bytes,
    /// The SSE frame for the job's own stream (`id:` is `seq`).
    pub job_frame: Bytes,
    /// A first state's secrets, for a durable store to keep.
    pub secrets: Option<Arc<JobSecrets>>,
    /// A first state whose job waits in a shared store's queue.
    pub shared_queue: bool,
    /// A change of status or stage (every change of a live job's status is
    /// one), which a durable store writes without waiting for its next
    /// batch: after a crash a started job is then not taken for a queued
    /// one, and the stored state names the stage that was running.
    pub milestone: bool,
}

impl NewState {
    /// The state after `seq - 1`.
    pub fn new(job_id: JobId, kind: Arc<str>, labels: Arc<Labels>, status: JobStatus, seq: u64, json: Bytes) -> Self {
        NewState {
            job_frame: encode_frame(live_event_name(status), seq, &json),
            job_id,
            kind,
            labels,
            owner: None,
            status,
            seq,
            follows: seq.saturating_sub(1),
            json,
            secrets: None,
            shared_queue: false,
            milestone: false,
        }
    }

    /// The same state, following the stored state `follows` instead.
    pub fn following(self, follows: u64) -> Self {
        NewState { follows, ..self }
    }

    /// The same state, of a job `owner` owns.
    pub fn with_owner(mut self, owner: Option<Arc<str>>) -> Self {
        self.owner = owner;
        self
    }
}

/// One published state of one job, serialised once.
#[derive(Debug)]
pub struct Published {
    pub job_id: JobId,
    pub kind: Arc<str>,
    /// The job's labels, shared by all its states.
    pub labels: Arc<Labels>,
    /// The job's owner (None without authentication): who may see it.
    pub owner: Option<Arc<str>>,
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
    /// The state as published under the server-wide `event_id`, now.
    pub fn stamp(state: NewState, event_id: u64) -> Self {
        Self::stamp_at(state, event_id, Instant::now())
    }

    /// The state as published under the server-wide `event_id` at
    /// `published_at` (by another instance, a while ago).
    pub fn stamp_at(state: NewState, event_id: u64, published_at: Instant) -> Self {
        Published {
            global_frame: encode_frame(live_event_name(state.status), event_id, &state.json),
            job_id: state.job_id,
            kind: state.kind,
            labels: state.labels,
            owner: state.owner,
            status: state.status,
            seq: state.seq,
            event_id,
            published_at,
            json: state.json,
            job_frame: state.job_frame,
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

/// A live event is `progress` until the job ends, then its terminal status.
fn live_event_name(status: JobStatus) -> &'static str {
    if status.is_terminal() {
        status.as_str()
    } else {
        "progress"
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
