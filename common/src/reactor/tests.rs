use super::*;
use crate::channel::Channel;
use crate::wire;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream as StdUnix;
use std::path::PathBuf;
use std::thread;

/// A handler that runs `f` on every event and keeps them all; it stops
/// the loop with code 1 if the test has not stopped it within 10 s.
struct Script<F> {
    f: F,
    seen: Vec<String>,
    give_up: Instant,
    taken: Vec<(ConnId, FramedParts<Stream>)>,
    /// Ticks at least this often (else only at `give_up`).
    tick_every: Option<Duration>,
}

impl<F: FnMut(&Event, &mut dyn Out)> Handler for Script<F> {
    fn event(&mut self, now: Instant, ev: Event, out: &mut dyn Out) {
        if matches!(ev, Event::Tick) && now >= self.give_up {
            out.stop(1);
        }
        (self.f)(&ev, out);
        if !matches!(ev, Event::Tick) {
            self.seen.push(format!("{ev:?}"));
        }
    }
    fn wake_at(&self) -> Option<Instant> {
        match self.tick_every {
            Some(d) => Some((Instant::now() + d).min(self.give_up)),
            None => Some(self.give_up),
        }
    }
    fn taken(&mut self, conn: ConnId, parts: FramedParts<Stream>, out: &mut dyn Out) {
        self.taken.push((conn, parts));
        out.stop(0);
    }
}

fn script<F: FnMut(&Event, &mut dyn Out)>(f: F) -> Script<F> {
    Script {
        f,
        seen: Vec::new(),
        give_up: Instant::now() + Duration::from_secs(10),
        taken: Vec::new(),
        tick_every: None,
    }
}

