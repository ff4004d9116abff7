//! dipcd's logic driven by the reactor's events with a made-up clock, no
//! sockets of its own and no root: creations granted and given up, local
//! clients that go away or stall, the link to the referee lost and joined
//! again. The referee's side of the link is played by the test (its
//! handshake answered with `auth::accept`).

use crate::daemon::Daemon;
use crate::owned::Owned;
use dipc_common::auth::{self, Secret};
use dipc_common::config::Config;
use dipc_common::reactor::{sent_to, Action, ConnId, Creds, Event, Gone, Harness, Peer};
use dipc_common::sys::PeerCred;
use dipc_common::sysv;
use dipc_common::wire::{IpcKind, Message, Origin, Role};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

const LINK_CLASS: usize = 1;
const KEY: i32 = 0x5d1c_0001;
/// This host's IPC namespace, as `host` starts its dipcd.
const INCARNATION: u64 = 0x1234;

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
    t: Harness<Daemon<'static>>,
    link: Option<ConnId>,
    dir: PathBuf,
    _referee: std::net::TcpListener,
}

impl std::ops::Deref for Host {
    type Target = Harness<Daemon<'static>>;
    fn deref(&self) -> &Self::Target {
        &self.t
    }
}

impl std::ops::DerefMut for Host {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.t
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn host(name: &str) -> Host {
    let (config, referee) = config(name);
    let d = Daemon::new(config, secret(), INCARNATION, (1, Vec::new()), LINK_CLASS).unwrap();
    let now = d.now;
    let mut t = Harness::new(d, now);
    t.out.next_conn = 1000;
    Host {
        t,
        link: None,
        dir: config.runtime_dir.clone(),
        _referee: referee,
    }
}

impl Host {
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
        let acts = self.handle(Event::Tick);
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
        let join = self.referee_gets(Event::frame(conn, 0, reply));
        assert!(matches!(join[..], [(0, Message::Join { .. })]), "{join:?}");
        self.referee_gets(Event::frame(conn, 0, Message::Joined))
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
        self.handle(Event::Accepted {
            conn,
            listener: 0,
            peer: Peer::Unix(Ok(Creds {
                cred,
                groups: Vec::new(),
            })),
        })
    }

    /// Client `conn` asks to create `key`, and the referee grants this
    /// host its creation. Returns the key the holder's pidfd is watched
    /// under.
    fn granted(&mut self, conn: ConnId, key: i32) -> u64 {
        let get = Message::KeyGet {
            kind: IpcKind::Msg,
            key,
            flags: libc::IPC_CREAT,
        };
        let relayed = self.referee_gets(Event::frame(conn, 7, get.clone()));
        assert!(matches!(&relayed[..], [(_, m)] if *m == get), "{relayed:?}");
        let grant = Message::KeyOwner {
            owner: self.handler.config.front_end_addr(),
            id: -1,
            local_id: -1,
            origin: Origin {
                key,
                incarnation: INCARNATION,
            },
        };
        let link = self.link();
        let sent = self.sent(conn, Event::frame(link, relayed[0].0, grant.clone()));
        assert_eq!(sent, vec![(7, grant)]);
        let watched = self.out.watching();
        assert_eq!(watched.len(), 1, "the holder is not watched");
        watched[0]
    }
}

/// A process to hold grants: alive until killed or dropped.
struct Holder(Child);

impl Holder {
    fn kill(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A joined host whose client 2000 (a live process, returned) was
/// granted the creation of `key`, and the key its pidfd is watched under.
fn granted(name: &str, key: i32) -> (Host, Holder, u64) {
    let mut h = host(name);
    h.join();
    let p = Holder(Command::new("sleep").arg("60").spawn().unwrap());
    h.client(2000, p.0.id() as i32);
    let watched = h.granted(2000, key);
    (h, p, watched)
}

fn aborts(sent: &[(u64, Message)]) -> usize {
    sent.iter()
        .filter(|(_, m)| matches!(m, Message::KeyAbort { kind: IpcKind::Msg, key } if *key == KEY))
        .count()
}

#[test]
fn a_grant_holder_that_exits_gives_up_the_creation() {
    let (mut h, mut p, watched) = granted("holder-exits", KEY);
    p.kill();
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
    let (mut h, _p, watched) = granted("holder-closes", KEY);
    let link = h.link();
    let acts = h.handle(Event::Closed {
        conn: 2000,
        why: Gone::Peer,
    });
    assert_eq!(aborts(&sent_to(&acts, link)), 1);
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::Unwatch { key } if *key == watched)),
        "the holder is still watched: {acts:?}"
    );
}

