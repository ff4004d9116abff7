//! Cluster-wide process ids, signals between hosts and send/receive
//! messaging, across simulated hosts with real `dipcd` daemons: the C
//! programs `sig_target`, `pidctl` and `mailbox` (libdipc/examples/c) and
//! `dipc-pid` (the Rust API) are the applications.
//!
//! They need root and `ip netns`; where those are missing they fail, never
//! skip.

mod common;

use common::blocked::Call;
use common::*;
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

/// Time a process is given to do what it should.
const WAKE: Duration = Duration::from_secs(20);

fn prog(name: &str) -> String {
    c_example(name).to_string_lossy().into_owned()
}

fn listed(c: &Cluster, from: usize, pid_d: i64) -> bool {
    dipcref_pids(c, from).iter().any(|r| r.pid_d == pid_d)
}

/// Waits until `pid_d` is gone from the referee's table (its dipcd
/// noticed the exit).
fn wait_unlisted(c: &Cluster, pid_d: i64) {
    let gone = wait_for(Duration::from_secs(10), || !listed(c, 1, pid_d));
    assert!(
        gone.is_some(),
        "pid_d {pid_d} still registered: {:#?}",
        dipcref_pids(c, 1)
    );
}

/// The pid of the registering process itself (the last line of `pgrep`
/// would do, but the referee's table says which process registered).
fn registered_pid(c: &Cluster, pid_d: i64) -> i64 {
    dipcref_pids(c, 1)
        .into_iter()
        .find(|r| r.pid_d == pid_d)
        .unwrap_or_else(|| panic!("pid_d {pid_d} not registered"))
        .pid
}

fn go_file(c: &Cluster, name: &str) -> PathBuf {
    let dir = c.scratch_dir("pids");
    let p = dir.join(name);
    let _ = fs::remove_file(&p);
    p
}

fn path_str(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The original system's experiment: a registered sender on host 1 sends
/// 100 real-time signals to a target on host 2 that counts them in a
/// handler; all 100 arrive (queued, not coalesced), none twice. Once the
/// target has exited, kill_d gives ESRCH from every host.
#[test]
fn hundred_realtime_signals_between_hosts() {
    let c = Cluster::up(3);
    let target = prog("sig_target");
    let pidctl = prog("pidctl");
    let mut t = c.spawn(2, &[&target, "100", "1", "60"]);
    let p = t.pid_d();
    assert!(p >= 1);

    // dipcref pids shows it, from every host, with its host, pid and uid.
    for h in 1..=3 {
        let rows = dipcref_pids(&c, h);
        let row = rows
            .iter()
            .find(|r| r.pid_d == p)
            .unwrap_or_else(|| panic!("pid_d {p} not listed on host {h}: {rows:#?}"));
        assert_eq!(row.host, format!("{}:{HOST_PORT}", host_addr(2)));
        assert_eq!(row.uid, 0);
        assert!(row.pid > 0);
    }
    let text = c.exec_ok(3, &["dipcref", "pids"]);
    assert!(
        text.contains("PID_D") && text.contains(&host_addr(2)),
        "{text}"
    );

    let ps = p.to_string();
    let out = c.exec_ok(1, &[&pidctl, "kill", &ps, "rt1", "100"]);
    assert_eq!(out.trim(), "sent 100");
    let st = t.wait(WAKE);
    assert!(st.success(), "{}", t.describe());
    assert!(t.stdout().contains("received 100\n"), "{}", t.describe());

    // Gone: ESRCH from a remote host, from its own host, through the Rust
    // API too; and the table no longer has it.
    c.exec_err(1, &[&pidctl, "kill", &ps, "0"], &["ESRCH"]);
    c.exec_err(2, &[&pidctl, "kill-anon", &ps, "rt1"], &["ESRCH"]);
    c.exec_err(3, &["dipc-pid", "kill", &ps, "0"], &["ESRCH"]);
    wait_unlisted(&c, p);
}

/// A registration ends however the process ends: SIGKILL included. Its
/// record and its mailbox go, and kill_d gives ESRCH. A new registration
/// gets a new pid_d (never reused).
#[test]
fn a_killed_process_leaves_the_table() {
    let c = Cluster::up(3);
    let mailbox = prog("mailbox");
    let pidctl = prog("pidctl");
    let mut t = c.spawn(3, &[&mailbox, "sleep"]);
    let p = t.pid_d();
    let ps = p.to_string();
    c.exec_ok(1, &[&pidctl, "kill-anon", &ps, "0"]);
    t.kill();
    wait_unlisted(&c, p);
    c.exec_err(1, &[&pidctl, "kill-anon", &ps, "0"], &["ESRCH"]);
    c.exec_err(3, &[&pidctl, "kill-anon", &ps, "0"], &["ESRCH"]);
    // Its mailbox was removed on its host.
    let left = wait_for(Duration::from_secs(5), || {
        !c.exec_ok(3, &["ipcs", "-q"])
            .lines()
            .any(|l| l.starts_with("0x"))
    });
    assert!(left.is_some(), "{}", c.exec_ok(3, &["ipcs", "-q"]));
    let out = c.exec_ok(3, &[&pidctl, "regist"]);
    let again: i64 = out
        .trim()
        .strip_prefix("pid_d ")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("pidctl regist printed {out:?}"));
    assert!(again > p, "pid_d {again} after {p}: reused");
}

