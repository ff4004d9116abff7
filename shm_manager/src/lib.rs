//! The manager of one distributed shared memory segment, on its owner host.
//!
//! dipcd forks one per segment when the first process asks to attach
//! (`ShmOpen`), binding the Unix socket `Config::shm_socket(id)` for it.
//! Processes on this host connect to that socket; a process on another
//! host reaches it through a worker, which passes the process's TCP
//! connection here. Each attached process is a *participant* with its own
//! private copy of the segment, trapped by page protection (see the
//! library's `shm` module); the manager decides, unit by unit, who may read
//! and who may write ([`units`]), and moves the contents: the real segment
//! here holds every unit that nobody holds for write.
//!
//! The manager is a state machine on the daemons' reactor
//! (`dipc_common::reactor`), single-threaded and never blocking on one
//! participant: a participant that does not answer a revocation within the
//! request time-out is dropped (and a unit it held for write is lost). It
//! exits when the segment is removed (`IPC_RMID`) and nobody is attached,
//! or when the segment is gone.

mod admit;
#[cfg(test)]
mod sim;
pub mod units;

use dipc_common::channel::Codec;
use dipc_common::config::{Config, ShmMode};
use dipc_common::metrics::Metrics;
use dipc_common::net::Stream;
use dipc_common::reactor::{
    self, ConnId, Creds, Event, Gone, Handler, Listener, Out, Peer, Reactor,
};
use dipc_common::secure::Secure;
use dipc_common::sysv;
use dipc_common::wire::{self, IpcPerm, Message, Protocol, ToManager, UnitRun};
use log::{debug, error, info, warn};
use mio::net::UnixListener;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};
use units::{Action, Holders, Pid, Units};

/// `SHM_DEST` in `shm_perm.mode`: removed, freed at the last detach
/// (linux/shm.h; not in the libc crate).
const SHM_DEST: u32 = 0o1000;
/// How often the segment's own state (removed? gone?) is looked at.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Largest piece of a unit's content in one frame.
const CHUNK: usize = 256 * 1024;
/// At most this many connections at once.
const MAX_CONNECTIONS: usize = 4096;

/// Runs the manager of segment `id` on `listener`; returns the exit code.
pub fn run(listener: std::os::unix::net::UnixListener, id: i32, config: &Config) -> i32 {
    let served = Manager::new(id, config).and_then(|mut m| {
        listener.set_nonblocking(true)?;
        let mut r = Reactor::new(MAX_CONNECTIONS)?;
        // Never paused: a participant's agent writes a unit's content
        // with blocking writes while it may have content of ours to read,
        // so a manager that stopped reading it could wait on it for ever.
        // What waits for a participant is bounded by the units it asked
        // for. A worker passes a remote participant's TCP connection along
        // with the first frame.
        let opts = reactor::Options {
            pass_fds: true,
            ..reactor::Options::new(config.max_frame)
        };
        r.listen(Listener::Unix(UnixListener::from_std(listener)), opts)?;
        r.run(&mut m)
    });
    match served {
        Ok(code) => code,
        Err(e) => {
            error!("shm manager for segment {id}: {e}");
            1
        }
    }
}

struct Participant {
    host: SocketAddr,
    readonly: bool,
    /// Closing once everything queued is written (after a detach, a query
    /// or a refusal): no longer attached.
    closing: bool,
}

enum Conn {
    /// Has not said what it is yet.
    Pending(Result<Creds, String>),
    Open(Participant),
}

struct Manager<'a> {
    config: &'a Config,
    id: i32,
    conns: HashMap<ConnId, Conn>,
    /// The real segment, attached here.
    base: *mut u8,
    size: u64,
    /// The mapping's length: `size` rounded up to pages.
    len: usize,
    unit: usize,
    units: Units,
    actions: Vec<Action>,
    /// When the segment's own state is looked at next.
    next_check: Instant,
    /// Faults, invalidations and bytes not yet reported to dipcd (see
    /// [`Manager::report`]).
    counted: Metrics,
}

