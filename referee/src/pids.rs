//! The referee's table of registered processes: cluster-wide process ids
//! (`pid_d`) and where each process runs.
//!
//! A pid_d comes from a counter that starts at 1 and never goes back, so
//! a pid_d is never given to two processes (while this referee lives). A
//! record is `{pid_d, host, pid}` plus what callers need to reach the
//! process: its uid, start time (which tells it from a later process with
//! the same pid) and mailbox queue id. Each record belongs to the
//! connection of the host that registered it: when that connection closes,
//! the host's dipcd has lost the pidfds that watch its processes, so its
//! records go too (a dipcd that only lost its link restores them when it
//! joins again, with their pid_d).
//!
//! pid_d values come from the counter only, and it never wraps: it stops
//! at [`MAX_PID_D`] (2^53 - 1, exact wherever a pid_d is read as a JSON
//! number, and more registrations than any cluster makes) and refuses new
//! registrations from then on (`EAGAIN`). A restore names a pid_d the
//! host had from a referee: it must be in `1..=MAX_PID_D`, and above the
//! counter only during [`RESTORE_WINDOW`] after this referee started (a
//! restarted referee's counter starts afresh, and the hosts restore their
//! processes as soon as their links are back); later, only ids this
//! counter gave out can come back. So no host can make the counter jump
//! to the end of its range, and no pid_d is negative.
//!
//! Beside the records sits the table of *names* (`"Buffer"`,
//! `"Philosopher[3]"`): each names one registered process, unique in the
//! cluster. A name belongs to its record: it goes whenever the record
//! goes (uregist, exit, the host's link), so no name outlives its process
//! or comes to name another.
//!
//! The table is not secret: any process may look any pid_d up (it must,
//! to send it a signal or a message), so listing it reveals nothing more,
//! much like `ps`.

use dipc_common::wire::PidRecord;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The largest pid_d: 2^53 - 1.
pub const MAX_PID_D: i64 = (1 << 53) - 1;

/// How long after the referee starts a restore may name a pid_d its
/// counter has not reached: hosts whose link broke when the previous
/// referee stopped reconnect within their backoff (at most 1 s) plus a
/// handshake; this leaves them ample time.
pub const RESTORE_WINDOW: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
struct Entry {
    host: SocketAddr,
    conn: usize,
    pid: i32,
    uid: u32,
    starttime: u64,
    mailbox: i32,
    since: Instant,
    /// The one-time token a move of this process must show (see
    /// [`PidTable::move_token`]).
    move_token: Option<u64>,
}

/// What a host's dipcd asks to record.
#[derive(Debug, Clone, Copy)]
pub struct Registration {
    /// 0 for a new registration, else the pid_d to restore.
    pub pid_d: i64,
    pub pid: i32,
    pub uid: u32,
    pub starttime: u64,
    pub mailbox: i32,
}

/// The longest name, in bytes.
pub const MAX_NAME: usize = 128;
/// Names one process may hold: bounds what one registration can make
/// the referee keep.
pub const MAX_NAMES_PER_PID: usize = 16;

/// Why a request was refused: an `errno` and a message.
pub type Refusal = (i32, String);

#[derive(Debug)]
pub struct PidTable {
    /// The next pid_d to give; at most `MAX_PID_D + 1`.
    next: i64,
    /// When this referee started (see [`RESTORE_WINDOW`]).
    started: Instant,
    pids: BTreeMap<i64, Entry>,
    /// pid_d by host and pid, so one process has one record.
    by_proc: HashMap<(SocketAddr, i32), i64>,
    /// name -> pid_d, and each pid_d's names (so a removal finds them).
    names: BTreeMap<String, i64>,
    names_of: HashMap<i64, Vec<String>>,
}

impl Default for PidTable {
    fn default() -> Self {
        PidTable::new(Instant::now())
    }
}

impl PidTable {
    pub fn new(started: Instant) -> PidTable {
        PidTable {
            next: 1,
            started,
            pids: BTreeMap::new(),
            by_proc: HashMap::new(),
            names: BTreeMap::new(),
            names_of: HashMap::new(),
        }
    }

