//! Creation: `creates` short demo jobs (one step, no wait) created by
//! `concurrency` clients, each on a connection it keeps, as fast as the
//! server answers or at a fixed rate. Every answer must be a 202; with the
//! SQLite store each 202 means the job's first state is committed. Reports
//! creates per second and the latency of each `POST /v1/jobs`.
//!
//! Every `sample_ms` (and for `linger_s` after the last create, while
//! retention forgets the jobs) it samples the server's resident memory, the
//! jobs it holds and its database file and write-ahead log: over a long
//! churn, these must reach a plateau.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::client;
use crate::procfs;
use crate::report::RunReport;
use crate::scenarios::{fill_latency, gauge, mib, own_cpu};
use crate::server::{Server, Target};

#[derive(Clone, Debug)]
pub struct Creates {
    pub creates: usize,
    pub concurrency: usize,
    /// Creates per second over all clients; none: as fast as answered.
    pub rate: Option<f64>,
    /// The server's `--retention`, in seconds; none: its default.
    pub retention_s: Option<u64>,
    pub sample_ms: u64,
    /// How long to go on sampling after the last create.
    pub linger_s: u64,
}

/// The server at one moment of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// Since the first create.
    pub at_s: f64,
    pub created: usize,
    pub rss_mib: f64,
    /// `jobcast_jobs_in_memory`, when `/metrics` answered.
    pub jobs_held: Option<i64>,
    /// The database file and its write-ahead log (SQLite only).
    pub db_mib: Option<f64>,
    pub wal_mib: Option<f64>,
}

const BODY: &str = r#"{"kind":"demo","params":{"stages":[{"name":"only","weight":1.0,"steps":1}],"step_ms":0}}"#;

/// Counters the clients share.
struct Shared {
    next: Cell<usize>,
    accepted: Cell<usize>,
    latency: RefCell<Histogram<u64>>,
    failures: RefCell<Vec<String>>,
    refused: Cell<u64>,
}

pub async fn creates(server: &Server, target: Target, spec: &Creates) -> RunReport {
    let mut report = RunReport {
        scenario: "creates".to_owned(),
        label: format!("creates-{}x{}", spec.creates, spec.concurrency),
        target: target.name().to_owned(),
        jobs: spec.creates,
        subscribers: spec.concurrency,
        load_average: procfs::load_average(),
        ..RunReport::default()
    };
    if let Some(rate) = spec.rate {
        report.label.push_str(&format!("@{rate}/s"));
    }
    let shared = Rc::new(Shared {
        next: Cell::new(0),
        accepted: Cell::new(0),
        latency: RefCell::new(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")),
        failures: RefCell::new(Vec::new()),
        refused: Cell::new(0),
    });
    report.rss_before_mib = mib(procfs::rss_bytes(server.pid).unwrap_or(0));
    let cpu_before = procfs::cpu_seconds(server.pid).unwrap_or(0.0);
    let client_cpu_before = own_cpu();
    let wait_before = procfs::run_delay_seconds(server.pid).unwrap_or(0.0);
    let started = Instant::now();
    let clients: Vec<_> = (0..spec.concurrency.max(1))
        .map(|index| {
            tokio::task::spawn_local(create_jobs(
                server.endpoint.clone(),
                index,
                spec.clone(),
                shared.clone(),
                started,
            ))
        })
        .collect();
    let mut samples = Vec::new();
    let mut created_at = None;
    loop {
        let done = clients.iter().all(|client| client.is_finished());
        if done && created_at.is_none() {
            created_at = Some(started.elapsed());
        }
        samples.push(sample(server, started, shared.accepted.get()).await);
        if created_at.is_some_and(|at| started.elapsed() >= at + Duration::from_secs(spec.linger_s)) {
            break;
        }
        let next = started + Duration::from_millis(spec.sample_ms.max(10)) * samples.len() as u32;
        while Instant::now() < next && (created_at.is_some() || !clients.iter().all(|client| client.is_finished())) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let created_in = created_at.unwrap_or_default().as_secs_f64();
    report.server_cpu_s = procfs::cpu_seconds(server.pid).unwrap_or(0.0) - cpu_before;
    report.client_cpu_s = own_cpu() - client_cpu_before;
    report.server_wait_s = procfs::run_delay_seconds(server.pid).unwrap_or(0.0) - wait_before;
    report.peak_rss_mib = mib(procfs::peak_rss_bytes(server.pid).unwrap_or(0));
    report.rss_after_mib = mib(procfs::rss_bytes(server.pid).unwrap_or(0));
    report.seconds = Some(created_in);
    let accepted = shared.accepted.get();
    report.creates_per_s = (created_in > 0.0).then(|| accepted as f64 / created_in);
    report.refused = shared.refused.get();
    fill_latency(&mut report, &shared.latency.borrow());
    report.failures = shared.failures.borrow().clone();
    if accepted != spec.creates {
        report
            .failures
            .push(format!("{accepted} of {} creates answered 202", spec.creates));
    }
    report.samples = samples;
    report.wall_s = started.elapsed().as_secs_f64();
    report
}

/// One client: takes the next create until all are taken, on one kept
/// connection (a new one if the server closed it).
async fn create_jobs(endpoint: client::Endpoint, index: usize, spec: Creates, shared: Rc<Shared>, started: Instant) {
    let mut connection = None;
    loop {
        let number = shared.next.get();
        if number >= spec.creates {
            return;
        }
        shared.next.set(number + 1);
        if let Some(rate) = spec.rate {
            let due = started + Duration::from_secs_f64(number as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let sent = Instant::now();
        let stream = match connection.take() {
            Some(stream) => Ok(stream),
            None => endpoint.connect(index).await,
        };
        let answer = match stream {
            Ok(mut stream) => {
                let answer = client::exchange(&mut stream, &endpoint, "POST", "/v1/jobs", Some(BODY), true).await;
                if answer.is_ok() {
                    connection = Some(stream);
                }
                answer
            }
            Err(error) => Err(error),
        };
        match answer {
            Ok(response) if response.status == 202 => {
                let micros = sent.elapsed().as_micros() as u64;
                let _ = shared.latency.borrow_mut().record(micros.max(1));
                shared.accepted.set(shared.accepted.get() + 1);
            }
            Ok(response) => {
                shared.refused.set(shared.refused.get() + 1);
                let mut failures = shared.failures.borrow_mut();
                if failures.len() < 5 {
                    failures.push(format!("create answered {}: {}", response.status, response.text()));
                }
            }
            Err(error) => {
                let mut failures = shared.failures.borrow_mut();
                if failures.len() < 5 {
                    failures.push(format!("create: {error}"));
                }
            }
        }
    }
}

async fn sample(server: &Server, started: Instant, created: usize) -> Sample {
    let jobs_held = client::request(&server.endpoint, "GET", "/metrics", None)
        .await
        .ok()
        .and_then(|response| gauge(&response.text(), "jobcast_jobs_in_memory"));
    let database = server.database_bytes();
    Sample {
        at_s: started.elapsed().as_secs_f64(),
        created,
        rss_mib: mib(procfs::rss_bytes(server.pid).unwrap_or(0)),
        jobs_held,
        db_mib: database.map(|(db, _)| mib(db)),
        wal_mib: database.map(|(_, wal)| mib(wal)),
    }
}
