//! The agent's mappings: the two views of a new attachment (the *app
//! view* the program touches and the *agent view* the agent fills, both of
//! one private memfd) and the *traps* (see the parent module) that stand in
//! for units that are lost or dead.

use super::{close, last_errno, Params};
use crate::dist::Errno;
use std::os::fd::RawFd;

/// A new empty memfd for traps, sealed so that it stays empty (a trap
/// must never turn into memory).
pub(super) fn trap_memfd() -> Result<RawFd, Errno> {
    // SAFETY: a NUL-terminated name and valid flags.
    let fd = unsafe {
        libc::memfd_create(
            c"dipc-shm-lost".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(last_errno());
    }
    let seals = libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on the memfd we just made.
    if unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) } != 0 {
        let e = last_errno();
        close(fd);
        return Err(e);
    }
    Ok(fd)
}

/// Maps `[addr, addr + len)` of an app view as a trap: accesses that
/// `prot` allows raise SIGBUS (`BUS_ADRERR`, at the address touched),
/// others SIGSEGV as before. The range is replaced at once, so no thread
/// sees it unmapped.
///
/// # Safety
/// The range must lie inside an app view of this process.
pub(super) unsafe fn map_trap(
    trap_fd: RawFd,
    addr: usize,
    len: usize,
    prot: i32,
) -> Result<(), Errno> {
    // SAFETY: MAP_FIXED replaces part of our own app view (the caller's
    // contract) with a mapping of our own memfd.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            prot,
            libc::MAP_SHARED | libc::MAP_FIXED,
            trap_fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(last_errno());
    }
    // As the views: a fork child does not inherit it.
    // SAFETY: the range was just mapped.
    unsafe { libc::madvise(p, len, libc::MADV_DONTFORK) };
    Ok(())
}

/// Maps `[agent, agent + len)` of the agent view (the same pages of the
/// memfd) at `app`, with `prot`, in place of a trap. The new mapping is
/// made elsewhere (`mremap` with an old size of 0 maps the same shared
/// pages again), given its protection there, and only then moved over the
/// trap in one step: at no moment can another thread reach the memory
/// with more rights than `prot`.
///
/// # Safety
/// `agent` must lie in an agent view and `app` be the same range of its
/// app view.
pub(super) unsafe fn map_back(
    agent: usize,
    app: usize,
    len: usize,
    prot: i32,
) -> Result<(), Errno> {
    // SAFETY: the agent view is a MAP_SHARED mapping of ours; the copy and
    // the move only touch mappings this function makes and the trap.
    unsafe {
        let tmp = libc::mremap(agent as *mut libc::c_void, 0, len, libc::MREMAP_MAYMOVE);
        if tmp == libc::MAP_FAILED {
            return Err(last_errno());
        }
        libc::madvise(tmp, len, libc::MADV_DONTFORK);
        if libc::mprotect(tmp, len, prot) != 0 {
            let e = last_errno();
            libc::munmap(tmp, len);
            return Err(e);
        }
        let moved = libc::mremap(
            tmp,
            len,
            len,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            app as *mut libc::c_void,
        );
        if moved == libc::MAP_FAILED {
            let e = last_errno();
            libc::munmap(tmp, len);
            return Err(e);
        }
    }
    Ok(())
}

/// The two views of a new attachment; unmapped on drop unless forgotten.
pub(super) struct Maps {
    pub(super) app: usize,
    pub(super) agent: usize,
    pub(super) len: usize,
}

impl Maps {
    pub(super) fn new(len: usize, p: &Params) -> Result<Maps, Errno> {
        // SAFETY: a NUL-terminated name and a valid flag.
        let fd = unsafe { libc::memfd_create(c"dipc-shm".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(last_errno());
        }
        let r = Self::map(fd, len, p);
        close(fd); // the mappings keep the memory
        r
    }

    pub(super) fn map(fd: RawFd, len: usize, p: &Params) -> Result<Maps, Errno> {
        // SAFETY: ftruncate and mmap on our own memfd; results checked.
        unsafe {
            if libc::ftruncate(fd, len as libc::off_t) != 0 {
                return Err(last_errno());
            }
            let agent = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            );
            if agent == libc::MAP_FAILED {
                return Err(last_errno());
            }
            let (hint, flags) = match p.addr {
                None => (std::ptr::null_mut(), libc::MAP_SHARED),
                Some(a) if p.remap => (a as *mut libc::c_void, libc::MAP_SHARED | libc::MAP_FIXED),
                Some(a) => (
                    a as *mut libc::c_void,
                    libc::MAP_SHARED | libc::MAP_FIXED_NOREPLACE,
                ),
            };
            let app = libc::mmap(hint, len, libc::PROT_NONE, flags, fd, 0);
            if app == libc::MAP_FAILED {
                let e = last_errno();
                libc::munmap(agent, len);
                // shmat reports an occupied range as EINVAL.
                return Err(if e == libc::EEXIST { libc::EINVAL } else { e });
            }
            // Kernels before 4.17 take MAP_FIXED_NOREPLACE as a mere hint.
            if p.addr.is_some_and(|a| a != app as usize) {
                libc::munmap(app, len);
                libc::munmap(agent, len);
                return Err(libc::EINVAL);
            }
            // A fork child does not inherit the views (it forgets the
            // attachment, see at_fork_child), so it never shares pages
            // with its parent's private copy.
            libc::madvise(app, len, libc::MADV_DONTFORK);
            libc::madvise(agent, len, libc::MADV_DONTFORK);
            Ok(Maps {
                app: app as usize,
                agent: agent as usize,
                len,
            })
        }
    }
}

impl Drop for Maps {
    fn drop(&mut self) {
        // SAFETY: both views were mapped by Maps::map with this length.
        unsafe {
            libc::munmap(self.app as *mut libc::c_void, self.len);
            libc::munmap(self.agent as *mut libc::c_void, self.len);
        }
    }
}
