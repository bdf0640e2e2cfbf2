//! What more than one test file needs: one `TestApp` per test (a real
//! jobcast server on an ephemeral port, or three behind nginx in the
//! balanced deployment ([`crate::cluster`]), and a real HTTP client speaking
//! the chosen protocol), the one event-stream reader, the one problem+json
//! check, the shape of the job resource, and the jobs the tests run.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jobcast::config::StoreChoice;
use jobcast::{App, Config, JobContext, JobError, Kind, StageSpec, Transport};
use reqwest::header::{HeaderMap, HeaderValue, ALLOW, CONTENT_TYPE};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, Deployment};

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// The `jobcast` binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_jobcast");

/// A well-formed job id that names no job.
pub const UNKNOWN_ID: &str = "0193a8f2-6c1e-7c3a-9d2b-5f0e4a1b2c3d";

// ------------------------------------------------------------ The server

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub shutdown: CancellationToken,
    /// The server, or each instance of the cluster.
    pub servers: Vec<JoinHandle<std::io::Result<()>>>,
    /// What `client` speaks.
    pub protocol: Protocol,
    /// The server's certificate, when it speaks TLS.
    pub cert: Option<TestCert>,
    /// In the balanced deployment: Redis, the instances and nginx, which
    /// `base` points at.
    pub cluster: Option<Cluster>,
}

