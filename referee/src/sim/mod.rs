//! Simulations of the referee's tables, in the spirit of TigerBeetle's
//! VOPR: a seeded generator drives hosts' requests and failures (links
//! closing, the referee restarting, the clock jumping past time-outs)
//! against [`crate::keys`], [`crate::pids`] and [`crate::hosts`], and
//! random clusters against [`crate::balance::decide`]; invariants are
//! checked after every step. A failure names its seed and step and prints
//! the last events; `DIPC_SIM_SEED=N` replays one seed, `DIPC_SIM_SEEDS=N`
//! runs seeds `0..N` instead of the default count.

mod balance;
mod hosts;
mod keys;
mod pids;
mod scripted;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// splitmix64: small, fast, and the same on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// The fake clock: a base `Instant` plus what the simulation let pass.
pub struct Clock {
    base: Instant,
    offset: Duration,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            base: Instant::now(),
            offset: Duration::ZERO,
        }
    }

    pub fn now(&self) -> Instant {
        self.base + self.offset
    }

    pub fn advance(&mut self, by: Duration) {
        self.offset += by;
    }

    pub fn ms(&self) -> u128 {
        self.offset.as_millis()
    }
}

/// The last events of a run, printed when it fails.
#[derive(Default)]
pub struct Trace(VecDeque<String>);

impl Trace {
    pub fn note(&mut self, clock: &Clock, s: String) {
        if self.0.len() == 60 {
            self.0.pop_front();
        }
        self.0.push_back(format!("t+{}ms {s}", clock.ms()));
    }

    fn dump(&self) -> String {
        self.0
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

pub fn host(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8 + 1], 7100))
}

/// The seeds to run: `DIPC_SIM_SEED` alone, else `0..DIPC_SIM_SEEDS`, else
/// `0..default`.
pub fn seeds(default: u64) -> Vec<u64> {
    let var = |name| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    match (var("DIPC_SIM_SEED"), var("DIPC_SIM_SEEDS")) {
        (Some(s), _) => vec![s],
        (None, n) => (0..n.unwrap_or(default)).collect(),
    }
}

/// What the runs exercised, by name: a change that makes a simulation
/// miss a case fails instead of passing vacuously.
#[derive(Debug, Default)]
pub struct Counts(BTreeMap<&'static str, u64>);

impl Counts {
    pub fn add(&mut self, what: &'static str, n: u64) {
        *self.0.entry(what).or_default() += n;
    }

    pub fn bump(&mut self, what: &'static str) {
        self.add(what, 1);
    }
}

/// A simulated world: one random step at a time, then a settling that
/// lets every pending thing finish.
pub trait World {
    fn step(&mut self) -> Result<(), String>;
    fn settle(&mut self) -> Result<(), String>;
    fn trace(&self) -> &Trace;
    fn counts(&self) -> &Counts;
}

/// Runs the seeds (see [`seeds`]), `steps` steps each then settling, and
/// fails naming the simulation, the seed, the step and the last events.
/// A run of 50 seeds or more must have seen each of `expected`.
pub fn simulate<W: World>(
    name: &str,
    default_seeds: u64,
    steps: usize,
    expected: &[&'static str],
    new: impl Fn(u64) -> W,
) {
    let seeds = seeds(default_seeds);
    let mut total = Counts::default();
    for &seed in &seeds {
        let mut w = new(seed);
        let mut result = Ok(());
        for i in 0..steps {
            if let Err(e) = w.step() {
                result = Err(format!("step {i}: {e}"));
                break;
            }
        }
        if result.is_ok() {
            result = w.settle().map_err(|e| format!("settling: {e}"));
        }
        if let Err(e) = result {
            panic!(
                "{name} simulation, seed {seed}: {e}\nlast events:\n{}\nreplay: DIPC_SIM_SEED={seed}",
                w.trace().dump()
            );
        }
        for (what, n) in &w.counts().0 {
            total.add(what, *n);
        }
    }
    eprintln!("{name} simulation: {} seeds, {:?}", seeds.len(), total.0);
    let missed: Vec<&str> = expected
        .iter()
        .copied()
        .filter(|w| !total.0.contains_key(w))
        .collect();
    assert!(
        seeds.len() < 50 || missed.is_empty(),
        "{name} simulation: the runs never saw {missed:?}"
    );
}
