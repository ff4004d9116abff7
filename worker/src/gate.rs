//! A session's rules, apart from the socket: which requests are taken in
//! which order, what is answered without a call, and which message taken
//! for the caller is still unconfirmed.
//!
//! `serve_calls` reads a request, asks [`Gate::admit`] what to do with it,
//! carries that out (the kernel's part: credentials, System V calls) and
//! tells the gate what it answered ([`Gate::answered`]). Keeping the rules
//! here lets them be driven by scripted requests in unit tests, with no
//! connection and no root.

use crate::msg::Held;
use crate::origin::{self, Origins};
use crate::session;
use dipc_common::config::Config;
use dipc_common::wire::{Message, Protocol, ToWorker};
use log::debug;
use std::net::IpAddr;
use std::time::Duration;

/// Who an open session acts for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Who {
    /// The caller's pid on its host.
    pub pid: i32,
    /// The uid the caller's host stated for it (before any root squash):
    /// what a get vouches for (see `keys::get`).
    pub stated_uid: u32,
    /// The caller's pid_d, as its dipcd vouched for it (0: not
    /// registered).
    pub sender: i64,
}

/// The credentials a `Session` asks for, squashed: the worker takes them
/// on, then tells [`Gate::became`] how that went.
#[derive(Debug, PartialEq, Eq)]
pub struct Become {
    pub pid: i32,
    pub stated_uid: u32,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to answer: read the next request.
    Skip,
    /// Answer this, with no call.
    Answer(Message),
    /// Take on these credentials (`Session`).
    Become(Become),
    /// The session is open (`SenderPid`): the read time-out ends
    /// ([`Gate::read_timeout`]); answer `Done`.
    Open,
    /// Carry the request out for `Who`. Never one of the session's own
    /// requests (`Session`, `SenderPid`, `Ping`, `Cancel`, `Received`):
    /// the gate answers those.
    Serve(Who, ToWorker),
}

pub struct Gate {
    peer: IpAddr,
    root_squash: bool,
    /// The request time-out: how long a caller may say nothing before its
    /// session is open, and how long a full queue is waited on to put a
    /// held message back.
    request: Duration,
    /// The caller's pid and stated uid, once `Session` came.
    caller: Option<(i32, u32)>,
    /// The caller's pid_d, once `SenderPid` came.
    sender: Option<i64>,
    /// A message taken for the caller whose reply it has not confirmed
    /// yet.
    held: Option<Held>,
    origins: Origins,
}

impl Gate {
    /// A session from `peer` that the employer has still to open.
    pub fn new(config: &Config, incarnation: u64, peer: IpAddr) -> Gate {
        Gate {
            peer,
            root_squash: config.root_squash,
            request: config.timeouts.request,
            caller: None,
            sender: None,
            held: None,
            origins: Origins::new(incarnation, config.front_end_addr()),
        }
    }

    /// A session already open, for `who` (one handed to this worker's
    /// undo context).
    pub fn opened(config: &Config, incarnation: u64, peer: IpAddr, who: Who) -> Gate {
        Gate {
            caller: Some((who.pid, who.stated_uid)),
            sender: Some(who.sender),
            ..Gate::new(config, incarnation, peer)
        }
    }

    /// Whom the session acts for, once it is open.
    pub fn who(&self) -> Option<Who> {
        match (self.caller, self.sender) {
            (Some((pid, stated_uid)), Some(sender)) => Some(Who {
                pid,
                stated_uid,
                sender,
            }),
            _ => None,
        }
    }

    /// How long the worker waits for the next request: until the session
    /// is open, a caller that says nothing (a replayed handshake) does not
    /// keep a worker; after, the application may stay idle as long as it
    /// lives, and keep-alives (set by the front_end) detect a dead peer
    /// host instead.
    pub fn read_timeout(&self) -> Option<Duration> {
        match self.who() {
            None => Some(self.request),
            Some(_) => None,
        }
    }

    pub fn origins(&mut self) -> &mut Origins {
        &mut self.origins
    }

