//! The library's per-process state: the configuration, where each id the
//! process uses lives, and idle connections to the daemon.
//!
//! Two kinds of connection are pooled. *Control* connections carry key
//! look-ups, which dipcd relays to the referee. *Sessions* are TCP
//! connections straight to the worker on another host (opened by dipcd,
//! see [`Client::session`]) and carry calls on structures owned there;
//! each blocked call has its own session and worker, so threads never wait
//! for each other. A connection is taken from its pool for one call and
//! returned after, and after a `fork` the child drops the parent's
//! connections rather than share their sockets.
//!
//! `SEM_UNDO`: the sessions of a process on one owner that carry (or
//! carried) `SEM_UNDO` operations join the process's one undo context
//! there (`SemJoin`, see the worker's `undo` module), whatever thread uses
//! them, so the owner's kernel keeps one undo list for the process. The
//! library remembers, per owner, the number of the context its `SEM_UNDO`
//! operations went to. If a session then finds another context there (the
//! old one ended: its sessions were all lost, to a cut link, a worker or
//! host that died), the adjustments were undone by the owner's kernel
//! while the process lives: that call fails with `ENOLINK` instead of
//! going on as if nothing happened. The error is given once per lost
//! context; the process then starts afresh there (a lock it believed it
//! held is not held any more).

use crate::client::{Client, ClientError, Creds};
use dipc_common::config::{Config, SPIN_US_MAX};
use dipc_common::metrics::Call;
use dipc_common::sys::{self, HeldSignals};
use dipc_common::wire::{IpcKind, Message, Origin};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, Instant};

/// Where the structure behind an id lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A structure of this host: plain system calls.
    Local,
    /// A distributed structure owned by this host: plain system calls, and
    /// the referee is told when it is removed.
    Owned { key: i32 },
    /// A distributed structure owned by another host, as `id` there;
    /// every call carries `origin` (what the get resolved the id from), so
    /// that the owner refuses it with `EIDRM` once the id no longer names
    /// that structure (see the worker's `origin` module).
    Remote {
        owner: SocketAddr,
        id: i32,
        origin: Origin,
    },
}

/// Pooled connections, with the pid that opened them.
struct Pools {
    pid: u32,
    control: Vec<Client>,
    sessions: HashMap<SocketAddr, Vec<Client<TcpStream>>>,
    /// Names this process's `SEM_UNDO` contexts (drawn anew in a forked
    /// child, which inherits no adjustments).
    nonce: u64,
    /// Per owner, the `SEM_UNDO` context this process's operations with
    /// `SEM_UNDO` went to.
    undo: HashMap<SocketAddr, i64>,
}

static CONFIG: OnceLock<Result<Config, String>> = OnceLock::new();
static POOLS: Mutex<Option<Pools>> = Mutex::new(None);
/// Routes stay valid across `fork` (ids are host-wide), and are read on
/// every call, so they live apart from the pools, behind a read-mostly lock.
static ROUTES: RwLock<Option<HashMap<(IpcKind, i32), Route>>> = RwLock::new(None);

/// The configuration ($DIPC_CONFIG or the default path), read once, with
/// `$DIPC_SPIN_US` (if set and not empty) in place of `library.spin_us`.
pub fn config() -> Result<&'static Config, ClientError> {
    CONFIG
        .get_or_init(|| {
            let r = load_config();
            if let Err(e) = &r {
                // Every distributed call fails with EINVAL from now on; say
                // why once, where a C program's user will see it.
                eprintln!("dipc: {e}");
            }
            r
        })
        .as_ref()
        .map_err(|e| ClientError::Remote {
            errno: libc::EINVAL,
            message: e.clone(),
        })
}

fn load_config() -> Result<Config, String> {
    let mut c = Config::load_default().map_err(|e| e.to_string())?;
    if let Some(v) = std::env::var_os("DIPC_SPIN_US").filter(|v| !v.is_empty()) {
        c.library.spin = spin_override(&v)?;
    }
    Ok(c)
}

