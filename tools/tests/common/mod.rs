//! Helpers shared by the integration tests that run a real dipc cluster on
//! this machine (see "One machine can play a whole cluster" in DESIGN.md).
//!
//! A [`Cluster`] drives `tools/cluster`: every simulated host has its own
//! network namespace (address 10.66.0.I) and IPC namespace, and runs a real
//! `dipcd`. The guard holds an exclusive `flock` on `/run/dipc-cluster.lock`
//! for its whole life, so tests in different threads or processes never share
//! or tear down each other's cluster; it runs `tools/cluster down` on drop.
//!
//! Tests that need namespaces fail loudly (panic) where they are missing:
//! they never pass by skipping.
//!
//! Binaries come from `$DIPC_BIN_DIR`, else from the directory cargo built
//! this test's `dipcref` into (`target/release` under `cargo test --release`),
//! so `dipcd` must have been built with the same profile (`cargo test
//! --workspace` and `tools/test` do that).
#![allow(dead_code)]

pub mod blocked;
pub mod hold;

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// The simulated hosts' network: host I has address `10.66.0.I`.
pub const SUBNET: &str = "10.66.0";
/// Port of every host's dipcd (front end).
pub const HOST_PORT: u16 = 7100;
/// Port of the referee, on host 1.
pub const REFEREE_PORT: u16 = 7101;
/// Heartbeat timeout written into the generated configs.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(1500);
/// The lock that serialises every user of the namespaces.
pub const LOCK_FILE: &str = "/run/dipc-cluster.lock";

/// Time limit for a `tools/cluster` command (`up` itself waits at most 30 s).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);
/// Time limit for a command run on a host with [`Cluster::exec`].
const EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// Address of simulated host `i`.
pub fn host_addr(i: usize) -> String {
    format!("{SUBNET}.{i}")
}

/// `setpriv` arguments that run the rest of a command as nobody.
pub const NOBODY: [&str; 6] = [
    "setpriv",
    "--reuid",
    "65534",
    "--regid",
    "65534",
    "--clear-groups",
];

/// `args` run as nobody (see [`NOBODY`]).
pub fn as_nobody<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut v = NOBODY.to_vec();
    v.extend_from_slice(args);
    v
}

/// `args` run as `uid` (its gid the same number, no supplementary groups).
pub fn as_uid<'a>(uid: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "setpriv",
        "--reuid",
        uid,
        "--regid",
        uid,
        "--clear-groups",
        "--",
    ];
    v.extend_from_slice(args);
    v
}

/// Runs `dipc-attack ARGS` on `host` (as nobody unless `root`); panics
/// unless it reports the attack withstood (exit 0) and, for nobody, that it
/// ran unprivileged. Returns its stdout.
pub fn attack_on(c: &Cluster, host: usize, root: bool, args: &[&str]) -> String {
    let mut cmd = vec!["dipc-attack"];
    cmd.extend_from_slice(args);
    let cmd = if root { cmd } else { as_nobody(&cmd) };
    let out = c.exec(host, &cmd);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let want_uid = if root { "uid 0" } else { "uid 65534" };
    assert!(
        stdout.lines().next() == Some(want_uid),
        "dipc-attack {} must run as {want_uid}:\n{}",
        args.join(" "),
        describe(&out)
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "dipc-attack {} reports the attack worked (3) or was not tried (1):\n{}",
        args.join(" "),
        describe(&out)
    );
    eprintln!("dipc-attack {} on host {host}:\n{stdout}", args.join(" "));
    stdout
}

pub fn attack(c: &Cluster, host: usize, args: &[&str]) -> String {
    attack_on(c, host, false, args)
}

pub fn assert_has(out: &str, what: &str, needle: &str) {
    assert!(
        out.contains(needle),
        "{what}: expected {needle:?} in:\n{out}"
    );
}

/// Creates a distributed queue on `host` (mode `mode`), returns its id there.
pub fn create_queue(c: &Cluster, host: usize, key: &str, mode: &str) -> i32 {
    let out = c.exec_ok(host, &["dipc-msg", "get", key, "--create", "--mode", mode]);
    out.trim()
        .parse()
        .unwrap_or_else(|e| panic!("dipc-msg get printed {out:?}: {e}"))
}

/// The processes running `exe` (by the exact path of their executable).
pub fn running(exe: &Path) -> Vec<i32> {
    let mut v = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if fs::read_link(e.path().join("exe")).is_ok_and(|p| p == exe) {
            v.push(pid);
        }
    }
    v
}

/// Host `i`'s front_end address, as `IP:PORT`.
pub fn front_end(i: usize) -> String {
    format!("{}:{HOST_PORT}", host_addr(i))
}

/// The workspace root (the parent of this package's manifest directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("CARGO_MANIFEST_DIR has a parent")
        .to_path_buf()
}

/// `tools/cluster`.
pub fn cluster_script() -> PathBuf {
    repo_root().join("tools").join("cluster")
}