    /// What to do with request `req`, frame `id`; `behind`: the bytes
    /// already received after it.
    pub fn admit(&mut self, config: &Config, id: u64, req: Message, behind: usize) -> Verdict {
        let req = match ToWorker::accept(req) {
            Ok(req) => req,
            Err(e) => {
                // A request all the same: it confirms the last reply, and
                // is refused as any call before the session is open.
                self.held = None;
                return Verdict::Answer(match self.who() {
                    None => before_session(e.kind),
                    Some(_) => Message::error(
                        libc::EPROTO,
                        format!("a worker does not take {} messages", e.kind),
                    ),
                });
            }
        };
        match req {
            ToWorker::Received => {
                if self.held.as_ref().is_some_and(|h| h.call == id) {
                    self.held = None;
                }
                return Verdict::Skip;
            }
            // A cancel that crossed the reply comes before the caller has
            // read it: no confirmation.
            ToWorker::Cancel => {}
            // The caller sends a request only once it has the last reply.
            _ => self.held = None,
        }
        let who = self.who();
        // A call on a stale id goes no further (only once the session is
        // open: before, the request is refused below anyway).
        if let (Some(_), Some((kind, sid, o))) = (who, origin::target(&req)) {
            if let Err(reply) = self.origins.check(config, kind, sid, o) {
                return Verdict::Answer(reply);
            }
        }
        match req {
            // A cancel that crossed our reply: the call it meant is over.
            ToWorker::Cancel | ToWorker::Received => Verdict::Skip,
            ToWorker::Ping => Verdict::Answer(Message::Pong),
            ToWorker::Session {
                pid,
                uid,
                gid,
                groups,
            } if self.caller.is_none() => {
                let (s_uid, s_gid, s_groups) = session::squash(uid, gid, &groups, self.root_squash);
                if (s_uid, s_gid, &s_groups) != (uid, gid, &groups) {
                    debug!(
                        "worker: root squash: pid {pid} on {} stated uid {uid} gid {gid} \
                         groups {groups:?}, acts as uid {s_uid} gid {s_gid} groups {s_groups:?}",
                        self.peer
                    );
                }
                Verdict::Become(Become {
                    pid,
                    stated_uid: uid,
                    uid: s_uid,
                    gid: s_gid,
                    groups: s_groups,
                })
            }
            ToWorker::SenderPid { pid_d } if self.caller.is_some() && self.sender.is_none() => {
                self.sender = Some(pid_d);
                Verdict::Open
            }
            // Stated once, by the employer, before the application had the
            // channel: a second statement is the application's own.
            ToWorker::Session { .. } | ToWorker::SenderPid { .. } => {
                Verdict::Answer(Message::error(
                    libc::EPERM,
                    "the session's credentials and sender are stated once, by the employer",
                ))
            }
            req => match who {
                None => Verdict::Answer(before_session(req.kind().name())),
                // The attach hands the socket over: the caller waits for
                // the manager's answer, so nothing may follow the attach
                // yet.
                Some(_) if matches!(req, ToWorker::ShmAttach { .. }) && behind > 0 => {
                    Verdict::Answer(Message::error(
                        libc::EPROTO,
                        "a request sent behind ShmAttach, before its answer",
                    ))
                }
                Some(w) => Verdict::Serve(w, req),
            },
        }
    }

    /// A frame whose payload is taken without decoding it (a moving
    /// process's state): a request like any other, so it confirms the
    /// last reply.
    pub fn admit_data(&mut self) {
        self.held = None;
    }

    /// The answer to `Verdict::Become(b)`, given how taking the
    /// credentials on went.
    pub fn became(&mut self, b: &Become, r: Result<(), String>) -> Message {
        match r {
            Ok(()) => {
                debug!(
                    "worker: acting for pid {} on {} as uid {} gid {}",
                    b.pid, self.peer, b.uid, b.gid
                );
                self.caller = Some((b.pid, b.stated_uid));
                Message::Done { value: 0 }
            }
            Err(e) => {
                log::warn!("worker for {}: {e}", self.peer);
                Message::error(libc::EPERM, e)
            }
        }
    }

    /// `reply` went out as the answer to frame `id`; `rcv_queue`: the
    /// queue, if the request was a `MsgRcv`. A message it carries is held
    /// until the caller confirms it.
    pub fn answered(&mut self, id: u64, rcv_queue: Option<i32>, reply: Message) {
        self.held = rcv_queue.and_then(|q| Held::of(id, q, reply));
    }

    /// The session ends: a message the caller has not confirmed goes back
    /// into its queue.
    pub fn end(self) {
        if let Some(h) = self.held {
            h.put_back(self.request);
        }
    }
}

/// The refusal of a request of kind `kind` before the session is open.
fn before_session(kind: &str) -> Message {
    Message::error(
        libc::EPERM,
        format!("{kind} before the session's credentials"),
    )
}

#[cfg(test)]
mod tests;
