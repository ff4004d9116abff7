//! `dipc-msg`: System V message queues from the shell, local or
//! distributed (cluster-wide by key, see `dipc::msg`).
//!
//! Every command but `get` first looks the queue up by key (`msgget` with
//! `IPC_DIPC` unless `--local`; no creation, no permission bits asked), or
//! takes `--id` to use a queue id as another `dipc-msg get` printed it.
//!
//! Errors go to stderr as `dipc-msg: <call>: <strerror> (errno NAME)` and
//! the exit code is 1, so scripts and tests can match on the errno name.
//!
//! `stress produce` / `stress consume` exercise a queue with many messages
//! whose integrity the consumer checks. A stress message has the producer's
//! number (1, 2, ...) as its type, and its text is
//!
//! ```text
//! seq: u64 LE | checksum: u64 LE | payload: random bytes
//! ```
//!
//! where `seq` counts 1, 2, ... per producer, the whole text is 16 to 8192
//! bytes long (random), and `checksum` is the 64-bit FNV-1a hash of the
//! type (i64 LE), `seq` and the payload. The consumer checks every
//! checksum, that each producer's sequence goes up by exactly one (the
//! kernel keeps the order of messages of one type), that nothing is
//! duplicated or lost, and that nothing is left over at the end.

use clap::{Args, Parser, Subcommand};
use dipc::msg::{self, IPC_DIPC};
use dipc_common::wire::{IpcKind, IpcSet, Message, MsqInfo};
use nix::errno::Errno;
use serde_json::json;
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "dipc-msg",
    version,
    about = "Use System V message queues, local or distributed across a dipc cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// msgget: look up (or create) a queue and print its id
    Get {
        /// Queue key: decimal, 0x hexadecimal or 0o octal
        #[arg(value_parser = parse_key, allow_negative_numbers = true)]
        key: i32,
        /// IPC_CREAT: create the queue if the key is free
        #[arg(long)]
        create: bool,
        /// IPC_EXCL: fail with EEXIST if the queue exists (with --create)
        #[arg(long)]
        excl: bool,
        /// Permission bits [default: 0666 with --create, else 0]
        #[arg(long, value_parser = parse_mode)]
        mode: Option<u32>,
        /// A plain queue of this host (msgget without IPC_DIPC)
        #[arg(long)]
        local: bool,
    },
    /// msgsnd: send one message
    Send {
        #[command(flatten)]
        queue: Queue,
        /// Message type (> 0 for the kernel to accept it)
        #[arg(value_name = "TYPE", allow_negative_numbers = true)]
        mtype: i64,
        /// Message text
        text: String,
        /// Repeat TEXT (or NUL bytes if it is empty) to exactly N bytes
        #[arg(long, value_name = "N")]
        fill: Option<usize>,
        /// IPC_NOWAIT: fail with EAGAIN instead of waiting for room
        #[arg(long)]
        nowait: bool,
    },
    /// msgrcv: receive one message and print `TYPE TEXT`
    Recv {
        #[command(flatten)]
        queue: Queue,
        /// msgtyp: 0 any, T > 0 the first of type T, T < 0 the lowest type <= |T|
        #[arg(
            long = "type",
            value_name = "T",
            default_value_t = 0,
            allow_negative_numbers = true
        )]
        mtype: i64,
        /// MSG_EXCEPT: the first message whose type is not T
        #[arg(long)]
        except: bool,
        /// MSG_NOERROR: truncate a longer text instead of failing with E2BIG
        #[arg(long)]
        noerror: bool,
        /// Largest text to accept (msgsz)
        #[arg(long, value_name = "N", default_value_t = 8192)]
        size: usize,
        /// IPC_NOWAIT: fail with ENOMSG instead of waiting
        #[arg(long)]
        nowait: bool,
        /// Print only the text's length instead of the text
        #[arg(long)]
        len: bool,
    },
    /// msgctl IPC_STAT: show a queue's state
    Stat {
        #[command(flatten)]
        queue: Queue,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// msgctl IPC_SET: change a queue's mode, owner or size limit
    Set {
        #[command(flatten)]
        queue: Queue,
        /// New permission bits (e.g. 0600)
        #[arg(long, value_parser = parse_mode)]
        mode: Option<u32>,
        /// New msg_qbytes (bytes the queue may hold)
        #[arg(long, value_name = "N")]
        qbytes: Option<u64>,
        /// New owner uid
        #[arg(long)]
        uid: Option<u32>,
        /// New owner gid
        #[arg(long)]
        gid: Option<u32>,
    },
    /// msgctl IPC_RMID: remove a queue (cluster-wide for a distributed one)
    Rm {
        #[command(flatten)]
        queue: Queue,
    },
    /// Send this host's dipcd one of the notices the library sends about a
    /// distributed queue's key, as this process; for checking that forged
    /// notices are refused. `free`: the queue was removed, free KEY (EBUSY
    /// while KEY still names queue ID on this host, EPERM from a host that
    /// does not own it). `commit`, `abort`: this process made (or failed to
    /// make) the queue it was granted to create (EPERM: no such grant).
    /// `claim`: ask to create KEY and exit without creating it, as a
    /// creator that dies would (prints the reply).
    KeyNotice {
        #[arg(value_parser = ["free", "commit", "abort", "claim"])]
        notice: String,
        /// Queue key (decimal, 0x hexadecimal or 0o octal)
        #[arg(value_parser = parse_key)]
        key: i32,
        /// The queue's id on its owner (free, commit)
        #[arg(long, default_value_t = 0)]
        id: i32,
    },
    /// Many messages with checked contents (see the program's docs)
    Stress {
        #[command(subcommand)]
        command: Stress,
    },
}

