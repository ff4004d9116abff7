//! The optional Prometheus listener (`[metrics] listen` in dipc.conf):
//! `GET /metrics` over plain HTTP/1.x, one request per connection, served
//! from dipcd's loop without ever blocking it.
//!
//! What a scraper may make dipcd hold is bounded: at most
//! [`MAX_CONNECTIONS`] at once (more are closed at once), a request of at
//! most [`MAX_REQUEST`] bytes (headers included), and [`TIME_LIMIT`] from
//! accept to the last byte of the answer, after which the connection is
//! dropped whatever its state.

use log::{debug, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
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
    /// Connection tokens are `first_token + n`: a range of their own, so
    /// that the daemon tells them from its other tokens by value.
    first_token: usize,
    next: usize,
    conns: HashMap<usize, Conn>,
}

/// What a readable connection asked for.
pub enum Asked {
    /// Nothing whole yet, or the connection is gone.
    Nothing,
    /// `GET /metrics`: answer with [`Exporter::answer`].
    Metrics,
}

impl Exporter {
    pub fn bind(
        addr: SocketAddr,
        registry: &Registry,
        listener_token: Token,
        first_token: usize,
    ) -> io::Result<Exporter> {
        let mut listener = TcpListener::bind(addr)?;
        registry.register(&mut listener, listener_token, Interest::READABLE)?;
        Ok(Exporter {
            listener,
            first_token,
            next: first_token,
            conns: HashMap::new(),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn owns(&self, t: usize) -> bool {
        t >= self.first_token
    }

    pub fn accept(&mut self, registry: &Registry) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, peer)) => {
                    if self.conns.len() >= MAX_CONNECTIONS {
                        debug!(
                            "metrics: {MAX_CONNECTIONS} connections open; closed one from {peer}"
                        );
                        continue;
                    }
                    let t = self.next;
                    self.next += 1;
                    if let Err(e) = registry.register(
                        &mut stream,
                        Token(t),
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
    pub fn ready(&mut self, registry: &Registry, t: usize) -> Asked {
        let Some(c) = self.conns.get_mut(&t) else {
            return Asked::Nothing;
        };
        if c.answer.is_some() {
            self.send(registry, t);
            return Asked::Nothing;
        }
        let mut buf = [0u8; 2048];
        loop {
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    self.close(registry, t);
                    return Asked::Nothing;
                }
                Ok(n) => {
                    c.request.extend_from_slice(&buf[..n]);
                    if c.request.len() > MAX_REQUEST {
                        self.reply(registry, t, "431 Request Header Fields Too Large", "");
                        return Asked::Nothing;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close(registry, t);
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
                self.reply(registry, t, "404 Not Found", "only /metrics is served\n");
                Asked::Nothing
            }
            _ => {
                self.reply(
                    registry,
                    t,
                    "405 Method Not Allowed",
                    "only GET is served\n",
                );
                Asked::Nothing
            }
        }
    }

    /// Answers connection `t`'s `GET /metrics` with `body`.
    pub fn answer(&mut self, registry: &Registry, t: usize, body: &str) {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        self.queue(registry, t, [head.as_bytes(), body.as_bytes()].concat());
    }

    fn reply(&mut self, registry: &Registry, t: usize, status: &str, body: &str) {
        let text = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        self.queue(registry, t, text.into_bytes());
    }

    fn queue(&mut self, registry: &Registry, t: usize, bytes: Vec<u8>) {
        if let Some(c) = self.conns.get_mut(&t) {
            c.answer = Some((bytes, 0));
            self.send(registry, t);
        }
    }

    fn send(&mut self, registry: &Registry, t: usize) {
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
        self.close(registry, t);
    }

    fn close(&mut self, registry: &Registry, t: usize) {
        if let Some(mut c) = self.conns.remove(&t) {
            let _ = registry.deregister(&mut c.stream);
        }
    }

    /// Drops the connections past their time.
    pub fn expire(&mut self, registry: &Registry, now: Instant) {
        let late: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| now.duration_since(c.since) > TIME_LIMIT)
            .map(|(&t, _)| t)
            .collect();
        for t in late {
            debug!("metrics: a connection took over {TIME_LIMIT:?}; dropped");
            self.close(registry, t);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
