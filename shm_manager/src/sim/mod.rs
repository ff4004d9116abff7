//! A simulation of the unit coherence machine ([`crate::units`]), in the
//! spirit of TigerBeetle's VOPR: a seeded generator drives many
//! participants (modelled on the library's agent) through random
//! interleavings of faults, reads, writes, revocations, detaches, crashes,
//! stopped processes and jumps of a fake clock, with every message in
//! flight on its own ordered stream, and checks after every step that
//!
//! - a unit has at most one writer and never a writer beside readers, as
//!   the participants themselves see their rights;
//! - what a participant holds, the machine knows it holds;
//! - whoever holds a right holds the unit's latest content (so no write is
//!   lost and no reader sees a stale copy), and content is only sent just
//!   before a grant;
//! - a participant the machine has let go is sent nothing more;
//! - once every participant answers and the clock runs past every
//!   time-out, every fault of a live participant is answered.
//!
//! `DIPC_SIM_SEED=N` replays one seed; `DIPC_SIM_SEEDS=N` runs seeds
//! `0..N` (default [`DEFAULT_SEEDS`]). A failure names its seed and step
//! and prints the last events.

use crate::units::{Action, Holders, Pid, Units};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

const DEFAULT_SEEDS: u64 = 1000;
const STEPS: usize = 400;
const UNITS: usize = 3;
const MAX_PARTICIPANTS: usize = 12;
const REVOKE_TIMEOUT: Duration = Duration::from_millis(500);

/// splitmix64: small, fast, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Right {
    None,
    Read,
    Write,
}

/// From the manager to a participant, as `carry_out` sends it: the
/// content of `SendData` is read from the real segment when the action is
/// carried out.
#[derive(Debug, Clone)]
enum Down {
    Data {
        unit: u32,
        value: u64,
    },
    Grant {
        unit: u32,
        write: bool,
    },
    Lost {
        unit: u32,
    },
    Revoke {
        unit: u32,
        keep_read: bool,
        want_data: bool,
    },
}

/// From a participant to the manager.
#[derive(Debug, Clone)]
enum Up {
    Fault {
        unit: u32,
        write: bool,
    },
    Data {
        unit: u32,
        value: u64,
    },
    Revoked {
        unit: u32,
    },
    Detach,
    /// The connection closed (the process died): after whatever it sent.
    Hangup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Live,
    /// Sent `ShmDetach`, or died: does nothing more.
    Ended,
}

struct Part {
    life: Life,
    /// A stopped process: reads nothing until it is continued.
    silent: bool,
    right: Vec<Right>,
    /// The agent view: the content this participant has of each unit.
    copy: Vec<u64>,
    /// The fault asked for and not yet answered, per unit.
    pending: Vec<Option<bool>>,
    /// Content came; the grant must be the next thing for that unit.
    data_due: Vec<bool>,
    inbox: VecDeque<Down>,
    outbox: VecDeque<Up>,
}

impl Part {
    fn new() -> Part {
        Part {
            life: Life::Live,
            silent: false,
            right: vec![Right::None; UNITS],
            copy: vec![0; UNITS],
            pending: vec![None; UNITS],
            data_due: vec![false; UNITS],
            inbox: VecDeque::new(),
            outbox: VecDeque::new(),
        }
    }
}

struct World {
    rng: Rng,
    units: Units,
    base: Instant,
    offset: Duration,
    parts: Vec<Part>,
    /// Participants the machine was told are gone.
    gone: BTreeSet<Pid>,
    /// The real segment.
    seg: Vec<u64>,
    /// The last value written to each unit, by anyone.
    latest: Vec<u64>,
    /// Units whose latest content went with a writer that died.
    lost: Vec<bool>,
    next_value: u64,
    log: VecDeque<String>,
    counts: Counts,
    /// Per cent of the failure steps that happen.
    failures: u64,
}

/// What the runs exercised, by name: a change that makes the simulation
/// miss a case fails instead of passing vacuously.
type Counts = BTreeMap<&'static str, u64>;

