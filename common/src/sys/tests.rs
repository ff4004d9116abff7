//! Unit tests of `sys`, in a file of their own to keep `sys.rs` short enough
//! to read in one sitting.

use super::*;
use std::os::unix::net::UnixStream;

/// Makes SIGUSR2 interrupt a blocked call of the thread it is sent to
/// (a handler that does nothing, without SA_RESTART) instead of ending
/// the test process.
pub(crate) fn catch_sigusr2() {
    extern "C" fn nothing(_: libc::c_int) {}
    // SAFETY: a handler that does nothing, installed without SA_RESTART.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = nothing as extern "C" fn(libc::c_int) as usize;
        libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut());
    }
}

#[test]
fn a_signal_does_not_fail_the_wait_for_a_descriptor() {
    let (a, b) = UnixStream::pair().unwrap();
    // With a read time-out the kernel reports EINTR however the
    // handler was installed.
    a.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    catch_sigusr2();
    // SAFETY: pthread_self is always valid.
    let me = unsafe { libc::pthread_self() } as usize;
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(50));
        // SAFETY: the receiving thread is alive and waiting.
        unsafe { libc::pthread_kill(me as libc::pthread_t, libc::SIGUSR2) };
        std::thread::sleep(std::time::Duration::from_millis(50));
        let (x, _y) = UnixStream::pair().unwrap();
        send_fd(&b, &x).unwrap();
        b
    });
    let fd = recv_fd(&a).expect("the descriptor, after the signal");
    assert!(fd.as_raw_fd() > 2);
    drop(t.join().unwrap());
}

#[test]
fn a_held_signal_ends_the_wait_that_follows() {
    catch_sigusr2();
    let (a, b) = UnixStream::pair().unwrap();
    let short = std::time::Duration::from_millis(50);
    // SAFETY: pthread_self and pthread_kill on this live thread.
    let me = unsafe { libc::pthread_self() };
    let held = HeldSignals::hold();
    assert!(
        !held.wait_readable(a.as_raw_fd(), short).unwrap(),
        "nothing came"
    );
    // A caught signal that comes before the wait, while held, is not
    // lost: the wait lets it in and ends with EINTR.
    // SAFETY: as above.
    unsafe { libc::pthread_kill(me, libc::SIGUSR2) };
    let e = held.wait_readable(a.as_raw_fd(), std::time::Duration::from_secs(10));
    assert_eq!(e.map_err(|e| e.kind()), Err(io::ErrorKind::Interrupted));
    // An ignored one neither ends the wait nor stays pending for it.
    // SAFETY: SIGWINCH is ignored by default; sending it to this
    // thread changes nothing.
    unsafe { libc::pthread_kill(me, libc::SIGWINCH) };
    assert!(!held.wait_readable(a.as_raw_fd(), short).unwrap());
    std::io::Write::write_all(&mut &b, b"x").unwrap();
    assert!(
        held.wait_readable(a.as_raw_fd(), short).unwrap(),
        "readable"
    );
}

#[test]
fn peer_cred_is_ours() {
    let (a, _b) = UnixStream::pair().unwrap();
    let c = peer_cred(&a).unwrap();
    assert_eq!(c.pid as u32, std::process::id());
    assert_eq!(c.uid, nix::unistd::getuid().as_raw());
    assert!(is_admin(
        &PeerCred {
            pid: 1,
            uid: 0,
            gid: 5
        },
        None
    ));
    assert!(is_admin(
        &PeerCred {
            pid: 1,
            uid: 9,
            gid: 5
        },
        Some(5)
    ));
    assert!(!is_admin(
        &PeerCred {
            pid: 1,
            uid: 9,
            gid: 5
        },
        Some(6)
    ));
}

#[test]
fn peer_groups_are_the_connecting_processs() {
    let (a, _b) = UnixStream::pair().unwrap();
    let mut got = peer_groups(&a).unwrap();
    let mut have: Vec<u32> = nix::unistd::getgroups()
        .unwrap()
        .into_iter()
        .map(|g| g.as_raw())
        .collect();
    got.sort_unstable();
    have.sort_unstable();
    assert_eq!(got, have);
}

