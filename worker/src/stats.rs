//! What a worker counts of the calls it serves, reported to its host's
//! dipcd (`StatsReport`), which keeps the host's counters.
//!
//! Each session keeps its own tally (the sessions of an undo context run
//! in threads of one worker) and reports it as a delta: when the session
//! ends, at most every [`REPORT_EVERY`] while calls come, and once a
//! session with unreported counts has been idle for that long. A report
//! per call would add a round trip to dipcd to every remote call; one at
//! the end only would hide the calls of a long session (an application
//! keeps its sessions as long as it lives) until it ends.
//!
//! Each report is a connection of its own, closed after the answer: a
//! worker runs as its caller's uid, and a connection kept for the
//! session's life would count against that uid's
//! `limits.clients_per_uid` on this host for as long.

use dipc_common::channel::Channel;
use dipc_common::config::Config;
use dipc_common::metrics::{Call, Metrics};
use dipc_common::wire::Message;
use log::debug;
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

pub const REPORT_EVERY: Duration = Duration::from_secs(1);

pub struct Tally {
    m: Metrics,
    /// Whether `m` holds anything not reported yet.
    dirty: bool,
    reported: Instant,
}

impl Tally {
    /// A new session's tally; `worker` when it is its process's first.
    pub fn new(worker: bool) -> Tally {
        let m = Metrics {
            worker_sessions: 1,
            workers: u64::from(worker),
            ..Metrics::default()
        };
        Tally {
            m,
            dirty: true,
            reported: Instant::now(),
        }
    }

    /// A call served: `reply` is its answer, `started` when its request
    /// arrived, `bytes_in` the data it brought.
    pub fn served(&mut self, call: Call, reply: &Message, started: Instant, bytes_in: usize) {
        let errno = match reply {
            Message::Error { errno, .. } => Some(*errno),
            _ => None,
        };
        let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.m.call(call, errno, us);
        self.dirty = true;
        if errno.is_none() {
            self.m.bytes_in = self.m.bytes_in.saturating_add(bytes_in as u64);
        }
        if let Message::MsgData { text, .. } = reply {
            self.m.bytes_out = self.m.bytes_out.saturating_add(text.len() as u64);
        }
    }

    /// Before waiting for the next request: reports if it is time, or
    /// waits at most until it is and reports if nothing came meanwhile.
    pub fn before_wait(&mut self, config: &Config, ch: &Channel<TcpStream>) {
        if !self.dirty {
            return;
        }
        let left = REPORT_EVERY.saturating_sub(self.reported.elapsed());
        if !left.is_zero() && ch.buffered() == 0 {
            let mut fds = [nix::poll::PollFd::new(
                ch.get_ref().as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
            match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
                Ok(0) => {}
                // A request came (or the caller hung up, or a signal):
                // serve it first.
                _ => return,
            }
        } else if !left.is_zero() {
            return;
        }
        self.report(config);
    }

    /// Sends what is not reported yet. A dipcd that cannot take it (it is
    /// stopping) loses it: the counters die with it anyway.
    pub fn report(&mut self, config: &Config) {
        self.reported = Instant::now();
        if !std::mem::replace(&mut self.dirty, false) {
            return;
        }
        let pairs = std::mem::take(&mut self.m).to_pairs();
        let report = Message::StatsReport { pairs };
        if let Err(e) = crate::local_call(config, &config.back_end_socket(), &report) {
            debug!("worker: counts not reported: {e:?}");
        }
    }
}

/// The data bytes a request brings to this host.
pub fn bytes_in(req: &Message) -> usize {
    match req {
        Message::MsgSnd { text, .. } => text.len(),
        Message::SendD { data, .. } => data.len(),
        Message::MigrateData { data } => data.len(),
        _ => 0,
    }
}
