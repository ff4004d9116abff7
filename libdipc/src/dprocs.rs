//! Distributed processes (Brinch Hansen): cluster-wide process names,
//! calls of other processes' public procedures, and the runtime that
//! serves them.
//!
//! # Names
//!
//! A registered process may take names ([`register_name`]), unique in the
//! cluster and kept by the referee beside its pid_d record; a name goes
//! with its record, however the registration ends.
//!
//! # Calls ride the mailbox
//!
//! A call `call Q.R(in, #out)` is two mailbox messages (see
//! [`crate::pid`]): the request, sent by the caller to Q's mailbox, and
//! the reply, sent by Q to the caller's. Both are plain `dipc_send`s, so a
//! call crosses hosts exactly as a send does, is typed with the sender's
//! vouched pid_d (a server knows who calls), and is tried once: nothing
//! resends a request, so a procedure runs at most once per call. Each
//! message starts with [`MAGIC`], a kind and the caller's call number, so
//! a reply is matched to its call and a late reply (of a call that timed
//! out) is recognised and dropped.
//!
//! A caller waits for its reply by taking messages typed with Q's pid_d
//! from its own mailbox. Those may also be Q's requests (Q calls the
//! caller: they are kept for this process's [`Process::serve`]) or replies
//! to other threads' calls (kept for them). While waiting it checks every
//! [`LIVENESS`] that Q is still registered: Q's exit ends its registration
//! at once, and a lost host's registrations end when the referee marks it
//! down (`heartbeat_timeout_ms`), so a caller never waits for a reply that
//! cannot come.
//!
//! # Serving
//!
//! [`Process`] holds a process's state, its procedures and its initial
//! statements, and [`Process::serve`] interleaves them as the model says:
//! one step at a time, never two at once, so the state needs no lock. A
//! procedure whose guard is false answers [`Answer::Wait`] and is
//! postponed; after every step, the initial statements and then the
//! postponed requests are tried again, oldest first, so an enabled request
//! is never passed over for ever.

use crate::pid::{self, client_err, errno_err, PidD};
use crate::state;
use crate::ClientError;
use dipc_common::procs;
use dipc_common::sysv;
use dipc_common::wire::{Message, PidRecord};
use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The first bytes of every call message: messages that do not start so
/// are not calls.
pub const MAGIC: [u8; 4] = *b"dPc1";
const REQUEST: u8 = 1;
const REPLY: u8 = 2;
/// Wakes this process's own serving loop (see [`stash_request`]).
const WAKE: u8 = 3;
/// Magic, kind, call number.
const HEADER: usize = 4 + 1 + 8;
/// A request adds the largest reply it takes and its procedure's name.
const REQUEST_HEADER: usize = HEADER + 4 + 1;
/// A reply adds its status.
const REPLY_HEADER: usize = HEADER + 4;

/// The longest procedure name, in bytes.
pub const MAX_PROC_NAME: usize = 64;
/// How often a waiting caller checks that the callee is still registered.
pub const LIVENESS: Duration = Duration::from_millis(250);
/// Requests that arrived while this process waited for a reply, kept for
/// its serving loop; past it a request is refused (`EAGAIN`).
const MAX_STASHED: usize = 1024;
/// Requests a serving process keeps postponed at most; past it a new
/// request is refused with `EAGAIN`.
pub const MAX_PENDING: usize = 4096;
/// Entries of the uid cache beyond this clear it.
const MAX_UIDS: usize = 4096;

/// Polling bounds of a caller waiting for its reply. A System V queue
/// cannot be waited on with a time-out, so the caller polls it; after
/// sending its request it checks again at once for `library.spin_us` (as
/// the library's other remote calls spin for their replies), since most
/// replies come within a round trip, and then sleeps between checks.
const NAP_MIN: Duration = Duration::from_micros(20);
const NAP_MAX: Duration = Duration::from_millis(1);
/// The longest pause of a server retrying a reply into a full mailbox.
const REPLY_NAP_MAX: Duration = Duration::from_millis(10);

