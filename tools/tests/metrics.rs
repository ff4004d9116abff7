//! Integration tests of what each host counts: `dipcref stats` (this
//! host's and another's, text and `--json`), the Prometheus listener
//! (`[metrics] listen`, turned on by `tools/cluster up --metrics`) and
//! `dipcref status`, on simulated hosts (see `tools/cluster`).
//!
//! Calls are counted where they are served: a msgsnd from host 1 on a
//! queue of host 2 moves host 2's counters (its worker's report to its
//! dipcd), and host 1's count of sessions opened. They are counted where
//! they are made too: host 1's library reports its processes' calls to
//! host 1's dipcd (`calls_made`).

mod common;

use common::*;
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

/// Time the workers' reports are given to reach their dipcd (they report
/// at the end of a session, and each second while one lasts).
const REPORTED: Duration = Duration::from_secs(15);

fn prog(name: &str) -> String {
    c_example(name).to_string_lossy().into_owned()
}

/// `dipcref stats [HOST] --json` run on `from`, parsed.
fn stats(c: &Cluster, from: usize, host: Option<usize>) -> Value {
    let addr;
    let mut args = vec!["dipcref", "stats", "--json"];
    if let Some(h) = host {
        addr = host_addr(h);
        args.push(&addr);
    }
    let out = c.exec_ok(from, &args);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("bad JSON {out:?}: {e}"))
}

fn num(v: &Value, path: &[&str]) -> u64 {
    let mut at = v;
    for p in path {
        match at.get(p) {
            Some(next) => at = next,
            // Maps by name leave zeros out.
            None => return 0,
        }
    }
    at.as_u64()
        .unwrap_or_else(|| panic!("{path:?} is not a count in {v}"))
}

/// A `dipc-msg` producer on host 1 sending `count` messages to the queue
/// `key` 20 ms apart, in one process and one session: `count` / 50
/// seconds at least.
fn producer(c: &Cluster, key: &str, count: u32) -> Background {
    let count = count.to_string();
    c.spawn(
        1,
        &[
            "dipc-msg",
            "stress",
            "produce",
            key,
            "--producer",
            "1",
            "--count",
            &count,
            "--max-size",
            "16",
            "--pause-us",
            "20000",
        ],
    )
}

/// Waits until `host`'s counters (read from `from`) satisfy `ok`; panics
/// with the last reading if they never do.
fn wait_stats(c: &Cluster, from: usize, host: usize, ok: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let done = wait_for(REPORTED, || {
        last = stats(c, from, Some(host));
        ok(&last)
    });
    assert!(
        done.is_some(),
        "host {host}'s counters never got there: {last:#}"
    );
    last
}

