//! The HTTP side of the terminal client: the job resource as a client reads
//! it, the calls `submit`, `retry` and `watch` make, following one job's
//! event stream to its terminal event, and following every job with some
//! labels over the all-jobs stream until each has ended, resuming with
//! `Last-Event-ID` when the connection drops.
//!
//! It knows nothing about terminals: states are handed to a callback, and
//! [`Display`](super::display::Display) draws them. The SSE framing is
//! parsed by `eventsource-stream`; only the reconnect policy is ours,
//! because that crate is a parser, not an EventSource. We do not use the
//! server's `retry:` hint: `eventsource-stream` drops a block that carries
//! only `retry:` (as the server sends it), and the hint (3 s by default) is
//! tuned for browsers that reconnect forever, while this client gives up
//! after a few short tries and says so.

use std::collections::BTreeMap;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use super::ServerUrl;
use crate::jobs::JobStatus;

/// The waits before each reconnect of a dropped stream; after the last one
/// fails, `watch` gives up.
const RECONNECT_BACKOFF: [Duration; 5] = [
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

/// Longest wait honoured from a `Retry-After` header before a reconnect.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// How long connecting to the server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The job resource, as far as the client reads it (CONTRACT.md).
#[derive(Clone, Debug, Deserialize)]
pub struct Job {
    pub id: String,
    pub kind: String,
    #[serde(deserialize_with = "status_from_str")]
    pub status: JobStatus,
    pub seq: u64,
    pub progress: f64,
    pub stage: Option<Stage>,
    #[serde(default)]
    pub stages: Vec<Value>,
    pub message: Option<String>,
    pub rate: Option<f64>,
    pub eta_seconds: Option<f64>,
    #[serde(default)]
    pub result: Value,
    pub error: Option<JobErrorInfo>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub retry_of: Option<String>,
}

/// The current stage with its own counter.
#[derive(Clone, Debug, Deserialize)]
pub struct Stage {
    pub name: String,
    pub index: u64,
    pub count: u64,
    pub current: u64,
    pub total: Option<u64>,
    pub unit: Option<String>,
}

/// The `error` member of a failed or cancelled job.
#[derive(Clone, Debug, Deserialize)]
pub struct JobErrorInfo {
    pub code: String,
    pub message: String,
    pub stage: Option<String>,
    #[serde(default)]
    pub retryable: bool,
}

fn status_from_str<'de, D: Deserializer<'de>>(deserializer: D) -> Result<JobStatus, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(serde::de::Error::custom)
}

/// Why a request did not give the client what it needed. All of them end a
/// command with the client-error exit code.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the token cannot be sent in an HTTP header (it has control characters)")]
    BadToken,
    #[error("cannot reach the server at {url}: {source}")]
    Unreachable { url: Url, source: reqwest::Error },
    /// An error status, with the problem document's `detail` when there is one.
    #[error("{detail} ({status})")]
    Problem {
        status: StatusCode,
        detail: String,
        body: Value,
    },
    #[error("unexpected answer from {url}: {what}")]
    Protocol { url: Url, what: String },
    #[error("the event stream {of} broke off and {tries} reconnects failed; last error: {last}")]
    GaveUp {
        /// Whose stream: `of job …`, `of the jobs labelled …`.
        of: String,
        tries: usize,
        last: Box<ClientError>,
    },
    #[error("no job has the labels {0}")]
    NoLabelledJob(String),
}

impl ClientError {
    /// A reconnect may help: the network, or a server limit or restart.
    fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            ClientError::Problem { status, .. } => status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS,
            ClientError::BadToken
            | ClientError::Protocol { .. }
            | ClientError::GaveUp { .. }
            | ClientError::NoLabelledJob(_) => false,
        }
    }
}

/// What the cancel endpoint answered.
pub enum CancelOutcome {
    /// 200: the job is cancelled.
    Cancelled(Job),
    /// 409: the job had already ended otherwise; the problem's `job` member.
    AlreadyEnded(Job),
}

/// A jobcast server, reached over HTTP.
#[derive(Clone)]
pub struct Api {
    base: Url,
    http: reqwest::Client,
}

