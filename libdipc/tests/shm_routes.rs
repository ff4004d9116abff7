//! The System V calls of `dipc::shm` through the C API, with a fake dipcd
//! (key look-ups, `ShmOpen`, sessions to "another host") and fake managers,
//! so that shmget/shmat/shmctl/shmdt are checked on both routes without
//! real daemons: a segment this host owns (manager on its Unix socket) and
//! one owned by another host (attach on a session that the fake worker
//! serves as the manager would).

use dipc::capi::{dipc_shmat, dipc_shmctl, dipc_shmdt, dipc_shmget};
use dipc::IPC_DIPC;
use dipc_common::channel::{Channel, Codec};
use dipc_common::secure::Secure;
use dipc_common::sysv;
use dipc_common::wire::{IpcKind, IpcPerm, Message, Origin, SessionKeys, ShmInfo, KEY_LEN};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;

const MAX_FRAME: u32 = 1 << 20;
/// The "other host" owning the remote segments.
const OTHER: &str = "10.77.0.2:7100";
/// Its id for the remote segment, and that segment's size.
const REMOTE_ID: i32 = 777;
const REMOTE_SIZE: u64 = 8192;

fn page() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// Keys of this run: real kernel segments are made with them, and other
/// runs on the same machine must not meet them.
fn key(n: i32) -> i32 {
    0x5e00_0000 | ((std::process::id() as i32 & 0xffff) << 4) | n
}

fn errno() -> i32 {
    sysv::errno()
}

/// What the fakes saw, for the tests to check.
#[derive(Default)]
struct Seen {
    /// key -> (owner id, placeholder id)
    keys: HashMap<i32, (i32, i32)>,
    removed: Vec<i32>,
    /// IPC_RMIDs the fake worker carried out (the real one then frees the
    /// key itself, from the owner host).
    remote_rmids: u32,
    /// Content written back to the fake managers, by (id, unit).
    written: HashMap<(i32, u32), Vec<u8>>,
    attaches: Vec<(i32, bool)>,
    /// Keys whose segment lives on OTHER.
    remote_keys: Vec<i32>,
    /// Ids whose manager refuses attaches.
    refuse: Vec<i32>,
}

struct Fake {
    dir: PathBuf,
    seen: Arc<Mutex<Seen>>,
}

/// Starts the fake dipcd once for the whole test binary and points
/// `$DIPC_CONFIG` at a configuration using its runtime directory.
static FAKE: OnceLock<Fake> = OnceLock::new();

fn fake() -> &'static Fake {
    FAKE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("dipc-shm-routes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("dipc.conf");
        std::fs::write(
            &conf,
            format!(
                "runtime_dir = \"{}\"\nsecret_file = \"{}/secret\"\n[timeouts]\nrequest_ms = 3000\n",
                dir.display(),
                dir.display()
            ),
        )
        .unwrap();
        // Before any dipc call reads the configuration (once, for good).
        std::env::set_var("DIPC_CONFIG", &conf);
        // SAFETY: registering a plain extern "C" function.
        unsafe { libc::atexit(clean_up) };
        let seen = Arc::new(Mutex::new(Seen::default()));
        let listener = UnixListener::bind(dir.join("dipcd.sock")).unwrap();
        let (s, d) = (seen.clone(), dir.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                let (s, d) = (s.clone(), d.clone());
                thread::spawn(move || dipcd(conn.unwrap(), s, d));
            }
        });
        Fake { dir, seen }
    })
}

