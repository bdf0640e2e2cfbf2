//! Baseline "naive axum": the pattern of axum's SSE example applied to job
//! progress. Each job has a tokio broadcast channel of its states; each
//! subscriber turns its receiver into a `BroadcastStream` and every state
//! into an `axum::response::sse::Event` with `Event::json_data`, so the job
//! is serialised with `serde_json` once per subscriber per event. Lagged
//! receivers simply skip what they missed (`filter_map(Result::ok)`), and
//! nothing is merged: every step is a state.
//!
//! Only what the load generator needs: `POST /v1/jobs` (demo params),
//! `GET /v1/jobs/{id}/events`, `GET /healthz`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use clap::Parser;
use futures_util::stream::{self, Stream, StreamExt};
use jobcast_bench::demo::{self, Hub, JobState};
use tokio_stream::wrappers::BroadcastStream;

/// The naive axum SSE pattern: serde_json per subscriber per event.
#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8091")]
    listen: SocketAddr,
    /// Per-job broadcast channel capacity.
    #[arg(long, default_value_t = 1024)]
    capacity: usize,
}

type Jobs = Arc<Hub<Arc<JobState>>>;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let hub: Jobs = Hub::new(args.capacity);
    let app = Router::new()
        .route("/v1/jobs", post(create))
        .route("/v1/jobs/{id}/events", get(events))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(hub);
    let listener = tokio::net::TcpListener::bind(args.listen).await?.tap_io(|tcp| {
        // As jobcast does: small events, latency over packing.
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await
}

async fn create(State(hub): State<Jobs>, body: Bytes) -> Response {
    let Some((params, demo_params)) = demo::parse_create(&body) else {
        return StatusCode::UNPROCESSABLE_ENTITY.into_response();
    };
    let job = JobState::queued(params);
    let id = job.id.clone();
    hub.insert(id.clone(), Arc::new(job.clone()));
    let response = (StatusCode::ACCEPTED, Json(job.clone())).into_response();
    tokio::spawn(demo::run(job, demo_params, move |state| {
        hub.publish(&id, Arc::new(state.clone()), state.is_terminal());
    }));
    response
}

fn to_event(job: &JobState, name: &'static str) -> Result<Event, Infallible> {
    Ok(Event::default()
        .event(name)
        .id(job.seq.to_string())
        .json_data(job)
        .expect("a job state always serialises"))
}

async fn events(
    State(hub): State<Jobs>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, StatusCode> {
    let (snapshot, receiver) = hub.subscribe(&id).ok_or(StatusCode::NOT_FOUND)?;
    let first_name = if snapshot.is_terminal() {
        snapshot.status
    } else {
        "snapshot"
    };
    let first = stream::once(async move { to_event(&snapshot, first_name) });
    let live = stream::iter(receiver)
        .flat_map(BroadcastStream::new)
        .filter_map(|received| async move { received.ok() })
        .map(|job| to_event(&job, job.event_name()));
    Ok(Sse::new(first.chain(live)).keep_alive(KeepAlive::default()))
}
