//! `JsonBody<T>`: a JSON request body with the contract's errors — 415 for
//! another media type, 413 past the body limit, 400 for invalid JSON, 422
//! for valid JSON of the wrong shape — all as problem+json.
//!
//! Written by hand rather than with axum's `Json` and tower-http's body
//! limit because those answer in their own plain-text shapes, and because a
//! body over the limit is read and discarded (up to a cap) before the 413 is
//! sent, so a client still writing its body can read the answer.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use bytes::BytesMut;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::error::Category;
use tokio::time::{timeout_at, Instant};

use super::AppState;
use crate::error::ApiError;

/// How much of an oversized body is read and discarded before answering.
const DISCARD_CAP: usize = 64 * 1024 * 1024;
/// How long reading a body may take in all.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let content_type = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        if !is_json(content_type) {
            return Err(ApiError::UnsupportedMediaType(format!(
                "the body must be application/json, not {:?}",
                content_type
            )));
        }
        let limit = state.settings.body_limit;
        let declared = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        let bytes = read_limited(request.into_body(), limit, declared).await?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|error| match error.classify() {
                Category::Data => ApiError::Unprocessable(error.to_string()),
                Category::Syntax | Category::Eof | Category::Io => {
                    ApiError::BadRequest(format!("the body is not valid JSON: {error}"))
                }
            })
    }
}

/// `application/json`, or any `+json` type, with any parameters.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

async fn read_limited(body: Body, limit: usize, declared: Option<u64>) -> Result<BytesMut, ApiError> {
    let mut too_large = declared.is_some_and(|length| length > limit as u64);
    let mut buffer = BytesMut::new();
    let mut seen = 0usize;
    let mut chunks = body.into_data_stream();
    let deadline = Instant::now() + READ_TIMEOUT;
    loop {
        let chunk = match timeout_at(deadline, chunks.next()).await {
            Ok(Some(Ok(chunk))) => chunk,
            Ok(None) => break,
            Ok(Some(Err(_))) | Err(_) if too_large => break,
            Ok(Some(Err(error))) => return Err(ApiError::BadRequest(format!("the body could not be read: {error}"))),
            Err(_) => return Err(ApiError::BadRequest("the body took too long to arrive".to_owned())),
        };
        seen = seen.saturating_add(chunk.len());
        if seen > limit {
            too_large = true;
            buffer = BytesMut::new();
        }
        if too_large {
            if seen > DISCARD_CAP {
                break;
            }
            continue;
        }
        buffer.extend_from_slice(&chunk);
    }
    if too_large {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    Ok(buffer)
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn json_media_types_with_parameters_are_accepted() {
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("Application/JSON;charset=UTF-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json(""));
        assert!(!is_json("application/jsonx"));
    }
}
