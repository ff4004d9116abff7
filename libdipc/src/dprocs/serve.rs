//! The callee's side: [`Process::serve`], which interleaves a process's
//! initial statements and the calls that come on its links.
//!
//! The links come to the process's endpoint (see `dipc_common::calls`).
//! Each starts with a `CallHello` naming the caller, and is believed only
//! with the kernel's word on who connected: a process of this host must
//! be the registration it names (its dipcd answers `PidCheck` for the
//! connection's pid and start time); a link from another host must come
//! from one of this host's workers (`WorkerCheck`), which took the caller's
//! pid_d from the session's statement by the caller's dipcd. The procedure
//! sees the caller's uid as the kernel gave it on the connection: on
//! another host's link, the uid the worker acts as (root squashed).
//!
//! Each link carries one call at a time. Everything is read without
//! blocking and every buffer is bounded, so a caller that stalls, floods,
//! or never reads its replies costs its own link and nothing else.

use super::{max_input, max_output, stop_requested, Endpoint, MAX_PROC_NAME};
use crate::pid::{self, errno_err, PidD};
use crate::state;
use dipc_common::calls;
use dipc_common::channel::Codec;
use dipc_common::channel::{ChannelError, Framed};
use dipc_common::net;
use dipc_common::procs;
use dipc_common::secure::Secure;
use dipc_common::sys;
use dipc_common::wire::{self, Message};
use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::link::Conn;

/// Links a serving process keeps at most (each carries one call at a
/// time, so this also bounds the calls it holds), or half its descriptor
/// limit (`RLIMIT_NOFILE`) if that is less. Past it the link idle
/// the longest is closed (its caller opens a new one when it next calls);
/// if every link has a call waiting, a new caller is refused (`EAGAIN`).
pub const MAX_LINKS: usize = 1024;
/// How long a link must have been idle to be closed for a new one: a
/// caller sends its call right after the link opens or its last reply
/// came, so one idle this long is not about to be used.
const IDLE_BEFORE_CLOSE: Duration = Duration::from_secs(1);
/// Connections that have not said who calls yet, at most; more wait in
/// the endpoint's backlog.
const MAX_NEWCOMERS: usize = 128;
/// The longest a new link may take to say who calls.
const HELLO_WITHIN: Duration = Duration::from_secs(10);
/// The most bytes (and descriptors) a `CallHello` may take.
const HELLO_MAX: usize = 4096;
/// How often an idle serving process checks that it is still registered.
const IDLE_CHECK: Duration = Duration::from_millis(250);
/// Maximal frames of replies that may wait for a caller that does not
/// read them before its link is dropped.
const LINK_RECORDS: usize = 2;

/// One call as the procedure sees it.
#[derive(Debug)]
pub struct Request<'a> {
    /// The caller's pid_d, as the kernel's credentials of its link vouch.
    pub caller: PidD,
    /// The caller's uid (effective, when it connected; on another host's
    /// link, the uid its worker acts as: root is squashed).
    pub uid: u32,
    /// The input the caller sent.
    pub input: &'a [u8],
    /// The largest output the caller takes.
    pub max_out: usize,
    /// 0 at first; a procedure that waits in its middle sets it before
    /// answering [`Answer::Wait`] and finds it again when it is retried.
    pub phase: u32,
}

/// What a procedure answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// It ended; the output goes back to the caller.
    Done(Vec<u8>),
    /// Its guard is false: postpone it and try again after the next step.
    /// A procedure must not have changed the state before answering this
    /// unless it also moved its `phase` on.
    Wait,
    /// It ended with an errno for the caller.
    Fail(i32),
}

/// What one step of the initial statements answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// It did a step and has more to do: call it again.
    Continue,
    /// Its guard is false: serve requests, and try it again after each.
    Wait,
    /// The initial statements have ended; the process serves from now on.
    Done,
}

type Procedure<S> = Box<dyn FnMut(&mut S, &mut Request) -> Answer>;
type Initial<S> = Box<dyn FnMut(&mut S, &mut u32) -> Step>;

