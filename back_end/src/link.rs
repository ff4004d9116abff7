//! This host's connection to the referee, a connection of dipcd's reactor
//! (`dipc_common::reactor`) that the link opens and never blocks on:
//! connect, run the handshake on the
//! cluster secret (after which every frame is sealed, see
//! `dipc_common::secure`), join, then a heartbeat every
//! `heartbeat_interval_ms`. A link that goes quiet for
//! `heartbeat_timeout_ms` or breaks is dropped and re-opened with backoff,
//! so a restarted referee sees every host again within moments. An explicit
//! refusal (wrong secret, address not allowed) is fatal: retrying cannot
//! fix a configuration error, and a host that silently stays out of the
//! cluster is worse than one that stops and says why.

use crate::outbox::Outbox;
use dipc_common::auth::{AuthError, ClientHandshake, Secret};
use dipc_common::config::{Config, REFEREE_RETRY_MAX};
use dipc_common::net::{connect_from, Stream};
use dipc_common::reactor::{ConnId, Gone, ListenerId, Out};
use dipc_common::silence::Silence;
use dipc_common::wire::{IpcKind, Message, Role};
use log::{debug, info, warn};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// Short: a restarted referee holds back "no such key" answers until every
/// host had time to come back and claim its keys (`Config::referee_settle`).
const MAX_BACKOFF: Duration = REFEREE_RETRY_MAX;

/// The errno of the answer a relayed request gets when the link breaks
/// before the referee's: the referee may have acted on it or not (the
/// referee's own refusals use other errnos).
pub const LOST: i32 = libc::ECONNRESET;

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
    pub client: ConnId,
    pub id: u64,
    /// The key asked for, for a `KeyGet`.
    pub key: Option<(IpcKind, i32)>,
    /// What the back_end must do with the reply besides passing it on.
    pub then: Then,
}

impl Relayed {
    /// A request no client waits for (an abort, an unregistration, what
    /// dipcd restores after a join).
    pub fn nobody() -> Relayed {
        Relayed {
            client: crate::daemon::NO_CLIENT,
            id: 0,
            key: None,
            then: Then::Nothing,
        }
    }
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
    /// The reactor's class of the link's connection (its frame bound and
    /// keep-alives).
    class: ListenerId,
    state: State,
    conn: Option<ConnId>,
    backoff: Duration,
    last_heard: Instant,
    /// The referee's silence while joined (see `dipc_common::silence`).
    silence: Silence,
    /// Set when a look found the referee silent past the time-out: its
    /// frames may wait unread behind a long turn of ours, so the reactor
    /// polls once more before the link is dropped.
    suspect: Option<Instant>,
    next_heartbeat: Instant,
    next_id: u64,
    /// Relayed requests by our request id.
    pending: HashMap<u64, Relayed>,
}

impl Link {
    pub fn new(class: ListenerId, now: Instant) -> Link {
        Link {
            class,
            state: State::Idle(now),
            conn: None,
            backoff: MIN_BACKOFF,
            last_heard: now,
            silence: Silence::new(now),
            suspect: None,
            next_heartbeat: now,
            next_id: 1,
            pending: HashMap::new(),
        }
    }

    pub fn is_joined(&self) -> bool {
        matches!(self.state, State::Joined)
    }

    /// Whether `conn` is the link's connection.
    pub fn is(&self, conn: ConnId) -> bool {
        self.conn == Some(conn)
    }

    /// When the daemon must next call [`Link::tick`].
    pub fn deadline(&self, config: &Config) -> Instant {
        match self.state {
            State::Idle(at) => at,
            State::Joined => match self.suspect {
                Some(at) => at,
                None => self
                    .next_heartbeat
                    .min(self.last_heard + config.timeouts.heartbeat_timeout),
            },
            _ => self.last_heard + config.timeouts.connect.max(config.timeouts.request),
        }
    }

    /// Relays a request for a local client. Returns false if the link is
    /// not up.
    pub fn relay(&mut self, io: &mut Outbox, to: Relayed, msg: &Message) -> bool {
        let (State::Joined, Some(conn)) = (&self.state, self.conn) else {
            return false;
        };
        let ours = self.next_id;
        self.next_id += 1;
        io.send(conn, ours, msg);
        self.pending.insert(ours, to);
        true
    }

    /// Sends a message that takes no answer (request id 0), such as the
    /// load report. Returns false if the link is not up.
    pub fn push(&mut self, io: &mut Outbox, msg: &Message) -> bool {
        let (State::Joined, Some(conn)) = (&self.state, self.conn) else {
            return false;
        };
        io.send(conn, 0, msg);
        true
    }

