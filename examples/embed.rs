//! Embedding jobcast in your own axum app, with a job kind of your own.
//!
//! Run it with `cargo run --example embed`, then:
//!
//! ```text
//! curl -s -X POST localhost:8080/v1/jobs -H 'content-type: application/json' \
//!      -d '{"kind": "count_primes", "params": {"below": 2000000}}'
//! curl -N localhost:8080/v1/jobs/<id>/events
//! ```

use axum::routing::get;
use axum::Router;
use jobcast::{App, Config, JobContext, JobError, Kind};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// The params of `count_primes`; unknown params are refused with 422.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CountPrimes {
    below: u64,
}

/// Counts primes in two weighted stages: sieving, then counting.
async fn count_primes(ctx: JobContext, params: CountPrimes) -> Result<Value, JobError> {
    let limit = usize::try_from(params.below)
        .ok()
        .filter(|&limit| limit <= 50_000_000)
        .ok_or_else(|| JobError::new("too_large", "below must be at most 50,000,000"))?;
    ctx.declare_stages([("sieve", 0.8), ("count", 0.2)])?;

    let mut composite = vec![false; limit.max(2)];
    let root = (limit as f64).sqrt() as usize + 1;
    ctx.start_stage("sieve", Some(root as u64), Some("numbers"))?;
    for n in 2..root.min(limit) {
        if !composite[n] {
            (n * n..limit)
                .step_by(n)
                .for_each(|multiple| composite[multiple] = true);
        }
        ctx.set_current(n as u64 + 1);
        // Let other tasks run, and stop promptly when cancelled.
        ctx.check_cancelled()?;
        tokio::task::yield_now().await;
    }

    ctx.start_stage("count", Some(limit as u64), Some("numbers"))?;
    let mut primes = 0u64;
    for (chunk_index, chunk) in composite.chunks(1 << 16).enumerate() {
        let start = chunk_index << 16;
        primes += chunk
            .iter()
            .enumerate()
            .filter(|&(offset, &is_composite)| start + offset >= 2 && !is_composite)
            .count() as u64;
        ctx.set_current((start + chunk.len()) as u64);
        ctx.check_cancelled()?;
        tokio::task::yield_now().await;
    }
    Ok(json!({ "below": params.below, "primes": primes }))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let config = Config::default();
    jobcast::telemetry::init(&config.log, config.log_format);
    let shutdown = CancellationToken::new();
    tokio::spawn(jobcast::cancel_on_signal(shutdown.clone()));

    let primes = Kind::new("count_primes", count_primes)
        .description("Counts the primes below a number")
        .params_schema(json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["below"],
            "properties": { "below": { "type": "integer", "minimum": 0, "maximum": 50_000_000 } }
        }))
        .example(json!({ "below": 1_000_000 }));
    let jobs = App::new(&config, [jobcast::kinds::demo::kind(), primes], shutdown.clone())
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;

    // jobcast's routes beside the app's own.
    let app = Router::new()
        .route("/hello", get(|| async { "hello from the embedding app\n" }))
        .merge(jobs.router());

    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    println!("listening on http://{}", config.listen);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.cancelled().await;
            jobs.drain().await;
        })
        .await
}
