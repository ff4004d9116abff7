//! The SIGSEGV handler that traps accesses to distributed segments.
//!
//! A process's app views start `PROT_NONE`; the first read of a unit, or
//! the first write to a unit held for reading, faults. The handler looks the
//! address up in the static slot table ([`super::table`]); if it is ours, it
//! sends a request record to the agent thread with one `write()` on the
//! request pipe and sleeps on a futex word on its own stack until the agent
//! answers *retry*, and the access repeats: the unit is now accessible, or
//! the segment is gone (the access is not ours any more), or the unit is
//! lost and the agent has mapped it as a *trap*.
//!
//! **SIGBUS.** A lost unit (`ShmLost`, no answer in time, a dead
//! connection) must raise SIGBUS. The handler does not raise it: a signal
//! raised inside a handler is delivered on top of the handler's frame, and
//! with `SA_ONSTACK` both frames sit on the thread's alternate signal
//! stack. Rust gives each thread an 8 KiB one; a signal frame with AVX-512
//! state takes 3.6 KB, so two frames and the handlers' own stack overflow
//! it and the process dies of SIGSEGV instead. Instead the agent maps the
//! unit's range of the app view to an empty memfd (`MAP_SHARED`, beyond
//! the file's end) before it answers, and the handler returns: the access
//! repeats, and the kernel raises a real SIGBUS (`BUS_ADRERR`, `si_addr`
//! the address touched) from the program's own context, with nothing of
//! ours on any stack, delivered by the program's own SIGBUS disposition
//! and by the kernel's rules for a fault (a blocked or ignored SIGBUS
//! kills the process). Every later touch of the unit raises SIGBUS the
//! same way, without a fault to us, until the agent maps the unit back
//! (a late grant). Only if the agent cannot map the trap (out of memory or
//! mappings) does it answer *fail*, and the handler raises SIGBUS itself,
//! the old way.
//!
//! Everything here is async-signal-safe: raw system calls (`write`,
//! `futex`, `sigaction`, `pthread_sigmask`, `tgkill`), atomics, no
//! allocation, no locks, no formatting, no panics. `errno` is saved and
//! restored.
//!
//! Faults that are not ours (another address, a write to a read-only
//! attachment, an instruction fetch from a segment attached without
//! `SHM_EXEC`, a SIGSEGV sent with `kill`) go to the action that was
//! installed before ours: the program's handler, or the default action,
//! which is restored so that the access repeats and the process dies of
//! SIGSEGV exactly as without dipc.
//!
//! The reply waits on a futex word rather than a pipe (the brief allowed
//! either): no descriptor per fault, two system calls instead of five, and
//! nothing a fork child could share with its parent.

use super::table::{self, Request, ACTIVE, DEAD, REPLY_FAIL, RIGHT_READ, SLOTS, USERS};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicUsize};

/// The action that was installed before ours, for chaining.
static PREV_HANDLER: AtomicUsize = AtomicUsize::new(libc::SIG_DFL);
static PREV_FLAGS: AtomicI32 = AtomicI32::new(0);

/// Installs the handler unless it is the current SIGSEGV action, keeping
/// the current one for chaining. Called at every distributed attach, so a
/// program that installed its own handler after an earlier attach gets
/// dipc's back in front of it (and chained to it) at the next one.
pub fn install() -> Result<(), i32> {
    // SAFETY: sigaction is plain data; all zeros is a value.
    let mut cur: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: sigaction with a null new action only reads the current one.
    if unsafe { libc::sigaction(libc::SIGSEGV, std::ptr::null(), &mut cur) } != 0 {
        return Err(crate::shm::last_errno());
    }
    if cur.sa_sigaction == on_fault as *const () as usize {
        return Ok(());
    }
    PREV_FLAGS.store(cur.sa_flags, SeqCst);
    PREV_HANDLER.store(cur.sa_sigaction, SeqCst);
    // SAFETY: a zeroed sigaction is valid; we fill handler, flags, mask.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = on_fault as *const () as usize;
    // SA_NODEFER: a signal handler of the program that touches a segment
    // while our handler waits (nested fault) must fault into us again
    // rather than be killed by a blocked SIGSEGV. SA_ONSTACK: a program
    // that set up an alternate stack for stack overflows still gets its
    // overflow chained on that stack.
    sa.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER | libc::SA_ONSTACK | libc::SA_RESTART;
    // SAFETY: sa_mask is a valid sigset_t inside sa.
    unsafe { libc::sigemptyset(&mut sa.sa_mask) };
    // SAFETY: sa is fully initialised; on_fault has the SA_SIGINFO signature.
    if unsafe { libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut()) } != 0 {
        return Err(crate::shm::last_errno());
    }
    Ok(())
}

