//! The pid_d table ([`crate::pids::PidTable`]) under hosts whose
//! processes register, exit (reported or not, their pids recycled), take
//! and give back names, and move to other hosts; whose links close and
//! come back (restoring their processes); and a referee that restarts.
//! Checked after every step:
//!
//! - a new pid_d was never given before by this referee, and is larger
//!   than every one it gave;
//! - no lost registration: a process that holds a pid_d on a joined host
//!   is found under it, and the table holds exactly the records the hosts
//!   made and did not end;
//! - one record per process and per pid_d; a name maps to one live pid_d,
//!   and goes with it;
//! - a move token is good for one move, and only the latest one given.

use super::{host, simulate, Clock, Counts, Rng, Trace};
use crate::pids::{PidTable, Registration, RESTORE_WINDOW};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const DEFAULT_SEEDS: u64 = 1000;
const STEPS: usize = 300;
const HOSTS: usize = 3;
const NAMES: [&str; 4] = ["Buffer", "Philosopher[1]", "Philosopher[2]", "Server"];

#[derive(Debug, Clone)]
struct Proc {
    pid: i32,
    starttime: u64,
    uid: u32,
    mailbox: i32,
    /// What the process was told its pid_d is.
    pid_d: Option<i64>,
    /// The names it was given (its dipcd takes them again on a rejoin).
    names: BTreeSet<String>,
}

struct Host {
    addr: SocketAddr,
    conn: Option<usize>,
    procs: Vec<Proc>,
    next_pid: i32,
    next_start: u64,
}

/// A record as the hosts' actions should have left it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    host: SocketAddr,
    pid: i32,
    starttime: u64,
    mailbox: i32,
    conn: usize,
}

struct World {
    rng: Rng,
    clock: Clock,
    trace: Trace,
    table: PidTable,
    /// When the referee (this table) started.
    started: Instant,
    hosts: Vec<Host>,
    next_conn: usize,
    records: BTreeMap<i64, Rec>,
    names: BTreeMap<String, i64>,
    /// Every pid_d this referee gave out (or took back in a restore).
    given: BTreeSet<i64>,
    /// Moves started: pid_d -> token; and tokens used up or voided.
    tokens: BTreeMap<i64, u64>,
    spent: Vec<(i64, u64)>,
    counts: Counts,
}

type Check = Result<(), String>;

fn registration(p: &Proc, pid_d: i64) -> Registration {
    Registration {
        pid_d,
        pid: p.pid,
        uid: p.uid,
        starttime: p.starttime,
        mailbox: p.mailbox,
    }
}

impl World {
    fn new(seed: u64) -> World {
        let clock = Clock::new();
        let mut w = World {
            rng: Rng(seed),
            table: PidTable::new(clock.now()),
            started: clock.now(),
            clock,
            trace: Trace::default(),
            hosts: (0..HOSTS)
                .map(|i| Host {
                    addr: host(i),
                    conn: None,
                    procs: Vec::new(),
                    next_pid: 100,
                    next_start: 1,
                })
                .collect(),
            next_conn: 1,
            records: BTreeMap::new(),
            names: BTreeMap::new(),
            given: BTreeSet::new(),
            tokens: BTreeMap::new(),
            spent: Vec::new(),
            counts: Counts::default(),
        };
        for h in 0..HOSTS {
            w.next_conn += 1;
            w.hosts[h].conn = Some(w.next_conn);
        }
        w
    }

    fn note(&mut self, s: String) {
        self.trace.note(&self.clock, s);
    }

    /// Records `p` under `pid_d` in the model.
    fn record(&mut self, pid_d: i64, host: SocketAddr, conn: usize, p: &Proc) {
        let r = Rec {
            host,
            pid: p.pid,
            starttime: p.starttime,
            mailbox: p.mailbox,
            conn,
        };
        self.records.insert(pid_d, r);
    }

