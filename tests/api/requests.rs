//! The request side of the contract: the job resource and its endpoints
//! (create, list, long poll, kinds, operations, the OpenAPI document), and
//! every error row of CONTRACT.md, alone and fired all at once beside a job
//! that must not notice.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::{join_all, BoxFuture};
use futures_util::FutureExt;
use jobcast::{Config, JobContext, JobError, Kind, StageSpec};
use reqwest::header::{HeaderMap, HeaderValue, ALLOW, CONTENT_TYPE, LOCATION};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::helpers::*;

/// The openapi.yaml of the repository, as the server must serve it.
const OPENAPI_YAML: &str = include_str!("../../openapi.yaml");

/// The router's routes and methods, as written in src/http/mod.rs.
const ROUTES: &[(&str, &[&str])] = &[
    ("/v1/jobs", &["GET", "POST"]),
    ("/v1/jobs/{id}", &["GET"]),
    ("/v1/jobs/{id}/events", &["GET"]),
    ("/v1/jobs/{id}/cancel", &["POST"]),
    ("/v1/jobs/{id}/heartbeat", &["POST"]),
    ("/v1/jobs/{id}/complete", &["POST"]),
    ("/v1/jobs/{id}/fail", &["POST"]),
    ("/v1/events", &["GET"]),
    ("/v1/kinds", &["GET"]),
    ("/healthz", &["GET"]),
    ("/readyz", &["GET"]),
    ("/metrics", &["GET"]),
    ("/openapi.yaml", &["GET"]),
    ("/", &["GET"]),
    ("/ui/{file}", &["GET"]),
];

/// Every field of the job resource in CONTRACT.md.
const JOB_FIELDS: &[&str] = &[
    "id",
    "kind",
    "status",
    "seq",
    "progress",
    "stage",
    "stages",
    "message",
    "rate",
    "eta_seconds",
    "params",
    "result",
    "error",
    "created_at",
    "started_at",
    "updated_at",
    "finished_at",
];

/// A well-formed job id that names no job.
const UNKNOWN_ID: &str = "0193a8f2-6c1e-7c3a-9d2b-5f0e4a1b2c3d";

// ---------------------------------------------------------------------------
// The job resource and its endpoints
// ---------------------------------------------------------------------------

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
async fn started_at_is_null_while_queued_and_finished_at_is_set_iff_terminal() {
    let app = TestApp::spawn_with(Config {
        max_running: 1,
        ..test_config()
    })
    .await;
    // Holds the only running slot until it is cancelled.
    let blocker = app
        .create_demo(json!({ "stages": [{ "name": "work", "steps": 1 }], "delay_ms": 60_000 }))
        .await;
    let blocker_id = blocker["id"].as_str().unwrap();
    app.eventually("the blocker to run", || async {
        app.get_job(blocker_id).await["status"] == "running"
    })
    .await;
    let running = app.get_job(blocker_id).await;
    assert_job_shape(&running);
    assert_eq!(running["finished_at"], Value::Null, "a running job has no finished_at");
    assert!(is_contract_time(running["started_at"].as_str().unwrap()));

    let waiting = app.create_demo(demo(1, 0)).await;
    let waiting_id = waiting["id"].as_str().unwrap();
    let queued = app.get_job(waiting_id).await;
    assert_eq!(queued["status"], "queued");
    assert_eq!(queued["started_at"], Value::Null, "started_at is null while queued");
    assert_eq!(queued["finished_at"], Value::Null);

    // Cancelled while queued: terminal, never started.
    let (status, cancelled) = app.cancel(waiting_id).await;
    assert_eq!(status, 200);
    assert_job_shape(&cancelled);
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["started_at"], Value::Null);
    assert!(is_contract_time(cancelled["finished_at"].as_str().unwrap()));

    // Cancelled while running: terminal, started.
    let (status, cancelled) = app.cancel(blocker_id).await;
    assert_eq!(status, 200);
    assert_job_shape(&cancelled);
    assert_eq!(cancelled["status"], "cancelled");
    assert!(is_contract_time(cancelled["started_at"].as_str().unwrap()));
    assert!(is_contract_time(cancelled["finished_at"].as_str().unwrap()));

    // Every state a subscriber sees, through completion and through failure.
    for params in [
        json!({ "stages": [{ "name": "a", "steps": 4 }, { "name": "b", "steps": 4 }], "step_ms": 2, "delay_ms": 50 }),
        json!({ "stages": [{ "name": "a", "steps": 4 }, { "name": "b", "steps": 4 }], "step_ms": 2, "delay_ms": 50, "fail_at": "b" }),
    ] {
        let job = app.create_demo(params).await;
        let events = app.subscribe(job["id"].as_str().unwrap()).await.all().await;
        assert_well_formed(&events);
        for event in &events {
            assert_job_shape(&event.data);
            let terminal = event.is_terminal();
            assert_eq!(
                !event.data["finished_at"].is_null(),
                terminal,
                "finished_at is set iff terminal: {}",
                event.data
            );
            assert_eq!(
                event.data["started_at"].is_null(),
                event.data["status"] == "queued",
                "started_at is null iff queued: {}",
                event.data
            );
        }
        let last = &events.last().unwrap().data;
        assert!(last["status"] == "completed" || last["status"] == "failed");
    }
}

