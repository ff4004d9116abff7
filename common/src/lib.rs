//! Everything the dipc processes share: the wire format ([`wire`]), framed
//! sockets ([`channel`]), the cluster secret and peer authentication
//! ([`auth`]), `dipc.conf` ([`config`]) and the small pieces of process
//! plumbing the daemons have in common ([`sys`], [`procs`]).
//!
//! The wire format is defined here and only here, so a daemon and a library
//! built from the same tree always agree on it.

pub mod auth;
pub mod channel;
pub mod config;
pub mod net;
pub mod procs;
pub mod sys;
pub mod sysv;
pub mod wire;
