//! Semaphore ping-pongs (`V(0)`, `P(1)`): raw on one host, and the two
//! sides of a dipc set shared across hosts.

use crate::common::{err, print_line, summary, time_limit, GROUP_SEM, SEMS, SEM_PING, SEM_PONG};
use crate::msg::{fork_partner, os_err, Api};
use libc::c_int;
use serde_json::json;
use std::io::{self};
use std::time::{Duration, Instant};

fn sembuf(num: u16, op: i16) -> libc::sembuf {
    libc::sembuf {
        sem_num: num,
        sem_op: op,
        sem_flg: 0,
    }
}

/// Whether a failed semop means the set is gone (removed by the other side).
fn set_removed(errno: c_int) -> bool {
    errno == libc::EIDRM || errno == libc::EINVAL
}

impl Api {
    /// One semop call; on failure, the errno.
    fn semop(self, id: c_int, op: &mut libc::sembuf) -> Result<(), c_int> {
        // SAFETY: op is one valid sembuf.
        let r = unsafe {
            match self {
                Api::Raw => libc::semop(id, op, 1),
                Api::Dipc => dipc::capi::dipc_semop(id, op, 1),
            }
        };
        if r < 0 {
            Err(io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO))
        } else {
            Ok(())
        }
    }

    fn sem_rmid(self, id: c_int) -> io::Result<()> {
        // SAFETY: IPC_RMID reads no fourth argument.
        let r = unsafe {
            match self {
                Api::Raw => libc::semctl(id, 0, libc::IPC_RMID),
                Api::Dipc => {
                    dipc::capi::dipc_semctl(id, 0, libc::IPC_RMID, dipc::capi::SemUn { val: 0 })
                }
            }
        };
        if r < 0 {
            Err(os_err("semctl(IPC_RMID)"))
        } else {
            Ok(())
        }
    }
}

fn semop_err(what: &str, errno: c_int) -> io::Error {
    let e = io::Error::from_raw_os_error(errno);
    io::Error::new(e.kind(), format!("semop({what}): {e}"))
}

/// Answers each `V(0)` with a `V(1)` until the set is removed; returns how
/// many pings it answered.
fn sem_pong_loop(api: Api, id: c_int) -> io::Result<u64> {
    let mut wait = sembuf(SEM_PING, -1);
    let mut post = sembuf(SEM_PONG, 1);
    let mut n = 0;
    loop {
        match api.semop(id, &mut wait) {
            Ok(()) => {}
            Err(e) if set_removed(e) => return Ok(n),
            Err(e) => return Err(semop_err("P(0)", e)),
        }
        api.semop(id, &mut post).map_err(|e| semop_err("V(1)", e))?;
        n += 1;
    }
}

/// Times `warmup + iterations` round trips `V(0)`, `P(1)`; returns the
/// measured ones (ns).
fn sem_ping_loop(api: Api, id: c_int, warmup: usize, iterations: usize) -> io::Result<Vec<u64>> {
    let mut post = sembuf(SEM_PING, 1);
    let mut wait = sembuf(SEM_PONG, -1);
    let mut ns = Vec::with_capacity(iterations);
    for i in 0..warmup + iterations {
        let t = Instant::now();
        api.semop(id, &mut post).map_err(|e| semop_err("V(0)", e))?;
        api.semop(id, &mut wait).map_err(|e| semop_err("P(1)", e))?;
        let dt = t.elapsed();
        if i >= warmup {
            ns.push(dt.as_nanos() as u64);
        }
    }
    Ok(ns)
}

pub(crate) fn check_iterations(iterations: usize) -> io::Result<()> {
    if iterations == 0 {
        return Err(err("--iterations must be at least 1"));
    }
    Ok(())
}

