//! `dipc-attack`: attacks an unprivileged local user could try on this
//! host's dipcd, for the security tests. Each subcommand talks to
//! `dipcd.sock` with raw frames (no library help), reports what happened on
//! stdout, and exits 0 when dipc withstood the attack, 3 when the attack
//! worked, 1 when the attack could not be tried (and 2 on bad arguments).
//!
//! - `dipc-attack connect-relay [--listen IP:PORT] [--wait-ms N]`: listens
//!   on TCP (by default on this host's address, any port) and asks dipcd
//!   for a `Connect` to that listener, as if it were a host of the
//!   cluster. An employer that connected there would hand the cluster's
//!   handshake to whoever holds the listener. Prints `uid U`,
//!   `listener ADDR`, then `listener: no connection within N ms` or
//!   `listener: connection from PEER` (and the first frame it sent), then
//!   `reply: error NAME: MESSAGE` or `reply: done VALUE`.
//! - `dipc-attack connect TARGET`: a plain `Connect` to `TARGET`; on
//!   `SessionReady` receives the session's socket, pings the worker through it and
//!   prints `reply: done PID_D`, `fd: peer ADDR`, `session: pong`. An
//!   error reply goes to stderr as `dipc-attack: connect: <strerror>
//!   (errno NAME)` with exit code 1, as dipc's other tools report errors.

use clap::{Parser, Subcommand};
use dipc_common::channel::{Channel, Codec};
use dipc_common::config::Config;
use dipc_common::secure::Secure;
use dipc_common::sys;
use dipc_common::wire::{self, Message};
use nix::errno::Errno;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "dipc-attack",
    about = "Attacks on this host's dipcd, for security tests"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ask dipcd to open an employer's connection to a listener of ours
    ConnectRelay {
        /// Where to listen [default: this host's address, any port]
        #[arg(long, value_name = "IP:PORT")]
        listen: Option<SocketAddr>,
        /// How long the listener waits for dipcd's employer
        #[arg(long, value_name = "N", default_value_t = 2000)]
        wait_ms: u64,
    },
    /// A plain Connect to TARGET, the session checked with a ping
    Connect { target: SocketAddr },
}

/// Exit codes (see the module docs).
const WITHSTOOD: u8 = 0;
const NOT_TRIED: u8 = 1;
const WORKED: u8 = 3;

/// Longest wait for dipcd's reply: long enough for an employer to give up
/// on a silent peer (`request_ms`) and report it.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load_default() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dipc-attack: {e}");
            return ExitCode::from(NOT_TRIED);
        }
    };
    let code = match cli.command {
        Command::ConnectRelay { listen, wait_ms } => connect_relay(
            &config,
            listen.unwrap_or(SocketAddr::new(config.host.address, 0)),
            Duration::from_millis(wait_ms),
        ),
        Command::Connect { target } => connect(&config, target),
    };
    ExitCode::from(code)
}

fn errno_name(e: i32) -> String {
    let err = Errno::from_raw(e);
    if err == Errno::UnknownErrno {
        e.to_string()
    } else {
        format!("{err:?}")
    }
}

fn not_tried(what: &str, e: &dyn std::fmt::Display) -> u8 {
    eprintln!("dipc-attack: {what}: {e}");
    NOT_TRIED
}

/// A connection to this host's dipcd that reads exactly one frame at a
/// time, so that a descriptor passed after a reply is not read past.
fn dipcd(config: &Config) -> io::Result<Channel<UnixStream>> {
    let s = UnixStream::connect(config.back_end_socket())?;
    s.set_read_timeout(Some(REPLY_TIMEOUT))?;
    Ok(Channel::new(s, config.max_frame))
}

fn uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn connect_relay(config: &Config, listen: SocketAddr, wait: Duration) -> u8 {
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

fn connect(config: &Config, target: SocketAddr) -> u8 {
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
