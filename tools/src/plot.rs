//! `tools/bench --plot DIR`: SVG pictures of the latency distributions that
//! the benchmark sides measured, each figure of a report row (a message
//! size, the semaphores, process ids, distributed processes, a preload
//! kind) with dipc and its baselines as cumulative distributions of their
//! round trips, on a log scale. They read the same JSON lines as the
//! reports (every round trip is in `samples_ns`).

use plotters::prelude::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{self, BufRead};
use std::path::{Path, PathBuf};

/// More round trips than any run takes; bounds what the input may make
/// this hold.
pub const MAX_SAMPLES: usize = 10_000_000;
/// Points drawn per curve: quantiles of the samples, so a figure of a
/// million round trips stays a small file.
const POINTS: usize = 400;

/// Curve colours, distinct and dark enough on white (matplotlib's tab10).
const COLORS: [(u8, u8, u8); 8] = [
    (0x1f, 0x77, 0xb4),
    (0xd6, 0x27, 0x28),
    (0x2c, 0xa0, 0x2c),
    (0xff, 0x7f, 0x0e),
    (0x94, 0x67, 0xbd),
    (0x8c, 0x56, 0x4b),
    (0xe3, 0x77, 0xc2),
    (0x7f, 0x7f, 0x7f),
];

/// One figure: a report row and the round trips of each of its benches.
#[derive(Debug, Default)]
pub struct Figure {
    /// File name stem (`bench-msg-64`).
    pub name: String,
    pub title: String,
    /// bench -> round trips (ns), sorted.
    pub series: BTreeMap<String, Vec<u64>>,
}

fn bad(input: &str, line: usize, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{input}:{line}: {what}"),
    )
}

/// The figures of the JSON lines in `reader` (`input` names it in
/// errors). Lines without round trips (the dprocs load) are passed over.
pub fn figures(reader: impl BufRead, input: &str) -> io::Result<Vec<Figure>> {
    let mut figs: BTreeMap<String, Figure> = BTreeMap::new();
    let mut total = 0usize;
    for (no, line) in reader.lines().enumerate() {
        let no = no + 1;
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value =
            serde_json::from_str(&line).map_err(|e| bad(input, no, &format!("not JSON: {e}")))?;
        let Some(samples) = v.get("samples_ns") else {
            continue;
        };
        let samples = samples
            .as_array()
            .ok_or_else(|| bad(input, no, "samples_ns is not an array"))?;
        total += samples.len();
        if total > MAX_SAMPLES {
            return Err(bad(
                input,
                no,
                &format!("more than {MAX_SAMPLES} round trips"),
            ));
        }
        let bench = v
            .get("bench")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(input, no, "no bench"))?;
        let group = v.get("group").and_then(Value::as_str).unwrap_or("msg");
        let kind = v.get("kind").and_then(Value::as_str);
        // Rows as the reports have them: a size tells message rows apart;
        // elsewhere it is only the size of the row's TCP baseline.
        let size = v
            .get("size")
            .and_then(Value::as_u64)
            .filter(|_| group == "msg" || kind == Some("msg"));
        let mut name = format!("bench-{group}");
        let mut title = group.to_string();
        if let Some(k) = kind {
            name.push_str(&format!("-{k}"));
            title.push_str(&format!(" {k}"));
        }
        if let Some(s) = size {
            name.push_str(&format!("-{s}"));
            title.push_str(&format!(" {s} B"));
        }
        let fig = figs.entry(name.clone()).or_insert_with(|| Figure {
            name,
            title: format!("{title}: latency of each operation, cumulative"),
            series: BTreeMap::new(),
        });
        let into = fig.series.entry(bench.to_string()).or_default();
        for x in samples {
            into.push(
                x.as_u64()
                    .ok_or_else(|| bad(input, no, "a sample is not a whole number of ns"))?,
            );
        }
    }
    let mut out: Vec<Figure> = figs.into_values().collect();
    for f in &mut out {
        f.series.retain(|_, s| !s.is_empty());
        for s in f.series.values_mut() {
            s.sort_unstable();
        }
    }
    out.retain(|f| !f.series.is_empty());
    Ok(out)
}

