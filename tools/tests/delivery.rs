//! Integration tests of what a call delivers when links fail: real `dipcd`
//! daemons on simulated hosts (see `tools/cluster`), a cut being a host's
//! link set down (no RST, no FIN).
//!
//! They need root and `ip netns`; where those are missing they fail, never
//! skip.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

/// Longest wait for anything the test awaits.
const LIMIT: Duration = Duration::from_secs(30);

/// The worker processes running in host `i`, each with what it waits in
/// (`/proc/PID/wchan`).
fn workers(i: usize) -> Vec<(String, String)> {
    pids_named(i, "dipc-worker")
        .into_iter()
        .map(|pid| {
            let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
            (pid, wchan)
        })
        .collect()
}

/// Takes every message left in `key`'s queue on its owner `host`; returns
/// their lines (`MTYPE TEXT`).
fn drain(c: &Cluster, host: usize, key: &str) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let out = c.exec(host, &["dipc-msg", "recv", key, "--nowait"]);
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert_eq!(
                errno_name(&err).as_deref(),
                Some("ENOMSG"),
                "draining {key}:\n{}",
                describe(&out)
            );
            return got;
        }
        got.push(String::from_utf8_lossy(&out.stdout).trim_end().to_owned());
        assert!(got.len() < 100, "{key} never empties: {got:?}");
    }
}

/// A receiver on host 3 blocked on host 2's queue is cut off (host 3's
/// link down) and a message is sent on the owner meanwhile: the worker
/// takes it and its reply cannot arrive. Whether the receiver then gets it
/// (a short cut: TCP delivers the reply once the link is back) or fails
/// (a cut long enough for its connection to die), the message must be
/// received exactly once: by the receiver, or from the queue afterwards.
/// Rounds alternate long and short cuts.
#[test]
fn a_message_taken_for_a_cut_off_receiver_is_received_exactly_once() {
    const KEY: &str = "0x7d01";
    const ROUNDS: usize = 6;
    let c = Cluster::up(3);
    c.exec_ok(2, &["dipc-msg", "get", KEY, "--create", "--mode", "0666"]);
    let mut lost_calls = 0;
    for round in 0..ROUNDS {
        let long = round % 2 == 0;
        let text = format!("round{round}");
        // Its type must come back with it.
        let mtype = (round + 1).to_string();
        let mut r = c.spawn(3, &["dipc-msg", "recv", KEY]);
        // Its worker on host 2 is blocked in msgrcv.
        let blocked = wait_for(LIMIT, || {
            workers(2).iter().any(|(_, w)| w.trim() == "do_msgrcv")
        });
        assert!(
            blocked.is_some(),
            "round {round}: no worker of host 2 blocked in msgrcv: {:?}\n{}",
            workers(2),
            r.describe()
        );

        c.set_link(3, false);
        c.exec_ok(2, &["dipc-msg", "send", KEY, &mtype, &text]);
        if long {
            // Cut until the receiver gives up: its reply never came.
            let st = r.wait_timeout(LIMIT);
            c.set_link(3, true);
            let Some(st) = st else {
                r.kill();
                panic!("round {round}: the cut-off receiver still waits after {LIMIT:?}");
            };
            r.assert_failed_with(st, LOST_OWNER);
            lost_calls += 1;
        } else {
            c.set_link(3, true);
            if r.wait_timeout(LIMIT).is_none() {
                r.kill();
                panic!("round {round}: the receiver still waits {LIMIT:?} after the heal");
            }
        }
        // Once the worker has ended, it has either had its confirmation or
        // put the message back: nothing can change after that.
        let settled = wait_for(LIMIT, || workers(2).is_empty());
        assert!(
            settled.is_some(),
            "round {round}: host 2's workers did not end: {:?}",
            workers(2)
        );
        let mut got: Vec<String> = drain(&c, 2, KEY);
        let from_queue = got.len();
        let out = r.stdout();
        if !out.trim().is_empty() {
            got.push(out.trim_end().to_owned());
        }
        eprintln!(
            "round {round}: {} cut, receiver {}, {from_queue} message(s) back in the queue",
            if long { "long" } else { "short" },
            if out.trim().is_empty() {
                "failed"
            } else {
                "got it"
            },
        );
        assert_eq!(
            got,
            vec![format!("{mtype} {text}")],
            "round {round} ({} cut): the message must be received exactly once (by the \
             receiver on host 3 or from the queue after); receiver:\n{}",
            if long { "long" } else { "short" },
            r.describe()
        );
        c.wait_all_up(2, LIMIT);
    }
    assert_eq!(lost_calls, ROUNDS / 2);
}