/// A request waiting to run (or to be retried).
struct Pending {
    link: u64,
    id: u64,
    caller: PidD,
    uid: u32,
    proc_index: usize,
    input: Vec<u8>,
    max_out: usize,
    phase: u32,
}

/// A distributed process: its state, public procedures and initial
/// statements.
///
/// ```no_run
/// use dipc::dprocs::{Answer, Process};
/// struct Buffer { letter: Option<Vec<u8>> }
/// dipc::pid::regist()?;
/// dipc::dprocs::register_name("Buffer")?;
/// Process::new(Buffer { letter: None })
///     .procedure("Send", |b, r| match b.letter {
///         Some(_) => Answer::Wait,                      // when not Full
///         None => { b.letter = Some(r.input.to_vec()); Answer::Done(vec![]) }
///     })
///     .procedure("Receive", |b, _| match b.letter.take() {
///         Some(m) => Answer::Done(m),                   // when Full
///         None => Answer::Wait,
///     })
///     .serve()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Process<S> {
    state: S,
    names: Vec<String>,
    procs: Vec<Procedure<S>>,
    initial: Option<Initial<S>>,
}

impl<S> Process<S> {
    pub fn new(state: S) -> Process<S> {
        Process {
            state,
            names: Vec::new(),
            procs: Vec::new(),
            initial: None,
        }
    }

    /// Declares public procedure `name` (a later one of the same name
    /// replaces it).
    pub fn procedure(
        mut self,
        name: &str,
        f: impl FnMut(&mut S, &mut Request) -> Answer + 'static,
    ) -> Self {
        match self.names.iter().position(|n| n == name) {
            Some(i) => self.procs[i] = Box::new(f),
            None => {
                self.names.push(name.to_owned());
                self.procs.push(Box::new(f));
            }
        }
        self
    }

    /// Declares the initial statements, as a function run one step at a
    /// time with its own `phase` (0 at first) to know where it is.
    pub fn initial(mut self, f: impl FnMut(&mut S, &mut u32) -> Step + 'static) -> Self {
        self.initial = Some(Box::new(f));
        self
    }

    /// Runs the process: its initial statements and the calls that come,
    /// one step at a time. Returns the state when [`super::stop`] was
    /// called or the registration ended (`uregist`, or dipcd ended it); an
    /// error if the process is not registered (`ENOTCONN`) or a procedure
    /// name is bad (`EINVAL`).
    pub fn serve(mut self) -> io::Result<S> {
        let endpoint = super::endpoint().ok_or_else(|| errno_err(libc::ENOTCONN))?;
        if self
            .names
            .iter()
            .any(|n| n.is_empty() || n.len() > MAX_PROC_NAME)
        {
            return Err(errno_err(libc::EINVAL));
        }
        super::STOP.store(false, std::sync::atomic::Ordering::Release);
        let mut links = Links::new(endpoint);
        self.run(&mut links)?;
        Ok(self.state)
    }

