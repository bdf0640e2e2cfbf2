//! What one run makes of its command: each line from `output` becomes a
//! protocol report, a `progress_pattern` match or a tail line, applied to
//! the job through its [`Reporter`]; and when the command has ended, the
//! job's outcome from its exit, its reported error or result, and why
//! jobcast stopped it. Reading the lines is `output`'s business, parsing
//! them `protocol`'s and `pattern`'s, and the loop that feeds them in
//! `run`'s.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use serde_json::Value;

use super::output::{Line, Source};
use super::pattern::PatternMatch;
use super::protocol::{parse_protocol, ProtocolLine};
use super::run::Stop;
use super::tail::{cut, Tail};
use super::{CommandKind, ProgressSource};
use crate::jobs::kind::JobResult;
use crate::jobs::report::{ProgressReport, Reporter, StageDecl};
use crate::jobs::JobError;

/// Invalid reports logged per job; later ones only go to the tail.
const MAX_LOGGED_INVALID_REPORTS: u32 = 10;

/// What one run has seen of its command's output.
pub(super) struct Session<'a> {
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
    pub(super) fn new(kind: &'a CommandKind, reporter: Reporter) -> Self {
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

    pub(super) fn declare_stages(&mut self, stages: &[StageDecl]) {
        match self.reporter.declare_and_start(stages) {
            Ok(()) => self.has_stages = true,
            Err(error) => self.invalid(&format!("the kind's stages: {error}")),
        }
    }

    pub(super) fn line(&mut self, source: Source, line: &Line) {
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
    pub(super) fn outcome(mut self, exit: io::Result<ExitStatus>, stop: Option<Stop>) -> JobResult {
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

    #[test]
    fn signals_are_named() {
        assert_eq!(signal_name(libc::SIGKILL), "SIGKILL (9)");
        assert_eq!(signal_name(1000), "1000");
    }
}
