//! The load balancer: the referee measures every host's load from the
//! reports its dipcd sends with each heartbeat (`LoadReport`) and, when it
//! is enabled (`[balance]` in dipc.conf), moves migratable processes from
//! busy hosts to idle ones.
//!
//! A host's *load* is the CPU time its registered processes used over the
//! balancer's window (`balance.interval_ms`), as thousandths of one CPU:
//! the sum, over the reports of the window, of each report's CPU
//! milliseconds, divided by the sum of their lengths. It counts the work
//! of dipc's processes only, so simulated hosts that share one machine's
//! CPUs each get their own figure, and a host's other work does not count.
//!
//! Each window the balancer takes the busiest and the least busy host
//! that are not *settling*; if their loads differ by more than the
//! threshold it asks one migratable process of the busy host (one that
//! has run there at least `min_stay_ms`) to move to the idle one, the one
//! whose move brings the two loads closest. A process whose own load is
//! not below the difference is never moved: the move would leave the pair
//! at least as far apart, the other way round, and the next window would
//! move it back. Each host takes part in one move per window at most. A
//! host whose move is pending, or whose last window held a move, settles:
//! its load is not what it will be. A move not seen done (the referee's
//! record of the process names the target) within [`move_timeout`] failed,
//! and that process is never moved between that pair of hosts again.
//!
//! [`decide`] is the whole decision, pure, for the tests; [`Balancer`]
//! keeps the windows, the pending moves and the log of moves.

use dipc_common::config::BalanceConfig;
use dipc_common::wire::{BalanceMove, HostLoad, LoadProc, MAX_BALANCE_MOVES, MAX_LOAD_PROCS};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A process the balancer may move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub pid_d: i64,
    /// Its load, thousandths of a CPU.
    pub cpu: u32,
    /// How long it has run on its host.
    pub stay: Duration,
}

/// A host as [`decide`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub addr: SocketAddr,
    /// Thousandths of a CPU.
    pub load: u32,
    pub procs: Vec<Candidate>,
    /// A move to or from it is pending or just done: left out.
    pub settling: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Thousandths of a CPU.
    pub threshold: u32,
    pub min_stay: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub pid_d: i64,
    pub from: SocketAddr,
    pub to: SocketAddr,
}

/// A process, and the pair of hosts (from, to) it failed to move between.
pub type Failed = HashSet<(i64, SocketAddr, SocketAddr)>;

/// The moves to make this window (see the module docs). Deterministic:
/// ties go to the lower address, then the lower pid_d.
pub fn decide(hosts: &[Host], policy: &Policy, failed: &Failed) -> Vec<Decision> {
    let mut load: Vec<(SocketAddr, u32)> = hosts
        .iter()
        .filter(|h| !h.settling)
        .map(|h| (h.addr, h.load))
        .collect();
    load.sort_by_key(|&(a, l)| (l, a));
    let mut out = Vec::new();
    // Each round takes the busiest host left; it and the host it sends
    // to leave the list, so each host is in one move at most.
    while load.len() >= 2 {
        let Some(&(from, busy)) = load.iter().max_by_key(|&&(a, l)| (l, std::cmp::Reverse(a)))
        else {
            break;
        };
        let Some(h) = hosts.iter().find(|h| h.addr == from) else {
            break;
        };
        // The least busy hosts first.
        let mut chosen = None;
        for &(to, idle) in load.iter().filter(|(a, _)| *a != from) {
            let diff = busy.saturating_sub(idle);
            if diff <= policy.threshold {
                break;
            }
            let best = h
                .procs
                .iter()
                .filter(|p| {
                    p.cpu > 0
                        && p.cpu < diff
                        && p.stay >= policy.min_stay
                        && !failed.contains(&(p.pid_d, from, to))
                })
                // The move that leaves the pair closest: |diff - 2 cpu|.
                .min_by_key(|p| ((i64::from(diff) - 2 * i64::from(p.cpu)).abs(), p.pid_d));
            if let Some(p) = best {
                chosen = Some(Decision {
                    pid_d: p.pid_d,
                    from,
                    to,
                });
                break;
            }
        }
        load.retain(|(a, _)| *a != from);
        if let Some(d) = chosen {
            load.retain(|(a, _)| *a != d.to);
            out.push(d);
        }
    }
    out
}

/// How long the balancer waits to see a move done before it counts it
/// failed: a process moves at its next migration point, and a move itself
/// takes up to the request time-out.
pub fn move_timeout(interval: Duration, request: Duration) -> Duration {
    (interval * 3).max(request + interval)
}

