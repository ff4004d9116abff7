//! The referee's connection-level logic driven by events and a made-up
//! clock, without sockets: links joining, requests parked while the
//! referee settles, what a closed connection held.

use super::*;
use dipc_common::auth::ClientHandshake;
use dipc_common::reactor::{sent_to, Action, Creds, Harness};
use dipc_common::sys::PeerCred;

fn config() -> Config {
    Config {
        allowed_hosts: vec!["10.66.0.0/24".parse().unwrap()],
        ..Config::default()
    }
}

fn secret() -> Secret {
    Secret::from_bytes(&[7; 32]).unwrap()
}

fn front_end(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 66, 0, i], 7100))
}

type Ref<'a> = Harness<Referee<'a>>;

/// Host `i`'s link, on `conn`, through the handshake and `Join`.
fn join(r: &mut Ref, conn: ConnId, i: u8) {
    let from = SocketAddr::from(([10, 66, 0, i], 40000));
    assert!(r
        .handle(Event::Accepted {
            conn,
            listener: TCP,
            peer: Peer::Tcp(from),
        })
        .is_empty());
    let hello = ClientHandshake::start(&secret(), Role::Host, front_end(i))
        .unwrap()
        .1;
    let a = r.handle(Event::frame(conn, 1, hello));
    assert!(matches!(a[1], Action::Secure { .. }), "{a:?}");
    let joined = r.sent(
        conn,
        Event::frame(
            conn,
            2,
            Message::Join {
                front_end: front_end(i),
            },
        ),
    );
    assert_eq!(joined, vec![(2, Message::Joined)]);
}

fn get(r: &mut Ref, conn: ConnId, id: u64, key: i32, flags: i32) -> Vec<(u64, Message)> {
    let msg = Message::KeyGet {
        kind: IpcKind::Msg,
        key,
        flags,
    };
    r.sent(conn, Event::frame(conn, id, msg))
}

macro_rules! referee {
    ($r:ident) => {
        let config = config();
        let now = Instant::now();
        let mut $r = Harness::new(Referee::new(&config, secret(), None, now), now);
    };
}

fn owner_of(m: &Message) -> Option<(SocketAddr, i32)> {
    match m {
        Message::KeyOwner { owner, id, .. } => Some((*owner, *id)),
        _ => None,
    }
}

#[test]
fn a_get_parked_while_settling_is_answered_when_the_period_ends() {
    referee!(r);
    let settled = r.now + r.handler.config.referee_settle();
    join(&mut r, 100, 2);
    join(&mut r, 101, 3);
    // A key nobody has claimed yet: no answer now.
    assert!(get(&mut r, 100, 7, 5, 0).is_empty());
    assert!(r.handler.wake_at().is_some_and(|w| w <= settled));
    // Just before the period ends, key 5 is still parked.
    r.now = settled - Duration::from_millis(1);
    assert!(r.sent(100, Event::Tick).is_empty());
    r.now = settled;
    let replayed = r.sent(100, Event::Tick);
    assert!(
        matches!(replayed.as_slice(), [(7, Message::Error { errno, .. })] if *errno == libc::ENOENT),
        "{replayed:?}"
    );
    // Nothing is parked once settled.
    assert!(get(&mut r, 100, 9, 77, 0).len() == 1);
}

#[test]
fn a_claim_answers_the_gets_parked_for_its_key() {
    referee!(r);
    join(&mut r, 100, 2);
    join(&mut r, 101, 3);
    assert!(get(&mut r, 100, 8, 6, libc::IPC_CREAT).is_empty());
    let claim = Message::KeyClaim {
        kind: IpcKind::Msg,
        key: 6,
        id: 42,
        creator_uid: 0,
        incarnation: 9,
    };
    let a = r.handle(Event::frame(101, 3, claim));
    let to_asker = sent_to(&a, 100);
    let to_claimer = sent_to(&a, 101);
    assert_eq!(to_claimer, vec![(3, Message::Done { value: 0 })]);
    assert_eq!(to_asker.len(), 1, "{to_asker:?}");
    assert_eq!(to_asker[0].0, 8);
    assert_eq!(owner_of(&to_asker[0].1), Some((front_end(3), 42)));
}