fn spin_override(v: &std::ffi::OsStr) -> Result<Duration, String> {
    v.to_str()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&us| us <= SPIN_US_MAX.unsigned_abs())
        .map(Duration::from_micros)
        .ok_or_else(|| {
            format!(
                "$DIPC_SPIN_US: must be an integer between 0 and {SPIN_US_MAX} (microseconds), \
                 got {v:?}"
            )
        })
}

fn pools() -> MutexGuard<'static, Option<Pools>> {
    // A panic while holding the lock cannot leave the pools inconsistent
    // (every update is a single push or pop), so a poisoned lock is still
    // usable.
    let mut g = POOLS.lock().unwrap_or_else(|p| p.into_inner());
    let pid = std::process::id();
    match g.as_mut() {
        Some(p) if p.pid == pid => {}
        Some(p) => {
            // We are a forked child: the pooled connections are the
            // parent's (its employers act with its pid). Closing our copies
            // of the sockets leaves the parent's open.
            p.pid = pid;
            p.control.clear();
            p.sessions.clear();
            p.nonce = sys::random_u64();
            p.undo.clear();
        }
        None => {
            *g = Some(Pools {
                pid,
                control: Vec::new(),
                sessions: HashMap::new(),
                nonce: sys::random_u64(),
                undo: HashMap::new(),
            })
        }
    }
    g
}

/// Whether this process has `SEM_UNDO` adjustments in a context on
/// another host (it joined one with a `SEM_UNDO` operation there).
/// The process that made a `SEM_UNDO` operation on a semaphore set of
/// this host through the library (0: none): the kernel keeps its
/// adjustments, which it applies when that very process exits, so the
/// process cannot move (see `crate::migrate`). A forked child has no
/// adjustments of its own (fork(2)), hence the pid.
static LOCAL_UNDO: AtomicU32 = AtomicU32::new(0);

/// Notes `SEM_UNDO` in `flags` (one per operation) of a semop made here.
pub fn note_local_undo(mut flags: impl Iterator<Item = i16>) {
    if flags.any(|f| i32::from(f) & libc::SEM_UNDO != 0) {
        LOCAL_UNDO.store(std::process::id(), Ordering::Relaxed);
    }
}

/// Whether this process made a `SEM_UNDO` operation on this host.
pub fn holds_local_undo() -> bool {
    LOCAL_UNDO.load(Ordering::Relaxed) == std::process::id()
}

pub fn holds_remote_undo() -> bool {
    pools().as_ref().is_some_and(|p| !p.undo.is_empty())
}

/// Whether `msg` is a `semop` with `SEM_UNDO` on one of its operations.
fn uses_undo(msg: &Message) -> bool {
    match msg {
        Message::SemOp { ops, .. } => ops.iter().any(|o| i32::from(o.flg) & libc::SEM_UNDO != 0),
        _ => false,
    }
}

/// This process's nonce and its `SEM_UNDO` context on `owner`, if any.
fn undo_state(p: &Pools, owner: SocketAddr) -> (u64, Option<i64>) {
    (p.nonce, p.undo.get(&owner).copied())
}

