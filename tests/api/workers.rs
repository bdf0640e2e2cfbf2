//! External kinds: a worker drives its job over HTTP with a per-job token —
//! heartbeats with progress, complete, fail — and cancel waits for its
//! acknowledgement. Kinds come from kinds-file text, as users declare them.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_well_formed, id_of, test_config, TestApp, UNKNOWN_ID};
use jobcast::Config;

/// An external kind `ingest` with two stages, whose worker must call at
/// least every `heartbeat_timeout`; `start_timeout` if not empty.
fn kinds_file(heartbeat_timeout: &str, start_timeout: &str) -> String {
    let start = if start_timeout.is_empty() {
        String::new()
    } else {
        format!("start_timeout = \"{start_timeout}\"")
    };
    format!(
        r#"
        [kinds.ingest]
        description = "Downloads and indexes a file, in a worker"
        stages = [{{ name = "download", weight = 1 }}, {{ name = "index", weight = 3 }}]
        example = {{ url = "https://example.com/data.csv" }}

        [kinds.ingest.params.url]
        type = "string"
        required = true
        pattern = "^https?://"

        [kinds.ingest.params.priority]
        type = "string"
        enum = ["low", "high"]
        default = "low"

        [kinds.ingest.external]
        heartbeat_timeout = "{heartbeat_timeout}"
        {start}
        "#
    )
}

async fn spawn(config: Config, heartbeat_timeout: &str) -> TestApp {
    TestApp::spawn_with_kinds_file(config, &kinds_file(heartbeat_timeout, ""), std::path::Path::new(".")).await
}

