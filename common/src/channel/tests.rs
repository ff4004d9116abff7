//! Unit tests of both channels and their codec.

use super::*;
use crate::wire::HEADER_LEN;
use std::io::Write;
use std::os::unix::net::UnixStream;

#[test]
fn channel_round_trip_and_errors() {
    let (a, b) = UnixStream::pair().unwrap();
    let mut ca = Channel::new(a, 4096);
    let mut cb = Channel::new(b, 4096);
    ca.send(9, &Message::Ping).unwrap();
    assert_eq!(cb.recv().unwrap(), (9, Message::Ping));
    // Garbage is a protocol error, not a panic.
    cb.get_mut().write_all(&[0u8; HEADER_LEN]).unwrap();
    assert!(matches!(ca.recv(), Err(ChannelError::Wire(_))));
    drop(cb);
    assert!(matches!(ca.recv(), Err(ChannelError::Closed)));
}

#[test]
fn channel_times_out() {
    let (a, _b) = UnixStream::pair().unwrap();
    a.set_read_timeout(Some(std::time::Duration::from_millis(20)))
        .unwrap();
    let mut ca = Channel::new(a, 4096);
    assert!(matches!(ca.recv(), Err(ChannelError::TimedOut)));
}

#[test]
fn read_ahead_takes_frames_out_of_one_read() {
    let (a, mut b) = UnixStream::pair().unwrap();
    let mut ca = Channel::read_ahead(a, 64 * 1024);
    let mut bytes = Vec::new();
    wire::encode_frame(1, &Message::Ping, &mut bytes);
    // Longer than the read-ahead buffer: it grows to hold the frame.
    let big = Message::error(7, "x".repeat(40_000));
    wire::encode_frame(2, &big, &mut bytes);
    wire::encode_frame(3, &Message::Pong, &mut bytes);
    let (first, rest) = bytes.split_at(HEADER_LEN + 3);
    let writer = std::thread::spawn({
        let mut b2 = b.try_clone().unwrap();
        let first = first.to_vec();
        let rest = rest.to_vec();
        move || {
            b2.write_all(&first).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
            b2.write_all(&rest).unwrap();
        }
    });
    assert_eq!(ca.recv().unwrap(), (1, Message::Ping));
    assert_eq!(ca.recv().unwrap(), (2, big));
    writer.join().unwrap();
    assert_eq!(ca.recv().unwrap(), (3, Message::Pong));
    assert_eq!(ca.buffered(), 0);
    // A frame cut short by the peer is a protocol error, a header
    // over the limit too; neither makes the buffer grow without bound.
    let mut cut = Vec::new();
    wire::encode_frame(5, &Message::error(7, "z"), &mut cut);
    b.write_all(&cut[..HEADER_LEN + 1]).unwrap();
    drop(b);
    assert!(matches!(ca.recv(), Err(ChannelError::Wire(_))));
    let (a, mut b) = UnixStream::pair().unwrap();
    let mut ca = Channel::read_ahead(a, 1024);
    let mut huge = Vec::new();
    wire::encode_frame(4, &Message::error(7, "y".repeat(2000)), &mut huge);
    b.write_all(&huge[..HEADER_LEN]).unwrap();
    assert!(matches!(ca.recv(), Err(ChannelError::Wire(_))));
}

#[test]
fn read_ahead_is_interrupted_only_between_frames() {
    let (a, mut b) = UnixStream::pair().unwrap();
    // No read time-out: a signal restarts nothing, read returns EINTR.
    let mut ca = Channel::read_ahead(a, 4096);
    crate::sys::tests::catch_sigusr2();
    // SAFETY: pthread_self is always valid.
    let me = unsafe { libc::pthread_self() } as usize;
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(50));
        // SAFETY: the receiving thread is alive and waiting in recv.
        unsafe { libc::pthread_kill(me as libc::pthread_t, libc::SIGUSR2) };
    });
    assert!(matches!(
        ca.recv_interruptible(),
        Err(ChannelError::Interrupted)
    ));
    t.join().unwrap();
    // Once a frame has begun, a signal does not cut it off.
    let mut bytes = Vec::new();
    wire::encode_frame(6, &Message::error(7, "half"), &mut bytes);
    b.write_all(&bytes[..HEADER_LEN + 2]).unwrap();
    let rest = bytes[HEADER_LEN + 2..].to_vec();
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(50));
        // SAFETY: as above.
        unsafe { libc::pthread_kill(me as libc::pthread_t, libc::SIGUSR2) };
        std::thread::sleep(std::time::Duration::from_millis(50));
        b.write_all(&rest).unwrap();
        b
    });
    assert_eq!(
        ca.recv_interruptible().unwrap(),
        (6, Message::error(7, "half"))
    );
    drop(t.join().unwrap());
}

