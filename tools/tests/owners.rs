//! Tables only their owners may change: real `dipcd` daemons on simulated
//! hosts, attacked by `dipc-attack` (see its module docs) mostly as an
//! unprivileged user. Each test checks that the attack failed (dipc-attack
//! exits 0 and says how) and that what it went for still works for
//! everyone else: a distributed key cannot be poisoned by a bogus commit
//! nor held by a creator that went away; `IPC_PRIVATE` is not served to
//! other hosts; pid_d values stay positive and in range whatever a restore
//! says; `kill_d` reaches registered processes only; a session's groups
//! are the ones the kernel recorded when the application connected.
//!
//! They need root and `ip netns`; where those are missing they fail, never
//! skip.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// The referee's entry for msg key `key`, if any.
fn key_row(c: &Cluster, key: &str) -> Option<KeyRow> {
    c.dipcref_keys(1)
        .into_iter()
        .find(|k| k.kind == "msg" && k.key == key)
}

/// The queue `key` works from every host: a message sent from each host
/// arrives on the next.
fn queue_works(c: &Cluster, key: &str) {
    for (from, to) in [(1, 2), (2, 3), (3, 1)] {
        let text = format!("from {from}");
        c.exec_ok(from, &["dipc-msg", "send", key, "1", &text, "--nowait"]);
        let got = c.exec_ok(to, &["dipc-msg", "recv", key, "--nowait"]);
        assert_eq!(got.trim(), format!("1 {text}"), "queue {key} on host {to}");
    }
}

/// A key's creation committed with an id that is not the structure the
/// committing process made is refused, and the key stays free for everyone
/// (before: an id of -1 made every later get of the key `EPERM` on every
/// host, root and the owner host included). Refused alike: -1, another
/// key's queue, a private queue, and another user's queue that carries the
/// key on that host (made without dipc).
#[test]
fn a_bogus_commit_does_not_poison_a_key() {
    let c = Cluster::up(3);
    let other = create_queue(&c, 2, "0x7a70", "0666").to_string();
    // Root's plain queue with key 0x7a7c on host 2, unknown to the referee.
    let roots = c
        .exec_ok(
            2,
            &[
                "dipc-msg", "get", "0x7a7c", "--create", "--mode", "0666", "--local",
            ],
        )
        .trim()
        .to_owned();

    let out = attack(&c, 2, &["commit-bogus", "msg", "0x7a7a", "--id", "-1"]);
    assert_has(&out, "commit -1", "grant: owner ");
    assert_has(&out, "commit -1", "commit: error EINVAL: ");
    let out = attack(&c, 2, &["commit-bogus", "msg", "0x7a7b", "--id", &other]);
    assert_has(&out, "commit another key's queue", "commit: error EINVAL: ");
    let out = attack(&c, 2, &["commit-bogus", "msg", "0x7a7c", "--id", &roots]);
    assert_has(&out, "commit root's queue", "commit: error EPERM: ");
    // Nothing was recorded for these keys.
    for key in ["0x7a7a", "0x7a7b", "0x7a7c"] {
        assert!(key_row(&c, key).is_none(), "{key} was recorded");
    }
    let log = c.log(2);
    assert!(
        log.contains("msg key 0x7a7a: -1 names no msg on this host"),
        "host 2's dipcd must log the refused commit:\n{log}"
    );

    // The keys are free: root creates them, from another host and from
    // the host the attack ran on, and they work everywhere.
    let id = create_queue(&c, 1, "0x7a7a", "0666");
    let row = key_row(&c, "0x7a7a").expect("0x7a7a recorded");
    assert_eq!(
        (row.id, row.owner.as_str()),
        (i64::from(id), &*front_end(1))
    );
    queue_works(&c, "0x7a7a");
    create_queue(&c, 2, "0x7a7b", "0666");
    queue_works(&c, "0x7a7b");
    // A legitimate creation still adopts the queue that carries the key.
    let adopted = create_queue(&c, 2, "0x7a7c", "0666").to_string();
    assert_eq!(adopted, roots);
    queue_works(&c, "0x7a7c");
}