/// What the table says about a faulting address.
enum Hit {
    /// Not a distributed segment of ours (or an access it never allows).
    Foreign,
    /// Ask the agent for this right.
    Ask(Request),
    /// The segment's connection is gone (the whole view is a trap if
    /// `trapped`: then a fault here came before the trap was mapped).
    Dead { slot: usize },
}

extern "C" fn on_fault(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: __errno_location returns this thread's errno; the handler
    // must leave it as it found it.
    let errno = unsafe { libc::__errno_location() };
    // SAFETY: errno points to this thread's errno (above).
    let saved = unsafe { *errno };
    // SAFETY: info and ctx are what the kernel passed to an SA_SIGINFO
    // handler (checked for null inside).
    unsafe { handle(sig, info, ctx) };
    // SAFETY: as for `saved`: this thread's errno.
    unsafe { *errno = saved };
}

/// # Safety
/// `info` and `ctx` are null or what the kernel passed to this SIGSEGV
/// handler.
unsafe fn handle(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    if info.is_null() {
        // SAFETY: the kernel's arguments, passed on (this function's contract).
        return unsafe { chain(sig, info, ctx) };
    }
    // SAFETY: info is the kernel's siginfo for this signal.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    // si_code <= 0: sent by kill/sigqueue/tgkill, not a fault.
    // SAFETY: getpid has no preconditions and is async-signal-safe.
    if code <= 0 || table::OWNER_PID.load(SeqCst) != unsafe { libc::getpid() } {
        // SAFETY: the kernel's arguments, passed on (this function's contract).
        return unsafe { chain(sig, info, ctx) };
    }
    match lookup(addr, ctx) {
        // SAFETY: the kernel's arguments, passed on (this function's contract).
        Hit::Foreign => unsafe { chain(sig, info, ctx) },
        Hit::Dead { slot } => no_agent(slot, addr),
        Hit::Ask(mut req) => {
            let word = AtomicU32::new(0);
            req.word = &word as *const AtomicU32 as u64;
            if !send(&req) {
                return no_agent(req.slot as usize, addr);
            }
            wait(&word);
            if word.load(Acquire) == REPLY_FAIL {
                raise_sigbus(addr);
            }
            // Retry: return, and the access repeats (and completes, or
            // raises SIGBUS on the trap, or faults as not ours).
        }
    }
}

/// A fault on a segment that nobody serves any more (dead, or the agent
/// is gone): return onto the trap if the agent mapped one, else raise
/// SIGBUS here. A fault that reaches us on a trap can only be one from
/// before the trap was mapped: any access the trap's protection refuses
/// (a write to a read-only attachment) was found foreign already, where
/// the fault says what access it was. Where it does not, such a write
/// would fault here again and again: raise SIGBUS instead.
fn no_agent(slot: usize, addr: usize) {
    if !SLOTS[slot].trapped.load(SeqCst) || !ACCESS_KNOWN {
        raise_sigbus(addr);
    }
}

/// Whether a fault tells read, write and fetch apart (see [`access`]).
pub const ACCESS_KNOWN: bool = cfg!(target_arch = "x86_64");

