//! The shared memory agent against a fake manager: the library side of the
//! protocol (`ShmFault`/`ShmData`/`ShmGrant`/`ShmRevoke`/`ShmRevoked`/
//! `ShmLost`/`ShmDetach`) over socket pairs, without dipcd.
//!
//! Tests that must end in a signal (SIGBUS, SIGSEGV) run in a child
//! process: the test binary runs itself with one `child_*` test selected
//! and `DIPC_SHM_CHILD` set, and the parent checks how the child ended.

use dipc::shm::attach_with_connection;
use dipc_common::channel::Channel;
use dipc_common::wire::Message;
use std::collections::{BTreeSet, VecDeque};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const MAX_FRAME: u32 = 1 << 20;
/// Generous: a test fails by this time-out rather than hangs.
const WAIT: Duration = Duration::from_secs(10);

fn page() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// An address that may cross threads.
#[derive(Clone, Copy)]
struct Addr(usize);

impl Addr {
    fn read(self, off: usize) -> u8 {
        // SAFETY: off lies inside the attachment the test made.
        unsafe { std::ptr::read_volatile((self.0 + off) as *const u8) }
    }
    fn write(self, off: usize, v: u8) {
        // SAFETY: as above.
        unsafe { std::ptr::write_volatile((self.0 + off) as *mut u8, v) }
    }
    fn read_u64(self, off: usize) -> u64 {
        // SAFETY: as above, aligned by the caller.
        unsafe { std::ptr::read_volatile((self.0 + off) as *const u64) }
    }
    fn write_u64(self, off: usize, v: u64) {
        // SAFETY: as above.
        unsafe { std::ptr::write_volatile((self.0 + off) as *mut u64, v) }
    }
}

/// Runs `f` in a new thread; its result comes on the receiver (the thread
/// may block in a fault until the manager acts).
fn in_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> mpsc::Receiver<T> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx
}

/// The manager's end of one participant's connection, driven by the test.
struct Mgr {
    ch: Channel<UnixStream>,
}

impl Mgr {
    fn recv(&mut self) -> (u64, Message) {
        self.ch.recv().expect("a frame from the agent")
    }
    fn send(&mut self, m: Message) {
        self.ch.send(0, &m).expect("send to the agent");
    }
    fn expect_fault(&mut self) -> (u32, bool) {
        match self.recv() {
            (_, Message::ShmFault { unit, write }) => (unit, write),
            other => panic!("expected ShmFault, got {other:?}"),
        }
    }
    fn grant(&mut self, unit: u32, write: bool, data: Option<Vec<u8>>) {
        if let Some(data) = data {
            self.send(Message::ShmData {
                unit,
                offset: 0,
                data,
            });
        }
        self.send(Message::ShmGrant { unit, write });
    }
    /// Revokes and returns the content sent back (empty unless `want`).
    fn revoke(&mut self, unit: u32, keep_read: bool, want_data: bool) -> Vec<u8> {
        self.send(Message::ShmRevoke {
            unit,
            keep_read,
            want_data,
        });
        self.collect_until_revoked(unit)
    }
    fn collect_until_revoked(&mut self, unit: u32) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            match self.recv() {
                (
                    _,
                    Message::ShmData {
                        unit: u,
                        offset,
                        data,
                    },
                ) if u == unit => {
                    assert_eq!(offset as usize, out.len(), "chunks in order");
                    out.extend_from_slice(&data);
                }
                (_, Message::ShmRevoked { unit: u }) if u == unit => return out,
                other => panic!("expected ShmData/ShmRevoked for {unit}, got {other:?}"),
            }
        }
    }
    /// True if the agent sends nothing within `t`.
    fn quiet_for(&mut self, t: Duration) -> bool {
        self.ch.get_ref().set_read_timeout(Some(t)).unwrap();
        let r = self.ch.recv();
        self.ch.get_ref().set_read_timeout(Some(WAIT)).unwrap();
        match r {
            Err(dipc_common::channel::ChannelError::TimedOut) => true,
            Err(e) => panic!("connection failed: {e}"),
            Ok(m) => {
                eprintln!("unexpected frame {m:?}");
                false
            }
        }
    }
}

fn attach(size: usize, unit: usize, readonly: bool, timeout: Duration) -> (Mgr, Addr) {
    let (a, b) = UnixStream::pair().unwrap();
    b.set_read_timeout(Some(WAIT)).unwrap();
    let p = attach_with_connection(a, size as u64, unit as u64, readonly, timeout)
        .unwrap_or_else(|e| panic!("attach: errno {e}"));
    (
        Mgr {
            ch: Channel::new(b, MAX_FRAME),
        },
        Addr(p as usize),
    )
}

fn detach(p: Addr) -> Result<(), i32> {
    // SAFETY: the tests use no attachment after detaching it.
    unsafe { dipc::shm::detach(p.0 as *const libc::c_void) }
}

