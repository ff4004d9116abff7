//! What dipcd's handling of one event asks of the reactor, kept until the
//! event is handled and then handed to the reactor's `Out` in order.
//!
//! dipcd's concerns (requests, grants, registrations, the link) each act
//! on connections and pidfds deep inside their own code; collecting what
//! they ask here spares every one of them an `Out` parameter, and lets a
//! unit test read the daemon's actions off a `Recorder` after each event.
//!
//! Order is what keeps the deferral sound: a descriptor watched and then
//! closed, and a new one that gets its number, reach the poll in the
//! order they happened. Whoever calls the reactor's `Out` directly (the
//! link opening its connection, the exporter) drains this first.

use dipc_common::reactor::{ConnId, Interest, Out, Watch};
use dipc_common::secure::Secure;
use dipc_common::wire::Message;
use std::io;
use std::os::fd::RawFd;

/// One thing asked of the reactor.
enum Do {
    Send(ConnId, u64, Message),
    Secure(ConnId, Box<Secure>),
    Close(ConnId),
    CloseWhenFlushed(ConnId),
    Take(ConnId),
    Watch(u64, RawFd),
    Unwatch(u64),
    Stop(i32),
}

#[derive(Default)]
pub(crate) struct Outbox {
    todo: Vec<Do>,
}

impl Outbox {
    pub(crate) fn send(&mut self, conn: ConnId, id: u64, msg: &Message) {
        self.todo.push(Do::Send(conn, id, msg.clone()));
    }
    pub(crate) fn secure(&mut self, conn: ConnId, s: Secure) {
        self.todo.push(Do::Secure(conn, Box::new(s)));
    }
    pub(crate) fn close(&mut self, conn: ConnId) {
        self.todo.push(Do::Close(conn));
    }
    pub(crate) fn close_when_flushed(&mut self, conn: ConnId) {
        self.todo.push(Do::CloseWhenFlushed(conn));
    }
    pub(crate) fn take(&mut self, conn: ConnId) {
        self.todo.push(Do::Take(conn));
    }
    pub(crate) fn stop(&mut self, code: i32) {
        self.todo.push(Do::Stop(code));
    }

    /// Hands everything asked to `out`, in order. Returns the keys whose
    /// descriptor the poll refused to watch, with why.
    pub(crate) fn drain(&mut self, out: &mut dyn Out) -> Vec<(u64, io::Error)> {
        let mut refused = Vec::new();
        for d in self.todo.drain(..) {
            match d {
                Do::Send(c, id, msg) => out.send(c, id, &msg),
                Do::Secure(c, s) => out.secure(c, *s),
                Do::Close(c) => out.close(c),
                Do::CloseWhenFlushed(c) => out.close_when_flushed(c),
                Do::Take(c) => out.take(c),
                Do::Watch(key, fd) => {
                    if let Err(e) = out.watch(key, fd, Interest::READABLE) {
                        refused.push((key, e));
                    }
                }
                Do::Unwatch(key) => out.unwatch(key),
                Do::Stop(code) => out.stop(code),
            }
        }
        refused
    }
}

/// Watches readable only (pidfds): a refusal comes out of [`Outbox::drain`].
impl Watch for Outbox {
    fn watch(&mut self, key: u64, fd: RawFd, _: Interest) -> io::Result<()> {
        self.todo.push(Do::Watch(key, fd));
        Ok(())
    }
    fn unwatch(&mut self, key: u64) {
        self.todo.push(Do::Unwatch(key));
    }
}
