//! The control calls every kind shares, made for a remote caller:
//! `IPC_STAT` (and `IpcStatAny`, the figures `ipcs` shows for one
//! distributed structure of this host, for `dipcref ipcs`), `IPC_SET` and
//! `IPC_RMID`. A segment's `shm_nattch` is its manager's count of attaches
//! on every host (the kernel counts only its own); without a manager
//! nobody is attached through dipc and the kernel's count stands.
//!
//! `IpcStatAny` reads with the kernel's `*_STAT_ANY`, which checks no
//! permission (as `ipcs` on this host shows every structure to anyone):
//! the caller's uid, squashed or not, does not need read permission on the
//! structure to list it.

use crate::{done, fail, shm};
use dipc_common::config::Config;
use dipc_common::sysv;
use dipc_common::wire::{IpcKind, IpcSet, Message};

/// `IPC_STAT` of `kind`'s `id`; with `any`, `*_STAT_ANY`.
pub fn stat(config: &Config, kind: IpcKind, id: i32, any: bool) -> Message {
    match kind {
        IpcKind::Msg => match any {
            true => sysv::msgctl_stat_any(id),
            false => sysv::msgctl_stat(id),
        }
        .map_or_else(fail, |info| Message::MsqStat { info }),
        IpcKind::Sem => match any {
            true => sysv::semctl_stat_any(id),
            false => sysv::semctl_stat(id),
        }
        .map_or_else(fail, |info| Message::SemStat { info }),
        IpcKind::Shm => match any {
            true => sysv::shmctl_stat_any(id),
            false => sysv::shmctl_stat(id),
        }
        .map_or_else(fail, |mut info| {
            if let Some(n) = shm::manager_nattch(config, id) {
                info.nattch = n;
            }
            Message::ShmStat { info }
        }),
    }
}

/// `IPC_STAT`, `IPC_SET` (with `set`) or `IPC_RMID` of `kind`'s `id`.
pub fn ctl(config: &Config, kind: IpcKind, id: i32, cmd: i32, set: Option<IpcSet>) -> Message {
    let r = match (cmd, set) {
        (libc::IPC_STAT, _) => return stat(config, kind, id, false),
        (libc::IPC_SET, Some(s)) => match kind {
            IpcKind::Msg => sysv::msgctl_set(id, &s),
            IpcKind::Sem => sysv::semctl_set(id, &s),
            IpcKind::Shm => sysv::shmctl_set(id, &s),
        },
        (libc::IPC_RMID, _) => match kind {
            IpcKind::Msg => sysv::msgctl_rmid(id),
            IpcKind::Sem => sysv::semctl_int(id, 0, libc::IPC_RMID, 0).map(|_| ()),
            IpcKind::Shm => sysv::shmctl_rmid(id),
        },
        _ => Err(libc::EINVAL),
    };
    done(r.map(|()| 0))
}
