//! Integration tests of cluster membership with real `dipcd` daemons on
//! simulated hosts (network + IPC namespaces, see `tools/cluster`).
//!
//! They need root and `ip netns`; where those are missing they fail, never skip.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

fn addresses(rows: &[HostRow]) -> Vec<String> {
    let mut a: Vec<String> = rows.iter().map(|r| r.address.clone()).collect();
    a.sort();
    a
}

fn expected_addresses(n: usize) -> Vec<String> {
    let mut a: Vec<String> = (1..=n).map(host_addr).collect();
    a.sort();
    a
}

#[test]
fn three_hosts_join() {
    let c = Cluster::up(3);

    let rows = c.dipcref_hosts(2);
    assert_eq!(
        addresses(&rows),
        expected_addresses(3),
        "host table seen from host 2: {rows:#?}"
    );
    for r in &rows {
        assert!(r.is_up(), "host {} is not up: {rows:#?}", r.address);
        assert_eq!(r.port, HOST_PORT, "wrong port for {}: {rows:#?}", r.address);
    }

    let table = c.exec_ok(2, &["dipcref", "hosts"]);
    for i in 1..=3 {
        assert!(
            table.contains(&host_addr(i)),
            "plain `dipcref hosts` lacks {}:\n{table}",
            host_addr(i)
        );
    }
}

#[test]
fn stopped_host_goes_down_and_comes_back() {
    let c = Cluster::up(3);
    let h3 = host_addr(3);

    let killed = Instant::now();
    c.stop(3);
    let limit = HEARTBEAT_TIMEOUT + Duration::from_secs(2);
    let mut last = None;
    let took = wait_for(limit.saturating_sub(killed.elapsed()), || {
        last = Some(c.try_dipcref_hosts(2));
        matches!(&last, Some(Ok(rows)) if rows.iter().any(|r| r.address == h3 && !r.is_up()))
    });
    assert!(
        took.is_some(),
        "host 3 was killed {:?} ago but host 2 does not see it down (limit {limit:?}); \
         last answer: {last:#?}",
        killed.elapsed(),
    );
    let rows = c.dipcref_hosts(2);
    for r in rows.iter().filter(|r| r.address != h3) {
        assert!(r.is_up(), "{} went down too: {rows:#?}", r.address);
    }

    c.start(3);
    let mut last = None;
    let took = wait_for(Duration::from_secs(10), || {
        last = Some(c.try_dipcref_hosts(2));
        matches!(&last, Some(Ok(rows))
            if rows.len() == 3 && rows.iter().all(HostRow::is_up))
    });
    assert!(
        took.is_some(),
        "host 3 did not come back up as seen from host 2 within 10 s; last answer: \
         {last:#?}"
    );
    assert_eq!(addresses(&c.dipcref_hosts(2)), expected_addresses(3));
}

#[test]
fn wrong_secret_refused() {
    let c = Cluster::up(2);
    let dir = c.scratch_dir("wrong-secret");
    let secret = dir.join("secret");
    write_secret_file(&secret, &random_secret_hex());
    let mut cfg = DaemonConfig::extra(&dir, &host_addr(2), 7200);
    cfg.secret_file = secret;
    let conf = dir.join("dipc.conf");
    cfg.write(&conf);

    let mut intruder = c.spawn_dipcd(2, &conf, &dir);
    match intruder.wait_exit(Duration::from_secs(10)) {
        None => {
            let log = intruder.log();
            intruder.kill();
            panic!(
                "a dipcd with the wrong cluster secret was still running after 10 s; its log:\n\
                 {log}"
            );
        }
        Some(st) => assert!(
            !st.success(),
            "a dipcd with the wrong cluster secret exited successfully; its log:\n{}",
            intruder.log()
        ),
    }

    let want = format!(
        "refused connection from {}: authentication failed (wrong cluster secret)",
        host_addr(2)
    );
    assert!(
        wait_for(Duration::from_secs(5), || c.log(1).contains(&want)).is_some(),
        "host 1's log lacks {want:?}:\n{}\nintruder's log:\n{}",
        c.log(1),
        intruder.log()
    );

    let rows = c.dipcref_hosts(1);
    assert_eq!(addresses(&rows), expected_addresses(2), "{rows:#?}");
    assert!(rows.iter().all(HostRow::is_up), "{rows:#?}");
}

