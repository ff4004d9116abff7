//! The new program's side of a move: in `regist`, it reads what the
//! moving process handed it (mapped, not copied), takes the pid_d over at
//! the referee and keeps the state until [`super::migratable`] gives it to
//! the program's *restore*.

use super::head::decode;
use super::{lock, refill, MAX_PAYLOAD};
use crate::moved_ids;
use crate::pid::PidD;
use crate::state;
use dipc_common::sysv;
use dipc_common::wire::{self, Message};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// What a process that continues a moved one received, until
/// [`super::migratable`] hands it to the program.
pub(super) struct Arrived {
    pub(super) pid: u32,
    pub(super) pid_d: PidD,
    /// What the moving process sent, mapped (no copy); the state is
    /// `state` within it.
    pub(super) map: Mapped,
    pub(super) state: std::ops::Range<usize>,
    pub(super) mask: u64,
}

/// A read-only private mapping of the memfd the worker filled.
pub(super) struct Mapped {
    pub(super) ptr: *mut libc::c_void,
    pub(super) len: usize,
}

// SAFETY: the mapping is private to this process and read-only; it is
// only read through `bytes`, under ARRIVED's lock or after being taken out.
unsafe impl Send for Mapped {}

impl Mapped {
    pub(super) fn new(fd: RawFd, len: usize) -> io::Result<Mapped> {
        // SAFETY: a fresh read-only private mapping of `len` bytes of fd.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapped { ptr, len })
    }

    pub(super) fn bytes(&self) -> &[u8] {
        // SAFETY: `len` readable bytes mapped at `ptr` while self lives.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// Mailbox messages the last move into this process carried (-1: none).
pub(super) static CARRIED: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(-1);

pub(super) static ARRIVED: Mutex<Option<Arrived>> = Mutex::new(None);

/// Whether `regist` has looked for a move to continue yet.
pub(super) static LOOKED: AtomicBool = AtomicBool::new(false);

/// In a program started to continue a moved process: takes the moved
/// process's pid_d over (called by `regist`); `None` in any other
/// program. A program that was started for a move that then fails exits
/// here: it must not run beside the process it was to continue.
pub(crate) fn arrive() -> Option<(PidD, i32)> {
    if LOOKED.swap(true, Ordering::SeqCst) {
        return None;
    }
    let v = std::env::var("DIPC_MIGRATION").ok()?;
    std::env::remove_var("DIPC_MIGRATION");
    let fds: Vec<RawFd> = v.split(',').filter_map(|x| x.parse().ok()).collect();
    let &[data, go, answer] = fds.as_slice() else {
        return None;
    };
    // SAFETY: the worker that started this program left these three
    // descriptors open for the library alone.
    let (data, mut go, mut answer) = unsafe {
        (
            std::fs::File::from_raw_fd(data),
            std::fs::File::from_raw_fd(go),
            std::fs::File::from_raw_fd(answer),
        )
    };
    match take_over(data, &mut go, &mut answer) {
        Ok((pid_d, mailbox)) => {
            let _ = answer.write_all(&0i32.to_be_bytes());
            Some((pid_d, mailbox))
        }
        Err((errno, why)) => {
            let _ = answer.write_all(&errno.to_be_bytes());
            eprintln!("dipc: this program was started to continue a moving process: {why}");
            // SAFETY: ends this process without running the program's
            // exit handlers, which belong to the process that stays.
            unsafe { libc::_exit(75) }
        }
    }
}

/// The referee moved the process's names with its record; taking each
/// again through this host's dipcd (the holder may) lets that dipcd know
/// them, to give them back after its link to the referee breaks.
pub(super) fn tell_names(pid_d: PidD) {
    let Ok(all) = crate::dprocs::names() else {
        return;
    };
    for (name, _) in all.into_iter().filter(|(_, p)| *p == pid_d) {
        let _ = state::control(&Message::NameRegister {
            pid_d,
            pid: 0,
            name,
        });
    }
}

pub(super) fn take_over(
    data: std::fs::File,
    go: &mut std::fs::File,
    answer: &mut std::fs::File,
) -> Result<(PidD, i32), (i32, String)> {
    // The configuration and a connection to dipcd are ready before the
    // old process freezes (it does once this program says it is ready),
    // so that neither is part of the time it stays frozen.
    if let Ok(conn) = state::control_conn() {
        drop(conn);
    }
    // A worker that no longer waits for it sees it at commit, or never.
    let _ = answer.write_all(&wire::TAKEOVER_READY.to_be_bytes());
    let mut len = [0u8; 8];
    go.read_exact(&mut len)
        .map_err(|e| (libc::ECHILD, format!("the move was called off: {e}")))?;
    let len = u64::from_be_bytes(len);
    if len > MAX_PAYLOAD as u64 {
        return Err((libc::EFBIG, format!("{len} bytes of state")));
    }
    let size = data
        .metadata()
        .map_err(|e| (libc::EIO, format!("the state's memfd: {e}")))?
        .len();
    if len == 0 || size < len {
        return Err((libc::EPROTO, format!("{size} bytes of state, not {len}")));
    }
    let map = Mapped::new(data.as_raw_fd(), len as usize)
        .map_err(|e| (libc::EIO, format!("mapping the state: {e}")))?;
    drop(data);
    let h = decode(map.bytes()).map_err(|e| (libc::EPROTO, e))?;
    moved_ids::rebind(&h.ipc.carried)?;
    crate::shm::reattach(&h.ipc.attached).map_err(|(e, at)| {
        (
            e,
            format!("cannot attach its segment again at {at:#x}: errno {e}"),
        )
    })?;
    // From here on a failure must detach them again: an exit without
    // shmdt would lose what they hold for writing.
    let detach = || {
        let _ = crate::shm::detach_all(&h.ipc.attached);
    };
    // SAFETY: msgget takes plain integers.
    let mailbox = unsafe { libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o622) };
    if mailbox < 0 {
        let e = sysv::errno();
        detach();
        return Err((e, format!("cannot make a mailbox: errno {e}")));
    }
    let fail = |e: (i32, String)| {
        let _ = sysv::msgctl_rmid(mailbox);
        detach();
        e
    };
    refill(mailbox, h.qbytes, &h.mail).map_err(|e| {
        fail((
            e.raw_os_error().unwrap_or(libc::EIO),
            format!("cannot refill the mailbox: {e}"),
        ))
    })?;
    let msg = Message::MoveIn {
        pid_d: h.pid_d,
        pid: 0,
        uid: 0,
        starttime: 0,
        mailbox,
        token: h.token,
    };
    match state::control(&msg) {
        Ok(Message::Registered { pid_d, mailbox: m }) if pid_d == h.pid_d && m == mailbox => {}
        Ok(other) => {
            return Err(fail((
                libc::EPROTO,
                format!("dipcd answered {}", other.kind().name()),
            )))
        }
        Err(e) => {
            let errno = crate::dist::client_errno(e);
            return Err(fail((
                errno,
                format!("taking pid_d {} over: errno {errno}", h.pid_d),
            )));
        }
    }
    CARRIED.store(h.mail.len() as i64, Ordering::SeqCst);
    *lock(&ARRIVED) = Some(Arrived {
        pid: std::process::id(),
        pid_d: h.pid_d,
        map,
        state: h.state,
        mask: h.mask,
    });
    Ok((h.pid_d, mailbox))
}