#[tokio::test]
async fn params_omitted_or_null_mean_an_empty_object() {
    let app = TestApp::spawn().await;
    for body in [json!({ "kind": "demo" }), json!({ "kind": "demo", "params": null })] {
        let job = create_job(&app, &body).await;
        assert_eq!(job["params"], json!({}), "params of {body}");
        let id = job["id"].as_str().unwrap();
        assert_eq!(app.get_job(id).await["params"], json!({}));
        let (status, _) = app.cancel(id).await;
        assert_eq!(status, 200);
    }
}

#[tokio::test]
async fn the_job_list_is_newest_first_and_filters_combine_with_and() {
    let gate = Arc::new(Semaphore::new(0));
    let app = TestApp::spawn_with_kinds(
        Config {
            max_running: 1,
            ..test_config()
        },
        vec![gated_kind("gated", gate)],
    )
    .await;
    let completed = app.create_demo(demo(1, 0)).await;
    let completed = id_of(&completed);
    let events = app.subscribe(&completed).await.all().await;
    assert_eq!(events.last().unwrap().event, "completed");
    let running = id_of(&create_job(&app, &json!({ "kind": "gated" })).await);
    app.eventually("the gated job to run", || async {
        app.get_job(&running).await["status"] == "running"
    })
    .await;
    let queued_demo = id_of(&app.create_demo(demo(1, 0)).await);
    let queued_gated = id_of(&create_job(&app, &json!({ "kind": "gated" })).await);
    let cancelled = id_of(&app.create_demo(demo(1, 0)).await);
    assert_eq!(app.cancel(&cancelled).await.0, 200);
    assert_eq!(app.get_job(&queued_demo).await["status"], "queued");
    assert_eq!(app.get_job(&queued_gated).await["status"], "queued");

    let all = [&cancelled, &queued_gated, &queued_demo, &running, &completed];
    let queries: &[(&str, Vec<&String>)] = &[
        ("", all.to_vec()),
        ("status=queued", vec![&queued_gated, &queued_demo]),
        (
            "status=queued&status=running",
            vec![&queued_gated, &queued_demo, &running],
        ),
        ("status=completed&status=cancelled", vec![&cancelled, &completed]),
        ("status=failed", vec![]),
        ("kind=gated", vec![&queued_gated, &running]),
        ("kind=demo&kind=gated", all.to_vec()),
        ("kind=demo&status=queued", vec![&queued_demo]),
        ("status=queued&kind=gated&status=completed", vec![&queued_gated]),
        ("kind=gated&status=completed", vec![]),
        ("kind=nope", vec![]),
        ("kind=nope&status=queued", vec![]),
        ("limit=5", all.to_vec()),
        ("limit=1000", all.to_vec()),
    ];
    for (query, expected) in queries {
        let (ids, next_cursor) = list_page(&app, query).await;
        let expected: Vec<String> = expected.iter().map(|id| id.to_string()).collect();
        assert_eq!(ids, expected, "GET /v1/jobs?{query}");
        assert_eq!(next_cursor, Value::Null, "one page for ?{query}");
    }
}

