//! dipcd's answers about its counters: `dipcref stats`, the counts its
//! workers and managers report, and the Prometheus scrapes.
//!
//! Separate so that the counting stays out of the request handling.

use crate::daemon::{Client, Daemon};
use crate::exporter;
use dipc_common::metrics::Metrics;
use dipc_common::procs;
use dipc_common::reactor::Watch;
use dipc_common::wire::Message;

impl Daemon<'_> {
    pub(crate) fn count_errors(&mut self, c: &mut Client) {
        for e in c.errnos.drain(..) {
            self.metrics.request_error(e);
        }
    }

    /// The counters with the gauges read now.
    pub(crate) fn snapshot(&self) -> Metrics {
        let mut m = self.metrics.clone();
        m.clients = self.clients.len() as u64;
        m.managers_running = self.managers.len() as u64;
        m.registered = self.pids.confirmed().count() as u64;
        m.uptime_s = self.started.elapsed().as_secs();
        m
    }

    /// A worker's or a shm manager's counts: only this host's workers
    /// (the front_end's children) and managers (ours) may add theirs, and
    /// each only to what it counts.
    pub(crate) fn stats_report(&mut self, c: &Client, pairs: &[(String, u64)]) -> Message {
        let from = Metrics::from_pairs(pairs);
        let pid = c.cred.pid;
        if self.managers.values().any(|p| p.as_raw() == pid) {
            self.metrics.add_manager(&from);
        } else if pid > 0 && procs::parent(pid) == Ok(self.front_end) {
            self.metrics.add_worker(&from);
        } else {
            return Message::error(
                libc::EPERM,
                format!("pid {pid} is neither a worker nor a shm manager of this host"),
            );
        }
        Message::Done { value: 0 }
    }

    /// A Prometheus scrape's connection is readable or writable.
    pub(crate) fn scraper_ready<W: Watch + ?Sized>(&mut self, key: u64, w: &mut W) {
        let Some(mut ex) = self.exporter.take() else {
            return;
        };
        if let exporter::Asked::Metrics = ex.ready(w, key) {
            ex.answer(w, key, &self.snapshot().prometheus());
        }
        self.exporter = Some(ex);
    }
}
