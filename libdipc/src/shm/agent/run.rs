//! The agent thread: its `poll()` loop over the request pipe, the wake-up
//! pipe and every segment's connection, and what it does with each event
//! (see the parent module).

use super::seg::{store_data, Detach, DetachPhase, Pending, Seg, Waiter};
use super::table::{
    self, DEAD, DETACHING, REPLY_FAIL, REPLY_RETRY, RIGHT_NONE, RIGHT_READ, RIGHT_WRITE,
};
use super::{fault, last_errno, Cmd, Handle};
use dipc_common::channel::ChannelError;
use dipc_common::wire::{FromManager, Message, Protocol};
use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::mpsc;
use std::time::Instant;

pub(super) struct Agent {
    pub(super) pid: i32,
    pub(super) req_rd: RawFd,
    pub(super) wake_rd: RawFd,
    pub(super) rx: mpsc::Receiver<Cmd>,
    /// By slot.
    pub(super) segs: HashMap<usize, Seg>,
    /// Slots detached but not yet freed (a handler may still be reading
    /// them; see table::try_free).
    pub(super) retiring: Vec<usize>,
    /// Bytes of a request record not yet complete.
    pub(super) carry: Vec<u8>,
    pub(super) next_id: u64,
}

pub(super) fn wake(word: Waiter, value: u32) {
    // SAFETY: every waiter word came from a handler of this process (the
    // record's pid was checked) that is blocked until it gets this one
    // answer; each is answered exactly once.
    unsafe { fault::reply(word, value) }
}

impl Agent {
    pub(super) fn main(mut self, h: &'static Handle) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run()));
        if r.is_err() {
            // Nothing can serve faults any more: fail every waiter and make
            // every later touch SIGBUS, rather than leave threads blocked.
            log::error!("dipc: the shared memory agent failed; distributed segments are lost");
            h.alive.store(false, SeqCst);
            for seg in self.segs.values_mut() {
                let trapped = seg.detach.is_none() && seg.trap_all();
                table::SLOTS[seg.slot].trapped.store(trapped, SeqCst);
                table::set_state(seg.slot, DEAD);
                let reply = if trapped { REPLY_RETRY } else { REPLY_FAIL };
                for (_, p) in seg.pending.drain() {
                    p.waiters.into_iter().for_each(|w| wake(w, reply));
                }
                if let Some(d) = seg.detach.take() {
                    let _ = d.reply.send(());
                }
            }
            // Withdrawn once the traps are in place: a handler that finds
            // no agent returns onto its segment's trap.
            table::REQUEST_FD.store(-1, SeqCst);
            self.fail_requests_forever();
        }
    }

