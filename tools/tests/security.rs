//! Attacks on a running cluster: real `dipcd` daemons on simulated hosts,
//! attacked by `dipc-attack` (see its module docs), mostly as an
//! unprivileged user on host 3 who holds a legitimate session to host 2
//! (and so that session's keys). Every test checks both that the attack
//! failed (dipc-attack exits 0 and says how) and that what it went for is
//! intact, and where cheap that the daemon logged why.
//!
//! They need root and `ip netns`; where those are missing they fail, never
//! skip.

mod common;

use common::*;
use std::time::Duration;

fn referee() -> String {
    format!("{}:{REFEREE_PORT}", host_addr(1))
}

/// The number of messages in queue `key`, as root on `host`.
fn qnum(c: &Cluster, host: usize, key: &str) -> u64 {
    let out = c.exec_ok(host, &["dipc-msg", "stat", key, "--json"]);
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("bad JSON {out:?}: {e}"));
    v["qnum"]
        .as_u64()
        .unwrap_or_else(|| panic!("no qnum in {v}"))
}

/// `dipc-msg recv ARGS --nowait` as root on `host`; the printed line.
fn recv_now(c: &Cluster, host: usize, args: &[&str]) -> String {
    let mut all = vec!["dipc-msg", "recv"];
    all.extend_from_slice(args);
    all.push("--nowait");
    c.exec_ok(host, &all).trim_end_matches('\n').to_owned()
}

/// A legitimate session (dipc-msg as nobody on host 3) still works on
/// queue `key` of host 2: the attacks did not break host 2's service.
fn still_served(c: &Cluster, key: &str) {
    c.exec_ok(
        3,
        &as_nobody(&["dipc-msg", "send", key, "7", "still served", "--nowait"]),
    );
    assert_eq!(
        recv_now(c, 3, &[key, "--type", "7"]),
        "7 still served",
        "host 2 no longer serves host 3"
    );
}

/// Frames forged on a legitimate session: plain frames where sealed ones
/// belong, a second `Session` claiming root and a second `SenderPid`
/// (sealed with the session's own keys), a replayed record, records out
/// of order and a record with a flipped bit. Root's 0600 queue keeps its
/// message; the 0666 queue gets exactly the one message sent properly.
#[test]
fn forged_frames_on_a_session_get_nothing() {
    let c = Cluster::up(3);
    let root_q = create_queue(&c, 2, "0x5e01", "0600").to_string();
    c.exec_ok(2, &["dipc-msg", "send", "0x5e01", "1", "root's secret"]);
    let open_q = create_queue(&c, 2, "0x5e02", "0666").to_string();

    // Plain and sealed credentials.
    let out = attack(
        &c,
        3,
        &[
            "session-inject",
            &front_end(2),
            "--id",
            &root_q,
            "--key",
            "0x5e01",
        ],
    );
    let what = "session-inject";
    assert_has(&out, what, "plain: closed (");
    assert_has(&out, what, "sealed session: error EPERM: ");
    assert_has(&out, what, "sealed msgrcv: error EACCES: ");
    assert_has(&out, what, "sender pid: error EPERM: ");
    assert_eq!(qnum(&c, 2, "0x5e01"), 1, "root's queue lost its message");
    let log = c.log(2);
    assert!(
        log.contains(&format!("worker for {}: protocol error: ", host_addr(3))),
        "host 2's worker must log why it closed the plain frames' connection:\n{log}"
    );

    // A replayed record: the first copy is sent, the second closes.
    let out = attack(
        &c,
        3,
        &["replay", &front_end(2), "--id", &open_q, "--key", "0x5e02"],
    );
    assert_has(&out, "replay", "first: done 0");
    assert_has(&out, "replay", "replay: closed (");
    assert_eq!(
        qnum(&c, 2, "0x5e02"),
        1,
        "the replayed MsgSnd was taken twice"
    );
    assert_eq!(recv_now(&c, 2, &["0x5e02"]), "1 replayed");

    // Out of order, and one bit flipped: nothing is sent.
    let out = attack(
        &c,
        3,
        &["reorder", &front_end(2), "--id", &open_q, "--key", "0x5e02"],
    );
    assert_has(&out, "reorder", "out of order: closed (");
    let out = attack(
        &c,
        3,
        &["flip", &front_end(2), "--id", &open_q, "--key", "0x5e02"],
    );
    assert_has(&out, "flip", "flipped bit ");
    assert_has(&out, "flip", ": closed (");
    // The tag's last bit, and the length prefix's top bit (a record
    // longer than max_frame).
    for bit in ["-1", "0"] {
        let out = attack(
            &c,
            3,
            &[
                "flip",
                &front_end(2),
                "--id",
                &open_q,
                "--key",
                "0x5e02",
                "--bit",
                bit,
            ],
        );
        assert_has(&out, "flip", ": closed (");
    }
    assert_eq!(
        qnum(&c, 2, "0x5e02"),
        0,
        "a reordered or altered MsgSnd was taken"
    );
    let log = c.log(2);
    assert!(
        log.contains("a frame failed authentication"),
        "host 2's workers must log the records that failed authentication:\n{log}"
    );

    // Root's message is still there, and host 2 still serves others.
    assert_eq!(recv_now(&c, 2, &["0x5e01"]), "1 root's secret");
    still_served(&c, "0x5e02");
}

