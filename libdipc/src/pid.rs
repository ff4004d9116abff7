//! Cluster-wide process ids, signals between hosts, and send/receive
//! messaging addressed by process id.
//!
//! A process joins with [`regist`] and gets a `pid_d`, unique in the
//! cluster and never reused; the referee records `{pid_d, host, pid}`.
//! [`kill_d`] signals a pid_d wherever it runs, with `kill(2)`'s rules
//! (the signal is sent as the caller, through a pidfd of the exact process
//! that registered, so a recycled pid is never hit). A registration ends
//! with [`uregist`] or when the process exits, however it exits (its dipcd
//! watches it through a pidfd).
//!
//! Every registered process has a *mailbox*: a private System V queue it
//! creates at `regist` (mode 0622: anyone may put a message in, only the
//! owner takes them out), with the sender's pid_d as each message's type.
//! [`send`] puts a message there (a plain `msgsnd` if the destination runs
//! on this host, else the worker on its host does it for the caller, typed
//! with the pid_d the caller's dipcd vouches for); [`receive`] is a
//! `msgrcv` on the own mailbox, with the sender's pid_d (or 0, anyone) as
//! the type. The kernel queue keeps each sender's messages in order, and
//! every send is tried once, so messages from one sender arrive in order
//! and never twice. When a process's registration ends its dipcd removes
//! the mailbox, so a sender blocked on a full one gets `ESRCH`.
//!
//! Errors are `io::Error`s carrying the `errno` (`raw_os_error`):
//!
//! | errno | meaning |
//! |---|---|
//! | `ESRCH` | no such pid_d: never registered, unregistered, or exited |
//! | `EPERM` | `kill_d`: the caller may not signal it; `uregist`: not the caller's registration |
//! | `EINVAL` | a bad signal number, flag, or source pid_d |
//! | `ENOTCONN` | the caller is not registered (sending, receiving, polling), or dipcd is not running or has not joined |
//! | `EAGAIN` | `DIPC_NOWAIT`: the mailbox is full (send) or holds no message (receive) |
//! | `EMSGSIZE` | the message is longer than the destination kernel's `msgmax` |
//! | `E2BIG` | receive: the buffer is smaller than the next message (which stays) |
//! | `EINTR` | a signal interrupted a blocking call (nothing was sent or taken) |
//! | `EIDRM` | receive: the mailbox was removed meanwhile (the registration ended) |
//!
//! A lost destination host adds `ETIMEDOUT`, `ECONNRESET`,
//! `ECONNREFUSED` or `EHOSTUNREACH`, as for remote queue calls.

use crate::dist::client_errno;
use crate::state;
use crate::ClientError;
use dipc_common::procs;
use dipc_common::sysv;
use dipc_common::wire::{Message, PidRecord};
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A cluster-wide process id.
pub type PidD = i64;

/// The flag that makes [`send`] and [`receive`] return `EAGAIN` instead of
/// waiting (the same value as `IPC_NOWAIT`).
pub const DIPC_NOWAIT: i32 = libc::IPC_NOWAIT;

/// This process's registration.
#[derive(Debug, Clone, Copy)]
struct Me {
    /// The process it belongs to: a forked child is not registered.
    pid: u32,
    pid_d: PidD,
    mailbox: i32,
}

static ME: Mutex<Option<Me>> = Mutex::new(None);

/// Where recent destinations of [`send`] live. A record stays valid as long
/// as its registration, and a send to an ended one fails with `ESRCH`
/// (the mailbox is gone), which drops the entry. `kill_d` never uses it: a
/// process that unregistered but lives on must not get signals.
static ROUTES: Mutex<Option<HashMap<PidD, PidRecord>>> = Mutex::new(None);
/// Entries beyond this clear the cache, so it cannot grow without bound.
const MAX_ROUTES: usize = 4096;

/// Polling interval bounds of [`poll`].
const POLL_MIN: Duration = Duration::from_micros(50);
const POLL_MAX: Duration = Duration::from_millis(1);

