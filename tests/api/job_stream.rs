//! GET /v1/jobs/{id}/events, rules 1 to 3, 6 and 7 of CONTRACT.md's event
//! stream: a retry hint then a snapshot, every later change in order,
//! exactly one terminal event, no state sent twice, merged counter updates,
//! truthful progress, and 404 for an unknown job.

use std::time::{Duration, Instant};

use jobcast::Config;
use reqwest::header::HeaderMap;
use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn a_job_stream_opens_with_a_retry_hint_then_a_snapshot_of_the_job() {
    let app = TestApp::spawn().await;
    let id = live_job(&app).await;
    let job = app.get_job(&id).await;

    // The hint is jittered: look at several connections.
    for _ in 0..20 {
        let mut stream = app.stream(&format!("/v1/jobs/{id}/events"), HeaderMap::new()).await;

        let first = stream.next_block().await.expect("a first block");
        let retry: u64 = first
            .text
            .strip_prefix("retry: ")
            .and_then(|ms| ms.parse().ok())
            .unwrap_or_else(|| panic!("the body starts with a lone `retry: <ms>` line, not {:?}", first.text));
        assert!(
            (3000..=3750).contains(&retry),
            "retry is 3000 ms plus up to a quarter of jitter, not {retry}"
        );
        let snapshot = stream.next_block().await.expect("a snapshot");
        assert_eq!(snapshot.event(), "snapshot", "{}", snapshot.text);
        assert_eq!(
            snapshot.id(),
            job["seq"].as_u64().unwrap(),
            "the snapshot's id is the seq"
        );
        assert_eq!(snapshot.data(), job, "the snapshot's data is the job");
    }
}

#[tokio::test]
async fn a_subscriber_joining_after_the_end_gets_only_the_terminal_event() {
    let app = TestApp::spawn().await;
    let completed = app.create_demo(demo(3, 0)).await;
    let failed = app
        .create_demo(json!({
            "stages": [{ "name": "work", "weight": 1.0, "steps": 4 }],
            "step_ms": 0,
            "fail_at": "work",
        }))
        .await;
    let cancelled = id_of(&app.create_demo(long_wait()).await);
    assert_eq!(app.cancel(&cancelled).await.0, 200);
    let jobs = [
        (id_of(&completed), "completed"),
        (id_of(&failed), "failed"),
        (cancelled, "cancelled"),
    ];

    for (id, terminal) in jobs {
        app.wait_for_status(&id, terminal).await;
        let job = app.get_job(&id).await;
        let mut stream = app.stream(&format!("/v1/jobs/{id}/events"), HeaderMap::new()).await;

        let retry = stream.next_block().await.expect("a retry hint");
        assert!(retry.text.starts_with("retry: "), "{}", retry.text);
        let event = stream.next_block().await.expect("the terminal event");
        assert_eq!(event.event(), terminal, "the first event is the terminal one");
        assert_eq!(event.id(), job["seq"].as_u64().unwrap());
        assert_eq!(event.data(), job);
        assert!(
            stream.next_block().await.is_none(),
            "the stream of a {terminal} job ends after its terminal event"
        );
    }
}

