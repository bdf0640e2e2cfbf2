//! The job engine as an embedding Rust developer sees it: custom kinds,
//! the context's reporting and cancellation, and publish merging.

use std::time::{Duration, Instant};

use jobcast::{JobContext, JobError, Kind};
use serde_json::{json, Value};

use crate::helpers::*;

/// Reports a million increments as fast as it can.
async fn hammer(ctx: JobContext, _params: serde_json::Map<String, Value>) -> Result<Value, JobError> {
    ctx.declare_stages([("count", 1.0)])?;
    ctx.start_stage("count", Some(1_000_000), Some("increments"))?;
    let started = Instant::now();
    for step in 0..1_000_000u64 {
        ctx.advance(1);
        if step % 1000 == 0 {
            tokio::task::yield_now().await;
        }
    }
    Ok(json!({ "elapsed_ms": started.elapsed().as_millis() as u64 }))
}

#[tokio::test]
async fn a_million_increments_publish_about_one_state_per_publish_interval() {
    let app = TestApp::spawn_with_kinds(test_config(), vec![Kind::new("hammer", hammer)]).await;
    let job = app.create("hammer", Value::Null).await;
    let events = app.subscribe(job["id"].as_str().unwrap()).await.all().await;
    let last = events.last().unwrap();
    assert_eq!(last.event, "completed");
    assert_eq!(last.data["stage"]["current"], 1_000_000);
    let elapsed_ms = last.data["result"]["elapsed_ms"].as_u64().unwrap();
    // One publish per 10 ms interval, plus the few status and stage changes.
    let allowed = elapsed_ms / 10 + 10;
    assert!(
        last.seq() <= allowed,
        "{} states published for a job that ran {elapsed_ms} ms (at most {allowed} expected)",
        last.seq()
    );
}

#[tokio::test]
async fn with_publish_interval_zero_every_change_is_a_state() {
    let config = jobcast::Config {
        publish_interval: Duration::ZERO,
        ..test_config()
    };
    let app = TestApp::spawn_with(config).await;
    let job = app
        .create_demo(json!({ "stages": [{ "name": "a", "weight": 1.0, "steps": 100 }], "step_ms": 0 }))
        .await;
    let id = job["id"].as_str().unwrap();
    let done = app.get_job_when_terminal(id).await;
    // queued, running, stages declared, stage started, 100 steps, completed.
    assert_eq!(done["seq"], 105, "{done}");
}

/// Waits for the cancel request, then keeps going a little before stopping.
async fn stops_when_asked(ctx: JobContext, _params: serde_json::Map<String, Value>) -> Result<Value, JobError> {
    ctx.declare_stages([("wait", 1.0)])?;
    ctx.start_stage("wait", None, None)?;
    ctx.set_message("waiting to be cancelled");
    ctx.cancelled().await;
    ctx.set_message("cleaning up");
    ctx.check_cancelled()?;
    unreachable!("check_cancelled returns the cancelled error once cancelled")
}

#[tokio::test]
async fn job_code_observes_cancellation_and_propagates_it_with_the_question_mark() {
    let app = TestApp::spawn_with_kinds(test_config(), vec![Kind::new("patient", stops_when_asked)]).await;
    let job = app.create("patient", Value::Null).await;
    let id = job["id"].as_str().unwrap();
    let mut stream = app.subscribe(id).await;
    // Cancel only once the job is waiting for it.
    loop {
        let event = stream.next().await.expect("the job is waiting before it ends");
        if event.data["message"] == "waiting to be cancelled" {
            break;
        }
    }
    let (status, cancelled) = app.cancel(id).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["error"]["code"], "cancelled");
    assert_eq!(cancelled["error"]["stage"], "wait");
    assert_eq!(cancelled["stages"][0]["status"], "cancelled");
    assert_eq!(cancelled["message"], "cleaning up");
}

#[tokio::test]
async fn a_kind_refuses_params_its_type_rejects() {
    let app = TestApp::spawn_with_kinds(test_config(), vec![Kind::new("patient", stops_when_asked)]).await;
    // A map of anything accepts any object: the kind decides.
    app.create("patient", json!({ "x": 1 })).await;
    let response = app
        .client
        .post(app.url("/v1/jobs"))
        .json(&json!({ "kind": "demo", "params": { "x": 1 } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
}

#[tokio::test]
async fn counts_written_as_whole_floats_are_accepted_as_json_schema_allows() {
    let app = TestApp::spawn().await;
    let job = app
        .create_demo(json!({ "stages": [{ "name": "a", "steps": 2.0 }], "step_ms": 1.0, "repeat": 2.0 }))
        .await;
    assert_eq!(job["params"]["repeat"], 2.0, "params are echoed as given");
    let done = app.get_job_when_terminal(job["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["stage"]["current"], 2);
}