/// What the reports of one host add up to in the current window.
#[derive(Debug, Default)]
struct Window {
    wall_ms: u64,
    cpu_ms: u64,
    procs: HashMap<i64, ProcSum>,
}

#[derive(Debug)]
struct ProcSum {
    pid: i32,
    name: String,
    cpu_ms: u64,
    wall_ms: u64,
    stay_ms: u64,
}

#[derive(Debug)]
struct Pending {
    pid_d: i64,
    from: SocketAddr,
    to: SocketAddr,
    asked: Instant,
    at_ms: u64,
}

/// The most failed (process, pair) entries kept; the oldest go first.
const MAX_FAILED: usize = 4096;

#[derive(Debug, Default)]
pub struct Balancer {
    windows: HashMap<SocketAddr, Window>,
    /// The last finished window of each host.
    last: BTreeMap<SocketAddr, HostLoad>,
    pending: Vec<Pending>,
    /// Hosts that settle in the next window (a move of theirs ended in
    /// this one).
    settle: HashSet<SocketAddr>,
    failed: Failed,
    failed_order: VecDeque<(i64, SocketAddr, SocketAddr)>,
    log: VecDeque<BalanceMove>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn milli(cpu_ms: u64, wall_ms: u64) -> u32 {
    if wall_ms == 0 {
        return 0;
    }
    u32::try_from(cpu_ms.saturating_mul(1000) / wall_ms).unwrap_or(u32::MAX)
}

impl Balancer {
    /// A host's report (already bounded by the wire decoder).
    pub fn report(&mut self, host: SocketAddr, window_ms: u32, cpu_ms: u32, procs: Vec<LoadProc>) {
        let w = self.windows.entry(host).or_default();
        w.wall_ms = w.wall_ms.saturating_add(u64::from(window_ms));
        w.cpu_ms = w.cpu_ms.saturating_add(u64::from(cpu_ms));
        for p in procs {
            // Processes come and go within a window; the table stays bounded.
            if !w.procs.contains_key(&p.pid_d) && w.procs.len() >= MAX_LOAD_PROCS {
                continue;
            }
            let s = w.procs.entry(p.pid_d).or_insert(ProcSum {
                pid: p.pid,
                name: String::new(),
                cpu_ms: 0,
                wall_ms: 0,
                stay_ms: 0,
            });
            s.pid = p.pid;
            s.name = p.name;
            s.cpu_ms = s.cpu_ms.saturating_add(u64::from(p.cpu));
            s.wall_ms = s.wall_ms.saturating_add(u64::from(window_ms));
            s.stay_ms = p.stay_ms;
        }
    }

    /// The host left (down, or its connection closed).
    pub fn host_gone(&mut self, host: &SocketAddr) {
        self.windows.remove(host);
        self.last.remove(host);
    }

