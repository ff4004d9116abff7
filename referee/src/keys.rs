//! The referee's table of distributed keys, and the arbitration of
//! creation races.
//!
//! The first host to ask for an unknown key with `IPC_CREAT` wins: it is
//! told to create the structure (`KeyOwner` with `id == -1`) and must answer
//! `KeyCommit` (or `KeyAbort`). Until then every other request for the same
//! key waits here, so all racers end with the same structure, and with
//! `IPC_EXCL` exactly one succeeds cluster-wide: the waiters get `EEXIST`
//! when the creator commits. A key already made is answered with its
//! owner even to `IPC_EXCL`: the structure may be gone without the referee
//! knowing (removed by a plain `IPC_RMID`, or lost with its owner's IPC
//! namespace), which only the owner can tell; the asker's library checks
//! there and fails with `EEXIST` itself, or has the stale entry freed and
//! asks again.
//!
//! The table lives in the referee's memory only. A restarted referee
//! rebuilds it from the hosts: each host, when it joins, claims the keys
//! it owns ([`KeyTable::claim`]), and until hosts have had time to do so
//! (`Config::referee_settle`) the referee holds back every answer that
//! depends on a key being unknown (see the referee's `parked`). A claim
//! never displaces an entry: the first structure recorded for a key keeps
//! it, whatever comes later, so a key names one structure at a time.

use dipc_common::wire::{IpcKind, KeyInfo, Message, Origin};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A request parked until the key's creator commits or aborts.
#[derive(Debug, Clone)]
struct Waiter {
    conn: usize,
    req: u64,
    asker: SocketAddr,
    flags: i32,
}

#[derive(Debug)]
enum State {
    Creating {
        conn: usize,
        since: Instant,
        waiters: Vec<Waiter>,
    },
    Ready {
        id: i32,
        /// The owner's incarnation when it made the structure: the same
        /// id in another incarnation is another structure.
        incarnation: u64,
        creator_uid: u32,
    },
}

#[derive(Debug)]
struct Entry {
    owner: SocketAddr,
    created: Instant,
    state: State,
}

/// What [`KeyTable::remove`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Removed,
    /// The key names another structure (another id, or the same id in
    /// another incarnation of the owner), or none (nothing to do).
    NoSuchEntry,
    /// Refused: the notice did not come from the owner, this host.
    NotOwner(SocketAddr),
}

/// Why a claim was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimRefused {
    /// The key names another structure (another host's, or another of
    /// this host), or is being created.
    Taken(String),
    /// The key was freed while the claiming host was away.
    Freed,
}

/// A reply to send: connection, request id, message.
pub type Reply = (usize, u64, Message);

#[derive(Debug, Default)]
pub struct KeyTable {
    keys: BTreeMap<(IpcKind, i32), Entry>,
}

impl KeyTable {
    /// A host asks for a key. Returns the replies to send now (none if the
    /// request must wait for a creator).
    pub fn get(
        &mut self,
        kind: IpcKind,
        key: i32,
        flags: i32,
        asker: SocketAddr,
        (conn, req): (usize, u64),
        now: Instant,
    ) -> Vec<Reply> {
        let creat = flags & libc::IPC_CREAT != 0;
        if key == libc::IPC_PRIVATE {
            // Every get of it makes a new structure: it names none to share.
            return vec![(
                conn,
                req,
                Message::error(libc::EINVAL, "IPC_PRIVATE is not a distributed key"),
            )];
        }
        match self.keys.get_mut(&(kind, key)) {
            None if creat => {
                self.keys.insert(
                    (kind, key),
                    Entry {
                        owner: asker,
                        created: now,
                        state: State::Creating {
                            conn,
                            since: now,
                            waiters: Vec::new(),
                        },
                    },
                );
                vec![(
                    conn,
                    req,
                    Message::KeyOwner {
                        owner: asker,
                        id: -1,
                        local_id: -1,
                        origin: Origin {
                            key,
                            incarnation: 0,
                        },
                    },
                )]
            }
            None => vec![(
                conn,
                req,
                Message::error(
                    libc::ENOENT,
                    format!("no distributed {} with key {key:#x}", kind.name()),
                ),
            )],
            Some(Entry {
                state: State::Creating { waiters, .. },
                ..
            }) => {
                waiters.push(Waiter {
                    conn,
                    req,
                    asker,
                    flags,
                });
                Vec::new()
            }
            Some(Entry {
                owner,
                state: State::Ready {
                    id, incarnation, ..
                },
                ..
            }) => vec![(
                conn,
                req,
                ready_reply(kind, key, *owner, (*id, *incarnation), false),
            )],
        }
    }

