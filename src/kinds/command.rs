//! Command kinds: a job that runs a program declared in the kinds file
//! (`[kinds.NAME.command]`), reads its progress from what it prints, and
//! ends with its exit.
//!
//! This module owns the child process from spawn to the moment its process
//! group is empty: argv rendering (never through a shell), the progress
//! protocol on stdout or a dedicated pipe, the regex mode for programs that
//! cannot speak the protocol, the bounded tail of ordinary output, timeouts,
//! and cancellation that reaches every process in the group. The meaning of
//! a progress report is [`Reporter`]'s business; checking params against
//! their declarations is [`Params`]'; the TOML file itself is `file.rs`'s.
//!
//! Hand-written rather than taken from a crate: the line reader (lines split
//! on `\n` and `\r`, each capped, so a line without end cannot grow memory),
//! and the process-group bookkeeping on `libc` (tokio signals the child, not
//! its group, and cannot tell when a group is empty).

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::{sleep_until, Instant};

use super::params::Params;
use crate::jobs::context::JobContext;
use crate::jobs::kind::JobResult;
use crate::jobs::report::{ProgressReport, Reporter, StageDecl};
use crate::jobs::JobError;

/// The fd number at which a child in `progress = "fd"` mode finds its
/// progress pipe, also passed as `JOBCAST_PROGRESS_FD`.
const PROGRESS_FD: libc::c_int = 3;

/// Lines longer than this are cut; the rest up to the line's end is dropped.
/// Large enough for a protocol line carrying a sizeable `result`.
const MAX_LINE_BYTES: usize = 1 << 20;

/// A tail line is kept to at most this many bytes.
const TAIL_LINE_BYTES: usize = 1024;

/// Upper bound of `tail_lines`, so that a tail stays under about 1 MiB.
const MAX_TAIL_LINES: usize = 1000;

/// After the child exits, how long its output may stay open (held by a
/// process it started) before the rest of its group is killed.
const DRAIN: Duration = Duration::from_secs(2);

/// After the group is killed, how long to read what is left in the pipes.
const FINAL_DRAIN: Duration = Duration::from_millis(500);

/// How long to wait for a group to empty after SIGKILL.
const GROUP_EXIT_WAIT: Duration = Duration::from_secs(5);

/// How often to look whether a killed group is empty yet.
const GROUP_POLL: Duration = Duration::from_millis(5);

/// Invalid reports logged per job; later ones only go to the tail.
const MAX_LOGGED_INVALID_REPORTS: u32 = 10;

/// The keys of a protocol line: a [`ProgressReport`]'s, plus `result` and `error`.
const PROTOCOL_KEYS: [&str; 9] = [
    "stage", "current", "total", "unit", "message", "stages", "fraction", "result", "error",
];

/// The named groups a `progress_pattern` may use.
const PATTERN_GROUPS: [&str; 5] = ["current", "total", "percent", "stage", "message"];

/// The `[kinds.NAME.command]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    /// The program and its arguments, one element per argument. Elements
    /// after the first may hold `{param}` placeholders; `{{` and `}}` are
    /// literal braces.
    pub argv: Vec<String>,
    /// The child's working directory; relative paths are relative to the
    /// kinds file's directory, which is also the default.
    pub workdir: Option<PathBuf>,
    /// Variables added to the server's environment for the child.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// How long the command may run before it is stopped and the job fails
    /// with `timeout`; no limit when absent.
    #[serde(default, deserialize_with = "crate::config::optional_duration")]
    pub timeout: Option<Duration>,
    /// Where the child writes protocol lines.
    #[serde(default)]
    pub progress: ProgressSource,
    /// A regular expression that turns ordinary output lines into progress,
    /// with named groups among `current`, `total`, `percent`, `stage` and
    /// `message`.
    pub progress_pattern: Option<String>,
    /// How many lines of ordinary output a failed job's error quotes.
    #[serde(default = "default_tail_lines")]
    pub tail_lines: usize,
}

fn default_tail_lines() -> usize {
    20
}

/// Where protocol lines come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProgressSource {
    /// Protocol lines are mixed with ordinary output on stdout.
    #[default]
    Stdout,
    /// Protocol lines go to a pipe at fd 3 (`JOBCAST_PROGRESS_FD`); stdout
    /// is ordinary output.
    Fd,
    /// No protocol: every line is ordinary output (for programs whose output
    /// could look like protocol lines).
    None,
}

/// A command declaration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum CommandSpecError {
    #[error("argv is empty: it needs at least the program")]
    EmptyArgv,
    #[error("argv[0] is the program and cannot hold a placeholder: {0:?}")]
    ProgramFromParam(String),
    #[error("argv[{index}] {template:?}: {detail}")]
    Template {
        index: usize,
        template: String,
        detail: String,
    },
    #[error("argv[{index}] {template:?} uses {{{name}}}, which is not a declared param")]
    UnknownParam {
        index: usize,
        template: String,
        name: String,
    },
    #[error("progress_pattern {pattern:?}: {detail}")]
    Pattern { pattern: String, detail: String },
    #[error("env {name:?}: {detail}")]
    Env { name: String, detail: String },
    #[error("workdir {path:?}: {error}")]
    Workdir { path: PathBuf, error: io::Error },
    #[error("tail_lines is {0}; at most {MAX_TAIL_LINES}")]
    TailLines(usize),
}

