//! What a host's daemons count about their work, and its two renderings
//! outside the wire: named pairs (the wire's `Stats`, `StatsReport`) and
//! the Prometheus text exposition format.
//!
//! One [`Metrics`] lives in dipcd, which counts the requests it serves.
//! Workers and shm managers are other processes: each keeps a `Metrics`
//! of its own as a delta and reports it to dipcd (`StatsReport`), which
//! adds the parts that process may speak for (see [`Metrics::add_worker`],
//! [`Metrics::add_manager`]). Counters are plain `u64`s in fixed arrays:
//! each counting process is single-threaded per `Metrics` (a worker's undo
//! threads each keep their own), so an increment is an add.

use crate::wire::Kind;

mod prometheus;

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
        Histogram {
            counts: [0; BUCKETS + 1],
            sum_us: 0,
        }
    }
}

impl Histogram {
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

    fn add(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(o.counts.iter()) {
            *a = a.saturating_add(*b);
        }
        self.sum_us = self.sum_us.saturating_add(o.sum_us);
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
    /// Remote calls this host's workers served, by [`Call`].
    pub calls: [u64; CALLS.len()],
    /// Errors those calls answered with, by errno.
    pub call_errors: [u64; ERRNOS],
    /// Data bytes remote calls brought in (message texts sent, `send_d`
    /// data, a migrating process's image) and shared memory contents
    /// written back to the managers.
    pub bytes_in: u64,
    /// Data bytes remote calls took out (message texts received) and
    /// shared memory contents the managers sent.
    pub bytes_out: u64,
    /// Time from a request's arrival at the worker to its reply's
    /// departure.
    pub latency: Histogram,
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
            calls: [0; CALLS.len()],
            call_errors: [0; ERRNOS],
            bytes_in: 0,
            bytes_out: 0,
            latency: Histogram::default(),
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
        self.calls[call as usize] += 1;
        if let Some(e) = errno {
            self.call_errors[errno_slot(e)] += 1;
        }
        self.latency.record(us);
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
        add_all(&mut self.calls, &w.calls);
        add_all(&mut self.call_errors, &w.call_errors);
        self.bytes_in = self.bytes_in.saturating_add(w.bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(w.bytes_out);
        self.latency.add(&w.latency);
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
        for (c, &n) in CALLS.iter().zip(self.calls.iter()) {
            if n > 0 {
                v.push((format!("call.{}", c.name()), n));
            }
        }
        for (i, &n) in self.call_errors.iter().enumerate() {
            if n > 0 {
                v.push((format!("call_error.{i}"), n));
            }
        }
        for (i, &n) in self.latency.counts.iter().enumerate() {
            if n > 0 {
                v.push((format!("latency.{i}"), n));
            }
        }
        for (name, n) in self.scalars() {
            if n > 0 {
                v.push((name.to_owned(), n));
            }
        }
        v
    }

    fn scalars(&self) -> [(&'static str, u64); 13] {
        [
            ("sessions_opened", self.sessions_opened),
            ("managers_started", self.managers_started),
            ("workers", self.workers),
            ("worker_sessions", self.worker_sessions),
            ("bytes_in", self.bytes_in),
            ("bytes_out", self.bytes_out),
            ("latency_sum_us", self.latency.sum_us),
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
                "call_error" => {
                    if let Some(i) = slot(ERRNOS) {
                        m.call_errors[i] = n;
                    }
                }
                "latency" => {
                    if let Some(i) = slot(BUCKETS + 1) {
                        m.latency.counts[i] = n;
                    }
                }
                "call" => {
                    if let Some(c) = CALLS.iter().find(|c| Some(c.name()) == index) {
                        m.calls[*c as usize] = n;
                    }
                }
                "sessions_opened" => m.sessions_opened = n,
                "managers_started" => m.managers_started = n,
                "workers" => m.workers = n,
                "worker_sessions" => m.worker_sessions = n,
                "bytes_in" => m.bytes_in = n,
                "bytes_out" => m.bytes_out = n,
                "latency_sum_us" => m.latency.sum_us = n,
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

    /// Served calls by name, zeros left out.
    pub fn calls_by_name(&self) -> Vec<(&'static str, u64)> {
        CALLS
            .iter()
            .zip(self.calls.iter())
            .filter(|(_, &n)| n > 0)
            .map(|(c, &n)| (c.name(), n))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Metrics {
        let mut m = Metrics::default();
        m.request(Kind::KeyGet);
        m.request(Kind::KeyGet);
        m.request(Kind::Connect);
        m.request_error(libc::ENOENT);
        m.request_error(100_000);
        m.call(Call::MsgSnd, None, 1);
        m.call(Call::MsgSnd, None, 3);
        m.call(Call::SemOp, Some(libc::EAGAIN), 1000);
        m.call(Call::KillD, None, u64::MAX / 2);
        m.sessions_opened = 4;
        m.bytes_in = 10;
        m.shm_faults = 7;
        m.uptime_s = 12;
        m
    }

    #[test]
    fn buckets_are_log2_microseconds() {
        assert_eq!(Histogram::slot(0), 0);
        assert_eq!(Histogram::slot(1), 0);
        assert_eq!(Histogram::slot(2), 1);
        assert_eq!(Histogram::slot(3), 2);
        assert_eq!(Histogram::slot(4), 2);
        assert_eq!(Histogram::slot(5), 3);
        assert_eq!(Histogram::slot(1 << 23), 23);
        assert_eq!(Histogram::slot((1 << 23) + 1), BUCKETS);
        assert_eq!(Histogram::slot(u64::MAX), BUCKETS);
    }

    #[test]
    fn pairs_round_trip_and_unknown_names_are_skipped() {
        let m = sample();
        let mut pairs = m.to_pairs();
        assert_eq!(Metrics::from_pairs(&pairs), m);
        pairs.push(("a_future_counter".into(), 5));
        pairs.push(("request.99999".into(), 5));
        pairs.push(("call.nonsense".into(), 5));
        assert_eq!(Metrics::from_pairs(&pairs), m);
    }

    #[test]
    fn a_worker_report_adds_only_what_a_worker_counts() {
        let mut d = Metrics::default();
        let w = sample();
        d.add_worker(&w);
        assert_eq!(d.calls, w.calls);
        assert_eq!(d.latency, w.latency);
        assert_eq!(d.requests, [0; KINDS]);
        assert_eq!(d.sessions_opened, 0);
        assert_eq!(d.shm_faults, 0);
        d.add_manager(&w);
        assert_eq!(d.shm_faults, 7);
    }

    /// The checks a scraper makes: every sample belongs to a family with
    /// HELP and TYPE given before it, every line is `name{labels} value`,
    /// and the histogram is cumulative up to `+Inf` = `_count`.
    #[test]
    fn the_exposition_is_well_formed() {
        let text = sample().prometheus();
        let mut typed = std::collections::HashMap::new();
        let mut buckets = Vec::new();
        let mut count = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert!(typed.insert(name.to_owned(), kind.to_owned()).is_none());
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
            let name = series.split('{').next().unwrap();
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "{line}"
            );
            if let Some(labels) = series.strip_prefix(name) {
                if !labels.is_empty() {
                    assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
                    for l in labels[1..labels.len() - 1].split(',') {
                        let (k, v) = l.split_once('=').unwrap();
                        assert!(!k.is_empty() && v.starts_with('"') && v.ends_with('"'));
                    }
                }
            }
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains_key(*f)))
                .unwrap_or(name);
            let kind = typed
                .get(family)
                .unwrap_or_else(|| panic!("no TYPE before {line}"));
            if kind == "counter" {
                assert!(name.ends_with("_total"), "{line}");
            }
            if name == "dipc_call_latency_seconds_bucket" {
                buckets.push((series.to_owned(), value));
            }
            if name == "dipc_call_latency_seconds_count" {
                count = Some(value);
            }
        }
        assert_eq!(buckets.len(), BUCKETS + 1);
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
        let last = buckets.last().unwrap();
        assert!(last.0.contains("le=\"+Inf\""));
        assert_eq!(Some(last.1), count);
        assert_eq!(count, Some(4.0));
        // The 1 µs and 3 µs sends are in the 4 µs bucket; the semop of
        // 1000 µs in 1024 µs; the slow kill_d only in +Inf.
        assert!(text.contains("dipc_call_latency_seconds_bucket{le=\"0.000004\"} 2\n"));
        assert!(text.contains("dipc_call_latency_seconds_bucket{le=\"0.001024\"} 3\n"));
        assert!(text.contains("dipc_call_latency_seconds_bucket{le=\"8.388608\"} 3\n"));
        assert!(text.contains("dipc_requests_total{kind=\"KeyGet\"} 2\n"));
        assert!(text.contains("dipc_call_errors_total{errno=\"EAGAIN\"} 1\n"));
        assert!(text.contains("dipc_request_errors_total{errno=\"other\"} 1\n"));
        assert!(text.contains("dipc_shm_faults_total 7\n"));
    }
}
