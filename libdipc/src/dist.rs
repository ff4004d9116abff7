//! What every distributed kind shares, as the kernel's `ipc/util.c` serves
//! `msg.c`, `sem.c` and `shm.c`: getting a key through the referee (and
//! creating the structure here when this host wins), classifying ids, the
//! control calls that take the plain path here or go to the owner's worker
//! (`IPC_STAT`, `IPC_SET`, `IPC_RMID`, and a set's own commands), and
//! freeing the key after `IPC_RMID`. `msg`, `sem` and `shm` supply only
//! their kind's system calls and request ([`KindOps`]).

use crate::retry;
use crate::state::{self, Route};
use crate::ClientError;
use dipc_common::wire::{IpcKind, IpcPerm, IpcSet, Message, Origin, SemArg};
use std::net::SocketAddr;

/// Errors are raw `errno` values, as the System V calls give them.
pub type Errno = i32;

/// The flag that makes `msgget`, `semget` and `shmget` distributed: the
/// value Linux reserves for DIPC (octal 00010000).
pub const IPC_DIPC: i32 = 0o10000;

pub fn client_errno(e: ClientError) -> Errno {
    log::debug!("dipc: {e}");
    e.errno()
}

/// What differs between the kinds: their system calls and the control
/// request their owner's worker takes.
pub struct KindOps {
    pub kind: IpcKind,
    /// The kind's `*get(key, flags, size)`; `size` is `nsems` for a
    /// semaphore set, the segment size for shared memory, unused for
    /// queues.
    pub get: fn(i32, i32, u64) -> Result<i32, Errno>,
    /// `IPC_RMID`.
    pub rmid: fn(i32) -> Result<(), Errno>,
    /// `IPC_SET`.
    pub set: fn(i32, &IpcSet) -> Result<(), Errno>,
    /// The permissions `IPC_STAT` shows.
    pub perm: fn(i32) -> Result<IpcPerm, Errno>,
    /// The control request for the owner's worker on its `(id, origin)`:
    /// semaphore number (0 but for a set's own commands), command and
    /// argument. Queues and segments take only `SemArg::None` and
    /// `SemArg::Set`.
    pub ctl: fn((i32, Origin), i32, i32, SemArg) -> Message,
}

/// `IPC_SET`'s argument as queues' and segments' control requests carry
/// it (see [`KindOps::ctl`]).
pub fn ipc_set(arg: SemArg) -> Option<IpcSet> {
    match arg {
        SemArg::Set(s) => Some(s),
        _ => None,
    }
}