/// One piece of an argv template.
#[derive(Clone, Debug, PartialEq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// An argv element, parsed once at load time.
#[derive(Clone, Debug, PartialEq)]
struct Template {
    segments: Vec<Segment>,
}

impl Template {
    fn parse(text: &str) -> Result<Self, String> {
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) if c.is_ascii_alphanumeric() || c == '_' => name.push(c),
                            Some(c) => return Err(format!("{c:?} in a placeholder (write {{{{ for a literal brace)")),
                            None => return Err("a placeholder is not closed with }".to_owned()),
                        }
                    }
                    if name.is_empty() {
                        return Err("an empty placeholder {}".to_owned());
                    }
                    if !literal.is_empty() {
                        segments.push(Segment::Literal(std::mem::take(&mut literal)));
                    }
                    segments.push(Segment::Param(name));
                }
                '}' => return Err("a lone } (write }} for a literal brace)".to_owned()),
                '\0' => return Err("a NUL character cannot be passed on".to_owned()),
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Ok(Template { segments })
    }

    fn params(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|segment| match segment {
            Segment::Param(name) => Some(name.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// The argument, or None when it names a param that is absent.
    fn render(&self, params: &Map<String, Value>) -> Option<String> {
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Param(name) => match params.get(name)? {
                    Value::Null => return None,
                    Value::String(text) => out.push_str(text),
                    other => out.push_str(&other.to_string()),
                },
            }
        }
        Some(out)
    }
}

/// A checked `progress_pattern`.
#[derive(Debug)]
struct ProgressPattern {
    regex: Regex,
}

/// What one matching line says.
#[derive(Debug, Default, PartialEq)]
struct PatternMatch {
    stage: Option<String>,
    current: Option<u64>,
    total: Option<u64>,
    percent: Option<f64>,
    message: Option<String>,
}

impl ProgressPattern {
    fn new(pattern: &str) -> Result<Self, CommandSpecError> {
        let invalid = |detail: String| CommandSpecError::Pattern {
            pattern: pattern.to_owned(),
            detail,
        };
        let regex = Regex::new(pattern).map_err(|error| invalid(error.to_string()))?;
        let names: Vec<&str> = regex.capture_names().flatten().collect();
        if let Some(unknown) = names.iter().find(|name| !PATTERN_GROUPS.contains(name)) {
            return Err(invalid(format!(
                "unknown group {unknown:?}; groups are named {}",
                PATTERN_GROUPS.join(", ")
            )));
        }
        if names.is_empty() {
            return Err(invalid(
                "it names no group; use (?<percent>…), (?<current>…), (?<total>…), (?<stage>…) or (?<message>…)"
                    .to_owned(),
            ));
        }
        let has = |name: &str| names.contains(&name);
        if has("percent") && (has("current") || has("total")) {
            return Err(invalid("percent and current/total cannot be used together".to_owned()));
        }
        if has("total") && !has("current") {
            return Err(invalid("total needs current".to_owned()));
        }
        Ok(ProgressPattern { regex })
    }

    /// What the line says, or None if it does not match or a number in it
    /// does not parse (then it is ordinary output).
    fn read(&self, line: &str) -> Option<PatternMatch> {
        let captures = self.regex.captures(line)?;
        let text = |name: &str| captures.name(name).map(|group| group.as_str().trim());
        let whole = |name: &str| -> Option<Option<u64>> {
            match text(name) {
                None => Some(None),
                Some(number) => number.parse().ok().map(Some),
            }
        };
        let percent = match text("percent") {
            None => None,
            Some(number) => {
                let percent: f64 = number.parse().ok()?;
                if !percent.is_finite() {
                    return None;
                }
                Some(percent.clamp(0.0, 100.0))
            }
        };
        Some(PatternMatch {
            stage: text("stage").filter(|name| !name.is_empty()).map(str::to_owned),
            current: whole("current")?,
            total: whole("total")?,
            percent,
            message: text("message").filter(|message| !message.is_empty()).map(str::to_owned),
        })
    }
}

/// A command kind, checked and ready to run jobs.
#[derive(Debug)]
pub struct CommandKind {
    program: PathBuf,
    args: Vec<Template>,
    workdir: PathBuf,
    env: BTreeMap<String, String>,
    timeout: Option<Duration>,
    progress: ProgressSource,
    pattern: Option<ProgressPattern>,
    tail_lines: usize,
    stages: Vec<StageDecl>,
    kill_grace: Duration,
}