    /// Records a process of `host` (registered over connection `conn`);
    /// returns its pid_d.
    ///
    /// A process already recorded (same host, pid and start time) keeps
    /// its pid_d. A record of the same host and pid with another start time
    /// is of a process that has exited (its pid was recycled before its
    /// host reported the exit): it is replaced.
    pub fn register(
        &mut self,
        host: SocketAddr,
        conn: usize,
        r: Registration,
        now: Instant,
    ) -> Result<i64, Refusal> {
        if r.pid <= 0 || r.pid_d < 0 {
            return Err((libc::EINVAL, format!("bad registration {r:?}")));
        }
        if r.pid_d > MAX_PID_D {
            return Err((
                libc::EINVAL,
                format!("pid_d {} is beyond the largest, {MAX_PID_D}", r.pid_d),
            ));
        }
        if r.pid_d >= self.next && now.duration_since(self.started) > RESTORE_WINDOW {
            return Err((
                libc::EINVAL,
                format!(
                    "pid_d {} was never given out by this referee (its counter is at {})",
                    r.pid_d, self.next
                ),
            ));
        }
        if let Some(&old) = self.by_proc.get(&(host, r.pid)) {
            match self.pids.get_mut(&old) {
                Some(e) if e.starttime == r.starttime && (r.pid_d == 0 || r.pid_d == old) => {
                    e.conn = conn;
                    return Ok(old);
                }
                _ => {
                    self.remove(old);
                }
            }
        }
        let pid_d = if r.pid_d == 0 {
            let p = self.next;
            if p > MAX_PID_D {
                return Err((
                    libc::EAGAIN,
                    format!("every pid_d up to {MAX_PID_D} has been given out"),
                ));
            }
            self.next = p + 1;
            p
        } else {
            // A restore: the pid_d must still be free (a referee that
            // restarted may have given it to another process since).
            if self.pids.contains_key(&r.pid_d) {
                return Err((
                    libc::EEXIST,
                    format!("pid_d {} belongs to another process now", r.pid_d),
                ));
            }
            // r.pid_d <= MAX_PID_D, so this cannot overflow.
            self.next = self.next.max(r.pid_d + 1);
            r.pid_d
        };
        self.pids.insert(
            pid_d,
            Entry {
                host,
                conn,
                pid: r.pid,
                uid: r.uid,
                starttime: r.starttime,
                mailbox: r.mailbox,
                since: now,
                move_token: None,
            },
        );
        self.by_proc.insert((host, r.pid), pid_d);
        Ok(pid_d)
    }

    /// Starts a move of the process `{pid_d, host, pid}` (only the process
    /// itself asks, through its dipcd): returns the one-time token that
    /// the process taking the pid_d over must show ([`PidTable::move_in`]).
    /// Asking again replaces the token, so only the latest move can
    /// complete.
    pub fn move_token(
        &mut self,
        pid_d: i64,
        host: SocketAddr,
        pid: i32,
        token: u64,
    ) -> Result<u64, Refusal> {
        self.owner(pid_d, host, pid)?;
        if let Some(e) = self.pids.get_mut(&pid_d) {
            e.move_token = Some(token);
        }
        Ok(token)
    }

    /// Whether a user may ask that `pid_d` move (root or `admin_group`, or
    /// the process's own uid); returns the connection of its host and its
    /// pid there.
    pub fn may_move(&self, pid_d: i64, uid: u32, admin: bool) -> Result<(usize, i32), Refusal> {
        let e = self
            .pids
            .get(&pid_d)
            .ok_or_else(|| (libc::ESRCH, format!("no registered process {pid_d}")))?;
        if !admin && e.uid != uid {
            return Err((
                libc::EPERM,
                format!("pid_d {pid_d} belongs to uid {}, not to uid {uid}", e.uid),
            ));
        }
        Ok((e.conn, e.pid))
    }

    /// Whether `token` is the pending move token of `pid_d`, a process of
    /// `uid` (a worker checks before it starts a program for a move).
    pub fn check_move(&self, pid_d: i64, token: u64, uid: u32) -> Result<(), Refusal> {
        let e = self
            .pids
            .get(&pid_d)
            .ok_or_else(|| (libc::ESRCH, format!("no registered process {pid_d}")))?;
        if e.move_token != Some(token) || e.uid != uid {
            return Err((
                libc::EPERM,
                format!("pid_d {pid_d} has no move of uid {uid} with that token"),
            ));
        }
        Ok(())
    }

