//! Which messages may arrive where: one enum per receiving side of each
//! kind of connection, built by `protocol!` from the names of the table's
//! messages (their fields stay declared once, in `table.rs`).
//!
//! A message's group in the table says what it is about; these say where
//! it may travel, which is not the same thing: a `KeyGet` goes from an
//! application to its dipcd and again from dipcd to the referee, a `Done`
//! answers on every connection. A handler converts each decoded
//! [`Message`] with [`Protocol::accept`] and matches on the enum of its
//! connection: the compiler then checks that it answers every message that
//! may come, and a message of another protocol is refused by name before
//! any handler code sees it.

// The table's field types, which the enums' variants name.
use super::types::*;
use super::Message;
use std::fmt;
use std::net::SocketAddr;

/// The messages one side of a connection may receive.
pub trait Protocol: Sized + Into<Message> {
    /// The enum's name, for errors and logs.
    const NAME: &'static str;
    /// Its messages' kinds.
    const KINDS: &'static [super::Kind];

    /// `msg` as a message of this protocol, or `msg` back untouched.
    fn from_message(msg: Message) -> Result<Self, Message>;

    /// The message's kind.
    fn kind(&self) -> super::Kind;

    /// `msg` as a message of this protocol, or an error that names both.
    fn accept(msg: Message) -> Result<Self, Unexpected> {
        Self::from_message(msg).map_err(|m| Unexpected {
            kind: m.kind().name(),
            protocol: Self::NAME,
        })
    }
}

/// A message that has no place on the connection it came on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unexpected {
    pub kind: &'static str,
    pub protocol: &'static str,
}

impl fmt::Display for Unexpected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is not a message of {}", self.kind, self.protocol)
    }
}

impl std::error::Error for Unexpected {}

protocol! {
    /// What either end of a TCP connection between hosts reads before its
    /// secure channel opens (`crate::auth`): the Noise handshake's
    /// messages, or the acceptor's refusal.
    Greeting { Handshake, Refused, Error }
}

protocol! {
    /// What the referee reads from a host's dipcd on its link (and from
    /// `dipcref` on the back door): the host's join and heartbeats, the key,
    /// process, name and move requests dipcd relays for the host's
    /// processes, and the administrative questions.
    ToReferee {
        Ping, Join, Heartbeat, LoadReport,
        KeyGet, KeyCommit, KeyAbort, KeyRemove, KeyClaim,
        PidRegister, Unregister, PidLookup,
        NameRegister, NameRelease, NameLookup,
        MoveToken, MoveAbort, MoveIn, MoveCheck, MoveAsk,
        ListHosts, ListKeys, DropKey, ListPids, ListNames, ListLoad,
    }
}

protocol! {
    /// What a host's dipcd reads from the referee: the answers to its join,
    /// heartbeats and relayed requests, and what the referee pushes (a key
    /// freed, a move asked for).
    FromReferee {
        Pong, Error, Done, Refused, Joined, HeartbeatAck,
        KeyOwner, KeyGone, Registered, PidInfo, MoveAsk,
        Hosts, Keys, Pids, Names, Loads,
    }
}

protocol! {
    /// What dipcd reads on its Unix socket: requests of the host's
    /// applications, workers, shm managers and `dipcref`.
    ToDipcd {
        Ping,
        KeyGet, KeyCommit, KeyAbort, KeyRemove, KeyCheck, Placeholder, Resolve,
        Connect, ShmOpen,
        Register, Unregister, PidLookup, PidCheck, WorkerCheck, Migratable,
        NameRegister, NameRelease, NameLookup,
        MoveToken, MoveAbort, MoveIn, MoveCheck, MoveAsk,
        CallEndpoint, CallRoute,
        ListHosts, ListKeys, DropKey, ListPids, ListNames, ListLoad,
        StatsAsk, StatsReport, CallsMade,
    }
}

protocol! {
    /// What a worker reads from its caller on a session (TCP, secure
    /// channel): the employer's `Session` and `SenderPid`, then the IPC
    /// calls and everything else a caller may ask of the owner's host.
    ToWorker {
        Ping, Cancel, Session, SenderPid,
        IpcGet, MsgSnd, MsgRcv, Received, MsgCtl, SemOp, SemCtl, SemJoin,
        ShmAttach, ShmCtl, ShmQuery, IpcStatAny,
        KillD, SendD, CallOpen, MigrateSpawn, MigrateData, MigrateCommit,
        StatsAsk,
    }
}

