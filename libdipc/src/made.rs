//! The remote calls this process makes, counted for its host's dipcd.
//!
//! A call on a structure owned by another host goes from this process
//! straight to the owner's worker (see `state::remote_as`): the caller's
//! dipcd never sees it, so it cannot count it. The library counts each one
//! here (what it was, its errno if it failed, and the time the program
//! waited for it, opening a session included) and hands the counts to its
//! dipcd (`CallsMade`), posted on a fresh connection without waiting for
//! the answer: at most once every [`REPORT_EVERY`], from the call that
//! finds the last report that old, and once more at exit. dipcd adds them to the host's `made` counters, which
//! `dipcref stats` and the Prometheus listener show.
//!
//! Reporting costs a local connect and one write per second of calls, at
//! most, and never waits for dipcd. Counts a report could not deliver
//! (dipcd not running, its backlog full) are kept for the next one; a
//! report dipcd refuses after taking the connection (its client limits)
//! is lost. What a process counted in its last second is lost if
//! it ends without running its atexit handlers (`_exit`, a fatal signal,
//! a migration's old process).

use crate::client::ClientError;
use crate::state;
use dipc_common::metrics::{Call, Calls, Metrics};
use dipc_common::net;
use dipc_common::wire::Message;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The most often a process reports to its dipcd.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Counts not reported yet.
struct Tally {
    /// The process these counts are of: a child of `fork` inherits its
    /// parent's, which are the parent's to report.
    pid: u32,
    calls: Calls,
    /// When the last report was made, or counting began.
    since: Option<Instant>,
}

static TALLY: Mutex<Tally> = Mutex::new(Tally {
    pid: 0,
    calls: Calls::EMPTY,
    since: None,
});
static AT_EXIT: AtomicBool = AtomicBool::new(false);

fn tally() -> MutexGuard<'static, Tally> {
    // Counters stay usable after a panic elsewhere: each update is one add.
    let mut t = TALLY.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    if t.pid != pid {
        t.pid = pid;
        t.calls = Calls::default();
        t.since = None;
    }
    t
}

/// Counts one remote call of the kind `call`, started at `started`, that
/// ended with `result`; reports the counts if the last report is
/// [`REPORT_EVERY`] old.
pub fn record(call: Call, result: &Result<Message, ClientError>, started: Instant) {
    let errno = match result {
        Ok(Message::Error { errno, .. }) => Some(*errno),
        Ok(_) => None,
        Err(e) => Some(e.errno()),
    };
    let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let due = {
        let mut t = tally();
        t.calls.record(call, errno, us);
        let now = Instant::now();
        let since = *t.since.get_or_insert(now);
        (now.duration_since(since) >= REPORT_EVERY).then(|| take(&mut t, now))
    };
    if !AT_EXIT.swap(true, SeqCst) {
        // SAFETY: registering a plain extern "C" function, once.
        unsafe {
            libc::atexit(at_exit);
        }
    }
    if let Some(calls) = due {
        report(calls);
    }
}

fn take(t: &mut Tally, now: Instant) -> Calls {
    t.since = Some(now);
    std::mem::take(&mut t.calls)
}

/// Hands `calls` to dipcd; if that fails, they go back to the tally.
fn report(calls: Calls) {
    let m = Metrics {
        made: calls,
        ..Metrics::default()
    };
    let msg = Message::CallsMade {
        pairs: m.to_pairs(),
    };
    // Posted, not called: a paused or busy dipcd must not hold up the
    // program's calls. dipcd takes the frame when it reads it, whether or
    // not this end is still there for its answer.
    let sent = state::config()
        .map_err(|e| e.to_string())
        .and_then(|c| net::post(&c.back_end_socket(), &msg).map_err(|e| e.to_string()));
    if let Err(e) = sent {
        log::debug!("dipc: calls made not reported yet: {e}");
        tally().calls.add(&m.made);
    }
}

/// At exit, what was counted since the last report.
extern "C" fn at_exit() {
    let calls = {
        let mut t = tally();
        if t.calls.total() == 0 {
            return;
        }
        take(&mut t, Instant::now())
    };
    report(calls);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_does_not_report_its_parents_counts() {
        {
            let mut t = tally();
            t.calls.record(Call::MsgSnd, None, 5);
            // As a forked child finds it: counted by another process.
            t.pid = std::process::id().wrapping_add(1);
        }
        assert_eq!(tally().calls.total(), 0);
        tally().calls.record(Call::SemOp, Some(libc::EAGAIN), 5);
        let t = tally();
        assert_eq!(t.calls.by_name(), vec![("semop", 1)]);
        assert_eq!(t.calls.errors[libc::EAGAIN as usize], 1);
    }
}
