//! The bytes a moving process hands the program that continues it: its
//! pid_d, the move's token, its signal mask, its mailbox's messages, its
//! System V side ([`Ipc`]) and the length of the state that follows; and
//! their decoding, which believes no count it has not checked.

use super::Mail;
use crate::moved_ids::{self, Carried};
use crate::pid::PidD;
use crate::shm::AttachedAt;
use dipc_common::wire::Origin;
use std::net::SocketAddr;

/// Tells what follows in the bytes the new program is handed.
pub(super) const MAGIC: &[u8; 8] = b"DIPCMIG1";

/// What the new program is handed, up to the state's bytes (which follow
/// it, `state_len` of them).
pub(super) fn encode_head(
    pid_d: PidD,
    token: u64,
    mask: u64,
    qbytes: u64,
    mail: &[Mail],
    ipc: &Ipc,
    state_len: usize,
) -> Vec<u8> {
    let carried = &ipc.carried;
    let n: usize = mail.iter().map(|(_, t)| 12 + t.len()).sum();
    let mut b = Vec::with_capacity(52 + n + carried.len() * 64);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&pid_d.to_be_bytes());
    b.extend_from_slice(&token.to_be_bytes());
    b.extend_from_slice(&mask.to_be_bytes());
    b.extend_from_slice(&qbytes.to_be_bytes());
    b.extend_from_slice(&(mail.len() as u32).to_be_bytes());
    for (t, text) in mail {
        b.extend_from_slice(&t.to_be_bytes());
        b.extend_from_slice(&(text.len() as u32).to_be_bytes());
        b.extend_from_slice(text);
    }
    b.extend_from_slice(&(carried.len() as u32).to_be_bytes());
    for c in carried {
        b.push(moved_ids::kind_code(c.kind));
        b.extend_from_slice(&c.id.to_be_bytes());
        let owner = c.owner.to_string();
        b.push(owner.len() as u8);
        b.extend_from_slice(owner.as_bytes());
        b.extend_from_slice(&c.owner_id.to_be_bytes());
        b.extend_from_slice(&c.origin.key.to_be_bytes());
        b.extend_from_slice(&c.origin.incarnation.to_be_bytes());
    }
    b.extend_from_slice(&(ipc.attached.len() as u32).to_be_bytes());
    for a in &ipc.attached {
        b.extend_from_slice(&a.id.to_be_bytes());
        b.extend_from_slice(&(a.addr as u64).to_be_bytes());
        b.extend_from_slice(&a.flags.to_be_bytes());
    }
    b.extend_from_slice(&(state_len as u64).to_be_bytes());
    b
}

/// What a moved process's new program is handed.
#[derive(Debug, PartialEq)]
pub(super) struct Handed {
    pub(super) pid_d: PidD,
    pub(super) token: u64,
    pub(super) mask: u64,
    pub(super) qbytes: u64,
    pub(super) mail: Vec<Mail>,
    pub(super) ipc: Ipc,
    /// Where the state is in the bytes decoded.
    pub(super) state: std::ops::Range<usize>,
}

