//! `kill_d` and `dipc_send` for a caller on another host, made as that
//! caller (the worker has its uid and groups), so the kernel checks the
//! caller's permission: `EPERM` from `kill_d` is the kernel's own.
//!
//! `kill_d` reaches registered processes only: before it signals, the
//! worker asks this host's dipcd, which holds the host's registrations
//! (each with a pidfd), whether `{pid, starttime}` is one of them.
//! Without that, a caller on another host could signal any process of its
//! uid here by naming its pid and start time, which `kill(2)` from its own
//! host could never reach.

use crate::done;
use dipc_common::channel::Channel;
use dipc_common::config::Config;
use dipc_common::procs;
use dipc_common::wire::Message;
use std::os::unix::net::UnixStream;

fn reply(r: Result<(), i32>) -> Message {
    done(r.map(|()| 0))
}

/// The worker's connection to this host's dipcd, opened at its first
/// `kill_d` and kept for the next ones (a worker serves one process, which
/// may signal often).
#[derive(Default)]
pub struct Dipcd(Option<Channel<UnixStream>>);

impl Dipcd {
    fn open(config: &Config) -> Result<Channel<UnixStream>, Message> {
        let path = config.back_end_socket();
        let s = UnixStream::connect(&path).map_err(|e| {
            Message::error(
                e.raw_os_error().unwrap_or(libc::ECONNREFUSED),
                format!("cannot reach {}: {e}", path.display()),
            )
        })?;
        // A dipcd that does not answer must not hold the caller forever.
        s.set_read_timeout(Some(config.timeouts.request))
            .and_then(|()| s.set_write_timeout(Some(config.timeouts.request)))
            .map_err(|e| Message::error(libc::EIO, format!("{}: {e}", path.display())))?;
        Ok(Channel::new(s, config.max_frame))
    }

    /// Asks dipcd whether `{pid, starttime}` is a registration of this
    /// host.
    fn registered(&mut self, config: &Config, pid: i32, starttime: u64) -> Result<(), Message> {
        match self.call(config, &Message::PidCheck { pid, starttime })? {
            Message::Done { .. } => Ok(()),
            other => Err(Message::error(
                libc::EPROTO,
                format!("dipcd answered PidCheck with {}", other.kind().name()),
            )),
        }
    }

    /// A request to dipcd on the kept connection; its answer, or the error
    /// (dipcd's or the connection's). A kept connection that fails (dipcd
    /// restarted) is replaced once.
    pub fn call(&mut self, config: &Config, ask: &Message) -> Result<Message, Message> {
        for fresh in [false, true] {
            let mut ch = match self.0.take() {
                Some(ch) if !fresh => ch,
                _ => Self::open(config)?,
            };
            match ch.call(1, ask) {
                Ok(e @ Message::Error { .. }) => {
                    self.0 = Some(ch);
                    return Err(e);
                }
                Ok(answer) => {
                    self.0 = Some(ch);
                    return Ok(answer);
                }
                Err(e) if fresh => {
                    return Err(Message::error(e.errno(), format!("dipcd: {e}")));
                }
                Err(_) => continue,
            }
        }
        Err(Message::error(libc::EIO, "dipcd did not answer"))
    }
}

/// Signals the process `{pid, starttime}` of this host if it is
/// registered (`ESRCH` otherwise, as for an unknown pid_d).
pub fn kill(config: &Config, dipcd: &mut Dipcd, pid: i32, starttime: u64, sig: i32) -> Message {
    // A bad signal number is EINVAL whether or not the target exists, as
    // kill(2) says.
    if !(0..=procs::MAX_SIGNAL).contains(&sig) {
        return reply(Err(libc::EINVAL));
    }
    if let Err(e) = dipcd.registered(config, pid, starttime) {
        return e;
    }
    reply(procs::signal(pid, starttime, sig))
}

/// Puts a message into a mailbox of this host, typed with the session's
/// pid_d (`ENOTCONN` if the caller was not registered when the session
/// opened).
pub fn send(mailbox: i32, sender: i64, data: &[u8], flags: i32) -> Message {
    reply(procs::mailbox_send(mailbox, sender, data, flags))
}
