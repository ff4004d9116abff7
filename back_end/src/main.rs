//! `dipcd`: the per-host dipc daemon, and the back_end role.
//!
//! `dipcd -c /etc/dipc/dipc.conf` reads the configuration, takes the
//! runtime directory's lock, loads (or on first start creates) the cluster
//! secret, and forks the host's long-lived processes:
//!
//! - the front_end (`dipc-front-end`), which owns the host's TCP port and
//!   forks a worker per incoming connection;
//! - on the arbiter host, the referee (`dipc-referee`).
//!
//! The process itself then becomes the back_end: it keeps this host joined
//! to the referee (see [`link`]) and serves local applications and
//! `dipcref` on the Unix socket `dipcd.sock`, forking an employer to open
//! (and hand over) each connection an application needs to another host's
//! worker.
//!
//! It also keeps this host's part of the cluster's process table (see
//! [`pids`]): it registers local processes with the referee (`regist`),
//! watches each through a pidfd, and unregisters it when it exits.
//!
//! Supervision: if the front_end or the referee dies, the back_end stops
//! the whole suite and exits non-zero (a host is either wholly up or wholly
//! down, never half-alive); every child gets SIGTERM from the kernel if the
//! back_end itself dies. SIGTERM or SIGINT stops everything and removes the
//! sockets. Logs go to stderr through `env_logger` (`RUST_LOG`, default
//! `info`).

mod exporter;
mod grants;
mod link;
mod load;
mod moves;
mod owned;
mod pids;
mod placeholders;

use clap::Parser;
use dipc_back_end::cli::Args;
use dipc_common::auth::{Secret, Vouch};
use dipc_common::channel::{ChannelError, Framed};
use dipc_common::config::Config;
use dipc_common::incarnation;
use dipc_common::metrics::Metrics;
use dipc_common::net::Stream;
use dipc_common::procs;
use dipc_common::sys::{self, PeerCred};
use dipc_common::sysv;
use dipc_common::wire::{HostInfo, IpcKind, Message, Origin};
use link::{Link, LinkEvent, Relayed, Then};
use log::{debug, error, info, warn};
use mio::net::UnixListener;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use owned::{Owned, OwnedKeys};
use pids::Pids;
use placeholders::Placeholders;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const SIGNALS: Token = Token(0);
const LISTENER: Token = Token(1);
const LINK: Token = Token(2);
const METRICS_LISTENER: Token = Token(3);
/// The Prometheus listener's connections take tokens from here up, far
/// above the clients' and pidfds' (see `exporter`).
const FIRST_SCRAPER: usize = usize::MAX / 2;
const FIRST_CLIENT: usize = 16;
/// The "client" of relayed requests no client waits for (clients and
/// pidfds have tokens from `FIRST_CLIENT` up).
const NO_CLIENT: usize = 0;
const MAX_CLIENTS: usize = 4096;
/// Longest request a local client sends: requests name keys, ids, pids
/// and addresses (the data of a message goes to the kernel or to a worker,
/// never through dipcd), so a small bound keeps what a client can make
/// dipcd hold small: its read buffer stays under this, its replies under
/// two records of it plus the one reply queued past that bound (see
/// `Framed::server`).
const LOCAL_REQUEST_MAX: u32 = 64 * 1024;
/// Creations in progress watched at once (each holds a pidfd); beyond
/// this a grant is given up at once rather than let a process that asks
/// for keys without creating them exhaust dipcd's descriptors.
const MAX_GRANTS: usize = 1024;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    // panic = "abort" for dipcd and every role forked from it (see
    // sys::abort_on_panic for why it is not a profile setting).
    sys::abort_on_panic();
    let args = Args::parse();
    let path = args.config.unwrap_or_else(Config::default_path);
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&config) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            error!("{e}");
            ExitCode::from(1)
        }
    }
}

/// A child process the back_end supervises.
struct Child {
    name: &'static str,
    pid: Pid,
}

