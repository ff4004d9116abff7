//! Supervision of the host's long-lived children (front_end, referee):
//! who they are, and stopping them all at shutdown. The reactor reaps
//! whatever exits; the daemon stops the host when a supervised one died
//! (`Daemon::child_exited`).
//!
//! Separate because it is plain process handling, with no daemon state.

use log::warn;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

/// A child process the back_end supervises.
pub(crate) struct Child {
    pub(crate) name: &'static str,
    pub(crate) pid: Pid,
}

/// Stops the supervised children: SIGTERM, then SIGKILL after two seconds.
pub(crate) fn shutdown(children: &[Child]) {
    for c in children {
        let _ = kill(c.pid, Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    for c in children {
        loop {
            match waitpid(c.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(WaitStatus::StillAlive) => {
                    warn!("{} (pid {}) did not stop; killing it", c.name, c.pid);
                    let _ = kill(c.pid, Signal::SIGKILL);
                    let _ = waitpid(c.pid, None);
                    break;
                }
                _ => break,
            }
        }
    }
}