#[test]
fn a_closed_connection_gives_up_its_creation_to_the_next_asker() {
    referee!(r);
    r.now += r.handler.config.referee_settle();
    join(&mut r, 100, 2);
    join(&mut r, 101, 3);
    // Host 2 wins the creation of key 9; host 3 waits behind it.
    let won = get(&mut r, 100, 1, 9, libc::IPC_CREAT);
    assert_eq!(won.len(), 1);
    assert_eq!(owner_of(&won[0].1), Some((front_end(2), -1)));
    assert!(get(&mut r, 101, 2, 9, libc::IPC_CREAT).is_empty());
    // Host 2's link closes before it commits: host 3 creates the key.
    let next = r.sent(
        101,
        Event::Closed {
            conn: 100,
            why: Gone::Peer,
        },
    );
    assert_eq!(next.len(), 1, "{next:?}");
    assert_eq!(next[0].0, 2);
    assert_eq!(owner_of(&next[0].1), Some((front_end(3), -1)));
}

#[test]
fn a_link_speaks_for_its_own_host_only() {
    referee!(r);
    let from = SocketAddr::from(([10, 66, 0, 2], 40000));
    r.handle(Event::Accepted {
        conn: 100,
        listener: TCP,
        peer: Peer::Tcp(from),
    });
    // The handshake states host 3's address from host 2's.
    let hello = ClientHandshake::start(&secret(), Role::Host, front_end(3))
        .unwrap()
        .1;
    r.handle(Event::frame(100, 1, hello));
    let a = r.handle(Event::frame(
        100,
        2,
        Message::Join {
            front_end: front_end(3),
        },
    ));
    assert!(
        matches!(
            &a[..],
            [
                Action::Send {
                    msg: Message::Refused { .. },
                    ..
                },
                Action::Close { conn: 100 }
            ]
        ),
        "{a:?}"
    );
    // Nor is anything but Join taken before it.
    r.handle(Event::Accepted {
        conn: 101,
        listener: TCP,
        peer: Peer::Tcp(from),
    });
    let hello = ClientHandshake::start(&secret(), Role::Host, front_end(2))
        .unwrap()
        .1;
    r.handle(Event::frame(101, 1, hello));
    let a = r.handle(Event::frame(101, 2, Message::ListHosts));
    assert!(
        matches!(
            &a[..],
            [
                Action::Send {
                    msg: Message::Refused { .. },
                    ..
                },
                Action::Close { conn: 101 }
            ]
        ),
        "{a:?}"
    );
}

#[test]
fn a_handshake_not_finished_in_time_is_dropped() {
    referee!(r);
    r.handle(Event::Accepted {
        conn: 100,
        listener: TCP,
        peer: Peer::Tcp(SocketAddr::from(([10, 66, 0, 2], 40000))),
    });
    let deadline = r.now + r.handler.config.timeouts.request;
    r.now = deadline;
    assert!(!r
        .handle(Event::Tick)
        .iter()
        .any(|a| matches!(a, Action::Close { .. })));
    r.now = deadline + sweep_tick(r.handler.config);
    let a = r.handle(Event::Tick);
    assert!(
        a.iter().any(|a| matches!(a, Action::Close { conn: 100 })),
        "{a:?}"
    );
}

#[test]
fn the_back_door_is_for_root_and_the_admin_group() {
    referee!(r);
    let door = |uid, gid| Event::Accepted {
        conn: 200 + uid as usize,
        listener: BACK_DOOR,
        peer: Peer::Unix(Ok(Creds {
            cred: PeerCred { pid: 1, uid, gid },
            groups: Vec::new(),
        })),
    };
    let a = r.handle(door(1000, 1000));
    assert!(
        matches!(&a[..], [Action::Send { msg: Message::Error { errno, .. }, .. }, Action::Close { conn: 1200 }] if *errno == libc::EACCES),
        "{a:?}"
    );
    assert!(r.handle(door(0, 0)).is_empty());
    let hosts = r.sent(200, Event::frame(200, 5, Message::ListHosts));
    assert!(
        matches!(hosts.as_slice(), [(5, Message::Hosts { .. })]),
        "{hosts:?}"
    );
    // A connection from an address not allowed is closed at once.
    let a = r.handle(Event::Accepted {
        conn: 300,
        listener: TCP,
        peer: Peer::Tcp(SocketAddr::from(([192, 168, 0, 1], 40000))),
    });
    assert!(matches!(&a[..], [Action::Close { conn: 300 }]), "{a:?}");
}

