//! Integration tests: a referee restart and hosts that were away (#19
//! item 4). The referee keeps its tables in memory only; the hosts claim
//! the keys they own when they join, and check their placeholders, so a
//! restarted referee knows every key again before it answers for one, and
//! a host that was cut off while a key was freed drops its placeholder.
//!
//! Real `dipcd` daemons on simulated hosts (see `tools/cluster`), with the
//! C program `libdipc/examples/c/stale_hold.c` as the application. They
//! need root and `ip netns`; where those are missing they fail, never
//! skip.

mod common;

use common::hold::*;
use common::*;
use std::time::Duration;

const KINDS: [&str; 3] = ["msg", "sem", "shm"];

/// How long a host that was away may take to be seen up again, and to
/// finish what it does when it joins.
const REJOIN: Duration = Duration::from_secs(20);

/// What `stale_hold count` reads after `calls` calls of `stale_hold`
/// (each sends a message, adds 1 to semaphore 0, or attaches and
/// detaches).
fn counted(kind: &str, calls: i64) -> i64 {
    if kind == "shm" {
        0
    } else {
        calls
    }
}

/// Waits until the referee (host 1) has host `i` down.
fn wait_down(c: &Cluster, i: usize) {
    let down = wait_for(Duration::from_secs(15), || {
        c.host_state(1, &host_addr(i)).as_deref() == Some("down")
    });
    assert!(
        down.is_some(),
        "host {i} not down: {:#?}",
        c.try_dipcref_hosts(1)
    );
}

/// Mends host `i`'s cable and waits until the host is up again and has
/// logged that the referee refused its claim of a key.
fn mend_and_see_claim_refused(c: &Cluster, i: usize) {
    c.set_link(i, true);
    c.wait_all_up(1, REJOIN);
    let refused = wait_for(REJOIN, || c.log(i).contains("is no longer this host's"));
    assert!(
        refused.is_some(),
        "host {i} did not report its refused claim:\n{}",
        c.log(i)
    );
}

/// Host 2 owns queues, semaphore sets and segments. Right after the
/// referee restarts (its settle period included), host 3 finds the first
/// of each kind with a get without IPC_CREAT (ENOENT before), a get with
/// IPC_CREAT of the second gets host 2's (before: a second structure of
/// the key, on host 3), and IPC_EXCL of the third gets EEXIST (before: it
/// made one). Each symptom has keys of its own, and every failure is
/// reported at the end, so that one does not hide the others.
#[test]
fn a_restarted_referee_knows_every_key_again() {
    let c = Cluster::up(3);
    let keyset = |first: i32| KINDS.map(|kind| (kind, format!("{:#x}", first + kind_index(kind))));
    let (plain, creat, excl) = (keyset(0x4c1), keyset(0x4c4), keyset(0x4c7));
    for (kind, key) in plain.iter().chain(&creat).chain(&excl) {
        create(&c, 2, kind, key);
    }
    let before = c.dipcref_keys(1);
    assert_eq!(before.len(), 9, "{before:#?}");

    c.restart_referee(&[]);
    let mut problems = Vec::new();
    for (kind, key) in &plain {
        let out = c.exec(3, &[&hold_prog(), "count", kind, key]);
        if !out.status.success() {
            problems.push(format!("get of {kind} {key}: {}", describe(&out)));
        }
    }
    for (kind, key) in &creat {
        let out = c.exec(3, &[&hold_prog(), "open", kind, key]);
        let id = String::from_utf8_lossy(&out.stdout).trim().parse::<i32>();
        let Ok(id) = id else {
            problems.push(format!("IPC_CREAT of {kind} {key}: {}", describe(&out)));
            continue;
        };
        let k = i32::from_str_radix(&key[2..], 16).unwrap_or_else(|e| panic!("{key}: {e}"));
        let mine = c.ipcs(3, kind);
        if mine.iter().any(|(have, _)| *have == k) {
            problems.push(format!(
                "IPC_CREAT of {kind} {key} on host 3 made a second one there: {mine:?}"
            ));
        }
        // The id stands for host 2's structure: a call through it lands
        // there.
        let called = call(&c, 3, kind, id);
        let there = count(&c, 2, kind, key);
        if called != "ok" || there != counted(kind, 1) {
            problems.push(format!(
                "a call on {kind} {key} (id {id}) from host 3: {called}, host 2's reads {there}"
            ));
        }
    }
    for (kind, key) in &excl {
        let out = c.exec(3, &[&hold_prog(), "create", kind, key]);
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !err.contains("File exists") {
            problems.push(format!(
                "IPC_EXCL of {kind} {key} on host 3 must fail with EEXIST: {}",
                describe(&out)
            ));
        }
    }
    let after = c.dipcref_keys(1);
    for k in &before {
        let same = |a: &KeyRow| a.kind == k.kind && a.key == k.key;
        if !after
            .iter()
            .any(|a| same(a) && a.owner == k.owner && a.id == k.id)
        {
            problems.push(format!(
                "{} {} lost or moved: {:?}",
                k.kind,
                k.key,
                after.iter().find(|a| same(a))
            ));
        }
    }
    assert!(
        problems.is_empty() && after.len() == before.len(),
        "after the referee's restart:\n{}\nkeys before {before:#?}\nafter {after:#?}",
        problems.join("\n")
    );
}