/// uregist removes a record only when pid_d, host and pid all match: from
/// another host or another process it is EPERM and nothing is removed; an
/// unknown pid_d is ESRCH. The owner's own uregist removes it, and kill_d
/// then gives ESRCH although the process still runs.
#[test]
fn uregist_needs_the_whole_triple() {
    let c = Cluster::up(3);
    let pidctl = prog("pidctl");
    let go = go_file(&c, "uregist-go");
    let mut t = c.spawn(2, &[&pidctl, "wait", path_str(&go)]);
    let p = t.pid_d();
    let ps = p.to_string();

    c.exec_err(3, &[&pidctl, "uregist", &ps], &["EPERM"]);
    c.exec_err(2, &[&pidctl, "uregist", &ps], &["EPERM"]);
    c.exec_err(1, &[&pidctl, "uregist", "987654"], &["ESRCH"]);
    assert!(listed(&c, 1, p), "a refused uregist removed pid_d {p}");
    c.exec_ok(1, &[&pidctl, "kill-anon", &ps, "0"]);

    fs::write(&go, "").expect("write go file");
    t.wait_for_stdout("unregistered", WAKE);
    assert!(!listed(&c, 3, p), "pid_d {p} listed after its uregist");
    assert!(t.running(), "{}", t.describe());
    c.exec_err(1, &[&pidctl, "kill-anon", &ps, "0"], &["ESRCH"]);
    c.exec_err(2, &[&pidctl, "kill-anon", &ps, "0"], &["ESRCH"]);
    fs::write(format!("{}.exit", go.display()), "").expect("write exit file");
    let st = t.wait(WAKE);
    assert!(st.success(), "{}", t.describe());

    // regist twice gives the same pid_d; a second uregist is ESRCH.
    c.exec_ok(1, &[&pidctl, "regist"]);
}

/// kill_d follows kill(2)'s permission rules, checked by the target's
/// kernel as the sender: another uid gets EPERM, from a remote host and
/// from the target's own host; a bad signal is EINVAL; signal 0 only
/// checks. None of these delivers anything: the target counts exactly the
/// one real signal.
#[test]
fn kill_d_follows_kill_permission_rules() {
    let c = Cluster::up(2);
    let target = prog("sig_target");
    let pidctl = prog("pidctl");
    let mut t = c.spawn(2, &[&target, "1", "1", "60", "500"]);
    let p = t.pid_d();
    let ps = p.to_string();
    for (h, how) in [(1, "kill-anon"), (1, "kill"), (2, "kill-anon"), (2, "kill")] {
        let args = as_nobody(&[&pidctl, how, &ps, "rt1"]);
        c.exec_err(h, &args, &["EPERM"]);
    }
    // Not secret: any user may list the table.
    let args = as_nobody(&["dipcref", "pids"]);
    assert!(c.exec_ok(1, &args).contains(&format!("{p} ")));
    c.exec_err(1, &[&pidctl, "kill-anon", &ps, "65"], &["EINVAL"]);
    c.exec_err(1, &[&pidctl, "kill-anon", &ps, "-1"], &["EINVAL"]);
    c.exec_ok(1, &[&pidctl, "kill-anon", &ps, "0"]);
    c.exec_ok(2, &[&pidctl, "kill-anon", &ps, "0"]);
    assert!(t.running(), "{}", t.describe());
    c.exec_ok(1, &[&pidctl, "kill", &ps, "rt1"]);
    let st = t.wait(WAKE);
    assert!(st.success(), "{}", t.describe());
    assert!(t.stdout().contains("received 1\n"), "{}", t.describe());
}

