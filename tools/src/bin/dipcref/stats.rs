//! `dipcref stats [HOST]` and `dipcref status`.
//!
//! A host's counters (see `dipc_common::metrics`) come from its dipcd:
//! this host's through `dipcd.sock`, another's through a session to that
//! host (the route `dipcref ping` and `dipcref shm` take), whose worker
//! asks its own dipcd. `status` puts together the referee's tables (as
//! `hosts`, `keys`, `pids`, `names` and `load` read them) and each up
//! host's counters.

use super::{admin_client, all_keys, secs, state, target_addr};
use dipc::client::{Client, ClientError};
use dipc_common::config::Config;
use dipc_common::metrics::{errno_name, Calls, Histogram, Metrics, BUCKETS};
use dipc_common::wire::{HostInfo, IpcKind, Message};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::net::SocketAddr;

/// The counters of the host at `addr` (this host's if `addr` is its own).
fn fetch(config: &Config, addr: SocketAddr) -> Result<Metrics, ClientError> {
    let reply = if addr == config.front_end_addr() {
        Client::for_config(config)?.call(&Message::StatsAsk)?
    } else {
        Client::session(config, addr)?.call(&Message::StatsAsk)?
    };
    match reply {
        Message::Stats { pairs } => Ok(Metrics::from_pairs(&pairs)),
        other => Err(ClientError::Unexpected(other.kind().name())),
    }
}

pub fn stats(config: &Config, host: Option<&str>, as_json: bool) -> Result<(), ClientError> {
    let addr = match host {
        Some(h) => target_addr(config, h)?,
        None => config.front_end_addr(),
    };
    let m = fetch(config, addr)?;
    if as_json {
        println!("{}", stats_json(addr, &m));
    } else {
        print!("{}", stats_text(addr, &m));
    }
    Ok(())
}

fn by_errno(v: &[u64]) -> Vec<(String, u64)> {
    v.iter()
        .enumerate()
        .filter(|(_, &n)| n > 0)
        .map(|(e, &n)| (errno_name(e as i32), n))
        .collect()
}

fn object<K: ToString>(pairs: impl IntoIterator<Item = (K, u64)>) -> Value {
    Value::Object(
        pairs
            .into_iter()
            .map(|(k, n)| (k.to_string(), Value::from(n)))
            .collect::<Map<_, _>>(),
    )
}

/// The stable machine-readable form: every field is always present (zeros
/// included), maps by name leave zeros out.
pub fn stats_json(addr: SocketAddr, m: &Metrics) -> Value {
    json!({
        "host": addr.to_string(),
        "uptime_s": m.uptime_s,
        "clients": m.clients,
        "registered_processes": m.registered,
        "shm_managers": m.managers_running,
        "requests": object(m.requests_by_name()),
        "request_errors": object(by_errno(&m.request_errors)),
        "calls_served": object(m.served.by_name()),
        "call_errors": object(by_errno(&m.served.errors)),
        "call_latency": latency_json(&m.served.latency),
        "calls_made": object(m.made.by_name()),
        "calls_made_errors": object(by_errno(&m.made.errors)),
        "calls_made_latency": latency_json(&m.made.latency),
        "sessions_opened": m.sessions_opened,
        "workers": m.workers,
        "worker_sessions": m.worker_sessions,
        "bytes_in": m.bytes_in,
        "bytes_out": m.bytes_out,
        "shm_managers_started": m.managers_started,
        "shm_faults": m.shm_faults,
        "shm_invalidations": m.shm_invalidations,
    })
}

fn latency_json(h: &Histogram) -> Value {
    let mut cumulative = 0;
    let mut buckets: Vec<Value> = h.counts[..BUCKETS]
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            cumulative += n;
            json!({ "le_us": 1u64 << i, "count": cumulative })
        })
        .collect();
    buckets.push(json!({ "le_us": "+Inf", "count": h.count() }));
    json!({
        "count": h.count(),
        "sum_us": h.sum_us,
        "buckets": buckets,
    })
}

/// The upper bound of the bucket holding the `q` quantile (`None`:
/// above the last finite bucket).
fn quantile_bound(h: &Histogram, q: f64) -> Option<u64> {
    let total = h.count();
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, &n) in h.counts[..BUCKETS].iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(1 << i);
        }
    }
    None
}

fn us(bound: Option<u64>) -> String {
    match bound {
        Some(b) if b >= 1000 => format!("{} ms", b as f64 / 1000.0),
        Some(b) => format!("{b} µs"),
        None => format!("> {} s", (1u64 << (BUCKETS - 1)) as f64 / 1e6),
    }
}

