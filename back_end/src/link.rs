//! This host's connection to the referee, driven by the back_end's event
//! loop without ever blocking it: connect, run the handshake on the
//! cluster secret (after which every frame is sealed, see
//! `dipc_common::secure`), join, then a heartbeat every
//! `heartbeat_interval_ms`. A link that goes quiet for
//! `heartbeat_timeout_ms` or breaks is dropped and re-opened with backoff,
//! so a restarted referee sees every host again within moments. An explicit
//! refusal (wrong secret, address not allowed) is fatal: retrying cannot
//! fix a configuration error, and a host that silently stays out of the
//! cluster is worse than one that stops and says why.

use dipc_common::auth::{AuthError, ClientHandshake, Secret};
use dipc_common::channel::{ChannelError, Framed};
use dipc_common::config::{Config, REFEREE_RETRY_MAX};
use dipc_common::net::{connect_from, tune_tcp, Stream};
use dipc_common::silence::Silence;
use dipc_common::wire::{IpcKind, Message, Role};
use log::{debug, info, warn};
use mio::{Interest, Registry, Token};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Short: a restarted referee holds back "no such key" answers until every
/// host had time to come back and claim its keys (`Config::referee_settle`).
const MAX_BACKOFF: Duration = REFEREE_RETRY_MAX;

enum State {
    /// Not connected; try again at the given time.
    Idle(Instant),
    Connecting,
    AwaitHandshake(Box<ClientHandshake>),
    AwaitJoined,
    Joined,
}

/// What the back_end must act on after the link handled an event.
pub enum LinkEvent {
    /// A reply to a request relayed for a local client.
    Reply { to: Relayed, msg: Message },
    /// A message the referee sent on its own (a key was freed).
    Push(Message),
    /// The host (re)joined the referee: state the referee keeps per
    /// connection (registered processes) must be restored.
    Joined,
    /// The referee refused this host; the host must stop.
    Fatal(String),
}

/// What a relayed request was, for the back_end to finish its reply.
#[derive(Debug, Clone, Copy)]
pub struct Relayed {
    pub client: usize,
    pub id: u64,
    /// The key asked for, for a `KeyGet`.
    pub key: Option<(IpcKind, i32)>,
    /// What the back_end must do with the reply besides passing it on.
    pub then: Then,
}

/// The follow-up of a relayed request (of the process table, or of a
/// `Connect`'s check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    Nothing,
    /// A new registration of `pid` (registration `serial`).
    Register {
        pid: i32,
        serial: u64,
    },
    /// A registration restored after the link was re-opened.
    Restore {
        pid: i32,
        serial: u64,
    },
    /// A commit of a key this host created: recorded as owned once the
    /// referee takes it.
    Committed {
        kind: IpcKind,
        key: i32,
        id: i32,
        creator_uid: u32,
    },
    /// A claim of an owned key after a join: forgotten if refused.
    Claim {
        kind: IpcKind,
        key: i32,
        id: i32,
    },
    /// A placeholder checked after a join: removed unless the referee
    /// still has its key as that structure (owner, id, incarnation).
    Verify {
        kind: IpcKind,
        key: i32,
        what: (std::net::SocketAddr, i32, u64),
    },
    /// A registered process `pid` took its own pid_d over with a new
    /// mailbox (a move that failed after its mailbox was emptied).
    Repoint {
        pid: i32,
        serial: u64,
        mailbox: i32,
    },
    /// `uregist` of `pid_d` by `pid`.
    Unregister {
        pid_d: i64,
        pid: i32,
    },
    /// A name taken or released (`Pids::name_op` keeps which); `restore`
    /// when dipcd takes it again after the link was re-opened.
    Named {
        op: u64,
        restore: bool,
    },
    /// The host table, asked for the client's `Connect` to `target`: the
    /// client is handed to an employer only if `target` is an up host.
    Connect {
        target: std::net::SocketAddr,
    },
}

pub struct Link {
    token: Token,
    state: State,
    conn: Option<Framed<Stream>>,
    backoff: Duration,
    last_heard: Instant,
    /// The referee's silence while joined (see `dipc_common::silence`).
    silence: Silence,
    next_heartbeat: Instant,
    next_id: u64,
    /// Relayed requests by our request id.
    pending: HashMap<u64, Relayed>,
}

