//! This host's load, measured for the referee's balancer and sent with
//! each heartbeat (`LoadReport`; see the referee's `balance`).
//!
//! The load is the CPU time (utime + stime of `/proc/PID/stat`) that the
//! processes registered here used since the last report. Only dipc's
//! processes count: simulated hosts that share one machine's CPUs each
//! get their own figure, which the machine's load average would not give.
//! A process first seen in a window (it just registered, or moved in)
//! counts for what it used in the window: all of its CPU time if it
//! started within it, else its average rate over its life.

use crate::pids::Reg;
use dipc_common::wire::{LoadProc, ToReferee, MAX_LOAD_NAME, MAX_LOAD_PROCS};
use std::collections::HashMap;
use std::time::Instant;

/// What `/proc/PID/stat` tells of a process.
#[derive(Debug, PartialEq, Eq)]
pub struct Stat {
    pub comm: String,
    /// utime + stime, clock ticks.
    pub ticks: u64,
    /// Clock ticks since boot.
    pub starttime: u64,
}

/// Parses a `/proc/PID/stat` line. The command name (field 2, in
/// parentheses) may hold spaces and parentheses: fields are counted from
/// the last `)`.
pub fn parse_stat(line: &str) -> Option<Stat> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let comm = line.get(open + 1..close)?.to_owned();
    let f: Vec<&str> = line.get(close + 1..)?.split_whitespace().collect();
    // f[0] is field 3 (state): utime is field 14, stime 15, starttime 22.
    let num = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok());
    Some(Stat {
        comm,
        ticks: num(11)?.checked_add(num(12)?)?,
        starttime: num(19)?,
    })
}

/// The CPU ticks a process first seen now used in a window of
/// `window_ms`: all of them if it is younger than the window, else its
/// average over its life times the window.
pub fn first_window_ticks(ticks: u64, age_ms: u64, window_ms: u64) -> u64 {
    if age_ms <= window_ms || age_ms == 0 {
        ticks
    } else {
        (u128::from(ticks) * u128::from(window_ms) / u128::from(age_ms)) as u64
    }
}

pub struct Meter {
    last: Instant,
    /// The last reading of each process: (starttime, ticks).
    prev: HashMap<i32, (u64, u64)>,
    hz: u64,
}

fn uptime_ms() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some((secs * 1000.0) as u64)
}

/// A name cut to at most [`MAX_LOAD_NAME`] bytes, on a character boundary.
fn cut(mut name: String) -> String {
    if name.len() > MAX_LOAD_NAME {
        let mut end = MAX_LOAD_NAME;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    name
}

impl Meter {
    pub fn new(now: Instant) -> Meter {
        // SAFETY: sysconf reads a constant of the system.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Meter {
            last: now,
            prev: HashMap::new(),
            hz: u64::try_from(hz).ok().filter(|h| *h > 0).unwrap_or(100),
        }
    }

    /// The report of the window since the last one: the CPU time of every
    /// confirmed registration, and the migratable ones listed (the
    /// busiest [`MAX_LOAD_PROCS`]).
    pub fn report<'a>(&mut self, regs: impl Iterator<Item = &'a Reg>, now: Instant) -> ToReferee {
        let window_ms = now.duration_since(self.last).as_millis() as u64;
        self.last = now;
        let up_ms = uptime_ms();
        let mut prev = HashMap::new();
        let mut total = 0u64;
        let mut procs = Vec::new();
        for r in regs.filter(|r| r.pid_d > 0) {
            let Some(st) = std::fs::read_to_string(format!("/proc/{}/stat", r.pid))
                .ok()
                .and_then(|l| parse_stat(&l))
                .filter(|s| s.starttime == r.starttime)
            else {
                continue;
            };
            let start_ms = st.starttime.saturating_mul(1000) / self.hz;
            let age_ms = up_ms.map_or(0, |u| u.saturating_sub(start_ms));
            let used = match self.prev.get(&r.pid) {
                Some(&(s, t)) if s == st.starttime => st.ticks.saturating_sub(t),
                _ => first_window_ticks(st.ticks, age_ms, window_ms),
            };
            prev.insert(r.pid, (st.starttime, st.ticks));
            let cpu_ms = used.saturating_mul(1000) / self.hz;
            total = total.saturating_add(cpu_ms);
            if r.migratable {
                procs.push(LoadProc {
                    pid_d: r.pid_d,
                    pid: r.pid,
                    name: cut(r.names.first().cloned().unwrap_or(st.comm)),
                    cpu: u32::try_from(cpu_ms).unwrap_or(u32::MAX),
                    stay_ms: age_ms,
                });
            }
        }
        self.prev = prev;
        procs.sort_by(|a, b| b.cpu.cmp(&a.cpu).then(a.pid_d.cmp(&b.pid_d)));
        procs.truncate(MAX_LOAD_PROCS);
        ToReferee::LoadReport {
            window_ms: u32::try_from(window_ms).unwrap_or(u32::MAX),
            cpu_ms: u32::try_from(total).unwrap_or(u32::MAX),
            procs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let line = "4242 (we ird) (x)) R 1 4242 4242 0 -1 4194304 100 0 0 0 \
                    250 50 0 0 20 0 1 0 987654 1000 100 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                comm: "we ird) (x)".into(),
                ticks: 300,
                starttime: 987654,
            })
        );
        assert_eq!(parse_stat("4242 (x) R 1 2"), None);
    }

    #[test]
    fn own_process_is_read() {
        let me = std::process::id();
        let line = std::fs::read_to_string(format!("/proc/{me}/stat")).unwrap();
        let st = parse_stat(&line).unwrap();
        assert_eq!(
            Some(st.starttime),
            dipc_common::procs::starttime(me as i32).ok()
        );
    }

    #[test]
    fn a_process_first_seen_counts_its_share_of_the_window() {
        // Started within the window: all it used.
        assert_eq!(first_window_ticks(20, 200, 250), 20);
        // Ran 10 s at half a CPU (500 ticks at 100 Hz): 250 ms of it.
        assert_eq!(first_window_ticks(500, 10_000, 250), 12);
        assert_eq!(first_window_ticks(7, 0, 0), 7);
    }

    #[test]
    fn names_are_cut_on_a_character_boundary() {
        assert_eq!(cut("é".repeat(40)).len(), MAX_LOAD_NAME);
        assert_eq!(cut("a".repeat(65)).len(), MAX_LOAD_NAME);
        assert_eq!(cut(format!("a{}", "é".repeat(40))).len(), MAX_LOAD_NAME - 1);
    }
}
