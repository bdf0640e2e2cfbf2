//! The four scenarios of issue 6, each against a running server, each
//! returning one [`RunReport`]:
//!
//! - *fan-out*: N streams on one job, all connected (each has its snapshot)
//!   before the job's first step, which the job's `delay_ms` holds back;
//! - *many jobs*: J jobs with one stream each, their steps spread evenly
//!   over one step period so that they do not all tick in the same
//!   millisecond;
//! - *idle*: N streams on a job that does nothing for an hour; memory per
//!   stream from the server's resident memory before and after;
//! - *churn*: streams that come and go, resume, or follow every job, while
//!   jobs start, progress, fail, get cancelled and finish; afterwards the
//!   server's tasks, streams and memory must come back down.
//!
//! Every stream is checked as it is read: `id`s strictly increasing, one
//! terminal event and nothing after it. All streams run as tasks of one
//! single-threaded runtime (the load generator's core), sharing counters
//! through `Rc<RefCell<_>>` with no locks.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;

use crate::client::{self, Endpoint, EventStream, Opened};
use crate::http2::Http2Connections;
use crate::procfs;
use crate::report::{InstanceStreams, ProcessFigures, RunReport};
use crate::server::{Server, Target};

/// Settings every scenario shares.
#[derive(Clone, Debug)]
pub struct Common {
    /// Connections being set up at once (a burst beyond the server's accept
    /// backlog would be retried by TCP after a second).
    pub connect_concurrency: usize,
    /// Read buffer per stream, in bytes.
    pub read_buffer: usize,
    /// Streams over this many HTTP/2 connections (h2c) instead of one
    /// HTTP/1.1 connection each.
    pub http2_connections: Option<usize>,
}

