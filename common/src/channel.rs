//! Moving frames over sockets: [`Channel`] for processes that block (the
//! employer, the worker, the library, the tools) and [`Framed`] for the
//! event loops of the long-lived daemons, which must never block.
//!
//! Both carry plain frames (on local Unix sockets, and during a
//! handshake) or, once [`Channel::secure`] / [`Framed::secure`] is called,
//! sealed records (see [`crate::secure`]); a [`Codec`] is that choice.

use crate::secure::{Secure, PREFIX_LEN};
use crate::wire::{self, Message, RawFrame, SessionKeys, WireError, HEADER_LEN};
use byteorder::{BigEndian, ByteOrder};
use std::fmt;
use std::io::{self, Read, Write};

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
    /// bytes `unread` were already received (see [`Framed::into_parts`]).
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

/// How many bytes of laid-out records a secure [`Framed`] seals before it
/// writes: small replies still leave in one system call, a long run of
/// data is on the wire after its first batch is sealed.
const SEAL_BATCH: usize = 64 * 1024;

/// A non-blocking framed connection for a mio event loop: bytes are read
/// into a buffer as they come and frames are taken out whole
/// ([`Framed::read_frame`]); replies are queued and written as the socket
/// accepts them.
///
/// Both buffers are bounded. The read buffer holds at most one maximal
/// record (`max_frame` and its overhead). The write buffer: a server sets
/// [`Framed::pause_reading_at`] so that a peer that sends requests and
/// does not read the replies stops being read (its requests wait in its
/// socket and TCP's window pushes back on it), and
/// [`Framed::close_writing_at`] so that a peer that does not read what is
/// pushed to it unasked is dropped instead of costing memory without end.
/// A client loop does not pause (two loops that both paused reading each
/// other would wait for ever).
pub struct Framed<S> {
    pub stream: S,
    max_frame: u32,
    codec: Codec,
    /// `rbuf[rpos..rend]` holds bytes received and not yet taken as
    /// frames; `rbuf` is initialised up to its length, so reads go
    /// straight into it.
    rbuf: Vec<u8>,
    rpos: usize,
    rend: usize,
    /// The peer closed its side.
    eof: bool,
    /// Since when part of a frame has waited for the rest.
    partial_since: Option<std::time::Instant>,
    pause_at: Option<usize>,
    close_at: Option<usize>,
    /// Bytes for the socket: `wbuf[wpos..sealed]` is ready and not
    /// written yet (an offset, not a drain per write, so a large backlog is
    /// never moved again and again). On a secure channel `wbuf[sealed..]`
    /// holds records laid out but not sealed yet: they are sealed in place
    /// a batch at a time as the socket takes them, so that the first of a
    /// long run (a whole segment's content) is on the wire while the rest
    /// wait, and no frame is copied to be sealed.
    wbuf: Vec<u8>,
    wpos: usize,
    sealed: usize,
    /// A frame could not be queued (a worn-out channel, or a peer that
    /// reads too slowly): the connection must close, which the next
    /// [`Framed::flush`] reports.
    broken: Option<String>,
}

/// Bytes of replies a server lets wait for a client before it stops
/// reading the client's requests: requests are small and so are most
/// replies, so this is many replies, and a client that reads them is never
/// paused.
pub const SERVER_PAUSE: usize = 64 * 1024;

/// A [`Framed`] taken apart (see [`Framed::into_parts`]).
pub struct FramedParts<S> {
    pub stream: S,
    pub codec: Codec,
    pub unread: Vec<u8>,
    pub unwritten: Vec<u8>,
}

/// The read buffer's usual size; it grows to hold a longer record and
/// shrinks back once that record is taken.
const FRAMED_READ: usize = 16 * 1024;

impl<S: Read + Write> Framed<S> {
    pub fn new(stream: S, max_frame: u32) -> Self {
        Framed {
            stream,
            max_frame,
            codec: Codec::Plain,
            rbuf: Vec::new(),
            rpos: 0,
            rend: 0,
            eof: false,
            partial_since: None,
            pause_at: None,
            close_at: None,
            wbuf: Vec::new(),
            wpos: 0,
            sealed: 0,
            broken: None,
        }
    }

