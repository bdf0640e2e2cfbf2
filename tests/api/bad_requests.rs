//! Every error row of CONTRACT.md, as one table of bad requests across the
//! endpoints (400, 404, 405, 413, 415, 422, and 431 for an oversized head):
//! each answered alone with a problem, and all fired at once beside a job
//! that must not notice.

use std::collections::BTreeSet;

use futures_util::future::{join_all, BoxFuture};
use futures_util::FutureExt;
use jobcast::Config;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn a_body_that_is_not_valid_json_and_a_malformed_query_are_400_problems() {
    let app = TestApp::spawn().await;
    let job = id_of(&app.create_demo(demo(0, 0)).await);
    check_cases(&app, &job, 400).await;
    assert_no_job_but(&app, &[&job]).await;
}

#[tokio::test]
async fn unknown_and_malformed_job_ids_and_unknown_routes_are_404_problems() {
    let app = TestApp::spawn().await;
    let job = id_of(&app.create_demo(demo(0, 0)).await);
    check_cases(&app, &job, 404).await;
    for path in ["/v2/x", "/ui/nope", "/v1", "/v1/jobs/x/y/z"] {
        let response = send(app.client.get(app.url(path))).await;
        let problem = assert_problem(response, 404, path).await;
        assert!(
            problem["detail"].as_str().unwrap().contains("nothing is served at"),
            "an unknown route says so: {problem}"
        );
    }
    let response = send(app.client.get(app.url(&format!("/v1/jobs/{UNKNOWN_ID}")))).await;
    let problem = assert_problem(response, 404, "an unknown job").await;
    assert!(!problem["detail"].as_str().unwrap().contains("nothing is served at"));
}

#[tokio::test]
async fn a_wrong_method_is_a_405_problem_with_allow() {
    let app = TestApp::spawn().await;
    let job = id_of(&app.create_demo(demo(0, 0)).await);
    check_cases(&app, &job, 405).await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_readable_413_and_the_server_keeps_serving() {
    let app = TestApp::spawn_with(Config {
        body_limit: 1024,
        ..test_config()
    })
    .await;
    // At the limit: accepted.
    let response = send(json_post(&app, create_body_of_len(1024))).await;
    assert_eq!(response.status(), 202, "a body of exactly the limit is accepted");
    for len in [1025, 4096, 256 * 1024] {
        let response = send(json_post(&app, create_body_of_len(len))).await;
        assert_problem(response, 413, &format!("{len} bytes with a limit of 1024")).await;
        assert_eq!(send(app.client.get(app.url("/healthz"))).await.status(), 200);
    }
    // Without a Content-Length: the body is streamed in chunks.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = create_body_of_len(4096)
        .chunks(512)
        .map(|chunk| Ok(chunk.to_vec()))
        .collect();
    let response = send(
        app.client
            .post(app.url("/v1/jobs"))
            .header(CONTENT_TYPE, "application/json")
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))),
    )
    .await;
    assert_problem(response, 413, "a chunked body over the limit").await;
    let job = app.create_job(&json!({ "kind": "demo", "params": demo(1, 0) })).await;
    assert_well_formed(&app.subscribe(job["id"].as_str().unwrap()).await.all().await);

    // The default limit, 1 MiB.
    let app = TestApp::spawn().await;
    check_cases(&app, UNKNOWN_ID, 413).await;
    let response = send(json_post(&app, create_body_of_len(1024 * 1024))).await;
    assert_eq!(response.status(), 202, "a body of exactly 1 MiB is accepted");
    let job = app.create_job(&json!({ "kind": "demo", "params": demo(1, 0) })).await;
    assert_well_formed(&app.subscribe(job["id"].as_str().unwrap()).await.all().await);
}

#[tokio::test]
async fn a_body_that_is_not_application_json_is_a_415_problem() {
    let app = TestApp::spawn().await;
    check_cases(&app, UNKNOWN_ID, 415).await;
    assert_no_job_but(&app, &[]).await;
    for content_type in [
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        "Application/JSON",
    ] {
        let response = send(
            app.client
                .post(app.url("/v1/jobs"))
                .header(CONTENT_TYPE, content_type)
                .body(json!({ "kind": "demo", "params": demo(0, 0) }).to_string()),
        )
        .await;
        assert_eq!(response.status(), 202, "{content_type} is JSON");
    }
}

