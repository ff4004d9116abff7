//! The employer: forked by the back_end for a local application session
//! that needs another host.
//!
//! It takes over the application's Unix connection, opens (once, then
//! keeps) an authenticated TCP connection to each host the session needs,
//! forwards each request there and hands the reply back. Every wait on a
//! remote host is bounded by `timeouts.request_ms`; the application gets
//! `ETIMEDOUT` (or the network error that ended the wait) rather than a
//! hang.

use dipc_common::auth::{client_handshake, Secret};
use dipc_common::channel::{Channel, ChannelError};
use dipc_common::config::Config;
use dipc_common::net::{connect_from, tune_tcp};
use dipc_common::sys::PeerCred;
use dipc_common::wire::{Message, Role};
use log::{debug, info};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// How often a cancel is repeated until the worker answers: a cancel that
/// reaches the worker just before it blocks interrupts nothing, the next
/// one does.
const CANCEL_REPEAT: Duration = Duration::from_millis(100);

/// The application's session ended (it closed its connection).
struct SessionEnd;

/// One session's connections to other hosts.
pub struct Employer<'a> {
    config: &'a Config,
    secret: &'a Secret,
    /// What the worker on each host needs to act as the application.
    session: Message,
    peers: HashMap<SocketAddr, Channel<TcpStream>>,
    next_id: u64,
}

