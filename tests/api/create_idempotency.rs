//! POST /v1/jobs with `Idempotency-Key`: the same key and body answer the
//! same job and create nothing, even when many identical requests race; a
//! different body is a 422; malformed keys are 400s; a key lives as long as
//! its job.

use futures_util::future::join_all;
use jobcast::Config;
use reqwest::header::LOCATION;
use serde_json::{json, Value};

use crate::helpers::*;

/// POSTs `body` to /v1/jobs with `Idempotency-Key: key`.
async fn create_with_key(app: &TestApp, key: &str, body: &Value) -> reqwest::Response {
    send(
        app.client
            .post(app.url("/v1/jobs"))
            .header("idempotency-key", key)
            .json(body),
    )
    .await
}

/// The 202 answer's Location, whether it is a replay, and the job.
async fn accepted(response: reqwest::Response) -> (String, bool, Value) {
    assert_eq!(response.status(), 202);
    let location = response.headers()[LOCATION].to_str().unwrap().to_owned();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .map(|value| value.to_str().unwrap().to_owned());
    assert!(matches!(replayed.as_deref(), None | Some("true")), "{replayed:?}");
    (location, replayed.is_some(), response.json().await.unwrap())
}

#[tokio::test]
async fn the_same_key_and_body_answer_the_same_job_as_it_is_now_and_create_nothing() {
    let app = TestApp::spawn().await;
    let body = json!({ "kind": "demo", "params": demo(2, 0), "labels": { "project": "42" } });
    let (location, replayed, job) = accepted(create_with_key(&app, "order-17", &body).await).await;
    assert!(!replayed, "the first answer is no replay");
    let id = id_of(&job);
    let done = app.wait_for_status(&id, "completed").await;

    // Equal as JSON values: members in another order, other spacing.
    let reordered = r#"{ "labels": {"project":"42"}, "params": {"step_ms": 0, "stages": [{"steps": 2, "weight": 1.0, "name": "work"}]}, "kind": "demo" }"#;
    let again = app
        .client
        .post(app.url("/v1/jobs"))
        .header("idempotency-key", "order-17")
        .header("content-type", "application/json")
        .body(reordered);
    for response in [create_with_key(&app, "order-17", &body).await, send(again).await] {
        let (again_location, replayed, again_job) = accepted(response).await;
        assert!(replayed, "a repeat says so in Idempotent-Replayed");
        assert_eq!(again_location, location, "the same Location");
        assert_eq!(again_job, done, "the job as it is now");
    }
    let (ids, _) = list_page(&app, "").await;
    assert_eq!(ids, [id], "nothing more was created");

    // Another key is another job.
    let (other, _, _) = accepted(create_with_key(&app, "order-18", &body).await).await;
    assert_ne!(other, location);
}

#[tokio::test]
async fn omitted_or_null_params_and_labels_are_the_same_body_as_empty_ones() {
    let app = TestApp::spawn().await;
    let (location, _, _) =
        accepted(create_with_key(&app, "k", &json!({ "kind": "demo", "params": long_wait() })).await).await;
    let (location_again, replayed, _) = accepted(
        create_with_key(
            &app,
            "k",
            &json!({ "kind": "demo", "params": long_wait(), "labels": {} }),
        )
        .await,
    )
    .await;
    assert!(replayed);
    assert_eq!(location_again, location);

    let (location, _, _) = accepted(create_with_key(&app, "empty", &json!({ "kind": "demo" })).await).await;
    for body in [
        json!({ "kind": "demo", "params": null }),
        json!({ "kind": "demo", "params": {} }),
        json!({ "kind": "demo", "labels": null }),
    ] {
        let (again, replayed, _) = accepted(create_with_key(&app, "empty", &body).await).await;
        assert!(replayed, "{body}");
        assert_eq!(again, location, "{body}");
    }
}