impl Default for Common {
    fn default() -> Self {
        Common {
            connect_concurrency: 256,
            read_buffer: 8 * 1024,
            http2_connections: None,
        }
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// Counters shared by every stream of a run.
struct Stats {
    latency: Histogram<u64>,
    events: u64,
    streams: u64,
    refused: u64,
    errors: u64,
    connect_retries: u64,
    error_samples: Vec<String>,
    terminals: u64,
    duplicates: u64,
    out_of_order: u64,
    after_terminal: u64,
    late: u64,
    /// Earliest `updated_at` of a first live event (µs since the epoch).
    first_live_at: Option<i64>,
    /// Per endpoint, when the streams are spread over several.
    by_endpoint: Vec<EndpointStats>,
}

/// What the streams of one endpoint saw, when there are several.
struct EndpointStats {
    streams: u64,
    terminals: u64,
    latency: Histogram<u64>,
}

fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

impl Stats {
    fn new(endpoints: usize) -> Self {
        Stats {
            latency: latency_histogram(),
            events: 0,
            streams: 0,
            refused: 0,
            errors: 0,
            connect_retries: 0,
            error_samples: Vec::new(),
            terminals: 0,
            duplicates: 0,
            out_of_order: 0,
            after_terminal: 0,
            late: 0,
            first_live_at: None,
            by_endpoint: if endpoints > 1 {
                (0..endpoints)
                    .map(|_| EndpointStats {
                        streams: 0,
                        terminals: 0,
                        latency: latency_histogram(),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    fn error(&mut self, error: String) {
        self.errors += 1;
        if self.error_samples.len() < 5 {
            self.error_samples.push(error);
        }
    }
}

/// A run's shared state.
pub(crate) struct Run {
    /// Where streams go: stream number `i` to `endpoints[i % len]`.
    endpoints: Vec<Endpoint>,
    /// The HTTP/2 connections streams share, when the run asked for them
    /// (one endpoint only).
    http2: Option<Http2Connections>,
    common: Common,
    stats: RefCell<Stats>,
    /// Streams that have their first event.
    ready: Cell<usize>,
    ready_changed: Notify,
    /// Streams that could not be opened (refused, or failed to connect).
    failed_to_start: Cell<usize>,
    connect_gate: Semaphore,
    next_connection: Cell<usize>,
    /// `JOBCAST_BENCH_TRACE=FILE`: every live event of every 100th stream
    /// as `stream,seq,updated_at_us,received_us` lines, for looking into a
    /// latency distribution.
    trace: Option<RefCell<std::io::BufWriter<std::fs::File>>>,
}

impl Run {
    fn new(endpoint: Endpoint, common: Common) -> Rc<Self> {
        Run::spread(vec![endpoint], common)
    }

    /// A run whose streams are spread evenly over `endpoints`.
    pub(crate) fn spread(endpoints: Vec<Endpoint>, common: Common) -> Rc<Self> {
        Rc::new(Run {
            http2: match (common.http2_connections, endpoints.as_slice()) {
                (Some(count), [endpoint]) => Some(Http2Connections::new(endpoint.clone(), count)),
                _ => None,
            },
            stats: RefCell::new(Stats::new(endpoints.len())),
            endpoints,
            connect_gate: Semaphore::new(common.connect_concurrency.max(1)),
            common,
            ready: Cell::new(0),
            ready_changed: Notify::new(),
            failed_to_start: Cell::new(0),
            next_connection: Cell::new(0),
            trace: std::env::var_os("JOBCAST_BENCH_TRACE")
                .and_then(|path| std::fs::File::create(path).ok())
                .map(|file| RefCell::new(std::io::BufWriter::new(file))),
        })
    }

    /// Waits until `count` streams have their first event, or could not
    /// be opened; true if they all have it.
    async fn wait_ready(&self, count: usize, deadline: Instant) -> bool {
        loop {
            let changed = self.ready_changed.notified();
            if self.ready.get() + self.failed_to_start.get() >= count {
                return self.ready.get() >= count;
            }
            if tokio::time::timeout_at(deadline.into(), changed).await.is_err() {
                return self.ready.get() >= count;
            }
        }
    }
}

/// How one stream should behave.
#[derive(Clone, Debug)]
pub(crate) struct Follow {
    path: String,
    last_event_id: Option<u64>,
    /// Leave (close the connection) at this time; none: read to the end.
    leave_at: Option<Instant>,
    /// A job's own stream (one terminal event, then the end); false for
    /// the all-jobs stream.
    job_stream: bool,
    /// Keep the connection open once the response has ended (see
    /// [`Seen::connection`]); churn closes at once, as a leaving client does.
    keep_connection: bool,
}

impl Follow {
    /// A job's stream (at `path`), read to its end, its connection kept.
    pub(crate) fn job_to_end(path: String) -> Follow {
        Follow {
            path,
            last_event_id: None,
            leave_at: None,
            job_stream: true,
            keep_connection: true,
        }
    }
}

/// What one stream saw.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    /// The terminal state's `updated_at` (µs since the epoch).
    pub(crate) terminal_at: Option<i64>,
    /// When the terminal event was read (µs since the epoch).
    pub(crate) terminal_received_at: Option<i64>,
    /// The terminal state's error code, if it has one.
    pub(crate) terminal_code: Option<String>,
    first_live_at: Option<i64>,
    left_early: bool,
    refused: bool,
    /// A job stream meant to be read to its end.
    to_end: bool,
    /// The connection of a response that ended, kept open (as a keep-alive
    /// client would) until the run's measurements are taken, so that the
    /// server's last writes to some streams do not compete with closing
    /// the others.
    connection: Option<tokio::net::TcpStream>,
}

/// Reads one stream to its end (or until it leaves), checking it as it goes.
pub(crate) async fn follow(run: Rc<Run>, how: Follow) -> Seen {
    let mut seen = Seen {
        to_end: how.job_stream && how.leave_at.is_none(),
        ..Seen::default()
    };
    let mut attempts = 0;
    let (index, endpoint, opened) = loop {
        let index = run.next_connection.get();
        run.next_connection.set(index + 1);
        let endpoint = index % run.endpoints.len();
        let _permit = run.connect_gate.acquire().await.expect("the gate is never closed");
        let opened = match &run.http2 {
            Some(connections) => {
                connections
                    .open(index, &how.path, how.last_event_id, run.common.read_buffer)
                    .await
            }
            None => {
                EventStream::open(
                    &run.endpoints[endpoint],
                    index / run.endpoints.len(),
                    &how.path,
                    how.last_event_id,
                    run.common.read_buffer,
                )
                .await
            }
        };
        attempts += 1;
        // A connection refused or reset while connecting (a full accept
        // queue, a port still in TIME_WAIT) is tried again, from another
        // source port, as a client would.
        match opened {
            Err(error) if attempts < 3 && error.kind() != std::io::ErrorKind::UnexpectedEof => {
                run.stats.borrow_mut().connect_retries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            opened => break (index, endpoint, opened),
        }
    };
    let settle = || {
        run.failed_to_start.set(run.failed_to_start.get() + 1);
        run.ready_changed.notify_waiters();
    };
    let mut stream = match opened {
        Ok(Opened::Stream(stream)) => stream,
        Ok(Opened::Refused(response)) => {
            let mut stats = run.stats.borrow_mut();
            if matches!(response.status, 204 | 404 | 503) {
                stats.refused += 1;
            } else {
                stats.error(format!(
                    "{} answered {}: {}",
                    how.path,
                    response.status,
                    response.text()
                ));
            }
            seen.refused = true;
            settle();
            return seen;
        }
        Err(error) => {
            run.stats.borrow_mut().error(format!("connect: {error}"));
            settle();
            return seen;
        }
    };
    {
        let mut stats = run.stats.borrow_mut();
        stats.streams += 1;
        if let Some(by_endpoint) = stats.by_endpoint.get_mut(endpoint) {
            by_endpoint.streams += 1;
        }
    }
    let mut last_id: Option<u64> = None;
    let mut first = true;
    let mut terminals = 0u32;
    let mut on_event = |event: client::Event<'_>, now: i64| {
        let mut stats = run.stats.borrow_mut();
        if let Some(id) = event.id {
            match last_id {
                Some(last) if id == last => stats.duplicates += 1,
                Some(last) if id < last => stats.out_of_order += 1,
                _ => {}
            }
            last_id = Some(last_id.map_or(id, |last| last.max(id)));
        }
        let terminal = matches!(event.name, b"completed" | b"failed" | b"cancelled");
        if how.job_stream && terminals > 0 {
            stats.after_terminal += 1;
        }
        let updated_at = client::updated_at_micros(event.data);
        if first {
            first = false;
            // A job that had begun its steps when this stream connected.
            if how.job_stream && memchr::memmem::find(event.data, b"\"stage\":{").is_some() {
                stats.late += 1;
            }
            drop(stats);
            run.ready.set(run.ready.get() + 1);
            run.ready_changed.notify_waiters();
        } else {
            stats.events += 1;
            if let Some(updated_at) = updated_at {
                let latency = (now - updated_at).max(1) as u64;
                stats.latency.saturating_record(latency);
                if let Some(by_endpoint) = stats.by_endpoint.get_mut(endpoint) {
                    by_endpoint.latency.saturating_record(latency);
                }
                if let (Some(trace), 0) = (&run.trace, index % 100) {
                    use std::io::Write as _;
                    let _ = writeln!(
                        trace.borrow_mut(),
                        "{index},{},{updated_at},{now}",
                        event.id.unwrap_or(0)
                    );
                }
                if seen.first_live_at.is_none() {
                    seen.first_live_at = Some(updated_at);
                    stats.first_live_at = Some(stats.first_live_at.map_or(updated_at, |at| at.min(updated_at)));
                }
            }
        }
        if terminal {
            terminals += 1;
            seen.terminal_at = updated_at;
            seen.terminal_received_at = Some(now);
            seen.terminal_code = error_code(event.data);
        }
    };
    let mut ended = false;
    loop {
        let read = match how.leave_at {
            Some(at) => tokio::select! {
                read = stream.next_events(&mut on_event) => read,
                _ = tokio::time::sleep_until(at.into()) => {
                    seen.left_early = true;
                    break;
                }
            },
            None => stream.next_events(&mut on_event).await,
        };
        match read {
            Ok(true) => {}
            Ok(false) => {
                ended = true;
                break;
            }
            Err(error) => {
                run.stats.borrow_mut().error(format!("read: {error}"));
                return seen;
            }
        }
    }
    if ended && how.keep_connection {
        seen.connection = stream.into_connection();
    }
    if how.job_stream && terminals > 0 {
        // Counted only for streams that meant to read to the end.
        if how.leave_at.is_none() {
            let mut stats = run.stats.borrow_mut();
            stats.terminals += 1;
            if let Some(by_endpoint) = stats.by_endpoint.get_mut(endpoint) {
                by_endpoint.terminals += 1;
            }
        }
    } else if how.job_stream && !seen.left_early {
        run.stats
            .borrow_mut()
            .error("a job stream ended without a terminal event".to_owned());
    }
    seen
}

/// The `code` of a job's `error` object, if the state has one.
fn error_code(json: &[u8]) -> Option<String> {
    let error = memchr::memmem::find(json, b"\"error\":{")?;
    client::json_str(&json[error..], "code").map(|code| String::from_utf8_lossy(code).into_owned())
}

/// Creates a demo job; returns its id.
pub(crate) async fn create_job(endpoint: &Endpoint, params: serde_json::Value) -> Result<String, String> {
    let body = json!({ "kind": "demo", "params": params }).to_string();
    let response = client::request(endpoint, "POST", "/v1/jobs", Some(&body))
        .await
        .map_err(|error| format!("create: {error}"))?;
    if response.status != 202 {
        return Err(format!("create answered {}: {}", response.status, response.text()));
    }
    client::json_str(&response.body, "id")
        .map(|id| String::from_utf8_lossy(id).into_owned())
        .ok_or_else(|| format!("create answered no id: {}", response.text()))
}

/// A quantile of a latency histogram in milliseconds; none when it is empty.
fn quantile_ms(latency: &Histogram<u64>, quantile: f64) -> Option<f64> {
    (!latency.is_empty()).then(|| latency.value_at_quantile(quantile) as f64 / 1000.0)
}

/// The highest latency in milliseconds; none when there is none.
fn max_ms(latency: &Histogram<u64>) -> Option<f64> {
    (!latency.is_empty()).then(|| latency.max() as f64 / 1000.0)
}

pub(crate) fn fill_latency(report: &mut RunReport, latency: &Histogram<u64>) {
    report.latency_p50_ms = quantile_ms(latency, 0.50);
    report.latency_p95_ms = quantile_ms(latency, 0.95);
    report.latency_p99_ms = quantile_ms(latency, 0.99);
    report.latency_max_ms = max_ms(latency);
}

/// Copies the shared counters into the report.
fn fill_stats(report: &mut RunReport, run: &Run) {
    if let Some(trace) = &run.trace {
        use std::io::Write as _;
        let _ = trace.borrow_mut().flush();
    }
    let stats = run.stats.borrow();
    report.streams = stats.streams;
    report.refused = stats.refused;
    report.errors = stats.errors;
    report.connect_retries = stats.connect_retries;
    report.events_delivered = stats.events;
    report.terminal_received = stats.terminals;
    report.duplicates = stats.duplicates;
    report.out_of_order = stats.out_of_order;
    report.after_terminal = stats.after_terminal;
    report.late_subscribers = stats.late;
    fill_latency(report, &stats.latency);
    report.instances = stats
        .by_endpoint
        .iter()
        .zip('A'..)
        .map(|(endpoint, name)| InstanceStreams {
            instance: name.to_string(),
            streams: endpoint.streams,
            terminals: endpoint.terminals,
            latency_p50_ms: quantile_ms(&endpoint.latency, 0.50),
            latency_p99_ms: quantile_ms(&endpoint.latency, 0.99),
            latency_max_ms: max_ms(&endpoint.latency),
        })
        .collect();
    report.failures.extend(stats.error_samples.iter().cloned());
}

/// Waits for every stream task, aborting those still running at `deadline`.
async fn join_all(handles: Vec<JoinHandle<Seen>>, deadline: Instant) -> Vec<Seen> {
    let mut seen = Vec::with_capacity(handles.len());
    let mut timed_out = 0;
    for handle in handles {
        let abort = handle.abort_handle();
        match tokio::time::timeout_at(deadline.into(), handle).await {
            Ok(Ok(one)) => seen.push(one),
            Ok(Err(_)) => {}
            Err(_) => {
                abort.abort();
                timed_out += 1;
            }
        }
    }
    if timed_out > 0 {
        eprintln!("  {timed_out} streams still open at the deadline were closed");
    }
    seen
}

/// The load generator's own CPU seconds so far.
pub(crate) fn own_cpu() -> f64 {
    procfs::cpu_seconds(std::process::id()).unwrap_or(0.0)
}

pub(crate) fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB
}

/// Fan-out: `subscribers` streams on one job of `steps` steps.
#[derive(Clone, Debug)]
pub struct Fanout {
    pub subscribers: usize,
    pub steps: u64,
    pub step_ms: u64,
    /// The job's wait before its first step; none: long enough for every
    /// stream to connect (1 s + 0.5 ms per stream).
    pub delay_ms: Option<u64>,
    pub min_interval_ms: Option<u64>,
}

/// A scenario of jobs created up front and streams read to their ends:
/// fan-out and many jobs, on one server or spread over several instances.
pub(crate) trait StreamsScenario {
    /// The report a run starts with.
    fn report(&self, target: Target) -> RunReport;
    /// Creates the jobs on `endpoint`, their first steps held back by
    /// `extra_delay` more than one server needs for its streams to connect.
    async fn create(&self, endpoint: &Endpoint, extra_delay: Duration) -> Result<Created, String>;
    /// Starts the streams on the jobs, spread over the run's endpoints.
    fn watch(&self, run: &Rc<Run>, ids: &[String]) -> Vec<JoinHandle<Seen>>;
    /// What is left once the streams ended: the jobs' duration, CPU per
    /// event, the invariants and the wall time.
    fn finish(&self, report: &mut RunReport, run: &Run, seen: &[Seen], started: Instant);
}

/// The jobs a scenario created, and when the first one's delay ends.
pub(crate) struct Created {
    pub(crate) ids: Vec<String>,
    pub(crate) delay_ends: Instant,
}

impl StreamsScenario for Fanout {
    fn report(&self, target: Target) -> RunReport {
        let mut report = RunReport {
            scenario: "fanout".to_owned(),
            label: format!("fanout-{}x{}@{}ms", self.subscribers, self.steps, self.step_ms),
            target: target.name().to_owned(),
            subscribers: self.subscribers,
            jobs: 1,
            steps: self.steps,
            step_ms: self.step_ms,
            min_interval_ms: self.min_interval_ms,
            load_average: procfs::load_average(),
            ..RunReport::default()
        };
        if let Some(ms) = self.min_interval_ms {
            report.label.push_str(&format!("-paced{ms}ms"));
        }
        report
    }

    async fn create(&self, endpoint: &Endpoint, extra_delay: Duration) -> Result<Created, String> {
        let delay_ms = self.delay_ms.unwrap_or(1000 + self.subscribers as u64 / 2) + extra_delay.as_millis() as u64;
        let params = json!({
            "stages": [{ "name": "work", "weight": 1.0, "steps": self.steps }],
            "step_ms": self.step_ms,
            "delay_ms": delay_ms,
        });
        let id = create_job(endpoint, params).await?;
        Ok(Created {
            ids: vec![id],
            delay_ends: Instant::now() + Duration::from_millis(delay_ms),
        })
    }

    fn watch(&self, run: &Rc<Run>, ids: &[String]) -> Vec<JoinHandle<Seen>> {
        let mut path = format!("/v1/jobs/{}/events", ids[0]);
        if let Some(ms) = self.min_interval_ms {
            path.push_str(&format!("?min_interval_ms={ms}"));
        }
        let how = Follow::job_to_end(path);
        (0..self.subscribers)
            .map(|_| tokio::task::spawn_local(follow(run.clone(), how.clone())))
            .collect()
    }

    fn finish(&self, report: &mut RunReport, run: &Run, seen: &[Seen], started: Instant) {
        let first_live_at = run.stats.borrow().first_live_at;
        let terminal_at = seen.iter().filter_map(|seen| seen.terminal_at).max();
        if let (Some(first), Some(last)) = (first_live_at, terminal_at) {
            report.job_duration_s = Some((last - first) as f64 / 1e6);
        }
        finish_streams_run(report, started);
    }
}

/// Many jobs: `jobs` jobs with one stream each.
#[derive(Clone, Debug)]
pub struct ManyJobs {
    pub jobs: usize,
    pub steps: u64,
    pub step_ms: u64,
    /// Wait before the first job's first step; none: 1.5 s + 2 ms per job.
    pub delay_ms: Option<u64>,
}

impl StreamsScenario for ManyJobs {
    fn report(&self, target: Target) -> RunReport {
        RunReport {
            scenario: "many-jobs".to_owned(),
            label: format!("jobs-{}x{}@{}ms", self.jobs, self.steps, self.step_ms),
            target: target.name().to_owned(),
            subscribers: self.jobs,
            jobs: self.jobs,
            steps: self.steps,
            step_ms: self.step_ms,
            load_average: procfs::load_average(),
            ..RunReport::default()
        }
    }

    async fn create(&self, endpoint: &Endpoint, extra_delay: Duration) -> Result<Created, String> {
        let base_delay = self.delay_ms.unwrap_or(1500 + 2 * self.jobs as u64) + extra_delay.as_millis() as u64;
        let first_created = Instant::now();
        let mut ids = Vec::with_capacity(self.jobs);
        for index in 0..self.jobs {
            // Every job's steps start at the same (creation-relative) time, plus
            // an offset spreading them evenly over one step period.
            let elapsed = first_created.elapsed().as_millis() as u64;
            let offset = if self.step_ms > 0 {
                (index as u64 * self.step_ms) / self.jobs.max(1) as u64
            } else {
                0
            };
            let delay_ms = base_delay.saturating_sub(elapsed) + offset;
            let params = json!({
                "stages": [{ "name": "work", "weight": 1.0, "steps": self.steps }],
                "step_ms": self.step_ms,
                "delay_ms": delay_ms,
            });
            ids.push(create_job(endpoint, params).await?);
        }
        Ok(Created {
            ids,
            delay_ends: first_created + Duration::from_millis(base_delay),
        })
    }

    fn watch(&self, run: &Rc<Run>, ids: &[String]) -> Vec<JoinHandle<Seen>> {
        ids.iter()
            .map(|id| {
                tokio::task::spawn_local(follow(run.clone(), Follow::job_to_end(format!("/v1/jobs/{id}/events"))))
            })
            .collect()
    }

    fn finish(&self, report: &mut RunReport, _run: &Run, seen: &[Seen], started: Instant) {
        let durations = seen
            .iter()
            .filter_map(|seen| match (seen.first_live_at, seen.terminal_at) {
                (Some(first), Some(last)) => Some(Some((last - first) as f64 / 1e6)),
                _ => None,
            });
        report.job_duration_s = crate::report::median(durations);
        finish_streams_run(report, started);
    }
}

/// Runs a fan-out or many-jobs scenario against one server.
pub(crate) async fn streams_on_one_server(
    server: &Server,
    target: Target,
    spec: &impl StreamsScenario,
    common: &Common,
) -> RunReport {
    let started = Instant::now();
    let mut report = spec.report(target);
    let created = match spec.create(&server.endpoint, Duration::ZERO).await {
        Ok(created) => created,
        Err(error) => {
            report.failures.push(error);
            return report;
        }
    };
    report.rss_before_mib = mib(procfs::rss_bytes(server.pid).unwrap_or(0));
    let run = Run::new(server.endpoint.clone(), common.clone());
    let handles = spec.watch(&run, &created.ids);
    let seen = follow_to_end(&mut report, server, &run, handles, created.delay_ends).await;
    spec.finish(&mut report, &run, &seen, started);
    report
}

/// A process of the server side, named, whose CPU, waiting and memory a
/// run measures.
pub(crate) struct ServerProcess {
    pub(crate) name: String,
    pub(crate) pid: u32,
}

/// The part of a fan-out or many-jobs run on one server after its streams
/// are started: [`streams_ready`], then [`streams_end`] by the job's
/// [`end_deadline`].
async fn follow_to_end(
    report: &mut RunReport,
    server: &Server,
    run: &Run,
    handles: Vec<JoinHandle<Seen>>,
    delay_ends: Instant,
) -> Vec<Seen> {
    let ready_at = streams_ready(report, run, handles.len(), delay_ends).await;
    let deadline = end_deadline(report, delay_ends);
    let processes = [ServerProcess {
        name: "jobcast".to_owned(),
        pid: server.pid,
    }];
    streams_end(report, &processes, run, handles, deadline, ready_at).await
}

/// Waits until every one of `streams` has its snapshot, failing the run if
/// some do not by 30 s after the job's delay ends; answers when they were
/// ready (µs since the epoch).
pub(crate) async fn streams_ready(report: &mut RunReport, run: &Run, streams: usize, delay_ends: Instant) -> i64 {
    let all_ready = run.wait_ready(streams, delay_ends + Duration::from_secs(30)).await;
    if !all_ready {
        report
            .failures
            .push(format!("only {} of {} streams connected", run.ready.get(), streams));
    }
    client::now_micros()
}

/// When the streams of a fan-out or many-jobs run must have ended: three
/// times the job's nominal length after its delay, plus a minute.
pub(crate) fn end_deadline(report: &RunReport, delay_ends: Instant) -> Instant {
    delay_ends + Duration::from_millis(report.steps * report.step_ms.max(1) * 3) + Duration::from_secs(60)
}

/// The part of a run after its streams are ready: waits until every stream
/// ends (those still open at `deadline` are closed), and takes the server
/// side's CPU, waiting and memory over that time (summed over its
/// processes, and each one's when there are several), and the streams'
/// statistics.
pub(crate) async fn streams_end(
    report: &mut RunReport,
    processes: &[ServerProcess],
    run: &Run,
    handles: Vec<JoinHandle<Seen>>,
    deadline: Instant,
    ready_at: i64,
) -> Vec<Seen> {
    let streams = handles.len();
    let usage = |process: &ServerProcess| {
        (
            procfs::cpu_seconds(process.pid).unwrap_or(0.0),
            procfs::run_delay_seconds(process.pid).unwrap_or(0.0),
        )
    };
    let before: Vec<(f64, f64)> = processes.iter().map(usage).collect();
    let client_cpu_before = own_cpu();
    let seen = join_all(handles, deadline).await;
    report.client_cpu_s = own_cpu() - client_cpu_before;
    let figures: Vec<ProcessFigures> = processes
        .iter()
        .zip(before)
        .map(|(process, (cpu_before, wait_before))| {
            let (cpu, wait) = usage(process);
            ProcessFigures {
                name: process.name.clone(),
                cpu_s: cpu - cpu_before,
                wait_s: wait - wait_before,
                peak_rss_mib: mib(procfs::peak_rss_bytes(process.pid).unwrap_or(0)),
                rss_after_mib: mib(procfs::rss_bytes(process.pid).unwrap_or(0)),
            }
        })
        .collect();
    report.server_cpu_s = figures.iter().map(|process| process.cpu_s).sum();
    report.server_wait_s = figures.iter().map(|process| process.wait_s).sum();
    report.peak_rss_mib = figures.iter().map(|process| process.peak_rss_mib).sum();
    report.rss_after_mib = figures.iter().map(|process| process.rss_after_mib).sum();
    if figures.len() > 1 {
        report.processes = figures;
    }
    report.terminal_expected = streams as u64;
    fill_stats(report, run);
    report.slack_ms = run
        .stats
        .borrow()
        .first_live_at
        .map(|first| (first - ready_at) as f64 / 1000.0);
    seen
}

/// CPU per delivered event, the invariants, streams that connected late
/// and the wall time: the end of a fan-out or many-jobs run.
fn finish_streams_run(report: &mut RunReport, started: Instant) {
    if report.events_delivered > 0 {
        report.cpu_us_per_event = Some(report.server_cpu_s * 1e6 / report.events_delivered as f64);
    }
    report.check_invariants();
    if report.late_subscribers > 0 {
        report.failures.push(format!(
            "{} streams connected after their job started (raise --delay-ms)",
            report.late_subscribers
        ));
    }
    report.wall_s = started.elapsed().as_secs_f64();
}

/// Idle: `streams` open streams on a job that publishes nothing for an hour.
#[derive(Clone, Debug)]
pub struct Idle {
    pub streams: usize,
    /// How long to let the server settle before each memory reading.
    pub settle_ms: u64,
}

pub async fn idle(server: &Server, target: Target, spec: &Idle, common: &Common) -> RunReport {
    let started = Instant::now();
    let mut report = RunReport {
        scenario: "idle".to_owned(),
        label: format!("idle-{}", spec.streams),
        target: target.name().to_owned(),
        subscribers: spec.streams,
        jobs: 1,
        steps: 1,
        load_average: procfs::load_average(),
        ..RunReport::default()
    };
    let params = json!({
        "stages": [{ "name": "wait", "weight": 1.0, "steps": 1 }],
        "step_ms": 1,
        "delay_ms": 3_600_000,
    });
    let id = match create_job(&server.endpoint, params).await {
        Ok(id) => id,
        Err(error) => {
            report.failures.push(error);
            return report;
        }
    };
    // A few streams first, so that what every connection needs once (buffers
    // and tables sized on first use) is in the baseline, not per stream.
    let run = Run::new(server.endpoint.clone(), common.clone());
    let follow_spec = Follow::job_to_end(format!("/v1/jobs/{id}/events"));
    const WARM: usize = 16;
    let mut handles: Vec<_> = (0..WARM)
        .map(|_| tokio::task::spawn_local(follow(run.clone(), follow_spec.clone())))
        .collect();
    run.wait_ready(WARM, Instant::now() + Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(spec.settle_ms)).await;
    let rss_before = procfs::rss_bytes(server.pid).unwrap_or(0);
    let cpu_before = procfs::cpu_seconds(server.pid).unwrap_or(0.0);
    let client_cpu_before = own_cpu();
    let wait_before = procfs::run_delay_seconds(server.pid).unwrap_or(0.0);
    handles.extend((0..spec.streams).map(|_| tokio::task::spawn_local(follow(run.clone(), follow_spec.clone()))));
    let all_ready = run
        .wait_ready(WARM + spec.streams, Instant::now() + Duration::from_secs(60))
        .await;
    if !all_ready {
        report.failures.push(format!(
            "only {} of {} streams connected",
            run.ready.get() - WARM,
            spec.streams
        ));
    }
    tokio::time::sleep(Duration::from_millis(spec.settle_ms)).await;
    let rss_after = procfs::rss_bytes(server.pid).unwrap_or(0);
    report.server_cpu_s = procfs::cpu_seconds(server.pid).unwrap_or(0.0) - cpu_before;
    report.client_cpu_s = own_cpu() - client_cpu_before;
    report.server_wait_s = procfs::run_delay_seconds(server.pid).unwrap_or(0.0) - wait_before;
    report.rss_before_mib = mib(rss_before);
    report.rss_after_mib = mib(rss_after);
    report.peak_rss_mib = mib(procfs::peak_rss_bytes(server.pid).unwrap_or(0));
    let opened = run.ready.get().saturating_sub(WARM).max(1);
    report.bytes_per_idle_stream = Some(rss_after.saturating_sub(rss_before) as f64 / opened as f64);
    for handle in &handles {
        handle.abort();
    }
    // Idle streams never end by themselves: nothing to expect of them.
    fill_stats(&mut report, &run);
    report.check_invariants();
    report.wall_s = started.elapsed().as_secs_f64();
    report
}

/// Churn: streams and jobs coming and going for `seconds` (jobcast only: it
/// reads jobcast's `/metrics` and cancels jobs).
#[derive(Clone, Debug)]
pub struct Churn {
    pub seconds: u64,
    /// Streams open at once, at most.
    pub max_streams: usize,
    /// A new job every this many milliseconds.
    pub job_every_ms: u64,
    /// A new stream every this many milliseconds (while under the cap).
    pub stream_every_ms: u64,
    /// The server's retention (`--retention`), to know how long to wait.
    pub retention_s: u64,
}

/// A small, seedable xorshift generator: enough randomness for churn.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The service's own gauges from `/metrics`.
async fn gauges(endpoint: &Endpoint) -> Option<(i64, i64, i64)> {
    let response = client::request(endpoint, "GET", "/metrics", None).await.ok()?;
    let text = response.text();
    Some((
        gauge(&text, "jobcast_job_tasks")?,
        gauge(&text, "jobcast_streams_open")?,
        gauge(&text, "jobcast_jobs_in_memory")?,
    ))
}

/// One unlabelled metric's value in a `/metrics` text.
pub(crate) fn gauge(text: &str, name: &str) -> Option<i64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse::<f64>().ok().map(|value| value as i64)
    })
}

pub async fn churn(server: &Server, target: Target, spec: &Churn, common: &Common) -> RunReport {
    let started = Instant::now();
    let mut report = RunReport {
        scenario: "churn".to_owned(),
        label: format!("churn-{}s", spec.seconds),
        target: target.name().to_owned(),
        seconds: Some(spec.seconds as f64),
        load_average: procfs::load_average(),
        ..RunReport::default()
    };
    if target != Target::Jobcast {
        report
            .failures
            .push("churn reads jobcast's /metrics: jobcast only".to_owned());
        return report;
    }
    let endpoint = &server.endpoint;
    let Some((tasks_before, _, _)) = gauges(endpoint).await else {
        report.failures.push("no jobcast gauges in /metrics".to_owned());
        return report;
    };
    report.tasks_before = Some(tasks_before);
    report.rss_before_mib = mib(procfs::rss_bytes(server.pid).unwrap_or(0));
    let cpu_before = procfs::cpu_seconds(server.pid).unwrap_or(0.0);
    let client_cpu_before = own_cpu();
    let wait_before = procfs::run_delay_seconds(server.pid).unwrap_or(0.0);
    let run = Run::new(endpoint.clone(), common.clone());
    let open = Rc::new(Cell::new(0usize));
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ client::now_micros() as u64);
    let mut live_jobs: Vec<(String, Instant)> = Vec::new();
    let mut handles: Vec<JoinHandle<Seen>> = Vec::new();
    let mut to_end = 0u64;
    let mut created = 0usize;
    let end = started + Duration::from_secs(spec.seconds);
    // Memory is sampled over the first two thirds: what the server needs
    // under this load once warmed up. Afterwards it must not hold more.
    let two_thirds = started + Duration::from_secs(spec.seconds) * 2 / 3;
    let mut next_job = Instant::now();
    let mut next_stream = Instant::now();
    let mut next_sample = Instant::now();
    let mut rss_mid: Option<u64> = None;
    while Instant::now() < end {
        let now = Instant::now();
        if now < two_thirds && now >= next_sample {
            next_sample = now + Duration::from_millis(250);
            if let Ok(rss) = procfs::rss_bytes(server.pid) {
                rss_mid = Some(rss_mid.map_or(rss, |max| max.max(rss)));
            }
        }
        if now >= next_job {
            next_job = now + Duration::from_millis(spec.job_every_ms);
            let stages: Vec<_> = (0..1 + rng.below(3))
                .map(|index| json!({ "name": format!("stage{index}"), "weight": 1 + rng.below(3), "steps": 5 + rng.below(45) }))
                .collect();
            let mut params = json!({
                "stages": stages,
                "step_ms": 5 + rng.below(25),
                "delay_ms": rng.below(300),
                "repeat": 1 + rng.below(3),
            });
            if rng.chance(10) {
                params["fail_at"] = json!("stage0");
            }
            match create_job(endpoint, params).await {
                Ok(id) => {
                    created += 1;
                    if rng.chance(10) {
                        // Cancelled at a random point of its run.
                        let endpoint = endpoint.clone();
                        let path = format!("/v1/jobs/{id}/cancel");
                        let wait = Duration::from_millis(rng.below(1500));
                        tokio::task::spawn_local(async move {
                            tokio::time::sleep(wait).await;
                            let _ = client::request(&endpoint, "POST", &path, None).await;
                        });
                    }
                    live_jobs.push((id, now));
                }
                Err(error) => report.failures.push(error),
            }
            // Jobs last at most a few seconds; keep the recent ones.
            live_jobs.retain(|(_, at)| now.duration_since(*at) < Duration::from_secs(3));
        }
        while now >= next_stream && open.get() < spec.max_streams && !live_jobs.is_empty() {
            next_stream += Duration::from_millis(spec.stream_every_ms);
            let (id, _) = &live_jobs[rng.below(live_jobs.len() as u64) as usize];
            let leave_at = (!rng.chance(50)).then(|| now + Duration::from_millis(rng.below(1500)));
            let how = if rng.chance(15) {
                // The all-jobs stream never ends: it always leaves.
                Follow {
                    path: "/v1/events".to_owned(),
                    last_event_id: None,
                    leave_at: Some(now + Duration::from_millis(rng.below(1500))),
                    job_stream: false,
                    keep_connection: false,
                }
            } else {
                Follow {
                    path: format!("/v1/jobs/{id}/events"),
                    last_event_id: rng.chance(15).then(|| 1 + rng.below(20)),
                    leave_at,
                    job_stream: true,
                    keep_connection: false,
                }
            };
            if how.job_stream && how.leave_at.is_none() {
                to_end += 1;
            }
            let run = run.clone();
            let open = open.clone();
            open.set(open.get() + 1);
            handles.push(tokio::task::spawn_local(async move {
                let seen = follow(run, how).await;
                open.set(open.get() - 1);
                seen
            }));
        }
        if next_stream < now {
            next_stream = now;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let seen = join_all(handles, Instant::now() + Duration::from_secs(30)).await;
    // Streams that were refused (the job was gone, or a resume at its end)
    // expected no terminal event.
    let refused_to_end = seen.iter().filter(|seen| seen.refused && seen.to_end).count() as u64;
    report.terminal_expected = to_end.saturating_sub(refused_to_end);
    // Close the connections kept open, before the server must come back down.
    drop(seen);
    report.jobs = created;
    // Wait for every job to end and be forgotten, and every stream to close.
    let settle_until = Instant::now() + Duration::from_secs(spec.retention_s + 30);
    let mut last = None;
    while Instant::now() < settle_until {
        last = gauges(endpoint).await;
        if let Some((tasks, streams, jobs)) = last {
            if tasks <= tasks_before && streams == 0 && jobs == 0 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Let the allocator give back what it will before reading memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    report.server_cpu_s = procfs::cpu_seconds(server.pid).unwrap_or(0.0) - cpu_before;
    report.client_cpu_s = own_cpu() - client_cpu_before;
    report.server_wait_s = procfs::run_delay_seconds(server.pid).unwrap_or(0.0) - wait_before;
    report.rss_after_mib = mib(procfs::rss_bytes(server.pid).unwrap_or(0));
    report.rss_mid_mib = rss_mid.map(mib);
    report.peak_rss_mib = mib(procfs::peak_rss_bytes(server.pid).unwrap_or(0));
    if let Some((tasks, streams, jobs)) = last {
        report.tasks_after = Some(tasks);
        report.streams_open_after = Some(streams);
        report.jobs_in_memory_after = Some(jobs);
        if tasks > tasks_before {
            report
                .failures
                .push(format!("job tasks {tasks} after churn, {tasks_before} before"));
        }
        if streams != 0 {
            report
                .failures
                .push(format!("{streams} streams still open after churn"));
        }
        if jobs != 0 {
            report
                .failures
                .push(format!("{jobs} jobs still in memory after retention"));
        }
    } else {
        report.failures.push("no /metrics after churn".to_owned());
    }
    if let Some(mid) = report.rss_mid_mib {
        // Memory at the end, with nothing left, must not exceed the most
        // the server held during the first two thirds, with jobs and
        // streams live (a little slack for allocator bookkeeping).
        if report.rss_after_mib > mid * 1.05 + 1.0 {
            report.failures.push(format!(
                "memory grew: {:.1} MiB after churn, at most {:.1} MiB in its first two thirds",
                report.rss_after_mib, mid
            ));
        }
    }
    fill_stats(&mut report, &run);
    report.subscribers = report.streams as usize;
    if report.events_delivered > 0 {
        report.cpu_us_per_event = Some(report.server_cpu_s * 1e6 / report.events_delivered as f64);
    }
    report.check_invariants();
    report.wall_s = started.elapsed().as_secs_f64();
    report
}
