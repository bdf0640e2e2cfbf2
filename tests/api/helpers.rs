//! One `TestApp` per test: a real jobcast server on an ephemeral port, a
//! real HTTP client, and a real SSE parser (`eventsource-stream`).

#![allow(dead_code)]

use std::time::Duration;

use eventsource_stream::{Event, EventStream, Eventsource};
use futures_util::{Stream, StreamExt};
use jobcast::{App, Config, Kind};
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub shutdown: CancellationToken,
    pub server: Option<JoinHandle<std::io::Result<()>>>,
}

/// The defaults, on an ephemeral port, with quiet logs.
pub fn test_config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    }
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(test_config()).await
    }

    pub async fn spawn_with(config: Config) -> TestApp {
        Self::spawn_with_kinds(config, Vec::new()).await
    }

    /// A server running the demo kind and `kinds` besides.
    pub async fn spawn_with_kinds(config: Config, kinds: Vec<Kind>) -> TestApp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let kinds = std::iter::once(jobcast::kinds::demo::kind()).chain(kinds);
        let app = App::new(&config, kinds, shutdown.clone());
        let server = tokio::spawn(jobcast::serve(listener, app, shutdown.clone()));
        TestApp {
            base: format!("http://{addr}"),
            client: reqwest::Client::builder().build().unwrap(),
            shutdown,
            server: Some(server),
        }
    }

    /// A server running the demo kind and the kinds declared in `toml`, a
    /// kinds file whose relative paths are relative to `base_dir`.
    pub async fn spawn_with_kinds_file(config: Config, toml: &str, base_dir: &std::path::Path) -> TestApp {
        let settings = jobcast::kinds::file::FileSettings::for_cancel_grace(config.cancel_grace);
        let kinds = jobcast::kinds::file::parse(toml, base_dir, &settings).expect("the kinds file is valid");
        Self::spawn_with_kinds(config, kinds).await
    }

    /// A server started as the binary starts it (`jobcast::run`): the demo
    /// kind, and the kinds file that `config` names.
    pub async fn run(config: Config) -> TestApp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(jobcast::run(listener, config, shutdown.clone()));
        TestApp {
            base: format!("http://{addr}"),
            client: reqwest::Client::builder().build().unwrap(),
            shutdown,
            server: Some(server),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Starts a job of `kind` with `params` and returns the job as created.
    pub async fn create(&self, kind: &str, params: Value) -> Value {
        let response = self
            .client
            .post(self.url("/v1/jobs"))
            .json(&json!({ "kind": kind, "params": params }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "creating a {kind} job");
        response.json().await.unwrap()
    }

    /// Starts a demo job with `params` and returns the job as created.
    pub async fn create_demo(&self, params: Value) -> Value {
        self.create("demo", params).await
    }

    /// Polls the job until it has `status`; fails the test after WAIT.
    pub async fn wait_for_status(&self, id: &str, status: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let job = self.get_job(id).await;
            if job["status"] == status {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {id} never became {status}: {job}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Long-polls the job until it is terminal.
    pub async fn get_job_when_terminal(&self, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut job = self.get_job(id).await;
        while !matches!(job["status"].as_str(), Some("completed" | "failed" | "cancelled")) {
            assert!(tokio::time::Instant::now() < deadline, "job {id} did not end in time");
            let url = self.url(&format!("/v1/jobs/{id}?wait_seconds=5&after_seq={}", job["seq"]));
            job = self.client.get(url).send().await.unwrap().json().await.unwrap();
        }
        job
    }

    /// Long-polls the job until its `seq` passes `after_seq`.
    pub async fn get_job_after(&self, id: &str, after_seq: u64) -> Value {
        let url = self.url(&format!("/v1/jobs/{id}?wait_seconds=20&after_seq={after_seq}"));
        let job: Value = self.client.get(url).send().await.unwrap().json().await.unwrap();
        assert!(
            job["seq"].as_u64().unwrap() > after_seq,
            "job {id} did not change in time"
        );
        job
    }

    /// GET `path`, read as JSON whatever the status.
    pub async fn get_json(&self, path: &str) -> Value {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn get_job(&self, id: &str) -> Value {
        let response = self
            .client
            .get(self.url(&format!("/v1/jobs/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// POST /v1/jobs/{id}/cancel: status and body.
    pub async fn cancel(&self, id: &str) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(&format!("/v1/jobs/{id}/cancel")))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Opens an event stream at `path` with extra headers; the response is
    /// returned as is (any status).
    pub async fn open(&self, path: &str, headers: HeaderMap) -> reqwest::Response {
        self.client.get(self.url(path)).headers(headers).send().await.unwrap()
    }

    /// Subscribes to a job's stream and checks the response is a 200 stream.
    pub async fn subscribe(&self, id: &str) -> Sse {
        let response = self.open(&format!("/v1/jobs/{id}/events"), HeaderMap::new()).await;
        assert_eq!(response.status(), 200);
        Sse::new(response)
    }

    /// The value of a metric line `name` (with labels, if given) in /metrics.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| {
                let (key, value) = line.rsplit_once(' ')?;
                (key == name).then(|| value.parse().unwrap())
            })
            .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
    }

    /// Waits, polling, until `check` holds, or fails the test after WAIT.
    pub async fn eventually<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !check().await {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Cancels the shutdown token and waits for the server to return.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            tokio::time::timeout(WAIT, server)
                .await
                .expect("the server stops in bounded time")
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// One parsed event, its data decoded as JSON (Null for non-JSON data).
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub id: String,
    pub data: Value,
}

impl SseEvent {
    pub fn seq(&self) -> u64 {
        self.data["seq"].as_u64().expect("data has a seq")
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self.event.as_str(), "completed" | "failed" | "cancelled")
    }
}

type Frames = std::pin::Pin<Box<dyn Stream<Item = Result<bytes::Bytes, reqwest::Error>> + Send>>;

/// An open event stream, read with a real SSE parser.
pub struct Sse {
    events: EventStream<Frames>,
}

impl Sse {
    pub fn new(response: reqwest::Response) -> Self {
        let frames: Frames = Box::pin(response.bytes_stream());
        Sse {
            events: frames.eventsource(),
        }
    }

    /// The next event, None when the server ended the stream; fails the test
    /// after WAIT.
    pub async fn next(&mut self) -> Option<SseEvent> {
        let next = tokio::time::timeout(WAIT, self.events.next())
            .await
            .expect("an event arrives in time")?;
        let event: Event = next.expect("a well-formed event stream");
        Some(SseEvent {
            data: serde_json::from_str(&event.data).unwrap_or(Value::Null),
            event: event.event,
            id: event.id,
        })
    }

    /// Every event until the server ends the stream.
    pub async fn all(&mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}

/// A job's id.
pub fn id_of(job: &Value) -> String {
    job["id"].as_str().expect("a job has an id").to_owned()
}

/// Checks the stream invariants every subscriber is owed: ids match seqs,
/// seqs strictly increase, exactly one terminal event, and it is last.
pub fn assert_well_formed(events: &[SseEvent]) {
    assert!(!events.is_empty(), "no events");
    let mut last = 0;
    for event in events {
        assert_eq!(event.id, event.seq().to_string(), "id is the seq");
        assert!(
            event.seq() > last,
            "seqs strictly increase: {} after {last}",
            event.seq()
        );
        last = event.seq();
    }
    let terminal = events.iter().filter(|event| event.is_terminal()).count();
    assert_eq!(terminal, 1, "exactly one terminal event");
    assert!(events.last().unwrap().is_terminal(), "the terminal event is last");
}

/// A demo job of `steps` steps in one stage, `step_ms` apart.
pub fn demo(steps: u64, step_ms: u64) -> Value {
    json!({ "stages": [{ "name": "work", "weight": 1.0, "steps": steps }], "step_ms": step_ms })
}
