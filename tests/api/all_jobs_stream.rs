//! GET /v1/events, the all-jobs stream: a snapshot of every live job then
//! every change, resuming with the newest state of each job changed since,
//! and the `kind`, `id` and `status` filters.

use std::collections::HashSet;

use jobcast::{JobContext, JobError, JobResult, Kind};
use reqwest::header::HeaderMap;
use serde_json::{json, Map, Value};

use crate::helpers::*;

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
        let events = next_events(&mut stream, expected.len()).await;
        let got = events_and_ids(&events);
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
async fn the_all_jobs_stream_shows_only_jobs_with_every_label_asked_for_also_on_resume() {
    let app = TestApp::spawn().await;
    let prod = app
        .create_labelled(long_wait(), json!({ "project": "42", "env": "prod" }))
        .await;
    let dev = app
        .create_labelled(long_wait(), json!({ "project": "42", "env": "dev" }))
        .await;
    let other = app.create_labelled(long_wait(), json!({ "project": "7" })).await;
    for id in [&prod, &dev, &other] {
        wait_for_stages(&app, id).await;
    }
    let mut project = all_jobs(&app, "?label=project=42", HeaderMap::new()).await;
    let mut prod_only = all_jobs(&app, "?label=project=42&label=env=prod", HeaderMap::new()).await;
    let mut with_kind = all_jobs(&app, "?kind=demo&label=project=7", HeaderMap::new()).await;
    let snapshots = [project.next().await.unwrap(), project.next().await.unwrap()];
    let shown: Vec<&Value> = snapshots.iter().map(|event| &event.data["id"]).collect();
    assert_eq!(
        shown,
        [&prod, &dev],
        "snapshots of the live jobs with the label, in id order"
    );
    let n: u64 = snapshots[1].id.parse().unwrap();

    let new = app.create_labelled(demo(2, 0), json!({ "project": "42" })).await;
    app.wait_for_status(&new, "completed").await;
    app.create_labelled(demo(2, 0), json!({ "project": "7" })).await;
    for id in [&prod, &other, &dev] {
        assert_eq!(app.cancel(id).await.0, 200);
    }

    let events = read_until(&mut project, |event| event.data["id"] == dev && event.is_terminal()).await;
    assert_ids_increase(&events);
    assert!(
        events.iter().all(|event| event.data["labels"]["project"] == "42"),
        "only project 42: {:?}",
        kinds_and_events(&events)
    );
    assert!(events
        .iter()
        .any(|event| event.data["id"] == new && event.event == "completed"));
    let events = read_until(&mut prod_only, |event| event.data["id"] == prod && event.is_terminal()).await;
    assert!(
        events.iter().all(|event| event.data["id"] == prod),
        "all labels must match"
    );
    let events = read_until(&mut with_kind, |event| event.data["id"] == other && event.is_terminal()).await;
    assert!(events.iter().all(|event| event.data["labels"]["project"] == "7"));

    let mut resumed = all_jobs(&app, "?label=project=42", last_event_id(n)).await;
    let expected = [
        ("completed", new.as_str()),
        ("cancelled", prod.as_str()),
        ("cancelled", dev.as_str()),
    ];
    let events = next_events(&mut resumed, expected.len()).await;
    assert_eq!(
        events_and_ids(&events),
        expected,
        "on resume, the newest state of each labelled job changed since"
    );
}

#[tokio::test]
async fn malformed_filters_are_400_problems() {
    let app = TestApp::spawn().await;
    for query in [
        "?status=bogus",
        "?status=running&status=bogus",
        "?status=",
        "?label=project",
        "?label==42",
        "?label=",
        "?kind=demo&label=project",
        "?id=not-a-uuid",
        "?id=0193a8f2-6c1e-7c3a-9d2b-5f0e4a1b2c3d&id=nope",
        "?id=",
        "?id={0193a8f2-6c1e-7c3a-9d2b-5f0e4a1b2c3d}",
    ] {
        let response = app.open(&format!("/v1/events{query}"), HeaderMap::new()).await;
        assert_problem(response, 400, &format!("/v1/events{query}")).await;
    }
}

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

/// The next `count` events.
async fn next_events(stream: &mut Sse, count: usize) -> Vec<SseEvent> {
    let mut events = Vec::new();
    for _ in 0..count {
        events.push(stream.next().await.expect("the all-jobs stream stays open"));
    }
    events
}

/// (event name, job id) of each event.
fn events_and_ids(events: &[SseEvent]) -> Vec<(&str, &str)> {
    events
        .iter()
        .map(|event| (event.event.as_str(), event.data["id"].as_str().unwrap()))
        .collect()
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

/// A kind that declares one stage and waits to be cancelled.
fn sleeper() -> Kind {
    Kind::new("sleeper", wait_for_cancel)
}

async fn wait_for_cancel(ctx: JobContext, _params: Map<String, Value>) -> JobResult {
    ctx.declare_stages([("waiting", 1.0)])?;
    ctx.cancelled().await;
    Err(JobError::cancelled())
}
