//! Accepting connections and serving the router on each: what
//! `axum::serve` does, with hyper's HTTP/1.1 connection builder configured
//! by us.
//!
//! Written here rather than with `axum::serve` because that builder cannot
//! be configured, and an idle event stream's memory is mostly hyper's
//! per-connection state: its read buffer grows to 16 KiB when it polls for
//! the next request unless `max_buf_size` caps it, and the HTTP/1.1-and-2
//! connection future is twice the size of the HTTP/1.1 one. So connections
//! speak HTTP/1.1 only: HTTP/2 without TLS works only with prior knowledge,
//! which browsers and the API's own clients do not use. A request head must
//! fit in 8 KiB (bodies are not limited by it). Otherwise this matches
//! `axum::serve`: one task per connection, the router shared by every
//! connection (not collected again for each), and, once the shutdown signal
//! resolves, no new connections and a graceful end of every open one.
//! Setting socket options is left to the listener (`ListenerExt::tap_io`);
//! deciding when to stop, to the caller.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;

use axum::serve::Listener;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// hyper's smallest allowed read buffer limit. A request head must fit in
/// it, and the API's heads are far smaller.
const MAX_BUF_SIZE: usize = 8192;

/// Serves `router` on every connection `listener` accepts until `signal`
/// resolves; then stops accepting, asks every connection to end gracefully
/// (a response in progress is finished first) and returns once all have.
pub(crate) async fn serve<L>(mut listener: L, router: Router, signal: impl Future<Output = ()>)
where
    L: Listener,
{
    let mut builder = http1::Builder::new();
    builder.max_buf_size(MAX_BUF_SIZE);
    let builder = Arc::new(builder);
    let closing = CancellationToken::new();
    let connections = TaskTracker::new();
    let mut signal = pin!(signal);
    loop {
        let io = tokio::select! {
            (io, _) = listener.accept() => io,
            () = &mut signal => break,
        };
        let builder = builder.clone();
        let service = TowerToHyperService::new(router.clone());
        let closing = closing.clone();
        connections.spawn(async move {
            let mut connection = pin!(builder.serve_connection(TokioIo::new(io), service));
            let served = tokio::select! {
                served = connection.as_mut() => served,
                () = closing.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = served {
                tracing::trace!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    closing.cancel();
    connections.close();
    connections.wait().await;
}
