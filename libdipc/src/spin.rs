//! How long a call on another host's structure spins for its reply before
//! it sleeps.
//!
//! A remote call is a request and a reply over TCP. Sleeping in `recv` for
//! the reply means being woken when it comes, and waking a task on an idle
//! CPU (all the more a virtual one, whose halt is a trip to the hypervisor)
//! takes as long as the rest of the round trip together: a remote msgsnd +
//! msgrcv ping-pong, two such round trips, measured 2.5–2.9× a raw TCP
//! ping-pong when it sleeps, 0.9–1.2× when it spins up to 100 µs (README,
//! Benchmarks). So
//! the library first checks for the reply without sleeping, for at most
//! `library.spin_us`.
//!
//! Spinning only pays when the reply comes within the spin. A call that
//! waits for another process (a msgrcv on an empty queue, a semop P) would
//! burn the whole spin every time, so the spin adapts, as the kernel's
//! guest halt-polling does: a reply slower than the bound halves the next
//! spin (down to none), and a reply that came within the bound but after
//! the spin had ended restores the full bound.

use std::time::Duration;

/// Below this a halved spin becomes no spin: a few microseconds of checking
/// rarely catch anything.
const FLOOR: Duration = Duration::from_micros(10);

/// The spin of one session, adapted to its replies.
#[derive(Debug, Clone, Copy)]
pub struct Spin {
    max: Duration,
    window: Duration,
}

impl Spin {
    /// Spins of at most `max` (`library.spin_us`); zero never spins.
    pub fn new(max: Duration) -> Spin {
        Spin { max, window: max }
    }

    /// How long the next call spins before it sleeps.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Adapts to a reply that came `took` after its request was sent.
    pub fn learn(&mut self, took: Duration) {
        if took <= self.window {
            return;
        }
        if took <= self.max {
            self.window = self.max;
        } else {
            self.window /= 2;
            if self.window < FLOOR {
                self.window = Duration::ZERO;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn slow_replies_stop_the_spin_and_a_fast_one_restores_it() {
        let mut s = Spin::new(us(100));
        assert_eq!(s.window(), us(100));
        s.learn(us(40));
        assert_eq!(s.window(), us(100));
        for want_ns in [50_000, 25_000, 12_500, 0, 0] {
            s.learn(us(5000));
            assert_eq!(s.window(), Duration::from_nanos(want_ns));
        }
        // Came within the bound, but after the (zero) spin: spin again.
        s.learn(us(60));
        assert_eq!(s.window(), us(100));
    }

    #[test]
    fn zero_never_spins() {
        let mut s = Spin::new(Duration::ZERO);
        for t in [0, 1, 50, 1_000_000] {
            s.learn(us(t));
            assert_eq!(s.window(), Duration::ZERO);
        }
    }
}
