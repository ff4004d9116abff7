//! Processes that keep a distributed structure's id across an event (the
//! C program `libdipc/examples/c/stale_hold.c`), for the tests of what an
//! id reaches after its owner rebooted, its key was freed or the referee
//! restarted.

use super::{c_example, Background, Cluster};
use std::fs;
use std::path::Path;
use std::time::Duration;

/// How long a held process is given to make its call once told to.
pub const CALL: Duration = Duration::from_secs(30);

pub fn hold_prog() -> String {
    c_example("stale_hold").to_string_lossy().into_owned()
}

/// `stale_hold create KIND KEY` on `host`: the new structure's id there.
pub fn create(c: &Cluster, host: usize, kind: &str, key: &str) -> i32 {
    let out = c.exec_ok(host, &[&hold_prog(), "create", kind, key]);
    out.trim()
        .parse()
        .unwrap_or_else(|e| panic!("stale_hold create printed {out:?}: {e}"))
}

/// `stale_hold open KIND KEY` on `host` (a get with `IPC_CREAT`): the
/// id there.
pub fn open(c: &Cluster, host: usize, kind: &str, key: &str) -> i32 {
    let out = c.exec_ok(host, &[&hold_prog(), "open", kind, key]);
    out.trim()
        .parse()
        .unwrap_or_else(|e| panic!("stale_hold open printed {out:?}: {e}"))
}

/// `stale_hold call KIND ID` on `host`, a process that did no get:
/// `ok` or `errno N`.
pub fn call(c: &Cluster, host: usize, kind: &str, id: i32) -> String {
    let out = c.exec_ok(host, &[&hold_prog(), "call", kind, &id.to_string()]);
    out.lines()
        .find_map(|l| l.strip_prefix("call: "))
        .unwrap_or_else(|| panic!("stale_hold call printed {out:?}"))
        .to_owned()
}

/// The id a held process printed (`id N`).
pub fn held_id(b: &Background) -> i32 {
    let out = b.stdout();
    out.lines()
        .find_map(|l| l.strip_prefix("id "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no id in {out:?}"))
}

/// `stale_hold count KIND KEY` on `host`.
pub fn count(c: &Cluster, host: usize, kind: &str, key: &str) -> i64 {
    let out = c.exec_ok(host, &[&hold_prog(), "count", kind, key]);
    out.trim()
        .parse()
        .unwrap_or_else(|e| panic!("stale_hold count printed {out:?}: {e}"))
}

/// A process on `host` that got `key` and made one call on it.
pub fn hold(c: &Cluster, host: usize, kind: &str, key: &str, trigger: &Path) -> Background {
    let t = trigger.to_string_lossy().into_owned();
    let mut b = c.spawn(host, &[&hold_prog(), "hold", kind, key, &t]);
    b.wait_for_stdout("before: ", Duration::from_secs(20));
    assert!(
        b.stdout().contains("before: ok"),
        "the first call on {kind} {key} failed:\n{}",
        b.describe()
    );
    b
}

/// Tells held processes to call again and returns what each printed
/// after (`ok` or `errno N`).
pub fn call_again(trigger: &Path, held: &mut [&mut Background]) -> Vec<String> {
    fs::write(trigger, b"go").unwrap_or_else(|e| panic!("{}: {e}", trigger.display()));
    held.iter_mut()
        .map(|b| {
            b.wait_for_stdout("after: ", CALL);
            let st = b.wait(CALL);
            assert!(st.success(), "{}", b.describe());
            let out = b.stdout();
            out.lines()
                .find_map(|l| l.strip_prefix("after: "))
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

pub fn eidrm() -> String {
    format!("errno {}", libc::EIDRM)
}