#[test]
fn counters_move_as_remote_calls_are_made() {
    let c = Cluster::up(3);
    let counter = prog("sem_counter");
    let target = prog("sig_target");
    let pidctl = prog("pidctl");
    c.exec_ok(
        2,
        &["dipc-msg", "get", "0x3e71", "--create", "--mode", "0666"],
    );
    c.exec_ok(2, &[&counter, "init", "0x3e72"]);
    let mut t = c.spawn(2, &[&target, "7", "1", "60"]);
    let pid_d = t.pid_d().to_string();
    let mailbox = prog("mailbox");
    let mut m = c.spawn(2, &[&mailbox, "sleep"]);
    let mailbox_pid_d = m.pid_d().to_string();

    let before = stats(&c, 3, Some(2));
    let opened_before = num(&stats(&c, 1, None), &["sessions_opened"]);

    const SENDS: u64 = 5;
    for i in 0..SENDS {
        c.exec_ok(
            1,
            &["dipc-msg", "send", "0x3e71", "1", &format!("text-{i:04}")],
        );
    }
    c.exec_ok(1, &["dipc-msg", "recv", "0x3e71", "--nowait"]);
    // Each increment is two semops (P and V) on host 2's semaphore.
    c.exec_ok(1, &[&counter, "run", "0x3e72", "10"]);
    let out = c.exec_ok(1, &[&pidctl, "kill", &pid_d, "rt1", "7"]);
    assert_eq!(out.trim(), "sent 7");
    c.exec_ok(1, &[&mailbox, "send", &mailbox_pid_d, "3", "m"]);
    let st = t.wait(Duration::from_secs(30));
    assert!(st.success(), "{}", t.describe());

    let b = |path: &[&str]| num(&before, path);
    let after = wait_stats(&c, 3, 2, |a| {
        num(a, &["calls_served", "kill_d"]) >= b(&["calls_served", "kill_d"]) + 7
            && num(a, &["calls_served", "send_d"]) >= b(&["calls_served", "send_d"]) + 3
            && num(a, &["calls_served", "msgsnd"]) >= b(&["calls_served", "msgsnd"]) + SENDS
    });
    let a = |path: &[&str]| num(&after, path);
    let rose = |path: &[&str], by: u64| {
        assert!(
            a(path) >= b(path) + by,
            "{path:?} rose from {} to {}, not by {by} or more:\nbefore {before:#}\nafter {after:#}",
            b(path),
            a(path)
        );
    };
    rose(&["calls_served", "msgsnd"], SENDS);
    rose(&["calls_served", "msgrcv"], 1);
    rose(&["calls_served", "semop"], 20);
    rose(&["calls_served", "kill_d"], 7);
    rose(&["calls_served", "send_d"], 3);
    // sig_target has ended; the mailbox process is still registered.
    assert!(a(&["registered_processes"]) >= 1, "{after:#}");
    assert!(a(&["uptime_s"]) >= 1, "{after:#}");
    rose(&["bytes_in"], SENDS * 9);
    rose(&["bytes_out"], 9);
    // Every served call is in the histogram: at least the ones above.
    rose(&["call_latency", "count"], SENDS + 1 + 20 + 7);
    // One session per dipc-msg process at least.
    rose(&["worker_sessions"], SENDS + 1);
    rose(&["workers"], SENDS + 1);

    let buckets = after["call_latency"]["buckets"]
        .as_array()
        .expect("buckets");
    let counts: Vec<u64> = buckets.iter().map(|b| num(b, &["count"])).collect();
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
    assert_eq!(
        buckets.last().map(|b| b["le_us"].clone()),
        Some("+Inf".into())
    );
    assert_eq!(counts.last().copied(), Some(a(&["call_latency", "count"])));

    m.kill();
    // Host 1 opened those sessions (through employers of its dipcd).
    let opened = num(&stats(&c, 1, None), &["sessions_opened"]);
    assert!(
        opened >= opened_before + SENDS + 3,
        "host 1 opened {opened} sessions, {opened_before} before"
    );

    // The text form, read on host 2 itself, names what it counted.
    let text = c.exec_ok(2, &["dipcref", "stats"]);
    for needle in [
        "REMOTE CALLS SERVED HERE",
        "msgsnd",
        "kill_d",
        "semop",
        "SERVICE TIME",
    ] {
        assert_has(&text, "dipcref stats", needle);
    }
}

#[test]
fn a_failed_call_is_counted_under_its_errno() {
    let c = Cluster::up(2);
    c.exec_ok(
        2,
        &["dipc-msg", "get", "0x3e73", "--create", "--mode", "0666"],
    );
    let before = stats(&c, 1, Some(2));
    // The queue is empty: a receive without waiting fails with ENOMSG on
    // host 2, and dipc-msg says so.
    for _ in 0..3 {
        c.exec_err(1, &["dipc-msg", "recv", "0x3e73", "--nowait"], &["ENOMSG"]);
    }
    let want = num(&before, &["call_errors", "ENOMSG"]) + 3;
    let after = wait_stats(&c, 1, 2, |a| num(a, &["call_errors", "ENOMSG"]) >= want);
    assert!(num(&after, &["calls_served", "msgrcv"]) >= 3, "{after:#}");
    // A key nobody made: dipcd of host 1 answers the get with ENOENT.
    let local = stats(&c, 1, None);
    let enoent = num(&local, &["request_errors", "ENOENT"]);
    c.exec_err(1, &["dipc-msg", "get", "0x3e74"], &["ENOENT"]);
    let local = stats(&c, 1, None);
    assert!(
        num(&local, &["request_errors", "ENOENT"]) > enoent,
        "{local:#}"
    );
    assert!(num(&local, &["requests", "KeyGet"]) >= 1, "{local:#}");
}

/// `GET /metrics` on `host`'s listener, from inside that host.
fn scrape(c: &Cluster, host: usize, path: &str) -> std::process::Output {
    let url = format!("http://{}:9477{path}", host_addr(host));
    c.exec(host, &["curl", "-sS", "-i", "--max-time", "10", &url])
}

