//! `dipc-attack`: attacks an unprivileged local user could try on this
//! host's dipcd, for the security tests. Each subcommand talks to
//! `dipcd.sock` with raw frames (no library help), reports what happened on
//! stdout, and exits 0 when dipc withstood the attack, 3 when the attack
//! worked, 1 when the attack could not be tried (and 2 on bad arguments).
//!
//! - `dipc-attack connect-relay [--listen IP:PORT] [--wait-ms N]`: listens
//!   on TCP (by default on this host's address, any port) and asks dipcd
//!   for a `Connect` to that listener, as if it were a host of the
//!   cluster. An employer that connected there would hand the cluster's
//!   handshake to whoever holds the listener. Prints `uid U`,
//!   `listener ADDR`, then `listener: no connection within N ms` or
//!   `listener: connection from PEER` (and the first frame it sent), then
//!   `reply: error NAME: MESSAGE` or `reply: done VALUE`.
//! - `dipc-attack connect TARGET`: a plain `Connect` to `TARGET`; on
//!   `SessionReady` receives the session's socket, pings the worker through it and
//!   prints `reply: done PID_D`, `fd: peer ADDR`, `session: pong`. An
//!   error reply goes to stderr as `dipc-attack: connect: <strerror>
//!   (errno NAME)` with exit code 1, as dipc's other tools report errors.
//!
//! The attacks below run on a session the attacker opened legitimately
//! (`Connect`, then `SessionReady` and the socket): they hold the
//! session's keys, as every application does, and try to get more out of
//! the worker than their own credentials allow. A reply is printed as
//! `error NAME: MESSAGE`, `done VALUE`, `data MTYPE TEXT` or its kind;
//! what the worker did to the connection as `closed (HOW)`,
//! `answered N bytes` or `still open after N ms`.
//!
//! - `session-inject TARGET --id ID [--key KEY]`: on one session, a plain (unsealed)
//!   `Session{uid 0, gid 0, groups [0]}` frame and a plain `MsgRcv` of
//!   queue `ID` (`plain: ...`); on a second, the same `Session` sealed
//!   (`sealed session: ...`), then a sealed `MsgRcv` of `ID`
//!   (`sealed msgrcv: ...`); on a third a sealed `SenderPid`
//!   (`sender pid: ...`). Withstood if the plain frames close the
//!   connection unanswered, the sealed `Session` and `SenderPid` are
//!   refused and the `MsgRcv` fails with `EACCES`.
//! - `replay TARGET --id ID [--key KEY]`: a sealed `MsgSnd` to queue `ID`
//!   (`first: ...`), then the very same record bytes again
//!   (`replay: ...`). Withstood if the replay closes the connection.
//! - `reorder TARGET --id ID [--key KEY]`: two sealed `MsgSnd` records, the second
//!   sent first (`out of order: ...`). Withstood if that closes the
//!   connection.
//! - `flip TARGET --id ID [--key KEY] [--bit N]`: a sealed `MsgSnd` with bit N of its
//!   record flipped (`flipped bit N of M: ...`; a negative N counts from
//!   the end). Withstood if that closes the connection. (A flip in the
//!   length prefix that makes the record longer only makes the worker
//!   wait for bytes that never come: not a closed connection.)
//! - `kill-d PID_D [--sig N]`: looks `PID_D` up at dipcd and sends `KillD`
//!   on a session to its host (`kill: ...`). Withstood if refused.
//! - `shm-attach TARGET --id ID [--key KEY]`: `ShmAttach` of segment `ID` read-write
//!   (`attach: ...`), then, on a second session, read-only with a
//!   `handover` naming the target itself (`attach with handover: ...`).
//!   Withstood if both are refused.
//! - `send-d PID_D --forge P [--register]`: registers first with
//!   `--register` (`registered P`), looks `PID_D` up, opens a session to
//!   its host (`session pid_d P`), states `SenderPid{P}` again
//!   (`sender pid: ...`) and sends one `SendD` to the mailbox
//!   (`send: ...`). Withstood if the second `SenderPid` is refused (what
//!   the message was typed with is for the receiver to check).
//!
//! Attacks on the tables only their owners may change (keys, pids, whom a
//! worker may reach):
//!
//! - `commit-bogus KIND KEY --id ID`: on one connection to dipcd, asks to
//!   create `KEY` (`grant: owner ADDR id -1`, or the reply) and commits
//!   it with `ID`, which is not the structure it made (`commit: ...`).
//!   Withstood if the commit is refused.
//! - `claim-hold KIND KEY [--hold-ms N] [--keep]`: asks to create `KEY`
//!   (`grant: ...`), then closes its connection to dipcd without
//!   committing and lives on for N ms (`holding`). What it shows is how
//!   soon other hosts may create the key; exits 0 once it has held. With
//!   `--keep` it keeps the connection instead, and after N ms makes the
//!   structure and commits it there (`late commit: ...`), then removes
//!   it; withstood if a commit later than `request_ms` is refused.
//! - `remote-private TARGET [--kind KIND]`: an `IpcGet` of `IPC_PRIVATE`
//!   on a session to `TARGET` (`remote get: ...`), and a `KeyGet` of it at
//!   dipcd (`dipcd get: ...`). Withstood if both are refused.
//! - `forged-call PID_D --as VICTIM --mode hello|worker|mailbox [--proc-name
//!   P]`: calls procedure P of the process PID_D of this host in VICTIM's
//!   name (see `tools/src/attack/calls.rs`). Withstood if the callee
//!   refuses the link (`hello: refused`); for `mailbox`, the test checks
//!   that the callee did not run the request.
//! - `forged-placeholder KIND KEY`: looks `KEY` up at dipcd (`owner ADDR
//!   id ID local L`; L is -1 while this host has no placeholder for it)
//!   and asks dipcd for its placeholder with a proof of its own making,
//!   not the owner's (`placeholder: ...`). Withstood if refused.
//! - `restore-pid-d PID_D [--port P]` (root: it reads the cluster
//!   secret): joins the referee as this host's address with port P (a
//!   host of its own), restores a registration with `PID_D`
//!   (`restore: ...`), then registers two new processes (`new: ...`).
//!   Withstood if the restore is refused and both new pid_d are positive
//!   and distinct.
//! - `kill-pid TARGET PID [--sig N]`: `KillD` of the process `PID` on
//!   `TARGET` (its start time read from /proc: the simulated hosts share
//!   one), registered or not (`kill: ...`). Withstood if refused.
//! - `peer-groups TARGET --id ID --gid G` (root): connects to dipcd as
//!   uid/gid 65534 with no supplementary groups, then takes group `G`
//!   before it asks for a session to `TARGET`, and asks `IPC_STAT` of
//!   queue `ID` there (`stat: ...`). Withstood if the session has only
//!   the groups the process had when it connected (`EACCES` for a 0660
//!   queue of group G).
//!
//! And attacks on connections between hosts, without dipcd's help:
//!
//! - `referee-role [--as ADDR]` (root: it reads the cluster secret):
//!   to the referee, a handshake as `Employer` (`employer: ...`); one as
//!   `Host` of this host followed by `DropKey` before `Join`
//!   (`drop before join: ...`, with `--drop KIND:KEY`); one as `Host`
//!   stating `ADDR` and a `Join` as `ADDR` (`join as ADDR: ...`); and
//!   one as this host joining as `ADDR` (`join as ADDR from this
//!   host: ...`). Withstood if all four are refused and closed.
//! - `wrong-secret TARGET --role employer|host`: a handshake with a
//!   random secret (`handshake: refused: REASON`). Withstood if refused.
//! - `plain TARGET [--frame session|ping]`: speaks the old plain protocol
//!   (no handshake): a plain `Session{uid 0}` and `MsgRcv`, or a `Ping`.
//!   Prints each frame received (`reply: KIND[: REASON]`) and how it
//!   ended. Withstood if the connection closes with at most a `Refused`.
//!
//! Exhaustion attacks on dipcd (exit 0 once done; the test judges by what
//! other users can still do and by dipcd's memory):
//!
//! - `clients --count N --hold-ms MS`: opens up to N connections to
//!   dipcd.sock, one `Ping` on each, and holds them MS ms. Prints
//!   `clients: OPENED opened, REFUSED refused` and, for the first refusal,
//!   `refused: ERRNO: MESSAGE`.
//! - `pipeline --requests N --hold-ms MS`: one connection that writes N
//!   `Ping`s and reads no reply; stops writing once dipcd has taken
//!   nothing for 1 s. Prints `pipeline: sent S of N` then holds MS ms.
//!   With `--referee-port P` (root: it reads the secret) the same on the
//!   referee's link, as a host of its own on port P, with `ListKeys`.
//! - `half-frames --count N --hold-ms MS`: N connections, each sending
//!   half of a frame that announces 60 KiB, held MS ms. Prints
//!   `half-frames: N sent`, and after MS ms `half-frames: C closed by
//!   the peer`.
//! - `sessions TARGET --count N --hold-ms MS`: opens up to N sessions to
//!   TARGET's workers through dipcd (`Connect`), holds them MS ms. Prints
//!   `sessions: OPENED opened, REFUSED refused` and the first refusal as
//!   `refused: ERRNO: MESSAGE`. With `--parallel`, all N `Connect`s are
//!   sent first and the answers read after: prints `sessions: OPENED
//!   opened` and a line `refused ERRNO: COUNT: FIRST MESSAGE` per errno.
//! - `shm-open [--private | --key K --mode M] [--id ID]`: makes a local
//!   segment (IPC_PRIVATE, or key K with mode M; prints `segment ID`) or
//!   takes segment ID, and asks dipcd to start its manager (`ShmOpen`).
//!   Prints `shm-open: done` or `shm-open: error ERRNO: MESSAGE`.
//! - `garbage dipcd|worker|front-end|referee|shm [--target ADDR] [--id ID]
//!   [--frames N] [--seed S]`: N frames of garbage (random bytes, valid
//!   headers over random payloads, headers that promise more than
//!   follows, well-formed requests with bytes changed; see
//!   `attack/garbage.rs`) to a live daemon: dipcd's socket; a worker on
//!   `--target` on sessions opened the legitimate way (sealed, so the
//!   garbage gets past the channel); `--target`'s front_end before any
//!   handshake; the referee as a host of its own (root: it reads the
//!   secret); segment ID's shm manager. Whenever the daemon closes the
//!   connection another is opened. Prints `seed S`, then `garbage: N
//!   frames on C connections, K closed by the peer, B reply bytes`.
//! - `forged-stats`: sends dipcd a `StatsReport` of a million served
//!   msgsnd calls, as a worker reports them. Prints `reply: ...`.
//!   Withstood if refused with `EPERM` (only this host's workers and shm
//!   managers may add to its counters).
//! - `stall TARGET --count N --hold-ms MS`: N TCP connections to TARGET
//!   that send one byte of a handshake and nothing more. Prints
//!   `stall: N sent`, then after MS ms `stall: C closed by the peer`.

