//! The process-wide table of distributed attachments, shared between the
//! SIGSEGV handler, the agent thread and the API calls.
//!
//! The handler may run on any thread at any moment, including inside the
//! allocator or while another thread holds a lock, so everything it reads
//! lives here, in fixed static storage made of atomics: no allocation, no
//! locks. Each attachment occupies one [`Slot`]. A slot's fields are
//! written only while its state is neither [`ACTIVE`] nor [`DEAD`], and
//! become visible to the handler when the state is stored (SeqCst) as one
//! of those.
//!
//! Freeing a slot's per-unit rights array must not race with a handler that
//! is reading it: the handler counts itself in [`USERS`] before looking at
//! any slot and out again before it blocks, and a slot is only freed when it
//! has left `ACTIVE`/`DEAD` *and* `USERS` has been seen at zero afterwards
//! (see [`try_free`]). Because the handler never blocks while counted, the
//! agent never waits for it: it retries the free later.

use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU8, AtomicUsize};

/// Most distributed attachments one process may have at once (`EMFILE`
/// beyond, as for the kernel's per-process attach limit).
pub const MAX_SLOTS: usize = 256;

/// Slot states.
pub const FREE: u8 = 0;
/// Taken by an attach or a detach in progress: the handler ignores it.
pub const RESERVED: u8 = 1;
/// Attached and served by the agent.
pub const ACTIVE: u8 = 2;
/// The connection to the manager is gone: every touch raises SIGBUS (the
/// agent maps the whole view as a trap first, see [`Slot::trapped`]).
pub const DEAD: u8 = 3;
/// Being detached: touches are not ours any more (SIGSEGV, as after
/// `shmdt`).
pub const DETACHING: u8 = 4;

/// Rights on a unit, as the per-unit arrays hold them.
pub const RIGHT_NONE: u8 = 0;
pub const RIGHT_READ: u8 = 1;
pub const RIGHT_WRITE: u8 = 2;

/// Replies the agent writes into a waiting handler's word. *Retry*: the
/// access repeats; it completes if the unit is now open, raises a real
/// SIGBUS if the agent mapped the unit as a trap (lost, or no answer in
/// time), and is not ours any more if the segment was detached. *Fail*:
/// the agent could not map the trap, the handler must raise SIGBUS itself.
pub const REPLY_RETRY: u32 = 1;
pub const REPLY_FAIL: u32 = 2;

pub struct Slot {
    pub state: AtomicU8,
    pub readonly: AtomicBool,
    /// Attached with `SHM_EXEC`: grants include `PROT_EXEC`.
    pub exec: AtomicBool,
    /// Distinguishes successive attachments in the same slot, so a request
    /// that was in flight while a slot was reused is recognised as stale.
    pub gen: AtomicU32,
    /// The app view: address and length (a multiple of the page size).
    pub start: AtomicUsize,
    pub len: AtomicUsize,
    /// Bytes per unit of coherence (a multiple of the page size).
    pub unit: AtomicUsize,
    pub nunits: AtomicUsize,
    /// `nunits` rights, written by the agent only.
    pub rights: AtomicPtr<AtomicU8>,
    /// The connection to the manager, for the fork child to close.
    pub conn_fd: AtomicI32,
    /// The whole app view is mapped as a trap (a touch raises SIGBUS
    /// without a SIGSEGV first): set by the agent before the slot turns
    /// [`DEAD`]. A handler that still faults on a dead slot whose view is
    /// not a trap (the agent could not map it) raises SIGBUS itself.
    pub trapped: AtomicBool,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            state: AtomicU8::new(FREE),
            readonly: AtomicBool::new(false),
            exec: AtomicBool::new(false),
            gen: AtomicU32::new(0),
            start: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            unit: AtomicUsize::new(0),
            nunits: AtomicUsize::new(0),
            rights: AtomicPtr::new(std::ptr::null_mut()),
            conn_fd: AtomicI32::new(-1),
            trapped: AtomicBool::new(false),
        }
    }
}

