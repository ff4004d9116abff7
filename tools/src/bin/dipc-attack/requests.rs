//! Forged requests to this host's dipcd: commits and claims of keys it
//! was not granted, counters it did not count, placeholders nobody
//! vouched for, and shm managers for segments it may not use.

use crate::common::{dipcd, is_error, not_tried, show, shown, uid, verdict, WITHSTOOD};
use dipc_common::channel::Channel;
use dipc_common::config::Config;
use dipc_common::wire::{IpcKind, Message};
use nix::errno::Errno;
use std::io::{self};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// Asks dipcd, on `ch`, to create `key` of `kind`; prints the answer as
/// `grant: ...`. Whether this process was granted the creation.
fn claim(ch: &mut Channel<UnixStream>, kind: IpcKind, key: i32) -> Result<bool, String> {
    let get = Message::KeyGet {
        kind,
        key,
        flags: libc::IPC_CREAT | 0o666,
    };
    match ch.call(1, &get) {
        Ok(Message::KeyOwner { owner, id, .. }) => {
            println!("grant: owner {owner} id {id}");
            Ok(id == -1)
        }
        Ok(other) => {
            println!("grant: {}", show(&other));
            Ok(false)
        }
        Err(e) => Err(format!("KeyGet: {e}")),
    }
}

pub(crate) fn commit_bogus(config: &Config, kind: IpcKind, key: i32, id: i32) -> u8 {
    println!("uid {}", uid());
    let mut ch = match dipcd(config) {
        Ok(ch) => ch,
        Err(e) => return not_tried("dipcd", &e),
    };
    match claim(&mut ch, kind, key) {
        Ok(true) => {}
        Ok(false) => return not_tried("claim", &"this process was not granted the creation"),
        Err(e) => return not_tried("claim", &e),
    }
    let commit = Message::KeyCommit {
        kind,
        key,
        id,
        creator_uid: 0,
        incarnation: 0,
    };
    let r = ch.call(2, &commit).map_err(|e| e.to_string());
    println!("commit: {}", shown(&r));
    verdict(is_error(&r, None))
}

pub(crate) fn claim_hold(
    config: &Config,
    kind: IpcKind,
    key: i32,
    hold: Duration,
    keep: bool,
) -> u8 {
    println!("uid {}", uid());
    let mut ch = match dipcd(config) {
        Ok(ch) => ch,
        Err(e) => return not_tried("dipcd", &e),
    };
    match claim(&mut ch, kind, key) {
        Ok(true) => {}
        Ok(false) => return not_tried("claim", &"this process was not granted the creation"),
        Err(e) => return not_tried("claim", &e),
    }
    if !keep {
        drop(ch);
        println!("holding");
        std::thread::sleep(hold);
        return WITHSTOOD;
    }
    println!("holding");
    std::thread::sleep(hold);
    let size = match kind {
        IpcKind::Msg => 0,
        IpcKind::Sem => 1,
        IpcKind::Shm => 4096,
    };
    let id = match dipc_common::sysv::get(kind, key, size, libc::IPC_CREAT | libc::IPC_EXCL | 0o600)
    {
        Ok(id) => id,
        Err(e) => return not_tried("create", &Errno::from_raw(e)),
    };
    let commit = Message::KeyCommit {
        kind,
        key,
        id,
        creator_uid: 0,
        incarnation: 0,
    };
    let r = ch.call(2, &commit).map_err(|e| e.to_string());
    println!("late commit: {}", shown(&r));
    let removed = match kind {
        IpcKind::Msg => dipc_common::sysv::msgctl_rmid(id),
        IpcKind::Sem => dipc_common::sysv::semctl_int(id, 0, libc::IPC_RMID, 0).map(|_| ()),
        IpcKind::Shm => dipc_common::sysv::shmctl_rmid(id),
    };
    if let Err(e) = removed {
        eprintln!(
            "dipc-attack: remove {} {id}: {}",
            kind.name(),
            Errno::from_raw(e)
        );
    }
    verdict(is_error(&r, None))
}

pub(crate) fn forged_stats(config: &Config) -> u8 {
    println!("uid {}", uid());
    let mut ch = match dipcd(config) {
        Ok(ch) => ch,
        Err(e) => return not_tried("dipcd", &e),
    };
    let report = Message::StatsReport {
        pairs: vec![
            ("call.msgsnd".into(), 1_000_000),
            ("latency.0".into(), 1_000_000),
        ],
    };
    match ch.call(1, &report) {
        Ok(reply) => {
            println!("reply: {}", show(&reply));
            verdict(matches!(
                reply,
                Message::Error {
                    errno: libc::EPERM,
                    ..
                }
            ))
        }
        Err(e) => not_tried("StatsReport", &e),
    }
}

pub(crate) fn forged_placeholder(config: &Config, kind: IpcKind, key: i32) -> u8 {
    println!("uid {}", uid());
    let mut ch = match dipcd(config) {
        Ok(ch) => ch,
        Err(e) => return not_tried("dipcd", &e),
    };
    let (owner, id, origin) = match ch.call(
        1,
        &Message::KeyGet {
            kind,
            key,
            flags: 0,
        },
    ) {
        Ok(Message::KeyOwner {
            owner,
            id,
            local_id,
            origin,
        }) => {
            println!("owner {owner} id {id} local {local_id}");
            (owner, id, origin)
        }
        other => return not_tried("key get", &shown(&other.map_err(|e| e.to_string()))),
    };
    let mut vouch = [0u8; 32];
    if let Err(e) = dipc_common::auth::fill_random(&mut vouch) {
        return not_tried("random", &e);
    }
    let ask = Message::Placeholder {
        kind,
        key,
        owner,
        id,
        origin,
        vouch,
    };
    let r = ch.call(2, &ask).map_err(|e| e.to_string());
    println!("placeholder: {}", shown(&r));
    verdict(is_error(&r, None))
}

pub(crate) fn shm_open(
    config: &Config,
    private: bool,
    key: Option<i32>,
    mode: &str,
    id: Option<i32>,
) -> u8 {
    let Ok(mode) = i32::from_str_radix(mode, 8) else {
        return not_tried("mode", &"not octal");
    };
    let made = match (private, key) {
        (true, _) => Some(libc::IPC_PRIVATE),
        (false, Some(k)) => Some(k),
        (false, None) => None,
    };
    let sid = match (made, id) {
        (Some(k), _) => {
            // SAFETY: a plain System V call.
            let sid = unsafe { libc::shmget(k, 4096, libc::IPC_CREAT | mode) };
            if sid < 0 {
                return not_tried("shmget", &io::Error::last_os_error());
            }
            println!("segment {sid}");
            sid
        }
        (None, Some(i)) => i,
        (None, None) => return not_tried("shm-open", &"--private, --key or --id"),
    };
    if id.is_none() && key.is_some() && !private {
        // Only made: another user asks.
        return WITHSTOOD;
    }
    let mut ch = match dipcd(config) {
        Ok(ch) => ch,
        Err(e) => return not_tried("dipcd", &e),
    };
    match ch.call(1, &Message::ShmOpen { id: sid }) {
        Ok(m) => println!("shm-open: {}", show(&m)),
        Err(e) => println!("shm-open: {e}"),
    }
    WITHSTOOD
}