fn lock<T>(m: &'static Mutex<T>) -> MutexGuard<'static, T> {
    // Every update is a single insert or remove.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------- names

fn check_name(name: &str) -> io::Result<()> {
    // The referee checks fully; this saves a round trip for what is surely
    // wrong.
    if name.is_empty() || name.len() > 128 {
        return Err(errno_err(libc::EINVAL));
    }
    Ok(())
}

/// Gives this process the cluster-wide `name` (1 to 128 bytes of
/// printable text). `EEXIST` if another process holds it (taking one's own
/// name again is no error), `ENOTCONN` if this process is not registered,
/// `EAGAIN` past 16 names, `EINVAL` for a bad name. The name is released
/// with the registration, however it ends.
pub fn register_name(name: &str) -> io::Result<()> {
    name_request(name, true)
}

/// Gives a name back: `ENOENT` if nobody holds it, `EPERM` if another
/// process does.
pub fn release_name(name: &str) -> io::Result<()> {
    name_request(name, false)
}

fn name_request(name: &str, take: bool) -> io::Result<()> {
    check_name(name)?;
    let pid_d = pid::current().ok_or_else(|| errno_err(libc::ENOTCONN))?;
    let (pid, name) = (0, name.to_owned());
    let req = if take {
        Message::NameRegister { pid_d, pid, name }
    } else {
        Message::NameRelease { pid_d, pid, name }
    };
    match state::control(&req) {
        Ok(Message::Done { .. }) => Ok(()),
        Ok(_) => Err(errno_err(libc::EPROTO)),
        Err(e) => Err(client_err(e)),
    }
}

/// The process holding `name` (`ENOENT` if none).
pub fn lookup_name_record(name: &str) -> io::Result<PidRecord> {
    check_name(name).map_err(|_| errno_err(libc::ENOENT))?;
    match state::control(&Message::NameLookup {
        name: name.to_owned(),
    }) {
        Ok(Message::PidInfo { rec }) => Ok(rec),
        Ok(_) => Err(errno_err(libc::EPROTO)),
        Err(e) => Err(client_err(e)),
    }
}

/// The pid_d of the process holding `name` (`ENOENT` if none).
pub fn lookup_name(name: &str) -> io::Result<PidD> {
    lookup_name_record(name).map(|r| r.pid_d)
}

/// Every name of the cluster with the pid_d holding it, in name order.
pub fn names() -> io::Result<Vec<(String, PidD)>> {
    let mut c = state::control_conn().map_err(client_err)?;
    names_with(|m| c.call(m)).map_err(client_err)
}

/// The names, asked through `call` a page at a time.
pub fn names_with(
    mut call: impl FnMut(&Message) -> Result<Message, ClientError>,
) -> Result<Vec<(String, PidD)>, ClientError> {
    let mut all: Vec<(String, PidD)> = Vec::new();
    loop {
        let after = all.last().map_or(String::new(), |n| n.0.clone());
        match call(&Message::ListNames { after })? {
            Message::Names { names, more } => {
                let progressed = !names.is_empty();
                all.extend(names);
                if !more || !progressed {
                    return Ok(all);
                }
            }
            other => return Err(ClientError::Unexpected(other.kind().name())),
        }
    }
}

// ---------------------------------------------------------------- messages

/// A decoded call message.
#[derive(Debug, PartialEq, Eq)]
enum Msg<'a> {
    Request {
        id: u64,
        max_out: usize,
        proc_name: &'a str,
        input: &'a [u8],
    },
    Reply {
        id: u64,
        status: i32,
        output: &'a [u8],
    },
    Wake,
}

fn header(kind: u8, id: u64, extra: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER + extra);
    v.extend_from_slice(&MAGIC);
    v.push(kind);
    v.extend_from_slice(&id.to_be_bytes());
    v
}

fn encode_request(id: u64, max_out: usize, proc_name: &str, input: &[u8]) -> Vec<u8> {
    let mut v = header(REQUEST, id, 5 + proc_name.len() + input.len());
    v.extend_from_slice(&u32::try_from(max_out).unwrap_or(u32::MAX).to_be_bytes());
    // The name was checked to fit a byte.
    v.push(proc_name.len() as u8);
    v.extend_from_slice(proc_name.as_bytes());
    v.extend_from_slice(input);
    v
}

fn encode_reply(id: u64, status: i32, output: &[u8]) -> Vec<u8> {
    let mut v = header(REPLY, id, 4 + output.len());
    v.extend_from_slice(&status.to_be_bytes());
    v.extend_from_slice(output);
    v
}