    /// The structure a key names, if it is made: owner, id, incarnation.
    fn ready(&self, kind: IpcKind, key: i32) -> Option<(SocketAddr, i32, u64)> {
        match self.keys.get(&(kind, key))? {
            Entry {
                owner,
                state: State::Ready {
                    id, incarnation, ..
                },
                ..
            } => Some((*owner, *id, *incarnation)),
            _ => None,
        }
    }

    /// Whether the table has an entry (ready or being created) for a key.
    pub fn knows(&self, kind: IpcKind, key: i32) -> bool {
        self.keys.contains_key(&(kind, key))
    }

    /// Host `from` states that it owns `key` as `(id, incarnation)` (its
    /// dipcd checked its kernel). `adopt`: the key may be recorded if the
    /// table has none, because this referee never had this host's word
    /// on it (it is the host's first join here); otherwise a key missing
    /// from the table was freed while the host was away (`dipcref
    /// rm-key`) and stays free. An entry already in the table is never
    /// replaced: two hosts claiming one key (one of them cut off while the
    /// other made the key anew) leave it with the first recorded.
    pub fn claim(
        &mut self,
        kind: IpcKind,
        key: i32,
        (id, incarnation): (i32, u64),
        creator_uid: u32,
        (from, adopt): (SocketAddr, bool),
        now: Instant,
    ) -> Result<(), ClaimRefused> {
        if self.ready(kind, key) == Some((from, id, incarnation)) {
            return Ok(());
        }
        match self.keys.get(&(kind, key)) {
            Some(e) => Err(ClaimRefused::Taken(match e.state {
                State::Ready { id, .. } => format!("owned by {} as id {id}", e.owner),
                State::Creating { .. } => format!("being created by {}", e.owner),
            })),
            None if key == libc::IPC_PRIVATE || id < 0 => Err(ClaimRefused::Taken(format!(
                "{key:#x}/{id} names no distributed structure"
            ))),
            None if adopt => {
                self.keys.insert(
                    (kind, key),
                    Entry {
                        owner: from,
                        created: now,
                        state: State::Ready {
                            id,
                            incarnation,
                            creator_uid,
                        },
                    },
                );
                Ok(())
            }
            None => Err(ClaimRefused::Freed),
        }
    }

    /// The creator made the structure `(id, incarnation)`. Returns the
    /// replies for the waiters and for the creator.
    pub fn commit(
        &mut self,
        kind: IpcKind,
        key: i32,
        (id, incarnation): (i32, u64),
        creator_uid: u32,
        conn: usize,
        req: u64,
    ) -> Vec<Reply> {
        if id < 0 {
            // -1 is what a grant says ("create it"), never a structure's id;
            // recorded, it would make every later get a grant that no one
            // can commit.
            return vec![(
                conn,
                req,
                Message::error(libc::EINVAL, format!("{id} is not a structure's id")),
            )];
        }
        let Some(e) = self.keys.get_mut(&(kind, key)) else {
            return vec![(
                conn,
                req,
                Message::error(libc::ENOENT, "key no longer pending"),
            )];
        };
        let waiters = match &mut e.state {
            State::Creating {
                conn: c, waiters, ..
            } if *c == conn => std::mem::take(waiters),
            _ => {
                return vec![(
                    conn,
                    req,
                    Message::error(libc::EPERM, "not this key's creator"),
                )]
            }
        };
        e.state = State::Ready {
            id,
            incarnation,
            creator_uid,
        };
        let owner = e.owner;
        let mut out: Vec<Reply> = waiters
            .into_iter()
            .map(|w| {
                let excl = w.flags & libc::IPC_CREAT != 0 && w.flags & libc::IPC_EXCL != 0;
                let reply = ready_reply(kind, key, owner, (id, incarnation), excl);
                (w.conn, w.req, reply)
            })
            .collect();
        out.push((conn, req, Message::Done { value: 0 }));
        out
    }

    /// The creator gave up (or vanished): the key is free again and the
    /// waiters are served afresh (one of them may become the creator).
    pub fn abort(&mut self, kind: IpcKind, key: i32, conn: usize, now: Instant) -> Vec<Reply> {
        let waiters = match self.keys.get(&(kind, key)) {
            Some(Entry {
                state: State::Creating { conn: c, .. },
                ..
            }) if *c == conn => match self.keys.remove(&(kind, key)) {
                Some(Entry {
                    state: State::Creating { waiters, .. },
                    ..
                }) => waiters,
                _ => Vec::new(),
            },
            _ => return Vec::new(),
        };
        let mut out = Vec::new();
        for w in waiters {
            out.extend(self.get(kind, key, w.flags, w.asker, (w.conn, w.req), now));
        }
        out
    }

