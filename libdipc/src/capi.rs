//! The C interface (`include/dipc.h`): the same arguments, return values
//! and `errno` as the System V calls. On structures of this host the calls
//! go straight to the kernel with the caller's buffers; only calls on
//! structures owned elsewhere go through the Rust layer.

use crate::msg::{self, Errno, MTYPE_LEN};
use crate::state::{self, Route};
use dipc_common::wire::{IpcKind, IpcSet};
// x86_64 and aarch64 Linux: c_long is i64, the wire's mtype.
use libc::{c_int, c_long, c_void, key_t, msqid_ds, size_t, ssize_t};

/// Linux's MSG_STAT_ANY (not in the libc crate).
const MSG_STAT_ANY: c_int = 13;

fn set_errno(e: Errno) {
    // SAFETY: __errno_location returns this thread's errno.
    unsafe { *libc::__errno_location() = e };
}

fn fail<T: From<i8>>(e: Errno) -> T {
    set_errno(e);
    T::from(-1)
}

/// True when the id's calls are plain system calls here. Ids this process
/// never saw from dipc_msgget are classified once (see `msg::route`).
fn is_local(id: c_int) -> bool {
    match state::route(IpcKind::Msg, id) {
        Some(Route::Local) => true,
        Some(_) => false,
        None => !msg::is_remote(id),
    }
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
    if is_local(msqid) {
        return libc::msgsnd(msqid, msgp, msgsz, msgflg);
    }
    if msgp.is_null() {
        return fail(libc::EFAULT);
    }
    if (msgsz as ssize_t) < 0 {
        return fail(libc::EINVAL);
    }
    let mtype = *(msgp as *const c_long);
    let text = std::slice::from_raw_parts((msgp as *const u8).add(MTYPE_LEN), msgsz);
    match msg::send(msqid, mtype, text, msgflg) {
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
    if is_local(msqid) {
        return libc::msgrcv(msqid, msgp, msgsz, msgtyp, msgflg);
    }
    if msgp.is_null() {
        return fail(libc::EFAULT);
    }
    match msg::recv(msqid, msgsz, msgtyp, msgflg) {
        Ok((mtype, text)) => {
            *(msgp as *mut c_long) = mtype;
            std::ptr::copy_nonoverlapping(
                text.as_ptr(),
                (msgp as *mut u8).add(MTYPE_LEN),
                text.len(),
            );
            text.len() as ssize_t
        }
        Err(e) => fail(e),
    }
}

/// # Safety
/// `buf` must be valid for the command, as for msgctl(2).
#[no_mangle]
pub unsafe extern "C" fn dipc_msgctl(msqid: c_int, cmd: c_int, buf: *mut msqid_ds) -> c_int {
    let r = match cmd {
        // Commands that name no queue, or an index rather than an id.
        libc::IPC_INFO | libc::MSG_INFO | libc::MSG_STAT | MSG_STAT_ANY => {
            return libc::msgctl(msqid, cmd, buf)
        }
        libc::IPC_STAT => {
            if is_local(msqid) {
                return libc::msgctl(msqid, cmd, buf);
            }
            if buf.is_null() {
                return fail(libc::EFAULT);
            }
            msg::stat(msqid).map(|info| dipc_common::sysv::msq_into(&info, &mut *buf))
        }
        libc::IPC_SET => {
            if buf.is_null() {
                return fail(libc::EFAULT);
            }
            let ds = &*buf;
            let s = IpcSet {
                uid: ds.msg_perm.uid,
                gid: ds.msg_perm.gid,
                mode: ds.msg_perm.mode as u32,
                qbytes: ds.msg_qbytes,
            };
            msg::set(msqid, &s)
        }
        libc::IPC_RMID => msg::remove(msqid),
        _ => Err(libc::EINVAL),
    };
    match r {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}
