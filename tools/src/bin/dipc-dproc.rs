//! `dipc-dproc`: distributed processes (`dipc::dprocs`) from the command
//! line, for scripts and tests.
//!
//! - `dipc-dproc hold NAME... [--then uregist|release|exit]`: registers,
//!   prints `pid_d P`, takes the names, prints `named`; then unregisters,
//!   releases the names or exits at once as `--then` says, else waits
//!   until killed.
//! - `dipc-dproc lookup NAME`: prints the pid_d holding NAME.
//! - `dipc-dproc serve [--name NAME] [--init]`: registers, takes NAME,
//!   prints `pid_d P`, and serves the test procedures below until `Stop`.
//!   With `--init`, its initial statements print `init waiting`, wait
//!   for a token (`Put`), take it and print `init done`. With
//!   `--migratable`, it declares itself migratable (its token count
//!   travels) and `MoveTo HOST:PORT` moves it there.
//! - `dipc-dproc call TARGET PROC [INPUT] [--max-out N] [--timeout-ms T]
//!   [--interrupt-ms T] [--count N]`: registers, prints `pid_d P`, calls
//!   (N times) and prints each output on a line (with `--time`, the
//!   median and 99th percentile round trip instead). TARGET is a pid_d, a name, or `self`. With
//!   `--interrupt-ms`, a thread sends SIGUSR1 (handled, no restart) to the
//!   calling thread T ms after each call starts (call i `i *
//!   --interrupt-step-us` later). With `--expect ERRNO` every call must
//!   fail with that errno (e.g. `EINTR`), and it prints `ERRNO N`. With
//!   `--parallel N`, N threads make the calls at once, each `--count`
//!   times; `--pause-ms T` sleeps T ms after each call.
//!
//! The test procedures of `serve`: `Echo` (returns its input), `Whoami`
//! (`CALLER UID`), `Put` (one more token), `Take` (`when` a token is
//! there: takes it; returns the number of its arrival, 0 for the first
//! `Take`, and prints `postponed Take N` the first time it waits),
//! `Never` (its guard is never true; prints `never from CALLER` when it
//! first waits), `Forward` (input `PID_D PROC REST`:
//! calls PROC of PID_D with REST from inside the procedure and returns its
//! output), `Big` (input N: returns N bytes), `Stop`.
//!
//! Errors go to stderr as `dipc-dproc: <what>: <strerror> (errno NAME)`,
//! exit code 1.

use clap::{Parser, Subcommand, ValueEnum};
use dipc::dprocs::{self, Answer, Process, Step};
use dipc::pid::{self, PidD};
use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "dipc-dproc",
    about = "dipc distributed processes from the command line"
)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Then {
    Uregist,
    Release,
    Exit,
}

#[derive(Subcommand)]
enum Cmd {
    /// Take names and hold them (see the module docs)
    Hold {
        names: Vec<String>,
        #[arg(long)]
        then: Option<Then>,
    },
    /// The pid_d holding a name
    Lookup { name: String },
    /// Serve the test procedures
    Serve {
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        init: bool,
        /// Declare the process migratable (its tokens travel) and serve
        /// `MoveTo HOST`
        #[arg(long)]
        migratable: bool,
    },
    /// Call a procedure
    Call {
        target: String,
        proc_name: String,
        input: Option<String>,
        #[arg(long, default_value_t = 8192)]
        max_out: usize,
        #[arg(long)]
        timeout_ms: Option<u64>,
        #[arg(long)]
        interrupt_ms: Option<u64>,
        /// With --interrupt-ms: call i is interrupted i times this later
        #[arg(long, default_value_t = 0)]
        interrupt_step_us: u64,
        /// Every call must fail with this errno (e.g. EINTR)
        #[arg(long)]
        expect: Option<String>,
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// Sleep this long after each call
        #[arg(long, default_value_t = 0)]
        pause_ms: u64,
        /// Make the calls from this many threads at once, each `--count`
        /// times (not with --interrupt-ms)
        #[arg(long, default_value_t = 1)]
        parallel: usize,
        /// Print the median and 99th percentile of the calls' round trips
        /// instead of their outputs
        #[arg(long)]
        time: bool,
    },
}

