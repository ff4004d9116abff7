use super::*;
use proptest::prelude::*;
use std::net::{Ipv6Addr, SocketAddr};

const MAX: u32 = 1 << 20;

fn samples() -> Vec<Message> {
    let a4: SocketAddr = "10.66.0.2:7100".parse().unwrap();
    let a6: SocketAddr = "[fd00::5]:7101".parse().unwrap();
    vec![
        Message::Hello {
            role: Role::Host,
            host: a4,
        },
        Message::Hello {
            role: Role::Employer,
            host: a6,
        },
        Message::Handshake { data: vec![1; 48] },
        Message::Handshake { data: vec![] },
        Message::SessionReady {
            pid_d: 42,
            keys: SessionKeys {
                tx_key: [3; KEY_LEN],
                tx_n: 7,
                rx_key: [4; KEY_LEN],
                rx_n: u64::MAX,
            },
        },
        Message::Refused {
            reason: "wrong cluster secret".into(),
        },
        Message::Join { front_end: a4 },
        Message::Joined,
        Message::Heartbeat,
        Message::HeartbeatAck,
        Message::ListHosts,
        Message::Hosts { hosts: vec![] },
        Message::Hosts {
            hosts: vec![
                HostInfo {
                    addr: a4,
                    up: true,
                    last_heard_ms: 12,
                    joined_ms: 3400,
                    version: 1,
                },
                HostInfo {
                    addr: a6,
                    up: false,
                    last_heard_ms: u64::MAX,
                    joined_ms: 0,
                    version: 1,
                },
            ],
        },
        Message::Ping,
        Message::Connect { target: a6 },
        Message::IpcGet {
            kind: IpcKind::Sem,
            key: 0x4242,
            id: 17,
            incarnation: u64::MAX,
            flags: 0o600,
            size: 3,
        },
        Message::Pong,
        Message::error(libc::EACCES, "permission denied ✓"),
        Message::Done { value: -3 },
        Message::Cancel,
        Message::KeyGet {
            kind: IpcKind::Msg,
            key: 0x1234,
            flags: 0o1666,
        },
        Message::KeyOwner {
            owner: a4,
            id: 32768,
            local_id: 5,
            origin: Origin {
                key: 0x1234,
                incarnation: 77,
            },
        },
        Message::KeyCommit {
            kind: IpcKind::Sem,
            key: -7,
            id: 3,
            creator_uid: 1000,
            incarnation: 1 << 63,
        },
        Message::KeyAbort {
            kind: IpcKind::Shm,
            key: 1,
        },
        Message::KeyRemove {
            kind: IpcKind::Msg,
            key: 1,
            id: 2,
            incarnation: 3,
        },
        Message::KeyCheck {
            kind: IpcKind::Shm,
            key: -1,
        },
        Message::Vouched {
            id: 7,
            vouch: [0xa5; 32],
        },
        Message::Placeholder {
            kind: IpcKind::Sem,
            key: 0x5a5a,
            owner: "[fd00::2]:7100".parse().unwrap(),
            id: 9,
            origin: Origin {
                key: 0x5a5a,
                incarnation: u64::MAX,
            },
            vouch: [0x3c; 32],
        },
        Message::KeyGone {
            kind: IpcKind::Msg,
            key: 1,
        },
        Message::ListKeys { after: None },
        Message::ListKeys {
            after: Some((IpcKind::Shm, -5)),
        },
        Message::Keys {
            keys: vec![KeyInfo {
                kind: IpcKind::Msg,
                key: 42,
                owner: a6,
                id: 0,
                creator_uid: 0,
                age_ms: 99,
                incarnation: 12345,
            }],
            more: true,
        },
        Message::DropKey {
            kind: IpcKind::Sem,
            key: 9,
        },
        Message::Resolve {
            kind: IpcKind::Msg,
            local_id: 65536,
        },
        Message::Session {
            pid: 77,
            uid: 1000,
            gid: 1000,
            groups: vec![4, 24, 27],
        },
        Message::MsgSnd {
            id: 1,
            origin: Origin {
                key: 0x5eed,
                incarnation: 0xfeed_0001,
            },
            mtype: 5,
            text: b"Hello, Distributed Programming".to_vec(),
            flags: libc::IPC_NOWAIT,
        },
        Message::MsgRcv {
            id: 1,
            origin: Origin {
                key: 0x5eed,
                incarnation: 0xfeed_0001,
            },
            size: 8192,
            mtype: -3,
            flags: 0,
        },
        Message::MsgData {
            mtype: 2,
            text: vec![0; 100],
        },
        Message::MsgCtl {
            id: 1,
            origin: Origin {
                key: 0x5eed,
                incarnation: 0xfeed_0001,
            },
            cmd: libc::IPC_SET,
            set: Some(IpcSet {
                uid: 1,
                gid: 2,
                mode: 0o600,
                qbytes: 16384,
            }),
        },
        Message::MsgCtl {
            id: 1,
            origin: Origin {
                key: 0x5eed,
                incarnation: 0xfeed_0001,
            },
            cmd: libc::IPC_RMID,
            set: None,
        },
        Message::MsqStat {
            info: MsqInfo {
                perm: IpcPerm {
                    key: 5,
                    uid: 1,
                    gid: 2,
                    cuid: 3,
                    cgid: 4,
                    mode: 0o644,
                    seq: 7,
                },
                stime: 1,
                rtime: 2,
                ctime: 3,
                cbytes: 4,
                qnum: 5,
                qbytes: 16384,
                lspid: 8,
                lrpid: 9,
            },
        },
        Message::ShmOpen { id: 3 },
        Message::ShmAttach {
            id: 32768,
            origin: Origin {
                key: 0x5eed,
                incarnation: 0xfeed_0001,
            },
            readonly: true,
            handover: None,
        },
        Message::ShmAttach {
            id: 0,
            origin: Origin {
                key: 0x5eed,
                incarnation: 0xfeed_0001,
            },
            readonly: false,
            handover: Some((
                a6,
                Box::new(SessionKeys {
                    tx_key: [5; KEY_LEN],
                    tx_n: 0,
                    rx_key: [6; KEY_LEN],
                    rx_n: 1,
                }),
            )),
        },
        Message::ShmAttached {
            size: 1 << 24,
            unit: 4096,
        },
        Message::ShmFault {
            unit: 7,
            write: true,
        },
        Message::ShmData {
            unit: 7,
            offset: 4096,
            data: vec![1, 2, 3],
        },
        Message::ShmGrant {
            unit: 0,
            write: false,
        },
        Message::ShmRevoke {
            unit: 9,
            keep_read: true,
            want_data: false,
        },
        Message::ShmRevoked { unit: 9 },
        Message::ShmLost { unit: 1 },
        Message::ShmDetach,
        Message::ShmCtl {
            id: 1,
            origin: Origin {
                key: 0x5eed,
                incarnation: 0xfeed_0001,
            },
            cmd: libc::IPC_SET,
            set: Some(IpcSet {
                uid: 1,
                gid: 2,
                mode: 0o600,
                qbytes: 0,
            }),
        },
        Message::ShmStat {
            info: ShmInfo {
                perm: IpcPerm::default(),
                segsz: 4096,
                atime: 1,
                dtime: 2,
                ctime: 3,
                cpid: 4,
                lpid: 5,
                nattch: 3,
            },
        },
        Message::ShmQuery {
            id: 65536,
            origin: Origin::default(),
        },
        Message::IpcStatAny {
            kind: IpcKind::Sem,
            id: 32769,
            origin: Origin {
                key: 0x5a5a,
                incarnation: 0xfeed_0002,
            },
        },
        Message::ShmState {
            nattch: 2,
            unit: 4096,
            hosts: vec![a4, a6],
            runs: vec![
                UnitRun {
                    first: 0,
                    count: 3,
                    writer: Some(1),
                    readers: vec![],
                    lost: false,
                },
                UnitRun {
                    first: 3,
                    count: 1,
                    writer: None,
                    readers: vec![0, 1],
                    lost: true,
                },
            ],
        },
        Message::SemOp {
            id: 3,
            origin: Origin {
                key: 0x5eed,
                incarnation: 0xfeed_0001,
            },
            ops: vec![
                SemBuf {
                    num: 0,
                    op: -1,
                    flg: libc::SEM_UNDO as i16,
                },
                SemBuf {
                    num: 2,
                    op: 0,
                    flg: libc::IPC_NOWAIT as i16,
                },
            ],
            timeout_ns: Some(1_500_000_000),
        },
        Message::SemOp {
            id: 3,
            origin: Origin {
                key: 0x5eed,
                incarnation: 0xfeed_0001,
            },
            ops: vec![],
            timeout_ns: None,
        },
        Message::SemCtl {
            id: 3,
            origin: Origin {
                key: 0x5eed,
                incarnation: 0xfeed_0001,
            },
            num: 1,
            cmd: libc::SETVAL,
            arg: SemArg::Val(7),
        },
        Message::SemCtl {
            id: 3,
            origin: Origin {
                key: 0x5eed,
                incarnation: 0xfeed_0001,
            },
            num: 0,
            cmd: libc::SETALL,
            arg: SemArg::All(vec![1, 2, 65535]),
        },
        Message::SemCtl {
            id: 3,
            origin: Origin {
                key: 0x5eed,
                incarnation: 0xfeed_0001,
            },
            num: 0,
            cmd: libc::IPC_SET,
            arg: SemArg::Set(IpcSet::default()),
        },
        Message::SemCtl {
            id: 3,
            origin: Origin {
                key: 0x5eed,
                incarnation: 0xfeed_0001,
            },
            num: 0,
            cmd: libc::IPC_RMID,
            arg: SemArg::None,
        },
        Message::SemVals { vals: vec![0, 9] },
        Message::SemStat {
            info: SemInfo {
                perm: IpcPerm::default(),
                otime: 5,
                ctime: 6,
                nsems: 3,
            },
        },
        Message::Register { mailbox: 32769 },
        Message::PidRegister {
            pid_d: 0,
            pid: 4242,
            uid: 1000,
            starttime: 123_456_789,
            mailbox: 3,
        },
        Message::Registered {
            pid_d: 17,
            mailbox: 3,
        },
        Message::Unregister { pid_d: 17, pid: 0 },
        Message::PidLookup { pid_d: i64::MAX },
        Message::PidInfo { rec: pid_rec(a4) },
        Message::ListPids { after: 0 },
        Message::ListPids { after: 77 },
        Message::Pids {
            pids: vec![],
            more: false,
        },
        Message::Pids {
            more: true,
            pids: vec![pid_rec(a4), pid_rec(a6)],
        },
        Message::KillD {
            pid: 99,
            starttime: 7,
            sig: 34,
        },
        Message::SendD {
            mailbox: 5,
            data: b"ping".to_vec(),
            flags: libc::IPC_NOWAIT,
        },
        Message::SendD {
            mailbox: 5,
            data: vec![],
            flags: 0,
        },
        Message::SenderPid { pid_d: 3 },
        Message::PidCheck {
            pid: 99,
            starttime: 7,
        },
        Message::SemJoin { nonce: u64::MAX },
        Message::SemHandover {
            uid: 65534,
            sender: -1,
            keys: Box::new(SessionKeys {
                tx_key: [1; KEY_LEN],
                tx_n: 2,
                rx_key: [3; KEY_LEN],
                rx_n: u64::MAX,
            }),
        },
        Message::KeyClaim {
            kind: IpcKind::Shm,
            key: -9,
            id: 32769,
            creator_uid: 1000,
            incarnation: u64::MAX,
        },
        Message::Received,
        Message::NameRegister {
            pid_d: 4,
            pid: 77,
            name: "Philosopher[3]".into(),
        },
        Message::NameRelease {
            pid_d: 4,
            pid: 0,
            name: "Buffer".into(),
        },
        Message::NameLookup {
            name: "Table".into(),
        },
        Message::ListNames { after: "".into() },
        Message::Names {
            names: vec![("Buffer".into(), 3), ("Table".into(), 9)],
            more: true,
        },
        Message::Names {
            names: vec![],
            more: false,
        },
        Message::MoveToken { pid_d: 7, pid: 0 },
        Message::MoveAbort { pid_d: 7, pid: 42 },
        Message::MoveIn {
            pid_d: 7,
            pid: 4242,
            uid: 1000,
            starttime: 99,
            mailbox: 32768,
            token: u64::MAX,
        },
        Message::MigrateSpawn {
            program: Box::new(Program {
                exe: b"/usr/bin/prog".to_vec(),
                argv: vec![b"prog".to_vec(), vec![], b"-x".to_vec()],
                env: vec![b"A=1".to_vec()],
                cwd: b"/tmp".to_vec(),
                stdout: b"/tmp/out".to_vec(),
                stderr: vec![],
            }),
            pid_d: 7,
            token: 99,
        },
        Message::MoveCheck {
            pid_d: 7,
            token: u64::MAX,
            uid: 0,
        },
        Message::MigrateSpawn {
            program: Box::default(),
            pid_d: 0,
            token: 0,
        },
        Message::MigrateData { data: vec![9; 300] },
        Message::MigrateCommit { go: true },
        Message::MigrateCommit { go: false },
        Message::MoveAsk {
            pid_d: 3,
            target: a6,
            uid: 1000,
            admin: true,
        },
        Message::CallEndpoint {
            name: b"dipc-call-7-0123456789abcdef".to_vec(),
        },
        Message::CallRoute { pid_d: 7 },
        Message::CallEndpointAt {
            pid: 4242,
            starttime: 99,
            name: b"x".to_vec(),
        },
        Message::CallOpen { pid_d: i64::MAX },
        Message::CallHello {
            caller: 3,
            keys: None,
        },
        Message::CallHello {
            caller: 5,
            keys: Some(Box::new(SessionKeys {
                tx_key: [4; KEY_LEN],
                tx_n: 0,
                rx_key: [5; KEY_LEN],
                rx_n: 7,
            })),
        },
        Message::CallRequest {
            proc_name: "Send".into(),
            max_out: 128,
            input: b"letter".to_vec(),
        },
        Message::CallReply {
            status: libc::ENOSYS,
            output: vec![],
        },
        Message::CallReply {
            status: 0,
            output: vec![1, 2, 3],
        },
        Message::WorkerCheck { pid: 1 },
        Message::Migratable,
        Message::ListLoad,
        Message::LoadReport {
            window_ms: 250,
            cpu_ms: 0,
            procs: vec![],
        },
        Message::LoadReport {
            window_ms: 251,
            cpu_ms: 480,
            procs: vec![LoadProc {
                pid_d: 7,
                pid: 4242,
                name: "spinner".into(),
                cpu: 240,
                stay_ms: 12_000,
            }],
        },
        Message::Loads {
            hosts: vec![
                HostLoad {
                    host: "10.0.0.2:7100".parse().unwrap(),
                    load: 1999,
                    window_ms: 1000,
                    procs: vec![LoadProc {
                        pid_d: 9,
                        pid: 1,
                        name: String::new(),
                        cpu: 333,
                        stay_ms: 0,
                    }],
                },
                HostLoad {
                    host: "[fd00::3]:7100".parse().unwrap(),
                    load: 0,
                    window_ms: 0,
                    procs: vec![],
                },
            ],
            moves: vec![BalanceMove {
                at_ms: 1_700_000_000_000,
                pid_d: 9,
                from: "10.0.0.2:7100".parse().unwrap(),
                to: "[fd00::3]:7100".parse().unwrap(),
                outcome: 1,
            }],
        },
        Message::StatsAsk,
        Message::Stats {
            pairs: vec![("call.msgsnd".into(), 3), ("uptime_s".into(), u64::MAX)],
        },
        Message::StatsReport { pairs: vec![] },
        Message::CallsMade {
            pairs: vec![("made.msgsnd".into(), 7)],
        },
    ]
}

