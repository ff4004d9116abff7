//! `dipc-attack garbage`: frames a broken or hostile peer could send,
//! made from a seeded generator so that a failure can be replayed with
//! the seed the run printed, and the attack that sends them down a
//! connection to each daemon.

use crate::common::{not_tried, show, uid, CLOSE_WAIT, REPLY_TIMEOUT, WITHSTOOD};
use crate::links::handshake;
use crate::session::open_session;
use dipc_common::auth::Secret;
use dipc_common::channel::{Channel, Codec};
use dipc_common::config::Config;
use dipc_common::wire::{self, IpcKind, Kind, Message, Origin, Role, HEADER_LEN};
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::Duration;

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

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum GarbageTo {
    Dipcd,
    Worker,
    FrontEnd,
    Referee,
    Shm,
}

/// A connection garbage goes down, sealed or not as the daemon expects.
pub(crate) enum Garbled {
    Unix(Channel<UnixStream>),
    Tcp(Channel<TcpStream>),
}

impl Garbled {
    /// Sends `frame` as it is (sealed on a sealed connection).
    fn send(&mut self, frame: &[u8]) -> bool {
        let r = match self {
            Garbled::Unix(ch) => ch.send_encoded(|out| out.extend_from_slice(frame)),
            Garbled::Tcp(ch) => ch.send_encoded(|out| out.extend_from_slice(frame)),
        };
        r.is_ok()
    }

    /// Reads what the daemon answered so far (without waiting for more):
    /// the bytes, or `None` once it has closed the connection.
    fn drain(&mut self) -> Option<u64> {
        let mut buf = [0u8; 16 * 1024];
        let mut n = 0u64;
        loop {
            let r = match self {
                Garbled::Unix(ch) => ch.get_mut().read(&mut buf),
                Garbled::Tcp(ch) => ch.get_mut().read(&mut buf),
            };
            match r {
                Ok(0) => return None,
                Ok(k) => n += k as u64,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Some(n)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
    }
}

/// A fresh connection to the daemon `to` names.
pub(crate) fn garbled(
    config: &Config,
    (to, target, id, port): (GarbageTo, Option<SocketAddr>, Option<i32>, u16),
) -> Result<Garbled, String> {
    let target = || target.ok_or_else(|| format!("{to:?} needs --target"));
    let quick = Some(Duration::from_millis(1));
    let slow = Some(CLOSE_WAIT);
    let tcp = |ch: Channel<TcpStream>| -> Result<Garbled, String> {
        ch.get_ref()
            .set_read_timeout(quick)
            .map_err(|e| e.to_string())?;
        ch.get_ref()
            .set_write_timeout(slow)
            .map_err(|e| e.to_string())?;
        Ok(Garbled::Tcp(ch))
    };
    let unix = |s: UnixStream| -> Result<Garbled, String> {
        s.set_read_timeout(quick).map_err(|e| e.to_string())?;
        s.set_write_timeout(slow).map_err(|e| e.to_string())?;
        Ok(Garbled::Unix(Channel::new(s, config.max_frame)))
    };
    match to {
        GarbageTo::Dipcd => {
            unix(UnixStream::connect(config.back_end_socket()).map_err(|e| format!("dipcd: {e}"))?)
        }
        GarbageTo::Shm => {
            let id = id.ok_or("shm needs --id")?;
            let path = config.shm_socket(id);
            unix(UnixStream::connect(&path).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        GarbageTo::FrontEnd => {
            let t = target()?;
            let s =
                TcpStream::connect_timeout(&t, REPLY_TIMEOUT).map_err(|e| format!("{t}: {e}"))?;
            tcp(Channel::new(s, config.max_frame))
        }
        GarbageTo::Worker => {
            let s = open_session(config, target()?)?;
            tcp(Channel::new(s.s, s.max).with_codec(Codec::Secure(Box::new(s.sec))))
        }
        GarbageTo::Referee => {
            let secret = Secret::load(&config.secret_file).map_err(|e| e.to_string())?;
            let me = SocketAddr::new(config.host.address, port);
            let mut ch = match handshake(config, &secret, config.referee_addr(), Role::Host, me)? {
                Ok(ch) => ch,
                Err((e, _)) => return Err(format!("handshake: {e}")),
            };
            match ch.call(1, &Message::Join { front_end: me }) {
                Ok(Message::Joined) => tcp(ch),
                Ok(other) => Err(format!("join: {}", show(&other))),
                Err(e) => Err(format!("join: {e}")),
            }
        }
    }
}

pub(crate) fn garbage(
    config: &Config,
    to: (GarbageTo, Option<SocketAddr>, Option<i32>, u16),
    frames: usize,
    seed: Option<u64>,
) -> u8 {
    println!("uid {}", uid());
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    println!("seed {seed}");
    let mut rng = Rng::new(seed);
    let (mut sent, mut conns, mut closed, mut replied) = (0, 0, 0, 0);
    let mut conn = None;
    let mut refused = 0;
    while sent < frames {
        let c = match &mut conn {
            Some(c) => c,
            None => match garbled(config, to) {
                Ok(c) => {
                    conns += 1;
                    conn.insert(c)
                }
                // The daemon may refuse a burst of new connections for a
                // moment (limits); it must take them again.
                Err(e) if refused < 50 => {
                    refused += 1;
                    eprintln!("dipc-attack: garbage: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                Err(e) => return not_tried("garbage", &e),
            },
        };
        let f = frame(&mut rng);
        let wrote = c.send(&f);
        sent += 1;
        match c.drain() {
            Some(n) if wrote => replied += n,
            _ => {
                closed += 1;
                conn = None;
            }
        }
    }
    println!(
        "garbage: {sent} frames on {conns} connections, {closed} closed by the peer, {replied} reply bytes"
    );
    WITHSTOOD
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