#[tokio::test]
async fn paging_with_limit_and_cursor_walks_every_job_exactly_once() {
    let app = TestApp::spawn_with(Config {
        max_running: 2,
        ..test_config()
    })
    .await;
    let mut created = Vec::new();
    for index in 0..7 {
        // Some complete at once, the rest stay running or queued.
        let params = if index % 2 == 0 {
            demo(0, 0)
        } else {
            json!({ "stages": [{ "name": "work", "steps": 1 }], "delay_ms": 60_000 })
        };
        created.push(id_of(&app.create_demo(params).await));
    }
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();
    for limit in 1..=8 {
        let pages = walk(&app, &format!("limit={limit}")).await;
        assert_eq!(pages.len(), 7usize.div_ceil(limit).max(1), "pages of {limit}");
        assert!(pages.iter().all(|page| page.len() <= limit));
        let walked: Vec<String> = pages.concat();
        assert_eq!(walked, newest_first, "limit={limit} walks every job once, newest first");
    }
    // Paging keeps the filters.
    let statuses = "status=queued&status=running&status=cancelled";
    let filtered: Vec<String> = list_page(&app, &format!("{statuses}&limit=1000")).await.0;
    let walked: Vec<String> = walk(&app, &format!("{statuses}&limit=2")).await.concat();
    assert_eq!(walked, filtered);
    assert_eq!(walk(&app, "kind=nope&limit=2").await, vec![Vec::<String>::new()]);
}

#[tokio::test]
async fn malformed_list_parameters_are_400_problems() {
    let app = TestApp::spawn().await;
    app.create_demo(demo(0, 0)).await;
    for query in [
        "limit=0",
        "limit=1001",
        "limit=abc",
        "limit=-1",
        "limit=1.5",
        "cursor=abc",
        "cursor=123",
        "limit=1&cursor=not-a-cursor",
        "status=bogus",
        "status=queued&status=bogus",
    ] {
        let response = send(app.client.get(app.url(&format!("/v1/jobs?{query}")))).await;
        assert_problem(response, 400, &format!("GET /v1/jobs?{query}")).await;
    }
}

#[tokio::test]
async fn a_long_poll_answers_within_50ms_of_the_change_it_waits_for() {
    let gate = Arc::new(Semaphore::new(0));
    let app = TestApp::spawn_with_kinds(test_config(), vec![gated_kind("gated", gate.clone())]).await;
    let id = id_of(&create_job(&app, &json!({ "kind": "gated" })).await);
    let mut seq = wait_for_stage(&app, &id, "s0").await;
    for round in 0..6u64 {
        // Even rounds name after_seq; odd ones rely on its default, the current seq.
        let path = if round % 2 == 0 {
            format!("/v1/jobs/{id}?wait_seconds=5&after_seq={seq}")
        } else {
            format!("/v1/jobs/{id}?wait_seconds=5")
        };
        let started = Instant::now();
        let poll = tokio::spawn(send(app.client.get(app.url(&path))));
        // Pacing only: the poll answers correctly whether or not it is parked yet.
        let pace = Duration::from_millis(80 + (round * 37) % 120);
        tokio::time::sleep(pace).await;
        let changed = Instant::now();
        gate.add_permits(1);
        let response = poll.await.unwrap();
        assert_eq!(response.status(), 200);
        let job: Value = response.json().await.unwrap();
        let arrived = Instant::now();
        let arrived_wall = chrono::Utc::now();
        assert_eq!(job["seq"], seq + 1, "the poll answers the first change after {seq}");
        assert_eq!(job["stage"]["name"], format!("s{}", round + 1));
        assert!(arrived - started >= pace, "the poll waited for the change");
        assert!(
            arrived - changed < Duration::from_millis(50),
            "the poll answered {:?} after the change",
            arrived - changed
        );
        let updated = chrono::DateTime::parse_from_rfc3339(job["updated_at"].as_str().unwrap()).unwrap();
        let lag = arrived_wall.signed_duration_since(updated);
        assert!(
            lag < chrono::TimeDelta::milliseconds(50) && lag > chrono::TimeDelta::milliseconds(-5),
            "the poll answered {lag} after the job's updated_at"
        );
        seq += 1;
    }
}

