//! The C interface's copies to and from the application's buffers on the
//! paths where the library, not the kernel, touches them (calls on
//! structures of other hosts, `IPC_SET`): a bad pointer gets `EFAULT`, as
//! the kernel's own copy would give it, instead of killing the process
//! with `SIGSEGV` inside the library.
//!
//! The copies go through `process_vm_readv`/`process_vm_writev` on this
//! process, which the kernel checks like any copy from user memory. A
//! process always may do that to itself (the kernel's access check lets a
//! thread group through to its own memory); where a seccomp filter
//! forbids the calls anyway (`ENOSYS`, `EPERM`), the copy is a plain one,
//! as before, and a bad pointer faults.

use crate::dist::Errno;
use std::mem::{size_of, MaybeUninit};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once the kernel has refused `process_vm_*` to this process.
static PLAIN: AtomicBool = AtomicBool::new(false);

/// Copies `len` bytes between this process's `local` and `remote`
/// (the application's pointer), reading `remote` if `read`.
///
/// # Safety
/// `local` must be valid for `len` bytes (for writing if `read`).
unsafe fn copy(local: *mut u8, remote: *mut u8, len: usize, read: bool) -> Result<(), Errno> {
    if len == 0 {
        return Ok(());
    }
    if remote.is_null() {
        return Err(libc::EFAULT);
    }
    if !PLAIN.load(Ordering::Relaxed) {
        let l = libc::iovec {
            iov_base: local.cast(),
            iov_len: len,
        };
        let r = libc::iovec {
            iov_base: remote.cast(),
            iov_len: len,
        };
        // SAFETY: both iovecs name `len` bytes; the kernel checks
        // `remote` (this process's own memory) and fails with EFAULT where
        // it is not mapped as the copy needs.
        let n = unsafe {
            if read {
                libc::process_vm_readv(libc::getpid(), &l, 1, &r, 1, 0)
            } else {
                libc::process_vm_writev(libc::getpid(), &l, 1, &r, 1, 0)
            }
        };
        if n == len as isize {
            return Ok(());
        }
        // A partial copy: the buffer ends in unmapped memory.
        if n >= 0 {
            return Err(libc::EFAULT);
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::ENOSYS | libc::EPERM) => {
                log::debug!("dipc: process_vm_readv refused; buffers are copied plainly");
                PLAIN.store(true, Ordering::Relaxed);
            }
            Some(e) => return Err(e),
            None => return Err(libc::EFAULT),
        }
    }
    // SAFETY: the caller vouches for `local`; `remote` is the
    // application's pointer, which the C interface's contract says is
    // valid (the checked copy above is unavailable).
    unsafe {
        if read {
            std::ptr::copy_nonoverlapping(remote, local, len);
        } else {
            std::ptr::copy_nonoverlapping(local, remote, len);
        }
    }
    Ok(())
}

/// `n` values of `T` read from the application's `src`.
pub fn read_slice<T: Copy>(src: *const T, n: usize) -> Result<Vec<T>, Errno> {
    let bytes = n.checked_mul(size_of::<T>()).ok_or(libc::EFAULT)?;
    let mut v: Vec<T> = Vec::with_capacity(n);
    // SAFETY: `v` has room for `n` values (`bytes` bytes); it is given
    // its length only once they are all written, and `T: Copy` has no
    // invalid bit patterns the C side could not have made.
    unsafe {
        copy(v.as_mut_ptr().cast(), src as *mut u8, bytes, true)?;
        v.set_len(n);
    }
    Ok(v)
}

/// One `T` read from the application's `src`.
pub fn read<T: Copy>(src: *const T) -> Result<T, Errno> {
    let mut v = MaybeUninit::<T>::uninit();
    // SAFETY: `v` has room for one T, initialised by the copy before it
    // is read.
    unsafe {
        copy(v.as_mut_ptr().cast(), src as *mut u8, size_of::<T>(), true)?;
        Ok(v.assume_init())
    }
}

/// Writes `vals` to the application's `dst`.
pub fn write_slice<T: Copy>(dst: *mut T, vals: &[T]) -> Result<(), Errno> {
    // SAFETY: `vals` is valid for its own size, and only read.
    unsafe {
        copy(
            vals.as_ptr() as *mut u8,
            dst.cast(),
            std::mem::size_of_val(vals),
            false,
        )
    }
}

/// Writes `v` to the application's `dst`.
pub fn write<T: Copy>(dst: *mut T, v: &T) -> Result<(), Errno> {
    write_slice(dst, std::slice::from_ref(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_buffers_are_copied_both_ways() {
        let src = [1u32, 2, 3, 4];
        assert_eq!(read_slice(src.as_ptr(), 4), Ok(vec![1, 2, 3, 4]));
        assert_eq!(read(&src[2]), Ok(3));
        let mut dst = [0u32; 4];
        write_slice(dst.as_mut_ptr(), &src).unwrap();
        assert_eq!(dst, src);
        write(&mut dst[0], &9).unwrap();
        assert_eq!(dst[0], 9);
        assert_eq!(read_slice::<u8>(std::ptr::null(), 0), Ok(vec![]));
    }

    #[test]
    fn bad_pointers_get_efault() {
        // The first page is never mapped.
        let bad = 16usize as *mut u64;
        assert_eq!(read(bad), Err(libc::EFAULT));
        assert_eq!(read_slice(bad, 3), Err(libc::EFAULT));
        assert_eq!(write(bad, &1), Err(libc::EFAULT));
        assert_eq!(read::<u64>(std::ptr::null()), Err(libc::EFAULT));
        // Read-only memory takes no write.
        static RO: u64 = 5;
        assert_eq!(write(&RO as *const u64 as *mut u64, &1), Err(libc::EFAULT));
        assert_eq!(RO, 5);
        assert_eq!(read_slice::<u64>(bad, usize::MAX), Err(libc::EFAULT));
    }

    #[test]
    fn a_buffer_that_runs_into_unmapped_memory_gets_efault() {
        // SAFETY: a fresh anonymous mapping of two pages, the second made
        // inaccessible; unmapped at the end.
        unsafe {
            let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
            let p = libc::mmap(
                std::ptr::null_mut(),
                2 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            assert_eq!(
                libc::mprotect(p.cast::<u8>().add(page).cast(), page, libc::PROT_NONE),
                0
            );
            let start = p.cast::<u8>().add(page - 8);
            assert_eq!(read_slice(start, 8).map(|v| v.len()), Ok(8));
            assert_eq!(read_slice(start, 16), Err(libc::EFAULT));
            assert_eq!(write_slice(start, &[0u8; 16]), Err(libc::EFAULT));
            libc::munmap(p, 2 * page);
        }
    }
}
