//! The one writer of the database: a thread of its own that owns the
//! connection and writes in batches, so that no job or stream ever waits
//! for the disk unless it must (a commit).
//!
//! Work is handed over under a short std mutex: rows written behind are
//! coalesced to the newest per job (so a job that publishes faster than the
//! disk writes costs one row per batch, and the pending work is bounded by
//! the number of jobs), commits wait for the batch that writes them (and
//! replace the job's pending rows, which they supersede), and removals and
//! the event-id horizon ride along. Commits and flushes are written at
//! once (commits handed over while a batch is written share the next
//! one). The rows of jobs that changed status or stage gather for
//! [`SOON_PAUSE`] (many jobs starting together cost one transaction, not one
//! each). The rows nobody waits for gather for [`BEHIND_PAUSE`] after they
//! were last all written (unless a flush wants them), so that many jobs
//! publishing often cost one row each per pause, not one per state, and are
//! then written at most [`BEHIND_CHUNK`] to a batch, only while no other
//! work waits, so that a commit never waits behind a thousand jobs'
//! progress (and a burst of commits, such as many jobs ending together, is
//! not slowed by their progress rows). A chunk is a run of neighbouring ids
//! (ids are time-ordered, so their rows share the table's pages: fewer pages
//! to write), taken round the ids in turn so that every job gets its turn.
//! Handing work over wakes the writer only when it was idle or the work
//! makes the next batch due sooner. Each batch is one transaction; every
//! row is an upsert that never replaces a newer state, so the order of work
//! within a batch does not matter. After a batch that removed jobs, freed
//! pages are given back to the file system (`incremental_vacuum`).
//!
//! The writer's connection never checkpoints on its own (SQLite's automatic
//! checkpoint runs at the end of a commit and syncs the database file: the
//! commits behind it waited tens of milliseconds when many jobs ended
//! together); another thread copies the WAL (`checkpoint.rs`). The writer
//! checkpoints too, which lets the next write start the WAL over, once it
//! has had nothing to do for [`IDLE_BEFORE_CHECKPOINT`] (there is little
//! left to copy by then), or after [`CHECKPOINT_AFTER_ROWS`] rows without
//! such a pause.
//!
//! When a batch fails (the disk is full, say), its commits are answered with
//! the error, its other work is kept, and the writer is unhealthy: it tries
//! again after a pause, with a probe write when nothing else is pending, so
//! that it notices the space coming back, and is healthy again after the
//! first batch that succeeds.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::mem;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rusqlite::Connection;
use tokio::sync::oneshot;

use super::schema;
use crate::jobs::JobId;
use crate::published::{JobSecrets, Published};

/// How long the writer waits before trying a failed batch again.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How long the rows of jobs that changed status or stage gather before
/// they are written (unless a commit or a flush takes them sooner): after a
/// crash, a job is known as started, and its stage as running, if its
/// change is this old.
const SOON_PAUSE: Duration = Duration::from_millis(5);
/// How long rows written behind gather after a batch before the next one.
/// A job whose progress is held back ([`Writer::hurry`]) does not wait for it.
const BEHIND_PAUSE: Duration = Duration::from_secs(1);
/// How long the writer must have had nothing to do before it copies the
/// WAL into the database (a checkpoint syncs the file: a commit arriving
/// meanwhile waits for it).
const IDLE_BEFORE_CHECKPOINT: Duration = Duration::from_millis(20);
/// Rows written since the last checkpoint beyond which the writer
/// checkpoints even without a pause in the work (the WAL stays below
/// about this many pages).
const CHECKPOINT_AFTER_ROWS: u64 = 5_000;
/// Pages given back per batch that removed jobs.
const VACUUM_PAGES: u32 = 256;
/// Most rows written behind in one batch: urgent work waits for at most
/// one such batch (about half a millisecond), however many jobs publish.
const BEHIND_CHUNK: usize = 64;

