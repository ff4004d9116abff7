//! `dipcref`: the administrator's view of the referee's tables.
//!
//! On the arbiter host it talks to the referee's back door
//! (`referee.sock`); on any other host to the local dipcd (`dipcd.sock`),
//! which relays over its authenticated link to the referee. Both check that
//! the caller is root or in `admin_group`. `dipcref pids` (the table of
//! registered processes) is open to every user: it always goes through
//! dipcd, which relays it for anyone (see `referee::pids` for why), and
//! so are `dipcref names` and `dipcref load` (each host's load and its
//! migratable processes: what `pids` and `ps` show already, with their
//! CPU use).

use clap::Parser;
use dipc::client::{Client, ClientError};
use dipc_common::config::Config;
use dipc_common::wire::{BalanceMove, HostInfo, IpcKind, KeyInfo, Message, Origin, PidRecord};
use dipc_tools::dipcref_cli::{Args, Command};
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Instant;

mod ipcs;
mod stats;

fn main() -> ExitCode {
    let args = Args::parse();
    let path = args.config.clone().unwrap_or_else(Config::default_path);
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string()),
    };
    let result = match &args.command {
        Command::Hosts => hosts(&config, args.json),
        Command::Keys => keys(&config, args.json),
        Command::Shm => shm(&config, args.json),
        Command::Ipcs {
            queues,
            semaphores,
            segments,
        } => {
            let all = !(*queues || *semaphores || *segments);
            let kinds: Vec<IpcKind> = [
                (IpcKind::Msg, *queues),
                (IpcKind::Sem, *semaphores),
                (IpcKind::Shm, *segments),
            ]
            .into_iter()
            .filter(|&(_, on)| on || all)
            .map(|(k, _)| k)
            .collect();
            ipcs::run(&config, &kinds, args.json)
        }
        Command::Pids => pids(&config, args.json),
        Command::Names => names(&config, args.json),
        Command::Load => load(&config, args.json),
        Command::RmKey { kind, key } => rm_key(&config, kind, key),
        Command::Ping { host, count } => ping(&config, host, *count, args.json),
        Command::Migrate { pid_d, host } => migrate(&config, *pid_d, host),
        Command::Stats { host } => stats::stats(&config, host.as_deref(), args.json),
        Command::Status => stats::status(&config, args.json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("dipcref: {msg}");
    ExitCode::from(1)
}

/// The referee's back door where this host is the arbiter, else dipcd.
fn admin_client(config: &Config) -> Result<Client, ClientError> {
    let door = config.referee_socket();
    if config.host.arbiter && door.exists() {
        Client::connect(&door, config.max_frame, Some(config.timeouts.request))
    } else {
        Client::for_config(config)
    }
}

fn hosts(config: &Config, as_json: bool) -> Result<(), ClientError> {
    let mut c = admin_client(config)?;
    let hosts = match c.call(&Message::ListHosts)? {
        Message::Hosts { hosts } => hosts,
        other => return Err(ClientError::Unexpected(other.kind().name())),
    };
    if as_json {
        let rows: Vec<_> = hosts.iter().map(host_json).collect();
        println!("{}", json!({ "hosts": rows }));
        return Ok(());
    }
    println!(
        "{:<40} {:>5}  {:<5} {:>12} {:>12}",
        "ADDRESS", "PORT", "STATE", "LAST HEARD", "JOINED"
    );
    for h in &hosts {
        println!(
            "{:<40} {:>5}  {:<5} {:>12} {:>12}",
            h.addr.ip(),
            h.addr.port(),
            state(h),
            format!("{} ago", secs(h.last_heard_ms)),
            format!("{} ago", secs(h.joined_ms)),
        );
    }
    Ok(())
}

/// The whole key table, a page at a time.
fn all_keys(c: &mut Client) -> Result<Vec<KeyInfo>, ClientError> {
    let mut all: Vec<KeyInfo> = Vec::new();
    loop {
        let after = all.last().map(|k| (k.kind, k.key));
        match c.call(&Message::ListKeys { after })? {
            Message::Keys { keys, more } => {
                let progressed = !keys.is_empty();
                all.extend(keys);
                if !more || !progressed {
                    return Ok(all);
                }
            }
            other => return Err(ClientError::Unexpected(other.kind().name())),
        }
    }
}

fn keys(config: &Config, as_json: bool) -> Result<(), ClientError> {
    let keys = all_keys(&mut admin_client(config)?)?;
    if as_json {
        let rows: Vec<_> = keys.iter().map(key_json).collect();
        println!("{}", json!({ "keys": rows }));
        return Ok(());
    }
    println!(
        "{:<4} {:>10}  {:<28} {:>10} {:>8} {:>10}",
        "KIND", "KEY", "OWNER", "ID", "CREATOR", "AGE"
    );
    for k in &keys {
        println!(
            "{:<4} {:>10}  {:<28} {:>10} {:>8} {:>10}",
            k.kind.name(),
            format!("{:#x}", k.key),
            k.owner.to_string(),
            k.id,
            k.creator_uid,
            secs(k.age_ms),
        );
    }
    Ok(())
}

/// Asks each distributed segment's manager (through the worker on its
/// owner host, as the caller) who holds which units.
fn shm(config: &Config, as_json: bool) -> Result<(), ClientError> {
    let keys = all_keys(&mut admin_client(config)?)?;
    let mut rows = Vec::new();
    for k in keys.iter().filter(|k| k.kind == IpcKind::Shm) {
        let state = Client::session(config, k.owner).and_then(|mut s| {
            s.call(&Message::ShmQuery {
                id: k.id,
                origin: Origin {
                    key: k.key,
                    incarnation: k.incarnation,
                },
            })
        });
        rows.push((k, state));
    }
    if as_json {
        let segs: Vec<_> = rows
            .iter()
            .map(|(k, st)| match st {
                Ok(Message::ShmState {
                    nattch,
                    unit,
                    hosts,
                    runs,
                }) => json!({
                    "key": format!("{:#x}", k.key),
                    "owner": k.owner.to_string(),
                    "id": k.id,
                    "nattch": nattch,
                    "unit": unit,
                    "runs": runs.iter().map(|r| json!({
                        "first": r.first,
                        "count": r.count,
                        "writer": r.writer.and_then(|w| hosts.get(w as usize)).map(|h| h.to_string()),
                        "readers": r.readers.iter().filter_map(|i| hosts.get(*i as usize)).map(|h| h.to_string()).collect::<Vec<_>>(),
                        "lost": r.lost,
                    })).collect::<Vec<_>>(),
                }),
                Ok(other) => json!({"key": format!("{:#x}", k.key), "error": format!("unexpected {}", other.kind().name())}),
                Err(e) => json!({"key": format!("{:#x}", k.key), "owner": k.owner.to_string(), "id": k.id, "error": e.to_string()}),
            })
            .collect();
        println!("{}", json!({ "segments": segs }));
        return Ok(());
    }
    for (k, st) in &rows {
        print!("segment key {:#x}, id {} on {}: ", k.key, k.id, k.owner);
        let (nattch, unit, hosts, runs) = match st {
            Ok(Message::ShmState {
                nattch,
                unit,
                hosts,
                runs,
            }) => (nattch, unit, hosts, runs),
            Ok(other) => {
                println!("unexpected {} reply", other.kind().name());
                continue;
            }
            Err(e) => {
                println!("{e}");
                continue;
            }
        };
        if *unit == 0 {
            println!("nobody attached");
            continue;
        }
        println!("{nattch} attached, units of {unit} bytes");
        let name = |i: u16| {
            hosts
                .get(i as usize)
                .map_or("?".to_string(), |h| h.to_string())
        };
        for r in runs {
            let range = if r.count == 1 {
                format!("unit {}", r.first)
            } else {
                format!("units {}-{}", r.first, r.first + r.count - 1)
            };
            let what = if r.lost {
                "LOST (its writer's host died)".to_string()
            } else if let Some(w) = r.writer {
                format!("writer {}", name(w))
            } else if r.readers.is_empty() {
                "owner's copy only".to_string()
            } else {
                format!(
                    "readers {}",
                    r.readers
                        .iter()
                        .map(|&i| name(i))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            println!("  {range:<20} {what}");
        }
    }
    Ok(())
}

fn pids(config: &Config, as_json: bool) -> Result<(), ClientError> {
    let mut c = Client::for_config(config)?;
    let pids = dipc::pid::list_with(|m| c.call(m))?;
    if as_json {
        let rows: Vec<_> = pids.iter().map(pid_json).collect();
        println!("{}", json!({ "pids": rows }));
        return Ok(());
    }
    println!(
        "{:>8}  {:<28} {:>8} {:>8} {:>10}",
        "PID_D", "HOST", "PID", "UID", "SINCE"
    );
    for p in &pids {
        println!(
            "{:>8}  {:<28} {:>8} {:>8} {:>10}",
            p.pid_d,
            p.host.to_string(),
            p.pid,
            p.uid,
            format!("{} ago", secs(p.since_ms)),
        );
    }
    Ok(())
}

/// Open to every user, as `pids`: a name is looked up to be called.
fn names(config: &Config, as_json: bool) -> Result<(), ClientError> {
    let mut c = Client::for_config(config)?;
    let names = dipc::dprocs::names_with(|m| c.call(m))?;
    if as_json {
        let rows: Vec<_> = names
            .iter()
            .map(|(name, pid_d)| json!({ "name": name, "pid_d": pid_d }))
            .collect();
        println!("{}", json!({ "names": rows }));
        return Ok(());
    }
    println!("{:>8}  NAME", "PID_D");
    for (name, pid_d) in &names {
        println!("{pid_d:>8}  {name}");
    }
    Ok(())
}

/// Open to every user, as `pids`.
fn load(config: &Config, as_json: bool) -> Result<(), ClientError> {
    let mut c = Client::for_config(config)?;
    let (hosts, moves) = match c.call(&Message::ListLoad)? {
        Message::Loads { hosts, moves } => (hosts, moves),
        other => return Err(ClientError::Unexpected(other.kind().name())),
    };
    let outcome = |m: &BalanceMove| match m.outcome {
        0 => "asked",
        1 => "done",
        _ => "failed",
    };
    if as_json {
        let hosts: Vec<_> = hosts
            .iter()
            .map(|h| {
                let procs: Vec<_> = h
                    .procs
                    .iter()
                    .map(|p| {
                        json!({
                            "pid_d": p.pid_d,
                            "pid": p.pid,
                            "name": p.name,
                            "cpu_milli": p.cpu,
                            "stay_ms": p.stay_ms,
                        })
                    })
                    .collect();
                json!({
                    "host": h.host.to_string(),
                    "load_milli": h.load,
                    "window_ms": h.window_ms,
                    "procs": procs,
                })
            })
            .collect();
        let moves: Vec<_> = moves
            .iter()
            .map(|m| {
                json!({
                    "at_ms": m.at_ms,
                    "pid_d": m.pid_d,
                    "from": m.from.to_string(),
                    "to": m.to.to_string(),
                    "outcome": outcome(m),
                })
            })
            .collect();
        println!("{}", json!({ "hosts": hosts, "moves": moves }));
        return Ok(());
    }
    let cpus = |milli: u32| format!("{:.2}", f64::from(milli) / 1000.0);
    println!("{:<28} {:>8} {:>8}", "HOST", "LOAD", "WINDOW");
    for h in &hosts {
        println!(
            "{:<28} {:>8} {:>8}",
            h.host.to_string(),
            cpus(h.load),
            secs(u64::from(h.window_ms))
        );
        for p in &h.procs {
            println!(
                "    pid_d {:<8} pid {:<8} cpu {:>6}  on it {:>10}  {}",
                p.pid_d,
                p.pid,
                cpus(p.cpu),
                secs(p.stay_ms),
                p.name
            );
        }
    }
    if moves.is_empty() {
        return Ok(());
    }
    println!();
    println!(
        "{:<12} {:>8}  {:<24} {:<24} OUTCOME",
        "MOVED (UTC)", "PID_D", "FROM", "TO"
    );
    for m in &moves {
        let day_ms = m.at_ms % 86_400_000;
        let (h, mi, se) = (day_ms / 3_600_000, day_ms / 60_000 % 60, day_ms / 1000 % 60);
        println!(
            "{:<12} {:>8}  {:<24} {:<24} {}",
            format!("{h:02}:{mi:02}:{se:02}"),
            m.pid_d,
            m.from.to_string(),
            m.to.to_string(),
            outcome(m)
        );
    }
    Ok(())
}

fn pid_json(p: &PidRecord) -> serde_json::Value {
    json!({
        "pid_d": p.pid_d,
        "host": p.host.to_string(),
        "pid": p.pid,
        "uid": p.uid,
        "starttime": p.starttime,
        "mailbox": p.mailbox,
        "since_ms": p.since_ms,
    })
}

fn key_json(k: &KeyInfo) -> serde_json::Value {
    json!({
        "kind": k.kind.name(),
        "key": format!("{:#x}", k.key),
        "owner": k.owner.to_string(),
        "id": k.id,
        "creator_uid": k.creator_uid,
        "age_ms": k.age_ms,
        "incarnation": format!("{:#018x}", k.incarnation),
    })
}

fn bad(msg: String) -> ClientError {
    ClientError::Remote {
        errno: libc::EINVAL,
        message: msg,
    }
}

fn rm_key(config: &Config, kind: &str, key: &str) -> Result<(), ClientError> {
    let kind = match kind {
        "msg" => IpcKind::Msg,
        "sem" => IpcKind::Sem,
        "shm" => IpcKind::Shm,
        other => return Err(bad(format!("unknown kind {other:?} (msg, sem or shm)"))),
    };
    let parsed = match key.strip_prefix("0x").or_else(|| key.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).map(|v| v as i32),
        None => key
            .parse::<i32>()
            .or_else(|_| key.parse::<u32>().map(|v| v as i32)),
    };
    let key = parsed.map_err(|_| bad(format!("{key:?} is not a key (decimal or 0x-hex)")))?;
    let mut c = admin_client(config)?;
    c.call(&Message::DropKey { kind, key })?;
    println!("removed {} key {key:#x}", kind.name());
    Ok(())
}

fn state(h: &HostInfo) -> &'static str {
    if h.up {
        "up"
    } else {
        "down"
    }
}

fn host_json(h: &HostInfo) -> serde_json::Value {
    json!({
        "address": h.addr.ip().to_string(),
        "port": h.addr.port(),
        "state": state(h),
        "last_heard_ms": h.last_heard_ms,
        "joined_ms": h.joined_ms,
        "version": h.version,
    })
}

fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// `dipcref migrate`: through dipcd, which states who asks (the referee
/// lets root, admin_group and the process's own user ask).
fn migrate(config: &Config, pid_d: i64, host: &str) -> Result<(), ClientError> {
    let target = target_addr(config, host)?;
    let mut c = Client::for_config(config)?;
    c.call(&Message::MoveAsk {
        pid_d,
        target,
        uid: 0,
        admin: false,
    })?;
    println!("asked pid_d {pid_d} to move to {target}");
    Ok(())
}

/// `ADDR` or `ADDR:PORT`; the port defaults to this host's.
fn target_addr(config: &Config, host: &str) -> Result<SocketAddr, ClientError> {
    if let Ok(a) = host.parse::<SocketAddr>() {
        return Ok(a);
    }
    let ip: IpAddr = host
        .parse()
        .map_err(|_| bad(format!("{host:?} is not an address")))?;
    Ok(SocketAddr::new(ip, config.front_end_addr().port()))
}

fn ping(config: &Config, host: &str, count: u32, as_json: bool) -> Result<(), ClientError> {
    let target: SocketAddr = match host.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => match host.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, config.host.port),
            Err(_) => {
                return Err(ClientError::Remote {
                    errno: libc::EINVAL,
                    message: format!("{host:?} is not an IP address or IP:port"),
                })
            }
        },
    };
    // The first round trip includes opening the session (connect,
    // authenticate, start the worker); the others are the data path an
    // application's remote calls take.
    let mut times = Vec::new();
    let t = Instant::now();
    let mut c = Client::session(config, target)?;
    let mut t = Some(t);
    for _ in 0..count.max(1) {
        let t = t.take().unwrap_or_else(Instant::now);
        match c.call(&Message::Ping)? {
            Message::Pong => times.push(t.elapsed().as_micros() as u64),
            other => return Err(ClientError::Unexpected(other.kind().name())),
        }
    }
    let first = times[0];
    times.sort_unstable();
    let median = times[times.len() / 2];
    if as_json {
        println!(
            "{}",
            json!({"host": target.to_string(), "count": times.len(), "first_us": first, "median_us": median})
        );
    } else {
        println!(
            "{target}: {} round trips, first {first} µs (connect + authenticate), median {median} µs",
            times.len()
        );
    }
    Ok(())
}
