//! The one event loop of the daemons.
//!
//! Every dipc daemon does the same things around its own logic: it accepts
//! connections (TCP from other hosts, Unix from local processes), frames
//! what they send with [`Framed`] under the same bounds (the largest
//! frame, reading paused while a peer leaves our replies unread, a peer
//! dropped once too much waits for it or once it stalls mid-frame), caps
//! how many connections it holds, wakes up for its deadlines, takes its
//! signals from a signalfd and reaps its children. When each daemon wrote
//! that loop itself, each got its own limits (or none) and its own reading
//! rules; here it is written once.
//!
//! A daemon is a [`Handler`]: a state machine that the [`Reactor`] hands
//! [`Event`]s (a connection accepted, a frame, a connection gone, a signal,
//! a child that exited, a tick) with the time `now`, and that answers
//! through [`Out`] (send a frame, seal a connection, close it, take it out
//! of the loop, open one to another host, watch a descriptor of its own
//! for readiness, stop). Nothing in a handler touches a socket, so its logic
//! runs in a unit test with a [`Recorder`] for `Out` and a made-up clock:
//! events in, actions out (a [`Harness`] holds the three).
//!
//! The rules the reactor keeps for every connection:
//! - every connection gets exactly one [`Event::Closed`] as its last event,
//!   whoever ends it (unless the handler took it out with [`Out::take`]);
//!   while the handler handles it the connection is still there, so a last
//!   frame (the error that explains a protocol violation) still goes out;
//! - a connection the handler closes is read no more;
//! - at most [`FRAMES_PER_TURN`] frames are taken from one connection
//!   before the others get their turn, so a peer that writes faster than
//!   the daemon reads cannot hold the others up;
//! - whatever the handler queued is written as soon as it returns, or at
//!   the end of a connection's turn (one write for a run of replies).

mod dial;
mod handler;
mod harness;
mod table;
mod types;

pub use handler::{Action, Handler, Out, Recorder, Watch};
pub use harness::{sent_to, Harness};
pub use types::{Creds, Event, Gone, Listener, Options, Peer};

use crate::channel::{ChannelError, Codec, Framed, FramedParts};
use crate::net::{tune_tcp, Stream};
use crate::sys::{self, PeerCred};
use crate::wire::Message;
use log::{debug, warn};
use mio::net::{TcpListener, UnixListener};
use mio::unix::SourceFd;
pub use mio::Interest;
use mio::{Events, Poll, Token};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};
use table::{Closing, Conn, Table};

/// A connection, as the handler knows it. Stable for the connection's
/// life and never reused while the reactor runs.
pub type ConnId = usize;

/// A listener, in the order [`Reactor::listen`] added them (from 0).
pub type ListenerId = usize;

/// Frames taken from one connection before the others get their turn.
pub const FRAMES_PER_TURN: usize = 64;

/// Descriptors a peer may pass before the handler has taken them: a
/// bound on what a peer that sends only descriptors costs.
const MAX_PASSED_FDS: usize = 8;

const SIGNALS: Token = Token(0);
/// Tokens below this are listeners (`Token(1 + id)`).
const FIRST_CONN: usize = 64;

/// The event loop (see the module docs).
pub struct Reactor {
    poll: Poll,
    table: Table,
    /// By [`ListenerId`]; `None` for a class of outgoing connections
    /// (see [`Reactor::outgoing`]).
    listeners: Vec<Option<Listener>>,
    signals: Option<SignalFd>,
    max_conns: usize,
    /// Connections that used their turn with frames maybe left.
    again: Vec<ConnId>,
}

