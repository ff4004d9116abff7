use super::*;

const P: &str = "/etc/dipc/test.conf";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, Path::new(P))
}

/// Asserts that `text` fails on `key`, and returns the reason for
/// further checks.
fn key_err(text: &str, key: &str) -> String {
    match parse(text) {
        Err(ConfigError::Key {
            key: k,
            reason,
            path,
        }) => {
            assert_eq!(k, key, "wrong key for {text:?}: {reason}");
            assert_eq!(path, Path::new(P));
            reason
        }
        other => panic!("expected Key error on {key} for {text:?}, got {other:?}"),
    }
}

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn empty_file_gives_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c.path, Path::new(P));
    assert_eq!(
        Config {
            path: PathBuf::new(),
            ..c
        },
        Config::default()
    );
}

#[test]
fn the_referee_settles_while_hosts_can_rejoin_and_askers_still_wait() {
    assert_eq!(Config::default().referee_settle(), Duration::from_secs(5));
    let test = parse(
        "[timeouts]\nconnect_ms = 1000\nrequest_ms = 5000\n\
         heartbeat_interval_ms = 250\nheartbeat_timeout_ms = 1500\n",
    )
    .unwrap();
    assert_eq!(test.referee_settle(), Duration::from_millis(2500));
    let hasty = parse("[timeouts]\nrequest_ms = 1000\n").unwrap();
    assert_eq!(hasty.referee_settle(), Duration::from_millis(500));
}

#[test]
fn defaults_pass_validation() {
    let d = Config::default();
    file::cross_check(&d).unwrap();
    assert_eq!(d.path, PathBuf::new());
    assert!(d.is_allowed(ip("127.0.0.1")));
    assert!(!d.is_allowed(ip("10.0.0.1")));
    assert_eq!(d.front_end_addr(), "127.0.0.1:7100".parse().unwrap());
    assert_eq!(d.referee_addr(), "127.0.0.1:7101".parse().unwrap());
    assert_eq!(d.back_end_socket(), Path::new("/run/dipc/dipcd.sock"));
    assert_eq!(d.referee_socket(), Path::new("/run/dipc/referee.sock"));
}

#[test]
fn shipped_file_equals_defaults() {
    let c = parse(include_str!("../../../dipc.conf")).unwrap();
    assert_eq!(
        Config {
            path: PathBuf::new(),
            ..c
        },
        Config::default()
    );
}

#[test]
fn full_custom_file() {
    let c = parse(
        r#"
        runtime_dir = "/var/run/dipc2"
        secret_file = "/srv/dipc/key"
        max_frame = 4096
        admin_group = "dipcadm"

        [host]
        address = "10.1.0.2"
        port = 9000
        arbiter = false

        [referee]
        address = "10.1.0.1"
        port = 9001

        [timeouts]
        connect_ms = 1
        request_ms = 3600000
        heartbeat_interval_ms = 250
        heartbeat_timeout_ms = 251

        [cluster]
        allowed_hosts = ["10.1.0.0/16", "::1", "fd00::/8"]
        root_squash = false

        [shm]
        mode = "segment"
        quantum_ms = 0

        [library]
        spin_us = 0

        [limits]
        clients_per_uid = 7
        placeholders_per_uid = 8
        sessions_per_uid = 9
        workers_per_host = 10
        employers_per_uid = 11

        [balance]
        enabled = true
        interval_ms = 250
        threshold = 0.25
        min_stay_ms = 0
        "#,
    )
    .unwrap();
    let expected = Config {
        path: PathBuf::from(P),
        host: HostConfig {
            address: ip("10.1.0.2"),
            port: 9000,
            arbiter: false,
        },
        referee: RefereeConfig {
            address: ip("10.1.0.1"),
            port: 9001,
        },
        runtime_dir: PathBuf::from("/var/run/dipc2"),
        secret_file: PathBuf::from("/srv/dipc/key"),
        max_frame: 4096,
        timeouts: Timeouts {
            connect: Duration::from_millis(1),
            request: Duration::from_millis(3_600_000),
            heartbeat_interval: Duration::from_millis(250),
            heartbeat_timeout: Duration::from_millis(251),
        },
        allowed_hosts: vec![cidr("10.1.0.0/16"), cidr("::1/128"), cidr("fd00::/8")],
        root_squash: false,
        admin_group: Some("dipcadm".to_string()),
        shm: ShmConfig {
            mode: ShmMode::Segment,
            quantum: Duration::from_millis(0),
        },
        library: LibraryConfig {
            spin: Duration::ZERO,
        },
        preload: PreloadConfig::default(),
        balance: BalanceConfig {
            enabled: true,
            interval: Duration::from_millis(250),
            threshold_milli: 250,
            min_stay: Duration::from_millis(0),
        },
        metrics: MetricsConfig::default(),
        limits: Limits {
            clients_per_uid: 7,
            placeholders_per_uid: 8,
            sessions_per_uid: 9,
            workers_per_host: 10,
            employers_per_uid: 11,
        },
    };
    assert_eq!(c, expected);
    assert!(c.is_allowed(ip("10.1.200.3")));
    assert!(c.is_allowed(ip("::ffff:10.1.0.9")));
    assert!(!c.is_allowed(ip("10.2.0.1")));
    assert_eq!(c.front_end_addr(), "10.1.0.2:9000".parse().unwrap());
    assert_eq!(c.referee_addr(), "10.1.0.1:9001".parse().unwrap());
}

