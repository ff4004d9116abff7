//! One attachment as the agent serves it: its units' rights, the faults
//! asked of the manager and their waiters, and its detach.

use super::maps::{map_back, map_trap};
use super::table::{self, REPLY_FAIL, REPLY_RETRY, RIGHT_NONE, RIGHT_READ, RIGHT_WRITE};
use super::Conn;
use dipc_common::channel::Channel;
use dipc_common::wire::{self, Message, ShmChunk};
use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::AtomicU8;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A waiting handler's reply word.
pub(super) type Waiter = u64;

pub(super) struct Pending {
    pub(super) deadline: Instant,
    pub(super) waiters: Vec<Waiter>,
}

pub(super) enum DetachPhase {
    /// Waiting for the faults already sent to be answered, so that no grant
    /// can arrive after `ShmDetach`.
    Draining,
    /// `ShmDetach` sent with this request id.
    Sent { id: u64, deadline: Instant },
}

pub(super) struct Detach {
    pub(super) phase: DetachPhase,
    pub(super) reply: mpsc::Sender<()>,
}

/// One attachment, as the agent serves it.
pub(super) struct Seg {
    pub(super) slot: usize,
    pub(super) gen: u32,
    /// None once the segment is dead.
    pub(super) ch: Option<Channel<Conn>>,
    pub(super) fd: RawFd,
    pub(super) app: usize,
    pub(super) agent: usize,
    pub(super) len: usize,
    pub(super) unit: usize,
    pub(super) nunits: usize,
    pub(super) readonly: bool,
    pub(super) exec: bool,
    pub(super) timeout: Duration,
    pub(super) chunk: usize,
    pub(super) pending: HashMap<u32, Pending>,
    pub(super) detach: Option<Detach>,
    /// The process's trap memfd (see the module docs).
    pub(super) trap_fd: RawFd,
    /// Units mapped as traps one by one (the whole view is one when the
    /// slot's `trapped` is set).
    pub(super) trapped: HashSet<u32>,
}

impl Seg {
    pub(super) fn rights(&self) -> &[AtomicU8] {
        // SAFETY: the slot stays filled until the agent frees it after the
        // segment is removed from its table.
        unsafe { table::rights(self.slot) }
    }

    pub(super) fn right(&self, unit: u32) -> u8 {
        self.rights()
            .get(unit as usize)
            .map_or(RIGHT_NONE, |r| r.load(SeqCst))
    }

    /// Offset and length of a unit in the views (the last may be short).
    pub(super) fn span(&self, unit: u32) -> Option<(usize, usize)> {
        unit_span(self.len, self.unit, self.nunits, unit)
    }

    pub(super) fn prot(&self, right: u8) -> i32 {
        let exec = if self.exec { libc::PROT_EXEC } else { 0 };
        match right {
            RIGHT_WRITE => libc::PROT_READ | libc::PROT_WRITE | exec,
            RIGHT_READ => libc::PROT_READ | exec,
            _ => libc::PROT_NONE,
        }
    }

    /// What a trap of this attachment lets through to its SIGBUS: every
    /// access the attachment allows. A write to a read-only attachment or
    /// an instruction fetch without `SHM_EXEC` stays a SIGSEGV (the
    /// program's fault, not a lost unit).
    pub(super) fn trap_prot(&self) -> i32 {
        let write = if self.readonly { 0 } else { libc::PROT_WRITE };
        let exec = if self.exec { libc::PROT_EXEC } else { 0 };
        libc::PROT_READ | write | exec
    }

    /// Sets the app view of a unit to `right`: the protection first (a
    /// trap is mapped back to the memory), the recorded right after, so a
    /// handler that reads the right (where the fault does not say read or
    /// write) never sees a right the page does not have yet.
    pub(super) fn set_right(&mut self, unit: u32, right: u8) -> Result<(), String> {
        let (off, len) = self
            .span(unit)
            .ok_or_else(|| format!("unit {unit} out of range"))?;
        let prot = if self.detach.is_some() {
            // A detaching view stays closed (see Agent::start_detach); a
            // trap with no access is as closed as the memory.
            libc::PROT_NONE
        } else {
            self.prot(right)
        };
        if self.detach.is_none() && self.trapped.contains(&unit) {
            // SAFETY: the unit's range of both views, which we mapped.
            unsafe { map_back(self.agent + off, self.app + off, len, prot) }.map_err(|e| {
                format!(
                    "mapping unit {unit} back failed: {}",
                    io::Error::from_raw_os_error(e)
                )
            })?;
            self.trapped.remove(&unit);
        } else {
            // SAFETY: the range lies inside the app view, which we mapped.
            let r = unsafe { libc::mprotect((self.app + off) as *mut libc::c_void, len, prot) };
            if r != 0 {
                return Err(format!(
                    "mprotect of unit {unit} failed: {}",
                    io::Error::last_os_error()
                ));
            }
        }
        self.store_right(unit, right);
        Ok(())
    }

    pub(super) fn store_right(&self, unit: u32, right: u8) {
        if let Some(r) = self.rights().get(unit as usize) {
            r.store(right, SeqCst);
        }
    }

