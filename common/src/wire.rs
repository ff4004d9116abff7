//! The dipc wire format: the one definition of every message that dipc
//! processes exchange, over TCP between hosts and over Unix sockets between
//! an application and its host's daemon.
//!
//! A frame is a fixed 20-byte header in network byte order followed by the
//! payload:
//!
//! ```text
//!  0      4        6       8              16        20
//!  | magic | version | type | request id   | length  | payload (length bytes)
//!  | u32   | u16     | u16  | u64          | u32     |
//! ```
//!
//! Every byte that arrives is treated as hostile: [`parse_header`] refuses a
//! bad magic, another protocol version, an unknown message type and a length
//! over the configured maximum *before* anything is allocated for the
//! payload, and [`Message::decode`] checks every field and every count
//! against the bytes actually present. Decoding returns a [`WireError`]; it
//! never panics.

use byteorder::{BigEndian, ByteOrder};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// "DIPC" in ASCII.
pub const MAGIC: u32 = 0x4449_5043;
/// The protocol version this build speaks. Peers must speak the same one.
pub const VERSION: u16 = 2;
/// Bytes in a frame header.
pub const HEADER_LEN: usize = 20;
/// Bytes in a secure channel's key (AES-256-GCM).
pub const KEY_LEN: usize = 32;
/// Longest Noise handshake message (the Noise protocol's own limit).
pub const MAX_HANDSHAKE: usize = 65535;
/// Most supplementary groups a session may carry (Linux's NGROUPS_MAX).
pub const MAX_GROUPS: usize = 65536;

/// A decoding failure. Each names what was wrong with the peer's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    BadMagic(u32),
    BadVersion(u16),
    UnknownType(u16),
    TooLong {
        len: u32,
        max: u32,
    },
    Truncated {
        field: &'static str,
    },
    Invalid {
        field: &'static str,
        reason: String,
    },
    TrailingBytes {
        kind: &'static str,
        extra: usize,
    },
    /// A frame of a secure channel that does not verify under the
    /// channel's key and next counter: forged, altered, replayed,
    /// reordered or from another connection.
    Unauthentic,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::BadMagic(m) => write!(f, "bad magic {m:#010x} (not a dipc peer)"),
            WireError::BadVersion(v) => write!(
                f,
                "unsupported protocol version {v} (this build speaks {VERSION})"
            ),
            WireError::UnknownType(t) => write!(f, "unknown message type {t}"),
            WireError::TooLong { len, max } => {
                write!(f, "frame of {len} bytes exceeds the maximum of {max}")
            }
            WireError::Truncated { field } => write!(f, "frame truncated in field `{field}`"),
            WireError::Invalid { field, reason } => write!(f, "invalid `{field}`: {reason}"),
            WireError::TrailingBytes { kind, extra } => {
                write!(f, "{extra} unexpected bytes after a {kind} message")
            }
            WireError::Unauthentic => f.write_str(
                "a frame failed authentication (forged, altered, replayed or out of order)",
            ),
        }
    }
}

impl std::error::Error for WireError {}

/// A validated frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub request_id: u64,
    pub len: u32,
}

/// The key material of one established secure channel (see
/// `crate::secure`): each direction's AES-256-GCM key and the counter of
/// the next frame. It travels only over local Unix sockets, when a
/// connection is handed from one local process to another with the
/// socket itself (employer to application, worker to shm manager); its
/// `Debug` never shows the keys.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeys {
    pub tx_key: [u8; KEY_LEN],
    pub tx_n: u64,
    pub rx_key: [u8; KEY_LEN],
    pub rx_n: u64,
}

impl SessionKeys {
    /// The same channel seen from its other end (for tests that play both).
    pub fn peer(&self) -> SessionKeys {
        SessionKeys {
            tx_key: self.rx_key,
            tx_n: self.rx_n,
            rx_key: self.tx_key,
            rx_n: self.tx_n,
        }
    }
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionKeys(tx #{}, rx #{})", self.tx_n, self.rx_n)
    }
}

/// Who opened a daemon-to-daemon connection, stated in [`Message::Hello`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A host's back_end joining the referee.
    Host = 1,
    /// An employer bringing work to another host's front_end.
    Employer = 2,
}

/// A host as the referee knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    /// The host's front_end address.
    pub addr: SocketAddr,
    pub up: bool,
    /// Milliseconds since the referee last heard from the host.
    pub last_heard_ms: u64,
    /// Milliseconds since the host (re)joined.
    pub joined_ms: u64,
    pub version: u16,
}

/// The kind of a distributed System V structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpcKind {
    Msg = 1,
    Sem = 2,
    Shm = 3,
}

impl IpcKind {
    pub fn name(self) -> &'static str {
        match self {
            IpcKind::Msg => "msg",
            IpcKind::Sem => "sem",
            IpcKind::Shm => "shm",
        }
    }
}

/// A distributed key as the referee records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub kind: IpcKind,
    pub key: i32,
    /// The host holding the real kernel structure.
    pub owner: SocketAddr,
    /// The structure's id on the owner host.
    pub id: i32,
    /// The uid of the process that created it.
    pub creator_uid: u32,
    /// Milliseconds since it was created.
    pub age_ms: u64,
    /// The owner's incarnation when it was created (see [`Origin`]).
    pub incarnation: u64,
}

/// What a caller's get resolved a distributed structure's id from: the
/// key, and the *incarnation* of the owner host's IPC namespace (a random
/// token that the owner's dipcd keeps while that namespace lives, see
/// `crate::incarnation`). Every call on a structure owned elsewhere
/// carries it beside the owner's id, so that the worker can refuse a stale
/// id (`EIDRM`): after the owner's reboot, or once the key has been freed
/// or names another structure, the same id may name something else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Origin {
    pub key: i32,
    pub incarnation: u64,
}

/// Ownership and permissions of a System V structure (`struct ipc_perm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IpcPerm {
    pub key: i32,
    pub uid: u32,
    pub gid: u32,
    pub cuid: u32,
    pub cgid: u32,
    pub mode: u32,
    pub seq: u32,
}

/// A message queue's `struct msqid_ds`, as read on its owner host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MsqInfo {
    pub perm: IpcPerm,
    pub stime: i64,
    pub rtime: i64,
    pub ctime: i64,
    pub cbytes: u64,
    pub qnum: u64,
    pub qbytes: u64,
    pub lspid: i32,
    pub lrpid: i32,
}

/// One `struct sembuf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SemBuf {
    pub num: u16,
    pub op: i16,
    pub flg: i16,
}

/// A semaphore set's `struct semid_ds`, as read on its owner host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SemInfo {
    pub perm: IpcPerm,
    pub otime: i64,
    pub ctime: i64,
    pub nsems: u64,
}

/// A shared memory segment's `struct shmid_ds`, as read on its owner host
/// (with `nattch` counting attaches on every host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShmInfo {
    pub perm: IpcPerm,
    pub segsz: u64,
    pub atime: i64,
    pub dtime: i64,
    pub ctime: i64,
    pub cpid: i32,
    pub lpid: i32,
    pub nattch: u64,
}

/// A run of consecutive units (pages, or the whole segment) of a
/// distributed segment in the same state. Hosts are indexes into the
/// `hosts` of [`Message::ShmState`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnitRun {
    pub first: u32,
    pub count: u32,
    /// The host that may write these units, if any.
    pub writer: Option<u16>,
    /// The hosts holding read copies.
    pub readers: Vec<u16>,
    /// The only valid copy was on a host that died: touching these units
    /// raises SIGBUS.
    pub lost: bool,
}

/// The argument of a `semctl` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SemArg {
    None,
    /// `SETVAL`.
    Val(i32),
    /// `SETALL`.
    All(Vec<u16>),
    /// `IPC_SET`.
    Set(IpcSet),
}

/// The fields `IPC_SET` may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IpcSet {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    /// `msg_qbytes` for a queue; ignored for other kinds.
    pub qbytes: u64,
}

/// What a program started for a move writes on its answer pipe once it
/// waits for the state (its configuration read, its connection to dipcd
/// open): the worker lets the old process freeze only then (or after a
/// short wait), so the program's start is not part of the frozen time.
/// The pipe then carries the take-over's errno (0: taken over), never this
/// value.
pub const TAKEOVER_READY: i32 = i32::MIN;

/// The program a move starts on its target host (see `MigrateSpawn`):
/// paths, arguments and environment as the kernel takes them (bytes).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Program {
    pub exe: Vec<u8>,
    pub argv: Vec<Vec<u8>>,
    pub env: Vec<Vec<u8>>,
    pub cwd: Vec<u8>,
    /// The files its standard output and error are appended to (empty:
    /// `/dev/null`).
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// A registered process as the referee records it (see `PidRegister`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidRecord {
    /// The cluster-wide process id, assigned by the referee, never reused.
    pub pid_d: i64,
    /// The front_end address of the host the process runs on.
    pub host: SocketAddr,
    /// Its pid on that host.
    pub pid: i32,
    /// Its uid when it registered.
    pub uid: u32,
    /// Its start time (field 22 of `/proc/PID/stat`, clock ticks since
    /// boot): with `pid`, it names the process even after the pid is
    /// recycled.
    pub starttime: u64,
    /// The id of its mailbox queue on that host.
    pub mailbox: i32,
    /// Milliseconds since it registered.
    pub since_ms: u64,
}

/// The most processes one `LoadReport` (and one host of `Loads`) lists;
/// a host with more reports the busiest ones.
pub const MAX_LOAD_PROCS: usize = 256;
/// The most moves `Loads` lists (the balancer keeps no more).
pub const MAX_BALANCE_MOVES: usize = 64;
/// The most bytes of a process name in a load report (a dipc name is cut
/// there).
pub const MAX_LOAD_NAME: usize = 64;

/// A migratable process in a load report (see `LoadReport`, `Loads`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadProc {
    pub pid_d: i64,
    pub pid: i32,
    /// Its first dipc name, else its command name (`/proc/PID/comm`).
    pub name: String,
    /// In `LoadReport`: CPU milliseconds it used in the report's window;
    /// in `Loads`: its CPU use over the balancer's last window, in
    /// thousandths of a CPU.
    pub cpu: u32,
    /// How long it has run on this host (its age: a process that moved in
    /// is a new process here).
    pub stay_ms: u64,
}

/// One host's load as the referee last measured it (`Loads`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLoad {
    pub host: SocketAddr,
    /// CPU used by the host's registered processes over the window, in
    /// thousandths of a CPU.
    pub load: u32,
    /// The window's length; 0 if the host sent no report in it.
    pub window_ms: u32,
    pub procs: Vec<LoadProc>,
}

/// A move the balancer asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalanceMove {
    /// When it was asked, milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub pid_d: i64,
    pub from: SocketAddr,
    pub to: SocketAddr,
    /// 0 asked (not seen done yet), 1 done, 2 failed (not seen done in time).
    pub outcome: u8,
}

macro_rules! kinds {
    ($($name:ident = $num:expr,)*) => {
        /// Message type numbers, as carried in the header.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(u16)]
        pub enum Kind { $($name = $num,)* }

        impl Kind {
            pub fn from_u16(v: u16) -> Option<Kind> {
                match v { $($num => Some(Kind::$name),)* _ => None }
            }
            pub fn name(self) -> &'static str {
                match self { $(Kind::$name => stringify!($name),)* }
            }
            /// Every kind, for tests that must cover them all.
            pub const ALL: &'static [Kind] = &[$(Kind::$name,)*];
        }
    };
}

kinds! {
    Hello = 1,
    Handshake = 2,
    Refused = 5,
    Join = 10,
    Joined = 11,
    Heartbeat = 12,
    HeartbeatAck = 13,
    ListHosts = 20,
    Hosts = 21,
    Ping = 30,
    Pong = 31,
    Error = 40,
    Done = 41,
    Cancel = 42,
    KeyGet = 50,
    KeyOwner = 51,
    KeyCommit = 52,
    KeyAbort = 53,
    KeyRemove = 54,
    KeyGone = 55,
    ListKeys = 56,
    Keys = 57,
    DropKey = 58,
    Resolve = 59,
    Session = 60,
    Connect = 61,
    IpcGet = 62,
    SessionReady = 63,
    KeyCheck = 64,
    MsgSnd = 70,
    MsgRcv = 71,
    MsgData = 72,
    MsgCtl = 73,
    MsqStat = 74,
    SemOp = 80,
    SemCtl = 81,
    SemVals = 82,
    SemStat = 83,
    ShmOpen = 110,
    ShmAttach = 111,
    ShmAttached = 112,
    ShmFault = 113,
    ShmData = 114,
    ShmGrant = 115,
    ShmRevoke = 116,
    ShmRevoked = 117,
    ShmLost = 118,
    ShmDetach = 119,
    ShmCtl = 120,
    ShmStat = 121,
    ShmQuery = 122,
    ShmState = 123,
    Register = 90,
    PidRegister = 91,
    Registered = 92,
    Unregister = 93,
    PidLookup = 94,
    PidInfo = 95,
    ListPids = 96,
    Pids = 97,
    KillD = 98,
    SendD = 99,
    SenderPid = 100,
    PidCheck = 101,
    Vouched = 140,
    Placeholder = 141,
    SemJoin = 102,
    SemHandover = 103,
    KeyClaim = 142,
    Received = 104,
    NameRegister = 130,
    NameRelease = 131,
    NameLookup = 132,
    ListNames = 133,
    Names = 134,
    MoveToken = 150,
    MoveAbort = 151,
    MoveIn = 152,
    MigrateSpawn = 153,
    MigrateData = 154,
    MigrateCommit = 155,
    MoveAsk = 156,
    MoveCheck = 157,
    CallEndpoint = 143,
    CallRoute = 144,
    CallEndpointAt = 145,
    CallOpen = 146,
    CallHello = 147,
    CallRequest = 148,
    CallReply = 149,
    WorkerCheck = 180,
    IpcStatAny = 170,
    Migratable = 190,
    LoadReport = 191,
    ListLoad = 192,
    Loads = 193,
    StatsAsk = 195,
    Stats = 196,
    StatsReport = 197,
}

