//! Message-queue ping-pongs: raw System V on one host (the partner
//! forked and pinned to the other CPU), and the two sides of a dipc queue
//! shared across hosts.

use crate::common::{
    check_counts, err, print_line, summary, time_limit, FILL, GROUP_MSG, MAX_TEXT, STOP, TYPE_PING,
    TYPE_PONG,
};
use libc::{c_int, c_long, c_void};
use serde_json::json;
use std::io::{self, Write};
use std::time::{Duration, Instant};

#[repr(C)]
struct MsgBuf {
    mtype: c_long,
    text: [u8; MAX_TEXT],
}

impl MsgBuf {
    fn new(mtype: c_long) -> Box<MsgBuf> {
        Box::new(MsgBuf {
            mtype,
            text: [FILL; MAX_TEXT],
        })
    }
}

/// Which calls the queue benchmarks make.
#[derive(Clone, Copy)]
pub(crate) enum Api {
    /// Plain libc System V calls.
    Raw,
    /// dipc's C interface (plain calls after a lookup on the owner host).
    Dipc,
}

pub(crate) fn os_err(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

impl Api {
    fn snd(self, id: c_int, m: &MsgBuf, len: usize) -> io::Result<()> {
        let p = (m as *const MsgBuf).cast::<c_void>();
        // SAFETY: m is an mtype followed by MAX_TEXT >= len bytes.
        let r = unsafe {
            match self {
                Api::Raw => libc::msgsnd(id, p, len, 0),
                Api::Dipc => dipc::capi::dipc_msgsnd(id, p, len, 0),
            }
        };
        if r < 0 {
            Err(os_err("msgsnd"))
        } else {
            Ok(())
        }
    }

    fn rcv(self, id: c_int, m: &mut MsgBuf, mtype: c_long) -> io::Result<usize> {
        let p = (m as *mut MsgBuf).cast::<c_void>();
        // SAFETY: m has room for an mtype and MAX_TEXT bytes.
        let r = unsafe {
            match self {
                Api::Raw => libc::msgrcv(id, p, MAX_TEXT, mtype, 0),
                Api::Dipc => dipc::capi::dipc_msgrcv(id, p, MAX_TEXT, mtype, 0),
            }
        };
        if r < 0 {
            Err(os_err("msgrcv"))
        } else {
            Ok(r as usize)
        }
    }

    fn rmid(self, id: c_int) -> io::Result<()> {
        // SAFETY: IPC_RMID takes no buffer.
        let r = unsafe {
            match self {
                Api::Raw => libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()),
                Api::Dipc => dipc::capi::dipc_msgctl(id, libc::IPC_RMID, std::ptr::null_mut()),
            }
        };
        if r < 0 {
            Err(os_err("msgctl(IPC_RMID)"))
        } else {
            Ok(())
        }
    }
}

/// Echoes type-1 messages back as type 2 until a stop message; returns how
/// many it echoed.
fn pong_loop(api: Api, id: c_int) -> io::Result<u64> {
    let mut m = MsgBuf::new(TYPE_PING);
    let mut n = 0;
    loop {
        let len = api.rcv(id, &mut m, TYPE_PING)?;
        if len >= 1 && m.text[0] == STOP {
            return Ok(n);
        }
        m.mtype = TYPE_PONG;
        api.snd(id, &m, len)?;
        n += 1;
    }
}

/// Times `warmup + iterations` round trips; returns the measured ones (ns).
fn ping_loop(
    api: Api,
    id: c_int,
    size: usize,
    warmup: usize,
    iterations: usize,
) -> io::Result<Vec<u64>> {
    let out = MsgBuf::new(TYPE_PING);
    let mut back = MsgBuf::new(TYPE_PONG);
    let mut ns = Vec::with_capacity(iterations);
    for i in 0..warmup + iterations {
        let t = Instant::now();
        api.snd(id, &out, size)?;
        let n = api.rcv(id, &mut back, TYPE_PONG)?;
        let dt = t.elapsed();
        if n != size {
            return Err(err(format!("pong of {n} bytes, {size} sent")));
        }
        if i >= warmup {
            ns.push(dt.as_nanos() as u64);
        }
    }
    if back.text[..size] != out.text[..size] {
        return Err(err("pong text differs from the ping"));
    }
    Ok(ns)
}

fn send_stop(api: Api, id: c_int) -> io::Result<()> {
    let mut m = MsgBuf::new(TYPE_PING);
    m.text[0] = STOP;
    api.snd(id, &m, 1)
}

/// Removes a private queue when dropped (the parent's side only).
struct RawQueue(c_int);

impl Drop for RawQueue {
    fn drop(&mut self) {
        let _ = Api::Raw.rmid(self.0);
    }
}

