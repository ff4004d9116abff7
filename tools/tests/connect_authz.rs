//! dipcd opens employers only to hosts of the cluster: a local process
//! that names some other address in `Connect` must not get the cluster's
//! handshake sent there. Real `dipcd` daemons on simulated hosts, attacked
//! by `dipc-attack` as an unprivileged user.
//!
//! They need root and `ip netns`; where those are missing they fail, never
//! skip.

mod common;

use common::*;
use std::time::Duration;

/// A `Connect` to host `to`'s front_end, made from host `from` as nobody,
/// opens a working session.
fn connect_ok(c: &Cluster, from: usize, target: &str, to: usize) {
    let out = c.exec_ok(from, &as_nobody(&["dipc-attack", "connect", target]));
    assert!(
        out.contains("reply: done ")
            && out.contains(&format!("fd: peer {}\n", front_end(to)))
            && out.contains("session: pong"),
        "Connect to {target} from host {from}:\n{out}"
    );
}

/// The attack: an unprivileged user on host 3 listens on a port of its
/// own and asks its dipcd to connect there. dipcd must refuse
/// (EHOSTUNREACH) without any employer connecting, and say who asked;
/// Connects to real hosts still work.
#[test]
fn connect_to_a_local_users_listener_is_refused() {
    let c = Cluster::up(3);
    let out = c.exec(3, &as_nobody(&["dipc-attack", "connect-relay"]));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        stdout.lines().next() == Some("uid 65534"),
        "the attack must run unprivileged:\n{}",
        describe(&out)
    );
    let listener = stdout
        .lines()
        .find_map(|l| l.strip_prefix("listener "))
        .unwrap_or_else(|| panic!("no listener address:\n{}", describe(&out)))
        .to_owned();
    assert!(
        stdout.contains("listener: no connection within 2000 ms"),
        "dipcd's employer connected to the attacker's listener {listener}:\n{}",
        describe(&out)
    );
    assert!(
        stdout.contains("reply: error EHOSTUNREACH: ")
            && stdout.contains("is not an up host of the cluster"),
        "dipcd must refuse a Connect to {listener} with EHOSTUNREACH:\n{}",
        describe(&out)
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "dipc-attack connect-relay reports the attack worked or was not tried:\n{}",
        describe(&out)
    );
    let log = c.log(3);
    assert!(
        log.contains(&format!("(uid 65534) asked for a connection to {listener}")),
        "host 3's dipcd must log who asked for {listener}:\n{log}"
    );

    // Real hosts: another one, this one, and another one written as an
    // IPv4-mapped IPv6 address.
    connect_ok(&c, 3, &front_end(2), 2);
    connect_ok(&c, 3, &front_end(3), 3);
    connect_ok(&c, 3, &format!("[::ffff:{}]:{HOST_PORT}", host_addr(2)), 2);
    // A member's address with another port is not a member.
    let other_port = format!("{}:{}", host_addr(2), HOST_PORT + 50);
    c.exec_err(
        3,
        &as_nobody(&["dipc-attack", "connect", &other_port]),
        &["EHOSTUNREACH"],
    );
}

/// Membership is asked of the referee at every Connect: a host that has
/// left is refused at once, and accepted again once it is back.
#[test]
fn connect_follows_the_referees_host_table() {
    let c = Cluster::up(3);
    connect_ok(&c, 3, &front_end(2), 2);

    c.stop(2);
    let down = wait_for(Duration::from_secs(10), || {
        c.host_state(3, &host_addr(2)).as_deref() == Some("down")
    });
    assert!(
        down.is_some(),
        "host 2 not down in the referee's table: {:#?}",
        c.try_dipcref_hosts(3)
    );
    c.exec_err(
        3,
        &as_nobody(&["dipc-attack", "connect", &front_end(2)]),
        &["EHOSTUNREACH"],
    );
    let log = c.log(3);
    assert!(
        log.contains(&format!(
            "(uid 65534) asked for a connection to {}",
            front_end(2)
        )),
        "host 3's dipcd must refuse a host that left, as the referee says:\n{log}"
    );

    c.start(2);
    connect_ok(&c, 3, &front_end(2), 2);
}
