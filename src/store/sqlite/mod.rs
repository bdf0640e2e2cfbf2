//! The embedded durable store: jobs survive restarts in one SQLite file.
//!
//! Reads and fan-out are the memory store's: the database holds every
//! retained job, which fits in memory as the memory store's jobs do, so it
//! is read once, at start ([`schema::jobs`]), into a [`MemoryStore`] that
//! answers every read and subscription as before. Writes go to the
//! database through one writer thread (`writer.rs`):
//! - a job's first and terminal states are committed before anyone sees
//!   them: [`Store::commit`] waits for the batch that writes the row, then
//!   publishes through the memory store, whose event id is written behind;
//! - every other state is published at once and written behind, coalesced
//!   to the newest per job; a change of status (a job starting) without
//!   waiting for the writer's pause;
//! - retention deletes rows, and the file's freed pages go back;
//! - the WAL is copied into the database by a thread of its own
//!   (`checkpoint.rs`), and started over by the writer when it is idle.
//!
//! A state committed but not yet numbered when the process died keeps event
//! id 0 and is numbered anew at the next start, above every earlier id, so a
//! client resuming `/v1/events` from before the crash is sent it.

mod checkpoint;
pub mod schema;
mod writer;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::memory::{History, MemoryStore};
use super::stored_state;
use super::{
    Admission, AllFeed, AppendError, Census, JobFeed, JobSecrets, ListQuery, NewState, Published, Store, StoreFuture,
    MAX_UNSTORED_STATES,
};
use crate::jobs::{JobId, JobStatus};
use checkpoint::Checkpointer;
pub use schema::OpenError;
use writer::{Row, RowState, Writer};

pub struct SqliteStore {
    memory: MemoryStore,
    writer: Writer,
    /// Stopped after the writer (fields drop in order).
    _checkpointer: Checkpointer,
    /// The stored jobs' secrets, until the engine takes them at start.
    restored_secrets: Mutex<HashMap<JobId, Arc<JobSecrets>>>,
}

impl SqliteStore {
    /// Opens the database at `path`, creating it if it is new, and reads
    /// every job it holds.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        let name = path.display().to_string();
        let sqlite = |source| OpenError::Sqlite {
            path: name.clone(),
            source,
        };
        let connection = schema::open(path)?;
        let stored = schema::jobs(&connection).map_err(sqlite)?;
        let first_event_id = schema::meta(&connection, "first_event_id").map_err(sqlite)?;
        let horizon = schema::meta(&connection, "horizon").map_err(sqlite)?.unwrap_or(0);
        let mut jobs = Vec::with_capacity(stored.len());
        let mut restored_secrets = HashMap::new();
        for job in stored {
            let corrupt = |what: &str| OpenError::NotJobcast {
                path: name.clone(),
                reason: format!("job {:?} has {what}", job.id),
            };
            let id: JobId = job.id.parse().map_err(|_| corrupt("a malformed id"))?;
            let status: JobStatus = job.status.parse().map_err(|_| corrupt("an unknown status"))?;
            if let Some(secrets) = &job.secrets {
                let secrets = serde_json::from_str(secrets).map_err(|_| corrupt("malformed secrets"))?;
                restored_secrets.insert(id, Arc::new(secrets));
            }
            let state = stored_state(id, Arc::from(job.kind), status, job.seq, Bytes::from(job.state))
                .ok_or_else(|| corrupt("malformed labels or owner"))?;
            jobs.push((state, job.event_id));
        }
        let next_event_id = jobs.iter().map(|(_, id)| id + 1).max().unwrap_or(0).max(horizon + 1);
        let stored_seqs = jobs.iter().map(|(state, _)| (state.job_id, state.seq)).collect();
        let (memory, renumbered) = MemoryStore::restored(History {
            first_event_id: first_event_id.unwrap_or(next_event_id),
            next_event_id,
            horizon,
            jobs,
        });
        if first_event_id.is_none() {
            let first = memory.first_event_id();
            schema::set_meta(&connection, "first_event_id", first).map_err(sqlite)?;
        }
        let writer = Writer::start(connection, stored_seqs).map_err(OpenError::Writer)?;
        let checkpointer = Checkpointer::start(path)?;
        for published in renumbered {
            writer.write_behind(Row::of(&published));
        }
        Ok(SqliteStore {
            memory,
            writer,
            _checkpointer: checkpointer,
            restored_secrets: Mutex::new(restored_secrets),
        })
    }
}