/// The mailbox queue of `pid_d` (the id on its host).
fn mailbox_of(c: &Cluster, pid_d: i64) -> i64 {
    let out = c.exec_ok(1, &["dipcref", "pids", "--json"]);
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("bad JSON {out:?}: {e}"));
    v["pids"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["pid_d"].as_i64() == Some(pid_d)))
        .and_then(|r| r["mailbox"].as_i64())
        .unwrap_or_else(|| panic!("pid_d {pid_d} not listed with a mailbox: {out}"))
}

fn number_after(out: &str, prefix: &str) -> i64 {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{out}"))
}

/// What a legitimate unprivileged session may do to root's things on
/// another host is what the kernel lets nobody do there: kill_d of a root
/// process is EPERM (it lives on), an attach of a 0600 root segment is
/// EACCES (a handover stated by the caller changes nothing), and a
/// dipc_send is typed with the pid_d the attacker's dipcd vouched for,
/// whatever `SenderPid` it states afterwards.
#[test]
fn harmful_calls_on_a_session_fail_as_the_kernel_says() {
    let c = Cluster::up(3);

    // kill_d of root's registered process on host 2.
    let mailbox = c_example("mailbox").to_string_lossy().into_owned();
    let mut target = c.spawn(2, &[&mailbox, "sleep"]);
    let p = target.pid_d();
    let ps = p.to_string();
    let out = attack(&c, 3, &["kill-d", &ps, "--sig", "9"]);
    assert_has(&out, "kill-d", "kill: error EPERM: ");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        target.running(),
        "root's process died of nobody's kill_d:\n{}",
        target.describe()
    );

    // dipc_send: unregistered, the session has no pid_d to type with,
    // and stating one is refused.
    let mbox = mailbox_of(&c, p).to_string();
    let out = attack(&c, 3, &["send-d", &ps, "--forge", &ps]);
    assert_has(&out, "send-d", "session pid_d 0\n");
    assert_has(&out, "send-d", "sender pid: error EPERM: ");
    assert_has(&out, "send-d", "send: error ENOTCONN: ");
    // Registered: the message carries the attacker's own pid_d.
    let out = attack(&c, 3, &["send-d", &ps, "--forge", "4242", "--register"]);
    let registered = number_after(&out, "registered ");
    assert_eq!(
        number_after(&out, "session pid_d "),
        registered,
        "the session's pid_d is not the one the attacker registered:\n{out}"
    );
    assert_has(&out, "send-d", "sender pid: error EPERM: ");
    assert_has(&out, "send-d", "send: done 0");
    assert_eq!(
        recv_now(&c, 2, &[&mbox, "--id", "--local"]),
        format!("{registered} claims 4242"),
        "the mailbox message must be typed with the sender's real pid_d"
    );
    c.exec_err(
        2,
        &["dipc-msg", "recv", &mbox, "--id", "--local", "--nowait"],
        &["ENOMSG"],
    );

    // ShmAttach of root's 0600 segment on host 2.
    let touch = c_example("shm_touch").to_string_lossy().into_owned();
    c.exec_ok(2, &[&touch, "0x5e07", "20480", "-", "create-private"]);
    let seg = c
        .dipcref_keys(1)
        .into_iter()
        .find(|k| k.kind == "shm" && k.key == "0x5e07")
        .unwrap_or_else(|| panic!("segment 0x5e07 not listed"))
        .id
        .to_string();
    let out = attack(
        &c,
        3,
        &["shm-attach", &front_end(2), "--id", &seg, "--key", "0x5e07"],
    );
    assert_has(&out, "shm-attach", "attach: error EACCES: ");
    assert_has(&out, "shm-attach", "attach with handover: error EACCES: ");
    // Root still may, and nothing was written.
    assert_eq!(
        c.exec_ok(1, &[&touch, "0x5e07", "20480", "0", "read"])
            .trim(),
        "0"
    );

    // The target is still alive and registered.
    assert!(target.running(), "{}", target.describe());
    assert_eq!(mailbox_of(&c, p).to_string(), mbox);
}

