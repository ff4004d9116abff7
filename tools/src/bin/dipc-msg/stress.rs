//! `dipc-msg stress`: producers that send numbered, checksummed messages
//! of random sizes, and a consumer that receives them and checks that
//! none is lost, doubled, reordered within a producer or corrupted, with
//! optional `SIGALRM` interruptions of the calls.
//!
//! Separate because it is a test tool of its own beside the plain queue
//! commands.

use crate::{fail, Failure};
use dipc::msg::{self};
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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
pub(crate) struct Producer {
    pub(crate) producer: i64,
    pub(crate) count: u64,
    pub(crate) seed: u64,
    pub(crate) max_size: usize,
    /// SIGALRM period (zero: none).
    pub(crate) interrupt: Duration,
    /// Sleep after each message.
    pub(crate) pause: Duration,
}

pub(crate) fn produce(id: i32, p: &Producer) -> Result<(), Failure> {
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

pub(crate) fn consume(
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
