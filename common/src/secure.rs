//! The secure channel that every connection between hosts runs on.
//!
//! A connection opens with a Noise handshake (`Noise_NNpsk0_25519_AESGCM_SHA256`,
//! run by the `snow` crate; see [`crate::auth`]): both sides mix a key
//! derived from the cluster secret into the handshake and each contributes
//! a fresh X25519 ephemeral key, so only holders of the secret complete it,
//! and the keys it yields belong to that one connection. Someone who
//! relays or replays a handshake learns nothing: without the ephemeral
//! private keys it cannot compute the connection's keys.
//!
//! After the handshake every frame, both ways, travels as a *record*:
//!
//! ```text
//!  | length (u32, big-endian) | AES-256-GCM(frame) | tag (16 bytes) |
//! ```
//!
//! The frame inside is the plain frame of [`crate::wire`] (header and
//! payload), so nothing about a message (not even its type) shows on the
//! wire. The key is the handshake's key for that direction, the nonce the
//! frame's counter in that direction (Noise's CipherState rule for
//! AESGCM: four zero bytes and the counter, big-endian), and the length
//! prefix is the additional data. A record that was altered, cut,
//! replayed, reordered or taken from another connection fails its tag;
//! the receiver then reports [`WireError::Unauthentic`] and closes the
//! connection. TCP delivers in order, so the counters never need to be
//! sent.
//!
//! Why not snow's own transport state: Noise transport messages are
//! limited to 64 KiB (our frames go up to `max_frame`, 1 MiB by default),
//! and a connection of ours changes process while open — dipcd's employer
//! hands the session to the application, a worker hands a shared memory
//! attach to the segment's manager — so the state must be taken out of one
//! process and put into another ([`SessionKeys`]), which snow's
//! `TransportState` does not allow. The record layer here is Noise's
//! CipherState (same AEAD, same nonce rule) over longer messages, with
//! ring's AES-GCM, which runs at several GB/s with AES-NI.

use crate::wire::{self, Message, RawFrame, SessionKeys, WireError, HEADER_LEN, KEY_LEN};
use byteorder::{BigEndian, ByteOrder};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use std::fmt;

/// The Noise protocol every connection between hosts opens with.
pub const NOISE_PARAMS: &str = "Noise_NNpsk0_25519_AESGCM_SHA256";
/// Bytes of a record's length prefix.
pub const PREFIX_LEN: usize = 4;
/// Bytes of a record's authentication tag.
pub const TAG_LEN: usize = 16;

/// Appends the room of one record to `out`: a zeroed length prefix, the
/// plain frame that `encode` appends, a zeroed tag. [`Secure::seal_in_place`]
/// turns it into the record.
pub fn reserve_record(out: &mut Vec<u8>, encode: impl FnOnce(&mut Vec<u8>)) {
    out.extend_from_slice(&[0u8; PREFIX_LEN]);
    encode(out);
    out.extend_from_slice(&[0u8; TAG_LEN]);
}

/// One direction of a channel: its key and the counter of the next frame.
struct Cipher {
    raw: [u8; KEY_LEN],
    key: LessSafeKey,
    n: u64,
}

impl Cipher {
    fn new(raw: [u8; KEY_LEN], n: u64) -> Cipher {
        // AES_256_GCM takes exactly KEY_LEN bytes, which `raw` has.
        let key = match UnboundKey::new(&AES_256_GCM, &raw) {
            Ok(k) => LessSafeKey::new(k),
            Err(_) => unreachable!("a {KEY_LEN}-byte key is an AES-256 key"),
        };
        Cipher { raw, key, n }
    }

    /// The nonce of the next frame. Noise reserves the last counter value;
    /// a channel that reaches it (2^64 - 1 frames) is worn out.
    fn next_nonce(&mut self) -> Result<Nonce, WireError> {
        if self.n == u64::MAX {
            return Err(WireError::Unauthentic);
        }
        let mut nonce = [0u8; 12];
        BigEndian::write_u64(&mut nonce[4..], self.n);
        self.n += 1;
        Ok(Nonce::assume_unique_for_key(nonce))
    }
}

