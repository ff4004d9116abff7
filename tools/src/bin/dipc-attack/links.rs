//! Attacks on the authenticated links: handshakes with the wrong secret
//! or role, a host posing as the referee's peer, and plain frames where
//! sealed ones are expected.

use crate::cli::{FrameArg, RoleArg};
use crate::common::{
    after, not_tried, show, uid, verdict, After, CLOSE_WAIT, NOT_TRIED, REPLY_TIMEOUT, WITHSTOOD,
};
use crate::session::root_session;
use dipc_common::auth::{ClientHandshake, Secret};
use dipc_common::channel::Channel;
use dipc_common::config::Config;
use dipc_common::wire::{self, IpcKind, Message, Origin, Role};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};

/// A TCP connection to `to` (from this host's address, as the daemons
/// connect) on which a handshake with `secret` ran as `role` stating `me`.
pub(crate) fn handshake(
    config: &Config,
    secret: &Secret,
    to: SocketAddr,
    role: Role,
    me: SocketAddr,
) -> Result<Result<Channel<TcpStream>, (dipc_common::auth::AuthError, TcpStream)>, String> {
    let s = TcpStream::connect_timeout(&to, REPLY_TIMEOUT).map_err(|e| format!("{to}: {e}"))?;
    s.set_read_timeout(Some(REPLY_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let raw = s.try_clone().map_err(|e| e.to_string())?;
    let mut ch = Channel::new(s, config.max_frame);
    let (hs, hello) = ClientHandshake::start(secret, role, me).map_err(|e| e.to_string())?;
    ch.send(0, &hello).map_err(|e| format!("send: {e}"))?;
    let reply = match ch.recv() {
        Ok((_, m)) => m,
        Err(e) => return Ok(Err((dipc_common::auth::AuthError::Channel(e), raw))),
    };
    match hs.on_reply(&reply) {
        Ok(secure) => {
            ch.secure(secure);
            Ok(Ok(ch))
        }
        Err(e) => Ok(Err((e, raw))),
    }
}

/// After a handshake that should have been refused: whether it was, and
/// the connection then closed.
fn refused_handshake(
    what: &str,
    r: Result<Result<Channel<TcpStream>, (dipc_common::auth::AuthError, TcpStream)>, String>,
) -> Option<bool> {
    match r {
        Err(e) => {
            eprintln!("dipc-attack: {what}: {e}");
            None
        }
        Ok(Ok(_)) => {
            println!("{what}: accepted");
            Some(false)
        }
        Ok(Err((e, mut raw))) => {
            let a = after(&mut raw);
            println!("{what}: {e}; {a}");
            Some(matches!(e, dipc_common::auth::AuthError::Refused(_)) && a.closed())
        }
    }
}

/// Sends `msg` on an authenticated link that should refuse it: whether it
/// answered `Refused` and closed.
fn refused_on_link(what: &str, ch: Channel<TcpStream>, msg: &Message) -> bool {
    let mut ch = ch;
    if let Err(e) = ch.send(1, msg) {
        println!("{what}: closed before the frame ({e})");
        return true;
    }
    let reply = ch.recv();
    let mut raw = ch.into_inner();
    let a = after(&mut raw);
    match reply {
        Ok((_, m)) => {
            println!("{what}: {}; {a}", show(&m));
            matches!(m, Message::Refused { .. }) && a.closed()
        }
        Err(e) => {
            println!("{what}: no reply ({e}); {a}");
            a.closed()
        }
    }
}

fn parse_drop(s: &str) -> Result<(IpcKind, i32), String> {
    let (kind, key) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not KIND:KEY"))?;
    let kind = match kind {
        "msg" => IpcKind::Msg,
        "sem" => IpcKind::Sem,
        "shm" => IpcKind::Shm,
        other => return Err(format!("unknown kind {other:?}")),
    };
    let key = match key.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).map(|k| k as i32),
        None => key.parse::<i32>(),
    }
    .map_err(|e| format!("key {key:?}: {e}"))?;
    Ok((kind, key))
}