    /// Whether every touch of `unit` raises SIGBUS without a fault to us.
    pub(super) fn is_trap(&self, unit: u32) -> bool {
        table::SLOTS[self.slot].trapped.load(SeqCst) || self.trapped.contains(&unit)
    }

    /// `unit` cannot be had (lost, or no answer in time): maps it as a
    /// trap and returns the answer for its waiters: *retry*, and the
    /// access raises SIGBUS; *fail* only if the trap cannot be mapped (the
    /// handler raises SIGBUS itself). A grant that comes later still maps
    /// it back (see `set_right`). While detaching, the view is closed
    /// already and a retried access faults as after `shmdt`.
    pub(super) fn fail_unit(&mut self, unit: u32) -> u32 {
        let Some((off, len)) = self.span(unit) else {
            return REPLY_FAIL;
        };
        if self.detach.is_some() {
            self.store_right(unit, RIGHT_NONE);
            return REPLY_RETRY;
        }
        if self.is_trap(unit) {
            return REPLY_RETRY;
        }
        // SAFETY: the unit's range of the app view, which we mapped.
        match unsafe { map_trap(self.trap_fd, self.app + off, len, self.trap_prot()) } {
            Ok(()) => {
                self.store_right(unit, RIGHT_NONE);
                self.trapped.insert(unit);
                REPLY_RETRY
            }
            Err(e) => {
                log::warn!(
                    "dipc: cannot map lost unit {unit} as a trap ({}); SIGBUS is raised \
                     from the fault handler",
                    io::Error::from_raw_os_error(e)
                );
                // SAFETY: as above.
                unsafe {
                    libc::mprotect((self.app + off) as *mut libc::c_void, len, libc::PROT_NONE)
                };
                self.store_right(unit, RIGHT_NONE);
                REPLY_FAIL
            }
        }
    }

    /// Maps the whole app view as a trap, for a segment that cannot be
    /// served any more; false if that failed (the view is then closed, and
    /// the handler raises SIGBUS itself).
    pub(super) fn trap_all(&mut self) -> bool {
        // SAFETY: the whole app view, which we mapped.
        let trapped = unsafe { map_trap(self.trap_fd, self.app, self.len, self.trap_prot()) };
        if let Err(e) = trapped {
            log::warn!(
                "dipc: cannot map a lost segment as a trap ({}); SIGBUS is raised from \
                 the fault handler",
                io::Error::from_raw_os_error(e)
            );
            // SAFETY: as above.
            unsafe { libc::mprotect(self.app as *mut libc::c_void, self.len, libc::PROT_NONE) };
        }
        self.trapped.clear();
        trapped.is_ok()
    }

    pub(super) fn send(&mut self, id: u64, msg: &Message) -> Result<(), String> {
        match self.ch.as_mut() {
            Some(ch) => ch
                .send(id, msg)
                .map_err(|e| format!("sending {}: {e}", msg.kind().name())),
            None => Err("connection closed".into()),
        }
    }

    /// Sends a unit's content from the agent view as `ShmData` chunks.
    pub(super) fn send_content(&mut self, unit: u32) -> Result<(), String> {
        let (off, len) = self
            .span(unit)
            .ok_or_else(|| format!("unit {unit} out of range"))?;
        let mut done = 0;
        while done < len {
            let n = self.chunk.min(len - done);
            // SAFETY: [off+done, off+done+n) lies inside the agent view,
            // which stays mapped read-write while the segment is served.
            let data =
                unsafe { std::slice::from_raw_parts((self.agent + off + done) as *const u8, n) };
            let ch = self.ch.as_mut().ok_or("connection closed")?;
            ch.send_encoded(|out| wire::encode_shm_data(0, unit, done as u64, data, out))
                .map_err(|e| format!("sending ShmData: {e}"))?;
            done += n;
        }
        Ok(())
    }
}

pub(super) fn unit_span(
    len: usize,
    unit_len: usize,
    nunits: usize,
    unit: u32,
) -> Option<(usize, usize)> {
    let u = unit as usize;
    if u >= nunits {
        return None;
    }
    let off = u * unit_len;
    Some((off, unit_len.min(len - off)))
}

/// Copies a `ShmData` frame's content into the agent view of `seg`
/// (described by its fields, as the frame still borrows the segment's
/// channel).
pub(super) fn store_data(
    (agent, len, unit_len, nunits): (usize, usize, usize, usize),
    ShmChunk { unit, offset, data }: ShmChunk<'_>,
) -> Result<(), String> {
    let (off, ulen) = unit_span(len, unit_len, nunits, unit)
        .ok_or_else(|| format!("ShmData for unit {unit} of {nunits}"))?;
    let inside = offset
        .checked_add(data.len() as u64)
        .is_some_and(|end| end <= ulen as u64);
    if !inside {
        return Err(format!(
            "ShmData of {} bytes at {offset} past unit {unit} ({ulen} bytes)",
            data.len()
        ));
    }
    // SAFETY: [off+offset, off+offset+data.len()) lies inside the unit
    // (checked above), inside the agent view, which stays mapped
    // read-write while the segment is served.
    unsafe {
        std::ptr::copy_nonoverlapping(
            data.as_ptr(),
            (agent + off + offset as usize) as *mut u8,
            data.len(),
        )
    };
    Ok(())
}
