//! Call endpoints of distributed processes (`dprocs`).
//!
//! A registered process listens for calls on a Unix stream socket in the
//! abstract namespace, under a name with a random part, and tells its
//! dipcd the name (`CallEndpoint`). A caller of the same host, or the
//! worker of a caller on another host, asks dipcd for it (`CallRoute`)
//! and connects. The name is not a secret (`/proc/net/unix` lists it) and
//! proves nothing: the connector checks with SO_PEERCRED that the process
//! listening there is the registered one (its pid and start time), so a
//! process that binds a name of its own, or one freed by an exited
//! process, is never taken for a callee. The callee in turn knows its
//! caller by the kernel's credentials of the connection (see
//! `libdipc::dprocs`).

use crate::procs;
use crate::sys;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};

/// The longest endpoint name (an abstract address holds 107 bytes).
pub const MAX_ENDPOINT: usize = 100;

/// New links that wait to be taken (connections not accepted yet) before
/// a connect fails with `EAGAIN` (the caller then tries again: a burst of
/// new callers drains as the process takes them).
const BACKLOG: i32 = 1024;

/// A Unix stream socket that does not block and closes on exec.
fn stream_socket() -> io::Result<OwnedFd> {
    Ok(socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?)
}

/// Listens on a new endpoint for the registration `pid_d`; returns the
/// listener (non-blocking, close-on-exec) and its name.
pub fn listen(pid_d: i64) -> io::Result<(UnixListener, Vec<u8>)> {
    let name = format!(
        "dipc-call-{pid_d}-{:016x}{:016x}",
        sys::random_u64(),
        sys::random_u64()
    )
    .into_bytes();
    let fd = stream_socket()?;
    let addr = UnixAddr::new_abstract(&name)?;
    socket::bind(fd.as_raw_fd(), &addr)?;
    socket::listen(&fd, socket::Backlog::new(BACKLOG).map_err(io::Error::from)?)?;
    Ok((UnixListener::from(fd), name))
}

/// Connects to the endpoint `name` of process `{pid, starttime}`, without
/// waiting: `EAGAIN` if it has `BACKLOG` (1024) calls waiting to be taken,
/// `ECONNREFUSED` if nobody listens, `ESRCH` if another process does.
/// The stream returned blocks.
pub fn connect(name: &[u8], pid: i32, starttime: u64) -> io::Result<UnixStream> {
    let fd = stream_socket()?;
    let addr = UnixAddr::new_abstract(name)?;
    socket::connect(fd.as_raw_fd(), &addr)?;
    // SAFETY: a socket we just made, handed over whole.
    let s = unsafe { UnixStream::from_raw_fd(fd.into_raw_fd()) };
    let cred = sys::peer_cred(&s)?;
    // The start time tells the registered process from a later one that
    // got its pid.
    if cred.pid != pid || procs::starttime(pid) != Ok(starttime) {
        log::debug!(
            "the call endpoint of pid {pid} is held by pid {}: not the process called",
            cred.pid
        );
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    s.set_nonblocking(false)?;
    Ok(s)
}

/// Accepts the next connection on an endpoint, if one waits: the stream
/// (non-blocking) with the kernel's credentials of its peer.
pub fn accept(l: &UnixListener) -> io::Result<Option<(UnixStream, sys::PeerCred)>> {
    match l.accept() {
        Ok((s, _)) => {
            s.set_nonblocking(true)?;
            let cred = sys::peer_cred(&s)?;
            Ok(Some((s, cred)))
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// Turns a descriptor received with a `CallHello` into the caller's
/// session socket: it must be a connected TCP socket.
pub fn session_socket(fd: OwnedFd) -> io::Result<std::net::TcpStream> {
    let s = std::net::TcpStream::from(fd);
    // Anything else (a file, a Unix socket) has no TCP peer.
    s.peer_addr()?;
    Ok(s)
}
