//! Decoders of single values, named in `#[serde(deserialize_with)]`.
//!
//! Each takes the raw TOML value and checks it itself rather than letting
//! serde coerce it, so that the message says what the key accepts and shows
//! the value that was given (serde's own would say "invalid type: string,
//! expected u16"). The key is added by the caller (see `file.rs`).

use super::{keypolicy, Cidr, KeyPolicy, ShmMode};
use serde::de::{Deserialize, Deserializer, Error, MapAccess, Visitor};
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;
use toml::Value;

const PORT_MIN: i64 = 1;
const PORT_MAX: i64 = 65_535;
const MAX_FRAME_MIN: i64 = 4096;
const MAX_FRAME_MAX: i64 = 64 * 1024 * 1024;
const TIMEOUT_MS_MIN: i64 = 1;
const TIMEOUT_MS_MAX: i64 = 3_600_000;
const QUANTUM_MS_MAX: i64 = 60_000;
const BALANCE_INTERVAL_MS_MIN: i64 = 100;
/// Bounds of `balance.threshold`, in CPUs.
const THRESHOLD_MAX: f64 = 1024.0;
/// Bound of every `limits` count (dipcd's own table of local clients holds
/// 4096).
const LIMIT_MAX: i64 = 65_536;

type Res<'de, D, T> = Result<T, <D as Deserializer<'de>>::Error>;

/// A short rendering of a bad value for error messages; whole tables or long
/// arrays would drown the message.
pub(super) fn show(value: &Value) -> String {
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

/// Decodes one value with `check`, whose error becomes the key's message.
fn value<'de, D, T>(d: D, check: impl FnOnce(&Value) -> Result<T, String>) -> Res<'de, D, T>
where
    D: Deserializer<'de>,
{
    let value = Value::deserialize(d)?;
    check(&value).map_err(D::Error::custom)
}

fn expected(what: &str, value: &Value) -> String {
    format!("must be {what}, got {}", show(value))
}

fn int<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D, min: i64, max: i64) -> Res<'de, D, T> {
    value(d, |v| match v.as_integer() {
        // The error path only exists so that a wrong range constant can
        // never panic.
        Some(n) if (min..=max).contains(&n) => {
            T::try_from(n).map_err(|_| format!("value {n} does not fit"))
        }
        _ => Err(expected(&format!("an integer between {min} and {max}"), v)),
    })
}

fn millis<'de, D: Deserializer<'de>>(d: D, min: i64, max: i64) -> Res<'de, D, Duration> {
    int(d, min, max).map(Duration::from_millis)
}

pub(super) fn port<'de, D: Deserializer<'de>>(d: D) -> Res<'de, D, u16> {
    int(d, PORT_MIN, PORT_MAX)
}

pub(super) fn max_frame<'de, D: Deserializer<'de>>(d: D) -> Res<'de, D, u32> {
    int(d, MAX_FRAME_MIN, MAX_FRAME_MAX)
}

pub(super) fn timeout_ms<'de, D: Deserializer<'de>>(d: D) -> Res<'de, D, Duration> {
    millis(d, TIMEOUT_MS_MIN, TIMEOUT_MS_MAX)
}

pub(super) fn quantum_ms<'de, D: Deserializer<'de>>(d: D) -> Res<'de, D, Duration> {
    millis(d, 0, QUANTUM_MS_MAX)
}

pub(super) fn balance_interval_ms<'de, D: Deserializer<'de>>(d: D) -> Res<'de, D, Duration> {
    millis(d, BALANCE_INTERVAL_MS_MIN, TIMEOUT_MS_MAX)
}

pub(super) fn min_stay_ms<'de, D: Deserializer<'de>>(d: D) -> Res<'de, D, Duration> {
    millis(d, 0, TIMEOUT_MS_MAX)
}

pub(super) fn metrics_listen<'de, D: Deserializer<'de>>(
    d: D,
) -> Res<'de, D, Option<std::net::SocketAddr>> {
    value(d, |v| {
        let what = "an IP address and port such as \"127.0.0.1:9477\"";
        let addr: std::net::SocketAddr = non_empty_str(v, what)?
            .parse()
            .map_err(|_| expected(what, v))?;
        if addr.port() == 0 {
            return Err("needs a port other than 0".into());
        }
        Ok(Some(addr))
    })
}

pub(super) fn spin_us<'de, D: Deserializer<'de>>(d: D) -> Res<'de, D, Duration> {
    int(d, 0, super::SPIN_US_MAX).map(Duration::from_micros)
}

pub(super) fn limit<'de, D: Deserializer<'de>>(d: D) -> Res<'de, D, usize> {
    int(d, 1, LIMIT_MAX)
}

pub(super) fn boolean<'de, D: Deserializer<'de>>(d: D) -> Res<'de, D, bool> {
    value(d, |v| {
        v.as_bool().ok_or_else(|| expected("true or false", v))
    })
}

fn non_empty_str<'v>(v: &'v Value, what: &str) -> Result<&'v str, String> {
    match v.as_str() {
        Some("") => Err(format!("must be {what}, got an empty string")),
        Some(s) => Ok(s),
        None => Err(expected(what, v)),
    }
}

