//! What one commit costs the SQLite store: a transaction of 1, 10 or 100
//! job rows (the store's upsert of a ~700-byte job state), on the store's
//! own schema, in WAL mode with `synchronous = NORMAL` (what the store
//! uses: no sync per commit) and `FULL` (a sync per commit). Throughput is
//! per row, so the per-row cost of each batch size reads directly. The
//! database is a fresh file in the temporary directory, which should be on
//! the disk the store would use.
//!
//! Run: `cargo bench --bench sqlite_commit`.

use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use jobcast::store::sqlite::schema;
use jobcast::JobId;
use rusqlite::Connection;
use serde_json::json;

/// Distinct jobs the rows cycle over, as a server's live jobs would.
const JOBS: usize = 1000;

/// A demo job's state halfway through, about as large as the server stores it.
fn state_json(id: JobId, seq: u64) -> String {
    json!({
        "id": id.to_string(), "kind": "demo", "status": "running", "seq": seq,
        "created_at": "2026-12-03T13:00:00.000000Z", "started_at": "2026-12-03T13:00:00.100000Z",
        "updated_at": "2026-12-03T13:00:01.234567Z", "finished_at": null,
        "progress": { "percent": 46.0, "stage": "analyzing", "current": 300, "total": 1000, "rate_per_s": 1000.0, "eta_s": 0.7 },
        "stages": [
            { "name": "parsing", "weight": 0.2, "status": "completed", "current": 10, "total": 10 },
            { "name": "analyzing", "weight": 0.8, "status": "running", "current": 300, "total": 1000 }
        ],
        "params": { "stages": [{ "name": "parsing", "weight": 0.2, "steps": 10 }, { "name": "analyzing", "weight": 0.8, "steps": 1000 }], "step_ms": 1 },
        "labels": {}, "logs_url": null, "result": null, "error": null, "retry_of": null
    })
    .to_string()
}

struct Database {
    dir: PathBuf,
    connection: Connection,
    /// Each job's id and state, made beforehand: only SQLite is measured.
    jobs: Vec<(String, String)>,
    seq: u64,
}

impl Database {
    fn open(synchronous: &str) -> Database {
        let dir = std::env::temp_dir().join(format!("jobcast-bench-commit-{}-{synchronous}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let connection = schema::open(&dir.join("jobs.db")).unwrap();
        connection.pragma_update(None, "synchronous", synchronous).unwrap();
        let jobs = (0..JOBS)
            .map(|_| {
                let id = JobId::generate();
                (id.to_string(), state_json(id, 7))
            })
            .collect();
        Database {
            dir,
            connection,
            jobs,
            seq: 0,
        }
    }

    /// One transaction writing the next `rows` rows.
    fn commit(&mut self, rows: usize) {
        let transaction = self.connection.transaction().unwrap();
        {
            let mut upsert = transaction.prepare_cached(schema::UPSERT_JOB).unwrap();
            for _ in 0..rows {
                self.seq += 1;
                let (id, json) = &self.jobs[self.seq as usize % JOBS];
                upsert
                    .execute(rusqlite::params![
                        id,
                        "demo",
                        "running",
                        self.seq as i64,
                        self.seq as i64,
                        json,
                        None::<String>
                    ])
                    .unwrap();
            }
        }
        transaction.commit().unwrap();
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn commits(c: &mut Criterion) {
    let mut group = c.benchmark_group("sqlite_commit");
    group.measurement_time(Duration::from_secs(4));
    for synchronous in ["NORMAL", "FULL"] {
        let mut database = Database::open(synchronous);
        for rows in [1, 10, 100] {
            group.throughput(Throughput::Elements(rows as u64));
            group.bench_with_input(BenchmarkId::new(synchronous, rows), &rows, |b, &rows| {
                b.iter(|| database.commit(rows));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, commits);
criterion_main!(benches);