pub static SLOTS: [Slot; MAX_SLOTS] = [const { Slot::new() }; MAX_SLOTS];

/// Handlers currently reading the table.
pub static USERS: AtomicUsize = AtomicUsize::new(0);

/// The process whose agent serves the table; 0 when none. A child made by
/// a raw `fork` system call (no atfork handlers) sees another pid here and
/// treats every fault as foreign, rather than asking its parent's agent.
pub static OWNER_PID: AtomicI32 = AtomicI32::new(0);

/// The write end of the agent's request pipe; -1 when there is no agent.
pub static REQUEST_FD: AtomicI32 = AtomicI32::new(-1);

static NEXT_GEN: AtomicU32 = AtomicU32::new(1);

/// One fault, as the handler sends it to the agent with a single `write`
/// (smaller than `PIPE_BUF`, so atomic).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub pid: i32,
    pub slot: u32,
    pub gen: u32,
    pub unit: u32,
    pub write: u32,
    pub _pad: u32,
    /// Address of the handler's `AtomicU32` reply word, on its stack.
    pub word: u64,
}

pub const REQUEST_LEN: usize = std::mem::size_of::<Request>();
const _: () = assert!(REQUEST_LEN == 32 && REQUEST_LEN <= libc::PIPE_BUF);

impl Request {
    #[cfg(test)]
    pub fn to_bytes(self) -> [u8; REQUEST_LEN] {
        let mut b = [0u8; REQUEST_LEN];
        b[0..4].copy_from_slice(&self.pid.to_ne_bytes());
        b[4..8].copy_from_slice(&self.slot.to_ne_bytes());
        b[8..12].copy_from_slice(&self.gen.to_ne_bytes());
        b[12..16].copy_from_slice(&self.unit.to_ne_bytes());
        b[16..20].copy_from_slice(&self.write.to_ne_bytes());
        b[24..32].copy_from_slice(&self.word.to_ne_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; REQUEST_LEN]) -> Request {
        let u32_at = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[24..32]);
        Request {
            pid: u32_at(0) as i32,
            slot: u32_at(4),
            gen: u32_at(8),
            unit: u32_at(12),
            write: u32_at(16),
            _pad: 0,
            word: u64::from_ne_bytes(w),
        }
    }
}

/// Takes a free slot, marking it [`RESERVED`], with a fresh generation.
pub fn reserve() -> Option<usize> {
    for (i, s) in SLOTS.iter().enumerate() {
        if s.state
            .compare_exchange(FREE, RESERVED, SeqCst, Relaxed)
            .is_ok()
        {
            s.gen.store(NEXT_GEN.fetch_add(1, Relaxed), Relaxed);
            return Some(i);
        }
    }
    None
}

/// Fills a reserved slot (not yet visible to the handler).
#[allow(clippy::too_many_arguments)]
pub fn fill(
    i: usize,
    start: usize,
    len: usize,
    unit: usize,
    rights: Box<[AtomicU8]>,
    readonly: bool,
    exec: bool,
    conn_fd: i32,
) {
    let s = &SLOTS[i];
    s.start.store(start, Relaxed);
    s.len.store(len, Relaxed);
    s.unit.store(unit, Relaxed);
    s.nunits.store(rights.len(), Relaxed);
    s.readonly.store(readonly, Relaxed);
    s.exec.store(exec, Relaxed);
    s.conn_fd.store(conn_fd, Relaxed);
    s.trapped.store(false, Relaxed);
    let old = s
        .rights
        .swap(Box::into_raw(rights) as *mut AtomicU8, SeqCst);
    debug_assert!(old.is_null());
}

/// Makes a slot visible to the handler in `state` (`ACTIVE` or `DEAD`), or
/// hides it again (`DETACHING`, `RESERVED`).
pub fn set_state(i: usize, state: u8) {
    SLOTS[i].state.store(state, SeqCst);
}

