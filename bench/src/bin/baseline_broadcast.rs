//! Baseline "hand-rolled broadcaster": the practical limit of fan-out on
//! tokio. Each state is serialised once into an SSE frame (`Bytes`) and sent
//! on the job's broadcast channel; each subscriber is a task that writes the
//! frames it receives straight to its socket with `write_all`. No HTTP
//! framework: requests are parsed by hand, responses are `Connection:
//! close` and streams are close-delimited (no chunked encoding). Lagged
//! receivers skip what they missed; nothing is merged.
//!
//! Only what the load generator needs: `POST /v1/jobs` (demo params),
//! `GET /v1/jobs/{id}/events`, `GET /healthz`.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use clap::Parser;
use jobcast_bench::demo::{self, Hub, JobState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast::error::RecvError;

/// A minimal tokio broadcaster of pre-serialised SSE frames.
#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8092")]
    listen: SocketAddr,
    /// Per-job broadcast channel capacity.
    #[arg(long, default_value_t = 1024)]
    capacity: usize,
}

/// One state, serialised once.
struct Frame {
    seq: u64,
    terminal: bool,
    json: Bytes,
    /// The live event, shared by every subscriber.
    live: Bytes,
}

type Jobs = Arc<Hub<Arc<Frame>>>;

fn encode(event: &str, seq: u64, json: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(json.len() + 48);
    write!(frame, "event: {event}\nid: {seq}\ndata: ").expect("writing to a Vec cannot fail");
    frame.extend_from_slice(json);
    frame.extend_from_slice(b"\n\n");
    Bytes::from(frame)
}

fn frame(job: &JobState) -> Arc<Frame> {
    let json = Bytes::from(serde_json::to_vec(job).expect("a job state always serialises"));
    Arc::new(Frame {
        seq: job.seq,
        terminal: job.is_terminal(),
        live: encode(job.event_name(), job.seq, &json),
        json,
    })
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let hub: Jobs = Hub::new(args.capacity);
    let listener = TcpListener::bind(args.listen).await?;
    loop {
        let (socket, _) = listener.accept().await?;
        let hub = hub.clone();
        tokio::spawn(async move {
            // A failed connection concerns only its client.
            let _ = serve(socket, hub).await;
        });
    }
}

async fn serve(mut socket: TcpStream, hub: Jobs) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    let mut buffer = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(end) = memchr::memmem::find(&buffer, b"\r\n\r\n") {
            break end + 4;
        }
        if buffer.len() > 16 * 1024 || socket.read_buf(&mut buffer).await? == 0 {
            return Ok(());
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut words = head.split_ascii_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    match (method, path) {
        ("POST", "/v1/jobs") => {
            let length = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            while buffer.len() < head_end + length {
                if socket.read_buf(&mut buffer).await? == 0 {
                    return Ok(());
                }
            }
            create(socket, hub, &buffer[head_end..head_end + length]).await
        }
        ("GET", "/healthz") => respond(socket, "200 OK", "text/plain", b"ok").await,
        ("GET", path) => match path
            .strip_prefix("/v1/jobs/")
            .and_then(|rest| rest.strip_suffix("/events"))
        {
            Some(id) => events(socket, hub, id).await,
            None => respond(socket, "404 Not Found", "text/plain", b"not found").await,
        },
        _ => respond(socket, "404 Not Found", "text/plain", b"not found").await,
    }
}

async fn respond(mut socket: TcpStream, status: &str, content_type: &str, body: &[u8]) -> std::io::Result<()> {
    let mut response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(body);
    socket.write_all(&response).await?;
    socket.shutdown().await
}

async fn create(socket: TcpStream, hub: Jobs, body: &[u8]) -> std::io::Result<()> {
    let Some((params, demo_params)) = demo::parse_create(body) else {
        return respond(socket, "422 Unprocessable Entity", "text/plain", b"demo params only").await;
    };
    let job = JobState::queued(params);
    let id = job.id.clone();
    let first = frame(&job);
    let json = first.json.clone();
    hub.insert(id.clone(), first);
    tokio::spawn(demo::run(job, demo_params, move |state| {
        hub.publish(&id, frame(state), state.is_terminal());
    }));
    respond(socket, "202 Accepted", "application/json", &json).await
}

async fn events(mut socket: TcpStream, hub: Jobs, id: &str) -> std::io::Result<()> {
    let Some((snapshot, receiver)) = hub.subscribe(id) else {
        return respond(socket, "404 Not Found", "text/plain", b"no such job").await;
    };
    let mut first = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
connection: close\r\n\r\nretry: 3000\n\n"
        .to_vec();
    if snapshot.terminal {
        first.extend_from_slice(&snapshot.live);
    } else {
        first.extend_from_slice(&encode("snapshot", snapshot.seq, &snapshot.json));
    }
    socket.write_all(&first).await?;
    if let Some(mut receiver) = receiver {
        loop {
            match receiver.recv().await {
                Ok(frame) => {
                    socket.write_all(&frame.live).await?;
                    if frame.terminal {
                        break;
                    }
                }
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => break,
            }
        }
    }
    socket.shutdown().await
}
