//! The terminal client (`jobcast watch`, `jobcast submit`, `jobcast retry`): the real binary
//! against a real server on an ephemeral port, with piped output, and on a
//! pseudo-terminal made by util-linux `script` for the bars and the Ctrl-C
//! prompt. Jobs that must still be running when a test acts wait in the
//! demo's `delay_ms` (60 s) or at a `gate` the test opens; tests then end
//! them by cancelling or opening the gate, never by waiting for time.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use jobcast::{App, Config, JobContext, Kind};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_jobcast");

/// How long any single wait in a test may take before the test fails.
const WAIT: Duration = Duration::from_secs(20);

/// A real server on an ephemeral port, stopped when dropped.
struct Server {
    base: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    /// Lets the `gate` jobs through, one per permit.
    gate: Arc<Semaphore>,
}

impl Server {
    /// The server runs `demo` and `gate`, a kind whose jobs wait until the
    /// test opens the gate, then complete: a job that ends exactly when a
    /// test says so.
    async fn start() -> Server {
        Server::start_with(Config::default()).await
    }

    /// [`Server::start`] with `config`'s settings.
    async fn start_with(config: Config) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            store: jobcast::config::StoreChoice::Memory,
            ..config
        };
        let gate = Arc::new(Semaphore::new(0));
        let gated = {
            let gate = gate.clone();
            Kind::new("gate", move |_ctx: JobContext, _params: Map<String, Value>| {
                let gate = gate.clone();
                async move {
                    gate.acquire().await.expect("the gate is never closed").forget();
                    Ok(json!("through"))
                }
            })
        };
        let app = App::new(&config, [jobcast::kinds::demo::kind(), gated], shutdown.clone())
            .await
            .expect("the service starts");
        tokio::spawn(jobcast::serve(listener, app, shutdown.clone()));
        Server {
            base,
            http: reqwest::Client::new(),
            shutdown,
            gate,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn create_demo(&self, params: Value) -> String {
        self.create("demo", params).await
    }

    async fn create(&self, kind: &str, params: Value) -> String {
        self.create_labelled(kind, params, json!({})).await
    }

    async fn create_labelled(&self, kind: &str, params: Value, labels: Value) -> String {
        let response = self
            .http
            .post(self.url("/v1/jobs"))
            .json(&json!({ "kind": kind, "params": params, "labels": labels }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let job: Value = response.json().await.unwrap();
        job["id"].as_str().unwrap().to_owned()
    }

    async fn cancel(&self, id: &str) -> Value {
        let url = self.url(&format!("/v1/jobs/{id}/cancel"));
        let response = self.http.post(url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// Waits, with long polls, until job `id` is running.
    async fn wait_until_running(&self, id: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut seq = 0;
        loop {
            let (_, job) = self.get(&format!("/v1/jobs/{id}?wait_seconds=5&after_seq={seq}")).await;
            if job["status"] == "running" {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "job {id} did not start: {job}");
            seq = job["seq"].as_u64().unwrap();
        }
    }

    async fn wait_until_ended(&self, id: &str) -> Value {
        wait_until_ended(&self.http, &self.base, id).await
    }
}

/// Waits for job `id` to end, with long polls, and returns it.
async fn wait_until_ended(http: &reqwest::Client, base: &str, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seq = 0;
    loop {
        let url = format!("{base}/v1/jobs/{id}?wait_seconds=5&after_seq={seq}");
        let job: Value = http.get(url).send().await.unwrap().json().await.unwrap();
        if matches!(job["status"].as_str(), Some("completed" | "failed" | "cancelled")) {
            return job;
        }
        assert!(tokio::time::Instant::now() < deadline, "job {id} did not end: {job}");
        seq = job["seq"].as_u64().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// What a finished `jobcast` run left.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn state_lines(&self) -> Vec<&str> {
        self.stdout.lines().filter(|line| line.starts_with("seq=")).collect()
    }

    fn seqs(&self) -> Vec<u64> {
        self.state_lines()
            .iter()
            .map(|line| line["seq=".len()..].split(' ').next().unwrap().parse().unwrap())
            .collect()
    }
}

fn jobcast(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("JOBCAST_URL")
        .env_remove("JOBCAST_TOKEN")
        .env("JOBCAST_STORE", "memory")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs `jobcast args` with piped output to its end.
async fn run(args: &[&str]) -> Run {
    let output = tokio::time::timeout(WAIT, jobcast(args).output())
        .await
        .expect("jobcast ends in time")
        .unwrap();
    Run {
        code: output.status.code().expect("jobcast exits, not killed"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

fn assert_strictly_increasing(seqs: &[u64]) {
    assert!(!seqs.is_empty(), "no state lines");
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "seqs increase: {seqs:?}");
}

// ---------------------------------------------------------------- piped

#[tokio::test]
async fn submit_and_watch_prints_one_line_per_state_and_exits_0_when_completed() {
    let server = Server::start().await;
    // The delay, spent `running`, is there so the watcher connects first.
    let params = json!({
        "stages": [{ "name": "parsing", "weight": 0.2, "steps": 5 },
                   { "name": "analyzing", "weight": 0.8, "steps": 10 }],
        "step_ms": 5, "delay_ms": 300
    });

    let run = run(&[
        "submit",
        "demo",
        "--params",
        &params.to_string(),
        "--watch",
        "--server",
        &server.base,
    ])
    .await;

    assert_eq!(run.code, 0, "{run:?}");
    let id = run.stdout.lines().next().unwrap();
    assert_eq!(id.len(), 36, "the first line is the job's id: {run:?}");
    assert_strictly_increasing(&run.seqs());
    let states = run.state_lines();
    assert!(states.len() >= 3, "a line per state: {run:?}");
    assert!(
        states
            .iter()
            .any(|line| line.contains(" analyzing ") && line.contains("/10 steps")),
        "lines show the stage and its counter: {run:?}"
    );
    assert!(states.last().unwrap().contains(" completed 100.0%"), "{run:?}");
    let last = run.stdout.lines().last().unwrap();
    assert!(last.starts_with(&format!("job {id} completed")), "{run:?}");
    assert!(last.ends_with(r#"result: {"stages":2,"steps":15}"#), "{run:?}");
    assert_eq!(server.get(&format!("/v1/jobs/{id}")).await.1["status"], "completed");
}

#[tokio::test]
async fn watching_a_failing_job_exits_1_and_shows_its_error() {
    let server = Server::start().await;
    let id = server
        .create_demo(json!({
            "stages": [{ "name": "parsing", "steps": 4 }, { "name": "analyzing", "steps": 10 }],
            "step_ms": 5, "delay_ms": 50, "fail_at": "analyzing"
        }))
        .await;

    let run = run(&["watch", &id, "--server", &server.base]).await;

    assert_eq!(run.code, 1, "{run:?}");
    assert_strictly_increasing(&run.seqs());
    let last = run.stdout.lines().last().unwrap();
    assert!(last.starts_with(&format!("job {id} failed")), "{run:?}");
    assert!(last.contains("in stage analyzing: demo_failure: "), "{run:?}");
}

#[tokio::test]
async fn watching_an_unknown_job_exits_3_with_the_problem_detail() {
    let server = Server::start().await;
    let id = "0193a8f2-6c1e-7c3a-9d2b-5f0e4a1b2c3d";
    let (status, problem) = server.get(&format!("/v1/jobs/{id}/events")).await;
    assert_eq!(status, 404);

    let run = run(&["watch", id, "--server", &server.base]).await;

    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    assert!(run.stderr.contains(problem["detail"].as_str().unwrap()), "{run:?}");
}

#[tokio::test]
async fn watching_a_finished_job_prints_its_final_state_and_exits_by_it() {
    let server = Server::start().await;
    let id = server.create_demo(json!({ "step_ms": 0 })).await;
    let job = server.wait_until_ended(&id).await;
    assert_eq!(job["status"], "completed");

    let run = run(&["watch", &id, "--server", &server.base]).await;

    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.seqs(),
        [job["seq"].as_u64().unwrap()],
        "one state: the terminal one"
    );
    assert!(run
        .stdout
        .lines()
        .last()
        .unwrap()
        .starts_with(&format!("job {id} completed")));
}

#[tokio::test]
async fn submit_with_rejected_params_exits_3_with_the_422_detail() {
    let server = Server::start().await;
    let response = server
        .http
        .post(server.url("/v1/jobs"))
        .json(&json!({ "kind": "demo", "params": { "bogus": 1 } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();

    let run = run(&["submit", "demo", "--params", r#"{"bogus":1}"#, "--server", &server.base]).await;

    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    assert!(run.stderr.contains(problem["detail"].as_str().unwrap()), "{run:?}");
    assert!(run.stderr.contains("422"), "{run:?}");
}

#[tokio::test]
async fn submit_alone_prints_the_id_and_the_job_runs() {
    let server = Server::start().await;

    let run = run(&[
        "submit",
        "demo",
        "--params",
        r#"{"step_ms":0}"#,
        "--server",
        &server.base,
    ])
    .await;

    assert_eq!(run.code, 0, "{run:?}");
    let id = run.stdout.trim();
    assert_eq!(server.wait_until_ended(id).await["status"], "completed");
}

#[tokio::test]
async fn the_server_url_may_come_from_jobcast_url() {
    let server = Server::start().await;

    let output = jobcast(&["submit", "demo", "--json"])
        .env("JOBCAST_URL", &server.base)
        .output()
        .await
        .unwrap();

    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let job: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(job["kind"], "demo");
}

#[tokio::test]
async fn a_usage_error_or_an_unreachable_server_exits_3() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let nowhere = format!("http://127.0.0.1:{port}");

    let run_unreachable = run(&["watch", "0193a8f2-6c1e-7c3a-9d2b-5f0e4a1b2c3d", "--server", &nowhere]).await;
    assert_eq!(run_unreachable.code, 3, "{run_unreachable:?}");
    assert!(
        run_unreachable.stderr.contains("cannot reach the server"),
        "{run_unreachable:?}"
    );

    let bad_json = run(&["submit", "demo", "--params", "{not json"]).await;
    assert_eq!(bad_json.code, 3, "{bad_json:?}");
    let no_id = run(&["watch"]).await;
    assert_eq!(no_id.code, 3, "{no_id:?}");
}

#[tokio::test]
async fn help_lists_the_server_settings_and_the_client_commands() {
    let top = run(&["--help"]).await;
    assert_eq!(top.code, 0);
    for expected in [
        "--listen",
        "[default: 127.0.0.1:8080]",
        "--store",
        "[default: sqlite:jobcast.db]",
        "--publish-interval",
        "watch",
        "submit",
    ] {
        assert!(top.stdout.contains(expected), "{expected} in:\n{}", top.stdout);
    }
    let watch = run(&["watch", "--help"]).await;
    for expected in [
        "--server <URL>",
        "JOBCAST_URL",
        "130",
        "the job was cancelled",
        "--label <KEY=VALUE>",
    ] {
        assert!(watch.stdout.contains(expected), "{expected} in:\n{}", watch.stdout);
    }
    let submit = run(&["submit", "--help"]).await;
    for expected in ["--label <KEY=VALUE>", "--idempotency-key <KEY>", "--watch"] {
        assert!(submit.stdout.contains(expected), "{expected} in:\n{}", submit.stdout);
    }
    let retry = run(&["retry", "--help"]).await;
    for expected in [
        "<ID>",
        "failed or cancelled",
        "--watch",
        "--idempotency-key <KEY>",
        "cannot be retried",
    ] {
        assert!(retry.stdout.contains(expected), "{expected} in:\n{}", retry.stdout);
    }
}

#[tokio::test]
async fn submit_sends_labels_and_an_idempotency_key() {
    let server = Server::start().await;
    let args = |key: &'static str| {
        [
            "submit",
            "demo",
            "--params",
            r#"{"step_ms":0}"#,
            "--label",
            "project=42",
            "--label",
            "env=a=b",
            "--idempotency-key",
            key,
            "--json",
            "--server",
            &server.base,
        ]
        .map(str::to_owned)
    };
    let first = run(&args("k1").iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(first.code, 0, "{first:?}");
    let job: Value = serde_json::from_str(&first.stdout).unwrap();
    assert_eq!(job["labels"], json!({ "project": "42", "env": "a=b" }));
    let again = run(&args("k1").iter().map(String::as_str).collect::<Vec<_>>()).await;
    let repeat: Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(repeat["id"], job["id"], "the same key answers the same job");
    let other = run(&args("k2").iter().map(String::as_str).collect::<Vec<_>>()).await;
    let other: Value = serde_json::from_str(&other.stdout).unwrap();
    assert_ne!(other["id"], job["id"]);

    let bad = run(&["submit", "demo", "--label", "Project=42", "--server", &server.base]).await;
    assert_eq!(bad.code, 3, "{bad:?}");
    assert!(
        bad.stderr.contains("\"Project\"") && bad.stderr.contains("422"),
        "{bad:?}"
    );
    let malformed = run(&["submit", "demo", "--label", "project", "--server", &server.base]).await;
    assert_eq!(malformed.code, 3, "{malformed:?}");
    assert!(malformed.stderr.contains("KEY=VALUE"), "{malformed:?}");
}

#[tokio::test]
async fn retry_starts_a_new_job_and_with_watch_follows_it() {
    let server = Server::start().await;
    let failing = json!({ "stages": [{ "name": "one", "steps": 2 }], "step_ms": 0, "fail_at": "one" });
    let id = server
        .create_labelled("demo", failing, json!({ "project": "42" }))
        .await;
    assert_eq!(server.wait_until_ended(&id).await["status"], "failed");

    let alone = run(&["retry", &id, "--server", &server.base]).await;
    assert_eq!(alone.code, 0, "{alone:?}");
    let new_id = alone.stdout.trim();
    let (_, new) = server.get(&format!("/v1/jobs/{new_id}")).await;
    assert_eq!(
        (&new["retry_of"], &new["labels"]),
        (&json!(id), &json!({ "project": "42" }))
    );

    let watched = run(&["retry", &id, "--watch", "--server", &server.base]).await;
    assert_eq!(watched.code, 1, "the retry fails as the job did: {watched:?}");
    let last = watched.stdout.lines().last().unwrap();
    assert!(
        last.contains(" failed ") && last.contains("demo_failure"),
        "{watched:?}"
    );

    let completed = server.create_demo(json!({ "step_ms": 0 })).await;
    server.wait_until_ended(&completed).await;
    let refused = run(&["retry", &completed, "--server", &server.base]).await;
    assert_eq!(refused.code, 3, "{refused:?}");
    assert!(
        refused.stderr.contains("409") && refused.stderr.contains("failed or cancelled"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn watch_with_labels_follows_every_matching_job_until_each_has_ended() {
    let server = Server::start().await;
    let labels = json!({ "batch": "b1" });
    let done = server
        .create_labelled("demo", json!({ "step_ms": 0 }), labels.clone())
        .await;
    server.wait_until_ended(&done).await;
    let gated = [
        server.create_labelled("gate", json!({}), labels.clone()).await,
        server.create_labelled("gate", json!({}), labels.clone()).await,
    ];
    let elsewhere = server
        .create_labelled("gate", json!({}), json!({ "batch": "b2" }))
        .await;
    for id in &gated {
        server.wait_until_running(id).await;
    }
    let mut child = jobcast(&["watch", "--label", "batch=b1", "--server", &server.base])
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    let following = async {
        while !gated.iter().all(|id| seen.contains(&format!("{id} seq="))) {
            assert!(stdout.read_line(&mut seen).await.unwrap() > 0, "output ended: {seen}");
        }
    };
    tokio::time::timeout(WAIT, following)
        .await
        .expect("both jobs are followed");
    server.gate.add_permits(2);
    tokio::time::timeout(WAIT, stdout.read_to_string(&mut seen))
        .await
        .unwrap()
        .unwrap();
    let status = tokio::time::timeout(WAIT, child.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(0), "every job completed: {seen}");
    for id in gated.iter().chain([&done]) {
        assert!(seen.contains(&format!("job {id} completed")), "{id} in:\n{seen}");
    }
    assert!(!seen.contains(&elsewhere), "only jobs with the label:\n{seen}");
    server.gate.add_permits(1);

    let failing = json!({ "stages": [{ "name": "one", "steps": 2 }], "step_ms": 0, "fail_at": "one" });
    let failed = server.create_labelled("demo", failing, json!({ "batch": "b3" })).await;
    server
        .create_labelled("demo", json!({ "step_ms": 0 }), json!({ "batch": "b3" }))
        .await;
    server.wait_until_ended(&failed).await;
    let run_failed = run(&["watch", "--label", "batch=b3", "--server", &server.base]).await;
    assert_eq!(run_failed.code, 1, "a job failed: {run_failed:?}");
    let nothing = run(&["watch", "--label", "batch=none", "--server", &server.base]).await;
    assert_eq!(nothing.code, 3, "{nothing:?}");
    assert!(
        nothing.stderr.contains("no job has the labels batch=none"),
        "{nothing:?}"
    );
}

/// What the proxy does with the connections after the first.
enum Then {
    Relay,
    /// Holds the next request until job `.0` has ended, then answers it
    /// `204 No Content`, as the server does to a resume from the terminal
    /// state; relays the connections after that.
    NoContentOnceEnded(String),
}

/// A proxy in front of `upstream` that relays the first connection only up
/// to the end of its `cut_after`-th (chunked) SSE frame and then drops it;
/// later connections are handled as `then` says.
async fn dropping_proxy(upstream: &str, cut_after: usize, then: Then) -> Proxy {
    let upstream = upstream.trim_start_matches("http://").to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (requests, requests_seen) = mpsc::unbounded_channel();
    let (frames, frames_seen) = mpsc::unbounded_channel();
    let then = Arc::new(then);
    tokio::spawn(async move {
        for connection in 0.. {
            let (mut client, _) = listener.accept().await.unwrap();
            let mut server = TcpStream::connect(&upstream).await.unwrap();
            let (requests, frames) = (requests.clone(), frames.clone());
            let (then, upstream) = (then.clone(), upstream.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut byte = [0];
                    if client.read(&mut byte).await.unwrap() == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let _ = requests.send(String::from_utf8_lossy(&head).to_lowercase());
                if let (1, Then::NoContentOnceEnded(id)) = (connection, &*then) {
                    wait_until_ended(&reqwest::Client::new(), &format!("http://{upstream}"), id).await;
                    let answer = b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n";
                    client.write_all(answer).await.unwrap();
                    return;
                }
                server.write_all(&head).await.unwrap();
                if connection > 0 {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    return;
                }
                let mut relayed = Vec::new();
                let mut buffer = [0; 4096];
                loop {
                    let read = server.read(&mut buffer).await.unwrap();
                    if read == 0 {
                        return;
                    }
                    relayed.extend_from_slice(&buffer[..read]);
                    let frame_ends: Vec<usize> = relayed
                        .windows(4)
                        .enumerate()
                        .filter(|(_, window)| window == b"\n\n\r\n")
                        .map(|(at, _)| at + 4)
                        .collect();
                    if let Some(&end) = frame_ends.get(cut_after - 1) {
                        let already = relayed.len() - read;
                        client.write_all(&relayed[already..end]).await.unwrap();
                        return; // drops both connections mid-stream
                    }
                    client.write_all(&buffer[..read]).await.unwrap();
                    let _ = frames.send(frame_ends.len());
                }
            });
        }
    });
    Proxy {
        base,
        requests: requests_seen,
        frames: frames_seen,
    }
}

/// A proxy from [`dropping_proxy`], and what it saw.
struct Proxy {
    base: String,
    /// Each connection's request head, lowercased.
    requests: mpsc::UnboundedReceiver<String>,
    /// How many whole SSE frames the first connection has relayed so far.
    frames: mpsc::UnboundedReceiver<usize>,
}

impl Proxy {
    async fn next_request(&mut self) -> String {
        let next = tokio::time::timeout(WAIT, self.requests.recv()).await;
        next.expect("a request in time").expect("the proxy runs")
    }

    async fn frames_relayed(&mut self, frames: usize) {
        let wait = async { while self.frames.recv().await.expect("the proxy runs") < frames {} };
        tokio::time::timeout(WAIT, wait).await.expect("frames relayed in time");
    }
}

#[tokio::test]
async fn a_dropped_stream_is_resumed_with_last_event_id_without_repeats() {
    let server = Server::start().await;
    let id = server.create_demo(json!({ "delay_ms": 60_000 })).await;
    server.wait_until_running(&id).await;
    // Frames: `retry:`, the snapshot, `cancelling`: the cut falls before
    // the terminal `cancelled`.
    let mut proxy = dropping_proxy(&server.base, 3, Then::Relay).await;

    let args = ["watch", &id, "--server", &proxy.base.clone()];
    let (run, ()) = tokio::join!(run(&args), async {
        proxy.frames_relayed(2).await;
        server.cancel(&id).await;
    });

    assert_eq!(run.code, 2, "{run:?}");
    let seqs = run.seqs();
    assert_strictly_increasing(&seqs);
    let states: Vec<&str> = run
        .state_lines()
        .iter()
        .map(|line| line.split(' ').nth(1).unwrap())
        .collect();
    assert_eq!(states, ["running", "cancelling", "cancelled"], "{run:?}");
    let first = proxy.next_request().await;
    assert!(!first.contains("last-event-id"), "{first}");
    let second = proxy.next_request().await;
    assert!(
        second.contains(&format!("last-event-id: {}\r\n", seqs[1])),
        "the reconnect resumes after the last state seen ({seqs:?}): {second}"
    );
    assert!(run
        .stdout
        .lines()
        .last()
        .unwrap()
        .starts_with(&format!("job {id} cancelled")));
}

#[tokio::test]
async fn a_204_on_resume_is_taken_as_the_end_and_the_job_is_fetched() {
    let server = Server::start().await;
    let id = server.create_demo(json!({ "delay_ms": 60_000 })).await;
    // Cut after the snapshot; the resume is answered 204 once the job ended.
    let mut proxy = dropping_proxy(&server.base, 2, Then::NoContentOnceEnded(id.clone())).await;

    let args = ["watch", &id, "--server", &proxy.base.clone()];
    let (run, ()) = tokio::join!(run(&args), async {
        proxy.next_request().await;
        proxy.next_request().await; // the resume, held by the proxy
        server.cancel(&id).await;
    });

    assert_eq!(run.code, 2, "exits by the fetched job's status: {run:?}");
    let seqs = run.seqs();
    assert_strictly_increasing(&seqs);
    assert_eq!(seqs.len(), 2, "the snapshot, then the fetched final state: {run:?}");
    assert!(run.state_lines()[1].contains(" cancelled "), "{run:?}");
    let fetch = proxy.next_request().await;
    assert!(fetch.starts_with(&format!("get /v1/jobs/{id} ")), "{fetch}");
}

/// Reads `reader` line by line until a line contains `needle`.
async fn read_until_line(reader: &mut (impl AsyncBufReadExt + Unpin), needle: &str) {
    let found = async {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                reader.read_line(&mut line).await.unwrap() > 0,
                "output ended before {needle:?}"
            );
            if line.contains(needle) {
                return;
            }
        }
    };
    tokio::time::timeout(WAIT, found)
        .await
        .expect("the line arrives in time");
}

async fn interrupt(child: &Child) {
    let pid = child.id().expect("still running");
    let status = Command::new("sh")
        .args(["-c", &format!("kill -INT {pid}")])
        .status()
        .await
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn ctrl_c_without_a_terminal_detaches_with_130_and_leaves_the_job_running() {
    let server = Server::start().await;
    let id = server.create_demo(json!({ "delay_ms": 60_000 })).await;
    let mut child = jobcast(&["watch", &id, "--server", &server.base]).spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    read_until_line(&mut stdout, "seq=").await;

    interrupt(&child).await;

    let status = tokio::time::timeout(WAIT, child.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(130));
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).await.unwrap();
    assert!(stderr.contains("detached"), "{stderr}");
    assert_eq!(server.get(&format!("/v1/jobs/{id}")).await.1["status"], "running");
}

// ---------------------------------------------------------------- terminal

/// `jobcast args` on a pseudo-terminal, through util-linux `script`; what
/// is written to `input` is typed on that terminal.
struct OnTerminal {
    child: Child,
    input: tokio::process::ChildStdin,
    output: mpsc::UnboundedReceiver<Vec<u8>>,
    seen: String,
}

impl OnTerminal {
    fn spawn(args: &[&str]) -> OnTerminal {
        let command = format!("stty cols 120 rows 40; exec {BIN} {}", args.join(" "));
        let mut child = Command::new("script")
            .args(["-qfec", &command, "/dev/null"])
            .env("SHELL", "/bin/sh")
            .env("TERM", "xterm-256color")
            .env_remove("JOBCAST_URL")
            .env_remove("NO_COLOR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("util-linux `script` runs");
        let mut stdout = child.stdout.take().unwrap();
        let (chunks, output) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut buffer = [0; 4096];
            while let Ok(read @ 1..) = stdout.read(&mut buffer).await {
                if chunks.send(buffer[..read].to_vec()).is_err() {
                    return;
                }
            }
        });
        OnTerminal {
            input: child.stdin.take().unwrap(),
            child,
            output,
            seen: String::new(),
        }
    }

    /// Waits until the terminal has shown `needle`.
    async fn expect(&mut self, needle: &str) {
        let wait = async {
            while !self.seen.contains(needle) {
                let chunk = self.output.recv().await;
                let chunk = chunk.unwrap_or_else(|| panic!("output ended before {needle:?}:\n{}", self.seen));
                self.seen.push_str(&String::from_utf8_lossy(&chunk));
            }
        };
        if tokio::time::timeout(WAIT, wait).await.is_err() {
            panic!("no {needle:?} on the terminal:\n{}", self.seen);
        }
    }

    async fn type_in(&mut self, text: &str) {
        self.input.write_all(text.as_bytes()).await.unwrap();
        self.input.flush().await.unwrap();
    }

    async fn exit_code(mut self) -> (i32, String) {
        let status = tokio::time::timeout(WAIT, self.child.wait()).await.unwrap().unwrap();
        while let Some(chunk) = self.output.recv().await {
            self.seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        (status.code().expect("script exits"), self.seen)
    }
}

#[tokio::test]
async fn on_a_terminal_the_bars_show_the_stage_and_its_counter() {
    let server = Server::start().await;
    // The stage starts, then its first step takes a minute.
    let id = server
        .create_demo(json!({ "stages": [{ "name": "crunching", "steps": 30 }], "step_ms": 60_000 }))
        .await;
    let mut terminal = OnTerminal::spawn(&["watch", &id, "--server", &server.base]);

    terminal.expect("0/30 steps").await;
    server.cancel(&id).await;

    let (code, seen) = terminal.exit_code().await;
    assert_eq!(code, 2, "{seen}");
    assert!(seen.contains("running"), "the status is shown:\n{seen}");
    assert!(
        seen.contains('░') && seen.contains("  0%"),
        "an empty bar is drawn:\n{seen}"
    );
    assert!(seen.contains("crunching"), "the stage is named:\n{seen}");
    assert!(seen.contains("(stage 1 of 1)"), "{seen}");
    assert!(seen.contains("\u{1b}["), "drawn with terminal escapes:\n{seen}");
    assert!(!seen.contains("seq="), "no plain lines on a terminal:\n{seen}");
    assert!(seen.contains(&format!("job {id} cancelled")), "{seen}");
}

#[tokio::test]
async fn on_a_terminal_a_completed_job_reads_100_percent() {
    let server = Server::start().await;
    let id = server.create_demo(json!({ "step_ms": 0 })).await;
    server.wait_until_ended(&id).await;

    let (code, seen) = OnTerminal::spawn(&["watch", &id, "--server", &server.base])
        .exit_code()
        .await;

    assert_eq!(code, 0, "{seen}");
    assert!(
        seen.contains('█') && seen.contains("100%"),
        "a full bar is drawn:\n{seen}"
    );
    assert!(seen.contains("analyzing step 40/40"), "the message is shown:\n{seen}");
    assert!(seen.contains(&format!("job {id} completed")), "{seen}");
}

#[tokio::test]
async fn ctrl_c_on_a_terminal_offers_to_cancel_and_yes_cancels() {
    let server = Server::start().await;
    let id = server.create_demo(json!({ "delay_ms": 60_000 })).await;
    let mut terminal = OnTerminal::spawn(&["watch", &id, "--server", &server.base]);
    terminal.expect("running").await;

    terminal.type_in("\x03").await;
    terminal.expect(&format!("Cancel job {id}? [y/N]")).await;
    terminal.type_in("y\n").await;

    let (code, seen) = terminal.exit_code().await;
    assert_eq!(code, 2, "{seen}");
    assert!(seen.contains(&format!("job {id} cancelled")), "{seen}");
    assert!(seen.contains(": cancelled: "), "the error code is shown:\n{seen}");
    assert_eq!(server.get(&format!("/v1/jobs/{id}")).await.1["status"], "cancelled");
}

#[tokio::test]
async fn ctrl_c_on_a_terminal_and_no_detaches_with_130() {
    let server = Server::start().await;
    let id = server.create_demo(json!({ "delay_ms": 60_000 })).await;
    let mut terminal = OnTerminal::spawn(&["watch", &id, "--server", &server.base]);
    terminal.expect("running").await;

    terminal.type_in("\x03").await;
    terminal.expect("[y/N]").await;
    terminal.type_in("n\n").await;

    let (code, seen) = terminal.exit_code().await;
    assert_eq!(code, 130, "{seen}");
    assert!(seen.contains("detached"), "{seen}");
    assert_eq!(server.get(&format!("/v1/jobs/{id}")).await.1["status"], "running");
}

#[tokio::test]
async fn yes_to_a_job_that_completed_meanwhile_says_it_completed_first() {
    let server = Server::start().await;
    let id = server.create("gate", json!({})).await;
    let mut terminal = OnTerminal::spawn(&["watch", &id, "--server", &server.base]);
    terminal.expect("running").await;
    terminal.type_in("\x03").await;
    terminal.expect("[y/N]").await;
    server.gate.add_permits(1);
    assert_eq!(server.wait_until_ended(&id).await["status"], "completed");

    terminal.type_in("y\n").await;

    let (code, seen) = terminal.exit_code().await;
    assert_eq!(code, 0, "{seen}");
    assert!(seen.contains("the job completed first"), "{seen}");
    assert!(seen.contains(&format!("job {id} completed")), "{seen}");
}

#[tokio::test]
async fn the_client_commands_send_their_token_to_a_server_with_authentication() {
    let key = "jck_terminal_0123456789abcdef0123456789ab";
    let hash: String = ring::digest::digest(&ring::digest::SHA256, key.as_bytes())
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let keys = std::env::temp_dir().join(format!("jobcast-cli-keys-{}.toml", std::process::id()));
    std::fs::write(
        &keys,
        format!("[[key]]\nsubject = \"ops\"\nrole = \"user\"\nsha256 = \"{hash}\"\n"),
    )
    .unwrap();
    let server = Server::start_with(Config {
        auth_keys: Some(keys.clone()),
        ticket_secret: Some(jobcast::config::Secret::new(
            "the-ticket-secret-of-the-cli-test-0123456789",
        )),
        ..Config::default()
    })
    .await;
    let params = r#"{"stages": [{"name": "s", "steps": 2}], "step_ms": 0}"#;
    let submit = ["submit", "demo", "--params", params, "--server", &server.base];

    let refused = run(&submit).await;
    assert_eq!(refused.code, 3, "{refused:?}");
    assert!(
        refused.stderr.contains("401"),
        "the server's answer is shown: {refused:?}"
    );

    let submitted = run(&[&submit[..], &["--token", key, "--watch"]].concat()).await;
    assert_eq!(submitted.code, 0, "{submitted:?}");
    let id = submitted.stdout.lines().next().unwrap().to_owned();
    let job: Value = server
        .http
        .get(server.url(&format!("/v1/jobs/{id}")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job["owner"], "ops", "created as the key's subject");

    let watched = tokio::time::timeout(
        WAIT,
        jobcast(&["watch", &id, "--server", &server.base])
            .env("JOBCAST_TOKEN", key)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(watched.status.code(), Some(0), "JOBCAST_TOKEN works too: {watched:?}");
    let _ = std::fs::remove_file(keys);
}
