//! Message queue calls made for a remote caller.

use crate::fail;
use dipc_common::sysv;
use dipc_common::wire::Message;
use log::{info, warn};
use std::time::{Duration, Instant};

/// A message this worker took from a queue for its caller, held until the
/// caller confirms it has the reply (`Received`, or its next request).
///
/// A reply written into a connection whose peer is cut off never arrives,
/// and the caller's call fails (a lost owner's errors); the message it was
/// to get would be gone from the queue and delivered to nobody. Holding it
/// until confirmed lets the worker put it back when the session ends
/// without a confirmation ([`Held::put_back`]). (Peeking with `MSG_COPY`
/// instead, and taking the message only once confirmed, cannot serve a
/// blocking receive: `MSG_COPY` needs `IPC_NOWAIT` and picks a message by
/// position, not by type.)
pub struct Held {
    /// The frame id of the call whose reply carried it.
    pub call: u64,
    queue: i32,
    mtype: i64,
    text: Vec<u8>,
}

impl Held {
    /// What `reply` (the answer to a `msgrcv` on `queue`, sent with frame
    /// id `call`) took from the queue, if anything.
    pub fn of(call: u64, queue: i32, reply: Message) -> Option<Held> {
        match reply {
            Message::MsgData { mtype, text } => Some(Held {
                call,
                queue,
                mtype,
                text,
            }),
            _ => None,
        }
    }

    /// Sends the message back into its queue, with its type, as the caller
    /// (so only a caller who may also write the queue can have it put
    /// back). The kernel appends it at the tail: it comes after messages
    /// sent while it was away. A full queue is waited on for at most
    /// `wait`; after that, or if the queue is gone, the message is lost
    /// (and said so in the log).
    pub fn put_back(self, wait: Duration) {
        let r = match sysv::msgsnd(self.queue, self.mtype, &self.text, libc::IPC_NOWAIT) {
            Err(libc::EAGAIN) => send_within(self.queue, self.mtype, &self.text, wait),
            r => r,
        };
        match r {
            Ok(()) => info!(
                "worker: the caller did not confirm a message of type {} from queue {}: \
                 put back ({} bytes)",
                self.mtype,
                self.queue,
                self.text.len()
            ),
            Err(e) => warn!(
                "worker: the caller did not confirm a message of type {} from queue {} and it \
                 cannot be put back ({}): {} bytes lost",
                self.mtype,
                self.queue,
                std::io::Error::from_raw_os_error(e),
                self.text.len()
            ),
        }
    }
}

extern "C" fn on_alarm(_: libc::c_int) {}

/// A blocking `msgsnd` that gives up with `EAGAIN` after `wait`: a timer
/// signal (whose handler does nothing, installed without `SA_RESTART`)
/// interrupts the kernel's wait.
fn send_within(queue: i32, mtype: i64, text: &[u8], wait: Duration) -> Result<(), i32> {
    let secs = wait.as_secs().clamp(1, u64::from(u32::MAX));
    let deadline = Instant::now() + Duration::from_secs(secs);
    // SAFETY: installs a handler that does nothing (async-signal-safe);
    // the worker is single-threaded, so the alarm reaches this thread.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_alarm as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut()) != 0 {
            return Err(sysv::errno());
        }
        libc::alarm(secs as libc::c_uint);
    }
    let r = loop {
        match sysv::msgsnd(queue, mtype, text, 0) {
            // Another signal (a stray SIGIO) before the alarm: wait on.
            Err(libc::EINTR) if Instant::now() < deadline => continue,
            Err(libc::EINTR) => break Err(libc::EAGAIN),
            r => break r,
        }
    };
    // SAFETY: cancels the alarm set above.
    unsafe { libc::alarm(0) };
    r
}

pub fn snd(id: i32, mtype: i64, text: &[u8], flags: i32) -> Message {
    match sysv::msgsnd(id, mtype, text, flags) {
        Ok(()) => Message::Done { value: 0 },
        Err(e) => fail(e),
    }
}

pub fn rcv(id: i32, size: u64, mtype: i64, flags: i32) -> Message {
    match sysv::msgrcv(id, size, mtype, flags) {
        Ok((mtype, text)) => Message::MsgData { mtype, text },
        Err(e) => fail(e),
    }
}