fn unit_content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[test]
fn read_fault_gets_data_and_the_access_completes() {
    let pg = page();
    let (mut m, p) = attach(3 * pg, pg, false, WAIT);
    let r = in_thread(move || (p.read(pg + 100), p.read(pg + 4000)));
    assert_eq!(m.expect_fault(), (1, false));
    let data = unit_content(pg, 7);
    m.grant(1, false, Some(data.clone()));
    assert_eq!(r.recv_timeout(WAIT).unwrap(), (data[100], data[4000]));
    // A second read of a granted unit is plain memory.
    let r = in_thread(move || p.read(pg + 1));
    assert_eq!(r.recv_timeout(WAIT).unwrap(), data[1]);
    assert!(m.quiet_for(Duration::from_millis(100)));
    // Another unit faults on its own.
    let r = in_thread(move || p.read(2 * pg));
    assert_eq!(m.expect_fault(), (2, false));
    m.grant(2, false, Some(vec![9; pg]));
    assert_eq!(r.recv_timeout(WAIT).unwrap(), 9);
    let d = in_thread(move || detach(p));
    expect_detach(&mut m, &[]);
    d.recv_timeout(WAIT).unwrap().unwrap();
}

/// Plays the manager's side of a detach: the write-backs listed (unit,
/// content), then `ShmDetach`, answered `Done`.
fn expect_detach(m: &mut Mgr, writes: &[(u32, &[u8])]) {
    for (unit, content) in writes {
        assert_eq!(&m.collect_until_revoked(*unit)[..], *content);
    }
    match m.recv() {
        (id, Message::ShmDetach) => m.ch.send(id, &Message::Done { value: 0 }).unwrap(),
        other => panic!("expected ShmDetach, got {other:?}"),
    }
}

#[test]
fn write_fault_and_revoke_with_data() {
    let pg = page();
    let (mut m, p) = attach(2 * pg, pg, false, WAIT);
    let r = in_thread(move || p.write(5, 7));
    // On x86-64 the fault says it is a write: one request, for write.
    let (unit, write) = m.expect_fault();
    assert_eq!(unit, 0);
    if !write {
        // Elsewhere the agent asks for read first, then for write.
        m.grant(0, false, Some(vec![0; pg]));
        assert_eq!(m.expect_fault(), (0, true));
        m.grant(0, true, None);
    } else {
        m.grant(0, true, Some(vec![0; pg]));
    }
    r.recv_timeout(WAIT).unwrap();

    // Revoke down to read: the written byte comes back, reads stay plain.
    let back = m.revoke(0, true, true);
    assert_eq!(back.len(), pg);
    assert_eq!(back[5], 7);
    let r = in_thread(move || p.read(5));
    assert_eq!(r.recv_timeout(WAIT).unwrap(), 7);
    assert!(m.quiet_for(Duration::from_millis(100)));

    // The page is protected against writes again: the next one faults.
    let r = in_thread(move || p.write(6, 8));
    assert_eq!(m.expect_fault(), (0, true));
    m.grant(0, true, None);
    r.recv_timeout(WAIT).unwrap();

    // Revoke everything: the next read faults too.
    let back = m.revoke(0, false, true);
    assert_eq!((back[5], back[6]), (7, 8));
    let r = in_thread(move || p.read(6));
    assert_eq!(m.expect_fault(), (0, false));
    let mut fresh = back.clone();
    fresh[6] = 99; // written elsewhere meanwhile
    m.grant(0, false, Some(fresh));
    assert_eq!(r.recv_timeout(WAIT).unwrap(), 99);

    // A revoke of a unit never held is acknowledged all the same.
    assert!(m.revoke(1, false, false).is_empty());
    let d = in_thread(move || detach(p));
    expect_detach(&mut m, &[]);
    d.recv_timeout(WAIT).unwrap().unwrap();
}

#[test]
fn data_in_chunks_and_a_short_last_unit() {
    let pg = page();
    // Two units of two pages; the segment ends half-way into the last page.
    let size = 3 * pg + pg / 2;
    let (mut m, p) = attach(size, 2 * pg, false, WAIT);
    let r = in_thread(move || (p.read(2 * pg + 10), p.read(3 * pg + 10)));
    assert_eq!(m.expect_fault(), (1, false));
    // The last unit is clipped to the mapping: two pages are there (the
    // half page rounds up), sent in two chunks.
    let content = unit_content(2 * pg, 3);
    m.send(Message::ShmData {
        unit: 1,
        offset: pg as u64,
        data: content[pg..].to_vec(),
    });
    m.send(Message::ShmData {
        unit: 1,
        offset: 0,
        data: content[..pg].to_vec(),
    });
    m.grant(1, true, None);
    assert_eq!(
        r.recv_timeout(WAIT).unwrap(),
        (content[10], content[pg + 10])
    );
    let r = in_thread(move || p.write(3 * pg + 11, 0xee));
    r.recv_timeout(WAIT).unwrap();
    let mut expect = content.clone();
    expect[pg + 11] = 0xee;
    let d = in_thread(move || detach(p));
    expect_detach(&mut m, &[(1, &expect)]);
    d.recv_timeout(WAIT).unwrap().unwrap();
}

