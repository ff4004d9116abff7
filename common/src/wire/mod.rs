//! The dipc wire format: the one definition of every message that dipc
//! processes exchange, over TCP between hosts and over Unix sockets between
//! an application and its host's daemon.
//!
//! A frame is a fixed 20-byte header in network byte order followed by the
//! payload:
//!
//! ```text
//!  0      4        6       8              16        20
//!  | magic | version | type | request id   | length  | payload (length bytes)
//!  | u32   | u16     | u16  | u64          | u32     |
//! ```
//!
//! Every byte that arrives is treated as hostile: [`parse_header`] refuses a
//! bad magic, another protocol version, an unknown message type and a length
//! over the configured maximum *before* anything is allocated for the
//! payload, and [`Message::decode`] checks every field and every count
//! against the bytes actually present. Decoding returns a [`WireError`]; it
//! never panics.
//!
//! Each message is declared once, in the table of `table.rs` (grouped by
//! the connection that carries it), from which the [`Kind`] numbers, the
//! [`Message`] enum and its codec are generated; `fields.rs` says how each
//! type of field is written and read, `types.rs` declares the structs that
//! travel inside messages. `protocols.rs` says where each may arrive: one
//! enum per receiving side of each kind of connection ([`ToReferee`],
//! [`ToDipcd`], [`ToWorker`], ...), with the table's variants, which a
//! handler converts a decoded `Message` into ([`Protocol::accept`]) and
//! matches on, so that the compiler checks it answers every message that
//! may come and that no other reaches it.

use byteorder::{BigEndian, ByteOrder};
use std::fmt;

#[macro_use]
mod macros;
mod fields;
#[macro_use]
mod table;
mod protocols;
mod types;

pub use protocols::*;
pub use table::{Kind, Message};
pub use types::*;

use fields::{Field, Reader, Writer};

/// "DIPC" in ASCII.
pub const MAGIC: u32 = 0x4449_5043;
/// The protocol version this build speaks. Peers must speak the same one.
pub const VERSION: u16 = 2;
/// Bytes in a frame header.
pub const HEADER_LEN: usize = 20;
/// Bytes in a secure channel's key (AES-256-GCM).
pub const KEY_LEN: usize = 32;
/// Longest Noise handshake message (the Noise protocol's own limit).
pub const MAX_HANDSHAKE: usize = 65535;
/// Most supplementary groups a session may carry (Linux's NGROUPS_MAX).
pub const MAX_GROUPS: usize = 65536;

/// A decoding failure. Each names what was wrong with the peer's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    BadMagic(u32),
    BadVersion(u16),
    UnknownType(u16),
    TooLong {
        len: u32,
        max: u32,
    },
    Truncated {
        field: &'static str,
    },
    Invalid {
        field: &'static str,
        reason: String,
    },
    TrailingBytes {
        kind: &'static str,
        extra: usize,
    },
    /// A frame of a secure channel that does not verify under the
    /// channel's key and next counter: forged, altered, replayed,
    /// reordered or from another connection.
    Unauthentic,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::BadMagic(m) => write!(f, "bad magic {m:#010x} (not a dipc peer)"),
            WireError::BadVersion(v) => write!(
                f,
                "unsupported protocol version {v} (this build speaks {VERSION})"
            ),
            WireError::UnknownType(t) => write!(f, "unknown message type {t}"),
            WireError::TooLong { len, max } => {
                write!(f, "frame of {len} bytes exceeds the maximum of {max}")
            }
            WireError::Truncated { field } => write!(f, "frame truncated in field `{field}`"),
            WireError::Invalid { field, reason } => write!(f, "invalid `{field}`: {reason}"),
            WireError::TrailingBytes { kind, extra } => {
                write!(f, "{extra} unexpected bytes after a {kind} message")
            }
            WireError::Unauthentic => f.write_str(
                "a frame failed authentication (forged, altered, replayed or out of order)",
            ),
        }
    }
}

impl std::error::Error for WireError {}

/// A validated frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub request_id: u64,
    pub len: u32,
}

