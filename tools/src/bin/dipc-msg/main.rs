//! `dipc-msg`: System V message queues from the shell, local or
//! distributed (cluster-wide by key, see `dipc::msg`).
//!
//! Every command but `get` first looks the queue up by key (`msgget` with
//! `IPC_DIPC` unless `--local`; no creation, no permission bits asked), or
//! takes `--id` to use a queue id as another `dipc-msg get` printed it.
//!
//! Errors go to stderr as `dipc-msg: <call>: <strerror> (errno NAME)` and
//! the exit code is 1, so scripts and tests can match on the errno name.
//!
//! `stress produce` / `stress consume` exercise a queue with many messages
//! whose integrity the consumer checks. A stress message has the producer's
//! number (1, 2, ...) as its type, and its text is
//!
//! ```text
//! seq: u64 LE | checksum: u64 LE | payload: random bytes
//! ```
//!
//! where `seq` counts 1, 2, ... per producer, the whole text is 16 to 8192
//! bytes long (random), and `checksum` is the 64-bit FNV-1a hash of the
//! type (i64 LE), `seq` and the payload. The consumer checks every
//! checksum, that each producer's sequence goes up by exactly one (the
//! kernel keeps the order of messages of one type), that nothing is
//! duplicated or lost, and that nothing is left over at the end.

mod cli;
mod stress;

use crate::cli::{Cli, Command, Queue, Stress};
use crate::stress::{consume, produce, Producer};
use clap::Parser;
use dipc::msg::{self, IPC_DIPC};
use dipc_common::wire::{IpcKind, IpcSet, Message, MsqInfo};
use nix::errno::Errno;
use serde_json::json;
use std::process::ExitCode;
use std::time::Duration;

/// A failed call: what was called and the errno.
pub(crate) struct Failure {
    call: String,
    errno: i32,
}

pub(crate) fn fail(call: &str) -> impl FnOnce(i32) -> Failure + '_ {
    move |errno| Failure {
        call: call.to_owned(),
        errno,
    }
}

/// `strerror` and the symbolic name of an errno.
fn describe_errno(e: i32) -> (String, String) {
    let err = Errno::from_raw(e);
    let name = if err == Errno::UnknownErrno {
        format!("{e}")
    } else {
        format!("{err:?}")
    };
    (err.desc().to_owned(), name)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(f) => {
            let (text, name) = describe_errno(f.errno);
            eprintln!("dipc-msg: {}: {text} (errno {name})", f.call);
            ExitCode::from(1)
        }
    }
}

