//! A daemon's logic driven by scripted events, for its unit tests: the
//! one place that hands a [`Handler`] an event at a made-up time and reads
//! back what it asked of the reactor, so that the daemons' tests do not
//! each write their own.

use super::{Action, ConnId, Event, Handler, Recorder};
use crate::wire::{self, Message};
use std::time::Instant;

/// A handler under test: each event is handed to it at `now` (the test
/// moves the clock), and what it asks goes to `out`, a [`Recorder`].
#[derive(Debug)]
pub struct Harness<H> {
    pub handler: H,
    pub out: Recorder,
    pub now: Instant,
}

impl<H: Handler> Harness<H> {
    /// `handler` at time `now`, nothing recorded yet.
    pub fn new(handler: H, now: Instant) -> Harness<H> {
        Harness {
            handler,
            out: Recorder::default(),
            now,
        }
    }

    /// Hands `ev` to the handler: the actions it asked for meanwhile.
    pub fn handle(&mut self, ev: Event) -> Vec<Action> {
        self.handler.event(self.now, ev, &mut self.out);
        self.out.take_all()
    }

    /// Hands `ev` to the handler: the frames it queued for `conn`
    /// meanwhile (its other actions are dropped).
    pub fn sent(&mut self, conn: ConnId, ev: Event) -> Vec<(u64, Message)> {
        sent_to(&self.handle(ev), conn)
    }
}

/// The frames queued for `conn` among `actions`, in order, encoded ones
/// decoded.
pub fn sent_to(actions: &[Action], conn: ConnId) -> Vec<(u64, Message)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { conn: c, id, msg } if *c == conn => Some((*id, msg.clone())),
            Action::SendEncoded { conn: c, frame } if *c == conn => {
                match wire::decode_frame(frame, u32::MAX) {
                    Ok(Some((_, id, msg))) => Some((id, msg)),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect()
}