/// Finds the slot and unit of `addr` and what kind of access faulted.
fn lookup(addr: usize, ctx: *mut libc::c_void) -> Hit {
    USERS.fetch_add(1, SeqCst);
    let hit = lookup_counted(addr, ctx);
    USERS.fetch_sub(1, SeqCst);
    hit
}

fn lookup_counted(addr: usize, ctx: *mut libc::c_void) -> Hit {
    for (i, s) in SLOTS.iter().enumerate() {
        let state = s.state.load(SeqCst);
        if state != ACTIVE && state != DEAD {
            continue;
        }
        let start = s.start.load(Relaxed);
        let len = s.len.load(Relaxed);
        if addr < start || addr - start >= len {
            continue;
        }
        let unit_size = s.unit.load(Relaxed);
        if unit_size == 0 {
            return Hit::Foreign;
        }
        let unit = (addr - start) / unit_size;
        let readonly = s.readonly.load(Relaxed);
        let exec = s.exec.load(Relaxed);
        let write = match access(ctx) {
            Some(Access::Fetch) if !exec => return Hit::Foreign,
            Some(Access::Write) => true,
            Some(Access::Read | Access::Fetch) => false,
            None => {
                // No error code on this architecture: a fault on a unit we
                // can already read must be a write.
                let rights = s.rights.load(SeqCst);
                let n = s.nunits.load(Relaxed);
                // SAFETY: USERS keeps the array alive while the slot is
                // ACTIVE or DEAD (see table::try_free); unit < n checked.
                unit < n && unsafe { (*rights.add(unit)).load(SeqCst) } >= RIGHT_READ
            }
        };
        if write && readonly {
            // A write to a read-only attachment is the program's fault.
            return Hit::Foreign;
        }
        if state == DEAD {
            return Hit::Dead { slot: i };
        }
        return Hit::Ask(Request {
            pid: 0,
            slot: i as u32,
            gen: s.gen.load(Relaxed),
            unit: unit as u32,
            write: write as u32,
            _pad: 0,
            word: 0,
        });
    }
    Hit::Foreign
}

enum Access {
    Read,
    Write,
    Fetch,
}

/// The kind of access, from the page-fault error code the kernel saved in
/// the context (x86-64: bit 1 write, bit 4 instruction fetch).
#[cfg(target_arch = "x86_64")]
fn access(ctx: *mut libc::c_void) -> Option<Access> {
    if ctx.is_null() {
        return None;
    }
    // SAFETY: for an SA_SIGINFO handler the third argument is the
    // ucontext_t the kernel saved.
    let err =
        unsafe { (*(ctx as *const libc::ucontext_t)).uc_mcontext.gregs[libc::REG_ERR as usize] };
    Some(if err & 0x10 != 0 {
        Access::Fetch
    } else if err & 0x2 != 0 {
        Access::Write
    } else {
        Access::Read
    })
}

#[cfg(not(target_arch = "x86_64"))]
fn access(_ctx: *mut libc::c_void) -> Option<Access> {
    None
}

/// Sends one request record to the agent. False if there is no agent.
fn send(req: &Request) -> bool {
    let fd = table::REQUEST_FD.load(SeqCst);
    if fd < 0 {
        return false;
    }
    let mut r = *req;
    // SAFETY: getpid has no preconditions.
    r.pid = unsafe { libc::getpid() };
    loop {
        // SAFETY: r is REQUEST_LEN bytes of plain data; one write of fewer
        // than PIPE_BUF bytes to a pipe is atomic, so records never mix.
        let n = unsafe {
            libc::write(
                fd,
                &r as *const Request as *const libc::c_void,
                table::REQUEST_LEN,
            )
        };
        if n == table::REQUEST_LEN as isize {
            return true;
        }
        // SAFETY: reading this thread's errno.
        if n < 0 && unsafe { *libc::__errno_location() } == libc::EINTR {
            continue;
        }
        return false;
    }
}

/// Sleeps until the agent stores a reply in `word`.
fn wait(word: &AtomicU32) {
    while word.load(Acquire) == 0 {
        // SAFETY: FUTEX_WAIT on a live, aligned u32 of this process; it
        // returns at once if the word is no longer 0, and on signals
        // (EINTR) and spurious wake-ups we look again.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word as *const AtomicU32,
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                0u32,
                std::ptr::null::<libc::timespec>(),
            )
        };
    }
}

