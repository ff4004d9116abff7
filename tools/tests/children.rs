//! The processes dipcd forks, on simulated hosts: each role holds only the
//! descriptors it needs (none of dipcd's listeners, epoll or signal
//! descriptors, runtime lock or other clients' sockets), and a lost page
//! raises a SIGBUS that reaches a C program whose handlers run on a small
//! alternate signal stack, whatever it does about SIGBUS.

mod common;

use common::{c_example, describe, state_dir, wait_for, Background, Cluster};
use dipc_common::channel::Channel;
use dipc_common::wire::Message;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

fn prog(name: &str) -> String {
    c_example(name).to_string_lossy().into_owned()
}

/// Host `i`'s dipcd (the pid file `tools/cluster` keeps).
fn dipcd_pid(i: usize) -> i32 {
    let path = state_dir().join(format!("h{i}")).join("dipcd.pid");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{}: {text:?}: {e}", path.display()))
}

/// The process's name as the kernel has it (`comm`).
fn comm(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The live children of `pid`.
fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        if let Ok(list) = fs::read_to_string(t.path().join("children")) {
            out.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    out
}

/// The children of `pid` named `name`.
fn children_named(pid: i32, name: &str) -> Vec<i32> {
    children(pid)
        .into_iter()
        .filter(|&c| comm(c) == name)
        .collect()
}

/// The one child of `pid` named `name`.
fn child_named(pid: i32, name: &str) -> i32 {
    let found = children_named(pid, name);
    assert_eq!(
        found.len(),
        1,
        "pid {pid} should have one child named {name:?}; its children: {:?}",
        children(pid)
            .into_iter()
            .map(|c| (c, comm(c)))
            .collect::<Vec<_>>()
    );
    found[0]
}

/// Whether `pid` runs (is neither gone nor a zombie).
fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|st| {
            let state = st.rsplit_once(") ")?.1.chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

/// The open descriptors of `pid`, with what each refers to.
fn fds(pid: i32) -> BTreeMap<i32, String> {
    let dir = format!("/proc/{pid}/fd");
    let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}"));
    entries
        .flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse().ok()?;
            let target = fs::read_link(e.path()).ok()?;
            Some((fd, target.to_string_lossy().into_owned()))
        })
        .collect()
}

/// Whether descriptor `a` of `pa` and `b` of `pb` are the same open file
/// (kcmp(2): the same file description, i.e. one was inherited or passed
/// from the other).
fn same_file(pa: i32, a: i32, pb: i32, b: i32) -> bool {
    const KCMP_FILE: libc::c_long = 0;
    // SAFETY: kcmp only compares kernel objects of the two processes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pa as libc::c_long,
            pb as libc::c_long,
            KCMP_FILE,
            a as libc::c_long,
            b as libc::c_long,
        )
    };
    assert!(
        r >= 0,
        "kcmp({pa}, {pb}, KCMP_FILE, {a}, {b}): {} (the test needs kcmp; it never skips)",
        std::io::Error::last_os_error()
    );
    r == 0
}

/// A process of a host's suite whose descriptors must not reach a child.
struct Daemon {
    what: String,
    pid: i32,
    fds: BTreeMap<i32, String>,
}

impl Daemon {
    fn new(what: &str, pid: i32) -> Daemon {
        Daemon {
            what: what.to_owned(),
            pid,
            fds: fds(pid),
        }
    }
}

/// Checks that `pid` (a role named `role`) holds, besides stdin, stdout
/// and stderr, no descriptor of `daemons` (but those in `allowed`, e.g.
/// the lock a long-lived role keeps) and not the runtime lock unless
/// allowed; returns its descriptors from 3 up.
fn check_clean(
    role: &str,
    pid: i32,
    daemons: &[&Daemon],
    lock: &str,
    may_lock: bool,
) -> Vec<String> {
    assert_eq!(comm(pid), role, "pid {pid}");
    let mine = fds(pid);
    let mut own = Vec::new();
    let mut leaks = Vec::new();
    for (&fd, target) in mine.iter().filter(|(&fd, _)| fd > 2) {
        let is_lock = target == lock;
        if is_lock && !may_lock {
            leaks.push(format!("fd {fd}: the runtime lock {target}"));
        }
        for d in daemons {
            for (&dfd, dtarget) in &d.fds {
                if same_file(pid, fd, d.pid, dfd) && !(is_lock && may_lock) {
                    leaks.push(format!(
                        "fd {fd} ({target}) is {}'s fd {dfd} ({dtarget})",
                        d.what
                    ));
                }
            }
        }
        if !is_lock {
            own.push(target.clone());
        }
    }
    assert!(
        leaks.is_empty(),
        "{role} (pid {pid}) holds descriptors it inherited:\n  {}\nall its descriptors: {mine:?}",
        leaks.join("\n  ")
    );
    own
}

