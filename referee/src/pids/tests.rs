use super::*;

fn two_hosts() -> (SocketAddr, SocketAddr) {
    (
        "10.0.0.1:7100".parse().unwrap(),
        "10.0.0.2:7100".parse().unwrap(),
    )
}

fn reg(pid: i32, starttime: u64) -> Registration {
    Registration {
        pid_d: 0,
        pid,
        uid: 1000,
        starttime,
        mailbox: 5,
    }
}

#[test]
fn ids_count_up_and_are_never_reused() {
    let h: SocketAddr = "10.0.0.1:7100".parse().unwrap();
    let now = Instant::now();
    let mut t = PidTable::default();
    assert_eq!(t.register(h, 1, reg(100, 1), now), Ok(1));
    assert_eq!(t.register(h, 1, reg(101, 1), now), Ok(2));
    // The same process again keeps its pid_d.
    assert_eq!(t.register(h, 1, reg(100, 1), now), Ok(1));
    t.unregister(1, h, 100).unwrap();
    assert_eq!(t.register(h, 1, reg(100, 1), now), Ok(3));
    // A recycled pid (new start time) replaces the stale record.
    assert_eq!(t.register(h, 1, reg(101, 9), now), Ok(4));
    assert!(t.lookup(2, now).is_none());
    let r = t.lookup(4, now).unwrap();
    assert_eq!((r.host, r.pid, r.starttime, r.mailbox), (h, 101, 9, 5));
    assert_eq!(t.list(now).len(), 2);
}

#[test]
fn pages_cover_every_registration_once() {
    let h: SocketAddr = "10.0.0.1:7100".parse().unwrap();
    let now = Instant::now();
    let mut t = PidTable::default();
    for pid in 0..25 {
        t.register(h, 1, reg(100 + pid, 1), now).unwrap();
    }
    let (mut seen, mut after) = (Vec::new(), 0);
    loop {
        let (page, more) = t.page(after, 10, now);
        assert!(page.len() <= 10);
        seen.extend(page.iter().map(|r| r.pid_d));
        match page.last() {
            Some(r) if more => after = r.pid_d,
            _ => break,
        }
    }
    assert_eq!(seen, (1..=25).collect::<Vec<i64>>());
    // Exactly full pages: the last says no more.
    assert!(!t.page(20, 5, now).1);
    assert!(t.page(19, 5, now).1);
}

#[test]
fn unregister_needs_the_whole_triple() {
    let (h1, h2) = two_hosts();
    let now = Instant::now();
    let mut t = PidTable::default();
    let p = t.register(h1, 1, reg(100, 1), now).unwrap();
    assert_eq!(t.unregister(p, h2, 100).unwrap_err().0, libc::EPERM);
    assert_eq!(t.unregister(p, h1, 101).unwrap_err().0, libc::EPERM);
    assert_eq!(t.unregister(p + 1, h1, 100).unwrap_err().0, libc::ESRCH);
    assert!(t.lookup(p, now).is_some(), "a refused uregist removed it");
    t.unregister(p, h1, 100).unwrap();
    assert_eq!(t.unregister(p, h1, 100).unwrap_err().0, libc::ESRCH);
}

