//! Who may attach, and what a query is told: a connection's first frame
//! (a local `ShmAttach`, a worker's passed connection, a `ShmQuery`),
//! checked against the segment's permissions as the kernel's ipcperms
//! would, before the connection becomes a participant.

use super::*;

impl Manager<'_> {
    /// A new connection's first frame, with the descriptor a worker may
    /// have passed along with it.
    pub(crate) fn first_frame(
        &mut self,
        t: ConnId,
        rid: u64,
        msg: ToManager,
        mut fds: Vec<OwnedFd>,
        out: &mut dyn Out,
    ) {
        // The peer's credentials as the kernel recorded them when it
        // connected (not /proc/PID later, when the pid may be another
        // process's).
        let Some(Conn::Pending(cred)) = self.conns.remove(&t) else {
            return;
        };
        // `attach` is None for a query.
        let (id, attach) = match msg {
            ToManager::ShmAttach {
                id,
                readonly,
                handover,
                ..
            } => (id, Some((readonly, handover))),
            ToManager::ShmQuery { id, .. } => (id, None),
            ToManager::ShmFault { .. }
            | ToManager::ShmData { .. }
            | ToManager::ShmRevoked { .. }
            | ToManager::ShmDetach => {
                warn!(
                    "shm manager {}: a connection sent {} before attaching",
                    self.id,
                    msg.kind().name()
                );
                return out.close(t);
            }
        };
        // A TCP connection a worker passes comes with its secure channel's
        // state, and only such a connection does: the manager carries on
        // the caller's channel, sealed as before.
        let passed = fds.pop();
        let codec = match (&attach, &passed) {
            (Some((_, None)) | None, None) => Codec::Plain,
            (Some((_, Some((_, keys)))), Some(_)) => {
                Codec::Secure(Box::new(Secure::from_keys(keys)))
            }
            (Some((_, Some(_))), None) | (Some((_, None)) | None, Some(_)) => {
                warn!(
                    "shm manager {}: a connection was passed without its channel state, \
                     or channel state without a connection",
                    self.id
                );
                return out.close(t);
            }
        };
        // The participant's stream: a TCP connection a worker passed, or
        // this Unix connection.
        if let Some(fd) = passed {
            let s = std::net::TcpStream::from(fd);
            if let Err(e) = s.set_nonblocking(true) {
                warn!("shm manager {}: {e}", self.id);
                return out.close(t);
            }
            out.adopt(t, Stream::Tcp(mio::net::TcpStream::from_std(s)), codec);
        }
        let mut part = Participant {
            host: self.config.front_end_addr(),
            readonly: true,
            closing: true,
        };
        let reply = match (cred, attach) {
            (Err(e), _) => Message::error(libc::EPERM, format!("no peer credentials: {e}")),
            (Ok(_), _) if id != self.id => {
                Message::error(libc::EINVAL, "that segment has another manager")
            }
            (Ok(cred), None) => self.query(&cred),
            (Ok(cred), Some((readonly, handover))) => match self.permitted(&cred, readonly) {
                Ok(()) => {
                    part.readonly = readonly;
                    part.closing = false;
                    if let Some((h, _)) = handover {
                        part.host = h;
                    }
                    debug!(
                        "shm manager {}: participant {t} attached from {} (pid {} uid {}){}",
                        self.id,
                        part.host,
                        cred.cred.pid,
                        cred.cred.uid,
                        if readonly { ", read-only" } else { "" }
                    );
                    Message::ShmAttached {
                        size: self.size,
                        unit: self.unit as u64,
                    }
                }
                Err(reply) => reply,
            },
        };
        out.send(t, rid, &reply);
        if part.closing {
            out.close_when_flushed(t);
        }
        self.conns.insert(t, Conn::Open(part));
    }

    /// The kernel's rule for attaching (ipcperms): read, and write unless
    /// read-only, for the caller's class (owner, group, other); root may
    /// do anything.
    fn permitted(&self, caller: &Creds, readonly: bool) -> Result<(), Message> {
        let perm = sysv::shmctl_stat(self.id)
            .map_err(|e| Message::error(e, format!("IPC_STAT of segment {}", self.id)))?
            .perm;
        let want = if readonly { 4 } else { 6 };
        if caller.cred.uid == 0 || allowed(&perm, caller, want) {
            Ok(())
        } else {
            Err(Message::error(
                libc::EACCES,
                format!(
                    "uid {} may not attach segment {}{}",
                    caller.cred.uid,
                    self.id,
                    if readonly { " read-only" } else { "" }
                ),
            ))
        }
    }

    fn query(&self, caller: &Creds) -> Message {
        if let Err(reply) = self.permitted(caller, true) {
            return reply;
        }
        let mut hosts: Vec<SocketAddr> = Vec::new();
        let mut index = |h: SocketAddr| -> u16 {
            match hosts.iter().position(|&x| x == h) {
                Some(i) => i as u16,
                None => {
                    hosts.push(h);
                    (hosts.len() - 1) as u16
                }
            }
        };
        let host_of: HashMap<Pid, SocketAddr> = self
            .conns
            .iter()
            .filter_map(|(&t, c)| match c {
                Conn::Open(p) => Some((t, p.host)),
                Conn::Pending(_) => None,
            })
            .collect();
        let mut runs: Vec<UnitRun> = Vec::new();
        for u in 0..self.units.len() as u32 {
            let Some((holders, lost)) = self.units.holders(u) else {
                break;
            };
            let (writer, mut readers) = match holders {
                Holders::Writer(w) => (host_of.get(w).map(|&h| index(h)), Vec::new()),
                Holders::Readers(s) => (
                    None,
                    s.iter()
                        .filter_map(|r| host_of.get(r).map(|&h| index(h)))
                        .collect::<Vec<u16>>(),
                ),
            };
            readers.sort_unstable();
            readers.dedup();
            match runs.last_mut() {
                Some(r)
                    if r.writer == writer
                        && r.readers == readers
                        && r.lost == lost
                        && r.first + r.count == u =>
                {
                    r.count += 1
                }
                _ => runs.push(UnitRun {
                    first: u,
                    count: 1,
                    writer,
                    readers,
                    lost,
                }),
            }
        }
        Message::ShmState {
            nattch: self.participants() as u64,
            unit: self.unit as u64,
            hosts,
            runs,
        }
    }
}

/// ipcperms for a non-root caller (see `sysv::permits`).
pub(crate) fn allowed(perm: &IpcPerm, caller: &Creds, want: u32) -> bool {
    sysv::permits(
        perm,
        (caller.cred.uid, caller.cred.gid, &caller.groups),
        want,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use dipc_common::sys::PeerCred;

    #[test]
    fn permission_classes_follow_the_kernel() {
        let perm = IpcPerm {
            key: 1,
            uid: 1000,
            gid: 1000,
            cuid: 1000,
            cgid: 1000,
            mode: 0o640,
            seq: 0,
        };
        let cred = |uid, gid, groups: &[u32]| Creds {
            cred: PeerCred {
                pid: std::process::id() as i32,
                uid,
                gid,
            },
            groups: groups.to_vec(),
        };
        assert!(allowed(&perm, &cred(1000, 5, &[]), 6));
        assert!(allowed(&perm, &cred(2000, 1000, &[]), 4));
        assert!(!allowed(&perm, &cred(2000, 1000, &[]), 6));
        assert!(!allowed(&perm, &cred(2000, 2000, &[]), 4));
        // A supplementary group counts as the group.
        assert!(allowed(&perm, &cred(2000, 2000, &[7, 1000]), 4));
        assert!(!allowed(&perm, &cred(2000, 2000, &[7]), 4));
    }
}
