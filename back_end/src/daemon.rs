//! The daemon's state and its handling of the reactor's events: what
//! dipcd holds (local clients, the referee link, grants, registrations,
//! managers and employers) and which part each event goes to.
//!
//! dipcd is a `Handler` of `dipc_common::reactor`: the reactor owns the
//! sockets (the local clients' Unix listener and connections, the link to
//! the referee), their framing bounds and stall deadline, the signals and
//! the reaping; dipcd's pidfds and the exporter's HTTP sockets are its own,
//! watched by the reactor for readiness. Each concern's handling lives in
//! its own module as an `impl Daemon` block (`requests`, `creations`,
//! `registrations`, `keys`, `managers`, `sessions`, `moves`, `stats`);
//! this one keeps only what they share: the struct, the dispatch of
//! events, local clients coming and going, and relaying to the referee
//! and answering back.

use crate::creations::Grant;
use crate::exporter;
use crate::link::{Link, LinkEvent, Relayed};
use crate::load;
use crate::outbox::Outbox;
use crate::owned::OwnedKeys;
use crate::pids::Pids;
use crate::placeholders::Placeholders;
use crate::supervise::Child;
use dipc_common::auth::Secret;
use dipc_common::channel::FramedParts;
use dipc_common::config::Config;
use dipc_common::metrics::Metrics;
use dipc_common::net::Stream;
use dipc_common::reactor::{ConnId, Event, Gone, Handler, ListenerId, Out, Peer};
use dipc_common::sys::{self, PeerCred};
use dipc_common::wire::{FromReferee, IpcKind, Message, Protocol, ToDipcd, ToReferee};
use log::{debug, error, info, warn};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::collections::HashMap;
use std::time::Instant;

/// The key the exporter's listener is watched under.
pub(crate) const METRICS_LISTENER: u64 = 1;
/// The keys of the exporter's connections start here, far above those
/// of the pidfds (see `exporter`).
pub(crate) const FIRST_SCRAPER: u64 = u64::MAX / 2;
/// Pidfds (registered processes, grant holders) are watched under keys
/// from here up.
pub(crate) const FIRST_PIDFD: u64 = 16;
/// The "client" of relayed requests no client waits for (the reactor's
/// connection ids are never 0).
pub(crate) const NO_CLIENT: ConnId = 0;
pub(crate) const MAX_CLIENTS: usize = 4096;
/// Longest request a local client sends: requests name keys, ids, pids
/// and addresses (the data of a message goes to the kernel or to a worker,
/// never through dipcd), so a small bound keeps what a client can make
/// dipcd hold small: its read buffer stays under this, its replies under
/// two records of it plus the one reply queued past that bound (see
/// `Framed::server`).
pub(crate) const LOCAL_REQUEST_MAX: u32 = 64 * 1024;

pub(crate) struct Client {
    pub(crate) cred: PeerCred,
    /// Its supplementary groups (SO_PEERGROUPS, as of its `connect`).
    pub(crate) groups: Vec<u32>,
    /// The errors answered since dipcd last counted them.
    pub(crate) errnos: Vec<i32>,
    /// Replies not handed to the reactor yet (see `Daemon::flush`).
    replies: Vec<(u64, Message)>,
}

impl Client {
    pub(crate) fn new(cred: PeerCred, groups: Vec<u32>) -> Client {
        Client {
            cred,
            groups,
            errnos: Vec::new(),
            replies: Vec::new(),
        }
    }

    pub(crate) fn answer(&mut self, id: u64, msg: &Message) {
        if let Message::Error { errno, .. } = msg {
            self.errnos.push(*errno);
        }
        self.queue(id, msg);
    }

    /// Hands its replies to `io` (for a client that leaves the map).
    pub(crate) fn flush_into(&mut self, conn: ConnId, io: &mut Outbox) {
        for (id, msg) in self.replies.drain(..) {
            io.send(conn, id, &msg);
        }
    }

