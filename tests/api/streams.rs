//! The event streams of CONTRACT.md: a job's own stream
//! (`/v1/jobs/{id}/events`, rules 1 to 7), its behaviour at scale (many
//! subscribers, a slow one beside fast ones), and the all-jobs stream
//! (`/v1/events`: snapshots, resumption, filters).

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jobcast::{Config, JobContext, JobError, JobResult, Kind};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::Notify;

use crate::helpers::*;

// ------------------------------------------- Rule 1: retry, then a snapshot

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

// ------------------------------------------- Rule 2: every later change

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

// ------------------------------------------- Rule 3: one terminal event

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

// ------------------------------------------- Rule 4: keep-alive, headers

#[tokio::test]
async fn streams_send_keep_alive_comments_at_the_configured_interval() {
    let app = TestApp::spawn_with(Config {
        keep_alive: Duration::from_millis(100),
        ..test_config()
    })
    .await;
    let id = live_job(&app).await;

    for path in [format!("/v1/jobs/{id}/events"), "/v1/events".to_owned()] {
        let opened = Instant::now();
        let mut stream = app.stream(&path, HeaderMap::new()).await;
        let mut arrivals = Vec::new();
        while arrivals.len() < 5 {
            let block = stream.next_block().await.expect("the stream stays open");
            if block.text.starts_with(':') {
                assert!(
                    block.is_keep_alive(),
                    "a comment is `: keep-alive`, not {:?}",
                    block.text
                );
                arrivals.push(opened.elapsed());
            } else {
                assert!(
                    block.text.starts_with("retry: ") || block.event() == "snapshot",
                    "an idle stream sends only comments: {:?}",
                    block.text
                );
            }
        }
        assert!(
            arrivals[0] >= Duration::from_millis(90),
            "{path}: the first comment waits for the interval, not {:?}",
            arrivals[0]
        );
        let mean_gap = (arrivals[4] - arrivals[0]) / 4;
        assert!(
            (Duration::from_millis(90)..=Duration::from_millis(500)).contains(&mean_gap),
            "{path}: comments come every 100 ms, not every {mean_gap:?}"
        );
    }
}

#[tokio::test]
async fn event_streams_carry_no_buffering_headers_and_are_never_compressed() {
    let app = TestApp::spawn().await;
    let id = live_job(&app).await;
    let mut headers = HeaderMap::new();
    headers.insert("accept-encoding", HeaderValue::from_static("gzip, br"));

    for path in [format!("/v1/jobs/{id}/events"), "/v1/events".to_owned()] {
        let response = app.open(&path, headers.clone()).await;
        assert_eq!(response.status(), 200);
        let headers = response.headers();
        assert_eq!(headers[CONTENT_TYPE], "text/event-stream", "{path}");
        assert_eq!(headers["cache-control"], "no-cache", "{path}");
        assert_eq!(headers["x-accel-buffering"], "no", "{path}");
        assert!(
            headers.get("content-encoding").is_none(),
            "{path} is not compressed: {headers:?}"
        );
        let mut stream = Sse::new(response);
        let first = stream.next_block().await.unwrap();
        assert!(
            first.text.starts_with("retry: "),
            "the body is plain text: {:?}",
            first.text
        );
    }
}

// ------------------------------------------- Rule 5: resuming