#[test]
fn concurrent_faults_on_the_same_unit_are_asked_once() {
    let pg = page();
    let (mut m, p) = attach(4 * pg, pg, false, WAIT);
    let n = 8;
    let barrier = Arc::new(Barrier::new(n));
    let rs: Vec<_> = (0..n)
        .map(|i| {
            let b = barrier.clone();
            in_thread(move || {
                b.wait();
                p.read((i % 2) * pg + i)
            })
        })
        .collect();
    // Units 0 and 1 are each asked for once, however many threads wait.
    let mut asked = BTreeSet::new();
    for _ in 0..2 {
        let (unit, write) = m.expect_fault();
        assert!(!write);
        assert!(asked.insert(unit), "unit {unit} asked twice");
    }
    assert!(m.quiet_for(Duration::from_millis(200)));
    for unit in [0u32, 1] {
        m.grant(unit, false, Some(vec![unit as u8 + 1; pg]));
    }
    for (i, r) in rs.into_iter().enumerate() {
        assert_eq!(r.recv_timeout(WAIT).unwrap(), (i % 2) as u8 + 1);
    }
    let d = in_thread(move || detach(p));
    expect_detach(&mut m, &[]);
    d.recv_timeout(WAIT).unwrap().unwrap();
}

#[test]
fn a_writer_granted_only_read_asks_again() {
    let pg = page();
    let (mut m, p) = attach(pg, pg, false, WAIT);
    let r1 = in_thread(move || p.read(0));
    assert_eq!(m.expect_fault(), (0, false));
    // While read is asked for, a writer arrives: it waits for that answer
    // and then asks for write itself.
    let r2 = in_thread(move || p.write(1, 5));
    assert!(m.quiet_for(Duration::from_millis(100)));
    m.grant(0, false, Some(vec![1; pg]));
    assert_eq!(r1.recv_timeout(WAIT).unwrap(), 1);
    assert_eq!(m.expect_fault(), (0, true));
    m.grant(0, true, None);
    r2.recv_timeout(WAIT).unwrap();
    let mut expect = vec![1; pg];
    expect[1] = 5;
    let d = in_thread(move || detach(p));
    expect_detach(&mut m, &[(0, &expect)]);
    d.recv_timeout(WAIT).unwrap().unwrap();
}

#[test]
fn detach_writes_back_every_unit_held_for_write() {
    let pg = page();
    let (mut m, p) = attach(4 * pg, pg, false, WAIT);
    for unit in [0u32, 2] {
        let r = in_thread(move || p.write(unit as usize * pg + 3, unit as u8 + 40));
        assert_eq!(m.expect_fault().0, unit);
        m.grant(unit, true, Some(vec![0; pg]));
        r.recv_timeout(WAIT).unwrap();
    }
    // Unit 3 only read: nothing to write back.
    let r = in_thread(move || p.read(3 * pg));
    assert_eq!(m.expect_fault(), (3, false));
    m.grant(3, false, Some(vec![0; pg]));
    r.recv_timeout(WAIT).unwrap();

    let d = in_thread(move || detach(p));
    let mut u0 = vec![0; pg];
    u0[3] = 40;
    let mut u2 = vec![0; pg];
    u2[3] = 42;
    // The agent keeps answering revokes while it waits for Done.
    let mut back = Vec::new();
    for unit in [0u32, 2] {
        back.push((unit, m.collect_until_revoked(unit)));
    }
    let id = match m.recv() {
        (id, Message::ShmDetach) => id,
        other => panic!("expected ShmDetach, got {other:?}"),
    };
    assert_ne!(id, 0, "ShmDetach carries a request id");
    assert!(m.revoke(3, false, false).is_empty());
    assert!(d.try_recv().is_err(), "detach returned before Done");
    m.ch.send(id, &Message::Done { value: 0 }).unwrap();
    d.recv_timeout(WAIT).unwrap().unwrap();
    assert_eq!(back, vec![(0, u0), (2, u2)]);
    // Gone: a second detach is the kernel's EINVAL.
    assert_eq!(detach(p), Err(libc::EINVAL));
}

#[test]
fn detach_ends_when_the_manager_does_not_answer() {
    let pg = page();
    let (mut m, p) = attach(pg, pg, false, Duration::from_millis(300));
    let t0 = Instant::now();
    let d = in_thread(move || detach(p));
    assert!(matches!(m.recv(), (_, Message::ShmDetach)));
    d.recv_timeout(WAIT).unwrap().unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(300));
}

