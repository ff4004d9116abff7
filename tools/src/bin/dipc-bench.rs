//! `dipc-bench`: the two sides of each benchmark that `tools/bench` runs on a
//! simulated cluster, and the report that turns their results into a table.
//!
//! Every client side measures round trips with [`Instant`] after a warm-up
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

use clap::{Parser, Subcommand};
use dipc_common::net;
use libc::{c_int, c_long, c_void};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{self, BufRead, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Longest message text the queue benchmarks use (Linux's default msgmax).
const MAX_TEXT: usize = 8192;
/// Longest TCP payload.
const MAX_TCP: usize = 1 << 20;
const TYPE_PING: c_long = 1;
const TYPE_PONG: c_long = 2;
/// First byte of a stop message (payloads are filled with `FILL`).
const STOP: u8 = 0xFF;
const FILL: u8 = 0x5A;
/// Semaphores in a ping-pong set: 0 carries pings, 1 pongs.
const SEMS: c_int = 2;
const SEM_PING: u16 = 0;
const SEM_PONG: u16 = 1;
/// Report row groups.
const GROUP_MSG: &str = "msg";
const GROUP_SEM: &str = "sem";
const GROUP_PID: &str = "pid";
const GROUP_DPROCS: &str = "dprocs";
/// Most callers one dproc-load side forks.
const MAX_CALLERS: usize = 64;
/// Time-out of one benchmark call: a call that takes longer is a failure.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The original DIPC's cost of one signal to another host, in µs (its
/// papers report about 30 ms).
const ORIGINAL_KILL_US: f64 = 30_000.0;

#[derive(Parser)]
#[command(
    name = "dipc-bench",
    about = "Sides of the dipc benchmarks (run them all with tools/bench)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
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

fn err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// Loopback, or the simulated cluster's 10.66.0.0/24.
fn allowed_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback() || (o[0] == 10 && o[1] == 66 && o[2] == 0)
        }
        IpAddr::V6(v6) => v6.is_loopback(),
    }
}

fn check_ip(ip: IpAddr) -> io::Result<()> {
    if allowed_ip(ip) {
        Ok(())
    } else {
        Err(err(format!(
            "{ip}: only loopback and the cluster's 10.66.0.0/24 are allowed"
        )))
    }
}

fn check_counts(size: usize, max: usize, iterations: usize) -> io::Result<()> {
    if size == 0 || size > max {
        return Err(err(format!("--size must be in 1..={max}, got {size}")));
    }
    if iterations == 0 {
        return Err(err("--iterations must be at least 1"));
    }
    Ok(())
}

extern "C" fn on_alarm(_: c_int) {}

/// Arms the time limit. With `interrupt`, SIGALRM only interrupts the
/// blocking call under way (System V calls then fail with `EINTR`, so the
/// caller can clean up); otherwise it kills the process.
fn time_limit(secs: u32, interrupt: bool) -> io::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    if interrupt {
        let act = SigAction::new(
            SigHandler::Handler(on_alarm),
            SaFlags::empty(),
            SigSet::empty(),
        );
        // SAFETY: the handler does nothing, which is async-signal-safe.
        unsafe { sigaction(Signal::SIGALRM, &act) }.map_err(io::Error::from)?;
    }
    // SAFETY: alarm takes a plain integer.
    unsafe { libc::alarm(secs) };
    Ok(())
}

/// The JSON line of bench `label` in report row group `group` (`size` is
/// the payload in bytes, if the bench has one): median, 99th percentile
/// (nearest rank) and minimum in microseconds and, so that `report` can
/// pool the rounds of an interleaved run, every round trip (`samples_ns`).
fn summary(label: &str, group: &str, size: Option<usize>, mut ns: Vec<u64>, extra: Value) -> Value {
    ns.sort_unstable();
    let mut v = json!({ "bench": label, "group": group });
    if let Some(o) = v.as_object_mut() {
        o.extend(stats(&ns));
        o.insert("samples_ns".into(), json!(ns));
        if let Some(size) = size {
            o.insert("size".into(), json!(size));
        }
        if let Value::Object(e) = extra {
            o.extend(e);
        }
    }
    v
}

/// Count, and median, p99 and minimum in µs, of sorted round trips (ns).
fn stats(ns: &[u64]) -> serde_json::Map<String, Value> {
    let mut o = serde_json::Map::new();
    let n = ns.len();
    o.insert("count".into(), json!(n));
    if n == 0 {
        return o;
    }
    let us = |v: u64| (v as f64) / 1000.0;
    let median = if n % 2 == 1 {
        us(ns[n / 2])
    } else {
        (us(ns[n / 2 - 1]) + us(ns[n / 2])) / 2.0
    };
    let p99 = us(ns[(n * 99).div_ceil(100).max(1) - 1]);
    o.insert("median_us".into(), json!(round3(median)));
    o.insert("p99_us".into(), json!(round3(p99)));
    o.insert("min_us".into(), json!(round3(us(ns[0]))));
    o
}

/// Adds a later round of the same measurement to `into`: the round trips
/// are pooled and the statistics taken again over all of them.
fn merge_round(into: &mut Value, round: &Value) -> io::Result<()> {
    let samples = |v: &Value| -> io::Result<Vec<u64>> {
        v.get("samples_ns")
            .and_then(Value::as_array)
            .ok_or_else(|| err("a repeated measurement without samples_ns"))?
            .iter()
            .map(|x| {
                x.as_u64()
                    .ok_or_else(|| err("samples_ns holds a non-integer"))
            })
            .collect()
    };
    let mut ns = samples(into)?;
    ns.extend(samples(round)?);
    ns.sort_unstable();
    let rounds = into.get("rounds").and_then(Value::as_u64).unwrap_or(1) + 1;
    if let Some(o) = into.as_object_mut() {
        o.extend(stats(&ns));
        o.insert("samples_ns".into(), json!(ns));
        o.insert("rounds".into(), json!(rounds));
    }
    Ok(())
}

/// The fields `keys` of a result that it has.
fn pick(v: &Value, keys: &[&str]) -> serde_json::Map<String, Value> {
    keys.iter()
        .filter_map(|k| Some((k.to_string(), v.get(*k)?.clone())))
        .collect()
}

/// A table cell: median / p99 in µs of a result, `-` if there is none.
fn cell_of(v: Option<&Value>) -> String {
    match v {
        Some(o) => {
            let f = |k: &str| {
                o.get(k)
                    .and_then(Value::as_f64)
                    .map_or("?".to_string(), |x| format!("{x:.1}"))
            };
            format!("{} / {}", f("median_us"), f("p99_us"))
        }
        None => "-".to_string(),
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn print_line(v: &Value) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{v}")?;
    out.flush()
}

// ---------------------------------------------------------------- TCP

fn tcp_server(
    bind: IpAddr,
    port: u16,
    connections: u32,
    limit: u32,
    spin: Duration,
) -> io::Result<()> {
    check_ip(bind)?;
    time_limit(limit, false)?;
    let listener = TcpListener::bind((bind, port))?;
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..connections {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        loop {
            let n = match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
                Err(e) => return Err(e),
            };
            s.write_all(&buf[..n])?;
            net::spin_readable(&s, spin);
        }
    }
    Ok(())
}

