//! Process plumbing shared by the daemons: forking children that die with
//! their parent, signals as file descriptors for mio loops, Unix sockets
//! with peer credentials, and the runtime directory lock.
//!
//! The daemons that fork are single-threaded: `fork` in a process that has
//! started threads may leave locks held forever in the child.

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::{ForkResult, Pid};
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::Path;

/// The signals a daemon's event loop takes through a signalfd.
pub fn daemon_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGCHLD);
    set.add(Signal::SIGHUP);
    set
}

/// Blocks the daemon signals and returns a non-blocking signalfd for them,
/// to be registered with mio. Children forked afterwards inherit the mask;
/// [`fork_child`] restores it.
pub fn signal_fd() -> io::Result<SignalFd> {
    let set = daemon_signals();
    set.thread_block().map_err(io::Error::from)?;
    SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(io::Error::from)
}

/// Drains a signalfd, returning the signals read.
pub fn read_signals(fd: &mut SignalFd) -> Vec<Signal> {
    let mut out = Vec::new();
    while let Ok(Some(info)) = fd.read_signal() {
        if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
            out.push(sig);
        }
    }
    out
}

/// Asks the kernel to send `sig` to this process when its parent dies, so
/// no part of the suite outlives the process that supervises it.
pub fn die_with_parent(sig: Signal) -> io::Result<()> {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number.
    let r = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Forks a child that runs `body` and exits with its return value.
///
/// The child is one of the roles of the suite (front_end, referee, worker,
/// employer, shm manager), named `name` for `ps` (the kernel's `comm`, at
/// most 15 bytes). In it:
///
/// - every descriptor but stdin, stdout, stderr and those in `keep` is
///   closed before `body` runs. The daemons never `exec` their children
///   (a `fork` costs a fraction of an `exec` of the whole binary and the
///   child needs the parent's parsed configuration and secret), so without
///   this a child would inherit whatever its parent had open: a worker,
///   which runs as a remote user, would hold dipcd's `dipcd.sock`
///   listener, the front_end's TCP listener, their epoll and signal
///   descriptors and the runtime lock; a shm manager or an employer every
///   local client's socket and the link to the referee. `close_range`
///   (Linux 5.9; `/proc/self/fd` before it) closes them all at once,
///   whatever the parent opened, so a descriptor added to a daemon later
///   cannot leak by being forgotten here. The parent's objects that owned
///   them stay in the child's copy of memory, never used or dropped: the
///   child only runs `body` and leaves with `_exit`. So `body` must own
///   (and drop) no descriptor outside `keep`: that number may be another
///   file's by then. A child that cannot close them exits at once
///   (status 1) rather than run with them.
/// - the daemon signal mask is lifted (so a plain SIGTERM ends it) and
///   `death_signal` is delivered if the parent dies.
/// - a panic in `body` aborts the child (SIGABRT) at once: it never
///   unwinds into the frames of the parent's copied stack, whose
///   destructors would act on the parent's behalf (remove its sockets,
///   stop its children, write its buffers). dipcd also aborts on any
///   panic before unwinding begins ([`abort_on_panic`]); this catch keeps
///   the promise for any other process that forks a role.
/// - the process exits with `_exit`, so that nothing of the parent's state
///   (buffered logs, atexit handlers, destructors) runs twice.
///
/// Call only from a single-threaded process.
pub fn fork_child<F: FnOnce() -> i32>(
    name: &str,
    death_signal: Signal,
    keep: &[RawFd],
    body: F,
) -> io::Result<Pid> {
    let parent = nix::unistd::getpid();
    // SAFETY: the dipc daemons that fork are single-threaded.
    match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => {
            let code = match close_all_but(keep) {
                Err(e) => {
                    log::error!("{name}: cannot close the descriptors it inherited: {e}");
                    1
                }
                Ok(()) => {
                    set_name(name);
                    let _ = daemon_signals().thread_unblock();
                    let _ = die_with_parent(death_signal);
                    // The parent may have died between fork and prctl.
                    if nix::unistd::getppid() != parent {
                        1
                    } else {
                        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
                            Ok(code) => code,
                            // The panic was reported by the hook already.
                            Err(_) => std::process::abort(),
                        }
                    }
                }
            };
            // SAFETY: _exit ends the process without running the parent's
            // atexit handlers or destructors.
            unsafe { libc::_exit(code) }
        }
    }
}

