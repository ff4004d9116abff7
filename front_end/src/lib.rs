//! The front_end: the one process that owns this host's well-known TCP
//! port (`host.port` in dipc.conf).
//!
//! It accepts connections from other hosts, refuses at once those whose
//! source address `cluster.allowed_hosts` does not allow, and runs the
//! secure channel's handshake itself, in its event loop, within
//! `timeouts.request_ms`: a caller that does not know the cluster secret,
//! or says nothing, never costs a process (and at most 256 connections of
//! one address, 1024 in all, may be in their handshake at once). It then reads the session's
//! first frame (`Session`, which says whose the session is) and forks a
//! worker (see the `dipc-worker` crate) for it, unless the peer host or
//! the user is over its limits (`limits.workers_per_host`,
//! `limits.sessions_per_uid`), which get `EAGAIN` and nothing else. The
//! worker serves the session; the front_end only accepts, authenticates,
//! counts, forks and reaps, so a slow request never delays another.

use dipc_common::auth::{self, Secret, ServerHandshake};
use dipc_common::channel::{ChannelError, Framed};
use dipc_common::config::Config;
use dipc_common::net::tune_tcp;
use dipc_common::sys;
use dipc_common::wire::{Message, Role};
use log::{debug, error, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::time::Instant;

const SIGNALS: Token = Token(0);
const LISTENER: Token = Token(1);
/// Workers alive at once; sessions beyond are refused until some exit.
pub const MAX_WORKERS: usize = 1024;
/// Connections in their handshake at once, and from one address: a host
/// opens a handful at a time, so these bound only a flood. Which local
/// user of a host opened a connection is known only once its session
/// opens, so a flood from one host past its share delays that host's new
/// sessions (for at most `request_ms`), never another host's.
const MAX_PENDING: usize = 1024;
const MAX_PENDING_PER_HOST: usize = 256;
/// The largest frame before the session is open: a handshake message
/// (at most 65535 bytes) and `Session` (some 16,000 supplementary groups).
/// With the buffer grown only as bytes come, connections in their
/// handshake cost at most MAX_PENDING times this.
const PENDING_FRAME_MAX: u32 = 66 * 1024;

/// Runs the front_end until SIGTERM or SIGINT; returns the exit code.
/// `incarnation` is this host's (see `dipc_common::incarnation`), which
/// its workers check remote calls against.
pub fn run(config: &Config, secret: &Secret, incarnation: u64) -> i32 {
    match serve(config, secret, incarnation) {
        Ok(()) => 0,
        Err(e) => {
            error!("front_end: {e}");
            1
        }
    }
}

/// A connection whose session is not open yet.
struct Pending {
    framed: Framed<TcpStream>,
    ip: IpAddr,
    deadline: Instant,
    /// What the caller stated in the handshake, once it is done: the next
    /// frame is the session's first.
    hs: Option<ServerHandshake>,
}

/// A worker's peer host and the uid its session acts for.
struct Worker {
    ip: IpAddr,
    uid: u32,
}

struct FrontEnd<'a> {
    config: &'a Config,
    secret: &'a Secret,
    poll: Poll,
    pending: HashMap<usize, Pending>,
    next_token: usize,
    workers: HashMap<i32, Worker>,
    /// This host's incarnation, which workers check calls against.
    incarnation: u64,
}

fn serve(config: &Config, secret: &Secret, incarnation: u64) -> io::Result<()> {
    let mut signals = sys::signal_fd()?;
    let addr = config.front_end_addr();
    let mut listener = TcpListener::bind(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    let poll = Poll::new()?;
    poll.registry().register(
        &mut SourceFd(&signals.as_raw_fd()),
        SIGNALS,
        Interest::READABLE,
    )?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    info!("front_end listening on {addr}");
    let mut fe = FrontEnd {
        config,
        secret,
        poll,
        pending: HashMap::new(),
        next_token: 2,
        workers: HashMap::new(),
        incarnation,
    };
    let mut events = Events::with_capacity(64);
    loop {
        let timeout = fe
            .pending
            .values()
            .map(|p| p.deadline)
            .min()
            .map(|d| d.saturating_duration_since(Instant::now()));
        match fe.poll.poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            match ev.token() {
                SIGNALS => {
                    for sig in sys::read_signals(&mut signals) {
                        match sig {
                            Signal::SIGTERM | Signal::SIGINT => {
                                info!("front_end: {sig} received, exiting");
                                // Workers get SIGTERM from the kernel as we
                                // exit (their parent-death signal).
                                return Ok(());
                            }
                            Signal::SIGCHLD => fe.reap(),
                            _ => {}
                        }
                    }
                }
                LISTENER => fe.accept(&mut listener),
                Token(t) => fe.advance(t),
            }
        }
        fe.expire();
    }
}

