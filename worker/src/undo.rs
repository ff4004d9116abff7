//! One `SEM_UNDO` context per remote process.
//!
//! The owner's kernel keeps `SEM_UNDO` adjustments per process (threads
//! share them: glibc creates threads with `CLONE_SYSVSEM`) and applies them
//! when the last of its tasks exits. A remote process has a session, and
//! so a worker, per call in flight; if each worker kept its own undo list,
//! a P made on one session and the V made on another would be undone
//! separately at exit, and the kernel's clamping would leave the lock open
//! while another process holds it. So a session that joins (`SemJoin`,
//! sent by the library before the first `SEM_UNDO` operation on it) is
//! served by one worker process per remote process, each session in a
//! thread of its own: a thread blocked in `semop` does not stop another
//! session's V, and all of them share one undo list.
//!
//! The first worker to join becomes the *context*: it listens on an
//! abstract Unix socket named after the caller (host, pid, credentials and
//! the nonce the library drew for the process), and every later worker of
//! the same process hands its connection there (socket, secure channel
//! state, the pid_d its mailbox sends carry) and then only waits for the
//! session's end ([`stand_in`]), so that the front_end's limits, which
//! count workers, still count every session. The context lives
//! until its last session ends; the kernel then undoes the adjustments, as
//! at the exit of a local process. A context is numbered at random when
//! it starts, and the number answers every `SemJoin`: a library that sees
//! a new number for an owner on which it made `SEM_UNDO` operations knows
//! that its adjustments there were undone (see `libdipc::state`).
//!
//! Only a process with the worker's very credentials may hand a session
//! over (the context checks `SO_PEERCRED` and `SO_PEERGROUPS`, and the
//! joiner checks the context's): it could do no more with the session than
//! it may do already. The name holds the nonce, which only the process and
//! its workers know, so nobody can take it before the context does. (Once
//! bound, the name shows in /proc/net/unix: after the context ended, a
//! local process with the same credentials could bind it and so receive
//! that remote process's later sessions; it gets no right it lacks, but it
//! could answer them.)

use dipc_common::channel::Channel;
use dipc_common::sys;
use dipc_common::wire::{self, Message};
use log::{debug, info, warn};
use std::net::{SocketAddr, TcpStream};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

/// The context this worker serves, once it became one.
static CONTEXT: OnceLock<Context> = OnceLock::new();

struct Context {
    /// What the caller's process named it with.
    nonce: u64,
    /// The caller's host and pid.
    host: SocketAddr,
    pid: i32,
    /// Its number, as `SemJoin` answers it.
    id: i64,
    live: Mutex<Live>,
    ended: Condvar,
}

struct Live {
    /// Sessions being served.
    sessions: usize,
    /// No session is left: the process is about to end, and a session
    /// handed over now is refused (its caller's context is gone).
    closing: bool,
}

/// Who a session is for.
pub struct Caller {
    /// The front_end address of the caller's host.
    pub host: SocketAddr,
    pub pid: i32,
    /// The uid the caller's host stated (see `keys::get`).
    pub stated_uid: u32,
    pub sender: i64,
}

/// What became of a `SemJoin`.
pub enum Joined {
    /// This worker serves the context numbered so: answer the join.
    Here(i64),
    /// The session went to the context's worker, which answers the join:
    /// this worker must close its copy of the session's socket without
    /// touching it again, and [`stand_in`] for the session.
    HandedOver(UnixStream),
}

/// How long a handed-over session may take to arrive.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(2);
/// A handover frame: a header, the stated uid, the sender and the
/// channel's keys.
const HANDOVER_MAX: usize = 256;
/// How long the context waits after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Tries at binding or reaching the context, which may end meanwhile.
const JOIN_TRIES: usize = 4;