pub(super) fn abs_path<'de, D: Deserializer<'de>>(d: D) -> Res<'de, D, PathBuf> {
    value(d, |v| {
        let what = "an absolute path (a string starting with /)";
        let path = PathBuf::from(non_empty_str(v, what)?);
        // Daemons change directory and applications start anywhere, so a
        // relative path would name a different file in each process.
        if !path.is_absolute() {
            return Err(expected(what, v));
        }
        if path.as_os_str().as_encoded_bytes().contains(&0) {
            return Err(format!("must not contain a NUL byte, got {}", show(v)));
        }
        Ok(path)
    })
}

pub(super) fn group_name<'de, D: Deserializer<'de>>(d: D) -> Res<'de, D, Option<String>> {
    value(d, |v| {
        let s = non_empty_str(v, "a group name")?;
        // These characters cannot occur in a name from /etc/group, so their
        // presence is certainly a mistake even without looking the group up.
        if s.chars()
            .any(|c| c == ':' || c.is_whitespace() || c.is_control())
        {
            return Err(expected(
                "a group name without ':', spaces or control characters",
                v,
            ));
        }
        Ok(Some(s.to_string()))
    })
}

pub(super) fn ip<'de, D: Deserializer<'de>>(d: D) -> Res<'de, D, IpAddr> {
    value(d, |v| {
        let what =
            "an IP address such as \"192.168.1.10\" or \"fd00::1\" (host names are not accepted)";
        let ip: IpAddr = non_empty_str(v, what)?
            .parse()
            .map_err(|_| expected(what, v))?;
        // The address is how other hosts reach this one (and how the referee
        // identifies it), so a wildcard or group address cannot work.
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(expected(
                "a unicast address that other hosts can connect to",
                v,
            ));
        }
        Ok(ip)
    })
}

pub(super) fn cidr_list<'de, D: Deserializer<'de>>(d: D) -> Res<'de, D, Vec<Cidr>> {
    value(d, |v| {
        let what = "a non-empty array of address ranges such as [\"10.0.0.0/8\", \"::1\"]";
        let items = v.as_array().ok_or_else(|| expected(what, v))?;
        if items.is_empty() {
            // An empty list would refuse every peer, the local host included.
            return Err(expected(what, v));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let s = item.as_str().ok_or_else(|| {
                    format!(
                        "entry {i} must be a string such as \"10.0.0.0/8\", got {}",
                        show(item)
                    )
                })?;
                s.parse::<Cidr>().map_err(|e| format!("entry {i}: {e}"))
            })
            .collect()
    })
}

pub(super) fn shm_mode<'de, D: Deserializer<'de>>(d: D) -> Res<'de, D, ShmMode> {
    value(d, |v| match v.as_str() {
        Some("page") => Ok(ShmMode::Page),
        Some("segment") => Ok(ShmMode::Segment),
        _ => Err(expected("\"page\" or \"segment\"", v)),
    })
}

pub(super) fn preload_keys<'de, D: Deserializer<'de>>(d: D) -> Res<'de, D, KeyPolicy> {
    value(d, |v| {
        let what = "an array of keys such as [\"0x1000-0x1fff\", \"0x5a5a\"] or [\"all\"]";
        let items = v.as_array().ok_or_else(|| expected(what, v))?;
        if items.len() > keypolicy::MAX_ENTRIES {
            return Err(format!("more than {} entries", keypolicy::MAX_ENTRIES));
        }
        let entries = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_str()
                    .ok_or_else(|| format!("entry {i} must be a string, got {}", show(item)))
            })
            .collect::<Result<Vec<&str>, String>>()?;
        KeyPolicy::parse(entries)
    })
}

/// `balance.threshold`, a number of CPUs, kept in thousandths.
pub(super) fn threshold<'de, D: Deserializer<'de>>(d: D) -> Res<'de, D, u32> {
    value(d, |v| {
        let cpus = match v {
            Value::Float(f) => *f,
            Value::Integer(n) => *n as f64,
            _ => f64::NAN,
        };
        // In range, the product fits a u32 (and NaN is never in range).
        if (0.0..=THRESHOLD_MAX).contains(&cpus) {
            Ok((cpus * 1000.0).round() as u32)
        } else {
            Err(expected(
                &format!("a number of CPUs between 0 and {THRESHOLD_MAX}"),
                v,
            ))
        }
    })
}

/// A section (`[host]` ...): a table, and nothing else. serde's derived
/// structs also take an array, field by field in order, which would read
/// `timeouts = [1, 2]` as a connect and a request time-out.
pub(super) fn section<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Res<'de, D, T> {
    T::deserialize(TableOnly(d))
}

struct TableOnly<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for TableOnly<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(MapVisitor(visitor, &[]))
    }

    /// What a derived struct asks for; `fields` lets the error list its keys.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(MapVisitor(visitor, fields))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// Passes a table on to the section's own visitor; anything else is refused
/// by `Visitor`'s defaults, worded with the section's `expecting` and keys.
struct MapVisitor<V>(V, &'static [&'static str]);

impl<'de, V: Visitor<'de>> Visitor<'de> for MapVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)?;
        if !self.1.is_empty() {
            write!(f, " (with keys {})", self.1.join(", "))?;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(map)
    }
}
