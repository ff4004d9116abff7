//! Process migration: a registered process moves to another host and keeps
//! its pid_d, its names and every message and signal sent to it.
//!
//! A process opts in with [`migratable`]: a *save* closure that returns
//! the state that must travel, and a *restore* closure that the program,
//! started again on the target host, gets it back with. [`migrate`] moves
//! the calling process:
//!
//! 1. its dipcd gets a one-time token for the pid_d from the referee;
//! 2. the worker of its session on the target host starts the same
//!    program there (executable, arguments, environment, working
//!    directory, as the same user), with every signal blocked, once the
//!    referee has confirmed the move's token for that session. If that
//!    fails (`ENOENT`, `EACCES`, `ENOEXEC`...), the token is given back and
//!    `migrate` returns the error: nothing else was touched;
//! 3. the process *freezes*: it blocks its signals, sets its mailbox's
//!    `msg_qbytes` to 0 (a sender now waits in the kernel instead of
//!    adding a message; one with `DIPC_NOWAIT` gets `EAGAIN`), takes
//!    every message out of it in order, calls *save*, and detaches its
//!    distributed segments (written back to their managers);
//! 4. state, messages, the distributed ids it knows and its segments'
//!    ids and addresses go to the new program (into a memfd it maps,
//!    so restore reads the state in place), which routes the ids (see
//!    `moved_ids`), attaches the segments at the same addresses, puts the
//!    messages in a fresh mailbox in the same order and takes the pid_d
//!    over at the referee with the token (the record now names it, names
//!    included);
//! 5. the old process removes its old mailbox: each sender that waited on
//!    it gets `ESRCH`, asks the referee again, finds the new mailbox and
//!    sends there (the message was never in the old one: exactly once,
//!    and after every message that was). It then forwards the signals
//!    that reached it (held pending since step 3, and any `kill_d` that
//!    looked it up before step 4) to the pid_d, which is the new process
//!    now, for [`LINGER`], and exits with status 0.
//!
//! The new program's library does its part in `regist` (called by
//! [`migratable`] if the program did not call it first): it reads what it
//! was sent and takes the pid_d over; [`migratable`] then calls *restore*
//! and gives the program back the signal mask it had when it moved, so
//! the signals held meanwhile are delivered then, once each.
//!
//! If step 4 fails, the process stays: its messages go back into a fresh
//! mailbox of its own (re-pointed at the referee with the same token,
//! ahead of any waiting sender), its segments are attached again where
//! they were, its signal mask is restored, and `migrate` returns the
//! error.
//!
//! The state source is a [`StateSource`]: today the program's own
//! serialiser; a whole-image back end (CRIU) would be another source that
//! hands a process image to a restorer instead of starting the program.

mod arrival;
mod head;

use crate::moved_ids;
use crate::pid::{self, PidD};
use crate::state;
use crate::Client;
pub(crate) use arrival::arrive;
use arrival::{tell_names, ARRIVED, CARRIED};
use dipc_common::sysv;
use dipc_common::wire::{self, IpcSet, Message, Program};
use head::{encode_head, Ipc};
use std::convert::Infallible;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long the old process forwards signals after the hand-over: a
/// `kill_d` that looked the process up just before the referee re-pointed
/// it signals the old process within this time.
pub const LINGER: Duration = Duration::from_millis(500);

/// The most bytes of state and messages a move carries.
pub const MAX_PAYLOAD: usize = 1 << 30;

/// State chunks sent ahead of their replies: enough to keep both hosts
/// busy (this end encrypting and sending the next chunk while the target
/// decrypts and stores the last), few enough that the replies waiting
/// unread stay small.
const DATA_WINDOW: usize = 8;

/// The most state bytes in one `MigrateData`.
const DATA_CHUNK: usize = 128 << 10;

/// Where a moving process's state comes from.
pub trait StateSource: Send + Sync {
    /// The state at the safe point (called with signals blocked, the
    /// mailbox frozen).
    fn save(&self) -> io::Result<Vec<u8>>;
}

/// The program's own serialiser (the opt-in of [`migratable`]).
struct Serialiser<F>(F);

impl<F: Fn() -> Vec<u8> + Send + Sync> StateSource for Serialiser<F> {
    fn save(&self) -> io::Result<Vec<u8>> {
        Ok((self.0)())
    }
}

static SOURCE: Mutex<Option<Arc<dyn StateSource>>> = Mutex::new(None);

