//! The key table ([`crate::keys::KeyTable`]), with the host table
//! deciding which claims it may adopt, under hosts that get, create,
//! commit, abort and remove keys, lose their links, and a referee that
//! restarts (hosts claim their keys back) or expires late creations.
//! Checked after every step:
//!
//! - every request gets at most one reply, never on a closed connection,
//!   and (once creators finish and the clock passes the time-out) exactly
//!   one;
//! - a key has at most one live creation grant, given only to a get with
//!   `IPC_CREAT`, and only while no structure is recorded for the key;
//! - a key names one structure: every owner answer is the one committed
//!   (or claimed) and not removed since; a commit succeeds only for the
//!   live grant's connection; a claim never displaces another structure;
//! - `ENOENT` only when nothing is recorded or being created, `EEXIST`
//!   only to `IPC_EXCL` for a key made;
//! - the table lists exactly the recorded structures.

use super::{host, simulate, Clock, Counts, Rng, Trace};
use crate::hosts::HostTable;
use crate::keys::{ClaimRefused, KeyTable, Removal, Reply};
use dipc_common::wire::{IpcKind, Message};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

const DEFAULT_SEEDS: u64 = 1000;
const STEPS: usize = 300;
const HOSTS: usize = 3;
const TIMEOUT: Duration = Duration::from_secs(5);
const CREAT: i32 = libc::IPC_CREAT;
const EXCL: i32 = libc::IPC_CREAT | libc::IPC_EXCL;

