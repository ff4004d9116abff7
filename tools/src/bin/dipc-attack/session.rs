//! Attacks from inside a session opened the legitimate way (`Connect`):
//! injected, replayed, reordered or flipped frames, and requests a worker
//! must refuse (a foreign segment, a private key, a signal to a pid, an
//! attach without the groups it needs).

use crate::common::{
    dipcd, is_error, not_tried, send_raw, show, shown, uid, verdict, REPLY_TIMEOUT,
};
use dipc_common::channel::Channel;
use dipc_common::config::Config;
use dipc_common::secure::{Secure, PREFIX_LEN};
use dipc_common::sys;
use dipc_common::wire::{self, IpcKind, Message, Origin};
use nix::errno::Errno;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;

/// A session opened the legitimate way (`Connect`): its socket, and the
/// channel's state, which every application holds.
pub(crate) struct Session {
    pub(crate) s: TcpStream,
    pub(crate) sec: Secure,
    pub(crate) max: u32,
    pub(crate) pid_d: i64,
}

pub(crate) fn open_session(config: &Config, target: SocketAddr) -> Result<Session, String> {
    let ch = dipcd(config).map_err(|e| format!("dipcd: {e}"))?;
    session_over(config, ch, target)
}

/// A session opened with `Connect` on `ch`, a connection to dipcd.
fn session_over(
    config: &Config,
    mut ch: Channel<UnixStream>,
    target: SocketAddr,
) -> Result<Session, String> {
    let (pid_d, keys) = match ch.call(1, &Message::Connect { target }) {
        Ok(Message::SessionReady { pid_d, keys }) => (pid_d, keys),
        Ok(other) => return Err(format!("connect to {target}: {}", show(&other))),
        Err(e) => return Err(format!("connect to {target}: {e}")),
    };
    let fd = sys::recv_fd(ch.get_ref()).map_err(|e| format!("receive the session: {e}"))?;
    let s = TcpStream::from(fd);
    s.set_read_timeout(Some(REPLY_TIMEOUT))
        .map_err(|e| format!("session: {e}"))?;
    Ok(Session {
        s,
        sec: Secure::from_keys(&keys),
        max: config.max_frame,
        pid_d,
    })
}

impl Session {
    /// The record of one frame, sealed with the session's next counter.
    fn seal(&mut self, id: u64, msg: &Message) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        self.sec
            .seal(id, msg, &mut out)
            .map_err(|e| format!("seal: {e}"))?;
        Ok(out)
    }

    fn recv(&mut self) -> Result<(u64, Message), String> {
        self.s
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let mut prefix = [0u8; PREFIX_LEN];
        self.s
            .read_exact(&mut prefix)
            .map_err(|e| format!("read: {e}"))?;
        let len = Secure::record_len(&prefix, self.max).map_err(|e| e.to_string())?;
        let mut rec = vec![0u8; len];
        rec[..PREFIX_LEN].copy_from_slice(&prefix);
        self.s
            .read_exact(&mut rec[PREFIX_LEN..])
            .map_err(|e| format!("read: {e}"))?;
        self.sec.open(&mut rec, self.max).map_err(|e| e.to_string())
    }

    /// The reply to request `id`, skipping others.
    fn reply_to(&mut self, id: u64) -> Result<Message, String> {
        loop {
            let (rid, m) = self.recv()?;
            if rid == id {
                return Ok(m);
            }
        }
    }

    /// Sends one sealed request and waits for its reply.
    pub(crate) fn call(&mut self, id: u64, msg: &Message) -> Result<Message, String> {
        let rec = self.seal(id, msg)?;
        self.s.write_all(&rec).map_err(|e| format!("write: {e}"))?;
        self.reply_to(id)
    }
}

/// `Session` claiming root.
pub(crate) fn root_session() -> Message {
    Message::Session {
        pid: std::process::id() as i32,
        uid: 0,
        gid: 0,
        groups: vec![0],
    }
}

fn msg_snd((id, origin): (i32, Origin), text: &str) -> Message {
    Message::MsgSnd {
        id,
        origin,
        mtype: 1,
        text: text.as_bytes().to_vec(),
        flags: libc::IPC_NOWAIT,
    }
}

