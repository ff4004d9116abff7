//! `dipc-migrate-bench`: the migration part of `tools/bench`.
//!
//! - `mover --bytes N --moves K --hosts A,B --out FILE`: a migratable
//!   process with N bytes of state (a checked pattern) moves K times,
//!   alternately to B and A. Its state carries the wall-clock time at which
//!   `save` ran (the safe point, with the mailbox frozen); each restored
//!   process takes the time from then to its restore as the move's
//!   *frozen time*. The last appends one JSON line to FILE:
//!   `{"label":"migrate","bytes":N,"samples_us":[...]}`.
//! - `noop`: exits at once (the program `spawn-floor` starts).
//! - `spawn-floor --count C`: the time from `fork` to the exit of an
//!   `exec`ed `noop` of this same program (the start of the program on a
//!   host, the first part of a move's floor); one JSON line.
//! - `tcp-sink --bind IP --port P` / `tcp-send --addr IP:P --bytes N
//!   --count C`: raw TCP bulk transfer of N bytes (a length word, the
//!   bytes, a one-byte answer) C times; one JSON line with the times.
//! - `report --input FILE`: the table: per state size, the median frozen
//!   time, the floor (program start + the bytes at the raw TCP time for
//!   them), and their ratio.
//!
//! Every wall-clock time between hosts is `CLOCK_REALTIME` of the one
//! machine that plays all the hosts.

use clap::{Parser, Subcommand};
use dipc::migrate;
use serde_json::{json, Value};
use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Parser)]
#[command(
    name = "dipc-migrate-bench",
    about = "dipc process migration benchmark"
)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// A process that moves MOVES times with BYTES of state
    Mover {
        #[arg(long)]
        bytes: usize,
        #[arg(long)]
        moves: u32,
        /// Two hosts' addresses, A,B: it moves to B, A, B, ...
        #[arg(long)]
        hosts: String,
        #[arg(long)]
        out: String,
    },
    /// Exit at once
    Noop,
    /// Time fork + exec + exit of `noop`
    SpawnFloor {
        #[arg(long, default_value_t = 20)]
        count: usize,
    },
    /// Receive bulk transfers
    TcpSink {
        #[arg(long)]
        bind: String,
        #[arg(long)]
        port: u16,
    },
    /// Time bulk transfers of BYTES
    TcpSend {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long)]
        bytes: usize,
        #[arg(long, default_value_t = 5)]
        count: usize,
    },
    /// Print the table from the JSON lines of the other commands
    Report {
        #[arg(long)]
        input: String,
    },
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The mover's state: moves done, the frozen times measured so far, the
/// time `save` ran, and the payload.
struct State {
    moves: u32,
    samples: Vec<u64>,
    saved_at: u64,
    payload: Vec<u8>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

fn encode(s: &State) -> Vec<u8> {
    let mut b = Vec::with_capacity(20 + 8 * s.samples.len() + s.payload.len());
    b.extend_from_slice(&s.moves.to_be_bytes());
    b.extend_from_slice(&(s.samples.len() as u32).to_be_bytes());
    for x in &s.samples {
        b.extend_from_slice(&x.to_be_bytes());
    }
    b.extend_from_slice(&now_ns().to_be_bytes());
    b.extend_from_slice(&s.payload);
    b
}

fn decode(b: &[u8]) -> Option<State> {
    let u32_at =
        |i: usize| -> Option<u32> { Some(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?)) };
    let u64_at =
        |i: usize| -> Option<u64> { Some(u64::from_be_bytes(b.get(i..i + 8)?.try_into().ok()?)) };
    let moves = u32_at(0)?;
    let n = u32_at(4)? as usize;
    if n > 1_000_000 {
        return None;
    }
    let mut samples = Vec::with_capacity(n);
    for k in 0..n {
        samples.push(u64_at(8 + 8 * k)?);
    }
    let at = 8 + 8 * n;
    Some(State {
        moves,
        samples,
        saved_at: u64_at(at)?,
        payload: b.get(at + 8..)?.to_vec(),
    })
}

fn mover(bytes: usize, moves: u32, hosts: &str, out: &str) -> Result<(), String> {
    let hosts: Vec<SocketAddr> = hosts
        .split(',')
        .map(|h| migrate::parse_host(h).map_err(|e| format!("host {h:?}: {e}")))
        .collect::<Result<_, _>>()?;
    if hosts.len() != 2 {
        return Err("--hosts takes two addresses".into());
    }
    let restored = migrate::migratable(
        || {
            let g = STATE.lock().unwrap_or_else(|p| p.into_inner());
            g.as_ref().map(encode).unwrap_or_default()
        },
        |b: &[u8]| {
            let resumed = now_ns();
            let mut s = decode(b);
            if let Some(s) = s.as_mut() {
                s.samples.push(resumed.saturating_sub(s.saved_at) / 1000);
            }
            *STATE.lock().unwrap_or_else(|p| p.into_inner()) = s;
        },
    )
    .map_err(|e| format!("migratable: {e}"))?;
    {
        let mut g = STATE.lock().unwrap_or_else(|p| p.into_inner());
        if !restored {
            *g = Some(State {
                moves: 0,
                samples: Vec::new(),
                saved_at: 0,
                payload: pattern(bytes),
            });
        }
        let s = g.as_ref().ok_or("the state did not arrive whole")?;
        if s.payload != pattern(bytes) {
            return Err("the state's bytes changed on the way".into());
        }
    }
    // Each process makes one move (a successful one exits it); the one
    // that finds all moves done reports.
    let (done, samples) = {
        let g = STATE.lock().unwrap_or_else(|p| p.into_inner());
        let s = g.as_ref().ok_or("no state")?;
        (s.moves, s.samples.clone())
    };
    if done >= moves {
        let line = json!({ "label": "migrate", "bytes": bytes, "samples_us": samples });
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(out)
            .map_err(|e| format!("{out}: {e}"))?;
        writeln!(f, "{line}").map_err(|e| format!("{out}: {e}"))?;
        return Ok(());
    }
    if let Some(s) = STATE.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
        s.moves += 1;
    }
    let to = hosts[(done as usize + 1) % 2];
    let Err(e) = migrate::migrate(to);
    Err(format!("move {} to {to}: {e}", done + 1))
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn spawn_floor(count: usize) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut times = Vec::new();
    for _ in 0..count.max(1) {
        let t = Instant::now();
        let st = std::process::Command::new(&exe)
            .arg("noop")
            .status()
            .map_err(|e| format!("{}: {e}", exe.display()))?;
        if !st.success() {
            return Err(format!("noop: {st}"));
        }
        times.push(t.elapsed().as_micros() as u64);
    }
    let m = median(&mut times);
    println!(
        "{}",
        json!({ "label": "spawn", "median_us": m, "samples_us": times })
    );
    Ok(())
}

