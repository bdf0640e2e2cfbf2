//! GET /v1/jobs: newest first, the `status` and `kind` filters, paging with
//! `limit` and `cursor`, and malformed list parameters.

use std::sync::Arc;

use jobcast::Config;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::cluster::skipped_when_balanced;
use crate::helpers::*;

#[tokio::test]
async fn the_job_list_is_newest_first_and_filters_combine_with_and() {
    if skipped_when_balanced("lists every job of a service with exactly one running slot") {
        return;
    }
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
    let running = id_of(&app.create_job(&json!({ "kind": "gated" })).await);
    app.wait_for_status(&running, "running").await;
    let queued_demo = id_of(&app.create_demo(demo(1, 0)).await);
    let queued_gated = id_of(&app.create_job(&json!({ "kind": "gated" })).await);
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
        let params = if index % 2 == 0 { demo(0, 0) } else { long_wait() };
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
        "label=project",
        "label==42",
        "label=",
        "label=project=42&label=env",
    ] {
        let response = send(app.client.get(app.url(&format!("/v1/jobs?{query}")))).await;
        assert_problem(response, 400, &format!("GET /v1/jobs?{query}")).await;
    }
}

#[tokio::test]
async fn label_filters_must_all_match_and_combine_with_the_other_filters_and_paging() {
    let app = TestApp::spawn().await;
    let prod = app
        .create_labelled(demo(0, 0), json!({ "project": "42", "env": "prod" }))
        .await;
    let dev = app
        .create_labelled(long_wait(), json!({ "project": "42", "env": "dev" }))
        .await;
    let other = app.create_labelled(demo(0, 0), json!({ "project": "7" })).await;
    let plain = app.create_labelled(demo(0, 0), json!({ "project": "42" })).await;
    let unlabelled = id_of(&app.create_demo(demo(0, 0)).await);
    for id in [&prod, &other, &plain, &unlabelled] {
        app.wait_for_status(id, "completed").await;
    }
    app.wait_for_status(&dev, "running").await;

    let queries: &[(&str, Vec<&String>)] = &[
        ("label=project=42", vec![&plain, &dev, &prod]),
        ("label=project=42&label=env=prod", vec![&prod]),
        ("label=env=prod&label=project=42", vec![&prod]),
        ("label=project=42&label=project=7", vec![]),
        ("label=project=42&status=running", vec![&dev]),
        ("label=project=42&status=completed", vec![&plain, &prod]),
        ("label=project=42&kind=demo", vec![&plain, &dev, &prod]),
        ("label=project=42&kind=nope", vec![]),
        ("label=project=4", vec![]),
        ("label=env=", vec![]),
        ("label=team=42", vec![]),
        ("label=Not%20a%20key=42", vec![]),
        ("label=project%3D42", vec![&plain, &dev, &prod]),
    ];
    for (query, expected) in queries {
        let (ids, _) = list_page(&app, query).await;
        let expected: Vec<String> = expected.iter().map(|id| id.to_string()).collect();
        assert_eq!(ids, expected, "GET /v1/jobs?{query}");
    }
    let walked: Vec<String> = walk(&app, "label=project=42&limit=1").await.concat();
    assert_eq!(walked, [plain, dev, prod], "paging keeps the label filter");
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
