//! `kill_d` and `dipc_send` for a caller on another host, made as that
//! caller (the worker has its uid and groups), so the kernel checks the
//! caller's permission: `EPERM` from `kill_d` is the kernel's own.

use crate::done;
use dipc_common::procs;
use dipc_common::wire::Message;

fn reply(r: Result<(), i32>) -> Message {
    done(r.map(|()| 0))
}

/// Signals the process `{pid, starttime}` of this host.
pub fn kill(pid: i32, starttime: u64, sig: i32) -> Message {
    reply(procs::signal(pid, starttime, sig))
}

/// Puts a message into a mailbox of this host, typed with the session's
/// pid_d (`ENOTCONN` if the caller was not registered when the session
/// opened).
pub fn send(mailbox: i32, sender: i64, data: &[u8], flags: i32) -> Message {
    reply(procs::mailbox_send(mailbox, sender, data, flags))
}
