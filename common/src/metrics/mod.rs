//! What a host's daemons count about their work, and its two renderings
//! outside the wire: named pairs (the wire's `Stats`, `StatsReport`,
//! `CallsMade`) and the Prometheus text exposition format
//! ([`prometheus`](Metrics::prometheus)).
//!
//! One [`Metrics`] lives in dipcd, which counts the requests it serves.
//! Workers and shm managers are other processes: each keeps a `Metrics`
//! of its own as a delta and reports it to dipcd (`StatsReport`), which
//! adds the parts that process may speak for (see [`Metrics::add_worker`],
//! [`Metrics::add_manager`]). The calls a host's processes make to other
//! hosts go from the library straight to the owner's worker, past dipcd:
//! the library counts them in the process and reports them (`CallsMade`,
//! [`Metrics::add_caller`]). Counters are plain `u64`s in fixed arrays:
//! each counting process is single-threaded per `Metrics` (a worker's undo
//! threads each keep their own; the library holds its tally under a lock),
//! so an increment is an add.

mod prometheus;
#[cfg(test)]
mod tests;

use crate::wire::Kind;

/// Slots of [`Metrics::requests`]: message kind numbers are below this.
pub const KINDS: usize = 256;
/// Slots of the per-errno arrays; errnos at or beyond it are counted in
/// slot 0 (no errno is 0).
pub const ERRNOS: usize = 256;
/// Finite latency buckets: bucket `i` holds calls of at most 2^i µs (the
/// last, 2^23 µs, is 8.4 s); one more slot holds the slower ones.
pub const BUCKETS: usize = 24;
/// Most pairs a `Stats` or `StatsReport` carries.
pub const MAX_PAIRS: usize = 4096;

/// A remote call a worker served, by what it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Call {
    MsgSnd,
    MsgRcv,
    MsgCtl,
    SemOp,
    SemCtl,
    ShmAttach,
    ShmCtl,
    Get,
    KillD,
    SendD,
    CallOpen,
    Migrate,
    Stat,
    Ping,
    Other,
}

/// Every [`Call`], in slot order.
pub const CALLS: [Call; 15] = [
    Call::MsgSnd,
    Call::MsgRcv,
    Call::MsgCtl,
    Call::SemOp,
    Call::SemCtl,
    Call::ShmAttach,
    Call::ShmCtl,
    Call::Get,
    Call::KillD,
    Call::SendD,
    Call::CallOpen,
    Call::Migrate,
    Call::Stat,
    Call::Ping,
    Call::Other,
];

impl Call {
    pub fn name(self) -> &'static str {
        match self {
            Call::MsgSnd => "msgsnd",
            Call::MsgRcv => "msgrcv",
            Call::MsgCtl => "msgctl",
            Call::SemOp => "semop",
            Call::SemCtl => "semctl",
            Call::ShmAttach => "shmat",
            Call::ShmCtl => "shmctl",
            Call::Get => "get",
            Call::KillD => "kill_d",
            Call::SendD => "send_d",
            Call::CallOpen => "call_open",
            Call::Migrate => "migrate",
            Call::Stat => "stat",
            Call::Ping => "ping",
            Call::Other => "other",
        }
    }

    /// The call a request to a worker is; `None` for what opens, steers or
    /// asks about a session rather than being a call on this host.
    pub fn of(kind: Kind) -> Option<Call> {
        Some(match kind {
            Kind::MsgSnd => Call::MsgSnd,
            Kind::MsgRcv => Call::MsgRcv,
            Kind::MsgCtl => Call::MsgCtl,
            Kind::SemOp => Call::SemOp,
            Kind::SemCtl => Call::SemCtl,
            Kind::ShmAttach => Call::ShmAttach,
            Kind::ShmCtl | Kind::ShmQuery => Call::ShmCtl,
            Kind::IpcGet => Call::Get,
            Kind::KillD => Call::KillD,
            Kind::SendD => Call::SendD,
            Kind::CallOpen => Call::CallOpen,
            Kind::MigrateSpawn | Kind::MigrateData | Kind::MigrateCommit => Call::Migrate,
            Kind::IpcStatAny => Call::Stat,
            Kind::Ping => Call::Ping,
            Kind::Session
            | Kind::SenderPid
            | Kind::Received
            | Kind::Cancel
            | Kind::StatsAsk
            | Kind::SemJoin => return None,
            _ => Call::Other,
        })
    }
}