#[tokio::test]
async fn a_long_poll_answers_at_once_when_the_seq_already_exceeds_after_seq() {
    let gate = Arc::new(Semaphore::new(0));
    let app = TestApp::spawn_with_kinds(test_config(), vec![gated_kind("gated", gate)]).await;
    let id = id_of(&create_job(&app, &json!({ "kind": "gated" })).await);
    let seq = wait_for_stage(&app, &id, "s0").await;
    for query in [
        format!("wait_seconds=5&after_seq={}", seq - 1),
        "wait_seconds=5&after_seq=0".to_owned(),
        // Above 60 counts as 60; the job is already past after_seq either way.
        format!("wait_seconds=1000&after_seq={}", seq - 1),
        // No wait at all.
        format!("after_seq={seq}"),
        String::new(),
    ] {
        let started = Instant::now();
        let response = send(app.client.get(app.url(&format!("/v1/jobs/{id}?{query}")))).await;
        assert_eq!(response.status(), 200, "?{query}");
        let job: Value = response.json().await.unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "?{query} answered at once, not after {:?}",
            started.elapsed()
        );
        assert_eq!(job["seq"], seq, "?{query} answers the job as it is");
    }
}

#[tokio::test]
async fn a_long_poll_without_a_change_answers_after_wait_seconds_with_the_job_as_is() {
    let gate = Arc::new(Semaphore::new(0));
    let app = TestApp::spawn_with_kinds(test_config(), vec![gated_kind("gated", gate)]).await;
    let id = id_of(&create_job(&app, &json!({ "kind": "gated" })).await);
    let seq = wait_for_stage(&app, &id, "s0").await;
    let before = app.get_job(&id).await;
    for query in [format!("wait_seconds=1&after_seq={seq}"), "wait_seconds=1".to_owned()] {
        let started = Instant::now();
        let response = send(app.client.get(app.url(&format!("/v1/jobs/{id}?{query}")))).await;
        assert_eq!(response.status(), 200);
        let job: Value = response.json().await.unwrap();
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(990) && waited < Duration::from_millis(1800),
            "?{query} answered after {waited:?}, not about a second"
        );
        assert_eq!(job, before, "?{query} answers the job as it is");
    }
}

