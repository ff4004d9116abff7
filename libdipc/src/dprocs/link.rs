//! The caller's side of calls: links to the processes it calls, and the
//! wait for a reply.
//!
//! A link is a connection to one callee that carries one call at a time.
//! To a process of this host it is a Unix connection to the callee's
//! endpoint (see `dipc_common::calls`); to a process of another host it is
//! a session of this process's own (opened by dipcd through an employer,
//! like any session) that the callee's worker passed on to the callee
//! (`CallOpen`): the callee then reads and answers on that very
//! connection, so a call costs one network round trip. Links are kept per
//! callee for the next calls and opened again when one has closed.

use super::{Signals, LIVENESS};
use crate::pid::{self, client_err, errno_err, PidD};
use crate::state;
use crate::{Client, ClientError};
use dipc_common::calls;
use dipc_common::channel::{Channel, ChannelError};
use dipc_common::net;
use dipc_common::wire::{FromCallee, Message, PidRecord, Protocol};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A socket a link runs on: TCP to another host, Unix on this one.
pub(super) trait Conn: Read + Write + AsFd + Send {}
impl Conn for std::net::TcpStream {}
impl Conn for std::os::unix::net::UnixStream {}

/// Idle links kept, over all callees; past it the pool is emptied.
const MAX_IDLE: usize = 256;
/// The pauses of a caller whose callee's endpoint is busy.
const NAP_MIN: Duration = Duration::from_millis(1);
const NAP_MAX: Duration = Duration::from_millis(20);

pub(super) struct Link {
    ch: Channel<Box<dyn Conn>>,
    /// The process that opened it: a forked child must not share it.
    owner: u32,
    next_id: u64,
}

static IDLE: Mutex<Option<HashMap<PidD, Vec<Link>>>> = Mutex::new(None);

fn idle() -> std::sync::MutexGuard<'static, Option<HashMap<PidD, Vec<Link>>>> {
    IDLE.lock().unwrap_or_else(|p| p.into_inner())
}

impl Link {
    fn fd(&self) -> BorrowedFd<'_> {
        self.ch.get_ref().as_fd()
    }

    /// An idle link of this process to `q`, still open.
    pub(super) fn take(q: PidD) -> Option<Link> {
        let me = std::process::id();
        let mut g = idle();
        let v = g.as_mut()?.get_mut(&q)?;
        while let Some(l) = v.pop() {
            // Nothing arrives on an idle link: anything readable means the
            // callee closed it (it exited, or dropped the link).
            if l.owner == me && net::peek(&l.fd()) == net::Peek::Empty {
                return Some(l);
            }
        }
        None
    }

    /// Keeps a link whose last call ended well.
    pub(super) fn put_back(self, q: PidD) {
        let mut g = idle();
        let m = g.get_or_insert_with(HashMap::new);
        if m.values().map(Vec::len).sum::<usize>() >= MAX_IDLE {
            m.clear();
        }
        m.entry(q).or_default().push(self);
    }

    /// Opens a link to `q`, which runs as `rec` says; waits (within
    /// `pace`) until `q` has taken it.
    pub(super) fn open(q: PidD, me: PidD, rec: &PidRecord, pace: &mut Pace) -> io::Result<Link> {
        let config = state::config().map_err(client_err)?;
        let here = rec.host == config.front_end_addr();
        let (ch, first) = if here {
            let (pid, starttime, name) =
                match state::control(&Message::CallRoute { pid_d: q }).map_err(client_err)? {
                    Message::CallEndpointAt {
                        pid,
                        starttime,
                        name,
                    } => (pid, starttime, name),
                    _ => return Err(errno_err(libc::EPROTO)),
                };
            // A burst of new callers may fill the endpoint's backlog for a
            // moment: it drains as q takes them.
            let mut nap = NAP_MIN;
            let s = loop {
                match calls::connect(&name, pid, starttime) {
                    Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                        pace.nap(q, nap)?;
                        nap = (nap * 2).min(NAP_MAX);
                    }
                    r => break r?,
                }
            };
            s.set_read_timeout(Some(config.timeouts.request))?;
            let s: Box<dyn Conn> = Box::new(s);
            let mut ch = Channel::new(s, config.max_frame);
            ch.send(
                0,
                &Message::CallHello {
                    caller: me,
                    keys: None,
                },
            )
            .map_err(chan_err)?;
            (ch, 1)
        } else {
            // A session of its own: the callee keeps it.
            let c =
                crate::retry::retrying(|| Client::session(config, rec.host)).map_err(client_err)?;
            if c.pid_d() != me {
                return Err(errno_err(libc::ENOTCONN));
            }
            let (s, codec) = c.into_parts();
            let s: Box<dyn Conn> = Box::new(s);
            let ch = Channel::new(s, config.max_frame).with_codec(codec);
            (ch, 1)
        };
        let mut link = Link {
            ch,
            owner: std::process::id(),
            next_id: first,
        };
        let mut nap = NAP_MIN;
        loop {
            if !here {
                link.send(&Message::CallOpen { pid_d: q })?;
            }
            pace.request_sent();
            match link.wait(q, pace)? {
                // The callee's own first frame.
                (0, FromCallee::Done { .. }) => return Ok(link),
                // q's endpoint is busy taking a burst of new callers (see
                // above): the worker says so and the session stays as it was.
                (id, FromCallee::Error { errno, .. })
                    if !here && id + 1 == link.next_id && errno == libc::EAGAIN =>
                {
                    pace.nap(q, nap)?;
                    nap = (nap * 2).min(NAP_MAX);
                }
                // The worker's refusal, before any hand-over, or q's.
                (id, FromCallee::Error { errno, .. }) if id == 0 || id + 1 == link.next_id => {
                    return Err(errno_err(errno))
                }
                // An answer to nothing asked, or a reply before any call.
                (
                    _,
                    FromCallee::Done { .. }
                    | FromCallee::Error { .. }
                    | FromCallee::CallReply { .. },
                ) => return Err(errno_err(libc::EPROTO)),
            }
        }
    }

    /// Sends a call; its request id.
    pub(super) fn send(&mut self, msg: &Message) -> io::Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        self.ch.send(id, msg).map_err(chan_err)?;
        Ok(id)
    }

    /// The next frame from the callee, waiting as `pace` allows; `EPROTO`
    /// for a message no callee sends.
    pub(super) fn wait(&mut self, q: PidD, pace: &mut Pace) -> io::Result<(u64, FromCallee)> {
        loop {
            if self.ch.buffered() > 0 || net::peek(&self.fd()) != net::Peek::Empty {
                // A frame has begun to arrive: the rest follows at once (the
                // socket's read time-out bounds a sender that stalls).
                let (id, msg) = self.ch.recv().map_err(chan_err)?;
                return match FromCallee::accept(msg) {
                    Ok(msg) => Ok((id, msg)),
                    Err(e) => {
                        log::debug!("dipc: call link to pid_d {q}: {e}");
                        Err(errno_err(libc::EPROTO))
                    }
                };
            }
            pace.pause(q, self.fd())?;
        }
    }
}