impl FrontEnd<'_> {
    fn accept(&mut self, listener: &mut TcpListener) {
        loop {
            let (mut stream, from) = match listener.accept() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn!("front_end: accept: {e}");
                    return;
                }
            };
            let ip = from.ip().to_canonical();
            if !self.config.is_allowed(ip) {
                warn!("refused connection from {ip}: address not in allowed_hosts");
                continue;
            }
            let from_ip = self.pending.values().filter(|p| p.ip == ip).count();
            if self.pending.len() >= MAX_PENDING || from_ip >= MAX_PENDING_PER_HOST {
                warn!(
                    "refused connection from {ip}: {from_ip} of its connections ({} in all) are still in their handshake",
                    self.pending.len()
                );
                continue;
            }
            if let Err(e) = tune_tcp(&stream, self.config.timeouts.heartbeat_timeout) {
                debug!("front_end: socket options for {ip}: {e}");
            }
            let t = self.next_token;
            self.next_token += 1;
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                Token(t),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                warn!("front_end: cannot register a connection from {ip}: {e}");
                continue;
            }
            self.pending.insert(
                t,
                Pending {
                    framed: Framed::new(stream, PENDING_FRAME_MAX),
                    ip,
                    deadline: Instant::now() + self.config.timeouts.request,
                    hs: None,
                },
            );
            // Bytes may have come with the connection.
            self.advance(t);
        }
    }

    /// Reads what a pending connection sent: the handshake, then the
    /// session's first frame, which hands the connection to a worker.
    fn advance(&mut self, t: usize) {
        let Some(mut p) = self.pending.remove(&t) else {
            return;
        };
        loop {
            match p.framed.read_frame() {
                Ok(Some((id, msg))) if p.hs.is_none() => {
                    match auth::accept(self.secret, &msg, Role::Employer) {
                        Ok((hs, secure, reply)) => {
                            debug!(
                                "front_end: {} authenticated as {:?} of {}",
                                p.ip, hs.role, hs.host
                            );
                            // The answer goes out in plain, everything
                            // after it sealed.
                            p.framed.queue(id, &reply);
                            p.framed.secure(secure);
                            p.hs = Some(hs);
                        }
                        Err(e) => {
                            warn!("refused connection from {}: {e}", p.ip);
                            p.framed.queue(
                                0,
                                &Message::Refused {
                                    reason: e.to_string(),
                                },
                            );
                            return self.close(p);
                        }
                    }
                }
                Ok(Some(first)) => return self.open_session(p, first),
                Ok(None) => break,
                Err(ChannelError::Closed) => {
                    debug!("front_end: {} closed before its session opened", p.ip);
                    return self.close(p);
                }
                Err(e) => {
                    warn!("refused connection from {}: {e}", p.ip);
                    return self.close(p);
                }
            }
        }
        if let Err(e) = p.framed.flush() {
            debug!("front_end: {}: {e}", p.ip);
            return self.close(p);
        }
        self.pending.insert(t, p);
    }

    /// The session's first frame is in: a worker takes the connection, or
    /// the caller learns which limit it is over.
    fn open_session(&mut self, mut p: Pending, (id, msg): (u64, Message)) {
        let Message::Session { uid, pid, .. } = msg else {
            warn!(
                "refused connection from {}: {} before Session",
                p.ip,
                msg.kind().name()
            );
            p.framed.queue(
                id,
                &Message::error(libc::EPROTO, "a session begins with Session"),
            );
            return self.close(p);
        };
        let limits = &self.config.limits;
        let of_host = self.workers.values().filter(|w| w.ip == p.ip).count();
        let of_uid = self.workers.values().filter(|w| w.uid == uid).count();
        let over = if self.workers.len() >= MAX_WORKERS {
            Some(format!("{MAX_WORKERS} workers busy on this host"))
        } else if of_host >= limits.workers_per_host {
            Some(format!(
                "{} holds {of_host} sessions here (limits.workers_per_host in dipc.conf)",
                p.ip
            ))
        } else if uid != 0 && of_uid >= limits.sessions_per_uid {
            Some(format!(
                "uid {uid} holds {of_uid} sessions here (limits.sessions_per_uid in dipc.conf)"
            ))
        } else {
            None
        };
        if let Some(why) = over {
            warn!(
                "refused a session for pid {pid} uid {uid} on {}: {why}",
                p.ip
            );
            p.framed.queue(id, &Message::error(libc::EAGAIN, why));
            return self.close(p);
        }
        let ip = p.ip;
        let Some(hs) = p.hs.take() else {
            return self.close(p);
        };
        if let Err(e) = p.framed.flush() {
            debug!("front_end: {ip}: {e}");
            return self.close(p);
        }
        let _ = self.poll.registry().deregister(&mut p.framed.stream);
        let parts = p.framed.into_parts();
        // The worker blocks; hand it a blocking socket.
        let stream = std::net::TcpStream::from(parts.stream);
        if let Err(e) = stream.set_nonblocking(false) {
            warn!("front_end: {e}");
            return;
        }
        let handed = dipc_worker::Handed {
            hs,
            codec: parts.codec,
            unread: parts.unread,
            unwritten: parts.unwritten,
            first: (id, msg),
        };
        let (config, secret, incarnation) = (self.config, self.secret, self.incarnation);
        // The worker keeps this socket only (see sys::fork_child); the
        // parent's copy is closed when the unused closure is dropped.
        let keep = [stream.as_raw_fd()];
        match sys::fork_child("dipc-worker", Signal::SIGTERM, &keep, move || {
            dipc_worker::serve(stream, ip, handed, config, secret, incarnation)
        }) {
            Ok(child) => {
                debug!("front_end: worker {child} for uid {uid} on {ip}");
                self.workers.insert(child.as_raw(), Worker { ip, uid });
            }
            Err(e) => warn!("front_end: cannot fork a worker for {ip}: {e}"),
        }
    }

    /// Says what was queued (best effort) and closes.
    fn close(&mut self, mut p: Pending) {
        let _ = p.framed.flush();
        let _ = self.poll.registry().deregister(&mut p.framed.stream);
    }

    /// Drops connections whose handshake or session did not come in time.
    fn expire(&mut self) {
        let now = Instant::now();
        let late: Vec<usize> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in late {
            if let Some(p) = self.pending.remove(&t) {
                warn!(
                    "refused connection from {}: no {} within {} ms",
                    p.ip,
                    if p.hs.is_some() {
                        "Session"
                    } else {
                        "handshake"
                    },
                    self.config.timeouts.request.as_millis()
                );
                self.close(p);
            }
        }
    }

    fn reap(&mut self) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => {
                    if let Some(pid) = status.pid() {
                        self.workers.remove(&pid.as_raw());
                    }
                }
            }
        }
    }
}