/// A host's link breaks with creations in flight, and the host joins
/// again on a new connection: what its dipcd says at that join (see
/// dipcd's tests) leaves the table right. A commit the referee took (its
/// answer lost) is kept when the host claims it, and freed when the host
/// says its creator removed it; a commit that never came, or a creation
/// whose abort never came, was given up when the link closed: the claim
/// of it is refused as freed, and the key is another host's to create.
#[test]
fn creations_in_flight_on_a_broken_link_are_settled_by_the_next_join() {
    referee!(r);
    r.now += r.handler.config.referee_settle();
    join(&mut r, 100, 2);
    join(&mut r, 101, 3);
    // Host 2's claims are in (its first heartbeat): a key it claims that
    // the table lacks is no longer adopted.
    let ack = r.sent(100, Event::frame(100, 0, Message::Heartbeat));
    assert_eq!(ack, vec![(0, Message::HeartbeatAck)]);
    let (kept, removed, never, aborted) = (11, 12, 13, 14);
    for (n, key) in [kept, removed, never, aborted].into_iter().enumerate() {
        let grant = get(&mut r, 100, 10 + n as u64, key, libc::IPC_CREAT);
        assert_eq!(owner_of(&grant[0].1), Some((front_end(2), -1)), "{grant:?}");
    }
    let commit = |key| Message::KeyCommit {
        kind: IpcKind::Msg,
        key,
        id: 40 + key,
        creator_uid: 1000,
        incarnation: 7,
    };
    for key in [kept, removed] {
        let done = r.sent(100, Event::frame(100, 20, commit(key)));
        assert_eq!(done, vec![(20, Message::Done { value: 0 })]);
    }
    r.handle(Event::Closed {
        conn: 100,
        why: Gone::Peer,
    });
    join(&mut r, 102, 2);
    let claim = |key| Message::KeyClaim {
        kind: IpcKind::Msg,
        key,
        id: 40 + key,
        creator_uid: 1000,
        incarnation: 7,
    };
    assert_eq!(
        r.sent(102, Event::frame(102, 30, claim(kept))),
        vec![(30, Message::Done { value: 0 })]
    );
    let remove = Message::KeyRemove {
        kind: IpcKind::Msg,
        key: removed,
        id: 40 + removed,
        incarnation: 7,
    };
    let a = r.handle(Event::frame(102, 31, remove));
    assert!(
        sent_to(&a, 102).contains(&(31, Message::Done { value: 0 })),
        "{a:?}"
    );
    let refused = r.sent(102, Event::frame(102, 32, claim(never)));
    assert!(
        matches!(&refused[..], [(32, Message::Error { errno, .. })] if *errno == libc::ENOENT),
        "{refused:?}"
    );
    // What host 3 finds.
    let found = get(&mut r, 101, 40, kept, 0);
    assert_eq!(owner_of(&found[0].1), Some((front_end(2), 40 + kept)));
    for (n, key) in [removed, never, aborted].into_iter().enumerate() {
        let grant = get(&mut r, 101, 41 + n as u64, key, libc::IPC_CREAT);
        assert_eq!(owner_of(&grant[0].1), Some((front_end(3), -1)), "{grant:?}");
    }
}

/// A message that is not one a host sends the referee (here an shm
/// agent's `ShmDetach`) is refused by name and its link closed, even while the
/// referee settles (it is not parked), and nothing else is touched.
#[test]
fn a_message_of_another_protocol_is_refused_and_closes_the_link() {
    referee!(r);
    join(&mut r, 100, 2);
    join(&mut r, 101, 3);
    let a = r.handle(Event::frame(100, 4, Message::ShmDetach));
    assert!(
        matches!(
            a.as_slice(),
            [Action::Send { conn: 100, id: 4, msg: Message::Error { errno, message } }, Action::Close { conn: 100 }]
                if *errno == libc::EPROTO && message == "the referee does not take ShmDetach here"
        ),
        "{a:?}"
    );
    // The other host's link still works.
    assert_eq!(
        r.sent(101, Event::frame(101, 5, Message::Ping)),
        vec![(5, Message::Pong)]
    );
}