fn kind_index(kind: &str) -> i32 {
    KINDS.iter().position(|k| *k == kind).unwrap_or(0) as i32
}

/// Processes on host 3 got host 2's structures before the referee
/// restarted: their ids keep working afterwards, from the processes that
/// got them and from a new process of host 3 that uses the ids without a
/// get (a new session, whose worker asks the referee about the key:
/// EIDRM before).
#[test]
fn ids_from_before_a_referee_restart_keep_working() {
    let c = Cluster::up(3);
    let keys = ["0x4d1", "0x4d2", "0x4d3"];
    for (kind, key) in KINDS.iter().zip(keys) {
        create(&c, 2, kind, key);
    }
    let trigger = c.scratch_dir("rejoin").join("restarted");
    let mut held: Vec<Background> = KINDS
        .iter()
        .zip(keys)
        .map(|(kind, key)| hold(&c, 3, kind, key, &trigger))
        .collect();
    let ids: Vec<i32> = held.iter().map(held_id).collect();

    c.restart_referee(&[]);
    for (kind, id) in KINDS.iter().zip(&ids) {
        assert_eq!(
            call(&c, 3, kind, *id),
            "ok",
            "a new process's call on {kind} id {id} from before the restart"
        );
    }
    let mut refs: Vec<&mut Background> = held.iter_mut().collect();
    let after = call_again(&trigger, &mut refs);
    for ((kind, key), got) in KINDS.iter().zip(keys).zip(&after) {
        assert_eq!(got, "ok", "the held {kind} {key}");
        assert_eq!(count(&c, 2, kind, key), counted(kind, 3), "{kind} {key}");
    }
}

