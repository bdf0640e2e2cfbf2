//! A job's life beyond progress: cancel (queued, running, forced, idempotent,
//! racing completion), panics, the running and queue limits, retention, and
//! graceful shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use jobcast::{Config, JobContext, JobError, JobResult, Kind};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde_json::{json, Map, Value};

use crate::cluster::skipped_when_balanced;
use crate::helpers::*;

// ---------------------------------------------------------------- Cancel

#[tokio::test]
async fn a_queued_job_is_cancelled_at_once_and_never_starts() {
    let app = TestApp::spawn_with(Config {
        max_running: 1,
        ..test_config()
    })
    .await;
    app.take_extra_running_slots(1).await;
    let long = app.create_demo(long_wait()).await;
    let long_id = id_of(&long);
    app.wait_for_status(&long_id, "running").await;
    let queued = app.create_demo(demo(2, 1)).await;
    let queued_id = id_of(&queued);
    assert_eq!(app.get_job(&queued_id).await["status"], "queued");
    let mut stream = app.subscribe(&queued_id).await;
    assert_eq!(stream.next().await.unwrap().data["status"], "queued");

    let (status, job) = app.cancel(&queued_id).await;

    assert_eq!(status, 200, "{job}");
    assert_eq!(job["status"], "cancelled");
    assert_eq!(job["started_at"], Value::Null);
    assert!(job["finished_at"].is_string(), "a cancelled job has finished_at: {job}");
    assert_eq!(job["error"]["code"], "cancelled");
    assert_eq!(job["error"]["retryable"], false);
    assert_eq!(job["error"]["stage"], Value::Null);
    let events = stream.all().await;
    assert_eq!(events.last().unwrap().event, "cancelled");
    assert_eq!(
        events.last().unwrap().data,
        job,
        "the stream tells the response's outcome"
    );
    // Once the slot frees, the cancelled job still never runs.
    assert_eq!(app.cancel(&long_id).await.0, 200);
    let after = app.create_demo(demo(1, 0)).await;
    let events = app.subscribe(&id_of(&after)).await.all().await;
    assert_eq!(events.last().unwrap().event, "completed");
    assert_eq!(app.get_job(&queued_id).await, job, "a cancelled job never changes");
}

#[tokio::test]
async fn a_running_job_goes_through_cancelling_and_the_cancel_answers_once_its_task_stopped() {
    let stopped = Arc::new(AtomicBool::new(false));
    let kind = {
        let stopped = stopped.clone();
        Kind::new("slow_to_stop", move |ctx: JobContext, _: Map<String, Value>| {
            slow_to_stop(ctx, stopped.clone())
        })
    };
    let app = TestApp::spawn_with_kinds(test_config(), vec![kind]).await;
    let job = app.create("slow_to_stop", json!({})).await;
    let id = id_of(&job);
    let mut stream = app.subscribe(&id).await;
    let mut events = Vec::new();
    while let Some(event) = stream.next().await {
        let in_transform = event.data["stage"]["name"] == "transform" && event.data["stage"]["current"] == 3;
        events.push(event);
        if in_transform {
            break;
        }
    }
    let reader = tokio::spawn(async move {
        events.extend(stream.all().await);
        events
    });

    let (status, job) = app.cancel(&id).await;

    assert!(
        stopped.load(Ordering::SeqCst),
        "the cancel answered before the job's task stopped"
    );
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["status"], "cancelled");
    assert_eq!(job["error"]["code"], "cancelled");
    assert_eq!(job["error"]["retryable"], false);
    assert_eq!(job["error"]["stage"], "transform");
    assert_eq!(stage_statuses(&job), ["done", "cancelled", "pending"]);
    let events = reader.await.unwrap();
    assert_well_formed(&events);
    let cancelling = events
        .iter()
        .position(|event| event.data["status"] == "cancelling")
        .expect("the stream shows the job cancelling");
    assert_eq!(events[cancelling].event, "progress");
    assert_eq!(cancelling, events.len() - 2, "cancelling comes right before the end");
    let last = events.last().unwrap();
    assert_eq!(last.event, "cancelled");
    assert_eq!(last.seq(), job["seq"].as_u64().unwrap());
    assert_eq!(last.data, job);
    assert_eq!(app.get_job(&id).await, job);
}

