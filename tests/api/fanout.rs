//! The all-jobs stream under load: a reader that falls behind is
//! resynchronised, never shown an id twice, and never misses an ending.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::json;

use crate::cluster::skipped_when_balanced;
use crate::helpers::*;

#[tokio::test]
async fn a_stalled_all_jobs_reader_is_resynchronised_without_repeats_or_lost_endings() {
    if skipped_when_balanced(
        "how soon a stalled reader lags depends on what its connection buffers: through nginx, twice as much",
    ) {
        return;
    }
    let config = jobcast::Config {
        publish_interval: Duration::ZERO,
        ..test_config()
    };
    let app = TestApp::spawn_with(config).await;
    // Not read until every job has ended: the server must not wait for it.
    let mut stalled = app.stream("/v1/events", HeaderMap::new()).await;

    let mut ids = Vec::new();
    for _ in 0..24 {
        let job = app
            .create_demo(json!({ "stages": [{ "name": "burst", "weight": 1.0, "steps": 600 }], "step_ms": 0 }))
            .await;
        ids.push(job["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        app.get_job_when_terminal(id).await;
    }
    assert!(app.metric("jobcast_events_published_total").await > 14_000.0);

    let mut last_id = 0u64;
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    let mut ended = 0;
    while ended < ids.len() {
        let event = stalled.next().await.expect("the all-jobs stream stays open");
        let event_id: u64 = event.id.parse().unwrap();
        assert!(event_id > last_id, "ids strictly increase: {event_id} after {last_id}");
        last_id = event_id;
        let job = event.data["id"].as_str().unwrap().to_owned();
        let seq = event.seq();
        let previous = last_seq.insert(job.clone(), seq).unwrap_or(0);
        assert!(seq > previous, "job {job}: seq {seq} after {previous}");
        if event.is_terminal() {
            assert_eq!(event.event, "completed");
            ended += 1;
        }
    }
    assert!(
        app.metric("jobcast_lag_resyncs_total").await >= 1.0,
        "the stalled reader lagged"
    );
}
