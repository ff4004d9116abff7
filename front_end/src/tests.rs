//! The front_end's logic driven by events, without sockets: what it does
//! with a connection is read from the actions it asks of the reactor.

use super::*;
use dipc_common::auth::ClientHandshake;
use dipc_common::reactor::{Action, Harness};
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

type Fe<'a> = Harness<FrontEnd<'a>>;

fn accept(fe: &mut Fe, conn: ConnId, peer: Peer) -> Vec<Action> {
    fe.handle(Event::Accepted {
        conn,
        listener: 0,
        peer,
    })
}

/// Accepts `conn` from host `i` and runs its handshake.
fn authenticated(fe: &mut Fe, conn: ConnId, i: u8) {
    assert!(accept(fe, conn, addr(i)).is_empty());
    let a = fe.handle(Event::frame(conn, 1, hello(&secret())));
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
        let mut $fe = Harness::new(FrontEnd::new(&config, &secret, 1), Instant::now());
    };
}

#[test]
fn a_handshake_not_finished_in_time_is_dropped() {
    front_end!(fe);
    accept(&mut fe, 100, addr(2));
    let start = fe.now;
    assert_eq!(
        fe.handler.wake_at(),
        Some(start + Duration::from_millis(500))
    );
    fe.now = start + Duration::from_millis(499);
    assert!(fe.handle(Event::Tick).is_empty());
    fe.now = start + Duration::from_millis(500);
    assert!(closed(&fe.handle(Event::Tick), 100));
    assert_eq!(fe.handler.wake_at(), None);
    // Nor does the session's first frame wait for ever after the handshake.
    fe.now = start;
    authenticated(&mut fe, 101, 2);
    fe.now = start + Duration::from_millis(500);
    assert!(closed(&fe.handle(Event::Tick), 101));
}

#[test]
fn one_address_holds_a_bounded_share_of_the_connections_in_their_handshake() {
    front_end!(fe);
    for conn in 0..MAX_PENDING_PER_HOST {
        assert!(accept(&mut fe, conn, addr(2)).is_empty());
    }
    assert!(closed(&accept(&mut fe, 1000, addr(2)), 1000));
    // Another host is still served.
    assert!(accept(&mut fe, 1001, addr(3)).is_empty());
    // Once one of the first host's connections is gone, it may open one.
    fe.handle(Event::Closed {
        conn: 0,
        why: Gone::Peer,
    });
    assert!(accept(&mut fe, 1002, addr(2)).is_empty());
}

#[test]
fn an_address_not_allowed_is_closed_at_once() {
    front_end!(fe);
    let outside = Peer::Tcp(SocketAddr::from(([192, 168, 1, 1], 40000)));
    assert!(closed(&accept(&mut fe, 5, outside), 5));
    assert_eq!(fe.handler.wake_at(), None);
}

#[test]
fn a_caller_without_the_secret_is_refused() {
    front_end!(fe);
    accept(&mut fe, 5, addr(2));
    let wrong = Secret::from_bytes(&[8; 32]).unwrap();
    let a = fe.handle(Event::frame(5, 1, hello(&wrong)));
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
    authenticated(&mut fe, 1, 2);
    let a = fe.handle(Event::frame(1, 2, session(1000)));
    assert!(matches!(a.as_slice(), [Action::Take { conn: 1 }]), "{a:?}");
    let ip: IpAddr = [10, 66, 0, 2].into();
    fe.handler.worker_started(500, ip, 1000);
    fe.handler.worker_started(501, ip, 1000);
    // Host 2 holds workers_per_host (2) sessions.
    authenticated(&mut fe, 2, 2);
    let a = fe.handle(Event::frame(2, 2, session(1001)));
    assert_eq!(errno_sent(&a), Some(libc::EAGAIN), "{a:?}");
    assert!(closed(&a, 2));
    // Uid 1000 holds 2 of its 3; a third from another host is fine, a
    // fourth is not.
    authenticated(&mut fe, 3, 3);
    assert!(matches!(
        fe.handle(Event::frame(3, 2, session(1000))).as_slice(),
        [Action::Take { conn: 3 }]
    ));
    fe.handler.worker_started(502, [10, 66, 0, 3].into(), 1000);
    authenticated(&mut fe, 4, 4);
    let a = fe.handle(Event::frame(4, 2, session(1000)));
    assert_eq!(errno_sent(&a), Some(libc::EAGAIN), "{a:?}");
    // Root is not counted per uid.
    authenticated(&mut fe, 5, 4);
    assert!(matches!(
        fe.handle(Event::frame(5, 2, session(0))).as_slice(),
        [Action::Take { conn: 5 }]
    ));
    // A worker that exits frees its host's slot.
    fe.handle(Event::Child {
        pid: 500,
        status: nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(500), 0),
    });
    authenticated(&mut fe, 6, 2);
    assert!(matches!(
        fe.handle(Event::frame(6, 2, session(1001))).as_slice(),
        [Action::Take { conn: 6 }]
    ));
}

#[test]
fn a_session_must_begin_with_session() {
    front_end!(fe);
    authenticated(&mut fe, 1, 2);
    let a = fe.handle(Event::frame(1, 2, Message::Ping));
    assert_eq!(errno_sent(&a), Some(libc::EPROTO), "{a:?}");
    assert!(closed(&a, 1));
}

#[test]
fn sigterm_stops_the_front_end() {
    front_end!(fe);
    let a = fe.handle(Event::Signal(Signal::SIGTERM));
    assert!(matches!(a.as_slice(), [Action::Stop(0)]), "{a:?}");
}

/// Before the handshake a connection may send only the handshake's first
/// message: another protocol's (an shm agent's `ShmDetach`) is refused by
/// name and closed. After it, anything but `Session` (here a manager's
/// `ShmGrant`, of no session's protocol) gets `EPROTO` and is closed.
#[test]
fn a_message_of_another_protocol_is_refused_and_closes_the_link() {
    front_end!(fe);
    accept(&mut fe, 5, addr(2));
    let a = fe.handle(Event::frame(5, 1, Message::ShmDetach));
    assert!(
        matches!(
            a.as_slice(),
            [Action::Send { conn: 5, id: 0, msg: Message::Refused { reason } }, Action::Close { conn: 5 }]
                if reason == "unexpected ShmDetach during authentication"
        ),
        "{a:?}"
    );
    assert_eq!(fe.handler.wake_at(), None);
    authenticated(&mut fe, 6, 2);
    let a = fe.handle(Event::frame(
        6,
        2,
        Message::ShmGrant {
            unit: 0,
            write: false,
        },
    ));
    assert!(
        matches!(
            a.as_slice(),
            [Action::Send { conn: 6, id: 2, msg: Message::Error { errno, message } }, Action::Close { conn: 6 }]
                if *errno == libc::EPROTO && message == "a session begins with Session"
        ),
        "{a:?}"
    );
}
