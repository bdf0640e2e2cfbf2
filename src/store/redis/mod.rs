//! Several instances, one service: jobs in a Redis server they share.
//!
//! Redis holds the truth. Each job's latest state is a hash
//! (`jc:v1:job:{id}`: its JSON, `seq`, status and the server-wide event id,
//! `gid`); `jc:v1:jobs` lists the jobs by creation; every change goes, in
//! order, on the stream `jc:v1:events`, whose entry ids are `<gid>-0`. One
//! Lua script (`apply.lua`) is the only write of a state: a compare-and-set
//! on the stored `seq` and "not terminal" (the fence against a second
//! writer), the next `gid`, the hash and the stream entry in one atomic
//! step; a new job's idempotency key is claimed in the same step, and a
//! job's end joins the ended jobs (`jc:v1:ended`). Removal (`remove.lua`)
//! puts a `removed` entry on the stream, for a job whose retention ran out
//! and for the oldest ended jobs beyond `--max-finished`, whichever
//! instance ended them. A cancel request (`cancel.lua`) is kept in the
//! job's hash and published to every instance: the one that runs the job
//! acts on it, and one that takes the job from the queue as the request
//! goes by finds it there.
//!
//! Each instance keeps a mirror of every retained job in a [`MemoryStore`],
//! numbered by `gid` and fed by one reader of the stream (`XREAD BLOCK` from
//! the last `gid` it applied). Reads, job streams and the all-jobs stream
//! are answered from the mirror, with the rules of the single process, and
//! each instance receives each published state from Redis once, however
//! many of its clients watch it. States are written by one writer task per
//! instance, in order: a progress state without waiting; a first or
//! terminal state (a commit) answers once Redis has it and the mirror has
//! applied it. A read of a job, of the list or of a stream's snapshot first learns how far Redis
//! is (`GET gid`) and waits for the mirror to get there, so that what any
//! instance answered before is seen by the next read on any instance.
//!
//! While Redis cannot be reached the store is unavailable (`/readyz` 503,
//! creation 503); states already handed to the writer wait for it, and the
//! reader catches up from its last `gid` when it is back. A job whose
//! progress runs [`MAX_UNSTORED_STATES`] ahead of what Redis has stored is
//! held back meanwhile ([`Store::admit`]), so that the writer's queue holds
//! at most that many states per job, however long Redis is away.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{StreamId, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, AsyncConnectionConfig, Client, Script};
use tokio::sync::{mpsc, oneshot, watch, Notify};

use super::memory::MemoryStore;
use super::{stored_state, CancelRequestFor, JobSecrets, RelayedCall};
use super::{
    Admission, AllFeed, AppendError, Census, JobFeed, ListQuery, LostJob, NewState, Published, Store, StoreFuture,
    MAX_UNSTORED_STATES,
};
use crate::jobs::{JobId, JobStatus};
use relay::{Relay, Requests};

mod relay;

/// Every key starts with this: the schema's version is in it.
const PREFIX: &str = "jc:v1:";
/// About how many changes the events stream keeps (`MAXLEN ~`).
const STREAM_LENGTH: u64 = 100_000;
/// How long the writer and the reader wait before trying Redis again.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How long a command waits for Redis's answer.
const RESPONSE_WAIT: Duration = Duration::from_secs(5);
/// How long one blocking read of the events stream waits.
const READ_BLOCK: Duration = Duration::from_secs(5);
/// Stream entries read at once.
const READ_COUNT: usize = 512;

/// The limits that hold for the whole service, not for each instance: how
/// many jobs the shared queue holds at most, in all and of one owner, how
/// many jobs of one owner run at once, and how many ended jobs are kept,
/// for how long.
#[derive(Clone, Copy, Debug)]
pub struct SharedLimits {
    pub max_queued: usize,
    pub max_queued_per_owner: Option<usize>,
    pub max_running_per_owner: Option<usize>,
    pub max_finished: usize,
    pub retention: Duration,
}

impl SharedLimits {
    pub fn of(config: &crate::Config) -> Self {
        SharedLimits {
            max_queued: config.max_queued,
            max_queued_per_owner: config.max_queued_per_owner,
            max_running_per_owner: config.max_running_per_owner,
            max_finished: config.max_finished,
            retention: config.retention,
        }
    }
}

/// Why the store cannot be used at start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{url} is not a Redis URL: {source}")]
    Url { url: String, source: redis::RedisError },
    #[error("cannot reach Redis at {url}: {source}")]
    Connect { url: String, source: redis::RedisError },
}

/// Locks a mutex, whose data stays usable if a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The `seq` Redis has stored of each job this instance writes, until the
/// job ends here, elsewhere or is removed.
type StoredSeqs = Arc<Mutex<HashMap<JobId, u64>>>;

