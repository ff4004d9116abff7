//! Process ids under failure (#16's chaos suite, the pid_d half; the IPC
//! kinds are in `failures.rs`): a `dipc_send` blocked on a full mailbox
//! and a `kill_d` aimed at a process whose host is cut off, or killed,
//! fail within the documented bound (the heartbeat time-out, with room
//! for a loaded machine) instead of waiting for ever, work again once the
//! host is back, and leave no kernel object behind on the caller's host.
//! Real `dipcd` daemons on simulated hosts.
//!
//! They need root and `ip netns`; where those are missing they fail, never
//! skip.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// How long a call may take to fail once its peer host is gone.
const BOUND: Duration = Duration::from_secs(15);

fn mailbox() -> String {
    c_example("mailbox").to_string_lossy().into_owned()
}

/// Queues on host `i` (mailboxes and placeholders among them).
fn queues_on(c: &Cluster, i: usize) -> usize {
    c.exec_ok(i, &["ipcs", "-q"])
        .lines()
        .filter(|l| l.starts_with("0x"))
        .count()
}

/// A blocked send from host 1 and a kill_d from host 3 to a process on
/// host 2, while host 2 is `gone` (`cut` = its link down, else its
/// daemons and processes killed): both fail within [`BOUND`].
fn sends_and_signals_fail_in_time(c: &Cluster, cut: bool) {
    let mb = mailbox();
    let base1 = queues_on(c, 1);
    let mut target = c.spawn(2, &[&mb, "sleep"]);
    let p = target.pid_d().to_string();
    c.exec_ok(1, &[&mb, "fill", &p, "1024"]);
    let mut sender = c.spawn(1, &[&mb, "send-one", &p, "10"]);
    sender.wait_for_stdout("sending", Duration::from_secs(20));
    c.exec_ok(3, &["dipc-pid", "kill", &p, "0"]);
    let gone = Instant::now();
    if cut {
        c.set_link(2, false);
    } else {
        c.stop(2);
    }
    let kill = c.exec(3, &["dipc-pid", "kill", &p, "0"]);
    let kill_took = gone.elapsed();
    let st = sender.wait_timeout(BOUND).unwrap_or_else(|| {
        sender.kill();
        if cut {
            c.set_link(2, true);
        }
        panic!(
            "a send blocked on host 2's mailbox still waits {:?} after host 2 went:\n{}",
            gone.elapsed(),
            sender.describe()
        )
    });
    let send_took = gone.elapsed();
    let how = if cut { "cut off" } else { "killed" };
    eprintln!(
        "host 2 {how}: blocked send failed after {send_took:?} ({}); kill_d failed after {kill_took:?} ({})",
        sender.stderr().trim(),
        String::from_utf8_lossy(&kill.stderr).trim()
    );
    sender.assert_failed_with(st, LOST_OWNER);
    let kill_errno = errno_name(&String::from_utf8_lossy(&kill.stderr));
    assert!(
        kill_errno
            .as_deref()
            .is_some_and(|n| n == "ESRCH" || LOST_OWNER.contains(&n)),
        "kill_d to a process on a host that is gone: {kill_errno:?}:\n{}",
        describe(&kill)
    );
    assert!(
        !kill.status.success() && kill_took < BOUND,
        "kill_d to a process on a host that is gone must fail within {BOUND:?} \
         (took {kill_took:?}):\n{}",
        describe(&kill)
    );
    // Host 2 back: its processes answer again (a killed host's are gone).
    if cut {
        c.set_link(2, true);
    } else {
        target.kill();
        c.start(2);
    }
    c.wait_all_up(1, Duration::from_secs(30));
    if cut {
        c.exec_ok(3, &["dipc-pid", "kill", &p, "0"]);
        target.kill();
    }
    let mut fresh = c.spawn(2, &[&mb, "sleep"]);
    let q = fresh.pid_d().to_string();
    c.exec_ok(3, &["dipc-pid", "kill", &q, "0"]);
    let out = c.exec_ok(1, &[&mb, "send", &q, "3", "after"]);
    assert!(out.contains("sent 3"), "{out}");
    fresh.kill();
    // The failed sender's and the senders' mailboxes are gone from host 1.
    let left = wait_for(Duration::from_secs(10), || queues_on(c, 1) == base1);
    assert!(
        left.is_some(),
        "host 1 keeps {} queues, {base1} before:\n{}",
        queues_on(c, 1),
        c.exec_ok(1, &["ipcs", "-q"])
    );
}

#[test]
fn send_and_kill_d_fail_in_time_when_the_peer_host_is_cut_off() {
    let c = Cluster::up(3);
    sends_and_signals_fail_in_time(&c, true);
}

#[test]
fn send_and_kill_d_fail_in_time_when_the_peer_host_is_killed() {
    let c = Cluster::up(3);
    sends_and_signals_fail_in_time(&c, false);
}
