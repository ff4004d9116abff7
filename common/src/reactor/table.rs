//! The reactor's connections, and the [`Out`] through which the handler
//! acts on them while the reactor runs.

use super::{ConnId, Gone, ListenerId, Options, Out, Watch, MAX_PASSED_FDS};
use crate::channel::{Codec, Framed};
use crate::net::{tune_tcp, Stream};
use crate::secure::Secure;
use crate::sys;
use crate::wire::Message;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::{OwnedFd, RawFd};

/// A connection's socket: the stream, and the descriptors its peer passed
/// that no frame has carried to the handler yet.
pub(super) struct Sock {
    pub(super) stream: Stream,
    pub(super) fds: Option<Vec<OwnedFd>>,
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match (&self.stream, &mut self.fds) {
            (Stream::Unix(s), Some(fds)) => {
                let (n, got) = sys::recv_with_fds(s, buf)?;
                fds.extend(got);
                if fds.len() > MAX_PASSED_FDS {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("the peer passed more than {MAX_PASSED_FDS} descriptors"),
                    ));
                }
                Ok(n)
            }
            _ => self.stream.read(buf),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Closing {
    No,
    Now,
    WhenFlushed,
    Take,
}

pub(super) struct Conn {
    pub(super) framed: Framed<Sock>,
    pub(super) listener: ListenerId,
    pub(super) closing: Closing,
    /// Opened by us and not established yet: not read, nothing written.
    pub(super) connecting: bool,
}

/// The connections and what the handler asked about them; the [`Out`] the
/// reactor hands the handler.
pub(super) struct Table {
    pub(super) registry: Registry,
    pub(super) conns: HashMap<ConnId, Conn>,
    pub(super) opts: Vec<Options>,
    /// Connections with frames queued or a close asked for since they were
    /// last flushed.
    pub(super) touched: Vec<ConnId>,
    /// Connections to end, and why.
    pub(super) doomed: Vec<(ConnId, Gone)>,
    pub(super) stop: Option<i32>,
    /// The token the next connection or watched descriptor gets (never
    /// reused while the reactor runs).
    pub(super) next_conn: usize,
    /// The handler's key of each watched descriptor, by token.
    pub(super) watched: HashMap<usize, u64>,
    /// The token and descriptor of each key watched.
    pub(super) watch_tokens: HashMap<u64, (usize, RawFd)>,
}

impl Table {
    pub(super) fn touch(&mut self, conn: ConnId) {
        if !self.touched.contains(&conn) {
            self.touched.push(conn);
        }
    }

    fn set_closing(&mut self, conn: ConnId, how: Closing) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if c.closing == Closing::No {
                c.closing = how;
            }
            self.touch(conn);
        }
    }

    pub(super) fn framed(
        &mut self,
        stream: Stream,
        listener: ListenerId,
        codec: Codec,
    ) -> Framed<Sock> {
        let o = &self.opts[listener];
        let mut f = Framed::new(
            Sock {
                fds: (o.pass_fds && matches!(stream, Stream::Unix(_))).then(Vec::new),
                stream,
            },
            o.max_frame,
        )
        .with_codec(codec);
        if let Some(b) = o.pause_at {
            f = f.pause_reading_at(b);
        }
        if let Some(b) = o.close_at {
            f = f.close_writing_at(b);
        }
        f
    }
}

impl Watch for Table {
    fn watch(&mut self, key: u64, fd: RawFd, interest: Interest) -> io::Result<()> {
        self.unwatch(key);
        let t = self.next_conn;
        self.registry
            .register(&mut SourceFd(&fd), Token(t), interest)?;
        self.next_conn += 1;
        self.watched.insert(t, key);
        self.watch_tokens.insert(key, (t, fd));
        Ok(())
    }
    fn unwatch(&mut self, key: u64) {
        if let Some((t, fd)) = self.watch_tokens.remove(&key) {
            self.watched.remove(&t);
            let _ = self.registry.deregister(&mut SourceFd(&fd));
        }
    }
}

impl Out for Table {
    fn connect(&mut self, mut stream: Stream, class: ListenerId) -> io::Result<ConnId> {
        let Some(o) = self.opts.get(class) else {
            return Err(io::Error::other(format!("no connection class {class}")));
        };
        if let (Stream::Tcp(s), Some(d)) = (&stream, o.dead_after) {
            tune_tcp(s, d)?;
        }
        let t = self.next_conn;
        self.registry.register(
            &mut stream,
            Token(t),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.next_conn += 1;
        // A Unix connect is done or refused by the time it returns.
        let connecting = matches!(stream, Stream::Tcp(_));
        let framed = self.framed(stream, class, crate::channel::Codec::Plain);
        self.conns.insert(
            t,
            Conn {
                framed,
                listener: class,
                closing: Closing::No,
                connecting,
            },
        );
        Ok(t)
    }
    fn send(&mut self, conn: ConnId, id: u64, msg: &Message) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.framed.queue(id, msg);
            self.touch(conn);
        }
    }
    fn send_encoded(&mut self, conn: ConnId, encode: &mut dyn FnMut(&mut Vec<u8>)) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.framed.queue_encoded(encode);
            self.touch(conn);
        }
    }
    fn secure(&mut self, conn: ConnId, secure: Secure) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.framed.secure(secure);
        }
    }
    fn close(&mut self, conn: ConnId) {
        self.set_closing(conn, Closing::Now);
    }
    fn close_when_flushed(&mut self, conn: ConnId) {
        self.set_closing(conn, Closing::WhenFlushed);
    }
    fn take(&mut self, conn: ConnId) {
        self.set_closing(conn, Closing::Take);
    }
    fn adopt(&mut self, conn: ConnId, mut stream: Stream, codec: Codec) {
        let Some(mut old) = self.conns.remove(&conn) else {
            return;
        };
        let _ = self.registry.deregister(&mut old.framed.stream.stream);
        let listener = old.listener;
        let parts = old.framed.into_parts();
        if !parts.unread.is_empty() {
            self.doomed.push((
                conn,
                Gone::Protocol("bytes after the frame that passed a connection".into()),
            ));
        } else if let Err(e) = self.registry.register(
            &mut stream,
            Token(conn),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.doomed.push((conn, Gone::Io(e.to_string())));
        }
        // The old socket is closed here; what the handler queues from now
        // on goes to the new one.
        let framed = self.framed(stream, listener, codec);
        self.conns.insert(
            conn,
            Conn {
                framed,
                listener,
                closing: old.closing,
                connecting: false,
            },
        );
        self.touch(conn);
    }
    fn stop(&mut self, code: i32) {
        self.stop.get_or_insert(code);
    }
}