#[tokio::test]
async fn a_subscriber_that_keeps_up_sees_every_seq_in_order() {
    let app = TestApp::spawn().await;
    let stages = [("parsing", 5), ("analyzing", 8)];
    let job = app
        .create_demo(json!({
            "stages": [{ "name": "parsing", "weight": 0.3, "steps": 5 },
                       { "name": "analyzing", "weight": 0.7, "steps": 8 }],
            "step_ms": 20,
            "delay_ms": 500,
        }))
        .await;
    let id = id_of(&job);

    let events = app.subscribe(&id).await.all().await;

    assert_well_formed(&events);
    assert_eq!(events[0].event, "snapshot");
    let first = events[0].seq();
    for (offset, event) in events.iter().enumerate() {
        assert_eq!(
            event.seq(),
            first + offset as u64,
            "no seq is skipped: {:?}",
            summary(&events)
        );
    }
    for event in &events[1..events.len() - 1] {
        assert_eq!(event.event, "progress", "a later change is a progress event");
    }
    assert_eq!(events.last().unwrap().event, "completed");
    assert_eq!(events.last().unwrap().data, app.get_job(&id).await);
    // Steps 20 ms apart are slower than the publish interval: each is a state.
    for (name, steps) in stages {
        for current in 0..=steps {
            assert!(
                events
                    .iter()
                    .any(|event| event.data["stage"]["name"] == name && event.data["stage"]["current"] == current),
                "the stream shows {name} at {current}/{steps}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_joining_at_any_moment_see_every_later_state_without_a_gap() {
    let app = TestApp::spawn().await;
    let job = app
        .create_demo(json!({
            "stages": [{ "name": "first", "weight": 1.0, "steps": 30 },
                       { "name": "second", "weight": 3.0, "steps": 30 }],
            "step_ms": 7,
        }))
        .await;
    let id = id_of(&job);
    let path = format!("/v1/jobs/{id}/events");

    let mut joiners = Vec::new();
    for i in 0..200u64 {
        let client = app.client.clone();
        let url = app.url(&path);
        // Some resume from an early seq, some join fresh.
        let resume_after = (i % 3 == 0).then_some(i % 7);
        joiners.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_micros(i * 2_300)).await;
            let mut request = client.get(url);
            if let Some(n) = resume_after {
                request = request.header("Last-Event-ID", n.to_string());
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            (resume_after, Sse::new(response).all().await)
        }));
    }
    let mut streams = Vec::new();
    for joiner in joiners {
        streams.push(joiner.await.unwrap());
    }

    let last = app.get_job(&id).await["seq"].as_u64().unwrap();
    let resynced = app.metric("jobcast_lag_resyncs_total").await > 0.0;
    for (resume_after, events) in &streams {
        assert_well_formed(events);
        assert_eq!(
            events.last().unwrap().seq(),
            last,
            "every stream ends with the job's last state"
        );
        let first = &events[0];
        let n = resume_after.unwrap_or(0);
        match first.event.as_str() {
            // A seq from the future (n beyond the job's seq at joining) counts as absent.
            "snapshot" => assert_ne!(first.seq(), n, "a snapshot of the state the client has"),
            "progress" => assert_eq!(first.seq(), n + 1, "no snapshot only when the client had the state"),
            terminal => assert!(first.is_terminal() && first.seq() > n, "unexpected {terminal}"),
        }
        if !resynced {
            // Nobody fell behind, so nobody may miss a state after its first.
            for pair in events.windows(2) {
                assert_eq!(pair[1].seq(), pair[0].seq() + 1, "a gap in {:?}", summary(events));
            }
        }
    }
}

#[tokio::test]
async fn every_job_stream_ends_after_exactly_one_terminal_event() {
    let app = TestApp::spawn().await;

    let completed = app.create_demo(demo(5, 2)).await;
    let events = app.subscribe(&id_of(&completed)).await.all().await;
    assert_well_formed(&events);
    let end = events.last().unwrap();
    assert_eq!(end.event, "completed");
    assert_eq!(end.data["status"], "completed");
    assert_eq!(end.data["progress"], 1.0);
    assert_eq!(end.data["result"], json!({ "stages": 1, "steps": 5 }));

    let failed = app
        .create_demo(json!({
            "stages": [{ "name": "a", "weight": 1.0, "steps": 4 },
                       { "name": "b", "weight": 1.0, "steps": 6 }],
            "step_ms": 2,
            "delay_ms": 200,
            "fail_at": "b",
        }))
        .await;
    let events = app.subscribe(&id_of(&failed)).await.all().await;
    assert_well_formed(&events);
    let end = events.last().unwrap();
    assert_eq!(end.event, "failed");
    assert_eq!(end.data["status"], "failed");
    assert_eq!(end.data["error"]["code"], "demo_failure");
    assert_eq!(end.data["error"]["retryable"], true);
    assert_eq!(end.data["error"]["stage"], "b");
    assert!(end.data["progress"].as_f64().unwrap() < 1.0);

    let cancelled = id_of(&app.create_demo(long_wait()).await);
    // Running, so that the cancel goes through `cancelling`.
    app.wait_for_status(&cancelled, "running").await;
    let mut stream = app.subscribe(&cancelled).await;
    let snapshot = stream.next().await.unwrap();
    assert_eq!(snapshot.event, "snapshot");
    let (status, job) = app.cancel(&cancelled).await;
    assert_eq!(status, 200, "{job}");
    let mut events = vec![snapshot];
    events.extend(stream.all().await);
    assert_well_formed(&events);
    assert!(
        events
            .iter()
            .any(|event| event.event == "progress" && event.data["status"] == "cancelling"),
        "cancelling is published: {:?}",
        summary(&events)
    );
    let end = events.last().unwrap();
    assert_eq!(end.event, "cancelled");
    assert_eq!(end.data, job, "the stream ends with the job the cancel answered");
    assert_eq!(end.data["error"]["code"], "cancelled");
}

