//! The report: the client sides' JSON lines pooled per bench and row
//! into the main table, the spin comparison and the other groups' parts,
//! and the SVG plots of the same lines.

use crate::common::{
    cell_of, err, merge_round, pick, print_line, GROUP_DPROCS, GROUP_MSG, GROUP_PID,
};
use crate::dprocs::{add_load, dprocs_summary, write_dprocs_report};
use crate::pid::{pid_summary, write_pid_report};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};

/// Benches of the report, in column order: (name, heading). The first
/// four make the main table; the last two, when present, the like-for-like
/// comparison of the spin (a remote call that sleeps at once, and a TCP
/// client that spins as long as the library does).
const BENCHES: [(&str, &str); 6] = [
    ("tcp", "raw TCP"),
    ("sysv", "raw SysV"),
    ("dipc_remote", "dipc remote"),
    ("dipc_local", "dipc owner-local"),
    ("dipc_remote_nospin", "remote, spin 0"),
    ("tcp_spin", "raw TCP spinning"),
];

pub(crate) fn median_of(v: Option<&Value>) -> Option<f64> {
    v?.get("median_us")?.as_f64()
}

pub(crate) fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some((a / b * 100.0).round() / 100.0),
        _ => None,
    }
}

/// A report row: the `msg` group has a row per message size, any other
/// group (`sem`) one row. Rows of `msg` come first.
type RowKey = (bool, String, u64);