#[path = "../attack/calls.rs"]
mod calls;
#[path = "../attack/garbage.rs"]
mod garbage;

use clap::{Parser, Subcommand};
use dipc_common::auth::{ClientHandshake, Secret};
use dipc_common::channel::{Channel, ChannelError, Codec};
use dipc_common::config::Config;
use dipc_common::secure::{Secure, PREFIX_LEN};
use dipc_common::sys;
use dipc_common::wire::{self, IpcKind, Message, Origin, Role};
use nix::errno::Errno;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "dipc-attack",
    about = "Attacks on this host's dipcd, for security tests"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
enum RoleArg {
    Employer,
    Host,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum KindArg {
    Msg,
    Sem,
    Shm,
}

impl KindArg {
    fn kind(self) -> IpcKind {
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
enum FrameArg {
    Session,
    Ping,
}

/// Exit codes (see the module docs).
const WITHSTOOD: u8 = 0;
const NOT_TRIED: u8 = 1;
const WORKED: u8 = 3;

/// Longest wait for dipcd's reply: long enough for an employer to give up
/// on a silent peer (`request_ms`) and report it.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load_default() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dipc-attack: {e}");
            return ExitCode::from(NOT_TRIED);
        }
    };
    let code = match cli.command {
        Command::ConnectRelay { listen, wait_ms } => connect_relay(
            &config,
            listen.unwrap_or(SocketAddr::new(config.host.address, 0)),
            Duration::from_millis(wait_ms),
        ),
        Command::Connect { target } => connect(&config, target),
        Command::SessionInject { target, id, key } => {
            session_inject(&config, target, (id, origin(&config, IpcKind::Msg, key)))
        }
        Command::Replay { target, id, key } => {
            replay(&config, target, (id, origin(&config, IpcKind::Msg, key)))
        }
        Command::Reorder { target, id, key } => {
            reorder(&config, target, (id, origin(&config, IpcKind::Msg, key)))
        }
        Command::Flip {
            target,
            id,
            key,
            bit,
        } => flip(
            &config,
            target,
            (id, origin(&config, IpcKind::Msg, key)),
            bit,
        ),
        Command::KillD { pid_d, sig } => kill_d(&config, pid_d, sig),
        Command::MigrateSpawn { target, marker } => migrate_spawn(&config, target, &marker),
        Command::ShmAttach { target, id, key } => {
            shm_attach(&config, target, (id, origin(&config, IpcKind::Shm, key)))
        }
        Command::SendD {
            pid_d,
            forge,
            register,
        } => send_d(&config, pid_d, forge, register),
        Command::CommitBogus { kind, key, id } => commit_bogus(&config, kind.kind(), key, id),
        Command::ClaimHold {
            kind,
            key,
            hold_ms,
            keep,
        } => claim_hold(
            &config,
            kind.kind(),
            key,
            Duration::from_millis(hold_ms),
            keep,
        ),
        Command::RemotePrivate { target, kind } => remote_private(&config, target, kind.kind()),
        Command::ForgedPlaceholder { kind, key } => forged_placeholder(&config, kind.kind(), key),
        Command::ForgedStats => forged_stats(&config),
        Command::ForgedCall {
            target,
            victim,
            mode,
            proc_name,
        } => match calls::forged_call(&config, target, victim, mode, &proc_name) {
            Ok(taken) => verdict(!taken),
            Err(e) => not_tried("forged-call", &e),
        },
        Command::RestorePidD { pid_d, port } => restore_pid_d(&config, pid_d, port),
        Command::KillPid { target, pid, sig } => kill_pid(&config, target, pid, sig),
        Command::PeerGroups {
            target,
            id,
            gid,
            key,
        } => {
            let origin = origin(&config, IpcKind::Msg, key);
            peer_groups(&config, target, (id, origin), gid)
        }
        Command::RefereeRole { claim, drop } => referee_role(&config, claim, drop.as_deref()),
        Command::WrongSecret { target, role } => wrong_secret(&config, target, role),
        Command::Plain { target, frame } => plain(target, frame),
        Command::Clients { count, hold_ms } => clients(&config, count, hold_ms),
        Command::Pipeline {
            requests,
            hold_ms,
            referee_port: None,
        } => pipeline(&config, requests, hold_ms),
        Command::Pipeline {
            requests,
            hold_ms,
            referee_port: Some(port),
        } => referee_pipeline(&config, requests, hold_ms, port),
        Command::HalfFrames { count, hold_ms } => half_frames(&config, count, hold_ms),
        Command::Sessions {
            target,
            count,
            hold_ms,
            parallel,
        } => {
            if parallel {
                sessions_at_once(&config, target, count)
            } else {
                sessions(&config, target, count, hold_ms)
            }
        }
        Command::Stall {
            target,
            count,
            hold_ms,
        } => stall(target, count, hold_ms),
        Command::Garbage {
            to,
            target,
            id,
            frames,
            seed,
            port,
        } => garbage(&config, (to, target, id, port), frames, seed),
        Command::ShmOpen {
            private,
            key,
            mode,
            id,
        } => shm_open(&config, private, key, &mode, id),
    };
    ExitCode::from(code)
}

fn errno_name(e: i32) -> String {
    let err = Errno::from_raw(e);
    if err == Errno::UnknownErrno {
        e.to_string()
    } else {
        format!("{err:?}")
    }
}

fn not_tried(what: &str, e: &dyn std::fmt::Display) -> u8 {
    eprintln!("dipc-attack: {what}: {e}");
    NOT_TRIED
}

/// A connection to this host's dipcd that reads exactly one frame at a
/// time, so that a descriptor passed after a reply is not read past.
/// What an application's get of `key` resolves (the referee's entry, as
/// dipcd relays it to any local user); none without a key, or if the
/// look-up fails (printed).
fn origin(config: &Config, kind: IpcKind, key: Option<i32>) -> Origin {
    let Some(key) = key else {
        return Origin::default();
    };
    let r = dipcd(config).map_err(|e| e.to_string()).and_then(|mut ch| {
        ch.call(
            1,
            &Message::KeyGet {
                kind,
                key,
                flags: 0,
            },
        )
        .map_err(|e| e.to_string())
    });
    match r {
        Ok(Message::KeyOwner { origin, .. }) => origin,
        Ok(other) => {
            println!("origin of {key:#x}: {}", show(&other));
            Origin::default()
        }
        Err(e) => {
            println!("origin of {key:#x}: {e}");
            Origin::default()
        }
    }
}

