//! Integration tests of `cluster.root_squash`: real `dipcd` daemons on
//! simulated hosts (see `tools/cluster`), with `dipc-msg` as the
//! application. With `tools/cluster up N --root-squash` the generated
//! configs keep the default (squash on), so root on one host is `nobody`
//! on every other host; without the flag tools/cluster writes
//! `root_squash = false` and root is root everywhere.
//!
//! They need root and `ip netns`; where those are missing they fail, never
//! skip.

mod common;

use common::*;

/// Creates a distributed queue on `host` (mode `mode`), returns its id there.
fn create(c: &Cluster, host: usize, key: &str, mode: &str) -> i32 {
    let out = c.exec_ok(host, &["dipc-msg", "get", key, "--create", "--mode", mode]);
    out.trim()
        .parse()
        .unwrap_or_else(|e| panic!("dipc-msg get printed {out:?}: {e}"))
}

/// `dipc-msg recv KEY --nowait` on `host`; returns the printed line.
fn recv_now(c: &Cluster, host: usize, key: &str) -> String {
    c.exec_ok(host, &["dipc-msg", "recv", key, "--nowait"])
        .trim_end_matches('\n')
        .to_owned()
}

#[test]
fn root_is_nobody_on_other_hosts_with_root_squash() {
    let c = Cluster::up_with(2, &["--root-squash"]);

    // Root's private queue on host 1, with a message in it.
    create(&c, 1, "0x5251", "0600");
    c.exec_ok(1, &["dipc-msg", "send", "0x5251", "1", "root's"]);

    // Root on host 2 finds it (a lookup asks for no rights)...
    c.exec_ok(2, &["dipc-msg", "get", "0x5251"]);
    // ...but acts on host 1 as nobody: no send, receive, stat or removal.
    c.exec_err(
        2,
        &["dipc-msg", "send", "0x5251", "2", "hi", "--nowait"],
        &["EACCES"],
    );
    c.exec_err(2, &["dipc-msg", "recv", "0x5251", "--nowait"], &["EACCES"]);
    c.exec_err(2, &["dipc-msg", "stat", "0x5251"], &["EACCES"]);
    c.exec_err(2, &["dipc-msg", "rm", "0x5251"], &["EPERM"]);
    // A gid 0 that a non-root caller brings is squashed too.
    c.exec_ok(1, &["dipc-msg", "set", "0x5251", "--mode", "0060"]);
    c.exec_err(
        2,
        &[
            "setpriv",
            "--reuid",
            "1000",
            "--regid",
            "0",
            "--clear-groups",
            "dipc-msg",
            "send",
            "0x5251",
            "3",
            "group 0",
            "--nowait",
        ],
        &["EACCES"],
    );
    c.exec_err(
        2,
        &[
            "setpriv", "--reuid", "1000", "--regid", "1000", "--groups", "0", "dipc-msg", "send",
            "0x5251", "3", "group 0", "--nowait",
        ],
        &["EACCES"],
    );

    // The queue and its message are untouched; root on the owner host is
    // still root there.
    assert_eq!(recv_now(&c, 1, "0x5251"), "1 root's");
    c.exec_ok(1, &["dipc-msg", "rm", "0x5251"]);

    // A queue open to everybody still works for root on host 2.
    create(&c, 1, "0x5252", "0666");
    c.exec_ok(2, &["dipc-msg", "send", "0x5252", "4", "from host 2"]);
    assert_eq!(recv_now(&c, 2, "0x5252"), "4 from host 2");
    c.exec_ok(2, &["dipc-msg", "send", "0x5252", "5", "again"]);
    assert_eq!(recv_now(&c, 1, "0x5252"), "5 again");
    c.exec_ok(1, &["dipc-msg", "rm", "0x5252"]);
}

#[test]
fn root_is_root_on_other_hosts_without_root_squash() {
    let c = Cluster::up(2);
    create(&c, 1, "0x5253", "0600");
    c.exec_ok(2, &["dipc-msg", "send", "0x5253", "1", "cross-host root"]);
    c.exec_ok(2, &["dipc-msg", "stat", "0x5253"]);
    c.exec_ok(2, &["dipc-msg", "rm", "0x5253"]);
    for h in 1..=2 {
        c.exec_err(h, &["dipc-msg", "get", "0x5253"], &["ENOENT"]);
    }
}
