//! Distributed shared memory across simulated hosts: strict consistency in
//! page and segment mode (a writer and two readers, a lock-free
//! flag-and-data handoff), writers of different pages on different hosts
//! at once, shm_nattch over every host and IPC_RMID, SIGBUS when a
//! writer's host or the owner dies, permissions, and a parallel Jacobi
//! iteration on three hosts that must equal a single-process run.

mod common;

use common::{as_nobody, c_example, describe, require_namespaces, wait_for, Cluster};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

fn prog(name: &str) -> String {
    c_example(name).to_string_lossy().into_owned()
}

/// Whether a program run through `tools/cluster exec` died of `sig` (the
/// wrapper shell reports it as 128 + sig).
fn died_of(st: ExitStatus, sig: i32) -> bool {
    st.signal() == Some(sig) || st.code() == Some(128 + sig)
}

const SIZE: &str = "20480";

fn consistency(c: &Cluster, key: &str, n: &str) {
    let prog_path = prog("shm_consistency");
    let t = prog_path.as_str();
    // Host 2 creates the segment (and owns it).
    let owner = c.exec_ok(2, &[&prog("shm_touch"), key, SIZE, "-", "stat"]);
    assert!(owner.contains("segsz 20480"), "{owner}");
    let mut readers = [
        c.spawn(2, &[t, "reader", key, n]),
        c.spawn(3, &[t, "reader", key, n]),
    ];
    let mut writer = c.spawn(1, &[t, "writer", key, n]);
    let st = writer.wait(Duration::from_secs(120));
    assert!(st.success(), "{}", writer.describe());
    for r in readers.iter_mut() {
        let st = r.wait(Duration::from_secs(120));
        assert!(st.success(), "{}", r.describe());
        assert!(
            r.stdout().contains(&format!("read up to {n}")),
            "{}",
            r.describe()
        );
    }
    // Handoff: the receiver must see the whole data page of each round once
    // it sees the round's flag.
    let mut recv = c.spawn(3, &[t, "handoff-recv", key, "100"]);
    let mut send = c.spawn(1, &[t, "handoff-send", key, "100"]);
    for p in [&mut send, &mut recv] {
        let st = p.wait(Duration::from_secs(120));
        assert!(st.success(), "{}", p.describe());
    }
    c.exec_ok(3, &[t, "rm", key]);
}

#[test]
fn strict_consistency_in_page_mode() {
    require_namespaces();
    let c = Cluster::up(3);
    consistency(&c, "0x5d01", "200000");
}

#[test]
fn strict_consistency_in_segment_mode() {
    require_namespaces();
    let c = Cluster::up_with(3, &["--shm-mode", "segment"]);
    consistency(&c, "0x5d02", "200000");
}

