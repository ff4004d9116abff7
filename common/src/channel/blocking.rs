//! [`Channel`]: a blocking, framed connection, for the processes that
//! may block (the employer, the worker, the library, the tools).

use super::{ChannelError, Codec};
use crate::secure::Secure;
use crate::wire::{self, Message, RawFrame, WireError, HEADER_LEN};
use std::io::{self, Read, Write};

/// A blocking, framed connection. Time-outs are those set on the socket
/// (`set_read_timeout`), so a dead peer gives [`ChannelError::TimedOut`].
///
/// A channel made with [`Channel::new`] reads exactly one frame at a time
/// and never takes a byte past it, so the socket can be handed to another
/// process (or carry a descriptor next, see `sys::recv_fd`) between
/// frames. One made with [`Channel::read_ahead`] reads what the socket has
/// into a buffer (one system call per frame instead of two); it suits a
/// socket its owner keeps, and [`Channel::buffered`] tells whether bytes
/// of a later frame are waiting in it.
pub struct Channel<S> {
    stream: S,
    max_frame: u32,
    codec: Codec,
    out: Vec<u8>,
    /// An exact channel's frame being read, kept between frames so that a
    /// run of large frames reuses one buffer.
    inbuf: Vec<u8>,
    /// Read-ahead buffer (empty for an exact channel); `rbuf[start..end]`
    /// holds bytes received and not yet taken as frames.
    rbuf: Vec<u8>,
    start: usize,
    end: usize,
}

/// The read-ahead buffer's usual size; it grows to hold a longer frame.
const READ_AHEAD: usize = 16 * 1024;

impl<S: Read + Write> Channel<S> {
    pub fn new(stream: S, max_frame: u32) -> Self {
        Channel {
            stream,
            max_frame,
            codec: Codec::Plain,
            out: Vec::new(),
            inbuf: Vec::new(),
            rbuf: Vec::new(),
            start: 0,
            end: 0,
        }
    }

    /// A channel that reads ahead (see the type's documentation).
    pub fn read_ahead(stream: S, max_frame: u32) -> Self {
        Channel {
            rbuf: vec![0; READ_AHEAD],
            ..Channel::new(stream, max_frame)
        }
    }

    /// A read-ahead channel that carries on a connection whose first
    /// bytes `unread` were already received (see [`Framed::into_parts`](super::Framed::into_parts)).
    pub fn read_ahead_with(stream: S, max_frame: u32, unread: &[u8]) -> Self {
        let mut rbuf = vec![0; READ_AHEAD.max(unread.len())];
        rbuf[..unread.len()].copy_from_slice(unread);
        Channel {
            rbuf,
            end: unread.len(),
            ..Channel::new(stream, max_frame)
        }
    }

    /// Bytes received beyond the frames taken so far (always 0 for an
    /// exact channel).
    pub fn buffered(&self) -> usize {
        self.end - self.start
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

    /// The socket and the channel's codec, to carry on with both
    /// elsewhere (see [`Channel::with_codec`]).
    pub fn into_parts(self) -> (S, Codec) {
        (self.stream, self.codec)
    }

    /// From here on every frame, both ways, is sealed by `secure`.
    pub fn secure(&mut self, secure: Secure) {
        self.codec = Codec::Secure(Box::new(secure));
    }

    /// Sets how frames look from here on.
    pub fn with_codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    pub fn send(&mut self, request_id: u64, msg: &Message) -> Result<(), ChannelError> {
        self.send_encoded(|out| wire::encode_frame(request_id, msg, out))
    }

    /// Sends the one whole frame that `encode` appends (for a frame
    /// encoded from borrowed data, see `wire::encode_shm_data`).
    pub fn send_encoded(&mut self, encode: impl FnOnce(&mut Vec<u8>)) -> Result<(), ChannelError> {
        self.out.clear();
        self.codec.encode_with(&mut self.out, encode)?;
        self.stream.write_all(&self.out)?;
        Ok(())
    }

    pub fn recv(&mut self) -> Result<(u64, Message), ChannelError> {
        let f = self.recv_raw_inner(false)?;
        Ok((f.request_id, f.decode()?))
    }

    /// Like [`Channel::recv`], but leaves the frame in the channel's
    /// buffer until the next call: a large payload (a segment's content)
    /// goes from there to where it belongs with one copy.
    pub fn recv_raw(&mut self) -> Result<RawFrame<'_>, ChannelError> {
        self.recv_raw_inner(false)
    }