#[tokio::test]
async fn malformed_long_poll_parameters_are_400_problems() {
    let app = TestApp::spawn().await;
    let id = id_of(&app.create_demo(demo(0, 0)).await);
    for query in [
        "wait_seconds=abc",
        "wait_seconds=-1",
        "wait_seconds=1.5",
        "wait_seconds=",
        "after_seq=x",
        "after_seq=-1",
        "wait_seconds=1&after_seq=1.5",
    ] {
        let started = Instant::now();
        let response = send(app.client.get(app.url(&format!("/v1/jobs/{id}?{query}")))).await;
        assert_problem(response, 400, &format!("GET /v1/jobs/{{id}}?{query}")).await;
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "?{query} is refused at once"
        );
    }
}

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

    let job = create_job(&app, &json!({ "kind": "demo", "params": example })).await;
    assert_eq!(&job["params"], example);
    let (status, cancelled) = app.cancel(job["id"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(cancelled["status"], "cancelled");
}

#[tokio::test]
async fn health_readiness_and_metrics_answer_with_the_documented_metrics() {
    let gate = Arc::new(Semaphore::new(0));
    let app = TestApp::spawn_with_kinds(test_config(), vec![gated_kind("gated", gate)]).await;
    assert_eq!(send(app.client.get(app.url("/healthz"))).await.status(), 200);
    assert_eq!(send(app.client.get(app.url("/readyz"))).await.status(), 200);

    // One completed with a subscriber, one cancelled while running, one
    // running with a stream open.
    let completed = id_of(&app.create_demo(demo(3, 0)).await);
    let seen = app.subscribe(&completed).await.all().await.len();
    let cancelled = id_of(
        &app.create_demo(json!({ "stages": [{ "name": "work" }], "delay_ms": 60_000 }))
            .await,
    );
    app.eventually("the job to run", || async {
        app.get_job(&cancelled).await["status"] == "running"
    })
    .await;
    assert_eq!(app.cancel(&cancelled).await.0, 200);
    let running = id_of(&create_job(&app, &json!({ "kind": "gated" })).await);
    let mut stream = app.subscribe(&running).await;
    stream.next().await.expect("a snapshot");
    app.eventually("one stream open", || async {
        app.metric("jobcast_streams_open").await == 1.0
    })
    .await;
    app.eventually("one job running", || async {
        app.metric("jobcast_jobs_running").await == 1.0
    })
    .await;

    let response = send(app.client.get(app.url("/metrics"))).await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()[CONTENT_TYPE].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("text/plain") || content_type.starts_with("application/openmetrics-text"),
        "Prometheus text, not {content_type}"
    );
    let text = response.text().await.unwrap();
    for line in text.lines().filter(|line| !line.starts_with('#') && !line.is_empty()) {
        assert!(
            line.starts_with("jobcast_") || line.starts_with("process_"),
            "only jobcast_ and process_ metrics: {line}"
        );
    }
    for (status, count) in [
        ("queued", 0.0),
        ("running", 1.0),
        ("cancelling", 0.0),
        ("completed", 1.0),
        ("failed", 0.0),
        ("cancelled", 1.0),
    ] {
        assert_eq!(
            app.metric(&format!("jobcast_jobs{{status=\"{status}\"}}")).await,
            count,
            "jobs {status}"
        );
    }
    assert_eq!(app.metric("jobcast_jobs_running").await, 1.0);
    assert_eq!(app.metric("jobcast_jobs_queued").await, 0.0);
    assert_eq!(app.metric("jobcast_streams_open").await, 1.0);
    assert!(app.metric("jobcast_events_published_total").await >= 6.0);
    assert!(app.metric("jobcast_events_sent_total").await >= (seen + 1) as f64);
    assert_eq!(app.metric("jobcast_lag_resyncs_total").await, 0.0);
    assert_eq!(app.metric("jobcast_cancel_latency_seconds_count").await, 1.0);
    assert!(
        text.lines()
            .any(|line| line.starts_with("jobcast_cancel_latency_seconds_bucket{le=")),
        "the cancel latency is a histogram"
    );
}

#[tokio::test]
async fn the_server_serves_the_repository_openapi_yaml_byte_for_byte() {
    let app = TestApp::spawn().await;
    let response = send(app.client.get(app.url("/openapi.yaml"))).await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()[CONTENT_TYPE].to_str().unwrap().to_owned();
    assert!(content_type.contains("yaml"), "a YAML media type, not {content_type}");
    let body = response.bytes().await.unwrap();
    assert!(
        body == OPENAPI_YAML.as_bytes(),
        "/openapi.yaml is the repository's openapi.yaml"
    );
}