#[test]
fn partial_file_keeps_other_defaults() {
    let c = parse("[shm]\nmode = \"segment\"\n").unwrap();
    assert_eq!(c.shm.mode, ShmMode::Segment);
    assert_eq!(c.shm.quantum, Duration::from_millis(10));
    assert_eq!(c.host, Config::default().host);
}

#[test]
fn the_metrics_listener_is_off_unless_set() {
    assert_eq!(Config::default().metrics.listen, None);
    let c = parse("[metrics]\nlisten = \"127.0.0.1:9477\"\n").unwrap();
    assert_eq!(c.metrics.listen, Some("127.0.0.1:9477".parse().unwrap()));
    key_err("[metrics]\nlisten = \"localhost:9477\"\n", "metrics.listen");
    key_err("[metrics]\nlisten = \"127.0.0.1\"\n", "metrics.listen");
    key_err("[metrics]\nlisten = \"127.0.0.1:0\"\n", "metrics.listen");
    key_err("[metrics]\nport = 1\n", "metrics.port");
}

#[test]
fn unknown_keys() {
    let r = key_err("[host]\nadress = \"127.0.0.1\"\n", "host.adress");
    assert_eq!(
        r,
        "unknown key (known keys in [host]: address, port, arbiter)"
    );
    key_err("colour = 1\n", "colour");
    key_err("[referee]\nhost = 1\n", "referee.host");
    key_err("[timeouts]\nconnect = 1\n", "timeouts.connect");
    key_err("[cluster]\nallowed = []\n", "cluster.allowed");
    let r = key_err(
        "[cluster]\nroot_squashing = true\n",
        "cluster.root_squashing",
    );
    assert!(r.contains("root_squash"), "{r}");
    key_err("[shm]\nsize = 1\n", "shm.size");
    key_err("[nosuch]\n", "nosuch");
}

#[test]
fn table_value_mismatch() {
    let r = key_err("host = \"127.0.0.1\"\n", "host");
    assert!(r.contains("must be a table"), "{r}");
    let r = key_err("[runtime_dir]\nx = 1\n", "runtime_dir");
    assert!(r.contains("got a table"), "{r}");
    key_err("[host.address]\n", "host.address");
    key_err("timeouts = [1, 2]\n", "timeouts");
}

