//! `dipc-bench`: the two sides of each benchmark that `tools/bench` runs on a
//! simulated cluster, and the report that turns their results into a table.
//!
//! Every client side measures round trips with [`Instant`](std::time::Instant) after a warm-up
//! and prints one JSON line on stdout:
//! `{"bench":..,"group":..,"size":..,"count":..,"median_us":..,"p99_us":..,"min_us":..}`.
//! `group` is the report's row group: `msg` (one row per message size) or
//! `sem` (one row; its lines have no `size`, except the TCP baseline's).
//! Every server side exits by itself (after its connections, or on a stop
//! message) or, failing that, when its time limit (`alarm`) runs out, so a
//! broken run leaves nothing behind.
//!
//! Message-queue ping-pongs use typed messages on one queue: the ping side
//! sends type 1 and waits for type 2; the pong side receives type 1 and sends
//! the same text back as type 2. A one-byte message `0xFF` stops the pong.
//!
//! Semaphore ping-pongs use a set of two semaphores, both 0 at first: the
//! ping side posts semaphore 0 and waits on semaphore 1 (`V(0)`, `P(1)`: two
//! `semop` calls per round trip); the pong side waits on 0 and posts 1. The
//! ping side stops the pong by removing the set (`IPC_RMID`): the pong's
//! wait then fails with `EIDRM` (or `EINVAL`, if it was not waiting yet).
//!
//! Process-id benchmarks (group `pid`) pair a ping on one host with a pong
//! on another, both registered (`dipc::pid`); each writes its pid_d into a
//! file the other reads (`--id-file F`: the pong writes `F`, the ping
//! `F.ping`). `sig-ping`/`sig-pong`, in two phases: first the ping times
//! `kill_d` calls of a real-time signal that the pong only counts (a call
//! returns once the signal is queued at the target); then signal round
//! trips: the ping `kill_d`s another real-time signal, the pong (waiting
//! in `sigwaitinfo`) `kill_d`s one back. A third real-time signal stops the
//! pong. `mbox-ping`/`mbox-pong`: `dipc_send` and
//! `dipc_receive` ping-pong; a message starting with `0xFF` stops the
//! pong.
//!
//! Network traffic goes only to loopback or to the simulated cluster's
//! network (10.66.0.0/24, which exists only inside `tools/cluster`'s
//! namespaces): other addresses are refused.

mod cli;
mod common;
mod dprocs;
mod msg;
mod pid;
mod preload;
mod report;
mod sem;
mod tcp;

use crate::cli::{Cli, Cmd};
use crate::dprocs::{dproc_call, dproc_load, dproc_serve, dproc_stop};
use crate::msg::{msg_ping, msg_pong, sysv_pingpong};
use crate::pid::{mbox_ping, mbox_pong, sig_ping, sig_pong};
use crate::preload::preload_report;
use crate::report::{plot, report};
use crate::sem::{sem_ping, sem_pingpong, sem_pong};
use crate::tcp::{tcp_client, tcp_server};
use clap::Parser;
use std::io::{self};
use std::time::Duration;

fn run(cli: Cli) -> io::Result<()> {
    match cli.cmd {
        Cmd::TcpServer {
            bind,
            port,
            connections,
            time_limit,
            spin_us,
        } => tcp_server(
            bind,
            port,
            connections,
            time_limit,
            Duration::from_micros(spin_us),
        ),
        Cmd::TcpClient {
            addr,
            size,
            iterations,
            warmup,
            wait,
            time_limit,
            label,
            group,
            spin_us,
        } => tcp_client(
            addr, size, iterations, warmup, wait, time_limit, &label, &group, spin_us,
        ),
        Cmd::SysvPingpong {
            size,
            iterations,
            warmup,
            time_limit,
            label,
        } => sysv_pingpong(size, iterations, warmup, time_limit, &label),
        Cmd::MsgPong { key, time_limit } => msg_pong(key, time_limit),
        Cmd::MsgPing {
            key,
            size,
            iterations,
            warmup,
            wait,
            time_limit,
            label,
        } => msg_ping(key, size, iterations, warmup, wait, time_limit, &label),
        Cmd::SemPingpong {
            iterations,
            warmup,
            time_limit,
            label,
        } => sem_pingpong(iterations, warmup, time_limit, &label),
        Cmd::SemPong { key, time_limit } => sem_pong(key, time_limit),
        Cmd::SemPing {
            key,
            iterations,
            warmup,
            wait,
            time_limit,
            label,
        } => sem_ping(key, iterations, warmup, wait, time_limit, &label),
        Cmd::SigPong {
            id_file,
            time_limit,
        } => sig_pong(&id_file, time_limit),
        Cmd::SigPing {
            id_file,
            iterations,
            warmup,
            wait,
            time_limit,
        } => sig_ping(&id_file, iterations, warmup, wait, time_limit),
        Cmd::MboxPong {
            id_file,
            time_limit,
        } => mbox_pong(&id_file, time_limit),
        Cmd::MboxPing {
            id_file,
            size,
            iterations,
            warmup,
            wait,
            time_limit,
        } => mbox_ping(&id_file, size, iterations, warmup, wait, time_limit),
        Cmd::DprocServe {
            id_file,
            time_limit,
        } => dproc_serve(&id_file, time_limit),
        Cmd::DprocCall {
            id_file,
            iterations,
            warmup,
            wait,
            time_limit,
            label,
            send_label,
        } => dproc_call(
            &id_file,
            iterations,
            warmup,
            wait,
            time_limit,
            &label,
            send_label.as_deref(),
        ),
        Cmd::DprocLoad {
            id_file,
            callers,
            start_at_ms,
            duration_ms,
            warmup,
            wait,
            time_limit,
            label,
            host,
        } => dproc_load(
            &id_file,
            callers,
            (start_at_ms, duration_ms),
            warmup,
            wait,
            time_limit,
            &label,
            host,
        ),
        Cmd::DprocStop { id_file, wait } => dproc_stop(&id_file, wait),
        Cmd::Report { input, json } => report(&input, json),
        Cmd::PreloadReport { input, json } => preload_report(&input, json),
        Cmd::Plot { input, out } => plot(&input, &out),
    }
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("dipc-bench: {e}");
        std::process::exit(1);
    }
}
