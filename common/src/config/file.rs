//! The layout of `dipc.conf` as serde sees it, and the translation of
//! serde's errors into ones that name the key.
//!
//! The sections are the public types of `mod.rs` themselves (their fields
//! carry the `#[serde]` attributes); only what the file arranges
//! differently from [`Config`] lives here: the top level and `[cluster]`.

use super::{
    de, BalanceConfig, Cidr, Config, ConfigError, HostConfig, LibraryConfig, Limits, MetricsConfig,
    PreloadConfig, RefereeConfig, ShmConfig, Timeouts,
};
use serde::Deserialize;
use serde_path_to_error::Segment;
use std::path::{Path, PathBuf};
use toml::{Table, Value};

/// The whole file. Every key is optional: a missing one keeps its value
/// from [`Config::default`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct File {
    #[serde(deserialize_with = "de::abs_path")]
    runtime_dir: PathBuf,
    #[serde(deserialize_with = "de::abs_path")]
    secret_file: PathBuf,
    #[serde(deserialize_with = "de::max_frame")]
    max_frame: u32,
    #[serde(deserialize_with = "de::group_name")]
    admin_group: Option<String>,
    #[serde(deserialize_with = "de::section")]
    host: HostConfig,
    #[serde(deserialize_with = "de::section")]
    referee: RefereeConfig,
    #[serde(deserialize_with = "de::section")]
    timeouts: Timeouts,
    #[serde(deserialize_with = "de::section")]
    cluster: Cluster,
    #[serde(deserialize_with = "de::section")]
    shm: ShmConfig,
    #[serde(deserialize_with = "de::section")]
    library: LibraryConfig,
    #[serde(deserialize_with = "de::section")]
    limits: Limits,
    #[serde(deserialize_with = "de::section")]
    preload: PreloadConfig,
    #[serde(deserialize_with = "de::section")]
    balance: BalanceConfig,
    #[serde(deserialize_with = "de::section")]
    metrics: MetricsConfig,
}

/// `[cluster]`: who may join, and what a remote root may do.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table [cluster]")]
struct Cluster {
    #[serde(deserialize_with = "de::cidr_list")]
    allowed_hosts: Vec<Cidr>,
    #[serde(deserialize_with = "de::boolean")]
    root_squash: bool,
}

impl Default for File {
    fn default() -> File {
        let c = Config::default();
        File {
            runtime_dir: c.runtime_dir,
            secret_file: c.secret_file,
            max_frame: c.max_frame,
            admin_group: c.admin_group,
            host: c.host,
            referee: c.referee,
            timeouts: c.timeouts,
            cluster: Cluster {
                allowed_hosts: c.allowed_hosts,
                root_squash: c.root_squash,
            },
            shm: c.shm,
            library: c.library,
            limits: c.limits,
            preload: c.preload,
            balance: c.balance,
            metrics: c.metrics,
        }
    }
}

impl Default for Cluster {
    fn default() -> Cluster {
        File::default().cluster
    }
}

impl File {
    fn into_config(self, path: &Path) -> Config {
        Config {
            path: path.to_path_buf(),
            host: self.host,
            referee: self.referee,
            runtime_dir: self.runtime_dir,
            secret_file: self.secret_file,
            max_frame: self.max_frame,
            timeouts: self.timeouts,
            allowed_hosts: self.cluster.allowed_hosts,
            root_squash: self.cluster.root_squash,
            admin_group: self.admin_group,
            shm: self.shm,
            library: self.library,
            limits: self.limits,
            preload: self.preload,
            balance: self.balance,
            metrics: self.metrics,
        }
    }
}

/// Decodes and checks the parsed file; `path` is only named in errors and
/// stored in [`Config::path`].
pub(super) fn decode(table: Table, path: &Path) -> Result<Config, ConfigError> {
    let err = |key: String, reason: String| ConfigError::Key {
        path: path.to_path_buf(),
        key,
        reason,
    };
    // Kept to show the offending value in the errors serde words itself.
    let original = table.clone();
    let file: File = serde_path_to_error::deserialize(table).map_err(|e| {
        let keys: Vec<String> = e
            .path()
            .iter()
            .map(|segment| match segment {
                Segment::Map { key } => key.clone(),
                other => other.to_string(),
            })
            .collect();
        let reason = reword(e.inner().message(), &keys, &original);
        err(keys.join("."), reason)
    })?;
    let config = file.into_config(path);
    cross_check(&config).map_err(|(key, reason)| err(key.to_string(), reason))?;
    Ok(config)
}

/// Our decoders in `de.rs` word their own messages; this rewords the two
/// that serde's derived code raises: an unknown key and a value where a
/// table belongs.
fn reword(message: &str, keys: &[String], original: &Table) -> String {
    let Some(name) = keys.last() else {
        return message.to_string();
    };
    if let Some(rest) = message.strip_prefix(&format!("unknown field `{name}`, ")) {
        // serde lists the fields as "expected `a`" or "expected one of `a`, `b`".
        let known: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
        let known = known.join(", ");
        return match &keys[..keys.len() - 1] {
            [] => format!("unknown key (known top-level keys and tables: {known})"),
            parent => format!(
                "unknown key (known keys in [{}]: {known})",
                parent.join(".")
            ),
        };
    }
    if let (Some(rest), Some(value)) = (
        message.strip_prefix("invalid type: "),
        lookup(original, keys),
    ) {
        if let Some((_, expected)) = rest.split_once(", expected ") {
            return format!("must be {expected}, got {}", de::show(value));
        }
    }
    message.to_string()
}

fn lookup<'t>(table: &'t Table, keys: &[String]) -> Option<&'t Value> {
    let (first, rest) = keys.split_first()?;
    let mut value = table.get(first)?;
    for key in rest {
        value = value.as_table()?.get(key)?;
    }
    Some(value)
}

/// Rules that involve more than one key; run after every key has its final
/// value so that defaults take part too. Returns the key to blame and why.
pub(super) fn cross_check(c: &Config) -> Result<(), (&'static str, String)> {
    if c.timeouts.heartbeat_timeout <= c.timeouts.heartbeat_interval {
        return Err((
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
        return Err((
            "referee.address",
            format!(
                "must equal host.address ({}) because host.arbiter is true: the arbiter host \
                 runs the referee on its own address; got \"{}\"",
                c.host.address, c.referee.address
            ),
        ));
    }
    if c.referee.address == c.host.address && c.referee.port == c.host.port {
        return Err((
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