/// A process granted a key's creation that closes its connection to
/// dipcd without committing (and lives on) gives the key up at once:
/// another host creates it well within the referee's `request_ms` (5 s in
/// the test configs), where before it waited for that time-out.
#[test]
fn an_abandoned_grant_frees_its_key_at_once() {
    let c = Cluster::up(3);
    let mut holder = c.spawn(
        2,
        &as_nobody(&[
            "dipc-attack",
            "claim-hold",
            "msg",
            "0x7a7d",
            "--hold-ms",
            "15000",
        ]),
    );
    holder.wait_for_stdout("holding", Duration::from_secs(20));
    assert!(
        holder.stdout().contains("grant: owner "),
        "{}",
        holder.describe()
    );
    let start = Instant::now();
    let id = create_queue(&c, 3, "0x7a7d", "0666");
    let took = start.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "host 3 waited {took:?} for a key whose creator had gone"
    );
    let row = key_row(&c, "0x7a7d").expect("0x7a7d recorded");
    assert_eq!(
        (row.id, row.owner.as_str()),
        (i64::from(id), &*front_end(3))
    );
    assert!(
        holder.running(),
        "the holder must still live: the key was freed by its closed connection, not its exit"
    );
    let log = c.log(2);
    assert!(
        log.contains("msg key 0x7a7d: pid ")
            && log.contains("closed the connection it was granted on; creation given up"),
        "host 2's dipcd must log why it gave the creation up:\n{log}"
    );
    queue_works(&c, "0x7a7d");
    holder.kill();
}

/// A process granted a key's creation that keeps its connection but does
/// not commit within `request_ms` (5 s here) loses the grant: its dipcd
/// gives the creation up at the deadline, another host may then create
/// the key, and the late commit is refused.
#[test]
fn a_grant_expires_after_request_ms() {
    let c = Cluster::up(3);
    let mut holder = c.spawn(
        2,
        &as_nobody(&[
            "dipc-attack",
            "claim-hold",
            "msg",
            "0x7a79",
            "--keep",
            "--hold-ms",
            "6500",
        ]),
    );
    holder.wait_for_stdout("holding", Duration::from_secs(20));
    let want = "msg key 0x7a79: pid ";
    assert!(
        wait_for(Duration::from_secs(10), || {
            let log = c.log(2);
            log.contains(want) && log.contains("did not create it within 5000 ms")
        })
        .is_some(),
        "host 2's dipcd did not give the creation up at its deadline:\n{}",
        c.log(2)
    );
    let id = create_queue(&c, 3, "0x7a79", "0666");
    let status = holder.wait(Duration::from_secs(20));
    assert!(
        status.success() && holder.stdout().contains("late commit: error EPERM: "),
        "the late commit must be refused:\n{}",
        holder.describe()
    );
    let row = key_row(&c, "0x7a79").expect("0x7a79 recorded");
    assert_eq!(
        (row.id, row.owner.as_str()),
        (i64::from(id), &*front_end(3))
    );
    queue_works(&c, "0x7a79");
}

/// The structures owned by uid 65534 (nobody) on `host`, as `ipcs` lists
/// them: lines of `ipcs -a` whose owner is nobody.
fn nobodys_structures(c: &Cluster, host: usize) -> Vec<String> {
    let out = c.exec_ok(host, &["ipcs", "-a"]);
    out.lines()
        .filter(|l| l.split_whitespace().nth(2) == Some("nobody"))
        .map(str::to_owned)
        .collect()
}

/// A get of `IPC_PRIVATE` from another host is refused (`EINVAL`) for
/// every kind, and nothing is created on the target host; dipcd does not
/// take it as a distributed key either.
#[test]
fn ipc_private_is_not_served_to_other_hosts() {
    let c = Cluster::up(3);
    assert_eq!(nobodys_structures(&c, 2), Vec::<String>::new());
    for kind in ["msg", "sem", "shm"] {
        let out = attack(&c, 3, &["remote-private", &front_end(2), "--kind", kind]);
        assert_has(&out, kind, "remote get: error EINVAL: ");
        assert_has(&out, kind, "dipcd get: error EINVAL: ");
    }
    assert_eq!(
        nobodys_structures(&c, 2),
        Vec::<String>::new(),
        "a remote IPC_PRIVATE get created structures on host 2"
    );
    // Nothing either on host 3, whose dipcd refused the key.
    assert_eq!(nobodys_structures(&c, 3), Vec::<String>::new());
    // Plain gets of real keys still work from other hosts.
    create_queue(&c, 2, "0x7a7f", "0666");
    queue_works(&c, "0x7a7f");
}