fn pid_rec(host: SocketAddr) -> PidRecord {
    PidRecord {
        pid_d: 12,
        host,
        pid: 4242,
        uid: 1000,
        starttime: u64::MAX,
        mailbox: 98304,
        since_ms: 1500,
    }
}

fn frame(id: u64, m: &Message) -> Vec<u8> {
    let mut v = Vec::new();
    encode_frame(id, m, &mut v);
    v
}

#[test]
fn every_kind_round_trips() {
    let samples = samples();
    for kind in Kind::ALL {
        assert!(
            samples.iter().any(|m| m.kind() == *kind),
            "no sample for {kind:?}"
        );
        assert_eq!(Kind::from_u16(*kind as u16), Some(*kind));
    }
    for (i, m) in samples.iter().enumerate() {
        let f = frame(i as u64 * 977, m);
        let (used, id, back) = decode_frame(&f, MAX).unwrap().unwrap();
        assert_eq!(used, f.len());
        assert_eq!(id, i as u64 * 977);
        assert_eq!(&back, m);
    }
}

#[test]
fn load_reports_past_their_bounds_are_refused() {
    let proc_ = |name: &str| LoadProc {
        pid_d: 1,
        pid: 2,
        name: name.into(),
        cpu: 3,
        stay_ms: 4,
    };
    let too_many = Message::LoadReport {
        window_ms: 1,
        cpu_ms: 1,
        procs: vec![proc_("p"); MAX_LOAD_PROCS + 1],
    };
    let f = frame(0, &too_many);
    assert!(decode_frame(&f, 1 << 24).is_err());
    let long_name = Message::LoadReport {
        window_ms: 1,
        cpu_ms: 1,
        procs: vec![proc_(&"n".repeat(MAX_LOAD_NAME + 1))],
    };
    assert!(decode_frame(&frame(0, &long_name), MAX).is_err());
    let just = Message::LoadReport {
        window_ms: 1,
        cpu_ms: 1,
        procs: vec![proc_(&"n".repeat(MAX_LOAD_NAME)); MAX_LOAD_PROCS],
    };
    assert!(decode_frame(&frame(0, &just), 1 << 24).is_ok());
}

