//! Tracing subscriber setup, nothing else: readable text, or one JSON
//! object per line for log collectors.
//!
//! Nothing here filters secrets out of log lines: none is ever put in one.
//! Requests are logged by method and matched route (no query string, no
//! header), worker tokens print as `WorkerToken(jcw_…)`, TLS keys are read
//! without logging, and hyper logs nothing; h2 at debug and trace logs
//! frames without their header fields or data. A test runs the binary at
//! `trace` in both formats and looks for the secrets it used.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Readable text, colored on a terminal.
    #[default]
    Text,
    /// One JSON object per line: time, level, target, message and fields at
    /// the top level, and `spans`, the enclosing spans (the request's
    /// method and route, the job's id and kind) with their fields.
    Json,
}

/// Logs to stderr in `format`, filtered by `RUST_LOG` if set, else by `filter`.
pub fn init(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // An error means a subscriber is already set (an embedding app's): keep it.
    let _ = match format {
        LogFormat::Text => subscriber.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => subscriber
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .try_init(),
    };
}
