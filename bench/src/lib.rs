//! jobcast-bench measures how well an SSE progress server feeds its
//! watchers: jobcast itself and two baselines built from this crate's own
//! sources, side by side, over real loopback sockets and the public HTTP API
//! only.
//!
//! # Layout
//!
//! - [`client`]: a minimal HTTP/1.1 client and SSE reader written for the
//!   load generator, so that one client core can keep up with one server
//!   core (a general-purpose client spends more per event than the server
//!   under test).
//! - [`http2`]: the same streams over a few HTTP/2 connections (h2c), to
//!   compare with HTTP/1.1's connection per stream.
//! - [`procfs`]: server CPU time and memory from `/proc`, and pinning.
//! - [`server`]: starts and stops the server under test, pinned to a core.
//! - [`redis`]: a `redis-server` of the tool's own for `--store redis`, and
//!   its counters, read over [`resp`], a minimal client that counts its own
//!   traffic.
//! - [`instances`]: two jobcast instances on that Redis: fan-out and many
//!   jobs with the streams spread over both, and the death of one
//!   (`instance_lost`).
//! - [`scenarios`]: fan-out, many jobs, idle, churn; each run yields a
//!   [`report::RunReport`].
//! - [`creates`]: job creation as fast as the server accepts it, and the
//!   store's file and the server's memory sampled over a long run.
//! - [`report`]: the JSON line and readable table of each run, and medians.
//! - [`suite`]: every target scenario against every target, repeated, with
//!   medians, ratios and the latency plot drawn by [`plot`].
//! - [`demo`]: the job resource and `demo` runner shared by the baselines
//!   (`baseline-axum`, `baseline-broadcast`), which are not jobcast code.

pub mod client;
pub mod creates;
pub mod demo;
pub mod http2;
pub mod instances;
pub mod plot;
pub mod procfs;
pub mod redis;
pub mod report;
pub mod resp;
pub mod scenarios;
pub mod server;
pub mod suite;
