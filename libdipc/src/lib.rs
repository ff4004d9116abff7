//! The dipc application library: what a program links to use dipc.
//!
//! It finds its host's daemon through `$DIPC_CONFIG` (else
//! `/etc/dipc/dipc.conf`) and talks to it over the Unix socket
//! `dipcd.sock` in the configured runtime directory. The same crate builds
//! the Rust API (this rlib: [`msg`], [`sem`], [`shm`], [`pid`], [`dprocs`]) and the C library
//! `libdipc.so` with its header `include/dipc.h` ([`capi`]).

pub mod capi;
pub mod client;
mod dist;
pub mod dprocs;
mod made;
pub mod migrate;
mod moved_ids;
pub mod msg;
pub mod pid;
mod retry;
pub mod sem;
pub mod shm;
mod spin;
mod state;
mod umem;

pub use client::{Client, ClientError};
pub use dist::{Errno, IPC_DIPC};
