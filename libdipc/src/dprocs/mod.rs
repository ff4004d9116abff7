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
//! # Calls travel on links
//!
//! Every registered process listens for calls on an endpoint of its own
//! (made at `regist`, see `dipc_common::calls`). A call `call Q.R(in,
//! #out)` is two frames on a *link* from the caller to Q: the request and
//! the reply. A link to a process of this host is a Unix connection to
//! its endpoint; to a process of another host it is one of the caller's
//! sessions, which Q's worker passes on to Q, so that Q reads the request
//! and answers on the very connection (one network round trip a call, no
//! daemon on the way). Links are kept for the next calls (see `link`).
//!
//! Q knows who calls from the kernel: the credentials of the connection,
//! checked with its dipcd (see `serve`). Nothing resends a request, so a
//! procedure runs at most once per call; a caller that gives up (time-out,
//! signal) closes its link, and Q drops the call if it has not run it yet.
//! A caller notices at once that Q exited (its links close); a lost host
//! through the referee, whose records of that host's processes end when it
//! marks the host down (`heartbeat_timeout_ms`): a waiting caller asks for
//! Q's record every [`LIVENESS`].
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

mod link;
mod serve;

pub use serve::{Answer, Process, Request, Step, MAX_LINKS};

use crate::pid::{self, client_err, errno_err, PidD};
use crate::state;
use crate::ClientError;
use dipc_common::calls;
use dipc_common::sysv;
use dipc_common::wire::{FromCallee, Message, PidRecord};
use link::{Link, Pace};
use std::io;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The longest procedure name, in bytes.
pub const MAX_PROC_NAME: usize = 64;
/// How often a waiting caller checks that the callee is still registered.
pub const LIVENESS: Duration = Duration::from_millis(250);
/// What a request or a reply adds to its input or output, at most: the
/// limits below keep both inside a mailbox message, as a `dipc_send` is,
/// so that postponed requests cost a bounded amount of memory.
const CALL_HEADER: usize = 18;

