//! Command kinds against a real server and real child processes, declared
//! the way users declare them: as TOML text read by `kinds::file::parse`.
//!
//! The children are small shell and Python scripts written to a scratch
//! directory. Where a test must look at a job mid-run, the script blocks on
//! a FIFO (its "gate") until the test has seen the state it expects, so that
//! nothing depends on timing.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use jobcast::kinds::file::{parse, FileSettings};
use serde_json::{json, Value};

use crate::helpers::{id_of, test_config, Sse, TestApp, WAIT};

/// A directory of its own for one test, removed when the test ends.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "jobcast-commands-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes an executable script.
    fn script(&self, name: &str, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// A FIFO a script blocks on until the test opens it.
    fn gate(&self, name: &str) -> Gate {
        let path = self.path(name);
        let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: c_path is a valid NUL-terminated string.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo {path:?}");
        Gate { path }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Gate {
    path: PathBuf,
}

impl Gate {
    fn arg(&self) -> String {
        self.path.to_str().unwrap().to_owned()
    }

    /// Lets the script waiting on the gate go on.
    async fn open(&self) {
        let path = self.path.clone();
        let opened = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut fifo = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            fifo.write_all(b"go\n").unwrap();
        });
        tokio::time::timeout(WAIT, opened)
            .await
            .expect("a script waits at the gate")
            .unwrap();
    }
}

/// A server with the kinds of `toml` (relative paths relative to `dir`),
/// the given cancel grace, and commands' SIGTERM-to-SIGKILL `kill_grace`.
async fn serve(toml: &str, dir: &Path, cancel_grace: Duration, kill_grace: Duration) -> TestApp {
    let kinds = parse(toml, dir, &FileSettings { kill_grace }).expect("the kinds file is valid");
    let config = jobcast::Config {
        cancel_grace,
        ..test_config()
    };
    TestApp::spawn_with_kinds(config, kinds).await
}

async fn serve_simple(toml: &str, dir: &Path) -> TestApp {
    serve(toml, dir, Duration::from_secs(10), Duration::from_secs(5)).await
}

/// Reads the stream until a state satisfies `check`; fails the test if the
/// job ends first (unless that final state satisfies it).
async fn until(stream: &mut Sse, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    loop {
        let event = stream
            .next()
            .await
            .unwrap_or_else(|| panic!("the stream ended before {what}"));
        if check(&event.data) {
            return event.data;
        }
        assert!(!event.is_terminal(), "the job ended before {what}: {}", event.data);
    }
}

/// Whether the process is alive: a zombie counts as gone.
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z" | "X"))
}

fn pids_in(path: &Path) -> Vec<u32> {
    std::fs::read_to_string(path)
        .unwrap()
        .split_whitespace()
        .map(|pid| pid.parse().unwrap())
        .collect()
}

