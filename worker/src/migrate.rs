//! Starting the program of a process that moves to this host (see
//! libdipc's `migrate`).
//!
//! Only a move the session's own process began is served: the session
//! must be typed with the moving pid_d (its dipcd vouched for it) and the
//! referee must confirm the move's token for this user (`MoveCheck`), so
//! no session can have a program started here for anything else.
//!
//! The moving process's session already runs as its user (uid, gid and
//! groups from SO_PEERCRED on its host), so the program is started as a
//! child of this worker: no new privilege path. A squashed root would run
//! it as another user, so that is refused (`EPERM`).
//!
//! The program is started in two steps, so that a host that cannot run it
//! costs the moving process nothing: `MigrateSpawn` forks (twice, so the
//! program is nobody's zombie and outlives this worker) and execs it,
//! with every signal blocked and default dispositions, and answers once
//! the exec succeeded (else with its errno: `ENOENT`, `EACCES`,
//! `ENOEXEC`...). The process then freezes, sends its state and the
//! messages of its mailbox (`MigrateData`, into a memfd the program
//! inherited) and `MigrateCommit`: the worker tells the program how many
//! bytes there are (through a pipe), and answers once the program has
//! taken its pid_d over at the referee, or with why not. A program not
//! committed when the session ends, or that fails, is killed: it never
//! runs beside the process it was to continue.
//!
//! The program finds its descriptors through `DIPC_MIGRATION=3,4,5`
//! (memfd, the read end of the go pipe, the write end of the answer pipe)
//! and its host's configuration through `DIPC_CONFIG`, set to this dipcd's.

use dipc_common::channel::Channel;
use dipc_common::config::Config;
use dipc_common::procs;
use dipc_common::wire::{Message, Program, TAKEOVER_READY};
use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// The most bytes a moving process may hand its new program.
pub const MAX_PAYLOAD: u64 = 1 << 30;

/// A program started for a move, not yet committed.
pub struct Started {
    pid: i32,
    pidfd: OwnedFd,
    data: File,
    len: u64,
    go: File,
    answer: File,
    committed: bool,
}

impl Drop for Started {
    fn drop(&mut self) {
        if !self.committed {
            // SAFETY: a pidfd we own; SIGKILL with no siginfo.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    self.pidfd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                );
            }
        }
    }
}

fn err(errno: i32, why: impl Into<String>) -> Box<Message> {
    Box::new(Message::error(errno, why))
}

/// Where the new program's output goes: the path stated, else nowhere.
fn or_null(p: &[u8]) -> &[u8] {
    if p.is_empty() {
        b"/dev/null"
    } else {
        p
    }
}

fn cstr(field: &str, b: &[u8]) -> Result<CString, Box<Message>> {
    CString::new(b.to_vec()).map_err(|_| err(libc::EINVAL, format!("{field} holds a NUL byte")))
}

fn pipe() -> Result<(OwnedFd, OwnedFd), Box<Message>> {
    let mut p = [0; 2];
    // SAFETY: p has room for two descriptors.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        let e = dipc_common::sysv::errno();
        return Err(err(e, format!("pipe: errno {e}")));
    }
    // SAFETY: both are new descriptors we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) })
}

impl Started {
    pub fn pid(&self) -> i32 {
        self.pid
    }
}

/// `MigrateSpawn`: starts the program; `stated_uid` is the uid the
/// caller's host stated (the worker runs as it unless it was squashed).
/// Asks the referee, through this host's dipcd, whether `token` is the
/// pending move of `pid_d` by this worker's user.
fn check_token(config: &Config, pid_d: i64, token: u64) -> Result<(), Box<Message>> {
    let path = config.back_end_socket();
    let s = std::os::unix::net::UnixStream::connect(&path).map_err(|e| {
        err(
            e.raw_os_error().unwrap_or(libc::ECONNREFUSED),
            format!("cannot reach {}: {e}", path.display()),
        )
    })?;
    s.set_read_timeout(Some(config.timeouts.request))
        .and_then(|()| s.set_write_timeout(Some(config.timeouts.request)))
        .map_err(|e| err(libc::EIO, format!("{}: {e}", path.display())))?;
    let mut ch = Channel::new(s, config.max_frame);
    let uid = 0;
    match ch.call(1, &Message::MoveCheck { pid_d, token, uid }) {
        Ok(Message::Done { .. }) => Ok(()),
        Ok(e @ Message::Error { .. }) => Err(Box::new(e)),
        Ok(other) => Err(err(
            libc::EPROTO,
            format!("dipcd answered MoveCheck with {}", other.kind().name()),
        )),
        Err(e) => Err(err(e.errno(), format!("dipcd: {e}"))),
    }
}

