//! Isolation, tested as an attacker would: two users and a service create
//! jobs, and each user tries every read and write path on the other's jobs.
//! Every try answers as for a job that does not exist, and no listing,
//! filter, cursor, stream or resume id shows anything of the other's jobs.

use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{json, Value};

use crate::auth_common::*;
use crate::helpers::*;

/// The jobs of the scenario.
struct Jobs {
    /// Alice's own, still running (a long delay).
    alice_running: Value,
    /// Bob's, still running, with the same labels as Alice's.
    bob_running: Value,
    /// Bob's, cancelled (so retryable).
    bob_cancelled: Value,
    /// Created for Alice by the service.
    for_alice: Value,
}

async fn scenario(server: &AuthApp) -> Jobs {
    let (alice, bob, service) = (
        server.caller(ALICE_KEY),
        server.caller(BOB_KEY),
        server.caller(SERVICE_KEY),
    );
    let labelled = |owner: Option<&str>| {
        let mut body = json!({"kind": "demo", "params": {"delay_ms": 60_000}, "labels": {"project": "42"}});
        if let Some(owner) = owner {
            body["owner"] = json!(owner);
        }
        body
    };
    let alice_running = alice.create_job(&labelled(None)).await;
    let bob_running = bob.create_job(&labelled(None)).await;
    let bob_cancelled = bob.create_job(&labelled(None)).await;
    assert_eq!(
        bob.post(&format!("/v1/jobs/{}/cancel", id_of(&bob_cancelled)))
            .await
            .status(),
        200
    );
    let for_alice = service.create_job(&labelled(Some("alice"))).await;
    Jobs {
        alice_running,
        bob_running,
        bob_cancelled,
        for_alice,
    }
}

/// A 404 exactly as for a job that never existed (but for the id it names).
async fn assert_hidden(response: reqwest::Response, what: &str) {
    let problem = assert_problem(response, 404, what).await;
    assert_eq!(problem["type"], "urn:jobcast:problem:not-found", "{what}");
    assert!(problem.get("job").is_none(), "{what}: {problem}");
}

#[tokio::test]
async fn a_user_reaches_nothing_of_another_users_jobs_by_id() {
    let server = AuthApp::spawn().await;
    let jobs = scenario(&server).await;
    let alice = server.caller(ALICE_KEY);
    let unknown = alice.get(&format!("/v1/jobs/{UNKNOWN_ID}")).await;
    let unknown = assert_problem(unknown, 404, "unknown").await;
    for bobs in [&jobs.bob_running, &jobs.bob_cancelled] {
        let id = id_of(bobs);
        for path in [
            format!("/v1/jobs/{id}"),
            format!("/v1/jobs/{id}?wait_seconds=2&after_seq=1"),
            format!("/v1/jobs/{id}/events"),
            format!("/v1/jobs/{id}/events?last_event_id=1"),
            bobs["stream_url"].as_str().unwrap().to_owned(),
        ] {
            assert_hidden(alice.get(&path).await, &path).await;
        }
        let resumed = send(
            alice
                .client
                .get(alice.url(&format!("/v1/jobs/{id}/events")))
                .header("last-event-id", "1"),
        )
        .await;
        assert_hidden(resumed, "resume").await;
        for action in ["cancel", "retry"] {
            assert_hidden(alice.post(&format!("/v1/jobs/{id}/{action}")).await, action).await;
        }
        let hidden = assert_problem(alice.get(&format!("/v1/jobs/{id}")).await, 404, "again").await;
        assert_eq!(hidden["title"], unknown["title"]);
    }
    let bob = server.caller(BOB_KEY);
    let still = bob.get_ok(&format!("/v1/jobs/{}", id_of(&jobs.bob_running))).await;
    assert_eq!(still["status"], "running", "Alice's cancel did nothing");
    let never_retried = bob.get_ok("/v1/jobs?label=project=42").await;
    assert_eq!(
        never_retried["jobs"].as_array().unwrap().len(),
        2,
        "Alice's retry made nothing"
    );
    // Alice's own, and the one made for her, are hers.
    for own in [&jobs.alice_running, &jobs.for_alice] {
        assert_eq!(
            alice.get_ok(&format!("/v1/jobs/{}", id_of(own))).await["owner"],
            "alice"
        );
    }
}

#[tokio::test]
async fn listings_show_a_user_only_its_jobs_with_every_filter_and_cursor() {
    let server = AuthApp::spawn().await;
    let jobs = scenario(&server).await;
    let alice = server.caller(ALICE_KEY);
    let alices: Vec<String> = [&jobs.for_alice, &jobs.alice_running]
        .iter()
        .map(|job| id_of(job))
        .collect();
    let ids = |page: &Value| -> Vec<String> { page["jobs"].as_array().unwrap().iter().map(id_of).collect() };
    for query in [
        "",
        "?kind=demo",
        "?status=running",
        "?status=queued&status=running&status=cancelled",
        "?label=project=42",
        "?kind=demo&label=project=42&status=running",
        "?limit=1000",
    ] {
        let page = alice.get_ok(&format!("/v1/jobs{query}")).await;
        for id in ids(&page) {
            assert!(alices.contains(&id), "{query}: {id} is not Alice's");
        }
        assert_eq!(page["next_cursor"], Value::Null, "{query}");
    }
    assert!(
        ids(&alice.get_ok("/v1/jobs?status=cancelled").await).is_empty(),
        "Bob's cancelled job"
    );
    // Page by page, one job each, and from a cursor naming Bob's job.
    let mut seen = Vec::new();
    let mut page = alice.get_ok("/v1/jobs?limit=1").await;
    loop {
        seen.extend(ids(&page));
        let Some(cursor) = page["next_cursor"].as_str() else {
            break;
        };
        page = alice.get_ok(&format!("/v1/jobs?limit=1&cursor={cursor}")).await;
    }
    assert_eq!(seen, alices);
    let from_bobs = alice
        .get_ok(&format!("/v1/jobs?cursor={}", id_of(&jobs.bob_cancelled)))
        .await;
    assert_eq!(ids(&from_bobs), vec![id_of(&jobs.alice_running)]);
    // The service sees every job.
    let all = server.caller(SERVICE_KEY).get_ok("/v1/jobs").await;
    assert_eq!(ids(&all).len(), 4);
}