/// How the queue is named.
#[derive(Args)]
struct Queue {
    /// Queue key (decimal, 0x hexadecimal or 0o octal), or its id with --id
    #[arg(value_parser = parse_key, allow_negative_numbers = true)]
    key: i32,
    /// KEY is a queue id (as `dipc-msg get` printed it on this host)
    #[arg(long)]
    id: bool,
    /// A plain queue of this host (msgget without IPC_DIPC)
    #[arg(long)]
    local: bool,
}

#[derive(Subcommand)]
enum Stress {
    /// Send COUNT messages of type PRODUCER with sequence numbers 1..=COUNT
    Produce {
        #[command(flatten)]
        queue: Queue,
        /// This producer's number (the messages' type), 1 or more
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
        producer: i64,
        /// How many messages to send
        #[arg(long)]
        count: u64,
        /// Seed of the random sizes and contents
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Largest text, 16 or more
        #[arg(long, default_value_t = 8192, value_parser = clap::value_parser!(u64).range(16..))]
        max_size: u64,
        /// Create the queue (mode 0666) if the key is free
        #[arg(long)]
        create: bool,
        /// Interrupt the sends with SIGALRM every N microseconds (a send
        /// that fails with EINTR is sent again)
        #[arg(long, value_name = "N", default_value_t = 0)]
        interrupt_us: u64,
        /// Sleep N microseconds after each send (so that receivers block)
        #[arg(long, value_name = "N", default_value_t = 0)]
        pause_us: u64,
    },
    /// Receive COUNT messages from each producer and check them
    Consume {
        #[command(flatten)]
        queue: Queue,
        /// The producers' numbers, comma-separated (e.g. 1,2)
        #[arg(long, value_delimiter = ',', required = true)]
        producers: Vec<i64>,
        /// Messages expected from each producer
        #[arg(long)]
        count: u64,
        /// Give up when no message arrives for this many seconds
        #[arg(long, value_name = "SECS", default_value_t = 60,
              value_parser = clap::value_parser!(u64).range(1..))]
        idle_timeout: u64,
        /// Create the queue (mode 0666) if the key is free
        #[arg(long)]
        create: bool,
        /// Interrupt the receives with SIGALRM every N microseconds (a
        /// receive that fails with EINTR is tried again)
        #[arg(long, value_name = "N", default_value_t = 0)]
        interrupt_us: u64,
    },
}

/// A failed call: what was called and the errno.
struct Failure {
    call: String,
    errno: i32,
}

fn fail(call: &str) -> impl FnOnce(i32) -> Failure + '_ {
    move |errno| Failure {
        call: call.to_owned(),
        errno,
    }
}

