//! The employer: forked by the back_end for a local application session
//! that needs another host.
//!
//! It takes over the application's Unix connection, opens (once, then
//! keeps) an authenticated TCP connection to each host the session needs,
//! forwards each request there and hands the reply back. Every wait on a
//! remote host is bounded by `timeouts.request_ms`; the application gets
//! `ETIMEDOUT` (or the network error that ended the wait) rather than a
//! hang.

use dipc_common::auth::{client_handshake, Secret};
use dipc_common::channel::{Channel, ChannelError};
use dipc_common::config::Config;
use dipc_common::net::{connect_from, tune_tcp};
use dipc_common::wire::{Message, Role};
use log::{debug, info};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;

/// One session's connections to other hosts.
pub struct Employer<'a> {
    config: &'a Config,
    secret: &'a Secret,
    peers: HashMap<SocketAddr, Channel<TcpStream>>,
    next_id: u64,
}

impl<'a> Employer<'a> {
    pub fn new(config: &'a Config, secret: &'a Secret) -> Self {
        Employer {
            config,
            secret,
            peers: HashMap::new(),
            next_id: 1,
        }
    }

    fn connect(&self, host: SocketAddr) -> Result<Channel<TcpStream>, Message> {
        let t = &self.config.timeouts;
        let fail = |what: &str, e: &dyn std::fmt::Display, errno: i32| {
            Message::error(errno, format!("{what} {host}: {e}"))
        };
        let s = connect_from(self.config.host.address, host, Some(t.connect)).map_err(|e| {
            fail(
                "cannot connect to",
                &e,
                e.raw_os_error().unwrap_or(libc::ETIMEDOUT),
            )
        })?;
        tune_tcp(&s, t.heartbeat_timeout).map_err(|e| fail("socket options for", &e, libc::EIO))?;
        s.set_read_timeout(Some(t.request))
            .map_err(|e| fail("socket options for", &e, libc::EIO))?;
        let mut ch = Channel::new(s, self.config.max_frame);
        client_handshake(
            &mut ch,
            self.secret,
            Role::Employer,
            self.config.front_end_addr(),
        )
        .map_err(|e| fail("authentication with", &e, libc::ECONNREFUSED))?;
        Ok(ch)
    }

    /// Sends `req` to `host` and waits (at most the request time-out) for
    /// the reply. A failed connection is dropped, so the next call opens a
    /// fresh one.
    pub fn call(&mut self, host: SocketAddr, req: &Message) -> Message {
        if !self.peers.contains_key(&host) {
            match self.connect(host) {
                Ok(ch) => {
                    self.peers.insert(host, ch);
                }
                Err(reply) => return reply,
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        let Some(ch) = self.peers.get_mut(&host) else {
            return Message::error(libc::EIO, "connection table lost an entry");
        };
        match ch.call(id, req) {
            Ok(reply) => reply,
            Err(e) => {
                self.peers.remove(&host);
                info!("employer: request to {host} failed: {e}");
                Message::error(e.errno(), format!("request to {host} failed: {e}"))
            }
        }
    }

    fn handle(&mut self, req: Message) -> Message {
        match req {
            Message::Ping { target: Some(host) } => {
                self.call(host, &Message::Ping { target: None })
            }
            other => Message::error(
                libc::EINVAL,
                format!("an employer does not take {} messages", other.kind().name()),
            ),
        }
    }
}

/// Serves an application session whose first request was `first`, until
/// the application closes its connection; returns the exit code.
pub fn serve(client: UnixStream, first: (u64, Message), config: &Config, secret: &Secret) -> i32 {
    let mut app = Channel::new(client, config.max_frame);
    let mut employer = Employer::new(config, secret);
    let mut next = Some(first);
    loop {
        let (id, req) = match next.take() {
            Some(r) => r,
            None => match app.recv() {
                Ok(r) => r,
                Err(ChannelError::Closed) => return 0,
                Err(e) => {
                    debug!("employer: application connection: {e}");
                    return 1;
                }
            },
        };
        let reply = employer.handle(req);
        if let Err(e) = app.send(id, &reply) {
            debug!("employer: application went away: {e}");
            return 0;
        }
    }
}
