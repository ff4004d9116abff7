//! Reading and validating `dipc.conf`, the one configuration file shared by
//! every dipc process on a host.
//!
//! The daemons read it at start-up and applications read it to find their
//! host's daemon, so a mistake must be reported once, clearly, and before
//! anything binds a socket: every error names the dotted key (for example
//! `timeouts.connect_ms`), says what was expected and shows the bad value.
//!
//! The file is parsed into a plain [`toml::Table`] and checked by hand rather
//! than through serde, because hand-written checks give us precise messages
//! for unknown keys, ranges and cross-key rules that derive-based decoding
//! would either miss or word poorly. Every key is optional; a missing key
//! takes the value of [`Config::default`], so an empty file is a working
//! single-host cluster on 127.0.0.1.

use crate::keypolicy::{self, KeyPolicy};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use toml::{Table, Value};

/// Where the daemons and applications look when nothing else is said.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/dipc/dipc.conf";

/// Environment variable that overrides [`DEFAULT_CONFIG_PATH`], so that
/// several simulated hosts can share one machine with different files.
pub const CONFIG_ENV: &str = "DIPC_CONFIG";

const BACK_END_SOCKET_NAME: &str = "dipcd.sock";
const REFEREE_SOCKET_NAME: &str = "referee.sock";

const MAX_FRAME_MIN: i64 = 4096;
const MAX_FRAME_MAX: i64 = 64 * 1024 * 1024;
const TIMEOUT_MS_MIN: i64 = 1;
const TIMEOUT_MS_MAX: i64 = 3_600_000;
const QUANTUM_MS_MIN: i64 = 0;
const QUANTUM_MS_MAX: i64 = 60_000;
/// Bounds of `library.spin_us`, also used for `$DIPC_SPIN_US`.
pub const SPIN_US_MAX: i64 = 10_000;
const SPIN_US_DEFAULT: u64 = 100;
const PORT_MIN: i64 = 1;
const PORT_MAX: i64 = 65_535;

/// The validated contents of `dipc.conf`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// File the configuration was read from; empty for [`Config::default`].
    pub path: PathBuf,
    pub host: HostConfig,
    pub referee: RefereeConfig,
    /// Directory holding the Unix sockets of the local daemons.
    pub runtime_dir: PathBuf,
    /// Cluster secret shared by all hosts (never sent over the network).
    pub secret_file: PathBuf,
    /// Largest frame, in bytes, accepted from a peer before allocating.
    pub max_frame: u32,
    pub timeouts: Timeouts,
    /// Peers outside every range are refused before authentication.
    pub allowed_hosts: Vec<Cidr>,
    /// Whether a remote caller's uid 0 (and any gid 0) is mapped to
    /// `nobody` on this host, as NFS's `root_squash` does; read by the
    /// worker, so it applies to calls arriving at this host.
    pub root_squash: bool,
    /// Group whose members may administer the referee through `dipcref`.
    pub admin_group: Option<String>,
    pub shm: ShmConfig,
    pub library: LibraryConfig,
    pub limits: Limits,
    /// Keys the preload library makes distributed without `IPC_DIPC`.
    pub preload: PreloadConfig,
    /// The referee's load balancer (read on the arbiter only).
    pub balance: BalanceConfig,
    /// `[metrics]`: the optional Prometheus listener.
    pub metrics: MetricsConfig,
}

/// `[balance]`: the referee's load balancer, off by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalanceConfig {
    pub enabled: bool,
    /// How often it measures each host's load (over this window) and
    /// decides.
    pub interval: Duration,
    /// The least difference, in thousandths of a CPU, between the busiest
    /// and the least busy host's load that makes it move a process.
    pub threshold_milli: u32,
    /// The least time a process runs on a host before the balancer moves
    /// it (again).
    pub min_stay: Duration,
}

/// `[metrics]`: where dipcd serves its counters over HTTP (`GET /metrics`,
/// Prometheus text format); off unless `listen` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetricsConfig {
    pub listen: Option<SocketAddr>,
}

/// `[preload]`: what `libdipc_preload.so` does for programs that do not
/// know about dipc.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PreloadConfig {
    /// `keys`: see [`crate::keypolicy`].
    pub keys: KeyPolicy,
}

