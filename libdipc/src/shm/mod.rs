//! Distributed shared memory: `shmget`, `shmat`, `shmdt`, `shmctl`.
//!
//! A segment made with `IPC_DIPC` is known cluster-wide by its key and is
//! a real kernel segment on the host that created it first (the *owner*),
//! as for queues and semaphores (see [`crate::msg`]). Its content is kept
//! coherent by a *manager* process on the owner host. Every process that
//! attaches it, on the owner host too, gets its own private copy: `shmat`
//! returns a mapping of a private memfd that starts inaccessible, and the
//! library fills it from the manager as the program touches it.
//!
//! **Model.** Multiple readers, single writer, strict consistency: a read
//! anywhere returns the value most recently written anywhere, with no sync
//! calls in the program. The unit of coherence is a page (page mode) or the
//! whole segment (segment mode), as the owner's `dipc.conf` says. The first
//! read of a unit faults; the library's SIGSEGV handler asks for a read
//! copy and the access completes when it arrives. The first write faults
//! again and asks for the write right, which takes every other copy away.
//! After that, reads and writes of the unit are plain memory accesses until
//! another host needs the unit. Writers of different pages on different
//! hosts proceed independently in page mode.
//!
//! **Machinery.** The first distributed attach of a process installs a
//! SIGSEGV handler (chaining to the program's: faults that are not dipc's
//! reach the program's handler, or kill the process as usual) and starts
//! one helper thread, the *agent*, which talks to the managers and changes
//! page protections for the whole process. See `fault.rs` and `agent/`.
//!
//! **Errors.** The System V errnos, from the owner's kernel or its manager
//! (`EACCES`, `EINVAL`, `EIDRM`, `ENOENT`, ...). A lost owner adds
//! `ETIMEDOUT`, `ECONNRESET`, `ECONNREFUSED`, `EHOSTUNREACH`; `ENOTCONN`
//! means this host's dipcd is not running.
//!
//! **Differences from System V**, all following from private copies:
//!
//! - If the owner host, or the host holding the only valid copy of a unit,
//!   dies, a process touching an affected unit gets **SIGBUS** (with
//!   `si_addr` the address touched) within the request time-out, never a
//!   hang. A segment whose manager connection closes or breaks the protocol
//!   is *dead*: its whole mapping stays inaccessible and every later touch
//!   raises SIGBUS, until `shmdt`. A lost unit, or one whose fault got no
//!   answer in time, raises SIGBUS at every touch until the manager grants
//!   it after all. The SIGBUS is a real fault of the access (the unit is
//!   mapped to an empty memfd, see `fault.rs`), delivered by the program's
//!   own disposition and the kernel's rules for faults (blocked or ignored,
//!   it kills), never raised inside dipc's SIGSEGV handler, so a small
//!   alternate signal stack holds it. A SIGBUS handler must not return
//!   (the access would repeat and fault again).
//! - A **fork** child does not inherit distributed attachments: touching
//!   their addresses in the child gives SIGSEGV (System V children inherit
//!   attachments). The child may attach again.
//! - **exit** detaches every segment, so what the process wrote is written
//!   back. A process killed by SIGKILL (or that calls `exec` or `_exit`
//!   without `shmdt`) loses the units it held for writing: the manager
//!   marks them lost, and touching them anywhere raises SIGBUS.
//! - A **system call** given an address in a distributed segment that the
//!   process has not touched yet fails with `EFAULT` (the kernel does not
//!   raise SIGSEGV for its own accesses): touch the memory first (read it
//!   before `write(2)`, write it before `read(2)`).
//! - SIGSEGV must not be blocked in a thread that touches a distributed
//!   segment (a blocked fault signal kills the process).
//! - A program that installs its own SIGSEGV handler *after* attaching
//!   takes the faults away from dipc until its next distributed attach,
//!   which puts dipc's handler back in front (chaining to the program's).
//!   Installing it before the first attach is always right.
//! - `shm_nattch` counts attaches on every host; `shm_lpid`, `shm_atime`
//!   and `shm_dtime` are those of the manager's own attach on the owner.
//! - `SHM_LOCK`, `SHM_UNLOCK` on a distributed segment give `EINVAL`.
//!   `IPC_INFO`, `SHM_INFO`, `SHM_STAT` and `SHM_STAT_ANY` describe this
//!   host's kernel only.
//! - Each unit that has different protection from its neighbours is its own
//!   kernel mapping: page mode on segments of more than about
//!   `vm.max_map_count` pages can fail (the segment then dies: SIGBUS).

