//! The employer: forked by dipcd when a local application needs a
//! connection to the worker on another host.
//!
//! It opens the TCP connection from this host's address, runs the
//! handshake on the cluster secret (which applications cannot read), and,
//! inside the secure channel that opens, tells the worker whose
//! credentials to act with, taken from the kernel (SO_PEERCRED), not from
//! the application. It then passes the connected socket and the channel's
//! state to the application (SCM_RIGHTS, `SessionReady`) and exits. From
//! then on the application talks to its worker directly: a remote call
//! costs one TCP round trip plus the system call on the owner.
//!
//! Handing over the channel grants nothing new: the credentials were
//! stated before the application had the channel, and the worker refuses
//! a second `Session` and a second `SenderPid`, so with the keys the
//! application can only do what its own uid may. Every other party (a
//! local user who relays the connection, anyone on the network) holds
//! neither the keys nor the secret, so what it writes fails
//! authentication and closes the connection. dipcd forks an employer only
//! for a host in the referee's table, never for an address an application
//! merely names.
//!
//! Right after `Session` it tells the worker the caller's pid_d
//! (`SenderPid`, 0 if the caller is not registered), which dipcd knows
//! from its own table; the worker types every message the session sends
//! to a mailbox with it and takes no second one, so an application cannot
//! send under another process's pid_d. The `Done` reply to the
//! application carries the same pid_d, so the library knows which of its
//! sessions may carry sends.

use dipc_common::auth::{client_handshake, AuthError, Secret};
use dipc_common::channel::{Channel, ChannelError};
use dipc_common::config::Config;
use dipc_common::net::{connect_from, tune_tcp};
use dipc_common::sys::{peer_groups, send_fd, PeerCred};
use dipc_common::wire::{Message, Role};
use log::{debug, info};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;

/// Opens an authenticated connection to the worker on `host` and starts a
/// session for `cred` on it. Errors are the replies the application gets.
pub fn open_session(
    config: &Config,
    secret: &Secret,
    (cred, groups): (PeerCred, Vec<u32>),
    pid_d: i64,
    host: SocketAddr,
) -> Result<Channel<TcpStream>, Message> {
    let t = &config.timeouts;
    let fail = |what: &str, e: &dyn std::fmt::Display, errno: i32| {
        Message::error(errno, format!("{what} {host}: {e}"))
    };
    let s = connect_from(config.host.address, host, Some(t.connect)).map_err(|e| {
        fail(
            "cannot connect to",
            &e,
            e.raw_os_error().unwrap_or(libc::ETIMEDOUT),
        )
    })?;
    // Keep-alives and TCP_USER_TIMEOUT stay set on the socket after it is
    // handed over: they are what notices a lost owner during a long block.
    tune_tcp(&s, t.heartbeat_timeout).map_err(|e| fail("socket options for", &e, libc::EIO))?;
    s.set_read_timeout(Some(t.request))
        .map_err(|e| fail("socket options for", &e, libc::EIO))?;
    let mut ch = Channel::new(s, config.max_frame);
    client_handshake(&mut ch, secret, Role::Employer, config.front_end_addr()).map_err(|e| {
        // A worker that does not answer in time has timed out, as it would
        // have on the session's requests; one that answers without proving
        // the secret, or refuses, has refused.
        let errno = match &e {
            AuthError::Channel(ChannelError::TimedOut) => libc::ETIMEDOUT,
            _ => libc::ECONNREFUSED,
        };
        fail("authentication with", &e, errno)
    })?;
    let session = Message::Session {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
        groups,
    };
    // Both at once: the worker answers them in order, and a session that
    // opens takes one round trip after the handshake instead of two.
    let send = |ch: &mut Channel<TcpStream>, id, msg: &Message| {
        ch.send(id, msg)
            .map_err(|e| fail("session with", &e, e.errno()))
    };
    send(&mut ch, 1, &session)?;
    send(&mut ch, 2, &Message::SenderPid { pid_d })?;
    let mut first_error = None;
    for _ in 0..2 {
        let reply = match ch.recv() {
            Ok((_, Message::Done { .. })) => continue,
            Ok((_, Message::Error { errno, message })) => Message::Error { errno, message },
            Ok((_, other)) => fail("session with", &other.kind().name(), libc::EPROTO),
            // A refused session is closed after its reason: the reason
            // is the answer.
            Err(e) => {
                return Err(first_error.unwrap_or_else(|| fail("session with", &e, e.errno())))
            }
        };
        first_error.get_or_insert(reply);
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(ch),
    }
}

/// Serves one `Connect` request from a local application: replies `Done`
/// and passes the session's socket, or replies with the error. Returns the
/// exit code.
pub fn serve(
    client: UnixStream,
    cred: PeerCred,
    pid_d: i64,
    (id, req): (u64, Message),
    config: &Config,
    secret: &Secret,
) -> i32 {
    // The groups the kernel recorded when the application connected, with
    // its uid and gid (SO_PEERCRED): what /proc shows for its pid now may
    // be another process's, or groups it took on since.
    let groups = peer_groups(&client);
    let mut app = Channel::new(client, config.max_frame);
    let reply = match (req, groups) {
        (_, Err(e)) => Err(Message::error(
            e.raw_os_error().unwrap_or(libc::EIO),
            format!("the application's groups (SO_PEERGROUPS): {e}"),
        )),
        (Message::Connect { target }, Ok(groups)) => {
            open_session(config, secret, (cred, groups), pid_d, target)
        }
        (other, Ok(_)) => Err(Message::error(
            libc::EINVAL,
            format!("an employer does not take {} messages", other.kind().name()),
        )),
    };
    let (reply, session) = match reply {
        Ok(ch) => {
            let (s, codec) = ch.into_parts();
            match codec.keys() {
                Some(keys) => (Message::SessionReady { pid_d, keys }, Some(s)),
                None => (
                    Message::error(libc::EPROTO, "the session is not secured"),
                    None,
                ),
            }
        }
        Err(e) => (e, None),
    };
    if let Err(e) = app.send(id, &reply) {
        debug!("employer: application pid {} went away: {e}", cred.pid);
        return 1;
    }
    if let Some(s) = session {
        if let Err(e) = send_fd(app.get_ref(), &s) {
            info!("employer: cannot pass the session to pid {}: {e}", cred.pid);
            return 1;
        }
    }
    0
}

#[cfg(test)]
mod tests;