/// What one user may hold of a host's daemons, so that no user can take
/// the service away from the others (root is not limited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections one uid may hold open to this host's dipcd
    /// (`dipcd.sock`): an application process holds one or two.
    pub clients_per_uid: usize,
    /// Placeholders (local structures standing for other hosts') the gets
    /// of one uid may make on this host: each takes a slot of the host's
    /// `msgmni`, `semmni` or `shmmni`.
    pub placeholders_per_uid: usize,
    /// Sessions (workers) one uid may hold open on this host, from all
    /// hosts together.
    pub sessions_per_uid: usize,
    /// Sessions (workers) one peer host may hold open on this host.
    pub workers_per_host: usize,
    /// Sessions one uid may have being opened from this host at once
    /// (each is an employer process until it is open).
    pub employers_per_uid: usize,
}

/// This host's identity in the cluster: where its front end listens.
#[derive(Debug, Clone, PartialEq)]
pub struct HostConfig {
    pub address: IpAddr,
    pub port: u16,
    /// Whether this host runs the referee.
    pub arbiter: bool,
}

/// Where every host finds the cluster's single referee.
#[derive(Debug, Clone, PartialEq)]
pub struct RefereeConfig {
    pub address: IpAddr,
    pub port: u16,
}

/// Longest pause between two attempts of a host to reach the referee: a
/// restarted referee must see every host again within its settle period
/// ([`Config::referee_settle`]).
pub const REFEREE_RETRY_MAX: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    pub connect: Duration,
    pub request: Duration,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
}

/// Granularity at which distributed shared memory moves between hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShmMode {
    Page,
    Segment,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShmConfig {
    pub mode: ShmMode,
    /// Minimum time a host keeps a shared-memory right before losing it.
    pub quantum: Duration,
}

/// How the application library waits for a reply from another host.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LibraryConfig {
    /// Longest time a call on another host's structure checks for the reply
    /// without sleeping, before it sleeps until the reply comes (0: sleep
    /// at once). The library adapts the time it actually spins below this
    /// bound to how fast replies have been coming.
    pub spin: Duration,
}

/// An address range such as `10.0.0.0/8` or `fd00::/8`.
///
/// The network address is stored with its host bits clear (parsing refuses
/// anything else), so [`Cidr::contains`] only has to mask the candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

fn v4_mask(prefix: u8) -> u32 {
    // Shifting a u32 by 32 overflows, so /0 needs its own case.
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

fn v6_mask(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    }
}

impl Cidr {
    /// Whether `ip` lies in this range.
    ///
    /// A dual-stack socket reports IPv4 peers as `::ffff:a.b.c.d`; those are
    /// matched against IPv4 ranges (and plain IPv4 addresses against ranges
    /// written in mapped form) so that the same allow list works whichever
    /// way the front end's socket was opened.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => v4_contains(net, self.prefix, ip),
            (IpAddr::V4(net), IpAddr::V6(ip)) => match ip.to_ipv4_mapped() {
                Some(ip) => v4_contains(net, self.prefix, ip),
                None => false,
            },
            (IpAddr::V6(net), IpAddr::V6(ip)) => v6_contains(net, self.prefix, ip),
            (IpAddr::V6(net), IpAddr::V4(ip)) => v6_contains(net, self.prefix, ip.to_ipv6_mapped()),
        }
    }
}

fn v4_contains(net: Ipv4Addr, prefix: u8, ip: Ipv4Addr) -> bool {
    u32::from(ip) & v4_mask(prefix) == u32::from(net)
}