fn lock<T>(m: &'static Mutex<T>) -> MutexGuard<'static, T> {
    // Every update is a single assignment or insert: a panic elsewhere
    // cannot leave the data half-changed.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn errno_err(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

pub(crate) fn client_err(e: crate::ClientError) -> io::Error {
    errno_err(client_errno(e))
}

/// This process's registration, if it has one (not its parent's).
fn me() -> Option<Me> {
    let pid = std::process::id();
    lock(&ME).filter(|m| m.pid == pid)
}

fn registered() -> io::Result<Me> {
    me().ok_or_else(|| errno_err(libc::ENOTCONN))
}

/// A move re-pointed this process's registration at a new mailbox (or,
/// with `None`, handed it to the process that continues this one).
pub(crate) fn set_mailbox(mailbox: Option<i32>) {
    let pid = std::process::id();
    let mut g = lock(&ME);
    match mailbox {
        Some(mb) => {
            if let Some(m) = g.as_mut().filter(|m| m.pid == pid) {
                m.mailbox = mb;
            }
        }
        None => *g = None,
    }
}

/// How many times a send or `kill_d` follows its destination to where it
/// moved (each time the referee names another place) before it gives up.
const MAX_FOLLOW: usize = 16;

/// The calling process's mailbox queue, if it is registered.
pub(crate) fn mailbox() -> Option<i32> {
    me().map(|m| m.mailbox)
}

/// The calling process's pid_d, if it is registered.
pub fn current() -> Option<PidD> {
    me().map(|m| m.pid_d)
}

/// Joins the cluster's process table; returns this process's pid_d. A
/// process that is registered already gets its pid_d again. The mailbox
/// is created here.
///
/// A registration this process remembers is checked with the referee
/// first: if it ended without this process's doing (its host's dipcd
/// stopped), the process registers anew.
pub fn regist() -> io::Result<PidD> {
    let pid = std::process::id();
    let mut g = lock(&ME);
    if let Some(m) = g.filter(|m| m.pid == pid) {
        match lookup(m.pid_d) {
            Ok(r) if r.pid as u32 == pid && r.host == this_host()? => return Ok(m.pid_d),
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => return Err(e),
        }
        // Gone (its mailbox went with it: dipcd removes it whenever a
        // registration ends).
        *g = None;
    } else if let Some((pid_d, mailbox)) = crate::migrate::arrive() {
        // This process continues one that moved here: it has taken that
        // process's pid_d over.
        *g = Some(Me {
            pid,
            pid_d,
            mailbox,
        });
        // Calls reach it here from now on (its links ended with the old
        // process).
        drop(g);
        if let Err(e) = crate::dprocs::open_endpoint(pid_d) {
            log::warn!("dipc: pid_d {pid_d} moved here but cannot take calls: {e}");
        }
        return Ok(pid_d);
    }
    // SAFETY: msgget takes plain integers.
    let mailbox =
        unsafe { dipc_common::sysv::raw::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o622) };
    if mailbox < 0 {
        return Err(io::Error::last_os_error());
    }
    match state::control(&Message::Register { mailbox }) {
        // A pid_d is positive (the referee's counter starts at 1 and never
        // wraps); anything else is not one to hand to the program.
        Ok(Message::Registered { pid_d, mailbox: m }) if pid_d > 0 => {
            if m != mailbox {
                // dipcd knew this process already (with that mailbox).
                let _ = sysv::msgctl_rmid(mailbox);
            }
            *g = Some(Me {
                pid,
                pid_d,
                mailbox: m,
            });
            // Calls to it wait at its endpoint until it serves.
            if let Err(e) = crate::dprocs::open_endpoint(pid_d) {
                drop(g);
                log::warn!("dipc: pid_d {pid_d} cannot take calls: {e}");
                let _ = uregist(pid_d);
                return Err(e);
            }
            Ok(pid_d)
        }
        other => {
            let _ = sysv::msgctl_rmid(mailbox);
            match other {
                Ok(_) => Err(errno_err(libc::EPROTO)),
                Err(e) => Err(client_err(e)),
            }
        }
    }
}

/// Leaves the process table. The referee removes the record only if
/// `pid_d` is this very process's (host and pid match): else `EPERM` (or
/// `ESRCH` for an unknown pid_d), and nothing is removed. The mailbox goes
/// with the registration.
pub fn uregist(pid_d: PidD) -> io::Result<()> {
    let pid = std::process::id();
    let mut g = lock(&ME);
    match state::control(&Message::Unregister { pid_d, pid: 0 }) {
        Ok(Message::Done { .. }) => {
            if g.is_some_and(|m| m.pid == pid && m.pid_d == pid_d) {
                *g = None;
                crate::dprocs::close_endpoint();
            }
            Ok(())
        }
        Ok(_) => Err(errno_err(libc::EPROTO)),
        Err(e) => Err(client_err(e)),
    }
}

/// Where `pid_d` runs now, from the referee.
pub fn lookup(pid_d: PidD) -> io::Result<PidRecord> {
    if pid_d <= 0 {
        return Err(errno_err(libc::ESRCH));
    }
    match state::control(&Message::PidLookup { pid_d }) {
        Ok(Message::PidInfo { rec }) if rec.pid_d == pid_d => Ok(rec),
        Ok(_) => Err(errno_err(libc::EPROTO)),
        Err(e) => Err(client_err(e)),
    }
}

/// Every registered process of the cluster.
pub fn list() -> io::Result<Vec<PidRecord>> {
    let mut c = state::control_conn().map_err(client_err)?;
    list_with(|m| c.call(m)).map_err(client_err)
}

/// Every registered process of the cluster, asked through `call` a page at
/// a time (the referee answers in pages that fit a frame, so a list of any
/// length arrives).
pub fn list_with(
    mut call: impl FnMut(&Message) -> Result<Message, ClientError>,
) -> Result<Vec<PidRecord>, ClientError> {
    let mut all: Vec<PidRecord> = Vec::new();
    loop {
        let after = all.last().map_or(0, |r| r.pid_d);
        match call(&Message::ListPids { after })? {
            Message::Pids { pids, more } => {
                let progressed = !pids.is_empty();
                all.extend(pids);
                if !more || !progressed {
                    return Ok(all);
                }
            }
            other => return Err(ClientError::Unexpected(other.kind().name())),
        }
    }
}

fn this_host() -> io::Result<std::net::SocketAddr> {
    Ok(state::config().map_err(client_err)?.front_end_addr())
}

fn done(r: Result<Message, crate::ClientError>) -> io::Result<()> {
    match r {
        Ok(Message::Done { .. }) => Ok(()),
        Ok(_) => Err(errno_err(libc::EPROTO)),
        Err(e) => Err(client_err(e)),
    }
}

/// Sends signal `sig` to the process `pid_d`, on whatever host it runs,
/// with `kill(2)`'s rules: `EPERM` unless the caller's uid may signal it,
/// `ESRCH` if it is not registered (or has exited); signal 0 only checks.
/// Real-time signals are queued. The caller need not be registered.
pub fn kill_d(pid_d: PidD, sig: i32) -> io::Result<()> {
    if !(0..=procs::MAX_SIGNAL).contains(&sig) {
        return Err(errno_err(libc::EINVAL));
    }
    // Looked up every time: a cached location could name a process that
    // has since left the table but still runs.
    let mut rec = lookup(pid_d)?;
    for _ in 0..MAX_FOLLOW {
        let r = signal_at(&rec, sig);
        match &r {
            // Gone from where the record said: if the process moved, the
            // referee now names its new place (see `migrate`).
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                let now = lookup(pid_d)?;
                if (now.host, now.pid, now.starttime) == (rec.host, rec.pid, rec.starttime) {
                    return r;
                }
                rec = now;
            }
            _ => return r,
        }
    }
    Err(errno_err(libc::ESRCH))
}

