//! Process-id attacks: moving, signalling or sending in another
//! process's name, and restoring a pid_d that is not this host's.

use crate::common::{dipcd, is_error, not_tried, show, shown, uid, verdict};
use crate::links::handshake;
use crate::session::open_session;
use dipc_common::auth::Secret;
use dipc_common::config::Config;
use dipc_common::sys;
use dipc_common::wire::{self, Message, Role};
use std::net::SocketAddr;
use std::time::Duration;

/// Where `pid_d` runs, as dipcd (the referee) says.
fn lookup(config: &Config, pid_d: i64) -> Result<wire::PidRecord, String> {
    let mut ch = dipcd(config).map_err(|e| format!("dipcd: {e}"))?;
    match ch.call(1, &Message::PidLookup { pid_d }) {
        Ok(Message::PidInfo { rec }) => Ok(rec),
        Ok(other) => Err(format!("lookup {pid_d}: {}", show(&other))),
        Err(e) => Err(format!("lookup {pid_d}: {e}")),
    }
}

pub(crate) fn migrate_spawn(config: &Config, target: SocketAddr, marker: &str) -> u8 {
    println!("uid {}", uid());
    let pid_d = match dipc::pid::regist() {
        Ok(p) => p,
        Err(e) => return not_tried("regist", &e),
    };
    let mut s = match open_session(config, target) {
        Ok(s) => s,
        Err(e) => return not_tried("session", &e),
    };
    let program = wire::Program {
        exe: b"/usr/bin/touch".to_vec(),
        argv: vec![b"touch".to_vec(), marker.as_bytes().to_vec()],
        env: Vec::new(),
        cwd: b"/".to_vec(),
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    let mut withstood = true;
    for (id, what, claimed) in [
        (1, "own pid_d, forged token", pid_d),
        (2, "another pid_d", pid_d + 1),
    ] {
        let r = s.call(
            id,
            &Message::MigrateSpawn {
                program: Box::new(program.clone()),
                pid_d: claimed,
                token: sys::random_u64(),
            },
        );
        println!("{what}: {}", shown(&r));
        withstood &= is_error(&r, Some(libc::EPERM));
    }
    std::thread::sleep(Duration::from_millis(500));
    let started = std::path::Path::new(marker).exists();
    println!("program started: {started}");
    verdict(withstood && !started)
}

pub(crate) fn kill_d(config: &Config, pid_d: i64, sig: i32) -> u8 {
    println!("uid {}", uid());
    let rec = match lookup(config, pid_d) {
        Ok(r) => r,
        Err(e) => return not_tried("lookup", &e),
    };
    println!("target pid {} on {}", rec.pid, rec.host);
    let mut s = match open_session(config, rec.host) {
        Ok(s) => s,
        Err(e) => return not_tried("session", &e),
    };
    let r = s.call(
        1,
        &Message::KillD {
            pid: rec.pid,
            starttime: rec.starttime,
            sig,
        },
    );
    println!("kill: {}", shown(&r));
    verdict(is_error(&r, None))
}

pub(crate) fn send_d(config: &Config, pid_d: i64, forge: i64, register: bool) -> u8 {
    println!("uid {}", uid());
    if register {
        match dipc::pid::regist() {
            Ok(p) => println!("registered {p}"),
            Err(e) => return not_tried("regist", &e),
        }
    }
    let rec = match lookup(config, pid_d) {
        Ok(r) => r,
        Err(e) => return not_tried("lookup", &e),
    };
    let mut s = match open_session(config, rec.host) {
        Ok(s) => s,
        Err(e) => return not_tried("session", &e),
    };
    println!("session pid_d {}", s.pid_d);
    let sender = s.call(1, &Message::SenderPid { pid_d: forge });
    println!("sender pid: {}", shown(&sender));
    let send = s.call(
        2,
        &Message::SendD {
            mailbox: rec.mailbox,
            data: format!("claims {forge}").into_bytes(),
            flags: libc::IPC_NOWAIT,
        },
    );
    println!("send: {}", shown(&send));
    verdict(is_error(&sender, None))
}

pub(crate) fn restore_pid_d(config: &Config, pid_d: i64, port: u16) -> u8 {
    println!("uid {}", uid());
    let secret = match Secret::load(&config.secret_file) {
        Ok(s) => s,
        Err(e) => return not_tried("secret", &e),
    };
    let me = SocketAddr::new(config.host.address, port);
    let mut ch = match handshake(config, &secret, config.referee_addr(), Role::Host, me) {
        Ok(Ok(ch)) => ch,
        Ok(Err((e, _))) => return not_tried("handshake", &e),
        Err(e) => return not_tried("handshake", &e),
    };
    match ch.call(1, &Message::Join { front_end: me }) {
        Ok(Message::Joined) => println!("joined as {me}"),
        Ok(other) => return not_tried("join", &show(&other)),
        Err(e) => return not_tried("join", &e),
    }
    // Pids of no process of this host: the referee takes them as stated.
    let reg = |pid_d, pid| Message::PidRegister {
        pid_d,
        pid,
        uid: 65534,
        starttime: 1,
        mailbox: 0,
    };
    let restore = ch
        .call(2, &reg(pid_d, 4_000_001))
        .map_err(|e| e.to_string());
    println!("restore: {}", shown_reg(&restore));
    let mut fresh = Vec::new();
    for (i, pid) in [4_000_002, 4_000_003].into_iter().enumerate() {
        let r = ch
            .call(3 + i as u64, &reg(0, pid))
            .map_err(|e| e.to_string());
        println!("new: {}", shown_reg(&r));
        fresh.push(r);
    }
    let ids: Vec<i64> = fresh
        .iter()
        .filter_map(|r| match r {
            Ok(Message::Registered { pid_d, .. }) => Some(*pid_d),
            _ => None,
        })
        .collect();
    let good_new = ids.len() == 2 && ids.iter().all(|p| *p > 0) && ids[0] != ids[1];
    verdict(is_error(&restore, None) && good_new)
}

fn shown_reg(r: &Result<Message, String>) -> String {
    match r {
        Ok(Message::Registered { pid_d, .. }) => format!("registered {pid_d}"),
        other => shown(other),
    }
}
