//! The referee: the cluster's name server, one per cluster, on the arbiter
//! host.
//!
//! It keeps the tables every host needs to agree on — hosts ([`hosts`]),
//! distributed keys ([`keys`]) and registered processes ([`pids`]) — and
//! serves two kinds of peer on the shared event loop
//! (`dipc_common::reactor`), single-threaded:
//!
//! - each host's back_end, over TCP: after the address allow-list and the
//!   handshake on the cluster secret (see `dipc_common::auth`; only the
//!   `Host` role is served here), every frame travels sealed by the
//!   connection's secure channel. The host sends `Join` for the front_end
//!   address it stated in the handshake, which must be the connection's
//!   source address, and nothing else is taken before it: a link speaks
//!   for its own host only. Then a `Heartbeat` every
//!   `heartbeat_interval_ms`; a host silent for `heartbeat_timeout_ms`,
//!   or whose connection closes, is marked down;
//! - administrators, over the *back door*: a Unix socket in the runtime
//!   directory (`referee.sock`), open to root and to the `admin_group`
//!   (checked with SO_PEERCRED), which `dipcref` talks to.
//!
//! Back_ends also relay administrative requests from `dipcref` on their own
//! host over their joined link, after checking the caller's credentials
//! themselves (root and `admin_group`): a joined link vouches for them.
//! An employer's connection (another role) is refused at the handshake.
//!
//! Its tables live in memory only. When it starts (again), every host
//! rejoins within moments and claims the keys it owns (`KeyClaim`) and
//! restores its registered processes; for `Config::referee_settle` after
//! its start the referee *parks* the requests whose answer depends on
//! what hosts have not told it yet (a get of a key it does not know, a new
//! pid_d) and answers them once a host claims the key or the period ends.

pub mod balance;
pub mod hosts;
pub mod keys;
pub mod pids;
mod requests;
#[cfg(test)]
mod sim;

use dipc_common::auth::{self, Secret};
use dipc_common::config::Config;
use dipc_common::reactor::{self, ConnId, Event, Gone, Handler, Listener, Out, Peer, Reactor};
use dipc_common::sys;
use dipc_common::wire::{IpcKind, Message, Protocol, Role, ToReferee};
use hosts::HostTable;
use keys::{ClaimRefused, KeyTable, Removal, Reply};
use log::{debug, error, info, warn};
use mio::net::{TcpListener, UnixListener};
use nix::sys::signal::Signal;
use pids::{PidTable, Registration};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Connections beyond this are refused, so a flood cannot exhaust memory
/// or descriptors.
const MAX_CONNS: usize = 4096;
/// Requests parked while the referee settles; beyond this they get
/// `EAGAIN` at once rather than memory.
const MAX_PARKED: usize = 65536;
/// The reactor's listeners, in the order `serve` adds them.
const TCP: usize = 0;
const BACK_DOOR: usize = 1;

enum PeerKind {
    /// Another daemon, by source address.
    Tcp(IpAddr),
    /// A local administrator on the back door.
    Admin,
}

enum State {
    AwaitHello,
    /// Authenticated; `stated` is the front_end address the handshake
    /// named (`None` on the back door), `host` is set once it has joined.
    Ready {
        stated: Option<SocketAddr>,
        host: Option<SocketAddr>,
    },
}

struct Conn {
    peer: PeerKind,
    state: State,
    /// The handshake must finish by then.
    deadline: Option<Instant>,
}

/// The referee's logic (see the module docs), driven by the reactor's
/// events.
pub struct Referee<'a> {
    config: &'a Config,
    secret: Secret,
    /// Who may use the back door besides root.
    admin_gid: Option<u32>,
    /// The back door's path, removed on the way out.
    door_path: PathBuf,
    conns: HashMap<ConnId, Conn>,
    hosts: HostTable,
    keys: KeyTable,
    pids: PidTable,
    /// Until then, requests that need every host's claims are parked.
    settle_until: Instant,
    parked: Vec<Parked>,
    /// Hosts' loads and the load balancer (see [`balance`]).
    balance: balance::Balancer,
    /// When the balancer's current window ends.
    next_balance: Instant,
    /// When the hosts' silences and the handshakes' deadlines are looked
    /// at next.
    next_sweep: Instant,
}

/// A request held back while the referee settles (see the module docs).
struct Parked {
    conn: ConnId,
    id: u64,
    /// The joined host that asked.
    host: SocketAddr,
    msg: ToReferee,
}

/// Runs the referee until SIGTERM or SIGINT; returns the exit code.
pub fn run(config: &Config, secret: Secret) -> i32 {
    match serve(config, secret) {
        Ok(code) => code,
        Err(e) => {
            error!("referee: {e}");
            1
        }
    }
}

/// How often the referee sweeps: often enough that a silent host is marked
/// down close to its time-out.
fn sweep_tick(config: &Config) -> Duration {
    (config.timeouts.heartbeat_interval / 2).max(Duration::from_millis(20))
}