/// Decodes a mailbox message; `None` for one that is not a well-formed
/// call message (anyone may put bytes in a mailbox).
fn decode(m: &[u8]) -> Option<Msg<'_>> {
    if m.len() < HEADER || m[..4] != MAGIC {
        return None;
    }
    let id = u64::from_be_bytes(m[5..13].try_into().ok()?);
    let rest = &m[HEADER..];
    match m[4] {
        REQUEST if rest.len() >= 5 => {
            let max_out = u32::from_be_bytes(rest[..4].try_into().ok()?) as usize;
            let n = rest[4] as usize;
            let body = &rest[5..];
            if n == 0 || n > MAX_PROC_NAME || body.len() < n {
                return None;
            }
            let proc_name = std::str::from_utf8(&body[..n]).ok()?;
            Some(Msg::Request {
                id,
                max_out,
                proc_name,
                input: &body[n..],
            })
        }
        REPLY if rest.len() >= 4 => Some(Msg::Reply {
            id,
            status: i32::from_be_bytes(rest[..4].try_into().ok()?),
            output: &rest[4..],
        }),
        WAKE if rest.is_empty() => Some(Msg::Wake),
        _ => None,
    }
}

// ---------------------------------------------------------------- inbox

/// What this process's callers took from the mailbox for someone else.
struct Inbox {
    /// Requests (sender, message) for the serving loop, oldest first.
    requests: VecDeque<(PidD, Vec<u8>)>,
    /// Calls of this process now waiting for their replies.
    waiting: HashSet<u64>,
    /// Replies (status, output) taken by another thread than their caller.
    replies: HashMap<u64, (i32, Vec<u8>)>,
}

static INBOX: Mutex<Option<Inbox>> = Mutex::new(None);
static NEXT_CALL: AtomicU64 = AtomicU64::new(1);
/// Whether [`Process::serve`] runs in this process (a stashed request must
/// then wake it).
static SERVING: AtomicBool = AtomicBool::new(false);
/// Set by [`stop`]: the serving loop returns after the current step.
static STOP: AtomicBool = AtomicBool::new(false);

fn inbox() -> MutexGuard<'static, Option<Inbox>> {
    lock(&INBOX)
}

fn with_inbox<T>(f: impl FnOnce(&mut Inbox) -> T) -> T {
    let mut g = inbox();
    f(g.get_or_insert_with(|| Inbox {
        requests: VecDeque::new(),
        waiting: HashSet::new(),
        replies: HashMap::new(),
    }))
}

/// Keeps a request that a caller took off the mailbox for the serving
/// loop, or refuses it (`EAGAIN`) once [`MAX_STASHED`] wait.
fn stash_request(from: PidD, m: Vec<u8>) {
    let refused = with_inbox(|ib| {
        if ib.requests.len() >= MAX_STASHED {
            Some(m)
        } else {
            ib.requests.push_back((from, m));
            None
        }
    });
    if let Some(m) = refused {
        if let Some(Msg::Request { id, .. }) = decode(&m) {
            let _ = pid::send(from, &encode_reply(id, libc::EAGAIN, &[]), pid::DIPC_NOWAIT);
        }
        return;
    }
    if SERVING.load(Ordering::Acquire) {
        // The serving loop may sleep in msgrcv on another thread: a message
        // of our own wakes it to look at the stash.
        if let (Some(me), Some(mb)) = (pid::current(), pid::mailbox()) {
            let _ = procs::mailbox_send(mb, me, &header(WAKE, 0, 0), libc::IPC_NOWAIT);
        }
    }
}

/// Files a message a caller took off the mailbox while waiting for
/// `mine`: returns the reply if it is that call's.
fn file(from: PidD, m: Vec<u8>, mine: u64) -> Option<(i32, Vec<u8>)> {
    match decode(&m) {
        Some(Msg::Reply { id, status, output }) => {
            if id == mine {
                return Some((status, output.to_vec()));
            }
            let output = output.to_vec();
            with_inbox(|ib| {
                // Another thread's reply; one nobody waits for is late
                // (its call gave up) and goes.
                if ib.waiting.contains(&id) {
                    ib.replies.insert(id, (status, output));
                }
            });
            None
        }
        Some(Msg::Request { .. }) => {
            stash_request(from, m);
            None
        }
        Some(Msg::Wake) => None,
        None => {
            log::debug!("dipc: a non-call message from pid_d {from} dropped while calling it");
            None
        }
    }
}

/// Marks a call as waiting for its reply; forgets it when dropped.
struct Waiting(u64);

