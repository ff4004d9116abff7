//! Moving frames over sockets: [`Channel`] for processes that block (the
//! employer, the worker, the library, the tools) and [`Framed`] for the
//! event loops of the long-lived daemons, which must never block.

use crate::wire::{self, Message, WireError, HEADER_LEN};
use std::fmt;
use std::io::{self, Read, Write};

/// Why a frame could not be received or sent.
#[derive(Debug)]
pub enum ChannelError {
    /// The peer closed the connection.
    Closed,
    /// No answer within the time-out set on the socket.
    TimedOut,
    Io(io::Error),
    /// The peer sent bytes that are not a valid frame.
    Wire(WireError),
    /// A signal interrupted the wait before any byte of the reply came
    /// (only from [`Channel::recv_interruptible`]).
    Interrupted,
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelError::Closed => f.write_str("connection closed by peer"),
            ChannelError::TimedOut => f.write_str("timed out waiting for the peer"),
            ChannelError::Io(e) => write!(f, "{e}"),
            ChannelError::Wire(e) => write!(f, "protocol error: {e}"),
            ChannelError::Interrupted => f.write_str("interrupted by a signal"),
        }
    }
}

impl std::error::Error for ChannelError {}

impl From<io::Error> for ChannelError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ChannelError::TimedOut,
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe => ChannelError::Closed,
            _ => ChannelError::Io(e),
        }
    }
}

impl From<WireError> for ChannelError {
    fn from(e: WireError) -> Self {
        ChannelError::Wire(e)
    }
}

impl ChannelError {
    /// The `errno` an application sees when its request failed this way.
    pub fn errno(&self) -> i32 {
        match self {
            ChannelError::Closed => libc::ECONNRESET,
            ChannelError::TimedOut => libc::ETIMEDOUT,
            ChannelError::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
            ChannelError::Wire(_) => libc::EPROTO,
            ChannelError::Interrupted => libc::EINTR,
        }
    }
}

/// A blocking, framed connection. Time-outs are those set on the socket
/// (`set_read_timeout`), so a dead peer gives [`ChannelError::TimedOut`].
pub struct Channel<S> {
    stream: S,
    max_frame: u32,
    out: Vec<u8>,
}

