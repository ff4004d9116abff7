//! One user cannot take a host's dipcd away from the others: it holds at
//! most `limits.clients_per_uid` connections (the one over gets `EAGAIN`
//! with the limit's name), and a client that pipelines requests without
//! reading the replies, or sends half frames, costs dipcd bounded memory.
//! Real `dipcd` daemons on simulated hosts, attacked by `dipc-attack` as
//! an unprivileged user while other users call.
//!
//! They need root and `ip netns`; where those are missing they fail, never
//! skip.

mod common;

use common::*;
use std::fs;
use std::time::Duration;

/// Another unprivileged user than the attacker (nobody).
const OTHER_UID: &str = "65533";

/// Host `i`'s dipcd pid, from its pid file.
fn dipcd_pid(i: usize) -> String {
    let pid_file = state_dir().join(format!("h{i}")).join("dipcd.pid");
    fs::read_to_string(&pid_file)
        .unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()))
        .trim()
        .to_owned()
}

/// A process's resident memory, in KiB.
fn rss_kib(pid: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("process {pid}: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in process {pid}'s status:\n{status}"))
}

/// dipcd's resident memory on host `i`, in KiB.
fn dipcd_rss_kib(i: usize) -> u64 {
    rss_kib(&dipcd_pid(i))
}

/// Every other user is still served: another uid opens connections, root
/// lists the hosts.
fn others_are_served(c: &Cluster) {
    let out = c.exec_ok(
        1,
        &as_uid(OTHER_UID, &["dipc-attack", "clients", "--count", "3"]),
    );
    assert!(
        out.contains("clients: 3 opened, 0 refused"),
        "another user must still be served:\n{out}"
    );
    // The cluster's hosts (an attack that joins as a host of its own
    // leaves that one down once it goes).
    let hosts = c.dipcref_hosts(1);
    assert!(
        hosts
            .iter()
            .filter(|h| h.port == HOST_PORT)
            .all(|h| h.is_up()),
        "root's dipcref: {hosts:?}"
    );
}

#[test]
fn a_user_over_its_client_limit_gets_eagain_and_others_are_served() {
    let c = Cluster::up(1);
    let mut attack = c.spawn(
        1,
        &as_nobody(&[
            "dipc-attack",
            "clients",
            "--count",
            "300",
            "--hold-ms",
            "20000",
        ]),
    );
    attack.wait_for_stdout("clients: ", Duration::from_secs(30));
    let out = attack.stdout();
    assert!(
        out.contains("clients: 256 opened, 44 refused"),
        "nobody must get exactly limits.clients_per_uid (256) connections:\n{out}"
    );
    assert!(
        out.contains(
            "refused: EAGAIN: uid 65534 holds 256 connections to dipcd (limits.clients_per_uid"
        ),
        "the one over its limit must get EAGAIN naming the limit:\n{out}"
    );
    // While nobody holds its 256, the others are served.
    others_are_served(&c);
    assert!(
        attack.running(),
        "the attack must still hold its connections"
    );
    assert!(
        c.log(1)
            .contains("refused a local client of uid 65534 (pid "),
        "dipcd must log the refusal:\n{}",
        c.log(1)
    );
}

