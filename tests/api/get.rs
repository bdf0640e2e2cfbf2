//! GET /v1/jobs/{id}: the job resource as its status changes (which times
//! are set when), and the long poll (`wait_seconds`, `after_seq`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use jobcast::Config;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::helpers::*;

#[tokio::test]
async fn started_at_is_null_while_queued_and_finished_at_is_set_iff_terminal() {
    let app = TestApp::spawn_with(Config {
        max_running: 1,
        ..test_config()
    })
    .await;
    app.take_extra_running_slots(1).await;
    // Holds the only running slot until it is cancelled.
    let blocker = app.create_demo(long_wait()).await;
    let blocker_id = blocker["id"].as_str().unwrap();
    app.wait_for_status(blocker_id, "running").await;
    let running = app.get_job(blocker_id).await;
    assert_job_shape(&running);
    assert_eq!(running["finished_at"], Value::Null, "a running job has no finished_at");
    assert!(is_contract_time(running["started_at"].as_str().unwrap()));

    let waiting = app.create_demo(demo(1, 0)).await;
    let waiting_id = waiting["id"].as_str().unwrap();
    let queued = app.get_job(waiting_id).await;
    assert_eq!(queued["status"], "queued");
    assert_eq!(queued["started_at"], Value::Null, "started_at is null while queued");
    assert_eq!(queued["finished_at"], Value::Null);

    // Cancelled while queued: terminal, never started.
    let (status, cancelled) = app.cancel(waiting_id).await;
    assert_eq!(status, 200);
    assert_job_shape(&cancelled);
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["started_at"], Value::Null);
    assert!(is_contract_time(cancelled["finished_at"].as_str().unwrap()));

    // Cancelled while running: terminal, started.
    let (status, cancelled) = app.cancel(blocker_id).await;
    assert_eq!(status, 200);
    assert_job_shape(&cancelled);
    assert_eq!(cancelled["status"], "cancelled");
    assert!(is_contract_time(cancelled["started_at"].as_str().unwrap()));
    assert!(is_contract_time(cancelled["finished_at"].as_str().unwrap()));

    // Every state a subscriber sees, through completion and through failure.
    for params in [
        json!({ "stages": [{ "name": "a", "steps": 4 }, { "name": "b", "steps": 4 }], "step_ms": 2, "delay_ms": 50 }),
        json!({ "stages": [{ "name": "a", "steps": 4 }, { "name": "b", "steps": 4 }], "step_ms": 2, "delay_ms": 50, "fail_at": "b" }),
    ] {
        let job = app.create_demo(params).await;
        let events = app.subscribe(job["id"].as_str().unwrap()).await.all().await;
        assert_well_formed(&events);
        for event in &events {
            assert_job_shape(&event.data);
            let terminal = event.is_terminal();
            assert_eq!(
                !event.data["finished_at"].is_null(),
                terminal,
                "finished_at is set iff terminal: {}",
                event.data
            );
            assert_eq!(
                event.data["started_at"].is_null(),
                event.data["status"] == "queued",
                "started_at is null iff queued: {}",
                event.data
            );
        }
        let last = &events.last().unwrap().data;
        assert!(last["status"] == "completed" || last["status"] == "failed");
    }
}

#[tokio::test]
async fn a_long_poll_answers_within_50ms_of_the_change_it_waits_for() {
    let gate = Arc::new(Semaphore::new(0));
    let app = TestApp::spawn_with_kinds(test_config(), vec![gated_kind("gated", gate.clone())]).await;
    let id = id_of(&app.create_job(&json!({ "kind": "gated" })).await);
    let mut seq = wait_for_stage(&app, &id, "s0").await;
    for round in 0..6u64 {
        // Even rounds name after_seq; odd ones rely on its default, the current seq.
        let path = if round % 2 == 0 {
            format!("/v1/jobs/{id}?wait_seconds=5&after_seq={seq}")
        } else {
            format!("/v1/jobs/{id}?wait_seconds=5")
        };
        let started = Instant::now();
        let poll = tokio::spawn(send(app.client.get(app.url(&path))));
        // Pacing only: the poll answers correctly whether or not it is parked yet.
        let pace = Duration::from_millis(80 + (round * 37) % 120);
        tokio::time::sleep(pace).await;
        let changed = Instant::now();
        gate.add_permits(1);
        let response = poll.await.unwrap();
        assert_eq!(response.status(), 200);
        let job: Value = response.json().await.unwrap();
        let arrived = Instant::now();
        let arrived_wall = chrono::Utc::now();
        assert_eq!(job["seq"], seq + 1, "the poll answers the first change after {seq}");
        assert_eq!(job["stage"]["name"], format!("s{}", round + 1));
        assert!(arrived - started >= pace, "the poll waited for the change");
        assert!(
            arrived - changed < Duration::from_millis(50),
            "the poll answered {:?} after the change",
            arrived - changed
        );
        let updated = chrono::DateTime::parse_from_rfc3339(job["updated_at"].as_str().unwrap()).unwrap();
        let lag = arrived_wall.signed_duration_since(updated);
        assert!(
            lag < chrono::TimeDelta::milliseconds(50) && lag > chrono::TimeDelta::milliseconds(-5),
            "the poll answered {lag} after the job's updated_at"
        );
        seq += 1;
    }
}