/// Serves a `SemJoin` (request `rid`) on `ch` for `caller`.
/// `serve_handed` runs a session handed over to this context, in a thread
/// of its own.
pub fn join(
    ch: &Channel<TcpStream>,
    rid: u64,
    nonce: u64,
    caller: &Caller,
    serve_handed: fn(TcpStream, Caller, wire::SessionKeys, u64, i64),
) -> Result<Joined, Message> {
    if let Some(c) = CONTEXT.get() {
        return if c.nonce == nonce {
            Ok(Joined::Here(c.id))
        } else {
            Err(Message::error(
                libc::EINVAL,
                "a session joins one SEM_UNDO context only",
            ))
        };
    }
    if ch.buffered() > 0 {
        return Err(Message::error(
            libc::EPROTO,
            "a request sent behind SemJoin, before its answer",
        ));
    }
    let me = Creds::own().map_err(|e| Message::error(libc::EIO, e))?;
    let name = name(caller, nonce, &me);
    let addr = UnixAddr::from_abstract_name(name.as_bytes())
        .map_err(|e| Message::error(libc::EINVAL, format!("undo context name: {e}")))?;
    for _ in 0..JOIN_TRIES {
        match UnixListener::bind_addr(&addr) {
            Ok(l) => return Ok(Joined::Here(start(l, caller, nonce, me, serve_handed))),
            Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {}
            Err(e) => return Err(Message::error(errno(&e), format!("undo context: {e}"))),
        }
        let s = match UnixStream::connect_addr(&addr) {
            Ok(s) => s,
            // It ended between our bind and connect: bind again.
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => continue,
            Err(e) => return Err(Message::error(errno(&e), format!("undo context: {e}"))),
        };
        if Creds::of(&s).map_or(true, |c| c != me) {
            return Err(Message::error(
                libc::EPERM,
                "the undo context's worker does not act as this session",
            ));
        }
        let keys = ch
            .codec()
            .keys()
            .ok_or_else(|| Message::error(libc::EPROTO, "the session is not secured"))?;
        let mut frame = Vec::new();
        wire::encode_frame(
            rid,
            &Message::SemHandover {
                uid: caller.stated_uid,
                sender: caller.sender,
                keys: Box::new(keys),
            },
            &mut frame,
        );
        match sys::send_with_fd(&s, &frame, ch.get_ref()) {
            Ok(()) => {
                debug!(
                    "worker: session of pid {} handed to its undo context",
                    caller.pid
                );
                return Ok(Joined::HandedOver(s));
            }
            // The context ended before it took the session: start anew.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET)) => {}
            Err(e) => return Err(Message::error(errno(&e), format!("undo context: {e}"))),
        }
    }
    Err(Message::error(
        libc::EAGAIN,
        "the undo context kept ending while this session joined it",
    ))
}