#[test]
fn runtime_dir_lock_is_exclusive() {
    let dir = std::env::temp_dir().join(format!("dipc-lock-test-{}", std::process::id()));
    let first = lock_runtime_dir(&dir).unwrap();
    // flock locks belong to the open file description, so a second open
    // in the same process conflicts too.
    let e = lock_runtime_dir(&dir).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
    drop(first);
    lock_runtime_dir(&dir).unwrap();
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_passed_descriptor_arrives_close_on_exec() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let (a, b) = UnixStream::pair().unwrap();
    let (mut x, y) = UnixStream::pair().unwrap();
    send_fd(&a, &y).unwrap();
    drop(y);
    let got = recv_fd(&b).unwrap();
    let flags = nix::fcntl::fcntl(got.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
    assert_ne!(flags & libc::FD_CLOEXEC, 0);
    let mut got = UnixStream::from(got);
    x.write_all(b"hi").unwrap();
    let mut buf = [0u8; 2];
    got.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hi");
    // A peer that sends no descriptor is an error, not a hang.
    drop(a);
    assert!(recv_fd(&b).is_err());
}

/// Waits for `pid` and returns its raw wait status.
fn wait_status(pid: Pid) -> i32 {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let r = unsafe { libc::waitpid(pid.as_raw(), &mut status, 0) };
    assert_eq!(r, pid.as_raw());
    status
}

/// Runs the test `name` alone in a new process of this test binary
/// (where it finds `DIPC_FORK_TEST` set to its name and does its
/// work), and fails if that process fails. A test that forks must not
/// share its process with other tests' threads: a lock one of them
/// holds at the fork (the output capture, the allocator's, stderr's)
/// stays held forever in the child.
fn isolated(name: &str) -> bool {
    if std::env::var("DIPC_FORK_TEST").is_ok_and(|n| n == name) {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("DIPC_FORK_TEST", name)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{name} failed:\n{text}");
    // It ran (a filter that matched nothing would pass vacuously).
    assert!(text.contains("1 passed"), "{name} did not run:\n{text}");
    false
}

#[test]
fn a_forked_child_keeps_only_the_descriptors_it_is_given() {
    const NAME: &str = "sys::tests::a_forked_child_keeps_only_the_descriptors_it_is_given";
    if !isolated(NAME) {
        return;
    }
    let (kept, _kept_peer) = UnixStream::pair().unwrap();
    let (dropped, _dropped_peer) = UnixStream::pair().unwrap();
    let file = fs::File::open("/proc/self/status").unwrap();
    let keep = [kept.as_raw_fd()];
    let (kept_fd, dropped_fd, file_fd) = (kept.as_raw_fd(), dropped.as_raw_fd(), file.as_raw_fd());
    // The child owns what it keeps only: dropping an owner of a
    // descriptor that fork_child closed would close it twice.
    let pid = fork_child("dipc-fd-test", Signal::SIGTERM, &keep, move || {
        let _kept = kept;
        let me = format!("/proc/{}/fd", std::process::id());
        let mut open = Vec::new();
        for e in fs::read_dir("/proc/self/fd").unwrap().flatten() {
            let fd: RawFd = e.file_name().to_str().unwrap().parse().unwrap();
            // The listing's own descriptor.
            if fs::read_link(e.path()).is_ok_and(|l| l.to_str() == Some(me.as_str())) {
                continue;
            }
            open.push(fd);
        }
        open.sort_unstable();
        let name = fs::read_to_string("/proc/self/comm").unwrap_or_default();
        if open != [0, 1, 2, kept_fd] {
            eprintln!("open in the child: {open:?} (kept {kept_fd})");
            return 3;
        }
        if name.trim() != "dipc-fd-test" {
            eprintln!("the child is named {name:?}");
            return 4;
        }
        0
    })
    .unwrap();
    let status = wait_status(pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status:#x} (3: a descriptor other than the kept one was open, \
         4: not named)"
    );
    // Nothing was closed in the parent (but what the closure owned,
    // dropped here unused).
    for fd in [dropped_fd, file_fd] {
        assert!(nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_ok());
    }
    drop((dropped, file));
}

/// Writes to a pipe when dropped: if a child's panic unwound into the
/// frames it shares with its parent, the parent's destructors would
/// run in the child.
struct Unwound(RawFd);

impl Drop for Unwound {
    fn drop(&mut self) {
        // SAFETY: writing one byte to a pipe this test made.
        unsafe { libc::write(self.0, b"u".as_ptr() as *const libc::c_void, 1) };
    }
}

#[test]
fn a_panic_in_a_forked_child_aborts_it_without_unwinding_into_the_parent() {
    const NAME: &str =
        "sys::tests::a_panic_in_a_forked_child_aborts_it_without_unwinding_into_the_parent";
    if !isolated(NAME) {
        return;
    }
    let (rd, wr) = nix::unistd::pipe().unwrap();
    let guard = Unwound(wr.as_raw_fd());
    let pid = fork_child(
        "dipc-panic-test",
        Signal::SIGTERM,
        &[wr.as_raw_fd()],
        || {
            // No core file for this deliberate abort.
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: setrlimit with a valid struct.
            unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) };
            panic!("deliberate panic in a forked child");
        },
    )
    .unwrap();
    let status = wait_status(pid);
    std::mem::forget(guard);
    drop(wr);
    let mut buf = [0u8; 8];
    let n = nix::unistd::read(rd.as_raw_fd(), &mut buf).unwrap();
    assert_eq!(n, 0, "the child ran a destructor of the parent's frames");
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGABRT,
        "child status {status:#x}, expected SIGABRT"
    );
}
