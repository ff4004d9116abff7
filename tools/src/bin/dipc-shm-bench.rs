//! `dipc-shm-bench`: the sides of the distributed shared memory benchmark
//! that `tools/bench --shm` runs on a simulated cluster, and its report.
//!
//! Each measuring side prints JSON lines
//! `{"bench":..,"count":..,"median_ns":..,"p99_ns":..}` on stdout (a hit
//! line's figure is a whole pass of `reads` reads); `report`
//! reads them all (with the raw TCP line from `dipc-bench tcp-client`) and
//! prints the table with its ratios.
//!
//! - `owner`: on the owner host, creates the segment, attaches, reads every
//!   page (so it holds a read copy of each), prints `ready` and stays.
//! - `remote`: on another host: a read miss on each page of the first half
//!   (content from the owner), a write miss on each page of the second half
//!   (the owner's process loses its copy first: an invalidation), then hits
//!   (8-byte reads of pages it holds) against the same reads of private
//!   memory.
//! - `fill`: in segment mode, creates a segment, writes it, detaches (the
//!   content goes back to the owner's real segment).
//! - `transfer`: attach, time the first read (the whole segment moves),
//!   detach; repeated.
//! - `memcpy`: a plain copy of the same sizes, for scale.

use clap::{Parser, Subcommand};
use libc::{c_int, c_void};
use serde_json::{json, Value};
use std::io::{self, BufRead};
use std::time::{Duration, Instant};

const PAGE: usize = 4096;

#[derive(Parser)]
#[command(
    name = "dipc-shm-bench",
    about = "Sides of the dipc shared memory benchmark"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create the page-mode segment of PAGES pages, read every page, stay.
    Owner {
        #[arg(long)]
        key: String,
        #[arg(long, default_value_t = 2000)]
        pages: usize,
        #[arg(long, default_value_t = 300)]
        time_limit: u32,
    },
    /// Read misses, write misses with invalidation, and hits.
    Remote {
        #[arg(long)]
        key: String,
        #[arg(long, default_value_t = 2000)]
        pages: usize,
        /// Passes over the held pages for the hit measurement.
        #[arg(long, default_value_t = 200)]
        passes: usize,
    },
    /// Create a segment of SIZE bytes and fill it.
    Fill {
        #[arg(long)]
        key: String,
        #[arg(long)]
        size: usize,
    },
    /// Time whole-segment transfers of the filled segment.
    Transfer {
        #[arg(long)]
        key: String,
        #[arg(long)]
        size: usize,
        #[arg(long, default_value_t = 10)]
        reps: usize,
    },
    /// Time plain memcpy of SIZE bytes.
    Memcpy {
        #[arg(long)]
        size: usize,
        #[arg(long, default_value_t = 10)]
        reps: usize,
    },
    /// Read the JSON lines of a run on stdin and print the table.
    Report,
}

fn err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

fn parse_key(s: &str) -> io::Result<i32> {
    let v = match s.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16).map(|v| v as i32),
        None => s.parse::<i32>(),
    };
    v.map_err(|_| err(format!("{s:?} is not a key")))
}

