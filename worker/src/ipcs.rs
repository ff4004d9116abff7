//! `IpcStatAny`: the figures `ipcs` shows for one distributed structure of
//! this host, for `dipcref ipcs`. Read with the kernel's `*_STAT_ANY`,
//! which checks no permission (as `ipcs` on this host shows every
//! structure to anyone): the caller's uid, squashed or not, does not need
//! read permission on the structure to list it.

use crate::{fail, local_call};
use dipc_common::config::Config;
use dipc_common::sysv;
use dipc_common::wire::{IpcKind, Message, Origin};

pub fn stat_any(config: &Config, kind: IpcKind, id: i32) -> Message {
    match kind {
        IpcKind::Msg => {
            sysv::msgctl_stat_any(id).map_or_else(fail, |info| Message::MsqStat { info })
        }
        IpcKind::Sem => {
            sysv::semctl_stat_any(id).map_or_else(fail, |info| Message::SemStat { info })
        }
        IpcKind::Shm => match sysv::shmctl_stat_any(id) {
            Ok(mut info) => {
                // The manager counts the attaches of every host (the
                // kernel only its own); without a manager nobody is
                // attached through dipc.
                let path = config.shm_socket(id);
                if path.exists() {
                    let q = Message::ShmQuery {
                        id,
                        origin: Origin::default(),
                    };
                    if let Ok(Message::ShmState { nattch, .. }) = local_call(config, &path, &q) {
                        info.nattch = nattch;
                    }
                }
                Message::ShmStat { info }
            }
            Err(e) => fail(e),
        },
    }
}
