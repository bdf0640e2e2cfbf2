//! The examples run: the server reads `examples/jobcast.toml` as `jobcast
//! --config` does, and the example worker (`examples/worker.py`, standard-
//! library Python) drives real jobs against it. Also the binary's handling
//! of the kinds file: `--config` and `JOBCAST_CONFIG`.

use std::path::PathBuf;
use std::process::Stdio;

use jobcast::Config;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::helpers::{id_of, jobcast_exit, test_config, TestApp, BIN, WAIT};

/// The server as the binary runs it, with the example kinds file.
async fn start() -> TestApp {
    TestApp::run(Config {
        kinds_file: Some(PathBuf::from("examples/jobcast.toml")),
        ..test_config()
    })
    .await
}

/// `python3 examples/worker.py --server <base> args…`, output piped.
fn worker(server: &TestApp, args: &[&str]) -> Command {
    let mut command = Command::new("python3");
    command
        .arg("examples/worker.py")
        .args(["--server", &server.base])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

#[tokio::test]
async fn the_example_worker_counts_words_and_completes_its_job() {
    let server = start().await;
    let output = tokio::time::timeout(WAIT, worker(&server, &["--submit", "src"]).output())
        .await
        .expect("the worker finishes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let id = stdout
        .lines()
        .find_map(|line| line.strip_prefix("worker: driving job "))
        .expect("the worker names its job");
    let job = server.get_job(id).await;
    assert_eq!(job["status"], "completed");
    assert_eq!(job["kind"], "wordcount");
    let result = &job["result"];
    assert!(result["files"].as_u64().unwrap() > 5, "{result}");
    assert!(result["words"].as_u64().unwrap() > 1000, "{result}");
    assert_eq!(result["top"].as_array().unwrap().len(), 10);
    assert_eq!(job["stages"][0]["status"], "done");
    let printed: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(&printed, result);
}

#[tokio::test]
async fn the_example_worker_stops_when_its_job_is_cancelled() {
    let server = start().await;
    let job = server.create("wordcount", json!({"path": "src"})).await;
    let id = id_of(&job);
    let token = job["worker_token"].as_str().unwrap();
    let mut child = worker(&server, &["--job", &id, "--token", token, "--delay", "0.05"])
        .spawn()
        .unwrap();
    let mut job = server.get_job(&id).await;
    while job["stage"]["current"].as_u64().unwrap_or(0) == 0 {
        job = server.get_job_after(&id, job["seq"].as_u64().unwrap()).await;
    }
    let response = server
        .client
        .post(server.url(&format!("/v1/jobs/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cancelled: Value = response.json().await.unwrap();
    assert_eq!(cancelled["error"]["code"], "cancelled", "the worker acknowledged");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut said = Vec::new();
    while let Some(line) = tokio::time::timeout(WAIT, lines.next_line()).await.unwrap().unwrap() {
        said.push(line);
    }
    let status = tokio::time::timeout(WAIT, child.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(2), "{said:?}");
    assert_eq!(said.last().unwrap(), "worker: cancelled; stopped");
}

#[tokio::test]
async fn the_example_worker_fails_its_job_on_a_missing_directory() {
    let server = start().await;
    let output = tokio::time::timeout(WAIT, worker(&server, &["--submit", "no/such/dir"]).output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let id = stdout
        .lines()
        .find_map(|line| line.strip_prefix("worker: driving job "))
        .unwrap();
    let job = server.get_job(id).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(job["error"]["code"], "unreadable");
    assert_eq!(job["error"]["stage"], "scanning");
}

#[tokio::test]
async fn the_example_kinds_are_listed_with_valid_examples() {
    let server = start().await;
    let kinds = server.get_json("/v1/kinds").await;
    let kinds = kinds["kinds"].as_array().unwrap();
    let names: Vec<&str> = kinds.iter().map(|kind| kind["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["copy_verify", "demo", "wordcount"], "by name");
    // Examples are checked against their params when the file is read; a
    // create proves it over HTTP for the kinds whose jobs touch nothing
    // (copy_verify's example would copy /srv/photos).
    for kind in kinds.iter().filter(|kind| kind["name"] != "copy_verify") {
        let response = server
            .client
            .post(server.url("/v1/jobs"))
            .json(&json!({"kind": kind["name"], "params": kind["example"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "the example of {}", kind["name"]);
        let job: Value = response.json().await.unwrap();
        let id = job["id"].as_str().unwrap();
        server
            .client
            .post(server.url(&format!("/v1/jobs/{id}/cancel")))
            .send()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_bad_kinds_file_stops_the_server_at_startup_naming_the_mistake() {
    let dir = std::env::temp_dir().join(format!("jobcast-kinds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[kinds.copy.command]\nargv = []\n[kinds.copy.external]\n").unwrap();
    let bad = bad.to_str().unwrap();
    let (code, stderr) = jobcast_exit(&["--config", bad], &[]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("kind \"copy\""), "{stderr}");
    let (code, stderr) = jobcast_exit(&[], &[("JOBCAST_CONFIG", bad)]).await;
    assert_eq!(code, Some(1), "JOBCAST_CONFIG is read too: {stderr}");
    let (code, stderr) = jobcast_exit(&["--config", "/no/such/file.toml"], &[]).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("/no/such/file.toml"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn jobcast_submit_shows_an_external_jobs_worker_token_on_stderr() {
    let server = start().await;
    let output = tokio::time::timeout(
        WAIT,
        Command::new(BIN)
            .args(["submit", "wordcount", "--params", r#"{"path": "src"}"#])
            .args(["--server", &server.base])
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(output.status.success());
    let id = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    let token = stderr
        .trim()
        .rsplit_once(": ")
        .map(|(_, token)| token)
        .expect("the token is shown");
    assert!(token.starts_with("jcw_"), "{stderr}");
    let id = id.trim();
    let response = server
        .client
        .post(server.url(&format!("/v1/jobs/{id}/complete")))
        .bearer_auth(token)
        .json(&json!({"result": "by hand"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the shown token drives the job");
}
