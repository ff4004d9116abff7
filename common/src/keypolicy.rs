//! Which System V keys the preload library (`libdipc_preload.so`) makes
//! distributed without the program asking for `IPC_DIPC`: `[preload] keys`
//! in `dipc.conf`, or `$DIPC_PRELOAD_KEYS` for one program.
//!
//! An entry is a key (`"0x5a5a"` or decimal `"23130"`), an inclusive range
//! (`"0x1000-0x1fff"`), or `"all"`. `IPC_PRIVATE` is never distributed,
//! whatever the policy says: it names no structure another process could
//! find.

use std::fmt;

/// Bound on the entries of a policy, so that a configuration or an
/// environment variable cannot make the per-get check (a linear scan)
/// expensive or allocate without bound.
pub const MAX_ENTRIES: usize = 256;

/// The keys made distributed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum KeyPolicy {
    /// Only gets that carry `IPC_DIPC` (the default).
    #[default]
    None,
    /// Every key but `IPC_PRIVATE`.
    All,
    /// The keys in these inclusive ranges (as unsigned 32-bit values, the
    /// way `ipcs` prints keys).
    Ranges(Vec<(u32, u32)>),
}

impl KeyPolicy {
    /// Whether a get of `key` is distributed under this policy.
    pub fn covers(&self, key: i32) -> bool {
        if key == 0 {
            return false;
        }
        let k = key as u32;
        match self {
            KeyPolicy::None => false,
            KeyPolicy::All => true,
            KeyPolicy::Ranges(r) => r.iter().any(|&(lo, hi)| lo <= k && k <= hi),
        }
    }

    /// Builds a policy from its entries; an error names the entry that is
    /// wrong and why.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<KeyPolicy, String> {
        let mut ranges = Vec::new();
        let mut all = false;
        for (i, e) in entries.into_iter().enumerate() {
            if i >= MAX_ENTRIES {
                return Err(format!("more than {MAX_ENTRIES} entries"));
            }
            let e = e.trim();
            if e == "all" {
                all = true;
                continue;
            }
            ranges.push(parse_entry(e).map_err(|why| format!("entry {i} ({e:?}): {why}"))?);
        }
        Ok(match (all, ranges.is_empty()) {
            (true, _) => KeyPolicy::All,
            (false, true) => KeyPolicy::None,
            (false, false) => KeyPolicy::Ranges(ranges),
        })
    }

    /// The comma-separated form of `$DIPC_PRELOAD_KEYS`: an empty value is
    /// the empty policy (only `IPC_DIPC` gets are distributed).
    pub fn parse_list(s: &str) -> Result<KeyPolicy, String> {
        if s.len() > MAX_ENTRIES * 24 {
            return Err(format!("longer than {} bytes", MAX_ENTRIES * 24));
        }
        if s.trim().is_empty() {
            return Ok(KeyPolicy::None);
        }
        KeyPolicy::parse(s.split(','))
    }
}

fn parse_key(s: &str) -> Result<u32, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse::<u32>(),
    };
    r.map_err(|_| format!("{s:?} is not a key (0x-hex or decimal, at most 0xffffffff)"))
}

fn parse_entry(e: &str) -> Result<(u32, u32), String> {
    if e.is_empty() {
        return Err(
            "empty (a key such as \"0x5a5a\", a range \"0x1000-0x1fff\" or \"all\")".into(),
        );
    }
    match e.split_once('-') {
        Some((lo, hi)) => {
            let (lo, hi) = (parse_key(lo.trim())?, parse_key(hi.trim())?);
            if lo > hi {
                return Err(format!(
                    "the range starts above its end ({lo:#x} > {hi:#x})"
                ));
            }
            Ok((lo, hi))
        }
        None => parse_key(e).map(|k| (k, k)),
    }
}

impl fmt::Display for KeyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyPolicy::None => write!(f, "none"),
            KeyPolicy::All => write!(f, "all"),
            KeyPolicy::Ranges(r) => {
                for (i, (lo, hi)) in r.iter().enumerate() {
                    let sep = if i > 0 { "," } else { "" };
                    if lo == hi {
                        write!(f, "{sep}{lo:#x}")?;
                    } else {
                        write!(f, "{sep}{lo:#x}-{hi:#x}")?;
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_keys_ranges_and_all() {
        let p = KeyPolicy::parse(["0x1000-0x1fff", "0x5a5a", "77"]).unwrap();
        assert_eq!(
            p,
            KeyPolicy::Ranges(vec![(0x1000, 0x1fff), (0x5a5a, 0x5a5a), (77, 77)])
        );
        assert!(p.covers(0x1000) && p.covers(0x1fff) && p.covers(0x5a5a) && p.covers(77));
        assert!(!p.covers(0xfff) && !p.covers(0x2000) && !p.covers(0x5a5b));
        assert_eq!(p.to_string(), "0x1000-0x1fff,0x5a5a,0x4d");
        assert_eq!(KeyPolicy::parse(["all"]).unwrap(), KeyPolicy::All);
        assert_eq!(KeyPolicy::parse([]).unwrap(), KeyPolicy::None);
        // Keys above i32::MAX, as ipcs prints them.
        let high = KeyPolicy::parse(["0xfffffff0-0xffffffff"]).unwrap();
        assert!(high.covers(-1) && high.covers(-16) && !high.covers(-17));
    }

    #[test]
    fn ipc_private_is_never_covered() {
        assert!(!KeyPolicy::All.covers(0));
        assert!(!KeyPolicy::parse(["0-10"]).unwrap().covers(0));
        assert!(!KeyPolicy::None.covers(5));
    }

    #[test]
    fn errors_name_the_entry() {
        let e = KeyPolicy::parse(["0x10", "0x20-0x1"]).unwrap_err();
        assert!(e.starts_with("entry 1 (\"0x20-0x1\")"), "{e}");
        let e = KeyPolicy::parse(["banana"]).unwrap_err();
        assert!(e.contains("\"banana\" is not a key"), "{e}");
        let e = KeyPolicy::parse(["0x1ffffffff"]).unwrap_err();
        assert!(e.contains("0x1ffffffff"), "{e}");
        assert!(KeyPolicy::parse([""]).unwrap_err().contains("empty"));
        let many: Vec<String> = (1..=MAX_ENTRIES + 1).map(|k| k.to_string()).collect();
        let e = KeyPolicy::parse(many.iter().map(String::as_str)).unwrap_err();
        assert!(e.contains("more than 256"), "{e}");
    }

    #[test]
    fn the_environment_list() {
        assert_eq!(KeyPolicy::parse_list("").unwrap(), KeyPolicy::None);
        assert_eq!(KeyPolicy::parse_list("all").unwrap(), KeyPolicy::All);
        assert_eq!(
            KeyPolicy::parse_list("0x10, 0x20-0x30").unwrap(),
            KeyPolicy::Ranges(vec![(0x10, 0x10), (0x20, 0x30)])
        );
        assert!(KeyPolicy::parse_list(&"1,".repeat(5000)).is_err());
    }
}