const EXPECTED: [&str; 8] = [
    "grants",
    "revokes",
    "keep_read",
    "lost",
    "late_drops",
    "deaths",
    "detaches",
    "stale_checks",
];

type Check = Result<(), String>;

impl World {
    fn new(seed: u64) -> World {
        let mut rng = Rng(seed);
        let quantum = [0, 0, 5, 40][rng.below(4)];
        // A third of the runs have no failures, a third a few, a third
        // many: failures lose units for good, which ends the interesting
        // part of a run early.
        let failures = [0, 10, 100][rng.below(3)];
        World {
            units: Units::new(UNITS, Duration::from_millis(quantum), REVOKE_TIMEOUT),
            rng,
            base: Instant::now(),
            offset: Duration::ZERO,
            parts: (0..3).map(|_| Part::new()).collect(),
            gone: BTreeSet::new(),
            seg: vec![0; UNITS],
            latest: vec![0; UNITS],
            lost: vec![false; UNITS],
            next_value: 1,
            log: VecDeque::new(),
            counts: Counts::new(),
            failures,
        }
    }

    fn count(&mut self, what: &'static str, n: u64) {
        *self.counts.entry(what).or_default() += n;
    }

    fn now(&self) -> Instant {
        self.base + self.offset
    }

    fn note(&mut self, s: String) {
        if self.log.len() == 60 {
            self.log.pop_front();
        }
        self.log
            .push_back(format!("t+{}ms {s}", self.offset.as_millis()));
    }

    /// Carries out the machine's actions, as the manager's `carry_out`.
    fn carry_out(&mut self, out: Vec<Action>) -> Check {
        for a in out {
            self.note(format!("  -> {a:?}"));
            match a {
                Action::Grant { .. } => self.count("grants", 1),
                Action::Lost { .. } => self.count("lost", 1),
                Action::Revoke { keep_read, .. } => {
                    self.count("revokes", 1);
                    self.count("keep_read", u64::from(keep_read));
                }
                Action::SendData { .. } => {}
            }
            let (to, down) = match a {
                Action::SendData { to, unit } => (
                    to,
                    Down::Data {
                        unit,
                        value: self.seg[unit as usize],
                    },
                ),
                Action::Grant { to, unit, write } => (to, Down::Grant { unit, write }),
                Action::Lost { to, unit } => (to, Down::Lost { unit }),
                Action::Revoke {
                    to,
                    unit,
                    keep_read,
                    want_data,
                } => (
                    to,
                    Down::Revoke {
                        unit,
                        keep_read,
                        want_data,
                    },
                ),
            };
            if self.gone.contains(&to) {
                return Err(format!("{down:?} for participant {to}, which is gone"));
            }
            let p = &mut self.parts[to];
            if p.life == Life::Live {
                p.inbox.push_back(down);
            }
        }
        Ok(())
    }

    /// The manager drops `p` (it did not answer in time): its connection
    /// closes, so it holds nothing and sends nothing more.
    fn drop_participant(&mut self, p: Pid) -> Check {
        self.note(format!("drop {p} (late)"));
        self.count("late_drops", 1);
        let mut out = Vec::new();
        self.gone(p, &mut out);
        self.end(p);
        self.carry_out(out)
    }

    /// `p` holds nothing from now on; a unit it wrote last is lost.
    fn end(&mut self, p: Pid) {
        let part = &mut self.parts[p];
        part.life = Life::Ended;
        part.inbox.clear();
        part.outbox.clear();
        for u in 0..UNITS {
            part.right[u] = Right::None;
            part.pending[u] = None;
        }
    }

    /// Tells the machine `p` is gone. A unit it held for write (as the
    /// machine sees it) may be reported lost from then on.
    fn gone(&mut self, p: Pid, out: &mut Vec<Action>) {
        for u in 0..UNITS {
            if matches!(self.units.holders(u as u32), Some((Holders::Writer(w), _)) if *w == p) {
                self.lost[u] = true;
            }
        }
        self.gone.insert(p);
        self.units.gone(self.now(), p, out);
    }

