//! Integration tests: an id a process got stays bound to the structure its
//! key named. After the owner host reboots (a fresh IPC namespace numbers
//! its structures from the start again) or after the key was freed, a call
//! on the old id fails with `EIDRM` and reaches nothing else; and removing
//! a structure frees its key even when the remover may not read it.
//!
//! Real `dipcd` daemons on simulated hosts (see `tools/cluster`), with
//! `dipc-msg` and the C program `libdipc/examples/c/stale_hold.c` as the
//! applications. They need root and `ip netns`; where those are missing
//! they fail, never skip.

mod common;

use common::hold::*;
use common::*;
use std::time::Duration;

/// Host 2 owns a queue, a semaphore set and a segment; processes on host 3
/// hold their ids. Host 2 reboots and makes new structures, which get the
/// very same ids (asserted: else the test would prove nothing): another
/// key's queue, set and segment, and the first queue's key again. Every
/// held id then fails with EIDRM, and nothing reached the new structures.
#[test]
fn ids_from_before_the_owners_reboot_reach_nothing() {
    let c = Cluster::up(3);
    let q = create(&c, 2, "msg", "0xa3");
    let q2 = create(&c, 2, "msg", "0xa4");
    let s = create(&c, 2, "sem", "0xa5");
    let m = create(&c, 2, "shm", "0xa6");
    let trigger = c.scratch_dir("stale").join("reboot");
    let mut hq = hold(&c, 3, "msg", "0xa3", &trigger);
    let mut hq2 = hold(&c, 3, "msg", "0xa4", &trigger);
    let mut hs = hold(&c, 3, "sem", "0xa5", &trigger);
    let mut hm = hold(&c, 3, "shm", "0xa6", &trigger);
    assert_eq!(count(&c, 2, "msg", "0xa3"), 1);

    c.reboot(2);
    // The fresh namespace has none of the old structures...
    c.exec_err(2, &["dipc-msg", "get", "0xa3", "--local"], &["ENOENT"]);
    // ...and numbers new ones as the old were numbered.
    assert_eq!(
        create(&c, 2, "msg", "0xb0"),
        q,
        "0xb0 must get 0xa3's old id"
    );
    assert_eq!(
        create(&c, 2, "msg", "0xa4"),
        q2,
        "0xa4 again must get its old id"
    );
    assert_eq!(
        create(&c, 2, "sem", "0xb5"),
        s,
        "0xb5 must get 0xa5's old id"
    );
    assert_eq!(
        create(&c, 2, "shm", "0xb6"),
        m,
        "0xb6 must get 0xa6's old id"
    );

    let after = call_again(&trigger, &mut [&mut hq, &mut hq2, &mut hs, &mut hm]);
    for (what, got) in ["msg 0xa3", "msg 0xa4", "sem 0xa5", "shm 0xa6"]
        .iter()
        .zip(&after)
    {
        assert_eq!(
            *got,
            eidrm(),
            "a call on {what}'s id from before host 2's reboot must fail with EIDRM"
        );
    }
    assert_eq!(count(&c, 2, "msg", "0xb0"), 0, "a message reached 0xb0");
    assert_eq!(
        count(&c, 2, "msg", "0xa4"),
        0,
        "a message reached the new 0xa4"
    );
    assert_eq!(count(&c, 2, "sem", "0xb5"), 0, "a semop reached 0xb5");
    assert_eq!(count(&c, 3, "shm", "0xb6"), 0, "an attach reached 0xb6");

    // A get from before the reboot's key finds it gone, and it can be made
    // again (here by host 3).
    c.exec_err(3, &["dipc-msg", "get", "0xa3"], &["ENOENT"]);
    c.exec_ok(3, &["dipc-msg", "get", "0xa3", "--create", "--excl"]);
    c.exec_ok(1, &["dipc-msg", "send", "0xa3", "1", "new"]);
    assert_eq!(count(&c, 3, "msg", "0xa3"), 1);
    // The new structures work from everywhere.
    c.exec_ok(3, &["dipc-msg", "send", "0xb0", "1", "fresh"]);
    assert_eq!(count(&c, 2, "msg", "0xb0"), 1);
}