#[test]
fn incomplete_frames_wait_for_more() {
    for m in samples() {
        let f = frame(1, &m);
        for cut in 0..f.len() {
            assert_eq!(decode_frame(&f[..cut], MAX), Ok(None), "{m:?} cut {cut}");
        }
    }
}

#[test]
fn bad_magic_version_type_and_length_are_refused() {
    let good = frame(5, &Message::Pong);
    let mut f = good.clone();
    f[0] = b'X';
    assert!(matches!(decode_frame(&f, MAX), Err(WireError::BadMagic(_))));
    let mut f = good.clone();
    f[5] = 9;
    assert_eq!(decode_frame(&f, MAX), Err(WireError::BadVersion(9)));
    let mut f = good.clone();
    f[6] = 0xff;
    f[7] = 0xee;
    assert_eq!(decode_frame(&f, MAX), Err(WireError::UnknownType(0xffee)));
    // A claimed length over the maximum is refused from the header alone,
    // before the payload is there or anything is allocated for it.
    let mut f = good.clone();
    f[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(
        decode_frame(&f, MAX),
        Err(WireError::TooLong {
            len: u32::MAX,
            max: MAX
        })
    );
}

#[test]
fn truncated_and_padded_payloads_are_refused() {
    for m in samples() {
        let mut payload = Vec::new();
        m.encode_payload(&mut payload);
        for cut in 0..payload.len() {
            let r = Message::decode(m.kind(), &payload[..cut]);
            assert!(r.is_err(), "{m:?} cut at {cut} decoded as {r:?}");
        }
        payload.push(0);
        assert!(matches!(
            Message::decode(m.kind(), &payload),
            Err(WireError::TrailingBytes { .. })
        ));
    }
}

#[test]
fn lying_counts_and_fields_are_refused() {
    // A host count of four billion in a 4-byte payload.
    let r = Message::decode(Kind::Hosts, &u32::MAX.to_be_bytes());
    assert_eq!(r, Err(WireError::Truncated { field: "hosts" }));
    // A string length past the end.
    let mut p = 0i32.to_be_bytes().to_vec();
    p.extend_from_slice(&1000u32.to_be_bytes());
    assert!(Message::decode(Kind::Error, &p).is_err());
    // Invalid UTF-8, bad bool, bad family, bad role.
    let mut p = 0i32.to_be_bytes().to_vec();
    p.extend_from_slice(&2u32.to_be_bytes());
    p.extend_from_slice(&[0xff, 0xfe]);
    assert!(matches!(
        Message::decode(Kind::Error, &p),
        Err(WireError::Invalid { .. })
    ));
    assert!(Message::decode(Kind::Ping, &[2]).is_err());
    assert!(Message::decode(Kind::Connect, &[9]).is_err());
    assert!(Message::decode(Kind::Join, &[5, 0, 0]).is_err());
    let p = vec![9u8, 4, 1, 2, 3, 4, 0, 1];
    assert!(Message::decode(Kind::Hello, &p).is_err());
    // A handshake message over the Noise limit.
    let mut p = 65536u32.to_be_bytes().to_vec();
    p.extend_from_slice(&[0; 65536]);
    assert!(matches!(
        Message::decode(Kind::Handshake, &p),
        Err(WireError::Invalid { field: "data", .. })
    ));
    // A pid count of four billion, and a SendD whose data length runs
    // past the payload: refused before anything is allocated.
    let mut p = vec![0u8];
    p.extend_from_slice(&u32::MAX.to_be_bytes());
    let r = Message::decode(Kind::Pids, &p);
    assert_eq!(r, Err(WireError::Truncated { field: "pids" }));
    let mut p = 5i32.to_be_bytes().to_vec();
    p.extend_from_slice(&u32::MAX.to_be_bytes());
    p.extend_from_slice(&[0; 8]);
    assert_eq!(
        Message::decode(Kind::SendD, &p),
        Err(WireError::Truncated { field: "data" })
    );
}

#[test]
fn shm_data_from_borrowed_bytes_is_the_message_frame() {
    let (mut a, mut b) = (vec![1u8], vec![1u8]);
    encode_shm_data(9, 3, 4096, b"page", &mut a);
    let msg = Message::ShmData {
        unit: 3,
        offset: 4096,
        data: b"page".to_vec(),
    };
    encode_frame(9, &msg, &mut b);
    assert_eq!(a, b);
}

#[test]
fn migrate_data_from_borrowed_bytes_is_the_message_frame() {
    let (mut a, mut b) = (vec![1u8], vec![1u8]);
    encode_migrate_data(7, b"state", &mut a);
    let msg = Message::MigrateData {
        data: b"state".to_vec(),
    };
    encode_frame(7, &msg, &mut b);
    assert_eq!(a, b);
    let payload = &a[1 + HEADER_LEN..];
    let raw = RawFrame {
        kind: Kind::MigrateData,
        request_id: 7,
        payload,
    };
    assert_eq!(raw.migrate_data(), Some(Ok(&b"state"[..])));
    let long = [payload, b"x"].concat();
    let raw = RawFrame {
        payload: &long,
        ..raw
    };
    assert!(matches!(
        raw.migrate_data(),
        Some(Err(WireError::TrailingBytes { extra: 1, .. }))
    ));
    let raw = RawFrame {
        kind: Kind::ShmData,
        ..raw
    };
    assert_eq!(raw.migrate_data(), None);
}

#[test]
fn pid_record_minimum_size_is_exact() {
    let mut v = Vec::new();
    pid_rec("10.0.0.1:1".parse().unwrap()).put(&mut Writer(&mut v));
    assert_eq!(v.len(), <PidRecord as Field>::MIN);
    // The hand count the decoder used before the minimum was derived:
    // 8 + (1+4+2) + 4 + 4 + 8 + 4 + 8.
    assert_eq!(<PidRecord as Field>::MIN, 43);
}

fn arb_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, p)| SocketAddr::from((Ipv6Addr::from(ip), p))),
    ]
}

