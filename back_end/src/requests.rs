//! What dipcd does with each request of a local client, and how it
//! finishes the referee's answer to one it relayed.
//!
//! Separate from the loop (`daemon`) because this is the protocol's
//! local side: who may ask for what, what dipcd answers itself and what
//! it relays, each arm short and pointing at the module that does the
//! work.

use crate::daemon::{Client, Daemon};
use crate::grants;
use crate::link::{self, Relayed, Then};
use crate::owned::Owned;
use dipc_common::metrics::Metrics;
use dipc_common::procs;
use dipc_common::sys;
use dipc_common::sysv;
use dipc_common::wire::Message;
use log::{debug, info, warn};

impl Daemon<'_> {
    pub(crate) fn request(&mut self, t: usize, c: &mut Client, id: u64, msg: Message) {
        let relay = |key| Relayed {
            client: t,
            id,
            key,
            then: Then::Nothing,
        };
        match msg {
            Message::Ping => c.answer(id, &Message::Pong),
            Message::ListHosts | Message::ListKeys { .. } | Message::DropKey { .. } => {
                if sys::is_admin(&c.cred, self.admin_gid) {
                    self.relay(c, relay(None), &msg);
                } else {
                    c.answer(
                        id,
                        &Message::error(
                            libc::EACCES,
                            "the referee's tables are open to root and admin_group only",
                        ),
                    );
                }
            }
            // Every get of IPC_PRIVATE makes a new structure: there is
            // nothing to share under it (the library keeps it local).
            Message::KeyGet { key, .. } if key == libc::IPC_PRIVATE => c.answer(
                id,
                &Message::error(libc::EINVAL, "IPC_PRIVATE is not a distributed key"),
            ),
            Message::KeyGet { kind, key, .. } => {
                self.relay(c, relay(Some((kind, key))), &msg);
            }
            Message::KeyCommit {
                kind, key, id: sid, ..
            } => {
                if self.take_grant(t, c, id, kind, key) {
                    // The id must name the structure this very process made
                    // for the key: what the referee records, every host
                    // uses (see `grants`).
                    if let Err((errno, why)) =
                        grants::verify(kind, key, sid, c.cred.pid, c.cred.uid)
                    {
                        warn!(
                            "pid {} (uid {}) committed {why}; creation given up",
                            c.cred.pid, c.cred.uid
                        );
                        self.abort_creation((kind, key));
                        c.answer(id, &Message::error(errno, why));
                        return;
                    }
                    // The creator is who the kernel says is calling; the
                    // structure lives in this host's incarnation.
                    let msg = Message::KeyCommit {
                        kind,
                        key,
                        id: sid,
                        creator_uid: c.cred.uid,
                        incarnation: self.incarnation,
                    };
                    let to = Relayed {
                        then: Then::Committed {
                            kind,
                            key,
                            id: sid,
                            creator_uid: c.cred.uid,
                        },
                        ..relay(None)
                    };
                    self.relay(c, to, &msg);
                }
            }
            Message::KeyAbort { kind, key } => {
                if self.take_grant(t, c, id, kind, key) {
                    self.relay(c, relay(None), &msg);
                }
            }
            Message::KeyRemove {
                kind,
                key,
                id: sid,
                incarnation,
            } => {
                // Any local user may send this; the referee takes it from
                // the owner host only, and frees the key only if it still
                // names that id in that incarnation. This dipcd (which sees
                // every structure) relays a notice about its own
                // incarnation only once the kernel no longer has the
                // structure under that key; one about another incarnation
                // at once: that IPC namespace, and all in it, is gone.
                let incarnation = match incarnation {
                    0 => self.incarnation,
                    i => i,
                };
                let msg = Message::KeyRemove {
                    kind,
                    key,
                    id: sid,
                    incarnation,
                };
                if incarnation == self.incarnation && sysv::key_may_name(kind, key, sid) {
                    c.answer(
                        id,
                        &Message::error(
                            libc::EBUSY,
                            format!(
                                "{} key {key:#x} still names id {sid} on this host",
                                kind.name()
                            ),
                        ),
                    );
                } else {
                    self.relay(c, relay(None), &msg);
                }
            }
            // A worker checks that an id still names its key's structure:
            // the referee's entry as it is, without a placeholder (this is
            // the owner host, or the key has moved to another).
            Message::KeyCheck { kind, key } => {
                self.relay(
                    c,
                    relay(None),
                    &Message::KeyGet {
                        kind,
                        key,
                        flags: 0,
                    },
                );
            }
            Message::ShmOpen { id: sid } => {
                let reply = self.open_manager(sid, c);
                c.answer(id, &reply);
            }
            Message::Placeholder {
                kind,
                key,
                owner,
                id: rid,
                origin,
                vouch,
            } => {
                let reply = self.placeholder(c.cred.uid, (kind, key), (owner, rid, origin), &vouch);
                c.answer(id, &reply);
            }
            Message::Resolve { kind, local_id } => {
                let reply = match self.placeholders.resolve(kind, local_id) {
                    Some((owner, remote, origin)) => Message::KeyOwner {
                        owner,
                        id: remote,
                        local_id,
                        origin,
                    },
                    None => Message::error(libc::ENOENT, "not a placeholder"),
                };
                c.answer(id, &reply);
            }
            Message::Register { mailbox } => self.register(t, c, id, mailbox, None),
            // Calls (`dprocs`): a registered process states its endpoint;
            // callers of this host and workers ask for it. Each connector
            // checks that the process listening there is the registered one
            // (SO_PEERCRED), so a stated name vouches for nothing.
            Message::CallEndpoint { name } => {
                let reply = match self.pids.get_mut(c.cred.pid) {
                    Some(r) if r.pid_d > 0 => {
                        if name.is_empty() || name.len() > dipc_common::calls::MAX_ENDPOINT {
                            Message::error(libc::EINVAL, "a call endpoint name of 1 to 100 bytes")
                        } else {
                            r.endpoint = Some(name);
                            Message::Done { value: 0 }
                        }
                    }
                    _ => Message::error(
                        libc::ENOTCONN,
                        format!("pid {} is not registered", c.cred.pid),
                    ),
                };
                c.answer(id, &reply);
            }
            Message::CallRoute { pid_d } => {
                let reply = match self.pids.by_pid_d(pid_d) {
                    Some(r) => match &r.endpoint {
                        Some(name) => Message::CallEndpointAt {
                            pid: r.pid,
                            starttime: r.starttime,
                            name: name.clone(),
                        },
                        None => Message::error(
                            libc::ECONNREFUSED,
                            format!("pid_d {pid_d} takes no calls"),
                        ),
                    },
                    None => Message::error(
                        libc::ESRCH,
                        format!("pid_d {pid_d} is not registered on this host"),
                    ),
                };
                c.answer(id, &reply);
            }
            // A process that took a call link from `pid` asks whether a
            // worker passed it (only a worker's word on the caller counts).
            Message::WorkerCheck { pid } => {
                let reply = if pid > 0 && procs::parent(pid) == Ok(self.front_end) {
                    Message::Done { value: 0 }
                } else {
                    Message::error(
                        libc::EPERM,
                        format!("pid {pid} is not a worker of this host"),
                    )
                };
                c.answer(id, &reply);
            }
            // A process moving in takes its pid_d over (see `moves`).
            Message::MoveIn {
                pid_d,
                mailbox,
                token,
                ..
            } => self.register(t, c, id, mailbox, Some((pid_d, token))),
            // From a worker about to start a program for a move, as the
            // moving process's user: the uid is the kernel's.
            Message::MoveCheck { pid_d, token, .. } => {
                let check = Message::MoveCheck {
                    pid_d,
                    token,
                    uid: c.cred.uid,
                };
                self.relay(c, relay(None), &check);
            }
            // Root, admin_group or the process's own user (the referee
            // checks which, with the uid the kernel gave us).
            Message::MoveAsk { pid_d, target, .. } => {
                let ask = Message::MoveAsk {
                    pid_d,
                    target,
                    uid: c.cred.uid,
                    admin: sys::is_admin(&c.cred, self.admin_gid),
                };
                self.relay(c, relay(None), &ask);
            }
            // The process declares itself migratable: the balancer may
            // move it (it is listed in this host's load reports).
            Message::Migratable => {
                let reply = match self.pids.get_mut(c.cred.pid) {
                    Some(r) if r.pid_d > 0 => {
                        r.migratable = true;
                        Message::Done { value: 0 }
                    }
                    _ => Message::error(
                        libc::ENOTCONN,
                        format!("pid {} is not a registered process", c.cred.pid),
                    ),
                };
                c.queue(id, &reply);
            }
            Message::MoveToken { pid_d, .. } | Message::MoveAbort { pid_d, .. } => {
                self.relay_move(c, relay(None), &msg, pid_d)
            }
            // From this host's workers, before a kill_d: it reaches
            // registered processes only. Any local user may ask; the
            // answer is in `dipcref pids` too.
            Message::PidCheck { pid, starttime } => {
                let reply = match self.pids.get(pid) {
                    Some(r) if r.pid_d > 0 && r.starttime == starttime && !r.exited() => {
                        Message::Done { value: r.pid_d }
                    }
                    _ => Message::error(
                        libc::ESRCH,
                        format!("pid {pid} is not a registered process of this host"),
                    ),
                };
                c.answer(id, &reply);
            }
            Message::Unregister { pid_d, .. } => {
                // The referee checks the triple: pid_d, this host, and the
                // pid the kernel says is calling.
                let pid = c.cred.pid;
                let to = Relayed {
                    client: t,
                    id,
                    key: None,
                    then: Then::Unregister { pid_d, pid },
                };
                self.relay(c, to, &Message::Unregister { pid_d, pid });
            }
            // Open to every user: a pid_d must be looked up to be signalled
            // or sent to, so the list tells nothing more (see referee::pids).
            // Names are as open as the pids they stand for.
            Message::PidLookup { .. }
            | Message::ListPids { .. }
            | Message::ListLoad
            | Message::NameLookup { .. }
            | Message::ListNames { .. } => {
                self.relay(c, relay(None), &msg);
            }
            // As for Unregister, the referee checks that the name is
            // asked for by the process pid_d is: the pid is the kernel's.
            // dipcd keeps the names it saw given, to take them again for
            // the process when its registration is restored.
            Message::NameRegister { pid_d, name, .. } => {
                self.relay_name(c, relay(None), pid_d, name, true)
            }
            Message::NameRelease { pid_d, name, .. } => {
                self.relay_name(c, relay(None), pid_d, name, false)
            }
            // Any local user may name any address here, and the employer
            // authenticates there with the cluster secret: it may go only
            // to a host the referee has as an up member, asked afresh each
            // time so that a host that left is refused at once. The client
            // stays here until the answer (see `connect_checked`).
            Message::Connect { target } => {
                let to = Relayed {
                    then: Then::Connect { target },
                    ..relay(None)
                };
                self.relay(c, to, &Message::ListHosts);
            }
            Message::StatsAsk => {
                let reply = Message::Stats {
                    pairs: self.snapshot().to_pairs(),
                };
                c.answer(id, &reply);
            }
            Message::StatsReport { pairs } => {
                let reply = self.stats_report(c, &pairs);
                c.answer(id, &reply);
            }
            Message::CallsMade { pairs } => {
                self.metrics.add_caller(&Metrics::from_pairs(&pairs));
                c.answer(id, &Message::Done { value: 0 });
            }
            other => c.answer(
                id,
                &Message::error(
                    libc::EINVAL,
                    format!("dipcd does not take {} messages", other.kind().name()),
                ),
            ),
        }
    }

    /// Relays a name taken (`take`) or released by the client process,
    /// noting it for `Pids::name_answered`.
    fn relay_name(&mut self, c: &mut Client, to: Relayed, pid_d: i64, name: String, take: bool) {
        let pid = c.cred.pid;
        let op = self.pids.name_op(pid, &name, take);
        let to = Relayed {
            then: Then::Named { op, restore: false },
            ..to
        };
        let msg = if take {
            Message::NameRegister { pid_d, pid, name }
        } else {
            Message::NameRelease { pid_d, pid, name }
        };
        if !self.relay(c, to, &msg) {
            // Never answered: forget it now.
            self.pids.name_answered(op, false, false);
        }
    }

    /// Finishes a reply from the referee: a key owned elsewhere gets its
    /// local placeholder id.
    pub(crate) fn relayed_reply(&mut self, to: Relayed, msg: Message) {
        let msg = match to.then {
            Then::Nothing => msg,
            Then::Register { pid, serial } => self.registered(pid, serial, msg),
            Then::Restore { pid, serial } => {
                self.restored(pid, serial, &msg);
                return;
            }
            Then::Repoint {
                pid,
                serial,
                mailbox,
            } => self.repointed(pid, serial, mailbox, msg),
            Then::Unregister { pid_d, pid } => {
                if matches!(msg, Message::Done { .. })
                    && self.pids.get(pid).is_some_and(|r| r.pid_d == pid_d)
                {
                    debug!("pid_d {pid_d} (pid {pid}) unregistered");
                    self.pids.end(&mut self.io, pid, true);
                }
                msg
            }
            Then::Named { op, restore } => {
                let ok = matches!(msg, Message::Done { .. });
                self.pids.name_answered(op, ok, restore);
                if restore {
                    return;
                }
                msg
            }
            Then::Connect { target } => {
                self.connect_checked(to.client, to.id, target, msg);
                return;
            }
            Then::Committed {
                kind,
                key,
                id,
                creator_uid,
            } => {
                // An answer lost with the link leaves it open whether the
                // referee recorded the structure. As an owned key it is
                // settled at the next join (`claim_keys`): claimed if the
                // creator kept it, as any owned key; freed on the referee
                // if the creator removed it on this error.
                let lost = matches!(
                    msg,
                    Message::Error {
                        errno: link::LOST,
                        ..
                    }
                );
                if lost {
                    info!(
                        "{} key {key:#x} (id {id}): commit unanswered, the link to the referee \
                         was lost; settled at the next join",
                        kind.name()
                    );
                }
                if lost || matches!(msg, Message::Done { .. }) {
                    self.owned.add(kind, key, Owned { id, creator_uid });
                }
                msg
            }
            Then::Claim { kind, key, id } => {
                // Only the referee's refusal (the key is another's, or was
                // freed while this host was away) takes it from this host;
                // a claim whose answer did not come (the link broke) is
                // made again at the next join.
                if let Message::Error {
                    errno: libc::EEXIST | libc::ENOENT,
                    message,
                } = &msg
                {
                    warn!(
                        "{} key {key:#x} (id {id} here) is no longer this host's: {message}; \
                         the structure stays as a local one",
                        kind.name()
                    );
                    self.owned.remove(kind, key, Some(id));
                }
                return;
            }
            Then::Verify { kind, key, what } => {
                let keep = match &msg {
                    Message::KeyOwner {
                        owner, id, origin, ..
                    } => (*owner, *id, origin.incarnation) == what,
                    // Not known, or the answer did not come: only a
                    // definite "no such key" frees the placeholder.
                    Message::Error { errno, .. } => *errno != libc::ENOENT,
                    _ => true,
                };
                if !keep {
                    info!(
                        "{} key {key:#x} was freed while this host was away: placeholder removed",
                        kind.name()
                    );
                    self.placeholders.gone_if(kind, key, what);
                }
                return;
            }
        };
        let msg = match (to.key, msg) {
            // This host is to create the key: note which process may.
            (Some(k), msg @ Message::KeyOwner { id: -1, .. }) => {
                let pid = self.clients.get(&to.client).map(|c| c.cred.pid);
                self.grant(k, to.client, pid);
                msg
            }
            (
                Some((kind, key)),
                Message::KeyOwner {
                    owner, id, origin, ..
                },
            ) if id >= 0 => {
                if owner == self.config.front_end_addr() {
                    Message::KeyOwner {
                        owner,
                        id,
                        local_id: id,
                        origin,
                    }
                } else {
                    // A placeholder is made only once the owner has vouched
                    // that the caller may use the structure (`Placeholder`,
                    // after the library's `IpcGet` there): until then, one
                    // this host already has, or none (-1).
                    let have =
                        self.placeholders
                            .existing(kind, key, (owner, id, origin.incarnation));
                    Message::KeyOwner {
                        owner,
                        id,
                        local_id: have.unwrap_or(-1),
                        origin,
                    }
                }
            }
            (_, msg) => msg,
        };
        self.reply(to.client, to.id, &msg);
    }
}
