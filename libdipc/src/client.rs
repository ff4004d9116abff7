//! A connection from an application (or a tool) to this host's dipcd, or
//! to its worker on another host: one request at a time, each answered
//! before the next is sent.

use crate::spin::Spin;
use dipc_common::channel::{Channel, ChannelError, Codec};
use dipc_common::config::{Config, ConfigError};
use dipc_common::net;
use dipc_common::secure::Secure;
use dipc_common::sys::{self, HeldSignals};
use dipc_common::wire::Message;
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why a request to the daemon failed.
#[derive(Debug)]
pub enum ClientError {
    Config(ConfigError),
    /// The socket could not be reached: the daemon is probably not running.
    Unreachable {
        path: PathBuf,
        source: io::Error,
    },
    Channel(ChannelError),
    /// The daemon (or a host behind it) answered with an error.
    Remote {
        errno: i32,
        message: String,
    },
    /// The daemon answered with a message that does not fit the request.
    Unexpected(&'static str),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Config(e) => write!(f, "{e}"),
            ClientError::Unreachable { path, source } => write!(
                f,
                "cannot reach the dipc daemon at {}: {source} (is dipcd running?)",
                path.display()
            ),
            ClientError::Channel(e) => write!(f, "{e}"),
            ClientError::Remote { message, .. } => f.write_str(message),
            ClientError::Unexpected(k) => write!(f, "unexpected {k} reply from the daemon"),
        }
    }
}

impl std::error::Error for ClientError {}

impl ClientError {
    /// The `errno` value an application sees for this failure.
    pub fn errno(&self) -> i32 {
        match self {
            ClientError::Config(_) => libc::EINVAL,
            ClientError::Unreachable { .. } => libc::ENOTCONN,
            ClientError::Channel(e) => e.errno(),
            ClientError::Remote { errno, .. } => *errno,
            ClientError::Unexpected(_) => libc::EPROTO,
        }
    }
}

impl From<ChannelError> for ClientError {
    fn from(e: ChannelError) -> Self {
        ClientError::Channel(e)
    }
}

/// A connection to a daemon socket (`S` = `UnixStream`, to this host's
/// dipcd) or to the worker on another host (`S` = `TcpStream`, a session
/// opened by [`Client::session`]).
pub struct Client<S = UnixStream> {
    ch: Channel<S>,
    next_id: u64,
    /// For a session: the pid_d the worker types this session's mailbox
    /// sends with (0: the process was not registered when it opened).
    pid_d: i64,
    /// For a session: how long a call checks for its reply before sleeping.
    spin: Spin,
    /// For a session that joined the process's `SEM_UNDO` context on its
    /// owner (`SemJoin`): that context's number.
    undo_ctx: Option<i64>,
    /// The credentials the process had when the connection was opened:
    /// dipcd and the worker act with them (SO_PEERCRED and SO_PEERGROUPS
    /// are taken at connect), so a process that changed its credentials
    /// since must not use the connection any more.
    creds: Creds,
}

/// A process's effective uid and gid and its supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
}

impl Creds {
    /// The calling process's, now.
    pub fn current() -> Creds {
        // SAFETY: geteuid and getegid cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        // An error here only makes a comparison fail, so a connection is
        // not reused: never a wrong identity.
        let groups = nix::unistd::getgroups()
            .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
            .unwrap_or_default();
        Creds { uid, gid, groups }
    }
}

/// How often a cancel is repeated until the worker answers: a cancel that
/// reaches the worker just before it blocks interrupts nothing, the next
/// one does.
const CANCEL_REPEAT: Duration = Duration::from_millis(100);

impl Client<UnixStream> {
    /// Connects to a daemon socket. `timeout` bounds each wait for a reply
    /// (`None` waits as long as the daemon takes).
    pub fn connect(
        path: &Path,
        max_frame: u32,
        timeout: Option<Duration>,
    ) -> Result<Client, ClientError> {
        let unreachable = |source| ClientError::Unreachable {
            path: path.to_owned(),
            source,
        };
        let s = UnixStream::connect(path).map_err(unreachable)?;
        s.set_read_timeout(timeout).map_err(unreachable)?;
        Ok(Client {
            ch: Channel::new(s, max_frame),
            next_id: 1,
            pid_d: 0,
            spin: Spin::new(Duration::ZERO),
            undo_ctx: None,
            creds: Creds::current(),
        })
    }

