//! The result of one run: every number the issue asks for, as one JSON line
//! and one row of a readable table; and medians over repeated runs.

use serde::Serialize;

use crate::redis::{Appendfsync, Connections, PerState, Traffic};
use crate::server::Target;

/// One run of one scenario against one target.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunReport {
    /// The scenario: `fanout`, `many-jobs`, `idle`, `churn`.
    pub scenario: String,
    /// A label naming the scenario's settings, e.g. `fanout-10000x200@10ms`.
    pub label: String,
    pub target: String,
    /// jobcast's store (`memory`, `sqlite`, `redis`, or `unset`: no
    /// `--store` flag); none for the baselines.
    pub store: Option<String>,
    pub subscribers: usize,
    pub jobs: usize,
    pub steps: u64,
    pub step_ms: u64,
    /// jobcast's `--publish-interval`, when the run set it.
    pub publish_interval_ms: Option<u64>,
    /// Each stream's `?min_interval_ms=`, when the run asked for pacing.
    pub min_interval_ms: Option<u64>,
    /// The HTTP/2 connections (h2c) the streams shared; none: HTTP/1.1,
    /// one connection per stream.
    pub http2_connections: Option<usize>,
    pub seconds: Option<f64>,
    /// Streams opened (answered 200).
    pub streams: u64,
    /// Streams answered with another status (204, 404 or 503).
    pub refused: u64,
    /// Streams that failed: connection errors, unexpected end.
    pub errors: u64,
    /// Connection attempts that failed and were tried again.
    pub connect_retries: u64,
    /// Live events received (every event but each stream's first).
    pub events_delivered: u64,
    /// Streams that received a terminal event, of those that should have.
    pub terminal_received: u64,
    pub terminal_expected: u64,
    /// Events whose `id` repeated the previous one.
    pub duplicates: u64,
    /// Events whose `id` was below the previous one.
    pub out_of_order: u64,
    /// A second terminal event, or any event after one.
    pub after_terminal: u64,
    /// Streams that connected after the job had started its steps.
    pub late_subscribers: u64,
    /// Delivery latency: receipt time minus the event's `updated_at`.
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub latency_max_ms: Option<f64>,
    /// Server CPU seconds (user + system) while the job(s) ran; on Redis,
    /// of every jobcast instance and Redis together.
    pub server_cpu_s: f64,
    /// Seconds the server was ready to run but its core was busy with
    /// another process (from `schedstat`): above a few percent of the run,
    /// the machine was not quiet and the run is noisy.
    pub server_wait_s: f64,
    /// The load generator's own CPU seconds over the same time: near 1 per
    /// second of wall time means the client, not the server, was the limit.
    pub client_cpu_s: f64,
    /// `server_cpu_s` per delivered event, in microseconds.
    pub cpu_us_per_event: Option<f64>,
    pub peak_rss_mib: f64,
    pub rss_before_mib: f64,
    pub rss_after_mib: f64,
    pub bytes_per_idle_stream: Option<f64>,
    /// First step's state to the completed state, by `updated_at`
    /// (median over jobs when there are several).
    pub job_duration_s: Option<f64>,
    /// Time from every stream being connected to the job's first step
    /// (must be positive: the job had not started before everyone was there).
    pub slack_ms: Option<f64>,
    /// Churn: server state before and after, from `/metrics` and `/proc`.
    pub tasks_before: Option<i64>,
    pub tasks_after: Option<i64>,
    pub streams_open_after: Option<i64>,
    pub jobs_in_memory_after: Option<i64>,
    /// Churn: the highest resident memory during its first two thirds.
    pub rss_mid_mib: Option<f64>,
    /// On Redis: each process of the server side (the jobcast instances
    /// and Redis), whose sums are `server_cpu_s`, `server_wait_s`,
    /// `peak_rss_mib` and `rss_after_mib`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<ProcessFigures>,
    /// On Redis: the streams of each instance they were spread over.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<InstanceStreams>,
    /// On Redis: when it synced its append-only file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_appendfsync: Option<Appendfsync>,
    /// On Redis: the instances' commands and bytes per stored state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_per_state: Option<PerState>,
    /// On Redis: what the instances did to Redis while the streams
    /// connected (no state was stored then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_while_connecting: Option<Traffic>,
    /// On Redis: who was connected and subscribed once every stream was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_connections: Option<Connections>,
    /// The size of the job's last state, its JSON in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_bytes: Option<u64>,
    /// Instance lost: the instances' `--lease`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
    /// Instance lost: from the `kill -9` to each stream's reading of its
    /// job's `instance_lost` terminal event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost_after_ms: Option<Spread>,
    /// Instance lost: from the `kill -9` to each such terminal state's
    /// `updated_at` (when the live instance ended the job).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost_published_after_ms: Option<Spread>,
    /// Creates: jobs accepted per second while they were being created.
    pub creates_per_s: Option<f64>,
    /// Creates: the server and its database sampled over the run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<crate::creates::Sample>,
    pub wall_s: f64,
    /// The 1-minute load average when the run started.
    pub load_average: Option<f64>,
    /// Broken invariants and unmet scenario checks, in words.
    pub failures: Vec<String>,
}

