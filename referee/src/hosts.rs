//! The referee's table of hosts: who joined, when each was last heard
//! from, and which are up.

use dipc_common::silence::Silence;
use dipc_common::wire::HostInfo;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Host {
    up: bool,
    silence: Silence,
    joined: Instant,
    version: u16,
    /// The connection the host joined on, while it is open.
    conn: Option<usize>,
    /// The host finished claiming its keys on some connection to this
    /// referee (a heartbeat came after them): from then on this referee
    /// knows its keys, and a key of its missing from the table was freed.
    claimed: bool,
}

/// Hosts keyed by their front_end address. A host that goes down stays in
/// the table (shown down) until it joins again or an administrator removes
/// it, so that `dipcref hosts` tells what happened.
#[derive(Debug, Default)]
pub struct HostTable {
    hosts: BTreeMap<SocketAddr, Host>,
}

impl HostTable {
    /// Records a join. Returns the connection of an earlier incarnation of
    /// the same host, which the caller closes.
    pub fn join(
        &mut self,
        addr: SocketAddr,
        version: u16,
        conn: usize,
        now: Instant,
    ) -> Option<usize> {
        let claimed = self.hosts.get(&addr).is_some_and(|h| h.claimed);
        let old = self.hosts.insert(
            addr,
            Host {
                up: true,
                silence: Silence::new(now),
                joined: now,
                version,
                conn: Some(conn),
                claimed,
            },
        );
        old.and_then(|h| h.conn).filter(|c| *c != conn)
    }

    /// A frame came from the host: any frame shows it alive, not only a
    /// heartbeat (a busy host's relayed requests may overtake its
    /// heartbeats).
    pub fn heard(&mut self, addr: &SocketAddr, now: Instant) {
        if let Some(h) = self.hosts.get_mut(addr) {
            h.silence.heard(now);
        }
    }

    /// A heartbeat from `addr` on connection `conn`: a host sends its
    /// claims as soon as it has joined, before its first heartbeat, so
    /// they are all in.
    pub fn heartbeat(&mut self, addr: &SocketAddr, conn: usize) {
        if let Some(h) = self.hosts.get_mut(addr) {
            if h.conn == Some(conn) {
                h.claimed = true;
            }
        }
    }

    /// Whether this referee may still take `addr`'s word for keys it does
    /// not have: the host has not yet finished claiming its keys here.
    pub fn may_adopt(&self, addr: &SocketAddr) -> bool {
        !self.hosts.get(addr).is_some_and(|h| h.claimed)
    }

    /// The host's connection closed: it is down at once.
    pub fn disconnected(&mut self, addr: &SocketAddr, conn: usize) -> bool {
        match self.hosts.get_mut(addr) {
            Some(h) if h.conn == Some(conn) => {
                h.conn = None;
                let was_up = h.up;
                h.up = false;
                was_up
            }
            _ => false,
        }
    }

    /// Marks down every host silent for longer than `timeout`; returns them
    /// with their connections, which the caller closes. Called at every
    /// sweep; of a gap between sweeps longer than `step`, only `step`
    /// counts as silence (see `dipc_common::silence`): the rest is the
    /// referee's own stall.
    pub fn expire(
        &mut self,
        now: Instant,
        timeout: Duration,
        step: Duration,
    ) -> Vec<(SocketAddr, Option<usize>)> {
        let mut gone = Vec::new();
        for (addr, h) in self.hosts.iter_mut() {
            if h.up && h.silence.look(now, step) > timeout {
                h.up = false;
                gone.push((*addr, h.conn.take()));
            }
        }
        gone
    }

    pub fn snapshot(&self, now: Instant) -> Vec<HostInfo> {
        self.hosts
            .iter()
            .map(|(addr, h)| HostInfo {
                addr: *addr,
                up: h.up,
                last_heard_ms: now.duration_since(h.silence.last_heard()).as_millis() as u64,
                joined_ms: now.duration_since(h.joined).as_millis() as u64,
                version: h.version,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: Duration = Duration::from_millis(600);

    #[test]
    fn join_heartbeat_expire_rejoin() {
        let a: SocketAddr = "10.0.0.2:7100".parse().unwrap();
        let t0 = Instant::now();
        let mut t = HostTable::default();
        assert_eq!(t.join(a, 1, 7, t0), None);
        t.heard(&a, t0 + Duration::from_millis(900));
        assert!(t
            .expire(
                t0 + Duration::from_millis(1500),
                Duration::from_secs(1),
                STEP
            )
            .is_empty());
        let gone = t.expire(
            t0 + Duration::from_millis(2000),
            Duration::from_secs(1),
            STEP,
        );
        assert_eq!(gone, vec![(a, Some(7))]);
        assert!(!t.snapshot(t0 + Duration::from_secs(2))[0].up);
        // A restarted host joins on a new connection.
        assert_eq!(t.join(a, 1, 9, t0 + Duration::from_secs(3)), None);
        assert!(t.snapshot(t0 + Duration::from_secs(3))[0].up);
        // The old connection closing later does not mark the new one down.
        assert!(!t.disconnected(&a, 7));
        assert!(t.disconnected(&a, 9));
    }

    #[test]
    fn a_host_is_adopted_until_its_first_heartbeat_and_never_again() {
        let a: SocketAddr = "10.0.0.2:7100".parse().unwrap();
        let t0 = Instant::now();
        let mut t = HostTable::default();
        assert!(t.may_adopt(&a));
        t.join(a, 1, 7, t0);
        assert!(t.may_adopt(&a));
        // A heartbeat on a connection that is no longer the host's does
        // not count.
        t.heartbeat(&a, 6);
        assert!(t.may_adopt(&a));
        t.heartbeat(&a, 7);
        assert!(!t.may_adopt(&a));
        // Back after a cut: this referee has its keys already.
        assert!(t.disconnected(&a, 7));
        t.join(a, 1, 8, t0);
        assert!(!t.may_adopt(&a));
    }

    #[test]
    fn a_stalled_referee_does_not_mark_live_hosts_down() {
        let a: SocketAddr = "10.0.0.2:7100".parse().unwrap();
        let b: SocketAddr = "10.0.0.3:7100".parse().unwrap();
        let timeout = Duration::from_millis(1500);
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut t = HostTable::default();
        t.join(a, 1, 1, t0);
        t.join(b, 1, 2, t0);
        assert!(t.expire(ms(250), timeout, STEP).is_empty());
        // The referee does not run for 10 s; when it does, it reads a's
        // heartbeats (waiting in its socket) before it sweeps, and b has
        // really gone quiet.
        t.heard(&a, ms(10_250));
        assert!(t.expire(ms(10_251), timeout, STEP).is_empty());
        // b is found out within the time-out once the referee runs again.
        let mut gone = Vec::new();
        for i in 1..=10 {
            let now = 10_251 + 250 * i;
            t.heard(&a, ms(now));
            gone.extend(t.expire(ms(now), timeout, STEP));
            if !gone.is_empty() {
                assert!(now - 10_251 <= 1500, "b found out only at {now} ms");
                break;
            }
        }
        assert_eq!(gone, vec![(b, Some(2))]);
    }
}
