//! Resource exhaustion: many clients, pipelined requests, half-sent
//! frames, stalled handshakes and sessions opened at once, each held and
//! then checked for what the daemon closed or refused.

use crate::common::{dipcd, errno_name, not_tried, read_shows_closed, uid, WITHSTOOD};
use crate::garbage::{garbled, GarbageTo, Garbled};
use crate::session::open_session;
use dipc_common::channel::ChannelError;
use dipc_common::config::Config;
use dipc_common::wire::{self, Message};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn hold(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

pub(crate) fn clients(config: &Config, count: usize, hold_ms: u64) -> u8 {
    let mut open = Vec::new();
    let mut refused = 0;
    let mut first = None;
    for _ in 0..count {
        let reply = dipcd(config).and_then(|mut ch| {
            ch.call(1, &Message::Ping)
                .map(|r| (ch, r))
                .map_err(|e| io::Error::other(e.to_string()))
        });
        match reply {
            Ok((ch, Message::Pong)) => open.push(ch),
            Ok((_, Message::Error { errno, message })) => {
                refused += 1;
                first.get_or_insert(format!("{}: {message}", errno_name(errno)));
            }
            Ok((_, other)) => {
                refused += 1;
                first.get_or_insert(format!("unexpected {}", other.kind().name()));
            }
            Err(e) => {
                refused += 1;
                first.get_or_insert(e.to_string());
            }
        }
    }
    println!("clients: {} opened, {refused} refused", open.len());
    if let Some(f) = first {
        println!("refused: {f}");
    }
    let _ = io::stdout().flush();
    hold(hold_ms);
    WITHSTOOD
}

pub(crate) fn pipeline(config: &Config, requests: usize, hold_ms: u64) -> u8 {
    let s = match UnixStream::connect(config.back_end_socket()) {
        Ok(s) => s,
        Err(e) => return not_tried("connect to dipcd", &e),
    };
    if let Err(e) = s.set_write_timeout(Some(Duration::from_secs(1))) {
        return not_tried("socket option", &e);
    }
    let mut frame = Vec::new();
    wire::encode_frame(1, &Message::Ping, &mut frame);
    let mut sent = 0;
    let mut w = &s;
    while sent < requests {
        match w.write_all(&frame) {
            Ok(()) => sent += 1,
            // dipcd took nothing for a second: it stopped reading us.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => {
                println!("pipeline: sent {sent} of {requests}, then {e}");
                return WITHSTOOD;
            }
        }
    }
    println!("pipeline: sent {sent} of {requests}");
    let _ = io::stdout().flush();
    hold(hold_ms);
    WITHSTOOD
}

/// As `pipeline`, on the referee's link of a host of its own: `ListKeys`
/// requests (whose replies are the longest a host may ask for), sealed,
/// and no reply read.
pub(crate) fn referee_pipeline(config: &Config, requests: usize, hold_ms: u64, port: u16) -> u8 {
    println!("uid {}", uid());
    let mut ch = match garbled(config, (GarbageTo::Referee, None, None, port)) {
        Ok(Garbled::Tcp(ch)) => ch,
        Ok(Garbled::Unix(_)) => return not_tried("referee", &"not a TCP link"),
        Err(e) => return not_tried("referee", &e),
    };
    if let Err(e) = ch.get_ref().set_write_timeout(Some(Duration::from_secs(1))) {
        return not_tried("socket option", &e);
    }
    let mut sent = 0;
    while sent < requests {
        match ch.send(2 + sent as u64, &Message::ListKeys { after: None }) {
            Ok(()) => sent += 1,
            // The referee took nothing for a second: it stopped reading us.
            Err(ChannelError::TimedOut) => break,
            Err(e) => {
                println!("pipeline: sent {sent} of {requests}, then {e}");
                return WITHSTOOD;
            }
        }
    }
    println!("pipeline: sent {sent} of {requests}");
    let _ = io::stdout().flush();
    hold(hold_ms);
    WITHSTOOD
}

