//! Reading and validating `dipc.conf`, the one configuration file shared by
//! every dipc process on a host.
//!
//! The daemons read it at start-up and applications read it to find their
//! host's daemon, so a mistake must be reported once, clearly, and before
//! anything binds a socket: every error names the dotted key (for example
//! `timeouts.connect_ms`), says what was expected and shows the bad value.
//!
//! The file is parsed as TOML, then decoded with serde into the section
//! types below (`file.rs` holds the layout, `de.rs` the checks of single
//! values, `cidr.rs` the address ranges), then checked for the rules that
//! involve several keys. Unknown keys are refused. Every key is optional; a
//! missing key takes the value of [`Config::default`], so an empty file is a
//! working single-host cluster on 127.0.0.1.

mod cidr;
mod de;
mod file;
#[cfg(test)]
mod tests;

pub use cidr::Cidr;

use crate::keypolicy::{self, KeyPolicy};
use serde::Deserialize;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the daemons and applications look when nothing else is said.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/dipc/dipc.conf";

/// Environment variable that overrides [`DEFAULT_CONFIG_PATH`], so that
/// several simulated hosts can share one machine with different files.
pub const CONFIG_ENV: &str = "DIPC_CONFIG";

const BACK_END_SOCKET_NAME: &str = "dipcd.sock";
const REFEREE_SOCKET_NAME: &str = "referee.sock";

/// Bounds of `library.spin_us`, also used for `$DIPC_SPIN_US`.
pub const SPIN_US_MAX: i64 = 10_000;
const SPIN_US_DEFAULT: u64 = 100;

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

/// `[metrics]`: where dipcd serves its counters over HTTP (`GET /metrics`,
/// Prometheus text format); off unless `listen` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table [metrics]")]
pub struct MetricsConfig {
    #[serde(deserialize_with = "de::metrics_listen")]
    pub listen: Option<SocketAddr>,
}

/// `[balance]`: the referee's load balancer, off by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table [balance]")]
pub struct BalanceConfig {
    #[serde(deserialize_with = "de::boolean")]
    pub enabled: bool,
    /// How often it measures each host's load (over this window) and
    /// decides.
    #[serde(rename = "interval_ms", deserialize_with = "de::balance_interval_ms")]
    pub interval: Duration,
    /// The least difference, in thousandths of a CPU, between the busiest
    /// and the least busy host's load that makes it move a process.
    #[serde(rename = "threshold", deserialize_with = "de::threshold")]
    pub threshold_milli: u32,
    /// The least time a process runs on a host before the balancer moves
    /// it (again).
    #[serde(rename = "min_stay_ms", deserialize_with = "de::min_stay_ms")]
    pub min_stay: Duration,
}

/// `[preload]`: what `libdipc_preload.so` does for programs that do not
/// know about dipc.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table [preload]")]
pub struct PreloadConfig {
    /// `keys`: see [`crate::keypolicy`].
    #[serde(deserialize_with = "de::preload_keys")]
    pub keys: KeyPolicy,
}

/// What one user may hold of a host's daemons, so that no user can take
/// the service away from the others (root is not limited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table [limits]")]
pub struct Limits {
    /// Connections one uid may hold open to this host's dipcd
    /// (`dipcd.sock`): an application process holds one or two.
    #[serde(deserialize_with = "de::limit")]
    pub clients_per_uid: usize,
    /// Placeholders (local structures standing for other hosts') the gets
    /// of one uid may make on this host: each takes a slot of the host's
    /// `msgmni`, `semmni` or `shmmni`.
    #[serde(deserialize_with = "de::limit")]
    pub placeholders_per_uid: usize,
    /// Sessions (workers) one uid may hold open on this host, from all
    /// hosts together.
    #[serde(deserialize_with = "de::limit")]
    pub sessions_per_uid: usize,
    /// Sessions (workers) one peer host may hold open on this host.
    #[serde(deserialize_with = "de::limit")]
    pub workers_per_host: usize,
    /// Sessions one uid may have being opened from this host at once
    /// (each is an employer process until it is open).
    #[serde(deserialize_with = "de::limit")]
    pub employers_per_uid: usize,
}

/// This host's identity in the cluster: where its front end listens.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table [host]")]
pub struct HostConfig {
    #[serde(deserialize_with = "de::ip")]
    pub address: IpAddr,
    #[serde(deserialize_with = "de::port")]
    pub port: u16,
    /// Whether this host runs the referee.
    #[serde(deserialize_with = "de::boolean")]
    pub arbiter: bool,
}