fn serve(config: &Config, secret: Secret) -> io::Result<i32> {
    let mut r = Reactor::new(MAX_CONNS)?;
    r.watch_signals()?;
    let addr = config.referee_addr();
    let tcp = TcpListener::bind(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    let admin_gid = match &config.admin_group {
        Some(g) => Some(sys::group_gid(g)?),
        None => None,
    };
    let door_path = config.referee_socket();
    let door = UnixListener::from_std(sys::bind_unix(&door_path, 0o660, admin_gid)?);
    // A host's link also takes what other hosts' changes push to it; one
    // that reads none of it is dropped after a few maximal records.
    let opts = reactor::Options::server(config.max_frame, 4);
    let tcp_opts = reactor::Options {
        dead_after: Some(config.timeouts.heartbeat_timeout),
        ..opts.clone()
    };
    if r.listen(Listener::Tcp(tcp), tcp_opts)? != TCP
        || r.listen(Listener::Unix(door), opts)? != BACK_DOOR
    {
        return Err(io::Error::other("listeners out of order"));
    }
    info!(
        "referee listening on {addr}, back door {}",
        door_path.display()
    );
    if config.balance.enabled {
        info!(
            "referee: load balancer on: every {} ms, threshold {} thousandths of a CPU, \
             processes stay {} ms at least",
            config.balance.interval.as_millis(),
            config.balance.threshold_milli,
            config.balance.min_stay.as_millis()
        );
    }
    info!(
        "referee: unknown keys and new pid_d wait {} ms for the hosts to rejoin",
        config.referee_settle().as_millis()
    );
    let mut referee = Referee::new(config, secret, admin_gid, Instant::now());
    referee.door_path = door_path;
    r.run(&mut referee)
}

impl Handler for Referee<'_> {
    fn event(&mut self, now: Instant, ev: Event, out: &mut dyn Out) {
        match ev {
            Event::Accepted {
                conn,
                listener,
                peer,
            } => self.accepted(now, conn, listener, peer, out),
            Event::Frame { conn, id, msg, .. } => {
                let Some(mut c) = self.conns.remove(&conn) else {
                    return;
                };
                self.handle(now, (conn, &mut c), id, msg, out);
                self.conns.insert(conn, c);
            }
            Event::Closed { conn, why } => {
                let Some(c) = self.conns.remove(&conn) else {
                    return;
                };
                match why {
                    Gone::Protocol(e) => {
                        warn!("referee: {}: protocol error: {e}", describe(&c));
                        out.send(conn, 0, &Message::error(libc::EPROTO, e));
                    }
                    Gone::Io(e) => debug!("referee: connection {conn}: {e}"),
                    Gone::Peer | Gone::Local | Gone::Stalled => {}
                }
                self.drop_conn(now, conn, c, out);
            }
            Event::Signal(sig @ (Signal::SIGTERM | Signal::SIGINT)) => {
                info!("referee: {sig} received, exiting");
                if !self.door_path.as_os_str().is_empty() {
                    let _ = std::fs::remove_file(&self.door_path);
                }
                out.stop(0);
            }
            Event::Signal(_) | Event::Child { .. } => {}
            // It opens and watches nothing of its own.
            Event::Connected { .. } | Event::Ready { .. } => {}
            Event::Tick => {
                if now >= self.next_sweep {
                    self.sweep(now, out);
                    self.next_sweep = now + sweep_tick(self.config);
                }
                if !self.parked.is_empty() && now >= self.settle_until {
                    self.replay_parked(now, out);
                }
            }
        }
    }

    fn wake_at(&self) -> Option<Instant> {
        Some(match self.parked.is_empty() {
            true => self.next_sweep,
            false => self.next_sweep.min(self.settle_until),
        })
    }
}