#[tokio::test]
async fn repeated_identical_reports_publish_nothing_new() {
    // Every change is published at once, so the two jobs' counts of states
    // cannot differ by how their steps happened to merge.
    let app = TestApp::spawn_with(Config {
        publish_interval: Duration::ZERO,
        ..test_config()
    })
    .await;
    let params = |repeat: u64| {
        json!({
            "stages": [{ "name": "a", "weight": 1.0, "steps": 6 },
                       { "name": "b", "weight": 2.0, "steps": 6 }],
            "step_ms": 15,
            "delay_ms": 300,
            "repeat": repeat,
        })
    };
    let once = id_of(&app.create_demo(params(1)).await);
    let fifty = id_of(&app.create_demo(params(50)).await);
    let mut once_stream = app.subscribe(&once).await;
    let mut fifty_stream = app.subscribe(&fifty).await;
    let (once_events, fifty_events) = tokio::join!(once_stream.all(), fifty_stream.all());

    assert_well_formed(&fifty_events);
    assert_eq!(once_events.last().unwrap().event, "completed");
    assert_eq!(fifty_events.last().unwrap().event, "completed");
    let (once_seq, fifty_seq) = (once_events.last().unwrap().seq(), fifty_events.last().unwrap().seq());
    assert_eq!(
        fifty_seq, once_seq,
        "repeat 50 published {fifty_seq} states, repeat 1 {once_seq}"
    );
    for pair in fifty_events.windows(2) {
        assert_ne!(visible(&pair[0].data), visible(&pair[1].data), "a state sent twice");
    }
}

#[tokio::test]
async fn counter_updates_faster_than_the_publish_interval_merge_but_stage_changes_show() {
    let app = TestApp::spawn().await;
    let job = app
        .create_demo(json!({
            "stages": [{ "name": "a", "weight": 1.0, "steps": 1000 },
                       { "name": "b", "weight": 1.0, "steps": 1000 }],
            "step_ms": 0,
            "delay_ms": 500,
        }))
        .await;
    let id = id_of(&job);
    let subscribed = Instant::now();

    let events = app.subscribe(&id).await.all().await;

    let elapsed = subscribed.elapsed();
    assert_well_formed(&events);
    assert_progress_is_truthful(&events);
    let last = events.last().unwrap().seq();
    assert!(last < 200, "2000 steps published {last} states, not far fewer");
    // At most one counter publish per 10 ms, besides status and stage changes.
    let allowed = 8 + elapsed.as_millis() as usize / 10;
    assert!(
        events.len() <= allowed,
        "{} events in {elapsed:?}: {:?}",
        events.len(),
        summary(&events)
    );
    for name in ["a", "b"] {
        assert!(
            events.iter().any(|event| event.data["status"] == "running"
                && event.data["stage"]["name"] == name
                && event.data["stage"]["current"] == 0),
            "the start of stage {name} is published"
        );
    }
    let before_end = &events[events.len() - 2].data;
    assert_eq!(
        before_end["status"], "running",
        "the last step is published before completed"
    );
    assert_eq!(before_end["stage"]["name"], "b");
    assert_eq!(before_end["stage"]["current"], 1000);
    assert_eq!(before_end["stage"]["total"], 1000);
    assert_eq!(before_end["stages"][0]["status"], "done");
    assert!(before_end["progress"].as_f64().unwrap() < 1.0, "{before_end}");
}

