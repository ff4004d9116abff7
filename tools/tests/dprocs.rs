//! Distributed processes across simulated hosts with real `dipcd`
//! daemons: names, calls with each of their errors, and the serving
//! runtime's order. `dipc-dproc` (the Rust API) is the application.
//!
//! They need root and `ip netns`; where those are missing they fail, never
//! skip.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// Time a process is given to do what it should.
const WAKE: Duration = Duration::from_secs(20);

/// The pid_d `dipc-dproc lookup NAME` prints on `host`, or the errno name
/// it failed with.
fn lookup(c: &Cluster, host: usize, name: &str) -> Result<i64, String> {
    let out = c.exec(host, &["dipc-dproc", "lookup", name]);
    if out.status.success() {
        let s = String::from_utf8_lossy(&out.stdout);
        return s
            .trim()
            .parse()
            .map_err(|e| format!("bad lookup output {s:?}: {e}"));
    }
    Err(errno_name(&String::from_utf8_lossy(&out.stderr)).unwrap_or_else(|| describe(&out)))
}

/// Waits until `name` is held by nobody, as seen from `host`.
fn wait_unnamed(c: &Cluster, host: usize, name: &str) {
    let gone = wait_for(WAKE, || lookup(c, host, name) == Err("ENOENT".into()));
    assert!(
        gone.is_some(),
        "{name:?} still held: {:?}",
        lookup(c, host, name)
    );
}

/// `dipcref names --json` on `host`, as (name, pid_d) pairs.
fn dipcref_names(c: &Cluster, host: usize) -> Vec<(String, i64)> {
    let out = c.exec_ok(host, &["dipcref", "names", "--json"]);
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("bad JSON {out:?}: {e}"));
    v.get("names")
        .and_then(|n| n.as_array())
        .unwrap_or_else(|| panic!("no \"names\" array in {out:?}"))
        .iter()
        .map(|r| {
            (
                r.get("name")
                    .and_then(|x| x.as_str())
                    .unwrap_or_else(|| panic!("name row without name: {r}"))
                    .to_owned(),
                r.get("pid_d")
                    .and_then(|x| x.as_i64())
                    .unwrap_or_else(|| panic!("name row without pid_d: {r}")),
            )
        })
        .collect()
}

/// The output lines a `dipc-dproc call` printed after its `pid_d` line.
fn call_ok(c: &Cluster, host: usize, args: &[&str]) -> Vec<String> {
    let mut a = vec!["dipc-dproc", "call"];
    a.extend_from_slice(args);
    c.exec_ok(host, &a)
        .lines()
        .skip(1)
        .map(str::to_owned)
        .collect()
}

fn call_err(c: &Cluster, host: usize, args: &[&str], errno: &str) {
    let mut a = vec!["dipc-dproc", "call"];
    a.extend_from_slice(args);
    c.exec_err(host, &a, &[errno]);
}