/// A Unix listener at a path of its own, in a reactor.
fn unix_reactor(name: &str, max_conns: usize, opts: Options) -> (Reactor, PathBuf) {
    let path =
        std::env::temp_dir().join(format!("dipc-reactor-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path).unwrap();
    let mut r = Reactor::new(max_conns).unwrap();
    r.listen(Listener::Unix(l), opts).unwrap();
    (r, path)
}

fn frame(id: u64, msg: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    wire::encode_frame(id, msg, &mut out);
    out
}

#[test]
fn frames_in_replies_out_and_one_closed_event_at_the_end() {
    let (mut r, path) = unix_reactor("echo", 16, Options::new(4096));
    let client = thread::spawn(move || {
        let mut ch = Channel::new(StdUnix::connect(&path).unwrap(), 4096);
        for i in 1..=3 {
            assert_eq!(ch.call(i, &Message::Ping).unwrap(), Message::Pong);
        }
        let _ = std::fs::remove_file(&path);
    });
    let mut h = script(|ev, out| match ev {
        Event::Frame { conn, id, .. } => out.send(*conn, *id, &Message::Pong),
        Event::Closed { .. } => out.stop(0),
        _ => {}
    });
    assert_eq!(r.run(&mut h).unwrap(), 0);
    client.join().unwrap();
    let uid = nix::unistd::getuid().as_raw();
    assert!(h.seen[0].starts_with("Accepted"), "{:?}", h.seen);
    assert!(h.seen[0].contains(&format!("uid: {uid}")), "{:?}", h.seen);
    assert_eq!(h.seen.iter().filter(|e| e.starts_with("Frame")).count(), 3);
    assert!(h.seen.last().unwrap().contains("why: Peer"), "{:?}", h.seen);
    assert_eq!(r.connections(), 0);
}

#[test]
fn a_protocol_error_closes_after_the_handlers_last_word() {
    let (mut r, path) = unix_reactor("proto", 16, Options::new(4096));
    let client = thread::spawn(move || {
        let mut s = StdUnix::connect(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        s.write_all(&[0xff; 64]).unwrap();
        let mut ch = Channel::new(s, 4096);
        let first = ch.recv().unwrap();
        let after = ch.recv();
        (first, after.is_err())
    });
    let mut h = script(|ev, out| {
        if let Event::Closed { conn, why } = ev {
            out.send(*conn, 0, &Message::error(libc::EPROTO, format!("{why:?}")));
            out.stop(0);
        }
    });
    assert_eq!(r.run(&mut h).unwrap(), 0);
    let ((_, msg), closed) = client.join().unwrap();
    assert!(
        matches!(&msg, Message::Error { errno, message } if *errno == libc::EPROTO && message.contains("Protocol")),
        "{msg:?}"
    );
    assert!(closed, "the connection stays open after a protocol error");
}

#[test]
fn a_peer_that_stalls_mid_frame_is_dropped() {
    let opts = Options {
        stall: Some(Duration::from_millis(100)),
        ..Options::new(4096)
    };
    let (mut r, path) = unix_reactor("stall", 16, opts);
    let client = thread::spawn(move || {
        let mut s = StdUnix::connect(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        s.write_all(&frame(1, &Message::Ping)[..5]).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 1];
        s.read(&mut b).unwrap()
    });
    let mut h = script(|ev, out| {
        if let Event::Closed { why, .. } = ev {
            assert_eq!(*why, Gone::Stalled);
            out.stop(0);
        }
    });
    assert_eq!(r.run(&mut h).unwrap(), 0);
    assert_eq!(client.join().unwrap(), 0, "the stalled peer sees its end");
}

#[test]
fn connections_past_the_cap_are_closed_at_once() {
    let (mut r, path) = unix_reactor("cap", 1, Options::new(4096));
    let client = thread::spawn(move || {
        let first = StdUnix::connect(&path).unwrap();
        let mut second = StdUnix::connect(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        second
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut b = [0u8; 1];
        let n = second.read(&mut b).unwrap();
        // The first is served.
        let mut ch = Channel::new(first, 4096);
        (n, ch.call(1, &Message::Ping).unwrap())
    });
    let mut h = script(|ev, out| {
        if let Event::Frame { conn, id, .. } = ev {
            out.send(*conn, *id, &Message::Pong);
            out.stop(0);
        }
    });
    assert_eq!(r.run(&mut h).unwrap(), 0);
    assert_eq!(client.join().unwrap(), (0, Message::Pong));
    assert_eq!(
        h.seen.iter().filter(|e| e.starts_with("Accepted")).count(),
        1
    );
}

#[test]
fn a_taken_connection_leaves_with_its_unread_bytes_and_its_replies_written() {
    let (mut r, path) = unix_reactor("take", 16, Options::new(4096));
    let client = thread::spawn(move || {
        let mut s = StdUnix::connect(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let mut both = frame(1, &Message::Ping);
        both.extend(frame(2, &Message::Ping));
        s.write_all(&both).unwrap();
        let mut ch = Channel::new(s, 4096);
        let reply = ch.recv().unwrap();
        (ch.into_inner(), reply)
    });
    let mut h = script(|ev, out| {
        if let Event::Frame { conn, id, .. } = ev {
            out.send(*conn, *id, &Message::Pong);
            out.take(*conn);
        }
    });
    assert_eq!(r.run(&mut h).unwrap(), 0);
    let (_s, reply) = client.join().unwrap();
    assert_eq!(reply, (1, Message::Pong));
    assert_eq!(h.taken.len(), 1);
    let parts = &h.taken[0].1;
    assert!(parts.unwritten.is_empty());
    assert_eq!(
        wire::decode_frame(&parts.unread, 4096).unwrap().unwrap().1,
        2,
        "the second frame stays for whoever takes the connection"
    );
    assert_eq!(h.seen.iter().filter(|e| e.starts_with("Frame")).count(), 1);
    assert!(!h.seen.iter().any(|e| e.starts_with("Closed")));
    assert_eq!(r.connections(), 0);
}

#[test]
fn a_closed_connection_is_read_no_more() {
    let (mut r, path) = unix_reactor("close", 16, Options::new(4096));
    let client = thread::spawn(move || {
        let mut s = StdUnix::connect(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let mut many = Vec::new();
        for i in 0..10 {
            many.extend(frame(i, &Message::Ping));
        }
        s.write_all(&many).unwrap();
        let mut rest = Vec::new();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.read_to_end(&mut rest);
        rest
    });
    let mut h = script(|ev, out| match ev {
        Event::Frame { conn, id, .. } => {
            out.send(*conn, *id, &Message::Done { value: 0 });
            out.close_when_flushed(*conn);
        }
        Event::Closed { why, .. } => {
            assert_eq!(*why, Gone::Local);
            out.stop(0);
        }
        _ => {}
    });
    assert_eq!(r.run(&mut h).unwrap(), 0);
    let rest = client.join().unwrap();
    assert_eq!(
        wire::decode_frame(&rest, 4096).unwrap().unwrap(),
        (rest.len(), 0, Message::Done { value: 0 })
    );
    assert_eq!(h.seen.iter().filter(|e| e.starts_with("Frame")).count(), 1);
}

#[test]
fn passed_descriptors_come_with_the_frame_and_the_connection_carries_on_over_them() {
    let opts = Options {
        pass_fds: true,
        ..Options::new(4096)
    };
    let (mut r, path) = unix_reactor("fds", 16, opts);
    let client = thread::spawn(move || {
        let s = StdUnix::connect(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let (mine, theirs) = StdUnix::pair().unwrap();
        sys::send_with_fd(&s, &frame(1, &Message::Ping), &theirs).unwrap();
        drop(theirs);
        drop(s);
        let mut ch = Channel::new(mine, 4096);
        ch.call(2, &Message::Ping).unwrap()
    });
    let mut h = script(|ev, out| {
        if let Event::Frame { conn, id: 2, .. } = ev {
            out.send(*conn, 2, &Message::Pong);
            out.stop(0);
        }
    });
    // The script sees events by reference; adoption needs the descriptor,
    // so a handler of its own takes it.
    struct Adopt<'a, F>(&'a mut Script<F>);
    impl<F: FnMut(&Event, &mut dyn Out)> Handler for Adopt<'_, F> {
        fn event(&mut self, now: Instant, mut ev: Event, out: &mut dyn Out) {
            if let Event::Frame {
                conn, id: 1, fds, ..
            } = &mut ev
            {
                assert_eq!(fds.len(), 1);
                let fd = fds.pop().unwrap();
                let s = std::os::unix::net::UnixStream::from(fd);
                s.set_nonblocking(true).unwrap();
                let s = mio::net::UnixStream::from_std(s);
                out.adopt(*conn, Stream::Unix(s), Codec::Plain);
            }
            self.0.event(now, ev, out)
        }
        fn wake_at(&self) -> Option<Instant> {
            self.0.wake_at()
        }
    }
    assert_eq!(r.run(&mut Adopt(&mut h)).unwrap(), 0);
    assert_eq!(client.join().unwrap(), Message::Pong);
    assert!(
        !h.seen.iter().any(|e| e.starts_with("Closed")),
        "{:?}",
        h.seen
    );
}

#[test]
fn a_recorder_keeps_what_a_handler_asks() {
    let mut rec = Recorder::default();
    rec.send(70, 3, &Message::Pong);
    rec.send_encoded(70, &mut |out| wire::encode_frame(4, &Message::Ping, out));
    rec.close(71);
    assert_eq!(rec.sent(70), vec![(3, Message::Pong), (4, Message::Ping)]);
    assert!(rec.closed(71) && !rec.closed(70));
    assert_eq!(rec.take_all().len(), 3);
    assert!(rec.actions.is_empty());
}

/// A connection the handler opens to a TCP peer: frames queued before it
/// is established go out once it is, the peer's come back as frames.
#[test]
fn an_outgoing_connection_carries_frames_queued_before_it_is_established() {
    let peer = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = peer.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (s, _) = peer.accept().unwrap();
        let mut ch = Channel::new(s, 4096);
        let got = ch.recv().unwrap();
        ch.send(got.0, &Message::Pong).unwrap();
        got
    });
    let mut r = Reactor::new(4).unwrap();
    let class = r
        .outgoing(Options {
            dead_after: Some(Duration::from_secs(5)),
            ..Options::new(4096)
        })
        .unwrap();
    let mut opened = None;
    let mut h = script(move |ev, out| match ev {
        Event::Tick if opened.is_none() => {
            let s = crate::net::connect_from("127.0.0.1".parse().unwrap(), addr, None).unwrap();
            let conn = out
                .connect(Stream::Tcp(mio::net::TcpStream::from_std(s)), class)
                .unwrap();
            out.send(conn, 7, &Message::Ping);
            opened = Some(conn);
        }
        Event::Frame { conn, .. } => {
            assert_eq!(Some(*conn), opened);
            out.close(*conn);
        }
        Event::Closed { .. } => out.stop(0),
        _ => {}
    });
    // The first tick opens it.
    h.tick_every = Some(Duration::from_millis(5));
    assert_eq!(r.run(&mut h).unwrap(), 0);
    assert_eq!(server.join().unwrap(), (7, Message::Ping));
    let connected = h.seen.iter().position(|e| e.starts_with("Connected"));
    let frame = h.seen.iter().position(|e| e.starts_with("Frame"));
    assert!(connected.is_some() && connected < frame, "{:?}", h.seen);
    assert!(
        h.seen.last().unwrap().contains("why: Local"),
        "{:?}",
        h.seen
    );
    assert_eq!(r.connections(), 0);
}

#[test]
fn an_outgoing_connection_that_is_refused_ends_closed_not_connected() {
    // A port nobody listens on: bound, then closed.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut r = Reactor::new(4).unwrap();
    let class = r.outgoing(Options::new(4096)).unwrap();
    let mut opened = false;
    let mut h = script(move |ev, out| match ev {
        Event::Tick if !opened => {
            opened = true;
            let s = crate::net::connect_from("127.0.0.1".parse().unwrap(), addr, None).unwrap();
            let conn = out
                .connect(Stream::Tcp(mio::net::TcpStream::from_std(s)), class)
                .unwrap();
            out.send(conn, 1, &Message::Ping);
        }
        Event::Closed { .. } => out.stop(0),
        _ => {}
    });
    h.tick_every = Some(Duration::from_millis(5));
    assert_eq!(r.run(&mut h).unwrap(), 0);
    assert_eq!(h.seen.len(), 1, "{:?}", h.seen);
    assert!(h.seen[0].contains("why: Io"), "{:?}", h.seen);
}

/// A descriptor of the handler's own: ready under its key while watched,
/// silent once unwatched.
#[test]
fn a_watched_descriptor_is_ready_under_its_key_until_unwatched() {
    let (a, mut b) = StdUnix::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let fd = a.as_raw_fd();
    let mut r = Reactor::new(4).unwrap();
    r.watch(42, fd, Interest::READABLE).unwrap();
    b.write_all(b"x").unwrap();
    let mut a = a;
    let mut readies = 0;
    let mut h = script(move |ev, out| match ev {
        Event::Ready { key } => {
            assert_eq!(*key, 42);
            readies += 1;
            let mut buf = [0u8; 8];
            while a.read(&mut buf).is_ok() {}
            out.unwatch(42);
            // Another byte: no event now that it is unwatched.
            b.write_all(b"y").unwrap();
        }
        Event::Tick if readies == 1 => {
            readies += 1;
        }
        // A second tick after the unwatch, with the byte waiting.
        Event::Tick if readies == 2 => out.stop(0),
        _ => {}
    });
    h.tick_every = Some(Duration::from_millis(5));
    assert_eq!(r.run(&mut h).unwrap(), 0);
    let ready: Vec<_> = h.seen.iter().filter(|e| e.starts_with("Ready")).collect();
    assert_eq!(ready.len(), 1, "{:?}", h.seen);
}
