//! Unit tests of `auth`, in a file of their own to keep `auth.rs` short enough
//! to read in one sitting.

use super::*;
use std::os::unix::net::UnixStream;

const GOOD: &[u8] = b"0123456789abcdef0123";

#[test]
fn a_vouch_verifies_only_for_what_it_was_made_for() {
    let key = Secret::from_bytes(GOOD).unwrap().vouch_key();
    let v = Vouch {
        kind: IpcKind::Msg,
        key: 0x7a7a,
        id: 3,
        incarnation: 99,
        owner: "10.0.0.2:7100".parse().unwrap(),
        uid: 1000,
    };
    let tag = key.sign(&v);
    assert!(key.verify(&v, &tag));
    let others = [
        Vouch {
            kind: IpcKind::Sem,
            ..v
        },
        Vouch { key: 0x7a7b, ..v },
        Vouch { id: 4, ..v },
        Vouch {
            incarnation: 98,
            ..v
        },
        Vouch {
            owner: "10.0.0.3:7100".parse().unwrap(),
            ..v
        },
        Vouch { uid: 65534, ..v },
    ];
    for o in others {
        assert!(!key.verify(&o, &tag), "{o:?} verified with {v:?}'s tag");
    }
    let other_secret = Secret::from_bytes(b"another secret of enough length").unwrap();
    assert!(!other_secret.vouch_key().verify(&v, &tag));
    // Not the Noise key either.
    assert_ne!(key.0, Secret::from_bytes(GOOD).unwrap().psk());
}

fn run(
    client_secret: &[u8],
    server_secret: &[u8],
) -> (Result<(), AuthError>, Result<(), AuthError>) {
    let (a, b) = UnixStream::pair().unwrap();
    let cs = Secret::from_bytes(client_secret).unwrap();
    let ss = Secret::from_bytes(server_secret).unwrap();
    let server = std::thread::spawn(move || {
        let mut ch = Channel::new(b, 4096);
        let r = server_handshake(&mut ch, &ss, Role::Host).map(|_| ());
        if r.is_ok() {
            // Echo one frame back, sealed both ways.
            let (id, m) = ch.recv().unwrap();
            ch.send(id, &m).unwrap();
        }
        r
    });
    let mut ch = Channel::new(a, 4096);
    let me: SocketAddr = "10.0.0.1:7100".parse().unwrap();
    let c = client_handshake(&mut ch, &cs, Role::Host, me);
    if c.is_ok() {
        assert_eq!(
            ch.call(5, &Message::error(1, "x")).unwrap(),
            Message::error(1, "x")
        );
    }
    (c, server.join().unwrap())
}

#[test]
fn same_secret_authenticates() {
    let (c, s) = run(GOOD, b"0123456789abcdef0123\n");
    assert!(c.is_ok(), "{c:?}");
    assert!(s.is_ok(), "{s:?}");
}