fn tcp_connect(addr: SocketAddr, wait: Duration) -> io::Result<TcpStream> {
    let deadline = Instant::now() + wait;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(s) => return Ok(s),
            // The server may not listen yet.
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(err(format!("connect {addr}: {e}"))),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn tcp_client(
    addr: SocketAddr,
    size: usize,
    iterations: usize,
    warmup: usize,
    wait: u64,
    limit: u32,
    label: &str,
    group: &str,
    spin_us: u64,
) -> io::Result<()> {
    check_ip(addr.ip())?;
    check_counts(size, MAX_TCP, iterations)?;
    time_limit(limit, false)?;
    let mut s = tcp_connect(addr, Duration::from_secs(wait))?;
    s.set_nodelay(true)?;
    let out = vec![FILL; size];
    let mut back = vec![0u8; size];
    let spin = Duration::from_micros(spin_us);
    let mut ns = Vec::with_capacity(iterations);
    for i in 0..warmup + iterations {
        let t = Instant::now();
        s.write_all(&out)?;
        net::spin_readable(&s, spin);
        s.read_exact(&mut back)?;
        let dt = t.elapsed();
        if i >= warmup {
            ns.push(dt.as_nanos() as u64);
        }
    }
    if back != out {
        return Err(err("tcp: echo differs from what was sent"));
    }
    drop(s);
    print_line(&summary(
        label,
        group,
        Some(size),
        ns,
        json!({ "spin_us": spin_us }),
    ))
}

// ---------------------------------------------------------------- message queues

#[repr(C)]
struct MsgBuf {
    mtype: c_long,
    text: [u8; MAX_TEXT],
}

impl MsgBuf {
    fn new(mtype: c_long) -> Box<MsgBuf> {
        Box::new(MsgBuf {
            mtype,
            text: [FILL; MAX_TEXT],
        })
    }
}

/// Which calls the queue benchmarks make.
#[derive(Clone, Copy)]
enum Api {
    /// Plain libc System V calls.
    Raw,
    /// dipc's C interface (plain calls after a lookup on the owner host).
    Dipc,
}

fn os_err(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

impl Api {
    fn snd(self, id: c_int, m: &MsgBuf, len: usize) -> io::Result<()> {
        let p = (m as *const MsgBuf).cast::<c_void>();
        // SAFETY: m is an mtype followed by MAX_TEXT >= len bytes.
        let r = unsafe {
            match self {
                Api::Raw => libc::msgsnd(id, p, len, 0),
                Api::Dipc => dipc::capi::dipc_msgsnd(id, p, len, 0),
            }
        };
        if r < 0 {
            Err(os_err("msgsnd"))
        } else {
            Ok(())
        }
    }

    fn rcv(self, id: c_int, m: &mut MsgBuf, mtype: c_long) -> io::Result<usize> {
        let p = (m as *mut MsgBuf).cast::<c_void>();
        // SAFETY: m has room for an mtype and MAX_TEXT bytes.
        let r = unsafe {
            match self {
                Api::Raw => libc::msgrcv(id, p, MAX_TEXT, mtype, 0),
                Api::Dipc => dipc::capi::dipc_msgrcv(id, p, MAX_TEXT, mtype, 0),
            }
        };
        if r < 0 {
            Err(os_err("msgrcv"))
        } else {
            Ok(r as usize)
        }
    }

    fn rmid(self, id: c_int) -> io::Result<()> {
        // SAFETY: IPC_RMID takes no buffer.
        let r = unsafe {
            match self {
                Api::Raw => libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()),
                Api::Dipc => dipc::capi::dipc_msgctl(id, libc::IPC_RMID, std::ptr::null_mut()),
            }
        };
        if r < 0 {
            Err(os_err("msgctl(IPC_RMID)"))
        } else {
            Ok(())
        }
    }
}

/// Echoes type-1 messages back as type 2 until a stop message; returns how
/// many it echoed.
fn pong_loop(api: Api, id: c_int) -> io::Result<u64> {
    let mut m = MsgBuf::new(TYPE_PING);
    let mut n = 0;
    loop {
        let len = api.rcv(id, &mut m, TYPE_PING)?;
        if len >= 1 && m.text[0] == STOP {
            return Ok(n);
        }
        m.mtype = TYPE_PONG;
        api.snd(id, &m, len)?;
        n += 1;
    }
}

/// Times `warmup + iterations` round trips; returns the measured ones (ns).
fn ping_loop(
    api: Api,
    id: c_int,
    size: usize,
    warmup: usize,
    iterations: usize,
) -> io::Result<Vec<u64>> {
    let out = MsgBuf::new(TYPE_PING);
    let mut back = MsgBuf::new(TYPE_PONG);
    let mut ns = Vec::with_capacity(iterations);
    for i in 0..warmup + iterations {
        let t = Instant::now();
        api.snd(id, &out, size)?;
        let n = api.rcv(id, &mut back, TYPE_PONG)?;
        let dt = t.elapsed();
        if n != size {
            return Err(err(format!("pong of {n} bytes, {size} sent")));
        }
        if i >= warmup {
            ns.push(dt.as_nanos() as u64);
        }
    }
    if back.text[..size] != out.text[..size] {
        return Err(err("pong text differs from the ping"));
    }
    Ok(ns)
}

fn send_stop(api: Api, id: c_int) -> io::Result<()> {
    let mut m = MsgBuf::new(TYPE_PING);
    m.text[0] = STOP;
    api.snd(id, &m, 1)
}

/// Removes a private queue when dropped (the parent's side only).
struct RawQueue(c_int);

impl Drop for RawQueue {
    fn drop(&mut self) {
        let _ = Api::Raw.rmid(self.0);
    }
}

/// Moves the forked partner to the CPU named by `DIPC_BENCH_PARTNER_CPU`
/// (tools/bench pins every ping side to one CPU and every pong side to the
/// other, so that each pair of figures is taken with the two processes on
/// different CPUs, as in the cost table of DESIGN.md).
fn pin_partner() -> io::Result<()> {
    let Ok(v) = std::env::var("DIPC_BENCH_PARTNER_CPU") else {
        return Ok(());
    };
    let cpu: usize = v
        .trim()
        .parse()
        .map_err(|_| err(format!("DIPC_BENCH_PARTNER_CPU={v:?} is not a CPU number")))?;
    // SAFETY: cpu_set_t is plain data; CPU_SET bounds-checks the index
    // against the set's size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(os_err("sched_setaffinity"));
        }
    }
    Ok(())
}

/// Forks the pong side of a raw ping-pong: pinned (see [`pin_partner`]),
/// under the time limit, running `pong`; returns its pid to the parent.
fn fork_partner(
    name: &str,
    limit: u32,
    pong: impl FnOnce() -> io::Result<()>,
) -> io::Result<libc::pid_t> {
    // Flush what the parent would otherwise print twice.
    io::stdout().flush()?;
    // SAFETY: this process is single-threaded; the child only makes
    // System V calls and leaves with _exit (no destructors, so it never
    // removes the parent's structures).
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(os_err("fork"));
    }
    if child == 0 {
        let code = match pin_partner()
            .and_then(|_| time_limit(limit, true))
            .and_then(|_| pong())
        {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("dipc-bench {name} (partner): {e}");
                1
            }
        };
        // SAFETY: leaving the forked child without running destructors.
        unsafe { libc::_exit(code) };
    }
    Ok(child)
}

fn sysv_pingpong(
    size: usize,
    iterations: usize,
    warmup: usize,
    limit: u32,
    label: &str,
) -> io::Result<()> {
    check_counts(size, MAX_TEXT, iterations)?;
    // SAFETY: msgget takes plain integers.
    let id = unsafe { libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600) };
    if id < 0 {
        return Err(os_err("msgget"));
    }
    let q = RawQueue(id);
    let child = fork_partner("sysv-pingpong", limit, || {
        pong_loop(Api::Raw, id).map(|_| ())
    })?;
    let run =
        time_limit(limit, true).and_then(|_| ping_loop(Api::Raw, id, size, warmup, iterations));
    let stopped = send_stop(Api::Raw, id);
    let mut status = 0;
    let waited = if run.is_ok() && stopped.is_ok() {
        // SAFETY: child is our child's pid; status is a valid out pointer.
        unsafe { libc::waitpid(child, &mut status, 0) }
    } else {
        // The partner may be stuck; removing the queue (below) and the
        // kill wake it.
        // SAFETY: plain signal to our own child.
        unsafe { libc::kill(child, libc::SIGKILL) };
        // SAFETY: as above.
        unsafe { libc::waitpid(child, &mut status, 0) }
    };
    drop(q);
    let ns = run?;
    stopped?;
    if waited < 0 {
        return Err(os_err("waitpid"));
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(err(format!("partner failed (wait status {status})")));
    }
    print_line(&summary(label, GROUP_MSG, Some(size), ns, json!({})))
}

