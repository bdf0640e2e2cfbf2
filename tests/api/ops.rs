//! The endpoints for operators and tools: /healthz, /readyz, /metrics, and
//! /openapi.yaml, whose paths must be exactly the router's routes.

use std::collections::BTreeSet;
use std::sync::Arc;

use reqwest::header::CONTENT_TYPE;
use reqwest::Method;
use serde_json::json;
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
    ("/v1/jobs/{id}/retry", &["POST"]),
    ("/v1/jobs/{id}/heartbeat", &["POST"]),
    ("/v1/jobs/{id}/complete", &["POST"]),
    ("/v1/jobs/{id}/fail", &["POST"]),
    ("/v1/events", &["GET"]),
    ("/v1/kinds", &["GET"]),
    ("/v1/session", &["DELETE", "POST"]),
    ("/healthz", &["GET"]),
    ("/readyz", &["GET"]),
    ("/metrics", &["GET"]),
    ("/openapi.yaml", &["GET"]),
    ("/", &["GET"]),
    ("/ui/{file}", &["GET"]),
];

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
    let cancelled = id_of(&app.create_demo(long_wait()).await);
    app.wait_for_status(&cancelled, "running").await;
    assert_eq!(app.cancel(&cancelled).await.0, 200);
    let running = id_of(&app.create_job(&json!({ "kind": "gated" })).await);
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

/// A route's path with its parameters filled in: `job` for `{id}`, the
/// dashboard's style sheet for `{file}`.
fn concrete_path(path: &str, job: &str) -> String {
    path.replace("{id}", job).replace("{file}", "style.css")
}
