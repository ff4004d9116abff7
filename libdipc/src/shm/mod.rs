//! Distributed shared memory: `shmget`, `shmat`, `shmdt`, `shmctl`.
//!
//! (Work in progress: the attach machinery; the System V calls follow.)

mod agent;
mod fault;
mod table;

pub use crate::dist::{Errno, IPC_DIPC};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// This thread's `errno`.
pub(crate) fn last_errno() -> Errno {
    dipc_common::sysv::errno()
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
    let max_frame = crate::state::config().map_or(1 << 20, |c| c.max_frame);
    let params = agent::Params {
        size,
        unit,
        readonly,
        exec: false,
        addr: None,
        remap: false,
        timeout,
        max_frame,
    };
    agent::attach(agent::Conn::Unix(stream), params).map(|a| a as *mut u8)
}

/// `shmdt`.
///
/// # Safety
/// As for shmdt(2): nothing may use the attachment at `addr` afterwards.
pub unsafe fn detach(addr: *const libc::c_void) -> Result<(), Errno> {
    if let Some(slot) = table::find_start(addr as usize) {
        return agent::detach(slot);
    }
    // SAFETY: shmdt validates the address itself.
    if unsafe { libc::shmdt(addr) } != 0 {
        return Err(last_errno());
    }
    Ok(())
}