/// Three senders on three hosts send 100 messages each to one receiver;
/// the receiver takes one sender's messages first (filtered by its pid_d),
/// then the rest from anyone: every message once, each sender's in order,
/// each with its true sender, and nothing more.
#[test]
fn send_receive_order_and_sender_filter_from_three_hosts() {
    let c = Cluster::up(3);
    let mailbox = prog("mailbox");
    let go = go_file(&c, "order-go");
    let mut r = c.spawn(1, &[&mailbox, "check-order", "100", path_str(&go)]);
    let rp = r.pid_d().to_string();
    let mut senders: Vec<Background> = [(1, "one"), (2, "two"), (3, "three")]
        .iter()
        .map(|(h, tag)| c.spawn(*h, &[&mailbox, "send", &rp, "100", tag]))
        .collect();
    let ids: Vec<i64> = senders.iter_mut().map(Background::pid_d).collect();
    for s in senders.iter_mut() {
        let st = s.wait(Duration::from_secs(60));
        assert!(st.success(), "{}", s.describe());
        assert!(s.stdout().contains("sent 100"), "{}", s.describe());
    }
    // Filter on host 2's sender first.
    fs::write(&go, format!("{} {} {}\n", ids[1], ids[0], ids[2])).expect("write go file");
    let st = r.wait(Duration::from_secs(60));
    assert!(st.success(), "{}", r.describe());
    assert!(
        r.stdout()
            .contains("ok order: 100 from two, 100 from one, 100 from three"),
        "{}",
        r.describe()
    );
}

/// The non-blocking paths: DIPC_NOWAIT receive on an empty mailbox and
/// dipc_poll with a time-out see nothing; DIPC_NOWAIT sends fill the
/// mailbox from another host until EAGAIN, and from the receiver's host
/// get EAGAIN at once; a too-small receive buffer is E2BIG and the message
/// stays; a too-long message is EMSGSIZE; an unregistered process gets
/// ENOTCONN; dipc_poll then sees a message that arrives while it waits.
#[test]
fn non_blocking_paths_and_poll() {
    let c = Cluster::up(3);
    let mailbox = prog("mailbox");
    let go = go_file(&c, "hold-go");
    let mut h = c.spawn(2, &[&mailbox, "hold", path_str(&go)]);
    let hp = h.pid_d().to_string();
    h.wait_for_stdout("empty ok", WAKE);

    let filled = c.exec_ok(3, &[&mailbox, "fill", &hp, "1024"]);
    let k: u64 = filled
        .trim()
        .strip_prefix("filled ")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("fill printed {filled:?}"));
    assert!(k > 0, "{filled}");
    assert_eq!(
        c.exec_ok(2, &[&mailbox, "fill", &hp, "1024"]).trim(),
        "filled 0"
    );
    c.exec_ok(1, &[&mailbox, "unregistered", &hp]);
    for host in [1, 2] {
        c.exec_err(host, &[&mailbox, "send-one", &hp, "100000"], &["EMSGSIZE"]);
    }

    fs::write(&go, "").expect("write go file");
    h.wait_for_stdout(&format!("drained {k}\n"), WAKE);
    let mut s = c.spawn(1, &[&mailbox, "send", &hp, "1", "late"]);
    let sp = s.pid_d();
    let st = s.wait(WAKE);
    assert!(st.success(), "{}", s.describe());
    let st = h.wait(WAKE);
    assert!(st.success(), "{}", h.describe());
    assert!(
        h.stdout().contains(&format!("late from {sp}: late 0")),
        "{}",
        h.describe()
    );
}

