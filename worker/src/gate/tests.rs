//! The session's rules driven by scripted requests. Where a rule needs the
//! kernel (a message put back, an id that names another structure), the
//! test makes real System V queues in its own process (`IPC_PRIVATE`, or
//! a key of its own), which needs no root; dipcd, where a check asks it, is
//! a scripted peer on a Unix socket in a temporary runtime directory.

use super::*;
use crate::session::{ANON_GID, ANON_UID};
use dipc_common::channel::Channel;
use dipc_common::sysv;
use dipc_common::wire::{IpcKind, Origin};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;

const INC: u64 = 0x1c0ffee;
const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

fn config() -> Config {
    let mut c = Config::default();
    c.timeouts.request = Duration::from_millis(1500);
    c.runtime_dir = runtime_dir();
    c
}

/// A fresh directory for this test's dipcd socket.
fn runtime_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "dipc-gate-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temporary runtime directory");
    d
}

fn session(pid: i32, uid: u32, gid: u32, groups: &[u32]) -> Message {
    Message::Session {
        pid,
        uid,
        gid,
        groups: groups.to_vec(),
    }
}

/// A gate whose session the employer opened for pid 42, uid 1000, pid_d
/// 77, as a worker (with the credentials taken on) sees it.
fn open_gate(c: &Config) -> Gate {
    let mut g = Gate::new(c, INC, PEER);
    let Verdict::Become(b) = g.admit(c, 1, session(42, 1000, 100, &[100]), 0) else {
        panic!("Session was not taken");
    };
    assert_eq!(g.became(&b, Ok(())), Message::Done { value: 0 });
    assert_eq!(
        g.admit(c, 2, Message::SenderPid { pid_d: 77 }, 0),
        Verdict::Open
    );
    g
}

const WHO: Who = Who {
    pid: 42,
    stated_uid: 1000,
    sender: 77,
};

/// The request a verdict says to serve, and for whom.
fn served(v: Verdict) -> (Who, Message) {
    match v {
        Verdict::Serve(who, req) => (who, req.into()),
        other => panic!("expected the call to be served, got {other:?}"),
    }
}

fn errno(v: &Verdict) -> (i32, String) {
    match v {
        Verdict::Answer(Message::Error { errno, message }) => (*errno, message.clone()),
        other => panic!("expected an error answer, got {other:?}"),
    }
}

fn snd(id: i32, origin: Origin) -> Message {
    Message::MsgSnd {
        id,
        origin,
        mtype: 1,
        text: b"x".to_vec(),
        flags: libc::IPC_NOWAIT,
    }
}

fn rcv(id: i32, origin: Origin) -> Message {
    Message::MsgRcv {
        id,
        origin,
        size: 64,
        mtype: 0,
        flags: libc::IPC_NOWAIT,
    }
}

/// A queue of the test's own, removed when dropped.
struct Queue(i32);

impl Queue {
    fn private() -> Queue {
        Queue(sysv::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600).expect("msgget"))
    }

    /// With a key of its own (from the test's pid), so that
    /// `/proc/sysvipc` shows the key.
    fn keyed(n: i32) -> (Queue, i32) {
        let key = (std::process::id() as i32 & 0xffff) << 12 | 0x4000_0000 | n;
        let _ = sysv::msgget(key, 0).map(sysv::msgctl_rmid);
        let q = sysv::msgget(key, libc::IPC_CREAT | libc::IPC_EXCL | 0o600).expect("msgget");
        (Queue(q), key)
    }

    fn take(&self) -> Result<(i64, Vec<u8>), i32> {
        sysv::msgrcv(self.0, 64, 0, libc::IPC_NOWAIT)
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        let _ = sysv::msgctl_rmid(self.0);
    }
}