impl Waiting {
    fn new() -> Waiting {
        let id = NEXT_CALL.fetch_add(1, Ordering::Relaxed);
        with_inbox(|ib| ib.waiting.insert(id));
        Waiting(id)
    }
    fn take_reply(&self) -> Option<(i32, Vec<u8>)> {
        with_inbox(|ib| ib.replies.remove(&self.0))
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        with_inbox(|ib| {
            ib.waiting.remove(&self.0);
            ib.replies.remove(&self.0);
        });
    }
}

// ---------------------------------------------------------------- calls

/// Sleeps `d`; `EINTR` if a signal handler ran meanwhile.
fn nap(d: Duration) -> io::Result<()> {
    let ts = timespec(d);
    // SAFETY: a valid timespec; the remainder is not wanted.
    if unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) } < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINTR) {
            return Err(e);
        }
    }
    Ok(())
}

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

/// Holds the calling thread's signals (all but the synchronous ones a
/// fault raises) while a call waits, and lets them in only while it
/// sleeps (`ppoll` with the thread's own mask, atomically). A signal that
/// comes while the caller is awake (checking its mailbox, asking the
/// referee) then waits for the next sleep and ends the call with `EINTR`,
/// instead of running its handler where no one notices and leaving the
/// call waiting.
struct Signals {
    old: libc::sigset_t,
}

impl Signals {
    fn hold() -> Signals {
        // SAFETY: sigset_t is plain data, filled by sigfillset; the
        // thread's old mask is written to `old`.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            // A fault must reach its handler at once (dipc's own for
            // distributed memory among them), or the kernel kills the
            // process.
            for s in [
                libc::SIGSEGV,
                libc::SIGBUS,
                libc::SIGFPE,
                libc::SIGILL,
                libc::SIGTRAP,
            ] {
                libc::sigdelset(&mut all, s);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
            Signals { old }
        }
    }

    /// Sleeps `d` with the thread's own signals let in: `EINTR` if one
    /// came, now or since [`Signals::hold`].
    fn sleep(&self, d: Duration) -> io::Result<()> {
        let ts = timespec(d);
        // SAFETY: no descriptors, a valid timespec and signal mask.
        if unsafe { libc::ppoll(std::ptr::null_mut(), 0, &ts, &self.old) } < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                return Err(e);
            }
        }
        Ok(())
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        // A signal still held is delivered here, as one that came just
        // after the call.
        // SAFETY: restores the mask saved by `hold`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

/// The wait of one call: its deadline, the callee's liveness checks and
/// the polling pace.
struct Pace {
    signals: Signals,
    /// When the request went (the start of the call until then).
    sent: Instant,
    /// How long the caller checks without sleeping once the request went.
    spin: Duration,
    deadline: Option<Instant>,
    next_check: Instant,
    nap: Duration,
}

impl Pace {
    fn new(timeout: Option<Duration>) -> Pace {
        let start = Instant::now();
        Pace {
            signals: Signals::hold(),
            sent: start,
            // Without a configuration no call gets this far (the send
            // fails first); no spin is the safe choice then.
            spin: state::config().map_or(Duration::ZERO, |c| c.library.spin),
            deadline: timeout.map(|t| start + t),
            next_check: start + LIVENESS,
            nap: NAP_MIN,
        }
    }

    /// The request went: the spin for the reply starts now.
    fn request_sent(&mut self) {
        self.sent = Instant::now();
    }

    /// Waits a little; errors end the call: `ETIMEDOUT` past the caller's
    /// time-out, `ECONNRESET` once `q` is no longer registered, `EINTR`.
    fn pause(&mut self, q: PidD) -> io::Result<()> {
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
        if now.duration_since(self.sent) < self.spin {
            std::hint::spin_loop();
            return Ok(());
        }
        let mut d = self.nap;
        if let Some(dl) = self.deadline {
            d = d.min(dl.saturating_duration_since(now));
        }
        self.signals.sleep(d)?;
        self.nap = (self.nap * 2).min(NAP_MAX);
        Ok(())
    }
}

/// The largest input a call may carry with `proc_name`: the mailbox's
/// message size limit (this host's `msgmax`) less the request's header.
pub fn max_input(proc_name: &str) -> usize {
    sysv::msgmax().saturating_sub(REQUEST_HEADER + proc_name.len())
}

/// The largest output a procedure may return.
pub fn max_output() -> usize {
    sysv::msgmax().saturating_sub(REPLY_HEADER)
}