fn v6_contains(net: Ipv6Addr, prefix: u8, ip: Ipv6Addr) -> bool {
    u128::from(ip) & v6_mask(prefix) == u128::from(net)
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr_text, prefix_text) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| {
            format!("`{s}` is not an IP address or range (expected e.g. \"10.0.0.0/8\", \"127.0.0.1\" or \"fd00::/8\")")
        })?;
        let max_prefix: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max_prefix,
            Some(p) => {
                // u8::from_str accepts a leading '+', which no one means in a CIDR.
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!(
                        "`{s}`: prefix length must be a number between 0 and {max_prefix}"
                    ));
                }
                match p.parse::<u8>() {
                    Ok(n) if n <= max_prefix => n,
                    _ => {
                        return Err(format!(
                            "`{s}`: prefix length must be a number between 0 and {max_prefix}"
                        ))
                    }
                }
            }
        };
        let network = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & v4_mask(prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & v6_mask(prefix))),
        };
        if network != addr {
            // Usually a typo for a host address or for a wider range; guessing
            // either way could open the cluster to the wrong peers.
            return Err(format!(
                "`{s}` has host bits set after the /{prefix} prefix (did you mean \"{network}/{prefix}\"?)"
            ));
        }
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug)]
pub enum ConfigError {
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML; `message` carries toml's line and column.
    Parse { path: PathBuf, message: String },
    /// A key is unknown, has the wrong type or value, or conflicts with
    /// another key; `key` is the dotted path such as `timeouts.connect_ms`.
    Key {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

impl ConfigError {
    fn path(&self) -> &Path {
        match self {
            ConfigError::Io { path, .. }
            | ConfigError::Parse { path, .. }
            | ConfigError::Key { path, .. } => path,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A text parsed from memory has no path; a leading ": " would look broken.
        let path = self.path();
        if !path.as_os_str().is_empty() {
            write!(f, "{}: ", path.display())?;
        }
        match self {
            ConfigError::Io { source, .. } => write!(f, "cannot read configuration: {source}"),
            ConfigError::Parse { message, .. } => {
                write!(f, "invalid TOML: {}", message.trim_end())
            }
            ConfigError::Key { key, reason, .. } => write!(f, "key `{key}`: {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        Config {
            path: PathBuf::new(),
            host: HostConfig {
                address: localhost,
                port: 7100,
                arbiter: true,
            },
            referee: RefereeConfig {
                address: localhost,
                port: 7101,
            },
            runtime_dir: PathBuf::from("/run/dipc"),
            secret_file: PathBuf::from("/etc/dipc/secret"),
            max_frame: 1_048_576,
            timeouts: Timeouts {
                connect: Duration::from_millis(2000),
                request: Duration::from_millis(10_000),
                heartbeat_interval: Duration::from_millis(1000),
                heartbeat_timeout: Duration::from_millis(5000),
            },
            allowed_hosts: vec![Cidr {
                network: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
                prefix: 8,
            }],
            root_squash: true,
            admin_group: None,
            shm: ShmConfig {
                mode: ShmMode::Page,
                quantum: Duration::from_millis(10),
            },
            library: LibraryConfig {
                spin: Duration::from_micros(SPIN_US_DEFAULT),
            },
            preload: PreloadConfig::default(),
            balance: BalanceConfig {
                enabled: false,
                interval: Duration::from_millis(5000),
                threshold_milli: 500,
                min_stay: Duration::from_millis(30_000),
            },
            metrics: MetricsConfig::default(),
            limits: Limits {
                clients_per_uid: 256,
                placeholders_per_uid: 1024,
                sessions_per_uid: 256,
                workers_per_host: 512,
                employers_per_uid: 64,
            },
        }
    }
}

impl Config {
    /// Parses and validates `text`; `path` is only used in error messages
    /// and stored in [`Config::path`].
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let table: Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let mut config = Config {
            path: path.to_path_buf(),
            ..Config::default()
        };
        let checker = Checker { path };
        checker.apply(&table, &mut config)?;
        checker.cross_check(&config)?;
        Ok(config)
    }

    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // Reported as a parse error rather than I/O: the file was read fine,
        // its content is what is wrong.
        let text = String::from_utf8(bytes).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: format!("file is not valid UTF-8 ({e})"),
        })?;
        Config::from_toml_str(&text, path)
    }