pub struct RedisStore {
    mirror: Arc<MemoryStore>,
    writes: mpsc::UnboundedSender<Write>,
    stored_seqs: StoredSeqs,
    /// The highest `gid` the mirror has applied.
    applied: watch::Receiver<u64>,
    healthy: Arc<AtomicBool>,
    lease: Arc<Lease>,
    /// Set once Redis is found to have lost changes the mirror applied.
    lost_data: Arc<OnceLock<String>>,
    commands: ConnectionManager,
    /// What this instance and the others tell each other.
    relay: Relay,
    /// Cancel requests and relayed calls for jobs this instance may run,
    /// until the engine takes them.
    cancel_requests: Mutex<Option<mpsc::UnboundedReceiver<CancelRequestFor>>>,
    relayed_calls: Mutex<Option<mpsc::UnboundedReceiver<RelayedCall>>>,
    /// Running jobs of dead instances, until the engine takes them.
    lost_jobs: Mutex<Option<mpsc::UnboundedReceiver<LostJob>>>,
    /// Jobs of this instance that another one ended, until the engine
    /// takes them.
    jobs_ended_elsewhere: Mutex<Option<mpsc::UnboundedReceiver<JobId>>>,
    /// This process's instance id: a new one at every start.
    instance: Arc<str>,
    /// Told of each job that joins a shared queue, and of each job's end.
    queue_changed: Arc<Notify>,
    limits: SharedLimits,
}

/// Until when this instance's lease is surely held: it was renewed then,
/// minus the time the renewal took. Past it (the process was paused, or
/// cut off from Redis) the instance may no longer write, and is not ready.
struct Lease {
    held_until: Mutex<Instant>,
}

impl Lease {
    fn renewed(&self, asked_at: Instant, lease: Duration) {
        *self.held_until.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = asked_at + lease;
    }