fn signal_at(rec: &PidRecord, sig: i32) -> io::Result<()> {
    if rec.host == this_host()? {
        return procs::signal(rec.pid, rec.starttime, sig).map_err(errno_err);
    }
    let req = Message::KillD {
        pid: rec.pid,
        starttime: rec.starttime,
        sig,
    };
    done(state::remote(rec.host, &req, false))
}

pub(crate) fn route(dest: PidD) -> io::Result<PidRecord> {
    if let Some(r) = lock(&ROUTES).as_ref().and_then(|m| m.get(&dest)) {
        return Ok(*r);
    }
    let rec = lookup(dest)?;
    let mut g = lock(&ROUTES);
    let m = g.get_or_insert_with(HashMap::new);
    if m.len() >= MAX_ROUTES {
        m.clear();
    }
    m.insert(dest, rec);
    Ok(rec)
}

pub(crate) fn forget_route(dest: PidD) {
    if let Some(m) = lock(&ROUTES).as_mut() {
        m.remove(&dest);
    }
}

/// Sends `data` to the mailbox of `dest`. Blocks while the mailbox is
/// full, unless `flags` has [`DIPC_NOWAIT`] (then `EAGAIN`); returns once
/// the message is in the mailbox. The caller must be registered
/// (`ENOTCONN`). `ESRCH` if `dest` is not registered, or its registration
/// ends while the send waits.
pub fn send(dest: PidD, data: &[u8], flags: i32) -> io::Result<()> {
    if flags & !DIPC_NOWAIT != 0 {
        return Err(errno_err(libc::EINVAL));
    }
    let me = registered()?;
    let max = state::config().map_err(client_err)?.max_frame as usize;
    if data.len() > max.saturating_sub(256) {
        // Longer than a frame may carry, hence than any msgmax here.
        return Err(errno_err(libc::EMSGSIZE));
    }
    let mut rec = route(dest)?;
    for _ in 0..MAX_FOLLOW {
        let r = send_at(&rec, me.pid_d, data, flags);
        match &r {
            Err(e) if matches!(e.raw_os_error(), Some(libc::ESRCH | libc::EINVAL)) => {
                forget_route(dest);
                // A destination that moved has a new mailbox, which the
                // referee names once its old one is gone (see `migrate`):
                // the message was not put in the old one, so it is sent
                // there now, once.
                let now = route(dest)?;
                if (now.host, now.mailbox) == (rec.host, rec.mailbox) {
                    forget_route(dest);
                    return r;
                }
                rec = now;
            }
            _ => return r,
        }
    }
    forget_route(dest);
    Err(errno_err(libc::ESRCH))
}

