//! Placeholders: for each distributed structure owned by another host and
//! used on this one, a real local kernel structure (private key, mode 0)
//! whose id stands for the remote one.
//!
//! The id an application gets from `dipc_msgget` must never collide with
//! the id of a local structure, or a later call could go to the wrong one;
//! reserving the number with a real local object guarantees that, and
//! makes the structure visible in `ipcs` on every host that uses it (as
//! DIPC did). Placeholders are shared by every process on the host, are
//! removed when the referee reports the key freed and when dipcd stops, and
//! their ids are kept in the runtime directory so that a dipcd killed
//! without cleaning up removes them on its next start, if the host still
//! has the same IPC namespace (incarnation): after a reboot those numbers
//! name nothing of dipcd's, maybe an application's structure.

use dipc_common::wire::{IpcKind, Origin};
use log::{debug, info, warn};
use std::collections::HashMap;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy)]
struct Placeholder {
    local_id: i32,
    owner: SocketAddr,
    remote_id: i32,
    /// The uid whose get made it: each uid may make only so many (see
    /// `limits.placeholders_per_uid`), so that no user can empty this
    /// host's kernel tables for everyone.
    uid: u32,
    /// The owner's incarnation: the same remote id in another one is
    /// another structure, and gets another placeholder.
    incarnation: u64,
}

pub struct Placeholders {
    by_key: HashMap<(IpcKind, i32), Placeholder>,
    file: PathBuf,
    /// This host's incarnation, recorded with the ids.
    incarnation: u64,
}

fn create(kind: IpcKind) -> io::Result<i32> {
    // SAFETY: plain System V calls with constant arguments.
    let id = unsafe {
        match kind {
            IpcKind::Msg => dipc_common::sysv::raw::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT),
            IpcKind::Sem => dipc_common::sysv::raw::semget(libc::IPC_PRIVATE, 1, libc::IPC_CREAT),
            IpcKind::Shm => dipc_common::sysv::raw::shmget(libc::IPC_PRIVATE, 1, libc::IPC_CREAT),
        }
    };
    if id < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(id)
}

fn destroy(kind: IpcKind, id: i32) {
    // SAFETY: IPC_RMID takes no buffer.
    let r = unsafe {
        match kind {
            IpcKind::Msg => {
                dipc_common::sysv::raw::msgctl(id, libc::IPC_RMID, std::ptr::null_mut())
            }
            IpcKind::Sem => dipc_common::sysv::raw::semctl(id, 0, libc::IPC_RMID, 0),
            IpcKind::Shm => {
                dipc_common::sysv::raw::shmctl(id, libc::IPC_RMID, std::ptr::null_mut())
            }
        }
    };
    if r < 0 {
        debug!(
            "removing placeholder {} {id}: {}",
            kind.name(),
            io::Error::last_os_error()
        );
    }
}

pub fn kind_from_name(s: &str) -> Option<IpcKind> {
    match s {
        "msg" => Some(IpcKind::Msg),
        "sem" => Some(IpcKind::Sem),
        "shm" => Some(IpcKind::Shm),
        _ => None,
    }
}

impl Placeholders {
    /// Opens the table, removing placeholders a previous dipcd of this
    /// `incarnation` left behind.
    pub fn new(file: PathBuf, incarnation: u64) -> Placeholders {
        let text = fs::read_to_string(&file).unwrap_or_default();
        let mut lines = text.lines();
        let theirs = lines
            .next()
            .and_then(|l| l.strip_prefix("incarnation "))
            .and_then(|n| n.trim().parse::<u64>().ok());
        if theirs != Some(incarnation) && !text.is_empty() {
            info!(
                "placeholders in {} are from another IPC namespace: left alone",
                file.display()
            );
        } else {
            for line in lines {
                let mut it = line.split_whitespace();
                if let (Some(k), Some(id)) = (it.next().and_then(kind_from_name), it.next()) {
                    if let Ok(id) = id.parse() {
                        destroy(k, id);
                    }
                }
            }
        }
        let p = Placeholders {
            by_key: HashMap::new(),
            file,
            incarnation,
        };
        p.persist();
        p
    }