    fn is_held(&self) -> bool {
        Instant::now() < *self.held_until.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A state for the writer, with whoever waits for it.
struct Write {
    job_id: JobId,
    follows: u64,
    seq: u64,
    status: JobStatus,
    json: Bytes,
    kind: Arc<str>,
    secrets: String,
    /// For the end of a lost job: the dead instance that ran it.
    lost: Option<Arc<str>>,
    shared_queue: bool,
    owner: Option<Arc<str>>,
    /// For a first state: the Redis key of its idempotency key, which
    /// names the job once stored ('' for none).
    idempotency_key: String,
    /// When the state was published here (µs since the epoch).
    published_at_micros: i64,
    /// A commit's answer: the state's `gid`, or why it was not stored.
    done: Option<oneshot::Sender<Result<u64, AppendError>>>,
}

impl Write {
    fn of(state: &NewState) -> Write {
        Write {
            job_id: state.job_id,
            follows: state.follows,
            seq: state.seq,
            status: state.status,
            json: state.json.clone(),
            kind: state.kind.clone(),
            secrets: state
                .secrets
                .as_ref()
                .map(|secrets| serde_json::to_string(&**secrets).expect("secrets serialise"))
                .unwrap_or_default(),
            lost: None,
            shared_queue: state.shared_queue,
            owner: state.owner.clone(),
            idempotency_key: state
                .secrets
                .as_ref()
                .and_then(|secrets| secrets.idempotency_key.as_ref())
                .map(|named| {
                    let named = serde_json::to_string(named).expect("an owner and a key serialise");
                    key(&format!("idempotency:{named}"))
                })
                .unwrap_or_default(),
            published_at_micros: chrono::Utc::now().timestamp_micros(),
            done: None,
        }
    }
}

impl RedisStore {
    /// Connects to Redis at `url` as a new instance holding a `lease`,
    /// reads every retained job into the mirror, and starts the writer
    /// (which holds the shared queue to `limits`), the stream reader, the
    /// lease's renewal and the watch on the others'.
    pub async fn open(url: &str, lease: Duration, limits: SharedLimits) -> Result<Self, OpenError> {
        let client = Client::open(url).map_err(|source| OpenError::Url {
            url: url.to_owned(),
            source,
        })?;
        let connect = |source| OpenError::Connect {
            url: url.to_owned(),
            source,
        };
        // A batch of states on a busy machine may take longer than the
        // client's default half second to answer.
        let config = ConnectionManagerConfig::new().set_response_timeout(Some(RESPONSE_WAIT));
        let mut commands = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(connect)?;
        let instance: Arc<str> = Arc::from(uuid::Uuid::now_v7().to_string());
        let asked_at = Instant::now();
        renew_lease(&mut commands, &instance, lease).await.map_err(connect)?;
        let held = Arc::new(Lease {
            held_until: Mutex::new(asked_at + lease),
        });
        // Everything after this gid is read from the stream; what the load
        // below also sees is applied once (the mirror keeps the newer).
        let from: u64 = commands
            .get::<_, Option<u64>>(key("gid"))
            .await
            .map_err(connect)?
            .unwrap_or(0);
        let mirror = Arc::new(MemoryStore::numbered_elsewhere());
        load(&mut commands, &mirror).await.map_err(connect)?;
        let (applied_sender, applied) = watch::channel(from);
        let healthy = Arc::new(AtomicBool::new(true));
        let (writes, pending) = mpsc::unbounded_channel();
        let (ended_elsewhere, jobs_ended_elsewhere) = mpsc::unbounded_channel();
        let stored_seqs = StoredSeqs::default();
        tokio::spawn(write_states(
            commands.clone(),
            (pending, stored_seqs.clone()),
            healthy.clone(),
            instance.clone(),
            ended_elsewhere,
            limits,
        ));
        let lost_data = Arc::new(OnceLock::new());
        tokio::spawn(keep_lease(
            commands.clone(),
            instance.clone(),
            lease,
            (held.clone(), healthy.clone()),
            (applied.clone(), lost_data.clone()),
        ));
        let (lost, lost_jobs) = mpsc::unbounded_channel();
        tokio::spawn(watch_leases(
            commands.clone(),
            mirror.clone(),
            instance.clone(),
            lease,
            lost,
            limits,
        ));
        // Subscribed before anyone can ask: no request is missed.
        let (relay, requests) = Relay::start(client.clone(), commands.clone(), instance.clone())
            .await
            .map_err(connect)?;
        let Requests { cancels, calls } = requests;
        let queue_changed = Arc::new(Notify::new());
        let reader = Reader {
            mirror: mirror.clone(),
            applied: applied_sender,
            healthy: healthy.clone(),
            queue_changed: queue_changed.clone(),
        };
        tokio::spawn(follow_events(client, reader, from));
        Ok(RedisStore {
            mirror,
            writes,
            stored_seqs,
            applied,
            healthy,
            lease: held,
            lost_data,
            commands,
            relay,
            cancel_requests: Mutex::new(Some(cancels)),
            relayed_calls: Mutex::new(Some(calls)),
            lost_jobs: Mutex::new(Some(lost_jobs)),
            jobs_ended_elsewhere: Mutex::new(Some(jobs_ended_elsewhere)),
            instance,
            queue_changed,
            limits,
        })
    }

    /// Writes a state and answers once the mirror has it: a commit, or the
    /// end of a job of the `lost` instance.
    fn write_and_mirror(
        &self,
        state: NewState,
        lost: Option<Arc<str>>,
    ) -> StoreFuture<'_, Result<Arc<Published>, AppendError>> {
        let (done, answer) = oneshot::channel();
        let sent = self.writes.send(Write {
            lost,
            done: Some(done),
            ..Write::of(&state)
        });
        if sent.is_err() {
            return StoreFuture::ready(Err(AppendError::Unavailable("the Redis writer stopped".to_owned())));
        }
        StoreFuture::Waiting(Box::pin(async move {
            let gid = answer
                .await
                .unwrap_or_else(|_| Err(AppendError::Unavailable("the Redis writer stopped".to_owned())))?;
            self.mirrored(gid).await;
            Ok(Arc::new(Published::stamp(state, gid)))
        }))
    }

    /// Waits until the mirror has applied every change Redis has now: what
    /// another instance has answered is then known here too. Without Redis,
    /// the mirror answers as it is.
    async fn catch_up(&self) {
        if !self.is_available() {
            return;
        }
        let now: redis::RedisResult<Option<u64>> = self.commands.clone().get(key("gid")).await;
        if let Ok(Some(gid)) = now {
            self.mirrored(gid).await;
        }
    }

    /// Waits until the mirror has applied `gid`.
    async fn mirrored(&self, gid: u64) {
        let mut applied = self.applied.clone();
        // The reader never stops while the store lives.
        let _ = applied.wait_for(|&applied| applied >= gid).await;
    }
}

fn key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

/// A job's hash as read: `seq`, status, kind, JSON and `gid`.
type StoredRow = (
    Option<u64>,
    Option<String>,
    Option<String>,
    Option<Vec<u8>>,
    Option<u64>,
);

/// Reads every retained job into `mirror`.
async fn load(commands: &mut ConnectionManager, mirror: &MemoryStore) -> redis::RedisResult<()> {
    let ids: Vec<String> = commands.zrange(key("jobs"), 0, -1).await?;
    for chunk in ids.chunks(READ_COUNT) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.cmd("HMGET")
                .arg(key(&format!("job:{id}")))
                .arg(&["seq", "status", "kind", "json", "gid"]);
        }
        let rows: Vec<StoredRow> = pipe.query_async(commands).await?;
        for (id, row) in chunk.iter().zip(rows) {
            let (Some(seq), Some(status), Some(kind), Some(json), Some(gid)) = row else {
                continue;
            };
            match state_of(id, seq, &status, &kind, json) {
                Some(state) => {
                    mirror.mirror(state, gid, Instant::now());
                }
                None => tracing::error!(job_id = %id, "a job in Redis is malformed; left out"),
            }
        }
    }
    Ok(())
}

/// A stored state as the mirror takes it; None when malformed.
fn state_of(id: &str, seq: u64, status: &str, kind: &str, json: Vec<u8>) -> Option<NewState> {
    stored_state(
        id.parse().ok()?,
        Arc::from(kind),
        status.parse().ok()?,
        seq,
        Bytes::from(json),
    )
}

/// Sets this instance's lease (and lists the instance): alive for `lease`.
async fn renew_lease(commands: &mut ConnectionManager, instance: &str, lease: Duration) -> redis::RedisResult<()> {
    redis::pipe()
        .cmd("SET")
        .arg(key(&format!("instance:{instance}")))
        .arg(1)
        .arg("PX")
        .arg(lease.as_millis() as u64)
        .ignore()
        .sadd(key("instances"), instance)
        .ignore()
        .query_async(commands)
        .await
}