    /// Frees a key after `IPC_RMID`, if it still names that structure (id
    /// and incarnation) and `from` is the host that owns it: only that
    /// host's dipcd can see, in its kernel, that the structure is gone (it
    /// checks before it relays), so a notice from any other host could
    /// free a live key.
    pub fn remove(
        &mut self,
        kind: IpcKind,
        key: i32,
        (id, incarnation): (i32, u64),
        from: SocketAddr,
    ) -> Removal {
        match self.ready(kind, key) {
            Some((owner, have, have_inc)) if have == id => {
                // Another host has no say, whatever incarnation it names
                // (its dipcd fills in its own when a local user leaves it
                // out).
                if owner != from {
                    return Removal::NotOwner(owner);
                }
                if have_inc != incarnation {
                    return Removal::NoSuchEntry;
                }
                self.keys.remove(&(kind, key));
                Removal::Removed
            }
            _ => Removal::NoSuchEntry,
        }
    }

    /// Administrative removal, whatever the state. Waiters get `EIDRM`.
    pub fn drop_key(&mut self, kind: IpcKind, key: i32) -> Option<Vec<Reply>> {
        let e = self.keys.remove(&(kind, key))?;
        Some(match e.state {
            State::Creating { waiters, .. } => waiters
                .into_iter()
                .map(|w| {
                    (
                        w.conn,
                        w.req,
                        Message::error(libc::EIDRM, "key removed by the administrator"),
                    )
                })
                .collect(),
            State::Ready { .. } => Vec::new(),
        })
    }

    /// A connection closed: creations it had not finished are aborted, and
    /// its waiting requests forgotten.
    pub fn conn_closed(&mut self, conn: usize, now: Instant) -> Vec<Reply> {
        for e in self.keys.values_mut() {
            if let State::Creating { waiters, .. } = &mut e.state {
                waiters.retain(|w| w.conn != conn);
            }
        }
        let orphans: Vec<(IpcKind, i32)> = self
            .keys
            .iter()
            .filter(|(_, e)| matches!(e.state, State::Creating { conn: c, .. } if c == conn))
            .map(|(k, _)| *k)
            .collect();
        let mut out = Vec::new();
        for (kind, key) in orphans {
            out.extend(self.abort(kind, key, conn, now));
        }
        out
    }

    /// Creations not committed within `timeout` are aborted.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> Vec<Reply> {
        let late: Vec<(IpcKind, i32, usize)> = self
            .keys
            .iter()
            .filter_map(|(k, e)| match e.state {
                State::Creating { conn, since, .. } if now.duration_since(since) > timeout => {
                    Some((k.0, k.1, conn))
                }
                _ => None,
            })
            .collect();
        let mut out = Vec::new();
        for (kind, key, conn) in late {
            out.extend(self.abort(kind, key, conn, now));
        }
        out
    }

    #[cfg(test)]
    pub fn list(&self, now: Instant) -> Vec<KeyInfo> {
        self.page(None, usize::MAX, now).0
    }

    /// Up to `limit` keys after `after` in (kind, key) order, and whether
    /// more follow.
    pub fn page(
        &self,
        after: Option<(IpcKind, i32)>,
        limit: usize,
        now: Instant,
    ) -> (Vec<KeyInfo>, bool) {
        use std::ops::Bound;
        let from = match after {
            Some(k) => Bound::Excluded(k),
            None => Bound::Unbounded,
        };
        let mut ready = self
            .keys
            .range((from, Bound::Unbounded))
            .filter_map(|((kind, key), e)| match e.state {
                State::Ready {
                    id,
                    incarnation,
                    creator_uid,
                } => Some(KeyInfo {
                    kind: *kind,
                    key: *key,
                    owner: e.owner,
                    id,
                    creator_uid,
                    age_ms: now.duration_since(e.created).as_millis() as u64,
                    incarnation,
                }),
                State::Creating { .. } => None,
            });
        let page: Vec<KeyInfo> = ready.by_ref().take(limit).collect();
        let more = ready.next().is_some();
        (page, more)
    }
}

fn ready_reply(
    kind: IpcKind,
    key: i32,
    owner: SocketAddr,
    (id, incarnation): (i32, u64),
    excl: bool,
) -> Message {
    if excl {
        Message::error(
            libc::EEXIST,
            format!(
                "distributed {} with key {key:#x} exists (on {owner})",
                kind.name()
            ),
        )
    } else {
        Message::KeyOwner {
            owner,
            id,
            local_id: id,
            origin: Origin { key, incarnation },
        }
    }
}

#[cfg(test)]
mod tests;
