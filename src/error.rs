//! `ApiError`: every error the HTTP API answers, rendered as an RFC 9457
//! `application/problem+json` document. The only place errors get status
//! codes.

use std::sync::Arc;

use axum::http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::jobs::labels::LabelError;
use crate::jobs::registry::{CancelError, CreateError, KeyError, RetryError, WorkerError};
use crate::published::Published;

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("no job has the id {0:?}")]
    JobNotFound(String),
    #[error("nothing is served at {0}")]
    RouteNotFound(String),
    #[error("the job already ended {}", .0.status.as_str())]
    JobAlreadyEnded(Arc<Published>),
    #[error("the job is {}: only a failed or cancelled job can be retried", .0.status.as_str())]
    JobNotRetryable(Arc<Published>),
    #[error("the request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    Unauthorized(String),
    /// No valid credential (CONTRACT.md "Who may do what"); the worker
    /// calls' missing token is [`ApiError::Unauthorized`].
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{detail}")]
    TooManyRequests { detail: String, retry_after_seconds: u64 },
    #[error("{detail}")]
    Unavailable { detail: String, retry_after_seconds: u64 },
    #[error("the request head did not arrive within {}", humantime::format_duration(*.0))]
    RequestTimeout(std::time::Duration),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::JobNotFound(_) | ApiError::RouteNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::JobAlreadyEnded(_) | ApiError::JobNotRetryable(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized(_) | ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
        }
    }
}

/// The problem type URI for a status: `urn:jobcast:problem:<slug>`.
fn problem_type(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "urn:jobcast:problem:bad-request",
        StatusCode::UNAUTHORIZED => "urn:jobcast:problem:unauthorized",
        StatusCode::FORBIDDEN => "urn:jobcast:problem:forbidden",
        StatusCode::NOT_FOUND => "urn:jobcast:problem:not-found",
        StatusCode::METHOD_NOT_ALLOWED => "urn:jobcast:problem:method-not-allowed",
        StatusCode::REQUEST_TIMEOUT => "urn:jobcast:problem:request-timeout",
        StatusCode::CONFLICT => "urn:jobcast:problem:conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "urn:jobcast:problem:payload-too-large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "urn:jobcast:problem:unsupported-media-type",
        StatusCode::UNPROCESSABLE_ENTITY => "urn:jobcast:problem:unprocessable-entity",
        StatusCode::TOO_MANY_REQUESTS => "urn:jobcast:problem:too-many-requests",
        StatusCode::SERVICE_UNAVAILABLE => "urn:jobcast:problem:service-unavailable",
        _ => "urn:jobcast:problem:internal",
    }
}

/// A problem+json document for `status`, with extra members merged in.
pub fn problem(status: StatusCode, detail: &str, extra: Option<(&str, Value)>) -> Response {
    let mut body = json!({
        "type": problem_type(status),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    if let Some((name, value)) = extra {
        body[name] = value;
    }
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = self.to_string();
        match self {
            ApiError::JobAlreadyEnded(job) | ApiError::JobNotRetryable(job) => {
                let job: Value = serde_json::from_slice(&job.json).unwrap_or(Value::Null);
                problem(status, &detail, Some(("job", job)))
            }
            ApiError::Unavailable {
                retry_after_seconds, ..
            }
            | ApiError::TooManyRequests {
                retry_after_seconds, ..
            } => {
                let mut response = problem(status, &detail, None);
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(retry_after_seconds));
                response
            }
            ApiError::Unauthorized(_) => {
                let mut response = problem(status, &detail, None);
                response.headers_mut().insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"jobcast worker\""),
                );
                response
            }
            ApiError::Unauthenticated(_) => {
                let mut response = problem(status, &detail, None);
                response
                    .headers_mut()
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"jobcast\""));
                response
            }
            _ => problem(status, &detail, None),
        }
    }
}

impl From<CreateError> for ApiError {
    fn from(error: CreateError) -> Self {
        match error {
            CreateError::UnknownKind(_) | CreateError::InvalidParams(_) | CreateError::KeyReused(_) => {
                ApiError::Unprocessable(error.to_string())
            }
            CreateError::OwnerQueueFull(_) => ApiError::TooManyRequests {
                detail: error.to_string(),
                retry_after_seconds: 1,
            },
            CreateError::QueueFull(_) => ApiError::Unavailable {
                detail: error.to_string(),
                retry_after_seconds: 1,
            },
            CreateError::ShuttingDown => ApiError::Unavailable {
                detail: error.to_string(),
                retry_after_seconds: 5,
            },
            CreateError::Store(cause) => {
                tracing::error!(error = %cause, "a new job could not be stored");
                ApiError::Unavailable {
                    detail: "the job could not be stored; try again".to_owned(),
                    retry_after_seconds: 1,
                }
            }
        }
    }
}

impl From<WorkerError> for ApiError {
    fn from(error: WorkerError) -> Self {
        match error {
            WorkerError::NotFound(id) => ApiError::JobNotFound(id.to_string()),
            WorkerError::MissingToken => ApiError::Unauthorized(format!(
                "{error}: send the token that created the job as `Authorization: Bearer <token>`"
            )),
            WorkerError::WrongToken => ApiError::Forbidden(error.to_string()),
            WorkerError::Ended(job) => ApiError::JobAlreadyEnded(job),
            WorkerError::Refused(job_error) => ApiError::Unprocessable(job_error.message),
            WorkerError::RunnerUnreachable(_) => ApiError::Unavailable {
                detail: format!("{error}; try again"),
                retry_after_seconds: 1,
            },
        }
    }
}

impl From<CancelError> for ApiError {
    fn from(error: CancelError) -> Self {
        match error {
            CancelError::NotFound(id) => ApiError::JobNotFound(id.to_string()),
            CancelError::AlreadyEnded(job) => ApiError::JobAlreadyEnded(job),
        }
    }
}

impl From<LabelError> for ApiError {
    fn from(error: LabelError) -> Self {
        ApiError::Unprocessable(error.to_string())
    }
}

impl From<KeyError> for ApiError {
    fn from(error: KeyError) -> Self {
        ApiError::BadRequest(error.to_string())
    }
}

impl From<RetryError> for ApiError {
    fn from(error: RetryError) -> Self {
        match error {
            RetryError::NotFound(id) => ApiError::JobNotFound(id.to_string()),
            RetryError::NotRetryable(job) => ApiError::JobNotRetryable(job),
            RetryError::Create(error) => error.into(),
        }
    }
}
