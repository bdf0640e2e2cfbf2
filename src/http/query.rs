//! Query strings as users write them: repeated keys (`status=a&status=b`)
//! and typed values whose malformed forms answer 400 rather than being
//! silently ignored.

use std::str::FromStr;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::HeaderMap;

use crate::error::ApiError;
use crate::jobs::labels::LabelFilter;
use crate::jobs::JobId;

/// The decoded `key=value` pairs of a query string, in order.
pub struct QueryParams(Vec<(String, String)>);

impl QueryParams {
    pub fn parse(raw: Option<&str>) -> Self {
        QueryParams(
            form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .map(|(key, value)| (key.into_owned(), value.into_owned()))
                .collect(),
        )
    }

    /// Every value given for `key`.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }

    /// Whether `key` was given at all.
    pub fn has(&self, key: &str) -> bool {
        self.all(key).next().is_some()
    }

    /// The value of a single-valued parameter (the last, if repeated).
    pub fn last<'a>(&'a self, key: &'a str) -> Option<&'a str> {
        self.all(key).last()
    }

    /// A single-valued parameter parsed as `T`; a malformed value is a 400.
    pub fn parsed<T: FromStr>(&self, key: &str, expected: &str) -> Result<Option<T>, ApiError> {
        self.last(key)
            .map(|value| {
                value
                    .parse()
                    .map_err(|_| ApiError::BadRequest(format!("{key} must be {expected}, not {value:?}")))
            })
            .transpose()
    }

    /// Every value of a repeatable parameter parsed as `T`; any malformed one is a 400.
    pub fn parsed_all<T: FromStr>(&self, key: &str, expected: &str) -> Result<Vec<T>, ApiError> {
        self.all(key)
            .map(|value| {
                value
                    .parse()
                    .map_err(|_| ApiError::BadRequest(format!("{key} must be {expected}, not {value:?}")))
            })
            .collect()
    }

    /// The `label=KEY=VALUE` filters; one without `=` or with an empty key
    /// is a 400. A key no label could have simply matches nothing.
    pub fn label_filters(&self) -> Result<Vec<LabelFilter>, ApiError> {
        self.all("label")
            .map(|filter| match filter.split_once('=') {
                Some((key, value)) if !key.is_empty() => Ok(LabelFilter {
                    key: key.to_owned(),
                    value: value.to_owned(),
                }),
                _ => Err(ApiError::BadRequest(format!(
                    "label must be KEY=VALUE with a non-empty KEY, not {filter:?}"
                ))),
            })
            .collect()
    }
}

/// The job id in a path; a malformed one names no job (404).
fn job_id(path: &str) -> Result<JobId, ApiError> {
    path.parse().map_err(|_| ApiError::JobNotFound(path.to_owned()))
}

/// The job a `/v1/jobs/{id}/…` path names. An id that is not a job id,
/// even one whose percent-decoding is not UTF-8 (`%FF`), names no job: 404
/// as problem+json, like any unknown id.
pub struct JobPath(pub JobId);

impl<S: Send + Sync> FromRequestParts<S> for JobPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(id)) => job_id(&id).map(JobPath),
            Err(_) => {
                let raw = parts.uri.path().split('/').nth(3).unwrap_or_default();
                Err(ApiError::JobNotFound(raw.to_owned()))
            }
        }
    }
}

/// The stream position a reconnecting client asks to resume after: the
/// `Last-Event-ID` header, else the `last_event_id` query parameter. The
/// header wins when both are present; a malformed value counts as absent.
pub fn last_event_id(headers: &HeaderMap, query: &QueryParams) -> Option<u64> {
    match headers.get("last-event-id") {
        Some(header) => header.to_str().ok()?.trim().parse().ok(),
        None => query.last("last_event_id")?.trim().parse().ok(),
    }
}
