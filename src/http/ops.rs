//! Operational endpoints: liveness, readiness, metrics, the OpenAPI spec,
//! and the problem+json answers for unknown routes and wrong methods.

use axum::extract::{OriginalUri, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::AppState;
use crate::auth::Access;
use crate::error::{problem, ApiError, PROBLEM_JSON};

/// The spec this server implements, embedded at build time.
pub const OPENAPI_YAML: &str = include_str!("../../openapi.yaml");

/// `200` while the process can serve; `503` once only a restart helps
/// (its shared store lost what it has seen).
pub async fn health(State(app): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    if let Some(why) = app.registry.store_broken() {
        return Err(ApiError::Unavailable {
            detail: why,
            retry_after_seconds: 5,
        });
    }
    Ok(Json(json!({ "status": "ok" })))
}

pub async fn ready(State(app): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    if app.registry.is_shutting_down() {
        return Err(ApiError::Unavailable {
            detail: "the server is shutting down".to_owned(),
            retry_after_seconds: 5,
        });
    }
    if let Some(why) = app.registry.store_broken() {
        return Err(ApiError::Unavailable {
            detail: why,
            retry_after_seconds: 5,
        });
    }
    if !app.registry.is_store_available() {
        return Err(ApiError::Unavailable {
            detail: "the job store cannot be written (is the disk full?)".to_owned(),
            retry_after_seconds: 1,
        });
    }
    Ok(Json(json!({ "status": "ready" })))
}

/// Prometheus text; with authentication on, for admins only.
pub async fn metrics(State(app): State<AppState>, access: Access) -> Result<impl IntoResponse, ApiError> {
    if !access.is_admin() {
        return Err(ApiError::Forbidden("only an admin may read the metrics".to_owned()));
    }
    let engine = app.registry.metrics_snapshot().await;
    Ok((
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(&engine, app.streams.open()),
    ))
}

pub async fn openapi() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/yaml")], OPENAPI_YAML)
}

pub async fn not_found(OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::RouteNotFound(uri.path().to_owned())
}

/// Gives axum's bare 405 (which carries `Allow` but no body) a problem body.
pub async fn problem_for_bare_errors(response: Response) -> Response {
    let is_problem = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if response.status() != StatusCode::METHOD_NOT_ALLOWED || is_problem {
        return response;
    }
    let (parts, _) = response.into_parts();
    let mut answer = problem(
        parts.status,
        "this method is not allowed here; see the Allow header",
        None,
    );
    for (name, value) in &parts.headers {
        if name != CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    answer
}