/// `call Q.R(input, #output)`: runs procedure `proc_name` of process `q`
/// with `input` and returns its output (at most `max_out` bytes). The
/// same on this host or another. The caller must be registered: the reply
/// comes to its mailbox.
///
/// Errors (`io::Error` with the errno):
/// `ESRCH` no such process; `ENOSYS` `q` has no procedure of that name;
/// `EDEADLK` a call of oneself; `EMSGSIZE` the input is longer than
/// [`max_input`]; `E2BIG` the output was longer than `max_out` (the
/// procedure ran); `ECONNRESET` `q`'s registration ended (it exited,
/// unregistered, or its host was lost) before it replied; `ETIMEDOUT`
/// `timeout` passed; `EINTR` a signal came while waiting (the thread
/// holds its signals while awake and lets them in while it sleeps, so
/// none goes unnoticed); `EINVAL`
/// a bad procedure name; `ENOTCONN` the caller is not registered. After
/// `ECONNRESET`, `ETIMEDOUT` or `EINTR` the procedure may have run or may
/// still run (once at most); its reply is then dropped. Any other errno is
/// the procedure's own answer.
pub fn call(
    q: PidD,
    proc_name: &str,
    input: &[u8],
    max_out: usize,
    timeout: Option<Duration>,
) -> io::Result<Vec<u8>> {
    if proc_name.is_empty() || proc_name.len() > MAX_PROC_NAME {
        return Err(errno_err(libc::EINVAL));
    }
    let me = pid::current().ok_or_else(|| errno_err(libc::ENOTCONN))?;
    if q == me {
        return Err(errno_err(libc::EDEADLK));
    }
    if q <= 0 {
        return Err(errno_err(libc::ESRCH));
    }
    if input.len() > max_input(proc_name) {
        return Err(errno_err(libc::EMSGSIZE));
    }
    let max_out = max_out.min(max_output());
    let w = Waiting::new();
    let req = encode_request(w.0, max_out, proc_name, input);
    let mut pace = Pace::new(timeout);
    // The request is sent once; a full mailbox is waited out within the
    // same bounds as the reply.
    loop {
        match pid::send(q, &req, pid::DIPC_NOWAIT) {
            Ok(()) => break,
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => pace.pause(q)?,
            Err(e) => return Err(e),
        }
    }
    pace.request_sent();
    let size = sysv::msgmax();
    let (status, output) = loop {
        if let Some(r) = w.take_reply() {
            break r;
        }
        match pid::receive(q, size, pid::DIPC_NOWAIT) {
            Ok((from, m)) => {
                if let Some(r) = file(from, m, w.0) {
                    break r;
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => pace.pause(q)?,
            Err(e) => return Err(e),
        }
    };
    match status {
        0 if output.len() <= max_out => Ok(output),
        0 => Err(errno_err(libc::E2BIG)),
        e => Err(errno_err(e)),
    }
}

/// Ends [`Process::serve`] after the current step (called from a
/// procedure or the initial statements).
pub fn stop() {
    STOP.store(true, Ordering::Release);
}

// ---------------------------------------------------------------- serving

/// One call as the procedure sees it.
#[derive(Debug)]
pub struct Request<'a> {
    /// The caller's pid_d (vouched: the type its dipc gave the message).
    pub caller: PidD,
    /// The uid the caller registered with (from the referee's record).
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
    caller: PidD,
    uid: u32,
    id: u64,
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
    /// one step at a time. Returns the state when [`stop`] was called or
    /// the registration ended (`uregist`); an error if the process is not
    /// registered (`ENOTCONN`), a procedure name is bad (`EINVAL`), or its
    /// mailbox fails otherwise.
    pub fn serve(mut self) -> io::Result<S> {
        pid::current().ok_or_else(|| errno_err(libc::ENOTCONN))?;
        if self
            .names
            .iter()
            .any(|n| n.is_empty() || n.len() > MAX_PROC_NAME)
        {
            return Err(errno_err(libc::EINVAL));
        }
        STOP.store(false, Ordering::Release);
        SERVING.store(true, Ordering::Release);
        let r = self.run();
        SERVING.store(false, Ordering::Release);
        r.map(|()| self.state)
    }

    fn run(&mut self) -> io::Result<()> {
        let mut pending: VecDeque<Pending> = VecDeque::new();
        let mut initial_phase = 0u32;
        let mut uids = Uids::default();
        let size = sysv::msgmax();
        loop {
            // Steps until nothing can continue: after each, the initial
            // statements, then the postponed requests oldest first.
            'steps: loop {
                if STOP.load(Ordering::Acquire) {
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
                        reply(p.caller, p.id, status, &output);
                    }
                    continue 'steps;
                }
                break;
            }
            // Nothing can continue: take the next request.
            let (from, m) = match next_message(size) {
                Ok(x) => x,
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    // The mailbox went with the registration.
                    Some(libc::EIDRM | libc::EINVAL | libc::ENOTCONN) => return Ok(()),
                    _ => return Err(e),
                },
            };
            let Some(Msg::Request {
                id,
                max_out,
                proc_name,
                input,
            }) = decode(&m)
            else {
                // Replies no call waits for (their caller gave up), wake-ups,
                // and messages that are not calls: a serving process's
                // mailbox is its call queue.
                continue;
            };
            let Some(proc_index) = self.names.iter().position(|n| n == proc_name) else {
                reply(from, id, libc::ENOSYS, &[]);
                continue;
            };
            let uid = match uids.get(from) {
                Ok(u) => u,
                // The caller is gone: nobody waits for the answer.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => continue,
                Err(e) => {
                    reply(from, id, e.raw_os_error().unwrap_or(libc::EIO), &[]);
                    continue;
                }
            };
            if pending.len() >= MAX_PENDING {
                // Callers that gave up leave their requests postponed;
                // they must not grow without bound.
                reply(from, id, libc::EAGAIN, &[]);
                continue;
            }
            pending.push_back(Pending {
                caller: from,
                uid,
                id,
                proc_index,
                input: input.to_vec(),
                max_out: max_out.min(max_output()),
                phase: 0,
            });
        }
    }
}

