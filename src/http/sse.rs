//! Server-Sent Events: a job's stream (`/v1/jobs/{id}/events`) and the
//! all-jobs stream (`/v1/events`).
//!
//! A stream is a store subscription turned into a body of pre-encoded
//! frames: the snapshot first, then each published frame as it was encoded
//! once for every subscriber, so no JSON is built per subscriber. A
//! subscriber that lags behind the bounded channel is resynchronised to the
//! latest state and never shown an id twice. A job stream ends after the
//! job's terminal event, also at shutdown, which ends every job before it
//! closes streams (so a job stream waits on nothing but its job); the
//! all-jobs stream ends when the server shuts down. The body is written by
//! hand rather than with axum's `Sse` because `Sse` re-encodes every event
//! per subscriber.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::stream;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::broadcast::Receiver;
use tokio::time::{interval_at, Instant, Interval, MissedTickBehavior};

use super::query::{last_event_id, JobPath, QueryParams};
use super::AppState;
use crate::auth::Access;
use crate::error::ApiError;
use crate::jobs::labels::LabelFilter;
use crate::jobs::{JobId, JobStatus};
use crate::published::Published;

const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";
/// A job stream that takes a state at least `LATE` after it was published,
/// with at least `BEHIND` more queued behind it, is not keeping up: it skips
/// the queued states that are as stale, so its latency stays near `LATE`
/// however many subscribers share the server. The fresher ones that remain
/// go out together, in one write, which costs about what the newest alone
/// would. A reader that keeps up takes each state within a millisecond or
/// so, even when a job publishes a few back to back, so it sees every `seq`.
const BEHIND: usize = 2;
const LATE: Duration = Duration::from_millis(20);
/// The longest pacing interval a client may ask for.
const MAX_MIN_INTERVAL_MS: u64 = 60_000;

/// Counts open streams against the server's limit, and each principal's
/// against `--max-streams-per-owner`.
#[derive(Clone)]
pub struct StreamSlots {
    open: Arc<AtomicUsize>,
    max: usize,
    per_owner: Option<usize>,
    /// Open streams by owner, for owners with any.
    owners: OwnerStreams,
}

/// Open streams by owner (std mutex: short sections, no `.await` inside).
type OwnerStreams = Arc<Mutex<HashMap<Arc<str>, usize>>>;

/// One open stream's place; given back when the stream is dropped.
pub struct StreamSlot {
    open: Arc<AtomicUsize>,
    /// The owner it counts against, with a per-owner limit: boxed, so that
    /// every idle stream is no larger without one.
    owner: Option<Box<(OwnerStreams, Arc<str>)>>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        if let Some((owners, owner)) = self.owner.as_deref() {
            let mut owners = owners.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(count) = owners.get_mut(owner) {
                *count -= 1;
                if *count == 0 {
                    owners.remove(owner);
                }
            }
        }
    }
}

impl StreamSlots {
    pub fn new(max: usize, per_owner: Option<usize>) -> Self {
        StreamSlots {
            open: Arc::new(AtomicUsize::new(0)),
            max,
            per_owner,
            owners: Arc::default(),
        }
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// A place for one more stream of `owner` (None: no owner to count).
    fn try_take(&self, owner: Option<&Arc<str>>) -> Result<StreamSlot, ApiError> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(ApiError::Unavailable {
                detail: format!("the server has {} open streams, its limit", self.max),
                retry_after_seconds: 5,
            });
        }
        let mut slot = StreamSlot {
            open: self.open.clone(),
            owner: None,
        };
        if let (Some(max), Some(owner)) = (self.per_owner, owner) {
            let mut owners = self.owners.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let count = owners.entry(owner.clone()).or_insert(0);
            if *count >= max {
                if *count == 0 {
                    owners.remove(owner);
                }
                drop(owners);
                return Err(ApiError::TooManyRequests {
                    detail: format!("{max} streams are open for this owner, its limit"),
                    retry_after_seconds: 5,
                });
            }
            *count += 1;
            slot.owner = Some(Box::new((self.owners.clone(), owner.clone())));
        }
        Ok(slot)
    }
}

/// What every stream needs besides its subscription.
struct Common {
    app: AppState,
    keep_alive: Option<Interval>,
    _slot: StreamSlot,
}