/// The supplementary groups of a process, from /proc.
fn groups_of(pid: i32) -> Vec<u32> {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

impl<'a> Employer<'a> {
    pub fn new(config: &'a Config, secret: &'a Secret, cred: PeerCred) -> Self {
        Employer {
            config,
            secret,
            session: Message::Session {
                pid: cred.pid,
                uid: cred.uid,
                gid: cred.gid,
                groups: groups_of(cred.pid),
            },
            peers: HashMap::new(),
            next_id: 1,
        }
    }

    fn connect(&mut self, host: SocketAddr) -> Result<Channel<TcpStream>, Message> {
        let t = &self.config.timeouts;
        let fail = |what: &str, e: &dyn std::fmt::Display, errno: i32| {
            Message::error(errno, format!("{what} {host}: {e}"))
        };
        let s = connect_from(self.config.host.address, host, Some(t.connect)).map_err(|e| {
            fail(
                "cannot connect to",
                &e,
                e.raw_os_error().unwrap_or(libc::ETIMEDOUT),
            )
        })?;
        tune_tcp(&s, t.heartbeat_timeout).map_err(|e| fail("socket options for", &e, libc::EIO))?;
        s.set_read_timeout(Some(t.request))
            .map_err(|e| fail("socket options for", &e, libc::EIO))?;
        let mut ch = Channel::new(s, self.config.max_frame);
        client_handshake(
            &mut ch,
            self.secret,
            Role::Employer,
            self.config.front_end_addr(),
        )
        .map_err(|e| fail("authentication with", &e, libc::ECONNREFUSED))?;
        let id = self.next_id;
        self.next_id += 1;
        match ch.call(id, &self.session) {
            Ok(Message::Done { .. }) => Ok(ch),
            Ok(Message::Error { errno, message }) => Err(Message::Error { errno, message }),
            Ok(other) => Err(fail("session with", &other.kind().name(), libc::EPROTO)),
            Err(e) => Err(fail("session with", &e, e.errno())),
        }
    }

    fn peer(&mut self, host: SocketAddr) -> Result<&mut Channel<TcpStream>, Message> {
        if !self.peers.contains_key(&host) {
            let ch = self.connect(host)?;
            self.peers.insert(host, ch);
        }
        self.peers
            .get_mut(&host)
            .ok_or_else(|| Message::error(libc::EIO, "connection table lost an entry"))
    }

    /// Forwards `req` to `host` and waits for the reply, while watching the
    /// application: a `Cancel` from it is passed on (repeatedly, until the
    /// worker answers), and its hanging up ends the session. A call that
    /// cannot block waits at most the request time-out; one that can waits
    /// as long as the kernel on the owner blocks it, while TCP keep-alives
    /// watch that the owner host is still there.
    fn forward(
        &mut self,
        app: &mut Channel<UnixStream>,
        host: SocketAddr,
        req: &Message,
        may_block: bool,
    ) -> Result<Message, SessionEnd> {
        let request_timeout = self.config.timeouts.request;
        let id = self.next_id;
        self.next_id += 1;
        let ch = match self.peer(host) {
            Ok(ch) => ch,
            Err(reply) => return Ok(reply),
        };
        if let Err(e) = ch.send(id, req) {
            self.peers.remove(&host);
            return Ok(lost(host, &e));
        }
        let started = Instant::now();
        let mut cancelled: Option<Instant> = None;
        loop {
            let wait = if cancelled.is_some() {
                CANCEL_REPEAT
            } else if may_block {
                Duration::from_secs(3600)
            } else {
                request_timeout.saturating_sub(started.elapsed())
            };
            let Some(ch) = self.peers.get_mut(&host) else {
                return Ok(Message::error(libc::EIO, "connection table lost an entry"));
            };
            let (worker_ready, app_ready) = {
                let mut fds = [
                    PollFd::new(ch.get_ref().as_fd(), PollFlags::POLLIN),
                    PollFd::new(app.get_ref().as_fd(), PollFlags::POLLIN),
                ];
                let ms = PollTimeout::try_from(wait.as_millis().min(i32::MAX as u128) as i32)
                    .unwrap_or(PollTimeout::MAX);
                match poll(&mut fds, ms) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Ok(Message::error(e as i32, format!("poll: {e}"))),
                }
                let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                (ready(&fds[0]), ready(&fds[1]))
            };
            if worker_ready {
                match ch.recv() {
                    Ok((rid, reply)) if rid == id => return Ok(reply),
                    Ok((rid, _)) => debug!("employer: stale reply {rid} from {host}"),
                    Err(e) => {
                        self.peers.remove(&host);
                        return Ok(lost(host, &e));
                    }
                }
                continue;
            }
            if app_ready {
                match app.recv() {
                    Ok((_, Message::Cancel)) => cancelled = Some(Instant::now() - CANCEL_REPEAT),
                    Ok((_, other)) => {
                        debug!(
                            "employer: {} during a call; ending the session",
                            other.kind().name()
                        );
                        return Err(SessionEnd);
                    }
                    Err(_) => return Err(SessionEnd),
                }
            }
            if let Some(since) = cancelled {
                if since.elapsed() >= CANCEL_REPEAT {
                    if ch.send(id, &Message::Cancel).is_err() {
                        self.peers.remove(&host);
                        return Ok(Message::error(libc::EINTR, "interrupted"));
                    }
                    cancelled = Some(Instant::now());
                }
                continue;
            }
            if !may_block && started.elapsed() >= request_timeout {
                self.peers.remove(&host);
                return Ok(Message::error(
                    libc::ETIMEDOUT,
                    format!(
                        "no answer from {host} within {} ms",
                        request_timeout.as_millis()
                    ),
                ));
            }
        }
    }

    /// Sends `req` to `host` and waits (at most the request time-out) for
    /// the reply.
    pub fn call(&mut self, host: SocketAddr, req: &Message) -> Message {
        let id = self.next_id;
        self.next_id += 1;
        let ch = match self.peer(host) {
            Ok(ch) => ch,
            Err(reply) => return reply,
        };
        match ch.call(id, req) {
            Ok(reply) => reply,
            Err(e) => {
                self.peers.remove(&host);
                lost(host, &e)
            }
        }
    }

    fn handle(
        &mut self,
        app: &mut Channel<UnixStream>,
        req: Message,
    ) -> Result<Message, SessionEnd> {
        let nowait = |flags: i32| flags & libc::IPC_NOWAIT != 0;
        match &req {
            Message::Ping { target: Some(host) } => {
                Ok(self.call(*host, &Message::Ping { target: None }))
            }
            Message::MsgSnd { target, flags, .. } | Message::MsgRcv { target, flags, .. } => {
                self.forward(app, *target, &req, !nowait(*flags))
            }
            Message::MsgCtl { target, .. } | Message::SemCtl { target, .. } => {
                self.forward(app, *target, &req, false)
            }
            Message::SemOp { target, ops, .. } => {
                let may_block = ops.iter().any(|o| !nowait(o.flg as i32));
                self.forward(app, *target, &req, may_block)
            }
            other => Ok(Message::error(
                libc::EINVAL,
                format!("an employer does not take {} messages", other.kind().name()),
            )),
        }
    }
}

/// The reply for a call whose connection to `host` failed.
fn lost(host: SocketAddr, e: &ChannelError) -> Message {
    info!("employer: request to {host} failed: {e}");
    Message::error(e.errno(), format!("request to {host} failed: {e}"))
}

/// Serves an application session whose first request was `first`, until
/// the application closes its connection; returns the exit code.
pub fn serve(
    client: UnixStream,
    cred: PeerCred,
    first: (u64, Message),
    config: &Config,
    secret: &Secret,
) -> i32 {
    let mut app = Channel::new(client, config.max_frame);
    let mut employer = Employer::new(config, secret, cred);
    let mut next = Some(first);
    loop {
        let (id, req) = match next.take() {
            Some(r) => r,
            None => match app.recv() {
                Ok(r) => r,
                Err(ChannelError::Closed) => return 0,
                Err(e) => {
                    debug!("employer: application connection: {e}");
                    return 1;
                }
            },
        };
        if matches!(req, Message::Cancel) {
            // Crossed the reply to the call it meant to cancel.
            continue;
        }
        let reply = match employer.handle(&mut app, req) {
            Ok(r) => r,
            Err(SessionEnd) => return 0,
        };
        if let Err(e) = app.send(id, &reply) {
            debug!("employer: application went away: {e}");
            return 0;
        }
    }
}
