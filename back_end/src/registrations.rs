//! Registrations (`regist`): a local process asks for a pid_d, dipcd
//! watches it through a pidfd and relays the request, keeps it across
//! link breaks, and unregisters it when it exits.
//!
//! The table itself is `pids`; this module is dipcd's handling of the
//! requests and answers around it.

use crate::daemon::{Client, Daemon};
use crate::link::{Relayed, Then};
use crate::pids;
use dipc_common::procs;
use dipc_common::wire::{FromReferee, Message, ToReferee};
use log::{debug, info, warn};

impl Daemon<'_> {
    /// `regist` from a local process: watch it through a pidfd, check its
    /// mailbox, and ask the referee for a pid_d. A process registers once:
    /// asking again gives the same pid_d (and mailbox).
    pub(crate) fn register(
        &mut self,
        t: usize,
        c: &mut Client,
        id: u64,
        mailbox: i32,
        takeover: Option<(i64, u64)>,
    ) {
        let cred = c.cred;
        if let Some(r) = self.pids.get_mut(cred.pid) {
            if procs::starttime(cred.pid) == Ok(r.starttime) && !r.exited() {
                if let Some(moved) = takeover {
                    return self.repoint(t, c, id, mailbox, moved);
                }
                if r.pid_d > 0 {
                    let reply = Message::Registered {
                        pid_d: r.pid_d,
                        mailbox: r.mailbox,
                    };
                    c.answer(id, &reply);
                } else {
                    r.waiters.push((t, id));
                }
                return;
            }
            // A process that has exited; its pid is someone else's now.
            self.process_exited(cred.pid);
        }
        let fail = |c: &mut Client, (errno, why): (i32, String)| {
            c.answer(id, &Message::error(errno, why));
        };
        let proc = match procs::open_checked(cred.pid, None) {
            Ok(p) => p,
            Err(e) => return fail(c, (e, format!("cannot watch pid {}: errno {e}", cred.pid))),
        };
        if let Err(e) = pids::check_mailbox(mailbox, &cred) {
            return fail(c, e);
        }
        if self.pids.mailbox_taken(mailbox) {
            return fail(
                c,
                (
                    libc::EBUSY,
                    format!("queue {mailbox} is another process's mailbox"),
                ),
            );
        }
        let starttime = proc.1;
        let key = self.next_key;
        self.next_key += 1;
        let serial = match self.pids.add(&mut self.io, key, &cred, proc, mailbox) {
            Ok(s) => s,
            Err(e) => return fail(c, e),
        };
        let to = Relayed {
            client: t,
            id,
            key: None,
            then: Then::Register {
                pid: cred.pid,
                serial,
            },
        };
        let msg = match takeover {
            None => ToReferee::PidRegister {
                pid_d: 0,
                pid: cred.pid,
                uid: cred.uid,
                starttime,
                mailbox,
            },
            Some((pid_d, token)) => ToReferee::MoveIn {
                pid_d,
                pid: cred.pid,
                uid: cred.uid,
                starttime,
                mailbox,
                token,
            },
        };
        if !self.relay(c, to, msg) {
            // Not joined: the error is queued to the client already.
            self.pids.end(&mut self.io, cred.pid, false);
        }
    }

    /// The referee's answer to a new registration. Returns the reply for
    /// the client that asked.
    pub(crate) fn registered(&mut self, pid: i32, serial: u64, msg: FromReferee) -> FromReferee {
        let current = self.pids.get(pid).is_some_and(|r| r.serial == serial);
        let msg = match msg {
            // The referee's counter starts at 1 and never wraps.
            FromReferee::Registered { pid_d, .. } if pid_d <= 0 => FromReferee::Error {
                errno: libc::EPROTO,
                message: format!("the referee answered pid_d {pid_d}"),
            },
            msg => msg,
        };
        match (&msg, current) {
            (FromReferee::Registered { pid_d, .. }, true) => {
                let pid_d = *pid_d;
                let mut waiters = Vec::new();
                let mut mailbox = 0;
                if let Some(r) = self.pids.get_mut(pid) {
                    r.pid_d = pid_d;
                    mailbox = r.mailbox;
                    waiters = std::mem::take(&mut r.waiters);
                }
                debug!("pid {pid} registered as pid_d {pid_d}");
                let reply = Message::Registered { pid_d, mailbox };
                for (client, id) in waiters {
                    self.reply(client, id, &reply);
                }
                FromReferee::Registered { pid_d, mailbox }
            }
            (FromReferee::Registered { pid_d, .. }, false) => {
                // The process exited while the referee was answering.
                let un = ToReferee::Unregister { pid_d: *pid_d, pid };
                self.link.relay(&mut self.io, Relayed::nobody(), un);
                FromReferee::Error {
                    errno: libc::ESRCH,
                    message: format!("pid {pid} exited"),
                }
            }
            (_, true) => {
                if let Some(r) = self.pids.end(&mut self.io, pid, false) {
                    let reply = Message::from(msg.clone());
                    for (client, id) in r.waiters {
                        self.reply(client, id, &reply);
                    }
                }
                msg
            }
            (_, false) => msg,
        }
    }

    /// The referee's answer to a restored registration: one it refuses
    /// (its pid_d was given to another process) ends here too.
    pub(crate) fn restored(&mut self, pid: i32, serial: u64, msg: &FromReferee) {
        if let FromReferee::Error { message, .. } = msg {
            if self.pids.get(pid).is_some_and(|r| r.serial == serial) {
                warn!("pid {pid} lost its registration: {message}");
                self.pids.end(&mut self.io, pid, true);
            }
        }
    }

    /// Joined (again): the referee dropped this host's processes when the
    /// previous link closed; tell it about them again, with their pid_d.
    pub(crate) fn restore_pids(&mut self) {
        type Restored = (i64, i32, u32, u64, i32, u64, Vec<String>);
        self.pids.forget_name_ops();
        let regs: Vec<Restored> = self
            .pids
            .confirmed()
            .map(|r| {
                let names = r.names.clone();
                (
                    r.pid_d,
                    r.pid,
                    r.uid,
                    r.starttime,
                    r.mailbox,
                    r.serial,
                    names,
                )
            })
            .collect();
        if !regs.is_empty() {
            info!("restoring {} registered processes", regs.len());
        }
        for (pid_d, pid, uid, starttime, mailbox, serial, names) in regs {
            let to = Relayed {
                then: Then::Restore { pid, serial },
                ..Relayed::nobody()
            };
            let msg = ToReferee::PidRegister {
                pid_d,
                pid,
                uid,
                starttime,
                mailbox,
            };
            self.link.relay(&mut self.io, to, msg);
            // After the record on the same link, so the referee has it.
            for name in names {
                let to = Relayed {
                    then: Then::Named {
                        op: self.pids.name_op(pid, &name, true),
                        restore: true,
                    },
                    ..Relayed::nobody()
                };
                self.link.relay(
                    &mut self.io,
                    to,
                    ToReferee::NameRegister { pid_d, pid, name },
                );
            }
        }
    }

    /// A registered process exited (its pidfd is readable): unregister it
    /// and remove its mailbox, which fails a send blocked on it.
    pub(crate) fn process_exited(&mut self, pid: i32) {
        let Some(r) = self.pids.end(&mut self.io, pid, true) else {
            return;
        };
        debug!("pid {pid} (pid_d {}) exited", r.pid_d);
        if r.pid_d > 0 {
            let msg = ToReferee::Unregister {
                pid_d: r.pid_d,
                pid,
            };
            self.link.relay(&mut self.io, Relayed::nobody(), msg);
        }
        let gone = Message::error(libc::ESRCH, format!("pid {pid} exited"));
        for (client, id) in r.waiters {
            self.reply(client, id, &gone);
        }
    }
}
