//! Per-subscriber pacing: `?min_interval_ms=` on a job's stream.

use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_paced_subscriber_gets_the_latest_state_at_its_pace_and_the_end_at_once() {
    let app = TestApp::spawn().await;
    let job = app
        .create_demo(
            json!({ "stages": [{ "name": "work", "weight": 1.0, "steps": 60 }], "step_ms": 10, "delay_ms": 300 }),
        )
        .await;
    let id = job["id"].as_str().unwrap();
    let mut paced = app
        .stream(&format!("/v1/jobs/{id}/events?min_interval_ms=200"), HeaderMap::new())
        .await;
    let mut everything = app.subscribe(id).await;

    let mut arrivals = Vec::new();
    while let Some(event) = paced.next().await {
        arrivals.push((Instant::now(), event));
    }
    let events: Vec<SseEvent> = arrivals.iter().map(|(_, event)| event.clone()).collect();
    assert_well_formed(&events);
    let all = everything.all().await;
    assert_well_formed(&all);
    assert_eq!(
        events.last().unwrap().data,
        all.last().unwrap().data,
        "the same terminal state"
    );

    let progress: Vec<&(Instant, SseEvent)> = arrivals.iter().filter(|(_, event)| event.event == "progress").collect();
    assert!(
        progress.len() * 3 < all.len(),
        "{} paced progress events for {} states",
        progress.len(),
        all.len()
    );
    for pair in progress.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        // Client-side arrival times jitter a little around the server's pace.
        assert!(gap >= Duration::from_millis(170), "progress events {gap:?} apart");
    }
}

#[tokio::test]
async fn a_malformed_pacing_interval_is_a_400_problem() {
    let app = TestApp::spawn().await;
    let job = app.create_demo(demo(3, 10)).await;
    let id = job["id"].as_str().unwrap();
    for value in ["abc", "-5", "1.5", "60001"] {
        let response = app
            .open(
                &format!("/v1/jobs/{id}/events?min_interval_ms={value}"),
                HeaderMap::new(),
            )
            .await;
        assert_problem(response, 400, &format!("min_interval_ms={value}")).await;
    }
}
