//! The session cookie and CORS: `POST /v1/session` keeps a bearer
//! credential in an HttpOnly, SameSite=Strict cookie that then lets
//! requests in; a state change with only the cookie needs the server's own
//! `Origin` or an allowed one; `--cors-origin` origins get CORS answers and
//! every other origin none.

use jobcast::Config;
use reqwest::header::{HeaderMap, HeaderValue, COOKIE, ORIGIN, SET_COOKIE};
use serde_json::json;

use crate::auth_common::*;
use crate::helpers::*;

const ALLOWED: &str = "http://app.example.test:3000";
const STRANGER: &str = "http://evil.example.test";

async fn session_cookie(server: &AuthApp, credential: &str) -> String {
    let response = server.caller(credential).post("/v1/session").await;
    assert_eq!(response.status(), 204);
    let set_cookie = response.headers().get(SET_COOKIE).unwrap().to_str().unwrap().to_owned();
    let attributes: Vec<&str> = set_cookie.split("; ").collect();
    assert!(attributes[0].starts_with("jobcast_session="), "{set_cookie}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(attributes.contains(&attribute), "{attribute} in {set_cookie}");
    }
    let over_tls = server.app.protocol.is_tls();
    assert_eq!(
        attributes.contains(&"Secure"),
        over_tls,
        "Secure exactly over TLS: {set_cookie}"
    );
    assert!(!set_cookie.contains(credential), "the credential is not in clear");
    attributes[0].to_owned()
}

/// A client that sends only `cookie`, and `origin` if given.
fn cookie_client(server: &AuthApp, cookie: &str, origin: Option<&str>) -> Caller {
    let mut headers = HeaderMap::from_iter([(COOKIE, HeaderValue::from_str(cookie).unwrap())]);
    if let Some(origin) = origin {
        headers.insert(ORIGIN, HeaderValue::from_str(origin).unwrap());
    }
    Caller {
        base: server.app.base.clone(),
        client: server.app.client_with(headers),
    }
}