pub(crate) fn referee_role(config: &Config, claim: Option<SocketAddr>, drop: Option<&str>) -> u8 {
    println!("uid {}", uid());
    let secret = match Secret::load(&config.secret_file) {
        Ok(s) => s,
        Err(e) => return not_tried("secret", &e),
    };
    let referee = config.referee_addr();
    let me = config.front_end_addr();
    let claim = claim.unwrap_or(SocketAddr::from(([10, 66, 0, 2], 7100)));
    let mut all = true;
    // An employer's handshake where only hosts are served.
    let r = handshake(config, &secret, referee, Role::Employer, me);
    match refused_handshake("employer", r) {
        Some(ok) => all &= ok,
        None => return NOT_TRIED,
    }
    // A host's link that asks for something before it joined.
    if let Some(d) = drop {
        let (kind, key) = match parse_drop(d) {
            Ok(k) => k,
            Err(e) => return not_tried("--drop", &e),
        };
        match handshake(config, &secret, referee, Role::Host, me) {
            Ok(Ok(ch)) => {
                all &= refused_on_link("drop before join", ch, &Message::DropKey { kind, key })
            }
            other => {
                println!("drop before join: the handshake failed");
                let _ = refused_handshake("drop before join", other);
                return NOT_TRIED;
            }
        }
    }
    // Another host's address, stated in the handshake and in Join.
    let what = format!("join as {claim}");
    match handshake(config, &secret, referee, Role::Host, claim) {
        Ok(Ok(ch)) => all &= refused_on_link(&what, ch, &Message::Join { front_end: claim }),
        other => {
            // Refused at the handshake already: withstood too.
            match refused_handshake(&what, other) {
                Some(ok) => all &= ok,
                None => return NOT_TRIED,
            }
        }
    }
    // This host's handshake, another host's Join.
    let what = format!("join as {claim} from this host");
    match handshake(config, &secret, referee, Role::Host, me) {
        Ok(Ok(ch)) => all &= refused_on_link(&what, ch, &Message::Join { front_end: claim }),
        other => match refused_handshake(&what, other) {
            Some(ok) => all &= ok,
            None => return NOT_TRIED,
        },
    }
    verdict(all)
}

pub(crate) fn wrong_secret(config: &Config, target: SocketAddr, role: RoleArg) -> u8 {
    println!("uid {}", uid());
    let mut raw = [0u8; 32];
    if let Err(e) = dipc_common::auth::fill_random(&mut raw) {
        return not_tried("random", &e);
    }
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let secret = match Secret::from_bytes(hex.as_bytes()) {
        Ok(s) => s,
        Err(e) => return not_tried("secret", &e),
    };
    let role = match role {
        RoleArg::Employer => Role::Employer,
        RoleArg::Host => Role::Host,
    };
    let r = handshake(config, &secret, target, role, config.front_end_addr());
    match refused_handshake("handshake", r) {
        Some(ok) => verdict(ok),
        None => NOT_TRIED,
    }
}

pub(crate) fn plain(target: SocketAddr, frame: FrameArg) -> u8 {
    println!("uid {}", uid());
    let mut s = match TcpStream::connect_timeout(&target, REPLY_TIMEOUT) {
        Ok(s) => s,
        Err(e) => return not_tried(&format!("connect to {target}"), &e),
    };
    let mut out = Vec::new();
    match frame {
        FrameArg::Session => {
            wire::encode_frame(1, &root_session(), &mut out);
            wire::encode_frame(
                2,
                &Message::MsgRcv {
                    id: 0,
                    origin: Origin::default(),
                    size: 8192,
                    mtype: 0,
                    flags: libc::IPC_NOWAIT,
                },
                &mut out,
            );
        }
        FrameArg::Ping => wire::encode_frame(1, &Message::Ping, &mut out),
    }
    if let Err(e) = s.write_all(&out) {
        println!("end: closed (write: {e})");
        return WITHSTOOD;
    }
    // Everything it answers, until it closes.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Err(e) = s.set_read_timeout(Some(CLOSE_WAIT)) {
            return not_tried("socket", &e);
        }
        match s.read(&mut buf) {
            Ok(0) => break After::Closed("end of file".to_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                break After::Closed("reset".to_owned())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break After::Open
            }
            Err(e) => break After::Closed(e.to_string()),
        }
    };
    let mut only_refusals = true;
    let mut rest = &got[..];
    while !rest.is_empty() {
        match wire::decode_frame(rest, u32::MAX) {
            Ok(Some((used, _, m))) => {
                println!("reply: {}", show(&m));
                only_refusals &= matches!(m, Message::Refused { .. });
                rest = &rest[used..];
            }
            _ => {
                println!("reply: {} bytes that are no frame", rest.len());
                only_refusals = false;
                break;
            }
        }
    }
    println!("end: {end}");
    verdict(end.closed() && only_refusals)
}
