//! The C interface: `dipc_migratable`, `dipc_migrate` (see `dipc.h`).

use super::*;
use libc::{c_char, c_int, c_void, size_t};
use std::ffi::CStr;

/// `size_t save(void *ctx, void *buf, size_t cap)`: returns the
/// state's length and writes it to `buf` if it fits in `cap` bytes.
pub type SaveFn = unsafe extern "C" fn(*mut c_void, *mut c_void, size_t) -> size_t;
/// `void restore(void *ctx, const void *state, size_t len)`.
pub type RestoreFn = unsafe extern "C" fn(*mut c_void, *const c_void, size_t);

struct CSave {
    save: SaveFn,
    ctx: *mut c_void,
}

// SAFETY: the program hands dipc the pointer to use from the thread
// that moves the process; dipc never uses it concurrently.
unsafe impl Send for CSave {}
// SAFETY: as above.
unsafe impl Sync for CSave {}

impl StateSource for CSave {
    fn save(&self) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; 4096];
        // The state may grow between the calls; a few tries at most.
        for _ in 0..4 {
            // SAFETY: the program's callback, with room for buf.len().
            let n = unsafe { (self.save)(self.ctx, buf.as_mut_ptr().cast(), buf.len()) };
            if n > MAX_PAYLOAD {
                return Err(errno_err(libc::EFBIG));
            }
            if n <= buf.len() {
                buf.truncate(n);
                return Ok(buf);
            }
            buf = vec![0u8; n];
        }
        Err(errno_err(libc::EOVERFLOW))
    }
}

fn set_errno(e: i32) {
    // SAFETY: __errno_location returns this thread's errno.
    unsafe { *libc::__errno_location() = e };
}

/// `int dipc_migratable(save, restore, ctx)`: 1 in a process that
/// continues a moved one (after `restore` ran), 0 otherwise, -1 and
/// `errno` on error.
///
/// # Safety
/// `save` and `restore` must be valid functions that accept `ctx`.
#[no_mangle]
pub unsafe extern "C" fn dipc_migratable(
    save: Option<SaveFn>,
    restore: Option<RestoreFn>,
    ctx: *mut c_void,
) -> c_int {
    let (Some(save), Some(restore)) = (save, restore) else {
        set_errno(libc::EINVAL);
        return -1;
    };
    let source = Arc::new(CSave { save, ctx });
    let r = migratable_with(source, |state: &[u8]| {
        // SAFETY: the program's callback with the state's bytes.
        unsafe { restore(ctx, state.as_ptr().cast(), state.len()) }
    });
    match r {
        Ok(true) => 1,
        Ok(false) => 0,
        Err(e) => {
            set_errno(e.raw_os_error().unwrap_or(libc::EIO));
            -1
        }
    }
}

/// `long dipc_migrated_messages(void)`: the mailbox messages the move
/// that started this process carried; -1 if it did not arrive by one.
#[no_mangle]
pub extern "C" fn dipc_migrated_messages() -> libc::c_long {
    carried_messages().map_or(-1, |n| n as libc::c_long)
}

/// `int dipc_migration_point(void)`: 0 if no move was asked for (or the
/// process is not migratable); -1 and `errno` if an asked-for move
/// failed; does not return if it succeeded.
#[no_mangle]
pub extern "C" fn dipc_migration_point() -> c_int {
    match migration_point() {
        Ok(_) => 0,
        Err(e) => {
            set_errno(e.raw_os_error().unwrap_or(libc::EIO));
            -1
        }
    }
}

/// `int dipc_migrate(const char *host)`: moves the calling process;
/// returns -1 and `errno` only if the move failed.
///
/// # Safety
/// `host` must be a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn dipc_migrate(host: *const c_char) -> c_int {
    if host.is_null() {
        set_errno(libc::EFAULT);
        return -1;
    }
    // SAFETY: the caller passes a C string.
    let h = unsafe { CStr::from_ptr(host) };
    let r = h
        .to_str()
        .map_err(|_| errno_err(libc::EINVAL))
        .and_then(parse_host)
        .and_then(migrate);
    match r {
        Ok(never) => match never {},
        Err(e) => {
            set_errno(e.raw_os_error().unwrap_or(libc::EIO));
            -1
        }
    }
}