/// Every message of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Who opens a daemon-to-daemon connection and from which front_end
    /// address. Never sent as a frame of its own: it is the payload of the
    /// first handshake message, encrypted under the cluster secret.
    Hello {
        role: Role,
        host: SocketAddr,
    },
    /// One message of the Noise handshake that opens every connection
    /// between hosts (see `crate::secure`), at most [`MAX_HANDSHAKE`]
    /// bytes.
    Handshake {
        data: Vec<u8>,
    },
    /// The connection is refused; the reason is for the peer's log.
    Refused {
        reason: String,
    },
    /// A host's back_end announces itself to the referee.
    Join {
        front_end: SocketAddr,
    },
    Joined,
    Heartbeat,
    HeartbeatAck,
    /// Administrative: ask the referee for its host table.
    ListHosts,
    Hosts {
        hosts: Vec<HostInfo>,
    },
    /// Liveness and round-trip probe, answered by whoever receives it.
    Ping,
    Pong,
    /// A failed request: an `errno` value for the caller and a message.
    Error {
        errno: i32,
        message: String,
    },
    /// A request succeeded with this value (a call's return value).
    Done {
        value: i64,
    },
    /// The application was interrupted by a signal while its remote call
    /// blocked: stop the call, reply `EINTR` (or the result, if it came
    /// first).
    Cancel,
    /// Look a distributed key up (create it with `IPC_CREAT`). Sent by an
    /// application to its dipcd, relayed to the referee.
    KeyGet {
        kind: IpcKind,
        key: i32,
        flags: i32,
    },
    /// Where a key lives. `id == -1` tells the asker that it won the
    /// creation and must create the structure, then send `KeyCommit` or
    /// `KeyAbort`. `local_id` is the id of this host's placeholder for a
    /// structure owned elsewhere (dipcd fills it in), else equal to `id`.
    KeyOwner {
        owner: SocketAddr,
        id: i32,
        local_id: i32,
        /// What the id was resolved from (`incarnation` is 0 while the
        /// key is being created).
        origin: Origin,
    },
    /// The creator made the structure: record its id. `incarnation` is
    /// the owner's: the creator's dipcd fills it in (as `creator_uid`).
    KeyCommit {
        kind: IpcKind,
        key: i32,
        id: i32,
        creator_uid: u32,
        incarnation: u64,
    },
    /// The creator failed to make the structure: free the key.
    KeyAbort {
        kind: IpcKind,
        key: i32,
    },
    /// The structure was removed (`IPC_RMID`): free the key. The referee
    /// takes it only from the key's owner host, whose dipcd relays it only
    /// once its kernel no longer has `id` under `key`, or at once if
    /// `incarnation` is not its own (the structure lived in an IPC
    /// namespace the host no longer has). 0 stands for the host's own.
    KeyRemove {
        kind: IpcKind,
        key: i32,
        id: i32,
        incarnation: u64,
    },
    /// Pushed by the referee to every host when a key is freed, so hosts
    /// drop their placeholders.
    KeyGone {
        kind: IpcKind,
        key: i32,
    },
    /// One page of the key table: the keys after `after` in (kind, key)
    /// order (`None`: from the first). A table of any length reaches the
    /// asker a page at a time, each well inside a frame.
    ListKeys {
        after: Option<(IpcKind, i32)>,
    },
    /// A page of keys; `more` if keys follow the last one.
    Keys {
        keys: Vec<KeyInfo>,
        more: bool,
    },
    /// Administrative: forget a (stale) key.
    DropKey {
        kind: IpcKind,
        key: i32,
    },
    /// A worker asks its dipcd what the referee has for a key (relayed as
    /// a `KeyGet` without flags; the reply is the referee's `KeyOwner`, or
    /// `ENOENT`), to check that an id it was given still names that key's
    /// structure. No placeholder is made.
    KeyCheck {
        kind: IpcKind,
        key: i32,
    },
    /// A worker's answer to a successful `IpcGet`: the owner's id, and
    /// its proof ([`crate::auth::Vouch`]) that the caller may use it, for
    /// the caller's dipcd to make the local placeholder against.
    Vouched {
        id: i32,
        vouch: [u8; 32],
    },
    /// The library asks its dipcd for the local placeholder of a key owned
    /// elsewhere, once the owner's worker vouched that this caller may use
    /// it (`KeyGet` makes none). The reply is `KeyOwner` with `local_id`.
    Placeholder {
        kind: IpcKind,
        key: i32,
        owner: SocketAddr,
        id: i32,
        origin: Origin,
        vouch: [u8; 32],
    },
    /// Is this local id a placeholder for a structure owned elsewhere?
    Resolve {
        kind: IpcKind,
        local_id: i32,
    },
    /// An employer tells the worker whose credentials to act with.
    Session {
        pid: i32,
        uid: u32,
        gid: u32,
        groups: Vec<u32>,
    },
    /// An application asks its dipcd for a connection to the worker on
    /// `target`, opened and authenticated on its behalf. `target` must be
    /// an up host of the cluster (the referee's table). The reply is
    /// `SessionReady`, with the connected socket passed with SCM_RIGHTS.
    Connect {
        target: SocketAddr,
    },
    /// The employer's answer to `Connect`: the session is open, its
    /// credentials already stated to the worker inside the secure channel;
    /// `pid_d` is the one the worker types the session's sends with (0:
    /// none), `keys` the channel's state, so that the application carries
    /// on the channel itself (see `crate::secure`).
    SessionReady {
        pid_d: i64,
        keys: SessionKeys,
    },
    /// On a session: the plain `msgget`/`semget`/`shmget` of an existing
    /// key on its owner, as the caller, with the caller's permission bits
    /// (`flags`, without `IPC_CREAT`/`IPC_EXCL`) and `size` (`nsems` for a
    /// set, bytes for a segment, unused for a queue), so that a get from
    /// another host fails as the owner's kernel would (`EACCES`,
    /// `EINVAL`). The reply is `Done { value: owner's id }` or the error.
    /// `id` is the structure the referee has for the key: if the key no
    /// longer names it there, the worker has the referee's entry freed
    /// (only the owner host may) before it replies.
    IpcGet {
        kind: IpcKind,
        key: i32,
        id: i32,
        /// The owner's incarnation as the referee has it for the key.
        incarnation: u64,
        flags: i32,
        size: u64,
    },
    // The calls below travel on a session connection (see `Connect`) to
    // the worker on the structure's owner; `id` is the owner's id and
    // `origin` what the caller's get resolved it from: the worker refuses
    // a call whose id no longer names that structure (`EIDRM`).
    MsgSnd {
        id: i32,
        origin: Origin,
        mtype: i64,
        text: Vec<u8>,
        flags: i32,
    },
    MsgRcv {
        id: i32,
        origin: Origin,
        size: u64,
        mtype: i64,
        flags: i32,
    },
    MsgData {
        mtype: i64,
        text: Vec<u8>,
    },
    MsgCtl {
        id: i32,
        origin: Origin,
        cmd: i32,
        set: Option<IpcSet>,
    },
    MsqStat {
        info: MsqInfo,
    },
    /// `semop`, or `semtimedop` with a time-out in nanoseconds.
    SemOp {
        id: i32,
        origin: Origin,
        ops: Vec<SemBuf>,
        timeout_ns: Option<u64>,
    },
    SemCtl {
        id: i32,
        origin: Origin,
        num: i32,
        cmd: i32,
        arg: SemArg,
    },
    // Distributed shared memory. `ShmOpen` goes to this host's dipcd,
    // which makes sure the segment's manager runs; the rest is the
    // protocol between a process's shm agent and the manager on the
    // segment's owner host (see the `shm` crate).
    ShmOpen {
        id: i32,
    },
    /// Attach to the segment `id` (the owner's id); the reply is
    /// `ShmAttached` or `Error`. `handover` is filled in by the worker that
    /// passes a remote caller's connection to the manager: the caller's
    /// host and the connection's secure channel state (`None` from a
    /// process on the owner host).
    ShmAttach {
        id: i32,
        origin: Origin,
        readonly: bool,
        // Boxed: the largest field of any message, and rare.
        handover: Option<(SocketAddr, Box<SessionKeys>)>,
    },
    /// `unit` is the size of the unit of coherence: a page, or the whole
    /// segment (rounded up to pages) in segment mode.
    ShmAttached {
        size: u64,
        unit: u64,
    },
    /// The agent asks for a right on a unit.
    ShmFault {
        unit: u32,
        write: bool,
    },
    /// Part of a unit's content, before the `ShmGrant` (manager to agent)
    /// or `ShmRevoked` (agent to manager) it belongs to.
    ShmData {
        unit: u32,
        offset: u64,
        data: Vec<u8>,
    },
    ShmGrant {
        unit: u32,
        write: bool,
    },
    /// The manager takes a right back: down to read (`keep_read`) or to
    /// nothing; `want_data` asks for the unit's content (the agent held
    /// it for write).
    ShmRevoke {
        unit: u32,
        keep_read: bool,
        want_data: bool,
    },
    ShmRevoked {
        unit: u32,
    },
    /// The unit's content is lost (its writer's host died).
    ShmLost {
        unit: u32,
    },
    /// The agent leaves (after giving back what it wrote); reply `Done`.
    ShmDetach,
    ShmCtl {
        id: i32,
        origin: Origin,
        cmd: i32,
        set: Option<IpcSet>,
    },
    ShmStat {
        info: ShmInfo,
    },
    /// Who holds which units of segment `id`; reply `ShmState`.
    ShmQuery {
        id: i32,
        origin: Origin,
    },
    /// The figures `ipcs` shows for structure `id` of `kind`, read on its
    /// owner without a permission check (as `ipcs` and `/proc/sysvipc`
    /// read them for anyone on one host); reply `MsqStat`, `SemStat` or
    /// `ShmStat` (whose `nattch` counts attaches on every host).
    IpcStatAny {
        kind: IpcKind,
        id: i32,
        origin: Origin,
    },
    ShmState {
        nattch: u64,
        unit: u64,
        hosts: Vec<SocketAddr>,
        runs: Vec<UnitRun>,
    },
    /// The reply to `GETALL`.
    SemVals {
        vals: Vec<u16>,
    },
    SemStat {
        info: SemInfo,
    },
    /// An application joins the cluster's process table (`regist`), with
    /// the private queue it made as its mailbox. dipcd takes the pid and
    /// uid from SO_PEERCRED and relays a `PidRegister`.
    Register {
        mailbox: i32,
    },
    /// dipcd asks the referee to record a process of its host. `pid_d == 0`
    /// asks for a new pid_d; another value restores a registration after
    /// the link to the referee was re-opened.
    PidRegister {
        pid_d: i64,
        pid: i32,
        uid: u32,
        starttime: u64,
        mailbox: i32,
    },
    /// The reply to `Register` and `PidRegister`.
    Registered {
        pid_d: i64,
        mailbox: i32,
    },
    /// Leave the process table (`uregist`). From an application `pid` is
    /// ignored: dipcd fills in the caller's, and the referee removes the
    /// record only if pid_d, host and pid all match.
    Unregister {
        pid_d: i64,
        pid: i32,
    },
    /// Where a pid_d runs; the reply is `PidInfo`, or `ESRCH`.
    PidLookup {
        pid_d: i64,
    },
    PidInfo {
        rec: PidRecord,
    },
    /// One page of the registrations: the pid_d above `after` in order
    /// (0: from the first).
    ListPids {
        after: i64,
    },
    /// A page of registrations; `more` if some follow the last one.
    Pids {
        pids: Vec<PidRecord>,
        more: bool,
    },
    /// `kill_d` on a session with the worker on the target's host: signal
    /// the process `pid` if its start time is still `starttime` and it is
    /// registered there (the worker asks its dipcd, `PidCheck`).
    KillD {
        pid: i32,
        starttime: u64,
        sig: i32,
    },
    /// `dipc_send` on a session with the worker on the destination's host:
    /// put `data` in the mailbox queue, typed with the session's pid_d
    /// (see `SenderPid`).
    SendD {
        mailbox: i32,
        data: Vec<u8>,
        flags: i32,
    },
    /// Sent by the employer right after `Session`: the pid_d the caller
    /// had at its dipcd when the session opened (0 if none). The worker
    /// types every `SendD` of the session with it, so a sender cannot
    /// claim another's pid_d.
    SenderPid {
        pid_d: i64,
    },
    /// A worker asks its host's dipcd whether the process `{pid,
    /// starttime}` is registered (`kill_d` reaches registered processes
    /// only). The reply is `Done { value: pid_d }`, or `ESRCH`.
    PidCheck {
        pid: i32,
        starttime: u64,
    },
    /// An application asks the worker of its session to serve the session
    /// in its `SEM_UNDO` context on this host, named by `nonce` (random,
    /// drawn once per process): every session of one process that joined
    /// is served by one worker process, so the owner's kernel keeps one
    /// undo list for all of them. The reply is `Done { value: context }`,
    /// a number that changes whenever the context is new (see the worker's
    /// `undo` module).
    SemJoin {
        nonce: u64,
    },
    /// A worker hands the session it serves to the worker of the session's
    /// undo context (over a local Unix socket, with the socket itself):
    /// the frame's request id is that of the `SemJoin` to answer. `uid` is
    /// the uid the caller's host stated in `Session`, `sender` its pid_d.
    SemHandover {
        uid: u32,
        sender: i64,
        keys: Box<SessionKeys>,
    },
    /// A host that (re)joined the referee states a key it owns: `id` in
    /// its IPC namespace `incarnation`, still under `key` in its kernel.
    /// A restarted referee rebuilds its key table from these; the reply
    /// is `Done`, or an error if the key is another's or was freed while
    /// the host was away (the host then stops claiming it).
    KeyClaim {
        kind: IpcKind,
        key: i32,
        id: i32,
        creator_uid: u32,
        incarnation: u64,
    },
    /// The caller has the `MsgData` reply of its call with this frame's
    /// id. Never answered. Until it comes (or the caller's next request),
    /// the worker holds the message it took and puts it back in the queue
    /// if the session ends first.
    Received,
    /// A registered process takes a cluster-wide name (`dipc_name_register`).
    /// From an application `pid` is ignored: dipcd fills in the caller's,
    /// and the referee takes the name only if pid_d, host and pid match
    /// (`EEXIST` if another process holds it). The reply is `Done`.
    NameRegister {
        pid_d: i64,
        pid: i32,
        name: String,
    },
    /// Gives a name back; the same checks as `NameRegister` (`ENOENT` for a
    /// name nobody holds, `EPERM` for another process's).
    NameRelease {
        pid_d: i64,
        pid: i32,
        name: String,
    },
    /// Who holds a name: `PidInfo` of its process, or `ENOENT`.
    NameLookup {
        name: String,
    },
    /// One page of the names, those after `after` in order ("": from the
    /// first).
    ListNames {
        after: String,
    },
    /// A page of names with the pid_d holding each; `more` if some follow.
    Names {
        names: Vec<(String, i64)>,
        more: bool,
    },
    /// Process migration (libdipc's `migrate`): a registered process asks
    /// for a one-time token that authorises moving its pid_d. From an
    /// application `pid` is ignored (dipcd fills in the caller's, and the
    /// referee checks the triple as for `Unregister`). The reply is
    /// `Done { value }`, the token's 64 bits.
    MoveToken {
        pid_d: i64,
        pid: i32,
    },
    /// Gives an unused move token back: the move failed before the
    /// hand-over. Same fields and checks as `MoveToken`; reply `Done`.
    MoveAbort {
        pid_d: i64,
        pid: i32,
    },
    /// A process takes `pid_d` over with the token its registration was
    /// given: the referee re-points the record (keeping its names and
    /// uid, which must match) at this host, `pid`, `starttime` and
    /// `mailbox`. From an application `pid`, `uid` and `starttime` are
    /// ignored (dipcd fills in the caller's). The reply is `Registered`.
    MoveIn {
        pid_d: i64,
        pid: i32,
        uid: u32,
        starttime: u64,
        mailbox: i32,
        token: u64,
    },
    /// To the worker on the target host of a move: start the moving
    /// program there as the session's user, from `cwd`, with stdin from
    /// `/dev/null` and stdout and stderr appended to the files `stdout`
    /// and `stderr` (empty: `/dev/null`). The reply is `Done { value: pid }`
    /// once it runs, or the errno its exec failed with.
    MigrateSpawn {
        program: Box<Program>,
        /// The moving process and its move token: the worker has the
        /// referee confirm them (`MoveCheck`) before it starts anything,
        /// so a session can start a program only for a move its own
        /// registered process began.
        pid_d: i64,
        token: u64,
    },
    /// The next bytes of what the started program receives (its state and
    /// the messages of its mailbox), opaque to the worker.
    MigrateData {
        data: Vec<u8>,
    },
    /// Everything is sent: hand it to the started program and answer once
    /// the program took its pid_d over (`go`); or stop the program.
    MigrateCommit {
        go: bool,
    },
    /// An administrator (or the process's own user) asks that the process
    /// `pid_d` move to the host `target` at its next migration point
    /// (`dipcref migrate`). From `dipcref`, `uid` and `admin` are ignored:
    /// dipcd states the asker's uid and whether it is root or in
    /// `admin_group`; the referee checks them against the record (`EPERM`)
    /// and pushes the request (request id 0) to the process's host, whose
    /// dipcd posts it where the process looks at its migration points.
    MoveAsk {
        pid_d: i64,
        target: SocketAddr,
        uid: u32,
        admin: bool,
    },
    /// A worker asks, through its dipcd, whether `token` is the pending
    /// move token of `pid_d` and the record's uid is `uid` (dipcd states
    /// the asker's uid from SO_PEERCRED: the worker runs as the caller).
    /// The reply is `Done`, or `EPERM`/`ESRCH`.
    MoveCheck {
        pid_d: i64,
        token: u64,
        uid: u32,
    },
    /// A registered process tells its dipcd where it takes calls
    /// (`dprocs`): the abstract Unix socket name it listens on. dipcd
    /// takes it for the registration of the connecting process (its pid
    /// from SO_PEERCRED); the reply is `Done`.
    CallEndpoint {
        name: Vec<u8>,
    },
    /// Where the registered process `pid_d` of this host takes calls:
    /// `CallEndpointAt`, or `ESRCH` (no such registration here) or
    /// `ECONNREFUSED` (it has no endpoint).
    CallRoute {
        pid_d: i64,
    },
    /// The answer to `CallRoute`: the process (`pid`, `starttime`) that
    /// must be listening on `name`.
    CallEndpointAt {
        pid: i32,
        starttime: u64,
        name: Vec<u8>,
    },
    /// On a session: make this connection a call link to the registered
    /// process `pid_d` of the worker's host. The worker passes the
    /// connection, with its channel's state, to that process and ends; the
    /// process's first frame on it is `Done` (request id 0). An `Error`
    /// from the worker instead leaves the session as it was.
    CallOpen {
        pid_d: i64,
    },
    /// The first frame on a new connection to a process's call endpoint:
    /// the caller's pid_d. From a worker it carries the caller's session
    /// (the TCP socket rides with the frame, SCM_RIGHTS) and the channel's
    /// `keys`; from a process of the same host, none.
    CallHello {
        caller: i64,
        keys: Option<Box<SessionKeys>>,
    },
    /// A call of procedure `proc_name` on a call link; the reply is
    /// `CallReply`, with the same request id.
    CallRequest {
        proc_name: String,
        max_out: u32,
        input: Vec<u8>,
    },
    /// A procedure's answer: `status` 0 and its output, or an errno.
    CallReply {
        status: i32,
        output: Vec<u8>,
    },
    /// From a registered process to its dipcd: is `pid` one of this
    /// host's workers? `Done`, or `EPERM`.
    WorkerCheck {
        pid: i32,
    },
    /// From a registered process to its dipcd: it has declared itself
    /// migratable (`migrate::migratable`), so the balancer may move it.
    /// dipcd takes the pid from SO_PEERCRED; the reply is `Done`, or
    /// `ENOTCONN` if the process is not registered.
    Migratable,
    /// From a host's dipcd to the referee with each heartbeat (request id
    /// 0, no reply): the CPU milliseconds its registered processes used
    /// in the last `window_ms`, and its migratable processes (at most
    /// [`MAX_LOAD_PROCS`]).
    LoadReport {
        window_ms: u32,
        cpu_ms: u32,
        procs: Vec<LoadProc>,
    },
    /// Asks the referee for `Loads` (`dipcref load`; any user, through
    /// dipcd).
    ListLoad,
    /// Each host's load over the balancer's last window, with its
    /// migratable processes, and the balancer's recent moves (oldest
    /// first).
    Loads {
        hosts: Vec<HostLoad>,
        moves: Vec<BalanceMove>,
    },
    /// What this host counts (see `crate::metrics`): asked of dipcd by a
    /// local process, or of a worker, which asks its dipcd. The answer is
    /// `Stats`.
    StatsAsk,
    /// A host's counters as named pairs (`Metrics::to_pairs`), at most
    /// `metrics::MAX_PAIRS`.
    Stats {
        pairs: Vec<(String, u64)>,
    },
    /// From a worker or a shm manager to its dipcd: what it counted since
    /// its last report (`Done`, or `EPERM` from any other process).
    StatsReport {
        pairs: Vec<(String, u64)>,
    },
}

