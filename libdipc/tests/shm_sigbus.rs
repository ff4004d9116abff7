//! SIGBUS for lost distributed memory, in a Rust program whose signal
//! handlers run on a small alternate stack: room for one signal frame (the
//! kernel's least, `AT_MINSIGSTKSZ`, 3.6 KB with AVX-512 state) plus
//! `MINSIGSTKSZ`, and never for two. The fault handler must not raise
//! SIGBUS on top of its own frame; the SIGBUS must come from the access
//! itself, with the program's own disposition: its handler (on its
//! alternate stack, with the address touched), or death by SIGBUS whether
//! SIGBUS is left alone, blocked or ignored. Also: a unit whose fault got
//! no answer in time opens when the answer comes late.
//!
//! The manager is played by the test over a socket pair (as in
//! `shm_agent.rs`). Each case runs in a child process (the test binary
//! runs itself with one test selected and `DIPC_SHM_CHILD` set), which
//! must end as the case says.

use dipc::shm::attach_with_connection;
use dipc_common::channel::Channel;
use dipc_common::wire::Message;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::thread;
use std::time::Duration;

const MAX_FRAME: u32 = 1 << 20;
const WAIT: Duration = Duration::from_secs(10);
/// `AT_MINSIGSTKSZ` for getauxval: the kernel's least alternate stack.
const AT_MINSIGSTKSZ: libc::c_ulong = 51;
/// Exit codes of the program's SIGBUS handler.
const HANDLED: i32 = 44;
const WRONG: i32 = 45;

fn page() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// The small alternate stack: one signal frame and `MINSIGSTKSZ`.
fn small_stack() -> usize {
    // SAFETY: getauxval has no preconditions (0 if the entry is missing).
    let min = unsafe { libc::getauxval(AT_MINSIGSTKSZ) } as usize;
    min.max(libc::MINSIGSTKSZ) + libc::MINSIGSTKSZ
}

/// Gives this thread an alternate signal stack of `size` bytes.
fn use_alternate_stack(size: usize) {
    let mem: &'static mut [u8] = Box::leak(vec![0u8; size].into_boxed_slice());
    let ss = libc::stack_t {
        ss_sp: mem.as_mut_ptr() as *mut libc::c_void,
        ss_flags: 0,
        ss_size: size,
    };
    // SAFETY: the stack is leaked, so it lives as long as the thread.
    let r = unsafe { libc::sigaltstack(&ss, std::ptr::null_mut()) };
    assert_eq!(r, 0, "sigaltstack: {}", std::io::Error::last_os_error());
}

static EXPECTED: AtomicUsize = AtomicUsize::new(0);
/// Set by `park_on_sigbus` when its SIGBUS came.
static PARKED: AtomicUsize = AtomicUsize::new(0);

/// The program's SIGBUS handler: checks that it runs on the alternate
/// stack, for the address touched, as a fault (`BUS_ADRERR`).
extern "C" fn exit_on_sigbus(_: i32, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel's siginfo; sigaltstack and _exit are
    // async-signal-safe.
    unsafe {
        let mut now: libc::stack_t = std::mem::zeroed();
        let on_alt = libc::sigaltstack(std::ptr::null(), &mut now) == 0
            && now.ss_flags & libc::SS_ONSTACK != 0;
        let ok = on_alt
            && (*info).si_addr() as usize == EXPECTED.load(SeqCst)
            && (*info).si_code == libc::BUS_ADRERR;
        libc::_exit(if ok { HANDLED } else { WRONG });
    }
}

/// A SIGBUS handler that never returns and never ends the process: its
/// thread stays here, and the rest of the program goes on.
extern "C" fn park_on_sigbus(_: i32, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel's siginfo.
    let addr = unsafe { (*info).si_addr() } as usize;
    PARKED.store(addr, SeqCst);
    loop {
        // SAFETY: pause has no preconditions.
        unsafe { libc::pause() };
    }
}

fn on_sigbus(handler: extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void)) {
    // SAFETY: installing an SA_SIGINFO handler.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut()), 0);
    }
}

/// What the program does about SIGBUS.
#[derive(Clone, Copy)]
enum Disposition {
    /// `exit_on_sigbus`.
    Handler,
    /// Whatever Rust's runtime installed (it gives a fault that is not a
    /// stack overflow back to the default action).
    Default,
    Blocked,
    Ignored,
}

