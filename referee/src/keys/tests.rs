use super::*;

const CREAT: i32 = libc::IPC_CREAT;
const EXCL: i32 = libc::IPC_CREAT | libc::IPC_EXCL;

fn errno(m: &Message) -> i32 {
    match m {
        Message::Error { errno, .. } => *errno,
        _ => 0,
    }
}

#[test]
fn race_has_one_creator_and_excl_losers_get_eexist() {
    let (h1, h2, h3) = (
        "10.0.0.1:7100".parse().unwrap(),
        "10.0.0.2:7100".parse().unwrap(),
        "10.0.0.3:7100".parse().unwrap(),
    );
    let now = Instant::now();
    let mut t = KeyTable::default();
    assert_eq!(
        errno(&t.get(IpcKind::Msg, 5, 0, h1, (1, 1), now)[0].2),
        libc::ENOENT
    );
    let r = t.get(IpcKind::Msg, 5, EXCL, h1, (1, 2), now);
    assert!(matches!(r[0].2, Message::KeyOwner { id: -1, .. }));
    assert!(t.get(IpcKind::Msg, 5, EXCL, h2, (2, 1), now).is_empty());
    assert!(t.get(IpcKind::Msg, 5, CREAT, h3, (3, 1), now).is_empty());
    let r = t.commit(IpcKind::Msg, 5, (42, 7), 1000, 1, 3);
    assert_eq!(r.len(), 3);
    assert_eq!(errno(&r[0].2), libc::EEXIST);
    assert!(matches!(
        r[1].2,
        Message::KeyOwner { id: 42, owner, origin: Origin { key: 5, incarnation: 7 }, .. }
            if owner == h1
    ));
    assert!(matches!(r[2].2, Message::Done { .. }));
    // Another kind with the same key is another structure.
    assert_eq!(
        errno(&t.get(IpcKind::Sem, 5, 0, h1, (1, 9), now)[0].2),
        libc::ENOENT
    );
    assert_eq!(t.list(now).len(), 1);
    assert_eq!(t.remove(IpcKind::Msg, 5, (41, 7), h1), Removal::NoSuchEntry);
    // The same id in another incarnation of the owner is another queue.
    assert_eq!(t.remove(IpcKind::Msg, 5, (42, 8), h1), Removal::NoSuchEntry);
    // Only the owner's dipcd can tell that the queue is gone.
    assert_eq!(
        t.remove(IpcKind::Msg, 5, (42, 8), h2),
        Removal::NotOwner(h1)
    );
    assert_eq!(
        t.remove(IpcKind::Msg, 5, (42, 7), h2),
        Removal::NotOwner(h1)
    );
    assert_eq!(t.list(now).len(), 1);
    assert_eq!(t.list(now)[0].incarnation, 7);
    // IPC_EXCL on a key already made gets its owner: the asker checks
    // there that the queue still exists (then EEXIST) or had it freed.
    assert!(matches!(
        t.get(IpcKind::Msg, 5, EXCL, h3, (3, 2), now)[0].2,
        Message::KeyOwner { id: 42, .. }
    ));
    assert_eq!(t.remove(IpcKind::Msg, 5, (42, 7), h1), Removal::Removed);
    assert!(t.list(now).is_empty());
}

#[test]
fn pages_cover_every_key_once_in_order() {
    let h1: SocketAddr = "10.0.0.1:7100".parse().unwrap();
    let now = Instant::now();
    let mut t = KeyTable::default();
    let mut want = Vec::new();
    for kind in [IpcKind::Msg, IpcKind::Shm] {
        for key in [-3, 1, 7, 9, 100] {
            t.get(kind, key, CREAT, h1, (1, (key + 10) as u64), now);
            t.commit(kind, key, (1, 1), 0, 1, (key + 10) as u64);
            want.push((kind, key));
        }
    }
    // One creation not yet committed is not listed.
    t.get(IpcKind::Sem, 4, CREAT, h1, (1, 99), now);
    let (mut seen, mut after) = (Vec::new(), None);
    loop {
        let (page, more) = t.page(after, 3, now);
        seen.extend(page.iter().map(|k| (k.kind, k.key)));
        match page.last() {
            Some(k) if more => after = Some((k.kind, k.key)),
            _ => break,
        }
    }
    assert_eq!(seen, want);
}

