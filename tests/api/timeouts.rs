//! The header timeout: a request head not complete in time gets 408 and
//! its connection closes; connections that send nothing, idle kept-alive
//! connections, idle HTTP/2 connections and stalled TLS handshakes close
//! too; hundreds of slow clients delay no one else; and streams outlive the
//! timeout on either protocol.

use std::time::Duration;

use futures_util::future::join_all;
use jobcast::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::cluster::skipped_when_balanced;
use crate::helpers::*;

/// The header timeout of these tests: short, so that they are quick.
const TIMEOUT: Duration = Duration::from_secs(1);

/// How much later than the timeout a connection may close: timers, a busy
/// machine, an unoptimised build.
const SLACK: Duration = Duration::from_millis(1500);

fn config_with_timeout(timeout: Duration) -> Config {
    Config {
        header_timeout: timeout,
        ..test_config()
    }
}

/// A plain server with the header timeout `timeout`, for raw connections
/// (plain HTTP/1.1 whatever the suite's protocol).
async fn plain_server(timeout: Duration) -> TestApp {
    TestApp::spawn_over(Protocol::Http1, config_with_timeout(timeout), Vec::new()).await
}

/// The host and port of `app`.
fn address(app: &TestApp) -> String {
    app.base.split_once("://").unwrap().1.to_owned()
}

/// Connects to `app`, writes `bytes`, and reads until the server closes;
/// returns what the server sent and how long after connecting it closed.
async fn send_and_read_to_end(app: &TestApp, bytes: &[u8]) -> (Vec<u8>, Duration) {
    let mut tcp = TcpStream::connect(address(app)).await.unwrap();
    let started = Instant::now();
    tcp.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .expect("the connection reads cleanly");
    (answer, started.elapsed())
}

/// Checks that a connection closed after the timeout, within the slack.
fn assert_closed_after(what: &str, elapsed: Duration, timeout: Duration) {
    assert!(
        elapsed >= timeout - Duration::from_millis(50) && elapsed <= timeout + SLACK,
        "{what}: closed after {elapsed:?}, timeout {timeout:?}"
    );
}

/// Checks a 408 problem answer, as written to a raw connection.
fn assert_request_timeout(answer: &[u8]) {
    let answer = String::from_utf8_lossy(answer);
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 408 "), "{answer}");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-type: application/problem+json"), "{answer}");
    assert!(head.contains("connection: close"), "{answer}");
    let problem: serde_json::Value = serde_json::from_str(body).expect("a JSON problem");
    assert_eq!(problem["status"], 408, "{problem}");
    assert!(problem["detail"].as_str().is_some_and(|detail| !detail.is_empty()));
}

