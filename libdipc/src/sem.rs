//! Distributed semaphore sets: `semget`, `semop`, `semtimedop`, `semctl`.
//!
//! As for queues (see [`crate::msg`]): the set lives on the host that
//! created it first; there calls are plain system calls; elsewhere each call
//! is made on the owner by a worker acting with the caller's credentials.
//! Every `SEM_UNDO` operation of a process on one owner is made by one
//! worker there, its undo context, whichever thread and session it comes
//! from (see `crate::state`), so `SEM_UNDO` adjustments are undone by the
//! owner's kernel when the process exits (its sessions close, however it
//! died) and not before. If the context is lost while the process lives
//! (its sessions were cut), the next call on that owner fails with
//! `ENOLINK`.
//! `GETPID` for a set last operated on by a remote process reads as the pid
//! of that process's worker on the owner host.

use crate::dist::{self, client_errno, KindOps};
pub use crate::dist::{Errno, IPC_DIPC};
use crate::msg::io_err;
use crate::state::{self, Route};
use dipc_common::sysv;
use dipc_common::wire::{IpcKind, Message, Origin, SemArg};
pub use dipc_common::wire::{IpcSet, SemBuf, SemInfo};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

fn plain_get(key: i32, flags: i32, nsems: u64) -> Result<i32, Errno> {
    sysv::semget(key, nsems, flags)
}

fn rmid(id: i32) -> Result<(), Errno> {
    sysv::semctl_int(id, 0, libc::IPC_RMID, 0).map(|_| ())
}

fn maybe_placeholder(id: i32) -> bool {
    match sysv::semctl_stat(id) {
        Ok(i) => i.perm.key == libc::IPC_PRIVATE && i.perm.mode & 0o777 == 0 && i.perm.cuid == 0,
        Err(e) => e == libc::EACCES,
    }
}

static OPS: KindOps = KindOps {
    kind: IpcKind::Sem,
    get: plain_get,
    rmid,
    maybe_placeholder,
};

/// `semget`. With `IPC_DIPC` (and a key other than `IPC_PRIVATE`) the set
/// is distributed.
pub fn get(key: i32, nsems: i32, flags: i32) -> Result<i32, Errno> {
    if nsems < 0 {
        return Err(libc::EINVAL);
    }
    if flags & IPC_DIPC == 0 || key == libc::IPC_PRIVATE {
        return plain_get(key, flags & !IPC_DIPC, nsems as u64)
            .and_then(|id| dist::plain(IpcKind::Sem, id));
    }
    dist::get(&OPS, key, flags, nsems as u64)
}

pub(crate) fn route(id: i32) -> Route {
    dist::route(&OPS, id)
}

fn remote_ctl(
    owner: SocketAddr,
    (id, origin): (i32, Origin),
    num: i32,
    cmd: i32,
    arg: SemArg,
) -> Result<Message, Errno> {
    let req = Message::SemCtl {
        id,
        origin,
        num,
        cmd,
        arg,
    };
    state::remote(owner, &req, false).map_err(client_errno)
}

/// `semop`, or `semtimedop` with a time-out.
pub fn op(id: i32, ops: &[SemBuf], timeout: Option<Duration>) -> Result<(), Errno> {
    let timeout_ns = timeout.map(|t| t.as_nanos().min(u64::MAX as u128) as u64);
    match route(id) {
        Route::Local | Route::Owned { .. } => {
            sysv::semop(id, ops, timeout_ns)?;
            state::note_local_undo(ops.iter().map(|o| o.flg));
            Ok(())
        }
        Route::Remote { owner, id, origin } => {
            let may_block = ops.iter().any(|o| o.flg as i32 & libc::IPC_NOWAIT == 0);
            let req = Message::SemOp {
                id,
                origin,
                ops: ops.to_vec(),
                timeout_ns,
            };
            match state::remote(owner, &req, may_block) {
                Ok(Message::Done { .. }) => Ok(()),
                Ok(_) => Err(libc::EPROTO),
                Err(e) => Err(client_errno(e)),
            }
        }
    }
}

/// `semctl` commands that return an int: `GETVAL`, `SETVAL` (with `val`),
/// `GETPID`, `GETNCNT`, `GETZCNT`.
pub fn ctl_int(id: i32, num: i32, cmd: i32, val: i32) -> Result<i32, Errno> {
    match route(id) {
        Route::Local | Route::Owned { .. } => sysv::semctl_int(id, num, cmd, val),
        Route::Remote { owner, id, origin } => {
            let arg = if cmd == libc::SETVAL {
                SemArg::Val(val)
            } else {
                SemArg::None
            };
            match remote_ctl(owner, (id, origin), num, cmd, arg)? {
                Message::Done { value } => Ok(value as i32),
                _ => Err(libc::EPROTO),
            }
        }
    }
}