#[test]
fn wrong_types_and_ranges() {
    let r = key_err("[timeouts]\nconnect_ms = \"fast\"\n", "timeouts.connect_ms");
    assert_eq!(r, "must be an integer between 1 and 3600000, got \"fast\"");
    key_err("[timeouts]\nconnect_ms = 0\n", "timeouts.connect_ms");
    key_err("[timeouts]\nrequest_ms = 3600001\n", "timeouts.request_ms");
    key_err("[timeouts]\nrequest_ms = -5\n", "timeouts.request_ms");
    key_err("[timeouts]\nrequest_ms = 2.5\n", "timeouts.request_ms");
    key_err(
        "[timeouts]\nheartbeat_interval_ms = true\n",
        "timeouts.heartbeat_interval_ms",
    );
    key_err("max_frame = 4095\n", "max_frame");
    key_err("max_frame = 67108865\n", "max_frame");
    key_err("max_frame = 1e6\n", "max_frame");
    key_err("[host]\nport = 0\n", "host.port");
    key_err("[host]\nport = 65536\n", "host.port");
    key_err("[host]\nport = \"7100\"\n", "host.port");
    key_err("[referee]\nport = -1\n", "referee.port");
    key_err("[host]\narbiter = \"yes\"\n", "host.arbiter");
    key_err("[shm]\nquantum_ms = 60001\n", "shm.quantum_ms");
    key_err("[balance]\nthreshold = -0.5\n", "balance.threshold");
    key_err("[balance]\nthreshold = \"1\"\n", "balance.threshold");
    key_err("[balance]\ninterval_ms = 99\n", "balance.interval_ms");
    key_err("[balance]\nenabled = 1\n", "balance.enabled");
    key_err("[balance]\nmove_every = 1\n", "balance.move_every");
    key_err("[shm]\nquantum_ms = -1\n", "shm.quantum_ms");
    key_err("[shm]\nmode = \"pages\"\n", "shm.mode");
    key_err("[shm]\nmode = 1\n", "shm.mode");
    key_err("[library]\nspin_us = 10001\n", "library.spin_us");
    key_err("[limits]\nclients_per_uid = 0\n", "limits.clients_per_uid");
    key_err(
        "[limits]\nclients_per_uid = 65537\n",
        "limits.clients_per_uid",
    );
    key_err("[limits]\nsessions = 1\n", "limits.sessions");
    key_err("[library]\nspin_us = -1\n", "library.spin_us");
    key_err("[library]\nspin = 5\n", "library.spin");
    let r = key_err("[preload]\nkeys = [\"0x10\", \"zz\"]\n", "preload.keys");
    assert!(r.contains("entry 1 (\"zz\")"), "{r}");
    key_err("[preload]\nkeys = \"all\"\n", "preload.keys");
    key_err("[preload]\nkeys = [5]\n", "preload.keys");
    key_err("[preload]\nkey = [\"all\"]\n", "preload.key");
    assert_eq!(
        parse("[preload]\nkeys = [\"0x1000-0x1fff\", \"0x5a5a\"]\n")
            .unwrap()
            .preload
            .keys,
        KeyPolicy::Ranges(vec![(0x1000, 0x1fff), (0x5a5a, 0x5a5a)])
    );
    assert_eq!(
        parse("[preload]\nkeys = [\"all\"]\n").unwrap().preload.keys,
        KeyPolicy::All
    );
    assert_eq!(
        parse("max_frame = 67108864\n").unwrap().max_frame,
        67_108_864
    );
    assert_eq!(
        parse("[shm]\nquantum_ms = 60000\n").unwrap().shm.quantum,
        Duration::from_secs(60)
    );
}

#[test]
fn bad_addresses() {
    let r = key_err("[host]\naddress = \"node1.example\"\n", "host.address");
    assert!(r.contains("host names are not accepted"), "{r}");
    assert!(r.contains("\"node1.example\""), "{r}");
    key_err("[host]\naddress = \"\"\n", "host.address");
    key_err("[host]\naddress = 127\n", "host.address");
    key_err(
        "[host]\naddress = \"0.0.0.0\"\narbiter = false\n",
        "host.address",
    );
    key_err("[referee]\naddress = \"224.0.0.1\"\n", "referee.address");
    key_err("[referee]\naddress = \"1.2.3\"\n", "referee.address");
}

#[test]
fn bad_paths_and_strings() {
    let r = key_err("runtime_dir = \"run/dipc\"\n", "runtime_dir");
    assert!(r.contains("absolute"), "{r}");
    key_err("runtime_dir = \"\"\n", "runtime_dir");
    key_err("secret_file = \"secret\"\n", "secret_file");
    key_err("secret_file = 3\n", "secret_file");
    key_err("admin_group = \"\"\n", "admin_group");
    key_err("admin_group = \"a:b\"\n", "admin_group");
    key_err("admin_group = false\n", "admin_group");
}