    /// The move of `{pid_d, host, pid}` failed before its hand-over: its
    /// token is void.
    pub fn move_abort(&mut self, pid_d: i64, host: SocketAddr, pid: i32) -> Result<(), Refusal> {
        self.owner(pid_d, host, pid)?;
        if let Some(e) = self.pids.get_mut(&pid_d) {
            e.move_token = None;
        }
        Ok(())
    }

    /// A process of `host` (over connection `conn`) takes `pid_d` over
    /// with `token`: the record, its names with it, now names this process
    /// and its mailbox, and the token is used up. The uid must be the
    /// record's (`EPERM`), the token the one given out (`EPERM`). The old
    /// process's host cannot end the record any more: its `uregist` or
    /// exit no longer matches the triple.
    pub fn move_in(
        &mut self,
        host: SocketAddr,
        conn: usize,
        r: Registration,
        token: u64,
        now: Instant,
    ) -> Result<(), Refusal> {
        if r.pid <= 0 {
            return Err((libc::EINVAL, format!("bad move {r:?}")));
        }
        let e = self
            .pids
            .get(&r.pid_d)
            .ok_or_else(|| (libc::ESRCH, format!("no registered process {}", r.pid_d)))?;
        if e.move_token != Some(token) {
            return Err((
                libc::EPERM,
                format!("pid_d {} has no move with that token", r.pid_d),
            ));
        }
        if e.uid != r.uid {
            return Err((
                libc::EPERM,
                format!(
                    "pid_d {} belongs to uid {}, not uid {}",
                    r.pid_d, e.uid, r.uid
                ),
            ));
        }
        let (old_host, old_pid) = (e.host, e.pid);
        if self.by_proc.get(&(old_host, old_pid)) == Some(&r.pid_d) {
            self.by_proc.remove(&(old_host, old_pid));
        }
        // A record of the new process's pid on its host is of an exited
        // process whose exit has not been reported yet.
        if let Some(stale) = self.by_proc.get(&(host, r.pid)).copied() {
            if stale != r.pid_d {
                self.remove(stale);
            }
        }
        if let Some(e) = self.pids.get_mut(&r.pid_d) {
            e.host = host;
            e.conn = conn;
            e.pid = r.pid;
            e.starttime = r.starttime;
            e.mailbox = r.mailbox;
            e.since = now;
            e.move_token = None;
        }
        self.by_proc.insert((host, r.pid), r.pid_d);
        Ok(())
    }

    /// `uregist`: removes the record only if the whole triple `{pid_d,
    /// host, pid}` matches; `ESRCH` for an unknown pid_d, `EPERM` for
    /// another process's, and then nothing is removed.
    pub fn unregister(&mut self, pid_d: i64, host: SocketAddr, pid: i32) -> Result<(), Refusal> {
        self.owner(pid_d, host, pid)?;
        self.remove(pid_d);
        Ok(())
    }

    fn remove(&mut self, pid_d: i64) -> Option<Entry> {
        let e = self.pids.remove(&pid_d)?;
        for name in self.names_of.remove(&pid_d).unwrap_or_default() {
            self.names.remove(&name);
        }
        if self.by_proc.get(&(e.host, e.pid)) == Some(&pid_d) {
            self.by_proc.remove(&(e.host, e.pid));
        }
        Some(e)
    }

    /// Whether `{pid_d, host, pid}` is one record, as `uregist` checks.
    fn owner(&self, pid_d: i64, host: SocketAddr, pid: i32) -> Result<(), Refusal> {
        match self.pids.get(&pid_d) {
            None => Err((libc::ESRCH, format!("no registered process {pid_d}"))),
            Some(e) if e.host != host || e.pid != pid => Err((
                libc::EPERM,
                format!(
                    "pid_d {pid_d} is pid {} on {}, not pid {pid} on {host}",
                    e.pid, e.host
                ),
            )),
            Some(_) => Ok(()),
        }
    }

    /// Gives `name` to the process `{pid_d, host, pid}`: `EEXIST` if
    /// another process holds it (the holder taking it again is no error),
    /// `EINVAL` for a bad name, `EAGAIN` past [`MAX_NAMES_PER_PID`].
    pub fn name(
        &mut self,
        pid_d: i64,
        host: SocketAddr,
        pid: i32,
        name: &str,
    ) -> Result<(), Refusal> {
        check_name(name)?;
        self.owner(pid_d, host, pid)?;
        match self.names.get(name) {
            Some(&p) if p == pid_d => return Ok(()),
            Some(&p) => {
                return Err((
                    libc::EEXIST,
                    format!("the name {name:?} belongs to pid_d {p}"),
                ))
            }
            None => {}
        }
        let mine = self.names_of.entry(pid_d).or_default();
        if mine.len() >= MAX_NAMES_PER_PID {
            return Err((
                libc::EAGAIN,
                format!("pid_d {pid_d} holds {MAX_NAMES_PER_PID} names already"),
            ));
        }
        mine.push(name.to_owned());
        self.names.insert(name.to_owned(), pid_d);
        Ok(())
    }

