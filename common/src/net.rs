//! Sockets as the daemons use them: outgoing TCP from this host's own
//! address (so the peer's allow-list sees the address dipc.conf names),
//! with a connect time-out, no Nagle delay, and keep-alives that notice a
//! dead peer; and one stream type over TCP and Unix sockets for mio loops.

use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// Connects to a daemon's Unix socket (dipcd's) and writes `msg` as one
/// frame (request id 1), never blocking: a daemon too busy to accept (its backlog full) or a frame that does not
/// fit in the socket's buffer at once is a failure. For reports that must
/// not hold up their sender (a paused dipcd takes them when it resumes):
/// the caller reads the answer when it likes, or drops the stream.
pub fn post(path: &std::path::Path, msg: &crate::wire::Message) -> io::Result<UnixStream> {
    use nix::sys::socket::{connect, UnixAddr};
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = UnixAddr::new(path)?;
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr)?;
    let mut s = UnixStream::from(fd);
    let mut frame = Vec::new();
    crate::wire::encode_frame(1, msg, &mut frame);
    let n = s.write(&frame)?;
    if n != frame.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("{n} of the report's {} bytes written", frame.len()),
        ));
    }
    Ok(s)
}

/// Connects to `remote` from `local` (port chosen by the kernel).
///
/// With a time-out the call blocks at most that long and returns a blocking
/// stream; without one it returns at once with a non-blocking stream whose
/// connection may still be in progress (for mio: wait for writable, then
/// check `take_error`).
pub fn connect_from(
    local: IpAddr,
    remote: SocketAddr,
    timeout: Option<Duration>,
) -> io::Result<TcpStream> {
    let family = match remote {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket::socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)?;
    if local.is_ipv4() == remote.is_ipv4() && !local.is_unspecified() {
        socket::bind(
            fd.as_raw_fd(),
            &SockaddrStorage::from(SocketAddr::new(local, 0)),
        )
        .map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("cannot bind to {local}: {e}"),
            )
        })?;
    }
    match socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(remote)) {
        Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    // SAFETY: fd is an owned, valid socket descriptor.
    let stream = unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) };
    let Some(timeout) = timeout else {
        return Ok(stream);
    };
    let mut fds = [nix::poll::PollFd::new(
        stream.as_fd(),
        nix::poll::PollFlags::POLLOUT,
    )];
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    loop {
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "connecting to {remote} timed out after {} ms",
                        timeout.as_millis()
                    ),
                ))
            }
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// Sets the options every daemon-to-daemon TCP connection carries: no Nagle
/// delay (requests are small and latency-bound) and keep-alive probes so
/// that a peer host that vanished without closing is noticed within about
/// `dead_after`.
pub fn tune_tcp<F: AsFd>(sock: &F, dead_after: Duration) -> io::Result<()> {
    socket::setsockopt(sock, sockopt::TcpNoDelay, &true).map_err(io::Error::from)?;
    socket::setsockopt(sock, sockopt::KeepAlive, &true).map_err(io::Error::from)?;
    let secs = dead_after.as_secs().clamp(1, 3600) as u32;
    socket::setsockopt(sock, sockopt::TcpKeepIdle, &secs).map_err(io::Error::from)?;
    socket::setsockopt(sock, sockopt::TcpKeepInterval, &1).map_err(io::Error::from)?;
    socket::setsockopt(sock, sockopt::TcpKeepCount, &3).map_err(io::Error::from)?;
    // Unacknowledged data also gives up after the same time.
    let ms = dead_after.as_millis().clamp(1000, u32::MAX as u128) as u32;
    socket::setsockopt(sock, sockopt::TcpUserTimeout, &ms).map_err(io::Error::from)?;
    Ok(())
}

/// A connected stream that is TCP (to or from another host) or a Unix
/// socket (this host's processes and daemons), wherever either may come:
/// one type with the two flavours of socket as parameters, mio's for the
/// event loops ([`Stream`]) and std's for code that blocks
/// ([`BlockingStream`]).
pub enum AnyStream<T, U> {
    Tcp(T),
    Unix(U),
}

/// A stream in a mio loop: TCP from another host or Unix from a local
/// process.
pub type Stream = AnyStream<mio::net::TcpStream, mio::net::UnixStream>;

/// A blocking stream: the library's connection to a segment's manager, a
/// Unix socket on the owner host or a TCP session elsewhere.
pub type BlockingStream = AnyStream<TcpStream, UnixStream>;

impl<T: Read, U: Read> Read for AnyStream<T, U> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            AnyStream::Tcp(s) => s.read(buf),
            AnyStream::Unix(s) => s.read(buf),
        }
    }
}