fn errno_name(e: &io::Error) -> String {
    let name = match e.raw_os_error() {
        Some(libc::ESRCH) => "ESRCH",
        Some(libc::EPERM) => "EPERM",
        Some(libc::EINVAL) => "EINVAL",
        Some(libc::ENOTCONN) => "ENOTCONN",
        Some(libc::EAGAIN) => "EAGAIN",
        Some(libc::EMSGSIZE) => "EMSGSIZE",
        Some(libc::EEXIST) => "EEXIST",
        Some(libc::ENOENT) => "ENOENT",
        Some(libc::ENOSYS) => "ENOSYS",
        Some(libc::EDEADLK) => "EDEADLK",
        Some(libc::E2BIG) => "E2BIG",
        Some(libc::ECONNRESET) => "ECONNRESET",
        Some(libc::ETIMEDOUT) => "ETIMEDOUT",
        Some(libc::EINTR) => "EINTR",
        Some(n) => return format!("{n}"),
        None => "OTHER",
    };
    name.to_owned()
}

fn fail(what: &str, e: io::Error) -> ExitCode {
    eprintln!("dipc-dproc: {what}: {e} (errno {})", errno_name(&e));
    ExitCode::from(1)
}

fn say(line: &str) {
    println!("{line}");
    let _ = io::stdout().flush();
}

fn hold(names: &[String], then: Option<Then>) -> ExitCode {
    let me = match pid::regist() {
        Ok(p) => p,
        Err(e) => return fail("regist", e),
    };
    say(&format!("pid_d {me}"));
    for n in names {
        if let Err(e) = dprocs::register_name(n) {
            return fail(&format!("name {n:?}"), e);
        }
    }
    say("named");
    match then {
        Some(Then::Exit) => ExitCode::SUCCESS,
        Some(Then::Uregist) => match pid::uregist(me) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail("uregist", e),
        },
        Some(Then::Release) => {
            for n in names {
                if let Err(e) = dprocs::release_name(n) {
                    return fail(&format!("release {n:?}"), e);
                }
            }
            say("released");
            ExitCode::SUCCESS
        }
        None => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
    }
}

/// The test server's state.
#[derive(Default)]
struct Tokens {
    tokens: u64,
    arrivals: u32,
}

fn take(t: &mut Tokens, phase: &mut u32) -> Answer {
    let first = *phase == 0;
    if first {
        // The arrival number is kept in the phase (+1, so 0 means new).
        *phase = t.arrivals + 1;
        t.arrivals += 1;
    }
    if t.tokens == 0 {
        if first {
            say(&format!("postponed Take {}", *phase - 1));
        }
        return Answer::Wait;
    }
    t.tokens -= 1;
    TOKENS.store(t.tokens, std::sync::atomic::Ordering::Release);
    Answer::Done((*phase - 1).to_string().into_bytes())
}

fn forward(input: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(input);
    let mut parts = text.splitn(3, ' ');
    let (Some(q), Some(p)) = (parts.next(), parts.next()) else {
        return Answer::Fail(libc::EINVAL);
    };
    let Ok(q) = q.parse::<PidD>() else {
        return Answer::Fail(libc::EINVAL);
    };
    let rest = parts.next().unwrap_or("");
    match dprocs::call(q, p, rest.as_bytes(), 8192, Some(Duration::from_secs(20))) {
        Ok(out) => Answer::Done(out),
        Err(e) => Answer::Fail(e.raw_os_error().unwrap_or(libc::EIO)),
    }
}