#[tokio::test]
async fn a_request_head_not_complete_in_time_gets_408_and_the_connection_closes() {
    if skipped_when_balanced("the header timeout of one listener's connections (nginx holds the client's connection)") {
        return;
    }
    let app = plain_server(TIMEOUT).await;
    let (answer, elapsed) = send_and_read_to_end(&app, b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
    assert_request_timeout(&answer);
    assert_closed_after("a partial head", elapsed, TIMEOUT);
}

#[tokio::test]
async fn silent_idle_and_stalled_connections_close_after_the_header_timeout() {
    if skipped_when_balanced("the header timeout of one listener's connections (nginx holds the client's connection)") {
        return;
    }
    let plain = plain_server(TIMEOUT).await;
    let tls = TestApp::spawn_over(Protocol::Http2Tls, config_with_timeout(TIMEOUT), Vec::new()).await;
    let silent = async {
        let (answer, elapsed) = send_and_read_to_end(&plain, b"").await;
        assert!(answer.is_empty(), "nothing is answered to nothing: {answer:?}");
        assert_closed_after("a connection that sent nothing", elapsed, TIMEOUT);
    };
    let kept_alive = async {
        let (answer, elapsed) = send_and_read_to_end(&plain, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(
            answer.starts_with(b"HTTP/1.1 200 "),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        assert_closed_after("an idle kept-alive connection", elapsed, TIMEOUT);
    };
    let idle_http2 = async {
        // The preface and an empty SETTINGS frame: a client with prior
        // knowledge that opens no stream. It gets GOAWAY and its ping, does
        // not answer, and is dropped after the timeout once more.
        let (answer, elapsed) = send_and_read_to_end(&plain, &http2_opening()).await;
        let goaway = http2_frames(&answer).iter().any(|frame| frame.kind == HTTP2_GOAWAY);
        assert!(goaway, "a GOAWAY frame: {answer:?}");
        assert_closed_after("an idle HTTP/2 connection", elapsed, 2 * TIMEOUT);
    };
    let stalled_handshake = async {
        let (answer, elapsed) = send_and_read_to_end(&tls, b"").await;
        assert!(answer.is_empty(), "{answer:?}");
        assert_closed_after("a TLS handshake that never starts", elapsed, TIMEOUT);
    };
    tokio::join!(silent, kept_alive, idle_http2, stalled_handshake);
}

#[tokio::test]
async fn streams_outlive_the_header_timeout_on_either_protocol() {
    if skipped_when_balanced("the header timeout of one listener's connections (nginx holds the client's connection)") {
        return;
    }
    for protocol in [Protocol::Http1, Protocol::Http2Tls] {
        let app = TestApp::spawn_over(protocol, config_with_timeout(TIMEOUT), Vec::new()).await;
        let id = id_of(&app.create_demo(demo(25, 100)).await);
        let started = Instant::now();
        let events = app.subscribe(&id).await.all().await;
        assert!(started.elapsed() > 2 * TIMEOUT, "{protocol:?}: the stream lasted");
        assert_well_formed(&events);
        assert_eq!(events.last().unwrap().event, "completed", "{protocol:?}");
    }
}

/// Slow clients: how many, and how slowly they send.
const SLOW_CLIENTS: usize = 500;
const SLOW_BYTE_EVERY: Duration = Duration::from_millis(400);
/// The header timeout of the slow-clients test.
const SLOW_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a normal request or a stream's event may take meanwhile.
const NORMAL_LATENCY: Duration = Duration::from_secs(1);

/// One slow client: sends a request head a byte at a time and never
/// finishes it; returns what it read and when the server closed.
async fn trickle(address: String) -> (Vec<u8>, Duration) {
    let mut tcp = TcpStream::connect(address).await.unwrap();
    let started = Instant::now();
    let deadline = started + SLOW_TIMEOUT + SLACK + SLOW_BYTE_EVERY;
    let head = b"GET /v1/jobs HTTP/1.1\r\nHost: slow\r\nX-Slow: ";
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    for &byte in head.iter().cycle() {
        // The server may have closed already; what it sent is read below.
        let _ = tcp.write_all(&[byte]).await;
        let read = tokio::time::timeout(SLOW_BYTE_EVERY, tcp.read(&mut buffer)).await;
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(count)) => answer.extend_from_slice(&buffer[..count]),
            Err(_) => {}
        }
        assert!(Instant::now() < deadline, "a slow client is still connected");
    }
    (answer, started.elapsed())
}

/// Raises this process's open-file limit to what 500 connections need at
/// both ends (a fresh machine's default soft limit is 1,024).
fn allow_open_files(count: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `limit`.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < count {
            limit.rlim_cur = count.min(limit.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
}

#[tokio::test]
async fn five_hundred_slow_clients_are_closed_in_time_and_delay_no_one() {
    if skipped_when_balanced("the header timeout of one listener's connections (nginx holds the client's connection)") {
        return;
    }
    allow_open_files(4 * SLOW_CLIENTS as u64);
    let app = plain_server(SLOW_TIMEOUT).await;
    // A job that runs through the attack, watched from before it starts.
    let id = id_of(&app.create_demo(demo(80, 50)).await);
    let mut stream = app.subscribe(&id).await;

    let slow: Vec<_> = (0..SLOW_CLIENTS)
        .map(|_| tokio::spawn(trickle(address(&app))))
        .collect();
    let requests = async {
        let mut slowest = Duration::ZERO;
        let until = Instant::now() + SLOW_TIMEOUT + SLOW_BYTE_EVERY;
        while Instant::now() < until {
            let started = Instant::now();
            let response = send(app.client.get(app.url("/v1/jobs?limit=5"))).await;
            assert_eq!(response.status(), 200);
            slowest = slowest.max(started.elapsed());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        slowest
    };
    let events = async {
        let mut latest = Duration::ZERO;
        while let Some(event) = stream.next().await {
            let updated = chrono::DateTime::parse_from_rfc3339(event.data["updated_at"].as_str().unwrap()).unwrap();
            let late = (chrono::Utc::now() - updated.to_utc()).to_std().unwrap_or_default();
            latest = latest.max(late);
        }
        latest
    };
    let (slowest_request, latest_event, slow) = tokio::join!(requests, events, join_all(slow));

    let mut closed_after = Vec::new();
    for (answer, elapsed) in slow.into_iter().map(Result::unwrap) {
        assert_request_timeout(&answer);
        assert_closed_after("a slow client", elapsed, SLOW_TIMEOUT);
        closed_after.push(elapsed);
    }
    closed_after.sort();
    eprintln!(
        "{SLOW_CLIENTS} slow clients closed after {:?} to {:?}; meanwhile requests took up to {slowest_request:?}, events arrived up to {latest_event:?} late",
        closed_after[0],
        closed_after[closed_after.len() - 1]
    );
    assert!(
        slowest_request < NORMAL_LATENCY,
        "requests took up to {slowest_request:?} meanwhile"
    );
    assert!(
        latest_event < NORMAL_LATENCY,
        "events arrived up to {latest_event:?} late meanwhile"
    );
}