/// A manager that keeps many participants coherent (multiple readers,
/// single writer), as the real one does, for tests of the whole cycle.
struct Coherent {
    out: Vec<Channel<UnixStream>>,
    rx: mpsc::Receiver<(usize, u64, Option<Message>)>,
    backlog: VecDeque<(usize, u64, Option<Message>)>,
    unit: usize,
    content: Vec<u8>,
    writer: Vec<Option<usize>>,
    readers: Vec<BTreeSet<usize>>,
    faults: usize,
}

impl Coherent {
    /// Serves `n` attachments of a segment of `units` units; returns their
    /// addresses and the manager's thread, which ends when all detached.
    fn start(n: usize, units: usize, unit: usize) -> (Vec<Addr>, thread::JoinHandle<Coherent>) {
        let (tx, rx) = mpsc::channel();
        let mut out = Vec::new();
        let mut addrs = Vec::new();
        for i in 0..n {
            let (a, b) = UnixStream::pair().unwrap();
            let mut reader = Channel::new(b.try_clone().unwrap(), MAX_FRAME);
            out.push(Channel::new(b, MAX_FRAME));
            let tx = tx.clone();
            thread::spawn(move || loop {
                match reader.recv() {
                    Ok((id, m)) => {
                        if tx.send((i, id, Some(m))).is_err() {
                            return;
                        }
                    }
                    Err(_) => {
                        let _ = tx.send((i, 0, None));
                        return;
                    }
                }
            });
            let p =
                attach_with_connection(a, (units * unit) as u64, unit as u64, false, WAIT).unwrap();
            addrs.push(Addr(p as usize));
        }
        let mgr = Coherent {
            out,
            rx,
            backlog: VecDeque::new(),
            unit,
            content: vec![0; units * unit],
            writer: vec![None; units],
            readers: vec![BTreeSet::new(); units],
            faults: 0,
        };
        (addrs, thread::spawn(move || mgr.run(n)))
    }

    fn next(&mut self) -> (usize, u64, Option<Message>) {
        if let Some(e) = self.backlog.pop_front() {
            return e;
        }
        self.rx
            .recv_timeout(WAIT)
            .expect("an event within the wait")
    }

    fn send(&mut self, p: usize, m: Message) {
        self.out[p].send(0, &m).unwrap();
    }

    fn run(mut self, n: usize) -> Coherent {
        let mut left = n;
        while left > 0 {
            match self.next() {
                (p, _, Some(Message::ShmFault { unit, write })) => {
                    self.faults += 1;
                    self.fault(p, unit as usize, write);
                }
                (_, _, Some(Message::ShmData { unit, offset, data })) => {
                    self.store(unit, offset, &data);
                }
                (p, _, Some(Message::ShmRevoked { unit })) => {
                    // An unsolicited write-back (detach).
                    assert_eq!(self.writer[unit as usize], Some(p));
                    self.writer[unit as usize] = None;
                }
                (p, id, Some(Message::ShmDetach)) => {
                    for u in 0..self.writer.len() {
                        assert_ne!(self.writer[u], Some(p), "detached holding unit {u}");
                        self.readers[u].remove(&p);
                    }
                    self.out[p].send(id, &Message::Done { value: 0 }).unwrap();
                }
                (_, _, None) => left -= 1,
                (_, _, Some(other)) => panic!("unexpected {other:?}"),
            }
        }
        self
    }

    fn store(&mut self, unit: u32, offset: u64, data: &[u8]) {
        let at = unit as usize * self.unit + offset as usize;
        self.content[at..at + data.len()].copy_from_slice(data);
    }

    /// Revokes `unit` from `q` and waits for the acknowledgement, keeping
    /// other events for later.
    fn revoke(&mut self, q: usize, unit: usize, keep_read: bool) {
        let want_data = self.writer[unit] == Some(q);
        self.send(
            q,
            Message::ShmRevoke {
                unit: unit as u32,
                keep_read,
                want_data,
            },
        );
        loop {
            let e = self.rx.recv_timeout(WAIT).expect("ShmRevoked in time");
            match e {
                (p, _, Some(Message::ShmData { unit, offset, data })) if p == q => {
                    self.store(unit, offset, &data)
                }
                (p, _, Some(Message::ShmRevoked { unit: u })) if p == q && u as usize == unit => {
                    break
                }
                other => self.backlog.push_back(other),
            }
        }
    }