protocol! {
    /// What the worker of a `SEM_UNDO` context reads from another worker
    /// of its host (Unix socket): a session to serve.
    ToUndoWorker { SemHandover }
}

protocol! {
    /// What a segment's shm manager reads from a participant's agent (or a
    /// one-off asker of `ShmQuery`).
    ToManager { ShmAttach, ShmQuery, ShmFault, ShmData, ShmRevoked, ShmDetach }
}

protocol! {
    /// What a participant's shm agent reads from the segment's manager
    /// (and a one-off asker of `ShmQuery`, its `ShmState`).
    FromManager {
        Error, Done, ShmAttached, ShmData, ShmGrant, ShmRevoke, ShmLost, ShmState,
    }
}

protocol! {
    /// What a registered process reads on a call link to its endpoint
    /// (`dprocs`): the caller's hello, then its calls.
    ToCallee { CallHello, CallRequest }
}

protocol! {
    /// What a process reads from its dipcd: the answers to its requests.
    FromDipcd {
        Pong, Error, Done, KeyOwner, SessionReady, Registered, PidInfo,
        CallEndpointAt, Hosts, Keys, Pids, Names, Loads, Stats,
    }
}

protocol! {
    /// What a caller reads from the worker of its session: the answers to
    /// its calls.
    FromWorker {
        Pong, Error, Done, Vouched, MsgData, MsqStat, SemVals, SemStat,
        ShmStat, ShmState, Stats,
    }
}

protocol! {
    /// What a caller reads from the process at the other end of a call
    /// link: its `Done` to the hello, then the answers to its calls.
    FromCallee { Error, Done, CallReply }
}

/// Every protocol's name and kinds, for tests and documentation.
pub const ALL: &[(&str, &[super::Kind])] = &[
    (Greeting::NAME, Greeting::KINDS),
    (ToReferee::NAME, ToReferee::KINDS),
    (FromReferee::NAME, FromReferee::KINDS),
    (ToDipcd::NAME, ToDipcd::KINDS),
    (FromDipcd::NAME, FromDipcd::KINDS),
    (ToWorker::NAME, ToWorker::KINDS),
    (FromWorker::NAME, FromWorker::KINDS),
    (ToUndoWorker::NAME, ToUndoWorker::KINDS),
    (ToManager::NAME, ToManager::KINDS),
    (FromManager::NAME, FromManager::KINDS),
    (ToCallee::NAME, ToCallee::KINDS),
    (FromCallee::NAME, FromCallee::KINDS),
];

#[cfg(test)]
mod tests {
    use super::super::Kind;
    use super::*;

    /// Every message converts to the protocols that list it, and back to
    /// the same message; every other protocol hands it back untouched.
    fn check<P: Protocol + fmt::Debug>() {
        for &k in Kind::ALL {
            let msg = Message::sample(k);
            match P::from_message(msg.clone()) {
                Ok(p) => {
                    assert!(P::KINDS.contains(&k), "{} took {}", P::NAME, k.name());
                    assert_eq!(p.kind(), k);
                    assert_eq!(p.into(), msg);
                }
                Err(back) => {
                    assert!(!P::KINDS.contains(&k), "{} refused {}", P::NAME, k.name());
                    assert_eq!(back, msg);
                    let e = P::accept(msg).map(|_| ()).unwrap_err();
                    assert_eq!(
                        e.to_string(),
                        format!("{} is not a message of {}", k.name(), P::NAME)
                    );
                }
            }
        }
    }

    #[test]
    fn each_protocol_takes_its_messages_and_only_those() {
        check::<Greeting>();
        check::<ToReferee>();
        check::<FromReferee>();
        check::<ToDipcd>();
        check::<FromDipcd>();
        check::<ToWorker>();
        check::<FromWorker>();
        check::<ToUndoWorker>();
        check::<ToManager>();
        check::<FromManager>();
        check::<ToCallee>();
        check::<FromCallee>();
    }

    /// A message no protocol lists could be sent but never handled: a new
    /// message must say where it may arrive. `Hello` is the exception: it
    /// is never a frame, only the sealed payload of the first `Handshake`.
    #[test]
    fn every_message_may_arrive_somewhere() {
        let nowhere: Vec<&str> = Kind::ALL
            .iter()
            .filter(|k| **k != Kind::Hello)
            .filter(|k| !ALL.iter().any(|(_, kinds)| kinds.contains(k)))
            .map(|k| k.name())
            .collect();
        assert!(nowhere.is_empty(), "in no protocol: {nowhere:?}");
    }
}