#[test]
fn bad_allowed_hosts() {
    key_err("[cluster]\nallowed_hosts = []\n", "cluster.allowed_hosts");
    key_err(
        "[cluster]\nallowed_hosts = \"10.0.0.0/8\"\n",
        "cluster.allowed_hosts",
    );
    key_err("[cluster]\nallowed_hosts = [8]\n", "cluster.allowed_hosts");
    let r = key_err(
        "[cluster]\nallowed_hosts = [\"127.0.0.0/8\", \"10.0.0.1/8\"]\n",
        "cluster.allowed_hosts",
    );
    assert!(r.contains("entry 1") && r.contains("10.0.0.0/8"), "{r}");
    key_err(
        "[cluster]\nallowed_hosts = [\"nope\"]\n",
        "cluster.allowed_hosts",
    );
}

#[test]
fn root_squash() {
    assert!(Config::default().root_squash);
    assert!(parse("").unwrap().root_squash);
    assert!(
        parse("[cluster]\nroot_squash = true\n")
            .unwrap()
            .root_squash
    );
    let c = parse("[cluster]\nroot_squash = false\n").unwrap();
    assert!(!c.root_squash);
    assert_eq!(c.allowed_hosts, Config::default().allowed_hosts);
    let r = key_err("[cluster]\nroot_squash = \"no\"\n", "cluster.root_squash");
    assert_eq!(r, "must be true or false, got \"no\"");
    key_err("[cluster]\nroot_squash = 0\n", "cluster.root_squash");
    key_err("[cluster]\nroot_squash = []\n", "cluster.root_squash");
    // A top-level key by mistake, outside [cluster], is unknown.
    key_err("root_squash = false\n", "root_squash");
}

#[test]
fn cross_key_rules() {
    let r = key_err(
        "[timeouts]\nheartbeat_interval_ms = 5000\nheartbeat_timeout_ms = 5000\n",
        "timeouts.heartbeat_timeout_ms",
    );
    assert!(r.contains("heartbeat_interval_ms"), "{r}");
    // The default timeout (5000) must also be checked against a new interval.
    key_err(
        "[timeouts]\nheartbeat_interval_ms = 6000\n",
        "timeouts.heartbeat_timeout_ms",
    );

    let r = key_err("[referee]\naddress = \"10.0.0.1\"\n", "referee.address");
    assert!(r.contains("arbiter"), "{r}");
    parse("[host]\narbiter = false\n[referee]\naddress = \"10.0.0.1\"\n").unwrap();

    let r = key_err("[referee]\nport = 7100\n", "referee.port");
    assert!(r.contains("host.port"), "{r}");
    parse("[host]\narbiter = false\naddress = \"10.0.0.2\"\n[referee]\naddress = \"10.0.0.1\"\nport = 7100\n")
        .unwrap();
}

#[test]
fn syntax_error_is_parse() {
    match parse("[host\nport = 1\n") {
        Err(ConfigError::Parse { path, message }) => {
            assert_eq!(path, Path::new(P));
            assert!(message.contains("line 1"), "{message}");
        }
        other => panic!("expected Parse, got {other:?}"),
    }
    assert!(matches!(
        parse("port = 1\nport = 2\n"),
        Err(ConfigError::Parse { .. })
    ));
}

#[test]
fn error_display() {
    let e = Config::from_toml_str(
        "[timeouts]\nconnect_ms = \"fast\"\n",
        Path::new("/etc/dipc/dipc.conf"),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "/etc/dipc/dipc.conf: key `timeouts.connect_ms`: must be an integer between 1 and 3600000, got \"fast\""
    );
    let e = Config::from_toml_str("x = 1", Path::new("")).unwrap_err();
    assert!(e.to_string().starts_with("key `x`: "), "{e}");
}

#[test]
fn load_missing_file_is_io() {
    let path = Path::new("/nonexistent/dipc/dipc.conf");
    match Config::load(path) {
        Err(e @ ConfigError::Io { .. }) => {
            assert!(std::error::Error::source(&e).is_some());
            assert!(
                e.to_string().starts_with("/nonexistent/dipc/dipc.conf: "),
                "{e}"
            );
        }
        other => panic!("expected Io, got {other:?}"),
    }
}

