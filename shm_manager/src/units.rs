//! The coherence state of a segment's units, as a state machine with no
//! I/O: events in (a fault, a revocation answered, a participant gone, the
//! clock), actions out (send a unit's content, grant, revoke, report a
//! lost unit). The caller carries the actions out in order.
//!
//! The model is DIPC's: each unit has either one writer or any number of
//! readers. A participant that holds a right holds a valid copy; the
//! owner's real segment is valid whenever there is no writer. A fault that
//! conflicts with the holders first revokes them (a writer gives its
//! content back), then is granted. Faults on one unit are served one at a
//! time, in arrival order; different units proceed independently.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// A participant (one attached process), as the caller numbers them.
pub type Pid = usize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send the unit's content (from the real segment) to `to`, before the
    /// grant that follows.
    SendData {
        to: Pid,
        unit: u32,
    },
    Grant {
        to: Pid,
        unit: u32,
        write: bool,
    },
    Lost {
        to: Pid,
        unit: u32,
    },
    Revoke {
        to: Pid,
        unit: u32,
        keep_read: bool,
        want_data: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holders {
    Readers(BTreeSet<Pid>),
    Writer(Pid),
}

/// A fault waiting for revocations to be answered.
#[derive(Debug)]
struct Busy {
    waiting: BTreeSet<Pid>,
    since: Instant,
    /// The writer was told to keep reading: it does, whatever becomes of
    /// the fault that asked (its faulter may be gone by the answer).
    keep_read: bool,
}

#[derive(Debug)]
struct Unit {
    holders: Holders,
    /// The only valid copy was with a writer that died.
    lost: bool,
    /// When a right on this unit was last granted: no right is taken away
    /// before a quantum has passed since.
    granted: Option<Instant>,
    busy: Option<Busy>,
    /// Faults not yet served, oldest first: (participant, write).
    queue: VecDeque<(Pid, bool)>,
    /// Set while the head of the queue waits for the quantum to pass.
    wake: Option<Instant>,
}

pub struct Units {
    units: Vec<Unit>,
    quantum: Duration,
    /// How long a participant may take to answer a revocation.
    revoke_timeout: Duration,
}

impl Units {
    pub fn new(count: usize, quantum: Duration, revoke_timeout: Duration) -> Units {
        Units {
            units: (0..count)
                .map(|_| Unit {
                    holders: Holders::Readers(BTreeSet::new()),
                    lost: false,
                    granted: None,
                    busy: None,
                    queue: VecDeque::new(),
                    wake: None,
                })
                .collect(),
            quantum,
            revoke_timeout,
        }
    }

    pub fn len(&self) -> usize {
        self.units.len()
    }

    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    pub fn holders(&self, unit: u32) -> Option<(&Holders, bool)> {
        self.units.get(unit as usize).map(|u| (&u.holders, u.lost))
    }

    /// Whether content for `unit` from `p` may be stored: only its writer's
    /// may.
    pub fn may_store(&self, p: Pid, unit: u32) -> bool {
        matches!(self.units.get(unit as usize), Some(u) if u.holders == Holders::Writer(p))
    }

    /// `p` faulted on `unit`. An out-of-range unit is the caller's to
    /// refuse.
    pub fn fault(&mut self, now: Instant, p: Pid, unit: u32, write: bool, out: &mut Vec<Action>) {
        let Some(u) = self.units.get_mut(unit as usize) else {
            return;
        };
        u.queue.push_back((p, write));
        self.advance(now, unit, out);
    }

    /// `p` answered a revocation of `unit` (or, unasked, gave back a unit
    /// it wrote: a detach).
    pub fn revoked(&mut self, now: Instant, p: Pid, unit: u32, out: &mut Vec<Action>) {
        let Some(u) = self.units.get_mut(unit as usize) else {
            return;
        };
        let (asked, told_keep) = match u.busy.as_mut() {
            Some(b) => (b.waiting.remove(&p), b.keep_read),
            None => (false, false),
        };
        if !asked {
            // A write-back: the writer gives up its right.
            if u.holders == Holders::Writer(p) {
                u.holders = Holders::Readers(BTreeSet::new());
            }
            return;
        }
        // A writer asked to keep reading becomes a reader (its content is
        // now in the real segment), as the revocation told it, even if
        // the fault that asked has gone from the queue since; anything
        // else loses its right.
        let keep = told_keep && u.holders == Holders::Writer(p);
        match &mut u.holders {
            Holders::Writer(w) if *w == p => {
                let mut s = BTreeSet::new();
                if keep {
                    s.insert(p);
                }
                u.holders = Holders::Readers(s);
            }
            Holders::Readers(s) => {
                s.remove(&p);
            }
            Holders::Writer(_) => {}
        }
        if u.busy.as_ref().is_some_and(|b| b.waiting.is_empty()) {
            u.busy = None;
            self.advance(now, unit, out);
        }
    }

    /// `p` is gone (detached, died, or dropped for not answering). A unit
    /// it held for write is lost: its only valid copy went with it.
    pub fn gone(&mut self, now: Instant, p: Pid, out: &mut Vec<Action>) {
        for i in 0..self.units.len() {
            let u = &mut self.units[i];
            u.queue.retain(|&(q, _)| q != p);
            match &mut u.holders {
                Holders::Writer(w) if *w == p => {
                    u.holders = Holders::Readers(BTreeSet::new());
                    u.lost = true;
                }
                Holders::Readers(s) => {
                    s.remove(&p);
                }
                Holders::Writer(_) => {}
            }
            let mut wake = false;
            if let Some(b) = u.busy.as_mut() {
                if b.waiting.remove(&p) && b.waiting.is_empty() {
                    u.busy = None;
                    wake = true;
                }
            }
            if wake || u.busy.is_none() {
                self.advance(now, i as u32, out);
            }
        }
    }

    /// The earliest time [`Units::tick`] has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        self.units
            .iter()
            .filter_map(|u| match (&u.busy, u.wake) {
                (Some(b), _) => Some(b.since + self.revoke_timeout),
                (None, w) => w,
            })
            .min()
    }

    /// Serves faults whose quantum has passed; returns the participants
    /// that did not answer a revocation in time (the caller drops them and
    /// calls [`Units::gone`]).
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Action>) -> BTreeSet<Pid> {
        let mut late = BTreeSet::new();
        for i in 0..self.units.len() {
            let u = &self.units[i];
            if let Some(b) = &u.busy {
                if now >= b.since + self.revoke_timeout {
                    late.extend(b.waiting.iter().copied());
                }
            } else if u.wake.is_some_and(|w| now >= w) {
                self.advance(now, i as u32, out);
            }
        }
        late
    }

    /// Serves the faults queued on `unit` until one has to wait.
    fn advance(&mut self, now: Instant, unit: u32, out: &mut Vec<Action>) {
        let quantum = self.quantum;
        let u = &mut self.units[unit as usize];
        u.wake = None;
        while u.busy.is_none() {
            let Some(&(p, write)) = u.queue.front() else {
                return;
            };
            if u.lost {
                u.queue.pop_front();
                out.push(Action::Lost { to: p, unit });
                continue;
            }
            // Who must give something up first, and how.
            let (conflicting, keep_read, want_data): (Vec<Pid>, bool, bool) = match &u.holders {
                Holders::Writer(w) if *w == p => (Vec::new(), false, false),
                Holders::Writer(w) => (vec![*w], !write, true),
                Holders::Readers(_) if !write => (Vec::new(), false, false),
                Holders::Readers(s) => (
                    s.iter().copied().filter(|&q| q != p).collect(),
                    false,
                    false,
                ),
            };
            if !conflicting.is_empty() {
                if let Some(t) = u.granted.map(|g| g + quantum).filter(|&t| t > now) {
                    u.wake = Some(t);
                    return;
                }
                for &q in &conflicting {
                    out.push(Action::Revoke {
                        to: q,
                        unit,
                        keep_read,
                        want_data,
                    });
                }
                u.busy = Some(Busy {
                    waiting: conflicting.into_iter().collect(),
                    since: now,
                    keep_read,
                });
                return;
            }
            u.queue.pop_front();
            match &mut u.holders {
                Holders::Writer(_) => {
                    // p is the writer already (a spurious fault).
                    out.push(Action::Grant {
                        to: p,
                        unit,
                        write: true,
                    });
                }
                Holders::Readers(s) => {
                    if !s.contains(&p) {
                        out.push(Action::SendData { to: p, unit });
                    }
                    if write {
                        u.holders = Holders::Writer(p);
                    } else {
                        s.insert(p);
                    }
                    out.push(Action::Grant { to: p, unit, write });
                }
            }
            u.granted = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(n: usize) -> Units {
        Units::new(n, Duration::ZERO, Duration::from_secs(1))
    }

    #[test]
    fn first_read_gets_data_then_hits_need_nothing() {
        let mut u = units(2);
        let now = Instant::now();
        let mut out = Vec::new();
        u.fault(now, 1, 0, false, &mut out);
        assert_eq!(
            out,
            vec![
                Action::SendData { to: 1, unit: 0 },
                Action::Grant {
                    to: 1,
                    unit: 0,
                    write: false
                }
            ]
        );
        out.clear();
        u.fault(now, 2, 0, false, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(
            u.holders(0).unwrap().0,
            &Holders::Readers([1, 2].into_iter().collect())
        );
    }

    #[test]
    fn a_write_invalidates_readers_and_a_read_takes_the_writers_content() {
        let mut u = units(1);
        let now = Instant::now();
        let mut out = Vec::new();
        u.fault(now, 1, 0, false, &mut out);
        u.fault(now, 2, 0, false, &mut out);
        out.clear();
        // 2 writes: 1 must drop its copy; 2 already has a valid one.
        u.fault(now, 2, 0, true, &mut out);
        assert_eq!(
            out,
            vec![Action::Revoke {
                to: 1,
                unit: 0,
                keep_read: false,
                want_data: false
            }]
        );
        out.clear();
        u.revoked(now, 1, 0, &mut out);
        assert_eq!(
            out,
            vec![Action::Grant {
                to: 2,
                unit: 0,
                write: true
            }]
        );
        assert!(u.may_store(2, 0));
        assert!(!u.may_store(1, 0));
        out.clear();
        // 1 reads: the writer gives its content back and keeps reading.
        u.fault(now, 1, 0, false, &mut out);
        assert_eq!(
            out,
            vec![Action::Revoke {
                to: 2,
                unit: 0,
                keep_read: true,
                want_data: true
            }]
        );
        out.clear();
        u.revoked(now, 2, 0, &mut out);
        assert_eq!(
            out,
            vec![
                Action::SendData { to: 1, unit: 0 },
                Action::Grant {
                    to: 1,
                    unit: 0,
                    write: false
                }
            ]
        );
        assert_eq!(
            u.holders(0).unwrap().0,
            &Holders::Readers([1, 2].into_iter().collect())
        );
    }

    #[test]
    fn different_units_do_not_wait_for_each_other() {
        let mut u = units(2);
        let now = Instant::now();
        let mut out = Vec::new();
        u.fault(now, 1, 0, true, &mut out);
        u.fault(now, 2, 1, true, &mut out);
        out.clear();
        // 1 wants unit 0 again, 2 unit 1: both are theirs already.
        u.fault(now, 1, 0, true, &mut out);
        u.fault(now, 2, 1, true, &mut out);
        assert!(out.iter().all(|a| matches!(a, Action::Grant { .. })));
    }

    #[test]
    fn the_quantum_delays_a_revocation() {
        let mut u = Units::new(1, Duration::from_millis(50), Duration::from_secs(1));
        let t0 = Instant::now();
        let mut out = Vec::new();
        u.fault(t0, 1, 0, true, &mut out);
        out.clear();
        u.fault(t0, 2, 0, true, &mut out);
        assert!(out.is_empty());
        assert_eq!(u.deadline(), Some(t0 + Duration::from_millis(50)));
        assert!(u.tick(t0 + Duration::from_millis(10), &mut out).is_empty());
        assert!(out.is_empty());
        u.tick(t0 + Duration::from_millis(50), &mut out);
        assert_eq!(
            out,
            vec![Action::Revoke {
                to: 1,
                unit: 0,
                keep_read: false,
                want_data: true
            }]
        );
    }

    #[test]
    fn a_dead_writer_loses_its_units_and_a_silent_one_is_reported() {
        let mut u = units(2);
        let t0 = Instant::now();
        let mut out = Vec::new();
        u.fault(t0, 1, 0, true, &mut out);
        u.fault(t0, 3, 1, true, &mut out);
        out.clear();
        u.fault(t0, 2, 0, false, &mut out);
        assert_eq!(out.len(), 1);
        out.clear();
        u.gone(t0, 1, &mut out);
        assert_eq!(out, vec![Action::Lost { to: 2, unit: 0 }]);
        out.clear();
        u.fault(t0, 2, 1, false, &mut out);
        let late = u.tick(t0 + Duration::from_secs(2), &mut out);
        assert_eq!(late, [3].into_iter().collect());
    }

    #[test]
    fn a_write_back_leaves_the_real_segment_valid() {
        let mut u = units(1);
        let now = Instant::now();
        let mut out = Vec::new();
        u.fault(now, 1, 0, true, &mut out);
        u.revoked(now, 1, 0, &mut out);
        u.gone(now, 1, &mut out);
        out.clear();
        u.fault(now, 2, 0, false, &mut out);
        assert_eq!(out[0], Action::SendData { to: 2, unit: 0 });
        assert!(!u.holders(0).unwrap().1);
    }
}