/// Waits, polling /proc, until none of `pids` is alive; fails after WAIT.
async fn assert_all_gone_eventually(pids: &[u32]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while pids.iter().any(|&pid| alive(pid)) {
        let survivors: Vec<_> = pids.iter().filter(|&&pid| alive(pid)).collect();
        assert!(
            tokio::time::Instant::now() < deadline,
            "processes survive: {survivors:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn params_stay_single_literal_arguments_and_never_reach_a_shell() {
    let scratch = Scratch::new();
    scratch.script(
        "argv.py",
        "import json, sys\nprint(json.dumps({'result': sys.argv[1:]}))\n",
    );
    let marker = scratch.path("pwned");
    let app = serve_simple(
        r#"
        [kinds.echo_args]
        [kinds.echo_args.params]
        name = { type = "string", required = true }
        count = { type = "integer", default = 2 }
        flag = { type = "boolean", default = true }
        ratio = { type = "number" }
        opt = { type = "string" }
        [kinds.echo_args.command]
        argv = ["python3", "argv.py", "--name={name}", "{name}", "{count}", "{flag}", "--ratio={ratio}", "{{literal}}", "--opt={opt}"]
        "#,
        &scratch.dir,
    )
    .await;

    let hostile = format!(
        "; rm -rf /tmp/x $(touch {}) `touch {}` | cat > /dev/null && echo \"quoted\" '*'",
        marker.display(),
        marker.display()
    );
    let job = app.create("echo_args", json!({ "name": hostile, "ratio": 0.5 })).await;
    let job = app.get_job_when_terminal(&id_of(&job)).await;

    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(
        job["result"],
        json!([
            format!("--name={hostile}"),
            hostile,
            "2",
            "true",
            "--ratio=0.5",
            "{literal}"
        ]),
        "each element is one argument, substituted textually; the absent `opt` drops its element"
    );
    assert!(!marker.exists(), "no shell ran the param");
}

#[tokio::test]
async fn protocol_lines_on_stdout_report_stages_and_the_result() {
    let scratch = Scratch::new();
    scratch.script(
        "work.py",
        r#"
import json, sys
def say(**fields): print(json.dumps(fields), flush=True)
print("plain output is not progress", flush=True)
say(stage="fetch", current=0, total=4, unit="files")
say(current=3, message="fetched 3 of 4")
say(stage="nope")
say(stage="fetch", current="not a number")
open(sys.argv[1]).read()
say(stage="build", total=10, unit="steps", current=10)
say(result={"built": 10})
"#,
    );
    let gate = scratch.gate("gate");
    let app = serve_simple(
        r#"
        [kinds.build]
        stages = [{ name = "fetch", weight = 1 }, { name = "build", weight = 3 }]
        [kinds.build.params]
        gate = { type = "string", required = true }
        [kinds.build.command]
        argv = ["python3", "work.py", "{gate}"]
        "#,
        &scratch.dir,
    )
    .await;

    let job = app.create("build", json!({ "gate": gate.arg() })).await;
    let mut stream = app.subscribe(&id_of(&job)).await;
    let state = until(&mut stream, "fetch reaches 3 of 4", |job| job["stage"]["current"] == 3).await;
    assert_eq!(
        state["stage"],
        json!({"name": "fetch", "index": 0, "count": 2, "current": 3, "total": 4, "unit": "files"})
    );
    assert_eq!(state["message"], "fetched 3 of 4");
    assert_eq!(state["status"], "running", "invalid reports do not end the job");
    gate.open().await;

    let done = until(&mut stream, "the job ends", |job| job["status"] != "running").await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["result"], json!({"built": 10}));
    assert_eq!(done["progress"], 1.0);
    assert!(done["stages"]
        .as_array()
        .unwrap()
        .iter()
        .all(|stage| stage["status"] == "done"));
}

#[tokio::test]
async fn protocol_lines_on_the_progress_fd_leave_stdout_ordinary() {
    let scratch = Scratch::new();
    scratch.script(
        "fd.py",
        r#"
import json, os, sys
progress = os.fdopen(int(os.environ["JOBCAST_PROGRESS_FD"]), "w", buffering=1)
def open_fds():
    fds = []
    for fd in range(256):
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:
            pass
    return fds
print(json.dumps({"message": "on stdout, so ordinary output"}), flush=True)
progress.write(json.dumps({"fraction": 0.25, "message": "a quarter"}) + "\n")
progress.flush()
open(sys.argv[1]).read()
progress.write(json.dumps({"result": {"fd": os.environ["JOBCAST_PROGRESS_FD"], "open": open_fds()}}) + "\n")
progress.write("not json, on the progress pipe\n")
progress.flush()
sys.exit(int(sys.argv[2]))
"#,
    );
    let gates = [scratch.gate("gate-1"), scratch.gate("gate-2")];
    let app = serve_simple(
        r#"
        [kinds.fd]
        [kinds.fd.params]
        gate = { type = "string", required = true }
        status = { type = "integer", required = true }
        [kinds.fd.command]
        argv = ["python3", "fd.py", "{gate}", "{status}"]
        progress = "fd"
        "#,
        &scratch.dir,
    )
    .await;

    // An fd the server holds without close-on-exec, as one inherited from
    // whoever started it would be: the children must not get it.
    // SAFETY: dup only creates a new fd, closed at the end of the test.
    let inherited = unsafe { libc::dup(2) };
    assert!(inherited > 3);

    // Two children alive at once: neither may hold the other's pipe.
    let ok = app.create("fd", json!({ "gate": gates[0].arg(), "status": 0 })).await;
    let failing = app.create("fd", json!({ "gate": gates[1].arg(), "status": 1 })).await;
    for job in [&ok, &failing] {
        let mut stream = app.subscribe(&id_of(job)).await;
        let state = until(&mut stream, "a quarter done", |job| job["progress"] == 0.25).await;
        assert_eq!(state["message"], "a quarter");
    }
    for gate in &gates {
        gate.open().await;
    }

    let ok = app.get_job_when_terminal(&id_of(&ok)).await;
    assert_eq!(ok["status"], "completed", "{ok}");
    assert_eq!(ok["result"]["fd"], "3");
    assert_eq!(
        ok["result"]["open"],
        json!([0, 1, 2, 3]),
        "the child has stdio and its own progress pipe: not the other child's, nor the server's inherited fds"
    );
    let failing = app.get_job_when_terminal(&id_of(&failing)).await;
    assert_eq!(failing["status"], "failed");
    let message = failing["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(r#"{"message": "on stdout, so ordinary output"}"#),
        "stdout is ordinary output in fd mode: {message}"
    );
    assert!(message.contains("invalid progress report"), "{message}");
    // SAFETY: closes the fd this test made.
    unsafe { libc::close(inherited) };
}

#[tokio::test]
async fn a_pattern_turns_percentages_into_progress_and_matched_lines_leave_the_tail() {
    let scratch = Scratch::new();
    scratch.script(
        "bar.sh",
        "#!/bin/sh\necho starting\nprintf ' 10%%\\r 20%%\\r 45%%\\r'\nread go < \"$1\"\necho 'disk full' >&2\nexit 3\n",
    );
    let gate = scratch.gate("gate");
    let app = serve_simple(
        r#"
        [kinds.bar]
        [kinds.bar.params]
        gate = { type = "string", required = true }
        [kinds.bar.command]
        argv = ["./bar.sh", "{gate}"]
        progress = "none"
        progress_pattern = '(?<percent>\d+)%'
        "#,
        &scratch.dir,
    )
    .await;

    let job = app.create("bar", json!({ "gate": gate.arg() })).await;
    let mut stream = app.subscribe(&id_of(&job)).await;
    until(&mut stream, "45%", |job| job["progress"] == 0.45).await;
    gate.open().await;

    let job = app.get_job_when_terminal(&id_of(&job)).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(job["error"]["code"], "exit_status");
    let message = job["error"]["message"].as_str().unwrap();
    assert!(message.contains("status 3"), "{message}");
    assert!(message.ends_with("starting\ndisk full"), "{message}");
    assert!(!message.contains('%'), "matched lines are not tail: {message}");
}

#[tokio::test]
async fn a_pattern_turns_counts_and_percentages_into_stage_counters() {
    let scratch = Scratch::new();
    scratch.script("make.sh", "#!/bin/sh\necho '[3/10] compiling a.c'\nread go < \"$1\"\n");
    scratch.script(
        "fetch.sh",
        "#!/bin/sh\necho '40%'\nread go < \"$1\"\necho 'unpack: 50%'\nread go < \"$2\"\n",
    );
    let gates = [
        scratch.gate("gate-1"),
        scratch.gate("gate-2"),
        scratch.gate("gate-3"),
        scratch.gate("gate-4"),
    ];
    let app = serve_simple(
        r#"
        [kinds.make]
        stages = [{ name = "compile" }, { name = "link" }]
        params = { gate = { type = "string", required = true } }
        [kinds.make.command]
        argv = ["./make.sh", "{gate}"]
        progress_pattern = '^\[(?<current>\d+)/(?<total>\d+)\] (?<message>.*)$'

        [kinds.ninja]
        params = { gate = { type = "string", required = true } }
        [kinds.ninja.command]
        argv = ["./make.sh", "{gate}"]
        progress_pattern = '^\[(?<current>\d+)/(?<total>\d+)\] (?<message>.*)$'

        [kinds.fetch]
        stages = [{ name = "download" }, { name = "unpack" }]
        [kinds.fetch.params]
        first = { type = "string", required = true }
        second = { type = "string", required = true }
        [kinds.fetch.command]
        argv = ["./fetch.sh", "{first}", "{second}"]
        progress_pattern = '^(?:(?<stage>unpack): )?(?<percent>\d+)%$'
        "#,
        &scratch.dir,
    )
    .await;

    let make = app.create("make", json!({ "gate": gates[0].arg() })).await;
    let mut stream = app.subscribe(&id_of(&make)).await;
    let state = until(&mut stream, "3 of 10", |job| job["stage"]["current"] == 3).await;
    assert_eq!(state["stage"]["name"], "compile");
    assert_eq!(state["stage"]["total"], 10);
    assert_eq!(state["message"], "compiling a.c");
    gates[0].open().await;
    assert_eq!(app.get_job_when_terminal(&id_of(&make)).await["status"], "completed");

    let ninja = app.create("ninja", json!({ "gate": gates[3].arg() })).await;
    let mut stream = app.subscribe(&id_of(&ninja)).await;
    let state = until(&mut stream, "3 of 10 without stages", |job| job["progress"] == 0.3).await;
    assert_eq!(state["stage"], Value::Null);
    assert_eq!(state["message"], "compiling a.c");
    gates[3].open().await;
    assert_eq!(app.get_job_when_terminal(&id_of(&ninja)).await["status"], "completed");

    let fetch = app
        .create("fetch", json!({ "first": gates[1].arg(), "second": gates[2].arg() }))
        .await;
    let mut stream = app.subscribe(&id_of(&fetch)).await;
    let state = until(&mut stream, "download at 40%", |job| job["stage"]["current"] == 40).await;
    assert_eq!(
        state["stage"],
        json!({"name": "download", "index": 0, "count": 2, "current": 40, "total": 100, "unit": "%"})
    );
    gates[1].open().await;
    let state = until(&mut stream, "unpack at 50%", |job| job["stage"]["current"] == 50).await;
    assert_eq!(
        state["stage"],
        json!({"name": "unpack", "index": 1, "count": 2, "current": 50, "total": 100, "unit": "%"})
    );
    gates[2].open().await;
    let fetch = until(&mut stream, "the end", |job| job["status"] != "running").await;
    assert_eq!(fetch["status"], "completed", "{fetch}");
    assert_eq!(fetch["result"], Value::Null, "no result line: null");
}

#[tokio::test]
async fn exit_statuses_decide_the_outcome_and_failures_quote_the_tail() {
    let scratch = Scratch::new();
    scratch.script(
        "exit.sh",
        "#!/bin/sh\nfor n in 1 2 3 4 5; do echo \"line $n\"; done\necho '{\"stage\": \"nope\"}'\necho 'last words'\nexit \"$1\"\n",
    );
    scratch.script(
        "reported.sh",
        "#!/bin/sh\necho '{\"error\": {\"code\": \"disk_full\", \"message\": \"no space left on /backup\", \"retryable\": true}}'\nexit 1\n",
    );
    let app = serve_simple(
        r#"
        [kinds.exit]
        params = { status = { type = "integer", required = true, min = 0, max = 255 } }
        [kinds.exit.command]
        argv = ["./exit.sh", "{status}"]
        tail_lines = 3

        [kinds.reported]
        [kinds.reported.command]
        argv = ["./reported.sh"]

        [kinds.missing]
        [kinds.missing.command]
        argv = ["./no-such-program"]
        "#,
        &scratch.dir,
    )
    .await;

    let ok = app.create("exit", json!({ "status": 0 })).await;
    let ok = app.get_job_when_terminal(&id_of(&ok)).await;
    assert_eq!(
        ok["status"], "completed",
        "exit 0 completes, invalid reports or not: {ok}"
    );
    assert_eq!(ok["result"], Value::Null);

    let failed = app.create("exit", json!({ "status": 3 })).await;
    let failed = app.get_job_when_terminal(&id_of(&failed)).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["code"], "exit_status");
    assert_eq!(failed["error"]["retryable"], false);
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("the command exited with status 3"), "{message}");
    assert!(
        message.ends_with("line 5\n[jobcast] invalid progress report: no stage named \"nope\"\nlast words"),
        "the last 3 lines, with the invalid report noted: {message}"
    );
    assert!(!message.contains("line 4"), "only the last 3 lines: {message}");

    let reported = app.create("reported", json!({})).await;
    let reported = app.get_job_when_terminal(&id_of(&reported)).await;
    assert_eq!(reported["status"], "failed");
    assert_eq!(reported["error"]["code"], "disk_full");
    assert_eq!(reported["error"]["message"], "no space left on /backup");
    assert_eq!(reported["error"]["retryable"], true);

    let missing = app.create("missing", json!({})).await;
    let missing = app.get_job_when_terminal(&id_of(&missing)).await;
    assert_eq!(missing["status"], "failed");
    assert_eq!(missing["error"]["code"], "spawn_failed");
    assert!(missing["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no-such-program"));
}

