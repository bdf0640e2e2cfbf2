//! The server's settings: one typed struct, read from flags and `JOBCAST_*`
//! environment variables, with the defaults of CONTRACT.md.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;

use crate::telemetry::LogFormat;

/// A duration such as `10s`, `500ms`, `1h`, or `0`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, humantime::DurationError> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text)
}

/// A duration as [`parse_duration`] reads it, but not zero.
fn parse_nonzero_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text) {
        Ok(Duration::ZERO) => Err("must be more than 0".to_owned()),
        Ok(duration) => Ok(duration),
        Err(error) => Err(error.to_string()),
    }
}

/// Reads a duration written as in a flag (`"30s"`), for config files:
/// `#[serde(deserialize_with = "crate::config::duration")]`.
pub(crate) fn duration<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(deserializer)?;
    parse_duration(&text).map_err(|error| serde::de::Error::custom(format!("{text:?} is not a duration: {error}")))
}

/// [`duration`], for an optional field (with `#[serde(default)]`).
pub(crate) fn optional_duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    duration(deserializer).map(Some)
}

/// Where jobs live: the `--store` setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreChoice {
    /// An embedded SQLite database file: one process, survives restarts.
    Sqlite(PathBuf),
    /// Nothing outlives the process (tests, throwaway runs).
    Memory,
    /// A Redis server that several instances share (`redis://HOST:PORT[/DB]`).
    Redis(String),
}

/// The text is not a store this server can use.
#[derive(Debug, thiserror::Error)]
pub enum StoreChoiceError {
    #[error("{0:?} is not a store: use sqlite:PATH, redis://HOST:PORT or memory")]
    Unknown(String),
    #[error("sqlite: needs a path, as in sqlite:jobcast.db")]
    NoPath,
}

impl FromStr for StoreChoice {
    type Err = StoreChoiceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text == "memory" {
            return Ok(StoreChoice::Memory);
        }
        if let Some(path) = text.strip_prefix("sqlite:") {
            if path.is_empty() {
                return Err(StoreChoiceError::NoPath);
            }
            return Ok(StoreChoice::Sqlite(PathBuf::from(path)));
        }
        if text.starts_with("redis://") || text.starts_with("rediss://") {
            return Ok(StoreChoice::Redis(text.to_owned()));
        }
        Err(StoreChoiceError::Unknown(text.to_owned()))
    }
}

impl fmt::Display for StoreChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreChoice::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            StoreChoice::Memory => f.write_str("memory"),
            StoreChoice::Redis(url) => f.write_str(url),
        }
    }
}

/// A secret from the command line or the environment: never printed, not
/// even by `Debug`.
#[derive(Clone, PartialEq)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(secret.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Secret(…)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Secret(text.to_owned()))
    }
}

