//! Per-owner limits: beyond `--max-running-per-owner` an owner's jobs wait
//! queued while other owners' jobs take the free slots; beyond
//! `--max-queued-per-owner` and `--max-streams-per-owner` the answer is 429
//! with `Retry-After`.

use jobcast::Config;
use serde_json::{json, Value};

use crate::auth_common::*;
use crate::cluster::deployment_is_balanced;
use crate::helpers::*;

async fn status_of(caller: &Caller, job: &Value) -> String {
    caller.get_ok(&format!("/v1/jobs/{}", id_of(job))).await["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Waits until `job` has `status`, long-polling its changes.
async fn wait_for(caller: &Caller, job: &Value, status: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut now = caller.get_ok(&format!("/v1/jobs/{}", id_of(job))).await;
    while now["status"] != status {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never became {status}",
            id_of(job)
        );
        now = caller
            .get_ok(&format!(
                "/v1/jobs/{}?wait_seconds=5&after_seq={}",
                id_of(job),
                now["seq"]
            ))
            .await;
    }
}

#[tokio::test]
async fn one_owners_extra_jobs_wait_while_another_owner_takes_the_free_slots() {
    let server = AuthApp::spawn_with(Config {
        max_running: 3,
        max_running_per_owner: Some(1),
        ..test_config()
    })
    .await;
    let (alice, bob) = (server.caller(ALICE_KEY), server.caller(BOB_KEY));
    let long = json!({"delay_ms": 60_000});
    let alices = [
        alice.create_demo(long.clone()).await,
        alice.create_demo(long.clone()).await,
        alice.create_demo(long.clone()).await,
    ];
    wait_for(&alice, &alices[0], "running").await;
    // Bob comes after Alice's queued jobs, and still runs at once.
    let bobs = bob.create_demo(long.clone()).await;
    wait_for(&bob, &bobs, "running").await;
    let carol = server.caller(&mint("carol", jobcast::auth::Role::User));
    let carols = carol.create_demo(long.clone()).await;
    wait_for(&carol, &carols, "running").await;
    for waiting in &alices[1..] {
        assert_eq!(status_of(&alice, waiting).await, "queued");
    }
    // Alice's first ends: her next, in order, takes her place.
    assert_eq!(
        alice
            .post(&format!("/v1/jobs/{}/cancel", id_of(&alices[0])))
            .await
            .status(),
        200
    );
    wait_for(&alice, &alices[1], "running").await;
    assert_eq!(status_of(&alice, &alices[2]).await, "queued");
}

#[tokio::test]
async fn beyond_the_queued_and_stream_limits_an_owner_gets_429_with_retry_after() {
    let server = AuthApp::spawn_with(Config {
        max_running: 1,
        max_queued_per_owner: Some(2),
        max_streams_per_owner: Some(2),
        ..test_config()
    })
    .await;
    let admin = server.caller(&mint("admin", jobcast::auth::Role::Admin));
    server.app.take_extra_running_slots_as(&admin.client, 1).await;
    let (alice, bob) = (server.caller(ALICE_KEY), server.caller(BOB_KEY));
    let blocker = bob.create_demo(json!({"delay_ms": 60_000})).await;
    wait_for(&bob, &blocker, "running").await;
    let queued = [alice.create_demo(json!({})).await, alice.create_demo(json!({})).await];
    let refused = alice.post_json("/v1/jobs", &json!({"kind": "demo"})).await;
    let retry_after = refused.headers().get("retry-after").cloned();
    assert_problem(refused, 429, "a third queued job").await;
    assert!(retry_after.is_some());
    assert_eq!(
        bob.post_json("/v1/jobs", &json!({"kind": "demo"})).await.status(),
        202,
        "Bob has his own limit"
    );
    assert_eq!(
        alice
            .post(&format!("/v1/jobs/{}/cancel", id_of(&queued[0])))
            .await
            .status(),
        200
    );
    assert_eq!(
        alice.post_json("/v1/jobs", &json!({"kind": "demo"})).await.status(),
        202,
        "a place freed"
    );
    if deployment_is_balanced() {
        // --max-streams-per-owner counts each instance's own streams.
        return;
    }
    // Streams: two open, the third refused, one closed, one more allowed.
    let first = alice.stream("/v1/events").await;
    let _second = alice.stream(&format!("/v1/jobs/{}/events", id_of(&queued[1]))).await;
    let third = alice.get("/v1/events").await;
    let retry_after = third.headers().get("retry-after").cloned();
    assert_problem(third, 429, "a third stream").await;
    assert!(retry_after.is_some());
    // A ticket's stream counts against the job's owner too.
    let ticket_stream = server.anonymous().get(queued[1]["stream_url"].as_str().unwrap()).await;
    assert_problem(ticket_stream, 429, "a ticket's stream of Alice's job").await;
    assert_eq!(bob.get("/v1/events").await.status(), 200, "Bob's streams are his");
    drop(first);
    let path = format!("/v1/jobs/{}/events", id_of(&queued[1]));
    let (alice, path) = (&alice, &path);
    server
        .app
        .eventually("the closed stream's place is given back", || async move {
            alice.get(path).await.status() == 200
        })
        .await;
}
