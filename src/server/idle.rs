//! An HTTP/2 connection's open streams, counted, so that a connection that
//! has had none for a while can be closed: HTTP/2's counterpart of
//! HTTP/1.1's wait for the next request head, which hyper bounds itself.
//!
//! hyper's HTTP/2 server has no such timeout (its keep-alive pings find
//! dead peers, not idle ones), and does not tell how many streams are
//! open; the router is wrapped to count them. A stream counts from the
//! moment its request head is complete until its response body is dropped,
//! whether it was sent in full or the stream was reset.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::service::Service;
use hyper::{Request, Response};
use tokio::sync::watch;
use tower::ServiceExt;

/// The router, for one connection, counting the streams it answers.
#[derive(Clone)]
pub(super) struct CountingRouter {
    router: Router,
    open: watch::Sender<usize>,
}

/// A response body that counts as an open stream until it is dropped.
pub(super) struct CountedBody {
    body: Body,
    _stream: OpenStream,
}

/// One open stream in a connection's count.
struct OpenStream(watch::Sender<usize>);

impl CountingRouter {
    /// `router` for a new connection, and the connection's count of open
    /// streams.
    pub(super) fn new(router: Router) -> (CountingRouter, watch::Receiver<usize>) {
        let (open, count) = watch::channel(0);
        (CountingRouter { router, open }, count)
    }
}

impl Service<Request<Incoming>> for CountingRouter {
    type Response = Response<CountedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let stream = OpenStream::new(self.open.clone());
        let router = self.router.clone();
        Box::pin(async move {
            let response = router.oneshot(request).await?;
            Ok(response.map(|body| CountedBody { body, _stream: stream }))
        })
    }
}

impl OpenStream {
    fn new(open: watch::Sender<usize>) -> OpenStream {
        open.send_modify(|count| *count += 1);
        OpenStream(open)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.send_modify(|count| *count -= 1);
    }
}

impl hyper::body::Body for CountedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Resolves once the connection has had no open stream for `timeout`; a
/// new connection is idle from its start, so its first request head must
/// come within `timeout` too.
pub(super) async fn idle_for(mut open: watch::Receiver<usize>, timeout: Duration) {
    loop {
        // An error means the connection (which holds the counter) is gone.
        if open.wait_for(|count| *count == 0).await.is_err() {
            return;
        }
        if tokio::time::timeout(timeout, open.wait_for(|count| *count > 0))
            .await
            .is_err()
        {
            return;
        }
    }
}
