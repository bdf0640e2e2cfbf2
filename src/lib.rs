//! jobcast runs long jobs and streams their progress to browsers, terminals
//! and services over Server-Sent Events.
//!
//! # Layout
//!
//! A progress report travels one way: a job's code ([`kinds`]) calls its
//! [`JobContext`] → [`jobs::publish`] decides whether and when it becomes a
//! published state, and makes that state once → [`store`] appends it and fans
//! it out → [`http::sse`] writes its frame to every stream.
//!
//! - [`config`]: the typed settings, from flags and `JOBCAST_*` variables.
//! - [`jobs`]: the engine. [`jobs::model`] is a job's state machine
//!   ([`jobs::model::JobModel::finish`] is the one terminal decision), its
//!   progress and pace, and the job resource; [`jobs::publish`] is the
//!   publish path (the merge window, serialisation, frames);
//!   [`jobs::registry`] admits, runs, cancels and forgets jobs and relays
//!   external workers' calls; [`jobs::context`] is what job code sees;
//!   [`jobs::kind`] declares job kinds; [`jobs::report`] applies progress
//!   reports from child processes and workers; [`jobs::worker`] is the
//!   external workers' mailbox.
//! - [`published`]: a published state, serialised and framed once: what the
//!   engine hands the store and the store hands the streams.
//! - [`store`]: published states and their fan-out behind one trait, with
//!   the in-memory backend in [`store::memory`].
//! - [`http`]: the API's router and handlers; [`http::sse`] holds the stream
//!   rules (snapshot, resume, lag, keep-alive, pacing).
//! - [`auth`]: who may do what: API keys, JWTs, stream tickets, the
//!   session cookie, CORS, and the middleware that lets requests in.
//! - [`error`]: every API error as problem+json.
//! - `server`: accepting connections (plain or TLS) and serving the router
//!   on each, over HTTP/1.1 or HTTP/2; [`Transport`] says which.
//! - [`kinds`]: the built-in job kinds (`demo`), and kinds declared in a
//!   kinds file: commands this server runs, or jobs external workers drive.
//! - [`metrics`], [`telemetry`]: Prometheus metrics and logging.
//! - [`cli`]: the command line, and the terminal client (`jobcast watch`,
//!   `jobcast submit`) that follows jobs over the public API.
//!
//! # Embedding
//!
//! Build an [`App`] with your own kinds, then either [`serve`] it or merge
//! [`App::router`] into your own axum app:
//!
//! ```no_run
//! use jobcast::{App, Config, JobContext, JobError, Kind};
//! use serde_json::{json, Value};
//! use tokio_util::sync::CancellationToken;
//!
//! async fn hello(ctx: JobContext, _params: serde_json::Map<String, Value>) -> Result<Value, JobError> {
//!     ctx.set_message("hello");
//!     Ok(json!("done"))
//! }
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let shutdown = CancellationToken::new();
//! let kinds = [jobcast::kinds::demo::kind(), Kind::new("hello", hello)];
//! let app = App::new(&Config::default(), kinds, shutdown.clone()).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! jobcast::serve(listener, app, shutdown).await?;
//! # Ok(())
//! # }
//! ```

pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod http;
pub mod jobs;
pub mod kinds;
pub mod metrics;
pub mod published;
mod server;
pub mod store;
pub mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use http::AppState;
pub use jobs::context::JobContext;
pub use jobs::kind::{JobResult, Kind};
pub use jobs::model::StageSpec;
pub use jobs::{JobError, JobId, JobStatus};
pub use server::{TlsError, Transport};

use config::StoreChoice;
use jobs::registry::{EngineSettings, Registry, StreamUrls};
use store::memory::MemoryStore;
use store::redis::RedisStore;
use store::sqlite::SqliteStore;
use store::Store;

/// How long connections may take to close after every job and stream has
/// ended at shutdown, before the server stops regardless.
const CONNECTION_DRAIN: Duration = Duration::from_secs(5);

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot use the store {store}: {source}")]
    Store {
        store: StoreChoice,
        source: Box<store::sqlite::OpenError>,
    },
    #[error("cannot use the store {store}: {source}")]
    SharedStore {
        store: StoreChoice,
        source: Box<store::redis::OpenError>,
    },
    #[error("{0}")]
    KindsFile(#[from] kinds::file::KindsFileError),
    #[error("{0}")]
    Transport(#[from] TlsError),
    #[error("{0}")]
    Auth(#[from] auth::SetupError),
    #[error(
        "refusing to serve {0} to the network without authentication: configure --auth-keys or --jwt-secret/--jwt-public-key, or pass --allow-anonymous"
    )]
    Exposed(SocketAddr),
}

/// A jobcast service: the job engine and the state its HTTP API needs.
#[derive(Clone)]
pub struct App {
    state: AppState,
}

