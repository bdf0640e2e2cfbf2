//! Durability (CONTRACT.md, "Durability and restarts"): the real binary on
//! an SQLite file of its own, stopped with SIGTERM or `kill -9` and started
//! again on the same file, checked through the public API.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::cluster::skipped_when_balanced;
use crate::helpers::{id_of, jobcast_exit, signal, start_jobcast, SseEvent, TestApp, WAIT};

/// How the test stops the server.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Stop {
    /// SIGTERM: a clean shutdown.
    Terminate,
    /// SIGKILL: a crash.
    Kill,
}

const BOTH: [Stop; 2] = [Stop::Terminate, Stop::Kill];

/// The jobcast binary on a database in a directory of its own (removed
/// when dropped), on a port it keeps across restarts.
struct Restartable {
    dir: PathBuf,
    port: u16,
    args: Vec<String>,
    child: Option<Child>,
    api: TestApp,
}

impl Restartable {
    async fn start(args: &[&str]) -> Restartable {
        let dir = new_dir("jobcast-restarts");
        std::fs::create_dir_all(&dir).unwrap();
        Restartable::start_in(dir, args).await
    }

    /// Starts the binary on a database in `dir`, an existing directory.
    async fn start_in(dir: PathBuf, args: &[&str]) -> Restartable {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Restartable {
            dir,
            port,
            args: args.iter().map(|arg| arg.to_string()).collect(),
            child: None,
            api: TestApp::client_of(format!("http://127.0.0.1:{port}")),
        };
        server.launch().await;
        server
    }

    fn database(&self) -> PathBuf {
        self.dir.join("jobs.db")
    }

    /// Starts the binary and waits until it is ready.
    async fn launch(&mut self) {
        let store = format!("sqlite:{}", self.database().display());
        let (child, _) = start_jobcast(self.port, &store, &self.args).await;
        self.child = Some(child);
    }

    async fn stop(&mut self, how: Stop) {
        let mut child = self.child.take().expect("the server runs");
        match how {
            Stop::Kill => child.start_kill().unwrap(),
            Stop::Terminate => signal(&child, "TERM").await,
        }
        let status = tokio::time::timeout(WAIT, child.wait())
            .await
            .expect("the server stops in time")
            .unwrap();
        if how == Stop::Terminate {
            assert!(status.success(), "a clean shutdown exits 0: {status}");
        }
    }

    async fn restart(&mut self, how: Stop) {
        self.stop(how).await;
        self.launch().await;
    }
}