/// The count of requests `dipc-attack pipeline` printed it sent.
fn pipelined(out: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix("pipeline: sent "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {out:?}"))
}

#[test]
fn a_client_that_reads_no_replies_costs_dipcd_bounded_memory() {
    let c = Cluster::up(1);
    let before = dipcd_rss_kib(1);
    // Two million requests: 40 MB of them, whose replies would take as
    // much again if dipcd read them all.
    let mut attack = c.spawn(
        1,
        &as_nobody(&[
            "dipc-attack",
            "pipeline",
            "--requests",
            "2000000",
            "--hold-ms",
            "20000",
        ]),
    );
    attack.wait_for_stdout("pipeline: ", Duration::from_secs(60));
    let out = attack.stdout();
    let sent = pipelined(&out);
    assert!(
        sent < 2_000_000,
        "dipcd must stop reading a client whose replies wait unread:\n{out}"
    );
    let grown = dipcd_rss_kib(1).saturating_sub(before);
    eprintln!("pipeline: {sent} requests taken, dipcd grew {grown} KiB");
    // The bound: 64 KiB of replies before reading pauses, the read
    // buffer's 64 KiB, and the allocator's slack.
    assert!(
        grown < 4 * 1024,
        "dipcd grew {grown} KiB for one pipelining client (sent {sent})"
    );
    others_are_served(&c);

    // Half frames: each costs at most the bytes it sent.
    let before = dipcd_rss_kib(1);
    let mut half = c.spawn(
        1,
        &as_nobody(&[
            "dipc-attack",
            "half-frames",
            "--count",
            "200",
            "--hold-ms",
            "8000",
        ]),
    );
    half.wait_for_stdout("half-frames: ", Duration::from_secs(30));
    assert!(
        half.stdout().contains("half-frames: 200 sent"),
        "{}",
        half.stdout()
    );
    // dipcd reads them as it gets to them.
    std::thread::sleep(Duration::from_millis(500));
    let grown = dipcd_rss_kib(1).saturating_sub(before);
    eprintln!("half-frames: 200 connections with 30 KiB each, dipcd grew {grown} KiB");
    assert!(
        grown < 200 * 64 + 4 * 1024,
        "dipcd grew {grown} KiB for 200 half frames of 30 KiB"
    );
    others_are_served(&c);
    // A request begun and not finished within request_ms (5 s here) is
    // closed; the attack held them 8 s.
    half.wait_for_stdout("closed by the peer", Duration::from_secs(60));
    assert!(
        half.stdout()
            .contains("half-frames: 200 closed by the peer"),
        "dipcd must close requests left half sent:\n{}",
        half.stdout()
    );
    assert!(
        c.log(1)
            .contains("a request begun 5000 ms ago is not finished; closed"),
        "dipcd must log the stalled clients"
    );
}

/// A key table longer than a frame reaches `dipcref` whole, a page at a
/// time, on the arbiter and through another host's link, and the link
/// stays up (a reply over `max_frame` used to fail `dipcref` and drop the
/// host it was relayed to).
#[test]
fn a_key_table_longer_than_a_frame_is_listed_whole() {
    // 4096-byte frames: 300 keys are some 10 kB of list.
    let c = Cluster::up_with(2, &["--max-frame", "4096"]);
    let script =
        "for k in $(seq 4096 4395); do dipc-msg get --create $k >/dev/null || exit 1; done";
    c.exec_ok(2, &["sh", "-c", script]);
    for host in [1, 2] {
        let out = c.exec_ok(host, &["dipcref", "keys", "--json"]);
        let listed = out.matches("\"kind\":\"msg\"").count();
        assert_eq!(
            listed, 300,
            "dipcref keys on host {host} must list all 300 keys:\n{out}"
        );
        for k in 4096..4396 {
            assert!(
                out.contains(&format!("\"key\":\"{k:#x}\"")),
                "key {k:#x} missing on host {host}:\n{out}"
            );
        }
    }
    let hosts = c.dipcref_hosts(2);
    assert!(
        hosts.iter().all(|h| h.is_up()),
        "listing must not break a host's link: {hosts:?}"
    );
}

/// Placeholders are charged to the uid whose get made them: one user
/// cannot fill this host's `msgmni` with them (each is a real queue), the
/// get over `limits.placeholders_per_uid` (1024) gets `EAGAIN`, and other
/// users' gets still make theirs.
#[test]
fn a_user_cannot_make_more_than_its_placeholders() {
    let c = Cluster::up(2);
    // 1030 queues on host 1 that everyone may use.
    let make = "for k in $(seq 20000 21029); do dipc-msg get --create --mode 0666 $k >/dev/null || exit 1; done";
    c.exec_ok(1, &["sh", "-c", make]);
    // nobody gets them all from host 2: each needs a placeholder there.
    let get = "n=0; for k in $(seq 20000 21029); do \
               if dipc-msg get $k >/dev/null; then n=$((n+1)); fi; \
               done; echo got $n";
    let out = c.exec(2, &as_nobody(&["sh", "-c", get]));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("got 1024"),
        "nobody must get exactly 1024 placeholders on host 2:\n{text}"
    );
    assert!(
        text.contains("EAGAIN") || text.contains("Resource temporarily unavailable"),
        "the gets over the limit must fail with EAGAIN:\n{text}"
    );
    // Another user's get still makes its placeholder, and one nobody
    // already has serves it too.
    c.exec_ok(2, &as_uid(OTHER_UID, &["dipc-msg", "get", "21029"]));
    c.exec_ok(2, &as_uid(OTHER_UID, &["dipc-msg", "get", "20000"]));
    let log = c.log(2);
    assert!(
        log.contains("uid 65534 made 1024 placeholders on this host (limits.placeholders_per_uid"),
        "host 2's dipcd must log the refusal:\n{log}"
    );
}