#[tokio::test]
async fn a_job_that_ignores_cancel_is_aborted_after_the_grace_period() {
    let app = TestApp::spawn_with(Config {
        cancel_grace: Duration::from_millis(300),
        ..test_config()
    })
    .await;
    let idle = app.idle_job_tasks().await;
    let job = app
        .create_demo(json!({
            "stages": [{ "name": "work", "weight": 1.0, "steps": 1000 }],
            "step_ms": 20,
            "ignore_cancel": true
        }))
        .await;
    let id = id_of(&job);
    let mut stream = app.subscribe(&id).await;
    let first = stream.next().await.unwrap();
    let reader = tokio::spawn(async move {
        let mut events = vec![first];
        events.extend(stream.all().await);
        events
    });
    app.wait_for_status(&id, "running").await;

    let asked = Instant::now();
    let (status, job) = app.cancel(&id).await;
    let waited = asked.elapsed();

    assert!(
        waited >= Duration::from_millis(290),
        "answered after {waited:?}, before the grace period"
    );
    assert!(
        waited < Duration::from_secs(2),
        "answered after {waited:?}, long after the grace period"
    );
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["status"], "cancelled");
    assert_eq!(job["error"]["code"], "cancel_forced");
    assert_eq!(job["error"]["retryable"], false);
    assert_eq!(job["error"]["stage"], "work");
    let events = reader.await.unwrap();
    assert_well_formed(&events);
    assert!(events.iter().any(|event| event.data["status"] == "cancelling"));
    assert_eq!(events.last().unwrap().event, "cancelled");
    assert_eq!(events.last().unwrap().data, job);
    // The aborted task is gone: only the idle server's tasks are left.
    app.eventually("the aborted job's task to end", || async {
        app.metric("jobcast_job_tasks").await == idle
    })
    .await;
    assert_eq!(app.get_job(&id).await, job, "an aborted job never changes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_is_idempotent_and_concurrent_cancels_agree() {
    let app = TestApp::spawn_with(Config {
        cancel_grace: Duration::from_millis(300),
        ..test_config()
    })
    .await;

    // Again on a cancelled job: the same job.
    let job = app.create_demo(long_wait()).await;
    let id = id_of(&job);
    app.wait_for_status(&id, "running").await;
    let (status, first) = app.cancel(&id).await;
    assert_eq!(status, 200);
    assert_eq!(first["status"], "cancelled");
    let (status, again) = app.cancel(&id).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, first, "cancelling a cancelled job answers the same job");

    // Two at once, on a job that stops promptly and on one that must be aborted.
    for params in [long_wait(), json!({ "delay_ms": 60_000, "ignore_cancel": true })] {
        let job = app.create_demo(params).await;
        let id = id_of(&job);
        app.wait_for_status(&id, "running").await;
        let ((status_a, a), (status_b, b)) = tokio::join!(app.cancel(&id), app.cancel(&id));
        assert_eq!((status_a, status_b), (200, 200), "{a}\n{b}");
        assert_eq!(a["status"], "cancelled");
        assert_eq!(a["seq"], b["seq"], "both answers tell the same final state");
        assert_eq!(a, b);
        assert_eq!(app.get_job(&id).await, a);
    }
}