    /// Connects to this host's dipcd as configured.
    pub fn for_config(config: &Config) -> Result<Client, ClientError> {
        // A reply that needs the referee or another host arrives within the
        // request time-out; allow one more for the daemon's own work.
        Client::connect(
            &config.back_end_socket(),
            config.max_frame,
            Some(config.timeouts.request * 2),
        )
    }
}

impl Client<TcpStream> {
    /// A session with the worker on `target`: this host's dipcd opens the
    /// connection and its secure channel, starts the session with this
    /// process's credentials, and passes the socket and the channel's
    /// state here.
    pub fn session(config: &Config, target: SocketAddr) -> Result<Self, ClientError> {
        let mut daemon = Client::for_config(config)?;
        let (pid_d, keys) = match daemon.call(&Message::Connect { target })? {
            Message::SessionReady { pid_d, keys } => (pid_d, keys),
            other => return Err(ClientError::Unexpected(other.kind().name())),
        };
        let fd = sys::recv_fd(daemon.ch.get_ref()).map_err(|e| ClientError::Channel(e.into()))?;
        let s = TcpStream::from(fd);
        // The read time-out is also what lets a signal interrupt a wait
        // (see signal(7)); a blocking call just waits again after it.
        s.set_read_timeout(Some(config.timeouts.request))
            .map_err(|e| ClientError::Channel(e.into()))?;
        Ok(Client {
            ch: Channel::new(s, config.max_frame)
                .with_codec(Codec::Secure(Box::new(Secure::from_keys(&keys)))),
            next_id: 1,
            pid_d,
            spin: Spin::new(config.library.spin),
            undo_ctx: None,
            creds: daemon.creds.clone(),
        })
    }

    /// The pid_d this session's mailbox sends are typed with (0: none).
    pub fn pid_d(&self) -> i64 {
        self.pid_d
    }

    /// The number of the `SEM_UNDO` context the session serves in on its
    /// owner, once it joined one.
    pub fn undo_ctx(&self) -> Option<i64> {
        self.undo_ctx
    }

    /// Has the session served in the process's `SEM_UNDO` context named
    /// `nonce` on its owner (see the worker's `undo` module); returns the
    /// context's number. Joins once.
    pub fn join_undo(&mut self, nonce: u64) -> Result<i64, ClientError> {
        if let Some(ctx) = self.undo_ctx {
            return Ok(ctx);
        }
        match self.call(&Message::SemJoin { nonce })? {
            Message::Done { value } => {
                self.undo_ctx = Some(value);
                Ok(value)
            }
            other => Err(ClientError::Unexpected(other.kind().name())),
        }
    }

    /// Sends a call to the worker and waits for its reply.
    ///
    /// A call that may block waits as long as the owner's kernel blocks it
    /// (keep-alives on the socket notice a lost owner); one that cannot
    /// gives up after the socket's read time-out (the request time-out).
    /// A signal that interrupts the wait makes this send `Cancel`,
    /// repeated until the worker answers: the reply is then either `EINTR`
    /// or, if the call completed first, its result, so nothing is lost.
    ///
    /// Before sleeping for the reply, the call checks for it without
    /// sleeping for up to the session's spin (`library.spin_us`, adapted).
    /// Signals are `held` from the start of a call that may block until it
    /// sleeps (through the session's opening, the send and the spin): one
    /// the process handles that came meanwhile interrupts the call as one
    /// that comes while it sleeps does, instead of being handled where no
    /// system call could report it (and the call then sleeping on).
    pub fn call_blocking(
        &mut self,
        msg: &Message,
        may_block: bool,
        held: Option<HeldSignals>,
    ) -> Result<Message, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let sent = Instant::now();
        self.ch.send(id, msg)?;
        net::spin_readable(self.ch.get_ref(), self.spin.window());
        let mut signalled = held.is_some_and(HeldSignals::release);
        let mut cancels = 0u32;
        let r = loop {
            let r = if cancels > 0 {
                self.ch.recv()
            } else if std::mem::take(&mut signalled) {
                Err(ChannelError::Interrupted)
            } else {
                self.ch.recv_interruptible()
            };
            match r {
                Ok((rid, reply)) if rid == id => break unwrap_reply(reply),
                Ok(_) => continue,
                Err(ChannelError::Interrupted) => {
                    self.ch.send(id, &Message::Cancel)?;
                    self.ch
                        .get_ref()
                        .set_read_timeout(Some(CANCEL_REPEAT))
                        .map_err(|e| ClientError::Channel(e.into()))?;
                    cancels = 1;
                }
                // A worker that takes more than the request time-out to
                // give up a cancelled call is lost.
                Err(ChannelError::TimedOut) if cancels > 0 && cancels < CANCEL_LIMIT => {
                    self.ch.send(id, &Message::Cancel)?;
                    cancels += 1;
                }
                Err(ChannelError::TimedOut) if may_block && cancels == 0 => continue,
                Err(e) => return Err(e.into()),
            }
        };
        if cancels == 0 {
            self.spin.learn(sent.elapsed());
        } else {
            // Back to the usual time-out for the next call on this socket.
            let t = crate::state::config()?.timeouts.request;
            self.ch
                .get_ref()
                .set_read_timeout(Some(t))
                .map_err(|e| ClientError::Channel(e.into()))?;
        }
        r
    }
}