#[tokio::test]
async fn a_retried_command_runs_again_with_the_same_checked_params() {
    let scratch = Scratch::new();
    // Fails on its first run, succeeds on the next; notes every argv.
    scratch.script(
        "flaky.sh",
        "#!/bin/sh\nruns=$(cat runs.txt 2>/dev/null | wc -l)\necho \"$*\" >> runs.txt\n[ \"$runs\" -gt 0 ] || exit 1\n",
    );
    let app = serve_simple(
        r#"
        [kinds.flaky]
        params = { name = { type = "string", required = true }, count = { type = "integer", default = 2 } }
        [kinds.flaky.command]
        argv = ["./flaky.sh", "{name}", "{count}"]
        "#,
        &scratch.dir,
    )
    .await;
    let first = app.create("flaky", json!({ "name": "a b" })).await;
    let failed = app.get_job_when_terminal(&id_of(&first)).await;
    assert_eq!(failed["status"], "failed", "{failed}");

    let response = app.retry(&id_of(&first)).await;
    assert_eq!(response.status(), 202);
    let retry: Value = response.json().await.unwrap();
    assert_eq!(retry["params"], json!({ "name": "a b" }));
    let done = app.get_job_when_terminal(&id_of(&retry)).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        std::fs::read_to_string(scratch.path("runs.txt")).unwrap(),
        "a b 2\na b 2\n",
        "the same arguments, defaults included"
    );
}

