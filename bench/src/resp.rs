//! A minimal Redis client for the load generator's own questions to the
//! `redis-server` it started (`PING`, `INFO`, `GET`, `PUBSUB`): commands as
//! RESP arrays, replies parsed into [`Reply`].
//!
//! Written by hand rather than with the `redis` crate because the tool must
//! know exactly what its own traffic added to Redis's counters: it counts
//! every byte it sends and receives and every command it sends, so that
//! [`crate::redis`] can take them out of `INFO`'s totals and what is left is
//! the jobcast instances' alone.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Commands that `INFO commandstats` counts by subcommand (`pubsub|channels`).
const CONTAINERS: [&str; 3] = ["client", "config", "pubsub"];

/// One reply.
#[derive(Debug, PartialEq)]
pub enum Reply {
    Status(String),
    Error(String),
    Integer(i64),
    /// A bulk string; none for the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// An array; none for the null array.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The reply's text: a status, or a bulk string read as UTF-8.
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Status(text) => Some(text.clone()),
            Reply::Bulk(Some(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
            _ => None,
        }
    }
}

/// What this connection has sent and received so far.
#[derive(Clone, Debug, Default)]
pub struct OwnTraffic {
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Commands sent, by lower-case name (as `INFO commandstats` names them).
    pub commands: BTreeMap<String, u64>,
}

/// One connection, counting its own traffic.
pub struct Connection {
    reader: BufReader<TcpStream>,
    traffic: OwnTraffic,
}

impl Connection {
    pub async fn open(addr: SocketAddr) -> io::Result<Connection> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            reader: BufReader::new(stream),
            traffic: OwnTraffic::default(),
        })
    }

    /// The traffic so far.
    pub fn traffic(&self) -> &OwnTraffic {
        &self.traffic
    }

    async fn send(&mut self, args: &[&str]) -> io::Result<()> {
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        self.reader.get_mut().write_all(&request).await?;
        self.traffic.bytes_sent += request.len() as u64;
        let name = match args {
            [container, sub, ..] if CONTAINERS.contains(&container.to_ascii_lowercase().as_str()) => {
                format!("{}|{}", container.to_ascii_lowercase(), sub.to_ascii_lowercase())
            }
            [name, ..] => name.to_ascii_lowercase(),
            [] => String::new(),
        };
        *self.traffic.commands.entry(name).or_default() += 1;
        Ok(())
    }

    /// Reads one whole reply.
    async fn read_reply(&mut self) -> io::Result<Reply> {
        // An array holds replies: kept as a stack of unfinished arrays
        // rather than by recursion.
        let mut open: Vec<(usize, Vec<Reply>)> = Vec::new();
        loop {
            let mut reply = self.read_one().await?;
            loop {
                match reply {
                    Partial::Array(count) if count > 0 => {
                        open.push((count, Vec::with_capacity(count)));
                        break;
                    }
                    Partial::Array(_) => reply = Partial::Done(Reply::Array(Some(Vec::new()))),
                    Partial::Done(done) => match open.last_mut() {
                        None => return Ok(done),
                        Some((count, items)) => {
                            items.push(done);
                            if items.len() < *count {
                                break;
                            }
                            let (_, items) = open.pop().expect("just looked at it");
                            reply = Partial::Done(Reply::Array(Some(items)));
                        }
                    },
                }
            }
        }
    }

    /// Sends a command and reads its reply; a Redis error is an I/O error.
    pub async fn command(&mut self, args: &[&str]) -> io::Result<Reply> {
        self.send(args).await?;
        match self.read_reply().await? {
            Reply::Error(error) => Err(io::Error::other(format!("{}: {error}", args.join(" ")))),
            reply => Ok(reply),
        }
    }

    async fn read_line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        let read = self.reader.read_line(&mut line).await?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "Redis closed the connection",
            ));
        }
        self.traffic.bytes_received += read as u64;
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }

    /// One reply, or the start of an array.
    async fn read_one(&mut self) -> io::Result<Partial> {
        let line = self.read_line().await?;
        let (kind, rest) = line.split_at(line.len().min(1));
        let number = || -> io::Result<i64> {
            rest.parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("not a number: {line}")))
        };
        Ok(match kind {
            "+" => Partial::Done(Reply::Status(rest.to_owned())),
            "-" => Partial::Done(Reply::Error(rest.to_owned())),
            ":" => Partial::Done(Reply::Integer(number()?)),
            "$" => match usize::try_from(number()?) {
                Err(_) => Partial::Done(Reply::Bulk(None)),
                Ok(length) => {
                    let mut bytes = vec![0; length + 2];
                    self.reader.read_exact(&mut bytes).await?;
                    self.traffic.bytes_received += bytes.len() as u64;
                    bytes.truncate(length);
                    Partial::Done(Reply::Bulk(Some(bytes)))
                }
            },
            "*" => match usize::try_from(number()?) {
                Err(_) => Partial::Done(Reply::Array(None)),
                Ok(count) => Partial::Array(count),
            },
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("not a RESP reply: {line}"),
                ))
            }
        })
    }
}

/// A reply read, or the head of an array whose items follow.
enum Partial {
    Done(Reply),
    Array(usize),
}
