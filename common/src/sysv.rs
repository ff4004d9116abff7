//! Thin wrappers over the System V calls, shared by the worker (which
//! makes them on a remote caller's behalf) and the library. Errors are the
//! raw `errno` values, because those are what the caller must see.

use crate::wire::{IpcKind, IpcPerm, IpcSet, MsqInfo, SemBuf, SemInfo, ShmInfo};
use std::io;
use std::mem::size_of;

pub mod raw;

/// The calling thread's last `errno`.
/// The kernel's ipcperms for a caller that is not root: the permission
/// bits of the caller's class (owner or creator, group, other) must
/// include all of `want` (4 read, 2 write).
pub fn permits(perm: &IpcPerm, (uid, gid, groups): (u32, u32, &[u32]), want: u32) -> bool {
    let bits = if uid == perm.uid || uid == perm.cuid {
        perm.mode >> 6
    } else if [perm.gid, perm.cgid]
        .iter()
        .any(|g| *g == gid || groups.contains(g))
    {
        perm.mode >> 3
    } else {
        perm.mode
    };
    bits & want == want
}

pub fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// The largest message the kernel of this IPC namespace accepts now
/// (`kernel.msgmax`), or the Linux default if it cannot be asked. Asked
/// with `msgctl(IPC_INFO)` on every call, one system call where reading
/// `/proc/sys/kernel/msgmax` takes three (~2 µs, on every remote msgrcv),
/// and not cached, since an administrator may change it at any time.
pub fn msgmax() -> usize {
    // SAFETY: msginfo is plain data; zero is a valid value.
    let mut info: libc::msginfo = unsafe { std::mem::zeroed() };
    // SAFETY: IPC_INFO writes a struct msginfo, which the kernel ABI
    // passes through msgctl's msqid_ds pointer.
    let r = unsafe {
        raw::msgctl(
            0,
            libc::IPC_INFO,
            (&mut info as *mut libc::msginfo).cast::<libc::msqid_ds>(),
        )
    };
    if r < 0 {
        return 8192;
    }
    usize::try_from(info.msgmax).unwrap_or(8192)
}

pub fn perm_from(p: &libc::ipc_perm) -> IpcPerm {
    IpcPerm {
        key: p.__key,
        uid: p.uid,
        gid: p.gid,
        cuid: p.cuid,
        cgid: p.cgid,
        mode: p.mode as u32,
        seq: p.__seq as u32,
    }
}

pub fn perm_into(src: &IpcPerm, p: &mut libc::ipc_perm) {
    p.__key = src.key;
    p.uid = src.uid;
    p.gid = src.gid;
    p.cuid = src.cuid;
    p.cgid = src.cgid;
    p.mode = src.mode as libc::c_ushort;
    p.__seq = src.seq as libc::c_ushort;
}

pub fn msq_from(ds: &libc::msqid_ds) -> MsqInfo {
    MsqInfo {
        perm: perm_from(&ds.msg_perm),
        stime: ds.msg_stime,
        rtime: ds.msg_rtime,
        ctime: ds.msg_ctime,
        cbytes: ds.__msg_cbytes,
        qnum: ds.msg_qnum,
        qbytes: ds.msg_qbytes,
        lspid: ds.msg_lspid,
        lrpid: ds.msg_lrpid,
    }
}

pub fn msq_into(info: &MsqInfo, ds: &mut libc::msqid_ds) {
    perm_into(&info.perm, &mut ds.msg_perm);
    ds.msg_stime = info.stime;
    ds.msg_rtime = info.rtime;
    ds.msg_ctime = info.ctime;
    ds.__msg_cbytes = info.cbytes;
    ds.msg_qnum = info.qnum;
    ds.msg_qbytes = info.qbytes;
    ds.msg_lspid = info.lspid;
    ds.msg_lrpid = info.lrpid;
}

