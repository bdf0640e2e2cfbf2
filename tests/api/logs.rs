//! Logs for collectors: `--log-format json` writes one JSON object per
//! line with the request's and job's span fields, text stays the default,
//! and no secret (worker token, ticket, cookie, key) reaches a log line at
//! any level in either format.

use std::process::Stdio;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};
use tokio::task::JoinHandle;

use crate::auth_common::*;
use crate::cluster::skipped_when_balanced;
use crate::helpers::*;

/// The binary, logging everything at `trace` in `format` over HTTPS, with
/// the example kinds (one of them external, so that jobs have worker
/// tokens), its stderr read line by line.
struct LoggingServer {
    child: Child,
    base: String,
    /// Every line read before the listening line.
    early: Vec<String>,
    /// Reads the rest, until the server exits.
    rest: JoinHandle<Vec<String>>,
}

impl LoggingServer {
    async fn start(format: &str, cert: &TestCert) -> LoggingServer {
        Self::start_with(format, cert, &[]).await
    }

    async fn start_with(format: &str, cert: &TestCert, args: &[&str]) -> LoggingServer {
        let mut child = Command::new(BIN)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--store",
                "memory",
                "--log",
                "trace",
                "--log-format",
                format,
            ])
            .args(args)
            .args(["--config", "examples/jobcast.toml"])
            .arg("--tls-cert")
            .arg(&cert.cert)
            .arg("--tls-key")
            .arg(&cert.key)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut early = Vec::new();
        let address = tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                let address = listening_address(&line);
                early.push(line);
                if let Some(address) = address {
                    return address;
                }
            }
            panic!("the server exited before listening: {early:?}");
        })
        .await
        .expect("the server listens in time");
        LoggingServer {
            child,
            base: format!("https://{address}"),
            early,
            rest: tokio::spawn(read_all(lines)),
        }
    }

    /// Stops the server with SIGTERM and returns every line it logged.
    async fn stop(mut self) -> Vec<String> {
        let pid = self.child.id().expect("the server is running") as libc::pid_t;
        // SAFETY: signals our own child, not yet reaped, by its pid.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let status = tokio::time::timeout(WAIT, self.child.wait()).await.unwrap().unwrap();
        assert!(status.success(), "{status}");
        let mut lines = self.early;
        lines.extend(self.rest.await.unwrap());
        lines
    }
}

async fn read_all(mut lines: tokio::io::Lines<BufReader<ChildStderr>>) -> Vec<String> {
    let mut all = Vec::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        all.push(line);
    }
    all
}

/// The address in the "jobcast listening" line, in either format.
fn listening_address(line: &str) -> Option<String> {
    if !line.contains("jobcast listening") {
        return None;
    }
    if let Ok(object) = serde_json::from_str::<Value>(line) {
        return object["address"].as_str().map(str::to_owned);
    }
    let (_, after) = line.split_once("address=")?;
    after.split_whitespace().next().map(str::to_owned)
}

/// Exercises everything that carries a secret, over HTTP/2 and HTTP/1.1:
/// a job's worker token (in the create answer, then as a bearer token, and
/// a wrong one), a ticket in a query string, a session cookie and an API
/// key header. Returns the secrets.
async fn use_secrets(server: &LoggingServer, cert: &TestCert) -> Vec<String> {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let ticket = format!("ticket{unique}");
    let cookie = format!("cookie{unique}");
    let key = format!("key{unique}");
    let wrong_token = format!("jcw_wrong{unique}");
    let mut secrets = vec![ticket.clone(), cookie.clone(), key.clone(), wrong_token.clone()];
    for http1 in [false, true] {
        let root = reqwest::Certificate::from_pem(cert.pem.as_bytes()).unwrap();
        let client = reqwest::Client::builder().add_root_certificate(root);
        let client = if http1 { client.http1_only() } else { client }.build().unwrap();
        let url = |path: &str| format!("{}{path}", server.base);
        let created = send(
            client
                .post(url("/v1/jobs"))
                .json(&json!({"kind": "wordcount", "params": {"path": "src"}})),
        )
        .await;
        assert_eq!(created.status(), 202);
        let job: Value = created.json().await.unwrap();
        let id = id_of(&job);
        let token = job["worker_token"].as_str().expect("a worker token").to_owned();
        let events = send(
            client
                .get(url(&format!("/v1/jobs/{id}/events?ticket={ticket}")))
                .header("cookie", format!("jobcast_session={cookie}"))
                .header("x-api-key", &key)
                .bearer_auth(&key),
        )
        .await;
        assert_eq!(events.status(), 200);
        let mut events = Sse::new(events);
        assert_eq!(events.next().await.unwrap().event, "snapshot");
        let refused = send(
            client
                .post(url(&format!("/v1/jobs/{id}/heartbeat")))
                .bearer_auth(&wrong_token),
        )
        .await;
        assert_eq!(refused.status(), 403);
        let completed = send(
            client
                .post(url(&format!("/v1/jobs/{id}/complete")))
                .bearer_auth(&token)
                .json(&json!({"result": "done"})),
        )
        .await;
        assert_eq!(completed.status(), 200);
        assert_eq!(events.all().await.last().unwrap().event, "completed");
        secrets.push(token);
    }
    secrets
}

