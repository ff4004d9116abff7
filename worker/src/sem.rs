//! Semaphore calls made for a remote caller. `SEM_UNDO` operations arrive
//! on sessions that joined the caller's undo context (see [`crate::undo`]),
//! so their adjustments are those of the context's worker, and the kernel
//! undoes them when it exits, which is when the last of that process's
//! sessions closes (however the process ended).

use crate::{done, fail};
use dipc_common::config::Config;
use dipc_common::sysv;
use dipc_common::wire::{IpcKind, Message, SemArg, SemBuf};

/// `semop`; `extra` flags (`IPC_NOWAIT` or 0) are added to every operation.
pub fn op(id: i32, ops: &[SemBuf], timeout_ns: Option<u64>, extra: i16) -> Message {
    if extra == 0 {
        return done(sysv::semop(id, ops, timeout_ns).map(|()| 0));
    }
    let ops: Vec<SemBuf> = ops
        .iter()
        .map(|o| SemBuf {
            flg: o.flg | extra,
            ..*o
        })
        .collect();
    done(sysv::semop(id, &ops, timeout_ns).map(|()| 0))
}

/// A set's own `semctl` commands; `IPC_STAT`, `IPC_SET` and `IPC_RMID` as
/// for every kind (see [`crate::ctl`]).
pub fn ctl(config: &Config, id: i32, num: i32, cmd: i32, arg: &SemArg) -> Message {
    match (cmd, arg) {
        (libc::GETVAL | libc::GETPID | libc::GETNCNT | libc::GETZCNT, _) => {
            done(sysv::semctl_int(id, num, cmd, 0))
        }
        (libc::SETVAL, SemArg::Val(v)) => done(sysv::semctl_int(id, num, cmd, *v)),
        (libc::GETALL, _) => {
            sysv::semctl_getall(id).map_or_else(fail, |vals| Message::SemVals { vals })
        }
        (libc::SETALL, SemArg::All(vals)) => done(sysv::semctl_setall(id, vals).map(|()| 0)),
        (libc::IPC_STAT | libc::IPC_RMID, _) => {
            crate::ctl::ctl(config, IpcKind::Sem, id, cmd, None)
        }
        (libc::IPC_SET, SemArg::Set(s)) => crate::ctl::ctl(config, IpcKind::Sem, id, cmd, Some(*s)),
        _ => fail(libc::EINVAL),
    }
}