#[tokio::test]
async fn a_command_killed_by_a_signal_fails_naming_the_signal() {
    let scratch = Scratch::new();
    scratch.script("die.sh", "#!/bin/sh\necho 'about to die'\nkill -USR1 $$\n");
    let app = serve_simple(
        r#"
        [kinds.die]
        [kinds.die.command]
        argv = ["./die.sh"]
        "#,
        &scratch.dir,
    )
    .await;

    let job = app.create("die", json!({})).await;
    let job = app.get_job_when_terminal(&id_of(&job)).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(job["error"]["code"], "exit_status");
    let message = job["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("the command was killed by signal SIGUSR1 (10)"),
        "{message}"
    );
    assert!(message.ends_with("about to die"), "{message}");
}

#[tokio::test]
async fn a_command_past_its_timeout_is_stopped_and_fails_retryable() {
    let scratch = Scratch::new();
    scratch.script(
        "slow.sh",
        "#!/bin/sh\necho $$ > \"$1\"\necho 'working'\nexec sleep 300\n",
    );
    let app = serve(
        r#"
        [kinds.slow]
        params = { pids = { type = "string", required = true } }
        [kinds.slow.command]
        argv = ["./slow.sh", "{pids}"]
        timeout = "300ms"
        "#,
        &scratch.dir,
        Duration::from_secs(10),
        Duration::from_secs(5),
    )
    .await;

    let pids = scratch.path("pids");
    let job = app.create("slow", json!({ "pids": pids.to_str().unwrap() })).await;
    let job = app.get_job_when_terminal(&id_of(&job)).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(job["error"]["code"], "timeout");
    assert_eq!(job["error"]["retryable"], true);
    let message = job["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("the command ran longer than its timeout of 300ms"),
        "{message}"
    );
    assert!(message.ends_with("working"), "{message}");
    for pid in pids_in(&pids) {
        assert!(!alive(pid), "process {pid} survived the timeout");
    }
}