mod agent;
mod fault;
mod table;

use crate::client::Client;
use crate::dist::{self, client_errno, KindOps};
pub use crate::dist::{Errno, IPC_DIPC};
use crate::msg::io_err;
use crate::state::{self, Route};
use agent::{Conn, Params};
use dipc_common::channel::{Channel, Codec};
use dipc_common::config::Config;
use dipc_common::sysv;
use dipc_common::wire::{IpcKind, Message, Origin, SemArg};
pub use dipc_common::wire::{IpcSet, ShmInfo};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// Linux `shmctl` commands the libc crate lacks.
pub const SHM_STAT: i32 = 13;
pub const SHM_INFO: i32 = 14;
pub const SHM_STAT_ANY: i32 = 15;

/// This thread's `errno`.
pub(crate) fn last_errno() -> Errno {
    sysv::errno()
}

static OPS: KindOps = KindOps {
    kind: IpcKind::Shm,
    // IPC_DIPC is SHM_NORESERVE to the kernel: never pass it on.
    get: |key, flags, size| sysv::shmget(key, size, flags & !IPC_DIPC),
    rmid: sysv::shmctl_rmid,
    set: sysv::shmctl_set,
    perm: |id| sysv::shmctl_stat(id).map(|i| i.perm),
    ctl: |(id, origin), _, cmd, arg| Message::ShmCtl {
        id,
        origin,
        cmd,
        set: dist::ipc_set(arg),
    },
};

pub(crate) fn route(id: i32) -> Route {
    dist::route(&OPS, id)
}

/// `shmget`. With `IPC_DIPC` (and a key other than `IPC_PRIVATE`) the
/// segment is distributed. As from the kernel, getting an existing segment
/// with a `size` larger than it is `EINVAL`, also when it lives on another
/// host (whose kernel checks it, see `dist::get`).
pub fn get(key: i32, size: usize, flags: i32) -> Result<i32, Errno> {
    dist::get(&OPS, key, flags, size as u64)
}

/// `SHMLBA`: the alignment `SHM_RND` rounds to.
fn shmlba() -> usize {
    let page = agent::page_size();
    if cfg!(target_arch = "aarch64") {
        4 * page
    } else {
        page
    }
}

/// The address `shmat` maps at, as the kernel checks and rounds it.
fn fixed_addr(addr: *const libc::c_void, flags: i32) -> Result<Option<usize>, Errno> {
    let remap = flags & libc::SHM_REMAP != 0;
    let mut a = addr as usize;
    let lba = shmlba();
    if a & (lba - 1) != 0 {
        if flags & libc::SHM_RND == 0 {
            return Err(libc::EINVAL);
        }
        a &= !(lba - 1);
    }
    if a == 0 {
        return if remap { Err(libc::EINVAL) } else { Ok(None) };
    }
    Ok(Some(a))
}

/// `shmat`. A distributed segment is mapped as a private copy that the
/// library keeps coherent (see the module documentation); `SHM_RDONLY`,
/// `SHM_EXEC`, `SHM_RND` and `SHM_REMAP` mean what they mean to the
/// kernel.
///
/// # Safety
/// With an `addr` and `SHM_REMAP`, the mapping replaces whatever was mapped
/// there, as shmat(2) does.
pub unsafe fn attach(
    id: i32,
    addr: *const libc::c_void,
    flags: i32,
) -> Result<*mut libc::c_void, Errno> {
    let route = route(id);
    if route == Route::Local {
        // SAFETY: the caller's contract is shmat's.
        let p = unsafe { dipc_common::sysv::raw::shmat(id, addr, flags) };
        if p as isize == -1 {
            return Err(last_errno());
        }
        return Ok(p);
    }
    let at = fixed_addr(addr, flags)?;
    let readonly = flags & libc::SHM_RDONLY != 0;
    let config = state::config().map_err(client_errno)?;
    let (conn, codec, size, unit) = match route {
        Route::Remote {
            owner,
            id: rid,
            origin,
        } => open_remote(config, owner, (rid, origin), readonly)?,
        _ => open_owned(config, id, readonly)?,
    };
    let params = Params {
        size,
        unit,
        readonly,
        exec: flags & libc::SHM_EXEC != 0,
        addr: at,
        remap: flags & libc::SHM_REMAP != 0,
        timeout: config.timeouts.request,
        max_frame: config.max_frame,
    };
    let app = agent::attach(conn, codec, params)?;
    lock_ids().push(AttachedId {
        pid: std::process::id(),
        addr: app,
        id,
        flags: flags & (libc::SHM_RDONLY | libc::SHM_EXEC),
    });
    Ok(app as *mut libc::c_void)
}