impl Message {
    pub fn kind(&self) -> Kind {
        match self {
            Message::Hello { .. } => Kind::Hello,
            Message::Handshake { .. } => Kind::Handshake,
            Message::Refused { .. } => Kind::Refused,
            Message::Join { .. } => Kind::Join,
            Message::Joined => Kind::Joined,
            Message::Heartbeat => Kind::Heartbeat,
            Message::HeartbeatAck => Kind::HeartbeatAck,
            Message::ListHosts => Kind::ListHosts,
            Message::Hosts { .. } => Kind::Hosts,
            Message::Ping => Kind::Ping,
            Message::Pong => Kind::Pong,
            Message::Error { .. } => Kind::Error,
            Message::Done { .. } => Kind::Done,
            Message::Cancel => Kind::Cancel,
            Message::KeyGet { .. } => Kind::KeyGet,
            Message::KeyOwner { .. } => Kind::KeyOwner,
            Message::KeyCommit { .. } => Kind::KeyCommit,
            Message::KeyAbort { .. } => Kind::KeyAbort,
            Message::KeyRemove { .. } => Kind::KeyRemove,
            Message::KeyGone { .. } => Kind::KeyGone,
            Message::ListKeys { .. } => Kind::ListKeys,
            Message::Keys { .. } => Kind::Keys,
            Message::DropKey { .. } => Kind::DropKey,
            Message::Resolve { .. } => Kind::Resolve,
            Message::KeyCheck { .. } => Kind::KeyCheck,
            Message::Session { .. } => Kind::Session,
            Message::Connect { .. } => Kind::Connect,
            Message::IpcGet { .. } => Kind::IpcGet,
            Message::SessionReady { .. } => Kind::SessionReady,
            Message::MsgSnd { .. } => Kind::MsgSnd,
            Message::MsgRcv { .. } => Kind::MsgRcv,
            Message::MsgData { .. } => Kind::MsgData,
            Message::MsgCtl { .. } => Kind::MsgCtl,
            Message::MsqStat { .. } => Kind::MsqStat,
            Message::ShmOpen { .. } => Kind::ShmOpen,
            Message::ShmAttach { .. } => Kind::ShmAttach,
            Message::ShmAttached { .. } => Kind::ShmAttached,
            Message::ShmFault { .. } => Kind::ShmFault,
            Message::ShmData { .. } => Kind::ShmData,
            Message::ShmGrant { .. } => Kind::ShmGrant,
            Message::ShmRevoke { .. } => Kind::ShmRevoke,
            Message::ShmRevoked { .. } => Kind::ShmRevoked,
            Message::ShmLost { .. } => Kind::ShmLost,
            Message::ShmDetach => Kind::ShmDetach,
            Message::ShmCtl { .. } => Kind::ShmCtl,
            Message::ShmStat { .. } => Kind::ShmStat,
            Message::ShmQuery { .. } => Kind::ShmQuery,
            Message::IpcStatAny { .. } => Kind::IpcStatAny,
            Message::ShmState { .. } => Kind::ShmState,
            Message::SemOp { .. } => Kind::SemOp,
            Message::SemCtl { .. } => Kind::SemCtl,
            Message::SemVals { .. } => Kind::SemVals,
            Message::SemStat { .. } => Kind::SemStat,
            Message::Register { .. } => Kind::Register,
            Message::PidRegister { .. } => Kind::PidRegister,
            Message::Registered { .. } => Kind::Registered,
            Message::Unregister { .. } => Kind::Unregister,
            Message::PidLookup { .. } => Kind::PidLookup,
            Message::PidInfo { .. } => Kind::PidInfo,
            Message::ListPids { .. } => Kind::ListPids,
            Message::Pids { .. } => Kind::Pids,
            Message::KillD { .. } => Kind::KillD,
            Message::SendD { .. } => Kind::SendD,
            Message::SenderPid { .. } => Kind::SenderPid,
            Message::PidCheck { .. } => Kind::PidCheck,
            Message::Vouched { .. } => Kind::Vouched,
            Message::Placeholder { .. } => Kind::Placeholder,
            Message::SemJoin { .. } => Kind::SemJoin,
            Message::SemHandover { .. } => Kind::SemHandover,
            Message::KeyClaim { .. } => Kind::KeyClaim,
            Message::Received => Kind::Received,
            Message::CallEndpoint { .. } => Kind::CallEndpoint,
            Message::CallRoute { .. } => Kind::CallRoute,
            Message::CallEndpointAt { .. } => Kind::CallEndpointAt,
            Message::CallOpen { .. } => Kind::CallOpen,
            Message::CallHello { .. } => Kind::CallHello,
            Message::CallRequest { .. } => Kind::CallRequest,
            Message::CallReply { .. } => Kind::CallReply,
            Message::WorkerCheck { .. } => Kind::WorkerCheck,
            Message::Migratable => Kind::Migratable,
            Message::LoadReport { .. } => Kind::LoadReport,
            Message::ListLoad => Kind::ListLoad,
            Message::Loads { .. } => Kind::Loads,
            Message::StatsAsk => Kind::StatsAsk,
            Message::Stats { .. } => Kind::Stats,
            Message::StatsReport { .. } => Kind::StatsReport,
            Message::NameRegister { .. } => Kind::NameRegister,
            Message::NameRelease { .. } => Kind::NameRelease,
            Message::NameLookup { .. } => Kind::NameLookup,
            Message::ListNames { .. } => Kind::ListNames,
            Message::Names { .. } => Kind::Names,
            Message::MoveToken { .. } => Kind::MoveToken,
            Message::MoveAbort { .. } => Kind::MoveAbort,
            Message::MoveIn { .. } => Kind::MoveIn,
            Message::MigrateSpawn { .. } => Kind::MigrateSpawn,
            Message::MigrateData { .. } => Kind::MigrateData,
            Message::MigrateCommit { .. } => Kind::MigrateCommit,
            Message::MoveAsk { .. } => Kind::MoveAsk,
            Message::MoveCheck { .. } => Kind::MoveCheck,
        }
    }

    /// Shorthand for an error reply.
    pub fn error(errno: i32, message: impl Into<String>) -> Message {
        Message::Error {
            errno,
            message: message.into(),
        }
    }