impl CommandKind {
    /// Checks the spec at load time: every placeholder names a declared param
    /// (`params.contains`), the regex compiles and has usable groups, argv is
    /// non-empty, workdir resolved against base_dir.
    pub fn new(
        spec: CommandSpec,
        params: &Params,
        stages: Vec<StageDecl>,
        base_dir: &Path,
        kill_grace: Duration,
    ) -> Result<Self, CommandSpecError> {
        let base_dir = std::path::absolute(base_dir).map_err(|error| CommandSpecError::Workdir {
            path: base_dir.to_owned(),
            error,
        })?;
        let mut argv = spec.argv.into_iter();
        let program = argv.next().ok_or(CommandSpecError::EmptyArgv)?;
        let parsed = Template::parse(&program).map_err(|detail| CommandSpecError::Template {
            index: 0,
            template: program.clone(),
            detail,
        })?;
        if parsed.params().next().is_some() {
            return Err(CommandSpecError::ProgramFromParam(program));
        }
        let program = parsed.render(&Map::new()).unwrap_or_default();
        if program.is_empty() {
            return Err(CommandSpecError::EmptyArgv);
        }
        // A program named with a path is found relative to the kinds file,
        // not to the child's working directory (which std leaves ambiguous).
        let program = if program.contains('/') {
            base_dir.join(program)
        } else {
            PathBuf::from(program)
        };
        let mut args = Vec::new();
        for (index, template) in argv.enumerate() {
            let index = index + 1;
            let parsed = Template::parse(&template).map_err(|detail| CommandSpecError::Template {
                index,
                template: template.clone(),
                detail,
            })?;
            if let Some(name) = parsed.params().find(|name| !params.contains(name)) {
                return Err(CommandSpecError::UnknownParam {
                    index,
                    name: name.to_owned(),
                    template,
                });
            }
            args.push(parsed);
        }
        for (name, value) in &spec.env {
            let invalid = |detail: &str| CommandSpecError::Env {
                name: name.clone(),
                detail: detail.to_owned(),
            };
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(invalid("a variable name is non-empty, without `=` or NUL"));
            }
            if value.contains('\0') {
                return Err(invalid("a value cannot hold a NUL character"));
            }
            if name == "JOBCAST_PROGRESS_FD" || name == "JOBCAST_JOB_ID" {
                return Err(invalid("jobcast sets this variable itself"));
            }
        }
        if spec.tail_lines > MAX_TAIL_LINES {
            return Err(CommandSpecError::TailLines(spec.tail_lines));
        }
        let pattern = spec.progress_pattern.as_deref().map(ProgressPattern::new).transpose()?;
        let workdir = match spec.workdir {
            Some(workdir) => base_dir.join(workdir),
            None => base_dir,
        };
        Ok(CommandKind {
            program,
            args,
            workdir,
            env: spec.env,
            timeout: spec.timeout,
            progress: spec.progress,
            pattern,
            tail_lines: spec.tail_lines,
            stages,
            kill_grace,
        })
    }

    /// The arguments after the program: an element naming an absent
    /// optional param is left out.
    fn render_args(&self, params: &Map<String, Value>) -> Vec<String> {
        self.args
            .iter()
            .filter_map(|template| template.render(params))
            .collect()
    }

    /// Runs one job: renders argv from checked params, spawns, reports,
    /// decides the outcome.
    #[tracing::instrument(skip_all, fields(program = %self.program.display()))]
    pub async fn run(self: Arc<Self>, ctx: JobContext, params: Map<String, Value>) -> JobResult {
        let spawn_failed = |error: io::Error| {
            JobError::new(
                "spawn_failed",
                format!(
                    "cannot start {} in {}: {error}",
                    self.program.display(),
                    self.workdir.display()
                ),
            )
        };
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(self.render_args(&params))
            .current_dir(&self.workdir)
            .envs(&self.env)
            .env("JOBCAST_JOB_ID", ctx.id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let progress_pipe = match self.progress {
            ProgressSource::Fd => {
                command.env("JOBCAST_PROGRESS_FD", PROGRESS_FD.to_string());
                Some(progress_pipe().map_err(spawn_failed)?)
            }
            ProgressSource::Stdout | ProgressSource::None => None,
        };
        let progress_write_fd = progress_pipe.as_ref().map(|(_, write)| write.as_raw_fd());
        // SAFETY: the closure runs in the forked child between fork and
        // exec, where only async-signal-safe calls are allowed; dup2 and
        // close_range are, and they touch nothing but fd numbers. The write
        // end is close-on-exec (and numbered above 2, so std's stdio setup
        // cannot overwrite it): only this child gets it, at PROGRESS_FD,
        // which dup2 leaves open across exec.
        unsafe {
            command.pre_exec(move || {
                let mut first_private = PROGRESS_FD;
                if let Some(write_fd) = progress_write_fd {
                    if libc::dup2(write_fd, PROGRESS_FD) == -1 {
                        return Err(io::Error::last_os_error());
                    }
                    first_private = PROGRESS_FD + 1;
                }
                close_inherited_on_exec(first_private);
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(spawn_failed)?;
        // The parent's copy of the write end goes now, so that the pipe ends
        // when the child's processes have closed theirs.
        let progress_fd = match progress_pipe {
            Some((read, write)) => {
                drop(write);
                Some(tokio::net::unix::pipe::Receiver::from_owned_fd(read).map_err(spawn_failed)?)
            }
            None => None,
        };
        let pid = child.id().expect("a child that was just spawned has not been reaped");
        // The child leads its own process group (process_group(0)), so its
        // pid is the group's id; the guard kills the group if this future is
        // dropped before the group is known to be empty.
        let mut group = Group::new(pid as libc::pid_t);
        tracing::info!(pid, "command started");

        let mut outputs = Outputs {
            stdout: Lines::new(child.stdout.take().expect("stdout is piped")),
            stderr: Lines::new(child.stderr.take().expect("stderr is piped")),
            fd: progress_fd.map(Lines::new),
        };
        let mut session = Session::new(&self, Reporter::new(ctx.clone()));
        if !self.stages.is_empty() {
            session.declare_stages(&self.stages);
        }

        let deadline = self.timeout.map(|timeout| Instant::now() + timeout);
        let mut stop: Option<Stop> = None;
        let mut kill_at: Option<Instant> = None;
        let mut exit: Option<io::Result<ExitStatus>> = None;
        let mut drain_until: Option<Instant> = None;
        loop {
            if exit.is_some() && outputs.all_done() {
                break;
            }
            tokio::select! {
                biased;
                status = child.wait(), if exit.is_none() => {
                    exit = Some(status);
                    if stop.is_some() {
                        // Told to stop: survivors are killed at once.
                        break;
                    }
                    drain_until = Some(Instant::now() + DRAIN);
                }
                _ = ctx.cancelled(), if stop.is_none() => {
                    if exit.is_some() {
                        // The command had already ended; stop waiting for
                        // its leftovers, and keep its outcome.
                        break;
                    }
                    tracing::info!("cancel requested: sending SIGTERM to the process group");
                    stop = Some(Stop::Cancel);
                    group.signal(libc::SIGTERM);
                    kill_at = Some(Instant::now() + self.kill_grace);
                }
                _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() && stop.is_none() && exit.is_none() => {
                    tracing::info!("timeout: sending SIGTERM to the process group");
                    stop = Some(Stop::Timeout);
                    group.signal(libc::SIGTERM);
                    kill_at = Some(Instant::now() + self.kill_grace);
                }
                _ = sleep_until(kill_at.unwrap_or_else(Instant::now)), if kill_at.is_some() && exit.is_none() => {
                    tracing::info!("still running after the grace period: sending SIGKILL to the process group");
                    group.signal(libc::SIGKILL);
                    kill_at = None;
                }
                _ = sleep_until(drain_until.unwrap_or_else(Instant::now)), if drain_until.is_some() => {
                    tracing::warn!("the command exited but its output is still open; killing its process group");
                    break;
                }
                line = outputs.next(), if !outputs.all_done() => {
                    if let Some((source, line)) = line {
                        session.line(source, &line);
                    }
                }
            }
        }
        group.kill_and_wait().await;
        // What the killed processes left in the pipes still counts.
        let final_deadline = Instant::now() + FINAL_DRAIN;
        while !outputs.all_done() {
            tokio::select! {
                _ = sleep_until(final_deadline) => break,
                line = outputs.next() => match line {
                    Some((source, line)) => session.line(source, &line),
                    None => break,
                }
            }
        }
        let exit = exit.expect("the loop ends only after the child exited");
        tracing::info!(exit = ?exit, stop = ?stop, "command ended");
        session.outcome(exit, stop)
    }
}

/// Why jobcast stopped the command.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Stop {
    Cancel,
    Timeout,
}

/// Marks every fd from `first` up close-on-exec, so that the program does
/// not inherit what the server itself inherited without that flag (a
/// supervisor's sockets, a terminal's descriptors). Best effort: kernels
/// before 5.11 lack the call, and the fds then stay as they were.
/// Async-signal-safe: it is called between fork and exec.
fn close_inherited_on_exec(first: libc::c_int) {
    #[cfg(target_os = "linux")]
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on fds.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
    #[cfg(not(target_os = "linux"))]
    let _ = first;
}

/// A pipe whose ends are both close-on-exec, the write end numbered above
/// the stdio fds. Not tokio's pipe: that one is non-blocking, a flag the
/// child would share through its copy.
fn progress_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds has room for the two fds pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are open fds that nothing else owns.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: F_DUPFD_CLOEXEC only reads the fd, which `write` keeps open.
    let high = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    if high == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fcntl returned a new open fd that nothing else owns.
    let write = unsafe { OwnedFd::from_raw_fd(high) };
    Ok((read, write))
}

/// The child's process group, killed with SIGKILL when dropped unless it is
/// known to be empty: a job future dropped by the engine (a forced cancel,
/// shutdown) leaves no process behind.
struct Group {
    pgid: libc::pid_t,
    empty: bool,
}

impl Group {
    fn new(pgid: libc::pid_t) -> Self {
        Group { pgid, empty: false }
    }

    fn signal(&self, signal: libc::c_int) {
        if self.empty {
            return;
        }
        // SAFETY: killpg has no memory-safety requirements.
        if unsafe { libc::killpg(self.pgid, signal) } == -1 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::ESRCH) {
                tracing::warn!(pgid = self.pgid, signal, %error, "cannot signal the process group");
            }
        }
    }

    /// Kills whatever is left in the group and waits, bounded, until no
    /// member is alive (zombies waiting for their parent count as gone).
    async fn kill_and_wait(&mut self) {
        if !group_alive(self.pgid) {
            self.empty = true;
            return;
        }
        tracing::debug!(pgid = self.pgid, "killing what is left of the process group");
        self.signal(libc::SIGKILL);
        let deadline = Instant::now() + GROUP_EXIT_WAIT;
        while group_alive(self.pgid) {
            if Instant::now() >= deadline {
                tracing::warn!(pgid = self.pgid, "processes of the group survive SIGKILL");
                return;
            }
            tokio::time::sleep(GROUP_POLL).await;
        }
        self.empty = true;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.empty {
            self.signal(libc::SIGKILL);
        }
    }
}