    /// Ends a record in the model, with its names and any move.
    fn end_record(&mut self, pid_d: i64) {
        self.records.remove(&pid_d);
        self.names.retain(|_, p| *p != pid_d);
        if let Some(t) = self.tokens.remove(&pid_d) {
            self.spent.push((pid_d, t));
        }
    }

    /// A new process on host `h` registers: with a fresh pid, or one
    /// recycled from a process that exited unreported.
    fn spawn(&mut self, h: usize) -> Check {
        let Some(conn) = self.hosts[h].conn else {
            return Ok(());
        };
        let hst = &mut self.hosts[h];
        let start = hst.next_start;
        hst.next_start += 1;
        let recycle = self.rng.chance(20) && !hst.procs.is_empty();
        let pid = if recycle {
            // The old process exited and nobody reported it.
            let i = self.rng.below(hst.procs.len());
            hst.procs.swap_remove(i).pid
        } else {
            hst.next_pid += 1;
            hst.next_pid
        };
        let p = Proc {
            pid,
            starttime: start,
            uid: 1000 + self.rng.below(2) as u32,
            mailbox: self.rng.below(1000) as i32,
            pid_d: None,
            names: BTreeSet::new(),
        };
        let addr = self.hosts[h].addr;
        self.note(format!(
            "host {h} conn {conn}: pid {pid} (start {start}) registers"
        ));
        let got = self
            .table
            .register(addr, conn, registration(&p, 0), self.clock.now());
        let pid_d = got.map_err(|e| format!("a new registration refused: {e:?}"))?;
        if self.given.contains(&pid_d) || self.given.last().is_some_and(|&m| pid_d <= m) {
            return Err(format!(
                "new pid_d {pid_d}, but this referee gave up to {:?}",
                self.given.last()
            ));
        }
        self.given.insert(pid_d);
        // A record of the same pid on this host is of the exited process.
        let stale: Vec<i64> = self
            .records
            .iter()
            .filter(|(_, r)| r.host == addr && r.pid == pid)
            .map(|(p, _)| *p)
            .collect();
        for s in stale {
            self.end_record(s);
            self.counts.bump("recycled");
        }
        self.record(pid_d, addr, conn, &p);
        self.hosts[h].procs.push(Proc {
            pid_d: Some(pid_d),
            ..p
        });
        self.counts.bump("registered");
        Ok(())
    }

    /// A random process of host `h`, with its index.
    fn pick(&mut self, h: usize) -> Option<(usize, Proc)> {
        let n = self.hosts[h].procs.len();
        if n == 0 {
            return None;
        }
        let i = self.rng.below(n);
        Some((i, self.hosts[h].procs[i].clone()))
    }

    /// A random process of joined host `h` that holds a pid_d: its
    /// index, the host's connection, the process and its pid_d.
    fn pick_registered(&mut self, h: usize) -> Option<(usize, usize, Proc, i64)> {
        let conn = self.hosts[h].conn?;
        let (i, p) = self.pick(h)?;
        let pid_d = p.pid_d?;
        Some((i, conn, p, pid_d))
    }

    /// A process registers again (its dipcd re-sends): same pid_d.
    fn again(&mut self, h: usize) -> Check {
        let Some((_, conn, p, pid_d)) = self.pick_registered(h) else {
            return Ok(());
        };
        let addr = self.hosts[h].addr;
        self.note(format!("host {h}: pid {} registers again", p.pid));
        let got = self
            .table
            .register(addr, conn, registration(&p, 0), self.clock.now());
        if got != Ok(pid_d) {
            return Err(format!(
                "pid {} registered again: {got:?}, had {pid_d}",
                p.pid
            ));
        }
        Ok(())
    }

    /// A process exits: its host reports it (uregist) if joined.
    fn exit(&mut self, h: usize) -> Check {
        let Some((i, p)) = self.pick(h) else {
            return Ok(());
        };
        self.hosts[h].procs.swap_remove(i);
        let (Some(pid_d), Some(_)) = (p.pid_d, self.hosts[h].conn) else {
            return Ok(());
        };
        let addr = self.hosts[h].addr;
        self.note(format!("host {h}: pid {} (pid_d {pid_d}) exits", p.pid));
        let got = self.table.unregister(pid_d, addr, p.pid);
        if got.is_err() {
            return Err(format!("uregist of a live registration: {got:?}"));
        }
        self.end_record(pid_d);
        Ok(())
    }

