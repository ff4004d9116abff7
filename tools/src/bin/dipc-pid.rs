//! `dipc-pid`: the Rust API of cluster-wide process ids from the command
//! line (`dipc::pid`), for scripts and tests.
//!
//! - `dipc-pid serve --max N --count M`: registers, prints `pid_d P`, and
//!   runs the pop-up thread loop (`dipc::pid::serve`) with at most N
//!   handlers at once. The first N handlers wait until N run together (so
//!   the run shows the bound is reached); every handler checks that no
//!   more than N run. The handler of the M-th message unregisters, which
//!   ends the loop. Prints `handled M, at most K at once` and exits 0 if
//!   every message ("TAG SEQ" texts) came exactly once and the bound held.
//! - `dipc-pid kill PID_D SIG`: `kill_d` through the Rust API.
//!
//! Errors go to stderr as `dipc-pid: <what>: <strerror> (errno NAME)`,
//! exit code 1.

use clap::{Parser, Subcommand};
use dipc::pid::{self, PidD};
use std::collections::BTreeSet;
use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "dipc-pid", about = "dipc process ids from the command line")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Pop-up thread receive loop (see the module docs)
    Serve {
        #[arg(long)]
        max: usize,
        #[arg(long)]
        count: usize,
    },
    /// kill_d(PID_D, SIG)
    Kill { pid_d: PidD, sig: i32 },
}

fn errno_name(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => format!("{:?}", nix::errno::Errno::from_raw(n)),
        None => "OTHER".into(),
    }
}

fn fail(what: &str, e: io::Error) -> ExitCode {
    eprintln!("dipc-pid: {what}: {e} (errno {})", errno_name(&e));
    ExitCode::from(1)
}

/// What the handlers share.
#[derive(Default)]
struct Tally {
    running: usize,
    most: usize,
    handled: usize,
    /// Set when the first `max` handlers ran together (or gave up).
    released: bool,
    seen: BTreeSet<(PidD, String)>,
    problems: Vec<String>,
}

fn serve(max: usize, count: usize) -> ExitCode {
    if max == 0 || count < max {
        eprintln!("dipc-pid: --max must be at least 1 and --count at least --max");
        return ExitCode::from(2);
    }
    let me = match pid::regist() {
        Ok(p) => p,
        Err(e) => return fail("regist", e),
    };
    println!("pid_d {me}");
    let _ = io::stdout().flush();
    let shared = Arc::new((Mutex::new(Tally::default()), Condvar::new()));
    let s = shared.clone();
    let r = pid::serve(max, move |from, text| {
        let (m, cv) = &*s;
        let mut t = m.lock().unwrap_or_else(|p| p.into_inner());
        t.running += 1;
        t.most = t.most.max(t.running);
        if t.running > max {
            let n = t.running;
            t.problems.push(format!("{n} handlers ran at once"));
        }
        if t.running == max {
            t.released = true;
            cv.notify_all();
        }
        // Hold the first handlers until `max` run together: the loop must
        // start them without waiting for the earlier ones to finish.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !t.released {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                t.problems
                    .push(format!("{max} handlers never ran together"));
                t.released = true;
                break;
            }
            t = cv
                .wait_timeout(t, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let text = String::from_utf8_lossy(&text).into_owned();
        if !t.seen.insert((from, text.clone())) {
            t.problems.push(format!("{text:?} from {from} came twice"));
        }
        t.running -= 1;
        t.handled += 1;
        if t.handled == count {
            drop(t);
            if let Err(e) = pid::uregist(me) {
                let mut t = m.lock().unwrap_or_else(|p| p.into_inner());
                t.problems.push(format!("uregist: {e}"));
            }
        }
    });
    if let Err(e) = r {
        return fail("serve", e);
    }
    let t = shared.0.lock().unwrap_or_else(|p| p.into_inner());
    println!("handled {}, at most {} at once", t.handled, t.most);
    for p in &t.problems {
        eprintln!("FAIL: {p}");
    }
    if t.problems.is_empty() && t.handled == count && t.most == max {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn main() -> ExitCode {
    match Args::parse().cmd {
        Cmd::Serve { max, count } => serve(max, count),
        Cmd::Kill { pid_d, sig } => match pid::kill_d(pid_d, sig) {
            Ok(()) => {
                println!("ok");
                ExitCode::SUCCESS
            }
            Err(e) => fail("kill_d", e),
        },
    }
}
