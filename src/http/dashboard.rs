//! The live dashboard: serves the page at `/` and its script and stylesheet
//! under `/ui/`, all three embedded in the binary at build time from `ui/`.
//!
//! This module owns only the delivery of those files. The page itself is
//! plain HTML, CSS and JavaScript with no build step, and talks to the
//! server solely through the public API (`/v1/events`, `/v1/kinds`,
//! `/v1/jobs`), so it doubles as an example of using that API from a
//! browser. The files are sent with `Cache-Control: no-cache` so that a
//! browser revalidates them and never runs a page older than its server.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;

const INDEX_HTML: &str = include_str!("../../ui/index.html");
const APP_JS: &str = include_str!("../../ui/app.js");
const STYLE_CSS: &str = include_str!("../../ui/style.css");

/// One embedded file with its content type, never cached without revalidation.
fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    ([(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")], body)
}

/// `GET /`: the dashboard page.
pub async fn index() -> impl IntoResponse {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /ui/app.js`: the page's script.
pub async fn app_js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// `GET /ui/style.css`: the page's stylesheet.
pub async fn style_css() -> impl IntoResponse {
    asset("text/css; charset=utf-8", STYLE_CSS)
}