/// Creates an ingest job: the job and its worker token.
async fn create_ingest(app: &TestApp) -> (Value, String) {
    let response = app
        .client
        .post(app.url("/v1/jobs"))
        .json(&json!({"kind": "ingest", "params": {"url": "https://example.com/a.csv"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let job: Value = response.json().await.unwrap();
    let token = job["worker_token"].as_str().expect("a worker token").to_owned();
    (job, token)
}

/// A POST to a worker endpoint, to be finished by the caller.
fn worker_request(app: &TestApp, id: &str, action: &str) -> reqwest::RequestBuilder {
    app.client.post(app.url(&format!("/v1/jobs/{id}/{action}")))
}

/// POSTs `body` to a worker endpoint with `token` (None: no Authorization).
async fn call(app: &TestApp, id: &str, action: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
    let mut request = worker_request(app, id, action).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_worker_starts_reports_and_completes_its_job() {
    let app = spawn(test_config(), "30s").await;
    let (job, token) = create_ingest(&app).await;
    let id = id_of(&job);
    assert!(token.starts_with("jcw_") && token.len() > 60, "{token}");
    assert_eq!(job["status"], "queued");
    assert_eq!(job["params"], json!({"url": "https://example.com/a.csv"}));
    let shown = app.get_job(&id).await;
    assert!(shown.get("worker_token").is_none(), "the token is shown only once");
    assert_eq!(shown["status"], "queued", "a job waits for its worker");

    let mut events = app.subscribe(&id).await;
    let (status, answer) = call(
        &app,
        &id,
        "heartbeat",
        Some(&token),
        json!({"stage": "download", "current": 5, "total": 10, "unit": "MB", "message": "downloading"}),
    )
    .await;
    assert_eq!((status, answer), (StatusCode::OK, json!({"cancel_requested": false})));
    let mut running = app.wait_for_status(&id, "running").await;
    // Counter changes are published within the publish interval.
    while running["stage"]["current"] != 5 {
        running = app.get_job_after(&id, running["seq"].as_u64().unwrap()).await;
    }
    assert_eq!(
        running["stage"],
        json!({"name": "download", "index": 0, "count": 2, "current": 5, "total": 10, "unit": "MB"})
    );
    assert_eq!(running["message"], "downloading");

    let (status, _) = call(
        &app,
        &id,
        "heartbeat",
        Some(&token),
        json!({"stage": "index", "total": 4}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, done) = call(&app, &id, "complete", Some(&token), json!({"result": {"rows": 1200}})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(done["status"], "completed");
    assert_eq!(done["result"], json!({"rows": 1200}));
    assert_eq!(done["progress"], 1.0);

    let events = events.all().await;
    assert_well_formed(&events);
    let last = events.last().unwrap();
    assert_eq!(last.event, "completed");
    assert_eq!(last.data, done);
    let (status, again) = call(&app, &id, "complete", Some(&token), json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "a job completes once");
    assert_eq!(again["job"], done);
}

#[tokio::test]
async fn nulls_count_as_left_out_and_counts_may_be_whole_floats() {
    let app = spawn(test_config(), "30s").await;
    let (job, token) = create_ingest(&app).await;
    let id = id_of(&job);
    let report =
        json!({"stage": "download", "current": 7.0, "total": 1e2, "unit": null, "message": null, "stages": null});
    let (status, answer) = call(&app, &id, "heartbeat", Some(&token), report).await;
    assert_eq!((status, answer), (StatusCode::OK, json!({"cancel_requested": false})));
    let mut running = app.wait_for_status(&id, "running").await;
    while running["stage"]["current"] != 7 {
        running = app.get_job_after(&id, running["seq"].as_u64().unwrap()).await;
    }
    assert_eq!(running["stage"]["total"], 100);
    let (status, failed) = call(
        &app,
        &id,
        "fail",
        Some(&token),
        json!({"code": null, "message": null, "retryable": null}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(failed["error"]["code"], "worker_failed");
    assert_eq!(failed["error"]["retryable"], false);
}

#[tokio::test]
async fn an_empty_body_is_no_body_whatever_its_content_type() {
    let app = spawn(test_config(), "30s").await;
    let (job, token) = create_ingest(&app).await;
    let id = id_of(&job);
    let response = worker_request(&app, &id, "heartbeat")
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = worker_request(&app, &id, "complete")
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let done: Value = response.json().await.unwrap();
    assert_eq!((&done["status"], &done["result"]), (&json!("completed"), &Value::Null));
}

#[tokio::test]
async fn a_heartbeat_may_have_no_body() {
    let app = spawn(test_config(), "30s").await;
    let (job, token) = create_ingest(&app).await;
    let id = id_of(&job);
    let response = worker_request(&app, &id, "heartbeat")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"cancel_requested": false})
    );
    assert_eq!(app.get_job(&id).await["status"], "running");
}

#[tokio::test]
async fn calls_without_the_jobs_token_are_refused_and_change_nothing() {
    let app = spawn(test_config(), "30s").await;
    let (job, token) = create_ingest(&app).await;
    let (other, other_token) = create_ingest(&app).await;
    let id = id_of(&job);
    let demo = id_of(&app.create_demo(json!({"step_ms": 50})).await);
    let before = app.get_job(&id).await;
    let progress = json!({"stage": "download", "current": 1});

    for action in ["heartbeat", "complete", "fail"] {
        let (status, problem) = call(&app, &id, action, None, progress.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{action} without a token");
        assert_eq!(problem["status"], 401);
        for wrong in [other_token.as_str(), "jcw_0000", "", &token[..token.len() - 1]] {
            let (status, problem) = call(&app, &id, action, Some(wrong), progress.clone()).await;
            let expected = if wrong.is_empty() {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::FORBIDDEN
            };
            assert_eq!(status, expected, "{action} with {wrong:?}");
            assert_eq!(problem["status"], expected.as_u16());
        }
        let (status, _) = call(&app, &demo, action, Some(&token), json!({})).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{action} on a job no worker drives");
        let (status, problem) = call(&app, UNKNOWN_ID, action, Some(&token), json!({})).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(problem["status"], 404);
    }

    // The token is checked before the body is read.
    let response = worker_request(&app, &id, "heartbeat")
        .bearer_auth(&other_token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let response = worker_request(&app, &id, "heartbeat")
        .header("authorization", b"Bearer \xff\xfe".as_slice())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"].to_str().unwrap(),
        "Bearer realm=\"jobcast worker\""
    );
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );

    assert_eq!(app.get_job(&id).await, before, "nothing changed");
    assert_eq!(app.get_job(&id_of(&other)).await["status"], "queued");
}

#[tokio::test]
async fn bad_worker_bodies_get_problems_and_the_job_goes_on() {
    let app = spawn(test_config(), "30s").await;
    let (job, token) = create_ingest(&app).await;
    let id = id_of(&job);
    let cases = [
        ("heartbeat", json!({"stage": "no such stage"})),
        ("heartbeat", json!({"current": -1})),
        ("heartbeat", json!({"current": "five"})),
        ("heartbeat", json!({"unknown": 1})),
        ("heartbeat", json!([1, 2])),
        ("complete", json!({"result": 1, "extra": true})),
        ("fail", json!({"code": "cancelled"})),
        ("fail", json!({"code": "heartbeat_timeout"})),
        ("fail", json!({"code": "interrupted"})),
        ("fail", json!({"code": "instance_lost"})),
        ("fail", json!({"code": "shutdown"})),
        ("fail", json!({"code": "Not A Code"})),
        ("fail", json!({"retryable": "yes"})),
    ];
    for (action, body) in cases {
        let (status, problem) = call(&app, &id, action, Some(&token), body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{action} {body}: {problem}");
        assert_eq!(problem["status"], 422);
    }
    let response = worker_request(&app, &id, "heartbeat")
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"current\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let job = app.get_job(&id).await;
    assert_eq!(job["status"], "running", "the job is not disturbed: {job}");
    let (status, _) = call(&app, &id, "heartbeat", Some(&token), json!({"stage": "index"})).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_workers_failure_ends_the_job_failed_with_its_error() {
    let app = spawn(test_config(), "30s").await;
    let (job, token) = create_ingest(&app).await;
    let id = id_of(&job);
    call(&app, &id, "heartbeat", Some(&token), json!({"stage": "index"})).await;
    let (status, failed) = call(
        &app,
        &id,
        "fail",
        Some(&token),
        json!({"code": "disk_full", "message": "no space left on /data", "retryable": true}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(failed["status"], "failed");
    assert_eq!(
        failed["error"],
        json!({"code": "disk_full", "message": "no space left on /data", "stage": "index", "retryable": true})
    );
    let (status, problem) = call(&app, &id, "heartbeat", Some(&token), json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "an ended job takes no heartbeat");
    assert_eq!(problem["job"], failed);
}

#[tokio::test]
async fn cancel_answers_when_the_worker_acknowledges_with_its_next_heartbeat() {
    let app = spawn(test_config(), "30s").await;
    let (job, token) = create_ingest(&app).await;
    let id = id_of(&job);
    call(
        &app,
        &id,
        "heartbeat",
        Some(&token),
        json!({"stage": "download", "current": 3}),
    )
    .await;
    let mut events = app.subscribe(&id).await;
    let cancel = {
        let (client, url) = (app.client.clone(), app.url(&format!("/v1/jobs/{id}/cancel")));
        tokio::spawn(async move { client.post(url).send().await.unwrap() })
    };
    app.wait_for_status(&id, "cancelling").await;
    assert!(!cancel.is_finished(), "cancel waits for the worker");
    let (status, answer) = call(&app, &id, "heartbeat", Some(&token), json!({"current": 4})).await;
    assert_eq!((status, answer), (StatusCode::OK, json!({"cancel_requested": true})));
    let response = tokio::time::timeout(Duration::from_secs(5), cancel)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    let cancelled: Value = response.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["error"]["code"], "cancelled");
    assert_eq!(cancelled["error"]["stage"], "download");
    let events = events.all().await;
    assert_well_formed(&events);
    assert_eq!(events.last().unwrap().data, cancelled);
    let (status, _) = call(&app, &id, "heartbeat", Some(&token), json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn a_cancel_the_worker_never_acknowledges_is_forced_after_the_grace_period() {
    let config = Config {
        cancel_grace: Duration::from_millis(300),
        ..test_config()
    };
    let app = spawn(config, "30s").await;
    let (job, token) = create_ingest(&app).await;
    let id = id_of(&job);
    call(&app, &id, "heartbeat", Some(&token), json!({})).await;
    let started = std::time::Instant::now();
    let (status, cancelled) = app.cancel(&id).await;
    assert_eq!(status, 200);
    assert_eq!(cancelled["error"]["code"], "cancel_forced");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "never much longer than the grace"
    );
    let (status, problem) = call(&app, &id, "complete", Some(&token), json!({"result": 1})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(problem["job"]["status"], "cancelled");
}

#[tokio::test]
async fn a_queued_external_job_is_cancelled_at_once() {
    let app = spawn(test_config(), "30s").await;
    let (job, token) = create_ingest(&app).await;
    let id = id_of(&job);
    let (status, cancelled) = app.cancel(&id).await;
    assert_eq!(status, 200);
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["started_at"], Value::Null);
    let (status, problem) = call(&app, &id, "heartbeat", Some(&token), json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "the worker learns the job is over");
    assert_eq!(problem["job"], cancelled);
    let (status, _) = call(&app, &id, "heartbeat", Some("jcw_wrong"), json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "an ended job still checks its token");
}

#[tokio::test]
async fn a_repeated_keyed_create_answers_the_worker_token_again() {
    let app = spawn(test_config(), "30s").await;
    let body = json!({"kind": "ingest", "params": {"url": "https://example.com/a.csv"}});
    let mut answers = Vec::new();
    for _ in 0..2 {
        let response = app
            .client
            .post(app.url("/v1/jobs"))
            .header("idempotency-key", "ingest-a")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        answers.push(response.json::<Value>().await.unwrap());
    }
    assert_eq!(answers[0]["id"], answers[1]["id"]);
    let token = answers[0]["worker_token"].as_str().expect("a worker token");
    assert_eq!(
        answers[1]["worker_token"], token,
        "a client that lost the first answer still gets the token"
    );
    let (status, _) = call(&app, &id_of(&answers[0]), "complete", Some(token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_retried_external_job_gets_a_new_worker_token_and_the_same_params() {
    let app = spawn(test_config(), "30s").await;
    let (job, token) = create_ingest(&app).await;
    let id = id_of(&job);
    let error = json!({"code": "upstream_down", "message": "try later", "retryable": true});
    let (status, _) = call(&app, &id, "fail", Some(&token), error).await;
    assert_eq!(status, StatusCode::OK);

    let response = app
        .client
        .post(app.url(&format!("/v1/jobs/{id}/retry")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let retry: Value = response.json().await.unwrap();
    assert_eq!(retry["retry_of"], id);
    assert_eq!(retry["params"], job["params"]);
    let new_token = retry["worker_token"].as_str().expect("a new worker token");
    assert_ne!(new_token, token);
    let new_id = id_of(&retry);
    let (status, _) = call(&app, &new_id, "heartbeat", Some(&token), json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the old token is not the new job's");
    let (status, done) = call(&app, &new_id, "complete", Some(new_token), json!({"result": 1})).await;
    assert_eq!((status, &done["status"]), (StatusCode::OK, &json!("completed")));
}

#[tokio::test]
async fn worker_calls_racing_or_after_the_jobs_removal_answer_404_or_409_never_500() {
    // With no finished job kept, a job is forgotten the moment it ends.
    let app = spawn(
        Config {
            max_finished: 0,
            ..test_config()
        },
        "30s",
    )
    .await;
    let (job, token) = create_ingest(&app).await;
    let id = id_of(&job);
    let (status, _) = call(&app, &id, "heartbeat", Some(&token), json!({"stage": "download"})).await;
    assert_eq!(status, StatusCode::OK);

    let racing = (0..10).map(|index| {
        let action = ["heartbeat", "complete", "fail"][index % 3];
        let body = match action {
            "fail" => json!({"code": "broke", "message": "it broke"}),
            _ => json!({}),
        };
        let (app, id, token) = (&app, &id, &token);
        async move { (action, call(app, id, action, Some(token), body).await.0) }
    });
    for (action, status) in futures_util::future::join_all(racing).await {
        assert!(
            [StatusCode::OK, StatusCode::NOT_FOUND, StatusCode::CONFLICT].contains(&status),
            "{action} racing the job's end and removal: {status}"
        );
    }
    app.eventually("the job is forgotten", || async {
        app.client
            .get(app.url(&format!("/v1/jobs/{id}")))
            .send()
            .await
            .unwrap()
            .status()
            == StatusCode::NOT_FOUND
    })
    .await;
    for (action, body) in [
        ("heartbeat", json!({})),
        ("complete", json!({"result": 1})),
        ("fail", json!({"code": "broke", "message": "it broke"})),
    ] {
        let (status, problem) = call(&app, &id, action, Some(&token), body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{action} after removal: {problem}");
    }
}

#[tokio::test]
async fn a_silent_worker_fails_its_job_with_heartbeat_timeout() {
    let app = spawn(test_config(), "200ms").await;
    let (job, token) = create_ingest(&app).await;
    let id = id_of(&job);
    let mut events = app.subscribe(&id).await;
    call(
        &app,
        &id,
        "heartbeat",
        Some(&token),
        json!({"stage": "download", "current": 1}),
    )
    .await;
    let events = events.all().await;
    assert_well_formed(&events);
    let failed = &events.last().unwrap().data;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["code"], "heartbeat_timeout");
    assert_eq!(failed["error"]["retryable"], true);
    assert_eq!(failed["error"]["stage"], "download");
}

#[tokio::test]
async fn heartbeats_keep_a_job_alive_past_the_heartbeat_timeout() {
    let app = spawn(test_config(), "300ms").await;
    let (job, token) = create_ingest(&app).await;
    let id = id_of(&job);
    let started = std::time::Instant::now();
    let mut beats = 0;
    while started.elapsed() < Duration::from_millis(900) {
        let (status, _) = call(&app, &id, "heartbeat", Some(&token), json!({"current": beats})).await;
        assert_eq!(status, StatusCode::OK);
        beats += 1;
        // Pacing, not synchronisation: the worker calls well within its timeout.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(beats > 3);
    assert_eq!(app.get_job(&id).await["status"], "running");
}

#[tokio::test]
async fn a_job_no_worker_takes_fails_with_start_timeout() {
    let file = kinds_file("30s", "200ms");
    let app = TestApp::spawn_with_kinds_file(test_config(), &file, std::path::Path::new(".")).await;
    let (job, _token) = create_ingest(&app).await;
    let failed = app.get_job_when_terminal(&id_of(&job)).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["code"], "start_timeout");
    assert_eq!(failed["started_at"], Value::Null);
}

#[tokio::test]
async fn external_kinds_are_listed_with_their_params_and_check_them() {
    let app = spawn(test_config(), "30s").await;
    let kinds: Value = app.get_json("/v1/kinds").await;
    let ingest = kinds["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|kind| kind["name"] == "ingest")
        .expect("ingest is listed");
    assert_eq!(ingest["description"], "Downloads and indexes a file, in a worker");
    assert_eq!(ingest["example"], json!({"url": "https://example.com/data.csv"}));
    assert_eq!(ingest["params_schema"]["required"], json!(["url"]));
    assert_eq!(ingest["params_schema"]["additionalProperties"], false);
    assert_eq!(
        ingest["params_schema"]["properties"]["priority"]["enum"],
        json!(["low", "high"])
    );
    assert_eq!(ingest["external"], true);

    let response = app
        .client
        .post(app.url("/v1/jobs"))
        .json(&json!({"kind": "ingest", "params": ingest["example"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "the example is valid");
    for params in [
        json!({}),
        json!({"url": "ftp://x"}),
        json!({"url": "https://x", "priority": "urgent"}),
        json!({"url": "https://x", "colour": "red"}),
        json!({"url": 7}),
    ] {
        let response = app
            .client
            .post(app.url("/v1/jobs"))
            .json(&json!({"kind": "ingest", "params": params}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422, "{params}");
    }
}

/// Cancel, complete and a heartbeat race, with varied timing: exactly one
/// outcome, told the same way by the cancel answer, the worker's answers
/// and the stream.
#[tokio::test]
async fn cancel_and_the_workers_completion_race_to_one_outcome() {
    let app = spawn(test_config(), "30s").await;
    for round in 0..40u64 {
        let (job, token) = create_ingest(&app).await;
        let id = id_of(&job);
        call(&app, &id, "heartbeat", Some(&token), json!({})).await;
        let mut events = app.subscribe(&id).await;
        let cancel = {
            let (client, url) = (app.client.clone(), app.url(&format!("/v1/jobs/{id}/cancel")));
            tokio::spawn(async move {
                let response = client.post(url).send().await.unwrap();
                (response.status(), response.json::<Value>().await.unwrap())
            })
        };
        tokio::time::sleep(Duration::from_micros(round * 150)).await;
        let (beat_status, beat) = if round % 3 == 0 {
            call(&app, &id, "heartbeat", Some(&token), json!({})).await
        } else {
            (StatusCode::OK, json!({"cancel_requested": false}))
        };
        let (complete_status, completed) = call(&app, &id, "complete", Some(&token), json!({"result": round})).await;
        let (cancel_status, cancel_body) = cancel.await.unwrap();
        let events = events.all().await;
        assert_well_formed(&events);
        let last = events.last().unwrap();
        assert_eq!(beat_status, StatusCode::OK);
        if cancel_status == StatusCode::OK {
            assert_eq!(last.event, "cancelled", "round {round}");
            assert_eq!(complete_status, StatusCode::CONFLICT, "round {round}");
            assert_eq!(completed["job"], cancel_body);
        } else {
            assert_eq!(cancel_status, StatusCode::CONFLICT, "round {round}: {cancel_body}");
            assert_eq!(beat["cancel_requested"], false, "round {round}");
            assert_eq!(last.event, "completed", "round {round}");
            assert_eq!(complete_status, StatusCode::OK);
            assert_eq!(cancel_body["job"], completed);
        }
        assert_eq!(last.data, app.get_job(&id).await);
    }
}

/// A worker's first call races a cancel of the still-queued job, with varied
/// timing: the job ends cancelled either way, the cancel answers 200, and
/// the worker learns it at the latest from its next call.
#[tokio::test]
async fn a_workers_first_call_and_a_cancel_of_the_queued_job_race_to_cancelled() {
    let app = spawn(test_config(), "30s").await;
    for round in 0..40u64 {
        let (job, token) = create_ingest(&app).await;
        let id = id_of(&job);
        let cancel = {
            let (client, url) = (app.client.clone(), app.url(&format!("/v1/jobs/{id}/cancel")));
            tokio::spawn(async move {
                let response = client.post(url).send().await.unwrap();
                (response.status(), response.json::<Value>().await.unwrap())
            })
        };
        tokio::time::sleep(Duration::from_micros(round * 100)).await;
        let (status, first) = call(&app, &id, "heartbeat", Some(&token), json!({"current": 1})).await;
        match status {
            // It started first: the cancel waits for this worker's next call.
            StatusCode::OK if first["cancel_requested"] == false => {
                let (status, next) = call(&app, &id, "heartbeat", Some(&token), json!({})).await;
                assert!(
                    (status == StatusCode::OK && next["cancel_requested"] == true) || status == StatusCode::CONFLICT,
                    "round {round}: {status} {next}"
                );
            }
            StatusCode::OK => assert_eq!(first["cancel_requested"], true, "round {round}"),
            status => assert_eq!(status, StatusCode::CONFLICT, "round {round}: {first}"),
        }
        let (cancel_status, cancelled) = cancel.await.unwrap();
        assert_eq!(cancel_status, StatusCode::OK, "round {round}: {cancelled}");
        assert_eq!(cancelled["status"], "cancelled");
        assert_eq!(cancelled["error"]["code"], "cancelled", "round {round}");
        let (status, _) = call(&app, &id, "heartbeat", Some(&token), json!({})).await;
        assert_eq!(status, StatusCode::CONFLICT, "round {round}");
    }
}