fn msg_pong(key: i32, limit: u32) -> io::Result<()> {
    time_limit(limit, true)?;
    let flags = libc::IPC_CREAT | libc::IPC_EXCL | 0o600 | dipc::IPC_DIPC;
    let id = dipc::capi::dipc_msgget(key, flags);
    if id < 0 {
        return Err(os_err(&format!("msgget(key {key:#x}, IPC_DIPC)")));
    }
    if dipc::msg::is_remote(id) {
        let _ = Api::Dipc.rmid(id);
        return Err(err(format!(
            "queue {key:#x} is owned by another host; the pong must own it"
        )));
    }
    let served = pong_loop(Api::Dipc, id);
    let removed = Api::Dipc.rmid(id);
    served?;
    removed
}

#[allow(clippy::too_many_arguments)]
fn msg_ping(
    key: i32,
    size: usize,
    iterations: usize,
    warmup: usize,
    wait: u64,
    limit: u32,
    label: &str,
) -> io::Result<()> {
    check_counts(size, MAX_TEXT, iterations)?;
    time_limit(limit, false)?;
    let deadline = Instant::now() + Duration::from_secs(wait);
    let id = loop {
        let id = dipc::capi::dipc_msgget(key, 0o600 | dipc::IPC_DIPC);
        if id >= 0 {
            break id;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOENT) || Instant::now() >= deadline {
            return Err(err(format!("msgget(key {key:#x}, IPC_DIPC): {e}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let remote = dipc::msg::is_remote(id);
    let run = ping_loop(Api::Dipc, id, size, warmup, iterations);
    // Stop the pong even after a failed run, so that it removes the queue.
    let stopped = send_stop(Api::Dipc, id);
    let ns = run?;
    stopped?;
    print_line(&summary(
        label,
        GROUP_MSG,
        Some(size),
        ns,
        json!({ "remote": remote }),
    ))
}

// ---------------------------------------------------------------- semaphores

fn sembuf(num: u16, op: i16) -> libc::sembuf {
    libc::sembuf {
        sem_num: num,
        sem_op: op,
        sem_flg: 0,
    }
}

/// Whether a failed semop means the set is gone (removed by the other side).
fn set_removed(errno: c_int) -> bool {
    errno == libc::EIDRM || errno == libc::EINVAL
}

impl Api {
    /// One semop call; on failure, the errno.
    fn semop(self, id: c_int, op: &mut libc::sembuf) -> Result<(), c_int> {
        // SAFETY: op is one valid sembuf.
        let r = unsafe {
            match self {
                Api::Raw => libc::semop(id, op, 1),
                Api::Dipc => dipc::capi::dipc_semop(id, op, 1),
            }
        };
        if r < 0 {
            Err(io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO))
        } else {
            Ok(())
        }
    }

    fn sem_rmid(self, id: c_int) -> io::Result<()> {
        // SAFETY: IPC_RMID reads no fourth argument.
        let r = unsafe {
            match self {
                Api::Raw => libc::semctl(id, 0, libc::IPC_RMID),
                Api::Dipc => {
                    dipc::capi::dipc_semctl(id, 0, libc::IPC_RMID, dipc::capi::SemUn { val: 0 })
                }
            }
        };
        if r < 0 {
            Err(os_err("semctl(IPC_RMID)"))
        } else {
            Ok(())
        }
    }
}

fn semop_err(what: &str, errno: c_int) -> io::Error {
    let e = io::Error::from_raw_os_error(errno);
    io::Error::new(e.kind(), format!("semop({what}): {e}"))
}

/// Answers each `V(0)` with a `V(1)` until the set is removed; returns how
/// many pings it answered.
fn sem_pong_loop(api: Api, id: c_int) -> io::Result<u64> {
    let mut wait = sembuf(SEM_PING, -1);
    let mut post = sembuf(SEM_PONG, 1);
    let mut n = 0;
    loop {
        match api.semop(id, &mut wait) {
            Ok(()) => {}
            Err(e) if set_removed(e) => return Ok(n),
            Err(e) => return Err(semop_err("P(0)", e)),
        }
        api.semop(id, &mut post).map_err(|e| semop_err("V(1)", e))?;
        n += 1;
    }
}

/// Times `warmup + iterations` round trips `V(0)`, `P(1)`; returns the
/// measured ones (ns).
fn sem_ping_loop(api: Api, id: c_int, warmup: usize, iterations: usize) -> io::Result<Vec<u64>> {
    let mut post = sembuf(SEM_PING, 1);
    let mut wait = sembuf(SEM_PONG, -1);
    let mut ns = Vec::with_capacity(iterations);
    for i in 0..warmup + iterations {
        let t = Instant::now();
        api.semop(id, &mut post).map_err(|e| semop_err("V(0)", e))?;
        api.semop(id, &mut wait).map_err(|e| semop_err("P(1)", e))?;
        let dt = t.elapsed();
        if i >= warmup {
            ns.push(dt.as_nanos() as u64);
        }
    }
    Ok(ns)
}

fn check_iterations(iterations: usize) -> io::Result<()> {
    if iterations == 0 {
        return Err(err("--iterations must be at least 1"));
    }
    Ok(())
}

/// Whether the kernel object behind `id` on this host is not the set of
/// `key` itself (a dipc placeholder for a set another host owns).
fn sem_is_remote(id: c_int, key: i32) -> bool {
    // SAFETY: semid_ds is plain data, and IPC_STAT writes one there.
    unsafe {
        let mut ds: libc::semid_ds = std::mem::zeroed();
        let r = libc::semctl(id, 0, libc::IPC_STAT, &mut ds as *mut libc::semid_ds);
        r < 0 || ds.sem_perm.__key != key
    }
}

fn sem_pingpong(iterations: usize, warmup: usize, limit: u32, label: &str) -> io::Result<()> {
    check_iterations(iterations)?;
    // SAFETY: semget takes plain integers.
    let id = unsafe { libc::semget(libc::IPC_PRIVATE, SEMS, libc::IPC_CREAT | 0o600) };
    if id < 0 {
        return Err(os_err("semget"));
    }
    let child = match fork_partner("sem-pingpong", limit, || {
        sem_pong_loop(Api::Raw, id).map(|_| ())
    }) {
        Ok(c) => c,
        Err(e) => {
            let _ = Api::Raw.sem_rmid(id);
            return Err(e);
        }
    };
    let run = time_limit(limit, true).and_then(|_| sem_ping_loop(Api::Raw, id, warmup, iterations));
    // Removing the set stops the partner (EIDRM).
    let removed = Api::Raw.sem_rmid(id);
    if run.is_err() || removed.is_err() {
        // SAFETY: plain signal to our own child.
        unsafe { libc::kill(child, libc::SIGKILL) };
    }
    let mut status = 0;
    // SAFETY: child is our child's pid; status is a valid out pointer.
    let waited = unsafe { libc::waitpid(child, &mut status, 0) };
    let ns = run?;
    removed?;
    if waited < 0 {
        return Err(os_err("waitpid"));
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(err(format!("partner failed (wait status {status})")));
    }
    print_line(&summary(label, GROUP_SEM, None, ns, json!({})))
}

fn sem_pong(key: i32, limit: u32) -> io::Result<()> {
    time_limit(limit, true)?;
    let flags = libc::IPC_CREAT | libc::IPC_EXCL | 0o600 | dipc::IPC_DIPC;
    let id = dipc::capi::dipc_semget(key, SEMS, flags);
    if id < 0 {
        return Err(os_err(&format!("semget(key {key:#x}, IPC_DIPC)")));
    }
    if sem_is_remote(id, key) {
        let _ = Api::Dipc.sem_rmid(id);
        return Err(err(format!(
            "semaphore set {key:#x} is owned by another host; the pong must own it"
        )));
    }
    match sem_pong_loop(Api::Dipc, id) {
        Ok(_) => Ok(()),
        Err(e) => {
            // Stopped by a failure (or the time limit): do not leave the
            // set behind.
            let _ = Api::Dipc.sem_rmid(id);
            Err(e)
        }
    }
}

fn sem_ping(
    key: i32,
    iterations: usize,
    warmup: usize,
    wait: u64,
    limit: u32,
    label: &str,
) -> io::Result<()> {
    check_iterations(iterations)?;
    time_limit(limit, false)?;
    let deadline = Instant::now() + Duration::from_secs(wait);
    let id = loop {
        let id = dipc::capi::dipc_semget(key, SEMS, 0o600 | dipc::IPC_DIPC);
        if id >= 0 {
            break id;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOENT) || Instant::now() >= deadline {
            return Err(err(format!("semget(key {key:#x}, IPC_DIPC): {e}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let remote = sem_is_remote(id, key);
    let run = sem_ping_loop(Api::Dipc, id, warmup, iterations);
    // Removing the set stops the pong, after a failed run too.
    let removed = Api::Dipc.sem_rmid(id);
    let ns = run?;
    removed?;
    print_line(&summary(
        label,
        GROUP_SEM,
        None,
        ns,
        json!({ "remote": remote }),
    ))
}

// ---------------------------------------------------------------- process ids

fn io_errno(what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Registers and writes the pid_d to `path` (atomically: the reader never
/// sees half a number).
fn publish_pid(path: &std::path::Path) -> io::Result<dipc::pid::PidD> {
    let me = dipc::pid::regist().map_err(|e| io_errno("regist", e))?;
    // Appended, not a changed extension: `F` and `F.ping` must not share
    // a temporary file.
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, format!("{me}\n"))?;
    std::fs::rename(&tmp, path)?;
    Ok(me)
}

/// The pid_d in `path`, waiting up to `wait` for the file.
fn read_pid(path: &std::path::Path, wait: Duration) -> io::Result<dipc::pid::PidD> {
    let deadline = Instant::now() + wait;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text
                .trim()
                .parse()
                .map_err(|_| err(format!("{}: not a pid_d: {text:?}", path.display())));
        }
        if Instant::now() >= deadline {
            return Err(err(format!("{} did not appear", path.display())));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn ping_file(id_file: &std::path::Path) -> std::path::PathBuf {
    let mut p = id_file.as_os_str().to_owned();
    p.push(".ping");
    p.into()
}

/// The benchmark's signals, all real-time (queued, never merged).
struct BenchSignals {
    /// Answered with one back.
    ping: c_int,
    /// Only counted.
    count: c_int,
    stop: c_int,
    set: libc::sigset_t,
}

/// Blocks the benchmark's signals so that `sigwaitinfo` takes them (a
/// blocked real-time signal waits queued; none is lost before the wait
/// starts).
fn bench_signals() -> io::Result<BenchSignals> {
    // SAFETY: SIGRTMIN is a plain libc call; the sigset is initialised
    // by sigemptyset before use.
    unsafe {
        let ping = libc::SIGRTMIN() + 1;
        let stop = libc::SIGRTMIN() + 2;
        let count = libc::SIGRTMIN() + 3;
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [ping, stop, count] {
            libc::sigaddset(&mut set, s);
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(os_err("pthread_sigmask"));
        }
        Ok(BenchSignals {
            ping,
            count,
            stop,
            set,
        })
    }
}

/// Waits for one of the signals in `set`; returns its number.
fn wait_signal(set: &libc::sigset_t) -> io::Result<c_int> {
    loop {
        // SAFETY: set is a valid sigset; no siginfo wanted.
        let s = unsafe { libc::sigwaitinfo(set, std::ptr::null_mut()) };
        if s >= 0 {
            return Ok(s);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(io_errno("sigwaitinfo", e));
        }
    }
}

fn sig_pong(id_file: &std::path::Path, limit: u32) -> io::Result<()> {
    time_limit(limit, false)?;
    let sigs = bench_signals()?;
    publish_pid(id_file)?;
    let peer = read_pid(&ping_file(id_file), Duration::from_secs(limit as u64))?;
    let mut counted = 0u64;
    loop {
        let s = wait_signal(&sigs.set)?;
        if s == sigs.stop {
            eprintln!("dipc-bench sig-pong: {counted} counted signals");
            return Ok(());
        }
        if s == sigs.count {
            counted += 1;
        } else if s == sigs.ping {
            dipc::pid::kill_d(peer, sigs.ping).map_err(|e| io_errno("kill_d back", e))?;
        }
    }
}

fn sig_ping(
    id_file: &std::path::Path,
    iterations: usize,
    warmup: usize,
    wait: u64,
    limit: u32,
) -> io::Result<()> {
    check_iterations(iterations)?;
    time_limit(limit, false)?;
    let sigs = bench_signals()?;
    publish_pid(&ping_file(id_file))?;
    let peer = read_pid(id_file, Duration::from_secs(wait))?;
    let mut call = Vec::with_capacity(iterations);
    let mut round = Vec::with_capacity(iterations);
    let run = (|| {
        // Phase 1: the calls alone (the pong only counts these).
        for i in 0..warmup + iterations {
            let t = Instant::now();
            dipc::pid::kill_d(peer, sigs.count).map_err(|e| io_errno("kill_d", e))?;
            if i >= warmup {
                call.push(t.elapsed().as_nanos() as u64);
            }
        }
        // Phase 2: round trips.
        for i in 0..warmup + iterations {
            let t = Instant::now();
            dipc::pid::kill_d(peer, sigs.ping).map_err(|e| io_errno("kill_d", e))?;
            let got = wait_signal(&sigs.set)?;
            let back = t.elapsed();
            if got != sigs.ping {
                return Err(err(format!("signal {got} instead of {}", sigs.ping)));
            }
            if i >= warmup {
                round.push(back.as_nanos() as u64);
            }
        }
        Ok(())
    })();
    let stopped = dipc::pid::kill_d(peer, sigs.stop).map_err(|e| io_errno("kill_d(stop)", e));
    run?;
    stopped?;
    print_line(&summary("kill_call", GROUP_PID, None, call, json!({})))?;
    print_line(&summary(
        "kill_round_trip",
        GROUP_PID,
        None,
        round,
        json!({}),
    ))
}

fn mbox_pong(id_file: &std::path::Path, limit: u32) -> io::Result<()> {
    time_limit(limit, false)?;
    publish_pid(id_file)?;
    let peer = read_pid(&ping_file(id_file), Duration::from_secs(limit as u64))?;
    loop {
        let (_, text) =
            dipc::pid::receive(peer, MAX_TEXT, 0).map_err(|e| io_errno("dipc_receive", e))?;
        if text.first() == Some(&STOP) {
            return Ok(());
        }
        dipc::pid::send(peer, &text, 0).map_err(|e| io_errno("dipc_send", e))?;
    }
}

#[allow(clippy::too_many_arguments)]
fn mbox_ping(
    id_file: &std::path::Path,
    size: usize,
    iterations: usize,
    warmup: usize,
    wait: u64,
    limit: u32,
) -> io::Result<()> {
    check_counts(size, MAX_TEXT, iterations)?;
    time_limit(limit, false)?;
    publish_pid(&ping_file(id_file))?;
    let peer = read_pid(id_file, Duration::from_secs(wait))?;
    let out = vec![FILL; size];
    let mut ns = Vec::with_capacity(iterations);
    let run = (|| {
        for i in 0..warmup + iterations {
            let t = Instant::now();
            dipc::pid::send(peer, &out, 0).map_err(|e| io_errno("dipc_send", e))?;
            let (_, back) =
                dipc::pid::receive(peer, MAX_TEXT, 0).map_err(|e| io_errno("dipc_receive", e))?;
            let dt = t.elapsed();
            if back != out {
                return Err(err("pong text differs from the ping"));
            }
            if i >= warmup {
                ns.push(dt.as_nanos() as u64);
            }
        }
        Ok(())
    })();
    let stopped = dipc::pid::send(peer, &[STOP], 0).map_err(|e| io_errno("dipc_send(stop)", e));
    run?;
    stopped?;
    print_line(&summary(
        "mbox_round_trip",
        GROUP_PID,
        Some(size),
        ns,
        json!({}),
    ))
}

// ---------------------------------------------------------------- distributed processes

fn dproc_serve(id_file: &std::path::Path, limit: u32) -> io::Result<()> {
    use dipc::dprocs::{stop, Answer, Process};
    time_limit(limit, false)?;
    publish_pid(id_file)?;
    let calls = Process::new(0u64)
        .procedure("Null", |n, _| {
            *n += 1;
            Answer::Done(Vec::new())
        })
        .procedure("Stop", |_, _| {
            stop();
            Answer::Done(Vec::new())
        })
        .serve()
        .map_err(|e| io_errno("dipc_serve", e))?;
    eprintln!("dipc-bench dproc-serve: {calls} null calls served");
    Ok(())
}

/// One null call of `q`; an answer with output is a failure, since `Null`
/// returns none.
fn null_call(q: dipc::pid::PidD) -> io::Result<()> {
    let out = dipc::dprocs::call(q, "Null", &[], 0, Some(CALL_TIMEOUT))
        .map_err(|e| io_errno("dipc_call(Null)", e))?;
    if !out.is_empty() {
        return Err(err(format!("Null returned {} bytes", out.len())));
    }
    Ok(())
}

fn stop_server(q: dipc::pid::PidD) -> io::Result<()> {
    dipc::dprocs::call(q, "Stop", &[], 0, Some(CALL_TIMEOUT))
        .map(|_| ())
        .map_err(|e| io_errno("dipc_call(Stop)", e))
}

fn dproc_call(
    id_file: &std::path::Path,
    iterations: usize,
    warmup: usize,
    wait: u64,
    limit: u32,
    label: &str,
    send_label: Option<&str>,
) -> io::Result<()> {
    check_iterations(iterations)?;
    time_limit(limit, false)?;
    dipc::pid::regist().map_err(|e| io_errno("regist", e))?;
    let q = read_pid(id_file, Duration::from_secs(wait))?;
    let mut ns = Vec::with_capacity(iterations);
    let mut sends = Vec::new();
    let run = (|| -> io::Result<()> {
        for i in 0..warmup + iterations {
            let t = Instant::now();
            null_call(q)?;
            if i >= warmup {
                ns.push(t.elapsed().as_nanos() as u64);
            }
        }
        if send_label.is_some() {
            for i in 0..warmup + iterations {
                let t = Instant::now();
                dipc::pid::send(q, &[STOP], 0).map_err(|e| io_errno("dipc_send", e))?;
                if i >= warmup {
                    sends.push(t.elapsed().as_nanos() as u64);
                }
            }
        }
        Ok(())
    })();
    let stopped = stop_server(q);
    run?;
    stopped?;
    print_line(&summary(label, GROUP_DPROCS, None, ns, json!({})))?;
    match send_label {
        Some(l) => print_line(&summary(l, GROUP_DPROCS, None, sends, json!({}))),
        None => Ok(()),
    }
}

fn dproc_stop(id_file: &std::path::Path, wait: u64) -> io::Result<()> {
    dipc::pid::regist().map_err(|e| io_errno("regist", e))?;
    stop_server(read_pid(id_file, Duration::from_secs(wait))?)
}

fn unix_ms() -> io::Result<u64> {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .map_err(|_| err("the clock is before 1970"))
}

/// One caller of dproc-load: warms up, waits for the common start, and
/// counts the null calls that end within the window.
fn load_caller(
    id_file: &std::path::Path,
    start_at_ms: u64,
    duration_ms: u64,
    warmup: usize,
    wait: u64,
) -> io::Result<u64> {
    dipc::pid::regist().map_err(|e| io_errno("regist", e))?;
    let q = read_pid(id_file, Duration::from_secs(wait))?;
    for _ in 0..warmup {
        null_call(q)?;
    }
    let now = unix_ms()?;
    if now >= start_at_ms {
        return Err(err(format!(
            "warm-up ended {} ms after the start time; start later",
            now - start_at_ms
        )));
    }
    std::thread::sleep(Duration::from_millis(start_at_ms - now));
    let end = Instant::now() + Duration::from_millis(duration_ms);
    let mut calls = 0u64;
    loop {
        null_call(q)?;
        if Instant::now() > end {
            return Ok(calls);
        }
        calls += 1;
    }
}

#[allow(clippy::too_many_arguments)]
fn dproc_load(
    id_file: &std::path::Path,
    callers: usize,
    (start_at_ms, duration_ms): (u64, u64),
    warmup: usize,
    wait: u64,
    limit: u32,
    label: &str,
    host: u32,
) -> io::Result<()> {
    if callers == 0 || callers > MAX_CALLERS {
        return Err(err(format!(
            "--callers must be in 1..={MAX_CALLERS}, got {callers}"
        )));
    }
    if duration_ms == 0 || duration_ms > 600_000 {
        return Err(err("--duration-ms must be in 1..=600000"));
    }
    time_limit(limit, false)?;
    io::stdout().flush()?;
    let mut children = Vec::with_capacity(callers);
    for _ in 0..callers {
        let mut fds = [0 as c_int; 2];
        // SAFETY: fds is an array of two ints for pipe to fill.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return Err(os_err("pipe"));
        }
        // SAFETY: this process is single-threaded and has not used dipc
        // yet; the child leaves with _exit.
        let child = unsafe { libc::fork() };
        if child < 0 {
            return Err(os_err("fork"));
        }
        if child == 0 {
            // SAFETY: the read end is the parent's.
            unsafe { libc::close(fds[0]) };
            let code = match load_caller(id_file, start_at_ms, duration_ms, warmup, wait) {
                Ok(n) => {
                    let b = n.to_ne_bytes();
                    // SAFETY: writes 8 bytes from b to the pipe.
                    let w = unsafe { libc::write(fds[1], b.as_ptr() as *const c_void, b.len()) };
                    if w == b.len() as isize {
                        0
                    } else {
                        1
                    }
                }
                Err(e) => {
                    eprintln!("dipc-bench dproc-load (caller): {e}");
                    1
                }
            };
            // SAFETY: leaving the forked child without running destructors.
            unsafe { libc::_exit(code) };
        }
        // SAFETY: the write end is the child's.
        unsafe { libc::close(fds[1]) };
        children.push((child, fds[0]));
    }
    let mut total = 0u64;
    let mut per = Vec::with_capacity(callers);
    let mut failed = 0;
    for (child, fd) in children {
        let mut b = [0u8; 8];
        // SAFETY: reads at most 8 bytes into b; the child's exit closes
        // the pipe, so this returns.
        let n = unsafe { libc::read(fd, b.as_mut_ptr() as *mut c_void, b.len()) };
        // SAFETY: fd is ours, read from once.
        unsafe { libc::close(fd) };
        let mut status = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(child, &mut status, 0) };
        if n != 8 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            failed += 1;
            continue;
        }
        let c = u64::from_ne_bytes(b);
        per.push(c);
        total += c;
    }
    if failed > 0 {
        return Err(err(format!("{failed} of {callers} callers failed")));
    }
    print_line(&json!({
        "bench": label,
        "group": GROUP_DPROCS,
        "callers": callers,
        "calls": total,
        "per_host": [{ "host": host, "callers": callers, "calls": total }],
        "per_caller": per,
        "duration_ms": duration_ms,
        "calls_per_s": round3(total as f64 * 1000.0 / duration_ms as f64),
    }))
}

// ---------------------------------------------------------------- report

/// Benches of the report, in column order: (name, heading). The first
/// four make the main table; the last two, when present, the like-for-like
/// comparison of the spin (a remote call that sleeps at once, and a TCP
/// client that spins as long as the library does).
const BENCHES: [(&str, &str); 6] = [
    ("tcp", "raw TCP"),
    ("sysv", "raw SysV"),
    ("dipc_remote", "dipc remote"),
    ("dipc_local", "dipc owner-local"),
    ("dipc_remote_nospin", "remote, spin 0"),
    ("tcp_spin", "raw TCP spinning"),
];

fn median_of(v: Option<&Value>) -> Option<f64> {
    v?.get("median_us")?.as_f64()
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some((a / b * 100.0).round() / 100.0),
        _ => None,
    }
}

/// A report row: the `msg` group has a row per message size, any other
/// group (`sem`) one row. Rows of `msg` come first.
type RowKey = (bool, String, u64);

fn report(input: &str, as_json: bool) -> io::Result<()> {
    let reader: Box<dyn BufRead> = if input == "-" {
        Box::new(io::BufReader::new(io::stdin()))
    } else {
        Box::new(io::BufReader::new(
            std::fs::File::open(input).map_err(|e| err(format!("{input}: {e}")))?,
        ))
    };
    // row -> bench -> result
    let mut by_row: BTreeMap<RowKey, BTreeMap<String, Value>> = BTreeMap::new();
    // The process-id group: bench -> result.
    let mut pid_rows: BTreeMap<String, Value> = BTreeMap::new();
    // The distributed-process group: bench -> result (rounds pooled, the
    // load sides of every host summed).
    let mut dproc_rows: BTreeMap<String, Value> = BTreeMap::new();
    for (no, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line)
            .map_err(|e| err(format!("{input}:{}: not JSON: {e}", no + 1)))?;
        let Some(bench) = v.get("bench").and_then(Value::as_str) else {
            return Err(err(format!("{input}:{}: no bench", no + 1)));
        };
        let group = v.get("group").and_then(Value::as_str).unwrap_or(GROUP_MSG);
        if group == GROUP_PID {
            pid_rows.insert(bench.to_string(), v.clone());
            continue;
        }
        if group == GROUP_DPROCS {
            match dproc_rows.entry(bench.to_string()) {
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(v);
                }
                std::collections::btree_map::Entry::Occupied(mut e) => {
                    let r = if v.get("calls").is_some() {
                        add_load(e.get_mut(), &v)
                    } else {
                        merge_round(e.get_mut(), &v)
                    };
                    r.map_err(|e| err(format!("{input}:{}: {e}", no + 1)))?
                }
            }
            continue;
        }
        let key = if group == GROUP_MSG {
            let Some(size) = v.get("size").and_then(Value::as_u64) else {
                return Err(err(format!("{input}:{}: msg result without size", no + 1)));
            };
            (false, group.to_string(), size)
        } else {
            (true, group.to_string(), 0)
        };
        match by_row.entry(key).or_default().entry(bench.to_string()) {
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(v);
            }
            std::collections::btree_map::Entry::Occupied(mut e) => {
                merge_round(e.get_mut(), &v).map_err(|e| err(format!("{input}:{}: {e}", no + 1)))?
            }
        }
    }
    if by_row.is_empty() && pid_rows.is_empty() && dproc_rows.is_empty() {
        return Err(err(format!("{input}: no results")));
    }
    let pid = pid_summary(&pid_rows);
    let dprocs = dprocs_summary(&dproc_rows);
    // Round trips per figure and the rounds they were taken in, as the
    // first figure has them (every figure of a run has the same).
    let first = by_row.values().next().and_then(|b| b.values().next());
    let iterations = first.and_then(|v| v.get("count")).and_then(Value::as_u64);
    let rounds = first
        .and_then(|v| v.get("rounds"))
        .and_then(Value::as_u64)
        .unwrap_or(1);

    let mut rows = Vec::new();
    for ((_, group, size), benches) in &by_row {
        let mut row = serde_json::Map::new();
        row.insert("group".into(), json!(group));
        if group == GROUP_MSG {
            row.insert("size".into(), json!(size));
        }
        for (name, _) in BENCHES {
            if let Some(v) = benches.get(name) {
                let keys = [
                    "median_us",
                    "p99_us",
                    "min_us",
                    "count",
                    "rounds",
                    "size",
                    "remote",
                    "spin_us",
                ];
                row.insert(name.into(), Value::Object(pick(v, &keys)));
            }
        }
        let m = |n: &str| median_of(benches.get(n));
        row.insert(
            "ratio_remote_tcp".into(),
            json!(ratio(m("dipc_remote"), m("tcp"))),
        );
        row.insert(
            "ratio_local_sysv".into(),
            json!(ratio(m("dipc_local"), m("sysv"))),
        );
        row.insert(
            "ratio_remote_nospin_tcp".into(),
            json!(ratio(m("dipc_remote_nospin"), m("tcp"))),
        );
        row.insert(
            "ratio_remote_tcp_spin".into(),
            json!(ratio(m("dipc_remote"), m("tcp_spin"))),
        );
        rows.push(Value::Object(row));
    }

    if as_json {
        let v = json!({
            "iterations": iterations,
            "rounds": rounds,
            "unit": "us",
            "statistic": "median and p99 of round trips",
            "groups": {
                "msg": "message-queue ping-pong, a row per message size (bytes); \
                        tcp is a TCP ping-pong of the same size",
                "sem": "semaphore ping-pong: V(0),P(1) against P(0),V(1) on a set of \
                        two; tcp is a TCP ping-pong of tcp.size bytes",
                "spin": "dipc_remote spins up to tcp_spin.spin_us for each reply before \
                         sleeping (library.spin_us); dipc_remote_nospin sleeps at once; \
                         tcp_spin is the TCP ping-pong spinning as long",
            },
            "targets": { "ratio_remote_tcp": "<= 2.5", "ratio_local_sysv": "<= 1.1" },
            "results": rows,
            "pid": pid,
            "dprocs": dprocs,
        });
        return print_line(&v);
    }

    let cell = |row: &Value, name: &str| cell_of(row.get(name));
    let rat = |row: &Value, k: &str| {
        row.get(k)
            .and_then(Value::as_f64)
            .map_or("-".to_string(), |x| format!("{x:.2}"))
    };
    let mut out = io::stdout().lock();
    if !rows.is_empty() {
        writeln!(
            out,
            "round trips in µs, median / p99 of {} after warm-up, in {rounds} interleaved round{}",
            iterations.map_or("?".to_string(), |n| n.to_string()),
            if rounds == 1 { "" } else { "s" }
        )?;
        writeln!(
            out,
            "{:>6}  {:>17}  {:>17}  {:>17}  {:>13}  {:>17}  {:>12}",
            "size",
            BENCHES[0].1,
            BENCHES[1].1,
            BENCHES[2].1,
            "remote/TCP",
            BENCHES[3].1,
            "local/SysV"
        )?;
        writeln!(
            out,
            "{:>6}  {:>17}  {:>17}  {:>17}  {:>13}  {:>17}  {:>12}",
            "",
            "host1<->host2",
            "host 2",
            "host1->owner h2",
            "(target<=2.5)",
            "host 2",
            "(target<=1.1)"
        )?;
        let mut notes = Vec::new();
        for row in &rows {
            let group = row.get("group").and_then(Value::as_str).unwrap_or("?");
            let first = if group == GROUP_MSG {
                let size = row.get("size").and_then(Value::as_u64).unwrap_or(0);
                format!("{size} B")
            } else {
                let tcp = row
                    .get("tcp")
                    .and_then(|t| t.get("size"))
                    .and_then(Value::as_u64)
                    .map_or("no".to_string(), |n| format!("a {n} B"));
                notes.push(format!(
                    "{group}: one round trip is semop V(0) then P(1) against P(0) then V(1); \
                     its raw TCP is {tcp} TCP ping-pong measured in this run"
                ));
                group.to_string()
            };
            writeln!(
                out,
                "{:>6}  {:>17}  {:>17}  {:>17}  {:>13}  {:>17}  {:>12}",
                first,
                cell(row, "tcp"),
                cell(row, "sysv"),
                cell(row, "dipc_remote"),
                rat(row, "ratio_remote_tcp"),
                cell(row, "dipc_local"),
                rat(row, "ratio_local_sysv")
            )?;
        }
        for n in notes {
            writeln!(out, "{n}")?;
        }
        if rows
            .iter()
            .any(|r| r.get("dipc_remote_nospin").is_some() || r.get("tcp_spin").is_some())
        {
            write_spin_report(&mut out, &rows, &cell, &rat)?;
        }
    }
    if !pid_rows.is_empty() {
        write_pid_report(&mut out, &pid)?;
    }
    if !dproc_rows.is_empty() {
        write_dprocs_report(&mut out, &dprocs)?;
    }
    out.flush()
}

/// The like-for-like comparison of the library's spin: dipc remote sleeping
/// at once against raw TCP (both sleep), and dipc remote spinning against
/// a TCP client that spins as long (both spin).
fn write_spin_report(
    out: &mut impl Write,
    rows: &[Value],
    cell: &dyn Fn(&Value, &str) -> String,
    rat: &dyn Fn(&Value, &str) -> String,
) -> io::Result<()> {
    let spin = rows
        .iter()
        .find_map(|r| r.get("tcp_spin")?.get("spin_us")?.as_u64())
        .map_or("?".to_string(), |n| n.to_string());
    writeln!(out)?;
    writeln!(
        out,
        "dipc remote above spins up to {spin} µs for each reply before it sleeps \
         (library.spin_us); like for like:"
    )?;
    writeln!(
        out,
        "{:>6}  {:>17}  {:>13}  {:>17}  {:>17}  {:>13}",
        "size", "dipc remote", "vs raw TCP", "raw TCP", "dipc remote", "vs raw TCP"
    )?;
    writeln!(
        out,
        "{:>6}  {:>17}  {:>13}  {:>17}  {:>17}  {:>13}",
        "",
        "spin 0 (sleeps)",
        "(both sleep)",
        format!("spin {spin} µs"),
        format!("spin {spin} µs"),
        "(both spin)"
    )?;
    for row in rows {
        let group = row.get("group").and_then(Value::as_str).unwrap_or("?");
        let first = if group == GROUP_MSG {
            let size = row.get("size").and_then(Value::as_u64).unwrap_or(0);
            format!("{size} B")
        } else {
            group.to_string()
        };
        writeln!(
            out,
            "{:>6}  {:>17}  {:>13}  {:>17}  {:>17}  {:>13}",
            first,
            cell(row, "dipc_remote_nospin"),
            rat(row, "ratio_remote_nospin_tcp"),
            cell(row, "tcp_spin"),
            cell(row, "dipc_remote"),
            rat(row, "ratio_remote_tcp_spin")
        )?;
    }
    Ok(())
}

/// The process-id results with their ratios: the kill_d call against the
/// original DIPC's 30 ms per signal, the send/receive round trip against
/// the raw TCP round trip between the same hosts (`tcp` in this group).
fn pid_summary(rows: &BTreeMap<String, Value>) -> Value {
    let mut o = serde_json::Map::new();
    for (k, v) in rows {
        let keys = ["median_us", "p99_us", "min_us", "count", "size"];
        o.insert(k.clone(), Value::Object(pick(v, &keys)));
    }
    let m = |n: &str| median_of(rows.get(n));
    o.insert(
        "speedup_kill_call_vs_original_30ms".into(),
        json!(m("kill_call").map(|x| (ORIGINAL_KILL_US / x).round())),
    );
    o.insert(
        "kill_one_way_us".into(),
        json!(m("kill_round_trip").map(|x| round3(x / 2.0))),
    );
    o.insert(
        "speedup_one_way_vs_original_30ms".into(),
        json!(m("kill_round_trip").map(|x| (ORIGINAL_KILL_US / (x / 2.0)).round())),
    );
    o.insert(
        "ratio_mbox_tcp".into(),
        json!(ratio(m("mbox_round_trip"), m("tcp"))),
    );
    Value::Object(o)
}

fn write_pid_report(out: &mut impl Write, pid: &Value) -> io::Result<()> {
    let cell = |name: &str| cell_of(pid.get(name));
    let num = |k: &str, digits: usize| {
        pid.get(k)
            .and_then(Value::as_f64)
            .map_or("-".to_string(), |x| format!("{x:.digits$}"))
    };
    writeln!(out)?;
    writeln!(
        out,
        "process ids, host 1 -> host 2, µs median / p99 (same iterations)"
    )?;
    writeln!(
        out,
        "  kill_d call (returns once the signal is queued at the target) {:>17}   \
         original DIPC ~30 ms per signal: {}x faster",
        cell("kill_call"),
        num("speedup_kill_call_vs_original_30ms", 0)
    )?;
    writeln!(
        out,
        "  signal ping-pong (kill_d there, kill_d back), round trip      {:>17}   \
         one way {} µs: {}x faster than 30 ms",
        cell("kill_round_trip"),
        num("kill_one_way_us", 1),
        num("speedup_one_way_vs_original_30ms", 0)
    )?;
    writeln!(
        out,
        "  dipc_send/dipc_receive ping-pong, round trip                  {:>17}   \
         vs raw TCP: {}",
        cell("mbox_round_trip"),
        num("ratio_mbox_tcp", 2)
    )?;
    writeln!(
        out,
        "  raw TCP ping-pong between the same hosts, round trip          {:>17}",
        cell("tcp")
    )
}

/// Adds another host's load side to `into`: the calls of both were made in
/// the same window, so they add up.
fn add_load(into: &mut Value, other: &Value) -> io::Result<()> {
    let num = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_u64)
            .ok_or_else(|| err(format!("a load result without {k}")))
    };
    if num(into, "duration_ms")? != num(other, "duration_ms")? {
        return Err(err("load results of different windows"));
    }
    let calls = num(into, "calls")? + num(other, "calls")?;
    let callers = num(into, "callers")? + num(other, "callers")?;
    let ms = num(into, "duration_ms")?;
    let mut per: Vec<Value> = Vec::new();
    for v in [&*into, other] {
        per.extend(
            v.get("per_caller")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        );
    }
    let mut hosts: Vec<Value> = Vec::new();
    for v in [&*into, other] {
        hosts.extend(
            v.get("per_host")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        );
    }
    if let Some(o) = into.as_object_mut() {
        o.insert("calls".into(), json!(calls));
        o.insert("callers".into(), json!(callers));
        o.insert("per_caller".into(), json!(per));
        o.insert("per_host".into(), json!(hosts));
        o.insert(
            "calls_per_s".into(),
            json!(round3(calls as f64 * 1000.0 / ms.max(1) as f64)),
        );
    }
    Ok(())
}

/// The distributed-process results with their ratios to the raw TCP
/// ping-pong between the same hosts, like for like: the null call as the
/// library makes it (the caller spins for its reply first, the serving
/// process for the next call) against a TCP client and server that spin
/// as long, and one that sleeps at once against plain TCP.
fn dprocs_summary(rows: &BTreeMap<String, Value>) -> Value {
    let mut o = serde_json::Map::new();
    for (k, v) in rows {
        let keys = [
            "median_us",
            "p99_us",
            "min_us",
            "count",
            "rounds",
            "size",
            "spin_us",
            "callers",
            "calls",
            "per_host",
            "duration_ms",
            "calls_per_s",
        ];
        o.insert(k.clone(), Value::Object(pick(v, &keys)));
    }
    let m = |n: &str| median_of(rows.get(n));
    for (name, a, b) in [
        ("ratio_call_tcp_spin", "dproc_call", "tcp_spin"),
        ("ratio_call_nospin_tcp", "dproc_call_nospin", "tcp"),
        ("ratio_call_tcp", "dproc_call", "tcp"),
        ("ratio_send_tcp_spin", "dproc_send", "tcp_spin"),
    ] {
        o.insert(name.into(), json!(ratio(m(a), m(b))));
    }
    o.insert("target_ratio".into(), json!(1.5));
    Value::Object(o)
}

fn write_dprocs_report(out: &mut impl Write, d: &Value) -> io::Result<()> {
    let cell = |name: &str| cell_of(d.get(name));
    let num = |k: &str| {
        d.get(k)
            .and_then(Value::as_f64)
            .map_or("-".to_string(), |x| format!("{x:.2}"))
    };
    let spin = d
        .get("tcp_spin")
        .and_then(|t| t.get("spin_us"))
        .and_then(Value::as_u64)
        .map_or("?".to_string(), |n| n.to_string());
    let n = d
        .get("dproc_call")
        .and_then(|t| t.get("count"))
        .and_then(Value::as_u64)
        .map_or("?".to_string(), |n| n.to_string());
    writeln!(out)?;
    writeln!(
        out,
        "distributed processes, caller on host 1, process on host 2: null call \
         (dipc_call, nothing in or out), round trip µs median / p99 of {n}"
    )?;
    writeln!(
        out,
        "  both spin:  null call (library)           {:>17}   raw TCP, both spinning {spin} µs {:>17}   \
         ratio {} (target <= 1.5)",
        cell("dproc_call"),
        cell("tcp_spin"),
        num("ratio_call_tcp_spin")
    )?;
    writeln!(
        out,
        "  both sleep: null call, spin 0             {:>17}   raw TCP                 {:>17}   \
         ratio {} (target <= 1.5)",
        cell("dproc_call_nospin"),
        cell("tcp"),
        num("ratio_call_nospin_tcp")
    )?;
    writeln!(
        out,
        "  null call (library) against raw TCP sleeping: {}",
        num("ratio_call_tcp")
    )?;
    if d.get("dproc_send").is_some() {
        writeln!(
            out,
            "  for comparison, one remote dipc_send host 1 -> host 2 (request and the worker's answer) \
             {:>17}",
            cell("dproc_send"),
        )?;
    }
    if let Some(l) = d.get("dproc_load") {
        let g = |k: &str| l.get(k).map_or("?".to_string(), |x| x.to_string());
        let hosts: Vec<String> = l
            .get("per_host")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|h| {
                        let f = |k: &str| h.get(k).map_or("?".to_string(), |x| x.to_string());
                        format!(
                            "host {}: {} callers, {} calls",
                            f("host"),
                            f("callers"),
                            f("calls")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        writeln!(
            out,
            "  load: {} callers into one process on host 2 for {} ms ({}): {} calls/s",
            g("callers"),
            g("duration_ms"),
            hosts.join("; "),
            l.get("calls_per_s")
                .and_then(Value::as_f64)
                .map_or("?".to_string(), |x| format!("{x:.0}"))
        )?;
    }
    Ok(())
}

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

fn plot(input: &str, out: &std::path::Path) -> io::Result<()> {
    let reader: Box<dyn BufRead> = if input == "-" {
        Box::new(io::BufReader::new(io::stdin()))
    } else {
        Box::new(io::BufReader::new(
            std::fs::File::open(input).map_err(|e| err(format!("{input}: {e}")))?,
        ))
    };
    let figures = dipc_tools::plot::figures(reader, input)?;
    if figures.is_empty() {
        return Err(err(format!("{input}: no round trips to plot")));
    }
    std::fs::create_dir_all(out).map_err(|e| err(format!("{}: {e}", out.display())))?;
    for f in &figures {
        let path = dipc_tools::plot::write_svg(f, out).map_err(err)?;
        // stderr: what the bench prints on stdout stays the report.
        eprintln!("dipc-bench: wrote {}", path.display());
    }
    Ok(())
}

/// The preload part's figures, a row per (kind, size): `sysv` (the plain
/// program, no preload), `preload_local` (the same program with the
/// preload, the structure distributed and owned by its host),
/// `preload_remote` and `direct_remote` (ping on host 1 with the preload,
/// or the same source calling libdipc directly, against the owner host 2).
fn preload_report(input: &str, as_json: bool) -> io::Result<()> {
    /// More round trips than any run takes; bounds what a line may add.
    const MAX_SAMPLES: usize = 10_000_000;
    let reader: Box<dyn BufRead> = if input == "-" {
        Box::new(io::BufReader::new(io::stdin()))
    } else {
        Box::new(io::BufReader::new(
            std::fs::File::open(input).map_err(|e| err(format!("{input}: {e}")))?,
        ))
    };
    // (kind, size) -> bench -> pooled round trips
    let mut rows: BTreeMap<(String, u64), BTreeMap<String, Vec<u64>>> = BTreeMap::new();
    let mut total = 0usize;
    for (no, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let at = |what: &str| err(format!("{input}:{}: {what}", no + 1));
        let v: Value = serde_json::from_str(&line).map_err(|e| at(&format!("not JSON: {e}")))?;
        let field = |f: &str| v.get(f).ok_or_else(|| at(&format!("no {f}")));
        let bench = field("bench")?
            .as_str()
            .ok_or_else(|| at("bench is not a string"))?;
        let kind = field("kind")?
            .as_str()
            .ok_or_else(|| at("kind is not a string"))?;
        let size = field("size")?
            .as_u64()
            .ok_or_else(|| at("size is not a number"))?;
        let samples = field("samples_ns")?
            .as_array()
            .ok_or_else(|| at("samples_ns is not an array"))?;
        total += samples.len();
        if total > MAX_SAMPLES {
            return Err(at(&format!("more than {MAX_SAMPLES} round trips")));
        }
        let into = rows
            .entry((kind.to_string(), size))
            .or_default()
            .entry(bench.to_string())
            .or_default();
        for x in samples {
            into.push(x.as_u64().ok_or_else(|| at("a sample is not a number"))?);
        }
    }
    if rows.is_empty() {
        return Err(err(format!("{input}: no results")));
    }
    const BENCHES: [&str; 4] = ["sysv", "preload_local", "direct_remote", "preload_remote"];
    let mut out = Vec::new();
    for ((kind, size), benches) in &mut rows {
        let mut row = serde_json::Map::new();
        row.insert("kind".into(), json!(kind));
        if kind == "msg" {
            row.insert("size".into(), json!(size));
        }
        let mut medians = BTreeMap::new();
        for name in BENCHES {
            if let Some(ns) = benches.get_mut(name) {
                ns.sort_unstable();
                let st = stats(ns);
                if let Some(m) = st.get("median_us").and_then(Value::as_f64) {
                    medians.insert(name, m);
                }
                row.insert(name.into(), Value::Object(st));
            }
        }
        let ratio3 = |a: &str, b: &str| match (medians.get(a), medians.get(b)) {
            (Some(a), Some(b)) if *b > 0.0 => Some(round3(a / b)),
            _ => None,
        };
        row.insert(
            "ratio_local_sysv".into(),
            json!(ratio3("preload_local", "sysv")),
        );
        row.insert(
            "ratio_remote_direct".into(),
            json!(ratio3("preload_remote", "direct_remote")),
        );
        out.push(Value::Object(row));
    }
    if as_json {
        let v = json!({
            "unit": "us",
            "statistic": "median and p99 of round trips, every round pooled",
            "targets": { "ratio_local_sysv": "<= 1.05", "ratio_remote_direct": "<= 1.02" },
            "rows": out,
        });
        println!("{v}");
        return Ok(());
    }
    println!("preload: median (p99) round trip in us; ratios of medians");
    println!(
        "{:<9} {:>18} {:>18} {:>10} {:>18} {:>18} {:>10}",
        "row",
        "raw sysv",
        "preload local",
        "local/raw",
        "libdipc remote",
        "preload remote",
        "pre/dipc"
    );
    for r in &out {
        let name = match (r.get("kind").and_then(Value::as_str), r.get("size")) {
            (Some(k), Some(size)) => format!("{k} {size}B"),
            (Some(k), None) => k.to_string(),
            _ => "?".into(),
        };
        let fig = |b: &str| match (
            r.get(b)
                .and_then(|x| x.get("median_us"))
                .and_then(Value::as_f64),
            r.get(b)
                .and_then(|x| x.get("p99_us"))
                .and_then(Value::as_f64),
        ) {
            (Some(m), Some(p)) => format!("{m:.2} ({p:.2})"),
            _ => "-".into(),
        };
        let rat = |k: &str| {
            r.get(k)
                .and_then(Value::as_f64)
                .map_or("-".into(), |x| format!("{x:.3}"))
        };
        println!(
            "{:<9} {:>18} {:>18} {:>10} {:>18} {:>18} {:>10}",
            name,
            fig("sysv"),
            fig("preload_local"),
            rat("ratio_local_sysv"),
            fig("direct_remote"),
            fig("preload_remote"),
            rat("ratio_remote_direct")
        );
    }
    println!("targets: local/raw <= 1.05, pre/dipc <= 1.02");
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("dipc-bench: {e}");
        std::process::exit(1);
    }
}