/// Whether the kernel object behind `id` on this host is not the set of
/// `key` itself (a dipc placeholder for a set another host owns).
fn sem_is_remote(id: c_int, key: i32) -> bool {
    // SAFETY: semid_ds is plain data, and IPC_STAT writes one there.
    unsafe {
        let mut ds: libc::semid_ds = std::mem::zeroed();
        let r = libc::semctl(id, 0, libc::IPC_STAT, &mut ds as *mut libc::semid_ds);
        r < 0 || ds.sem_perm.__key != key
    }
}

pub(crate) fn sem_pingpong(
    iterations: usize,
    warmup: usize,
    limit: u32,
    label: &str,
) -> io::Result<()> {
    check_iterations(iterations)?;
    // SAFETY: semget takes plain integers.
    let id = unsafe { libc::semget(libc::IPC_PRIVATE, SEMS, libc::IPC_CREAT | 0o600) };
    if id < 0 {
        return Err(os_err("semget"));
    }
    let child = match fork_partner("sem-pingpong", limit, || {
        sem_pong_loop(Api::Raw, id).map(|_| ())
    }) {
        Ok(c) => c,
        Err(e) => {
            let _ = Api::Raw.sem_rmid(id);
            return Err(e);
        }
    };
    let run = time_limit(limit, true).and_then(|_| sem_ping_loop(Api::Raw, id, warmup, iterations));
    // Removing the set stops the partner (EIDRM).
    let removed = Api::Raw.sem_rmid(id);
    if run.is_err() || removed.is_err() {
        // SAFETY: plain signal to our own child.
        unsafe { libc::kill(child, libc::SIGKILL) };
    }
    let mut status = 0;
    // SAFETY: child is our child's pid; status is a valid out pointer.
    let waited = unsafe { libc::waitpid(child, &mut status, 0) };
    let ns = run?;
    removed?;
    if waited < 0 {
        return Err(os_err("waitpid"));
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(err(format!("partner failed (wait status {status})")));
    }
    print_line(&summary(label, GROUP_SEM, None, ns, json!({})))
}

pub(crate) fn sem_pong(key: i32, limit: u32) -> io::Result<()> {
    time_limit(limit, true)?;
    let flags = libc::IPC_CREAT | libc::IPC_EXCL | 0o600 | dipc::IPC_DIPC;
    let id = dipc::capi::dipc_semget(key, SEMS, flags);
    if id < 0 {
        return Err(os_err(&format!("semget(key {key:#x}, IPC_DIPC)")));
    }
    if sem_is_remote(id, key) {
        let _ = Api::Dipc.sem_rmid(id);
        return Err(err(format!(
            "semaphore set {key:#x} is owned by another host; the pong must own it"
        )));
    }
    match sem_pong_loop(Api::Dipc, id) {
        Ok(_) => Ok(()),
        Err(e) => {
            // Stopped by a failure (or the time limit): do not leave the
            // set behind.
            let _ = Api::Dipc.sem_rmid(id);
            Err(e)
        }
    }
}

pub(crate) fn sem_ping(
    key: i32,
    iterations: usize,
    warmup: usize,
    wait: u64,
    limit: u32,
    label: &str,
) -> io::Result<()> {
    check_iterations(iterations)?;
    time_limit(limit, false)?;
    let deadline = Instant::now() + Duration::from_secs(wait);
    let id = loop {
        let id = dipc::capi::dipc_semget(key, SEMS, 0o600 | dipc::IPC_DIPC);
        if id >= 0 {
            break id;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOENT) || Instant::now() >= deadline {
            return Err(err(format!("semget(key {key:#x}, IPC_DIPC): {e}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let remote = sem_is_remote(id, key);
    let run = sem_ping_loop(Api::Dipc, id, warmup, iterations);
    // Removing the set stops the pong, after a failed run too.
    let removed = Api::Dipc.sem_rmid(id);
    let ns = run?;
    removed?;
    print_line(&summary(
        label,
        GROUP_SEM,
        None,
        ns,
        json!({ "remote": remote }),
    ))
}