/// The checks a scraper makes of the text exposition format.
fn parse_exposition(text: &str) -> HashMap<String, f64> {
    let mut typed: HashMap<String, String> = HashMap::new();
    let mut samples = HashMap::new();
    let mut buckets: Vec<f64> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect(line);
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "bad TYPE: {line}"
            );
            typed.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        assert!(
            !line.starts_with('#'),
            "a comment that is neither HELP nor TYPE: {line}"
        );
        let (series, value) = line.rsplit_once(' ').expect(line);
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, Some(l)),
            None => (series, None),
        };
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
                && !name.starts_with(|ch: char| ch.is_ascii_digit()),
            "bad metric name: {line}"
        );
        if let Some(l) = labels {
            let inner = l.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
            for pair in inner.split(',') {
                let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("{line}"));
                assert!(
                    !k.is_empty() && k.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_'),
                    "bad label name: {line}"
                );
                assert!(
                    v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                    "{line}"
                );
            }
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| typed.get(*f).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        let kind = typed
            .get(family)
            .unwrap_or_else(|| panic!("no TYPE before {line}"));
        if kind == "counter" {
            assert!(name.ends_with("_total"), "a counter without _total: {line}");
        }
        if name == "dipc_call_latency_seconds_bucket" {
            buckets.push(v);
            if series.contains("le=\"+Inf\"") {
                samples.insert("+Inf".to_owned(), v);
            }
        }
        samples.insert(series.to_owned(), v);
    }
    assert!(buckets.len() > 1, "no histogram buckets:\n{text}");
    assert!(
        buckets.windows(2).all(|w| w[0] <= w[1]),
        "buckets not cumulative: {buckets:?}"
    );
    let inf = samples.get("+Inf").copied();
    assert_eq!(inf, buckets.last().copied(), "+Inf is not the last bucket");
    assert_eq!(
        inf,
        samples.get("dipc_call_latency_seconds_count").copied(),
        "+Inf bucket differs from _count"
    );
    samples
}

fn body(out: &std::process::Output) -> (String, String) {
    assert!(out.status.success(), "curl failed:\n{}", describe(out));
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    (head.to_owned(), body.to_owned())
}

