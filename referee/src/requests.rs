//! What the referee answers: every request a host's link or the back door
//! sends (joins and heartbeats, key gets, creations and claims, process
//! registrations, moves and names, the administrator's lists), the
//! parking of those whose answer must wait for the hosts to rejoin, and
//! the `KeyGone` pushes. The connection states and the loop's events are
//! in the crate root.

use super::*;

impl Referee<'_> {
    /// Records in one page of a list: every record is at most 64 bytes
    /// encoded, so a page fills at most half a frame, and a list of any
    /// length reaches a host (and its relayed `dipcref`) without a frame
    /// over `max_frame`, which would break the host's link.
    fn page_len(&self) -> usize {
        (self.config.max_frame as usize / 2 / 64).clamp(1, 8192)
    }

    pub(crate) fn handle(
        &mut self,
        now: Instant,
        (t, c): (ConnId, &mut Conn),
        id: u64,
        msg: Message,
        out: &mut dyn Out,
    ) {
        if let State::Ready { host: Some(h), .. } = c.state {
            // Every frame of a joined host shows it alive.
            self.hosts.heard(&h, now);
        }
        if let State::AwaitHello = c.state {
            match auth::accept(&self.secret, &msg, Role::Host) {
                Ok((hs, secure, reply)) => {
                    // The answer goes out in plain, everything after it
                    // sealed.
                    out.send(t, id, &reply);
                    out.secure(t, secure);
                    c.state = State::Ready {
                        stated: Some(hs.host),
                        host: None,
                    };
                }
                Err(e) => self.refuse(out, (t, c), &e.to_string()),
            }
            return;
        }
        let msg = match ToReferee::accept(msg) {
            Ok(msg) => msg,
            Err(e) => return self.unexpected(out, (t, c), id, e.kind),
        };
        self.request(now, (t, c), id, msg, out);
    }

    /// A request of a connection past its handshake.
    fn request(
        &mut self,
        now: Instant,
        (t, c): (ConnId, &mut Conn),
        id: u64,
        msg: ToReferee,
        out: &mut dyn Out,
    ) {
        let ip = match c.peer {
            PeerKind::Tcp(ip) => Some(ip),
            PeerKind::Admin => None,
        };
        let msg = match (&c.state, msg) {
            (State::Ready { host: Some(h), .. }, msg) if now < self.settle_until => {
                let h = *h;
                match self.park(out, (t, id), h, msg) {
                    Some(msg) => msg,
                    None => return,
                }
            }
            (_, msg) => msg,
        };
        match (&c.state, msg) {
            (
                State::Ready {
                    stated: Some(stated),
                    host: None,
                },
                ToReferee::Join { front_end },
            ) if ip.is_some() => {
                let ip = ip.unwrap_or(front_end.ip());
                if front_end != *stated || front_end.ip().to_canonical() != ip {
                    self.refuse(
                        out,
                        (t, c),
                        &format!(
                            "join as {front_end} does not match the handshake's {stated} \
                             or the connection's address {ip}"
                        ),
                    );
                    return;
                }
                c.deadline = None;
                if let Some(old) = self
                    .hosts
                    .join(front_end, dipc_common::wire::VERSION, t, now)
                {
                    if let Some(oc) = self.conns.get_mut(&old) {
                        // The host restarted; its old connection is dead
                        // (and no longer speaks for the host).
                        oc.state = State::AwaitHello;
                        out.close(old);
                    }
                }
                info!("host {front_end} joined");
                c.state = State::Ready {
                    stated: Some(front_end),
                    host: Some(front_end),
                };
                out.send(t, id, &Message::Joined);
            }
            // A host's link takes nothing but Join until it has joined: it
            // speaks for its own host only.
            (
                State::Ready {
                    stated: Some(_),
                    host: None,
                },
                other,
            ) => {
                let why = format!("{} before Join", other.kind().name());
                self.refuse(out, (t, c), &why);
            }
            (State::Ready { host: Some(h), .. }, ToReferee::Heartbeat) => {
                self.hosts.heartbeat(h, t);
                out.send(t, id, &Message::HeartbeatAck);
            }
            // Sent with each heartbeat; no answer.
            (
                State::Ready { host: Some(h), .. },
                ToReferee::LoadReport {
                    window_ms,
                    cpu_ms,
                    procs,
                },
            ) => self.balance.report(*h, window_ms, cpu_ms, procs),
            (State::Ready { .. }, ToReferee::ListLoad) => {
                // Each process at most 8 + 4 + 4 + MAX_LOAD_NAME + 4 + 8
                // bytes: half a frame of them.
                let limit = (self.config.max_frame as usize / 2 / 128).max(1);
                let (hosts, moves) = self.balance.snapshot(limit);
                out.send(t, id, &Message::Loads { hosts, moves });
            }
            (State::Ready { .. }, ToReferee::ListHosts) => {
                out.send(
                    t,
                    id,
                    &Message::Hosts {
                        hosts: self.hosts.snapshot(now),
                    },
                );
            }
            (
                State::Ready {
                    host: Some(asker), ..
                },
                ToReferee::KeyGet { kind, key, flags },
            ) => {
                let asker = *asker;
                let replies = self.keys.get(kind, key, flags, asker, (t, id), now);
                self.deliver(out, replies);
            }
            (
                State::Ready { host: Some(h), .. },
                ToReferee::KeyCommit {
                    kind,
                    key,
                    id: sid,
                    creator_uid,
                    incarnation,
                },
            ) => {
                info!(
                    "{} key {key:#x} created on {h} as id {sid} (incarnation {incarnation:#x})",
                    kind.name()
                );
                let replies = self
                    .keys
                    .commit(kind, key, (sid, incarnation), creator_uid, t, id);
                self.deliver(out, replies);
            }
            (State::Ready { host: Some(_), .. }, ToReferee::KeyAbort { kind, key }) => {
                let replies = self.keys.abort(kind, key, t, now);
                self.deliver(out, replies);
                out.send(t, id, &Message::Done { value: 0 });
            }
            (
                State::Ready { host: Some(h), .. },
                ToReferee::KeyRemove {
                    kind,
                    key,
                    id: sid,
                    incarnation,
                },
            ) => {
                let reply = match self.keys.remove(kind, key, (sid, incarnation), *h) {
                    Removal::Removed => {
                        info!("{} key {key:#x} (id {sid}) removed", kind.name());
                        self.push_gone(out, (t, c), kind, key);
                        Message::Done { value: 0 }
                    }
                    Removal::NoSuchEntry => Message::Done { value: 0 },
                    Removal::NotOwner(owner) => {
                        warn!(
                            "refused to free {} key {key:#x} (id {sid}) at the request of {h}: \
                             it is owned by {owner}",
                            kind.name()
                        );
                        Message::error(
                            libc::EPERM,
                            format!(
                                "{} key {key:#x} is owned by {owner}: only that host frees it",
                                kind.name()
                            ),
                        )
                    }
                };
                out.send(t, id, &reply);
            }
            (
                State::Ready { host: Some(h), .. },
                ToReferee::KeyClaim {
                    kind,
                    key,
                    id: sid,
                    creator_uid,
                    incarnation,
                },
            ) => {
                let h = *h;
                let adopt = self.hosts.may_adopt(&h);
                let claimed =
                    self.keys
                        .claim(kind, key, (sid, incarnation), creator_uid, (h, adopt), now);
                let reply = match claimed {
                    Ok(()) => {
                        debug!("{} key {key:#x}: id {sid} on {h} (claimed)", kind.name());
                        let replies = self.unpark_key(kind, key, now);
                        self.deliver(out, replies);
                        Message::Done { value: 0 }
                    }
                    Err(ClaimRefused::Taken(why)) => {
                        warn!(
                            "{h} claims {} key {key:#x} as id {sid}, which is {why}: refused",
                            kind.name()
                        );
                        Message::error(
                            libc::EEXIST,
                            format!("{} key {key:#x} is {why}", kind.name()),
                        )
                    }
                    Err(ClaimRefused::Freed) => {
                        info!(
                            "{h} claims {} key {key:#x} as id {sid}, freed while it was away: refused",
                            kind.name()
                        );
                        Message::error(
                            libc::ENOENT,
                            format!(
                                "{} key {key:#x} was freed while this host was away",
                                kind.name()
                            ),
                        )
                    }
                };
                out.send(t, id, &reply);
            }
            (State::Ready { .. }, ToReferee::ListKeys { after }) => {
                let (keys, more) = self.keys.page(after, self.page_len(), now);
                out.send(t, id, &Message::Keys { keys, more });
            }
            (State::Ready { .. }, ToReferee::DropKey { kind, key }) => {
                match self.keys.drop_key(kind, key) {
                    Some(replies) => {
                        warn!("{} key {key:#x} dropped by an administrator", kind.name());
                        self.deliver(out, replies);
                        self.push_gone(out, (t, c), kind, key);
                        out.send(t, id, &Message::Done { value: 0 });
                    }
                    None => out.send(
                        t,
                        id,
                        &Message::error(
                            libc::ENOENT,
                            format!("no distributed {} with key {key:#x}", kind.name()),
                        ),
                    ),
                }
            }
            (
                State::Ready { host: Some(h), .. },
                ToReferee::PidRegister {
                    pid_d,
                    pid,
                    uid,
                    starttime,
                    mailbox,
                },
            ) => {
                let h = *h;
                let r = Registration {
                    pid_d,
                    pid,
                    uid,
                    starttime,
                    mailbox,
                };
                let reply = match self.pids.register(h, t, r, now) {
                    Ok(p) => {
                        debug!("pid_d {p}: pid {pid} on {h}, uid {uid}");
                        Message::Registered { pid_d: p, mailbox }
                    }
                    Err((errno, why)) => Message::error(errno, why),
                };
                out.send(t, id, &reply);
            }
            (State::Ready { host: Some(h), .. }, ToReferee::Unregister { pid_d, pid }) => {
                let reply = match self.pids.unregister(pid_d, *h, pid) {
                    Ok(()) => {
                        debug!("pid_d {pid_d} (pid {pid} on {h}) unregistered");
                        Message::Done { value: 0 }
                    }
                    Err((errno, why)) => Message::error(errno, why),
                };
                out.send(t, id, &reply);
            }
            (State::Ready { host: Some(h), .. }, ToReferee::MoveToken { pid_d, pid }) => {
                let token = dipc_common::sys::random_u64();
                let reply = match self.pids.move_token(pid_d, *h, pid, token) {
                    Ok(t) => {
                        debug!("pid_d {pid_d} (pid {pid} on {h}) starts a move");
                        Message::Done { value: t as i64 }
                    }
                    Err((errno, why)) => Message::error(errno, why),
                };
                out.send(t, id, &reply);
            }
            (State::Ready { host: Some(h), .. }, ToReferee::MoveAbort { pid_d, pid }) => {
                let reply = done_or_error(self.pids.move_abort(pid_d, *h, pid));
                out.send(t, id, &reply);
            }
            (
                State::Ready { host: Some(h), .. },
                ToReferee::MoveIn {
                    pid_d,
                    pid,
                    uid,
                    starttime,
                    mailbox,
                    token,
                },
            ) => {
                let h = *h;
                let r = Registration {
                    pid_d,
                    pid,
                    uid,
                    starttime,
                    mailbox,
                };
                let reply = match self.pids.move_in(h, t, r, token, now) {
                    Ok(()) => {
                        info!("pid_d {pid_d} moved: now pid {pid} on {h}");
                        Message::Registered { pid_d, mailbox }
                    }
                    Err((errno, why)) => Message::error(errno, why),
                };
                out.send(t, id, &reply);
            }
            (State::Ready { host: Some(_), .. }, ToReferee::MoveCheck { pid_d, token, uid }) => {
                let reply = done_or_error(self.pids.check_move(pid_d, token, uid));
                out.send(t, id, &reply);
            }
            (
                State::Ready { host: Some(_), .. },
                ToReferee::MoveAsk {
                    pid_d,
                    target,
                    uid,
                    admin,
                },
            ) => {
                let reply = match self.pids.may_move(pid_d, uid, admin) {
                    Ok((conn, pid)) => {
                        let ask = Message::MoveAsk {
                            pid_d,
                            target,
                            uid,
                            admin,
                        };
                        info!("uid {uid} asks pid_d {pid_d} (pid {pid}) to move to {target}");
                        out.send(conn, 0, &ask);
                        Message::Done { value: 0 }
                    }
                    Err((errno, why)) => Message::error(errno, why),
                };
                out.send(t, id, &reply);
            }
            (State::Ready { .. }, ToReferee::PidLookup { pid_d }) => {
                let reply = match self.pids.lookup(pid_d, now) {
                    Some(rec) => Message::PidInfo { rec },
                    None => Message::error(libc::ESRCH, format!("no registered process {pid_d}")),
                };
                out.send(t, id, &reply);
            }
            (State::Ready { host: Some(h), .. }, ToReferee::NameRegister { pid_d, pid, name }) => {
                let reply = match self.pids.name(pid_d, *h, pid, &name) {
                    Ok(()) => {
                        debug!("pid_d {pid_d} is named {name:?}");
                        Message::Done { value: 0 }
                    }
                    Err((errno, why)) => Message::error(errno, why),
                };
                out.send(t, id, &reply);
            }
            (State::Ready { host: Some(h), .. }, ToReferee::NameRelease { pid_d, pid, name }) => {
                let reply = done_or_error(self.pids.release(pid_d, *h, pid, &name));
                out.send(t, id, &reply);
            }
            (State::Ready { .. }, ToReferee::NameLookup { name }) => {
                let reply = match self.pids.lookup_name(&name, now) {
                    Some(rec) => Message::PidInfo { rec },
                    None => Message::error(libc::ENOENT, format!("no process is named {name:?}")),
                };
                out.send(t, id, &reply);
            }
            (State::Ready { .. }, ToReferee::ListNames { after }) => {
                // Half a frame, each entry at most MAX_NAME + 12 bytes.
                let limit = (self.config.max_frame as usize / 2 / (pids::MAX_NAME + 12)).max(1);
                let (names, more) = self.pids.names_page(&after, limit);
                out.send(t, id, &Message::Names { names, more });
            }
            (State::Ready { .. }, ToReferee::ListPids { after }) => {
                let (pids, more) = self.pids.page(after, self.page_len(), now);
                out.send(t, id, &Message::Pids { pids, more });
            }
            (State::Ready { .. }, ToReferee::Ping) => out.send(t, id, &Message::Pong),
            // A host's request on the back door, which speaks for no host.
            (_, other) => self.unexpected(out, (t, c), id, other.kind().name()),
        }
    }

    /// Answers a message the connection may not send (another protocol's,
    /// or a host's request on the back door) and closes it.
    fn unexpected(&mut self, out: &mut dyn Out, (t, c): (ConnId, &Conn), id: u64, kind: &str) {
        warn!("referee: {}: unexpected {kind} message", describe(c));
        out.send(
            t,
            id,
            &Message::error(
                libc::EPROTO,
                format!("the referee does not take {kind} here"),
            ),
        );
        out.close(t);
    }

    /// While the referee settles, holds back a request of joined host
    /// `host` whose answer depends on what hosts have not claimed yet: a
    /// get of a key the table lacks (it would be "no such key" or a
    /// grant to create it) and a new pid_d (the counter restarted; hosts
    /// restore the pid_d they have first). Returns the message if it is
    /// to be handled now.
    fn park(
        &mut self,
        out: &mut dyn Out,
        (t, id): (ConnId, u64),
        host: SocketAddr,
        msg: ToReferee,
    ) -> Option<ToReferee> {
        let hold = match &msg {
            ToReferee::KeyGet { kind, key, .. } => {
                *key != libc::IPC_PRIVATE && !self.keys.knows(*kind, *key)
            }
            ToReferee::PidRegister { pid_d: 0, .. } => true,
            _ => false,
        };
        if !hold {
            return Some(msg);
        }
        if self.parked.len() >= MAX_PARKED {
            out.send(
                t,
                id,
                &Message::error(
                    libc::EAGAIN,
                    "the referee has just started and waits for the hosts to rejoin; try again",
                ),
            );
            return None;
        }
        debug!("{host}: {} parked until hosts rejoin", msg.kind().name());
        self.parked.push(Parked {
            conn: t,
            id,
            host,
            msg,
        });
        None
    }

    /// A host claimed `key`: the gets parked for it can be answered.
    fn unpark_key(&mut self, kind: IpcKind, key: i32, now: Instant) -> Vec<Reply> {
        let (mine, rest) = std::mem::take(&mut self.parked).into_iter().partition(
            |p| matches!(p.msg, ToReferee::KeyGet { kind: k, key: n, .. } if k == kind && n == key),
        );
        self.parked = rest;
        let mut out = Vec::new();
        for p in mine {
            if let ToReferee::KeyGet { flags, .. } = p.msg {
                out.extend(self.keys.get(kind, key, flags, p.host, (p.conn, p.id), now));
            }
        }
        out
    }

    /// The settle period is over: the parked requests are handled as if
    /// they came now, on connections still open.
    pub(crate) fn replay_parked(&mut self, now: Instant, out: &mut dyn Out) {
        let parked = std::mem::take(&mut self.parked);
        info!(
            "referee: settled; answering {} parked requests",
            parked.len()
        );
        for p in parked {
            let Some(mut c) = self.conns.remove(&p.conn) else {
                continue;
            };
            self.request(now, (p.conn, &mut c), p.id, p.msg, out);
            self.conns.insert(p.conn, c);
        }
    }

    /// Sends replies, each to its connection.
    pub(crate) fn deliver(&mut self, out: &mut dyn Out, replies: Vec<Reply>) {
        for (to, id, msg) in replies {
            out.send(to, id, &msg);
        }
    }

    /// Tells every joined host that a key is free, so each drops its
    /// placeholder (the one asking, `c`, is out of the table while it is
    /// handled).
    fn push_gone(&mut self, out: &mut dyn Out, (t, c): (ConnId, &Conn), kind: IpcKind, key: i32) {
        let gone = Message::KeyGone { kind, key };
        let joined = |c: &Conn| matches!(c.state, State::Ready { host: Some(_), .. });
        if joined(c) {
            out.send(t, 0, &gone);
        }
        for (tok, o) in &self.conns {
            if joined(o) {
                out.send(*tok, 0, &gone);
            }
        }
    }
}
