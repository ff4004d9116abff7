//! How long a peer has been silent, as its listener could have heard it.
//!
//! A host's dipcd and the referee each take the other for lost after
//! `timeouts.heartbeat_timeout` of silence. Measured on the wall clock,
//! that silence includes the time the listener itself did not run: under
//! a CPU overload (hundreds of runnable processes) or while it worked
//! through a long batch of events, the peer's heartbeats wait unread in
//! its socket, and on its next look it finds every peer "silent" and drops
//! them all, although each was alive and sending. [`Silence`] counts,
//! between two looks, at most `step` (a little more than the longest
//! pause between looks when the listener runs normally): a longer gap is
//! the listener's own stall, not the peer's silence. A peer that is really
//! gone is still found out: its silence grows by up to `step` at every
//! look, so after a stall it takes at most the time-out more.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct Silence {
    last_heard: Instant,
    last_look: Instant,
    silent: Duration,
}

impl Silence {
    pub fn new(now: Instant) -> Silence {
        Silence {
            last_heard: now,
            last_look: now,
            silent: Duration::ZERO,
        }
    }

    /// Something came from the peer: any frame shows it is alive.
    pub fn heard(&mut self, now: Instant) {
        *self = Silence::new(now);
    }

    /// When the peer was last heard (for display only: the time-out
    /// goes by [`Silence::look`]).
    pub fn last_heard(&self) -> Instant {
        self.last_heard
    }

    /// Looks at the peer now; returns how long it has been silent, counting
    /// at most `step` of the time since the previous look.
    pub fn look(&mut self, now: Instant, step: Duration) -> Duration {
        let gap = now.saturating_duration_since(self.last_look);
        self.silent += gap.min(step);
        self.last_look = now;
        self.silent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: Duration = Duration::from_millis(500);
    const TIMEOUT: Duration = Duration::from_millis(1500);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn silence_at_regular_looks_is_wall_time() {
        let t0 = Instant::now();
        let mut s = Silence::new(t0);
        for i in 1..=6 {
            assert_eq!(s.look(t0 + ms(250 * i), STEP), ms(250 * i));
        }
        assert!(s.look(t0 + ms(1750), STEP) > TIMEOUT);
    }

    #[test]
    fn a_stall_of_the_listener_is_not_the_peers_silence() {
        let t0 = Instant::now();
        let mut s = Silence::new(t0);
        assert_eq!(s.look(t0 + ms(250), STEP), ms(250));
        // The listener did not run for 10 s: only one step of it counts.
        assert_eq!(s.look(t0 + ms(10_250), STEP), ms(750));
        // Its first read after the stall finds the peer's frames.
        s.heard(t0 + ms(10_251));
        assert_eq!(s.look(t0 + ms(10_500), STEP), ms(249));
    }

    #[test]
    fn a_peer_silent_after_a_stall_is_still_found_out() {
        let t0 = Instant::now();
        let mut s = Silence::new(t0);
        assert!(s.look(t0 + ms(20_000), STEP) <= TIMEOUT);
        let mut t = t0 + ms(20_000);
        let mut looks = 0;
        while s.look(t, STEP) <= TIMEOUT {
            t += ms(250);
            looks += 1;
            assert!(
                looks < 10,
                "still not silent long enough after {looks} looks"
            );
        }
        // Within the time-out of running again.
        assert!(t - (t0 + ms(20_000)) <= TIMEOUT);
    }
}