/// A dipcd that answers one request with `answer` and returns what it
/// was asked.
fn dipcd(c: &Config, answer: Message) -> JoinHandle<Message> {
    let l = UnixListener::bind(c.back_end_socket()).expect("bind the dipcd socket");
    let max = c.max_frame;
    std::thread::spawn(move || {
        let (s, _) = l.accept().expect("accept");
        let mut ch = Channel::new(s, max);
        let (id, asked) = ch.recv().expect("the worker's request");
        ch.send(id, &answer).expect("answer");
        asked
    })
}

#[test]
fn session_comes_first_and_its_credentials_are_squashed() {
    let c = config();
    let mut g = Gate::new(&c, INC, PEER);
    assert_eq!(g.read_timeout(), Some(c.timeouts.request));
    let v = g.admit(&c, 1, session(42, 0, 0, &[0, 5]), 0);
    let Verdict::Become(b) = v else {
        panic!("Session: {v:?}");
    };
    assert_eq!(
        b,
        Become {
            pid: 42,
            stated_uid: 0,
            uid: ANON_UID,
            gid: ANON_GID,
            groups: vec![],
        }
    );
    assert_eq!(g.became(&b, Ok(())), Message::Done { value: 0 });
    // Credentials alone do not open the session.
    assert_eq!(g.who(), None);
    assert_eq!(g.read_timeout(), Some(c.timeouts.request));
    assert_eq!(
        g.admit(&c, 2, Message::SenderPid { pid_d: 9 }, 0),
        Verdict::Open
    );
    let who = Who {
        pid: 42,
        stated_uid: 0,
        sender: 9,
    };
    assert_eq!(g.who(), Some(who));
    assert_eq!(g.read_timeout(), None);
    assert_eq!(
        served(g.admit(&c, 3, Message::StatsAsk, 0)),
        (who, Message::StatsAsk)
    );
}

#[test]
fn without_root_squash_the_stated_credentials_are_kept() {
    let mut c = config();
    c.root_squash = false;
    let mut g = Gate::new(&c, INC, PEER);
    let v = g.admit(&c, 1, session(42, 0, 0, &[0, 5]), 0);
    let Verdict::Become(b) = v else {
        panic!("Session: {v:?}");
    };
    assert_eq!((b.uid, b.gid, b.groups), (0, 0, vec![0, 5]));
}

#[test]
fn every_call_before_the_session_is_open_is_refused_by_name() {
    let c = config();
    let mut g = Gate::new(&c, INC, PEER);
    let q = Queue::private();
    let o = Origin {
        key: 0,
        incarnation: INC,
    };
    let calls = [
        snd(q.0, o),
        rcv(q.0, o),
        Message::StatsAsk,
        Message::KillD {
            pid: 1,
            starttime: 1,
            sig: 9,
        },
        Message::SemJoin { nonce: 1 },
    ];
    let mut frame = 0;
    let mut refused_all = |g: &mut Gate, when: &str| {
        for req in &calls {
            frame += 1;
            let (e, text) = errno(&g.admit(&c, frame, req.clone(), 0));
            assert_eq!(e, libc::EPERM, "{when}: {req:?}");
            assert_eq!(
                text,
                format!("{} before the session's credentials", req.kind().name()),
                "{when}"
            );
        }
    };
    refused_all(&mut g, "before Session");
    let Verdict::Become(b) = g.admit(&c, 100, session(42, 1000, 100, &[]), 0) else {
        panic!("Session was not taken");
    };
    g.became(&b, Ok(()));
    refused_all(&mut g, "after Session, before SenderPid");
    // Nothing was sent: the message a MsgSnd would have put is not there.
    assert_eq!(q.take(), Err(libc::ENOMSG));
}