/// One job's state as a row.
#[derive(Clone)]
pub struct Row {
    pub job_id: JobId,
    pub status: &'static str,
    pub seq: u64,
    /// 0 until the state's fan-out has numbered it.
    pub event_id: u64,
    pub state: RowState,
    /// Written with a job's first state; kept by every later row.
    pub secrets: Option<Arc<JobSecrets>>,
}

/// Where a row's kind and JSON come from.
#[derive(Clone)]
pub enum RowState {
    /// A published state, shared with its subscribers (nothing is copied).
    Published(Arc<Published>),
    /// A state committed before it is published.
    Committing { kind: Arc<str>, json: Bytes },
}

impl Row {
    pub fn of(published: &Arc<Published>) -> Self {
        Row {
            job_id: published.job_id,
            status: published.status.as_str(),
            seq: published.seq,
            event_id: published.event_id,
            state: RowState::Published(published.clone()),
            secrets: None,
        }
    }

    fn kind(&self) -> &str {
        match &self.state {
            RowState::Published(published) => &published.kind,
            RowState::Committing { kind, .. } => kind,
        }
    }

    fn json(&self) -> &[u8] {
        match &self.state {
            RowState::Published(published) => &published.json,
            RowState::Committing { json, .. } => json,
        }
    }

    /// Whether this row is a later version of the same job than `other`.
    fn newer_than(&self, other: &Row) -> bool {
        (self.seq, self.event_id) > (other.seq, other.event_id)
    }
}

/// A commit's answer: Ok once durable, or why it could not be written.
pub type Committed = oneshot::Receiver<Result<(), String>>;

#[derive(Default)]
struct Work {
    /// By id, so that a chunk of them is a run of neighbouring rows.
    behind: BTreeMap<JobId, Row>,
    /// Where the next chunk of `behind` starts (after this id).
    behind_cursor: Option<JobId>,
    /// Rows nobody waits for that wait only [`SOON_PAUSE`].
    soon: BTreeMap<JobId, Row>,
    /// When the oldest of `soon` was handed over.
    soon_since: Option<Instant>,
    commits: Vec<(Row, oneshot::Sender<Result<(), String>>)>,
    removed: Vec<JobId>,
    horizon: Option<u64>,
    /// Answered once everything handed over before it is written.
    flushes: Vec<oneshot::Sender<()>>,
    closing: bool,
}

impl Work {
    fn is_empty(&self) -> bool {
        self.behind.is_empty()
            && self.soon.is_empty()
            && self.commits.is_empty()
            && self.removed.is_empty()
            && self.horizon.is_none()
            && self.flushes.is_empty()
    }

    /// Whether this work is written at once, with everything pending: a
    /// flush or the close waits for it.
    fn is_urgent(&self) -> bool {
        !self.flushes.is_empty() || self.closing
    }

    /// When the next batch is due, if anything is pending: now for urgent
    /// work and commits; else when the rows written soon or (once
    /// `behind_written` is [`BEHIND_PAUSE`] old) the rest are due, whichever
    /// comes first.
    fn due(&self, behind_written: Instant) -> Option<Instant> {
        if self.is_urgent() || !self.commits.is_empty() {
            return Some(Instant::now());
        }
        let soon = self.soon_since.map(|since| since + SOON_PAUSE);
        let behind = (!self.behind.is_empty() || !self.removed.is_empty() || self.horizon.is_some())
            .then_some(behind_written + BEHIND_PAUSE);
        soon.into_iter().chain(behind).min()
    }

    /// What tells the writer whether it must look at the work again: the
    /// next batch may be due sooner once any of these turns true.
    fn wake_marks(&self) -> [bool; 4] {
        [
            !self.is_empty(),
            self.is_urgent(),
            !self.commits.is_empty(),
            self.soon_since.is_some(),
        ]
    }

