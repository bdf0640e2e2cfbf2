//! Who may do what (CONTRACT.md, "Who may do what"): credentials, the
//! principals they name, and the one middleware that lets each request in,
//! once, before any handler runs. Nothing here runs per event.
//!
//! - [`principal`]: roles and what an [`Access`] may see and do;
//! - [`keys`]: API keys from `--auth-keys`, by hash, in constant time;
//! - [`jwt`]: JWTs, HS256 or RS256/ES256;
//! - [`tickets`]: per-job stream tickets, the `ticket` of `stream_url`;
//! - [`session`]: the `jobcast_session` cookie and the `Origin` check;
//! - [`cors`]: the origins of `--cors-origin`.
//!
//! A request is let in by, in this order: its `Authorization: Bearer`
//! credential (an API key or a JWT), which must then be valid; its
//! `ticket` query parameter, which only reads its own job; its session
//! cookie. The dashboard's files, `/healthz`, `/readyz` and
//! `/openapi.yaml` are public, and external workers' calls carry their
//! job's worker token, which their handlers check.

pub mod cors;
pub mod jwt;
pub mod keys;
pub mod principal;
pub mod session;
pub mod tickets;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::Config;
use crate::error::ApiError;
use crate::http::query::QueryParams;
use crate::http::AppState;
use crate::jobs::JobId;
pub use principal::{Access, Principal, Role};

/// The longest bearer credential looked at; a longer one is refused unread.
const MAX_CREDENTIAL_LEN: usize = 8 * 1024;

/// A setting that stops the server at start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("the keys file {path} cannot be used: {reason}")]
    KeysFile { path: String, reason: String },
    #[error("the JWT public key {path} cannot be used: {reason}")]
    JwtPublicKey { path: String, reason: String },
    #[error("{flag} must be at least {min} bytes long")]
    ShortSecret { flag: &'static str, min: usize },
    #[error("--cors-origin {0:?} is not an origin such as https://app.example.com")]
    CorsOrigin(String),
    #[error("--auth-keys and --jwt-public-key need --ticket-secret (or --jwt-secret) to sign stream tickets that every instance accepts, across restarts")]
    NoTicketSecret,
}

/// The server's credentials and rules, built once from the configuration.
#[derive(Default)]
pub struct Auth {
    keys: Option<keys::ApiKeys>,
    jwt: Option<jwt::JwtVerifier>,
    /// Set exactly when authentication is on.
    tickets: Option<tickets::Tickets>,
    cors: cors::CorsOrigins,
    /// Whether the server speaks TLS: the session cookie is then `Secure`,
    /// and the server's own origin is `https`.
    tls: bool,
}

impl Auth {
    pub fn from_config(config: &Config) -> Result<Self, SetupError> {
        let keys = config.auth_keys.as_deref().map(keys::ApiKeys::load).transpose()?;
        let jwt = jwt::JwtVerifier::new(&jwt::JwtSettings {
            secret: config.jwt_secret.as_ref().map(|secret| secret.expose()),
            public_key: config.jwt_public_key.as_deref(),
            issuer: config.jwt_issuer.as_deref(),
            audience: config.jwt_audience.as_deref(),
        })?;
        let tickets = if keys.is_none() && jwt.is_none() {
            None
        } else if let Some(secret) = &config.ticket_secret {
            if secret.expose().len() < jwt::MIN_SECRET_LEN {
                return Err(SetupError::ShortSecret {
                    flag: "--ticket-secret",
                    min: jwt::MIN_SECRET_LEN,
                });
            }
            Some(tickets::Tickets::with_secret(secret.expose().as_bytes()))
        } else if let Some(secret) = &config.jwt_secret {
            Some(tickets::Tickets::derived_from(secret.expose().as_bytes()))
        } else {
            return Err(SetupError::NoTicketSecret);
        };
        Ok(Auth {
            keys,
            jwt,
            tickets,
            cors: cors::CorsOrigins::new(&config.cors_origins)?,
            tls: config.tls_cert.is_some(),
        })
    }

    pub fn is_on(&self) -> bool {
        self.tickets.is_some()
    }

    pub fn tls(&self) -> bool {
        self.tls
    }

    /// A job's `stream_url`: with its ticket when authentication is on.
    pub fn stream_url(&self, id: JobId) -> String {
        match &self.tickets {
            Some(tickets) => format!("/v1/jobs/{id}/events?ticket={}", tickets.issue(id)),
            None => format!("/v1/jobs/{id}/events"),
        }
    }

    /// The principal a bearer credential names: a JWT's, or an API key's.
    pub fn principal(&self, credential: &str) -> Option<Principal> {
        if credential.len() > MAX_CREDENTIAL_LEN {
            return None;
        }
        let looks_like_jwt = credential.bytes().filter(|&byte| byte == b'.').count() == 2;
        let from_jwt = self
            .jwt
            .as_ref()
            .filter(|_| looks_like_jwt)
            .and_then(|jwt| jwt.verify(credential));
        from_jwt.or_else(|| self.keys.as_ref()?.find(credential).cloned())
    }