    /// The longest record this connection takes or sends.
    pub fn max_record(&self) -> usize {
        PREFIX_LEN + HEADER_LEN + self.max_frame as usize + crate::secure::TAG_LEN
    }

    /// The bounds of a server's connection to a client: reading pauses
    /// once [`SERVER_PAUSE`] bytes of replies wait, and the connection
    /// closes once `records` maximal records wait. Its memory stays under
    /// `(records + 2)` maximal records: the read buffer's one, the write
    /// buffer's bound and the one reply queued past it.
    pub fn server(stream: S, max_frame: u32, records: usize) -> Self {
        let f = Framed::new(stream, max_frame);
        let close = f.max_record() * records;
        f.pause_reading_at(SERVER_PAUSE).close_writing_at(close)
    }

    /// Stops reading frames while more than `bytes` of ours are waiting
    /// for the peer to read them (see the type's documentation).
    pub fn pause_reading_at(mut self, bytes: usize) -> Self {
        self.pause_at = Some(bytes);
        self
    }

    /// Drops the connection once more than `bytes` of ours are waiting for
    /// the peer to read them (see the type's documentation).
    pub fn close_writing_at(mut self, bytes: usize) -> Self {
        self.close_at = Some(bytes);
        self
    }

    /// From here on every frame, both ways, is sealed by `secure`. Frames
    /// queued before stay as they were.
    pub fn secure(&mut self, secure: Secure) {
        self.sealed = self.wbuf.len();
        self.codec = Codec::Secure(Box::new(secure));
    }

    /// Sets how frames look from here on.
    pub fn with_codec(mut self, codec: Codec) -> Self {
        self.sealed = self.wbuf.len();
        self.codec = codec;
        self
    }

    /// The next whole frame, reading the socket as needed: `Ok(None)` once
    /// the socket has nothing more (it would block) and no whole frame is
    /// buffered, or while reading is paused (see
    /// [`Framed::pause_reading_at`]; the loop calls again when the socket
    /// turns writable). An edge-triggered loop calls this until `Ok(None)`,
    /// so no byte is left unread behind a frame. Frames buffered before the
    /// peer closed its side are taken first; then `Err(Closed)`, or a
    /// truncation error if the peer stopped mid-frame.
    pub fn read_frame(&mut self) -> Result<Option<(u64, Message)>, ChannelError> {
        loop {
            if let Some(limit) = self.pause_at {
                if self.pending_writes() > limit {
                    self.flush()?;
                    if self.pending_writes() > limit {
                        return Ok(None);
                    }
                }
            }
            let avail = &mut self.rbuf[self.rpos..self.rend];
            if let Some((used, id, msg)) = self.codec.decode_first(avail, self.max_frame)? {
                self.partial_since = None;
                self.rpos += used;
                if self.rpos == self.rend {
                    self.rpos = 0;
                    self.rend = 0;
                    if self.rbuf.len() > FRAMED_READ {
                        // A long record is taken: give its memory back.
                        self.rbuf.truncate(FRAMED_READ);
                        self.rbuf.shrink_to_fit();
                    }
                }
                return Ok(Some((id, msg)));
            }
            if self.eof {
                return Err(if self.rpos < self.rend {
                    ChannelError::Wire(WireError::Truncated {
                        field: "frame (connection closed mid-frame)",
                    })
                } else {
                    ChannelError::Closed
                });
            }
            if !self.read_some()? {
                if self.rpos < self.rend {
                    self.partial_since
                        .get_or_insert_with(std::time::Instant::now);
                }
                return Ok(None);
            }
        }
    }