fn arb_message() -> impl Strategy<Value = Message> {
    let host = (
        arb_addr(),
        any::<bool>(),
        any::<u64>(),
        any::<u64>(),
        any::<u16>(),
    )
        .prop_map(|(addr, up, last_heard_ms, joined_ms, version)| HostInfo {
            addr,
            up,
            last_heard_ms,
            joined_ms,
            version,
        });
    prop_oneof![
        (arb_addr(), any::<bool>()).prop_map(|(host, e)| {
            Message::Hello {
                role: if e { Role::Employer } else { Role::Host },
                host,
            }
        }),
        proptest::collection::vec(any::<u8>(), 0..256).prop_map(|data| Message::Handshake { data }),
        ".*".prop_map(|reason| Message::Refused { reason }),
        arb_addr().prop_map(|front_end| Message::Join { front_end }),
        proptest::collection::vec(host, 0..8).prop_map(|hosts| Message::Hosts { hosts }),
        arb_addr().prop_map(|target| Message::Connect { target }),
        (any::<i32>(), ".*").prop_map(|(errno, message)| Message::Error { errno, message }),
        proptest::collection::vec(arb_pid_record(), 0..8)
            .prop_map(|pids| Message::Pids { pids, more: true }),
        arb_pid_record().prop_map(|rec| Message::PidInfo { rec }),
        (
            any::<i64>(),
            any::<i32>(),
            any::<u32>(),
            any::<u64>(),
            any::<i32>()
        )
            .prop_map(|(pid_d, pid, uid, starttime, mailbox)| {
                Message::PidRegister {
                    pid_d,
                    pid,
                    uid,
                    starttime,
                    mailbox,
                }
            }),
        (any::<i64>(), any::<i32>())
            .prop_map(|(pid_d, mailbox)| Message::Registered { pid_d, mailbox }),
        (any::<i64>(), any::<i32>()).prop_map(|(pid_d, pid)| Message::Unregister { pid_d, pid }),
        any::<i32>().prop_map(|mailbox| Message::Register { mailbox }),
        any::<i64>().prop_map(|pid_d| Message::PidLookup { pid_d }),
        any::<i64>().prop_map(|pid_d| Message::SenderPid { pid_d }),
        any::<u64>().prop_map(|nonce| Message::SemJoin { nonce }),
        (any::<i32>(), any::<u64>())
            .prop_map(|(pid, starttime)| Message::PidCheck { pid, starttime }),
        (any::<i32>(), any::<i32>(), any::<u32>(), any::<u64>()).prop_map(
            |(key, id, creator_uid, incarnation)| Message::KeyClaim {
                kind: IpcKind::Msg,
                key,
                id,
                creator_uid,
                incarnation,
            }
        ),
        any::<i64>().prop_map(|after| Message::ListPids { after }),
        (any::<i64>(), any::<i32>(), ".{0,40}")
            .prop_map(|(pid_d, pid, name)| { Message::NameRegister { pid_d, pid, name } }),
        ".{0,40}".prop_map(|name| Message::NameLookup { name }),
        (
            proptest::collection::vec((".{0,20}", any::<i64>()), 0..5),
            any::<bool>()
        )
            .prop_map(|(names, more)| Message::Names { names, more }),
        (any::<i32>(), any::<u64>(), any::<i32>()).prop_map(|(pid, starttime, sig)| {
            Message::KillD {
                pid,
                starttime,
                sig,
            }
        }),
        (
            any::<i32>(),
            proptest::collection::vec(any::<u8>(), 0..512),
            any::<i32>()
        )
            .prop_map(|(mailbox, data, flags)| Message::SendD {
                mailbox,
                data,
                flags
            }),
    ]
}