/// Whether a process of the group is alive (not a zombie).
fn group_alive(pgid: libc::pid_t) -> bool {
    // SAFETY: signal 0 checks for existence and permission only.
    if unsafe { libc::killpg(pgid, 0) } == -1 {
        return io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
    }
    live_member_in_proc(pgid).unwrap_or(true)
}

/// On Linux, whether /proc shows a member of the group that is not a
/// zombie: killpg(…, 0) also finds zombies, which an init that does not
/// reap (as in some containers) may keep forever.
#[cfg(target_os = "linux")]
fn live_member_in_proc(pgid: libc::pid_t) -> Option<bool> {
    for entry in std::fs::read_dir("/proc").ok()? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ...": comm may hold anything, so read
        // from the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let group = fields.nth(1).and_then(|pgrp| pgrp.parse::<libc::pid_t>().ok());
        if group == Some(pgid) && !matches!(state, Some("Z" | "X")) {
            return Some(true);
        }
    }
    Some(false)
}

#[cfg(not(target_os = "linux"))]
fn live_member_in_proc(_pgid: libc::pid_t) -> Option<bool> {
    None
}

/// Which pipe a line came from.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Source {
    Stdout,
    Stderr,
    ProgressFd,
}

/// A line as read: its bytes without the line end, and whether it was cut
/// at [`MAX_LINE_BYTES`].
#[derive(Debug, PartialEq)]
struct Line {
    bytes: Vec<u8>,
    truncated: bool,
}

