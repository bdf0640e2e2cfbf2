//! Several instances on one Redis (CONTRACT.md, "Several instances"): real
//! `redis-server` and `jobcast` processes, started by the tests.

use std::process::Stdio;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::json;
use tokio::process::{Child, Command};

use crate::cluster::{free_port, skipped_when_balanced, Persistence, Redis};
use crate::helpers::{id_of, TestApp, BIN};

/// A jobcast process on the shared Redis.
struct Instance {
    api: TestApp,
    child: Child,
}

impl Instance {
    async fn start(redis: &Redis, args: &[&str]) -> Instance {
        let port = free_port();
        let child = Command::new(BIN)
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--store",
                &redis.url(),
                "--log",
                "warn",
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let api = TestApp::client_of(format!("http://127.0.0.1:{port}"));
        api.eventually("the instance to be ready", || async {
            let ready = api.client.get(api.url("/readyz")).send().await;
            ready.is_ok_and(|response| response.status() == 200)
        })
        .await;
        Instance { api, child }
    }

    /// Sends `signal` (as `kill` names it: KILL, STOP, CONT).
    async fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the instance runs").to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .await
            .unwrap();
        assert!(sent.success());
    }
}

#[tokio::test]
async fn a_job_on_one_instance_is_read_and_streamed_whole_on_another() {
    if skipped_when_balanced("starts its own Redis and jobcast processes") {
        return;
    }
    let redis = Redis::start(Persistence::AofAlways).await;
    let (a, b) = (Instance::start(&redis, &[]).await, Instance::start(&redis, &[]).await);
    let job = a
        .api
        .create_demo(json!({"stages": [{"name": "one", "steps": 20}, {"name": "two", "steps": 20}], "step_ms": 5, "delay_ms": 300}))
        .await;
    let id = id_of(&job);
    assert_eq!(
        b.api.get_job(&id).await["id"],
        job["id"],
        "the 202 means every instance knows the job"
    );
    let mut on_a = a.api.subscribe(&id).await;
    let mut on_b = b.api.subscribe(&id).await;
    let (seen_a, seen_b) = (on_a.all().await, on_b.all().await);
    for seen in [&seen_a, &seen_b] {
        assert_eq!(seen[0].event, "snapshot");
        let seqs: Vec<u64> = seen.iter().map(|event| event.seq()).collect();
        assert!(
            seqs.windows(2).all(|pair| pair[1] == pair[0] + 1),
            "every seq once, in order: {seqs:?}"
        );
        assert_eq!(seen.iter().filter(|event| event.is_terminal()).count(), 1);
        assert_eq!(seen.last().unwrap().event, "completed");
    }
    assert_eq!(seen_a.last().unwrap().data, seen_b.last().unwrap().data);
    let ended = b.api.get_job(&id).await;
    assert_eq!(ended, seen_b.last().unwrap().data);
    let listed = b.api.get_json("/v1/jobs").await;
    assert_eq!(listed["jobs"][0], ended);
}