impl Common {
    fn new(app: AppState, slot: StreamSlot) -> Self {
        let period = app.settings.keep_alive;
        let keep_alive = (!period.is_zero()).then(|| {
            let mut keep_alive = interval_at(Instant::now() + period, period);
            keep_alive.set_missed_tick_behavior(MissedTickBehavior::Delay);
            keep_alive
        });
        Common {
            app,
            keep_alive,
            _slot: slot,
        }
    }

    /// The `retry:` hint: the configured time plus up to a quarter more, so
    /// that clients dropped together do not all come back together.
    fn retry_frame(&self) -> Bytes {
        let base = self.app.settings.retry.as_millis() as u64;
        let jitter = match base / 4 {
            0 => 0,
            spread => RandomState::new().build_hasher().finish() % spread,
        };
        Bytes::from(format!("retry: {}\n\n", base + jitter))
    }

    fn sent(&self) {
        self.app.metrics.events_sent.inc();
    }
}

/// Resolves at the next keep-alive time, or never when keep-alives are off.
async fn keep_alive_tick(keep_alive: &mut Option<Interval>) {
    match keep_alive {
        Some(keep_alive) => {
            keep_alive.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn event_stream_response(body: Body) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// `GET /v1/jobs/{id}/events`.
pub async fn job_events(
    State(app): State<AppState>,
    access: Access,
    JobPath(id): JobPath,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let query = QueryParams::parse(query.as_deref());
    let resume_after = last_event_id(&headers, &query);
    let pacing = query
        .parsed::<u64>("min_interval_ms", "a whole number of milliseconds from 0 to 60000")?
        .filter(|&ms| ms > 0)
        .map(|ms| {
            if ms > MAX_MIN_INTERVAL_MS {
                return Err(ApiError::BadRequest(format!(
                    "min_interval_ms must be at most {MAX_MIN_INTERVAL_MS}, not {ms}"
                )));
            }
            Ok(Box::new(Pacing {
                interval: Duration::from_millis(ms),
                next_allowed: Instant::now(),
                held: None,
            }))
        })
        .transpose()?;
    let feed = app
        .registry
        .watch(id)
        .await
        .filter(|feed| access.may_see(&feed.snapshot))
        .ok_or_else(|| ApiError::JobNotFound(id.to_string()))?;
    let snapshot = feed.snapshot;
    // A position from the future counts as absent.
    let resume_after = resume_after.filter(|&seq| seq <= snapshot.seq);
    if resume_after == Some(snapshot.seq) && snapshot.status.is_terminal() {
        // The client has the terminal event: 204 tells EventSource to stop.
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    // A ticket's stream counts against the job's owner.
    let owner = access.subject().or(snapshot.owner.as_ref());
    let common = Common::new(app.clone(), app.streams.try_take(owner)?);
    let retry = common.retry_frame();
    let snapshot_frame = (snapshot.seq > resume_after.unwrap_or(0)).then(|| {
        common.sent();
        snapshot.job_snapshot_frame()
    });
    let state = JobStream {
        common,
        preamble: [Some(retry), snapshot_frame],
        receiver: feed.receiver.filter(|_| !snapshot.status.is_terminal()),
        last_seq: snapshot.seq,
        pacing,
    };
    let frames = stream::unfold(state, |mut state| async move {
        let frame = state.next_frame().await?;
        Some((Ok::<_, Infallible>(frame), state))
    });
    Ok(event_stream_response(Body::from_stream(frames)))
}

/// One job stream's state. It lives as long as the stream, however long
/// that stays idle, so it is kept small: a fixed preamble rather than a
/// queue, and the rarely used pacing state boxed.
struct JobStream {
    common: Common,
    /// The `retry:` hint, then the snapshot if the client lacks it: sent
    /// before any live frame.
    preamble: [Option<Bytes>; 2],
    /// None once the terminal event has been sent.
    receiver: Option<Receiver<Arc<Published>>>,
    last_seq: u64,
    /// Set when the client asked for `min_interval_ms`.
    pacing: Option<Box<Pacing>>,
}

/// At most one progress event per interval for one subscriber: states that
/// arrive sooner are held, each replacing the last, and the newest is sent
/// when the interval has passed. The terminal event is never held.
struct Pacing {
    interval: Duration,
    next_allowed: Instant,
    held: Option<Arc<Published>>,
}

impl JobStream {
    /// The frame to send for `job` if it is newer than what the client has
    /// (none when paced and held instead); drops the subscription once the
    /// terminal event is sent.
    fn offer(&mut self, job: Arc<Published>) -> Option<Bytes> {
        if job.seq <= self.last_seq {
            return None;
        }
        let terminal = job.status.is_terminal();
        if let Some(pacing) = &mut self.pacing {
            let now = Instant::now();
            if terminal {
                pacing.held = None;
            } else if now < pacing.next_allowed {
                pacing.held = Some(job);
                return None;
            } else {
                pacing.next_allowed = now + pacing.interval;
            }
        }
        self.last_seq = job.seq;
        self.common.sent();
        if terminal {
            self.receiver = None;
        }
        Some(job.job_frame.clone())
    }

    /// Sends the held state, if any, once its interval has passed.
    async fn held_due(pacing: &mut Option<Box<Pacing>>) -> Arc<Published> {
        match pacing.as_deref_mut() {
            Some(Pacing {
                next_allowed,
                held: held @ Some(_),
                ..
            }) => {
                // Boxed: only paced streams wait here, and a timer inline would
                // enlarge every stream's state.
                Box::pin(tokio::time::sleep_until(*next_allowed)).await;
                held.take().expect("matched Some")
            }
            _ => std::future::pending().await,
        }
    }

    async fn next_frame(&mut self) -> Option<Bytes> {
        if let Some(frame) = self.preamble.iter_mut().find_map(Option::take) {
            return Some(frame);
        }
        loop {
            let receiver = self.receiver.as_mut()?;
            let offered = tokio::select! {
                biased;
                received = receiver.recv() => match received {
                    Ok(mut job) => {
                        if receiver.len() >= BEHIND && job.published_at.elapsed() >= LATE {
                            // Not keeping up: skip the stale states, up to the
                            // first fresh one or the newest.
                            self.common.app.metrics.lag_resyncs.inc();
                            while job.published_at.elapsed() >= LATE {
                                match receiver.try_recv() {
                                    Ok(newer) => job = newer,
                                    Err(TryRecvError::Lagged(_)) => {}
                                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                                }
                            }
                        }
                        self.offer(job)
                    }
                    Err(RecvError::Lagged(_)) => {
                        // The states the channel still holds follow; the stale
                        // ones among them are skipped as above.
                        self.common.app.metrics.lag_resyncs.inc();
                        None
                    }
                    // The job was removed without our seeing its end.
                    Err(RecvError::Closed) => return None,
                },
                held = Self::held_due(&mut self.pacing), if self.pacing.is_some() => self.offer(held),
                _ = keep_alive_tick(&mut self.common.keep_alive) => return Some(Bytes::from_static(KEEP_ALIVE)),
            };
            if offered.is_some() {
                return offered;
            }
        }
    }
}

/// Which jobs an all-jobs stream shows.
struct Filter {
    kinds: Option<Vec<String>>,
    ids: Option<Vec<JobId>>,
    /// Every one must match.
    labels: Vec<LabelFilter>,
    statuses: Vec<JobStatus>,
    /// Jobs shown and not yet ended: followed to their terminal event even
    /// when they leave the status filter. Only used with a status filter.
    shown: HashSet<JobId>,
    /// Only this owner's jobs, for a `user`.
    owner: Option<Arc<str>>,
}

impl Filter {
    fn from_query(query: &QueryParams, access: &Access) -> Result<Self, ApiError> {
        Ok(Filter {
            kinds: query
                .has("kind")
                .then(|| query.all("kind").map(str::to_owned).collect()),
            // A well-formed id that names no job matches nothing; a
            // malformed one is a 400, as any malformed parameter.
            ids: query
                .has("id")
                .then(|| query.parsed_all("id", "a job id (a hyphenated UUID)"))
                .transpose()?,
            labels: query.label_filters()?,
            statuses: query.parsed_all(
                "status",
                "one of queued, running, cancelling, completed, failed, cancelled",
            )?,
            shown: HashSet::new(),
            owner: access.only_owner().cloned(),
        })
    }

    /// Whether to show this state of a job. `after_gap`: the state stands
    /// for changes the client may have missed (a resume or a resync), so a
    /// terminal state passes the status filter.
    fn admits(&mut self, job: &Published, after_gap: bool) -> bool {
        if self.owner.is_some() && job.owner != self.owner {
            return false;
        }
        if self
            .kinds
            .as_ref()
            .is_some_and(|kinds| !kinds.iter().any(|kind| **kind == *job.kind))
        {
            return false;
        }
        if self.ids.as_ref().is_some_and(|ids| !ids.contains(&job.job_id)) || !job.labels.matches_all(&self.labels) {
            return false;
        }
        if self.statuses.is_empty() {
            return true;
        }
        let terminal = job.status.is_terminal();
        if self.shown.contains(&job.job_id) {
            if terminal {
                self.shown.remove(&job.job_id);
            }
            return true;
        }
        if self.statuses.contains(&job.status) || (after_gap && terminal) {
            if !terminal {
                self.shown.insert(job.job_id);
            }
            return true;
        }
        false
    }
}

/// `GET /v1/events`.
pub async fn all_events(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let query = QueryParams::parse(query.as_deref());
    let filter = Filter::from_query(&query, &access)?;
    let resume_after = last_event_id(&headers, &query);
    let common = Common::new(app.clone(), app.streams.try_take(access.subject())?);
    let retry = common.retry_frame();
    let feed = app.registry.watch_all(resume_after).await;
    let mut state = AllStream {
        common,
        filter,
        pending: VecDeque::from([retry]),
        receiver: feed.receiver,
        position: feed.position,
    };
    state.queue_initial(&feed.initial, feed.resumed);
    let frames = stream::unfold(state, |mut state| async move {
        let frame = state.next_frame().await?;
        Some((Ok::<_, Infallible>(frame), state))
    });
    Ok(event_stream_response(Body::from_stream(frames)))
}

struct AllStream {
    common: Common,
    filter: Filter,
    pending: VecDeque<Bytes>,
    receiver: Receiver<Arc<Published>>,
    /// The last server-wide event id accounted for.
    position: u64,
}

impl AllStream {
    /// Queues the states a subscription starts with: `snapshot` events (or
    /// terminal events, on resume).
    fn queue_initial(&mut self, initial: &[Arc<Published>], resumed: bool) {
        for job in initial {
            if self.filter.admits(job, resumed) {
                self.pending.push_back(job.global_snapshot_frame());
                self.common.sent();
            }
        }
    }

    /// Queues, after a lag, the newest state of every job that changed since
    /// the connection's position, as the `progress` or terminal events they
    /// are; states the connection already accounted for are skipped, so ids
    /// keep increasing.
    fn queue_resync(&mut self, changed: &[Arc<Published>], accounted_up_to: u64) {
        for job in changed {
            if job.event_id > accounted_up_to && self.filter.admits(job, true) {
                self.pending.push_back(job.global_frame.clone());
                self.common.sent();
            }
        }
    }

    async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            if let Some(frame) = self.pending.pop_front() {
                return Some(frame);
            }
            tokio::select! {
                biased;
                received = self.receiver.recv() => match received {
                    Ok(job) => {
                        if job.event_id <= self.position {
                            continue;
                        }
                        self.position = job.event_id;
                        if self.filter.admits(&job, false) {
                            self.common.sent();
                            return Some(job.global_frame.clone());
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        self.common.app.metrics.lag_resyncs.inc();
                        // Everything that changed since our position, from a
                        // fresh subscription with no gap after it.
                        let accounted_up_to = self.position;
                        let feed = self.common.app.registry.watch_all(Some(accounted_up_to)).await;
                        self.receiver = feed.receiver;
                        self.position = feed.position;
                        self.queue_resync(&feed.initial, accounted_up_to);
                    }
                    Err(RecvError::Closed) => return None,
                },
                _ = keep_alive_tick(&mut self.common.keep_alive) => return Some(Bytes::from_static(KEEP_ALIVE)),
                _ = self.common.app.closing.cancelled() => return None,
            }
        }
    }
}