fn arb_pid_record() -> impl Strategy<Value = PidRecord> {
    (
        any::<i64>(),
        arb_addr(),
        any::<i32>(),
        any::<u32>(),
        any::<u64>(),
        any::<i32>(),
        any::<u64>(),
    )
        .prop_map(
            |(pid_d, host, pid, uid, starttime, mailbox, since_ms)| PidRecord {
                pid_d,
                host,
                pid,
                uid,
                starttime,
                mailbox,
                since_ms,
            },
        )
}

proptest! {
    #[test]
    fn arbitrary_messages_round_trip(m in arb_message(), id in any::<u64>()) {
        let f = frame(id, &m);
        prop_assert_eq!(decode_frame(&f, MAX), Ok(Some((f.len(), id, m))));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_frame(&bytes, MAX);
        for kind in Kind::ALL {
            let _ = Message::decode(*kind, &bytes);
        }
    }

    #[test]
    fn corrupted_frames_never_panic(m in arb_message(), pos in any::<usize>(), byte in any::<u8>()) {
        let mut f = frame(3, &m);
        let i = pos % f.len();
        f[i] = byte;
        let _ = decode_frame(&f, MAX);
    }
}

#[test]
fn every_kind_of_the_table_round_trips() {
    for kind in Kind::ALL {
        let m = Message::sample(*kind);
        assert_eq!(m.kind(), *kind);
        let f = frame(*kind as u64, &m);
        let (used, id, back) = decode_frame(&f, MAX).unwrap().unwrap();
        assert_eq!((used, id), (f.len(), *kind as u64));
        assert_eq!(back, m, "{kind:?}");
    }
}