impl Reactor {
    /// A reactor that holds at most `max_conns` connections; those
    /// accepted beyond are closed at once.
    pub fn new(max_conns: usize) -> io::Result<Reactor> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        Ok(Reactor {
            poll,
            table: Table {
                registry,
                conns: HashMap::new(),
                opts: Vec::new(),
                touched: Vec::new(),
                doomed: Vec::new(),
                stop: None,
                next_conn: FIRST_CONN,
                watched: HashMap::new(),
                watch_tokens: HashMap::new(),
            },
            listeners: Vec::new(),
            signals: None,
            max_conns,
            again: Vec::new(),
        })
    }

    /// Takes the daemon signals (see [`sys::daemon_signals`]) through a
    /// signalfd: SIGCHLD reaps children ([`Event::Child`]), the others
    /// come as [`Event::Signal`].
    pub fn watch_signals(&mut self) -> io::Result<()> {
        let fd = sys::signal_fd()?;
        self.poll.registry().register(
            &mut SourceFd(&fd.as_raw_fd()),
            SIGNALS,
            Interest::READABLE,
        )?;
        self.signals = Some(fd);
        Ok(())
    }

    /// Accepts connections on `l`, framed and bounded by `opts`.
    pub fn listen(&mut self, mut l: Listener, opts: Options) -> io::Result<ListenerId> {
        let id = self.listeners.len();
        if 1 + id >= FIRST_CONN {
            return Err(io::Error::other("too many listeners"));
        }
        let token = Token(1 + id);
        match &mut l {
            Listener::Tcp(t) => self
                .poll
                .registry()
                .register(t, token, Interest::READABLE)?,
            Listener::Unix(u) => self
                .poll
                .registry()
                .register(u, token, Interest::READABLE)?,
        }
        self.listeners.push(Some(l));
        self.table.opts.push(opts);
        Ok(id)
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.table.conns.len()
    }

    /// Runs until the handler stops it; returns the handler's exit code.
    pub fn run<H: Handler>(&mut self, h: &mut H) -> io::Result<i32> {
        let mut events = Events::with_capacity(256);
        loop {
            if let Some(code) = self.table.stop {
                return Ok(code);
            }
            let timeout = match self.again.is_empty() {
                // Someone has frames waiting: only look for new events.
                false => Some(Duration::ZERO),
                // At least a millisecond: a handler whose deadline is
                // due and stays due does not spin the loop.
                true => self.next_wake(h).map(|w| {
                    w.saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(1))
                }),
            };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            // Those that had frames left go first, then the new events
            // (each connection at most once a turn).
            let mut turn = std::mem::take(&mut self.again);
            for ev in events.iter() {
                match ev.token() {
                    SIGNALS => self.signals(h),
                    Token(t) if t < FIRST_CONN => self.accept(h, t - 1),
                    Token(t) if self.table.watched.contains_key(&t) => {
                        if let Some(&key) = self.table.watched.get(&t) {
                            self.dispatch(h, Event::Ready { key });
                        }
                    }
                    Token(t) if !turn.contains(&t) => turn.push(t),
                    Token(_) => {}
                }
            }
            for t in turn {
                self.ready(h, t);
            }
            self.expire_stalled(h);
            self.dispatch(h, Event::Tick);
        }
    }

    /// The handler's wake-up, or the next stall deadline if sooner.
    fn next_wake<H: Handler>(&self, h: &H) -> Option<Instant> {
        if self.table.opts.iter().all(|o| o.stall.is_none()) {
            return h.wake_at();
        }
        let stall = self
            .table
            .conns
            .values()
            .filter_map(|c| Some(c.framed.partial_since()? + self.table.opts[c.listener].stall?))
            .min();
        match (h.wake_at(), stall) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn expire_stalled<H: Handler>(&mut self, h: &mut H) {
        if self.table.opts.iter().all(|o| o.stall.is_none()) {
            return;
        }
        let now = Instant::now();
        for (t, c) in &self.table.conns {
            let limit = self.table.opts[c.listener].stall;
            if let (Some(since), Some(limit)) = (c.framed.partial_since(), limit) {
                if now.duration_since(since) >= limit {
                    self.table.doomed.push((*t, Gone::Stalled));
                }
            }
        }
        self.settle(h);
    }

    fn signals<H: Handler>(&mut self, h: &mut H) {
        let Some(fd) = self.signals.as_mut() else {
            return;
        };
        for sig in sys::read_signals(fd) {
            if sig != Signal::SIGCHLD {
                self.dispatch(h, Event::Signal(sig));
                continue;
            }
            loop {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(status) => {
                        if let Some(pid) = status.pid() {
                            self.dispatch(
                                h,
                                Event::Child {
                                    pid: pid.as_raw(),
                                    status,
                                },
                            );
                        }
                    }
                }
            }
        }
    }

    fn accept<H: Handler>(&mut self, h: &mut H, listener: ListenerId) {
        loop {
            let got = match &self.listeners[listener] {
                None => return,
                Some(Listener::Tcp(l)) => l.accept().map(|(s, from)| {
                    let from = SocketAddr::new(from.ip().to_canonical(), from.port());
                    (Stream::Tcp(s), Peer::Tcp(from))
                }),
                Some(Listener::Unix(l)) => l.accept().map(|(s, _)| {
                    let creds = creds(s.as_fd()).map_err(|e| e.to_string());
                    (Stream::Unix(s), Peer::Unix(creds))
                }),
            };
            match got {
                Ok((stream, peer)) => {
                    if let Some(t) = self.admit(h, stream, listener, peer) {
                        // Bytes may have come with the connection.
                        self.ready(h, t);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("accept: {e}");
                    return;
                }
            }
        }
    }

    fn admit<H: Handler>(
        &mut self,
        h: &mut H,
        mut stream: Stream,
        listener: ListenerId,
        peer: Peer,
    ) -> Option<ConnId> {
        if self.table.conns.len() >= self.max_conns {
            warn!(
                "refused a connection from {}: {} connections open",
                describe(&peer),
                self.max_conns
            );
            return None;
        }
        if let (Stream::Tcp(s), Some(d)) = (&stream, self.table.opts[listener].dead_after) {
            if let Err(e) = tune_tcp(s, d) {
                debug!("socket options for {}: {e}", describe(&peer));
            }
        }
        let t = self.table.next_conn;
        self.table.next_conn += 1;
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(t),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("cannot register a connection from {}: {e}", describe(&peer));
            return None;
        }
        let framed = self.table.framed(stream, listener, Codec::Plain);
        self.table.conns.insert(
            t,
            Conn {
                framed,
                listener,
                closing: Closing::No,
                connecting: false,
            },
        );
        self.dispatch(
            h,
            Event::Accepted {
                conn: t,
                listener,
                peer,
            },
        );
        Some(t)
    }

    /// Reads what connection `t` sent, a turn's worth of frames, and
    /// writes what waits for it and what the handler queued meanwhile (in
    /// one go, so a run of requests costs one write).
    fn ready<H: Handler>(&mut self, h: &mut H, t: ConnId) {
        if self.table.conns.get(&t).is_some_and(|c| c.connecting) && !self.connected(h, t) {
            return self.settle(h);
        }
        let mut turn_used = true;
        for _ in 0..FRAMES_PER_TURN {
            let Some(c) = self.table.conns.get_mut(&t) else {
                return self.settle(h);
            };
            if c.closing != Closing::No
                || self.table.stop.is_some()
                || self.table.doomed.iter().any(|(d, _)| *d == t)
            {
                turn_used = false;
                break;
            }
            match c.framed.read_frame() {
                Ok(Some((id, msg))) => {
                    let fds = c
                        .framed
                        .stream
                        .fds
                        .as_mut()
                        .map(std::mem::take)
                        .unwrap_or_default();
                    let ev = Event::Frame {
                        conn: t,
                        id,
                        msg,
                        fds,
                    };
                    h.event(Instant::now(), ev, &mut self.table);
                }
                Ok(None) => {
                    turn_used = false;
                    break;
                }
                Err(e) => {
                    self.table.doomed.push((t, gone(e)));
                    turn_used = false;
                    break;
                }
            }
        }
        if turn_used
            && self
                .table
                .conns
                .get(&t)
                .is_some_and(|c| c.closing == Closing::No)
        {
            self.again.push(t);
        }
        self.table.touch(t);
        self.settle(h);
    }

    fn dispatch<H: Handler>(&mut self, h: &mut H, ev: Event) {
        h.event(Instant::now(), ev, &mut self.table);
        self.settle(h);
    }

    /// Writes what the handler queued, ends the connections it closed or
    /// that failed, hands over those it took; until nothing is left (a
    /// connection's end may queue frames for others).
    fn settle<H: Handler>(&mut self, h: &mut H) {
        loop {
            for t in std::mem::take(&mut self.table.touched) {
                let Some(c) = self.table.conns.get_mut(&t) else {
                    continue;
                };
                if c.connecting && c.closing == Closing::No {
                    // Written once connected (see Reactor::connected).
                    continue;
                }
                match (c.framed.flush(), c.closing) {
                    (Err(e), Closing::No | Closing::Take) => {
                        self.table.doomed.push((t, Gone::Io(e.to_string())))
                    }
                    // Closed by us: what the peer missed of our last words
                    // is no news.
                    (Err(_), _) | (Ok(_), Closing::Now) | (Ok(true), Closing::WhenFlushed) => {
                        self.table.doomed.push((t, Gone::Local))
                    }
                    (Ok(_), Closing::Take) => self.hand_over(h, t),
                    (Ok(_), _) => {}
                }
            }
            let Some((t, why)) = self.table.doomed.pop() else {
                if self.table.touched.is_empty() {
                    return;
                }
                continue;
            };
            if !self.table.conns.contains_key(&t) {
                continue;
            }
            h.event(
                Instant::now(),
                Event::Closed { conn: t, why },
                &mut self.table,
            );
            if let Some(mut c) = self.table.conns.remove(&t) {
                let _ = c.framed.flush();
                let _ = self.table.registry.deregister(&mut c.framed.stream.stream);
            }
            self.again.retain(|&a| a != t);
        }
    }

    fn hand_over<H: Handler>(&mut self, h: &mut H, t: ConnId) {
        let Some(mut c) = self.table.conns.remove(&t) else {
            return;
        };
        let _ = self.table.registry.deregister(&mut c.framed.stream.stream);
        self.again.retain(|&a| a != t);
        let p = c.framed.into_parts();
        let parts = FramedParts {
            stream: p.stream.stream,
            codec: p.codec,
            unread: p.unread,
            unwritten: p.unwritten,
        };
        h.taken(t, parts, &mut self.table);
    }
}

fn creds(fd: BorrowedFd<'_>) -> io::Result<Creds> {
    Ok(Creds {
        cred: sys::peer_cred(&fd)?,
        groups: sys::peer_groups(&fd)?,
    })
}

fn gone(e: ChannelError) -> Gone {
    match e {
        ChannelError::Closed => Gone::Peer,
        ChannelError::Io(e) => Gone::Io(e.to_string()),
        ChannelError::TimedOut | ChannelError::Interrupted => Gone::Io(e.to_string()),
        ChannelError::Wire(e) => Gone::Protocol(e.to_string()),
    }
}

fn describe(p: &Peer) -> String {
    match p {
        Peer::Tcp(a) => a.ip().to_string(),
        Peer::Unix(Ok(c)) => format!("pid {} uid {}", c.cred.pid, c.cred.uid),
        Peer::Unix(Err(_)) => "a local process".into(),
    }
}

#[cfg(test)]
mod tests;