/// Reads an all-jobs stream until `sentinel`'s cancelled event, and returns
/// the id and owner of every job it showed.
async fn shown_until(events: &mut Sse, sentinel: &str) -> Vec<(String, Value)> {
    let mut shown = Vec::new();
    loop {
        let event = events.next().await.expect("the stream stays open");
        let job = event.data.clone();
        shown.push((id_of(&job), job["owner"].clone()));
        if id_of(&job) == sentinel && event.event == "cancelled" {
            return shown;
        }
    }
}

#[tokio::test]
async fn the_all_jobs_stream_shows_a_user_only_its_jobs_even_resumed_from_anothers_ids() {
    let server = AuthApp::spawn().await;
    let jobs = scenario(&server).await;
    let (alice, bob) = (server.caller(ALICE_KEY), server.caller(BOB_KEY));
    // Bob's stream, and an id from it.
    let mut bobs = bob.stream("/v1/events").await;
    let first = bobs.next().await.unwrap();
    assert_eq!(first.data.clone()["owner"], "bob");
    let bobs_id = first.id.parse::<u64>().unwrap();
    let (bob_running, sentinel) = (id_of(&jobs.bob_running), id_of(&jobs.alice_running));
    let paths = [
        "/v1/events".to_owned(),
        format!("/v1/events?id={bob_running}&id={sentinel}"),
        "/v1/events?label=project=42&status=queued&status=running&kind=demo".to_owned(),
        format!("/v1/events?last_event_id={}", bobs_id - 1),
        "/v1/events?last_event_id=0".to_owned(),
    ];
    let mut streams = Vec::new();
    for path in &paths {
        streams.push((path.clone(), alice.stream(path).await));
    }
    let mut resume = HeaderMap::new();
    resume.insert("last-event-id", HeaderValue::from(bobs_id - 1));
    let resumed = send(alice.client.get(alice.url("/v1/events")).headers(resume)).await;
    assert_eq!(resumed.status(), 200);
    streams.push(("Last-Event-ID from Bob's stream".to_owned(), Sse::new(resumed)));
    // Bob's job changes, then Alice's ends: every stream shows the latter.
    assert_eq!(bob.post(&format!("/v1/jobs/{bob_running}/cancel")).await.status(), 200);
    assert_eq!(alice.post(&format!("/v1/jobs/{sentinel}/cancel")).await.status(), 200);
    for (path, mut events) in streams {
        for (id, owner) in shown_until(&mut events, &sentinel).await {
            assert_eq!(owner, "alice", "{path}: job {id}");
        }
    }
    // Bob's own stream saw his cancel.
    let mut bob_saw = Vec::new();
    while !bob_saw.contains(&bob_running) {
        let event = bobs.next().await.unwrap();
        if event.event == "cancelled" {
            bob_saw.push(id_of(&event.data.clone()));
        }
    }
}

#[tokio::test]
async fn an_idempotency_key_never_finds_another_owners_job() {
    let server = AuthApp::spawn().await;
    let body = json!({"kind": "demo", "params": {"delay_ms": 60_000}});
    let keyed = |key: &str| {
        let mut headers = HeaderMap::new();
        headers.insert("idempotency-key", HeaderValue::from_str(key).unwrap());
        headers
    };
    let bob = server.caller(BOB_KEY);
    let bobs = send(
        bob.client
            .post(bob.url("/v1/jobs"))
            .headers(keyed("export-1"))
            .json(&body),
    )
    .await;
    assert_eq!(bobs.status(), 202);
    let bobs: Value = bobs.json().await.unwrap();
    let alice = server.caller(ALICE_KEY);
    let alices = send(
        alice
            .client
            .post(alice.url("/v1/jobs"))
            .headers(keyed("export-1"))
            .json(&body),
    )
    .await;
    assert_eq!(alices.status(), 202);
    assert!(alices.headers().get("idempotent-replayed").is_none());
    let alices: Value = alices.json().await.unwrap();
    assert_ne!(alices["id"], bobs["id"]);
    assert_eq!(alices["owner"], "alice");
    // A different body under Bob's key tells Alice nothing either.
    let other = send(
        alice
            .client
            .post(alice.url("/v1/jobs"))
            .headers(keyed("export-1"))
            .json(&json!({"kind": "demo"})),
    )
    .await;
    let problem = assert_problem(other, 422, "Alice's own key, reused").await;
    assert!(!problem.to_string().contains(bobs["id"].as_str().unwrap()), "{problem}");
}