    /// One message from `p` reaches the manager.
    fn deliver_up(&mut self, p: Pid) -> Check {
        let Some(m) = self.parts[p].outbox.pop_front() else {
            return Ok(());
        };
        self.note(format!("{p} => manager {m:?}"));
        let now = self.now();
        let mut out = Vec::new();
        match m {
            Up::Fault { unit, write } => self.units.fault(now, p, unit, write, &mut out),
            Up::Data { unit, value } => {
                if self.units.may_store(p, unit) {
                    self.seg[unit as usize] = value;
                }
            }
            Up::Revoked { unit } => self.units.revoked(now, p, unit, &mut out),
            Up::Detach | Up::Hangup => self.gone(p, &mut out),
        }
        self.carry_out(out)
    }

    /// `p` reads one message from the manager, as the agent does.
    fn deliver_down(&mut self, p: Pid) -> Check {
        let Some(m) = self.parts[p].inbox.pop_front() else {
            return Ok(());
        };
        self.note(format!("manager => {p} {m:?}"));
        let latest = &self.latest;
        *self.counts.entry("stale_checks").or_default() +=
            u64::from(matches!(m, Down::Grant { .. }));
        let part = &mut self.parts[p];
        let unit = match m {
            Down::Data { unit, .. }
            | Down::Grant { unit, .. }
            | Down::Lost { unit }
            | Down::Revoke { unit, .. } => unit as usize,
        };
        if part.data_due[unit] && !matches!(m, Down::Grant { .. }) {
            return Err(format!("{p} got content of unit {unit}, then {m:?}"));
        }
        match m {
            Down::Data { value, .. } => {
                part.copy[unit] = value;
                part.data_due[unit] = true;
            }
            Down::Grant { write, .. } => {
                part.data_due[unit] = false;
                if part.copy[unit] != latest[unit] {
                    return Err(format!(
                        "{p} granted unit {unit} (write {write}) with content {} but the latest is {}",
                        part.copy[unit], latest[unit]
                    ));
                }
                part.right[unit] = if write { Right::Write } else { Right::Read };
                part.pending[unit] = None;
            }
            Down::Lost { .. } => {
                if !self.lost[unit] {
                    return Err(format!("{p} told unit {unit} is lost, but it is not"));
                }
                part.pending[unit] = None;
            }
            Down::Revoke {
                keep_read,
                want_data,
                ..
            } => {
                part.right[unit] = if keep_read {
                    part.right[unit].min(Right::Read)
                } else {
                    Right::None
                };
                if want_data {
                    part.outbox.push_back(Up::Data {
                        unit: unit as u32,
                        value: part.copy[unit],
                    });
                }
                part.outbox.push_back(Up::Revoked { unit: unit as u32 });
            }
        }
        Ok(())
    }

    fn live(&self) -> Vec<Pid> {
        (0..self.parts.len())
            .filter(|&p| self.parts[p].life == Life::Live)
            .collect()
    }

    fn advance_clock(&mut self, by: Duration) -> Check {
        self.offset += by;
        self.note(format!("clock +{}ms", by.as_millis()));
        let mut out = Vec::new();
        let late = self.units.tick(self.now(), &mut out);
        self.carry_out(out)?;
        for p in late {
            self.drop_participant(p)?;
        }
        Ok(())
    }

