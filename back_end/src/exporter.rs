//! The optional Prometheus listener (`[metrics] listen` in dipc.conf):
//! `GET /metrics` over plain HTTP/1.x, one request per connection, served
//! from dipcd's loop without ever blocking it. Its sockets are its own
//! (they carry no frames); the reactor only watches them (`Watch`).
//!
//! What a scraper may make dipcd hold is bounded: at most
//! [`MAX_CONNECTIONS`] at once (more are closed at once), a request of at
//! most [`MAX_REQUEST`] bytes (headers included), and [`TIME_LIMIT`] from
//! accept to the last byte of the answer, after which the connection is
//! dropped whatever its state.

use dipc_common::reactor::{Interest, Watch};
use log::{debug, warn};
use mio::net::{TcpListener, TcpStream};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

pub const MAX_CONNECTIONS: usize = 16;
pub const MAX_REQUEST: usize = 8 * 1024;
pub const TIME_LIMIT: Duration = Duration::from_secs(5);

struct Conn {
    stream: TcpStream,
    since: Instant,
    request: Vec<u8>,
    /// The answer, once the request is whole, and how much of it is sent.
    answer: Option<(Vec<u8>, usize)>,
}

pub struct Exporter {
    listener: TcpListener,
    /// Connections are watched under `first_key + n`: a range of their
    /// own, so that the daemon tells them from its other keys by value.
    first_key: u64,
    next: u64,
    conns: HashMap<u64, Conn>,
}

/// What a readable connection asked for.
pub enum Asked {
    /// Nothing whole yet, or the connection is gone.
    Nothing,
    /// `GET /metrics`: answer with [`Exporter::answer`].
    Metrics,
}

impl Exporter {
    pub fn bind<W: Watch + ?Sized>(
        addr: SocketAddr,
        w: &mut W,
        listener_key: u64,
        first_key: u64,
    ) -> io::Result<Exporter> {
        let listener = TcpListener::bind(addr)?;
        w.watch(listener_key, listener.as_raw_fd(), Interest::READABLE)?;
        Ok(Exporter {
            listener,
            first_key,
            next: first_key,
            conns: HashMap::new(),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn owns(&self, key: u64) -> bool {
        key >= self.first_key
    }

    pub fn accept<W: Watch + ?Sized>(&mut self, w: &mut W) {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    if self.conns.len() >= MAX_CONNECTIONS {
                        debug!(
                            "metrics: {MAX_CONNECTIONS} connections open; closed one from {peer}"
                        );
                        continue;
                    }
                    let t = self.next;
                    self.next += 1;
                    if let Err(e) = w.watch(
                        t,
                        stream.as_raw_fd(),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        warn!("metrics: cannot register a connection: {e}");
                        continue;
                    }
                    self.conns.insert(
                        t,
                        Conn {
                            stream,
                            since: Instant::now(),
                            request: Vec::new(),
                            answer: None,
                        },
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn!("metrics: accept: {e}");
                    return;
                }
            }
        }
    }

    /// Reads what connection `t` sent, and sends what it is owed.
    pub fn ready<W: Watch + ?Sized>(&mut self, w: &mut W, t: u64) -> Asked {
        let Some(c) = self.conns.get_mut(&t) else {
            return Asked::Nothing;
        };
        if c.answer.is_some() {
            self.send(w, t);
            return Asked::Nothing;
        }
        let mut buf = [0u8; 2048];
        loop {
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    self.close(w, t);
                    return Asked::Nothing;
                }
                Ok(n) => {
                    c.request.extend_from_slice(&buf[..n]);
                    if c.request.len() > MAX_REQUEST {
                        self.reply(w, t, "431 Request Header Fields Too Large", "");
                        return Asked::Nothing;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close(w, t);
                    return Asked::Nothing;
                }
            }
        }
        let Some(end) = find(&c.request, b"\r\n\r\n") else {
            return Asked::Nothing;
        };
        let line_end = find(&c.request[..end], b"\r\n").unwrap_or(end);
        let line = String::from_utf8_lossy(&c.request[..line_end]).into_owned();
        let mut words = line.split(' ');
        let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        // The query string is ignored, as Prometheus's own exporters do.
        let path = path.split('?').next().unwrap_or("");
        match (method, path) {
            ("GET", "/metrics") => Asked::Metrics,
            ("GET", _) => {
                self.reply(w, t, "404 Not Found", "only /metrics is served\n");
                Asked::Nothing
            }
            _ => {
                self.reply(w, t, "405 Method Not Allowed", "only GET is served\n");
                Asked::Nothing
            }
        }
    }

    /// Answers connection `t`'s `GET /metrics` with `body`.
    pub fn answer<W: Watch + ?Sized>(&mut self, w: &mut W, t: u64, body: &str) {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        self.queue(w, t, [head.as_bytes(), body.as_bytes()].concat());
    }

    fn reply<W: Watch + ?Sized>(&mut self, w: &mut W, t: u64, status: &str, body: &str) {
        let text = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        self.queue(w, t, text.into_bytes());
    }

    fn queue<W: Watch + ?Sized>(&mut self, w: &mut W, t: u64, bytes: Vec<u8>) {
        if let Some(c) = self.conns.get_mut(&t) {
            c.answer = Some((bytes, 0));
            self.send(w, t);
        }
    }