impl App {
    /// A service running `kinds`, configured by `config`; it ends every job
    /// when `shutdown` is cancelled. Opens the store `config` names and
    /// takes over the jobs an earlier run left in it. Fails when the store
    /// or the authentication settings cannot be used (an unreadable keys
    /// file, a short secret, …).
    pub async fn new(
        config: &Config,
        kinds: impl IntoIterator<Item = Kind>,
        shutdown: CancellationToken,
    ) -> Result<Self, StartError> {
        let auth = Arc::new(auth::Auth::from_config(config)?);
        let store: Arc<dyn Store> = match &config.store {
            StoreChoice::Memory => Arc::new(MemoryStore::new()),
            StoreChoice::Sqlite(path) => Arc::new(SqliteStore::open(path).map_err(|source| StartError::Store {
                store: config.store.clone(),
                source: Box::new(source),
            })?),
            StoreChoice::Redis(url) => Arc::new(
                RedisStore::open(url, config.lease, store::redis::SharedLimits::of(config))
                    .await
                    .map_err(|source| StartError::SharedStore {
                        store: config.store.clone(),
                        source: Box::new(source),
                    })?,
            ),
        };
        // Only a store this process alone writes holds jobs for it to take
        // over; on a shared one, other instances run theirs.
        let store_is_durable = store.durable();
        let metrics = Arc::new(metrics::Metrics::new());
        let registry = Registry::new(
            store,
            kinds,
            EngineSettings {
                max_running: config.max_running,
                max_queued: config.max_queued,
                cancel_grace: config.cancel_grace,
                retention: config.retention,
                max_finished: config.max_finished,
                publish_interval: config.publish_interval,
                max_running_per_owner: config.max_running_per_owner,
                max_queued_per_owner: config.max_queued_per_owner,
                stream_urls: {
                    let auth = auth.clone();
                    StreamUrls::new(move |id| auth.stream_url(id))
                },
            },
            metrics.clone(),
            shutdown,
        );
        if store_is_durable {
            registry.recover().await;
        }
        Ok(App {
            state: AppState::new(registry, metrics, config, auth),
        })
    }

    /// Every endpoint, as an axum `Router` to serve or merge.
    pub fn router(&self) -> axum::Router {
        http::router(self.state.clone())
    }

    /// Waits until every job has ended (after `shutdown` was cancelled),
    /// then ends the all-jobs streams and long polls.
    pub async fn drain(&self) {
        self.state.registry.wait_for_jobs().await;
        self.state.closing.cancel();
    }
}

/// Serves `app` on `listener` until `shutdown` is cancelled; then ends every
/// live job `failed` with code `shutdown`, lets every stream deliver that
/// terminal event, and returns within a bounded time. Plain connections
/// (HTTP/1.1, and HTTP/2 with prior knowledge); [`serve_with`] for TLS.
pub async fn serve(listener: TcpListener, app: App, shutdown: CancellationToken) -> std::io::Result<()> {
    serve_with(listener, app, Transport::default(), shutdown).await
}

/// [`serve`], over `transport`.
pub async fn serve_with(
    listener: TcpListener,
    app: App,
    transport: Transport,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let scheme = if transport.is_tls() { "https" } else { "http" };
    let auth = app.state.auth.is_on();
    tracing::info!(address = %listener.local_addr()?, scheme, auth, "jobcast listening");
    let listener = listener.tap_io(|tcp| {
        // Progress events are small and latency matters more than packing.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
    });
    let drained = {
        let app = app.clone();
        async move {
            shutdown.cancelled().await;
            tracing::info!("shutting down: ending live jobs");
            app.drain().await;
        }
    };
    let server = server::serve(listener, app.router(), transport, drained);
    let closing = app.state.closing.clone();
    tokio::select! {
        () = server => Ok(()),
        _ = async { closing.cancelled().await; tokio::time::sleep(CONNECTION_DRAIN).await } => {
            tracing::warn!("connections still open after shutdown; stopping anyway");
            Ok(())
        }
    }
}

/// The service the `jobcast` binary runs: the built-in kinds and those of
/// the kinds file, if the config names one, over the store it names.
pub async fn start(config: &Config, shutdown: CancellationToken) -> Result<App, StartError> {
    let mut kinds = vec![kinds::demo::kind()];
    if let Some(path) = &config.kinds_file {
        let settings = kinds::file::FileSettings::for_cancel_grace(config.cancel_grace);
        let from_file = kinds::file::load(path, &settings)?;
        tracing::info!(path = %path.display(), kinds = from_file.len(), "kinds file read");
        kinds.extend(from_file);
    }
    let app = App::new(config, kinds, shutdown).await?;
    check_exposure(config.listen, &app, config)?;
    Ok(app)
}

/// Refuses to serve `address` beyond loopback without authentication,
/// unless the config allows it (CONTRACT.md, "Who may do what").
fn check_exposure(address: SocketAddr, app: &App, config: &Config) -> Result<(), StartError> {
    if address.ip().is_loopback() || app.state.auth.is_on() || config.allow_anonymous {
        return Ok(());
    }
    Err(StartError::Exposed(address))
}

/// [`start`], then [`serve_with`] on `listener` over the transport the
/// config asks for: the binary in one call.
pub async fn run(listener: TcpListener, config: Config, shutdown: CancellationToken) -> std::io::Result<()> {
    let invalid = |error: StartError| std::io::Error::new(std::io::ErrorKind::InvalidInput, error);
    let transport = Transport::from_config(&config).map_err(|error| invalid(error.into()))?;
    let app = start(&config, shutdown.clone()).await.map_err(invalid)?;
    check_exposure(listener.local_addr()?, &app, &config).map_err(invalid)?;
    serve_with(listener, app, transport, shutdown).await
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
pub async fn cancel_on_signal(shutdown: CancellationToken) {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
    shutdown.cancel();
}
