//! The HTTP API against a real server on an ephemeral port.

mod engine;
mod fanout;
mod helpers;
mod lifecycle;
mod pacing;
mod requests;
mod smoke;
mod streams;
