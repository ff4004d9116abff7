//! The System V calls as the kernel takes them, made with `syscall(2)`
//! rather than through glibc's wrappers of the same names: in a program
//! run with `libdipc_preload.so`, those names are the preload's, and
//! dipc's own calls must reach the kernel, not come back into dipc. The
//! signatures and results are glibc's (-1 and `errno` on failure). On
//! x86_64 and aarch64 each is a system call of its own, and glibc's
//! wrappers pass the arguments through unchanged (no `IPC_64` bit, no
//! structure conversion), so the raw call is the same call.
//!
//! A module of its own because these are the only calls that bypass libc,
//! and every other wrapper in `sysv` goes through them.

use libc::{c_int, c_long, c_void, key_t, size_t, ssize_t};

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("sysv::raw is checked for x86_64 and aarch64 only");

/// # Safety
/// As msgget(2).
pub unsafe fn msgget(key: key_t, flags: c_int) -> c_int {
    // SAFETY: no pointers; the arguments are the kernel's own types for SYS_msgget.
    unsafe { libc::syscall(libc::SYS_msgget, key, flags) as c_int }
}

/// # Safety
/// As msgsnd(2).
pub unsafe fn msgsnd(id: c_int, msgp: *const c_void, size: size_t, flags: c_int) -> c_int {
    // SAFETY: the caller keeps msgsnd(2)'s contract: `msgp` points to a message of `size` text
    // bytes.
    unsafe { libc::syscall(libc::SYS_msgsnd, id, msgp, size, flags) as c_int }
}

/// # Safety
/// As msgrcv(2).
pub unsafe fn msgrcv(
    id: c_int,
    msgp: *mut c_void,
    size: size_t,
    mtype: c_long,
    flags: c_int,
) -> ssize_t {
    // SAFETY: the caller keeps msgrcv(2)'s contract: `msgp` has room for a message of `size`
    // text bytes.
    unsafe { libc::syscall(libc::SYS_msgrcv, id, msgp, size, mtype, flags) as ssize_t }
}

/// # Safety
/// As msgctl(2).
pub unsafe fn msgctl(id: c_int, cmd: c_int, buf: *mut libc::msqid_ds) -> c_int {
    // SAFETY: the caller keeps msgctl(2)'s contract: `buf` is valid for `cmd`.
    unsafe { libc::syscall(libc::SYS_msgctl, id, cmd, buf) as c_int }
}

/// # Safety
/// As semget(2).
pub unsafe fn semget(key: key_t, nsems: c_int, flags: c_int) -> c_int {
    // SAFETY: no pointers; the arguments are the kernel's own types for SYS_semget.
    unsafe { libc::syscall(libc::SYS_semget, key, nsems, flags) as c_int }
}

/// # Safety
/// As semop(2). (Linux implements semop as semtimedop without a
/// time-out; aarch64 has no semop system call.)
pub unsafe fn semop(id: c_int, sops: *mut libc::sembuf, nsops: size_t) -> c_int {
    // SAFETY: the caller keeps semop(2)'s contract; no time-out is a null pointer.
    unsafe { semtimedop(id, sops, nsops, std::ptr::null()) }
}

/// # Safety
/// As semtimedop(2).
pub unsafe fn semtimedop(
    id: c_int,
    sops: *mut libc::sembuf,
    nsops: size_t,
    timeout: *const libc::timespec,
) -> c_int {
    // SAFETY: the caller keeps semtimedop(2)'s contract: `sops` holds `nsops` operations,
    // `timeout` is null or valid.
    unsafe { libc::syscall(libc::SYS_semtimedop, id, sops, nsops, timeout) as c_int }
}

/// `semctl` with its fourth argument (an int or a pointer, as the
/// command wants) passed as a machine word, which is where both
/// travel.
///
/// # Safety
/// As semctl(2).
pub unsafe fn semctl(id: c_int, num: c_int, cmd: c_int, arg: usize) -> c_int {
    // SAFETY: the caller keeps semctl(2)'s contract: `arg` is what `cmd` wants.
    unsafe { libc::syscall(libc::SYS_semctl, id, num, cmd, arg) as c_int }
}

/// # Safety
/// As shmget(2).
pub unsafe fn shmget(key: key_t, size: size_t, flags: c_int) -> c_int {
    // SAFETY: no pointers; the arguments are the kernel's own types for SYS_shmget.
    unsafe { libc::syscall(libc::SYS_shmget, key, size, flags) as c_int }
}

/// # Safety
/// As shmat(2): `(void *) -1` on failure.
pub unsafe fn shmat(id: c_int, addr: *const c_void, flags: c_int) -> *mut c_void {
    // SAFETY: the caller keeps shmat(2)'s contract (the mapping it makes is the caller's to
    // manage).
    unsafe { libc::syscall(libc::SYS_shmat, id, addr, flags) as *mut c_void }
}

/// # Safety
/// As shmdt(2).
pub unsafe fn shmdt(addr: *const c_void) -> c_int {
    // SAFETY: the caller keeps shmdt(2)'s contract: nothing uses the mapping at `addr` after
    // it.
    unsafe { libc::syscall(libc::SYS_shmdt, addr) as c_int }
}

/// # Safety
/// As shmctl(2).
pub unsafe fn shmctl(id: c_int, cmd: c_int, buf: *mut libc::shmid_ds) -> c_int {
    // SAFETY: the caller keeps shmctl(2)'s contract: `buf` is valid for `cmd`.
    unsafe { libc::syscall(libc::SYS_shmctl, id, cmd, buf) as c_int }
}