#[tokio::test]
async fn a_resumed_stream_skips_states_the_client_has() {
    let app = TestApp::spawn().await;
    let id = live_job(&app).await;
    let seq = app.get_job(&id).await["seq"].as_u64().unwrap();
    let path = format!("/v1/jobs/{id}/events");
    let older = seq - 1;
    // (case, Last-Event-ID header, ?last_event_id=, whether the snapshot is due)
    let cases = [
        ("header 0", Some(0), None, true),
        ("header older", Some(older), None, true),
        ("query older", None, Some(older), true),
        ("header current", Some(seq), None, false),
        ("query current", None, Some(seq), false),
        ("header older wins over query current", Some(older), Some(seq), true),
        ("header current wins over query older", Some(seq), Some(older), false),
    ];
    let mut reference = app.subscribe(&id).await;
    let mut streams = Vec::new();
    for (case, header, query, snapshot_due) in cases {
        let path = match query {
            Some(n) => format!("{path}?last_event_id={n}"),
            None => path.clone(),
        };
        let headers = header.map(last_event_id).unwrap_or_default();
        let response = app.open(&path, headers).await;
        assert_eq!(response.status(), 200, "{case}");
        streams.push((case, snapshot_due, Sse::new(response)));
    }

    let (status, _) = app.cancel(&id).await;
    assert_eq!(status, 200);

    let reference = reference.all().await;
    assert_well_formed(&reference);
    assert_eq!(summary(&reference[..1]), [("snapshot".to_owned(), seq)]);
    let later = &reference[1..];
    assert!(
        later.len() >= 2,
        "cancelling, then cancelled: {:?}",
        summary(&reference)
    );
    for (case, snapshot_due, mut stream) in streams {
        let events = stream.all().await;
        let expected: Vec<_> = (if snapshot_due { &reference[..] } else { later })
            .iter()
            .map(|event| (event.event.clone(), event.seq(), event.data.clone()))
            .collect();
        let got: Vec<_> = events
            .iter()
            .map(|event| (event.event.clone(), event.seq(), event.data.clone()))
            .collect();
        assert_eq!(got, expected, "{case}");
    }
}

#[tokio::test]
async fn resuming_with_the_terminal_seq_answers_204() {
    let app = TestApp::spawn().await;
    let job = app.create_demo(demo(3, 0)).await;
    let id = id_of(&job);
    app.wait_for_status(&id, "completed").await;
    let end = app.get_job(&id).await;
    let last = end["seq"].as_u64().unwrap();
    let path = format!("/v1/jobs/{id}/events");

    for (case, path, headers) in [
        ("header", path.clone(), last_event_id(last)),
        ("query", format!("{path}?last_event_id={last}"), HeaderMap::new()),
        ("header wins", format!("{path}?last_event_id=1"), last_event_id(last)),
    ] {
        let response = app.open(&path, headers).await;
        assert_eq!(response.status(), 204, "{case}");
        assert!(response.bytes().await.unwrap().is_empty(), "{case}: a 204 has no body");
    }

    // One state short of the end: the terminal event, and nothing before it.
    for (case, path, headers) in [
        ("header", path.clone(), last_event_id(last - 1)),
        ("query", format!("{path}?last_event_id={}", last - 1), HeaderMap::new()),
        ("header wins", format!("{path}?last_event_id={last}"), last_event_id(1)),
    ] {
        let response = app.open(&path, headers).await;
        assert_eq!(response.status(), 200, "{case}");
        let events = Sse::new(response).all().await;
        assert_eq!(summary(&events), [("completed".to_owned(), last)], "{case}");
        assert_eq!(events[0].data, end);
    }
}

#[tokio::test]
async fn a_malformed_or_future_last_event_id_counts_as_absent() {
    let app = TestApp::spawn().await;
    let live = live_job(&app).await;
    let live_seq = app.get_job(&live).await["seq"].as_u64().unwrap();
    let ended = id_of(&app.create_demo(demo(2, 0)).await);
    app.wait_for_status(&ended, "completed").await;
    let ended_seq = app.get_job(&ended).await["seq"].as_u64().unwrap();

    for (id, seq, first_event) in [(live, live_seq, "snapshot"), (ended, ended_seq, "completed")] {
        let garbage = [
            "abc".to_owned(),
            "-1".to_owned(),
            "1.5".to_owned(),
            "x".repeat(4000),
            "9".repeat(40),
            (seq + 1).to_string(),
            (seq + 1_000_000).to_string(),
            u64::MAX.to_string(),
        ];
        for n in garbage {
            let shown: String = n.chars().take(12).collect();
            let by_header = app
                .open(
                    &format!("/v1/jobs/{id}/events"),
                    HeaderMap::from_iter([("last-event-id".parse().unwrap(), n.parse().unwrap())]),
                )
                .await;
            let query: String = form_urlencoded::byte_serialize(n.as_bytes()).collect();
            let by_query = app
                .open(&format!("/v1/jobs/{id}/events?last_event_id={query}"), HeaderMap::new())
                .await;
            for (how, response) in [("header", by_header), ("query", by_query)] {
                assert_eq!(response.status(), 200, "{how} {shown}");
                let mut stream = Sse::new(response);
                let first = stream.next().await.expect("a first event");
                assert_eq!(
                    (first.event.as_str(), first.seq()),
                    (first_event, seq),
                    "{how} {shown}: the full state, as if no id had been sent"
                );
            }
        }
    }
}

