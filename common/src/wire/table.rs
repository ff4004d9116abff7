//! The protocol table: every message, its type number and its fields in
//! wire order, declared once; `messages!` makes the `Kind` and `Message`
//! enums, `Message::kind`, the encoder and the decoder from it.
//!
//! The groups say which connection carries their messages. Every field
//! uses its type's encoding (`fields.rs`) except where it names a codec
//! after `as`: a bound (`Max<N>`, refused past `N` before allocation),
//! `ListKeys`'s fixed five-byte starting point (`KeyAfter`) or, in
//! `types.rs`, a unit run's writer (`MaxIsNone`: `u16::MAX` for none). The only
//! hand-written encodings are `SemArg`'s (a tagged enum, in `fields.rs`)
//! and the borrowed `ShmData`/`MigrateData` frames of `mod.rs`, which
//! write the same bytes as the table (tested).
//!
//! Kind numbers are part of the wire format: never change or reuse one.

use super::fields::{KeyAfter, Max};
use super::types::*;
use super::{WireError, MAX_GROUPS, MAX_HANDSHAKE};
use crate::metrics::MAX_PAIRS;
use std::net::SocketAddr;

messages! {
    // Answers and probes, on every connection: a request's outcome (`Error`, `Done`),
    // liveness (`Ping`, `Pong`), and the caller's interruption of a blocked call.

    /// Liveness and round-trip probe, answered by whoever receives it.
    Ping = 30,
    Pong = 31,
    /// A failed request: an `errno` value for the caller and a message.
    Error = 40 {
        errno: i32,
        message: String,
    },
    /// A request succeeded with this value (a call's return value).
    Done = 41 {
        value: i64,
    },
    /// The application was interrupted by a signal while its remote call
    /// blocked: stop the call, reply `EINTR` (or the result, if it came
    /// first).
    Cancel = 42,

    // Handshake: the first messages of every TCP connection between hosts (see
    // `crate::auth`), before the secure channel is open.

    /// Who opens a daemon-to-daemon connection and from which front_end
    /// address. Never sent as a frame of its own: it is the payload of the
    /// first handshake message, encrypted under the cluster secret.
    Hello = 1 {
        role: Role,
        host: SocketAddr,
    },
    /// One message of the Noise handshake that opens every connection
    /// between hosts (see `crate::secure`), at most [`MAX_HANDSHAKE`]
    /// bytes.
    Handshake = 2 {
        data: Vec<u8> as Max<MAX_HANDSHAKE>,
    },
    /// The connection is refused; the reason is for the peer's log.
    Refused = 5 {
        reason: String,
    },

    // Host link: a host's dipcd and the referee (TCP, secure channel); the key
    // requests also travel from an application or a worker to its dipcd (Unix
    // socket), which relays them; `Connect`/`SessionReady` between an
    // application, its dipcd and the employer.

    /// A host's back_end announces itself to the referee.
    Join = 10 {
        front_end: SocketAddr,
    },
    Joined = 11,
    Heartbeat = 12,
    HeartbeatAck = 13,
    /// Look a distributed key up (create it with `IPC_CREAT`). Sent by an
    /// application to its dipcd, relayed to the referee.
    KeyGet = 50 {
        kind: IpcKind,
        key: i32,
        flags: i32,
    },
    /// Where a key lives. `id == -1` tells the asker that it won the
    /// creation and must create the structure, then send `KeyCommit` or
    /// `KeyAbort`. `local_id` is the id of this host's placeholder for a
    /// structure owned elsewhere (dipcd fills it in), else equal to `id`.
    KeyOwner = 51 {
        owner: SocketAddr,
        id: i32,
        local_id: i32,
        /// What the id was resolved from (`incarnation` is 0 while the
        /// key is being created).
        origin: Origin,
    },
    /// The creator made the structure: record its id. `incarnation` is
    /// the owner's: the creator's dipcd fills it in (as `creator_uid`).
    KeyCommit = 52 {
        kind: IpcKind,
        key: i32,
        id: i32,
        creator_uid: u32,
        incarnation: u64,
    },
    /// The creator failed to make the structure: free the key.
    KeyAbort = 53 {
        kind: IpcKind,
        key: i32,
    },
    /// The structure was removed (`IPC_RMID`): free the key. The referee
    /// takes it only from the key's owner host, whose dipcd relays it only
    /// once its kernel no longer has `id` under `key`, or at once if
    /// `incarnation` is not its own (the structure lived in an IPC
    /// namespace the host no longer has). 0 stands for the host's own.
    KeyRemove = 54 {
        kind: IpcKind,
        key: i32,
        id: i32,
        incarnation: u64,
    },
    /// Pushed by the referee to every host when a key is freed, so hosts
    /// drop their placeholders.
    KeyGone = 55 {
        kind: IpcKind,
        key: i32,
    },
    /// A worker asks its dipcd what the referee has for a key (relayed as
    /// a `KeyGet` without flags; the reply is the referee's `KeyOwner`, or
    /// `ENOENT`), to check that an id it was given still names that key's
    /// structure. No placeholder is made.
    KeyCheck = 64 {
        kind: IpcKind,
        key: i32,
    },
    /// A host that (re)joined the referee states a key it owns: `id` in
    /// its IPC namespace `incarnation`, still under `key` in its kernel.
    /// A restarted referee rebuilds its key table from these; the reply
    /// is `Done`, or an error if the key is another's or was freed while
    /// the host was away (the host then stops claiming it).
    KeyClaim = 142 {
        kind: IpcKind,
        key: i32,
        id: i32,
        creator_uid: u32,
        incarnation: u64,
    },
    /// The library asks its dipcd for the local placeholder of a key owned
    /// elsewhere, once the owner's worker vouched that this caller may use
    /// it (`KeyGet` makes none). The reply is `KeyOwner` with `local_id`.
    Placeholder = 141 {
        kind: IpcKind,
        key: i32,
        owner: SocketAddr,
        id: i32,
        origin: Origin,
        vouch: [u8; 32],
    },
    /// Is this local id a placeholder for a structure owned elsewhere?
    Resolve = 59 {
        kind: IpcKind,
        local_id: i32,
    },
    /// An application asks its dipcd for a connection to the worker on
    /// `target`, opened and authenticated on its behalf. `target` must be
    /// an up host of the cluster (the referee's table). The reply is
    /// `SessionReady`, with the connected socket passed with SCM_RIGHTS.
    Connect = 61 {
        target: SocketAddr,
    },
    /// The employer's answer to `Connect`: the session is open, its
    /// credentials already stated to the worker inside the secure channel;
    /// `pid_d` is the one the worker types the session's sends with (0:
    /// none), `keys` the channel's state, so that the application carries
    /// on the channel itself (see `crate::secure`).
    SessionReady = 63 {
        pid_d: i64,
        keys: SessionKeys,
    },
    /// From a host's dipcd to the referee with each heartbeat (request id
    /// 0, no reply): the CPU milliseconds its registered processes used
    /// in the last `window_ms`, and its migratable processes (at most
    /// [`MAX_LOAD_PROCS`]).
    LoadReport = 191 {
        window_ms: u32,
        cpu_ms: u32,
        procs: Vec<LoadProc> as Max<MAX_LOAD_PROCS>,
    },

    // Session: a caller (application or employer) and the worker on the
    // structure's owner host (TCP, secure channel), and the workers of one host
    // among themselves (`SemHandover`, Unix socket).

    /// An employer tells the worker whose credentials to act with.
    Session = 60 {
        pid: i32,
        uid: u32,
        gid: u32,
        groups: Vec<u32> as Max<MAX_GROUPS>,
    },
    /// Sent by the employer right after `Session`: the pid_d the caller
    /// had at its dipcd when the session opened (0 if none). The worker
    /// types every `SendD` of the session with it, so a sender cannot
    /// claim another's pid_d.
    SenderPid = 100 {
        pid_d: i64,
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
    IpcGet = 62 {
        kind: IpcKind,
        key: i32,
        id: i32,
        /// The owner's incarnation as the referee has it for the key.
        incarnation: u64,
        flags: i32,
        size: u64,
    },
    /// A worker's answer to a successful `IpcGet`: the owner's id, and
    /// its proof ([`crate::auth::Vouch`]) that the caller may use it, for
    /// the caller's dipcd to make the local placeholder against.
    Vouched = 140 {
        id: i32,
        vouch: [u8; 32],
    },
    // The IPC calls (`MsgSnd` to `SemStat`, and `IpcStatAny`) go to
    // the worker on the structure's owner; `id` is the owner's id and
    // `origin` what the caller's get resolved it from: the worker refuses
    // a call whose id no longer names that structure (`EIDRM`).
    MsgSnd = 70 {
        id: i32,
        origin: Origin,
        mtype: i64,
        text: Vec<u8>,
        flags: i32,
    },
    MsgRcv = 71 {
        id: i32,
        origin: Origin,
        size: u64,
        mtype: i64,
        flags: i32,
    },
    MsgData = 72 {
        mtype: i64,
        text: Vec<u8>,
    },
    /// The caller has the `MsgData` reply of its call with this frame's
    /// id. Never answered. Until it comes (or the caller's next request),
    /// the worker holds the message it took and puts it back in the queue
    /// if the session ends first.
    Received = 104,
    MsgCtl = 73 {
        id: i32,
        origin: Origin,
        cmd: i32,
        set: Option<IpcSet>,
    },
    MsqStat = 74 {
        info: MsqInfo,
    },
    /// `semop`, or `semtimedop` with a time-out in nanoseconds.
    SemOp = 80 {
        id: i32,
        origin: Origin,
        ops: Vec<SemBuf>,
        timeout_ns: Option<u64>,
    },
    SemCtl = 81 {
        id: i32,
        origin: Origin,
        num: i32,
        cmd: i32,
        arg: SemArg,
    },
    /// The reply to `GETALL`.
    SemVals = 82 {
        vals: Vec<u16>,
    },
    SemStat = 83 {
        info: SemInfo,
    },
    /// An application asks the worker of its session to serve the session
    /// in its `SEM_UNDO` context on this host, named by `nonce` (random,
    /// drawn once per process): every session of one process that joined
    /// is served by one worker process, so the owner's kernel keeps one
    /// undo list for all of them. The reply is `Done { value: context }`,
    /// a number that changes whenever the context is new (see the worker's
    /// `undo` module).
    SemJoin = 102 {
        nonce: u64,
    },
    /// A worker hands the session it serves to the worker of the session's
    /// undo context (over a local Unix socket, with the socket itself):
    /// the frame's request id is that of the `SemJoin` to answer. `uid` is
    /// the uid the caller's host stated in `Session`, `sender` its pid_d.
    SemHandover = 103 {
        uid: u32,
        sender: i64,
        keys: Box<SessionKeys>,
    },
    /// The figures `ipcs` shows for structure `id` of `kind`, read on its
    /// owner without a permission check (as `ipcs` and `/proc/sysvipc`
    /// read them for anyone on one host); reply `MsqStat`, `SemStat` or
    /// `ShmStat` (whose `nattch` counts attaches on every host).
    IpcStatAny = 170 {
        kind: IpcKind,
        id: i32,
        origin: Origin,
    },
    /// `kill_d` on a session with the worker on the target's host: signal
    /// the process `pid` if its start time is still `starttime` and it is
    /// registered there (the worker asks its dipcd, `PidCheck`).
    KillD = 98 {
        pid: i32,
        starttime: u64,
        sig: i32,
    },
    /// `dipc_send` on a session with the worker on the destination's host:
    /// put `data` in the mailbox queue, typed with the session's pid_d
    /// (see `SenderPid`).
    SendD = 99 {
        mailbox: i32,
        data: Vec<u8>,
        flags: i32,
    },
    /// On a session: make this connection a call link to the registered
    /// process `pid_d` of the worker's host. The worker passes the
    /// connection, with its channel's state, to that process and ends; the
    /// process's first frame on it is `Done` (request id 0). An `Error`
    /// from the worker instead leaves the session as it was.
    CallOpen = 146 {
        pid_d: i64,
    },
    /// To the worker on the target host of a move: start the moving
    /// program there as the session's user, from `cwd`, with stdin from
    /// `/dev/null` and stdout and stderr appended to the files `stdout`
    /// and `stderr` (empty: `/dev/null`). The reply is `Done { value: pid }`
    /// once it runs, or the errno its exec failed with.
    MigrateSpawn = 153 {
        /// The moving process and its move token: the worker has the
        /// referee confirm them (`MoveCheck`) before it starts anything,
        /// so a session can start a program only for a move its own
        /// registered process began.
        pid_d: i64,
        token: u64,
        program: Box<Program>,
    },
    /// The next bytes of what the started program receives (its state and
    /// the messages of its mailbox), opaque to the worker.
    MigrateData = 154 {
        data: Vec<u8>,
    },
    /// Everything is sent: hand it to the started program and answer once
    /// the program took its pid_d over (`go`); or stop the program.
    MigrateCommit = 155 {
        go: bool,
    },

    // Shared memory. `ShmOpen` goes from a process to its host's dipcd,
    // which makes sure the segment's manager runs; the rest is the protocol
    // between a process's shm agent and the manager on the segment's owner
    // host (see the `shm` crate): a Unix socket, or a caller's TCP session
    // handed over by the worker.

    ShmOpen = 110 {
        id: i32,
    },
    /// Attach to the segment `id` (the owner's id); the reply is
    /// `ShmAttached` or `Error`. `handover` is filled in by the worker that
    /// passes a remote caller's connection to the manager: the caller's
    /// host and the connection's secure channel state (`None` from a
    /// process on the owner host).
    ShmAttach = 111 {
        id: i32,
        origin: Origin,
        readonly: bool,
        // Boxed: the largest field of any message, and rare.
        handover: Option<(SocketAddr, Box<SessionKeys>)>,
    },
    /// `unit` is the size of the unit of coherence: a page, or the whole
    /// segment (rounded up to pages) in segment mode.
    ShmAttached = 112 {
        size: u64,
        unit: u64,
    },
    /// The agent asks for a right on a unit.
    ShmFault = 113 {
        unit: u32,
        write: bool,
    },
    /// Part of a unit's content, before the `ShmGrant` (manager to agent)
    /// or `ShmRevoked` (agent to manager) it belongs to.
    ShmData = 114 {
        unit: u32,
        offset: u64,
        data: Vec<u8>,
    },
    ShmGrant = 115 {
        unit: u32,
        write: bool,
    },
    /// The manager takes a right back: down to read (`keep_read`) or to
    /// nothing; `want_data` asks for the unit's content (the agent held
    /// it for write).
    ShmRevoke = 116 {
        unit: u32,
        keep_read: bool,
        want_data: bool,
    },
    ShmRevoked = 117 {
        unit: u32,
    },
    /// The unit's content is lost (its writer's host died).
    ShmLost = 118 {
        unit: u32,
    },
    /// The agent leaves (after giving back what it wrote); reply `Done`.
    ShmDetach = 119,
    ShmCtl = 120 {
        id: i32,
        origin: Origin,
        cmd: i32,
        set: Option<IpcSet>,
    },
    ShmStat = 121 {
        info: ShmInfo,
    },
    /// Who holds which units of segment `id`; reply `ShmState`.
    ShmQuery = 122 {
        id: i32,
        origin: Origin,
    },
    ShmState = 123 {
        nattch: u64,
        unit: u64,
        hosts: Vec<SocketAddr>,
        runs: Vec<UnitRun>,
    },

    // Process ids: a process (or a worker) and its dipcd (Unix socket),
    // relayed by dipcd to the referee; the call endpoints (`CallHello`, `CallRequest`,
    // `CallReply`) between a caller and the called process itself.

    /// An application joins the cluster's process table (`regist`), with
    /// the private queue it made as its mailbox. dipcd takes the pid and
    /// uid from SO_PEERCRED and relays a `PidRegister`.
    Register = 90 {
        mailbox: i32,
    },
    /// dipcd asks the referee to record a process of its host. `pid_d == 0`
    /// asks for a new pid_d; another value restores a registration after
    /// the link to the referee was re-opened.
    PidRegister = 91 {
        pid_d: i64,
        pid: i32,
        uid: u32,
        starttime: u64,
        mailbox: i32,
    },
    /// The reply to `Register` and `PidRegister`.
    Registered = 92 {
        pid_d: i64,
        mailbox: i32,
    },
    /// Leave the process table (`uregist`). From an application `pid` is
    /// ignored: dipcd fills in the caller's, and the referee removes the
    /// record only if pid_d, host and pid all match.
    Unregister = 93 {
        pid_d: i64,
        pid: i32,
    },
    /// Where a pid_d runs; the reply is `PidInfo`, or `ESRCH`.
    PidLookup = 94 {
        pid_d: i64,
    },
    PidInfo = 95 {
        rec: PidRecord,
    },
    /// A worker asks its host's dipcd whether the process `{pid,
    /// starttime}` is registered (`kill_d` reaches registered processes
    /// only). The reply is `Done { value: pid_d }`, or `ESRCH`.
    PidCheck = 101 {
        pid: i32,
        starttime: u64,
    },
    /// From a registered process to its dipcd: is `pid` one of this
    /// host's workers? `Done`, or `EPERM`.
    WorkerCheck = 180 {
        pid: i32,
    },
    /// From a registered process to its dipcd: it has declared itself
    /// migratable (`migrate::migratable`), so the balancer may move it.
    /// dipcd takes the pid from SO_PEERCRED; the reply is `Done`, or
    /// `ENOTCONN` if the process is not registered.
    Migratable = 190,
    /// A registered process takes a cluster-wide name (`dipc_name_register`).
    /// From an application `pid` is ignored: dipcd fills in the caller's,
    /// and the referee takes the name only if pid_d, host and pid match
    /// (`EEXIST` if another process holds it). The reply is `Done`.
    NameRegister = 130 {
        pid_d: i64,
        pid: i32,
        name: String,
    },
    /// Gives a name back; the same checks as `NameRegister` (`ENOENT` for a
    /// name nobody holds, `EPERM` for another process's).
    NameRelease = 131 {
        pid_d: i64,
        pid: i32,
        name: String,
    },
    /// Who holds a name: `PidInfo` of its process, or `ENOENT`.
    NameLookup = 132 {
        name: String,
    },
    /// Process migration (libdipc's `migrate`): a registered process asks
    /// for a one-time token that authorises moving its pid_d. From an
    /// application `pid` is ignored (dipcd fills in the caller's, and the
    /// referee checks the triple as for `Unregister`). The reply is
    /// `Done { value }`, the token's 64 bits.
    MoveToken = 150 {
        pid_d: i64,
        pid: i32,
    },
    /// Gives an unused move token back: the move failed before the
    /// hand-over. Same fields and checks as `MoveToken`; reply `Done`.
    MoveAbort = 151 {
        pid_d: i64,
        pid: i32,
    },
    /// A process takes `pid_d` over with the token its registration was
    /// given: the referee re-points the record (keeping its names and
    /// uid, which must match) at this host, `pid`, `starttime` and
    /// `mailbox`. From an application `pid`, `uid` and `starttime` are
    /// ignored (dipcd fills in the caller's). The reply is `Registered`.
    MoveIn = 152 {
        pid_d: i64,
        pid: i32,
        uid: u32,
        starttime: u64,
        mailbox: i32,
        token: u64,
    },
    /// A worker asks, through its dipcd, whether `token` is the pending
    /// move token of `pid_d` and the record's uid is `uid` (dipcd states
    /// the asker's uid from SO_PEERCRED: the worker runs as the caller).
    /// The reply is `Done`, or `EPERM`/`ESRCH`.
    MoveCheck = 157 {
        pid_d: i64,
        token: u64,
        uid: u32,
    },
    /// A registered process tells its dipcd where it takes calls
    /// (`dprocs`): the abstract Unix socket name it listens on. dipcd
    /// takes it for the registration of the connecting process (its pid
    /// from SO_PEERCRED); the reply is `Done`.
    CallEndpoint = 143 {
        name: Vec<u8>,
    },
    /// Where the registered process `pid_d` of this host takes calls:
    /// `CallEndpointAt`, or `ESRCH` (no such registration here) or
    /// `ECONNREFUSED` (it has no endpoint).
    CallRoute = 144 {
        pid_d: i64,
    },
    /// The answer to `CallRoute`: the process (`pid`, `starttime`) that
    /// must be listening on `name`.
    CallEndpointAt = 145 {
        pid: i32,
        starttime: u64,
        name: Vec<u8>,
    },
    /// The first frame on a new connection to a process's call endpoint:
    /// the caller's pid_d. From a worker it carries the caller's session
    /// (the TCP socket rides with the frame, SCM_RIGHTS) and the channel's
    /// `keys`; from a process of the same host, none.
    CallHello = 147 {
        caller: i64,
        keys: Option<Box<SessionKeys>>,
    },
    /// A call of procedure `proc_name` on a call link; the reply is
    /// `CallReply`, with the same request id.
    CallRequest = 148 {
        proc_name: String,
        max_out: u32,
        input: Vec<u8>,
    },
    /// A procedure's answer: `status` 0 and its output, or an errno.
    CallReply = 149 {
        status: i32,
        output: Vec<u8>,
    },

    // Admin: `dipcref` and its dipcd (Unix socket), relayed to the referee; the
    // referee pushes `MoveAsk` to the process's host.

    /// Administrative: ask the referee for its host table.
    ListHosts = 20,
    Hosts = 21 {
        hosts: Vec<HostInfo>,
    },
    /// One page of the key table: the keys after `after` in (kind, key)
    /// order (`None`: from the first). A table of any length reaches the
    /// asker a page at a time, each well inside a frame.
    ListKeys = 56 {
        after: Option<(IpcKind, i32)> as KeyAfter,
    },
    /// A page of keys; `more` if keys follow the last one.
    Keys = 57 {
        more: bool,
        keys: Vec<KeyInfo>,
    },
    /// Administrative: forget a (stale) key.
    DropKey = 58 {
        kind: IpcKind,
        key: i32,
    },
    /// One page of the registrations: the pid_d above `after` in order
    /// (0: from the first).
    ListPids = 96 {
        after: i64,
    },
    /// A page of registrations; `more` if some follow the last one.
    Pids = 97 {
        more: bool,
        pids: Vec<PidRecord>,
    },
    /// One page of the names, those after `after` in order ("": from the
    /// first).
    ListNames = 133 {
        after: String,
    },
    /// A page of names with the pid_d holding each; `more` if some follow.
    Names = 134 {
        more: bool,
        names: Vec<(String, i64)>,
    },
    /// Asks the referee for `Loads` (`dipcref load`; any user, through
    /// dipcd).
    ListLoad = 192,
    /// Each host's load over the balancer's last window, with its
    /// migratable processes, and the balancer's recent moves (oldest
    /// first).
    Loads = 193 {
        hosts: Vec<HostLoad>,
        moves: Vec<BalanceMove> as Max<MAX_BALANCE_MOVES>,
    },
    /// What this host counts (see `crate::metrics`): asked of dipcd by a
    /// local process, or of a worker, which asks its dipcd. The answer is
    /// `Stats`.
    StatsAsk = 195,
    /// A host's counters as named pairs (`Metrics::to_pairs`), at most
    /// `metrics::MAX_PAIRS`.
    Stats = 196 {
        pairs: Vec<(String, u64)> as Max<MAX_PAIRS>,
    },
    /// From a worker or a shm manager to its dipcd: what it counted since
    /// its last report (`Done`, or `EPERM` from any other process).
    StatsReport = 197 {
        pairs: Vec<(String, u64)> as Max<MAX_PAIRS>,
    },
    /// From any local process to its dipcd: the remote calls it made (to
    /// other hosts' workers, past dipcd) since its last report, as
    /// `Metrics::to_pairs` of its `made` counts; dipcd adds those and
    /// nothing else (`Done`).
    CallsMade = 198 {
        pairs: Vec<(String, u64)> as Max<MAX_PAIRS>,
    },
    /// An administrator (or the process's own user) asks that the process
    /// `pid_d` move to the host `target` at its next migration point
    /// (`dipcref migrate`). From `dipcref`, `uid` and `admin` are ignored:
    /// dipcd states the asker's uid and whether it is root or in
    /// `admin_group`; the referee checks them against the record (`EPERM`)
    /// and pushes the request (request id 0) to the process's host, whose
    /// dipcd posts it where the process looks at its migration points.
    MoveAsk = 156 {
        pid_d: i64,
        target: SocketAddr,
        uid: u32,
        admin: bool,
    },
}
