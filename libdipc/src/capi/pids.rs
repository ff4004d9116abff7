//! Cluster-wide process ids, signals and mailboxes: `regist`, `uregist`,
//! `kill_d`, `dipc_send`, `dipc_receive`, `dipc_poll`.

use super::{fail, io_fail};
use crate::msg;
use crate::umem;
use libc::{c_int, c_void, size_t, ssize_t};

/// `pid_d regist(void)`: joins the cluster's process table.
#[no_mangle]
pub extern "C" fn regist() -> i64 {
    crate::pid::regist().unwrap_or_else(io_fail)
}

/// `int uregist(pid_d)`: leaves it (only the caller's own registration).
#[no_mangle]
pub extern "C" fn uregist(pid_d: i64) -> c_int {
    crate::pid::uregist(pid_d).map_or_else(io_fail, |()| 0)
}

/// `int kill_d(pid_d, int sig)`: `kill(2)` for a pid_d on any host.
#[no_mangle]
pub extern "C" fn kill_d(pid_d: i64, sig: c_int) -> c_int {
    crate::pid::kill_d(pid_d, sig).map_or_else(io_fail, |()| 0)
}

/// # Safety
/// `buf` must point to `len` readable bytes (or be null with `len == 0`).
#[no_mangle]
pub unsafe extern "C" fn dipc_send(
    dest: i64,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
) -> c_int {
    match msg::text_max() {
        Ok(max) if len <= max => {}
        Ok(_) => return fail(libc::EMSGSIZE),
        Err(e) => return fail(e),
    }
    let data = match umem::read_slice(buf.cast::<u8>(), len) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    crate::pid::send(dest, &data, flags).map_or_else(io_fail, |()| 0)
}

/// # Safety
/// `src` must point to a `pid_d`; `buf` to room for `len` bytes (or be
/// null with `len == 0`).
#[no_mangle]
pub unsafe extern "C" fn dipc_receive(
    src: *mut i64,
    buf: *mut c_void,
    len: size_t,
    flags: c_int,
) -> ssize_t {
    if buf.is_null() && len != 0 {
        return fail(libc::EFAULT);
    }
    let want = match umem::read(src) {
        Ok(w) => w,
        Err(e) => return fail(e),
    };
    // Checked before a message is taken: one cannot be put back.
    if let Err(e) = umem::write(src, &want) {
        return fail(e);
    }
    match crate::pid::receive(want, len, flags) {
        Ok((from, text)) => {
            let r =
                umem::write_slice(buf.cast::<u8>(), &text).and_then(|()| umem::write(src, &from));
            match r {
                Ok(()) => text.len() as ssize_t,
                Err(e) => fail(e),
            }
        }
        Err(e) => io_fail(e),
    }
}

/// `int dipc_poll(int timeout_ms)`: 1 if a message waits in the caller's
/// mailbox, 0 if none came within `timeout_ms` (negative: wait as long as
/// it takes).
#[no_mangle]
pub extern "C" fn dipc_poll(timeout_ms: c_int) -> c_int {
    let t = u64::try_from(timeout_ms)
        .ok()
        .map(std::time::Duration::from_millis);
    match crate::pid::poll(t) {
        Ok(true) => 1,
        Ok(false) => 0,
        Err(e) => io_fail(e),
    }
}
