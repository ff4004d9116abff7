//! Message queue calls made for a remote caller.

use crate::fail;
use dipc_common::sysv;
use dipc_common::wire::Message;

pub fn snd(id: i32, mtype: i64, text: &[u8], flags: i32) -> Message {
    match sysv::msgsnd(id, mtype, text, flags) {
        Ok(()) => Message::Done { value: 0 },
        Err(e) => fail(e),
    }
}

pub fn rcv(id: i32, size: u64, mtype: i64, flags: i32) -> Message {
    match sysv::msgrcv(id, size, mtype, flags) {
        Ok((mtype, text)) => Message::MsgData { mtype, text },
        Err(e) => fail(e),
    }
}

pub fn ctl(id: i32, cmd: i32, set: Option<dipc_common::wire::IpcSet>) -> Message {
    let r = match (cmd, set) {
        (libc::IPC_STAT, _) => {
            return sysv::msgctl_stat(id).map_or_else(fail, |info| Message::MsqStat { info })
        }
        (libc::IPC_SET, Some(set)) => sysv::msgctl_set(id, &set),
        (libc::IPC_RMID, _) => sysv::msgctl_rmid(id),
        _ => Err(libc::EINVAL),
    };
    match r {
        Ok(()) => Message::Done { value: 0 },
        Err(e) => fail(e),
    }
}
