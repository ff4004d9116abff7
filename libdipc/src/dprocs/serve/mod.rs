//! The callee's side: [`Process::serve`], which interleaves a process's
//! initial statements and the calls that come on its links.
//!
//! The links come to the process's endpoint (see `dipc_common::calls`).
//! Each starts with a `CallHello` naming the caller, and is believed only
//! with the kernel's word on who connected: a process of this host must
//! be the registration it names (its dipcd answers `PidCheck` for the
//! connection's pid and start time); a link from another host must come
//! from one of this host's workers (`WorkerCheck`), which took the caller's
//! pid_d from the session's statement by the caller's dipcd. The procedure
//! sees the caller's uid as the kernel gave it on the connection: on
//! another host's link, the uid the worker acts as (root squashed).
//!
//! Each link carries one call at a time. Everything is read without
//! blocking and every buffer is bounded, so a caller that stalls, floods,
//! or never reads its replies costs its own link and nothing else.

use super::{stop_requested, MAX_PROC_NAME};
use crate::pid::{errno_err, PidD};
use std::collections::VecDeque;
use std::io;

mod links;

use links::Links;

/// Links a serving process keeps at most (each carries one call at a
/// time, so this also bounds the calls it holds), or half its descriptor
/// limit (`RLIMIT_NOFILE`) if that is less. Past it the link idle
/// the longest is closed (its caller opens a new one when it next calls);
/// if every link has a call waiting, a new caller is refused (`EAGAIN`).
pub const MAX_LINKS: usize = 1024;

/// One call as the procedure sees it.
#[derive(Debug)]
pub struct Request<'a> {
    /// The caller's pid_d, as the kernel's credentials of its link vouch.
    pub caller: PidD,
    /// The caller's uid (effective, when it connected; on another host's
    /// link, the uid its worker acts as: root is squashed).
    pub uid: u32,
    /// The input the caller sent.
    pub input: &'a [u8],
    /// The largest output the caller takes.
    pub max_out: usize,
    /// 0 at first; a procedure that waits in its middle sets it before
    /// answering [`Answer::Wait`] and finds it again when it is retried.
    pub phase: u32,
}

/// What a procedure answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// It ended; the output goes back to the caller.
    Done(Vec<u8>),
    /// Its guard is false: postpone it and try again after the next step.
    /// A procedure must not have changed the state before answering this
    /// unless it also moved its `phase` on.
    Wait,
    /// It ended with an errno for the caller.
    Fail(i32),
}

/// What one step of the initial statements answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// It did a step and has more to do: call it again.
    Continue,
    /// Its guard is false: serve requests, and try it again after each.
    Wait,
    /// The initial statements have ended; the process serves from now on.
    Done,
}

type Procedure<S> = Box<dyn FnMut(&mut S, &mut Request) -> Answer>;
type Initial<S> = Box<dyn FnMut(&mut S, &mut u32) -> Step>;

/// A request waiting to run (or to be retried).
struct Pending {
    link: u64,
    id: u64,
    caller: PidD,
    uid: u32,
    proc_index: usize,
    input: Vec<u8>,
    max_out: usize,
    phase: u32,
}

/// A distributed process: its state, public procedures and initial
/// statements.
///
/// ```no_run
/// use dipc::dprocs::{Answer, Process};
/// struct Buffer { letter: Option<Vec<u8>> }
/// dipc::pid::regist()?;
/// dipc::dprocs::register_name("Buffer")?;
/// Process::new(Buffer { letter: None })
///     .procedure("Send", |b, r| match b.letter {
///         Some(_) => Answer::Wait,                      // when not Full
///         None => { b.letter = Some(r.input.to_vec()); Answer::Done(vec![]) }
///     })
///     .procedure("Receive", |b, _| match b.letter.take() {
///         Some(m) => Answer::Done(m),                   // when Full
///         None => Answer::Wait,
///     })
///     .serve()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Process<S> {
    state: S,
    names: Vec<String>,
    procs: Vec<Procedure<S>>,
    initial: Option<Initial<S>>,
}

impl<S> Process<S> {
    pub fn new(state: S) -> Process<S> {
        Process {
            state,
            names: Vec::new(),
            procs: Vec::new(),
            initial: None,
        }
    }

