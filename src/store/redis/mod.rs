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
//! applied it, so that whoever the caller tells next finds it on any
//! instance.
//!
//! While Redis cannot be reached the store is unavailable (`/readyz` 503,
//! creation 503); states already handed to the writer wait for it, and the
//! reader catches up from its last `gid` when it is back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, MultiplexedConnection, PubSub};
use redis::streams::{StreamId, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, AsyncConnectionConfig, Client, Script};
use tokio::sync::{mpsc, oneshot, watch, Notify};

use super::memory::MemoryStore;
use super::{stored_state, CancelRequestFor};
use super::{AllFeed, AppendError, Census, JobFeed, ListQuery, LostJob, NewState, Published, Store, StoreFuture};
use crate::jobs::{JobId, JobStatus};

/// Every key starts with this: the schema's version is in it.
const PREFIX: &str = "jc:v1:";
/// About how many changes the events stream keeps (`MAXLEN ~`).
const STREAM_LENGTH: u64 = 100_000;
/// How long the writer and the reader wait before trying Redis again.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
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

pub struct RedisStore {
    mirror: Arc<MemoryStore>,
    writes: mpsc::UnboundedSender<Write>,
    /// The highest `gid` the mirror has applied.
    applied: watch::Receiver<u64>,
    healthy: Arc<AtomicBool>,
    commands: ConnectionManager,
    /// Cancel requests for jobs this instance may run, until the engine
    /// takes them.
    cancel_requests: Mutex<Option<mpsc::UnboundedReceiver<CancelRequestFor>>>,
    /// Running jobs of dead instances, until the engine takes them.
    lost_jobs: Mutex<Option<mpsc::UnboundedReceiver<LostJob>>>,
    /// This process's instance id: a new one at every start.
    instance: Arc<str>,
    /// Told of each job that joins a shared queue, and of each job's end.
    queue_changed: Arc<Notify>,
    limits: SharedLimits,
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
        let mut commands = ConnectionManager::new(client.clone()).await.map_err(connect)?;
        let instance: Arc<str> = Arc::from(uuid::Uuid::now_v7().to_string());
        renew_lease(&mut commands, &instance, lease).await.map_err(connect)?;
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
        tokio::spawn(write_states(
            commands.clone(),
            pending,
            healthy.clone(),
            instance.clone(),
            limits,
        ));
        tokio::spawn(keep_lease(commands.clone(), instance.clone(), lease, healthy.clone()));
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
        let mut cancels = client.get_async_pubsub().await.map_err(connect)?;
        cancels.subscribe(key("cancel")).await.map_err(connect)?;
        let (relay, cancel_requests) = mpsc::unbounded_channel();
        tokio::spawn(relay_cancel_requests(client.clone(), cancels, relay));
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
            applied,
            healthy,
            commands,
            cancel_requests: Mutex::new(Some(cancel_requests)),
            lost_jobs: Mutex::new(Some(lost_jobs)),
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
                    mirror.mirror(state, gid);
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

/// Renews this instance's lease three times per lease, for as long as the
/// process runs.
async fn keep_lease(mut commands: ConnectionManager, instance: Arc<str>, lease: Duration, healthy: Arc<AtomicBool>) {
    loop {
        tokio::time::sleep(lease / 3).await;
        match renew_lease(&mut commands, &instance, lease).await {
            Ok(()) => healthy.store(true, Ordering::Release),
            Err(error) => {
                healthy.store(false, Ordering::Release);
                tracing::warn!(%error, "cannot renew this instance's lease");
            }
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

/// The writer: applies states in the order they were handed over. A new
/// job is refused at once while Redis is away; any other state waits for it.
async fn write_states(
    mut connection: ConnectionManager,
    mut writes: mpsc::UnboundedReceiver<Write>,
    healthy: Arc<AtomicBool>,
    instance: Arc<str>,
    limits: SharedLimits,
) {
    let apply = Script::new(include_str!("apply.lua"));
    let max_per_owner = limits
        .max_queued_per_owner
        .map(|max| max.to_string())
        .unwrap_or_default();
    while let Some(write) = writes.recv().await {
        // An owner's queued and running jobs are counted when a limit
        // applies to them.
        let owner_set = |name: &str, limit: Option<usize>| match (&write.owner, limit) {
            (Some(owner), Some(_)) => key(&format!("{name}:{owner}")),
            _ => String::new(),
        };
        let owner_queued = owner_set("queued_by", limits.max_queued_per_owner);
        let owner_running = owner_set("running_by", limits.max_running_per_owner);
        let answer = loop {
            let invoked = apply
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
                .arg(&*instance)
                .arg(write.lost.as_deref().unwrap_or(""))
                .arg(u8::from(write.shared_queue))
                .arg(&write.idempotency_key)
                .arg(limits.max_queued)
                .arg(&owner_queued)
                .arg(&max_per_owner)
                .arg(limits.max_finished)
                .arg(&owner_running)
                .invoke_async::<Vec<i64>>(&mut connection)
                .await;
            match invoked {
                Ok(answer) => {
                    healthy.store(true, Ordering::Release);
                    break Ok(answer);
                }
                Err(error) => {
                    healthy.store(false, Ordering::Release);
                    if write.follows == 0 {
                        break Err(AppendError::Unavailable(error.to_string()));
                    }
                    tracing::warn!(job_id = %write.job_id, %error, "a job's state waits for Redis");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        };
        let result = match answer {
            Err(unavailable) => Err(unavailable),
            Ok(answer) => match answer[..] {
                [1, gid, ended_beyond_kept] => {
                    if ended_beyond_kept > 0 {
                        // More ended jobs than the service keeps: the oldest go.
                        tokio::spawn(forget(connection.clone(), None, limits));
                    }
                    Ok(gid as u64)
                }
                [0, -3, _] => Err(key_taken(&mut connection, &write.idempotency_key).await),
                ref refused => Err(refusal(&write, refused)),
            },
        };
        match write.done {
            Some(done) => {
                let _ = done.send(result);
            }
            None => {
                if let Err(error) = result {
                    tracing::error!(job_id = %write.job_id, %error, "Redis refused a job's state");
                }
            }
        }
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

/// Relays the cancel requests of every instance to this one's engine, which
/// acts on those of the jobs it runs; subscribes again when cut off (a
/// request lost meanwhile is answered by the asking instance's wait).
async fn relay_cancel_requests(client: Client, mut subscribed: PubSub, relay: mpsc::UnboundedSender<CancelRequestFor>) {
    loop {
        let mut messages = subscribed.into_on_message();
        while let Some(message) = messages.next().await {
            let request = message
                .get_payload::<Vec<u8>>()
                .ok()
                .and_then(|payload| cancel_request_of(&payload));
            if let Some(request) = request {
                if relay.send(request).is_err() {
                    return;
                }
            }
        }
        tracing::warn!("the cancel channel was cut; subscribing again");
        subscribed = loop {
            tokio::time::sleep(RETRY_PAUSE).await;
            let Ok(mut again) = client.get_async_pubsub().await else {
                continue;
            };
            if again.subscribe(key("cancel")).await.is_ok() {
                break again;
            }
        };
    }
}

/// A cancel request as [`Store::ask_to_cancel`] writes it; None when malformed.
fn cancel_request_of(payload: &[u8]) -> Option<CancelRequestFor> {
    let request: serde_json::Value = serde_json::from_slice(payload).ok()?;
    Some(CancelRequestFor {
        id: request["id"].as_str()?.parse().ok()?,
        by: request["by"].as_str().map(Arc::from),
    })
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
    match state_of(&id, seq, &status, &kind, field("json")?) {
        Some(state) => {
            mirror.mirror(state, gid);
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
        tokio::spawn(forget(self.commands.clone(), Some(id), self.limits));
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
        let mut commands = self.commands.clone();
        let request = serde_json::json!({"id": id.to_string(), "by": by.as_deref()}).to_string();
        tokio::spawn(async move {
            let published: redis::RedisResult<i64> = Script::new(include_str!("cancel.lua"))
                .arg(PREFIX)
                .arg(id.to_string())
                .arg(request)
                .invoke_async(&mut commands)
                .await;
            if let Err(error) = published {
                tracing::warn!(job_id = %id, %error, "could not relay a cancel request");
            }
        });
    }

    fn cancel_asked(&self, id: JobId) -> StoreFuture<'_, Option<CancelRequestFor>> {
        let mut commands = self.commands.clone();
        StoreFuture::Waiting(Box::pin(async move {
            let request: redis::RedisResult<Option<Vec<u8>>> = commands.hget(key(&format!("job:{id}")), "cancel").await;
            match request {
                Ok(request) => cancel_request_of(&request?),
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
        self.healthy.load(Ordering::Acquire)
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
