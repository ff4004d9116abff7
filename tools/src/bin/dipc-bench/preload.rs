//! The preload part's report: owner-local against raw System V, remote
//! through the preload against libdipc called directly.

use crate::common::{err, round3, stats};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{self, BufRead};

/// The preload part's figures, a row per (kind, size): `sysv` (the plain
/// program, no preload), `preload_local` (the same program with the
/// preload, the structure distributed and owned by its host),
/// `preload_remote` and `direct_remote` (ping on host 1 with the preload,
/// or the same source calling libdipc directly, against the owner host 2).
pub(crate) fn preload_report(input: &str, as_json: bool) -> io::Result<()> {
    /// More round trips than any run takes; bounds what a line may add.
    const MAX_SAMPLES: usize = 10_000_000;
    let reader: Box<dyn BufRead> = if input == "-" {
        Box::new(io::BufReader::new(io::stdin()))
    } else {
        Box::new(io::BufReader::new(
            std::fs::File::open(input).map_err(|e| err(format!("{input}: {e}")))?,
        ))
    };
    // (kind, size) -> bench -> pooled round trips
    let mut rows: BTreeMap<(String, u64), BTreeMap<String, Vec<u64>>> = BTreeMap::new();
    let mut total = 0usize;
    for (no, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let at = |what: &str| err(format!("{input}:{}: {what}", no + 1));
        let v: Value = serde_json::from_str(&line).map_err(|e| at(&format!("not JSON: {e}")))?;
        let field = |f: &str| v.get(f).ok_or_else(|| at(&format!("no {f}")));
        let bench = field("bench")?
            .as_str()
            .ok_or_else(|| at("bench is not a string"))?;
        let kind = field("kind")?
            .as_str()
            .ok_or_else(|| at("kind is not a string"))?;
        let size = field("size")?
            .as_u64()
            .ok_or_else(|| at("size is not a number"))?;
        let samples = field("samples_ns")?
            .as_array()
            .ok_or_else(|| at("samples_ns is not an array"))?;
        total += samples.len();
        if total > MAX_SAMPLES {
            return Err(at(&format!("more than {MAX_SAMPLES} round trips")));
        }
        let into = rows
            .entry((kind.to_string(), size))
            .or_default()
            .entry(bench.to_string())
            .or_default();
        for x in samples {
            into.push(x.as_u64().ok_or_else(|| at("a sample is not a number"))?);
        }
    }
    if rows.is_empty() {
        return Err(err(format!("{input}: no results")));
    }
    const BENCHES: [&str; 4] = ["sysv", "preload_local", "direct_remote", "preload_remote"];
    let mut out = Vec::new();
    for ((kind, size), benches) in &mut rows {
        let mut row = serde_json::Map::new();
        row.insert("kind".into(), json!(kind));
        if kind == "msg" {
            row.insert("size".into(), json!(size));
        }
        let mut medians = BTreeMap::new();
        for name in BENCHES {
            if let Some(ns) = benches.get_mut(name) {
                ns.sort_unstable();
                let st = stats(ns);
                if let Some(m) = st.get("median_us").and_then(Value::as_f64) {
                    medians.insert(name, m);
                }
                row.insert(name.into(), Value::Object(st));
            }
        }
        let ratio3 = |a: &str, b: &str| match (medians.get(a), medians.get(b)) {
            (Some(a), Some(b)) if *b > 0.0 => Some(round3(a / b)),
            _ => None,
        };
        row.insert(
            "ratio_local_sysv".into(),
            json!(ratio3("preload_local", "sysv")),
        );
        row.insert(
            "ratio_remote_direct".into(),
            json!(ratio3("preload_remote", "direct_remote")),
        );
        out.push(Value::Object(row));
    }
    if as_json {
        let v = json!({
            "unit": "us",
            "statistic": "median and p99 of round trips, every round pooled",
            "targets": { "ratio_local_sysv": "<= 1.05", "ratio_remote_direct": "<= 1.02" },
            "rows": out,
        });
        println!("{v}");
        return Ok(());
    }
    println!("preload: median (p99) round trip in us; ratios of medians");
    println!(
        "{:<9} {:>18} {:>18} {:>10} {:>18} {:>18} {:>10}",
        "row",
        "raw sysv",
        "preload local",
        "local/raw",
        "libdipc remote",
        "preload remote",
        "pre/dipc"
    );
    for r in &out {
        let name = match (r.get("kind").and_then(Value::as_str), r.get("size")) {
            (Some(k), Some(size)) => format!("{k} {size}B"),
            (Some(k), None) => k.to_string(),
            _ => "?".into(),
        };
        let fig = |b: &str| match (
            r.get(b)
                .and_then(|x| x.get("median_us"))
                .and_then(Value::as_f64),
            r.get(b)
                .and_then(|x| x.get("p99_us"))
                .and_then(Value::as_f64),
        ) {
            (Some(m), Some(p)) => format!("{m:.2} ({p:.2})"),
            _ => "-".into(),
        };
        let rat = |k: &str| {
            r.get(k)
                .and_then(Value::as_f64)
                .map_or("-".into(), |x| format!("{x:.3}"))
        };
        println!(
            "{:<9} {:>18} {:>18} {:>10} {:>18} {:>18} {:>10}",
            name,
            fig("sysv"),
            fig("preload_local"),
            rat("ratio_local_sysv"),
            fig("direct_remote"),
            fig("preload_remote"),
            rat("ratio_remote_direct")
        );
    }
    println!("targets: local/raw <= 1.05, pre/dipc <= 1.02");
    Ok(())
}