/// A latency histogram with fixed log2 buckets of microseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    /// Not cumulative: `counts[i]` for `i < BUCKETS` holds the samples in
    /// (2^(i-1), 2^i] µs, `counts[BUCKETS]` the ones above 2^(BUCKETS-1).
    pub counts: [u64; BUCKETS + 1],
    pub sum_us: u64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::EMPTY
    }
}

impl Histogram {
    pub const EMPTY: Histogram = Histogram {
        counts: [0; BUCKETS + 1],
        sum_us: 0,
    };

    /// The slot of a sample of `us` microseconds.
    pub fn slot(us: u64) -> usize {
        if us <= 1 {
            return 0;
        }
        // ceil(log2(us)): the smallest i with us <= 2^i.
        let i = (64 - (us - 1).leading_zeros()) as usize;
        i.min(BUCKETS)
    }

    pub fn record(&mut self, us: u64) {
        self.counts[Self::slot(us)] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn add(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(o.counts.iter()) {
            *a = a.saturating_add(*b);
        }
        self.sum_us = self.sum_us.saturating_add(o.sum_us);
    }
}

/// Remote calls counted one way (served here, or made from here): by what
/// they were, the errno of those that failed, and their times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calls {
    /// By [`Call`] slot.
    pub by_call: [u64; CALLS.len()],
    /// Failed calls by errno.
    pub errors: [u64; ERRNOS],
    pub latency: Histogram,
}

/// The pair names of one [`Calls`]: `{call}.msgsnd`, `{error}.11`,
/// `{latency}.3`, `{latency}_sum_us`.
struct CallNames {
    call: &'static str,
    error: &'static str,
    latency: &'static str,
    latency_sum: &'static str,
}

const SERVED: CallNames = CallNames {
    call: "call",
    error: "call_error",
    latency: "latency",
    latency_sum: "latency_sum_us",
};
const MADE: CallNames = CallNames {
    call: "made",
    error: "made_error",
    latency: "made_latency",
    latency_sum: "made_latency_sum_us",
};

impl Default for Calls {
    fn default() -> Calls {
        Calls::EMPTY
    }
}

impl Calls {
    /// No calls (a `const`, for a process-wide tally in a `static`).
    pub const EMPTY: Calls = Calls {
        by_call: [0; CALLS.len()],
        errors: [0; ERRNOS],
        latency: Histogram::EMPTY,
    };

    /// A call: what it was, its errno if it failed, its time.
    pub fn record(&mut self, call: Call, errno: Option<i32>, us: u64) {
        self.by_call[call as usize] += 1;
        if let Some(e) = errno {
            self.errors[errno_slot(e)] += 1;
        }
        self.latency.record(us);
    }

    pub fn add(&mut self, o: &Calls) {
        add_all(&mut self.by_call, &o.by_call);
        add_all(&mut self.errors, &o.errors);
        self.latency.add(&o.latency);
    }

    /// All calls counted.
    pub fn total(&self) -> u64 {
        self.by_call.iter().sum()
    }

    /// Calls by name, zeros left out.
    pub fn by_name(&self) -> Vec<(&'static str, u64)> {
        CALLS
            .iter()
            .zip(self.by_call.iter())
            .filter(|(_, &n)| n > 0)
            .map(|(c, &n)| (c.name(), n))
            .collect()
    }

    fn push_pairs(&self, names: &CallNames, v: &mut Vec<(String, u64)>) {
        for (c, &n) in CALLS.iter().zip(self.by_call.iter()) {
            if n > 0 {
                v.push((format!("{}.{}", names.call, c.name()), n));
            }
        }
        for (i, &n) in self.errors.iter().enumerate() {
            if n > 0 {
                v.push((format!("{}.{i}", names.error), n));
            }
        }
        for (i, &n) in self.latency.counts.iter().enumerate() {
            if n > 0 {
                v.push((format!("{}.{i}", names.latency), n));
            }
        }
        if self.latency.sum_us > 0 {
            v.push((names.latency_sum.to_owned(), self.latency.sum_us));
        }
    }

    /// Takes one named pair if it is one of these counts' (`true`).
    fn set_pair(&mut self, names: &CallNames, family: &str, index: Option<&str>, n: u64) -> bool {
        let slot = |len: usize| {
            index
                .and_then(|i| i.parse::<usize>().ok())
                .filter(|&i| i < len)
        };
        if family == names.call {
            if let Some(c) = CALLS.iter().find(|c| Some(c.name()) == index) {
                self.by_call[*c as usize] = n;
            }
        } else if family == names.error {
            if let Some(i) = slot(ERRNOS) {
                self.errors[i] = n;
            }
        } else if family == names.latency {
            if let Some(i) = slot(BUCKETS + 1) {
                self.latency.counts[i] = n;
            }
        } else if family == names.latency_sum && index.is_none() {
            self.latency.sum_us = n;
        } else {
            return false;
        }
        true
    }
}