/// Connections between hosts opened by someone who is not a daemon of
/// the cluster: root of host 3 with the secret trying the referee as an
/// employer, as a host that asks before joining, and as another host; a
/// client without the secret; a client of the old plain protocol. All are
/// refused and closed; the key, the host table and the services are
/// intact; the daemons log why.
#[test]
fn strangers_and_impostors_are_refused() {
    let c = Cluster::up(3);
    create_queue(&c, 2, "0x5e03", "0666");
    let claim = front_end(2);

    let out = attack_on(
        &c,
        3,
        true,
        &["referee-role", "--as", &claim, "--drop", "msg:0x5e03"],
    );
    assert_has(
        &out,
        "referee-role",
        "employer: refused by peer: a Employer connection is not served here",
    );
    assert_has(
        &out,
        "referee-role",
        "drop before join: refused: DropKey before Join; closed (",
    );
    assert_has(&out, "referee-role", &format!("join as {claim}: refused: "));
    assert_has(
        &out,
        "referee-role",
        &format!("join as {claim} from this host: refused: "),
    );
    assert!(
        c.dipcref_keys(1)
            .iter()
            .any(|k| k.kind == "msg" && k.key == "0x5e03"),
        "the key was dropped by a link that never joined: {:#?}",
        c.dipcref_keys(1)
    );
    for h in [2, 3] {
        assert_eq!(
            c.host_state(1, &host_addr(h)).as_deref(),
            Some("up"),
            "host {h} is no longer up: {:#?}",
            c.try_dipcref_hosts(1)
        );
    }
    let log = c.log(1);
    let from = format!("refused connection from {}: ", host_addr(3));
    for why in [
        "a Employer connection is not served here",
        "DropKey before Join",
        &format!("join as {claim} does not match"),
    ] {
        assert!(
            log.contains(&format!("{from}{why}")),
            "the referee must log {why:?}:\n{log}"
        );
    }

    // A wrong secret, to a front_end and to the referee.
    let wrong = "handshake: refused by peer: authentication failed (wrong cluster secret)";
    let out = attack(
        &c,
        3,
        &["wrong-secret", &front_end(2), "--role", "employer"],
    );
    assert_has(&out, "wrong-secret", wrong);
    let out = attack(&c, 3, &["wrong-secret", &referee(), "--role", "host"]);
    assert_has(&out, "wrong-secret", wrong);
    let wrong_log = format!("{from}authentication failed (wrong cluster secret)");
    for h in [1, 2] {
        let log = c.log(h);
        assert!(
            log.contains(&wrong_log),
            "host {h} must log the wrong secret:\n{log}"
        );
    }

    // The old plain protocol: at most a refusal, then the end.
    for (to, frame) in [
        (front_end(2), "session"),
        (front_end(2), "ping"),
        (referee(), "ping"),
        (referee(), "session"),
    ] {
        let out = attack(&c, 3, &["plain", &to, "--frame", frame]);
        assert_has(&out, "plain", "end: closed (");
    }
    let log = c.log(2);
    assert!(
        log.contains(&format!("{from}unexpected Session during authentication")),
        "host 2 must log the plain Session:\n{log}"
    );

    // Everything still works.
    still_served(&c, "0x5e03");
    for h in 1..=3 {
        assert_eq!(
            c.host_state(2, &host_addr(h)).as_deref(),
            Some("up"),
            "{:#?}",
            c.try_dipcref_hosts(2)
        );
    }
}
