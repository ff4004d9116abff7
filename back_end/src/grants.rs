//! What dipcd checks before it relays a creation's `KeyCommit`: that the
//! id it names is the structure the grant was for.
//!
//! The referee records whatever id the owner host commits, and every host
//! then sends the key's calls to that id on this host, so a false id would
//! poison the key cluster-wide (an id of -1, for one, made every later get
//! a grant no one could commit: `EPERM` for everyone, root included).
//! dipcd sees the kernel's own record of the structure and checks, with
//! `IPC_STAT`:
//!
//! - the id names a live structure of the grant's kind whose key is the
//!   granted key, so it is the one structure the key names on this host;
//! - its creator uid (`cuid`) is the committing process's uid (SO_PEERCRED):
//!   a user publishes only structures it made, never another user's
//!   structure that happens to carry the key;
//! - for a segment, also its creator pid (`shm_cpid`) is the committing
//!   process, the very one granted the creation. Queues and semaphore sets
//!   have no creator pid in the kernel (`msg_lspid` is the last sender,
//!   `sempid` the last operation's, and `/proc/sysvipc/{msg,sem}` show
//!   nothing more), so for them the creator uid is the finest check the
//!   kernel allows. Processes of one uid can act for each other anyway
//!   (signals, ptrace), so it is not a weaker barrier between users.

use dipc_common::sysv;
use dipc_common::wire::IpcKind;

/// What the kernel records of a structure's creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Made {
    pub key: i32,
    pub cuid: u32,
    /// Only segments have one.
    pub cpid: Option<i32>,
}

/// The kernel's record of structure `id` of `kind` on this host.
pub fn made(kind: IpcKind, id: i32) -> Result<Made, i32> {
    if id < 0 {
        return Err(libc::EINVAL);
    }
    Ok(match kind {
        IpcKind::Msg => {
            let p = sysv::msgctl_stat(id)?.perm;
            Made {
                key: p.key,
                cuid: p.cuid,
                cpid: None,
            }
        }
        IpcKind::Sem => {
            let p = sysv::semctl_stat(id)?.perm;
            Made {
                key: p.key,
                cuid: p.cuid,
                cpid: None,
            }
        }
        IpcKind::Shm => {
            let i = sysv::shmctl_stat(id)?;
            Made {
                key: i.perm.key,
                cuid: i.perm.cuid,
                cpid: Some(i.cpid),
            }
        }
    })
}

/// Whether `made`, the kernel's record of `id`, shows the structure that
/// process `pid` (uid `uid`), granted the creation of `key`, made.
/// Otherwise an errno and why.
pub fn check(
    kind: IpcKind,
    key: i32,
    id: i32,
    made: Result<Made, i32>,
    (pid, uid): (i32, u32),
) -> Result<(), (i32, String)> {
    let what = format!("{} key {key:#x}", kind.name());
    let m = made.map_err(|e| {
        (
            libc::EINVAL,
            format!(
                "{what}: {id} names no {} on this host ({})",
                kind.name(),
                std::io::Error::from_raw_os_error(e)
            ),
        )
    })?;
    if key == libc::IPC_PRIVATE || m.key != key {
        return Err((
            libc::EINVAL,
            format!("{what}: {} {id} has key {:#x}", kind.name(), m.key),
        ));
    }
    if m.cuid != uid {
        return Err((
            libc::EPERM,
            format!(
                "{what}: {} {id} was created by uid {}, not by the caller's uid {uid}",
                kind.name(),
                m.cuid
            ),
        ));
    }
    if let Some(cpid) = m.cpid {
        if cpid != pid {
            return Err((
                libc::EPERM,
                format!(
                    "{what}: {} {id} was created by pid {cpid}, not by pid {pid}, which was \
                     granted its creation",
                    kind.name()
                ),
            ));
        }
    }
    Ok(())
}

/// [`check`] against the kernel.
pub fn verify(kind: IpcKind, key: i32, id: i32, pid: i32, uid: u32) -> Result<(), (i32, String)> {
    check(kind, key, id, made(kind, id), (pid, uid))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: i32 = 0x7a7a;

    fn msg(key: i32, cuid: u32) -> Result<Made, i32> {
        Ok(Made {
            key,
            cuid,
            cpid: None,
        })
    }

    fn errno(r: Result<(), (i32, String)>) -> i32 {
        r.map_or_else(|(e, _)| e, |()| 0)
    }

    #[test]
    fn only_the_keys_structure_made_by_the_caller_is_taken() {
        let me = (100, 1000);
        assert_eq!(errno(check(IpcKind::Msg, KEY, 5, msg(KEY, 1000), me)), 0);
        // No such structure (an id of -1, a removed one).
        assert_eq!(
            errno(check(IpcKind::Msg, KEY, -1, Err(libc::EINVAL), me)),
            libc::EINVAL
        );
        // Another key's structure, or a private one.
        assert_eq!(
            errno(check(IpcKind::Msg, KEY, 5, msg(0x7a7b, 1000), me)),
            libc::EINVAL
        );
        assert_eq!(
            errno(check(
                IpcKind::Msg,
                KEY,
                5,
                msg(libc::IPC_PRIVATE, 1000),
                me
            )),
            libc::EINVAL
        );
        assert_eq!(
            errno(check(
                IpcKind::Msg,
                libc::IPC_PRIVATE,
                5,
                msg(libc::IPC_PRIVATE, 1000),
                me
            )),
            libc::EINVAL
        );
        // Another user's structure with the key.
        assert_eq!(
            errno(check(IpcKind::Sem, KEY, 5, msg(KEY, 0), me)),
            libc::EPERM
        );
        // A segment: the granted process itself must have made it.
        let seg = |cpid| {
            Ok(Made {
                key: KEY,
                cuid: 1000,
                cpid: Some(cpid),
            })
        };
        assert_eq!(errno(check(IpcKind::Shm, KEY, 5, seg(100), me)), 0);
        assert_eq!(
            errno(check(IpcKind::Shm, KEY, 5, seg(101), me)),
            libc::EPERM
        );
    }

    #[test]
    fn the_kernels_record_is_read() {
        // A private queue of ours: its key is IPC_PRIVATE, its creator us.
        let id = sysv::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600).unwrap();
        let m = made(IpcKind::Msg, id);
        sysv::msgctl_rmid(id).unwrap();
        // SAFETY: geteuid cannot fail.
        let uid = unsafe { libc::geteuid() };
        assert_eq!(
            m,
            Ok(Made {
                key: libc::IPC_PRIVATE,
                cuid: uid,
                cpid: None
            })
        );
        assert!(made(IpcKind::Msg, id).is_err());
        assert_eq!(made(IpcKind::Shm, -1), Err(libc::EINVAL));
        let seg = sysv::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600).unwrap();
        let m = made(IpcKind::Shm, seg);
        sysv::shmctl_rmid(seg).unwrap();
        assert_eq!(m.map(|m| m.cpid), Ok(Some(std::process::id() as i32)));
    }
}