/// Processes named `dipc-worker` (a worker names itself so).
fn workers() -> usize {
    fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok())
        .filter(|e| {
            fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "dipc-worker")
        })
        .count()
}

/// One user cannot open more than `limits.sessions_per_uid` (256)
/// sessions on a host: the one over gets `EAGAIN` naming the limit, and
/// other users, from the same host and from others, still open theirs.
#[test]
fn a_user_over_its_session_limit_gets_eagain_and_others_are_served() {
    let c = Cluster::up(3);
    let target = front_end(2);
    let mut attack = c.spawn(
        3,
        &as_nobody(&[
            "dipc-attack",
            "sessions",
            &target,
            "--count",
            "300",
            "--hold-ms",
            "30000",
        ]),
    );
    attack.wait_for_stdout("sessions: ", Duration::from_secs(120));
    let out = attack.stdout();
    assert!(
        out.contains("sessions: 256 opened, 44 refused"),
        "nobody must get exactly limits.sessions_per_uid (256) sessions on host 2:\n{out}"
    );
    assert!(
        out.contains("error EAGAIN: uid 65534 holds 256 sessions here (limits.sessions_per_uid"),
        "the session over the limit must get EAGAIN naming it:\n{out}"
    );
    // Another user of the attacker's host, and root of another host.
    let other = as_uid(OTHER_UID, &["dipc-attack", "connect", &target]);
    for (host, args) in [(3, other), (1, vec!["dipc-attack", "connect", &target])] {
        let out = c.exec_ok(host, &args);
        assert!(
            out.contains("session: pong"),
            "{args:?} on host {host} must still open a session:\n{out}"
        );
    }
    assert!(attack.running(), "the attack must still hold its sessions");
    let log = c.log(2);
    assert!(
        log.contains("uid 65534 holds 256 sessions here"),
        "host 2 must log the refusal:\n{log}"
    );
}