fn run(config: &Config) -> io::Result<u8> {
    let lock = sys::lock_runtime_dir(&config.runtime_dir)?;
    let (secret, created) = Secret::load_or_create(&config.secret_file)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    if created {
        info!(
            "generated a new cluster secret in {} (copy it to every host)",
            config.secret_file.display()
        );
    }
    // Block the signals before forking, so none is lost between a fork and
    // the child's own signalfd.
    let mut signals = sys::signal_fd()?;
    let listener = sys::bind_unix(&config.back_end_socket(), 0o666, None)?;
    info!(
        "dipcd starting: host {}, referee {}{}",
        config.front_end_addr(),
        config.referee_addr(),
        if config.host.arbiter {
            " (this host)"
        } else {
            ""
        }
    );

    // The front_end and the referee keep the runtime lock (and nothing
    // else of ours): they live as long as the host's daemons, and the
    // directory stays locked until the last of them is gone. The
    // short-lived roles (employers, shm managers, workers) do not keep it:
    // a worker runs as a remote user, who must not be able to keep the
    // directory locked.
    let keep = [lock.as_raw_fd()];
    let mut children = Vec::new();
    if config.host.arbiter {
        let s = secret.clone();
        let pid = sys::fork_child("dipc-referee", Signal::SIGTERM, &keep, move || {
            dipc_referee::run(config, s)
        })?;
        children.push(Child {
            name: "referee",
            pid,
        });
    }
    // Before the front_end is forked: its workers check every remote call
    // against it.
    let incarnation = incarnation::load_or_create(&config.runtime_dir.join("incarnation"))
        .map_err(|e| io::Error::new(e.kind(), format!("this host's IPC incarnation: {e}")))?;
    info!("IPC namespace incarnation {incarnation:#x}");
    let pid = sys::fork_child("dipc-front-end", Signal::SIGTERM, &keep, || {
        dipc_front_end::run(config, &secret, incarnation)
    })?;
    children.push(Child {
        name: "front_end",
        pid,
    });

    let mut d = Daemon {
        config,
        secret,
        poll: Poll::new()?,
        clients: HashMap::new(),
        next_token: FIRST_CLIENT,
        link: Link::new(LINK),
        admin_gid: match &config.admin_group {
            Some(g) => Some(sys::group_gid(g)?),
            None => None,
        },
        placeholders: Placeholders::new(config.runtime_dir.join("placeholders"), incarnation),
        owned: OwnedKeys::new(config.runtime_dir.join("owned"), incarnation),
        incarnation,
        managers: HashMap::new(),
        employers: HashMap::new(),
        pids: Pids::new(config.runtime_dir.join("mailboxes")),
        grants: HashMap::new(),
        grant_tokens: HashMap::new(),
        front_end: pid.as_raw(),
        joined_once: false,
        meter: load::Meter::new(Instant::now()),
        metrics: Metrics::default(),
        started: Instant::now(),
        exporter: None,
    };
    if let Some(addr) = config.metrics.listen {
        let ex = exporter::Exporter::bind(addr, d.poll.registry(), METRICS_LISTENER, FIRST_SCRAPER)
            .map_err(|e| io::Error::new(e.kind(), format!("metrics.listen {addr}: {e}")))?;
        info!("serving metrics on http://{}/metrics", ex.local_addr()?);
        d.exporter = Some(ex);
    }
    let mut listener = UnixListener::from_std(listener);
    d.poll.registry().register(
        &mut SourceFd(&signals.as_raw_fd()),
        SIGNALS,
        Interest::READABLE,
    )?;
    d.poll
        .registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;

    let code = d.serve(&mut signals, &mut listener, &mut children);
    let _ = sys::notify_service_manager("STOPPING=1");
    d.placeholders.clear();
    // The managers get SIGTERM from the kernel when dipcd exits.
    for sid in d.managers.keys() {
        let _ = std::fs::remove_file(config.shm_socket(*sid));
    }
    d.pids.clear(d.poll.registry());
    shutdown(&children);
    let _ = std::fs::remove_file(config.back_end_socket());
    info!("dipcd stopped");
    Ok(code)
}

