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
//! Serving never waits for dipcd (a paused or busy dipcd must not hold
//! up remote calls): a report during the session is written on a fresh
//! non-blocking connection, and its answer is read when it comes, while
//! the worker waits for its next request; only then is the connection
//! closed. The worker stays alive until dipcd has answered, since dipcd
//! takes counts only from a live child of the front_end. Only the last
//! report, once the session is over, waits for dipcd (at most the request
//! time-out for each of the two). No connection is kept beyond that: a
//! worker runs as its caller's uid, and a kept one would hold one of that
//! uid's `limits.clients_per_uid` connections on this host.

use dipc_common::channel::Channel;
use dipc_common::config::Config;
use dipc_common::metrics::{Call, Metrics};
use dipc_common::net;
use dipc_common::wire::Message;
use log::debug;
use std::io::{self, Read};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

pub const REPORT_EVERY: Duration = Duration::from_secs(1);

pub struct Tally {
    m: Metrics,
    /// Whether `m` holds anything not reported yet.
    dirty: bool,
    reported: Instant,
    /// A report written to dipcd whose answer has not come yet.
    posted: Option<UnixStream>,
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
            posted: None,
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

    /// Before waiting for the next request: reports if it is time, and
    /// while no request comes, reports when it is time and takes dipcd's
    /// answer to the last report. Returns once a request (or the caller's
    /// hang-up) is there to read, or there is nothing to wait for but it.
    pub fn before_wait(&mut self, config: &Config, ch: &Channel<TcpStream>) {
        self.collect(None);
        loop {
            let due = self.dirty && self.posted.is_none();
            if due && self.reported.elapsed() >= REPORT_EVERY {
                self.post(config);
                continue;
            }
            if ch.buffered() > 0 || !(due || self.posted.is_some()) {
                return;
            }
            let timeout = if due {
                let left = REPORT_EVERY.saturating_sub(self.reported.elapsed());
                nix::poll::PollTimeout::from(
                    u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX),
                )
            } else {
                nix::poll::PollTimeout::NONE
            };
            let session = ch.get_ref().as_fd();
            let (request, answer) = {
                let mut fds = vec![nix::poll::PollFd::new(
                    session,
                    nix::poll::PollFlags::POLLIN,
                )];
                if let Some(p) = &self.posted {
                    fds.push(nix::poll::PollFd::new(
                        p.as_fd(),
                        nix::poll::PollFlags::POLLIN,
                    ));
                }
                match nix::poll::poll(&mut fds, timeout) {
                    // A signal: the receive that follows deals with it.
                    Err(_) => return,
                    Ok(_) => {
                        let ready =
                            |f: &nix::poll::PollFd| f.revents().is_some_and(|r| !r.is_empty());
                        (ready(&fds[0]), fds.get(1).is_some_and(ready))
                    }
                }
            };
            if answer {
                self.collect(None);
            }
            if request {
                return;
            }
        }
    }

    /// Writes the counts not reported yet to dipcd, without waiting; on a
    /// failure they are kept for the next report.
    fn post(&mut self, config: &Config) {
        self.reported = Instant::now();
        let report = Message::StatsReport {
            pairs: self.m.to_pairs(),
        };
        match net::post(&config.back_end_socket(), &report) {
            Ok(s) => {
                self.m = Metrics::default();
                self.dirty = false;
                self.posted = Some(s);
            }
            Err(e) => debug!("worker: counts not reported yet: {e}"),
        }
    }

    /// Takes dipcd's answer to the posted report if it has come (`None`),
    /// or waits for it at most `wait`.
    fn collect(&mut self, wait: Option<Duration>) {
        let Some(s) = self.posted.as_mut() else {
            return;
        };
        if let Some(w) = wait {
            if let Err(e) = s
                .set_nonblocking(false)
                .and_then(|()| s.set_read_timeout(Some(w)))
            {
                debug!("worker: {e}");
            }
        }
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && wait.is_none() => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                debug!("worker: no answer to its counts: {e}");
                self.posted = None;
            }
            // The answer (Done, or an error dipcd logs itself) or a close.
            Ok(_) => self.posted = None,
        }
    }

    /// The session is over: waits for the answer to the posted report,
    /// then reports the rest and waits for that answer too (dipcd takes
    /// counts from a live worker only).
    pub fn report(&mut self, config: &Config) {
        self.collect(Some(config.timeouts.request));
        self.posted = None;
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
