//! A bad pointer given to the C interface gets `EFAULT`, as the kernel's
//! System V calls give it, on the host that owns the structure and on the
//! others, where the library copies the caller's buffers itself (#19:
//! those copies killed the caller with SIGSEGV, and so did
//! `msgctl(IPC_SET)` everywhere). Real `dipcd` daemons on simulated hosts,
//! and `libdipc/examples/c/bad_pointers.c`, which runs each call in a
//! child so that one fault cannot hide the others.
//!
//! They need root and `ip netns`; where those are missing they fail, never
//! skip.

mod common;

use common::*;

#[test]
fn bad_pointers_get_efault_on_every_host() {
    let c = Cluster::up(2);
    let prog = c_example("bad_pointers");
    let prog = prog.to_str().expect("utf-8 path");
    // Host 2 makes (and owns) the three structures; host 1 uses them.
    for h in [2, 1] {
        let out = c.exec(h, &[prog, "0x8e01", "0x8e02", "0x8e03"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        eprintln!("bad_pointers on host {h}:\n{text}");
        assert!(
            out.status.success() && text.contains("0 failures"),
            "bad_pointers on host {h}:\n{}",
            describe(&out)
        );
    }
}
