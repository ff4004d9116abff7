//! Process-id benchmarks (group `pid`): `kill_d` signals and mailbox
//! round trips between registered processes on two hosts, and their part
//! of the report (ratios to the original DIPC and to raw TCP).

use crate::common::{
    cell_of, check_counts, err, pick, print_line, round3, summary, time_limit, FILL, GROUP_PID,
    MAX_TEXT, ORIGINAL_KILL_US, STOP,
};
use crate::msg::os_err;
use crate::report::{median_of, ratio};
use crate::sem::check_iterations;
use libc::c_int;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::{Duration, Instant};

pub(crate) fn io_errno(what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Registers and writes the pid_d to `path` (atomically: the reader never
/// sees half a number).
pub(crate) fn publish_pid(path: &std::path::Path) -> io::Result<dipc::pid::PidD> {
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
pub(crate) fn read_pid(path: &std::path::Path, wait: Duration) -> io::Result<dipc::pid::PidD> {
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

pub(crate) fn sig_pong(id_file: &std::path::Path, limit: u32) -> io::Result<()> {
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

pub(crate) fn sig_ping(
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

pub(crate) fn mbox_pong(id_file: &std::path::Path, limit: u32) -> io::Result<()> {
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
pub(crate) fn mbox_ping(
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

/// The process-id results with their ratios: the kill_d call against the
/// original DIPC's 30 ms per signal, the send/receive round trip against
/// the raw TCP round trip between the same hosts (`tcp` in this group).
pub(crate) fn pid_summary(rows: &BTreeMap<String, Value>) -> Value {
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

pub(crate) fn write_pid_report(out: &mut impl Write, pid: &Value) -> io::Result<()> {
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
