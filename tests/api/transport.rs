//! The transport: HTTPS with HTTP/2 and HTTP/1.1 chosen by ALPN, HTTP/2
//! with prior knowledge on a plain listener, and a certificate the server
//! cannot use stopping it at start with one line.

use reqwest::header::HeaderMap;

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
    let app = TestApp::spawn_over(Protocol::Http2Prior, test_config(), Vec::new()).await;
    assert_a_stream_runs_to_its_end(&app).await;
    let http1 = reqwest::Client::builder().http1_only().build().unwrap();
    let response = send(http1.get(app.url("/healthz"))).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
}

#[tokio::test]
async fn a_certificate_the_server_cannot_use_stops_it_at_start_with_one_line() {
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
