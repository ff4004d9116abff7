//! The host table ([`crate::hosts::HostTable`]) under hosts that join,
//! heartbeat, go quiet, lose their links and come back on new
//! connections, and a referee whose sweeps come at irregular times, with
//! stalls far longer than the time-out after which it sweeps before it
//! reads the heartbeats that waited in its sockets. Checked at every step:
//!
//! - a host that has heartbeated since it was last heard is never marked
//!   down: a stall of the referee is not the host's silence; nor is any
//!   host heard within the time-out;
//! - a host is marked down once the referee, running normally (sweeps at
//!   most `STEP` apart), has looked at it over more than the time-out
//!   since it was last heard;
//! - a host is up exactly while it is joined on an open connection and not
//!   found silent; a sweep or a join names only the host's current
//!   connection, and an old connection closing never downs a new one.

use super::{host, simulate, Clock, Counts, Rng, Trace};
use crate::hosts::HostTable;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const DEFAULT_SEEDS: u64 = 1000;
const STEPS: usize = 300;
const HOSTS: usize = 3;
const TIMEOUT: Duration = Duration::from_millis(1500);
const STEP: Duration = Duration::from_millis(600);
/// How often a live host sends a heartbeat.
const HEARTBEAT: Duration = Duration::from_millis(500);

type Check = Result<(), String>;

struct Host {
    addr: SocketAddr,
    /// The connection it joined on, while open.
    conn: Option<usize>,
    /// Sends frames (a dead or cut-off host does not).
    alive: bool,
    /// When it last started sending again.
    alive_since: Instant,
    up: bool,
    heard: Instant,
    /// Wall time since it was heard that sweeps covered at most `STEP`
    /// apart: all of it counts as silence.
    regular: Duration,
}

pub struct World {
    rng: Rng,
    clock: Clock,
    trace: Trace,
    counts: Counts,
    table: HostTable,
    hosts: Vec<Host>,
    next_conn: usize,
}

impl World {
    fn new(seed: u64) -> World {
        let clock = Clock::new();
        let now = clock.now();
        World {
            rng: Rng(seed),
            trace: Trace::default(),
            counts: Counts::default(),
            table: HostTable::default(),
            hosts: (0..HOSTS)
                .map(|i| Host {
                    addr: host(i),
                    conn: None,
                    alive: true,
                    alive_since: now,
                    up: false,
                    heard: now,
                    regular: Duration::ZERO,
                })
                .collect(),
            next_conn: 1,
            clock,
        }
    }

    fn note(&mut self, s: String) {
        self.trace.note(&self.clock, s);
    }

    fn join(&mut self, h: usize) -> Check {
        if !self.hosts[h].alive {
            return Ok(());
        }
        self.next_conn += 1;
        let conn = self.next_conn;
        let now = self.clock.now();
        self.note(format!("host {h} joins on conn {conn}"));
        let addr = self.hosts[h].addr;
        let old = self.table.join(addr, 1, conn, now);
        if old != self.hosts[h].conn {
            return Err(format!(
                "join of host {h}: close {old:?}, but its connection was {:?}",
                self.hosts[h].conn
            ));
        }
        // A restarted host joined before its old connection was seen to
        // close: the referee closes that one, which downs nothing.
        if let Some(c) = old {
            self.counts.bump("rejoined_over_an_open_link");
            if self.table.disconnected(&addr, c) {
                return Err(format!("host {h}: closing its old conn {c} downed it"));
            }
        }
        let hst = &mut self.hosts[h];
        hst.conn = Some(conn);
        hst.up = true;
        hst.heard = now;
        hst.regular = Duration::ZERO;
        Ok(())
    }

    fn frame(&mut self, h: usize, now: Instant) {
        let hst = &mut self.hosts[h];
        if !hst.alive || hst.conn.is_none() {
            return;
        }
        self.table.heard(&hst.addr, now);
        hst.heard = now;
        hst.regular = Duration::ZERO;
    }

    fn close(&mut self, h: usize) -> Check {
        let Some(conn) = self.hosts[h].conn.take() else {
            return Ok(());
        };
        self.note(format!("host {h}: conn {conn} closes"));
        let was_up = self.table.disconnected(&self.hosts[h].addr, conn);
        if was_up != self.hosts[h].up {
            return Err(format!(
                "host {h} closed: was up {was_up}, should {}",
                self.hosts[h].up
            ));
        }
        self.hosts[h].up = false;
        Ok(())
    }

    /// Live hosts' heartbeats, read by the referee at `at`.
    fn heartbeats(&mut self, at: Instant) {
        for h in 0..HOSTS {
            if self.hosts[h].alive {
                self.frame(h, at);
            }
        }
    }