#[test]
fn sender_pid_comes_once_and_only_after_session() {
    let c = config();
    let mut g = Gate::new(&c, INC, PEER);
    let once = "the session's credentials and sender are stated once, by the employer";
    let (e, text) = errno(&g.admit(&c, 1, Message::SenderPid { pid_d: 5 }, 0));
    assert_eq!((e, text.as_str()), (libc::EPERM, once));
    let mut g = open_gate(&c);
    for (n, req) in [
        session(1, 0, 0, &[]),
        Message::SenderPid { pid_d: 5 },
        session(42, 1000, 100, &[100]),
        Message::SenderPid { pid_d: 77 },
    ]
    .iter()
    .enumerate()
    {
        let (e, text) = errno(&g.admit(&c, 10 + n as u64, req.clone(), 0));
        assert_eq!((e, text.as_str()), (libc::EPERM, once), "{req:?}");
    }
    assert_eq!(g.who(), Some(WHO));
}

#[test]
fn a_session_whose_credentials_could_not_be_taken_stays_closed() {
    let c = config();
    let mut g = Gate::new(&c, INC, PEER);
    let Verdict::Become(b) = g.admit(&c, 1, session(42, 1000, 100, &[]), 0) else {
        panic!("Session was not taken");
    };
    assert_eq!(
        g.became(&b, Err("setresuid(1000): EPERM".into())),
        Message::error(libc::EPERM, "setresuid(1000): EPERM")
    );
    let (e, _) = errno(&g.admit(&c, 2, Message::SenderPid { pid_d: 1 }, 0));
    assert_eq!(e, libc::EPERM);
    assert_eq!(g.who(), None);
    assert_eq!(g.read_timeout(), Some(c.timeouts.request));
    // Nothing was taken on: a Session may still come.
    assert!(matches!(
        g.admit(&c, 3, session(42, 1000, 100, &[]), 0),
        Verdict::Become(_)
    ));
}

#[test]
fn ping_is_answered_and_a_cancel_with_nothing_running_is_ignored() {
    let c = config();
    let mut g = Gate::new(&c, INC, PEER);
    assert_eq!(
        g.admit(&c, 1, Message::Ping, 0),
        Verdict::Answer(Message::Pong)
    );
    assert_eq!(g.admit(&c, 2, Message::Cancel, 0), Verdict::Skip);
    assert_eq!(g.admit(&c, 3, Message::Received, 0), Verdict::Skip);
    let mut g = open_gate(&c);
    assert_eq!(
        g.admit(&c, 4, Message::Ping, 0),
        Verdict::Answer(Message::Pong)
    );
    assert_eq!(g.admit(&c, 5, Message::Cancel, 0), Verdict::Skip);
}

#[test]
fn a_handed_session_is_open_from_the_start() {
    let c = config();
    let mut g = Gate::opened(&c, INC, PEER, WHO);
    assert_eq!(g.who(), Some(WHO));
    assert_eq!(g.read_timeout(), None);
    assert_eq!(
        served(g.admit(&c, 1, Message::StatsAsk, 0)),
        (WHO, Message::StatsAsk)
    );
    let (e, _) = errno(&g.admit(&c, 2, session(1, 0, 0, &[]), 0));
    assert_eq!(e, libc::EPERM);
}

#[test]
fn a_request_behind_an_attach_is_refused() {
    let c = config();
    let mut g = open_gate(&c);
    let o = Origin {
        key: 0x1234,
        incarnation: INC,
    };
    // As a get through this worker leaves it.
    g.origins().got(IpcKind::Shm, 5, o);
    let attach = Message::ShmAttach {
        id: 5,
        origin: o,
        readonly: false,
        handover: None,
    };
    let (e, text) = errno(&g.admit(&c, 1, attach.clone(), 12));
    assert_eq!(e, libc::EPROTO, "{text}");
    assert_eq!(served(g.admit(&c, 2, attach.clone(), 0)), (WHO, attach));
}

