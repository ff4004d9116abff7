//! Races the integration tests prove with sleeps ("it is still blocked"),
//! as scripted events on the referee's tables with a fake clock: what
//! each racer is answered, and when.

use super::host;
use crate::hosts::HostTable;
use crate::keys::{ClaimRefused, KeyTable};
use crate::pids::{PidTable, Registration, RESTORE_WINDOW};
use dipc_common::wire::{IpcKind, Message};
use std::time::{Duration, Instant};

const CREAT: i32 = libc::IPC_CREAT;
const TIMEOUT: Duration = Duration::from_secs(5);

/// What a reply says, for comparing whole answers.
fn said(m: &Message) -> String {
    match m {
        Message::KeyOwner { owner, id, .. } => format!("owner {owner} id {id}"),
        Message::Error { errno, .. } => format!("errno {errno}"),
        Message::Done { .. } => "done".into(),
        other => format!("{:?}", other.kind()),
    }
}

fn replies(r: &[(usize, u64, Message)]) -> Vec<(usize, u64, String)> {
    r.iter().map(|(c, q, m)| (*c, *q, said(m))).collect()
}

/// A creator that took longer than the time-out loses the creation to the
/// first waiter with `IPC_CREAT`; a plain get waits on for the new
/// creator, not answered `ENOENT` in between; the late commit is refused;
/// and everyone ends with the new creator's structure.
#[test]
fn a_late_creator_loses_to_the_waiter_that_took_over() {
    let (h1, h2, h3) = (host(0), host(1), host(2));
    let t0 = Instant::now();
    let mut t = KeyTable::default();
    let k = (IpcKind::Msg, 0x2222);
    let r = t.get(k.0, k.1, CREAT, h1, (1, 1), t0);
    assert_eq!(replies(&r), [(1, 1, format!("owner {h1} id -1"))]);
    assert!(t.get(k.0, k.1, CREAT, h2, (2, 1), t0).is_empty());
    assert!(t.get(k.0, k.1, 0, h3, (3, 1), t0).is_empty());
    // At the time-out, not before.
    assert!(t.expire(t0 + TIMEOUT, TIMEOUT).is_empty());
    let late = t0 + TIMEOUT + Duration::from_millis(1);
    let r = t.expire(late, TIMEOUT);
    assert_eq!(replies(&r), [(2, 1, format!("owner {h2} id -1"))]);
    // h1 commits after all: not the creator any more.
    let r = t.commit(k.0, k.1, (7, 1), 1000, 1, 2);
    assert_eq!(replies(&r), [(1, 2, format!("errno {}", libc::EPERM))]);
    let r = t.commit(k.0, k.1, (9, 2), 1000, 2, 2);
    assert_eq!(
        replies(&r),
        [
            (3, 1, format!("owner {h2} id 9")),
            (2, 2, "done".to_string())
        ]
    );
    // h2's grant is over: its own time-out changes nothing.
    assert!(t.expire(late + TIMEOUT * 2, TIMEOUT).is_empty());
    assert_eq!(t.list(late)[0].owner, h2);
}

/// The creator's link breaks: the waiters are served afresh, in the order
/// they asked. A plain get is told there is no such key (nothing was
/// made), a get with `IPC_CREAT` becomes the creator, and the gets of the
/// closed connection itself are answered by no one.
#[test]
fn a_creators_link_loss_serves_the_waiters_in_order() {
    let (h1, h2, h3) = (host(0), host(1), host(2));
    let t0 = Instant::now();
    let mut t = KeyTable::default();
    let k = (IpcKind::Sem, 0x5c02);
    t.get(k.0, k.1, CREAT, h1, (1, 1), t0);
    assert!(t.get(k.0, k.1, CREAT, h1, (1, 2), t0).is_empty());
    assert!(t.get(k.0, k.1, 0, h2, (2, 1), t0).is_empty());
    assert!(t.get(k.0, k.1, CREAT, h3, (3, 1), t0).is_empty());
    assert!(t.get(k.0, k.1, 0, h2, (2, 2), t0).is_empty());
    let r = t.conn_closed(1, t0);
    assert_eq!(
        replies(&r),
        [
            (2, 1, format!("errno {}", libc::ENOENT)),
            (3, 1, format!("owner {h3} id -1")),
        ]
    );
    // (2, 2) came after h3's get: it waits for h3.
    let r = t.commit(k.0, k.1, (4, 1), 1000, 3, 2);
    assert_eq!(
        replies(&r),
        [
            (2, 2, format!("owner {h3} id 4")),
            (3, 2, "done".to_string())
        ]
    );
}

fn reg(pid: i32, pid_d: i64) -> Registration {
    Registration {
        pid_d,
        pid,
        uid: 1000,
        starttime: 1,
        mailbox: 5,
    }
}

/// A restarted referee (a new table) takes the hosts' restores of pid_d
/// its new counter has not reached while the window is open, and counts
/// past them, so a later registration gets a larger pid_d; a host that
/// comes back after the window gets back only ids this referee gave.
#[test]
fn a_restarted_referee_takes_restores_in_the_window_and_counts_past_them() {
    let (h1, h2, h3) = (host(0), host(1), host(2));
    let t0 = Instant::now();
    let mut t = PidTable::new(t0);
    let soon = t0 + Duration::from_secs(1);
    assert_eq!(t.register(h2, 2, reg(100, 5), soon), Ok(5));
    assert_eq!(t.register(h1, 1, reg(200, 2), soon), Ok(2));
    assert_eq!(t.register(h3, 3, reg(300, 0), soon), Ok(6));
    // Host 3 had 9 and 4 before the restart; it is back too late.
    let late = t0 + RESTORE_WINDOW + Duration::from_millis(1);
    assert_eq!(
        t.register(h3, 4, reg(301, 9), late).unwrap_err().0,
        libc::EINVAL
    );
    assert_eq!(t.register(h3, 4, reg(302, 4), late), Ok(4));
    assert_eq!(t.register(h3, 4, reg(303, 0), late), Ok(7));
    // A restore of an id another process holds now is refused; the
    // holder keeps it.
    assert_eq!(
        t.register(h1, 1, reg(201, 6), late).unwrap_err().0,
        libc::EEXIST
    );
    assert_eq!(t.lookup(6, late).map(|r| r.pid), Some(300));
}

