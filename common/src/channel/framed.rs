//! [`Framed`]: a non-blocking framed connection with bounded buffers, for
//! the daemons' event loops.

use super::{ChannelError, Codec};
use crate::secure::{Secure, PREFIX_LEN};
use crate::wire::{self, Message, WireError, HEADER_LEN};
use byteorder::{BigEndian, ByteOrder};
use std::io::{self, Read, Write};

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