    /// Someone else ends a record it does not own: refused, nothing ends.
    fn bad_unregister(&mut self, h: usize) -> Check {
        let Some((&pid_d, r)) = self
            .records
            .iter()
            .nth(self.rng.below(self.records.len().max(1)))
        else {
            return Ok(());
        };
        let (addr, pid) = if r.host == self.hosts[h].addr {
            (r.host, r.pid + 1)
        } else {
            (self.hosts[h].addr, r.pid)
        };
        self.note(format!("{addr} pid {pid}: uregist {pid_d} (not its own)"));
        match self.table.unregister(pid_d, addr, pid) {
            Err((e, _)) if e == libc::EPERM => Ok(()),
            other => Err(format!("another's uregist of {pid_d}: {other:?}")),
        }
    }

    fn name(&mut self, h: usize) -> Check {
        let Some((i, _, p, pid_d)) = self.pick_registered(h) else {
            return Ok(());
        };
        let addr = self.hosts[h].addr;
        let name = NAMES[self.rng.below(NAMES.len())];
        if self.rng.chance(70) {
            self.note(format!("pid_d {pid_d} takes the name {name}"));
            let got = self.table.name(pid_d, addr, p.pid, name);
            match (got, self.names.get(name)) {
                (Ok(()), None) => {
                    self.names.insert(name.to_owned(), pid_d);
                    self.hosts[h].procs[i].names.insert(name.to_owned());
                    self.counts.bump("names");
                }
                (Ok(()), Some(&q)) if q == pid_d => {}
                (Err((e, _)), Some(&q)) if e == libc::EEXIST && q != pid_d => {}
                (got, holder) => {
                    return Err(format!(
                        "name {name} to {pid_d}: {got:?}; held by {holder:?}"
                    ))
                }
            }
        } else {
            self.note(format!("pid_d {pid_d} gives the name {name} back"));
            let got = self.table.release(pid_d, addr, p.pid, name);
            match (got, self.names.get(name)) {
                (Ok(()), Some(&q)) if q == pid_d => {
                    self.names.remove(name);
                    self.hosts[h].procs[i].names.remove(name);
                }
                (Err((e, _)), None) if e == libc::ENOENT => {}
                (Err((e, _)), Some(&q)) if e == libc::EPERM && q != pid_d => {}
                (got, holder) => {
                    return Err(format!(
                        "release {name} by {pid_d}: {got:?}; held by {holder:?}"
                    ))
                }
            }
        }
        Ok(())
    }

    /// A process asks to move: it gets a token.
    fn move_start(&mut self, h: usize) -> Check {
        let Some((_, _, p, pid_d)) = self.pick_registered(h) else {
            return Ok(());
        };
        let token = self.rng.next();
        self.note(format!("pid_d {pid_d} starts a move (token {token:#x})"));
        let got = self
            .table
            .move_token(pid_d, self.hosts[h].addr, p.pid, token);
        if got != Ok(token) {
            return Err(format!("move token for {pid_d}: {got:?}"));
        }
        if let Some(old) = self.tokens.insert(pid_d, token) {
            self.spent.push((pid_d, old));
        }
        Ok(())
    }