struct Client {
    framed: Framed<Stream>,
    cred: PeerCred,
    /// The errnos of the errors answered since dipcd last counted them.
    errnos: Vec<i32>,
}

impl Client {
    fn answer(&mut self, id: u64, msg: &Message) {
        if let Message::Error { errno, .. } = msg {
            self.errnos.push(*errno);
        }
        self.framed.queue(id, msg);
    }
}

/// The process granted the creation of a key, watched until it commits or
/// aborts it, on the connection it was granted on.
struct Grant {
    pid: i32,
    /// The client connection the grant went to: the commit must come on
    /// it, and if it closes first the creation is given up.
    client: usize,
    starttime: u64,
    pidfd: std::os::fd::OwnedFd,
    token: usize,
    since: Instant,
}

struct Daemon<'a> {
    config: &'a Config,
    secret: Secret,
    poll: Poll,
    clients: HashMap<usize, Client>,
    next_token: usize,
    link: Link,
    admin_gid: Option<u32>,
    placeholders: Placeholders,
    /// The distributed keys this host owns, claimed again at each join.
    owned: OwnedKeys,
    /// This host's IPC namespace incarnation (see `dipc_common::incarnation`).
    incarnation: u64,
    /// The running shm managers, by segment id.
    managers: HashMap<i32, Pid>,
    /// Employers opening sessions, and the uid each works for.
    employers: HashMap<Pid, u32>,
    pids: Pids,
    /// Keys this host was granted to create, with the local process the
    /// grant went to: only it may commit or abort the key, and if it dies
    /// first (its pidfd, in the poll, turns readable), dipcd aborts for it.
    grants: HashMap<(IpcKind, i32), Grant>,
    /// The key whose grant holder's pidfd is under each token.
    grant_tokens: HashMap<usize, (IpcKind, i32)>,
    /// The front_end's pid: its children are this host's workers.
    front_end: i32,
    /// Whether the host has joined the cluster since dipcd started.
    joined_once: bool,
    /// This host's load, reported with each heartbeat.
    meter: load::Meter,
    /// What this host counts (see `dipc_common::metrics`).
    metrics: Metrics,
    started: Instant,
    /// The Prometheus listener, if dipc.conf asks for one.
    exporter: Option<exporter::Exporter>,
}