/// `MigrateSpawn`: starts the program, for the move `(pid_d, token)` of
/// the session's sender `sender` (its registered pid_d, vouched for by its
/// dipcd when the session opened).
pub fn spawn(
    config: &Config,
    stated_uid: u32,
    (sender, pid_d, token): (i64, i64, u64),
    spec: &Program,
) -> Result<Started, Box<Message>> {
    if sender <= 0 || sender != pid_d {
        return Err(err(
            libc::EPERM,
            format!("the session's process is pid_d {sender}, not the moving pid_d {pid_d}"),
        ));
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != stated_uid {
        return Err(err(
            libc::EPERM,
            format!("the session acts as uid {euid}, not as the moving process's uid {stated_uid} (root squash)"),
        ));
    }
    if spec.exe.is_empty() || spec.argv.is_empty() {
        return Err(err(libc::EINVAL, "no program or no argv[0]"));
    }
    check_token(config, pid_d, token)?;
    let exe = cstr("exe", &spec.exe)?;
    let cwd = cstr("cwd", &spec.cwd)?;
    let out_path = cstr("stdout", or_null(&spec.stdout))?;
    let err_path = cstr("stderr", or_null(&spec.stderr))?;
    let argv: Vec<CString> = spec
        .argv
        .iter()
        .map(|a| cstr("argv", a))
        .collect::<Result<_, _>>()?;
    let conf = std::fs::canonicalize(&config.path).unwrap_or_else(|_| config.path.clone());
    let mut env: Vec<CString> = spec
        .env
        .iter()
        .filter(|e| !e.starts_with(b"DIPC_CONFIG=") && !e.starts_with(b"DIPC_MIGRATION="))
        .map(|e| cstr("env", e))
        .collect::<Result<_, _>>()?;
    use std::os::unix::ffi::OsStrExt;
    let mut c = b"DIPC_CONFIG=".to_vec();
    c.extend_from_slice(conf.as_os_str().as_bytes());
    env.push(cstr("env", &c)?);
    env.push(cstr("env", b"DIPC_MIGRATION=3,4,5")?);
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut env_p: Vec<*const libc::c_char> = env.iter().map(|a| a.as_ptr()).collect();
    env_p.push(std::ptr::null());

    let name = c"dipc-migration";
    // SAFETY: a valid name; returns a new descriptor or -1.
    let memfd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if memfd < 0 {
        let e = dipc_common::sysv::errno();
        return Err(err(e, format!("memfd_create: errno {e}")));
    }
    // SAFETY: a new descriptor we own.
    let data = unsafe { File::from_raw_fd(memfd) };
    let (go_r, go_w) = pipe()?;
    let (ans_r, ans_w) = pipe()?;
    let (rep_r, rep_w) = pipe()?;
    let fds = Fds {
        data: data.as_raw_fd(),
        go: go_r.as_raw_fd(),
        answer: ans_w.as_raw_fd(),
        report: rep_w.as_raw_fd(),
    };
    // SAFETY: fork; the children only make async-signal-safe calls on
    // memory prepared before the fork, then exec or _exit.
    let middle = unsafe { libc::fork() };
    if middle < 0 {
        let e = dipc_common::sysv::errno();
        return Err(err(e, format!("fork: errno {e}")));
    }
    if middle == 0 {
        // SAFETY: as above.
        let g = unsafe { libc::fork() };
        if g == 0 {
            // SAFETY: as above: every pointer was prepared before the fork.
            unsafe { exec_child(&fds, &exe, &cwd, (&out_path, &err_path), &argv_p, &env_p) };
        }
        report(fds.report, b'P', g);
        // SAFETY: leaves the intermediate child at once.
        unsafe { libc::_exit(0) };
    }
    drop(rep_w);
    drop(go_r);
    drop(ans_w);
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(middle, &mut status, 0) };
    let records = read_reports(&rep_r, Duration::from_secs(10))?;
    let mut pid = None;
    for (tag, v) in records {
        match tag {
            b'E' => {
                return Err(err(
                    v,
                    format!(
                        "cannot start {}: {}",
                        String::from_utf8_lossy(&spec.exe),
                        std::io::Error::from_raw_os_error(v)
                    ),
                ))
            }
            b'P' if v > 0 => pid = Some(v),
            b'P' => return Err(err(-v, format!("fork: errno {}", -v))),
            _ => {}
        }
    }
    let pid = pid.ok_or_else(|| err(libc::ECHILD, "the program was not started"))?;
    let pidfd = procs::pidfd_open(pid).map_err(|e| {
        err(
            libc::ECHILD,
            format!("the started program (pid {pid}) ended at once: errno {e}"),
        )
    })?;
    let mut st = Started {
        pid,
        pidfd,
        data,
        len: 0,
        go: File::from(go_w),
        answer: File::from(ans_r),
        committed: false,
    };
    // A program that is slower than this to get ready (much work before
    // it registers) is waited for after the freeze instead, as commit
    // waits for its take-over anyway.
    match st.next_word(Instant::now() + READY_WAIT)? {
        Word::Value(TAKEOVER_READY) | Word::Late => Ok(st),
        Word::Value(e) => Err(err(
            e,
            format!("pid {pid} could not get ready to take over: errno {e}"),
        )),
        Word::Closed => Err(err(
            libc::ECHILD,
            format!("pid {pid} ended before it was ready to take over"),
        )),
    }
}