    /// One read into the buffer, made room for first; false if the socket
    /// would block.
    fn read_some(&mut self) -> io::Result<bool> {
        if self.rpos > 0 {
            self.rbuf.copy_within(self.rpos..self.rend, 0);
            self.rend -= self.rpos;
            self.rpos = 0;
        }
        // Room for the record begun, known once its length is in (checked
        // against max_frame by whole_len), else a usual read's worth. The
        // room doubles as bytes come rather than all at once, so a peer
        // that announces a long record and sends little costs little.
        let want = match self
            .codec
            .whole_len(&self.rbuf[..self.rend], self.max_frame)
        {
            Ok(whole) if self.rend >= self.codec.prefix_len() => {
                whole.min(self.rend.saturating_mul(2)).max(FRAMED_READ)
            }
            _ => FRAMED_READ,
        };
        if self.rbuf.len() < want {
            self.rbuf.resize(want, 0);
        }
        loop {
            match self.stream.read(&mut self.rbuf[self.rend..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(true);
                }
                Ok(n) => {
                    self.rend += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub fn queue(&mut self, request_id: u64, msg: &Message) {
        self.queue_encoded(|out| wire::encode_frame(request_id, msg, out));
    }

    /// Queues the one whole frame that `encode` appends (for a frame
    /// encoded from borrowed data, see `wire::encode_shm_data`).
    pub fn queue_encoded(&mut self, encode: impl FnOnce(&mut Vec<u8>)) {
        if let Some(limit) = self.close_at {
            if self.pending_writes() > limit && self.broken.is_none() {
                self.broken = Some(format!(
                    "the peer does not read: {} bytes wait for it",
                    self.pending_writes()
                ));
            }
        }
        if self.broken.is_some() {
            return;
        }
        match self.codec {
            Codec::Plain => {
                encode(&mut self.wbuf);
                self.sealed = self.wbuf.len();
            }
            Codec::Secure(_) => crate::secure::reserve_record(&mut self.wbuf, encode),
        }
    }

    /// Seals laid-out records in place, about [`SEAL_BATCH`] bytes (at
    /// least one record).
    fn seal_batch(&mut self) {
        let Codec::Secure(secure) = &mut self.codec else {
            self.sealed = self.wbuf.len();
            return;
        };
        let first = self.sealed;
        while self.sealed < self.wbuf.len() && self.sealed - first < SEAL_BATCH {
            // The records were laid out here, so their frame headers are
            // sound.
            let rest = &self.wbuf[self.sealed..];
            let whole = match rest.get(PREFIX_LEN..PREFIX_LEN + HEADER_LEN) {
                Some(h) => {
                    PREFIX_LEN
                        + HEADER_LEN
                        + BigEndian::read_u32(&h[16..20]) as usize
                        + crate::secure::TAG_LEN
                }
                None => rest.len(),
            };
            let end = (self.sealed + whole).min(self.wbuf.len());
            if let Err(e) = secure.seal_in_place(&mut self.wbuf[self.sealed..end]) {
                self.broken = Some(e.to_string());
                return;
            }
            self.sealed = end;
        }
    }

    /// Writes queued bytes; returns true once everything is written.
    pub fn flush(&mut self) -> io::Result<bool> {
        loop {
            if let Some(e) = &self.broken {
                return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
            }
            if self.wpos == self.sealed {
                if self.sealed == self.wbuf.len() {
                    self.wbuf.clear();
                    self.wpos = 0;
                    self.sealed = 0;
                    return Ok(true);
                }
                self.seal_batch();
                continue;
            }
            match self.stream.write(&self.wbuf[self.wpos..self.sealed]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub fn has_pending_writes(&self) -> bool {
        self.wpos < self.wbuf.len()
    }

    /// Takes the connection apart to carry on with it elsewhere (a
    /// forked process): the socket, the codec, the bytes received and not
    /// taken as frames, and the bytes queued and not yet written (sealed).
    pub fn into_parts(mut self) -> FramedParts<S> {
        while self.sealed < self.wbuf.len() && self.broken.is_none() {
            self.seal_batch();
        }
        FramedParts {
            unread: self.rbuf[self.rpos..self.rend].to_vec(),
            unwritten: self.wbuf[self.wpos..self.sealed].to_vec(),
            stream: self.stream,
            codec: self.codec,
        }
    }

    /// Since when part of a frame has waited for the rest (a peer that
    /// sends a frame a byte at a time, or stops halfway, is seen here).
    pub fn partial_since(&self) -> Option<std::time::Instant> {
        self.partial_since
    }

    /// Bytes queued and not yet written.
    pub fn pending_writes(&self) -> usize {
        self.wbuf.len() - self.wpos
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
    fn read_ahead_takes_frames_out_of_one_read() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut ca = Channel::read_ahead(a, 64 * 1024);
        let mut bytes = Vec::new();
        wire::encode_frame(1, &Message::Ping, &mut bytes);
        // Longer than the read-ahead buffer: it grows to hold the frame.
        let big = Message::error(7, "x".repeat(40_000));
        wire::encode_frame(2, &big, &mut bytes);
        wire::encode_frame(3, &Message::Pong, &mut bytes);
        let (first, rest) = bytes.split_at(HEADER_LEN + 3);
        let writer = std::thread::spawn({
            let mut b2 = b.try_clone().unwrap();
            let first = first.to_vec();
            let rest = rest.to_vec();
            move || {
                b2.write_all(&first).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(20));
                b2.write_all(&rest).unwrap();
            }
        });
        assert_eq!(ca.recv().unwrap(), (1, Message::Ping));
        assert_eq!(ca.recv().unwrap(), (2, big));
        writer.join().unwrap();
        assert_eq!(ca.recv().unwrap(), (3, Message::Pong));
        assert_eq!(ca.buffered(), 0);
        // A frame cut short by the peer is a protocol error, a header
        // over the limit too; neither makes the buffer grow without bound.
        let mut cut = Vec::new();
        wire::encode_frame(5, &Message::error(7, "z"), &mut cut);
        b.write_all(&cut[..HEADER_LEN + 1]).unwrap();
        drop(b);
        assert!(matches!(ca.recv(), Err(ChannelError::Wire(_))));
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut ca = Channel::read_ahead(a, 1024);
        let mut huge = Vec::new();
        wire::encode_frame(4, &Message::error(7, "y".repeat(2000)), &mut huge);
        b.write_all(&huge[..HEADER_LEN]).unwrap();
        assert!(matches!(ca.recv(), Err(ChannelError::Wire(_))));
    }

    #[test]
    fn read_ahead_is_interrupted_only_between_frames() {
        let (a, mut b) = UnixStream::pair().unwrap();
        // No read time-out: a signal restarts nothing, read returns EINTR.
        let mut ca = Channel::read_ahead(a, 4096);
        crate::sys::tests::catch_sigusr2();
        // SAFETY: pthread_self is always valid.
        let me = unsafe { libc::pthread_self() } as usize;
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            // SAFETY: the receiving thread is alive and waiting in recv.
            unsafe { libc::pthread_kill(me as libc::pthread_t, libc::SIGUSR2) };
        });
        assert!(matches!(
            ca.recv_interruptible(),
            Err(ChannelError::Interrupted)
        ));
        t.join().unwrap();
        // Once a frame has begun, a signal does not cut it off.
        let mut bytes = Vec::new();
        wire::encode_frame(6, &Message::error(7, "half"), &mut bytes);
        b.write_all(&bytes[..HEADER_LEN + 2]).unwrap();
        let rest = bytes[HEADER_LEN + 2..].to_vec();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            // SAFETY: as above.
            unsafe { libc::pthread_kill(me as libc::pthread_t, libc::SIGUSR2) };
            std::thread::sleep(std::time::Duration::from_millis(50));
            b.write_all(&rest).unwrap();
            b
        });
        assert_eq!(
            ca.recv_interruptible().unwrap(),
            (6, Message::error(7, "half"))
        );
        drop(t.join().unwrap());
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
        assert_eq!(f.read_frame().unwrap(), None);
        b.write_all(&bytes[7..]).unwrap();
        assert_eq!(f.read_frame().unwrap(), Some((1, Message::Heartbeat)));
        assert_eq!(f.read_frame().unwrap(), Some((2, Message::error(5, "x"))));
        assert_eq!(f.read_frame().unwrap(), None);
        f.queue(3, &Message::Pong);
        assert!(f.flush().unwrap());
        let mut cb = Channel::new(b, 4096);
        assert_eq!(cb.recv().unwrap(), (3, Message::Pong));
        // A frame sent just before the peer closes is still taken.
        cb.send(4, &Message::Ping).unwrap();
        drop(cb);
        assert_eq!(f.read_frame().unwrap(), Some((4, Message::Ping)));
        assert!(matches!(f.read_frame(), Err(ChannelError::Closed)));
    }

    #[test]
    fn framed_reads_until_the_socket_is_empty() {
        // More than one maximal record arrives at once: every frame is
        // taken in one wake-up (an edge-triggered loop gets no second).
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut f = Framed::new(a, 4096);
        let mut bytes = Vec::new();
        for i in 0..100 {
            wire::encode_frame(i, &Message::error(5, "y".repeat(3996)), &mut bytes);
        }
        // Twenty frames fill the socket's buffer well past one record.
        b.write_all(&bytes[..bytes.len() / 5]).unwrap();
        let mut n = 0;
        while let Some((id, _)) = f.read_frame().unwrap() {
            assert_eq!(id, n);
            n += 1;
        }
        assert_eq!(n, 20);
    }

    #[test]
    fn framed_truncated_at_close_is_an_error() {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut f = Framed::new(a, 4096);
        let mut bytes = Vec::new();
        wire::encode_frame(1, &Message::error(5, "z".repeat(100)), &mut bytes);
        b.write_all(&bytes[..50]).unwrap();
        drop(b);
        assert!(matches!(
            f.read_frame(),
            Err(ChannelError::Wire(WireError::Truncated { .. }))
        ));
    }

    #[test]
    fn framed_pauses_a_peer_that_does_not_read_and_drops_one_that_never_does() {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut f = Framed::new(a, 64 * 1024)
            .pause_reading_at(100_000)
            .close_writing_at(1_000_000);
        let mut cb = Channel::new(b, 64 * 1024);
        // The peer pipelines requests and reads nothing back.
        let reply = Message::error(5, "r".repeat(60_000));
        let mut answered = 0;
        for i in 0..200 {
            cb.send(i, &Message::Ping).unwrap();
        }
        while let Some((id, _)) = f.read_frame().unwrap() {
            f.queue(id, &reply);
            answered += 1;
        }
        // Reading stopped once the socket and ~100 kB of replies were
        // full, long before the 200 requests.
        assert!(answered < 200, "answered {answered}");
        let paused_at = f.pending_writes();
        assert!(paused_at <= 100_000 + 60_100, "{paused_at} bytes queued");
        // The peer reads: the requests are served again.
        let mut got = 0;
        while got < answered {
            cb.recv().unwrap();
            got += 1;
            if f.read_frame().unwrap().is_some() {
                break;
            }
        }
        // Frames pushed unasked past close_writing_at break the channel.
        for _ in 0..40 {
            f.queue(0, &reply);
        }
        assert!(f.flush().is_err());
    }

    fn sealed_pair() -> (Codec, Codec) {
        let k = SessionKeys {
            tx_key: [9; crate::wire::KEY_LEN],
            tx_n: 0,
            rx_key: [8; crate::wire::KEY_LEN],
            rx_n: 0,
        };
        (
            Codec::Secure(Box::new(Secure::from_keys(&k))),
            Codec::Secure(Box::new(Secure::from_keys(&k.peer()))),
        )
    }

    #[test]
    fn sealed_channels_and_framed_carry_frames_both_ways() {
        let (ka, kb) = sealed_pair();
        let (a, b) = UnixStream::pair().unwrap();
        let mut ca = Channel::new(a, 64 * 1024).with_codec(ka);
        let mut cb = Channel::read_ahead(b, 64 * 1024).with_codec(kb);
        let big = Message::error(7, "x".repeat(40_000));
        ca.send(1, &Message::Ping).unwrap();
        ca.send(2, &big).unwrap();
        ca.send(3, &Message::Pong).unwrap();
        assert_eq!(cb.recv().unwrap(), (1, Message::Ping));
        assert_eq!(cb.recv().unwrap(), (2, big));
        assert_eq!(cb.recv().unwrap(), (3, Message::Pong));
        cb.send(4, &Message::Heartbeat).unwrap();
        assert_eq!(ca.recv().unwrap(), (4, Message::Heartbeat));
        // The exact channel's state moves to a Framed, which carries on.
        let (a, codec) = ca.into_parts();
        a.set_nonblocking(true).unwrap();
        let mut fa = Framed::new(a, 64 * 1024).with_codec(codec);
        cb.send(5, &Message::Joined).unwrap();
        while fa.read_frame().unwrap().is_none() {}
        fa.queue(6, &Message::Cancel);
        assert!(fa.flush().unwrap());
        assert_eq!(cb.recv().unwrap(), (6, Message::Cancel));
    }

    #[test]
    fn segment_content_travels_borrowed_both_codecs_both_modes() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for sealed in [false, true] {
            for ahead in [false, true] {
                let (ka, kb) = if sealed {
                    sealed_pair()
                } else {
                    (Codec::Plain, Codec::Plain)
                };
                let (a, b) = UnixStream::pair().unwrap();
                let mut ca = Channel::new(a, 256 * 1024).with_codec(ka);
                let mut cb = if ahead {
                    Channel::read_ahead(b, 256 * 1024)
                } else {
                    Channel::new(b, 256 * 1024)
                }
                .with_codec(kb);
                ca.send_encoded(|o| wire::encode_shm_data(9, 3, 4096, &data, o))
                    .unwrap();
                ca.send(10, &Message::ShmRevoked { unit: 3 }).unwrap();
                let f = cb.recv_raw().unwrap();
                assert_eq!(f.request_id, 9);
                let c = f.shm_data().unwrap().unwrap();
                assert_eq!((c.unit, c.offset), (3, 4096));
                assert_eq!(c.data, &data[..], "sealed {sealed} read-ahead {ahead}");
                // The same frame decodes into the same message.
                assert_eq!(
                    f.decode().unwrap(),
                    Message::ShmData {
                        unit: 3,
                        offset: 4096,
                        data: data.clone()
                    }
                );
                let f = cb.recv_raw().unwrap();
                assert!(f.shm_data().is_none());
                assert_eq!(f.decode().unwrap(), Message::ShmRevoked { unit: 3 });
            }
        }
    }

    #[test]
    fn a_short_shm_data_payload_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        wire::encode_shm_data(1, 0, 0, b"abcdef", &mut out);
        // Claim 6 bytes of data, carry 5: the data field is truncated.
        let payload = &out[HEADER_LEN..out.len() - 1];
        let f = RawFrame {
            kind: wire::Kind::ShmData,
            request_id: 1,
            payload,
        };
        assert!(matches!(
            f.shm_data(),
            Some(Err(WireError::Truncated { .. }))
        ));
    }

    #[test]
    fn a_plain_or_altered_frame_on_a_sealed_channel_is_refused() {
        let (ka, kb) = sealed_pair();
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut ca = Channel::new(a, 4096).with_codec(ka);
        let mut plain = Vec::new();
        wire::encode_frame(1, &Message::Ping, &mut plain);
        b.write_all(&plain).unwrap();
        assert!(matches!(ca.recv(), Err(ChannelError::Wire(_))));
        // A sealed record with one bit flipped in flight.
        let (mut kb, (a, mut b)) = (kb, UnixStream::pair().unwrap());
        let (ka2, _) = sealed_pair();
        let mut ca = Channel::new(a, 4096).with_codec(ka2);
        let mut rec = Vec::new();
        kb.encode_with(&mut rec, |o| wire::encode_frame(1, &Message::Ping, o))
            .unwrap();
        let last = rec.len() - 1;
        rec[last] ^= 1;
        b.write_all(&rec).unwrap();
        assert!(matches!(
            ca.recv(),
            Err(ChannelError::Wire(WireError::Unauthentic))
        ));
    }
}