    /// A reply that is not counted among the errors.
    pub(crate) fn queue(&mut self, id: u64, msg: &Message) {
        self.replies.push((id, msg.clone()));
    }
}

/// A client being handed to an employer: what the employer is to do.
pub(crate) struct Handoff {
    pub(crate) cred: PeerCred,
    pub(crate) pid_d: i64,
    pub(crate) id: u64,
    pub(crate) msg: Message,
}

pub(crate) struct Daemon<'a> {
    pub(crate) config: &'a Config,
    pub(crate) secret: Secret,
    /// What the handling of the current event asks of the reactor.
    pub(crate) io: Outbox,
    /// The time of the event being handled.
    pub(crate) now: Instant,
    pub(crate) clients: HashMap<ConnId, Client>,
    /// Clients answered during the current event.
    pub(crate) answered: Vec<ConnId>,
    pub(crate) link: Link,
    pub(crate) link_events: Vec<LinkEvent>,
    pub(crate) next_key: u64,
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
    /// Clients taken out of the reactor for an employer (`Out::take`),
    /// until the reactor hands them over.
    pub(crate) handoffs: HashMap<ConnId, Handoff>,
    pub(crate) pids: Pids,
    /// Keys this host was granted to create, with the local process the
    /// grant went to: only it may commit or abort the key, and if it dies
    /// first (its pidfd turns readable), dipcd aborts for it.
    pub(crate) grants: HashMap<(IpcKind, i32), Grant>,
    /// The key whose grant holder's pidfd is watched under each key.
    pub(crate) grant_keys: HashMap<u64, (IpcKind, i32)>,
    /// The front_end's pid: its children are this host's workers.
    pub(crate) front_end: i32,
    /// The supervised children (front_end, referee).
    pub(crate) children: Vec<Child>,
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

impl<'a> Daemon<'a> {
    /// dipcd's state at start: nothing joined, nobody connected. The
    /// front_end is `front_end.0`; `front_end.1` the children it
    /// supervises; `link` the reactor's class of the link's connection.
    pub(crate) fn new(
        config: &'a Config,
        secret: Secret,
        incarnation: u64,
        front_end: (i32, Vec<Child>),
        link: ListenerId,
    ) -> std::io::Result<Daemon<'a>> {
        let now = Instant::now();
        Ok(Daemon {
            config,
            secret,
            io: Outbox::default(),
            now,
            clients: HashMap::new(),
            answered: Vec::new(),
            link: Link::new(link, now),
            link_events: Vec::new(),
            next_key: FIRST_PIDFD,
            admin_gid: match &config.admin_group {
                Some(g) => Some(sys::group_gid(g)?),
                None => None,
            },
            placeholders: Placeholders::new(config.runtime_dir.join("placeholders"), incarnation),
            owned: OwnedKeys::new(config.runtime_dir.join("owned"), incarnation),
            incarnation,
            managers: HashMap::new(),
            employers: HashMap::new(),
            handoffs: HashMap::new(),
            pids: Pids::new(config.runtime_dir.join("mailboxes")),
            grants: HashMap::new(),
            grant_keys: HashMap::new(),
            front_end: front_end.0,
            children: front_end.1,
            joined_once: false,
            meter: load::Meter::new(now),
            metrics: Metrics::default(),
            started: now,
            exporter: None,
        })
    }
}

