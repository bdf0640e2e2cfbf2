//! GET /v1/kinds: each kind's description, params schema, and an example
//! that creates a valid job.

use reqwest::header::CONTENT_TYPE;
use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn the_kinds_list_describes_demo_and_its_example_creates_a_valid_job() {
    let app = TestApp::spawn().await;
    let response = send(app.client.get(app.url("/v1/kinds"))).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let body: Value = response.json().await.unwrap();
    let kinds = body["kinds"].as_array().expect("a kinds array");
    let names: Vec<&str> = kinds.iter().map(|kind| kind["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["demo"]);
    let demo_kind = &kinds[0];
    assert!(!demo_kind["description"].as_str().unwrap().trim().is_empty());
    let schema = &demo_kind["params_schema"];
    assert_eq!(schema["type"], "object", "params_schema is a JSON Schema of an object");
    for param in ["stages", "step_ms", "delay_ms", "fail_at", "repeat", "ignore_cancel"] {
        assert!(schema["properties"][param].is_object(), "the schema documents {param}");
    }
    let example = &demo_kind["example"];
    assert!(example.is_object(), "example params are an object");

    let job = app.create_job(&json!({ "kind": "demo", "params": example })).await;
    assert_eq!(&job["params"], example);
    let (status, cancelled) = app.cancel(job["id"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(cancelled["status"], "cancelled");
}