fn io_err(what: &str, errno: i32) -> io::Error {
    io::Error::new(
        io::Error::from_raw_os_error(errno).kind(),
        format!("{what}: {}", io::Error::from_raw_os_error(errno)),
    )
}

impl Handler for Manager<'_> {
    fn event(&mut self, now: Instant, ev: Event, out: &mut dyn Out) {
        match ev {
            Event::Accepted { conn, peer, .. } => {
                let creds = match peer {
                    Peer::Unix(c) => c,
                    Peer::Tcp(_) => Err("not a local connection".into()),
                };
                self.conns.insert(conn, Conn::Pending(creds));
            }
            Event::Frame { conn, id, msg, fds } => {
                let msg = match ToManager::accept(msg) {
                    Ok(msg) => msg,
                    // Nothing an agent or a querier sends: no answer, as
                    // to any other breach of the protocol.
                    Err(e) => {
                        warn!("shm manager {}: participant {conn}: {e}", self.id);
                        return out.close(conn);
                    }
                };
                self.frame(now, (conn, id), msg, fds, out)
            }
            Event::Closed { conn, why } => {
                match &why {
                    Gone::Protocol(e) => {
                        warn!("shm manager {}: participant {conn}: {e}", self.id)
                    }
                    Gone::Io(e) => debug!("shm manager {}: participant {conn}: {e}", self.id),
                    _ => {}
                }
                if let Some(Conn::Open(p)) = self.conns.remove(&conn) {
                    if !p.closing {
                        debug!("shm manager {}: participant {conn} gone", self.id);
                        self.units.gone(now, conn, &mut self.actions);
                        self.carry_out(out);
                    }
                }
            }
            Event::Tick => self.tick(now, out),
            Event::Signal(_) | Event::Child { .. } => {}
            // It opens and watches nothing of its own.
            Event::Connected { .. } | Event::Ready { .. } => {}
        }
    }

    fn wake_at(&self) -> Option<Instant> {
        Some(
            self.units
                .deadline()
                .map_or(self.next_check, |d| d.min(self.next_check)),
        )
    }
}

