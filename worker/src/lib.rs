//! The worker: forked by the front_end for each session another host
//! opens to this one.
//!
//! The front_end has run the handshake on the cluster secret with the
//! caller (only an employer may call: see `dipc_common::auth`) and read
//! the session's first frame; the worker takes the connection from there
//! ([`Handed`]) and carries out the caller's requests on this host, one
//! after another, and replies, every frame sealed by the connection's
//! secure channel. The first requests must be the employer's `Session`
//! (whose credentials the worker takes on) and `SenderPid`; neither is
//! taken twice. These rules, apart from the socket, are the session's
//! `gate`. A worker serves one connection for its whole life, so an
//! employer that keeps its connection open keeps the same worker as its
//! proxy on this host. A session that joins its process's `SEM_UNDO`
//! context (`SemJoin`) goes to the one worker of that context, which serves
//! each of the process's joined sessions in a thread (`undo`): `SEM_UNDO`
//! adjustments then live and die with that worker, which ends with the
//! process's last session.
//!
//! Every call on a System V structure carries what the caller's get
//! resolved its id from, and is refused (`EIDRM`) if the id no longer
//! names that structure (`origin`).
//!
//! It also delivers `kill_d` signals and `dipc_send` messages to processes
//! of this host (`pids`), as the caller, so the kernel applies its
//! permission rules to the caller's uid; a signal goes only to a process
//! this host's dipcd has registered.

mod blocking;
mod calls;
mod ctl;
mod gate;
mod keys;
mod migrate;
mod msg;
mod origin;
mod pids;
mod sem;
mod session;
mod shm;
mod stats;
mod undo;

use blocking::{handle, interrupt_on_input, interruptible, may_wait, would_block};

use dipc_common::auth::{Secret, ServerHandshake, VouchKey};
use dipc_common::channel::{Channel, ChannelError, Codec};
use dipc_common::config::Config;
use dipc_common::metrics::Call;
use dipc_common::wire::{IpcKind, Message, Protocol, ToWorker};
use log::{debug, info, warn};
use std::net::{IpAddr, TcpStream};

/// A connection as the front_end hands it over: authenticated, its
/// session's first frame read.
pub struct Handed {
    /// What the caller stated in the handshake.
    pub hs: ServerHandshake,
    /// The secure channel's state.
    pub codec: Codec,
    /// Bytes received after the first frame.
    pub unread: Vec<u8>,
    /// Bytes of ours not yet written (sealed).
    pub unwritten: Vec<u8>,
    /// The session's first frame.
    pub first: (u64, Message),
}

/// Serves one session; returns the process exit code. `incarnation` is
/// this host's (see `dipc_common::incarnation`).
pub fn serve(
    mut stream: TcpStream,
    peer: IpAddr,
    handed: Handed,
    config: &Config,
    secret: &Secret,
    incarnation: u64,
) -> i32 {
    let gate = gate::Gate::new(config, incarnation, peer);
    if let Err(e) = stream.set_read_timeout(gate.read_timeout()) {
        warn!("worker for {peer}: {e}");
        return 1;
    }
    let Handed {
        hs,
        codec,
        unread,
        unwritten,
        first,
    } = handed;
    if let Err(e) = std::io::Write::write_all(&mut stream, &unwritten) {
        info!("worker for {peer}: {e}");
        return 1;
    }
    // The worker keeps its socket (but for a shared memory attach, checked
    // there), so it may read ahead.
    let ch = Channel::read_ahead_with(stream, config.max_frame, &unread).with_codec(codec);
    let _ = SERVED.set((config.clone(), incarnation, secret.vouch_key()));
    let s = Session {
        ch,
        peer,
        host: hs.host,
        gate,
    };
    let code = serve_session(s, Some(first), true);
    undo::session_ended(true);
    code
}

/// What every session of this worker (see [`undo`]) is served with: its
/// configuration, its host's incarnation and the key that vouches for
/// gets.
static SERVED: std::sync::OnceLock<(Config, u64, VouchKey)> = std::sync::OnceLock::new();

/// One session's state.
struct Session {
    ch: Channel<TcpStream>,
    peer: IpAddr,
    /// The front_end address the caller's host stated.
    host: std::net::SocketAddr,
    gate: gate::Gate,
}

/// Serves a session handed over to this worker's undo context, in a
/// thread of its own: answers its `SemJoin` (request `rid`) with the
/// context's number `ctx`, then its requests.
fn serve_handed(
    sock: TcpStream,
    caller: undo::Caller,
    keys: dipc_common::wire::SessionKeys,
    rid: u64,
    ctx: i64,
) {
    let Some((config, incarnation, _)) = SERVED.get() else {
        return;
    };
    let peer = caller.host.ip();
    let codec = Codec::Secure(Box::new(dipc_common::secure::Secure::from_keys(&keys)));
    let mut ch = Channel::read_ahead(sock, config.max_frame).with_codec(codec);
    if let Err(e) = ch.send(rid, &Message::Done { value: ctx }) {
        info!("worker for {peer}: reply lost: {e}");
        return;
    }
    let who = gate::Who {
        pid: caller.pid,
        stated_uid: caller.stated_uid,
        sender: caller.sender,
    };
    let s = Session {
        ch,
        peer,
        host: caller.host,
        gate: gate::Gate::opened(config, *incarnation, peer, who),
    };
    serve_session(s, None, false);
}

