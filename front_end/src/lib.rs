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
use dipc_common::channel::FramedParts;
use dipc_common::config::Config;
use dipc_common::net::Stream;
use dipc_common::reactor::{self, ConnId, Event, Gone, Handler, Listener, Out, Peer, Reactor};
use dipc_common::sys;
use dipc_common::wire::{Message, Role};
use log::{debug, error, info, warn};
use mio::net::TcpListener;
use nix::sys::signal::Signal;
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::time::Instant;

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
        Ok(code) => code,
        Err(e) => {
            error!("front_end: {e}");
            1
        }
    }
}

fn serve(config: &Config, secret: &Secret, incarnation: u64) -> io::Result<i32> {
    let mut r = Reactor::new(MAX_PENDING)?;
    r.watch_signals()?;
    let addr = config.front_end_addr();
    let listener = TcpListener::bind(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    let opts = reactor::Options {
        dead_after: Some(config.timeouts.heartbeat_timeout),
        ..reactor::Options::new(PENDING_FRAME_MAX)
    };
    r.listen(Listener::Tcp(listener), opts)?;
    info!("front_end listening on {addr}");
    r.run(&mut FrontEnd::new(config, secret, incarnation))
}

/// A connection whose session is not open yet.
struct Pending {
    ip: IpAddr,
    deadline: Instant,
    /// What the caller stated in the handshake, once it is done: the next
    /// frame is the session's first.
    hs: Option<ServerHandshake>,
}

/// A connection on its way to a worker (see [`Handler::taken`]).
struct Handing {
    ip: IpAddr,
    uid: u32,
    hs: ServerHandshake,
    first: (u64, Message),
}

/// A worker's peer host and the uid its session acts for.
struct Worker {
    ip: IpAddr,
    uid: u32,
}

/// The front_end's logic: which connections it authenticates, which
/// sessions it hands to a worker and which it refuses.
pub struct FrontEnd<'a> {
    config: &'a Config,
    secret: &'a Secret,
    pending: HashMap<ConnId, Pending>,
    handing: HashMap<ConnId, Handing>,
    workers: HashMap<i32, Worker>,
    /// This host's incarnation, which workers check calls against.
    incarnation: u64,
}

impl Handler for FrontEnd<'_> {
    fn event(&mut self, now: Instant, ev: Event, out: &mut dyn Out) {
        match ev {
            Event::Accepted { conn, peer, .. } => self.accepted(now, conn, peer, out),
            Event::Frame { conn, id, msg, .. } => self.frame(conn, id, msg, out),
            Event::Closed { conn, why } => {
                self.handing.remove(&conn);
                let Some(p) = self.pending.remove(&conn) else {
                    return;
                };
                match why {
                    Gone::Peer => {
                        debug!("front_end: {} closed before its session opened", p.ip)
                    }
                    Gone::Local => {}
                    Gone::Io(e) | Gone::Protocol(e) => {
                        warn!("refused connection from {}: {e}", p.ip)
                    }
                    Gone::Stalled => warn!("refused connection from {}: stalled", p.ip),
                }
            }
            Event::Signal(sig @ (Signal::SIGTERM | Signal::SIGINT)) => {
                info!("front_end: {sig} received, exiting");
                // Workers get SIGTERM from the kernel as we exit (their
                // parent-death signal).
                out.stop(0);
            }
            Event::Signal(_) => {}
            // It opens and watches nothing of its own.
            Event::Connected { .. } | Event::Ready { .. } => {}
            Event::Child { pid, .. } => {
                self.workers.remove(&pid);
            }
            Event::Tick => self.expire(now, out),
        }
    }

    fn wake_at(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }

    fn taken(&mut self, conn: ConnId, parts: FramedParts<Stream>, _: &mut dyn Out) {
        let Some(h) = self.handing.remove(&conn) else {
            return;
        };
        let Stream::Tcp(stream) = parts.stream else {
            return;
        };
        // The worker blocks; hand it a blocking socket.
        let stream = std::net::TcpStream::from(stream);
        if let Err(e) = stream.set_nonblocking(false) {
            warn!("front_end: {e}");
            return;
        }
        let Handing { ip, uid, hs, first } = h;
        let handed = dipc_worker::Handed {
            hs,
            codec: parts.codec,
            unread: parts.unread,
            unwritten: parts.unwritten,
            first,
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
                self.worker_started(child.as_raw(), ip, uid);
            }
            Err(e) => warn!("front_end: cannot fork a worker for {ip}: {e}"),
        }
    }
}