/// `strerror` and the symbolic name of an errno.
fn describe_errno(e: i32) -> (String, String) {
    let err = Errno::from_raw(e);
    let name = if err == Errno::UnknownErrno {
        format!("{e}")
    } else {
        format!("{err:?}")
    };
    (err.desc().to_owned(), name)
}

fn parse_int(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    let lower = t.to_ascii_lowercase();
    let v = if let Some(h) = lower.strip_prefix("0x") {
        i64::from_str_radix(h, 16)
    } else if let Some(o) = lower.strip_prefix("0o") {
        i64::from_str_radix(o, 8)
    } else {
        lower.parse::<i64>()
    }
    .map_err(|e| format!("{s:?} is not a number: {e}"))?;
    Ok(if neg { -v } else { v })
}

/// A key or id: any i32, or a 32-bit unsigned value (0xdeadbeef).
fn parse_key(s: &str) -> Result<i32, String> {
    let v = parse_int(s)?;
    if let Ok(k) = i32::try_from(v) {
        Ok(k)
    } else if let Ok(u) = u32::try_from(v) {
        Ok(u as i32)
    } else {
        Err(format!("{s} does not fit in 32 bits"))
    }
}

/// Permission bits, octal with or without a leading 0 or 0o.
fn parse_mode(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let t = t.strip_prefix("0o").unwrap_or(t);
    let m = u32::from_str_radix(t, 8).map_err(|e| format!("{s:?} is not an octal mode: {e}"))?;
    if m > 0o777 {
        return Err(format!("mode {s} has bits beyond 0777"));
    }
    Ok(m)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(f) => {
            let (text, name) = describe_errno(f.errno);
            eprintln!("dipc-msg: {}: {text} (errno {name})", f.call);
            ExitCode::from(1)
        }
    }
}

