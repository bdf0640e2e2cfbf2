//! The service's own Prometheus metrics, all named `jobcast_*`.
//!
//! Each metric has one owner that updates it: the engine counts jobs
//! created, states published and cancel latency; the event streams count
//! events sent and lag resynchronisations. Gauges that describe the whole
//! service (jobs by status, queued, running, held, live tasks, open streams)
//! are read from their owners when `/metrics` is scraped, so they can never
//! drift from the truth. This module imports neither the engine nor the
//! store: they hand it plain facts.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Scrape-time facts from the engine.
#[derive(Debug, Default, Clone)]
pub struct EngineSnapshot {
    /// Jobs held, by status name, for every status.
    pub jobs_by_status: Vec<(&'static str, usize)>,
    pub queued: usize,
    pub running_tasks: usize,
    pub job_tasks: usize,
    /// Job rows the store has written to its backend (0 for memory).
    pub store_writes: u64,
}

pub struct Metrics {
    registry: Registry,
    pub jobs_created: Counter,
    pub events_published: Counter,
    pub events_sent: Counter,
    pub lag_resyncs: Counter,
    pub cancel_latency: Histogram,
    jobs_by_status: Family<Vec<(String, String)>, Gauge>,
    jobs_running: Gauge,
    jobs_queued: Gauge,
    jobs_in_memory: Gauge,
    job_tasks: Gauge,
    streams_open: Gauge,
    store_writes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let metrics = Metrics {
            jobs_created: Counter::default(),
            events_published: Counter::default(),
            events_sent: Counter::default(),
            lag_resyncs: Counter::default(),
            // 1 ms to about 33 s.
            cancel_latency: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            jobs_by_status: Family::default(),
            jobs_running: Gauge::default(),
            jobs_queued: Gauge::default(),
            jobs_in_memory: Gauge::default(),
            job_tasks: Gauge::default(),
            streams_open: Gauge::default(),
            store_writes: Counter::default(),
            registry: Registry::default(),
        };
        registry.register("jobcast_jobs_created", "Jobs accepted", metrics.jobs_created.clone());
        registry.register(
            "jobcast_events_published",
            "Job states published (each serialised once)",
            metrics.events_published.clone(),
        );
        registry.register(
            "jobcast_events_sent",
            "Events written to stream subscribers",
            metrics.events_sent.clone(),
        );
        registry.register(
            "jobcast_lag_resyncs",
            "Times a lagging subscriber was resynchronised to the latest state",
            metrics.lag_resyncs.clone(),
        );
        registry.register(
            "jobcast_cancel_latency_seconds",
            "Time from a cancel request to the job's end",
            metrics.cancel_latency.clone(),
        );
        registry.register(
            "jobcast_jobs",
            "Jobs held in memory, by status",
            metrics.jobs_by_status.clone(),
        );
        registry.register(
            "jobcast_jobs_running",
            "Jobs holding a running slot",
            metrics.jobs_running.clone(),
        );
        registry.register(
            "jobcast_jobs_queued",
            "Jobs waiting for a running slot",
            metrics.jobs_queued.clone(),
        );
        registry.register(
            "jobcast_jobs_in_memory",
            "Jobs of any status the server still holds",
            metrics.jobs_in_memory.clone(),
        );
        registry.register(
            "jobcast_job_tasks",
            "Live job and housekeeping tasks",
            metrics.job_tasks.clone(),
        );
        registry.register(
            "jobcast_streams_open",
            "Open event streams",
            metrics.streams_open.clone(),
        );
        registry.register(
            "jobcast_store_writes",
            "Job rows written by the durable store (0 for memory)",
            metrics.store_writes.clone(),
        );
        Metrics { registry, ..metrics }
    }

    /// The Prometheus text exposition, with gauges set from the engine's
    /// facts and the number of open streams.
    pub fn render(&self, engine: &EngineSnapshot, streams_open: usize) -> String {
        for &(status, count) in &engine.jobs_by_status {
            self.jobs_by_status
                .get_or_create(&vec![("status".to_owned(), status.to_owned())])
                .set(count as i64);
        }
        let held: usize = engine.jobs_by_status.iter().map(|(_, count)| count).sum();
        self.jobs_running.set(engine.running_tasks as i64);
        self.jobs_queued.set(engine.queued as i64);
        self.jobs_in_memory.set(held as i64);
        self.job_tasks.set(engine.job_tasks as i64);
        self.streams_open.set(streams_open as i64);
        // The store owns the count; the counter only shows it.
        self.store_writes
            .inner()
            .store(engine.store_writes, std::sync::atomic::Ordering::Relaxed);
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}