/// A link that broke: the callee exited or dropped it (or its host went).
fn chan_err(e: ChannelError) -> io::Error {
    match e {
        ChannelError::Closed => errno_err(libc::ECONNRESET),
        e => client_err(ClientError::Channel(e)),
    }
}

/// The wait of one call: its deadline, the callee's liveness checks and
/// the spin before sleeping.
pub(super) struct Pace {
    signals: Signals,
    /// When the request went (the start of the call until then).
    sent: Instant,
    /// How long the caller checks without sleeping once the request went.
    spin: Duration,
    deadline: Option<Instant>,
    next_check: Instant,
}

impl Pace {
    pub(super) fn new(timeout: Option<Duration>) -> Pace {
        let start = Instant::now();
        Pace {
            signals: Signals::hold(),
            sent: start,
            // Without a configuration no call gets this far; no spin is
            // the safe choice then.
            spin: state::config().map_or(Duration::ZERO, |c| c.library.spin),
            deadline: timeout.map(|t| start + t),
            next_check: start + LIVENESS,
        }
    }

    /// The request went: the spin for the reply starts now.
    pub(super) fn request_sent(&mut self) {
        self.sent = Instant::now();
    }

    /// Sleeps `d` (less if the call's time is up sooner), with the same
    /// checks and errors as [`Pace::pause`].
    fn nap(&mut self, q: PidD, d: Duration) -> io::Result<()> {
        self.check(q)?;
        let now = Instant::now();
        let d = self
            .deadline
            .map_or(d, |dl| d.min(dl.saturating_duration_since(now)));
        // No descriptor: a plain sleep that a signal ends.
        self.signals.wait_readable(-1, d)
    }

    /// The checks of every wait: the caller's time-out, q's registration.
    fn check(&mut self, q: PidD) -> io::Result<()> {
        let now = Instant::now();
        if self.deadline.is_some_and(|d| now >= d) {
            return Err(errno_err(libc::ETIMEDOUT));
        }
        if now >= self.next_check {
            match pid::lookup(q) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                    return Err(errno_err(libc::ECONNRESET))
                }
                Err(e) => return Err(e),
            }
            self.next_check = Instant::now() + LIVENESS;
        }
        Ok(())
    }

    /// Waits a little for `fd` to turn readable; errors end the call:
    /// `ETIMEDOUT` past the caller's time-out, `ECONNRESET` once `q` is no
    /// longer registered (a lost host: a link to an exited process closes
    /// at once), `EINTR` for a signal.
    fn pause(&mut self, q: PidD, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.check(q)?;
        let now = Instant::now();
        if now.duration_since(self.sent) < self.spin {
            std::hint::spin_loop();
            return Ok(());
        }
        let mut d = self.next_check.saturating_duration_since(now);
        if let Some(dl) = self.deadline {
            d = d.min(dl.saturating_duration_since(now));
        }
        self.signals.wait_readable(fd.as_raw_fd(), d)
    }
}
