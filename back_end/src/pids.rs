//! The processes of this host registered in the cluster's process table
//! (`regist`), each watched through a pidfd.
//!
//! dipcd takes a registering process's pid and uid from SO_PEERCRED, opens
//! a pidfd for it and reads its start time, so the record names that very
//! process: a pid recycled later is another process. The pidfd sits in
//! dipcd's poll (the reactor's, see `Watch`) and becomes readable when the process exits, however it
//! exits; dipcd then tells the referee and removes the process's mailbox
//! queue (which wakes a sender blocked on it with `EIDRM`). The referee
//! holds the cluster-wide record; this table holds what only the host can
//! hold: the pidfds and the mailbox ids, which are kept in the runtime
//! directory so that a dipcd killed without cleaning up removes them on
//! its next start (its registrations ended with it).

use dipc_common::procs;
use dipc_common::reactor::{Interest, Watch};
use dipc_common::sys::PeerCred;
use dipc_common::sysv;
use log::{debug, warn};
use std::collections::HashMap;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

/// A registered (or registering) process.
pub struct Reg {
    /// Tells this registration from an earlier one of the same pid.
    pub serial: u64,
    /// 0 until the referee has answered.
    pub pid_d: i64,
    pub pid: i32,
    pub uid: u32,
    pub starttime: u64,
    pub mailbox: i32,
    pidfd: OwnedFd,
    key: u64,
    /// Requests (client, request id) waiting for the referee's answer.
    pub waiters: Vec<(usize, u64)>,
    /// The names the referee gave it: the referee forgets them with the
    /// record when the link breaks, and they are restored with it.
    pub names: Vec<String>,
    /// Where it takes calls (`CallEndpoint`): an abstract Unix socket name.
    pub endpoint: Option<Vec<u8>>,
    /// It declared itself migratable (`Migratable`): the balancer may move
    /// it.
    pub migratable: bool,
}

impl Reg {
    /// Whether the process has exited (its pidfd event may still be on its
    /// way through the poll).
    pub fn exited(&self) -> bool {
        procs::exited(&self.pidfd)
    }
}

pub struct Pids {
    by_pid: HashMap<i32, Reg>,
    by_key: HashMap<u64, i32>,
    next_serial: u64,
    file: PathBuf,
    /// Name requests relayed to the referee and not answered yet: op ->
    /// (pid, serial, name, taken or released).
    name_ops: HashMap<u64, (i32, u64, String, bool)>,
    next_op: u64,
}

/// Removes a mailbox queue if it still is the one the process registered
/// (a private queue its uid created), so a recycled id is left alone.
fn remove_mailbox(mailbox: i32, uid: u32) {
    match sysv::msgctl_stat(mailbox) {
        Ok(i) if i.perm.key == libc::IPC_PRIVATE && i.perm.cuid == uid => {
            if let Err(e) = sysv::msgctl_rmid(mailbox) {
                debug!("removing mailbox {mailbox}: errno {e}");
            }
        }
        _ => {}
    }
}

/// Checks that `mailbox` may serve as `cred`'s mailbox: a private queue
/// that the caller's uid created and owns, that the owner may read.
/// Anything else could let a process have dipcd remove a queue that is
/// not its own when it exits.
pub fn check_mailbox(mailbox: i32, cred: &PeerCred) -> Result<(), (i32, String)> {
    let i = sysv::msgctl_stat(mailbox)
        .map_err(|e| (libc::EINVAL, format!("mailbox queue {mailbox}: errno {e}")))?;
    if i.perm.key != libc::IPC_PRIVATE
        || i.perm.uid != cred.uid
        || i.perm.cuid != cred.uid
        || i.perm.mode & 0o400 == 0
    {
        return Err((
            libc::EPERM,
            format!(
                "queue {mailbox} is not a private queue created and owned by uid {}",
                cred.uid
            ),
        ));
    }
    Ok(())
}

impl Pids {
    /// Opens the table, removing mailboxes a previous dipcd left behind.
    pub fn new(file: PathBuf) -> Pids {
        if let Ok(text) = fs::read_to_string(&file) {
            for line in text.lines() {
                let mut it = line.split_whitespace().map(str::parse::<i64>);
                if let (Some(Ok(id)), Some(Ok(uid))) = (it.next(), it.next()) {
                    if let (Ok(id), Ok(uid)) = (i32::try_from(id), u32::try_from(uid)) {
                        remove_mailbox(id, uid);
                    }
                }
            }
        }
        let p = Pids {
            by_pid: HashMap::new(),
            by_key: HashMap::new(),
            next_serial: 1,
            file,
            name_ops: HashMap::new(),
            next_op: 1,
        };
        // Requests for processes of an earlier dipcd: a new process with
        // the same pid must not take them for its own.
        let _ = fs::remove_dir_all(p.moves_dir());
        p.persist();
        p
    }

    fn persist(&self) {
        let text: String = self
            .by_pid
            .values()
            .map(|r| format!("{} {}\n", r.mailbox, r.uid))
            .collect();
        if let Err(e) = fs::write(&self.file, text) {
            warn!("cannot record mailboxes in {}: {e}", self.file.display());
        }
    }

    /// The live registration of this host with `pid_d`, if any.
    pub fn by_pid_d(&self, pid_d: i64) -> Option<&Reg> {
        if pid_d <= 0 {
            return None;
        }
        self.by_pid
            .values()
            .find(|r| r.pid_d == pid_d && !r.exited())
    }

    pub fn get(&self, pid: i32) -> Option<&Reg> {
        self.by_pid.get(&pid)
    }

    pub fn get_mut(&mut self, pid: i32) -> Option<&mut Reg> {
        self.by_pid.get_mut(&pid)
    }