#[tokio::test]
async fn the_session_cookie_lets_its_principal_in_and_guards_state_changes() {
    let server = AuthApp::spawn_with(Config {
        cors_origins: vec![ALLOWED.to_owned()],
        ..test_config()
    })
    .await;
    let cookie = session_cookie(&server, ALICE_KEY).await;
    let reader = cookie_client(&server, &cookie, None);
    assert_eq!(reader.get_ok("/v1/jobs").await["jobs"], json!([]));
    let body = json!({"kind": "demo", "params": {"delay_ms": 60_000}});
    let no_origin = reader.post_json("/v1/jobs", &body).await;
    assert_problem(no_origin, 403, "a cookie-only create without Origin").await;
    let stranger = cookie_client(&server, &cookie, Some(STRANGER));
    assert_problem(stranger.post_json("/v1/jobs", &body).await, 403, "from another site").await;
    assert_eq!(
        stranger.get("/v1/jobs").await.status(),
        200,
        "reading needs no Origin check"
    );
    let own_origin = server.app.base.clone();
    let same_site = cookie_client(&server, &cookie, Some(&own_origin));
    let job = same_site.create_job(&body).await;
    assert_eq!(job["owner"], "alice");
    let allowed = cookie_client(&server, &cookie, Some(ALLOWED));
    let cancelled = allowed.post(&format!("/v1/jobs/{}/cancel", id_of(&job))).await;
    assert_eq!(cancelled.status(), 200);
    // A bearer credential needs no Origin, whatever the cookie.
    let with_bearer = send(
        stranger
            .client
            .post(stranger.url("/v1/jobs"))
            .bearer_auth(BOB_KEY)
            .json(&body),
    )
    .await;
    assert_eq!(with_bearer.status(), 202);
    // Logging out clears the cookie; a garbled cookie lets nobody in.
    let deleted = send(same_site.client.delete(same_site.url("/v1/session"))).await;
    assert_eq!(deleted.status(), 204);
    let cleared = deleted.headers().get(SET_COOKIE).unwrap().to_str().unwrap();
    assert!(
        cleared.starts_with("jobcast_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    let garbled = cookie_client(&server, "jobcast_session=bm90IGEga2V5", None);
    assert_problem(garbled.get("/v1/jobs").await, 401, "a cookie of no key").await;
    // A session needs a bearer credential to keep.
    assert_problem(same_site.post("/v1/session").await, 401, "a session from a cookie").await;
}

#[tokio::test]
async fn a_jwt_session_ends_with_the_jwt() {
    let server = AuthApp::spawn().await;
    let soon = mint_with(&json!({"sub": "carol", "exp": now_plus(-59)}), JWT_SECRET);
    let cookie = session_cookie(&server, &soon).await;
    let reader = cookie_client(&server, &cookie, None);
    // Valid within the clock skew, then not: wait for the skew to pass.
    let mut status = reader.get("/v1/jobs").await.status();
    let deadline = std::time::Instant::now() + WAIT;
    while status == 200 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        status = reader.get("/v1/jobs").await.status();
    }
    assert_eq!(status, 401);
}

#[tokio::test]
async fn allowed_origins_get_cors_answers_and_others_none() {
    let server = AuthApp::spawn_with(Config {
        cors_origins: vec![ALLOWED.to_owned(), "https://other.example.test".to_owned()],
        ..test_config()
    })
    .await;
    let anonymous = server.anonymous();
    let preflight = |origin: &str| {
        anonymous
            .client
            .request(reqwest::Method::OPTIONS, anonymous.url("/v1/jobs"))
            .header(ORIGIN, origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type")
    };
    let allowed = send(preflight(ALLOWED)).await;
    assert_eq!(allowed.status(), 204);
    let headers = allowed.headers();
    assert_eq!(headers["access-control-allow-origin"], ALLOWED);
    assert_eq!(headers["access-control-allow-credentials"], "true");
    assert_eq!(headers["vary"], "origin");
    let methods = headers["access-control-allow-methods"].to_str().unwrap();
    assert!(methods.contains("POST") && methods.contains("DELETE"), "{methods}");
    let asked = headers["access-control-allow-headers"].to_str().unwrap();
    assert!(
        asked.contains("authorization") && asked.contains("last-event-id"),
        "{asked}"
    );
    let refused = send(preflight(STRANGER)).await;
    assert_no_cors(refused.headers());
    // Real requests, answered or refused, carry the headers for allowed origins only.
    let alice = server.caller(ALICE_KEY);
    let from = |origin: &str| alice.client.get(alice.url("/v1/jobs")).header(ORIGIN, origin);
    let answer = send(from(ALLOWED)).await;
    assert_eq!(answer.status(), 200);
    let headers = answer.headers();
    assert_eq!(headers["access-control-allow-origin"], ALLOWED);
    assert_eq!(headers["access-control-allow-credentials"], "true");
    assert_eq!(headers["vary"], "origin");
    let exposed = headers["access-control-expose-headers"].to_str().unwrap();
    assert!(
        exposed.contains("location") && exposed.contains("retry-after"),
        "{exposed}"
    );
    let unauthenticated = send(anonymous.client.get(anonymous.url("/v1/jobs")).header(ORIGIN, ALLOWED)).await;
    assert_eq!(unauthenticated.status(), 401);
    assert_eq!(unauthenticated.headers()["access-control-allow-origin"], ALLOWED);
    for origin in [
        STRANGER,
        "null",
        "http://app.example.test:3001",
        "http://app.example.test:3000.evil.test",
    ] {
        assert_no_cors(send(from(origin)).await.headers());
    }
    assert_no_cors(send(alice.client.get(alice.url("/v1/jobs"))).await.headers());
}

fn assert_no_cors(headers: &HeaderMap) {
    for (name, _) in headers {
        assert!(!name.as_str().starts_with("access-control-"), "{name} in {headers:?}");
    }
    assert!(headers
        .get("vary")
        .is_none_or(|vary| !vary.to_str().unwrap().contains("origin")));
}
