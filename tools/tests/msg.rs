//! Integration tests of distributed message queues: real `dipcd` daemons
//! on simulated hosts (network + IPC namespaces, see `tools/cluster`), with
//! `dipc-msg` and C programs (`libdipc/examples/c`) as the applications.
//!
//! They need root and `ip netns`; where those are missing they fail, never
//! skip. Every background process is killed when its test ends (the
//! `Background` guard), and every cluster is torn down (the `Cluster`
//! guard).

mod common;

use common::blocked::Call;
use common::*;
use std::collections::BTreeSet;
use std::process::Output;
use std::thread;
use std::time::{Duration, Instant};

/// Time a blocked call is given to finish once it should.
const WAKE: Duration = Duration::from_secs(10);

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Creates a distributed queue on `host` (mode `mode`), returns its id there.
fn create(c: &Cluster, host: usize, key: &str, mode: &str) -> i32 {
    let out = c.exec_ok(host, &["dipc-msg", "get", key, "--create", "--mode", mode]);
    out.trim()
        .parse()
        .unwrap_or_else(|e| panic!("dipc-msg get printed {out:?}: {e}"))
}

/// `dipc-msg recv KEY --nowait [extra]` on `host`; returns the printed line.
fn recv_now(c: &Cluster, host: usize, key: &str, extra: &[&str]) -> String {
    let mut args = vec!["dipc-msg", "recv", key, "--nowait"];
    args.extend_from_slice(extra);
    c.exec_ok(host, &args).trim_end_matches('\n').to_owned()
}

fn send(c: &Cluster, host: usize, key: &str, mtype: &str, text: &str) {
    c.exec_ok(host, &["dipc-msg", "send", key, mtype, text]);
}

/// `dipc-msg stat --json` on `host`.
fn stat(c: &Cluster, host: usize, key: &str) -> serde_json::Value {
    let out = c.exec_ok(host, &["dipc-msg", "stat", key, "--json"]);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("bad JSON {out:?}: {e}"))
}

fn owner_addr(i: usize) -> String {
    format!("{}:{HOST_PORT}", host_addr(i))
}

/// Asserts that the key is unknown everywhere: `dipc-msg get` gives ENOENT
/// on every host and the referee's key table lacks it.
fn assert_key_gone(c: &Cluster, key: &str) {
    for h in 1..=c.size() {
        c.exec_err(h, &["dipc-msg", "get", key], &["ENOENT"]);
    }
    let keys = c.dipcref_keys(1);
    assert!(
        keys.iter().all(|k| k.key != key),
        "the referee still lists {key}: {keys:#?}"
    );
}

/// `ipcs -q` on `host`, the lines of the queues only.
/// Waits (at most 5 s) until hosts 1..=n have no queue left, real or
/// placeholder.
fn assert_no_queues(c: &Cluster, n: usize) {
    for h in 1..=n {
        let mut q = Vec::new();
        let gone = wait_for(Duration::from_secs(5), || {
            q = ipcs_queues(c, h);
            q.is_empty()
        });
        assert!(gone.is_some(), "host {h} still has queues: {q:#?}");
    }
}

fn ipcs_queues(c: &Cluster, host: usize) -> Vec<String> {
    c.exec_ok(host, &["ipcs", "-q"])
        .lines()
        .filter(|l| l.starts_with("0x"))
        .map(str::to_owned)
        .collect()
}

fn assert_all_hosts_up(c: &Cluster) {
    for h in 1..=c.size() {
        let rows = c.dipcref_hosts(h);
        assert_eq!(rows.len(), c.size(), "host table from host {h}: {rows:#?}");
        assert!(
            rows.iter().all(HostRow::is_up),
            "a host is down as seen from host {h}: {rows:#?}"
        );
    }
}

#[test]
fn hello_across_hosts() {
    let c = Cluster::up(3);
    let recv = c_example("hello_recv");
    let send = c_example("hello_send");
    let recv = recv.to_str().expect("utf-8 path");
    let send = send.to_str().expect("utf-8 path");

    let mut r = c.spawn(2, &[recv, "0x4849"]);
    r.wait_for_stdout("waiting on queue", WAKE);
    let out = c.exec(3, &[send, "0x4849"]);
    assert!(
        out.status.success(),
        "hello_send failed:\n{}",
        describe(&out)
    );
    let st = r.wait(WAKE);
    assert!(st.success(), "hello_recv failed:\n{}", r.describe());
    assert!(
        r.stdout()
            .contains("received: Hello, Distributed Programming"),
        "{}",
        r.describe()
    );

    // hello_recv removed the queue: the key is free everywhere, and no
    // kernel queue (real or placeholder) is left on any host.
    assert_key_gone(&c, "0x4849");
    assert_no_queues(&c, 3);
}