/// The cluster's state directory (`$DIPC_CLUSTER_DIR`, default `/run/dipc-cluster`).
pub fn state_dir() -> PathBuf {
    std::env::var_os("DIPC_CLUSTER_DIR")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/dipc-cluster"))
}

/// Where `dipcd` and `dipcref` are taken from.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DIPC_BIN_DIR").filter(|s| !s.is_empty()) {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_BIN_EXE_dipcref"))
        .parent()
        .expect("dipcref has a parent directory")
        .to_path_buf()
}

/// Panics (never skips) unless this machine can run simulated hosts: root,
/// `ip netns`, `nsenter`, `unshare`, and the binaries under test.
pub fn require_namespaces() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "these tests run real dipc daemons in network and IPC namespaces and must run as \
         root (euid is {euid}); run them with tools/test as root. They never skip."
    );
    let ip = Command::new("ip").args(["netns", "list"]).output();
    match ip {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "`ip netns list` failed ({}): {}; network namespaces are required \
             (install iproute2, run as root). These tests never skip.",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!(
            "cannot run `ip` ({e}): install iproute2; network namespaces are required. \
             These tests never skip."
        ),
    }
    for tool in ["nsenter", "unshare", "setsid", "ipcs"] {
        match Command::new(tool).arg("--version").output() {
            Ok(o) if o.status.success() => {}
            _ => {
                panic!("`{tool}` is missing or broken: install util-linux. These tests never skip.")
            }
        }
    }
    let script = cluster_script();
    let mode = fs::metadata(&script)
        .unwrap_or_else(|e| panic!("{}: {e}", script.display()))
        .permissions()
        .mode();
    assert!(mode & 0o111 != 0, "{} is not executable", script.display());
    let bin = bin_dir();
    for b in ["dipcd", "dipcref"] {
        let p = bin.join(b);
        assert!(
            p.is_file(),
            "{} does not exist: build the daemons with the same profile as the tests \
             (e.g. `cargo build --release --workspace --bins` before `cargo test --release`, \
             or just run tools/test), or point DIPC_BIN_DIR at them",
            p.display()
        );
    }
    if std::env::var_os("DIPC_BIN_DIR").is_none() {
        warn_if_dipcd_stale(&bin.join("dipcd"));
    }
}

/// Warns (on stderr, shown when a test fails) when a source file of dipcd is
/// newer than the binary: the test would then run an old daemon.
fn warn_if_dipcd_stale(dipcd: &Path) {
    let Ok(built) = fs::metadata(dipcd).and_then(|m| m.modified()) else {
        return;
    };
    let root = repo_root();
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    for krate in [
        "back_end",
        "common",
        "front_end",
        "referee",
        "employer",
        "worker",
    ] {
        let dir = root.join(krate);
        visit_sources(&dir, &mut |p, t| {
            let newer = match &newest {
                Some((n, _)) => t > *n,
                None => true,
            };
            if newer {
                newest = Some((t, p.to_path_buf()));
            }
        });
    }
    if let Some((t, p)) = newest {
        if t > built {
            eprintln!(
                "WARNING: {} is newer than {}: the tests run a stale dipcd \
                 (rebuild with the same profile, or use tools/test)",
                p.display(),
                dipcd.display()
            );
        }
    }
}

fn visit_sources(dir: &Path, f: &mut dyn FnMut(&Path, SystemTime)) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(m) = e.metadata() else { continue };
        if m.is_dir() {
            if p.file_name() != Some(OsStr::new("target")) {
                visit_sources(&p, f);
            }
        } else if p.extension() == Some(OsStr::new("rs"))
            || p.file_name() == Some(OsStr::new("Cargo.toml"))
        {
            if let Ok(t) = m.modified() {
                f(&p, t);
            }
        }
    }
}

/// Runs `cmd` (stdin from /dev/null, output captured) and waits at most
/// `timeout`; on time-out kills its process group and panics.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    try_run_with_timeout(cmd, timeout).unwrap_or_else(|e| panic!("{e}"))
}

