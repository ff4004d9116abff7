//! The failure suite (issue #19): on 3 hosts, with two queues, a lock
//! (a semaphore taken with `SEM_UNDO`) and a segment owned by host 2, load
//! from hosts 1 and 3 (numbered messages from four senders, four lock
//! holders that check mutual exclusion, a segment writer and reader) while
//! host 2's link is cut and mended, host 3 is killed and started again, or
//! host 2 reboots. Each test counts messages lost, duplicated and
//! misdelivered, lock violations, calls that failed past their bound and
//! kernel objects and workers left over, prints the figures (`--nocapture`)
//! and asserts them. The load is `libdipc/examples/c/failload.c`.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::thread;
use std::time::{Duration, Instant};

const Q1: &str = "0xfa01";
const Q2: &str = "0xfa02";
const SEM: &str = "0xfa03";
const SHM: &str = "0xfa04";
/// A queue host 2 makes after its reboot: its id is likely one an old id
/// named, so a stale id reaching it would show here.
const Q_AFTER: &str = "0xfa05";

/// Messages put in `Q_AFTER` when it is made.
const MARKERS: usize = 5;
/// How long the senders, lock holders and segment users run.
const LOAD_MS: u64 = 12_000;
/// Longest wait for anything the test awaits.
const LIMIT: Duration = Duration::from_secs(40);
/// The longest a failing call may take (README, "A lost owner host"):
/// `request_ms` (5 s in tools/cluster, more than `heartbeat_timeout_ms` +
/// 3 s for blocking calls) plus 2 s for a machine shared with other tests.
const CALL_BOUND_MS: f64 = 7_000.0;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    /// Host 2 (the owner) cut off for 3 s, then mended.
    Cut,
    /// Host 3 (a client) killed mid-load, started again.
    KillClient,
    /// Host 2 (the owner) rebooted mid-load.
    RebootOwner,
}

/// One process of the load, with the host it runs on.
struct Role {
    name: String,
    bg: Background,
}

#[derive(Default, Debug)]
struct Tally {
    tried: BTreeSet<(String, String)>,
    sent: BTreeSet<(String, String)>,
    /// (sender number, message number) -> queues it was received from.
    received: BTreeMap<(String, String), Vec<String>>,
    /// Messages whose text names another queue than the one they came from.
    misdelivered: Vec<String>,
    violations: usize,
    lock_entries: usize,
    enolink: usize,
    /// (role, call, errno, ms)
    failures: Vec<(String, String, String, f64)>,
    regressions: Vec<String>,
    sigbus: usize,
    shm_steps: usize,
}

impl Tally {
    fn add(&mut self, role: &str, out: &str) {
        for line in out.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.as_slice() {
                ["try", s, n, _] => {
                    self.tried.insert((s.to_string(), n.to_string()));
                }
                ["sent", s, n, _] => {
                    self.sent.insert((s.to_string(), n.to_string()));
                }
                ["got", q, key, s, n] => {
                    if q != key {
                        self.misdelivered.push(format!("{role}: {line}"));
                    }
                    self.received
                        .entry((s.to_string(), n.to_string()))
                        .or_default()
                        .push(q.to_string());
                }
                ["fail", call, errno, ms] => {
                    if *errno == "ENOLINK" {
                        self.enolink += 1;
                    }
                    let ms: f64 = ms
                        .parse()
                        .unwrap_or_else(|e| panic!("{role} printed {line:?}: {e}"));
                    self.failures
                        .push((role.to_owned(), call.to_string(), errno.to_string(), ms));
                }
                ["enter"] => self.lock_entries += 1,
                ["violation"] => self.violations += 1,
                ["sigbus"] => self.sigbus += 1,
                ["regress", ..] => self.regressions.push(format!("{role}: {line}")),
                ["done", ..] | ["ids", ..] => {
                    if role.starts_with("shm") {
                        self.shm_steps += f.get(1).and_then(|x| x.parse().ok()).unwrap_or(0);
                    }
                }
                _ => panic!("{role} printed an unknown line {line:?}"),
            }
        }
    }

    fn lost(&self) -> Vec<&(String, String)> {
        self.sent
            .iter()
            .filter(|m| !self.received.contains_key(*m))
            .collect()
    }

    fn duplicated(&self) -> Vec<(&(String, String), &Vec<String>)> {
        self.received.iter().filter(|(_, q)| q.len() > 1).collect()
    }

    /// Received messages no sender even tried to send.
    fn phantoms(&self) -> Vec<&(String, String)> {
        self.received
            .keys()
            .filter(|m| !self.tried.contains(*m))
            .collect()
    }

    /// Sends that failed (at most once: delivered or not) and how many of
    /// them were delivered after all.
    fn uncertain(&self) -> (usize, usize) {
        let failed: Vec<_> = self.tried.difference(&self.sent).collect();
        let delivered = failed
            .iter()
            .filter(|m| self.received.contains_key(**m))
            .count();
        (failed.len(), delivered)
    }

    fn slowest_failure(&self) -> Option<&(String, String, String, f64)> {
        self.failures.iter().max_by(|a, b| a.3.total_cmp(&b.3))
    }
}