/// (latency in µs, fraction of round trips at most that) at up to
/// `POINTS` quantiles of sorted `ns`.
fn cdf(ns: &[u64]) -> Vec<(f64, f64)> {
    let n = ns.len();
    let step = n.div_ceil(POINTS).max(1);
    let mut pts: Vec<(f64, f64)> = (step - 1..n)
        .step_by(step)
        .map(|i| (ns[i] as f64 / 1000.0, (i + 1) as f64 / n as f64))
        .collect();
    if let Some(&last) = ns.last() {
        if pts.last().map(|p| p.1) != Some(1.0) {
            pts.push((last as f64 / 1000.0, 1.0));
        }
    }
    pts
}

/// Writes `fig` as `DIR/NAME.svg`; returns the path.
pub fn write_svg(fig: &Figure, dir: &Path) -> Result<PathBuf, String> {
    let path = dir.join(format!("{}.svg", fig.name));
    let curves: Vec<(&String, Vec<(f64, f64)>)> =
        fig.series.iter().map(|(b, ns)| (b, cdf(ns))).collect();
    let lo = curves
        .iter()
        .flat_map(|(_, c)| c.first())
        .map(|p| p.0)
        .fold(f64::INFINITY, f64::min);
    let hi = curves
        .iter()
        .flat_map(|(_, c)| c.last())
        .map(|p| p.0)
        .fold(0.0, f64::max);
    if !(lo.is_finite() && hi > 0.0) {
        return Err(format!("{}: no round trips to draw", fig.name));
    }
    // A log axis needs a positive range around the data.
    let lo = (lo * 0.9).max(0.01);
    let hi = (hi * 1.1).max(lo * 2.0);
    let e = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let root = SVGBackend::new(&path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&fig.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..1f64)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_label_formatter(&|x| {
            if *x >= 10.0 {
                format!("{x:.0}")
            } else {
                format!("{x}")
            }
        })
        .x_desc("µs per operation (a round trip, or a kill_d call), log scale")
        .y_desc("fraction of operations")
        .draw()
        .map_err(|x| e(&x))?;
    for (i, (bench, pts)) in curves.into_iter().enumerate() {
        let (r, g, b) = COLORS[i % COLORS.len()];
        let color = RGBColor(r, g, b);
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(|x| e(&x))?
            .label(bench.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    drop(chart);
    drop(root);
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_the_reports_and_rounds_pool() {
        let input = r#"{"bench":"tcp","group":"msg","size":64,"samples_ns":[3000,1000]}
{"bench":"dipc_remote","group":"msg","size":64,"samples_ns":[5000]}
{"bench":"dipc_remote","group":"msg","size":64,"samples_ns":[4000]}
{"bench":"tcp","group":"msg","size":4096,"samples_ns":[9000]}
{"bench":"tcp","group":"sem","size":16,"samples_ns":[2000]}
{"bench":"dipc_local","group":"sem","samples_ns":[2500]}
{"bench":"dproc_load","group":"dprocs","calls":10}
"#;
        let f = figures(input.as_bytes(), "t").expect("figures");
        let names: Vec<&str> = f.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["bench-msg-4096", "bench-msg-64", "bench-sem"]);
        assert_eq!(f[1].series["dipc_remote"], [4000, 5000]);
        assert_eq!(f[1].series["tcp"], [1000, 3000]);
        assert_eq!(f[2].series.len(), 2, "{:?}", f[2].series);
    }

    #[test]
    fn bad_lines_are_named() {
        let e = figures("{\"bench\":\"x\",\"samples_ns\":[-1]}\n".as_bytes(), "in").unwrap_err();
        assert!(e.to_string().contains("in:1: a sample"), "{e}");
        let e = figures("nope\n".as_bytes(), "in").unwrap_err();
        assert!(e.to_string().contains("in:1: not JSON"), "{e}");
    }

    #[test]
    fn the_cdf_ends_at_the_slowest_round_trip() {
        let ns: Vec<u64> = (1..=1000).map(|x| x * 1000).collect();
        let c = cdf(&ns);
        assert!(c.len() <= POINTS + 1, "{}", c.len());
        assert_eq!(c.last(), Some(&(1000.0, 1.0)));
        assert!(c.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1));
    }
}