#[tokio::test]
async fn json_of_the_wrong_shape_unknown_kinds_and_bad_params_are_422_problems() {
    let app = TestApp::spawn().await;
    check_cases(&app, UNKNOWN_ID, 422).await;
    assert_no_job_but(&app, &[]).await;
}

#[tokio::test]
async fn a_garbage_content_type_is_a_415_problem() {
    let app = TestApp::spawn().await;
    for content_type in [&b";;;"[..], b"\xff\xfe", b"/", b"json", b"application/"] {
        let response = send(
            app.client
                .post(app.url("/v1/jobs"))
                .header(CONTENT_TYPE, HeaderValue::from_bytes(content_type).unwrap())
                .body(json!({ "kind": "demo" }).to_string()),
        )
        .await;
        assert_problem(response, 415, &format!("Content-Type {content_type:?}")).await;
    }
    assert_no_job_but(&app, &[]).await;
}

#[tokio::test]
async fn a_request_head_over_8_kib_is_refused_with_431_and_other_requests_go_on() {
    let app = TestApp::spawn().await;
    let job = id_of(&app.create_demo(demo(2, 20)).await);
    let response = send(
        app.client
            .get(app.url(&format!("/v1/jobs/{job}")))
            .header("x-padding", "a".repeat(9000)),
    )
    .await;
    assert_eq!(response.status(), 431);
    // A head that fits is served as usual, and the job was not disturbed.
    let response = send(
        app.client
            .get(app.url(&format!("/v1/jobs/{job}")))
            .header("x-padding", "a".repeat(6000)),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(app.get_job_when_terminal(&job).await["status"], "completed");
}

#[tokio::test]
async fn a_barrage_of_bad_requests_disturbs_no_other_job() {
    let app = TestApp::spawn().await;
    let job = app
        .create_demo(json!({ "stages": [{ "name": "a", "weight": 1.0, "steps": 60 }, { "name": "b", "weight": 3.0, "steps": 60 }],
                             "step_ms": 3, "delay_ms": 150 }))
        .await;
    let id = id_of(&job);
    let mut watcher = app.subscribe(&id).await;
    let first = watcher.next().await.expect("a snapshot");
    let watched = tokio::spawn(async move {
        let mut events = vec![first];
        events.extend(watcher.all().await);
        events
    });

    let mut barrage: Vec<BoxFuture<'_, ()>> = Vec::new();
    for round in 0..3 {
        for case in cases() {
            let app = &app;
            let id = &id;
            if round > 0 && case.body.as_ref().is_some_and(|body| body.len() > 4096) {
                continue;
            }
            barrage.push(async move { case.check(app, id).await }.boxed());
        }
        for value in garbage_last_event_ids() {
            let app = &app;
            let id = &id;
            barrage.push(
                async move {
                    let mut headers = HeaderMap::new();
                    headers.insert("last-event-id", value);
                    let response = app.open(&format!("/v1/jobs/{id}/events"), headers).await;
                    assert_eq!(response.status(), 200);
                    let events = Sse::new(response).all().await;
                    assert_well_formed(&events);
                    assert_eq!(events.last().unwrap().event, "completed");
                }
                .boxed(),
            );
        }
    }
    join_all(barrage).await;

    let events = watched.await.unwrap();
    assert_well_formed(&events);
    assert_eq!(events[0].event, "snapshot");
    let last = &events.last().unwrap().data;
    assert_eq!(events.last().unwrap().event, "completed");
    assert_eq!(last["progress"], 1.0);
    assert_eq!(last["result"], json!({ "stages": 2, "steps": 120 }));
    assert_eq!(last["error"], Value::Null);
    assert_eq!(&app.get_job(&id).await, last, "the job resource agrees with the stream");
    assert_no_job_but(&app, &[&id]).await;
    assert_eq!(send(app.client.get(app.url("/readyz"))).await.status(), 200);
}

// ------------------------------------------------------------ The table

/// One bad request and the answer the contract owes it.
struct Case {
    method: Method,
    /// `{job}` stands for an existing job's id.
    path: String,
    /// None: no Content-Type header at all.
    content_type: Option<&'static [u8]>,
    body: Option<Vec<u8>>,
    status: u16,
    /// For a 405: the methods `Allow` must list (HEAD aside).
    allow: &'static [&'static str],
}

