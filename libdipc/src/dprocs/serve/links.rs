//! The links of a serving process: accepting them at its endpoint,
//! believing a `CallHello` only with the kernel's word on who connected,
//! reading calls and writing replies without blocking, each within its
//! bounds, and closing the link idle the longest when there are too many.

use super::MAX_LINKS;
use crate::dprocs::link::Conn;
use crate::dprocs::{max_input, max_output, stop_requested, Endpoint};
use crate::pid::{self, PidD};
use crate::state;
use dipc_common::calls;
use dipc_common::channel::Codec;
use dipc_common::channel::{ChannelError, Framed};
use dipc_common::net;
use dipc_common::procs;
use dipc_common::secure::Secure;
use dipc_common::sys;
use dipc_common::wire::{self, Message, Protocol, ToCallee};
use std::collections::HashMap;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a link must have been idle to be closed for a new one: a
/// caller sends its call right after the link opens or its last reply
/// came, so one idle this long is not about to be used.
pub(super) const IDLE_BEFORE_CLOSE: Duration = Duration::from_secs(1);
/// Connections that have not said who calls yet, at most; more wait in
/// the endpoint's backlog.
pub(super) const MAX_NEWCOMERS: usize = 128;
/// The longest a new link may take to say who calls.
pub(super) const HELLO_WITHIN: Duration = Duration::from_secs(10);
/// The most bytes (and descriptors) a `CallHello` may take.
pub(super) const HELLO_MAX: usize = 4096;
/// How often an idle serving process checks that it is still registered.
pub(super) const IDLE_CHECK: Duration = Duration::from_millis(250);
/// Maximal frames of replies that may wait for a caller that does not
/// read them before its link is dropped.
pub(super) const LINK_RECORDS: usize = 2;

/// A call read from a link.
pub(super) struct Incoming {
    pub(super) link: u64,
    pub(super) id: u64,
    pub(super) caller: PidD,
    pub(super) uid: u32,
    pub(super) proc_name: String,
    pub(super) input: Vec<u8>,
    pub(super) max_out: usize,
}

/// A connection to the endpoint that has not said who calls yet.
pub(super) struct Newcomer {
    pub(super) conn: UnixStream,
    pub(super) cred: sys::PeerCred,
    pub(super) since: Instant,
    pub(super) buf: Vec<u8>,
    pub(super) fds: Vec<OwnedFd>,
}

/// A link that said who calls.
pub(super) struct Caller {
    pub(super) framed: Framed<Box<dyn Conn>>,
    pub(super) caller: PidD,
    pub(super) uid: u32,
    /// A call of this link is postponed or running: the next may come
    /// only after its reply.
    pub(super) busy: bool,
    pub(super) last_used: Instant,
}

/// The endpoint and the links of a serving process.
pub(super) struct Links {
    pub(super) endpoint: Arc<Endpoint>,
    pub(super) newcomers: HashMap<u64, Newcomer>,
    pub(super) callers: HashMap<u64, Caller>,
    pub(super) next: u64,
    pub(super) spin: Duration,
    pub(super) max_frame: u32,
    /// Until when to look for more without sleeping (after a busy spell).
    pub(super) spin_until: Option<Instant>,
    pub(super) next_check: Instant,
    /// [`MAX_LINKS`], or fewer under a low descriptor limit.
    pub(super) max_links: usize,
    /// Out of descriptors: new links wait in the backlog until then.
    pub(super) accept_after: Option<Instant>,
}

/// The links a process can keep with its descriptor limit: half of it,
/// the rest for the process's own use.
pub(super) fn links_for_fd_limit() -> usize {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return MAX_LINKS;
    }
    usize::try_from(r.rlim_cur / 2)
        .unwrap_or(MAX_LINKS)
        .clamp(16, MAX_LINKS)
}

impl Links {
    pub(super) fn new(endpoint: Arc<Endpoint>) -> Links {
        let config = state::config().ok();
        Links {
            endpoint,
            newcomers: HashMap::new(),
            callers: HashMap::new(),
            next: 1,
            spin: config.map_or(Duration::ZERO, |c| c.library.spin),
            max_frame: config.map_or(1 << 20, |c| c.max_frame),
            spin_until: None,
            next_check: Instant::now() + IDLE_CHECK,
            max_links: links_for_fd_limit(),
            accept_after: None,
        }
    }

    pub(super) fn is_open(&self, link: u64) -> bool {
        self.callers.contains_key(&link)
    }