#[test]
fn creation_race_has_one_winner() {
    let c = Cluster::up(3);
    let dir = c.scratch_dir("race");
    let go = dir.join("go");
    let go = go.to_str().expect("utf-8 path");
    const PER_HOST: usize = 4;

    // PER_HOST processes per host, all released at once by a file, each
    // printing "OK <id>" or its error.
    let race = |key: &str, excl: bool| -> Vec<(usize, String)> {
        let _ = std::fs::remove_file(go);
        let flags = if excl { "--create --excl" } else { "--create" };
        let script = format!(
            "while [ ! -e {go} ]; do sleep 0.005; done; \
             for i in $(seq {PER_HOST}); do \
               ( if out=$(dipc-msg get {key} {flags} 2>&1); then echo \"OK $out\"; \
                 else echo \"ERR $out\"; fi ) & \
             done; wait"
        );
        let mut procs: Vec<Background> = (1..=3)
            .map(|h| c.spawn(h, &["bash", "-c", &script]))
            .collect();
        thread::sleep(Duration::from_millis(300));
        std::fs::write(go, "").expect("write go file");
        let mut lines = Vec::new();
        for (i, p) in procs.iter_mut().enumerate() {
            let st = p.wait(Duration::from_secs(30));
            assert!(st.success(), "{}", p.describe());
            let out = p.stdout();
            let got: Vec<&str> = out.lines().collect();
            assert_eq!(got.len(), PER_HOST, "{}", p.describe());
            lines.extend(got.into_iter().map(|l| (i + 1, l.to_owned())));
        }
        lines
    };

    let lines = race("0x5150", true);
    let winners: Vec<_> = lines.iter().filter(|(_, l)| l.starts_with("OK ")).collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one --create --excl must succeed: {lines:#?}"
    );
    for (h, l) in &lines {
        assert!(
            l.starts_with("OK ") || l.contains("(errno EEXIST)"),
            "host {h}: {l}; all: {lines:#?}"
        );
    }
    let winner = winners[0].0;
    let keys = c.dipcref_keys(2);
    let row = keys
        .iter()
        .find(|k| k.key == "0x5150")
        .unwrap_or_else(|| panic!("0x5150 not in the referee's table: {keys:#?}"));
    assert_eq!(row.kind, "msg");
    assert_eq!(
        row.owner,
        owner_addr(winner),
        "the winner ran on host {winner}"
    );

    // Everyone may now open it, and all see the same queue.
    for h in 1..=3 {
        c.exec_ok(h, &["dipc-msg", "get", "0x5150", "--create"]);
    }
    send(&c, 1, "0x5150", "7", "from host 1");
    assert_eq!(recv_now(&c, 3, "0x5150", &[]), "7 from host 1");
    send(&c, 3, "0x5150", "8", "from host 3");
    assert_eq!(recv_now(&c, 2, "0x5150", &[]), "8 from host 3");

    // A race without IPC_EXCL: everybody succeeds, with one queue.
    let lines = race("0x5151", false);
    assert!(
        lines.iter().all(|(_, l)| l.starts_with("OK ")),
        "every --create must succeed: {lines:#?}"
    );
    let keys = c.dipcref_keys(1);
    let owners: Vec<_> = keys.iter().filter(|k| k.key == "0x5151").collect();
    assert_eq!(owners.len(), 1, "{keys:#?}");
    let owner_host = (1..=3)
        .find(|&h| owner_addr(h) == owners[0].owner)
        .unwrap_or_else(|| panic!("owner is not a cluster host: {keys:#?}"));
    // On the owner all processes got the same (real) id.
    let ids: BTreeSet<&str> = lines
        .iter()
        .filter(|(h, _)| *h == owner_host)
        .map(|(_, l)| l.as_str())
        .collect();
    assert_eq!(ids.len(), 1, "ids on the owner host differ: {lines:#?}");
    for from in 1..=3 {
        let to = from % 3 + 1;
        let text = format!("{from} to {to}");
        send(&c, from, "0x5151", "1", &text);
        assert_eq!(recv_now(&c, to, "0x5151", &[]), format!("1 {text}"));
    }

    c.exec_err(1, &["dipc-msg", "get", "0x5152"], &["ENOENT"]);
    c.exec_err(2, &["dipc-msg", "get", "0x5152"], &["ENOENT"]);
}

#[test]
fn owner_uses_the_real_queue_others_a_placeholder() {
    let c = Cluster::up(3);
    let id = create(&c, 2, "0x1234", "0640");
    // On the owner the distributed id is the plain kernel queue's.
    let plain = c.exec_ok(2, &["dipc-msg", "get", "0x1234", "--local"]);
    assert_eq!(plain.trim(), id.to_string());
    let s = stat(&c, 2, "0x1234");
    assert_eq!(s["remote"], false, "{s}");
    assert_eq!(s["mode"], "0640", "{s}");

    // On host 1 the id is a placeholder's: key 0, mode 0.
    let remote_id = c.exec_ok(1, &["dipc-msg", "get", "0x1234"]);
    let remote_id = remote_id.trim();
    let s = stat(&c, 1, "0x1234");
    assert_eq!(s["remote"], true, "{s}");
    assert_eq!(s["key"], "0x1234", "{s}");
    assert_eq!(
        s["mode"], "0640",
        "remote IPC_STAT shows the owner's queue: {s}"
    );
    let q1 = ipcs_queues(&c, 1);
    assert_eq!(q1.len(), 1, "host 1 should hold one placeholder: {q1:#?}");
    let cols: Vec<&str> = q1[0].split_whitespace().collect();
    assert_eq!(
        (cols[0], cols[1], cols[3]),
        ("0x00000000", remote_id, "0"),
        "placeholder on host 1 (key, id, perms): {q1:#?}"
    );
    c.exec_err(1, &["dipc-msg", "get", "0x1234", "--local"], &["ENOENT"]);

    // A message sent from host 1 sits in host 2's real queue.
    send(&c, 1, "0x1234", "3", "abc");
    let q2 = ipcs_queues(&c, 2);
    assert_eq!(q2.len(), 1, "{q2:#?}");
    let cols: Vec<&str> = q2[0].split_whitespace().collect();
    assert_eq!(
        (cols[0], cols[1], cols[3], cols[4], cols[5]),
        ("0x00001234", id.to_string().as_str(), "640", "3", "1"),
        "real queue on host 2 (key, id, perms, bytes, messages): {q2:#?}"
    );
    assert!(ipcs_queues(&c, 3).is_empty(), "host 3 never used the key");

    // A process that only knows host 1's id (from another process) gets to
    // the owner's queue too.
    c.exec_ok(1, &["dipc-msg", "send", remote_id, "--id", "4", "by id"]);
    assert_eq!(
        c.exec_ok(
            1,
            &["dipc-msg", "recv", remote_id, "--id", "--type", "4", "--nowait"]
        )
        .trim(),
        "4 by id"
    );
    assert_eq!(recv_now(&c, 2, "0x1234", &[]), "3 abc");
}