    /// Path from `$DIPC_CONFIG` if set and non-empty, else [`DEFAULT_CONFIG_PATH`].
    pub fn default_path() -> PathBuf {
        match std::env::var_os(CONFIG_ENV) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => PathBuf::from(DEFAULT_CONFIG_PATH),
        }
    }

    /// [`Config::load`] of [`Config::default_path`].
    pub fn load_default() -> Result<Config, ConfigError> {
        Config::load(&Config::default_path())
    }

    /// Whether a peer at `ip` may join the cluster at all.
    pub fn is_allowed(&self, ip: IpAddr) -> bool {
        self.allowed_hosts.iter().any(|c| c.contains(ip))
    }

    /// The TCP address this host's front end listens on.
    pub fn front_end_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host.address, self.host.port)
    }

    /// The TCP address of the cluster's referee.
    pub fn referee_addr(&self) -> SocketAddr {
        SocketAddr::new(self.referee.address, self.referee.port)
    }

    /// How long a newly started referee waits for the hosts to rejoin and
    /// claim their keys before it answers "no such key" or grants a
    /// creation (see `dipc_referee::keys`). A host whose link broke with
    /// the previous referee learns it at once (the connection closes) or
    /// within a heartbeat (a rebooted arbiter answers the next one with a
    /// reset), and retries at most [`REFEREE_RETRY_MAX`] apart, each try
    /// taking up to `connect_ms`. Bounded by half of `request_ms`, so that
    /// the gets held meanwhile are answered before their askers give up.
    pub fn referee_settle(&self) -> Duration {
        let t = &self.timeouts;
        (REFEREE_RETRY_MAX + t.connect + 2 * t.heartbeat_interval).min(t.request / 2)
    }

    /// Unix socket on which the local daemon serves applications and `dipcref`.
    pub fn back_end_socket(&self) -> PathBuf {
        self.runtime_dir.join(BACK_END_SOCKET_NAME)
    }

    /// Unix socket of the referee's administrative back door (arbiter only).
    pub fn referee_socket(&self) -> PathBuf {
        self.runtime_dir.join(REFEREE_SOCKET_NAME)
    }

    /// Unix socket of the manager of distributed segment `id` (the owner's
    /// id), on the owner host. dipcd binds it when it starts the manager.
    pub fn shm_socket(&self, id: i32) -> PathBuf {
        self.runtime_dir.join(format!("shm-{id}.sock"))
    }
}

/// Known keys per table, used both to dispatch and to list the choices when
/// a key is misspelt.
const TOP_VALUES: &[&str] = &["runtime_dir", "secret_file", "max_frame", "admin_group"];
const TOP_TABLES: &[&str] = &[
    "host", "referee", "timeouts", "cluster", "shm", "library", "limits", "preload", "balance",
    "metrics",
];
const METRICS_KEYS: &[&str] = &["listen"];
const BALANCE_KEYS: &[&str] = &["enabled", "interval_ms", "threshold", "min_stay_ms"];
/// Bounds of `balance.threshold`, in CPUs.
const THRESHOLD_MAX: f64 = 1024.0;
const PRELOAD_KEYS: &[&str] = &["keys"];
const HOST_KEYS: &[&str] = &["address", "port", "arbiter"];
const REFEREE_KEYS: &[&str] = &["address", "port"];
const TIMEOUT_KEYS: &[&str] = &[
    "connect_ms",
    "request_ms",
    "heartbeat_interval_ms",
    "heartbeat_timeout_ms",
];
const CLUSTER_KEYS: &[&str] = &["allowed_hosts", "root_squash"];
const SHM_KEYS: &[&str] = &["mode", "quantum_ms"];
const LIBRARY_KEYS: &[&str] = &["spin_us"];
const LIMITS_KEYS: &[&str] = &[
    "clients_per_uid",
    "placeholders_per_uid",
    "sessions_per_uid",
    "workers_per_host",
    "employers_per_uid",
];
/// Bound of every `limits` count (dipcd's own table of local clients holds
/// 4096).
const LIMIT_MAX: i64 = 65_536;

/// Carries the file path so that every error can name it.
struct Checker<'a> {
    path: &'a Path,
}

/// A short rendering of a bad value for error messages; whole tables or long
/// arrays would drown the message.
fn show(value: &Value) -> String {
    const LIMIT: usize = 60;
    if value.is_table() {
        return "a table".to_string();
    }
    let text = value.to_string();
    if text.chars().count() <= LIMIT {
        text
    } else {
        let mut cut: String = text.chars().take(LIMIT).collect();
        cut.push('…');
        cut
    }
}