    fn fault(&mut self, p: usize, unit: usize, write: bool) {
        let had_copy = self.writer[unit] == Some(p) || self.readers[unit].contains(&p);
        if write {
            let holders: Vec<usize> = self.readers[unit]
                .iter()
                .copied()
                .chain(self.writer[unit])
                .filter(|&q| q != p)
                .collect();
            for q in holders {
                self.revoke(q, unit, false);
            }
            self.readers[unit].clear();
            self.writer[unit] = Some(p);
        } else {
            if let Some(q) = self.writer[unit].filter(|&q| q != p) {
                self.revoke(q, unit, true);
                self.readers[unit].insert(q);
                self.writer[unit] = None;
            }
            if self.writer[unit] != Some(p) {
                self.readers[unit].insert(p);
            }
        }
        if !had_copy {
            let data = self.content[unit * self.unit..(unit + 1) * self.unit].to_vec();
            self.send(
                p,
                Message::ShmData {
                    unit: unit as u32,
                    offset: 0,
                    data,
                },
            );
        }
        let write = self.writer[unit] == Some(p);
        self.send(
            p,
            Message::ShmGrant {
                unit: unit as u32,
                write,
            },
        );
    }
}

#[test]
fn two_attachments_stay_coherent_under_concurrent_writers() {
    let pg = page();
    let units = 4;
    let (views, mgr) = Coherent::start(2, units, pg);
    let lock = Arc::new(Mutex::new(()));
    let threads = 4;
    let rounds = 100;
    let rs: Vec<_> = (0..threads)
        .map(|t| {
            let view = views[t % 2];
            let lock = lock.clone();
            in_thread(move || {
                for k in 0..rounds {
                    let off = ((t + k) % units) * pg + 8 * t;
                    let _g = lock.lock().unwrap();
                    // The counter of this unit, as the other view last wrote it.
                    let c = view.read_u64((t + k) % units * pg);
                    view.write_u64((t + k) % units * pg, c + 1);
                    // And this thread's own word in the unit.
                    let mine = view.read_u64(off + 8);
                    view.write_u64(off + 8, mine + 1);
                }
            })
        })
        .collect();
    for r in rs {
        r.recv_timeout(WAIT * 3).unwrap();
    }
    // Read everything through view 0: the last writes of view 1 arrive.
    let v0 = views[0];
    let r = in_thread(move || {
        (0..units)
            .map(|u| {
                let counter = v0.read_u64(u * pg);
                let own: u64 = (0..threads).map(|t| v0.read_u64(u * pg + 8 * t + 8)).sum();
                (counter, own)
            })
            .collect::<Vec<_>>()
    });
    let per_unit = (threads * rounds / units) as u64;
    assert_eq!(
        r.recv_timeout(WAIT).unwrap(),
        vec![(per_unit, per_unit); units]
    );
    for v in &views {
        detach(*v).unwrap();
    }
    // The agent closed each connection after its detach: the manager ends.
    let mgr = mgr.join().expect("the manager thread");
    assert!(mgr.faults > 0);
    let counters: Vec<u64> = (0..units)
        .map(|u| u64::from_ne_bytes(mgr.content[u * pg..u * pg + 8].try_into().unwrap()))
        .collect();
    assert_eq!(counters, vec![per_unit; units]);
}

#[test]
fn every_read_sees_the_last_write_made_through_the_other_attachment() {
    let pg = page();
    let units = 3;
    let (views, mgr) = Coherent::start(2, units, pg);
    let threads = 4;
    let rounds = 150;
    // Strict turns, alternating between the attachments, so every access
    // moves the unit; the expected values live in ordinary memory.
    let turn = Arc::new((
        Mutex::new((0usize, vec![0u64; units])),
        std::sync::Condvar::new(),
    ));
    let rs: Vec<_> = (0..threads)
        .map(|t| {
            let view = views[t % 2];
            let turn = turn.clone();
            in_thread(move || {
                for k in 0..rounds {
                    let (m, cv) = &*turn;
                    let mut g = cv
                        .wait_while(m.lock().unwrap(), |(next, _)| *next != t)
                        .unwrap();
                    let u = (t + k) % units;
                    let seen = view.read_u64(u * pg + 16);
                    assert_eq!(seen, g.1[u], "thread {t} round {k} unit {u}");
                    view.write_u64(u * pg + 16, seen + 1);
                    g.1[u] += 1;
                    g.0 = (t + 1) % threads;
                    cv.notify_all();
                }
            })
        })
        .collect();
    for r in rs {
        r.recv_timeout(WAIT * 3).expect("a thread failed or hung");
    }
    for v in &views {
        detach(*v).unwrap();
    }
    let mgr = mgr.join().unwrap();
    let expected = turn.0.lock().unwrap().1.clone();
    let got: Vec<u64> = (0..units)
        .map(|u| u64::from_ne_bytes(mgr.content[u * pg + 16..u * pg + 24].try_into().unwrap()))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(expected.iter().sum::<u64>(), (threads * rounds) as u64);
    // Each access switched attachments: at least a read and a write fault.
    assert!(mgr.faults >= threads * rounds, "{} faults", mgr.faults);
}

