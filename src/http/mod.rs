//! The HTTP API: shared state, the router with every endpoint, and the
//! middleware stack (request spans, panic safety net, authentication and
//! CORS ([`crate::auth`]), problem+json for axum's own 405s).

pub mod body;
pub mod dashboard;
pub mod jobs;
pub mod ops;
pub mod query;
pub mod session;
pub mod sse;
pub mod workers;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::auth::{self, Auth};
use crate::config::Config;
use crate::error::problem;
use crate::jobs::registry::Registry;
use crate::metrics::Metrics;
use sse::StreamSlots;

/// Settings the HTTP layer needs.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// Interval of `: keep-alive` comments on idle streams (zero: none).
    pub keep_alive: Duration,
    /// Base of the `retry:` hint sent to EventSource clients.
    pub retry: Duration,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
}

/// Everything a handler needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The job engine: every job read and change goes through it.
    pub registry: Registry,
    pub streams: StreamSlots,
    pub settings: Arc<HttpSettings>,
    /// The service's metrics: the streams own their counters, `/metrics`
    /// renders them all.
    pub metrics: Arc<Metrics>,
    /// Cancelled once every job has ended during shutdown: ends the
    /// all-jobs streams and pending long polls.
    pub closing: CancellationToken,
    /// Credentials, tickets, CORS: who may do what.
    pub auth: Arc<Auth>,
}

impl AppState {
    /// The HTTP layer's state around `registry`, with its settings from `config`.
    pub fn new(registry: Registry, metrics: Arc<Metrics>, config: &Config, auth: Arc<Auth>) -> Self {
        AppState {
            registry,
            streams: StreamSlots::new(config.max_streams, config.max_streams_per_owner),
            settings: Arc::new(HttpSettings {
                keep_alive: config.keep_alive,
                retry: config.retry,
                body_limit: config.body_limit,
            }),
            metrics,
            closing: CancellationToken::new(),
            auth,
        }
    }
}

/// Every endpoint of the API, ready to serve or to merge into another app.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/jobs", post(jobs::create).get(jobs::list))
        .route("/v1/jobs/{id}", get(jobs::get))
        .route("/v1/jobs/{id}/events", get(sse::job_events))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/v1/jobs/{id}/retry", post(jobs::retry))
        .route("/v1/jobs/{id}/heartbeat", post(workers::heartbeat))
        .route("/v1/jobs/{id}/complete", post(workers::complete))
        .route("/v1/jobs/{id}/fail", post(workers::fail))
        .route("/v1/events", get(sse::all_events))
        .route("/v1/kinds", get(jobs::kinds))
        .route("/v1/session", post(session::create).delete(session::delete))
        .route("/healthz", get(ops::health))
        .route("/readyz", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.yaml", get(ops::openapi))
        .route("/", get(dashboard::index))
        .route("/ui/{file}", get(dashboard::ui_file))
        .fallback(ops::not_found)
        .layer(
            // Outermost first: every request's span, then the panic safety
            // net, then authentication (and CORS), then problem bodies for
            // axum's own bare errors.
            ServiceBuilder::new()
                .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
                    let path = request
                        .extensions()
                        .get::<MatchedPath>()
                        .map(MatchedPath::as_str)
                        .unwrap_or("unmatched");
                    tracing::info_span!("request", method = %request.method(), path)
                }))
                .layer(CatchPanicLayer::custom(|_| -> Response {
                    problem(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the server failed to answer this request",
                        None,
                    )
                }))
                .layer(middleware::from_fn_with_state(state.clone(), auth::authenticate))
                .layer(middleware::map_response(ops::problem_for_bare_errors)),
        )
        .with_state(state)
}
