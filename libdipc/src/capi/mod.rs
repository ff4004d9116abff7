//! The C interface (`include/dipc.h`): the same arguments, return values
//! and `errno` as the System V calls. On structures of this host the calls
//! go straight to the kernel with the caller's buffers; only calls on
//! structures owned elsewhere go through the Rust layer (and every attach
//! of a distributed segment, which is a private copy, see [`crate::shm`]).

mod dprocs;
mod pids;
mod sysv;

pub use dprocs::*;
pub use pids::*;
pub use sysv::*;

use crate::dist::Errno;

fn set_errno(e: Errno) {
    // SAFETY: __errno_location returns this thread's errno.
    unsafe { *libc::__errno_location() = e };
}

fn fail<T: From<i8>>(e: Errno) -> T {
    set_errno(e);
    T::from(-1)
}

fn io_fail<T: From<i8>>(e: std::io::Error) -> T {
    fail(e.raw_os_error().unwrap_or(libc::EIO))
}
