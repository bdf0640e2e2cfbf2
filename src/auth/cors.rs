//! CORS for `--cors-origin`: pages of the allowed origins may call the API
//! and open streams with credentials (`fetch(…, {credentials: "include"})`,
//! `new EventSource(url, {withCredentials: true})`). Such a request's
//! answer names its origin in `Access-Control-Allow-Origin` (never `*`,
//! which browsers refuse with credentials), with `Vary: Origin`,
//! `Access-Control-Allow-Credentials: true`, and `Location` and
//! `Retry-After` exposed; their preflights are answered here, before
//! authentication, since browsers send them without credentials. Requests
//! from any other origin get no CORS header at all, preflights included.
//!
//! Written by hand rather than with tower-http's `CorsLayer`, which adds
//! `Access-Control-Allow-Credentials` and the preflight's allow lists to
//! answers for origins it does not allow.

use axum::http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_METHOD,
    ORIGIN, VARY,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::SetupError;

const ALLOWED_METHODS: &str = "GET, POST, DELETE";
const ALLOWED_HEADERS: &str = "authorization, content-type, idempotency-key, last-event-id";
const EXPOSED_HEADERS: &str = "location, retry-after";
/// How long a browser may reuse a preflight's answer, in seconds.
const PREFLIGHT_MAX_AGE: &str = "600";

/// The origins whose pages may call with credentials.
#[derive(Default)]
pub struct CorsOrigins(Vec<HeaderValue>);

impl CorsOrigins {
    /// The configured origins, each `scheme://host[:port]` with nothing after.
    pub fn new(origins: &[String]) -> Result<Self, SetupError> {
        origins
            .iter()
            .map(|origin| {
                let origin = origin.trim().trim_end_matches('/');
                let valid = (origin.starts_with("http://") || origin.starts_with("https://"))
                    && origin
                        .split_once("://")
                        .is_some_and(|(_, host)| !host.is_empty() && !host.contains(['/', '?', '#', ' ', '*']));
                valid
                    .then(|| HeaderValue::try_from(origin).ok())
                    .flatten()
                    .ok_or_else(|| SetupError::CorsOrigin(origin.to_owned()))
            })
            .collect::<Result<_, _>>()
            .map(CorsOrigins)
    }

    /// The request's origin, if it is an allowed one.
    pub fn allowed<'a>(&self, headers: &'a HeaderMap) -> Option<&'a HeaderValue> {
        let origin = headers.get(ORIGIN)?;
        self.0
            .iter()
            .any(|allowed| allowed.as_bytes().eq_ignore_ascii_case(origin.as_bytes()))
            .then_some(origin)
    }

    /// The answer to an allowed origin's preflight, if this is one.
    pub fn preflight(&self, method: &Method, headers: &HeaderMap) -> Option<Response> {
        if method != Method::OPTIONS || !headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD) {
            return None;
        }
        let origin = self.allowed(headers)?.clone();
        let mut response = StatusCode::NO_CONTENT.into_response();
        let answer = response.headers_mut();
        allow(answer, origin);
        answer.insert(ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(ALLOWED_METHODS));
        answer.insert(ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOWED_HEADERS));
        answer.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(PREFLIGHT_MAX_AGE));
        Some(response)
    }

    /// Adds the CORS headers for `origin` (an allowed one) to an answer.
    pub fn expose(origin: HeaderValue, response: &mut Response) {
        let headers = response.headers_mut();
        allow(headers, origin);
        headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSED_HEADERS));
    }
}

fn allow(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    headers.append(VARY, HeaderValue::from_static("origin"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_origins_are_accepted_in_the_configuration() {
        assert!(CorsOrigins::new(&["https://app.example.com".into(), "http://127.0.0.1:3000/".into()]).is_ok());
        for bad in [
            "*",
            "app.example.com",
            "https://app.example.com/path",
            "ftp://x",
            "https://",
        ] {
            assert!(CorsOrigins::new(&[bad.to_owned()]).is_err(), "{bad}");
        }
    }
}
