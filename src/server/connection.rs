//! Serving one accepted connection: the TLS handshake, the choice of
//! HTTP/1.1 or HTTP/2, and a graceful end when the server closes.
//!
//! Each protocol runs in a task of its own, and the handshake in another
//! before it: a task's future is as large as the largest state it may be
//! in, and an idle HTTP/1.1 stream must not pay for the HTTP/2 connection
//! state, nor for a TLS handshake it never made.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::rewind::Rewind;
use super::tls::ALPN_HTTP2;
use super::Server;

/// A byte stream a connection can be served on.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<I: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for I {}

/// Makes the TLS handshake, then serves the protocol the client chose by
/// ALPN (HTTP/1.1 when it chose none).
pub(super) async fn serve_tls(tcp: TcpStream, acceptor: TlsAcceptor, server: Arc<Server>) {
    let handshake = tokio::select! {
        handshake = acceptor.accept(tcp) => handshake,
        () = server.closing.cancelled() => return,
    };
    let tls = match handshake {
        Ok(tls) => tls,
        Err(error) => {
            tracing::debug!(%error, "TLS handshake failed");
            return;
        }
    };
    if tls.get_ref().1.alpn_protocol() == Some(ALPN_HTTP2) {
        server.connections.spawn(serve_http2(tls, server.clone()));
    } else {
        server.connections.spawn(serve_http1(tls, server.clone()));
    }
}

/// Serves HTTP/1.1 on `io`; a connection that opens with the HTTP/2
/// preface goes on, in a new task, as HTTP/2.
pub(super) async fn serve_http1<I: Io>(io: I, server: Arc<Server>) {
    let service = TowerToHyperService::new(server.router.clone());
    let mut connection = server.http1.serve_connection(TokioIo::new(io), service);
    // Polled without hyper's own shutdown of the IO, so that the IO can be
    // taken back: to hand it to HTTP/2.
    let ended = until_done(
        &mut connection,
        &server.closing,
        |connection, cx| connection.poll_without_shutdown(cx),
        |connection| Pin::new(connection).graceful_shutdown(),
    )
    .await;
    let parts = connection.into_parts();
    let mut io = parts.io.into_inner();
    match ended {
        Ok(()) => {
            // What hyper would have done: the peer sees the end of the stream.
            let _ = io.shutdown().await;
        }
        Err(error) if error.is_parse_version_h2() => {
            let io = Rewind::new(parts.read_buf, io);
            server.connections.spawn(serve_http2(io, server.clone()));
        }
        Err(error) => tracing::trace!(%error, "connection ended with an error"),
    }
}

/// Serves HTTP/2 on `io`.
async fn serve_http2<I: Io>(io: I, server: Arc<Server>) {
    let service = TowerToHyperService::new(server.router.clone());
    let mut connection = pin!(server.http2.serve_connection(TokioIo::new(io), service));
    let served = until_done(
        &mut connection,
        &server.closing,
        |connection, cx| connection.as_mut().poll(cx),
        |connection| connection.as_mut().graceful_shutdown(),
    )
    .await;
    if let Err(error) = served {
        tracing::trace!(%error, "connection ended with an error");
    }
}

/// Drives `connection` with `poll` until it is done; once `closing` is
/// cancelled, asks it (once) to end gracefully with `close` and goes on
/// driving it.
async fn until_done<C, T>(
    connection: &mut C,
    closing: &CancellationToken,
    mut poll: impl FnMut(&mut C, &mut Context<'_>) -> Poll<T>,
    close: impl Fn(&mut C),
) -> T {
    let mut closed = pin!(closing.cancelled());
    let mut asked_to_close = false;
    poll_fn(|cx| {
        if !asked_to_close && closed.as_mut().poll(cx).is_ready() {
            asked_to_close = true;
            close(connection);
        }
        poll(connection, cx)
    })
    .await
}