/// Both directions of an established secure channel.
pub struct Secure {
    tx: Cipher,
    rx: Cipher,
}

impl fmt::Debug for Secure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secure(tx #{}, rx #{})", self.tx.n, self.rx.n)
    }
}

impl Secure {
    /// A channel from the keys a handshake produced (or a handed-over
    /// channel's state).
    pub fn from_keys(k: &SessionKeys) -> Secure {
        Secure {
            tx: Cipher::new(k.tx_key, k.tx_n),
            rx: Cipher::new(k.rx_key, k.rx_n),
        }
    }

    /// The state to hand the channel to another local process with its
    /// socket; this side must not use the channel afterwards.
    pub fn keys(&self) -> SessionKeys {
        SessionKeys {
            tx_key: self.tx.raw,
            tx_n: self.tx.n,
            rx_key: self.rx.raw,
            rx_n: self.rx.n,
        }
    }

    /// Appends the record of one frame to `out`.
    pub fn seal(
        &mut self,
        request_id: u64,
        msg: &Message,
        out: &mut Vec<u8>,
    ) -> Result<(), WireError> {
        self.seal_with(out, |out| wire::encode_frame(request_id, msg, out))
    }

    /// Appends one sealed record of the whole frame that `encode` appends
    /// (for a frame encoded from borrowed data, see
    /// `wire::encode_shm_data`).
    pub fn seal_with(
        &mut self,
        out: &mut Vec<u8>,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), WireError> {
        let start = out.len();
        reserve_record(out, encode);
        let r = self.seal_in_place(&mut out[start..]);
        if r.is_err() {
            out.truncate(start);
        }
        r
    }

