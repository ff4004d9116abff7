//! The front_end: the one process that owns this host's well-known TCP
//! port (`host.port` in dipc.conf).
//!
//! It accepts connections from other hosts, refuses at once those whose
//! source address `cluster.allowed_hosts` does not allow, and forks a
//! worker (see the `dipc-worker` crate) for each other one. The worker
//! authenticates the peer and serves the connection; the front_end only
//! accepts, forks and reaps, so a slow request never delays another.

use dipc_common::auth::Secret;
use dipc_common::config::Config;
use dipc_common::net::tune_tcp;
use dipc_common::sys;
use log::{debug, error, info, warn};
use mio::net::TcpListener;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use std::collections::HashSet;
use std::io;
use std::os::fd::AsRawFd;

const SIGNALS: Token = Token(0);
const LISTENER: Token = Token(1);
/// Workers alive at once; connections beyond are refused until some exit.
pub const MAX_WORKERS: usize = 1024;

/// Runs the front_end until SIGTERM or SIGINT; returns the exit code.
pub fn run(config: &Config, secret: &Secret) -> i32 {
    match serve(config, secret) {
        Ok(()) => 0,
        Err(e) => {
            error!("front_end: {e}");
            1
        }
    }
}

fn serve(config: &Config, secret: &Secret) -> io::Result<()> {
    let mut signals = sys::signal_fd()?;
    let addr = config.front_end_addr();
    let mut listener = TcpListener::bind(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    let mut poll = Poll::new()?;
    poll.registry().register(
        &mut SourceFd(&signals.as_raw_fd()),
        SIGNALS,
        Interest::READABLE,
    )?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    info!("front_end listening on {addr}");
    let mut workers: HashSet<i32> = HashSet::new();
    let mut events = Events::with_capacity(64);
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            if ev.token() == SIGNALS {
                for sig in sys::read_signals(&mut signals) {
                    match sig {
                        Signal::SIGTERM | Signal::SIGINT => {
                            info!("front_end: {sig} received, exiting");
                            // Workers get SIGTERM from the kernel as we exit
                            // (their parent-death signal).
                            return Ok(());
                        }
                        Signal::SIGCHLD => reap(&mut workers),
                        _ => {}
                    }
                }
                continue;
            }
            loop {
                let (stream, from) = match listener.accept() {
                    Ok(a) => a,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        warn!("front_end: accept: {e}");
                        break;
                    }
                };
                let ip = from.ip().to_canonical();
                if !config.is_allowed(ip) {
                    warn!("refused connection from {ip}: address not in allowed_hosts");
                    continue;
                }
                if workers.len() >= MAX_WORKERS {
                    warn!("refused connection from {ip}: {MAX_WORKERS} workers busy");
                    continue;
                }
                if let Err(e) = tune_tcp(&stream, config.timeouts.heartbeat_timeout) {
                    debug!("front_end: socket options for {ip}: {e}");
                }
                // The worker blocks; hand it a blocking socket.
                let std_stream = std::net::TcpStream::from(stream);
                if let Err(e) = std_stream.set_nonblocking(false) {
                    warn!("front_end: {e}");
                    continue;
                }
                // The worker keeps this socket only (see sys::fork_child);
                // the parent's copy is closed when the unused closure is
                // dropped.
                let keep = [std_stream.as_raw_fd()];
                match sys::fork_child("dipc-worker", Signal::SIGTERM, &keep, move || {
                    dipc_worker::serve(std_stream, ip, config, secret)
                }) {
                    Ok(pid) => {
                        debug!("front_end: worker {pid} for {ip}");
                        workers.insert(pid.as_raw());
                    }
                    Err(e) => warn!("front_end: cannot fork a worker for {ip}: {e}"),
                }
            }
        }
    }
}

fn reap(workers: &mut HashSet<i32>) {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(status) => {
                if let Some(pid) = status.pid() {
                    workers.remove(&pid.as_raw());
                }
            }
        }
    }
}