impl Link {
    pub fn new(token: Token) -> Link {
        let now = Instant::now();
        Link {
            token,
            state: State::Idle(now),
            conn: None,
            backoff: MIN_BACKOFF,
            last_heard: now,
            silence: Silence::new(now),
            next_heartbeat: now,
            next_id: 1,
            pending: HashMap::new(),
        }
    }

    pub fn is_joined(&self) -> bool {
        matches!(self.state, State::Joined)
    }

    /// When the event loop must next call [`Link::tick`].
    pub fn deadline(&self, config: &Config) -> Instant {
        match self.state {
            State::Idle(at) => at,
            State::Joined => self
                .next_heartbeat
                .min(self.last_heard + config.timeouts.heartbeat_timeout),
            _ => self.last_heard + config.timeouts.connect.max(config.timeouts.request),
        }
    }

    /// Relays a request for a local client. Returns false if the link is
    /// not up.
    pub fn relay(&mut self, to: Relayed, msg: &Message) -> bool {
        let (State::Joined, Some(conn)) = (&self.state, self.conn.as_mut()) else {
            return false;
        };
        let ours = self.next_id;
        self.next_id += 1;
        conn.queue(ours, msg);
        self.pending.insert(ours, to);
        let _ = conn.flush();
        true
    }

    /// Sends a message that takes no answer (request id 0), such as the
    /// load report. Returns false if the link is not up.
    pub fn push(&mut self, msg: &Message) -> bool {
        let (State::Joined, Some(conn)) = (&self.state, self.conn.as_mut()) else {
            return false;
        };
        conn.queue(0, msg);
        let _ = conn.flush();
        true
    }

    /// Timers: start a connection, send a heartbeat, or give up on a
    /// silent referee. Cheap when nothing is due, so the daemon calls it
    /// between the events of a long batch too: a busy host's heartbeats
    /// then go out on time. Returns whether a heartbeat went out (the
    /// load report goes with it).
    pub fn tick(
        &mut self,
        registry: &Registry,
        config: &Config,
        secret: &Secret,
        out: &mut Vec<LinkEvent>,
    ) -> bool {
        let mut beat = false;
        let now = Instant::now();
        match &self.state {
            State::Idle(at) if now >= *at => self.connect(registry, config, out),
            State::Idle(_) => {}
            State::Joined => {
                // The loop looks at least every heartbeat interval (its
                // deadline); a longer gap is this daemon's own stall.
                let step = config.timeouts.heartbeat_interval * 2;
                let timeout = config.timeouts.heartbeat_timeout;
                if self.silence.look(now, step) > timeout {
                    // The referee's frames may be waiting unread behind a
                    // long batch of ours: read them before blaming it.
                    self.ready(registry, config, secret, out);
                }
                if !self.is_joined() {
                    // Reading found the link closed (and reset it).
                } else if self.silence.look(now, step) > timeout {
                    warn!(
                        "referee silent for {} ms; reconnecting",
                        config.timeouts.heartbeat_timeout.as_millis()
                    );
                    self.reset(registry, out);
                } else if now >= self.next_heartbeat {
                    self.next_heartbeat = now + config.timeouts.heartbeat_interval;
                    if let Some(c) = self.conn.as_mut() {
                        c.queue(0, &Message::Heartbeat);
                        if c.flush().is_err() {
                            self.reset(registry, out);
                        } else {
                            beat = true;
                        }
                    }
                }
            }
            _ => {
                if now.duration_since(self.last_heard)
                    > config.timeouts.connect.max(config.timeouts.request)
                {
                    warn!(
                        "referee {}: no answer while joining; retrying",
                        config.referee_addr()
                    );
                    self.reset(registry, out);
                }
            }
        }
        beat
    }