#[tokio::test]
async fn progress_never_decreases_and_is_one_only_when_completed() {
    let app = TestApp::spawn().await;
    // Weights that do not sum to 1.
    let params = |fail_at: Value| {
        json!({
            "stages": [{ "name": "a", "weight": 2.0, "steps": 10 },
                       { "name": "b", "weight": 0.5, "steps": 1 },
                       { "name": "c", "weight": 7.5, "steps": 20 }],
            "step_ms": 3,
            "delay_ms": 200,
            "fail_at": fail_at,
        })
    };
    let completes = id_of(&app.create_demo(params(Value::Null)).await);
    let fails = id_of(&app.create_demo(params(json!("c"))).await);
    let mut completes = app.subscribe(&completes).await;
    let mut fails = app.subscribe(&fails).await;
    let (completed, failed) = tokio::join!(completes.all(), fails.all());

    assert_eq!(completed.last().unwrap().event, "completed");
    assert_progress_is_truthful(&completed);
    assert_eq!(failed.last().unwrap().event, "failed");
    assert_progress_is_truthful(&failed);
}

#[tokio::test]
async fn a_stream_of_an_unknown_job_is_a_404_problem() {
    let app = TestApp::spawn().await;
    for headers in [HeaderMap::new(), last_event_id(5)] {
        let response = app.open(&format!("/v1/jobs/{UNKNOWN_ID}/events"), headers).await;
        assert_problem(response, 404, "a stream of an unknown job").await;
    }
    let response = app.open("/v1/jobs/not-a-job/events", HeaderMap::new()).await;
    let status = response.status().as_u16();
    assert!(
        matches!(status, 400 | 404),
        "a malformed id answers 400 or 404, not {status}"
    );
    assert_problem(response, status, "a stream of a malformed id").await;
}

/// What a watcher sees of a state, without what the server refreshes on
/// every publish (seq, times, pace).
fn visible(job: &Value) -> Value {
    json!([
        job["status"],
        job["stage"],
        job["stages"],
        job["message"],
        job["progress"]
    ])
}

/// Progress never decreases, and it is 1.0 in the completed event and nowhere else.
fn assert_progress_is_truthful(events: &[SseEvent]) {
    let mut last = 0.0;
    for event in events {
        let progress = event.data["progress"].as_f64().expect("a progress");
        assert!(progress >= last, "progress went from {last} to {progress}");
        if event.event == "completed" {
            assert_eq!(progress, 1.0, "a completed job is at 1.0");
        } else {
            assert!(
                progress < 1.0,
                "{} at seq {} has progress 1.0",
                event.event,
                event.seq()
            );
        }
        last = progress;
    }
}

#[tokio::test]
async fn the_rate_is_known_from_the_first_counter_update_of_each_stage() {
    let app = TestApp::spawn().await;
    let params = json!({
        "stages": [{ "name": "a", "steps": 3 }, { "name": "b", "steps": 3 }, { "name": "c", "steps": 3 }],
        "step_ms": 20,
    });
    let id = id_of(&app.create_demo(params).await);
    let events = app.subscribe(&id).await.all().await;
    assert_well_formed(&events);
    let counted: Vec<&Value> = events
        .iter()
        .map(|event| &event.data)
        .filter(|job| job["status"] == "running" && job["stage"]["current"].as_u64().is_some_and(|current| current > 0))
        .collect();
    assert!(counted.len() >= 3, "counter updates of every stage: {}", counted.len());
    for job in counted {
        assert!(
            job["rate"].as_f64().is_some_and(|rate| rate > 0.0),
            "a moving counter has a rate, from its stage's start: stage {} at {}: rate {}",
            job["stage"]["name"],
            job["stage"]["current"],
            job["rate"]
        );
    }
}