/// Everything one host counts, since its dipcd started (or, in a worker or
/// manager, since its last report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metrics {
    /// Requests dipcd took from local processes, by message kind.
    pub requests: [u64; KINDS],
    /// Errors dipcd answered local requests with, by errno.
    pub request_errors: [u64; ERRNOS],
    /// Sessions this host's processes opened to other hosts (an employer
    /// forked for each).
    pub sessions_opened: u64,
    /// Shared memory managers started.
    pub managers_started: u64,
    /// Worker processes that served sessions from other hosts.
    pub workers: u64,
    /// Sessions those workers served (a worker serves one, or the
    /// sessions of one process's `SEM_UNDO` context).
    pub worker_sessions: u64,
    /// Remote calls this host's workers served; their latency is the time
    /// from a request's arrival at the worker to its reply's departure.
    pub served: Calls,
    /// Remote calls this host's processes made to other hosts, as the
    /// library reported them; their latency is the caller's, from the
    /// call's start (opening a session if it needs one) to its answer.
    pub made: Calls,
    /// Data bytes remote calls brought in (message texts sent, `send_d`
    /// data, a migrating process's image) and shared memory contents
    /// written back to the managers.
    pub bytes_in: u64,
    /// Data bytes remote calls took out (message texts received) and
    /// shared memory contents the managers sent.
    pub bytes_out: u64,
    /// Shared memory faults the managers served (a unit asked for).
    pub shm_faults: u64,
    /// Copies and write grants the managers took back from hosts.
    pub shm_invalidations: u64,
    /// Gauges, filled in by dipcd when asked: local clients connected,
    /// managers running, processes of this host registered, seconds since
    /// dipcd started.
    pub clients: u64,
    pub managers_running: u64,
    pub registered: u64,
    pub uptime_s: u64,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            requests: [0; KINDS],
            request_errors: [0; ERRNOS],
            sessions_opened: 0,
            managers_started: 0,
            workers: 0,
            worker_sessions: 0,
            served: Calls::default(),
            made: Calls::default(),
            bytes_in: 0,
            bytes_out: 0,
            shm_faults: 0,
            shm_invalidations: 0,
            clients: 0,
            managers_running: 0,
            registered: 0,
            uptime_s: 0,
        }
    }
}

fn errno_slot(errno: i32) -> usize {
    usize::try_from(errno)
        .ok()
        .filter(|&e| e < ERRNOS)
        .unwrap_or(0)
}

fn add_all(a: &mut [u64], b: &[u64]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x = x.saturating_add(*y);
    }
}

impl Metrics {
    pub fn request(&mut self, kind: Kind) {
        if let Some(n) = self.requests.get_mut(kind as usize) {
            *n += 1;
        }
    }

    pub fn request_error(&mut self, errno: i32) {
        self.request_errors[errno_slot(errno)] += 1;
    }

    /// A served call: what it was, its errno if it failed, its time.
    pub fn call(&mut self, call: Call, errno: Option<i32>, us: u64) {
        self.served.record(call, errno, us);
    }

    /// Whether nothing was counted (a delta with nothing to report).
    pub fn is_empty(&self) -> bool {
        *self == Metrics::default()
    }

