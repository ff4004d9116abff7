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
use dipc_common::wire::{IpcKind, Message, SemArg};
pub use dipc_common::wire::{IpcSet, SemBuf, SemInfo};
use std::io;
use std::time::Duration;

static OPS: KindOps = KindOps {
    kind: IpcKind::Sem,
    get: |key, flags, nsems| sysv::semget(key, nsems, flags),
    rmid: |id| sysv::semctl_int(id, 0, libc::IPC_RMID, 0).map(|_| ()),
    set: sysv::semctl_set,
    perm: |id| sysv::semctl_stat(id).map(|i| i.perm),
    ctl: |(id, origin), num, cmd, arg| Message::SemCtl {
        id,
        origin,
        num,
        cmd,
        arg,
    },
};

/// `semget`. With `IPC_DIPC` (and a key other than `IPC_PRIVATE`) the set
/// is distributed.
pub fn get(key: i32, nsems: i32, flags: i32) -> Result<i32, Errno> {
    if nsems < 0 {
        return Err(libc::EINVAL);
    }
    dist::get(&OPS, key, flags, nsems as u64)
}

pub(crate) fn route(id: i32) -> Route {
    dist::route(&OPS, id)
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
    let arg = if cmd == libc::SETVAL {
        SemArg::Val(val)
    } else {
        SemArg::None
    };
    let local = |_| sysv::semctl_int(id, num, cmd, val);
    dist::ctl(&OPS, id, local, (num, cmd, arg), |m| match m {
        Message::Done { value } => Some(value as i32),
        _ => None,
    })
}

pub fn getall(id: i32) -> Result<Vec<u16>, Errno> {
    let ctl = (0, libc::GETALL, SemArg::None);
    dist::ctl(
        &OPS,
        id,
        |_| sysv::semctl_getall(id),
        ctl,
        |m| match m {
            Message::SemVals { vals } => Some(vals),
            _ => None,
        },
    )
}

pub fn setall(id: i32, vals: &[u16]) -> Result<(), Errno> {
    let ctl = (0, libc::SETALL, SemArg::All(vals.to_vec()));
    dist::ctl(&OPS, id, |_| sysv::semctl_setall(id, vals), ctl, dist::done)
}

pub fn stat(id: i32) -> Result<SemInfo, Errno> {
    let ctl = (0, libc::IPC_STAT, SemArg::None);
    dist::ctl(
        &OPS,
        id,
        |_| sysv::semctl_stat(id),
        ctl,
        |m| match m {
            Message::SemStat { info } => Some(info),
            _ => None,
        },
    )
}

pub fn set(id: i32, s: &IpcSet) -> Result<(), Errno> {
    dist::set(&OPS, id, s)
}

/// `IPC_RMID`: removes the set everywhere; blocked callers get `EIDRM`.
pub fn remove(id: i32) -> Result<(), Errno> {
    dist::remove(&OPS, id)
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