/// Closes every descriptor of this process from 3 up, except `keep`.
fn close_all_but(keep: &[RawFd]) -> io::Result<()> {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter_map(|&fd| u32::try_from(fd).ok())
        .filter(|&fd| fd > 2)
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut from = 3u32;
    for k in keep {
        if k > from {
            close_range(from, k - 1)?;
        }
        from = k + 1;
    }
    close_range(from, u32::MAX)
}

/// Closes the descriptors `first..=last` that are open.
fn close_range(first: u32, last: u32) -> io::Result<()> {
    // SAFETY: close_range takes two descriptor numbers and flags; it only
    // closes descriptors, which the caller gave up.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::ENOSYS) {
        return Err(e);
    }
    // Before Linux 5.9: the open ones, as /proc lists them (read whole
    // first: the listing's own descriptor is among them).
    let open: Vec<u32> = fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in open.into_iter().filter(|fd| (first..=last).contains(fd)) {
        // SAFETY: as above; EBADF (the listing's own, now closed) is fine.
        unsafe { libc::close(fd as RawFd) };
    }
    Ok(())
}

/// Names this process (its `comm`, as `ps` and /proc show it).
fn set_name(name: &str) {
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr() as libc::c_ulong, 0, 0, 0) };
}

/// Makes any panic in this process abort it (SIGABRT) right after the
/// panic is reported, before anything unwinds: what `panic = "abort"`
/// does, for one program. dipcd calls it first thing; every role runs in a
/// fork of it, so none ever unwinds. A profile setting cannot do this: Cargo
/// takes `panic` only for a whole profile, where it would also hold for
/// the tools and for libdipc, which lives in applications' processes and
/// must not decide how they end, and the test harness needs unwinding.
pub fn abort_on_panic() {
    std::panic::set_hook(Box::new(|info| {
        // Through the log, like every other message of the daemons; with a
        // backtrace when RUST_BACKTRACE asks for one.
        let trace = std::backtrace::Backtrace::capture();
        if trace.status() == std::backtrace::BacktraceStatus::Captured {
            log::error!("{info}\n{trace}");
        } else {
            log::error!("{info}");
        }
        std::process::abort();
    }));
}

/// Restores default handling of the daemon signals, for a process that is
/// about to block in ordinary calls.
pub fn unblock_daemon_signals() {
    let _ =
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&daemon_signals()), None);
}

/// Credentials of the process at the other end of a Unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