/// A host's link breaks: its processes' records and names go at once (its
/// dipcd no longer watches them); when it joins again it restores them
/// under the same pid_d and takes their names again, except a name
/// another process took meanwhile.
#[test]
fn a_broken_link_drops_records_until_the_host_restores_them_and_their_names() {
    let (h1, h2) = (host(0), host(1));
    let t0 = Instant::now();
    let mut t = PidTable::new(t0);
    let a = t.register(h1, 1, reg(100, 0), t0).unwrap();
    t.name(a, h1, 100, "Buffer").unwrap();
    t.name(a, h1, 100, "Server").unwrap();
    let b = t.register(h2, 2, reg(200, 0), t0).unwrap();
    assert_eq!(t.conn_closed(1), 1);
    assert!(t.lookup(a, t0).is_none());
    assert!(t.lookup_name("Buffer", t0).is_none());
    t.name(b, h2, 200, "Server").unwrap();
    // h1 back on connection 3.
    assert_eq!(t.register(h1, 3, reg(100, a), t0), Ok(a));
    t.name(a, h1, 100, "Buffer").unwrap();
    assert_eq!(t.name(a, h1, 100, "Server").unwrap_err().0, libc::EEXIST);
    assert_eq!(t.lookup_name("Buffer", t0).map(|r| r.pid_d), Some(a));
    assert_eq!(t.lookup_name("Server", t0).map(|r| r.pid_d), Some(b));
    // The old connection closing late takes nothing.
    assert_eq!(t.conn_closed(1), 0);
    assert_eq!(t.lookup(a, t0).map(|r| r.pid), Some(100));
}

/// `rejoin.rs`: the administrator frees a key while its owner is cut off;
/// the owner had claimed its keys on this referee before (a heartbeat
/// followed its claims), so its claim on coming back is refused and the
/// key stays free. A host that never finished claiming here is still
/// taken at its word.
#[test]
fn a_key_dropped_while_its_owner_was_away_stays_free() {
    let h2 = host(1);
    let t0 = Instant::now();
    let (mut hosts, mut keys) = (HostTable::default(), KeyTable::default());
    let k = (IpcKind::Msg, 0x4242);
    hosts.join(h2, 1, 2, t0);
    keys.get(k.0, k.1, CREAT, h2, (2, 1), t0);
    keys.commit(k.0, k.1, (3, 7), 1000, 2, 2);
    hosts.heartbeat(&h2, 2);
    // Cut off; its connection closes; the administrator frees the key.
    assert!(hosts.disconnected(&h2, 2));
    assert!(keys.conn_closed(2, t0).is_empty());
    assert_eq!(keys.drop_key(k.0, k.1).map(|r| r.len()), Some(0));
    // Back, on a new connection: it claims what it still has.
    hosts.join(h2, 1, 5, t0);
    let adopt = hosts.may_adopt(&h2);
    assert!(!adopt);
    assert_eq!(
        keys.claim(k.0, k.1, (3, 7), 1000, (h2, adopt), t0),
        Err(ClaimRefused::Freed)
    );
    assert!(!keys.knows(k.0, k.1));
    // A restarted referee has no word of it yet: it adopts the claim.
    let (mut hosts, mut keys) = (HostTable::default(), KeyTable::default());
    hosts.join(h2, 1, 1, t0);
    let adopt = hosts.may_adopt(&h2);
    assert_eq!(keys.claim(k.0, k.1, (3, 7), 1000, (h2, adopt), t0), Ok(()));
}

/// `rejoin.rs`: the owner of a key is cut off through a referee restart
/// and another host makes the key anew meanwhile; the owner's claim when
/// it comes back is refused, and the key stays the new maker's.
#[test]
fn a_host_cut_off_through_a_referee_restart_loses_a_key_made_again() {
    let (h2, h3) = (host(1), host(2));
    let t0 = Instant::now();
    // The restarted referee: only host 3 is back.
    let (mut hosts, mut keys) = (HostTable::default(), KeyTable::default());
    let k = (IpcKind::Shm, 0x5151);
    hosts.join(h3, 1, 3, t0);
    hosts.heartbeat(&h3, 3);
    let r = keys.get(k.0, k.1, CREAT, h3, (3, 1), t0);
    assert_eq!(replies(&r), [(3, 1, format!("owner {h3} id -1"))]);
    keys.commit(k.0, k.1, (8, 9), 1000, 3, 2);
    // Host 2 returns with the structure it made before the restart.
    hosts.join(h2, 1, 2, t0);
    let adopt = hosts.may_adopt(&h2);
    assert!(adopt, "the restarted referee never had host 2's claims");
    assert!(matches!(
        keys.claim(k.0, k.1, (3, 7), 1000, (h2, adopt), t0),
        Err(ClaimRefused::Taken(_))
    ));
    let r = keys.get(k.0, k.1, 0, h2, (2, 1), t0);
    assert_eq!(replies(&r), [(2, 1, format!("owner {h3} id 8"))]);
}