fn dipcd(config: &Config) -> io::Result<Channel<UnixStream>> {
    let s = UnixStream::connect(config.back_end_socket())?;
    s.set_read_timeout(Some(REPLY_TIMEOUT))?;
    Ok(Channel::new(s, config.max_frame))
}

fn uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn connect_relay(config: &Config, listen: SocketAddr, wait: Duration) -> u8 {
    println!("uid {}", uid());
    let listener = match TcpListener::bind(listen) {
        Ok(l) => l,
        Err(e) => return not_tried(&format!("listen on {listen}"), &e),
    };
    let target = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => return not_tried("listener address", &e),
    };
    println!("listener {target}");
    let mut ch = match dipcd(config) {
        Ok(ch) => ch,
        Err(e) => return not_tried("dipcd", &e),
    };
    if let Err(e) = ch.send(1, &Message::Connect { target }) {
        return not_tried("send Connect", &e);
    }
    // The employer, if dipcd forks one, connects before dipcd can reply
    // (its reply comes only once the handshake fails), so wait for it
    // first.
    let relayed = match accept_within(&listener, wait) {
        Ok(Some((peer, first))) => {
            println!("listener: connection from {peer}, first frame: {first}");
            true
        }
        Ok(None) => {
            println!("listener: no connection within {} ms", wait.as_millis());
            false
        }
        Err(e) => return not_tried("accept", &e),
    };
    let done = match ch.recv() {
        Ok((_, Message::Error { errno, message })) => {
            println!("reply: error {}: {message}", errno_name(errno));
            false
        }
        Ok((_, Message::SessionReady { pid_d, .. })) => {
            println!("reply: done {pid_d}");
            true
        }
        Ok((_, other)) => {
            println!("reply: {}", other.kind().name());
            false
        }
        Err(e) => {
            println!("reply: none ({e})");
            false
        }
    };
    if relayed || done {
        WORKED
    } else {
        WITHSTOOD
    }
}