#[test]
fn names_are_unique_listed_and_go_with_their_process() {
    let c = Cluster::up(3);
    let mut holder = c.spawn(2, &["dipc-dproc", "hold", "Buffer", "Philosopher[3]"]);
    let a = holder.pid_d();
    holder.wait_for_stdout("named", WAKE);

    let mut listed = dipcref_names(&c, 3);
    listed.sort();
    assert_eq!(
        listed,
        vec![("Buffer".to_owned(), a), ("Philosopher[3]".to_owned(), a)]
    );
    assert_eq!(lookup(&c, 1, "Buffer"), Ok(a));
    assert_eq!(lookup(&c, 2, "Philosopher[3]"), Ok(a));
    assert_eq!(lookup(&c, 1, "Nobody"), Err("ENOENT".to_owned()));
    // Unique in the cluster, from any host.
    c.exec_err(
        1,
        &["dipc-dproc", "hold", "Buffer", "--then", "exit"],
        &["EEXIST"],
    );
    c.exec_err(
        2,
        &["dipc-dproc", "hold", "Buffer", "--then", "exit"],
        &["EEXIST"],
    );
    c.exec_err(
        3,
        &["dipc-dproc", "hold", "", "--then", "exit"],
        &["EINVAL"],
    );
    assert_eq!(
        lookup(&c, 1, "Buffer"),
        Ok(a),
        "a refused claim took the name"
    );

    // SIGKILL releases both names.
    holder.kill();
    wait_unnamed(&c, 3, "Buffer");
    wait_unnamed(&c, 3, "Philosopher[3]");

    // Free again; uregist releases it, an exit does, and so does release.
    c.exec_ok(3, &["dipc-dproc", "hold", "Buffer", "--then", "uregist"]);
    assert_eq!(lookup(&c, 1, "Buffer"), Err("ENOENT".to_owned()));
    let out = c.exec_ok(1, &["dipc-dproc", "hold", "Table", "--then", "release"]);
    assert!(out.contains("released"), "{out}");
    assert_eq!(lookup(&c, 2, "Table"), Err("ENOENT".to_owned()));
    c.exec_ok(2, &["dipc-dproc", "hold", "Table", "--then", "exit"]);
    wait_unnamed(&c, 1, "Table");
    assert!(dipcref_names(&c, 1).is_empty());
}