impl Api {
    /// A client of the server at `server.url`, sending its token, if any.
    pub fn new(server: &ServerUrl) -> Result<Self, ClientError> {
        let base = server.url.clone();
        let mut headers = HeaderMap::new();
        if let Some(token) = &server.token {
            let mut bearer =
                HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| ClientError::BadToken)?;
            bearer.set_sensitive(true);
            headers.insert(AUTHORIZATION, bearer);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("jobcast/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| ClientError::Unreachable {
                url: base.clone(),
                source,
            })?;
        Ok(Api { base, http })
    }

    /// The URL of `segments` under the base URL (which may have a path of
    /// its own, behind a proxy); each segment is percent-encoded.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// `POST /v1/jobs`: the created job, parsed and as sent.
    pub async fn submit(
        &self,
        kind: &str,
        params: Option<&Value>,
        labels: &[(String, String)],
        idempotency_key: Option<&str>,
    ) -> Result<(Job, Value), ClientError> {
        let url = self.url(&["v1", "jobs"]);
        let labels: BTreeMap<&str, &str> = labels
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        let body = json!({ "kind": kind, "params": params, "labels": labels });
        self.create(self.http.post(url.clone()).json(&body), idempotency_key, &url)
            .await
    }

    /// `POST /v1/jobs/{id}/retry`: the new job, parsed and as sent.
    pub async fn retry(&self, id: &str, idempotency_key: Option<&str>) -> Result<(Job, Value), ClientError> {
        let url = self.url(&["v1", "jobs", id, "retry"]);
        self.create(self.http.post(url.clone()), idempotency_key, &url).await
    }

    /// Sends a request that answers a new job.
    async fn create(
        &self,
        mut request: reqwest::RequestBuilder,
        idempotency_key: Option<&str>,
        url: &Url,
    ) -> Result<(Job, Value), ClientError> {
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let response = self.send(request, url).await?;
        let raw: Value = response.json().await.map_err(|error| protocol(url, error))?;
        let job = serde_json::from_value(raw.clone()).map_err(|error| protocol(url, error))?;
        Ok((job, raw))
    }

    /// `GET /v1/jobs/{id}`.
    pub async fn job(&self, id: &str) -> Result<Job, ClientError> {
        let url = self.url(&["v1", "jobs", id]);
        let response = self.send(self.http.get(url.clone()), &url).await?;
        read_job(response, &url).await
    }

    /// `POST /v1/jobs/{id}/cancel`, which answers once the job has stopped.
    pub async fn cancel(&self, id: &str) -> Result<CancelOutcome, ClientError> {
        let url = self.url(&["v1", "jobs", id, "cancel"]);
        let response = self
            .http
            .post(url.clone())
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: url.clone(),
                source,
            })?;
        if response.status() == StatusCode::CONFLICT {
            let problem: Value = response.json().await.map_err(|error| protocol(&url, error))?;
            let job = serde_json::from_value(problem["job"].clone()).map_err(|error| protocol(&url, error))?;
            return Ok(CancelOutcome::AlreadyEnded(job));
        }
        let response = check(response).await?;
        Ok(CancelOutcome::Cancelled(read_job(response, &url).await?))
    }

    /// Follows job `id` over `GET /v1/jobs/{id}/events` until its terminal
    /// state, which it returns. `on_state` sees every state the stream
    /// delivers, once each, in `seq` order. A stream that drops before the
    /// terminal event is resumed with `Last-Event-ID`, a few times; a `204`
    /// (nothing after the last state seen) is answered by fetching the job.
    pub async fn follow(&self, id: &str, mut on_state: impl FnMut(&Job)) -> Result<Job, ClientError> {
        let url = self.url(&["v1", "jobs", id, "events"]);
        let mut last_seq: Option<u64> = None;
        let mut connected = false;
        let mut failures = 0;
        loop {
            let error = match self.stream(&url, id, last_seq, &mut on_state).await {
                Ok(Followed::Ended(job)) => return Ok(*job),
                Ok(Followed::NoContent) => return self.already_ended(id, &url, last_seq, on_state).await,
                Ok(Followed::Dropped { seen }) => {
                    connected = true;
                    if seen.is_some() {
                        last_seq = seen;
                        failures = 0;
                    }
                    protocol(&url, "the stream ended before the job's terminal event")
                }
                // A server never reached is reported at once: nothing to resume.
                Err(error @ ClientError::Unreachable { .. }) if !connected => return Err(error),
                Err(error) if !error.is_transient() => return Err(error),
                Err(error) => error,
            };
            reconnect_wait(&mut failures, error, || format!("of job {id}")).await?;
        }
    }

    /// Follows every job that has all of `labels` over `GET /v1/events`
    /// until each has ended, and returns them, oldest first. `on_state`
    /// sees each job's newer states once each, in `seq` order, the jobs
    /// that had already ended included (their final state). A stream that
    /// drops is resumed with `Last-Event-ID`, a few times.
    ///
    /// After each (re)connect the jobs are also listed: the stream starts
    /// with the live jobs only, and does not replay jobs that ended while
    /// the client was away if the server can no longer tell (a restart).
    /// Listed only once the stream is open, no job falls in between.
    pub async fn follow_labelled(
        &self,
        labels: &[(String, String)],
        mut on_state: impl FnMut(&Job),
    ) -> Result<Vec<Job>, ClientError> {
        let mut url = self.url(&["v1", "events"]);
        url.query_pairs_mut().extend_pairs(label_filters(labels));
        let of = || {
            let labels: Vec<String> = label_filters(labels).map(|(_, filter)| filter).collect();
            labels.join(", ")
        };
        let mut jobs = BTreeMap::new();
        let mut last_event_id: Option<String> = None;
        let mut failures = 0;
        loop {
            let mut request = self.http.get(url.clone()).header("accept", "text/event-stream");
            if let Some(id) = &last_event_id {
                request = request.header("last-event-id", id.as_str());
            }
            let error = match self.send(request, &url).await {
                Ok(response) => {
                    for job in self.labelled_jobs(labels).await? {
                        take_newer(&mut jobs, job, &mut on_state);
                    }
                    if jobs.is_empty() {
                        return Err(ClientError::NoLabelledJob(of()));
                    }
                    let mut events = response.bytes_stream().eventsource();
                    while !jobs.values().all(|job: &Job| job.status.is_terminal()) {
                        let Some(Ok(event)) = events.next().await else {
                            break;
                        };
                        if !event.id.is_empty() {
                            last_event_id = Some(event.id);
                            failures = 0;
                        }
                        let job: Job = serde_json::from_str(&event.data).map_err(|error| protocol(&url, error))?;
                        take_newer(&mut jobs, job, &mut on_state);
                    }
                    if jobs.values().all(|job| job.status.is_terminal()) {
                        return Ok(jobs.into_values().collect());
                    }
                    protocol(&url, "the all-jobs stream ended")
                }
                // A server never reached is reported at once: nothing to resume.
                Err(error @ ClientError::Unreachable { .. }) if jobs.is_empty() => return Err(error),
                Err(error) if !error.is_transient() => return Err(error),
                Err(error) => error,
            };
            reconnect_wait(&mut failures, error, || format!("of the jobs labelled {}", of())).await?;
        }
    }

    /// Every job that has all of `labels`, newest first, page after page.
    async fn labelled_jobs(&self, labels: &[(String, String)]) -> Result<Vec<Job>, ClientError> {
        #[derive(Deserialize)]
        struct Page {
            jobs: Vec<Job>,
            next_cursor: Option<String>,
        }
        let mut jobs = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = self.url(&["v1", "jobs"]);
            {
                let mut query = url.query_pairs_mut();
                query.append_pair("limit", "1000");
                query.extend_pairs(label_filters(labels));
                if let Some(cursor) = &cursor {
                    query.append_pair("cursor", cursor);
                }
            }
            let response = self.send(self.http.get(url.clone()), &url).await?;
            let page: Page = response.json().await.map_err(|error| protocol(&url, error))?;
            jobs.extend(page.jobs);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(jobs),
            }
        }
    }

    /// The stream answered 204: nothing after `last_seq`, so the job has
    /// ended; its final state is fetched.
    async fn already_ended(
        &self,
        id: &str,
        url: &Url,
        last_seq: Option<u64>,
        mut on_state: impl FnMut(&Job),
    ) -> Result<Job, ClientError> {
        let job = self.job(id).await?;
        if !job.status.is_terminal() {
            let what = format!("the stream answered 204 but the job is {}", job.status.as_str());
            return Err(protocol(url, what));
        }
        if last_seq.is_none_or(|seq| job.seq > seq) {
            on_state(&job);
        }
        Ok(job)
    }

    /// One connection of [`Api::follow`]: reads the stream until the
    /// terminal event or until it drops.
    async fn stream(
        &self,
        url: &Url,
        id: &str,
        last_seq: Option<u64>,
        on_state: &mut impl FnMut(&Job),
    ) -> Result<Followed, ClientError> {
        let mut request = self.http.get(url.clone()).header("accept", "text/event-stream");
        if let Some(seq) = last_seq {
            request = request.header("last-event-id", seq.to_string());
        }
        let response = self.send(request, url).await?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(Followed::NoContent);
        }
        let mut events = response.bytes_stream().eventsource();
        let mut seen = None;
        while let Some(event) = events.next().await {
            let Ok(event) = event else {
                tracing::debug!(job_id = id, "event stream broke off");
                break;
            };
            let job: Job = serde_json::from_str(&event.data).map_err(|error| protocol(url, error))?;
            if job.id != id {
                return Err(protocol(url, format!("an event of job {}", job.id)));
            }
            if last_seq.max(seen).is_some_and(|last| job.seq <= last) {
                continue;
            }
            seen = Some(job.seq);
            on_state(&job);
            if job.status.is_terminal() {
                return Ok(Followed::Ended(Box::new(job)));
            }
        }
        Ok(Followed::Dropped { seen })
    }

    /// Sends `request`; any status but 2xx becomes [`ClientError::Problem`].
    async fn send(&self, request: reqwest::RequestBuilder, url: &Url) -> Result<reqwest::Response, ClientError> {
        let response = request.send().await.map_err(|source| ClientError::Unreachable {
            url: url.clone(),
            source,
        })?;
        check(response).await
    }
}