/// Host 3 holds placeholders for host 2's queue, set and segment; its
/// cable is cut, and they are removed meanwhile (the referee's notices
/// cannot reach it and its connection is closed). Once host 3 is back,
/// the placeholders go (they stayed before), and the keys are free there.
#[test]
fn a_key_freed_while_a_host_was_cut_off_leaves_no_placeholder_there() {
    let c = Cluster::up(3);
    let keys = ["0x4e1", "0x4e2", "0x4e3"];
    let mut placeholders = Vec::new();
    for (kind, key) in KINDS.iter().zip(keys) {
        create(&c, 2, kind, key);
        let id = open(&c, 3, kind, key);
        assert!(
            c.ipcs(3, kind).iter().any(|(_, have)| *have == id),
            "no placeholder {id} for {kind} {key} on host 3"
        );
        placeholders.push(id);
    }
    // One that stays: its placeholder must stay too.
    create(&c, 2, "msg", "0x4e4");
    let kept = open(&c, 3, "msg", "0x4e4");

    c.set_link(3, false);
    for (kind, key) in KINDS.iter().zip(keys) {
        c.exec_ok(2, &[&hold_prog(), "rm", kind, key]);
    }
    wait_down(&c, 3);
    c.set_link(3, true);
    c.wait_all_up(1, REJOIN);

    let mut left = Vec::new();
    let gone = wait_for(REJOIN, || {
        left = KINDS
            .iter()
            .zip(&placeholders)
            .filter(|(kind, id)| c.ipcs(3, kind).iter().any(|(_, have)| have == *id))
            .map(|(kind, id)| format!("{kind} {id}"))
            .collect();
        left.is_empty()
    });
    assert!(
        gone.is_some(),
        "placeholders still on host 3 {REJOIN:?} after it came back: {left:?}\n{}",
        c.log(3)
    );
    assert!(
        c.ipcs(3, "msg").iter().any(|(_, have)| *have == kept),
        "the placeholder of the key still in use went too"
    );
    assert_eq!(call(&c, 3, "msg", kept), "ok");
    for (kind, key) in KINDS.iter().zip(keys) {
        let out = c.exec(3, &[&hold_prog(), "count", kind, key]);
        assert!(
            !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("No such file"),
            "{kind} {key} must be gone (ENOENT) on host 3:\n{}",
            describe(&out)
        );
    }
}

/// Two hosts claim one key: host 2, which owns it, is cut off through a
/// referee restart and its settle period, and host 3 makes the key anew
/// meanwhile. When host 2 comes back, its claim is refused: the key stays
/// host 3's everywhere (host 2's own processes included, through a
/// placeholder), and host 2's structure stays as a plain local one.
#[test]
fn a_host_cut_off_through_a_referee_restart_loses_a_key_made_again_meanwhile() {
    let c = Cluster::up(3);
    create(&c, 2, "msg", "0x4f1");
    c.exec_ok(2, &["dipc-msg", "send", "0x4f1", "1", "old"]);
    c.set_link(2, false);
    c.restart_referee(&[2]);
    // The get waits out the settle period, then creates the key.
    create(&c, 3, "msg", "0x4f1");
    mend_and_see_claim_refused(&c, 2);
    let keys = c.dipcref_keys(1);
    let k = keys
        .iter()
        .find(|k| k.key == "0x4f1")
        .unwrap_or_else(|| panic!("0x4f1 not in {keys:#?}"));
    assert_eq!(k.owner, front_end(3), "{keys:#?}");
    c.exec_ok(1, &["dipc-msg", "send", "0x4f1", "1", "new"]);
    assert_eq!(count(&c, 2, "msg", "0x4f1"), 1);
    assert_eq!(count(&c, 3, "msg", "0x4f1"), 1);
    let orphan = c.exec_ok(2, &["dipc-msg", "stat", "0x4f1", "--local", "--json"]);
    assert!(
        orphan.contains("\"qnum\":1"),
        "host 2's own queue changed: {orphan}"
    );
}

/// The administrator frees a key (`dipcref rm-key`) while its owner, host
/// 2, is cut off. When host 2 comes back it claims the key again; this
/// referee had its claims already, so the key stays free.
#[test]
fn a_key_dropped_while_its_owner_was_away_stays_free() {
    let c = Cluster::up(3);
    create(&c, 2, "msg", "0x4f2");
    c.set_link(2, false);
    wait_down(&c, 2);
    c.exec_ok(1, &["dipcref", "rm-key", "msg", "0x4f2"]);
    mend_and_see_claim_refused(&c, 2);
    let keys = c.dipcref_keys(1);
    assert!(keys.iter().all(|k| k.key != "0x4f2"), "{keys:#?}");
    c.exec_err(3, &["dipc-msg", "get", "0x4f2"], &["ENOENT"]);
}