#[tokio::test]
async fn the_all_jobs_stream_of_any_instance_shows_every_job_with_growing_ids() {
    if skipped_when_balanced("starts its own Redis and jobcast processes") {
        return;
    }
    let redis = Redis::start(Persistence::AofAlways).await;
    let (a, b) = (Instance::start(&redis, &[]).await, Instance::start(&redis, &[]).await);
    let mut firehose = b.api.stream("/v1/events", HeaderMap::new()).await;
    let quick = json!({"stages": [{"name": "s", "steps": 2}], "step_ms": 1});
    let on_a = id_of(&a.api.create_demo(quick.clone()).await);
    let on_b = id_of(&b.api.create_demo(quick).await);
    let mut ended = std::collections::BTreeSet::new();
    let mut last_id = 0u64;
    while ended.len() < 2 {
        let event = firehose.next().await.expect("the stream stays open");
        let event_id: u64 = event.id.parse().unwrap();
        assert!(event_id > last_id, "ids strictly increase: {event_id} after {last_id}");
        last_id = event_id;
        if event.is_terminal() {
            ended.insert(event.data["id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(ended, [on_a, on_b].into_iter().collect());
}

#[tokio::test]
async fn a_cancel_on_any_instance_stops_the_job_where_it_runs() {
    if skipped_when_balanced("starts its own Redis and jobcast processes") {
        return;
    }
    let redis = Redis::start(Persistence::AofAlways).await;
    let args = ["--cancel-grace", "1s"];
    let (a, b) = (
        Instance::start(&redis, &args).await,
        Instance::start(&redis, &args).await,
    );
    for ignore_cancel in [false, true] {
        let job = a
            .api
            .create_demo(
                json!({"stages": [{"name": "long", "steps": 10_000}], "step_ms": 10, "ignore_cancel": ignore_cancel}),
            )
            .await;
        let id = id_of(&job);
        a.api.wait_for_status(&id, "running").await;
        let mut watching_a = a.api.subscribe(&id).await;
        let asked = tokio::time::Instant::now();
        let (status, cancelled) = b.api.cancel(&id).await;
        assert_eq!(status, 200, "{cancelled}");
        assert_eq!(cancelled["status"], "cancelled");
        let code = if ignore_cancel { "cancel_forced" } else { "cancelled" };
        assert_eq!(cancelled["error"]["code"], code);
        assert!(
            asked.elapsed() < Duration::from_millis(1800),
            "within the grace period: {:?}",
            asked.elapsed()
        );
        let seen = watching_a.all().await;
        assert_eq!(
            seen.last().unwrap().data,
            cancelled,
            "the instance that ran it streams the same end"
        );
        assert_eq!(a.api.get_job(&id).await, cancelled);
    }
}

/// An instance A running a job until something ends it (it takes the job
/// as the only instance), then a second instance B streaming it; answers
/// A, B, the job's id and B's stream, which has seen it running.
async fn job_running_on_a(redis: &Redis, args: &[&str]) -> (Instance, Instance, String, crate::helpers::Sse) {
    let a = Instance::start(redis, args).await;
    let job = a
        .api
        .create_demo(json!({"stages": [{"name": "long", "steps": 100_000}], "step_ms": 10}))
        .await;
    let id = id_of(&job);
    a.api.wait_for_status(&id, "running").await;
    let b = Instance::start(redis, args).await;
    let mut stream = b.api.subscribe(&id).await;
    while stream.next().await.expect("the job runs").data["status"] != "running" {}
    (a, b, id, stream)
}

/// Reads `stream` to its end: the terminal event, checked to be the only
/// one and last.
async fn terminal_of(stream: &mut crate::helpers::Sse) -> crate::helpers::SseEvent {
    let events = stream.all().await;
    assert_eq!(
        events.iter().filter(|event| event.is_terminal()).count(),
        1,
        "{events:?}"
    );
    events.last().unwrap().clone()
}

#[tokio::test]
async fn the_jobs_of_a_killed_instance_end_instance_lost_within_the_lease() {
    if skipped_when_balanced("starts its own Redis and jobcast processes") {
        return;
    }
    let redis = Redis::start(Persistence::AofAlways).await;
    let (a, b, id, mut on_b) = job_running_on_a(&redis, &["--lease", "1s"]).await;
    let killed = tokio::time::Instant::now();
    a.signal("KILL").await;
    let ended = terminal_of(&mut on_b).await;
    let took = killed.elapsed();
    assert!(
        took <= Duration::from_millis(1500),
        "instance_lost within 1.5 leases: {took:?}"
    );
    assert_eq!(ended.event, "failed");
    assert_eq!(ended.data["error"]["code"], "instance_lost");
    assert_eq!(ended.data["error"]["retryable"], true);
    assert_eq!(ended.data["error"]["stage"], "long");
    assert_eq!(ended.data["stages"][0]["status"], "failed");
    assert_eq!(b.api.get_job(&id).await, ended.data);
}

#[tokio::test]
async fn the_lost_jobs_of_a_killed_instance_are_forgotten_after_their_retention() {
    if skipped_when_balanced("starts its own Redis and jobcast processes") {
        return;
    }
    let redis = Redis::start(Persistence::AofAlways).await;
    let (a, b, id, mut on_b) = job_running_on_a(&redis, &["--lease", "1s", "--retention", "1s"]).await;
    a.signal("KILL").await;
    assert_eq!(terminal_of(&mut on_b).await.data["error"]["code"], "instance_lost");
    forgotten_on(&b, &id).await;
}

#[tokio::test]
async fn the_ended_jobs_of_a_killed_instance_are_forgotten_after_their_retention() {
    if skipped_when_balanced("starts its own Redis and jobcast processes") {
        return;
    }
    let redis = Redis::start(Persistence::AofAlways).await;
    let args = ["--lease", "1s", "--retention", "2s"];
    let a = Instance::start(&redis, &args).await;
    let id = id_of(
        &a.api
            .create_demo(json!({"stages": [{"name": "s", "steps": 2}], "step_ms": 1}))
            .await,
    );
    assert_eq!(a.api.get_job_when_terminal(&id).await["status"], "completed");
    a.signal("KILL").await;
    let b = Instance::start(&redis, &args).await;
    assert_eq!(b.api.get_job(&id).await["status"], "completed", "kept at first");
    forgotten_on(&b, &id).await;
}

/// Waits until `instance` answers 404 for job `id`: it was forgotten.
async fn forgotten_on(instance: &Instance, id: &str) {
    let api = &instance.api;
    api.eventually("the job to be forgotten", || async {
        crate::helpers::send(api.client.get(api.url(&format!("/v1/jobs/{id}"))))
            .await
            .status()
            == 404
    })
    .await;
}

#[tokio::test]
async fn an_instance_paused_past_its_lease_is_fenced_off() {
    if skipped_when_balanced("starts its own Redis and jobcast processes") {
        return;
    }
    let redis = Redis::start(Persistence::AofAlways).await;
    let (a, b, id, mut on_b) = job_running_on_a(&redis, &["--lease", "1s"]).await;
    a.signal("STOP").await;
    let ended = terminal_of(&mut on_b).await;
    assert_eq!(ended.data["error"]["code"], "instance_lost");
    a.signal("CONT").await;
    // Its connections to Redis timed out while it was stopped: it is ready
    // again once its lease is renewed, as a balancer would see.
    ready_is(&a, 200).await;
    // A works again (its lease renewed), and has had time to try writing
    // the old job's next states: none of them is taken.
    let later = a
        .api
        .create_demo(json!({"stages": [{"name": "s", "steps": 20}], "step_ms": 10}))
        .await;
    b.api.get_job_when_terminal(&id_of(&later)).await;
    assert_eq!(b.api.get_job(&id).await, ended.data);
    assert_eq!(a.api.get_job(&id).await, ended.data);
}

#[tokio::test]
async fn queued_jobs_form_one_queue_that_any_instance_with_a_free_slot_takes_in_order() {
    if skipped_when_balanced("starts its own Redis and jobcast processes") {
        return;
    }
    let redis = Redis::start(Persistence::AofAlways).await;
    let args = ["--max-running", "1"];
    let (a, b) = (
        Instance::start(&redis, &args).await,
        Instance::start(&redis, &args).await,
    );
    let long = json!({"stages": [{"name": "long", "steps": 100_000}], "step_ms": 10});
    // A's one slot is taken; the next job created on A runs on B.
    let first = id_of(&a.api.create_demo(long.clone()).await);
    a.api.wait_for_status(&first, "running").await;
    let second = id_of(&a.api.create_demo(long).await);
    b.api.wait_for_status(&second, "running").await;
    // Every slot is busy: these wait, whichever instance admitted them.
    let quick = json!({"stages": [{"name": "s", "steps": 3}], "step_ms": 5});
    let mut queued = Vec::new();
    for instance in [&b, &a, &b, &a] {
        let job = instance.api.create_demo(quick.clone()).await;
        assert_eq!(job["status"], "queued");
        queued.push(id_of(&job));
    }
    // One of them, cancelled from the other instance, never runs.
    let (status, cancelled) = a.api.cancel(&queued[2]).await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (200, Some("cancelled")),
        "{cancelled}"
    );
    assert!(cancelled["started_at"].is_null());
    let _ = b.api.cancel(&first).await;
    let _ = a.api.cancel(&second).await;
    let mut started = Vec::new();
    for id in [&queued[0], &queued[1], &queued[3]] {
        let job = b.api.get_job_when_terminal(id).await;
        assert_eq!(job["status"], "completed", "{job}");
        started.push(chrono::DateTime::parse_from_rfc3339(job["started_at"].as_str().unwrap()).unwrap());
    }
    assert!(
        started.windows(2).all(|pair| pair[0] <= pair[1]),
        "taken oldest first: {started:?}"
    );
    assert_eq!(b.api.get_job(&queued[2]).await, cancelled);
}

/// Waits until `/readyz` on `instance` answers `status`.
async fn ready_is(instance: &Instance, status: u16) {
    let api = &instance.api;
    api.eventually(&format!("/readyz to answer {status}"), || async {
        let ready = api.client.get(api.url("/readyz")).send().await;
        ready.is_ok_and(|response| response.status() == status)
    })
    .await;
}

#[tokio::test]
async fn a_redis_restart_makes_instances_unready_and_streams_catch_up_after() {
    if skipped_when_balanced("starts its own Redis and jobcast processes") {
        return;
    }
    let mut redis = Redis::start(Persistence::AofAlways).await;
    let a = Instance::start(&redis, &[]).await;
    let job = a
        .api
        .create_demo(json!({"stages": [{"name": "work", "steps": 150}], "step_ms": 20}))
        .await;
    let id = id_of(&job);
    let mut stream = a.api.subscribe(&id).await;
    let mut seen = vec![stream.next().await.unwrap()];
    redis.kill().await;
    ready_is(&a, 503).await;
    let refused = crate::helpers::send(a.api.client.post(a.api.url("/v1/jobs")).json(&json!({"kind": "demo"}))).await;
    assert!(refused.headers().contains_key("retry-after"));
    crate::helpers::assert_problem(refused, 503, "creating while Redis is away").await;
    redis.restart().await;
    ready_is(&a, 200).await;
    seen.extend(stream.all().await);
    let seqs: Vec<u64> = seen.iter().map(|event| event.seq()).collect();
    assert!(
        seqs.windows(2).all(|pair| pair[1] > pair[0]),
        "never a seq twice or backwards: {seqs:?}"
    );
    assert_eq!(seen.iter().filter(|event| event.is_terminal()).count(), 1);
    assert_eq!(seen.last().unwrap().event, "completed");
    assert_eq!(a.api.get_job(&id).await, seen.last().unwrap().data);
}