#[test]
fn ipc_private_and_negative_ids_are_refused() {
    let h1 = "10.0.0.1:7100".parse().unwrap();
    let now = Instant::now();
    let mut t = KeyTable::default();
    for flags in [0, CREAT, EXCL] {
        let r = t.get(IpcKind::Shm, libc::IPC_PRIVATE, flags, h1, (1, 1), now);
        assert_eq!(errno(&r[0].2), libc::EINVAL);
    }
    assert!(t.list(now).is_empty());
    // A grant committed with -1 (or any negative id) stays pending:
    // it is never recorded as the key's structure.
    t.get(IpcKind::Msg, 0x7a7a, CREAT, h1, (1, 2), now);
    for bad in [-1, i32::MIN] {
        let r = t.commit(IpcKind::Msg, 0x7a7a, (bad, 1), 1000, 1, 3);
        assert_eq!(errno(&r[0].2), libc::EINVAL);
    }
    assert!(t.list(now).is_empty());
    // Its creator may still commit the real one.
    let r = t.commit(IpcKind::Msg, 0x7a7a, (7, 1), 1000, 1, 4);
    assert!(matches!(r[0].2, Message::Done { .. }));
    assert_eq!(t.list(now).len(), 1);
}

#[test]
fn claims_fill_gaps_and_never_displace_an_entry() {
    let (h1, h2): (SocketAddr, SocketAddr) = (
        "10.0.0.1:7100".parse().unwrap(),
        "10.0.0.2:7100".parse().unwrap(),
    );
    let now = Instant::now();
    let mut t = KeyTable::default();
    // A restarted referee takes a host's word for a key it lacks.
    assert_eq!(
        t.claim(IpcKind::Msg, 5, (42, 7), 1000, (h1, true), now),
        Ok(())
    );
    assert!(matches!(
        t.get(IpcKind::Msg, 5, 0, h2, (2, 1), now)[0].2,
        Message::KeyOwner { id: 42, owner, origin: Origin { incarnation: 7, .. }, .. }
            if owner == h1
    ));
    // The same claim again (a rejoin) is fine.
    assert_eq!(
        t.claim(IpcKind::Msg, 5, (42, 7), 1000, (h1, false), now),
        Ok(())
    );
    // Another host's structure, or another of the owner, does not
    // displace it, adoptable or not.
    for (id, inc, from) in [(42, 7, h2), (43, 7, h1), (42, 8, h1)] {
        for adopt in [true, false] {
            assert!(matches!(
                t.claim(IpcKind::Msg, 5, (id, inc), 0, (from, adopt), now),
                Err(ClaimRefused::Taken(_))
            ));
        }
    }
    assert_eq!(t.list(now).len(), 1);
    assert_eq!(t.list(now)[0].owner, h1);
    // A key being created is not taken over either.
    t.get(IpcKind::Sem, 6, CREAT, h2, (2, 2), now);
    assert!(matches!(
        t.claim(IpcKind::Sem, 6, (1, 7), 0, (h1, true), now),
        Err(ClaimRefused::Taken(_))
    ));
    // A key missing from the table of a referee that already had this
    // host's claims was freed meanwhile: it stays free.
    assert_eq!(
        t.claim(IpcKind::Shm, 9, (3, 7), 0, (h1, false), now),
        Err(ClaimRefused::Freed)
    );
    assert!(!t.knows(IpcKind::Shm, 9));
    // Nothing names IPC_PRIVATE or a negative id.
    for (key, id) in [(libc::IPC_PRIVATE, 3), (10, -1)] {
        assert!(matches!(
            t.claim(IpcKind::Shm, key, (id, 7), 0, (h1, true), now),
            Err(ClaimRefused::Taken(_))
        ));
    }
    assert!(t.knows(IpcKind::Msg, 5) && t.knows(IpcKind::Sem, 6));
}

#[test]
fn vanished_creator_hands_creation_to_a_waiter() {
    let (h1, h2) = (
        "10.0.0.1:7100".parse().unwrap(),
        "10.0.0.2:7100".parse().unwrap(),
    );
    let now = Instant::now();
    let mut t = KeyTable::default();
    t.get(IpcKind::Sem, 7, CREAT, h1, (1, 1), now);
    assert!(t.get(IpcKind::Sem, 7, CREAT, h2, (2, 1), now).is_empty());
    let r = t.conn_closed(1, now);
    assert_eq!(r.len(), 1);
    assert!(matches!(r[0], (2, 1, Message::KeyOwner { id: -1, owner, .. }) if owner == h2));
    let r = t.expire(now + Duration::from_secs(10), Duration::from_secs(1));
    assert!(r.is_empty());
    assert!(t.list(now).is_empty());
}