#[test]
fn pid_ds_never_wrap_and_restores_stay_in_range() {
    let h: SocketAddr = "10.0.0.1:7100".parse().unwrap();
    let start = Instant::now();
    let mut t = PidTable::new(start);
    let restore = |pid, pid_d| Registration {
        pid_d,
        ..reg(pid, 1)
    };
    for bad in [i64::MAX, MAX_PID_D + 1, -1, i64::MIN] {
        assert_eq!(
            t.register(h, 1, restore(100, bad), start).unwrap_err().0,
            libc::EINVAL,
            "restore of {bad}"
        );
    }
    // The largest id is taken; then the counter is exhausted, never
    // wrapped.
    assert_eq!(
        t.register(h, 1, restore(100, MAX_PID_D), start),
        Ok(MAX_PID_D)
    );
    assert_eq!(
        t.register(h, 1, reg(101, 1), start).unwrap_err().0,
        libc::EAGAIN
    );
    assert!(t.list(start).iter().all(|r| r.pid_d > 0));
    // After the restore window only ids the counter gave out return.
    let later = start + RESTORE_WINDOW + Duration::from_secs(1);
    let mut t = PidTable::new(start);
    let a = t.register(h, 1, reg(100, 1), start).unwrap();
    assert_eq!(t.conn_closed(1), 1);
    assert_eq!(t.register(h, 2, restore(100, a), later), Ok(a));
    assert_eq!(
        t.register(h, 2, restore(101, a + 1), later).unwrap_err().0,
        libc::EINVAL
    );
    assert_eq!(t.register(h, 2, reg(102, 1), later), Ok(a + 1));
}

#[test]
fn a_closed_connection_drops_its_records_and_restores_keep_ids() {
    let (h1, h2) = two_hosts();
    let now = Instant::now();
    let mut t = PidTable::default();
    let a = t.register(h1, 1, reg(100, 1), now).unwrap();
    let b = t.register(h2, 2, reg(200, 1), now).unwrap();
    assert_eq!(t.conn_closed(1), 1);
    assert!(t.lookup(a, now).is_none());
    assert!(t.lookup(b, now).is_some());
    // h1 joins again on connection 3 and restores its process.
    let mut r = reg(100, 1);
    r.pid_d = a;
    assert_eq!(t.register(h1, 3, r, now), Ok(a));
    // A restore of an id now taken is refused.
    let mut r = reg(300, 1);
    r.pid_d = b;
    assert_eq!(t.register(h1, 3, r, now).unwrap_err().0, libc::EEXIST);
    // A restore above the counter moves the counter past it.
    let mut r = reg(400, 1);
    r.pid_d = 50;
    assert_eq!(t.register(h1, 3, r, now), Ok(50));
    assert_eq!(t.register(h1, 3, reg(401, 1), now), Ok(51));
    assert_eq!(t.conn_closed(3), 3);
    assert_eq!(t.list(now).len(), 1);
}

#[test]
fn a_move_needs_the_token_and_keeps_id_and_names() {
    let (h1, h2) = two_hosts();
    let now = Instant::now();
    let mut t = PidTable::default();
    let a = t.register(h1, 1, reg(100, 1), now).unwrap();
    t.name(a, h1, 100, "Mover").unwrap();
    let moved = |pid| Registration {
        pid_d: a,
        pid,
        uid: 1000,
        starttime: 7,
        mailbox: 9,
    };
    assert_eq!(t.check_move(a, 5, 1000).unwrap_err().0, libc::EPERM);
    // No token yet; only the process itself gets one.
    assert_eq!(
        t.move_in(h2, 2, moved(200), 5, now).unwrap_err().0,
        libc::EPERM
    );
    assert_eq!(t.move_token(a, h2, 100, 5).unwrap_err().0, libc::EPERM);
    assert_eq!(t.move_token(a, h1, 100, 5), Ok(5));
    t.check_move(a, 5, 1000).unwrap();
    assert_eq!(t.check_move(a, 6, 1000).unwrap_err().0, libc::EPERM);
    assert_eq!(t.check_move(a, 5, 0).unwrap_err().0, libc::EPERM);
    // A wrong token, or another uid, takes nothing.
    assert_eq!(
        t.move_in(h2, 2, moved(200), 6, now).unwrap_err().0,
        libc::EPERM
    );
    let other_uid = Registration {
        uid: 0,
        ..moved(200)
    };
    assert_eq!(
        t.move_in(h2, 2, other_uid, 5, now).unwrap_err().0,
        libc::EPERM
    );
    assert_eq!(t.lookup(a, now).unwrap().host, h1);
    t.move_in(h2, 2, moved(200), 5, now).unwrap();
    let r = t.lookup(a, now).unwrap();
    assert_eq!((r.host, r.pid, r.starttime, r.mailbox), (h2, 200, 7, 9));
    assert_eq!(t.lookup_name("Mover", now).unwrap().pid_d, a);
    // The token is used up; the old process can no longer end it.
    assert_eq!(
        t.move_in(h2, 2, moved(201), 5, now).unwrap_err().0,
        libc::EPERM
    );
    assert_eq!(t.unregister(a, h1, 100).unwrap_err().0, libc::EPERM);
    assert_eq!(t.conn_closed(1), 0);
    // An aborted move leaves nothing to take.
    assert_eq!(t.move_token(a, h2, 200, 8), Ok(8));
    t.move_abort(a, h2, 200).unwrap();
    assert_eq!(
        t.move_in(h1, 1, moved(300), 8, now).unwrap_err().0,
        libc::EPERM
    );
    // The new host's link owns it now.
    assert_eq!(t.conn_closed(2), 1);
    assert!(t.lookup(a, now).is_none());
    assert!(t.lookup_name("Mover", now).is_none());
}

