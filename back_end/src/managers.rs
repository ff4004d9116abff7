//! The shared-memory managers dipcd forks, one per distributed segment
//! this host owns that a local process asked to attach.
//!
//! Separate because starting one is a permission check and a fork of its
//! own (the manager then runs on its own socket), and its exit is seen
//! only through the supervisor's reaping.

use crate::daemon::{Client, Daemon};
use dipc_common::sys;
use dipc_common::sysv;
use dipc_common::wire::Message;
use log::debug;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::os::fd::AsRawFd;

impl Daemon<'_> {
    /// Makes sure the manager of segment `sid` (owned by this host) runs:
    /// binds its socket, so that a connection made after the reply cannot
    /// miss it, and forks it. Any local process may ask; the manager checks
    /// each attach against the segment's permissions.
    /// Starts the manager of segment `sid` for a client that may attach
    /// it (read permission, as the kernel's shmat checks) and if it is a
    /// distributed segment (a key of its own, not IPC_PRIVATE): no user
    /// can make root processes for segments it cannot use, nor one per
    /// private segment of its own. A client's attach itself is checked
    /// again by the manager.
    pub(crate) fn open_manager(&mut self, sid: i32, c: &Client) -> Message {
        if self.managers.contains_key(&sid) {
            return Message::Done { value: 0 };
        }
        let perm = match sysv::shmctl_stat(sid) {
            Ok(info) => info.perm,
            Err(e) => {
                return Message::error(e, format!("no shared memory segment {sid} on this host"))
            }
        };
        if perm.key == libc::IPC_PRIVATE {
            return Message::error(
                libc::EINVAL,
                format!("segment {sid} is private (IPC_PRIVATE): it is not distributed"),
            );
        }
        // The groups are the client's as of its connect (SO_PEERGROUPS,
        // read by the reactor at its accept).
        if c.cred.uid != 0 && !sysv::permits(&perm, (c.cred.uid, c.cred.gid, &c.groups), 4) {
            return Message::error(
                libc::EACCES,
                format!("uid {} may not attach segment {sid}", c.cred.uid),
            );
        }
        let path = self.config.shm_socket(sid);
        let _ = std::fs::remove_file(&path);
        let listener = match sys::bind_unix(&path, 0o666, None) {
            Ok(l) => l,
            Err(e) => {
                return Message::error(
                    e.raw_os_error().unwrap_or(libc::EIO),
                    format!("cannot bind {}: {e}", path.display()),
                )
            }
        };
        let config = self.config;
        let keep = [listener.as_raw_fd()];
        match sys::fork_child("dipc-shm-mgr", Signal::SIGTERM, &keep, move || {
            dipc_shm_manager::run(listener, sid, config)
        }) {
            Ok(pid) => {
                debug!("shm manager {pid} for segment {sid}");
                self.metrics.managers_started += 1;
                self.managers.insert(sid, pid);
                Message::Done { value: 0 }
            }
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Message::error(
                    e.raw_os_error().unwrap_or(libc::EAGAIN),
                    format!("cannot fork a shm manager: {e}"),
                )
            }
        }
    }

    pub(crate) fn manager_exited(&mut self, pid: Pid) {
        let gone: Vec<i32> = self
            .managers
            .iter()
            .filter(|(_, &p)| p == pid)
            .map(|(&sid, _)| sid)
            .collect();
        for sid in gone {
            self.managers.remove(&sid);
            let _ = std::fs::remove_file(self.config.shm_socket(sid));
            debug!("shm manager {pid} for segment {sid} exited");
        }
    }
}
