//! Shared memory requests from a remote caller.
//!
//! An attach is not carried out here: the worker asks this host's dipcd to
//! make sure the segment's manager runs, then passes the caller's very
//! connection to the manager (with the attach request riding on it, and
//! the secure channel's state, so the manager carries on the channel), and
//! ends. The manager checks the attach against the worker's credentials,
//! which are the caller's. Control requests are those of every kind (see
//! [`crate::ctl`]), but for `shm_nattch`, the manager's count of attaches
//! on every host.

use crate::{fail, local_call};
use dipc_common::channel::Channel;
use dipc_common::config::Config;
use dipc_common::sys;
use dipc_common::sysv;
use dipc_common::wire::{self, Message, Origin};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;

/// Passes `caller` to the manager of segment `id` with the attach request
/// `rid`. On success the worker must end without touching `caller` again.
pub fn hand_over(
    config: &Config,
    caller: &Channel<TcpStream>,
    rid: u64,
    (id, origin): (i32, Origin),
    readonly: bool,
    host: SocketAddr,
) -> Result<(), Message> {
    let keys = caller
        .codec()
        .keys()
        .ok_or_else(|| Message::error(libc::EPROTO, "the session is not secured"))?;
    local_call(config, &config.back_end_socket(), &Message::ShmOpen { id })?;
    let path = config.shm_socket(id);
    let manager = UnixStream::connect(&path).map_err(|e| {
        Message::error(
            e.raw_os_error().unwrap_or(libc::ECONNREFUSED),
            format!("cannot reach the manager of segment {id}: {e}"),
        )
    })?;
    let mut frame = Vec::new();
    wire::encode_frame(
        rid,
        &Message::ShmAttach {
            id,
            origin,
            readonly,
            handover: Some((host, Box::new(keys))),
        },
        &mut frame,
    );
    sys::send_with_fd(&manager, &frame, caller.get_ref()).map_err(|e| {
        Message::error(
            e.raw_os_error().unwrap_or(libc::EIO),
            format!("cannot pass the connection to the manager of segment {id}: {e}"),
        )
    })
}

/// The manager's view of segment `id`, or an empty one when no manager
/// runs (nobody is attached).
pub fn query(config: &Config, id: i32) -> Message {
    if let Err(e) = sysv::shmctl_stat(id) {
        return fail(e);
    }
    let path = config.shm_socket(id);
    if !path.exists() {
        return Message::ShmState {
            nattch: 0,
            unit: 0,
            hosts: Vec::new(),
            runs: Vec::new(),
        };
    }
    let q = Message::ShmQuery {
        id,
        origin: Origin::default(),
    };
    local_call(config, &path, &q).unwrap_or_else(|e| e)
}

/// The participant count of segment `id` from its manager; `None` if no
/// manager runs or it does not answer.
pub fn manager_nattch(config: &Config, id: i32) -> Option<u64> {
    let path = config.shm_socket(id);
    if !path.exists() {
        return None;
    }
    let q = Message::ShmQuery {
        id,
        origin: Origin::default(),
    };
    match local_call(config, &path, &q) {
        Ok(Message::ShmState { nattch, .. }) => Some(nattch),
        _ => None,
    }
}