impl Case {
    fn new(method: Method, path: impl Into<String>, status: u16) -> Self {
        Case {
            method,
            path: path.into(),
            content_type: None,
            body: None,
            status,
            allow: &[],
        }
    }

    /// A create request with this body and content type.
    fn create(content_type: Option<&'static [u8]>, body: impl Into<Vec<u8>>, status: u16) -> Self {
        Case {
            content_type,
            body: Some(body.into()),
            ..Case::new(Method::POST, "/v1/jobs", status)
        }
    }

    fn allowing(self, allow: &'static [&'static str]) -> Self {
        Case { allow, ..self }
    }

    fn describe(&self) -> String {
        let body = self
            .body
            .as_ref()
            .map(|body| String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned());
        let content_type = self.content_type.map(String::from_utf8_lossy);
        format!("{} {} ({content_type:?}) {body:?}", self.method, self.path)
    }

    /// Sends the request and checks the problem answer.
    async fn check(&self, app: &TestApp, job: &str) {
        let mut request = app
            .client
            .request(self.method.clone(), app.url(&self.path.replace("{job}", job)));
        if let Some(content_type) = self.content_type {
            request = request.header(CONTENT_TYPE, HeaderValue::from_bytes(content_type).unwrap());
        }
        if let Some(body) = &self.body {
            request = request.body(body.clone());
        }
        let response = send(request).await;
        let allow = allowed_methods(&response);
        assert_problem(response, self.status, &self.describe()).await;
        if self.status == 405 {
            let expected: BTreeSet<String> = self.allow.iter().map(|method| method.to_string()).collect();
            assert_eq!(allow, expected, "Allow of {}", self.describe());
        }
    }
}

const JSON: Option<&[u8]> = Some(b"application/json");