/// `*get`: plain without `IPC_DIPC` (or for `IPC_PRIVATE`), else through
/// the referee.
pub fn get(ops: &KindOps, key: i32, flags: i32, size: u64) -> Result<i32, Errno> {
    if flags & IPC_DIPC == 0 || key == libc::IPC_PRIVATE {
        return (ops.get)(key, flags & !IPC_DIPC, size).and_then(|id| plain(ops.kind, id));
    }
    let flags = flags & !IPC_DIPC;
    // The referee answers an existing key with its owner even to
    // IPC_EXCL (it cannot tell whether the structure still exists): the
    // check below finds out, and only a live one is EEXIST.
    let excl = flags & libc::IPC_CREAT != 0 && flags & libc::IPC_EXCL != 0;
    let kind = ops.kind;
    let me = state::config().map_err(client_errno)?.front_end_addr();
    // A second round only after clearing a stale entry (below).
    for _ in 0..2 {
        // The grant, if this host wins the creation, belongs to this
        // connection: the commit or abort must go on it. A look-up that
        // failed in transit is made again: it had no grant (see `retry`).
        let (mut ctl, reply) = retry::retrying(|| {
            let mut ctl = state::control_conn()?;
            let reply = ctl.call(&Message::KeyGet { kind, key, flags })?;
            Ok((ctl, reply))
        })
        .map_err(client_errno)?;
        let Message::KeyOwner {
            owner,
            id,
            local_id,
            origin,
        } = reply
        else {
            return Err(libc::EPROTO);
        };
        if id == -1 {
            return create(ops, &mut ctl, key, flags, size);
        }
        drop(ctl);
        // Frees the referee's entry for the key (the structure it names is
        // gone; this host's dipcd checks) before asking again.
        let free = || {
            let _ = state::control(&Message::KeyRemove {
                kind,
                key,
                id,
                incarnation: origin.incarnation,
            });
        };
        if owner == me {
            // Ours: the kernel checks permissions as for any *get.
            let plain = match excl {
                // Only whether it exists: EEXIST comes before permissions.
                true => (ops.get)(key, 0, 0),
                false => (ops.get)(key, flags & !(libc::IPC_CREAT | libc::IPC_EXCL), size),
            };
            match plain {
                Ok(lid) if lid == id => {
                    if excl {
                        return Err(libc::EEXIST);
                    }
                    return bind(kind, lid, Route::Owned { key }, || Ok(origin));
                }
                // Removed without the referee being told (a plain
                // IPC_RMID), and maybe made again by a plain get: free the
                // key and ask again.
                Ok(_) | Err(libc::ENOENT) => {
                    free();
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        // Another host's: its kernel checks the permissions asked for (and
        // a set's or segment's size) with this caller's credentials, as a
        // local *get of the key would (which checks neither for IPC_EXCL
        // of an existing key: EEXIST comes first).
        let check = Message::IpcGet {
            kind,
            key,
            id,
            incarnation: origin.incarnation,
            flags: if excl { 0 } else { flags & 0o777 },
            size: if excl { 0 } else { size },
        };
        let vouch = match state::remote(owner, &check, false).map_err(client_errno) {
            Ok(Message::Vouched { id: have, .. }) if have == id && excl => {
                return Err(libc::EEXIST)
            }
            Ok(Message::Vouched { id: have, vouch }) if have == id => vouch,
            // Removed on the owner without the referee being told (the
            // key may since name another structure there): the owner's
            // worker has freed the key; ask again.
            Ok(Message::Vouched { .. }) | Err(libc::ENOENT) => continue,
            Ok(_) => return Err(libc::EPROTO),
            Err(e) => return Err(e),
        };
        // The first get of the key on this host: dipcd makes the local
        // placeholder now that the owner has vouched for this caller.
        let local_id = match local_id {
            -1 => placeholder(kind, key, (owner, id, origin), vouch)?,
            l => l,
        };
        return bind(kind, local_id, Route::Remote { owner, id, origin }, || {
            Ok(origin)
        });
    }
    Err(libc::ENOENT)
}

/// This host's placeholder id for `key`, owned by `owner` as `id`, made
/// by dipcd against the owner's `vouch` for this caller.
fn placeholder(
    kind: IpcKind,
    key: i32,
    (owner, id, origin): (SocketAddr, i32, Origin),
    vouch: [u8; 32],
) -> Result<i32, Errno> {
    let ask = Message::Placeholder {
        kind,
        key,
        owner,
        id,
        origin,
        vouch,
    };
    match state::control(&ask).map_err(client_errno)? {
        Message::KeyOwner { local_id, .. } if local_id >= 0 => Ok(local_id),
        _ => Err(libc::EPROTO),
    }
}

/// This host won the creation of `key`: makes the real structure here and
/// commits it on `ctl`, the connection the grant came on. dipcd takes the
/// commit only for a structure of that key that this process made (see
/// the back_end's `grants`), so the structure is made with `IPC_EXCL`
/// first: one that already carries the key on this host (made without
/// dipc) is used as a get without `IPC_EXCL` would, but never removed if
/// its commit is refused.
fn create(
    ops: &KindOps,
    ctl: &mut state::ControlConn,
    key: i32,
    flags: i32,
    size: u64,
) -> Result<i32, Errno> {
    let kind = ops.kind;
    let made = match (ops.get)(key, flags | libc::IPC_CREAT | libc::IPC_EXCL, size) {
        Ok(id) => Ok((id, true)),
        Err(libc::EEXIST) if flags & libc::IPC_EXCL == 0 => {
            (ops.get)(key, flags & !libc::IPC_CREAT, size).map(|id| (id, false))
        }
        Err(e) => Err(e),
    };
    let (id, ours) = match made {
        Ok(m) => m,
        Err(e) => {
            let _ = ctl.call(&Message::KeyAbort { kind, key });
            return Err(e);
        }
    };
    let commit = Message::KeyCommit {
        kind,
        key,
        id,
        // dipcd fills in the caller's uid and its incarnation
        creator_uid: 0,
        incarnation: 0,
    };
    if let Err(e) = ctl.call(&commit) {
        if ours {
            let _ = (ops.rmid)(id);
        }
        return Err(client_errno(e));
    }
    bind(kind, id, Route::Owned { key }, || {
        owned_origin(kind, key, id)
    })
}

/// Routes the structure this host's kernel knows as `id`, and returns the
/// id the process is to use for it: `id`, unless that number is one the
/// process brought from another host (see `crate::moved_ids`); then one
/// of its own, under which calls go through this host's worker like any
/// remote call (`origin` names the structure there).
fn bind(
    kind: IpcKind,
    id: i32,
    r: Route,
    origin: impl FnOnce() -> Result<Origin, Errno>,
) -> Result<i32, Errno> {
    if !state::is_moved(kind, id) {
        state::set_route(kind, id, r);
        return Ok(id);
    }
    let r = match r {
        Route::Remote { .. } => r,
        Route::Owned { .. } | Route::Local => Route::Remote {
            owner: state::config().map_err(client_errno)?.front_end_addr(),
            id,
            origin: origin()?,
        },
    };
    let alias = state::alias(kind, r);
    log::debug!(
        "dipc: {} id {id} of this host is a moved id of this process: known as {alias}",
        kind.name()
    );
    Ok(alias)
}

/// The origin of `key`, owned by this host as `id`, as the referee has it.
fn owned_origin(kind: IpcKind, key: i32, id: i32) -> Result<Origin, Errno> {
    let me = state::config().map_err(client_errno)?.front_end_addr();
    match look_up(kind, key).map_err(client_errno)? {
        Some((owner, have, origin)) if owner == me && have == id => Ok(origin),
        // Removed meanwhile.
        _ => Err(libc::EIDRM),
    }
}

/// Where the referee has `key` now: its owner, id there and origin;
/// `None` if no structure has it. Creates nothing: a look-up that the
/// referee answers with the key's creation (it is free) gives that up on
/// the connection it came on.
pub fn look_up(
    kind: IpcKind,
    key: i32,
) -> Result<Option<(SocketAddr, i32, Origin)>, crate::ClientError> {
    let mut ctl = state::control_conn()?;
    match ctl.call(&Message::KeyGet {
        kind,
        key,
        flags: 0,
    }) {
        Ok(Message::KeyOwner { id: -1, .. }) => {
            let _ = ctl.call(&Message::KeyAbort { kind, key });
            Ok(None)
        }
        Ok(Message::KeyOwner {
            owner, id, origin, ..
        }) => Ok(Some((owner, id, origin))),
        Ok(other) => Err(crate::ClientError::Unexpected(other.kind().name())),
        Err(crate::ClientError::Remote { errno, .. }) if errno == libc::ENOENT => Ok(None),
        Err(e) => Err(e),
    }
}

/// A plain (not distributed) get returned `id`: it is a structure of this
/// host, whatever this process knew the number as before (the placeholder
/// of a key that has since been freed, whose number the kernel gave to
/// another structure).
///
/// `ENOSPC` if the number is one the process brought from another host
/// (see `crate::moved_ids`): a structure that is not distributed has no
/// other way to be reached than its own id.
pub fn plain(kind: IpcKind, id: i32) -> Result<i32, Errno> {
    if state::is_moved(kind, id) {
        log::warn!(
            "dipc: {} id {id} of this host is also an id this process brought when it \
             moved here: use IPC_DIPC to reach it",
            kind.name()
        );
        return Err(libc::ENOSPC);
    }
    if state::route(kind, id).is_some_and(|r| r != Route::Local) {
        state::set_route(kind, id, Route::Local);
    }
    Ok(id)
}

/// Where `id` lives. An id this process has not had from [`get`] is looked
/// at once: a possible placeholder is resolved through dipcd, anything else
/// is local.
pub fn route(ops: &KindOps, id: i32) -> Route {
    if let Some(r) = state::route(ops.kind, id) {
        return r;
    }
    let mut r = Route::Local;
    if maybe_placeholder(ops, id) {
        if let Ok(Message::KeyOwner {
            owner,
            id: rid,
            origin,
            ..
        }) = state::control(&Message::Resolve {
            kind: ops.kind,
            local_id: id,
        }) {
            r = Route::Remote {
                owner,
                id: rid,
                origin,
            };
        }
    }
    state::set_route(ops.kind, id, r);
    r
}

/// Whether a local id could be a placeholder: `IPC_STAT` shows a private
/// key, mode 0 and creator root, or is refused to us.
fn maybe_placeholder(ops: &KindOps, id: i32) -> bool {
    match (ops.perm)(id) {
        Ok(p) => p.key == libc::IPC_PRIVATE && p.mode & 0o777 == 0 && p.cuid == 0,
        Err(e) => e == libc::EACCES,
    }
}

/// The control request `ctl` (`(num, cmd, arg)`, see [`KindOps::ctl`]) on
/// the structure `target` of `owner`, made by the worker there.
fn remote_ctl(
    ops: &KindOps,
    owner: SocketAddr,
    target: (i32, Origin),
    (num, cmd, arg): (i32, i32, SemArg),
) -> Result<Message, Errno> {
    let req = (ops.ctl)(target, num, cmd, arg);
    state::remote(owner, &req, false).map_err(client_errno)
}

/// A control call on `id`: `local(route)` on a structure of this host
/// (`Route::Local` or `Route::Owned`), else the request `ctl` to the
/// owner's worker, whose answer `reply` takes (`EPROTO` if it does not).
pub fn ctl<T>(
    ops: &KindOps,
    id: i32,
    local: impl FnOnce(Route) -> Result<T, Errno>,
    ctl: (i32, i32, SemArg),
    reply: impl FnOnce(Message) -> Option<T>,
) -> Result<T, Errno> {
    match route(ops, id) {
        Route::Remote { owner, id, origin } => {
            reply(remote_ctl(ops, owner, (id, origin), ctl)?).ok_or(libc::EPROTO)
        }
        r => local(r),
    }
}

/// The reply of a call that returns nothing: `Done`.
pub fn done(m: Message) -> Option<()> {
    matches!(m, Message::Done { .. }).then_some(())
}

/// `IPC_SET` of any kind.
pub fn set(ops: &KindOps, id: i32, s: &IpcSet) -> Result<(), Errno> {
    let ctl = (0, libc::IPC_SET, SemArg::Set(*s));
    self::ctl(ops, id, |_| (ops.set)(id, s), ctl, done)
}

/// `IPC_RMID` of any kind: the plain call for a structure of this host,
/// the call made by the worker on the owner for one owned elsewhere; a
/// distributed structure's key is then freed cluster-wide.
pub fn remove(ops: &KindOps, id: i32) -> Result<(), Errno> {
    match route(ops, id) {
        Route::Local => (ops.rmid)(id),
        Route::Owned { key } => {
            (ops.rmid)(id)?;
            removed(ops.kind, id, key);
            Ok(())
        }
        Route::Remote {
            owner,
            id: rid,
            origin,
        } => {
            let ctl = (0, libc::IPC_RMID, SemArg::None);
            match remote_ctl(ops, owner, (rid, origin), ctl)? {
                // The owner's worker has freed the key (only the owner may).
                Message::Done { .. } => {
                    state::forget_route(ops.kind, id);
                    Ok(())
                }
                _ => Err(libc::EPROTO),
            }
        }
    }
}

/// After a successful `IPC_RMID` of a distributed structure owned by this
/// host: free the key cluster-wide (every host then drops its
/// placeholder). This host's dipcd checks with the kernel that it is gone.
fn removed(kind: IpcKind, id: i32, key: i32) {
    state::forget_route(kind, id);
    if key != libc::IPC_PRIVATE {
        // incarnation 0: this host's own (dipcd fills it in).
        let _ = state::control(&Message::KeyRemove {
            kind,
            key,
            id,
            incarnation: 0,
        });
    }
}
