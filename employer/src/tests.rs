//! `open_session` and `serve` against a scripted worker on loopback TCP,
//! in a thread of the test, behind the real handshake: no root, no
//! cluster.

use super::*;
use dipc_common::auth::server_handshake;
use dipc_common::channel::Codec;
use dipc_common::secure::Secure;
use dipc_common::sys::{peer_cred, recv_fd};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn config() -> Config {
    let mut c = Config::default();
    c.host.address = LOOPBACK;
    c.timeouts.connect = Duration::from_millis(800);
    c.timeouts.request = Duration::from_millis(600);
    c
}

fn secret() -> Secret {
    Secret::from_bytes(&[0x5a; 32]).expect("secret")
}

fn cred() -> PeerCred {
    PeerCred {
        pid: 4321,
        uid: 1000,
        gid: 100,
    }
}

/// How the scripted worker answers one of the session's two requests.
#[derive(Clone)]
enum Answer {
    Done,
    Refuse(i32, &'static str),
    /// Says nothing, and waits for the employer to hang up.
    Nothing,
}

/// What the scripted worker saw.
#[derive(Debug)]
struct Seen {
    requests: Vec<(u64, Message)>,
    /// How the connection ended after the answers.
    then: Result<(u64, Message), String>,
}

/// A worker on loopback that runs the server handshake with `secret`,
/// reads the session's two requests, answers them as `script` says (an
/// error answer closes the connection, as the worker does), then reads
/// one more frame (answering a `Ping`), or the end.
fn worker(secret: Secret, script: [Answer; 2]) -> (SocketAddr, JoinHandle<Seen>) {
    let l = TcpListener::bind((LOOPBACK, 0)).expect("bind");
    let addr = l.local_addr().expect("address");
    let t = std::thread::spawn(move || {
        let (s, _) = l.accept().expect("accept");
        let mut ch = Channel::new(s, 1 << 20);
        server_handshake(&mut ch, &secret, Role::Employer).expect("handshake");
        let requests: Vec<(u64, Message)> = (0..2)
            .map(|_| ch.recv().expect("a session request"))
            .collect();
        for ((id, _), a) in requests.iter().zip(script) {
            match a {
                Answer::Done => ch.send(*id, &Message::Done { value: 0 }).expect("send"),
                Answer::Refuse(errno, why) => {
                    ch.send(*id, &Message::error(errno, why)).expect("send");
                    return Seen {
                        requests,
                        then: Err("refused".into()),
                    };
                }
                Answer::Nothing => break,
            }
        }
        let then = match ch.recv() {
            Ok((id, Message::Ping)) => {
                ch.send(id, &Message::Pong).expect("send");
                Ok((id, Message::Ping))
            }
            Ok(other) => Ok(other),
            Err(e) => Err(e.to_string()),
        };
        Seen { requests, then }
    });
    (addr, t)
}

fn error_of(r: Result<Channel<TcpStream>, Message>) -> (i32, String) {
    match r {
        Err(Message::Error { errno, message }) => (errno, message),
        Err(other) => panic!("not an error reply: {other:?}"),
        Ok(_) => panic!("the session opened"),
    }
}

/// The error a session with `addr` fails with.
fn refused_by(addr: SocketAddr) -> (i32, String) {
    error_of(open_session(
        &config(),
        &secret(),
        (cred(), vec![]),
        77,
        addr,
    ))
}

#[test]
fn the_worker_gets_the_credentials_given_then_the_sender() {
    let (addr, w) = worker(secret(), [Answer::Done, Answer::Done]);
    let c = config();
    let ch =
        open_session(&c, &secret(), (cred(), vec![100, 27]), 77, addr).expect("the session opens");
    drop(ch);
    let seen = w.join().expect("worker");
    assert_eq!(
        seen.requests,
        vec![
            (
                1,
                Message::Session {
                    pid: 4321,
                    uid: 1000,
                    gid: 100,
                    groups: vec![100, 27],
                }
            ),
            (2, Message::SenderPid { pid_d: 77 }),
        ]
    );
}

/// `serve` answers an application's `Connect` on a Unix socket: the
/// worker is told the credentials the kernel has for that socket (pid
/// given by dipcd's SO_PEERCRED, groups from SO_PEERGROUPS), the
/// application gets `SessionReady` and the session's socket, on which it
/// carries on the secure channel itself.
#[test]
fn an_application_gets_a_session_opened_with_its_kernel_credentials() {
    let (addr, w) = worker(secret(), [Answer::Done, Answer::Done]);
    let c = config();
    let (app, employer) = UnixStream::pair().expect("socketpair");
    let cred = peer_cred(&employer).expect("SO_PEERCRED");
    let connect = (9, Message::Connect { target: addr });
    let served = std::thread::spawn({
        let c = c.clone();
        move || serve(employer, cred, 55, connect, &c, &secret())
    });
    let mut app = Channel::new(app, c.max_frame);
    let (id, reply) = app.recv().expect("the employer's reply");
    assert_eq!(id, 9);
    let Message::SessionReady { pid_d, keys } = reply else {
        panic!("not SessionReady: {reply:?}");
    };
    assert_eq!(pid_d, 55);
    let fd = recv_fd(app.get_ref()).expect("the session's socket");
    assert_eq!(served.join().expect("employer"), 0);
    let codec = Codec::Secure(Box::new(Secure::from_keys(&keys)));
    let mut session = Channel::new(TcpStream::from(fd), c.max_frame).with_codec(codec);
    assert_eq!(
        session.call(3, &Message::Ping).expect("ping"),
        Message::Pong
    );
    let seen = w.join().expect("worker");
    let me = nix::unistd::getgroups().expect("getgroups");
    let mut groups: Vec<u32> = me.iter().map(|g| g.as_raw()).collect();
    let Message::Session {
        pid,
        uid,
        gid,
        groups: mut told,
    } = seen.requests[0].1.clone()
    else {
        panic!("first request: {:?}", seen.requests[0]);
    };
    groups.sort_unstable();
    told.sort_unstable();
    assert_eq!(
        (pid, uid, gid, told),
        (
            std::process::id() as i32,
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
            groups
        )
    );
    assert_eq!(seen.requests[1], (2, Message::SenderPid { pid_d: 55 }));
    assert_eq!(seen.then, Ok((3, Message::Ping)));
}

#[test]
fn a_worker_that_refuses_the_session_gives_the_application_its_error() {
    let why = "setresuid(1000): Operation not permitted";
    let (addr, w) = worker(secret(), [Answer::Refuse(libc::EPERM, why), Answer::Done]);
    assert_eq!(refused_by(addr), (libc::EPERM, why.to_string()));
    w.join().expect("worker");
    // The sender refused after the credentials were taken.
    let why = "the session's credentials and sender are stated once, by the employer";
    let (addr, w) = worker(secret(), [Answer::Done, Answer::Refuse(libc::EPERM, why)]);
    assert_eq!(refused_by(addr), (libc::EPERM, why.to_string()));
    w.join().expect("worker");
}

/// Opens a session with the worker at `addr`, which does not answer in
/// time: the application gets a time-out that names the host.
fn times_out(addr: SocketAddr) {
    let c = config();
    let started = Instant::now();
    let r = open_session(&c, &secret(), (cred(), vec![]), 77, addr);
    let waited = started.elapsed();
    let (errno, text) = error_of(r);
    assert_eq!(errno, libc::ETIMEDOUT, "{text}");
    assert!(text.contains(&addr.to_string()), "{text}");
    // It gave up on its own time-out, not on the worker hanging up
    // (which it does only once the employer has).
    assert!(waited >= c.timeouts.request, "{waited:?}");
    // (A generous bound: that it ends at all, not how fast.)
    assert!(waited < c.timeouts.request * 10, "{waited:?}");
}

#[test]
fn a_worker_that_never_answers_times_out() {
    for script in [
        [Answer::Nothing, Answer::Nothing],
        [Answer::Done, Answer::Nothing],
    ] {
        let (addr, w) = worker(secret(), script);
        times_out(addr);
        let seen = w.join().expect("worker");
        assert!(seen.then.is_err(), "{:?}", seen.then);
    }
}

/// Before the fix, ECONNREFUSED with the text "timed out waiting for the
/// peer".
#[test]
fn a_worker_that_never_answers_the_handshake_times_out() {
    let l = TcpListener::bind((LOOPBACK, 0)).expect("bind");
    times_out(l.local_addr().expect("address"));
    drop(l);
}

#[test]
fn a_worker_with_another_secret_is_not_trusted() {
    let other = Secret::from_bytes(&[0xa5; 32]).expect("secret");
    let l = TcpListener::bind((LOOPBACK, 0)).expect("bind");
    let addr = l.local_addr().expect("address");
    let t = std::thread::spawn(move || {
        let (s, _) = l.accept().expect("accept");
        let mut ch = Channel::new(s, 1 << 20);
        server_handshake(&mut ch, &other, Role::Employer).map(|_| ())
    });
    let (errno, text) = refused_by(addr);
    assert_eq!(errno, libc::ECONNREFUSED, "{text}");
    assert!(
        text.starts_with(&format!("authentication with {addr}")),
        "{text}"
    );
    assert!(t.join().expect("worker").is_err());
}

#[test]
fn a_refused_connection_names_the_host() {
    let l = TcpListener::bind((LOOPBACK, 0)).expect("bind");
    let addr = l.local_addr().expect("address");
    drop(l);
    let (errno, text) = refused_by(addr);
    assert_eq!(errno, libc::ECONNREFUSED, "{text}");
    assert!(
        text.starts_with(&format!("cannot connect to {addr}")),
        "{text}"
    );
}

#[test]
fn an_employer_takes_only_connect() {
    let c = config();
    let (app, employer) = UnixStream::pair().expect("socketpair");
    let cred = peer_cred(&employer).expect("SO_PEERCRED");
    assert_eq!(
        serve(employer, cred, 0, (4, Message::Ping), &c, &secret()),
        0
    );
    let mut app = Channel::new(app, c.max_frame);
    match app.recv() {
        Ok((4, Message::Error { errno, message })) => {
            assert_eq!(errno, libc::EINVAL);
            assert!(message.contains("Ping"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(app.recv(), Err(ChannelError::Closed)));
}