    /// A started move completes on host `to` (or is abandoned).
    fn move_finish(&mut self, to: usize) -> Check {
        let Some((&pid_d, &token)) = self
            .tokens
            .iter()
            .nth(self.rng.below(self.tokens.len().max(1)))
        else {
            return Ok(());
        };
        let Some(rec) = self.records.get(&pid_d).cloned() else {
            return Err(format!("a token for {pid_d}, which has no record"));
        };
        let Some(from) = self.hosts.iter().position(|x| x.addr == rec.host) else {
            return Err(format!("{pid_d} is on no host"));
        };
        let Some(old) = self.hosts[from]
            .procs
            .iter()
            .find(|p| p.pid == rec.pid)
            .cloned()
        else {
            return Err(format!("{pid_d}'s process is gone from its host"));
        };
        if self.rng.chance(20) {
            self.note(format!("pid_d {pid_d}'s move is abandoned"));
            let got = self.table.move_abort(pid_d, rec.host, rec.pid);
            if got.is_err() {
                return Err(format!("move_abort of {pid_d}: {got:?}"));
            }
            self.tokens.remove(&pid_d);
            self.spent.push((pid_d, token));
            return Ok(());
        }
        let Some(conn) = self.hosts[to].conn else {
            return Ok(());
        };
        if self.table.check_move(pid_d, token, old.uid).is_err() {
            return Err(format!("the pending move of {pid_d} does not check"));
        }
        // The new process may have the pid of one that exited there
        // unreported: the table must drop that stale record.
        let recycle =
            self.rng.chance(20) && self.hosts[to].procs.iter().any(|q| q.pid_d != Some(pid_d));
        let hst = &mut self.hosts[to];
        let pid = if recycle {
            let others: Vec<usize> = (0..hst.procs.len())
                .filter(|&j| hst.procs[j].pid_d != Some(pid_d))
                .collect();
            let j = others[self.rng.below(others.len())];
            hst.procs.swap_remove(j).pid
        } else {
            hst.next_pid += 1;
            hst.next_pid
        };
        let starttime = hst.next_start;
        hst.next_start += 1;
        let p = Proc {
            pid,
            starttime,
            uid: old.uid,
            mailbox: old.mailbox + 1,
            pid_d: Some(pid_d),
            names: old.names.clone(),
        };
        let addr = hst.addr;
        self.note(format!(
            "pid_d {pid_d} moves to host {to} as pid {} (token {token:#x})",
            p.pid
        ));
        let got = self
            .table
            .move_in(addr, conn, registration(&p, pid_d), token, self.clock.now());
        if got.is_err() {
            return Err(format!("move_in of {pid_d}: {got:?}"));
        }
        self.tokens.remove(&pid_d);
        self.spent.push((pid_d, token));
        let stale: Vec<i64> = self
            .records
            .iter()
            .filter(|(q, r)| **q != pid_d && r.host == addr && r.pid == p.pid)
            .map(|(q, _)| *q)
            .collect();
        for q in stale {
            self.end_record(q);
            self.counts.bump("recycled");
        }
        // `i` may have moved if the recycled process was on this host.
        if let Some(i) = self.hosts[from].procs.iter().position(|q| q.pid == rec.pid) {
            self.hosts[from].procs.swap_remove(i);
        }
        self.record(pid_d, addr, conn, &p);
        self.hosts[to].procs.push(p);
        self.counts.bump("moved");
        // The old process's host can no longer end it.
        if self.table.unregister(pid_d, rec.host, rec.pid).is_ok() {
            return Err(format!("the old process ended {pid_d} after its move"));
        }
        Ok(())
    }

    /// A token used up or voided is good for nothing.
    fn replay(&mut self, h: usize) -> Check {
        let Some(&(pid_d, token)) = self.spent.get(self.rng.below(self.spent.len().max(1))) else {
            return Ok(());
        };
        if self.tokens.get(&pid_d) == Some(&token) {
            return Ok(());
        }
        let Some(conn) = self.hosts[h].conn else {
            return Ok(());
        };
        let uid = 1000 + self.rng.below(2) as u32;
        let r = Registration {
            pid_d,
            pid: 9999,
            uid,
            starttime: 1,
            mailbox: 1,
        };
        self.note(format!("a replay of token {token:#x} for {pid_d}"));
        if self.table.check_move(pid_d, token, uid).is_ok() {
            return Err(format!("a spent token for {pid_d} checks"));
        }
        let got = self
            .table
            .move_in(self.hosts[h].addr, conn, r, token, self.clock.now());
        if got.is_ok() {
            return Err(format!("a spent token took {pid_d} over"));
        }
        self.counts.bump("replays_refused");
        Ok(())
    }