#[test]
fn framed_reassembles_split_frames() {
    let (a, mut b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let mut f = Framed::new(a, 4096);
    let mut bytes = Vec::new();
    wire::encode_frame(1, &Message::Heartbeat, &mut bytes);
    wire::encode_frame(2, &Message::error(5, "x"), &mut bytes);
    b.write_all(&bytes[..7]).unwrap();
    assert_eq!(f.read_frame().unwrap(), None);
    b.write_all(&bytes[7..]).unwrap();
    assert_eq!(f.read_frame().unwrap(), Some((1, Message::Heartbeat)));
    assert_eq!(f.read_frame().unwrap(), Some((2, Message::error(5, "x"))));
    assert_eq!(f.read_frame().unwrap(), None);
    f.queue(3, &Message::Pong);
    assert!(f.flush().unwrap());
    let mut cb = Channel::new(b, 4096);
    assert_eq!(cb.recv().unwrap(), (3, Message::Pong));
    // A frame sent just before the peer closes is still taken.
    cb.send(4, &Message::Ping).unwrap();
    drop(cb);
    assert_eq!(f.read_frame().unwrap(), Some((4, Message::Ping)));
    assert!(matches!(f.read_frame(), Err(ChannelError::Closed)));
}

#[test]
fn framed_reads_until_the_socket_is_empty() {
    // More than one maximal record arrives at once: every frame is
    // taken in one wake-up (an edge-triggered loop gets no second).
    let (a, mut b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let mut f = Framed::new(a, 4096);
    let mut bytes = Vec::new();
    for i in 0..100 {
        wire::encode_frame(i, &Message::error(5, "y".repeat(3996)), &mut bytes);
    }
    // Twenty frames fill the socket's buffer well past one record.
    b.write_all(&bytes[..bytes.len() / 5]).unwrap();
    let mut n = 0;
    while let Some((id, _)) = f.read_frame().unwrap() {
        assert_eq!(id, n);
        n += 1;
    }
    assert_eq!(n, 20);
}

#[test]
fn framed_truncated_at_close_is_an_error() {
    let (a, mut b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let mut f = Framed::new(a, 4096);
    let mut bytes = Vec::new();
    wire::encode_frame(1, &Message::error(5, "z".repeat(100)), &mut bytes);
    b.write_all(&bytes[..50]).unwrap();
    drop(b);
    assert!(matches!(
        f.read_frame(),
        Err(ChannelError::Wire(WireError::Truncated { .. }))
    ));
}

#[test]
fn framed_pauses_a_peer_that_does_not_read_and_drops_one_that_never_does() {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let mut f = Framed::new(a, 64 * 1024)
        .pause_reading_at(100_000)
        .close_writing_at(1_000_000);
    let mut cb = Channel::new(b, 64 * 1024);
    // The peer pipelines requests and reads nothing back.
    let reply = Message::error(5, "r".repeat(60_000));
    let mut answered = 0;
    for i in 0..200 {
        cb.send(i, &Message::Ping).unwrap();
    }
    while let Some((id, _)) = f.read_frame().unwrap() {
        f.queue(id, &reply);
        answered += 1;
    }
    // Reading stopped once the socket and ~100 kB of replies were
    // full, long before the 200 requests.
    assert!(answered < 200, "answered {answered}");
    let paused_at = f.pending_writes();
    assert!(paused_at <= 100_000 + 60_100, "{paused_at} bytes queued");
    // The peer reads: the requests are served again.
    let mut got = 0;
    while got < answered {
        cb.recv().unwrap();
        got += 1;
        if f.read_frame().unwrap().is_some() {
            break;
        }
    }
    // Frames pushed unasked past close_writing_at break the channel.
    for _ in 0..40 {
        f.queue(0, &reply);
    }
    assert!(f.flush().is_err());
}

fn sealed_pair() -> (Codec, Codec) {
    let k = SessionKeys {
        tx_key: [9; crate::wire::KEY_LEN],
        tx_n: 0,
        rx_key: [8; crate::wire::KEY_LEN],
        rx_n: 0,
    };
    (
        Codec::Secure(Box::new(Secure::from_keys(&k))),
        Codec::Secure(Box::new(Secure::from_keys(&k.peer()))),
    )
}

#[test]
fn sealed_channels_and_framed_carry_frames_both_ways() {
    let (ka, kb) = sealed_pair();
    let (a, b) = UnixStream::pair().unwrap();
    let mut ca = Channel::new(a, 64 * 1024).with_codec(ka);
    let mut cb = Channel::read_ahead(b, 64 * 1024).with_codec(kb);
    let big = Message::error(7, "x".repeat(40_000));
    ca.send(1, &Message::Ping).unwrap();
    ca.send(2, &big).unwrap();
    ca.send(3, &Message::Pong).unwrap();
    assert_eq!(cb.recv().unwrap(), (1, Message::Ping));
    assert_eq!(cb.recv().unwrap(), (2, big));
    assert_eq!(cb.recv().unwrap(), (3, Message::Pong));
    cb.send(4, &Message::Heartbeat).unwrap();
    assert_eq!(ca.recv().unwrap(), (4, Message::Heartbeat));
    // The exact channel's state moves to a Framed, which carries on.
    let (a, codec) = ca.into_parts();
    a.set_nonblocking(true).unwrap();
    let mut fa = Framed::new(a, 64 * 1024).with_codec(codec);
    cb.send(5, &Message::Joined).unwrap();
    while fa.read_frame().unwrap().is_none() {}
    fa.queue(6, &Message::Cancel);
    assert!(fa.flush().unwrap());
    assert_eq!(cb.recv().unwrap(), (6, Message::Cancel));
}

#[test]
fn segment_content_travels_borrowed_both_codecs_both_modes() {
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    for sealed in [false, true] {
        for ahead in [false, true] {
            let (ka, kb) = if sealed {
                sealed_pair()
            } else {
                (Codec::Plain, Codec::Plain)
            };
            let (a, b) = UnixStream::pair().unwrap();
            let mut ca = Channel::new(a, 256 * 1024).with_codec(ka);
            let mut cb = if ahead {
                Channel::read_ahead(b, 256 * 1024)
            } else {
                Channel::new(b, 256 * 1024)
            }
            .with_codec(kb);
            ca.send_encoded(|o| wire::encode_shm_data(9, 3, 4096, &data, o))
                .unwrap();
            ca.send(10, &Message::ShmRevoked { unit: 3 }).unwrap();
            let f = cb.recv_raw().unwrap();
            assert_eq!(f.request_id, 9);
            let c = f.shm_data().unwrap().unwrap();
            assert_eq!((c.unit, c.offset), (3, 4096));
            assert_eq!(c.data, &data[..], "sealed {sealed} read-ahead {ahead}");
            // The same frame decodes into the same message.
            assert_eq!(
                f.decode().unwrap(),
                Message::ShmData {
                    unit: 3,
                    offset: 4096,
                    data: data.clone()
                }
            );
            let f = cb.recv_raw().unwrap();
            assert!(f.shm_data().is_none());
            assert_eq!(f.decode().unwrap(), Message::ShmRevoked { unit: 3 });
        }
    }
}

#[test]
fn a_short_shm_data_payload_is_an_error_not_a_panic() {
    let mut out = Vec::new();
    wire::encode_shm_data(1, 0, 0, b"abcdef", &mut out);
    // Claim 6 bytes of data, carry 5: the data field is truncated.
    let payload = &out[HEADER_LEN..out.len() - 1];
    let f = RawFrame {
        kind: wire::Kind::ShmData,
        request_id: 1,
        payload,
    };
    assert!(matches!(
        f.shm_data(),
        Some(Err(WireError::Truncated { .. }))
    ));
}

#[test]
fn a_plain_or_altered_frame_on_a_sealed_channel_is_refused() {
    let (ka, kb) = sealed_pair();
    let (a, mut b) = UnixStream::pair().unwrap();
    let mut ca = Channel::new(a, 4096).with_codec(ka);
    let mut plain = Vec::new();
    wire::encode_frame(1, &Message::Ping, &mut plain);
    b.write_all(&plain).unwrap();
    assert!(matches!(ca.recv(), Err(ChannelError::Wire(_))));
    // A sealed record with one bit flipped in flight.
    let (mut kb, (a, mut b)) = (kb, UnixStream::pair().unwrap());
    let (ka2, _) = sealed_pair();
    let mut ca = Channel::new(a, 4096).with_codec(ka2);
    let mut rec = Vec::new();
    kb.encode_with(&mut rec, |o| wire::encode_frame(1, &Message::Ping, o))
        .unwrap();
    let last = rec.len() - 1;
    rec[last] ^= 1;
    b.write_all(&rec).unwrap();
    assert!(matches!(
        ca.recv(),
        Err(ChannelError::Wire(WireError::Unauthentic))
    ));
}
