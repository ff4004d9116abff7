//! Running dipcd as a systemd service: the unit file, and the readiness
//! it promises (`Type=notify`: ready once the host has joined) from the
//! dipcd that `tools/install` puts in place.

mod common;

use common::*;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace holds tools/")
}

/// `dist/dipcd.service` passes `systemd-analyze verify` (with `ExecStart`
/// pointing at the dipcd built here, as the package installs it at
/// `/usr/sbin/dipcd`).
#[test]
fn the_unit_file_verifies() {
    let unit = std::fs::read_to_string(repo().join("dist/dipcd.service")).expect("the unit");
    assert!(unit.contains("ExecStart=/usr/sbin/dipcd "), "{unit}");
    assert!(unit.contains("Type=notify"), "{unit}");
    let dipcd = repo().join("target/release/dipcd");
    assert!(dipcd.exists(), "build dipcd first: {}", dipcd.display());
    let dir = std::env::temp_dir().join(format!("dipc-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let path = dir.join("dipcd.service");
    let here = unit.replace("/usr/sbin/dipcd", dipcd.to_str().expect("utf-8 path"));
    std::fs::write(&path, here).expect("write the unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze runs (tools/test installs it)");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        describe(&out)
    );
}

/// The installed dipcd, started as the installed unit starts it (its
/// `ExecStart` and `Environment`, with `$NOTIFY_SOCKET` set, inside a
/// simulated host), says `READY=1` once its host has joined the cluster,
/// not before, and `STOPPING=1` when SIGTERM stops it.
#[test]
fn the_installed_dipcd_notifies_readiness_once_joined() {
    let c = Cluster::up(2);
    let dir = c.scratch_dir("notify");
    let prefix = dir.join("prefix");
    let out = Command::new(repo().join("tools/install"))
        .args(["--no-build", "--prefix"])
        .arg(&prefix)
        .output()
        .expect("tools/install runs");
    assert!(out.status.success(), "tools/install: {}", describe(&out));
    let unit = std::fs::read_to_string(prefix.join("lib/systemd/system/dipcd.service"))
        .expect("the installed unit");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap_or_else(|| panic!("no ExecStart in the installed unit:\n{unit}"));
    let argv: Vec<&str> = exec.split_whitespace().collect();
    let dipcd = prefix.join("sbin/dipcd");
    assert_eq!(
        argv.first().copied(),
        dipcd.to_str(),
        "the installed unit does not start the installed dipcd: {exec}"
    );
    // The unit's -c names the installed configuration; the provisioning
    // step writes this host's settings there.
    let conf = argv
        .iter()
        .position(|a| *a == "-c")
        .and_then(|i| argv.get(i + 1))
        .unwrap_or_else(|| panic!("ExecStart has no -c PATH: {exec}"));
    assert_eq!(
        *conf,
        prefix.join("etc/dipc/dipc.conf").to_str().expect("utf-8")
    );
    DaemonConfig::extra(&dir, &host_addr(2), 7200).write(Path::new(conf));
    let mut env: Vec<(&str, &str)> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .flat_map(|v| v.split_whitespace())
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind the notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    env.push(("NOTIFY_SOCKET", sock_path.to_str().expect("utf-8 path")));
    let started = Instant::now();
    let mut d = c.spawn_daemon_with(2, &argv, &dir, &env);
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.iter().any(|m: &String| m.contains("READY=1")) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no READY=1 within 20 s (got {got:?}); dipcd's log:\n{}",
            d.log()
        );
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    // Ready means joined: the referee lists the host as up already.
    let rows = c.dipcref_hosts(1);
    assert!(
        rows.iter()
            .any(|r| r.address == host_addr(2) && r.port == 7200 && r.is_up()),
        "READY=1 before the referee lists {}:7200 as up: {rows:#?}",
        host_addr(2)
    );
    assert!(d.log().contains("joined the cluster"), "{}", d.log());
    d.terminate();
    let t0 = Instant::now();
    loop {
        if let Ok(n) = sock.recv(&mut buf) {
            if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
                break;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no STOPPING=1 within 10 s; dipcd's log:\n{}",
            d.log()
        );
    }
}