fn section(out: &mut String, title: &str, rows: &[(String, u64)]) {
    out.push_str(&format!("{title}\n"));
    if rows.is_empty() {
        out.push_str("  (none)\n");
    }
    for (name, n) in rows {
        out.push_str(&format!("  {name:<24} {n:>12}\n"));
    }
}

pub fn stats_text(addr: SocketAddr, m: &Metrics) -> String {
    let mut o = format!(
        "dipcd of {addr}: up {} s, {} local clients, {} registered processes, {} shm managers\n\n",
        m.uptime_s, m.clients, m.registered, m.managers_running
    );
    let owned = |v: Vec<(&str, u64)>| -> Vec<(String, u64)> {
        v.into_iter().map(|(k, n)| (k.to_owned(), n)).collect()
    };
    section(
        &mut o,
        "REQUESTS FROM LOCAL PROCESSES",
        &owned(m.requests_by_name()),
    );
    section(
        &mut o,
        "ERRORS ANSWERED TO THEM",
        &by_errno(&m.request_errors),
    );
    calls_text(
        &mut o,
        &m.served,
        "REMOTE CALLS SERVED HERE",
        "SERVICE TIME OF THOSE CALLS (arrival at the worker to its reply)",
    );
    calls_text(
        &mut o,
        &m.made,
        "REMOTE CALLS MADE FROM HERE (as this host's processes reported them)",
        "WAIT OF THOSE CALLS (the caller's, from the call to its answer)",
    );
    let rows = [
        ("sessions opened from here", m.sessions_opened),
        ("sessions served here", m.worker_sessions),
        ("workers", m.workers),
        ("data bytes in", m.bytes_in),
        ("data bytes out", m.bytes_out),
        ("shm managers started", m.managers_started),
        ("shm faults served", m.shm_faults),
        ("shm invalidations", m.shm_invalidations),
    ];
    o.push_str("TOTALS\n");
    for (name, n) in rows {
        o.push_str(&format!("  {name:<24} {n:>12}\n"));
    }
    o
}

/// One direction of remote calls: by call, by errno, and the times.
fn calls_text(o: &mut String, c: &Calls, title: &str, time_title: &str) {
    let names: Vec<(String, u64)> = c
        .by_name()
        .into_iter()
        .map(|(k, n)| (k.to_owned(), n))
        .collect();
    section(o, title, &names);
    section(o, "ERRORS OF THOSE CALLS", &by_errno(&c.errors));
    let h = &c.latency;
    let count = h.count();
    o.push_str(&format!("{time_title}\n"));
    if count == 0 {
        o.push_str("  (no calls)\n");
        return;
    }
    o.push_str(&format!(
        "  {count} calls, mean {:.1} µs, median <= {}, 99th percentile <= {}\n",
        h.sum_us as f64 / count as f64,
        us(quantile_bound(h, 0.5)),
        us(quantile_bound(h, 0.99)),
    ));
    for (i, &n) in h.counts.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let label = if i < BUCKETS {
            format!("<= {}", us(Some(1 << i)))
        } else {
            us(None)
        };
        o.push_str(&format!("  {label:<24} {n:>12}\n"));
    }
}

/// One host's line of `status`.
struct HostLine {
    info: HostInfo,
    /// Its counters, or why they could not be read (none for a down host).
    stats: Option<Result<Metrics, String>>,
}