#[tokio::test]
async fn the_same_key_with_a_different_body_is_a_422_and_creates_nothing() {
    let app = TestApp::spawn().await;
    let body = json!({ "kind": "demo", "params": long_wait(), "labels": { "project": "42" } });
    let (_, _, job) = accepted(create_with_key(&app, "k", &body).await).await;
    let id = id_of(&job);
    let mut other_params = body.clone();
    other_params["params"]["step_ms"] = json!(2);
    let mut other_labels = body.clone();
    other_labels["labels"]["project"] = json!("43");
    let mut no_labels = body.clone();
    no_labels["labels"] = json!({});
    let mut other_kind = body.clone();
    other_kind["kind"] = json!("nope");
    for different in [other_params, other_labels, no_labels, other_kind] {
        let problem = assert_problem(
            create_with_key(&app, "k", &different).await,
            422,
            &different.to_string(),
        )
        .await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("Idempotency-Key") && detail.contains(&id), "{detail}");
    }
    let (ids, _) = list_page(&app, "").await;
    assert_eq!(ids, [id]);
}

#[tokio::test]
async fn fifty_identical_racing_requests_create_one_job() {
    let app = TestApp::spawn().await;
    let body = json!({ "kind": "demo", "params": long_wait() });
    let answers = join_all((0..50).map(|_| async { accepted(create_with_key(&app, "race", &body).await).await })).await;
    let locations: std::collections::HashSet<&str> = answers.iter().map(|(location, _, _)| location.as_str()).collect();
    assert_eq!(locations.len(), 1, "one Location for all: {locations:?}");
    assert_eq!(
        answers.iter().filter(|(_, replayed, _)| !replayed).count(),
        1,
        "one first answer"
    );
    let (ids, _) = list_page(&app, "").await;
    assert_eq!(ids.len(), 1, "one job: {ids:?}");
}

#[tokio::test]
async fn malformed_idempotency_keys_are_400_problems_and_create_nothing() {
    let app = TestApp::spawn().await;
    let body = json!({ "kind": "demo", "params": demo(0, 0) });
    for (key, what) in [
        ("k".repeat(256), "256 characters"),
        ("k".repeat(1000), "1000 characters"),
        (String::new(), "an empty key"),
    ] {
        assert_problem(create_with_key(&app, &key, &body).await, 400, what).await;
    }
    let non_ascii = reqwest::header::HeaderValue::from_bytes(b"caf\xe9").unwrap();
    let response = send(
        app.client
            .post(app.url("/v1/jobs"))
            .header("idempotency-key", non_ascii)
            .json(&body),
    )
    .await;
    assert_problem(response, 400, "a key that is not ASCII").await;
    assert_problem(create_with_key(&app, "a\tb", &body).await, 400, "a key with a tab").await;
    let twice = app
        .client
        .post(app.url("/v1/jobs"))
        .header("idempotency-key", "a")
        .header("idempotency-key", "b")
        .json(&body);
    assert_problem(send(twice).await, 400, "two keys").await;
    let (ids, _) = list_page(&app, "").await;
    assert!(ids.is_empty(), "nothing was created: {ids:?}");

    let (_, replayed, _) = accepted(create_with_key(&app, &"k".repeat(255), &body).await).await;
    assert!(!replayed, "255 characters is a key");
}

#[tokio::test]
async fn a_refused_create_leaves_its_key_free() {
    let app = TestApp::spawn().await;
    let refused = create_with_key(&app, "k", &json!({ "kind": "demo", "params": { "step_ms": -1 } })).await;
    assert_problem(refused, 422, "invalid params").await;
    let body = json!({ "kind": "demo", "params": demo(0, 0) });
    let (_, replayed, _) = accepted(create_with_key(&app, "k", &body).await).await;
    assert!(!replayed, "the key was free");
}

#[tokio::test]
async fn a_key_lives_as_long_as_its_job() {
    let app = TestApp::spawn_with(Config {
        max_finished: 1,
        ..test_config()
    })
    .await;
    let body = json!({ "kind": "demo", "params": demo(0, 0) });
    let (first, _, job) = accepted(create_with_key(&app, "k", &body).await).await;
    app.wait_for_status(&id_of(&job), "completed").await;
    let (again, replayed, _) = accepted(create_with_key(&app, "k", &body).await).await;
    assert!(replayed, "kept while its job is");
    assert_eq!(again, first);

    // A second finished job pushes the first out of retention, and its key with it.
    let other = app.create_demo(demo(0, 0)).await;
    app.wait_for_status(&id_of(&other), "completed").await;
    app.eventually("the first job is forgotten", || async {
        send(app.client.get(app.url(&first))).await.status() == 404
    })
    .await;
    let (new, replayed, _) = accepted(create_with_key(&app, "k", &body).await).await;
    assert!(!replayed, "the key went with its job");
    assert_ne!(new, first, "a new job");
}