impl Handler for Daemon<'_> {
    fn event(&mut self, now: Instant, ev: Event, out: &mut dyn Out) {
        self.now = now;
        match ev {
            Event::Accepted { conn, peer, .. } => self.accepted(conn, peer),
            Event::Frame { conn, id, msg, .. } if self.link.is(conn) => {
                self.link.frame(
                    now,
                    (id, msg),
                    &mut self.io,
                    self.config,
                    &mut self.link_events,
                );
            }
            Event::Frame { conn, id, msg, .. } => self.client_frame(conn, id, msg),
            Event::Connected { conn } if self.link.is(conn) => self.link.connected(
                now,
                &mut self.io,
                (self.config, &self.secret),
                &mut self.link_events,
            ),
            Event::Connected { .. } => {}
            Event::Closed { conn, why } if self.link.is(conn) => {
                self.link
                    .closed(now, why, &mut self.io, self.config, &mut self.link_events)
            }
            Event::Closed { conn, why } => self.client_closed(conn, why),
            Event::Signal(sig @ (Signal::SIGTERM | Signal::SIGINT)) => {
                info!("{sig} received, stopping");
                self.io.stop(0);
            }
            Event::Signal(_) => {}
            Event::Child { pid, status } => self.child_exited(Pid::from_raw(pid), status),
            Event::Ready { key } => self.ready(key, out),
            Event::Tick => self.tick(now, out),
        }
        self.link_done();
        self.flush(out);
    }

    fn wake_at(&self) -> Option<Instant> {
        // At least every heartbeat interval while joined, which is often
        // enough for the grants' and the exporter's time limits too.
        Some(self.link.deadline(self.config))
    }

    fn taken(&mut self, conn: ConnId, parts: FramedParts<Stream>, out: &mut dyn Out) {
        if let Some(h) = self.handoffs.remove(&conn) {
            self.hand_off(h, parts);
        }
        self.flush(out);
    }
}