/// Sends a reply. Anyone may fill a caller's mailbox, so a full one is
/// waited on for `request_ms` at most and the reply then given up (the
/// caller waits until its own time-out): the server goes on serving.
fn reply(to: PidD, id: u64, status: i32, output: &[u8]) {
    let m = encode_reply(id, status, output);
    let limit = state::config().map_or(Duration::from_secs(10), |c| c.timeouts.request);
    let start = Instant::now();
    let mut pause = NAP_MIN;
    loop {
        match pid::send(to, &m, pid::DIPC_NOWAIT) {
            Ok(()) => return,
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && start.elapsed() < limit => {
                // A signal only shortens the pause.
                let _ = nap(pause);
                pause = (pause * 2).min(REPLY_NAP_MAX);
            }
            Err(e) => {
                log::warn!("dipc: reply to pid_d {to} given up: {e}");
                return;
            }
        }
    }
}

/// The next message for the serving loop: a stashed request first, else
/// the mailbox (blocking).
fn next_message(size: usize) -> io::Result<(PidD, Vec<u8>)> {
    if let Some(r) = with_inbox(|ib| ib.requests.pop_front()) {
        return Ok(r);
    }
    pid::receive(0, size, 0)
}

/// The uid each caller registered with; a pid_d names one registration.
#[derive(Default)]
struct Uids(HashMap<PidD, u32>);

impl Uids {
    fn get(&mut self, p: PidD) -> io::Result<u32> {
        if let Some(u) = self.0.get(&p) {
            return Ok(*u);
        }
        let uid = pid::lookup(p)?.uid;
        if self.0.len() >= MAX_UIDS {
            self.0.clear();
        }
        self.0.insert(p, uid);
        Ok(uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_decode_as_encoded() {
        let r = encode_request(7, 100, "Send", b"abc");
        assert_eq!(
            decode(&r),
            Some(Msg::Request {
                id: 7,
                max_out: 100,
                proc_name: "Send",
                input: b"abc"
            })
        );
        let r = encode_reply(9, libc::ENOSYS, b"");
        assert_eq!(
            decode(&r),
            Some(Msg::Reply {
                id: 9,
                status: libc::ENOSYS,
                output: b""
            })
        );
        assert_eq!(decode(&header(WAKE, 0, 0)), Some(Msg::Wake));
        // Anything else is not a call.
        for bad in [
            &b"hello"[..],
            &b"dPc1\x01"[..],
            &encode_request(1, 1, "Send", b"")[..HEADER + 6],
            &b"dPc1\x09\0\0\0\0\0\0\0\0"[..],
        ] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
        // A name length past the body.
        let mut r = encode_request(1, 1, "S", b"");
        r[HEADER + 4] = 9;
        assert_eq!(decode(&r), None);
    }
}