#[test]
fn names_are_unique_and_go_with_their_process() {
    let (h1, h2) = two_hosts();
    let now = Instant::now();
    let mut t = PidTable::default();
    let a = t.register(h1, 1, reg(100, 1), now).unwrap();
    let b = t.register(h2, 2, reg(200, 1), now).unwrap();
    t.name(a, h1, 100, "Buffer").unwrap();
    // Its holder may take it again; nobody else may.
    t.name(a, h1, 100, "Buffer").unwrap();
    assert_eq!(t.name(b, h2, 200, "Buffer").unwrap_err().0, libc::EEXIST);
    // Only the process itself names itself.
    assert_eq!(t.name(a, h2, 100, "Other").unwrap_err().0, libc::EPERM);
    assert_eq!(t.name(b + 1, h2, 200, "Other").unwrap_err().0, libc::ESRCH);
    for bad in ["", " Buffer", "a\nb", &"x".repeat(MAX_NAME + 1)] {
        assert_eq!(
            t.name(b, h2, 200, bad).unwrap_err().0,
            libc::EINVAL,
            "{bad:?}"
        );
    }
    t.name(b, h2, 200, "Philosopher[3]").unwrap();
    assert_eq!(t.lookup_name("Buffer", now).unwrap().pid_d, a);
    assert_eq!(t.release(b, h2, 200, "Buffer").unwrap_err().0, libc::EPERM);
    assert_eq!(t.release(b, h2, 200, "Nobody").unwrap_err().0, libc::ENOENT);
    // uregist takes a's names with it; a host's link, b's.
    t.unregister(a, h1, 100).unwrap();
    assert!(t.lookup_name("Buffer", now).is_none());
    t.name(b, h2, 200, "Buffer").unwrap();
    assert_eq!(t.names_page("", 10).0.len(), 2);
    t.release(b, h2, 200, "Buffer").unwrap();
    assert_eq!(
        t.names_page("", 10),
        (vec![("Philosopher[3]".to_string(), b)], false)
    );
    t.conn_closed(2);
    assert!(t.names_page("", 10).0.is_empty());
    // A bounded number per process.
    let c = t.register(h1, 3, reg(300, 1), now).unwrap();
    for i in 0..MAX_NAMES_PER_PID {
        t.name(c, h1, 300, &format!("n{i}")).unwrap();
    }
    assert_eq!(t.name(c, h1, 300, "one more").unwrap_err().0, libc::EAGAIN);
    // Pages go through every name once.
    let (p1, more) = t.names_page("", 10);
    assert!(more);
    let (p2, more) = t.names_page(&p1[9].0, 10);
    assert!(!more);
    assert_eq!(p1.len() + p2.len(), MAX_NAMES_PER_PID);
}
