//! Checking that a remote call's id still names the structure that the
//! caller's get resolved it from (its key, in this host's incarnation).
//!
//! A caller keeps the owner's ids it got, and System V ids are only
//! numbers: after this host's reboot (a fresh IPC namespace numbers its
//! structures from the start again), or once a key was freed (`IPC_RMID`,
//! `dipcref rm-key`) and the id's structure is no longer the key's, a call
//! on an old id must not reach whatever carries that number now. So every
//! call carries the key and the incarnation its get saw (`wire::Origin`),
//! and is refused with `EIDRM` (the kernel's errno for a removed
//! structure) unless
//!
//! 1. the incarnation is this host's (else the structure was in an IPC
//!    namespace this host no longer has),
//! 2. the kernel still has the id under that key (`/proc/sysvipc`, which
//!    needs no permission on the structure), and
//! 3. the referee still has the key owned here under that id and
//!    incarnation (an orphan left by `dipcref rm-key` has its key and id,
//!    but the key has been given up, and may name a structure elsewhere).
//!
//! An id that names nothing gets `EINVAL`, as from the kernel.
//!
//! Checks 2 and 3 cost a read of the kernel's table and a round trip to
//! the referee, far more than a call, so they are made once per id and
//! worker and the verdict is kept: a worker serves one process for its
//! whole life, which uses few ids, and every later call on the id costs
//! only a hash look-up and a comparison. A get made through this worker
//! (`IpcGet`, right after the caller asked the referee) counts as check 3.
//! A kept verdict is not revised while the worker lives: a key freed by
//! `IPC_RMID` leaves an id that the kernel refuses by itself, and this
//! host's reboot ends its workers; only `rm-key` of the key of a live
//! structure leaves the processes already using it on it (see the README).

use crate::{fail, local_call};
use dipc_common::config::Config;
use dipc_common::sysv;
use dipc_common::wire::{IpcKind, Message, Origin, ToWorker};
use std::collections::HashMap;
use std::net::SocketAddr;

/// Ids whose verdict is kept. A caller that names more (hostile, or
/// scanning) only makes the worker check again: the table is cleared.
const MAX_KNOWN: usize = 4096;

pub struct Origins {
    incarnation: u64,
    me: SocketAddr,
    /// Verdicts: whether the id named the origin's structure.
    known: HashMap<(IpcKind, i32), (Origin, bool)>,
}

/// The reply to a call on a stale id.
pub fn stale(kind: IpcKind, id: i32, why: &str) -> Message {
    Message::error(
        libc::EIDRM,
        format!(
            "{} id {id} no longer names the structure of its key: {why}",
            kind.name()
        ),
    )
}

impl Origins {
    pub fn new(incarnation: u64, me: SocketAddr) -> Origins {
        Origins {
            incarnation,
            me,
            known: HashMap::new(),
        }
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Whether `(kind, id)` still names what `origin` says; the error
    /// reply if not.
    pub fn check(
        &mut self,
        config: &Config,
        kind: IpcKind,
        id: i32,
        origin: Origin,
    ) -> Result<(), Message> {
        if origin.incarnation != self.incarnation {
            return Err(stale(kind, id, "its owner host has restarted since"));
        }
        if let Some((o, current)) = self.known.get(&(kind, id)) {
            if *o == origin {
                return if *current {
                    Ok(())
                } else {
                    Err(stale(
                        kind,
                        id,
                        "its key was freed or names another structure",
                    ))
                };
            }
        }
        let current = match sysv::key_of(kind, id) {
            None => return Err(fail(libc::EINVAL)),
            Some(k) => k == origin.key && self.registered(config, kind, id, origin)?,
        };
        self.remember(kind, id, origin, current);
        if current {
            Ok(())
        } else {
            Err(stale(
                kind,
                id,
                "its key was freed or names another structure",
            ))
        }
    }

    /// Whether the referee has `origin`'s key owned here as `id` in this
    /// incarnation.
    fn registered(
        &self,
        config: &Config,
        kind: IpcKind,
        id: i32,
        origin: Origin,
    ) -> Result<bool, Message> {
        let ask = Message::KeyCheck {
            kind,
            key: origin.key,
        };
        match local_call(config, &config.back_end_socket(), &ask) {
            Ok(Message::KeyOwner {
                owner,
                id: have,
                origin: o,
                ..
            }) => Ok(owner == self.me && have == id && o.incarnation == self.incarnation),
            Ok(other) => Err(Message::error(
                libc::EPROTO,
                format!("dipcd answered a key check with {}", other.kind().name()),
            )),
            Err(Message::Error {
                errno: libc::ENOENT,
                ..
            }) => Ok(false),
            // The referee cannot be asked: the call fails with why (it is
            // not known to be safe), and is checked again next time.
            Err(e) => Err(e),
        }
    }

    /// A get of `origin.key`, which the caller had just looked up on the
    /// referee, found it here as `id`.
    pub fn got(&mut self, kind: IpcKind, id: i32, origin: Origin) {
        if origin.incarnation == self.incarnation {
            self.remember(kind, id, origin, true);
        }
    }

    /// `id` was removed.
    pub fn forget(&mut self, kind: IpcKind, id: i32) {
        self.known.remove(&(kind, id));
    }

    fn remember(&mut self, kind: IpcKind, id: i32, origin: Origin, current: bool) {
        if self.known.len() >= MAX_KNOWN {
            self.known.clear();
        }
        self.known.insert((kind, id), (origin, current));
    }
}

/// The structure a call is about, with what the caller resolved its id
/// from; `None` for requests that name no System V structure.
pub fn target(req: &ToWorker) -> Option<(IpcKind, i32, Origin)> {
    match req {
        ToWorker::MsgSnd { id, origin, .. }
        | ToWorker::MsgRcv { id, origin, .. }
        | ToWorker::MsgCtl { id, origin, .. } => Some((IpcKind::Msg, *id, *origin)),
        ToWorker::SemOp { id, origin, .. } | ToWorker::SemCtl { id, origin, .. } => {
            Some((IpcKind::Sem, *id, *origin))
        }
        ToWorker::ShmAttach { id, origin, .. }
        | ToWorker::ShmCtl { id, origin, .. }
        | ToWorker::ShmQuery { id, origin } => Some((IpcKind::Shm, *id, *origin)),
        ToWorker::IpcStatAny { kind, id, origin } => Some((*kind, *id, *origin)),
        _ => None,
    }
}
