//! What a daemon's logic sees of the reactor: the [`Handler`] it
//! implements and the [`Out`] it answers through, and the [`Recorder`]
//! that stands for the reactor in its unit tests.

use super::harness::sent_to;
use super::{ConnId, Event, Interest, ListenerId};
use crate::channel::{Codec, FramedParts};
use crate::net::Stream;
use crate::secure::Secure;
use crate::wire::Message;
use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

/// Readiness of descriptors the handler owns and reads itself (a pidfd, a
/// socket that does not carry frames): each comes as [`Event::Ready`]
/// under the handler's own `key`.
pub trait Watch {
    /// Watches `fd` under `key` (one watched under `key` before is
    /// watched no more). The handler keeps `fd` open until it calls
    /// [`Watch::unwatch`]: a descriptor closed while watched leaves the
    /// poll by itself, but its number may come back for another one.
    fn watch(&mut self, key: u64, fd: RawFd, interest: Interest) -> io::Result<()>;
    /// Stops watching the descriptor under `key`.
    fn unwatch(&mut self, key: u64);
}

/// What a handler may ask of the reactor. Calls about a connection that is
/// gone are ignored.
pub trait Out: Watch {
    /// Carries on `stream`, a connection this process opened (connected or
    /// still connecting, non-blocking), framed and bounded as the class
    /// `class` says (see [`Reactor::outgoing`](super::Reactor::outgoing)).
    /// [`Event::Connected`] comes once it is established, or
    /// [`Event::Closed`] if it fails; frames may be queued before.
    fn connect(&mut self, stream: Stream, class: ListenerId) -> io::Result<ConnId>;
    /// Queues a frame.
    fn send(&mut self, conn: ConnId, id: u64, msg: &Message);
    /// Queues the one whole frame `encode` appends (see
    /// `wire::encode_shm_data`), for a frame encoded from borrowed data.
    fn send_encoded(&mut self, conn: ConnId, encode: &mut dyn FnMut(&mut Vec<u8>));
    /// Frames after this one, both ways, are sealed by `secure`.
    fn secure(&mut self, conn: ConnId, secure: Secure);
    /// Writes what the socket takes now of what is queued and closes.
    fn close(&mut self, conn: ConnId);
    /// Stops reading and closes once everything queued is written.
    fn close_when_flushed(&mut self, conn: ConnId);
    /// Takes the connection out of the reactor, once what is queued is
    /// written as far as the socket takes it now, and hands it to
    /// [`Handler::taken`].
    fn take(&mut self, conn: ConnId);
    /// Carries the connection on over `stream` (a socket the peer passed),
    /// framed by `codec`; the old socket is closed. Refused (the
    /// connection closes) if bytes past the last frame wait on the old one.
    fn adopt(&mut self, conn: ConnId, stream: Stream, codec: Codec);
    /// Ends [`Reactor::run`](super::Reactor::run) with this exit code.
    fn stop(&mut self, code: i32);
}

/// A daemon's logic.
pub trait Handler {
    fn event(&mut self, now: Instant, ev: Event, out: &mut dyn Out);
    /// When the handler next wants an [`Event::Tick`] if nothing else
    /// wakes the loop (a time in the past: at once).
    fn wake_at(&self) -> Option<Instant> {
        None
    }
    /// A connection taken out with [`Out::take`]: its socket, codec, the
    /// bytes read and not framed yet and those queued and not written yet.
    fn taken(&mut self, conn: ConnId, parts: FramedParts<Stream>, out: &mut dyn Out) {
        let _ = (conn, parts, out);
    }
}

/// One thing a handler asked for, as a [`Recorder`] keeps it.
#[derive(Debug)]
pub enum Action {
    Send {
        conn: ConnId,
        id: u64,
        msg: Message,
    },
    /// A frame from [`Out::send_encoded`], as encoded.
    SendEncoded {
        conn: ConnId,
        frame: Vec<u8>,
    },
    Secure {
        conn: ConnId,
    },
    Close {
        conn: ConnId,
    },
    CloseWhenFlushed {
        conn: ConnId,
    },
    Take {
        conn: ConnId,
    },
    Adopt {
        conn: ConnId,
    },
    /// [`Out::connect`], and the id the recorder gave it.
    Connect {
        conn: ConnId,
        class: ListenerId,
    },
    Watch {
        key: u64,
        fd: RawFd,
    },
    Unwatch {
        key: u64,
    },
    Stop(i32),
}

/// An [`Out`] that records what a handler asks, for tests of a daemon's
/// logic without sockets.
#[derive(Debug, Default)]
pub struct Recorder {
    pub actions: Vec<Action>,
    /// The next id [`Out::connect`] gives (then counts up).
    pub next_conn: ConnId,
    /// Kept apart from `actions`, which a test takes after each event.
    watching: Vec<u64>,
}

impl Recorder {
    /// The actions recorded since the last call.
    pub fn take_all(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// The frames queued for `conn` since the last [`Recorder::take_all`],
    /// encoded ones decoded.
    pub fn sent(&self, conn: ConnId) -> Vec<(u64, Message)> {
        sent_to(&self.actions, conn)
    }

    /// The keys watched now: watched and not unwatched since, over all
    /// that was recorded, [`Recorder::take_all`] or not.
    pub fn watching(&self) -> Vec<u64> {
        self.watching.clone()
    }

    /// Whether the handler closed `conn` (either way) or took it.
    pub fn closed(&self, conn: ConnId) -> bool {
        self.actions.iter().any(|a| {
            matches!(a, Action::Close { conn: c } | Action::CloseWhenFlushed { conn: c }
                | Action::Take { conn: c } if *c == conn)
        })
    }
}

impl Watch for Recorder {
    fn watch(&mut self, key: u64, fd: RawFd, _: Interest) -> io::Result<()> {
        if !self.watching.contains(&key) {
            self.watching.push(key);
        }
        self.actions.push(Action::Watch { key, fd });
        Ok(())
    }
    fn unwatch(&mut self, key: u64) {
        self.watching.retain(|k| *k != key);
        self.actions.push(Action::Unwatch { key });
    }
}

impl Out for Recorder {
    /// The stream is closed: a test plays the peer through events.
    fn connect(&mut self, _: Stream, class: ListenerId) -> io::Result<ConnId> {
        let conn = self.next_conn;
        self.next_conn += 1;
        self.actions.push(Action::Connect { conn, class });
        Ok(conn)
    }
    fn send(&mut self, conn: ConnId, id: u64, msg: &Message) {
        self.actions.push(Action::Send {
            conn,
            id,
            msg: msg.clone(),
        });
    }
    fn send_encoded(&mut self, conn: ConnId, encode: &mut dyn FnMut(&mut Vec<u8>)) {
        let mut frame = Vec::new();
        encode(&mut frame);
        self.actions.push(Action::SendEncoded { conn, frame });
    }
    fn secure(&mut self, conn: ConnId, _: Secure) {
        self.actions.push(Action::Secure { conn });
    }
    fn close(&mut self, conn: ConnId) {
        self.actions.push(Action::Close { conn });
    }
    fn close_when_flushed(&mut self, conn: ConnId) {
        self.actions.push(Action::CloseWhenFlushed { conn });
    }
    fn take(&mut self, conn: ConnId) {
        self.actions.push(Action::Take { conn });
    }
    fn adopt(&mut self, conn: ConnId, _: Stream, _: Codec) {
        self.actions.push(Action::Adopt { conn });
    }
    fn stop(&mut self, code: i32) {
        self.actions.push(Action::Stop(code));
    }
}