impl Daemon<'_> {
    fn serve(
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

    fn request(&mut self, t: usize, c: &mut Client, id: u64, msg: Message) {
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
                c.framed.queue(id, &reply);
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

    /// Whether the calling process is the one granted the creation of
    /// `key`, on the connection it was granted on (the grant is then used
    /// up); otherwise answers `EPERM`. Any local user can reach this
    /// socket: without the check, one could commit another's key to a
    /// structure of its choosing.
    fn take_grant(&mut self, t: usize, c: &mut Client, id: u64, kind: IpcKind, key: i32) -> bool {
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
    fn abort_creation(&mut self, (kind, key): (IpcKind, i32)) {
        let nobody = Relayed {
            client: NO_CLIENT,
            id: 0,
            key: None,
            then: Then::Nothing,
        };
        self.link.relay(nobody, &Message::KeyAbort { kind, key });
    }

    /// Records that `pid`, on client connection `client`, may create `key`,
    /// and watches it through a pidfd; without a live process to create
    /// it, the creation is given up at once.
    fn grant(&mut self, key: (IpcKind, i32), client: usize, pid: Option<i32>) {
        self.end_grant(key);
        let full = self.grants.len() >= MAX_GRANTS;
        let watched = pid.ok_or(libc::ESRCH).and_then(|pid| {
            if full {
                return Err(libc::EMFILE);
            }
            let (pidfd, starttime) = procs::open_checked(pid, None)?;
            let token = self.next_token;
            self.poll
                .registry()
                .register(
                    &mut SourceFd(&pidfd.as_raw_fd()),
                    Token(token),
                    Interest::READABLE,
                )
                .map_err(|e| e.raw_os_error().unwrap_or(libc::ENOMEM))?;
            self.next_token += 1;
            Ok(Grant {
                pid,
                client,
                starttime,
                pidfd,
                token,
                since: Instant::now(),
            })
        });
        match watched {
            Ok(g) => {
                self.grant_tokens.insert(g.token, key);
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

    fn end_grant(&mut self, key: (IpcKind, i32)) -> Option<Grant> {
        let g = self.grants.remove(&key)?;
        self.grant_tokens.remove(&g.token);
        let _ = self
            .poll
            .registry()
            .deregister(&mut SourceFd(&g.pidfd.as_raw_fd()));
        Some(g)
    }

    /// Gives up the creations not committed within `request_ms`, as the
    /// referee does: a creator that neither commits nor aborts, nor exits,
    /// frees the key at the deadline (and a late commit is refused).
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

    fn expire_grants(&mut self, now: Instant) {
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
    fn grant_holder_exited(&mut self, token: usize) {
        let Some(&key) = self.grant_tokens.get(&token) else {
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
    fn client_gone(&mut self, t: usize) {
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

    fn relay(&mut self, c: &mut Client, to: Relayed, msg: &Message) -> bool {
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
    fn open_manager(&mut self, sid: i32, c: &Client) -> Message {
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
        if c.cred.uid != 0 {
            // SAFETY: the client's socket stays open for this call.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(c.framed.stream.as_raw_fd()) };
            let groups = match sys::peer_groups(&fd) {
                Ok(g) => g,
                Err(e) => {
                    return Message::error(
                        e.raw_os_error().unwrap_or(libc::EIO),
                        format!("the client's groups (SO_PEERGROUPS): {e}"),
                    )
                }
            };
            if !sysv::permits(&perm, (c.cred.uid, c.cred.gid, &groups), 4) {
                return Message::error(
                    libc::EACCES,
                    format!("uid {} may not attach segment {sid}", c.cred.uid),
                );
            }
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

    fn manager_exited(&mut self, pid: Pid) {
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

    /// Finishes a reply from the referee: a key owned elsewhere gets its
    /// local placeholder id.
    fn relayed_reply(&mut self, to: Relayed, msg: Message) {
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
                    self.pids.end(self.poll.registry(), pid, true);
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
                if matches!(msg, Message::Done { .. }) {
                    self.owned.add(kind, key, Owned { id, creator_uid });
                }
                msg
            }
            Then::Claim { kind, key, id } => {
                if let Message::Error { message, .. } = &msg {
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

    /// The local placeholder for `key`, owned by `owner` as `id`, for a
    /// client of `uid` that the owner's worker vouched may use it.
    fn placeholder(
        &mut self,
        uid: u32,
        (kind, key): (IpcKind, i32),
        (owner, id, origin): (SocketAddr, i32, Origin),
        tag: &[u8; 32],
    ) -> Message {
        let v = Vouch {
            kind,
            key,
            id,
            incarnation: origin.incarnation,
            owner,
            uid,
        };
        if origin.key != key || owner == self.config.front_end_addr() {
            return Message::error(
                libc::EINVAL,
                format!(
                    "a placeholder is for a key owned by another host (asked for {} key {key:#x} of {owner})",
                    kind.name()
                ),
            );
        }
        if !self.secret.vouch_key().verify(&v, tag) {
            warn!(
                "refused a placeholder for {} key {key:#x} to uid {uid}: not vouched for by {owner}",
                kind.name()
            );
            return Message::error(
                libc::EPERM,
                format!(
                    "{} key {key:#x}: no proof from its owner {owner} that uid {uid} may use id {id}",
                    kind.name()
                ),
            );
        }
        let limit = self.config.limits.placeholders_per_uid;
        match self
            .placeholders
            .ensure(kind, key, (owner, id, origin.incarnation), (uid, limit))
        {
            Ok(local_id) => Message::KeyOwner {
                owner,
                id,
                local_id,
                origin,
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                warn!(
                    "refused a placeholder for {} key {key:#x}: {e}",
                    kind.name()
                );
                Message::error(libc::EAGAIN, e.to_string())
            }
            Err(e) => Message::error(
                e.raw_os_error().unwrap_or(libc::ENOSPC),
                format!("cannot create a local placeholder: {e}"),
            ),
        }
    }

    /// The referee's host table, asked for a client's `Connect` to
    /// `target`: the client goes to an employer if `target` is an up host,
    /// else it is refused.
    fn connect_checked(&mut self, client: usize, id: u64, target: SocketAddr, msg: Message) {
        let hosts = match msg {
            Message::Hosts { hosts } => hosts,
            // E.g. the link was lost meanwhile; the client learns why.
            msg @ Message::Error { .. } => return self.reply(client, id, &msg),
            other => {
                let msg = Message::error(
                    libc::EPROTO,
                    format!(
                        "the referee answered a host list with {}",
                        other.kind().name()
                    ),
                );
                return self.reply(client, id, &msg);
            }
        };
        let Some(cred) = self.clients.get(&client).map(|c| c.cred) else {
            debug!("a local client went away while its Connect to {target} was checked");
            return;
        };
        let limit = self.config.limits.employers_per_uid;
        let busy = self.employers.values().filter(|u| **u == cred.uid).count();
        match up_member(&hosts, target) {
            Some(_) if cred.uid != 0 && busy >= limit => {
                warn!(
                    "refused a connection for local pid {} (uid {}): {busy} of its sessions are being opened (limits.employers_per_uid)",
                    cred.pid, cred.uid
                );
                let msg = Message::error(
                    libc::EAGAIN,
                    format!(
                        "uid {} has {busy} sessions being opened (limits.employers_per_uid in dipc.conf)",
                        cred.uid
                    ),
                );
                self.reply(client, id, &msg);
            }
            Some(addr) => {
                if let Some(mut c) = self.clients.remove(&client) {
                    self.client_gone(client);
                    self.hand_off(&mut c, id, Message::Connect { target: addr });
                }
            }
            None => {
                warn!(
                    "local pid {} (uid {}) asked for a connection to {target}, which is not \
                     an up host of the cluster; refused",
                    cred.pid, cred.uid
                );
                let msg = Message::error(
                    libc::EHOSTUNREACH,
                    format!("{target} is not an up host of the cluster (referee's table)"),
                );
                self.reply(client, id, &msg);
            }
        }
    }

    /// Forks an employer that opens the connection a `Connect` asks for and
    /// passes it to the client. Clients send one request at a time, so
    /// nothing else is buffered for it here.
    fn hand_off(&mut self, c: &mut Client, id: u64, msg: Message) {
        let _ = self.poll.registry().deregister(&mut c.framed.stream);
        let fd = match &c.framed.stream {
            Stream::Unix(s) => nix::unistd::dup(s.as_raw_fd()),
            Stream::Tcp(s) => nix::unistd::dup(s.as_raw_fd()),
        };
        let fd = match fd {
            Ok(fd) => fd,
            Err(e) => {
                warn!("cannot hand a session to an employer: {e}");
                return;
            }
        };
        // SAFETY: fd is a fresh duplicate that this process owns.
        let session = unsafe { UnixStream::from_raw_fd(fd) };
        if let Err(e) = session.set_nonblocking(false) {
            warn!("cannot hand a session to an employer: {e}");
            return;
        }
        // The pid_d the worker will type this session's messages with: the
        // caller's, if it is registered (and still the process that
        // registered, not a successor with a recycled pid).
        let pid_d = match self.pids.get(c.cred.pid) {
            Some(r) if r.pid_d > 0 && !r.exited() => r.pid_d,
            _ => 0,
        };
        let (config, secret, cred) = (self.config, &self.secret, c.cred);
        let keep = [session.as_raw_fd()];
        match sys::fork_child("dipc-employer", Signal::SIGTERM, &keep, move || {
            dipc_employer::serve(session, cred, pid_d, (id, msg), config, secret)
        }) {
            Ok(pid) => {
                debug!("employer {pid} for local pid {}", c.cred.pid);
                self.metrics.sessions_opened += 1;
                self.employers.insert(pid, c.cred.uid);
            }
            Err(e) => warn!("cannot fork an employer: {e}"),
        }
    }

    fn count_errors(&mut self, c: &mut Client) {
        for e in c.errnos.drain(..) {
            self.metrics.request_error(e);
        }
    }

    /// The counters with the gauges read now.
    fn snapshot(&self) -> Metrics {
        let mut m = self.metrics.clone();
        m.clients = self.clients.len() as u64;
        m.managers_running = self.managers.len() as u64;
        m.registered = self.pids.confirmed().count() as u64;
        m.uptime_s = self.started.elapsed().as_secs();
        m
    }

    /// A worker's or a shm manager's counts: only this host's workers
    /// (the front_end's children) and managers (ours) may add theirs, and
    /// each only to what it counts.
    fn stats_report(&mut self, c: &Client, pairs: &[(String, u64)]) -> Message {
        let from = Metrics::from_pairs(pairs);
        let pid = c.cred.pid;
        if self.managers.values().any(|p| p.as_raw() == pid) {
            self.metrics.add_manager(&from);
        } else if pid > 0 && procs::parent(pid) == Ok(self.front_end) {
            self.metrics.add_worker(&from);
        } else {
            return Message::error(
                libc::EPERM,
                format!("pid {pid} is neither a worker nor a shm manager of this host"),
            );
        }
        Message::Done { value: 0 }
    }

    /// A Prometheus scrape's connection is readable or writable.
    fn scraper_ready(&mut self, t: usize) {
        let Some(mut ex) = self.exporter.take() else {
            return;
        };
        if let exporter::Asked::Metrics = ex.ready(self.poll.registry(), t) {
            ex.answer(self.poll.registry(), t, &self.snapshot().prometheus());
        }
        self.exporter = Some(ex);
    }

    fn reply(&mut self, client: usize, id: u64, msg: &Message) {
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
}

impl Daemon<'_> {
    /// `regist` from a local process: watch it through a pidfd, check its
    /// mailbox, and ask the referee for a pid_d. A process registers once:
    /// asking again gives the same pid_d (and mailbox).
    fn register(
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
        let token = self.next_token;
        self.next_token += 1;
        let serial = match self
            .pids
            .add(self.poll.registry(), token, &cred, proc, mailbox)
        {
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
            None => Message::PidRegister {
                pid_d: 0,
                pid: cred.pid,
                uid: cred.uid,
                starttime,
                mailbox,
            },
            Some((pid_d, token)) => Message::MoveIn {
                pid_d,
                pid: cred.pid,
                uid: cred.uid,
                starttime,
                mailbox,
                token,
            },
        };
        if !self.relay(c, to, &msg) {
            // Not joined: the error is queued to the client already.
            self.pids.end(self.poll.registry(), cred.pid, false);
        }
    }

    /// The referee's answer to a new registration. Returns the reply for
    /// the client that asked.
    fn registered(&mut self, pid: i32, serial: u64, msg: Message) -> Message {
        let current = self.pids.get(pid).is_some_and(|r| r.serial == serial);
        let msg = match msg {
            // The referee's counter starts at 1 and never wraps.
            Message::Registered { pid_d, .. } if pid_d <= 0 => {
                Message::error(libc::EPROTO, format!("the referee answered pid_d {pid_d}"))
            }
            msg => msg,
        };
        match (&msg, current) {
            (Message::Registered { pid_d, .. }, true) => {
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
                reply
            }
            (Message::Registered { pid_d, .. }, false) => {
                // The process exited while the referee was answering.
                let un = Message::Unregister { pid_d: *pid_d, pid };
                self.link.relay(self.no_client(), &un);
                Message::error(libc::ESRCH, format!("pid {pid} exited"))
            }
            (_, true) => {
                if let Some(r) = self.pids.end(self.poll.registry(), pid, false) {
                    for (client, id) in r.waiters {
                        self.reply(client, id, &msg);
                    }
                }
                msg
            }
            (_, false) => msg,
        }
    }

    /// The referee's answer to a restored registration: one it refuses
    /// (its pid_d was given to another process) ends here too.
    fn restored(&mut self, pid: i32, serial: u64, msg: &Message) {
        if let Message::Error { message, .. } = msg {
            if self.pids.get(pid).is_some_and(|r| r.serial == serial) {
                warn!("pid {pid} lost its registration: {message}");
                self.pids.end(self.poll.registry(), pid, true);
            }
        }
    }

    /// Joined (again): tells the referee which keys this host owns, so that
    /// a restarted referee has them again before it answers for them. An
    /// id whose structure is gone from the kernel (a plain `IPC_RMID`) is
    /// not claimed, and the referee is told to free it, should it still
    /// have it.
    fn claim_keys(&mut self) {
        let owned = self.owned.list();
        if !owned.is_empty() {
            info!("claiming {} owned keys", owned.len());
        }
        for (kind, key, o) in owned {
            if sysv::key_of(kind, o.id) != Some(key) {
                info!(
                    "{} key {key:#x}: id {} is gone from this host; freeing it",
                    kind.name(),
                    o.id
                );
                self.owned.remove(kind, key, Some(o.id));
                let msg = Message::KeyRemove {
                    kind,
                    key,
                    id: o.id,
                    incarnation: self.incarnation,
                };
                self.link.relay(self.no_client(), &msg);
                continue;
            }
            let to = Relayed {
                then: Then::Claim {
                    kind,
                    key,
                    id: o.id,
                },
                ..self.no_client()
            };
            let msg = Message::KeyClaim {
                kind,
                key,
                id: o.id,
                creator_uid: o.creator_uid,
                incarnation: self.incarnation,
            };
            self.link.relay(to, &msg);
        }
    }

    /// Joined (again): asks the referee about every placeholder, so that
    /// one whose key was freed while this host was away (cut off, or the
    /// referee restarted) is removed.
    fn verify_placeholders(&mut self) {
        for (kind, key, what) in self.placeholders.list() {
            let to = Relayed {
                then: Then::Verify { kind, key, what },
                ..self.no_client()
            };
            let msg = Message::KeyGet {
                kind,
                key,
                flags: 0,
            };
            self.link.relay(to, &msg);
        }
    }

    /// Joined (again): the referee dropped this host's processes when the
    /// previous link closed; tell it about them again, with their pid_d.
    fn restore_pids(&mut self) {
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
                ..self.no_client()
            };
            let msg = Message::PidRegister {
                pid_d,
                pid,
                uid,
                starttime,
                mailbox,
            };
            self.link.relay(to, &msg);
            // After the record on the same link, so the referee has it.
            for name in names {
                let to = Relayed {
                    then: Then::Named {
                        op: self.pids.name_op(pid, &name, true),
                        restore: true,
                    },
                    ..self.no_client()
                };
                self.link
                    .relay(to, &Message::NameRegister { pid_d, pid, name });
            }
        }
    }

    /// A registered process exited (its pidfd is readable): unregister it
    /// and remove its mailbox, which fails a send blocked on it.
    fn process_exited(&mut self, pid: i32) {
        let Some(r) = self.pids.end(self.poll.registry(), pid, true) else {
            return;
        };
        debug!("pid {pid} (pid_d {}) exited", r.pid_d);
        if r.pid_d > 0 {
            let msg = Message::Unregister {
                pid_d: r.pid_d,
                pid,
            };
            self.link.relay(self.no_client(), &msg);
        }
        let gone = Message::error(libc::ESRCH, format!("pid {pid} exited"));
        for (client, id) in r.waiters {
            self.reply(client, id, &gone);
        }
    }

    fn no_client(&self) -> Relayed {
        Relayed {
            client: NO_CLIENT,
            id: 0,
            key: None,
            then: Then::Nothing,
        }
    }
}

/// The address, as the referee's table has it, of the up host that
/// `target` names. An IPv4-mapped IPv6 address names the IPv4 host: the
/// employer connects from this host's address, so it gets the table's form.
fn up_member(hosts: &[HostInfo], target: SocketAddr) -> Option<SocketAddr> {
    let want = (target.ip().to_canonical(), target.port());
    hosts
        .iter()
        .find(|h| h.up && (h.addr.ip().to_canonical(), h.addr.port()) == want)
        .map(|h| h.addr)
}

/// Reaps exited children into `exited`. Returns a description if a
/// supervised one died.
fn reap(children: &mut Vec<Child>, exited: &mut Vec<Pid>) -> Option<String> {
    let mut dead = None;
    loop {
        let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return dead,
            Ok(s) => s,
        };
        let Some(pid) = status.pid() else { continue };
        exited.push(pid);
        if let Some(i) = children.iter().position(|c| c.pid == pid) {
            let c = children.remove(i);
            dead = Some(format!("{} (pid {pid}) died: {status:?}", c.name));
        }
    }
}

/// Stops the supervised children: SIGTERM, then SIGKILL after two seconds.
fn shutdown(children: &[Child]) {
    for c in children {
        let _ = kill(c.pid, Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    for c in children {
        loop {
            match waitpid(c.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(WaitStatus::StillAlive) => {
                    warn!("{} (pid {}) did not stop; killing it", c.name, c.pid);
                    let _ = kill(c.pid, Signal::SIGKILL);
                    let _ = waitpid(c.pid, None);
                    break;
                }
                _ => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(addr: &str, up: bool) -> HostInfo {
        HostInfo {
            addr: addr.parse().unwrap(),
            up,
            last_heard_ms: 0,
            joined_ms: 0,
            version: 1,
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_up_members_with_their_port_are_members() {
        let hosts = [
            host("10.66.0.1:7100", true),
            host("10.66.0.2:7100", false),
            host("[fd00::3]:7100", true),
        ];
        assert_eq!(
            up_member(&hosts, addr("10.66.0.1:7100")),
            Some(addr("10.66.0.1:7100"))
        );
        assert_eq!(
            up_member(&hosts, addr("[fd00::3]:7100")),
            Some(addr("[fd00::3]:7100"))
        );
        // Down, another port of a member, unknown.
        assert_eq!(up_member(&hosts, addr("10.66.0.2:7100")), None);
        assert_eq!(up_member(&hosts, addr("10.66.0.1:7101")), None);
        assert_eq!(up_member(&hosts, addr("10.66.0.9:7100")), None);
        assert_eq!(up_member(&hosts, addr("127.0.0.1:7100")), None);
        assert_eq!(up_member(&[], addr("10.66.0.1:7100")), None);
    }

    #[test]
    fn an_ipv4_mapped_address_names_the_ipv4_host() {
        let hosts = [host("10.66.0.1:7100", true), host("10.66.0.2:7100", false)];
        // The employer is given the table's form.
        assert_eq!(
            up_member(&hosts, addr("[::ffff:10.66.0.1]:7100")),
            Some(addr("10.66.0.1:7100"))
        );
        assert_eq!(up_member(&hosts, addr("[::ffff:10.66.0.2]:7100")), None);
        assert_eq!(up_member(&hosts, addr("[::ffff:10.66.0.1]:7101")), None);
        // And the other way round, for a table that holds the mapped form.
        let mapped = [host("[::ffff:10.66.0.1]:7100", true)];
        assert_eq!(
            up_member(&mapped, addr("10.66.0.1:7100")),
            Some(addr("[::ffff:10.66.0.1]:7100"))
        );
        // An IPv4-compatible address (::a.b.c.d) is not the IPv4 host.
        assert_eq!(up_member(&hosts, addr("[::10.66.0.1]:7100")), None);
    }
}
