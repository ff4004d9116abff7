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

use crate::{done, local_call};
use dipc_common::config::Config;
use dipc_common::sysv;
use dipc_common::wire::{IpcKind, Message};
use log::debug;

/// Asks this host's dipcd to free `key` (naming `id`) on the referee.
fn free(config: &Config, kind: IpcKind, key: i32, id: i32) {
    match local_call(
        config,
        &config.back_end_socket(),
        &Message::KeyRemove { kind, key, id },
    ) {
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
/// gone, or names another structure than the referee's `id`, the
/// referee's entry is freed before the reply, so that the caller's next
/// look-up of the key finds it free.
///
/// `IPC_PRIVATE` is refused (`EINVAL`): it names no existing structure, a
/// get of it always creates a fresh private one, and no distributed key is
/// private (the library makes `IPC_PRIVATE` a plain local get). Taken
/// here, it would let a caller on another host create structures on this
/// one, without limit and outside the referee's table.
pub fn get(config: &Config, kind: IpcKind, key: i32, id: i32, flags: i32, size: u64) -> Message {
    if key == libc::IPC_PRIVATE {
        return Message::error(
            libc::EINVAL,
            format!(
                "IPC_PRIVATE is not a distributed key: a {} get of it from another host is refused",
                kind.name()
            ),
        );
    }
    let r = sysv::get(kind, key, size, flags & 0o777);
    let stale = match r {
        Ok(have) => have != id,
        Err(e) => e == libc::ENOENT,
    };
    if stale {
        free(config, kind, key, id);
    }
    done(r)
}

/// A structure an `IPC_RMID` request is about to remove, with its key if
/// the caller may see it (`IPC_STAT` needs read permission, `IPC_RMID`
/// ownership: a key the caller cannot read is freed at its next get).
pub struct Removal {
    kind: IpcKind,
    id: i32,
    key: i32,
}

impl Removal {
    pub fn of(req: &Message) -> Option<Removal> {
        let (kind, id) = match req {
            Message::MsgCtl {
                id,
                cmd: libc::IPC_RMID,
                ..
            } => (IpcKind::Msg, *id),
            Message::SemCtl {
                id,
                cmd: libc::IPC_RMID,
                ..
            } => (IpcKind::Sem, *id),
            Message::ShmCtl {
                id,
                cmd: libc::IPC_RMID,
                ..
            } => (IpcKind::Shm, *id),
            _ => return None,
        };
        let key = match kind {
            IpcKind::Msg => sysv::msgctl_stat(id).ok()?.perm.key,
            IpcKind::Sem => sysv::semctl_stat(id).ok()?.perm.key,
            IpcKind::Shm => sysv::shmctl_stat(id).ok()?.perm.key,
        };
        (key != libc::IPC_PRIVATE).then_some(Removal { kind, id, key })
    }

    /// After the request was answered with `reply`.
    pub fn done(self, config: &Config, reply: &Message) {
        if matches!(reply, Message::Done { .. }) {
            free(config, self.kind, self.key, self.id);
        }
    }
}