/// Renews this instance's lease three times per lease (a failed renewal is
/// tried again after a short pause), for as long as the
/// process runs.
async fn keep_lease(
    mut commands: ConnectionManager,
    instance: Arc<str>,
    lease: Duration,
    (held, healthy): (Arc<Lease>, Arc<AtomicBool>),
    (applied, lost_data): (watch::Receiver<u64>, Arc<OnceLock<String>>),
) {
    let mut wait = lease / 3;
    loop {
        tokio::time::sleep(wait).await;
        let asked_at = Instant::now();
        match renew_lease(&mut commands, &instance, lease).await {
            Ok(()) => {
                held.renewed(asked_at, lease);
                healthy.store(true, Ordering::Release);
                wait = lease / 3;
                notice_lost_data(&mut commands, &applied, &lost_data).await;
            }
            Err(error) => {
                // Not unready yet: the lease is held until it runs out.
                tracing::warn!(%error, "cannot renew this instance's lease; trying again");
                wait = RETRY_PAUSE;
            }
        }
    }
}

/// Notices a Redis that no longer has every change this instance's mirror
/// applied (it restarted without its latest writes: no AOF, or
/// `appendfsync everysec` and a crash). The mirror then holds jobs and
/// event ids Redis does not, and the stream's new entries come below what
/// it applied: this process can only be restarted, and says so.
async fn notice_lost_data(
    commands: &mut ConnectionManager,
    applied: &watch::Receiver<u64>,
    lost_data: &OnceLock<String>,
) {
    // Read first: the mirror never applies what Redis does not have yet, and
    // Redis's last event id only grows, unless it lost changes.
    let applied = *applied.borrow();
    let Ok(now) = commands.get::<_, Option<u64>>(key("gid")).await else {
        return;
    };
    let now = now.unwrap_or(0);
    if now < applied {
        let why = format!(
            "Redis has lost changes this instance has seen (its last event id is {now}, this instance applied \
             {applied}; it restarted without its latest writes): restart this instance"
        );
        if lost_data.set(why.clone()).is_ok() {
            tracing::error!("{why}");
        }
    }
}