    /// Appends the payload (no header) to `out`.
    pub fn encode_payload(&self, out: &mut Vec<u8>) {
        let mut w = Writer(out);
        match self {
            Message::Hello { role, host } => {
                w.u8(*role as u8);
                w.addr(host);
            }
            Message::Handshake { data } => w.bytes(data),
            Message::SessionReady { pid_d, keys } => {
                w.i64(*pid_d);
                w.keys(keys);
            }
            Message::Refused { reason } => w.string(reason),
            Message::Join { front_end } => w.addr(front_end),
            Message::Hosts { hosts } => {
                w.u32(hosts.len() as u32);
                for h in hosts {
                    w.addr(&h.addr);
                    w.u8(h.up as u8);
                    w.u64(h.last_heard_ms);
                    w.u64(h.joined_ms);
                    w.u16(h.version);
                }
            }
            Message::Connect { target } => w.addr(target),
            Message::IpcGet {
                kind,
                key,
                id,
                incarnation,
                flags,
                size,
            } => {
                w.u8(*kind as u8);
                w.i32(*key);
                w.i32(*id);
                w.u64(*incarnation);
                w.i32(*flags);
                w.u64(*size);
            }
            Message::Error { errno, message } => {
                w.i32(*errno);
                w.string(message);
            }
            Message::Done { value } => w.i64(*value),
            Message::Vouched { id, vouch } => {
                w.i32(*id);
                w.bytes_fixed(vouch);
            }
            Message::Placeholder {
                kind,
                key,
                owner,
                id,
                origin,
                vouch,
            } => {
                w.u8(*kind as u8);
                w.i32(*key);
                w.addr(owner);
                w.i32(*id);
                w.origin(origin);
                w.bytes_fixed(vouch);
            }
            Message::KeyGet { kind, key, flags } => {
                w.u8(*kind as u8);
                w.i32(*key);
                w.i32(*flags);
            }
            Message::KeyOwner {
                owner,
                id,
                local_id,
                origin,
            } => {
                w.addr(owner);
                w.i32(*id);
                w.i32(*local_id);
                w.origin(origin);
            }
            Message::KeyCommit {
                kind,
                key,
                id,
                creator_uid,
                incarnation,
            }
            | Message::KeyClaim {
                kind,
                key,
                id,
                creator_uid,
                incarnation,
            } => {
                w.u8(*kind as u8);
                w.i32(*key);
                w.i32(*id);
                w.u32(*creator_uid);
                w.u64(*incarnation);
            }
            Message::KeyAbort { kind, key }
            | Message::KeyGone { kind, key }
            | Message::KeyCheck { kind, key }
            | Message::DropKey { kind, key } => {
                w.u8(*kind as u8);
                w.i32(*key);
            }
            Message::KeyRemove {
                kind,
                key,
                id,
                incarnation,
            } => {
                w.u8(*kind as u8);
                w.i32(*key);
                w.i32(*id);
                w.u64(*incarnation);
            }
            Message::ListKeys { after } => match after {
                Some((kind, key)) => {
                    w.u8(*kind as u8);
                    w.i32(*key);
                }
                None => {
                    w.u8(0);
                    w.i32(0);
                }
            },
            Message::ListPids { after } => w.i64(*after),
            Message::Keys { keys, more } => {
                w.u8(u8::from(*more));
                w.u32(keys.len() as u32);
                for k in keys {
                    w.u8(k.kind as u8);
                    w.i32(k.key);
                    w.addr(&k.owner);
                    w.i32(k.id);
                    w.u32(k.creator_uid);
                    w.u64(k.age_ms);
                    w.u64(k.incarnation);
                }
            }
            Message::Resolve { kind, local_id } => {
                w.u8(*kind as u8);
                w.i32(*local_id);
            }
            Message::Session {
                pid,
                uid,
                gid,
                groups,
            } => {
                w.i32(*pid);
                w.u32(*uid);
                w.u32(*gid);
                w.u32(groups.len() as u32);
                for g in groups {
                    w.u32(*g);
                }
            }
            Message::MsgSnd {
                id,
                origin,
                mtype,
                text,
                flags,
            } => {
                w.i32(*id);
                w.origin(origin);
                w.i64(*mtype);
                w.bytes(text);
                w.i32(*flags);
            }
            Message::MsgRcv {
                id,
                origin,
                size,
                mtype,
                flags,
            } => {
                w.i32(*id);
                w.origin(origin);
                w.u64(*size);
                w.i64(*mtype);
                w.i32(*flags);
            }
            Message::MsgData { mtype, text } => {
                w.i64(*mtype);
                w.bytes(text);
            }
            Message::MsgCtl {
                id,
                origin,
                cmd,
                set,
            }
            | Message::ShmCtl {
                id,
                origin,
                cmd,
                set,
            } => {
                w.i32(*id);
                w.origin(origin);
                w.i32(*cmd);
                match set {
                    None => w.u8(0),
                    Some(s) => {
                        w.u8(1);
                        w.u32(s.uid);
                        w.u32(s.gid);
                        w.u32(s.mode);
                        w.u64(s.qbytes);
                    }
                }
            }
            Message::MsqStat { info } => {
                w.perm(&info.perm);
                w.i64(info.stime);
                w.i64(info.rtime);
                w.i64(info.ctime);
                w.u64(info.cbytes);
                w.u64(info.qnum);
                w.u64(info.qbytes);
                w.i32(info.lspid);
                w.i32(info.lrpid);
            }
            Message::ShmOpen { id } => w.i32(*id),
            Message::ShmQuery { id, origin } => {
                w.i32(*id);
                w.origin(origin);
            }
            Message::IpcStatAny { kind, id, origin } => {
                w.u8(*kind as u8);
                w.i32(*id);
                w.origin(origin);
            }
            Message::ShmAttach {
                id,
                origin,
                readonly,
                handover,
            } => {
                w.i32(*id);
                w.origin(origin);
                w.u8(*readonly as u8);
                match handover {
                    None => w.u8(0),
                    Some((h, keys)) => {
                        w.u8(1);
                        w.addr(h);
                        w.keys(keys);
                    }
                }
            }
            Message::ShmAttached { size, unit } => {
                w.u64(*size);
                w.u64(*unit);
            }
            Message::ShmFault { unit, write } | Message::ShmGrant { unit, write } => {
                w.u32(*unit);
                w.u8(*write as u8);
            }
            Message::ShmData { unit, offset, data } => {
                w.u32(*unit);
                w.u64(*offset);
                w.bytes(data);
            }
            Message::ShmRevoke {
                unit,
                keep_read,
                want_data,
            } => {
                w.u32(*unit);
                w.u8(*keep_read as u8);
                w.u8(*want_data as u8);
            }
            Message::ShmRevoked { unit } | Message::ShmLost { unit } => w.u32(*unit),
            Message::ShmStat { info } => {
                w.perm(&info.perm);
                w.u64(info.segsz);
                w.i64(info.atime);
                w.i64(info.dtime);
                w.i64(info.ctime);
                w.i32(info.cpid);
                w.i32(info.lpid);
                w.u64(info.nattch);
            }
            Message::ShmState {
                nattch,
                unit,
                hosts,
                runs,
            } => {
                w.u64(*nattch);
                w.u64(*unit);
                w.u32(hosts.len() as u32);
                for h in hosts {
                    w.addr(h);
                }
                w.u32(runs.len() as u32);
                for r in runs {
                    w.u32(r.first);
                    w.u32(r.count);
                    w.u16(r.writer.unwrap_or(u16::MAX));
                    w.u8(r.lost as u8);
                    w.u16s(&r.readers);
                }
            }
            Message::SemOp {
                id,
                origin,
                ops,
                timeout_ns,
            } => {
                w.i32(*id);
                w.origin(origin);
                w.u32(ops.len() as u32);
                for o in ops {
                    w.u16(o.num);
                    w.u16(o.op as u16);
                    w.u16(o.flg as u16);
                }
                match timeout_ns {
                    None => w.u8(0),
                    Some(t) => {
                        w.u8(1);
                        w.u64(*t);
                    }
                }
            }
            Message::SemCtl {
                id,
                origin,
                num,
                cmd,
                arg,
            } => {
                w.i32(*id);
                w.origin(origin);
                w.i32(*num);
                w.i32(*cmd);
                match arg {
                    SemArg::None => w.u8(0),
                    SemArg::Val(v) => {
                        w.u8(1);
                        w.i32(*v);
                    }
                    SemArg::All(vals) => {
                        w.u8(2);
                        w.u16s(vals);
                    }
                    SemArg::Set(s) => {
                        w.u8(3);
                        w.u32(s.uid);
                        w.u32(s.gid);
                        w.u32(s.mode);
                        w.u64(s.qbytes);
                    }
                }
            }
            Message::SemVals { vals } => w.u16s(vals),
            Message::SemStat { info } => {
                w.perm(&info.perm);
                w.i64(info.otime);
                w.i64(info.ctime);
                w.u64(info.nsems);
            }
            Message::Register { mailbox } => w.i32(*mailbox),
            Message::PidRegister {
                pid_d,
                pid,
                uid,
                starttime,
                mailbox,
            } => {
                w.i64(*pid_d);
                w.i32(*pid);
                w.u32(*uid);
                w.u64(*starttime);
                w.i32(*mailbox);
            }
            Message::Registered { pid_d, mailbox } => {
                w.i64(*pid_d);
                w.i32(*mailbox);
            }
            Message::Unregister { pid_d, pid } => {
                w.i64(*pid_d);
                w.i32(*pid);
            }
            Message::PidLookup { pid_d } | Message::SenderPid { pid_d } => w.i64(*pid_d),
            Message::PidInfo { rec } => w.pid_record(rec),
            Message::Pids { pids, more } => {
                w.u8(u8::from(*more));
                w.u32(pids.len() as u32);
                for p in pids {
                    w.pid_record(p);
                }
            }
            Message::KillD {
                pid,
                starttime,
                sig,
            } => {
                w.i32(*pid);
                w.u64(*starttime);
                w.i32(*sig);
            }
            Message::PidCheck { pid, starttime } => {
                w.i32(*pid);
                w.u64(*starttime);
            }
            Message::SemJoin { nonce } => w.u64(*nonce),
            Message::SemHandover { uid, sender, keys } => {
                w.u32(*uid);
                w.i64(*sender);
                w.keys(keys);
            }
            Message::NameRegister { pid_d, pid, name }
            | Message::NameRelease { pid_d, pid, name } => {
                w.i64(*pid_d);
                w.i32(*pid);
                w.string(name);
            }
            Message::NameLookup { name } | Message::ListNames { after: name } => w.string(name),
            Message::CallEndpoint { name } => w.bytes(name),
            Message::CallRoute { pid_d } | Message::CallOpen { pid_d } => w.i64(*pid_d),
            Message::CallEndpointAt {
                pid,
                starttime,
                name,
            } => {
                w.i32(*pid);
                w.u64(*starttime);
                w.bytes(name);
            }
            Message::CallHello { caller, keys } => {
                w.i64(*caller);
                match keys {
                    None => w.u8(0),
                    Some(k) => {
                        w.u8(1);
                        w.keys(k);
                    }
                }
            }
            Message::CallRequest {
                proc_name,
                max_out,
                input,
            } => {
                w.string(proc_name);
                w.u32(*max_out);
                w.bytes(input);
            }
            Message::CallReply { status, output } => {
                w.i32(*status);
                w.bytes(output);
            }
            Message::WorkerCheck { pid } => w.i32(*pid),
            Message::LoadReport {
                window_ms,
                cpu_ms,
                procs,
            } => {
                w.u32(*window_ms);
                w.u32(*cpu_ms);
                w.u32(procs.len() as u32);
                for p in procs {
                    w.load_proc(p);
                }
            }
            Message::Loads { hosts, moves } => {
                w.u32(hosts.len() as u32);
                for h in hosts {
                    w.addr(&h.host);
                    w.u32(h.load);
                    w.u32(h.window_ms);
                    w.u32(h.procs.len() as u32);
                    for p in &h.procs {
                        w.load_proc(p);
                    }
                }
                w.u32(moves.len() as u32);
                for m in moves {
                    w.u64(m.at_ms);
                    w.i64(m.pid_d);
                    w.addr(&m.from);
                    w.addr(&m.to);
                    w.u8(m.outcome);
                }
            }
            Message::StatsAsk => {}
            Message::Stats { pairs } | Message::StatsReport { pairs } => {
                w.u32(pairs.len() as u32);
                for (name, n) in pairs {
                    w.string(name);
                    w.u64(*n);
                }
            }
            Message::Names { names, more } => {
                w.u8(u8::from(*more));
                w.u32(names.len() as u32);
                for (name, pid_d) in names {
                    w.string(name);
                    w.i64(*pid_d);
                }
            }
            Message::MoveToken { pid_d, pid } | Message::MoveAbort { pid_d, pid } => {
                w.i64(*pid_d);
                w.i32(*pid);
            }
            Message::MoveIn {
                pid_d,
                pid,
                uid,
                starttime,
                mailbox,
                token,
            } => {
                w.i64(*pid_d);
                w.i32(*pid);
                w.u32(*uid);
                w.u64(*starttime);
                w.i32(*mailbox);
                w.u64(*token);
            }
            Message::MigrateSpawn {
                program: p,
                pid_d,
                token,
            } => {
                w.i64(*pid_d);
                w.u64(*token);
                w.bytes(&p.exe);
                for list in [&p.argv, &p.env] {
                    w.u32(list.len() as u32);
                    for a in list {
                        w.bytes(a);
                    }
                }
                w.bytes(&p.cwd);
                w.bytes(&p.stdout);
                w.bytes(&p.stderr);
            }
            Message::MigrateData { data } => w.bytes(data),
            Message::MigrateCommit { go } => w.u8(u8::from(*go)),
            Message::MoveCheck { pid_d, token, uid } => {
                w.i64(*pid_d);
                w.u64(*token);
                w.u32(*uid);
            }
            Message::MoveAsk {
                pid_d,
                target,
                uid,
                admin,
            } => {
                w.i64(*pid_d);
                w.addr(target);
                w.u32(*uid);
                w.u8(u8::from(*admin));
            }
            Message::SendD {
                mailbox,
                data,
                flags,
            } => {
                w.i32(*mailbox);
                w.bytes(data);
                w.i32(*flags);
            }
            Message::Cancel
            | Message::Joined
            | Message::Heartbeat
            | Message::HeartbeatAck
            | Message::ListHosts
            | Message::Ping
            | Message::ShmDetach
            | Message::Pong => {}
            Message::Received | Message::Migratable | Message::ListLoad => {}
        }
    }