    /// One random step.
    fn step(&mut self) -> Check {
        let live = self.live();
        let r = self.rng.below(100);
        if live.len() < 2 || (r < 3 && self.parts.len() < MAX_PARTICIPANTS) {
            self.note(format!("{} attaches", self.parts.len()));
            self.parts.push(Part::new());
            return Ok(());
        }
        let p = live[self.rng.below(live.len())];
        let unit = self.rng.below(UNITS);
        let r = self.rng.below(100);
        let fail = self.rng.chance(self.failures);
        match r {
            0..=24 => {
                let senders = self.senders();
                if senders.is_empty() {
                    return Ok(());
                }
                let p = senders[self.rng.below(senders.len())];
                self.deliver_up(p)
            }
            25..=49 if !self.parts[p].silent => self.deliver_down(p),
            50..=64 => {
                let write = self.rng.chance(50);
                self.fault(p, unit, write);
                Ok(())
            }
            65..=74 => self.touch(p, unit),
            75..=76 => {
                self.detach(p);
                Ok(())
            }
            77 if fail && self.rng.chance(30) => {
                self.die(p);
                Ok(())
            }
            83..=85 if fail => {
                if self.parts[p].silent || self.rng.below(4) == 0 {
                    let part = &mut self.parts[p];
                    part.silent = !part.silent;
                    let s = part.silent;
                    self.note(format!("{p} {}", if s { "stops" } else { "continues" }));
                }
                Ok(())
            }
            25..=49 => Ok(()),
            _ => {
                let ms = match self.rng.below(20) {
                    0 if fail => REVOKE_TIMEOUT.as_millis() as u64 + 1,
                    1..=3 => 50,
                    _ => self.rng.below(10) as u64,
                };
                self.advance_clock(Duration::from_millis(ms))
            }
        }
    }

    /// `p` touches `unit` without the right it needs: its agent asks the
    /// manager, once per unit until answered.
    fn fault(&mut self, p: Pid, unit: usize, write: bool) {
        let part = &mut self.parts[p];
        let have = part.right[unit];
        if part.silent
            || part.pending[unit].is_some()
            || have == Right::Write
            || (have == Right::Read && !write)
        {
            return;
        }
        part.pending[unit] = Some(write);
        part.outbox.push_back(Up::Fault {
            unit: unit as u32,
            write,
        });
        self.note(format!("{p} faults on {unit} (write {write})"));
    }

    /// `p` uses the right it holds on `unit`: a writer writes a new
    /// value, a reader must read the latest.
    fn touch(&mut self, p: Pid, unit: usize) -> Check {
        if self.parts[p].silent {
            return Ok(());
        }
        match self.parts[p].right[unit] {
            Right::Write => {
                let v = self.next_value;
                self.next_value += 1;
                self.parts[p].copy[unit] = v;
                self.latest[unit] = v;
                self.note(format!("{p} writes {v} to {unit}"));
            }
            Right::Read if self.parts[p].copy[unit] != self.latest[unit] => {
                return Err(format!(
                    "{p} reads {} from unit {unit}; the latest is {}",
                    self.parts[p].copy[unit], self.latest[unit]
                ));
            }
            _ => {}
        }
        Ok(())
    }

    /// `shmdt`, as the agent does it: once no fault is outstanding, write
    /// back each unit held for write, then `ShmDetach`. What it queued
    /// still goes out; it reads nothing more.
    fn detach(&mut self, p: Pid) {
        let part = &mut self.parts[p];
        if part.silent || part.pending.iter().any(Option::is_some) {
            return;
        }
        for u in 0..UNITS {
            if part.right[u] == Right::Write {
                part.outbox.push_back(Up::Data {
                    unit: u as u32,
                    value: part.copy[u],
                });
                part.outbox.push_back(Up::Revoked { unit: u as u32 });
            }
            part.right[u] = Right::None;
        }
        part.outbox.push_back(Up::Detach);
        part.life = Life::Ended;
        part.inbox.clear();
        self.note(format!("{p} detaches"));
        self.count("detaches", 1);
    }

    /// `p` dies: what it sent before still arrives, then its connection
    /// closes.
    fn die(&mut self, p: Pid) {
        self.note(format!("{p} dies"));
        self.count("deaths", 1);
        let outbox = std::mem::take(&mut self.parts[p].outbox);
        self.end(p);
        self.parts[p].outbox = outbox;
        self.parts[p].outbox.push_back(Up::Hangup);
    }

    /// Parts that ended still deliver what they sent before.
    fn senders(&self) -> Vec<Pid> {
        (0..self.parts.len())
            .filter(|&p| !self.gone.contains(&p) && !self.parts[p].outbox.is_empty())
            .collect()
    }