    fn persist(&self) {
        let mut text = format!("incarnation {}\n", self.incarnation);
        for ((k, _), p) in &self.by_key {
            text.push_str(&format!("{} {}\n", k.name(), p.local_id));
        }
        if let Err(e) = fs::write(&self.file, text) {
            warn!("cannot record placeholders in {}: {e}", self.file.display());
        }
    }

    /// The local id standing for `(kind, key)` owned by `owner` as
    /// `remote_id` in its `incarnation`, creating the placeholder if
    /// needed, for a get by `uid`; `EAGAIN` if that would give `uid` more
    /// than `limit` (root is not limited).
    pub fn ensure(
        &mut self,
        kind: IpcKind,
        key: i32,
        (owner, remote_id, incarnation): (SocketAddr, i32, u64),
        (uid, limit): (u32, usize),
    ) -> io::Result<i32> {
        if let Some(local_id) = self.existing(kind, key, (owner, remote_id, incarnation)) {
            return Ok(local_id);
        }
        if uid != 0 && self.made_by(uid) >= limit {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "uid {uid} made {limit} placeholders on this host (limits.placeholders_per_uid in dipc.conf)"
                ),
            ));
        }
        if let Some(p) = self.by_key.remove(&(kind, key)) {
            // The key now names another structure: replace the stale one.
            destroy(kind, p.local_id);
        }
        let local_id = create(kind)?;
        self.by_key.insert(
            (kind, key),
            Placeholder {
                local_id,
                owner,
                remote_id,
                uid,
                incarnation,
            },
        );
        self.persist();
        Ok(local_id)
    }

    /// The placeholder this host already has for `key` naming that
    /// structure, if any.
    pub fn existing(
        &self,
        kind: IpcKind,
        key: i32,
        (owner, remote_id, incarnation): (SocketAddr, i32, u64),
    ) -> Option<i32> {
        self.by_key
            .get(&(kind, key))
            .filter(|p| {
                p.owner == owner && p.remote_id == remote_id && p.incarnation == incarnation
            })
            .map(|p| p.local_id)
    }

    /// Placeholders made by gets of `uid`.
    fn made_by(&self, uid: u32) -> usize {
        self.by_key.values().filter(|p| p.uid == uid).count()
    }

    /// What a local id stands for, if it is a placeholder: the owner, its
    /// id there, and what that id was resolved from.
    pub fn resolve(&self, kind: IpcKind, local_id: i32) -> Option<(SocketAddr, i32, Origin)> {
        self.by_key
            .iter()
            .find(|((k, _), p)| *k == kind && p.local_id == local_id)
            .map(|((_, key), p)| {
                let origin = Origin {
                    key: *key,
                    incarnation: p.incarnation,
                };
                (p.owner, p.remote_id, origin)
            })
    }

    /// Every placeholder: kind, key, and the owner, id there and owner's
    /// incarnation it stands for.
    pub fn list(&self) -> Vec<(IpcKind, i32, (SocketAddr, i32, u64))> {
        self.by_key
            .iter()
            .map(|(&(k, key), p)| (k, key, (p.owner, p.remote_id, p.incarnation)))
            .collect()
    }

    /// Removes the placeholder of `key` if it still stands for `what`
    /// (owner, id, incarnation): the referee no longer has the key as
    /// that structure.
    pub fn gone_if(&mut self, kind: IpcKind, key: i32, what: (SocketAddr, i32, u64)) {
        let same = self
            .by_key
            .get(&(kind, key))
            .is_some_and(|p| (p.owner, p.remote_id, p.incarnation) == what);
        if same {
            self.gone(kind, key);
        }
    }

    /// The key was freed cluster-wide.
    pub fn gone(&mut self, kind: IpcKind, key: i32) {
        if let Some(p) = self.by_key.remove(&(kind, key)) {
            destroy(kind, p.local_id);
            self.persist();
        }
    }

    pub fn clear(&mut self) {
        for ((k, _), p) in self.by_key.drain() {
            destroy(k, p.local_id);
        }
        let _ = fs::remove_file(&self.file);
    }
}