    /// Ends the window: each up host's load over it, then (when `enabled`)
    /// the moves to ask for. `locate` gives the host a process's record
    /// names now (`None`: no such process). Moves returned are pending
    /// until seen done; the caller reports one it could not ask for with
    /// [`Balancer::not_asked`].
    pub fn round(
        &mut self,
        now: Instant,
        config: &BalanceConfig,
        timeout: Duration,
        up: &[SocketAddr],
        locate: impl Fn(i64) -> Option<SocketAddr>,
    ) -> Vec<Decision> {
        let mut windows = std::mem::take(&mut self.windows);
        self.last.clear();
        for &h in up {
            let w = windows.remove(&h).unwrap_or_default();
            let mut procs: Vec<LoadProc> = w
                .procs
                .into_iter()
                // Gone from the host since (moved, exited).
                .filter(|(pid_d, _)| locate(*pid_d) == Some(h))
                .map(|(pid_d, s)| LoadProc {
                    pid_d,
                    pid: s.pid,
                    name: s.name,
                    cpu: milli(s.cpu_ms, s.wall_ms),
                    stay_ms: s.stay_ms,
                })
                .collect();
            procs.sort_by_key(|p| p.pid_d);
            self.last.insert(
                h,
                HostLoad {
                    host: h,
                    load: milli(w.cpu_ms, w.wall_ms),
                    window_ms: u32::try_from(w.wall_ms).unwrap_or(u32::MAX),
                    procs,
                },
            );
        }
        // A move seen done or given up still settles its hosts in this
        // window (it held the move).
        let mut settle = std::mem::take(&mut self.settle);
        let mut still = Vec::new();
        for p in std::mem::take(&mut self.pending) {
            let outcome = match locate(p.pid_d) {
                Some(h) if h == p.to => Some(1),
                Some(_) if now.duration_since(p.asked) < timeout => None,
                _ => Some(2),
            };
            match outcome {
                None => {
                    settle.insert(p.from);
                    settle.insert(p.to);
                    still.push(p);
                }
                Some(o) => {
                    if o == 1 {
                        log::info!("balance: pid_d {} moved {} -> {}", p.pid_d, p.from, p.to);
                    } else {
                        log::info!(
                            "balance: pid_d {} did not move {} -> {} within {} ms; not trying that pair again",
                            p.pid_d,
                            p.from,
                            p.to,
                            timeout.as_millis()
                        );
                        self.fail(p.pid_d, p.from, p.to);
                    }
                    self.set_outcome(&p, o);
                    settle.insert(p.from);
                    settle.insert(p.to);
                }
            }
        }
        self.pending = still;
        for p in &self.pending {
            self.settle.insert(p.from);
            self.settle.insert(p.to);
        }
        if !config.enabled {
            return Vec::new();
        }
        // A host without a report in the window has no known load.
        let hosts: Vec<Host> = self
            .last
            .values()
            .filter(|l| l.window_ms > 0)
            .map(|l| Host {
                addr: l.host,
                load: l.load,
                procs: l
                    .procs
                    .iter()
                    .map(|p| Candidate {
                        pid_d: p.pid_d,
                        cpu: p.cpu,
                        stay: Duration::from_millis(p.stay_ms),
                    })
                    .collect(),
                settling: settle.contains(&l.host),
            })
            .collect();
        let policy = Policy {
            threshold: config.threshold_milli,
            min_stay: config.min_stay,
        };
        let moves = decide(&hosts, &policy, &self.failed);
        for d in &moves {
            let load = |a: &SocketAddr| self.last.get(a).map_or(0, |l| l.load);
            let cpu = self
                .last
                .get(&d.from)
                .and_then(|l| l.procs.iter().find(|p| p.pid_d == d.pid_d))
                .map_or(0, |p| p.cpu);
            log::info!(
                "balance: {} load {} vs {} load {} (threshold {}): moving pid_d {} (load {}) there",
                d.from,
                load(&d.from),
                d.to,
                load(&d.to),
                config.threshold_milli,
                d.pid_d,
                cpu
            );
            let p = Pending {
                pid_d: d.pid_d,
                from: d.from,
                to: d.to,
                asked: now,
                at_ms: now_ms(),
            };
            if self.log.len() >= MAX_BALANCE_MOVES {
                self.log.pop_front();
            }
            self.log.push_back(BalanceMove {
                at_ms: p.at_ms,
                pid_d: p.pid_d,
                from: p.from,
                to: p.to,
                outcome: 0,
            });
            self.settle.insert(d.from);
            self.settle.insert(d.to);
            self.pending.push(p);
        }
        moves
    }

    /// A decided move could not be asked for (the process's host has no
    /// link): it counts as failed.
    pub fn not_asked(&mut self, d: &Decision) {
        if let Some(i) = self.pending.iter().position(|p| p.pid_d == d.pid_d) {
            let p = self.pending.remove(i);
            self.set_outcome(&p, 2);
        }
        self.fail(d.pid_d, d.from, d.to);
    }

    fn fail(&mut self, pid_d: i64, from: SocketAddr, to: SocketAddr) {
        if self.failed.insert((pid_d, from, to)) {
            self.failed_order.push_back((pid_d, from, to));
            if self.failed_order.len() > MAX_FAILED {
                if let Some(old) = self.failed_order.pop_front() {
                    self.failed.remove(&old);
                }
            }
        }
    }

    fn set_outcome(&mut self, p: &Pending, outcome: u8) {
        if let Some(m) = self
            .log
            .iter_mut()
            .rev()
            .find(|m| m.pid_d == p.pid_d && m.at_ms == p.at_ms && m.from == p.from)
        {
            m.outcome = outcome;
        }
    }

    /// What `dipcref load` shows: each host's last window, and the moves.
    /// At most `max_procs` processes in all, so the answer fits a frame.
    pub fn snapshot(&self, max_procs: usize) -> (Vec<HostLoad>, Vec<BalanceMove>) {
        let mut left = max_procs;
        let hosts = self
            .last
            .values()
            .map(|l| {
                let mut l = l.clone();
                l.procs.truncate(left);
                left -= l.procs.len();
                l
            })
            .collect();
        (hosts, self.log.iter().copied().collect())
    }
}

#[cfg(test)]
mod tests;
