//! The `jobcast` command line: with no subcommand it is the server (every
//! flag of [`Config`]), and `watch` and `submit` make it a terminal client of
//! a running server.
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

/// The exit codes of `watch` and `submit`, as `--help` states them.
const EXIT_CODES: &str = "\
Exit status:
  0    the job completed (for `submit` without --watch: it was accepted)
  1    the job failed
  2    the job was cancelled
  3    client error: bad arguments, unknown job, rejected params, server unreachable
  130  interrupted with Ctrl-C and detached; the job keeps running";

/// jobcast: runs long jobs and streams their progress over Server-Sent Events.
#[derive(Debug, Parser)]
#[command(
    name = "jobcast",
    version,
    about,
    long_about = None,
    args_conflicts_with_subcommands = true,
    after_help = "With no command, jobcast runs the server with the options above.\n\
                  `jobcast help watch` and `jobcast help submit` describe the client commands and their exit codes."
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
    /// per state otherwise).
    #[command(after_help = EXIT_CODES)]
    Watch(WatchArgs),
    /// Start a job and print its id; with --watch, follow it as `watch` does.
    #[command(after_help = EXIT_CODES)]
    Submit(SubmitArgs),
}

/// Where the server is.
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
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The job's id.
    pub id: String,

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

    /// Follow the job until it ends, and exit by its outcome.
    #[arg(long)]
    pub watch: bool,

    /// Print the created job as JSON instead of its id.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub server: ServerUrl,
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
                let client = matches!(first.as_deref().and_then(OsStr::to_str), Some("watch" | "submit"));
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
        Command::Watch(args) => watch::watch(&args.server.url, &args.id).await,
        Command::Submit(args) => watch::submit(&args).await,
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
        assert!(args.watch);
        assert!(Cli::try_parse_from(["jobcast", "submit", "demo", "--params", "{oops"]).is_err());
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
