//! The HTTP API against a real server on an ephemeral port.

mod helpers;
mod smoke;
