//! Serving one accepted connection: the TLS handshake, the choice of
//! HTTP/1.1 or HTTP/2, the header timeout, and a graceful end when the
//! server closes.
//!
//! Each protocol runs in a task of its own, and the handshake in another
//! before it: a task's future is as large as the largest state it may be
//! in, and an idle HTTP/1.1 stream must not pay for the HTTP/2 connection
//! state, nor for a TLS handshake it never made.
//!
//! The header timeout: the TLS handshake must end within it. On HTTP/1.1,
//! hyper's header read timer runs from the connection's start, and from the
//! end of each response on a kept-alive connection, until a request head is
//! complete; when it fires, a head that had begun gets a 408 problem
//! written here (hyper only closes the connection), and a connection on
//! which nothing arrived is just closed. On HTTP/2, a connection with no
//! open stream for that long is asked to close ([`idle`]). A connection
//! asked to close, whatever the reason, has that long again to finish, then
//! it is dropped: an HTTP/2 client that never answers the GOAWAY's ping
//! would otherwise keep it open.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::response::IntoResponse;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::idle::{idle_for, CountingRouter};
use super::rewind::Rewind;
use super::tls::ALPN_HTTP2;
use super::Server;
use crate::error::ApiError;

/// The largest 408 answer: the problem document is a few hundred bytes.
const TIMEOUT_ANSWER_LIMIT: usize = 4096;

/// A byte stream a connection can be served on.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<I: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for I {}

/// Makes the TLS handshake, then serves the protocol the client chose by
/// ALPN (HTTP/1.1 when it chose none).
pub(super) async fn serve_tls(tcp: TcpStream, acceptor: TlsAcceptor, server: Arc<Server>) {
    let handshake = tokio::time::timeout(server.header_timeout, acceptor.accept(tcp));
    let handshake = tokio::select! {
        handshake = handshake => handshake,
        () = server.closing.cancelled() => return,
    };
    let tls = match handshake {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::debug!(%error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!("TLS handshake not done within the header timeout");
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
    // taken back: to hand it to HTTP/2, or to answer 408.
    let ended = until_done(
        &mut connection,
        pin!(server.closing.cancelled()),
        server.header_timeout,
        |connection, cx| connection.poll_without_shutdown(cx),
        |connection| Pin::new(connection).graceful_shutdown(),
    )
    .await;
    let Some(ended) = ended else {
        tracing::debug!("connection dropped: not closed in time after it was asked to");
        return;
    };
    // Boxed: what follows the connection would otherwise take room of its
    // own in this task, for as long as the connection lives.
    Box::pin(after_http1(ended, connection.into_parts(), server)).await;
}

/// What follows an HTTP/1.1 connection that hyper is done with: the end of
/// the stream, HTTP/2 when the client spoke it, or a 408.
async fn after_http1<I: Io>(
    ended: hyper::Result<()>,
    parts: http1::Parts<TokioIo<I>, TowerToHyperService<Router>>,
    server: Arc<Server>,
) {
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
        Err(error) if error.is_timeout() && !parts.read_buf.is_empty() => {
            tracing::debug!("request head not complete within the header timeout: 408");
            let answer = answer_request_timeout(&mut io, server.header_timeout);
            let _ = tokio::time::timeout(server.header_timeout, answer).await;
        }
        Err(error) => tracing::trace!(%error, "connection ended with an error"),
    }
}

/// Writes the 408 problem for a request head that did not arrive within
/// `header_timeout`, asking the client to close, and ends the stream.
async fn answer_request_timeout<I: Io>(io: &mut I, header_timeout: Duration) -> std::io::Result<()> {
    let (head, body) = ApiError::RequestTimeout(header_timeout).into_response().into_parts();
    let body = axum::body::to_bytes(body, TIMEOUT_ANSWER_LIMIT)
        .await
        .map_err(std::io::Error::other)?;
    let mut answer = format!("HTTP/1.1 {}\r\n", head.status);
    for (name, value) in &head.headers {
        if let Ok(value) = value.to_str() {
            answer.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    answer.push_str(&format!("content-length: {}\r\nconnection: close\r\n\r\n", body.len()));
    io.write_all(answer.as_bytes()).await?;
    io.write_all(&body).await?;
    io.shutdown().await
}

/// Serves HTTP/2 on `io`, closing it once it has had no open stream for
/// the header timeout.
async fn serve_http2<I: Io>(io: I, server: Arc<Server>) {
    let (service, open_streams) = CountingRouter::new(server.router.clone());
    let mut connection = pin!(server.http2.serve_connection(TokioIo::new(io), service));
    let close_when = async {
        tokio::select! {
            () = idle_for(open_streams, server.header_timeout) => tracing::debug!("closing an idle HTTP/2 connection"),
            () = server.closing.cancelled() => {}
        }
    };
    let served = until_done(
        &mut connection,
        pin!(close_when),
        server.header_timeout,
        |connection, cx| connection.as_mut().poll(cx),
        |connection| connection.as_mut().graceful_shutdown(),
    )
    .await;
    match served {
        Some(Ok(())) => {}
        Some(Err(error)) => tracing::trace!(%error, "connection ended with an error"),
        None => tracing::debug!("connection dropped: not closed in time after it was asked to"),
    }
}

/// Drives `connection` with `poll` until it is done. Once `close_when`
/// resolves, asks it to end gracefully with `close` and drives it for at
/// most `grace` more; `None` if it was not done by then.
///
/// A plain function returning `poll_fn`'s future rather than an `async fn`:
/// the closure alone holds the state, which keeps every idle connection's
/// task a few dozen bytes smaller.
fn until_done<'a, C, T>(
    connection: &'a mut C,
    mut close_when: Pin<&'a mut impl Future<Output = ()>>,
    grace: Duration,
    mut poll: impl FnMut(&mut C, &mut Context<'_>) -> Poll<T> + 'a,
    close: impl Fn(&mut C) + 'a,
) -> impl Future<Output = Option<T>> + 'a {
    // Boxed, and made only once needed: an idle connection's task stays small.
    let mut deadline: Option<Pin<Box<tokio::time::Sleep>>> = None;
    poll_fn(move |cx| loop {
        if let Poll::Ready(done) = poll(connection, cx) {
            return Poll::Ready(Some(done));
        }
        match deadline.as_mut() {
            Some(deadline) => return deadline.as_mut().poll(cx).map(|()| None),
            None => {
                if close_when.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                close(connection);
                deadline = Some(Box::pin(tokio::time::sleep(grace)));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle event stream's memory is mostly its connection's task: the
    /// task must hold little besides hyper's HTTP/1.1 connection (the
    /// HTTP/2, TLS and 408 paths live in tasks or boxes of their own).
    #[tokio::test]
    async fn an_http1_connection_task_holds_little_besides_hypers_connection() {
        type Connection = http1::Connection<TokioIo<TcpStream>, TowerToHyperService<Router>>;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let server = Arc::new(Server::new(Router::new(), &super::super::Transport::default()));
        let task = serve_http1(tcp, server);
        let overhead = std::mem::size_of_val(&task) - std::mem::size_of::<Connection>();
        // 192 bytes with Rust 1.95; the old task (before TLS and HTTP/2) had as much.
        assert!(overhead <= 256, "{overhead} bytes besides the connection");
    }
}
