//! POST /v1/jobs: the 202 answer and its Location, the job resource it
//! returns (every field, its UUIDv7 id), and what omitted params mean.

use reqwest::header::{CONTENT_TYPE, LOCATION};
use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn creating_a_job_answers_202_with_its_location_and_the_whole_job() {
    let app = TestApp::spawn().await;
    let response = send(
        app.client
            .post(app.url("/v1/jobs"))
            .json(&json!({ "kind": "demo", "params": demo(3, 1) })),
    )
    .await;
    assert_eq!(response.status(), 202);
    let location = response.headers()[LOCATION].to_str().unwrap().to_owned();
    assert!(response.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let job: Value = response.json().await.unwrap();
    assert_job_shape(&job);
    let id = job["id"].as_str().unwrap();
    assert_eq!(location, format!("/v1/jobs/{id}"));
    assert!(is_lowercase_uuid_v7(id), "a lowercase UUIDv7: {id}");
    assert_eq!(job["kind"], "demo");
    assert_eq!(job["seq"], 1, "seq starts at 1");
    assert_eq!(job["status"], "queued");
    assert_eq!(job["params"], demo(3, 1), "params are echoed");
    assert_eq!(job["started_at"], Value::Null, "started_at is null while queued");
    assert_eq!(job["finished_at"], Value::Null);
    assert_eq!(job["result"], Value::Null);
    assert_eq!(job["error"], Value::Null);
    assert!(job["updated_at"].as_str() >= job["created_at"].as_str());

    let at_location: Value = send(app.client.get(app.url(&location))).await.json().await.unwrap();
    assert_eq!(at_location["id"], job["id"], "Location names the job");
    let events = app.subscribe(id).await.all().await;
    assert_well_formed(&events);
    assert_eq!(events.last().unwrap().event, "completed");
}

#[tokio::test]
async fn job_ids_are_distinct_time_ordered_lowercase_uuid_v7s() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        let job = app.create_demo(demo(0, 0)).await;
        ids.push(job["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        assert!(is_lowercase_uuid_v7(id), "a lowercase UUIDv7: {id}");
    }
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, ids, "ids are distinct and sort in creation order");
}

#[tokio::test]
async fn params_omitted_or_null_mean_an_empty_object() {
    let app = TestApp::spawn().await;
    for body in [json!({ "kind": "demo" }), json!({ "kind": "demo", "params": null })] {
        let job = app.create_job(&body).await;
        assert_eq!(job["params"], json!({}), "params of {body}");
        let id = job["id"].as_str().unwrap();
        assert_eq!(app.get_job(id).await["params"], json!({}));
        let (status, _) = app.cancel(id).await;
        assert_eq!(status, 200);
    }
}

#[tokio::test]
async fn labels_given_at_creation_are_in_every_state_of_the_job() {
    let app = TestApp::spawn().await;
    let labels = json!({ "project": "42", "pipeline.example/stage": "export-v2", "empty": "" });
    let job = app
        .create_job(&json!({ "kind": "demo", "params": demo(3, 1), "labels": labels }))
        .await;
    assert_eq!(job["labels"], labels);
    let id = id_of(&job);
    let events = app.subscribe(&id).await.all().await;
    assert_well_formed(&events);
    for event in &events {
        assert_eq!(event.data["labels"], labels, "{} {}", event.event, event.seq());
    }
    assert_eq!(app.get_job(&id).await["labels"], labels);

    for body in [
        json!({ "kind": "demo", "params": demo(0, 0) }),
        json!({ "kind": "demo", "params": demo(0, 0), "labels": null }),
        json!({ "kind": "demo", "params": demo(0, 0), "labels": {} }),
    ] {
        let job = app.create_job(&body).await;
        assert_eq!(job["labels"], json!({}), "labels are {{}} when unused: {body}");
    }
}

#[tokio::test]
async fn every_bad_label_is_a_422_naming_it_and_creates_nothing() {
    let app = TestApp::spawn().await;
    let seventeen: serde_json::Map<String, Value> = (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    let long_key = "a".repeat(64);
    let cases = [
        (json!({ "Project": "1" }), "\"Project\""),
        (json!({ "": "1" }), "key \"\""),
        (json!({ "-x": "1" }), "\"-x\""),
        (json!({ "a b": "1" }), "\"a b\""),
        (json!({ long_key.clone(): "1" }), long_key.as_str()),
        (json!({ "n": 1 }), "\"n\""),
        (json!({ "n": null }), "\"n\""),
        (json!({ "n": ["1"] }), "\"n\""),
        (json!({ "long": "x".repeat(257) }), "\"long\""),
        (Value::Object(seventeen), "17"),
        (json!(["project", "42"]), "labels"),
        (json!("project=42"), "labels"),
    ];
    for (labels, named) in cases {
        let body = json!({ "kind": "demo", "params": demo(0, 0), "labels": labels });
        let response = send(app.client.post(app.url("/v1/jobs")).json(&body)).await;
        let problem = assert_problem(response, 422, &format!("labels {labels}")).await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(named), "the detail names {named}: {detail}");
    }
    let (ids, _) = list_page(&app, "").await;
    assert!(ids.is_empty(), "nothing was created: {ids:?}");
}

#[tokio::test]
async fn a_demo_step_and_its_delay_may_each_last_up_to_a_day() {
    let app = TestApp::spawn().await;
    const DAY_MS: u64 = 24 * 60 * 60 * 1000;
    for params in [
        json!({ "stages": [{ "name": "work", "steps": 2 }], "step_ms": DAY_MS }),
        json!({ "stages": [{ "name": "work", "steps": 2 }], "delay_ms": DAY_MS }),
    ] {
        let job = app.create_demo(params.clone()).await;
        let id = id_of(&job);
        wait_for_stages(&app, &id).await;
        let (status, cancelled) = app.cancel(&id).await;
        assert_eq!(
            (status, &cancelled["error"]["code"]),
            (200, &json!("cancelled")),
            "{params}"
        );
    }
    for param in ["step_ms", "delay_ms"] {
        let body = json!({ "kind": "demo", "params": { param: DAY_MS + 1 } });
        let response = send(app.client.post(app.url("/v1/jobs")).json(&body)).await;
        let problem = assert_problem(response, 422, &format!("{param} over a day")).await;
        assert!(problem["detail"].as_str().unwrap().contains(param), "{problem}");
    }
}