fn send_at(rec: &PidRecord, from: PidD, data: &[u8], flags: i32) -> io::Result<()> {
    if rec.host == this_host()? {
        procs::mailbox_send(rec.mailbox, from, data, flags).map_err(errno_err)
    } else {
        let req = Message::SendD {
            mailbox: rec.mailbox,
            data: data.to_vec(),
            flags,
        };
        done(state::remote_as(
            rec.host,
            &req,
            flags & DIPC_NOWAIT == 0,
            Some(from),
        ))
    }
}

/// Receives the first message in this process's mailbox from `src` (0:
/// from anyone), of at most `size` bytes; returns the sender's pid_d and
/// the text. Blocks until one arrives, unless `flags` has [`DIPC_NOWAIT`]
/// (then `EAGAIN`). A message longer than `size` stays in the mailbox
/// (`E2BIG`).
pub fn receive(src: PidD, size: usize, flags: i32) -> io::Result<(PidD, Vec<u8>)> {
    if flags & !DIPC_NOWAIT != 0 || src < 0 {
        return Err(errno_err(libc::EINVAL));
    }
    let me = registered()?;
    match sysv::msgrcv(me.mailbox, size as u64, src, flags) {
        Ok(m) => Ok(m),
        Err(libc::ENOMSG) => Err(errno_err(libc::EAGAIN)),
        Err(e) => Err(errno_err(e)),
    }
}