/// The id and flags each distributed attachment of this process was made
/// with: what a move re-attaches in the new process (see
/// [`attachments`]). A forked child has none (it inherits no distributed
/// attachment), hence the pid.
struct AttachedId {
    pid: u32,
    addr: usize,
    id: i32,
    flags: i32,
}

static IDS: std::sync::Mutex<Vec<AttachedId>> = std::sync::Mutex::new(Vec::new());

fn lock_ids() -> std::sync::MutexGuard<'static, Vec<AttachedId>> {
    // Every change is one push or one retain: a panic elsewhere cannot
    // leave the list half changed.
    IDS.lock().unwrap_or_else(|p| p.into_inner())
}

/// A distributed attachment, as a move carries it: `shmat(id, addr,
/// flags)` makes it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AttachedAt {
    pub id: i32,
    pub addr: usize,
    pub flags: i32,
}

/// At most this many attachments a process can have (the agent's slots).
pub(crate) const MAX_ATTACHED: usize = table::MAX_SLOTS;

/// This process's distributed attachments. `EBUSY` if one of them is dead
/// (its manager was lost: it cannot be written back, nor made again).
pub(crate) fn attachments() -> Result<Vec<AttachedAt>, Errno> {
    let me = std::process::id();
    let ids = lock_ids();
    let mut v = Vec::new();
    for slot in table::attached() {
        let s = &table::SLOTS[slot];
        let addr = s.start.load(std::sync::atomic::Ordering::SeqCst);
        let known = ids.iter().find(|a| a.pid == me && a.addr == addr);
        match (s.state.load(std::sync::atomic::Ordering::SeqCst), known) {
            (table::ACTIVE, Some(a)) => v.push(AttachedAt {
                id: a.id,
                addr,
                flags: a.flags,
            }),
            _ => return Err(libc::EBUSY),
        }
    }
    Ok(v)
}

