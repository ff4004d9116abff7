//! The parts of dipcd that other crates use: its command line (for the
//! man page generator). The daemon itself is the `dipcd` binary.

pub mod cli;
