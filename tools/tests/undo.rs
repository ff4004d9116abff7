//! `SEM_UNDO` of remote processes whose calls travel on several sessions
//! (issue #19, items 2 and 3): one undo context per process and owner,
//! threads of one process blocking and releasing each other with
//! `SEM_UNDO`, and a context lost to a partition reported as `ENOLINK`.
//! The programs are `libdipc/examples/c/undo_split.c` and `sem_undo.c`;
//! the set is created on host 1, every other process runs elsewhere.

mod common;

use common::{c_example, errno_name, require_namespaces, wait_for, Cluster};
use std::time::{Duration, Instant};

fn prog(name: &str) -> String {
    c_example(name).to_string_lossy().into_owned()
}

/// `GETVAL` and `GETNCNT` of semaphore `num`, as read on host 1 (the
/// owner): "VAL NCNT".
fn get(c: &Cluster, split: &str, key: &str, num: &str) -> String {
    c.exec_ok(1, &[split, "get", key, num]).trim().to_owned()
}

/// Item 2: a holder takes the lock with SEM_UNDO, a thread of it blocks on
/// the same owner (so its V travels on a second session), it releases the
/// lock, another process takes it, and the holder exits while a third
/// process waits for the lock. The holder's P and V cancel out: the third
/// process must not get in while the other holds the lock.
#[test]
fn sem_undo_of_a_process_on_several_sessions_is_undone_as_one() {
    require_namespaces();
    let c = Cluster::up(3);
    let split = prog("undo_split");
    let undo = prog("sem_undo");
    let key = "0x5d01";
    c.exec_ok(1, &[&split, "init", key]);
    let mut holder = c.spawn(3, &[&split, "holder", key]);
    holder.wait_for_stdout("released", Duration::from_secs(20));
    let mut other = c.spawn(2, &[&undo, "hold", key]);
    other.wait_for_stdout("held", Duration::from_secs(10));
    // The holder exits as soon as the third process waits for the lock.
    let mut third = c.spawn(1, &[&undo, "wait", key, "3000"]);
    let st = holder.wait(Duration::from_secs(15));
    assert!(st.success(), "holder: {}", holder.describe());
    let ended = Instant::now();
    // The holder's sessions on the owner end with it: its thread's P(1)
    // waits no more.
    let gone = wait_for(Duration::from_secs(10), || {
        get(&c, &split, key, "1") == "0 0"
    });
    assert!(
        gone.is_some(),
        "the holder's blocked P(1) still waits on the owner: {}",
        get(&c, &split, key, "1")
    );
    let st = third.wait(Duration::from_secs(15));
    assert!(
        !st.success() && third.stderr().contains("Resource temporarily unavailable"),
        "a third process got the lock {:?} after the holder exited, while another process \
         held it:\n{}",
        ended.elapsed(),
        third.describe()
    );
    assert_eq!(get(&c, &split, key, "0"), "0 0", "lock not held any more");
    // The other holder's exit gives the lock back.
    other.kill();
    let out = c.exec_ok(3, &[&undo, "wait", key, "10000"]);
    assert!(out.contains("got"), "{out}");
    c.exec_ok(1, &[&split, "rm", key]);
}

/// Threads of one remote process hand a token to each other through two
/// semaphores with SEM_UNDO, each blocking until the other releases it:
/// sessions of one undo context are served concurrently, so a thread
/// blocked in semop does not stop another's V. All adjustments cancel out.
#[test]
fn threads_block_and_release_each_other_with_sem_undo() {
    require_namespaces();
    let c = Cluster::up(2);
    let split = prog("undo_split");
    let key = "0x5d02";
    c.exec_ok(1, &[&split, "init", key]);
    let t = Instant::now();
    let mut p = c.spawn(2, &[&split, "pingpong", key, "300"]);
    let st = p.wait(Duration::from_secs(60));
    assert!(st.success(), "{}", p.describe());
    assert!(p.stdout().contains("done 300"), "{}", p.describe());
    eprintln!("300 hand-overs each way in {:?}", t.elapsed());
    assert_eq!(get(&c, &split, key, "0"), "1 0");
    assert_eq!(get(&c, &split, key, "1"), "0 0");
    c.exec_ok(1, &[&split, "rm", key]);
}

/// A forked child inherits no SEM_UNDO adjustments: its V is undone at
/// its own exit, the parent's P at the parent's.
#[test]
fn a_forked_child_has_its_own_sem_undo_adjustments() {
    require_namespaces();
    let c = Cluster::up(2);
    let split = prog("undo_split");
    let key = "0x5d04";
    c.exec_ok(1, &[&split, "init", key]);
    let mut p = c.spawn(2, &[&split, "fork", key]);
    let st = p.wait(Duration::from_secs(30));
    assert!(
        st.success() && p.stdout().contains("parent holds"),
        "{}",
        p.describe()
    );
    // The parent's exit undoes its P.
    let back = wait_for(Duration::from_secs(10), || {
        get(&c, &split, key, "0") == "1 0"
    });
    assert!(back.is_some(), "{}", get(&c, &split, key, "0"));
    c.exec_ok(1, &[&split, "rm", key]);
}

/// Item 3: the holder's host is cut off long enough for the owner to give
/// its sessions up, so the owner's kernel undoes its P and a waiter gets
/// the lock. After the link is mended, the holder's V must fail with
/// ENOLINK (its hold was revoked), not succeed silently on a fresh session.
#[test]
fn sem_undo_lost_to_a_partition_is_reported_as_enolink() {
    require_namespaces();
    let c = Cluster::up(3);
    let split = prog("undo_split");
    let undo = prog("sem_undo");
    let key = "0x5d03";
    c.exec_ok(1, &[&split, "init", key]);
    let fifo = c
        .scratch_dir("undo")
        .join(format!("v-{}", std::process::id()));
    let _ = std::fs::remove_file(&fifo);
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success(), "mkfifo {}", fifo.display());
    let fifo_s = fifo.to_string_lossy().into_owned();
    let mut a = c.spawn(3, &[&split, "hold_v", key, &fifo_s]);
    a.wait_for_stdout("held", Duration::from_secs(10));
    let mut b = c.spawn(2, &[&undo, "hold", key]);
    let blocked = wait_for(Duration::from_secs(10), || {
        get(&c, &split, key, "0") == "0 1"
    });
    assert!(blocked.is_some(), "B does not wait: {}", b.describe());

    let cut = Instant::now();
    c.set_link(3, false);
    let _ = wait_for(Duration::from_secs(40), || b.stdout().contains("held"));
    let took = cut.elapsed();
    c.set_link(3, true);
    assert!(
        b.stdout().contains("held"),
        "the owner kept the cut-off holder's P for {took:?}:\n{}",
        b.describe()
    );
    eprintln!("B got the lock {took:?} after the holder's host was cut off");
    c.wait_all_up(1, Duration::from_secs(20));

    // A, healed, releases the lock it believes it holds.
    std::fs::write(&fifo, "v\n").expect("write to the FIFO");
    let st = a.wait(Duration::from_secs(30));
    let _ = std::fs::remove_file(&fifo);
    assert!(
        !st.success() && errno_name(&a.stderr()).as_deref() == Some("ENOLINK"),
        "the holder's V after its P was undone should fail with ENOLINK:\n{}",
        a.describe()
    );
    eprintln!("the holder's V after healing:\n{}", a.stderr());
    // B still holds the lock.
    assert_eq!(get(&c, &split, key, "0"), "0 0");
    b.kill();
    c.exec_ok(1, &[&split, "rm", key]);
}