fn tcp_sink(bind: &str, port: u16) -> Result<(), String> {
    let l = TcpListener::bind((bind, port)).map_err(|e| format!("bind {bind}:{port}: {e}"))?;
    let (mut s, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let mut len = [0u8; 8];
        match s.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(format!("read: {e}")),
        }
        let mut left = u64::from_be_bytes(len);
        while left > 0 {
            let n = (left as usize).min(buf.len());
            s.read_exact(&mut buf[..n])
                .map_err(|e| format!("read: {e}"))?;
            left -= n as u64;
        }
        s.write_all(&[1]).map_err(|e| format!("write: {e}"))?;
    }
}

fn tcp_send(addr: SocketAddr, bytes: usize, count: usize) -> Result<(), String> {
    let mut s = None;
    for _ in 0..100 {
        if let Ok(c) = TcpStream::connect(addr) {
            s = Some(c);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut s = s.ok_or_else(|| format!("cannot connect to {addr}"))?;
    let _ = s.set_nodelay(true);
    let data = pattern(bytes);
    let mut times = Vec::new();
    for _ in 0..count.max(1) {
        let t = Instant::now();
        s.write_all(&(bytes as u64).to_be_bytes())
            .and_then(|()| s.write_all(&data))
            .map_err(|e| format!("write: {e}"))?;
        let mut a = [0u8; 1];
        s.read_exact(&mut a).map_err(|e| format!("read: {e}"))?;
        times.push(t.elapsed().as_micros() as u64);
    }
    let m = median(&mut times);
    println!(
        "{}",
        json!({ "label": "tcp-bulk", "bytes": bytes, "median_us": m, "samples_us": times })
    );
    Ok(())
}

fn report(input: &str) -> Result<(), String> {
    let f = std::fs::File::open(input).map_err(|e| format!("{input}: {e}"))?;
    let mut spawn = None;
    let mut tcp = std::collections::BTreeMap::new();
    let mut moves = std::collections::BTreeMap::new();
    for line in io::BufReader::new(f).lines() {
        let line = line.map_err(|e| e.to_string())?;
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let bytes = v["bytes"].as_u64().unwrap_or(0);
        let samples: Vec<u64> = v["samples_us"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        match v["label"].as_str() {
            Some("spawn") => spawn = v["median_us"].as_u64(),
            Some("tcp-bulk") => {
                tcp.insert(bytes, v["median_us"].as_u64().unwrap_or(0));
            }
            Some("migrate") => {
                moves.insert(bytes, samples);
            }
            _ => {}
        }
    }
    let spawn = spawn.ok_or("no program start time measured")?;
    println!("migration: frozen time of a move (host 1 <-> host 2) against its floor");
    println!("  floor = program start on the host ({spawn} us, fork+exec+exit) + the state's bytes over raw TCP");
    println!(
        "{:>10} {:>6} {:>12} {:>12} {:>12} {:>12} {:>7}",
        "state", "moves", "frozen p50", "frozen max", "tcp bytes", "floor", "ratio"
    );
    for (bytes, samples) in &moves {
        let mut s = samples.clone();
        let m = median(&mut s);
        let max = s.last().copied().unwrap_or(0);
        let t = tcp.get(bytes).copied().unwrap_or(0);
        let floor = spawn + t;
        println!(
            "{:>10} {:>6} {:>9} us {:>9} us {:>9} us {:>9} us {:>7.2}",
            human(*bytes),
            s.len(),
            m,
            max,
            t,
            floor,
            m as f64 / floor.max(1) as f64
        );
    }
    Ok(())
}

fn human(b: u64) -> String {
    match b {
        0 => "0 B".into(),
        b if b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b % 1024 == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let r = match args.cmd {
        Cmd::Mover {
            bytes,
            moves,
            hosts,
            out,
        } => mover(bytes, moves, &hosts, &out),
        Cmd::Noop => Ok(()),
        Cmd::SpawnFloor { count } => spawn_floor(count),
        Cmd::TcpSink { bind, port } => tcp_sink(&bind, port),
        Cmd::TcpSend { addr, bytes, count } => tcp_send(addr, bytes, count),
        Cmd::Report { input } => report(&input),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dipc-migrate-bench: {e}");
            ExitCode::from(1)
        }
    }
}
