//! Criterion micro-benchmarks of SSE frame encoding: `NewState::new` then
//! `Published::stamp`, which turn one serialised job state into the job
//! stream's and the all-jobs stream's frames (done once per state, whatever the number of
//! subscribers), and the snapshot frame a new subscriber gets first. For
//! scale, the serialisation of the job itself (also once per state), which
//! the naive pattern repeats for every subscriber.
//!
//! Run: `cargo bench --bench frame`.

use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use jobcast::jobs::model::JobModel;
use jobcast::published::{NewState, Published};
use jobcast::{JobId, JobStatus, StageSpec};
use serde_json::json;

/// A job halfway through the demo's second stage, as it is published.
fn model() -> JobModel {
    let params = Arc::new(json!({
        "stages": [{ "name": "parsing", "weight": 0.2, "steps": 10 },
                   { "name": "analyzing", "weight": 0.8, "steps": 40 }],
        "step_ms": 100
    }));
    let mut model = JobModel::new(JobId::generate(), Arc::from("demo"), params, Utc::now());
    model.start(Utc::now());
    model
        .declare_stages(&[StageSpec::new("parsing", 0.2), StageSpec::new("analyzing", 0.8)])
        .expect("stages are declared once");
    model.start_stage("parsing", Some(10), Some("steps")).expect("declared");
    model.set_current(10);
    model
        .start_stage("analyzing", Some(40), Some("steps"))
        .expect("declared");
    model.report(20, "analyzing step 20/40");
    model.prepare_publish(std::time::Instant::now(), Utc::now());
    model
}

fn frames(c: &mut Criterion) {
    let model = model();
    let json = Bytes::from(serde_json::to_vec(&model.view()).expect("a job view serialises"));
    let kind: Arc<str> = Arc::from("demo");
    let mut group = c.benchmark_group("frame");
    group.throughput(Throughput::Bytes(json.len() as u64));
    group.bench_function("serialise_job", |b| {
        b.iter(|| serde_json::to_vec(&model.view()).expect("a job view serialises"))
    });
    let publish = || {
        Published::stamp(
            NewState::new(
                model.id(),
                kind.clone(),
                model.labels().clone(),
                JobStatus::Running,
                model.seq(),
                json.clone(),
            ),
            1_790_000_000_000_000,
        )
    };
    group.bench_function("published_new", |b| b.iter(publish));
    let published = publish();
    group.bench_function("job_snapshot_frame", |b| b.iter(|| published.job_snapshot_frame()));
    // What every subscriber gets per live event: a reference-count bump.
    group.bench_function("share_live_frame", |b| b.iter(|| published.job_frame.clone()));
    group.finish();
}

criterion_group!(benches, frames);
criterion_main!(benches);