#[test]
fn calls_work_across_hosts_and_fail_with_their_errors() {
    let c = Cluster::up(3);
    let mut srv = c.spawn(2, &["dipc-dproc", "serve", "--name", "Srv"]);
    let s = srv.pid_d();
    let mut other = c.spawn(3, &["dipc-dproc", "serve", "--name", "Other"]);
    let o = other.pid_d();

    // The same from another host and from the server's own.
    assert_eq!(call_ok(&c, 1, &["Srv", "Echo", "hello"]), ["hello"]);
    assert_eq!(call_ok(&c, 2, &["Srv", "Echo", "local"]), ["local"]);
    let s_arg = s.to_string();
    assert_eq!(
        call_ok(&c, 3, &[&s_arg, "Echo", "a", "--count", "3"]),
        ["a", "a", "a"]
    );
    // The procedure sees who calls: pid_d and uid.
    let out = c.exec_ok(1, &as_nobody(&["dipc-dproc", "call", "Srv", "Whoami"]));
    let mut lines = out.lines();
    let me = lines
        .next()
        .unwrap_or_default()
        .trim_start_matches("pid_d ");
    assert_eq!(lines.next(), Some(format!("{me} 65534").as_str()), "{out}");
    // Nested: Srv (host 2), serving the call, calls Other (host 3).
    let fwd = format!("{o} Echo nested");
    assert_eq!(call_ok(&c, 1, &["Srv", "Forward", &fwd]), ["nested"]);

    call_err(&c, 1, &["Srv", "Nope"], "ENOSYS");
    call_err(&c, 1, &["999999", "Echo"], "ESRCH");
    call_err(&c, 1, &["self", "Echo"], "EDEADLK");
    let long = "x".repeat(9000);
    call_err(&c, 1, &["Srv", "Echo", &long], "EMSGSIZE");
    call_err(&c, 3, &["Srv", "Big", "100", "--max-out", "10"], "E2BIG");
    assert_eq!(
        call_ok(&c, 3, &["Srv", "Big", "10", "--max-out", "10"]),
        ["xxxxxxxxxx"]
    );
    let t0 = Instant::now();
    call_err(&c, 1, &["Srv", "Never", "--timeout-ms", "300"], "ETIMEDOUT");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    call_err(&c, 1, &["Srv", "Never", "--interrupt-ms", "300"], "EINTR");
    // A signal must end the wait whenever it comes, also while the caller
    // is not asleep (e.g. asking the referee whether the callee lives,
    // every 250 ms): forty calls, interrupted 25 us apart around then.
    let out = call_ok(
        &c,
        1,
        &[
            "Srv",
            "Never",
            "--timeout-ms",
            "3000",
            "--interrupt-ms",
            "250",
            "--interrupt-step-us",
            "25",
            "--count",
            "40",
            "--expect",
            "EINTR",
        ],
    );
    assert_eq!(out, ["EINTR 40"]);
    // The postponed calls of the callers that gave up do not hold the
    // server: it still serves.
    assert_eq!(call_ok(&c, 1, &["Srv", "Echo", "still"]), ["still"]);

    // Round trips of a null call, for the report (no assertion: figures
    // are for benchmarks, see the README).
    for (host, what) in [(1, "host 1 -> host 2"), (2, "on host 2")] {
        let out = call_ok(&c, host, &["Srv", "Echo", "--count", "2000", "--time"]);
        eprintln!("null call {what}: {}", out.join(" "));
    }

    // A process holds one call per link and `MAX_LINKS` links at most
    // (fewer if its descriptor limit is low): once every link has a call
    // waiting, a new caller is refused at once, from any host. Callers
    // that go take their calls with them.
    let mut full = c.spawn(2, &["dipc-dproc", "serve", "--name", "Full"]);
    full.pid_d();
    let mut flood = c.spawn(
        2,
        &["dipc-dproc", "call", "Full", "Never", "--parallel", "1100"],
    );
    flood.pid_d();
    let t0 = Instant::now();
    loop {
        let out = c.exec(
            1,
            &[
                "dipc-dproc",
                "call",
                "Full",
                "Echo",
                "x",
                "--timeout-ms",
                "20000",
            ],
        );
        if errno_name(&String::from_utf8_lossy(&out.stderr)).as_deref() == Some("EAGAIN") {
            break;
        }
        assert!(out.status.success(), "{}", describe(&out));
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the server never filled up: {}",
            full.describe()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    flood.kill();
    assert_eq!(call_ok(&c, 1, &["Full", "Echo", "again"]), ["again"]);
    // The flood's calls past the limit were refused the same way.
    let refused = flood.stderr();
    assert!(
        refused
            .lines()
            .all(|l| errno_name(l).as_deref() == Some("EAGAIN")),
        "{}",
        flood.describe()
    );
    full.kill();

    // The callee exits before it replies: the caller gets an error, soon.
    let mut caller = c.spawn(1, &["dipc-dproc", "call", "Srv", "Never"]);
    let p = caller.pid_d();
    srv.wait_for_stdout(&format!("never from {p}"), WAKE);
    srv.kill();
    let t0 = Instant::now();
    caller.wait(WAKE);
    assert_eq!(
        errno_name(&caller.stderr()).as_deref(),
        Some("ECONNRESET"),
        "{}",
        caller.describe()
    );
    eprintln!("callee killed: the caller failed after {:?}", t0.elapsed());

    // The callee's host is lost: an error within the heartbeat time-out
    // (1.5 s in these clusters) and a liveness check.
    let mut caller = c.spawn(1, &["dipc-dproc", "call", "Other", "Never"]);
    let p = caller.pid_d();
    other.wait_for_stdout(&format!("never from {p}"), WAKE);
    c.set_link(3, false);
    let t0 = Instant::now();
    caller.wait(WAKE);
    let lost_after = t0.elapsed();
    c.set_link(3, true);
    assert_eq!(
        errno_name(&caller.stderr()).as_deref(),
        Some("ECONNRESET"),
        "{}",
        caller.describe()
    );
    eprintln!("callee's host lost: the caller failed after {lost_after:?}");
    assert!(lost_after < Duration::from_secs(10), "{lost_after:?}");
    c.wait_all_up(1, WAKE);

    // Stop ends the serving loop.
    let mut srv = c.spawn(2, &["dipc-dproc", "serve", "--name", "Srv2"]);
    srv.pid_d();
    call_ok(&c, 1, &["Srv2", "Stop"]);
    assert!(srv.wait(WAKE).success(), "{}", srv.describe());
    assert!(srv.stdout().contains("stopped"));
}

#[test]
fn serving_interleaves_initial_statements_and_retries_oldest_first() {
    let c = Cluster::up(2);
    let mut srv = c.spawn(2, &["dipc-dproc", "serve", "--name", "Tokens", "--init"]);
    srv.pid_d();
    srv.wait_for_stdout("init waiting", WAKE);
    // The initial statements wait: calls are served meanwhile.
    assert_eq!(call_ok(&c, 1, &["Tokens", "Echo", "served"]), ["served"]);

    // Three Takes, each postponed before the next comes.
    let mut takers = Vec::new();
    for (i, host) in [1, 2, 1].into_iter().enumerate() {
        let t = c.spawn(host, &["dipc-dproc", "call", "Tokens", "Take"]);
        srv.wait_for_stdout(&format!("postponed Take {i}"), WAKE);
        takers.push(t);
    }
    // A token: the initial statements, tried first after each step, take
    // it; no Take gets it.
    call_ok(&c, 1, &["Tokens", "Put"]);
    srv.wait_for_stdout("init done", WAKE);
    for t in &mut takers {
        assert!(
            t.running(),
            "a Take ran before the initial statements:\n{}",
            t.describe()
        );
    }
    // Then each token goes to the oldest postponed Take.
    for i in 0..takers.len() {
        call_ok(&c, 1, &["Tokens", "Put"]);
        let st = takers[i].wait(WAKE);
        assert!(st.success(), "{}", takers[i].describe());
        let out = takers[i].stdout();
        assert_eq!(out.lines().nth(1), Some(i.to_string().as_str()), "{out}");
        for t in &mut takers[i + 1..] {
            assert!(t.running(), "a younger Take ran first:\n{}", t.describe());
        }
    }
}

/// The lecture's Buffer (libdipc/examples/c/dp_buffer.c, the C API): one
/// Buffer process on host 2, senders and receivers on every host; every
/// letter is received exactly once.
#[test]
fn buffer_passes_every_letter_exactly_once() {
    const PER: usize = 15;
    let c = Cluster::up(3);
    let prog = c_example("dp_buffer").to_string_lossy().into_owned();
    let mut buffer = c.spawn(2, &[&prog, "serve"]);
    buffer.pid_d();
    let out = c.exec_ok(1, &[&prog, "errors"]);
    assert!(out.contains("errors ok"), "{out}");

    let per = PER.to_string();
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    let mut expected = Vec::new();
    for host in 1..=3 {
        for j in 0..2 {
            let tag = format!("h{host}s{j}");
            expected.extend((0..PER).map(|i| format!("{tag} {i}")));
            senders.push(c.spawn(host, &[&prog, "send", &tag, &per]));
            receivers.push(c.spawn(host, &[&prog, "receive", &per]));
        }
    }
    let mut got = Vec::new();
    for p in senders.iter_mut().chain(receivers.iter_mut()) {
        let st = p.wait(Duration::from_secs(120));
        assert!(st.success(), "{}", p.describe());
    }
    for r in &receivers {
        got.extend(
            r.stdout()
                .lines()
                .filter(|l| !l.starts_with("received"))
                .map(str::to_owned),
        );
    }
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "letters lost or received twice");

    c.exec_ok(3, &[&prog, "stop"]);
    assert!(buffer.wait(WAKE).success(), "{}", buffer.describe());
    assert!(buffer.stdout().contains("stopped"));
}

