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

/// The errors a call on a queue whose owner is cut off may end with.
const LOST_OWNER: &[&str] = &["ETIMEDOUT", "ECONNRESET", "EHOSTUNREACH", "ECONNREFUSED"];

/// Longest wait for anything the test awaits.
const LIMIT: Duration = Duration::from_secs(30);

/// The worker processes running in host `i` (its network namespace), each
/// with what it waits in (`/proc/PID/wchan`).
fn workers(i: usize) -> Vec<(String, String)> {
    let out = run_with_timeout(
        Command::new("ip").args(["netns", "pids", &format!("dipc-h{i}")]),
        Duration::from_secs(10),
    );
    assert!(out.status.success(), "ip netns pids:\n{}", describe(&out));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end() == "dipc-worker")
        })
        .map(|pid| {
            let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
            (pid.to_owned(), wchan)
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
            assert!(!st.success(), "round {round}: {}", r.describe());
            let name = errno_name(&r.stderr());
            assert!(
                name.as_deref().is_some_and(|n| LOST_OWNER.contains(&n)),
                "round {round}: want one of {LOST_OWNER:?}:\n{}",
                r.describe()
            );
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
