//! The `jobcast` command line: with no subcommand it is the server (every
//! flag of [`Config`]), and `watch`, `submit` and `retry` make it a terminal
//! client of a running server.
//!
//! This module owns the arguments, their `--help` text and the exit codes;
//! [`client`] talks HTTP and follows event streams, [`display`] draws bars
//! or plain lines, [`watch`] ties them together with Ctrl-C handling. The
//! server itself is left to [`crate::run`], which `main.rs` calls.

pub mod client;
pub mod display;
pub mod watch;

use std::ffi::OsStr;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use reqwest::Url;
use serde_json::Value;

use crate::config::Config;
use crate::jobs::JobStatus;

/// The exit codes of `submit` and `retry`, as `--help` states them.
const EXIT_CODES: &str = "\
Exit status:
  0    the job completed (without --watch: it was accepted)
  1    the job failed
  2    the job was cancelled
  3    client error: bad arguments, unknown job, rejected params or labels, a job
       that cannot be retried, server unreachable
  130  interrupted with Ctrl-C and detached; the job keeps running";

/// The exit codes of `watch`, which may follow several jobs.
const WATCH_EXIT_CODES: &str = "\
With --label, every job that has all the labels is followed, the ones that
already ended included, one line per state prefixed with the job's id, until
each has ended; the jobs' final lines follow as they end.

Exit status:
  0    the job completed (with --label: every job completed)
  1    the job failed (with --label: a job failed)
  2    the job was cancelled (with --label: a job was cancelled, none failed)
  3    client error: bad arguments, unknown job, no job with the labels, server
       unreachable
  130  interrupted with Ctrl-C and detached; the jobs keep running";

/// jobcast: runs long jobs and streams their progress over Server-Sent Events.
#[derive(Debug, Parser)]
#[command(
    name = "jobcast",
    version,
    about,
    long_about = None,
    args_conflicts_with_subcommands = true,
    after_help = "With no command, jobcast runs the server with the options above.\n\
                  `jobcast help watch`, `jobcast help submit` and `jobcast help retry` describe the client \
                  commands and their exit codes."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub server: Config,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Follow a job's progress until it ends (a bar on a terminal, one line
    /// per state otherwise), or with --label every job that has the labels.
    #[command(after_help = WATCH_EXIT_CODES)]
    Watch(WatchArgs),
    /// Start a job and print its id; with --watch, follow it as `watch` does.
    #[command(after_help = EXIT_CODES)]
    Submit(SubmitArgs),
    /// Run a failed or cancelled job again, as a new job with the same kind,
    /// params and labels, and print the new job's id; with --watch, follow it.
    #[command(after_help = EXIT_CODES)]
    Retry(RetryArgs),
}

/// Where the server is, and the credential it asks for.
#[derive(Debug, Args)]
pub struct ServerUrl {
    /// Base URL of the jobcast server.
    #[arg(
        long = "server",
        value_name = "URL",
        env = "JOBCAST_URL",
        default_value = "http://127.0.0.1:8080",
        value_parser = parse_server_url
    )]
    pub url: Url,
    /// For a server with authentication on: an API key or a JWT, sent as
    /// `Authorization: Bearer`.
    #[arg(long, value_name = "TOKEN", env = "JOBCAST_TOKEN", hide_env_values = true)]
    pub token: Option<crate::config::Secret>,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The job's id.
    #[arg(required_unless_present = "labels")]
    pub id: Option<String>,

    /// Follow every job with this label instead of one job (repeatable:
    /// jobs with all the labels), e.g. `--label project=42`.
    #[arg(
        long = "label",
        value_name = "KEY=VALUE",
        value_parser = parse_label,
        conflicts_with = "id"
    )]
    pub labels: Vec<(String, String)>,

    #[command(flatten)]
    pub server: ServerUrl,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The job's kind (`GET /v1/kinds` lists them), e.g. `demo`.
    pub kind: String,

    /// The job's params, as JSON (default: none, i.e. `{}`).
    #[arg(long, value_name = "JSON", value_parser = parse_json)]
    pub params: Option<Value>,

    /// A label for the job (repeatable), e.g. `--label project=42`; `watch
    /// --label` and the dashboard's label filter find jobs by their labels.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,

    #[command(flatten)]
    pub created: CreatedArgs,
}

/// What `submit` and `retry` share: the request's idempotency key, how the
/// new job is printed, and whether it is followed.
#[derive(Debug, Args)]
pub struct CreatedArgs {
    /// Send this Idempotency-Key: the same command run again (after a
    /// network error, say) answers the same job instead of starting another,
    /// while the server keeps that job.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,

    /// Follow the job until it ends, and exit by its outcome.
    #[arg(long)]
    pub watch: bool,

    /// Print the created job as JSON instead of its id.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub server: ServerUrl,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// The id of the failed or cancelled job to run again.
    pub id: String,

    #[command(flatten)]
    pub created: CreatedArgs,
}

fn parse_server_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|error| error.to_string())?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        scheme => Err(format!("the server URL must be http or https, not {scheme}")),
    }
}

fn parse_json(text: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str(text)
}

/// `KEY=VALUE`, split at the first `=`; the server checks the rest.
fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, not {text:?}")),
    }
}

