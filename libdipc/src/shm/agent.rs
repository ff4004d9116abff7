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

use super::fault;
use super::table::{
    self, ACTIVE, DEAD, DETACHING, REPLY_FAIL, REPLY_RETRY, RIGHT_NONE, RIGHT_READ, RIGHT_WRITE,
};
use crate::dist::Errno;
use dipc_common::channel::{Channel, ChannelError, Codec};
use dipc_common::wire::{self, Message, ShmChunk};
use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU8};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Largest `ShmData` chunk the agent sends (also bounded by `max_frame`).
const MAX_CHUNK: usize = 256 * 1024;

/// A connection to a segment's manager: a Unix socket on the owner host, a
/// TCP session (passed on to the manager by the worker) elsewhere.
pub enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    /// Bounds every read and write on the connection, so a silent or stuck
    /// manager cannot hold the agent.
    pub fn set_timeouts(&self, t: Duration) -> io::Result<()> {
        match self {
            Conn::Unix(s) => {
                s.set_read_timeout(Some(t))?;
                s.set_write_timeout(Some(t))
            }
            Conn::Tcp(s) => {
                s.set_read_timeout(Some(t))?;
                s.set_write_timeout(Some(t))
            }
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsRawFd for Conn {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Conn::Unix(s) => s.as_raw_fd(),
            Conn::Tcp(s) => s.as_raw_fd(),
        }
    }
}

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

/// A new empty memfd for traps, sealed so that it stays empty (a trap
/// must never turn into memory).
fn trap_memfd() -> Result<RawFd, Errno> {
    // SAFETY: a NUL-terminated name and valid flags.
    let fd = unsafe {
        libc::memfd_create(
            c"dipc-shm-lost".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(last_errno());
    }
    let seals = libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on the memfd we just made.
    if unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) } != 0 {
        let e = last_errno();
        close(fd);
        return Err(e);
    }
    Ok(fd)
}

/// Maps `[addr, addr + len)` of an app view as a trap: accesses that
/// `prot` allows raise SIGBUS (`BUS_ADRERR`, at the address touched),
/// others SIGSEGV as before. The range is replaced at once, so no thread
/// sees it unmapped.
///
/// # Safety
/// The range must lie inside an app view of this process.
unsafe fn map_trap(trap_fd: RawFd, addr: usize, len: usize, prot: i32) -> Result<(), Errno> {
    // SAFETY: MAP_FIXED replaces part of our own app view (the caller's
    // contract) with a mapping of our own memfd.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            prot,
            libc::MAP_SHARED | libc::MAP_FIXED,
            trap_fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(last_errno());
    }
    // As the views: a fork child does not inherit it.
    // SAFETY: the range was just mapped.
    unsafe { libc::madvise(p, len, libc::MADV_DONTFORK) };
    Ok(())
}