fn run(cmd: Command) -> Result<ExitCode, Failure> {
    match cmd {
        Command::Get {
            key,
            create,
            excl,
            mode,
            local,
        } => {
            let mut flags = mode.unwrap_or(if create { 0o666 } else { 0 }) as i32;
            if create {
                flags |= libc::IPC_CREAT;
            }
            if excl {
                flags |= libc::IPC_EXCL;
            }
            if !local {
                flags |= IPC_DIPC;
            }
            let id = msg::get(key, flags).map_err(fail("msgget"))?;
            println!("{id}");
        }
        Command::Send {
            queue,
            mtype,
            text,
            fill,
            nowait,
        } => {
            let id = open(&queue, false)?;
            let mut bytes = text.into_bytes();
            if let Some(n) = fill {
                bytes = if bytes.is_empty() {
                    vec![0; n]
                } else {
                    bytes.iter().copied().cycle().take(n).collect()
                };
            }
            let flags = if nowait { libc::IPC_NOWAIT } else { 0 };
            msg::send(id, mtype, &bytes, flags).map_err(fail("msgsnd"))?;
        }
        Command::Recv {
            queue,
            mtype,
            except,
            noerror,
            size,
            nowait,
            len,
        } => {
            let id = open(&queue, false)?;
            let mut flags = 0;
            if except {
                flags |= libc::MSG_EXCEPT;
            }
            if noerror {
                flags |= libc::MSG_NOERROR;
            }
            if nowait {
                flags |= libc::IPC_NOWAIT;
            }
            let (t, text) = msg::recv(id, size, mtype, flags).map_err(fail("msgrcv"))?;
            if len {
                println!("{t} {}", text.len());
            } else {
                println!("{t} {}", String::from_utf8_lossy(&text));
            }
        }
        Command::Stat { queue, json } => {
            let id = open(&queue, false)?;
            let info = msg::stat(id).map_err(fail("msgctl(IPC_STAT)"))?;
            let remote = !queue.local && msg::is_remote(id);
            print_stat(id, remote, &info, json);
        }
        Command::Set {
            queue,
            mode,
            qbytes,
            uid,
            gid,
        } => {
            let id = open(&queue, false)?;
            let info = msg::stat(id).map_err(fail("msgctl(IPC_STAT)"))?;
            let s = IpcSet {
                uid: uid.unwrap_or(info.perm.uid),
                gid: gid.unwrap_or(info.perm.gid),
                mode: mode.unwrap_or(info.perm.mode & 0o777),
                qbytes: qbytes.unwrap_or(info.qbytes),
            };
            msg::set(id, &s).map_err(fail("msgctl(IPC_SET)"))?;
        }
        Command::Rm { queue } => {
            let id = open(&queue, false)?;
            msg::remove(id).map_err(fail("msgctl(IPC_RMID)"))?;
        }
        Command::KeyNotice { notice, key, id } => {
            let kind = IpcKind::Msg;
            let notice = match notice.as_str() {
                // Incarnation 0: this host's own (dipcd fills it in).
                "free" => Message::KeyRemove {
                    kind,
                    key,
                    id,
                    incarnation: 0,
                },
                "commit" => Message::KeyCommit {
                    kind,
                    key,
                    id,
                    // dipcd puts the caller's uid and its incarnation here.
                    creator_uid: 0,
                    incarnation: 0,
                },
                "claim" => Message::KeyGet {
                    kind,
                    key,
                    flags: libc::IPC_CREAT | 0o666,
                },
                _ => Message::KeyAbort { kind, key },
            };
            let r = dipc::client::load_config()
                .and_then(|c| dipc::Client::for_config(&c))
                .and_then(|mut c| c.call(&notice));
            match r {
                Ok(Message::KeyOwner { owner, id, .. }) => println!("owner {owner} id {id}"),
                Ok(_) => {}
                Err(e) => {
                    eprintln!("dipc-msg: key notice for {key:#x}: {e}");
                    return Err(fail("key notice")(e.errno()));
                }
            }
        }
        Command::Stress {
            command:
                Stress::Produce {
                    queue,
                    producer,
                    count,
                    seed,
                    max_size,
                    create,
                    interrupt_us,
                    pause_us,
                },
        } => {
            let id = open(&queue, create)?;
            let p = Producer {
                producer,
                count,
                seed,
                max_size: max_size as usize,
                interrupt: Duration::from_micros(interrupt_us),
                pause: Duration::from_micros(pause_us),
            };
            produce(id, &p)?;
        }
        Command::Stress {
            command:
                Stress::Consume {
                    queue,
                    producers,
                    count,
                    idle_timeout,
                    create,
                    interrupt_us,
                },
        } => {
            let id = open(&queue, create)?;
            let idle = Duration::from_secs(idle_timeout);
            return consume(id, &producers, count, idle, interrupt_us);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The queue's id: `--id` as given, else looked up by key.
fn open(q: &Queue, create: bool) -> Result<i32, Failure> {
    if q.id {
        return Ok(q.key);
    }
    let mut flags = if q.local { 0 } else { IPC_DIPC };
    if create {
        flags |= libc::IPC_CREAT | 0o666;
    }
    msg::get(q.key, flags).map_err(fail("msgget"))
}

fn print_stat(id: i32, remote: bool, i: &MsqInfo, as_json: bool) {
    let key = format!("{:#x}", i.perm.key as u32);
    let mode = format!("{:04o}", i.perm.mode & 0o777);
    if as_json {
        let v = json!({
            "id": id,
            "remote": remote,
            "key": key,
            "mode": mode,
            "mode_bits": i.perm.mode,
            "uid": i.perm.uid,
            "gid": i.perm.gid,
            "cuid": i.perm.cuid,
            "cgid": i.perm.cgid,
            "qnum": i.qnum,
            "cbytes": i.cbytes,
            "qbytes": i.qbytes,
            "lspid": i.lspid,
            "lrpid": i.lrpid,
            "stime": i.stime,
            "rtime": i.rtime,
            "ctime": i.ctime,
        });
        println!("{v}");
    } else {
        println!("id      {id}{}", if remote { " (remote)" } else { "" });
        println!("key     {key}");
        println!("mode    {mode}");
        println!("uid     {}  gid  {}", i.perm.uid, i.perm.gid);
        println!("cuid    {}  cgid {}", i.perm.cuid, i.perm.cgid);
        println!("qnum    {}", i.qnum);
        println!("cbytes  {}", i.cbytes);
        println!("qbytes  {}", i.qbytes);
        println!("lspid   {}  lrpid {}", i.lspid, i.lrpid);
        println!("stime   {}", i.stime);
        println!("rtime   {}", i.rtime);
        println!("ctime   {}", i.ctime);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_names() {
        assert_eq!(describe_errno(libc::EACCES).1, "EACCES");
        assert_eq!(describe_errno(libc::ENOMSG).1, "ENOMSG");
        assert_eq!(describe_errno(libc::EIDRM).1, "EIDRM");
    }
}
