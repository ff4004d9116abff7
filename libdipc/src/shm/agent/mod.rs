//! The agent: one thread per process that speaks to the managers of the
//! segments the process has attached, on behalf of the SIGSEGV handler.
//!
//! It `poll()`s the request pipe (fault records from the handler, see
//! [`super::fault`]), a wake-up pipe for commands from API calls (attach,
//! detach), and every segment's connection. For a fault it either answers
//! at once (the unit is already accessible enough, or the segment is gone)
//! or asks the manager (`ShmFault`) and queues the waiter; a second fault
//! on a unit already asked for only queues. The manager's `ShmData` fill
//! the *agent view* (a second mapping of the same memfd, always
//! read-write), `ShmGrant` opens the *app view* of the unit with
//! `mprotect` and wakes its waiters (who retry the access, and ask again if
//! they wanted more than was granted), `ShmLost` maps the unit as a *trap*
//! (see below) and wakes them, so that they fault into a real SIGBUS.
//! `ShmRevoke` is served at once: the app view goes down first, then the
//! content is sent if asked for, then `ShmRevoked`.
//!
//! A *trap* is a range of the app view mapped to an empty memfd
//! (`MAP_SHARED`, past the file's end): the kernel raises SIGBUS for any
//! access the protection allows, from the program's own context (see
//! `fault.rs` for why the handler does not raise it). A lost unit, a unit
//! whose fault got no answer in time, and the whole view of a dead segment
//! are traps; a grant (or any other change of a unit's right) maps the
//! unit back from the agent view, so a late answer still opens it. Only
//! the agent maps and unmaps, so the app view never changes under it.
//!
//! The agent takes no lock the handler could need (the handler takes
//! none), and the handler never waits for anything but the agent, so a
//! fault can never deadlock with the agent. Every wait on a manager is
//! bounded by the request time-out: a fault without a grant in time fails
//! (SIGBUS), a connection that closes or breaks the protocol kills its
//! segment: the whole app view becomes a trap, waiters fail, and every
//! later touch raises SIGBUS until `shmdt`.

mod maps;
mod run;
mod seg;

use super::fault;
use super::table::{self, ACTIVE, DETACHING, RIGHT_NONE};
use crate::dist::Errno;
use dipc_common::channel::{Channel, Codec};
use maps::{trap_memfd, Maps};
use run::Agent;
use seg::Seg;
use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU8};
use std::sync::mpsc;
use std::time::Duration;

/// Largest `ShmData` chunk the agent sends (also bounded by `max_frame`).
const MAX_CHUNK: usize = 256 * 1024;

/// A connection to a segment's manager: a Unix socket on the owner host, a
/// TCP session (passed on to the manager by the worker) elsewhere.
pub type Conn = dipc_common::net::BlockingStream;

/// What an attach needs besides the connection.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// The segment's size in bytes, as the manager reported it.
    pub size: u64,
    /// The unit of coherence, as the manager reported it.
    pub unit: u64,
    pub readonly: bool,
    pub exec: bool,
    /// Where to map the app view (`shmat`'s address, already rounded), and
    /// whether it may replace an existing mapping (`SHM_REMAP`).
    pub addr: Option<usize>,
    pub remap: bool,
    /// The request time-out: bounds every wait on the manager.
    pub timeout: Duration,
    pub max_frame: u32,
}

pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

fn last_errno() -> Errno {
    super::last_errno()
}

/// Commands from API calls to the agent.
enum Cmd {
    /// Serve this new attachment (its slot is already `ACTIVE`).
    Attach(Box<Seg>),
    /// Detach the attachment in this slot; answer when done.
    Detach(usize, mpsc::Sender<()>),
}

/// How API calls reach the agent of this process.
struct Handle {
    pid: i32,
    tx: mpsc::Sender<Cmd>,
    wake: RawFd,
    /// False once the agent thread has panicked.
    alive: AtomicBool,
}

static HANDLE: AtomicPtr<Handle> = AtomicPtr::new(std::ptr::null_mut());
/// Serialises starting the agent; a spin lock rather than a Mutex so the
/// fork child can simply reset it (a Mutex held by a parent thread at fork
/// would stay locked forever in the child).
static INIT: AtomicBool = AtomicBool::new(false);
/// atexit and pthread_atfork handlers are registered once per process
/// image (a fork child inherits them).
static REGISTERED: AtomicBool = AtomicBool::new(false);
/// The agent's own pipe ends, for the fork child to close.
static REQUEST_RD: AtomicI32 = AtomicI32::new(-1);
static WAKE_RD: AtomicI32 = AtomicI32::new(-1);
static WAKE_WR: AtomicI32 = AtomicI32::new(-1);
/// The empty, sealed memfd that traps map (see the module docs); one for
/// the process, so that mapping a trap never needs a new descriptor.
static TRAP_FD: AtomicI32 = AtomicI32::new(-1);

