//! The referee: the cluster's name server, one per cluster, on the arbiter
//! host.
//!
//! It keeps the tables every host needs to agree on — hosts ([`hosts`]),
//! distributed keys ([`keys`]) and registered processes ([`pids`]) — and
//! serves two kinds of peer in one single-threaded
//! mio loop:
//!
//! - each host's back_end, over TCP: after the address allow-list and the
//!   handshake on the cluster secret (see `dipc_common::auth`; only the
//!   `Host` role is served here), every frame travels sealed by the
//!   connection's secure channel. The host sends `Join` for the front_end
//!   address it stated in the handshake, which must be the connection's
//!   source address, and nothing else is taken before it: a link speaks
//!   for its own host only. Then a `Heartbeat` every
//!   `heartbeat_interval_ms`; a host silent for `heartbeat_timeout_ms`,
//!   or whose connection closes, is marked down;
//! - administrators, over the *back door*: a Unix socket in the runtime
//!   directory (`referee.sock`), open to root and to the `admin_group`
//!   (checked with SO_PEERCRED), which `dipcref` talks to.
//!
//! Back_ends also relay administrative requests from `dipcref` on their own
//! host over their joined link, after checking the caller's credentials
//! themselves (root and `admin_group`): a joined link vouches for them.
//! An employer's connection (another role) is refused at the handshake.
//!
//! Its tables live in memory only. When it starts (again), every host
//! rejoins within moments and claims the keys it owns (`KeyClaim`) and
//! restores its registered processes; for `Config::referee_settle` after
//! its start the referee *parks* the requests whose answer depends on
//! what hosts have not told it yet (a get of a key it does not know, a new
//! pid_d) and answers them once a host claims the key or the period ends.

pub mod balance;
pub mod hosts;
pub mod keys;
pub mod pids;
#[cfg(test)]
mod sim;

use dipc_common::auth::{self, Secret};
use dipc_common::config::Config;
use dipc_common::reactor::{self, ConnId, Event, Gone, Handler, Listener, Out, Peer, Reactor};
use dipc_common::sys;
use dipc_common::wire::{IpcKind, Message, Role};
use hosts::HostTable;
use keys::{ClaimRefused, KeyTable, Removal, Reply};
use log::{debug, error, info, warn};
use mio::net::{TcpListener, UnixListener};
use nix::sys::signal::Signal;
use pids::{PidTable, Registration};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Connections beyond this are refused, so a flood cannot exhaust memory
/// or descriptors.
const MAX_CONNS: usize = 4096;
/// Requests parked while the referee settles; beyond this they get
/// `EAGAIN` at once rather than memory.
const MAX_PARKED: usize = 65536;
/// The reactor's listeners, in the order `serve` adds them.
const TCP: usize = 0;
const BACK_DOOR: usize = 1;

enum PeerKind {
    /// Another daemon, by source address.
    Tcp(IpAddr),
    /// A local administrator on the back door.
    Admin,
}

enum State {
    AwaitHello,
    /// Authenticated; `stated` is the front_end address the handshake
    /// named (`None` on the back door), `host` is set once it has joined.
    Ready {
        stated: Option<SocketAddr>,
        host: Option<SocketAddr>,
    },
}

struct Conn {
    peer: PeerKind,
    state: State,
    /// The handshake must finish by then.
    deadline: Option<Instant>,
}

/// The referee's logic (see the module docs), driven by the reactor's
/// events.
pub struct Referee<'a> {
    config: &'a Config,
    secret: Secret,
    /// Who may use the back door besides root.
    admin_gid: Option<u32>,
    /// The back door's path, removed on the way out.
    door_path: PathBuf,
    conns: HashMap<ConnId, Conn>,
    hosts: HostTable,
    keys: KeyTable,
    pids: PidTable,
    /// Until then, requests that need every host's claims are parked.
    settle_until: Instant,
    parked: Vec<Parked>,
    /// Hosts' loads and the load balancer (see [`balance`]).
    balance: balance::Balancer,
    /// When the balancer's current window ends.
    next_balance: Instant,
    /// When the hosts' silences and the handshakes' deadlines are looked
    /// at next.
    next_sweep: Instant,
}

/// A request held back while the referee settles (see the module docs).
struct Parked {
    conn: ConnId,
    id: u64,
    /// The joined host that asked.
    host: SocketAddr,
    msg: Message,
}

/// Runs the referee until SIGTERM or SIGINT; returns the exit code.
pub fn run(config: &Config, secret: Secret) -> i32 {
    match serve(config, secret) {
        Ok(code) => code,
        Err(e) => {
            error!("referee: {e}");
            1
        }
    }
}