#[tokio::test]
async fn the_spec_paths_and_the_router_routes_are_the_same() {
    let spec = spec_operations();
    let routes: BTreeSet<(String, String)> = ROUTES
        .iter()
        .flat_map(|(path, methods)| methods.iter().map(|method| (path.to_string(), method.to_string())))
        .collect();
    let missing_from_spec: Vec<_> = routes.difference(&spec).collect();
    let missing_from_router: Vec<_> = spec.difference(&routes).collect();
    assert!(
        missing_from_spec.is_empty(),
        "routes the spec lacks: {missing_from_spec:?}"
    );
    assert!(
        missing_from_router.is_empty(),
        "documented operations the router lacks: {missing_from_router:?}"
    );

    // The server answers every documented operation...
    let app = TestApp::spawn().await;
    let job = id_of(&app.create_demo(demo(1, 0)).await);
    for (path, method) in &spec {
        let url = app.url(&concrete_path(path, &job));
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = app.client.request(method.clone(), url);
        if method == Method::POST && path == "/v1/jobs" {
            request = request.json(&json!({ "kind": "demo", "params": demo(1, 0) }));
        }
        let response = send(request).await;
        let status = response.status().as_u16();
        assert!(
            status != 404 && status != 405 && status < 500,
            "{method} {path} is served, not {status}"
        );
    }
    // ...and the router's table is the server's: every other method is a 405
    // whose Allow lists exactly the route's methods.
    for (path, methods) in ROUTES {
        let url = app.url(&concrete_path(path, &job));
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            if methods.contains(&method) {
                continue;
            }
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let response = send(app.client.request(method.clone(), &url)).await;
            let allow = allowed_methods(&response);
            assert_problem(response, 405, &format!("{method} {path}")).await;
            let expected: BTreeSet<String> = methods.iter().map(|method| method.to_string()).collect();
            assert_eq!(allow, expected, "Allow of {method} {path}");
        }
    }
}

