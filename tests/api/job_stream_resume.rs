//! Resuming a job's stream (rule 5 of CONTRACT.md's event stream):
//! `Last-Event-ID` or `?last_event_id=` skips the states the client has,
//! the terminal seq answers 204, and an id that is malformed or from the
//! future counts as absent.

use std::sync::Arc;

use reqwest::header::HeaderMap;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::helpers::*;

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

#[tokio::test]
async fn a_malformed_last_event_id_counts_as_absent_and_the_stream_starts_from_the_snapshot() {
    let gate = Arc::new(Semaphore::new(0));
    let app = TestApp::spawn_with_kinds(test_config(), vec![gated_kind("gated", gate)]).await;
    let running = id_of(&app.create_job(&json!({ "kind": "gated" })).await);
    let seq = wait_for_stage(&app, &running, "s0").await;
    let completed = id_of(&app.create_demo(demo(2, 0)).await);
    let terminal = app.subscribe(&completed).await.all().await.last().unwrap().clone();
    assert_eq!(terminal.event, "completed");

    for value in garbage_last_event_ids() {
        let shown = String::from_utf8_lossy(value.as_bytes()).into_owned();
        let mut headers = HeaderMap::new();
        headers.insert("last-event-id", value.clone());
        let response = app.open(&format!("/v1/jobs/{running}/events"), headers.clone()).await;
        assert_eq!(response.status(), 200, "Last-Event-ID {shown:?} on a running job");
        let first = Sse::new(response).next().await.expect("a first event");
        assert_eq!(first.event, "snapshot", "Last-Event-ID {shown:?}");
        assert_eq!(first.seq(), seq, "the full current state after Last-Event-ID {shown:?}");

        let response = app.open(&format!("/v1/jobs/{completed}/events"), headers).await;
        assert_eq!(response.status(), 200, "Last-Event-ID {shown:?} on a completed job");
        let events = Sse::new(response).all().await;
        assert_eq!(events.len(), 1, "only the terminal event after Last-Event-ID {shown:?}");
        assert_eq!(events[0].event, "completed");
        assert_eq!(events[0].data, terminal.data);
    }
    for query in ["last_event_id=abc", "last_event_id=-1", "last_event_id=99999"] {
        let response = app
            .open(&format!("/v1/jobs/{running}/events?{query}"), HeaderMap::new())
            .await;
        assert_eq!(response.status(), 200, "?{query}");
        let first = Sse::new(response).next().await.expect("a first event");
        assert_eq!((first.event.as_str(), first.seq()), ("snapshot", seq), "?{query}");
    }
}