/// Frees a slot that is [`RESERVED`] or [`DETACHING`] if no handler can
/// still be reading it; returns false if the caller must try again later.
pub fn try_free(i: usize) -> bool {
    let s = &SLOTS[i];
    debug_assert!(!matches!(s.state.load(SeqCst), ACTIVE | DEAD));
    // A handler that saw this slot ACTIVE or DEAD counted itself in USERS
    // before that load, which (SeqCst) precedes our state store, so it is
    // still counted here if it could be reading.
    if USERS.load(SeqCst) != 0 {
        return false;
    }
    let n = s.nunits.swap(0, Relaxed);
    let p = s.rights.swap(std::ptr::null_mut(), SeqCst);
    if !p.is_null() {
        // SAFETY: p came from Box::into_raw of a slice of n rights in
        // `fill`, and no handler can reach it any more (above).
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, n)) });
    }
    s.start.store(0, Relaxed);
    s.len.store(0, Relaxed);
    s.conn_fd.store(-1, Relaxed);
    s.trapped.store(false, Relaxed);
    s.state.store(FREE, SeqCst);
    true
}

/// The rights array of a slot that the caller keeps from being freed (the
/// agent, for the segments it serves).
///
/// # Safety
/// The slot must be filled and not freed for as long as the slice is used.
pub unsafe fn rights<'a>(i: usize) -> &'a [AtomicU8] {
    let s = &SLOTS[i];
    let p = s.rights.load(SeqCst);
    let n = s.nunits.load(Relaxed);
    if p.is_null() {
        return &[];
    }
    // SAFETY: per the contract, p points to n live rights.
    unsafe { std::slice::from_raw_parts(p, n) }
}

/// The slot whose app view starts at `addr`, attached (or dead) in this
/// process.
pub fn find_start(addr: usize) -> Option<usize> {
    if OWNER_PID.load(SeqCst) != std::process::id() as i32 {
        return None;
    }
    SLOTS.iter().position(|s| {
        matches!(s.state.load(SeqCst), ACTIVE | DEAD) && s.start.load(Relaxed) == addr
    })
}

/// Every slot attached (or dead) in this process.
pub fn attached() -> Vec<usize> {
    if OWNER_PID.load(SeqCst) != std::process::id() as i32 {
        return Vec::new();
    }
    (0..MAX_SLOTS)
        .filter(|&i| matches!(SLOTS[i].state.load(SeqCst), ACTIVE | DEAD))
        .collect()
}

/// In a fork child (single-threaded, from the atfork handler): forget
/// every attachment. The app and agent views were not inherited
/// (`MADV_DONTFORK`); the connections are closed here, which leaves the
/// parent's copies open. The rights arrays are leaked rather than freed:
/// the dead agent's state in this copy of memory still points at them.
pub fn reset_in_child() {
    for s in SLOTS.iter() {
        if s.state.load(Relaxed) != FREE {
            let fd = s.conn_fd.swap(-1, Relaxed);
            if fd >= 0 {
                // SAFETY: the fd was the connection of this slot; nothing
                // in the child uses it any more.
                unsafe { libc::close(fd) };
            }
            s.rights.store(std::ptr::null_mut(), Relaxed);
            s.nunits.store(0, Relaxed);
            s.start.store(0, Relaxed);
            s.len.store(0, Relaxed);
            s.trapped.store(false, Relaxed);
            s.state.store(FREE, SeqCst);
        }
    }
    USERS.store(0, SeqCst);
    OWNER_PID.store(0, SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips() {
        let r = Request {
            pid: 77,
            slot: 3,
            gen: 0xdead_beef,
            unit: 123_456,
            write: 1,
            _pad: 0,
            word: 0x7fff_1234_5678,
        };
        assert_eq!(Request::from_bytes(&r.to_bytes()), r);
    }
}
