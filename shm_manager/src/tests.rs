//! The manager's connection-level logic driven by events and a made-up
//! clock, without sockets (the coherence rules themselves are `units`'s
//! tests; the protocol over a real socket is `tests/protocol.rs`).

use super::*;
use dipc_common::reactor::{Action, Harness};
use dipc_common::sys::PeerCred;
use dipc_common::wire::Origin;
use std::path::Path;

struct Segment(i32);

impl Drop for Segment {
    fn drop(&mut self) {
        let _ = sysv::shmctl_rmid(self.0);
    }
}

fn config() -> Config {
    let text = "[timeouts]\nrequest_ms = 1000\n[shm]\nmode = \"page\"\nquantum_ms = 0\n";
    Config::from_toml_str(text, Path::new("test.conf")).unwrap()
}

fn creds(uid: u32) -> Peer {
    Peer::Unix(Ok(Creds {
        cred: PeerCred {
            pid: 1,
            uid,
            gid: uid,
        },
        groups: Vec::new(),
    }))
}

type M<'a> = Harness<Manager<'a>>;

fn attach(m: &mut M, conn: ConnId, uid: u32) -> Vec<Action> {
    m.handle(Event::Accepted {
        conn,
        listener: 0,
        peer: creds(uid),
    });
    let id = m.handler.id;
    m.handle(Event::frame(
        conn,
        1,
        Message::ShmAttach {
            id,
            origin: Origin {
                key: 0,
                incarnation: 0,
            },
            readonly: false,
            handover: None,
        },
    ))
}

fn to(a: &[Action], conn: ConnId) -> Vec<&Message> {
    a.iter()
        .filter_map(|a| match a {
            Action::Send { conn: c, msg, .. } if *c == conn => Some(msg),
            _ => None,
        })
        .collect()
}

#[test]
fn a_participant_that_does_not_give_a_unit_back_in_time_is_dropped() {
    let id = sysv::shmget(libc::IPC_PRIVATE, 2 * 4096, libc::IPC_CREAT | 0o600).unwrap();
    let _seg = Segment(id);
    let config = config();
    let now = Instant::now();
    let mut m = Harness::new(Manager::new(id, &config).unwrap(), now);
    assert!(matches!(
        to(&attach(&mut m, 70, 0), 70).as_slice(),
        [Message::ShmAttached { .. }]
    ));
    attach(&mut m, 71, 0);
    // 70 writes unit 0; 71 wants to read it: 70 is asked for it back.
    let a = m.handle(Event::frame(
        70,
        2,
        Message::ShmFault {
            unit: 0,
            write: true,
        },
    ));
    assert!(
        a.iter()
            .any(|a| matches!(a, Action::SendEncoded { conn: 70, .. })),
        "the unit's content goes with the grant: {a:?}"
    );
    assert!(to(&a, 70).contains(&&Message::ShmGrant {
        unit: 0,
        write: true
    }));
    let a = m.handle(Event::frame(
        71,
        2,
        Message::ShmFault {
            unit: 0,
            write: false,
        },
    ));
    assert!(
        matches!(
            to(&a, 70).as_slice(),
            [Message::ShmRevoke {
                unit: 0,
                want_data: true,
                ..
            }]
        ),
        "{a:?}"
    );
    assert!(to(&a, 71).is_empty());
    // 70 says nothing. Not dropped before the request time-out...
    m.now = now + Duration::from_millis(999);
    assert!(!m
        .handle(Event::Tick)
        .iter()
        .any(|a| matches!(a, Action::Close { .. })));
    // ...but once past it.
    m.now = now + Duration::from_millis(1001);
    let a = m.handle(Event::Tick);
    assert!(
        a.iter().any(|a| matches!(a, Action::Close { conn: 70 })),
        "{a:?}"
    );
    // Once it is gone, 71 learns that the unit's content went with it.
    let a = m.handle(Event::Closed {
        conn: 70,
        why: Gone::Local,
    });
    assert_eq!(to(&a, 71), vec![&Message::ShmLost { unit: 0 }]);
    assert_eq!(m.handler.participants(), 1);
}

#[test]
fn a_refused_attach_is_answered_and_closed_once_written() {
    let id = sysv::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600).unwrap();
    let _seg = Segment(id);
    let config = config();
    let mut m = Harness::new(Manager::new(id, &config).unwrap(), Instant::now());
    let a = attach(&mut m, 70, 4242);
    assert!(
        matches!(to(&a, 70).as_slice(), [Message::Error { errno, .. }] if *errno == libc::EACCES),
        "{a:?}"
    );
    assert!(matches!(
        a.last(),
        Some(Action::CloseWhenFlushed { conn: 70 })
    ));
    assert_eq!(m.handler.participants(), 0);
}

/// A message that is not one an agent or a querier sends (a manager's own
/// `ShmGrant`, dipcd's `Ping`) closes its connection unanswered, whether it
/// comes first or from an attached participant; the other participant is
/// still served.
#[test]
fn a_message_of_another_protocol_is_refused_and_closes_the_link() {
    let id = sysv::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600).unwrap();
    let _seg = Segment(id);
    let config = config();
    let mut m = Harness::new(Manager::new(id, &config).unwrap(), Instant::now());
    m.handle(Event::Accepted {
        conn: 70,
        listener: 0,
        peer: creds(0),
    });
    let a = m.handle(Event::frame(70, 1, Message::Ping));
    assert!(
        matches!(a.as_slice(), [Action::Close { conn: 70 }]),
        "{a:?}"
    );
    attach(&mut m, 71, 0);
    attach(&mut m, 72, 0);
    let grant = Message::ShmGrant {
        unit: 0,
        write: true,
    };
    let a = m.handle(Event::frame(71, 2, grant.clone()));
    assert!(
        matches!(a.as_slice(), [Action::Close { conn: 71 }]),
        "{a:?}"
    );
    for conn in [70, 71] {
        m.handle(Event::Closed {
            conn,
            why: Gone::Local,
        });
    }
    assert_eq!(m.handler.participants(), 1);
    let a = m.handle(Event::frame(
        72,
        2,
        Message::ShmFault {
            unit: 0,
            write: true,
        },
    ));
    assert!(to(&a, 72).contains(&&grant), "{a:?}");
}