pub(crate) fn session_inject(
    config: &Config,
    target: SocketAddr,
    (id, origin): (i32, Origin),
) -> u8 {
    println!("uid {}", uid());
    let msg_rcv = Message::MsgRcv {
        id,
        origin,
        size: 8192,
        mtype: 0,
        flags: libc::IPC_NOWAIT,
    };
    // Plain frames where sealed records belong.
    let mut a = match open_session(config, target) {
        Ok(s) => s,
        Err(e) => return not_tried("session", &e),
    };
    let mut plain = Vec::new();
    wire::encode_frame(1, &root_session(), &mut plain);
    wire::encode_frame(2, &msg_rcv, &mut plain);
    let plain_after = send_raw(&mut a.s, &plain);
    println!("plain: {plain_after}");
    // The same, sealed with the session's own keys.
    let mut b = match open_session(config, target) {
        Ok(s) => s,
        Err(e) => return not_tried("session", &e),
    };
    let session = b.call(1, &root_session());
    println!("sealed session: {}", shown(&session));
    let rcv = b.call(2, &msg_rcv);
    println!("sealed msgrcv: {}", shown(&rcv));
    // Another pid_d for the session's sends.
    let mut c = match open_session(config, target) {
        Ok(s) => s,
        Err(e) => return not_tried("session", &e),
    };
    let sender = c.call(1, &Message::SenderPid { pid_d: 1 });
    println!("sender pid: {}", shown(&sender));
    verdict(
        plain_after.closed()
            && is_error(&session, None)
            && is_error(&rcv, Some(libc::EACCES))
            && is_error(&sender, None),
    )
}

pub(crate) fn replay(config: &Config, target: SocketAddr, id: (i32, Origin)) -> u8 {
    println!("uid {}", uid());
    let mut s = match open_session(config, target) {
        Ok(s) => s,
        Err(e) => return not_tried("session", &e),
    };
    let rec = match s.seal(1, &msg_snd(id, "replayed")) {
        Ok(r) => r,
        Err(e) => return not_tried("seal", &e),
    };
    if let Err(e) = s.s.write_all(&rec) {
        return not_tried("send", &e);
    }
    let first = s.reply_to(1);
    println!("first: {}", shown(&first));
    if !matches!(first, Ok(Message::Done { .. })) {
        return not_tried("first send", &shown(&first));
    }
    let again = send_raw(&mut s.s, &rec);
    println!("replay: {again}");
    verdict(again.closed())
}

pub(crate) fn reorder(config: &Config, target: SocketAddr, id: (i32, Origin)) -> u8 {
    println!("uid {}", uid());
    let mut s = match open_session(config, target) {
        Ok(s) => s,
        Err(e) => return not_tried("session", &e),
    };
    let sealed = s
        .seal(1, &msg_snd(id, "first"))
        .and_then(|r1| Ok((r1, s.seal(2, &msg_snd(id, "second"))?)));
    let (_first, second) = match sealed {
        Ok(r) => r,
        Err(e) => return not_tried("seal", &e),
    };
    let a = send_raw(&mut s.s, &second);
    println!("out of order: {a}");
    verdict(a.closed())
}

pub(crate) fn flip(config: &Config, target: SocketAddr, id: (i32, Origin), bit: i64) -> u8 {
    println!("uid {}", uid());
    let mut s = match open_session(config, target) {
        Ok(s) => s,
        Err(e) => return not_tried("session", &e),
    };
    let mut rec = match s.seal(1, &msg_snd(id, "flipped")) {
        Ok(r) => r,
        Err(e) => return not_tried("seal", &e),
    };
    let bits = rec.len() as i64 * 8;
    let from_start = if bit < 0 { bits + bit } else { bit };
    if !(0..bits).contains(&from_start) {
        return not_tried(
            "flip",
            &format!("bit {bit} is outside the record's {bits} bits"),
        );
    }
    let bit = from_start as usize;
    rec[bit / 8] ^= 1 << (bit % 8);
    let a = send_raw(&mut s.s, &rec);
    println!("flipped bit {bit} of {}: {a}", rec.len() * 8);
    verdict(a.closed())
}