/// Detaches `list` (what this process wrote goes back to the managers).
/// On a failure, those already detached are attached again and the error
/// is returned.
pub(crate) fn detach_all(list: &[AttachedAt]) -> Result<(), Errno> {
    for (i, a) in list.iter().enumerate() {
        // SAFETY: the process is frozen at its safe point: nothing of it
        // uses the segment until it is attached again at the address.
        if let Err(e) = unsafe { detach(a.addr as *const libc::c_void) } {
            if let Err((e2, at)) = reattach(&list[..i]) {
                log::error!("dipc: re-attaching shm id {} at {at:#x}: errno {e2}", a.id);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Attaches `list` again, each at its address. On a failure, those already
/// attached are detached again; the error names the address.
pub(crate) fn reattach(list: &[AttachedAt]) -> Result<(), (Errno, usize)> {
    for (i, a) in list.iter().enumerate() {
        // SAFETY: without SHM_REMAP the mapping never replaces another.
        let got = unsafe { attach(a.id, a.addr as *const libc::c_void, a.flags) };
        if got != Ok(a.addr as *mut libc::c_void) {
            if let Ok(p) = got {
                // SAFETY: just attached here, and not handed out.
                let _ = unsafe { detach(p) };
            }
            let _ = detach_all(&list[..i]);
            return Err((got.err().unwrap_or(libc::EADDRINUSE), a.addr));
        }
    }
    Ok(())
}

/// Attaches on the owner host: dipcd makes sure the manager runs, then
/// the manager's socket takes the attach.
fn open_owned(config: &Config, id: i32, readonly: bool) -> Result<(Conn, Codec, u64, u64), Errno> {
    match state::control(&Message::ShmOpen { id }) {
        Ok(Message::Done { .. }) => {}
        Ok(_) => return Err(libc::EPROTO),
        Err(e) => return Err(client_errno(e)),
    }
    let s = UnixStream::connect(config.shm_socket(id)).map_err(io_errno)?;
    set_timeouts(&s, config.timeouts.request).map_err(io_errno)?;
    let mut ch = Channel::new(s, config.max_frame);
    let (size, unit) = handshake(&mut ch, (id, Origin::default()), readonly)?;
    // The manager speaks for the segment in this host's kernel (its size,
    // or that rounded up to pages).
    let page = agent::page_size() as u64;
    if sysv::shmctl_stat(id).is_ok_and(|i| size < i.segsz || size > i.segsz.div_ceil(page) * page) {
        log::warn!("dipc: the manager of segment {id} reports a size of {size} bytes");
        return Err(libc::EPROTO);
    }
    let (s, codec) = ch.into_parts();
    Ok((Conn::Unix(s), codec, size, unit))
}

/// Attaches from another host: a session to the owner's worker, which
/// hands the very connection to the manager.
fn open_remote(
    config: &Config,
    owner: SocketAddr,
    target: (i32, Origin),
    readonly: bool,
) -> Result<(Conn, Codec, u64, u64), Errno> {
    let (s, codec) = crate::retry::retrying(|| Client::session(config, owner))
        .map_err(client_errno)?
        .into_parts();
    s.set_read_timeout(Some(config.timeouts.request))
        .map_err(io_errno)?;
    s.set_write_timeout(Some(config.timeouts.request))
        .map_err(io_errno)?;
    let mut ch = Channel::new(s, config.max_frame).with_codec(codec);
    let (size, unit) = handshake(&mut ch, target, readonly)?;
    let (s, codec) = ch.into_parts();
    Ok((Conn::Tcp(s), codec, size, unit))
}

fn set_timeouts(s: &UnixStream, t: Duration) -> io::Result<()> {
    s.set_read_timeout(Some(t))?;
    s.set_write_timeout(Some(t))
}

fn io_errno(e: io::Error) -> Errno {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// `ShmAttach`, answered `ShmAttached { size, unit }` or `Error`. The
/// origin matters to a remote owner's worker only (the manager of a
/// segment of this host is asked directly).
fn handshake<S: Read + Write>(
    ch: &mut Channel<S>,
    (id, origin): (i32, Origin),
    readonly: bool,
) -> Result<(u64, u64), Errno> {
    match ch.call(
        1,
        &Message::ShmAttach {
            id,
            origin,
            readonly,
            handover: None,
        },
    ) {
        Ok(Message::ShmAttached { size, unit }) => Ok((size, unit)),
        Ok(Message::Error { errno, message }) => {
            log::debug!("dipc: attach refused: {message}");
            Err(errno)
        }
        Ok(other) => {
            log::debug!("dipc: unexpected {} to an attach", other.kind().name());
            Err(libc::EPROTO)
        }
        Err(e) => Err(e.errno()),
    }
}

/// Attaches a distributed segment over a connection on which the attach
/// handshake already happened (the manager answered `ShmAttached { size,
/// unit }`), the way `shmat` does after its handshake. For tests that play
/// the manager; `timeout` stands for the configured request time-out.
#[doc(hidden)]
pub fn attach_with_connection(
    stream: UnixStream,
    size: u64,
    unit: u64,
    readonly: bool,
    timeout: Duration,
) -> Result<*mut u8, Errno> {
    let max_frame = state::config().map_or(1 << 20, |c| c.max_frame);
    let params = Params {
        size,
        unit,
        readonly,
        exec: false,
        addr: None,
        remap: false,
        timeout,
        max_frame,
    };
    agent::attach(Conn::Unix(stream), Codec::Plain, params).map(|a| a as *mut u8)
}

/// `shmdt`. For a distributed segment, what this process wrote is written
/// back to the manager first; returns when the manager confirmed, or after
/// the request time-out if it does not answer.
///
/// # Safety
/// As for shmdt(2): nothing may use the attachment at `addr` afterwards.
pub unsafe fn detach(addr: *const libc::c_void) -> Result<(), Errno> {
    if let Some(slot) = table::find_start(addr as usize) {
        let me = std::process::id();
        lock_ids().retain(|a| a.pid == me && a.addr != addr as usize);
        return agent::detach(slot);
    }
    // SAFETY: the caller's contract is shmdt's.
    if unsafe { dipc_common::sysv::raw::shmdt(addr) } != 0 {
        return Err(last_errno());
    }
    Ok(())
}

/// The participant count of a segment of this host, from its manager;
/// `None` if no manager runs (then the kernel's count stands).
pub(crate) fn manager_nattch(id: i32) -> Option<u64> {
    let config = state::config().ok()?;
    let s = UnixStream::connect(config.shm_socket(id)).ok()?;
    set_timeouts(&s, config.timeouts.request).ok()?;
    let mut ch = Channel::new(s, config.max_frame);
    let q = Message::ShmQuery {
        id,
        origin: Origin::default(),
    };
    match ch.call(1, &q) {
        Ok(Message::ShmState { nattch, .. }) => Some(nattch),
        _ => None,
    }
}

/// `shmctl` with `IPC_STAT`. `nattch` counts attaches on every host.
pub fn stat(id: i32) -> Result<ShmInfo, Errno> {
    let local = |r| {
        let mut info = sysv::shmctl_stat(id)?;
        if r != Route::Local {
            if let Some(n) = manager_nattch(id) {
                info.nattch = n;
            }
        }
        Ok(info)
    };
    let ctl = (0, libc::IPC_STAT, SemArg::None);
    dist::ctl(&OPS, id, local, ctl, |m| match m {
        Message::ShmStat { info } => Some(info),
        _ => None,
    })
}

/// `shmctl` with `IPC_SET`.
pub fn set(id: i32, set: &IpcSet) -> Result<(), Errno> {
    dist::set(&OPS, id, set)
}

/// `shmctl` with `IPC_RMID`: marks the segment for removal, everywhere; it
/// goes when the last attach anywhere ends, and its key is free at once.
pub fn remove(id: i32) -> Result<(), Errno> {
    dist::remove(&OPS, id)
}

/// Whether `id` (as returned by [`get`]) is a distributed segment (owned
/// here or elsewhere).
pub fn is_distributed(id: i32) -> bool {
    route(id) != Route::Local
}

/// A shared memory segment, for Rust programs.
///
/// ```no_run
/// use dipc::shm::{Segment, IPC_DIPC};
/// let seg = Segment::get(0x5a, 4096, libc::IPC_CREAT | IPC_DIPC | 0o666)?;
/// let at = seg.attach(0)?;
/// // SAFETY: the segment is 4096 bytes; other processes may write it too,
/// // so accesses go through raw pointers, never references.
/// unsafe { at.as_ptr().write_volatile(42) };
/// at.detach()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    id: i32,
}

impl Segment {
    /// `shmget(key, size, flags)`; add [`IPC_DIPC`] to `flags` for a
    /// distributed segment.
    pub fn get(key: i32, size: usize, flags: i32) -> io::Result<Segment> {
        get(key, size, flags)
            .map(|id| Segment { id })
            .map_err(io_err)
    }

    pub fn from_id(id: i32) -> Segment {
        Segment { id }
    }

    pub fn id(&self) -> i32 {
        self.id
    }

    /// `shmat(id, NULL, flags)` (`SHM_RDONLY`, `SHM_EXEC`).
    pub fn attach(&self, flags: i32) -> io::Result<Attachment> {
        let flags = flags & !(libc::SHM_REMAP | libc::SHM_RND);
        // SAFETY: without an address nothing existing is replaced.
        unsafe { attach(self.id, std::ptr::null(), flags) }
            .map(|p| Attachment { addr: p as *mut u8 })
            .map_err(io_err)
    }

    pub fn stat(&self) -> io::Result<ShmInfo> {
        stat(self.id).map_err(io_err)
    }

    pub fn set(&self, s: &IpcSet) -> io::Result<()> {
        set(self.id, s).map_err(io_err)
    }

    pub fn remove(self) -> io::Result<()> {
        remove(self.id).map_err(io_err)
    }
}

/// An attached segment; dropping it detaches it (as [`Attachment::detach`],
/// ignoring errors).
#[derive(Debug)]
pub struct Attachment {
    addr: *mut u8,
}

// SAFETY: an attachment is an address in the process's memory, valid for
// every thread; the memory itself is only reached through raw pointers.
unsafe impl Send for Attachment {}
// SAFETY: as above; the methods take &self only to read the address.
unsafe impl Sync for Attachment {}

impl Attachment {
    /// The first byte of the segment.
    pub fn as_ptr(&self) -> *mut u8 {
        self.addr
    }

    /// `shmdt`: writes back what this process wrote, then unmaps.
    pub fn detach(self) -> io::Result<()> {
        let addr = self.addr;
        std::mem::forget(self);
        // SAFETY: the attachment is consumed: nothing reaches it any more
        // through this value.
        unsafe { detach(addr as *const libc::c_void) }.map_err(io_err)
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        // SAFETY: as in detach.
        let _ = unsafe { detach(self.addr as *const libc::c_void) };
    }
}

#[cfg(test)]
mod tests;