/// The defaults, on an ephemeral port, with quiet logs.
pub fn test_config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        store: StoreChoice::Memory,
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

    /// A server running the demo kind and `kinds` besides, and a client
    /// speaking the suite's protocol ([`Protocol::of_suite`]) to it.
    pub async fn spawn_with_kinds(config: Config, kinds: Vec<Kind>) -> TestApp {
        Self::spawn_over(Protocol::of_suite(), config, kinds).await
    }

    /// A server running the demo kind and `kinds` besides, and a client
    /// speaking `protocol` to it; in the balanced deployment, three such
    /// servers behind nginx.
    pub async fn spawn_over(protocol: Protocol, config: Config, kinds: Vec<Kind>) -> TestApp {
        let serve = move |listener: TcpListener, config: Config, shutdown: CancellationToken| {
            let kinds = std::iter::once(jobcast::kinds::demo::kind()).chain(kinds.clone());
            async move {
                let transport = Transport::from_config(&config).expect("the test certificate is usable");
                let service = App::new(&config, kinds, shutdown.clone())
                    .await
                    .expect("the service starts");
                jobcast::serve_with(listener, service, transport, shutdown).await
            }
        };
        TestApp::start(protocol, config, serve).await
    }

    /// A client speaking `protocol` to `config` served by `serve`: on a
    /// listener of its own, or in the balanced deployment by each instance
    /// of a cluster, with nginx in front.
    async fn start<F, Fut>(protocol: Protocol, config: Config, serve: F) -> TestApp
    where
        F: Fn(TcpListener, Config, CancellationToken) -> Fut,
        Fut: Future<Output = std::io::Result<()>> + Send + 'static,
    {
        let shutdown = CancellationToken::new();
        match Deployment::of_suite() {
            Deployment::Single => {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let mut app = TestApp::new(protocol, listener.local_addr().unwrap(), shutdown.clone());
                let config = app.configure(config);
                app.servers.push(tokio::spawn(serve(listener, config, shutdown)));
                app
            }
            Deployment::Balanced => {
                assert_eq!(
                    protocol,
                    Protocol::Http1,
                    "the balanced deployment speaks plain HTTP/1.1 (a test of another protocol runs on one process)"
                );
                let (cluster, servers) =
                    Cluster::start(config, |listener, config| serve(listener, config, shutdown.clone())).await;
                let mut app = TestApp::new(protocol, cluster.nginx.address(), shutdown);
                app.servers = servers;
                app.cluster = Some(cluster);
                app
            }
        }
    }

    /// A client speaking `protocol` to the server at `addr`, with a
    /// certificate made for it if `protocol` needs TLS.
    fn new(protocol: Protocol, addr: SocketAddr, shutdown: CancellationToken) -> TestApp {
        let cert = protocol.is_tls().then(TestCert::new);
        let scheme = if protocol.is_tls() { "https" } else { "http" };
        TestApp {
            base: format!("{scheme}://{addr}"),
            client: build_client(protocol, cert.as_ref(), HeaderMap::new()),
            shutdown,
            servers: Vec::new(),
            protocol,
            cert,
            cluster: None,
        }
    }

    /// Another client of this server, sending `headers` with every request.
    pub fn client_with(&self, headers: HeaderMap) -> reqwest::Client {
        build_client(self.protocol, self.cert.as_ref(), headers)
    }

    /// `config`, with this app's certificate if it has one. Over HTTP/2,
    /// the client's one connection may carry any number of streams (unless
    /// the test chose a limit): each stream of a test written for HTTP/1.1
    /// had a connection of its own, and the limits under test (such as
    /// `--max-streams`) must be what refuses a stream, not the client
    /// queueing it.
    fn configure(&self, config: Config) -> Config {
        let http2_max_streams = match self.protocol.version() {
            reqwest::Version::HTTP_2 if config.http2_max_streams == Config::default().http2_max_streams => u32::MAX,
            _ => config.http2_max_streams,
        };
        Config {
            tls_cert: self.cert.as_ref().map(|cert| cert.cert.clone()),
            tls_key: self.cert.as_ref().map(|cert| cert.key.clone()),
            http2_max_streams,
            ..config
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
    /// kind, and the kinds file that `config` names. Plain HTTP/1.1 whatever
    /// the suite's protocol: its tests run other programs against it (the
    /// example worker, `jobcast submit`), which would not trust the test
    /// certificate.
    pub async fn run(config: Config) -> TestApp {
        TestApp::start(Protocol::Http1, config, jobcast::run).await
    }

    /// A client of a server this test runs some other way (a child
    /// process), over plain HTTP/1.1 and without keeping connections, so
    /// that a restarted server is asked afresh.
    pub fn client_of(base: String) -> TestApp {
        TestApp {
            base,
            client: reqwest::Client::builder()
                .http1_only()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            shutdown: CancellationToken::new(),
            servers: Vec::new(),
            protocol: Protocol::Http1,
            cert: None,
            cluster: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// POST /v1/jobs with `body`, asserting 202; returns the job as created.
    pub async fn create_job(&self, body: &Value) -> Value {
        let response = send(self.client.post(self.url("/v1/jobs")).json(body)).await;
        assert_eq!(response.status(), 202, "creating {body}");
        response.json().await.unwrap()
    }

    /// Starts a job of `kind` with `params` and returns the job as created.
    pub async fn create(&self, kind: &str, params: Value) -> Value {
        self.create_job(&json!({ "kind": kind, "params": params })).await
    }

    /// Starts a demo job with `params` and returns the job as created.
    pub async fn create_demo(&self, params: Value) -> Value {
        self.create("demo", params).await
    }

    /// Starts a demo job with `params` and `labels`; returns its id.
    pub async fn create_labelled(&self, params: Value, labels: Value) -> String {
        id_of(
            &self
                .create_job(&json!({ "kind": "demo", "params": params, "labels": labels }))
                .await,
        )
    }

    /// POST /v1/jobs/{id}/retry with no body.
    pub async fn retry(&self, id: &str) -> reqwest::Response {
        send(self.client.post(self.url(&format!("/v1/jobs/{id}/retry")))).await
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
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {id} did not end in time: {job}"
            );
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
        send(self.client.get(self.url(path))).await.json().await.unwrap()
    }

    pub async fn get_job(&self, id: &str) -> Value {
        let response = send(self.client.get(self.url(&format!("/v1/jobs/{id}")))).await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// POST /v1/jobs/{id}/cancel: status and body.
    pub async fn cancel(&self, id: &str) -> (u16, Value) {
        let response = send(self.client.post(self.url(&format!("/v1/jobs/{id}/cancel")))).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Opens an event stream at `path` with extra headers; the response is
    /// returned as is (any status).
    pub async fn open(&self, path: &str, headers: HeaderMap) -> reqwest::Response {
        send(self.client.get(self.url(path)).headers(headers)).await
    }

    /// Opens an event stream at `path` and checks the response is a 200 stream.
    pub async fn stream(&self, path: &str, headers: HeaderMap) -> Sse {
        let response = self.open(path, headers).await;
        assert_eq!(response.status(), 200, "{path} answers a stream");
        Sse::new(response)
    }

    /// Subscribes to a job's stream and checks the response is a 200 stream.
    pub async fn subscribe(&self, id: &str) -> Sse {
        self.stream(&format!("/v1/jobs/{id}/events"), HeaderMap::new()).await
    }

    /// The value of a metric line `name` (with labels, if given) in
    /// /metrics: the service's. In the balanced deployment, each instance
    /// counts its own events, streams, slots and tasks, so the service's
    /// are their sum; but the jobs held (by status, queued, in all) are
    /// those of the store every instance mirrors whole: the value all
    /// instances report, or NaN while they differ.
    pub async fn metric(&self, name: &str) -> f64 {
        let Some(cluster) = &self.cluster else {
            return metric_at(&self.client, &self.base, name).await;
        };
        let mut values = Vec::new();
        for instance in &cluster.instances {
            values.push(metric_at(&self.client, &format!("http://{instance}"), name).await);
        }
        if name.starts_with("jobcast_jobs{") || ["jobcast_jobs_queued", "jobcast_jobs_in_memory"].contains(&name) {
            let first = values[0];
            if values.iter().all(|&value| value == first) {
                first
            } else {
                f64::NAN
            }
        } else {
            values.iter().sum()
        }
    }

    /// `jobcast_job_tasks` of the service while no job runs: checked to be
    /// only the retention reaper on one process (on Redis, each instance
    /// also runs its shared queue's taker, its watch on the other
    /// instances' jobs and its cancel relay).
    pub async fn idle_job_tasks(&self) -> f64 {
        let idle = self.metric("jobcast_job_tasks").await;
        if self.cluster.is_none() {
            assert_eq!(idle, 1.0, "only the reaper runs on an idle server");
        }
        idle
    }

    /// For a test about a server with `max_running` running slots: in the
    /// balanced deployment, where each instance runs up to `max_running`
    /// jobs, jobs that wait a minute take the slots of all instances but
    /// one's worth, so that the service has `max_running` free slots, as
    /// one process has. Answers those jobs' ids (none on one process).
    pub async fn take_extra_running_slots(&self, max_running: usize) -> Vec<String> {
        self.take_extra_running_slots_as(&self.client, max_running).await
    }

    /// [`TestApp::take_extra_running_slots`], with jobs that `client`
    /// creates (with its credentials).
    pub async fn take_extra_running_slots_as(&self, client: &reqwest::Client, max_running: usize) -> Vec<String> {
        let extra = self
            .cluster
            .as_ref()
            .map_or(0, |cluster| (cluster.instances.len() - 1) * max_running);
        let mut ids = Vec::new();
        for _ in 0..extra {
            let body = json!({ "kind": "demo", "params": long_wait() });
            let created = send(client.post(self.url("/v1/jobs")).json(&body)).await;
            assert_eq!(created.status(), 202, "a job taking a running slot");
            let id = id_of(&created.json().await.unwrap());
            let path = self.url(&format!("/v1/jobs/{id}"));
            self.eventually("the job taking a slot to run", || async {
                let job: Value = send(client.get(&path)).await.json().await.unwrap();
                job["status"] == "running"
            })
            .await;
            ids.push(id);
        }
        ids
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

    /// Cancels the shutdown token and waits for the server (every
    /// instance) to return.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        for server in std::mem::take(&mut self.servers) {
            tokio::time::timeout(WAIT, server)
                .await
                .expect("the server stops in bounded time")
                .unwrap()
                .unwrap();
        }
    }
}

/// The value of a metric line `name` in the /metrics of the server at `base`.
async fn metric_at(client: &reqwest::Client, base: &str, name: &str) -> f64 {
    let text = send(client.get(format!("{base}/metrics"))).await.text().await.unwrap();
    text.lines()
        .find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            (key == name).then(|| value.parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

/// A client speaking `protocol`, trusting `cert`, sending `headers` always.
fn build_client(protocol: Protocol, cert: Option<&TestCert>, headers: HeaderMap) -> reqwest::Client {
    let mut client = reqwest::Client::builder().default_headers(headers);
    if let Some(cert) = cert {
        client = client.add_root_certificate(reqwest::Certificate::from_pem(cert.pem.as_bytes()).unwrap());
    }
    client = match protocol {
        Protocol::Http1 | Protocol::Http1Tls => client.http1_only(),
        Protocol::Http2Tls | Protocol::Http2Prior => client.http2_prior_knowledge(),
    };
    client.build().unwrap()
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// How the tests' client speaks to the server.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Protocol {
    /// Plain HTTP/1.1.
    Http1,
    /// HTTPS, HTTP/1.1 chosen by ALPN.
    Http1Tls,
    /// HTTPS, HTTP/2 chosen by ALPN: what browsers speak.
    Http2Tls,
    /// Plain HTTP/2 with prior knowledge (h2c), as a proxy may speak it.
    Http2Prior,
}

/// The variable that chooses the protocol of the whole suite.
pub const PROTOCOL_VARIABLE: &str = "API_TEST_PROTOCOL";

impl Protocol {
    /// The protocol the suite's tests speak unless they choose one:
    /// `API_TEST_PROTOCOL` is `http1` (the default), `http1-tls`, `h2` (over
    /// TLS, as browsers speak it) or `h2c` (prior knowledge). CI runs the
    /// suite once with each of `http1`, `h2` and `h2c`.
    pub fn of_suite() -> Protocol {
        match std::env::var(PROTOCOL_VARIABLE).as_deref() {
            Err(_) | Ok("" | "http1") => Protocol::Http1,
            Ok("http1-tls") => Protocol::Http1Tls,
            Ok("h2") => Protocol::Http2Tls,
            Ok("h2c") => Protocol::Http2Prior,
            Ok(other) => panic!("{PROTOCOL_VARIABLE}={other}: not http1, http1-tls, h2 or h2c"),
        }
    }

    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Http1Tls | Protocol::Http2Tls)
    }

    /// The HTTP version of this protocol's responses.
    pub fn version(self) -> reqwest::Version {
        match self {
            Protocol::Http1 | Protocol::Http1Tls => reqwest::Version::HTTP_11,
            Protocol::Http2Tls | Protocol::Http2Prior => reqwest::Version::HTTP_2,
        }
    }
}

/// A self-signed certificate for 127.0.0.1 and `localhost`, as PEM files
/// in a directory of its own, removed when dropped.
pub struct TestCert {
    dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The certificate, for clients to trust.
    pub pem: String,
}

impl TestCert {
    pub fn new() -> TestCert {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "jobcast-tls-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let made = rcgen::generate_simple_self_signed(["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        let pem = made.cert.pem();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, &pem).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        TestCert { dir, cert, key, pem }
    }

    /// A file of this certificate's directory, for variants of it.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What an HTTP/2 client with prior knowledge sends first: the preface and
/// an empty SETTINGS frame.
pub fn http2_opening() -> Vec<u8> {
    [
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
        &[0, 0, 0, HTTP2_SETTINGS, 0, 0, 0, 0, 0],
    ]
    .concat()
}

/// HTTP/2 frame types.
pub const HTTP2_SETTINGS: u8 = 4;
pub const HTTP2_GOAWAY: u8 = 7;

/// One HTTP/2 frame, as read from a raw connection.
pub struct Http2Frame {
    pub kind: u8,
    pub payload: Vec<u8>,
}

/// The whole HTTP/2 frames at the start of `bytes` (what a server sent).
pub fn http2_frames(mut bytes: &[u8]) -> Vec<Http2Frame> {
    let mut frames = Vec::new();
    while bytes.len() >= 9 {
        let length = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        let Some(payload) = bytes.get(9..9 + length) else { break };
        frames.push(Http2Frame {
            kind: bytes[3],
            payload: payload.to_vec(),
        });
        bytes = &bytes[9 + length..];
    }
    frames
}

/// Starts the binary on 127.0.0.1:`port` with `--store store`, warnings
/// only, and `args`, its output discarded, killed when dropped; answers it
/// with a client once `/readyz` is 200. Fails if it exits first or is not
/// ready within [`WAIT`].
pub async fn start_jobcast<S: AsRef<OsStr>>(port: u16, store: &str, args: &[S]) -> (Child, TestApp) {
    let mut child = Command::new(BIN)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .args(["--store", store, "--log", "warn"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let api = TestApp::client_of(format!("http://127.0.0.1:{port}"));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ready = api.client.get(api.url("/readyz")).send().await;
        if ready.is_ok_and(|response| response.status() == 200) {
            return (child, api);
        }
        assert!(child.try_wait().unwrap().is_none(), "jobcast exited at start");
        assert!(tokio::time::Instant::now() < deadline, "jobcast is ready in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends `signal` (as `kill` names it: TERM, KILL, STOP, CONT) to a child
/// that has not been reaped.
pub async fn signal(child: &Child, signal: &str) {
    let pid = child.id().expect("the process runs").to_string();
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .await
        .unwrap();
    assert!(sent.success());
}

/// Starts the binary with `args` and `env`; waits for it to exit.
pub async fn jobcast_exit(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let output = tokio::time::timeout(
        WAIT,
        Command::new(BIN)
            .args(args)
            .env("JOBCAST_STORE", "memory")
            .envs(env.iter().copied())
            .env("JOBCAST_LISTEN", "127.0.0.1:0")
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("jobcast exits")
    .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Sends a request; a server that does not answer in WAIT fails the test.
pub async fn send(request: reqwest::RequestBuilder) -> reqwest::Response {
    tokio::time::timeout(WAIT, request.send())
        .await
        .expect("the server answers in time")
        .expect("the server answers")
}

// ------------------------------------------------------------ Problems

/// Checks an RFC 9457 problem answer of `status` and returns its body.
pub async fn assert_problem(response: reqwest::Response, status: u16, what: &str) -> Value {
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .map(|value| value.to_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    let actual = response.status().as_u16();
    let text = tokio::time::timeout(WAIT, response.text())
        .await
        .expect("the problem body arrives in time")
        .expect("a readable problem body");
    assert_eq!(actual, status, "{what}: {text}");
    assert_eq!(
        content_type, "application/problem+json",
        "{what}: a problem+json answer"
    );
    let problem: Value = serde_json::from_str(&text).expect("problem+json is JSON");
    for member in ["type", "title", "detail"] {
        assert!(
            problem[member].as_str().is_some_and(|value| !value.is_empty()),
            "{what}: a problem has a {member}: {problem}"
        );
    }
    assert_eq!(problem["status"], status, "{what}: status in {problem}");
    problem
}

/// The methods an `Allow` header lists, HEAD aside.
pub fn allowed_methods(response: &reqwest::Response) -> BTreeSet<String> {
    response
        .headers()
        .get_all(ALLOW)
        .iter()
        .flat_map(|value| value.to_str().unwrap().split(','))
        .map(|method| method.trim().to_ascii_uppercase())
        .filter(|method| !method.is_empty() && method != "HEAD")
        .collect()
}

// ------------------------------------------------------------ Event streams

/// One event, its data decoded as JSON.
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
        is_terminal_event(&self.event)
    }
}

/// Whether an event of this name ends a job.
pub fn is_terminal_event(event: &str) -> bool {
    matches!(event, "completed" | "failed" | "cancelled")
}

/// An open event stream, read one block at a time: what comes before a
/// blank line, that is an event, a comment, or the `retry:` hint.
///
/// Read by hand rather than with `eventsource-stream` (the CLI's parser):
/// tests check what such a parser hides (the `retry:` block, keep-alive
/// comments, the exact framing), and some events are megabytes long, which
/// that parser reads slowly in an unoptimised build. It accepts only what
/// the server writes: blocks ended by `\n\n`, at most one `event`, `id` and
/// `data` line per event, JSON data; anything else fails the test.
pub struct Sse {
    response: reqwest::Response,
    buffer: Vec<u8>,
    /// How much of `buffer` is known to hold no blank line.
    scanned: usize,
}

/// One block of an event stream, as sent.
pub struct Block {
    pub text: String,
}

impl Sse {
    pub fn new(response: reqwest::Response) -> Sse {
        Sse {
            response,
            buffer: Vec::new(),
            scanned: 0,
        }
    }

    /// The next block, or None once the server ended the response; fails
    /// the test when the stream stalls for WAIT.
    pub async fn next_block(&mut self) -> Option<Block> {
        loop {
            let from = self.scanned;
            if let Some(at) = find_blank_line(&self.buffer[from..]) {
                let end = from + at;
                let rest = self.buffer.split_off(end + 2);
                let mut block = std::mem::replace(&mut self.buffer, rest);
                block.truncate(end);
                self.scanned = 0;
                let text = String::from_utf8(block).expect("the stream is UTF-8");
                return Some(Block { text });
            }
            self.scanned = self.buffer.len().saturating_sub(1);
            let chunk = tokio::time::timeout(WAIT, self.response.chunk())
                .await
                .expect("the stream moves in time")
                .expect("the stream reads cleanly");
            match chunk {
                Some(chunk) => self.buffer.extend_from_slice(&chunk),
                None => {
                    assert!(
                        self.buffer.is_empty(),
                        "the stream ended inside a block: {:?}",
                        String::from_utf8_lossy(&self.buffer)
                    );
                    return None;
                }
            }
        }
    }

    /// The next event, past comments and the `retry:` hint; None when the
    /// server ended the stream. Fails the test after WAIT.
    pub async fn next(&mut self) -> Option<SseEvent> {
        let next = async {
            loop {
                if let Some(event) = self.next_block().await?.to_event() {
                    return Some(event);
                }
            }
        };
        tokio::time::timeout(WAIT, next)
            .await
            .expect("an event arrives in time")
    }

    /// Every complete event until the connection ends or breaks (the
    /// server was killed): what a client received before the cut.
    pub async fn until_cut(&mut self) -> Vec<SseEvent> {
        loop {
            let chunk = tokio::time::timeout(WAIT, self.response.chunk())
                .await
                .expect("the stream moves or ends in time");
            match chunk {
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        let mut events = Vec::new();
        while let Some(at) = find_blank_line(&self.buffer) {
            let rest = self.buffer.split_off(at + 2);
            let mut block = std::mem::replace(&mut self.buffer, rest);
            block.truncate(at);
            let text = String::from_utf8(block).expect("the stream is UTF-8");
            events.extend(Block { text }.to_event());
        }
        events
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

impl Block {
    /// The value of the `name:` field line, if any.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.text.lines().find_map(|line| {
            let value = line.strip_prefix(name)?.strip_prefix(':')?;
            Some(value.strip_prefix(' ').unwrap_or(value))
        })
    }

    pub fn event(&self) -> &str {
        self.field("event").unwrap_or("message")
    }

    pub fn id(&self) -> u64 {
        self.field("id").expect("an id").parse().expect("a numeric id")
    }

    pub fn data(&self) -> Value {
        serde_json::from_str(self.field("data").expect("data")).expect("JSON data")
    }

    pub fn is_keep_alive(&self) -> bool {
        self.text == ": keep-alive"
    }

    /// The event this block carries; None for a comment or the `retry:` hint.
    fn to_event(&self) -> Option<SseEvent> {
        let shown: String = self.text.chars().take(200).collect();
        let (mut event, mut id, mut data) = (None, None, None);
        for line in self.text.split('\n').filter(|line| !line.starts_with(':')) {
            let (name, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("a field line, not {line:?} in {shown:?}"));
            let value = value.strip_prefix(' ').unwrap_or(value);
            let slot = match name {
                "event" => &mut event,
                "id" => &mut id,
                "data" => &mut data,
                "retry" => {
                    assert!(value.parse::<u64>().is_ok(), "retry is in ms: {shown:?}");
                    continue;
                }
                other => panic!("an unknown field {other:?} in {shown:?}"),
            };
            assert!(slot.replace(value).is_none(), "one {name} line per event: {shown:?}");
        }
        if (event, id, data) == (None, None, None) {
            return None;
        }
        let data = data.unwrap_or_else(|| panic!("an event has data: {shown:?}"));
        Some(SseEvent {
            event: event.unwrap_or("message").to_owned(),
            id: id.unwrap_or_default().to_owned(),
            data: serde_json::from_str(data).unwrap_or_else(|_| panic!("the data is JSON: {shown:?}")),
        })
    }
}

/// Where the first blank line (`\n\n`) in `bytes` starts.
fn find_blank_line(bytes: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = find_newline(&bytes[from..]) {
        let at = from + at;
        if bytes.get(at + 1) == Some(&b'\n') {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Where the first `\n` in `bytes` is. Some events here are megabytes long
/// and tests run unoptimised, where a byte-by-byte scan is slow; `contains`
/// on bytes is memchr, fast in any build, so it skips blocks without one.
fn find_newline(bytes: &[u8]) -> Option<usize> {
    let mut start = 0;
    for block in bytes.chunks(4096) {
        if block.contains(&b'\n') {
            return block.iter().position(|&byte| byte == b'\n').map(|at| start + at);
        }
        start += block.len();
    }
    None
}

/// Checks the stream invariants every subscriber is owed: ids match seqs,
/// seqs strictly increase, exactly one terminal event, and it is last.
pub fn assert_well_formed(events: &[SseEvent]) {
    for event in events {
        assert_eq!(event.id, event.seq().to_string(), "id is the seq");
    }
    let seqs: Vec<(&str, u64)> = events.iter().map(|event| (event.event.as_str(), event.seq())).collect();
    assert_rising_to_one_end(&seqs);
}

/// Checks (event name, seq) pairs of one job's stream: seqs strictly
/// increase, exactly one terminal event, and it is last.
pub fn assert_rising_to_one_end(events: &[(&str, u64)]) {
    assert!(!events.is_empty(), "no events");
    let mut last = 0;
    for &(_, seq) in events {
        assert!(seq > last, "seqs strictly increase: {seq} after {last}");
        last = seq;
    }
    let terminal = events.iter().filter(|(event, _)| is_terminal_event(event)).count();
    assert_eq!(terminal, 1, "exactly one terminal event");
    assert!(
        is_terminal_event(events.last().unwrap().0),
        "the terminal event is last"
    );
}

/// (event, seq) of each event, for assertion messages and comparisons.
pub fn summary(events: &[SseEvent]) -> Vec<(String, u64)> {
    events.iter().map(|event| (event.event.clone(), event.seq())).collect()
}

/// A `Last-Event-ID: n` header.
pub fn last_event_id(n: u64) -> HeaderMap {
    HeaderMap::from_iter([("last-event-id".parse().unwrap(), HeaderValue::from(n))])
}

/// Last-Event-ID values that are no position at all.
pub fn garbage_last_event_ids() -> Vec<HeaderValue> {
    [&b"abc"[..], b"\xff\xfe", b"-1", b"1.5", b"", b"99999999999999999999999"]
        .into_iter()
        .map(|value| HeaderValue::from_bytes(value).unwrap())
        .collect()
}

// ------------------------------------------------------------ The job resource

/// Every field of the job resource in CONTRACT.md.
const JOB_FIELDS: &[&str] = &[
    "id",
    "kind",
    "status",
    "seq",
    "progress",
    "stage",
    "stages",
    "message",
    "rate",
    "eta_seconds",
    "params",
    "result",
    "error",
    "created_at",
    "started_at",
    "updated_at",
    "finished_at",
    "labels",
    "retry_of",
    "owner",
    "stream_url",
];

/// A job's id.
pub fn id_of(job: &Value) -> String {
    job["id"].as_str().expect("a job has an id").to_owned()
}

/// Checks that `job` has every field of the resource, well typed.
pub fn assert_job_shape(job: &Value) {
    let object = job.as_object().unwrap_or_else(|| panic!("a job object: {job}"));
    for field in JOB_FIELDS {
        assert!(object.contains_key(*field), "the job has {field}: {job}");
    }
    assert!(is_lowercase_uuid_v7(job["id"].as_str().unwrap()));
    assert!(job["kind"].is_string());
    assert!(job["seq"].as_u64().is_some_and(|seq| seq >= 1));
    assert!(job["progress"].is_number());
    assert!(job["stages"].is_array());
    assert!(job["params"].is_object());
    assert!(
        job["labels"]
            .as_object()
            .is_some_and(|labels| labels.values().all(Value::is_string)),
        "labels are an object of strings: {job}"
    );
    assert!(
        job["retry_of"].is_null() || job["retry_of"].as_str().is_some_and(is_lowercase_uuid_v7),
        "retry_of is null or a job id: {job}"
    );
    assert!(job["owner"].is_null() || job["owner"].is_string(), "owner: {job}");
    assert!(
        job["stream_url"]
            .as_str()
            .is_some_and(|url| url.starts_with(&format!("/v1/jobs/{}/events", id_of(job)))),
        "stream_url is the job's stream: {job}"
    );
    for field in ["created_at", "updated_at"] {
        let time = job[field].as_str().unwrap_or_else(|| panic!("{field} is set: {job}"));
        assert!(is_contract_time(time), "{field} is {time}");
    }
    for field in ["started_at", "finished_at"] {
        if let Some(time) = job[field].as_str() {
            assert!(is_contract_time(time), "{field} is {time}");
        } else {
            assert!(job[field].is_null(), "{field} is a time or null: {job}");
        }
    }
}

/// `^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$`
pub fn is_contract_time(time: &str) -> bool {
    const TEMPLATE: &[u8] = b"0000-00-00T00:00:00.000000Z";
    time.len() == TEMPLATE.len()
        && time.bytes().zip(TEMPLATE).all(|(byte, &expected)| match expected {
            b'0' => byte.is_ascii_digit(),
            _ => byte == expected,
        })
}

/// A hyphenated lowercase UUID with version 7 and the RFC 9562 variant.
pub fn is_lowercase_uuid_v7(id: &str) -> bool {
    let bytes = id.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(index, &byte)| match index {
            8 | 13 | 18 | 23 => byte == b'-',
            _ => byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte),
        })
        && bytes[14] == b'7'
        && matches!(bytes[19], b'8' | b'9' | b'a' | b'b')
}

/// One page of GET /v1/jobs?query: the ids and next_cursor.
pub async fn list_page(app: &TestApp, query: &str) -> (Vec<String>, Value) {
    let response = send(app.client.get(app.url(&format!("/v1/jobs?{query}")))).await;
    assert_eq!(response.status(), 200, "GET /v1/jobs?{query}");
    let body: Value = response.json().await.unwrap();
    let object = body.as_object().expect("an object");
    assert_eq!(object.len(), 2, "jobs and next_cursor only: {body}");
    let jobs = body["jobs"].as_array().expect("a jobs array");
    for job in jobs {
        assert_job_shape(job);
    }
    let ids = jobs.iter().map(id_of).collect();
    assert!(body["next_cursor"].is_null() || body["next_cursor"].is_string());
    (ids, body["next_cursor"].clone())
}

// ------------------------------------------------------------ Jobs to run

/// A demo job of `steps` steps in one stage, `step_ms` apart.
pub fn demo(steps: u64, step_ms: u64) -> Value {
    json!({ "stages": [{ "name": "work", "weight": 1.0, "steps": steps }], "step_ms": step_ms })
}

/// A demo job that runs (cancellably) for a minute before its first step.
pub fn long_wait() -> Value {
    json!({ "stages": [{ "name": "work", "weight": 1.0, "steps": 10 }], "step_ms": 1, "delay_ms": 60_000 })
}

/// A running demo job whose state stays put (it waits a minute, its stages
/// declared): its `seq` is stable.
pub async fn live_job(app: &TestApp) -> String {
    let id = id_of(&app.create_demo(long_wait()).await);
    wait_for_stages(app, &id).await;
    id
}

/// Waits until the job has declared its stages.
pub async fn wait_for_stages(app: &TestApp, id: &str) {
    app.eventually("the job declares its stages", || async {
        app.get_job(id).await["stages"]
            .as_array()
            .is_some_and(|stages| !stages.is_empty())
    })
    .await;
}

const GATED_STAGES: usize = 20;

/// A kind whose job starts stage `s0`, then starts the next stage each time
/// the test adds a permit to `gate`, and otherwise waits (until cancelled).
pub fn gated_kind(name: &str, gate: Arc<Semaphore>) -> Kind {
    Kind::new(name, move |ctx: JobContext, _params: Value| {
        let gate = gate.clone();
        async move {
            ctx.declare_stages((0..GATED_STAGES).map(|index| StageSpec::new(format!("s{index}"), 1.0)))?;
            ctx.start_stage("s0", None, None)?;
            for index in 1..GATED_STAGES {
                tokio::select! {
                    permit = gate.acquire() => permit.expect("the gate stays open").forget(),
                    _ = ctx.cancelled() => return Err(JobError::cancelled()),
                }
                ctx.start_stage(&format!("s{index}"), None, None)?;
            }
            ctx.cancelled().await;
            Err(JobError::cancelled())
        }
    })
}

/// Waits until the gated job `id` runs stage `stage`; returns its seq.
pub async fn wait_for_stage(app: &TestApp, id: &str, stage: &str) -> u64 {
    app.eventually(&format!("stage {stage}"), || async {
        app.get_job(id).await["stage"]["name"] == stage
    })
    .await;
    app.get_job(id).await["seq"].as_u64().unwrap()
}