#[test]
fn permissions_are_checked_with_the_callers_credentials() {
    let c = Cluster::up(3);
    create(&c, 2, "0x7777", "0600");
    let nobody = |groups: &[&str], args: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["setpriv", "--reuid", "65534", "--regid", "65534"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if groups.is_empty() {
            v.push("--clear-groups".into());
        } else {
            v.push("--groups".into());
            v.push(groups.join(","));
        }
        v.extend(args.iter().map(|s| s.to_string()));
        v
    };
    let run = |host: usize, v: Vec<String>| -> Output {
        let a: Vec<&str> = v.iter().map(String::as_str).collect();
        c.exec(host, &a)
    };
    let expect_err = |host: usize, v: Vec<String>, want: &str| {
        let out = run(host, v.clone());
        let name = errno_name(&String::from_utf8_lossy(&out.stderr));
        assert!(
            !out.status.success() && name.as_deref() == Some(want),
            "on host {host}: {} should fail with {want}:\n{}",
            v.join(" "),
            describe(&out)
        );
    };
    let expect_ok = |host: usize, v: Vec<String>| -> String {
        let out = run(host, v.clone());
        assert!(
            out.status.success(),
            "on host {host}: {} should succeed:\n{}",
            v.join(" "),
            describe(&out)
        );
        stdout(&out)
    };

    // Sanity: the unprivileged user can use dipc at all (config, socket).
    expect_ok(1, nobody(&[], &["dipc-msg", "get", "0x7777"]));

    // A get asking for rights the caller lacks fails at once, from another
    // host as on the owner (whose kernel answers both).
    for host in [1, 2] {
        expect_err(
            host,
            nobody(&[], &["dipc-msg", "get", "0x7777", "--mode", "0600"]),
            "EACCES",
        );
    }

    // Mode 0600, owned by root: nobody may neither send nor receive.
    expect_err(
        1,
        nobody(&[], &["dipc-msg", "send", "0x7777", "1", "hi"]),
        "EACCES",
    );
    expect_err(
        1,
        nobody(&[], &["dipc-msg", "recv", "0x7777", "--nowait"]),
        "EACCES",
    );
    expect_err(1, nobody(&[], &["dipc-msg", "stat", "0x7777"]), "EACCES");
    // ...nor change it (not the owner or creator).
    expect_err(3, nobody(&[], &["dipc-msg", "rm", "0x7777"]), "EPERM");
    // Root on another host may (the worker acts as root too).
    send(&c, 1, "0x7777", "1", "root's");
    assert_eq!(recv_now(&c, 3, "0x7777", &[]), "1 root's");

    // 0644: others may receive but not send.
    c.exec_ok(2, &["dipc-msg", "set", "0x7777", "--mode", "0644"]);
    expect_ok(
        1,
        nobody(&[], &["dipc-msg", "get", "0x7777", "--mode", "0444"]),
    );
    expect_err(
        1,
        nobody(&[], &["dipc-msg", "get", "0x7777", "--mode", "0222"]),
        "EACCES",
    );
    expect_err(
        1,
        nobody(&[], &["dipc-msg", "send", "0x7777", "1", "hi"]),
        "EACCES",
    );
    expect_err(
        1,
        nobody(&[], &["dipc-msg", "recv", "0x7777", "--nowait"]),
        "ENOMSG",
    );

    // 0060 with group 4242: only members of 4242 (supplementary groups
    // travel with the call).
    c.exec_ok(
        3,
        &[
            "dipc-msg", "set", "0x7777", "--mode", "0060", "--gid", "4242",
        ],
    );
    expect_err(
        1,
        nobody(&[], &["dipc-msg", "send", "0x7777", "1", "hi"]),
        "EACCES",
    );
    expect_ok(
        1,
        nobody(&["4242"], &["dipc-msg", "send", "0x7777", "2", "member"]),
    );
    let got = expect_ok(
        3,
        nobody(
            &["100", "4242"],
            &["dipc-msg", "recv", "0x7777", "--nowait"],
        ),
    );
    assert_eq!(got.trim(), "2 member");

    // 0666: anybody, from any host; the sender's uid is recorded as such.
    c.exec_ok(
        1,
        &["dipc-msg", "set", "0x7777", "--mode", "0666", "--gid", "0"],
    );
    expect_ok(1, nobody(&[], &["dipc-msg", "send", "0x7777", "1", "hi"]));
    let got = expect_ok(3, nobody(&[], &["dipc-msg", "recv", "0x7777", "--nowait"]));
    assert_eq!(got.trim(), "1 hi");
    // IPC_SET still needs the owner's uid, whatever the mode.
    expect_err(
        1,
        nobody(&[], &["dipc-msg", "set", "0x7777", "--mode", "0600"]),
        "EPERM",
    );
    let s = stat(&c, 2, "0x7777");
    assert_eq!(s["mode"], "0666", "{s}");
}

#[test]
fn blocking_recv_waits_for_a_send_from_another_host() {
    let c = Cluster::up(3);
    let q = create(&c, 2, "0x2222", "0666");
    let mut r = c.spawn(1, &["dipc-msg", "recv", "0x2222"]);
    c.wait_blocked(2, Call::MsgRcv, q, 1);
    // Longer than request_ms (5 s): a blocked call has no time limit while
    // its owner lives.
    thread::sleep(Duration::from_secs(7));
    assert!(
        r.running(),
        "recv on an empty queue returned:\n{}",
        r.describe()
    );
    let sent = Instant::now();
    send(&c, 3, "0x2222", "9", "wake up");
    let st = r.wait(WAKE);
    assert!(st.success(), "{}", r.describe());
    assert_eq!(r.stdout().trim(), "9 wake up");
    eprintln!(
        "blocked recv on host 1 returned {:?} after the send from host 3 started",
        sent.elapsed()
    );

    // A blocked send (queue full) waits for room, across hosts too.
    c.exec_ok(2, &["dipc-msg", "set", "0x2222", "--qbytes", "100"]);
    c.exec_ok(
        1,
        &["dipc-msg", "send", "0x2222", "1", "x", "--fill", "100"],
    );
    c.exec_err(
        3,
        &["dipc-msg", "send", "0x2222", "2", "y", "--nowait"],
        &["EAGAIN"],
    );
    let mut s = c.spawn(3, &["dipc-msg", "send", "0x2222", "2", "second"]);
    c.wait_blocked(2, Call::MsgSnd, q, 1);
    assert!(
        s.running(),
        "send to a full queue returned:\n{}",
        s.describe()
    );
    assert_eq!(recv_now(&c, 1, "0x2222", &["--len"]), "1 100");
    let st = s.wait(WAKE);
    assert!(st.success(), "{}", s.describe());
    assert_eq!(recv_now(&c, 2, "0x2222", &[]), "2 second");
    c.exec_err(1, &["dipc-msg", "recv", "0x2222", "--nowait"], &["ENOMSG"]);
}

