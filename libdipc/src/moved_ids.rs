//! The distributed ids a moving process takes with it (issue: "its IPC
//! keeps working").
//!
//! A process knows each distributed queue, semaphore set and segment by
//! the id its host's kernel gave it: the structure's own id on its owner,
//! a placeholder's id elsewhere. Those numbers mean nothing on the host a
//! process moves to, where the kernel numbers its own structures from 0
//! too, so the new process would find other structures, or none, under
//! them. The old process therefore hands over, for each distributed id it
//! knows, what the id names: the structure's key, owner and id there, and
//! the new process keeps the same number for it.
//!
//! On arrival, each key is looked up again through the referee. If it
//! still names the same structure (same owner, same id there), the moved
//! id routes to it as a remote id (through a session to the owner's
//! worker, even when the owner is the new host: the number is not the
//! structure's id here, so no plain system call may use it). If not (the
//! structure was removed while the process moved, its key freed), the
//! moved id routes to the old structure anyway, and its owner refuses
//! every call on it with `EIDRM`, as for any id whose structure went.
//!
//! A moved id's number may be, or become, the number of one of this
//! host's structures. The library then hands the process another number
//! for that structure when a distributed get returns it (see
//! `dist::bind`); a get of a structure that is not distributed fails with
//! `ENOSPC` instead, since such a structure can be reached by its own id
//! alone.

use crate::state::{self, Route};
use dipc_common::wire::{IpcKind, Origin};
use std::net::SocketAddr;

/// One distributed id of a moving process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Carried {
    pub kind: IpcKind,
    /// The id the process uses.
    pub id: i32,
    /// The structure's owner host and its id there.
    pub owner: SocketAddr,
    pub owner_id: i32,
    /// Its key, and the owner's incarnation (0 when the process's own host
    /// owned it, and did not say).
    pub origin: Origin,
}

/// At most this many ids move with a process (each is a look-up in the
/// referee on arrival); a process that knows more cannot move (`EBUSY`).
pub const MAX_CARRIED: usize = 4096;

/// The distributed ids this process knows, to hand to its new program.
/// `me` is this host's address (the owner of the `Owned` ones).
pub fn collect(me: SocketAddr) -> Vec<Carried> {
    let mut v: Vec<Carried> = state::distributed_routes()
        .into_iter()
        .filter_map(|(kind, id, r)| match r {
            Route::Local => None,
            // A structure that is not distributed (private keys too) has
            // no key to find it by elsewhere.
            Route::Owned { key } if key == libc::IPC_PRIVATE => None,
            Route::Owned { key } => Some(Carried {
                kind,
                id,
                owner: me,
                owner_id: id,
                origin: Origin {
                    key,
                    incarnation: 0,
                },
            }),
            Route::Remote {
                owner,
                id: rid,
                origin,
            } => Some(Carried {
                kind,
                id,
                owner,
                owner_id: rid,
                origin,
            }),
        })
        .collect();
    v.sort_by_key(|c| (kind_code(c.kind), c.id));
    v
}

pub fn kind_code(k: IpcKind) -> u8 {
    match k {
        IpcKind::Msg => 0,
        IpcKind::Sem => 1,
        IpcKind::Shm => 2,
    }
}

pub fn kind_from(code: u8) -> Option<IpcKind> {
    match code {
        0 => Some(IpcKind::Msg),
        1 => Some(IpcKind::Sem),
        2 => Some(IpcKind::Shm),
        _ => None,
    }
}