/// Moves the forked partner to the CPU named by `DIPC_BENCH_PARTNER_CPU`
/// (tools/bench pins every ping side to one CPU and every pong side to the
/// other, so that each pair of figures is taken with the two processes on
/// different CPUs, as in the cost table of DESIGN.md).
fn pin_partner() -> io::Result<()> {
    let Ok(v) = std::env::var("DIPC_BENCH_PARTNER_CPU") else {
        return Ok(());
    };
    let cpu: usize = v
        .trim()
        .parse()
        .map_err(|_| err(format!("DIPC_BENCH_PARTNER_CPU={v:?} is not a CPU number")))?;
    // SAFETY: cpu_set_t is plain data; CPU_SET bounds-checks the index
    // against the set's size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(os_err("sched_setaffinity"));
        }
    }
    Ok(())
}

/// Forks the pong side of a raw ping-pong: pinned (see [`pin_partner`]),
/// under the time limit, running `pong`; returns its pid to the parent.
pub(crate) fn fork_partner(
    name: &str,
    limit: u32,
    pong: impl FnOnce() -> io::Result<()>,
) -> io::Result<libc::pid_t> {
    // Flush what the parent would otherwise print twice.
    io::stdout().flush()?;
    // SAFETY: this process is single-threaded; the child only makes
    // System V calls and leaves with _exit (no destructors, so it never
    // removes the parent's structures).
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(os_err("fork"));
    }
    if child == 0 {
        let code = match pin_partner()
            .and_then(|_| time_limit(limit, true))
            .and_then(|_| pong())
        {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("dipc-bench {name} (partner): {e}");
                1
            }
        };
        // SAFETY: leaving the forked child without running destructors.
        unsafe { libc::_exit(code) };
    }
    Ok(child)
}

pub(crate) fn sysv_pingpong(
    size: usize,
    iterations: usize,
    warmup: usize,
    limit: u32,
    label: &str,
) -> io::Result<()> {
    check_counts(size, MAX_TEXT, iterations)?;
    // SAFETY: msgget takes plain integers.
    let id = unsafe { libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600) };
    if id < 0 {
        return Err(os_err("msgget"));
    }
    let q = RawQueue(id);
    let child = fork_partner("sysv-pingpong", limit, || {
        pong_loop(Api::Raw, id).map(|_| ())
    })?;
    let run =
        time_limit(limit, true).and_then(|_| ping_loop(Api::Raw, id, size, warmup, iterations));
    let stopped = send_stop(Api::Raw, id);
    let mut status = 0;
    let waited = if run.is_ok() && stopped.is_ok() {
        // SAFETY: child is our child's pid; status is a valid out pointer.
        unsafe { libc::waitpid(child, &mut status, 0) }
    } else {
        // The partner may be stuck; removing the queue (below) and the
        // kill wake it.
        // SAFETY: plain signal to our own child.
        unsafe { libc::kill(child, libc::SIGKILL) };
        // SAFETY: as above.
        unsafe { libc::waitpid(child, &mut status, 0) }
    };
    drop(q);
    let ns = run?;
    stopped?;
    if waited < 0 {
        return Err(os_err("waitpid"));
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(err(format!("partner failed (wait status {status})")));
    }
    print_line(&summary(label, GROUP_MSG, Some(size), ns, json!({})))
}

pub(crate) fn msg_pong(key: i32, limit: u32) -> io::Result<()> {
    time_limit(limit, true)?;
    let flags = libc::IPC_CREAT | libc::IPC_EXCL | 0o600 | dipc::IPC_DIPC;
    let id = dipc::capi::dipc_msgget(key, flags);
    if id < 0 {
        return Err(os_err(&format!("msgget(key {key:#x}, IPC_DIPC)")));
    }
    if dipc::msg::is_remote(id) {
        let _ = Api::Dipc.rmid(id);
        return Err(err(format!(
            "queue {key:#x} is owned by another host; the pong must own it"
        )));
    }
    let served = pong_loop(Api::Dipc, id);
    let removed = Api::Dipc.rmid(id);
    served?;
    removed
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn msg_ping(
    key: i32,
    size: usize,
    iterations: usize,
    warmup: usize,
    wait: u64,
    limit: u32,
    label: &str,
) -> io::Result<()> {
    check_counts(size, MAX_TEXT, iterations)?;
    time_limit(limit, false)?;
    let deadline = Instant::now() + Duration::from_secs(wait);
    let id = loop {
        let id = dipc::capi::dipc_msgget(key, 0o600 | dipc::IPC_DIPC);
        if id >= 0 {
            break id;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOENT) || Instant::now() >= deadline {
            return Err(err(format!("msgget(key {key:#x}, IPC_DIPC): {e}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let remote = dipc::msg::is_remote(id);
    let run = ping_loop(Api::Dipc, id, size, warmup, iterations);
    // Stop the pong even after a failed run, so that it removes the queue.
    let stopped = send_stop(Api::Dipc, id);
    let ns = run?;
    stopped?;
    print_line(&summary(
        label,
        GROUP_MSG,
        Some(size),
        ns,
        json!({ "remote": remote }),
    ))
}
