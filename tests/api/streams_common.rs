//! What both event streams, a job's and the all-jobs one, share (rules 4
//! and 7 of CONTRACT.md's event stream): keep-alive comments at the
//! configured interval, headers that keep proxies from buffering, no
//! compression, and 503 with Retry-After beyond the stream limit.

use std::time::{Duration, Instant};

use jobcast::Config;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, RETRY_AFTER};

use crate::cluster::skipped_when_balanced;
use crate::helpers::*;

#[tokio::test]
async fn streams_send_keep_alive_comments_at_the_configured_interval() {
    let app = TestApp::spawn_with(Config {
        keep_alive: Duration::from_millis(100),
        ..test_config()
    })
    .await;
    let id = live_job(&app).await;

    for path in [format!("/v1/jobs/{id}/events"), "/v1/events".to_owned()] {
        let opened = Instant::now();
        let mut stream = app.stream(&path, HeaderMap::new()).await;
        let mut arrivals = Vec::new();
        while arrivals.len() < 5 {
            let block = stream.next_block().await.expect("the stream stays open");
            if block.text.starts_with(':') {
                assert!(
                    block.is_keep_alive(),
                    "a comment is `: keep-alive`, not {:?}",
                    block.text
                );
                arrivals.push(opened.elapsed());
            } else {
                assert!(
                    block.text.starts_with("retry: ") || block.event() == "snapshot",
                    "an idle stream sends only comments: {:?}",
                    block.text
                );
            }
        }
        assert!(
            arrivals[0] >= Duration::from_millis(90),
            "{path}: the first comment waits for the interval, not {:?}",
            arrivals[0]
        );
        let mean_gap = (arrivals[4] - arrivals[0]) / 4;
        assert!(
            (Duration::from_millis(90)..=Duration::from_millis(500)).contains(&mean_gap),
            "{path}: comments come every 100 ms, not every {mean_gap:?}"
        );
    }
}

#[tokio::test]
async fn event_streams_carry_no_buffering_headers_and_are_never_compressed() {
    let app = TestApp::spawn().await;
    let id = live_job(&app).await;
    let mut headers = HeaderMap::new();
    headers.insert("accept-encoding", HeaderValue::from_static("gzip, br"));

    for path in [format!("/v1/jobs/{id}/events"), "/v1/events".to_owned()] {
        let response = app.open(&path, headers.clone()).await;
        assert_eq!(response.status(), 200);
        let headers = response.headers();
        assert_eq!(headers[CONTENT_TYPE], "text/event-stream", "{path}");
        assert_eq!(headers["cache-control"], "no-cache", "{path}");
        assert_eq!(headers["x-accel-buffering"], "no", "{path}");
        assert!(
            headers.get("content-encoding").is_none(),
            "{path} is not compressed: {headers:?}"
        );
        let mut stream = Sse::new(response);
        let first = stream.next_block().await.unwrap();
        assert!(
            first.text.starts_with("retry: "),
            "the body is plain text: {:?}",
            first.text
        );
    }
}

#[tokio::test]
async fn streams_beyond_the_limit_are_refused_with_503_and_retry_after() {
    if skipped_when_balanced("--max-streams counts each instance's own streams") {
        return;
    }
    let app = TestApp::spawn_with(Config {
        max_streams: 2,
        // Lets the server notice a closed stream quickly.
        keep_alive: Duration::from_millis(100),
        ..test_config()
    })
    .await;
    let id = live_job(&app).await;
    let job_path = format!("/v1/jobs/{id}/events");
    let first = app.stream(&job_path, HeaderMap::new()).await;
    let _second = app.stream("/v1/events", HeaderMap::new()).await;

    for path in [job_path.as_str(), "/v1/events"] {
        let response = app.open(path, HeaderMap::new()).await;
        assert_eq!(response.status(), 503, "{path}");
        let retry_after = response.headers().get(RETRY_AFTER).expect("a Retry-After header");
        let seconds: u64 = retry_after.to_str().unwrap().parse().expect("Retry-After in seconds");
        assert!(seconds >= 1, "{path}: Retry-After {seconds}");
        assert_problem(response, 503, path).await;
    }
    assert_eq!(app.get_job(&id).await["id"], id, "other requests still answer");

    drop(first);
    app.eventually("the closed stream gives its place back", || async {
        app.metric("jobcast_streams_open").await == 1.0
    })
    .await;
    let mut again = app.stream(&job_path, HeaderMap::new()).await;
    assert!(again.next_block().await.unwrap().text.starts_with("retry: "));
}
