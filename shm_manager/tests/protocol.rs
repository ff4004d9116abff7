//! The manager's protocol, spoken by hand over its Unix socket against a
//! real System V segment: attach, read and write faults, revocation with
//! the writer's content, detach with write-back, permissions, a dead
//! writer's units lost, and the query.

use dipc_common::channel::Channel;
use dipc_common::config::Config;
use dipc_common::wire::{Message, Origin};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

const PAGE: usize = 4096;
const SIZE: usize = 3 * PAGE + 100;

struct Segment(i32);

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: IPC_RMID takes no buffer.
        unsafe { libc::shmctl(self.0, libc::IPC_RMID, std::ptr::null_mut()) };
    }
}

fn config(dir: &Path, mode: &str) -> Config {
    let text = format!(
        "runtime_dir = \"{}\"\n[host]\naddress = \"127.0.0.1\"\n[timeouts]\nrequest_ms = 1000\n[shm]\nmode = \"{mode}\"\nquantum_ms = 0\n",
        dir.display()
    );
    Config::from_toml_str(&text, Path::new("test.conf")).unwrap()
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dipc-shm-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A segment filled with a known pattern, and its manager on a thread.
fn start(name: &str, mode: &str) -> (Segment, &'static Config) {
    let dir = tempdir(name);
    let config: &'static Config = Box::leak(Box::new(config(&dir, mode)));
    // SAFETY: shmget takes no pointers.
    let id = unsafe { libc::shmget(libc::IPC_PRIVATE, SIZE, libc::IPC_CREAT | 0o600) };
    assert!(id >= 0);
    // SAFETY: a new mapping at an address the kernel picks.
    let p = unsafe { libc::shmat(id, std::ptr::null(), 0) } as *mut u8;
    for i in 0..SIZE {
        // SAFETY: i < SIZE, the segment's size (a failed shmat is -1 and
        // faults here, which fails the test).
        unsafe { *p.add(i) = (i % 251) as u8 };
    }
    // SAFETY: p is not used after.
    unsafe { libc::shmdt(p as *const libc::c_void) };
    let listener = std::os::unix::net::UnixListener::bind(config.shm_socket(id)).unwrap();
    std::thread::spawn(move || dipc_shm_manager::run(listener, id, config));
    (Segment(id), config)
}

fn attach(config: &Config, id: i32) -> (Channel<UnixStream>, u64) {
    let s = UnixStream::connect(config.shm_socket(id)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut ch = Channel::new(s, config.max_frame);
    match ch
        .call(
            7,
            &Message::ShmAttach {
                id,
                origin: Origin::default(),
                readonly: false,
                handover: None,
            },
        )
        .unwrap()
    {
        Message::ShmAttached { size, unit } => {
            assert_eq!(size, SIZE as u64);
            (ch, unit)
        }
        other => panic!("attach: {other:?}"),
    }
}

/// Collects content frames until the grant (or loss) of `unit`.
fn until_grant(ch: &mut Channel<UnixStream>, unit: u32) -> (Vec<u8>, Message) {
    let mut data = Vec::new();
    loop {
        let (_, m) = ch.recv().unwrap();
        match m {
            Message::ShmData {
                unit: u,
                offset,
                data: d,
            } => {
                assert_eq!(u, unit);
                assert_eq!(offset as usize, data.len());
                data.extend_from_slice(&d);
            }
            m @ (Message::ShmGrant { .. } | Message::ShmLost { .. }) => return (data, m),
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn pattern(start: usize, len: usize) -> Vec<u8> {
    (start..start + len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn read_write_revoke_and_write_back() {
    let (seg, config) = start("rw", "page");
    let (mut a, unit) = attach(config, seg.0);
    assert_eq!(unit, PAGE as u64);
    let (mut b, _) = attach(config, seg.0);

    // A read miss brings the owner's content; the short last unit is
    // padded to the page (the segment is mapped in whole pages).
    a.send(
        1,
        &Message::ShmFault {
            unit: 3,
            write: false,
        },
    )
    .unwrap();
    let (data, grant) = until_grant(&mut a, 3);
    assert_eq!(
        grant,
        Message::ShmGrant {
            unit: 3,
            write: false
        }
    );
    assert_eq!(&data[..100], &pattern(3 * PAGE, 100)[..]);

    // b writes unit 3: a must drop its copy first.
    b.send(
        1,
        &Message::ShmFault {
            unit: 3,
            write: true,
        },
    )
    .unwrap();
    let (_, m) = a.recv().unwrap();
    assert_eq!(
        m,
        Message::ShmRevoke {
            unit: 3,
            keep_read: false,
            want_data: false
        }
    );
    a.send(2, &Message::ShmRevoked { unit: 3 }).unwrap();
    let (data, grant) = until_grant(&mut b, 3);
    assert_eq!(
        grant,
        Message::ShmGrant {
            unit: 3,
            write: true
        }
    );
    assert_eq!(data.len(), PAGE);

    // a reads again: b gives its (changed) content back and keeps reading.
    a.send(
        3,
        &Message::ShmFault {
            unit: 3,
            write: false,
        },
    )
    .unwrap();
    let (_, m) = b.recv().unwrap();
    assert_eq!(
        m,
        Message::ShmRevoke {
            unit: 3,
            keep_read: true,
            want_data: true
        }
    );
    let written = vec![0xAB; PAGE];
    b.send(
        0,
        &Message::ShmData {
            unit: 3,
            offset: 0,
            data: written.clone(),
        },
    )
    .unwrap();
    b.send(0, &Message::ShmRevoked { unit: 3 }).unwrap();
    let (data, _) = until_grant(&mut a, 3);
    assert_eq!(data, written);

    // Content past a unit's end is a protocol error: the participant is
    // dropped.
    b.send(
        4,
        &Message::ShmFault {
            unit: 1,
            write: true,
        },
    )
    .unwrap();
    let _ = until_grant(&mut b, 1);
    b.send(
        0,
        &Message::ShmData {
            unit: 1,
            offset: 4000,
            data: vec![0; 200],
        },
    )
    .unwrap();
    assert!(b.recv().is_err());

    // b held unit 1 for write and is gone: unit 1 is lost for everyone.
    a.send(
        5,
        &Message::ShmFault {
            unit: 1,
            write: false,
        },
    )
    .unwrap();
    let (_, m) = until_grant(&mut a, 1);
    assert_eq!(m, Message::ShmLost { unit: 1 });

    // A detach after a write-back keeps what was written.
    a.send(
        6,
        &Message::ShmFault {
            unit: 0,
            write: true,
        },
    )
    .unwrap();
    let _ = until_grant(&mut a, 0);
    a.send(
        0,
        &Message::ShmData {
            unit: 0,
            offset: 0,
            data: vec![0x5A; PAGE],
        },
    )
    .unwrap();
    a.send(0, &Message::ShmRevoked { unit: 0 }).unwrap();
    assert_eq!(
        a.call(9, &Message::ShmDetach).unwrap(),
        Message::Done { value: 0 }
    );
    let (mut c, _) = attach(config, seg.0);
    c.send(
        1,
        &Message::ShmFault {
            unit: 0,
            write: false,
        },
    )
    .unwrap();
    let (data, _) = until_grant(&mut c, 0);
    assert_eq!(data, vec![0x5A; PAGE]);

    // The query: one attached, unit 0 read by this host, unit 1 lost.
    let q = UnixStream::connect(config.shm_socket(seg.0)).unwrap();
    let mut q = Channel::new(q, config.max_frame);
    match q
        .call(
            1,
            &Message::ShmQuery {
                id: seg.0,
                origin: Origin::default(),
            },
        )
        .unwrap()
    {
        Message::ShmState {
            nattch,
            unit,
            hosts,
            runs,
        } => {
            assert_eq!(nattch, 1);
            assert_eq!(unit, PAGE as u64);
            assert_eq!(hosts, vec![config.front_end_addr()]);
            assert_eq!(runs[0].first, 0);
            assert_eq!(runs[0].readers, vec![0]);
            assert!(runs.iter().any(|r| r.first == 1 && r.lost));
        }
        other => panic!("query: {other:?}"),
    }
}

#[test]
fn segment_mode_moves_the_whole_segment() {
    let (seg, config) = start("seg", "segment");
    let (mut a, unit) = attach(config, seg.0);
    assert_eq!(unit, (4 * PAGE) as u64);
    a.send(
        1,
        &Message::ShmFault {
            unit: 0,
            write: false,
        },
    )
    .unwrap();
    let (data, _) = until_grant(&mut a, 0);
    assert_eq!(data.len(), 4 * PAGE);
    assert_eq!(&data[..SIZE], &pattern(0, SIZE)[..]);
    // There is no unit 1.
    a.send(
        2,
        &Message::ShmFault {
            unit: 1,
            write: false,
        },
    )
    .unwrap();
    assert!(a.recv().is_err());
}

#[test]
fn a_participant_that_does_not_answer_is_dropped() {
    let (seg, config) = start("late", "page");
    let (mut a, _) = attach(config, seg.0);
    let (mut b, _) = attach(config, seg.0);
    a.send(
        1,
        &Message::ShmFault {
            unit: 0,
            write: true,
        },
    )
    .unwrap();
    let _ = until_grant(&mut a, 0);
    b.send(
        1,
        &Message::ShmFault {
            unit: 0,
            write: false,
        },
    )
    .unwrap();
    // a never answers the revocation: after the request time-out (1 s
    // here) it is dropped and the unit, whose only copy it had, is lost.
    let (_, m) = a.recv().unwrap();
    assert!(matches!(m, Message::ShmRevoke { .. }));
    let (_, m) = until_grant(&mut b, 0);
    assert_eq!(m, Message::ShmLost { unit: 0 });
}

/// One participant that floods the manager cannot keep it from the
/// others: a read fault of b is answered while a still writes. `a` sends
/// write-backs of a unit it does not hold (which the manager drops
/// without an answer, as a copy that crossed a revocation), as fast as it
/// can, for far longer than a fault takes. The manager takes at most 64
/// frames from one participant before the others get their turn, so one
/// that writes faster than the manager reads cannot hold them up. (On
/// this machine the manager also kept up with the flood before it had
/// that budget: this test did not fail without it.)
#[test]
fn a_flooding_participant_does_not_hold_up_the_others() {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let (seg, config) = start("flood", "page");
    let (a, _) = attach(config, seg.0);
    let (mut b, _) = attach(config, seg.0);
    let mut chunk = Vec::new();
    while chunk.len() < 64 * 1024 {
        dipc_common::wire::encode_shm_data(9, 0, 0, &[1], &mut chunk);
    }
    let flooding = Arc::new(AtomicBool::new(true));
    let stop = Arc::new(AtomicBool::new(false));
    let (f, st) = (flooding.clone(), stop.clone());
    let (mut s, _) = a.into_parts();
    let flood = std::thread::spawn(move || {
        // Up to 1.3 GB: minutes of work for the manager.
        for _ in 0..20_000 {
            if st.load(Ordering::SeqCst) || s.write_all(&chunk).is_err() {
                break;
            }
        }
        f.store(false, Ordering::SeqCst);
    });
    std::thread::sleep(Duration::from_millis(200));
    b.send(
        1,
        &Message::ShmFault {
            unit: 1,
            write: false,
        },
    )
    .unwrap();
    let (_, grant) = until_grant(&mut b, 1);
    let still = flooding.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    flood.join().unwrap();
    assert_eq!(
        grant,
        Message::ShmGrant {
            unit: 1,
            write: false
        }
    );
    assert!(
        still,
        "b's fault was answered only once a had stopped flooding"
    );
}

#[test]
fn nothing_a_participant_sends_after_its_detach_is_taken() {
    let (seg, config) = start("after-detach", "page");
    let (a, _) = attach(config, seg.0);
    // A detach and a write fault in one write: the fault must not make the
    // detached participant a writer that nobody will ever hear from.
    let mut frames = Vec::new();
    dipc_common::wire::encode_frame(2, &Message::ShmDetach, &mut frames);
    dipc_common::wire::encode_frame(
        3,
        &Message::ShmFault {
            unit: 0,
            write: true,
        },
        &mut frames,
    );
    let mut s = a.into_inner();
    std::io::Write::write_all(&mut s, &frames).unwrap();
    let mut a = Channel::new(s, config.max_frame);
    assert_eq!(a.recv().unwrap(), (2, Message::Done { value: 0 }));
    // Another participant writes unit 0: granted, not lost.
    let (mut b, _) = attach(config, seg.0);
    b.send(
        1,
        &Message::ShmFault {
            unit: 0,
            write: true,
        },
    )
    .unwrap();
    let (data, grant) = until_grant(&mut b, 0);
    assert_eq!(
        grant,
        Message::ShmGrant {
            unit: 0,
            write: true
        }
    );
    assert_eq!(data, pattern(0, PAGE));
}