fn run(cmd: Command) -> Result<ExitCode, Failure> {
    match cmd {
        Command::Get {
            key,
            create,
            excl,
            mode,
            local,
        } => {
            let mut flags = mode.unwrap_or(if create { 0o666 } else { 0 }) as i32;
            if create {
                flags |= libc::IPC_CREAT;
            }
            if excl {
                flags |= libc::IPC_EXCL;
            }
            if !local {
                flags |= IPC_DIPC;
            }
            let id = msg::get(key, flags).map_err(fail("msgget"))?;
            println!("{id}");
        }
        Command::Send {
            queue,
            mtype,
            text,
            fill,
            nowait,
        } => {
            let id = open(&queue, false)?;
            let mut bytes = text.into_bytes();
            if let Some(n) = fill {
                bytes = if bytes.is_empty() {
                    vec![0; n]
                } else {
                    bytes.iter().copied().cycle().take(n).collect()
                };
            }
            let flags = if nowait { libc::IPC_NOWAIT } else { 0 };
            msg::send(id, mtype, &bytes, flags).map_err(fail("msgsnd"))?;
        }
        Command::Recv {
            queue,
            mtype,
            except,
            noerror,
            size,
            nowait,
            len,
        } => {
            let id = open(&queue, false)?;
            let mut flags = 0;
            if except {
                flags |= libc::MSG_EXCEPT;
            }
            if noerror {
                flags |= libc::MSG_NOERROR;
            }
            if nowait {
                flags |= libc::IPC_NOWAIT;
            }
            let (t, text) = msg::recv(id, size, mtype, flags).map_err(fail("msgrcv"))?;
            if len {
                println!("{t} {}", text.len());
            } else {
                println!("{t} {}", String::from_utf8_lossy(&text));
            }
        }
        Command::Stat { queue, json } => {
            let id = open(&queue, false)?;
            let info = msg::stat(id).map_err(fail("msgctl(IPC_STAT)"))?;
            let remote = !queue.local && msg::is_remote(id);
            print_stat(id, remote, &info, json);
        }
        Command::Set {
            queue,
            mode,
            qbytes,
            uid,
            gid,
        } => {
            let id = open(&queue, false)?;
            let info = msg::stat(id).map_err(fail("msgctl(IPC_STAT)"))?;
            let s = IpcSet {
                uid: uid.unwrap_or(info.perm.uid),
                gid: gid.unwrap_or(info.perm.gid),
                mode: mode.unwrap_or(info.perm.mode & 0o777),
                qbytes: qbytes.unwrap_or(info.qbytes),
            };
            msg::set(id, &s).map_err(fail("msgctl(IPC_SET)"))?;
        }
        Command::Rm { queue } => {
            let id = open(&queue, false)?;
            msg::remove(id).map_err(fail("msgctl(IPC_RMID)"))?;
        }
        Command::KeyNotice { notice, key, id } => {
            let kind = IpcKind::Msg;
            let notice = match notice.as_str() {
                // Incarnation 0: this host's own (dipcd fills it in).
                "free" => Message::KeyRemove {
                    kind,
                    key,
                    id,
                    incarnation: 0,
                },
                "commit" => Message::KeyCommit {
                    kind,
                    key,
                    id,
                    // dipcd puts the caller's uid and its incarnation here.
                    creator_uid: 0,
                    incarnation: 0,
                },
                "claim" => Message::KeyGet {
                    kind,
                    key,
                    flags: libc::IPC_CREAT | 0o666,
                },
                _ => Message::KeyAbort { kind, key },
            };
            let r = dipc::client::load_config()
                .and_then(|c| dipc::Client::for_config(&c))
                .and_then(|mut c| c.call(&notice));
            match r {
                Ok(Message::KeyOwner { owner, id, .. }) => println!("owner {owner} id {id}"),
                Ok(_) => {}
                Err(e) => {
                    eprintln!("dipc-msg: key notice for {key:#x}: {e}");
                    return Err(fail("key notice")(e.errno()));
                }
            }
        }
        Command::Stress {
            command:
                Stress::Produce {
                    queue,
                    producer,
                    count,
                    seed,
                    max_size,
                    create,
                    interrupt_us,
                    pause_us,
                },
        } => {
            let id = open(&queue, create)?;
            let p = Producer {
                producer,
                count,
                seed,
                max_size: max_size as usize,
                interrupt: Duration::from_micros(interrupt_us),
                pause: Duration::from_micros(pause_us),
            };
            produce(id, &p)?;
        }
        Command::Stress {
            command:
                Stress::Consume {
                    queue,
                    producers,
                    count,
                    idle_timeout,
                    create,
                    interrupt_us,
                },
        } => {
            let id = open(&queue, create)?;
            let idle = Duration::from_secs(idle_timeout);
            return consume(id, &producers, count, idle, interrupt_us);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The queue's id: `--id` as given, else looked up by key.
fn open(q: &Queue, create: bool) -> Result<i32, Failure> {
    if q.id {
        return Ok(q.key);
    }
    let mut flags = if q.local { 0 } else { IPC_DIPC };
    if create {
        flags |= libc::IPC_CREAT | 0o666;
    }
    msg::get(q.key, flags).map_err(fail("msgget"))
}

fn print_stat(id: i32, remote: bool, i: &MsqInfo, as_json: bool) {
    let key = format!("{:#x}", i.perm.key as u32);
    let mode = format!("{:04o}", i.perm.mode & 0o777);
    if as_json {
        let v = json!({
            "id": id,
            "remote": remote,
            "key": key,
            "mode": mode,
            "mode_bits": i.perm.mode,
            "uid": i.perm.uid,
            "gid": i.perm.gid,
            "cuid": i.perm.cuid,
            "cgid": i.perm.cgid,
            "qnum": i.qnum,
            "cbytes": i.cbytes,
            "qbytes": i.qbytes,
            "lspid": i.lspid,
            "lrpid": i.lrpid,
            "stime": i.stime,
            "rtime": i.rtime,
            "ctime": i.ctime,
        });
        println!("{v}");
    } else {
        println!("id      {id}{}", if remote { " (remote)" } else { "" });
        println!("key     {key}");
        println!("mode    {mode}");
        println!("uid     {}  gid  {}", i.perm.uid, i.perm.gid);
        println!("cuid    {}  cgid {}", i.perm.cuid, i.perm.cgid);
        println!("qnum    {}", i.qnum);
        println!("cbytes  {}", i.cbytes);
        println!("qbytes  {}", i.qbytes);
        println!("lspid   {}  lrpid {}", i.lspid, i.lrpid);
        println!("stime   {}", i.stime);
        println!("rtime   {}", i.rtime);
        println!("ctime   {}", i.ctime);
    }
}

// ---------------------------------------------------------------- stress

/// Bytes of the sequence number and of the checksum that lead a text.
const HEADER: usize = 16;

/// splitmix64: small, fast, and the same on every host.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, producer: i64) -> Rng {
        Rng(seed ^ (producer as u64).wrapping_mul(0xa076_1d64_78bd_642f))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let r = self.next().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }
}

/// 64-bit FNV-1a of the type, the sequence number and the payload.
fn checksum(mtype: i64, seq: &[u8], payload: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in mtype
        .to_le_bytes()
        .iter()
        .chain(seq.iter())
        .chain(payload.iter())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// What `stress produce` was asked to do.
struct Producer {
    producer: i64,
    count: u64,
    seed: u64,
    max_size: usize,
    /// SIGALRM period (zero: none).
    interrupt: Duration,
    /// Sleep after each message.
    pause: Duration,
}

fn produce(id: i32, p: &Producer) -> Result<(), Failure> {
    let &Producer {
        producer,
        count,
        seed,
        max_size,
        interrupt,
        pause,
    } = p;
    if !interrupt.is_zero() {
        start_timer(interrupt)?;
    }
    let mut interrupted = 0u64;
    let mut rng = Rng::new(seed, producer);
    let mut buf = vec![0u8; max_size];
    let mut bytes = 0u64;
    let start = Instant::now();
    let span = (max_size - HEADER + 1) as u64;
    for seq in 1..=count {
        let len = HEADER + (rng.next() % span) as usize;
        let text = &mut buf[..len];
        let (head, payload) = text.split_at_mut(HEADER);
        rng.fill(payload);
        head[..8].copy_from_slice(&seq.to_le_bytes());
        let sum = checksum(producer, &head[..8], payload);
        head[8..].copy_from_slice(&sum.to_le_bytes());
        loop {
            match msg::send(id, producer, text, 0) {
                Ok(()) => break,
                // Not sent: the kernel's (and dipc's) promise for EINTR.
                Err(libc::EINTR) if !interrupt.is_zero() => interrupted += 1,
                Err(errno) => {
                    return Err(Failure {
                        call: format!("msgsnd (producer {producer}, message {seq} of {count})"),
                        errno,
                    })
                }
            }
        }
        bytes += len as u64;
        if !pause.is_zero() {
            // (std's sleep sleeps on through the timer's signals.)
            std::thread::sleep(pause);
        }
    }
    stop_timer();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "produced {count} messages as producer {producer}, {bytes} bytes in {secs:.2} s \
         ({:.0} msg/s); {interrupted} sends interrupted",
        count as f64 / secs.max(1e-9)
    );
    Ok(())
}

static ALARM: AtomicBool = AtomicBool::new(false);

extern "C" fn on_alarm(_: libc::c_int) {
    ALARM.store(true, Ordering::SeqCst);
}

/// Sends SIGALRM every `period`. Its handler does nothing but interrupt:
/// a blocked msgsnd or msgrcv then fails with EINTR (they are never
/// restarted, as for the kernel's calls).
fn start_timer(period: Duration) -> Result<(), Failure> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let act = SigAction::new(
        SigHandler::Handler(on_alarm),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic.
    unsafe { sigaction(Signal::SIGALRM, &act) }.map_err(|e| Failure {
        call: "sigaction(SIGALRM)".to_owned(),
        errno: e as i32,
    })?;
    set_timer(period).map_err(fail("setitimer"))
}

fn stop_timer() {
    let _ = set_timer(Duration::ZERO);
}

fn set_timer(period: Duration) -> Result<(), i32> {
    let tv = libc::timeval {
        tv_sec: period.as_secs() as libc::time_t,
        tv_usec: period.subsec_micros() as libc::suseconds_t,
    };
    let it = libc::itimerval {
        it_interval: tv,
        it_value: tv,
    };
    // SAFETY: setitimer reads `it`; the old value is not wanted.
    let r = unsafe { libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut()) };
    if r == 0 {
        Ok(())
    } else {
        Err(dipc_common::sysv::errno())
    }
}

