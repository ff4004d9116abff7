//! What a handler and the reactor say to each other about connections:
//! how a listener's connections are bounded ([`Options`]), who is at the
//! other end ([`Peer`]), why a connection ended ([`Gone`]), and the
//! [`Event`]s a handler is given.

use super::*;

/// How the connections accepted on one listener are framed and bounded.
#[derive(Debug, Clone)]
pub struct Options {
    /// The largest frame a peer may send.
    pub max_frame: u32,
    /// See [`Framed::pause_reading_at`].
    pub pause_at: Option<usize>,
    /// See [`Framed::close_writing_at`].
    pub close_at: Option<usize>,
    /// Drop a peer that began a frame and has not finished it after this
    /// long (see [`Framed::partial_since`]).
    pub stall: Option<Duration>,
    /// TCP: no Nagle delay and keep-alives that notice a peer dead after
    /// about this long (see [`tune_tcp`]).
    pub dead_after: Option<Duration>,
    /// Unix: take the descriptors a peer passes along with its bytes
    /// (SCM_RIGHTS); they come with the next [`Event::Frame`]. Without
    /// this the kernel closes them.
    pub pass_fds: bool,
}

impl Options {
    /// Frames up to `max_frame`, no other bound.
    pub fn new(max_frame: u32) -> Options {
        Options {
            max_frame,
            pause_at: None,
            close_at: None,
            stall: None,
            dead_after: None,
            pass_fds: false,
        }
    }

    /// A server's bounds (see [`Framed::server`]).
    pub fn server(max_frame: u32, records: usize) -> Options {
        let probe = Framed::new(io::Cursor::new(Vec::new()), max_frame);
        Options {
            pause_at: Some(crate::channel::SERVER_PAUSE),
            close_at: Some(probe.max_record() * records),
            ..Options::new(max_frame)
        }
    }
}

/// A listening socket.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Who connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// From this address (IPv4-mapped addresses made IPv4).
    Tcp(SocketAddr),
    /// A local process, with its credentials as of its `connect`
    /// (SO_PEERCRED, SO_PEERGROUPS), or why they could not be had.
    Unix(Result<Creds, String>),
}

/// A local peer's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    pub cred: PeerCred,
    pub groups: Vec<u32>,
}

/// Why a connection is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gone {
    /// The peer closed it.
    Peer,
    /// The handler closed it.
    Local,
    /// Reading or writing failed (a reset, a peer that reads nothing of
    /// what waits for it).
    Io(String),
    /// The peer sent something that is not a frame of ours.
    Protocol(String),
    /// The peer began a frame and did not finish it in time.
    Stalled,
}

/// What happened, for the handler.
#[derive(Debug)]
pub enum Event {
    Accepted {
        conn: ConnId,
        listener: ListenerId,
        peer: Peer,
    },
    /// A whole frame; `fds` are descriptors the peer passed with its bytes
    /// (only on a listener with [`Options::pass_fds`]).
    Frame {
        conn: ConnId,
        id: u64,
        msg: Message,
        fds: Vec<OwnedFd>,
    },
    /// A connection opened with [`Out::connect`] is established: frames
    /// queued for it before are written from now on. One that fails ends
    /// with [`Event::Closed`] instead.
    Connected { conn: ConnId },
    /// The connection's last event (see the module docs).
    Closed { conn: ConnId, why: Gone },
    /// A descriptor watched with [`Watch::watch`] under `key` is ready (as
    /// epoll says, edge-triggered: the handler reads or writes it until it
    /// would block).
    Ready { key: u64 },
    /// A signal other than SIGCHLD (see [`Reactor::watch_signals`]).
    Signal(Signal),
    /// A child exited (reaped on SIGCHLD).
    Child { pid: i32, status: WaitStatus },
    /// Delivered after every wake-up of the loop, and at
    /// [`Handler::wake_at`] at the latest: the handler checks its own
    /// deadlines against `now`.
    Tick,
}

impl Event {
    /// A frame from `conn` that passed no descriptors (as a unit test
    /// plays a peer).
    pub fn frame(conn: ConnId, id: u64, msg: Message) -> Event {
        Event::Frame {
            conn,
            id,
            msg,
            fds: Vec::new(),
        }
    }
}