#[test]
fn recv_selection_truncation_and_errors_match_the_kernel() {
    let c = Cluster::up(3);
    create(&c, 2, "0x3333", "0666");
    c.exec_err(1, &["dipc-msg", "recv", "0x3333", "--nowait"], &["ENOMSG"]);

    // Type selection, from host 1, of messages sent from host 3.
    for (t, text) in [("3", "t3"), ("1", "t1"), ("2", "t2"), ("5", "t5")] {
        send(&c, 3, "0x3333", t, text);
    }
    assert_eq!(recv_now(&c, 1, "0x3333", &["--type", "2"]), "2 t2");
    assert_eq!(recv_now(&c, 1, "0x3333", &["--type", "-2"]), "1 t1");
    assert_eq!(
        recv_now(&c, 1, "0x3333", &["--type", "3", "--except"]),
        "5 t5"
    );
    c.exec_err(
        1,
        &["dipc-msg", "recv", "0x3333", "--type", "4", "--nowait"],
        &["ENOMSG"],
    );
    assert_eq!(recv_now(&c, 1, "0x3333", &[]), "3 t3");
    // The most negative type is the kernel's corner case (LONG_MIN).
    send(&c, 3, "0x3333", "7", "t7");
    assert_eq!(
        recv_now(&c, 1, "0x3333", &["--type", "-9223372036854775808"]),
        "7 t7"
    );

    // E2BIG without MSG_NOERROR (the message stays), truncation with it.
    c.exec_ok(
        3,
        &[
            "dipc-msg",
            "send",
            "0x3333",
            "6",
            "0123456789",
            "--fill",
            "100",
        ],
    );
    c.exec_err(
        1,
        &["dipc-msg", "recv", "0x3333", "--size", "10", "--nowait"],
        &["E2BIG"],
    );
    assert_eq!(
        recv_now(&c, 1, "0x3333", &["--size", "10", "--noerror"]),
        "6 0123456789"
    );
    c.exec_err(1, &["dipc-msg", "recv", "0x3333", "--nowait"], &["ENOMSG"]);

    // The C interface gives the kernel's errors on the owner and elsewhere.
    let prog = c_example("msg_errors");
    let prog = prog.to_str().expect("utf-8 path");
    for h in [2, 1, 3] {
        let out = c.exec(h, &[prog, "0x3333"]);
        assert!(
            out.status.success(),
            "msg_errors on host {h}:\n{}",
            describe(&out)
        );
        assert!(stdout(&out).contains("0 failures"), "{}", describe(&out));
    }
}

#[test]
fn stat_and_set_from_other_hosts() {
    let c = Cluster::up(3);
    create(&c, 2, "0x4444", "0666");
    for (t, text) in [("1", "aaaaaaaaaa"), ("2", "bbbbbbbbbb"), ("3", "cc")] {
        send(&c, 1, "0x4444", t, text);
    }
    let owner = stat(&c, 2, "0x4444");
    assert_eq!(owner["qnum"], 3, "{owner}");
    assert_eq!(owner["cbytes"], 22, "{owner}");
    for h in [1, 3] {
        let mut s = stat(&c, h, "0x4444");
        assert_eq!(s["remote"], true, "{s}");
        // Everything but the local view (id, remote) is the owner's.
        let mut o = owner.clone();
        for f in ["id", "remote"] {
            s.as_object_mut().expect("object").remove(f);
            o.as_object_mut().expect("object").remove(f);
        }
        assert_eq!(s, o, "IPC_STAT on host {h} differs from the owner's");
    }

    // qbytes below msgmnb: raising it above needs CAP_SYS_RESOURCE, which
    // root lacks in some containers.
    c.exec_ok(
        3,
        &[
            "dipc-msg", "set", "0x4444", "--mode", "0640", "--qbytes", "12345",
        ],
    );
    let s = stat(&c, 2, "0x4444");
    assert_eq!(s["mode"], "0640", "{s}");
    assert_eq!(s["qbytes"], 12345, "{s}");
    let s = stat(&c, 1, "0x4444");
    assert_eq!(s["mode"], "0640", "{s}");
    assert_eq!(s["qbytes"], 12345, "{s}");
    // A bad IPC_SET fails as it would locally (an unprivileged raise of
    // qbytes beyond msgmnb).
    let out = c.exec(
        1,
        &as_nobody(&["dipc-msg", "set", "0x4444", "--qbytes", "1000000"]),
    );
    let name = errno_name(&String::from_utf8_lossy(&out.stderr));
    assert!(
        !out.status.success() && matches!(name.as_deref(), Some("EACCES" | "EPERM")),
        "nobody may not raise qbytes:\n{}",
        describe(&out)
    );
}