    /// Timers: start a connection, send a heartbeat, or give up on a
    /// silent referee. Returns whether a heartbeat went out (the load
    /// report goes with it). `out` opens the connection; everything else
    /// goes through `io`, which the caller has drained before (see
    /// [`Outbox`]).
    pub fn tick(
        &mut self,
        now: Instant,
        (io, out): (&mut Outbox, &mut dyn Out),
        config: &Config,
        events: &mut Vec<LinkEvent>,
    ) -> bool {
        let mut beat = false;
        match &self.state {
            State::Idle(at) if now >= *at => self.connect(now, io, out, config, events),
            State::Idle(_) => {}
            State::Joined => {
                // The loop looks at least every heartbeat interval (its
                // deadline); a longer gap is this daemon's own stall.
                let step = config.timeouts.heartbeat_interval * 2;
                let timeout = config.timeouts.heartbeat_timeout;
                if self.silence.look(now, step) > timeout {
                    if self.suspect.is_none() {
                        // The referee's frames may be waiting unread behind
                        // a long turn of ours: one more poll reads them
                        // before it is blamed.
                        self.suspect = Some(now);
                    } else {
                        warn!(
                            "referee silent for {} ms; reconnecting",
                            config.timeouts.heartbeat_timeout.as_millis()
                        );
                        self.reset(now, io, events);
                    }
                } else if now >= self.next_heartbeat {
                    self.next_heartbeat = now + config.timeouts.heartbeat_interval;
                    if let Some(c) = self.conn {
                        io.send(c, 0, &Message::Heartbeat);
                        beat = true;
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
                    self.reset(now, io, events);
                }
            }
        }
        beat
    }

    fn connect(
        &mut self,
        now: Instant,
        io: &mut Outbox,
        out: &mut dyn Out,
        config: &Config,
        events: &mut Vec<LinkEvent>,
    ) {
        let referee = config.referee_addr();
        // Keep-alives that notice a dead referee come with the class.
        let attempt = connect_from(config.host.address, referee, None)
            .and_then(|s| out.connect(Stream::Tcp(mio::net::TcpStream::from_std(s)), self.class));
        match attempt {
            Ok(conn) => {
                self.conn = Some(conn);
                self.last_heard = now;
                self.silence.heard(now);
                self.suspect = None;
                self.state = State::Connecting;
            }
            Err(e) => {
                debug!("cannot reach the referee at {referee}: {e}");
                self.reset(now, io, events);
            }
        }
    }

    /// Drops the connection and schedules the next attempt. Relayed requests
    /// in flight get an error.
    fn reset(&mut self, now: Instant, io: &mut Outbox, events: &mut Vec<LinkEvent>) {
        if let Some(c) = self.conn.take() {
            io.close(c);
        }
        for (_, to) in self.pending.drain() {
            events.push(LinkEvent::Reply {
                to,
                msg: Message::error(LOST, "connection to the referee lost"),
            });
        }
        if self.is_joined() {
            warn!("lost the referee; reconnecting");
        }
        self.suspect = None;
        self.state = State::Idle(now + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// The link's connection is established: the handshake starts.
    pub fn connected(
        &mut self,
        now: Instant,
        io: &mut Outbox,
        (config, secret): (&Config, &Secret),
        events: &mut Vec<LinkEvent>,
    ) {
        let (Some(conn), State::Connecting) = (self.conn, &self.state) else {
            return;
        };
        match ClientHandshake::start(secret, Role::Host, config.front_end_addr()) {
            Ok((hs, hello)) => {
                io.send(conn, 0, &hello);
                self.state = State::AwaitHandshake(Box::new(hs));
            }
            Err(e) => {
                warn!("referee link: {e}");
                self.reset(now, io, events);
            }
        }
    }

    /// The link's connection is gone (the reactor saw it end).
    pub fn closed(
        &mut self,
        now: Instant,
        why: Gone,
        io: &mut Outbox,
        config: &Config,
        events: &mut Vec<LinkEvent>,
    ) {
        self.conn = None;
        match why {
            Gone::Local => return,
            Gone::Io(e) if matches!(self.state, State::Connecting) => {
                debug!("cannot reach the referee at {}: {e}", config.referee_addr())
            }
            Gone::Io(e) => debug!("referee link: {e}"),
            Gone::Protocol(e) => warn!("referee link: protocol error: {e}"),
            Gone::Stalled => debug!("referee link: stalled mid-frame"),
            Gone::Peer => {}
        }
        if matches!(self.state, State::AwaitHandshake(_)) {
            // The referee drops a peer it does not allow without a word.
            warn!(
                "the referee at {} closed the connection before authentication; is {} in its cluster.allowed_hosts?",
                config.referee_addr(),
                config.host.address
            );
        }
        self.reset(now, io, events);
    }

    /// A frame from the referee.
    pub fn frame(
        &mut self,
        now: Instant,
        (id, msg): (u64, Message),
        io: &mut Outbox,
        config: &Config,
        events: &mut Vec<LinkEvent>,
    ) {
        self.last_heard = now;
        self.silence.heard(now);
        self.suspect = None;
        if let Err(fatal) = self.handle(now, id, msg, io, config, events) {
            events.push(LinkEvent::Fatal(fatal));
            self.reset(now, io, events);
        }
    }

    fn handle(
        &mut self,
        now: Instant,
        id: u64,
        msg: Message,
        io: &mut Outbox,
        config: &Config,
        events: &mut Vec<LinkEvent>,
    ) -> Result<(), String> {
        let referee = config.referee_addr();
        let state = std::mem::replace(&mut self.state, State::AwaitJoined);
        let Some(conn) = self.conn else {
            self.state = state;
            return Ok(());
        };
        self.state = match state {
            State::AwaitHandshake(hs) => match hs.on_reply(&msg) {
                Ok(secure) => {
                    io.secure(conn, secure);
                    io.send(
                        conn,
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
                    events.push(LinkEvent::Joined);
                    self.backoff = MIN_BACKOFF;
                    self.next_heartbeat = now + config.timeouts.heartbeat_interval;
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
                        Some(to) => events.push(LinkEvent::Reply { to, msg }),
                        None if id == 0 => events.push(LinkEvent::Push(msg)),
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
mod tests;
