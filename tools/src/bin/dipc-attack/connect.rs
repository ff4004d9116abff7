//! `connect-relay` and `connect`: asking dipcd for a session to an
//! address that is not an up host of the cluster, which must never get
//! the cluster's handshake.

use crate::common::{
    dipcd, errno_name, not_tried, uid, NOT_TRIED, REPLY_TIMEOUT, WITHSTOOD, WORKED,
};
use dipc_common::channel::{Channel, Codec};
use dipc_common::config::Config;
use dipc_common::secure::Secure;
use dipc_common::sys;
use dipc_common::wire::{self, Message};
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

pub(crate) fn connect_relay(config: &Config, listen: SocketAddr, wait: Duration) -> u8 {
    println!("uid {}", uid());
    let listener = match TcpListener::bind(listen) {
        Ok(l) => l,
        Err(e) => return not_tried(&format!("listen on {listen}"), &e),
    };
    let target = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => return not_tried("listener address", &e),
    };
    println!("listener {target}");
    let mut ch = match dipcd(config) {
        Ok(ch) => ch,
        Err(e) => return not_tried("dipcd", &e),
    };
    if let Err(e) = ch.send(1, &Message::Connect { target }) {
        return not_tried("send Connect", &e);
    }
    // The employer, if dipcd forks one, connects before dipcd can reply
    // (its reply comes only once the handshake fails), so wait for it
    // first.
    let relayed = match accept_within(&listener, wait) {
        Ok(Some((peer, first))) => {
            println!("listener: connection from {peer}, first frame: {first}");
            true
        }
        Ok(None) => {
            println!("listener: no connection within {} ms", wait.as_millis());
            false
        }
        Err(e) => return not_tried("accept", &e),
    };
    let done = match ch.recv() {
        Ok((_, Message::Error { errno, message })) => {
            println!("reply: error {}: {message}", errno_name(errno));
            false
        }
        Ok((_, Message::SessionReady { pid_d, .. })) => {
            println!("reply: done {pid_d}");
            true
        }
        Ok((_, other)) => {
            println!("reply: {}", other.kind().name());
            false
        }
        Err(e) => {
            println!("reply: none ({e})");
            false
        }
    };
    if relayed || done {
        WORKED
    } else {
        WITHSTOOD
    }
}

/// Accepts one connection within `wait`; returns its peer and a
/// description of the first frame it sends (within a second).
fn accept_within(
    listener: &TcpListener,
    wait: Duration,
) -> io::Result<Option<(SocketAddr, String)>> {
    listener.set_nonblocking(true)?;
    let start = Instant::now();
    loop {
        match listener.accept() {
            Ok((s, peer)) => return Ok(Some((peer, first_frame(s)))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if start.elapsed() >= wait {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn first_frame(mut s: TcpStream) -> String {
    let read = s
        .set_nonblocking(false)
        .and_then(|()| s.set_read_timeout(Some(Duration::from_secs(1))));
    if let Err(e) = read {
        return format!("unreadable ({e})");
    }
    let mut buf = vec![0u8; 4096];
    let n = match s.read(&mut buf) {
        Ok(0) => return "none (closed)".to_owned(),
        Ok(n) => n,
        Err(e) => return format!("none ({e})"),
    };
    match wire::decode_frame(&buf[..n], u32::MAX) {
        Ok(Some((_, _, msg))) => msg.kind().name().to_owned(),
        _ => format!("{n} bytes"),
    }
}

pub(crate) fn connect(config: &Config, target: SocketAddr) -> u8 {
    let fail = |what: &str, errno: i32, e: &dyn std::fmt::Display| {
        eprintln!("dipc-attack: {what}: {e} (errno {})", errno_name(errno));
        NOT_TRIED
    };
    let mut ch = match dipcd(config) {
        Ok(ch) => ch,
        Err(e) => return fail("dipcd", e.raw_os_error().unwrap_or(libc::EIO), &e),
    };
    let (pid_d, keys) = match ch.call(1, &Message::Connect { target }) {
        Ok(Message::SessionReady { pid_d, keys }) => (pid_d, keys),
        Ok(Message::Error { errno, message }) => return fail("connect", errno, &message),
        Ok(other) => return fail("connect", libc::EPROTO, &other.kind().name()),
        Err(e) => return fail("connect", e.errno(), &e),
    };
    println!("reply: done {pid_d}");
    let fd = match sys::recv_fd(ch.get_ref()) {
        Ok(fd) => fd,
        Err(e) => {
            return fail(
                "receive the session",
                e.raw_os_error().unwrap_or(libc::EIO),
                &e,
            )
        }
    };
    let s = TcpStream::from(fd);
    match s.peer_addr() {
        Ok(peer) => println!("fd: peer {peer}"),
        Err(e) => return fail("session peer", e.raw_os_error().unwrap_or(libc::EIO), &e),
    }
    if let Err(e) = s.set_read_timeout(Some(REPLY_TIMEOUT)) {
        return fail("session", e.raw_os_error().unwrap_or(libc::EIO), &e);
    }
    let mut session = Channel::new(s, config.max_frame)
        .with_codec(Codec::Secure(Box::new(Secure::from_keys(&keys))));
    match session.call(1, &Message::Ping) {
        Ok(Message::Pong) => println!("session: pong"),
        Ok(other) => return fail("ping", libc::EPROTO, &other.kind().name()),
        Err(e) => return fail("ping", e.errno(), &e),
    }
    WITHSTOOD
}