pub(super) fn decode(b: &[u8]) -> Result<Handed, String> {
    struct R<'a>(&'a [u8]);
    impl<'a> R<'a> {
        fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
            if self.0.len() < n {
                return Err(format!("truncated in {what}"));
            }
            let (h, t) = self.0.split_at(n);
            self.0 = t;
            Ok(h)
        }
        fn u64(&mut self, what: &str) -> Result<u64, String> {
            let mut a = [0u8; 8];
            a.copy_from_slice(self.take(8, what)?);
            Ok(u64::from_be_bytes(a))
        }
        fn u32(&mut self, what: &str) -> Result<u32, String> {
            let mut a = [0u8; 4];
            a.copy_from_slice(self.take(4, what)?);
            Ok(u32::from_be_bytes(a))
        }
    }
    let mut r = R(b);
    if r.take(8, "magic")? != MAGIC {
        return Err("not a dipc migration".into());
    }
    let pid_d = r.u64("pid_d")? as i64;
    let token = r.u64("token")?;
    let mask = r.u64("mask")?;
    let qbytes = r.u64("qbytes")?;
    let n = r.u32("count")? as usize;
    if n.saturating_mul(12) > r.0.len() {
        return Err(format!("{n} messages cannot fit"));
    }
    let mut mail = Vec::with_capacity(n);
    for _ in 0..n {
        let t = r.u64("type")? as i64;
        let len = r.u32("length")? as usize;
        mail.push((t, r.take(len, "text")?.to_vec()));
    }
    let n = r.u32("id count")? as usize;
    if n > moved_ids::MAX_CARRIED {
        return Err(format!("{n} ids"));
    }
    let mut carried = Vec::with_capacity(n);
    for _ in 0..n {
        let kind = r.take(1, "kind")?[0];
        let kind = moved_ids::kind_from(kind).ok_or_else(|| format!("kind {kind}"))?;
        let id = r.u32("id")? as i32;
        let len = r.take(1, "owner length")?[0] as usize;
        let owner = std::str::from_utf8(r.take(len, "owner")?)
            .ok()
            .and_then(|o| o.parse::<SocketAddr>().ok())
            .ok_or("an owner that is not an address")?;
        let owner_id = r.u32("owner's id")? as i32;
        let key = r.u32("key")? as i32;
        let incarnation = r.u64("incarnation")?;
        carried.push(Carried {
            kind,
            id,
            owner,
            owner_id,
            origin: Origin { key, incarnation },
        });
    }
    let n = r.u32("attachment count")? as usize;
    if n > crate::shm::MAX_ATTACHED {
        return Err(format!("{n} attachments"));
    }
    let mut attached = Vec::with_capacity(n);
    for _ in 0..n {
        let id = r.u32("shm id")? as i32;
        let addr = usize::try_from(r.u64("address")?).map_err(|_| "an address too high")?;
        let flags = r.u32("shmat flags")? as i32;
        attached.push(AttachedAt { id, addr, flags });
    }
    let len = r.u64("state length")?;
    let len = usize::try_from(len).map_err(|_| "state too long".to_string())?;
    let at = b.len() - r.0.len();
    r.take(len, "state")?;
    if !r.0.is_empty() {
        return Err(format!("{} bytes after the state", r.0.len()));
    }
    let state = at..at + len;
    Ok(Handed {
        pid_d,
        token,
        mask,
        qbytes,
        mail,
        ipc: Ipc { carried, attached },
        state,
    })
}

/// The System V side of a moving process: its distributed ids, and the
/// segments attached (detached before the hand-over, attached again at
/// the same addresses by the new process).
#[derive(Debug, PartialEq)]
pub(super) struct Ipc {
    pub(super) carried: Vec<Carried>,
    pub(super) attached: Vec<AttachedAt>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handed_bytes_round_trip_and_lies_are_refused() {
        let mail = vec![(3, b"one".to_vec()), (9, vec![]), (3, vec![7; 100])];
        let carried = vec![
            Carried {
                kind: dipc_common::wire::IpcKind::Sem,
                id: 7,
                owner: "10.66.0.2:7000".parse().unwrap(),
                owner_id: 32769,
                origin: Origin {
                    key: -5,
                    incarnation: 99,
                },
            },
            Carried {
                kind: dipc_common::wire::IpcKind::Shm,
                id: 0,
                owner: "[::1]:1".parse().unwrap(),
                owner_id: 0,
                origin: Origin::default(),
            },
        ];
        let ipc = Ipc {
            carried,
            attached: vec![AttachedAt {
                id: 3,
                addr: 0x7f00_1234_0000,
                flags: libc::SHM_RDONLY,
            }],
        };
        let mut b = encode_head(42, u64::MAX, 0b101, 16384, &mail, &ipc, 5);
        b.extend_from_slice(b"state");
        let h = decode(&b).unwrap();
        let at = b.len() - 5;
        assert_eq!(
            h,
            Handed {
                pid_d: 42,
                token: u64::MAX,
                mask: 0b101,
                qbytes: 16384,
                mail,
                ipc,
                state: at..at + 5,
            }
        );
        assert_eq!(&b[h.state.clone()], b"state");
        for cut in 0..b.len() {
            assert!(decode(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut padded = b.clone();
        padded.push(0);
        assert!(decode(&padded).is_err());
        // A count that cannot fit allocates nothing.
        let mut lying = b[..40].to_vec();
        lying.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode(&lying).is_err());
    }
}