impl Store for SqliteStore {
    fn append(&self, state: NewState) -> Result<(), AppendError> {
        // A job that starts (or otherwise changes status or stage: a
        // milestone) is written without the pause progress waits for, so
        // that after a crash a started job is not taken for a queued one,
        // and its running stage is known.
        let milestone = state.milestone;
        let published = self.memory.publish(state)?;
        let row = Row::of(&published);
        if milestone {
            self.writer.write_soon(row);
        } else {
            self.writer.write_behind(row);
        }
        Ok(())
    }

    fn commit(&self, state: NewState) -> StoreFuture<'_, Result<Arc<Published>, AppendError>> {
        if let Err(conflict) = self.memory.check_follows(&state) {
            return StoreFuture::ready(Err(conflict));
        }
        let row = Row {
            job_id: state.job_id,
            status: state.status.as_str(),
            seq: state.seq,
            event_id: 0,
            state: RowState::Committing {
                kind: state.kind.clone(),
                json: state.json.clone(),
            },
            secrets: state.secrets.clone(),
        };
        StoreFuture::Waiting(Box::pin(async move {
            loop {
                let written = self
                    .writer
                    .commit(row.clone())
                    .await
                    .unwrap_or_else(|_| Err("the database writer stopped".to_owned()));
                match written {
                    Ok(()) => break,
                    // A new job is refused, and its creator told to try again.
                    Err(error) if !state.status.is_terminal() => return Err(AppendError::Unavailable(error)),
                    // A job's end is held back until it is stored: the
                    // writer pauses between attempts.
                    Err(error) => tracing::warn!(job_id = %state.job_id, %error, "a job's end waits for the database"),
                }
            }
            let published = self.memory.publish(state)?;
            self.writer.write_behind(Row::of(&published));
            Ok(published)
        }))
    }

    fn get(&self, id: JobId) -> StoreFuture<'_, Option<Arc<Published>>> {
        self.memory.get(id)
    }

    fn list<'a>(&'a self, query: &'a ListQuery) -> StoreFuture<'a, Vec<Arc<Published>>> {
        self.memory.list(query)
    }

    fn subscribe(&self, id: JobId) -> StoreFuture<'_, Option<JobFeed>> {
        self.memory.subscribe(id)
    }

    fn subscribe_all(&self, after: Option<u64>) -> StoreFuture<'_, AllFeed> {
        self.memory.subscribe_all(after)
    }

    fn remove(&self, id: JobId) {
        self.memory.remove(id);
        self.writer.remove(id, self.memory.horizon());
    }

    fn census(&self) -> StoreFuture<'_, Census> {
        self.memory.census()
    }

    fn durable(&self) -> bool {
        true
    }

    fn take_restored_secrets(&self) -> HashMap<JobId, Arc<JobSecrets>> {
        std::mem::take(
            &mut self
                .restored_secrets
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    fn admit(&self, id: JobId, seq: u64) -> Admission {
        match self.writer.stored_seq(id) {
            Some(stored) if seq > stored + MAX_UNSTORED_STATES => {
                self.writer.hurry(id);
                Admission::HeldBack
            }
            Some(stored) => Admission::Until(stored + MAX_UNSTORED_STATES),
            // No row yet: nothing to measure the job against; ask again.
            None => Admission::Until(seq),
        }
    }

    fn is_available(&self) -> bool {
        self.writer.is_healthy()
    }

    fn rows_written(&self) -> u64 {
        self.writer.rows_written()
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        let closed = self.memory.close();
        let flushed = self.writer.flush();
        StoreFuture::Waiting(Box::pin(async move {
            closed.await;
            let _ = flushed.await;
        }))
    }
}
