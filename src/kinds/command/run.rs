//! Running one job of a command kind: spawn the program, feed its output
//! to the session, and wait for whichever comes first of its exit, a
//! cancel and the timeout; then make sure its process group is empty and
//! hand the outcome back. Spawning and signalling are `process`'s
//! business, what a line means `session`'s.

use std::io;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::time::{sleep_until, Instant};

use super::argv::render_args;
use super::output::Outputs;
use super::process::{spawn, Spawned};
use super::session::Session;
use super::CommandKind;
use crate::jobs::context::JobContext;
use crate::jobs::kind::JobResult;
use crate::jobs::report::Reporter;

/// After the child exits, how long its output may stay open (held by a
/// process it started) before the rest of its group is killed.
const DRAIN: Duration = Duration::from_secs(2);

/// After the group is killed, how long to read what is left in the pipes.
const FINAL_DRAIN: Duration = Duration::from_millis(500);

/// Why jobcast stopped the command.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Stop {
    Cancel,
    Timeout,
}

impl CommandKind {
    /// Runs one job: renders argv from checked params, spawns, reports,
    /// decides the outcome.
    #[tracing::instrument(skip_all, fields(program = %self.program.display()))]
    pub async fn run(self: Arc<Self>, ctx: JobContext, params: Map<String, Value>) -> JobResult {
        let Spawned {
            mut child,
            stdout,
            stderr,
            progress_fd,
            mut group,
        } = spawn(&self, ctx.id(), render_args(&self.args, &params))?;
        let mut outputs = Outputs::new(stdout, stderr, progress_fd);
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