impl<'a> Manager<'a> {
    fn new(id: i32, config: &'a Config) -> io::Result<Manager<'a>> {
        let info = sysv::shmctl_stat(id).map_err(|e| io_err("IPC_STAT", e))?;
        // SAFETY: attaching an existing segment read-write at an address the
        // kernel chooses; the mapping is only used within its length.
        let base = unsafe { dipc_common::sysv::raw::shmat(id, std::ptr::null(), 0) };
        if base as isize == -1 {
            return Err(io_err("shmat", sysv::errno()));
        }
        let page = page_size();
        let size = info.segsz;
        let len = usize::try_from(size)
            .ok()
            .and_then(|s| s.checked_next_multiple_of(page))
            .ok_or_else(|| io_err("segment size", libc::EINVAL))?;
        let unit = match config.shm.mode {
            ShmMode::Page => page,
            ShmMode::Segment => len,
        };
        let count = len.div_ceil(unit);
        if count > u32::MAX as usize {
            return Err(io_err("segment size", libc::EFBIG));
        }
        info!(
            "shm manager for segment {id}: {size} bytes, {count} unit(s) of {unit} bytes ({:?} mode), quantum {} ms",
            config.shm.mode,
            config.shm.quantum.as_millis()
        );
        Ok(Manager {
            config,
            id,
            conns: HashMap::new(),
            base: base as *mut u8,
            size,
            len,
            unit,
            units: Units::new(count, config.shm.quantum, config.timeouts.request),
            actions: Vec::new(),
            next_check: Instant::now() + CHECK_EVERY,
            counted: Metrics::default(),
        })
    }

    /// Drops the participants that did not answer a revocation in time,
    /// and looks at the segment's own state every `CHECK_EVERY`.
    fn tick(&mut self, now: Instant, out: &mut dyn Out) {
        let late = self.units.tick(now, &mut self.actions);
        for p in late {
            warn!(
                "shm manager {}: participant {p} did not answer a revocation within {} ms; dropping it",
                self.id,
                self.config.timeouts.request.as_millis()
            );
            out.close(p);
        }
        self.carry_out(out);
        if now >= self.next_check {
            self.next_check = now + CHECK_EVERY;
            self.report();
            if let Some(why) = self.finished() {
                info!("shm manager for segment {}: {why}; exiting", self.id);
                out.stop(0);
            }
        }
    }

    /// Sends dipcd what was counted since the last report (at most every
    /// `CHECK_EVERY`, and once more on the way out: see `Drop`). dipcd
    /// answers at once from its own loop, which never waits for a manager;
    /// a dipcd that cannot be reached (stopping) loses the counts.
    fn report(&mut self) {
        if self.counted == Metrics::default() {
            return;
        }
        let pairs = std::mem::take(&mut self.counted).to_pairs();
        let path = self.config.back_end_socket();
        let sent = std::os::unix::net::UnixStream::connect(&path).and_then(|s| {
            s.set_read_timeout(Some(self.config.timeouts.request))?;
            s.set_write_timeout(Some(self.config.timeouts.request))?;
            let mut ch = dipc_common::channel::Channel::new(s, self.config.max_frame);
            ch.call(1, &Message::StatsReport { pairs })
                .map_err(|e| io::Error::other(e.to_string()))
        });
        match sent {
            Ok(Message::Done { .. }) => {}
            Ok(other) => debug!(
                "shm manager {}: dipcd answered counts with {other:?}",
                self.id
            ),
            Err(e) => debug!("shm manager {}: counts not reported: {e}", self.id),
        }
    }

    /// Why the manager is no longer needed, if it is not.
    fn finished(&self) -> Option<String> {
        match sysv::shmctl_stat(self.id) {
            Err(e) => Some(format!(
                "segment gone ({})",
                io::Error::from_raw_os_error(e)
            )),
            Ok(i) if i.perm.mode & SHM_DEST != 0 && self.participants() == 0 => {
                Some("segment removed and nobody attached".into())
            }
            Ok(_) => None,
        }
    }

    fn participants(&self) -> usize {
        self.conns
            .values()
            .filter(|c| matches!(c, Conn::Open(p) if !p.closing))
            .count()
    }

    /// A frame of connection `t`: its first says what it is (see
    /// `admit`), the next ones are a participant's.
    fn frame(
        &mut self,
        now: Instant,
        (t, rid): (ConnId, u64),
        msg: ToManager,
        fds: Vec<OwnedFd>,
        out: &mut dyn Out,
    ) {
        match self.conns.get(&t) {
            Some(Conn::Pending(_)) => self.first_frame(t, rid, msg, fds, out),
            Some(Conn::Open(_)) => {
                if let Err(why) = self.handle(now, (t, rid), msg, out) {
                    warn!("shm manager {}: participant {t}: {why}", self.id);
                    out.close(t);
                }
                self.carry_out(out);
            }
            None => {}
        }
    }

    fn handle(
        &mut self,
        now: Instant,
        (t, rid): (ConnId, u64),
        msg: ToManager,
        out: &mut dyn Out,
    ) -> Result<(), String> {
        let count = self.units.len() as u32;
        let readonly = match self.conns.get(&t) {
            Some(Conn::Open(p)) => p.readonly,
            _ => return Ok(()),
        };
        let kind = msg.kind().name();
        match msg {
            ToManager::ShmFault { unit, write } if unit < count => {
                if write && readonly {
                    return Err(format!("write fault on unit {unit} of a read-only attach"));
                }
                self.counted.shm_faults += 1;
                self.units.fault(now, t, unit, write, &mut self.actions);
            }
            ToManager::ShmData { unit, offset, data } if unit < count => {
                if !self.units.may_store(t, unit) {
                    // A second copy of a write-back that crossed a
                    // revocation: the first one is what counts.
                    debug!("shm manager {}: unit {unit} from a non-writer", self.id);
                    return Ok(());
                }
                let (start, ulen) = self.unit_range(unit);
                let off = usize::try_from(offset).map_err(|_| "bad offset".to_string())?;
                if off.checked_add(data.len()).is_none_or(|end| end > ulen) {
                    return Err(format!("content past the end of unit {unit}"));
                }
                // SAFETY: start + off + len is within the attached segment
                // (checked above); the segment is mapped read-write here.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        data.as_ptr(),
                        self.base.add(start + off),
                        data.len(),
                    )
                };
                self.counted.bytes_in += data.len() as u64;
            }
            ToManager::ShmRevoked { unit } if unit < count => {
                self.units.revoked(now, t, unit, &mut self.actions);
            }
            ToManager::ShmDetach => {
                self.units.gone(now, t, &mut self.actions);
                if let Some(Conn::Open(p)) = self.conns.get_mut(&t) {
                    p.closing = true;
                }
                out.send(t, rid, &Message::Done { value: 0 });
                out.close_when_flushed(t);
                debug!("shm manager {}: participant {t} detached", self.id);
            }
            ToManager::ShmFault { unit, .. }
            | ToManager::ShmData { unit, .. }
            | ToManager::ShmRevoked { unit } => {
                return Err(format!("{kind} for unit {unit} of {count}"))
            }
            ToManager::ShmAttach { .. } | ToManager::ShmQuery { .. } => {
                return Err(format!("{kind} after attaching"))
            }
        }
        Ok(())
    }

    /// Where unit `u` starts in the segment, and its length (the last one
    /// may be short).
    fn unit_range(&self, u: u32) -> (usize, usize) {
        let start = u as usize * self.unit;
        (start, self.unit.min(self.len - start))
    }

    /// Carries out what the coherence state machine decided.
    fn carry_out(&mut self, out: &mut dyn Out) {
        let actions = std::mem::take(&mut self.actions);
        for a in actions {
            let (to, msg) = match a {
                Action::SendData { to, unit } => {
                    let (start, ulen) = self.unit_range(unit);
                    if let Some(Conn::Open(_)) = self.conns.get(&to) {
                        let mut off = 0;
                        while off < ulen {
                            let n = CHUNK
                                .min(self.config.max_frame as usize - 64)
                                .min(ulen - off);
                            // SAFETY: start + off + n is within the
                            // attached segment.
                            let data = unsafe {
                                std::slice::from_raw_parts(self.base.add(start + off), n)
                            };
                            out.send_encoded(to, &mut |o| {
                                wire::encode_shm_data(0, unit, off as u64, data, o)
                            });
                            off += n;
                        }
                        self.counted.bytes_out += ulen as u64;
                    }
                    continue;
                }
                Action::Grant { to, unit, write } => (to, Message::ShmGrant { unit, write }),
                Action::Lost { to, unit } => (to, Message::ShmLost { unit }),
                Action::Revoke {
                    to,
                    unit,
                    keep_read,
                    want_data,
                } => (
                    to,
                    Message::ShmRevoke {
                        unit,
                        keep_read,
                        want_data,
                    },
                ),
            };
            if let Some(Conn::Open(_)) = self.conns.get(&to) {
                if matches!(msg, Message::ShmRevoke { .. }) {
                    self.counted.shm_invalidations += 1;
                }
                out.send(to, 0, &msg);
            }
        }
    }
}

impl Drop for Manager<'_> {
    fn drop(&mut self) {
        self.report();
        // SAFETY: base is the address shmat returned.
        unsafe { dipc_common::sysv::raw::shmdt(self.base as *const libc::c_void) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf takes a constant.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

#[cfg(test)]
mod tests;
