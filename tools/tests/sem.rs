//! Distributed semaphore sets across simulated hosts: mutual exclusion,
//! SEM_UNDO on SIGKILL, atomic multi-semaphore operations (the dining
//! philosophers), semctl commands from a remote host, and removal while
//! callers block on several hosts.

mod common;

use common::blocked::Call;
use common::{c_example, require_namespaces, Cluster};
use std::time::{Duration, Instant};

fn prog(name: &str) -> String {
    c_example(name).to_string_lossy().into_owned()
}

#[test]
fn six_processes_on_three_hosts_count_to_6000() {
    require_namespaces();
    let c = Cluster::up(3);
    let counter = prog("sem_counter");
    c.exec_ok(2, &[&counter, "init", "0x5c01"]);
    let mut runs: Vec<_> = [1, 1, 2, 2, 3, 3]
        .iter()
        .map(|h| c.spawn(*h, &[&counter, "run", "0x5c01", "1000"]))
        .collect();
    for r in runs.iter_mut() {
        let st = r.wait(Duration::from_secs(180));
        assert!(st.success(), "{}", r.describe());
    }
    let got = c.exec_ok(3, &[&counter, "get", "0x5c01"]);
    assert_eq!(got.trim(), "6000");
    c.exec_ok(1, &[&counter, "rm", "0x5c01"]);
    assert!(c.dipcref_keys(1).is_empty(), "keys left after rm");
}

#[test]
fn sem_undo_of_a_killed_remote_process() {
    require_namespaces();
    let c = Cluster::up(3);
    let counter = prog("sem_counter");
    let undo = prog("sem_undo");
    c.exec_ok(1, &[&counter, "init", "0x5c02"]);
    let mut holder = c.spawn(3, &[&undo, "hold", "0x5c02"]);
    holder.wait_for_stdout("held", Duration::from_secs(10));
    // Not before: while the holder lives, the semaphore stays taken.
    let out = c.exec(1, &[&undo, "wait", "0x5c02", "500"]);
    assert!(
        !out.status.success(),
        "semaphore free while its holder lives"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Resource temporarily unavailable"),
        "{}",
        common::describe(&out)
    );
    let mut waiter = c.spawn(1, &[&undo, "wait", "0x5c02", "10000"]);
    // Host 1 owns the set: the waiter itself sleeps in its kernel.
    let (_, set) = c
        .ipcs(1, "sem")
        .into_iter()
        .find(|(key, _)| *key == 0x5c02)
        .unwrap_or_else(|| panic!("no set 0x5c02 on host 1: {:?}", c.ipcs(1, "sem")));
    c.wait_blocked(1, Call::SemOp, set, 1);
    assert!(
        waiter.running(),
        "waiter did not block: {}",
        waiter.describe()
    );
    let killed = Instant::now();
    holder.kill();
    let st = waiter.wait(Duration::from_secs(15));
    assert!(st.success(), "waiter: {}", waiter.describe());
    assert!(waiter.stdout().contains("got"));
    eprintln!(
        "waiter got the semaphore {:?} after the SIGKILL",
        killed.elapsed()
    );
    c.exec_ok(1, &[&counter, "rm", "0x5c02"]);
}

#[test]
fn dining_philosophers_across_hosts() {
    require_namespaces();
    let c = Cluster::up(3);
    let p = prog("philosophers");
    c.exec_ok(1, &[&p, "init", "0x5c03"]);
    let mut diners: Vec<_> = (0..5)
        .map(|i| c.spawn(i % 3 + 1, &[&p, "dine", "0x5c03", &i.to_string(), "100"]))
        .collect();
    for d in diners.iter_mut() {
        let st = d.wait(Duration::from_secs(180));
        assert!(st.success(), "{}", d.describe());
        assert!(d.stdout().contains("ate 100 meals"), "{}", d.describe());
    }
    c.exec_ok(2, &[&p, "rm", "0x5c03"]);
}

#[test]
fn semctl_and_semop_semantics_from_a_remote_host() {
    require_namespaces();
    let c = Cluster::up(2);
    let s = prog("sem_ctl");
    c.exec_ok(2, &[&s, "create", "0x5c04", "3"]);
    // Remote (host 1) and owner-local (host 2) callers see the same semantics.
    assert_eq!(c.exec_ok(1, &[&s, "check", "0x5c04"]).trim(), "ok");
    assert_eq!(c.exec_ok(2, &[&s, "check", "0x5c04"]).trim(), "ok");
    c.exec_ok(1, &[&s, "rm", "0x5c04"]);
    // The key is free again: a get without create fails, a create succeeds.
    let out = c.exec(1, &[&s, "ncnt", "0x5c04"]);
    assert!(!out.status.success(), "set still there after IPC_RMID");
    c.exec_ok(1, &[&s, "create", "0x5c04", "3"]);
    let keys = c.dipcref_keys(2);
    assert_eq!(keys.len(), 1, "{keys:?}");
    c.exec_ok(1, &[&s, "rm", "0x5c04"]);
}

#[test]
fn removal_wakes_blocked_callers_on_every_host_with_eidrm() {
    require_namespaces();
    let c = Cluster::up(3);
    let s = prog("sem_ctl");
    let undo = prog("sem_undo");
    c.exec_ok(2, &[&s, "create", "0x5c05", "1"]);
    let mut waiters = [
        c.spawn(1, &[&undo, "wait", "0x5c05", "60000"]),
        c.spawn(2, &[&undo, "wait", "0x5c05", "60000"]),
        c.spawn(3, &[&undo, "wait", "0x5c05", "60000"]),
    ];
    // All three block: GETNCNT on the owner counts them.
    let counted = common::wait_for(Duration::from_secs(10), || {
        c.exec(2, &[&s, "ncnt", "0x5c05"]).stdout.starts_with(b"3")
    });
    assert!(counted.is_some(), "three waiters never blocked");
    c.exec_ok(3, &[&s, "rm", "0x5c05"]);
    for w in waiters.iter_mut() {
        let st = w.wait(Duration::from_secs(15));
        assert!(!st.success(), "{}", w.describe());
        assert!(
            w.stderr().contains("Identifier removed"),
            "{}",
            w.describe()
        );
    }
    assert!(c.dipcref_keys(1).is_empty());
}