pub(crate) fn shm_attach(config: &Config, target: SocketAddr, (id, origin): (i32, Origin)) -> u8 {
    println!("uid {}", uid());
    let mut s = match open_session(config, target) {
        Ok(s) => s,
        Err(e) => return not_tried("session", &e),
    };
    let rw = s.call(
        1,
        &Message::ShmAttach {
            id,
            origin,
            readonly: false,
            handover: None,
        },
    );
    println!("attach: {}", shown(&rw));
    let mut s = match open_session(config, target) {
        Ok(s) => s,
        Err(e) => return not_tried("session", &e),
    };
    // A handover the worker alone may state: here naming the owner host
    // itself, with the session's own state.
    let keys = s.sec.keys();
    let ro = s.call(
        1,
        &Message::ShmAttach {
            id,
            origin,
            readonly: true,
            handover: Some((target, Box::new(keys))),
        },
    );
    println!("attach with handover: {}", shown(&ro));
    verdict(is_error(&rw, None) && is_error(&ro, None))
}

pub(crate) fn remote_private(config: &Config, target: SocketAddr, kind: IpcKind) -> u8 {
    println!("uid {}", uid());
    let mut s = match open_session(config, target) {
        Ok(s) => s,
        Err(e) => return not_tried("session", &e),
    };
    let size = match kind {
        IpcKind::Msg => 0,
        IpcKind::Sem => 1,
        IpcKind::Shm => 4096,
    };
    let remote = s.call(
        1,
        &Message::IpcGet {
            kind,
            key: libc::IPC_PRIVATE,
            id: 0,
            incarnation: 0,
            flags: 0o600,
            size,
        },
    );
    println!("remote get: {}", shown(&remote));
    let mut ch = match dipcd(config) {
        Ok(ch) => ch,
        Err(e) => return not_tried("dipcd", &e),
    };
    let get = Message::KeyGet {
        kind,
        key: libc::IPC_PRIVATE,
        flags: libc::IPC_CREAT | 0o600,
    };
    let local = ch.call(1, &get).map_err(|e| e.to_string());
    match &local {
        Ok(Message::KeyOwner { owner, id, .. }) => println!("dipcd get: owner {owner} id {id}"),
        other => println!("dipcd get: {}", shown(other)),
    }
    verdict(is_error(&remote, None) && is_error(&local, None))
}

pub(crate) fn kill_pid(config: &Config, target: SocketAddr, pid: i32, sig: i32) -> u8 {
    println!("uid {}", uid());
    let starttime = match dipc_common::procs::starttime(pid) {
        Ok(t) => t,
        Err(e) => return not_tried("start time", &Errno::from_raw(e)),
    };
    let mut s = match open_session(config, target) {
        Ok(s) => s,
        Err(e) => return not_tried("session", &e),
    };
    let r = s.call(
        1,
        &Message::KillD {
            pid,
            starttime,
            sig,
        },
    );
    println!("kill: {}", shown(&r));
    verdict(is_error(&r, None))
}

pub(crate) fn peer_groups(
    config: &Config,
    target: SocketAddr,
    (id, origin): (i32, Origin),
    gid: u32,
) -> u8 {
    use nix::unistd::{setegid, seteuid, setgroups, Gid, Uid};
    println!("uid {}", uid());
    let nobody = (Uid::from_raw(65534), Gid::from_raw(65534));
    // Connect as nobody with no groups; the real uid stays root, so the
    // effective one can come back.
    if let Err(e) = setgroups(&[])
        .and_then(|()| setegid(nobody.1))
        .and_then(|()| seteuid(nobody.0))
    {
        return not_tried("become nobody", &e);
    }
    let ch = match dipcd(config) {
        Ok(ch) => ch,
        Err(e) => return not_tried("dipcd", &e),
    };
    // Then take group G, as a process that the connection's pid later
    // names could have (a recycled pid, or this one after a setgroups).
    if let Err(e) = seteuid(Uid::from_raw(0))
        .and_then(|()| setgroups(&[Gid::from_raw(gid)]))
        .and_then(|()| seteuid(nobody.0))
    {
        return not_tried("take the group", &e);
    }
    println!("groups now [{gid}]");
    let mut s = match session_over(config, ch, target) {
        Ok(s) => s,
        Err(e) => return not_tried("session", &e),
    };
    let r = s.call(
        1,
        &Message::MsgCtl {
            id,
            origin,
            cmd: libc::IPC_STAT,
            set: None,
        },
    );
    println!("stat: {}", shown(&r));
    verdict(is_error(&r, Some(libc::EACCES)))
}