struct InitGuard;

impl InitGuard {
    fn lock() -> InitGuard {
        while INIT
            .compare_exchange_weak(false, true, SeqCst, SeqCst)
            .is_err()
        {
            std::thread::yield_now();
        }
        InitGuard
    }
}

impl Drop for InitGuard {
    fn drop(&mut self) {
        INIT.store(false, SeqCst);
    }
}

fn pipe(flags: i32) -> Result<(RawFd, RawFd), Errno> {
    let mut fds = [-1; 2];
    // SAFETY: fds has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), flags) } != 0 {
        return Err(last_errno());
    }
    Ok((fds[0], fds[1]))
}

fn close(fd: RawFd) {
    if fd >= 0 {
        // SAFETY: the caller owns fd.
        unsafe { libc::close(fd) };
    }
}

/// The agent of this process, started (with the fault handler, and the
/// atexit and atfork handlers) at the first distributed attach.
fn handle() -> Result<&'static Handle, Errno> {
    let _g = InitGuard::lock();
    fault::install()?;
    let pid = std::process::id() as i32;
    let h = HANDLE.load(SeqCst);
    if !h.is_null() {
        // SAFETY: handles are leaked, never freed.
        let h = unsafe { &*h };
        if h.pid == pid {
            return Ok(h);
        }
        // A child of a raw fork (no atfork handlers ran): start afresh.
        at_fork_child_locked();
    }
    if !REGISTERED.swap(true, SeqCst) {
        // SAFETY: registering plain extern "C" functions.
        unsafe {
            libc::atexit(at_exit);
            libc::pthread_atfork(None, None, Some(at_fork_child));
        }
    }
    let trap_fd = trap_memfd()?;
    let (req_rd, req_wr) = match pipe(libc::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            close(trap_fd);
            return Err(e);
        }
    };
    let (wake_rd, wake_wr) = match pipe(libc::O_CLOEXEC | libc::O_NONBLOCK) {
        Ok(p) => p,
        Err(e) => {
            for fd in [trap_fd, req_rd, req_wr] {
                close(fd);
            }
            return Err(e);
        }
    };
    // Only the agent reads requests, and it must never block on them; the
    // handler's end stays blocking (it waits if the pipe is ever full).
    // SAFETY: fcntl on a descriptor we own.
    unsafe { libc::fcntl(req_rd, libc::F_SETFL, libc::O_NONBLOCK) };
    let (tx, rx) = mpsc::channel();
    let agent = Agent {
        pid,
        req_rd,
        wake_rd,
        rx,
        segs: HashMap::new(),
        retiring: Vec::new(),
        carry: Vec::new(),
        next_id: 1,
    };
    let h: &'static Handle = Box::leak(Box::new(Handle {
        pid,
        tx,
        wake: wake_wr,
        alive: AtomicBool::new(true),
    }));
    // The agent blocks every signal, so the program's signals go to its own
    // threads and never interrupt the agent's calls.
    // SAFETY: sigset_t is plain data, filled by sigfillset.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as `all`.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: both sets are valid sigset_t owned by this frame.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    let spawned = std::thread::Builder::new()
        .name("dipc-shm-agent".into())
        .spawn(move || agent.main(h));
    // SAFETY: restoring the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    if let Err(e) = spawned {
        for fd in [trap_fd, req_rd, req_wr, wake_rd, wake_wr] {
            close(fd);
        }
        log::warn!("dipc: cannot start the shared memory agent: {e}");
        return Err(e.raw_os_error().unwrap_or(libc::EAGAIN));
    }
    REQUEST_RD.store(req_rd, SeqCst);
    TRAP_FD.store(trap_fd, SeqCst);
    WAKE_RD.store(wake_rd, SeqCst);
    WAKE_WR.store(wake_wr, SeqCst);
    table::REQUEST_FD.store(req_wr, SeqCst);
    table::OWNER_PID.store(pid, SeqCst);
    HANDLE.store(h as *const Handle as *mut Handle, SeqCst);
    Ok(h)
}

impl Handle {
    fn send(&self, cmd: Cmd) -> Result<(), Errno> {
        if !self.alive.load(SeqCst) || self.tx.send(cmd).is_err() {
            return Err(libc::EIO);
        }
        // SAFETY: one byte to our own non-blocking pipe; a full pipe already
        // holds a wake-up, so EAGAIN is fine.
        unsafe { libc::write(self.wake, b"w".as_ptr() as *const libc::c_void, 1) };
        Ok(())
    }
}

fn at_fork_child_locked() {
    HANDLE.store(std::ptr::null_mut(), SeqCst);
    // The parent's agent keeps its own copies of these descriptors.
    for fd in [
        &table::REQUEST_FD,
        &REQUEST_RD,
        &WAKE_RD,
        &WAKE_WR,
        &TRAP_FD,
    ] {
        close(fd.swap(-1, SeqCst));
    }
    table::reset_in_child();
}

