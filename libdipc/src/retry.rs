//! Making a request again after a transport failure, where that is safe.
//!
//! Under load a host's link to the referee may be reset and joined again,
//! and a session may fail to open while its owner's daemons catch up:
//! the request then fails with `ECONNRESET`, `ENOTCONN`, `ECONNREFUSED`
//! or `ETIMEDOUT` although nothing was done on the far side, and the same
//! request a moment later succeeds. Only requests that do nothing twice
//! when made twice come through [`retrying`]: a key look-up (`KeyGet`
//! before any grant: a creation granted on a link that broke is given up
//! by the referee when the link closes, and one granted to a connection
//! that broke by its dipcd), the owner's check of a get (`IpcGet`), and
//! the opening of a session (nothing runs on the owner until a call comes
//! on it). Calls on structures (a `msgsnd`, a `semop`) and a creation's
//! commit are never made again.

use crate::client::ClientError;
use crate::state;
use std::thread;
use std::time::{Duration, Instant};

/// The first pause between attempts; each next one is twice as long.
const FIRST_PAUSE: Duration = Duration::from_millis(20);
/// The longest pause between attempts.
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// At most this many attempts in all.
const MAX_ATTEMPTS: u32 = 10;

/// Whether `e` says the request did not get through, for a reason that
/// may pass: a dipcd whose link to the referee is being joined again
/// (`ENOTCONN`, `ECONNRESET` relayed), a connection to dipcd that closed
/// (a restarted dipcd) or whose listen queue was full (`EAGAIN` at
/// connect), a session that could not open (`ECONNREFUSED`, `ETIMEDOUT`,
/// `ECONNRESET` from the employer). Not `EHOSTUNREACH` (the referee lists
/// the host down), not a dipcd that is not running (its socket refuses or
/// is missing), not a time-out waiting for a reply (the wait was already
/// as long as a request may take).
pub fn transient(e: &ClientError) -> bool {
    use dipc_common::channel::ChannelError;
    match e {
        ClientError::Unreachable { source, .. } => source.raw_os_error() == Some(libc::EAGAIN),
        ClientError::Channel(ChannelError::Closed) => true,
        ClientError::Remote { errno, .. } => matches!(
            *errno,
            libc::ENOTCONN | libc::ECONNRESET | libc::ECONNREFUSED | libc::ETIMEDOUT
        ),
        _ => false,
    }
}

/// Makes `request` until it succeeds or fails for good, at most
/// [`MAX_ATTEMPTS`] times, pausing 20 ms, 40 ms, … (at most 1 s) between
/// attempts, and never starting a pause that would end past
/// `timeouts.request_ms` from the first attempt: a call that cannot block
/// keeps its documented time bound.
pub fn retrying<T>(mut request: impl FnMut() -> Result<T, ClientError>) -> Result<T, ClientError> {
    let bound = state::config()?.timeouts.request;
    let start = Instant::now();
    let mut pause = FIRST_PAUSE;
    let mut attempts = 1;
    loop {
        match request() {
            Err(e)
                if transient(&e) && attempts < MAX_ATTEMPTS && start.elapsed() + pause <= bound =>
            {
                log::debug!("dipc: {e}; trying again in {pause:?}");
                thread::sleep(pause);
                pause = (pause * 2).min(MAX_PAUSE);
                attempts += 1;
            }
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dipc_common::channel::ChannelError;
    use std::io;

    fn remote(errno: i32) -> ClientError {
        ClientError::Remote {
            errno,
            message: String::new(),
        }
    }

    #[test]
    fn only_passing_transport_errors_are_transient() {
        for errno in [
            libc::ENOTCONN,
            libc::ECONNRESET,
            libc::ECONNREFUSED,
            libc::ETIMEDOUT,
        ] {
            assert!(transient(&remote(errno)), "{errno}");
        }
        for errno in [
            libc::EHOSTUNREACH,
            libc::ENOENT,
            libc::EACCES,
            libc::EEXIST,
            libc::EAGAIN,
            libc::EINTR,
        ] {
            assert!(!transient(&remote(errno)), "{errno}");
        }
        assert!(transient(&ClientError::Channel(ChannelError::Closed)));
        assert!(!transient(&ClientError::Channel(ChannelError::TimedOut)));
        assert!(!transient(&ClientError::Channel(ChannelError::Interrupted)));
        let unreachable = |errno| ClientError::Unreachable {
            path: "/run/dipc/dipcd.sock".into(),
            source: io::Error::from_raw_os_error(errno),
        };
        assert!(transient(&unreachable(libc::EAGAIN)));
        // dipcd is not running: say so at once.
        assert!(!transient(&unreachable(libc::ECONNREFUSED)));
        assert!(!transient(&unreachable(libc::ENOENT)));
    }
}