    /// Keeps the job's newest row, where its pending row is (a row written
    /// soon stays soon).
    fn keep_behind(&mut self, row: Row) {
        let pending = match self.soon.contains_key(&row.job_id) {
            true => &mut self.soon,
            false => &mut self.behind,
        };
        keep_newest(pending, row);
    }

    /// Keeps the job's newest row among the rows written soon.
    fn keep_soon(&mut self, row: Row) {
        if let Some(pending) = self.behind.remove(&row.job_id) {
            keep_newest(&mut self.soon, pending);
        }
        keep_newest(&mut self.soon, row);
        self.soon_since.get_or_insert_with(Instant::now);
    }

    /// Adds a commit, which supersedes the job's pending rows (a commit is
    /// the job's newest state).
    fn add_commit(&mut self, row: Row, done: oneshot::Sender<Result<(), String>>) {
        self.behind.remove(&row.job_id);
        self.soon.remove(&row.job_id);
        if self.soon.is_empty() {
            self.soon_since = None;
        }
        self.commits.push((row, done));
    }

    /// The rows this batch writes.
    fn rows(&self) -> impl Iterator<Item = &Row> {
        self.commits
            .iter()
            .map(|(row, _)| row)
            .chain(self.soon.values())
            .chain(self.behind.values())
    }

    /// The part of the pending work the next batch writes, as of `now`:
    /// everything when a flush or the close wants it; else the commits,
    /// with the rows written soon if there are commits or the rows are due;
    /// else, once `behind_due`, at most [`BEHIND_CHUNK`] rows written
    /// behind. Other work never waits for more than one chunk, and rows
    /// written behind wait while other work keeps coming (a burst of
    /// commits), which bounds them by the number of jobs, not by time.
    fn take_batch(&mut self, now: Instant, behind_due: bool) -> Work {
        if !self.flushes.is_empty() || self.closing {
            let mut batch = mem::take(self);
            // Closing stays set: the writer stops once it has written everything.
            self.closing = batch.closing;
            self.behind_cursor = batch.behind_cursor.take();
            return batch;
        }
        let mut batch = Work {
            commits: mem::take(&mut self.commits),
            removed: mem::take(&mut self.removed),
            horizon: self.horizon.take(),
            ..Work::default()
        };
        let soon_due = self.soon_since.is_some_and(|since| now >= since + SOON_PAUSE);
        if !batch.commits.is_empty() || soon_due {
            batch.soon = mem::take(&mut self.soon);
            self.soon_since = None;
        }
        if behind_due && batch.commits.is_empty() && batch.soon.is_empty() {
            batch.behind = self.behind_chunk();
        }
        batch
    }

    /// Up to [`BEHIND_CHUNK`] rows written behind: the ids after the
    /// cursor, round to the first ones.
    fn behind_chunk(&mut self) -> BTreeMap<JobId, Row> {
        if self.behind.len() <= BEHIND_CHUNK {
            self.behind_cursor = None;
            return mem::take(&mut self.behind);
        }
        let after = match self.behind_cursor {
            Some(cursor) => Bound::Excluded(cursor),
            None => Bound::Unbounded,
        };
        let ids: Vec<JobId> = self
            .behind
            .range((after, Bound::Unbounded))
            .chain(self.behind.iter())
            .map(|(id, _)| *id)
            .take(BEHIND_CHUNK)
            .collect();
        self.behind_cursor = ids.last().copied();
        ids.into_iter().filter_map(|id| self.behind.remove_entry(&id)).collect()
    }
}

/// Keeps `row` in `rows` unless the job's pending row there is as new.
fn keep_newest(rows: &mut BTreeMap<JobId, Row>, row: Row) {
    match rows.entry(row.job_id) {
        Entry::Occupied(mut pending) => {
            if row.newer_than(pending.get()) {
                pending.insert(row);
            }
        }
        Entry::Vacant(vacant) => {
            vacant.insert(row);
        }
    }
}

