//! The System V calls: `dipc_msg*`, `dipc_sem*`, `dipc_shm*`.

use super::{fail, set_errno};
use crate::dist::Errno;
use crate::msg::{self, MTYPE_LEN};
use crate::state::{self, Route};
use crate::umem;
use dipc_common::wire::{IpcKind, IpcSet, SemBuf};
// x86_64 and aarch64 Linux: c_long is i64, the wire's mtype.
use libc::{c_int, c_long, c_void, key_t, msqid_ds, size_t, ssize_t};

/// Linux's MSG_STAT_ANY (not in the libc crate).
const MSG_STAT_ANY: c_int = 13;
/// Linux's SEM_STAT_ANY (not in the libc crate).
const SEM_STAT_ANY: c_int = 20;

/// True when the id's calls are plain system calls here. Ids this process
/// never saw from a get are classified once (see `dist::route`).
fn is_local(kind: IpcKind, id: c_int, route: fn(c_int) -> Route) -> bool {
    state::known_local(kind, id) || !matches!(route(id), Route::Remote { .. })
}

#[no_mangle]
pub extern "C" fn dipc_msgget(key: key_t, msgflg: c_int) -> c_int {
    msg::get(key, msgflg).unwrap_or_else(fail)
}

/// # Safety
/// `msgp` must point to a `long` type followed by `msgsz` bytes, as for
/// msgsnd(2).
#[no_mangle]
pub unsafe extern "C" fn dipc_msgsnd(
    msqid: c_int,
    msgp: *const c_void,
    msgsz: size_t,
    msgflg: c_int,
) -> c_int {
    if is_local(IpcKind::Msg, msqid, msg::route) {
        // SAFETY: the caller's buffer goes to the kernel as msgsnd(2) takes
        // it (this function's contract).
        return unsafe { dipc_common::sysv::raw::msgsnd(msqid, msgp, msgsz, msgflg) };
    }
    if msgp.is_null() {
        return fail(libc::EFAULT);
    }
    // Bounded before the text is copied out of the caller's buffer.
    match msg::text_max() {
        Ok(max) if msgsz <= max => {}
        Ok(_) => return fail(libc::EINVAL),
        Err(e) => return fail(e),
    }
    let r = umem::read(msgp as *const c_long).and_then(|mtype| {
        let text = umem::read_slice((msgp as *const u8).wrapping_add(MTYPE_LEN), msgsz)?;
        msg::send_owned(msqid, mtype, text, msgflg)
    });
    match r {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}

/// # Safety
/// `msgp` must point to room for a `long` and `msgsz` bytes, as for
/// msgrcv(2).
#[no_mangle]
pub unsafe extern "C" fn dipc_msgrcv(
    msqid: c_int,
    msgp: *mut c_void,
    msgsz: size_t,
    msgtyp: c_long,
    msgflg: c_int,
) -> ssize_t {
    if is_local(IpcKind::Msg, msqid, msg::route) {
        // SAFETY: the caller's buffer goes to the kernel as msgrcv(2) takes
        // it (this function's contract).
        return unsafe { dipc_common::sysv::raw::msgrcv(msqid, msgp, msgsz, msgtyp, msgflg) };
    }
    if msgp.is_null() {
        return fail(libc::EFAULT);
    }
    // As the kernel's msgrcv: a message taken for a buffer that cannot
    // hold it is lost, and the call fails with EFAULT.
    let r = msg::recv(msqid, msgsz, msgtyp, msgflg).and_then(|(mtype, text)| {
        umem::write(msgp as *mut c_long, &mtype)?;
        umem::write_slice((msgp as *mut u8).wrapping_add(MTYPE_LEN), &text)?;
        Ok(text.len() as ssize_t)
    });
    r.unwrap_or_else(fail)
}

/// # Safety
/// `buf` must be valid for the command, as for msgctl(2).
#[no_mangle]
pub unsafe extern "C" fn dipc_msgctl(msqid: c_int, cmd: c_int, buf: *mut msqid_ds) -> c_int {
    let r = match cmd {
        // Commands that name no queue, or an index rather than an id.
        libc::IPC_INFO | libc::MSG_INFO | libc::MSG_STAT | MSG_STAT_ANY => {
            // SAFETY: `buf` is valid for `cmd` (this function's contract).
            return unsafe { dipc_common::sysv::raw::msgctl(msqid, cmd, buf) };
        }
        libc::IPC_STAT => {
            if is_local(IpcKind::Msg, msqid, msg::route) {
                // SAFETY: `buf` is valid for `cmd` (this function's contract).
                return unsafe { dipc_common::sysv::raw::msgctl(msqid, cmd, buf) };
            }
            if buf.is_null() {
                return fail(libc::EFAULT);
            }
            msg::stat(msqid).and_then(|info| {
                // SAFETY: msqid_ds is plain data; all zeros is a value.
                let mut ds: msqid_ds = unsafe { std::mem::zeroed() };
                dipc_common::sysv::msq_into(&info, &mut ds);
                umem::write(buf, &ds)
            })
        }
        libc::IPC_SET => umem::read(buf).and_then(|ds| {
            let s = IpcSet {
                uid: ds.msg_perm.uid,
                gid: ds.msg_perm.gid,
                mode: ds.msg_perm.mode as u32,
                qbytes: ds.msg_qbytes,
            };
            msg::set(msqid, &s)
        }),
        libc::IPC_RMID => msg::remove(msqid),
        _ => Err(libc::EINVAL),
    };
    match r {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}

#[no_mangle]
pub extern "C" fn dipc_semget(key: key_t, nsems: c_int, semflg: c_int) -> c_int {
    crate::sem::get(key, nsems, semflg).unwrap_or_else(fail)
}

/// Copies a C `sembuf` array, refusing a null pointer as the kernel would.
fn sembufs(sops: *const libc::sembuf, nsops: size_t) -> Result<Vec<SemBuf>, Errno> {
    if nsops == 0 {
        return Err(libc::EINVAL);
    }
    // The kernel's own ceiling on nsops (SEMOPM can be raised to this).
    if nsops > 32768 {
        return Err(libc::E2BIG);
    }
    Ok(umem::read_slice(sops, nsops)?
        .iter()
        .map(|b| SemBuf {
            num: b.sem_num,
            op: b.sem_op,
            flg: b.sem_flg,
        })
        .collect())
}

/// Notes a `SEM_UNDO` among the operations of a semop made here that
/// succeeded (`r` 0; see `state::note_local_undo`). The kernel has just
/// read all `nsops` of them, so they are there to read.
///
/// # Safety
/// `sops` must point to `nsops` `struct sembuf` when `r` is 0.
unsafe fn note_undo(r: c_int, sops: *const libc::sembuf, nsops: size_t) {
    if r == 0 && !sops.is_null() {
        // SAFETY: the kernel read these `nsops` sembufs for the call that
        // just succeeded.
        let ops = unsafe { std::slice::from_raw_parts(sops, nsops) };
        crate::state::note_local_undo(ops.iter().map(|b| b.sem_flg));
    }
}

/// # Safety
/// `sops` must point to `nsops` `struct sembuf`, as for semop(2).
#[no_mangle]
pub unsafe extern "C" fn dipc_semop(semid: c_int, sops: *mut libc::sembuf, nsops: size_t) -> c_int {
    if is_local(IpcKind::Sem, semid, crate::sem::route) {
        // SAFETY: `sops` holds `nsops` sembufs (this function's contract),
        // which the kernel has read when it returns 0.
        unsafe {
            let r = dipc_common::sysv::raw::semop(semid, sops, nsops);
            note_undo(r, sops, nsops);
            return r;
        }
    }
    match sembufs(sops, nsops).and_then(|ops| crate::sem::op(semid, &ops, None)) {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}

/// # Safety
/// As for semtimedop(2): `sops` points to `nsops` sembufs, `timeout` is
/// null or a valid timespec.
#[no_mangle]
pub unsafe extern "C" fn dipc_semtimedop(
    semid: c_int,
    sops: *mut libc::sembuf,
    nsops: size_t,
    timeout: *const libc::timespec,
) -> c_int {
    if is_local(IpcKind::Sem, semid, crate::sem::route) {
        // SAFETY: `sops` holds `nsops` sembufs and `timeout` is null or
        // valid (this function's contract); the kernel has read the sembufs
        // when it returns 0.
        unsafe {
            let r = dipc_common::sysv::raw::semtimedop(semid, sops, nsops, timeout);
            note_undo(r, sops, nsops);
            return r;
        }
    }
    let t = if timeout.is_null() {
        None
    } else {
        let ts = match umem::read(timeout) {
            Ok(ts) => ts,
            Err(e) => return fail(e),
        };
        if ts.tv_sec < 0 || !(0..1_000_000_000).contains(&ts.tv_nsec) {
            return fail(libc::EINVAL);
        }
        Some(std::time::Duration::new(
            ts.tv_sec as u64,
            ts.tv_nsec as u32,
        ))
    };
    match sembufs(sops, nsops).and_then(|ops| crate::sem::op(semid, &ops, t)) {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}

/// The fourth argument of semctl(2).
#[repr(C)]
#[derive(Clone, Copy)]
pub union SemUn {
    pub val: c_int,
    pub buf: *mut libc::semid_ds,
    pub array: *mut u16,
}

// `dipc.h` declares dipc_semctl variadic, as semctl(2) is; stable Rust
// cannot define a variadic function, so it takes the optional fourth
// argument as a fixed one. On the x86-64 System V and Linux AArch64 calling
// conventions an integer or pointer variadic argument travels exactly where
// a fixed one does, and a caller that passes none leaves an unspecified
// value that is read only for the commands that have the argument, as
// glibc's semctl does.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("dipc_semctl's fixed-argument definition is checked for x86_64 and aarch64 only");

/// # Safety
/// `arg` must be valid for `cmd`, as for semctl(2).
#[no_mangle]
pub unsafe extern "C" fn dipc_semctl(semid: c_int, semnum: c_int, cmd: c_int, arg: SemUn) -> c_int {
    use crate::sem;
    // SAFETY: every field of SemUn is an integer or a pointer, for which any
    // bits are a value; which one the caller meant is chosen by `cmd` below.
    let (val, buf, array) = unsafe { (arg.val, arg.buf, arg.array) };
    // SAFETY: `arg` is valid for `cmd` (this function's contract) and goes
    // to the kernel in the register it came in.
    let raw = || unsafe { dipc_common::sysv::raw::semctl(semid, semnum, cmd, buf as usize) };
    let r: Result<c_int, Errno> = match cmd {
        libc::IPC_INFO | libc::SEM_INFO | libc::SEM_STAT | SEM_STAT_ANY => return raw(),
        // Removal also frees the key at the referee, wherever the set is.
        libc::IPC_RMID => sem::remove(semid).map(|()| 0),
        _ if is_local(IpcKind::Sem, semid, crate::sem::route) => return raw(),
        libc::GETVAL | libc::GETPID | libc::GETNCNT | libc::GETZCNT => {
            sem::ctl_int(semid, semnum, cmd, 0)
        }
        libc::SETVAL => sem::ctl_int(semid, semnum, cmd, val),
        libc::GETALL => sem::getall(semid)
            .and_then(|vals| umem::write_slice(array, &vals))
            .map(|()| 0),
        libc::SETALL => sem::stat(semid).and_then(|info| {
            let vals = umem::read_slice(array, info.nsems as usize)?;
            sem::setall(semid, &vals).map(|()| 0)
        }),
        libc::IPC_STAT => sem::stat(semid).and_then(|info| {
            // SAFETY: semid_ds is plain data; all zeros is a value.
            let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
            dipc_common::sysv::sem_into(&info, &mut ds);
            umem::write(buf, &ds).map(|()| 0)
        }),
        libc::IPC_SET => umem::read(buf).and_then(|ds| {
            let s = IpcSet {
                uid: ds.sem_perm.uid,
                gid: ds.sem_perm.gid,
                mode: ds.sem_perm.mode as u32,
                qbytes: 0,
            };
            sem::set(semid, &s).map(|()| 0)
        }),
        _ => Err(libc::EINVAL),
    };
    r.unwrap_or_else(fail)
}

#[no_mangle]
pub extern "C" fn dipc_shmget(key: key_t, size: size_t, shmflg: c_int) -> c_int {
    crate::shm::get(key, size, shmflg).unwrap_or_else(fail)
}

/// # Safety
/// As for shmat(2): with an address and `SHM_REMAP`, whatever was mapped
/// there is replaced.
#[no_mangle]
pub unsafe extern "C" fn dipc_shmat(
    shmid: c_int,
    shmaddr: *const c_void,
    shmflg: c_int,
) -> *mut c_void {
    // SAFETY: the caller accepts shmat(2)'s effect at `shmaddr` (this
    // function's contract).
    match unsafe { crate::shm::attach(shmid, shmaddr, shmflg) } {
        Ok(p) => p,
        Err(e) => {
            set_errno(e);
            usize::MAX as *mut c_void // (void *) -1
        }
    }
}

/// # Safety
/// As for shmdt(2): nothing may use the attachment afterwards.
#[no_mangle]
pub unsafe extern "C" fn dipc_shmdt(shmaddr: *const c_void) -> c_int {
    // SAFETY: nothing uses the attachment afterwards (this function's
    // contract).
    match unsafe { crate::shm::detach(shmaddr) } {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}

/// # Safety
/// `buf` must be valid for the command, as for shmctl(2).
#[no_mangle]
pub unsafe extern "C" fn dipc_shmctl(shmid: c_int, cmd: c_int, buf: *mut libc::shmid_ds) -> c_int {
    use crate::shm;
    let r = match cmd {
        // Commands that name no segment, or an index rather than an id.
        libc::IPC_INFO | shm::SHM_INFO | shm::SHM_STAT | shm::SHM_STAT_ANY => {
            // SAFETY: `buf` is valid for `cmd` (this function's contract).
            return unsafe { dipc_common::sysv::raw::shmctl(shmid, cmd, buf) };
        }
        // Removal also frees the key at the referee, wherever it lives.
        libc::IPC_RMID => shm::remove(shmid),
        _ => match shm::route(shmid) {
            // SAFETY: `buf` is valid for `cmd` (this function's contract).
            Route::Local => return unsafe { dipc_common::sysv::raw::shmctl(shmid, cmd, buf) },
            Route::Owned { .. } => match cmd {
                libc::IPC_STAT => {
                    // SAFETY: `buf` is valid for `cmd` (this function's
                    // contract).
                    let r = unsafe { dipc_common::sysv::raw::shmctl(shmid, cmd, buf) };
                    // The kernel counts the manager; the manager counts
                    // every host's attaches.
                    if r == 0 {
                        if let Some(n) = shm::manager_nattch(shmid) {
                            // SAFETY: IPC_STAT just filled `buf`, a valid
                            // shmid_ds (this function's contract).
                            unsafe { (*buf).shm_nattch = n as libc::shmatt_t };
                        }
                    }
                    return r;
                }
                // SAFETY: `buf` is valid for `cmd` (this function's contract).
                libc::IPC_SET => return unsafe { dipc_common::sysv::raw::shmctl(shmid, cmd, buf) },
                _ => Err(libc::EINVAL),
            },
            Route::Remote { .. } => match cmd {
                libc::IPC_STAT => shm::stat(shmid).and_then(|info| {
                    // SAFETY: shmid_ds is plain data; all zeros is a value.
                    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
                    dipc_common::sysv::shm_into(&info, &mut ds);
                    umem::write(buf, &ds)
                }),
                libc::IPC_SET => umem::read(buf).and_then(|ds| {
                    let s = IpcSet {
                        uid: ds.shm_perm.uid,
                        gid: ds.shm_perm.gid,
                        mode: ds.shm_perm.mode as u32,
                        qbytes: 0,
                    };
                    shm::set(shmid, &s)
                }),
                _ => Err(libc::EINVAL),
            },
        },
    };
    match r {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}
