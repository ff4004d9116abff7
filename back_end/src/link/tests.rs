//! The link's timers driven by a made-up clock: a silent referee is
//! dropped, a stall of dipcd's own is not taken for the referee's silence.

use super::*;
use dipc_common::reactor::Recorder;

const CONN: ConnId = 5;

/// A joined link on connection `CONN`, as of `now`.
fn joined(now: Instant) -> Link {
    let mut link = Link::new(1, now);
    link.conn = Some(CONN);
    link.state = State::Joined;
    link
}

/// Makes the link's referee silent for just over the time-out, as
/// counted by looks at every heartbeat interval while the daemon runs;
/// returns the time of the last look.
fn silent_by_count(link: &mut Link, config: &Config, t0: Instant) -> Instant {
    link.silence = Silence::new(t0);
    link.next_heartbeat = t0 + config.timeouts.heartbeat_timeout * 10;
    let step = config.timeouts.heartbeat_interval * 2;
    let mut now = t0;
    while link.silence.look(now, step) <= config.timeouts.heartbeat_timeout {
        now += config.timeouts.heartbeat_interval;
    }
    now
}

fn tick(link: &mut Link, now: Instant, config: &Config) -> Recorder {
    let (mut io, mut out, mut events) = (Outbox::default(), Recorder::default(), Vec::new());
    link.tick(now, (&mut io, &mut out), config, &mut events);
    io.drain(&mut out);
    out
}

#[test]
fn a_silent_referee_gets_one_more_poll_and_frames_read_then_count_as_heard() {
    let config = Config::default();
    let t0 = Instant::now();
    let mut link = joined(t0);
    let now = silent_by_count(&mut link, &config, t0);
    // Its frames may wait unread behind a long turn of ours: not dropped
    // yet, and the loop is to wake at once to read them.
    let out = tick(&mut link, now, &config);
    assert!(link.is_joined(), "dropped before its frames were read");
    assert!(!out.closed(CONN));
    assert!(link.deadline(&config) <= now);
    // The poll reads the ack that was waiting.
    let (mut io, mut events) = (Outbox::default(), Vec::new());
    link.frame(
        now,
        (0, Message::HeartbeatAck),
        &mut io,
        &config,
        &mut events,
    );
    let out = tick(&mut link, now + Duration::from_millis(1), &config);
    assert!(link.is_joined(), "a live referee was dropped");
    assert!(!out.closed(CONN));
    assert!(events.is_empty());
}

#[test]
fn a_stall_of_the_daemon_is_not_the_referees_silence() {
    let config = Config::default();
    let t0 = Instant::now();
    let mut link = joined(t0);
    // The daemon did not run for three heartbeat time-outs.
    let now = t0 + config.timeouts.heartbeat_timeout * 3;
    link.next_heartbeat = now + config.timeouts.heartbeat_interval;
    let out = tick(&mut link, now, &config);
    assert!(link.is_joined(), "the referee was blamed for our stall");
    assert!(!out.closed(CONN));
}

#[test]
fn a_referee_silent_while_the_daemon_runs_is_dropped() {
    let config = Config::default();
    let t0 = Instant::now();
    let mut link = joined(t0);
    let now = silent_by_count(&mut link, &config, t0);
    tick(&mut link, now, &config);
    // Nothing came in the poll after.
    let out = tick(&mut link, now + Duration::from_millis(1), &config);
    assert!(!link.is_joined());
    assert!(out.closed(CONN));
}