/// Keeps this process's `SEM_UNDO` operations on `owner` in one context
/// there, and fails a call with `ENOLINK` (once) when that context was
/// lost (see the module's docs). `c` is the session about to carry `msg`.
/// `undo` is what [`undo_state`] said before `c` was taken.
fn undo_check(
    owner: SocketAddr,
    msg: &Message,
    c: &mut Client<TcpStream>,
    (nonce, recorded): (u64, Option<i64>),
) -> Result<(), ClientError> {
    if recorded.is_none() && !uses_undo(msg) {
        return Ok(());
    }
    let ctx = c.join_undo(nonce)?;
    let mut g = pools();
    let Some(p) = g.as_mut() else { return Ok(()) };
    match p.undo.get(&owner).copied() {
        Some(old) if old != ctx => {
            p.undo.remove(&owner);
            // Sessions of the lost context must not carry on, not even
            // one that still looks open: the process starts afresh.
            if let Some(v) = p.sessions.get_mut(&owner) {
                v.retain(|s| s.undo_ctx().is_none_or(|x| x == ctx));
            }
            Err(ClientError::Remote {
                errno: libc::ENOLINK,
                message: format!(
                    "the SEM_UNDO adjustments of this process on {owner} were undone: \
                     its sessions there were lost"
                ),
            })
        }
        None if uses_undo(msg) => {
            p.undo.insert(owner, ctx);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Slots of the table of ids known to be this host's (per kind).
const FAST_SLOTS: usize = 1024;

/// Ids whose calls are plain system calls here (route `Local` or
/// `Owned`), one slot per id's low bits, holding `id << 32 | 1`: the
/// check every call on an id makes first is one relaxed load, with no
/// lock and no hashing, so a plain structure costs its system call and
/// next to nothing more (the preload library puts every System V call of
/// a program through here). A slot is a hint kept in step with
/// [`ROUTES`]: [`set_route`] and [`forget_route`] write or clear it before
/// the route changes, and an id whose slot another id took is looked up
/// in `ROUTES` as before.
static FAST: [[AtomicU64; FAST_SLOTS]; 3] =
    [const { [const { AtomicU64::new(0) }; FAST_SLOTS] }; 3];

fn fast_slot(kind: IpcKind, id: i32) -> &'static AtomicU64 {
    let k = match kind {
        IpcKind::Msg => 0,
        IpcKind::Sem => 1,
        IpcKind::Shm => 2,
    };
    &FAST[k][id as u32 as usize % FAST_SLOTS]
}

fn fast_tag(id: i32) -> u64 {
    (u64::from(id as u32) << 32) | 1
}

/// True when `id` is known to be a structure of this host (`Local` or
/// `Owned`): its calls are plain system calls. False says nothing: ask
/// [`route`].
pub fn known_local(kind: IpcKind, id: i32) -> bool {
    fast_slot(kind, id).load(Ordering::Relaxed) == fast_tag(id)
}

fn fast_update(kind: IpcKind, id: i32, r: Option<Route>) {
    let slot = fast_slot(kind, id);
    match r {
        Some(Route::Local | Route::Owned { .. }) => slot.store(fast_tag(id), Ordering::Relaxed),
        // Only this id's own entry is cleared; another id's stays.
        _ => {
            let _ = slot.compare_exchange(fast_tag(id), 0, Ordering::Relaxed, Ordering::Relaxed);
        }
    }
}

pub fn route(kind: IpcKind, id: i32) -> Option<Route> {
    let g = ROUTES.read().unwrap_or_else(|p| p.into_inner());
    g.as_ref().and_then(|m| m.get(&(kind, id)).copied())
}

pub fn set_route(kind: IpcKind, id: i32, r: Route) {
    let mut g = ROUTES.write().unwrap_or_else(|p| p.into_inner());
    // Under the lock, so that the hint and the table change together.
    fast_update(kind, id, Some(r));
    g.get_or_insert_with(HashMap::new).insert((kind, id), r);
}

pub fn forget_route(kind: IpcKind, id: i32) {
    let mut g = ROUTES.write().unwrap_or_else(|p| p.into_inner());
    fast_update(kind, id, None);
    if let Some(m) = g.as_mut() {
        m.remove(&(kind, id));
    }
    if let Some(m) = MOVED.write().unwrap_or_else(|p| p.into_inner()).as_mut() {
        m.remove(&(kind, id));
    }
}

/// Ids this process brought from another host when it moved, and the ids
/// this host's structures are known to it by instead where their numbers
/// met (see `crate::moved_ids`). Their routes are never `Local` or
/// `Owned`: the number is not the structure's on this host, so no plain
/// system call may be made with it.
static MOVED: RwLock<Option<std::collections::HashSet<(IpcKind, i32)>>> = RwLock::new(None);

/// The highest number handed out for a structure of this host whose own
/// id is taken by a moved id (the next ones count down from it). The
/// kernel makes an id as `seq << 15 | index` (`ipc/util.c`), the index
/// cycling below the larger of 64 and 1.5 times the structures of the kind
/// in use, `seq` growing by one at each cycle: numbers this high need
/// `seq` at its last value (millions of structures made) and an index
/// near 32767 (some 21,000 in use at once), so they are, in practice,
/// never a structure's.
pub const ALIAS_TOP: i32 = i32::MAX;

/// Routes `id` as a moved id (see [`MOVED`]).
pub fn pin_route(kind: IpcKind, id: i32, r: Route) {
    debug_assert!(matches!(r, Route::Remote { .. }));
    set_route(kind, id, r);
    MOVED
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(Default::default)
        .insert((kind, id));
}

/// Whether `id` is a moved id of this process, not the number of this
/// host's structure.
pub fn is_moved(kind: IpcKind, id: i32) -> bool {
    MOVED
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .is_some_and(|m| m.contains(&(kind, id)))
}

/// Routes a structure of this host, or a distributed one, whose own id
/// `id` on this host is also a moved id of this process: under a number
/// of its own, counted down from [`ALIAS_TOP`]. `r` must not route by
/// the id (`Remote`).
pub fn alias(kind: IpcKind, r: Route) -> i32 {
    let mut g = ROUTES.write().unwrap_or_else(|p| p.into_inner());
    let m = g.get_or_insert_with(HashMap::new);
    let mut id = ALIAS_TOP;
    while m.contains_key(&(kind, id)) {
        id -= 1;
    }
    fast_update(kind, id, Some(r));
    m.insert((kind, id), r);
    drop(g);
    MOVED
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(Default::default)
        .insert((kind, id));
    id
}

/// Every distributed id this process knows, with its route: what a move
/// carries (see `crate::moved_ids`).
pub fn distributed_routes() -> Vec<(IpcKind, i32, Route)> {
    let g = ROUTES.read().unwrap_or_else(|p| p.into_inner());
    g.as_ref().map_or_else(Vec::new, |m| {
        m.iter()
            .filter(|(_, r)| **r != Route::Local)
            .map(|(&(k, id), &r)| (k, id, r))
            .collect()
    })
}

/// A key look-up or other short request to this host's dipcd.
pub fn control(msg: &Message) -> Result<Message, ClientError> {
    control_conn()?.call(msg)
}

/// A connection to this host's dipcd held for requests that must travel
/// on one connection: a key's creation is granted to the connection that
/// asked, and only its commit or abort on that connection counts (if it
/// closes first, dipcd gives the creation up). Back to the pool when
/// dropped, unless it failed.
pub struct ControlConn {
    c: Option<Client>,
}

impl ControlConn {
    pub fn call(&mut self, msg: &Message) -> Result<Message, ClientError> {
        let Some(c) = self.c.as_mut() else {
            return Err(ClientError::Unexpected("control connection lost"));
        };
        let r = c.call(msg);
        // A connection that failed is dropped; one that carried an error
        // reply is fine.
        if matches!(r, Err(ClientError::Channel(_))) {
            self.c = None;
        }
        r
    }
}

impl Drop for ControlConn {
    fn drop(&mut self) {
        if let Some(c) = self.c.take() {
            if let Some(p) = pools().as_mut() {
                p.control.push(c);
            }
        }
    }
}

/// A control connection of this process's pool, or a new one.
pub fn control_conn() -> Result<ControlConn, ClientError> {
    let creds = Creds::current();
    let pooled = pools().as_mut().and_then(|p| {
        // Connections to a dipcd that has since restarted are dropped, and
        // so are those opened with credentials the process no longer has
        // (dipcd acts with those of the connect).
        while let Some(c) = p.control.pop() {
            if c.is_idle_and_open() && c.acts_as(&creds) {
                return Some(c);
            }
        }
        None
    });
    let c = match pooled {
        Some(c) => c,
        None => Client::for_config(config()?)?,
    };
    Ok(ControlConn { c: Some(c) })
}

/// A call on a structure owned by `owner`. `may_block` calls wait as long
/// as the owner's kernel blocks them; a signal interrupts them with
/// `EINTR` (after the owner stopped the call), as a local call would be.
pub fn remote(owner: SocketAddr, msg: &Message, may_block: bool) -> Result<Message, ClientError> {
    remote_as(owner, msg, may_block, None)
}

/// As [`remote`], on a session whose mailbox sends are typed with `pid_d`
/// (see `Client::pid_d`) if one is given: `ENOTCONN` if dipcd does not
/// know this process as `pid_d`.
pub fn remote_as(
    owner: SocketAddr,
    msg: &Message,
    may_block: bool,
    pid_d: Option<i64>,
) -> Result<Message, ClientError> {
    let started = Instant::now();
    let r = call_remote(owner, msg, may_block, pid_d);
    // The owner's worker counts what it serves; this host counts what its
    // processes asked for, failures to reach the owner included.
    crate::made::record(Call::of(msg.kind()).unwrap_or(Call::Other), &r, started);
    r
}

fn call_remote(
    owner: SocketAddr,
    msg: &Message,
    may_block: bool,
    pid_d: Option<i64>,
) -> Result<Message, ClientError> {
    // From here the application is waiting in its call: a signal must
    // interrupt one that may block even while its session opens (see
    // `Client::call_blocking`).
    let held = may_block.then(HeldSignals::hold);
    let creds = Creds::current();
    let mut undo = (0, None);
    let pooled = pools().as_mut().and_then(|p| {
        undo = undo_state(p, owner);
        let v = p.sessions.get_mut(&owner)?;
        // Sessions whose worker has gone (its host restarted) are dropped,
        // and so are those opened with credentials the process no longer
        // has: calls act with its credentials of now.
        v.retain(|c| c.is_idle_and_open() && c.acts_as(&creds));
        let i = match pid_d {
            None => v.len().checked_sub(1)?,
            Some(want) => v.iter().rposition(|c| c.pid_d() == want)?,
        };
        Some(v.swap_remove(i))
    });
    let mut c = match pooled {
        Some(c) => c,
        // Nothing has run on the owner yet: an open that failed in
        // transit may be tried again.
        None => crate::retry::retrying(|| Client::session(config()?, owner))?,
    };
    if pid_d.is_some_and(|want| c.pid_d() != want) {
        if let Some(p) = pools().as_mut() {
            p.sessions.entry(owner).or_default().push(c);
        }
        return Err(ClientError::Remote {
            errno: libc::ENOTCONN,
            message: "this host's dipcd does not know this process as registered".into(),
        });
    }
    let mut r = match undo_check(owner, msg, &mut c, undo) {
        Ok(()) => c.call_blocking(msg, may_block, held),
        Err(e) => Err(e),
    };
    if let Ok(Message::MsgData { .. }) = r {
        // A confirmation that cannot be sent leaves the message to the
        // worker, which puts it back in the queue: taking it here too
        // would deliver it twice.
        if let Err(e) = c.confirm() {
            r = Err(e);
        }
    }
    if !matches!(r, Err(ClientError::Channel(_))) {
        if let Some(p) = pools().as_mut() {
            p.sessions.entry(owner).or_default().push(c);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn the_fast_table_follows_the_routes() {
        let (k, id) = (IpcKind::Sem, 0x7fff_0123);
        assert!(!known_local(k, id));
        set_route(k, id, Route::Owned { key: 5 });
        assert!(known_local(k, id) && !known_local(IpcKind::Msg, id));
        // Another id in the same slot takes it; the first is still routed.
        let other = id - FAST_SLOTS as i32;
        set_route(k, other, Route::Local);
        assert!(known_local(k, other) && !known_local(k, id));
        assert_eq!(route(k, id), Some(Route::Owned { key: 5 }));
        // Forgetting the first leaves the second's hint alone.
        forget_route(k, id);
        assert!(known_local(k, other));
        let remote = Route::Remote {
            owner: "10.0.0.1:7100".parse().unwrap(),
            id: 1,
            origin: Origin::default(),
        };
        set_route(k, other, remote);
        assert!(!known_local(k, other));
        set_route(k, id, Route::Local);
        assert!(known_local(k, id));
        forget_route(k, id);
        assert!(!known_local(k, id));
    }

    #[test]
    fn spin_override_is_checked() {
        assert_eq!(spin_override(OsStr::new("0")), Ok(Duration::ZERO));
        assert_eq!(
            spin_override(OsStr::new("10000")),
            Ok(Duration::from_micros(10_000))
        );
        for bad in ["10001", "-1", "fast", " 5", "1.5"] {
            let e = spin_override(OsStr::new(bad)).unwrap_err();
            assert!(e.starts_with("$DIPC_SPIN_US: must be"), "{e}");
            assert!(e.contains(bad), "{e}");
        }
    }
}