#[tokio::test]
async fn a_long_poll_answers_at_once_when_the_seq_already_exceeds_after_seq() {
    let gate = Arc::new(Semaphore::new(0));
    let app = TestApp::spawn_with_kinds(test_config(), vec![gated_kind("gated", gate)]).await;
    let id = id_of(&app.create_job(&json!({ "kind": "gated" })).await);
    let seq = wait_for_stage(&app, &id, "s0").await;
    for query in [
        format!("wait_seconds=5&after_seq={}", seq - 1),
        "wait_seconds=5&after_seq=0".to_owned(),
        // Above 60 counts as 60; the job is already past after_seq either way.
        format!("wait_seconds=1000&after_seq={}", seq - 1),
        // No wait at all.
        format!("after_seq={seq}"),
        String::new(),
    ] {
        let started = Instant::now();
        let response = send(app.client.get(app.url(&format!("/v1/jobs/{id}?{query}")))).await;
        assert_eq!(response.status(), 200, "?{query}");
        let job: Value = response.json().await.unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "?{query} answered at once, not after {:?}",
            started.elapsed()
        );
        assert_eq!(job["seq"], seq, "?{query} answers the job as it is");
    }
}

#[tokio::test]
async fn a_long_poll_without_a_change_answers_after_wait_seconds_with_the_job_as_is() {
    let gate = Arc::new(Semaphore::new(0));
    let app = TestApp::spawn_with_kinds(test_config(), vec![gated_kind("gated", gate)]).await;
    let id = id_of(&app.create_job(&json!({ "kind": "gated" })).await);
    let seq = wait_for_stage(&app, &id, "s0").await;
    let before = app.get_job(&id).await;
    for query in [format!("wait_seconds=1&after_seq={seq}"), "wait_seconds=1".to_owned()] {
        let started = Instant::now();
        let response = send(app.client.get(app.url(&format!("/v1/jobs/{id}?{query}")))).await;
        assert_eq!(response.status(), 200);
        let job: Value = response.json().await.unwrap();
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(990) && waited < Duration::from_millis(1800),
            "?{query} answered after {waited:?}, not about a second"
        );
        assert_eq!(job, before, "?{query} answers the job as it is");
    }
}

#[tokio::test]
async fn a_long_poll_on_an_ended_job_waits_out_its_wait_as_the_contract_says() {
    let app = TestApp::spawn().await;
    let job = app.create_demo(demo(2, 0)).await;
    let id = job["id"].as_str().unwrap();
    let done = app.get_job_when_terminal(id).await;
    let started = Instant::now();
    let url = app.url(&format!("/v1/jobs/{id}?wait_seconds=1&after_seq={}", done["seq"]));
    let polled: Value = app.client.get(url).send().await.unwrap().json().await.unwrap();
    let waited = started.elapsed();
    assert_eq!(polled, done, "the job as it is");
    assert!(
        waited >= Duration::from_millis(950) && waited < Duration::from_secs(5),
        "answered after {waited:?}"
    );
}

#[tokio::test]
async fn malformed_long_poll_parameters_are_400_problems() {
    let app = TestApp::spawn().await;
    let id = id_of(&app.create_demo(demo(0, 0)).await);
    for query in [
        "wait_seconds=abc",
        "wait_seconds=-1",
        "wait_seconds=1.5",
        "wait_seconds=",
        "after_seq=x",
        "after_seq=-1",
        "wait_seconds=1&after_seq=1.5",
    ] {
        let started = Instant::now();
        let response = send(app.client.get(app.url(&format!("/v1/jobs/{id}?{query}")))).await;
        assert_problem(response, 400, &format!("GET /v1/jobs/{{id}}?{query}")).await;
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "?{query} is refused at once"
        );
    }
}
