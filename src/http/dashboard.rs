//! The live dashboard: serves the page at `/` and its ES modules and
//! stylesheet under `/ui/{file}`, all embedded in the binary at build time
//! from `ui/`.
//!
//! This module owns only the delivery of those files: the table below is the
//! whole list, and any other name under `/ui/` answers the usual 404 problem.
//! The page itself is plain HTML, CSS and JavaScript modules with no build
//! step (the browser resolves their `import`s against `/ui/`), and talks to
//! the server solely through the public API (`/v1/events`, `/v1/kinds`,
//! `/v1/jobs` with its cancel and retry, `/v1/session`), so it doubles as an example of
//! using that API from a browser. The files are sent with
//! `Cache-Control: no-cache` so that a browser revalidates them and never
//! runs a page older than its server.

use axum::extract::OriginalUri;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;

use crate::error::ApiError;

const INDEX_HTML: &str = include_str!("../../ui/index.html");

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every file served under `/ui/`: its path, content type and contents.
/// `main.js` is the entry point; the page's modules import the others.
const UI_FILES: &[(&str, &str, &str)] = &[
    ("/ui/main.js", JAVASCRIPT, include_str!("../../ui/main.js")),
    ("/ui/api.js", JAVASCRIPT, include_str!("../../ui/api.js")),
    ("/ui/cancel.js", JAVASCRIPT, include_str!("../../ui/cancel.js")),
    ("/ui/card.js", JAVASCRIPT, include_str!("../../ui/card.js")),
    ("/ui/detail.js", JAVASCRIPT, include_str!("../../ui/detail.js")),
    ("/ui/dom.js", JAVASCRIPT, include_str!("../../ui/dom.js")),
    ("/ui/filters.js", JAVASCRIPT, include_str!("../../ui/filters.js")),
    ("/ui/form.js", JAVASCRIPT, include_str!("../../ui/form.js")),
    ("/ui/format.js", JAVASCRIPT, include_str!("../../ui/format.js")),
    ("/ui/frame.js", JAVASCRIPT, include_str!("../../ui/frame.js")),
    ("/ui/labels.js", JAVASCRIPT, include_str!("../../ui/labels.js")),
    ("/ui/retry.js", JAVASCRIPT, include_str!("../../ui/retry.js")),
    ("/ui/session.js", JAVASCRIPT, include_str!("../../ui/session.js")),
    ("/ui/status.js", JAVASCRIPT, include_str!("../../ui/status.js")),
    ("/ui/store.js", JAVASCRIPT, include_str!("../../ui/store.js")),
    ("/ui/stream.js", JAVASCRIPT, include_str!("../../ui/stream.js")),
    ("/ui/sync.js", JAVASCRIPT, include_str!("../../ui/sync.js")),
    ("/ui/style.css", CSS, include_str!("../../ui/style.css")),
];

/// One embedded file with its content type, never cached without revalidation.
fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    ([(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")], body)
}

/// `GET /`: the dashboard page.
pub async fn index() -> impl IntoResponse {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /ui/{file}`: one of the page's modules or its stylesheet.
///
/// The path is looked up as sent, not percent-decoded, just as fixed routes
/// are matched: a malformed name is a 404 like any other unknown one.
pub async fn ui_file(OriginalUri(uri): OriginalUri) -> Result<impl IntoResponse, ApiError> {
    let (_, content_type, body) = UI_FILES
        .iter()
        .find(|(path, _, _)| *path == uri.path())
        .ok_or_else(|| ApiError::RouteNotFound(uri.path().to_owned()))?;
    Ok(asset(content_type, body))
}