struct Shared {
    work: Mutex<Work>,
    wake: Condvar,
    /// False from a failed batch until one succeeds.
    healthy: AtomicBool,
    /// Each job's `seq` in the database.
    stored_seqs: Mutex<HashMap<JobId, u64>>,
    /// Job rows upserted by batches that were committed.
    rows_written: AtomicU64,
}

/// The handle the store writes through; dropping it writes what is
/// pending and stops the thread.
pub struct Writer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer of a database holding the jobs `stored_seqs` names,
    /// at those `seq`s.
    pub fn start(connection: Connection, stored_seqs: HashMap<JobId, u64>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            work: Mutex::new(Work::default()),
            wake: Condvar::new(),
            healthy: AtomicBool::new(true),
            stored_seqs: Mutex::new(stored_seqs),
            rows_written: AtomicU64::new(0),
        });
        let thread = std::thread::Builder::new()
            .name("jobcast-sqlite-writer".to_owned())
            .spawn({
                let shared = shared.clone();
                move || write_batches(&connection, &shared)
            })?;
        Ok(Writer {
            shared,
            thread: Some(thread),
        })
    }

    fn work(&self) -> MutexGuard<'_, Work> {
        lock(&self.shared.work)
    }

    /// Adds work, and wakes the writer if the work may make the next batch
    /// due sooner: it was idle, or this is the first urgent work, commit or
    /// row written soon (otherwise it comes for the work when it is due).
    fn hand_over(&self, add: impl FnOnce(&mut Work)) {
        let mut work = self.work();
        let before = work.wake_marks();
        add(&mut work);
        let after = work.wake_marks();
        drop(work);
        let wake = before.iter().zip(after).any(|(before, after)| !before && after);
        if wake {
            self.shared.wake.notify_one();
        }
    }

    /// Whether the last batch was written.
    pub fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire)
    }

    /// Job rows written so far (a state committed or written behind; a
    /// state coalesced away before its batch is not counted).
    pub fn rows_written(&self) -> u64 {
        self.shared.rows_written.load(Ordering::Relaxed)
    }

    /// The job's `seq` in the database, if it has a row.
    pub fn stored_seq(&self, id: JobId) -> Option<u64> {
        lock(&self.shared.stored_seqs).get(&id).copied()
    }

    /// Writes a row in a later batch; a newer row of the same job replaces it.
    pub fn write_behind(&self, row: Row) {
        self.hand_over(|work| work.keep_behind(row));
    }

    /// Writes a row within [`SOON_PAUSE`], without waiting for the pause of
    /// the rows written behind.
    pub fn write_soon(&self, row: Row) {
        self.hand_over(|work| work.keep_soon(row));
    }

    /// Writes the job's pending row, if it has one, within [`SOON_PAUSE`]:
    /// for a job whose progress is held back until its row is written.
    pub fn hurry(&self, id: JobId) {
        let mut work = self.work();
        let Some(row) = work.behind.remove(&id) else {
            return;
        };
        let had_soon = work.soon_since.is_some();
        work.keep_soon(row);
        drop(work);
        if !had_soon {
            self.shared.wake.notify_one();
        }
    }

    /// Writes a row in the next batch and answers once it is durable.
    pub fn commit(&self, row: Row) -> Committed {
        let (done, committed) = oneshot::channel();
        self.hand_over(|work| work.add_commit(row, done));
        committed
    }

    /// Deletes a job's row; `horizon` is the highest event id of any removed job.
    pub fn remove(&self, id: JobId, horizon: u64) {
        self.hand_over(|work| {
            work.behind.remove(&id);
            work.soon.remove(&id);
            if work.soon.is_empty() {
                work.soon_since = None;
            }
            work.removed.push(id);
            work.horizon = Some(horizon);
        });
    }

    /// Answers once everything handed over so far is written (or failed).
    pub fn flush(&self) -> oneshot::Receiver<()> {
        let (done, flushed) = oneshot::channel();
        self.hand_over(|work| work.flushes.push(done));
        flushed
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.hand_over(|work| work.closing = true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The writer thread: takes the pending work when it is due (commits at
/// once, rows written soon after their short pause, rows written behind in
/// chunks after theirs), writes it as one batch, and answers its commits
/// and flushes; until closed and empty.
fn write_batches(connection: &Connection, shared: &Shared) {
    // When the rows written behind were last all written.
    let mut behind_written = Instant::now();
    // Rows the WAL holds that the database file does not.
    let mut rows_since_checkpoint: u64 = 0;
    loop {
        let mut batch = {
            let mut work = lock(&shared.work);
            loop {
                if work.is_empty() && !work.closing {
                    if shared.healthy.load(Ordering::Acquire) && rows_since_checkpoint > 0 {
                        let (waited, timeout) = shared
                            .wake
                            .wait_timeout(work, IDLE_BEFORE_CHECKPOINT)
                            .unwrap_or_else(|poisoned| poisoned.into_inner());
                        work = waited;
                        if timeout.timed_out() && work.is_empty() {
                            drop(work);
                            checkpoint(connection, &mut rows_since_checkpoint);
                            work = lock(&shared.work);
                        }
                        continue;
                    }
                    if shared.healthy.load(Ordering::Acquire) {
                        work = shared.wake.wait(work).unwrap_or_else(|poisoned| poisoned.into_inner());
                        continue;
                    }
                    let (waited, timeout) = shared
                        .wake
                        .wait_timeout(work, RETRY_PAUSE)
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    work = waited;
                    if timeout.timed_out() && work.is_empty() {
                        break;
                    }
                    continue;
                }
                // Let more work gather until the first of it is due.
                let due = work.due(behind_written).unwrap_or_else(Instant::now);
                let left = due.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                work = shared
                    .wake
                    .wait_timeout(work, left)
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .0;
            }
            if work.is_empty() && work.closing {
                return;
            }
            let now = Instant::now();
            let batch = work.take_batch(now, now >= behind_written + BEHIND_PAUSE);
            if work.behind.is_empty() && !batch.behind.is_empty() {
                behind_written = now;
            }
            batch
        };
        let result = write(connection, &batch).map_err(|error| error.to_string());
        shared.healthy.store(result.is_ok(), Ordering::Release);
        if result.is_ok() {
            let rows = batch.commits.len() + batch.soon.len() + batch.behind.len();
            shared.rows_written.fetch_add(rows as u64, Ordering::Relaxed);
            rows_since_checkpoint += rows.max(1) as u64;
            let mut stored_seqs = lock(&shared.stored_seqs);
            for row in batch.rows() {
                let seq = stored_seqs.entry(row.job_id).or_default();
                *seq = (*seq).max(row.seq);
            }
            for id in &batch.removed {
                stored_seqs.remove(id);
            }
        }
        for (_, done) in batch.commits.drain(..) {
            let _ = done.send(result.clone());
        }
        if let Err(error) = &result {
            tracing::error!(%error, "the job database could not be written; retrying");
            // Keep what was written behind (unless something newer came),
            // the removals and the horizon, for the next batch.
            let mut work = lock(&shared.work);
            for (_, row) in mem::take(&mut batch.soon) {
                work.keep_soon(row);
            }
            for (_, row) in mem::take(&mut batch.behind) {
                work.keep_behind(row);
            }
            work.removed.append(&mut batch.removed);
            work.horizon = work.horizon.max(batch.horizon);
            drop(work);
            std::thread::sleep(RETRY_PAUSE);
        } else if !batch.removed.is_empty() {
            if let Err(error) = connection.execute_batch(&format!("PRAGMA incremental_vacuum({VACUUM_PAGES})")) {
                tracing::warn!(%error, "could not give freed database pages back");
            }
        }
        if rows_since_checkpoint >= CHECKPOINT_AFTER_ROWS {
            checkpoint(connection, &mut rows_since_checkpoint);
        }
        for done in batch.flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Copies the WAL into the database file (nothing else writes meanwhile,
/// so it copies every frame, and the next write starts the WAL over).
fn checkpoint(connection: &Connection, rows_since_checkpoint: &mut u64) {
    match connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        Ok(()) => {}
        // Tried again once more rows are written (the next batch will
        // tell whether the disk is full).
        Err(error) => tracing::warn!(%error, "the WAL could not be copied into the database"),
    }
    *rows_since_checkpoint = 0;
}

/// One batch in one transaction.
fn write(connection: &Connection, batch: &Work) -> rusqlite::Result<()> {
    let transaction = connection.unchecked_transaction()?;
    {
        let mut upsert = transaction.prepare_cached(schema::UPSERT_JOB)?;
        let mut update = transaction.prepare_cached(schema::UPDATE_JOB)?;
        for row in batch.rows() {
            let json = std::str::from_utf8(row.json()).expect("serde_json writes UTF-8");
            // Every state after a job's first follows a committed first one.
            if row.seq > 1 && row.secrets.is_none() {
                update.execute(rusqlite::params![
                    row.job_id.to_string(),
                    row.status,
                    row.seq as i64,
                    row.event_id as i64,
                    json,
                ])?;
                continue;
            }
            let secrets = row
                .secrets
                .as_ref()
                .map(|secrets| serde_json::to_string(&**secrets).expect("secrets serialise"));
            upsert.execute(rusqlite::params![
                row.job_id.to_string(),
                row.kind(),
                row.status,
                row.seq as i64,
                row.event_id as i64,
                json,
                secrets,
            ])?;
        }
        let mut delete = transaction.prepare_cached("DELETE FROM jobs WHERE id = ?1")?;
        for id in &batch.removed {
            delete.execute([id.to_string()])?;
        }
    }
    if let Some(horizon) = batch.horizon {
        schema::set_meta(&transaction, "horizon", horizon)?;
    }
    if batch.is_empty() {
        // A probe after a failure: does a write fit again?
        schema::set_meta(&transaction, "probed_at", chrono::Utc::now().timestamp() as u64)?;
    }
    transaction.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(job_id: JobId, seq: u64) -> Row {
        Row {
            job_id,
            status: "running",
            seq,
            event_id: 0,
            state: RowState::Committing {
                kind: Arc::from("demo"),
                json: Bytes::from_static(b"{}"),
            },
            secrets: None,
        }
    }

    #[test]
    fn urgent_work_goes_first_and_rows_written_behind_go_a_chunk_at_a_time() {
        let mut work = Work::default();
        for _ in 0..3 * BEHIND_CHUNK {
            work.keep_behind(row(JobId::generate(), 1));
        }
        let (done, _committed) = oneshot::channel();
        work.add_commit(row(JobId::generate(), 1), done);
        let now = Instant::now();

        let first = work.take_batch(now, true);
        assert_eq!((first.commits.len(), first.behind.len()), (1, 0));

        let not_due = work.take_batch(now, false);
        assert!(not_due.is_empty());
        assert_eq!(work.behind.len(), 3 * BEHIND_CHUNK);

        let mut chunks = 0;
        while !work.behind.is_empty() {
            assert_eq!(work.take_batch(now, true).behind.len(), BEHIND_CHUNK);
            chunks += 1;
        }
        assert_eq!(chunks, 3);
    }

    #[test]
    fn chunks_are_runs_of_neighbouring_ids_taken_round_every_job() {
        let mut work = Work::default();
        let ids: Vec<JobId> = (0..2 * BEHIND_CHUNK + 10).map(|_| JobId::generate()).collect();
        for id in &ids {
            work.keep_behind(row(*id, 1));
        }
        let now = Instant::now();
        let first: Vec<JobId> = work.take_batch(now, true).behind.into_keys().collect();
        assert_eq!(first, ids[..BEHIND_CHUNK]);
        // The first jobs publish again; the next chunks still come to the
        // later ones before going round.
        for id in &ids[..BEHIND_CHUNK] {
            work.keep_behind(row(*id, 2));
        }
        let second: Vec<JobId> = work.take_batch(now, true).behind.into_keys().collect();
        assert_eq!(second, ids[BEHIND_CHUNK..2 * BEHIND_CHUNK]);
        let third: Vec<JobId> = work.take_batch(now, true).behind.into_keys().collect();
        let mut expected = ids[2 * BEHIND_CHUNK..].to_vec();
        expected.extend_from_slice(&ids[..BEHIND_CHUNK - 10]);
        expected.sort();
        assert_eq!(third, expected);
    }

    #[test]
    fn rows_written_soon_wait_their_pause_unless_a_commit_takes_them() {
        let mut work = Work::default();
        work.keep_soon(row(JobId::generate(), 1));
        let handed_over = Instant::now();
        assert!(!work.is_urgent());
        assert!(work.due(handed_over).unwrap() <= handed_over + SOON_PAUSE);
        assert!(work.take_batch(handed_over, false).soon.is_empty());
        assert_eq!(work.take_batch(handed_over + SOON_PAUSE, false).soon.len(), 1);

        work.keep_soon(row(JobId::generate(), 1));
        let (done, _committed) = oneshot::channel();
        work.add_commit(row(JobId::generate(), 1), done);
        let batch = work.take_batch(Instant::now(), false);
        assert_eq!((batch.commits.len(), batch.soon.len()), (1, 1));
        assert!(work.is_empty() && work.due(Instant::now()).is_none());
    }

    #[test]
    fn a_commit_is_due_at_once() {
        let mut work = Work::default();
        work.keep_behind(row(JobId::generate(), 1));
        let (done, _committed) = oneshot::channel();
        work.add_commit(row(JobId::generate(), 1), done);
        let due = work.due(Instant::now()).unwrap();
        assert!(due <= Instant::now());
        assert_eq!(work.take_batch(due, false).commits.len(), 1);
    }

    #[test]
    fn a_commit_supersedes_the_jobs_pending_rows() {
        let mut work = Work::default();
        let (progressing, starting) = (JobId::generate(), JobId::generate());
        work.keep_behind(row(progressing, 3));
        work.keep_soon(row(starting, 1));
        let (done, _committed) = oneshot::channel();
        work.add_commit(row(progressing, 4), done);
        let (done, _committed) = oneshot::channel();
        work.add_commit(row(starting, 2), done);
        assert!(work.behind.is_empty() && work.soon.is_empty() && work.soon_since.is_none());
        assert_eq!(work.take_batch(Instant::now(), false).commits.len(), 2);
    }

    #[test]
    fn a_flush_takes_everything_at_once() {
        let mut work = Work::default();
        for _ in 0..2 * BEHIND_CHUNK {
            work.keep_behind(row(JobId::generate(), 1));
        }
        let (done, _flushed) = oneshot::channel();
        work.flushes.push(done);
        assert_eq!(work.take_batch(Instant::now(), false).behind.len(), 2 * BEHIND_CHUNK);
        assert!(work.is_empty());
    }

    #[test]
    fn a_job_keeps_its_newest_row_and_a_row_written_soon_stays_soon() {
        let mut work = Work::default();
        let job = JobId::generate();
        work.keep_behind(row(job, 3));
        work.keep_soon(row(job, 4));
        assert!(work.behind.is_empty());
        work.keep_behind(row(job, 5));
        work.keep_behind(row(job, 2));
        assert!(work.behind.is_empty());
        assert_eq!(work.soon[&job].seq, 5);
        let batch = work.take_batch(Instant::now() + SOON_PAUSE, false);
        assert_eq!(batch.soon[&job].seq, 5);
        assert!(work.is_empty());
    }
}