/// Reads lines split on `\n` and `\r`, skipping empty ones. Memory stays
/// bounded: a line longer than [`MAX_LINE_BYTES`] is returned cut, and the
/// rest of it is read and dropped.
struct Lines<R> {
    reader: R,
    buf: Vec<u8>,
    chunk: Box<[u8]>,
    /// Dropping the rest of a line that was returned cut.
    discarding: bool,
    eof: bool,
    done: bool,
}

impl<R: AsyncRead + Unpin> Lines<R> {
    fn new(reader: R) -> Self {
        Lines {
            reader,
            buf: Vec::new(),
            chunk: vec![0; 8192].into_boxed_slice(),
            discarding: false,
            eof: false,
            done: false,
        }
    }

    /// The next line, or None at the end. Cancel-safe: the only await is a
    /// read, and what it read is stored before the next one.
    async fn next_line(&mut self) -> io::Result<Option<Line>> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n' || b == b'\r') {
                let mut bytes: Vec<u8> = self.buf.drain(..=end).collect();
                bytes.pop();
                if std::mem::take(&mut self.discarding) || bytes.is_empty() {
                    continue;
                }
                return Ok(Some(Line {
                    bytes,
                    truncated: false,
                }));
            }
            if self.discarding {
                self.buf.clear();
            } else if self.buf.len() >= MAX_LINE_BYTES {
                let bytes = self.buf.drain(..MAX_LINE_BYTES).collect();
                self.discarding = true;
                return Ok(Some(Line { bytes, truncated: true }));
            }
            if self.eof {
                self.done = true;
                if self.discarding || self.buf.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(Line {
                    bytes: std::mem::take(&mut self.buf),
                    truncated: false,
                }));
            }
            match self.reader.read(&mut self.chunk).await {
                Ok(0) => self.eof = true,
                Ok(read) => self.buf.extend_from_slice(&self.chunk[..read]),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    self.done = true;
                    return Err(error);
                }
            }
        }
    }
}

/// The child's output pipes, read together.
struct Outputs {
    stdout: Lines<tokio::process::ChildStdout>,
    stderr: Lines<tokio::process::ChildStderr>,
    fd: Option<Lines<tokio::net::unix::pipe::Receiver>>,
}

impl Outputs {
    fn all_done(&self) -> bool {
        self.stdout.done && self.stderr.done && self.fd.as_ref().map_or(true, |fd| fd.done)
    }

    /// The next line from any pipe, or None once every pipe has ended.
    /// Cancel-safe, as each reader is.
    async fn next(&mut self) -> Option<(Source, Line)> {
        loop {
            let fd_open = self.fd.as_ref().is_some_and(|fd| !fd.done);
            let (source, read) = tokio::select! {
                read = self.stdout.next_line(), if !self.stdout.done => (Source::Stdout, read),
                read = self.stderr.next_line(), if !self.stderr.done => (Source::Stderr, read),
                read = async { self.fd.as_mut().expect("guarded by fd_open").next_line().await }, if fd_open => {
                    (Source::ProgressFd, read)
                }
                else => return None,
            };
            match read {
                Ok(Some(line)) => return Some((source, line)),
                Ok(None) => {}
                Err(error) => tracing::warn!(?source, %error, "cannot read the command's output"),
            }
        }
    }
}

/// A protocol line, taken apart.
#[derive(Debug)]
struct ProtocolLine {
    report: Result<ProgressReport, String>,
    result: Option<Value>,
    error: Option<Result<JobError, String>>,
}

/// The `error` of a protocol line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportedError {
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    retryable: bool,
}