    fn check(&self) -> Check {
        for u in 0..UNITS {
            let mut writers = Vec::new();
            let mut readers = Vec::new();
            for (p, part) in self.parts.iter().enumerate() {
                match part.right[u] {
                    Right::Write => writers.push(p),
                    Right::Read => readers.push(p),
                    Right::None => {}
                }
            }
            if writers.len() > 1 || (!writers.is_empty() && !readers.is_empty()) {
                return Err(format!(
                    "unit {u}: writers {writers:?} beside readers {readers:?}"
                ));
            }
            let Some((holders, _)) = self.units.holders(u as u32) else {
                return Err(format!("unit {u} unknown to the machine"));
            };
            for &w in &writers {
                if *holders != Holders::Writer(w) {
                    return Err(format!(
                        "unit {u}: {w} writes but the machine has {holders:?}"
                    ));
                }
            }
            for &r in &readers {
                let known = match holders {
                    Holders::Readers(s) => s.contains(&r),
                    Holders::Writer(w) => *w == r,
                };
                if !known {
                    return Err(format!(
                        "unit {u}: {r} reads but the machine has {holders:?}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Everyone answers and the clock runs past every time-out: every
    /// fault of a live participant must then be answered.
    fn settle(&mut self) -> Check {
        for p in &mut self.parts {
            p.silent = false;
        }
        for _ in 0..10_000 {
            let downs: Vec<Pid> = self
                .live()
                .into_iter()
                .filter(|&p| !self.parts[p].inbox.is_empty())
                .collect();
            let ups = self.senders();
            if let Some(&p) = ups.first() {
                self.deliver_up(p)?;
            } else if let Some(&p) = downs.first() {
                self.deliver_down(p)?;
            } else if let Some(d) = self.units.deadline() {
                let by = d.saturating_duration_since(self.now());
                self.advance_clock(by)?;
            } else {
                for p in self.live() {
                    if let Some(u) = self.parts[p].pending.iter().position(Option::is_some) {
                        return Err(format!("{p}'s fault on unit {u} was never answered"));
                    }
                }
                return Ok(());
            }
            self.check()?;
        }
        Err("did not settle in 10000 steps".into())
    }
}

fn run(seed: u64) -> Result<Counts, String> {
    let mut w = World::new(seed);
    let mut result = Ok(());
    for step in 0..STEPS {
        if let Err(e) = w.step().and_then(|()| w.check()) {
            result = Err(format!("step {step}: {e}"));
            break;
        }
    }
    if result.is_ok() {
        result = w.settle().map_err(|e| format!("settling: {e}"));
    }
    result.map(|()| w.counts).map_err(|e| {
        let log: Vec<&str> = w.log.iter().map(String::as_str).collect();
        format!(
            "units simulation, seed {seed}: {e}\nlast events:\n{}\nreplay: DIPC_SIM_SEED={seed}",
            log.join("\n")
        )
    })
}

fn seeds() -> Vec<u64> {
    let var = |name| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    match (var("DIPC_SIM_SEED"), var("DIPC_SIM_SEEDS")) {
        (Some(s), _) => vec![s],
        (None, n) => (0..n.unwrap_or(DEFAULT_SEEDS)).collect(),
    }
}

#[test]
fn units_simulation() {
    let seeds = seeds();
    let mut total = Counts::new();
    for &seed in &seeds {
        match run(seed) {
            Ok(c) => c
                .into_iter()
                .for_each(|(k, n)| *total.entry(k).or_default() += n),
            Err(e) => panic!("{e}"),
        }
    }
    eprintln!("units simulation: {} seeds, {total:?}", seeds.len());
    let missed: Vec<&str> = EXPECTED
        .into_iter()
        .filter(|w| !total.contains_key(w))
        .collect();
    assert!(
        seeds.len() < 50 || missed.is_empty(),
        "units simulation: the runs never saw {missed:?}"
    );
}

mod scripted;