    /// Like [`Channel::recv`], but a signal that arrives before any byte of
    /// the frame returns [`ChannelError::Interrupted`] (the socket must have
    /// a read time-out for the kernel to report it, see signal(7)). Once a
    /// frame has begun it is read whole, so the stream never loses sync.
    pub fn recv_interruptible(&mut self) -> Result<(u64, Message), ChannelError> {
        let f = self.recv_raw_inner(true)?;
        Ok((f.request_id, f.decode()?))
    }

    fn recv_raw_inner(&mut self, interruptible: bool) -> Result<RawFrame<'_>, ChannelError> {
        if !self.rbuf.is_empty() {
            return self.recv_ahead(interruptible);
        }
        let mut buf = [0u8; HEADER_LEN];
        let head = &mut buf[..self.codec.prefix_len()];
        if interruptible {
            // A read that fails with EINTR has taken nothing, so the first
            // read may ask for the whole header: one system call in the
            // usual case, and still no lost sync after an interruption.
            let got = match self.stream.read(head) {
                Ok(0) => return Err(ChannelError::Closed),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    return Err(ChannelError::Interrupted)
                }
                Err(e) => return Err(e.into()),
            };
            Self::read_full(&mut self.stream, &mut head[got..], false)?;
        } else {
            Self::read_full(&mut self.stream, head, true)?;
        }
        // The length is bounded by whole_len, so this allocation is too.
        let whole = self.codec.whole_len(head, self.max_frame)?;
        let frame = &mut self.inbuf;
        frame.clear();
        frame.extend_from_slice(head);
        // read_to_end fills the spare capacity without zeroing it first,
        // and retries after EINTR as read_full does.
        let want = (whole - head.len()) as u64;
        match (&mut self.stream).take(want).read_to_end(frame) {
            Ok(_) if frame.len() == whole => {}
            Ok(_) => {
                return Err(ChannelError::Wire(WireError::Truncated {
                    field: "frame (connection closed mid-frame)",
                }))
            }
            Err(e) => return Err(e.into()),
        }
        Ok(self.codec.decode_raw(frame, self.max_frame)?)
    }

    fn recv_ahead(&mut self, interruptible: bool) -> Result<RawFrame<'_>, ChannelError> {
        loop {
            // whole_len checks the header's length against max_frame
            // before anything waits for the payload, so the buffer below
            // never grows past one maximal frame.
            let avail = self.end - self.start;
            if avail >= self.codec.prefix_len() {
                let whole = self
                    .codec
                    .whole_len(&self.rbuf[self.start..self.end], self.max_frame)?;
                if avail >= whole {
                    let at = self.start;
                    self.start += whole;
                    if self.start == self.end {
                        // The frame's bytes stay where they are until the
                        // next read.
                        self.start = 0;
                        self.end = 0;
                    }
                    return Ok(self
                        .codec
                        .decode_raw(&mut self.rbuf[at..at + whole], self.max_frame)?);
                }
            }
            let begun = self.start < self.end;
            if self.start > 0 {
                self.rbuf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end >= self.codec.prefix_len() {
                let whole = self
                    .codec
                    .whole_len(&self.rbuf[..self.end], self.max_frame)?;
                if whole > self.rbuf.len() {
                    self.rbuf.resize(whole, 0);
                }
            }
            match self.stream.read(&mut self.rbuf[self.end..]) {
                Ok(0) if !begun => return Err(ChannelError::Closed),
                Ok(0) => {
                    return Err(ChannelError::Wire(WireError::Truncated {
                        field: "frame (connection closed mid-frame)",
                    }))
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if interruptible && !begun {
                        return Err(ChannelError::Interrupted);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sends a request and waits for the reply carrying the same id.
    pub fn call(&mut self, request_id: u64, msg: &Message) -> Result<Message, ChannelError> {
        if let Err(e) = self.send(request_id, msg) {
            // A daemon that refused the connection said why before it
            // closed: that reason, not the broken pipe, is the answer.
            if matches!(e, ChannelError::Closed) {
                if let Ok((0, reply @ Message::Error { .. })) = self.recv() {
                    return Ok(reply);
                }
            }
            return Err(e);
        }
        loop {
            let (id, reply) = self.recv()?;
            // Id 0 is no request's: an error with it is about the whole
            // connection (a daemon that refuses a client over its limits
            // says why, then closes).
            if id == request_id || (id == 0 && matches!(reply, Message::Error { .. })) {
                return Ok(reply);
            }
            log::debug!("dropping stale reply {id} while waiting for {request_id}");
        }
    }

    fn read_full(stream: &mut S, buf: &mut [u8], at_boundary: bool) -> Result<(), ChannelError> {
        let mut got = 0;
        while got < buf.len() {
            match stream.read(&mut buf[got..]) {
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