pub(crate) fn report(input: &str, as_json: bool) -> io::Result<()> {
    let reader: Box<dyn BufRead> = if input == "-" {
        Box::new(io::BufReader::new(io::stdin()))
    } else {
        Box::new(io::BufReader::new(
            std::fs::File::open(input).map_err(|e| err(format!("{input}: {e}")))?,
        ))
    };
    // row -> bench -> result
    let mut by_row: BTreeMap<RowKey, BTreeMap<String, Value>> = BTreeMap::new();
    // The process-id group: bench -> result.
    let mut pid_rows: BTreeMap<String, Value> = BTreeMap::new();
    // The distributed-process group: bench -> result (rounds pooled, the
    // load sides of every host summed).
    let mut dproc_rows: BTreeMap<String, Value> = BTreeMap::new();
    for (no, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line)
            .map_err(|e| err(format!("{input}:{}: not JSON: {e}", no + 1)))?;
        let Some(bench) = v.get("bench").and_then(Value::as_str) else {
            return Err(err(format!("{input}:{}: no bench", no + 1)));
        };
        let group = v.get("group").and_then(Value::as_str).unwrap_or(GROUP_MSG);
        if group == GROUP_PID {
            pid_rows.insert(bench.to_string(), v.clone());
            continue;
        }
        if group == GROUP_DPROCS {
            match dproc_rows.entry(bench.to_string()) {
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(v);
                }
                std::collections::btree_map::Entry::Occupied(mut e) => {
                    let r = if v.get("calls").is_some() {
                        add_load(e.get_mut(), &v)
                    } else {
                        merge_round(e.get_mut(), &v)
                    };
                    r.map_err(|e| err(format!("{input}:{}: {e}", no + 1)))?
                }
            }
            continue;
        }
        let key = if group == GROUP_MSG {
            let Some(size) = v.get("size").and_then(Value::as_u64) else {
                return Err(err(format!("{input}:{}: msg result without size", no + 1)));
            };
            (false, group.to_string(), size)
        } else {
            (true, group.to_string(), 0)
        };
        match by_row.entry(key).or_default().entry(bench.to_string()) {
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(v);
            }
            std::collections::btree_map::Entry::Occupied(mut e) => {
                merge_round(e.get_mut(), &v).map_err(|e| err(format!("{input}:{}: {e}", no + 1)))?
            }
        }
    }
    if by_row.is_empty() && pid_rows.is_empty() && dproc_rows.is_empty() {
        return Err(err(format!("{input}: no results")));
    }
    let pid = pid_summary(&pid_rows);
    let dprocs = dprocs_summary(&dproc_rows);
    // Round trips per figure and the rounds they were taken in, as the
    // first figure has them (every figure of a run has the same).
    let first = by_row.values().next().and_then(|b| b.values().next());
    let iterations = first.and_then(|v| v.get("count")).and_then(Value::as_u64);
    let rounds = first
        .and_then(|v| v.get("rounds"))
        .and_then(Value::as_u64)
        .unwrap_or(1);

    let mut rows = Vec::new();
    for ((_, group, size), benches) in &by_row {
        let mut row = serde_json::Map::new();
        row.insert("group".into(), json!(group));
        if group == GROUP_MSG {
            row.insert("size".into(), json!(size));
        }
        for (name, _) in BENCHES {
            if let Some(v) = benches.get(name) {
                let keys = [
                    "median_us",
                    "p99_us",
                    "min_us",
                    "count",
                    "rounds",
                    "size",
                    "remote",
                    "spin_us",
                ];
                row.insert(name.into(), Value::Object(pick(v, &keys)));
            }
        }
        let m = |n: &str| median_of(benches.get(n));
        row.insert(
            "ratio_remote_tcp".into(),
            json!(ratio(m("dipc_remote"), m("tcp"))),
        );
        row.insert(
            "ratio_local_sysv".into(),
            json!(ratio(m("dipc_local"), m("sysv"))),
        );
        row.insert(
            "ratio_remote_nospin_tcp".into(),
            json!(ratio(m("dipc_remote_nospin"), m("tcp"))),
        );
        row.insert(
            "ratio_remote_tcp_spin".into(),
            json!(ratio(m("dipc_remote"), m("tcp_spin"))),
        );
        rows.push(Value::Object(row));
    }

    if as_json {
        let v = json!({
            "iterations": iterations,
            "rounds": rounds,
            "unit": "us",
            "statistic": "median and p99 of round trips",
            "groups": {
                "msg": "message-queue ping-pong, a row per message size (bytes); \
                        tcp is a TCP ping-pong of the same size",
                "sem": "semaphore ping-pong: V(0),P(1) against P(0),V(1) on a set of \
                        two; tcp is a TCP ping-pong of tcp.size bytes",
                "spin": "dipc_remote spins up to tcp_spin.spin_us for each reply before \
                         sleeping (library.spin_us); dipc_remote_nospin sleeps at once; \
                         tcp_spin is the TCP ping-pong spinning as long",
            },
            "targets": { "ratio_remote_tcp": "<= 2.5", "ratio_local_sysv": "<= 1.1" },
            "results": rows,
            "pid": pid,
            "dprocs": dprocs,
        });
        return print_line(&v);
    }

    let cell = |row: &Value, name: &str| cell_of(row.get(name));
    let rat = |row: &Value, k: &str| {
        row.get(k)
            .and_then(Value::as_f64)
            .map_or("-".to_string(), |x| format!("{x:.2}"))
    };
    let mut out = io::stdout().lock();
    if !rows.is_empty() {
        writeln!(
            out,
            "round trips in µs, median / p99 of {} after warm-up, in {rounds} interleaved round{}",
            iterations.map_or("?".to_string(), |n| n.to_string()),
            if rounds == 1 { "" } else { "s" }
        )?;
        writeln!(
            out,
            "{:>6}  {:>17}  {:>17}  {:>17}  {:>13}  {:>17}  {:>12}",
            "size",
            BENCHES[0].1,
            BENCHES[1].1,
            BENCHES[2].1,
            "remote/TCP",
            BENCHES[3].1,
            "local/SysV"
        )?;
        writeln!(
            out,
            "{:>6}  {:>17}  {:>17}  {:>17}  {:>13}  {:>17}  {:>12}",
            "",
            "host1<->host2",
            "host 2",
            "host1->owner h2",
            "(target<=2.5)",
            "host 2",
            "(target<=1.1)"
        )?;
        let mut notes = Vec::new();
        for row in &rows {
            let group = row.get("group").and_then(Value::as_str).unwrap_or("?");
            let first = if group == GROUP_MSG {
                let size = row.get("size").and_then(Value::as_u64).unwrap_or(0);
                format!("{size} B")
            } else {
                let tcp = row
                    .get("tcp")
                    .and_then(|t| t.get("size"))
                    .and_then(Value::as_u64)
                    .map_or("no".to_string(), |n| format!("a {n} B"));
                notes.push(format!(
                    "{group}: one round trip is semop V(0) then P(1) against P(0) then V(1); \
                     its raw TCP is {tcp} TCP ping-pong measured in this run"
                ));
                group.to_string()
            };
            writeln!(
                out,
                "{:>6}  {:>17}  {:>17}  {:>17}  {:>13}  {:>17}  {:>12}",
                first,
                cell(row, "tcp"),
                cell(row, "sysv"),
                cell(row, "dipc_remote"),
                rat(row, "ratio_remote_tcp"),
                cell(row, "dipc_local"),
                rat(row, "ratio_local_sysv")
            )?;
        }
        for n in notes {
            writeln!(out, "{n}")?;
        }
        if rows
            .iter()
            .any(|r| r.get("dipc_remote_nospin").is_some() || r.get("tcp_spin").is_some())
        {
            write_spin_report(&mut out, &rows, &cell, &rat)?;
        }
    }
    if !pid_rows.is_empty() {
        write_pid_report(&mut out, &pid)?;
    }
    if !dproc_rows.is_empty() {
        write_dprocs_report(&mut out, &dprocs)?;
    }
    out.flush()
}