/// Every bad request of CONTRACT.md's error rows.
fn cases() -> Vec<Case> {
    let valid = json!({ "kind": "demo", "params": demo(1, 0) }).to_string();
    let mut cases = Vec::new();
    // 400: not valid JSON.
    for body in [
        &b"{"[..],
        b"nul",
        b"",
        b"{\"kind\":\"demo\"",
        b"\xff",
        b"{\"kind\":\"demo\"}}",
    ] {
        cases.push(Case::create(JSON, body, 400));
    }
    // 400: malformed query parameters.
    for query in [
        "limit=0",
        "limit=1001",
        "limit=abc",
        "cursor=abc",
        "status=bogus",
        "status=queued&status=bogus",
    ] {
        cases.push(Case::new(Method::GET, format!("/v1/jobs?{query}"), 400));
    }
    for query in ["wait_seconds=abc", "wait_seconds=-1", "wait_seconds=1.5", "after_seq=x"] {
        cases.push(Case::new(Method::GET, format!("/v1/jobs/{{job}}?{query}"), 400));
    }
    // 404: unknown and malformed job ids (one whose decoding is not UTF-8
    // too), for the job, its events, its cancel, its retry and its worker.
    for id in [UNKNOWN_ID, "not-a-uuid", "123", "%FF", "%C3%28"] {
        cases.push(Case::new(Method::GET, format!("/v1/jobs/{id}"), 404));
        cases.push(Case::new(Method::GET, format!("/v1/jobs/{id}/events"), 404));
        cases.push(Case::new(Method::POST, format!("/v1/jobs/{id}/cancel"), 404));
        cases.push(Case::new(Method::POST, format!("/v1/jobs/{id}/retry"), 404));
        cases.push(Case::new(Method::POST, format!("/v1/jobs/{id}/heartbeat"), 404));
    }
    // 404: unknown routes.
    cases.push(Case::new(Method::GET, "/v2/x", 404));
    cases.push(Case::new(Method::POST, "/v2/x", 404));
    cases.push(Case::new(Method::GET, "/v1/jobs/{job}/nope", 404));
    // 405: known paths, wrong methods.
    cases.push(Case::new(Method::DELETE, "/v1/jobs", 405).allowing(&["GET", "POST"]));
    cases.push(Case::new(Method::PUT, "/v1/jobs/{job}", 405).allowing(&["GET"]));
    cases.push(Case::new(Method::DELETE, "/v1/jobs/{job}", 405).allowing(&["GET"]));
    cases.push(Case::new(Method::GET, "/v1/jobs/{job}/cancel", 405).allowing(&["POST"]));
    cases.push(Case::new(Method::POST, "/v1/jobs/{job}/events", 405).allowing(&["GET"]));
    cases.push(Case::new(Method::POST, "/v1/kinds", 405).allowing(&["GET"]));
    // 413: over the default limit of 1 MiB.
    cases.push(Case::create(JSON, create_body_of_len(2 * 1024 * 1024), 413));
    cases.push(Case::create(JSON, create_body_of_len(1024 * 1024 + 1), 413));
    // 415: not application/json.
    cases.push(Case::create(Some(b"text/plain"), valid.clone(), 415));
    cases.push(Case::create(None, valid.clone(), 415));
    cases.push(Case::create(
        Some(b"application/x-www-form-urlencoded"),
        valid.clone(),
        415,
    ));
    cases.push(Case::create(Some(b";;;"), valid.clone(), 415));
    cases.push(Case::create(Some(b"application/jsonx"), valid, 415));
    // 422: valid JSON of the wrong shape.
    for body in [
        json!([]),
        json!("demo"),
        json!(null),
        json!(5),
        json!({}),
        json!({ "kind": 5 }),
        json!({ "kind": null }),
        json!({ "params": {} }),
        json!({ "kind": "demo", "extra": 1 }),
        json!({ "kind": "demo", "params": [1] }),
        json!({ "kind": "demo", "params": "x" }),
        json!({ "kind": "demo", "params": 1 }),
        // Unknown kinds.
        json!({ "kind": "nope" }),
        json!({ "kind": "" }),
        json!({ "kind": "Demo" }),
        // Invalid params.
        json!({ "kind": "demo", "params": { "step_ms": -1 } }),
        json!({ "kind": "demo", "params": { "step_ms": "fast" } }),
        json!({ "kind": "demo", "params": { "repeat": 0 } }),
        json!({ "kind": "demo", "params": { "fail_at": "nowhere" } }),
        json!({ "kind": "demo", "params": { "stages": "x" } }),
        json!({ "kind": "demo", "params": { "stages": [{ "weight": 1.0 }] } }),
        json!({ "kind": "demo", "params": { "stages": [{ "name": "a", "steps": -1 }] } }),
        json!({ "kind": "demo", "params": { "ignore_cancel": "yes" } }),
        // Unknown params, at any depth.
        json!({ "kind": "demo", "params": { "bogus": 1 } }),
        json!({ "kind": "demo", "params": { "stages": [{ "name": "a", "bogus": 1 }] } }),
    ] {
        cases.push(Case::create(JSON, body.to_string(), 422));
    }
    cases
}

/// Runs every case of the table that owes `status`.
async fn check_cases(app: &TestApp, job: &str, status: u16) {
    let cases: Vec<Case> = cases().into_iter().filter(|case| case.status == status).collect();
    assert!(!cases.is_empty());
    for case in &cases {
        case.check(app, job).await;
    }
}

/// A create request for raw JSON bytes.
fn json_post(app: &TestApp, body: Vec<u8>) -> reqwest::RequestBuilder {
    app.client
        .post(app.url("/v1/jobs"))
        .header(CONTENT_TYPE, "application/json")
        .body(body)
}

/// A valid create body of exactly `len` bytes (at least 80): a quick demo
/// job whose one stage has a long name.
fn create_body_of_len(len: usize) -> Vec<u8> {
    let (head, tail) = (
        r#"{"kind":"demo","params":{"stages":[{"name":""#,
        r#"","steps":0}],"step_ms":0}}"#,
    );
    let pad = len - head.len() - tail.len();
    let body = format!("{head}{}{tail}", "a".repeat(pad));
    assert_eq!(body.len(), len);
    body.into_bytes()
}

/// Checks that the server holds no job besides `ids`.
async fn assert_no_job_but(app: &TestApp, ids: &[&String]) {
    let (listed, _) = list_page(app, "limit=1000").await;
    let expected: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    assert_eq!(listed, expected, "no bad request created a job");
}