/// A send blocked on a full mailbox (from another host and from the
/// receiver's own host) fails with ESRCH when the receiver exits.
#[test]
fn blocked_send_to_an_exiting_process_fails() {
    let c = Cluster::up(2);
    let mailbox = prog("mailbox");
    let mut h = c.spawn(2, &[&mailbox, "sleep"]);
    let hp = h.pid_d().to_string();
    c.exec_ok(1, &[&mailbox, "fill", &hp, "1024"]);
    let mut blocked = [
        c.spawn(1, &[&mailbox, "send-one", &hp, "10"]),
        c.spawn(2, &[&mailbox, "send-one", &hp, "10"]),
    ];
    for b in blocked.iter_mut() {
        b.wait_for_stdout("sending", WAKE);
    }
    // Host 1's send through its worker, host 2's by itself: both in host
    // 2's kernel, on the full mailbox.
    let pid_d: i64 = hp.parse().expect("pid_d");
    let mailbox = dipcref_pids(&c, 1)
        .into_iter()
        .find(|r| r.pid_d == pid_d)
        .unwrap_or_else(|| panic!("pid_d {pid_d} not registered"))
        .mailbox;
    let mailbox = i32::try_from(mailbox).expect("a queue id");
    c.wait_blocked(2, Call::MsgSnd, mailbox, 2);
    for b in blocked.iter_mut() {
        assert!(b.running(), "send did not block: {}", b.describe());
    }
    h.kill();
    for b in blocked.iter_mut() {
        let st = b.wait(WAKE);
        assert!(!st.success(), "{}", b.describe());
        assert_eq!(
            errno_name(&b.stderr()).as_deref(),
            Some("ESRCH"),
            "{}",
            b.describe()
        );
    }
}

/// The pop-up thread model (Rust API): a handler thread per message, at
/// most 3 at once and 3 reached, every message handled once; a handler's
/// uregist ends the loop.
#[test]
fn pop_up_threads_with_a_bound() {
    let c = Cluster::up(3);
    let mailbox = prog("mailbox");
    let mut srv = c.spawn(1, &["dipc-pid", "serve", "--max", "3", "--count", "40"]);
    let p = srv.pid_d().to_string();
    let mut senders = [
        c.spawn(2, &[&mailbox, "send", &p, "20", "two"]),
        c.spawn(3, &[&mailbox, "send", &p, "20", "three"]),
    ];
    for s in senders.iter_mut() {
        let st = s.wait(Duration::from_secs(60));
        assert!(st.success(), "{}", s.describe());
    }
    let st = srv.wait(Duration::from_secs(60));
    assert!(st.success(), "{}", srv.describe());
    assert!(
        srv.stdout().contains("handled 40, at most 3 at once"),
        "{}",
        srv.describe()
    );
}

/// A host that loses its link to the referee restores its registrations
/// when it joins again, with their pid_d: here the referee itself restarts
/// (host 1 is killed and started again), and the processes of host 2 stay
/// reachable under the same pid_d; a later registration gets a larger one.
#[test]
fn registrations_survive_a_referee_restart() {
    let c = Cluster::up(3);
    let mailbox = prog("mailbox");
    let pidctl = prog("pidctl");
    let mut t = c.spawn(2, &[&mailbox, "sleep"]);
    let p = t.pid_d();
    let ps = p.to_string();
    let pid = registered_pid(&c, p);
    c.stop(1);
    c.start(1);
    let back = wait_for(Duration::from_secs(20), || {
        dipcref_pids(&c, 1)
            .iter()
            .any(|r| r.pid_d == p && r.pid == pid)
    });
    assert!(back.is_some(), "pid_d {p} not restored:\n{}", c.all_logs());
    // Host 3 rejoins on its own schedule (its link backs off).
    let up = wait_for(Duration::from_secs(20), || {
        c.host_state(1, &host_addr(3)).as_deref() == Some("up")
    });
    assert!(up.is_some(), "host 3 did not rejoin:\n{}", c.all_logs());
    c.exec_ok(3, &[&pidctl, "kill-anon", &ps, "0"]);
    let out = c.exec_ok(3, &[&mailbox, "send", &ps, "1", "after"]);
    assert!(out.contains("sent 1"), "{out}");
    let out = c.exec_ok(1, &[&pidctl, "regist"]);
    let newer: i64 = out
        .trim()
        .strip_prefix("pid_d ")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("pidctl regist printed {out:?}"));
    assert!(newer > p, "pid_d {newer} given after restoring {p}");
    t.kill();
    wait_unlisted(&c, p);
}

/// Sends `sig` (`STOP`, `CONT`) to host `i`'s dipcd.
fn signal_dipcd(i: usize, sig: &str) {
    let file = state_dir().join(format!("h{i}")).join("dipcd.pid");
    let pid = fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let out = run_with_timeout(
        std::process::Command::new("kill").args([&format!("-{sig}"), pid.trim()]),
        Duration::from_secs(10),
    );
    assert!(out.status.success(), "kill -{sig}: {}", describe(&out));
}