    /// Declares public procedure `name` (a later one of the same name
    /// replaces it).
    pub fn procedure(
        mut self,
        name: &str,
        f: impl FnMut(&mut S, &mut Request) -> Answer + 'static,
    ) -> Self {
        match self.names.iter().position(|n| n == name) {
            Some(i) => self.procs[i] = Box::new(f),
            None => {
                self.names.push(name.to_owned());
                self.procs.push(Box::new(f));
            }
        }
        self
    }

    /// Declares the initial statements, as a function run one step at a
    /// time with its own `phase` (0 at first) to know where it is.
    pub fn initial(mut self, f: impl FnMut(&mut S, &mut u32) -> Step + 'static) -> Self {
        self.initial = Some(Box::new(f));
        self
    }

    /// Runs the process: its initial statements and the calls that come,
    /// one step at a time. Returns the state when [`super::stop`] was
    /// called or the registration ended (`uregist`, or dipcd ended it); an
    /// error if the process is not registered (`ENOTCONN`) or a procedure
    /// name is bad (`EINVAL`).
    pub fn serve(mut self) -> io::Result<S> {
        let endpoint = super::endpoint().ok_or_else(|| errno_err(libc::ENOTCONN))?;
        if self
            .names
            .iter()
            .any(|n| n.is_empty() || n.len() > MAX_PROC_NAME)
        {
            return Err(errno_err(libc::EINVAL));
        }
        super::STOP.store(false, std::sync::atomic::Ordering::Release);
        let mut links = Links::new(endpoint);
        self.run(&mut links)?;
        Ok(self.state)
    }

    fn run(&mut self, links: &mut Links) -> io::Result<()> {
        let mut pending: VecDeque<Pending> = VecDeque::new();
        let mut initial_phase = 0u32;
        loop {
            // Steps until nothing can continue: after each, the initial
            // statements, then the postponed requests oldest first.
            'steps: loop {
                if stop_requested() {
                    return Ok(());
                }
                if let Some(init) = self.initial.as_mut() {
                    match init(&mut self.state, &mut initial_phase) {
                        Step::Continue => continue 'steps,
                        Step::Done => {
                            self.initial = None;
                            continue 'steps;
                        }
                        Step::Wait => {}
                    }
                }
                for i in 0..pending.len() {
                    let p = &mut pending[i];
                    let before = p.phase;
                    let mut req = Request {
                        caller: p.caller,
                        uid: p.uid,
                        input: &p.input,
                        max_out: p.max_out,
                        phase: p.phase,
                    };
                    let answer = (self.procs[p.proc_index])(&mut self.state, &mut req);
                    p.phase = req.phase;
                    let (status, output) = match answer {
                        Answer::Wait if p.phase == before => continue,
                        // It did part of its work and waits again: a step.
                        Answer::Wait => continue 'steps,
                        Answer::Done(out) if out.len() > p.max_out => (libc::E2BIG, Vec::new()),
                        Answer::Done(out) => (0, out),
                        Answer::Fail(e) if e > 0 => (e, Vec::new()),
                        Answer::Fail(_) => (libc::EIO, Vec::new()),
                    };
                    if let Some(p) = pending.remove(i) {
                        links.reply(p.link, p.id, status, output);
                    }
                    continue 'steps;
                }
                break;
            }
            // Nothing can continue: wait for calls.
            let mut fresh = Vec::new();
            if !links.wait(&mut fresh)? {
                return Ok(());
            }
            // The postponed requests of links that closed: their callers
            // gave up (or exited), and a call runs at most once.
            pending.retain(|p| links.is_open(p.link));
            for c in fresh {
                let Some(proc_index) = self.names.iter().position(|n| *n == c.proc_name) else {
                    links.reply(c.link, c.id, libc::ENOSYS, Vec::new());
                    continue;
                };
                pending.push_back(Pending {
                    link: c.link,
                    id: c.id,
                    caller: c.caller,
                    uid: c.uid,
                    proc_index,
                    input: c.input,
                    max_out: c.max_out,
                    phase: 0,
                });
            }
        }
    }
}
