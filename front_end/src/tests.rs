//! The front_end's logic driven by events, without sockets: what it does
//! with a connection is read from the actions it asks of the reactor.

use super::*;
use dipc_common::auth::ClientHandshake;
use dipc_common::reactor::{Action, Recorder};
use std::net::SocketAddr;
use std::time::Duration;

fn config() -> Config {
    let mut c = Config {
        allowed_hosts: vec!["10.66.0.0/24".parse().unwrap()],
        ..Config::default()
    };
    c.timeouts.request = Duration::from_millis(500);
    c.limits.workers_per_host = 2;
    c.limits.sessions_per_uid = 3;
    c
}

fn secret() -> Secret {
    Secret::from_bytes(&[7; 32]).unwrap()
}

fn addr(i: u8) -> Peer {
    Peer::Tcp(SocketAddr::from(([10, 66, 0, i], 40000)))
}

fn hello(secret: &Secret) -> Message {
    let me = SocketAddr::from(([10, 66, 0, 9], 7100));
    ClientHandshake::start(secret, Role::Employer, me)
        .unwrap()
        .1
}

fn session(uid: u32) -> Message {
    Message::Session {
        pid: 42,
        uid,
        gid: uid,
        groups: Vec::new(),
    }
}

struct Fe<'a> {
    fe: FrontEnd<'a>,
    out: Recorder,
    now: Instant,
}

impl Fe<'_> {
    fn ev(&mut self, ev: Event) -> Vec<Action> {
        self.fe.event(self.now, ev, &mut self.out);
        self.out.take_all()
    }

    fn accept(&mut self, conn: ConnId, peer: Peer) -> Vec<Action> {
        self.ev(Event::Accepted {
            conn,
            listener: 0,
            peer,
        })
    }

    fn frame(&mut self, conn: ConnId, id: u64, msg: Message) -> Vec<Action> {
        self.ev(Event::Frame {
            conn,
            id,
            msg,
            fds: Vec::new(),
        })
    }

    /// Accepts `conn` from host `i` and runs its handshake.
    fn authenticated(&mut self, conn: ConnId, i: u8) {
        assert!(self.accept(conn, addr(i)).is_empty());
        let a = self.frame(conn, 1, hello(&secret()));
        assert!(
            matches!(
                a.as_slice(),
                [
                    Action::Send {
                        msg: Message::Handshake { .. },
                        ..
                    },
                    Action::Secure { .. }
                ]
            ),
            "{a:?}"
        );
    }
}

fn closed(a: &[Action], conn: ConnId) -> bool {
    a.iter()
        .any(|a| matches!(a, Action::Close { conn: c } if *c == conn))
}

fn errno_sent(a: &[Action]) -> Option<i32> {
    a.iter().find_map(|a| match a {
        Action::Send {
            msg: Message::Error { errno, .. },
            ..
        } => Some(*errno),
        _ => None,
    })
}

macro_rules! front_end {
    ($fe:ident) => {
        let config = config();
        let secret = secret();
        let mut $fe = Fe {
            fe: FrontEnd::new(&config, &secret, 1),
            out: Recorder::default(),
            now: Instant::now(),
        };
    };
}

#[test]
fn a_handshake_not_finished_in_time_is_dropped() {
    front_end!(fe);
    fe.accept(100, addr(2));
    let start = fe.now;
    assert_eq!(fe.fe.wake_at(), Some(start + Duration::from_millis(500)));
    fe.now = start + Duration::from_millis(499);
    assert!(fe.ev(Event::Tick).is_empty());
    fe.now = start + Duration::from_millis(500);
    assert!(closed(&fe.ev(Event::Tick), 100));
    assert_eq!(fe.fe.wake_at(), None);
    // Nor does the session's first frame wait for ever after the handshake.
    fe.now = start;
    fe.authenticated(101, 2);
    fe.now = start + Duration::from_millis(500);
    assert!(closed(&fe.ev(Event::Tick), 101));
}

#[test]
fn one_address_holds_a_bounded_share_of_the_connections_in_their_handshake() {
    front_end!(fe);
    for conn in 0..MAX_PENDING_PER_HOST {
        assert!(fe.accept(conn, addr(2)).is_empty());
    }
    assert!(closed(&fe.accept(1000, addr(2)), 1000));
    // Another host is still served.
    assert!(fe.accept(1001, addr(3)).is_empty());
    // Once one of the first host's connections is gone, it may open one.
    fe.ev(Event::Closed {
        conn: 0,
        why: Gone::Peer,
    });
    assert!(fe.accept(1002, addr(2)).is_empty());
}

