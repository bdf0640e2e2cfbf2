//! The transport: HTTPS with HTTP/2 and HTTP/1.1 chosen by ALPN, HTTP/2
//! with prior knowledge on a plain listener, a certificate the server
//! cannot use stopping it at start with one line, HTTP/2's announced
//! limits, and the stream limit and shutdown over one HTTP/2 connection.
//! (CI also runs the whole suite over HTTP/2: see `Protocol::of_suite`.)

use std::collections::HashMap;

use jobcast::Config;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cluster::skipped_when_balanced;
use crate::helpers::*;

/// A demo job's stream, read to its end over `app`'s protocol, is whole.
async fn assert_a_stream_runs_to_its_end(app: &TestApp) {
    let id = id_of(&app.create_demo(demo(5, 1)).await);
    let response = app.open(&format!("/v1/jobs/{id}/events"), HeaderMap::new()).await;
    assert_eq!(response.version(), app.protocol.version());
    assert_eq!(response.status(), 200);
    let events = Sse::new(response).all().await;
    assert_well_formed(&events);
    assert_eq!(events.last().unwrap().event, "completed");
}

#[tokio::test]
async fn https_speaks_http2_or_http1_as_the_client_chooses_by_alpn() {
    if skipped_when_balanced("TLS and HTTP/2 of one listener (nginx speaks HTTP/1.1 to the instances)") {
        return;
    }
    for protocol in [Protocol::Http2Tls, Protocol::Http1Tls] {
        let app = TestApp::spawn_over(protocol, test_config(), Vec::new()).await;
        let response = send(app.client.get(app.url("/healthz"))).await;
        assert_eq!(response.status(), 200, "{protocol:?}");
        assert_eq!(response.version(), protocol.version(), "{protocol:?}");
        assert_a_stream_runs_to_its_end(&app).await;
    }
}

#[tokio::test]
async fn a_plain_listener_speaks_http1_and_http2_with_prior_knowledge() {
    if skipped_when_balanced("TLS and HTTP/2 of one listener (nginx speaks HTTP/1.1 to the instances)") {
        return;
    }
    let app = TestApp::spawn_over(Protocol::Http2Prior, test_config(), Vec::new()).await;
    assert_a_stream_runs_to_its_end(&app).await;
    let http1 = reqwest::Client::builder().http1_only().build().unwrap();
    let response = send(http1.get(app.url("/healthz"))).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
}

#[tokio::test]
async fn a_certificate_the_server_cannot_use_stops_it_at_start_with_one_line() {
    if skipped_when_balanced("TLS and HTTP/2 of one listener (nginx speaks HTTP/1.1 to the instances)") {
        return;
    }
    let good = TestCert::new();
    let other = TestCert::new();
    let (cert, key) = (good.cert.to_str().unwrap(), good.key.to_str().unwrap());
    let missing = good.path("missing.pem");
    let missing = missing.to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["--tls-cert", missing, "--tls-key", key], missing),
        (&["--tls-cert", key, "--tls-key", key], "holds no PEM certificate"),
        (&["--tls-cert", cert, "--tls-key", cert], "holds no PEM private key"),
        (
            &["--tls-cert", cert, "--tls-key", other.key.to_str().unwrap()],
            "does not match the certificate",
        ),
        (&["--tls-cert", cert], "--tls-cert and --tls-key go together"),
    ];
    for (args, expected) in cases {
        let (code, stderr) = jobcast_exit(args, &[]).await;
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
        assert!(stderr.starts_with("jobcast: "), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let (code, stderr) = jobcast_exit(&[], &[("JOBCAST_TLS_CERT", missing), ("JOBCAST_TLS_KEY", key)]).await;
    assert_eq!(code, Some(1), "the variables are read too: {stderr}");
    assert!(stderr.contains(missing), "{stderr}");
}

/// The HTTP/2 settings the server announces on a new connection, by id.
async fn announced_settings(app: &TestApp) -> HashMap<u16, u32> {
    let address = app.base.split_once("://").unwrap().1.to_owned();
    let mut tcp = TcpStream::connect(address).await.unwrap();
    tcp.write_all(&http2_opening()).await.unwrap();
    let mut received = Vec::new();
    let settings = tokio::time::timeout(WAIT, async {
        loop {
            let mut buffer = [0u8; 4096];
            let count = tcp.read(&mut buffer).await.unwrap();
            assert!(count > 0, "the server closed before its SETTINGS frame");
            received.extend_from_slice(&buffer[..count]);
            if let Some(frame) = http2_frames(&received)
                .into_iter()
                .find(|frame| frame.kind == HTTP2_SETTINGS)
            {
                return frame.payload;
            }
        }
    })
    .await
    .expect("the server sends its settings");
    settings
        .chunks(6)
        .map(|setting| {
            let id = u16::from_be_bytes([setting[0], setting[1]]);
            (id, u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]))
        })
        .collect()
}

#[tokio::test]
async fn http2_announces_its_stream_and_header_limits() {
    if skipped_when_balanced("TLS and HTTP/2 of one listener (nginx speaks HTTP/1.1 to the instances)") {
        return;
    }
    const MAX_CONCURRENT_STREAMS: u16 = 3;
    const MAX_HEADER_LIST_SIZE: u16 = 6;
    let app = TestApp::spawn_over(Protocol::Http1, test_config(), Vec::new()).await;
    let settings = announced_settings(&app).await;
    assert_eq!(settings.get(&MAX_CONCURRENT_STREAMS), Some(&200), "{settings:?}");
    assert_eq!(settings.get(&MAX_HEADER_LIST_SIZE), Some(&8192), "{settings:?}");
    let config = Config {
        http2_max_streams: 7,
        ..test_config()
    };
    let app = TestApp::spawn_over(Protocol::Http1, config, Vec::new()).await;
    let settings = announced_settings(&app).await;
    assert_eq!(
        settings.get(&MAX_CONCURRENT_STREAMS),
        Some(&7),
        "--http2-max-streams: {settings:?}"
    );
}

#[tokio::test]
async fn over_one_http2_connection_every_stream_counts_gets_progress_and_ends_at_shutdown() {
    if skipped_when_balanced("TLS and HTTP/2 of one listener (nginx speaks HTTP/1.1 to the instances)") {
        return;
    }
    const STREAMS: usize = 20;
    let config = Config {
        max_streams: STREAMS,
        ..test_config()
    };
    let mut app = TestApp::spawn_over(Protocol::Http2Tls, config, Vec::new()).await;
    let mut ids = Vec::new();
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        let id = id_of(&app.create_demo(demo(10_000, 20)).await);
        streams.push(app.subscribe(&id).await);
        ids.push(id);
    }
    for stream in &mut streams {
        while stream.next().await.expect("the stream stays open").event != "progress" {}
    }
    // The limit counts streams, not connections: all share one.
    let refused = app.open(&format!("/v1/jobs/{}/events", ids[0]), HeaderMap::new()).await;
    assert!(refused.headers().contains_key(RETRY_AFTER));
    assert_problem(refused, 503, "a stream beyond --max-streams").await;

    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut stream| tokio::spawn(async move { stream.all().await }))
        .collect();
    app.stop().await;
    for (reader, id) in readers.into_iter().zip(&ids) {
        let events = tokio::time::timeout(WAIT, reader).await.unwrap().unwrap();
        let end = events.last().expect("events until the end");
        assert_eq!(end.event, "failed", "{id}");
        assert_eq!(end.data["error"]["code"], "shutdown", "{id}");
    }
}