pub fn status(config: &Config, as_json: bool) -> Result<(), ClientError> {
    let mut admin = admin_client(config)?;
    let hosts = match admin.call(&Message::ListHosts)? {
        Message::Hosts { hosts } => hosts,
        other => return Err(ClientError::Unexpected(other.kind().name())),
    };
    let keys = all_keys(&mut admin)?;
    let mut local = Client::for_config(config)?;
    let pids = dipc::pid::list_with(|m| local.call(m))?;
    let names = dipc::dprocs::names_with(|m| local.call(m))?;
    // Each host's load over the balancer's last window (thousandths of a
    // CPU), for the hosts that reported in it.
    let loads: HashMap<SocketAddr, u32> = match local.call(&Message::ListLoad)? {
        Message::Loads { hosts, .. } => hosts
            .into_iter()
            .filter(|h| h.window_ms > 0)
            .map(|h| (h.host, h.load))
            .collect(),
        other => return Err(ClientError::Unexpected(other.kind().name())),
    };
    let lines: Vec<HostLine> = hosts
        .into_iter()
        .map(|info| {
            let stats = info
                .up
                .then(|| fetch(config, info.addr).map_err(|e| e.to_string()));
            HostLine { info, stats }
        })
        .collect();
    let mut key_counts: BTreeMap<&str, u64> = BTreeMap::new();
    for kind in [IpcKind::Msg, IpcKind::Sem, IpcKind::Shm] {
        key_counts.insert(kind.name(), 0);
    }
    for k in &keys {
        *key_counts.entry(k.kind.name()).or_default() += 1;
    }
    let mut per_host: BTreeMap<String, u64> = BTreeMap::new();
    for p in &pids {
        *per_host.entry(p.host.to_string()).or_default() += 1;
    }
    let here = config.front_end_addr();
    let own = lines
        .iter()
        .find(|l| l.info.addr == here)
        .and_then(|l| l.stats.as_ref())
        .and_then(|s| s.as_ref().ok())
        .cloned();
    let own = match own {
        Some(m) => Ok(m),
        None => fetch(config, here).map_err(|e| e.to_string()),
    };
    if as_json {
        let hosts: Vec<Value> = lines
            .iter()
            .map(|l| {
                let mut h = json!({
                    "address": l.info.addr.to_string(),
                    "state": state(&l.info),
                    "last_heard_ms": l.info.last_heard_ms,
                    "load_milli": loads.get(&l.info.addr),
                    "processes": per_host.get(&l.info.addr.to_string()).copied().unwrap_or(0),
                });
                match &l.stats {
                    Some(Ok(m)) => {
                        h["uptime_s"] = m.uptime_s.into();
                        h["calls_served"] = m.served.total().into();
                        h["calls_made"] = m.made.total().into();
                        h["worker_sessions"] = m.worker_sessions.into();
                        h["sessions_opened"] = m.sessions_opened.into();
                    }
                    Some(Err(e)) => h["stats_error"] = e.clone().into(),
                    None => {}
                }
                h
            })
            .collect();
        let errors = own.as_ref().map_or_else(
            |e| json!({ "error": e }),
            |m| {
                json!({
                    "requests": object(by_errno(&m.request_errors)),
                    "calls": object(by_errno(&m.served.errors)),
                    "calls_made": object(by_errno(&m.made.errors)),
                })
            },
        );
        println!(
            "{}",
            json!({
                "referee": config.referee_addr().to_string(),
                "this_host": here.to_string(),
                "hosts": hosts,
                "keys": object(key_counts.iter().map(|(k, n)| (*k, *n))),
                "processes": pids.len(),
                "names": names.len(),
                "errors_here": errors,
            })
        );
        return Ok(());
    }
    let up = lines.iter().filter(|l| l.info.up).count();
    println!(
        "dipc cluster of referee {}, seen from {here}",
        config.referee_addr()
    );
    println!();
    println!("HOSTS: {} ({up} up)", lines.len());
    println!(
        "  {:<28} {:<5} {:>6} {:>11} {:>10} {:>12} {:>12} {:>9} {:>9}",
        "ADDRESS",
        "STATE",
        "LOAD",
        "LAST HEARD",
        "UPTIME",
        "CALLS SERVED",
        "CALLS MADE",
        "SESSIONS",
        "PROCS"
    );
    let mut notes = Vec::new();
    for l in &lines {
        let addr = l.info.addr.to_string();
        let procs = per_host.get(&addr).copied().unwrap_or(0);
        let (uptime, calls, made, sessions) = match &l.stats {
            Some(Ok(m)) => (
                format!("{} s", m.uptime_s),
                m.served.total().to_string(),
                m.made.total().to_string(),
                m.worker_sessions.to_string(),
            ),
            Some(Err(e)) => {
                notes.push(format!("  {addr}: counters unavailable: {e}"));
                ("?".into(), "?".into(), "?".into(), "?".into())
            }
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        let load = loads
            .get(&l.info.addr)
            .map_or("-".to_owned(), |&m| format!("{:.2}", f64::from(m) / 1000.0));
        println!(
            "  {addr:<28} {:<5} {load:>6} {:>11} {uptime:>10} {calls:>12} {made:>12} {sessions:>9} {procs:>9}",
            state(&l.info),
            format!("{} ago", secs(l.info.last_heard_ms)),
        );
    }
    for n in notes {
        println!("{n}");
    }
    println!();
    println!(
        "KEYS: {} in use ({})",
        keys.len(),
        key_counts
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "PROCESSES: {} registered, {} names",
        pids.len(),
        names.len()
    );
    println!();
    println!("ERRORS ON THIS HOST (since its dipcd started):");
    match &own {
        Ok(m) => {
            let show = |v: Vec<(String, u64)>| {
                if v.is_empty() {
                    "none".to_owned()
                } else {
                    v.iter()
                        .map(|(e, n)| format!("{e} {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            };
            println!(
                "  answered to local processes: {}",
                show(by_errno(&m.request_errors))
            );
            println!(
                "  of remote calls served here: {}",
                show(by_errno(&m.served.errors))
            );
            println!(
                "  of remote calls made from here: {}",
                show(by_errno(&m.made.errors))
            );
        }
        Err(e) => println!("  counters unavailable: {e}"),
    }
    Ok(())
}