#[test]
fn writers_of_different_units_proceed_independently() {
    let pg = page();
    let units = 4;
    let (views, mgr) = Coherent::start(2, units, pg);
    // Each attachment writes its own units: after the first faults, no
    // right moves, so both run at memory speed.
    let rs: Vec<_> = (0..2)
        .map(|i| {
            let v = views[i];
            in_thread(move || {
                for k in 0..10_000u64 {
                    let unit = i + 2 * (k as usize % 2);
                    v.write_u64(unit * pg, k);
                }
            })
        })
        .collect();
    for r in rs {
        r.recv_timeout(WAIT).unwrap();
    }
    for v in &views {
        detach(*v).unwrap();
    }
    let mgr = mgr.join().unwrap();
    assert_eq!(mgr.faults, 4, "one write fault per unit");
}

// ---- Tests that end in a signal, in a child process ----

fn in_child() -> bool {
    std::env::var_os("DIPC_SHM_CHILD").is_some()
}

/// Runs the test `name` again in a child process (where [`in_child`] is
/// true, so it runs its child body) and returns how it
/// ended, with its output (shown when the test fails).
fn run_child(name: &str) -> Child {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("DIPC_SHM_CHILD", "1")
        .output()
        .unwrap();
    Child {
        status: out.status,
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

struct Child {
    status: ExitStatus,
    output: String,
}

fn assert_signal(child: Child, sig: i32) {
    assert_eq!(
        child.status.signal(),
        Some(sig),
        "child ended with {:?}, expected signal {sig}; its output:\n{}",
        child.status,
        child.output
    );
}

#[test]
fn lost_unit_raises_sigbus() {
    if in_child() {
        return child_lost_unit();
    }
    assert_signal(run_child("lost_unit_raises_sigbus"), libc::SIGBUS);
}

/// The child process of `lost_unit_raises_sigbus`.
fn child_lost_unit() {
    let pg = page();
    let (mut m, p) = attach(2 * pg, pg, false, WAIT);
    // Every fault on the unit is answered ShmLost, with the connection
    // kept open: the SIGBUS must come from ShmLost.
    thread::spawn(move || {
        while let Ok((_, Message::ShmFault { unit, .. })) = m.ch.recv() {
            m.send(Message::ShmLost { unit });
        }
    });
    p.read(pg);
    std::process::exit(0);
}

#[test]
fn dead_connection_raises_sigbus() {
    if in_child() {
        return child_dead_connection();
    }
    assert_signal(run_child("dead_connection_raises_sigbus"), libc::SIGBUS);
}

/// The child process of `dead_connection_raises_sigbus`.
fn child_dead_connection() {
    let pg = page();
    let (m, p) = attach(2 * pg, pg, false, WAIT);
    drop(m);
    p.read(0);
    std::process::exit(0);
}

#[test]
fn fault_without_answer_raises_sigbus_within_the_time_out() {
    if in_child() {
        return child_no_answer();
    }
    let t0 = Instant::now();
    assert_signal(
        run_child("fault_without_answer_raises_sigbus_within_the_time_out"),
        libc::SIGBUS,
    );
    assert!(t0.elapsed() < WAIT, "took {:?}", t0.elapsed());
}

/// The child process of `fault_without_answer_raises_sigbus_within_the_time_out`.
fn child_no_answer() {
    let pg = page();
    let (mut m, p) = attach(pg, pg, false, Duration::from_millis(300));
    thread::spawn(move || {
        let _ = m.expect_fault();
        // Silent, connection open.
        let _ = m.ch.recv();
    });
    p.read(0);
    std::process::exit(0);
}

#[test]
fn protocol_error_kills_the_segment() {
    if in_child() {
        return child_protocol_error();
    }
    assert_signal(run_child("protocol_error_kills_the_segment"), libc::SIGBUS);
}

/// The child process of `protocol_error_kills_the_segment`.
fn child_protocol_error() {
    let pg = page();
    let (mut m, p) = attach(pg, pg, false, WAIT);
    thread::spawn(move || {
        let _ = m.expect_fault();
        // Past the end of the unit.
        m.send(Message::ShmData {
            unit: 0,
            offset: pg as u64 - 1,
            data: vec![1, 2],
        });
        let _ = m.ch.recv();
    });
    p.read(0);
    std::process::exit(0);
}

#[test]
fn a_message_of_another_protocol_kills_the_segment() {
    if in_child() {
        return child_another_protocol();
    }
    assert_signal(
        run_child("a_message_of_another_protocol_kills_the_segment"),
        libc::SIGBUS,
    );
}

/// The child process of `a_message_of_another_protocol_kills_the_segment`:
/// the fault is answered with the agent's own kind of message, which no
/// manager sends. The fault's time-out is longer than the wait for the
/// agent to drop the connection, so an agent that ignored the message
/// ends the child with SIGABRT, not SIGBUS.
fn child_another_protocol() {
    let pg = page();
    let (mut m, p) = attach(pg, pg, false, 3 * WAIT);
    thread::spawn(move || {
        let (unit, write) = m.expect_fault();
        m.send(Message::ShmFault { unit, write });
        match m.ch.recv() {
            Err(dipc_common::channel::ChannelError::Closed) => {}
            other => {
                eprintln!("the agent kept the connection: {other:?}");
                // Not exit: its write-back at exit would wait for us.
                std::process::abort();
            }
        }
    });
    p.read(0);
    std::process::exit(0);
}

#[test]
fn foreign_segv_still_kills_with_sigsegv() {
    if in_child() {
        return child_null_deref();
    }
    assert_signal(
        run_child("foreign_segv_still_kills_with_sigsegv"),
        libc::SIGSEGV,
    );
}

/// The child process of `foreign_segv_still_kills_with_sigsegv`.
fn child_null_deref() {
    let pg = page();
    let (_m, _p) = attach(pg, pg, false, WAIT);
    let null = std::hint::black_box(std::ptr::null::<u8>());
    // SAFETY: not safe at all: the point is the SIGSEGV.
    unsafe { std::ptr::read_volatile(null) };
    std::process::exit(0);
}

#[test]
fn foreign_segv_reaches_the_programs_handler() {
    if in_child() {
        return child_own_handler();
    }
    let child = run_child("foreign_segv_reaches_the_programs_handler");
    assert_eq!(child.status.code(), Some(42), "{}", child.output);
}

extern "C" fn own_handler(_: i32, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel's siginfo; _exit is async-signal-safe.
    unsafe {
        let code = if (*info).si_addr().is_null() { 42 } else { 43 };
        libc::_exit(code);
    }
}

/// The child process of `foreign_segv_reaches_the_programs_handler`.
fn child_own_handler() {
    // SAFETY: installing an SA_SIGINFO handler that only calls _exit.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = own_handler as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut());
    }
    let pg = page();
    let (mut m, p) = attach(pg, pg, false, WAIT);
    // Our own faults still work with the program's handler behind ours.
    let r = in_thread(move || p.read(0));
    assert_eq!(m.expect_fault(), (0, false));
    m.grant(0, false, Some(vec![3; pg]));
    assert_eq!(r.recv_timeout(WAIT).unwrap(), 3);
    let null = std::hint::black_box(std::ptr::null::<u8>());
    // SAFETY: not safe at all: the point is the SIGSEGV.
    unsafe { std::ptr::read_volatile(null) };
    std::process::exit(0);
}

#[test]
fn write_to_a_read_only_attachment_is_sigsegv() {
    if in_child() {
        return child_readonly_write();
    }
    assert_signal(
        run_child("write_to_a_read_only_attachment_is_sigsegv"),
        libc::SIGSEGV,
    );
}

/// The child process of `write_to_a_read_only_attachment_is_sigsegv`.
fn child_readonly_write() {
    let pg = page();
    let (mut m, p) = attach(pg, pg, true, WAIT);
    let r = in_thread(move || p.read(0));
    assert_eq!(m.expect_fault(), (0, false));
    m.grant(0, false, Some(vec![3; pg]));
    assert_eq!(r.recv_timeout(WAIT).unwrap(), 3);
    thread::spawn(move || {
        // Never asked for write.
        while let Ok((_, m)) = m.ch.recv() {
            if let Message::ShmFault { write: true, .. } = m {
                std::process::exit(3);
            }
        }
    });
    p.write(0, 1);
    std::process::exit(0);
}

#[test]
fn a_fork_child_drops_the_attachment_and_the_parent_keeps_it() {
    let pg = page();
    let (mut m, p) = attach(2 * pg, pg, false, WAIT);
    let r = in_thread(move || p.read(0));
    assert_eq!(m.expect_fault(), (0, false));
    m.grant(0, false, Some(vec![5; pg]));
    assert_eq!(r.recv_timeout(WAIT).unwrap(), 5);
    // SAFETY: the child only touches memory and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // Readable in the parent, but not there at all in the child.
        p.read(0);
        // SAFETY: leaving the child without running the parent's state down.
        unsafe { libc::_exit(0) };
    }
    assert!(pid > 0);
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSEGV,
        "child status {status:#x}"
    );
    // The child closed its copy of the connection, not ours.
    assert!(m.quiet_for(Duration::from_millis(100)));
    let r = in_thread(move || (p.read(1), p.read(pg)));
    assert_eq!(m.expect_fault(), (1, false));
    m.grant(1, false, Some(vec![6; pg]));
    assert_eq!(r.recv_timeout(WAIT).unwrap(), (5, 6));
    let d = in_thread(move || detach(p));
    expect_detach(&mut m, &[]);
    d.recv_timeout(WAIT).unwrap().unwrap();
}