/// How long `spawn` waits for the started program to be ready.
const READY_WAIT: Duration = Duration::from_secs(1);

/// What the started program said on its answer pipe.
enum Word {
    Value(i32),
    /// The pipe closed: the program ended.
    Closed,
    /// Nothing yet by the deadline.
    Late,
}

impl Started {
    /// The program's next word on the answer pipe, waiting until
    /// `deadline`. A word is 4 bytes, written at once (so never split
    /// between two reads of a pipe).
    fn next_word(&mut self, deadline: Instant) -> Result<Word, Box<Message>> {
        let fd = self.answer.as_raw_fd();
        let mut got = Vec::new();
        while got.len() < 4 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Word::Late);
            }
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut p, 1, left.as_millis().max(1) as i32) } <= 0 {
                continue;
            }
            let mut b = [0u8; 4];
            // SAFETY: reads into a local buffer.
            let n = unsafe { libc::read(fd, b.as_mut_ptr().cast(), 4 - got.len()) };
            match n {
                0 => return Ok(Word::Closed),
                n if n < 0 => {
                    if dipc_common::sysv::errno() != libc::EINTR {
                        return Err(err(libc::EIO, "reading the program's answer"));
                    }
                }
                n => got.extend_from_slice(&b[..n as usize]),
            }
        }
        Ok(Word::Value(i32::from_be_bytes([
            got[0], got[1], got[2], got[3],
        ])))
    }
}

struct Fds {
    data: RawFd,
    go: RawFd,
    answer: RawFd,
    report: RawFd,
}

/// Writes an 8-byte record (`tag`, value) into the report pipe. Atomic
/// (under PIPE_BUF), so the two children's records never mix.
fn report(fd: RawFd, tag: u8, v: i32) {
    let mut b = [0u8; 8];
    b[0] = tag;
    b[4..].copy_from_slice(&v.to_ne_bytes());
    // SAFETY: writes 8 bytes from a local buffer.
    unsafe { libc::write(fd, b.as_ptr().cast(), 8) };
}

/// The new program's side of the fork: never returns.
///
/// # Safety
/// Only async-signal-safe calls, on memory prepared before the fork.
unsafe fn exec_child(
    fds: &Fds,
    exe: &CString,
    cwd: &CString,
    (out, errp): (&CString, &CString),
    argv: &[*const libc::c_char],
    env: &[*const libc::c_char],
) -> ! {
    let fail = |e: i32| -> ! {
        report(fds.report, b'E', e);
        libc::_exit(127)
    };
    libc::setsid();
    if libc::chdir(cwd.as_ptr()) < 0 {
        fail(*libc::__errno_location());
    }
    let mut sa: libc::sigaction = std::mem::zeroed();
    sa.sa_sigaction = libc::SIG_DFL;
    for s in 1..=64 {
        if s != libc::SIGKILL && s != libc::SIGSTOP {
            libc::sigaction(s, &sa, std::ptr::null_mut());
        }
    }
    // Blocked until the program has its state back (libdipc's
    // `migratable` restores the mask the process had).
    let mut all: libc::sigset_t = std::mem::zeroed();
    libc::sigfillset(&mut all);
    libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
    let high = |fd: RawFd| -> RawFd {
        let h = libc::fcntl(fd, libc::F_DUPFD, 100);
        if h < 0 {
            fail(*libc::__errno_location());
        }
        h
    };
    let open = |p: &CString, flags: i32| -> RawFd {
        let fd = libc::open(p.as_ptr(), flags | libc::O_NOCTTY | libc::O_CLOEXEC);
        if fd < 0 {
            fail(*libc::__errno_location());
        }
        high(fd)
    };
    let i0 = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
    if i0 < 0 {
        fail(*libc::__errno_location());
    }
    let i0 = high(i0);
    let o1 = open(out, libc::O_WRONLY | libc::O_APPEND);
    let e2 = open(errp, libc::O_WRONLY | libc::O_APPEND);
    let (d3, g4, a5) = (high(fds.data), high(fds.go), high(fds.answer));
    let r6 = high(fds.report);
    for (from, to) in [(i0, 0), (o1, 1), (e2, 2), (d3, 3), (g4, 4), (a5, 5)] {
        if libc::dup2(from, to) < 0 {
            fail(*libc::__errno_location());
        }
    }
    if libc::dup3(r6, 6, libc::O_CLOEXEC) < 0 {
        fail(*libc::__errno_location());
    }
    libc::syscall(libc::SYS_close_range, 7u32, u32::MAX, 0u32);
    libc::execve(exe.as_ptr(), argv.as_ptr(), env.as_ptr());
    let e = *libc::__errno_location();
    report(6, b'E', e);
    libc::_exit(127)
}