/// Answers a waiting handler (agent side). After the store the handler may
/// return at once and its stack word vanish; a wake on a stale address at
/// worst wakes some other futex waiter spuriously, which every futex user
/// tolerates.
///
/// # Safety
/// `word` must be the address a handler of this process sent in a request
/// and has not had an answer for yet.
pub unsafe fn reply(word: u64, value: u32) {
    let w = word as usize as *const AtomicU32;
    // SAFETY: per the contract, the handler is blocked waiting on w.
    unsafe { (*w).store(value, Release) };
    // SAFETY: FUTEX_WAKE only takes the address as a key.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            w,
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1i32,
        )
    };
}

/// The siginfo of a SIGBUS we raise: Linux's layout for a fault
/// (`si_addr` right after the three ints and padding).
#[repr(C)]
struct BusInfo {
    signo: libc::c_int,
    errno: libc::c_int,
    code: libc::c_int,
    _pad: libc::c_int,
    addr: usize,
    _rest: [u8; 128 - 24],
}
const _: () = assert!(std::mem::size_of::<BusInfo>() == std::mem::size_of::<libc::siginfo_t>());

/// Raises SIGBUS for `addr` in this thread, as the kernel raises a
/// synchronous fault: an ignored SIGBUS gets its default action back and a
/// blocked one is unblocked for the delivery (else the access would repeat
/// forever). A handler that returns makes the access fault again, and it
/// gets SIGBUS again: a SIGBUS handler must not return.
///
/// Only the last resort, when the agent could not map the trap (see the
/// module docs): the SIGBUS is delivered on top of this handler's frame,
/// which a small alternate signal stack may not hold.
fn raise_sigbus(addr: usize) {
    // SAFETY: all of these are async-signal-safe system calls on local,
    // initialised structures.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
        {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGBUS);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        let pid = libc::getpid();
        let tid = libc::syscall(libc::SYS_gettid) as libc::pid_t;
        let info = BusInfo {
            signo: libc::SIGBUS,
            errno: 0,
            code: libc::BUS_ADRERR,
            _pad: 0,
            addr,
            _rest: [0; 128 - 24],
        };
        // A positive si_code may be sent to oneself; the program's SIGBUS
        // handler then sees the faulting address in si_addr.
        let r = libc::syscall(
            libc::SYS_rt_tgsigqueueinfo,
            pid,
            tid,
            libc::SIGBUS,
            &info as *const BusInfo,
        );
        if r != 0 {
            libc::syscall(libc::SYS_tgkill, pid, tid, libc::SIGBUS);
        }
    }
}

/// Passes a fault that is not ours to the action installed before ours.
///
/// # Safety
/// `info` and `ctx` are null or what the kernel passed to this SIGSEGV
/// handler.
unsafe fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let h = PREV_HANDLER.load(SeqCst);
    let flags = PREV_FLAGS.load(SeqCst);
    // SAFETY: a non-null `info` is the kernel's siginfo (this function's
    // contract).
    let from_kernel = !info.is_null() && unsafe { (*info).si_code } > 0;
    if h == libc::SIG_IGN && !from_kernel {
        return;
    }
    if h == libc::SIG_DFL || h == libc::SIG_IGN {
        // Back to the default action: a faulting access repeats on return
        // and kills the process (a fault cannot be ignored); a SIGSEGV sent
        // by kill() is raised again.
        // SAFETY: async-signal-safe system calls on local structures.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
            if !from_kernel {
                let tid = libc::syscall(libc::SYS_gettid);
                libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, sig);
            }
        }
        return;
    }
    if flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the program installed h as an SA_SIGINFO handler.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(h) };
        f(sig, info, ctx);
    } else {
        // SAFETY: the program installed h as a plain handler.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(h) };
        f(sig);
    }
}