fn dipcref_shm(c: &Cluster, host: usize) -> serde_json::Value {
    let out = c.exec_ok(host, &["dipcref", "shm", "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("dipcref shm --json: {e}: {out}"))
}

#[test]
fn writers_on_different_hosts_hold_different_pages_at_once() {
    require_namespaces();
    let c = Cluster::up(3);
    let touch = prog("shm_touch");
    c.exec_ok(2, &[&touch, "0x5d03", SIZE, "-", "stat"]);
    let mut w1 = c.spawn(1, &[&touch, "0x5d03", SIZE, "0", "hold", "11"]);
    let mut w3 = c.spawn(3, &[&touch, "0x5d03", SIZE, "1", "hold", "33"]);
    w1.wait_for_stdout("held", Duration::from_secs(20));
    w3.wait_for_stdout("held", Duration::from_secs(20));
    let v = dipcref_shm(&c, 2);
    let seg = &v["segments"][0];
    assert_eq!(seg["nattch"], 2, "{v}");
    let writer_of = |unit: u64| -> Option<String> {
        seg["runs"].as_array()?.iter().find_map(|r| {
            let first = r["first"].as_u64()?;
            let count = r["count"].as_u64()?;
            (first <= unit && unit < first + count)
                .then(|| r["writer"].as_str().map(str::to_owned))
                .flatten()
        })
    };
    assert!(
        writer_of(0).is_some_and(|w| w.starts_with("10.66.0.1:")),
        "{v}"
    );
    assert!(
        writer_of(1).is_some_and(|w| w.starts_with("10.66.0.3:")),
        "{v}"
    );
    // Both kept their pages: neither write was taken away by the other.
    assert!(w1.running() && w3.running());
    // A reader elsewhere sees both values.
    assert_eq!(
        c.exec_ok(2, &[&touch, "0x5d03", SIZE, "0", "read"]).trim(),
        "11"
    );
    assert_eq!(
        c.exec_ok(2, &[&touch, "0x5d03", SIZE, "1", "read"]).trim(),
        "33"
    );
    w1.kill();
    w3.kill();
}

#[test]
fn nattch_counts_every_host_and_rmid_frees_after_the_last_detach() {
    require_namespaces();
    let c = Cluster::up(3);
    let touch = prog("shm_touch");
    c.exec_ok(2, &[&touch, "0x5d04", SIZE, "-", "stat"]);
    let mut a = c.spawn(1, &[&touch, "0x5d04", SIZE, "0", "hold", "5"]);
    let mut b = c.spawn(3, &[&touch, "0x5d04", SIZE, "1", "hold", "6"]);
    a.wait_for_stdout("held", Duration::from_secs(20));
    b.wait_for_stdout("held", Duration::from_secs(20));
    for host in [1, 2, 3] {
        let st = c.exec_ok(host, &[&touch, "0x5d04", SIZE, "-", "stat"]);
        assert!(st.contains("nattch 2"), "host {host}: {st}");
    }
    // Removed from a third host: the key is free at once everywhere, the
    // memory stays while attached.
    c.exec_ok(3, &[&prog("shm_consistency"), "rm", "0x5d04"]);
    assert!(c.dipcref_keys(1).is_empty(), "key left after IPC_RMID");
    assert!(a.running() && b.running());
    a.kill();
    b.kill();
    // The last detach frees the owner's segment (its manager lets go).
    let gone = wait_for(Duration::from_secs(10), || {
        let out = c.exec_ok(2, &["ipcs", "-m"]);
        !out.lines().any(|l| l.contains(" 20480 "))
    });
    assert!(
        gone.is_some(),
        "segment still there: {}",
        c.exec_ok(2, &["ipcs", "-m"])
    );
}

#[test]
fn a_dead_writer_loses_its_page_and_readers_get_sigbus() {
    require_namespaces();
    let c = Cluster::up(3);
    let touch = prog("shm_touch");
    c.exec_ok(2, &[&touch, "0x5d05", SIZE, "1", "write", "77"]);
    let mut w = c.spawn(1, &[&touch, "0x5d05", SIZE, "0", "hold", "42"]);
    w.wait_for_stdout("held", Duration::from_secs(20));
    w.kill();
    let out = c.exec(3, &[&touch, "0x5d05", SIZE, "0", "read"]);
    assert!(died_of(out.status, libc::SIGBUS), "{}", describe(&out));
    // Pages the dead process did not hold for write are intact.
    assert_eq!(
        c.exec_ok(3, &[&touch, "0x5d05", SIZE, "1", "read"]).trim(),
        "77"
    );
    let st = c.exec_ok(3, &[&touch, "0x5d05", SIZE, "-", "stat"]);
    assert!(st.contains("nattch 0"), "{st}");
    let v = dipcref_shm(&c, 1);
    assert_eq!(v["segments"][0]["runs"][0]["lost"], true, "{v}");
}

#[test]
fn a_lost_owner_gives_sigbus_not_a_hang() {
    require_namespaces();
    let c = Cluster::up(3);
    let touch = prog("shm_touch");
    c.exec_ok(2, &[&touch, "0x5d06", SIZE, "-", "stat"]);
    let mut r = c.spawn(1, &[&touch, "0x5d06", SIZE, "3", "read-after", "2000"]);
    r.wait_for_stdout("attached", Duration::from_secs(20));
    c.stop(2);
    let st = r.wait(Duration::from_secs(60));
    assert!(died_of(st, libc::SIGBUS), "{}", r.describe());
}

#[test]
fn attach_checks_the_callers_permissions() {
    require_namespaces();
    let c = Cluster::up(3);
    let touch = prog("shm_touch");
    c.exec_ok(2, &[&touch, "0x5d07", SIZE, "-", "create-private"]);
    // On another host the manager refuses the attach; on the owner the
    // kernel already refuses the get.
    for host in [1, 2] {
        let args = as_nobody(&[&touch, "0x5d07", SIZE, "0", "read"]);
        let out = c.exec(host, &args);
        assert!(
            !out.status.success()
                && String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
            "host {host}: {}",
            describe(&out)
        );
    }
    // Root may.
    assert_eq!(
        c.exec_ok(1, &[&touch, "0x5d07", SIZE, "0", "read"]).trim(),
        "0"
    );
}

#[test]
fn jacobi_on_three_hosts_equals_one_process() {
    require_namespaces();
    let c = Cluster::up(3);
    let jacobi = prog("jacobi");
    let mut ranks: Vec<_> = (0..3)
        .map(|r| {
            let rank = r.to_string();
            c.spawn(r + 1, &[&jacobi, "0x5d08", "3", &rank, "64", "40"])
        })
        .collect();
    for r in ranks.iter_mut() {
        let st = r.wait(Duration::from_secs(300));
        assert!(st.success(), "{}", r.describe());
    }
    assert!(
        ranks[0].stdout().contains("jacobi: identical"),
        "{}",
        ranks[0].describe()
    );
    assert!(c.dipcref_keys(2).is_empty(), "keys left after the run");
}