impl Client<TcpStream> {
    /// Tells the worker that the reply of the last call has arrived. A
    /// worker that took a message from a queue for that call holds it
    /// until then, and puts it back in the queue if the session ends
    /// first; so a caller whose confirmation cannot be sent must not use
    /// the message (it is, or will be, back in the queue).
    pub fn confirm(&mut self) -> Result<(), ClientError> {
        self.ch
            .send(self.next_id - 1, &Message::Received)
            .map_err(ClientError::Channel)
    }
}

/// How many times a cancel is repeated (every [`CANCEL_REPEAT`]) before
/// the call is given up as lost.
const CANCEL_LIMIT: u32 = 100;

impl<S: std::os::fd::AsFd + std::io::Read + std::io::Write> Client<S> {
    /// Whether an idle pooled connection is still open. Nothing arrives on
    /// an idle connection (one request at a time, each answered), so
    /// anything readable means the peer closed it (a restarted dipcd, a
    /// worker that ended) or left it in an unknown state: either way it
    /// must not carry a request, which would then fail although the
    /// daemon behind a fresh connection could serve it.
    pub fn is_idle_and_open(&self) -> bool {
        net::peek(self.ch.get_ref()) == net::Peek::Empty
    }

    /// Whether the connection acts with `creds` (see the field).
    pub fn acts_as(&self, creds: &Creds) -> bool {
        &self.creds == creds
    }
}

impl<S: std::io::Read + std::io::Write> Client<S> {
    /// Sends a request and returns the reply; an `Error` reply becomes
    /// [`ClientError::Remote`].
    pub fn call(&mut self, msg: &Message) -> Result<Message, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        unwrap_reply(self.ch.call(id, msg)?)
    }

    /// Sends each of `parts` as a request of its own (`encode` writes the
    /// frame for a request id and a part), keeping up to `window` of them
    /// unanswered, and requires every reply to be `Done`. A bulk transfer
    /// then costs about one round trip instead of one a part, and the two
    /// ends work on successive parts at the same time. The window bounds
    /// the replies waiting unread, so the peer never blocks writing them
    /// while this end blocks writing requests.
    pub fn call_each<'a>(
        &mut self,
        parts: impl IntoIterator<Item = &'a [u8]>,
        window: usize,
        encode: impl Fn(u64, &[u8], &mut Vec<u8>),
    ) -> Result<(), ClientError> {
        let mut answered = self.next_id - 1;
        for part in parts {
            let id = self.next_id;
            self.next_id += 1;
            self.ch.send_encoded(|out| encode(id, part, out))?;
            if id - answered > window.max(1) as u64 {
                answered = self.done_reply(answered + 1)?;
            }
        }
        while answered + 1 < self.next_id {
            answered = self.done_reply(answered + 1)?;
        }
        Ok(())
    }

    /// Reply `id` of [`Client::call_each`] (replies come in order).
    fn done_reply(&mut self, id: u64) -> Result<u64, ClientError> {
        let (got, reply) = self.ch.recv()?;
        match unwrap_reply(reply)? {
            Message::Done { .. } if got == id => Ok(id),
            other => Err(ClientError::Unexpected(other.kind().name())),
        }
    }

    /// The connection itself and how its frames look, for a protocol that
    /// continues on it outside request and reply (a shared memory attach
    /// hands the session to the segment's manager).
    pub fn into_parts(self) -> (S, Codec) {
        self.ch.into_parts()
    }
}

fn unwrap_reply(reply: Message) -> Result<Message, ClientError> {
    match reply {
        Message::Error { errno, message } => Err(ClientError::Remote { errno, message }),
        reply => Ok(reply),
    }
}

/// Loads the configuration an application uses: `$DIPC_CONFIG`, else the
/// default path.
pub fn load_config() -> Result<Config, ClientError> {
    Config::load_default().map_err(ClientError::Config)
}