/// Waits, in the worker that handed a session over, until the context no
/// longer serves it. The front_end counts sessions as the workers it forked
/// (`limits.sessions_per_uid`, `limits.workers_per_host`), so the worker
/// that a session was forked for lives as long as the session.
pub fn stand_in(mut link: UnixStream) {
    use std::io::Read;
    let mut buf = [0u8; 16];
    // The context writes nothing: its end closes when the session ends, or
    // when the context does.
    loop {
        match link.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Ends the serving of one session of this worker. The worker's first
/// session (its main thread) then waits for the others.
pub fn session_ended(main: bool) {
    let Some(c) = CONTEXT.get() else { return };
    let mut live = c.live.lock().unwrap_or_else(|p| p.into_inner());
    live.sessions = live.sessions.saturating_sub(1);
    if live.sessions == 0 {
        live.closing = true;
        c.ended.notify_all();
    }
    if main {
        while !live.closing {
            live = c.ended.wait(live).unwrap_or_else(|p| p.into_inner());
        }
    }
}

fn start(
    l: UnixListener,
    caller: &Caller,
    nonce: u64,
    me: Creds,
    serve_handed: fn(TcpStream, Caller, wire::SessionKeys, u64, i64),
) -> i64 {
    let id = context_number();
    let c = Context {
        nonce,
        host: caller.host,
        pid: caller.pid,
        id,
        live: Mutex::new(Live {
            sessions: 1,
            closing: false,
        }),
        ended: Condvar::new(),
    };
    // CONTEXT was empty (checked by join, and only the main thread joins
    // before the context exists).
    let _ = CONTEXT.set(c);
    std::thread::spawn(move || accept(l, me, serve_handed));
    info!("worker: SEM_UNDO context {id:#x} started");
    id
}

fn accept(
    l: UnixListener,
    me: Creds,
    serve_handed: fn(TcpStream, Caller, wire::SessionKeys, u64, i64),
) {
    let Some(c) = CONTEXT.get() else { return };
    loop {
        let s = match l.accept() {
            Ok((s, _)) => s,
            Err(e) => {
                warn!("worker: undo context: accept: {e}");
                // Out of descriptors, say: not in a hot loop.
                std::thread::sleep(ACCEPT_BACKOFF);
                continue;
            }
        };
        if Creds::of(&s).map_or(true, |p| p != me) {
            warn!("worker: undo context: a session handed by another user refused");
            continue;
        }
        let (rid, sock, (stated_uid, sender), keys) = match take(&s) {
            Ok(t) => t,
            Err(e) => {
                warn!("worker: undo context: handover: {e}");
                continue;
            }
        };
        {
            let mut live = c.live.lock().unwrap_or_else(|p| p.into_inner());
            if live.closing {
                // The session's caller has no other session left, so its
                // context is gone: dropping the session tells it.
                continue;
            }
            live.sessions += 1;
        }
        let (id, host, pid) = (c.id, c.host, c.pid);
        std::thread::spawn(move || {
            let caller = Caller {
                host,
                pid,
                stated_uid,
                sender,
            };
            serve_handed(sock, caller, keys, rid, id);
            // Lets the worker that stands in for the session end.
            drop(s);
            session_ended(false);
        });
    }
}

/// Reads a handover: the `SemJoin`'s request id, the session's socket,
/// its stated uid and sender, and its channel keys.
type Handover = (u64, TcpStream, (u32, i64), wire::SessionKeys);
fn take(s: &UnixStream) -> Result<Handover, String> {
    s.set_read_timeout(Some(HANDOVER_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; HANDOVER_MAX];
    let (n, mut fds) = sys::recv_with_fds(s, &mut buf).map_err(|e| e.to_string())?;
    let (Some(fd), true) = (fds.pop(), fds.is_empty()) else {
        return Err("not exactly one descriptor".into());
    };
    match wire::decode_frame(&buf[..n], HANDOVER_MAX as u32) {
        Ok(Some((len, rid, Message::SemHandover { uid, sender, keys }))) if len == n => {
            Ok((rid, TcpStream::from(fd), (uid, sender), *keys))
        }
        Ok(_) => Err("not one SemHandover frame".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// The context's name: a process (its host, pid and nonce) with the
/// credentials its sessions act with (a process that changed them has
/// other sessions, see `libdipc::client::Creds`).
fn name(caller: &Caller, nonce: u64, me: &Creds) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    me.hash(&mut h);
    format!(
        "dipc-undo {} {} {nonce:016x} {:016x}",
        caller.host,
        caller.pid,
        h.finish()
    )
}

fn context_number() -> i64 {
    // Positive and not 0, so that it reads as a plain `Done` value.
    (sys::random_u64() >> 1).max(1) as i64
}

/// A process's uid, gid and groups.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Creds {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
}

impl Creds {
    fn own() -> Result<Creds, String> {
        // SAFETY: geteuid and getegid cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let mut groups: Vec<u32> = nix::unistd::getgroups()
            .map_err(|e| format!("getgroups: {e}"))?
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        groups.sort_unstable();
        Ok(Creds { uid, gid, groups })
    }

    fn of(s: &UnixStream) -> std::io::Result<Creds> {
        let c = sys::peer_cred(s)?;
        let mut groups = sys::peer_groups(s)?;
        groups.sort_unstable();
        Ok(Creds {
            uid: c.uid,
            gid: c.gid,
            groups,
        })
    }
}
