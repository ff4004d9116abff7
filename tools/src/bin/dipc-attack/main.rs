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
//!   name (see the `calls` module). Withstood if the callee
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
//!   the `garbage` module) to a live daemon: dipcd's socket; a worker on
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

mod calls;
mod cli;
mod common;
mod connect;
mod flood;
mod garbage;
mod links;
mod pids;
mod requests;
mod session;

use crate::cli::{Cli, Command};
use crate::common::{not_tried, origin, verdict, NOT_TRIED};
use crate::connect::{connect, connect_relay};
use crate::flood::{
    clients, half_frames, pipeline, referee_pipeline, sessions, sessions_at_once, stall,
};
use crate::garbage::garbage;
use crate::links::{plain, referee_role, wrong_secret};
use crate::pids::{kill_d, migrate_spawn, restore_pid_d, send_d};
use crate::requests::{claim_hold, commit_bogus, forged_placeholder, forged_stats, shm_open};
use crate::session::{
    flip, kill_pid, peer_groups, remote_private, reorder, replay, session_inject, shm_attach,
};
use clap::Parser;
use dipc_common::config::Config;
use dipc_common::wire::IpcKind;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

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
