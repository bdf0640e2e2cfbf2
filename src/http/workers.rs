//! The endpoints an external worker drives its job with: heartbeat (with
//! progress), complete and fail. Each needs the job's worker token as
//! `Authorization: Bearer <token>`; it is checked before the body is read,
//! and a request without it (401) or with another (403) changes nothing.

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, TRANSFER_ENCODING};
use axum::http::request::Parts;
use axum::response::Response;
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::JsonBody;
use super::jobs::job_json;
use super::query::JobPath;
use super::AppState;
use crate::error::ApiError;
use crate::jobs::names::{is_lowercase_name, MAX_NAME_LENGTH};
use crate::jobs::report::ProgressReport;
use crate::jobs::worker::RESERVED_CODES;
use crate::jobs::{JobError, JobId};

/// The job a worker call is for, with the token it presented, already
/// checked: extracting it answers 404, 401 or 403 before the body is read.
pub struct WorkerAuth {
    id: JobId,
    token: String,
}

impl FromRequestParts<AppState> for WorkerAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        let JobPath(id) = JobPath::from_request_parts(parts, app).await?;
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(bearer_token)
            .map(str::to_owned);
        app.registry.check_worker(id, token.as_deref()).await?;
        Ok(WorkerAuth {
            id,
            token: token.unwrap_or_default(),
        })
    }
}

/// The token of an `Authorization: Bearer <token>` value.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A JSON body that may be left out, which then reads as `T::default()`:
/// an empty body, whatever the `Content-Type` (generated clients send
/// `application/json` with nothing after it).
pub struct OptionalJsonBody<T>(T);

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, app: &AppState) -> Result<Self, Self::Rejection> {
        let headers = request.headers();
        // In HTTP/1.1 a request with neither header has no body.
        let empty = match headers.get(CONTENT_LENGTH) {
            Some(length) => length.as_bytes() == b"0",
            None => headers.get(TRANSFER_ENCODING).is_none(),
        };
        if empty {
            return Ok(OptionalJsonBody(T::default()));
        }
        let JsonBody(body) = JsonBody::from_request(request, app).await?;
        Ok(OptionalJsonBody(body))
    }
}

/// Reports progress and keeps the job alive. Answers
/// `{"cancel_requested": true}` once the job was asked to stop: the job is
/// then cancelled, and the worker should stop.
pub async fn heartbeat(
    State(app): State<AppState>,
    auth: WorkerAuth,
    OptionalJsonBody(report): OptionalJsonBody<ProgressReport>,
) -> Result<Json<Value>, ApiError> {
    let cancel_requested = app.registry.heartbeat(auth.id, Some(&auth.token), report).await?;
    Ok(Json(json!({ "cancel_requested": cancel_requested })))
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Completion {
    #[serde(default)]
    result: Value,
}

/// Completes the job with the worker's result; answers the final job.
pub async fn complete(
    State(app): State<AppState>,
    auth: WorkerAuth,
    OptionalJsonBody(completion): OptionalJsonBody<Completion>,
) -> Result<Response, ApiError> {
    let job = app
        .registry
        .complete(auth.id, Some(&auth.token), completion.result)
        .await?;
    Ok(job_json(&job))
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failure {
    code: Option<String>,
    message: Option<String>,
    retryable: Option<bool>,
}

const DEFAULT_FAILURE_CODE: &str = "worker_failed";

impl Failure {
    fn into_job_error(self) -> Result<JobError, ApiError> {
        let code = self.code.unwrap_or_else(|| DEFAULT_FAILURE_CODE.to_owned());
        if !is_lowercase_name(&code, &['_']) {
            return Err(ApiError::Unprocessable(format!(
                "code {code:?} must be lowercase letters, digits and `_`, starting with a letter, at most {MAX_NAME_LENGTH} long"
            )));
        }
        if RESERVED_CODES.contains(&code.as_str()) {
            return Err(ApiError::Unprocessable(format!(
                "code {code:?} is the server's to give; acknowledge a cancel with a heartbeat"
            )));
        }
        let message = self
            .message
            .unwrap_or_else(|| "the worker reported a failure".to_owned());
        Ok(JobError::new(code, message).retryable(self.retryable.unwrap_or(false)))
    }
}

/// Fails the job with the worker's error; answers the final job.
pub async fn fail(
    State(app): State<AppState>,
    auth: WorkerAuth,
    OptionalJsonBody(failure): OptionalJsonBody<Failure>,
) -> Result<Response, ApiError> {
    let error = failure.into_job_error()?;
    let job = app.registry.fail(auth.id, Some(&auth.token), error).await?;
    Ok(job_json(&job))
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer   abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("abc"), None);
    }
}
