//! Distributed-process benchmarks (group `dprocs`): null calls one at a
//! time and under load from many callers, and their part of the report
//! (ratios to raw TCP that spins or sleeps like for like).

use crate::common::{
    cell_of, err, pick, print_line, round3, summary, time_limit, CALL_TIMEOUT, GROUP_DPROCS,
    MAX_CALLERS, STOP,
};
use crate::msg::os_err;
use crate::pid::{io_errno, publish_pid, read_pid};
use crate::report::{median_of, ratio};
use crate::sem::check_iterations;
use libc::{c_int, c_void};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::{Duration, Instant};

pub(crate) fn dproc_serve(id_file: &std::path::Path, limit: u32) -> io::Result<()> {
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

pub(crate) fn dproc_call(
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

pub(crate) fn dproc_stop(id_file: &std::path::Path, wait: u64) -> io::Result<()> {
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
pub(crate) fn dproc_load(
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

/// Adds another host's load side to `into`: the calls of both were made in
/// the same window, so they add up.
pub(crate) fn add_load(into: &mut Value, other: &Value) -> io::Result<()> {
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
pub(crate) fn dprocs_summary(rows: &BTreeMap<String, Value>) -> Value {
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

pub(crate) fn write_dprocs_report(out: &mut impl Write, d: &Value) -> io::Result<()> {
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
