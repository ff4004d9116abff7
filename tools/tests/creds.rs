//! Remote calls act with the caller's credentials of now: a process that
//! gives up root after its first remote call must not keep root's access
//! to other hosts' structures through the session (and the dipcd
//! connection) it opened as root. Real `dipcd` daemons on simulated hosts,
//! with the C program `libdipc/examples/c/cred_change.c`.
//!
//! They need root and `ip netns`; where those are missing they fail, never
//! skip.

mod common;

use common::*;

#[test]
fn a_process_that_gives_up_root_loses_roots_access_on_other_hosts() {
    let c = Cluster::up(2);
    // Root's queue on host 2, which only root may read.
    create_queue(&c, 2, "0x6c01", "0600");
    let prog = c_example("cred_change");
    let prog = prog.to_string_lossy();
    let out = c.exec_ok(1, &[prog.as_ref(), "0x6c01", "65534"]);
    assert!(
        out.contains("before: ok"),
        "root must read its own queue from host 1:\n{out}"
    );
    // 13 is EACCES: nobody may not read root's 0600 queue.
    assert!(
        out.contains(&format!("after: errno {}", libc::EACCES)),
        "after setuid(nobody) the process must act as nobody on host 2:\n{out}"
    );
}