type Key = (IpcKind, i32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Structure {
    owner: SocketAddr,
    id: i32,
    incarnation: u64,
}

struct Host {
    addr: SocketAddr,
    conn: Option<usize>,
    incarnation: u64,
    next_id: i32,
    /// Keys this host was told to create and has not finished.
    creating: BTreeSet<Key>,
    /// Structures this host made and has not removed.
    owned: BTreeMap<Key, (i32, u64)>,
    /// It heartbeated after its claims on a connection to this referee.
    claimed_here: bool,
}

#[derive(Debug, Clone, Copy)]
enum Req {
    Get {
        key: Key,
        flags: i32,
    },
    Commit {
        key: Key,
    },
    /// A commit naming no structure (id -1): refused, the grant stays.
    BadCommit,
}

#[derive(Debug, Clone, Copy)]
struct Grant {
    conn: usize,
    since: std::time::Instant,
}

struct World {
    rng: Rng,
    clock: Clock,
    trace: Trace,
    table: KeyTable,
    host_table: HostTable,
    hosts: Vec<Host>,
    next_conn: usize,
    next_req: u64,
    closed: BTreeSet<usize>,
    /// Requests not answered yet, by (connection, request id).
    outstanding: BTreeMap<(usize, u64), Req>,
    /// What each key names, as the answers so far established it.
    made: BTreeMap<Key, Structure>,
    /// Creation grants given and not yet finished.
    grants: BTreeMap<Key, Grant>,
    counts: Counts,
}

type Check = Result<(), String>;

fn describe(m: &Message) -> String {
    match m {
        Message::KeyOwner {
            owner, id, origin, ..
        } => format!("owner {owner} id {id} inc {}", origin.incarnation),
        Message::Error { errno, .. } => format!("errno {errno}"),
        Message::Done { value } => format!("done {value}"),
        other => format!("{:?}", other.kind()),
    }
}

impl World {
    fn new(seed: u64) -> World {
        let mut w = World {
            rng: Rng(seed),
            clock: Clock::new(),
            trace: Trace::default(),
            table: KeyTable::default(),
            host_table: HostTable::default(),
            hosts: (0..HOSTS)
                .map(|i| Host {
                    addr: host(i),
                    conn: None,
                    incarnation: 100 + i as u64,
                    next_id: 1,
                    creating: BTreeSet::new(),
                    owned: BTreeMap::new(),
                    claimed_here: false,
                })
                .collect(),
            next_conn: 1,
            next_req: 1,
            closed: BTreeSet::new(),
            outstanding: BTreeMap::new(),
            made: BTreeMap::new(),
            grants: BTreeMap::new(),
            counts: Counts::default(),
        };
        for h in 0..HOSTS {
            if let Err(e) = w.join(h) {
                panic!("seed {seed}: a first join failed: {e}");
            }
        }
        w
    }

    fn note(&mut self, s: String) {
        self.trace.note(&self.clock, s);
    }

    fn new_conn(&mut self) -> usize {
        self.next_conn += 1;
        self.next_conn
    }

    fn req(&mut self) -> u64 {
        self.next_req += 1;
        self.next_req
    }

    fn host_of(&self, conn: usize) -> Option<usize> {
        self.hosts.iter().position(|h| h.conn == Some(conn))
    }

    /// Checks the table's replies one by one against what is known.
    fn replies(&mut self, replies: Vec<Reply>) -> Check {
        for (conn, req, msg) in replies {
            self.note(format!("  -> conn {conn} req {req}: {}", describe(&msg)));
            if self.closed.contains(&conn) {
                return Err(format!("a reply on closed connection {conn}"));
            }
            let Some(r) = self.outstanding.remove(&(conn, req)) else {
                return Err(format!(
                    "a reply to conn {conn} req {req}, which is answered or was never asked"
                ));
            };
            match (r, &msg) {
                (Req::Get { key, flags }, Message::KeyOwner { id: -1, owner, .. }) => {
                    if flags & CREAT == 0 {
                        return Err(format!("{key:?}: a grant to a get without IPC_CREAT"));
                    }
                    if let Some(s) = self.made.get(&key) {
                        return Err(format!("{key:?}: a grant while it names {s:?}"));
                    }
                    if let Some(g) = self.grants.get(&key) {
                        return Err(format!(
                            "{key:?}: a second grant (conn {conn}) while conn {} creates it",
                            g.conn
                        ));
                    }
                    let h = self
                        .host_of(conn)
                        .ok_or_else(|| format!("a grant on conn {conn}, of no host"))?;
                    if *owner != self.hosts[h].addr {
                        return Err(format!("{key:?}: granted to {owner}, asked by conn {conn}"));
                    }
                    self.grants.insert(
                        key,
                        Grant {
                            conn,
                            since: self.clock.now(),
                        },
                    );
                    self.hosts[h].creating.insert(key);
                    self.counts.bump("grants");
                }
                (
                    Req::Get { key, .. },
                    Message::KeyOwner {
                        owner, id, origin, ..
                    },
                ) => {
                    let got = Structure {
                        owner: *owner,
                        id: *id,
                        incarnation: origin.incarnation,
                    };
                    if self.made.get(&key) != Some(&got) || origin.key != key.1 {
                        return Err(format!(
                            "{key:?}: answered {got:?}, but it names {:?}",
                            self.made.get(&key)
                        ));
                    }
                }
                (Req::Get { key, .. }, Message::Error { errno, .. }) if *errno == libc::ENOENT => {
                    if self.made.contains_key(&key) || self.grants.contains_key(&key) {
                        return Err(format!("{key:?}: ENOENT, but it is made or being made"));
                    }
                }
                (Req::Get { key, flags }, Message::Error { errno, .. })
                    if *errno == libc::EEXIST =>
                {
                    if flags != EXCL || !self.made.contains_key(&key) {
                        return Err(format!("{key:?}: EEXIST to flags {flags:#o}"));
                    }
                    self.counts.bump("eexist");
                }
                (Req::Get { .. }, Message::Error { errno, .. }) if *errno == libc::EIDRM => {}
                (Req::Get { key, .. }, Message::Error { errno, .. })
                    if *errno == libc::EINVAL && key.1 == libc::IPC_PRIVATE => {}
                (Req::BadCommit, Message::Error { errno, .. }) if *errno == libc::EINVAL => {}
                // Checked against the grant by `commit`, which records it.
                (Req::Commit { .. }, Message::Done { .. }) => {}
                (Req::Commit { key }, Message::Error { errno, .. })
                    if *errno == libc::ENOENT || *errno == libc::EPERM =>
                {
                    if self.grants.get(&key).is_some_and(|g| g.conn == conn) {
                        return Err(format!("{key:?}: the grant holder's commit was refused"));
                    }
                }
                (r, m) => return Err(format!("{r:?} answered {}", describe(m))),
            }
        }
        Ok(())
    }

    fn get(&mut self, h: usize, key: Key) -> Check {
        let Some(conn) = self.hosts[h].conn else {
            return Ok(());
        };
        // IPC_PRIVATE names nothing to share: refused, never recorded.
        let key = if self.rng.chance(3) {
            (key.0, libc::IPC_PRIVATE)
        } else {
            key
        };
        let flags = [0, CREAT, CREAT, EXCL][self.rng.below(4)];
        let req = self.req();
        self.note(format!(
            "host {h} conn {conn} req {req}: get {key:?} flags {flags:#o}"
        ));
        self.outstanding
            .insert((conn, req), Req::Get { key, flags });
        let was_creating = self.grants.contains_key(&key);
        let r = self.table.get(
            key.0,
            key.1,
            flags,
            self.hosts[h].addr,
            (conn, req),
            self.clock.now(),
        );
        self.replies(r)?;
        // Answered at once unless the key is being created.
        if self.outstanding.contains_key(&(conn, req)) != was_creating {
            return Err(format!(
                "{key:?}: parked {}, being created {was_creating}",
                self.outstanding.contains_key(&(conn, req))
            ));
        }
        Ok(())
    }

    /// One of the creations joined host `h` is busy with, which it now
    /// finishes: its connection and the key.
    fn finish_one(&mut self, h: usize) -> Option<(usize, Key)> {
        let conn = self.hosts[h].conn?;
        let creating: Vec<Key> = self.hosts[h].creating.iter().copied().collect();
        let key = *creating.get(self.rng.below(creating.len()))?;
        self.hosts[h].creating.remove(&key);
        Some((conn, key))
    }

    fn commit(&mut self, h: usize) -> Check {
        let Some((conn, key)) = self.finish_one(h) else {
            return Ok(());
        };
        let id = self.hosts[h].next_id;
        self.hosts[h].next_id += 1;
        let inc = self.hosts[h].incarnation;
        if self.rng.chance(5) {
            let req = self.req();
            self.note(format!(
                "host {h} conn {conn} req {req}: commit {key:?} as id -1"
            ));
            self.outstanding.insert((conn, req), Req::BadCommit);
            let r = self.table.commit(key.0, key.1, (-1, inc), 1000, conn, req);
            if r.len() != 1 {
                return Err(format!("{key:?}: a commit of id -1 answered {}", r.len()));
            }
            self.replies(r)?;
            self.check()?;
        }
        let req = self.req();
        self.note(format!(
            "host {h} conn {conn} req {req}: commit {key:?} as id {id}"
        ));
        self.outstanding.insert((conn, req), Req::Commit { key });
        let mine = self.grants.get(&key).is_some_and(|g| g.conn == conn);
        let r = self.table.commit(key.0, key.1, (id, inc), 1000, conn, req);
        // The commit is checked against the grant before it is recorded.
        let done = r
            .iter()
            .any(|(c, q, m)| (*c, *q) == (conn, req) && matches!(m, Message::Done { .. }));
        if done != mine {
            return Err(format!(
                "{key:?}: commit by conn {conn} accepted {done}, holds the grant {mine}"
            ));
        }
        if r.len() > 1 {
            self.counts.bump("parked_then_served");
        }
        if done {
            self.grants.remove(&key);
            let s = Structure {
                owner: self.hosts[h].addr,
                id,
                incarnation: inc,
            };
            self.made.insert(key, s);
            self.hosts[h].owned.insert(key, (id, inc));
            self.counts.bump("commits");
        }
        self.replies(r)?;
        if self.outstanding.contains_key(&(conn, req)) {
            return Err(format!("{key:?}: the commit was not answered"));
        }
        // Nobody waits on a key that is made.
        self.check_no_waiter_on(key)
    }

    fn check_no_waiter_on(&self, key: Key) -> Check {
        if self.grants.contains_key(&key) {
            return Ok(());
        }
        for (&(c, q), r) in &self.outstanding {
            if matches!(r, Req::Get { key: k, .. } if *k == key) {
                return Err(format!(
                    "{key:?}: conn {c} req {q} still waits, though no one creates it"
                ));
            }
        }
        Ok(())
    }

    /// The grant of `key` ended (abort, close, expiry, drop): the table's
    /// replies serve the waiters afresh.
    fn ended(&mut self, key: Key, why: &str) {
        if let Some(g) = self.grants.remove(&key) {
            self.note(format!("  grant of {key:?} to conn {} ends: {why}", g.conn));
        }
    }

    fn abort(&mut self, h: usize) -> Check {
        let Some((conn, key)) = self.finish_one(h) else {
            return Ok(());
        };
        self.note(format!("host {h} conn {conn}: abort {key:?}"));
        if self.grants.get(&key).is_some_and(|g| g.conn == conn) {
            self.ended(key, "aborted");
            self.counts.bump("handed_over");
        }
        let r = self.table.abort(key.0, key.1, conn, self.clock.now());
        self.replies(r)?;
        self.check_no_waiter_on(key)
    }

    /// `IPC_RMID` on host `h`: of its own structure (it then has none),
    /// or naming another host's (refused).
    fn remove(&mut self, h: usize, key: Key) -> Check {
        let addr = self.hosts[h].addr;
        let s = match (self.hosts[h].owned.remove(&key), self.made.get(&key)) {
            (Some(s), _) => s,
            (None, Some(m)) => (m.id, m.incarnation),
            (None, None) => return Ok(()),
        };
        self.note(format!("host {h}: remove {key:?} {s:?}"));
        let got = self.table.remove(key.0, key.1, s, addr);
        let want = match self.made.get(&key) {
            Some(m) if m.id == s.0 && m.owner != addr => Removal::NotOwner(m.owner),
            Some(m) if m.id == s.0 && m.incarnation == s.1 => Removal::Removed,
            _ => Removal::NoSuchEntry,
        };
        if got != want {
            return Err(format!("{key:?}: remove gave {got:?}, not {want:?}"));
        }
        if got == Removal::Removed {
            self.made.remove(&key);
        }
        Ok(())
    }

    fn close(&mut self, h: usize) -> Check {
        let Some(conn) = self.hosts[h].conn.take() else {
            return Ok(());
        };
        self.note(format!("host {h}: conn {conn} closes"));
        self.closed.insert(conn);
        if !self.host_table.disconnected(&self.hosts[h].addr, conn) {
            return Err(format!("host {h} was not up on conn {conn}"));
        }
        self.outstanding.retain(|&(c, _), _| c != conn);
        self.hosts[h].creating.clear();
        let mine: Vec<Key> = self
            .grants
            .iter()
            .filter(|(_, g)| g.conn == conn)
            .map(|(k, _)| *k)
            .collect();
        for k in mine {
            self.ended(k, "its connection closed");
            self.counts.bump("handed_over");
        }
        let r = self.table.conn_closed(conn, self.clock.now());
        self.replies(r)
    }

    /// A host joins (a new connection) and claims its keys, then, unless
    /// its link breaks first, heartbeats. The host table decides whether
    /// the referee takes its word for keys it lacks: only until the host
    /// finished claiming on some connection to this referee.
    fn join(&mut self, h: usize) -> Check {
        if self.hosts[h].conn.is_some() {
            return Ok(());
        }
        let conn = self.new_conn();
        self.hosts[h].conn = Some(conn);
        let addr = self.hosts[h].addr;
        let old = self.host_table.join(addr, 1, conn, self.clock.now());
        if old.is_some() {
            return Err(format!("host {h} had a connection open: {old:?}"));
        }
        let adopt = self.host_table.may_adopt(&addr);
        if adopt == self.hosts[h].claimed_here {
            return Err(format!(
                "host {h}: may adopt {adopt}, though claimed here before {}",
                self.hosts[h].claimed_here
            ));
        }
        self.note(format!("host {h} joins on conn {conn} (adopt {adopt})"));
        let owned: Vec<(Key, (i32, u64))> =
            self.hosts[h].owned.iter().map(|(k, v)| (*k, *v)).collect();
        for (key, s) in owned {
            let got = self
                .table
                .claim(key.0, key.1, s, 1000, (addr, adopt), self.clock.now());
            let mine = Structure {
                owner: addr,
                id: s.0,
                incarnation: s.1,
            };
            self.note(format!("  claim {key:?} {s:?}: {got:?}"));
            match (&got, self.made.get(&key)) {
                (Ok(()), Some(m)) if *m == mine => {}
                (Ok(()), None) if adopt && !self.grants.contains_key(&key) => {
                    self.made.insert(key, mine);
                }
                (Err(ClaimRefused::Taken(_)), Some(m)) if *m != mine => {}
                (Err(ClaimRefused::Taken(_)), None) if self.grants.contains_key(&key) => {}
                (Err(ClaimRefused::Freed), None) if !adopt => {}
                (got, m) => {
                    return Err(format!(
                        "{key:?}: claim of {mine:?} gave {got:?}; names {m:?}"
                    ))
                }
            }
            match got {
                Ok(()) => self.counts.bump("claims_ok"),
                Err(e) => {
                    self.counts
                        .add("claims_freed", u64::from(e == ClaimRefused::Freed));
                    // The host hears its structure is not the key's.
                    self.hosts[h].owned.remove(&key);
                    self.counts.bump("claims_refused");
                }
            }
        }
        if self.rng.chance(80) {
            self.host_table.heartbeat(&addr, conn);
            self.hosts[h].claimed_here = true;
        }
        Ok(())
    }

    /// The referee restarts: an empty table, every connection gone, every
    /// host joins again and claims.
    fn restart(&mut self) -> Check {
        self.note("referee restarts".into());
        self.table = KeyTable::default();
        self.host_table = HostTable::default();
        self.made.clear();
        self.grants.clear();
        self.outstanding.clear();
        for h in 0..HOSTS {
            if let Some(c) = self.hosts[h].conn.take() {
                self.closed.insert(c);
            }
            self.hosts[h].creating.clear();
            self.hosts[h].claimed_here = false;
        }
        for h in 0..HOSTS {
            self.join(h)?;
        }
        Ok(())
    }

    fn expire(&mut self, by: Duration) -> Check {
        self.clock.advance(by);
        let now = self.clock.now();
        self.note(format!("clock +{}ms; expire", by.as_millis()));
        let late: Vec<Key> = self
            .grants
            .iter()
            .filter(|(_, g)| now.duration_since(g.since) > TIMEOUT)
            .map(|(k, _)| *k)
            .collect();
        for k in late {
            self.ended(k, "expired");
            self.counts.bump("expired");
        }
        let r = self.table.expire(now, TIMEOUT);
        self.replies(r)?;
        for g in self.grants.values() {
            if now.duration_since(g.since) > TIMEOUT {
                return Err(format!("a grant to conn {} outlived the time-out", g.conn));
            }
        }
        Ok(())
    }

    fn drop_key(&mut self, key: Key) -> Check {
        self.note(format!("administrator drops {key:?}"));
        let known = self.made.contains_key(&key) || self.grants.contains_key(&key);
        self.made.remove(&key);
        self.ended(key, "dropped");
        match self.table.drop_key(key.0, key.1) {
            Some(r) => {
                for (_, _, m) in &r {
                    if !matches!(m, Message::Error { errno, .. } if *errno == libc::EIDRM) {
                        return Err(format!("{key:?}: a dropped key's waiter got {m:?}"));
                    }
                }
                self.replies(r)
            }
            None if known => Err(format!("{key:?}: known, but drop found nothing")),
            None => Ok(()),
        }
    }

    fn check(&self) -> Check {
        let listed: BTreeMap<Key, Structure> = self
            .table
            .list(self.clock.now())
            .into_iter()
            .map(|k| {
                (
                    (k.kind, k.key),
                    Structure {
                        owner: k.owner,
                        id: k.id,
                        incarnation: k.incarnation,
                    },
                )
            })
            .collect();
        if listed != self.made {
            return Err(format!("the table lists {listed:?}; made {:?}", self.made));
        }
        for k in self.grants.keys() {
            if !self.table.knows(k.0, k.1) {
                return Err(format!("{k:?} is being created but the table forgot it"));
            }
        }
        Ok(())
    }
}

impl super::World for World {
    fn step(&mut self) -> Check {
        let h = self.rng.below(HOSTS);
        let kind = [IpcKind::Msg, IpcKind::Sem][self.rng.below(2)];
        let key = (kind, 1 + self.rng.below(3) as i32);
        match self.rng.below(100) {
            0..=34 => self.get(h, key),
            35..=49 => self.commit(h),
            50..=56 => self.abort(h),
            57..=64 => self.remove(h, key),
            65..=69 => self.close(h),
            70..=79 => self.join(h),
            80 => self.restart(),
            81..=82 => self.drop_key(key),
            83..=87 => self.expire(TIMEOUT + Duration::from_millis(1)),
            _ => {
                let ms = self.rng.below(500) as u64;
                self.expire(Duration::from_millis(ms))
            }
        }?;
        self.check()
    }

    /// Creators finish (commit or abort), links come back, the clock
    /// passes the time-out: then every request on an open connection is
    /// answered.
    fn settle(&mut self) -> Check {
        for h in 0..HOSTS {
            self.join(h)?;
        }
        for _ in 0..100 {
            let busy: Vec<usize> = (0..HOSTS)
                .filter(|&h| !self.hosts[h].creating.is_empty())
                .collect();
            let Some(&h) = busy.first() else {
                break;
            };
            if self.rng.chance(70) {
                self.commit(h)?;
            } else {
                self.abort(h)?;
            }
            self.check()?;
        }
        self.expire(TIMEOUT + Duration::from_millis(1))?;
        if let Some(((c, q), r)) = self.outstanding.iter().next() {
            return Err(format!("conn {c} req {q} ({r:?}) was never answered"));
        }
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
fn keys_simulation() {
    simulate(
        "keys",
        DEFAULT_SEEDS,
        STEPS,
        &[
            "grants",
            "parked_then_served",
            "commits",
            "eexist",
            "expired",
            "handed_over",
            "claims_ok",
            "claims_refused",
            "claims_freed",
        ],
        World::new,
    );
}
