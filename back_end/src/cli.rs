//! dipcd's command line, in the library so that `dipc-man` renders
//! dipcd(8) from the very definition dipcd parses.

use clap::{CommandFactory, Parser};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "dipcd",
    version,
    about = "The dipc daemon: one per host of a dipc cluster"
)]
pub struct Args {
    /// Configuration file [default: $DIPC_CONFIG, else /etc/dipc/dipc.conf]
    #[arg(short, long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// The command dipcd parses, for the man page generator.
pub fn command() -> clap::Command {
    Args::command()
}