// ---------------------------------------------------------------------------
// Bad input: every error row of CONTRACT.md
// ---------------------------------------------------------------------------

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
    let job = create_job(&app, &json!({ "kind": "demo", "params": demo(1, 0) })).await;
    assert_well_formed(&app.subscribe(job["id"].as_str().unwrap()).await.all().await);

    // The default limit, 1 MiB.
    let app = TestApp::spawn().await;
    check_cases(&app, UNKNOWN_ID, 413).await;
    let response = send(json_post(&app, create_body_of_len(1024 * 1024))).await;
    assert_eq!(response.status(), 202, "a body of exactly 1 MiB is accepted");
    let job = create_job(&app, &json!({ "kind": "demo", "params": demo(1, 0) })).await;
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
async fn a_malformed_last_event_id_counts_as_absent_and_the_stream_starts_from_the_snapshot() {
    let gate = Arc::new(Semaphore::new(0));
    let app = TestApp::spawn_with_kinds(test_config(), vec![gated_kind("gated", gate)]).await;
    let running = id_of(&create_job(&app, &json!({ "kind": "gated" })).await);
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

// ---------------------------------------------------------------------------
// The bad requests, as a table
// ---------------------------------------------------------------------------

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
    // 404: unknown and malformed job ids, for the job, its events and its cancel.
    for id in [UNKNOWN_ID, "not-a-uuid", "123"] {
        cases.push(Case::new(Method::GET, format!("/v1/jobs/{id}"), 404));
        cases.push(Case::new(Method::GET, format!("/v1/jobs/{id}/events"), 404));
        cases.push(Case::new(Method::POST, format!("/v1/jobs/{id}/cancel"), 404));
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

/// Last-Event-ID values that are no position at all.
fn garbage_last_event_ids() -> Vec<HeaderValue> {
    [&b"abc"[..], b"\xff\xfe", b"-1", b"1.5", b"", b"99999999999999999999999"]
        .into_iter()
        .map(|value| HeaderValue::from_bytes(value).unwrap())
        .collect()
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Sends a request; a server that does not answer in WAIT fails the test.
async fn send(request: reqwest::RequestBuilder) -> reqwest::Response {
    tokio::time::timeout(WAIT, request.send())
        .await
        .expect("the server answers in time")
        .expect("the server answers")
}

/// Checks an RFC 9457 problem answer of `status` and returns its body.
async fn assert_problem(response: reqwest::Response, status: u16, what: &str) -> Value {
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .map(|value| value.to_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    let actual = response.status().as_u16();
    let text = tokio::time::timeout(WAIT, response.text())
        .await
        .expect("the problem body arrives in time")
        .expect("a readable problem body");
    assert_eq!(actual, status, "{what}: {text}");
    assert!(
        content_type.starts_with("application/problem+json"),
        "{what}: a problem+json answer, not {content_type:?}"
    );
    let problem: Value = serde_json::from_str(&text).expect("problem+json is JSON");
    assert!(
        problem["type"].as_str().is_some_and(|value| !value.is_empty()),
        "{what}: type in {problem}"
    );
    assert!(
        problem["title"].as_str().is_some_and(|value| !value.is_empty()),
        "{what}: title in {problem}"
    );
    assert_eq!(problem["status"], status, "{what}: status in {problem}");
    assert!(
        problem["detail"].as_str().is_some_and(|value| !value.is_empty()),
        "{what}: detail in {problem}"
    );
    problem
}

/// The methods an `Allow` header lists, HEAD aside.
fn allowed_methods(response: &reqwest::Response) -> BTreeSet<String> {
    response
        .headers()
        .get_all(ALLOW)
        .iter()
        .flat_map(|value| value.to_str().unwrap().split(','))
        .map(|method| method.trim().to_ascii_uppercase())
        .filter(|method| !method.is_empty() && method != "HEAD")
        .collect()
}

/// POST /v1/jobs with `body`, asserting 202; returns the job.
async fn create_job(app: &TestApp, body: &Value) -> Value {
    let response = send(app.client.post(app.url("/v1/jobs")).json(body)).await;
    assert_eq!(response.status(), 202, "creating {body}");
    response.json().await.unwrap()
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

/// One page of GET /v1/jobs?query: the ids and next_cursor.
async fn list_page(app: &TestApp, query: &str) -> (Vec<String>, Value) {
    let response = send(app.client.get(app.url(&format!("/v1/jobs?{query}")))).await;
    assert_eq!(response.status(), 200, "GET /v1/jobs?{query}");
    let body: Value = response.json().await.unwrap();
    let object = body.as_object().expect("an object");
    assert_eq!(object.len(), 2, "jobs and next_cursor only: {body}");
    let jobs = body["jobs"].as_array().expect("a jobs array");
    for job in jobs {
        assert_job_shape(job);
    }
    let ids = jobs.iter().map(id_of).collect();
    assert!(body["next_cursor"].is_null() || body["next_cursor"].is_string());
    (ids, body["next_cursor"].clone())
}

/// Every page of GET /v1/jobs?query, following next_cursor to the end.
async fn walk(app: &TestApp, query: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page_query = match &cursor {
            Some(cursor) => format!("{query}&cursor={cursor}"),
            None => query.to_owned(),
        };
        let (ids, next) = list_page(app, &page_query).await;
        pages.push(ids);
        assert!(pages.len() <= 100, "paging ends");
        match next {
            Value::Null => return pages,
            next => cursor = Some(next.as_str().unwrap().to_owned()),
        }
    }
}

/// Checks that the server holds no job besides `ids`.
async fn assert_no_job_but(app: &TestApp, ids: &[&String]) {
    let (listed, _) = list_page(app, "limit=1000").await;
    let expected: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    assert_eq!(listed, expected, "no bad request created a job");
}

/// Checks that `job` has every field of the resource, well typed.
fn assert_job_shape(job: &Value) {
    let object = job.as_object().unwrap_or_else(|| panic!("a job object: {job}"));
    for field in JOB_FIELDS {
        assert!(object.contains_key(*field), "the job has {field}: {job}");
    }
    assert!(is_lowercase_uuid_v7(job["id"].as_str().unwrap()));
    assert!(job["kind"].is_string());
    assert!(job["seq"].as_u64().is_some_and(|seq| seq >= 1));
    assert!(job["progress"].is_number());
    assert!(job["stages"].is_array());
    assert!(job["params"].is_object());
    for field in ["created_at", "updated_at"] {
        let time = job[field].as_str().unwrap_or_else(|| panic!("{field} is set: {job}"));
        assert!(is_contract_time(time), "{field} is {time}");
    }
    for field in ["started_at", "finished_at"] {
        if let Some(time) = job[field].as_str() {
            assert!(is_contract_time(time), "{field} is {time}");
        } else {
            assert!(job[field].is_null(), "{field} is a time or null: {job}");
        }
    }
}

/// `^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$`
fn is_contract_time(time: &str) -> bool {
    const TEMPLATE: &[u8] = b"0000-00-00T00:00:00.000000Z";
    time.len() == TEMPLATE.len()
        && time.bytes().zip(TEMPLATE).all(|(byte, &expected)| match expected {
            b'0' => byte.is_ascii_digit(),
            _ => byte == expected,
        })
}

/// A hyphenated lowercase UUID with version 7 and the RFC 9562 variant.
fn is_lowercase_uuid_v7(id: &str) -> bool {
    let bytes = id.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(index, &byte)| match index {
            8 | 13 | 18 | 23 => byte == b'-',
            _ => byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte),
        })
        && bytes[14] == b'7'
        && matches!(bytes[19], b'8' | b'9' | b'a' | b'b')
}

/// A route's path with its parameters filled in: `job` for `{id}`, the
/// dashboard's style sheet for `{file}`.
fn concrete_path(path: &str, job: &str) -> String {
    path.replace("{id}", job).replace("{file}", "style.css")
}

/// Every (path, METHOD) of the spec's `paths`, by a line scan.
fn spec_operations() -> BTreeSet<(String, String)> {
    const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch", "trace"];
    let mut operations = BTreeSet::new();
    let mut in_paths = false;
    let mut path: Option<String> = None;
    for line in OPENAPI_YAML.lines() {
        if line == "paths:" {
            in_paths = true;
            continue;
        }
        if !in_paths {
            continue;
        }
        if !line.is_empty() && !line.starts_with(' ') {
            break;
        }
        if let Some(rest) = line.strip_prefix("  /") {
            path = Some(format!("/{}", rest.trim_end().trim_end_matches(':')));
        } else if let Some(rest) = line.strip_prefix("    ") {
            let key = rest.trim_end().trim_end_matches(':');
            if !rest.starts_with(' ') && rest.trim_end().ends_with(':') && METHODS.contains(&key) {
                let path = path.clone().expect("a method under a path");
                operations.insert((path, key.to_ascii_uppercase()));
            }
        }
    }
    assert!(!operations.is_empty(), "the spec has paths");
    operations
}

const GATED_STAGES: usize = 20;

/// A kind whose job starts stage `s0`, then starts the next stage each time
/// the test adds a permit to `gate`, and otherwise waits (until cancelled).
fn gated_kind(name: &str, gate: Arc<Semaphore>) -> Kind {
    Kind::new(name, move |ctx: JobContext, _params: Value| {
        let gate = gate.clone();
        async move {
            ctx.declare_stages((0..GATED_STAGES).map(|index| StageSpec::new(format!("s{index}"), 1.0)))?;
            ctx.start_stage("s0", None, None)?;
            for index in 1..GATED_STAGES {
                tokio::select! {
                    permit = gate.acquire() => permit.expect("the gate stays open").forget(),
                    _ = ctx.cancelled() => return Err(JobError::cancelled()),
                }
                ctx.start_stage(&format!("s{index}"), None, None)?;
            }
            ctx.cancelled().await;
            Err(JobError::cancelled())
        }
    })
}

/// Waits until the gated job `id` runs stage `stage`; returns its seq.
async fn wait_for_stage(app: &TestApp, id: &str, stage: &str) -> u64 {
    app.eventually(&format!("stage {stage}"), || async {
        app.get_job(id).await["stage"]["name"] == stage
    })
    .await;
    app.get_job(id).await["seq"].as_u64().unwrap()
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