fn get(key: i32, size: usize, create: bool) -> io::Result<c_int> {
    let flags = dipc::IPC_DIPC | 0o600 | if create { libc::IPC_CREAT } else { 0 };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let id = dipc::capi::dipc_shmget(key, size, flags);
        if id >= 0 {
            return Ok(id);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOENT) || Instant::now() >= deadline {
            return Err(err(format!("shmget({key:#x}): {e}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn attach(id: c_int) -> io::Result<*mut u8> {
    // SAFETY: a null address lets the library choose where to map.
    let p = unsafe { dipc::capi::dipc_shmat(id, std::ptr::null(), 0) };
    if p as isize == -1 {
        return Err(err(format!("shmat({id}): {}", io::Error::last_os_error())));
    }
    Ok(p as *mut u8)
}

fn detach(p: *mut u8) -> io::Result<()> {
    // SAFETY: p came from dipc_shmat and nothing uses it afterwards.
    if unsafe { dipc::capi::dipc_shmdt(p as *const c_void) } < 0 {
        return Err(err(format!("shmdt: {}", io::Error::last_os_error())));
    }
    Ok(())
}

fn line(bench: &str, ns: Vec<u64>) {
    line_with(bench, ns, json!({}));
}

/// Prints a result line with `extra` fields merged in.
fn line_with(bench: &str, mut ns: Vec<u64>, extra: Value) {
    ns.sort_unstable();
    let n = ns.len();
    let median = ns.get(n / 2).copied().unwrap_or(0);
    let p99 = ns
        .get((n * 99 / 100).min(n.saturating_sub(1)))
        .copied()
        .unwrap_or(0);
    let mut v = json!({"bench": bench, "count": n, "median_ns": median, "p99_ns": p99});
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    println!("{v}");
}

fn owner(key: i32, pages: usize, limit: u32) -> io::Result<()> {
    // SAFETY: alarm takes a number of seconds: the default action ends a
    // run that nobody stops.
    unsafe { libc::alarm(limit) };
    let id = get(key, pages * PAGE, true)?;
    let p = attach(id)?;
    let mut sum = 0u64;
    for i in 0..pages {
        // SAFETY: within the attached segment.
        sum += unsafe { std::ptr::read_volatile(p.add(i * PAGE) as *const u64) };
    }
    println!("ready {sum}");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn remote(key: i32, pages: usize, passes: usize) -> io::Result<()> {
    let id = get(key, pages * PAGE, false)?;
    let p = attach(id)?;
    let half = pages / 2;
    let mut read_miss = Vec::with_capacity(half);
    for i in 0..half {
        let t = Instant::now();
        // SAFETY: within the attached segment.
        unsafe { std::ptr::read_volatile(p.add(i * PAGE) as *const u64) };
        read_miss.push(t.elapsed().as_nanos() as u64);
    }
    let mut write_miss = Vec::with_capacity(pages - half);
    for i in half..pages {
        let t = Instant::now();
        // SAFETY: within the attached segment.
        unsafe { std::ptr::write_volatile(p.add(i * PAGE) as *mut u64, i as u64) };
        write_miss.push(t.elapsed().as_nanos() as u64);
    }
    // Hits: the same strided 8-byte reads over memory we hold and over
    // private memory of the same size, written first so that it is real
    // pages (an untouched buffer reads the shared zero page) and kept to
    // 4 KiB pages like the segment (no transparent huge pages): once over
    // one page (cache-resident), and once over every page (TLB and cache
    // misses dominate).
    let len = pages * PAGE;
    // SAFETY: a fresh private anonymous mapping of len bytes.
    let private = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if private == libc::MAP_FAILED {
        return Err(err(format!("mmap: {}", io::Error::last_os_error())));
    }
    let private = private as *mut u8;
    // SAFETY: private is len bytes, mapped read-write.
    unsafe {
        libc::madvise(private as *mut c_void, len, libc::MADV_NOHUGEPAGE);
        std::ptr::write_bytes(private, 1, len);
    }
    let sweep = |base: *const u8, span: usize| -> Vec<u64> {
        let mut v = Vec::with_capacity(passes);
        let reads = len / 64;
        for _ in 0..passes {
            let t = Instant::now();
            let mut s = 0u64;
            for k in 0..reads {
                let off = (k * 64) % span;
                // SAFETY: off < span <= len, within both mappings.
                s = s.wrapping_add(unsafe { std::ptr::read_volatile(base.add(off) as *const u64) });
            }
            std::hint::black_box(s);
            // The whole pass: per read it is below a nanosecond.
            v.push(t.elapsed().as_nanos() as u64);
        }
        v
    };
    let reads = (len / 64) as u64;
    let results = [
        ("hit-page", sweep(p, PAGE)),
        ("plain-page", sweep(private, PAGE)),
        ("hit-all", sweep(p, len)),
        ("plain-all", sweep(private, len)),
    ];
    line("read-miss", read_miss);
    line("write-miss", write_miss);
    for (name, ns) in results {
        line_with(name, ns, json!({ "reads": reads }));
    }
    // SAFETY: unmapping what was mapped above.
    unsafe { libc::munmap(private as *mut c_void, len) };
    detach(p)
}

fn fill(key: i32, size: usize) -> io::Result<()> {
    let id = get(key, size, true)?;
    let p = attach(id)?;
    // SAFETY: within the attached segment.
    unsafe { std::ptr::write_bytes(p, 0x5A, size) };
    detach(p)?;
    println!("filled");
    Ok(())
}

fn transfer(key: i32, size: usize, reps: usize) -> io::Result<()> {
    let id = get(key, size, false)?;
    let mut ns = Vec::with_capacity(reps);
    for _ in 0..reps {
        let p = attach(id)?;
        let t = Instant::now();
        // SAFETY: within the attached segment.
        let v = unsafe { std::ptr::read_volatile(p.add(size - 1)) };
        ns.push(t.elapsed().as_nanos() as u64);
        if v != 0x5A {
            return Err(err(format!("read {v:#x}, wrote 0x5a")));
        }
        detach(p)?;
    }
    line(&format!("transfer-{size}"), ns);
    Ok(())
}

fn memcpy(size: usize, reps: usize) {
    let src = vec![0x5Au8; size];
    let mut dst = vec![0u8; size];
    let mut ns = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        dst.copy_from_slice(&src);
        std::hint::black_box(&dst);
        ns.push(t.elapsed().as_nanos() as u64);
    }
    line(&format!("memcpy-{size}"), ns);
}

fn report() -> io::Result<()> {
    let mut by: std::collections::BTreeMap<String, Value> = Default::default();
    for l in io::stdin().lock().lines() {
        let l = l?;
        if let Ok(v) = serde_json::from_str::<Value>(&l) {
            if let Some(b) = v["bench"].as_str() {
                by.insert(b.to_string(), v.clone());
            }
        }
    }
    let us = |b: &str| -> Option<f64> {
        let v = by.get(b)?;
        v["median_ns"]
            .as_f64()
            .or_else(|| v["median_us"].as_f64().map(|u| u * 1000.0))
            .map(|ns| ns / 1000.0)
    };
    let fmt = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.3}"));
    let tcp = us("tcp");
    println!("shared memory, medians in µs (one run, 2 simulated hosts, owner host 2)");
    println!("  raw TCP round trip host1<->host2 (64 B)   {}", fmt(tcp));
    let rm = us("read-miss");
    println!(
        "  remote read miss (one page)               {}   /TCP = {} (target <= 3)",
        fmt(rm),
        fmt(rm.zip(tcp).map(|(a, b)| a / b))
    );
    let wm = us("write-miss");
    println!(
        "  write miss with invalidation (one page)   {}   /TCP = {}",
        fmt(wm),
        fmt(wm.zip(tcp).map(|(a, b)| a / b))
    );
    let reads = by
        .get("hit-page")
        .and_then(|v| v["reads"].as_u64())
        .unwrap_or(0);
    for (what, hit, plain) in [
        ("within one page", "hit-page", "plain-page"),
        ("over every page", "hit-all", "plain-all"),
    ] {
        let (h, p) = (us(hit), us(plain));
        println!(
            "  hits, {reads} 8-byte reads {what:<16}  {}   private memory {}   ratio {} (target ~1)",
            fmt(h),
            fmt(p),
            fmt(h.zip(p).map(|(a, b)| a / b))
        );
    }
    for size in [1usize << 20, 16 << 20] {
        let t = us(&format!("transfer-{size}"));
        let m = us(&format!("memcpy-{size}"));
        println!(
            "  whole segment {:>2} MiB (segment mode)      {}   memcpy {}   ratio {}   {} MB/s",
            size >> 20,
            fmt(t),
            fmt(m),
            fmt(t.zip(m).map(|(a, b)| a / b)),
            t.map_or("-".into(), |t| format!("{:.0}", size as f64 / t))
        );
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Owner {
            key,
            pages,
            time_limit,
        } => parse_key(&key).and_then(|k| owner(k, pages, time_limit)),
        Cmd::Remote { key, pages, passes } => {
            parse_key(&key).and_then(|k| remote(k, pages, passes))
        }
        Cmd::Fill { key, size } => parse_key(&key).and_then(|k| fill(k, size)),
        Cmd::Transfer { key, size, reps } => parse_key(&key).and_then(|k| transfer(k, size, reps)),
        Cmd::Memcpy { size, reps } => {
            memcpy(size, reps);
            Ok(())
        }
        Cmd::Report => report(),
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dipc-shm-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
