//! The daemon's state and its event loop: what dipcd holds (local
//! clients, the referee link, grants, registrations, managers and
//! employers) and how one poll wakes each part.
//!
//! Each concern's handling lives in its own module as an `impl Daemon`
//! block (`requests`, `creations`, `registrations`, `keys`, `managers`,
//! `sessions`, `moves`, `stats`); this one keeps only what they share:
//! the struct, the loop, accepting and reading local clients, and
//! relaying to the referee and answering back.

use crate::creations::Grant;
use crate::exporter;
use crate::link::{Link, LinkEvent, Relayed, Then};
use crate::load;
use crate::owned::OwnedKeys;
use crate::pids::Pids;
use crate::placeholders::Placeholders;
use crate::supervise::{reap, Child};
use dipc_common::auth::Secret;
use dipc_common::channel::{ChannelError, Framed};
use dipc_common::config::Config;
use dipc_common::metrics::Metrics;
use dipc_common::net::Stream;
use dipc_common::sys::{self, PeerCred};
use dipc_common::wire::{IpcKind, Message};
use log::{debug, error, info, warn};
use mio::net::UnixListener;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

pub(crate) const SIGNALS: Token = Token(0);
pub(crate) const LISTENER: Token = Token(1);
pub(crate) const LINK: Token = Token(2);
pub(crate) const METRICS_LISTENER: Token = Token(3);
/// The Prometheus listener's connections take tokens from here up, far
/// above the clients' and pidfds' (see `exporter`).
pub(crate) const FIRST_SCRAPER: usize = usize::MAX / 2;
pub(crate) const FIRST_CLIENT: usize = 16;
/// The "client" of relayed requests no client waits for (clients and
/// pidfds have tokens from `FIRST_CLIENT` up).
pub(crate) const NO_CLIENT: usize = 0;
pub(crate) const MAX_CLIENTS: usize = 4096;
/// Longest request a local client sends: requests name keys, ids, pids
/// and addresses (the data of a message goes to the kernel or to a worker,
/// never through dipcd), so a small bound keeps what a client can make
/// dipcd hold small: its read buffer stays under this, its replies under
/// two records of it plus the one reply queued past that bound (see
/// `Framed::server`).
pub(crate) const LOCAL_REQUEST_MAX: u32 = 64 * 1024;

pub(crate) struct Client {
    pub(crate) framed: Framed<Stream>,
    pub(crate) cred: PeerCred,
    /// The errnos of the errors answered since dipcd last counted them.
    pub(crate) errnos: Vec<i32>,
}

impl Client {
    pub(crate) fn answer(&mut self, id: u64, msg: &Message) {
        if let Message::Error { errno, .. } = msg {
            self.errnos.push(*errno);
        }
        self.framed.queue(id, msg);
    }
}

pub(crate) struct Daemon<'a> {
    pub(crate) config: &'a Config,
    pub(crate) secret: Secret,
    pub(crate) poll: Poll,
    pub(crate) clients: HashMap<usize, Client>,
    pub(crate) next_token: usize,
    pub(crate) link: Link,
    pub(crate) admin_gid: Option<u32>,
    pub(crate) placeholders: Placeholders,
    /// The distributed keys this host owns, claimed again at each join.
    pub(crate) owned: OwnedKeys,
    /// This host's IPC namespace incarnation (see `dipc_common::incarnation`).
    pub(crate) incarnation: u64,
    /// The running shm managers, by segment id.
    pub(crate) managers: HashMap<i32, Pid>,
    /// Employers opening sessions, and the uid each works for.
    pub(crate) employers: HashMap<Pid, u32>,
    pub(crate) pids: Pids,
    /// Keys this host was granted to create, with the local process the
    /// grant went to: only it may commit or abort the key, and if it dies
    /// first (its pidfd, in the poll, turns readable), dipcd aborts for it.
    pub(crate) grants: HashMap<(IpcKind, i32), Grant>,
    /// The key whose grant holder's pidfd is under each token.
    pub(crate) grant_tokens: HashMap<usize, (IpcKind, i32)>,
    /// The front_end's pid: its children are this host's workers.
    pub(crate) front_end: i32,
    /// Whether the host has joined the cluster since dipcd started.
    pub(crate) joined_once: bool,
    /// This host's load, reported with each heartbeat.
    pub(crate) meter: load::Meter,
    /// What this host counts (see `dipc_common::metrics`).
    pub(crate) metrics: Metrics,
    pub(crate) started: Instant,
    /// The Prometheus listener, if dipc.conf asks for one.
    pub(crate) exporter: Option<exporter::Exporter>,
}