    /// The registration of `pid` (if it is still `serial`) has a new
    /// mailbox: the old one is no longer its to remove.
    pub fn set_mailbox(&mut self, pid: i32, serial: u64, mailbox: i32) -> bool {
        match self.by_pid.get_mut(&pid).filter(|r| r.serial == serial) {
            Some(r) => {
                r.mailbox = mailbox;
                self.persist();
                true
            }
            None => false,
        }
    }

    /// The pid whose pidfd is watched under `key`.
    pub fn pid_of_key(&self, key: u64) -> Option<i32> {
        self.by_key.get(&key).copied()
    }

    /// Whether another registration uses `mailbox`.
    pub fn mailbox_taken(&self, mailbox: i32) -> bool {
        self.by_pid.values().any(|r| r.mailbox == mailbox)
    }

    /// Starts a registration: the pidfd is watched under `key`.
    /// Returns the serial.
    pub fn add(
        &mut self,
        w: &mut dyn Watch,
        key: u64,
        cred: &PeerCred,
        (pidfd, starttime): (OwnedFd, u64),
        mailbox: i32,
    ) -> Result<u64, (i32, String)> {
        w.watch(key, pidfd.as_raw_fd(), Interest::READABLE)
            .map_err(|e| (libc::ENOMEM, format!("cannot watch pid {}: {e}", cred.pid)))?;
        let serial = self.next_serial;
        self.next_serial += 1;
        self.by_pid.insert(
            cred.pid,
            Reg {
                serial,
                pid_d: 0,
                pid: cred.pid,
                uid: cred.uid,
                starttime,
                mailbox,
                endpoint: None,
                migratable: false,
                pidfd,
                key,
                waiters: Vec::new(),
                names: Vec::new(),
            },
        );
        self.by_key.insert(key, cred.pid);
        self.persist();
        Ok(serial)
    }

    /// Where requests to move are posted for the processes of this host:
    /// `<runtime_dir>/moves/<pid>` holds the target's address, for the
    /// process to find at its next migration point (libdipc's
    /// `migrate::migration_point`).
    fn moves_dir(&self) -> PathBuf {
        self.file.with_file_name("moves")
    }

    /// Posts a request (checked by the referee) that process `pid_d` move
    /// to `target`.
    pub fn ask_move(&mut self, pid_d: i64, target: std::net::SocketAddr) {
        let Some(pid) = self
            .by_pid
            .values()
            .find(|r| r.pid_d == pid_d)
            .map(|r| r.pid)
        else {
            debug!("asked to move pid_d {pid_d}, which is not registered here");
            return;
        };
        let dir = self.moves_dir();
        let tmp = dir.join(format!(".{pid}"));
        let r = fs::create_dir_all(&dir)
            .and_then(|()| fs::write(&tmp, format!("{target}\n")))
            .and_then(|()| fs::rename(&tmp, dir.join(pid.to_string())));
        match r {
            Ok(()) => log::info!("pid {pid} (pid_d {pid_d}) is asked to move to {target}"),
            Err(e) => warn!(
                "cannot post the move of pid {pid} in {}: {e}",
                dir.display()
            ),
        }
    }

    /// Ends a registration: stops watching the process and, with
    /// `remove`, removes its mailbox queue. Returns it.
    pub fn end(&mut self, w: &mut dyn Watch, pid: i32, remove: bool) -> Option<Reg> {
        let r = self.by_pid.remove(&pid)?;
        let _ = fs::remove_file(self.moves_dir().join(pid.to_string()));
        self.by_key.remove(&r.key);
        w.unwatch(r.key);
        if remove {
            remove_mailbox(r.mailbox, r.uid);
        }
        self.persist();
        Some(r)
    }

    /// The registrations the referee has confirmed, to restore after the
    /// link to it was re-opened.
    /// Notes a name request of `pid` on its way to the referee; its
    /// answer goes to [`Pids::name_answered`] with the returned op.
    pub fn name_op(&mut self, pid: i32, name: &str, take: bool) -> u64 {
        let op = self.next_op;
        self.next_op += 1;
        if let Some(r) = self.by_pid.get(&pid) {
            self.name_ops
                .insert(op, (pid, r.serial, name.to_owned(), take));
        }
        op
    }

    /// The referee answered name request `op`. A name it refuses to give
    /// back at a restore (another process took it while the link was
    /// down) is the process's no more.
    pub fn name_answered(&mut self, op: u64, ok: bool, restore: bool) {
        let Some((pid, serial, name, take)) = self.name_ops.remove(&op) else {
            return;
        };
        let Some(r) = self.by_pid.get_mut(&pid).filter(|r| r.serial == serial) else {
            return;
        };
        if take && ok {
            if !r.names.contains(&name) {
                r.names.push(name);
            }
        } else if (!take && ok) || (take && restore) {
            if restore {
                warn!("pid {pid} (pid_d {}) lost its name {name:?}", r.pid_d);
            }
            r.names.retain(|n| *n != name);
        }
    }

    /// The link was re-opened: answers to requests sent on the old one
    /// will not come.
    pub fn forget_name_ops(&mut self) {
        self.name_ops.clear();
    }

    /// Every registration, for the load report.
    pub fn all(&self) -> impl Iterator<Item = &Reg> {
        self.by_pid.values()
    }

    pub fn confirmed(&self) -> impl Iterator<Item = &Reg> {
        self.by_pid.values().filter(|r| r.pid_d > 0)
    }

    /// dipcd stops: every registration ends with it.
    pub fn clear(&mut self, w: &mut dyn Watch) {
        let pids: Vec<i32> = self.by_pid.keys().copied().collect();
        for p in pids {
            self.end(w, p, true);
        }
        let _ = fs::remove_file(&self.file);
    }
}