/// A restore that names a pid_d beyond the range (i64::MAX, a negative
/// one) is refused by the referee, and new registrations keep getting
/// positive, distinct pid_d (before: the next registration after a
/// restore of i64::MAX got a negative pid_d). A real process registers
/// afterwards with a positive pid_d too.
#[test]
fn pid_d_restores_stay_in_range() {
    let c = Cluster::up(3);
    // The attack's own link sends no heartbeats: a registration held back
    // while the referee settles would outlast its silence.
    c.wait_referee_settled();
    for bad in [i64::MAX.to_string(), (1i64 << 53).to_string(), "-5".into()] {
        let out = attack_on(&c, 3, true, &["restore-pid-d", &bad]);
        assert_has(&out, "restore", "restore: error EINVAL: ");
        assert_has(&out, "restore", "new: registered ");
    }
    let mailbox = c_example("mailbox").to_string_lossy().into_owned();
    let mut p = c.spawn(2, &[&mailbox, "sleep"]);
    let pid_d = p.pid_d();
    assert!(
        pid_d > 0 && pid_d < 1000,
        "a real registration got pid_d {pid_d}"
    );
    p.kill();
}

/// `kill_d` from another host reaches registered processes only: a
/// process of the caller's own uid that never registered is `ESRCH` and
/// lives on (before: the worker signalled any process of the same uid).
#[test]
fn kill_d_reaches_registered_processes_only() {
    let c = Cluster::up(3);
    let mut victim = c.spawn(2, &as_nobody(&["sh", "-c", "echo pid $$; exec sleep 600"]));
    victim.wait_for_stdout("pid ", Duration::from_secs(20));
    let pid = victim
        .stdout()
        .lines()
        .find_map(|l| l.strip_prefix("pid "))
        .and_then(|p| p.trim().parse::<i32>().ok())
        .unwrap_or_else(|| panic!("no pid line: {}", victim.describe()));
    let ps = pid.to_string();
    for sig in ["9", "0"] {
        let out = attack(&c, 3, &["kill-pid", &front_end(2), &ps, "--sig", sig]);
        assert_has(&out, "kill-pid", "kill: error ESRCH: ");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        victim.running() && std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "nobody's unregistered process died of a kill_d:\n{}",
        victim.describe()
    );
    victim.kill();
}

/// A session acts with the supplementary groups the application had when
/// it connected to dipcd (SO_PEERGROUPS), not with those its pid shows
/// later: a process that connected without group G and took it afterwards
/// cannot read a 0660 queue of group G on another host; one that had G
/// when it connected can.
#[test]
fn a_sessions_groups_are_those_of_the_connection() {
    let c = Cluster::up(3);
    let id = create_queue(&c, 2, "0x7a7e", "0660").to_string();
    c.exec_ok(2, &["dipc-msg", "set", "0x7a7e", "--gid", "4242"]);
    let out = attack_on(
        &c,
        3,
        true,
        &[
            "peer-groups",
            &front_end(2),
            "--id",
            &id,
            "--gid",
            "4242",
            "--key",
            "0x7a7e",
        ],
    );
    assert_has(&out, "peer-groups", "stat: error EACCES: ");
    // With the group from the start, nobody reads it.
    c.exec_ok(
        3,
        &[
            "setpriv", "--reuid", "65534", "--regid", "65534", "--groups", "4242", "dipc-msg",
            "stat", "0x7a7e",
        ],
    );
    // Without it, not.
    c.exec_err(3, &as_nobody(&["dipc-msg", "stat", "0x7a7e"]), &["EACCES"]);
}