#[test]
fn truncated_payloads_of_every_kind_name_a_field() {
    for kind in Kind::ALL {
        let mut payload = Vec::new();
        Message::sample(*kind).encode_payload(&mut payload);
        for cut in 0..payload.len() {
            match Message::decode(*kind, &payload[..cut]) {
                Err(WireError::Truncated { field }) | Err(WireError::Invalid { field, .. }) => {
                    assert!(!field.is_empty(), "{kind:?} cut at {cut}")
                }
                r => panic!("{kind:?} cut at {cut} of {}: {r:?}", payload.len()),
            }
        }
    }
}

#[test]
fn record_minimum_sizes_are_their_smallest_encodings() {
    fn smallest<T: Field>(v: T) -> usize {
        let mut out = Vec::new();
        v.put(&mut Writer(&mut out));
        assert_eq!(out.len(), T::MIN, "{}", std::any::type_name::<T>());
        out.len()
    }
    let a4: SocketAddr = "10.0.0.1:1".parse().unwrap();
    assert_eq!(smallest(a4), 7);
    assert_eq!(smallest(pid_rec(a4)), 43);
    assert_eq!(
        smallest(HostInfo {
            addr: a4,
            up: false,
            last_heard_ms: 0,
            joined_ms: 0,
            version: 0,
        }),
        26
    );
    let proc_ = LoadProc {
        pid_d: 0,
        pid: 0,
        name: String::new(),
        cpu: 0,
        stay_ms: 0,
    };
    assert_eq!(smallest(proc_), 28);
    assert_eq!(smallest(UnitRun::default()), 15);
    assert_eq!(smallest(SemBuf::default()), 6);
    assert_eq!(smallest((String::new(), 0i64)), 12);
}
