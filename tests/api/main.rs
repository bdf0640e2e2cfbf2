//! The HTTP API against a real server on an ephemeral port.

mod commands;
mod engine;
mod examples;
mod fanout;
mod helpers;
mod lifecycle;
mod pacing;
mod requests;
mod smoke;
mod streams;
mod workers;
