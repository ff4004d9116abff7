//! The balancer's decision ([`crate::balance::decide`]) on random clusters:
//! loads, migratable processes, settling hosts and failed moves. Checked
//! for every decision:
//!
//! - a host takes part in one move at most, and never a settling one;
//! - a move goes from a host to one less busy by more than the threshold,
//!   of a process of the busy host that has stayed long enough, whose
//!   load is above zero and below the difference, and that never failed
//!   between that pair;
//! - no move at all only when no such (host, host, process) exists;
//! - the order in which hosts and processes are listed changes nothing.

use super::{host, simulate, Clock, Counts, Rng, Trace};
use crate::balance::{decide, Candidate, Decision, Failed, Host, Policy};
use std::collections::BTreeSet;
use std::time::Duration;

const DEFAULT_SEEDS: u64 = 1000;
const STEPS: usize = 50;

type Check = Result<(), String>;

pub struct World {
    rng: Rng,
    clock: Clock,
    trace: Trace,
    counts: Counts,
}

impl World {
    fn new(seed: u64) -> World {
        World {
            rng: Rng(seed),
            clock: Clock::new(),
            trace: Trace::default(),
            counts: Counts::default(),
        }
    }

    fn cluster(&mut self) -> (Vec<Host>, Policy, Failed) {
        let n = 1 + self.rng.below(6);
        let mut next_pid = 1;
        let hosts: Vec<Host> = (0..n)
            .map(|i| {
                let procs = (0..self.rng.below(5))
                    .map(|_| {
                        next_pid += 1;
                        Candidate {
                            pid_d: next_pid,
                            cpu: [0, 50, 200, 500, 900][self.rng.below(5)]
                                + self.rng.below(100) as u32,
                            stay: Duration::from_millis(self.rng.below(3000) as u64),
                        }
                    })
                    .collect::<Vec<_>>();
                let own: u32 = procs.iter().map(|p| p.cpu).sum();
                Host {
                    addr: host(i),
                    load: own + self.rng.below(1500) as u32,
                    procs,
                    settling: self.rng.chance(15),
                }
            })
            .collect();
        let policy = Policy {
            threshold: [0, 100, 300, 800][self.rng.below(4)],
            min_stay: Duration::from_millis([0, 500, 2000][self.rng.below(3)]),
        };
        let mut failed = Failed::new();
        for h in &hosts {
            for p in &h.procs {
                if self.rng.chance(10) {
                    let to = host(self.rng.below(n));
                    failed.insert((p.pid_d, h.addr, to));
                }
            }
        }
        (hosts, policy, failed)
    }

    /// Whether `p` of `from` may go to `to`, as the policy says.
    fn eligible(from: &Host, to: &Host, p: &Candidate, policy: &Policy, failed: &Failed) -> bool {
        let diff = from.load.saturating_sub(to.load);
        from.addr != to.addr
            && !from.settling
            && !to.settling
            && diff > policy.threshold
            && p.cpu > 0
            && p.cpu < diff
            && p.stay >= policy.min_stay
            && !failed.contains(&(p.pid_d, from.addr, to.addr))
    }

    fn check(hosts: &[Host], policy: &Policy, failed: &Failed, out: &[Decision]) -> Check {
        let mut busy = BTreeSet::new();
        for d in out {
            for a in [d.from, d.to] {
                if !busy.insert(a) {
                    return Err(format!("{a} is in two moves: {out:?}"));
                }
            }
            let find = |a| hosts.iter().find(|h| h.addr == a);
            let (Some(from), Some(to)) = (find(d.from), find(d.to)) else {
                return Err(format!("{d:?} names a host not in the cluster"));
            };
            let Some(p) = from.procs.iter().find(|p| p.pid_d == d.pid_d) else {
                return Err(format!("{d:?}: pid_d {} is not on {}", d.pid_d, d.from));
            };
            if !Self::eligible(from, to, p, policy, failed) {
                return Err(format!("{d:?} breaks the policy {policy:?}: {p:?}"));
            }
        }
        if out.is_empty() {
            for from in hosts {
                for to in hosts {
                    if let Some(p) = from
                        .procs
                        .iter()
                        .find(|p| Self::eligible(from, to, p, policy, failed))
                    {
                        return Err(format!(
                            "no move, but {} could go from {} to {}",
                            p.pid_d, from.addr, to.addr
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

impl super::World for World {
    fn step(&mut self) -> Check {
        let (mut hosts, policy, failed) = self.cluster();
        let out = decide(&hosts, &policy, &failed);
        self.trace.note(
            &self.clock,
            format!("{hosts:?} {policy:?} {failed:?} -> {out:?}"),
        );
        Self::check(&hosts, &policy, &failed, &out)?;
        self.counts.add("moves", out.len() as u64);
        if out.is_empty() {
            self.counts.bump("windows_without_a_move");
        }
        // Listed in another order, the cluster is the same cluster.
        hosts.reverse();
        for h in &mut hosts {
            h.procs.reverse();
        }
        let again = decide(&hosts, &policy, &failed);
        if again != out {
            return Err(format!("listed in reverse, {again:?} instead of {out:?}"));
        }
        Ok(())
    }

    fn settle(&mut self) -> Check {
        Ok(())
    }

    fn trace(&self) -> &Trace {
        &self.trace
    }

    fn counts(&self) -> &Counts {
        &self.counts
    }
}

#[test]
fn balance_decisions() {
    simulate(
        "balance",
        DEFAULT_SEEDS,
        STEPS,
        &["moves", "windows_without_a_move"],
        World::new,
    );
}
