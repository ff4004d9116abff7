//! The command line: a subcommand per attack, with the argument types
//! they share. Kept apart so that the attacks read without it.

use crate::calls;
use crate::garbage::GarbageTo;
use clap::{Parser, Subcommand};
use dipc_common::secure::PREFIX_LEN;
use dipc_common::wire::IpcKind;
use std::net::SocketAddr;

#[derive(Parser)]
#[command(
    name = "dipc-attack",
    about = "Attacks on this host's dipcd, for security tests"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Ask dipcd to open an employer's connection to a listener of ours
    ConnectRelay {
        /// Where to listen [default: this host's address, any port]
        #[arg(long, value_name = "IP:PORT")]
        listen: Option<SocketAddr>,
        /// How long the listener waits for dipcd's employer
        #[arg(long, value_name = "N", default_value_t = 2000)]
        wait_ms: u64,
    },
    /// A plain Connect to TARGET, the session checked with a ping
    Connect { target: SocketAddr },
    /// Plain and sealed Session/SenderPid frames on a session
    SessionInject {
        target: SocketAddr,
        /// A root-only queue on TARGET (the owner's id)
        #[arg(long)]
        id: i32,
        /// The structure's key: its origin (key and the owner's
        /// incarnation, looked up as an application does) goes with each
        /// call, so that the worker gets to the check under attack; without
        /// it the calls carry none and are refused as stale (EIDRM)
        #[arg(long, value_parser = parse_key)]
        key: Option<i32>,
    },
    /// A sealed MsgSnd sent twice
    Replay {
        target: SocketAddr,
        /// A queue on TARGET (the owner's id)
        #[arg(long)]
        id: i32,
        /// The structure's key: its origin (key and the owner's
        /// incarnation, looked up as an application does) goes with each
        /// call, so that the worker gets to the check under attack; without
        /// it the calls carry none and are refused as stale (EIDRM)
        #[arg(long, value_parser = parse_key)]
        key: Option<i32>,
    },
    /// Two sealed MsgSnd records, the second first
    Reorder {
        target: SocketAddr,
        #[arg(long)]
        id: i32,
        /// The structure's key: its origin (key and the owner's
        /// incarnation, looked up as an application does) goes with each
        /// call, so that the worker gets to the check under attack; without
        /// it the calls carry none and are refused as stale (EIDRM)
        #[arg(long, value_parser = parse_key)]
        key: Option<i32>,
    },
    /// A sealed MsgSnd with one bit flipped
    Flip {
        target: SocketAddr,
        #[arg(long)]
        id: i32,
        /// The structure's key: its origin (key and the owner's
        /// incarnation, looked up as an application does) goes with each
        /// call, so that the worker gets to the check under attack; without
        /// it the calls carry none and are refused as stale (EIDRM)
        #[arg(long, value_parser = parse_key)]
        key: Option<i32>,
        /// Which bit of the record (prefix included) to flip; a negative
        /// N counts from the end (-1: the tag's last bit)
        #[arg(long, default_value_t = 8 * (PREFIX_LEN as i64 + 9) + 3, allow_negative_numbers = true)]
        bit: i64,
    },
    /// MigrateSpawn on a session to TARGET, as a registered process, with
    /// a move token the referee never gave (for its own pid_d and for
    /// another's): the program (`touch MARKER`) must not start
    MigrateSpawn {
        target: SocketAddr,
        /// The file the program would create
        #[arg(long)]
        marker: String,
    },
    /// KillD of PID_D on a session to its host
    KillD {
        pid_d: i64,
        #[arg(long, default_value_t = libc::SIGKILL)]
        sig: i32,
    },
    /// ShmAttach of a segment on TARGET
    ShmAttach {
        target: SocketAddr,
        /// The segment (the owner's id)
        #[arg(long)]
        id: i32,
        /// The structure's key: its origin (key and the owner's
        /// incarnation, looked up as an application does) goes with each
        /// call, so that the worker gets to the check under attack; without
        /// it the calls carry none and are refused as stale (EIDRM)
        #[arg(long, value_parser = parse_key)]
        key: Option<i32>,
    },
    /// SendD to PID_D after stating another SenderPid
    SendD {
        pid_d: i64,
        /// The sender pid_d to claim
        #[arg(long)]
        forge: i64,
        /// Register first (regist), so that the session has a pid_d
        #[arg(long)]
        register: bool,
    },
    /// Commit a key's creation with an id that is not the structure made
    CommitBogus {
        #[arg(value_enum)]
        kind: KindArg,
        #[arg(value_parser = parse_key)]
        key: i32,
        /// The id to commit
        #[arg(long, allow_negative_numbers = true)]
        id: i32,
    },
    /// Ask to create a key, then close the connection without committing
    ClaimHold {
        #[arg(value_enum)]
        kind: KindArg,
        #[arg(value_parser = parse_key)]
        key: i32,
        /// How long to live on after closing the connection
        #[arg(long, default_value_t = 8000)]
        hold_ms: u64,
        /// Keep the connection, and commit after N ms
        #[arg(long)]
        keep: bool,
    },
    /// A get of IPC_PRIVATE sent to a worker on TARGET, and to dipcd
    RemotePrivate {
        target: SocketAddr,
        #[arg(long, value_enum, default_value_t = KindArg::Msg)]
        kind: KindArg,
    },
    /// Ask dipcd for a key's placeholder with a forged proof from its owner
    ForgedPlaceholder {
        #[arg(value_enum)]
        kind: KindArg,
        #[arg(value_parser = parse_key)]
        key: i32,
    },
    /// Report served calls to dipcd as if a worker
    ForgedStats,
    /// Call a distributed process in another process's name
    ForgedCall {
        /// The callee's pid_d (a process of this host)
        target: i64,
        /// The pid_d named as the caller
        #[arg(long = "as")]
        victim: i64,
        #[arg(long, value_enum)]
        mode: calls::Mode,
        /// The procedure asked for
        #[arg(long, default_value = "Never")]
        proc_name: String,
    },
    /// Restore a registration with PID_D at the referee, then register anew
    RestorePidD {
        #[arg(allow_negative_numbers = true)]
        pid_d: i64,
        /// The port of the host this joins as (this host's address)
        #[arg(long, default_value_t = 7999)]
        port: u16,
    },
    /// KillD of any process PID on TARGET
    KillPid {
        target: SocketAddr,
        pid: i32,
        #[arg(long, default_value_t = libc::SIGKILL)]
        sig: i32,
    },
    /// Take a group after connecting to dipcd, then open a session
    PeerGroups {
        target: SocketAddr,
        /// A queue on TARGET (the owner's id), mode 0660, group G
        #[arg(long)]
        id: i32,
        #[arg(long)]
        gid: u32,
        /// The queue's key (see session-inject)
        #[arg(long, value_parser = parse_key)]
        key: Option<i32>,
    },
    /// Handshakes with the referee as what this host is not
    RefereeRole {
        /// The host address to claim [default: 10.66.0.2:7100]
        #[arg(long = "as", value_name = "ADDR")]
        claim: Option<SocketAddr>,
        /// A distributed key to drop before Join: KIND:KEY (msg:0x1234)
        #[arg(long, value_name = "KIND:KEY")]
        drop: Option<String>,
    },
    /// A handshake with a secret that is not the cluster's
    WrongSecret {
        target: SocketAddr,
        #[arg(long, value_enum)]
        role: RoleArg,
    },
    /// The old plain protocol: frames without a handshake
    Plain {
        target: SocketAddr,
        #[arg(long, value_enum, default_value_t = FrameArg::Session)]
        frame: FrameArg,
    },
    /// Hold many connections to dipcd (see the module docs).
    Clients {
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 0)]
        hold_ms: u64,
    },
    /// Pipeline requests without reading replies.
    Pipeline {
        #[arg(long)]
        requests: usize,
        #[arg(long, default_value_t = 0)]
        hold_ms: u64,
        /// To the referee, as a host of its own on this port (root)
        #[arg(long)]
        referee_port: Option<u16>,
    },
    /// Open many sessions to one host.
    Sessions {
        target: SocketAddr,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 0)]
        hold_ms: u64,
        /// Ask for all of them at once, then read the answers.
        #[arg(long)]
        parallel: bool,
    },
    /// Ask dipcd for a segment's manager.
    ShmOpen {
        #[arg(long)]
        private: bool,
        #[arg(long, value_parser = parse_key)]
        key: Option<i32>,
        #[arg(long, default_value = "600")]
        mode: String,
        #[arg(long)]
        id: Option<i32>,
    },
    /// Garbage frames to a live daemon
    Garbage {
        #[arg(value_enum)]
        to: GarbageTo,
        /// The host whose worker or front_end gets them
        #[arg(long)]
        target: Option<SocketAddr>,
        /// The segment whose shm manager gets them
        #[arg(long)]
        id: Option<i32>,
        #[arg(long, default_value_t = 1000)]
        frames: usize,
        /// The generator's seed (printed; by default from the clock)
        #[arg(long)]
        seed: Option<u64>,
        /// The port the referee attack's own host states
        #[arg(long, default_value_t = 7190)]
        port: u16,
    },
    /// Connections to a front_end that never finish their handshake.
    Stall {
        target: SocketAddr,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 0)]
        hold_ms: u64,
    },
    /// Connections that send half a frame and stall.
    HalfFrames {
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 0)]
        hold_ms: u64,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum RoleArg {
    Employer,
    Host,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum KindArg {
    Msg,
    Sem,
    Shm,
}

impl KindArg {
    pub(crate) fn kind(self) -> IpcKind {
        match self {
            KindArg::Msg => IpcKind::Msg,
            KindArg::Sem => IpcKind::Sem,
            KindArg::Shm => IpcKind::Shm,
        }
    }
}

/// A key: decimal, or hexadecimal with 0x.
fn parse_key(s: &str) -> Result<i32, String> {
    match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).map(|k| k as i32),
        None => s.parse::<i32>(),
    }
    .map_err(|e| format!("key {s:?}: {e}"))
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum FrameArg {
    Session,
    Ping,
}
