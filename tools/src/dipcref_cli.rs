//! dipcref's command line, in the library so that `dipc-man` renders
//! dipcref(8) from the very definition dipcref parses: a subcommand added
//! here appears in the page at the next `tools/man`.

use clap::{CommandFactory, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "dipcref",
    version,
    about = "Inspect and administer a dipc cluster's referee"
)]
pub struct Args {
    /// Configuration file [default: $DIPC_CONFIG, else /etc/dipc/dipc.conf]
    #[arg(short, long, value_name = "PATH", global = true)]
    pub config: Option<PathBuf>,
    /// Print JSON instead of a table
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// List the hosts of the cluster: address, state, when last heard from
    Hosts,
    /// List the distributed keys: kind, key, owner host, id there, creator
    Keys,
    /// List the registered processes: pid_d, host, pid, uid, time since
    /// they registered
    Pids,
    /// List the names of distributed processes and the pid_d holding each
    Names,
    /// Show each host's load (CPU used by its registered processes over
    /// the balancer's last window), its migratable processes, and the
    /// balancer's recent moves
    Load,
    /// Forget a stale key (its structure is gone but the referee still
    /// lists it); every host drops its placeholder
    RmKey {
        /// msg, sem or shm
        kind: String,
        /// The key, decimal or 0x-hex
        key: String,
    },
    /// Show each distributed shared memory segment's units: which host may
    /// write, which hosts hold read copies
    Shm,
    /// Ask a migratable process to move to another host at its next
    /// migration point (root, admin_group, or the process's own user)
    Migrate {
        /// The process's pid_d
        pid_d: i64,
        /// The target host's address, with its front_end port if not this
        /// host's
        host: String,
    },
    /// List every distributed structure as ipcs(1) does, with its owner
    /// host and id there and the figures read from the owner's kernel
    /// (all kinds unless -q, -s or -m is given)
    Ipcs {
        /// Message queues
        #[arg(short = 'q')]
        queues: bool,
        /// Semaphore sets
        #[arg(short = 's')]
        semaphores: bool,
        /// Shared memory segments
        #[arg(short = 'm')]
        segments: bool,
    },
    /// Show what a host's dipcd counted since it started: requests,
    /// remote calls served and made, errors, the calls' times, sessions,
    /// data moved, shared memory faults (this host's unless HOST is given)
    Stats {
        /// The host's address, with its front_end port if not this host's
        host: Option<String>,
    },
    /// An operator's summary of the cluster: hosts (state, load, uptime,
    /// calls served and made, sessions, processes), keys in use, registered
    /// processes and this host's errors
    Status,
    /// Measure a round trip to another host's daemon through this host's
    /// dipcd (connect, authenticate, ping)
    Ping {
        /// The host's address, with its front_end port if not this host's
        host: String,
        /// How many round trips to time
        #[arg(short = 'n', long, default_value_t = 1)]
        count: u32,
    },
}

/// The command dipcref parses, for the man page generator.
pub fn command() -> clap::Command {
    Args::command()
}