#[test]
fn a_grant_not_committed_within_request_ms_is_given_up() {
    let (mut h, _p, _) = granted("grant-late", KEY);
    let request = h.handler.config.timeouts.request;
    h.now += request / 2;
    assert_eq!(aborts(&h.referee_gets(Event::Tick)), 0);
    h.now += request;
    assert_eq!(aborts(&h.referee_gets(Event::Tick)), 1);
    // A late commit is refused.
    let commit = Message::KeyCommit {
        kind: IpcKind::Msg,
        key: KEY,
        id: 1,
        creator_uid: 0,
        incarnation: 0,
    };
    let answer = h.sent(2000, Event::frame(2000, 8, commit));
    assert!(
        matches!(&answer[..], [(8, Message::Error { errno, .. })] if *errno == libc::EPERM),
        "{answer:?}"
    );
}

#[test]
fn a_stalled_client_is_dropped_with_its_grants() {
    let (mut h, _p, _) = granted("stalled", KEY);
    // The reactor drops a client whose request stays unfinished past
    // request_ms (its listener's stall bound).
    let sent = h.referee_gets(Event::Closed {
        conn: 2000,
        why: Gone::Stalled,
    });
    assert_eq!(aborts(&sent), 1, "{sent:?}");
    assert!(h.handler.clients.is_empty());
}

/// A queue of this test's own key `n`, as the kernel has it; removed on
/// drop.
struct Queue {
    key: i32,
    id: i32,
}

impl Queue {
    fn new(n: i32) -> Queue {
        let key = KEY + ((std::process::id() as i32 & 0xfff) << 4) + n;
        let id = sysv::msgget(key, libc::IPC_CREAT | 0o600).unwrap();
        Queue { key, id }
    }

    /// One this host owns.
    fn owned(h: &mut Host, n: i32) -> Queue {
        let q = Queue::new(n);
        h.handler.owned.add(IpcKind::Msg, q.key, q.as_owned());
        q
    }