    /// Host `h`'s link closes: its records go.
    fn close(&mut self, h: usize) -> Check {
        let Some(conn) = self.hosts[h].conn.take() else {
            return Ok(());
        };
        self.note(format!("host {h}: conn {conn} closes"));
        let n = self.table.conn_closed(conn);
        let mine: Vec<i64> = self
            .records
            .iter()
            .filter(|(_, r)| r.conn == conn)
            .map(|(p, _)| *p)
            .collect();
        if n != mine.len() {
            return Err(format!(
                "conn {conn} closed {n} records, had {}",
                mine.len()
            ));
        }
        for p in mine {
            self.end_record(p);
        }
        Ok(())
    }

    /// Host `h` joins again and restores its processes' pid_d.
    fn join(&mut self, h: usize) -> Check {
        if self.hosts[h].conn.is_some() {
            return Ok(());
        }
        self.next_conn += 1;
        let conn = self.next_conn;
        self.hosts[h].conn = Some(conn);
        let addr = self.hosts[h].addr;
        self.note(format!("host {h} joins on conn {conn}"));
        let now = self.clock.now();
        let in_window = now.duration_since(self.started) <= RESTORE_WINDOW;
        for i in 0..self.hosts[h].procs.len() {
            let p = self.hosts[h].procs[i].clone();
            let Some(pid_d) = p.pid_d else {
                continue;
            };
            let got = self
                .table
                .register(addr, conn, registration(&p, pid_d), now);
            self.note(format!("  restore {pid_d} (pid {}): {got:?}", p.pid));
            let taken = self.records.contains_key(&pid_d);
            // Below the counter, or above it while the window is open.
            let known = self.given.last().is_some_and(|&m| pid_d <= m) || in_window;
            match got {
                Ok(q) if q == pid_d && !taken && known => {
                    self.given.insert(pid_d);
                    self.record(pid_d, addr, conn, &p);
                    self.counts.bump("restored");
                    self.take_names_again(h, i, pid_d)?;
                }
                Err((e, _)) if (e == libc::EEXIST && taken) || (e == libc::EINVAL && !known) => {
                    // Its registration ended; the process goes on without.
                    self.hosts[h].procs[i].pid_d = None;
                    self.counts.bump("restore_refused");
                }
                got => {
                    return Err(format!(
                        "restore of {pid_d}: {got:?} (taken {taken}, in window {in_window})"
                    ))
                }
            }
        }
        Ok(())
    }

    /// After a restore, the process's names are taken again: those that
    /// another process took meanwhile are lost, the others are back.
    fn take_names_again(&mut self, h: usize, i: usize, pid_d: i64) -> Check {
        let addr = self.hosts[h].addr;
        let p = self.hosts[h].procs[i].clone();
        for name in &p.names {
            let got = self.table.name(pid_d, addr, p.pid, name);
            self.note(format!("  name {name} again: {got:?}"));
            match (got, self.names.get(name.as_str())) {
                (Ok(()), None) => {
                    self.names.insert(name.clone(), pid_d);
                }
                (Err((e, _)), Some(&q)) if e == libc::EEXIST && q != pid_d => {
                    self.hosts[h].procs[i].names.remove(name);
                }
                (got, holder) => {
                    return Err(format!(
                        "{name} for {pid_d} again: {got:?}; held by {holder:?}"
                    ))
                }
            }
        }
        Ok(())
    }

    /// The referee restarts: a new table, every link closed; joined hosts
    /// come back at once (the settle period holds new pid_d back until
    /// they restored), the others later.
    fn restart(&mut self) -> Check {
        self.note("referee restarts".into());
        self.table = PidTable::new(self.clock.now());
        self.started = self.clock.now();
        self.records.clear();
        self.names.clear();
        self.given.clear();
        self.tokens.clear();
        self.spent.clear();
        self.counts.bump("restarts");
        let up: Vec<usize> = (0..HOSTS)
            .filter(|&h| self.hosts[h].conn.take().is_some())
            .collect();
        for h in up {
            self.join(h)?;
        }
        Ok(())
    }