/// Accepts one connection within `wait`; returns its peer and a
/// description of the first frame it sends (within a second).
fn accept_within(
    listener: &TcpListener,
    wait: Duration,
) -> io::Result<Option<(SocketAddr, String)>> {
    listener.set_nonblocking(true)?;
    let start = Instant::now();
    loop {
        match listener.accept() {
            Ok((s, peer)) => return Ok(Some((peer, first_frame(s)))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if start.elapsed() >= wait {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn first_frame(mut s: TcpStream) -> String {
    let read = s
        .set_nonblocking(false)
        .and_then(|()| s.set_read_timeout(Some(Duration::from_secs(1))));
    if let Err(e) = read {
        return format!("unreadable ({e})");
    }
    let mut buf = vec![0u8; 4096];
    let n = match s.read(&mut buf) {
        Ok(0) => return "none (closed)".to_owned(),
        Ok(n) => n,
        Err(e) => return format!("none ({e})"),
    };
    match wire::decode_frame(&buf[..n], u32::MAX) {
        Ok(Some((_, _, msg))) => msg.kind().name().to_owned(),
        _ => format!("{n} bytes"),
    }
}

fn connect(config: &Config, target: SocketAddr) -> u8 {
    let fail = |what: &str, errno: i32, e: &dyn std::fmt::Display| {
        eprintln!("dipc-attack: {what}: {e} (errno {})", errno_name(errno));
        NOT_TRIED
    };
    let mut ch = match dipcd(config) {
        Ok(ch) => ch,
        Err(e) => return fail("dipcd", e.raw_os_error().unwrap_or(libc::EIO), &e),
    };
    let (pid_d, keys) = match ch.call(1, &Message::Connect { target }) {
        Ok(Message::SessionReady { pid_d, keys }) => (pid_d, keys),
        Ok(Message::Error { errno, message }) => return fail("connect", errno, &message),
        Ok(other) => return fail("connect", libc::EPROTO, &other.kind().name()),
        Err(e) => return fail("connect", e.errno(), &e),
    };
    println!("reply: done {pid_d}");
    let fd = match sys::recv_fd(ch.get_ref()) {
        Ok(fd) => fd,
        Err(e) => {
            return fail(
                "receive the session",
                e.raw_os_error().unwrap_or(libc::EIO),
                &e,
            )
        }
    };
    let s = TcpStream::from(fd);
    match s.peer_addr() {
        Ok(peer) => println!("fd: peer {peer}"),
        Err(e) => return fail("session peer", e.raw_os_error().unwrap_or(libc::EIO), &e),
    }
    if let Err(e) = s.set_read_timeout(Some(REPLY_TIMEOUT)) {
        return fail("session", e.raw_os_error().unwrap_or(libc::EIO), &e);
    }
    let mut session = Channel::new(s, config.max_frame)
        .with_codec(Codec::Secure(Box::new(Secure::from_keys(&keys))));
    match session.call(1, &Message::Ping) {
        Ok(Message::Pong) => println!("session: pong"),
        Ok(other) => return fail("ping", libc::EPROTO, &other.kind().name()),
        Err(e) => return fail("ping", e.errno(), &e),
    }
    WITHSTOOD
}

fn verdict(withstood: bool) -> u8 {
    if withstood {
        WITHSTOOD
    } else {
        WORKED
    }
}

/// A reply as the attacks print it.
fn show(m: &Message) -> String {
    match m {
        Message::Error { errno, message } => format!("error {}: {message}", errno_name(*errno)),
        Message::Done { value } => format!("done {value}"),
        Message::MsgData { mtype, text } => {
            format!("data {mtype} {}", String::from_utf8_lossy(text))
        }
        Message::Refused { reason } => format!("refused: {reason}"),
        other => other.kind().name().to_owned(),
    }
}

fn shown(r: &Result<Message, String>) -> String {
    match r {
        Ok(m) => show(m),
        Err(e) => format!("no reply ({e})"),
    }
}

fn is_error(r: &Result<Message, String>, errno: Option<i32>) -> bool {
    match r {
        Ok(Message::Error { errno: e, .. }) => errno.is_none_or(|want| *e == want),
        _ => false,
    }
}

/// How long a peer is given to close the connection after an attack.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// What the peer did after an attack.
enum After {
    /// It closed the connection (how: end of file, reset, ...).
    Closed(String),
    /// It sent this many bytes.
    Answered(usize),
    /// Neither, within [`CLOSE_WAIT`].
    Open,
}

impl After {
    fn closed(&self) -> bool {
        matches!(self, After::Closed(_))
    }
}

impl std::fmt::Display for After {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            After::Closed(how) => write!(f, "closed ({how})"),
            After::Answered(n) => write!(f, "answered {n} bytes"),
            After::Open => write!(f, "still open after {} ms", CLOSE_WAIT.as_millis()),
        }
    }
}

/// Waits for the peer to close `s` (or to send something).
fn after(s: &mut TcpStream) -> After {
    if let Err(e) = s.set_read_timeout(Some(CLOSE_WAIT)) {
        return After::Closed(format!("{e}"));
    }
    let mut buf = [0u8; 4096];
    match s.read(&mut buf) {
        Ok(0) => After::Closed("end of file".to_owned()),
        Ok(n) => After::Answered(n),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => After::Closed("reset".to_owned()),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            After::Open
        }
        Err(e) => After::Closed(e.to_string()),
    }
}

/// Writes `bytes` on `s` and waits for what the peer does.
fn send_raw(s: &mut TcpStream, bytes: &[u8]) -> After {
    match s.write_all(bytes) {
        Ok(()) => after(s),
        Err(e) => After::Closed(format!("write: {e}")),
    }
}

/// A session opened the legitimate way (`Connect`): its socket, and the
/// channel's state, which every application holds.
struct Session {
    s: TcpStream,
    sec: Secure,
    max: u32,
    pid_d: i64,
}

fn open_session(config: &Config, target: SocketAddr) -> Result<Session, String> {
    let ch = dipcd(config).map_err(|e| format!("dipcd: {e}"))?;
    session_over(config, ch, target)
}

/// A session opened with `Connect` on `ch`, a connection to dipcd.
fn session_over(
    config: &Config,
    mut ch: Channel<UnixStream>,
    target: SocketAddr,
) -> Result<Session, String> {
    let (pid_d, keys) = match ch.call(1, &Message::Connect { target }) {
        Ok(Message::SessionReady { pid_d, keys }) => (pid_d, keys),
        Ok(other) => return Err(format!("connect to {target}: {}", show(&other))),
        Err(e) => return Err(format!("connect to {target}: {e}")),
    };
    let fd = sys::recv_fd(ch.get_ref()).map_err(|e| format!("receive the session: {e}"))?;
    let s = TcpStream::from(fd);
    s.set_read_timeout(Some(REPLY_TIMEOUT))
        .map_err(|e| format!("session: {e}"))?;
    Ok(Session {
        s,
        sec: Secure::from_keys(&keys),
        max: config.max_frame,
        pid_d,
    })
}

impl Session {
    /// The record of one frame, sealed with the session's next counter.
    fn seal(&mut self, id: u64, msg: &Message) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        self.sec
            .seal(id, msg, &mut out)
            .map_err(|e| format!("seal: {e}"))?;
        Ok(out)
    }

    fn recv(&mut self) -> Result<(u64, Message), String> {
        self.s
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let mut prefix = [0u8; PREFIX_LEN];
        self.s
            .read_exact(&mut prefix)
            .map_err(|e| format!("read: {e}"))?;
        let len = Secure::record_len(&prefix, self.max).map_err(|e| e.to_string())?;
        let mut rec = vec![0u8; len];
        rec[..PREFIX_LEN].copy_from_slice(&prefix);
        self.s
            .read_exact(&mut rec[PREFIX_LEN..])
            .map_err(|e| format!("read: {e}"))?;
        self.sec.open(&mut rec, self.max).map_err(|e| e.to_string())
    }

    /// The reply to request `id`, skipping others.
    fn reply_to(&mut self, id: u64) -> Result<Message, String> {
        loop {
            let (rid, m) = self.recv()?;
            if rid == id {
                return Ok(m);
            }
        }
    }

    /// Sends one sealed request and waits for its reply.
    fn call(&mut self, id: u64, msg: &Message) -> Result<Message, String> {
        let rec = self.seal(id, msg)?;
        self.s.write_all(&rec).map_err(|e| format!("write: {e}"))?;
        self.reply_to(id)
    }
}

/// `Session` claiming root.
fn root_session() -> Message {
    Message::Session {
        pid: std::process::id() as i32,
        uid: 0,
        gid: 0,
        groups: vec![0],
    }
}

fn msg_snd((id, origin): (i32, Origin), text: &str) -> Message {
    Message::MsgSnd {
        id,
        origin,
        mtype: 1,
        text: text.as_bytes().to_vec(),
        flags: libc::IPC_NOWAIT,
    }
}

fn session_inject(config: &Config, target: SocketAddr, (id, origin): (i32, Origin)) -> u8 {
    println!("uid {}", uid());
    let msg_rcv = Message::MsgRcv {
        id,
        origin,
        size: 8192,
        mtype: 0,
        flags: libc::IPC_NOWAIT,
    };
    // Plain frames where sealed records belong.
    let mut a = match open_session(config, target) {
        Ok(s) => s,
        Err(e) => return not_tried("session", &e),
    };
    let mut plain = Vec::new();
    wire::encode_frame(1, &root_session(), &mut plain);
    wire::encode_frame(2, &msg_rcv, &mut plain);
    let plain_after = send_raw(&mut a.s, &plain);
    println!("plain: {plain_after}");
    // The same, sealed with the session's own keys.
    let mut b = match open_session(config, target) {
        Ok(s) => s,
        Err(e) => return not_tried("session", &e),
    };
    let session = b.call(1, &root_session());
    println!("sealed session: {}", shown(&session));
    let rcv = b.call(2, &msg_rcv);
    println!("sealed msgrcv: {}", shown(&rcv));
    // Another pid_d for the session's sends.
    let mut c = match open_session(config, target) {
        Ok(s) => s,
        Err(e) => return not_tried("session", &e),
    };
    let sender = c.call(1, &Message::SenderPid { pid_d: 1 });
    println!("sender pid: {}", shown(&sender));
    verdict(
        plain_after.closed()
            && is_error(&session, None)
            && is_error(&rcv, Some(libc::EACCES))
            && is_error(&sender, None),
    )
}

fn replay(config: &Config, target: SocketAddr, id: (i32, Origin)) -> u8 {
    println!("uid {}", uid());
    let mut s = match open_session(config, target) {
        Ok(s) => s,
        Err(e) => return not_tried("session", &e),
    };
    let rec = match s.seal(1, &msg_snd(id, "replayed")) {
        Ok(r) => r,
        Err(e) => return not_tried("seal", &e),
    };
    if let Err(e) = s.s.write_all(&rec) {
        return not_tried("send", &e);
    }
    let first = s.reply_to(1);
    println!("first: {}", shown(&first));
    if !matches!(first, Ok(Message::Done { .. })) {
        return not_tried("first send", &shown(&first));
    }
    let again = send_raw(&mut s.s, &rec);
    println!("replay: {again}");
    verdict(again.closed())
}

fn reorder(config: &Config, target: SocketAddr, id: (i32, Origin)) -> u8 {
    println!("uid {}", uid());
    let mut s = match open_session(config, target) {
        Ok(s) => s,
        Err(e) => return not_tried("session", &e),
    };
    let sealed = s
        .seal(1, &msg_snd(id, "first"))
        .and_then(|r1| Ok((r1, s.seal(2, &msg_snd(id, "second"))?)));
    let (_first, second) = match sealed {
        Ok(r) => r,
        Err(e) => return not_tried("seal", &e),
    };
    let a = send_raw(&mut s.s, &second);
    println!("out of order: {a}");
    verdict(a.closed())
}

fn flip(config: &Config, target: SocketAddr, id: (i32, Origin), bit: i64) -> u8 {
    println!("uid {}", uid());
    let mut s = match open_session(config, target) {
        Ok(s) => s,
        Err(e) => return not_tried("session", &e),
    };
    let mut rec = match s.seal(1, &msg_snd(id, "flipped")) {
        Ok(r) => r,
        Err(e) => return not_tried("seal", &e),
    };
    let bits = rec.len() as i64 * 8;
    let from_start = if bit < 0 { bits + bit } else { bit };
    if !(0..bits).contains(&from_start) {
        return not_tried(
            "flip",
            &format!("bit {bit} is outside the record's {bits} bits"),
        );
    }
    let bit = from_start as usize;
    rec[bit / 8] ^= 1 << (bit % 8);
    let a = send_raw(&mut s.s, &rec);
    println!("flipped bit {bit} of {}: {a}", rec.len() * 8);
    verdict(a.closed())
}

/// Where `pid_d` runs, as dipcd (the referee) says.
fn lookup(config: &Config, pid_d: i64) -> Result<wire::PidRecord, String> {
    let mut ch = dipcd(config).map_err(|e| format!("dipcd: {e}"))?;
    match ch.call(1, &Message::PidLookup { pid_d }) {
        Ok(Message::PidInfo { rec }) => Ok(rec),
        Ok(other) => Err(format!("lookup {pid_d}: {}", show(&other))),
        Err(e) => Err(format!("lookup {pid_d}: {e}")),
    }
}

fn migrate_spawn(config: &Config, target: SocketAddr, marker: &str) -> u8 {
    println!("uid {}", uid());
    let pid_d = match dipc::pid::regist() {
        Ok(p) => p,
        Err(e) => return not_tried("regist", &e),
    };
    let mut s = match open_session(config, target) {
        Ok(s) => s,
        Err(e) => return not_tried("session", &e),
    };
    let program = wire::Program {
        exe: b"/usr/bin/touch".to_vec(),
        argv: vec![b"touch".to_vec(), marker.as_bytes().to_vec()],
        env: Vec::new(),
        cwd: b"/".to_vec(),
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    let mut withstood = true;
    for (id, what, claimed) in [
        (1, "own pid_d, forged token", pid_d),
        (2, "another pid_d", pid_d + 1),
    ] {
        let r = s.call(
            id,
            &Message::MigrateSpawn {
                program: Box::new(program.clone()),
                pid_d: claimed,
                token: sys::random_u64(),
            },
        );
        println!("{what}: {}", shown(&r));
        withstood &= is_error(&r, Some(libc::EPERM));
    }
    std::thread::sleep(Duration::from_millis(500));
    let started = std::path::Path::new(marker).exists();
    println!("program started: {started}");
    verdict(withstood && !started)
}

fn kill_d(config: &Config, pid_d: i64, sig: i32) -> u8 {
    println!("uid {}", uid());
    let rec = match lookup(config, pid_d) {
        Ok(r) => r,
        Err(e) => return not_tried("lookup", &e),
    };
    println!("target pid {} on {}", rec.pid, rec.host);
    let mut s = match open_session(config, rec.host) {
        Ok(s) => s,
        Err(e) => return not_tried("session", &e),
    };
    let r = s.call(
        1,
        &Message::KillD {
            pid: rec.pid,
            starttime: rec.starttime,
            sig,
        },
    );
    println!("kill: {}", shown(&r));
    verdict(is_error(&r, None))
}

fn shm_attach(config: &Config, target: SocketAddr, (id, origin): (i32, Origin)) -> u8 {
    println!("uid {}", uid());
    let mut s = match open_session(config, target) {
        Ok(s) => s,
        Err(e) => return not_tried("session", &e),
    };
    let rw = s.call(
        1,
        &Message::ShmAttach {
            id,
            origin,
            readonly: false,
            handover: None,
        },
    );
    println!("attach: {}", shown(&rw));
    let mut s = match open_session(config, target) {
        Ok(s) => s,
        Err(e) => return not_tried("session", &e),
    };
    // A handover the worker alone may state: here naming the owner host
    // itself, with the session's own state.
    let keys = s.sec.keys();
    let ro = s.call(
        1,
        &Message::ShmAttach {
            id,
            origin,
            readonly: true,
            handover: Some((target, Box::new(keys))),
        },
    );
    println!("attach with handover: {}", shown(&ro));
    verdict(is_error(&rw, None) && is_error(&ro, None))
}

fn send_d(config: &Config, pid_d: i64, forge: i64, register: bool) -> u8 {
    println!("uid {}", uid());
    if register {
        match dipc::pid::regist() {
            Ok(p) => println!("registered {p}"),
            Err(e) => return not_tried("regist", &e),
        }
    }
    let rec = match lookup(config, pid_d) {
        Ok(r) => r,
        Err(e) => return not_tried("lookup", &e),
    };
    let mut s = match open_session(config, rec.host) {
        Ok(s) => s,
        Err(e) => return not_tried("session", &e),
    };
    println!("session pid_d {}", s.pid_d);
    let sender = s.call(1, &Message::SenderPid { pid_d: forge });
    println!("sender pid: {}", shown(&sender));
    let send = s.call(
        2,
        &Message::SendD {
            mailbox: rec.mailbox,
            data: format!("claims {forge}").into_bytes(),
            flags: libc::IPC_NOWAIT,
        },
    );
    println!("send: {}", shown(&send));
    verdict(is_error(&sender, None))
}

/// A TCP connection to `to` (from this host's address, as the daemons
/// connect) on which a handshake with `secret` ran as `role` stating `me`.
fn handshake(
    config: &Config,
    secret: &Secret,
    to: SocketAddr,
    role: Role,
    me: SocketAddr,
) -> Result<Result<Channel<TcpStream>, (dipc_common::auth::AuthError, TcpStream)>, String> {
    let s = TcpStream::connect_timeout(&to, REPLY_TIMEOUT).map_err(|e| format!("{to}: {e}"))?;
    s.set_read_timeout(Some(REPLY_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let raw = s.try_clone().map_err(|e| e.to_string())?;
    let mut ch = Channel::new(s, config.max_frame);
    let (hs, hello) = ClientHandshake::start(secret, role, me).map_err(|e| e.to_string())?;
    ch.send(0, &hello).map_err(|e| format!("send: {e}"))?;
    let reply = match ch.recv() {
        Ok((_, m)) => m,
        Err(e) => return Ok(Err((dipc_common::auth::AuthError::Channel(e), raw))),
    };
    match hs.on_reply(&reply) {
        Ok(secure) => {
            ch.secure(secure);
            Ok(Ok(ch))
        }
        Err(e) => Ok(Err((e, raw))),
    }
}

/// After a handshake that should have been refused: whether it was, and
/// the connection then closed.
fn refused_handshake(
    what: &str,
    r: Result<Result<Channel<TcpStream>, (dipc_common::auth::AuthError, TcpStream)>, String>,
) -> Option<bool> {
    match r {
        Err(e) => {
            eprintln!("dipc-attack: {what}: {e}");
            None
        }
        Ok(Ok(_)) => {
            println!("{what}: accepted");
            Some(false)
        }
        Ok(Err((e, mut raw))) => {
            let a = after(&mut raw);
            println!("{what}: {e}; {a}");
            Some(matches!(e, dipc_common::auth::AuthError::Refused(_)) && a.closed())
        }
    }
}

/// Sends `msg` on an authenticated link that should refuse it: whether it
/// answered `Refused` and closed.
fn refused_on_link(what: &str, ch: Channel<TcpStream>, msg: &Message) -> bool {
    let mut ch = ch;
    if let Err(e) = ch.send(1, msg) {
        println!("{what}: closed before the frame ({e})");
        return true;
    }
    let reply = ch.recv();
    let mut raw = ch.into_inner();
    let a = after(&mut raw);
    match reply {
        Ok((_, m)) => {
            println!("{what}: {}; {a}", show(&m));
            matches!(m, Message::Refused { .. }) && a.closed()
        }
        Err(e) => {
            println!("{what}: no reply ({e}); {a}");
            a.closed()
        }
    }
}

fn parse_drop(s: &str) -> Result<(IpcKind, i32), String> {
    let (kind, key) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not KIND:KEY"))?;
    let kind = match kind {
        "msg" => IpcKind::Msg,
        "sem" => IpcKind::Sem,
        "shm" => IpcKind::Shm,
        other => return Err(format!("unknown kind {other:?}")),
    };
    let key = match key.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).map(|k| k as i32),
        None => key.parse::<i32>(),
    }
    .map_err(|e| format!("key {key:?}: {e}"))?;
    Ok((kind, key))
}

fn referee_role(config: &Config, claim: Option<SocketAddr>, drop: Option<&str>) -> u8 {
    println!("uid {}", uid());
    let secret = match Secret::load(&config.secret_file) {
        Ok(s) => s,
        Err(e) => return not_tried("secret", &e),
    };
    let referee = config.referee_addr();
    let me = config.front_end_addr();
    let claim = claim.unwrap_or(SocketAddr::from(([10, 66, 0, 2], 7100)));
    let mut all = true;
    // An employer's handshake where only hosts are served.
    let r = handshake(config, &secret, referee, Role::Employer, me);
    match refused_handshake("employer", r) {
        Some(ok) => all &= ok,
        None => return NOT_TRIED,
    }
    // A host's link that asks for something before it joined.
    if let Some(d) = drop {
        let (kind, key) = match parse_drop(d) {
            Ok(k) => k,
            Err(e) => return not_tried("--drop", &e),
        };
        match handshake(config, &secret, referee, Role::Host, me) {
            Ok(Ok(ch)) => {
                all &= refused_on_link("drop before join", ch, &Message::DropKey { kind, key })
            }
            other => {
                println!("drop before join: the handshake failed");
                let _ = refused_handshake("drop before join", other);
                return NOT_TRIED;
            }
        }
    }
    // Another host's address, stated in the handshake and in Join.
    let what = format!("join as {claim}");
    match handshake(config, &secret, referee, Role::Host, claim) {
        Ok(Ok(ch)) => all &= refused_on_link(&what, ch, &Message::Join { front_end: claim }),
        other => {
            // Refused at the handshake already: withstood too.
            match refused_handshake(&what, other) {
                Some(ok) => all &= ok,
                None => return NOT_TRIED,
            }
        }
    }
    // This host's handshake, another host's Join.
    let what = format!("join as {claim} from this host");
    match handshake(config, &secret, referee, Role::Host, me) {
        Ok(Ok(ch)) => all &= refused_on_link(&what, ch, &Message::Join { front_end: claim }),
        other => match refused_handshake(&what, other) {
            Some(ok) => all &= ok,
            None => return NOT_TRIED,
        },
    }
    verdict(all)
}

fn wrong_secret(config: &Config, target: SocketAddr, role: RoleArg) -> u8 {
    println!("uid {}", uid());
    let mut raw = [0u8; 32];
    if let Err(e) = dipc_common::auth::fill_random(&mut raw) {
        return not_tried("random", &e);
    }
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let secret = match Secret::from_bytes(hex.as_bytes()) {
        Ok(s) => s,
        Err(e) => return not_tried("secret", &e),
    };
    let role = match role {
        RoleArg::Employer => Role::Employer,
        RoleArg::Host => Role::Host,
    };
    let r = handshake(config, &secret, target, role, config.front_end_addr());
    match refused_handshake("handshake", r) {
        Some(ok) => verdict(ok),
        None => NOT_TRIED,
    }
}

fn plain(target: SocketAddr, frame: FrameArg) -> u8 {
    println!("uid {}", uid());
    let mut s = match TcpStream::connect_timeout(&target, REPLY_TIMEOUT) {
        Ok(s) => s,
        Err(e) => return not_tried(&format!("connect to {target}"), &e),
    };
    let mut out = Vec::new();
    match frame {
        FrameArg::Session => {
            wire::encode_frame(1, &root_session(), &mut out);
            wire::encode_frame(
                2,
                &Message::MsgRcv {
                    id: 0,
                    origin: Origin::default(),
                    size: 8192,
                    mtype: 0,
                    flags: libc::IPC_NOWAIT,
                },
                &mut out,
            );
        }
        FrameArg::Ping => wire::encode_frame(1, &Message::Ping, &mut out),
    }
    if let Err(e) = s.write_all(&out) {
        println!("end: closed (write: {e})");
        return WITHSTOOD;
    }
    // Everything it answers, until it closes.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Err(e) = s.set_read_timeout(Some(CLOSE_WAIT)) {
            return not_tried("socket", &e);
        }
        match s.read(&mut buf) {
            Ok(0) => break After::Closed("end of file".to_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                break After::Closed("reset".to_owned())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break After::Open
            }
            Err(e) => break After::Closed(e.to_string()),
        }
    };
    let mut only_refusals = true;
    let mut rest = &got[..];
    while !rest.is_empty() {
        match wire::decode_frame(rest, u32::MAX) {
            Ok(Some((used, _, m))) => {
                println!("reply: {}", show(&m));
                only_refusals &= matches!(m, Message::Refused { .. });
                rest = &rest[used..];
            }
            _ => {
                println!("reply: {} bytes that are no frame", rest.len());
                only_refusals = false;
                break;
            }
        }
    }
    println!("end: {end}");
    verdict(end.closed() && only_refusals)
}

