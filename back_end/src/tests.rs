//! dipcd's logic driven by the reactor's events with a made-up clock, no
//! sockets of its own and no root: creations granted and given up, local
//! clients that go away or stall, the link to the referee lost and joined
//! again. The referee's side of the link is played by the test (its
//! handshake answered with `auth::accept`).

use crate::daemon::Daemon;
use crate::owned::Owned;
use dipc_common::auth::{self, Secret};
use dipc_common::config::Config;
use dipc_common::reactor::{Action, ConnId, Creds, Event, Gone, Handler, Peer, Recorder};
use dipc_common::sys::PeerCred;
use dipc_common::sysv;
use dipc_common::wire::{IpcKind, Message, Origin, Role};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const LINK_CLASS: usize = 1;
const KEY: i32 = 0x5d1c_0001;

fn secret() -> Secret {
    Secret::from_bytes(&[7; 32]).unwrap()
}

/// A configuration whose runtime directory is the test's own and whose
/// referee listens on loopback (the link's non-blocking connect needs a
/// real address; the test plays the referee through events).
fn config(name: &str) -> (&'static Config, std::net::TcpListener) {
    let dir = std::env::temp_dir().join(format!("dipcd-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let referee = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = Config {
        runtime_dir: dir,
        ..Config::default()
    };
    c.host.address = "127.0.0.1".parse().unwrap();
    c.referee.address = "127.0.0.1".parse().unwrap();
    c.referee.port = referee.local_addr().unwrap().port();
    (Box::leak(Box::new(c)), referee)
}

struct Host {
    d: Daemon<'static>,
    out: Recorder,
    now: Instant,
    link: Option<ConnId>,
    dir: PathBuf,
    _referee: std::net::TcpListener,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn host(name: &str) -> Host {
    let (config, referee) = config(name);
    let d = Daemon::new(config, secret(), 0x1234, (1, Vec::new()), LINK_CLASS).unwrap();
    Host {
        now: d.now,
        d,
        out: Recorder {
            next_conn: 1000,
            ..Recorder::default()
        },
        link: None,
        dir: config.runtime_dir.clone(),
        _referee: referee,
    }
}

fn frame(conn: ConnId, id: u64, msg: Message) -> Event {
    Event::Frame {
        conn,
        id,
        msg,
        fds: Vec::new(),
    }
}

impl Host {
    fn ev(&mut self, ev: Event) -> Vec<Action> {
        self.d.event(self.now, ev, &mut self.out);
        self.out.take_all()
    }

    /// What `conn` was sent while `ev` was handled.
    fn sent(&mut self, conn: ConnId, ev: Event) -> Vec<(u64, Message)> {
        self.d.event(self.now, ev, &mut self.out);
        let sent = self.out.sent(conn);
        self.out.take_all();
        sent
    }

    fn link(&self) -> ConnId {
        self.link.expect("the link is open")
    }

    /// What the link carried to the referee while `ev` was handled.
    fn referee_gets(&mut self, ev: Event) -> Vec<(u64, Message)> {
        let link = self.link();
        self.sent(link, ev)
    }

    /// A tick opens the link; the test, as the referee, takes the
    /// handshake and the join. Returns what dipcd sent after `Joined`.
    fn join(&mut self) -> Vec<(u64, Message)> {
        let acts = self.ev(Event::Tick);
        let conn = acts
            .iter()
            .find_map(|a| match a {
                Action::Connect { conn, class } if *class == LINK_CLASS => Some(*conn),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no connection to the referee: {acts:?}"));
        self.link = Some(conn);
        let hello = self.referee_gets(Event::Connected { conn });
        assert_eq!(hello.len(), 1, "{hello:?}");
        let (_, _, reply) = auth::accept(&secret(), &hello[0].1, Role::Host).unwrap();
        let join = self.referee_gets(frame(conn, 0, reply));
        assert!(matches!(join[..], [(0, Message::Join { .. })]), "{join:?}");
        self.referee_gets(frame(conn, 0, Message::Joined))
    }

    /// A local client of process `pid` (this test's uid) on `conn`.
    fn client(&mut self, conn: ConnId, pid: i32) {
        let acts = self.accept(conn, pid, nix::unistd::getuid().as_raw());
        assert!(acts.is_empty(), "{acts:?}");
    }

    /// What dipcd does when process `pid` of `uid` connects on `conn`.
    fn accept(&mut self, conn: ConnId, pid: i32, uid: u32) -> Vec<Action> {
        let cred = PeerCred {
            pid,
            uid,
            gid: nix::unistd::getgid().as_raw(),
        };
        self.ev(Event::Accepted {
            conn,
            listener: 0,
            peer: Peer::Unix(Ok(Creds {
                cred,
                groups: Vec::new(),
            })),
        })
    }

    /// Client `conn` asks to create `KEY`, and the referee grants this
    /// host its creation. Returns the key the holder's pidfd is watched
    /// under.
    fn granted(&mut self, conn: ConnId) -> u64 {
        let get = Message::KeyGet {
            kind: IpcKind::Msg,
            key: KEY,
            flags: libc::IPC_CREAT,
        };
        let relayed = self.referee_gets(frame(conn, 7, get.clone()));
        assert!(matches!(&relayed[..], [(_, m)] if *m == get), "{relayed:?}");
        let grant = Message::KeyOwner {
            owner: self.d.config.front_end_addr(),
            id: -1,
            local_id: -1,
            origin: Origin {
                key: KEY,
                incarnation: 0x1234,
            },
        };
        let link = self.link();
        self.d.event(
            self.now,
            frame(link, relayed[0].0, grant.clone()),
            &mut self.out,
        );
        assert_eq!(self.out.sent(conn), vec![(7, grant)]);
        let watched = self.out.watching();
        self.out.take_all();
        assert_eq!(watched.len(), 1, "the holder is not watched");
        watched[0]
    }
}

/// A process to hold grants: alive until killed.
fn holder() -> Child {
    Command::new("sleep").arg("60").spawn().unwrap()
}

fn aborts(sent: &[(u64, Message)]) -> usize {
    sent.iter()
        .filter(|(_, m)| matches!(m, Message::KeyAbort { kind: IpcKind::Msg, key } if *key == KEY))
        .count()
}

#[test]
fn a_grant_holder_that_exits_gives_up_the_creation() {
    let mut h = host("holder-exits");
    h.join();
    let mut p = holder();
    h.client(2000, p.id() as i32);
    let watched = h.granted(2000);
    p.kill().unwrap();
    p.wait().unwrap();
    // Its pidfd turns readable.
    let sent = h.referee_gets(Event::Ready { key: watched });
    assert_eq!(aborts(&sent), 1, "{sent:?}");
    // Given up once: a late event or the time-out adds nothing.
    let sent = h.referee_gets(Event::Ready { key: watched });
    assert_eq!(aborts(&sent), 0, "{sent:?}");
    assert!(!h.out.watching().contains(&watched));
}

#[test]
fn a_grant_holders_connection_that_closes_gives_up_the_creation() {
    let mut h = host("holder-closes");
    h.join();
    let mut p = holder();
    h.client(2000, p.id() as i32);
    let watched = h.granted(2000);
    let link = h.link();
    h.d.event(
        h.now,
        Event::Closed {
            conn: 2000,
            why: Gone::Peer,
        },
        &mut h.out,
    );
    assert_eq!(aborts(&h.out.sent(link)), 1);
    assert!(
        h.out
            .actions
            .iter()
            .any(|a| matches!(a, Action::Unwatch { key } if *key == watched)),
        "the holder is still watched: {:?}",
        h.out.actions
    );
    p.kill().unwrap();
    p.wait().unwrap();
}

#[test]
fn a_grant_not_committed_within_request_ms_is_given_up() {
    let mut h = host("grant-late");
    h.join();
    let mut p = holder();
    h.client(2000, p.id() as i32);
    h.granted(2000);
    h.now += h.d.config.timeouts.request / 2;
    assert_eq!(aborts(&h.referee_gets(Event::Tick)), 0);
    h.now += h.d.config.timeouts.request;
    assert_eq!(aborts(&h.referee_gets(Event::Tick)), 1);
    // A late commit is refused.
    let commit = Message::KeyCommit {
        kind: IpcKind::Msg,
        key: KEY,
        id: 1,
        creator_uid: 0,
        incarnation: 0,
    };
    let answer = h.sent(2000, frame(2000, 8, commit));
    assert!(
        matches!(&answer[..], [(8, Message::Error { errno, .. })] if *errno == libc::EPERM),
        "{answer:?}"
    );
    p.kill().unwrap();
    p.wait().unwrap();
}

#[test]
fn a_stalled_client_is_dropped_with_its_grants() {
    let mut h = host("stalled");
    h.join();
    let mut p = holder();
    h.client(2000, p.id() as i32);
    h.granted(2000);
    // The reactor drops a client whose request stays unfinished past
    // request_ms (its listener's stall bound).
    let sent = h.referee_gets(Event::Closed {
        conn: 2000,
        why: Gone::Stalled,
    });
    assert_eq!(aborts(&sent), 1, "{sent:?}");
    assert!(h.d.clients.is_empty());
    p.kill().unwrap();
    p.wait().unwrap();
}

/// A queue this host owns, as the kernel has it; removed on drop.
struct OwnedQueue {
    key: i32,
    id: i32,
}

impl OwnedQueue {
    fn new(h: &mut Host, n: i32) -> OwnedQueue {
        let key = KEY + ((std::process::id() as i32 & 0xfff) << 4) + n;
        let id = sysv::msgget(key, libc::IPC_CREAT | 0o600).unwrap();
        let creator_uid = nix::unistd::getuid().as_raw();
        h.d.owned.add(IpcKind::Msg, key, Owned { id, creator_uid });
        OwnedQueue { key, id }
    }

    /// The claims of it among `sent`, with their request ids.
    fn claims(&self, sent: &[(u64, Message)]) -> Vec<u64> {
        sent.iter()
            .filter(|(_, m)| {
                matches!(m, Message::KeyClaim { key, id, .. } if *key == self.key && *id == self.id)
            })
            .map(|(r, _)| *r)
            .collect()
    }
}

impl Drop for OwnedQueue {
    fn drop(&mut self) {
        let _ = sysv::msgctl_rmid(self.id);
    }
}

/// Breaks the link, and checks that nothing reopens it before the
/// backoff; returns once the backoff has passed.
fn lose_link(h: &mut Host) {
    let old = h.link();
    h.ev(Event::Closed {
        conn: old,
        why: Gone::Peer,
    });
    let acts = h.ev(Event::Tick);
    assert!(
        !acts.iter().any(|a| matches!(a, Action::Connect { .. })),
        "{acts:?}"
    );
    h.now += Duration::from_millis(100);
}

#[test]
fn the_link_lost_and_joined_again_claims_the_owned_keys_again() {
    let mut h = host("rejoin");
    let q = OwnedQueue::new(&mut h, 1);
    let first = h.join();
    let asked = q.claims(&first);
    assert_eq!(asked.len(), 1, "{first:?}");
    let link = h.link();
    h.ev(frame(link, asked[0], Message::Done { value: 0 }));
    // A request in flight when the link breaks is answered.
    h.client(2000, std::process::id() as i32);
    let ask = h.referee_gets(frame(2000, 9, Message::ListLoad));
    assert_eq!(ask.len(), 1, "{ask:?}");
    let answer = h.sent(
        2000,
        Event::Closed {
            conn: link,
            why: Gone::Peer,
        },
    );
    assert!(
        matches!(&answer[..], [(9, Message::Error { errno, .. })] if *errno == libc::ECONNRESET),
        "{answer:?}"
    );
    h.link = Some(link);
    lose_link(&mut h);
    let again = h.join();
    assert_ne!(h.link(), link);
    assert_eq!(q.claims(&again).len(), 1, "{again:?}");
}

/// A claim the referee refuses (the key is another's now, or was freed
/// while this host was away) is forgotten: not claimed at the next join.
#[test]
fn a_claim_the_referee_refuses_is_not_made_again() {
    let mut h = host("refused");
    let q = OwnedQueue::new(&mut h, 2);
    let asked = q.claims(&h.join());
    let link = h.link();
    h.ev(frame(link, asked[0], Message::error(libc::EEXIST, "taken")));
    lose_link(&mut h);
    let again = h.join();
    assert!(q.claims(&again).is_empty(), "{again:?}");
}

/// A claim still unanswered when the link breaks was refused by nobody:
/// the key stays this host's and is claimed at the next join. (It was
/// forgotten: the link's own "connection lost" answer was taken for the
/// referee's refusal, and the key never claimed again.)
#[test]
fn a_claim_unanswered_when_the_link_breaks_is_made_again_at_the_next_join() {
    let mut h = host("unanswered");
    let q = OwnedQueue::new(&mut h, 3);
    assert_eq!(q.claims(&h.join()).len(), 1);
    lose_link(&mut h);
    let again = h.join();
    assert_eq!(q.claims(&again).len(), 1, "{again:?}");
    assert_eq!(h.d.owned.list().len(), 1);
}

/// A user at its `limits.clients_per_uid` is told why (EAGAIN, as the
/// answer to its first call) and its new connection closed once that is
/// written; root is not counted.
#[test]
fn a_client_past_its_uids_limit_is_answered_eagain_and_closed() {
    let mut h = host("per-uid");
    let limit = h.d.config.limits.clients_per_uid;
    for i in 0..limit {
        assert!(h.accept(3000 + i, 100 + i as i32, 1000).is_empty());
    }
    let acts = h.accept(3000 + limit, 99, 1000);
    let answer: Vec<_> = acts
        .iter()
        .filter_map(|a| match a {
            Action::Send { conn, id, msg } if *conn == 3000 + limit => Some((*id, msg)),
            _ => None,
        })
        .collect();
    assert!(
        matches!(&answer[..], [(0, Message::Error { errno, .. })] if *errno == libc::EAGAIN),
        "{acts:?}"
    );
    assert!(
        matches!(acts.last(), Some(Action::CloseWhenFlushed { conn }) if *conn == 3000 + limit),
        "{acts:?}"
    );
    assert!(h.accept(4000, 98, 0).is_empty(), "root was refused");
    // One of the user's connections closes: it may connect again.
    h.ev(Event::Closed {
        conn: 3000,
        why: Gone::Peer,
    });
    assert!(h.accept(4001, 97, 1000).is_empty());
}

/// A `Connect` goes to an employer (the client's connection is taken out
/// of the reactor, with its grants given up) only if the referee has the
/// target as an up host; otherwise the client is told and stays.
#[test]
fn a_connect_takes_the_client_out_only_to_an_up_host() {
    use dipc_common::wire::HostInfo;
    let mut h = host("connect");
    h.join();
    let up: std::net::SocketAddr = "10.66.0.2:7100".parse().unwrap();
    let down: std::net::SocketAddr = "10.66.0.3:7100".parse().unwrap();
    let hosts = Message::Hosts {
        hosts: vec![
            HostInfo {
                addr: up,
                up: true,
                last_heard_ms: 0,
                joined_ms: 0,
                version: 1,
            },
            HostInfo {
                addr: down,
                up: false,
                last_heard_ms: 0,
                joined_ms: 0,
                version: 1,
            },
        ],
    };
    h.client(2000, std::process::id() as i32);
    let link = h.link();
    // To a host that is down: refused, the client stays.
    let asked = h.referee_gets(frame(2000, 1, Message::Connect { target: down }));
    assert!(matches!(&asked[..], [(_, Message::ListHosts)]), "{asked:?}");
    let acts = h.ev(frame(link, asked[0].0, hosts.clone()));
    assert!(
        acts.iter().any(|a| matches!(a,
            Action::Send { conn: 2000, id: 1, msg: Message::Error { errno, .. } }
                if *errno == libc::EHOSTUNREACH)),
        "{acts:?}"
    );
    assert!(!acts.iter().any(|a| matches!(a, Action::Take { .. })));
    // To an up host: taken out for an employer, and no longer a client.
    let asked = h.referee_gets(frame(2000, 2, Message::Connect { target: up }));
    let acts = h.ev(frame(link, asked[0].0, hosts));
    assert!(
        matches!(acts.last(), Some(Action::Take { conn: 2000 })),
        "{acts:?}"
    );
    assert!(h.d.clients.is_empty());
    assert!(h.d.handoffs.contains_key(&2000));
}

/// A message that no local client sends dipcd (an shm agent's
/// `ShmDetach`; a `KeyClaim`, which only dipcd itself sends the referee)
/// is answered EINVAL by name and goes no further: nothing is relayed and
/// the client's connection stays, to serve its next request.
#[test]
fn a_message_of_another_protocol_is_refused_and_the_client_stays() {
    let mut h = host("other-protocol");
    h.join();
    h.client(2000, std::process::id() as i32);
    let claim = Message::KeyClaim {
        kind: IpcKind::Msg,
        key: KEY,
        id: 1,
        creator_uid: 0,
        incarnation: 0x1234,
    };
    for (id, msg) in [(3, Message::ShmDetach), (4, claim)] {
        let why = format!("dipcd does not take {} messages", msg.kind().name());
        let acts = h.ev(frame(2000, id, msg));
        assert!(
            matches!(
                acts.as_slice(),
                [Action::Send { conn: 2000, id: i, msg: Message::Error { errno, message } }]
                    if *i == id && *errno == libc::EINVAL && *message == why
            ),
            "{acts:?}"
        );
    }
    assert_eq!(
        h.sent(2000, frame(2000, 5, Message::Ping)),
        vec![(5, Message::Pong)]
    );
}

/// An answer of the referee that is no message of its protocol reaches
/// the process that asked as EPROTO naming it, not as a message it cannot
/// read (it was passed on as it came); one with no request goes nowhere,
/// and the link stays up for the next request.
#[test]
fn a_referee_answer_of_another_protocol_reaches_the_asker_as_eproto() {
    let mut h = host("referee-other");
    h.join();
    h.client(2000, std::process::id() as i32);
    let link = h.link();
    let ask = h.referee_gets(frame(2000, 9, Message::ListLoad));
    assert_eq!(ask.len(), 1, "{ask:?}");
    let acts = h.ev(frame(link, ask[0].0, Message::ShmDetach));
    assert!(
        matches!(
            acts.as_slice(),
            [Action::Send { conn: 2000, id: 9, msg: Message::Error { errno, message } }]
                if *errno == libc::EPROTO && message == "the referee answered with ShmDetach"
        ),
        "{acts:?}"
    );
    let acts = h.ev(frame(link, 0, Message::ShmDetach));
    assert!(acts.is_empty(), "{acts:?}");
    let ask = h.referee_gets(frame(2000, 10, Message::ListLoad));
    assert_eq!(ask.len(), 1, "{ask:?}");
    let loads = Message::Loads {
        hosts: Vec::new(),
        moves: Vec::new(),
    };
    assert_eq!(
        h.sent(2000, frame(link, ask[0].0, loads.clone())),
        vec![(10, loads)]
    );
}

/// A join answered with a message of another protocol stops the host,
/// as any answer but `Joined` or `Refused` does.
#[test]
fn a_join_answered_with_another_protocols_message_stops_the_host() {
    let mut h = host("join-other");
    let acts = h.ev(Event::Tick);
    let conn = acts
        .iter()
        .find_map(|a| match a {
            Action::Connect { conn, class } if *class == LINK_CLASS => Some(*conn),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no connection to the referee: {acts:?}"));
    h.link = Some(conn);
    let hello = h.referee_gets(Event::Connected { conn });
    let (_, _, reply) = auth::accept(&secret(), &hello[0].1, Role::Host).unwrap();
    let join = h.referee_gets(frame(conn, 0, reply));
    assert!(matches!(join[..], [(0, Message::Join { .. })]), "{join:?}");
    let acts = h.ev(frame(conn, 0, Message::ShmDetach));
    assert!(
        acts.iter().any(|a| matches!(a, Action::Stop(1))),
        "{acts:?}"
    );
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::Close { conn: c } if *c == conn)),
        "{acts:?}"
    );
}