impl Checker<'_> {
    fn err(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Key {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    fn apply(&self, top: &Table, config: &mut Config) -> Result<(), ConfigError> {
        for (name, value) in top {
            let name = name.as_str();
            match name {
                "runtime_dir" => config.runtime_dir = self.abs_path(name, value)?,
                "secret_file" => config.secret_file = self.abs_path(name, value)?,
                "max_frame" => {
                    let n = self.int(name, value, MAX_FRAME_MIN, MAX_FRAME_MAX)?;
                    config.max_frame = self.narrow(name, n)?;
                }
                "admin_group" => config.admin_group = Some(self.group_name(name, value)?),
                "host" => self.apply_host(self.table(name, value, HOST_KEYS)?, config)?,
                "referee" => self.apply_referee(self.table(name, value, REFEREE_KEYS)?, config)?,
                "timeouts" => {
                    self.apply_timeouts(self.table(name, value, TIMEOUT_KEYS)?, config)?
                }
                "cluster" => self.apply_cluster(self.table(name, value, CLUSTER_KEYS)?, config)?,
                "shm" => self.apply_shm(self.table(name, value, SHM_KEYS)?, config)?,
                "library" => self.apply_library(self.table(name, value, LIBRARY_KEYS)?, config)?,
                "limits" => self.apply_limits(self.table(name, value, LIMITS_KEYS)?, config)?,
                "preload" => self.apply_preload(self.table(name, value, PRELOAD_KEYS)?, config)?,
                "balance" => self.apply_balance(self.table(name, value, BALANCE_KEYS)?, config)?,
                "metrics" => self.apply_metrics(self.table(name, value, METRICS_KEYS)?, config)?,
                _ => {
                    let tables: Vec<String> = TOP_TABLES.iter().map(|t| format!("[{t}]")).collect();
                    return Err(self.err(
                        name,
                        format!(
                            "unknown key (known top-level keys: {}; tables: {})",
                            TOP_VALUES.join(", "),
                            tables.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn apply_host(&self, t: &Table, config: &mut Config) -> Result<(), ConfigError> {
        for (name, value) in t {
            let key = format!("host.{name}");
            match name.as_str() {
                "address" => config.host.address = self.ip(&key, value)?,
                "port" => config.host.port = self.port(&key, value)?,
                "arbiter" => config.host.arbiter = self.boolean(&key, value)?,
                _ => return Err(self.unknown(&key, "host", HOST_KEYS)),
            }
        }
        Ok(())
    }

    fn apply_referee(&self, t: &Table, config: &mut Config) -> Result<(), ConfigError> {
        for (name, value) in t {
            let key = format!("referee.{name}");
            match name.as_str() {
                "address" => config.referee.address = self.ip(&key, value)?,
                "port" => config.referee.port = self.port(&key, value)?,
                _ => return Err(self.unknown(&key, "referee", REFEREE_KEYS)),
            }
        }
        Ok(())
    }

    fn apply_timeouts(&self, t: &Table, config: &mut Config) -> Result<(), ConfigError> {
        for (name, value) in t {
            let key = format!("timeouts.{name}");
            let slot = match name.as_str() {
                "connect_ms" => &mut config.timeouts.connect,
                "request_ms" => &mut config.timeouts.request,
                "heartbeat_interval_ms" => &mut config.timeouts.heartbeat_interval,
                "heartbeat_timeout_ms" => &mut config.timeouts.heartbeat_timeout,
                _ => return Err(self.unknown(&key, "timeouts", TIMEOUT_KEYS)),
            };
            *slot = self.millis(&key, value, TIMEOUT_MS_MIN, TIMEOUT_MS_MAX)?;
        }
        Ok(())
    }

    fn apply_cluster(&self, t: &Table, config: &mut Config) -> Result<(), ConfigError> {
        for (name, value) in t {
            let key = format!("cluster.{name}");
            match name.as_str() {
                "allowed_hosts" => config.allowed_hosts = self.cidr_list(&key, value)?,
                "root_squash" => config.root_squash = self.boolean(&key, value)?,
                _ => return Err(self.unknown(&key, "cluster", CLUSTER_KEYS)),
            }
        }
        Ok(())
    }

    fn apply_shm(&self, t: &Table, config: &mut Config) -> Result<(), ConfigError> {
        for (name, value) in t {
            let key = format!("shm.{name}");
            match name.as_str() {
                "mode" => {
                    config.shm.mode = match value.as_str() {
                        Some("page") => ShmMode::Page,
                        Some("segment") => ShmMode::Segment,
                        _ => {
                            return Err(self.err(
                                &key,
                                format!("must be \"page\" or \"segment\", got {}", show(value)),
                            ))
                        }
                    }
                }
                "quantum_ms" => {
                    config.shm.quantum = self.millis(&key, value, QUANTUM_MS_MIN, QUANTUM_MS_MAX)?
                }
                _ => return Err(self.unknown(&key, "shm", SHM_KEYS)),
            }
        }
        Ok(())
    }

    fn apply_metrics(&self, t: &Table, config: &mut Config) -> Result<(), ConfigError> {
        for (name, value) in t {
            let key = format!("metrics.{name}");
            match name.as_str() {
                "listen" => {
                    let what = "an IP address and port such as \"127.0.0.1:9477\"";
                    let s = self.non_empty_str(&key, value, what)?;
                    let addr: SocketAddr = s.parse().map_err(|_| {
                        self.err(&key, format!("must be {what}, got {}", show(value)))
                    })?;
                    if addr.port() == 0 {
                        return Err(self.err(&key, "needs a port other than 0"));
                    }
                    config.metrics.listen = Some(addr);
                }
                _ => return Err(self.unknown(&key, "metrics", METRICS_KEYS)),
            }
        }
        Ok(())
    }

    fn apply_library(&self, t: &Table, config: &mut Config) -> Result<(), ConfigError> {
        for (name, value) in t {
            let key = format!("library.{name}");
            match name.as_str() {
                "spin_us" => {
                    let us = self.int(&key, value, 0, SPIN_US_MAX)?;
                    config.library.spin = Duration::from_micros(us.unsigned_abs());
                }
                _ => return Err(self.unknown(&key, "library", LIBRARY_KEYS)),
            }
        }
        Ok(())
    }

    fn apply_preload(&self, t: &Table, config: &mut Config) -> Result<(), ConfigError> {
        for (name, value) in t {
            let key = format!("preload.{name}");
            match name.as_str() {
                "keys" => {
                    let what =
                        "an array of keys such as [\"0x1000-0x1fff\", \"0x5a5a\"] or [\"all\"]";
                    let items = value.as_array().ok_or_else(|| {
                        self.err(&key, format!("must be {what}, got {}", show(value)))
                    })?;
                    if items.len() > keypolicy::MAX_ENTRIES {
                        return Err(self.err(
                            &key,
                            format!("more than {} entries", keypolicy::MAX_ENTRIES),
                        ));
                    }
                    let mut entries = Vec::with_capacity(items.len());
                    for (i, item) in items.iter().enumerate() {
                        let s = item.as_str().ok_or_else(|| {
                            self.err(
                                &key,
                                format!("entry {i} must be a string, got {}", show(item)),
                            )
                        })?;
                        entries.push(s);
                    }
                    config.preload.keys =
                        KeyPolicy::parse(entries).map_err(|e| self.err(&key, e))?;
                }
                _ => return Err(self.unknown(&key, "preload", PRELOAD_KEYS)),
            }
        }
        Ok(())
    }

    fn apply_limits(&self, t: &Table, config: &mut Config) -> Result<(), ConfigError> {
        for (name, value) in t {
            let key = format!("limits.{name}");
            match name.as_str() {
                "clients_per_uid" => {
                    let n = self.int(&key, value, 1, LIMIT_MAX)?;
                    config.limits.clients_per_uid = self.narrow(&key, n)?;
                }
                "placeholders_per_uid" => {
                    let n = self.int(&key, value, 1, LIMIT_MAX)?;
                    config.limits.placeholders_per_uid = self.narrow(&key, n)?;
                }
                "sessions_per_uid" => {
                    let n = self.int(&key, value, 1, LIMIT_MAX)?;
                    config.limits.sessions_per_uid = self.narrow(&key, n)?;
                }
                "workers_per_host" => {
                    let n = self.int(&key, value, 1, LIMIT_MAX)?;
                    config.limits.workers_per_host = self.narrow(&key, n)?;
                }
                "employers_per_uid" => {
                    let n = self.int(&key, value, 1, LIMIT_MAX)?;
                    config.limits.employers_per_uid = self.narrow(&key, n)?;
                }
                _ => return Err(self.unknown(&key, "limits", LIMITS_KEYS)),
            }
        }
        Ok(())
    }

    fn apply_balance(&self, t: &Table, config: &mut Config) -> Result<(), ConfigError> {
        for (name, value) in t {
            let key = format!("balance.{name}");
            match name.as_str() {
                "enabled" => config.balance.enabled = self.boolean(&key, value)?,
                "interval_ms" => {
                    config.balance.interval = self.millis(&key, value, 100, TIMEOUT_MS_MAX)?
                }
                "min_stay_ms" => {
                    config.balance.min_stay = self.millis(&key, value, 0, TIMEOUT_MS_MAX)?
                }
                "threshold" => {
                    let cpus = match value {
                        Value::Float(f) => Some(*f),
                        Value::Integer(n) => Some(*n as f64),
                        _ => None,
                    };
                    match cpus {
                        Some(c) if (0.0..=THRESHOLD_MAX).contains(&c) => {
                            config.balance.threshold_milli = (c * 1000.0).round() as u32
                        }
                        _ => {
                            return Err(self.err(
                                &key,
                                format!(
                                "must be a number of CPUs between 0 and {THRESHOLD_MAX}, got {}",
                                show(value)
                            ),
                            ))
                        }
                    }
                }
                _ => return Err(self.unknown(&key, "balance", BALANCE_KEYS)),
            }
        }
        Ok(())
    }

    /// Rules that involve more than one key; run after every key has its
    /// final value so that defaults take part too.
    fn cross_check(&self, c: &Config) -> Result<(), ConfigError> {
        if c.timeouts.heartbeat_timeout <= c.timeouts.heartbeat_interval {
            return Err(self.err(
                "timeouts.heartbeat_timeout_ms",
                format!(
                    "must be greater than timeouts.heartbeat_interval_ms ({}), or every host \
                     would be declared down between two heartbeats; got {}",
                    c.timeouts.heartbeat_interval.as_millis(),
                    c.timeouts.heartbeat_timeout.as_millis()
                ),
            ));
        }
        if c.host.arbiter && c.referee.address != c.host.address {
            return Err(self.err(
                "referee.address",
                format!(
                    "must equal host.address ({}) because host.arbiter is true: the arbiter host \
                     runs the referee on its own address; got \"{}\"",
                    c.host.address, c.referee.address
                ),
            ));
        }
        if c.referee.address == c.host.address && c.referee.port == c.host.port {
            return Err(self.err(
                "referee.port",
                format!(
                    "must differ from host.port ({}) because the referee and this host's front \
                     end share the address {}; got {}",
                    c.host.port, c.host.address, c.referee.port
                ),
            ));
        }
        Ok(())
    }

    fn unknown(&self, key: &str, table: &str, known: &[&str]) -> ConfigError {
        self.err(
            key,
            format!(
                "unknown key (known keys in [{table}]: {})",
                known.join(", ")
            ),
        )
    }

    fn table<'v>(
        &self,
        key: &str,
        value: &'v Value,
        known: &[&str],
    ) -> Result<&'v Table, ConfigError> {
        value.as_table().ok_or_else(|| {
            self.err(
                key,
                format!(
                    "must be a table [{key}] (with keys {}), got {}",
                    known.join(", "),
                    show(value)
                ),
            )
        })
    }

    fn int(&self, key: &str, value: &Value, min: i64, max: i64) -> Result<i64, ConfigError> {
        match value.as_integer() {
            Some(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(self.err(
                key,
                format!(
                    "must be an integer between {min} and {max}, got {}",
                    show(value)
                ),
            )),
        }
    }

    /// Converts an already range-checked integer; the error path only exists
    /// so that a wrong range constant can never panic.
    fn narrow<T: TryFrom<i64>>(&self, key: &str, n: i64) -> Result<T, ConfigError> {
        T::try_from(n).map_err(|_| self.err(key, format!("value {n} does not fit")))
    }

    fn port(&self, key: &str, value: &Value) -> Result<u16, ConfigError> {
        let n = self.int(key, value, PORT_MIN, PORT_MAX)?;
        self.narrow(key, n)
    }

    fn millis(
        &self,
        key: &str,
        value: &Value,
        min: i64,
        max: i64,
    ) -> Result<Duration, ConfigError> {
        let n: u64 = self.narrow(key, self.int(key, value, min, max)?)?;
        Ok(Duration::from_millis(n))
    }

    fn boolean(&self, key: &str, value: &Value) -> Result<bool, ConfigError> {
        value
            .as_bool()
            .ok_or_else(|| self.err(key, format!("must be true or false, got {}", show(value))))
    }

    fn non_empty_str<'v>(
        &self,
        key: &str,
        value: &'v Value,
        what: &str,
    ) -> Result<&'v str, ConfigError> {
        match value.as_str() {
            Some("") => Err(self.err(key, format!("must be {what}, got an empty string"))),
            Some(s) => Ok(s),
            None => Err(self.err(key, format!("must be {what}, got {}", show(value)))),
        }
    }

    fn abs_path(&self, key: &str, value: &Value) -> Result<PathBuf, ConfigError> {
        let what = "an absolute path (a string starting with /)";
        let s = self.non_empty_str(key, value, what)?;
        let p = PathBuf::from(s);
        // Daemons change directory and applications start anywhere, so a
        // relative path would name a different file in each process.
        if !p.is_absolute() {
            return Err(self.err(key, format!("must be {what}, got {}", show(value))));
        }
        if s.contains('\0') {
            return Err(self.err(
                key,
                format!("must not contain a NUL byte, got {}", show(value)),
            ));
        }
        Ok(p)
    }

    fn group_name(&self, key: &str, value: &Value) -> Result<String, ConfigError> {
        let s = self.non_empty_str(key, value, "a group name")?;
        // These characters cannot occur in a name from /etc/group, so their
        // presence is certainly a mistake even without looking the group up.
        if s.chars()
            .any(|c| c == ':' || c.is_whitespace() || c.is_control())
        {
            return Err(self.err(
                key,
                format!(
                    "must be a group name without ':', spaces or control characters, got {}",
                    show(value)
                ),
            ));
        }
        Ok(s.to_string())
    }

    fn ip(&self, key: &str, value: &Value) -> Result<IpAddr, ConfigError> {
        let what =
            "an IP address such as \"192.168.1.10\" or \"fd00::1\" (host names are not accepted)";
        let s = self.non_empty_str(key, value, what)?;
        let ip: IpAddr = s
            .parse()
            .map_err(|_| self.err(key, format!("must be {what}, got {}", show(value))))?;
        // The address is how other hosts reach this one (and how the referee
        // identifies it), so a wildcard or group address cannot work.
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(self.err(
                key,
                format!(
                    "must be a unicast address that other hosts can connect to, got {}",
                    show(value)
                ),
            ));
        }
        Ok(ip)
    }

    fn cidr_list(&self, key: &str, value: &Value) -> Result<Vec<Cidr>, ConfigError> {
        let what = "a non-empty array of address ranges such as [\"10.0.0.0/8\", \"::1\"]";
        let items = value
            .as_array()
            .ok_or_else(|| self.err(key, format!("must be {what}, got {}", show(value))))?;
        if items.is_empty() {
            // An empty list would refuse every peer, the local host included.
            return Err(self.err(key, format!("must be {what}, got []")));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let s = item.as_str().ok_or_else(|| {
                    self.err(
                        key,
                        format!(
                            "entry {i} must be a string such as \"10.0.0.0/8\", got {}",
                            show(item)
                        ),
                    )
                })?;
                s.parse::<Cidr>()
                    .map_err(|e| self.err(key, format!("entry {i}: {e}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
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
        Checker {
            path: Path::new(""),
        }
        .cross_check(&d)
        .unwrap();
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
        let c = parse(include_str!("../../dipc.conf")).unwrap();
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
}