impl Disposition {
    /// Sets it up for the calling thread (the mask) or the process.
    fn apply(self) {
        match self {
            Disposition::Handler => on_sigbus(exit_on_sigbus),
            Disposition::Default => {}
            // SAFETY: plain signal-mask and disposition changes.
            Disposition::Blocked => unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGBUS);
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            },
            // SAFETY: ignoring SIGBUS in this test's child only.
            Disposition::Ignored => unsafe {
                libc::signal(libc::SIGBUS, libc::SIG_IGN);
            },
        }
    }
}

/// The manager's end of a connection.
struct Mgr {
    ch: Channel<UnixStream>,
}

impl Mgr {
    fn fault(&mut self) -> (u32, bool) {
        match self.ch.recv() {
            Ok((_, Message::ShmFault { unit, write })) => (unit, write),
            other => panic!("expected ShmFault, got {other:?}"),
        }
    }
    fn send(&mut self, m: Message) {
        self.ch.send(0, &m).expect("send to the agent");
    }
    /// Answers every fault with `ShmLost`, in a thread.
    fn lose_everything(mut self) {
        thread::spawn(move || {
            while let Ok((_, Message::ShmFault { unit, .. })) = self.ch.recv() {
                self.send(Message::ShmLost { unit });
            }
        });
    }
}

fn attach(size: usize, unit: usize, timeout: Duration) -> (Mgr, usize) {
    let (a, b) = UnixStream::pair().unwrap();
    b.set_read_timeout(Some(WAIT)).unwrap();
    let p = attach_with_connection(a, size as u64, unit as u64, false, timeout)
        .unwrap_or_else(|e| panic!("attach: errno {e}"));
    (
        Mgr {
            ch: Channel::new(b, MAX_FRAME),
        },
        p as usize,
    )
}

fn read(addr: usize) -> u8 {
    // SAFETY: inside an attachment the test made (or the point is the
    // signal).
    unsafe { std::ptr::read_volatile(addr as *const u8) }
}

fn write(addr: usize, v: u8) {
    // SAFETY: as above.
    unsafe { std::ptr::write_volatile(addr as *mut u8, v) }
}

/// Touches `addr` (a write if `write`) from a new thread that has a small
/// alternate stack and `d`; the process must end in the touch.
fn touch_on_small_stack(addr: usize, write_it: bool, d: Disposition) -> ! {
    EXPECTED.store(addr, SeqCst);
    let t = thread::spawn(move || {
        use_alternate_stack(small_stack());
        d.apply();
        if write_it {
            write(addr, 1);
        } else {
            read(addr);
        }
    });
    let _ = t.join();
    eprintln!("the touch returned");
    std::process::exit(3)
}

fn in_child() -> bool {
    std::env::var_os("DIPC_SHM_CHILD").is_some()
}