/// Violations are printed as they are found, the first ones only.
struct Report {
    violations: u64,
}

impl Report {
    const SHOWN: u64 = 20;

    fn violation(&mut self, what: String) {
        self.violations += 1;
        if self.violations <= Self::SHOWN {
            eprintln!("dipc-msg: stress consume: {what}");
        } else if self.violations == Self::SHOWN + 1 {
            eprintln!("dipc-msg: stress consume: (further violations not shown)");
        }
    }
}

fn consume(
    id: i32,
    producers: &[i64],
    count: u64,
    idle: Duration,
    interrupt_us: u64,
) -> Result<ExitCode, Failure> {
    // The timer's ticks interrupt blocked receives, to check for idleness
    // (and to test EINTR when asked to tick often).
    let tick = if interrupt_us > 0 {
        Duration::from_micros(interrupt_us)
    } else {
        Duration::from_millis(500)
    };
    start_timer(tick)?;
    let mut interrupted = 0u64;
    let mut last = Instant::now();
    // next[i]: the sequence number expected next from producers[i].
    let mut next: Vec<u64> = vec![1; producers.len()];
    let mut got: Vec<u64> = vec![0; producers.len()];
    let total = count * producers.len() as u64;
    let mut received = 0u64;
    let mut bytes = 0u64;
    let mut report = Report { violations: 0 };
    let mut timed_out = false;
    let start = Instant::now();
    let max = msg_max();
    while got.iter().any(|&g| g < count) {
        ALARM.store(false, Ordering::SeqCst);
        let (mtype, text) = match msg::recv(id, max, 0, 0) {
            Ok(m) => m,
            Err(libc::EINTR) if ALARM.load(Ordering::SeqCst) => {
                interrupted += 1;
                if last.elapsed() >= idle {
                    timed_out = true;
                    break;
                }
                continue;
            }
            Err(errno) => {
                return Err(Failure {
                    call: format!("msgrcv (after {received} of {total} messages)"),
                    errno,
                })
            }
        };
        last = Instant::now();
        received += 1;
        bytes += text.len() as u64;
        check(
            producers,
            &mut next,
            &mut got,
            count,
            mtype,
            &text,
            &mut report,
        );
    }
    stop_timer();
    let secs = start.elapsed().as_secs_f64();
    if timed_out {
        for (i, p) in producers.iter().enumerate() {
            if got[i] < count {
                report.violation(format!(
                    "no message for {idle:?}: producer {p} sent {} of {count} (next expected \
                     sequence number {})",
                    got[i], next[i]
                ));
            }
        }
    } else {
        // Anything left is a duplicate or a stranger.
        loop {
            match msg::recv(id, max, 0, libc::IPC_NOWAIT) {
                Ok((mtype, text)) => {
                    received += 1;
                    let seq = seq_of(&text);
                    report.violation(format!(
                        "extra message after all were received: type {mtype}, {} bytes, \
                         sequence number {seq:?}",
                        text.len()
                    ));
                }
                Err(libc::ENOMSG) => break,
                Err(errno) => {
                    return Err(Failure {
                        call: "msgrcv (IPC_NOWAIT, looking for extra messages)".to_owned(),
                        errno,
                    })
                }
            }
        }
    }
    println!(
        "consumed {received} messages ({} producers x {count} expected), {bytes} bytes in \
         {secs:.2} s ({:.0} msg/s); {interrupted} receives interrupted; {} violations",
        producers.len(),
        received as f64 / secs.max(1e-9),
        report.violations
    );
    let _ = std::io::stdout().flush();
    if report.violations == 0 {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("dipc-msg: stress consume: {} violations", report.violations);
        Ok(ExitCode::from(1))
    }
}