/// Reads the children's 8-byte records until both have closed the pipe
/// (the program's copy closes at its exec).
fn read_reports(fd: &OwnedFd, limit: Duration) -> Result<Vec<(u8, i32)>, Box<Message>> {
    let deadline = Instant::now() + limit;
    let mut buf = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(err(libc::ETIMEDOUT, "the program's exec did not finish"));
        }
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, left.as_millis().max(1) as i32) };
        if r <= 0 {
            continue;
        }
        let mut chunk = [0u8; 64];
        // SAFETY: reads into a local buffer.
        let n = unsafe { libc::read(fd.as_raw_fd(), chunk.as_mut_ptr().cast(), chunk.len()) };
        match n {
            0 => break,
            n if n < 0 => {
                let e = dipc_common::sysv::errno();
                if e != libc::EINTR {
                    return Err(err(e, format!("reading the start report: errno {e}")));
                }
            }
            n => buf.extend_from_slice(&chunk[..n as usize]),
        }
    }
    Ok(buf
        .chunks_exact(8)
        .map(|r| (r[0], i32::from_ne_bytes([r[4], r[5], r[6], r[7]])))
        .collect())
}

/// `MigrateData`: more bytes for the program.
pub fn data(s: &mut Option<Started>, bytes: &[u8]) -> Message {
    let Some(st) = s.as_mut() else {
        return Message::error(libc::EPROTO, "MigrateData without a started program");
    };
    let len = st.len.saturating_add(bytes.len() as u64);
    if len > MAX_PAYLOAD {
        *s = None;
        return Message::error(
            libc::EFBIG,
            format!("more than {MAX_PAYLOAD} bytes of state"),
        );
    }
    if let Err(e) = st.data.write_all(bytes) {
        *s = None;
        return Message::error(e.raw_os_error().unwrap_or(libc::EIO), format!("memfd: {e}"));
    }
    st.len = len;
    Message::Done { value: 0 }
}

/// `MigrateCommit`: hands the bytes over and waits up to `wait` for the
/// program to take its pid_d over (or stops it, `!go`).
pub fn commit(s: &mut Option<Started>, go: bool, wait: Duration) -> Message {
    let Some(mut st) = s.take() else {
        return Message::error(libc::EPROTO, "MigrateCommit without a started program");
    };
    if !go {
        return Message::Done { value: 0 };
    }
    if let Err(e) = st.go.write_all(&st.len.to_be_bytes()) {
        return Message::error(libc::ECHILD, format!("the started program is gone: {e}"));
    }
    let deadline = Instant::now() + wait;
    let e = loop {
        match st.next_word(deadline) {
            Ok(Word::Value(TAKEOVER_READY)) => continue,
            Ok(Word::Value(e)) => break e,
            Ok(Word::Closed) => {
                return Message::error(
                    libc::ECHILD,
                    format!("pid {} ended before it took its pid_d over", st.pid),
                )
            }
            Ok(Word::Late) => {
                return Message::error(
                    libc::ETIMEDOUT,
                    format!("pid {} did not take its pid_d over in time", st.pid),
                )
            }
            Err(m) => return *m,
        }
    };
    if e != 0 {
        return Message::error(
            e,
            format!("pid {} could not take its pid_d over: errno {e}", st.pid),
        );
    }
    st.committed = true;
    Message::Done {
        value: i64::from(st.pid),
    }
}
