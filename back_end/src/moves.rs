//! dipcd's part in moving a registered process to another host (see
//! libdipc's `migrate`).
//!
//! The moving process asks the referee, through its dipcd, for a one-time
//! token (`MoveToken`): only the registered process itself can, as for
//! `uregist` (dipcd names the caller's pid from SO_PEERCRED, the referee
//! checks the triple). The program started on the target host shows the
//! token in `MoveIn`, which its dipcd handles as a registration (pidfd,
//! mailbox check) that takes the pid_d over instead of asking for a new
//! one. The old host's dipcd needs no word of the hand-over: when the old
//! process exits, its `Unregister` no longer matches the referee's record
//! and is refused there, so the registration lives on at its new host.
//!
//! A move that fails after the old mailbox was emptied re-points the
//! registration at a fresh mailbox of the same process (a `MoveIn` from a
//! process dipcd already has): the messages taken out go back into the
//! fresh mailbox ahead of any sender that waited on the frozen one.

use crate::daemon::{Client, Daemon};
use crate::link::{Relayed, Then};
use crate::pids;
use dipc_common::wire::{FromReferee, Message, ToReferee};
use log::debug;

impl Daemon<'_> {
    /// `MoveIn` from a process this dipcd has registered: its own pid_d
    /// with a new mailbox.
    pub(super) fn repoint(
        &mut self,
        t: usize,
        c: &mut Client,
        id: u64,
        mailbox: i32,
        (pid_d, token): (i64, u64),
    ) {
        let cred = c.cred;
        let Some(r) = self.pids.get(cred.pid) else {
            return;
        };
        let (serial, starttime, own) = (r.serial, r.starttime, r.pid_d);
        let refuse = |c: &mut Client, errno: i32, why: String| {
            c.answer(id, &Message::error(errno, why));
        };
        if own != pid_d {
            return refuse(
                c,
                libc::EPERM,
                format!("pid {} is registered as pid_d {own}, not {pid_d}", cred.pid),
            );
        }
        if let Err((errno, why)) = pids::check_mailbox(mailbox, &cred) {
            return refuse(c, errno, why);
        }
        if self.pids.mailbox_taken(mailbox) {
            return refuse(
                c,
                libc::EBUSY,
                format!("queue {mailbox} is another process's mailbox"),
            );
        }
        let to = Relayed {
            client: t,
            id,
            key: None,
            then: Then::Repoint {
                pid: cred.pid,
                serial,
                mailbox,
            },
        };
        let msg = ToReferee::MoveIn {
            pid_d,
            pid: cred.pid,
            uid: cred.uid,
            starttime,
            mailbox,
            token,
        };
        self.relay(c, to, msg);
    }

    /// The referee's answer to a [`Daemon::repoint`].
    pub(super) fn repointed(
        &mut self,
        pid: i32,
        serial: u64,
        mailbox: i32,
        msg: FromReferee,
    ) -> FromReferee {
        if let FromReferee::Registered { pid_d, .. } = msg {
            if self.pids.set_mailbox(pid, serial, mailbox) {
                debug!("pid {pid} (pid_d {pid_d}) has a new mailbox {mailbox}");
            }
        }
        msg
    }
}
