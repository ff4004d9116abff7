//! The raw TCP ping-pong, the baseline every dipc figure is a ratio of.

use crate::common::{check_counts, check_ip, err, print_line, summary, time_limit, FILL, MAX_TCP};
use dipc_common::net;
use serde_json::json;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

pub(crate) fn tcp_server(
    bind: IpAddr,
    port: u16,
    connections: u32,
    limit: u32,
    spin: Duration,
) -> io::Result<()> {
    check_ip(bind)?;
    time_limit(limit, false)?;
    let listener = TcpListener::bind((bind, port))?;
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..connections {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        loop {
            let n = match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
                Err(e) => return Err(e),
            };
            s.write_all(&buf[..n])?;
            net::spin_readable(&s, spin);
        }
    }
    Ok(())
}

fn tcp_connect(addr: SocketAddr, wait: Duration) -> io::Result<TcpStream> {
    let deadline = Instant::now() + wait;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(s) => return Ok(s),
            // The server may not listen yet.
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(err(format!("connect {addr}: {e}"))),
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn tcp_client(
    addr: SocketAddr,
    size: usize,
    iterations: usize,
    warmup: usize,
    wait: u64,
    limit: u32,
    label: &str,
    group: &str,
    spin_us: u64,
) -> io::Result<()> {
    check_ip(addr.ip())?;
    check_counts(size, MAX_TCP, iterations)?;
    time_limit(limit, false)?;
    let mut s = tcp_connect(addr, Duration::from_secs(wait))?;
    s.set_nodelay(true)?;
    let out = vec![FILL; size];
    let mut back = vec![0u8; size];
    let spin = Duration::from_micros(spin_us);
    let mut ns = Vec::with_capacity(iterations);
    for i in 0..warmup + iterations {
        let t = Instant::now();
        s.write_all(&out)?;
        net::spin_readable(&s, spin);
        s.read_exact(&mut back)?;
        let dt = t.elapsed();
        if i >= warmup {
            ns.push(dt.as_nanos() as u64);
        }
    }
    if back != out {
        return Err(err("tcp: echo differs from what was sent"));
    }
    drop(s);
    print_line(&summary(
        label,
        group,
        Some(size),
        ns,
        json!({ "spin_us": spin_us }),
    ))
}