#[test]
fn disallowed_address_refused() {
    let c = Cluster::up(2);
    let outsider = format!("{SUBNET}.200");
    c.exec_ok(
        2,
        &[
            "ip",
            "addr",
            "add",
            &format!("{outsider}/24"),
            "dev",
            "eth0",
        ],
    );
    let dir = c.scratch_dir("disallowed");
    let cfg = DaemonConfig::extra(&dir, &outsider, 7200);
    let conf = dir.join("dipc.conf");
    cfg.write(&conf);

    let mut intruder = c.spawn_dipcd(2, &conf, &dir);
    let want = format!("refused connection from {outsider}: address not in allowed_hosts");
    let mut listed: Option<Vec<HostRow>> = None;
    let check_table = |listed: &mut Option<Vec<HostRow>>| {
        if let Ok(rows) = c.try_dipcref_hosts(1) {
            if rows.iter().any(|r| r.address == outsider) {
                *listed = Some(rows);
            }
        }
    };
    let refused = wait_for(Duration::from_secs(10), || {
        check_table(&mut listed);
        c.log(1).contains(&want)
    });
    // Give a wrongly admitted host a moment to show up in the table.
    for _ in 0..5 {
        check_table(&mut listed);
        std::thread::sleep(Duration::from_millis(200));
    }
    let intruder_log = intruder.log();
    intruder.kill();

    assert!(
        refused.is_some(),
        "host 1's log lacks {want:?} 10 s after a dipcd at {outsider} started:\n{}\n\
         intruder's log:\n{intruder_log}",
        c.log(1)
    );
    assert!(
        listed.is_none(),
        "the host table listed the refused address {outsider}: {listed:#?}"
    );
    let rows = c.dipcref_hosts(1);
    assert_eq!(addresses(&rows), expected_addresses(2), "{rows:#?}");
}

/// `(section, key, id)` of every object `ipcs` lists in the root namespace.
fn root_ipcs() -> BTreeSet<(String, String, String)> {
    let out = Command::new("ipcs").output().expect("run ipcs");
    assert!(out.status.success(), "ipcs failed: {}", describe(&out));
    let mut section = String::new();
    let mut set = BTreeSet::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.starts_with("------") {
            section = line.trim_matches(|ch| ch == '-' || ch == ' ').to_owned();
        } else if line.starts_with("0x") {
            let mut f = line.split_whitespace();
            let key = f.next().unwrap_or_default().to_owned();
            let id = f.next().unwrap_or_default().to_owned();
            set.insert((section.clone(), key, id));
        }
    }
    set
}

/// Processes that belong to a cluster: a dipcd, or anything naming the state dir.
fn cluster_processes() -> Vec<String> {
    let dir = state_dir();
    let dir = dir.to_string_lossy();
    let inside = format!("{}/", dir.trim_end_matches('/'));
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").expect("read /proc").flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
            continue;
        }
        let Ok(raw) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let exe = fs::read_link(e.path().join("exe"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let is_dipcd = |s: &str| {
            let base = s.rsplit('/').next().unwrap_or(s);
            base == "dipcd" || base == "dipcd (deleted)"
        };
        let names_dir = args.iter().any(|a| a == &*dir || a.contains(&inside));
        if names_dir || args.first().is_some_and(|a| is_dipcd(a)) || is_dipcd(&exe) {
            found.push(format!("pid {pid}: {}", args.join(" ")));
        }
    }
    found
}

#[test]
fn down_leaves_nothing() {
    require_namespaces();
    let before = root_ipcs();
    let c = Cluster::up(2);

    let made = c.exec_ok(1, &["ipcmk", "-Q"]);
    let qid = made
        .split_whitespace()
        .last()
        .unwrap_or_default()
        .to_owned();
    let on_host1 = c.exec_ok(1, &["ipcs", "-q"]);
    assert!(
        on_host1
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(qid.as_str())),
        "host 1 does not list the queue it made ({made:?}):\n{on_host1}"
    );
    let on_host2 = c.exec_ok(2, &["ipcs", "-q"]);
    assert!(
        !on_host2.lines().any(|l| l.starts_with("0x")),
        "host 2 sees message queues it never made (IPC namespaces not separate):\n{on_host2}"
    );
    let leaked: Vec<_> = root_ipcs().difference(&before).cloned().collect();
    assert!(
        leaked.is_empty(),
        "while up, new objects appeared in the root IPC namespace: {leaked:?}"
    );

    let out = c.down();
    assert!(out.status.success(), "down failed:\n{}", describe(&out));

    let ns = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let ns = String::from_utf8_lossy(&ns.stdout).into_owned();
    let left: Vec<&str> = ns.lines().filter(|l| l.starts_with("dipc-")).collect();
    assert!(left.is_empty(), "namespaces left after down: {left:?}");

    // Killed processes can take a moment to be reaped.
    let mut procs = Vec::new();
    let gone = wait_for(Duration::from_secs(3), || {
        procs = cluster_processes();
        procs.is_empty()
    });
    assert!(gone.is_some(), "processes left after down: {procs:#?}");

    assert!(
        !state_dir().exists(),
        "state dir {} still exists after down",
        state_dir().display()
    );
    let leaked: Vec<_> = root_ipcs().difference(&before).cloned().collect();
    assert!(
        leaked.is_empty(),
        "after down, new objects in the root IPC namespace: {leaked:?}"
    );

    let again = c.down();
    assert!(
        again.status.success(),
        "a second down failed:\n{}",
        describe(&again)
    );
}