/// How many mailbox messages the move that started this process carried
/// (in order, into its mailbox); `None` in a process that did not arrive
/// by a move.
pub fn carried_messages() -> Option<usize> {
    usize::try_from(CARRIED.load(Ordering::SeqCst)).ok()
}

fn lock<T>(m: &'static Mutex<T>) -> MutexGuard<'static, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn errno_err(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

fn client_err(e: crate::ClientError) -> io::Error {
    errno_err(crate::dist::client_errno(e))
}

/// Declares the calling process migratable: `save` returns the state a
/// move must carry (called at the safe point of a move, with signals
/// blocked); `restore` gets it back in the program started on the target
/// host. Registers the process first if it is not (see `pid::regist`).
///
/// `restore` reads the state in place (it is not copied out of what the
/// worker received). Returns `true` in a process that continues a moved
/// one, after `restore` ran and the signal mask the process had when it moved was
/// set again (install signal handlers before calling this: the signals
/// held during the move are delivered on return); `false` otherwise.
pub fn migratable<F, R>(save: F, restore: R) -> io::Result<bool>
where
    F: Fn() -> Vec<u8> + Send + Sync + 'static,
    R: FnOnce(&[u8]),
{
    migratable_with(Arc::new(Serialiser(save)), restore)
}

/// As [`migratable`], with any [`StateSource`].
pub fn migratable_with<R: FnOnce(&[u8])>(
    source: Arc<dyn StateSource>,
    restore: R,
) -> io::Result<bool> {
    pid::regist()?;
    *lock(&SOURCE) = Some(source);
    let me = std::process::id();
    let arrived = lock(&ARRIVED).take().filter(|a| a.pid == me);
    let moved = match arrived {
        Some(a) => {
            let bytes = a.map.bytes();
            restore(bytes.get(a.state.clone()).unwrap_or_default());
            drop(a.map);
            set_mask(a.mask);
            tell_names(a.pid_d);
            true
        }
        None => false,
    };
    // dipcd lists it in its load reports, for the balancer. After the
    // restore, which a process that moved in waits for: this is not part
    // of the move. A process that moved in and already runs its restored
    // state goes on if this fails (it still moves when asked; only the
    // balancer does not see it); any other gets the error.
    let told = match state::control(&Message::Migratable) {
        Ok(Message::Done { .. }) => Ok(()),
        Ok(_) => Err(errno_err(libc::EPROTO)),
        Err(e) => Err(client_err(e)),
    };
    match told {
        Err(e) if !moved => Err(e),
        Err(e) => {
            log::warn!("the load balancer will not see this process: {e}");
            Ok(true)
        }
        Ok(()) => Ok(moved),
    }
}

/// Whether the calling process has declared itself migratable.
pub fn is_migratable() -> bool {
    lock(&SOURCE).is_some()
}

/// The blocked signals as a bit mask (bit `s - 1` for signal `s`).
fn get_mask() -> u64 {
    // SAFETY: sigset_t is plain data; pthread_sigmask only reads `old`.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: a null `set` only reads the mask.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut old) };
    let mut m = 0u64;
    for s in 1..=64 {
        // SAFETY: a valid sigset_t.
        if unsafe { libc::sigismember(&old, s) } == 1 {
            m |= 1 << (s - 1);
        }
    }
    m
}

fn set_mask(m: u64) {
    // SAFETY: sigset_t is plain data, built with sigemptyset/sigaddset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: a valid sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    for s in 1..=64 {
        if m & (1 << (s - 1)) != 0 {
            // SAFETY: as above; invalid numbers are refused by the call.
            unsafe { libc::sigaddset(&mut set, s) };
        }
    }
    // SAFETY: a valid set.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) };
}

/// Blocks every signal that can be; returns the mask before.
fn block_all() -> u64 {
    let before = get_mask();
    set_mask(u64::MAX);
    before
}

/// The program to start on the target: this process's own.
fn program(pid_d: PidD, token: u64) -> io::Result<Message> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let exe = std::fs::read_link("/proc/self/exe")?;
    let mut cmdline = Vec::new();
    std::fs::File::open("/proc/self/cmdline")?
        .take(MAX_PAYLOAD as u64)
        .read_to_end(&mut cmdline)?;
    let argv: Vec<Vec<u8>> = cmdline
        .split(|b| *b == 0)
        .map(<[u8]>::to_vec)
        .collect::<Vec<_>>();
    // cmdline ends with a NUL, which leaves one empty piece.
    let argv = match argv.split_last() {
        Some((last, rest)) if last.is_empty() => rest.to_vec(),
        _ => argv,
    };
    let env: Vec<Vec<u8>> = std::env::vars_os()
        .map(|(k, v)| {
            let mut e = k.into_vec();
            e.push(b'=');
            e.extend_from_slice(v.as_bytes());
            e
        })
        .collect();
    let cwd = std::env::current_dir()?.into_os_string().into_vec();
    // Output that goes to a file keeps going there (appended); anything
    // else (a terminal, a pipe) cannot follow the process.
    let file_of = |fd: i32| -> Vec<u8> {
        use std::os::unix::fs::FileTypeExt;
        let p = format!("/proc/self/fd/{fd}");
        match (std::fs::metadata(&p), std::fs::read_link(&p)) {
            (Ok(m), Ok(path)) if m.file_type().is_file() && path.is_absolute() => {
                path.into_os_string().into_vec()
            }
            (Ok(m), Ok(path))
                if m.file_type().is_char_device() && path.as_os_str() == "/dev/null" =>
            {
                Vec::new()
            }
            _ => Vec::new(),
        }
    };
    Ok(Message::MigrateSpawn {
        pid_d,
        token,
        program: Box::new(Program {
            exe: exe.into_os_string().into_vec(),
            argv,
            env,
            cwd,
            stdout: file_of(1),
            stderr: file_of(2),
        }),
    })
}