/// jobcast: runs long jobs and streams their progress over Server-Sent Events.
#[derive(Clone, Debug, Parser, PartialEq)]
#[command(name = "jobcast", version, about, long_about = None)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "JOBCAST_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Where jobs live: `sqlite:PATH` (a database file that survives
    /// restarts), `redis://HOST:PORT[/DB]` (several instances share the
    /// jobs) or `memory` (nothing outlives the process).
    #[arg(long, env = "JOBCAST_STORE", default_value = "sqlite:jobcast.db")]
    pub store: StoreChoice,

    /// Jobs running at once; more wait `queued`, first in first out.
    #[arg(long, env = "JOBCAST_MAX_RUNNING", default_value_t = 64)]
    pub max_running: usize,

    /// Jobs waiting to run; beyond this, creation answers 503 with Retry-After.
    #[arg(long, env = "JOBCAST_MAX_QUEUED", default_value_t = 10_000)]
    pub max_queued: usize,

    /// Open event streams; beyond this, a stream answers 503 with Retry-After.
    #[arg(long, env = "JOBCAST_MAX_STREAMS", default_value_t = 20_000)]
    pub max_streams: usize,

    /// How long a finished job is kept.
    #[arg(long, env = "JOBCAST_RETENTION", default_value = "1h", value_parser = parse_duration)]
    pub retention: Duration,

    /// How many finished jobs are kept at most (the oldest go first).
    #[arg(long, env = "JOBCAST_MAX_FINISHED", default_value_t = 10_000)]
    pub max_finished: usize,

    /// With `--store redis://…`: how long an instance that stops renewing
    /// its lease is trusted; then the others end its running jobs `failed`
    /// with `instance_lost`.
    #[arg(long, env = "JOBCAST_LEASE", default_value = "10s", value_parser = parse_duration)]
    pub lease: Duration,

    /// How long a cancel waits for the job to stop before aborting it.
    #[arg(long, env = "JOBCAST_CANCEL_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub cancel_grace: Duration,

    /// Interval of `: keep-alive` comments on idle streams (0: none).
    #[arg(long, env = "JOBCAST_KEEP_ALIVE", default_value = "15s", value_parser = parse_duration)]
    pub keep_alive: Duration,

    /// The `retry:` hint for EventSource reconnects (up to a quarter more is added as jitter).
    #[arg(long, env = "JOBCAST_RETRY", default_value = "3000ms", value_parser = parse_duration)]
    pub retry: Duration,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "JOBCAST_BODY_LIMIT", default_value_t = 1_048_576)]
    pub body_limit: usize,

    /// Counter updates closer together than this merge into one published state (0: publish every change).
    #[arg(long, env = "JOBCAST_PUBLISH_INTERVAL", default_value = "10ms", value_parser = parse_duration)]
    pub publish_interval: Duration,

    /// A TOML file declaring job kinds that run commands or wait for external
    /// workers (see docs/KINDS.md); `demo` is always there too.
    #[arg(long = "config", env = "JOBCAST_CONFIG")]
    pub kinds_file: Option<PathBuf>,

    /// How long a client may take to send a request head: from the
    /// connection's start (TLS handshake included), and on a kept-alive
    /// connection from the end of its previous request. A head begun but
    /// not complete gets 408 and the connection closes; a connection that
    /// sent nothing, or an HTTP/2 connection with no open stream, closes.
    #[arg(long, env = "JOBCAST_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_nonzero_duration)]
    pub header_timeout: Duration,

    /// Streams one HTTP/2 connection may have open at once (a browser holds
    /// one connection per origin and queues streams beyond this); event
    /// streams are limited server-wide by --max-streams whatever this is.
    #[arg(long, env = "JOBCAST_HTTP2_MAX_STREAMS", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub http2_max_streams: u32,

    /// Serve HTTPS with this certificate chain (PEM), HTTP/2 and HTTP/1.1
    /// chosen by ALPN; needs --tls-key.
    #[arg(long, env = "JOBCAST_TLS_CERT", value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "JOBCAST_TLS_KEY", value_name = "PATH")]
    pub tls_key: Option<PathBuf>,

    /// API keys (TOML): `[[key]]` tables with `subject`, `role` (`user`,
    /// `service` or `admin`) and `sha256`, the hex SHA-256 of the key; the
    /// keys themselves are never stored.
    #[arg(long, env = "JOBCAST_AUTH_KEYS", value_name = "FILE")]
    pub auth_keys: Option<PathBuf>,

    /// Accept JWTs signed with this HS256 secret (at least 32 bytes).
    #[arg(long, env = "JOBCAST_JWT_SECRET", hide_env_values = true, value_name = "SECRET")]
    pub jwt_secret: Option<Secret>,

    /// Accept JWTs signed with the private half of this public key (PEM,
    /// RSA for RS256 or P-256 for ES256).
    #[arg(long, env = "JOBCAST_JWT_PUBLIC_KEY", value_name = "FILE")]
    pub jwt_public_key: Option<PathBuf>,

    /// Accept only JWTs whose `iss` is this.
    #[arg(long, env = "JOBCAST_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Accept only JWTs whose `aud` names this.
    #[arg(long, env = "JOBCAST_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Signs stream tickets (at least 32 bytes); give every instance the
    /// same one so a ticket works on each and across restarts. Defaults to
    /// a key derived from --jwt-secret; needed with authentication otherwise.
    #[arg(long, env = "JOBCAST_TICKET_SECRET", hide_env_values = true, value_name = "SECRET")]
    pub ticket_secret: Option<Secret>,

    /// Serve a non-loopback --listen address without authentication.
    #[arg(long, env = "JOBCAST_ALLOW_ANONYMOUS")]
    pub allow_anonymous: bool,

    /// A web origin (`https://app.example.com`) whose pages may call the API
    /// and open streams with credentials (CORS); repeat for more, or give a
    /// comma-separated list in the variable.
    #[arg(
        long = "cors-origin",
        env = "JOBCAST_CORS_ORIGINS",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,

    /// Jobs one owner may have running at once; its others wait `queued`
    /// while other owners' jobs take free slots (default: no limit).
    #[arg(long, env = "JOBCAST_MAX_RUNNING_PER_OWNER")]
    pub max_running_per_owner: Option<usize>,

    /// Jobs one owner may have queued; beyond, creation answers 429 with
    /// Retry-After (default: no limit).
    #[arg(long, env = "JOBCAST_MAX_QUEUED_PER_OWNER")]
    pub max_queued_per_owner: Option<usize>,

    /// Event streams one principal may have open; beyond, a stream answers
    /// 429 with Retry-After (default: no limit).
    #[arg(long, env = "JOBCAST_MAX_STREAMS_PER_OWNER")]
    pub max_streams_per_owner: Option<usize>,

    /// Log filter, in tracing's EnvFilter syntax.
    #[arg(long, env = "JOBCAST_LOG", default_value = "info")]
    pub log: String,

    /// Log lines as readable `text`, or as `json`: one object per line, with
    /// the request's and job's span fields, for log collectors.
    #[arg(long, env = "JOBCAST_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Default for Config {
    /// The defaults, ignoring flags and the environment.
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            store: StoreChoice::Sqlite(PathBuf::from("jobcast.db")),
            max_running: 64,
            max_queued: 10_000,
            max_streams: 20_000,
            retention: Duration::from_secs(3600),
            max_finished: 10_000,
            lease: Duration::from_secs(10),
            cancel_grace: Duration::from_secs(10),
            keep_alive: Duration::from_secs(15),
            retry: Duration::from_millis(3000),
            body_limit: 1_048_576,
            publish_interval: Duration::from_millis(10),
            kinds_file: None,
            header_timeout: Duration::from_secs(10),
            http2_max_streams: 200,
            tls_cert: None,
            tls_key: None,
            auth_keys: None,
            jwt_secret: None,
            jwt_public_key: None,
            jwt_issuer: None,
            jwt_audience: None,
            ticket_secret: None,
            allow_anonymous: false,
            cors_origins: Vec::new(),
            max_running_per_owner: None,
            max_queued_per_owner: None,
            max_streams_per_owner: None,
            log: "info".to_owned(),
            log_format: LogFormat::Text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_matches_the_documented_flag_defaults() {
        let from_flags = Config::try_parse_from(["jobcast"]).unwrap();
        // Environment variables set by whoever runs the tests would differ.
        if std::env::vars().all(|(name, _)| !name.starts_with("JOBCAST_")) {
            assert_eq!(from_flags, Config::default());
        }
    }

    #[test]
    fn stores_are_named_as_the_contract_names_them() {
        let store = |text: &str| text.parse::<StoreChoice>();
        assert_eq!(
            store("sqlite:/var/lib/jobcast.db").unwrap(),
            StoreChoice::Sqlite(PathBuf::from("/var/lib/jobcast.db"))
        );
        assert_eq!(store("memory").unwrap(), StoreChoice::Memory);
        assert!(store("sqlite:").is_err());
        assert_eq!(
            store("redis://127.0.0.1:6379/2").unwrap(),
            StoreChoice::Redis("redis://127.0.0.1:6379/2".to_owned())
        );
        assert!(store("postgres://x").is_err());
    }

    #[test]
    fn durations_read_as_people_write_them() {
        let config = Config::try_parse_from([
            "jobcast",
            "--publish-interval",
            "0",
            "--cancel-grace",
            "250ms",
            "--retention",
            "2m",
        ])
        .unwrap();
        assert_eq!(config.publish_interval, Duration::ZERO);
        assert_eq!(config.cancel_grace, Duration::from_millis(250));
        assert_eq!(config.retention, Duration::from_secs(120));
    }

    #[test]
    fn a_header_timeout_of_zero_is_refused() {
        assert!(Config::try_parse_from(["jobcast", "--header-timeout", "0"]).is_err());
        let config = Config::try_parse_from(["jobcast", "--header-timeout", "500ms"]).unwrap();
        assert_eq!(config.header_timeout, Duration::from_millis(500));
    }
}