    fn run(&mut self, links: &mut Links) -> io::Result<()> {
        let mut pending: VecDeque<Pending> = VecDeque::new();
        let mut initial_phase = 0u32;
        loop {
            // Steps until nothing can continue: after each, the initial
            // statements, then the postponed requests oldest first.
            'steps: loop {
                if stop_requested() {
                    return Ok(());
                }
                if let Some(init) = self.initial.as_mut() {
                    match init(&mut self.state, &mut initial_phase) {
                        Step::Continue => continue 'steps,
                        Step::Done => {
                            self.initial = None;
                            continue 'steps;
                        }
                        Step::Wait => {}
                    }
                }
                for i in 0..pending.len() {
                    let p = &mut pending[i];
                    let before = p.phase;
                    let mut req = Request {
                        caller: p.caller,
                        uid: p.uid,
                        input: &p.input,
                        max_out: p.max_out,
                        phase: p.phase,
                    };
                    let answer = (self.procs[p.proc_index])(&mut self.state, &mut req);
                    p.phase = req.phase;
                    let (status, output) = match answer {
                        Answer::Wait if p.phase == before => continue,
                        // It did part of its work and waits again: a step.
                        Answer::Wait => continue 'steps,
                        Answer::Done(out) if out.len() > p.max_out => (libc::E2BIG, Vec::new()),
                        Answer::Done(out) => (0, out),
                        Answer::Fail(e) if e > 0 => (e, Vec::new()),
                        Answer::Fail(_) => (libc::EIO, Vec::new()),
                    };
                    if let Some(p) = pending.remove(i) {
                        links.reply(p.link, p.id, status, output);
                    }
                    continue 'steps;
                }
                break;
            }
            // Nothing can continue: wait for calls.
            let mut fresh = Vec::new();
            if !links.wait(&mut fresh)? {
                return Ok(());
            }
            // The postponed requests of links that closed: their callers
            // gave up (or exited), and a call runs at most once.
            pending.retain(|p| links.is_open(p.link));
            for c in fresh {
                let Some(proc_index) = self.names.iter().position(|n| *n == c.proc_name) else {
                    links.reply(c.link, c.id, libc::ENOSYS, Vec::new());
                    continue;
                };
                pending.push_back(Pending {
                    link: c.link,
                    id: c.id,
                    caller: c.caller,
                    uid: c.uid,
                    proc_index,
                    input: c.input,
                    max_out: c.max_out,
                    phase: 0,
                });
            }
        }
    }
}

/// A call read from a link.
struct Incoming {
    link: u64,
    id: u64,
    caller: PidD,
    uid: u32,
    proc_name: String,
    input: Vec<u8>,
    max_out: usize,
}

/// A connection to the endpoint that has not said who calls yet.
struct Newcomer {
    conn: UnixStream,
    cred: sys::PeerCred,
    since: Instant,
    buf: Vec<u8>,
    fds: Vec<OwnedFd>,
}

/// A link that said who calls.
struct Caller {
    framed: Framed<Box<dyn Conn>>,
    caller: PidD,
    uid: u32,
    /// A call of this link is postponed or running: the next may come
    /// only after its reply.
    busy: bool,
    last_used: Instant,
}

/// The endpoint and the links of a serving process.
struct Links {
    endpoint: Arc<Endpoint>,
    newcomers: HashMap<u64, Newcomer>,
    callers: HashMap<u64, Caller>,
    next: u64,
    spin: Duration,
    max_frame: u32,
    /// Until when to look for more without sleeping (after a busy spell).
    spin_until: Option<Instant>,
    next_check: Instant,
    /// [`MAX_LINKS`], or fewer under a low descriptor limit.
    max_links: usize,
    /// Out of descriptors: new links wait in the backlog until then.
    accept_after: Option<Instant>,
}

/// The links a process can keep with its descriptor limit: half of it,
/// the rest for the process's own use.
fn links_for_fd_limit() -> usize {
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
    fn new(endpoint: Arc<Endpoint>) -> Links {
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

    fn is_open(&self, link: u64) -> bool {
        self.callers.contains_key(&link)
    }

    /// Sends a reply on `link`, if it is still open.
    fn reply(&mut self, link: u64, id: u64, status: i32, output: Vec<u8>) {
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
    fn wait(&mut self, fresh: &mut Vec<Incoming>) -> io::Result<bool> {
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
        let Some(e) = super::endpoint() else {
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
        match wire::decode_frame(&n.buf, self.max_frame) {
            Ok(Some((used, _, Message::CallHello { caller, keys }))) if used == n.buf.len() => {
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
            Ok(None) => {
                self.newcomers.insert(t, n);
            }
            _ => log::warn!(
                "dipc: a call link from pid {} did not start with CallHello",
                n.cred.pid
            ),
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
            match c.framed.read_frame() {
                Ok(Some((
                    id,
                    Message::CallRequest {
                        proc_name,
                        max_out,
                        input,
                    },
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
                Ok(Some((_, other))) => {
                    log::debug!(
                        "dipc: pid_d {}'s call link closed: {} out of turn",
                        c.caller,
                        other.kind().name()
                    );
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
