//! Unmodified System V programs made cluster-wide by `libdipc_preload.so`:
//! a C program that knows nothing of dipc (`preload/tests/sysv_demo.c`,
//! compiled without dipc's header or library) and Debian's
//! `python3-sysv-ipc` (queues, semaphores and segments) run on two
//! simulated hosts with `LD_PRELOAD`, and
//! work together through queues, semaphores and segments whose keys are in
//! the key policy; a key outside it stays a plain structure of each host;
//! `dipcref ipcs` lists the distributed ones with their owner's figures.

mod common;

use common::{bin_dir, describe, repo_root, require_namespaces, run_with_timeout, Cluster};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The keys the tests put in `$DIPC_PRELOAD_KEYS`.
const POLICY: &str = "0x7100-0x71ff,0x7a7a";

fn preload_lib() -> String {
    let lib = bin_dir().join("libdipc_preload.so");
    assert!(
        lib.is_file(),
        "{} does not exist: build the workspace (cargo build --release --workspace) first",
        lib.display()
    );
    lib.to_string_lossy().into_owned()
}

/// `sysv_demo.c` compiled as any program would be: no dipc header, no
/// dipc library (checked: it needs libc only).
fn demo() -> String {
    use std::sync::OnceLock;
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let exe = BUILT.get_or_init(|| {
        let src = repo_root()
            .join("preload")
            .join("tests")
            .join("sysv_demo.c");
        let dir = std::env::temp_dir().join(format!("dipc-preload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let exe = dir.join("sysv_demo");
        let out = run_with_timeout(
            Command::new("gcc")
                .args(["-Wall", "-O2", "-o"])
                .arg(&exe)
                .arg(&src),
            Duration::from_secs(120),
        );
        assert!(
            out.status.success(),
            "gcc {}:\n{}",
            src.display(),
            describe(&out)
        );
        let out = run_with_timeout(
            Command::new("objdump").arg("-p").arg(&exe),
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "objdump:\n{}", describe(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        let needed: Vec<&str> = text.lines().filter(|l| l.contains("NEEDED")).collect();
        assert!(
            !needed.is_empty() && needed.iter().all(|l| !l.contains("dipc")),
            "the plain program should need libc only: {needed:?}"
        );
        exe
    });
    exe.to_string_lossy().into_owned()
}

fn python_script() -> String {
    repo_root()
        .join("preload")
        .join("tests")
        .join("sysv_py.py")
        .to_string_lossy()
        .into_owned()
}

/// `args` run by `env` with `env` (the preload and the tests' policy).
fn preloaded<'a>(env: &'a [String], args: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = vec!["env"];
    v.extend(env.iter().map(String::as_str));
    v.extend_from_slice(args);
    v
}

fn env() -> Vec<String> {
    vec![
        format!("LD_PRELOAD={}", preload_lib()),
        format!("DIPC_PRELOAD_KEYS={POLICY}"),
    ]
}

const LONG: Duration = Duration::from_secs(120);

#[test]
fn c_programs_on_two_hosts_share_queues_semaphores_and_segments() {
    require_namespaces();
    let c = Cluster::up(2);
    let (env, demo) = (env(), demo());

    // Queue ping-pong: the answering side on host 2, the asking on host 1.
    let mut pong = c.spawn(2, &preloaded(&env, &[&demo, "pong", "0x7101", "500"]));
    pong.wait_for_stdout("ready", Duration::from_secs(20));
    let out = c.exec_ok(1, &preloaded(&env, &[&demo, "ping", "0x7101", "200"]));
    assert!(out.contains("pinged 200"), "{out}");
    // fork: the parent and its child ping at once, each on its own sessions.
    let out = c.exec_ok(1, &preloaded(&env, &[&demo, "fork-ping", "0x7101", "50"]));
    assert!(out.contains("pinged 50 from parent and child"), "{out}");
    // Threads, each blocked in its own msgrcv on the remote queue at once.
    let out = c.exec_ok(1, &preloaded(&env, &[&demo, "thread-ping", "0x7101", "25"]));
    assert!(out.contains("pinged 25 from 4 threads"), "{out}");
    // A signal ends a blocked remote call with EINTR, as a local one.
    let out = c.exec(1, &preloaded(&env, &[&demo, "rcv-eintr", "0x7101"]));
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("EINTR"),
        "{}",
        describe(&out)
    );
    // exec: the new program image is preloaded too.
    let out = c.exec_ok(1, &preloaded(&env, &[&demo, "exec-ping", "0x7101", "100"]));
    assert!(out.contains("pinged 100"), "{out}");
    let st = pong.wait(LONG);
    assert!(st.success(), "{}", pong.describe());
    assert!(pong.stdout().contains("answered 500"));
    let keys = c.dipcref_keys(1);
    assert!(
        keys.iter().any(|k| k.kind == "msg" && k.key == "0x7101"),
        "the queue is not distributed: {keys:?}"
    );
    c.exec_ok(2, &preloaded(&env, &[&demo, "rmq", "0x7101"]));

    // A counter in a segment, guarded by a semaphore, incremented from
    // both hosts by two processes each.
    c.exec_ok(1, &preloaded(&env, &[&demo, "counter-init", "0x7110"]));
    let mut runs: Vec<_> = [1, 2, 1, 2]
        .iter()
        .map(|h| {
            c.spawn(
                *h,
                &preloaded(&env, &[&demo, "counter-run", "0x7110", "150"]),
            )
        })
        .collect();
    for r in runs.iter_mut() {
        let st = r.wait(LONG);
        assert!(st.success(), "{}", r.describe());
    }
    let got = c.exec_ok(2, &preloaded(&env, &[&demo, "counter-get", "0x7110"]));
    assert_eq!(got.trim(), "600");
    c.exec_ok(2, &preloaded(&env, &[&demo, "counter-rm", "0x7110"]));

    // Producer on host 1, consumer on host 2, through a ring in a segment
    // of host 2 and two counting semaphores.
    c.exec_ok(2, &preloaded(&env, &[&demo, "pc-init", "0x7120"]));
    let mut producer = c.spawn(1, &preloaded(&env, &[&demo, "produce", "0x7120", "400"]));
    let out = c.exec_ok(2, &preloaded(&env, &[&demo, "consume", "0x7120", "400"]));
    assert_eq!(out.trim(), format!("sum {}", 400 * 401 / 2));
    let st = producer.wait(LONG);
    assert!(st.success(), "{}", producer.describe());
    c.exec_ok(1, &preloaded(&env, &[&demo, "pc-rm", "0x7120"]));
    let left = c.dipcref_keys(1);
    assert!(left.is_empty(), "keys left after removal: {left:?}");
}

#[test]
fn python_sysv_ipc_and_a_c_program_on_another_host() {
    require_namespaces();
    let c = Cluster::up(2);
    let (env, demo, py) = (env(), demo(), python_script());
    // Debian's module, not a pyenv one.
    let python = "/usr/bin/python3";

    let mut pong = c.spawn(2, &preloaded(&env, &[python, &py, "pong", "0x7a7a", "100"]));
    pong.wait_for_stdout("ready", Duration::from_secs(30));
    let out = c.exec_ok(1, &preloaded(&env, &[&demo, "ping", "0x7a7a", "100"]));
    assert!(out.contains("pinged 100"), "{out}");
    let st = pong.wait(LONG);
    assert!(st.success(), "{}", pong.describe());

    let mut pong = c.spawn(1, &preloaded(&env, &[&demo, "pong", "0x7a7a", "100"]));
    pong.wait_for_stdout("ready", Duration::from_secs(20));
    let out = c.exec_ok(2, &preloaded(&env, &[python, &py, "ping", "0x7a7a", "100"]));
    assert!(out.contains("pinged 100"), "{out}");
    let st = pong.wait(LONG);
    assert!(st.success(), "{}", pong.describe());
    c.exec_ok(2, &preloaded(&env, &[&demo, "rmq", "0x7a7a"]));

    // A counter in a segment under a semaphore, owned by host 1, added to
    // by Python on host 2 (its reads and writes of the segment are
    // memcpy's in the module) and by C on both hosts at once.
    c.exec_ok(1, &preloaded(&env, &[&demo, "counter-init", "0x7150"]));
    let mut adders = [
        c.spawn(
            2,
            &preloaded(&env, &[python, &py, "counter-run", "0x7150", "200"]),
        ),
        c.spawn(
            1,
            &preloaded(&env, &[&demo, "counter-run", "0x7150", "200"]),
        ),
    ];
    for a in adders.iter_mut() {
        let st = a.wait(LONG);
        assert!(st.success(), "{}", a.describe());
    }
    let got = c.exec_ok(2, &preloaded(&env, &[&demo, "counter-get", "0x7150"]));
    assert_eq!(got.trim(), "400");
    c.exec_ok(2, &preloaded(&env, &[&demo, "counter-rm", "0x7150"]));
    assert!(c.dipcref_keys(1).is_empty());
}

#[test]
fn a_key_outside_the_policy_stays_local_on_each_host() {
    require_namespaces();
    let c = Cluster::up(2);
    let (env, demo) = (env(), demo());
    // 0x7200 is outside the policy, 0x7102 inside.
    for key in ["0x7200", "0x7102"] {
        c.exec_ok(1, &preloaded(&env, &[&demo, "qsend", key, "one"]));
        c.exec_ok(1, &preloaded(&env, &[&demo, "qsend", key, "two"]));
    }
    let on = |h: usize, key: &str| {
        c.exec_ok(h, &preloaded(&env, &[&demo, "qnum", key]))
            .trim()
            .to_owned()
    };
    assert_eq!(on(1, "0x7200"), "2");
    assert_eq!(
        on(2, "0x7200"),
        "0",
        "a key outside the policy went cluster-wide"
    );
    assert_eq!(on(2, "0x7102"), "2", "a key of the policy stayed local");
    // The local queues are the kernel's own, seen by ipcs on each host.
    let ipcs = |h: usize| c.exec_ok(h, &["ipcs", "-q"]);
    assert!(ipcs(1).contains("0x00007200"), "{}", ipcs(1));
    assert!(ipcs(2).contains("0x00007200"), "{}", ipcs(2));
    let keys = c.dipcref_keys(1);
    assert!(
        keys.iter().all(|k| k.key != "0x7200") && keys.iter().any(|k| k.key == "0x7102"),
        "{keys:?}"
    );
    for h in [1, 2] {
        c.exec_ok(h, &preloaded(&env, &[&demo, "rmq", "0x7200"]));
    }
    c.exec_ok(2, &preloaded(&env, &[&demo, "rmq", "0x7102"]));
    assert!(c.dipcref_keys(1).is_empty());
}

/// No cluster needed: the policy is read before anything is asked of
/// dipcd.
#[test]
fn a_bad_policy_is_refused_with_a_message() {
    let demo = demo();
    let plain = |keys: &str, key: &str| {
        run_with_timeout(
            Command::new(&demo)
                .args(["qsend", key, "x"])
                .env("LD_PRELOAD", preload_lib())
                .env("DIPC_PRELOAD_KEYS", keys),
            Duration::from_secs(30),
        )
    };
    let out = plain("0x10,0x30-0x20", "0x10");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        err.contains("$DIPC_PRELOAD_KEYS: entry 1 (\"0x30-0x20\")") && err.contains("EINVAL"),
        "{err}"
    );
    // IPC_PRIVATE needs no policy.
    let out = plain("zz", "0");
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn dipcref_ipcs_lists_every_distributed_structure_with_its_owners_figures() {
    require_namespaces();
    let c = Cluster::up(2);
    let (env, demo) = (env(), demo());
    // A queue of mode 0600 on host 2: root of host 1 is squashed there
    // and could not IPC_STAT it.
    for text in ["hello", "world!"] {
        c.exec_ok(
            2,
            &preloaded(&env, &[&demo, "qsend-private", "0x7130", text]),
        );
    }
    // A set of 2 semaphores (0x7140) and a segment (0x7141) on host 2,
    // attached once on each host.
    c.exec_ok(2, &preloaded(&env, &[&demo, "pc-init", "0x7140"]));
    let mut holders: Vec<_> = [1, 2]
        .iter()
        .map(|h| c.spawn(*h, &preloaded(&env, &[&demo, "shm-hold", "0x7141"])))
        .collect();
    for h in holders.iter_mut() {
        h.wait_for_stdout("attached", Duration::from_secs(20));
    }
    // A structure outside the policy is not listed.
    c.exec_ok(1, &preloaded(&env, &[&demo, "qsend", "0x7200", "x"]));

    let out = c.exec_ok(1, &["dipcref", "ipcs", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("dipcref ipcs --json printed invalid JSON ({e}): {out}"));
    let owner = common::front_end(2);
    let one = |section: &str| -> serde_json::Value {
        let list = v[section]
            .as_array()
            .unwrap_or_else(|| panic!("no {section:?} array: {out}"));
        assert_eq!(list.len(), 1, "{section}: {out}");
        let row = list[0].clone();
        assert_eq!(row["owner"], owner.as_str(), "{out}");
        assert!(row.get("error").is_none(), "{out}");
        row
    };
    let q = one("queues");
    assert_eq!(
        (
            &q["key"],
            &q["messages"],
            &q["used_bytes"],
            &q["mode"],
            &q["uid"]
        ),
        (
            &"0x7130".into(),
            &2.into(),
            &13.into(),
            &0o600.into(),
            &0.into()
        ),
        "{out}"
    );
    let s = one("semaphores");
    assert_eq!(
        (&s["key"], &s["nsems"]),
        (&"0x7140".into(), &2.into()),
        "{out}"
    );
    let m = one("segments");
    assert_eq!(
        (&m["key"], &m["bytes"], &m["nattch"]),
        (&"0x7141".into(), &64.into(), &2.into()),
        "{out}"
    );
    // The ids are those on the owner host (the queue's, as ipcs shows it
    // there).
    let ipcs2 = c.exec_ok(2, &["ipcs", "-q"]);
    let id = q["id"].as_i64().expect("integer id").to_string();
    assert!(
        ipcs2
            .lines()
            .any(|l| l.starts_with("0x00007130") && l.split_whitespace().nth(1) == Some(&id)),
        "{ipcs2}"
    );

    // The table, one kind.
    let text = c.exec_ok(1, &["dipcref", "ipcs", "-q"]);
    assert!(text.contains("Message Queues"), "{text}");
    assert!(text.contains("0x00007130"), "{text}");
    assert!(
        !text.contains("Semaphore") && !text.contains("0x00007141"),
        "{text}"
    );
    let text = c.exec_ok(1, &["dipcref", "ipcs", "-s", "-m"]);
    assert!(
        text.contains("0x00007140") && text.contains("0x00007141") && !text.contains("0x00007130"),
        "{text}"
    );

    for h in holders.iter_mut() {
        h.kill();
    }
    c.exec_ok(1, &preloaded(&env, &[&demo, "rmq", "0x7130"]));
    c.exec_ok(1, &preloaded(&env, &[&demo, "pc-rm", "0x7140"]));
}