#[test]
fn a_call_on_an_id_that_names_another_structure_is_refused_with_eidrm() {
    let c = config();
    let mut g = open_gate(&c);
    // The caller's get resolved the id from key 0x5eed; the kernel has it
    // under another key (IPC_PRIVATE's): the key's structure was removed
    // and the id names a new one.
    let q = Queue::private();
    let stale = Origin {
        key: 0x5eed,
        incarnation: INC,
    };
    let (e, text) = errno(&g.admit(&c, 1, snd(q.0, stale), 0));
    assert_eq!(e, libc::EIDRM, "{text}");
    assert!(
        text.contains("no longer names the structure of its key"),
        "{text}"
    );
    // An id from this host's former incarnation.
    let old = Origin {
        key: 0,
        incarnation: INC - 1,
    };
    let (e, text) = errno(&g.admit(&c, 2, snd(q.0, old), 0));
    assert_eq!(e, libc::EIDRM, "{text}");
    assert!(text.contains("restarted"), "{text}");
    // Nothing reached the queue.
    assert_eq!(q.take(), Err(libc::ENOMSG));
    // An id that names nothing (asked of a worker that has no verdict
    // on it kept).
    let gone = q.0;
    drop(q);
    let mut g = open_gate(&c);
    let (e, _) = errno(&g.admit(&c, 3, snd(gone, stale), 0));
    assert_eq!(e, libc::EINVAL);
}

#[test]
fn a_stale_id_before_the_session_is_open_gets_the_session_error() {
    let c = config();
    let mut g = Gate::new(&c, INC, PEER);
    let q = Queue::private();
    let stale = Origin {
        key: 0x5eed,
        incarnation: INC,
    };
    let (e, _) = errno(&g.admit(&c, 1, snd(q.0, stale), 0));
    assert_eq!(e, libc::EPERM);
}

#[test]
fn a_current_id_is_checked_with_dipcd_once_then_served() {
    let c = config();
    let mut g = open_gate(&c);
    let (q, key) = Queue::keyed(1);
    let o = Origin {
        key,
        incarnation: INC,
    };
    let asked = dipcd(
        &c,
        Message::KeyOwner {
            owner: c.front_end_addr(),
            id: q.0,
            local_id: q.0,
            origin: o,
        },
    );
    assert_eq!(served(g.admit(&c, 1, snd(q.0, o), 0)).0, WHO);
    assert_eq!(
        asked.join().expect("dipcd"),
        Message::KeyCheck {
            kind: IpcKind::Msg,
            key
        }
    );
    // The verdict is kept: no dipcd any more, and the call is served.
    let _ = std::fs::remove_file(c.back_end_socket());
    assert_eq!(served(g.admit(&c, 2, rcv(q.0, o), 0)).0, WHO);
}

#[test]
fn an_id_whose_key_the_referee_no_longer_has_here_is_refused() {
    let c = config();
    let mut g = open_gate(&c);
    let (q, key) = Queue::keyed(2);
    let o = Origin {
        key,
        incarnation: INC,
    };
    // `dipcref rm-key`: the kernel keeps the key, the referee does not.
    let asked = dipcd(&c, Message::error(libc::ENOENT, "no such key"));
    let (e, text) = errno(&g.admit(&c, 1, snd(q.0, o), 0));
    assert_eq!(e, libc::EIDRM, "{text}");
    asked.join().expect("dipcd");
    // Unreachable dipcd: the call fails, and is not known to be safe.
    let mut g = open_gate(&c);
    let (e, text) = errno(&g.admit(&c, 2, snd(q.0, o), 0));
    assert_ne!(e, libc::EIDRM, "{text}");
    assert!(text.contains("cannot reach"), "{text}");
}

/// An open gate on a queue holding one message, which a `MsgRcv` (frame
/// 5) took for the caller.
fn took_one(c: &Config) -> (Gate, Queue) {
    let mut g = open_gate(c);
    let q = Queue::private();
    let o = Origin {
        key: 0,
        incarnation: INC,
    };
    g.origins().got(IpcKind::Msg, q.0, o);
    sysv::msgsnd(q.0, 3, b"held", libc::IPC_NOWAIT).expect("msgsnd");
    assert_eq!(served(g.admit(c, 5, rcv(q.0, o), 0)).0, WHO);
    let reply = crate::msg::rcv(q.0, 64, 0, libc::IPC_NOWAIT);
    assert_eq!(
        reply,
        Message::MsgData {
            mtype: 3,
            text: b"held".to_vec()
        }
    );
    g.answered(5, Some(q.0), reply);
    assert_eq!(q.take(), Err(libc::ENOMSG));
    (g, q)
}