/// The line as a protocol line, or None if it is ordinary output: a
/// protocol line is a JSON object with at least one key, every key a
/// protocol key.
fn parse_protocol(text: &str) -> Option<ProtocolLine> {
    let text = text.trim();
    if !text.starts_with('{') {
        return None;
    }
    let Ok(Value::Object(mut fields)) = serde_json::from_str::<Value>(text) else {
        return None;
    };
    if fields.is_empty() || !fields.keys().all(|key| PROTOCOL_KEYS.contains(&key.as_str())) {
        return None;
    }
    let result = fields.remove("result");
    let error = fields.remove("error").map(|error| {
        let error: ReportedError = serde_json::from_value(error).map_err(|error| format!("error: {error}"))?;
        if error.code.is_empty() || error.code.len() > 64 {
            return Err("error: a code is 1 to 64 characters".to_owned());
        }
        if error.code == JobError::CANCELLED || error.code == "cancel_forced" {
            return Err(format!("error: code {:?} is reserved for cancellation", error.code));
        }
        Ok(JobError::new(error.code, error.message).retryable(error.retryable))
    });
    let report = serde_json::from_value(Value::Object(fields)).map_err(|error| error.to_string());
    Some(ProtocolLine { report, result, error })
}

/// The last lines of ordinary output, each cut to [`TAIL_LINE_BYTES`].
struct Tail {
    lines: VecDeque<String>,
    capacity: usize,
}