#[test]
fn exit_writes_back_what_the_process_wrote() {
    if in_child() {
        return child_exit_writes_back();
    }
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let pg = page();
    let (ours, theirs) = UnixStream::pair().unwrap();
    ours.set_read_timeout(Some(WAIT)).unwrap();
    let fd = theirs.as_raw_fd();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "exit_writes_back_what_the_process_wrote",
        "--exact",
        "--test-threads=1",
    ])
    .env("DIPC_SHM_CHILD", "1")
    .env("DIPC_SHM_FD", fd.to_string())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped());
    // SAFETY: fcntl is async-signal-safe; it lets the child inherit its
    // end of the connection.
    unsafe {
        cmd.pre_exec(move || {
            libc::fcntl(fd, libc::F_SETFD, 0);
            Ok(())
        })
    };
    let child = cmd.spawn().unwrap();
    drop(theirs);
    let mut m = Mgr {
        ch: Channel::new(ours, MAX_FRAME),
    };
    assert_eq!(m.expect_fault(), (1, true));
    m.grant(1, true, Some(vec![0; pg]));
    let mut expect = vec![0; pg];
    expect[..4].copy_from_slice(&[1, 2, 3, 4]);
    // The child exits without shmdt: its atexit handler writes back.
    expect_detach(&mut m, &[(1, &expect)]);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The child process of `exit_writes_back_what_the_process_wrote`.