impl<'a> Referee<'a> {
    /// A referee that started at `now`, with empty tables.
    pub fn new(
        config: &'a Config,
        secret: Secret,
        admin_gid: Option<u32>,
        now: Instant,
    ) -> Referee<'a> {
        Referee {
            config,
            secret,
            admin_gid,
            door_path: PathBuf::new(),
            conns: HashMap::new(),
            hosts: HostTable::default(),
            keys: KeyTable::default(),
            pids: PidTable::default(),
            settle_until: now + config.referee_settle(),
            parked: Vec::new(),
            balance: balance::Balancer::default(),
            next_balance: now + config.balance.interval,
            next_sweep: now + sweep_tick(config),
        }
    }

    fn accepted(
        &mut self,
        now: Instant,
        conn: ConnId,
        listener: usize,
        peer: Peer,
        out: &mut dyn Out,
    ) {
        match (listener, peer) {
            (TCP, Peer::Tcp(from)) => {
                let ip = from.ip();
                if !self.config.is_allowed(ip) {
                    warn!("refused connection from {ip}: address not in allowed_hosts");
                    return out.close(conn);
                }
                self.conns.insert(
                    conn,
                    Conn {
                        peer: PeerKind::Tcp(ip),
                        state: State::AwaitHello,
                        deadline: Some(now + self.config.timeouts.request),
                    },
                );
            }
            (BACK_DOOR, Peer::Unix(Ok(creds))) if sys::is_admin(&creds.cred, self.admin_gid) => {
                self.conns.insert(
                    conn,
                    Conn {
                        peer: PeerKind::Admin,
                        state: State::Ready {
                            stated: None,
                            host: None,
                        },
                        deadline: None,
                    },
                );
            }
            (BACK_DOOR, Peer::Unix(Ok(creds))) => {
                let cred = creds.cred;
                warn!(
                    "referee back door: refused uid {} gid {} (pid {}): not root or admin_group",
                    cred.uid, cred.gid, cred.pid
                );
                out.send(
                    conn,
                    0,
                    &Message::error(
                        libc::EACCES,
                        "the referee's back door is open to root and admin_group only",
                    ),
                );
                out.close(conn);
            }
            (_, Peer::Unix(Err(e))) => {
                warn!("referee back door: no peer credentials: {e}");
                out.close(conn);
            }
            (_, _) => out.close(conn),
        }
    }

    fn refuse(&self, out: &mut dyn Out, (t, c): (ConnId, &Conn), reason: &str) {
        match c.peer {
            PeerKind::Tcp(ip) => warn!("refused connection from {ip}: {reason}"),
            PeerKind::Admin => warn!("referee back door: {reason}"),
        }
        out.send(
            t,
            0,
            &Message::Refused {
                reason: reason.to_owned(),
            },
        );
        out.close(t);
    }

    /// Releases what a connection held: the keys it was granted and did
    /// not commit, and for a joined host its link.
    fn drop_conn(&mut self, now: Instant, t: ConnId, c: Conn, out: &mut dyn Out) {
        let replies = self.keys.conn_closed(t, now);
        self.deliver(out, replies);
        if let State::Ready { host: Some(h), .. } = c.state {
            if self.hosts.disconnected(&h, t) {
                info!("host {h} down: connection closed");
            }
            self.balance.host_gone(&h);
            // Its dipcd no longer watches these processes for us.
            let n = self.pids.conn_closed(t);
            if n > 0 {
                info!("host {h}: {n} registered processes dropped with its connection");
            }
        }
    }

    /// The longest gap between two sweeps that counts in full towards a
    /// host's silence: two sweep ticks (see `serve`); a longer one is the
    /// referee's own stall.
    fn sweep_step(&self) -> Duration {
        sweep_tick(self.config) * 2
    }

    fn sweep(&mut self, now: Instant, out: &mut dyn Out) {
        for (addr, conn) in self.hosts.expire(
            now,
            self.config.timeouts.heartbeat_timeout,
            self.sweep_step(),
        ) {
            info!(
                "host {addr} down: no heartbeat for {} ms",
                self.config.timeouts.heartbeat_timeout.as_millis()
            );
            if let Some(t) = conn {
                out.close(t);
            }
        }
        if now >= self.next_balance {
            self.balance_round(now, out);
            self.next_balance = now + self.config.balance.interval;
        }
        let replies = self.keys.expire(now, self.config.timeouts.request);
        self.deliver(out, replies);
        for (t, c) in &self.conns {
            if c.deadline.is_some_and(|d| now > d) {
                warn!("referee: {}: handshake not finished in time", describe(c));
                out.close(*t);
            }
        }
    }

    /// Ends the balancer's window and asks for the moves it decides, as
    /// `dipcref migrate` does: a `MoveAsk` pushed to the process's host.
    fn balance_round(&mut self, now: Instant, out: &mut dyn Out) {
        let up: Vec<SocketAddr> = self
            .hosts
            .snapshot(now)
            .into_iter()
            .filter(|h| h.up)
            .map(|h| h.addr)
            .collect();
        let timeout =
            balance::move_timeout(self.config.balance.interval, self.config.timeouts.request);
        let pids = &self.pids;
        let moves = self
            .balance
            .round(now, &self.config.balance, timeout, &up, |pid_d| {
                pids.lookup(pid_d, now).map(|r| r.host)
            });
        for d in moves {
            let asked = match self.pids.may_move(d.pid_d, 0, true) {
                Ok((conn, _)) if self.pids.lookup(d.pid_d, now).map(|r| r.host) == Some(d.from) => {
                    let ask = Message::MoveAsk {
                        pid_d: d.pid_d,
                        target: d.to,
                        uid: 0,
                        admin: true,
                    };
                    out.send(conn, 0, &ask);
                    self.conns.contains_key(&conn)
                }
                _ => false,
            };
            if !asked {
                info!(
                    "balance: cannot ask pid_d {} to move from {}: it is no longer there",
                    d.pid_d, d.from
                );
                self.balance.not_asked(&d);
            }
        }
    }
}

fn describe(c: &Conn) -> String {
    match (&c.peer, &c.state) {
        (_, State::Ready { host: Some(h), .. }) => format!("host {h}"),
        (PeerKind::Tcp(ip), _) => format!("peer {ip}"),
        (PeerKind::Admin, _) => "back door client".to_owned(),
    }
}

/// `Done` for a table change that was made, else its error.
fn done_or_error(r: Result<(), (i32, String)>) -> Message {
    match r {
        Ok(()) => Message::Done { value: 0 },
        Err((errno, why)) => Message::error(errno, why),
    }
}

#[cfg(test)]
mod tests;