/// Sends `sig` (`STOP`, `CONT`) to the processes `pids`.
fn signal(pids: &[String], sig: &str) {
    let out = run_with_timeout(
        Command::new("kill").arg(format!("-{sig}")).args(pids),
        Duration::from_secs(10),
    );
    assert!(
        out.status.success(),
        "kill -{sig} {pids:?}:\n{}",
        describe(&out)
    );
}

/// Host `i`'s dipcd.
fn dipcd_pid(i: usize) -> String {
    let f = state_dir().join(format!("h{i}")).join("dipcd.pid");
    std::fs::read_to_string(&f)
        .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
        .trim()
        .to_owned()
}

/// The referee (on host 1).
fn referee_pid(c: &Cluster) -> Vec<String> {
    let pids = pids_named(1, "dipc-referee");
    assert_eq!(
        pids.len(),
        1,
        "referee processes: {pids:?}\n{}",
        c.all_logs()
    );
    pids
}

/// A get whose look-up is in flight when this host's link to the referee
/// breaks (the referee stopped past the heartbeat time-out: the host's
/// dipcd gives it up, and answers the relayed request with `ECONNRESET`)
/// is made again once the link is back, within the call's time bound, and
/// succeeds: a get is safe to repeat before it has a grant.
#[test]
fn a_get_in_flight_when_the_referee_link_breaks_succeeds() {
    let c = Cluster::up(3);
    c.exec_ok(
        2,
        &["dipc-msg", "get", "0x7d02", "--create", "--mode", "0666"],
    );
    let referee = referee_pid(&c);
    signal(&referee, "STOP");
    let mut gets = [
        c.spawn(3, &["dipc-msg", "get", "0x7d02"]),
        c.spawn(
            3,
            &["dipc-msg", "get", "0x7d03", "--create", "--mode", "0666"],
        ),
    ];
    let broke = wait_for(LIMIT, || c.log(3).contains("lost the referee"));
    signal(&referee, "CONT");
    assert!(
        broke.is_some(),
        "host 3 kept its link to a referee stopped for {LIMIT:?}:\n{}",
        c.log(3)
    );
    for g in gets.iter_mut() {
        let Some(st) = g.wait_timeout(LIMIT) else {
            g.kill();
            panic!("a get still waits {LIMIT:?} after the referee came back");
        };
        assert!(st.success(), "{}", g.describe());
        assert!(g.stdout().trim().parse::<i32>().is_ok(), "{}", g.describe());
    }
    // Both keys work from host 3.
    c.exec_ok(
        1,
        &["dipc-msg", "send", "0x7d03", "1", "made during the stall"],
    );
    c.exec_ok(
        3,
        &[
            "dipc-msg",
            "send",
            "0x7d02",
            "2",
            "looked up during the stall",
        ],
    );
    assert_eq!(
        c.exec_ok(3, &["dipc-msg", "recv", "0x7d03", "--nowait"])
            .trim(),
        "1 made during the stall"
    );
    assert_eq!(
        c.exec_ok(2, &["dipc-msg", "recv", "0x7d02", "--nowait"])
            .trim(),
        "2 looked up during the stall"
    );
}

/// Every daemon that keeps time on another (the referee and each host's
/// dipcd) stops for twice the heartbeat time-out at once, as under a CPU
/// overload in which none of them runs, and goes on: none of them was
/// silent while the others could hear, so no host is marked down, no link
/// is given up, and gets go on working.
#[test]
fn daemons_stalled_together_do_not_drop_each_other() {
    let c = Cluster::up(3);
    c.exec_ok(
        2,
        &["dipc-msg", "get", "0x7d04", "--create", "--mode", "0666"],
    );
    let mut all = referee_pid(&c);
    all.extend((1..=3).map(dipcd_pid));
    let before: Vec<String> = (1..=3).map(|i| c.log(i)).collect();
    signal(&all, "STOP");
    std::thread::sleep(HEARTBEAT_TIMEOUT * 2);
    signal(&all, "CONT");
    // Gets (through the referee) work at once.
    for h in 1..=3 {
        c.exec_ok(h, &["dipc-msg", "get", "0x7d04"]);
    }
    // Every heartbeat time-out has passed since, with all of them running.
    std::thread::sleep(HEARTBEAT_TIMEOUT * 2);
    c.wait_all_up(1, LIMIT);
    for (i, old) in before.iter().enumerate() {
        let log = c.log(i + 1);
        let new = log.get(old.len()..).unwrap_or(&log);
        for bad in ["down:", "lost the referee", "silent for"] {
            assert!(
                !new.contains(bad),
                "host {}'s log after the stall says {bad:?}:\n{new}",
                i + 1
            );
        }
    }
}