/// A script that ignores SIGTERM and leaves children (which inherit the
/// ignored SIGTERM) and a grandchild behind; it writes every pid to `$1`.
const FORKING: &str = r#"#!/bin/sh
trap '' TERM
sleep 300 &
echo $! >> "$1"
sh -c 'sleep 300 & echo $! >> "$1"; wait' forker "$1" &
echo $! >> "$1"
# The forker writes its child's pid in its own time: wait for it.
while [ "$(wc -l < "$1")" -lt 3 ]; do sleep 0.01; done
echo $$ >> "$1"
echo '{"message": "forked"}'
wait
"#;

/// A running job of FORKING whose four processes are all alive, on a server
/// with these graces.
struct Forked {
    app: TestApp,
    id: String,
    pids: Vec<u32>,
    _scratch: Scratch,
}

async fn forked(cancel_grace: Duration, kill_grace: Duration) -> Forked {
    let scratch = Scratch::new();
    scratch.script("forking.sh", FORKING);
    let app = serve(
        r#"
        [kinds.forking]
        params = { pids = { type = "string", required = true } }
        [kinds.forking.command]
        argv = ["./forking.sh", "{pids}"]
        "#,
        &scratch.dir,
        cancel_grace,
        kill_grace,
    )
    .await;
    let pids = scratch.path("pids");
    let job = app.create("forking", json!({ "pids": pids.to_str().unwrap() })).await;
    let id = id_of(&job);
    let mut stream = app.subscribe(&id).await;
    until(&mut stream, "the script has forked", |job| job["message"] == "forked").await;
    let pids = pids_in(&pids);
    assert_eq!(pids.len(), 4, "{pids:?}");
    assert!(pids.iter().all(|&pid| alive(pid)));
    Forked {
        app,
        id,
        pids,
        _scratch: scratch,
    }
}

