//! Forged callers for `dipc-attack forged-call`: a local user who tries
//! to call a distributed process (`dprocs`) in another process's name.
//!
//! - `hello`: connects to the callee's endpoint (dipcd tells anyone where
//!   it is) and names the victim as the caller, as a process of this host
//!   would. The callee must refuse: the connection's pid is not the
//!   victim's registration.
//! - `worker`: names the victim and passes a TCP socket with made-up
//!   channel keys, as a worker passes a remote caller's session. The
//!   callee must refuse: the connection does not come from a worker.
//! - `mailbox`: puts a request in the old mailbox format straight into the
//!   callee's mailbox (any local user may write it), typed with the
//!   victim's pid_d. The callee must not run it: calls do not ride the
//!   mailbox.
//!
//! Each then asks for procedure `PROC` (the test's server prints who
//! called it). Prints `hello: refused` or `hello: accepted`, and
//! `request: sent`.

use dipc_common::calls;
use dipc_common::config::Config;
use dipc_common::sys;
use dipc_common::wire::{self, Message, SessionKeys};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Mode {
    Hello,
    Worker,
    Mailbox,
}

/// What happened: `Ok(true)` if the callee took the forged caller.
pub fn forged_call(
    config: &Config,
    target: i64,
    victim: i64,
    mode: Mode,
    proc_name: &str,
) -> Result<bool, String> {
    println!("uid {}", crate::common::uid());
    let mut ch = crate::common::dipcd(config).map_err(|e| format!("dipcd: {e}"))?;
    if let Mode::Mailbox = mode {
        let rec = match ch.call(1, &Message::PidLookup { pid_d: target }) {
            Ok(Message::PidInfo { rec }) => rec,
            other => return Err(format!("lookup {target}: {other:?}")),
        };
        // Magic, kind 1 (request), call number, largest reply, the name.
        let mut m = b"dPc1\x01".to_vec();
        m.extend_from_slice(&7u64.to_be_bytes());
        m.extend_from_slice(&64u32.to_be_bytes());
        m.push(proc_name.len() as u8);
        m.extend_from_slice(proc_name.as_bytes());
        dipc_common::procs::mailbox_send(rec.mailbox, victim, &m, libc::IPC_NOWAIT)
            .map_err(|e| format!("msgsnd to mailbox {}: errno {e}", rec.mailbox))?;
        println!("request: sent");
        return Ok(false);
    }
    let (pid, starttime, name) = match ch.call(1, &Message::CallRoute { pid_d: target }) {
        Ok(Message::CallEndpointAt {
            pid,
            starttime,
            name,
        }) => (pid, starttime, name),
        other => return Err(format!("call route of {target}: {other:?}")),
    };
    let mut s = calls::connect(&name, pid, starttime).map_err(|e| format!("connect: {e}"))?;
    let mut frame = Vec::new();
    let keys = match mode {
        Mode::Worker => Some(Box::new(SessionKeys {
            tx_key: [7; 32],
            tx_n: 0,
            rx_key: [9; 32],
            rx_n: 0,
        })),
        _ => None,
    };
    wire::encode_frame(
        0,
        &Message::CallHello {
            caller: victim,
            keys,
        },
        &mut frame,
    );
    // The session a worker would pass: any connected TCP socket.
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("listen: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut far, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    let sent = match mode {
        Mode::Worker => sys::send_with_fd(&s, &frame, &tcp),
        _ => s.write_all(&frame),
    };
    sent.map_err(|e| format!("hello: {e}"))?;
    // A callee that took the link greets it with Done: on the Unix
    // connection from a process of this host, on the session from a worker.
    let greeted = |r: &mut dyn Read| -> bool {
        let mut b = [0u8; 64];
        matches!(r.read(&mut b), Ok(n) if n > 0)
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    let _ = far.set_read_timeout(Some(Duration::from_secs(1)));
    let accepted = match mode {
        Mode::Worker => greeted(&mut far),
        _ => greeted(&mut s),
    };
    println!("hello: {}", if accepted { "accepted" } else { "refused" });
    let mut req = Vec::new();
    wire::encode_frame(
        1,
        &Message::CallRequest {
            proc_name: proc_name.to_owned(),
            max_out: 64,
            input: Vec::new(),
        },
        &mut req,
    );
    let _ = match mode {
        Mode::Worker => (&tcp).write_all(&req),
        _ => s.write_all(&req),
    };
    println!("request: sent");
    Ok(accepted)
}