/// Calls do not use the mailbox: a caller whose mailbox is full (anyone
/// may fill one) still gets its reply, and the server serves on. (When
/// replies were mailbox messages, such a reply was given up after
/// `request_ms`.)
#[test]
fn a_full_callers_mailbox_does_not_hold_its_reply() {
    let c = Cluster::up(2);
    let mut srv = c.spawn(2, &["dipc-dproc", "serve", "--name", "Srv"]);
    srv.pid_d();
    let mut taker = c.spawn(1, &["dipc-dproc", "call", "Srv", "Take"]);
    let t = taker.pid_d();
    srv.wait_for_stdout("postponed Take 0", WAKE);
    let filler = c_example("mailbox").to_string_lossy().into_owned();
    let out = c.exec_ok(2, &[&filler, "fill", &t.to_string(), "4096"]);
    assert!(out.contains("filled"), "{out}");
    // Take's reply is due now.
    call_ok(&c, 2, &["Srv", "Put"]);
    assert!(taker.wait(WAKE).success(), "{}", taker.describe());
    assert!(taker.stdout().contains("\n0"), "{}", taker.describe());
    assert_eq!(
        call_ok(&c, 1, &["Srv", "Echo", "served", "--timeout-ms", "20000"]),
        ["served"]
    );
}