/// After a referee restart, a new registration waits until the hosts had
/// time to restore theirs: host 2's dipcd is paused (SIGSTOP) through the
/// restart, so its process's pid_d is not restored yet when a process of
/// host 3 registers. That one must not get the pid_d that host 2's
/// process still has, and host 2's process keeps it (before: the
/// restarted counter gave it out again, and host 2's restore was refused,
/// which ended its registration).
#[test]
fn a_new_pid_d_after_a_referee_restart_is_none_a_host_still_has() {
    let c = Cluster::up(3);
    let mailbox = prog("mailbox");
    let pidctl = prog("pidctl");
    let mut t = c.spawn(2, &[&mailbox, "sleep"]);
    let p = t.pid_d();
    let pid = registered_pid(&c, p);
    signal_dipcd(2, "STOP");
    c.restart_referee(&[2]);
    let mut r = c.spawn(3, &[&pidctl, "regist"]);
    // Answered at once unless the referee holds new pid_d back.
    let answered = wait_for(Duration::from_millis(300), || r.stdout().contains("pid_d"));
    signal_dipcd(2, "CONT");
    let st = r.wait(WAKE);
    assert!(st.success(), "{}", r.describe());
    let out = r.stdout();
    let newer: i64 = out
        .lines()
        .find_map(|l| l.strip_prefix("pid_d "))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("pidctl regist printed {out:?}"));
    assert_ne!(
        newer,
        p,
        "pid_d {p} given again while host 2's process had it (answered within 300 ms: {})",
        answered.is_some()
    );
    let back = wait_for(WAKE, || {
        dipcref_pids(&c, 1)
            .iter()
            .any(|r| r.pid_d == p && r.pid == pid)
    });
    assert!(back.is_some(), "pid_d {p} not restored:\n{}", c.all_logs());
    t.kill();
    wait_unlisted(&c, p);
}

/// A host that crashes (every process SIGKILLed, dipcd included) leaves
/// its registrations' mailboxes behind in its IPC namespace; its next
/// dipcd removes them, and the referee forgets its processes.
#[test]
fn a_restarted_dipcd_removes_mailboxes_left_by_a_crash() {
    let c = Cluster::up(2);
    let mailbox = prog("mailbox");
    let mut t = c.spawn(2, &[&mailbox, "sleep"]);
    let p = t.pid_d();
    let queues = |c: &Cluster| -> Vec<String> {
        c.exec_ok(2, &["ipcs", "-q"])
            .lines()
            .filter(|l| l.starts_with("0x"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(queues(&c).len(), 1, "no mailbox on host 2");
    c.stop(2);
    let _ = t.wait(WAKE);
    wait_unlisted(&c, p);
    assert_eq!(queues(&c).len(), 1, "the crash removed the mailbox?");
    c.start(2);
    let gone = wait_for(Duration::from_secs(5), || queues(&c).is_empty());
    assert!(gone.is_some(), "left over: {:#?}", queues(&c));
}

/// When a host's dipcd stops, the registrations of its processes end
/// (the referee forgets them, their mailboxes go); once a dipcd runs
/// again, a process that calls regist gets a new pid_d instead of the
/// one it remembers.
#[test]
fn regist_after_a_dipcd_restart_registers_anew() {
    let c = Cluster::up(2);
    let pidctl = prog("pidctl");
    let go = go_file(&c, "reregist-go");
    let mut t = c.spawn(2, &[&pidctl, "reregist", path_str(&go)]);
    let p = t.pid_d();
    let pid_file = state_dir().join("h2").join("dipcd.pid");
    let dipcd: i32 = fs::read_to_string(&pid_file)
        .unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()));
    // SAFETY: kill(2) of the dipcd this test's cluster started.
    assert_eq!(unsafe { libc::kill(dipcd, libc::SIGTERM) }, 0);
    wait_unlisted(&c, p);
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    let stopped = wait_for(WAKE, || unsafe { libc::kill(dipcd, 0) } != 0);
    assert!(stopped.is_some(), "dipcd {dipcd} did not stop");
    c.start(2);
    fs::write(&go, "").expect("write go file");
    let st = t.wait(WAKE);
    assert!(st.success(), "{}", t.describe());
    let out = t.stdout();
    let again: i64 = out
        .lines()
        .find_map(|l| l.strip_prefix("again "))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no new pid_d:\n{}", t.describe()));
    assert!(again > p, "regist gave {again} after {p}");
}