fn lock<T>(m: &'static Mutex<T>) -> MutexGuard<'static, T> {
    // Every update is a single assignment.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Set by [`stop`]: the serving loop returns after the current step.
static STOP: AtomicBool = AtomicBool::new(false);

fn stop_requested() -> bool {
    STOP.load(Ordering::Acquire)
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

// ---------------------------------------------------------------- endpoint

/// Where this process takes calls: made at `regist`, for that
/// registration.
pub(crate) struct Endpoint {
    /// The process it belongs to: a forked child has none.
    owner: u32,
    listener: UnixListener,
}

static ENDPOINT: Mutex<Option<Arc<Endpoint>>> = Mutex::new(None);

fn endpoint() -> Option<Arc<Endpoint>> {
    let me = std::process::id();
    lock(&ENDPOINT).as_ref().filter(|e| e.owner == me).cloned()
}

/// Opens the endpoint of the registration `pid_d` and tells dipcd where
/// it is (called by `regist`). Calls wait there until the process serves.
pub(crate) fn open_endpoint(pid_d: PidD) -> io::Result<()> {
    let (listener, name) = calls::listen(pid_d)?;
    match state::control(&Message::CallEndpoint { name }) {
        Ok(Message::Done { .. }) => {}
        Ok(_) => return Err(errno_err(libc::EPROTO)),
        Err(e) => return Err(client_err(e)),
    }
    *lock(&ENDPOINT) = Some(Arc::new(Endpoint {
        owner: std::process::id(),
        listener,
    }));
    Ok(())
}

/// Closes the endpoint with the registration (called by `uregist`): links
/// not yet taken close, and their callers get `ECONNRESET`.
pub(crate) fn close_endpoint() {
    *lock(&ENDPOINT) = None;
}

// ---------------------------------------------------------------- calls

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

/// Holds the calling thread's signals (all but the synchronous ones a
/// fault raises) while a call waits, and lets them in only while it
/// sleeps (`ppoll` with the thread's own mask, atomically). A signal that
/// comes while the caller is awake (opening a link, asking the referee)
/// then waits for the next sleep and ends the call with `EINTR`, instead
/// of running its handler where no one notices and leaving the call
/// waiting.
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

    /// Sleeps until `fd` is readable or `d` has passed, with the thread's
    /// own signals let in: `EINTR` if one came, now or since
    /// [`Signals::hold`].
    fn wait_readable(&self, fd: i32, d: Duration) -> io::Result<()> {
        let ts = timespec(d);
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, a valid timespec and signal mask.
        if unsafe { libc::ppoll(&mut p, 1, &ts, &self.old) } < 0 {
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

/// The largest input a call may carry with `proc_name`: this host's
/// `msgmax` less the call's header and the name.
pub fn max_input(proc_name: &str) -> usize {
    sysv::msgmax().saturating_sub(CALL_HEADER + proc_name.len())
}

/// The largest output a procedure may return: this host's `msgmax` less
/// the reply's header.
pub fn max_output() -> usize {
    sysv::msgmax().saturating_sub(CALL_HEADER)
}

/// `call Q.R(input, #output)`: runs procedure `proc_name` of process `q`
/// with `input` and returns its output (at most `max_out` bytes). The
/// same on this host or another. The caller must be registered: a callee
/// knows its callers by their registrations.
///
/// Errors (`io::Error` with the errno):
/// `ESRCH` no such process; `ENOSYS` `q` has no procedure of that name;
/// `EDEADLK` a call of oneself; `EMSGSIZE` the input is longer than
/// [`max_input`]; `E2BIG` the output was longer than `max_out` (the
/// procedure ran); `ECONNRESET` `q` exited, unregistered, or its host was
/// lost before it replied; `ETIMEDOUT` `timeout` passed; `EINTR` a signal
/// came while waiting (the thread holds its signals while awake and lets
/// them in while it sleeps, so none goes unnoticed); `EAGAIN` `q` has too
/// many calls waiting (postponed, or not yet taken); `EINVAL` a bad
/// procedure name; `ENOTCONN` the caller is not registered. After
/// `ECONNRESET`, `ETIMEDOUT` or `EINTR` the procedure may have run (once at
/// most) or not; if `q` had not begun it, it never will. Any other errno is
/// the procedure's own answer, or the network's as for other remote calls.
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
    let req = Message::CallRequest {
        proc_name: proc_name.to_owned(),
        max_out: u32::try_from(max_out).unwrap_or(u32::MAX),
        input: input.to_vec(),
    };
    let mut pace = Pace::new(timeout);
    let rec = pid::route(q)?;
    let mut link = match Link::take(q) {
        Some(l) => l,
        None => open(q, me, &rec, &mut pace)?,
    };
    let (status, output) = match call_on(&mut link, q, &req, &mut pace) {
        // q closes only links with no call read (idle ones, when it has
        // `MAX_LINKS`), unless it exits: a call that met a closed link
        // never ran, and goes again on a new one. If q has exited, no new
        // link opens.
        Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) && still_there(q, &rec) => {
            link = open(q, me, &rec, &mut pace).map_err(|e| match e.raw_os_error() {
                Some(libc::ESRCH) => errno_err(libc::ECONNRESET),
                _ => e,
            })?;
            call_on(&mut link, q, &req, &mut pace)?
        }
        Err(e) => {
            if e.raw_os_error() == Some(libc::ECONNRESET) {
                // Gone, or moved to another host (its links end with the
                // old process): the next call looks it up afresh.
                pid::forget_route(q);
            }
            return Err(e);
        }
        Ok(r) => r,
    };
    link.put_back(q);
    match status {
        0 if output.len() <= max_out => Ok(output),
        0 => Err(errno_err(libc::E2BIG)),
        e => Err(errno_err(e)),
    }
}

/// Whether `q` still runs where `rec` says, as the referee has it now: a
/// closed link is then one that `q` closed, not a sign that it is gone.
fn still_there(q: PidD, rec: &PidRecord) -> bool {
    pid::lookup(q).is_ok_and(|r| r.host == rec.host && r.pid == rec.pid)
}

/// A new link to `q`, which runs as `rec` says (a kept route: if `q` is
/// not there any more but has moved to another host, the link opens
/// there).
fn open(q: PidD, me: PidD, rec: &PidRecord, pace: &mut Pace) -> io::Result<Link> {
    match Link::open(q, me, rec, pace) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ESRCH | libc::ECONNREFUSED)) => {
            pid::forget_route(q);
            match pid::route(q) {
                Ok(now) if now.host != rec.host || now.pid != rec.pid => {
                    Link::open(q, me, &now, pace).map_err(gone_as_reset)
                }
                _ => Err(gone_as_reset(e)),
            }
        }
        r => r.map_err(gone_as_reset),
    }
}

/// One call on `link`: the status and output of the reply. A link that
/// failed in any way is dropped by the caller: closing it tells q to
/// forget the call if it has not run it.
fn call_on(link: &mut Link, q: PidD, req: &Message, pace: &mut Pace) -> io::Result<(i32, Vec<u8>)> {
    let id = link.send(req).map_err(gone_as_reset)?;
    pace.request_sent();
    match link.wait(q, pace)? {
        (rid, FromCallee::CallReply { status, output }) if rid == id => Ok((status, output)),
        // The reply to another call, or an answer that is no reply.
        (_, FromCallee::CallReply { .. } | FromCallee::Done { .. } | FromCallee::Error { .. }) => {
            Err(errno_err(libc::EPROTO))
        }
    }
}

/// A process that had just exited when its link was opened shows as a
/// refused or reset connection: to the caller it is gone.
fn gone_as_reset(e: io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(libc::EPIPE) => errno_err(libc::ECONNRESET),
        _ => e,
    }
}

/// Ends [`Process::serve`] after the current step (called from a
/// procedure or the initial statements).
pub fn stop() {
    STOP.store(true, Ordering::Release);
}