/// Where every host finds the cluster's single referee.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table [referee]")]
pub struct RefereeConfig {
    #[serde(deserialize_with = "de::ip")]
    pub address: IpAddr,
    #[serde(deserialize_with = "de::port")]
    pub port: u16,
}

/// Longest pause between two attempts of a host to reach the referee: a
/// restarted referee must see every host again within its settle period
/// ([`Config::referee_settle`]).
pub const REFEREE_RETRY_MAX: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table [timeouts]")]
pub struct Timeouts {
    #[serde(rename = "connect_ms", deserialize_with = "de::timeout_ms")]
    pub connect: Duration,
    #[serde(rename = "request_ms", deserialize_with = "de::timeout_ms")]
    pub request: Duration,
    #[serde(rename = "heartbeat_interval_ms", deserialize_with = "de::timeout_ms")]
    pub heartbeat_interval: Duration,
    #[serde(rename = "heartbeat_timeout_ms", deserialize_with = "de::timeout_ms")]
    pub heartbeat_timeout: Duration,
}

/// Granularity at which distributed shared memory moves between hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShmMode {
    Page,
    Segment,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table [shm]")]
pub struct ShmConfig {
    #[serde(deserialize_with = "de::shm_mode")]
    pub mode: ShmMode,
    /// Minimum time a host keeps a shared-memory right before losing it.
    #[serde(rename = "quantum_ms", deserialize_with = "de::quantum_ms")]
    pub quantum: Duration,
}

/// How the application library waits for a reply from another host.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table [library]")]
pub struct LibraryConfig {
    /// Longest time a call on another host's structure checks for the reply
    /// without sleeping, before it sleeps until the reply comes (0: sleep
    /// at once). The library adapts the time it actually spins below this
    /// bound to how fast replies have been coming.
    #[serde(rename = "spin_us", deserialize_with = "de::spin_us")]
    pub spin: Duration,
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
        Config {
            path: PathBuf::new(),
            host: HostConfig::default(),
            referee: RefereeConfig::default(),
            runtime_dir: PathBuf::from("/run/dipc"),
            secret_file: PathBuf::from("/etc/dipc/secret"),
            max_frame: 1_048_576,
            timeouts: Timeouts::default(),
            allowed_hosts: vec![Cidr::LOOPBACK_V4],
            root_squash: true,
            admin_group: None,
            shm: ShmConfig::default(),
            library: LibraryConfig::default(),
            preload: PreloadConfig::default(),
            balance: BalanceConfig::default(),
            metrics: MetricsConfig::default(),
            limits: Limits::default(),
        }
    }
}

// The defaults of each section, which a partial section keeps for the keys
// it leaves out.

impl Default for HostConfig {
    fn default() -> HostConfig {
        HostConfig {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 7100,
            arbiter: true,
        }
    }
}

impl Default for RefereeConfig {
    fn default() -> RefereeConfig {
        RefereeConfig {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 7101,
        }
    }
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_millis(2000),
            request: Duration::from_millis(10_000),
            heartbeat_interval: Duration::from_millis(1000),
            heartbeat_timeout: Duration::from_millis(5000),
        }
    }
}

impl Default for ShmConfig {
    fn default() -> ShmConfig {
        ShmConfig {
            mode: ShmMode::Page,
            quantum: Duration::from_millis(10),
        }
    }
}

impl Default for LibraryConfig {
    fn default() -> LibraryConfig {
        LibraryConfig {
            spin: Duration::from_micros(SPIN_US_DEFAULT),
        }
    }
}

impl Default for BalanceConfig {
    fn default() -> BalanceConfig {
        BalanceConfig {
            enabled: false,
            interval: Duration::from_millis(5000),
            threshold_milli: 500,
            min_stay: Duration::from_millis(30_000),
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            clients_per_uid: 256,
            placeholders_per_uid: 1024,
            sessions_per_uid: 256,
            workers_per_host: 512,
            employers_per_uid: 64,
        }
    }
}

impl Config {
    /// Parses and validates `text`; `path` is only used in error messages
    /// and stored in [`Config::path`].
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
        // Parsed apart from decoding so that a syntax error (with toml's line
        // and column) stays distinct from a bad key.
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        file::decode(table, path)
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
