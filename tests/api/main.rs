//! The HTTP API against a real server on an ephemeral port.

mod all_jobs_stream;
mod bad_requests;
mod commands;
mod create;
mod create_idempotency;
mod engine;
mod examples;
mod fanout;
mod get;
mod helpers;
mod job_stream;
mod job_stream_load;
mod job_stream_resume;
mod kinds;
mod lifecycle;
mod list;
mod logs;
mod ops;
mod pacing;
mod restarts;
mod retry;
mod smoke;
mod streams_common;
mod timeouts;
mod transport;
mod workers;
