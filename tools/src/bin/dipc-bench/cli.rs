//! The command line: one subcommand per side of each benchmark, and the
//! report commands. Kept apart so that the sides read without it.

use crate::common::{GROUP_DPROCS, GROUP_MSG, GROUP_PID, GROUP_SEM};
use clap::{Parser, Subcommand};
use std::net::{IpAddr, SocketAddr};

#[derive(Parser)]
#[command(
    name = "dipc-bench",
    about = "Sides of the dipc benchmarks (run them all with tools/bench)"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
    /// TCP echo server: serves CONNECTIONS connections one after the other,
    /// then exits.
    TcpServer {
        /// Address to listen on (loopback or 10.66.0.x).
        #[arg(long, default_value = "127.0.0.1")]
        bind: IpAddr,
        #[arg(long, default_value_t = 7300)]
        port: u16,
        #[arg(long, default_value_t = 1)]
        connections: u32,
        /// Seconds after which the server gives up.
        #[arg(long, default_value_t = 300)]
        time_limit: u32,
        /// After each reply, check for the next request without sleeping
        /// for this long (a serving dipc process does so for
        /// library.spin_us): the like-for-like baseline of a spinning one.
        #[arg(long, default_value_t = 0)]
        spin_us: u64,
    },
    /// TCP ping-pong client (TCP_NODELAY) against tcp-server.
    TcpClient {
        /// Server address (loopback or 10.66.0.x).
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 5000)]
        iterations: usize,
        #[arg(long, default_value_t = 200)]
        warmup: usize,
        /// Seconds to keep retrying the connection while the server starts.
        #[arg(long, default_value_t = 10)]
        wait: u64,
        #[arg(long, default_value_t = 300)]
        time_limit: u32,
        #[arg(long, default_value = "tcp")]
        label: String,
        /// Report row group of the result: msg (a row per size), sem or pid.
        #[arg(long, default_value = GROUP_MSG, value_parser = [GROUP_MSG, GROUP_SEM, GROUP_PID, GROUP_DPROCS])]
        group: String,
        /// Check for the echo without sleeping for up to this many µs
        /// before sleeping in read, as dipc's library does for a remote
        /// reply (library.spin_us): the like-for-like baseline of a
        /// spinning dipc.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000))]
        spin_us: u64,
    },
    /// Raw System V message-queue ping-pong (libc) with a forked partner on
    /// a private queue.
    SysvPingpong {
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 5000)]
        iterations: usize,
        #[arg(long, default_value_t = 200)]
        warmup: usize,
        #[arg(long, default_value_t = 300)]
        time_limit: u32,
        #[arg(long, default_value = "sysv")]
        label: String,
    },
    /// Creates a distributed queue (IPC_DIPC, so this host owns it) and
    /// echoes pings with the dipc C API until a stop message; then removes
    /// the queue.
    MsgPong {
        /// Queue key (decimal or 0x hex).
        #[arg(long, value_parser = parse_key)]
        key: i32,
        #[arg(long, default_value_t = 300)]
        time_limit: u32,
    },
    /// Ping side on the queue msg-pong made, through the dipc C API (remote
    /// if the queue is owned by another host); sends the stop message at the
    /// end.
    MsgPing {
        #[arg(long, value_parser = parse_key)]
        key: i32,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 5000)]
        iterations: usize,
        #[arg(long, default_value_t = 200)]
        warmup: usize,
        /// Seconds to wait for the queue to exist.
        #[arg(long, default_value_t = 10)]
        wait: u64,
        #[arg(long, default_value_t = 300)]
        time_limit: u32,
        #[arg(long, default_value = "dipc")]
        label: String,
    },
    /// Raw System V semaphore ping-pong (libc) with a forked partner on a
    /// private set of two semaphores.
    SemPingpong {
        #[arg(long, default_value_t = 5000)]
        iterations: usize,
        #[arg(long, default_value_t = 200)]
        warmup: usize,
        #[arg(long, default_value_t = 300)]
        time_limit: u32,
        #[arg(long, default_value = "sysv")]
        label: String,
    },
    /// Creates a distributed set of two semaphores (IPC_DIPC, so this host
    /// owns it) and answers pings with the dipc C API until the set is
    /// removed (by sem-ping); removes it itself only on a failure.
    SemPong {
        /// Semaphore set key (decimal or 0x hex).
        #[arg(long, value_parser = parse_key)]
        key: i32,
        #[arg(long, default_value_t = 300)]
        time_limit: u32,
    },
    /// Ping side on the set sem-pong made, through the dipc C API (remote if
    /// the set is owned by another host); removes the set at the end, which
    /// stops the pong.
    SemPing {
        #[arg(long, value_parser = parse_key)]
        key: i32,
        #[arg(long, default_value_t = 5000)]
        iterations: usize,
        #[arg(long, default_value_t = 200)]
        warmup: usize,
        /// Seconds to wait for the set to exist.
        #[arg(long, default_value_t = 10)]
        wait: u64,
        #[arg(long, default_value_t = 300)]
        time_limit: u32,
        #[arg(long, default_value = "dipc")]
        label: String,
    },
    /// Registers, writes its pid_d to ID_FILE, and answers each real-time
    /// signal from the pid_d in ID_FILE.ping with one back (kill_d), until
    /// the stop signal.
    SigPong {
        #[arg(long)]
        id_file: std::path::PathBuf,
        #[arg(long, default_value_t = 300)]
        time_limit: u32,
    },
    /// Registers, writes ID_FILE.ping, and times kill_d calls and signal
    /// round trips to the pong in ID_FILE; stops it at the end.
    SigPing {
        #[arg(long)]
        id_file: std::path::PathBuf,
        #[arg(long, default_value_t = 5000)]
        iterations: usize,
        #[arg(long, default_value_t = 200)]
        warmup: usize,
        /// Seconds to wait for the pong's id file.
        #[arg(long, default_value_t = 10)]
        wait: u64,
        #[arg(long, default_value_t = 300)]
        time_limit: u32,
    },
    /// Registers, writes ID_FILE, and echoes messages from the pid_d in
    /// ID_FILE.ping (dipc_receive, dipc_send) until a stop message.
    MboxPong {
        #[arg(long)]
        id_file: std::path::PathBuf,
        #[arg(long, default_value_t = 300)]
        time_limit: u32,
    },
    /// Registers, writes ID_FILE.ping, and times dipc_send/dipc_receive
    /// round trips with the pong in ID_FILE; stops it at the end.
    MboxPing {
        #[arg(long)]
        id_file: std::path::PathBuf,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 5000)]
        iterations: usize,
        #[arg(long, default_value_t = 200)]
        warmup: usize,
        #[arg(long, default_value_t = 10)]
        wait: u64,
        #[arg(long, default_value_t = 300)]
        time_limit: u32,
    },
    /// Registers, writes its pid_d to ID_FILE, and serves distributed
    /// process calls: `Null` (no input, no output) and `Stop`, which ends
    /// it.
    DprocServe {
        #[arg(long)]
        id_file: std::path::PathBuf,
        #[arg(long, default_value_t = 300)]
        time_limit: u32,
    },
    /// Registers and times null calls (`dipc_call` of `Null`, nothing in,
    /// nothing out) of the dproc-serve in ID_FILE; calls its `Stop` at the
    /// end.
    DprocCall {
        #[arg(long)]
        id_file: std::path::PathBuf,
        #[arg(long, default_value_t = 5000)]
        iterations: usize,
        #[arg(long, default_value_t = 200)]
        warmup: usize,
        #[arg(long, default_value_t = 10)]
        wait: u64,
        #[arg(long, default_value_t = 300)]
        time_limit: u32,
        #[arg(long, default_value = "dproc_call")]
        label: String,
        /// Then also time as many bare dipc_sends of one byte to the
        /// process (one remote send: the request and its answer; the
        /// serving process drops them, as they are not calls), under this
        /// label.
        #[arg(long)]
        send_label: Option<String>,
    },
    /// Forks CALLERS processes, each registered, that make null calls of
    /// the dproc-serve in ID_FILE as fast as they can from START_AT_MS
    /// (Unix time in ms, the same for every host of a run) for
    /// DURATION_MS; prints the calls finished in that window.
    DprocLoad {
        #[arg(long)]
        id_file: std::path::PathBuf,
        #[arg(long, default_value_t = 4)]
        callers: usize,
        #[arg(long)]
        start_at_ms: u64,
        #[arg(long, default_value_t = 5000)]
        duration_ms: u64,
        #[arg(long, default_value_t = 50)]
        warmup: usize,
        #[arg(long, default_value_t = 10)]
        wait: u64,
        #[arg(long, default_value_t = 300)]
        time_limit: u32,
        #[arg(long, default_value = "dproc_load")]
        label: String,
        /// The simulated host this side runs on, for the report.
        #[arg(long, default_value_t = 0)]
        host: u32,
    },
    /// Calls `Stop` of the dproc-serve in ID_FILE.
    DprocStop {
        #[arg(long)]
        id_file: std::path::PathBuf,
        #[arg(long, default_value_t = 10)]
        wait: u64,
    },
    /// Reads the JSON lines of the client sides and prints the table (or one
    /// JSON object).
    Report {
        /// File of JSON lines ("-" for stdin).
        #[arg(long, default_value = "-")]
        input: String,
        #[arg(long)]
        json: bool,
    },
    /// Reads JSON lines of client sides (those of `report` or of
    /// `preload-report`) and writes an SVG per report row into OUT: the
    /// cumulative distribution of each bench's round trips (see
    /// dipc_tools::plot).
    Plot {
        /// File of JSON lines ("-" for stdin).
        #[arg(long, default_value = "-")]
        input: String,
        /// Directory for the SVG files (created if missing).
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Reads the JSON lines of the preload part (preload/bench's
    /// sysv_pingpong) and prints the preload's ratios: owner-local against
    /// raw System V, remote against libdipc called directly.
    PreloadReport {
        /// File of JSON lines ("-" for stdin).
        #[arg(long, default_value = "-")]
        input: String,
        #[arg(long)]
        json: bool,
    },
}

fn parse_key(s: &str) -> Result<i32, String> {
    let v = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u32::from_str_radix(h, 16).map_err(|e| format!("bad key '{s}': {e}"))?
    } else {
        s.parse::<u32>()
            .map_err(|e| format!("bad key '{s}': {e}"))?
    };
    if v == 0 {
        return Err("key 0 is IPC_PRIVATE; give a real key".into());
    }
    Ok(v as i32)
}
