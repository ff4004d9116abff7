//! Call links (`dprocs`): a caller on another host makes its session a
//! direct link to a process of this host (`CallOpen`).
//!
//! The worker asks dipcd where the process takes calls, connects there
//! (checking that the registered process itself listens), and passes the
//! caller's connection with its secure channel's state and the caller's
//! pid_d, as this worker knows it from the employer's statement. From
//! then on calls and replies travel between the caller and the process
//! without the worker: one network round trip a call, and the process
//! replies on the very connection it was called on. The process believes
//! the stated caller only once dipcd has confirmed that the connection
//! came from one of this host's workers (`WorkerCheck`), so the worker
//! waits for the process's verdict before it ends.

use crate::local_call;
use dipc_common::calls;
use dipc_common::channel::Channel;
use dipc_common::config::Config;
use dipc_common::sys;
use dipc_common::wire::{self, Message};
use std::net::TcpStream;
use std::os::fd::AsFd;

/// Passes `caller`'s connection to the process `pid_d` as a call link of
/// the caller `sender`. `Ok` once the process has it: the worker must
/// then end without touching the connection again. On `Err` the session
/// goes on as before (nothing was sent on it).
pub fn hand_over(
    config: &Config,
    caller: &Channel<TcpStream>,
    sender: i64,
    pid_d: i64,
) -> Result<(), Message> {
    if sender <= 0 {
        return Err(Message::error(
            libc::ENOTCONN,
            "a call link needs a registered caller",
        ));
    }
    // The process carries on the channel from where the worker leaves
    // it: nothing may be in flight on it.
    if caller.buffered() > 0 {
        return Err(Message::error(
            libc::EPROTO,
            "a request sent behind CallOpen, before its answer",
        ));
    }
    let keys = caller
        .codec()
        .keys()
        .ok_or_else(|| Message::error(libc::EPROTO, "the session is not secured"))?;
    let (pid, starttime, name) = match local_call(
        config,
        &config.back_end_socket(),
        &Message::CallRoute { pid_d },
    )? {
        Message::CallEndpointAt {
            pid,
            starttime,
            name,
        } => (pid, starttime, name),
        other => {
            return Err(Message::error(
                libc::EPROTO,
                format!("dipcd answered CallRoute with {}", other.kind().name()),
            ))
        }
    };
    let link = calls::connect(&name, pid, starttime).map_err(|e| {
        Message::error(
            e.raw_os_error().unwrap_or(libc::ECONNREFUSED),
            format!("cannot reach the call endpoint of pid_d {pid_d}: {e}"),
        )
    })?;
    let mut frame = Vec::new();
    wire::encode_frame(
        0,
        &Message::CallHello {
            caller: sender,
            keys: Some(Box::new(keys)),
        },
        &mut frame,
    );
    sys::send_with_fd(&link, &frame, caller.get_ref()).map_err(|e| {
        Message::error(
            e.raw_os_error().unwrap_or(libc::EIO),
            format!("cannot pass the session to pid_d {pid_d}: {e}"),
        )
    })?;
    // The process checks with dipcd that this worker sent the link, which
    // it can only while the worker lives. It takes new links when it
    // next waits, which may be long: the wait ends with its verdict, or
    // when the caller gives up (its connection closes), whichever is
    // first. Either way the link is the process's from here on.
    wait_verdict(&link, caller.get_ref());
    Ok(())
}

fn wait_verdict(link: &std::os::unix::net::UnixStream, caller: &TcpStream) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    loop {
        let mut fds = [
            PollFd::new(link.as_fd(), PollFlags::POLLIN),
            PollFd::new(caller.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => return,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
    }
}