pub(crate) fn half_frames(config: &Config, count: usize, hold_ms: u64) -> u8 {
    let mut frame = Vec::new();
    wire::encode_frame(
        1,
        &Message::error(libc::EIO, "h".repeat(60 * 1024)),
        &mut frame,
    );
    let half = &frame[..frame.len() / 2];
    let path = config.back_end_socket();
    hold_partial(
        "half-frames",
        count,
        || UnixStream::connect(&path),
        half,
        hold_ms,
        |s| s.set_read_timeout(Some(Duration::from_millis(50))),
    );
    WITHSTOOD
}

/// Opens up to `count` connections with `connect`, writes `bytes` on each
/// and says how many (`WHAT: N sent`), holds them `hold_ms`, then says
/// how many the peer closed meanwhile (`WHAT: C closed by the peer`).
fn hold_partial<S>(
    what: &str,
    count: usize,
    connect: impl Fn() -> io::Result<S>,
    bytes: &[u8],
    hold_ms: u64,
    quick_reads: impl Fn(&S) -> io::Result<()>,
) where
    for<'a> &'a S: Read + Write,
{
    let mut open = Vec::new();
    for _ in 0..count {
        match connect() {
            Ok(s) => {
                if (&s).write_all(bytes).is_ok() {
                    open.push(s);
                }
            }
            Err(_) => break,
        }
    }
    println!("{what}: {} sent", open.len());
    let _ = io::stdout().flush();
    hold(hold_ms);
    let closed = open
        .iter()
        .filter(|s| {
            let _ = quick_reads(s);
            read_shows_closed(*s)
        })
        .count();
    println!("{what}: {closed} closed by the peer");
}

pub(crate) fn sessions(config: &Config, target: SocketAddr, count: usize, hold_ms: u64) -> u8 {
    let mut open = Vec::new();
    let mut refused = 0;
    let mut first = None;
    for _ in 0..count {
        match open_session(config, target) {
            Ok(s) => open.push(s),
            Err(e) => {
                refused += 1;
                first.get_or_insert(e);
            }
        }
    }
    println!("sessions: {} opened, {refused} refused", open.len());
    if let Some(f) = first {
        println!("refused: {f}");
    }
    let _ = io::stdout().flush();
    hold(hold_ms);
    WITHSTOOD
}

pub(crate) fn stall(target: SocketAddr, count: usize, hold_ms: u64) -> u8 {
    // The first byte of a frame header, and nothing more.
    hold_partial(
        "stall",
        count,
        || TcpStream::connect_timeout(&target, Duration::from_secs(2)),
        &wire::MAGIC.to_be_bytes()[..1],
        hold_ms,
        |s| s.set_read_timeout(Some(Duration::from_millis(50))),
    );
    WITHSTOOD
}

pub(crate) fn sessions_at_once(config: &Config, target: SocketAddr, count: usize) -> u8 {
    let mut asked = Vec::new();
    for _ in 0..count {
        match dipcd(config) {
            Ok(mut ch) => {
                if ch.send(1, &Message::Connect { target }).is_ok() {
                    asked.push(ch);
                }
            }
            Err(e) => return not_tried("dipcd", &e),
        }
    }
    let mut opened = 0;
    let mut refused: std::collections::BTreeMap<String, (usize, String)> = Default::default();
    for mut ch in asked {
        let (name, message) = match ch.recv() {
            Ok((_, Message::SessionReady { .. })) => {
                opened += 1;
                continue;
            }
            Ok((_, Message::Error { errno, message })) => (errno_name(errno), message),
            Ok((_, other)) => ("unexpected".to_owned(), other.kind().name().to_owned()),
            Err(e) => ("channel".to_owned(), e.to_string()),
        };
        let e = refused.entry(name).or_insert((0, message));
        e.0 += 1;
    }
    println!("sessions: {opened} opened");
    for (name, (n, first)) in refused {
        println!("refused {name}: {n}: {first}");
    }
    WITHSTOOD
}
