//! Freeing a distributed key on the referee when its structure has gone
//! from this host, its owner: after an `IPC_RMID` made for a remote
//! caller, and when a get finds that the key no longer names the structure
//! the referee has for it (removed by a plain `IPC_RMID`, which told no
//! one).
//!
//! The referee frees a key only at the word of its owner host, and that
//! host's dipcd passes the word on only once its kernel shows the structure
//! gone; the worker is simply the process on the owner that learns it
//! first. A caller on another host could not do it: its own dipcd cannot
//! see the owner's kernel.

use crate::origin::Origins;
use crate::{done, fail, local_call};
use dipc_common::auth::{Vouch, VouchKey};
use dipc_common::config::Config;
use dipc_common::sysv;
use dipc_common::wire::{IpcKind, Message, Origin, ToWorker};
use log::debug;

/// Asks this host's dipcd to free `key` (naming `id` in `incarnation`) on
/// the referee.
fn free(config: &Config, kind: IpcKind, key: i32, id: i32, incarnation: u64) {
    let msg = Message::KeyRemove {
        kind,
        key,
        id,
        incarnation,
    };
    match local_call(config, &config.back_end_socket(), &msg) {
        Ok(_) => debug!("worker: {} key {key:#x} (id {id}) freed", kind.name()),
        // The next get of the key tries again.
        Err(e) => debug!(
            "worker: {} key {key:#x} (id {id}) not freed: {e:?}",
            kind.name()
        ),
    }
}

/// The plain get of an existing key, as the caller, asking only for the
/// permission bits of `flags`: the owner's kernel answers as it would a
/// local get (`EACCES`, `EINVAL`, `ENOENT` if it has gone). If the key has
/// gone, or names another structure than the referee's `id`, or the
/// referee's entry is from another incarnation of this host (before a
/// reboot), the entry is freed before the reply (`ENOENT` for the last),
/// so that the caller's next look-up of the key finds it free. A get that
/// finds the referee's structure tells `origins` (see `Origins::got`).
///
/// `IPC_PRIVATE` is refused (`EINVAL`): it names no existing structure, a
/// get of it always creates a fresh private one, and no distributed key is
/// private (the library makes `IPC_PRIVATE` a plain local get). Taken
/// here, it would let a caller on another host create structures on this
/// one, without limit and outside the referee's table.
///
/// A get that succeeds is answered `Vouched`: the id with this host's
/// proof that `uid` (the caller as its host stated it) may use it, which
/// the caller's dipcd asks for before it makes a placeholder.
pub fn get(
    config: &Config,
    origins: &mut Origins,
    kind: IpcKind,
    (key, id, incarnation): (i32, i32, u64),
    flags: i32,
    size: u64,
    (vouch_key, uid): (&VouchKey, u32),
) -> Message {
    if key == libc::IPC_PRIVATE {
        return Message::error(
            libc::EINVAL,
            format!(
                "IPC_PRIVATE is not a distributed key: a {} get of it from another host is refused",
                kind.name()
            ),
        );
    }
    if incarnation != origins.incarnation() {
        free(config, kind, key, id, incarnation);
        return fail(libc::ENOENT);
    }
    let r = sysv::get(kind, key, size, flags & 0o777);
    let stale = match r {
        Ok(have) => have != id,
        Err(e) => e == libc::ENOENT,
    };
    if stale {
        free(config, kind, key, id, incarnation);
    } else if r.is_ok() {
        origins.got(kind, id, Origin { key, incarnation });
    }
    match r {
        Ok(id) => {
            let v = Vouch {
                kind,
                key,
                id,
                incarnation,
                owner: config.front_end_addr(),
                uid,
            };
            Message::Vouched {
                id,
                vouch: vouch_key.sign(&v),
            }
        }
        Err(e) => done(Err(e)),
    }
}

/// A structure an `IPC_RMID` request is about to remove, with its key.
/// The key is the one the call carries, which `Origins::check` has found
/// the kernel to have for the id: `IPC_RMID` needs only ownership, so a
/// structure may be removed by a caller who may not read it (`IPC_STAT`
/// would fail), and its key must be freed all the same.
pub struct Removal {
    kind: IpcKind,
    id: i32,
    origin: Origin,
}

impl Removal {
    /// For a request that passed `Origins::check`.
    pub fn of(req: &ToWorker) -> Option<Removal> {
        let cmd = match req {
            ToWorker::MsgCtl { cmd, .. }
            | ToWorker::SemCtl { cmd, .. }
            | ToWorker::ShmCtl { cmd, .. } => *cmd,
            _ => return None,
        };
        let (kind, id, origin) = crate::origin::target(req).filter(|_| cmd == libc::IPC_RMID)?;
        (origin.key != libc::IPC_PRIVATE).then_some(Removal { kind, id, origin })
    }

    /// After the request was answered with `reply`.
    pub fn done(self, config: &Config, origins: &mut Origins, reply: &Message) {
        if matches!(reply, Message::Done { .. }) {
            origins.forget(self.kind, self.id);
            let o = self.origin;
            free(config, self.kind, o.key, self.id, o.incarnation);
        }
    }
}