/// One application connection to the fake dipcd.
fn dipcd(conn: UnixStream, seen: Arc<Mutex<Seen>>, dir: PathBuf) {
    let me: SocketAddr = "127.0.0.1:7100".parse().unwrap();
    let other: SocketAddr = OTHER.parse().unwrap();
    let mut ch = Channel::new(conn, MAX_FRAME);
    while let Ok((rid, msg)) = ch.recv() {
        let reply = match msg {
            Message::KeyGet { kind, key, .. } => {
                assert_eq!(kind, IpcKind::Shm);
                let mut s = seen.lock().unwrap();
                if s.remote_keys.contains(&key) {
                    // A placeholder: a private segment of mode 0, as
                    // dipcd makes them, once per key.
                    let local = match s.keys.get(&key) {
                        Some(&(_, local)) => local,
                        None => sysv::shmget(libc::IPC_PRIVATE, 4096, 0).unwrap(),
                    };
                    s.keys.insert(key, (REMOTE_ID, local));
                    Message::KeyOwner {
                        owner: other,
                        id: REMOTE_ID,
                        local_id: local,
                        origin: Origin {
                            key,
                            incarnation: 1,
                        },
                    }
                } else {
                    match s.keys.get(&key) {
                        Some(&(id, _)) => Message::KeyOwner {
                            owner: me,
                            id,
                            local_id: id,
                            origin: Origin {
                                key,
                                incarnation: 2,
                            },
                        },
                        None => Message::KeyOwner {
                            owner: me,
                            id: -1,
                            local_id: -1,
                            origin: Origin {
                                key,
                                incarnation: 0,
                            },
                        },
                    }
                }
            }
            Message::KeyCommit { key, id, .. } => {
                seen.lock().unwrap().keys.insert(key, (id, id));
                Message::Done { value: 0 }
            }
            Message::KeyRemove { key, .. } => {
                let mut s = seen.lock().unwrap();
                s.removed.push(key);
                if let Some((_, local)) = s.keys.remove(&key) {
                    if s.remote_keys.contains(&key) {
                        let _ = sysv::shmctl_rmid(local);
                    }
                }
                Message::Done { value: 0 }
            }
            Message::ShmOpen { id } => {
                // dipcd makes sure the manager runs and its socket is bound.
                let path = dir.join(format!("shm-{id}.sock"));
                if !path.exists() {
                    let l = UnixListener::bind(&path).unwrap();
                    let s = seen.clone();
                    thread::spawn(move || {
                        let count = Arc::new(Mutex::new(0u64));
                        for c in l.incoming() {
                            let (s, count) = (s.clone(), count.clone());
                            thread::spawn(move || {
                                let size = sysv::shmctl_stat(id).unwrap().segsz;
                                manager(Channel::new(c.unwrap(), MAX_FRAME), id, size, s, count)
                            });
                        }
                    });
                }
                Message::Done { value: 0 }
            }
            Message::Connect { target } => {
                assert_eq!(target, other);
                let (ours, theirs) = UnixStream::pair().unwrap();
                // The session is sealed as a real one is: the application
                // gets one side of the channel's keys, the worker the other.
                let keys = SessionKeys {
                    tx_key: [0x11; KEY_LEN],
                    tx_n: 2,
                    rx_key: [0x22; KEY_LEN],
                    rx_n: 2,
                };
                let mirror = keys.peer();
                ch.send(rid, &Message::SessionReady { pid_d: 0, keys })
                    .unwrap();
                dipc_common::sys::send_fd(ch.get_ref(), &theirs).unwrap();
                let s = seen.clone();
                let wch = Channel::new(ours, MAX_FRAME)
                    .with_codec(Codec::Secure(Box::new(Secure::from_keys(&mirror))));
                thread::spawn(move || worker(wch, s));
                continue;
            }
            other => Message::error(libc::ENOSYS, format!("fake dipcd: {other:?}")),
        };
        ch.send(rid, &reply).unwrap();
    }
}

/// The fake worker on OTHER: `ShmCtl` calls, and `ShmAttach`, after which
/// it serves the connection as the manager.
fn worker(mut ch: Channel<UnixStream>, seen: Arc<Mutex<Seen>>) {
    let count = Arc::new(Mutex::new(1u64)); // someone on OTHER attached
    while let Ok((rid, msg)) = ch.recv() {
        // Every call names what the get resolved the id from: the key and
        // the owner's incarnation the fake dipcd gave (1).
        let origin = match &msg {
            Message::ShmCtl { origin, .. } | Message::ShmAttach { origin, .. } => Some(*origin),
            _ => None,
        };
        if let Some(o) = origin.filter(|o| o.incarnation != 1 || o.key == libc::IPC_PRIVATE) {
            let reply = Message::error(libc::EIDRM, format!("fake worker: origin {o:?}"));
            ch.send(rid, &reply).unwrap();
            continue;
        }
        let reply = match msg {
            Message::ShmCtl {
                id: REMOTE_ID,
                cmd: libc::IPC_STAT,
                ..
            } => Message::ShmStat {
                info: ShmInfo {
                    perm: IpcPerm {
                        key: 0x7e,
                        mode: 0o666,
                        ..IpcPerm::default()
                    },
                    segsz: REMOTE_SIZE,
                    nattch: *count.lock().unwrap() + 1,
                    ..ShmInfo::default()
                },
            },
            Message::ShmCtl {
                id: REMOTE_ID,
                cmd: libc::IPC_RMID,
                ..
            } => {
                seen.lock().unwrap().remote_rmids += 1;
                Message::Done { value: 0 }
            }
            Message::ShmAttach { .. } => {
                return manager_after(ch, rid, msg, REMOTE_ID, REMOTE_SIZE, seen, count)
            }
            // The owner's shmget of the key, as its kernel answers it.
            Message::IpcGet {
                kind: IpcKind::Shm,
                size,
                ..
            } if size <= REMOTE_SIZE => Message::Vouched {
                id: REMOTE_ID,
                vouch: [0; 32],
            },
            Message::IpcGet { .. } => Message::error(libc::EINVAL, "larger than the segment"),
            other => Message::error(libc::EINVAL, format!("fake worker: {other:?}")),
        };
        ch.send(rid, &reply).unwrap();
    }
}

