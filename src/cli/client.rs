//! The HTTP side of the terminal client: the job resource as a client reads
//! it, the calls `submit` and `watch` make, and following one job's event
//! stream to its terminal event, resuming with `Last-Event-ID` when the
//! connection drops.
//!
//! It knows nothing about terminals: states are handed to a callback, and
//! [`Display`](super::display::Display) draws them. The SSE framing is
//! parsed by `eventsource-stream`; only the reconnect policy is ours,
//! because that crate is a parser, not an EventSource. We do not use the
//! server's `retry:` hint: `eventsource-stream` drops a block that carries
//! only `retry:` (as the server sends it), and the hint (3 s by default) is
//! tuned for browsers that reconnect forever, while this client gives up
//! after a few short tries and says so.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

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
    #[error("the event stream of job {id} broke off and {tries} reconnects failed; last error: {last}")]
    GaveUp {
        id: String,
        tries: usize,
        last: Box<ClientError>,
    },
}

impl ClientError {
    /// A reconnect may help: the network, or a server limit or restart.
    fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            ClientError::Problem { status, .. } => status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS,
            ClientError::Protocol { .. } | ClientError::GaveUp { .. } => false,
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
    pub fn new(base: Url) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
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
    pub async fn submit(&self, kind: &str, params: Option<&Value>) -> Result<(Job, Value), ClientError> {
        let url = self.url(&["v1", "jobs"]);
        let body = json!({ "kind": kind, "params": params });
        let response = self.send(self.http.post(url.clone()).json(&body), &url).await?;
        let raw: Value = response.json().await.map_err(|error| protocol(&url, error))?;
        let job = serde_json::from_value(raw.clone()).map_err(|error| protocol(&url, error))?;
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
            if failures == RECONNECT_BACKOFF.len() {
                return Err(ClientError::GaveUp {
                    id: id.to_owned(),
                    tries: failures,
                    last: Box::new(error),
                });
            }
            let asked = match &error {
                ClientError::Problem { body, .. } => body["retry_after"].as_u64().map(Duration::from_secs),
                _ => None,
            };
            let wait = asked.unwrap_or(RECONNECT_BACKOFF[failures]).min(MAX_RETRY_AFTER);
            failures += 1;
            tracing::debug!(job_id = id, ?wait, %error, "reconnecting");
            tokio::time::sleep(wait).await;
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
        if last_seq.map_or(true, |seq| job.seq > seq) {
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
