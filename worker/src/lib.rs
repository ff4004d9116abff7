//! The worker: forked by the front_end for each connection another host
//! opens to this one.
//!
//! It authenticates the caller (challenge–response on the cluster secret),
//! then carries out the caller's requests on this host, one after another,
//! and replies. A worker serves one connection for its whole life, so an
//! employer that keeps its connection open keeps the same worker as its
//! proxy on this host: per-process kernel state (such as `SEM_UNDO`
//! adjustments) then lives and dies with that worker.

use dipc_common::auth::{server_handshake, Secret};
use dipc_common::channel::{Channel, ChannelError};
use dipc_common::config::Config;
use dipc_common::wire::Message;
use log::{debug, info, warn};
use std::net::{IpAddr, TcpStream};

/// Serves one connection; returns the process exit code.
pub fn serve(stream: TcpStream, peer: IpAddr, config: &Config, secret: &Secret) -> i32 {
    // The handshake must finish within the request time-out; a caller that
    // opens a connection and says nothing does not keep a worker.
    if let Err(e) = stream.set_read_timeout(Some(config.timeouts.request)) {
        warn!("worker for {peer}: {e}");
        return 1;
    }
    let mut ch = Channel::new(stream, config.max_frame);
    let hs = match server_handshake(&mut ch, secret) {
        Ok(hs) => hs,
        Err(e) => {
            warn!("refused connection from {peer}: {e}");
            return 1;
        }
    };
    debug!(
        "worker: {peer} authenticated as {:?} of {}",
        hs.role, hs.host
    );
    // After the handshake the employer may stay idle as long as its
    // application lives; keep-alives (set by the front_end) detect a dead
    // peer host instead of a read time-out.
    if let Err(e) = ch.get_ref().set_read_timeout(None) {
        warn!("worker for {peer}: {e}");
        return 1;
    }
    loop {
        let (id, req) = match ch.recv() {
            Ok(r) => r,
            Err(ChannelError::Closed) => return 0,
            Err(e) => {
                info!("worker for {peer}: {e}");
                return 1;
            }
        };
        let reply = handle(req);
        if let Err(e) = ch.send(id, &reply) {
            info!("worker for {peer}: reply lost: {e}");
            return 1;
        }
    }
}

fn handle(req: Message) -> Message {
    match req {
        Message::Ping { target: None } => Message::Pong,
        other => Message::error(
            libc::EPROTO,
            format!("a worker does not take {} messages", other.kind().name()),
        ),
    }
}