/// Connections that never finish their handshake cost no worker process,
/// leave room for real sessions, and are closed after `request_ms`.
#[test]
fn connections_that_never_authenticate_cost_no_worker() {
    let c = Cluster::up(3);
    let target = front_end(2);
    let before = workers();
    let mut stall = c.spawn(
        3,
        &as_nobody(&[
            "dipc-attack",
            "stall",
            &target,
            "--count",
            "200",
            "--hold-ms",
            "8000",
        ]),
    );
    stall.wait_for_stdout("stall: 200 sent", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    let during = workers();
    assert!(
        during <= before,
        "200 unauthenticated connections made {} workers",
        during - before
    );
    // A real session opens meanwhile, and has its worker (which also
    // shows that workers() sees workers).
    let mut real = c.spawn(
        3,
        &as_uid(
            OTHER_UID,
            &[
                "dipc-attack",
                "sessions",
                &target,
                "--count",
                "1",
                "--hold-ms",
                "3000",
            ],
        ),
    );
    real.wait_for_stdout("sessions: 1 opened, 0 refused", Duration::from_secs(30));
    assert_eq!(workers(), during + 1, "the real session's worker");
    // request_ms is 5 s on the simulated hosts.
    stall.wait_for_stdout("closed by the peer", Duration::from_secs(30));
    assert!(
        stall.stdout().contains("stall: 200 closed by the peer"),
        "the front_end must close connections that say nothing:\n{}",
        stall.stdout()
    );
    assert!(
        c.log(2).contains(&format!(
            "refused connection from {}: no handshake within 5000 ms",
            host_addr(3)
        )),
        "host 2 must log the silent connections:\n{}",
        c.log(2)
    );
}

/// dipcd starts a segment's manager (a root process) only for a
/// distributed segment the asker may attach: not for a private segment
/// of its own, not for one it may not read.
#[test]
fn no_shm_manager_for_a_segment_the_asker_may_not_use() {
    let c = Cluster::up(1);
    let out = c.exec_ok(1, &as_nobody(&["dipc-attack", "shm-open", "--private"]));
    assert!(
        out.contains("shm-open: error EINVAL: ") && out.contains("is private (IPC_PRIVATE)"),
        "a private segment must get no manager:\n{out}"
    );
    let made = c.exec_ok(
        1,
        &[
            "dipc-attack",
            "shm-open",
            "--key",
            "0x5a5b",
            "--mode",
            "600",
        ],
    );
    let sid = made
        .lines()
        .find_map(|l| l.strip_prefix("segment "))
        .unwrap_or_else(|| panic!("no segment id in {made:?}"))
        .trim()
        .to_owned();
    let out = c.exec_ok(1, &as_nobody(&["dipc-attack", "shm-open", "--id", &sid]));
    assert!(
        out.contains("shm-open: error EACCES: uid 65534 may not attach segment"),
        "root's 0600 segment must get no manager for nobody:\n{out}"
    );
    // Root, who may, gets it.
    let out = c.exec_ok(1, &["dipc-attack", "shm-open", "--id", &sid]);
    assert!(out.contains("shm-open: done 0"), "{out}");
}

/// The child of `parent` whose name is `comm`.
fn child_named(parent: &str, comm: &str) -> Option<String> {
    fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok())
        .find_map(|e| {
            let stat = fs::read_to_string(e.path().join("stat")).ok()?;
            // pid (comm) state ppid ...
            let (head, rest) = stat.rsplit_once(") ")?;
            let name = head.split_once(" (")?.1;
            let ppid = rest.split(' ').nth(1)?;
            (name == comm && ppid == parent).then(|| e.file_name().to_string_lossy().into_owned())
        })
}

/// Resumes a stopped process however the test ends.
struct Resume(String);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0])
            .status();
    }
}

/// One user cannot have more than `limits.employers_per_uid` (64)
/// sessions being opened at once: against a host that does not answer,
/// each would keep an employer process for the connect and request
/// time-outs. The ones past it get `EAGAIN` at once; other users still
/// open sessions meanwhile.
#[test]
fn a_user_cannot_have_more_than_its_employers_at_once() {
    let c = Cluster::up(3);
    let dipcd2 = dipcd_pid(2);
    let fe = child_named(dipcd2.trim(), "dipc-front-end").expect("host 2's front_end");
    // Host 2 stays up (its dipcd's link beats) but its front_end answers
    // nothing: every session to it waits.
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &fe])
        .status()
        .expect("kill -STOP");
    assert!(stopped.success());
    let _resume = Resume(fe);
    let target = front_end(2);
    let mut attack = c.spawn(
        3,
        &as_nobody(&[
            "dipc-attack",
            "sessions",
            &target,
            "--count",
            "100",
            "--parallel",
        ]),
    );
    std::thread::sleep(Duration::from_millis(1500));
    let out = c.exec_ok(
        3,
        &as_uid(OTHER_UID, &["dipc-attack", "connect", &front_end(1)]),
    );
    assert!(
        out.contains("session: pong"),
        "another user must still open a session:\n{out}"
    );
    attack.wait_for_stdout("sessions: ", Duration::from_secs(60));
    assert!(
        attack.wait_timeout(Duration::from_secs(30)).is_some(),
        "the attack must end"
    );
    let out = attack.stdout();
    assert!(
        out.contains("sessions: 0 opened")
            && out.contains(
                "refused EAGAIN: 36: uid 65534 has 64 sessions being opened (limits.employers_per_uid"
            ),
        "64 employers at once for nobody, EAGAIN for the other 36:\n{out}"
    );
}

/// Kernel queues on host `i` (placeholders among them), from `ipcs -q`.
fn queues_on(c: &Cluster, i: usize) -> usize {
    c.exec_ok(i, &["ipcs", "-q"])
        .lines()
        .filter(|l| l.starts_with("0x"))
        .count()
}