/// The query pairs `label=KEY=VALUE` of `labels`.
fn label_filters(labels: &[(String, String)]) -> impl Iterator<Item = (&'static str, String)> + '_ {
    labels.iter().map(|(key, value)| ("label", format!("{key}={value}")))
}

/// Keeps `job` if it is newer than the state held for it, and shows it.
fn take_newer(jobs: &mut BTreeMap<String, Job>, job: Job, on_state: &mut impl FnMut(&Job)) {
    if jobs.get(&job.id).is_some_and(|held| held.seq >= job.seq) {
        return;
    }
    on_state(&job);
    jobs.insert(job.id.clone(), job);
}

/// Waits before the next reconnect of a stream, as long as the server
/// asked (`Retry-After`) or the backoff says; gives up with `error` once
/// every reconnect has been tried.
async fn reconnect_wait(
    failures: &mut usize,
    error: ClientError,
    of: impl FnOnce() -> String,
) -> Result<(), ClientError> {
    if *failures == RECONNECT_BACKOFF.len() {
        return Err(ClientError::GaveUp {
            of: of(),
            tries: *failures,
            last: Box::new(error),
        });
    }
    let asked = match &error {
        ClientError::Problem { body, .. } => body["retry_after"].as_u64().map(Duration::from_secs),
        _ => None,
    };
    let wait = asked.unwrap_or(RECONNECT_BACKOFF[*failures]).min(MAX_RETRY_AFTER);
    *failures += 1;
    tracing::debug!(?wait, %error, "reconnecting");
    tokio::time::sleep(wait).await;
    Ok(())
}

/// How one connection of a followed stream ended.
enum Followed {
    Ended(Box<Job>),
    NoContent,
    /// The connection ended early; `seen` is the newest `seq` it delivered.
    Dropped {
        seen: Option<u64>,
    },
}

fn protocol(url: &Url, what: impl ToString) -> ClientError {
    ClientError::Protocol {
        url: url.clone(),
        what: what.to_string(),
    }
}

async fn read_job(response: reqwest::Response, url: &Url) -> Result<Job, ClientError> {
    let text = response.text().await.map_err(|error| protocol(url, error))?;
    serde_json::from_str(&text).map_err(|error| protocol(url, error))
}

/// Passes a 2xx response through; turns any other into a
/// [`ClientError::Problem`] with the problem document's `detail` (RFC 9457),
/// or the body's text when it is not one. A `Retry-After` in seconds is kept
/// in the body as `retry_after`, for the reconnect wait.
async fn check(response: reqwest::Response) -> Result<reqwest::Response, ClientError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = retry_after(response.headers());
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.contains("json"));
    let text = response.text().await.unwrap_or_default();
    let mut body = if is_json {
        serde_json::from_str(&text).unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    let detail = match body["detail"].as_str() {
        Some(detail) => detail.to_owned(),
        None if !text.trim().is_empty() => text.trim().to_owned(),
        None => status.canonical_reason().unwrap_or("error").to_owned(),
    };
    if let (Some(seconds), Value::Object(members)) = (retry_after, &mut body) {
        members.insert("retry_after".to_owned(), seconds.into());
    }
    Err(ClientError::Problem { status, detail, body })
}

fn retry_after(headers: &HeaderMap) -> Option<u64> {
    headers.get(RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()
}
