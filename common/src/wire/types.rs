//! The structs and enums that travel inside messages, each declared with
//! its encoding (see `record!`): fields go on the wire in the order
//! written here.

use super::fields::{Max, MaxIsNone};
use super::KEY_LEN;
use std::fmt;
use std::net::SocketAddr;

record! {
    /// The key material of one established secure channel (see
    /// `crate::secure`): each direction's AES-256-GCM key and the counter of
    /// the next frame. It travels only over local Unix sockets, when a
    /// connection is handed from one local process to another with the
    /// socket itself (employer to application, worker to shm manager); its
    /// `Debug` never shows the keys.
    #[derive(Clone, PartialEq, Eq)]
    pub struct SessionKeys("keys") {
        pub tx_key: [u8; KEY_LEN],
        pub tx_n: u64,
        pub rx_key: [u8; KEY_LEN],
        pub rx_n: u64,
    }
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

/// Who opened a daemon-to-daemon connection, stated in [`Message::Hello`](super::Message::Hello).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A host's back_end joining the referee.
    Host = 1,
    /// An employer bringing work to another host's front_end.
    Employer = 2,
}
record! {

    /// A host as the referee knows it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct HostInfo("hosts") {
        /// The host's front_end address.
        pub addr: SocketAddr,
        pub up: bool,
        /// Milliseconds since the referee last heard from the host.
        pub last_heard_ms: u64,
        /// Milliseconds since the host (re)joined.
        pub joined_ms: u64,
        pub version: u16,
    }
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
record! {

    /// A distributed key as the referee records it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct KeyInfo("keys") {
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
}
record! {

    /// What a caller's get resolved a distributed structure's id from: the
    /// key, and the *incarnation* of the owner host's IPC namespace (a random
    /// token that the owner's dipcd keeps while that namespace lives, see
    /// `crate::incarnation`). Every call on a structure owned elsewhere
    /// carries it beside the owner's id, so that the worker can refuse a stale
    /// id (`EIDRM`): after the owner's reboot, or once the key has been freed
    /// or names another structure, the same id may name something else.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
    pub struct Origin("origin") {
        pub key: i32,
        pub incarnation: u64,
    }
}
record! {

    /// Ownership and permissions of a System V structure (`struct ipc_perm`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct IpcPerm("perm") {
        pub key: i32,
        pub uid: u32,
        pub gid: u32,
        pub cuid: u32,
        pub cgid: u32,
        pub mode: u32,
        pub seq: u32,
    }
}
record! {

    /// A message queue's `struct msqid_ds`, as read on its owner host.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct MsqInfo("info") {
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
}
record! {

    /// One `struct sembuf`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct SemBuf("ops") {
        pub num: u16,
        pub op: i16,
        pub flg: i16,
    }
}
record! {

    /// A semaphore set's `struct semid_ds`, as read on its owner host.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct SemInfo("info") {
        pub perm: IpcPerm,
        pub otime: i64,
        pub ctime: i64,
        pub nsems: u64,
    }
}
record! {

    /// A shared memory segment's `struct shmid_ds`, as read on its owner host
    /// (with `nattch` counting attaches on every host).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct ShmInfo("info") {
        pub perm: IpcPerm,
        pub segsz: u64,
        pub atime: i64,
        pub dtime: i64,
        pub ctime: i64,
        pub cpid: i32,
        pub lpid: i32,
        pub nattch: u64,
    }
}
record! {

    /// A run of consecutive units (pages, or the whole segment) of a
    /// distributed segment in the same state. Hosts are indexes into the
    /// `hosts` of [`Message::ShmState`](super::Message::ShmState).
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct UnitRun("runs") {
        pub first: u32,
        pub count: u32,
        /// The host that may write these units, if any.
        pub writer: Option<u16> as MaxIsNone,
        /// The only valid copy was on a host that died: touching these units
        /// raises SIGBUS.
        pub lost: bool,
        /// The hosts holding read copies.
        pub readers: Vec<u16>,
    }
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
record! {

    /// The fields `IPC_SET` may change.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct IpcSet("set") {
        pub uid: u32,
        pub gid: u32,
        pub mode: u32,
        /// `msg_qbytes` for a queue; ignored for other kinds.
        pub qbytes: u64,
    }
}

/// What a program started for a move writes on its answer pipe once it
/// waits for the state (its configuration read, its connection to dipcd
/// open): the worker lets the old process freeze only then (or after a
/// short wait), so the program's start is not part of the frozen time.
/// The pipe then carries the take-over's errno (0: taken over), never this
/// value.
pub const TAKEOVER_READY: i32 = i32::MIN;
record! {

    /// The program a move starts on its target host (see `MigrateSpawn`):
    /// paths, arguments and environment as the kernel takes them (bytes).
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct Program("program") {
        pub exe: Vec<u8>,
        pub argv: Vec<Vec<u8>>,
        pub env: Vec<Vec<u8>>,
        pub cwd: Vec<u8>,
        /// The files its standard output and error are appended to (empty:
        /// `/dev/null`).
        pub stdout: Vec<u8>,
        pub stderr: Vec<u8>,
    }
}
record! {

    /// A registered process as the referee records it (see `PidRegister`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct PidRecord("pid") {
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
}

/// The most processes one `LoadReport` (and one host of `Loads`) lists;
/// a host with more reports the busiest ones.
pub const MAX_LOAD_PROCS: usize = 256;
/// The most moves `Loads` lists (the balancer keeps no more).
pub const MAX_BALANCE_MOVES: usize = 64;
/// The most bytes of a process name in a load report (a dipc name is cut
/// there).
pub const MAX_LOAD_NAME: usize = 64;
record! {

    /// A migratable process in a load report (see `LoadReport`, `Loads`).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct LoadProc("proc") {
        pub pid_d: i64,
        pub pid: i32,
        /// Its first dipc name, else its command name (`/proc/PID/comm`).
        pub name: String as Max<MAX_LOAD_NAME>,
        /// In `LoadReport`: CPU milliseconds it used in the report's window;
        /// in `Loads`: its CPU use over the balancer's last window, in
        /// thousandths of a CPU.
        pub cpu: u32,
        /// How long it has run on this host (its age: a process that moved in
        /// is a new process here).
        pub stay_ms: u64,
    }
}
record! {

    /// One host's load as the referee last measured it (`Loads`).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct HostLoad("hosts") {
        pub host: SocketAddr,
        /// CPU used by the host's registered processes over the window, in
        /// thousandths of a CPU.
        pub load: u32,
        /// The window's length; 0 if the host sent no report in it.
        pub window_ms: u32,
        pub procs: Vec<LoadProc> as Max<MAX_LOAD_PROCS>,
    }
}
record! {

    /// A move the balancer asked for.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct BalanceMove("moves") {
        /// When it was asked, milliseconds since the Unix epoch.
        pub at_ms: u64,
        pub pid_d: i64,
        pub from: SocketAddr,
        pub to: SocketAddr,
        /// 0 asked (not seen done yet), 1 done, 2 failed (not seen done in time).
        pub outcome: u8,
    }
}