/// How `watch` and `submit` end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The job completed, or `submit` alone had it accepted.
    Success = 0,
    JobFailed = 1,
    JobCancelled = 2,
    ClientError = 3,
    /// Ctrl-C: detached from the job, which goes on (128 + SIGINT).
    Interrupted = 130,
}

impl Exit {
    /// The exit for several jobs that ended with `statuses`: the first of
    /// failed, cancelled or completed that any of them has.
    pub fn for_statuses(statuses: impl IntoIterator<Item = JobStatus>) -> Self {
        statuses
            .into_iter()
            .map(Self::for_status)
            .max_by_key(|exit| match exit {
                Exit::JobFailed => 2,
                Exit::JobCancelled => 1,
                _ => 0,
            })
            .unwrap_or(Exit::Success)
    }

    /// The exit for a job that ended with `status`.
    pub fn for_status(status: JobStatus) -> Self {
        match status {
            JobStatus::Completed => Exit::Success,
            JobStatus::Failed => Exit::JobFailed,
            JobStatus::Cancelled => Exit::JobCancelled,
            // Only terminal states are ever passed here.
            JobStatus::Queued | JobStatus::Running | JobStatus::Cancelling => Exit::ClientError,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

impl Cli {
    /// Parses the process's arguments, exiting on `--help`, `--version` and
    /// errors as clap does, except that a usage error of `watch` or `submit`
    /// exits with [`Exit::ClientError`], since their 2 means "cancelled".
    pub fn parse_args() -> Self {
        match Cli::try_parse() {
            Ok(cli) => cli,
            Err(error) => {
                let first = std::env::args_os().nth(1);
                let client = matches!(
                    first.as_deref().and_then(OsStr::to_str),
                    Some("watch" | "submit" | "retry")
                );
                if client && error.use_stderr() {
                    let _ = error.print();
                    std::process::exit(Exit::ClientError as i32);
                }
                error.exit()
            }
        }
    }
}

/// Runs a client command to its end.
pub async fn run(command: Command) -> ExitCode {
    let exit = match command {
        Command::Watch(WatchArgs {
            id: Some(id), server, ..
        }) => watch::watch(&server, &id).await,
        Command::Watch(args) => watch::watch_labelled(&args.server, &args.labels).await,
        Command::Submit(args) => watch::submit(&args).await,
        Command::Retry(args) => watch::retry(&args).await,
    };
    exit.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_command_is_the_server_with_its_flags() {
        let cli = Cli::try_parse_from(["jobcast", "--listen", "127.0.0.1:9000", "--max-running", "3"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.server.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(cli.server.max_running, 3);
    }

    #[test]
    fn server_flags_do_not_mix_with_client_commands() {
        assert!(Cli::try_parse_from(["jobcast", "--listen", "127.0.0.1:9000", "watch", "x"]).is_err());
    }

    #[test]
    fn submit_reads_its_params_as_json() {
        let cli =
            Cli::try_parse_from(["jobcast", "submit", "demo", "--params", r#"{"step_ms":5}"#, "--watch"]).unwrap();
        let Some(Command::Submit(args)) = cli.command else {
            panic!("not a submit: {:?}", cli.command)
        };
        assert_eq!(args.params, Some(serde_json::json!({ "step_ms": 5 })));
        assert!(args.created.watch);
        assert!(Cli::try_parse_from(["jobcast", "submit", "demo", "--params", "{oops"]).is_err());
    }

    #[test]
    fn labels_are_key_value_pairs_and_watch_takes_an_id_or_labels() {
        let cli = Cli::try_parse_from(["jobcast", "submit", "demo", "--label", "a=1=2", "--label", "b="]).unwrap();
        let Some(Command::Submit(args)) = cli.command else {
            panic!("not a submit: {:?}", cli.command)
        };
        assert_eq!(args.labels, [("a".into(), "1=2".into()), ("b".into(), String::new())]);
        for bad in ["novalue", "=1", ""] {
            assert!(
                Cli::try_parse_from(["jobcast", "submit", "demo", "--label", bad]).is_err(),
                "{bad}"
            );
        }
        assert!(Cli::try_parse_from(["jobcast", "watch", "--label", "a=1"]).is_ok());
        assert!(Cli::try_parse_from(["jobcast", "watch"]).is_err(), "an id or labels");
        assert!(
            Cli::try_parse_from(["jobcast", "watch", "x", "--label", "a=1"]).is_err(),
            "not both"
        );
    }

    #[test]
    fn several_jobs_exit_by_their_worst_outcome() {
        use JobStatus::{Cancelled, Completed, Failed};
        assert_eq!(Exit::for_statuses([Completed, Completed]), Exit::Success);
        assert_eq!(Exit::for_statuses([Completed, Cancelled]), Exit::JobCancelled);
        assert_eq!(Exit::for_statuses([Cancelled, Failed, Completed]), Exit::JobFailed);
    }

    #[test]
    fn the_exit_codes_are_the_documented_ones() {
        assert_eq!(Exit::for_status(JobStatus::Completed) as u8, 0);
        assert_eq!(Exit::for_status(JobStatus::Failed) as u8, 1);
        assert_eq!(Exit::for_status(JobStatus::Cancelled) as u8, 2);
        assert_eq!(Exit::ClientError as u8, 3);
        assert_eq!(Exit::Interrupted as u8, 130);
    }
}