pub fn peer_cred<F: AsFd>(sock: &F) -> io::Result<PeerCred> {
    let c = nix::sys::socket::getsockopt(sock, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(io::Error::from)?;
    Ok(PeerCred {
        pid: c.pid(),
        uid: c.uid(),
        gid: c.gid(),
    })
}

/// The most supplementary groups a Linux process can have
/// (`NGROUPS_MAX`): the bound on what [`peer_groups`] allocates.
const NGROUPS_MAX: usize = 65536;

/// The supplementary groups of the process at the other end of a Unix
/// socket, as the kernel recorded them when it connected
/// (`SO_PEERGROUPS`), like SO_PEERCRED's uid and gid. Not read from
/// `/proc/PID/status` later: by then the pid may name another process,
/// or the process may have changed its groups since it connected.
pub fn peer_groups<F: AsFd>(sock: &F) -> io::Result<Vec<u32>> {
    // Most processes have few groups; the kernel says how many there are
    // when the buffer is too small (ERANGE), and there are at most
    // NGROUPS_MAX.
    let mut want = 64usize;
    loop {
        let mut buf = vec![0u32; want];
        let mut len = (want * std::mem::size_of::<u32>()) as libc::socklen_t;
        // SAFETY: buf has room for `len` bytes, and the kernel writes at
        // most that many and the size it used into `len`.
        let r = unsafe {
            libc::getsockopt(
                sock.as_fd().as_raw_fd(),
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                buf.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<u32>();
        if r == 0 {
            buf.truncate(n.min(want));
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ERANGE) && n > want && n <= NGROUPS_MAX {
            want = n;
            continue;
        }
        return Err(e);
    }
}

/// `SO_PEERGROUPS` (Linux 4.13; the kernel's `asm/socket.h`, which the
/// libc crate does not export for every target): 59, but on SPARC.
#[cfg(not(target_arch = "sparc64"))]
const SO_PEERGROUPS: libc::c_int = 59;
#[cfg(target_arch = "sparc64")]
const SO_PEERGROUPS: libc::c_int = 0x003d;

/// Whether a peer may use an administrative socket: root, or a member of
/// the configured admin group (by primary group, as SO_PEERCRED reports).
pub fn is_admin(cred: &PeerCred, admin_gid: Option<u32>) -> bool {
    cred.uid == 0 || admin_gid == Some(cred.gid)
}

/// Looks a group name up to its gid.
/// 64 random bits (getrandom); where the kernel gives none, the clock
/// mixed with the pid, which still differs between two calls of two
/// processes of a host.
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == b.len() as isize {
        return u64::from_ne_bytes(b);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ u64::from(std::process::id()).rotate_left(40)
}

pub fn group_gid(name: &str) -> io::Result<u32> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no group named {name:?}"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Binds a Unix listener at `path`, replacing a stale socket file left by a
/// killed daemon (the runtime lock guarantees no live daemon owns it), and
/// sets its mode.
pub fn bind_unix(path: &Path, mode: u32, gid: Option<u32>) -> io::Result<StdUnixListener> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let l = StdUnixListener::bind(path)?;
    if let Some(gid) = gid {
        nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)))
            .map_err(io::Error::from)?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Takes an exclusive lock on `dir/dipcd.lock`, creating the directory, so
/// that two dipcd never share a runtime directory. The lock lasts as long as
/// the returned file is open here or in a child that keeps it (dipcd's
/// front_end and referee do: the directory stays locked until the host's
/// long-lived daemons are all gone).
pub fn lock_runtime_dir(dir: &Path) -> io::Result<fs::File> {
    fs::create_dir_all(dir)?;
    let path = dir.join("dipcd.lock");
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    // SAFETY: flock on a valid descriptor.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "another dipcd is running with runtime directory {}",
                    dir.display()
                ),
            ));
        }
        return Err(e);
    }
    Ok(f)
}

/// Passes `fd` over a Unix stream socket (SCM_RIGHTS), with one byte of
/// data for the ancillary message to ride on.
pub fn send_fd<S: AsFd, F: AsFd>(sock: &S, fd: &F) -> io::Result<()> {
    send_with_fd(sock, b"F", fd)
}

/// Sends `data` with `fd` attached to it (SCM_RIGHTS), in one `sendmsg`.
pub fn send_with_fd<S: AsFd, F: AsFd>(sock: &S, data: &[u8], fd: &F) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let fds = [fd.as_fd().as_raw_fd()];
    let iov = [io::IoSlice::new(data)];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let n = sendmsg::<()>(
        sock.as_fd().as_raw_fd(),
        &iov,
        &cmsg,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    if n != data.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short sendmsg with a descriptor",
        ));
    }
    Ok(())
}