    /// How the request is let in, or why not.
    fn access(&self, request: &Request) -> Result<Access, ApiError> {
        let headers = request.headers();
        if let Some(credential) = bearer(headers)? {
            return self
                .principal(credential)
                .map(Access::Principal)
                .ok_or_else(|| unauthenticated("the bearer credential is not valid"));
        }
        let query = QueryParams::parse(request.uri().query());
        if let (Some(ticket), Some(tickets)) = (query.last("ticket"), &self.tickets) {
            let id = tickets
                .verify(ticket)
                .map_err(|error| unauthenticated(&error.to_string()))?;
            return match ticket_target(request.method(), request.uri().path()) {
                Some(target) if target.parse::<JobId>().is_ok_and(|target| target == id) => Ok(Access::Ticket(id)),
                Some(_) => Err(ApiError::Forbidden("the ticket is for another job".to_owned())),
                None => Err(ApiError::Forbidden(
                    "a ticket only reads its job: GET the job or its stream".to_owned(),
                )),
            };
        }
        let Some(cookie) = session::credential(headers) else {
            return Err(unauthenticated(
                "send an API key or a JWT as `Authorization: Bearer <credential>`, or a session cookie",
            ));
        };
        let principal = cookie
            .ok()
            .and_then(|credential| self.principal(&credential))
            .ok_or_else(|| unauthenticated("the session has expired or is not valid"))?;
        if session::changes_state(request.method())
            && !session::is_own_origin(headers, request.uri(), self.tls)
            && self.cors.allowed(headers).is_none()
        {
            return Err(ApiError::Forbidden(
                "a request that changes state with only the session cookie must come from this server's origin or an allowed one".to_owned(),
            ));
        }
        Ok(Access::Principal(principal))
    }
}

fn unauthenticated(detail: &str) -> ApiError {
    ApiError::Unauthenticated(detail.to_owned())
}

/// The request's bearer credential, if it sends an `Authorization` header:
/// which must then be one `Bearer` credential.
pub fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(unauthenticated("send one Authorization header"));
    }
    value
        .to_str()
        .ok()
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, credential)| Some(credential.trim()))
        .ok_or_else(|| unauthenticated("the Authorization header must be `Bearer <credential>`"))
}

/// The job id a ticket may read at this method and path: a `GET` of
/// `/v1/jobs/{id}` or `/v1/jobs/{id}/events`.
fn ticket_target<'a>(method: &Method, path: &'a str) -> Option<&'a str> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    let rest = path.strip_prefix("/v1/jobs/")?;
    let id = rest.strip_suffix("/events").unwrap_or(rest);
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// What a path asks of a request's credentials.
enum Gate {
    /// Served to anyone.
    Public,
    /// An external worker's call: its handler checks the job's worker token.
    WorkerCall,
    /// Needs a principal or a ticket.
    Authenticated,
}

fn gate(path: &str) -> Gate {
    if matches!(path, "/" | "/healthz" | "/readyz" | "/openapi.yaml") || path.starts_with("/ui/") {
        return Gate::Public;
    }
    let worker_call = path.strip_prefix("/v1/jobs/").is_some_and(|rest| {
        rest.split_once('/')
            .is_some_and(|(id, call)| !id.is_empty() && matches!(call, "heartbeat" | "complete" | "fail"))
    });
    if worker_call {
        Gate::WorkerCall
    } else {
        Gate::Authenticated
    }
}

/// The middleware: answers allowed origins' preflights, lets the request in
/// (once: handlers read the [`Access`] it leaves) or answers 401/403, and
/// adds the CORS headers for an allowed origin.
pub async fn authenticate(State(app): State<AppState>, mut request: Request, next: Next) -> Response {
    let auth = &app.auth;
    if let Some(preflight) = auth.cors.preflight(request.method(), request.headers()) {
        return preflight;
    }
    let cors_origin = auth.cors.allowed(request.headers()).cloned();
    let mut response = if !auth.is_on() {
        request.extensions_mut().insert(Access::Open);
        next.run(request).await
    } else {
        match gate(request.uri().path()) {
            Gate::Public | Gate::WorkerCall => next.run(request).await,
            Gate::Authenticated => match auth.access(&request) {
                Ok(access) => {
                    request.extensions_mut().insert(access);
                    next.run(request).await
                }
                Err(error) => error.into_response(),
            },
        }
    };
    if let Some(origin) = cors_origin {
        cors::CorsOrigins::expose(origin, &mut response);
    }
    response
}

impl<S: Send + Sync> FromRequestParts<S> for Access {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Access>()
            .cloned()
            .ok_or_else(|| unauthenticated("this request was not authenticated"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_read_only_their_jobs_routes() {
        let id = "0193a8f2-6c1e-7c3a-9d2b-5f0e4a1b2c3d";
        assert_eq!(ticket_target(&Method::GET, &format!("/v1/jobs/{id}")), Some(id));
        assert_eq!(ticket_target(&Method::GET, &format!("/v1/jobs/{id}/events")), Some(id));
        assert_eq!(ticket_target(&Method::POST, &format!("/v1/jobs/{id}/cancel")), None);
        assert_eq!(ticket_target(&Method::GET, &format!("/v1/jobs/{id}/retry")), None);
        assert_eq!(ticket_target(&Method::GET, "/v1/jobs"), None);
        assert_eq!(ticket_target(&Method::GET, "/v1/events"), None);
    }

    #[test]
    fn only_the_dashboard_and_probes_are_public_and_worker_calls_carry_their_token() {
        for public in ["/", "/healthz", "/readyz", "/openapi.yaml", "/ui/app.js"] {
            assert!(matches!(gate(public), Gate::Public), "{public}");
        }
        for call in ["/v1/jobs/x/heartbeat", "/v1/jobs/x/complete", "/v1/jobs/x/fail"] {
            assert!(matches!(gate(call), Gate::WorkerCall), "{call}");
        }
        for guarded in [
            "/metrics",
            "/v1/jobs",
            "/v1/jobs/x",
            "/v1/jobs/x/cancel",
            "/v1/events",
            "/v1/kinds",
            "/v1/session",
            "/v1/jobs//complete",
            "/nothing",
        ] {
            assert!(matches!(gate(guarded), Gate::Authenticated), "{guarded}");
        }
    }
}
