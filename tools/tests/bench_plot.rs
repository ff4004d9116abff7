//! `tools/bench --plot DIR`: a short run of the smallest part writes SVG
//! pictures of the latency distributions, one curve per measured bench,
//! and still prints its report as before.

use std::path::Path;
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace holds tools/")
}

/// The data curves of an SVG: the polylines plotters draws in a series'
/// colour (axes, ticks and the mesh are black) with more than the two
/// points of a legend sample.
fn data_paths(svg: &str) -> Vec<usize> {
    let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("not XML: {e}"));
    doc.descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .filter(|n| n.attribute("stroke").is_some_and(|s| s != "#000000"))
        .map(|n| {
            n.attribute("points")
                .unwrap_or("")
                .split_whitespace()
                .count()
        })
        .filter(|&points| points > 2)
        .collect()
}

#[test]
fn bench_plot_writes_an_svg_per_row_with_a_curve_per_bench() {
    let dir = std::env::temp_dir().join(format!("dipc-plot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // The smallest part, as few round trips as the driver takes; the
    // binaries are those this test run built.
    let out = Command::new(repo().join("tools/bench"))
        .args([
            "--no-build",
            "--parts",
            "sem",
            "--iterations",
            "20",
            "--rounds",
            "1",
        ])
        .arg("--plot")
        .arg(&dir)
        .output()
        .expect("tools/bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tools/bench: {}\n{stdout}\n{stderr}",
        out.status
    );
    // The report is printed as without --plot, the plot's notes go to stderr.
    assert!(stdout.contains("round trips in µs"), "{stdout}");
    assert!(!stdout.contains(".svg"), "{stdout}");
    let svg = dir.join("bench-sem.svg");
    assert!(
        stderr.contains(&format!("wrote {}", svg.display())),
        "{stderr}"
    );
    let files: Vec<String> = std::fs::read_dir(&dir)
        .expect("the plot directory")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(files, ["bench-sem.svg"], "{files:?}");
    let text = std::fs::read_to_string(&svg).expect("the SVG");
    let curves = data_paths(&text);
    // tcp, tcp_spin, sysv, dipc_remote, dipc_remote_nospin, dipc_local: a
    // curve each, of at most the 20 round trips measured.
    assert_eq!(curves.len(), 6, "curves {curves:?} in\n{text}");
    assert!(curves.iter().all(|&p| p <= 21), "{curves:?}");
    for bench in ["tcp", "sysv", "dipc_remote", "dipc_local"] {
        assert!(
            text.contains(&format!("\n{bench}\n")),
            "no legend entry {bench}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
