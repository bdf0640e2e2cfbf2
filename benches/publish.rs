//! Criterion micro-benchmarks of the publish path: a counter update through
//! `Publisher::update` on the in-memory store, which serialises the job
//! once, encodes its two SSE frames and sends one `Arc` on the job's and
//! the all-jobs channels. Measured with no subscriber and with 1,000 idle
//! ones (the send must not depend on how many there are), and with a
//! publish interval that merges the update instead of publishing it.
//!
//! Run: `cargo bench --bench publish`.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use jobcast::jobs::model::{Change, JobModel};
use jobcast::jobs::publish::Publisher;
use jobcast::metrics::Metrics;
use jobcast::store::memory::MemoryStore;
use jobcast::store::Store;
use jobcast::{JobId, StageSpec};
use serde_json::json;

/// A running job with the demo's two stages, the second one started.
fn running_job(store: &Arc<dyn Store>, interval: Duration) -> Arc<Publisher> {
    let params = Arc::new(json!({
        "stages": [{ "name": "parsing", "weight": 0.2, "steps": 10 },
                   { "name": "analyzing", "weight": 0.8, "steps": 1000000000 }],
        "step_ms": 0
    }));
    let model = JobModel::new(JobId::generate(), Arc::from("demo"), params, Utc::now());
    let (publisher, first) = Publisher::start(model, Default::default(), store, interval, Arc::new(Metrics::new()));
    futures_util::FutureExt::now_or_never(first)
        .expect("the memory store commits at once")
        .expect("a new job is stored");
    publisher.update(|job| ((), job.start(Utc::now())));
    publisher.update(|job| {
        let stages = [StageSpec::new("parsing", 0.2), StageSpec::new("analyzing", 0.8)];
        ((), job.declare_stages(&stages).expect("stages are declared once"))
    });
    publisher.update(|job| {
        let change = job
            .start_stage("analyzing", Some(1_000_000_000), Some("steps"))
            .expect("the stage was declared");
        ((), change)
    });
    publisher
}

fn publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("store_update");
    group.throughput(Throughput::Elements(1));
    for subscribers in [0usize, 1_000] {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let publisher = running_job(&store, Duration::ZERO);
        // Idle receivers, never read: they only lag and resynchronise.
        let receivers: Vec<_> = (0..subscribers)
            .map(|_| {
                futures_util::FutureExt::now_or_never(store.subscribe(publisher.id()))
                    .flatten()
                    .expect("the job exists")
                    .receiver
            })
            .collect();
        let mut step = 0u64;
        group.bench_with_input(
            BenchmarkId::new("publishes", format!("{subscribers}_subscribers")),
            &subscribers,
            |b, _| {
                b.iter(|| {
                    step += 1;
                    let message = format!("analyzing step {step}");
                    publisher.update(|job| {
                        job.set_current(step);
                        job.set_message(&message);
                        ((), Change::Counter)
                    })
                })
            },
        );
        drop(receivers);
    }
    // With the default 10 ms interval, updates between publishes only merge.
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let publisher = running_job(&store, Duration::from_secs(3600));
    let mut step = 0u64;
    group.bench_function("merges_within_interval", |b| {
        b.iter(|| {
            step += 1;
            publisher.update(|job| ((), job.set_current(step)))
        })
    });
    group.finish();
}

criterion_group!(benches, publish);
criterion_main!(benches);