#[tokio::test]
async fn cancelling_a_finished_job_is_a_conflict_holding_the_job() {
    let app = TestApp::spawn().await;
    let done = app.create_demo(demo(2, 1)).await;
    let done_id = id_of(&done);
    let events = app.subscribe(&done_id).await.all().await;
    assert_eq!(events.last().unwrap().event, "completed");
    let failed = app
        .create_demo(json!({
            "stages": [{ "name": "work", "weight": 1.0, "steps": 4 }],
            "step_ms": 1,
            "fail_at": "work"
        }))
        .await;
    let failed_id = id_of(&failed);
    let events = app.subscribe(&failed_id).await.all().await;
    assert_eq!(events.last().unwrap().event, "failed");

    for (id, status) in [(&done_id, "completed"), (&failed_id, "failed")] {
        let problem = assert_problem(send_cancel(&app, id).await, 409, &format!("cancelling a {status} job")).await;
        assert_eq!(problem["job"]["status"], status);
        assert_eq!(
            problem["job"],
            app.get_job(id).await,
            "the conflict holds the job as it is"
        );
    }

    assert_problem(send_cancel(&app, UNKNOWN_ID).await, 404, "cancelling an unknown job").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_and_completion_racing_agree_on_one_outcome_everywhere() {
    const ROUNDS: u64 = 240;
    let app = TestApp::spawn().await;
    let outcomes: Vec<&'static str> = futures_util::stream::iter(0..ROUNDS)
        .map(|round| race_once(&app, round))
        .buffer_unordered(8)
        .collect()
        .await;
    let cancelled = outcomes.iter().filter(|outcome| **outcome == "cancelled").count();
    let completed = outcomes.iter().filter(|outcome| **outcome == "completed").count();
    println!("cancel/complete race: {cancelled} cancelled, {completed} completed");
    assert_eq!(cancelled + completed, ROUNDS as usize);
    assert!(cancelled > 0, "the cancel never won ({completed} completed)");
    assert!(completed > 0, "the completion never won ({cancelled} cancelled)");
}

#[tokio::test]
async fn a_job_that_ends_otherwise_while_cancelling_keeps_its_outcome_and_the_cancel_conflicts() {
    let app = TestApp::spawn_with_kinds(
        test_config(),
        vec![
            Kind::new("completes_anyway", completes_anyway),
            Kind::new("fails_anyway", fails_anyway),
        ],
    )
    .await;

    for (kind, outcome) in [("completes_anyway", "completed"), ("fails_anyway", "failed")] {
        let job = app.create(kind, json!({})).await;
        let id = id_of(&job);
        let mut stream = app.subscribe(&id).await;
        let mut events = vec![stream.next().await.unwrap()];
        if events[0].data["status"] != "running" {
            events.push(next_with_status(&mut stream, "running").await);
        }
        let reader = tokio::spawn(async move {
            events.extend(stream.all().await);
            events
        });

        let problem = assert_problem(send_cancel(&app, &id).await, 409, kind).await;

        let job = &problem["job"];
        assert_eq!(job["status"], outcome, "{kind}");
        let events = reader.await.unwrap();
        assert_well_formed(&events);
        assert!(
            events.iter().any(|event| event.data["status"] == "cancelling"),
            "{kind}: the stream shows the job cancelling"
        );
        assert_eq!(events.last().unwrap().event, outcome, "{kind}");
        assert_eq!(&events.last().unwrap().data, job, "{kind}");
        assert_eq!(&app.get_job(&id).await, job, "{kind}");
        if outcome == "completed" {
            assert_eq!(job["result"], json!({ "finished": "anyway" }));
            assert_eq!(job["error"], Value::Null);
            assert_eq!(job["progress"], 1.0);
            assert_eq!(stage_statuses(job), ["done"]);
        } else {
            assert_eq!(job["error"]["code"], "boom");
            assert_eq!(job["error"]["stage"], "only");
            assert_eq!(job["result"], Value::Null);
            assert_eq!(stage_statuses(job), ["failed"]);
        }
    }
}

#[tokio::test]
async fn a_panicking_job_fails_with_code_panic_and_other_jobs_carry_on() {
    let app = TestApp::spawn_with_kinds(
        Config {
            max_running: 1,
            ..test_config()
        },
        vec![Kind::new("panics", panics)],
    )
    .await;
    let neighbour = app.create_demo(demo(20, 5)).await;
    let neighbour_stream = app.subscribe(&id_of(&neighbour)).await;
    let neighbour_events = tokio::spawn(async move {
        let mut stream = neighbour_stream;
        stream.all().await
    });

    let job = app.create("panics", json!({})).await;
    let id = id_of(&job);
    let events = app.subscribe(&id).await.all().await;

    assert_well_formed(&events);
    let last = events.last().unwrap();
    assert_eq!(last.event, "failed");
    assert_eq!(last.data["error"]["code"], "panic");
    assert_eq!(last.data["error"]["stage"], "explode");
    assert_eq!(stage_statuses(&last.data), ["failed"]);
    assert_eq!(app.get_job(&id).await, last.data);
    let neighbour_events = neighbour_events.await.unwrap();
    assert_well_formed(&neighbour_events);
    assert_eq!(neighbour_events.last().unwrap().event, "completed");
    // The panic gave its running slot back: with max_running 1, more jobs run.
    for _ in 0..2 {
        let next = app.create_demo(demo(2, 1)).await;
        let events = app.subscribe(&id_of(&next)).await.all().await;
        assert_eq!(events.last().unwrap().event, "completed");
    }
    let second = app.create("panics", json!({})).await;
    let events = app.subscribe(&id_of(&second)).await.all().await;
    assert_eq!(events.last().unwrap().data["error"]["code"], "panic");
    assert_eq!(app.client.get(app.url("/healthz")).send().await.unwrap().status(), 200);
}

// ------------------------------------------------------ Limits and lifetime

#[tokio::test]
async fn jobs_beyond_max_running_wait_queued_and_start_first_in_first_out() {
    let app = TestApp::spawn_with(Config {
        max_running: 2,
        ..test_config()
    })
    .await;
    let extra = app.take_extra_running_slots(2).await.len() as f64;
    let mut running = Vec::new();
    for _ in 0..2 {
        let job = app.create_demo(long_wait()).await;
        running.push(id_of(&job));
        app.wait_for_status(running.last().unwrap(), "running").await;
    }
    let mut queued = Vec::new();
    for _ in 0..4 {
        let job = app.create_demo(long_wait()).await;
        assert_eq!(job["status"], "queued");
        queued.push(id_of(&job));
    }
    for id in &queued {
        let job = app.get_job(id).await;
        assert_eq!(job["status"], "queued");
        assert_eq!(job["started_at"], Value::Null);
    }
    assert_eq!(app.metric("jobcast_jobs_running").await, 2.0 + extra);
    assert_eq!(app.metric("jobcast_jobs_queued").await, 4.0);

    // Each freed slot goes to the earliest queued job.
    for (freed, next) in queued.iter().enumerate() {
        let oldest_running = running.remove(0);
        assert_eq!(app.cancel(&oldest_running).await.0, 200);
        app.wait_for_status(next, "running").await;
        running.push(next.clone());
        for later in &queued[freed + 1..] {
            assert_eq!(
                app.get_job(later).await["status"],
                "queued",
                "job {later} started before the earlier {next}"
            );
        }
        for id in &running {
            assert_eq!(app.get_job(id).await["status"], "running");
        }
    }
}

#[tokio::test]
async fn a_full_queue_refuses_new_jobs_with_503_and_retry_after() {
    let app = TestApp::spawn_with(Config {
        max_running: 1,
        max_queued: 1,
        ..test_config()
    })
    .await;
    let extra = app.take_extra_running_slots(1).await.len();
    let running = app.create_demo(long_wait()).await;
    app.wait_for_status(&id_of(&running), "running").await;
    let queued = app.create_demo(long_wait()).await;
    assert_eq!(queued["status"], "queued");

    let refused = create_response(&app).await;

    assert_eq!(refused.status(), 503);
    let retry_after = refused
        .headers()
        .get(RETRY_AFTER)
        .expect("a 503 has Retry-After")
        .to_str()
        .unwrap()
        .parse::<u64>()
        .expect("Retry-After is a number of seconds");
    assert!(retry_after >= 1);
    assert_problem(refused, 503, "a job beyond the full queue").await;
    let listed: Value = app.get_json("/v1/jobs").await;
    assert_eq!(
        listed["jobs"].as_array().unwrap().len(),
        2 + extra,
        "a refused job does not exist"
    );
    // Once the running job ends, the queued one runs and its place is free.
    assert_eq!(app.cancel(&id_of(&running)).await.0, 200);
    app.wait_for_status(&id_of(&queued), "running").await;
    assert_eq!(create_response(&app).await.status(), 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_queued_job_gives_its_queue_place_back_at_once() {
    let app = TestApp::spawn_with(Config {
        max_running: 1,
        max_queued: 1,
        ..test_config()
    })
    .await;
    app.take_extra_running_slots(1).await;
    let running = app.create_demo(long_wait()).await;
    app.wait_for_status(&id_of(&running), "running").await;
    let mut queued = app.create_demo(long_wait()).await;

    for round in 0..500 {
        assert_eq!(
            create_response(&app).await.status(),
            503,
            "round {round}: the queue is full"
        );
        let (status, _) = app.cancel(&id_of(&queued)).await;
        assert_eq!(status, 200);
        // The cancelled job no longer waits, so the queue has room right away.
        let response = create_response(&app).await;
        assert_eq!(
            response.status(),
            202,
            "round {round}: the cancelled job's queue place was not given back"
        );
        queued = response.json().await.unwrap();
        assert_eq!(queued["status"], "queued");
    }
}

#[tokio::test]
async fn a_finished_job_is_forgotten_after_its_retention_with_everything_that_tracked_it() {
    let app = TestApp::spawn_with(Config {
        retention: Duration::from_millis(300),
        ..test_config()
    })
    .await;
    let baseline = app.idle_job_tasks().await;
    let job = app.create_demo(demo(3, 1)).await;
    let id = id_of(&job);
    let events = app.subscribe(&id).await.all().await;
    assert_eq!(events.last().unwrap().event, "completed");
    assert_eq!(app.get_job(&id).await["status"], "completed", "kept at first");

    let job_path = format!("/v1/jobs/{id}");
    let events_path = format!("/v1/jobs/{id}/events");
    app.eventually("the job to expire", || async {
        status_of(&app, &job_path).await == 404
    })
    .await;
    let response = app.open(&events_path, HeaderMap::new()).await;
    assert_problem(response, 404, "the stream of an expired job").await;
    assert_problem(send_cancel(&app, &id).await, 404, "cancelling an expired job").await;
    let listed: Value = app.get_json("/v1/jobs").await;
    assert_eq!(listed["jobs"], json!([]));
    app.eventually("no job in memory and no job task", || async {
        app.metric("jobcast_jobs_in_memory").await == 0.0 && app.metric("jobcast_job_tasks").await == baseline
    })
    .await;
}

/// Runs `count` demo jobs with `params`, each to its end before the next
/// starts, and answers their ids, oldest first.
async fn demos_run_one_after_another(app: &TestApp, count: usize, params: Value) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..count {
        let job = app.create_demo(params.clone()).await;
        let id = id_of(&job);
        let events = app.subscribe(&id).await.all().await;
        assert_eq!(events.last().unwrap().event, "completed");
        ids.push(id);
    }
    ids
}

#[tokio::test]
async fn jobs_that_end_one_after_another_each_expire_after_their_retention() {
    let app = TestApp::spawn_with(Config {
        retention: Duration::from_millis(400),
        ..test_config()
    })
    .await;
    let ids = demos_run_one_after_another(&app, 3, demo(2, 20)).await;
    assert_eq!(
        app.get_job(&ids[2]).await["status"],
        "completed",
        "the newest is kept at first"
    );
    app.eventually("every job to expire, the later ones after the first", || async {
        app.metric("jobcast_jobs_in_memory").await == 0.0
    })
    .await;
    for id in &ids {
        assert_eq!(status_of(&app, &format!("/v1/jobs/{id}")).await, 404, "{id} was kept");
    }
}

#[tokio::test]
async fn only_the_newest_max_finished_jobs_are_kept() {
    let app = TestApp::spawn_with(Config {
        max_finished: 2,
        ..test_config()
    })
    .await;
    let ids = demos_run_one_after_another(&app, 4, demo(2, 1)).await;
    app.eventually("the oldest finished jobs to go", || async {
        app.metric("jobcast_jobs_in_memory").await == 2.0
    })
    .await;
    for id in &ids[..2] {
        assert_eq!(status_of(&app, &format!("/v1/jobs/{id}")).await, 404, "{id} was kept");
    }
    for id in &ids[2..] {
        assert_eq!(app.get_job(id).await["status"], "completed");
    }
}

// ------------------------------------------------------------- Shutdown

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_fails_live_jobs_retryably_and_every_stream_gets_the_end() {
    if skipped_when_balanced("stops the whole service: on Redis its queued jobs stay queued for the next instance") {
        return;
    }
    let mut app = TestApp::spawn_with(Config {
        max_running: 1,
        ..test_config()
    })
    .await;
    let running = app.create_demo(long_wait()).await;
    let running_id = id_of(&running);
    let mut running_stream = app.subscribe(&running_id).await;
    if running_stream.next().await.unwrap().data["status"] != "running" {
        next_with_status(&mut running_stream, "running").await;
    }
    let queued = app.create_demo(long_wait()).await;
    let queued_id = id_of(&queued);
    let mut queued_stream = app.subscribe(&queued_id).await;
    assert_eq!(queued_stream.next().await.unwrap().data["status"], "queued");
    let mut all_stream = app.stream("/v1/events", HeaderMap::new()).await;
    let snapshots = [all_stream.next().await.unwrap(), all_stream.next().await.unwrap()];
    assert_eq!(snapshots[0].data["id"], running_id.as_str());
    assert_eq!(snapshots[1].data["id"], queued_id.as_str());
    let running_reader = tokio::spawn(async move { running_stream.all().await });
    let queued_reader = tokio::spawn(async move { queued_stream.all().await });
    let all_reader = tokio::spawn(async move { all_stream.all().await });

    let asked = Instant::now();
    app.stop().await;
    let took = asked.elapsed();

    assert!(took < Duration::from_secs(4), "the server took {took:?} to stop");
    for (reader, id) in [(running_reader, &running_id), (queued_reader, &queued_id)] {
        let events = tokio::time::timeout(WAIT, reader).await.unwrap().unwrap();
        assert_well_formed(&events);
        let end = events.last().unwrap();
        assert_eq!(end.event, "failed", "{id}");
        assert_eq!(end.data["id"], id.as_str());
        assert_eq!(end.data["error"]["code"], "shutdown");
        assert_eq!(end.data["error"]["retryable"], true);
        assert!(end.data["finished_at"].is_string());
    }
    let events = tokio::time::timeout(WAIT, all_reader).await.unwrap().unwrap();
    let mut last_id = snapshots[1].id.parse::<u64>().unwrap();
    for event in &events {
        let id = event.id.parse::<u64>().unwrap();
        assert!(id > last_id, "ids strictly increase on /v1/events");
        last_id = id;
    }
    for id in [&running_id, &queued_id] {
        let ends: Vec<_> = events
            .iter()
            .filter(|event| event.data["id"] == id.as_str() && event.is_terminal())
            .collect();
        assert_eq!(ends.len(), 1, "{id}: one terminal event on /v1/events: {events:?}");
        assert_eq!(ends[0].event, "failed");
        assert_eq!(ends[0].data["error"]["code"], "shutdown");
        assert_eq!(ends[0].data["error"]["retryable"], true);
    }
}

#[tokio::test]
async fn a_cancel_is_measured_in_the_cancel_latency_histogram() {
    let app = TestApp::spawn().await;
    assert_eq!(app.metric("jobcast_cancel_latency_seconds_count").await, 0.0);
    let job = app.create_demo(demo(1000, 5)).await;
    let id = id_of(&job);
    app.wait_for_status(&id, "running").await;

    let (status, job) = app.cancel(&id).await;

    assert_eq!(status, 200, "{job}");
    assert_eq!(app.metric("jobcast_cancel_latency_seconds_count").await, 1.0);
}

// -------------------------------------------------------------- helpers

fn stage_statuses(job: &Value) -> Vec<&str> {
    job["stages"]
        .as_array()
        .expect("a job has stages")
        .iter()
        .map(|stage| stage["status"].as_str().unwrap())
        .collect()
}

/// POST /v1/jobs for a long demo job; the response as is.
async fn create_response(app: &TestApp) -> reqwest::Response {
    app.client
        .post(app.url("/v1/jobs"))
        .json(&json!({ "kind": "demo", "params": long_wait() }))
        .send()
        .await
        .unwrap()
}

async fn send_cancel(app: &TestApp, id: &str) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/v1/jobs/{id}/cancel")))
        .send()
        .await
        .unwrap()
}

async fn status_of(app: &TestApp, path: &str) -> u16 {
    app.client.get(app.url(path)).send().await.unwrap().status().as_u16()
}

/// Reads the stream up to the first event whose job has `status`.
async fn next_with_status(stream: &mut Sse, status: &str) -> SseEvent {
    loop {
        let event = stream
            .next()
            .await
            .unwrap_or_else(|| panic!("the stream ended before the job was {status}"));
        if event.data["status"] == status {
            return event;
        }
    }
}

/// One cancel/complete race; returns the outcome everyone agreed on.
async fn race_once(app: &TestApp, round: u64) -> &'static str {
    // Mostly jobs as short as the cancel's delay, so either may win; every
    // fourth a longer one, so that the cancel wins some rounds even on a
    // loaded machine where requests are slow.
    let (steps, step_ms) = if round.is_multiple_of(4) {
        (10, 10)
    } else {
        (2 + round % 5, 1 + round % 3)
    };
    let job = app
        .create_demo(json!({
            "stages": [{ "name": "work", "weight": 1.0, "steps": steps }],
            "step_ms": step_ms
        }))
        .await;
    let id = id_of(&job);
    let stream = app.subscribe(&id).await;
    let reader = tokio::spawn(async move {
        let mut stream = stream;
        stream.all().await
    });
    // Varied timing: cancel anywhere from at once to after the job's end.
    let delay = Duration::from_micros((round * 7919) % 20_000);
    tokio::time::sleep(delay).await;
    let response = send_cancel(app, &id).await;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    let (outcome, final_job) = match status {
        200 => {
            assert_eq!(body["status"], "cancelled", "round {round}: 200 always means cancelled");
            assert_eq!(body["error"]["code"], "cancelled", "round {round}");
            ("cancelled", body)
        }
        409 => {
            assert_eq!(body["job"]["status"], "completed", "round {round}: {body}");
            ("completed", body["job"].clone())
        }
        other => panic!("round {round}: cancel answered {other}: {body}"),
    };
    let got = app.get_job(&id).await;
    assert_eq!(
        got, final_job,
        "round {round}: the job resource tells the response's outcome"
    );
    let events = reader.await.unwrap();
    assert_well_formed(&events);
    let last = events.last().unwrap();
    assert_eq!(last.event, outcome, "round {round}: the stream tells the same outcome");
    assert_eq!(last.data, final_job, "round {round}");
    outcome
}