/// A host whose link to the referee breaks has its records dropped there,
/// and its dipcd restores them when it joins again: the names of its
/// processes must come back with them (a name lasts as long as its
/// registration).
#[test]
fn names_come_back_with_their_registration_after_a_link_break() {
    let c = Cluster::up(2);
    let mut holder = c.spawn(2, &["dipc-dproc", "hold", "Buffer"]);
    let a = holder.pid_d();
    holder.wait_for_stdout("named", WAKE);
    c.set_link(2, false);
    // The referee drops host 2's records once it marks it down.
    wait_unnamed(&c, 1, "Buffer");
    c.set_link(2, true);
    c.wait_all_up(1, WAKE);
    let back = wait_for(WAKE, || lookup(&c, 1, "Buffer") == Ok(a));
    assert!(
        back.is_some(),
        "the name did not come back: {:?}",
        lookup(&c, 1, "Buffer")
    );
    assert!(holder.running());
}

/// The lecture's Stream: lines read on host 1 pass through the Buffer
/// process on host 2 to a consumer on host 3, in order.
#[test]
fn stream_passes_lines_through_the_buffer_in_order() {
    let c = Cluster::up(3);
    let prog = c_example("dp_buffer").to_string_lossy().into_owned();
    let mut buffer = c.spawn(2, &[&prog, "serve"]);
    buffer.pid_d();
    let lines: Vec<String> = (0..100)
        .map(|i| format!("line {i} of the stream"))
        .collect();
    let file = c.scratch_dir("stream").join("input");
    std::fs::write(&file, lines.join("\n") + "\n")
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut consumer = c.spawn(3, &[&prog, "stream-out"]);
    let out = c.exec_ok(1, &[&prog, "stream-in", &file.to_string_lossy()]);
    assert!(out.contains("streamed 100"), "{out}");
    assert!(consumer.wait(WAKE).success(), "{}", consumer.describe());
    let got: Vec<String> = consumer.stdout().lines().map(str::to_owned).collect();
    assert_eq!(got, lines);
}

/// The lecture's dining philosophers (libdipc/examples/c/dp_philosophers.c):
/// the Table on host 2, five philosophers over the three hosts, and an
/// Observer on host 1 that each philosopher tells when it starts and stops
/// eating (inside its Join..Leave): no two neighbours ever eat at once in
/// the Observer's view, which is not the Table's, and everyone eats.
#[test]
fn dining_philosophers_never_let_neighbours_eat_together() {
    const MEALS: &str = "20";
    let c = Cluster::up(3);
    let prog = c_example("dp_philosophers").to_string_lossy().into_owned();
    let mut table = c.spawn(2, &[&prog, "table"]);
    table.pid_d();
    let mut observer = c.spawn(1, &[&prog, "observer"]);
    observer.pid_d();
    let mut phils: Vec<Background> = (0..5)
        .map(|i| c.spawn(i % 3 + 1, &[&prog, "philosopher", &i.to_string(), MEALS]))
        .collect();
    for p in &mut phils {
        assert!(
            p.wait(Duration::from_secs(120)).success(),
            "{}",
            p.describe()
        );
        assert!(p.stdout().contains("ate 20"), "{}", p.describe());
    }
    let out = c.exec_ok(3, &[&prog, "report"]);
    assert_eq!(out.trim(), "meals 20 20 20 20 20 clashes 0");
    assert!(table.wait(WAKE).success(), "{}", table.describe());
    assert!(observer.wait(WAKE).success(), "{}", observer.describe());
}