fn is_socket(target: &str) -> bool {
    target.starts_with("socket:[")
}

/// Resumes a stopped process when dropped (a failing test must not leave
/// a host's front_end stopped for the next one; `down` kills it anyway).
struct Stopped(i32);

impl Stopped {
    fn stop(pid: i32) -> Stopped {
        // SAFETY: kill(2) on a daemon of our own cluster.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// Waits (at most 20 s) for `bg` to print `text`.
fn started(bg: &mut Background, text: &str) {
    bg.wait_for_stdout(text, Duration::from_secs(20));
}

#[test]
fn forked_roles_hold_only_their_own_descriptors() {
    let c = Cluster::up(2);
    let run = |i: usize| state_dir().join(format!("h{i}")).join("run");
    let lock = |i: usize| run(i).join("dipcd.lock").to_string_lossy().into_owned();

    // A local client of host 2's dipcd that stays connected while the
    // roles below are forked: none of them may hold its socket.
    let sock: PathBuf = run(2).join("dipcd.sock");
    let stream = UnixStream::connect(&sock).unwrap_or_else(|e| panic!("{}: {e}", sock.display()));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut other_client = Channel::new(stream, 1 << 20);
    other_client
        .call(1, &Message::Ping)
        .expect("an answer from dipcd to the idle client");

    // Host 2 owns a queue and a segment. From host 1: a receive that
    // blocks (a worker on host 2 waits in msgrcv as its proxy) and an
    // attach that holds a page (a shm manager on host 2 serves it).
    c.exec_ok(2, &["dipc-msg", "get", "0x6c01", "--create"]);
    let touch = prog("shm_touch");
    c.exec_ok(2, &[&touch, "0x6c02", "8192", "-", "stat"]);
    let mut recv = c.spawn(1, &["dipc-msg", "recv", "0x6c01"]);
    let mut hold = c.spawn(1, &[&touch, "0x6c02", "8192", "0", "hold", "7"]);
    started(&mut hold, "held");

    let d2 = dipcd_pid(2);
    let fe2 = child_named(d2, "dipc-front-end");
    // Two workers stay: the receive's, and the proxy of shm_touch (its
    // get went through a session; the attach's worker handed its
    // connection to the manager and ended).
    let waiting = wait_for(Duration::from_secs(20), || {
        children_named(fe2, "dipc-worker").len() >= 2
    });
    assert!(
        waiting.is_some(),
        "no two workers on host 2: {:?}\n{}",
        children(fe2),
        recv.describe()
    );
    assert!(recv.running(), "{}", recv.describe());

    let dipcd2 = Daemon::new("host 2's dipcd", d2);
    let front_end2 = Daemon::new("host 2's front_end", fe2);
    let both2 = [&dipcd2, &front_end2];

    let mut checked = 0;
    for w in children_named(fe2, "dipc-worker") {
        // A worker that is ending (one that handed an attach over) is
        // not looked at; the two that stay are.
        if !alive(w) {
            continue;
        }
        let own = check_clean("dipc-worker", w, &both2, &lock(2), false);
        assert!(
            own.len() == 1 && is_socket(&own[0]),
            "a worker holds its connection only, it has {own:?}"
        );
        checked += 1;
    }
    assert!(checked >= 2, "{checked} workers checked");

    let managers = children_named(d2, "dipc-shm-mgr");
    assert_eq!(managers.len(), 1, "one shm manager on host 2");
    let own = check_clean("dipc-shm-mgr", managers[0], &both2, &lock(2), false);
    // Its listener and the attach from host 1, at least.
    assert!(own.iter().filter(|t| is_socket(t)).count() >= 2, "{own:?}");

    // The front_end keeps the runtime lock and nothing else of dipcd's.
    let own = check_clean("dipc-front-end", fe2, &[&dipcd2], &lock(2), true);
    assert!(
        own.iter()
            .all(|t| is_socket(t) || t.starts_with("anon_inode:")),
        "{own:?}"
    );

    // An employer lives only while it opens a session: with host 2's
    // front_end stopped, host 1's employer waits for the handshake.
    let d1 = dipcd_pid(1);
    let fe1 = child_named(d1, "dipc-front-end");
    let referee1 = child_named(d1, "dipc-referee");
    let dipcd1 = Daemon::new("host 1's dipcd", d1);
    let front_end1 = Daemon::new("host 1's front_end", fe1);
    let referee = Daemon::new("the referee", referee1);
    check_clean("dipc-referee", referee1, &[&dipcd1], &lock(1), true);
    check_clean("dipc-front-end", fe1, &[&dipcd1, &referee], &lock(1), true);
    let employer = {
        let _stopped = Stopped::stop(fe2);
        let mut stat = c.spawn(1, &["dipc-msg", "stat", "0x6c01"]);
        let mut employer = None;
        wait_for(Duration::from_secs(4), || {
            employer = children_named(d1, "dipc-employer").first().copied();
            employer.is_some()
        });
        let Some(employer) = employer else {
            panic!(
                "no employer on host 1 while host 2's front_end is stopped:\n{}\n{}",
                stat.describe(),
                c.log(1)
            );
        };
        // Its descriptors while it waits (the daemons' as they are now).
        let dipcd1 = Daemon::new("host 1's dipcd", d1);
        let own = check_clean(
            "dipc-employer",
            employer,
            &[&dipcd1, &front_end1, &referee],
            &lock(1),
            false,
        );
        assert!(
            own.len() == 2 && own.iter().all(|t| is_socket(t)),
            "an employer holds its client's socket and its connection only, it has {own:?}"
        );
        stat.kill();
        employer
    };
    assert!(employer > 0);

    // Everything still works afterwards.
    c.exec_ok(2, &["dipc-msg", "send", "0x6c01", "1", "bye"]);
    let st = recv.wait(Duration::from_secs(20));
    assert!(
        st.success() && recv.stdout().contains("bye"),
        "{}",
        recv.describe()
    );
    hold.kill();
    drop(other_client);
}

/// Whether a program run through `tools/cluster exec` died of `sig` (the
/// wrapper shell reports it as 128 + sig).
fn died_of(st: ExitStatus, sig: i32) -> bool {
    st.signal() == Some(sig) || st.code() == Some(128 + sig)
}

#[test]
fn a_lost_page_raises_sigbus_in_a_c_program_on_a_small_signal_stack() {
    let c = Cluster::up(3);
    let touch = prog("shm_touch");
    let sigbus = prog("shm_sigbus");
    let (key, size) = ("0x6c03", "20480");
    // Host 2 owns the segment; a writer on host 1 holds page 0 and dies
    // with the only valid copy: page 0 is lost.
    c.exec_ok(2, &[&touch, key, size, "-", "stat"]);
    let mut w = c.spawn(1, &[&touch, key, size, "0", "hold", "42"]);
    started(&mut w, "held");
    w.kill();
    let lost = wait_for(Duration::from_secs(20), || {
        let out = c.exec_ok(2, &["dipcref", "shm", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        v["segments"][0]["runs"]
            .as_array()
            .is_some_and(|runs| runs.iter().any(|r| r["lost"] == true))
    });
    assert!(lost.is_some(), "page 0 not lost:\n{}", c.all_logs());

    // The program's own handler, on its alternate stack, sees the
    // address it touched.
    let out = c.exec(3, &[&sigbus, key, size, "0", "handler"]);
    assert!(
        out.status.code() == Some(44)
            && String::from_utf8_lossy(&out.stdout).contains("sigbus at page 0"),
        "handler: {}",
        describe(&out)
    );
    // Default, blocked or ignored, a fault's SIGBUS kills the process.
    for mode in ["default", "blocked", "ignored"] {
        let out = c.exec(3, &[&sigbus, key, size, "0", mode]);
        assert!(
            died_of(out.status, libc::SIGBUS),
            "{mode}: {}",
            describe(&out)
        );
    }
    // With Rust's own alternate stack size too (8 KiB), from host 1.
    let out = c.exec(1, &[&sigbus, key, size, "0", "handler", "8192"]);
    assert_eq!(out.status.code(), Some(44), "8 KiB: {}", describe(&out));
    // Pages the writer did not hold are intact.
    assert_eq!(c.exec_ok(3, &[&touch, key, size, "1", "read"]).trim(), "0");
}
