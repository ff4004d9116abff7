//! Naming a process so that a recycled pid never stands for it, and
//! signalling it through a pidfd; plus the mailbox send that the library
//! and the worker share.
//!
//! A registered process is `{pid, starttime}`: the start time (field 22 of
//! `/proc/PID/stat`, in clock ticks since boot) differs between two
//! processes that held the same pid. [`open_checked`] opens a pidfd for the
//! pid, then reads the start time; if it matches, the pidfd refers to the
//! very process that registered (it was alive when the start time was
//! read, so it already held the pid when the pidfd was opened), and every
//! later use of the pidfd reaches that process or fails with `ESRCH`,
//! never another one.

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The highest signal number (Linux's `_NSIG - 1`, i.e. `SIGRTMAX` as the
/// kernel counts; glibc reserves the lowest real-time ones for itself).
pub const MAX_SIGNAL: i32 = 64;

fn errno() -> i32 {
    crate::sysv::errno()
}

/// `pidfd_open(pid, 0)`: a close-on-exec descriptor that refers to the
/// process, not to the number.
pub fn pidfd_open(pid: i32) -> Result<OwnedFd, i32> {
    if pid <= 0 {
        return Err(libc::ESRCH);
    }
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The start time of process `pid` (clock ticks since boot), or `ESRCH`.
pub fn starttime(pid: i32) -> Result<u64, i32> {
    parse_starttime(&stat(pid)?).ok_or(libc::ESRCH)
}

/// `/proc/PID/stat`, or `ESRCH`.
fn stat(pid: i32) -> Result<String, i32> {
    fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|_| libc::ESRCH)
}

/// Field 22 of a `/proc/PID/stat` line. The second field (the command
/// name, in parentheses) may hold spaces and parentheses itself, so the
/// fields are counted from the last `)`.
pub fn parse_starttime(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name come field 3 (state) onwards: field 22 is the 20th.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The parent of process `pid` (field 4 of `/proc/PID/stat`), or `ESRCH`.
pub fn parent(pid: i32) -> Result<i32, i32> {
    parse_parent(&stat(pid)?).ok_or(libc::ESRCH)
}

/// Field 4 of a `/proc/PID/stat` line (counted from the last `)`, as in
/// [`parse_starttime`]).
pub fn parse_parent(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Whether the process behind `pidfd` has exited (the pidfd is readable).
pub fn exited(pidfd: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r != 0
}

/// A pidfd for the process `{pid, starttime}`, or `ESRCH` if that process
/// is gone (exited, or the pid now belongs to another one). With
/// `starttime == None`, whatever process has the pid; its start time is
/// returned with the pidfd.
pub fn open_checked(pid: i32, starttime: Option<u64>) -> Result<(OwnedFd, u64), i32> {
    let fd = pidfd_open(pid)?;
    let now = self::starttime(pid)?;
    if starttime.is_some_and(|t| t != now) {
        return Err(libc::ESRCH);
    }
    // The start time read is that of the pidfd's process only if that
    // process was still alive after the read.
    if exited(&fd) {
        return Err(libc::ESRCH);
    }
    Ok((fd, now))
}

/// `kill(pid, sig)` for the process `{pid, starttime}`, with `kill(2)`'s
/// rules (the kernel checks the caller's permission: `EPERM`); signal 0
/// checks existence and permission only. A real-time signal is queued.
pub fn signal(pid: i32, starttime: u64, sig: i32) -> Result<(), i32> {
    if !(0..=MAX_SIGNAL).contains(&sig) {
        return Err(libc::EINVAL);
    }
    let (fd, _) = open_checked(pid, Some(starttime))?;
    // SAFETY: pidfd_send_signal with a valid pidfd and a null siginfo (the
    // kernel fills it in as kill(2) does).
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return Err(errno());
    }
    Ok(())
}

/// Puts `data` into the mailbox queue `mailbox`, typed with the sender's
/// pid_d. Errors a mailbox send can end with, mapped for `dipc_send`:
/// the queue removed (its process left) → `ESRCH`; a message longer than
/// the kernel's `msgmax` → `EMSGSIZE` (the kernel says `EINVAL` for both
/// a removed queue and a too-long message; a look at the queue tells them
/// apart); a full mailbox with `IPC_NOWAIT` → `EAGAIN`; a signal →
/// `EINTR`.
pub fn mailbox_send(mailbox: i32, from: i64, data: &[u8], flags: i32) -> Result<(), i32> {
    if from <= 0 {
        return Err(libc::ENOTCONN);
    }
    match crate::sysv::msgsnd(mailbox, from, data, flags & libc::IPC_NOWAIT) {
        Ok(()) => Ok(()),
        Err(libc::EIDRM) => Err(libc::ESRCH),
        Err(libc::EINVAL) => match crate::sysv::msgctl_stat(mailbox) {
            // The queue is there (readable or not): the message was too long.
            Ok(_) | Err(libc::EACCES) => Err(libc::EMSGSIZE),
            Err(_) => Err(libc::ESRCH),
        },
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starttime_skips_odd_command_names() {
        let line = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_starttime(line), Some(987654));
        assert_eq!(parse_starttime("42 (x) S 1"), None);
        assert_eq!(parse_starttime("garbage"), None);
        assert_eq!(parse_parent(line), Some(1));
        assert_eq!(parse_parent("garbage"), None);
    }

    #[test]
    fn own_parent_is_found() {
        let me = std::process::id() as i32;
        // SAFETY: getppid cannot fail.
        assert_eq!(parent(me), Ok(unsafe { libc::getppid() }));
    }

    #[test]
    fn own_process_is_found_and_a_wrong_starttime_is_not() {
        let me = std::process::id() as i32;
        let (fd, t) = open_checked(me, None).unwrap();
        assert!(!exited(&fd));
        assert_eq!(starttime(me), Ok(t));
        assert_eq!(open_checked(me, Some(t + 1)).err(), Some(libc::ESRCH));
        signal(me, t, 0).unwrap();
        assert_eq!(signal(me, t + 1, 0), Err(libc::ESRCH));
        assert_eq!(signal(me, t, 65), Err(libc::EINVAL));
        assert_eq!(signal(me, t, -1), Err(libc::EINVAL));
    }

    #[test]
    fn an_exited_child_is_gone() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let (fd, t) = open_checked(pid, None).unwrap();
        child.kill().unwrap();
        // A zombie has exited already: its pidfd is readable before the
        // reaping, and a pidfd of it is refused.
        while !exited(&fd) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(open_checked(pid, Some(t)).err(), Some(libc::ESRCH));
        child.wait().unwrap();
        assert!(exited(&fd));
        assert_eq!(signal(pid, t, 0), Err(libc::ESRCH));
    }

    #[test]
    fn mailbox_send_maps_errors() {
        // SAFETY: msgget takes plain integers.
        let q = unsafe { crate::sysv::raw::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600) };
        assert!(q >= 0);
        mailbox_send(q, 7, b"hi", 0).unwrap();
        assert_eq!(crate::sysv::msgrcv(q, 100, 7, 0), Ok((7, b"hi".to_vec())));
        let big = vec![0u8; crate::sysv::msgmax() + 1];
        assert_eq!(mailbox_send(q, 7, &big, 0), Err(libc::EMSGSIZE));
        assert_eq!(mailbox_send(q, 0, b"x", 0), Err(libc::ENOTCONN));
        crate::sysv::msgctl_rmid(q).unwrap();
        assert_eq!(mailbox_send(q, 7, b"hi", 0), Err(libc::ESRCH));
    }
}