/// In the new program: routes each carried id (see the module's docs).
/// Fails only if this host's dipcd or the referee cannot be asked; the
/// move is then called off and the process stays where it was.
pub fn rebind(carried: &[Carried]) -> Result<(), (i32, String)> {
    let me = state::config()
        .map_err(|e| (libc::EINVAL, e.to_string()))?
        .front_end_addr();
    for c in carried {
        let found = crate::dist::look_up(c.kind, c.origin.key).map_err(|e| {
            (
                e.errno(),
                format!("looking key {:#x} up again: {e}", c.origin.key),
            )
        })?;
        let route = match found {
            Some((owner, id, origin))
                if owner == c.owner
                    && id == c.owner_id
                    && (c.origin.incarnation == 0
                        || c.origin.incarnation == origin.incarnation) =>
            {
                if owner == me && id == c.id {
                    // Moved to the owner, where its id is its own.
                    state::set_route(c.kind, c.id, Route::Owned { key: c.origin.key });
                    continue;
                }
                Route::Remote { owner, id, origin }
            }
            _ => {
                log::debug!(
                    "dipc: {} id {} (key {:#x}) was removed while this process moved",
                    c.kind.name(),
                    c.id,
                    c.origin.key
                );
                Route::Remote {
                    owner: c.owner,
                    id: c.owner_id,
                    origin: c.origin,
                }
            }
        };
        state::pin_route(c.kind, c.id, route);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(id: i32) -> Route {
        Route::Remote {
            owner: "10.66.0.3:7000".parse().unwrap(),
            id,
            origin: Origin {
                key: 0x51,
                incarnation: 3,
            },
        }
    }

    #[test]
    fn a_moved_id_keeps_its_number_and_a_host_id_that_meets_it_gets_another() {
        // The process brought shm id 41; this host's kernel then gives 41
        // to a structure the process gets.
        state::pin_route(IpcKind::Shm, 41, remote(5));
        assert!(state::is_moved(IpcKind::Shm, 41));
        assert!(!state::known_local(IpcKind::Shm, 41));
        assert_eq!(state::route(IpcKind::Shm, 41), Some(remote(5)));
        // Not distributed: only its own number reaches it, and that is taken.
        assert_eq!(crate::dist::plain(IpcKind::Shm, 41), Err(libc::ENOSPC));
        assert_eq!(state::route(IpcKind::Shm, 41), Some(remote(5)));
        // Distributed: under numbers from the top, one each.
        let a = state::alias(IpcKind::Shm, remote(6));
        let b = state::alias(IpcKind::Shm, remote(7));
        assert_eq!((a, b), (state::ALIAS_TOP, state::ALIAS_TOP - 1));
        assert_eq!(state::route(IpcKind::Shm, b), Some(remote(7)));
        assert!(!state::known_local(IpcKind::Shm, a));
        // Removed: the number is the host's again.
        state::forget_route(IpcKind::Shm, 41);
        assert!(!state::is_moved(IpcKind::Shm, 41));
        assert_eq!(crate::dist::plain(IpcKind::Shm, 41), Ok(41));
        assert!(state::route(IpcKind::Shm, 41).is_none_or(|r| r == Route::Local));
    }

    #[test]
    fn what_moves_is_every_distributed_id_with_a_key() {
        let me: SocketAddr = "10.66.0.1:7000".parse().unwrap();
        state::set_route(IpcKind::Sem, 3, Route::Owned { key: 0x77 });
        state::set_route(IpcKind::Sem, 4, Route::Local);
        state::set_route(IpcKind::Sem, 6, remote(9));
        let got: Vec<Carried> = collect(me)
            .into_iter()
            .filter(|c| c.kind == IpcKind::Sem)
            .collect();
        assert_eq!(
            got,
            vec![
                Carried {
                    kind: IpcKind::Sem,
                    id: 3,
                    owner: me,
                    owner_id: 3,
                    origin: Origin {
                        key: 0x77,
                        incarnation: 0
                    },
                },
                Carried {
                    kind: IpcKind::Sem,
                    id: 6,
                    owner: "10.66.0.3:7000".parse().unwrap(),
                    owner_id: 9,
                    origin: Origin {
                        key: 0x51,
                        incarnation: 3
                    },
                },
            ]
        );
        for k in [IpcKind::Msg, IpcKind::Sem, IpcKind::Shm] {
            assert_eq!(kind_from(kind_code(k)), Some(k));
        }
        assert_eq!(kind_from(3), None);
    }
}
