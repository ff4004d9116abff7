//! `libdipc_preload.so`: runs an unmodified, dynamically linked System V
//! IPC program cluster-wide.
//!
//! ```text
//! LD_PRELOAD=/usr/lib/libdipc_preload.so ./program
//! ```
//!
//! The library defines `msgget`, `msgsnd`, `msgrcv`, `msgctl`, `semget`,
//! `semop`, `semtimedop`, `semctl`, `shmget`, `shmat`, `shmdt` and
//! `shmctl`, so the dynamic loader binds the program's calls (glibc's
//! versioned references such as `msgctl@GLIBC_2.2.5` included: these
//! definitions carry no version, which satisfies any) here rather than to
//! glibc. Each is libdipc's call of the same name (`dipc_msgget`, ...), with
//! the same arguments, results and `errno`:
//!
//! - a get is distributed when it carries `IPC_DIPC` or when its key is in
//!   the key policy (`[preload] keys` in dipc.conf or `$DIPC_PRELOAD_KEYS`,
//!   see `dipc_common::keypolicy`); `IPC_PRIVATE` and every other key
//!   make a plain local structure with the plain system call;
//! - a call on an id costs one in-process look-up of where the id lives
//!   (libdipc's route table) before the plain system call, unless the id is
//!   a placeholder of a structure owned elsewhere, which goes to its owner.
//!
//! dipc's own System V calls are made with `syscall(2)`
//! (`dipc_common::sysv::raw`), so they reach the kernel, not these
//! definitions.
//!
//! Limits, which the loader imposes: statically linked programs and
//! programs that make the calls with `syscall(2)` never come here; the
//! loader ignores `LD_PRELOAD` for set-user-ID and set-group-ID programs,
//! and if it does load this library into one (from a system directory,
//! itself set-user-ID) the library says so on standard error and stays
//! out of the way (every call is the plain system call).

mod policy;

