//! What every side shares: the wire constants of the ping-pongs, the
//! address and size checks, the time limit, and the JSON line each client
//! side prints (and that `report` reads back).

use libc::{c_int, c_long};
use serde_json::{json, Value};
use std::io::{self, Write};
use std::net::IpAddr;
use std::time::Duration;

/// Longest message text the queue benchmarks use (Linux's default msgmax).
pub(crate) const MAX_TEXT: usize = 8192;
/// Longest TCP payload.
pub(crate) const MAX_TCP: usize = 1 << 20;
pub(crate) const TYPE_PING: c_long = 1;
pub(crate) const TYPE_PONG: c_long = 2;
/// First byte of a stop message (payloads are filled with `FILL`).
pub(crate) const STOP: u8 = 0xFF;
pub(crate) const FILL: u8 = 0x5A;
/// Semaphores in a ping-pong set: 0 carries pings, 1 pongs.
pub(crate) const SEMS: c_int = 2;
pub(crate) const SEM_PING: u16 = 0;
pub(crate) const SEM_PONG: u16 = 1;
/// Report row groups.
pub(crate) const GROUP_MSG: &str = "msg";
pub(crate) const GROUP_SEM: &str = "sem";
pub(crate) const GROUP_PID: &str = "pid";
pub(crate) const GROUP_DPROCS: &str = "dprocs";
/// Most callers one dproc-load side forks.
pub(crate) const MAX_CALLERS: usize = 64;
/// Time-out of one benchmark call: a call that takes longer is a failure.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The original DIPC's cost of one signal to another host, in µs (its
/// papers report about 30 ms).
pub(crate) const ORIGINAL_KILL_US: f64 = 30_000.0;

pub(crate) fn err(msg: impl Into<String>) -> io::Error {
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

pub(crate) fn check_ip(ip: IpAddr) -> io::Result<()> {
    if allowed_ip(ip) {
        Ok(())
    } else {
        Err(err(format!(
            "{ip}: only loopback and the cluster's 10.66.0.0/24 are allowed"
        )))
    }
}

pub(crate) fn check_counts(size: usize, max: usize, iterations: usize) -> io::Result<()> {
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
pub(crate) fn time_limit(secs: u32, interrupt: bool) -> io::Result<()> {
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
pub(crate) fn summary(
    label: &str,
    group: &str,
    size: Option<usize>,
    mut ns: Vec<u64>,
    extra: Value,
) -> Value {
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
pub(crate) fn stats(ns: &[u64]) -> serde_json::Map<String, Value> {
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
pub(crate) fn merge_round(into: &mut Value, round: &Value) -> io::Result<()> {
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
pub(crate) fn pick(v: &Value, keys: &[&str]) -> serde_json::Map<String, Value> {
    keys.iter()
        .filter_map(|k| Some((k.to_string(), v.get(*k)?.clone())))
        .collect()
}

/// A table cell: median / p99 in µs of a result, `-` if there is none.
pub(crate) fn cell_of(v: Option<&Value>) -> String {
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

pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub(crate) fn print_line(v: &Value) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{v}")?;
    out.flush()
}