    /// Decodes a payload of the given kind. The payload must be consumed
    /// exactly.
    pub fn decode(kind: Kind, payload: &[u8]) -> Result<Message, WireError> {
        let mut r = Reader { buf: payload };
        let msg = match kind {
            Kind::Hello => {
                let role = match r.u8("role")? {
                    1 => Role::Host,
                    2 => Role::Employer,
                    v => return Err(invalid("role", format!("unknown role {v}"))),
                };
                Message::Hello {
                    role,
                    host: r.addr("host")?,
                }
            }
            Kind::Handshake => {
                let data = r.bytes("data")?;
                if data.len() > MAX_HANDSHAKE {
                    return Err(invalid(
                        "data",
                        format!("handshake message of {} bytes", data.len()),
                    ));
                }
                Message::Handshake {
                    data: data.to_vec(),
                }
            }
            Kind::SessionReady => Message::SessionReady {
                pid_d: r.i64("pid_d")?,
                keys: r.keys("keys")?,
            },
            Kind::Refused => Message::Refused {
                reason: r.string("reason")?,
            },
            Kind::Join => Message::Join {
                front_end: r.addr("front_end")?,
            },
            Kind::Joined => Message::Joined,
            Kind::Heartbeat => Message::Heartbeat,
            Kind::HeartbeatAck => Message::HeartbeatAck,
            Kind::ListHosts => Message::ListHosts,
            Kind::Hosts => {
                // The smallest encoded host is 1+4+2 + 1 + 8 + 8 + 2 bytes.
                let n = r.count("hosts", 26)?;
                let mut hosts = Vec::with_capacity(n);
                for _ in 0..n {
                    hosts.push(HostInfo {
                        addr: r.addr("hosts.addr")?,
                        up: r.bool("hosts.up")?,
                        last_heard_ms: r.u64("hosts.last_heard_ms")?,
                        joined_ms: r.u64("hosts.joined_ms")?,
                        version: r.u16("hosts.version")?,
                    });
                }
                Message::Hosts { hosts }
            }
            Kind::Ping => Message::Ping,
            Kind::Connect => Message::Connect {
                target: r.addr("target")?,
            },
            Kind::IpcGet => Message::IpcGet {
                kind: r.kind()?,
                key: r.i32("key")?,
                id: r.i32("id")?,
                incarnation: r.u64("incarnation")?,
                flags: r.i32("flags")?,
                size: r.u64("size")?,
            },
            Kind::Pong => Message::Pong,
            Kind::Error => Message::Error {
                errno: r.i32("errno")?,
                message: r.string("message")?,
            },
            Kind::Done => Message::Done {
                value: r.i64("value")?,
            },
            Kind::Cancel => Message::Cancel,
            Kind::KeyGet => Message::KeyGet {
                kind: r.kind()?,
                key: r.i32("key")?,
                flags: r.i32("flags")?,
            },
            Kind::KeyOwner => Message::KeyOwner {
                owner: r.addr("owner")?,
                id: r.i32("id")?,
                local_id: r.i32("local_id")?,
                origin: r.origin()?,
            },
            Kind::KeyCommit => Message::KeyCommit {
                kind: r.kind()?,
                key: r.i32("key")?,
                id: r.i32("id")?,
                creator_uid: r.u32("creator_uid")?,
                incarnation: r.u64("incarnation")?,
            },
            Kind::KeyAbort => Message::KeyAbort {
                kind: r.kind()?,
                key: r.i32("key")?,
            },
            Kind::KeyRemove => Message::KeyRemove {
                kind: r.kind()?,
                key: r.i32("key")?,
                id: r.i32("id")?,
                incarnation: r.u64("incarnation")?,
            },
            Kind::KeyCheck => Message::KeyCheck {
                kind: r.kind()?,
                key: r.i32("key")?,
            },
            Kind::Vouched => Message::Vouched {
                id: r.i32("id")?,
                vouch: r.bytes_fixed("vouch")?,
            },
            Kind::Placeholder => Message::Placeholder {
                kind: r.kind()?,
                key: r.i32("key")?,
                owner: r.addr("owner")?,
                id: r.i32("id")?,
                origin: r.origin()?,
                vouch: r.bytes_fixed("vouch")?,
            },
            Kind::KeyGone => Message::KeyGone {
                kind: r.kind()?,
                key: r.i32("key")?,
            },
            Kind::ListKeys => {
                // Kind code 0: from the first key (the key is ignored).
                let code = r.u8("after.kind")?;
                let key = r.i32("after.key")?;
                Message::ListKeys {
                    after: match code {
                        0 => None,
                        v => Some((kind_code(v)?, key)),
                    },
                }
            }
            Kind::Keys => {
                let more = r.bool("more")?;
                // The smallest encoded key is 1 + 4 + 7 + 4 + 4 + 8 + 8 bytes.
                let n = r.count("keys", 36)?;
                let mut keys = Vec::with_capacity(n);
                for _ in 0..n {
                    keys.push(KeyInfo {
                        kind: r.kind()?,
                        key: r.i32("keys.key")?,
                        owner: r.addr("keys.owner")?,
                        id: r.i32("keys.id")?,
                        creator_uid: r.u32("keys.creator_uid")?,
                        age_ms: r.u64("keys.age_ms")?,
                        incarnation: r.u64("keys.incarnation")?,
                    });
                }
                Message::Keys { keys, more }
            }
            Kind::DropKey => Message::DropKey {
                kind: r.kind()?,
                key: r.i32("key")?,
            },
            Kind::Resolve => Message::Resolve {
                kind: r.kind()?,
                local_id: r.i32("local_id")?,
            },
            Kind::Session => {
                let pid = r.i32("pid")?;
                let uid = r.u32("uid")?;
                let gid = r.u32("gid")?;
                let n = r.count("groups", 4)?;
                if n > MAX_GROUPS {
                    return Err(invalid(
                        "groups",
                        format!("{n} groups (at most {MAX_GROUPS})"),
                    ));
                }
                let mut groups = Vec::with_capacity(n);
                for _ in 0..n {
                    groups.push(r.u32("groups")?);
                }
                Message::Session {
                    pid,
                    uid,
                    gid,
                    groups,
                }
            }
            Kind::MsgSnd => Message::MsgSnd {
                id: r.i32("id")?,
                origin: r.origin()?,
                mtype: r.i64("mtype")?,
                text: r.bytes("text")?.to_vec(),
                flags: r.i32("flags")?,
            },
            Kind::MsgRcv => Message::MsgRcv {
                id: r.i32("id")?,
                origin: r.origin()?,
                size: r.u64("size")?,
                mtype: r.i64("mtype")?,
                flags: r.i32("flags")?,
            },
            Kind::MsgData => Message::MsgData {
                mtype: r.i64("mtype")?,
                text: r.bytes("text")?.to_vec(),
            },
            Kind::MsgCtl | Kind::ShmCtl => {
                let id = r.i32("id")?;
                let origin = r.origin()?;
                let cmd = r.i32("cmd")?;
                let set = if r.bool("set")? {
                    Some(IpcSet {
                        uid: r.u32("set.uid")?,
                        gid: r.u32("set.gid")?,
                        mode: r.u32("set.mode")?,
                        qbytes: r.u64("set.qbytes")?,
                    })
                } else {
                    None
                };
                if kind == Kind::MsgCtl {
                    Message::MsgCtl {
                        id,
                        origin,
                        cmd,
                        set,
                    }
                } else {
                    Message::ShmCtl {
                        id,
                        origin,
                        cmd,
                        set,
                    }
                }
            }
            Kind::ShmOpen => Message::ShmOpen { id: r.i32("id")? },
            Kind::ShmQuery => Message::ShmQuery {
                id: r.i32("id")?,
                origin: r.origin()?,
            },
            Kind::IpcStatAny => Message::IpcStatAny {
                kind: r.kind()?,
                id: r.i32("id")?,
                origin: r.origin()?,
            },
            Kind::ShmAttach => Message::ShmAttach {
                id: r.i32("id")?,
                origin: r.origin()?,
                readonly: r.bool("readonly")?,
                handover: if r.bool("handover")? {
                    Some((r.addr("host")?, Box::new(r.keys("keys")?)))
                } else {
                    None
                },
            },
            Kind::ShmAttached => Message::ShmAttached {
                size: r.u64("size")?,
                unit: r.u64("unit")?,
            },
            Kind::ShmFault => Message::ShmFault {
                unit: r.u32("unit")?,
                write: r.bool("write")?,
            },
            Kind::ShmGrant => Message::ShmGrant {
                unit: r.u32("unit")?,
                write: r.bool("write")?,
            },
            Kind::ShmData => Message::ShmData {
                unit: r.u32("unit")?,
                offset: r.u64("offset")?,
                data: r.bytes("data")?.to_vec(),
            },
            Kind::ShmRevoke => Message::ShmRevoke {
                unit: r.u32("unit")?,
                keep_read: r.bool("keep_read")?,
                want_data: r.bool("want_data")?,
            },
            Kind::ShmRevoked => Message::ShmRevoked {
                unit: r.u32("unit")?,
            },
            Kind::ShmLost => Message::ShmLost {
                unit: r.u32("unit")?,
            },
            Kind::ShmDetach => Message::ShmDetach,
            Kind::ShmStat => {
                let perm = r.perm()?;
                Message::ShmStat {
                    info: ShmInfo {
                        perm,
                        segsz: r.u64("segsz")?,
                        atime: r.i64("atime")?,
                        dtime: r.i64("dtime")?,
                        ctime: r.i64("ctime")?,
                        cpid: r.i32("cpid")?,
                        lpid: r.i32("lpid")?,
                        nattch: r.u64("nattch")?,
                    },
                }
            }
            Kind::ShmState => {
                let nattch = r.u64("nattch")?;
                let unit = r.u64("unit")?;
                // An address is at least 7 bytes, a run at least 15.
                let n = r.count("hosts", 7)?;
                let mut hosts = Vec::with_capacity(n);
                for _ in 0..n {
                    hosts.push(r.addr("hosts")?);
                }
                let n = r.count("runs", 15)?;
                let mut runs = Vec::with_capacity(n);
                for _ in 0..n {
                    let first = r.u32("runs.first")?;
                    let count = r.u32("runs.count")?;
                    let writer = match r.u16("runs.writer")? {
                        u16::MAX => None,
                        w => Some(w),
                    };
                    let lost = r.bool("runs.lost")?;
                    let readers = r.u16s("runs.readers")?;
                    runs.push(UnitRun {
                        first,
                        count,
                        writer,
                        readers,
                        lost,
                    });
                }
                Message::ShmState {
                    nattch,
                    unit,
                    hosts,
                    runs,
                }
            }
            Kind::MsqStat => {
                let perm = r.perm()?;
                Message::MsqStat {
                    info: MsqInfo {
                        perm,
                        stime: r.i64("stime")?,
                        rtime: r.i64("rtime")?,
                        ctime: r.i64("ctime")?,
                        cbytes: r.u64("cbytes")?,
                        qnum: r.u64("qnum")?,
                        qbytes: r.u64("qbytes")?,
                        lspid: r.i32("lspid")?,
                        lrpid: r.i32("lrpid")?,
                    },
                }
            }
            Kind::SemOp => {
                let id = r.i32("id")?;
                let origin = r.origin()?;
                let n = r.count("ops", 6)?;
                let mut ops = Vec::with_capacity(n);
                for _ in 0..n {
                    ops.push(SemBuf {
                        num: r.u16("ops.num")?,
                        op: r.u16("ops.op")? as i16,
                        flg: r.u16("ops.flg")? as i16,
                    });
                }
                let timeout_ns = if r.bool("timeout")? {
                    Some(r.u64("timeout")?)
                } else {
                    None
                };
                Message::SemOp {
                    id,
                    origin,
                    ops,
                    timeout_ns,
                }
            }
            Kind::SemCtl => Message::SemCtl {
                id: r.i32("id")?,
                origin: r.origin()?,
                num: r.i32("num")?,
                cmd: r.i32("cmd")?,
                arg: match r.u8("arg")? {
                    0 => SemArg::None,
                    1 => SemArg::Val(r.i32("arg.val")?),
                    2 => SemArg::All(r.u16s("arg.all")?),
                    3 => SemArg::Set(IpcSet {
                        uid: r.u32("arg.uid")?,
                        gid: r.u32("arg.gid")?,
                        mode: r.u32("arg.mode")?,
                        qbytes: r.u64("arg.qbytes")?,
                    }),
                    v => return Err(invalid("arg", format!("unknown semctl argument {v}"))),
                },
            },
            Kind::SemVals => Message::SemVals {
                vals: r.u16s("vals")?,
            },
            Kind::SemStat => Message::SemStat {
                info: SemInfo {
                    perm: r.perm()?,
                    otime: r.i64("otime")?,
                    ctime: r.i64("ctime")?,
                    nsems: r.u64("nsems")?,
                },
            },
            Kind::Register => Message::Register {
                mailbox: r.i32("mailbox")?,
            },
            Kind::PidRegister => Message::PidRegister {
                pid_d: r.i64("pid_d")?,
                pid: r.i32("pid")?,
                uid: r.u32("uid")?,
                starttime: r.u64("starttime")?,
                mailbox: r.i32("mailbox")?,
            },
            Kind::Registered => Message::Registered {
                pid_d: r.i64("pid_d")?,
                mailbox: r.i32("mailbox")?,
            },
            Kind::Unregister => Message::Unregister {
                pid_d: r.i64("pid_d")?,
                pid: r.i32("pid")?,
            },
            Kind::PidLookup => Message::PidLookup {
                pid_d: r.i64("pid_d")?,
            },
            Kind::PidInfo => Message::PidInfo {
                rec: r.pid_record()?,
            },
            Kind::ListPids => Message::ListPids {
                after: r.i64("after")?,
            },
            Kind::Pids => {
                let more = r.bool("more")?;
                let n = r.count("pids", PID_RECORD_MIN)?;
                let mut pids = Vec::with_capacity(n);
                for _ in 0..n {
                    pids.push(r.pid_record()?);
                }
                Message::Pids { pids, more }
            }
            Kind::KillD => Message::KillD {
                pid: r.i32("pid")?,
                starttime: r.u64("starttime")?,
                sig: r.i32("sig")?,
            },
            Kind::SendD => Message::SendD {
                mailbox: r.i32("mailbox")?,
                data: r.bytes("data")?.to_vec(),
                flags: r.i32("flags")?,
            },
            Kind::SenderPid => Message::SenderPid {
                pid_d: r.i64("pid_d")?,
            },
            Kind::PidCheck => Message::PidCheck {
                pid: r.i32("pid")?,
                starttime: r.u64("starttime")?,
            },
            Kind::SemJoin => Message::SemJoin {
                nonce: r.u64("nonce")?,
            },
            Kind::SemHandover => Message::SemHandover {
                uid: r.u32("uid")?,
                sender: r.i64("sender")?,
                keys: Box::new(r.keys("keys")?),
            },
            Kind::KeyClaim => Message::KeyClaim {
                kind: r.kind()?,
                key: r.i32("key")?,
                id: r.i32("id")?,
                creator_uid: r.u32("creator_uid")?,
                incarnation: r.u64("incarnation")?,
            },
            Kind::Received => Message::Received,
            Kind::CallEndpoint => Message::CallEndpoint {
                name: r.bytes("name")?.to_vec(),
            },
            Kind::CallRoute => Message::CallRoute {
                pid_d: r.i64("pid_d")?,
            },
            Kind::CallEndpointAt => Message::CallEndpointAt {
                pid: r.i32("pid")?,
                starttime: r.u64("starttime")?,
                name: r.bytes("name")?.to_vec(),
            },
            Kind::CallOpen => Message::CallOpen {
                pid_d: r.i64("pid_d")?,
            },
            Kind::CallHello => Message::CallHello {
                caller: r.i64("caller")?,
                keys: if r.bool("keys")? {
                    Some(Box::new(r.keys("keys")?))
                } else {
                    None
                },
            },
            Kind::CallRequest => Message::CallRequest {
                proc_name: r.string("proc_name")?,
                max_out: r.u32("max_out")?,
                input: r.bytes("input")?.to_vec(),
            },
            Kind::CallReply => Message::CallReply {
                status: r.i32("status")?,
                output: r.bytes("output")?.to_vec(),
            },
            Kind::WorkerCheck => Message::WorkerCheck { pid: r.i32("pid")? },
            Kind::Migratable => Message::Migratable,
            Kind::ListLoad => Message::ListLoad,
            Kind::LoadReport => {
                let window_ms = r.u32("window_ms")?;
                let cpu_ms = r.u32("cpu_ms")?;
                let procs = r.load_procs()?;
                Message::LoadReport {
                    window_ms,
                    cpu_ms,
                    procs,
                }
            }
            Kind::Loads => {
                // At least an address, two u32 and a count each.
                let n = r.count("hosts", ADDR_MIN + 12)?;
                let mut hosts = Vec::with_capacity(n);
                for _ in 0..n {
                    hosts.push(HostLoad {
                        host: r.addr("host")?,
                        load: r.u32("load")?,
                        window_ms: r.u32("window_ms")?,
                        procs: r.load_procs()?,
                    });
                }
                let n = r.count("moves", 16 + 2 * ADDR_MIN + 1)?;
                if n > MAX_BALANCE_MOVES {
                    return Err(invalid(
                        "moves",
                        format!("{n} (at most {MAX_BALANCE_MOVES})"),
                    ));
                }
                let mut moves = Vec::with_capacity(n);
                for _ in 0..n {
                    moves.push(BalanceMove {
                        at_ms: r.u64("at_ms")?,
                        pid_d: r.i64("pid_d")?,
                        from: r.addr("from")?,
                        to: r.addr("to")?,
                        outcome: r.u8("outcome")?,
                    });
                }
                Message::Loads { hosts, moves }
            }
            Kind::StatsAsk => Message::StatsAsk,
            Kind::Stats | Kind::StatsReport => {
                // A name (its length word) and a count: 12 bytes at least.
                let n = r.count("pairs", 12)?;
                if n > crate::metrics::MAX_PAIRS {
                    return Err(invalid("pairs", "more than metrics::MAX_PAIRS"));
                }
                let mut pairs = Vec::with_capacity(n);
                for _ in 0..n {
                    let name = r.string("pair name")?;
                    pairs.push((name, r.u64("pair value")?));
                }
                if kind == Kind::Stats {
                    Message::Stats { pairs }
                } else {
                    Message::StatsReport { pairs }
                }
            }
            Kind::NameRegister => Message::NameRegister {
                pid_d: r.i64("pid_d")?,
                pid: r.i32("pid")?,
                name: r.string("name")?,
            },
            Kind::NameRelease => Message::NameRelease {
                pid_d: r.i64("pid_d")?,
                pid: r.i32("pid")?,
                name: r.string("name")?,
            },
            Kind::NameLookup => Message::NameLookup {
                name: r.string("name")?,
            },
            Kind::ListNames => Message::ListNames {
                after: r.string("after")?,
            },
            Kind::Names => {
                let more = r.bool("more")?;
                // A name (its length word) and a pid_d: 12 bytes at least.
                let n = r.count("names", 12)?;
                let mut names = Vec::with_capacity(n);
                for _ in 0..n {
                    let name = r.string("name")?;
                    names.push((name, r.i64("pid_d")?));
                }
                Message::Names { names, more }
            }
            Kind::MoveToken => Message::MoveToken {
                pid_d: r.i64("pid_d")?,
                pid: r.i32("pid")?,
            },
            Kind::MoveAbort => Message::MoveAbort {
                pid_d: r.i64("pid_d")?,
                pid: r.i32("pid")?,
            },
            Kind::MoveIn => Message::MoveIn {
                pid_d: r.i64("pid_d")?,
                pid: r.i32("pid")?,
                uid: r.u32("uid")?,
                starttime: r.u64("starttime")?,
                mailbox: r.i32("mailbox")?,
                token: r.u64("token")?,
            },
            Kind::MigrateSpawn => Message::MigrateSpawn {
                pid_d: r.i64("pid_d")?,
                token: r.u64("token")?,
                program: Box::new(Program {
                    exe: r.bytes("exe")?.to_vec(),
                    argv: r.byte_list("argv")?,
                    env: r.byte_list("env")?,
                    cwd: r.bytes("cwd")?.to_vec(),
                    stdout: r.bytes("stdout")?.to_vec(),
                    stderr: r.bytes("stderr")?.to_vec(),
                }),
            },
            Kind::MigrateData => Message::MigrateData {
                data: r.bytes("data")?.to_vec(),
            },
            Kind::MigrateCommit => Message::MigrateCommit { go: r.bool("go")? },
            Kind::MoveCheck => Message::MoveCheck {
                pid_d: r.i64("pid_d")?,
                token: r.u64("token")?,
                uid: r.u32("uid")?,
            },
            Kind::MoveAsk => Message::MoveAsk {
                pid_d: r.i64("pid_d")?,
                target: r.addr("target")?,
                uid: r.u32("uid")?,
                admin: r.bool("admin")?,
            },
        };
        if !r.buf.is_empty() {
            return Err(WireError::TrailingBytes {
                kind: kind.name(),
                extra: r.buf.len(),
            });
        }
        Ok(msg)
    }
}