/// `msgsnd` of `text` with type `mtype`.
pub fn msgsnd(id: i32, mtype: i64, text: &[u8], flags: i32) -> Result<(), i32> {
    let mut buf = Vec::with_capacity(size_of::<libc::c_long>() + text.len());
    buf.extend_from_slice(&(mtype as libc::c_long).to_ne_bytes());
    buf.extend_from_slice(text);
    // SAFETY: buf holds an mtype followed by text.len() bytes.
    let r = unsafe { raw::msgsnd(id, buf.as_ptr().cast(), text.len(), flags) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// `msgrcv` into a buffer of at most `size` bytes of text (bounded by the
/// kernel's `msgmax`, which no message can exceed, so a caller's huge size
/// allocates nothing huge).
pub fn msgrcv(id: i32, size: u64, mtype: i64, flags: i32) -> Result<(i64, Vec<u8>), i32> {
    if (size as i64) < 0 {
        return Err(libc::EINVAL);
    }
    let cap = (size as usize).min(msgmax());
    let word = size_of::<libc::c_long>();
    let mut buf = vec![0u8; word + cap];
    // SAFETY: buf has room for an mtype and cap bytes.
    let n = unsafe {
        raw::msgrcv(
            id,
            buf.as_mut_ptr().cast(),
            cap,
            mtype as libc::c_long,
            flags,
        )
    };
    if n < 0 {
        return Err(errno());
    }
    let mut t = [0u8; size_of::<libc::c_long>()];
    t.copy_from_slice(&buf[..word]);
    #[allow(clippy::unnecessary_cast)] // c_long is i32 on 32-bit targets
    let got_type = libc::c_long::from_ne_bytes(t) as i64;
    buf.drain(..word);
    buf.truncate(n as usize);
    Ok((got_type, buf))
}

pub fn msgctl_stat(id: i32) -> Result<MsqInfo, i32> {
    // SAFETY: msqid_ds is plain data; zero is a valid value.
    let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: ds is a valid msqid_ds.
    if unsafe { raw::msgctl(id, libc::IPC_STAT, &mut ds) } < 0 {
        return Err(errno());
    }
    Ok(msq_from(&ds))
}

pub fn msgctl_set(id: i32, set: &IpcSet) -> Result<(), i32> {
    // SAFETY: as above.
    let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
    ds.msg_perm.uid = set.uid;
    ds.msg_perm.gid = set.gid;
    ds.msg_perm.mode = set.mode as libc::c_ushort;
    ds.msg_qbytes = set.qbytes;
    // SAFETY: ds is a valid msqid_ds.
    if unsafe { raw::msgctl(id, libc::IPC_SET, &mut ds) } < 0 {
        return Err(errno());
    }
    Ok(())
}

pub fn msgctl_rmid(id: i32) -> Result<(), i32> {
    // SAFETY: IPC_RMID takes no buffer.
    if unsafe { raw::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()) } < 0 {
        return Err(errno());
    }
    Ok(())
}

pub fn sem_from(ds: &libc::semid_ds) -> SemInfo {
    SemInfo {
        perm: perm_from(&ds.sem_perm),
        otime: ds.sem_otime,
        ctime: ds.sem_ctime,
        nsems: ds.sem_nsems,
    }
}

pub fn sem_into(info: &SemInfo, ds: &mut libc::semid_ds) {
    perm_into(&info.perm, &mut ds.sem_perm);
    ds.sem_otime = info.otime;
    ds.sem_ctime = info.ctime;
    ds.sem_nsems = info.nsems;
}

/// `semop`, or `semtimedop` when a time-out is given.
pub fn semop(id: i32, ops: &[SemBuf], timeout_ns: Option<u64>) -> Result<(), i32> {
    let mut bufs: Vec<libc::sembuf> = ops
        .iter()
        .map(|o| libc::sembuf {
            sem_num: o.num,
            sem_op: o.op,
            sem_flg: o.flg,
        })
        .collect();
    let ts = timeout_ns.map(|ns| libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    });
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: bufs holds bufs.len() sembufs; tsp is null or a timespec.
    let r = unsafe { libc::syscall(libc::SYS_semtimedop, id, bufs.as_mut_ptr(), bufs.len(), tsp) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// `semctl` for the commands that take an int or nothing and return an int
/// (`GETVAL`, `SETVAL`, `GETPID`, `GETNCNT`, `GETZCNT`, `IPC_RMID`).
pub fn semctl_int(id: i32, num: i32, cmd: i32, val: i32) -> Result<i32, i32> {
    // SAFETY: these commands take an int argument (or ignore it).
    let r = unsafe { raw::semctl(id, num, cmd, val as usize) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

pub fn semctl_stat(id: i32) -> Result<SemInfo, i32> {
    // SAFETY: semid_ds is plain data; zero is a valid value.
    let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: IPC_STAT takes a pointer to a semid_ds.
    if unsafe {
        raw::semctl(
            id,
            0,
            libc::IPC_STAT,
            &mut ds as *mut libc::semid_ds as usize,
        )
    } < 0
    {
        return Err(errno());
    }
    Ok(sem_from(&ds))
}

pub fn semctl_set(id: i32, set: &IpcSet) -> Result<(), i32> {
    // SAFETY: as above.
    let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
    ds.sem_perm.uid = set.uid;
    ds.sem_perm.gid = set.gid;
    ds.sem_perm.mode = set.mode as libc::c_ushort;
    // SAFETY: IPC_SET takes a pointer to a semid_ds.
    if unsafe {
        raw::semctl(
            id,
            0,
            libc::IPC_SET,
            &mut ds as *mut libc::semid_ds as usize,
        )
    } < 0
    {
        return Err(errno());
    }
    Ok(())
}

pub fn semctl_getall(id: i32) -> Result<Vec<u16>, i32> {
    let n = semctl_stat(id)?.nsems as usize;
    let mut vals = vec![0u16; n];
    // SAFETY: GETALL writes nsems shorts into vals.
    if unsafe { raw::semctl(id, 0, libc::GETALL, vals.as_mut_ptr() as usize) } < 0 {
        return Err(errno());
    }
    Ok(vals)
}

pub fn semctl_setall(id: i32, vals: &[u16]) -> Result<(), i32> {
    // The kernel reads nsems values: refuse a short array rather than let
    // it read past ours.
    if (semctl_stat(id)?.nsems as usize) != vals.len() {
        return Err(libc::EINVAL);
    }
    // SAFETY: SETALL reads nsems shorts from vals, which has that many.
    if unsafe { raw::semctl(id, 0, libc::SETALL, vals.as_ptr() as usize) } < 0 {
        return Err(errno());
    }
    Ok(())
}

pub fn shm_from(ds: &libc::shmid_ds) -> ShmInfo {
    ShmInfo {
        perm: perm_from(&ds.shm_perm),
        segsz: ds.shm_segsz as u64,
        atime: ds.shm_atime,
        dtime: ds.shm_dtime,
        ctime: ds.shm_ctime,
        cpid: ds.shm_cpid,
        lpid: ds.shm_lpid,
        nattch: ds.shm_nattch,
    }
}

pub fn shm_into(info: &ShmInfo, ds: &mut libc::shmid_ds) {
    perm_into(&info.perm, &mut ds.shm_perm);
    ds.shm_segsz = info.segsz as libc::size_t;
    ds.shm_atime = info.atime;
    ds.shm_dtime = info.dtime;
    ds.shm_ctime = info.ctime;
    ds.shm_cpid = info.cpid;
    ds.shm_lpid = info.lpid;
    ds.shm_nattch = info.nattch;
}

/// The get of `kind`: `size` is `nsems` for a semaphore set, the size for
/// a segment, unused for a queue.
pub fn get(kind: IpcKind, key: i32, size: u64, flags: i32) -> Result<i32, i32> {
    match kind {
        IpcKind::Msg => msgget(key, flags),
        IpcKind::Sem => semget(key, size, flags),
        IpcKind::Shm => shmget(key, size, flags),
    }
}

/// Whether `key` may still name structure `id` of `kind` in this IPC
/// namespace. It does not only when the kernel says so: the key is
/// unknown, or names another structure; a get refused for any other
/// reason (permissions) cannot tell, so it counts as yes.
pub fn key_may_name(kind: IpcKind, key: i32, id: i32) -> bool {
    match get(kind, key, 0, 0) {
        Ok(have) => have == id,
        Err(e) => e != libc::ENOENT,
    }
}

/// The key of structure `id` of this host, read from `/proc/sysvipc`
/// (world-readable, so it needs no permission on the structure, unlike
/// `IPC_STAT`); `None` if there is no such structure. Reads the whole
/// list, so it is for first uses, not for every call.
pub fn key_of(kind: IpcKind, id: i32) -> Option<i32> {
    let name = match kind {
        IpcKind::Msg => "msg",
        IpcKind::Sem => "sem",
        IpcKind::Shm => "shm",
    };
    let text = std::fs::read_to_string(format!("/proc/sysvipc/{name}")).ok()?;
    key_in_table(&text, id)
}

/// The key of `id` in the text of a `/proc/sysvipc` table: a header line,
/// then one line per structure whose first two columns are its key and id
/// (decimal).
fn key_in_table(text: &str, id: i32) -> Option<i32> {
    text.lines().skip(1).find_map(|line| {
        let mut cols = line.split_whitespace();
        let key: i32 = cols.next()?.parse().ok()?;
        let have: i32 = cols.next()?.parse().ok()?;
        (have == id).then_some(key)
    })
}

/// `msgget` with `flags` as given (the caller strips `IPC_DIPC`).
pub fn msgget(key: i32, flags: i32) -> Result<i32, i32> {
    // SAFETY: msgget takes plain integers.
    let id = unsafe { raw::msgget(key, flags) };
    if id < 0 {
        return Err(errno());
    }
    Ok(id)
}

/// `semget` with `flags` as given (the caller strips `IPC_DIPC`).
pub fn semget(key: i32, nsems: u64, flags: i32) -> Result<i32, i32> {
    let nsems = i32::try_from(nsems).map_err(|_| libc::EINVAL)?;
    // SAFETY: semget takes plain integers.
    let id = unsafe { raw::semget(key, nsems, flags) };
    if id < 0 {
        return Err(errno());
    }
    Ok(id)
}

/// `shmget` with `flags` as given (the caller strips `IPC_DIPC`, which is
/// `SHM_NORESERVE` to the kernel).
pub fn shmget(key: i32, size: u64, flags: i32) -> Result<i32, i32> {
    let size = usize::try_from(size).map_err(|_| libc::EINVAL)?;
    // SAFETY: shmget takes plain values.
    let id = unsafe { raw::shmget(key, size, flags) };
    if id < 0 {
        return Err(errno());
    }
    Ok(id)
}

pub fn shmctl_stat(id: i32) -> Result<ShmInfo, i32> {
    // SAFETY: shmid_ds is plain data; zero is a valid value.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: ds is a valid shmid_ds.
    if unsafe { raw::shmctl(id, libc::IPC_STAT, &mut ds) } < 0 {
        return Err(errno());
    }
    Ok(shm_from(&ds))
}

pub fn shmctl_set(id: i32, set: &IpcSet) -> Result<(), i32> {
    // SAFETY: as above.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    ds.shm_perm.uid = set.uid;
    ds.shm_perm.gid = set.gid;
    ds.shm_perm.mode = set.mode as libc::c_ushort;
    // SAFETY: ds is a valid shmid_ds.
    if unsafe { raw::shmctl(id, libc::IPC_SET, &mut ds) } < 0 {
        return Err(errno());
    }
    Ok(())
}

pub fn shmctl_rmid(id: i32) -> Result<(), i32> {
    // SAFETY: IPC_RMID takes no buffer.
    if unsafe { raw::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) } < 0 {
        return Err(errno());
    }
    Ok(())
}

/// Linux's `*_STAT_ANY` commands (not in the libc crate): `IPC_STAT` by
/// index, without the read-permission check, as `ipcs` and
/// `/proc/sysvipc` show every structure to anyone on the host.
const MSG_STAT_ANY: i32 = 13;
const SEM_STAT_ANY: i32 = 20;
const SHM_STAT_ANY: i32 = 15;

/// Finds structure `id` with `stat(index)` (a `*_STAT_ANY` call that
/// returns the id at that index): the index is the id's low bits, 15 of
/// them, or 24 with the kernel's `ipcmni_extend`.
fn stat_any<T>(id: i32, mut stat: impl FnMut(i32, &mut T) -> i32, init: T) -> Result<T, i32> {
    if id < 0 {
        return Err(libc::EINVAL);
    }
    let mut ds = init;
    for idx in [id & 0x7fff, id & 0xff_ffff] {
        let r = stat(idx, &mut ds);
        if r == id {
            return Ok(ds);
        }
        if r < 0 && errno() != libc::EINVAL {
            return Err(errno());
        }
    }
    // Nothing at the index, or another structure since: as IPC_STAT of an
    // id that no longer exists.
    Err(libc::EINVAL)
}

/// `IPC_STAT` of queue `id` for anyone (`MSG_STAT_ANY`).
pub fn msgctl_stat_any(id: i32) -> Result<MsqInfo, i32> {
    let ds = stat_any(
        id,
        // SAFETY: MSG_STAT_ANY writes a msqid_ds.
        |idx, ds: &mut libc::msqid_ds| unsafe { raw::msgctl(idx, MSG_STAT_ANY, ds) },
        // SAFETY: msqid_ds is plain data; zero is a valid value.
        unsafe { std::mem::zeroed() },
    )?;
    Ok(msq_from(&ds))
}

/// `IPC_STAT` of semaphore set `id` for anyone (`SEM_STAT_ANY`).
pub fn semctl_stat_any(id: i32) -> Result<SemInfo, i32> {
    let ds = stat_any(
        id,
        // SAFETY: SEM_STAT_ANY writes a semid_ds.
        |idx, ds: &mut libc::semid_ds| unsafe {
            raw::semctl(idx, 0, SEM_STAT_ANY, ds as *mut libc::semid_ds as usize)
        },
        // SAFETY: semid_ds is plain data; zero is a valid value.
        unsafe { std::mem::zeroed() },
    )?;
    Ok(sem_from(&ds))
}

/// `IPC_STAT` of segment `id` for anyone (`SHM_STAT_ANY`).
pub fn shmctl_stat_any(id: i32) -> Result<ShmInfo, i32> {
    let ds = stat_any(
        id,
        // SAFETY: SHM_STAT_ANY writes a shmid_ds.
        |idx, ds: &mut libc::shmid_ds| unsafe { raw::shmctl(idx, SHM_STAT_ANY, ds) },
        // SAFETY: shmid_ds is plain data; zero is a valid value.
        unsafe { std::mem::zeroed() },
    )?;
    Ok(shm_from(&ds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msgmax_is_the_kernels() {
        let proc: usize = std::fs::read_to_string("/proc/sys/kernel/msgmax")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(msgmax(), proc);
    }

    #[test]
    fn key_of_reads_the_kernels_table_without_permission() {
        let t = "       key      msqid perms\n        -5          0   600\n  11259375      32769     0\n";
        assert_eq!(key_in_table(t, 0), Some(-5));
        assert_eq!(key_in_table(t, 32769), Some(0xabcdef));
        assert_eq!(key_in_table(t, 1), None);
        let key = 0x5ef0_0000 | (std::process::id() as i32 & 0xffff);
        let id = msgget(key, libc::IPC_CREAT | libc::IPC_EXCL).unwrap();
        assert_eq!(key_of(IpcKind::Msg, id), Some(key));
        msgctl_rmid(id).unwrap();
        assert_eq!(key_of(IpcKind::Msg, id), None);
    }

    #[test]
    fn key_may_name_only_what_the_kernel_shows() {
        // A key of its own for this test: the process id, in a range of
        // its own.
        let key = 0x5ee0_0000 | (std::process::id() as i32 & 0xffff);
        let id = msgget(key, libc::IPC_CREAT | libc::IPC_EXCL | 0o600).unwrap();
        assert!(key_may_name(IpcKind::Msg, key, id));
        assert!(!key_may_name(IpcKind::Msg, key, id + 1));
        assert!(!key_may_name(IpcKind::Sem, key, id));
        msgctl_rmid(id).unwrap();
        assert!(!key_may_name(IpcKind::Msg, key, id));
    }

    /// `*_STAT_ANY` finds a structure by id, whatever its mode, and
    /// refuses an id that names none.
    #[test]
    fn stat_any_finds_structures_by_id() {
        let q = msgget(libc::IPC_PRIVATE, libc::IPC_CREAT).unwrap();
        msgsnd(q, 1, b"abc", 0).unwrap();
        let i = msgctl_stat_any(q).unwrap();
        assert_eq!((i.qnum, i.cbytes, i.perm.mode & 0o777), (1, 3, 0));
        msgctl_rmid(q).unwrap();
        assert_eq!(msgctl_stat_any(q).unwrap_err(), libc::EINVAL);
        let s = semget(libc::IPC_PRIVATE, 3, libc::IPC_CREAT | 0o600).unwrap();
        assert_eq!(semctl_stat_any(s).unwrap().nsems, 3);
        semctl_int(s, 0, libc::IPC_RMID, 0).unwrap();
        let m = shmget(libc::IPC_PRIVATE, 8192, libc::IPC_CREAT | 0o600).unwrap();
        assert_eq!(shmctl_stat_any(m).unwrap().segsz, 8192);
        shmctl_rmid(m).unwrap();
        assert_eq!(shmctl_stat_any(-1).unwrap_err(), libc::EINVAL);
    }
}