/// The lecture's Resource (libdipc/examples/c/dp_resource.c), readers and
/// writers of a file on host 2: nine readers on the three hosts read over
/// and over, each read 30 ms long and the next one asked for at once, so
/// that some reader is always in and readers keep arriving all the while
/// the writer waits, until they read the writer's last write; the writer
/// still gets in each time (without the guard on waiting writers it
/// starves, and the readers with it: the test then times out), and the
/// Observer (host 3) never saw a reader beside a writer.
#[test]
fn resource_lets_a_writer_in_among_continuous_readers() {
    let c = Cluster::up(3);
    let prog = c_example("dp_resource").to_string_lossy().into_owned();
    let file = c.scratch_dir("resource").join("file");
    std::fs::write(&file, "start").unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut resource = c.spawn(2, &[&prog, "resource", &file.to_string_lossy()]);
    resource.pid_d();
    let mut observer = c.spawn(3, &[&prog, "observer"]);
    observer.pid_d();
    let mut readers: Vec<Background> = (0..9)
        .map(|i| c.spawn(i % 3 + 1, &[&prog, "reader", "30"]))
        .collect();
    for r in &mut readers {
        r.wait_for_stdout("reading", WAKE);
    }
    let mut writer = c.spawn(1, &[&prog, "writer", "5"]);
    assert!(
        writer.wait(Duration::from_secs(60)).success(),
        "{}",
        writer.describe()
    );
    for r in &mut readers {
        assert!(r.wait(WAKE).success(), "{}", r.describe());
    }
    let out = c.exec_ok(1, &[&prog, "report"]);
    let words: Vec<&str> = out.split_whitespace().collect();
    assert!(
        words.len() == 6 && words[2..] == ["writes", "5", "clashes", "0"],
        "{out}"
    );
    let reads: u64 = words[1].parse().unwrap_or(0);
    assert!(reads >= 18, "{out}");
    assert!(resource.wait(WAKE).success(), "{}", resource.describe());
    assert!(observer.wait(WAKE).success(), "{}", observer.describe());
}