impl Daemon<'_> {
    /// Hands what the event asked to the reactor: the clients' replies,
    /// then everything else in order.
    pub(crate) fn flush(&mut self, out: &mut dyn Out) {
        for t in std::mem::take(&mut self.answered) {
            if let Some(c) = self.clients.get_mut(&t) {
                c.flush_into(t, &mut self.io);
                for e in c.errnos.drain(..) {
                    self.metrics.request_error(e);
                }
            }
        }
        for (key, e) in self.io.drain(out) {
            self.unwatchable(key, e);
        }
    }

    /// The poll refused a pidfd: the process behind it cannot be watched,
    /// so what depends on watching it ends now.
    fn unwatchable(&mut self, key: u64, e: std::io::Error) {
        if let Some(&k) = self.grant_keys.get(&key) {
            info!(
                "{} key {:#x}: cannot watch the process granted its creation ({e}); \
                 creation given up",
                k.0.name(),
                k.1
            );
            self.end_grant_and_abort(k);
        } else if let Some(pid) = self.pids.pid_of_key(key) {
            warn!("cannot watch pid {pid} ({e}); its registration ends");
            self.process_exited(pid);
        }
    }

    fn ready(&mut self, key: u64, out: &mut dyn Out) {
        if self.exporter.as_ref().is_some_and(|ex| ex.owns(key)) {
            // The exporter calls the reactor itself: what is asked before
            // goes first (see `Outbox`).
            self.flush(out);
            self.scraper_ready(key, out);
        } else if key == METRICS_LISTENER {
            self.flush(out);
            if let Some(ex) = self.exporter.as_mut() {
                ex.accept(out);
            }
        } else if let Some(pid) = self.pids.pid_of_key(key) {
            self.process_exited(pid);
        } else if self.grant_keys.contains_key(&key) {
            self.grant_holder_exited(key);
        }
    }

    fn tick(&mut self, now: Instant, out: &mut dyn Out) {
        self.expire_grants(now);
        self.flush(out);
        if let Some(ex) = self.exporter.as_mut() {
            ex.expire(out, now);
        }
        let beat = self
            .link
            .tick(now, (&mut self.io, out), self.config, &mut self.link_events);
        if beat {
            let report = self.meter.report(self.pids.all(), now);
            self.link.push(&mut self.io, report);
        }
    }

    /// Acts on what the link reported.
    fn link_done(&mut self) {
        while !self.link_events.is_empty() {
            for ev in std::mem::take(&mut self.link_events) {
                self.link_event(ev);
            }
        }
    }

    fn link_event(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::Reply { to, msg } => self.relayed_reply(to, msg),
            LinkEvent::Push(FromReferee::KeyGone { kind, key }) => {
                self.placeholders.gone(kind, key);
                self.owned.remove(kind, key, None);
            }
            LinkEvent::Push(FromReferee::MoveAsk { pid_d, target, .. }) => {
                self.pids.ask_move(pid_d, target)
            }
            // An answer with no request (id 0): nothing waits for it.
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
                self.io.stop(1);
            }
        }
    }

    /// A child exited (the reactor reaped it). A supervised one stops the
    /// host: it is either wholly up or wholly down.
    fn child_exited(&mut self, pid: Pid, status: nix::sys::wait::WaitStatus) {
        self.manager_exited(pid);
        self.employers.remove(&pid);
        if let Some(i) = self.children.iter().position(|c| c.pid == pid) {
            let c = self.children.remove(i);
            error!(
                "{} (pid {pid}) died: {status:?}; stopping this host",
                c.name
            );
            self.io.stop(1);
        }
    }

    fn accepted(&mut self, conn: ConnId, peer: Peer) {
        let creds = match peer {
            Peer::Unix(Ok(c)) => c,
            Peer::Unix(Err(e)) => {
                warn!("local client without credentials: {e}");
                self.io.close(conn);
                return;
            }
            Peer::Tcp(from) => {
                warn!("a TCP connection from {from} on dipcd's socket; closed");
                self.io.close(conn);
                return;
            }
        };
        let cred = creds.cred;
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
            // The client's first call gets it as its answer.
            self.io.send(
                conn,
                0,
                &Message::error(
                    libc::EAGAIN,
                    format!(
                        "uid {} holds {limit} connections to dipcd (limits.clients_per_uid in dipc.conf)",
                        cred.uid
                    ),
                ),
            );
            self.io.close_when_flushed(conn);
            return;
        }
        self.clients.insert(conn, Client::new(cred, creds.groups));
    }

    fn client_frame(&mut self, t: ConnId, id: u64, msg: Message) {
        let Some(mut c) = self.clients.remove(&t) else {
            // Refused at its accept, or being handed to an employer.
            return;
        };
        self.metrics.request(msg.kind());
        self.request(t, &mut c, id, msg);
        self.count_errors(&mut c);
        c.flush_into(t, &mut self.io);
        self.clients.insert(t, c);
    }

    fn client_closed(&mut self, t: ConnId, why: Gone) {
        // A client being handed to an employer whose last replies could
        // not be written: no employer comes, and none counts against its
        // uid's limit.
        if self.handoffs.remove(&t).is_some() {
            debug!("a local client closed before it was handed to its employer");
        }
        let Some(c) = self.clients.remove(&t) else {
            return;
        };
        match why {
            Gone::Peer | Gone::Local => {}
            Gone::Stalled => warn!(
                "local client pid {} (uid {}): a request begun {} ms ago is not finished; closed",
                c.cred.pid,
                c.cred.uid,
                self.config.timeouts.request.as_millis()
            ),
            Gone::Io(e) | Gone::Protocol(e) => warn!("local client pid {}: {e}", c.cred.pid),
        }
        self.client_gone(t);
    }

    /// Relays a local request the referee takes as it came (a list, a
    /// get, an abort): the two protocols share it.
    pub(crate) fn pass_on(&mut self, c: &mut Client, to: Relayed, msg: ToDipcd) -> bool {
        match ToReferee::accept(msg.into()) {
            Ok(msg) => self.relay(c, to, msg),
            Err(e) => {
                // Only a protocol list that disagrees with this code.
                c.answer(
                    to.id,
                    &Message::error(libc::EPROTO, format!("dipcd cannot relay it: {e}")),
                );
                false
            }
        }
    }

    pub(crate) fn relay(&mut self, c: &mut Client, to: Relayed, msg: ToReferee) -> bool {
        let sent = self.link.relay(&mut self.io, to, msg);
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

    pub(crate) fn reply(&mut self, client: ConnId, id: u64, msg: &Message) {
        if let Some(c) = self.clients.get_mut(&client) {
            c.answer(id, msg);
            self.answered.push(client);
        }
    }
}