/// Asks dipcd, on `ch`, to create `key` of `kind`; prints the answer as
/// `grant: ...`. Whether this process was granted the creation.
fn claim(ch: &mut Channel<UnixStream>, kind: IpcKind, key: i32) -> Result<bool, String> {
    let get = Message::KeyGet {
        kind,
        key,
        flags: libc::IPC_CREAT | 0o666,
    };
    match ch.call(1, &get) {
        Ok(Message::KeyOwner { owner, id, .. }) => {
            println!("grant: owner {owner} id {id}");
            Ok(id == -1)
        }
        Ok(other) => {
            println!("grant: {}", show(&other));
            Ok(false)
        }
        Err(e) => Err(format!("KeyGet: {e}")),
    }
}

fn commit_bogus(config: &Config, kind: IpcKind, key: i32, id: i32) -> u8 {
    println!("uid {}", uid());
    let mut ch = match dipcd(config) {
        Ok(ch) => ch,
        Err(e) => return not_tried("dipcd", &e),
    };
    match claim(&mut ch, kind, key) {
        Ok(true) => {}
        Ok(false) => return not_tried("claim", &"this process was not granted the creation"),
        Err(e) => return not_tried("claim", &e),
    }
    let commit = Message::KeyCommit {
        kind,
        key,
        id,
        creator_uid: 0,
        incarnation: 0,
    };
    let r = ch.call(2, &commit).map_err(|e| e.to_string());
    println!("commit: {}", shown(&r));
    verdict(is_error(&r, None))
}