use dipc::capi::{self, SemUn};
use dipc_common::sysv::raw;
use libc::{c_int, c_long, c_void, key_t, size_t, ssize_t};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set when the process runs in secure-execution mode (set-user-ID and
/// the like): dipc is then not used at all.
static SECURE: AtomicBool = AtomicBool::new(false);

extern "C" fn init() {
    // SAFETY: getauxval reads the auxiliary vector, always present.
    if unsafe { libc::getauxval(libc::AT_SECURE) } != 0 {
        SECURE.store(true, Ordering::Relaxed);
        eprintln!(
            "dipc preload: this program runs set-user-ID or set-group-ID (secure execution): \
             dipc stays out of it, and its System V calls are this host's plain ones"
        );
    }
}

// Run by the loader when the library is loaded, before the program's main.
#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;

fn secure() -> bool {
    SECURE.load(Ordering::Relaxed)
}

fn fail(e: i32) -> c_int {
    // SAFETY: __errno_location returns this thread's errno.
    unsafe { *libc::__errno_location() = e };
    -1
}

#[no_mangle]
pub extern "C" fn msgget(key: key_t, msgflg: c_int) -> c_int {
    if secure() {
        // SAFETY: as msgget(2).
        return unsafe { raw::msgget(key, msgflg) };
    }
    match policy::flags(key, msgflg) {
        Ok(f) => capi::dipc_msgget(key, f),
        Err(e) => fail(e),
    }
}

/// # Safety
/// As msgsnd(2).
#[no_mangle]
pub unsafe extern "C" fn msgsnd(
    msqid: c_int,
    msgp: *const c_void,
    msgsz: size_t,
    msgflg: c_int,
) -> c_int {
    if secure() {
        // SAFETY: the caller's arguments, as msgsnd(2) takes them (this
        // function's contract).
        return unsafe { raw::msgsnd(msqid, msgp, msgsz, msgflg) };
    }
    // SAFETY: dipc_msgsnd has msgsnd(2)'s contract, which the caller
    // keeps (this function's contract).
    unsafe { capi::dipc_msgsnd(msqid, msgp, msgsz, msgflg) }
}

/// # Safety
/// As msgrcv(2).
#[no_mangle]
pub unsafe extern "C" fn msgrcv(
    msqid: c_int,
    msgp: *mut c_void,
    msgsz: size_t,
    msgtyp: c_long,
    msgflg: c_int,
) -> ssize_t {
    if secure() {
        // SAFETY: the caller's arguments, as msgrcv(2) takes them (this
        // function's contract).
        return unsafe { raw::msgrcv(msqid, msgp, msgsz, msgtyp, msgflg) };
    }
    // SAFETY: dipc_msgrcv has msgrcv(2)'s contract, which the caller
    // keeps (this function's contract).
    unsafe { capi::dipc_msgrcv(msqid, msgp, msgsz, msgtyp, msgflg) }
}

/// # Safety
/// As msgctl(2).
#[no_mangle]
pub unsafe extern "C" fn msgctl(msqid: c_int, cmd: c_int, buf: *mut libc::msqid_ds) -> c_int {
    if secure() {
        // SAFETY: the caller's arguments, as msgctl(2) takes them (this
        // function's contract).
        return unsafe { raw::msgctl(msqid, cmd, buf) };
    }
    // SAFETY: dipc_msgctl has msgctl(2)'s contract, which the caller
    // keeps (this function's contract).
    unsafe { capi::dipc_msgctl(msqid, cmd, buf) }
}

#[no_mangle]
pub extern "C" fn semget(key: key_t, nsems: c_int, semflg: c_int) -> c_int {
    if secure() {
        // SAFETY: as semget(2).
        return unsafe { raw::semget(key, nsems, semflg) };
    }
    match policy::flags(key, semflg) {
        Ok(f) => capi::dipc_semget(key, nsems, f),
        Err(e) => fail(e),
    }
}

/// # Safety
/// As semop(2).
#[no_mangle]
pub unsafe extern "C" fn semop(semid: c_int, sops: *mut libc::sembuf, nsops: size_t) -> c_int {
    if secure() {
        // SAFETY: the caller's arguments, as semop(2) takes them (this
        // function's contract).
        return unsafe { raw::semop(semid, sops, nsops) };
    }
    // SAFETY: dipc_semop has semop(2)'s contract, which the caller
    // keeps (this function's contract).
    unsafe { capi::dipc_semop(semid, sops, nsops) }
}

/// # Safety
/// As semtimedop(2).
#[no_mangle]
pub unsafe extern "C" fn semtimedop(
    semid: c_int,
    sops: *mut libc::sembuf,
    nsops: size_t,
    timeout: *const libc::timespec,
) -> c_int {
    if secure() {
        // SAFETY: the caller's arguments, as semtimedop(2) takes them (this
        // function's contract).
        return unsafe { raw::semtimedop(semid, sops, nsops, timeout) };
    }
    // SAFETY: dipc_semtimedop has semtimedop(2)'s contract, which the caller
    // keeps (this function's contract).
    unsafe { capi::dipc_semtimedop(semid, sops, nsops, timeout) }
}

// semctl(2) is variadic; stable Rust cannot define a variadic function.
// As for dipc_semctl (see libdipc's capi), the optional fourth argument is
// taken as a fixed one: on x86-64 and AArch64 Linux a variadic integer or
// pointer argument travels exactly where a fixed one does.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("semctl's fixed-argument definition is checked for x86_64 and aarch64 only");

/// # Safety
/// As semctl(2).
#[no_mangle]
pub unsafe extern "C" fn semctl(semid: c_int, semnum: c_int, cmd: c_int, arg: SemUn) -> c_int {
    if secure() {
        // SAFETY: the caller's arguments, as semctl(2) takes them (this
        // function's contract); `arg`'s fields are all integers or
        // pointers, so any of them may be read as a machine word.
        return unsafe { raw::semctl(semid, semnum, cmd, arg.buf as usize) };
    }
    // SAFETY: dipc_semctl has semctl(2)'s contract, which the caller
    // keeps (this function's contract).
    unsafe { capi::dipc_semctl(semid, semnum, cmd, arg) }
}

#[no_mangle]
pub extern "C" fn shmget(key: key_t, size: size_t, shmflg: c_int) -> c_int {
    if secure() {
        // SAFETY: as shmget(2).
        return unsafe { raw::shmget(key, size, shmflg) };
    }
    match policy::flags(key, shmflg) {
        Ok(f) => capi::dipc_shmget(key, size, f),
        Err(e) => fail(e),
    }
}

/// # Safety
/// As shmat(2).
#[no_mangle]
pub unsafe extern "C" fn shmat(shmid: c_int, shmaddr: *const c_void, shmflg: c_int) -> *mut c_void {
    if secure() {
        // SAFETY: the caller's arguments, as shmat(2) takes them (this
        // function's contract).
        return unsafe { raw::shmat(shmid, shmaddr, shmflg) };
    }
    // SAFETY: dipc_shmat has shmat(2)'s contract, which the caller
    // keeps (this function's contract).
    unsafe { capi::dipc_shmat(shmid, shmaddr, shmflg) }
}

/// # Safety
/// As shmdt(2).
#[no_mangle]
pub unsafe extern "C" fn shmdt(shmaddr: *const c_void) -> c_int {
    if secure() {
        // SAFETY: the caller's arguments, as shmdt(2) takes them (this
        // function's contract).
        return unsafe { raw::shmdt(shmaddr) };
    }
    // SAFETY: dipc_shmdt has shmdt(2)'s contract, which the caller
    // keeps (this function's contract).
    unsafe { capi::dipc_shmdt(shmaddr) }
}

/// # Safety
/// As shmctl(2).
#[no_mangle]
pub unsafe extern "C" fn shmctl(shmid: c_int, cmd: c_int, buf: *mut libc::shmid_ds) -> c_int {
    if secure() {
        // SAFETY: the caller's arguments, as shmctl(2) takes them (this
        // function's contract).
        return unsafe { raw::shmctl(shmid, cmd, buf) };
    }
    // SAFETY: dipc_shmctl has shmctl(2)'s contract, which the caller
    // keeps (this function's contract).
    unsafe { capi::dipc_shmctl(shmid, cmd, buf) }
}