/// The token count of a migratable `serve`, where its save finds it.
static TOKENS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn serve(name: Option<&str>, init: bool, migratable: bool) -> ExitCode {
    use std::sync::atomic::Ordering;
    let me = match pid::regist() {
        Ok(p) => p,
        Err(e) => return fail("regist", e),
    };
    if migratable {
        let r = dipc::migrate::migratable(
            || TOKENS.load(Ordering::Acquire).to_be_bytes().to_vec(),
            |state| {
                if let Ok(b) = <[u8; 8]>::try_from(state) {
                    TOKENS.store(u64::from_be_bytes(b), Ordering::Release);
                }
            },
        );
        if let Err(e) = r {
            return fail("migratable", e);
        }
    }
    if let Some(n) = name {
        if let Err(e) = dprocs::register_name(n) {
            return fail(&format!("name {n:?}"), e);
        }
    }
    say(&format!("pid_d {me}"));
    let tokens = Tokens {
        tokens: TOKENS.load(Ordering::Acquire),
        arrivals: 0,
    };
    let mut p = Process::new(tokens)
        .procedure("Echo", |_, r| Answer::Done(r.input.to_vec()))
        .procedure("Whoami", |_, r| {
            Answer::Done(format!("{} {}", r.caller, r.uid).into_bytes())
        })
        .procedure("Put", |t, _| {
            t.tokens += 1;
            TOKENS.store(t.tokens, Ordering::Release);
            Answer::Done(Vec::new())
        })
        .procedure("MoveTo", |_, r| {
            let host = String::from_utf8_lossy(r.input);
            match dipc::migrate::parse_host(&host).and_then(dipc::migrate::migrate) {
                Ok(never) => match never {},
                Err(e) => Answer::Fail(e.raw_os_error().unwrap_or(libc::EIO)),
            }
        })
        .procedure("Take", |t, r| take(t, &mut r.phase))
        .procedure("Never", |_, r| {
            if r.phase == 0 {
                say(&format!("never from {}", r.caller));
                r.phase = 1;
            }
            Answer::Wait
        })
        .procedure("Forward", |_, r| forward(r.input))
        .procedure("Big", |_, r| {
            match String::from_utf8_lossy(r.input).parse::<usize>() {
                Ok(n) if n <= dprocs::max_output() => Answer::Done(vec![b'x'; n]),
                _ => Answer::Fail(libc::EINVAL),
            }
        })
        .procedure("Stop", |_, _| {
            dprocs::stop();
            Answer::Done(Vec::new())
        });
    if init {
        p = p.initial(|t, phase| {
            if *phase == 0 {
                say("init waiting");
                *phase = 1;
            }
            if t.tokens == 0 {
                return Step::Wait;
            }
            t.tokens -= 1;
            say("init done");
            Step::Done
        });
    }
    match p.serve() {
        Ok(_) => {
            say("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => fail("serve", e),
    }
}

extern "C" fn on_usr1(_: libc::c_int) {}

/// Sends SIGUSR1 to the calling thread after `delay`, with a handler that
/// does not restart calls, so the call in progress sees `EINTR`.
fn interrupt_after(delay: Duration) {
    // SAFETY: a handler that does nothing; sigaction with a zeroed struct
    // plus the handler and no SA_RESTART.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr1 as extern "C" fn(libc::c_int) as usize;
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
    // SAFETY: pthread_self has no preconditions.
    let target = unsafe { libc::pthread_self() } as usize;
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        // SAFETY: the calling thread lives until the process exits.
        unsafe { libc::pthread_kill(target as libc::pthread_t, libc::SIGUSR1) };
    });
}

/// When each call is interrupted: call i after `first + i * step`.
struct Interrupt {
    first: Duration,
    step: Duration,
}