/// A get of a structure the caller may not use leaves no placeholder on
/// the caller's host: dipcd makes one only once the owner's worker has
/// vouched for the caller (the owner's kernel let it get the key), and
/// never against a proof the caller made up. Before, the placeholder was
/// made as soon as the referee named the owner, so any user could fill a
/// host's `msgmni` with placeholders of structures they may not touch.
#[test]
fn no_placeholder_for_a_user_who_may_not_use_the_structure() {
    let c = Cluster::up(2);
    create_queue(&c, 1, "0x7c7c", "0600");
    let before = queues_on(&c, 2);
    c.exec_err(
        2,
        &as_nobody(&["dipc-msg", "get", "0x7c7c", "--mode", "0600"]),
        &["EACCES"],
    );
    assert_eq!(
        queues_on(&c, 2),
        before,
        "a refused get made a placeholder on host 2"
    );
    let out = attack(&c, 2, &["forged-placeholder", "msg", "0x7c7c"]);
    assert_has(&out, "the look-up makes no placeholder", "local -1");
    assert_has(&out, "a forged proof", "placeholder: error EPERM");
    assert_eq!(
        queues_on(&c, 2),
        before,
        "a forged proof made a placeholder on host 2"
    );
    // Whoever may use the queue gets a placeholder, and one only.
    c.exec_ok(2, &["dipc-msg", "get", "0x7c7c"]);
    c.exec_ok(2, &["dipc-msg", "get", "0x7c7c"]);
    assert_eq!(queues_on(&c, 2), before + 1);
    assert!(
        c.log(2).contains("not vouched for by"),
        "host 2's dipcd must log the refused proof:\n{}",
        c.log(2)
    );
}

/// A message of another user from host `from` to host `to` through host
/// 2's queue 0x6a6a.
fn round_trip(c: &Cluster, from: usize, to: usize, text: &str) {
    c.exec_ok(
        from,
        &as_uid(OTHER_UID, &["dipc-msg", "send", "0x6a6a", "7", text]),
    );
    let got = c.exec_ok(
        to,
        &as_uid(OTHER_UID, &["dipc-msg", "recv", "0x6a6a", "--nowait"]),
    );
    assert_eq!(got.trim(), format!("7 {text}"), "another user's message");
}