/// How often the referee sweeps: often enough that a silent host is marked
/// down close to its time-out.
fn sweep_tick(config: &Config) -> Duration {
    (config.timeouts.heartbeat_interval / 2).max(Duration::from_millis(20))
}

fn serve(config: &Config, secret: Secret) -> io::Result<i32> {
    let mut r = Reactor::new(MAX_CONNS)?;
    r.watch_signals()?;
    let addr = config.referee_addr();
    let tcp = TcpListener::bind(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    let admin_gid = match &config.admin_group {
        Some(g) => Some(sys::group_gid(g)?),
        None => None,
    };
    let door_path = config.referee_socket();
    let door = UnixListener::from_std(sys::bind_unix(&door_path, 0o660, admin_gid)?);
    // A host's link also takes what other hosts' changes push to it; one
    // that reads none of it is dropped after a few maximal records.
    let opts = reactor::Options::server(config.max_frame, 4);
    let tcp_opts = reactor::Options {
        dead_after: Some(config.timeouts.heartbeat_timeout),
        ..opts.clone()
    };
    if r.listen(Listener::Tcp(tcp), tcp_opts)? != TCP
        || r.listen(Listener::Unix(door), opts)? != BACK_DOOR
    {
        return Err(io::Error::other("listeners out of order"));
    }
    info!(
        "referee listening on {addr}, back door {}",
        door_path.display()
    );
    if config.balance.enabled {
        info!(
            "referee: load balancer on: every {} ms, threshold {} thousandths of a CPU, \
             processes stay {} ms at least",
            config.balance.interval.as_millis(),
            config.balance.threshold_milli,
            config.balance.min_stay.as_millis()
        );
    }
    info!(
        "referee: unknown keys and new pid_d wait {} ms for the hosts to rejoin",
        config.referee_settle().as_millis()
    );
    let mut referee = Referee::new(config, secret, admin_gid, Instant::now());
    referee.door_path = door_path;
    r.run(&mut referee)
}

impl Handler for Referee<'_> {
    fn event(&mut self, now: Instant, ev: Event, out: &mut dyn Out) {
        match ev {
            Event::Accepted {
                conn,
                listener,
                peer,
            } => self.accepted(now, conn, listener, peer, out),
            Event::Frame { conn, id, msg, .. } => {
                let Some(mut c) = self.conns.remove(&conn) else {
                    return;
                };
                self.handle(now, (conn, &mut c), id, msg, out);
                self.conns.insert(conn, c);
            }
            Event::Closed { conn, why } => {
                let Some(c) = self.conns.remove(&conn) else {
                    return;
                };
                match why {
                    Gone::Protocol(e) => {
                        warn!("referee: {}: protocol error: {e}", describe(&c));
                        out.send(conn, 0, &Message::error(libc::EPROTO, e));
                    }
                    Gone::Io(e) => debug!("referee: connection {conn}: {e}"),
                    Gone::Peer | Gone::Local | Gone::Stalled => {}
                }
                self.drop_conn(now, conn, c, out);
            }
            Event::Signal(sig @ (Signal::SIGTERM | Signal::SIGINT)) => {
                info!("referee: {sig} received, exiting");
                if !self.door_path.as_os_str().is_empty() {
                    let _ = std::fs::remove_file(&self.door_path);
                }
                out.stop(0);
            }
            Event::Signal(_) | Event::Child { .. } => {}
            // It opens and watches nothing of its own.
            Event::Connected { .. } | Event::Ready { .. } => {}
            Event::Tick => {
                if now >= self.next_sweep {
                    self.sweep(now, out);
                    self.next_sweep = now + sweep_tick(self.config);
                }
                if !self.parked.is_empty() && now >= self.settle_until {
                    self.replay_parked(now, out);
                }
            }
        }
    }

    fn wake_at(&self) -> Option<Instant> {
        Some(match self.parked.is_empty() {
            true => self.next_sweep,
            false => self.next_sweep.min(self.settle_until),
        })
    }
}