#[test]
fn an_address_not_allowed_is_closed_at_once() {
    front_end!(fe);
    let outside = Peer::Tcp(SocketAddr::from(([192, 168, 1, 1], 40000)));
    assert!(closed(&fe.accept(5, outside), 5));
    assert_eq!(fe.fe.wake_at(), None);
}

#[test]
fn a_caller_without_the_secret_is_refused() {
    front_end!(fe);
    fe.accept(5, addr(2));
    let wrong = Secret::from_bytes(&[8; 32]).unwrap();
    let a = fe.frame(5, 1, hello(&wrong));
    assert!(
        matches!(
            &a[0],
            Action::Send {
                msg: Message::Refused { .. },
                ..
            }
        ),
        "{a:?}"
    );
    assert!(closed(&a, 5));
}

#[test]
fn a_session_goes_to_a_worker_unless_a_limit_says_eagain() {
    front_end!(fe);
    fe.authenticated(1, 2);
    let a = fe.frame(1, 2, session(1000));
    assert!(matches!(a.as_slice(), [Action::Take { conn: 1 }]), "{a:?}");
    let ip: IpAddr = [10, 66, 0, 2].into();
    fe.fe.worker_started(500, ip, 1000);
    fe.fe.worker_started(501, ip, 1000);
    // Host 2 holds workers_per_host (2) sessions.
    fe.authenticated(2, 2);
    let a = fe.frame(2, 2, session(1001));
    assert_eq!(errno_sent(&a), Some(libc::EAGAIN), "{a:?}");
    assert!(closed(&a, 2));
    // Uid 1000 holds 2 of its 3; a third from another host is fine, a
    // fourth is not.
    fe.authenticated(3, 3);
    assert!(matches!(
        fe.frame(3, 2, session(1000)).as_slice(),
        [Action::Take { conn: 3 }]
    ));
    fe.fe.worker_started(502, [10, 66, 0, 3].into(), 1000);
    fe.authenticated(4, 4);
    let a = fe.frame(4, 2, session(1000));
    assert_eq!(errno_sent(&a), Some(libc::EAGAIN), "{a:?}");
    // Root is not counted per uid.
    fe.authenticated(5, 4);
    assert!(matches!(
        fe.frame(5, 2, session(0)).as_slice(),
        [Action::Take { conn: 5 }]
    ));
    // A worker that exits frees its host's slot.
    fe.ev(Event::Child {
        pid: 500,
        status: nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(500), 0),
    });
    fe.authenticated(6, 2);
    assert!(matches!(
        fe.frame(6, 2, session(1001)).as_slice(),
        [Action::Take { conn: 6 }]
    ));
}

#[test]
fn a_session_must_begin_with_session() {
    front_end!(fe);
    fe.authenticated(1, 2);
    let a = fe.frame(1, 2, Message::Ping);
    assert_eq!(errno_sent(&a), Some(libc::EPROTO), "{a:?}");
    assert!(closed(&a, 1));
}

#[test]
fn sigterm_stops_the_front_end() {
    front_end!(fe);
    let a = fe.ev(Event::Signal(Signal::SIGTERM));
    assert!(matches!(a.as_slice(), [Action::Stop(0)]), "{a:?}");
}

/// Before the handshake a connection may send only the handshake's first
/// message: another protocol's (an shm agent's `ShmDetach`) is refused by
/// name and closed. After it, anything but `Session` (here a manager's
/// `ShmGrant`, of no session's protocol) gets `EPROTO` and is closed.
#[test]
fn a_message_of_another_protocol_is_refused_and_closes_the_link() {
    front_end!(fe);
    fe.accept(5, addr(2));
    let a = fe.frame(5, 1, Message::ShmDetach);
    assert!(
        matches!(
            a.as_slice(),
            [Action::Send { conn: 5, id: 0, msg: Message::Refused { reason } }, Action::Close { conn: 5 }]
                if reason == "unexpected ShmDetach during authentication"
        ),
        "{a:?}"
    );
    assert_eq!(fe.fe.wake_at(), None);
    fe.authenticated(6, 2);
    let a = fe.frame(
        6,
        2,
        Message::ShmGrant {
            unit: 0,
            write: false,
        },
    );
    assert!(
        matches!(
            a.as_slice(),
            [Action::Send { conn: 6, id: 2, msg: Message::Error { errno, message } }, Action::Close { conn: 6 }]
                if *errno == libc::EPROTO && message == "a session begins with Session"
        ),
        "{a:?}"
    );
}