fn claim_hold(config: &Config, kind: IpcKind, key: i32, hold: Duration, keep: bool) -> u8 {
    println!("uid {}", uid());
    let mut ch = match dipcd(config) {
        Ok(ch) => ch,
        Err(e) => return not_tried("dipcd", &e),
    };
    match claim(&mut ch, kind, key) {
        Ok(true) => {}
        Ok(false) => return not_tried("claim", &"this process was not granted the creation"),
        Err(e) => return not_tried("claim", &e),
    }
    if !keep {
        drop(ch);
        println!("holding");
        std::thread::sleep(hold);
        return WITHSTOOD;
    }
    println!("holding");
    std::thread::sleep(hold);
    let size = match kind {
        IpcKind::Msg => 0,
        IpcKind::Sem => 1,
        IpcKind::Shm => 4096,
    };
    let id = match dipc_common::sysv::get(kind, key, size, libc::IPC_CREAT | libc::IPC_EXCL | 0o600)
    {
        Ok(id) => id,
        Err(e) => return not_tried("create", &Errno::from_raw(e)),
    };
    let commit = Message::KeyCommit {
        kind,
        key,
        id,
        creator_uid: 0,
        incarnation: 0,
    };
    let r = ch.call(2, &commit).map_err(|e| e.to_string());
    println!("late commit: {}", shown(&r));
    let removed = match kind {
        IpcKind::Msg => dipc_common::sysv::msgctl_rmid(id),
        IpcKind::Sem => dipc_common::sysv::semctl_int(id, 0, libc::IPC_RMID, 0).map(|_| ()),
        IpcKind::Shm => dipc_common::sysv::shmctl_rmid(id),
    };
    if let Err(e) = removed {
        eprintln!(
            "dipc-attack: remove {} {id}: {}",
            kind.name(),
            Errno::from_raw(e)
        );
    }
    verdict(is_error(&r, None))
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum GarbageTo {
    Dipcd,
    Worker,
    FrontEnd,
    Referee,
    Shm,
}

/// A connection garbage goes down, sealed or not as the daemon expects.
enum Garbled {
    Unix(Channel<UnixStream>),
    Tcp(Channel<TcpStream>),
}

impl Garbled {
    /// Sends `frame` as it is (sealed on a sealed connection).
    fn send(&mut self, frame: &[u8]) -> bool {
        let r = match self {
            Garbled::Unix(ch) => ch.send_encoded(|out| out.extend_from_slice(frame)),
            Garbled::Tcp(ch) => ch.send_encoded(|out| out.extend_from_slice(frame)),
        };
        r.is_ok()
    }

    /// Reads what the daemon answered so far (without waiting for more):
    /// the bytes, or `None` once it has closed the connection.
    fn drain(&mut self) -> Option<u64> {
        let mut buf = [0u8; 16 * 1024];
        let mut n = 0u64;
        loop {
            let r = match self {
                Garbled::Unix(ch) => ch.get_mut().read(&mut buf),
                Garbled::Tcp(ch) => ch.get_mut().read(&mut buf),
            };
            match r {
                Ok(0) => return None,
                Ok(k) => n += k as u64,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Some(n)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
    }
}

/// A fresh connection to the daemon `to` names.
fn garbled(
    config: &Config,
    (to, target, id, port): (GarbageTo, Option<SocketAddr>, Option<i32>, u16),
) -> Result<Garbled, String> {
    let target = || target.ok_or_else(|| format!("{to:?} needs --target"));
    let quick = Some(Duration::from_millis(1));
    let slow = Some(CLOSE_WAIT);
    let tcp = |ch: Channel<TcpStream>| -> Result<Garbled, String> {
        ch.get_ref()
            .set_read_timeout(quick)
            .map_err(|e| e.to_string())?;
        ch.get_ref()
            .set_write_timeout(slow)
            .map_err(|e| e.to_string())?;
        Ok(Garbled::Tcp(ch))
    };
    let unix = |s: UnixStream| -> Result<Garbled, String> {
        s.set_read_timeout(quick).map_err(|e| e.to_string())?;
        s.set_write_timeout(slow).map_err(|e| e.to_string())?;
        Ok(Garbled::Unix(Channel::new(s, config.max_frame)))
    };
    match to {
        GarbageTo::Dipcd => {
            unix(UnixStream::connect(config.back_end_socket()).map_err(|e| format!("dipcd: {e}"))?)
        }
        GarbageTo::Shm => {
            let id = id.ok_or("shm needs --id")?;
            let path = config.shm_socket(id);
            unix(UnixStream::connect(&path).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        GarbageTo::FrontEnd => {
            let t = target()?;
            let s =
                TcpStream::connect_timeout(&t, REPLY_TIMEOUT).map_err(|e| format!("{t}: {e}"))?;
            tcp(Channel::new(s, config.max_frame))
        }
        GarbageTo::Worker => {
            let s = open_session(config, target()?)?;
            tcp(Channel::new(s.s, s.max).with_codec(Codec::Secure(Box::new(s.sec))))
        }
        GarbageTo::Referee => {
            let secret = Secret::load(&config.secret_file).map_err(|e| e.to_string())?;
            let me = SocketAddr::new(config.host.address, port);
            let mut ch = match handshake(config, &secret, config.referee_addr(), Role::Host, me)? {
                Ok(ch) => ch,
                Err((e, _)) => return Err(format!("handshake: {e}")),
            };
            match ch.call(1, &Message::Join { front_end: me }) {
                Ok(Message::Joined) => tcp(ch),
                Ok(other) => Err(format!("join: {}", show(&other))),
                Err(e) => Err(format!("join: {e}")),
            }
        }
    }
}

fn garbage(
    config: &Config,
    to: (GarbageTo, Option<SocketAddr>, Option<i32>, u16),
    frames: usize,
    seed: Option<u64>,
) -> u8 {
    println!("uid {}", uid());
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    println!("seed {seed}");
    let mut rng = garbage::Rng::new(seed);
    let (mut sent, mut conns, mut closed, mut replied) = (0, 0, 0, 0);
    let mut conn = None;
    let mut refused = 0;
    while sent < frames {
        let c = match &mut conn {
            Some(c) => c,
            None => match garbled(config, to) {
                Ok(c) => {
                    conns += 1;
                    conn.insert(c)
                }
                // The daemon may refuse a burst of new connections for a
                // moment (limits); it must take them again.
                Err(e) if refused < 50 => {
                    refused += 1;
                    eprintln!("dipc-attack: garbage: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                Err(e) => return not_tried("garbage", &e),
            },
        };
        let f = garbage::frame(&mut rng);
        let wrote = c.send(&f);
        sent += 1;
        match c.drain() {
            Some(n) if wrote => replied += n,
            _ => {
                closed += 1;
                conn = None;
            }
        }
    }
    println!(
        "garbage: {sent} frames on {conns} connections, {closed} closed by the peer, {replied} reply bytes"
    );
    WITHSTOOD
}

fn forged_stats(config: &Config) -> u8 {
    println!("uid {}", uid());
    let mut ch = match dipcd(config) {
        Ok(ch) => ch,
        Err(e) => return not_tried("dipcd", &e),
    };
    let report = Message::StatsReport {
        pairs: vec![
            ("call.msgsnd".into(), 1_000_000),
            ("latency.0".into(), 1_000_000),
        ],
    };
    match ch.call(1, &report) {
        Ok(reply) => {
            println!("reply: {}", show(&reply));
            verdict(matches!(
                reply,
                Message::Error {
                    errno: libc::EPERM,
                    ..
                }
            ))
        }
        Err(e) => not_tried("StatsReport", &e),
    }
}

fn forged_placeholder(config: &Config, kind: IpcKind, key: i32) -> u8 {
    println!("uid {}", uid());
    let mut ch = match dipcd(config) {
        Ok(ch) => ch,
        Err(e) => return not_tried("dipcd", &e),
    };
    let (owner, id, origin) = match ch.call(
        1,
        &Message::KeyGet {
            kind,
            key,
            flags: 0,
        },
    ) {
        Ok(Message::KeyOwner {
            owner,
            id,
            local_id,
            origin,
        }) => {
            println!("owner {owner} id {id} local {local_id}");
            (owner, id, origin)
        }
        other => return not_tried("key get", &shown(&other.map_err(|e| e.to_string()))),
    };
    let mut vouch = [0u8; 32];
    if let Err(e) = dipc_common::auth::fill_random(&mut vouch) {
        return not_tried("random", &e);
    }
    let ask = Message::Placeholder {
        kind,
        key,
        owner,
        id,
        origin,
        vouch,
    };
    let r = ch.call(2, &ask).map_err(|e| e.to_string());
    println!("placeholder: {}", shown(&r));
    verdict(is_error(&r, None))
}

fn remote_private(config: &Config, target: SocketAddr, kind: IpcKind) -> u8 {
    println!("uid {}", uid());
    let mut s = match open_session(config, target) {
        Ok(s) => s,
        Err(e) => return not_tried("session", &e),
    };
    let size = match kind {
        IpcKind::Msg => 0,
        IpcKind::Sem => 1,
        IpcKind::Shm => 4096,
    };
    let remote = s.call(
        1,
        &Message::IpcGet {
            kind,
            key: libc::IPC_PRIVATE,
            id: 0,
            incarnation: 0,
            flags: 0o600,
            size,
        },
    );
    println!("remote get: {}", shown(&remote));
    let mut ch = match dipcd(config) {
        Ok(ch) => ch,
        Err(e) => return not_tried("dipcd", &e),
    };
    let get = Message::KeyGet {
        kind,
        key: libc::IPC_PRIVATE,
        flags: libc::IPC_CREAT | 0o600,
    };
    let local = ch.call(1, &get).map_err(|e| e.to_string());
    match &local {
        Ok(Message::KeyOwner { owner, id, .. }) => println!("dipcd get: owner {owner} id {id}"),
        other => println!("dipcd get: {}", shown(other)),
    }
    verdict(is_error(&remote, None) && is_error(&local, None))
}

fn restore_pid_d(config: &Config, pid_d: i64, port: u16) -> u8 {
    println!("uid {}", uid());
    let secret = match Secret::load(&config.secret_file) {
        Ok(s) => s,
        Err(e) => return not_tried("secret", &e),
    };
    let me = SocketAddr::new(config.host.address, port);
    let mut ch = match handshake(config, &secret, config.referee_addr(), Role::Host, me) {
        Ok(Ok(ch)) => ch,
        Ok(Err((e, _))) => return not_tried("handshake", &e),
        Err(e) => return not_tried("handshake", &e),
    };
    match ch.call(1, &Message::Join { front_end: me }) {
        Ok(Message::Joined) => println!("joined as {me}"),
        Ok(other) => return not_tried("join", &show(&other)),
        Err(e) => return not_tried("join", &e),
    }
    // Pids of no process of this host: the referee takes them as stated.
    let reg = |pid_d, pid| Message::PidRegister {
        pid_d,
        pid,
        uid: 65534,
        starttime: 1,
        mailbox: 0,
    };
    let restore = ch
        .call(2, &reg(pid_d, 4_000_001))
        .map_err(|e| e.to_string());
    println!("restore: {}", shown_reg(&restore));
    let mut fresh = Vec::new();
    for (i, pid) in [4_000_002, 4_000_003].into_iter().enumerate() {
        let r = ch
            .call(3 + i as u64, &reg(0, pid))
            .map_err(|e| e.to_string());
        println!("new: {}", shown_reg(&r));
        fresh.push(r);
    }
    let ids: Vec<i64> = fresh
        .iter()
        .filter_map(|r| match r {
            Ok(Message::Registered { pid_d, .. }) => Some(*pid_d),
            _ => None,
        })
        .collect();
    let good_new = ids.len() == 2 && ids.iter().all(|p| *p > 0) && ids[0] != ids[1];
    verdict(is_error(&restore, None) && good_new)
}

fn shown_reg(r: &Result<Message, String>) -> String {
    match r {
        Ok(Message::Registered { pid_d, .. }) => format!("registered {pid_d}"),
        other => shown(other),
    }
}

fn kill_pid(config: &Config, target: SocketAddr, pid: i32, sig: i32) -> u8 {
    println!("uid {}", uid());
    let starttime = match dipc_common::procs::starttime(pid) {
        Ok(t) => t,
        Err(e) => return not_tried("start time", &Errno::from_raw(e)),
    };
    let mut s = match open_session(config, target) {
        Ok(s) => s,
        Err(e) => return not_tried("session", &e),
    };
    let r = s.call(
        1,
        &Message::KillD {
            pid,
            starttime,
            sig,
        },
    );
    println!("kill: {}", shown(&r));
    verdict(is_error(&r, None))
}

fn peer_groups(config: &Config, target: SocketAddr, (id, origin): (i32, Origin), gid: u32) -> u8 {
    use nix::unistd::{setegid, seteuid, setgroups, Gid, Uid};
    println!("uid {}", uid());
    let nobody = (Uid::from_raw(65534), Gid::from_raw(65534));
    // Connect as nobody with no groups; the real uid stays root, so the
    // effective one can come back.
    if let Err(e) = setgroups(&[])
        .and_then(|()| setegid(nobody.1))
        .and_then(|()| seteuid(nobody.0))
    {
        return not_tried("become nobody", &e);
    }
    let ch = match dipcd(config) {
        Ok(ch) => ch,
        Err(e) => return not_tried("dipcd", &e),
    };
    // Then take group G, as a process that the connection's pid later
    // names could have (a recycled pid, or this one after a setgroups).
    if let Err(e) = seteuid(Uid::from_raw(0))
        .and_then(|()| setgroups(&[Gid::from_raw(gid)]))
        .and_then(|()| seteuid(nobody.0))
    {
        return not_tried("take the group", &e);
    }
    println!("groups now [{gid}]");
    let mut s = match session_over(config, ch, target) {
        Ok(s) => s,
        Err(e) => return not_tried("session", &e),
    };
    let r = s.call(
        1,
        &Message::MsgCtl {
            id,
            origin,
            cmd: libc::IPC_STAT,
            set: None,
        },
    );
    println!("stat: {}", shown(&r));
    verdict(is_error(&r, Some(libc::EACCES)))
}

fn hold(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

fn clients(config: &Config, count: usize, hold_ms: u64) -> u8 {
    let mut open = Vec::new();
    let mut refused = 0;
    let mut first = None;
    for _ in 0..count {
        let reply = dipcd(config).and_then(|mut ch| {
            ch.call(1, &Message::Ping)
                .map(|r| (ch, r))
                .map_err(|e| io::Error::other(e.to_string()))
        });
        match reply {
            Ok((ch, Message::Pong)) => open.push(ch),
            Ok((_, Message::Error { errno, message })) => {
                refused += 1;
                first.get_or_insert(format!("{}: {message}", errno_name(errno)));
            }
            Ok((_, other)) => {
                refused += 1;
                first.get_or_insert(format!("unexpected {}", other.kind().name()));
            }
            Err(e) => {
                refused += 1;
                first.get_or_insert(e.to_string());
            }
        }
    }
    println!("clients: {} opened, {refused} refused", open.len());
    if let Some(f) = first {
        println!("refused: {f}");
    }
    let _ = io::stdout().flush();
    hold(hold_ms);
    WITHSTOOD
}

fn pipeline(config: &Config, requests: usize, hold_ms: u64) -> u8 {
    let s = match UnixStream::connect(config.back_end_socket()) {
        Ok(s) => s,
        Err(e) => return not_tried("connect to dipcd", &e),
    };
    if let Err(e) = s.set_write_timeout(Some(Duration::from_secs(1))) {
        return not_tried("socket option", &e);
    }
    let mut frame = Vec::new();
    wire::encode_frame(1, &Message::Ping, &mut frame);
    let mut sent = 0;
    let mut w = &s;
    while sent < requests {
        match w.write_all(&frame) {
            Ok(()) => sent += 1,
            // dipcd took nothing for a second: it stopped reading us.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => {
                println!("pipeline: sent {sent} of {requests}, then {e}");
                return WITHSTOOD;
            }
        }
    }
    println!("pipeline: sent {sent} of {requests}");
    let _ = io::stdout().flush();
    hold(hold_ms);
    WITHSTOOD
}

/// As `pipeline`, on the referee's link of a host of its own: `ListKeys`
/// requests (whose replies are the longest a host may ask for), sealed,
/// and no reply read.
fn referee_pipeline(config: &Config, requests: usize, hold_ms: u64, port: u16) -> u8 {
    println!("uid {}", uid());
    let mut ch = match garbled(config, (GarbageTo::Referee, None, None, port)) {
        Ok(Garbled::Tcp(ch)) => ch,
        Ok(Garbled::Unix(_)) => return not_tried("referee", &"not a TCP link"),
        Err(e) => return not_tried("referee", &e),
    };
    if let Err(e) = ch.get_ref().set_write_timeout(Some(Duration::from_secs(1))) {
        return not_tried("socket option", &e);
    }
    let mut sent = 0;
    while sent < requests {
        match ch.send(2 + sent as u64, &Message::ListKeys { after: None }) {
            Ok(()) => sent += 1,
            // The referee took nothing for a second: it stopped reading us.
            Err(ChannelError::TimedOut) => break,
            Err(e) => {
                println!("pipeline: sent {sent} of {requests}, then {e}");
                return WITHSTOOD;
            }
        }
    }
    println!("pipeline: sent {sent} of {requests}");
    let _ = io::stdout().flush();
    hold(hold_ms);
    WITHSTOOD
}

fn half_frames(config: &Config, count: usize, hold_ms: u64) -> u8 {
    let mut frame = Vec::new();
    wire::encode_frame(
        1,
        &Message::error(libc::EIO, "h".repeat(60 * 1024)),
        &mut frame,
    );
    let half = &frame[..frame.len() / 2];
    let path = config.back_end_socket();
    hold_partial(
        "half-frames",
        count,
        || UnixStream::connect(&path),
        half,
        hold_ms,
        |s| s.set_read_timeout(Some(Duration::from_millis(50))),
    );
    WITHSTOOD
}

/// Opens up to `count` connections with `connect`, writes `bytes` on each
/// and says how many (`WHAT: N sent`), holds them `hold_ms`, then says
/// how many the peer closed meanwhile (`WHAT: C closed by the peer`).
fn hold_partial<S>(
    what: &str,
    count: usize,
    connect: impl Fn() -> io::Result<S>,
    bytes: &[u8],
    hold_ms: u64,
    quick_reads: impl Fn(&S) -> io::Result<()>,
) where
    for<'a> &'a S: Read + Write,
{
    let mut open = Vec::new();
    for _ in 0..count {
        match connect() {
            Ok(s) => {
                if (&s).write_all(bytes).is_ok() {
                    open.push(s);
                }
            }
            Err(_) => break,
        }
    }
    println!("{what}: {} sent", open.len());
    let _ = io::stdout().flush();
    hold(hold_ms);
    let closed = open
        .iter()
        .filter(|s| {
            let _ = quick_reads(s);
            read_shows_closed(*s)
        })
        .count();
    println!("{what}: {closed} closed by the peer");
}

fn sessions(config: &Config, target: SocketAddr, count: usize, hold_ms: u64) -> u8 {
    let mut open = Vec::new();
    let mut refused = 0;
    let mut first = None;
    for _ in 0..count {
        match open_session(config, target) {
            Ok(s) => open.push(s),
            Err(e) => {
                refused += 1;
                first.get_or_insert(e);
            }
        }
    }
    println!("sessions: {} opened, {refused} refused", open.len());
    if let Some(f) = first {
        println!("refused: {f}");
    }
    let _ = io::stdout().flush();
    hold(hold_ms);
    WITHSTOOD
}

fn stall(target: SocketAddr, count: usize, hold_ms: u64) -> u8 {
    // The first byte of a frame header, and nothing more.
    hold_partial(
        "stall",
        count,
        || TcpStream::connect_timeout(&target, Duration::from_secs(2)),
        &wire::MAGIC.to_be_bytes()[..1],
        hold_ms,
        |s| s.set_read_timeout(Some(Duration::from_millis(50))),
    );
    WITHSTOOD
}

fn shm_open(config: &Config, private: bool, key: Option<i32>, mode: &str, id: Option<i32>) -> u8 {
    let Ok(mode) = i32::from_str_radix(mode, 8) else {
        return not_tried("mode", &"not octal");
    };
    let made = match (private, key) {
        (true, _) => Some(libc::IPC_PRIVATE),
        (false, Some(k)) => Some(k),
        (false, None) => None,
    };
    let sid = match (made, id) {
        (Some(k), _) => {
            // SAFETY: a plain System V call.
            let sid = unsafe { libc::shmget(k, 4096, libc::IPC_CREAT | mode) };
            if sid < 0 {
                return not_tried("shmget", &io::Error::last_os_error());
            }
            println!("segment {sid}");
            sid
        }
        (None, Some(i)) => i,
        (None, None) => return not_tried("shm-open", &"--private, --key or --id"),
    };
    if id.is_none() && key.is_some() && !private {
        // Only made: another user asks.
        return WITHSTOOD;
    }
    let mut ch = match dipcd(config) {
        Ok(ch) => ch,
        Err(e) => return not_tried("dipcd", &e),
    };
    match ch.call(1, &Message::ShmOpen { id: sid }) {
        Ok(m) => println!("shm-open: {}", show(&m)),
        Err(e) => println!("shm-open: {e}"),
    }
    WITHSTOOD
}

fn sessions_at_once(config: &Config, target: SocketAddr, count: usize) -> u8 {
    let mut asked = Vec::new();
    for _ in 0..count {
        match dipcd(config) {
            Ok(mut ch) => {
                if ch.send(1, &Message::Connect { target }).is_ok() {
                    asked.push(ch);
                }
            }
            Err(e) => return not_tried("dipcd", &e),
        }
    }
    let mut opened = 0;
    let mut refused: std::collections::BTreeMap<String, (usize, String)> = Default::default();
    for mut ch in asked {
        let (name, message) = match ch.recv() {
            Ok((_, Message::SessionReady { .. })) => {
                opened += 1;
                continue;
            }
            Ok((_, Message::Error { errno, message })) => (errno_name(errno), message),
            Ok((_, other)) => ("unexpected".to_owned(), other.kind().name().to_owned()),
            Err(e) => ("channel".to_owned(), e.to_string()),
        };
        let e = refused.entry(name).or_insert((0, message));
        e.0 += 1;
    }
    println!("sessions: {opened} opened");
    for (name, (n, first)) in refused {
        println!("refused {name}: {n}: {first}");
    }
    WITHSTOOD
}

/// Whether a read on a socket with a short time-out shows it closed by the
/// peer (end of file, or a reset), not merely quiet.
fn read_shows_closed(mut s: impl Read) -> bool {
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
    }
}