/// One message of the mailbox: its type (the sender's pid_d) and text.
type Mail = (i64, Vec<u8>);

/// The frozen mailbox's messages, in order, and its `msg_qbytes`.
fn freeze(mailbox: i32) -> io::Result<(u64, Vec<Mail>)> {
    let info = sysv::msgctl_stat(mailbox).map_err(errno_err)?;
    let qbytes = info.qbytes;
    let set = IpcSet {
        uid: info.perm.uid,
        gid: info.perm.gid,
        mode: info.perm.mode & 0o777,
        qbytes: 0,
    };
    sysv::msgctl_set(mailbox, &set).map_err(errno_err)?;
    let size = sysv::msgmax() as u64;
    let mut mail = Vec::new();
    loop {
        match sysv::msgrcv(mailbox, size, 0, libc::IPC_NOWAIT) {
            Ok(m) => mail.push(m),
            Err(libc::ENOMSG) => return Ok((qbytes, mail)),
            Err(e) => {
                let _ = refill(mailbox, qbytes, &mail);
                return Err(errno_err(e));
            }
        }
    }
}

/// Puts `mail` into `mailbox`, in order, and opens it to `qbytes`.
fn refill(mailbox: i32, qbytes: u64, mail: &[Mail]) -> io::Result<()> {
    let info = sysv::msgctl_stat(mailbox).map_err(errno_err)?;
    let set = IpcSet {
        uid: info.perm.uid,
        gid: info.perm.gid,
        mode: info.perm.mode & 0o777,
        qbytes,
    };
    sysv::msgctl_set(mailbox, &set).map_err(errno_err)?;
    for (t, text) in mail {
        sysv::msgsnd(mailbox, *t, text, libc::IPC_NOWAIT).map_err(errno_err)?;
    }
    Ok(())
}

/// Parses an address of the target host: `a.b.c.d:port`, or an address
/// alone, which means this host's port.
pub fn parse_host(s: &str) -> io::Result<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let ip: std::net::IpAddr = s.parse().map_err(|_| errno_err(libc::EINVAL))?;
    let port = state::config().map_err(client_err)?.front_end_addr().port();
    Ok(SocketAddr::new(ip, port))
}