    /// The referee sweeps after `gap`. Running normally, it read the live
    /// hosts' heartbeats as they came (the last one at most a heartbeat
    /// ago); after a stall, it sweeps first and reads them after.
    fn sweep(&mut self, gap: Duration) -> Check {
        let before = self.clock.now();
        self.clock.advance(gap);
        let now = self.clock.now();
        let stall = gap > STEP;
        if !stall {
            let back = Duration::from_millis(self.rng.below(HEARTBEAT.as_millis() as usize) as u64);
            self.heartbeats((now - back.min(gap)).max(before));
        }
        self.note(format!("sweep after {} ms", gap.as_millis()));
        let gone = self.table.expire(now, TIMEOUT, STEP);
        for hst in &mut self.hosts {
            if hst.up && gap <= STEP {
                hst.regular = (hst.regular + gap).min(now.duration_since(hst.heard));
            }
        }
        for (addr, conn) in gone {
            let Some(h) = self.hosts.iter().position(|x| x.addr == addr) else {
                return Err(format!("{addr} marked down, never joined"));
            };
            let hst = &mut self.hosts[h];
            if !hst.up || conn != hst.conn {
                return Err(format!(
                    "host {h} marked down with conn {conn:?}: up {}, conn {:?}",
                    hst.up, hst.conn
                ));
            }
            let quiet = now.duration_since(hst.heard);
            let heartbeating = hst.alive && hst.alive_since <= hst.heard;
            if quiet <= TIMEOUT || heartbeating {
                return Err(format!(
                    "host {h} marked down {} ms after it was heard (heartbeating since {heartbeating})",
                    quiet.as_millis(),
                ));
            }
            hst.up = false;
            // The referee closes the connection.
            hst.conn = None;
            self.counts.bump("found_silent");
            if gap > STEP {
                self.counts.bump("found_after_a_stall");
            }
        }
        for (h, hst) in self.hosts.iter().enumerate() {
            if hst.up && hst.regular > TIMEOUT {
                return Err(format!(
                    "host {h} still up after {} ms of regular sweeps without a word",
                    hst.regular.as_millis()
                ));
            }
        }
        if stall {
            if self.hosts.iter().any(|x| x.up && x.alive) {
                self.counts.bump("stalls_survived");
            }
            self.heartbeats(now);
        }
        Ok(())
    }

    fn check(&self) -> Check {
        let snap = self.table.snapshot(self.clock.now());
        for (h, hst) in self.hosts.iter().enumerate() {
            let up = snap.iter().find(|i| i.addr == hst.addr).map(|i| i.up);
            if up.unwrap_or(false) != hst.up {
                return Err(format!(
                    "host {h}: the table says up {up:?}, should {}",
                    hst.up
                ));
            }
        }
        Ok(())
    }
}

impl super::World for World {
    fn step(&mut self) -> Check {
        let h = self.rng.below(HOSTS);
        match self.rng.below(100) {
            0..=9 => {
                self.frame(h, self.clock.now());
                Ok(())
            }
            10..=14 => {
                let hst = &mut self.hosts[h];
                hst.alive = !hst.alive;
                hst.alive_since = self.clock.now();
                let alive = hst.alive;
                self.note(format!(
                    "host {h} {}",
                    if alive { "wakes" } else { "goes quiet" }
                ));
                Ok(())
            }
            15..=19 => self.close(h),
            20..=27 => self.join(h),
            28..=31 => {
                let ms = 2000 + self.rng.below(10_000) as u64;
                self.sweep(Duration::from_millis(ms))
            }
            _ => {
                let ms = 50 + self.rng.below(500) as u64;
                self.sweep(Duration::from_millis(ms))
            }
        }?;
        self.check()
    }

    /// Every host goes quiet; regular sweeps find each out within the
    /// time-out and a step.
    fn settle(&mut self) -> Check {
        for hst in &mut self.hosts {
            hst.alive = false;
        }
        let mut waited = Duration::ZERO;
        while self.hosts.iter().any(|x| x.up) {
            if waited > TIMEOUT + STEP {
                return Err(format!(
                    "hosts still up {} ms after going quiet",
                    waited.as_millis()
                ));
            }
            self.sweep(STEP)?;
            waited += STEP;
        }
        self.check()
    }

    fn trace(&self) -> &Trace {
        &self.trace
    }

    fn counts(&self) -> &Counts {
        &self.counts
    }
}

#[test]
fn hosts_simulation() {
    simulate(
        "hosts",
        DEFAULT_SEEDS,
        STEPS,
        &[
            "found_silent",
            "found_after_a_stall",
            "stalls_survived",
            "rejoined_over_an_open_link",
        ],
        World::new,
    );
}