fn kind_code(v: u8) -> Result<IpcKind, WireError> {
    match v {
        1 => Ok(IpcKind::Msg),
        2 => Ok(IpcKind::Sem),
        3 => Ok(IpcKind::Shm),
        v => Err(invalid("kind", format!("unknown IPC kind {v}"))),
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> WireError {
    WireError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Checks a header. `max` is the largest payload accepted (dipc.conf's
/// `max_frame`).
pub fn parse_header(buf: &[u8; HEADER_LEN], max: u32) -> Result<Header, WireError> {
    let magic = BigEndian::read_u32(&buf[0..4]);
    if magic != MAGIC {
        return Err(WireError::BadMagic(magic));
    }
    let version = BigEndian::read_u16(&buf[4..6]);
    if version != VERSION {
        return Err(WireError::BadVersion(version));
    }
    let raw_kind = BigEndian::read_u16(&buf[6..8]);
    let kind = Kind::from_u16(raw_kind).ok_or(WireError::UnknownType(raw_kind))?;
    let request_id = BigEndian::read_u64(&buf[8..16]);
    let len = BigEndian::read_u32(&buf[16..20]);
    if len > max {
        return Err(WireError::TooLong { len, max });
    }
    Ok(Header {
        kind,
        request_id,
        len,
    })
}

/// Appends a whole frame (header and payload) to `out`.
pub fn encode_frame(request_id: u64, msg: &Message, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    msg.encode_payload(out);
    finish_header(out, start, msg.kind(), request_id);
}

/// Fills in the header at `out[start..]` of the payload that follows it.
fn finish_header(out: &mut [u8], start: usize, kind: Kind, request_id: u64) {
    let len = (out.len() - start - HEADER_LEN) as u32;
    let h = &mut out[start..start + HEADER_LEN];
    BigEndian::write_u32(&mut h[0..4], MAGIC);
    BigEndian::write_u16(&mut h[4..6], VERSION);
    BigEndian::write_u16(&mut h[6..8], kind as u16);
    BigEndian::write_u64(&mut h[8..16], request_id);
    BigEndian::write_u32(&mut h[16..20], len);
}

/// Appends a whole `ShmData` frame, encoded from borrowed `data` (a
/// segment's content goes out without a copy into a message first).
pub fn encode_shm_data(request_id: u64, unit: u32, offset: u64, data: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    let mut w = Writer(out);
    w.u32(unit);
    w.u64(offset);
    w.bytes(data);
    finish_header(out, start, Kind::ShmData, request_id);
}

/// A `MigrateData` frame from borrowed bytes: a process's state goes out
/// in chunks of up to a frame each, and copying each chunk into a message
/// first would add a pass over all of it while the process is frozen.
pub fn encode_migrate_data(request_id: u64, data: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    Writer(out).bytes(data);
    finish_header(out, start, Kind::MigrateData, request_id);
}

/// One received frame, its payload still in the receive buffer: a reader
/// that wants a large payload somewhere else (a segment's content, into
/// the mapping) takes it from there, without a message in between.
#[derive(Debug, Clone, Copy)]
pub struct RawFrame<'a> {
    pub kind: Kind,
    pub request_id: u64,
    pub payload: &'a [u8],
}

impl RawFrame<'_> {
    pub fn decode(&self) -> Result<Message, WireError> {
        Message::decode(self.kind, self.payload)
    }

    /// A `ShmData` frame's content, borrowed; `None` for any other kind.
    /// A `MigrateData` frame's bytes, borrowed; `None` for any other kind.
    pub fn migrate_data(&self) -> Option<Result<&[u8], WireError>> {
        if self.kind != Kind::MigrateData {
            return None;
        }
        let mut r = Reader { buf: self.payload };
        Some(r.bytes("data").and_then(|d| match r.buf.len() {
            0 => Ok(d),
            extra => Err(WireError::TrailingBytes {
                kind: Kind::MigrateData.name(),
                extra,
            }),
        }))
    }

    pub fn shm_data(&self) -> Option<Result<ShmChunk<'_>, WireError>> {
        if self.kind != Kind::ShmData {
            return None;
        }
        let mut r = Reader { buf: self.payload };
        let fields = (|| {
            Ok(ShmChunk {
                unit: r.u32("unit")?,
                offset: r.u64("offset")?,
                data: r.bytes("data")?,
            })
        })();
        Some(fields.and_then(|f| match r.buf.len() {
            0 => Ok(f),
            extra => Err(WireError::TrailingBytes {
                kind: Kind::ShmData.name(),
                extra,
            }),
        }))
    }
}

/// The fields of a `ShmData` frame, its content borrowed from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShmChunk<'a> {
    pub unit: u32,
    pub offset: u64,
    pub data: &'a [u8],
}

/// Splits the first frame off `buf`, if it is complete.
///
/// Returns `Ok(None)` while more bytes are needed (a bad header is reported
/// as soon as its 20 bytes are in), else the bytes consumed and the frame.
pub fn split_frame(buf: &[u8], max: u32) -> Result<Option<(usize, RawFrame<'_>)>, WireError> {
    let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let h = parse_header(head, max)?;
    let total = HEADER_LEN + h.len as usize;
    let Some(payload) = buf.get(HEADER_LEN..total) else {
        return Ok(None);
    };
    Ok(Some((
        total,
        RawFrame {
            kind: h.kind,
            request_id: h.request_id,
            payload,
        },
    )))
}