// ------------------------------------------- Rule 6: dedup and coalescing

#[tokio::test]
async fn repeated_identical_reports_publish_nothing_new() {
    let app = TestApp::spawn().await;
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
    assert!(
        fifty_seq <= once_seq,
        "repeat 50 published {fifty_seq} states, repeat 1 only {once_seq}"
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

// ------------------------------------------- Rule 7: 404 and 503 only

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

#[tokio::test]
async fn streams_beyond_the_limit_are_refused_with_503_and_retry_after() {
    let app = TestApp::spawn_with(Config {
        max_streams: 2,
        // Lets the server notice a closed stream quickly.
        keep_alive: Duration::from_millis(100),
        ..test_config()
    })
    .await;
    let id = live_job(&app).await;
    let job_path = format!("/v1/jobs/{id}/events");
    let first = app.stream(&job_path, HeaderMap::new()).await;
    let _second = app.stream("/v1/events", HeaderMap::new()).await;

    for path in [job_path.as_str(), "/v1/events"] {
        let response = app.open(path, HeaderMap::new()).await;
        assert_eq!(response.status(), 503, "{path}");
        let retry_after = response.headers().get(RETRY_AFTER).expect("a Retry-After header");
        let seconds: u64 = retry_after.to_str().unwrap().parse().expect("Retry-After in seconds");
        assert!(seconds >= 1, "{path}: Retry-After {seconds}");
        assert_problem(response, 503, path).await;
    }
    assert_eq!(app.get_job(&id).await["id"], id, "other requests still answer");

    drop(first);
    app.eventually("the closed stream gives its place back", || async {
        app.metric("jobcast_streams_open").await == 1.0
    })
    .await;
    let mut again = app.stream(&job_path, HeaderMap::new()).await;
    assert!(again.next_block().await.unwrap().text.starts_with("retry: "));
}

// ------------------------------------------- Scale

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_subscribers_each_see_increasing_seqs_and_one_terminal_event() {
    const SUBSCRIBERS: usize = 1000;
    let gate = Arc::new(Notify::new());
    let app = TestApp::spawn_with_kinds(test_config(), vec![gated(gate.clone())]).await;
    let id = id_of(
        &app.create("gated", json!({ "big": 0, "big_bytes": 0, "steps": 50, "step_ms": 5 }))
            .await,
    );
    let url = app.url(&format!("/v1/jobs/{id}/events"));

    let mut subscribers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let (client, url) = (app.client.clone(), url.clone());
        subscribers.push(tokio::spawn(async move {
            let response = client.get(url).send().await.unwrap();
            assert_eq!(response.status(), 200);
            // Raw reading: a thousand JSON parsers would measure the test, not the server.
            let mut stream = Sse::new(response);
            let mut events = Vec::new();
            while let Some(block) = stream.next_block().await {
                if block.text.starts_with("event:") {
                    events.push((block.event().to_owned(), block.id(), 0));
                }
            }
            events
        }));
    }
    app.eventually("every subscriber is connected", || async {
        app.metric("jobcast_streams_open").await >= SUBSCRIBERS as f64
    })
    .await;
    gate.notify_one();

    let mut ended = 0;
    let mut last_seqs = HashSet::new();
    for subscriber in subscribers {
        let events = subscriber.await.unwrap();
        assert_well_formed_raw(&events);
        assert_eq!(events.last().unwrap().0, "completed");
        last_seqs.insert(events.last().unwrap().1);
        ended += 1;
    }
    assert_eq!(ended, SUBSCRIBERS, "no subscriber was lost");
    let job = app.get_job(&id).await;
    assert_eq!(
        last_seqs,
        HashSet::from([job["seq"].as_u64().unwrap()]),
        "all end on the job's last state"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_neither_delays_fast_ones_nor_sees_a_seq_twice() {
    const FAST: usize = 3;
    const BIG: usize = 2;
    let gate = Arc::new(Notify::new());
    let app = TestApp::spawn_with_kinds(
        Config {
            // Every 2 ms step is a state: the small steps overrun the job's
            // channel of 32 within a tenth of a second.
            publish_interval: Duration::from_millis(1),
            ..test_config()
        },
        vec![gated(gate.clone())],
    )
    .await;
    // Loopback sockets buffer megabytes, enough for every small state the
    // job will ever publish. Two 6 MB states fill them first, so that the
    // slow subscriber's stream stalls before the small steps begin.
    let id = id_of(
        &app.create(
            "gated",
            json!({ "big": BIG, "big_bytes": 6_000_000, "steps": 150, "step_ms": 2 }),
        )
        .await,
    );
    let path = format!("/v1/jobs/{id}/events");
    let resyncs_before = app.metric("jobcast_lag_resyncs_total").await;
    let mut slow = app.stream(&path, HeaderMap::new()).await;
    assert!(slow.next_block().await.unwrap().text.starts_with("retry: "));
    let snapshot = slow.next_block().await.unwrap();
    let mut slow_events = vec![(
        snapshot.event().to_owned(),
        snapshot.id(),
        digest(snapshot.field("data").unwrap()),
    )];
    let (got_big, mut all_got_big) = tokio::sync::mpsc::channel(FAST);
    let mut fast = Vec::new();
    for _ in 0..FAST {
        let mut stream = app.stream(&path, HeaderMap::new()).await;
        let got_big = got_big.clone();
        fast.push(tokio::spawn(async move {
            let mut events = Vec::new();
            let mut big = 0;
            while let Some(block) = stream.next_block().await {
                if block.text.starts_with("event:") {
                    events.push((
                        block.event().to_owned(),
                        block.id(),
                        digest(block.field("data").unwrap()),
                    ));
                }
                if block.text.len() > 6_000_000 {
                    big += 1;
                    if big == BIG {
                        got_big.send(()).await.unwrap();
                    }
                }
            }
            events
        }));
    }

    gate.notify_one();
    for _ in 0..FAST {
        tokio::time::timeout(WAIT, all_got_big.recv()).await.unwrap();
    }
    let small_steps_began = Instant::now();
    gate.notify_one();
    // The fast subscribers finish while the slow one, its stream stalled
    // behind the big states, has read nothing since its snapshot.
    let mut fast_events = Vec::new();
    for stream in fast {
        let events = tokio::time::timeout(WAIT, stream).await.unwrap().unwrap();
        assert_well_formed_raw(&events);
        fast_events.push(events);
    }
    let fast_took = small_steps_began.elapsed();
    assert!(
        fast_took < Duration::from_secs(4),
        "the fast subscribers took {fast_took:?}, as long as the slow one takes to read 5 events"
    );
    // One event a second.
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(block) = slow.next_block().await else {
            break;
        };
        slow_events.push((
            block.event().to_owned(),
            block.id(),
            digest(block.field("data").unwrap()),
        ));
        assert!(
            slow_events.len() < 20,
            "the slow subscriber never lagged: the sockets held every state (raise big_bytes)"
        );
    }

    assert_well_formed_raw(&slow_events);
    let states: HashMap<u64, u64> = fast_events[0].iter().map(|(_, seq, hash)| (*seq, *hash)).collect();
    for (event, seq, hash) in &slow_events {
        if let Some(fast_hash) = states.get(seq) {
            assert_eq!(
                hash, fast_hash,
                "seq {seq} ({event}) has the same data for every subscriber"
            );
        }
    }
    assert_eq!(slow_events.last().unwrap().0, "completed");
    assert_eq!(slow_events.last().unwrap().1, fast_events[0].last().unwrap().1);
    assert!(
        slow_events.len() < fast_events[0].len(),
        "the slow subscriber skipped states ({} of {})",
        slow_events.len(),
        fast_events[0].len()
    );
    let resyncs = app.metric("jobcast_lag_resyncs_total").await;
    assert!(resyncs > resyncs_before, "the slow subscriber was resynchronised");
}

// ------------------------------------------- The all-jobs stream

#[tokio::test]
async fn the_all_jobs_stream_opens_with_a_snapshot_of_every_live_job_then_follows_changes() {
    let app = TestApp::spawn().await;
    let done = id_of(&app.create_demo(demo(2, 0)).await);
    app.wait_for_status(&done, "completed").await;
    let live = [live_job(&app).await, live_job(&app).await];

    let mut stream = all_jobs(&app, "", HeaderMap::new()).await;
    let mut events = Vec::new();
    for _ in 0..live.len() {
        let event = stream.next().await.unwrap();
        assert_eq!(event.event, "snapshot");
        assert_eq!(event.data, app.get_job(event.data["id"].as_str().unwrap()).await);
        events.push(event);
    }
    let shown: HashSet<&str> = events.iter().map(|event| event.data["id"].as_str().unwrap()).collect();
    assert_eq!(
        shown,
        live.iter().map(String::as_str).collect(),
        "no snapshot of {done}"
    );

    let new = id_of(&app.create_demo(demo(5, 2)).await);
    events.extend(read_until(&mut stream, |event| event.data["id"] == new && event.is_terminal()).await);

    assert_ids_increase(&events);
    let news: Vec<&SseEvent> = events.iter().filter(|event| event.data["id"] == new).collect();
    assert_eq!(events.len(), live.len() + news.len(), "only the new job changed");
    for (index, event) in news.iter().enumerate() {
        assert_eq!(event.seq(), index as u64 + 1, "every state of the new job, in order");
        let expected = if index + 1 == news.len() {
            "completed"
        } else {
            "progress"
        };
        assert_eq!(event.event, expected);
    }
    assert_eq!(news.last().unwrap().data, app.get_job(&new).await);
}

#[tokio::test]
async fn a_resumed_all_jobs_stream_sends_the_newest_state_of_each_job_changed_since() {
    let app = TestApp::spawn().await;
    let steady = live_job(&app).await;
    let doomed = live_job(&app).await;
    let mut first = all_jobs(&app, "", HeaderMap::new()).await;
    first.next().await.unwrap();
    let n: u64 = first.next().await.unwrap().id.parse().unwrap();
    drop(first);

    let finished = id_of(&app.create_demo(demo(3, 0)).await);
    app.wait_for_status(&finished, "completed").await;
    let later = live_job(&app).await;
    assert_eq!(app.cancel(&doomed).await.0, 200);
    let expected = [
        ("completed", finished.as_str()),
        ("snapshot", later.as_str()),
        ("cancelled", doomed.as_str()),
    ];

    let mut resumed = Vec::new();
    for (how, query, headers) in [
        ("header", String::new(), last_event_id(n)),
        ("query", format!("?last_event_id={n}"), HeaderMap::new()),
        ("header wins", "?last_event_id=garbage".to_owned(), last_event_id(n)),
        // Ended jobs pass a status filter on resume: the client may have shown them.
        ("status=running", "?status=running".to_owned(), last_event_id(n)),
    ] {
        let mut stream = all_jobs(&app, &query, headers).await;
        let mut events = Vec::new();
        for _ in 0..expected.len() {
            events.push(stream.next().await.unwrap());
        }
        let got: Vec<(&str, &str)> = events
            .iter()
            .map(|event| (event.event.as_str(), event.data["id"].as_str().unwrap()))
            .collect();
        assert_eq!(
            got, expected,
            "{how}: the newest state of each job changed after {n}, in id order"
        );
        for event in &events {
            assert!(event.id.parse::<u64>().unwrap() > n, "{how}");
            assert_eq!(
                event.data,
                app.get_job(event.data["id"].as_str().unwrap()).await,
                "{how}"
            );
        }
        resumed.push((how, stream, events));
    }
    // Then live changes.
    let marker = id_of(&app.create_demo(demo(1, 0)).await);
    for (how, mut stream, mut events) in resumed {
        events.extend(read_until(&mut stream, |event| event.data["id"] == marker && event.is_terminal()).await);
        assert_ids_increase(&events);
        assert!(
            events[expected.len()..].iter().all(|event| event.data["id"] == marker),
            "{how}: only the new job changed since"
        );
    }

    let future = (n + 1_000_000_000_000).to_string();
    for garbage in ["garbage", "-1", "1.5", future.as_str()] {
        let headers = HeaderMap::from_iter([("last-event-id".parse().unwrap(), garbage.parse().unwrap())]);
        let mut stream = all_jobs(&app, "", headers).await;
        let mut shown = HashSet::new();
        for _ in 0..2 {
            let event = stream.next().await.unwrap();
            assert_eq!(event.event, "snapshot", "{garbage}: as if no id had been sent");
            shown.insert(event.data["id"].as_str().unwrap().to_owned());
        }
        assert_eq!(shown, HashSet::from([steady.clone(), later.clone()]), "{garbage}");
        let marker = id_of(&app.create_demo(demo(1, 0)).await);
        let events = read_until(&mut stream, |event| event.data["id"] == marker && event.is_terminal()).await;
        assert!(
            events.iter().all(|event| event.data["id"] == marker),
            "{garbage}: nothing but the live job after the snapshots"
        );
    }
}

#[tokio::test]
async fn the_all_jobs_stream_shows_only_the_kinds_asked_for() {
    let app = TestApp::spawn_with_kinds(test_config(), vec![sleeper()]).await;
    let old_sleeper = id_of(&app.create("sleeper", json!({})).await);
    let old_demo = live_job(&app).await;
    wait_for_stages(&app, &old_sleeper).await;
    let mut demos = all_jobs(&app, "?kind=demo", HeaderMap::new()).await;
    let mut sleepers = all_jobs(&app, "?kind=sleeper", HeaderMap::new()).await;
    let mut both = all_jobs(&app, "?kind=sleeper&kind=demo", HeaderMap::new()).await;

    let new_sleeper = id_of(&app.create("sleeper", json!({})).await);
    let new_demo = id_of(&app.create_demo(demo(3, 1)).await);
    app.wait_for_status(&new_demo, "completed").await;
    assert_eq!(app.cancel(&new_sleeper).await.0, 200);

    let demo_events = read_until(&mut demos, |event| event.data["id"] == new_demo && event.is_terminal()).await;
    let sleeper_events = read_until(&mut sleepers, |event| {
        event.data["id"] == new_sleeper && event.is_terminal()
    })
    .await;
    let both_events = read_until(&mut both, |event| {
        event.data["id"] == new_sleeper && event.is_terminal()
    })
    .await;
    for (kind, events) in [("demo", &demo_events), ("sleeper", &sleeper_events)] {
        assert!(
            events.iter().all(|event| event.data["kind"] == kind),
            "?kind={kind} shows {:?}",
            kinds_and_events(events)
        );
        assert_ids_increase(events);
    }
    assert_eq!(demo_events[0].event, "snapshot");
    assert_eq!(demo_events[0].data["id"], old_demo);
    assert_eq!(sleeper_events[0].event, "snapshot");
    assert_eq!(sleeper_events[0].data["id"], old_sleeper);
    let both_ids: HashSet<&str> = both_events
        .iter()
        .map(|event| event.data["id"].as_str().unwrap())
        .collect();
    let all_four = HashSet::from([
        old_sleeper.as_str(),
        old_demo.as_str(),
        new_sleeper.as_str(),
        new_demo.as_str(),
    ]);
    assert_eq!(both_ids, all_four, "a repeated kind matches any of its values");
}

#[tokio::test]
async fn the_all_jobs_stream_follows_only_the_ids_asked_for() {
    let app = TestApp::spawn().await;
    let [a, b, c] = [live_job(&app).await, live_job(&app).await, live_job(&app).await];
    let mut stream = all_jobs(&app, &format!("?id={a}&id={UNKNOWN_ID}&id={b}"), HeaderMap::new()).await;

    for id in [&c, &a, &b] {
        assert_eq!(app.cancel(id).await.0, 200);
    }
    let events = read_until(&mut stream, |event| event.data["id"] == b && event.is_terminal()).await;

    let snapshots: HashSet<&str> = events[..2]
        .iter()
        .map(|event| {
            assert_eq!(event.event, "snapshot");
            event.data["id"].as_str().unwrap()
        })
        .collect();
    assert_eq!(snapshots, HashSet::from([a.as_str(), b.as_str()]));
    assert!(
        events
            .iter()
            .all(|event| event.data["id"] == a || event.data["id"] == b),
        "only a and b: {:?}",
        kinds_and_events(&events)
    );
    assert!(events
        .iter()
        .any(|event| event.data["id"] == a && event.event == "cancelled"));
    assert_ids_increase(&events);
}

#[tokio::test]
async fn a_status_filtered_stream_follows_a_shown_job_to_its_end() {
    let app = TestApp::spawn().await;
    let done = id_of(&app.create_demo(demo(1, 0)).await);
    app.wait_for_status(&done, "completed").await;
    let idle = live_job(&app).await;
    let mut running = all_jobs(&app, "?status=running", HeaderMap::new()).await;
    let mut queued = all_jobs(&app, "?status=queued", HeaderMap::new()).await;

    let new = id_of(
        &app.create_demo(json!({
            "stages": [{ "name": "work", "weight": 1.0, "steps": 5 }],
            "step_ms": 2,
            "delay_ms": 50,
        }))
        .await,
    );
    app.wait_for_status(&new, "completed").await;
    assert_eq!(app.cancel(&idle).await.0, 200);

    let events = read_until(&mut running, |event| event.data["id"] == idle && event.is_terminal()).await;
    assert_ids_increase(&events);
    assert_eq!(events[0].event, "snapshot");
    assert_eq!(
        events[0].data["id"], idle,
        "the running job is shown, not the completed one"
    );
    let idle_events: Vec<&str> = events
        .iter()
        .filter(|event| event.data["id"] == idle)
        .map(|event| event.data["status"].as_str().unwrap())
        .collect();
    assert_eq!(idle_events, ["running", "cancelling", "cancelled"]);
    let new_events: Vec<&SseEvent> = events.iter().filter(|event| event.data["id"] == new).collect();
    assert_eq!(
        new_events[0].data["status"], "running",
        "the job is shown once it is running, not while queued"
    );
    assert_eq!(
        new_events.last().unwrap().event,
        "completed",
        "a shown job is followed to its end"
    );
    assert!(events.iter().all(|event| event.data["id"] != done));

    // A stream for queued jobs shows the new job from its first state and
    // follows it through running to completed.
    let events = read_until(&mut queued, |event| event.data["id"] == new && event.is_terminal()).await;
    assert!(events.iter().all(|event| event.data["id"] == new));
    assert_eq!(events[0].data["status"], "queued");
    assert_eq!(events[0].seq(), 1);
    assert_eq!(events.last().unwrap().event, "completed");
    assert_eq!(events.last().unwrap().data, app.get_job(&new).await);
}

#[tokio::test]
async fn an_unknown_status_filter_is_a_400_problem() {
    let app = TestApp::spawn().await;
    for query in ["?status=bogus", "?status=running&status=bogus", "?status="] {
        let response = app.open(&format!("/v1/events{query}"), HeaderMap::new()).await;
        assert_problem(response, 400, &format!("/v1/events{query}")).await;
    }
}

// ------------------------------------------- Helpers for this file

/// Opens `/v1/events` with `query` (empty or starting with `?`).
async fn all_jobs(app: &TestApp, query: &str, headers: HeaderMap) -> Sse {
    app.stream(&format!("/v1/events{query}"), headers).await
}

/// Reads events until one satisfies `last`, which is included.
async fn read_until(stream: &mut Sse, last: impl Fn(&SseEvent) -> bool) -> Vec<SseEvent> {
    let mut events = Vec::new();
    loop {
        let event = stream.next().await.expect("the all-jobs stream stays open");
        let done = last(&event);
        events.push(event);
        if done {
            return events;
        }
    }
}

fn assert_ids_increase(events: &[SseEvent]) {
    let ids: Vec<u64> = events
        .iter()
        .map(|event| event.id.parse().expect("a numeric id"))
        .collect();
    assert!(
        ids.windows(2).all(|pair| pair[0] < pair[1]),
        "ids strictly increase over the connection: {ids:?}"
    );
}

fn kinds_and_events(events: &[SseEvent]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|event| {
            (
                event.event.clone(),
                event.data["kind"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect()
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

/// Checks the raw (event, id, digest) triples of one job stream: ids
/// strictly increase, one terminal event, last.
fn assert_well_formed_raw(events: &[(String, u64, u64)]) {
    let seqs: Vec<(&str, u64)> = events.iter().map(|(event, id, _)| (event.as_str(), *id)).collect();
    assert_rising_to_one_end(&seqs);
}

fn digest(text: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

/// A kind that declares one stage and waits to be cancelled.
fn sleeper() -> Kind {
    Kind::new("sleeper", wait_for_cancel)
}

async fn wait_for_cancel(ctx: JobContext, _params: Map<String, Value>) -> JobResult {
    ctx.declare_stages([("waiting", 1.0)])?;
    ctx.cancelled().await;
    Err(JobError::cancelled())
}

#[derive(Deserialize)]
struct GatedParams {
    /// States with a message of `big_bytes` bytes, published first.
    big: u64,
    big_bytes: usize,
    /// Then this many small steps, `step_ms` apart.
    steps: u64,
    step_ms: u64,
}

/// A kind for the scale tests: one stage; it waits for `gate`, publishes
/// `big` very large states, waits for `gate` again if it did, then takes
/// `steps` small steps.
fn gated(gate: Arc<Notify>) -> Kind {
    Kind::new("gated", move |ctx: JobContext, params: GatedParams| {
        let gate = gate.clone();
        async move {
            ctx.declare_stages([("work", 1.0)])?;
            ctx.start_stage("work", Some(params.big + params.steps), Some("steps"))?;
            gate.notified().await;
            for step in 1..=params.big {
                let letter = char::from(b'a' + (step % 26) as u8);
                ctx.report(step, &letter.to_string().repeat(params.big_bytes));
                ctx.flush();
            }
            if params.big > 0 {
                gate.notified().await;
            }
            for step in 1..=params.steps {
                tokio::time::sleep(Duration::from_millis(params.step_ms)).await;
                ctx.report(params.big + step, &format!("step {step}"));
            }
            ctx.flush();
            Ok(json!({ "steps": params.big + params.steps }))
        }
    })
}