impl<'a> Referee<'a> {
    /// A referee that started at `now`, with empty tables.
    pub fn new(
        config: &'a Config,
        secret: Secret,
        admin_gid: Option<u32>,
        now: Instant,
    ) -> Referee<'a> {
        Referee {
            config,
            secret,
            admin_gid,
            door_path: PathBuf::new(),
            conns: HashMap::new(),
            hosts: HostTable::default(),
            keys: KeyTable::default(),
            pids: PidTable::default(),
            settle_until: now + config.referee_settle(),
            parked: Vec::new(),
            balance: balance::Balancer::default(),
            next_balance: now + config.balance.interval,
            next_sweep: now + sweep_tick(config),
        }
    }

    fn accepted(
        &mut self,
        now: Instant,
        conn: ConnId,
        listener: usize,
        peer: Peer,
        out: &mut dyn Out,
    ) {
        match (listener, peer) {
            (TCP, Peer::Tcp(from)) => {
                let ip = from.ip();
                if !self.config.is_allowed(ip) {
                    warn!("refused connection from {ip}: address not in allowed_hosts");
                    return out.close(conn);
                }
                self.conns.insert(
                    conn,
                    Conn {
                        peer: PeerKind::Tcp(ip),
                        state: State::AwaitHello,
                        deadline: Some(now + self.config.timeouts.request),
                    },
                );
            }
            (BACK_DOOR, Peer::Unix(Ok(creds))) if sys::is_admin(&creds.cred, self.admin_gid) => {
                self.conns.insert(
                    conn,
                    Conn {
                        peer: PeerKind::Admin,
                        state: State::Ready {
                            stated: None,
                            host: None,
                        },
                        deadline: None,
                    },
                );
            }
            (BACK_DOOR, Peer::Unix(Ok(creds))) => {
                let cred = creds.cred;
                warn!(
                    "referee back door: refused uid {} gid {} (pid {}): not root or admin_group",
                    cred.uid, cred.gid, cred.pid
                );
                out.send(
                    conn,
                    0,
                    &Message::error(
                        libc::EACCES,
                        "the referee's back door is open to root and admin_group only",
                    ),
                );
                out.close(conn);
            }
            (_, Peer::Unix(Err(e))) => {
                warn!("referee back door: no peer credentials: {e}");
                out.close(conn);
            }
            (_, _) => out.close(conn),
        }
    }

    /// Records in one page of a list: every record is at most 64 bytes
    /// encoded, so a page fills at most half a frame, and a list of any
    /// length reaches a host (and its relayed `dipcref`) without a frame
    /// over `max_frame`, which would break the host's link.
    fn page_len(&self) -> usize {
        (self.config.max_frame as usize / 2 / 64).clamp(1, 8192)
    }

    fn handle(
        &mut self,
        now: Instant,
        (t, c): (ConnId, &mut Conn),
        id: u64,
        msg: Message,
        out: &mut dyn Out,
    ) {
        let ip = match c.peer {
            PeerKind::Tcp(ip) => Some(ip),
            PeerKind::Admin => None,
        };
        if let State::Ready { host: Some(h), .. } = c.state {
            // Every frame of a joined host shows it alive.
            self.hosts.heard(&h, now);
        }
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
            (State::AwaitHello, msg) => match auth::accept(&self.secret, &msg, Role::Host) {
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
            },
            (
                State::Ready {
                    stated: Some(stated),
                    host: None,
                },
                Message::Join { front_end },
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
            (State::Ready { host: Some(h), .. }, Message::Heartbeat) => {
                self.hosts.heartbeat(h, t);
                out.send(t, id, &Message::HeartbeatAck);
            }
            // Sent with each heartbeat; no answer.
            (
                State::Ready { host: Some(h), .. },
                Message::LoadReport {
                    window_ms,
                    cpu_ms,
                    procs,
                },
            ) => self.balance.report(*h, window_ms, cpu_ms, procs),
            (State::Ready { .. }, Message::ListLoad) => {
                // Each process at most 8 + 4 + 4 + MAX_LOAD_NAME + 4 + 8
                // bytes: half a frame of them.
                let limit = (self.config.max_frame as usize / 2 / 128).max(1);
                let (hosts, moves) = self.balance.snapshot(limit);
                out.send(t, id, &Message::Loads { hosts, moves });
            }
            (State::Ready { .. }, Message::ListHosts) => {
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
                Message::KeyGet { kind, key, flags },
            ) => {
                let asker = *asker;
                let replies = self.keys.get(kind, key, flags, asker, (t, id), now);
                self.deliver(out, replies);
            }
            (
                State::Ready { host: Some(h), .. },
                Message::KeyCommit {
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
            (State::Ready { host: Some(_), .. }, Message::KeyAbort { kind, key }) => {
                let replies = self.keys.abort(kind, key, t, now);
                self.deliver(out, replies);
                out.send(t, id, &Message::Done { value: 0 });
            }
            (
                State::Ready { host: Some(h), .. },
                Message::KeyRemove {
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
                Message::KeyClaim {
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
            (State::Ready { .. }, Message::ListKeys { after }) => {
                let (keys, more) = self.keys.page(after, self.page_len(), now);
                out.send(t, id, &Message::Keys { keys, more });
            }
            (State::Ready { .. }, Message::DropKey { kind, key }) => {
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
                Message::PidRegister {
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
            (State::Ready { host: Some(h), .. }, Message::Unregister { pid_d, pid }) => {
                let reply = match self.pids.unregister(pid_d, *h, pid) {
                    Ok(()) => {
                        debug!("pid_d {pid_d} (pid {pid} on {h}) unregistered");
                        Message::Done { value: 0 }
                    }
                    Err((errno, why)) => Message::error(errno, why),
                };
                out.send(t, id, &reply);
            }
            (State::Ready { host: Some(h), .. }, Message::MoveToken { pid_d, pid }) => {
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
            (State::Ready { host: Some(h), .. }, Message::MoveAbort { pid_d, pid }) => {
                let reply = done_or_error(self.pids.move_abort(pid_d, *h, pid));
                out.send(t, id, &reply);
            }
            (
                State::Ready { host: Some(h), .. },
                Message::MoveIn {
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
            (State::Ready { host: Some(_), .. }, Message::MoveCheck { pid_d, token, uid }) => {
                let reply = done_or_error(self.pids.check_move(pid_d, token, uid));
                out.send(t, id, &reply);
            }
            (
                State::Ready { host: Some(_), .. },
                Message::MoveAsk {
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
            (State::Ready { .. }, Message::PidLookup { pid_d }) => {
                let reply = match self.pids.lookup(pid_d, now) {
                    Some(rec) => Message::PidInfo { rec },
                    None => Message::error(libc::ESRCH, format!("no registered process {pid_d}")),
                };
                out.send(t, id, &reply);
            }
            (State::Ready { host: Some(h), .. }, Message::NameRegister { pid_d, pid, name }) => {
                let reply = match self.pids.name(pid_d, *h, pid, &name) {
                    Ok(()) => {
                        debug!("pid_d {pid_d} is named {name:?}");
                        Message::Done { value: 0 }
                    }
                    Err((errno, why)) => Message::error(errno, why),
                };
                out.send(t, id, &reply);
            }
            (State::Ready { host: Some(h), .. }, Message::NameRelease { pid_d, pid, name }) => {
                let reply = done_or_error(self.pids.release(pid_d, *h, pid, &name));
                out.send(t, id, &reply);
            }
            (State::Ready { .. }, Message::NameLookup { name }) => {
                let reply = match self.pids.lookup_name(&name, now) {
                    Some(rec) => Message::PidInfo { rec },
                    None => Message::error(libc::ENOENT, format!("no process is named {name:?}")),
                };
                out.send(t, id, &reply);
            }
            (State::Ready { .. }, Message::ListNames { after }) => {
                // Half a frame, each entry at most MAX_NAME + 12 bytes.
                let limit = (self.config.max_frame as usize / 2 / (pids::MAX_NAME + 12)).max(1);
                let (names, more) = self.pids.names_page(&after, limit);
                out.send(t, id, &Message::Names { names, more });
            }
            (State::Ready { .. }, Message::ListPids { after }) => {
                let (pids, more) = self.pids.page(after, self.page_len(), now);
                out.send(t, id, &Message::Pids { pids, more });
            }
            (State::Ready { .. }, Message::Ping) => out.send(t, id, &Message::Pong),
            (_, other) => {
                warn!(
                    "referee: {}: unexpected {} message",
                    describe(c),
                    other.kind().name()
                );
                out.send(
                    t,
                    id,
                    &Message::error(
                        libc::EPROTO,
                        format!("the referee does not take {} here", other.kind().name()),
                    ),
                );
                out.close(t);
            }
        }
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
        msg: Message,
    ) -> Option<Message> {
        let hold = match &msg {
            Message::KeyGet { kind, key, .. } => {
                *key != libc::IPC_PRIVATE && !self.keys.knows(*kind, *key)
            }
            Message::PidRegister { pid_d: 0, .. } => true,
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
            |p| matches!(p.msg, Message::KeyGet { kind: k, key: n, .. } if k == kind && n == key),
        );
        self.parked = rest;
        let mut out = Vec::new();
        for p in mine {
            if let Message::KeyGet { flags, .. } = p.msg {
                out.extend(self.keys.get(kind, key, flags, p.host, (p.conn, p.id), now));
            }
        }
        out
    }

    /// The settle period is over: the parked requests are handled as if
    /// they came now, on connections still open.
    fn replay_parked(&mut self, now: Instant, out: &mut dyn Out) {
        let parked = std::mem::take(&mut self.parked);
        info!(
            "referee: settled; answering {} parked requests",
            parked.len()
        );
        for p in parked {
            let Some(mut c) = self.conns.remove(&p.conn) else {
                continue;
            };
            self.handle(now, (p.conn, &mut c), p.id, p.msg, out);
            self.conns.insert(p.conn, c);
        }
    }

    /// Sends replies, each to its connection.
    fn deliver(&mut self, out: &mut dyn Out, replies: Vec<Reply>) {
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

    fn refuse(&self, out: &mut dyn Out, (t, c): (ConnId, &Conn), reason: &str) {
        match c.peer {
            PeerKind::Tcp(ip) => warn!("refused connection from {ip}: {reason}"),
            PeerKind::Admin => warn!("referee back door: {reason}"),
        }
        out.send(
            t,
            0,
            &Message::Refused {
                reason: reason.to_owned(),
            },
        );
        out.close(t);
    }

    /// Releases what a connection held: the keys it was granted and did
    /// not commit, and for a joined host its link.
    fn drop_conn(&mut self, now: Instant, t: ConnId, c: Conn, out: &mut dyn Out) {
        let replies = self.keys.conn_closed(t, now);
        self.deliver(out, replies);
        if let State::Ready { host: Some(h), .. } = c.state {
            if self.hosts.disconnected(&h, t) {
                info!("host {h} down: connection closed");
            }
            self.balance.host_gone(&h);
            // Its dipcd no longer watches these processes for us.
            let n = self.pids.conn_closed(t);
            if n > 0 {
                info!("host {h}: {n} registered processes dropped with its connection");
            }
        }
    }

    /// The longest gap between two sweeps that counts in full towards a
    /// host's silence: two sweep ticks (see `serve`); a longer one is the
    /// referee's own stall.
    fn sweep_step(&self) -> Duration {
        sweep_tick(self.config) * 2
    }

    fn sweep(&mut self, now: Instant, out: &mut dyn Out) {
        for (addr, conn) in self.hosts.expire(
            now,
            self.config.timeouts.heartbeat_timeout,
            self.sweep_step(),
        ) {
            info!(
                "host {addr} down: no heartbeat for {} ms",
                self.config.timeouts.heartbeat_timeout.as_millis()
            );
            if let Some(t) = conn {
                out.close(t);
            }
        }
        if now >= self.next_balance {
            self.balance_round(now, out);
            self.next_balance = now + self.config.balance.interval;
        }
        let replies = self.keys.expire(now, self.config.timeouts.request);
        self.deliver(out, replies);
        for (t, c) in &self.conns {
            if c.deadline.is_some_and(|d| now > d) {
                warn!("referee: {}: handshake not finished in time", describe(c));
                out.close(*t);
            }
        }
    }

    /// Ends the balancer's window and asks for the moves it decides, as
    /// `dipcref migrate` does: a `MoveAsk` pushed to the process's host.
    fn balance_round(&mut self, now: Instant, out: &mut dyn Out) {
        let up: Vec<SocketAddr> = self
            .hosts
            .snapshot(now)
            .into_iter()
            .filter(|h| h.up)
            .map(|h| h.addr)
            .collect();
        let timeout =
            balance::move_timeout(self.config.balance.interval, self.config.timeouts.request);
        let pids = &self.pids;
        let moves = self
            .balance
            .round(now, &self.config.balance, timeout, &up, |pid_d| {
                pids.lookup(pid_d, now).map(|r| r.host)
            });
        for d in moves {
            let asked = match self.pids.may_move(d.pid_d, 0, true) {
                Ok((conn, _)) if self.pids.lookup(d.pid_d, now).map(|r| r.host) == Some(d.from) => {
                    let ask = Message::MoveAsk {
                        pid_d: d.pid_d,
                        target: d.to,
                        uid: 0,
                        admin: true,
                    };
                    out.send(conn, 0, &ask);
                    self.conns.contains_key(&conn)
                }
                _ => false,
            };
            if !asked {
                info!(
                    "balance: cannot ask pid_d {} to move from {}: it is no longer there",
                    d.pid_d, d.from
                );
                self.balance.not_asked(&d);
            }
        }
    }
}

fn describe(c: &Conn) -> String {
    match (&c.peer, &c.state) {
        (_, State::Ready { host: Some(h), .. }) => format!("host {h}"),
        (PeerKind::Tcp(ip), _) => format!("peer {ip}"),
        (PeerKind::Admin, _) => "back door client".to_owned(),
    }
}

/// `Done` for a table change that was made, else its error.
fn done_or_error(r: Result<(), (i32, String)>) -> Message {
    match r {
        Ok(()) => Message::Done { value: 0 },
        Err((errno, why)) => Message::error(errno, why),
    }
}

#[cfg(test)]
mod tests;