/// Maps `[agent, agent + len)` of the agent view (the same pages of the
/// memfd) at `app`, with `prot`, in place of a trap. The new mapping is
/// made elsewhere (`mremap` with an old size of 0 maps the same shared
/// pages again), given its protection there, and only then moved over the
/// trap in one step: at no moment can another thread reach the memory
/// with more rights than `prot`.
///
/// # Safety
/// `agent` must lie in an agent view and `app` be the same range of its
/// app view.
unsafe fn map_back(agent: usize, app: usize, len: usize, prot: i32) -> Result<(), Errno> {
    // SAFETY: the agent view is a MAP_SHARED mapping of ours; the copy and
    // the move only touch mappings this function makes and the trap.
    unsafe {
        let tmp = libc::mremap(agent as *mut libc::c_void, 0, len, libc::MREMAP_MAYMOVE);
        if tmp == libc::MAP_FAILED {
            return Err(last_errno());
        }
        libc::madvise(tmp, len, libc::MADV_DONTFORK);
        if libc::mprotect(tmp, len, prot) != 0 {
            let e = last_errno();
            libc::munmap(tmp, len);
            return Err(e);
        }
        let moved = libc::mremap(
            tmp,
            len,
            len,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            app as *mut libc::c_void,
        );
        if moved == libc::MAP_FAILED {
            let e = last_errno();
            libc::munmap(tmp, len);
            return Err(e);
        }
    }
    Ok(())
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

/// The two views of a new attachment; unmapped on drop unless forgotten.
struct Maps {
    app: usize,
    agent: usize,
    len: usize,
}

impl Maps {
    fn new(len: usize, p: &Params) -> Result<Maps, Errno> {
        // SAFETY: a NUL-terminated name and a valid flag.
        let fd = unsafe { libc::memfd_create(c"dipc-shm".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(last_errno());
        }
        let r = Self::map(fd, len, p);
        close(fd); // the mappings keep the memory
        r
    }

    fn map(fd: RawFd, len: usize, p: &Params) -> Result<Maps, Errno> {
        // SAFETY: ftruncate and mmap on our own memfd; results checked.
        unsafe {
            if libc::ftruncate(fd, len as libc::off_t) != 0 {
                return Err(last_errno());
            }
            let agent = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            );
            if agent == libc::MAP_FAILED {
                return Err(last_errno());
            }
            let (hint, flags) = match p.addr {
                None => (std::ptr::null_mut(), libc::MAP_SHARED),
                Some(a) if p.remap => (a as *mut libc::c_void, libc::MAP_SHARED | libc::MAP_FIXED),
                Some(a) => (
                    a as *mut libc::c_void,
                    libc::MAP_SHARED | libc::MAP_FIXED_NOREPLACE,
                ),
            };
            let app = libc::mmap(hint, len, libc::PROT_NONE, flags, fd, 0);
            if app == libc::MAP_FAILED {
                let e = last_errno();
                libc::munmap(agent, len);
                // shmat reports an occupied range as EINVAL.
                return Err(if e == libc::EEXIST { libc::EINVAL } else { e });
            }
            // Kernels before 4.17 take MAP_FIXED_NOREPLACE as a mere hint.
            if p.addr.is_some_and(|a| a != app as usize) {
                libc::munmap(app, len);
                libc::munmap(agent, len);
                return Err(libc::EINVAL);
            }
            // A fork child does not inherit the views (it forgets the
            // attachment, see at_fork_child), so it never shares pages
            // with its parent's private copy.
            libc::madvise(app, len, libc::MADV_DONTFORK);
            libc::madvise(agent, len, libc::MADV_DONTFORK);
            Ok(Maps {
                app: app as usize,
                agent: agent as usize,
                len,
            })
        }
    }
}

impl Drop for Maps {
    fn drop(&mut self) {
        // SAFETY: both views were mapped by Maps::map with this length.
        unsafe {
            libc::munmap(self.app as *mut libc::c_void, self.len);
            libc::munmap(self.agent as *mut libc::c_void, self.len);
        }
    }
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

/// A waiting handler's reply word.
type Waiter = u64;

struct Pending {
    deadline: Instant,
    waiters: Vec<Waiter>,
}

enum DetachPhase {
    /// Waiting for the faults already sent to be answered, so that no grant
    /// can arrive after `ShmDetach`.
    Draining,
    /// `ShmDetach` sent with this request id.
    Sent { id: u64, deadline: Instant },
}

struct Detach {
    phase: DetachPhase,
    reply: mpsc::Sender<()>,
}

/// One attachment, as the agent serves it.
struct Seg {
    slot: usize,
    gen: u32,
    /// None once the segment is dead.
    ch: Option<Channel<Conn>>,
    fd: RawFd,
    app: usize,
    agent: usize,
    len: usize,
    unit: usize,
    nunits: usize,
    readonly: bool,
    exec: bool,
    timeout: Duration,
    chunk: usize,
    pending: HashMap<u32, Pending>,
    detach: Option<Detach>,
    /// The process's trap memfd (see the module docs).
    trap_fd: RawFd,
    /// Units mapped as traps one by one (the whole view is one when the
    /// slot's `trapped` is set).
    trapped: HashSet<u32>,
}

impl Seg {
    fn rights(&self) -> &[AtomicU8] {
        // SAFETY: the slot stays filled until the agent frees it after the
        // segment is removed from its table.
        unsafe { table::rights(self.slot) }
    }

    fn right(&self, unit: u32) -> u8 {
        self.rights()
            .get(unit as usize)
            .map_or(RIGHT_NONE, |r| r.load(SeqCst))
    }

    /// Offset and length of a unit in the views (the last may be short).
    fn span(&self, unit: u32) -> Option<(usize, usize)> {
        unit_span(self.len, self.unit, self.nunits, unit)
    }

    fn prot(&self, right: u8) -> i32 {
        let exec = if self.exec { libc::PROT_EXEC } else { 0 };
        match right {
            RIGHT_WRITE => libc::PROT_READ | libc::PROT_WRITE | exec,
            RIGHT_READ => libc::PROT_READ | exec,
            _ => libc::PROT_NONE,
        }
    }

    /// What a trap of this attachment lets through to its SIGBUS: every
    /// access the attachment allows. A write to a read-only attachment or
    /// an instruction fetch without `SHM_EXEC` stays a SIGSEGV (the
    /// program's fault, not a lost unit).
    fn trap_prot(&self) -> i32 {
        let write = if self.readonly { 0 } else { libc::PROT_WRITE };
        let exec = if self.exec { libc::PROT_EXEC } else { 0 };
        libc::PROT_READ | write | exec
    }

    /// Sets the app view of a unit to `right`: the protection first (a
    /// trap is mapped back to the memory), the recorded right after, so a
    /// handler that reads the right (where the fault does not say read or
    /// write) never sees a right the page does not have yet.
    fn set_right(&mut self, unit: u32, right: u8) -> Result<(), String> {
        let (off, len) = self
            .span(unit)
            .ok_or_else(|| format!("unit {unit} out of range"))?;
        let prot = if self.detach.is_some() {
            // A detaching view stays closed (see Agent::start_detach); a
            // trap with no access is as closed as the memory.
            libc::PROT_NONE
        } else {
            self.prot(right)
        };
        if self.detach.is_none() && self.trapped.contains(&unit) {
            // SAFETY: the unit's range of both views, which we mapped.
            unsafe { map_back(self.agent + off, self.app + off, len, prot) }.map_err(|e| {
                format!(
                    "mapping unit {unit} back failed: {}",
                    io::Error::from_raw_os_error(e)
                )
            })?;
            self.trapped.remove(&unit);
        } else {
            // SAFETY: the range lies inside the app view, which we mapped.
            let r = unsafe { libc::mprotect((self.app + off) as *mut libc::c_void, len, prot) };
            if r != 0 {
                return Err(format!(
                    "mprotect of unit {unit} failed: {}",
                    io::Error::last_os_error()
                ));
            }
        }
        self.store_right(unit, right);
        Ok(())
    }

    fn store_right(&self, unit: u32, right: u8) {
        if let Some(r) = self.rights().get(unit as usize) {
            r.store(right, SeqCst);
        }
    }

    /// Whether every touch of `unit` raises SIGBUS without a fault to us.
    fn is_trap(&self, unit: u32) -> bool {
        table::SLOTS[self.slot].trapped.load(SeqCst) || self.trapped.contains(&unit)
    }

    /// `unit` cannot be had (lost, or no answer in time): maps it as a
    /// trap and returns the answer for its waiters: *retry*, and the
    /// access raises SIGBUS; *fail* only if the trap cannot be mapped (the
    /// handler raises SIGBUS itself). A grant that comes later still maps
    /// it back (see `set_right`). While detaching, the view is closed
    /// already and a retried access faults as after `shmdt`.
    fn fail_unit(&mut self, unit: u32) -> u32 {
        let Some((off, len)) = self.span(unit) else {
            return REPLY_FAIL;
        };
        if self.detach.is_some() {
            self.store_right(unit, RIGHT_NONE);
            return REPLY_RETRY;
        }
        if self.is_trap(unit) {
            return REPLY_RETRY;
        }
        // SAFETY: the unit's range of the app view, which we mapped.
        match unsafe { map_trap(self.trap_fd, self.app + off, len, self.trap_prot()) } {
            Ok(()) => {
                self.store_right(unit, RIGHT_NONE);
                self.trapped.insert(unit);
                REPLY_RETRY
            }
            Err(e) => {
                log::warn!(
                    "dipc: cannot map lost unit {unit} as a trap ({}); SIGBUS is raised \
                     from the fault handler",
                    io::Error::from_raw_os_error(e)
                );
                // SAFETY: as above.
                unsafe {
                    libc::mprotect((self.app + off) as *mut libc::c_void, len, libc::PROT_NONE)
                };
                self.store_right(unit, RIGHT_NONE);
                REPLY_FAIL
            }
        }
    }

    /// Maps the whole app view as a trap, for a segment that cannot be
    /// served any more; false if that failed (the view is then closed, and
    /// the handler raises SIGBUS itself).
    fn trap_all(&mut self) -> bool {
        // SAFETY: the whole app view, which we mapped.
        let trapped = unsafe { map_trap(self.trap_fd, self.app, self.len, self.trap_prot()) };
        if let Err(e) = trapped {
            log::warn!(
                "dipc: cannot map a lost segment as a trap ({}); SIGBUS is raised from \
                 the fault handler",
                io::Error::from_raw_os_error(e)
            );
            // SAFETY: as above.
            unsafe { libc::mprotect(self.app as *mut libc::c_void, self.len, libc::PROT_NONE) };
        }
        self.trapped.clear();
        trapped.is_ok()
    }

    fn send(&mut self, id: u64, msg: &Message) -> Result<(), String> {
        match self.ch.as_mut() {
            Some(ch) => ch
                .send(id, msg)
                .map_err(|e| format!("sending {}: {e}", msg.kind().name())),
            None => Err("connection closed".into()),
        }
    }

    /// Sends a unit's content from the agent view as `ShmData` chunks.
    fn send_content(&mut self, unit: u32) -> Result<(), String> {
        let (off, len) = self
            .span(unit)
            .ok_or_else(|| format!("unit {unit} out of range"))?;
        let mut done = 0;
        while done < len {
            let n = self.chunk.min(len - done);
            // SAFETY: [off+done, off+done+n) lies inside the agent view,
            // which stays mapped read-write while the segment is served.
            let data =
                unsafe { std::slice::from_raw_parts((self.agent + off + done) as *const u8, n) };
            let ch = self.ch.as_mut().ok_or("connection closed")?;
            ch.send_encoded(|out| wire::encode_shm_data(0, unit, done as u64, data, out))
                .map_err(|e| format!("sending ShmData: {e}"))?;
            done += n;
        }
        Ok(())
    }
}

fn unit_span(len: usize, unit_len: usize, nunits: usize, unit: u32) -> Option<(usize, usize)> {
    let u = unit as usize;
    if u >= nunits {
        return None;
    }
    let off = u * unit_len;
    Some((off, unit_len.min(len - off)))
}

/// Copies a `ShmData` frame's content into the agent view of `seg`
/// (described by its fields, as the frame still borrows the segment's
/// channel).
fn store_data(
    (agent, len, unit_len, nunits): (usize, usize, usize, usize),
    ShmChunk { unit, offset, data }: ShmChunk<'_>,
) -> Result<(), String> {
    let (off, ulen) = unit_span(len, unit_len, nunits, unit)
        .ok_or_else(|| format!("ShmData for unit {unit} of {nunits}"))?;
    let inside = offset
        .checked_add(data.len() as u64)
        .is_some_and(|end| end <= ulen as u64);
    if !inside {
        return Err(format!(
            "ShmData of {} bytes at {offset} past unit {unit} ({ulen} bytes)",
            data.len()
        ));
    }
    // SAFETY: [off+offset, off+offset+data.len()) lies inside the unit
    // (checked above), inside the agent view, which stays mapped
    // read-write while the segment is served.
    unsafe {
        std::ptr::copy_nonoverlapping(
            data.as_ptr(),
            (agent + off + offset as usize) as *mut u8,
            data.len(),
        )
    };
    Ok(())
}

struct Agent {
    pid: i32,
    req_rd: RawFd,
    wake_rd: RawFd,
    rx: mpsc::Receiver<Cmd>,
    /// By slot.
    segs: HashMap<usize, Seg>,
    /// Slots detached but not yet freed (a handler may still be reading
    /// them; see table::try_free).
    retiring: Vec<usize>,
    /// Bytes of a request record not yet complete.
    carry: Vec<u8>,
    next_id: u64,
}

fn wake(word: Waiter, value: u32) {
    // SAFETY: every waiter word came from a handler of this process (the
    // record's pid was checked) that is blocked until it gets this one
    // answer; each is answered exactly once.
    unsafe { fault::reply(word, value) }
}

impl Agent {
    fn main(mut self, h: &'static Handle) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run()));
        if r.is_err() {
            // Nothing can serve faults any more: fail every waiter and make
            // every later touch SIGBUS, rather than leave threads blocked.
            log::error!("dipc: the shared memory agent failed; distributed segments are lost");
            h.alive.store(false, SeqCst);
            for seg in self.segs.values_mut() {
                let trapped = seg.detach.is_none() && seg.trap_all();
                table::SLOTS[seg.slot].trapped.store(trapped, SeqCst);
                table::set_state(seg.slot, DEAD);
                let reply = if trapped { REPLY_RETRY } else { REPLY_FAIL };
                for (_, p) in seg.pending.drain() {
                    p.waiters.into_iter().for_each(|w| wake(w, reply));
                }
                if let Some(d) = seg.detach.take() {
                    let _ = d.reply.send(());
                }
            }
            // Withdrawn once the traps are in place: a handler that finds
            // no agent returns onto its segment's trap.
            table::REQUEST_FD.store(-1, SeqCst);
            self.fail_requests_forever();
        }
    }

    /// After a failure: every request from now on is answered (retry onto
    /// the segment's trap, or fail), so no handler is ever left waiting
    /// (one may have taken the pipe's descriptor just before it was
    /// withdrawn).
    fn fail_requests_forever(&mut self) -> ! {
        loop {
            for r in self.take_requests() {
                if r.pid == self.pid {
                    let trapped = table::SLOTS
                        .get(r.slot as usize)
                        .is_some_and(|s| s.trapped.load(SeqCst));
                    wake(r.word, if trapped { REPLY_RETRY } else { REPLY_FAIL });
                }
            }
            let mut pfd = libc::pollfd {
                fd: self.req_rd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, -1) };
        }
    }

    /// The whole request records waiting in the pipe.
    fn take_requests(&mut self) -> Vec<table::Request> {
        let mut buf = [0u8; table::REQUEST_LEN * 64];
        let mut out = Vec::new();
        loop {
            // SAFETY: reading into our buffer from our non-blocking pipe.
            let n = unsafe {
                libc::read(
                    self.req_rd,
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                )
            };
            if n <= 0 {
                return out;
            }
            self.carry.extend_from_slice(&buf[..n as usize]);
            while self.carry.len() >= table::REQUEST_LEN {
                let mut rec = [0u8; table::REQUEST_LEN];
                rec.copy_from_slice(&self.carry[..table::REQUEST_LEN]);
                self.carry.drain(..table::REQUEST_LEN);
                out.push(table::Request::from_bytes(&rec));
            }
        }
    }

    fn run(&mut self) {
        let mut fds: Vec<libc::pollfd> = Vec::new();
        let mut order: Vec<usize> = Vec::new();
        loop {
            fds.clear();
            order.clear();
            let pfd = |fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            fds.push(pfd(self.req_rd));
            fds.push(pfd(self.wake_rd));
            for (slot, seg) in &self.segs {
                if seg.ch.is_some() {
                    fds.push(pfd(seg.fd));
                    order.push(*slot);
                }
            }
            let timeout = self.poll_timeout();
            // SAFETY: fds is a valid array of fds.len() pollfds.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 && last_errno() != libc::EINTR {
                log::warn!("dipc: shm agent poll: {}", io::Error::last_os_error());
            }
            if n > 0 {
                if fds[1].revents != 0 {
                    self.drain_wake();
                    self.commands();
                }
                if fds[0].revents != 0 {
                    self.requests();
                }
                for (i, slot) in order.iter().enumerate() {
                    if fds[i + 2].revents != 0 {
                        self.incoming(*slot);
                    }
                }
            }
            self.deadlines(Instant::now());
            self.retiring.retain(|&slot| !table::try_free(slot));
        }
    }

    fn poll_timeout(&self) -> i32 {
        if !self.retiring.is_empty() {
            return 1;
        }
        let now = Instant::now();
        let mut first: Option<Instant> = None;
        for seg in self.segs.values() {
            for p in seg.pending.values() {
                first = Some(first.map_or(p.deadline, |f| f.min(p.deadline)));
            }
            if let Some(Detach {
                phase: DetachPhase::Sent { deadline, .. },
                ..
            }) = &seg.detach
            {
                first = Some(first.map_or(*deadline, |f| f.min(*deadline)));
            }
        }
        match first {
            None => -1,
            Some(t) => {
                let ms = t.saturating_duration_since(now).as_millis() + 1;
                ms.min(i32::MAX as u128) as i32
            }
        }
    }

    fn drain_wake(&mut self) {
        let mut buf = [0u8; 256];
        // SAFETY: reading into our buffer from our non-blocking pipe.
        while unsafe {
            libc::read(
                self.wake_rd,
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
            )
        } > 0
        {}
    }

    fn commands(&mut self) {
        while let Ok(cmd) = self.rx.try_recv() {
            match cmd {
                Cmd::Attach(seg) => {
                    self.segs.insert(seg.slot, *seg);
                }
                Cmd::Detach(slot, reply) => self.start_detach(slot, reply),
            }
        }
    }

    fn requests(&mut self) {
        for r in self.take_requests() {
            self.request(r);
        }
    }

    /// One fault from the handler.
    fn request(&mut self, r: table::Request) {
        if r.pid != self.pid {
            // Cannot happen (the handler checks the owner pid); a word in
            // another address space must never be written.
            return;
        }
        let slot = r.slot as usize;
        if !self.segs.contains_key(&slot) {
            // The attach command is queued before shmat returns, so before
            // any fault on the segment: take it now.
            self.commands();
        }
        let Some(seg) = self.segs.get_mut(&slot).filter(|s| s.gen == r.gen) else {
            // Stale: detached (the retry then faults as not ours).
            return wake(r.word, REPLY_RETRY);
        };
        if seg.detach.is_some() {
            return wake(r.word, REPLY_RETRY);
        }
        if seg.ch.is_none() {
            // Dead: the retry raises SIGBUS on the trap, if there is one.
            let trapped = table::SLOTS[slot].trapped.load(SeqCst);
            return wake(r.word, if trapped { REPLY_RETRY } else { REPLY_FAIL });
        }
        let write = r.write != 0;
        if seg.span(r.unit).is_none() || (write && seg.readonly) {
            return wake(r.word, REPLY_FAIL);
        }
        if seg.is_trap(r.unit) {
            // A fault from before the trap was mapped: the retry hits it.
            // (Where faults do not say what access they were, this may be
            // a write the trap refuses, which would come back here for
            // ever: the handler raises SIGBUS instead.)
            let reply = if fault::ACCESS_KNOWN {
                REPLY_RETRY
            } else {
                REPLY_FAIL
            };
            return wake(r.word, reply);
        }
        let have = seg.right(r.unit);
        if have == RIGHT_WRITE || (have == RIGHT_READ && !write) {
            // Granted meanwhile (another thread asked first).
            return wake(r.word, REPLY_RETRY);
        }
        if let Some(p) = seg.pending.get_mut(&r.unit) {
            // Already asked for; a writer that gets only read asks again.
            p.waiters.push(r.word);
            return;
        }
        seg.pending.insert(
            r.unit,
            Pending {
                deadline: Instant::now() + seg.timeout,
                waiters: vec![r.word],
            },
        );
        let msg = Message::ShmFault {
            unit: r.unit,
            write,
        };
        if let Err(e) = seg.send(0, &msg) {
            self.kill(slot, &e);
        }
    }

    /// One frame from a segment's manager.
    fn incoming(&mut self, slot: usize) {
        let Some(seg) = self.segs.get_mut(&slot) else {
            return;
        };
        let view = (seg.agent, seg.len, seg.unit, seg.nunits);
        let Some(ch) = seg.ch.as_mut() else {
            return;
        };
        // A segment's content goes from the receive buffer straight into
        // the view; every other frame is decoded into a message.
        let r = match ch.recv_raw() {
            Ok(f) => match f.shm_data() {
                Some(Ok(c)) => store_data(view, c),
                Some(Err(e)) => Err(format!("receiving from the manager: {e}")),
                None => match f.decode() {
                    Ok(msg) => {
                        let id = f.request_id;
                        self.frame(slot, id, msg)
                    }
                    Err(e) => Err(format!("receiving from the manager: {e}")),
                },
            },
            Err(ChannelError::Closed) => Err("the manager closed the connection".into()),
            Err(e) => Err(format!("receiving from the manager: {e}")),
        };
        if let Err(e) = r {
            self.kill(slot, &e);
        }
    }

    fn frame(&mut self, slot: usize, id: u64, msg: Message) -> Result<(), String> {
        let Some(seg) = self.segs.get_mut(&slot) else {
            return Ok(());
        };
        match msg {
            Message::ShmGrant { unit, write } => {
                if seg.span(unit).is_none() {
                    return Err(format!("ShmGrant for unit {unit} of {}", seg.nunits));
                }
                // A read-only attachment never asks for write; never open
                // its view for writing whatever the manager says.
                let right = if write && !seg.readonly {
                    RIGHT_WRITE
                } else {
                    RIGHT_READ
                };
                seg.set_right(unit, right)?;
                if let Some(p) = seg.pending.remove(&unit) {
                    p.waiters.into_iter().for_each(|w| wake(w, REPLY_RETRY));
                }
                self.maybe_send_detach(slot)?;
            }
            Message::ShmLost { unit } => {
                if seg.span(unit).is_none() {
                    return Err(format!("ShmLost for unit {unit} of {}", seg.nunits));
                }
                let reply = seg.fail_unit(unit);
                if let Some(p) = seg.pending.remove(&unit) {
                    p.waiters.into_iter().for_each(|w| wake(w, reply));
                }
                self.maybe_send_detach(slot)?;
            }
            Message::ShmRevoke {
                unit,
                keep_read,
                want_data,
            } => {
                if seg.span(unit).is_none() {
                    return Err(format!("ShmRevoke for unit {unit} of {}", seg.nunits));
                }
                let have = seg.right(unit);
                let keep = if keep_read {
                    have.min(RIGHT_READ)
                } else {
                    RIGHT_NONE
                };
                // The app view goes down before the content is read, so no
                // thread of ours can write it after we sent it.
                seg.set_right(unit, keep)?;
                if want_data {
                    seg.send_content(unit)?;
                }
                seg.send(0, &Message::ShmRevoked { unit })?;
            }
            Message::Done { .. } | Message::Error { .. }
                if matches!(
                    seg.detach,
                    Some(Detach { phase: DetachPhase::Sent { id: d, .. }, .. }) if d == id
                ) =>
            {
                if let Message::Error { errno, message } = &msg {
                    log::warn!("dipc: the manager refused a detach: {message} (errno {errno})");
                }
                self.finish_detach(slot);
            }
            other => {
                return Err(format!(
                    "unexpected {} from the manager",
                    other.kind().name()
                ))
            }
        }
        Ok(())
    }

    /// The segment cannot be served any more: waiters fail, the app view
    /// closes, later touches raise SIGBUS.
    fn kill(&mut self, slot: usize, why: &str) {
        let Some(seg) = self.segs.get_mut(&slot) else {
            return;
        };
        if seg.ch.is_none() {
            return;
        }
        log::warn!("dipc: distributed segment lost: {why}");
        // The view becomes a trap and the slot turns DEAD before the
        // connection closes, so whoever sees the connection end (the
        // manager, or a test playing it) knows every later touch raises
        // SIGBUS. A detaching view stays closed instead: touches fault as
        // after shmdt.
        let reply = if seg.detach.is_none() {
            let trapped = seg.trap_all();
            table::SLOTS[slot].trapped.store(trapped, SeqCst);
            table::set_state(slot, DEAD);
            if trapped {
                REPLY_RETRY
            } else {
                REPLY_FAIL
            }
        } else {
            REPLY_RETRY
        };
        for r in seg.rights() {
            r.store(RIGHT_NONE, SeqCst);
        }
        for (_, p) in seg.pending.drain() {
            p.waiters.into_iter().for_each(|w| wake(w, reply));
        }
        table::SLOTS[slot].conn_fd.store(-1, SeqCst);
        seg.ch = None;
        if seg.detach.is_some() {
            self.finish_detach(slot);
        }
    }

    fn start_detach(&mut self, slot: usize, reply: mpsc::Sender<()>) {
        let Some(seg) = self.segs.get_mut(&slot) else {
            let _ = reply.send(());
            return;
        };
        if seg.detach.is_some() {
            // Another thread is detaching it; this one is told it is done
            // (the first caller waits for the real end).
            let _ = reply.send(());
            return;
        }
        // Not ours any more for the handler: a touch from now on is a
        // SIGSEGV, as after shmdt. The whole view closes before anything is
        // written back, so the content sent is final.
        table::set_state(slot, DETACHING);
        // SAFETY: the app view is ours, mapped with this length.
        unsafe { libc::mprotect(seg.app as *mut libc::c_void, seg.len, libc::PROT_NONE) };
        seg.detach = Some(Detach {
            phase: DetachPhase::Draining,
            reply,
        });
        if seg.ch.is_none() {
            return self.finish_detach(slot);
        }
        if let Err(e) = self.maybe_send_detach(slot) {
            self.kill(slot, &e);
        }
    }

    /// Once a detaching segment has no fault outstanding: write back every
    /// unit held for write, then `ShmDetach`.
    fn maybe_send_detach(&mut self, slot: usize) -> Result<(), String> {
        let id = self.next_id;
        let Some(seg) = self.segs.get_mut(&slot) else {
            return Ok(());
        };
        match &seg.detach {
            Some(Detach {
                phase: DetachPhase::Draining,
                ..
            }) if seg.pending.is_empty() => {}
            _ => return Ok(()),
        }
        self.next_id += 1;
        for unit in 0..seg.nunits as u32 {
            if seg.right(unit) == RIGHT_WRITE {
                seg.set_right(unit, RIGHT_NONE)?;
                seg.send_content(unit)?;
                seg.send(0, &Message::ShmRevoked { unit })?;
            } else {
                seg.set_right(unit, RIGHT_NONE)?;
            }
        }
        seg.send(id, &Message::ShmDetach)?;
        let deadline = Instant::now() + seg.timeout;
        if let Some(d) = seg.detach.as_mut() {
            d.phase = DetachPhase::Sent { id, deadline };
        }
        Ok(())
    }

    /// Ends a detach: unmaps both views, forgets the segment, answers the
    /// caller. Faults still waiting retry, and fault as not ours.
    fn finish_detach(&mut self, slot: usize) {
        let Some(mut seg) = self.segs.remove(&slot) else {
            return;
        };
        seg.ch = None;
        table::SLOTS[slot].conn_fd.store(-1, SeqCst);
        if table::SLOTS[slot].state.load(SeqCst) != DETACHING {
            table::set_state(slot, DETACHING);
        }
        // SAFETY: both views are ours, mapped with this length, and nothing
        // uses them after this (the handler sees the slot as not ours).
        unsafe {
            libc::munmap(seg.app as *mut libc::c_void, seg.len);
            libc::munmap(seg.agent as *mut libc::c_void, seg.len);
        }
        for (_, p) in seg.pending.drain() {
            p.waiters.into_iter().for_each(|w| wake(w, REPLY_RETRY));
        }
        if let Some(d) = seg.detach.take() {
            let _ = d.reply.send(());
        }
        self.retiring.push(slot);
    }

    /// Faults without an answer in time fail; a detach without an answer
    /// in time ends anyway.
    fn deadlines(&mut self, now: Instant) {
        let mut expired_detach = Vec::new();
        let mut drained = Vec::new();
        for (slot, seg) in self.segs.iter_mut() {
            let late: Vec<u32> = seg
                .pending
                .iter()
                .filter(|(_, p)| p.deadline <= now)
                .map(|(&unit, _)| unit)
                .collect();
            for unit in &late {
                log::warn!("dipc: no answer from the manager for unit {unit} in time");
                let reply = seg.fail_unit(*unit);
                if let Some(p) = seg.pending.remove(unit) {
                    p.waiters.into_iter().for_each(|w| wake(w, reply));
                }
            }
            if !late.is_empty() {
                drained.push(*slot);
            }
            if let Some(Detach {
                phase: DetachPhase::Sent { deadline, .. },
                ..
            }) = &seg.detach
            {
                if *deadline <= now {
                    log::warn!("dipc: no answer from the manager to a detach in time");
                    expired_detach.push(*slot);
                }
            }
        }
        for slot in drained {
            if let Err(e) = self.maybe_send_detach(slot) {
                self.kill(slot, &e);
            }
        }
        for slot in expired_detach {
            self.finish_detach(slot);
        }
    }
}