    fn send<W: Watch + ?Sized>(&mut self, w: &mut W, t: u64) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        let Some((bytes, sent)) = c.answer.as_mut() else {
            return;
        };
        while *sent < bytes.len() {
            match c.stream.write(&bytes[*sent..]) {
                Ok(0) => break,
                Ok(n) => *sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        self.close(w, t);
    }

    fn close<W: Watch + ?Sized>(&mut self, w: &mut W, t: u64) {
        if let Some(c) = self.conns.remove(&t) {
            // Unwatched before its descriptor closes.
            w.unwatch(t);
            drop(c);
        }
    }

    /// Drops the connections past their time.
    pub fn expire<W: Watch + ?Sized>(&mut self, w: &mut W, now: Instant) {
        let late: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| now.duration_since(c.since) > TIME_LIMIT)
            .map(|(&t, _)| t)
            .collect();
        for t in late {
            debug!("metrics: a connection took over {TIME_LIMIT:?}; dropped");
            self.close(w, t);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::unix::SourceFd;
    use mio::{Events, Poll, Registry, Token};
    use std::io::{Read, Write};
    use std::os::fd::RawFd;

    const LISTEN: u64 = 1;
    const FIRST: u64 = 100;

    /// A poll of the test's own, watching under the key as token.
    struct Polled<'a>(&'a Registry, HashMap<u64, RawFd>);

    impl Watch for Polled<'_> {
        fn watch(&mut self, key: u64, fd: RawFd, i: Interest) -> io::Result<()> {
            self.1.insert(key, fd);
            self.0.register(&mut SourceFd(&fd), Token(key as usize), i)
        }
        fn unwatch(&mut self, key: u64) {
            if let Some(fd) = self.1.remove(&key) {
                let _ = self.0.deregister(&mut SourceFd(&fd));
            }
        }
    }

    fn exporter(poll: &Poll) -> Exporter {
        let addr = "127.0.0.1:0".parse().unwrap();
        let mut w = Polled(poll.registry(), HashMap::new());
        Exporter::bind(addr, &mut w, LISTEN, FIRST).unwrap()
    }

    /// Runs the exporter's side as dipcd's loop does, for `rounds` polls.
    fn pump(poll: &mut Poll, ex: &mut Exporter, rounds: usize) {
        let mut events = Events::with_capacity(64);
        for _ in 0..rounds {
            poll.poll(&mut events, Some(Duration::from_millis(20)))
                .unwrap();
            let mut w = Polled(poll.registry(), HashMap::new());
            for ev in events.iter() {
                match ev.token().0 as u64 {
                    LISTEN => ex.accept(&mut w),
                    t if ex.owns(t) => {
                        if let Asked::Metrics = ex.ready(&mut w, t) {
                            ex.answer(&mut w, t, "dipc_uptime_seconds 1\n");
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Sends `request` and returns everything answered until the close.
    fn ask(poll: &mut Poll, ex: &mut Exporter, request: &[u8]) -> String {
        let mut c = std::net::TcpStream::connect(ex.local_addr().unwrap()).unwrap();
        c.write_all(request).unwrap();
        c.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        for _ in 0..200 {
            pump(poll, ex, 1);
            let mut buf = [0u8; 4096];
            match c.read(&mut buf) {
                Ok(0) => return String::from_utf8_lossy(&got).into_owned(),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        panic!("no close; got {:?}", String::from_utf8_lossy(&got));
    }

    #[test]
    fn get_metrics_is_answered_and_nothing_else() {
        let mut poll = Poll::new().unwrap();
        let mut ex = exporter(&poll);
        let ok = ask(
            &mut poll,
            &mut ex,
            b"GET /metrics HTTP/1.1\r\nHost: h\r\n\r\n",
        );
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Length: 22\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\ndipc_uptime_seconds 1\n"), "{ok}");
        let q = ask(&mut poll, &mut ex, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n");
        assert!(q.starts_with("HTTP/1.1 200 OK\r\n"), "{q}");
        let nf = ask(&mut poll, &mut ex, b"GET / HTTP/1.1\r\n\r\n");
        assert!(nf.starts_with("HTTP/1.1 404 "), "{nf}");
        let post = ask(&mut poll, &mut ex, b"POST /metrics HTTP/1.1\r\n\r\n");
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
        let big = vec![b'a'; MAX_REQUEST + 1];
        let long = ask(&mut poll, &mut ex, &big);
        assert!(long.starts_with("HTTP/1.1 431 "), "{long}");
        assert!(ex.conns.is_empty());
    }

    #[test]
    fn connections_are_capped_and_dropped_after_the_time_limit() {
        let mut poll = Poll::new().unwrap();
        let mut ex = exporter(&poll);
        let addr = ex.local_addr().unwrap();
        let idle: Vec<_> = (0..MAX_CONNECTIONS + 4)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        pump(&mut poll, &mut ex, 10);
        assert_eq!(ex.conns.len(), MAX_CONNECTIONS);
        let mut w = Polled(poll.registry(), HashMap::new());
        ex.expire(&mut w, Instant::now());
        assert_eq!(ex.conns.len(), MAX_CONNECTIONS);
        ex.expire(&mut w, Instant::now() + TIME_LIMIT + Duration::from_secs(1));
        assert!(ex.conns.is_empty());
        drop(idle);
    }
}