impl<T: Write, U: Write> Write for AnyStream<T, U> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            AnyStream::Tcp(s) => s.write(buf),
            AnyStream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            AnyStream::Tcp(s) => s.flush(),
            AnyStream::Unix(s) => s.flush(),
        }
    }
}

impl<T: AsRawFd, U: AsRawFd> AsRawFd for AnyStream<T, U> {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            AnyStream::Tcp(s) => s.as_raw_fd(),
            AnyStream::Unix(s) => s.as_raw_fd(),
        }
    }
}

impl mio::event::Source for Stream {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        match self {
            AnyStream::Tcp(s) => s.register(registry, token, interests),
            AnyStream::Unix(s) => s.register(registry, token, interests),
        }
    }
    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        match self {
            AnyStream::Tcp(s) => s.reregister(registry, token, interests),
            AnyStream::Unix(s) => s.reregister(registry, token, interests),
        }
    }
    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        match self {
            AnyStream::Tcp(s) => s.deregister(registry),
            AnyStream::Unix(s) => s.deregister(registry),
        }
    }
}

impl BlockingStream {
    /// Bounds every read and write on the stream, so a silent or stuck
    /// peer cannot hold its user.
    pub fn set_timeouts(&self, t: Duration) -> io::Result<()> {
        match self {
            AnyStream::Tcp(s) => {
                s.set_read_timeout(Some(t))?;
                s.set_write_timeout(Some(t))
            }
            AnyStream::Unix(s) => {
                s.set_read_timeout(Some(t))?;
                s.set_write_timeout(Some(t))
            }
        }
    }
}

/// What a one-byte peek that never sleeps finds on a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peek {
    /// Nothing to read yet.
    Empty,
    /// Bytes are waiting.
    Data,
    /// The peer closed its end.
    Closed,
    /// The socket has an error pending (the next read reports it).
    Failed,
}

/// Looks at `sock` without reading from it or sleeping.
pub fn peek<S: AsFd>(sock: &S) -> Peek {
    let mut b = [0u8; 1];
    // SAFETY: a one-byte peek into a valid buffer on a valid descriptor.
    let n = unsafe {
        libc::recv(
            sock.as_fd().as_raw_fd(),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => Peek::Closed,
        n if n > 0 => Peek::Data,
        _ => match io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Peek::Empty,
            _ => Peek::Failed,
        },
    }
}

/// Checks `sock` again and again, without sleeping, until there is
/// something to read (data, the end of the stream or an error) or `limit`
/// has passed; returns whether there is. A reply expected within a few
/// tens of microseconds then costs no wake-up from sleep, which on an
/// idle CPU (and even more on a virtual one) costs as much again.
pub fn spin_readable<S: AsFd>(sock: &S, limit: Duration) -> bool {
    if limit.is_zero() {
        return false;
    }
    let end = std::time::Instant::now() + limit;
    loop {
        if peek(sock) != Peek::Empty {
            return true;
        }
        if std::time::Instant::now() >= end {
            return false;
        }
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn connect_from_binds_the_source_address() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let remote = l.local_addr().unwrap();
        let s = connect_from(
            "127.0.0.3".parse().unwrap(),
            remote,
            Some(Duration::from_secs(2)),
        )
        .unwrap();
        tune_tcp(&s, Duration::from_secs(2)).unwrap();
        let (_, peer) = l.accept().unwrap();
        assert_eq!(peer.ip().to_string(), "127.0.0.3");
    }

    #[test]
    fn connect_refused_is_an_error() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let remote = l.local_addr().unwrap();
        drop(l);
        assert!(connect_from(
            "127.0.0.1".parse().unwrap(),
            remote,
            Some(Duration::from_secs(2))
        )
        .is_err());
    }

    #[test]
    fn peek_and_spin_see_data_and_close_without_consuming() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        assert_eq!(peek(&b), Peek::Empty);
        let t = std::time::Instant::now();
        assert!(!spin_readable(&b, Duration::from_millis(5)));
        assert!(t.elapsed() >= Duration::from_millis(5));
        assert!(!spin_readable(&b, Duration::ZERO));
        a.write_all(b"x").unwrap();
        assert!(spin_readable(&b, Duration::from_secs(5)));
        assert_eq!(peek(&b), Peek::Data);
        let mut got = [0u8; 1];
        (&b).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"x");
        drop(a);
        assert!(spin_readable(&b, Duration::from_secs(5)));
        assert_eq!(peek(&b), Peek::Closed);
    }
}