/// Decodes the first frame in `buf`, if it is complete (see
/// [`split_frame`]): the bytes consumed, the request id and the message.
pub fn decode_frame(buf: &[u8], max: u32) -> Result<Option<(usize, u64, Message)>, WireError> {
    match split_frame(buf, max)? {
        Some((used, f)) => Ok(Some((used, f.request_id, f.decode()?))),
        None => Ok(None),
    }
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes_fixed(&mut self, v: &[u8]) {
        self.0.extend_from_slice(v);
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
    }
    fn origin(&mut self, o: &Origin) {
        self.i32(o.key);
        self.u64(o.incarnation);
    }
    fn keys(&mut self, k: &SessionKeys) {
        self.bytes_fixed(&k.tx_key);
        self.u64(k.tx_n);
        self.bytes_fixed(&k.rx_key);
        self.u64(k.rx_n);
    }
    fn string(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
    fn u16s(&mut self, v: &[u16]) {
        self.u32(v.len() as u32);
        for x in v {
            self.u16(*x);
        }
    }
    fn load_proc(&mut self, p: &LoadProc) {
        self.i64(p.pid_d);
        self.i32(p.pid);
        self.string(&p.name);
        self.u32(p.cpu);
        self.u64(p.stay_ms);
    }
    fn pid_record(&mut self, p: &PidRecord) {
        self.i64(p.pid_d);
        self.addr(&p.host);
        self.i32(p.pid);
        self.u32(p.uid);
        self.u64(p.starttime);
        self.i32(p.mailbox);
        self.u64(p.since_ms);
    }
    fn perm(&mut self, p: &IpcPerm) {
        for v in [p.key as u32, p.uid, p.gid, p.cuid, p.cgid, p.mode, p.seq] {
            self.u32(v);
        }
    }
    fn addr(&mut self, a: &SocketAddr) {
        match a.ip() {
            IpAddr::V4(ip) => {
                self.u8(4);
                self.0.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                self.u8(6);
                self.0.extend_from_slice(&ip.octets());
            }
        }
        self.u16(a.port());
    }
}

/// The smallest encoded [`PidRecord`]: 8 + (1+4+2) + 4 + 4 + 8 + 4 + 8.
const PID_RECORD_MIN: usize = 43;
/// The smallest encoded address: family, IPv4, port.
const ADDR_MIN: usize = 7;
/// The smallest encoded [`LoadProc`]: 8 + 4 + 4 (empty name) + 4 + 8.
const LOAD_PROC_MIN: usize = 28;

/// Reads fields off a payload; every read checks the bytes are there.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Truncated { field });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, field)?[0])
    }
    fn bool(&mut self, field: &'static str) -> Result<bool, WireError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(invalid(field, format!("{v} is not a boolean"))),
        }
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, WireError> {
        Ok(BigEndian::read_u16(self.take(2, field)?))
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, WireError> {
        Ok(BigEndian::read_u32(self.take(4, field)?))
    }
    fn u64(&mut self, field: &'static str) -> Result<u64, WireError> {
        Ok(BigEndian::read_u64(self.take(8, field)?))
    }
    fn i32(&mut self, field: &'static str) -> Result<i32, WireError> {
        Ok(BigEndian::read_i32(self.take(4, field)?))
    }
    fn i64(&mut self, field: &'static str) -> Result<i64, WireError> {
        Ok(BigEndian::read_i64(self.take(8, field)?))
    }
    fn u16s(&mut self, field: &'static str) -> Result<Vec<u16>, WireError> {
        let n = self.count(field, 2)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.u16(field)?);
        }
        Ok(v)
    }
    fn perm(&mut self) -> Result<IpcPerm, WireError> {
        Ok(IpcPerm {
            key: self.i32("perm.key")?,
            uid: self.u32("perm.uid")?,
            gid: self.u32("perm.gid")?,
            cuid: self.u32("perm.cuid")?,
            cgid: self.u32("perm.cgid")?,
            mode: self.u32("perm.mode")?,
            seq: self.u32("perm.seq")?,
        })
    }
    /// A count (at most [`MAX_LOAD_PROCS`]) and that many [`LoadProc`].
    fn load_procs(&mut self) -> Result<Vec<LoadProc>, WireError> {
        let n = self.count("procs", LOAD_PROC_MIN)?;
        if n > MAX_LOAD_PROCS {
            return Err(invalid("procs", format!("{n} (at most {MAX_LOAD_PROCS})")));
        }
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let pid_d = self.i64("proc.pid_d")?;
            let pid = self.i32("proc.pid")?;
            let name = self.string("proc.name")?;
            if name.len() > MAX_LOAD_NAME {
                return Err(invalid(
                    "proc.name",
                    format!("{} bytes (at most {MAX_LOAD_NAME})", name.len()),
                ));
            }
            v.push(LoadProc {
                pid_d,
                pid,
                name,
                cpu: self.u32("proc.cpu")?,
                stay_ms: self.u64("proc.stay_ms")?,
            });
        }
        Ok(v)
    }
    fn pid_record(&mut self) -> Result<PidRecord, WireError> {
        Ok(PidRecord {
            pid_d: self.i64("pid.pid_d")?,
            host: self.addr("pid.host")?,
            pid: self.i32("pid.pid")?,
            uid: self.u32("pid.uid")?,
            starttime: self.u64("pid.starttime")?,
            mailbox: self.i32("pid.mailbox")?,
            since_ms: self.u64("pid.since_ms")?,
        })
    }
    fn kind(&mut self) -> Result<IpcKind, WireError> {
        kind_code(self.u8("kind")?)
    }
    fn bytes_fixed<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }
    fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], WireError> {
        let n = self.u32(field)? as usize;
        self.take(n, field)
    }
    /// A count, then that many byte strings (each its length word first).
    fn byte_list(&mut self, field: &'static str) -> Result<Vec<Vec<u8>>, WireError> {
        let n = self.count(field, 4)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.bytes(field)?.to_vec());
        }
        Ok(v)
    }
    fn string(&mut self, field: &'static str) -> Result<String, WireError> {
        let b = self.bytes(field)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| invalid(field, "not UTF-8"))
    }
    /// A count of items each at least `min_size` bytes long; refused if the
    /// payload cannot hold that many, so a lying count allocates nothing.
    fn count(&mut self, field: &'static str, min_size: usize) -> Result<usize, WireError> {
        let n = self.u32(field)? as usize;
        if n.saturating_mul(min_size) > self.buf.len() {
            return Err(WireError::Truncated { field });
        }
        Ok(n)
    }
    fn origin(&mut self) -> Result<Origin, WireError> {
        Ok(Origin {
            key: self.i32("origin.key")?,
            incarnation: self.u64("origin.incarnation")?,
        })
    }
    fn keys(&mut self, field: &'static str) -> Result<SessionKeys, WireError> {
        Ok(SessionKeys {
            tx_key: self.bytes_fixed(field)?,
            tx_n: self.u64(field)?,
            rx_key: self.bytes_fixed(field)?,
            rx_n: self.u64(field)?,
        })
    }
    fn addr(&mut self, field: &'static str) -> Result<SocketAddr, WireError> {
        let ip = match self.u8(field)? {
            4 => IpAddr::V4(Ipv4Addr::from(self.bytes_fixed::<4>(field)?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.bytes_fixed::<16>(field)?)),
            v => return Err(invalid(field, format!("unknown address family {v}"))),
        };
        Ok(SocketAddr::new(ip, self.u16(field)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: u32 = 1 << 20;

    fn samples() -> Vec<Message> {
        let a4: SocketAddr = "10.66.0.2:7100".parse().unwrap();
        let a6: SocketAddr = "[fd00::5]:7101".parse().unwrap();
        vec![
            Message::Hello {
                role: Role::Host,
                host: a4,
            },
            Message::Hello {
                role: Role::Employer,
                host: a6,
            },
            Message::Handshake { data: vec![1; 48] },
            Message::Handshake { data: vec![] },
            Message::SessionReady {
                pid_d: 42,
                keys: SessionKeys {
                    tx_key: [3; KEY_LEN],
                    tx_n: 7,
                    rx_key: [4; KEY_LEN],
                    rx_n: u64::MAX,
                },
            },
            Message::Refused {
                reason: "wrong cluster secret".into(),
            },
            Message::Join { front_end: a4 },
            Message::Joined,
            Message::Heartbeat,
            Message::HeartbeatAck,
            Message::ListHosts,
            Message::Hosts { hosts: vec![] },
            Message::Hosts {
                hosts: vec![
                    HostInfo {
                        addr: a4,
                        up: true,
                        last_heard_ms: 12,
                        joined_ms: 3400,
                        version: 1,
                    },
                    HostInfo {
                        addr: a6,
                        up: false,
                        last_heard_ms: u64::MAX,
                        joined_ms: 0,
                        version: 1,
                    },
                ],
            },
            Message::Ping,
            Message::Connect { target: a6 },
            Message::IpcGet {
                kind: IpcKind::Sem,
                key: 0x4242,
                id: 17,
                incarnation: u64::MAX,
                flags: 0o600,
                size: 3,
            },
            Message::Pong,
            Message::error(libc::EACCES, "permission denied ✓"),
            Message::Done { value: -3 },
            Message::Cancel,
            Message::KeyGet {
                kind: IpcKind::Msg,
                key: 0x1234,
                flags: 0o1666,
            },
            Message::KeyOwner {
                owner: a4,
                id: 32768,
                local_id: 5,
                origin: Origin {
                    key: 0x1234,
                    incarnation: 77,
                },
            },
            Message::KeyCommit {
                kind: IpcKind::Sem,
                key: -7,
                id: 3,
                creator_uid: 1000,
                incarnation: 1 << 63,
            },
            Message::KeyAbort {
                kind: IpcKind::Shm,
                key: 1,
            },
            Message::KeyRemove {
                kind: IpcKind::Msg,
                key: 1,
                id: 2,
                incarnation: 3,
            },
            Message::KeyCheck {
                kind: IpcKind::Shm,
                key: -1,
            },
            Message::Vouched {
                id: 7,
                vouch: [0xa5; 32],
            },
            Message::Placeholder {
                kind: IpcKind::Sem,
                key: 0x5a5a,
                owner: "[fd00::2]:7100".parse().unwrap(),
                id: 9,
                origin: Origin {
                    key: 0x5a5a,
                    incarnation: u64::MAX,
                },
                vouch: [0x3c; 32],
            },
            Message::KeyGone {
                kind: IpcKind::Msg,
                key: 1,
            },
            Message::ListKeys { after: None },
            Message::ListKeys {
                after: Some((IpcKind::Shm, -5)),
            },
            Message::Keys {
                keys: vec![KeyInfo {
                    kind: IpcKind::Msg,
                    key: 42,
                    owner: a6,
                    id: 0,
                    creator_uid: 0,
                    age_ms: 99,
                    incarnation: 12345,
                }],
                more: true,
            },
            Message::DropKey {
                kind: IpcKind::Sem,
                key: 9,
            },
            Message::Resolve {
                kind: IpcKind::Msg,
                local_id: 65536,
            },
            Message::Session {
                pid: 77,
                uid: 1000,
                gid: 1000,
                groups: vec![4, 24, 27],
            },
            Message::MsgSnd {
                id: 1,
                origin: Origin {
                    key: 0x5eed,
                    incarnation: 0xfeed_0001,
                },
                mtype: 5,
                text: b"Hello, Distributed Programming".to_vec(),
                flags: libc::IPC_NOWAIT,
            },
            Message::MsgRcv {
                id: 1,
                origin: Origin {
                    key: 0x5eed,
                    incarnation: 0xfeed_0001,
                },
                size: 8192,
                mtype: -3,
                flags: 0,
            },
            Message::MsgData {
                mtype: 2,
                text: vec![0; 100],
            },
            Message::MsgCtl {
                id: 1,
                origin: Origin {
                    key: 0x5eed,
                    incarnation: 0xfeed_0001,
                },
                cmd: libc::IPC_SET,
                set: Some(IpcSet {
                    uid: 1,
                    gid: 2,
                    mode: 0o600,
                    qbytes: 16384,
                }),
            },
            Message::MsgCtl {
                id: 1,
                origin: Origin {
                    key: 0x5eed,
                    incarnation: 0xfeed_0001,
                },
                cmd: libc::IPC_RMID,
                set: None,
            },
            Message::MsqStat {
                info: MsqInfo {
                    perm: IpcPerm {
                        key: 5,
                        uid: 1,
                        gid: 2,
                        cuid: 3,
                        cgid: 4,
                        mode: 0o644,
                        seq: 7,
                    },
                    stime: 1,
                    rtime: 2,
                    ctime: 3,
                    cbytes: 4,
                    qnum: 5,
                    qbytes: 16384,
                    lspid: 8,
                    lrpid: 9,
                },
            },
            Message::ShmOpen { id: 3 },
            Message::ShmAttach {
                id: 32768,
                origin: Origin {
                    key: 0x5eed,
                    incarnation: 0xfeed_0001,
                },
                readonly: true,
                handover: None,
            },
            Message::ShmAttach {
                id: 0,
                origin: Origin {
                    key: 0x5eed,
                    incarnation: 0xfeed_0001,
                },
                readonly: false,
                handover: Some((
                    a6,
                    Box::new(SessionKeys {
                        tx_key: [5; KEY_LEN],
                        tx_n: 0,
                        rx_key: [6; KEY_LEN],
                        rx_n: 1,
                    }),
                )),
            },
            Message::ShmAttached {
                size: 1 << 24,
                unit: 4096,
            },
            Message::ShmFault {
                unit: 7,
                write: true,
            },
            Message::ShmData {
                unit: 7,
                offset: 4096,
                data: vec![1, 2, 3],
            },
            Message::ShmGrant {
                unit: 0,
                write: false,
            },
            Message::ShmRevoke {
                unit: 9,
                keep_read: true,
                want_data: false,
            },
            Message::ShmRevoked { unit: 9 },
            Message::ShmLost { unit: 1 },
            Message::ShmDetach,
            Message::ShmCtl {
                id: 1,
                origin: Origin {
                    key: 0x5eed,
                    incarnation: 0xfeed_0001,
                },
                cmd: libc::IPC_SET,
                set: Some(IpcSet {
                    uid: 1,
                    gid: 2,
                    mode: 0o600,
                    qbytes: 0,
                }),
            },
            Message::ShmStat {
                info: ShmInfo {
                    perm: IpcPerm::default(),
                    segsz: 4096,
                    atime: 1,
                    dtime: 2,
                    ctime: 3,
                    cpid: 4,
                    lpid: 5,
                    nattch: 3,
                },
            },
            Message::ShmQuery {
                id: 65536,
                origin: Origin::default(),
            },
            Message::IpcStatAny {
                kind: IpcKind::Sem,
                id: 32769,
                origin: Origin {
                    key: 0x5a5a,
                    incarnation: 0xfeed_0002,
                },
            },
            Message::ShmState {
                nattch: 2,
                unit: 4096,
                hosts: vec![a4, a6],
                runs: vec![
                    UnitRun {
                        first: 0,
                        count: 3,
                        writer: Some(1),
                        readers: vec![],
                        lost: false,
                    },
                    UnitRun {
                        first: 3,
                        count: 1,
                        writer: None,
                        readers: vec![0, 1],
                        lost: true,
                    },
                ],
            },
            Message::SemOp {
                id: 3,
                origin: Origin {
                    key: 0x5eed,
                    incarnation: 0xfeed_0001,
                },
                ops: vec![
                    SemBuf {
                        num: 0,
                        op: -1,
                        flg: libc::SEM_UNDO as i16,
                    },
                    SemBuf {
                        num: 2,
                        op: 0,
                        flg: libc::IPC_NOWAIT as i16,
                    },
                ],
                timeout_ns: Some(1_500_000_000),
            },
            Message::SemOp {
                id: 3,
                origin: Origin {
                    key: 0x5eed,
                    incarnation: 0xfeed_0001,
                },
                ops: vec![],
                timeout_ns: None,
            },
            Message::SemCtl {
                id: 3,
                origin: Origin {
                    key: 0x5eed,
                    incarnation: 0xfeed_0001,
                },
                num: 1,
                cmd: libc::SETVAL,
                arg: SemArg::Val(7),
            },
            Message::SemCtl {
                id: 3,
                origin: Origin {
                    key: 0x5eed,
                    incarnation: 0xfeed_0001,
                },
                num: 0,
                cmd: libc::SETALL,
                arg: SemArg::All(vec![1, 2, 65535]),
            },
            Message::SemCtl {
                id: 3,
                origin: Origin {
                    key: 0x5eed,
                    incarnation: 0xfeed_0001,
                },
                num: 0,
                cmd: libc::IPC_SET,
                arg: SemArg::Set(IpcSet::default()),
            },
            Message::SemCtl {
                id: 3,
                origin: Origin {
                    key: 0x5eed,
                    incarnation: 0xfeed_0001,
                },
                num: 0,
                cmd: libc::IPC_RMID,
                arg: SemArg::None,
            },
            Message::SemVals { vals: vec![0, 9] },
            Message::SemStat {
                info: SemInfo {
                    perm: IpcPerm::default(),
                    otime: 5,
                    ctime: 6,
                    nsems: 3,
                },
            },
            Message::Register { mailbox: 32769 },
            Message::PidRegister {
                pid_d: 0,
                pid: 4242,
                uid: 1000,
                starttime: 123_456_789,
                mailbox: 3,
            },
            Message::Registered {
                pid_d: 17,
                mailbox: 3,
            },
            Message::Unregister { pid_d: 17, pid: 0 },
            Message::PidLookup { pid_d: i64::MAX },
            Message::PidInfo { rec: pid_rec(a4) },
            Message::ListPids { after: 0 },
            Message::ListPids { after: 77 },
            Message::Pids {
                pids: vec![],
                more: false,
            },
            Message::Pids {
                more: true,
                pids: vec![pid_rec(a4), pid_rec(a6)],
            },
            Message::KillD {
                pid: 99,
                starttime: 7,
                sig: 34,
            },
            Message::SendD {
                mailbox: 5,
                data: b"ping".to_vec(),
                flags: libc::IPC_NOWAIT,
            },
            Message::SendD {
                mailbox: 5,
                data: vec![],
                flags: 0,
            },
            Message::SenderPid { pid_d: 3 },
            Message::PidCheck {
                pid: 99,
                starttime: 7,
            },
            Message::SemJoin { nonce: u64::MAX },
            Message::SemHandover {
                uid: 65534,
                sender: -1,
                keys: Box::new(SessionKeys {
                    tx_key: [1; KEY_LEN],
                    tx_n: 2,
                    rx_key: [3; KEY_LEN],
                    rx_n: u64::MAX,
                }),
            },
            Message::KeyClaim {
                kind: IpcKind::Shm,
                key: -9,
                id: 32769,
                creator_uid: 1000,
                incarnation: u64::MAX,
            },
            Message::Received,
            Message::NameRegister {
                pid_d: 4,
                pid: 77,
                name: "Philosopher[3]".into(),
            },
            Message::NameRelease {
                pid_d: 4,
                pid: 0,
                name: "Buffer".into(),
            },
            Message::NameLookup {
                name: "Table".into(),
            },
            Message::ListNames { after: "".into() },
            Message::Names {
                names: vec![("Buffer".into(), 3), ("Table".into(), 9)],
                more: true,
            },
            Message::Names {
                names: vec![],
                more: false,
            },
            Message::MoveToken { pid_d: 7, pid: 0 },
            Message::MoveAbort { pid_d: 7, pid: 42 },
            Message::MoveIn {
                pid_d: 7,
                pid: 4242,
                uid: 1000,
                starttime: 99,
                mailbox: 32768,
                token: u64::MAX,
            },
            Message::MigrateSpawn {
                program: Box::new(Program {
                    exe: b"/usr/bin/prog".to_vec(),
                    argv: vec![b"prog".to_vec(), vec![], b"-x".to_vec()],
                    env: vec![b"A=1".to_vec()],
                    cwd: b"/tmp".to_vec(),
                    stdout: b"/tmp/out".to_vec(),
                    stderr: vec![],
                }),
                pid_d: 7,
                token: 99,
            },
            Message::MoveCheck {
                pid_d: 7,
                token: u64::MAX,
                uid: 0,
            },
            Message::MigrateSpawn {
                program: Box::default(),
                pid_d: 0,
                token: 0,
            },
            Message::MigrateData { data: vec![9; 300] },
            Message::MigrateCommit { go: true },
            Message::MigrateCommit { go: false },
            Message::MoveAsk {
                pid_d: 3,
                target: a6,
                uid: 1000,
                admin: true,
            },
            Message::CallEndpoint {
                name: b"dipc-call-7-0123456789abcdef".to_vec(),
            },
            Message::CallRoute { pid_d: 7 },
            Message::CallEndpointAt {
                pid: 4242,
                starttime: 99,
                name: b"x".to_vec(),
            },
            Message::CallOpen { pid_d: i64::MAX },
            Message::CallHello {
                caller: 3,
                keys: None,
            },
            Message::CallHello {
                caller: 5,
                keys: Some(Box::new(SessionKeys {
                    tx_key: [4; KEY_LEN],
                    tx_n: 0,
                    rx_key: [5; KEY_LEN],
                    rx_n: 7,
                })),
            },
            Message::CallRequest {
                proc_name: "Send".into(),
                max_out: 128,
                input: b"letter".to_vec(),
            },
            Message::CallReply {
                status: libc::ENOSYS,
                output: vec![],
            },
            Message::CallReply {
                status: 0,
                output: vec![1, 2, 3],
            },
            Message::WorkerCheck { pid: 1 },
            Message::Migratable,
            Message::ListLoad,
            Message::LoadReport {
                window_ms: 250,
                cpu_ms: 0,
                procs: vec![],
            },
            Message::LoadReport {
                window_ms: 251,
                cpu_ms: 480,
                procs: vec![LoadProc {
                    pid_d: 7,
                    pid: 4242,
                    name: "spinner".into(),
                    cpu: 240,
                    stay_ms: 12_000,
                }],
            },
            Message::Loads {
                hosts: vec![
                    HostLoad {
                        host: "10.0.0.2:7100".parse().unwrap(),
                        load: 1999,
                        window_ms: 1000,
                        procs: vec![LoadProc {
                            pid_d: 9,
                            pid: 1,
                            name: String::new(),
                            cpu: 333,
                            stay_ms: 0,
                        }],
                    },
                    HostLoad {
                        host: "[fd00::3]:7100".parse().unwrap(),
                        load: 0,
                        window_ms: 0,
                        procs: vec![],
                    },
                ],
                moves: vec![BalanceMove {
                    at_ms: 1_700_000_000_000,
                    pid_d: 9,
                    from: "10.0.0.2:7100".parse().unwrap(),
                    to: "[fd00::3]:7100".parse().unwrap(),
                    outcome: 1,
                }],
            },
            Message::StatsAsk,
            Message::Stats {
                pairs: vec![("call.msgsnd".into(), 3), ("uptime_s".into(), u64::MAX)],
            },
            Message::StatsReport { pairs: vec![] },
        ]
    }

    fn pid_rec(host: SocketAddr) -> PidRecord {
        PidRecord {
            pid_d: 12,
            host,
            pid: 4242,
            uid: 1000,
            starttime: u64::MAX,
            mailbox: 98304,
            since_ms: 1500,
        }
    }

    fn frame(id: u64, m: &Message) -> Vec<u8> {
        let mut v = Vec::new();
        encode_frame(id, m, &mut v);
        v
    }

    #[test]
    fn every_kind_round_trips() {
        let samples = samples();
        for kind in Kind::ALL {
            assert!(
                samples.iter().any(|m| m.kind() == *kind),
                "no sample for {kind:?}"
            );
            assert_eq!(Kind::from_u16(*kind as u16), Some(*kind));
        }
        for (i, m) in samples.iter().enumerate() {
            let f = frame(i as u64 * 977, m);
            let (used, id, back) = decode_frame(&f, MAX).unwrap().unwrap();
            assert_eq!(used, f.len());
            assert_eq!(id, i as u64 * 977);
            assert_eq!(&back, m);
        }
    }

    #[test]
    fn load_reports_past_their_bounds_are_refused() {
        let proc_ = |name: &str| LoadProc {
            pid_d: 1,
            pid: 2,
            name: name.into(),
            cpu: 3,
            stay_ms: 4,
        };
        let too_many = Message::LoadReport {
            window_ms: 1,
            cpu_ms: 1,
            procs: vec![proc_("p"); MAX_LOAD_PROCS + 1],
        };
        let f = frame(0, &too_many);
        assert!(decode_frame(&f, 1 << 24).is_err());
        let long_name = Message::LoadReport {
            window_ms: 1,
            cpu_ms: 1,
            procs: vec![proc_(&"n".repeat(MAX_LOAD_NAME + 1))],
        };
        assert!(decode_frame(&frame(0, &long_name), MAX).is_err());
        let just = Message::LoadReport {
            window_ms: 1,
            cpu_ms: 1,
            procs: vec![proc_(&"n".repeat(MAX_LOAD_NAME)); MAX_LOAD_PROCS],
        };
        assert!(decode_frame(&frame(0, &just), 1 << 24).is_ok());
    }

    #[test]
    fn incomplete_frames_wait_for_more() {
        for m in samples() {
            let f = frame(1, &m);
            for cut in 0..f.len() {
                assert_eq!(decode_frame(&f[..cut], MAX), Ok(None), "{m:?} cut {cut}");
            }
        }
    }

    #[test]
    fn bad_magic_version_type_and_length_are_refused() {
        let good = frame(5, &Message::Pong);
        let mut f = good.clone();
        f[0] = b'X';
        assert!(matches!(decode_frame(&f, MAX), Err(WireError::BadMagic(_))));
        let mut f = good.clone();
        f[5] = 9;
        assert_eq!(decode_frame(&f, MAX), Err(WireError::BadVersion(9)));
        let mut f = good.clone();
        f[6] = 0xff;
        f[7] = 0xee;
        assert_eq!(decode_frame(&f, MAX), Err(WireError::UnknownType(0xffee)));
        // A claimed length over the maximum is refused from the header alone,
        // before the payload is there or anything is allocated for it.
        let mut f = good.clone();
        f[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            decode_frame(&f, MAX),
            Err(WireError::TooLong {
                len: u32::MAX,
                max: MAX
            })
        );
    }

    #[test]
    fn truncated_and_padded_payloads_are_refused() {
        for m in samples() {
            let mut payload = Vec::new();
            m.encode_payload(&mut payload);
            for cut in 0..payload.len() {
                let r = Message::decode(m.kind(), &payload[..cut]);
                assert!(r.is_err(), "{m:?} cut at {cut} decoded as {r:?}");
            }
            payload.push(0);
            assert!(matches!(
                Message::decode(m.kind(), &payload),
                Err(WireError::TrailingBytes { .. })
            ));
        }
    }

    #[test]
    fn lying_counts_and_fields_are_refused() {
        // A host count of four billion in a 4-byte payload.
        let r = Message::decode(Kind::Hosts, &u32::MAX.to_be_bytes());
        assert_eq!(r, Err(WireError::Truncated { field: "hosts" }));
        // A string length past the end.
        let mut p = 0i32.to_be_bytes().to_vec();
        p.extend_from_slice(&1000u32.to_be_bytes());
        assert!(Message::decode(Kind::Error, &p).is_err());
        // Invalid UTF-8, bad bool, bad family, bad role.
        let mut p = 0i32.to_be_bytes().to_vec();
        p.extend_from_slice(&2u32.to_be_bytes());
        p.extend_from_slice(&[0xff, 0xfe]);
        assert!(matches!(
            Message::decode(Kind::Error, &p),
            Err(WireError::Invalid { .. })
        ));
        assert!(Message::decode(Kind::Ping, &[2]).is_err());
        assert!(Message::decode(Kind::Connect, &[9]).is_err());
        assert!(Message::decode(Kind::Join, &[5, 0, 0]).is_err());
        let p = vec![9u8, 4, 1, 2, 3, 4, 0, 1];
        assert!(Message::decode(Kind::Hello, &p).is_err());
        // A handshake message over the Noise limit.
        let mut p = 65536u32.to_be_bytes().to_vec();
        p.extend_from_slice(&[0; 65536]);
        assert!(matches!(
            Message::decode(Kind::Handshake, &p),
            Err(WireError::Invalid { field: "data", .. })
        ));
        // A pid count of four billion, and a SendD whose data length runs
        // past the payload: refused before anything is allocated.
        let mut p = vec![0u8];
        p.extend_from_slice(&u32::MAX.to_be_bytes());
        let r = Message::decode(Kind::Pids, &p);
        assert_eq!(r, Err(WireError::Truncated { field: "pids" }));
        let mut p = 5i32.to_be_bytes().to_vec();
        p.extend_from_slice(&u32::MAX.to_be_bytes());
        p.extend_from_slice(&[0; 8]);
        assert_eq!(
            Message::decode(Kind::SendD, &p),
            Err(WireError::Truncated { field: "data" })
        );
    }

    #[test]
    fn shm_data_from_borrowed_bytes_is_the_message_frame() {
        let (mut a, mut b) = (vec![1u8], vec![1u8]);
        encode_shm_data(9, 3, 4096, b"page", &mut a);
        let msg = Message::ShmData {
            unit: 3,
            offset: 4096,
            data: b"page".to_vec(),
        };
        encode_frame(9, &msg, &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn migrate_data_from_borrowed_bytes_is_the_message_frame() {
        let (mut a, mut b) = (vec![1u8], vec![1u8]);
        encode_migrate_data(7, b"state", &mut a);
        let msg = Message::MigrateData {
            data: b"state".to_vec(),
        };
        encode_frame(7, &msg, &mut b);
        assert_eq!(a, b);
        let payload = &a[1 + HEADER_LEN..];
        let raw = RawFrame {
            kind: Kind::MigrateData,
            request_id: 7,
            payload,
        };
        assert_eq!(raw.migrate_data(), Some(Ok(&b"state"[..])));
        let long = [payload, b"x"].concat();
        let raw = RawFrame {
            payload: &long,
            ..raw
        };
        assert!(matches!(
            raw.migrate_data(),
            Some(Err(WireError::TrailingBytes { extra: 1, .. }))
        ));
        let raw = RawFrame {
            kind: Kind::ShmData,
            ..raw
        };
        assert_eq!(raw.migrate_data(), None);
    }

    #[test]
    fn pid_record_minimum_size_is_exact() {
        let mut v = Vec::new();
        Writer(&mut v).pid_record(&pid_rec("10.0.0.1:1".parse().unwrap()));
        assert_eq!(v.len(), PID_RECORD_MIN);
    }

    fn arb_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, p)| SocketAddr::from((Ipv6Addr::from(ip), p))),
        ]
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        let host = (
            arb_addr(),
            any::<bool>(),
            any::<u64>(),
            any::<u64>(),
            any::<u16>(),
        )
            .prop_map(|(addr, up, last_heard_ms, joined_ms, version)| HostInfo {
                addr,
                up,
                last_heard_ms,
                joined_ms,
                version,
            });
        prop_oneof![
            (arb_addr(), any::<bool>()).prop_map(|(host, e)| {
                Message::Hello {
                    role: if e { Role::Employer } else { Role::Host },
                    host,
                }
            }),
            proptest::collection::vec(any::<u8>(), 0..256)
                .prop_map(|data| Message::Handshake { data }),
            ".*".prop_map(|reason| Message::Refused { reason }),
            arb_addr().prop_map(|front_end| Message::Join { front_end }),
            proptest::collection::vec(host, 0..8).prop_map(|hosts| Message::Hosts { hosts }),
            arb_addr().prop_map(|target| Message::Connect { target }),
            (any::<i32>(), ".*").prop_map(|(errno, message)| Message::Error { errno, message }),
            proptest::collection::vec(arb_pid_record(), 0..8)
                .prop_map(|pids| Message::Pids { pids, more: true }),
            arb_pid_record().prop_map(|rec| Message::PidInfo { rec }),
            (
                any::<i64>(),
                any::<i32>(),
                any::<u32>(),
                any::<u64>(),
                any::<i32>()
            )
                .prop_map(|(pid_d, pid, uid, starttime, mailbox)| {
                    Message::PidRegister {
                        pid_d,
                        pid,
                        uid,
                        starttime,
                        mailbox,
                    }
                }),
            (any::<i64>(), any::<i32>())
                .prop_map(|(pid_d, mailbox)| Message::Registered { pid_d, mailbox }),
            (any::<i64>(), any::<i32>())
                .prop_map(|(pid_d, pid)| Message::Unregister { pid_d, pid }),
            any::<i32>().prop_map(|mailbox| Message::Register { mailbox }),
            any::<i64>().prop_map(|pid_d| Message::PidLookup { pid_d }),
            any::<i64>().prop_map(|pid_d| Message::SenderPid { pid_d }),
            any::<u64>().prop_map(|nonce| Message::SemJoin { nonce }),
            (any::<i32>(), any::<u64>())
                .prop_map(|(pid, starttime)| Message::PidCheck { pid, starttime }),
            (any::<i32>(), any::<i32>(), any::<u32>(), any::<u64>()).prop_map(
                |(key, id, creator_uid, incarnation)| Message::KeyClaim {
                    kind: IpcKind::Msg,
                    key,
                    id,
                    creator_uid,
                    incarnation,
                }
            ),
            any::<i64>().prop_map(|after| Message::ListPids { after }),
            (any::<i64>(), any::<i32>(), ".{0,40}")
                .prop_map(|(pid_d, pid, name)| { Message::NameRegister { pid_d, pid, name } }),
            ".{0,40}".prop_map(|name| Message::NameLookup { name }),
            (
                proptest::collection::vec((".{0,20}", any::<i64>()), 0..5),
                any::<bool>()
            )
                .prop_map(|(names, more)| Message::Names { names, more }),
            (any::<i32>(), any::<u64>(), any::<i32>()).prop_map(|(pid, starttime, sig)| {
                Message::KillD {
                    pid,
                    starttime,
                    sig,
                }
            }),
            (
                any::<i32>(),
                proptest::collection::vec(any::<u8>(), 0..512),
                any::<i32>()
            )
                .prop_map(|(mailbox, data, flags)| Message::SendD {
                    mailbox,
                    data,
                    flags
                }),
        ]
    }

    fn arb_pid_record() -> impl Strategy<Value = PidRecord> {
        (
            any::<i64>(),
            arb_addr(),
            any::<i32>(),
            any::<u32>(),
            any::<u64>(),
            any::<i32>(),
            any::<u64>(),
        )
            .prop_map(
                |(pid_d, host, pid, uid, starttime, mailbox, since_ms)| PidRecord {
                    pid_d,
                    host,
                    pid,
                    uid,
                    starttime,
                    mailbox,
                    since_ms,
                },
            )
    }

    proptest! {
        #[test]
        fn arbitrary_messages_round_trip(m in arb_message(), id in any::<u64>()) {
            let f = frame(id, &m);
            prop_assert_eq!(decode_frame(&f, MAX), Ok(Some((f.len(), id, m))));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_frame(&bytes, MAX);
            for kind in Kind::ALL {
                let _ = Message::decode(*kind, &bytes);
            }
        }

        #[test]
        fn corrupted_frames_never_panic(m in arb_message(), pos in any::<usize>(), byte in any::<u8>()) {
            let mut f = frame(3, &m);
            let i = pos % f.len();
            f[i] = byte;
            let _ = decode_frame(&f, MAX);
        }
    }
}
