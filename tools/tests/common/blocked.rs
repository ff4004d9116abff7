//! Proof that a call blocks where it should: a thread asleep in the owner's
//! kernel, in the system call of that call on that structure, as
//! `/proc/PID/task/TID/syscall` shows it. A test that needs a call blocked
//! before it acts (sends the message that wakes it, removes the queue,
//! stops the owner) waits for this instead of sleeping and hoping the call
//! got there: on a busy machine a fixed sleep can end before the call
//! left its host, on a quiet one it wastes time.

use super::{wait_for, Cluster};
use std::fs;
use std::time::Duration;

/// How long a call is given to reach its owner's kernel.
pub const REACH: Duration = Duration::from_secs(20);

/// A blocking System V call, by the system calls that carry it (the
/// library, the worker and libc may use either of a pair).
#[derive(Debug, Clone, Copy)]
pub enum Call {
    MsgRcv,
    MsgSnd,
    SemOp,
}

impl Call {
    fn numbers(self) -> &'static [libc::c_long] {
        match self {
            Call::MsgRcv => &[libc::SYS_msgrcv],
            Call::MsgSnd => &[libc::SYS_msgsnd],
            Call::SemOp => &[libc::SYS_semop, libc::SYS_semtimedop],
        }
    }
}

/// One thread asleep in a system call.
#[derive(Debug)]
pub struct Sleeper {
    pub pid: String,
    pub tid: String,
    pub comm: String,
    /// The system call's number and first argument.
    pub nr: libc::c_long,
    pub arg0: i64,
}

/// The threads of `pids` asleep in a system call.
pub fn sleepers(pids: &[String]) -> Vec<Sleeper> {
    let mut out = Vec::new();
    for pid in pids {
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            continue; // it ended meanwhile
        };
        for task in tasks.flatten() {
            let tid = task.file_name().to_string_lossy().into_owned();
            let dir = task.path();
            // State is the field after the parenthesised command name.
            let Ok(stat) = fs::read_to_string(dir.join("stat")) else {
                continue;
            };
            let state = stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
            if !matches!(state, Some('S' | 'D')) {
                continue;
            }
            // "NR ARG0 ARG1 ... SP PC", or "running", or "-1 ..." outside
            // a system call.
            let Ok(sys) = fs::read_to_string(dir.join("syscall")) else {
                continue;
            };
            let mut f = sys.split_whitespace();
            let Some(Ok(nr)) = f.next().map(str::parse::<libc::c_long>) else {
                continue;
            };
            let Some(Ok(arg0)) = f
                .next()
                .map(|a| i64::from_str_radix(a.trim_start_matches("0x"), 16))
            else {
                continue;
            };
            let comm = fs::read_to_string(dir.join("comm")).unwrap_or_default();
            out.push(Sleeper {
                pid: pid.clone(),
                tid,
                comm: comm.trim_end().to_owned(),
                nr,
                arg0,
            });
        }
    }
    out
}

impl Cluster {
    /// Waits (at most [`REACH`]) until `n` threads of host `host`'s
    /// processes sleep in `call` on structure `id` (host `host`'s id of it):
    /// the calls reached that kernel and block there. Panics with what the
    /// host's threads were asleep in otherwise.
    pub fn wait_blocked(&self, host: usize, call: Call, id: i32, n: usize) {
        let mut seen = Vec::new();
        let on_id = |s: &&Sleeper| call.numbers().contains(&s.nr) && s.arg0 == i64::from(id);
        let reached = wait_for(REACH, || {
            seen = sleepers(&super::netns_pids(host));
            seen.iter().filter(on_id).count() >= n
        });
        assert!(
            reached.is_some(),
            "{n} call(s) {call:?} on id {id} never blocked in host {host}'s kernel within \
             {REACH:?}; its threads asleep in system calls: {seen:#?}"
        );
    }
}