/// Declares three stages, reaches the middle one, and on cancel takes a
/// while to clean up before it stops; `stopped` is set as it returns.
async fn slow_to_stop(ctx: JobContext, stopped: Arc<AtomicBool>) -> JobResult {
    ctx.declare_stages([("fetch", 0.2), ("transform", 0.5), ("store", 0.3)])?;
    ctx.start_stage("fetch", Some(1), Some("files"))?;
    ctx.set_current(1);
    ctx.start_stage("transform", Some(10), Some("rows"))?;
    ctx.set_current(3);
    ctx.flush();
    ctx.cancelled().await;
    // Cleaning up takes time; the cancel must wait for it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    stopped.store(true, Ordering::SeqCst);
    Err(JobError::cancelled())
}

/// Completes as soon as it is asked to stop.
async fn completes_anyway(ctx: JobContext, _params: Map<String, Value>) -> JobResult {
    ctx.declare_stages([("only", 1.0)])?;
    ctx.start_stage("only", Some(2), None)?;
    ctx.cancelled().await;
    ctx.set_current(2);
    Ok(json!({ "finished": "anyway" }))
}

/// Fails as soon as it is asked to stop.
async fn fails_anyway(ctx: JobContext, _params: Map<String, Value>) -> JobResult {
    ctx.declare_stages([("only", 1.0)])?;
    ctx.start_stage("only", Some(2), None)?;
    ctx.cancelled().await;
    Err(JobError::new("boom", "it went boom while stopping"))
}

async fn panics(ctx: JobContext, _params: Map<String, Value>) -> JobResult {
    ctx.declare_stages([("explode", 1.0)])?;
    ctx.start_stage("explode", Some(1), None)?;
    tokio::task::yield_now().await;
    panic!("the job panicked on purpose")
}