impl Tail {
    fn new(capacity: usize) -> Self {
        Tail {
            lines: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    fn push(&mut self, line: &str, truncated: bool) {
        if self.capacity == 0 {
            return;
        }
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        let mut kept = String::from(cut(line, TAIL_LINE_BYTES));
        if truncated || kept.len() < line.len() {
            kept.push('…');
        }
        self.lines.push_back(kept);
    }

    /// The tail as a suffix for an error message (empty without output).
    fn suffix(&self) -> String {
        if self.lines.is_empty() {
            return String::new();
        }
        let mut suffix = format!("; last {} lines of output:", self.lines.len());
        for line in &self.lines {
            suffix.push('\n');
            suffix.push_str(line);
        }
        suffix
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a
/// character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// What one run has seen of its command's output.
struct Session<'a> {
    kind: &'a CommandKind,
    reporter: Reporter,
    tail: Tail,
    result: Option<Value>,
    error: Option<JobError>,
    /// Whether the job has stages (the kind's or reported ones): decides
    /// what a `percent` match sets.
    has_stages: bool,
    invalid_reports: u32,
}

impl<'a> Session<'a> {
    fn new(kind: &'a CommandKind, reporter: Reporter) -> Self {
        Session {
            kind,
            reporter,
            tail: Tail::new(kind.tail_lines),
            result: None,
            error: None,
            has_stages: false,
            invalid_reports: 0,
        }
    }

    fn declare_stages(&mut self, stages: &[StageDecl]) {
        match self.reporter.declare_and_start(stages) {
            Ok(()) => self.has_stages = true,
            Err(error) => self.invalid(&format!("the kind's stages: {error}")),
        }
    }

    fn line(&mut self, source: Source, line: &Line) {
        let text = String::from_utf8_lossy(&line.bytes);
        match source {
            Source::ProgressFd => match parse_protocol(&text).filter(|_| !line.truncated) {
                Some(protocol) => self.protocol(protocol),
                None => self.invalid(&format!("not a progress report: {}", cut(&text, 200))),
            },
            Source::Stdout if self.kind.progress == ProgressSource::Stdout && !line.truncated => {
                match parse_protocol(&text) {
                    Some(protocol) => self.protocol(protocol),
                    None => self.ordinary(&text, line.truncated),
                }
            }
            _ => self.ordinary(&text, line.truncated),
        }
    }

    fn protocol(&mut self, line: ProtocolLine) {
        if let Some(result) = line.result {
            self.result = Some(result);
        }
        match line.error {
            Some(Ok(error)) => self.error = Some(error),
            Some(Err(problem)) => self.invalid(&problem),
            None => {}
        }
        match line.report {
            Ok(report) => self.apply(&report),
            Err(problem) => self.invalid(&problem),
        }
    }

    fn apply(&mut self, report: &ProgressReport) {
        match self.reporter.apply(report) {
            Ok(()) => {
                if report.stages.as_ref().is_some_and(|stages| !stages.is_empty()) {
                    self.has_stages = true;
                }
            }
            Err(error) => self.invalid(&error.message),
        }
    }

    fn ordinary(&mut self, text: &str, truncated: bool) {
        if let Some(found) = self.kind.pattern.as_ref().and_then(|pattern| pattern.read(text)) {
            self.matched(found);
            return;
        }
        self.tail.push(text, truncated);
    }

    /// Applies what a `progress_pattern` match says.
    fn matched(&mut self, found: PatternMatch) {
        let mut report = ProgressReport {
            stage: found.stage,
            message: found.message,
            ..ProgressReport::default()
        };
        if let Some(percent) = found.percent {
            if !self.has_stages {
                report.fraction = Some(percent / 100.0);
            } else {
                report.current = Some(percent.round() as u64);
                report.total = Some(100);
                report.unit = Some("%".to_owned());
            }
        } else if !self.has_stages && report.stage.is_none() {
            if let (Some(current), Some(total)) = (found.current, found.total) {
                if total > 0 {
                    report.fraction = Some((current as f64 / total as f64).min(1.0));
                }
            }
        } else {
            report.current = found.current;
            report.total = found.total;
        }
        self.apply(&report);
    }

    /// An invalid report does not stop the job: it is noted in the tail
    /// and the log.
    fn invalid(&mut self, problem: &str) {
        self.invalid_reports += 1;
        if self.invalid_reports <= MAX_LOGGED_INVALID_REPORTS {
            tracing::warn!(problem, "invalid progress report from a command");
        } else if self.invalid_reports == MAX_LOGGED_INVALID_REPORTS + 1 {
            tracing::warn!("more invalid progress reports from this command; no longer logging them");
        }
        self.tail
            .push(&format!("[jobcast] invalid progress report: {problem}"), false);
    }

    /// The job's outcome from how the command ended.
    fn outcome(mut self, exit: io::Result<ExitStatus>, stop: Option<Stop>) -> JobResult {
        let tail = self.tail.suffix();
        match stop {
            Some(Stop::Cancel) => return Err(JobError::cancelled()),
            Some(Stop::Timeout) => {
                let limit = self.kind.timeout.unwrap_or_default();
                return Err(JobError::new(
                    "timeout",
                    format!(
                        "the command ran longer than its timeout of {}{tail}",
                        humantime::format_duration(limit)
                    ),
                )
                .retryable(true));
            }
            None => {}
        }
        if let Some(mut error) = self.error.take() {
            error.message.push_str(&tail);
            return Err(error);
        }
        let status = match exit {
            Ok(status) => status,
            Err(error) => {
                return Err(JobError::new(
                    "exit_status",
                    format!("cannot tell how the command ended: {error}{tail}"),
                ))
            }
        };
        if status.success() {
            return Ok(self.result.take().unwrap_or(Value::Null));
        }
        let how = match (status.code(), status.signal()) {
            (Some(code), _) => format!("the command exited with status {code}"),
            (None, Some(signal)) => format!("the command was killed by signal {}", signal_name(signal)),
            (None, None) => format!("the command ended with {status}"),
        };
        Err(JobError::new("exit_status", format!("{how}{tail}")))
    }
}

/// `SIGKILL (9)`, or the bare number for a signal not listed.
fn signal_name(signal: libc::c_int) -> String {
    const NAMES: [(libc::c_int, &str); 15] = [
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGQUIT, "SIGQUIT"),
        (libc::SIGILL, "SIGILL"),
        (libc::SIGTRAP, "SIGTRAP"),
        (libc::SIGABRT, "SIGABRT"),
        (libc::SIGBUS, "SIGBUS"),
        (libc::SIGFPE, "SIGFPE"),
        (libc::SIGKILL, "SIGKILL"),
        (libc::SIGUSR1, "SIGUSR1"),
        (libc::SIGSEGV, "SIGSEGV"),
        (libc::SIGUSR2, "SIGUSR2"),
        (libc::SIGPIPE, "SIGPIPE"),
        (libc::SIGALRM, "SIGALRM"),
        (libc::SIGTERM, "SIGTERM"),
    ];
    match NAMES.iter().find(|(number, _)| *number == signal) {
        Some((_, name)) => format!("{name} ({signal})"),
        None => format!("{signal}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(text: &str) -> Params {
        let decls = toml::from_str(text).unwrap();
        Params::new(decls).unwrap()
    }

    fn spec(text: &str) -> CommandSpec {
        toml::from_str(text).unwrap()
    }

    fn kind(spec_text: &str, params_text: &str) -> Result<CommandKind, CommandSpecError> {
        CommandKind::new(
            spec(spec_text),
            &params(params_text),
            Vec::new(),
            Path::new("/srv/kinds"),
            Duration::from_secs(1),
        )
    }

    #[test]
    fn placeholders_are_filled_inside_one_argument_each() {
        let kind = kind(
            r#"argv = ["tool", "--level={level}", "{src}", "{{literal}}", "--dry-run={dry}", "--opt={opt}"]"#,
            r#"
            level = { type = "integer" }
            src = { type = "string" }
            dry = { type = "boolean" }
            opt = { type = "string" }
            "#,
        )
        .unwrap();
        let params = json!({"level": 3, "src": "a b; rm -rf /tmp/x", "dry": false});
        assert_eq!(
            kind.render_args(params.as_object().unwrap()),
            ["--level=3", "a b; rm -rf /tmp/x", "{literal}", "--dry-run=false"]
        );
        assert_eq!(kind.program, PathBuf::from("tool"));
        assert_eq!(kind.workdir, PathBuf::from("/srv/kinds"));
    }

    #[test]
    fn relative_paths_are_relative_to_the_kinds_file() {
        let kind = kind(
            r#"argv = ["./bin/run.sh"]
workdir = "data""#,
            "",
        )
        .unwrap();
        assert_eq!(kind.program, PathBuf::from("/srv/kinds/./bin/run.sh"));
        assert_eq!(kind.workdir, PathBuf::from("/srv/kinds/data"));
    }

    #[test]
    fn declarations_that_cannot_work_are_refused() {
        let declared = r#"name = { type = "string" }"#;
        for text in [
            r#"argv = []"#,
            r#"argv = ["{name}"]"#,
            r#"argv = ["tool", "{other}"]"#,
            r#"argv = ["tool", "{name"]"#,
            r#"argv = ["tool", "name}"]"#,
            r#"argv = ["tool", "{}"]"#,
            r#"argv = ["tool", "{na me}"]"#,
            r#"argv = ["tool"]
progress_pattern = "(\\d+)%""#,
            r#"argv = ["tool"]
progress_pattern = "(?<pct>\\d+)%""#,
            r#"argv = ["tool"]
progress_pattern = "(?<percent>\\d+)% (?<current>\\d+)""#,
            r#"argv = ["tool"]
progress_pattern = "of (?<total>\\d+)""#,
            r#"argv = ["tool"]
progress_pattern = '(?<percent>\d+'"#,
            r#"argv = ["tool"]
env = { "A=B" = "x" }"#,
            r#"argv = ["tool"]
tail_lines = 100000"#,
        ] {
            assert!(kind(text, declared).is_err(), "{text} was accepted");
        }
        assert!(toml::from_str::<CommandSpec>(
            r#"argv = ["tool"]
shell = true"#
        )
        .is_err());
        assert!(toml::from_str::<CommandSpec>(
            r#"argv = ["tool"]
progress = "stderr""#
        )
        .is_err());
    }

    #[test]
    fn timeouts_read_as_people_write_them() {
        assert_eq!(
            spec(
                r#"argv = ["tool"]
timeout = "90s""#
            )
            .timeout,
            Some(Duration::from_secs(90))
        );
        assert_eq!(spec(r#"argv = ["tool"]"#).timeout, None);
        assert_eq!(spec(r#"argv = ["tool"]"#).tail_lines, 20);
    }

    #[test]
    fn only_objects_of_protocol_keys_are_protocol_lines() {
        for ordinary in [
            "hello",
            "{not json",
            "[1, 2]",
            "{}",
            r#"{"level": "info", "message": "structured log"}"#,
            "42",
        ] {
            assert!(parse_protocol(ordinary).is_none(), "{ordinary} counted as protocol");
        }
        let line = parse_protocol(r#" {"stage": "copy", "current": 3, "result": {"ok": true}} "#).unwrap();
        assert_eq!(line.report.unwrap().current, Some(3));
        assert_eq!(line.result, Some(json!({"ok": true})));
        let line = parse_protocol(r#"{"current": "three"}"#).unwrap();
        assert!(line.report.is_err());
        let line =
            parse_protocol(r#"{"error": {"code": "disk_full", "message": "no space", "retryable": true}}"#).unwrap();
        assert_eq!(
            line.error.unwrap().unwrap(),
            JobError::new("disk_full", "no space").retryable(true)
        );
        let line = parse_protocol(r#"{"error": {"code": "cancelled"}}"#).unwrap();
        assert!(line.error.unwrap().is_err());
    }

    #[test]
    fn patterns_read_percentages_and_counts() {
        let percent = ProgressPattern::new(r"(?<percent>\d+(?:\.\d+)?)%").unwrap();
        assert_eq!(percent.read("downloading  45.5% done").unwrap().percent, Some(45.5));
        assert_eq!(percent.read("no number here"), None);
        let counts = ProgressPattern::new(r"^\[(?<current>\d+)/(?<total>\d+)\] (?<message>.*)$").unwrap();
        assert_eq!(
            counts.read("[12/100] building foo").unwrap(),
            PatternMatch {
                current: Some(12),
                total: Some(100),
                message: Some("building foo".to_owned()),
                ..PatternMatch::default()
            }
        );
        assert_eq!(counts.read("[99999999999999999999999/1] too big"), None);
    }

    #[tokio::test]
    async fn lines_split_on_both_line_ends_and_stay_bounded() {
        let mut input = b"one\r\ntwo\rthree\n\n".to_vec();
        input.extend(vec![b'x'; MAX_LINE_BYTES * 3]);
        input.extend(b"\nlast");
        let mut lines = Lines::new(input.as_slice());
        let mut seen = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            assert!(lines.buf.capacity() <= MAX_LINE_BYTES * 2, "the buffer stays bounded");
            seen.push((
                line.bytes.len(),
                line.truncated,
                String::from_utf8_lossy(&line.bytes[..line.bytes.len().min(5)]).into_owned(),
            ));
        }
        assert_eq!(
            seen,
            [
                (3, false, "one".to_owned()),
                (3, false, "two".to_owned()),
                (5, false, "three".to_owned()),
                (MAX_LINE_BYTES, true, "xxxxx".to_owned()),
                (4, false, "last".to_owned()),
            ]
        );
    }

    #[test]
    fn the_tail_keeps_the_last_lines_cut_short() {
        let mut tail = Tail::new(2);
        tail.push("first", false);
        tail.push("second", false);
        tail.push(&"é".repeat(1000), false);
        assert_eq!(tail.lines.len(), 2);
        assert_eq!(tail.lines[0], "second");
        assert!(tail.lines[1].len() <= TAIL_LINE_BYTES + '…'.len_utf8());
        assert!(tail.lines[1].ends_with('…'));
        assert!(tail.suffix().starts_with("; last 2 lines of output:\nsecond\n"));
    }

    #[test]
    fn signals_are_named() {
        assert_eq!(signal_name(libc::SIGKILL), "SIGKILL (9)");
        assert_eq!(signal_name(1000), "1000");
    }
}
