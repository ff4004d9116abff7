//! The creations this host was granted: which local process, on which
//! connection, may commit or abort a key the referee let this host create,
//! watched through a pidfd until it does.
//!
//! Separate from `grants` (the kernel check of a commit's id) because
//! this is the bookkeeping of who holds a grant and when it is given up:
//! its holder exits, its connection closes, or `request_ms` passes.

use crate::daemon::{Client, Daemon};
use crate::link::Relayed;
use dipc_common::procs;
use dipc_common::reactor::{ConnId, Interest, Watch};
use dipc_common::wire::{IpcKind, Message, ToReferee};
use log::info;
use std::io;
use std::os::fd::AsRawFd;
use std::time::Instant;

/// Creations in progress watched at once (each holds a pidfd); beyond
/// this a grant is given up at once rather than let a process that asks
/// for keys without creating them exhaust dipcd's descriptors.
const MAX_GRANTS: usize = 1024;

/// The process granted the creation of a key, watched until it commits or
/// aborts it, on the connection it was granted on.
pub(crate) struct Grant {
    pid: i32,
    /// The client connection the grant went to: the commit must come on
    /// it, and if it closes first the creation is given up.
    client: ConnId,
    starttime: u64,
    /// Open while watched under `key` (the poll knows it by its number).
    _pidfd: std::os::fd::OwnedFd,
    key: u64,
    since: Instant,
}

impl Daemon<'_> {
    /// Whether the calling process is the one granted the creation of
    /// `key`, on the connection it was granted on (the grant is then used
    /// up); otherwise answers `EPERM`. Any local user can reach this
    /// socket: without the check, one could commit another's key to a
    /// structure of its choosing.
    pub(crate) fn take_grant(
        &mut self,
        t: ConnId,
        c: &mut Client,
        id: u64,
        kind: IpcKind,
        key: i32,
    ) -> bool {
        if let Some(g) = self.grants.get(&(kind, key)) {
            if g.pid == c.cred.pid && g.client == t && procs::starttime(g.pid) == Ok(g.starttime) {
                self.end_grant((kind, key));
                return true;
            }
        }
        c.answer(
            id,
            &Message::error(
                libc::EPERM,
                format!(
                    "process {} was not granted the creation of {} key {key:#x}",
                    c.cred.pid,
                    kind.name()
                ),
            ),
        );
        false
    }

    /// Gives up the creation of `key` on the referee for a process that
    /// can no longer make it, so that other hosts asking for the key need
    /// not wait for the referee's time-out.
    pub(crate) fn abort_creation(&mut self, (kind, key): (IpcKind, i32)) {
        self.link.relay(
            &mut self.io,
            Relayed::nobody(),
            ToReferee::KeyAbort { kind, key },
        );
    }

    /// Records that `pid`, on client connection `client`, may create `key`,
    /// and watches it through a pidfd; without a live process to create
    /// it, the creation is given up at once.
    pub(crate) fn grant(&mut self, key: (IpcKind, i32), client: ConnId, pid: Option<i32>) {
        self.end_grant(key);
        let full = self.grants.len() >= MAX_GRANTS;
        let watched = pid.ok_or(libc::ESRCH).and_then(|pid| {
            if full {
                return Err(libc::EMFILE);
            }
            let (pidfd, starttime) = procs::open_checked(pid, None)?;
            let key = self.next_key;
            self.io
                .watch(key, pidfd.as_raw_fd(), Interest::READABLE)
                .map_err(|e| e.raw_os_error().unwrap_or(libc::ENOMEM))?;
            self.next_key += 1;
            Ok(Grant {
                pid,
                client,
                starttime,
                _pidfd: pidfd,
                key,
                since: self.now,
            })
        });
        match watched {
            Ok(g) => {
                self.grant_keys.insert(g.key, key);
                self.grants.insert(key, g);
            }
            Err(e) => {
                info!(
                    "{} key {:#x}: cannot watch the process granted its creation ({}); \
                     creation given up",
                    key.0.name(),
                    key.1,
                    io::Error::from_raw_os_error(e)
                );
                self.abort_creation(key);
            }
        }
    }

    /// The grant of `key` is given up: the referee is told.
    pub(crate) fn end_grant_and_abort(&mut self, key: (IpcKind, i32)) {
        if self.end_grant(key).is_some() {
            self.abort_creation(key);
        }
    }

    fn end_grant(&mut self, key: (IpcKind, i32)) -> Option<Grant> {
        let g = self.grants.remove(&key)?;
        self.grant_keys.remove(&g.key);
        self.io.unwatch(g.key);
        Some(g)
    }

    /// Gives up the creations not committed within `request_ms`, as the
    /// referee does: a creator that neither commits nor aborts, nor exits,
    /// frees the key at the deadline (and a late commit is refused).
    pub(crate) fn expire_grants(&mut self, now: Instant) {
        if self.grants.is_empty() {
            return;
        }
        let limit = self.config.timeouts.request;
        let old: Vec<(IpcKind, i32)> = self
            .grants
            .iter()
            .filter(|(_, g)| now.duration_since(g.since) > limit)
            .map(|(&k, _)| k)
            .collect();
        for key in old {
            if let Some(g) = self.end_grant(key) {
                info!(
                    "{} key {:#x}: pid {} did not create it within {} ms; creation given up",
                    key.0.name(),
                    key.1,
                    g.pid,
                    limit.as_millis()
                );
                self.abort_creation(key);
            }
        }
    }

    /// The process granted a key's creation exited before it committed or
    /// aborted it.
    pub(crate) fn grant_holder_exited(&mut self, watched: u64) {
        let Some(&key) = self.grant_keys.get(&watched) else {
            return;
        };
        if let Some(g) = self.end_grant(key) {
            info!(
                "{} key {:#x}: pid {} died before creating it; creation given up",
                key.0.name(),
                key.1,
                g.pid
            );
            self.abort_creation(key);
        }
    }

    /// Client connection `t` is gone (closed, or handed to an employer):
    /// the creations granted on it can no longer be committed, so they are
    /// given up now. Its process may well live on; a process that exits
    /// closes its connections too, which may be seen first.
    pub(crate) fn client_gone(&mut self, t: ConnId) {
        let keys: Vec<(IpcKind, i32)> = self
            .grants
            .iter()
            .filter(|(_, g)| g.client == t)
            .map(|(&k, _)| k)
            .collect();
        for key in keys {
            if let Some(g) = self.end_grant(key) {
                info!(
                    "{} key {:#x}: pid {} died before creating it, or closed the connection it \
                     was granted on; creation given up",
                    key.0.name(),
                    key.1,
                    g.pid
                );
                self.abort_creation(key);
            }
        }
    }
}