/// Whether a message is waiting in this process's mailbox, waiting up to
/// `timeout` for one (`None`: as long as it takes).
///
/// A System V queue cannot be waited on without taking a message off it,
/// so this looks at the mailbox's message count (`IPC_STAT`) every 50 µs
/// at first, backing off to every 1 ms: a message is noticed within about
/// 1 ms of its arrival. A signal handler that runs meanwhile ends the wait
/// with `EINTR`, as for `poll(2)`.
pub fn poll(timeout: Option<Duration>) -> io::Result<bool> {
    let me = registered()?;
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut pause = POLL_MIN;
    loop {
        let info = sysv::msgctl_stat(me.mailbox).map_err(errno_err)?;
        if info.qnum > 0 {
            return Ok(true);
        }
        let now = Instant::now();
        let mut nap = pause;
        if let Some(d) = deadline {
            if now >= d {
                return Ok(false);
            }
            nap = nap.min(d - now);
        }
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: nap.as_nanos() as libc::c_long,
        };
        // SAFETY: a valid timespec; the remainder is not wanted.
        if unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) } < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                return Err(e);
            }
        }
        pause = (pause * 2).min(POLL_MAX);
    }
}

/// Counts handler threads running, so that at most `max` do at once.
struct Permits {
    running: Mutex<usize>,
    freed: Condvar,
}

impl Permits {
    fn acquire(&self, max: usize) {
        let mut n = self.running.lock().unwrap_or_else(|p| p.into_inner());
        while *n >= max {
            n = self.freed.wait(n).unwrap_or_else(|p| p.into_inner());
        }
        *n += 1;
    }

    fn release(&self) {
        let mut n = self.running.lock().unwrap_or_else(|p| p.into_inner());
        *n -= 1;
        self.freed.notify_all();
    }

    fn wait_idle(&self) {
        let mut n = self.running.lock().unwrap_or_else(|p| p.into_inner());
        while *n > 0 {
            n = self.freed.wait(n).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Gives a permit back when a handler ends, even by a panic.
struct Permit(Arc<Permits>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// The pop-up thread model: receives messages from anyone and runs
/// `handler(sender, text)` on a new thread for each, with at most
/// `max_threads` handlers running at once. A message is taken off the
/// mailbox only when a handler may start, so while all are busy messages
/// wait in the mailbox (and senders block once it is full).
///
/// Returns `Ok(())` when the registration ends (after [`uregist`], from
/// another thread or a handler), once every handler has finished; an
/// error if receiving fails otherwise (`ENOTCONN` if not registered,
/// `EINVAL` if `max_threads` is 0). Signals interrupting the wait are
/// ignored. If no thread can be started, the handler runs on the calling
/// thread.
pub fn serve<F>(max_threads: usize, handler: F) -> io::Result<()>
where
    F: Fn(PidD, Vec<u8>) + Send + Sync + 'static,
{
    if max_threads == 0 {
        return Err(errno_err(libc::EINVAL));
    }
    registered()?;
    let size = sysv::msgmax();
    let handler = Arc::new(handler);
    let permits = Arc::new(Permits {
        running: Mutex::new(0),
        freed: Condvar::new(),
    });
    let result = loop {
        permits.acquire(max_threads);
        let permit = Permit(permits.clone());
        let (from, text) = match receive(0, size, 0) {
            Ok(m) => m,
            Err(e) => {
                drop(permit);
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    // The mailbox was removed (dipcd does that when the
                    // registration ends, possibly just before `uregist`
                    // returns in another thread) or we are unregistered.
                    Some(libc::EIDRM | libc::EINVAL | libc::ENOTCONN) => break Ok(()),
                    _ => break Err(e),
                }
            }
        };
        let h = handler.clone();
        let job = move || {
            let _permit = permit;
            h(from, text);
        };
        // A closure moved into a failed spawn is lost, so keep the message
        // in a slot the fallback can take it back from.
        let slot = Arc::new(Mutex::new(Some(job)));
        let s2 = slot.clone();
        let spawned = std::thread::Builder::new()
            .name("dipc-popup".into())
            .spawn(move || {
                let job = s2.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some(job) = job {
                    job();
                }
            });
        if spawned.is_err() {
            let job = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(job) = job {
                job();
            }
        }
    };
    permits.wait_idle();
    result
}