#[allow(clippy::too_many_arguments)]
fn call(
    target: &str,
    proc_name: &str,
    input: &[u8],
    max_out: usize,
    timeout: Option<Duration>,
    interrupt: Option<Interrupt>,
    expect: Option<&str>,
    count: usize,
    pause: Duration,
    parallel: usize,
    time: bool,
) -> ExitCode {
    let me = match pid::regist() {
        Ok(p) => p,
        Err(e) => return fail("regist", e),
    };
    say(&format!("pid_d {me}"));
    let q = if target == "self" {
        me
    } else if let Ok(q) = target.parse::<PidD>() {
        q
    } else {
        match dprocs::lookup_name(target) {
            Ok(q) => q,
            Err(e) => return fail(&format!("lookup {target:?}"), e),
        }
    };
    if parallel > 1 && interrupt.is_some() {
        eprintln!("dipc-dproc: --parallel does not go with --interrupt-ms");
        return ExitCode::from(2);
    }
    let one = |interrupt: Option<&Interrupt>| -> Result<(usize, Vec<Duration>), ExitCode> {
        let mut times = Vec::with_capacity(if time { count } else { 0 });
        let mut failed = 0;
        for i in 0..count {
            if let Some(int) = interrupt {
                interrupt_after(int.first + int.step * i as u32);
            }
            let t0 = std::time::Instant::now();
            let r = dprocs::call(q, proc_name, input, max_out, timeout);
            std::thread::sleep(pause);
            match r {
                Err(e) if expect.is_some() => {
                    if expect != Some(errno_name(&e).as_str()) {
                        return Err(fail(&format!("call {i} of {target}.{proc_name}"), e));
                    }
                    failed += 1;
                }
                Ok(_) if expect.is_some() => {
                    eprintln!("FAIL: call {i} of {target}.{proc_name} returned");
                    return Err(ExitCode::from(1));
                }
                Ok(_) if time => times.push(t0.elapsed()),
                Ok(out) => say(&String::from_utf8_lossy(&out)),
                Err(e) => return Err(fail(&format!("call {target}.{proc_name}"), e)),
            }
        }
        Ok((failed, times))
    };
    let results: Vec<_> = if parallel > 1 {
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..parallel).map(|_| s.spawn(|| one(None))).collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or(Err(ExitCode::from(1))))
                .collect()
        })
    } else {
        vec![one(interrupt.as_ref())]
    };
    let mut failed = 0;
    let mut times = Vec::new();
    for r in results {
        match r {
            Ok((f, t)) => {
                failed += f;
                times.extend(t);
            }
            Err(code) => return code,
        }
    }
    let count = count * parallel;
    if let Some(e) = expect {
        say(&format!("{e} {failed}"));
    }
    if !times.is_empty() {
        times.sort();
        let at = |q: usize| times[(times.len() - 1) * q / 100].as_micros();
        say(&format!(
            "{count} calls: median {} us, p99 {} us",
            at(50),
            at(99)
        ));
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    // The library's warnings (a refused call link, say) go to stderr.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match Args::parse().cmd {
        Cmd::Hold { names, then } => hold(&names, then),
        Cmd::Lookup { name } => match dprocs::lookup_name(&name) {
            Ok(p) => {
                say(&p.to_string());
                ExitCode::SUCCESS
            }
            Err(e) => fail(&format!("lookup {name:?}"), e),
        },
        Cmd::Serve {
            name,
            init,
            migratable,
        } => serve(name.as_deref(), init, migratable),
        Cmd::Call {
            target,
            proc_name,
            input,
            max_out,
            timeout_ms,
            interrupt_ms,
            interrupt_step_us,
            expect,
            count,
            pause_ms,
            parallel,
            time,
        } => call(
            &target,
            &proc_name,
            input.unwrap_or_default().as_bytes(),
            max_out,
            timeout_ms.map(Duration::from_millis),
            interrupt_ms.map(|ms| Interrupt {
                first: Duration::from_millis(ms),
                step: Duration::from_micros(interrupt_step_us),
            }),
            expect.as_deref(),
            count,
            Duration::from_millis(pause_ms),
            parallel,
            time,
        ),
    }
}