/// As [`run_with_timeout`], but returns an error instead of panicking.
pub fn try_run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    let desc = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {desc}: {e}"))?;
    let out_rx = drain(child.stdout.take().expect("piped stdout"));
    let err_rx = drain(child.stderr.take().expect("piped stderr"));
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break Some(st);
        }
        if start.elapsed() > timeout {
            kill_group(&mut child);
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    // A daemon that inherited the pipes would keep them open: bound the wait.
    let grace = Duration::from_secs(5);
    let stdout = out_rx.recv_timeout(grace).unwrap_or_default();
    let stderr = err_rx.recv_timeout(grace).unwrap_or_default();
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => Err(format!(
            "{desc} did not finish within {timeout:?}; killed.\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        )),
    }
}

fn drain<R: Read + Send + 'static>(mut r: R) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// SIGKILLs the process group led by `child` (spawned with `process_group(0)`)
/// and reaps the child.
pub fn kill_group(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: plain kill(2) on a process group we created.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Polls `f` every 100 ms until it returns true or `timeout` passes; returns
/// the time it took, or `None` on time-out.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if f() {
            return Some(start.elapsed());
        }
        if start.elapsed() > timeout {
            return None;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Formats a command's result for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// One row of `dipcref hosts --json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRow {
    pub address: String,
    pub port: u16,
    pub state: String,
    pub last_heard_ms: u64,
    pub version: u64,
}

impl HostRow {
    pub fn is_up(&self) -> bool {
        self.state == "up"
    }
}

/// Parses the output of `dipcref hosts --json`.
pub fn parse_hosts_json(text: &str) -> Result<Vec<HostRow>, String> {
    let v: serde_json::Value = serde_json::from_str(text.trim())
        .map_err(|e| format!("`dipcref hosts --json` printed invalid JSON ({e}): {text:?}"))?;
    let hosts = v
        .get("hosts")
        .and_then(|h| h.as_array())
        .ok_or_else(|| format!("no \"hosts\" array in {text:?}"))?;
    hosts
        .iter()
        .map(|h| {
            let s = |k: &str| {
                h.get(k)
                    .and_then(|x| x.as_str())
                    .map(str::to_owned)
                    .ok_or_else(|| format!("host entry without string {k:?}: {h}"))
            };
            let n = |k: &str| {
                h.get(k)
                    .and_then(|x| x.as_u64())
                    .ok_or_else(|| format!("host entry without unsigned {k:?}: {h}"))
            };
            let state = s("state")?;
            if state != "up" && state != "down" {
                return Err(format!("host state must be \"up\" or \"down\": {h}"));
            }
            Ok(HostRow {
                address: s("address")?,
                port: u16::try_from(n("port")?).map_err(|_| format!("bad port in {h}"))?,
                state,
                last_heard_ms: n("last_heard_ms")?,
                version: n("version")?,
            })
        })
        .collect()
}

/// 32 random bytes, hex-encoded: the cluster secret format.
pub fn random_secret_hex() -> String {
    let mut b = [0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("read /dev/urandom");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Writes a secret file (one hex line, mode 0600).
pub fn write_secret_file(path: &Path, hex: &str) {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    writeln!(f, "{hex}").expect("write secret");
}

/// The settings of one dipcd's `dipc.conf`, with the cluster's defaults.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub runtime_dir: PathBuf,
    pub secret_file: PathBuf,
    pub address: String,
    pub port: u16,
    pub arbiter: bool,
    pub shm_mode: String,
    /// `cluster.root_squash`; false, as `tools/cluster` writes by default.
    pub root_squash: bool,
}

impl DaemonConfig {
    /// A non-arbiter host at `address:port`, using the cluster's secret and a
    /// runtime dir under `dir`.
    pub fn extra(dir: &Path, address: &str, port: u16) -> DaemonConfig {
        DaemonConfig {
            runtime_dir: dir.join("run"),
            secret_file: state_dir().join("secret"),
            address: address.to_owned(),
            port,
            arbiter: false,
            shm_mode: "page".to_owned(),
            root_squash: false,
        }
    }

    /// The file's text, in the same format `tools/cluster` writes.
    pub fn to_toml(&self) -> String {
        format!(
            r#"runtime_dir = "{runtime_dir}"
secret_file = "{secret_file}"
max_frame = 1048576

[host]
address = "{address}"
port = {port}
arbiter = {arbiter}

[referee]
address = "{subnet}.1"
port = {referee_port}

[timeouts]
connect_ms = 1000
request_ms = 5000
heartbeat_interval_ms = 250
heartbeat_timeout_ms = 1500

[cluster]
allowed_hosts = ["{subnet}.0/25"]
root_squash = {root_squash}

[shm]
mode = "{shm_mode}"
quantum_ms = 10
"#,
            runtime_dir = self.runtime_dir.display(),
            secret_file = self.secret_file.display(),
            address = self.address,
            port = self.port,
            arbiter = self.arbiter,
            subnet = SUBNET,
            referee_port = REFEREE_PORT,
            shm_mode = self.shm_mode,
            root_squash = self.root_squash,
        )
    }

    pub fn write(&self, path: &Path) {
        fs::write(path, self.to_toml()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

/// A dipcd started by a test in some host's namespaces besides the cluster's
/// own (e.g. an intruder). Killed (whole process group) on drop.
pub struct ExtraDaemon {
    child: Option<Child>,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl ExtraDaemon {
    /// Returns the exit status if it exits within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.status.is_some() {
            return self.status;
        }
        let child = self.child.as_mut()?;
        let start = Instant::now();
        loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                self.status = Some(st);
                return Some(st);
            }
            if start.elapsed() > timeout {
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.wait_exit(Duration::ZERO).is_none() && self.child.is_some()
    }

    /// SIGTERMs its process group (dipcd stops cleanly on it).
    pub fn terminate(&mut self) {
        if let Some(c) = &self.child {
            // SAFETY: kill takes plain integers; the group is ours.
            unsafe { libc::kill(-(c.id() as i32), libc::SIGTERM) };
        }
    }

    /// SIGKILLs it and everything in its process group.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            if self.status.is_none() {
                kill_group(&mut c);
            }
        }
    }

    /// Its stdout and stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ExtraDaemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running simulated cluster; see the module docs.
pub struct Cluster {
    n: usize,
    _lock: File,
}

impl Cluster {
    /// Takes the cluster lock, clears any left-over cluster and starts `n` hosts.
    pub fn up(n: usize) -> Cluster {
        Self::up_with(n, &[])
    }

    /// As [`Cluster::up`], with extra `tools/cluster up` arguments
    /// (e.g. `["--shm-mode", "segment"]`).
    pub fn up_with(n: usize, args: &[&str]) -> Cluster {
        require_namespaces();
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(LOCK_FILE)
            .unwrap_or_else(|e| panic!("cannot open {LOCK_FILE}: {e}"));
        loop {
            // SAFETY: flock on a file descriptor we own.
            let r = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
            if r == 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            assert!(
                e.kind() == std::io::ErrorKind::Interrupted,
                "flock {LOCK_FILE}: {e}"
            );
        }
        // From here on Drop runs `down`, even if `up` panics.
        let cluster = Cluster { n, _lock: lock };
        let out = cluster.script(&["down"]);
        assert!(
            out.status.success(),
            "tools/cluster down failed:\n{}",
            describe(&out)
        );
        let n_arg = n.to_string();
        let mut up_args = vec!["up", n_arg.as_str()];
        up_args.extend_from_slice(args);
        let out = cluster.script(&up_args);
        assert!(
            out.status.success(),
            "tools/cluster {} failed:\n{}",
            up_args.join(" "),
            describe(&out)
        );
        cluster
    }

    /// Number of hosts.
    pub fn size(&self) -> usize {
        self.n
    }

    /// A `tools/cluster` command with this test's binary directory.
    pub fn script_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(cluster_script());
        c.args(args).env("DIPC_BIN_DIR", bin_dir());
        c
    }

    /// Runs `tools/cluster ARGS` (time-limited).
    pub fn script(&self, args: &[&str]) -> Output {
        run_with_timeout(&mut self.script_command(args), SCRIPT_TIMEOUT)
    }

    /// A command that runs `args` on host `host` (not started).
    pub fn exec_command(&self, host: usize, args: &[&str]) -> Command {
        let h = host.to_string();
        let mut all = vec!["exec", h.as_str(), "--"];
        all.extend_from_slice(args);
        self.script_command(&all)
    }

    /// Runs `args` on host `host` and returns its output (time-limited).
    pub fn exec(&self, host: usize, args: &[&str]) -> Output {
        run_with_timeout(&mut self.exec_command(host, args), EXEC_TIMEOUT)
    }

    /// Runs `args` on host `host`, panics unless it succeeds, returns stdout.
    pub fn exec_ok(&self, host: usize, args: &[&str]) -> String {
        let out = self.exec(host, args);
        assert!(
            out.status.success(),
            "on host {host}: {} failed:\n{}",
            args.join(" "),
            describe(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `dipcref hosts --json` on host `host`, or why it failed.
    pub fn try_dipcref_hosts(&self, host: usize) -> Result<Vec<HostRow>, String> {
        let out = self.exec(host, &["dipcref", "hosts", "--json"]);
        if !out.status.success() {
            return Err(format!(
                "dipcref hosts --json on host {host} failed:\n{}",
                describe(&out)
            ));
        }
        parse_hosts_json(&String::from_utf8_lossy(&out.stdout))
    }

    /// `dipcref hosts --json` on host `host`; panics if it fails.
    pub fn dipcref_hosts(&self, host: usize) -> Vec<HostRow> {
        self.try_dipcref_hosts(host)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// State of the host at `address` in `dipcref hosts` run on `from`
    /// (`None` if not listed or dipcref failed).
    pub fn host_state(&self, from: usize, address: &str) -> Option<String> {
        self.try_dipcref_hosts(from)
            .ok()?
            .into_iter()
            .find(|r| r.address == address)
            .map(|r| r.state)
    }

    /// Kills every process of host `i` (`tools/cluster stop i`).
    pub fn stop(&self, i: usize) {
        let out = self.script(&["stop", &i.to_string()]);
        assert!(
            out.status.success(),
            "tools/cluster stop {i} failed:\n{}",
            describe(&out)
        );
    }

    /// Starts host `i`'s dipcd again and waits until it is up (`tools/cluster start i`).
    pub fn start(&self, i: usize) {
        let out = self.script(&["start", &i.to_string()]);
        assert!(
            out.status.success(),
            "tools/cluster start {i} failed:\n{}",
            describe(&out)
        );
    }

    /// Host `i`'s dipcd log so far.
    pub fn log(&self, i: usize) -> String {
        fs::read_to_string(state_dir().join(format!("h{i}")).join("dipcd.log"))
            .unwrap_or_else(|e| format!("(no log for host {i}: {e})"))
    }

    /// Every host's log, for failure messages.
    pub fn all_logs(&self) -> String {
        let mut s = String::new();
        for i in 1..=self.n {
            s.push_str(&format!(
                "----- host {i} dipcd.log -----\n{}\n",
                self.log(i)
            ));
        }
        s
    }

    /// `tools/cluster down` (also run on drop).
    pub fn down(&self) -> Output {
        self.script(&["down"])
    }

    /// A fresh directory for a test's own files, inside the state dir
    /// (removed by `down`).
    pub fn scratch_dir(&self, name: &str) -> PathBuf {
        let d = state_dir().join(name);
        fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        d
    }

    /// Starts `dipcd -c <config>` in host `host`'s namespaces, output to
    /// `<dir>/dipcd.log`. `RUST_LOG` defaults to `info`.
    pub fn spawn_dipcd(&self, host: usize, config: &Path, dir: &Path) -> ExtraDaemon {
        self.spawn_dipcd_with(host, config, dir, &[])
    }

    /// As [`Cluster::spawn_dipcd`], with `env` added to its environment.
    pub fn spawn_dipcd_with(
        &self,
        host: usize,
        config: &Path,
        dir: &Path,
        env: &[(&str, &str)],
    ) -> ExtraDaemon {
        let config = config.to_str().expect("utf-8 config path");
        self.spawn_daemon_with(host, &["dipcd", "-c", config], dir, env)
    }

    /// Starts the daemon command `argv` (a dipcd of another build, say: an
    /// installed one) on `host`, its log in `dir/dipcd.log`.
    pub fn spawn_daemon_with(
        &self,
        host: usize,
        argv: &[&str],
        dir: &Path,
        env: &[(&str, &str)],
    ) -> ExtraDaemon {
        let log = dir.join("dipcd.log");
        let f = File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let f2 = f.try_clone().expect("dup log file");
        let mut cmd = self.exec_command(host, argv);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        cmd.envs(env.iter().copied());
        cmd.stdin(Stdio::null())
            .stdout(f)
            .stderr(f2)
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        ExtraDaemon {
            child: Some(child),
            log,
            status: None,
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "(test failed: the cluster's logs follow)\n{}",
                self.all_logs()
            );
        }
        match try_run_with_timeout(&mut self.script_command(&["down"]), SCRIPT_TIMEOUT) {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!("tools/cluster down failed:\n{}", describe(&o)),
            Err(e) => eprintln!("tools/cluster down: {e}"),
        }
    }
}

/// A command started on a host in the background (see [`Cluster::spawn`]).
/// Its stdout and stderr go to files that can be read while it runs; it is
/// SIGKILLed with its whole process group on drop (so a failing test leaves
/// nothing behind).
pub struct Background {
    child: Option<Child>,
    desc: String,
    out: PathBuf,
    err: PathBuf,
    status: Option<ExitStatus>,
    started: Instant,
}

/// The errors a call on a structure whose owner host is lost may end with.
pub const LOST_OWNER: &[&str] = &["ETIMEDOUT", "ECONNRESET", "EHOSTUNREACH", "ECONNREFUSED"];

impl Background {
    /// Asserts that the program, which ended with `st`, failed with one of
    /// `errnos` (by name, as `dipc-msg` prints them); returns that name.
    pub fn assert_failed_with(&self, st: ExitStatus, errnos: &[&str]) -> String {
        assert!(!st.success(), "{}", self.describe());
        match errno_name(&self.stderr()) {
            Some(n) if errnos.contains(&n.as_str()) => n,
            _ => panic!("want one of {errnos:?}:\n{}", self.describe()),
        }
    }

    /// The `pid_d N` line a registering program prints first (within 20 s).
    pub fn pid_d(&mut self) -> i64 {
        self.wait_for_stdout("pid_d ", Duration::from_secs(20));
        // The number may still be on its way: wait for the end of the line.
        for _ in 0..500 {
            let out = self.stdout();
            if let Some(line) = out.lines().find(|l| l.starts_with("pid_d ")) {
                if out.contains(&format!("{line}\n")) {
                    return line["pid_d ".len()..]
                        .trim()
                        .parse()
                        .unwrap_or_else(|e| panic!("bad pid_d line {line:?}: {e}"));
                }
            }
            thread::sleep(Duration::from_millis(10));
        }
        panic!("no complete pid_d line:\n{}", self.describe())
    }

    /// Its stdout so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Time since it was started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Its exit status if it has exited (reaps it).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(c) = self.child.as_mut() {
                self.status = c.try_wait().expect("try_wait");
            }
        }
        self.status
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.is_some() && self.try_wait().is_none()
    }

    /// Waits at most `timeout` for it to exit; `None` if still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(st) = self.try_wait() {
                return Some(st);
            }
            if self.child.is_none() || start.elapsed() > timeout {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits at most `timeout` for it to exit; on time-out kills it and
    /// panics with its output.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        match self.wait_timeout(timeout) {
            Some(st) => st,
            None => {
                self.kill();
                panic!(
                    "{} did not finish within {timeout:?}; killed.\n{}",
                    self.desc,
                    self.describe()
                )
            }
        }
    }

    /// Waits (at most `timeout`) until its stdout contains `text`; panics if
    /// it exits or the time runs out first.
    pub fn wait_for_stdout(&mut self, text: &str, timeout: Duration) {
        let start = Instant::now();
        loop {
            if self.stdout().contains(text) {
                return;
            }
            if !self.running() {
                // It may have printed just before exiting.
                if self.stdout().contains(text) {
                    return;
                }
                panic!(
                    "{} exited before printing {text:?}:\n{}",
                    self.desc,
                    self.describe()
                );
            }
            if start.elapsed() > timeout {
                self.kill();
                panic!(
                    "{} did not print {text:?} within {timeout:?}; killed.\n{}",
                    self.desc,
                    self.describe()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs it and everything in its process group.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            if self.status.is_none() {
                kill_group(&mut c);
            }
        }
    }

    /// What it was, its status and output, for assertion messages.
    pub fn describe(&self) -> String {
        let status = match self.status {
            Some(st) => st.to_string(),
            None if self.child.is_some() => "running".to_owned(),
            None => "killed".to_owned(),
        };
        format!(
            "{}\nstatus: {status} (after {:?})\nstdout:\n{}\nstderr:\n{}",
            self.desc,
            self.started.elapsed(),
            self.stdout(),
            self.stderr()
        )
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One row of `dipcref keys --json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    pub kind: String,
    /// As printed, e.g. `0x1234`.
    pub key: String,
    /// `address:port` of the owner host.
    pub owner: String,
    pub id: i64,
    pub creator_uid: u64,
}

/// Parses the output of `dipcref keys --json`.
pub fn parse_keys_json(text: &str) -> Result<Vec<KeyRow>, String> {
    let v: serde_json::Value = serde_json::from_str(text.trim())
        .map_err(|e| format!("`dipcref keys --json` printed invalid JSON ({e}): {text:?}"))?;
    let keys = v
        .get("keys")
        .and_then(|h| h.as_array())
        .ok_or_else(|| format!("no \"keys\" array in {text:?}"))?;
    keys.iter()
        .map(|k| {
            let s = |f: &str| {
                k.get(f)
                    .and_then(|x| x.as_str())
                    .map(str::to_owned)
                    .ok_or_else(|| format!("key entry without string {f:?}: {k}"))
            };
            Ok(KeyRow {
                kind: s("kind")?,
                key: s("key")?,
                owner: s("owner")?,
                id: k
                    .get("id")
                    .and_then(|x| x.as_i64())
                    .ok_or_else(|| format!("key entry without integer \"id\": {k}"))?,
                creator_uid: k
                    .get("creator_uid")
                    .and_then(|x| x.as_u64())
                    .ok_or_else(|| format!("key entry without unsigned \"creator_uid\": {k}"))?,
            })
        })
        .collect()
}

/// The `(errno NAME)` that dipc's tools (e.g. `dipc-msg`) end their error
/// messages with, if any.
pub fn errno_name(stderr: &str) -> Option<String> {
    let start = stderr.rfind("(errno ")? + "(errno ".len();
    let end = stderr[start..].find(')')? + start;
    Some(stderr[start..end].to_owned())
}

/// Compiles the C example `libdipc/examples/c/<name>.c` against the built
/// `libdipc.so` (found in [`bin_dir`], linked with an rpath to it) into
/// `<bin_dir>/c-examples/` (a temporary directory if that is not writable);
/// returns the program's path. Each program is compiled once per test
/// process, and replaced atomically (so concurrent test processes never
/// run a half-written one). Panics if gcc fails.
pub fn c_example(name: &str) -> PathBuf {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let map = built.get_or_insert_with(HashMap::new);
    if let Some(p) = map.get(name) {
        return p.clone();
    }
    let lib_dir = bin_dir();
    assert!(
        lib_dir.join("libdipc.so").is_file(),
        "{} does not exist: build the workspace (cargo build --release --workspace) first",
        lib_dir.join("libdipc.so").display()
    );
    let mut out_dir = lib_dir.join("c-examples");
    if fs::create_dir_all(&out_dir).is_err() {
        out_dir = std::env::temp_dir().join(format!("dipc-c-examples-{}", std::process::id()));
        fs::create_dir_all(&out_dir).unwrap_or_else(|e| panic!("{}: {e}", out_dir.display()));
    }
    let root = repo_root();
    let src = root
        .join("libdipc")
        .join("examples")
        .join("c")
        .join(format!("{name}.c"));
    let exe = out_dir.join(name);
    let tmp = out_dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut cmd = Command::new("gcc");
    cmd.args(["-Wall", "-O2", "-I"])
        .arg(root.join("libdipc").join("include"))
        .arg("-o")
        .arg(&tmp)
        .arg(&src)
        .arg("-L")
        .arg(&lib_dir)
        .args(["-ldipc", "-lpthread"])
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()));
    let out = run_with_timeout(&mut cmd, Duration::from_secs(120));
    if !out.status.success() {
        let _ = fs::remove_file(&tmp);
        panic!(
            "compiling {} failed ({cmd:?}):\n{}",
            src.display(),
            describe(&out)
        );
    }
    fs::rename(&tmp, &exe)
        .unwrap_or_else(|e| panic!("rename {} -> {}: {e}", tmp.display(), exe.display()));
    map.insert(name.to_owned(), exe.clone());
    exe
}

impl Cluster {
    /// Starts `args` on host `host` in the background; see [`Background`].
    pub fn spawn(&self, host: usize, args: &[&str]) -> Background {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = self.scratch_dir("background");
        let out = dir.join(format!("{}-{n}.out", std::process::id()));
        let err = dir.join(format!("{}-{n}.err", std::process::id()));
        let fo = File::create(&out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
        let fe = File::create(&err).unwrap_or_else(|e| panic!("{}: {e}", err.display()));
        let desc = format!("`{}` on host {host}", args.join(" "));
        let mut cmd = self.exec_command(host, args);
        cmd.stdin(Stdio::null())
            .stdout(fo)
            .stderr(fe)
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {desc}: {e}"));
        Background {
            child: Some(child),
            desc,
            out,
            err,
            status: None,
            started: Instant::now(),
        }
    }

    /// `dipcref keys --json` on host `host`; panics if it fails.
    pub fn dipcref_keys(&self, host: usize) -> Vec<KeyRow> {
        let out = self.exec(host, &["dipcref", "keys", "--json"]);
        assert!(
            out.status.success(),
            "dipcref keys --json on host {host} failed:\n{}",
            describe(&out)
        );
        parse_keys_json(&String::from_utf8_lossy(&out.stdout)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `args` on host `host`, expecting it to fail with the error
    /// `(errno NAME)` for `errno` (one of `errnos`); returns the name.
    pub fn exec_err(&self, host: usize, args: &[&str], errnos: &[&str]) -> String {
        let out = self.exec(host, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let name = errno_name(&stderr);
        assert!(
            !out.status.success() && name.as_deref().is_some_and(|n| errnos.contains(&n)),
            "on host {host}: {} should have failed with {errnos:?}:\n{}",
            args.join(" "),
            describe(&out)
        );
        name.unwrap_or_default()
    }
}

impl Cluster {
    /// Reboots host `i`: kills its processes (`stop`), gives it a fresh
    /// IPC namespace (its kernel structures are gone and ids are numbered
    /// from the start again, as after a real reboot; its runtime directory
    /// stays, as a disk would) and starts its dipcd again (`start`).
    pub fn reboot(&self, i: usize) {
        self.reboot_with(i, || {});
    }

    /// As [`Cluster::reboot`], running `before_start` once the host has
    /// its fresh namespace and before its dipcd starts (as applications
    /// that start before dipcd do).
    pub fn reboot_with(&self, i: usize, before_start: impl FnOnce()) {
        self.stop(i);
        let ipc = state_dir().join(format!("h{i}")).join("ipc");
        let out = run_with_timeout(Command::new("umount").arg(&ipc), Duration::from_secs(30));
        assert!(
            out.status.success(),
            "umount {} (host {i}'s IPC namespace) failed:\n{}",
            ipc.display(),
            describe(&out)
        );
        let mut unshare = Command::new("unshare");
        unshare.arg(format!("--ipc={}", ipc.display())).arg("true");
        let out = run_with_timeout(&mut unshare, Duration::from_secs(30));
        assert!(
            out.status.success(),
            "a fresh IPC namespace for host {i} ({}) failed:\n{}",
            ipc.display(),
            describe(&out)
        );
        before_start();
        self.start(i);
    }

    /// Cuts host `i`'s cable (its veth on the switch goes down) or mends
    /// it: no RST, no FIN, so only time-outs and heartbeats can tell.
    pub fn set_link(&self, i: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        let out = run_with_timeout(
            Command::new("ip").args(["-n", "dipc-sw", "link", "set", &format!("h{i}"), state]),
            Duration::from_secs(10),
        );
        assert!(
            out.status.success(),
            "ip link set h{i} {state}:\n{}",
            describe(&out)
        );
    }

    /// Waits until host `from` sees every host of the cluster up, and
    /// fails the test if that takes longer than `limit`.
    pub fn wait_all_up(&self, from: usize, limit: Duration) {
        let n = self.size();
        let mut last = None;
        let up = wait_for(limit, || {
            last = Some(self.try_dipcref_hosts(from));
            matches!(&last, Some(Ok(rows)) if rows.len() == n && rows.iter().all(HostRow::is_up))
        });
        assert!(
            up.is_some(),
            "host {from} did not see all {n} hosts up within {limit:?}: {last:#?}"
        );
    }
}

impl Cluster {
    /// Restarts the referee (with host 1's dipcd, its parent; host 1
    /// keeps its IPC namespace): the referee starts with empty tables.
    /// Returns once host 1 sees every host but those in `away` up again
    /// (until a host has rejoined, its applications get `ENOTCONN`).
    pub fn restart_referee(&self, away: &[usize]) {
        self.stop(1);
        self.start(1);
        let limit = Duration::from_secs(20);
        let mut last = None;
        let up = wait_for(limit, || {
            last = Some(self.try_dipcref_hosts(1));
            let Some(Ok(rows)) = &last else {
                return false;
            };
            (1..=self.size())
                .filter(|i| !away.contains(i))
                .all(|i| rows.iter().any(|r| r.address == host_addr(i) && r.is_up()))
        });
        assert!(
            up.is_some(),
            "after the referee's restart, not every host but {away:?} was up within {limit:?}: {last:#?}"
        );
    }

    /// Returns once the referee has settled after its start (see "Referee
    /// restart" in README.md): a get of a key nobody made is answered
    /// (`ENOENT`) only then. For tests that talk to the referee as a host
    /// of their own, which sends no heartbeats while a request waits.
    pub fn wait_referee_settled(&self) {
        self.exec_err(1, &["dipc-msg", "get", "0x5e771ed"], &["ENOENT"]);
    }

    /// Host `host`'s structures of `kind` (`msg`, `sem`, `shm`) as
    /// `(key, id)`, from `ipcs`.
    pub fn ipcs(&self, host: usize, kind: &str) -> Vec<(i32, i32)> {
        let flag = match kind {
            "msg" => "-q",
            "sem" => "-s",
            "shm" => "-m",
            _ => panic!("no IPC kind {kind}"),
        };
        let out = self.exec_ok(host, &["ipcs", flag]);
        out.lines()
            .filter_map(|l| {
                let mut cols = l.split_whitespace();
                let key = cols.next()?.strip_prefix("0x")?;
                let key = u32::from_str_radix(key, 16).ok()? as i32;
                let id = cols.next()?.parse().ok()?;
                Some((key, id))
            })
            .collect()
    }
}

/// The pids of the processes running in host `i` (its network namespace).
pub fn netns_pids(i: usize) -> Vec<String> {
    let out = run_with_timeout(
        Command::new("ip").args(["netns", "pids", &format!("dipc-h{i}")]),
        Duration::from_secs(10),
    );
    assert!(out.status.success(), "ip netns pids:\n{}", describe(&out));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The pids of the processes named `comm` (`dipc-worker`, `dipc-referee`)
/// running in host `i` (its network namespace).
pub fn pids_named(i: usize, comm: &str) -> Vec<String> {
    netns_pids(i)
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == comm)
        })
        .collect()
}

/// One row of `dipcref pids --json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidRow {
    pub pid_d: i64,
    pub host: String,
    pub pid: i64,
    pub uid: u64,
    pub mailbox: i64,
}

/// `dipcref pids --json` as seen from `host`.
pub fn dipcref_pids(c: &Cluster, host: usize) -> Vec<PidRow> {
    let out = c.exec_ok(host, &["dipcref", "pids", "--json"]);
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("bad JSON {out:?}: {e}"));
    let rows = v
        .get("pids")
        .and_then(|p| p.as_array())
        .unwrap_or_else(|| panic!("no \"pids\" array in {out:?}"));
    rows.iter()
        .map(|r| {
            let i = |k: &str| {
                r.get(k)
                    .and_then(|x| x.as_i64())
                    .unwrap_or_else(|| panic!("pid row without {k}: {r}"))
            };
            PidRow {
                pid_d: i("pid_d"),
                host: r
                    .get("host")
                    .and_then(|x| x.as_str())
                    .unwrap_or_else(|| panic!("pid row without host: {r}"))
                    .to_owned(),
                pid: i("pid"),
                uid: i("uid") as u64,
                mailbox: i("mailbox"),
            }
        })
        .collect()
}

/// `dipcref pids --json` rows (from host 1) as pid_d -> (host, pid, mailbox).
pub fn pid_table(c: &Cluster) -> std::collections::HashMap<i64, (String, i64, i64)> {
    dipcref_pids(c, 1)
        .into_iter()
        .map(|r| (r.pid_d, (r.host, r.pid, r.mailbox)))
        .collect()
}