fn spawn_role(c: &Cluster, roles: &mut Vec<Role>, host: usize, name: &str, args: &[&str]) {
    roles.push(Role {
        name: format!("{name}@h{host}"),
        bg: c.spawn(host, args),
    });
}

fn run(fault: Fault) {
    let c = Cluster::up(3);
    let prog = c_example("failload");
    let prog = prog.to_str().expect("utf-8 path");
    c.exec_ok(2, &[prog, "setup", Q1, Q2, SEM, SHM]);
    let lock_file = c.scratch_dir("failures").join("lock");
    let lock_file = lock_file.to_str().expect("utf-8 path");
    let load_ms = LOAD_MS.to_string();
    // What each host has before any load (host 2: the structures just
    // made; daemons may keep private objects of their own).
    let kinds = ["msg", "sem", "shm"];
    let before: BTreeMap<(usize, &str), usize> = (1..=3)
        .flat_map(|h| kinds.map(|k| ((h, k), c.ipcs(h, k).len())))
        .collect();

    let mut roles = Vec::new();
    for host in [1, 3] {
        for q in [Q1, Q2] {
            spawn_role(
                &c,
                &mut roles,
                host,
                &format!("recv-{q}"),
                &[prog, "recv", q],
            );
        }
    }
    for (s, host) in [(1, 1), (2, 1), (3, 3), (4, 3)] {
        let s = s.to_string();
        spawn_role(
            &c,
            &mut roles,
            host,
            &format!("send-{s}"),
            &[prog, "send", Q1, Q2, &s, &load_ms],
        );
        spawn_role(
            &c,
            &mut roles,
            host,
            "lock",
            &[prog, "lock", SEM, lock_file, &load_ms],
        );
    }
    spawn_role(&c, &mut roles, 1, "shmw", &[prog, "shmw", SHM, &load_ms]);
    spawn_role(&c, &mut roles, 3, "shmr", &[prog, "shmr", SHM, &load_ms]);

    // Inject the fault once every sender is under way.
    for r in roles.iter_mut().filter(|r| r.name.starts_with("send-")) {
        r.bg.wait_for_stdout("sent", LIMIT);
    }
    let fault_at = Instant::now();
    match fault {
        Fault::Cut => {
            thread::sleep(Duration::from_secs(2));
            c.set_link(2, false);
            thread::sleep(Duration::from_secs(3));
            c.set_link(2, true);
        }
        Fault::KillClient => {
            thread::sleep(Duration::from_secs(3));
            c.stop(3);
            thread::sleep(Duration::from_secs(2));
            c.start(3);
        }
        Fault::RebootOwner => {
            thread::sleep(Duration::from_secs(3));
            c.reboot(2);
            c.wait_all_up(1, LIMIT);
            c.exec_ok(
                2,
                &["dipc-msg", "get", Q_AFTER, "--create", "--mode", "666"],
            );
            // Markers (from "sender 0"): a stale id that reached the new
            // queue would take them, or leave its messages beside them.
            for i in 0..MARKERS {
                let text = format!("{Q_AFTER} 0 {i}");
                c.exec_ok(2, &["dipc-msg", "send", Q_AFTER, "1", &text]);
            }
        }
    }
    eprintln!(
        "{fault:?}: fault injected and healed in {:?}",
        fault_at.elapsed()
    );
    c.wait_all_up(1, LIMIT);

    // Senders, holders and segment users end on their own within LOAD_MS
    // and one call's bound; a killed host's are already gone.
    // One that does not is killed (so the figures can be counted) and
    // fails the test at the end.
    let mut hung = Vec::new();
    for r in roles.iter_mut().filter(|r| !r.name.starts_with("recv-")) {
        let limit = Duration::from_millis(LOAD_MS) + LIMIT;
        if r.bg.wait_timeout(limit).is_none() {
            hung.push(format!("{} (after {limit:?}): {}", r.name, r.bg.describe()));
            r.bg.kill();
        }
    }
    // Stop the receivers (those still there), then drain each queue once
    // more from host 1: what is left there counts as received.
    let queues: &[&str] = if fault == Fault::RebootOwner {
        &[Q_AFTER]
    } else {
        &[Q1, Q2]
    };
    for q in queues {
        for _ in 0..4 {
            c.exec_ok(1, &["dipc-msg", "send", q, "2", "stop"]);
        }
    }
    for r in roles.iter_mut().filter(|r| r.name.starts_with("recv-")) {
        if r.bg.wait_timeout(LIMIT).is_none() {
            hung.push(format!("{} (after {LIMIT:?}): {}", r.name, r.bg.describe()));
            r.bg.kill();
        }
    }
    let mut tally = Tally::default();
    for q in queues {
        let out = c.exec_ok(1, &[prog, "recv", q]);
        if fault == Fault::RebootOwner {
            // Nothing was meant for the queue made after the reboot.
            let mut after = Tally::default();
            after.add(&format!("drain-{q}"), &out);
            for (m, _) in after.received.iter().filter(|(m, _)| m.0 != "0") {
                tally
                    .misdelivered
                    .push(format!("{m:?} reached {q}, made after the reboot"));
            }
            for i in 0..MARKERS {
                if !after
                    .received
                    .contains_key(&("0".to_owned(), i.to_string()))
                {
                    tally.misdelivered.push(format!(
                        "marker {i} of {q} taken by someone else (a stale id); drained: {out:?}"
                    ));
                }
            }
        } else {
            tally.add(&format!("drain-{q}"), &out);
        }
    }
    for r in &roles {
        tally.add(&r.name, &r.bg.stdout());
    }

    if fault == Fault::RebootOwner {
        // The referee's entries still name the old incarnation's
        // structures; a get of each key frees it (README, dipcref: "once
        // the owner rebooted ... at the next get of the key"), and with it
        // the other hosts' placeholders.
        let out = c.exec_ok(1, &[prog, "gone", Q1, Q2, SEM, SHM]);
        let absent = out
            .lines()
            .filter(|l| l.starts_with("absent ") && l.ends_with(" ENOENT"))
            .count();
        assert_eq!(absent, 4, "keys of the rebooted owner still found: {out}");
    }
    if fault == Fault::KillClient {
        // The fault was real: host 3's load died with it.
        for r in roles.iter().filter(|r| r.name.ends_with("@h3")) {
            assert!(
                !r.bg.stdout().contains("done"),
                "{} outlived host 3's stop: {}",
                r.name,
                r.bg.describe()
            );
        }
    }

    // Leftovers: every worker ends once its session does; placeholders
    // stand only for the structures used (none once the owner rebooted:
    // their keys were freed).
    let workers_gone = wait_for(LIMIT, || {
        (1..=3).all(|h| pids_named(h, "dipc-worker").is_empty())
    });
    let mut leaks = Vec::new();
    if workers_gone.is_none() {
        for h in 1..=3 {
            leaks.push(format!(
                "host {h} workers {:?}",
                pids_named(h, "dipc-worker")
            ));
        }
    }
    // Placeholders on hosts 1 and 3: one per structure used, none once the
    // owner rebooted (its keys were freed), but host 1's of the queue made
    // after the reboot, which it drained.
    let used = [("msg", 2usize), ("sem", 1), ("shm", 1)];
    for (kind, n) in used {
        for h in 1..=3 {
            let allowed = match (fault, h) {
                (Fault::RebootOwner, 2) if kind == "msg" => before[&(h, kind)] + 1 - n,
                (Fault::RebootOwner, 2) => before[&(h, kind)] - n,
                (_, 2) => before[&(h, kind)],
                (Fault::RebootOwner, 1) if kind == "msg" => before[&(h, kind)] + 1,
                (Fault::RebootOwner, _) => before[&(h, kind)],
                _ => before[&(h, kind)] + n,
            };
            let mut last = Vec::new();
            let ok = wait_for(Duration::from_secs(10), || {
                last = c.ipcs(h, kind);
                last.len() <= allowed
            });
            if ok.is_none() {
                leaks.push(format!("host {h} {kind}: {last:?} (at most {allowed})"));
            }
        }
    }

    let lost = tally.lost();
    let dups = tally.duplicated();
    let phantoms = tally.phantoms();
    let (failed_sends, failed_delivered) = tally.uncertain();
    let slowest = tally.slowest_failure();
    let mut errnos: BTreeMap<String, usize> = BTreeMap::new();
    for f in &tally.failures {
        *errnos.entry(format!("{} {}", f.1, f.2)).or_default() += 1;
    }
    eprintln!(
        "{fault:?}: messages sent {} (tried {}), received {}, lost {}, duplicated {}, \
         misdelivered {}, never sent {}; failed sends {failed_sends} (at most once: \
         {failed_delivered} delivered); lock entries {}, violations {}, ENOLINK {}; \
         segment steps {}, SIGBUS {}, regressions {}; failed calls {:?}, slowest {:?}; \
         leaks {:?}; hung {}",
        tally.sent.len(),
        tally.tried.len(),
        tally.received.len(),
        lost.len(),
        dups.len(),
        tally.misdelivered.len(),
        phantoms.len(),
        tally.lock_entries,
        tally.violations,
        tally.enolink,
        tally.shm_steps,
        tally.sigbus,
        tally.regressions.len(),
        errnos,
        slowest,
        leaks,
        hung.len()
    );

    assert!(hung.is_empty(), "processes that did not end: {hung:#?}");
    assert!(tally.sent.len() > 100, "too little load: {tally:?}");
    assert!(tally.lock_entries > 100, "too little locking: {tally:?}");
    assert!(
        tally.misdelivered.is_empty(),
        "misdelivered: {:?}",
        tally.misdelivered
    );
    assert!(phantoms.is_empty(), "received but never sent: {phantoms:?}");
    assert!(dups.is_empty(), "duplicated: {dups:?}");
    // What the owner's queues held when it rebooted went with its kernel
    // (as on one host): the only loss a reboot is allowed.
    if fault != Fault::RebootOwner {
        assert!(lost.is_empty(), "lost: {lost:?}");
    }
    assert_eq!(tally.violations, 0, "two lock holders at once");
    assert!(
        tally.regressions.is_empty(),
        "segment word went back: {:?}",
        tally.regressions
    );
    if let Some(s) = slowest {
        assert!(s.3 <= CALL_BOUND_MS, "a call failed only after {s:?}");
    }
    assert!(leaks.is_empty(), "left over: {leaks:?}");
}

#[test]
fn owner_cut_off_under_load() {
    run(Fault::Cut);
}

#[test]
fn client_killed_under_load() {
    run(Fault::KillClient);
}

#[test]
fn owner_rebooted_under_load() {
    run(Fault::RebootOwner);
}
