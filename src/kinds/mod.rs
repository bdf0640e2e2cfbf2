//! The job kinds built into the server, one module each.

pub mod demo;