/// Twice per lease, finds the instances whose lease ran out and reports
/// their running jobs (each live job, each time it is found, until one
/// instance has ended it); forgets a dead instance once it runs nothing,
/// and ended jobs whose retention ran out while the instance that ended
/// them was gone.
async fn watch_leases(
    mut commands: ConnectionManager,
    mirror: Arc<MemoryStore>,
    instance: Arc<str>,
    lease: Duration,
    lost: mpsc::UnboundedSender<LostJob>,
    limits: SharedLimits,
) {
    loop {
        tokio::time::sleep(lease / 2).await;
        forget(commands.clone(), None, limits).await;
        let found = find_lost_jobs(&mut commands, &mirror, &instance).await;
        match found {
            Ok(jobs) => {
                for job in jobs {
                    if lost.send(job).is_err() {
                        return;
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot check the other instances' leases"),
        }
    }
}

async fn find_lost_jobs(
    commands: &mut ConnectionManager,
    mirror: &MemoryStore,
    instance: &str,
) -> redis::RedisResult<Vec<LostJob>> {
    let mut lost = Vec::new();
    let instances: Vec<String> = commands.smembers(key("instances")).await?;
    for other in instances.into_iter().filter(|other| other != instance) {
        if commands.exists(key(&format!("instance:{other}"))).await? {
            continue;
        }
        let runs: Vec<String> = commands.smembers(key(&format!("runs:{other}"))).await?;
        if runs.is_empty() {
            let _: () = commands.srem(key("instances"), &other).await?;
            continue;
        }
        let runner: Arc<str> = Arc::from(other);
        for id in runs.iter().filter_map(|id| id.parse().ok()) {
            if let Some(job) = mirror.get(id).await.filter(|job| !job.status.is_terminal()) {
                lost.push(LostJob {
                    job,
                    runner: runner.clone(),
                });
            }
        }
    }
    Ok(lost)
}

/// The writer: sends the states handed to it, in order, in pipelined
/// batches of [`WRITE_BATCH`] (one round trip for all the states that
/// queued up during the last one), and answers each one's commit. A batch
/// whose answers were lost is sent again (each write of a state already
/// stored succeeds); the writes from the first one refused for a lapsed
/// lease wait for the lease's renewal. A job's first state is not retried:
/// its creator is refused at once. Each job's stored `seq` is kept in
/// `stored_seqs`.
async fn write_states(
    mut connection: ConnectionManager,
    (mut writes, stored_seqs): (mpsc::UnboundedReceiver<Write>, StoredSeqs),
    healthy: Arc<AtomicBool>,
    instance: Arc<str>,
    ended_elsewhere: mpsc::UnboundedSender<JobId>,
    limits: SharedLimits,
) {
    let apply = Script::new(include_str!("apply.lua"));
    let mut pending: VecDeque<Write> = VecDeque::new();
    loop {
        if pending.is_empty() {
            match writes.recv().await {
                Some(write) => pending.push_back(write),
                None => return,
            }
        }
        while pending.len() < WRITE_BATCH {
            match writes.try_recv() {
                Ok(write) => pending.push_back(write),
                Err(_) => break,
            }
        }
        let mut batch = redis::pipe();
        for write in &pending {
            batch.add_command(apply_command(apply.get_hash(), write, &instance, &limits));
        }
        let answers: redis::RedisResult<Vec<Vec<i64>>> = batch.query_async(&mut connection).await;
        let answers = match answers {
            Ok(answers) => answers,
            Err(error) => {
                if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) {
                    // A new or restarted Redis: load the script, send again.
                    let loaded: redis::RedisResult<String> = apply.prepare_invoke().load_async(&mut connection).await;
                    if loaded.is_ok() {
                        continue;
                    }
                }
                healthy.store(false, Ordering::Release);
                tracing::warn!(%error, states = pending.len(), "states wait for Redis");
                refuse_new_jobs(&mut pending, &error.to_string());
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        healthy.store(true, Ordering::Release);
        let lapsed = answers.iter().position(|answer| answer.as_slice() == [0, -6, 0]);
        let answered = lapsed.unwrap_or(pending.len());
        let mut forget_ended = false;
        let mut stored = Vec::with_capacity(answered);
        for (write, answer) in pending.drain(..answered).zip(answers) {
            let result = match answer[..] {
                [1, gid, ended_beyond_kept] => {
                    forget_ended |= ended_beyond_kept > 0;
                    Ok(gid as u64)
                }
                [0, -3, _] => Err(key_taken(&mut connection, &write.idempotency_key).await),
                ref refused => Err(refusal(&write, refused)),
            };
            // A job that ended (here or elsewhere) asks no more.
            let asks_on = result.is_ok() && !write.status.is_terminal();
            stored.push((write.job_id, asks_on.then_some(write.seq)));
            settle(write, result, &ended_elsewhere);
        }
        record_stored(&stored_seqs, stored);
        if forget_ended {
            // More ended jobs than the service keeps: the oldest go.
            tokio::spawn(forget(connection.clone(), None, limits));
        }
        if lapsed.is_some() {
            // This instance's lease ran out (it was paused, or cut off from
            // Redis; it is not ready meanwhile): it may write again once it
            // has renewed it, unless another instance ends its jobs first.
            tracing::warn!(
                states = pending.len(),
                "states wait for this instance's lease to be renewed"
            );
            refuse_new_jobs(&mut pending, "this instance's lease ran out");
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

/// Records the `seq` Redis now has of each job (None: the job asks no
/// more).
fn record_stored(stored_seqs: &StoredSeqs, stored: Vec<(JobId, Option<u64>)>) {
    let mut stored_seqs = lock(stored_seqs);
    for (id, seq) in stored {
        match seq {
            Some(seq) => {
                let stored = stored_seqs.entry(id).or_default();
                *stored = (*stored).max(seq);
            }
            None => {
                stored_seqs.remove(&id);
            }
        }
    }
}

/// How many states the writer sends in one round trip, at most.
const WRITE_BATCH: usize = 256;

/// The `EVALSHA` of `apply.lua` that writes `write` as `instance`, under
/// the service's `limits`.
fn apply_command(hash: &str, write: &Write, instance: &str, limits: &SharedLimits) -> redis::Cmd {
    // An owner's queued and running jobs are counted when a limit applies
    // to them.
    let owner_set = |name: &str, limit: Option<usize>| match (&write.owner, limit) {
        (Some(owner), Some(_)) => key(&format!("{name}:{owner}")),
        _ => String::new(),
    };
    let max_per_owner = limits
        .max_queued_per_owner
        .map(|max| max.to_string())
        .unwrap_or_default();
    let mut command = redis::cmd("EVALSHA");
    command
        .arg(hash)
        .arg(0)
        .arg(PREFIX)
        .arg(write.job_id.to_string())
        .arg(write.follows)
        .arg(write.seq)
        .arg(write.status.as_str())
        .arg(u8::from(write.status.is_terminal()))
        .arg(write.json.as_ref())
        .arg(&*write.kind)
        .arg(&write.secrets)
        .arg(STREAM_LENGTH)
        .arg(instance)
        .arg(write.lost.as_deref().unwrap_or(""))
        .arg(u8::from(write.shared_queue))
        .arg(&write.idempotency_key)
        .arg(limits.max_queued)
        .arg(owner_set("queued_by", limits.max_queued_per_owner))
        .arg(max_per_owner)
        .arg(limits.max_finished)
        .arg(owner_set("running_by", limits.max_running_per_owner))
        .arg(write.published_at_micros);
    command
}

/// Answers the creators of the pending new jobs that they are refused
/// (`why`), and leaves the other writes to be sent again.
fn refuse_new_jobs(pending: &mut VecDeque<Write>, why: &str) {
    pending.retain_mut(|write| {
        if write.follows != 0 {
            return true;
        }
        if let Some(done) = write.done.take() {
            let _ = done.send(Err(AppendError::Unavailable(why.to_owned())));
        }
        false
    });
}

/// Answers a write's commit (or logs a refused progress state).
fn settle(write: Write, result: Result<u64, AppendError>, ended_elsewhere: &mpsc::UnboundedSender<JobId>) {
    // A job another instance ended (this one's lease ran out) or runs:
    // this instance stops it (and says so once, not per refused state).
    let ended_elsewhere_too = write.lost.is_none()
        && write.follows != 0
        && matches!(
            &result,
            Err(AppendError::Conflict {
                stored: None | Some((_, true)),
                ..
            })
        );
    if ended_elsewhere_too {
        let _ = ended_elsewhere.send(write.job_id);
    }
    match (write.done, result) {
        (Some(done), result) => {
            let _ = done.send(result);
        }
        (None, Err(error)) if ended_elsewhere_too => {
            tracing::debug!(job_id = %write.job_id, %error, "Redis refused a state of a job ended elsewhere");
        }
        (None, Err(error)) => tracing::error!(job_id = %write.job_id, %error, "Redis refused a job's state"),
        (None, Ok(_)) => {}
    }
}

/// Why `apply.lua` refused `write`, from its answer.
fn refusal(write: &Write, answer: &[i64]) -> AppendError {
    match answer {
        [0, -4, _] => AppendError::QueueFull,
        [0, -5, _] => AppendError::OwnerQueueFull,
        [0, -2, _] => AppendError::Conflict {
            job_id: write.job_id,
            seq: write.seq,
            stored: None,
        },
        [0, stored, terminal] => AppendError::Conflict {
            job_id: write.job_id,
            seq: write.seq,
            stored: (*stored >= 0).then_some((*stored as u64, *terminal == 1)),
        },
        other => AppendError::Unavailable(format!("unexpected answer from Redis: {other:?}")),
    }
}

/// Forgets the ended job `id`, if given, the oldest ended jobs beyond the
/// most the service keeps, and those past their retention.
async fn forget(mut commands: ConnectionManager, id: Option<JobId>, limits: SharedLimits) {
    let removed: redis::RedisResult<i64> = Script::new(include_str!("remove.lua"))
        .arg(PREFIX)
        .arg(STREAM_LENGTH)
        .arg(limits.max_finished)
        .arg(id.map(|id| id.to_string()).unwrap_or_default())
        .arg(limits.retention.as_millis() as u64)
        .invoke_async(&mut commands)
        .await;
    if let Err(error) = removed {
        tracing::warn!(job_id = ?id, %error, "could not forget ended jobs in Redis");
    }
}

/// Why a new job whose idempotency key (the Redis key `name`) names
/// another job was not stored: that job, or, if it is gone meanwhile, a
/// reason to try again.
async fn key_taken(connection: &mut ConnectionManager, name: &str) -> AppendError {
    let named: redis::RedisResult<Option<String>> = connection.get(name).await;
    match named.ok().flatten().and_then(|id| id.parse().ok()) {
        Some(id) => AppendError::KeyTaken(id),
        None => AppendError::Unavailable("the idempotency key's job was forgotten meanwhile".to_owned()),
    }
}

/// Where the reader of the events stream puts what it reads.
struct Reader {
    mirror: Arc<MemoryStore>,
    /// The highest `gid` applied.
    applied: watch::Sender<u64>,
    healthy: Arc<AtomicBool>,
    /// Told of each new queued job, and of each job's end.
    queue_changed: Arc<Notify>,
}

/// The reader: applies every change on the events stream to the mirror, in
/// `gid` order, from `last` on; reconnects and goes on from where it was.
async fn follow_events(client: Client, reader: Reader, mut last: u64) {
    let Reader {
        mirror,
        applied,
        healthy,
        queue_changed,
    } = reader;
    // A blocking read holds its connection: one of its own, whose answers
    // may take as long as the read blocks.
    let config = AsyncConnectionConfig::new().set_response_timeout(Some(READ_BLOCK + Duration::from_secs(5)));
    let options = StreamReadOptions::default()
        .block(READ_BLOCK.as_millis() as usize)
        .count(READ_COUNT);
    let mut connection: Option<MultiplexedConnection> = None;
    loop {
        let reader = match &mut connection {
            Some(reader) => reader,
            None => match client.get_multiplexed_async_connection_with_config(&config).await {
                Ok(reader) => connection.insert(reader),
                Err(error) => {
                    healthy.store(false, Ordering::Release);
                    tracing::warn!(%error, "cannot reach Redis for the events stream; retrying");
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            },
        };
        let read: redis::RedisResult<Option<StreamReadReply>> = reader
            .xread_options(&[key("events")], &[format!("{last}-0")], &options)
            .await;
        match read {
            Ok(reply) => {
                for stream in reply.into_iter().flat_map(|reply| reply.keys) {
                    for entry in stream.ids {
                        if let Some((gid, queue_changed_here)) = apply_entry(&mirror, &entry) {
                            last = gid;
                            if queue_changed_here {
                                queue_changed.notify_one();
                            }
                        }
                    }
                }
                applied.send_replace(last);
            }
            Err(error) => {
                connection = None;
                healthy.store(false, Ordering::Release);
                tracing::warn!(%error, "the events stream was cut; reading again from where it was");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

/// A cancel request as [`Store::ask_to_cancel`] writes it; None when malformed.
fn cancel_request_of(request: &serde_json::Value) -> Option<CancelRequestFor> {
    Some(CancelRequestFor {
        id: request["id"].as_str()?.parse().ok()?,
        by: request["by"].as_str().map(Arc::from),
    })
}

/// The instant here of a time on a writer's clock (µs since the epoch): as
/// long ago as that time is before this clock's now, and now if it is not
/// (a writer whose clock is ahead).
fn published_at(micros: i64) -> Instant {
    let age = chrono::Utc::now().timestamp_micros().saturating_sub(micros).max(0) as u64;
    let now = Instant::now();
    now.checked_sub(Duration::from_micros(age)).unwrap_or(now)
}

/// Applies one stream entry to the mirror; answers its `gid`, and whether
/// an instance with a free slot should look at the shared queue.
fn apply_entry(mirror: &MemoryStore, entry: &StreamId) -> Option<(u64, bool)> {
    let gid: u64 = entry.id.split('-').next()?.parse().ok()?;
    let field = |name: &str| -> Option<Vec<u8>> { entry.get(name) };
    let id = String::from_utf8(field("id")?).ok()?;
    if field("removed").is_some() {
        if let Ok(job_id) = id.parse() {
            mirror.remove(job_id);
        }
        return Some((gid, false));
    }
    let seq: u64 = String::from_utf8(field("seq")?).ok()?.parse().ok()?;
    let status = String::from_utf8(field("status")?).ok()?;
    let kind = String::from_utf8(field("kind")?).ok()?;
    // A new queued job may be taken; so may a queued job whose owner's
    // running place a job's end has freed.
    let queue_changed = (seq == 1 && status == JobStatus::Queued.as_str())
        || status.parse().is_ok_and(|status: JobStatus| status.is_terminal());
    // As old as when its writer published it (a state read late, after a
    // cut or behind a busy reader, is as stale to a subscriber as it is).
    let published_at = field("at")
        .and_then(|at| String::from_utf8(at).ok()?.parse::<i64>().ok())
        .map_or_else(Instant::now, published_at);
    match state_of(&id, seq, &status, &kind, field("json")?) {
        Some(state) => {
            mirror.mirror(state, gid, published_at);
        }
        None => tracing::error!(job_id = %id, gid, "a change on the events stream is malformed; skipped"),
    }
    Some((gid, queue_changed))
}

impl Store for RedisStore {
    fn append(&self, state: NewState) -> Result<(), AppendError> {
        self.writes
            .send(Write::of(&state))
            .map_err(|_| AppendError::Unavailable("the Redis writer stopped".to_owned()))
    }

    fn commit(&self, state: NewState) -> StoreFuture<'_, Result<Arc<Published>, AppendError>> {
        self.write_and_mirror(state, None)
    }

    fn end_lost(&self, state: NewState, runner: Arc<str>) -> StoreFuture<'_, Result<Arc<Published>, AppendError>> {
        self.write_and_mirror(state, Some(runner))
    }

    fn take_lost_jobs(&self) -> Option<mpsc::UnboundedReceiver<LostJob>> {
        self.lost_jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }

    // What another instance has answered a moment ago (a job created, a
    // job's end) may not be in this mirror yet: a read, a listing, a new
    // stream and a resume point beyond the mirror wait until the mirror has
    // caught up with Redis (one round trip), so that no instance answers
    // older than one the client has already heard from.

    /// A consistent read: whatever any instance had answered before is
    /// seen (one round trip to learn how far Redis is, then the mirror).
    fn get(&self, id: JobId) -> StoreFuture<'_, Option<Arc<Published>>> {
        StoreFuture::Waiting(Box::pin(async move {
            self.catch_up().await;
            self.mirror.get(id).await
        }))
    }

    fn list<'a>(&'a self, query: &'a ListQuery) -> StoreFuture<'a, Vec<Arc<Published>>> {
        StoreFuture::Waiting(Box::pin(async move {
            self.catch_up().await;
            self.mirror.list(query).await
        }))
    }

    /// Like [`RedisStore::get`], the snapshot is consistent.
    fn subscribe(&self, id: JobId) -> StoreFuture<'_, Option<JobFeed>> {
        StoreFuture::Waiting(Box::pin(async move {
            self.catch_up().await;
            self.mirror.subscribe(id).await
        }))
    }

    fn subscribe_all(&self, after: Option<u64>) -> StoreFuture<'_, AllFeed> {
        StoreFuture::Waiting(Box::pin(async move {
            if after.is_some_and(|after| after > *self.applied.borrow()) {
                self.catch_up().await;
            }
            self.mirror.subscribe_all(after).await
        }))
    }

    fn remove(&self, id: JobId) {
        lock(&self.stored_seqs).remove(&id);
        tokio::spawn(forget(self.commands.clone(), Some(id), self.limits));
    }

    fn admit(&self, id: JobId, seq: u64) -> Admission {
        match lock(&self.stored_seqs).get(&id) {
            Some(&stored) if seq > stored + MAX_UNSTORED_STATES => Admission::HeldBack,
            Some(&stored) => Admission::Until(stored + MAX_UNSTORED_STATES),
            // Not written here yet, or no longer: nothing to wait for.
            None => Admission::Until(seq),
        }
    }

    fn census(&self) -> StoreFuture<'_, Census> {
        self.mirror.census()
    }

    fn queues_jobs(&self) -> bool {
        true
    }

    fn take_queued<'a>(&'a self, kinds: &'a [Arc<str>]) -> StoreFuture<'a, Option<Arc<Published>>> {
        StoreFuture::Waiting(Box::pin(async move {
            let take = Script::new(include_str!("take.lua"));
            let mut invocation = take.prepare_invoke();
            invocation.arg(PREFIX).arg(&*self.instance).arg(
                self.limits
                    .max_running_per_owner
                    .map(|max| max.to_string())
                    .unwrap_or_default(),
            );
            for kind in kinds {
                invocation.arg(&**kind);
            }
            let taken: redis::RedisResult<Option<(String, u64)>> =
                invocation.invoke_async(&mut self.commands.clone()).await;
            let (id, gid) = match taken {
                Ok(taken) => taken?,
                Err(error) => {
                    tracing::warn!(%error, "cannot take from the shared queue");
                    return None;
                }
            };
            self.mirrored(gid).await;
            self.mirror.get(id.parse().ok()?).await
        }))
    }

    fn queue_changed(&self) -> Option<Arc<Notify>> {
        Some(self.queue_changed.clone())
    }

    fn ask_to_cancel(&self, id: JobId, by: Option<Arc<str>>) {
        self.relay.ask_to_cancel(id, by);
    }

    fn relay_call(&self, id: JobId, call: serde_json::Value) -> StoreFuture<'_, Option<serde_json::Value>> {
        StoreFuture::Waiting(Box::pin(self.relay.call(id, call)))
    }

    fn take_jobs_ended_elsewhere(&self) -> Option<mpsc::UnboundedReceiver<JobId>> {
        self.jobs_ended_elsewhere
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }

    fn take_relayed_calls(&self) -> Option<mpsc::UnboundedReceiver<RelayedCall>> {
        self.relayed_calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }

    fn secrets(&self, id: JobId) -> StoreFuture<'_, Option<Arc<JobSecrets>>> {
        let mut commands = self.commands.clone();
        StoreFuture::Waiting(Box::pin(async move {
            let stored: Option<String> = commands.hget(key(&format!("job:{id}")), "secrets").await.ok().flatten();
            stored
                .filter(|stored| !stored.is_empty())
                .and_then(|stored| serde_json::from_str(&stored).ok())
                .map(Arc::new)
        }))
    }

    fn cancel_asked(&self, id: JobId) -> StoreFuture<'_, Option<CancelRequestFor>> {
        let mut commands = self.commands.clone();
        StoreFuture::Waiting(Box::pin(async move {
            let request: redis::RedisResult<Option<Vec<u8>>> = commands.hget(key(&format!("job:{id}")), "cancel").await;
            match request {
                Ok(request) => cancel_request_of(&serde_json::from_slice(&request?).ok()?),
                Err(error) => {
                    tracing::warn!(job_id = %id, %error, "cannot read whether a cancel was asked");
                    None
                }
            }
        }))
    }

    fn take_cancel_requests(&self) -> Option<mpsc::UnboundedReceiver<CancelRequestFor>> {
        self.cancel_requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }

    fn is_available(&self) -> bool {
        self.healthy.load(Ordering::Acquire) && self.lease.is_held() && self.lost_data.get().is_none()
    }

    fn broken(&self) -> Option<String> {
        self.lost_data.get().cloned()
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        let closed = self.mirror.close();
        let mut commands = self.commands.clone();
        StoreFuture::Waiting(Box::pin(async move {
            closed.await;
            // Gone at once rather than after a lease: it runs nothing now.
            let left: redis::RedisResult<()> = redis::pipe()
                .del(key(&format!("instance:{}", self.instance)))
                .ignore()
                .srem(key("instances"), &*self.instance)
                .ignore()
                .query_async(&mut commands)
                .await;
            if let Err(error) = left {
                tracing::warn!(%error, "could not leave the instances' list");
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn entry(gid: u64, id: JobId, seq: u64, at: Option<i64>) -> StreamId {
        let mut fields = vec![
            ("id", id.to_string()),
            ("seq", seq.to_string()),
            ("status", "running".to_owned()),
            ("kind", "demo".to_owned()),
            ("json", "{}".to_owned()),
        ];
        fields.extend(at.map(|at| ("at", at.to_string())));
        StreamId {
            id: format!("{gid}-0"),
            map: fields
                .into_iter()
                .map(|(name, value)| (name.to_owned(), redis::Value::BulkString(value.into_bytes())))
                .collect::<HashMap<_, _>>(),
            ..StreamId::default()
        }
    }

    #[tokio::test]
    async fn a_mirrored_state_is_as_old_as_when_its_writer_published_it() {
        let mirror = MemoryStore::numbered_elsewhere();
        let id = JobId::generate();
        let two_seconds_ago = chrono::Utc::now().timestamp_micros() - 2_000_000;
        apply_entry(&mirror, &entry(1, id, 1, Some(two_seconds_ago))).unwrap();
        let age = mirror.get(id).await.unwrap().published_at.elapsed();
        assert!(
            age >= Duration::from_secs(2) && age < Duration::from_secs(10),
            "{age:?}"
        );

        // A writer whose clock is ahead, and an entry without the time
        // (written by an older jobcast): published now.
        let in_an_hour = chrono::Utc::now().timestamp_micros() + 3_600_000_000;
        apply_entry(&mirror, &entry(2, id, 2, Some(in_an_hour))).unwrap();
        assert!(mirror.get(id).await.unwrap().published_at.elapsed() < Duration::from_secs(1));
        apply_entry(&mirror, &entry(3, id, 3, None)).unwrap();
        let latest = mirror.get(id).await.unwrap();
        assert_eq!(latest.seq, 3);
        assert!(latest.published_at.elapsed() < Duration::from_secs(1));
    }
}