    fn connect(&mut self, registry: &Registry, config: &Config, out: &mut Vec<LinkEvent>) {
        let referee = config.referee_addr();
        let attempt = connect_from(config.host.address, referee, None).and_then(|s| {
            tune_tcp(&s, config.timeouts.heartbeat_timeout)?;
            Ok(s)
        });
        match attempt {
            Ok(s) => {
                let mut stream = Stream::Tcp(mio::net::TcpStream::from_std(s));
                if let Err(e) = registry.register(
                    &mut stream,
                    self.token,
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    warn!("referee link: {e}");
                    self.reset(registry, out);
                    return;
                }
                self.conn = Some(Framed::new(stream, config.max_frame));
                self.last_heard = Instant::now();
                self.silence.heard(self.last_heard);
                self.state = State::Connecting;
            }
            Err(e) => {
                debug!("cannot reach the referee at {referee}: {e}");
                self.reset(registry, out);
            }
        }
    }

    /// Drops the connection and schedules the next attempt. Relayed requests
    /// in flight get an error.
    fn reset(&mut self, registry: &Registry, out: &mut Vec<LinkEvent>) {
        if let Some(mut c) = self.conn.take() {
            let _ = registry.deregister(&mut c.stream);
        }
        for (_, to) in self.pending.drain() {
            out.push(LinkEvent::Reply {
                to,
                msg: Message::error(libc::ECONNRESET, "connection to the referee lost"),
            });
        }
        if self.is_joined() {
            warn!("lost the referee; reconnecting");
        }
        self.state = State::Idle(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// The link's socket is ready.
    pub fn ready(
        &mut self,
        registry: &Registry,
        config: &Config,
        secret: &Secret,
        out: &mut Vec<LinkEvent>,
    ) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if let State::Connecting = self.state {
            let Stream::Tcp(s) = &conn.stream else {
                return;
            };
            match s.take_error() {
                Ok(None) if s.peer_addr().is_ok() => {}
                Ok(None) => return, // still connecting
                Ok(Some(e)) | Err(e) => {
                    debug!("cannot reach the referee at {}: {e}", config.referee_addr());
                    self.reset(registry, out);
                    return;
                }
            }
            let (hs, hello) =
                match ClientHandshake::start(secret, Role::Host, config.front_end_addr()) {
                    Ok(x) => x,
                    Err(e) => {
                        warn!("referee link: {e}");
                        self.reset(registry, out);
                        return;
                    }
                };
            conn.queue(0, &hello);
            self.state = State::AwaitHandshake(Box::new(hs));
        }
        let mut eof = false;
        loop {
            let frame = match self.conn.as_mut().map(|c| c.read_frame()) {
                Some(Ok(Some(f))) => f,
                Some(Ok(None)) | None => break,
                Some(Err(ChannelError::Closed)) => {
                    eof = true;
                    break;
                }
                Some(Err(ChannelError::Io(e))) => {
                    debug!("referee link: {e}");
                    eof = true;
                    break;
                }
                Some(Err(e)) => {
                    warn!("referee link: protocol error: {e}");
                    self.reset(registry, out);
                    return;
                }
            };
            self.last_heard = Instant::now();
            self.silence.heard(self.last_heard);
            if let Err(fatal) = self.handle(frame.0, frame.1, config, out) {
                out.push(LinkEvent::Fatal(fatal));
                self.reset(registry, out);
                return;
            }
        }
        let flushed = self.conn.as_mut().map(|c| c.flush());
        if eof && matches!(self.state, State::AwaitHandshake(_)) {
            // The referee drops a peer it does not allow without a word.
            warn!(
                "the referee at {} closed the connection before authentication; is {} in its cluster.allowed_hosts?",
                config.referee_addr(),
                config.host.address
            );
        }
        if eof || matches!(flushed, Some(Err(_))) {
            self.reset(registry, out);
        }
    }

    fn handle(
        &mut self,
        id: u64,
        msg: Message,
        config: &Config,
        out: &mut Vec<LinkEvent>,
    ) -> Result<(), String> {
        let referee = config.referee_addr();
        let state = std::mem::replace(&mut self.state, State::AwaitJoined);
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        self.state = match state {
            State::AwaitHandshake(hs) => match hs.on_reply(&msg) {
                Ok(secure) => {
                    conn.secure(secure);
                    conn.queue(
                        0,
                        &Message::Join {
                            front_end: config.front_end_addr(),
                        },
                    );
                    State::AwaitJoined
                }
                Err(AuthError::WrongSecret) => {
                    return Err(format!(
                        "referee {referee} does not know the cluster secret ({})",
                        config.secret_file.display()
                    ))
                }
                Err(e) => return Err(format!("referee {referee}: {e}")),
            },
            State::AwaitJoined => match msg {
                Message::Joined => {
                    info!("joined the cluster (referee {referee})");
                    out.push(LinkEvent::Joined);
                    self.backoff = MIN_BACKOFF;
                    self.next_heartbeat = Instant::now() + config.timeouts.heartbeat_interval;
                    State::Joined
                }
                Message::Refused { reason } => {
                    return Err(format!("referee {referee} refused this host: {reason}"))
                }
                other => {
                    return Err(format!(
                        "referee {referee}: unexpected {} while joining",
                        other.kind().name()
                    ))
                }
            },
            State::Joined => {
                match msg {
                    Message::HeartbeatAck => {}
                    msg => match self.pending.remove(&id) {
                        Some(to) => out.push(LinkEvent::Reply { to, msg }),
                        None if id == 0 => out.push(LinkEvent::Push(msg)),
                        None => debug!("referee link: stale reply {}", msg.kind().name()),
                    },
                }
                State::Joined
            }
            s @ (State::Idle(_) | State::Connecting) => s,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::Poll;

    /// A joined link on one end of a socket pair; the referee's end is the
    /// other.
    fn joined(poll: &Poll) -> (Link, std::os::unix::net::UnixStream) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut stream = Stream::Unix(mio::net::UnixStream::from_std(ours));
        poll.registry()
            .register(&mut stream, Token(2), Interest::READABLE)
            .unwrap();
        let mut link = Link::new(Token(2));
        link.conn = Some(Framed::new(stream, 1 << 20));
        link.state = State::Joined;
        (link, theirs)
    }

    fn secret() -> Secret {
        Secret::from_bytes(&[b'7'; 64]).unwrap()
    }

    /// Makes the link's referee silent for just over the time-out, as
    /// counted by looks at every heartbeat interval while the daemon runs.
    fn silent_by_count(link: &mut Link, config: &Config) {
        let t0 = Instant::now();
        link.silence = Silence::new(t0);
        link.next_heartbeat = t0 + config.timeouts.heartbeat_timeout * 10;
        let step = config.timeouts.heartbeat_interval * 2;
        let mut now = t0;
        while link.silence.look(now, step) <= config.timeouts.heartbeat_timeout {
            now += config.timeouts.heartbeat_interval;
        }
    }

    #[test]
    fn frames_waiting_unread_count_as_heard() {
        let poll = Poll::new().unwrap();
        let config = Config::default();
        let (mut link, mut referee) = joined(&poll);
        silent_by_count(&mut link, &config);
        // The referee's ack came in time and waits unread behind a long
        // batch of the daemon's.
        let mut ack = Vec::new();
        dipc_common::wire::encode_frame(0, &Message::HeartbeatAck, &mut ack);
        std::io::Write::write_all(&mut referee, &ack).unwrap();
        let mut out = Vec::new();
        link.tick(poll.registry(), &config, &secret(), &mut out);
        assert!(link.is_joined(), "a live referee was dropped");
        assert!(out.is_empty());
    }

    #[test]
    fn a_stall_of_the_daemon_is_not_the_referees_silence() {
        let poll = Poll::new().unwrap();
        let config = Config::default();
        let (mut link, _referee) = joined(&poll);
        // The daemon did not run for three heartbeat time-outs.
        link.silence = Silence::new(Instant::now() - config.timeouts.heartbeat_timeout * 3);
        link.next_heartbeat = Instant::now() + config.timeouts.heartbeat_interval;
        let mut out = Vec::new();
        link.tick(poll.registry(), &config, &secret(), &mut out);
        assert!(link.is_joined(), "the referee was blamed for our stall");
    }

    #[test]
    fn a_referee_silent_while_the_daemon_runs_is_dropped() {
        let poll = Poll::new().unwrap();
        let config = Config::default();
        let (mut link, _referee) = joined(&poll);
        silent_by_count(&mut link, &config);
        let mut out = Vec::new();
        link.tick(poll.registry(), &config, &secret(), &mut out);
        assert!(!link.is_joined());
    }
}
