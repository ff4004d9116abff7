//! Moving frames over sockets: [`Channel`] for processes that block (the
//! employer, the worker, the library, the tools) and [`Framed`] for the
//! event loops of the long-lived daemons, which must never block.
//!
//! Both carry plain frames (on local Unix sockets, and during a
//! handshake) or, once [`Channel::secure`] / [`Framed::secure`] is called,
//! sealed records (see [`crate::secure`]); a [`Codec`] is that choice.

use crate::secure::{Secure, PREFIX_LEN};
use crate::wire::{self, Message, RawFrame, SessionKeys, WireError, HEADER_LEN};
use std::fmt;
use std::io;

/// How frames look on a connection: plain, or sealed by a secure channel.
#[derive(Debug, Default)]
pub enum Codec {
    #[default]
    Plain,
    Secure(Box<Secure>),
}

impl Codec {
    /// Bytes that tell how long the whole frame or record is.
    fn prefix_len(&self) -> usize {
        match self {
            Codec::Plain => HEADER_LEN,
            Codec::Secure(_) => PREFIX_LEN,
        }
    }

    /// The whole length of the frame or record that `head` (at least
    /// [`Codec::prefix_len`] bytes) begins, checked against `max`.
    fn whole_len(&self, head: &[u8], max: u32) -> Result<usize, WireError> {
        match self {
            Codec::Plain => {
                let h = head
                    .first_chunk::<HEADER_LEN>()
                    .ok_or(WireError::Truncated { field: "header" })?;
                Ok(HEADER_LEN + wire::parse_header(h, max)?.len as usize)
            }
            Codec::Secure(_) => {
                let p = head
                    .first_chunk::<PREFIX_LEN>()
                    .ok_or(WireError::Truncated { field: "record" })?;
                crate::secure::Secure::record_len(p, max)
            }
        }
    }

    /// Appends the one whole frame that `encode` appends, sealed if the
    /// channel is secure.
    fn encode_with(
        &mut self,
        out: &mut Vec<u8>,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), WireError> {
        match self {
            Codec::Plain => {
                encode(out);
                Ok(())
            }
            Codec::Secure(s) => s.seal_with(out, encode),
        }
    }

    /// Opens one whole frame or record (exactly `buf`), leaving the frame
    /// in `buf`.
    fn decode_raw<'a>(&mut self, buf: &'a mut [u8], max: u32) -> Result<RawFrame<'a>, WireError> {
        match self {
            Codec::Plain => {
                let buf: &'a [u8] = buf;
                match wire::split_frame(buf, max)? {
                    Some((used, f)) if used == buf.len() => Ok(f),
                    _ => Err(WireError::Truncated { field: "frame" }),
                }
            }
            Codec::Secure(s) => s.open_raw(buf, max),
        }
    }

    /// Decodes the first frame or record of `buf` if it is whole: the
    /// bytes it took, its request id and message.
    fn decode_first(
        &mut self,
        buf: &mut [u8],
        max: u32,
    ) -> Result<Option<(usize, u64, Message)>, WireError> {
        if buf.len() < self.prefix_len() {
            return Ok(None);
        }
        let whole = self.whole_len(buf, max)?;
        if buf.len() < whole {
            return Ok(None);
        }
        let f = self.decode_raw(&mut buf[..whole], max)?;
        Ok(Some((whole, f.request_id, f.decode()?)))
    }

    /// The state of a secure channel, to hand it to another process.
    pub fn keys(&self) -> Option<SessionKeys> {
        match self {
            Codec::Plain => None,
            Codec::Secure(s) => Some(s.keys()),
        }
    }
}

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

mod blocking;
mod framed;
#[cfg(test)]
mod tests;

pub use blocking::Channel;
pub use framed::{Framed, FramedParts, SERVER_PAUSE};