/// A fake manager's connection: `ShmQuery` or `ShmAttach` first.
fn manager(
    mut ch: Channel<UnixStream>,
    id: i32,
    size: u64,
    seen: Arc<Mutex<Seen>>,
    count: Arc<Mutex<u64>>,
) {
    let Ok((rid, msg)) = ch.recv() else { return };
    if let Message::ShmQuery { id: q, .. } = msg {
        assert_eq!(q, id);
        let nattch = *count.lock().unwrap();
        let _ = ch.send(
            rid,
            &Message::ShmState {
                nattch,
                unit: page() as u64,
                hosts: vec![],
                runs: vec![],
            },
        );
        return;
    }
    manager_after(ch, rid, msg, id, size, seen, count)
}

/// Serves one participant, the only one: every fault is granted as asked,
/// with zero content the first time; write-backs are recorded.
fn manager_after(
    mut ch: Channel<UnixStream>,
    rid: u64,
    attach: Message,
    id: i32,
    size: u64,
    seen: Arc<Mutex<Seen>>,
    count: Arc<Mutex<u64>>,
) {
    let Message::ShmAttach {
        id: aid, readonly, ..
    } = attach
    else {
        panic!("expected ShmAttach, got {attach:?}");
    };
    assert_eq!(aid, id);
    if seen.lock().unwrap().refuse.contains(&id) {
        let _ = ch.send(rid, &Message::error(libc::EACCES, "permission denied"));
        return;
    }
    seen.lock().unwrap().attaches.push((id, readonly));
    *count.lock().unwrap() += 1;
    let unit = page() as u64;
    ch.send(rid, &Message::ShmAttached { size, unit }).unwrap();
    let mut wb: HashMap<u32, Vec<u8>> = HashMap::new();
    while let Ok((rid, msg)) = ch.recv() {
        match msg {
            Message::ShmFault { unit: u, write } => {
                assert!(!(readonly && write), "a read-only attach asked for write");
                ch.send(
                    0,
                    &Message::ShmData {
                        unit: u,
                        offset: 0,
                        data: vec![if id == REMOTE_ID { 9 } else { 0 }; unit as usize],
                    },
                )
                .unwrap();
                ch.send(0, &Message::ShmGrant { unit: u, write }).unwrap();
            }
            Message::ShmData { unit: u, data, .. } => wb.entry(u).or_default().extend(data),
            Message::ShmRevoked { unit: u } => {
                let data = wb.remove(&u).unwrap_or_default();
                seen.lock().unwrap().written.insert((id, u), data);
            }
            Message::ShmDetach => {
                *count.lock().unwrap() -= 1;
                ch.send(rid, &Message::Done { value: 0 }).unwrap();
            }
            other => panic!("fake manager: unexpected {other:?}"),
        }
    }
}

fn stat(id: i32) -> Result<libc::shmid_ds, i32> {
    // SAFETY: shmid_ds is plain data.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: ds is a valid buffer for IPC_STAT.
    if unsafe { dipc_shmctl(id, libc::IPC_STAT, &mut ds) } != 0 {
        return Err(errno());
    }
    Ok(ds)
}

fn shmat(id: i32, flags: i32) -> Result<*mut u8, i32> {
    // SAFETY: no address, nothing replaced.
    let p = unsafe { dipc_shmat(id, std::ptr::null(), flags) };
    if p as isize == -1 {
        return Err(errno());
    }
    Ok(p as *mut u8)
}

#[test]
fn a_segment_owned_here() {
    let f = fake();
    let pg = page();
    let key = key(1);
    let size = 3 * pg + 100;
    let id = dipc_shmget(key, size, libc::IPC_CREAT | IPC_DIPC | 0o666);
    assert!(id >= 0, "shmget: errno {}", errno());
    // A real kernel segment here, of the asked size, known to the referee.
    assert_eq!(sysv::shmctl_stat(id).unwrap().segsz, size as u64);
    assert_eq!(f.seen.lock().unwrap().keys.get(&key), Some(&(id, id)));
    // A second get finds it; a larger size is the kernel's EINVAL.
    assert_eq!(dipc_shmget(key, size, IPC_DIPC | 0o666), id);
    assert_eq!(dipc_shmget(key, size + 1, IPC_DIPC | 0o666), -1);
    assert_eq!(errno(), libc::EINVAL);

    let p = shmat(id, 0).unwrap();
    // SAFETY: p is the attachment, size bytes long.
    unsafe {
        p.add(pg + 1).write_volatile(0xab);
        assert_eq!(p.add(size - 1).read_volatile(), 0);
    }
    assert!(f.seen.lock().unwrap().attaches.contains(&(id, false)));
    // nattch is the manager's count, not the kernel's (no process maps
    // the real segment here).
    assert_eq!(stat(id).unwrap().shm_nattch, 1);
    assert_eq!(stat(id).unwrap().shm_segsz, size);
    assert_eq!(
        // SAFETY: valid buffer; SHM_LOCK is refused before it is used.
        unsafe { dipc_shmctl(id, libc::SHM_LOCK, std::ptr::null_mut()) },
        -1
    );
    assert_eq!(errno(), libc::EINVAL);

    // SAFETY: p is not used after.
    assert_eq!(unsafe { dipc_shmdt(p as *const libc::c_void) }, 0);
    let written = f.seen.lock().unwrap().written.get(&(id, 1)).cloned();
    let mut expect = vec![0; pg];
    expect[1] = 0xab;
    assert_eq!(written, Some(expect));
    assert_eq!(stat(id).unwrap().shm_nattch, 0);
    assert_eq!(
        // SAFETY: IPC_RMID takes no buffer.
        unsafe { dipc_shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) },
        0
    );
    assert!(f.seen.lock().unwrap().removed.contains(&key));
    assert_eq!(sysv::shmctl_stat(id), Err(libc::EINVAL));
}