/// The like-for-like comparison of the library's spin: dipc remote sleeping
/// at once against raw TCP (both sleep), and dipc remote spinning against
/// a TCP client that spins as long (both spin).
fn write_spin_report(
    out: &mut impl Write,
    rows: &[Value],
    cell: &dyn Fn(&Value, &str) -> String,
    rat: &dyn Fn(&Value, &str) -> String,
) -> io::Result<()> {
    let spin = rows
        .iter()
        .find_map(|r| r.get("tcp_spin")?.get("spin_us")?.as_u64())
        .map_or("?".to_string(), |n| n.to_string());
    writeln!(out)?;
    writeln!(
        out,
        "dipc remote above spins up to {spin} µs for each reply before it sleeps \
         (library.spin_us); like for like:"
    )?;
    writeln!(
        out,
        "{:>6}  {:>17}  {:>13}  {:>17}  {:>17}  {:>13}",
        "size", "dipc remote", "vs raw TCP", "raw TCP", "dipc remote", "vs raw TCP"
    )?;
    writeln!(
        out,
        "{:>6}  {:>17}  {:>13}  {:>17}  {:>17}  {:>13}",
        "",
        "spin 0 (sleeps)",
        "(both sleep)",
        format!("spin {spin} µs"),
        format!("spin {spin} µs"),
        "(both spin)"
    )?;
    for row in rows {
        let group = row.get("group").and_then(Value::as_str).unwrap_or("?");
        let first = if group == GROUP_MSG {
            let size = row.get("size").and_then(Value::as_u64).unwrap_or(0);
            format!("{size} B")
        } else {
            group.to_string()
        };
        writeln!(
            out,
            "{:>6}  {:>17}  {:>13}  {:>17}  {:>17}  {:>13}",
            first,
            cell(row, "dipc_remote_nospin"),
            rat(row, "ratio_remote_nospin_tcp"),
            cell(row, "tcp_spin"),
            cell(row, "dipc_remote"),
            rat(row, "ratio_remote_tcp_spin")
        )?;
    }
    Ok(())
}

pub(crate) fn plot(input: &str, out: &std::path::Path) -> io::Result<()> {
    let reader: Box<dyn BufRead> = if input == "-" {
        Box::new(io::BufReader::new(io::stdin()))
    } else {
        Box::new(io::BufReader::new(
            std::fs::File::open(input).map_err(|e| err(format!("{input}: {e}")))?,
        ))
    };
    let figures = dipc_tools::plot::figures(reader, input)?;
    if figures.is_empty() {
        return Err(err(format!("{input}: no round trips to plot")));
    }
    std::fs::create_dir_all(out).map_err(|e| err(format!("{}: {e}", out.display())))?;
    for f in &figures {
        let path = dipc_tools::plot::write_svg(f, out).map_err(err)?;
        // stderr: what the bench prints on stdout stays the report.
        eprintln!("dipc-bench: wrote {}", path.display());
    }
    Ok(())
}