/// The largest text a stress message may have, with room to spare so that
/// an oversized message is seen rather than refused with E2BIG.
fn msg_max() -> usize {
    dipc_common::sysv::msgmax().max(8192) * 2
}

fn seq_of(text: &[u8]) -> Option<u64> {
    let b: [u8; 8] = text.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

fn check(
    producers: &[i64],
    next: &mut [u64],
    got: &mut [u64],
    count: u64,
    mtype: i64,
    text: &[u8],
    report: &mut Report,
) {
    let Some(i) = producers.iter().position(|&p| p == mtype) else {
        report.violation(format!(
            "message of unexpected type {mtype} ({} bytes)",
            text.len()
        ));
        return;
    };
    if text.len() < HEADER {
        report.violation(format!(
            "producer {mtype}: message of {} bytes, shorter than its header",
            text.len()
        ));
        return;
    }
    let (head, payload) = text.split_at(HEADER);
    let seq = seq_of(head).unwrap_or(0);
    let sum = u64::from_le_bytes(head[8..16].try_into().unwrap_or([0; 8]));
    let want = checksum(mtype, &head[..8], payload);
    if sum != want {
        report.violation(format!(
            "producer {mtype}: bad checksum in message with sequence number {seq} ({} bytes): \
             {sum:#018x}, computed {want:#018x}",
            text.len()
        ));
        return;
    }
    if seq == 0 || seq > count {
        report.violation(format!(
            "producer {mtype}: sequence number {seq} outside 1..={count}"
        ));
        return;
    }
    if seq < next[i] {
        report.violation(format!(
            "producer {mtype}: sequence number {seq} after {} (duplicate or out of order)",
            next[i] - 1
        ));
        return;
    }
    if seq > next[i] {
        report.violation(format!(
            "producer {mtype}: sequence number {seq} where {} was expected ({} lost or \
             reordered)",
            next[i],
            seq - next[i]
        ));
    }
    got[i] += 1;
    next[i] = seq + 1;
    if got[i] > count {
        report.violation(format!("producer {mtype}: more than {count} messages"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_modes_parse() {
        assert_eq!(parse_key("0x1234"), Ok(0x1234));
        assert_eq!(parse_key("4660"), Ok(4660));
        assert_eq!(parse_key("0o17"), Ok(15));
        assert_eq!(parse_key("0xdeadbeef"), Ok(0xdead_beef_u32 as i32));
        assert_eq!(parse_key("-1"), Ok(-1));
        assert!(parse_key("0x1_0000_0000").is_err());
        assert!(parse_key("zz").is_err());
        assert_eq!(parse_mode("0666"), Ok(0o666));
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert!(parse_mode("0800").is_err());
        assert!(parse_mode("01777").is_err());
    }

    #[test]
    fn errno_names() {
        assert_eq!(describe_errno(libc::EACCES).1, "EACCES");
        assert_eq!(describe_errno(libc::ENOMSG).1, "ENOMSG");
        assert_eq!(describe_errno(libc::EIDRM).1, "EIDRM");
    }

    fn message(p: i64, seq: u64, payload: &[u8]) -> Vec<u8> {
        let mut t = seq.to_le_bytes().to_vec();
        let sum = checksum(p, &t, payload);
        t.extend_from_slice(&sum.to_le_bytes());
        t.extend_from_slice(payload);
        t
    }

    #[test]
    fn checker_finds_violations() {
        let producers = [1, 2];
        let mut next = [1, 1];
        let mut got = [0, 0];
        let mut r = Report { violations: 0 };
        for seq in 1..=3 {
            check(
                &producers,
                &mut next,
                &mut got,
                3,
                1,
                &message(1, seq, b"x"),
                &mut r,
            );
        }
        assert_eq!(r.violations, 0);
        check(
            &producers,
            &mut next,
            &mut got,
            3,
            1,
            &message(1, 3, b"x"),
            &mut r,
        );
        assert_eq!(r.violations, 1, "duplicate");
        check(
            &producers,
            &mut next,
            &mut got,
            3,
            2,
            &message(2, 2, b""),
            &mut r,
        );
        assert_eq!(r.violations, 2, "lost");
        let mut bad = message(2, 3, b"abc");
        bad[17] ^= 1;
        check(&producers, &mut next, &mut got, 3, 2, &bad, &mut r);
        assert_eq!(r.violations, 3, "checksum");
        check(
            &producers,
            &mut next,
            &mut got,
            3,
            7,
            &message(7, 1, b""),
            &mut r,
        );
        assert_eq!(r.violations, 4, "stranger");
    }

    #[test]
    fn rng_is_deterministic_per_producer() {
        let a: Vec<u64> = (0..4).map(|_| Rng::new(5, 1).next()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(Rng::new(5, 1).next(), Rng::new(5, 2).next());
    }
}