/// Garbage from a hostile or broken peer, sent to every live daemon:
/// host 2's dipcd, a worker on host 2 (on sessions opened the legitimate
/// way, so the garbage is sealed and gets past the channel), host 2's
/// front_end before any handshake, the referee (from a host of its own)
/// and a shm manager. Each daemon lives on (the same process), its
/// memory stays within 8 MiB of where it was, and another user's calls
/// between hosts are served while the garbage flows and after. The seeds
/// are fixed, so that a failure replays.
#[test]
fn daemons_survive_garbage_and_keep_serving() {
    const BOUND_KIB: u64 = 8 * 1024;
    let c = Cluster::up(2);
    c.exec_ok(
        2,
        &["dipc-msg", "get", "--create", "--mode", "0666", "0x6a6a"],
    );
    // A segment of host 2 that host 1 holds attached: its manager runs.
    let touch = c_example("shm_touch").to_string_lossy().into_owned();
    c.exec_ok(2, &[&touch, "0x6a6b", "65536", "-", "stat"]);
    let mut holder = c.spawn(1, &[&touch, "0x6a6b", "65536", "0", "hold", "5"]);
    holder.wait_for_stdout("held", Duration::from_secs(20));
    let sid = c
        .exec_ok(2, &["ipcs", "-m"])
        .lines()
        .find(|l| l.starts_with("0x00006a6b"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_else(|| panic!("segment 0x6a6b not in host 2's ipcs -m"));
    let (d1, d2) = (dipcd_pid(1), dipcd_pid(2));
    let daemons = [
        ("host 2's dipcd", d2.clone()),
        (
            "host 2's front_end",
            child_named(&d2, "dipc-front-end").expect("host 2's front_end"),
        ),
        (
            "the referee",
            child_named(&d1, "dipc-referee").expect("the referee"),
        ),
    ];
    let before: Vec<u64> = daemons.iter().map(|(_, p)| rss_kib(p)).collect();
    let fe2 = front_end(2);
    let attacks: [(usize, bool, Vec<&str>); 5] = [
        (2, false, vec!["dipcd", "--frames", "3000", "--seed", "1"]),
        (
            1,
            false,
            vec!["worker", "--target", &fe2, "--frames", "400", "--seed", "2"],
        ),
        (
            1,
            false,
            vec![
                "front-end",
                "--target",
                &fe2,
                "--frames",
                "3000",
                "--seed",
                "3",
            ],
        ),
        (2, true, vec!["referee", "--frames", "3000", "--seed", "4"]),
        (
            2,
            true,
            vec!["shm", "--id", &sid, "--frames", "2000", "--seed", "5"],
        ),
    ];
    for (host, root, args) in attacks {
        let mut cmd = vec!["dipc-attack", "garbage"];
        cmd.extend_from_slice(&args);
        let cmd = if root { cmd } else { as_nobody(&cmd) };
        let mut a = c.spawn(host, &cmd);
        // Served while the garbage flows...
        round_trip(&c, 1, 2, "during");
        let st = a.wait(Duration::from_secs(120));
        assert!(st.success(), "{}", a.describe());
        let out = a.stdout();
        assert_has(&out, "the attack's report", "garbage: ");
        eprintln!(
            "dipc-attack garbage {} on host {host}:\n{out}",
            args.join(" ")
        );
        // ... and after.
        round_trip(&c, 2, 1, "after");
        others_are_served(&c);
        for (name, pid) in &daemons {
            assert!(
                std::path::Path::new(&format!("/proc/{pid}")).exists(),
                "{name} (pid {pid}) died of garbage {}",
                args.join(" ")
            );
        }
    }
    for ((name, pid), was) in daemons.iter().zip(before) {
        let now = rss_kib(pid);
        eprintln!("{name}: {was} KiB before the garbage, {now} KiB after");
        assert!(
            now <= was + BOUND_KIB,
            "{name} grew from {was} KiB to {now} KiB"
        );
    }
    assert!(
        holder.running(),
        "the segment's holder: {}",
        holder.describe()
    );
    holder.kill();
}

/// A host that asks the referee for the key table over and over and reads
/// no reply (a slow or stuck host) costs the referee bounded memory: the
/// referee stops reading the host once its replies wait unread (and drops
/// it if they pile up), and the cluster's hosts are served meanwhile.
#[test]
fn a_host_that_reads_no_replies_costs_the_referee_bounded_memory() {
    let c = Cluster::up(2);
    // 300 keys: each page of the key table is some 11 KB.
    let make =
        "for k in $(seq 30000 30299); do dipc-msg get --create $k >/dev/null || exit 1; done";
    c.exec_ok(1, &["sh", "-c", make]);
    let referee = child_named(&dipcd_pid(1), "dipc-referee").expect("the referee");
    let before = rss_kib(&referee);
    let mut attack = c.spawn(
        2,
        &[
            "dipc-attack",
            "pipeline",
            "--requests",
            "2000000",
            "--referee-port",
            "7191",
            "--hold-ms",
            "20000",
        ],
    );
    attack.wait_for_stdout("pipeline: ", Duration::from_secs(90));
    let out = attack.stdout();
    let sent = pipelined(&out);
    assert!(
        sent < 2_000_000,
        "the referee must stop reading a host whose replies wait unread:\n{out}"
    );
    let grown = rss_kib(&referee).saturating_sub(before);
    eprintln!("referee pipeline: {sent} requests sent, the referee grew {grown} KiB ({out:?})");
    // The bound: 64 KiB of replies before reading pauses, at most 4
    // records of max_frame (1 MiB) before the host is dropped, the read
    // buffer, and the allocator's slack.
    assert!(
        grown < 8 * 1024,
        "the referee grew {grown} KiB for one host reading no replies (sent {sent})"
    );
    others_are_served(&c);
    c.exec_ok(2, &["dipc-msg", "get", "30000"]);
    c.exec_ok(2, &["dipc-msg", "get", "--create", "30300"]);
    attack.kill();
}
