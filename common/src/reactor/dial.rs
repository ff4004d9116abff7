//! What a handler opens and watches itself: outgoing connections (a
//! host's link to the referee) and descriptors that carry no frames (the
//! pidfds of processes it watches, an HTTP listener of its own).

use super::Event;
use super::{ConnId, Gone, Handler, Interest, ListenerId, Options, Reactor, Watch, FIRST_CONN};
use crate::net::Stream;
use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

impl Reactor {
    /// A class of outgoing connections (see [`Out::connect`](super::Out::connect)), framed and
    /// bounded by `opts` as a listener's would be. Takes an id from the
    /// listeners' range; no socket is bound.
    pub fn outgoing(&mut self, opts: Options) -> io::Result<ListenerId> {
        let id = self.listeners.len();
        if 1 + id >= FIRST_CONN {
            return Err(io::Error::other("too many listeners"));
        }
        self.listeners.push(None);
        self.table.opts.push(opts);
        Ok(id)
    }

    /// An outgoing connection's socket is ready: whether it is now
    /// established ([`Event::Connected`] handed to the handler). One that
    /// failed is doomed.
    pub(super) fn connected<H: Handler>(&mut self, h: &mut H, t: ConnId) -> bool {
        let Some(c) = self.table.conns.get_mut(&t) else {
            return false;
        };
        let Stream::Tcp(s) = &c.framed.stream.stream else {
            // A Unix connect completes at once (see Table::connect).
            c.connecting = false;
            return true;
        };
        match s.take_error() {
            Ok(None) if s.peer_addr().is_ok() => {}
            // Still connecting.
            Ok(None) => return false,
            Ok(Some(e)) | Err(e) => {
                self.table.doomed.push((t, Gone::Io(e.to_string())));
                return false;
            }
        }
        c.connecting = false;
        // What the handler queued meanwhile goes now.
        self.table.touch(t);
        h.event(
            Instant::now(),
            Event::Connected { conn: t },
            &mut self.table,
        );
        true
    }
}

/// Descriptors watched before the loop runs, or after it ended, as a
/// handler watches them through [`Out`](super::Out).
impl Watch for Reactor {
    fn watch(&mut self, key: u64, fd: RawFd, interest: Interest) -> io::Result<()> {
        self.table.watch(key, fd, interest)
    }
    fn unwatch(&mut self, key: u64) {
        self.table.unwatch(key)
    }
}
