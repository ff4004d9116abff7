//! Garbage for `dipc-attack garbage`: frames a broken or hostile peer
//! could send, made from a seeded generator so that a failure can be
//! replayed with the seed the run printed.

use dipc_common::wire::{self, IpcKind, Kind, Message, Origin, HEADER_LEN};

/// xorshift64*: enough to spread bytes, reproducible from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Well-formed requests of every protocol, for the generator to mutate.
fn sample(rng: &mut Rng) -> Message {
    let kind = [IpcKind::Msg, IpcKind::Sem, IpcKind::Shm][rng.below(3)];
    let key = rng.next() as i32;
    let id = rng.below(64) as i32;
    let origin = Origin {
        key,
        incarnation: rng.next(),
    };
    match rng.below(12) {
        0 => Message::Ping,
        1 => Message::KeyGet {
            kind,
            key,
            flags: rng.next() as i32,
        },
        2 => Message::ListKeys {
            after: Some((kind, key)),
        },
        3 => Message::ListPids {
            after: rng.next() as i64,
        },
        4 => Message::Resolve { kind, local_id: id },
        5 => Message::ShmOpen { id },
        6 => Message::MsgSnd {
            id,
            origin,
            mtype: rng.next() as i64,
            text: {
                let n = rng.below(64);
                rng.bytes(n)
            },
            flags: libc::IPC_NOWAIT,
        },
        7 => Message::MsgRcv {
            id,
            origin,
            size: rng.next(),
            mtype: 0,
            flags: libc::IPC_NOWAIT,
        },
        8 => Message::IpcGet {
            kind,
            key,
            id,
            incarnation: origin.incarnation,
            flags: 0,
            size: rng.next(),
        },
        9 => Message::PidLookup {
            pid_d: rng.next() as i64,
        },
        10 => Message::KeyCheck { kind, key },
        _ => Message::Cancel,
    }
}

/// One frame of garbage (the plain bytes; a sealed connection seals them
/// as they are). Four sorts, in turn at random:
/// - random bytes (no valid header);
/// - a valid header of a random kind over a random payload;
/// - a valid header whose length promises more than follows (the next
///   frames are read as its payload);
/// - a well-formed request with a few of its payload bytes changed.
pub fn frame(rng: &mut Rng) -> Vec<u8> {
    match rng.below(4) {
        0 => {
            let n = 1 + rng.below(300);
            rng.bytes(n)
        }
        1 | 2 => {
            let kind = Kind::ALL[rng.below(Kind::ALL.len())];
            let n = rng.below(200);
            let payload = rng.bytes(n);
            let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
            wire::encode_frame(rng.next(), &Message::Ping, &mut out);
            out[6..8].copy_from_slice(&(kind as u16).to_be_bytes());
            let len = if out.len() % 2 == 0 {
                payload.len()
            } else {
                payload.len() + rng.below(64 * 1024)
            };
            out[16..20].copy_from_slice(&(len as u32).to_be_bytes());
            out.extend_from_slice(&payload);
            out
        }
        _ => {
            let mut out = Vec::new();
            wire::encode_frame(rng.next(), &sample(rng), &mut out);
            if out.len() > HEADER_LEN {
                for _ in 0..1 + rng.below(3) {
                    let at = HEADER_LEN + rng.below(out.len() - HEADER_LEN);
                    out[at] ^= 1 << rng.below(8);
                }
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_makes_the_same_garbage() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..100 {
            assert_eq!(frame(&mut a), frame(&mut b));
        }
    }

    #[test]
    fn every_sort_of_frame_is_made() {
        let mut rng = Rng::new(42);
        let (mut headers, mut decoded) = (0, 0);
        for _ in 0..400 {
            let f = frame(&mut rng);
            assert!(!f.is_empty());
            if f.len() >= HEADER_LEN && f[0..4] == wire::MAGIC.to_be_bytes() {
                headers += 1;
                if matches!(wire::decode_frame(&f, 1 << 20), Ok(Some(_))) {
                    decoded += 1;
                }
            }
        }
        assert!(headers > 100, "{headers} frames with a valid header");
        assert!(decoded > 10, "{decoded} frames that still decode");
    }
}
