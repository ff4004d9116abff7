//! What every attack shares: the exit codes and verdict, a connection to
//! dipcd, how replies are shown, and how a peer's answer to an attack is
//! read (closed, refused, silent).

use dipc_common::channel::Channel;
use dipc_common::config::Config;
use dipc_common::wire::{IpcKind, Message, Origin};
use nix::errno::Errno;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// Exit codes (see the module docs).
pub(crate) const WITHSTOOD: u8 = 0;
pub(crate) const NOT_TRIED: u8 = 1;
pub(crate) const WORKED: u8 = 3;

/// Longest wait for dipcd's reply: long enough for an employer to give up
/// on a silent peer (`request_ms`) and report it.
pub(crate) const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn errno_name(e: i32) -> String {
    let err = Errno::from_raw(e);
    if err == Errno::UnknownErrno {
        e.to_string()
    } else {
        format!("{err:?}")
    }
}

pub(crate) fn not_tried(what: &str, e: &dyn std::fmt::Display) -> u8 {
    eprintln!("dipc-attack: {what}: {e}");
    NOT_TRIED
}

/// A connection to this host's dipcd that reads exactly one frame at a
/// time, so that a descriptor passed after a reply is not read past.
/// What an application's get of `key` resolves (the referee's entry, as
/// dipcd relays it to any local user); none without a key, or if the
/// look-up fails (printed).
pub(crate) fn origin(config: &Config, kind: IpcKind, key: Option<i32>) -> Origin {
    let Some(key) = key else {
        return Origin::default();
    };
    let r = dipcd(config).map_err(|e| e.to_string()).and_then(|mut ch| {
        ch.call(
            1,
            &Message::KeyGet {
                kind,
                key,
                flags: 0,
            },
        )
        .map_err(|e| e.to_string())
    });
    match r {
        Ok(Message::KeyOwner { origin, .. }) => origin,
        Ok(other) => {
            println!("origin of {key:#x}: {}", show(&other));
            Origin::default()
        }
        Err(e) => {
            println!("origin of {key:#x}: {e}");
            Origin::default()
        }
    }
}

pub(crate) fn dipcd(config: &Config) -> io::Result<Channel<UnixStream>> {
    let s = UnixStream::connect(config.back_end_socket())?;
    s.set_read_timeout(Some(REPLY_TIMEOUT))?;
    Ok(Channel::new(s, config.max_frame))
}

pub(crate) fn uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

pub(crate) fn verdict(withstood: bool) -> u8 {
    if withstood {
        WITHSTOOD
    } else {
        WORKED
    }
}

/// A reply as the attacks print it.
pub(crate) fn show(m: &Message) -> String {
    match m {
        Message::Error { errno, message } => format!("error {}: {message}", errno_name(*errno)),
        Message::Done { value } => format!("done {value}"),
        Message::MsgData { mtype, text } => {
            format!("data {mtype} {}", String::from_utf8_lossy(text))
        }
        Message::Refused { reason } => format!("refused: {reason}"),
        other => other.kind().name().to_owned(),
    }
}

pub(crate) fn shown(r: &Result<Message, String>) -> String {
    match r {
        Ok(m) => show(m),
        Err(e) => format!("no reply ({e})"),
    }
}

pub(crate) fn is_error(r: &Result<Message, String>, errno: Option<i32>) -> bool {
    match r {
        Ok(Message::Error { errno: e, .. }) => errno.is_none_or(|want| *e == want),
        _ => false,
    }
}

/// How long a peer is given to close the connection after an attack.
pub(crate) const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// What the peer did after an attack.
pub(crate) enum After {
    /// It closed the connection (how: end of file, reset, ...).
    Closed(String),
    /// It sent this many bytes.
    Answered(usize),
    /// Neither, within [`CLOSE_WAIT`].
    Open,
}

impl After {
    pub(crate) fn closed(&self) -> bool {
        matches!(self, After::Closed(_))
    }
}

impl std::fmt::Display for After {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            After::Closed(how) => write!(f, "closed ({how})"),
            After::Answered(n) => write!(f, "answered {n} bytes"),
            After::Open => write!(f, "still open after {} ms", CLOSE_WAIT.as_millis()),
        }
    }
}

/// Waits for the peer to close `s` (or to send something).
pub(crate) fn after(s: &mut TcpStream) -> After {
    if let Err(e) = s.set_read_timeout(Some(CLOSE_WAIT)) {
        return After::Closed(format!("{e}"));
    }
    let mut buf = [0u8; 4096];
    match s.read(&mut buf) {
        Ok(0) => After::Closed("end of file".to_owned()),
        Ok(n) => After::Answered(n),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => After::Closed("reset".to_owned()),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            After::Open
        }
        Err(e) => After::Closed(e.to_string()),
    }
}

/// Writes `bytes` on `s` and waits for what the peer does.
pub(crate) fn send_raw(s: &mut TcpStream, bytes: &[u8]) -> After {
    match s.write_all(bytes) {
        Ok(()) => after(s),
        Err(e) => After::Closed(format!("write: {e}")),
    }
}

/// Whether a read on a socket with a short time-out shows it closed by the
/// peer (end of file, or a reset), not merely quiet.
pub(crate) fn read_shows_closed(mut s: impl Read) -> bool {
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
    }
}
