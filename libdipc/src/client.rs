//! A connection from an application (or a tool) to a dipc daemon socket:
//! one request at a time, each answered before the next is sent.

use dipc_common::channel::{Channel, ChannelError};
use dipc_common::config::{Config, ConfigError};
use dipc_common::wire::Message;
use std::fmt;
use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

pub struct Client {
    ch: Channel<UnixStream>,
    next_id: u64,
}

impl Client {
    /// Connects to a daemon socket. `timeout` bounds each wait for a reply
    /// (`None` waits as long as the daemon takes, for blocking calls).
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

    /// Sends a request that may block for long, and waits for its reply.
    ///
    /// A signal that interrupts the wait makes this send `Cancel`: the
    /// employer stops the call on the owner host, and the reply is then
    /// either `EINTR` or, if the call completed first, its result (so no
    /// message is lost). A call that may block waits indefinitely (the
    /// daemons watch the owner host's liveness); one that cannot gives up
    /// after `limit`.
    pub fn call_blocking(
        &mut self,
        msg: &Message,
        may_block: bool,
        limit: Duration,
    ) -> Result<Message, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        self.ch.send(id, msg)?;
        let start = std::time::Instant::now();
        let mut cancelled = false;
        loop {
            let r = if cancelled {
                self.ch.recv()
            } else {
                self.ch.recv_interruptible()
            };
            match r {
                Ok((rid, reply)) if rid == id => return unwrap_reply(reply),
                Ok(_) => continue,
                Err(ChannelError::Interrupted) => {
                    self.ch.send(id, &Message::Cancel)?;
                    cancelled = true;
                }
                Err(ChannelError::TimedOut)
                    if (may_block && !cancelled) || start.elapsed() < limit =>
                {
                    continue
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sends a request and returns the reply; an `Error` reply becomes
    /// [`ClientError::Remote`].
    pub fn call(&mut self, msg: &Message) -> Result<Message, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        unwrap_reply(self.ch.call(id, msg)?)
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