pub fn getall(id: i32) -> Result<Vec<u16>, Errno> {
    match route(id) {
        Route::Local | Route::Owned { .. } => sysv::semctl_getall(id),
        Route::Remote { owner, id, origin } => {
            match remote_ctl(owner, (id, origin), 0, libc::GETALL, SemArg::None)? {
                Message::SemVals { vals } => Ok(vals),
                _ => Err(libc::EPROTO),
            }
        }
    }
}

pub fn setall(id: i32, vals: &[u16]) -> Result<(), Errno> {
    match route(id) {
        Route::Local | Route::Owned { .. } => sysv::semctl_setall(id, vals),
        Route::Remote { owner, id, origin } => {
            match remote_ctl(
                owner,
                (id, origin),
                0,
                libc::SETALL,
                SemArg::All(vals.to_vec()),
            )? {
                Message::Done { .. } => Ok(()),
                _ => Err(libc::EPROTO),
            }
        }
    }
}

pub fn stat(id: i32) -> Result<SemInfo, Errno> {
    match route(id) {
        Route::Local | Route::Owned { .. } => sysv::semctl_stat(id),
        Route::Remote { owner, id, origin } => {
            match remote_ctl(owner, (id, origin), 0, libc::IPC_STAT, SemArg::None)? {
                Message::SemStat { info } => Ok(info),
                _ => Err(libc::EPROTO),
            }
        }
    }
}

pub fn set(id: i32, s: &IpcSet) -> Result<(), Errno> {
    match route(id) {
        Route::Local | Route::Owned { .. } => sysv::semctl_set(id, s),
        Route::Remote { owner, id, origin } => {
            match remote_ctl(owner, (id, origin), 0, libc::IPC_SET, SemArg::Set(*s))? {
                Message::Done { .. } => Ok(()),
                _ => Err(libc::EPROTO),
            }
        }
    }
}

/// `IPC_RMID`: removes the set everywhere; blocked callers get `EIDRM`.
pub fn remove(id: i32) -> Result<(), Errno> {
    dist::remove(&OPS, id, |owner, rid, origin| {
        remote_ctl(owner, (rid, origin), 0, libc::IPC_RMID, SemArg::None)
    })
}

/// A semaphore set, for Rust programs.
///
/// ```no_run
/// use dipc::sem::{SemSet, IPC_DIPC};
/// let s = SemSet::get(0x5e4, 1, libc::IPC_CREAT | IPC_DIPC | 0o666)?;
/// s.setval(0, 1)?;
/// s.op(&[dipc::sem::SemBuf { num: 0, op: -1, flg: libc::SEM_UNDO as i16 }])?; // P
/// s.op(&[dipc::sem::SemBuf { num: 0, op: 1, flg: libc::SEM_UNDO as i16 }])?;  // V
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SemSet {
    id: i32,
}

impl SemSet {
    pub fn get(key: i32, nsems: i32, flags: i32) -> io::Result<SemSet> {
        get(key, nsems, flags)
            .map(|id| SemSet { id })
            .map_err(io_err)
    }
    pub fn from_id(id: i32) -> SemSet {
        SemSet { id }
    }
    pub fn id(&self) -> i32 {
        self.id
    }
    pub fn op(&self, ops: &[SemBuf]) -> io::Result<()> {
        op(self.id, ops, None).map_err(io_err)
    }
    pub fn timed_op(&self, ops: &[SemBuf], timeout: Duration) -> io::Result<()> {
        op(self.id, ops, Some(timeout)).map_err(io_err)
    }
    pub fn getval(&self, num: i32) -> io::Result<i32> {
        ctl_int(self.id, num, libc::GETVAL, 0).map_err(io_err)
    }
    pub fn setval(&self, num: i32, val: i32) -> io::Result<()> {
        ctl_int(self.id, num, libc::SETVAL, val)
            .map(|_| ())
            .map_err(io_err)
    }
    pub fn getall(&self) -> io::Result<Vec<u16>> {
        getall(self.id).map_err(io_err)
    }
    pub fn setall(&self, vals: &[u16]) -> io::Result<()> {
        setall(self.id, vals).map_err(io_err)
    }
    pub fn stat(&self) -> io::Result<SemInfo> {
        stat(self.id).map_err(io_err)
    }
    pub fn remove(self) -> io::Result<()> {
        remove(self.id).map_err(io_err)
    }
}