/// Runs the test `name` in a child process; returns its status and output.
fn run_child(name: &str) -> (std::process::ExitStatus, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("DIPC_SHM_CHILD", "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

fn expect_handled(name: &str) {
    let (st, out) = run_child(name);
    assert_eq!(
        st.code(),
        Some(HANDLED),
        "{name}: ended with {st:?}, expected the program's SIGBUS handler to exit \
         {HANDLED} (45: wrong stack, address or code; SIGSEGV: the signal frames did not \
         fit the alternate stack); output:\n{out}"
    );
}

fn expect_sigbus(name: &str) {
    let (st, out) = run_child(name);
    assert_eq!(
        st.signal(),
        Some(libc::SIGBUS),
        "{name}: ended with {st:?}, expected death by SIGBUS; output:\n{out}"
    );
}

/// A unit answered `ShmLost`, touched with disposition `d`.
fn lost_unit(d: Disposition) -> ! {
    let pg = page();
    let (m, p) = attach(2 * pg, pg, WAIT);
    m.lose_everything();
    touch_on_small_stack(p + pg + 17, true, d)
}

#[test]
fn a_lost_unit_reaches_the_programs_handler_on_a_small_stack() {
    if in_child() {
        lost_unit(Disposition::Handler);
    }
    expect_handled("a_lost_unit_reaches_the_programs_handler_on_a_small_stack");
}

#[test]
fn a_lost_unit_kills_with_sigbus_on_a_small_stack() {
    if in_child() {
        lost_unit(Disposition::Default);
    }
    expect_sigbus("a_lost_unit_kills_with_sigbus_on_a_small_stack");
}

#[test]
fn a_lost_unit_kills_with_sigbus_when_sigbus_is_blocked() {
    if in_child() {
        lost_unit(Disposition::Blocked);
    }
    expect_sigbus("a_lost_unit_kills_with_sigbus_when_sigbus_is_blocked");
}

#[test]
fn a_lost_unit_kills_with_sigbus_when_sigbus_is_ignored() {
    if in_child() {
        lost_unit(Disposition::Ignored);
    }
    expect_sigbus("a_lost_unit_kills_with_sigbus_when_sigbus_is_ignored");
}

#[test]
fn a_dead_segment_reaches_the_programs_handler_on_a_small_stack() {
    if in_child() {
        let pg = page();
        let (m, p) = attach(2 * pg, pg, WAIT);
        // The connection ends: the whole segment is lost.
        drop(m);
        thread::sleep(Duration::from_millis(100));
        touch_on_small_stack(p + 5, false, Disposition::Handler);
    }
    expect_handled("a_dead_segment_reaches_the_programs_handler_on_a_small_stack");
}

#[test]
fn no_answer_in_time_reaches_the_programs_handler_on_a_small_stack() {
    if in_child() {
        let pg = page();
        let (mut m, p) = attach(pg, pg, Duration::from_millis(300));
        thread::spawn(move || {
            let _ = m.fault();
            // Silent, connection open.
            let _ = m.ch.recv();
        });
        touch_on_small_stack(p + 100, false, Disposition::Handler);
    }
    expect_handled("no_answer_in_time_reaches_the_programs_handler_on_a_small_stack");
}

#[test]
fn a_late_grant_opens_a_unit_whose_fault_timed_out() {
    if !in_child() {
        let name = "a_late_grant_opens_a_unit_whose_fault_timed_out";
        let (st, out) = run_child(name);
        assert!(st.success(), "{name}: {st:?}:\n{out}");
        assert!(out.contains("1 passed"), "{name} did not run:\n{out}");
        return;
    }
    let pg = page();
    let (mut m, p) = attach(2 * pg, pg, Duration::from_millis(300));
    on_sigbus(park_on_sigbus);
    // A thread touches unit 1; no answer comes in time: SIGBUS, and the
    // thread stays in its handler.
    thread::spawn(move || {
        use_alternate_stack(small_stack());
        read(p + pg + 3);
    });
    assert_eq!(m.fault(), (1, false));
    let mut waited = Duration::ZERO;
    while PARKED.load(SeqCst) == 0 {
        assert!(waited < WAIT, "no SIGBUS after the time-out");
        thread::sleep(Duration::from_millis(10));
        waited += Duration::from_millis(10);
    }
    assert_eq!(PARKED.load(SeqCst), p + pg + 3);
    // The answer comes after all: the unit opens, with its content.
    m.send(Message::ShmData {
        unit: 1,
        offset: 0,
        data: vec![9; pg],
    });
    m.send(Message::ShmGrant {
        unit: 1,
        write: false,
    });
    // Read by this thread once the agent has taken the grant (until then
    // a touch would raise SIGBUS: the unit is still a trap).
    let maps = || std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let start = format!("{:x}-", p + pg);
    let mut waited = Duration::ZERO;
    while maps()
        .lines()
        .any(|l| l.starts_with(&start) && l.contains("dipc-shm-lost"))
    {
        assert!(waited < WAIT, "unit 1 still a trap:\n{}", maps());
        thread::sleep(Duration::from_millis(10));
        waited += Duration::from_millis(10);
    }
    assert_eq!(read(p + pg + 3), 9);
    // Unit 0 was never lost: it faults and opens as usual.
    let r = thread::spawn(move || read(p));
    assert_eq!(m.fault(), (0, false));
    m.send(Message::ShmData {
        unit: 0,
        offset: 0,
        data: vec![4; pg],
    });
    m.send(Message::ShmGrant {
        unit: 0,
        write: false,
    });
    assert_eq!(r.join().unwrap(), 4);
}