/// One process of a server side with several (jobcast instances and Redis).
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProcessFigures {
    pub name: String,
    pub cpu_s: f64,
    pub wait_s: f64,
    pub peak_rss_mib: f64,
    pub rss_after_mib: f64,
}

/// The streams of one instance, when a run spread them over several.
#[derive(Clone, Debug, Default, Serialize)]
pub struct InstanceStreams {
    /// `A`, `B`, … in the order the instances started.
    pub instance: String,
    pub streams: u64,
    pub terminals: u64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub latency_max_ms: Option<f64>,
}

/// The least, the median and the most of some times, in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
    pub count: usize,
}

impl Spread {
    /// None when there are no values.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let mut values: Vec<f64> = values.into_iter().filter(|value| value.is_finite()).collect();
        values.sort_by(f64::total_cmp);
        Some(Spread {
            min: *values.first()?,
            median: median(values.iter().copied().map(Some))?,
            max: *values.last()?,
            count: values.len(),
        })
    }
}

impl RunReport {
    /// Whether the stream invariants held: every expected terminal, no
    /// duplicate, no step back, nothing after a terminal, no failed stream.
    pub fn invariants_hold(&self) -> bool {
        self.terminal_received == self.terminal_expected
            && self.duplicates == 0
            && self.out_of_order == 0
            && self.after_terminal == 0
            && self.errors == 0
    }

    /// Records the invariant failures in `failures`.
    pub fn check_invariants(&mut self) {
        if self.terminal_received != self.terminal_expected {
            self.failures.push(format!(
                "{} of {} streams got no terminal event",
                self.terminal_expected.saturating_sub(self.terminal_received),
                self.terminal_expected
            ));
        }
        if self.duplicates > 0 {
            self.failures.push(format!("{} duplicate seqs", self.duplicates));
        }
        if self.out_of_order > 0 {
            self.failures.push(format!("{} out-of-order seqs", self.out_of_order));
        }
        if self.after_terminal > 0 {
            self.failures
                .push(format!("{} events after a terminal event", self.after_terminal));
        }
        if self.errors > 0 {
            self.failures.push(format!("{} streams failed", self.errors));
        }
    }

    pub fn json_line(&self) -> String {
        serde_json::to_string(self).expect("a report always serialises")
    }
}

fn opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |value| format!("{value:.decimals$}"))
}

/// The header of [`table_row`].
pub fn table_header() -> String {
    format!(
        "{:<26} {:<18} {:>6} {:>10} {:>11} {:>5} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>6} {:>8} {:>7} {:>9} {:>6}  {}",
        "scenario",
        "target",
        "subs",
        "events",
        "terminal",
        "dup",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "cpu s",
        "cli s",
        "wait s",
        "us/event",
        "peak MB",
        "B/idle",
        "job s",
        "status"
    )
}

/// One readable line for a run.
pub fn table_row(report: &RunReport) -> String {
    format!(
        "{:<26} {:<18} {:>6} {:>10} {:>11} {:>5} {:>8} {:>8} {:>8} {:>8} {:>7.2} {:>7.2} {:>6.2} {:>8} {:>7.1} {:>9} {:>6}  {}",
        report.label,
        report.target,
        report.subscribers,
        report.events_delivered,
        format!("{}/{}", report.terminal_received, report.terminal_expected),
        report.duplicates + report.out_of_order,
        opt(report.latency_p50_ms, 2),
        opt(report.latency_p95_ms, 2),
        opt(report.latency_p99_ms, 2),
        opt(report.latency_max_ms, 1),
        report.server_cpu_s,
        report.client_cpu_s,
        report.server_wait_s,
        opt(report.cpu_us_per_event, 2),
        report.peak_rss_mib,
        opt(report.bytes_per_idle_stream, 0),
        opt(report.job_duration_s, 3),
        if report.failures.is_empty() {
            "ok".to_owned()
        } else {
            report.failures.join("; ")
        }
    )
}

/// The median of the values present; none when there are none.
pub fn median(values: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    let mut values: Vec<f64> = values.into_iter().flatten().filter(|v| v.is_finite()).collect();
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    })
}

/// The median of one metric over the runs of one label and target.
pub fn median_of(
    runs: &[RunReport],
    label: &str,
    target: Target,
    metric: impl Fn(&RunReport) -> Option<f64>,
) -> Option<f64> {
    median(
        runs.iter()
            .filter(|run| run.label == label && run.target == target.name())
            .map(metric),
    )
}