    /// After a failure: every request from now on is answered (retry onto
    /// the segment's trap, or fail), so no handler is ever left waiting
    /// (one may have taken the pipe's descriptor just before it was
    /// withdrawn).
    pub(super) fn fail_requests_forever(&mut self) -> ! {
        loop {
            for r in self.take_requests() {
                if r.pid == self.pid {
                    let trapped = table::SLOTS
                        .get(r.slot as usize)
                        .is_some_and(|s| s.trapped.load(SeqCst));
                    wake(r.word, if trapped { REPLY_RETRY } else { REPLY_FAIL });
                }
            }
            let mut pfd = libc::pollfd {
                fd: self.req_rd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, -1) };
        }
    }

    /// The whole request records waiting in the pipe.
    pub(super) fn take_requests(&mut self) -> Vec<table::Request> {
        let mut buf = [0u8; table::REQUEST_LEN * 64];
        let mut out = Vec::new();
        loop {
            // SAFETY: reading into our buffer from our non-blocking pipe.
            let n = unsafe {
                libc::read(
                    self.req_rd,
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                )
            };
            if n <= 0 {
                return out;
            }
            self.carry.extend_from_slice(&buf[..n as usize]);
            while self.carry.len() >= table::REQUEST_LEN {
                let mut rec = [0u8; table::REQUEST_LEN];
                rec.copy_from_slice(&self.carry[..table::REQUEST_LEN]);
                self.carry.drain(..table::REQUEST_LEN);
                out.push(table::Request::from_bytes(&rec));
            }
        }
    }

    pub(super) fn run(&mut self) {
        let mut fds: Vec<libc::pollfd> = Vec::new();
        let mut order: Vec<usize> = Vec::new();
        loop {
            fds.clear();
            order.clear();
            let pfd = |fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            fds.push(pfd(self.req_rd));
            fds.push(pfd(self.wake_rd));
            for (slot, seg) in &self.segs {
                if seg.ch.is_some() {
                    fds.push(pfd(seg.fd));
                    order.push(*slot);
                }
            }
            let timeout = self.poll_timeout();
            // SAFETY: fds is a valid array of fds.len() pollfds.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 && last_errno() != libc::EINTR {
                log::warn!("dipc: shm agent poll: {}", io::Error::last_os_error());
            }
            if n > 0 {
                if fds[1].revents != 0 {
                    self.drain_wake();
                    self.commands();
                }
                if fds[0].revents != 0 {
                    self.requests();
                }
                for (i, slot) in order.iter().enumerate() {
                    if fds[i + 2].revents != 0 {
                        self.incoming(*slot);
                    }
                }
            }
            self.deadlines(Instant::now());
            self.retiring.retain(|&slot| !table::try_free(slot));
        }
    }

    pub(super) fn poll_timeout(&self) -> i32 {
        if !self.retiring.is_empty() {
            return 1;
        }
        let now = Instant::now();
        let mut first: Option<Instant> = None;
        for seg in self.segs.values() {
            for p in seg.pending.values() {
                first = Some(first.map_or(p.deadline, |f| f.min(p.deadline)));
            }
            if let Some(Detach {
                phase: DetachPhase::Sent { deadline, .. },
                ..
            }) = &seg.detach
            {
                first = Some(first.map_or(*deadline, |f| f.min(*deadline)));
            }
        }
        match first {
            None => -1,
            Some(t) => {
                let ms = t.saturating_duration_since(now).as_millis() + 1;
                ms.min(i32::MAX as u128) as i32
            }
        }
    }

    pub(super) fn drain_wake(&mut self) {
        let mut buf = [0u8; 256];
        // SAFETY: reading into our buffer from our non-blocking pipe.
        while unsafe {
            libc::read(
                self.wake_rd,
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
            )
        } > 0
        {}
    }

    pub(super) fn commands(&mut self) {
        while let Ok(cmd) = self.rx.try_recv() {
            match cmd {
                Cmd::Attach(seg) => {
                    self.segs.insert(seg.slot, *seg);
                }
                Cmd::Detach(slot, reply) => self.start_detach(slot, reply),
            }
        }
    }

    pub(super) fn requests(&mut self) {
        for r in self.take_requests() {
            self.request(r);
        }
    }

    /// One fault from the handler.
    pub(super) fn request(&mut self, r: table::Request) {
        if r.pid != self.pid {
            // Cannot happen (the handler checks the owner pid); a word in
            // another address space must never be written.
            return;
        }
        let slot = r.slot as usize;
        if !self.segs.contains_key(&slot) {
            // The attach command is queued before shmat returns, so before
            // any fault on the segment: take it now.
            self.commands();
        }
        let Some(seg) = self.segs.get_mut(&slot).filter(|s| s.gen == r.gen) else {
            // Stale: detached (the retry then faults as not ours).
            return wake(r.word, REPLY_RETRY);
        };
        if seg.detach.is_some() {
            return wake(r.word, REPLY_RETRY);
        }
        if seg.ch.is_none() {
            // Dead: the retry raises SIGBUS on the trap, if there is one.
            let trapped = table::SLOTS[slot].trapped.load(SeqCst);
            return wake(r.word, if trapped { REPLY_RETRY } else { REPLY_FAIL });
        }
        let write = r.write != 0;
        if seg.span(r.unit).is_none() || (write && seg.readonly) {
            return wake(r.word, REPLY_FAIL);
        }
        if seg.is_trap(r.unit) {
            // A fault from before the trap was mapped: the retry hits it.
            // (Where faults do not say what access they were, this may be
            // a write the trap refuses, which would come back here for
            // ever: the handler raises SIGBUS instead.)
            let reply = if fault::ACCESS_KNOWN {
                REPLY_RETRY
            } else {
                REPLY_FAIL
            };
            return wake(r.word, reply);
        }
        let have = seg.right(r.unit);
        if have == RIGHT_WRITE || (have == RIGHT_READ && !write) {
            // Granted meanwhile (another thread asked first).
            return wake(r.word, REPLY_RETRY);
        }
        if let Some(p) = seg.pending.get_mut(&r.unit) {
            // Already asked for; a writer that gets only read asks again.
            p.waiters.push(r.word);
            return;
        }
        seg.pending.insert(
            r.unit,
            Pending {
                deadline: Instant::now() + seg.timeout,
                waiters: vec![r.word],
            },
        );
        let msg = Message::ShmFault {
            unit: r.unit,
            write,
        };
        if let Err(e) = seg.send(0, &msg) {
            self.kill(slot, &e);
        }
    }

    /// One frame from a segment's manager.
    pub(super) fn incoming(&mut self, slot: usize) {
        let Some(seg) = self.segs.get_mut(&slot) else {
            return;
        };
        let view = (seg.agent, seg.len, seg.unit, seg.nunits);
        let Some(ch) = seg.ch.as_mut() else {
            return;
        };
        // A segment's content goes from the receive buffer straight into
        // the view; every other frame is decoded into a message.
        let r = match ch.recv_raw() {
            Ok(f) => match f.shm_data() {
                Some(Ok(c)) => store_data(view, c),
                Some(Err(e)) => Err(format!("receiving from the manager: {e}")),
                None => match f.decode().map(FromManager::accept) {
                    Ok(Ok(msg)) => {
                        let id = f.request_id;
                        self.frame(slot, id, msg)
                    }
                    Ok(Err(e)) => Err(format!("from the manager: {e}")),
                    Err(e) => Err(format!("receiving from the manager: {e}")),
                },
            },
            Err(ChannelError::Closed) => Err("the manager closed the connection".into()),
            Err(e) => Err(format!("receiving from the manager: {e}")),
        };
        if let Err(e) = r {
            self.kill(slot, &e);
        }
    }

    pub(super) fn frame(&mut self, slot: usize, id: u64, msg: FromManager) -> Result<(), String> {
        let Some(seg) = self.segs.get_mut(&slot) else {
            return Ok(());
        };
        match msg {
            FromManager::ShmGrant { unit, write } => {
                if seg.span(unit).is_none() {
                    return Err(format!("ShmGrant for unit {unit} of {}", seg.nunits));
                }
                // A read-only attachment never asks for write; never open
                // its view for writing whatever the manager says.
                let right = if write && !seg.readonly {
                    RIGHT_WRITE
                } else {
                    RIGHT_READ
                };
                seg.set_right(unit, right)?;
                if let Some(p) = seg.pending.remove(&unit) {
                    p.waiters.into_iter().for_each(|w| wake(w, REPLY_RETRY));
                }
                self.maybe_send_detach(slot)?;
            }
            FromManager::ShmLost { unit } => {
                if seg.span(unit).is_none() {
                    return Err(format!("ShmLost for unit {unit} of {}", seg.nunits));
                }
                let reply = seg.fail_unit(unit);
                if let Some(p) = seg.pending.remove(&unit) {
                    p.waiters.into_iter().for_each(|w| wake(w, reply));
                }
                self.maybe_send_detach(slot)?;
            }
            FromManager::ShmRevoke {
                unit,
                keep_read,
                want_data,
            } => {
                if seg.span(unit).is_none() {
                    return Err(format!("ShmRevoke for unit {unit} of {}", seg.nunits));
                }
                let have = seg.right(unit);
                let keep = if keep_read {
                    have.min(RIGHT_READ)
                } else {
                    RIGHT_NONE
                };
                // The app view goes down before the content is read, so no
                // thread of ours can write it after we sent it.
                seg.set_right(unit, keep)?;
                if want_data {
                    seg.send_content(unit)?;
                }
                seg.send(0, &Message::ShmRevoked { unit })?;
            }
            FromManager::Done { .. } | FromManager::Error { .. }
                if matches!(
                    seg.detach,
                    Some(Detach { phase: DetachPhase::Sent { id: d, .. }, .. }) if d == id
                ) =>
            {
                if let FromManager::Error { errno, message } = &msg {
                    log::warn!("dipc: the manager refused a detach: {message} (errno {errno})");
                }
                self.finish_detach(slot);
            }
            // An answer to no detach of ours; the attach's answer, which
            // came before this loop had the connection; a unit's content,
            // which `incoming` stores before any decoding; the answer to a
            // query, which an agent never makes.
            other @ (FromManager::Done { .. }
            | FromManager::Error { .. }
            | FromManager::ShmAttached { .. }
            | FromManager::ShmData { .. }
            | FromManager::ShmState { .. }) => {
                return Err(format!(
                    "unexpected {} from the manager",
                    other.kind().name()
                ))
            }
        }
        Ok(())
    }

    /// The segment cannot be served any more: waiters fail, the app view
    /// closes, later touches raise SIGBUS.
    pub(super) fn kill(&mut self, slot: usize, why: &str) {
        let Some(seg) = self.segs.get_mut(&slot) else {
            return;
        };
        if seg.ch.is_none() {
            return;
        }
        log::warn!("dipc: distributed segment lost: {why}");
        // The view becomes a trap and the slot turns DEAD before the
        // connection closes, so whoever sees the connection end (the
        // manager, or a test playing it) knows every later touch raises
        // SIGBUS. A detaching view stays closed instead: touches fault as
        // after shmdt.
        let reply = if seg.detach.is_none() {
            let trapped = seg.trap_all();
            table::SLOTS[slot].trapped.store(trapped, SeqCst);
            table::set_state(slot, DEAD);
            if trapped {
                REPLY_RETRY
            } else {
                REPLY_FAIL
            }
        } else {
            REPLY_RETRY
        };
        for r in seg.rights() {
            r.store(RIGHT_NONE, SeqCst);
        }
        for (_, p) in seg.pending.drain() {
            p.waiters.into_iter().for_each(|w| wake(w, reply));
        }
        table::SLOTS[slot].conn_fd.store(-1, SeqCst);
        seg.ch = None;
        if seg.detach.is_some() {
            self.finish_detach(slot);
        }
    }

    pub(super) fn start_detach(&mut self, slot: usize, reply: mpsc::Sender<()>) {
        let Some(seg) = self.segs.get_mut(&slot) else {
            let _ = reply.send(());
            return;
        };
        if seg.detach.is_some() {
            // Another thread is detaching it; this one is told it is done
            // (the first caller waits for the real end).
            let _ = reply.send(());
            return;
        }
        // Not ours any more for the handler: a touch from now on is a
        // SIGSEGV, as after shmdt. The whole view closes before anything is
        // written back, so the content sent is final.
        table::set_state(slot, DETACHING);
        // SAFETY: the app view is ours, mapped with this length.
        unsafe { libc::mprotect(seg.app as *mut libc::c_void, seg.len, libc::PROT_NONE) };
        seg.detach = Some(Detach {
            phase: DetachPhase::Draining,
            reply,
        });
        if seg.ch.is_none() {
            return self.finish_detach(slot);
        }
        if let Err(e) = self.maybe_send_detach(slot) {
            self.kill(slot, &e);
        }
    }

    /// Once a detaching segment has no fault outstanding: write back every
    /// unit held for write, then `ShmDetach`.
    pub(super) fn maybe_send_detach(&mut self, slot: usize) -> Result<(), String> {
        let id = self.next_id;
        let Some(seg) = self.segs.get_mut(&slot) else {
            return Ok(());
        };
        match &seg.detach {
            Some(Detach {
                phase: DetachPhase::Draining,
                ..
            }) if seg.pending.is_empty() => {}
            _ => return Ok(()),
        }
        self.next_id += 1;
        for unit in 0..seg.nunits as u32 {
            if seg.right(unit) == RIGHT_WRITE {
                seg.set_right(unit, RIGHT_NONE)?;
                seg.send_content(unit)?;
                seg.send(0, &Message::ShmRevoked { unit })?;
            } else {
                seg.set_right(unit, RIGHT_NONE)?;
            }
        }
        seg.send(id, &Message::ShmDetach)?;
        let deadline = Instant::now() + seg.timeout;
        if let Some(d) = seg.detach.as_mut() {
            d.phase = DetachPhase::Sent { id, deadline };
        }
        Ok(())
    }

    /// Ends a detach: unmaps both views, forgets the segment, answers the
    /// caller. Faults still waiting retry, and fault as not ours.
    pub(super) fn finish_detach(&mut self, slot: usize) {
        let Some(mut seg) = self.segs.remove(&slot) else {
            return;
        };
        seg.ch = None;
        table::SLOTS[slot].conn_fd.store(-1, SeqCst);
        if table::SLOTS[slot].state.load(SeqCst) != DETACHING {
            table::set_state(slot, DETACHING);
        }
        // SAFETY: both views are ours, mapped with this length, and nothing
        // uses them after this (the handler sees the slot as not ours).
        unsafe {
            libc::munmap(seg.app as *mut libc::c_void, seg.len);
            libc::munmap(seg.agent as *mut libc::c_void, seg.len);
        }
        for (_, p) in seg.pending.drain() {
            p.waiters.into_iter().for_each(|w| wake(w, REPLY_RETRY));
        }
        if let Some(d) = seg.detach.take() {
            let _ = d.reply.send(());
        }
        self.retiring.push(slot);
    }

    /// Faults without an answer in time fail; a detach without an answer
    /// in time ends anyway.
    pub(super) fn deadlines(&mut self, now: Instant) {
        let mut expired_detach = Vec::new();
        let mut drained = Vec::new();
        for (slot, seg) in self.segs.iter_mut() {
            let late: Vec<u32> = seg
                .pending
                .iter()
                .filter(|(_, p)| p.deadline <= now)
                .map(|(&unit, _)| unit)
                .collect();
            for unit in &late {
                log::warn!("dipc: no answer from the manager for unit {unit} in time");
                let reply = seg.fail_unit(*unit);
                if let Some(p) = seg.pending.remove(unit) {
                    p.waiters.into_iter().for_each(|w| wake(w, reply));
                }
            }
            if !late.is_empty() {
                drained.push(*slot);
            }
            if let Some(Detach {
                phase: DetachPhase::Sent { deadline, .. },
                ..
            }) = &seg.detach
            {
                if *deadline <= now {
                    log::warn!("dipc: no answer from the manager to a detach in time");
                    expired_detach.push(*slot);
                }
            }
        }
        for slot in drained {
            if let Err(e) = self.maybe_send_detach(slot) {
                self.kill(slot, &e);
            }
        }
        for slot in expired_detach {
            self.finish_detach(slot);
        }
    }
}