/// Host 2 owns a queue that a process on host 3 holds; host 2 dies, the
/// administrator frees the key (`dipcref rm-key`), host 1 makes a queue of
/// that key, and host 2 comes back with the old queue still in its kernel
/// (same IPC namespace). The held id must not reach that orphan: EIDRM.
#[test]
fn ids_of_a_key_freed_by_the_administrator_reach_nothing() {
    let c = Cluster::up(3);
    create(&c, 2, "msg", "0xc3");
    let trigger = c.scratch_dir("stale").join("rm-key");
    let mut h = hold(&c, 3, "msg", "0xc3", &trigger);

    c.stop(2);
    let down = wait_for(Duration::from_secs(10), || {
        c.host_state(1, &host_addr(2)).as_deref() == Some("down")
    });
    assert!(
        down.is_some(),
        "host 2 not down: {:#?}",
        c.try_dipcref_hosts(1)
    );
    c.exec_ok(1, &["dipcref", "rm-key", "msg", "0xc3"]);
    create(&c, 1, "msg", "0xc3");
    c.start(2);
    // The orphan is still there, with its message.
    let orphan = c.exec_ok(2, &["dipc-msg", "stat", "0xc3", "--local", "--json"]);
    assert!(
        orphan.contains("\"qnum\":1"),
        "host 2 lost its orphan queue: {orphan}"
    );

    let after = call_again(&trigger, &mut [&mut h]);
    assert_eq!(
        after[0],
        eidrm(),
        "a call on an id of a freed key must fail with EIDRM"
    );
    let orphan = c.exec_ok(2, &["dipc-msg", "stat", "0xc3", "--local", "--json"]);
    assert!(
        orphan.contains("\"qnum\":1"),
        "a message reached host 2's orphan queue: {orphan}"
    );
    assert_eq!(
        count(&c, 1, "msg", "0xc3"),
        0,
        "a message reached the new 0xc3"
    );
    // The key's new queue works from host 3.
    c.exec_ok(3, &["dipc-msg", "send", "0xc3", "1", "new"]);
    assert_eq!(count(&c, 1, "msg", "0xc3"), 1);
}

/// A queue of mode 000, owned by nobody, removed by nobody from another
/// host: nobody may remove it (owner) but not read it, and its key is
/// freed all the same, so an exclusive creation succeeds at once on every
/// host.
#[test]
fn removing_an_unreadable_structure_frees_its_key() {
    let c = Cluster::up(3);
    for (key, owner, remover) in [("0xd3", 2, 3), ("0xd4", 2, 2)] {
        c.exec_ok(
            owner,
            &as_nobody(&["dipc-msg", "get", key, "--create", "--mode", "000"]),
        );
        c.exec_err(remover, &as_nobody(&["dipc-msg", "stat", key]), &["EACCES"]);
        c.exec_ok(remover, &as_nobody(&["dipc-msg", "rm", key]));
        let keys = c.dipcref_keys(1);
        assert!(
            keys.iter().all(|k| k.key != key),
            "{key}, removed from host {remover}, is still registered: {keys:#?}"
        );
        for h in 1..=3 {
            c.exec_err(h, &["dipc-msg", "get", key], &["ENOENT"]);
        }
        c.exec_ok(1, &["dipc-msg", "get", key, "--create", "--excl"]);
    }
}

/// Host 2 holds a placeholder for host 1's queue when it reboots. In its
/// fresh namespace an application makes a queue before dipcd starts, and
/// gets the placeholder's old id (asserted). The starting dipcd must
/// leave that queue alone: the placeholders it remembers were in the old
/// namespace.
#[test]
fn a_rebooted_host_keeps_what_its_applications_made_before_dipcd() {
    let c = Cluster::up(2);
    create(&c, 1, "msg", "0xe1");
    let placeholder = c.exec_ok(2, &["dipc-msg", "get", "0xe1"]);
    c.reboot_with(2, || {
        let id = c.exec_ok(2, &["dipc-msg", "get", "0xe2", "--create", "--local"]);
        assert_eq!(
            id.trim(),
            placeholder.trim(),
            "the new queue must get the old placeholder's id"
        );
        c.exec_ok(2, &["dipc-msg", "send", "0xe2", "1", "mine", "--local"]);
    });
    let st = c.exec_ok(2, &["dipc-msg", "stat", "0xe2", "--local", "--json"]);
    assert!(st.contains("\"qnum\":1"), "0xe2 lost its message: {st}");
    // And host 1's queue is reachable again, through a new placeholder.
    c.exec_ok(2, &["dipc-msg", "send", "0xe1", "1", "again"]);
    assert_eq!(count(&c, 1, "msg", "0xe1"), 1);
}
