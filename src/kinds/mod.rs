//! Job kinds: the built-in `demo`, and the kinds a kinds file declares —
//! commands this server runs, and jobs external workers drive. One module
//! each, with [`params`] for the declared params they share.

pub mod command;
pub mod demo;
pub mod file;
pub mod params;