#[test]
fn a_message_not_confirmed_goes_back_when_the_session_ends() {
    let c = config();
    let (g, q) = took_one(&c);
    g.end();
    assert_eq!(q.take(), Ok((3, b"held".to_vec())));
}

#[test]
fn received_for_its_call_releases_the_message() {
    let c = config();
    let (mut g, q) = took_one(&c);
    // Confirmations of other frames, and a cancel, do not.
    assert_eq!(g.admit(&c, 4, Message::Received, 0), Verdict::Skip);
    assert_eq!(g.admit(&c, 6, Message::Received, 0), Verdict::Skip);
    assert_eq!(g.admit(&c, 7, Message::Cancel, 0), Verdict::Skip);
    assert_eq!(g.admit(&c, 5, Message::Received, 0), Verdict::Skip);
    g.end();
    assert_eq!(q.take(), Err(libc::ENOMSG));
}

#[test]
fn a_cancel_or_another_frames_confirmation_keeps_the_message_held() {
    let c = config();
    let (mut g, q) = took_one(&c);
    g.admit(&c, 4, Message::Received, 0);
    g.admit(&c, 7, Message::Cancel, 0);
    g.end();
    assert_eq!(q.take(), Ok((3, b"held".to_vec())));
}

#[test]
fn the_next_request_confirms_the_message() {
    let c = config();
    let (mut g, q) = took_one(&c);
    assert_eq!(
        g.admit(&c, 6, Message::Ping, 0),
        Verdict::Answer(Message::Pong)
    );
    g.end();
    assert_eq!(q.take(), Err(libc::ENOMSG));
    // So does a frame of a moving process's state.
    let (mut g, q) = took_one(&c);
    g.admit_data();
    g.end();
    assert_eq!(q.take(), Err(libc::ENOMSG));
}

#[test]
fn only_a_msgrcv_reply_with_a_message_is_held() {
    let c = config();
    let mut g = open_gate(&c);
    let q = Queue::private();
    // An error answer, or a message that did not come from a MsgRcv.
    g.answered(1, Some(q.0), Message::error(libc::ENOMSG, "none"));
    g.end();
    let mut g = open_gate(&c);
    g.answered(
        2,
        None,
        Message::MsgData {
            mtype: 1,
            text: b"no".to_vec(),
        },
    );
    g.end();
    assert_eq!(q.take(), Err(libc::ENOMSG));
}

#[test]
fn a_message_of_another_protocol_is_refused_by_name() {
    let c = config();
    let key_get = Message::KeyGet {
        kind: IpcKind::Msg,
        key: 0x77,
        flags: 0,
    };
    let mut g = Gate::new(&c, INC, PEER);
    let (e, text) = errno(&g.admit(&c, 1, key_get.clone(), 0));
    assert_eq!(
        (e, text.as_str()),
        (libc::EPERM, "KeyGet before the session's credentials")
    );
    let mut g = open_gate(&c);
    let (e, text) = errno(&g.admit(&c, 3, key_get.clone(), 0));
    assert_eq!(
        (e, text.as_str()),
        (libc::EPROTO, "a worker does not take KeyGet messages")
    );
    // The session goes on.
    assert_eq!(served(g.admit(&c, 4, Message::StatsAsk, 0)).0, WHO);
    // Like any request, it confirms the last reply.
    let (mut g, q) = took_one(&c);
    g.admit(&c, 6, key_get, 0);
    g.end();
    assert_eq!(q.take(), Err(libc::ENOMSG));
}
