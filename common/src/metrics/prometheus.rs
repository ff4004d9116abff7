//! The Prometheus text exposition of [`Metrics`], what dipcd's metrics
//! listener serves.
//!
//! Separate from the counting because it is one rendering among two (the
//! wire's named pairs are the other) and the longest part of the module.

use super::{errno_name, Metrics, BUCKETS, CALLS};
use std::fmt::Write as _;

impl Metrics {
    /// The text exposition format Prometheus scrapes
    /// (<https://prometheus.io/docs/instrumenting/exposition_formats/>).
    pub fn prometheus(&self) -> String {
        let mut o = String::new();
        let family = |o: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(o, "# HELP {name} {help}");
            let _ = writeln!(o, "# TYPE {name} {kind}");
        };
        family(
            &mut o,
            "dipc_requests_total",
            "counter",
            "Requests dipcd took from local processes, by message kind.",
        );
        for (name, n) in self.requests_by_name() {
            let _ = writeln!(o, "dipc_requests_total{{kind=\"{name}\"}} {n}");
        }
        family(
            &mut o,
            "dipc_request_errors_total",
            "counter",
            "Errors dipcd answered local requests with, by errno.",
        );
        errors(&mut o, "dipc_request_errors_total", &self.request_errors);
        family(
            &mut o,
            "dipc_calls_served_total",
            "counter",
            "Remote calls this host's workers served, by call.",
        );
        for (c, &n) in CALLS.iter().zip(self.calls.iter()) {
            let _ = writeln!(o, "dipc_calls_served_total{{call=\"{}\"}} {n}", c.name());
        }
        family(
            &mut o,
            "dipc_call_errors_total",
            "counter",
            "Errors the remote calls served here answered with, by errno.",
        );
        errors(&mut o, "dipc_call_errors_total", &self.call_errors);
        family(
            &mut o,
            "dipc_call_latency_seconds",
            "histogram",
            "Time from a remote call's arrival at a worker to its reply.",
        );
        let mut cumulative = 0u64;
        for (i, &n) in self.latency.counts[..BUCKETS].iter().enumerate() {
            cumulative += n;
            let le = (1u64 << i) as f64 / 1e6;
            let _ = writeln!(
                o,
                "dipc_call_latency_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let count = self.latency.count();
        let _ = writeln!(o, "dipc_call_latency_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            o,
            "dipc_call_latency_seconds_sum {}",
            self.latency.sum_us as f64 / 1e6
        );
        let _ = writeln!(o, "dipc_call_latency_seconds_count {count}");
        let counters: [(&str, &str, u64); 8] = [
            (
                "dipc_sessions_opened_total",
                "Sessions this host's processes opened to other hosts.",
                self.sessions_opened,
            ),
            (
                "dipc_workers_total",
                "Worker processes that served sessions from other hosts.",
                self.workers,
            ),
            (
                "dipc_worker_sessions_total",
                "Sessions from other hosts that this host's workers served.",
                self.worker_sessions,
            ),
            (
                "dipc_shm_managers_started_total",
                "Shared memory managers started.",
                self.managers_started,
            ),
            (
                "dipc_bytes_in_total",
                "Data bytes remote calls brought to this host.",
                self.bytes_in,
            ),
            (
                "dipc_bytes_out_total",
                "Data bytes remote calls took from this host.",
                self.bytes_out,
            ),
            (
                "dipc_shm_faults_total",
                "Shared memory faults this host's managers served.",
                self.shm_faults,
            ),
            (
                "dipc_shm_invalidations_total",
                "Copies and write grants this host's managers took back.",
                self.shm_invalidations,
            ),
        ];
        for (name, help, n) in counters {
            family(&mut o, name, "counter", help);
            let _ = writeln!(o, "{name} {n}");
        }
        let gauges: [(&str, &str, u64); 4] = [
            (
                "dipc_clients",
                "Local processes connected to dipcd.",
                self.clients,
            ),
            (
                "dipc_shm_managers",
                "Shared memory managers running.",
                self.managers_running,
            ),
            (
                "dipc_registered_processes",
                "Processes of this host registered in the cluster.",
                self.registered,
            ),
            (
                "dipc_uptime_seconds",
                "Seconds since dipcd started.",
                self.uptime_s,
            ),
        ];
        for (name, help, n) in gauges {
            family(&mut o, name, "gauge", help);
            let _ = writeln!(o, "{name} {n}");
        }
        o
    }
}

fn errors(o: &mut String, name: &str, by_errno: &[u64]) {
    for (e, &n) in by_errno.iter().enumerate() {
        if n > 0 {
            let _ = writeln!(o, "{name}{{errno=\"{}\"}} {n}", errno_name(e as i32));
        }
    }
}