    /// Seals one record laid out by [`reserve_record`] (a zeroed length
    /// prefix, the plain frame, a zeroed tag), where it lies: no copy of
    /// the frame is made, which counts for a segment's content.
    pub fn seal_in_place(&mut self, record: &mut [u8]) -> Result<(), WireError> {
        let Some(sealed_len) = record.len().checked_sub(PREFIX_LEN) else {
            return Err(WireError::Truncated { field: "record" });
        };
        let len = u32::try_from(sealed_len).map_err(|_| WireError::TooLong {
            len: u32::MAX,
            max: u32::MAX,
        })?;
        let Some(body_end) = record
            .len()
            .checked_sub(TAG_LEN)
            .filter(|&e| e >= PREFIX_LEN)
        else {
            return Err(WireError::Truncated { field: "record" });
        };
        let nonce = self.tx.next_nonce()?;
        BigEndian::write_u32(&mut record[..PREFIX_LEN], len);
        let (head, tag_space) = record.split_at_mut(body_end);
        let (prefix, body) = head.split_at_mut(PREFIX_LEN);
        let tag = self
            .tx
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(&*prefix), body)
            .map_err(|_| WireError::Unauthentic)?;
        tag_space.copy_from_slice(tag.as_ref());
        Ok(())
    }

    /// The whole length (prefix included) of the record whose prefix is
    /// `prefix`, checked against `max` (dipc.conf's `max_frame`) before
    /// anything is allocated for it.
    pub fn record_len(prefix: &[u8; PREFIX_LEN], max: u32) -> Result<usize, WireError> {
        let len = BigEndian::read_u32(prefix);
        let most = (max as u64 + (HEADER_LEN + TAG_LEN) as u64).min(u32::MAX as u64) as u32;
        if len > most {
            return Err(WireError::TooLong { len, max: most });
        }
        if (len as usize) < HEADER_LEN + TAG_LEN {
            return Err(WireError::Truncated { field: "record" });
        }
        Ok(PREFIX_LEN + len as usize)
    }

    /// Opens one whole record (prefix included), in place, and decodes
    /// the frame inside it.
    pub fn open(&mut self, record: &mut [u8], max: u32) -> Result<(u64, Message), WireError> {
        let f = self.open_raw(record, max)?;
        Ok((f.request_id, f.decode()?))
    }

    /// Like [`Secure::open`], but leaves the frame where it was decrypted,
    /// in `record`.
    pub fn open_raw<'a>(
        &mut self,
        record: &'a mut [u8],
        max: u32,
    ) -> Result<RawFrame<'a>, WireError> {
        let Some((prefix, body)) = record.split_first_chunk_mut::<PREFIX_LEN>() else {
            return Err(WireError::Truncated { field: "record" });
        };
        if Secure::record_len(prefix, max)? != PREFIX_LEN + body.len() {
            return Err(WireError::Truncated { field: "record" });
        }
        let nonce = self.rx.next_nonce()?;
        let frame: &'a [u8] = self
            .rx
            .key
            .open_in_place(nonce, Aad::from(&*prefix), body)
            .map_err(|_| WireError::Unauthentic)?;
        match wire::split_frame(frame, max)? {
            Some((used, f)) if used == frame.len() => Ok(f),
            Some((used, _)) => Err(WireError::TrailingBytes {
                kind: "sealed frame",
                extra: frame.len() - used,
            }),
            None => Err(WireError::Truncated {
                field: "sealed frame",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Secure, Secure) {
        let a = SessionKeys {
            tx_key: [1; KEY_LEN],
            tx_n: 0,
            rx_key: [2; KEY_LEN],
            rx_n: 0,
        };
        (Secure::from_keys(&a), Secure::from_keys(&a.peer()))
    }

    fn record(s: &mut Secure, id: u64, msg: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        s.seal(id, msg, &mut out).unwrap();
        out
    }

    #[test]
    fn records_open_in_order_and_hide_the_frame() {
        let (mut a, mut b) = pair();
        let m1 = Message::error(13, "secret text");
        let mut r1 = record(&mut a, 1, &m1);
        let mut r2 = record(&mut a, 2, &Message::Ping);
        assert!(!r1.windows(11).any(|w| w == b"secret text"));
        assert_eq!(b.open(&mut r1, 4096).unwrap(), (1, m1));
        assert_eq!(b.open(&mut r2, 4096).unwrap(), (2, Message::Ping));
    }

    #[test]
    fn altered_replayed_reordered_and_foreign_records_fail() {
        let (mut a, mut b) = pair();
        let r1 = record(&mut a, 1, &Message::Ping);
        let r2 = record(&mut a, 2, &Message::Pong);
        // A flipped bit anywhere, the length prefix included.
        for i in 0..r1.len() {
            let (_, mut fresh) = pair();
            let mut bad = r1.clone();
            bad[i] ^= 0x40;
            assert!(fresh.open(&mut bad, 4096).is_err(), "byte {i}");
        }
        // Out of order: the second record first.
        let (_, mut fresh) = pair();
        assert_eq!(
            fresh.open(&mut r2.clone(), 4096),
            Err(WireError::Unauthentic)
        );
        // Replayed: the first record twice.
        assert!(b.open(&mut r1.clone(), 4096).is_ok());
        assert_eq!(b.open(&mut r1.clone(), 4096), Err(WireError::Unauthentic));
        // Sent the other way (reflected back to its sender).
        let (mut a2, _) = pair();
        assert_eq!(a2.open(&mut r1.clone(), 4096), Err(WireError::Unauthentic));
    }

    #[test]
    fn lengths_are_bounded_before_allocation() {
        assert!(matches!(
            Secure::record_len(&u32::MAX.to_be_bytes(), 1 << 20),
            Err(WireError::TooLong { .. })
        ));
        assert!(Secure::record_len(&3u32.to_be_bytes(), 1 << 20).is_err());
        let ok = (HEADER_LEN + TAG_LEN) as u32;
        assert_eq!(
            Secure::record_len(&ok.to_be_bytes(), 0).unwrap(),
            PREFIX_LEN + ok as usize
        );
    }

    #[test]
    fn handed_over_state_continues_the_channel() {
        let (mut a, mut b) = pair();
        let mut r = record(&mut a, 1, &Message::Ping);
        b.open(&mut r, 4096).unwrap();
        let mut moved = Secure::from_keys(&a.keys());
        let mut r = record(&mut moved, 2, &Message::Pong);
        assert_eq!(b.open(&mut r, 4096).unwrap(), (2, Message::Pong));
    }
}
