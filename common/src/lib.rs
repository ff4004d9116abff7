//! Everything the dipc processes share: the wire format ([`wire`]), framed
//! sockets ([`channel`]), the cluster secret and the handshake that opens
//! every connection between hosts ([`auth`]), the secure channel it opens
//! ([`secure`]), `dipc.conf` ([`config`]), the event loop the daemons run
//! their logic on ([`reactor`]) and the small pieces of process plumbing
//! they have in common ([`sys`], [`procs`]).
//!
//! The wire format is defined here and only here, so a daemon and a library
//! built from the same tree always agree on it.

pub mod auth;
pub mod calls;
pub mod channel;
pub mod config;
pub mod incarnation;
pub mod keypolicy;
pub mod metrics;
pub mod net;
pub mod procs;
pub mod reactor;
pub mod secure;
pub mod silence;
pub mod sys;
pub mod sysv;
pub mod wire;