/// The child of a `fork` has no agent thread: it forgets the parent's
/// distributed attachments (see [`table::reset_in_child`]) and starts its
/// own agent at its first attach. Only atomics and `close` here.
extern "C" fn at_fork_child() {
    at_fork_child_locked();
    INIT.store(false, SeqCst);
}

/// At exit, every segment is detached, so what the process wrote is
/// written back to the manager.
extern "C" fn at_exit() {
    for slot in table::attached() {
        let _ = detach(slot);
    }
}

/// Maps a new attachment and hands it to the agent. Returns the app view's
/// address.
pub fn attach(conn: Conn, codec: Codec, p: Params) -> Result<usize, Errno> {
    let page = page_size();
    if p.size == 0 || p.unit == 0 || p.unit & (page as u64 - 1) != 0 {
        log::warn!(
            "dipc: manager reported size {} and unit {}: not a valid segment",
            p.size,
            p.unit
        );
        return Err(libc::EPROTO);
    }
    let len = usize::try_from(p.size)
        .ok()
        .and_then(|s| s.checked_add(page - 1))
        .map(|s| s / page * page)
        .filter(|&l| l <= isize::MAX as usize)
        .ok_or(libc::ENOMEM)?;
    // A unit larger than the mapping (segment mode) is the whole mapping.
    let unit = usize::try_from(p.unit).map_or(len, |u| u.min(len));
    let nunits = len.div_ceil(unit);
    if u32::try_from(nunits).is_err() {
        return Err(libc::ENOMEM);
    }
    conn.set_timeouts(p.timeout).map_err(io_errno)?;
    let h = handle()?;
    let maps = Maps::new(len, &p)?;
    // One byte per unit: as large as the segment's size calls for, and
    // refused (not aborted on) when memory is short.
    let mut rights: Vec<AtomicU8> = Vec::new();
    rights.try_reserve_exact(nunits).map_err(|_| libc::ENOMEM)?;
    rights.extend((0..nunits).map(|_| AtomicU8::new(RIGHT_NONE)));
    let slot = table::reserve().ok_or(libc::EMFILE)?;
    table::fill(
        slot,
        maps.app,
        len,
        unit,
        rights.into_boxed_slice(),
        p.readonly,
        p.exec,
        conn.as_raw_fd(),
    );
    let seg = Seg {
        slot,
        gen: table::SLOTS[slot].gen.load(SeqCst),
        fd: conn.as_raw_fd(),
        ch: Some(Channel::new(conn, p.max_frame).with_codec(codec)),
        app: maps.app,
        agent: maps.agent,
        len,
        unit,
        nunits,
        readonly: p.readonly,
        exec: p.exec,
        timeout: p.timeout,
        chunk: MAX_CHUNK
            .min((p.max_frame as usize).saturating_sub(64))
            .max(1),
        pending: HashMap::new(),
        detach: None,
        trap_fd: TRAP_FD.load(SeqCst),
        trapped: HashSet::new(),
    };
    // Published before shmat returns, so any fault on it finds it; the
    // agent takes the command before it handles such a fault (see
    // Agent::request).
    table::set_state(slot, ACTIVE);
    let (app, agent) = (maps.app, maps.agent);
    std::mem::forget(maps);
    if let Err(e) = h.send(Cmd::Attach(Box::new(seg))) {
        // The agent is gone: the segment can never be served.
        table::set_state(slot, DETACHING);
        // SAFETY: the two views were mapped above and nothing else uses
        // them (no fault can be served without an agent).
        unsafe {
            libc::munmap(app as *mut libc::c_void, len);
            libc::munmap(agent as *mut libc::c_void, len);
        }
        // No handler blocks while counted in USERS, so this ends.
        while !table::try_free(slot) {
            std::thread::yield_now();
        }
        return Err(e);
    }
    Ok(app)
}

fn io_errno(e: io::Error) -> Errno {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// Detaches the attachment in `slot`: the agent writes back what this
/// process holds for writing, tells the manager, and unmaps both views.
/// Returns once the manager confirmed or the time-out passed.
pub fn detach(slot: usize) -> Result<(), Errno> {
    let h = HANDLE.load(SeqCst);
    if h.is_null() {
        return Err(libc::EINVAL);
    }
    // SAFETY: handles are leaked, never freed.
    let h = unsafe { &*h };
    if h.pid != std::process::id() as i32 {
        return Err(libc::EINVAL);
    }
    let (tx, rx) = mpsc::channel();
    h.send(Cmd::Detach(slot, tx))?;
    // The agent bounds a detach by twice its segment's request time-out
    // (pending faults, then the manager's answer); this only guards
    // against an agent that died meanwhile.
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(()) => return Ok(()),
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err(libc::EIO),
            Err(mpsc::RecvTimeoutError::Timeout) if !h.alive.load(SeqCst) => return Err(libc::EIO),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
}
