//! What the SQLite store writes for a job that reports as fast as it can:
//! `jobcast_store_writes_total` grows by about one row per publish
//! interval, however many counter updates the job makes.

use std::cell::Cell;
use std::time::{Duration, Instant};

use jobcast::config::StoreChoice;
use jobcast::Config;
use serde_json::json;

use crate::cluster::skipped_when_balanced;
use crate::helpers::*;

const WRITES: &str = "jobcast_store_writes_total";

#[tokio::test]
async fn a_job_updating_as_fast_as_it_can_costs_about_one_row_per_publish_interval() {
    if skipped_when_balanced("measures the SQLite store of one process") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("jobcast-store-writes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let interval = Duration::from_millis(50);
    let mut app = TestApp::spawn_with(Config {
        store: StoreChoice::Sqlite(dir.join("jobs.db")),
        publish_interval: interval,
        ..test_config()
    })
    .await;
    let steps = 200_000;
    let before = app.metric(WRITES).await;
    let started = Instant::now();
    let job = app
        .create_demo(json!({ "stages": [{ "name": "count", "steps": steps }], "step_ms": 0 }))
        .await;
    let ended = app.get_job_when_terminal(job["id"].as_str().unwrap()).await;
    assert_eq!(ended["status"], "completed");
    let written = Cell::new(0.0);
    app.eventually("the first and terminal rows", || async {
        written.set(app.metric(WRITES).await - before);
        written.get() >= 2.0
    })
    .await;
    let written = written.get();
    let run_time = started.elapsed();
    let published = ended["seq"].as_u64().unwrap();
    assert!(
        published * 100 < steps,
        "{steps} counter updates merged into far fewer states: {published} published"
    );
    // Besides one row per interval: the first and the terminal state, each
    // committed and then written again with its event id, and the start.
    eprintln!("{steps} updates, {published} states published, {written} rows written in {run_time:?}");
    let allowed = run_time.as_secs_f64() / interval.as_secs_f64() + 6.0;
    assert!(
        written <= allowed,
        "{written} rows written in {run_time:?} ({published} states published), at most {allowed:.0} allowed"
    );
    app.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_memory_store_writes_no_rows() {
    if skipped_when_balanced("about the memory store") {
        return;
    }
    let app = TestApp::spawn().await;
    let job = app
        .create_demo(json!({ "stages": [{ "name": "count", "steps": 100 }], "step_ms": 0 }))
        .await;
    app.get_job_when_terminal(job["id"].as_str().unwrap()).await;
    assert_eq!(app.metric(WRITES).await, 0.0);
}