/// Serves a session's requests (`first` first) until it ends, and
/// reports what it served to dipcd; returns the worker's exit code.
/// `worker`: this is the worker process's first session.
fn serve_session(s: Session, first: Option<(u64, Message)>, worker: bool) -> i32 {
    let Some((config, ..)) = SERVED.get() else {
        return 1;
    };
    let mut tally = stats::Tally::new(worker);
    let mut dipcd = pids::Dipcd::default();
    let code = serve_calls(s, first, &mut tally, &mut dipcd);
    tally.report(config);
    code
}

fn serve_calls(
    s: Session,
    mut first: Option<(u64, Message)>,
    tally: &mut stats::Tally,
    dipcd: &mut pids::Dipcd,
) -> i32 {
    let Some((config, _, vouch_key)) = SERVED.get() else {
        return 1;
    };
    let Session {
        mut ch,
        peer,
        host,
        mut gate,
    } = s;
    let sigio = match interrupt_on_input(ch.get_ref()) {
        Ok(s) => s,
        Err(e) => {
            warn!("worker for {peer}: {e}");
            return 1;
        }
    };
    // The program started for the caller's move, until it is committed.
    let mut moving: Option<migrate::Started> = None;
    loop {
        let next = match first.take() {
            Some(f) => Ok(f),
            None => {
                tally.before_wait(config, &ch);
                match ch.recv_raw() {
                    Ok(f) => match f.migrate_data() {
                        // A moving process's state goes from the frame's
                        // buffer straight into the new program's memfd: it
                        // is frozen meanwhile, and a copy into a message
                        // would be one more pass over all of it.
                        Some(Ok(data)) => {
                            gate.admit_data();
                            let started = std::time::Instant::now();
                            let id = f.request_id;
                            let bytes = data.len();
                            let reply = migrate::data(&mut moving, data);
                            tally.served(Call::Migrate, &reply, started, bytes);
                            if let Err(e) = ch.send(id, &reply) {
                                info!("worker for {peer}: reply lost: {e}");
                                gate.end();
                                return 1;
                            }
                            continue;
                        }
                        Some(Err(e)) => Err(e.into()),
                        None => f.decode().map(|m| (f.request_id, m)).map_err(Into::into),
                    },
                    Err(e) => Err(e),
                }
            }
        };
        let (id, req) = match next {
            Ok(r) => r,
            Err(ChannelError::Closed) => {
                gate.end();
                return 0;
            }
            Err(e) => {
                info!("worker for {peer}: {e}");
                gate.end();
                return 1;
            }
        };
        let started = std::time::Instant::now();
        let call = Call::of(req.kind());
        let bytes_in = stats::bytes_in(&req);
        let rcv_queue = match &req {
            Message::MsgRcv { id, .. } => Some(*id),
            _ => None,
        };
        let reply = match gate.admit(config, id, req, ch.buffered()) {
            gate::Verdict::Skip => continue,
            gate::Verdict::Answer(reply) => reply,
            gate::Verdict::Become(b) => {
                let r = session::become_caller(b.uid, b.gid, &b.groups);
                gate.became(&b, r)
            }
            gate::Verdict::Open => {
                if let Err(e) = ch.get_ref().set_read_timeout(gate.read_timeout()) {
                    warn!("worker for {peer}: {e}");
                    return 1;
                }
                Message::Done { value: 0 }
            }
            gate::Verdict::Serve(who, req) => {
                let removal = keys::Removal::of(&req);
                let reply = match req {
                    ToWorker::SemJoin { nonce } => {
                        let who = undo::Caller {
                            host,
                            pid: who.pid,
                            stated_uid: who.stated_uid,
                            sender: who.sender,
                        };
                        match undo::join(&ch, id, nonce, &who, serve_handed) {
                            Ok(undo::Joined::Here(ctx)) => Message::Done { value: ctx },
                            Ok(undo::Joined::HandedOver(link)) => {
                                drop(ch);
                                undo::stand_in(link);
                                return 0;
                            }
                            Err(reply) => reply,
                        }
                    }
                    ToWorker::ShmAttach {
                        id: sid,
                        origin,
                        readonly,
                        ..
                    } => match shm::hand_over(config, &ch, id, (sid, origin), readonly, host) {
                        Ok(()) => {
                            debug!("worker: {peer}'s connection handed to the manager of segment {sid}");
                            tally.served(Call::ShmAttach, &Message::Done { value: 0 }, started, 0);
                            return 0;
                        }
                        Err(reply) => reply,
                    },
                    ToWorker::MsgCtl {
                        id: sid, cmd, set, ..
                    } => ctl::ctl(config, IpcKind::Msg, sid, cmd, set),
                    ToWorker::SemCtl {
                        id: sid,
                        num,
                        cmd,
                        arg,
                        ..
                    } => sem::ctl(config, sid, num, cmd, &arg),
                    ToWorker::ShmCtl {
                        id: sid, cmd, set, ..
                    } => ctl::ctl(config, IpcKind::Shm, sid, cmd, set),
                    ToWorker::CallOpen { pid_d } => {
                        match calls::hand_over(config, &ch, who.sender, pid_d) {
                            Ok(()) => {
                                debug!(
                                    "worker: {peer}'s connection is a call link to pid_d {pid_d}"
                                );
                                let done = Message::Done { value: 0 };
                                tally.served(Call::CallOpen, &done, started, 0);
                                return 0;
                            }
                            Err(reply) => reply,
                        }
                    }
                    ToWorker::KillD {
                        pid,
                        starttime,
                        sig,
                    } => pids::kill(config, dipcd, pid, starttime, sig),
                    ToWorker::ShmQuery { id: sid, .. } => shm::query(config, sid),
                    // This host's counters, from its dipcd.
                    ToWorker::StatsAsk => {
                        tally.report(config);
                        local_call(config, &config.back_end_socket(), &Message::StatsAsk)
                            .unwrap_or_else(|e| e)
                    }
                    ToWorker::MigrateSpawn {
                        program,
                        pid_d,
                        token,
                    } => {
                        moving = None;
                        let by = (who.sender, pid_d, token);
                        match migrate::spawn(config, who.stated_uid, by, &program) {
                            Ok(s) => {
                                let pid = s.pid();
                                moving = Some(s);
                                Message::Done { value: pid.into() }
                            }
                            Err(e) => *e,
                        }
                    }
                    // (taken above, from the frame's buffer)
                    ToWorker::MigrateData { data } => migrate::data(&mut moving, &data),
                    ToWorker::MigrateCommit { go } => {
                        migrate::commit(&mut moving, go, config.timeouts.request / 2)
                    }
                    ToWorker::IpcStatAny { kind, id: sid, .. } => {
                        ctl::stat(config, kind, sid, true)
                    }
                    ToWorker::IpcGet {
                        kind,
                        key,
                        id: sid,
                        incarnation,
                        flags,
                        size,
                    } => keys::get(
                        config,
                        gate.origins(),
                        kind,
                        (key, sid, incarnation),
                        flags,
                        size,
                        (vouch_key, who.stated_uid),
                    ),
                    req @ (ToWorker::MsgSnd { .. }
                    | ToWorker::MsgRcv { .. }
                    | ToWorker::SemOp { .. }
                    | ToWorker::SendD { .. }) => {
                        // First without waiting: most calls do not block, and those
                        // then need no SIGIO switched on and off around them.
                        let waits = may_wait(&req);
                        let extra = if waits { libc::IPC_NOWAIT } else { 0 };
                        let first = handle(&req, who.sender, extra);
                        if waits && would_block(&req, &first) {
                            match interruptible(&mut ch, sigio, || handle(&req, who.sender, 0)) {
                                Some(reply) => reply,
                                None => return 0,
                            }
                        } else {
                            first
                        }
                    }
                    // Answered by the gate, never served.
                    req @ (ToWorker::Session { .. }
                    | ToWorker::SenderPid { .. }
                    | ToWorker::Ping
                    | ToWorker::Cancel
                    | ToWorker::Received) => {
                        Message::error(libc::EPROTO, format!("{} is not a call", req.kind().name()))
                    }
                };
                if let Some(r) = removal {
                    r.done(config, gate.origins(), &reply);
                }
                reply
            }
        };
        let sent = ch.send(id, &reply);
        if let Some(call) = call {
            tally.served(call, &reply, started, bytes_in);
        }
        gate.answered(id, rcv_queue, reply);
        if let Err(e) = sent {
            info!("worker for {peer}: reply lost: {e}");
            gate.end();
            return 1;
        }
    }
}

/// The error reply for `errno`, with the system's text for it.
fn fail(errno: i32) -> Message {
    Message::error(errno, std::io::Error::from_raw_os_error(errno).to_string())
}

/// `Done` with the call's value, or its error.
fn done(r: Result<i32, i32>) -> Message {
    r.map_or_else(fail, |v| Message::Done { value: v.into() })
}

/// A request to a local Unix socket, answered within the request time-out.
fn local_call(config: &Config, path: &std::path::Path, msg: &Message) -> Result<Message, Message> {
    let s = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
        Message::error(
            e.raw_os_error().unwrap_or(libc::ECONNREFUSED),
            format!("cannot reach {}: {e}", path.display()),
        )
    })?;
    let _ = s.set_read_timeout(Some(config.timeouts.request));
    let mut ch = Channel::new(s, config.max_frame);
    match ch.call(1, msg) {
        Ok(Message::Error { errno, message }) => Err(Message::Error { errno, message }),
        Ok(reply) => Ok(reply),
        Err(e) => Err(Message::error(
            e.errno(),
            format!("{}: {e}", path.display()),
        )),
    }
}