#[test]
fn the_prometheus_listener_serves_parseable_counters() {
    let c = Cluster::up_with(2, &["--metrics"]);
    c.exec_ok(
        2,
        &["dipc-msg", "get", "0x3e75", "--create", "--mode", "0666"],
    );
    for i in 0..4 {
        c.exec_ok(1, &["dipc-msg", "send", "0x3e75", "1", &format!("m{i}")]);
    }
    wait_stats(&c, 1, 2, |a| num(a, &["calls_served", "msgsnd"]) >= 4);

    let (head, text) = body(&scrape(&c, 2, "/metrics"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let samples = parse_exposition(&text);
    let sends = samples
        .get("dipc_calls_served_total{call=\"msgsnd\"}")
        .copied()
        .unwrap_or_else(|| panic!("no msgsnd count:\n{text}"));
    assert!(sends >= 4.0, "{text}");
    assert!(
        samples
            .get("dipc_call_latency_seconds_count")
            .is_some_and(|&n| n >= 4.0),
        "{text}"
    );
    // Host 1's: its dipcd took the Connect requests of those sessions.
    let (_, text1) = body(&scrape(&c, 1, "/metrics"));
    let s1 = parse_exposition(&text1);
    assert!(
        s1.get("dipc_sessions_opened_total")
            .is_some_and(|&n| n >= 4.0),
        "{text1}"
    );
    assert!(
        s1.get("dipc_requests_total{kind=\"Connect\"}")
            .is_some_and(|&n| n >= 4.0),
        "{text1}"
    );

    let (head, _) = body(&scrape(&c, 2, "/nothing"));
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    // A request past the bound is refused, not buffered.
    let url = format!("http://{}:9477/metrics", host_addr(2));
    let big = format!("X-Filler: {}", "a".repeat(10_000));
    let out = c.exec(
        2,
        &["curl", "-sS", "-i", "--max-time", "10", "-H", &big, &url],
    );
    let (head, _) = body(&out);
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    // The daemon is still serving.
    let (head, _) = body(&scrape(&c, 2, "/metrics"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[test]
fn status_lists_every_host() {
    let c = Cluster::up(3);
    c.exec_ok(
        3,
        &["dipc-msg", "get", "0x3e76", "--create", "--mode", "0666"],
    );
    let text = c.exec_ok(2, &["dipcref", "status"]);
    for h in 1..=3 {
        let addr = format!("{}:{HOST_PORT}", host_addr(h));
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&addr))
            .unwrap_or_else(|| panic!("host {h} not listed:\n{text}"));
        assert!(line.contains(" up "), "host {h} not up: {line}\n{text}");
    }
    assert_has(
        &text,
        "dipcref status",
        "KEYS: 1 in use (1 msg, 0 sem, 0 shm)",
    );
    assert_has(&text, "dipcref status", "ERRORS ON THIS HOST");
    assert_has(&text, "dipcref status", " LOAD ");

    let out = c.exec_ok(1, &["dipcref", "status", "--json"]);
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{out}: {e}"));
    let hosts = v["hosts"].as_array().expect("hosts");
    assert_eq!(hosts.len(), 3, "{v:#}");
    for h in hosts {
        assert_eq!(h["state"], "up", "{v:#}");
        assert!(h.get("uptime_s").is_some(), "no counters for {h}");
    }
    assert_eq!(num(&v, &["keys", "msg"]), 1, "{v:#}");

    // A host that stopped is listed down, without counters.
    c.stop(3);
    let mut text = String::new();
    let down = wait_for(Duration::from_secs(10), || {
        text = c.exec_ok(1, &["dipcref", "status"]);
        text.lines()
            .any(|l| l.trim_start().starts_with(&host_addr(3)) && l.contains(" down "))
    });
    assert!(down.is_some(), "host 3 not shown down:\n{text}");
}

/// An application keeps its sessions as long as it lives: its worker
/// reports while the session lasts, not only when it ends.
#[test]
fn a_long_session_is_counted_while_it_lasts() {
    let c = Cluster::up(2);
    c.exec_ok(
        2,
        &["dipc-msg", "get", "0x3e77", "--create", "--mode", "0666"],
    );
    let before = num(&stats(&c, 1, Some(2)), &["calls_served", "msgsnd"]);
    // 400 sends 20 ms apart: 8 s at least, in one session.
    let mut p = producer(&c, "0x3e77", 400);
    wait_stats(&c, 1, 2, |a| {
        num(a, &["calls_served", "msgsnd"]) >= before + 20
    });
    assert!(
        p.running(),
        "the producer ended before its calls were counted: {}",
        p.describe()
    );
    p.kill();
}

/// The calling host counts the remote calls its processes make: a long
/// run's while it runs (the library reports each second), a short one's
/// at its exit, failures under their errno, and the caller's wait in its
/// own histogram. The host that only served them made none.
#[test]
fn calls_made_are_counted_on_the_calling_host() {
    let c = Cluster::up(2);
    c.exec_ok(
        2,
        &["dipc-msg", "get", "0x3e7a", "--create", "--mode", "0666"],
    );
    let before = stats(&c, 1, None);
    let b = |path: &[&str]| num(&before, path);
    // 400 sends 20 ms apart: 8 s at least, in one process.
    let mut p = producer(&c, "0x3e7a", 400);
    let sends = b(&["calls_made", "msgsnd"]);
    wait_stats(&c, 1, 1, |a| {
        num(a, &["calls_made", "msgsnd"]) >= sends + 20
    });
    assert!(
        p.running(),
        "the producer ended before its calls were counted: {}",
        p.describe()
    );
    p.kill();
    // A process of one call reports it as it exits. These fail: the
    // receive has a type no message has.
    let enomsg = b(&["calls_made_errors", "ENOMSG"]);
    for _ in 0..3 {
        c.exec_err(
            1,
            &["dipc-msg", "recv", "0x3e7a", "--type", "99", "--nowait"],
            &["ENOMSG"],
        );
    }
    let after = wait_stats(&c, 1, 1, |a| {
        num(a, &["calls_made_errors", "ENOMSG"]) >= enomsg + 3
    });
    let a = |path: &[&str]| num(&after, path);
    assert!(a(&["calls_made", "msgrcv"]) >= b(&["calls_made", "msgrcv"]) + 3);
    assert!(
        a(&["calls_made_latency", "count"]) >= b(&["calls_made_latency", "count"]) + 23,
        "{after:#}"
    );
    assert!(a(&["calls_made_latency", "sum_us"]) > 0, "{after:#}");
    // Made calls are not served calls: host 1 served none of these.
    assert_eq!(
        a(&["calls_served", "msgsnd"]),
        b(&["calls_served", "msgsnd"])
    );
    let text = c.exec_ok(1, &["dipcref", "stats"]);
    assert_has(&text, "dipcref stats", "REMOTE CALLS MADE FROM HERE");
    let served = stats(&c, 1, Some(2));
    assert_eq!(
        served["calls_made"],
        Value::Object(Default::default()),
        "host 2 made no remote calls: {served:#}"
    );
}

/// A segment's manager (on its owner host) counts the faults it serves
/// and the rights it takes back, and reports them to its dipcd.
#[test]
fn shared_memory_faults_and_invalidations_are_counted() {
    let c = Cluster::up(3);
    let touch = prog("shm_touch");
    c.exec_ok(2, &[&touch, "0x3e78", "8192", "-", "stat"]);
    let before = stats(&c, 1, Some(2));
    // Host 1 writes page 0 and keeps it; host 3's read takes the write
    // right back from host 1.
    let mut w = c.spawn(1, &[&touch, "0x3e78", "8192", "0", "hold", "41"]);
    w.wait_for_stdout("held", Duration::from_secs(20));
    let read = c.exec_ok(3, &[&touch, "0x3e78", "8192", "0", "read"]);
    assert_eq!(read.trim(), "41");
    w.kill();
    let b = |path: &[&str]| num(&before, path);
    let after = wait_stats(&c, 1, 2, |a| {
        num(a, &["shm_faults"]) >= b(&["shm_faults"]) + 2
            && num(a, &["shm_invalidations"]) > b(&["shm_invalidations"])
    });
    assert!(num(&after, &["shm_managers_started"]) >= 1, "{after:#}");
    // The page went to host 3 (4096 bytes at least, as the page size).
    assert!(
        num(&after, &["bytes_out"]) >= b(&["bytes_out"]) + 4096,
        "{after:#}"
    );
}

/// Only this host's workers and shm managers add to its counters: a
/// local process's report, root's included, is refused and counts
/// nothing.
#[test]
fn a_report_from_any_other_process_is_refused() {
    let c = Cluster::up(1);
    let before = stats(&c, 1, None);
    let out = attack(&c, 1, &["forged-stats"]);
    assert_has(&out, "forged-stats as nobody", "reply: error EPERM");
    let out = attack_on(&c, 1, true, &["forged-stats"]);
    assert_has(&out, "forged-stats as root", "reply: error EPERM");
    let after = stats(&c, 1, None);
    assert_eq!(
        num(&after, &["calls_served", "msgsnd"]),
        num(&before, &["calls_served", "msgsnd"]),
        "{after:#}"
    );
    assert_eq!(
        num(&after, &["call_latency", "count"]),
        num(&before, &["call_latency", "count"]),
        "{after:#}"
    );
    // The refusals are dipcd's answers: counted as its errors.
    assert!(
        num(&after, &["request_errors", "EPERM"]) >= num(&before, &["request_errors", "EPERM"]) + 2,
        "{after:#}"
    );
    assert!(num(&after, &["requests", "StatsReport"]) >= 2, "{after:#}");
}

/// A worker runs as its caller's uid: its reports must not hold one of
/// that uid's `limits.clients_per_uid` connections to dipcd while its
/// session lasts.
#[test]
fn served_sessions_hold_none_of_their_users_dipcd_connections() {
    let c = Cluster::up(2);
    // Read on host 2 itself: a query from another host would be a session
    // (and a worker) of its own.
    let before = num(&stats(&c, 2, None), &["worker_sessions"]);
    let target = front_end(2);
    let mut s = c.spawn(
        1,
        &as_nobody(&[
            "dipc-attack",
            "sessions",
            &target,
            "--count",
            "3",
            "--hold-ms",
            "60000",
        ]),
    );
    s.wait_for_stdout("sessions: ", Duration::from_secs(30));
    assert!(
        s.stdout().contains("sessions: 3 opened"),
        "{}",
        s.describe()
    );
    // Their workers have reported (each at least once).
    let mut last = Value::Null;
    let reported = wait_for(REPORTED, || {
        last = stats(&c, 2, None);
        num(&last, &["worker_sessions"]) >= before + 3
    });
    assert!(
        reported.is_some(),
        "the sessions were never reported: {last:#}"
    );
    let mut a = c.spawn(
        2,
        &as_nobody(&[
            "dipc-attack",
            "clients",
            "--count",
            "300",
            "--hold-ms",
            "1000",
        ]),
    );
    a.wait_for_stdout("clients: ", Duration::from_secs(30));
    assert!(
        a.stdout().contains("clients: 256 opened, 44 refused"),
        "nobody must still get all of its limits.clients_per_uid (256) connections:\n{}",
        a.describe()
    );
    a.kill();
    s.kill();
}

/// Sends `sig` (`STOP`, `CONT`) to host `i`'s dipcd.
fn signal_dipcd(i: usize, sig: &str) {
    let file = state_dir().join(format!("h{i}")).join("dipcd.pid");
    let pid = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let out = run_with_timeout(
        std::process::Command::new("kill").args([&format!("-{sig}"), pid.trim()]),
        Duration::from_secs(10),
    );
    assert!(out.status.success(), "kill -{sig}: {}", describe(&out));
}

/// Host `i`'s dipcd, paused (SIGSTOP) until this is dropped.
struct Paused(usize);

impl Paused {
    fn new(i: usize) -> Paused {
        signal_dipcd(i, "STOP");
        Paused(i)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        signal_dipcd(self.0, "CONT");
    }
}

/// The messages in the queue of key `key` (as ipcs prints it) on `host`.
fn qnum(c: &Cluster, host: usize, key: &str) -> u64 {
    let out = c.exec_ok(host, &["ipcs", "-q"]);
    out.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no queue {key} on host {host}:\n{out}"))
}

/// Counting never holds up serving: with the serving host's dipcd paused,
/// its worker goes on taking a session's sends (a report waiting for
/// dipcd would stop it for the request time-out at each report), and the
/// counts arrive once dipcd runs again.
#[test]
fn calls_are_served_and_counted_while_the_hosts_dipcd_is_paused() {
    let c = Cluster::up(2);
    c.exec_ok(
        2,
        &["dipc-msg", "get", "0x3e79", "--create", "--mode", "0666"],
    );
    // 300 sends 20 ms apart in one session: 6 s at least.
    let mut p = producer(&c, "0x3e79", 300);
    let mut last = Value::Null;
    let counting = wait_for(REPORTED, || {
        last = stats(&c, 2, None);
        num(&last, &["calls_served", "msgsnd"]) >= 10
    });
    assert!(counting.is_some(), "no sends counted: {last:#}");
    {
        let _paused = Paused::new(2);
        // A report falls due within a second of calls.
        std::thread::sleep(Duration::from_millis(1500));
        let n = qnum(&c, 2, "0x00003e79");
        let more = wait_for(Duration::from_secs(3), || {
            qnum(&c, 2, "0x00003e79") >= n + 10
        });
        assert!(
            more.is_some(),
            "host 2's worker stopped serving while its dipcd was paused: {n} messages, then {}",
            qnum(&c, 2, "0x00003e79")
        );
    }
    let st = p.wait(Duration::from_secs(60));
    assert!(st.success(), "{}", p.describe());
    let mut last = Value::Null;
    let all = wait_for(REPORTED, || {
        last = stats(&c, 2, None);
        num(&last, &["calls_served", "msgsnd"]) >= 300
    });
    assert!(all.is_some(), "not every send counted: {last:#}");
}

/// The library's reports of calls made are posted, never waited for: a
/// paused dipcd on the calling host holds up none of its processes'
/// calls on another host, and takes their reports once it resumes.
#[test]
fn calls_go_on_while_the_callers_dipcd_is_paused() {
    let c = Cluster::up(2);
    c.exec_ok(
        2,
        &["dipc-msg", "get", "0x3e7b", "--create", "--mode", "0666"],
    );
    let made = num(&stats(&c, 1, None), &["calls_made", "msgsnd"]);
    // 300 sends 20 ms apart in one session: 6 s at least.
    let mut p = producer(&c, "0x3e7b", 300);
    let started = wait_for(REPORTED, || qnum(&c, 2, "0x00003e7b") >= 10);
    assert!(started.is_some(), "{}", p.describe());
    {
        let _paused = Paused::new(1);
        // A report falls due within a second of calls.
        std::thread::sleep(Duration::from_millis(1500));
        let n = qnum(&c, 2, "0x00003e7b");
        let more = wait_for(Duration::from_secs(3), || {
            qnum(&c, 2, "0x00003e7b") >= n + 10
        });
        assert!(
            more.is_some(),
            "host 1's process stopped calling while its dipcd was paused: {n} messages, then {}",
            qnum(&c, 2, "0x00003e7b")
        );
    }
    let st = p.wait(Duration::from_secs(60));
    assert!(st.success(), "{}", p.describe());
    wait_stats(&c, 1, 1, |a| {
        num(a, &["calls_made", "msgsnd"]) >= made + 300
    });
}