    /// Sends a reply on `link`, if it is still open.
    pub(super) fn reply(&mut self, link: u64, id: u64, status: i32, output: Vec<u8>) {
        let Some(c) = self.callers.get_mut(&link) else {
            return;
        };
        c.busy = false;
        c.last_used = Instant::now();
        c.framed.queue(id, &Message::CallReply { status, output });
        if c.framed.flush().is_err() {
            self.callers.remove(&link);
        }
    }

    /// Waits for something to happen and takes it in: new links, calls
    /// (into `fresh`), links that closed. `false` once the registration
    /// has ended.
    pub(super) fn wait(&mut self, fresh: &mut Vec<Incoming>) -> io::Result<bool> {
        loop {
            let now = Instant::now();
            if now >= self.next_check {
                if !self.still_registered() {
                    return Ok(false);
                }
                self.next_check = now + IDLE_CHECK;
                self.newcomers
                    .retain(|_, n| now.duration_since(n.since) < HELLO_WITHIN);
            }
            if stop_requested() {
                return Ok(true);
            }
            let spinning = self.spin_until.is_some_and(|t| now < t);
            let timeout = if spinning {
                Duration::ZERO
            } else {
                self.next_check.saturating_duration_since(now)
            };
            let ready = self.poll(timeout)?;
            let mut busy = false;
            for (token, revents) in ready {
                busy = true;
                match token {
                    None => self.accept(),
                    Some(t) if self.newcomers.contains_key(&t) => self.greet(t),
                    Some(t) => self.read(t, revents, fresh),
                }
            }
            if busy {
                self.spin_until = Some(Instant::now() + self.spin);
            }
            if !fresh.is_empty() {
                return Ok(true);
            }
            if !spinning && !busy {
                continue;
            }
            std::hint::spin_loop();
        }
    }

    /// Whether this process is still registered with this endpoint: the
    /// registration may end by `uregist` in another thread, or by dipcd
    /// (which removes the mailbox).
    fn still_registered(&self) -> bool {
        let Some(e) = crate::dprocs::endpoint() else {
            return false;
        };
        if !Arc::ptr_eq(&e, &self.endpoint) {
            return false;
        }
        pid::mailbox().is_some_and(|m| dipc_common::sysv::msgctl_stat(m).is_ok())
    }