    fn as_owned(&self) -> Owned {
        Owned {
            id: self.id,
            creator_uid: nix::unistd::getuid().as_raw(),
        }
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

    /// The notices among `sent` that it is gone from this host.
    fn removals(&self, sent: &[(u64, Message)]) -> usize {
        sent.iter()
            .filter(|(_, m)| {
                matches!(m, Message::KeyRemove { key, id, incarnation: INCARNATION, .. }
                    if *key == self.key && *id == self.id)
            })
            .count()
    }

    /// Its creator's commit, as the library sends it.
    fn commit(&self) -> Message {
        Message::KeyCommit {
            kind: IpcKind::Msg,
            key: self.key,
            id: self.id,
            creator_uid: 0,
            incarnation: 0,
        }
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        let _ = sysv::msgctl_rmid(self.id);
    }
}

/// Breaks the link, and checks that nothing reopens it before the
/// backoff; returns, once the backoff has passed, what dipcd did as the
/// link closed.
fn lose_link(h: &mut Host) -> Vec<Action> {
    let old = h.link();
    let closed = h.handle(Event::Closed {
        conn: old,
        why: Gone::Peer,
    });
    let acts = h.handle(Event::Tick);
    assert!(
        !acts.iter().any(|a| matches!(a, Action::Connect { .. })),
        "{acts:?}"
    );
    h.now += Duration::from_millis(100);
    closed
}

/// Client 2000's request `msg` (its id `id`) is relayed to the referee,
/// and the link breaks before the answer: the client is told so. Returns
/// what was relayed.
fn relayed_and_lost(h: &mut Host, id: u64, msg: Message) -> Vec<(u64, Message)> {
    let relayed = h.referee_gets(Event::frame(2000, id, msg));
    let answer = sent_to(&lose_link(h), 2000);
    assert!(
        matches!(&answer[..], [(i, Message::Error { errno, .. })]
            if *i == id && *errno == libc::ECONNRESET),
        "{answer:?}"
    );
    relayed
}

#[test]
fn the_link_lost_and_joined_again_claims_the_owned_keys_again() {
    let mut h = host("rejoin");
    let q = Queue::owned(&mut h, 1);
    let first = h.join();
    let asked = q.claims(&first);
    assert_eq!(asked.len(), 1, "{first:?}");
    let link = h.link();
    h.handle(Event::frame(link, asked[0], Message::Done { value: 0 }));
    // A request in flight when the link breaks is answered.
    h.client(2000, std::process::id() as i32);
    let ask = h.referee_gets(Event::frame(2000, 9, Message::ListLoad));
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
    let q = Queue::owned(&mut h, 2);
    let asked = q.claims(&h.join());
    let link = h.link();
    h.handle(Event::frame(
        link,
        asked[0],
        Message::error(libc::EEXIST, "taken"),
    ));
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
    let q = Queue::owned(&mut h, 3);
    assert_eq!(q.claims(&h.join()).len(), 1);
    lose_link(&mut h);
    let again = h.join();
    assert_eq!(q.claims(&again).len(), 1, "{again:?}");
    assert_eq!(h.handler.owned.list().len(), 1);
}

/// A creator's commit relayed just before the link breaks: the referee
/// may have recorded it (its answer lost with the link) or not (the
/// commit lost, the creation given up when the link closed). The creator
/// is told the link was lost, and the next join settles which: a
/// structure still there is claimed (kept if the referee has it), one the
/// creator removed on that error is freed on the referee. (Neither was
/// done: the commit was taken for refused, and a key the referee had
/// recorded was left naming a removed structure, or was never claimed
/// again, lost at the referee's next restart.)
#[test]
fn a_commit_unanswered_when_the_link_breaks_is_claimed_at_the_next_join() {
    let q = Queue::new(4);
    let (mut h, _p, _) = granted("commit-kept", q.key);
    let relayed = relayed_and_lost(&mut h, 8, q.commit());
    assert!(
        matches!(&relayed[..], [(_, Message::KeyCommit { id, .. })] if *id == q.id),
        "{relayed:?}"
    );
    let again = h.join();
    let asked = q.claims(&again);
    assert_eq!(asked.len(), 1, "{again:?}");
    assert_eq!(q.removals(&again), 0, "{again:?}");
    let link = h.link();
    h.handle(Event::frame(link, asked[0], Message::Done { value: 0 }));
    assert_eq!(
        h.handler.owned.list(),
        vec![(IpcKind::Msg, q.key, q.as_owned())]
    );
}

/// As above, but the creator removed its structure on the error: the
/// key is freed on the referee at the next join, should it have recorded
/// the commit, and is not this host's.
#[test]
fn a_commit_unanswered_when_the_link_breaks_is_freed_at_the_next_join_once_removed() {
    let q = Queue::new(5);
    let (mut h, _p, _) = granted("commit-removed", q.key);
    assert_eq!(relayed_and_lost(&mut h, 8, q.commit()).len(), 1);
    sysv::msgctl_rmid(q.id).unwrap();
    let again = h.join();
    assert_eq!(q.removals(&again), 1, "{again:?}");
    assert!(q.claims(&again).is_empty(), "{again:?}");
    assert!(h.handler.owned.list().is_empty());
}

/// The notice that an owned structure was removed, relayed just before
/// the link breaks: the key stays among the owned until the referee says
/// it is gone (`KeyGone`), so the next join, finding the structure gone
/// from the kernel, sends the notice again whether or not the first
/// reached the referee, and the key is this host's no more.
#[test]
fn a_removal_unanswered_when_the_link_breaks_is_made_again_at_the_next_join() {
    let mut h = host("remove-lost");
    let q = Queue::owned(&mut h, 6);
    let asked = q.claims(&h.join());
    let link = h.link();
    h.handle(Event::frame(link, asked[0], Message::Done { value: 0 }));
    h.client(2000, std::process::id() as i32);
    sysv::msgctl_rmid(q.id).unwrap();
    let remove = Message::KeyRemove {
        kind: IpcKind::Msg,
        key: q.key,
        id: q.id,
        incarnation: 0,
    };
    let relayed = relayed_and_lost(&mut h, 5, remove);
    assert_eq!(q.removals(&relayed), 1, "{relayed:?}");
    let again = h.join();
    assert_eq!(q.removals(&again), 1, "{again:?}");
    assert!(q.claims(&again).is_empty(), "{again:?}");
    assert!(h.handler.owned.list().is_empty());
}

/// A creator's abort relayed just before the link breaks leaves dipcd
/// nothing to do again: the grant was used up by the abort, and the
/// referee gives up the creations of a link that closed (see the
/// referee's tests), so the next join says nothing of the key.
#[test]
fn an_abort_unanswered_when_the_link_breaks_is_not_made_again() {
    let q = Queue::new(7);
    let (mut h, _p, _) = granted("abort-lost", q.key);
    let abort = Message::KeyAbort {
        kind: IpcKind::Msg,
        key: q.key,
    };
    let relayed = relayed_and_lost(&mut h, 8, abort.clone());
    assert!(
        matches!(&relayed[..], [(_, m)] if *m == abort),
        "{relayed:?}"
    );
    let again = h.join();
    let about_it = again.iter().filter(|(_, m)| {
        matches!(m, Message::KeyAbort { key, .. } | Message::KeyClaim { key, .. }
            | Message::KeyRemove { key, .. } if *key == q.key)
    });
    assert_eq!(about_it.count(), 0, "{again:?}");
    assert!(h.handler.grants.is_empty() && h.handler.owned.list().is_empty());
}

/// A user at its `limits.clients_per_uid` is told why (EAGAIN, as the
/// answer to its first call) and its new connection closed once that is
/// written; root is not counted.
#[test]
fn a_client_past_its_uids_limit_is_answered_eagain_and_closed() {
    let mut h = host("per-uid");
    let limit = h.handler.config.limits.clients_per_uid;
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
    h.handle(Event::Closed {
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
    let asked = h.referee_gets(Event::frame(2000, 1, Message::Connect { target: down }));
    assert!(matches!(&asked[..], [(_, Message::ListHosts)]), "{asked:?}");
    let acts = h.handle(Event::frame(link, asked[0].0, hosts.clone()));
    assert!(
        acts.iter().any(|a| matches!(a,
            Action::Send { conn: 2000, id: 1, msg: Message::Error { errno, .. } }
                if *errno == libc::EHOSTUNREACH)),
        "{acts:?}"
    );
    assert!(!acts.iter().any(|a| matches!(a, Action::Take { .. })));
    // To an up host: taken out for an employer, and no longer a client.
    let asked = h.referee_gets(Event::frame(2000, 2, Message::Connect { target: up }));
    let acts = h.handle(Event::frame(link, asked[0].0, hosts));
    assert!(
        matches!(acts.last(), Some(Action::Take { conn: 2000 })),
        "{acts:?}"
    );
    assert!(h.handler.clients.is_empty());
    assert!(h.handler.handoffs.contains_key(&2000));
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
        let acts = h.handle(Event::frame(2000, id, msg));
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
        h.sent(2000, Event::frame(2000, 5, Message::Ping)),
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
    let ask = h.referee_gets(Event::frame(2000, 9, Message::ListLoad));
    assert_eq!(ask.len(), 1, "{ask:?}");
    let acts = h.handle(Event::frame(link, ask[0].0, Message::ShmDetach));
    assert!(
        matches!(
            acts.as_slice(),
            [Action::Send { conn: 2000, id: 9, msg: Message::Error { errno, message } }]
                if *errno == libc::EPROTO && message == "the referee answered with ShmDetach"
        ),
        "{acts:?}"
    );
    let acts = h.handle(Event::frame(link, 0, Message::ShmDetach));
    assert!(acts.is_empty(), "{acts:?}");
    let ask = h.referee_gets(Event::frame(2000, 10, Message::ListLoad));
    assert_eq!(ask.len(), 1, "{ask:?}");
    let loads = Message::Loads {
        hosts: Vec::new(),
        moves: Vec::new(),
    };
    assert_eq!(
        h.sent(2000, Event::frame(link, ask[0].0, loads.clone())),
        vec![(10, loads)]
    );
}

/// A join answered with a message of another protocol stops the host,
/// as any answer but `Joined` or `Refused` does.
#[test]
fn a_join_answered_with_another_protocols_message_stops_the_host() {
    let mut h = host("join-other");
    let acts = h.handle(Event::Tick);
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
    let join = h.referee_gets(Event::frame(conn, 0, reply));
    assert!(matches!(join[..], [(0, Message::Join { .. })]), "{join:?}");
    let acts = h.handle(Event::frame(conn, 0, Message::ShmDetach));
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

/// `limits.employers_per_uid` counts the sessions whose client is being
/// handed to an employer, not only the employers already forked: the
/// referee's answers to many `Connect`s can all come in one turn of the
/// loop, before the reactor has handed any client over (`taken`), and
/// each would pass a check of the forked employers alone.
#[test]
fn the_employer_limit_counts_sessions_still_being_handed_over() {
    use dipc_common::wire::HostInfo;
    let mut h = host("employers-at-once");
    h.join();
    let link = h.link();
    let up: std::net::SocketAddr = "10.66.0.2:7100".parse().unwrap();
    let hosts = Message::Hosts {
        hosts: vec![HostInfo {
            addr: up,
            up: true,
            last_heard_ms: 0,
            joined_ms: 0,
            version: 1,
        }],
    };
    let limit = h.handler.config.limits.employers_per_uid;
    let mut asked = Vec::new();
    for i in 0..=limit {
        let conn = 5000 + i as ConnId;
        // Not root, whom the limit spares.
        assert!(h.accept(conn, 20000 + i as i32, 1000).is_empty());
        let sent = h.referee_gets(Event::frame(conn, 1, Message::Connect { target: up }));
        assert!(matches!(&sent[..], [(_, Message::ListHosts)]), "{sent:?}");
        asked.push((conn, sent[0].0));
    }
    // Every answer before any hand-over completes.
    let mut taken = 0;
    let mut refused = Vec::new();
    for (conn, id) in asked {
        for a in h.handle(Event::frame(link, id, hosts.clone())) {
            match a {
                Action::Take { .. } => taken += 1,
                Action::Send {
                    conn: c,
                    msg: Message::Error { errno, .. },
                    ..
                } if c == conn => refused.push(errno),
                _ => {}
            }
        }
    }
    assert_eq!(taken, limit, "taken out for employers");
    assert_eq!(refused, vec![libc::EAGAIN]);
    // A client that is gone before its hand-over (its last replies could
    // not be written) gets no employer and holds no place.
    h.handle(Event::Closed {
        conn: 5000,
        why: Gone::Io("broken pipe".into()),
    });
    assert!(!h.handler.handoffs.contains_key(&5000));
    let conn = 6000;
    assert!(h.accept(conn, 30000, 1000).is_empty());
    let sent = h.referee_gets(Event::frame(conn, 1, Message::Connect { target: up }));
    let acts = h.handle(Event::frame(link, sent[0].0, hosts));
    assert!(
        matches!(acts.last(), Some(Action::Take { conn: 6000 })),
        "{acts:?}"
    );
}
