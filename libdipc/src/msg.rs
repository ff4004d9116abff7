//! Distributed message queues: `msgget`, `msgsnd`, `msgrcv`, `msgctl`.
//!
//! A queue made with `IPC_DIPC` is known cluster-wide by its key and lives
//! as a real kernel queue on the host that created it first. On that host
//! every call is the plain system call. On any other host the id is that of
//! a local placeholder, and each call is carried out on the owner by a
//! worker acting with the caller's uid and gids, so the kernel's semantics
//! and errors hold unchanged; only a lost owner adds errors of its own
//! (`ETIMEDOUT`, `ECONNRESET`, `ECONNREFUSED`, `EHOSTUNREACH`).

use crate::dist::{self, client_errno, KindOps};
pub use crate::dist::{Errno, IPC_DIPC};
use crate::state::{self, Route};
use dipc_common::sysv;
use dipc_common::wire::{IpcKind, IpcSet, Message, MsqInfo, SemArg};
use std::io;
use std::mem::size_of;

static OPS: KindOps = KindOps {
    kind: IpcKind::Msg,
    get: |key, flags, _| sysv::msgget(key, flags),
    rmid: sysv::msgctl_rmid,
    set: sysv::msgctl_set,
    perm: |id| sysv::msgctl_stat(id).map(|i| i.perm),
    ctl: |(id, origin), _, cmd, arg| Message::MsgCtl {
        id,
        origin,
        cmd,
        set: dist::ipc_set(arg),
    },
};

/// `msgget`. With `IPC_DIPC` (and a key other than `IPC_PRIVATE`) the queue
/// is distributed: the referee decides which host owns it.
pub fn get(key: i32, flags: i32) -> Result<i32, Errno> {
    dist::get(&OPS, key, flags, 0)
}

pub(crate) fn route(id: i32) -> Route {
    dist::route(&OPS, id)
}

/// The longest text a message to another host may have: what a frame
/// carries, longer than any kernel's msgmax can be here.
pub(crate) fn text_max() -> Result<usize, Errno> {
    let max = state::config().map_err(client_errno)?.max_frame as usize;
    Ok(max.saturating_sub(256))
}

/// `msgsnd` of a message whose type is `mtype` and text `text`.
pub fn send(id: i32, mtype: i64, text: &[u8], flags: i32) -> Result<(), Errno> {
    match route(id) {
        Route::Local | Route::Owned { .. } => sysv::msgsnd(id, mtype, text, flags),
        Route::Remote { .. } => send_owned(id, mtype, text.to_vec(), flags),
    }
}

/// As [`send`], with a text the caller already copied (the C interface
/// copies it out of the application's buffer): sent as it is.
pub(crate) fn send_owned(id: i32, mtype: i64, text: Vec<u8>, flags: i32) -> Result<(), Errno> {
    match route(id) {
        Route::Local | Route::Owned { .. } => sysv::msgsnd(id, mtype, &text, flags),
        Route::Remote { owner, id, origin } => {
            if text.len() > text_max()? {
                return Err(libc::EINVAL);
            }
            let req = Message::MsgSnd {
                id,
                origin,
                mtype,
                text,
                flags,
            };
            match state::remote(owner, &req, flags & libc::IPC_NOWAIT == 0) {
                Ok(Message::Done { .. }) => Ok(()),
                Ok(_) => Err(libc::EPROTO),
                Err(e) => Err(client_errno(e)),
            }
        }
    }
}

/// `msgrcv` of at most `size` bytes of text; returns the type and text.
pub fn recv(id: i32, size: usize, mtype: i64, flags: i32) -> Result<(i64, Vec<u8>), Errno> {
    if (size as isize) < 0 {
        return Err(libc::EINVAL);
    }
    match route(id) {
        Route::Local | Route::Owned { .. } => sysv::msgrcv(id, size as u64, mtype, flags),
        Route::Remote { owner, id, origin } => {
            let req = Message::MsgRcv {
                id,
                origin,
                size: size as u64,
                mtype,
                flags,
            };
            match state::remote(owner, &req, flags & libc::IPC_NOWAIT == 0) {
                Ok(Message::MsgData { mtype, text }) if text.len() <= size => Ok((mtype, text)),
                Ok(_) => Err(libc::EPROTO),
                Err(e) => Err(client_errno(e)),
            }
        }
    }
}

/// `msgctl` with `IPC_STAT`.
pub fn stat(id: i32) -> Result<MsqInfo, Errno> {
    let ctl = (0, libc::IPC_STAT, SemArg::None);
    dist::ctl(
        &OPS,
        id,
        |_| sysv::msgctl_stat(id),
        ctl,
        |m| match m {
            Message::MsqStat { info } => Some(info),
            _ => None,
        },
    )
}

/// `msgctl` with `IPC_SET`.
pub fn set(id: i32, set: &IpcSet) -> Result<(), Errno> {
    dist::set(&OPS, id, set)
}

/// `msgctl` with `IPC_RMID`: removes the queue, everywhere.
pub fn remove(id: i32) -> Result<(), Errno> {
    dist::remove(&OPS, id)
}

/// Whether `id` (as returned by [`get`]) is owned by another host.
pub fn is_remote(id: i32) -> bool {
    matches!(route(id), Route::Remote { .. })
}

/// A message queue, for Rust programs.
///
/// ```no_run
/// use dipc::msg::{MsgQueue, IPC_DIPC};
/// let q = MsgQueue::get(0x1234, libc::IPC_CREAT | IPC_DIPC | 0o666)?;
/// q.send(1, b"Hello, Distributed Programming", 0)?;
/// let (mtype, text) = q.recv(8192, 0, 0)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgQueue {
    id: i32,
}

pub(crate) fn io_err(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e)
}

impl MsgQueue {
    /// `msgget(key, flags)`; add [`IPC_DIPC`] to `flags` for a distributed
    /// queue.
    pub fn get(key: i32, flags: i32) -> io::Result<MsgQueue> {
        get(key, flags).map(|id| MsgQueue { id }).map_err(io_err)
    }

    /// A queue by id (as another `get` returned it).
    pub fn from_id(id: i32) -> MsgQueue {
        MsgQueue { id }
    }

    pub fn id(&self) -> i32 {
        self.id
    }

    pub fn send(&self, mtype: i64, text: &[u8], flags: i32) -> io::Result<()> {
        send(self.id, mtype, text, flags).map_err(io_err)
    }

    /// Receives a message of at most `size` bytes; returns its type and
    /// text.
    pub fn recv(&self, size: usize, mtype: i64, flags: i32) -> io::Result<(i64, Vec<u8>)> {
        recv(self.id, size, mtype, flags).map_err(io_err)
    }

    pub fn stat(&self) -> io::Result<MsqInfo> {
        stat(self.id).map_err(io_err)
    }

    pub fn set(&self, s: &IpcSet) -> io::Result<()> {
        set(self.id, s).map_err(io_err)
    }

    pub fn remove(self) -> io::Result<()> {
        remove(self.id).map_err(io_err)
    }
}

/// Bytes of the type word that leads a C message buffer.
pub(crate) const MTYPE_LEN: usize = size_of::<libc::c_long>();