impl<S: Read + Write> Channel<S> {
    pub fn new(stream: S, max_frame: u32) -> Self {
        Channel {
            stream,
            max_frame,
            out: Vec::new(),
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    pub fn into_inner(self) -> S {
        self.stream
    }

    pub fn send(&mut self, request_id: u64, msg: &Message) -> Result<(), ChannelError> {
        self.out.clear();
        wire::encode_frame(request_id, msg, &mut self.out);
        self.stream.write_all(&self.out)?;
        Ok(())
    }

    pub fn recv(&mut self) -> Result<(u64, Message), ChannelError> {
        self.recv_inner(false)
    }

    /// Like [`Channel::recv`], but a signal that arrives before any byte of
    /// the frame returns [`ChannelError::Interrupted`] (the socket must have
    /// a read time-out for the kernel to report it, see signal(7)). Once a
    /// frame has begun it is read whole, so the stream never loses sync.
    pub fn recv_interruptible(&mut self) -> Result<(u64, Message), ChannelError> {
        self.recv_inner(true)
    }

    fn recv_inner(&mut self, interruptible: bool) -> Result<(u64, Message), ChannelError> {
        let mut head = [0u8; HEADER_LEN];
        if interruptible {
            match self.stream.read(&mut head[..1]) {
                Ok(0) => return Err(ChannelError::Closed),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    return Err(ChannelError::Interrupted)
                }
                Err(e) => return Err(e.into()),
            }
            self.read_full(&mut head[1..], false)?;
        } else {
            self.read_full(&mut head, true)?;
        }
        let h = wire::parse_header(&head, self.max_frame)?;
        // The length was bounded by parse_header, so this allocation is too.
        let mut payload = vec![0u8; h.len as usize];
        self.read_full(&mut payload, false)?;
        Ok((h.request_id, Message::decode(h.kind, &payload)?))
    }

    /// Sends a request and waits for the reply carrying the same id.
    pub fn call(&mut self, request_id: u64, msg: &Message) -> Result<Message, ChannelError> {
        self.send(request_id, msg)?;
        loop {
            let (id, reply) = self.recv()?;
            if id == request_id {
                return Ok(reply);
            }
            log::debug!("dropping stale reply {id} while waiting for {request_id}");
        }
    }

    fn read_full(&mut self, buf: &mut [u8], at_boundary: bool) -> Result<(), ChannelError> {
        let mut got = 0;
        while got < buf.len() {
            match self.stream.read(&mut buf[got..]) {
                Ok(0) if got == 0 && at_boundary => return Err(ChannelError::Closed),
                Ok(0) => {
                    return Err(ChannelError::Wire(WireError::Truncated {
                        field: "frame (connection closed mid-frame)",
                    }))
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// A non-blocking framed connection for a mio event loop: bytes are read
/// into a buffer as they come and frames are taken out whole; replies are
/// queued and written as the socket accepts them.
pub struct Framed<S> {
    pub stream: S,
    max_frame: u32,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
}

/// What [`Framed::fill`] saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Fill {
    Open,
    /// The peer closed its side.
    Eof,
}

impl<S: Read + Write> Framed<S> {
    pub fn new(stream: S, max_frame: u32) -> Self {
        Framed {
            stream,
            max_frame,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
        }
    }

    /// Reads what the socket has. Stops reading once a whole maximal frame
    /// is buffered, so a peer cannot make us buffer without bound.
    pub fn fill(&mut self) -> io::Result<Fill> {
        let limit = HEADER_LEN + self.max_frame as usize;
        let mut chunk = [0u8; 16 * 1024];
        while self.rbuf.len() < limit {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(Fill::Eof),
                Ok(n) => self.rbuf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(Fill::Open)
    }

    /// Takes the next whole frame out of the read buffer.
    pub fn next_frame(&mut self) -> Result<Option<(u64, Message)>, WireError> {
        match wire::decode_frame(&self.rbuf, self.max_frame)? {
            None => Ok(None),
            Some((used, id, msg)) => {
                self.rbuf.drain(..used);
                Ok(Some((id, msg)))
            }
        }
    }

    pub fn queue(&mut self, request_id: u64, msg: &Message) {
        wire::encode_frame(request_id, msg, &mut self.wbuf);
    }

    /// Writes queued bytes; returns true once everything is written.
    pub fn flush(&mut self) -> io::Result<bool> {
        while !self.wbuf.is_empty() {
            match self.stream.write(&self.wbuf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.wbuf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    pub fn has_pending_writes(&self) -> bool {
        !self.wbuf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn channel_round_trip_and_errors() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut ca = Channel::new(a, 4096);
        let mut cb = Channel::new(b, 4096);
        ca.send(9, &Message::Ping).unwrap();
        assert_eq!(cb.recv().unwrap(), (9, Message::Ping));
        // Garbage is a protocol error, not a panic.
        cb.get_mut().write_all(&[0u8; HEADER_LEN]).unwrap();
        assert!(matches!(ca.recv(), Err(ChannelError::Wire(_))));
        drop(cb);
        assert!(matches!(ca.recv(), Err(ChannelError::Closed)));
    }

    #[test]
    fn channel_times_out() {
        let (a, _b) = UnixStream::pair().unwrap();
        a.set_read_timeout(Some(std::time::Duration::from_millis(20)))
            .unwrap();
        let mut ca = Channel::new(a, 4096);
        assert!(matches!(ca.recv(), Err(ChannelError::TimedOut)));
    }

    #[test]
    fn framed_reassembles_split_frames() {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut f = Framed::new(a, 4096);
        let mut bytes = Vec::new();
        wire::encode_frame(1, &Message::Heartbeat, &mut bytes);
        wire::encode_frame(2, &Message::error(5, "x"), &mut bytes);
        b.write_all(&bytes[..7]).unwrap();
        assert_eq!(f.fill().unwrap(), Fill::Open);
        assert_eq!(f.next_frame().unwrap(), None);
        b.write_all(&bytes[7..]).unwrap();
        f.fill().unwrap();
        assert_eq!(f.next_frame().unwrap(), Some((1, Message::Heartbeat)));
        assert_eq!(f.next_frame().unwrap(), Some((2, Message::error(5, "x"))));
        assert_eq!(f.next_frame().unwrap(), None);
        f.queue(3, &Message::Pong);
        assert!(f.flush().unwrap());
        let mut cb = Channel::new(b, 4096);
        assert_eq!(cb.recv().unwrap(), (3, Message::Pong));
        drop(cb);
        assert_eq!(f.fill().unwrap(), Fill::Eof);
    }
}
