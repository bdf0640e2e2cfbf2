//! POST /v1/jobs/{id}/retry: a failed or cancelled job runs again as a new
//! job with the same kind, params and labels, `retry_of` naming the old
//! one, which never changes; any other job is a 409 with the job.

use std::time::Duration;

use jobcast::Config;
use reqwest::header::LOCATION;
use serde_json::{json, Value};

use crate::helpers::*;

/// Retries `id`, asserting 202; returns the Location and the new job.
async fn retried(app: &TestApp, id: &str) -> (String, Value) {
    let response = app.retry(id).await;
    assert_eq!(response.status(), 202, "retrying {id}");
    let location = response.headers()[LOCATION].to_str().unwrap().to_owned();
    let job: Value = response.json().await.unwrap();
    assert_job_shape(&job);
    assert_eq!(location, format!("/v1/jobs/{}", id_of(&job)));
    (location, job)
}

#[tokio::test]
async fn a_failed_job_is_retried_as_a_new_job_with_the_same_kind_params_and_labels() {
    let app = TestApp::spawn().await;
    let params =
        json!({ "stages": [{ "name": "a", "steps": 2 }, { "name": "b", "steps": 2 }], "step_ms": 0, "fail_at": "b" });
    let labels = json!({ "project": "42" });
    let old = app.create_labelled(params.clone(), labels.clone()).await;
    let failed = app.get_job_when_terminal(&old).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["retry_of"], Value::Null, "a created job retries nothing");

    let (_, new) = retried(&app, &old).await;
    assert_ne!(new["id"], failed["id"]);
    assert_eq!(new["retry_of"], old);
    assert_eq!(new["kind"], "demo");
    assert_eq!(new["params"], params);
    assert_eq!(new["labels"], labels);
    assert_eq!(new["seq"], 1);
    let new_id = id_of(&new);
    let events = app.subscribe(&new_id).await.all().await;
    assert_well_formed(&events);
    let ended = &events.last().unwrap().data;
    assert_eq!(ended["status"], "failed", "the same params fail the same way");
    assert_eq!(ended["retry_of"], old, "retry_of is in every state");
    assert_eq!(app.get_job(&old).await, failed, "the old job never changes");

    // A retry of the retry names its own predecessor; the old job may be retried again.
    let (_, again) = retried(&app, &new_id).await;
    assert_eq!(again["retry_of"], new_id);
    let (_, twice) = retried(&app, &old).await;
    assert_eq!(twice["retry_of"], old);
    assert_ne!(twice["id"], new["id"]);
    let (ids, _) = list_page(&app, "label=project=42").await;
    assert_eq!(ids.len(), 4, "retries keep the labels: {ids:?}");
}

#[tokio::test]
async fn a_cancelled_job_is_retried_also_after_a_forced_cancel() {
    let app = TestApp::spawn_with(Config {
        cancel_grace: Duration::from_millis(200),
        ..test_config()
    })
    .await;
    let cancelled = id_of(&app.create_demo(long_wait()).await);
    assert_eq!(app.cancel(&cancelled).await.0, 200);
    let stubborn = live_job_with(&app, json!({ "step_ms": 60_000, "ignore_cancel": true })).await;
    let (status, forced) = app.cancel(&stubborn).await;
    assert_eq!((status, forced["error"]["code"].as_str()), (200, Some("cancel_forced")));
    for old in [cancelled, stubborn] {
        let before = app.get_job(&old).await;
        let (_, new) = retried(&app, &old).await;
        assert_eq!(new["retry_of"], old);
        assert_eq!(new["params"], before["params"]);
        assert_eq!(app.get_job(&old).await, before, "the old job never changes");
        assert_eq!(app.cancel(&id_of(&new)).await.0, 200);
    }
}

#[tokio::test]
async fn retrying_a_job_that_is_not_failed_or_cancelled_is_a_409_with_the_job() {
    let app = TestApp::spawn_with(Config {
        max_running: 1,
        cancel_grace: Duration::from_secs(2),
        ..test_config()
    })
    .await;
    let extra = app.take_extra_running_slots(1).await.len();
    let completed = id_of(&app.create_demo(demo(1, 0)).await);
    app.wait_for_status(&completed, "completed").await;
    let running = live_job_with(&app, json!({ "step_ms": 60_000, "ignore_cancel": true })).await;
    let queued = id_of(&app.create_demo(demo(1, 0)).await);
    assert_eq!(app.get_job(&queued).await["status"], "queued");
    let mut checked = Vec::new();
    for id in [&completed, &running, &queued] {
        let job = app.get_job(id).await;
        let problem = assert_problem(app.retry(id).await, 409, &format!("retrying a {} job", job["status"])).await;
        assert_eq!(problem["job"], job, "the problem holds the job");
        checked.push(job["status"].clone());
    }
    // A cancelling job, whose task ignores the cancel for a while.
    let cancel = {
        let (client, url) = (app.client.clone(), app.url(&format!("/v1/jobs/{running}/cancel")));
        tokio::spawn(async move { client.post(url).send().await.unwrap().status() })
    };
    let cancelling = app.wait_for_status(&running, "cancelling").await;
    let problem = assert_problem(app.retry(&running).await, 409, "retrying a cancelling job").await;
    assert_eq!(problem["job"]["status"], "cancelling");
    assert_eq!(problem["job"]["id"], cancelling["id"]);
    checked.push(cancelling["status"].clone());
    assert_eq!(checked, ["completed", "running", "queued", "cancelling"]);
    let (ids, _) = list_page(&app, "").await;
    assert_eq!(ids.len(), 3 + extra, "nothing was created");
    assert_eq!(cancel.await.unwrap(), 200);
}

#[tokio::test]
async fn retrying_an_unknown_job_is_a_404() {
    let app = TestApp::spawn().await;
    for id in [UNKNOWN_ID, "not-a-job"] {
        assert_problem(app.retry(id).await, 404, id).await;
    }
}

#[tokio::test]
async fn an_idempotency_key_makes_a_retry_idempotent() {
    let app = TestApp::spawn().await;
    let [first, second] =
        [app.create_demo(long_wait()).await, app.create_demo(long_wait()).await].map(|job| id_of(&job));
    for id in [&first, &second] {
        assert_eq!(app.cancel(id).await.0, 200);
    }
    let retry = |id: &str| {
        let request = app
            .client
            .post(app.url(&format!("/v1/jobs/{id}/retry")))
            .header("idempotency-key", "retry-1");
        send(request)
    };
    let one = retry(&first).await;
    assert_eq!(one.status(), 202);
    let location = one.headers()[LOCATION].clone();
    let again = retry(&first).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()[LOCATION], location, "the same new job");
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_problem(retry(&second).await, 422, "the key retried another job").await;
    let (ids, _) = list_page(&app, "").await;
    assert_eq!(ids.len(), 3, "one retry: {ids:?}");
}

/// A running demo job with the one stage `work` of 10 steps and `params`
/// besides, once it has declared its stages.
async fn live_job_with(app: &TestApp, params: Value) -> String {
    let mut all = json!({ "stages": [{ "name": "work", "weight": 1.0, "steps": 10 }] });
    all.as_object_mut().unwrap().extend(params.as_object().unwrap().clone());
    let id = id_of(&app.create_demo(all).await);
    wait_for_stages(app, &id).await;
    id
}