    fn check(&self) -> Check {
        let now = self.clock.now();
        let list = self.table.list(now);
        let mut procs = BTreeSet::new();
        for r in &list {
            if !procs.insert((r.host, r.pid)) {
                return Err(format!("two records of pid {} on {}", r.pid, r.host));
            }
        }
        let listed: BTreeMap<i64, (SocketAddr, i32, u64, i32)> = list
            .iter()
            .map(|r| (r.pid_d, (r.host, r.pid, r.starttime, r.mailbox)))
            .collect();
        let want: BTreeMap<i64, (SocketAddr, i32, u64, i32)> = self
            .records
            .iter()
            .map(|(p, r)| (*p, (r.host, r.pid, r.starttime, r.mailbox)))
            .collect();
        if listed != want {
            return Err(format!(
                "the table lists {listed:?}; the hosts made {want:?}"
            ));
        }
        // No lost registration: what a joined host's process holds is
        // found under its pid_d, and no two hold one.
        let mut holders = BTreeMap::new();
        for hst in &self.hosts {
            for p in &hst.procs {
                let Some(pid_d) = p.pid_d else {
                    continue;
                };
                if hst.conn.is_none() {
                    continue;
                }
                if let Some(other) = holders.insert(pid_d, (hst.addr, p.pid)) {
                    return Err(format!("{pid_d} held by {other:?} and pid {}", p.pid));
                }
                for n in &p.names {
                    if self.table.lookup_name(n, now).map(|r| r.pid_d) != Some(pid_d) {
                        return Err(format!("{pid_d} lost its name {n}"));
                    }
                }
                match self.table.lookup(pid_d, now) {
                    Some(r) if r.host == hst.addr && r.pid == p.pid => {}
                    other => {
                        return Err(format!(
                            "pid {} on {} holds {pid_d}, which looks up as {other:?}",
                            p.pid, hst.addr
                        ))
                    }
                }
            }
        }
        let (names, more) = self.table.names_page("", usize::MAX);
        let names: BTreeMap<String, i64> = names.into_iter().collect();
        if more || names != self.names {
            return Err(format!("names {names:?}; given {:?}", self.names));
        }
        for (n, p) in &names {
            if self.table.lookup_name(n, now).map(|r| r.pid_d) != Some(*p) {
                return Err(format!("the name {n} does not look up as {p}"));
            }
        }
        Ok(())
    }
}

impl super::World for World {
    fn step(&mut self) -> Check {
        let h = self.rng.below(HOSTS);
        match self.rng.below(100) {
            0..=19 => self.spawn(h),
            20..=24 => self.again(h),
            25..=36 => self.exit(h),
            37..=40 => self.bad_unregister(h),
            41..=55 => self.name(h),
            56..=62 => self.move_start(h),
            63..=69 => self.move_finish(h),
            70..=72 => self.replay(h),
            73..=77 => self.close(h),
            78..=87 => self.join(h),
            88 => self.restart(),
            89..=90 => {
                self.clock.advance(RESTORE_WINDOW);
                Ok(())
            }
            _ => {
                let ms = self.rng.below(2000) as u64;
                self.clock.advance(Duration::from_millis(ms));
                Ok(())
            }
        }?;
        self.check()
    }

    /// Every host joins again: each process that still holds a pid_d is
    /// found under it.
    fn settle(&mut self) -> Check {
        for h in 0..HOSTS {
            self.join(h)?;
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
fn pids_simulation() {
    simulate(
        "pids",
        DEFAULT_SEEDS,
        STEPS,
        &[
            "registered",
            "recycled",
            "restored",
            "restore_refused",
            "moved",
            "replays_refused",
            "names",
            "restarts",
        ],
        World::new,
    );
}