impl<'a> FrontEnd<'a> {
    pub fn new(config: &'a Config, secret: &'a Secret, incarnation: u64) -> FrontEnd<'a> {
        FrontEnd {
            config,
            secret,
            pending: HashMap::new(),
            handing: HashMap::new(),
            workers: HashMap::new(),
            incarnation,
        }
    }

    /// Counts worker `pid`, serving `uid` of `ip`, until it exits.
    fn worker_started(&mut self, pid: i32, ip: IpAddr, uid: u32) {
        self.workers.insert(pid, Worker { ip, uid });
    }

    fn accepted(&mut self, now: Instant, conn: ConnId, peer: Peer, out: &mut dyn Out) {
        let Peer::Tcp(from) = peer else {
            return out.close(conn);
        };
        let ip = from.ip();
        if !self.config.is_allowed(ip) {
            warn!("refused connection from {ip}: address not in allowed_hosts");
            return out.close(conn);
        }
        let from_ip = self.pending.values().filter(|p| p.ip == ip).count();
        if self.pending.len() >= MAX_PENDING || from_ip >= MAX_PENDING_PER_HOST {
            warn!(
                "refused connection from {ip}: {from_ip} of its connections ({} in all) are still in their handshake",
                self.pending.len()
            );
            return out.close(conn);
        }
        self.pending.insert(
            conn,
            Pending {
                ip,
                deadline: now + self.config.timeouts.request,
                hs: None,
            },
        );
    }

    /// A frame of a pending connection: the handshake, then the session's
    /// first frame, which hands the connection to a worker.
    fn frame(&mut self, conn: ConnId, id: u64, msg: Message, out: &mut dyn Out) {
        let Some(p) = self.pending.get_mut(&conn) else {
            return;
        };
        if p.hs.is_some() {
            return self.open_session(conn, (id, msg), out);
        }
        match auth::accept(self.secret, &msg, Role::Employer) {
            Ok((hs, secure, reply)) => {
                debug!(
                    "front_end: {} authenticated as {:?} of {}",
                    p.ip, hs.role, hs.host
                );
                // The answer goes out in plain, everything after it
                // sealed.
                out.send(conn, id, &reply);
                out.secure(conn, secure);
                p.hs = Some(hs);
            }
            Err(e) => {
                warn!("refused connection from {}: {e}", p.ip);
                out.send(
                    conn,
                    0,
                    &Message::Refused {
                        reason: e.to_string(),
                    },
                );
                self.pending.remove(&conn);
                out.close(conn);
            }
        }
    }

    /// The session's first frame is in: a worker takes the connection, or
    /// the caller learns which limit it is over.
    fn open_session(&mut self, conn: ConnId, (id, msg): (u64, Message), out: &mut dyn Out) {
        let Some(p) = self.pending.remove(&conn) else {
            return;
        };
        let Message::Session { uid, pid, .. } = msg else {
            warn!(
                "refused connection from {}: {} before Session",
                p.ip,
                msg.kind().name()
            );
            out.send(
                conn,
                id,
                &Message::error(libc::EPROTO, "a session begins with Session"),
            );
            return out.close(conn);
        };
        if let Some(why) = self.over_limits(p.ip, uid) {
            warn!(
                "refused a session for pid {pid} uid {uid} on {}: {why}",
                p.ip
            );
            out.send(conn, id, &Message::error(libc::EAGAIN, why));
            return out.close(conn);
        }
        let Some(hs) = p.hs else {
            return out.close(conn);
        };
        self.handing.insert(
            conn,
            Handing {
                ip: p.ip,
                uid,
                hs,
                first: (id, msg),
            },
        );
        out.take(conn);
    }

    /// Which limit a new session of `uid` from `ip` is over, if any.
    fn over_limits(&self, ip: IpAddr, uid: u32) -> Option<String> {
        let limits = &self.config.limits;
        let of_host = self.workers.values().filter(|w| w.ip == ip).count();
        let of_uid = self.workers.values().filter(|w| w.uid == uid).count();
        if self.workers.len() >= MAX_WORKERS {
            Some(format!("{MAX_WORKERS} workers busy on this host"))
        } else if of_host >= limits.workers_per_host {
            Some(format!(
                "{ip} holds {of_host} sessions here (limits.workers_per_host in dipc.conf)"
            ))
        } else if uid != 0 && of_uid >= limits.sessions_per_uid {
            Some(format!(
                "uid {uid} holds {of_uid} sessions here (limits.sessions_per_uid in dipc.conf)"
            ))
        } else {
            None
        }
    }

    /// Drops connections whose handshake or session did not come in time.
    fn expire(&mut self, now: Instant, out: &mut dyn Out) {
        let late: Vec<ConnId> = self
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
                out.close(t);
            }
        }
    }
}

#[cfg(test)]
mod tests;