#[test]
fn rmid_from_a_third_host_wakes_receivers_with_eidrm() {
    let c = Cluster::up(3);
    let q = create(&c, 2, "0x5555", "0666");
    let mut r1 = c.spawn(1, &["dipc-msg", "recv", "0x5555"]);
    let mut r2 = c.spawn(2, &["dipc-msg", "recv", "0x5555"]);
    // r1's worker and r2 itself, both in host 2's kernel.
    c.wait_blocked(2, Call::MsgRcv, q, 2);
    assert!(r1.running(), "{}", r1.describe());
    assert!(r2.running(), "{}", r2.describe());

    c.exec_ok(3, &["dipc-msg", "rm", "0x5555"]);
    for r in [&mut r1, &mut r2] {
        let st = r.wait(WAKE);
        assert!(!st.success(), "{}", r.describe());
        assert_eq!(
            errno_name(&r.stderr()).as_deref(),
            Some("EIDRM"),
            "{}",
            r.describe()
        );
    }
    assert_key_gone(&c, "0x5555");
    // Every host dropped its queue or placeholder.
    assert_no_queues(&c, 3);

    // The key is free: another host may create it now.
    create(&c, 3, "0x5555", "0666");
    let keys = c.dipcref_keys(1);
    let row = keys
        .iter()
        .find(|k| k.key == "0x5555")
        .unwrap_or_else(|| panic!("{keys:#?}"));
    assert_eq!(row.owner, owner_addr(3), "{keys:#?}");
    send(&c, 1, "0x5555", "1", "new queue");
    assert_eq!(recv_now(&c, 3, "0x5555", &[]), "1 new queue");
}

#[test]
fn blocked_receivers_on_one_host_do_not_wait_for_each_other() {
    let c = Cluster::up(3);
    let q = create(&c, 2, "0x6666", "0666");

    // Two processes.
    let mut a = c.spawn(1, &["dipc-msg", "recv", "0x6666", "--type", "1"]);
    let mut b = c.spawn(1, &["dipc-msg", "recv", "0x6666", "--type", "2"]);
    c.wait_blocked(2, Call::MsgRcv, q, 2);
    assert!(
        a.running() && b.running(),
        "{}\n{}",
        a.describe(),
        b.describe()
    );
    send(&c, 3, "0x6666", "2", "for b");
    let st = b.wait(WAKE);
    assert!(st.success(), "{}", b.describe());
    assert_eq!(b.stdout().trim(), "2 for b");
    assert!(a.running(), "a took b's message? {}", a.describe());
    send(&c, 3, "0x6666", "1", "for a");
    let st = a.wait(WAKE);
    assert!(st.success(), "{}", a.describe());
    assert_eq!(a.stdout().trim(), "1 for a");

    // Two threads of one process.
    let prog = c_example("msg_threads");
    let prog = prog.to_str().expect("utf-8 path");
    let mut t = c.spawn(1, &[prog, "0x6666", "2"]);
    t.wait_for_stdout("ready", WAKE);
    c.wait_blocked(2, Call::MsgRcv, q, 2);
    send(&c, 3, "0x6666", "2", "for thread 2");
    t.wait_for_stdout("thread 2 got: for thread 2", WAKE);
    assert!(
        t.running() && !t.stdout().contains("thread 1"),
        "{}",
        t.describe()
    );
    send(&c, 3, "0x6666", "1", "for thread 1");
    let st = t.wait(WAKE);
    assert!(st.success(), "{}", t.describe());
    assert!(
        t.stdout().contains("thread 1 got: for thread 1"),
        "{}",
        t.describe()
    );

    // Children forked by a process that already used the queue each block
    // on their own connection.
    let prog = c_example("msg_fork");
    let prog = prog.to_str().expect("utf-8 path");
    let out = c.exec(1, &[prog, "0x6666", "3"]);
    assert!(out.status.success(), "msg_fork:\n{}", describe(&out));
    assert_eq!(
        stdout(&out).matches("got: for child").count(),
        3,
        "{}",
        describe(&out)
    );
}

#[test]
fn signal_interrupts_a_remote_recv_with_eintr() {
    let c = Cluster::up(3);
    create(&c, 2, "0x7171", "0666");
    let prog = c_example("msg_eintr");
    let prog = prog.to_str().expect("utf-8 path");

    for round in 1..=3 {
        let mut p = c.spawn(1, &[prog, "0x7171", "1"]);
        let st = p.wait(WAKE);
        assert!(
            st.success() && p.stdout().contains("EINTR after"),
            "round {round}: SIGALRM (SA_RESTART) must interrupt msgrcv with EINTR:\n{}",
            p.describe()
        );
        // Nothing of the interrupted call is left to eat a message.
        let text = format!("after eintr {round}");
        send(&c, 3, "0x7171", "1", &text);
        thread::sleep(Duration::from_millis(300));
        assert_eq!(recv_now(&c, 2, "0x7171", &[]), format!("1 {text}"));
    }
    let s = stat(&c, 2, "0x7171");
    assert_eq!(s["qnum"], 0, "{s}");
}