/// A callee knows its callers from the kernel: a local user cannot call a
/// process in another process's name, whether it connects to the callee's
/// endpoint as a process of this host or as a worker passing a remote
/// session, or writes a request into the callee's mailbox (which anyone
/// may write; when calls rode the mailbox, the callee ran such a request
/// as the victim's).
#[test]
fn nobody_calls_in_another_processs_name() {
    let c = Cluster::up(2);
    let mut srv = c.spawn(2, &["dipc-dproc", "serve", "--name", "Srv"]);
    let s = srv.pid_d().to_string();
    let mut victim = c.spawn(1, &["dipc-dproc", "hold", "Victim"]);
    let v = victim.pid_d();
    let vs = v.to_string();
    for mode in ["hello", "worker"] {
        let out = attack(&c, 2, &["forged-call", &s, "--as", &vs, "--mode", mode]);
        assert_has(&out, mode, "hello: refused");
    }
    let out = attack(
        &c,
        2,
        &["forged-call", &s, "--as", &vs, "--mode", "mailbox"],
    );
    assert_has(&out, "mailbox", "request: sent");
    // The server is still serving, and has run Never for nobody: calls
    // through its links are taken in arrival order, so one that returns
    // after the forgeries shows it has looked at everything before.
    assert_eq!(call_ok(&c, 1, &["Srv", "Echo", "after"]), ["after"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(call_ok(&c, 1, &["Srv", "Echo", "later"]), ["later"]);
    assert!(
        !srv.stdout().contains("never from"),
        "a forged call ran:\n{}",
        srv.describe()
    );
    assert!(srv.running(), "{}", srv.describe());
    victim.kill();
}

/// A process keeps a bounded number of links (here 24: half its
/// descriptor limit of 48). More callers than that, calling now and then,
/// are all served: a new caller takes the place of the link idle the
/// longest, and a caller whose idle link was closed sends its call again
/// on a new one.
#[test]
fn more_callers_than_links_are_served_by_closing_idle_links() {
    let c = Cluster::up(2);
    let mut srv = c.spawn(
        2,
        &[
            "prlimit",
            "--nofile=48",
            "env",
            "RUST_LOG=dipc=debug",
            "dipc-dproc",
            "serve",
            "--name",
            "Srv",
        ],
    );
    srv.pid_d();
    let call = |host: usize, count: &str, pause: &str| {
        c.spawn(
            host,
            &[
                "dipc-dproc",
                "call",
                "Srv",
                "Echo",
                "hi",
                "--count",
                count,
                "--pause-ms",
                pause,
                "--timeout-ms",
                "20000",
            ],
        )
    };
    // 24 callers (half on each host) fill the links, then call again
    // 3 s later; 6 more come 1.5 s in, when the first links are idle.
    let mut first: Vec<_> = (0..24).map(|i| call(1 + i % 2, "2", "3000")).collect();
    std::thread::sleep(Duration::from_millis(1500));
    let mut late: Vec<_> = (0..6).map(|i| call(1 + i % 2, "1", "0")).collect();
    for p in first.iter_mut().chain(late.iter_mut()) {
        assert!(
            p.wait(WAKE).success(),
            "{}\n{}",
            p.describe(),
            srv.describe()
        );
        assert!(p.stdout().contains("hi"), "{}", p.describe());
    }
    assert_has(
        &srv.stderr(),
        "the server's log",
        "closed the idle call link",
    );
}

/// A process that moves to another host (`dipc::migrate`) takes calls
/// there: the call that moved it ends with `ECONNRESET` (its process went
/// on elsewhere without replying), and later calls, from a new caller or
/// from one whose link and route named the old host, reach it where it
/// went, with its state.
#[test]
fn calls_reach_a_process_after_it_moves() {
    let c = Cluster::up(3);
    let mut srv = c.spawn(
        2,
        &["dipc-dproc", "serve", "--name", "Mover", "--migratable"],
    );
    let s = srv.pid_d();
    call_ok(&c, 1, &["Mover", "Put"]);
    call_ok(&c, 1, &["Mover", "Put"]);
    // A caller with a link to host 2, which calls again after the move.
    let mut early = c.spawn(
        1,
        &[
            "dipc-dproc",
            "call",
            "Mover",
            "Echo",
            "kept",
            "--count",
            "2",
            "--pause-ms",
            "4000",
            "--timeout-ms",
            "20000",
        ],
    );
    early.wait_for_stdout("kept", WAKE);
    let to = format!("{}:7100", host_addr(3));
    call_err(&c, 1, &["Mover", "MoveTo", &to], "ECONNRESET");
    assert!(srv.wait(WAKE).success(), "{}", srv.describe());
    let moved = wait_for(Duration::from_secs(10), || {
        pid_table(&c)
            .get(&s)
            .is_some_and(|(host, _, _)| host.starts_with(&host_addr(3)))
    });
    assert!(
        moved.is_some(),
        "pid_d {s} did not show on host 3: {:?}",
        pid_table(&c)
    );
    assert_eq!(call_ok(&c, 1, &["Mover", "Echo", "after"]), ["after"]);
    assert_eq!(call_ok(&c, 2, &["Mover", "Echo", "there"]), ["there"]);
    // Its two tokens came along: two Takes end at once.
    call_ok(&c, 3, &["Mover", "Take", "--timeout-ms", "5000"]);
    call_ok(&c, 3, &["Mover", "Take", "--timeout-ms", "5000"]);
    assert!(early.wait(WAKE).success(), "{}", early.describe());
    assert_eq!(
        early.stdout().matches("kept").count(),
        2,
        "{}",
        early.describe()
    );
    call_ok(&c, 1, &["Mover", "Stop"]);
}