    /// Gives a name back: only its holder may (`EPERM`), `ENOENT` if no
    /// one holds it.
    pub fn release(
        &mut self,
        pid_d: i64,
        host: SocketAddr,
        pid: i32,
        name: &str,
    ) -> Result<(), Refusal> {
        self.owner(pid_d, host, pid)?;
        match self.names.get(name) {
            None => Err((libc::ENOENT, format!("no process is named {name:?}"))),
            Some(&p) if p != pid_d => Err((
                libc::EPERM,
                format!("the name {name:?} belongs to pid_d {p}, not {pid_d}"),
            )),
            Some(_) => {
                self.names.remove(name);
                if let Some(v) = self.names_of.get_mut(&pid_d) {
                    v.retain(|n| n != name);
                    if v.is_empty() {
                        self.names_of.remove(&pid_d);
                    }
                }
                Ok(())
            }
        }
    }

    /// The process holding `name`.
    pub fn lookup_name(&self, name: &str, now: Instant) -> Option<PidRecord> {
        self.names.get(name).and_then(|p| self.lookup(*p, now))
    }

    /// Up to `limit` names after `after`, in order, and whether more follow.
    pub fn names_page(&self, after: &str, limit: usize) -> (Vec<(String, i64)>, bool) {
        use std::ops::Bound;
        let mut rest = self
            .names
            .range::<str, _>((Bound::Excluded(after), Bound::Unbounded))
            .map(|(n, p)| (n.clone(), *p));
        let page: Vec<(String, i64)> = rest.by_ref().take(limit).collect();
        let more = rest.next().is_some();
        (page, more)
    }

    pub fn lookup(&self, pid_d: i64, now: Instant) -> Option<PidRecord> {
        self.pids.get(&pid_d).map(|e| record(pid_d, e, now))
    }

    #[cfg(test)]
    pub fn list(&self, now: Instant) -> Vec<PidRecord> {
        self.page(0, usize::MAX, now).0
    }

    /// Up to `limit` registrations above `after` in pid_d order, and
    /// whether more follow.
    pub fn page(&self, after: i64, limit: usize, now: Instant) -> (Vec<PidRecord>, bool) {
        use std::ops::Bound;
        let mut rest = self
            .pids
            .range((Bound::Excluded(after), Bound::Unbounded))
            .map(|(p, e)| record(*p, e, now));
        let page: Vec<PidRecord> = rest.by_ref().take(limit).collect();
        let more = rest.next().is_some();
        (page, more)
    }

    /// The connection of a host closed: its records go. Returns how many.
    pub fn conn_closed(&mut self, conn: usize) -> usize {
        let gone: Vec<i64> = self
            .pids
            .iter()
            .filter(|(_, e)| e.conn == conn)
            .map(|(p, _)| *p)
            .collect();
        for p in &gone {
            self.remove(*p);
        }
        gone.len()
    }
}

/// A name is 1 to [`MAX_NAME`] bytes of printable text: it is shown by
/// `dipcref names` and written in programs, so control characters and
/// spaces at its ends would only make look-alikes.
pub fn check_name(name: &str) -> Result<(), Refusal> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err((
            libc::EINVAL,
            format!("a name has 1 to {MAX_NAME} bytes, not {}", name.len()),
        ));
    }
    if name.chars().any(char::is_control) || name.trim() != name {
        return Err((
            libc::EINVAL,
            format!("the name {name:?} has control characters or spaces at its ends"),
        ));
    }
    Ok(())
}

fn record(pid_d: i64, e: &Entry, now: Instant) -> PidRecord {
    PidRecord {
        pid_d,
        host: e.host,
        pid: e.pid,
        uid: e.uid,
        starttime: e.starttime,
        mailbox: e.mailbox,
        since_ms: now.duration_since(e.since).as_millis() as u64,
    }
}

#[cfg(test)]
mod tests;
