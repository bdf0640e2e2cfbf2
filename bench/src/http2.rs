//! Streams over HTTP/2 with prior knowledge (h2c): N connections, each
//! carrying its share of the streams, opened on first use. For measuring
//! fan-out over a few multiplexed connections against HTTP/1.1's one
//! connection per stream.
//!
//! The `h2` crate directly, without hyper's client: a stream is an h2
//! receive stream whose data frames go straight into the SSE reader of
//! [`crate::client`], and flow control is given back as soon as they are
//! read, so that the client never holds the server back.

use std::io;

use bytes::Bytes;
use h2::client::SendRequest;
use tokio::sync::OnceCell;

use crate::client::{Endpoint, EventStream, Opened, Response};

/// Receive window per stream: well above what a stream has in flight.
const STREAM_WINDOW: u32 = 1024 * 1024;
/// Receive window per connection, shared by its streams.
const CONNECTION_WINDOW: u32 = 64 * 1024 * 1024;

/// `count` HTTP/2 connections to one server.
pub struct Http2Connections {
    endpoint: Endpoint,
    senders: Vec<OnceCell<SendRequest<Bytes>>>,
}

impl Http2Connections {
    pub fn new(endpoint: Endpoint, count: usize) -> Self {
        Http2Connections {
            endpoint,
            senders: (0..count.max(1)).map(|_| OnceCell::new()).collect(),
        }
    }

    /// The connection for stream number `index`, connected on first use;
    /// its driver runs as a task of its own.
    async fn sender(&self, index: usize) -> io::Result<SendRequest<Bytes>> {
        let slot = index % self.senders.len();
        let sender = self.senders[slot]
            .get_or_try_init(|| async {
                let tcp = self.endpoint.connect(slot).await?;
                let (sender, connection) = h2::client::Builder::new()
                    .initial_window_size(STREAM_WINDOW)
                    .initial_connection_window_size(CONNECTION_WINDOW)
                    .handshake::<_, Bytes>(tcp)
                    .await
                    .map_err(io::Error::other)?;
                tokio::task::spawn_local(async move {
                    if let Err(error) = connection.await {
                        eprintln!("  an HTTP/2 connection ended: {error}");
                    }
                });
                Ok::<_, io::Error>(sender)
            })
            .await?;
        Ok(sender.clone())
    }

    /// Sends `GET path` as stream number `index` and waits for the head.
    pub async fn open(
        &self,
        index: usize,
        path: &str,
        last_event_id: Option<u64>,
        read_buffer: usize,
    ) -> io::Result<Opened> {
        let mut request =
            http::Request::get(format!("http://{}{path}", self.endpoint.addr)).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        if let Some(credential) = &self.endpoint.bearer {
            request = request.header("authorization", format!("Bearer {credential}"));
        }
        let request = request.body(()).map_err(io::Error::other)?;
        let mut sender = self.sender(index).await?.ready().await.map_err(io::Error::other)?;
        let (response, _) = sender.send_request(request, true).map_err(io::Error::other)?;
        let response = response.await.map_err(io::Error::other)?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        if status != 200 {
            let mut content = Vec::new();
            while read_data(&mut body, &mut content).await? {}
            return Ok(Opened::Refused(Response { status, body: content }));
        }
        Ok(Opened::Stream(EventStream::over_http2(body, read_buffer)))
    }
}

/// Appends the stream's next data frame to `out` and gives its flow
/// control back; false once the stream has ended.
pub(crate) async fn read_data(body: &mut h2::RecvStream, out: &mut Vec<u8>) -> io::Result<bool> {
    match body.data().await {
        None => Ok(false),
        Some(data) => {
            let data = data.map_err(io::Error::other)?;
            out.extend_from_slice(&data);
            let _ = body.flow_control().release_capacity(data.len());
            Ok(true)
        }
    }
}
