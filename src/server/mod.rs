//! Accepting connections and serving the router on each: what
//! `axum::serve` does, with hyper's connection builders configured by us,
//! plus TLS and HTTP/2.
//!
//! Written here rather than with `axum::serve` because that builder cannot
//! be configured, and an idle event stream's memory is mostly hyper's
//! per-connection state: its read buffer grows to 16 KiB when it polls for
//! the next request unless `max_buf_size` caps it, and hyper-util's
//! HTTP/1.1-and-2 connection future is twice the size of the HTTP/1.1 one.
//! So a plain connection is served by the HTTP/1.1 builder alone; when its
//! first bytes turn out to be the HTTP/2 preface (a client or proxy with
//! prior knowledge, h2c), hyper stops with a "found HTTP/2 preface" error,
//! and the connection, with the bytes already read, goes to the HTTP/2
//! builder in a task of its own ([`connection`]). Over TLS, ALPN chooses
//! ([`tls`]). A request head must fit in 8 KiB on HTTP/1.1 (bodies are not
//! limited by it), and arrive within the header timeout on either protocol
//! (how each keeps it: [`connection`]).
//!
//! HTTP/2's limits, per connection: `--http2-max-streams` concurrent streams
//! (default 200, hyper's default), request header lists up to 8 KiB as on
//! HTTP/1.1 (hyper's default is 16 KiB; beyond, the stream gets a 431), and
//! hyper's reset-flood defences (at most 20 streams reset by the client
//! before the server accepted them, at most 1,024 streams the server had to
//! reset for the client's errors, before the connection is closed with
//! GOAWAY). All are set here, so that a change of hyper's defaults cannot
//! loosen them. A stream's send buffer is smaller than hyper's default, so
//! that a stream that falls behind skips stale states rather than queueing
//! them. Open event streams are limited server-wide by
//! `--max-streams` whichever protocol carries them.
//!
//! Otherwise this matches `axum::serve`: one task per connection, the
//! router shared by every connection (not collected again for each), and,
//! once the shutdown signal resolves, no new connections and a graceful end
//! of every open one (HTTP/2: GOAWAY, then the open streams finish). Setting
//! socket options is left to the listener (`ListenerExt::tap_io`); deciding
//! when to stop, to the caller.

mod connection;
mod idle;
mod rewind;
mod tls;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use axum::Router;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::TcpStream;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Config;
pub use tls::TlsError;

/// hyper's smallest allowed read buffer limit. A request head must fit in
/// it, and the API's heads are far smaller.
const MAX_BUF_SIZE: usize = 8192;
/// The largest request header list (HPACK-decoded, 32 bytes counted per
/// field) accepted over HTTP/2: what fits in HTTP/1.1's buffer.
const HTTP2_MAX_HEADER_LIST_SIZE: u32 = MAX_BUF_SIZE as u32;
/// What one HTTP/2 stream may have waiting to be sent (hyper's default is
/// 400 KiB). A stream that falls behind its client is held back once this
/// is full, and then skips stale states as it does on HTTP/1.1 when its
/// socket is full, instead of queueing them: at fan-out 1,000 × 2,000 steps
/// at 0 ms, p95 latency 133–153 ms instead of 338–505 ms, and peak memory
/// 17–19 MiB instead of 30–66 MiB (docs/PERFORMANCE.md). An event larger
/// than this is still sent whole.
const HTTP2_MAX_SEND_BUF_SIZE: usize = 16 * 1024;
/// Streams the client may reset before the server accepted them, pending at
/// once, before the connection is closed (the "rapid reset" attack).
const HTTP2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// Streams the server may reset because of the client's errors before the
/// connection is closed (the "made you reset" attack).
const HTTP2_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// How the server meets its clients: over TLS (HTTP/2 or HTTP/1.1 by
/// ALPN) or plain (HTTP/1.1, and HTTP/2 with prior knowledge), and how long
/// a client may take to send a request head.
#[derive(Clone)]
pub struct Transport {
    tls: Option<Arc<ServerConfig>>,
    header_timeout: Duration,
    http2_max_streams: u32,
}

impl Default for Transport {
    /// Plain, with the default limits.
    fn default() -> Self {
        let config = Config::default();
        Transport {
            tls: None,
            header_timeout: config.header_timeout,
            http2_max_streams: config.http2_max_streams,
        }
    }
}

impl Transport {
    /// The transport `config` asks for; reads and checks the certificate
    /// and key it names, if any.
    pub fn from_config(config: &Config) -> Result<Transport, TlsError> {
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(tls::load(cert, key)?),
            (None, None) => None,
            _ => return Err(TlsError::Incomplete),
        };
        Ok(Transport {
            tls,
            header_timeout: config.header_timeout,
            http2_max_streams: config.http2_max_streams,
        })
    }

    /// Whether connections speak TLS (`https`).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// What every connection task shares.
struct Server {
    router: Router,
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    /// See `--header-timeout`, and `connection` for how each protocol keeps it.
    header_timeout: Duration,
    /// Cancelled once the server stops accepting: every connection ends gracefully.
    closing: CancellationToken,
    /// Every connection's task, so that the server can wait for them all.
    connections: TaskTracker,
}

impl Server {
    fn new(router: Router, transport: &Transport) -> Server {
        let header_timeout = transport.header_timeout;
        let mut http1 = http1::Builder::new();
        http1
            .max_buf_size(MAX_BUF_SIZE)
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .max_concurrent_streams(transport.http2_max_streams)
            .max_header_list_size(HTTP2_MAX_HEADER_LIST_SIZE)
            .max_pending_accept_reset_streams(HTTP2_MAX_PENDING_ACCEPT_RESET_STREAMS)
            .max_local_error_reset_streams(HTTP2_MAX_LOCAL_ERROR_RESET_STREAMS)
            .max_send_buf_size(HTTP2_MAX_SEND_BUF_SIZE);
        Server {
            router,
            http1,
            http2,
            header_timeout,
            closing: CancellationToken::new(),
            connections: TaskTracker::new(),
        }
    }
}

/// Serves `router` on every connection `listener` accepts until `signal`
/// resolves; then stops accepting, asks every connection to end gracefully
/// (a response in progress is finished first) and returns once all have.
pub(crate) async fn serve<L>(mut listener: L, router: Router, transport: Transport, signal: impl Future<Output = ()>)
where
    L: Listener<Io = TcpStream>,
{
    let server = Arc::new(Server::new(router, &transport));
    let tls = transport.tls.map(TlsAcceptor::from);
    let mut signal = pin!(signal);
    loop {
        let tcp = tokio::select! {
            (tcp, _) = listener.accept() => tcp,
            () = &mut signal => break,
        };
        match &tls {
            Some(acceptor) => server
                .connections
                .spawn(connection::serve_tls(tcp, acceptor.clone(), server.clone())),
            None => server.connections.spawn(connection::serve_http1(tcp, server.clone())),
        };
    }
    drop(listener);
    server.closing.cancel();
    server.connections.close();
    server.connections.wait().await;
}