impl Daemon<'_> {
    pub(crate) fn serve(
        &mut self,
        signals: &mut nix::sys::signalfd::SignalFd,
        listener: &mut UnixListener,
        children: &mut Vec<Child>,
    ) -> u8 {
        let mut events = Events::with_capacity(256);
        let mut link_events = Vec::new();
        loop {
            let now = Instant::now();
            let wait = self
                .link
                .deadline(self.config)
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    error!("poll: {e}");
                    return 1;
                }
            }
            for ev in events.iter() {
                match ev.token() {
                    SIGNALS => {
                        for sig in sys::read_signals(signals) {
                            match sig {
                                Signal::SIGTERM | Signal::SIGINT => {
                                    info!("{sig} received, stopping");
                                    return 0;
                                }
                                Signal::SIGCHLD => {
                                    let mut exited = Vec::new();
                                    let dead = reap(children, &mut exited);
                                    for pid in exited {
                                        self.manager_exited(pid);
                                        self.employers.remove(&pid);
                                    }
                                    if let Some(dead) = dead {
                                        error!("{dead}; stopping this host");
                                        return 1;
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                    LISTENER => self.accept(listener),
                    METRICS_LISTENER => {
                        if let Some(ex) = self.exporter.as_mut() {
                            ex.accept(self.poll.registry());
                        }
                    }
                    Token(t) if self.exporter.as_ref().is_some_and(|ex| ex.owns(t)) => {
                        self.scraper_ready(t)
                    }
                    LINK => self.link.ready(
                        self.poll.registry(),
                        self.config,
                        &self.secret,
                        &mut link_events,
                    ),
                    Token(t) => match self.pids.pid_of_token(t) {
                        Some(pid) => self.process_exited(pid),
                        None if self.grant_tokens.contains_key(&t) => self.grant_holder_exited(t),
                        None => self.client_ready(t),
                    },
                }
                // A batch of many clients (each perhaps a fork) can take
                // longer than the heartbeat time-out under load.
                self.tick_link(&mut link_events);
            }
            self.expire_grants(Instant::now());
            self.expire_stalled_clients(Instant::now());
            if let Some(ex) = self.exporter.as_mut() {
                ex.expire(self.poll.registry(), Instant::now());
            }
            self.tick_link(&mut link_events);
            for ev in link_events.drain(..) {
                match ev {
                    LinkEvent::Reply { to, msg } => self.relayed_reply(to, msg),
                    LinkEvent::Push(Message::KeyGone { kind, key }) => {
                        self.placeholders.gone(kind, key);
                        self.owned.remove(kind, key, None);
                    }
                    LinkEvent::Push(Message::MoveAsk { pid_d, target, .. }) => {
                        self.pids.ask_move(pid_d, target)
                    }
                    LinkEvent::Push(other) => {
                        debug!("referee sent an unexpected {}", other.kind().name())
                    }
                    LinkEvent::Joined => {
                        self.claim_keys();
                        self.verify_placeholders();
                        self.restore_pids();
                        // systemd's Type=notify: ready once the host is a
                        // member (again, after a link break: the status).
                        let state = if std::mem::replace(&mut self.joined_once, true) {
                            "STATUS=joined the cluster again"
                        } else {
                            "READY=1\nSTATUS=joined the cluster"
                        };
                        if let Err(e) = sys::notify_service_manager(state) {
                            warn!("cannot notify the service manager: {e}");
                        }
                    }
                    LinkEvent::Fatal(why) => {
                        error!("{why}; stopping this host");
                        return 1;
                    }
                }
            }
        }
    }

    fn tick_link(&mut self, out: &mut Vec<LinkEvent>) {
        let beat = self
            .link
            .tick(self.poll.registry(), self.config, &self.secret, out);
        if beat {
            let report = self.meter.report(self.pids.all(), Instant::now());
            self.link.push(&report);
        }
    }

    fn accept(&mut self, listener: &mut UnixListener) {
        loop {
            match listener.accept() {
                Ok((mut s, _)) => {
                    if self.clients.len() >= MAX_CLIENTS {
                        warn!("{MAX_CLIENTS} local clients connected; refusing another");
                        continue;
                    }
                    let cred = match sys::peer_cred(&s) {
                        Ok(c) => c,
                        Err(e) => {
                            warn!("local client without credentials: {e}");
                            continue;
                        }
                    };
                    let limit = self.config.limits.clients_per_uid;
                    if cred.uid != 0
                        && self
                            .clients
                            .values()
                            .filter(|c| c.cred.uid == cred.uid)
                            .count()
                            >= limit
                    {
                        warn!(
                            "refused a local client of uid {} (pid {}): it has {limit} connections (limits.clients_per_uid)",
                            cred.uid, cred.pid
                        );
                        // Said on a fresh socket that has room for it; the
                        // client's first call gets it as its answer.
                        let mut f = Framed::new(Stream::Unix(s), self.config.max_frame);
                        f.queue(
                            0,
                            &Message::error(
                                libc::EAGAIN,
                                format!(
                                    "uid {} holds {limit} connections to dipcd (limits.clients_per_uid in dipc.conf)",
                                    cred.uid
                                ),
                            ),
                        );
                        let _ = f.flush();
                        continue;
                    }
                    let t = self.next_token;
                    self.next_token += 1;
                    if let Err(e) = self.poll.registry().register(
                        &mut s,
                        Token(t),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        warn!("cannot register a local client: {e}");
                        continue;
                    }
                    self.clients.insert(
                        t,
                        Client {
                            framed: Framed::server(Stream::Unix(s), LOCAL_REQUEST_MAX, 2),
                            cred,
                            errnos: Vec::new(),
                        },
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn!("accept on {}: {e}", self.config.back_end_socket().display());
                    return;
                }
            }
        }
    }

    fn client_ready(&mut self, t: usize) {
        let Some(mut c) = self.clients.remove(&t) else {
            return;
        };
        let mut close = false;
        loop {
            match c.framed.read_frame() {
                Ok(Some((id, msg))) => {
                    self.metrics.request(msg.kind());
                    self.request(t, &mut c, id, msg);
                    self.count_errors(&mut c);
                }
                Ok(None) => break,
                Err(ChannelError::Closed) => {
                    close = true;
                    break;
                }
                Err(e) => {
                    warn!("local client pid {}: {e}", c.cred.pid);
                    close = true;
                    break;
                }
            }
        }
        if c.framed.flush().is_err() || close {
            let _ = self.poll.registry().deregister(&mut c.framed.stream);
            self.client_gone(t);
        } else {
            self.clients.insert(t, c);
        }
    }

    /// Closes local clients that began a request and did not finish it
    /// within `request_ms` (a request is one small frame, sent at once).
    fn expire_stalled_clients(&mut self, now: Instant) {
        let limit = self.config.timeouts.request;
        let stalled: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| {
                c.framed
                    .partial_since()
                    .is_some_and(|t| now.duration_since(t) >= limit)
            })
            .map(|(t, _)| *t)
            .collect();
        for t in stalled {
            if let Some(mut c) = self.clients.remove(&t) {
                warn!(
                    "local client pid {} (uid {}): a request begun {} ms ago is not finished; closed",
                    c.cred.pid,
                    c.cred.uid,
                    limit.as_millis()
                );
                let _ = self.poll.registry().deregister(&mut c.framed.stream);
                self.client_gone(t);
            }
        }
    }

    pub(crate) fn relay(&mut self, c: &mut Client, to: Relayed, msg: &Message) -> bool {
        let sent = self.link.relay(to, msg);
        if !sent {
            c.answer(
                to.id,
                &Message::error(
                    libc::ENOTCONN,
                    format!(
                        "this host has not joined the referee at {} (yet)",
                        self.config.referee_addr()
                    ),
                ),
            );
        }
        sent
    }

    pub(crate) fn reply(&mut self, client: usize, id: u64, msg: &Message) {
        if let Some(c) = self.clients.get_mut(&client) {
            c.answer(id, msg);
            for e in c.errnos.drain(..) {
                self.metrics.request_error(e);
            }
            if c.framed.flush().is_err() {
                if let Some(mut c) = self.clients.remove(&client) {
                    let _ = self.poll.registry().deregister(&mut c.framed.stream);
                    self.client_gone(client);
                }
            }
        }
    }

    pub(crate) fn no_client(&self) -> Relayed {
        Relayed {
            client: NO_CLIENT,
            id: 0,
            key: None,
            then: Then::Nothing,
        }
    }
}