#[test]
fn load_reads_file() {
    let dir = std::env::temp_dir().join(format!("dipc-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dipc.conf");
    std::fs::write(&path, "[host]\nport = 7200\n").unwrap();
    let c = Config::load(&path).unwrap();
    assert_eq!(c.path, path);
    assert_eq!(c.host.port, 7200);
    std::fs::write(&path, b"\xff\xfe").unwrap();
    assert!(matches!(
        Config::load(&path),
        Err(ConfigError::Parse { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cidr_v4() {
    let c = cidr("10.0.0.0/8");
    assert_eq!(c.to_string(), "10.0.0.0/8");
    assert!(c.contains(ip("10.255.1.2")));
    assert!(!c.contains(ip("11.0.0.0")));
    let one = cidr("127.0.0.1");
    assert_eq!(one, cidr("127.0.0.1/32"));
    assert_eq!(one.to_string(), "127.0.0.1/32");
    assert!(one.contains(ip("127.0.0.1")));
    assert!(!one.contains(ip("127.0.0.2")));
    let all = cidr("0.0.0.0/0");
    assert!(all.contains(ip("1.2.3.4")) && all.contains(ip("255.255.255.255")));
    assert!(!all.contains(ip("::2")));
    assert_eq!(all.to_string().parse::<Cidr>().unwrap(), all);
}

#[test]
fn cidr_v6_and_mapped() {
    let c = cidr("fd00::/8");
    assert!(c.contains(ip("fd12::1")));
    assert!(!c.contains(ip("fe80::1")));
    assert!(!c.contains(ip("10.0.0.1")));
    let lo = cidr("::1");
    assert_eq!(lo.to_string(), "::1/128");
    assert!(lo.contains(ip("::1")));
    assert!(!lo.contains(ip("127.0.0.1")));
    assert!(cidr("::/0").contains(ip("2001:db8::1")));
    // A dual-stack socket reports IPv4 peers in mapped form.
    let v4 = cidr("192.168.0.0/16");
    assert!(v4.contains(ip("::ffff:192.168.3.4")));
    assert!(!v4.contains(ip("::ffff:192.169.3.4")));
    assert!(!v4.contains(ip("::192.168.3.4")));
    let mapped = cidr("::ffff:192.168.0.0/112");
    assert!(mapped.contains(ip("192.168.7.7")));
    assert!(!mapped.contains(ip("10.0.0.1")));
}

#[test]
fn cidr_bad_inputs() {
    for bad in [
        "",
        "/8",
        "10.0.0.0/",
        "10.0.0.0/33",
        "10.0.0.0/+8",
        "10.0.0.0/-1",
        "10.0.0.0/8/8",
        "10.0.0.1/8",
        "10.0.0",
        " 10.0.0.0/8",
        "fd00::/129",
        "fd00::1/8",
        "localhost",
        "10.0.0.0/ 8",
    ] {
        assert!(bad.parse::<Cidr>().is_err(), "{bad:?} should be rejected");
    }
    let e = "10.0.0.1/8".parse::<Cidr>().unwrap_err();
    assert!(e.contains("host bits") && e.contains("10.0.0.0/8"), "{e}");
}

#[test]
fn every_section_refuses_unknown_keys() {
    for section in [
        "host", "referee", "timeouts", "cluster", "shm", "library", "limits", "preload", "balance",
        "metrics",
    ] {
        let r = key_err(
            &format!("[{section}]\nnosuch = 1\n"),
            &format!("{section}.nosuch"),
        );
        assert!(
            r.starts_with(&format!("unknown key (known keys in [{section}]: ")),
            "{r}"
        );
    }
    // serde words a one-field section apart ("expected `spin_us`").
    let r = key_err("[library]\nspin = 5\n", "library.spin");
    assert_eq!(r, "unknown key (known keys in [library]: spin_us)");
    let r = key_err("colour = 1\n", "colour");
    assert!(
        r.starts_with("unknown key (known top-level keys and tables: runtime_dir, ")
            && r.ends_with(", preload, balance, metrics)"),
        "{r}"
    );
}

#[test]
fn sections_take_only_tables() {
    // serde's derived structs would also take an array, field by field:
    // this once read as connect_ms = 1 and request_ms = 2.
    let r = key_err("timeouts = [1, 2]\n", "timeouts");
    assert_eq!(
        r,
        "must be a table [timeouts] (with keys connect_ms, request_ms, heartbeat_interval_ms, \
         heartbeat_timeout_ms), got [1, 2]"
    );
    let r = key_err("host = \"127.0.0.1\"\n", "host");
    assert_eq!(
        r,
        "must be a table [host] (with keys address, port, arbiter), got \"127.0.0.1\""
    );
    key_err("[[shm]]\nmode = \"page\"\n", "shm");
    key_err("cluster = []\n", "cluster");
    key_err("balance = true\n", "balance");
}