/// A signal that comes while a process's first remote call is still
/// opening its session (or sending, or checking for the reply without
/// sleeping) interrupts the call with `EINTR`, as it would the kernel's
/// msgrcv: 100 forked children each block in msgrcv on host 2's queue and
/// each gets SIGUSR1 0.2 to 3 ms after it starts its call. Before, the
/// library handled such a signal where no system call reported it and
/// the call slept on (#19: 5 to 8 of 100 children hung). A signal that
/// comes before the call really began (a busy machine) is told apart by
/// the program and not held against the library (see msg_fork_signal.c).
#[test]
fn a_signal_while_the_session_opens_interrupts_the_call() {
    let c = Cluster::up(2);
    create(&c, 2, "0x7272", "0666");
    let prog = c_example("msg_fork_signal");
    let prog = prog.to_str().expect("utf-8 path");
    let out = c.exec(1, &[prog, "0x7272", "100"]);
    eprintln!("{}", describe(&out));
    // "E eintr, H hung, O other, X early, L late". A child whose signal
    // came before it entered the call (not scheduled in time, on a busy
    // machine) does not call ("early"); one whose signal came in the few
    // instructions before the library holds signals needs a second one
    // ("late"), as the kernel's msgrcv would. The lost-signal defect made
    // 5 to 8 in 100 late; a few are tolerated for the machine's load.
    let text = stdout(&out);
    let counts: Vec<u32> = text
        .split(',')
        .filter_map(|part| part.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(
        out.status.success() && counts.len() == 5 && counts[1] == 0 && counts[2] == 0,
        "every child's msgrcv must end with EINTR:\n{}",
        describe(&out)
    );
    let (eintr, early, late) = (counts[0], counts[3], counts[4]);
    assert!(
        late <= 3 && eintr >= 90 && eintr + early + late == 100,
        "signals must interrupt the call they come in, nearly all at the first:\n{}",
        describe(&out)
    );
    let s = stat(&c, 2, "0x7272");
    assert_eq!(s["qnum"], 0, "{s}");
}

/// `library.spin_us` only bounds how long a remote call checks for its
/// reply before it sleeps: with no spin and with the longest, a blocked
/// remote recv still waits for a send from another host and a signal still
/// interrupts it. A bad `$DIPC_SPIN_US` fails the call with EINVAL and
/// says why.
#[test]
fn remote_calls_behave_alike_with_any_spin_and_a_bad_spin_is_refused() {
    let c = Cluster::up(3);
    let q = create(&c, 2, "0x5151", "0666");
    let out = c.exec(
        1,
        &["env", "DIPC_SPIN_US=fast", "dipc-msg", "get", "0x5151"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && errno_name(&stderr).as_deref() == Some("EINVAL")
            && stderr.contains("dipc: $DIPC_SPIN_US: must be an integer between 0 and 10000"),
        "a bad DIPC_SPIN_US must fail with EINVAL and a reason:\n{}",
        describe(&out)
    );
    let prog = c_example("msg_eintr");
    let prog = prog.to_str().expect("utf-8 path");
    for spin in ["0", "10000"] {
        let env = format!("DIPC_SPIN_US={spin}");
        let mut r = c.spawn(1, &["env", &env, "dipc-msg", "recv", "0x5151"]);
        c.wait_blocked(2, Call::MsgRcv, q, 1);
        assert!(
            r.running(),
            "spin {spin}: recv on an empty queue returned:\n{}",
            r.describe()
        );
        let text = format!("spin {spin}");
        send(&c, 3, "0x5151", "5", &text);
        let st = r.wait(WAKE);
        assert!(st.success(), "spin {spin}: {}", r.describe());
        assert_eq!(r.stdout().trim(), format!("5 {text}"));

        let mut p = c.spawn(1, &["env", &env, prog, "0x5151", "1"]);
        let st = p.wait(WAKE);
        assert!(
            st.success() && p.stdout().contains("EINTR after"),
            "spin {spin}: SIGALRM must interrupt a remote msgrcv with EINTR:\n{}",
            p.describe()
        );
    }
    let s = stat(&c, 2, "0x5151");
    assert_eq!(s["qnum"], 0, "{s}");
}

/// Only the owner host frees a key, and only once its kernel no longer
/// has the queue: a notice forged by any local user is refused, from
/// another host (EPERM, by the referee) as on the owner (EBUSY, by its
/// dipcd), and the key keeps working; only the process granted a key's
/// creation may commit or abort it. A queue removed on the owner by a
/// plain IPC_RMID, which tells no one, is found out at the next get from
/// another host: the owner's worker frees the key, the get says ENOENT,
/// and another host may create the key anew.
#[test]
fn only_the_owner_frees_a_key_and_only_once_it_is_gone() {
    let c = Cluster::up(3);
    let id = create(&c, 2, "0x5252", "0666").to_string();
    let forged = |host: usize, want: &str| {
        c.exec_err(
            host,
            &as_nobody(&["dipc-msg", "key-notice", "free", "0x5252", "--id", &id]),
            &[want],
        );
    };
    forged(1, "EPERM");
    forged(3, "EPERM");
    forged(2, "EBUSY");
    // Root is refused alike: the check is what the kernel shows, not who asks.
    c.exec_err(
        1,
        &["dipc-msg", "key-notice", "free", "0x5252", "--id", &id],
        &["EPERM"],
    );
    // Nor can a process that was not granted the creation of a key commit
    // it (to a queue of its choosing) or abort it.
    for host in [1, 2] {
        c.exec_err(
            host,
            &["dipc-msg", "key-notice", "commit", "0x5252", "--id", &id],
            &["EPERM"],
        );
        c.exec_err(
            host,
            &["dipc-msg", "key-notice", "commit", "0x5253", "--id", &id],
            &["EPERM"],
        );
        c.exec_err(
            host,
            &["dipc-msg", "key-notice", "abort", "0x5253"],
            &["EPERM"],
        );
    }
    c.exec_err(1, &["dipc-msg", "get", "0x5253"], &["ENOENT"]);
    let keys = c.dipcref_keys(1);
    assert!(
        keys.iter()
            .any(|k| k.key == "0x5252" && k.id.to_string() == id && k.owner == owner_addr(2)),
        "the referee lost 0x5252: {keys:#?}"
    );
    send(&c, 3, "0x5252", "1", "still here");
    assert_eq!(recv_now(&c, 1, "0x5252", &[]), "1 still here");

    // A plain IPC_RMID on the owner: the referee is not told...
    c.exec_ok(2, &["dipc-msg", "rm", "0x5252", "--local"]);
    assert!(c.dipcref_keys(1).iter().any(|k| k.key == "0x5252"));
    // ...until a get from another host finds the key gone on the owner.
    c.exec_err(1, &["dipc-msg", "get", "0x5252"], &["ENOENT"]);
    assert_key_gone(&c, "0x5252");
    let new = create(&c, 3, "0x5252", "0666");
    let keys = c.dipcref_keys(1);
    assert!(
        keys.iter()
            .any(|k| k.key == "0x5252" && k.id == i64::from(new) && k.owner == owner_addr(3)),
        "0x5252 should now be host 3's: {keys:#?}"
    );
    send(&c, 1, "0x5252", "2", "new owner");
    assert_eq!(recv_now(&c, 2, "0x5252", &[]), "2 new owner");
}

/// A process granted the creation of a key that dies before creating it
/// (here one that asks and exits) gives the key up at once: its dipcd
/// aborts the creation when the process's connection closes, rather than
/// leaving other hosts to wait for the referee's time-out; then another
/// host may create the key.
#[test]
fn a_creator_that_dies_gives_up_its_key() {
    let c = Cluster::up(2);
    let out = c.exec_ok(1, &["dipc-msg", "key-notice", "claim", "0x5353"]);
    assert_eq!(
        out.trim(),
        format!("owner {} id -1", owner_addr(1)),
        "host 1 should have been granted the creation"
    );
    let want = "msg key 0x5353: pid ";
    assert!(
        wait_for(Duration::from_secs(5), || {
            let log = c.log(1);
            log.contains(want) && log.contains("died before creating it")
        })
        .is_some(),
        "host 1's dipcd did not give up the dead creator's key:\n{}",
        c.log(1)
    );
    c.exec_err(2, &["dipc-msg", "get", "0x5353"], &["ENOENT"]);
    let id = create(&c, 2, "0x5353", "0666");
    let keys = c.dipcref_keys(1);
    assert!(
        keys.iter()
            .any(|k| k.key == "0x5353" && k.id == i64::from(id) && k.owner == owner_addr(2)),
        "0x5353 should be host 2's: {keys:#?}"
    );
}

#[test]
fn lost_owner_fails_a_blocked_recv_in_time() {
    let c = Cluster::up(3);
    let q = create(&c, 2, "0x8888", "0666");
    let mut r = c.spawn(1, &["dipc-msg", "recv", "0x8888"]);
    c.wait_blocked(2, Call::MsgRcv, q, 1);
    assert!(r.running(), "{}", r.describe());

    let stopped = Instant::now();
    c.stop(2);
    let limit = Duration::from_secs(15);
    let st = r.wait_timeout(limit);
    let took = stopped.elapsed();
    let Some(st) = st else {
        r.kill();
        panic!(
            "recv on host 1 still blocked {took:?} after its queue's owner (host 2) was \
             killed; it must fail within request_ms + heartbeat timeout:\n{}",
            r.describe()
        );
    };
    let name = r.assert_failed_with(st, LOST_OWNER);
    eprintln!("recv failed with {name:?} {took:?} after the owner was killed");

    // New calls on the lost queue fail too, and quickly.
    for (h, args) in [
        (1, ["dipc-msg", "send", "0x8888", "1", "x"].as_slice()),
        (3, ["dipc-msg", "recv", "0x8888"].as_slice()),
        (3, ["dipc-msg", "stat", "0x8888"].as_slice()),
    ] {
        let t = Instant::now();
        c.exec_err(h, args, LOST_OWNER);
        assert!(
            t.elapsed() < limit,
            "on host {h}: {} took {:?} to fail",
            args.join(" "),
            t.elapsed()
        );
    }

    // The other hosts carry on.
    for h in [1, 3] {
        let rows = c.dipcref_hosts(h);
        for i in [1, 3] {
            assert!(
                rows.iter().any(|r| r.address == host_addr(i) && r.is_up()),
                "host {i} not up as seen from {h}: {rows:#?}"
            );
        }
    }
    create(&c, 3, "0x8889", "0666");
    send(&c, 1, "0x8889", "1", "still working");
    assert_eq!(recv_now(&c, 3, "0x8889", &[]), "1 still working");
}

#[test]
fn partitioned_owner_fails_a_blocked_recv_in_time() {
    let c = Cluster::up(3);
    let q = create(&c, 2, "0x8a8a", "0666");
    let mut r = c.spawn(1, &["dipc-msg", "recv", "0x8a8a"]);
    c.wait_blocked(2, Call::MsgRcv, q, 1);
    assert!(r.running(), "{}", r.describe());

    // No RST, no FIN: only time-outs and heartbeats can tell.
    let cut = Instant::now();
    c.set_link(2, false);
    let limit = Duration::from_secs(15);
    let Some(st) = r.wait_timeout(limit) else {
        r.kill();
        c.set_link(2, true);
        panic!(
            "recv on host 1 still blocked {:?} after its queue's owner (host 2) was cut \
             off:\n{}",
            cut.elapsed(),
            r.describe()
        );
    };
    let took = cut.elapsed();
    let name = r.assert_failed_with(st, LOST_OWNER);
    eprintln!("recv failed with {name:?} {took:?} after the owner was cut off");
    let t = Instant::now();
    c.exec_err(3, &["dipc-msg", "send", "0x8a8a", "1", "x"], LOST_OWNER);
    assert!(t.elapsed() < limit, "send took {:?} to fail", t.elapsed());

    // Healed: the queue works again, and the abandoned remote msgrcv on
    // the owner did not stay behind to eat a message.
    c.set_link(2, true);
    c.wait_all_up(1, Duration::from_secs(15));
    send(&c, 3, "0x8a8a", "1", "after the partition");
    thread::sleep(Duration::from_millis(300));
    assert_eq!(recv_now(&c, 2, "0x8a8a", &[]), "1 after the partition");
    send(&c, 2, "0x8a8a", "2", "remote again");
    assert_eq!(recv_now(&c, 1, "0x8a8a", &[]), "2 remote again");
}

#[test]
fn bad_input_gives_kernel_errors_and_harms_no_daemon() {
    let c = Cluster::up(3);
    create(&c, 2, "0x9999", "0666");

    // A bad id, as locally.
    for h in [1, 2] {
        for id in ["0x7ffffff0", "-1", "123456"] {
            c.exec_err(h, &["dipc-msg", "send", id, "--id", "1", "x"], &["EINVAL"]);
            c.exec_err(
                h,
                &["dipc-msg", "recv", id, "--id", "--nowait"],
                &["EINVAL"],
            );
            c.exec_err(h, &["dipc-msg", "stat", id, "--id"], &["EINVAL"]);
        }
    }
    // Sizes and types the kernel refuses, from the owner and from elsewhere.
    for h in [2, 1, 3] {
        for size in ["8193", "65536", "2000000"] {
            c.exec_err(
                h,
                &["dipc-msg", "send", "0x9999", "1", "x", "--fill", size],
                &["EINVAL"],
            );
        }
        c.exec_err(h, &["dipc-msg", "send", "0x9999", "0", "x"], &["EINVAL"]);
        c.exec_err(h, &["dipc-msg", "send", "0x9999", "-5", "x"], &["EINVAL"]);
    }
    // A message of exactly msgmax works from everywhere.
    for h in [1, 3] {
        c.exec_ok(
            h,
            &["dipc-msg", "send", "0x9999", "1", "z", "--fill", "8192"],
        );
        assert_eq!(recv_now(&c, 2, "0x9999", &["--len"]), "1 8192");
    }

    assert_all_hosts_up(&c);
    // ...and they still work.
    send(&c, 3, "0x9999", "2", "after the bad input");
    assert_eq!(recv_now(&c, 1, "0x9999", &[]), "2 after the bad input");
}

/// Producers on hosts 1 and 2 send 50,000 messages each (random sizes up
/// to 8 KiB, checksummed) to a queue owned by host `owner`; a consumer on
/// host 3 checks them all.
fn stress(owner: usize) {
    let c = Cluster::up(3);
    create(&c, owner, "0xabcd", "0666");
    let summary = run_stress(
        &c,
        "0xabcd",
        "50000",
        3,
        &[],
        &[(1, "1", &[]), (2, "2", &[])],
        Duration::from_secs(900),
    );
    eprintln!("stress, queue owned by host {owner}: {summary}");
    let s = stat(&c, owner, "0xabcd");
    assert_eq!(s["qnum"], 0, "{s}");
}

/// The consumer owns the queue: every send is remote, every receive local.
#[test]
fn stress_remote_producers_local_consumer() {
    stress(3);
}

/// Host 2 owns the queue: producer 2 sends locally, producer 1 remotely,
/// and the consumer receives remotely (blocking when the queue is empty).
#[test]
fn stress_mixed_producers_remote_consumer() {
    stress(2);
}

/// Runs `stress consume KEY` on `consumer_host` (extra arguments
/// `consumer_args`) and `stress produce KEY` for each `(host, producer,
/// extra arguments)`, `count` messages each; asserts that all succeed and
/// the consumer saw every message exactly once; returns the summaries.
fn run_stress(
    c: &Cluster,
    key: &str,
    count: &str,
    consumer_host: usize,
    consumer_args: &[&str],
    producers: &[(usize, &str, &[&str])],
    limit: Duration,
) -> String {
    let list: Vec<&str> = producers.iter().map(|p| p.1).collect();
    let list = list.join(",");
    let mut args = vec![
        "dipc-msg",
        "stress",
        "consume",
        key,
        "--producers",
        &list,
        "--count",
        count,
        "--idle-timeout",
        "30",
    ];
    args.extend_from_slice(consumer_args);
    let mut consumer = c.spawn(consumer_host, &args);
    let start = Instant::now();
    let mut procs: Vec<Background> = producers
        .iter()
        .map(|&(h, p, extra)| {
            let mut args = vec![
                "dipc-msg",
                "stress",
                "produce",
                key,
                "--producer",
                p,
                "--count",
                count,
                "--seed",
                p,
            ];
            args.extend_from_slice(extra);
            c.spawn(h, &args)
        })
        .collect();
    for p in procs.iter_mut() {
        let st = p.wait(limit.saturating_sub(start.elapsed()));
        assert!(st.success(), "producer failed:\n{}", p.describe());
    }
    let st = consumer.wait(limit.saturating_sub(start.elapsed()) + Duration::from_secs(35));
    let all: Vec<String> = procs.iter().map(Background::describe).collect();
    assert!(
        st.success(),
        "consumer found violations:\n{}\nproducers:\n{}",
        consumer.describe(),
        all.join("\n")
    );
    let total = count.parse::<u64>().expect("count") * producers.len() as u64;
    let summary = consumer.stdout();
    assert!(
        summary.contains(&format!("consumed {total} messages"))
            && summary.contains("; 0 violations"),
        "{}",
        consumer.describe()
    );
    let mut s = format!("{key}: {:?}\n  {}", start.elapsed(), summary.trim());
    for p in &procs {
        s.push_str(&format!("\n  {}", p.stdout().trim()));
    }
    s
}

/// Signals keep interrupting remote sends (to a full queue) and receives
/// (from an empty one): a call that ends with EINTR must have had no effect
/// (the producers send such a message again, the consumer receives again),
/// and one whose result won the race against the signal must report it, so
/// the consumer must still see every message exactly once.
#[test]
fn stress_interrupted_calls_lose_and_duplicate_nothing() {
    let c = Cluster::up(3);
    // Sends: fast producers on hosts 1 and 3 fill a queue owned by host 2
    // and are interrupted every few hundred microseconds.
    create(&c, 2, "0xabce", "0666");
    let sends = run_stress(
        &c,
        "0xabce",
        "5000",
        1,
        &[],
        &[
            (1, "1", &["--interrupt-us", "300"]),
            (3, "3", &["--interrupt-us", "500"]),
        ],
        Duration::from_secs(300),
    );
    // Receives: a paced producer keeps the queue mostly empty, so the
    // remote consumer is mostly blocked when its signals come.
    create(&c, 2, "0xabcf", "0666");
    let recvs = run_stress(
        &c,
        "0xabcf",
        "3000",
        1,
        &["--interrupt-us", "700"],
        &[(3, "1", &["--pause-us", "1000"])],
        Duration::from_secs(300),
    );
    eprintln!("interrupted stress:\n{sends}\n{recvs}");
    for key in ["0xabce", "0xabcf"] {
        let s = stat(&c, 2, key);
        assert_eq!(s["qnum"], 0, "{s}");
    }
}