#[test]
fn wrong_secret_is_refused_on_both_sides() {
    let (c, s) = run(GOOD, b"0123456789abcdef0124");
    assert!(matches!(s, Err(AuthError::WrongSecret)), "{s:?}");
    match c {
        Err(AuthError::Refused(r)) => assert!(r.contains("wrong cluster secret"), "{r}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn another_role_is_refused() {
    let secret = Secret::from_bytes(GOOD).unwrap();
    let me: SocketAddr = "10.0.0.1:7100".parse().unwrap();
    let (_, hello) = ClientHandshake::start(&secret, Role::Employer, me).unwrap();
    match accept(&secret, &hello, Role::Host) {
        Err(AuthError::NotAllowed(why)) => assert!(why.contains("Employer"), "{why}"),
        other => panic!("{other:?}"),
    }
    let (hs, _, _) = accept(&secret, &hello, Role::Employer).unwrap();
    assert_eq!((hs.role, hs.host), (Role::Employer, me));
}

/// A third party that relays a handshake between two holders of the
/// secret, then writes frames of its own, gets nothing: its frames
/// are refused, and it cannot read the real ones.
#[test]
fn a_relayed_handshake_gives_the_relay_nothing() {
    let secret = Secret::from_bytes(GOOD).unwrap();
    let me: SocketAddr = "10.0.0.3:7100".parse().unwrap();
    let (client, hello) = ClientHandshake::start(&secret, Role::Employer, me).unwrap();
    // The relay passes both handshake messages on unchanged.
    let (_, mut server, reply) = accept(&secret, &hello, Role::Employer).unwrap();
    let mut real = client.on_reply(&reply).unwrap();
    // What the relay writes, in plain or as a record under keys of a
    // handshake of its own (it can run one only with the secret, and
    // even then the keys differ), is refused.
    let mut plain = Vec::new();
    crate::wire::encode_frame(1, &Message::Ping, &mut plain);
    assert!(server.open(&mut plain, 4096).is_err());
    let (own, own_hello) = ClientHandshake::start(&secret, Role::Employer, me).unwrap();
    let (_, _, own_reply) = accept(&secret, &own_hello, Role::Employer).unwrap();
    let mut forged = Vec::new();
    own.on_reply(&own_reply)
        .unwrap()
        .seal(1, &Message::Ping, &mut forged)
        .unwrap();
    assert_eq!(
        server.open(&mut forged, 4096),
        Err(crate::wire::WireError::Unauthentic)
    );
    // The real frames carry no readable text.
    let mut rec = Vec::new();
    real.seal(2, &Message::error(1, "uid 0 session"), &mut rec)
        .unwrap();
    assert!(!rec.windows(13).any(|w| w == b"uid 0 session"));
}

/// A replayed first handshake message makes the callee answer, but
/// the keys it then holds are not the ones the original caller has.
#[test]
fn a_replayed_handshake_opens_nothing() {
    let secret = Secret::from_bytes(GOOD).unwrap();
    let me: SocketAddr = "10.0.0.3:7100".parse().unwrap();
    let (client, hello) = ClientHandshake::start(&secret, Role::Employer, me).unwrap();
    let (_, _, reply) = accept(&secret, &hello, Role::Employer).unwrap();
    let mut real = client.on_reply(&reply).unwrap();
    let (_, mut replayed, _) = accept(&secret, &hello, Role::Employer).unwrap();
    let mut rec = Vec::new();
    real.seal(1, &Message::Ping, &mut rec).unwrap();
    assert!(replayed.open(&mut rec, 4096).is_err());
}

#[test]
fn short_secret_is_refused() {
    assert!(Secret::from_bytes(b"short\n").is_err());
}

#[test]
fn secret_file_created_once_with_mode_0600() {
    let dir = std::env::temp_dir().join(format!("dipc-secret-test-{}", std::process::id()));
    let path = dir.join("sub/secret");
    let _ = fs::remove_dir_all(&dir);
    let (s1, created) = Secret::load_or_create(&path).unwrap();
    assert!(created);
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let (s2, created) = Secret::load_or_create(&path).unwrap();
    assert!(!created);
    assert_eq!(s1.0, s2.0);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let e = Secret::load(&path).unwrap_err().to_string();
    assert!(e.contains("chmod 600"), "{e}");
    fs::remove_dir_all(&dir).unwrap();
}

/// What each side reads before its channel opens is the handshake's
/// (`Greeting`): another protocol's message is refused by name on either
/// side, a callee's refusal is the caller's error, and a caller may not
/// open with a refusal.
#[test]
fn a_message_of_another_protocol_is_refused_by_name() {
    let secret = Secret::from_bytes(GOOD).unwrap();
    let me: SocketAddr = "10.0.0.1:7100".parse().unwrap();
    let err = |r: Result<(ServerHandshake, Secure, Message), AuthError>| match r {
        Err(e) => e.to_string(),
        Ok((hs, _, _)) => panic!("accepted {hs:?}"),
    };
    assert_eq!(
        err(accept(&secret, &Message::Ping, Role::Host)),
        "unexpected Ping during authentication"
    );
    let refused = Message::Refused {
        reason: "no".into(),
    };
    assert_eq!(
        err(accept(&secret, &refused, Role::Host)),
        "unexpected Refused during authentication"
    );
    let answer = |msg: &Message| {
        let (client, _) = ClientHandshake::start(&secret, Role::Host, me).unwrap();
        match client.on_reply(msg) {
            Err(e) => e,
            Ok(_) => panic!("{msg:?} opened the channel"),
        }
    };
    assert!(
        matches!(answer(&Message::Pong), AuthError::Unexpected("Pong")),
        "{}",
        answer(&Message::Pong)
    );
    assert!(matches!(answer(&refused), AuthError::Refused(r) if r == "no"));
    assert!(matches!(
        answer(&Message::error(libc::EAGAIN, "busy")),
        AuthError::Refused(r) if r == "busy"
    ));
}