/// With authentication on: a real API key, a JWT, the session cookie made
/// of each, and a job's real stream ticket, over HTTP/2 and HTTP/1.1.
/// Returns the secrets.
async fn use_credentials(server: &LoggingServer, cert: &TestCert) -> Vec<String> {
    let jwt = mint("carol", jobcast::auth::Role::User);
    let mut secrets = vec![
        ALICE_KEY.to_owned(),
        jwt.clone(),
        JWT_SECRET.to_owned(),
        TICKET_SECRET.to_owned(),
    ];
    for http1 in [false, true] {
        let root = reqwest::Certificate::from_pem(cert.pem.as_bytes()).unwrap();
        let client = reqwest::Client::builder().add_root_certificate(root);
        let client = if http1 { client.http1_only() } else { client }.build().unwrap();
        let url = |path: &str| format!("{}{path}", server.base);
        for credential in [ALICE_KEY, jwt.as_str()] {
            let created = send(
                client
                    .post(url("/v1/jobs"))
                    .bearer_auth(credential)
                    .json(&json!({"kind": "demo", "params": {"step_ms": 0}})),
            )
            .await;
            assert_eq!(created.status(), 202);
            let job: Value = created.json().await.unwrap();
            let stream_url = job["stream_url"].as_str().unwrap().to_owned();
            let ticket = stream_url.split_once("ticket=").unwrap().1.to_owned();
            let events = send(client.get(url(&stream_url))).await;
            assert_eq!(events.status(), 200);
            assert!(Sse::new(events).all().await.last().unwrap().is_terminal());
            let session = send(client.post(url("/v1/session")).bearer_auth(credential)).await;
            assert_eq!(session.status(), 204);
            let cookie = session.headers()["set-cookie"]
                .to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_owned();
            let listed = send(client.get(url("/v1/jobs")).header("cookie", &cookie)).await;
            assert_eq!(listed.status(), 200);
            let refused = send(client.get(url("/v1/jobs")).bearer_auth(format!("{credential}x"))).await;
            assert_eq!(refused.status(), 401);
            secrets.extend([ticket, cookie.split_once('=').unwrap().1.to_owned()]);
        }
    }
    secrets
}

#[tokio::test]
async fn no_credential_ticket_or_session_reaches_the_logs_with_authentication_on() {
    if skipped_when_balanced("reads the logs of its own jobcast process") {
        return;
    }
    let cert = TestCert::new();
    let keys = keys_file();
    let args = [
        "--auth-keys",
        keys.0.to_str().unwrap(),
        "--jwt-secret",
        JWT_SECRET,
        "--ticket-secret",
        TICKET_SECRET,
    ];
    for format in ["text", "json"] {
        let server = LoggingServer::start_with(format, &cert, &args).await;
        let secrets = use_credentials(&server, &cert).await;
        assert_no_secret(format, &server.stop().await, &secrets);
    }
}

/// Checks that trace logs were on and that no line holds any of `secrets`.
fn assert_no_secret(format: &str, lines: &[String], secrets: &[String]) {
    assert!(
        lines.iter().any(|line| line.contains("recv HEADERS")),
        "{format}: trace logs of HTTP/2 frames are on"
    );
    for line in lines {
        for secret in secrets {
            assert!(!line.contains(secret.as_str()), "{format}: a secret in {line}");
        }
    }
}

#[tokio::test]
async fn the_binary_serves_the_network_only_with_authentication_or_when_told_to() {
    if skipped_when_balanced("reads the logs of its own jobcast process") {
        return;
    }
    let keys = keys_file();
    let cert = TestCert::new();
    for args in [
        vec!["--listen", "0.0.0.0:0", "--allow-anonymous"],
        vec![
            "--listen",
            "0.0.0.0:0",
            "--auth-keys",
            keys.0.to_str().unwrap(),
            "--ticket-secret",
            TICKET_SECRET,
        ],
        vec!["--listen", "0.0.0.0:0", "--jwt-secret", JWT_SECRET],
    ] {
        let mut child = Command::new(BIN)
            .args(&args)
            .args(["--store", "memory"])
            .arg("--tls-cert")
            .arg(&cert.cert)
            .arg("--tls-key")
            .arg(&cert.key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let listening = tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.contains("jobcast listening") {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap();
        assert!(listening, "{args:?}");
        child.kill().await.unwrap();
    }
}

/// The base64 lines of the server's private key.
fn key_material(cert: &TestCert) -> Vec<String> {
    std::fs::read_to_string(&cert.key)
        .unwrap()
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn no_secret_reaches_the_logs_at_any_level_in_either_format() {
    if skipped_when_balanced("reads the logs of its own jobcast process") {
        return;
    }
    let cert = TestCert::new();
    for format in ["text", "json"] {
        let server = LoggingServer::start(format, &cert).await;
        let mut secrets = use_secrets(&server, &cert).await;
        let lines = server.stop().await;
        secrets.extend(key_material(&cert));
        assert_no_secret(format, &lines, &secrets);
    }
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_the_request_and_job_spans() {
    if skipped_when_balanced("reads the logs of its own jobcast process") {
        return;
    }
    let cert = TestCert::new();
    let server = LoggingServer::start("json", &cert).await;
    use_secrets(&server, &cert).await;
    let lines = server.stop().await;
    let objects: Vec<Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("a JSON line: {line}")))
        .collect();
    for object in &objects {
        assert!(object.is_object(), "{object}");
        for field in ["timestamp", "level", "target"] {
            assert!(object[field].is_string(), "{field} in {object}");
        }
    }
    let has_span = |name: &str, fields: &[&str]| {
        objects.iter().any(|object| {
            object["spans"].as_array().is_some_and(|spans| {
                spans
                    .iter()
                    .any(|span| span["name"] == name && fields.iter().all(|field| span[*field].is_string()))
            })
        })
    };
    assert!(has_span("request", &["method", "path"]), "request spans");
    assert!(has_span("job", &["job_id", "kind"]), "job spans");
}