/// Moves the calling process to the host whose front end is `host`
/// (see the module docs). Returns only if the move failed, with the
/// process as it was: `EINVAL` if it is not migratable, `ENOTCONN` if not
/// registered, the target's errno if the program cannot start there
/// (`ENOENT`, `EACCES`, `ENOEXEC`, `EPERM` for a squashed root...),
/// `EBUSY` if it made a `SEM_UNDO` operation through dipc (on this host
/// or another), has a dead distributed segment attached or knows more than
/// 4096 distributed ids (which move with it, see
/// `moved_ids`), and the errors of the hosts involved. On success the process exits with
/// status 0 once the new one runs.
pub fn migrate(host: SocketAddr) -> io::Result<Infallible> {
    let source = lock(&SOURCE)
        .clone()
        .ok_or_else(|| errno_err(libc::EINVAL))?;
    let pid_d = pid::current().ok_or_else(|| errno_err(libc::ENOTCONN))?;
    let mailbox = pid::mailbox().ok_or_else(|| errno_err(libc::ENOTCONN))?;
    let config = state::config().map_err(client_err)?;
    // Undo adjustments cannot move: they would change what the process's
    // exit does where they are.
    if state::holds_remote_undo() || state::holds_local_undo() {
        return Err(errno_err(libc::EBUSY));
    }
    let ipc = Ipc {
        carried: moved_ids::collect(config.front_end_addr()),
        attached: crate::shm::attachments().map_err(errno_err)?,
    };
    if ipc.carried.len() > moved_ids::MAX_CARRIED {
        return Err(errno_err(libc::EBUSY));
    }
    let token = match state::control(&Message::MoveToken { pid_d, pid: 0 }) {
        Ok(Message::Done { value }) => value as u64,
        Ok(_) => return Err(errno_err(libc::EPROTO)),
        Err(e) => return Err(client_err(e)),
    };
    let abort = |e: io::Error| -> io::Error {
        let _ = state::control(&Message::MoveAbort { pid_d, pid: 0 });
        e
    };
    let spawn = program(pid_d, token).map_err(abort)?;
    let mut session = Client::session(config, host).map_err(|e| abort(client_err(e)))?;
    match session.call(&spawn) {
        Ok(Message::Done { .. }) => {}
        Ok(_) => return Err(abort(errno_err(libc::EPROTO))),
        Err(e) => return Err(abort(client_err(e))),
    }
    // The safe point: from here nothing the program sees changes.
    let mask = block_all();
    let (qbytes, mail) = match freeze(mailbox) {
        Ok(f) => f,
        Err(e) => {
            let _ = session.call(&Message::MigrateCommit { go: false });
            set_mask(mask);
            return Err(abort(e));
        }
    };
    let mut detached = false;
    let sent = source.save().and_then(|state| {
        let head = encode_head(pid_d, token, mask, qbytes, &mail, &ipc, state.len());
        if head.len().saturating_add(state.len()) > MAX_PAYLOAD {
            return Err(errno_err(libc::EFBIG));
        }
        // What the process wrote goes back to the segments' managers, from
        // which the new process's copies fill.
        crate::shm::detach_all(&ipc.attached).map_err(errno_err)?;
        detached = true;
        // Chunks smaller than a frame (room left for its header and the
        // data's length word) so that even a state of a few hundred KiB
        // is in several pieces, which the two ends work on at once.
        let chunk = (config.max_frame as usize)
            .saturating_sub(1024)
            .clamp(1024, DATA_CHUNK);
        session
            .call_each(
                head.chunks(chunk).chain(state.chunks(chunk)),
                DATA_WINDOW,
                wire::encode_migrate_data,
            )
            .map_err(client_err)?;
        match session.call(&Message::MigrateCommit { go: true }) {
            Ok(Message::Done { .. }) => Ok(()),
            Ok(_) => Err(errno_err(libc::EPROTO)),
            Err(e) => Err(client_err(e)),
        }
    });
    // Ends the worker, which stops a program that did not take over.
    drop(session);
    match sent {
        Ok(()) => handed_over(pid_d, mailbox),
        Err(e) => {
            stay(pid_d, token, mailbox, qbytes, &mail, host);
            if detached {
                if let Err((errno, at)) = crate::shm::reattach(&ipc.attached) {
                    // Another thread of the process mapped something there
                    // meanwhile, or the segment's owner is lost.
                    log::error!(
                        "pid_d {pid_d} stays; its segment at {at:#x} could not be attached \
                         again: errno {errno}"
                    );
                }
            }
            set_mask(mask);
            Err(e)
        }
    }
}

/// The new process runs with the pid_d: release the old mailbox's
/// senders to it, forward the signals that came here, and exit.
fn handed_over(pid_d: PidD, mailbox: i32) -> ! {
    pid::set_mailbox(None);
    if let Err(e) = sysv::msgctl_rmid(mailbox) {
        log::warn!("pid_d {pid_d} moved; removing its old mailbox {mailbox}: errno {e}");
    }
    forward_signals(pid_d, Instant::now() + LINGER);
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    // SAFETY: fflush(NULL) flushes every C stdio stream; _exit then ends
    // the process without the program's atexit handlers: the program has
    // not ended, it goes on in the new process, and a handler here could
    // undo what that one relies on (remove a file, uregist).
    unsafe {
        libc::fflush(std::ptr::null_mut());
        libc::_exit(0)
    }
}

