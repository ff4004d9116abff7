//! Races the integration tests show with sleeps, as events in and actions
//! out on a fake clock.

use super::REVOKE_TIMEOUT;
use crate::units::{Action, Holders, Pid, Units};
use std::time::{Duration, Instant};

fn revoke(to: Pid, keep_read: bool, want_data: bool) -> Action {
    Action::Revoke {
        to,
        unit: 0,
        keep_read,
        want_data,
    }
}

fn grant(to: Pid, write: bool) -> Action {
    Action::Grant { to, unit: 0, write }
}

/// A writer told to keep reading keeps reading even when the reader
/// that asked is gone before the writer answers: the machine must
/// still count it among the readers, or a later writer is granted
/// while it reads a stale copy.
#[test]
fn a_writer_told_to_keep_reading_stays_a_reader_when_the_asker_is_gone() {
    let mut u = Units::new(1, Duration::ZERO, REVOKE_TIMEOUT);
    let t0 = Instant::now();
    let mut out = Vec::new();
    u.fault(t0, 1, 0, true, &mut out);
    out.clear();
    u.fault(t0, 2, 0, false, &mut out);
    assert_eq!(out, vec![revoke(1, true, true)]);
    out.clear();
    u.gone(t0, 2, &mut out);
    assert!(out.is_empty());
    u.revoked(t0, 1, 0, &mut out);
    assert_eq!(
        u.holders(0).map(|h| h.0.clone()),
        Some(Holders::Readers([1].into_iter().collect()))
    );
    // 3 writes: 1 must give up its read copy first.
    u.fault(t0, 3, 0, true, &mut out);
    assert_eq!(out, vec![revoke(1, false, false)]);
}

/// A reader that does not answer a revocation is reported late at the
/// time-out, not before; once the caller drops it, the writer that
/// waited is granted (the real segment is valid: nothing was lost).
#[test]
fn a_silent_reader_is_dropped_at_the_time_out_and_the_writer_goes_on() {
    let mut u = Units::new(1, Duration::ZERO, REVOKE_TIMEOUT);
    let t0 = Instant::now();
    let mut out = Vec::new();
    u.fault(t0, 1, 0, false, &mut out);
    u.fault(t0, 2, 0, false, &mut out);
    out.clear();
    u.fault(t0, 3, 0, true, &mut out);
    assert_eq!(out, vec![revoke(1, false, false), revoke(2, false, false)]);
    out.clear();
    u.revoked(t0, 1, 0, &mut out);
    assert!(out.is_empty());
    assert_eq!(u.deadline(), Some(t0 + REVOKE_TIMEOUT));
    let just_before = t0 + REVOKE_TIMEOUT - Duration::from_millis(1);
    assert!(u.tick(just_before, &mut out).is_empty());
    let late = u.tick(t0 + REVOKE_TIMEOUT, &mut out);
    assert_eq!(late, [2].into_iter().collect());
    assert!(out.is_empty());
    u.gone(t0 + REVOKE_TIMEOUT, 2, &mut out);
    assert_eq!(
        out,
        vec![Action::SendData { to: 3, unit: 0 }, grant(3, true)]
    );
    assert_eq!(u.holders(0).map(|h| h.1), Some(false));
    assert_eq!(u.deadline(), None);
}

/// A writer's write-back on detach crosses the revocation sent for a
/// reader's fault: its `ShmRevoked` answers the revocation, the
/// content it sent first is the one stored, the reader is served, and
/// the detacher's answer to the revocation itself changes nothing.
#[test]
fn a_write_back_that_crosses_a_revocation_answers_it() {
    let mut u = Units::new(1, Duration::ZERO, REVOKE_TIMEOUT);
    let t0 = Instant::now();
    let mut out = Vec::new();
    u.fault(t0, 1, 0, true, &mut out);
    out.clear();
    u.fault(t0, 2, 0, false, &mut out);
    assert_eq!(out, vec![revoke(1, true, true)]);
    out.clear();
    // The write-back reached the manager before the revocation
    // reached the writer.
    assert!(u.may_store(1, 0));
    u.revoked(t0, 1, 0, &mut out);
    assert_eq!(
        out,
        vec![Action::SendData { to: 2, unit: 0 }, grant(2, false)]
    );
    out.clear();
    // Its second copy of the content (answering the revocation) is
    // not stored, and its ShmRevoked is a no-op.
    assert!(!u.may_store(1, 0));
    u.revoked(t0, 1, 0, &mut out);
    u.gone(t0, 1, &mut out);
    assert!(out.is_empty());
    assert_eq!(
        u.holders(0),
        Some((&Holders::Readers([2].into_iter().collect()), false))
    );
}

/// Faults on one unit are served in arrival order, one at a time, and
/// a fault waits out the quantum of the grant before it: the
/// deadline says when.
#[test]
fn faults_queue_behind_the_quantum_in_arrival_order() {
    let q = Duration::from_millis(40);
    let mut u = Units::new(1, q, REVOKE_TIMEOUT);
    let t0 = Instant::now();
    let mut out = Vec::new();
    u.fault(t0, 1, 0, true, &mut out);
    out.clear();
    u.fault(t0, 2, 0, true, &mut out);
    u.fault(t0, 3, 0, false, &mut out);
    assert!(out.is_empty());
    assert_eq!(u.deadline(), Some(t0 + q));
    u.tick(t0 + q, &mut out);
    assert_eq!(out, vec![revoke(1, false, true)]);
    out.clear();
    let t1 = t0 + q + Duration::from_millis(1);
    u.revoked(t1, 1, 0, &mut out);
    assert_eq!(
        out,
        vec![Action::SendData { to: 2, unit: 0 }, grant(2, true)]
    );
    out.clear();
    // 3's read now waits for 2's quantum.
    assert_eq!(u.deadline(), Some(t1 + q));
    u.tick(t1 + q, &mut out);
    assert_eq!(out, vec![revoke(2, true, true)]);
}
