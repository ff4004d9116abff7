//! Calls that may block (`msgsnd`, `msgrcv`, `semop`, `dipc_send` without
//! `IPC_NOWAIT`): made first without waiting, and only if they would
//! wait, again as sent with SIGIO on, so that the caller's `Cancel` or
//! hang-up interrupts the kernel's wait.

use crate::{msg, pids, sem};
use dipc_common::channel::Channel;
use dipc_common::wire::{Message, Protocol, ToWorker};
use log::warn;
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd};

/// Carries out a call; `extra` flags (`IPC_NOWAIT` or 0) are added to the
/// call's own (to every operation of a `semop`).
pub(crate) fn handle(req: &ToWorker, sender: i64, extra: i32) -> Message {
    match req {
        ToWorker::SendD {
            mailbox,
            data,
            flags,
        } => pids::send(*mailbox, sender, data, *flags | extra),
        ToWorker::MsgSnd {
            id,
            mtype,
            text,
            flags,
            ..
        } => msg::snd(*id, *mtype, text, *flags | extra),
        ToWorker::MsgRcv {
            id,
            size,
            mtype,
            flags,
            ..
        } => msg::rcv(*id, *size, *mtype, *flags | extra),
        ToWorker::SemOp {
            id,
            ops,
            timeout_ns,
            ..
        } => sem::op(*id, ops, *timeout_ns, extra as i16),
        other => Message::error(
            libc::EPROTO,
            format!("a worker does not take {} messages", other.kind().name()),
        ),
    }
}

/// Whether `req` is a call that may wait (it has no `IPC_NOWAIT`): it is
/// then first made with `IPC_NOWAIT`, and SIGIO is switched on only if it
/// does have to wait.
pub(crate) fn may_wait(req: &ToWorker) -> bool {
    let waits = |flags: i32| flags & libc::IPC_NOWAIT == 0;
    match req {
        ToWorker::MsgSnd { flags, .. }
        | ToWorker::MsgRcv { flags, .. }
        | ToWorker::SendD { flags, .. } => waits(*flags),
        ToWorker::SemOp { ops, .. } => ops.iter().any(|o| waits(i32::from(o.flg))),
        _ => false,
    }
}

/// Whether `first`, the answer to `req` made without waiting, says that
/// `req` as sent would have waited: it is then made again, as sent, with
/// SIGIO on. A call that failed for want of waiting has done nothing, so
/// making it again is the call the caller asked for.
pub(crate) fn would_block(req: &ToWorker, first: &Message) -> bool {
    let Message::Error { errno, .. } = first else {
        return false;
    };
    let wait_errno = match req {
        ToWorker::MsgRcv { .. } => libc::ENOMSG,
        ToWorker::MsgSnd { .. } | ToWorker::SendD { .. } | ToWorker::SemOp { .. } => libc::EAGAIN,
        _ => return false,
    };
    *errno == wait_errno
}

extern "C" fn on_sigio(_: libc::c_int) {}

/// `fcntl(F_SETOWN_EX)` and its argument (linux/fcntl.h; the libc crate
/// has them for some targets only).
const F_SETOWN_EX: libc::c_int = 15;
const F_OWNER_TID: libc::c_int = 0;
#[repr(C)]
struct FOwnerEx {
    kind: libc::c_int,
    pid: libc::pid_t,
}

/// The socket's file status flags without `O_ASYNC`, read once: toggling
/// SIGIO on and off around a call then takes one `fcntl` each way.
#[derive(Clone, Copy)]
pub(crate) struct Sigio {
    flags: libc::c_int,
}

/// Arranges for SIGIO to interrupt this thread's blocking call whenever the caller
/// sends something (a `Cancel`) or hangs up, while [`set_async`] has it
/// on. The handler does nothing and is installed without SA_RESTART, so
/// the System V call returns `EINTR`.
pub(crate) fn interrupt_on_input(sock: &TcpStream) -> Result<Sigio, String> {
    // SAFETY: installing a handler that does nothing is async-signal-safe;
    // the fcntl calls take a valid descriptor.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigio as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGIO, &sa, std::ptr::null_mut()) != 0 {
            return Err(format!("sigaction: {}", std::io::Error::last_os_error()));
        }
        // To this thread: the sessions of an undo context are served by
        // threads of one process, and a cancel must interrupt the call of
        // its own session.
        let owner = FOwnerEx {
            kind: F_OWNER_TID,
            pid: libc::gettid(),
        };
        if libc::fcntl(sock.as_raw_fd(), F_SETOWN_EX, &owner as *const FOwnerEx) != 0 {
            return Err(format!("F_SETOWN_EX: {}", std::io::Error::last_os_error()));
        }
        let flags = libc::fcntl(sock.as_raw_fd(), libc::F_GETFL);
        if flags < 0 {
            return Err(format!("F_GETFL: {}", std::io::Error::last_os_error()));
        }
        Ok(Sigio {
            flags: flags & !libc::O_ASYNC,
        })
    }
}

/// Turns SIGIO on input on or off. It is on only while a call that waits
/// runs: a signal for every request would interrupt (and restart) each
/// read of the next request for nothing. A `Cancel` that arrives just
/// before it is turned on raises no signal, but the caller repeats its
/// cancel until it has an answer, and the next one does.
fn set_async(sock: &TcpStream, sigio: Sigio, on: bool) {
    let flags = if on {
        sigio.flags | libc::O_ASYNC
    } else {
        sigio.flags
    };
    // SAFETY: F_SETFL on a descriptor we own.
    if unsafe { libc::fcntl(sock.as_raw_fd(), libc::F_SETFL, flags) } != 0 {
        warn!(
            "worker: cannot switch SIGIO {}: {}",
            if on { "on" } else { "off" },
            std::io::Error::last_os_error()
        );
    }
}

/// Runs a call that may block. If it is interrupted because the employer
/// sent a `Cancel`, the reply is `EINTR`; if the employer hung up, `None`
/// (the worker ends: its caller is gone); any other interruption (a
/// stray SIGIO) runs the call again, which is safe because an interrupted
/// System V call has done nothing.
pub(crate) fn interruptible(
    ch: &mut Channel<TcpStream>,
    sigio: Sigio,
    mut call: impl FnMut() -> Message,
) -> Option<Message> {
    set_async(ch.get_ref(), sigio, true);
    let r = interruptible_inner(ch, &mut call);
    set_async(ch.get_ref(), sigio, false);
    r
}

fn interruptible_inner(
    ch: &mut Channel<TcpStream>,
    call: &mut impl FnMut() -> Message,
) -> Option<Message> {
    loop {
        let reply = call();
        if !matches!(
            reply,
            Message::Error {
                errno: libc::EINTR,
                ..
            }
        ) {
            return Some(reply);
        }
        let mut fds = [nix::poll::PollFd::new(
            ch.get_ref().as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(_) => continue,
        }
        return match ch.recv() {
            Ok((_, Message::Cancel)) => Some(reply),
            Ok((_, other)) => {
                warn!("worker: {} arrived during a call", other.kind().name());
                None
            }
            Err(_) => None,
        };
    }
}