    /// One `poll` over the endpoint and the links: the ready ones, with
    /// the endpoint as `None`.
    fn poll(&self, timeout: Duration) -> io::Result<Vec<(Option<u64>, libc::c_short)>> {
        let mut fds = Vec::with_capacity(1 + self.newcomers.len() + self.callers.len());
        let mut tokens = Vec::with_capacity(fds.capacity());
        let pfd = |fd: i32, events: libc::c_short| libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // New links wait in the backlog while too many have not said who
        // calls, or descriptors ran out.
        if self.newcomers.len() < MAX_NEWCOMERS
            && self.accept_after.is_none_or(|t| Instant::now() >= t)
        {
            fds.push(pfd(self.endpoint.listener.as_raw_fd(), libc::POLLIN));
            tokens.push(None);
        }
        for (t, n) in &self.newcomers {
            fds.push(pfd(n.conn.as_raw_fd(), libc::POLLIN));
            tokens.push(Some(*t));
        }
        for (t, c) in &self.callers {
            let mut ev = libc::POLLIN;
            if c.framed.has_pending_writes() {
                ev |= libc::POLLOUT;
            }
            fds.push(pfd(c.framed.stream.as_fd().as_raw_fd(), ev));
            tokens.push(Some(*t));
        }
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `fds` is a valid array of pollfd of the length given.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            // A signal: the loop looks again.
            if e.raw_os_error() == Some(libc::EINTR) {
                return Ok(Vec::new());
            }
            return Err(e);
        }
        Ok(fds
            .iter()
            .zip(tokens)
            .filter(|(f, _)| f.revents != 0)
            .map(|(f, t)| (t, f.revents))
            .collect())
    }

    fn accept(&mut self) {
        while self.newcomers.len() < MAX_NEWCOMERS {
            match calls::accept(&self.endpoint.listener) {
                Ok(Some((conn, cred))) => {
                    let t = self.next;
                    self.next += 1;
                    self.newcomers.insert(
                        t,
                        Newcomer {
                            conn,
                            cred,
                            since: Instant::now(),
                            buf: Vec::new(),
                            fds: Vec::new(),
                        },
                    );
                }
                Ok(None) => return,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    // Make room if a link is idle; else let new links wait
                    // a little rather than spin on a listener that stays
                    // readable.
                    if !self.evict_idle() {
                        log::warn!("dipc: call links wait: {e}");
                        self.accept_after = Some(Instant::now() + Duration::from_millis(100));
                        return;
                    }
                }
                Err(e) => {
                    log::debug!("dipc: accepting a call link: {e}");
                    return;
                }
            }
        }
    }

    /// Reads a newcomer's `CallHello` and, once it is whole, checks it.
    fn greet(&mut self, t: u64) {
        let Some(mut n) = self.newcomers.remove(&t) else {
            return;
        };
        let mut chunk = [0u8; 1024];
        loop {
            match sys::recv_with_fds(&n.conn, &mut chunk) {
                Ok((0, _)) => return,
                Ok((k, fds)) => {
                    n.buf.extend_from_slice(&chunk[..k]);
                    n.fds.extend(fds);
                    if n.buf.len() > HELLO_MAX || n.fds.len() > 1 {
                        log::warn!("dipc: a call link from pid {} sent too much", n.cred.pid);
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return,
            }
        }
        let hello = match wire::decode_frame(&n.buf, self.max_frame) {
            Ok(None) => {
                self.newcomers.insert(t, n);
                return;
            }
            Ok(Some((used, _, msg))) if used == n.buf.len() => {
                ToCallee::accept(msg).map_err(|e| e.to_string())
            }
            Ok(Some(_)) => Err("more than one frame".to_string()),
            Err(e) => Err(e.to_string()),
        };
        let (caller, keys) = match hello {
            Ok(ToCallee::CallHello { caller, keys }) => (caller, keys),
            Ok(ToCallee::CallRequest { .. }) => {
                log::warn!(
                    "dipc: a call link from pid {} did not start with CallHello: a call came first",
                    n.cred.pid
                );
                return;
            }
            Err(why) => {
                log::warn!(
                    "dipc: a call link from pid {} did not start with CallHello: {why}",
                    n.cred.pid
                );
                return;
            }
        };
        match self.admit(n, caller, keys) {
            Ok(mut c) => {
                if self.make_room() {
                    c.framed.queue(0, &Message::Done { value: 0 });
                    if c.framed.flush().is_ok() {
                        self.callers.insert(t, c);
                    }
                } else {
                    log::warn!(
                        "dipc: a call link of pid_d {} refused: {} links, each with a call waiting",
                        c.caller,
                        self.max_links
                    );
                    c.framed
                        .queue(0, &Message::error(libc::EAGAIN, "too many calls waiting"));
                    let _ = c.framed.flush();
                }
            }
            Err(why) => log::warn!("dipc: a call link refused: {why}"),
        }
    }

    /// Believes a `CallHello` only with the kernel's word (see the module
    /// documentation); the link, greeted with `Done`.
    fn admit(
        &self,
        n: Newcomer,
        caller: PidD,
        keys: Option<Box<dipc_common::wire::SessionKeys>>,
    ) -> Result<Caller, String> {
        let Newcomer {
            conn,
            cred,
            mut fds,
            ..
        } = n;
        let framed: Framed<Box<dyn Conn>> = match keys {
            None => {
                if !fds.is_empty() {
                    return Err(format!("pid {} passed a descriptor", cred.pid));
                }
                let starttime =
                    procs::starttime(cred.pid).map_err(|_| format!("pid {} is gone", cred.pid))?;
                match state::control(&Message::PidCheck {
                    pid: cred.pid,
                    starttime,
                }) {
                    Ok(Message::Done { value }) if value == caller && caller > 0 => {}
                    _ => {
                        return Err(format!(
                            "pid {} is not the registration pid_d {caller}",
                            cred.pid
                        ))
                    }
                }
                let conn: Box<dyn Conn> = Box::new(conn);
                Framed::server(conn, self.max_frame, LINK_RECORDS)
            }
            Some(keys) => {
                let fd = fds
                    .pop()
                    .ok_or_else(|| format!("pid {} passed no session", cred.pid))?;
                match state::control(&Message::WorkerCheck { pid: cred.pid }) {
                    Ok(Message::Done { .. }) => {}
                    _ => return Err(format!("pid {} is not a worker of this host", cred.pid)),
                }
                if caller <= 0 {
                    return Err(format!("a worker named caller pid_d {caller}"));
                }
                let tcp = calls::session_socket(fd).map_err(|e| format!("the session: {e}"))?;
                tcp.set_nonblocking(true)
                    .map_err(|e| format!("the session: {e}"))?;
                // The worker waits for this before it ends (a short note on
                // a fresh connection: its buffer takes it whole).
                let _ = (&conn).write_all(b"ok");
                let tcp: Box<dyn Conn> = Box::new(tcp);
                Framed::server(tcp, self.max_frame, LINK_RECORDS)
                    .with_codec(Codec::Secure(Box::new(Secure::from_keys(&keys))))
            }
        };
        Ok(Caller {
            framed,
            caller,
            uid: cred.uid,
            busy: false,
            last_used: Instant::now(),
        })
    }

    /// Whether a new link fits, closing the one idle the longest if
    /// needed. Its caller has no call on it, and one it sends meanwhile
    /// is never read, so the caller sends it again on a new link.
    fn make_room(&mut self) -> bool {
        self.callers.len() < self.max_links || self.evict_idle()
    }

    /// Closes the link idle the longest, if any is idle.
    fn evict_idle(&mut self) -> bool {
        let now = Instant::now();
        let lru = self
            .callers
            .iter()
            // Not one whose call is on its way in: its caller would have to
            // send it again.
            .filter(|(_, c)| {
                !c.busy
                    && now.duration_since(c.last_used) >= IDLE_BEFORE_CLOSE
                    && c.framed.partial_since().is_none()
                    && net::peek(&c.framed.stream.as_fd()) == net::Peek::Empty
            })
            .min_by_key(|(_, c)| c.last_used)
            .map(|(t, _)| *t);
        match lru {
            Some(t) => {
                if let Some(c) = self.callers.remove(&t) {
                    log::debug!(
                        "dipc: closed the idle call link of pid_d {} to make room",
                        c.caller
                    );
                }
                true
            }
            None => false,
        }
    }

    fn read(&mut self, t: u64, revents: libc::c_short, fresh: &mut Vec<Incoming>) {
        let Some(c) = self.callers.get_mut(&t) else {
            return;
        };
        if revents & libc::POLLOUT != 0 && c.framed.flush().is_err() {
            self.callers.remove(&t);
            return;
        }
        loop {
            let frame = c
                .framed
                .read_frame()
                .map(|f| f.map(|(id, msg)| (id, ToCallee::accept(msg))));
            match frame {
                Ok(Some((
                    id,
                    Ok(ToCallee::CallRequest {
                        proc_name,
                        max_out,
                        input,
                    }),
                ))) if !c.busy => {
                    c.busy = true;
                    if input.len() > max_input(&proc_name) {
                        c.busy = false;
                        c.framed.queue(
                            id,
                            &Message::CallReply {
                                status: libc::EMSGSIZE,
                                output: Vec::new(),
                            },
                        );
                        continue;
                    }
                    fresh.push(Incoming {
                        link: t,
                        id,
                        caller: c.caller,
                        uid: c.uid,
                        proc_name,
                        input,
                        max_out: (max_out as usize).min(max_output()),
                    });
                }
                // A second call before the first one's reply, or a second
                // hello.
                Ok(Some((
                    _,
                    Ok(other @ (ToCallee::CallRequest { .. } | ToCallee::CallHello { .. })),
                ))) => {
                    log::debug!(
                        "dipc: pid_d {}'s call link closed: {} out of turn",
                        c.caller,
                        other.kind().name()
                    );
                    self.callers.remove(&t);
                    return;
                }
                Ok(Some((_, Err(e)))) => {
                    log::debug!("dipc: pid_d {}'s call link closed: {e}", c.caller);
                    self.callers.remove(&t);
                    return;
                }
                Ok(None) => break,
                Err(ChannelError::Closed) => {
                    self.callers.remove(&t);
                    return;
                }
                Err(e) => {
                    log::debug!("dipc: pid_d {}'s call link: {e}", c.caller);
                    self.callers.remove(&t);
                    return;
                }
            }
        }
        if c.framed.flush().is_err() {
            self.callers.remove(&t);
        }
    }
}

impl Drop for Links {
    /// A reply the socket has not taken yet must still reach its caller:
    /// the caller may send its call again on a new link when this one
    /// closes without an answer, and the procedure has run.
    fn drop(&mut self) {
        let until = Instant::now() + Duration::from_millis(200);
        for c in self.callers.values_mut() {
            while c.framed.has_pending_writes() && Instant::now() < until {
                if c.framed.flush().is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}