impl Message {
    /// Shorthand for an error reply.
    pub fn error(errno: i32, message: impl Into<String>) -> Message {
        Message::Error {
            errno,
            message: message.into(),
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> WireError {
    WireError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Checks a header. `max` is the largest payload accepted (dipc.conf's
/// `max_frame`).
pub fn parse_header(buf: &[u8; HEADER_LEN], max: u32) -> Result<Header, WireError> {
    let magic = BigEndian::read_u32(&buf[0..4]);
    if magic != MAGIC {
        return Err(WireError::BadMagic(magic));
    }
    let version = BigEndian::read_u16(&buf[4..6]);
    if version != VERSION {
        return Err(WireError::BadVersion(version));
    }
    let raw_kind = BigEndian::read_u16(&buf[6..8]);
    let kind = Kind::from_u16(raw_kind).ok_or(WireError::UnknownType(raw_kind))?;
    let request_id = BigEndian::read_u64(&buf[8..16]);
    let len = BigEndian::read_u32(&buf[16..20]);
    if len > max {
        return Err(WireError::TooLong { len, max });
    }
    Ok(Header {
        kind,
        request_id,
        len,
    })
}

/// Appends a whole frame (header and payload) to `out`.
pub fn encode_frame(request_id: u64, msg: &Message, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    msg.encode_payload(out);
    finish_header(out, start, msg.kind(), request_id);
}

/// Fills in the header at `out[start..]` of the payload that follows it.
fn finish_header(out: &mut [u8], start: usize, kind: Kind, request_id: u64) {
    let len = (out.len() - start - HEADER_LEN) as u32;
    let h = &mut out[start..start + HEADER_LEN];
    BigEndian::write_u32(&mut h[0..4], MAGIC);
    BigEndian::write_u16(&mut h[4..6], VERSION);
    BigEndian::write_u16(&mut h[6..8], kind as u16);
    BigEndian::write_u64(&mut h[8..16], request_id);
    BigEndian::write_u32(&mut h[16..20], len);
}

/// Appends a whole `ShmData` frame, encoded from borrowed `data` (a
/// segment's content goes out without a copy into a message first).
pub fn encode_shm_data(request_id: u64, unit: u32, offset: u64, data: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    let mut w = Writer(out);
    unit.put(&mut w);
    offset.put(&mut w);
    w.bytes(data);
    finish_header(out, start, Kind::ShmData, request_id);
}

/// A `MigrateData` frame from borrowed bytes: a process's state goes out
/// in chunks of up to a frame each, and copying each chunk into a message
/// first would add a pass over all of it while the process is frozen.
pub fn encode_migrate_data(request_id: u64, data: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    Writer(out).bytes(data);
    finish_header(out, start, Kind::MigrateData, request_id);
}

/// One received frame, its payload still in the receive buffer: a reader
/// that wants a large payload somewhere else (a segment's content, into
/// the mapping) takes it from there, without a message in between.
#[derive(Debug, Clone, Copy)]
pub struct RawFrame<'a> {
    pub kind: Kind,
    pub request_id: u64,
    pub payload: &'a [u8],
}

impl RawFrame<'_> {
    pub fn decode(&self) -> Result<Message, WireError> {
        Message::decode(self.kind, self.payload)
    }

    /// A `ShmData` frame's content, borrowed; `None` for any other kind.
    /// A `MigrateData` frame's bytes, borrowed; `None` for any other kind.
    pub fn migrate_data(&self) -> Option<Result<&[u8], WireError>> {
        if self.kind != Kind::MigrateData {
            return None;
        }
        let mut r = Reader { buf: self.payload };
        Some(r.bytes("data").and_then(|d| match r.buf.len() {
            0 => Ok(d),
            extra => Err(WireError::TrailingBytes {
                kind: Kind::MigrateData.name(),
                extra,
            }),
        }))
    }

    pub fn shm_data(&self) -> Option<Result<ShmChunk<'_>, WireError>> {
        if self.kind != Kind::ShmData {
            return None;
        }
        let mut r = Reader { buf: self.payload };
        let fields = (|| {
            Ok(ShmChunk {
                unit: u32::get(&mut r, "unit")?,
                offset: u64::get(&mut r, "offset")?,
                data: r.bytes("data")?,
            })
        })();
        Some(fields.and_then(|f| match r.buf.len() {
            0 => Ok(f),
            extra => Err(WireError::TrailingBytes {
                kind: Kind::ShmData.name(),
                extra,
            }),
        }))
    }
}

/// The fields of a `ShmData` frame, its content borrowed from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShmChunk<'a> {
    pub unit: u32,
    pub offset: u64,
    pub data: &'a [u8],
}

/// Splits the first frame off `buf`, if it is complete.
///
/// Returns `Ok(None)` while more bytes are needed (a bad header is reported
/// as soon as its 20 bytes are in), else the bytes consumed and the frame.
pub fn split_frame(buf: &[u8], max: u32) -> Result<Option<(usize, RawFrame<'_>)>, WireError> {
    let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let h = parse_header(head, max)?;
    let total = HEADER_LEN + h.len as usize;
    let Some(payload) = buf.get(HEADER_LEN..total) else {
        return Ok(None);
    };
    Ok(Some((
        total,
        RawFrame {
            kind: h.kind,
            request_id: h.request_id,
            payload,
        },
    )))
}

/// Decodes the first frame in `buf`, if it is complete (see
/// [`split_frame`]): the bytes consumed, the request id and the message.
pub fn decode_frame(buf: &[u8], max: u32) -> Result<Option<(usize, u64, Message)>, WireError> {
    match split_frame(buf, max)? {
        Some((used, f)) => Ok(Some((used, f.request_id, f.decode()?))),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests;