#[test]
fn a_segment_owned_by_another_host() {
    let f = fake();
    let key = key(2);
    f.seen.lock().unwrap().remote_keys.push(key);
    // Larger than the owner's segment: EINVAL, as the owner's kernel says.
    assert_eq!(
        dipc_shmget(
            key,
            REMOTE_SIZE as usize + 1,
            libc::IPC_CREAT | IPC_DIPC | 0o666
        ),
        -1
    );
    assert_eq!(errno(), libc::EINVAL);
    let id = dipc_shmget(key, 100, libc::IPC_CREAT | IPC_DIPC | 0o666);
    assert!(id >= 0, "shmget: errno {}", errno());
    assert_eq!(f.seen.lock().unwrap().keys.get(&key).unwrap().1, id);

    let ds = stat(id).unwrap();
    assert_eq!((ds.shm_segsz as u64, ds.shm_nattch), (REMOTE_SIZE, 2));
    assert_eq!(ds.shm_perm.__key, 0x7e);

    let p = shmat(id, libc::SHM_RDONLY).unwrap();
    // SAFETY: p is the attachment, REMOTE_SIZE bytes long.
    assert_eq!(unsafe { p.add(5000).read_volatile() }, 9);
    assert!(f.seen.lock().unwrap().attaches.contains(&(REMOTE_ID, true)));
    // SAFETY: p is not used after.
    assert_eq!(unsafe { dipc_shmdt(p as *const libc::c_void) }, 0);
    assert_eq!(
        // SAFETY: IPC_RMID takes no buffer.
        unsafe { dipc_shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) },
        0
    );
    // The owner's worker frees the key; this host's dipcd could not check
    // that the segment is gone, so the library does not ask it to.
    let s = f.seen.lock().unwrap();
    assert_eq!(s.remote_rmids, 1);
    assert!(!s.removed.contains(&key));
}

#[test]
fn an_attach_the_manager_refuses() {
    let f = fake();
    let key = key(3);
    let id = dipc_shmget(key, 4096, libc::IPC_CREAT | IPC_DIPC | 0o600);
    assert!(id >= 0, "shmget: errno {}", errno());
    f.seen.lock().unwrap().refuse.push(id);
    assert_eq!(shmat(id, 0), Err(libc::EACCES));
    assert_eq!(
        // SAFETY: IPC_RMID takes no buffer.
        unsafe { dipc_shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) },
        0
    );
}

#[test]
fn plain_segments_stay_plain() {
    let _ = fake();
    let id = dipc_shmget(libc::IPC_PRIVATE, 4096, IPC_DIPC | 0o600);
    assert!(id >= 0);
    let p = shmat(id, 0).unwrap();
    // SAFETY: a plain 4096-byte kernel segment.
    unsafe { p.write_volatile(3) };
    assert_eq!(stat(id).unwrap().shm_nattch, 1);
    // SAFETY: p is not used after.
    assert_eq!(unsafe { dipc_shmdt(p as *const libc::c_void) }, 0);
    assert_eq!(
        // SAFETY: IPC_RMID takes no buffer.
        unsafe { dipc_shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) },
        0
    );
    // Not attached any more: shmdt's own EINVAL.
    // SAFETY: shmdt checks the address.
    assert_eq!(unsafe { dipc_shmdt(p as *const libc::c_void) }, -1);
    assert_eq!(errno(), libc::EINVAL);
}

/// Removes the fake's runtime directory when the test binary exits.
extern "C" fn clean_up() {
    if let Some(f) = FAKE.get() {
        let _ = std::fs::remove_dir_all(&f.dir);
    }
}