/// Reads what `sock` has into `buf`, with any descriptors that came with
/// it (close-on-exec, so a program that execs does not keep them open).
/// Returns the byte count (0: the peer closed) and the descriptors.
pub fn recv_with_fds<S: AsFd>(
    sock: &S,
    buf: &mut [u8],
) -> io::Result<(usize, Vec<std::os::fd::OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::FromRawFd;
    let mut iov = [io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    // A signal that interrupts the wait is the caller's business, not a
    // failure of the transfer (a socket with a read time-out reports EINTR
    // even for a handler installed with SA_RESTART): wait again.
    let msg = loop {
        match recvmsg::<()>(
            sock.as_fd().as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => break r?,
        }
    };
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            for fd in raw {
                // SAFETY: the kernel just installed this descriptor in our
                // table; nothing else owns it.
                fds.push(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Ok((msg.bytes, fds))
}

/// Receives one descriptor sent by [`send_fd`].
pub fn recv_fd<S: AsFd>(sock: &S) -> io::Result<std::os::fd::OwnedFd> {
    let mut byte = [0u8; 1];
    let (n, fds) = recv_with_fds(sock, &mut byte)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the daemon closed the connection before passing a socket",
        ));
    }
    fds.into_iter().next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "the daemon's reply carried no socket",
        )
    })
}

/// Signals held back (blocked) for a short step of a call that, seen
/// from the application, is already waiting (opening a session for it,
/// sending it, checking for its reply without sleeping): a signal handled
/// during such a step interrupts no system call, and would be lost to a
/// call that then sleeps. [`HeldSignals::wait_readable`] lets them in
/// only while the call sleeps; dropping it lets them in for good.
pub struct HeldSignals {
    /// The thread's mask before, restored on release (or drop).
    old: Option<libc::sigset_t>,
}

impl HeldSignals {
    /// Blocks every signal that can be blocked, in this thread.
    pub fn hold() -> HeldSignals {
        // SAFETY: sigset_t is plain data, initialised by sigfillset and
        // sigemptyset before use; pthread_sigmask only reads `all` and
        // writes `old`.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::sigemptyset(&mut old);
            if libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old) != 0 {
                // Cannot fail with valid arguments; hold nothing then.
                return HeldSignals { old: None };
            }
            HeldSignals { old: Some(old) }
        }
    }

    /// Waits until `fd` is readable or `timeout` passes, with the thread's
    /// mask from before [`HeldSignals::hold`] in force only during the
    /// wait (`ppoll` sets it atomically): a signal that came while held, or
    /// comes during the wait, and that the process handles ends the wait
    /// with `EINTR` once its handler ran. One that came just before the
    /// wait cannot be handled outside it and leave the wait asleep.
    /// Returns whether `fd` is readable (false: the time passed).
    pub fn wait_readable(&self, fd: RawFd, timeout: std::time::Duration) -> io::Result<bool> {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
        };
        let mask = self
            .old
            .as_ref()
            .map_or(std::ptr::null(), |m| m as *const libc::sigset_t);
        // SAFETY: one valid pollfd, a valid timespec, and a null or valid
        // sigset_t, all living across the call.
        let n = unsafe { libc::ppoll(&mut p, 1, &ts, mask) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n > 0)
    }
}

impl Drop for HeldSignals {
    fn drop(&mut self) {
        if let Some(old) = self.old.take() {
            // SAFETY: restores the mask `hold` saved.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
        }
    }
}

/// Tells the service manager how the daemon is doing (`sd_notify(3)`'s
/// protocol: a datagram of `KEY=VALUE` lines to `$NOTIFY_SOCKET`, a path,
/// or an abstract name after `@`). Nothing to do, and `Ok`, when no
/// manager asked (the variable is unset).
pub fn notify_service_manager(state: &str) -> io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let bytes = path.as_encoded_bytes();
    let addr = match bytes.split_first() {
        Some((b'@', name)) => SocketAddr::from_abstract_name(name)?,
        Some((b'/', _)) => SocketAddr::from_pathname(Path::new(&path))?,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("NOTIFY_SOCKET={path:?} is neither a path nor @name"),
            ))
        }
    };
    let sock = UnixDatagram::unbound()?;
    sock.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
