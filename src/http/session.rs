//! `POST /v1/session` and `DELETE /v1/session`: the session cookie for pages
//! ([`crate::auth::session`] says what it holds and why).

use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::auth::{self, session, Access};
use crate::error::ApiError;

/// Keeps the request's bearer credential, already checked by the
/// authentication middleware, in the session cookie. Without authentication
/// there is nothing to keep: 204 and no cookie.
pub async fn create(State(app): State<AppState>, access: Access, headers: HeaderMap) -> Result<Response, ApiError> {
    if matches!(access, Access::Open) {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let credential = auth::bearer(&headers)?.ok_or_else(|| {
        ApiError::Unauthenticated("send the credential to keep as `Authorization: Bearer <credential>`".to_owned())
    })?;
    let https = session::is_https(&headers, app.auth.tls());
    Ok((
        StatusCode::NO_CONTENT,
        [(SET_COOKIE, session::set_cookie(credential, https))],
    )
        .into_response())
}

/// Clears the session cookie.
pub async fn delete(State(app): State<AppState>, _access: Access, headers: HeaderMap) -> Response {
    let https = session::is_https(&headers, app.auth.tls());
    (StatusCode::NO_CONTENT, [(SET_COOKIE, session::clear_cookie(https))]).into_response()
}
