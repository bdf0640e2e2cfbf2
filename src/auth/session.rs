//! The session cookie, for pages: `POST /v1/session` with a bearer
//! credential sets `jobcast_session` to that credential (base64url, so any
//! key fits a cookie), `DELETE /v1/session` clears it. The cookie holds the
//! credential itself rather than a session of its own, so it expires with
//! the JWT and stops working when the key is removed, and any instance
//! reads it without shared session state. It is `HttpOnly` (no script
//! reads it), `SameSite=Strict`, and `Secure` over TLS (jobcast's own, or
//! a proxy's that sends `X-Forwarded-Proto: https`).
//!
//! A state change authenticated only by the cookie must come from a page
//! of the server's own origin or of an allowed CORS origin: the `Origin`
//! check against cross-site request forgery.

use axum::http::header::{COOKIE, HOST, ORIGIN};
use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

pub const COOKIE_NAME: &str = "jobcast_session";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";

/// The `Set-Cookie` value that keeps `credential` for the session.
pub fn set_cookie(credential: &str, tls: bool) -> HeaderValue {
    let secure = if tls { "; Secure" } else { "" };
    let value = format!(
        "{COOKIE_NAME}={}; HttpOnly; SameSite=Strict; Path=/{secure}",
        URL_SAFE_NO_PAD.encode(credential)
    );
    HeaderValue::try_from(value).expect("base64url and fixed attributes are a valid header value")
}

/// The `Set-Cookie` value that removes the cookie.
pub fn clear_cookie(tls: bool) -> HeaderValue {
    let secure = if tls { "; Secure" } else { "" };
    HeaderValue::try_from(format!(
        "{COOKIE_NAME}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{secure}"
    ))
    .expect("a fixed header value")
}

/// A session cookie that does not hold a credential this server set.
#[derive(Debug, PartialEq, Eq)]
pub struct GarbledCookie;

/// The credential in the request's session cookie, if it has one. Over
/// HTTP/2 the cookies may come in several `Cookie` headers.
pub fn credential(headers: &HeaderMap) -> Option<Result<String, GarbledCookie>> {
    let value = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|header| header.to_str().ok())
        .flat_map(|header| header.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE_NAME)?.strip_prefix('='))?;
    Some(
        URL_SAFE_NO_PAD
            .decode(value)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or(GarbledCookie),
    )
}

/// Whether the method changes state, so that a cookie alone may not send it
/// from another site.
pub fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether the browser reached the server over HTTPS: jobcast's own TLS,
/// or a proxy in front that terminated it and says so in
/// `X-Forwarded-Proto` (a header no page of another site can add to a
/// request it makes the browser send).
pub fn is_https(headers: &HeaderMap, tls: bool) -> bool {
    match headers.get(X_FORWARDED_PROTO).and_then(|proto| proto.to_str().ok()) {
        Some(proto) => proto
            .split(',')
            .next()
            .is_some_and(|first| first.trim().eq_ignore_ascii_case("https")),
        None => tls,
    }
}

/// Whether the request's `Origin` is the server's own: its scheme and the
/// request's host (the `Host` header, or over HTTP/2 the URI's authority).
pub fn is_own_origin(headers: &HeaderMap, uri: &Uri, tls: bool) -> bool {
    let Some(origin) = headers.get(ORIGIN).and_then(|origin| origin.to_str().ok()) else {
        return false;
    };
    let host = headers
        .get(HOST)
        .and_then(|host| host.to_str().ok())
        .or_else(|| uri.authority().map(|authority| authority.as_str()));
    let scheme = if is_https(headers, tls) { "https://" } else { "http://" };
    match (origin.strip_prefix(scheme), host) {
        (Some(origin_host), Some(host)) => origin_host.eq_ignore_ascii_case(host),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_carries_any_credential_and_nothing_else_reads_as_one() {
        let cookie = set_cookie("a key; with = odd, characters", true);
        let cookie = cookie.to_str().unwrap();
        assert!(
            cookie.ends_with("; HttpOnly; SameSite=Strict; Path=/; Secure"),
            "{cookie}"
        );
        let pair = cookie.split(';').next().unwrap();
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("other=1"));
        headers.append(COOKIE, HeaderValue::try_from(format!("theme=dark; {pair}")).unwrap());
        assert_eq!(
            credential(&headers),
            Some(Ok("a key; with = odd, characters".to_owned()))
        );
        let garbled = HeaderMap::from_iter([(COOKIE, HeaderValue::from_static("jobcast_session=!!"))]);
        assert_eq!(credential(&garbled), Some(Err(GarbledCookie)));
        assert_eq!(credential(&HeaderMap::new()), None);
        assert!(!set_cookie("k", false).to_str().unwrap().contains("Secure"));
    }

    #[test]
    fn the_own_origin_is_the_scheme_and_the_requests_host() {
        let headers = |origin: &str, host: Option<&str>| {
            let mut headers = HeaderMap::from_iter([(ORIGIN, HeaderValue::try_from(origin).unwrap())]);
            if let Some(host) = host {
                headers.insert(HOST, HeaderValue::try_from(host).unwrap());
            }
            headers
        };
        let plain: Uri = "/v1/jobs".parse().unwrap();
        let h2: Uri = "https://127.0.0.1:8443/v1/jobs".parse().unwrap();
        assert!(is_own_origin(
            &headers("http://127.0.0.1:8080", Some("127.0.0.1:8080")),
            &plain,
            false
        ));
        assert!(!is_own_origin(
            &headers("https://127.0.0.1:8080", Some("127.0.0.1:8080")),
            &plain,
            false
        ));
        assert!(!is_own_origin(
            &headers("http://evil.example", Some("127.0.0.1:8080")),
            &plain,
            false
        ));
        assert!(!is_own_origin(&headers("null", Some("127.0.0.1:8080")), &plain, false));
        assert!(is_own_origin(&headers("https://127.0.0.1:8443", None), &h2, true));
        assert!(!is_own_origin(&headers("https://127.0.0.1:8443", None), &plain, true));
        let mut proxied = headers("https://jobs.example.com", Some("jobs.example.com"));
        assert!(!is_own_origin(&proxied, &plain, false));
        proxied.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        assert!(is_own_origin(&proxied, &plain, false));
        assert!(is_https(&proxied, false));
        proxied.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        assert!(!is_https(&proxied, true), "the proxy knows how the browser came");
    }
}