fn child_exit_writes_back() {
    use std::os::fd::FromRawFd;
    let fd: i32 = std::env::var("DIPC_SHM_FD").unwrap().parse().unwrap();
    // SAFETY: the parent passed us this end of a socket pair.
    let s = unsafe { UnixStream::from_raw_fd(fd) };
    let pg = page();
    let p = attach_with_connection(s, 2 * pg as u64, pg as u64, false, WAIT).unwrap() as usize;
    for (i, v) in [1u8, 2, 3, 4].into_iter().enumerate() {
        Addr(p).write(pg + i, v);
    }
    std::process::exit(0);
}

#[test]
fn sigbus_carries_the_faulting_address() {
    if in_child() {
        return child_sigbus_address();
    }
    let child = run_child("sigbus_carries_the_faulting_address");
    assert_eq!(child.status.code(), Some(44), "{}", child.output);
}

static EXPECTED_ADDR: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

extern "C" fn bus_handler(_: i32, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel's (here: dipc's) siginfo; _exit is
    // async-signal-safe.
    unsafe {
        let ok = (*info).si_addr() as usize
            == EXPECTED_ADDR.load(std::sync::atomic::Ordering::SeqCst)
            && (*info).si_code == libc::BUS_ADRERR;
        libc::_exit(if ok { 44 } else { 45 });
    }
}

/// The child process of `sigbus_carries_the_faulting_address`.
fn child_sigbus_address() {
    // SAFETY: installing an SA_SIGINFO handler that only calls _exit.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = bus_handler as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
    }
    let pg = page();
    let (mut m, p) = attach(2 * pg, pg, false, WAIT);
    thread::spawn(move || {
        while let Ok((_, Message::ShmFault { unit, .. })) = m.ch.recv() {
            m.send(Message::ShmLost { unit });
        }
    });
    EXPECTED_ADDR.store(p.0 + pg + 17, std::sync::atomic::Ordering::SeqCst);
    p.write(pg + 17, 1);
    std::process::exit(0);
}

#[test]
fn slots_are_reused_after_detach() {
    let pg = page();
    for round in 0..3u8 {
        let (mut m, p) = attach(pg, pg, false, WAIT);
        let r = in_thread(move || p.read(0));
        assert_eq!(m.expect_fault(), (0, false));
        m.grant(0, false, Some(vec![round; pg]));
        assert_eq!(r.recv_timeout(WAIT).unwrap(), round);
        let d = in_thread(move || detach(p));
        expect_detach(&mut m, &[]);
        d.recv_timeout(WAIT).unwrap().unwrap();
    }
}

#[test]
fn a_dead_segment_raises_sigbus_even_where_it_was_readable() {
    if in_child() {
        return child_dead_segment();
    }
    assert_signal(
        run_child("a_dead_segment_raises_sigbus_even_where_it_was_readable"),
        libc::SIGBUS,
    );
}

/// The child process of `a_dead_segment_raises_sigbus_even_where_it_was_readable`.
fn child_dead_segment() {
    let pg = page();
    let (mut m, p) = attach(2 * pg, pg, false, WAIT);
    let r = in_thread(move || p.read(0));
    assert_eq!(m.expect_fault(), (0, false));
    m.grant(0, false, Some(vec![5; pg]));
    assert_eq!(r.recv_timeout(WAIT).unwrap(), 5);
    // A grant for a unit the segment does not have breaks the protocol:
    // the agent drops the connection, which we see as its end.
    m.send(Message::ShmGrant {
        unit: 99,
        write: false,
    });
    assert!(matches!(
        m.ch.recv(),
        Err(dipc_common::channel::ChannelError::Closed)
    ));
    p.read(0);
    std::process::exit(0);
}