impl Drop for Restartable {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A directory name of its own under the temporary directory.
fn new_dir(prefix: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

fn last_event_id(id: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("last-event-id", HeaderValue::from_str(&id.to_string()).unwrap());
    headers
}

/// A job that completes, one that fails and one that is cancelled while
/// running, each ended.
async fn ended_jobs(api: &TestApp) -> Vec<Value> {
    let completed = api
        .create_demo(json!({"stages": [{"name": "only", "steps": 3}], "step_ms": 0}))
        .await;
    let failed = api
        .create_demo(json!({
            "stages": [{"name": "a", "steps": 2}, {"name": "b", "steps": 2}],
            "step_ms": 0,
            "fail_at": "b",
        }))
        .await;
    let cancelled = api.create_demo(json!({"delay_ms": 600_000})).await;
    api.wait_for_status(&id_of(&cancelled), "running").await;
    let (status, _) = api.cancel(&id_of(&cancelled)).await;
    assert_eq!(status, 200);
    let mut ended = Vec::new();
    for job in [completed, failed, cancelled] {
        ended.push(api.get_job_when_terminal(&id_of(&job)).await);
    }
    let statuses: Vec<_> = ended.iter().map(|job| job["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["completed", "failed", "cancelled"]);
    ended
}

#[tokio::test]
async fn ended_jobs_and_their_streams_are_unchanged_after_a_restart() {
    if skipped_when_balanced("restarts its own jobcast process on SQLite") {
        return;
    }
    for how in BOTH {
        let mut server = Restartable::start(&[]).await;
        let ended = ended_jobs(&server.api).await;
        let listing = server.api.get_json("/v1/jobs").await;
        server.restart(how).await;
        let api = &server.api;
        assert_eq!(api.get_json("/v1/jobs").await["jobs"], listing["jobs"], "{how:?}");
        for job in &ended {
            let id = id_of(job);
            assert_eq!(&api.get_job(&id).await, job, "{how:?}: GET after the restart");
            let events = api.subscribe(&id).await.all().await;
            assert_eq!(events.len(), 1, "{how:?}: the terminal event, then the end");
            assert_eq!(events[0].event, job["status"].as_str().unwrap());
            assert_eq!(&events[0].data, job);
            let seq = job["seq"].as_u64().unwrap();
            let resumed = api.open(&format!("/v1/jobs/{id}/events"), last_event_id(seq)).await;
            assert_eq!(resumed.status(), 204, "{how:?}: resuming after the terminal event");
        }
    }
}

/// Reads a job's stream until it has seen `count` states.
async fn read_states(stream: &mut crate::helpers::Sse, count: usize) -> Vec<SseEvent> {
    let mut events = Vec::new();
    while events.len() < count {
        let event = stream.next().await.expect("the job is still running");
        assert!(!event.is_terminal(), "the job is still running: {event:?}");
        events.push(event);
    }
    events
}

#[tokio::test]
async fn a_job_running_at_a_crash_ends_interrupted_above_every_seq_sent() {
    if skipped_when_balanced("restarts its own jobcast process on SQLite") {
        return;
    }
    let mut server = Restartable::start(&["--publish-interval", "0"]).await;
    let job = server
        .api
        .create_demo(json!({"stages": [{"name": "work", "steps": 1_000_000}], "step_ms": 1}))
        .await;
    let id = id_of(&job);
    let mut all_jobs = server.api.stream("/v1/events", HeaderMap::new()).await;
    let mut stream = server.api.subscribe(&id).await;
    let mut seen = read_states(&mut stream, 30).await;
    server.stop(Stop::Kill).await;
    seen.extend(stream.until_cut().await);
    let seen_seq = seen.iter().map(SseEvent::seq).max().unwrap();
    let all_seen = all_jobs.until_cut().await;
    let last_all_id: u64 = all_seen.last().expect("/v1/events sent the job").id.parse().unwrap();

    server.launch().await;
    let api = &server.api;
    let events = api
        .stream(&format!("/v1/jobs/{id}/events"), last_event_id(seen_seq))
        .await
        .all()
        .await;
    assert_eq!(events.len(), 1, "only the terminal event: {events:?}");
    let ended = &events[0];
    assert_eq!(ended.event, "failed");
    assert!(
        ended.seq() > seen_seq,
        "{} above every seq sent ({seen_seq})",
        ended.seq()
    );
    assert_eq!(ended.data["status"], "failed");
    assert_eq!(ended.data["error"]["code"], "interrupted");
    assert_eq!(ended.data["error"]["retryable"], true);
    assert_eq!(ended.data["error"]["stage"], "work");
    assert_eq!(ended.data["stages"][0]["status"], "failed");
    assert_eq!(api.get_job(&id).await, ended.data);
    let resumed = api
        .open(&format!("/v1/jobs/{id}/events"), last_event_id(ended.seq()))
        .await;
    assert_eq!(resumed.status(), 204);

    // The firehose resumes from before the crash and goes on numbering.
    let mut all_jobs = api.stream("/v1/events", last_event_id(last_all_id)).await;
    let resumed_end = loop {
        let event = all_jobs.next().await.expect("the firehose stays open");
        let event_id: u64 = event.id.parse().unwrap();
        assert!(event_id > last_all_id, "{event_id} after {last_all_id}");
        if event.data["id"] == id.as_str() && event.data["status"] == "failed" {
            break event;
        }
    };
    assert_eq!(resumed_end.data, ended.data);
    let later = api
        .create_demo(json!({"stages": [{"name": "s", "steps": 1}], "step_ms": 0}))
        .await;
    let later_event = loop {
        let event = all_jobs.next().await.expect("the firehose stays open");
        if event.data["id"] == later["id"] {
            break event;
        }
    };
    assert!(later_event.id.parse::<u64>().unwrap() > resumed_end.id.parse::<u64>().unwrap());
}

#[tokio::test]
async fn a_clean_shutdown_ends_running_jobs_before_exit_and_the_end_is_kept() {
    if skipped_when_balanced("restarts its own jobcast process on SQLite") {
        return;
    }
    let mut server = Restartable::start(&[]).await;
    let job = server.api.create_demo(json!({"delay_ms": 600_000})).await;
    let id = id_of(&job);
    server.api.wait_for_status(&id, "running").await;
    let mut stream = server.api.subscribe(&id).await;
    assert_eq!(stream.next().await.unwrap().event, "snapshot");
    server.stop(Stop::Terminate).await;
    let events = stream.until_cut().await;
    let ended = events
        .last()
        .expect("the terminal event reached the stream before the exit");
    assert_eq!(ended.event, "failed");
    assert_eq!(ended.data["error"]["code"], "shutdown");
    assert_eq!(ended.data["error"]["retryable"], true);
    let wal = std::fs::metadata(format!("{}-wal", server.database().display()));
    assert!(
        wal.is_err() || wal.is_ok_and(|wal| wal.len() == 0),
        "a clean stop leaves the whole database in its file, the WAL empty"
    );
    server.launch().await;
    assert_eq!(server.api.get_job(&id).await, ended.data);
    let resumed = server
        .api
        .open(&format!("/v1/jobs/{id}/events"), last_event_id(ended.seq()))
        .await;
    assert_eq!(resumed.status(), 204);
}

#[tokio::test]
async fn queued_jobs_run_after_a_restart_in_their_original_order() {
    if skipped_when_balanced("restarts its own jobcast process on SQLite") {
        return;
    }
    for how in BOTH {
        let mut server = Restartable::start(&["--max-running", "1"]).await;
        let blocker = id_of(&server.api.create_demo(json!({"delay_ms": 600_000})).await);
        server.api.wait_for_status(&blocker, "running").await;
        let mut queued = Vec::new();
        for label in ["first", "second", "third", "fourth"] {
            let job = server
                .api
                .create_job(&json!({
                    "kind": "demo",
                    "params": {"stages": [{"name": "s", "steps": 2}], "step_ms": 1},
                    "labels": {"order": label},
                }))
                .await;
            assert_eq!(job["status"], "queued");
            queued.push(id_of(&job));
        }
        server.restart(how).await;
        let api = &server.api;
        let blocked = api.get_job_when_terminal(&blocker).await;
        let code = if how == Stop::Kill { "interrupted" } else { "shutdown" };
        assert_eq!(blocked["error"]["code"], code, "{how:?}");
        let mut started = Vec::new();
        for id in &queued {
            let job = api.get_job_when_terminal(id).await;
            assert_eq!(job["status"], "completed", "{how:?}: {job}");
            assert_eq!(job["labels"]["order"], api.get_job(id).await["labels"]["order"]);
            started.push(chrono::DateTime::parse_from_rfc3339(job["started_at"].as_str().unwrap()).unwrap());
        }
        assert!(
            started.windows(2).all(|pair| pair[0] < pair[1]),
            "{how:?}: run in the order they were created: {started:?}"
        );
    }
}

#[tokio::test]
async fn a_crash_right_after_a_terminal_event_never_brings_the_job_back_otherwise() {
    if skipped_when_balanced("restarts its own jobcast process on SQLite") {
        return;
    }
    let mut server = Restartable::start(&["--publish-interval", "0"]).await;
    for round in 0..12u64 {
        let api = &server.api;
        let ended = match round % 3 {
            0 | 1 => {
                let fail_at = if round % 3 == 1 { json!("b") } else { Value::Null };
                let job = api
                    .create_demo(json!({
                        "stages": [{"name": "a", "steps": 1 + round}, {"name": "b", "steps": 2}],
                        "step_ms": round % 2,
                        "fail_at": fail_at,
                    }))
                    .await;
                let mut stream = api.subscribe(&id_of(&job)).await;
                loop {
                    let event = stream.next().await.expect("the job ends");
                    if event.is_terminal() {
                        break event.data;
                    }
                }
            }
            _ => {
                let job = api.create_demo(json!({"delay_ms": 600_000})).await;
                let (status, cancelled) = api.cancel(&id_of(&job)).await;
                assert_eq!(status, 200);
                cancelled
            }
        };
        server.restart(Stop::Kill).await;
        let after = server.api.get_job(&id_of(&ended)).await;
        assert_eq!(after, ended, "round {round}: the job as its terminal event showed it");
    }
}

#[tokio::test]
async fn a_store_that_cannot_be_used_stops_the_server_at_start_and_is_left_untouched() {
    if skipped_when_balanced("restarts its own jobcast process on SQLite") {
        return;
    }
    let server = Restartable::start(&[]).await;
    let dir = server.dir.clone();
    let mut server = server;
    server.stop(Stop::Terminate).await;
    let newer = server.database();
    let connection = rusqlite::Connection::open(&newer).unwrap();
    connection.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(connection);

    let text = dir.join("notes.txt");
    std::fs::write(&text, "these are not the jobs you are looking for\n".repeat(200)).unwrap();
    let other = dir.join("other.db");
    let connection = rusqlite::Connection::open(&other).unwrap();
    connection
        .execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('keep me');")
        .unwrap();
    drop(connection);
    let missing = dir.join("no-such-directory").join("jobs.db");

    for (path, expected) in [
        (&missing, "cannot open"),
        (&text, "not a jobcast database"),
        (&other, "not a jobcast database"),
        (&newer, "newer"),
    ] {
        let before = std::fs::read(path).ok();
        let store = format!("sqlite:{}", path.display());
        let (code, stderr) = jobcast_exit(&["--store", &store], &[]).await;
        assert_ne!(code, Some(0), "{store}: {stderr}");
        assert!(code.is_some(), "{store}: exits, not killed");
        let lines: Vec<_> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{store}: one line: {stderr}");
        assert!(
            lines[0].starts_with("jobcast: ") && lines[0].contains(expected),
            "{store}: {stderr}"
        );
        assert!(
            lines[0].contains(&path.display().to_string()),
            "{store} names the file: {stderr}"
        );
        assert_eq!(std::fs::read(path).ok(), before, "{store} is left untouched");
    }
    assert!(!missing.parent().unwrap().exists(), "no directory is made");
}

/// A small file system of its own (a tmpfs), unmounted when dropped.
struct SmallDisk {
    dir: PathBuf,
}

/// Set to `required` (as CI does) to fail, rather than skip, the disk-full
/// test where no tmpfs can be mounted (it needs root).
const DISK_FULL_VARIABLE: &str = "JOBCAST_TEST_DISK_FULL";

impl SmallDisk {
    async fn mount(size: &str) -> Option<SmallDisk> {
        let dir = new_dir("jobcast-small-disk");
        std::fs::create_dir_all(&dir).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|status| status.success());
        if mounted {
            return Some(SmallDisk { dir });
        }
        let _ = std::fs::remove_dir(&dir);
        let required = std::env::var(DISK_FULL_VARIABLE).is_ok_and(|value| value == "required");
        assert!(
            !required,
            "{DISK_FULL_VARIABLE}=required, but no tmpfs can be mounted (run as root)"
        );
        eprintln!("skipped: no tmpfs can be mounted here (run as root, or set {DISK_FULL_VARIABLE}=required)");
        None
    }

    /// Fills the disk with one file; answers its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.dir.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 16 * 1024];
        while file.write_all(&chunk).is_ok() {}
        while file.write_all(&chunk[..512]).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads `stream` until `done` is true of the server, checking that every
/// `seq` arrives once and in order; answers the events read.
async fn read_while(stream: &mut crate::helpers::Sse, events: &mut Vec<SseEvent>, until: impl Fn(&SseEvent) -> bool) {
    loop {
        let event = stream.next().await.expect("the stream stays open");
        if let Some(last) = events.last() {
            assert_eq!(event.seq(), last.seq() + 1, "every seq once and in order");
        }
        let stop = until(&event) || event.is_terminal();
        events.push(event);
        if stop {
            return;
        }
    }
}

#[tokio::test]
async fn a_full_disk_makes_the_server_unready_and_nothing_acknowledged_is_lost() {
    if skipped_when_balanced("restarts its own jobcast process on SQLite") {
        return;
    }
    let Some(disk) = SmallDisk::mount("4m").await else {
        return;
    };
    let dir = disk.dir.join("jobcast");
    std::fs::create_dir(&dir).unwrap();
    let mut server = Restartable::start_in(dir, &[]).await;
    let api = &server.api;
    let running = id_of(
        &api.create_demo(json!({"stages": [{"name": "long", "steps": 100_000}], "step_ms": 5}))
            .await,
    );
    let mut stream = api.subscribe(&running).await;
    let mut events = Vec::new();
    read_while(&mut stream, &mut events, |event| event.seq() >= 3).await;

    let filler = disk.fill();
    api.eventually("/readyz to answer 503", || async {
        api.client.get(api.url("/readyz")).send().await.unwrap().status() == 503
    })
    .await;
    let refused = api
        .client
        .post(api.url("/v1/jobs"))
        .json(&json!({"kind": "demo"}))
        .send()
        .await
        .unwrap();
    assert!(
        refused.headers().contains_key("retry-after"),
        "a 503 says when to try again"
    );
    crate::helpers::assert_problem(refused, 503, "creating on a full disk").await;
    // The running job goes on, and its stream with it.
    let before = events.last().unwrap().seq();
    read_while(&mut stream, &mut events, |event| event.seq() >= before + 3).await;

    std::fs::remove_file(filler).unwrap();
    api.eventually("/readyz to answer 200 again", || async {
        api.client.get(api.url("/readyz")).send().await.unwrap().status() == 200
    })
    .await;
    let created = api.create_demo(json!({"delay_ms": 600_000})).await;
    let (status, cancelled) = api.cancel(&running).await;
    assert_eq!(status, 200);
    assert_eq!(cancelled["status"], "cancelled");
    read_while(&mut stream, &mut events, |_| false).await;
    assert_eq!(
        events.last().unwrap().data,
        cancelled,
        "the stream caught up to the end"
    );
    assert!(stream.next().await.is_none(), "and ended");

    server.restart(Stop::Kill).await;
    assert_eq!(server.api.get_job(&running).await, cancelled);
    assert_eq!(server.api.get_job(&id_of(&created)).await["status"], "failed");
}

/// POSTs `body` with `Idempotency-Key: key`: the status, whether the answer
/// is a replay, and the job.
async fn create_keyed(api: &TestApp, key: &str, body: Value) -> (u16, bool, Value) {
    let request = api
        .client
        .post(api.url("/v1/jobs"))
        .header("idempotency-key", key)
        .json(&body);
    let response = crate::helpers::send(request).await;
    let replayed = response.headers().contains_key("idempotent-replayed");
    (response.status().as_u16(), replayed, response.json().await.unwrap())
}

#[tokio::test]
async fn idempotency_keys_and_worker_tokens_outlive_a_crash() {
    if skipped_when_balanced("restarts its own jobcast process on SQLite") {
        return;
    }
    let dir = new_dir("jobcast-restarts");
    std::fs::create_dir_all(&dir).unwrap();
    let kinds = dir.join("kinds.toml");
    std::fs::write(
        &kinds,
        r#"
        [kinds.ingest]
        description = "Indexes a file, in a worker"
        stages = [{ name = "index", weight = 1 }]
        [kinds.ingest.params.url]
        type = "string"
        required = true
        [kinds.ingest.external]
        heartbeat_timeout = "30s"
        "#,
    )
    .unwrap();
    let mut server = Restartable::start_in(dir, &["--config", kinds.to_str().unwrap()]).await;
    let ingest = json!({"kind": "ingest", "params": {"url": "https://example.com/a.csv"}});
    let demo = json!({"kind": "demo", "params": {"stages": [{"name": "s", "steps": 1}], "step_ms": 0}});
    let (status, _, external) = create_keyed(&server.api, "ingest-1", ingest.clone()).await;
    assert_eq!(status, 202);
    let (status, _, done) = create_keyed(&server.api, "demo-1", demo.clone()).await;
    assert_eq!(status, 202);
    let done = server.api.get_job_when_terminal(&id_of(&done)).await;
    let token = external["worker_token"].as_str().unwrap().to_owned();

    server.restart(Stop::Kill).await;
    let api = &server.api;
    let (status, replayed, again) = create_keyed(&server.api, "ingest-1", ingest.clone()).await;
    assert_eq!((status, replayed), (202, true), "{again}");
    assert_eq!(again["id"], external["id"]);
    assert_eq!(again["worker_token"], token.as_str(), "the token is answered again");
    let (status, replayed, again) = create_keyed(&server.api, "demo-1", demo).await;
    assert_eq!((status, replayed), (202, true));
    assert_eq!(again, done, "the ended job, as it is");
    let (status, _, refused) = create_keyed(&server.api, "demo-1", ingest).await;
    assert_eq!(status, 422, "the key still names its job: {refused}");

    let id = id_of(&external);
    let worker_call = |action: &str, body: Value| {
        api.client
            .post(api.url(&format!("/v1/jobs/{id}/{action}")))
            .bearer_auth(&token)
            .json(&body)
    };
    let beat = crate::helpers::send(worker_call(
        "heartbeat",
        json!({"stage": "index", "current": 1, "total": 2}),
    ))
    .await;
    assert_eq!(beat.status(), 200, "the worker's token still opens its job");
    let finished = crate::helpers::send(worker_call("complete", json!({"result": {"rows": 2}}))).await;
    assert_eq!(finished.status(), 200);
    assert_eq!(api.get_job(&id).await["status"], "completed");
}

#[tokio::test]
async fn a_create_whose_client_goes_away_leaves_a_job_that_runs_or_none() {
    if skipped_when_balanced("restarts its own jobcast process on SQLite") {
        return;
    }
    let mut server = Restartable::start(&["--max-queued", "4"]).await;
    let body = json!({"kind": "demo", "params": {"stages": [{"name": "s", "steps": 1}], "step_ms": 0}});
    // Over HTTP/2 a request given up is reset at once, and the server drops
    // its handler wherever it is.
    let h2c = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    for attempt in 0..60u64 {
        // Cut off at varied points: before, during and after the commit.
        let cut = Duration::from_micros(100 + attempt * 97 % 4000);
        let _ = h2c
            .post(server.api.url("/v1/jobs"))
            .json(&body)
            .timeout(cut)
            .send()
            .await;
    }
    let api = &server.api;
    for job in api.get_json("/v1/jobs?limit=100").await["jobs"].as_array().unwrap() {
        let ended = api.get_job_when_terminal(&id_of(job)).await;
        assert_eq!(ended["status"], "completed", "every stored job runs: {ended}");
    }
    // No place in the queue is held by a job that never runs.
    for _ in 0..4 {
        api.create_demo(json!({"delay_ms": 600_000})).await;
    }
    server.restart(Stop::Kill).await;
    let jobs = server.api.get_json("/v1/jobs?limit=100").await;
    for job in jobs["jobs"].as_array().unwrap() {
        if job["params"]["delay_ms"].is_null() {
            let ended = server.api.get_job_when_terminal(&id_of(job)).await;
            assert_eq!(ended["status"], "completed", "every stored job runs: {ended}");
        } else {
            // Stored running, or still queued when its running state was
            // not yet written: either way it is not stuck queued.
            let job = server.api.get_job(&id_of(job)).await;
            if job["error"]["code"] != "interrupted" {
                server.api.wait_for_status(&id_of(&job), "running").await;
            }
        }
    }
}