#[tokio::test]
async fn cancel_kills_every_process_of_a_forking_command_before_it_answers() {
    let forked = forked(Duration::from_secs(10), Duration::from_millis(200)).await;
    let (status, job) = forked.app.cancel(&forked.id).await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["status"], "cancelled");
    assert_eq!(
        job["error"]["code"], "cancelled",
        "SIGKILL after kill_grace, within the cancel grace"
    );
    let survivors: Vec<_> = forked.pids.iter().filter(|&&pid| alive(pid)).collect();
    assert!(survivors.is_empty(), "alive after the cancel answered: {survivors:?}");
}

#[tokio::test]
async fn cancel_of_a_command_that_outlasts_the_grace_is_forced_and_kills_the_group() {
    let forked = forked(Duration::from_millis(300), Duration::from_secs(60)).await;
    let (status, job) = forked.app.cancel(&forked.id).await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["error"]["code"], "cancel_forced");
    // The engine drops the job, and with it sends SIGKILL to the group,
    // before it answers; the processes take a moment to die.
    assert_all_gone_eventually(&forked.pids).await;
}

#[tokio::test]
async fn shutdown_kills_the_process_group_of_a_running_command() {
    let mut forked = forked(Duration::from_secs(10), Duration::from_secs(5)).await;
    forked.app.stop().await;
    assert_all_gone_eventually(&forked.pids).await;
}

