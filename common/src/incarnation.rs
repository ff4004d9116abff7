//! The incarnation of this host's IPC namespace: a random, non-zero token
//! that stays the same while the namespace lives (across restarts of
//! dipcd) and changes when the host gets a fresh one (a reboot).
//!
//! Every distributed structure is recorded with its owner's incarnation
//! (see `wire::Origin`), and every remote call carries it: System V ids
//! start again from the same numbers in a fresh namespace, so after an
//! owner's reboot an old id can name a new, unrelated structure, and only
//! the incarnation tells them apart. Nothing in the kernel names a
//! namespace for good (the inode number of `/proc/self/ns/ipc` is reused
//! once a namespace is gone), so dipcd keeps its own mark *inside* the
//! namespace: a small private shared memory segment (mode 0, owned by
//! root, visible in `ipcs`) holding the token, whose id and token it also
//! writes to a file of its runtime directory. The token is the one in the
//! file only if that segment still exists and holds it; otherwise (a
//! fresh namespace, no file, someone removed the segment) a new token and
//! segment are made. Removing that segment by hand makes the next dipcd
//! start a new incarnation: other hosts then get `EIDRM` on the ids they
//! had from this host, as after a reboot.

use crate::auth::fill_random;
use crate::sysv;
use std::fs;
use std::io;
use std::path::Path;

/// Bytes of the mark segment: the token, little-endian.
const MARK_SIZE: usize = 8;

/// The incarnation of the IPC namespace this process runs in, as recorded
/// in `file` (made or replaced as needed).
pub fn load_or_create(file: &Path) -> io::Result<u64> {
    if let Some(token) = recorded(file) {
        return Ok(token);
    }
    let mut token = 0u64;
    while token == 0 {
        let mut b = [0u8; 8];
        fill_random(&mut b)?;
        token = u64::from_le_bytes(b);
    }
    let id = sysv::shmget(libc::IPC_PRIVATE, MARK_SIZE as u64, libc::IPC_CREAT)
        .map_err(io::Error::from_raw_os_error)?;
    if let Err(e) = with_mark(id, |m| m.copy_from_slice(&token.to_le_bytes())) {
        let _ = sysv::shmctl_rmid(id);
        return Err(e);
    }
    let tmp = file.with_extension("tmp");
    fs::write(&tmp, format!("{id} {token}\n"))?;
    fs::rename(&tmp, file)?;
    Ok(token)
}

/// The token of `file`, if its segment still exists here and holds it.
fn recorded(file: &Path) -> Option<u64> {
    let text = fs::read_to_string(file).ok()?;
    let mut it = text.split_whitespace();
    let id: i32 = it.next()?.parse().ok()?;
    let token: u64 = it.next()?.parse().ok()?;
    let info = sysv::shmctl_stat(id).ok()?;
    if token == 0
        || info.perm.key != libc::IPC_PRIVATE
        || info.perm.cuid != 0
        || info.segsz != MARK_SIZE as u64
    {
        return None;
    }
    let mut have = [0u8; MARK_SIZE];
    with_mark(id, |m| have.copy_from_slice(m)).ok()?;
    (u64::from_le_bytes(have) == token).then_some(token)
}

/// Runs `f` on the mark segment `id`, attached for the call.
fn with_mark(id: i32, f: impl FnOnce(&mut [u8])) -> io::Result<()> {
    // SAFETY: a fresh attach at an address the kernel chooses; the slice
    // covers exactly the segment's MARK_SIZE bytes (checked or made so by
    // the caller) and is dropped before the detach.
    unsafe {
        let p = crate::sysv::raw::shmat(id, std::ptr::null(), 0);
        if p as isize == -1 {
            return Err(io::Error::last_os_error());
        }
        f(std::slice::from_raw_parts_mut(p.cast::<u8>(), MARK_SIZE));
        crate::sysv::raw::shmdt(p);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As dipcd runs it: as root (the mark has mode 0).
    #[test]
    fn the_token_lasts_while_its_segment_does() {
        let dir = std::env::temp_dir().join(format!("dipc-incarnation-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("incarnation");
        let a = load_or_create(&file).unwrap();
        assert_ne!(a, 0);
        let text = fs::read_to_string(&file).unwrap();
        let id: i32 = text.split_whitespace().next().unwrap().parse().unwrap();
        assert_eq!(load_or_create(&file).unwrap(), a);
        // A file whose segment holds another token is not believed.
        fs::write(&file, format!("{id} {}\n", a ^ 1)).unwrap();
        let b = load_or_create(&file).unwrap();
        assert_ne!(b, a ^ 1);
        let text = fs::read_to_string(&file).unwrap();
        let id2: i32 = text.split_whitespace().next().unwrap().parse().unwrap();
        let _ = sysv::shmctl_rmid(id2);
        fs::write(&file, format!("{id} {a}\n")).unwrap();
        assert_eq!(load_or_create(&file).unwrap(), a);
        // The segment gone (as in a fresh namespace): a new token.
        sysv::shmctl_rmid(id).unwrap();
        let c = load_or_create(&file).unwrap();
        assert_ne!(c, a);
        let text = fs::read_to_string(&file).unwrap();
        let id3: i32 = text.split_whitespace().next().unwrap().parse().unwrap();
        let _ = sysv::shmctl_rmid(id3);
        let _ = fs::remove_dir_all(&dir);
    }
}
