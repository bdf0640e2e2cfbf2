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
//! # Layout
//!
//! - `spec`: the `[kinds.NAME.command]` table as written.
//! - `load`: every check that can fail before a job runs, turning a spec
//!   into a [`CommandKind`].
//! - `argv`: argv templates with `{param}` placeholders.
//! - `pattern`: `progress_pattern`, progress read from ordinary lines.
//! - `run`: one job, from spawn to outcome: the loop that waits for the
//!   exit, the output, a cancel and the timeout.
//! - `process`: spawning the child in its own process group, signalling
//!   and killing that group.
//! - `output`: reading the child's pipes as bounded lines.
//! - `tail`: the last lines of ordinary output that a failure quotes.
//! - `protocol`: what a protocol line is and what it carries.
//! - `session`: what one run makes of each line, and its outcome.
//!
//! [`Reporter`]: crate::jobs::report::Reporter
//! [`Params`]: super::params::Params

mod argv;
mod load;
mod output;
mod pattern;
mod process;
mod protocol;
mod run;
mod session;
mod spec;
mod tail;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::jobs::report::StageDecl;

pub use load::CommandSpecError;
pub use spec::{CommandSpec, ProgressSource};

/// A command kind, checked and ready to run jobs: [`CommandKind::new`]
/// builds it at load time, [`CommandKind::run`] runs one job.
#[derive(Debug)]
pub struct CommandKind {
    program: PathBuf,
    args: Vec<argv::Template>,
    workdir: PathBuf,
    env: BTreeMap<String, String>,
    timeout: Option<Duration>,
    progress: ProgressSource,
    pattern: Option<pattern::ProgressPattern>,
    tail_lines: usize,
    stages: Vec<StageDecl>,
    kill_grace: Duration,
}