#[tokio::test]
async fn a_huge_line_without_end_is_cut_and_the_job_still_ends() {
    let scratch = Scratch::new();
    scratch.script(
        "flood.py",
        "import sys\nchunk = 'x' * 65536\nfor _ in range(320):\n    sys.stdout.write(chunk)\nsys.stdout.flush()\nsys.stderr.write('after the flood\\n')\nsys.exit(2)\n",
    );
    let app = serve_simple(
        r#"
        [kinds.flood]
        [kinds.flood.command]
        argv = ["python3", "flood.py"]
        "#,
        &scratch.dir,
    )
    .await;

    let job = app.create("flood", json!({})).await;
    let job = app.get_job_when_terminal(&id_of(&job)).await;
    assert_eq!(job["status"], "failed");
    let message = job["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("the command exited with status 2"), "{message}");
    assert!(
        message.ends_with("after the flood"),
        "{}",
        &message[message.len() - 100..]
    );
    assert!(
        message.len() < 4 * 1024,
        "20 MiB of output is quoted in {} bytes",
        message.len()
    );
}

#[tokio::test]
async fn a_grandchild_holding_stdout_does_not_hold_the_job() {
    let scratch = Scratch::new();
    scratch.script(
        "leaves.sh",
        "#!/bin/sh\nsleep 300 &\necho $! > \"$1\"\necho '{\"result\": \"done\"}'\nexit 0\n",
    );
    let app = serve_simple(
        r#"
        [kinds.leaves]
        params = { pids = { type = "string", required = true } }
        [kinds.leaves.command]
        argv = ["./leaves.sh", "{pids}"]
        "#,
        &scratch.dir,
    )
    .await;

    let pids = scratch.path("pids");
    let job = app.create("leaves", json!({ "pids": pids.to_str().unwrap() })).await;
    let job = app.get_job_when_terminal(&id_of(&job)).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["result"], "done");
    for pid in pids_in(&pids) {
        assert!(!alive(pid), "the grandchild {pid} outlived its job");
    }
}

/// The example kinds file, with the kind for examples/copy_verify.py.
const EXAMPLE_KINDS: &str = include_str!("../../examples/jobcast.toml");

#[tokio::test]
async fn the_copy_verify_example_copies_and_verifies_a_tree() {
    let scratch = Scratch::new();
    let source = scratch.path("source");
    std::fs::create_dir_all(source.join("photos/2025")).unwrap();
    std::fs::write(source.join("notes.txt"), "hello\n").unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|n| (n % 251) as u8).collect();
    std::fs::write(source.join("photos/2025/big.raw"), &big).unwrap();
    std::fs::write(source.join("photos/empty"), "").unwrap();
    let destination = scratch.path("backup");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let app = serve_simple(EXAMPLE_KINDS, &examples).await;

    let params = json!({ "source": source.to_str().unwrap(), "destination": destination.to_str().unwrap() });
    let job = app.create("copy_verify", params.clone()).await;
    let mut stream = app.subscribe(&id_of(&job)).await;
    let copying = until(&mut stream, "the copy stage", |job| job["stage"]["name"] == "copying").await;
    assert_eq!(copying["stage"]["unit"], "bytes");
    assert_eq!(copying["stage"]["total"], 3_000_006);
    let done = until(&mut stream, "the end", |job| job["status"] != "running").await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["result"]["files"], 3);
    assert_eq!(done["result"]["bytes"], 3_000_006);
    assert_eq!(
        done["stages"],
        json!([
            {"name": "copying", "weight": 0.7, "status": "done"},
            {"name": "verifying", "weight": 0.3, "status": "done"},
        ])
    );
    assert_eq!(std::fs::read(destination.join("photos/2025/big.raw")).unwrap(), big);
    assert_eq!(
        std::fs::read_to_string(destination.join("notes.txt")).unwrap(),
        "hello\n"
    );

    let again = app.create("copy_verify", params).await;
    let again = app.get_job_when_terminal(&id_of(&again)).await;
    assert_eq!(again["status"], "failed");
    assert_eq!(again["error"]["code"], "destination_exists");
}