    /// Adds a worker's report: the served calls and sessions, nothing else
    /// (a worker does not speak for dipcd's own counters).
    pub fn add_worker(&mut self, w: &Metrics) {
        self.workers = self.workers.saturating_add(w.workers);
        self.worker_sessions = self.worker_sessions.saturating_add(w.worker_sessions);
        self.served.add(&w.served);
        self.bytes_in = self.bytes_in.saturating_add(w.bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(w.bytes_out);
    }

    /// Adds a local process's report of the calls it made, nothing else:
    /// any local process may send one, so it speaks only for itself.
    pub fn add_caller(&mut self, p: &Metrics) {
        self.made.add(&p.made);
    }

    /// Adds a shared memory manager's report: its faults, invalidations
    /// and the segment contents it moved.
    pub fn add_manager(&mut self, m: &Metrics) {
        self.bytes_in = self.bytes_in.saturating_add(m.bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(m.bytes_out);
        self.shm_faults = self.shm_faults.saturating_add(m.shm_faults);
        self.shm_invalidations = self.shm_invalidations.saturating_add(m.shm_invalidations);
    }

    /// The counters as named pairs, zeros left out: what the wire carries.
    /// A reader ignores names it does not know, so counters can be added
    /// without a new message.
    pub fn to_pairs(&self) -> Vec<(String, u64)> {
        let mut v = Vec::new();
        for (i, &n) in self.requests.iter().enumerate() {
            if n > 0 {
                v.push((format!("request.{i}"), n));
            }
        }
        for (i, &n) in self.request_errors.iter().enumerate() {
            if n > 0 {
                v.push((format!("request_error.{i}"), n));
            }
        }
        self.served.push_pairs(&SERVED, &mut v);
        self.made.push_pairs(&MADE, &mut v);
        for (name, n) in self.scalars() {
            if n > 0 {
                v.push((name.to_owned(), n));
            }
        }
        v
    }

    fn scalars(&self) -> [(&'static str, u64); 12] {
        [
            ("sessions_opened", self.sessions_opened),
            ("managers_started", self.managers_started),
            ("workers", self.workers),
            ("worker_sessions", self.worker_sessions),
            ("bytes_in", self.bytes_in),
            ("bytes_out", self.bytes_out),
            ("shm_faults", self.shm_faults),
            ("shm_invalidations", self.shm_invalidations),
            ("clients", self.clients),
            ("managers_running", self.managers_running),
            ("registered", self.registered),
            ("uptime_s", self.uptime_s),
        ]
    }

    /// Reads named pairs back; names this build does not know are skipped.
    pub fn from_pairs(pairs: &[(String, u64)]) -> Metrics {
        let mut m = Metrics::default();
        for (name, n) in pairs {
            let n = *n;
            let (family, index) = match name.split_once('.') {
                Some((f, i)) => (f, Some(i)),
                None => (name.as_str(), None),
            };
            let slot = |len: usize| {
                index
                    .and_then(|i| i.parse::<usize>().ok())
                    .filter(|&i| i < len)
            };
            match family {
                "request" => {
                    if let Some(i) = slot(KINDS) {
                        m.requests[i] = n;
                    }
                }
                "request_error" => {
                    if let Some(i) = slot(ERRNOS) {
                        m.request_errors[i] = n;
                    }
                }
                _ if m.served.set_pair(&SERVED, family, index, n) => {}
                _ if m.made.set_pair(&MADE, family, index, n) => {}
                "sessions_opened" => m.sessions_opened = n,
                "managers_started" => m.managers_started = n,
                "workers" => m.workers = n,
                "worker_sessions" => m.worker_sessions = n,
                "bytes_in" => m.bytes_in = n,
                "bytes_out" => m.bytes_out = n,
                "shm_faults" => m.shm_faults = n,
                "shm_invalidations" => m.shm_invalidations = n,
                "clients" => m.clients = n,
                "managers_running" => m.managers_running = n,
                "registered" => m.registered = n,
                "uptime_s" => m.uptime_s = n,
                _ => {}
            }
        }
        m
    }

    /// Requests by kind name, zeros left out.
    pub fn requests_by_name(&self) -> Vec<(&'static str, u64)> {
        Kind::ALL
            .iter()
            .filter_map(|k| {
                let n = *self.requests.get(*k as usize)?;
                (n > 0).then(|| (k.name(), n))
            })
            .collect()
    }
}

/// The symbolic name of an errno (`E123` for one not listed here, `other`
/// for slot 0, where errnos too large to have a slot are counted).
pub fn errno_name(e: i32) -> String {
    let name = match e {
        0 => "other",
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOSPC => "ENOSPC",
        libc::ERANGE => "ERANGE",
        libc::ENOSYS => "ENOSYS",
        libc::ENOMSG => "ENOMSG",
        libc::EIDRM => "EIDRM",
        libc::EPROTO => "EPROTO",
        libc::EMSGSIZE => "EMSGSIZE",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ECONNRESET => "ECONNRESET",
        libc::ENOTCONN => "ENOTCONN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ECANCELED => "ECANCELED",
        libc::EOWNERDEAD => "EOWNERDEAD",
        libc::EOVERFLOW => "EOVERFLOW",
        _ => return format!("E{e}"),
    };
    name.to_owned()
}