/// Sends each signal sent to this process (not those the kernel raised
/// for it: timers, children) on to `pid_d` until `until`.
fn forward_signals(pid_d: PidD, until: Instant) {
    // SAFETY: sigset_t is plain data.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: a valid sigset_t.
    unsafe { libc::sigfillset(&mut all) };
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let ts = libc::timespec {
            tv_sec: left.as_secs() as libc::time_t,
            tv_nsec: left.subsec_nanos() as libc::c_long,
        };
        // SAFETY: siginfo_t is plain data.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid set, info and timeout.
        let sig = unsafe { libc::sigtimedwait(&all, &mut info, &ts) };
        if sig <= 0 {
            continue;
        }
        if info.si_code != libc::SI_USER && info.si_code != libc::SI_QUEUE {
            continue;
        }
        for _ in 0..3 {
            match pid::kill_d(pid_d, sig) {
                Ok(()) => break,
                Err(e) => log::warn!("pid_d {pid_d}: forwarding signal {sig}: {e}"),
            }
        }
    }
}

/// The request to move last seen at a migration point (its text), so that
/// one that failed is not tried again and again.
static ASKED: Mutex<Option<String>> = Mutex::new(None);

/// A *migration point*: the place in the program where a move that an
/// administrator asked for (`dipcref migrate PID_D HOST`) may happen. The
/// program calls it where its state is whole (between two steps of its
/// work, as it would before calling [`migrate`] itself): dipc never moves
/// a process from arbitrary code. Looks for a request (a file that the
/// host's dipcd posts, so the check costs one `open`); if there is one,
/// moves there and does not return. Returns `Ok(false)` if there is no
/// request or the process is not migratable, the move's error if it
/// failed (the request is then dropped).
pub fn migration_point() -> io::Result<bool> {
    if !is_migratable() {
        return Ok(false);
    }
    let Some(dir) = state::config().ok().map(|c| c.runtime_dir.join("moves")) else {
        return Ok(false);
    };
    let Ok(text) = std::fs::read_to_string(dir.join(std::process::id().to_string())) else {
        return Ok(false);
    };
    {
        let mut seen = lock(&ASKED);
        if seen.as_deref() == Some(text.as_str()) {
            return Ok(false);
        }
        *seen = Some(text.clone());
    }
    let target: SocketAddr = text.trim().parse().map_err(|_| errno_err(libc::EINVAL))?;
    match migrate(target) {
        Ok(never) => match never {},
        Err(e) => Err(e),
    }
}

/// The move failed after the mailbox was frozen: the messages go back, in
/// order, into a fresh mailbox that the registration is re-pointed at
/// (with the move's token, so only one of this process and the new
/// program can have it); the frozen one is removed, which sends its
/// waiting senders to the fresh one.
fn stay(pid_d: PidD, token: u64, frozen: i32, qbytes: u64, mail: &[Mail], host: SocketAddr) {
    // SAFETY: msgget takes plain integers.
    let fresh = unsafe { libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o622) };
    if fresh >= 0 && refill(fresh, qbytes, mail).is_ok() {
        let msg = Message::MoveIn {
            pid_d,
            pid: 0,
            uid: 0,
            starttime: 0,
            mailbox: fresh,
            token,
        };
        if let Ok(Message::Registered { .. }) = state::control(&msg) {
            pid::set_mailbox(Some(fresh));
            let _ = sysv::msgctl_rmid(frozen);
            return;
        }
    }
    if fresh >= 0 {
        let _ = sysv::msgctl_rmid(fresh);
    }
    // The new program took the pid_d over after all (its answer was lost).
    if pid::lookup(pid_d).is_ok_and(|r| r.host == host) {
        handed_over(pid_d, frozen);
    }
    let _ = state::control(&Message::MoveAbort { pid_d, pid: 0 });
    if let Err(e) = refill(frozen, qbytes, mail) {
        log::warn!("pid_d {pid_d}: a failed move could not give its mailbox back: {e}");
    }
}

pub mod capi;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_round_trip() {
        let before = get_mask();
        let m = block_all();
        assert_eq!(m, before);
        // SIGKILL and SIGSTOP can never be blocked.
        let all = get_mask();
        assert_eq!(all & (1 << (libc::SIGKILL - 1)), 0);
        assert_ne!(all & (1 << (libc::SIGUSR1 - 1)), 0);
        set_mask(m);
        assert_eq!(get_mask(), before);
    }
}
