//! The manual pages in `dist/man`: current with their sources (dipcd's and
//! dipcref's clap definitions, README.md's marked sections), and clean to
//! groff and man.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace holds tools/")
}

fn pages_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| {
            e.expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| {
            n.rsplit('.')
                .next()
                .is_some_and(|s| s.len() == 1 && s.as_bytes()[0].is_ascii_digit())
        })
        .collect();
    v.sort();
    v
}

/// Regenerates every page into a temp dir: each must equal the checked-in
/// one, and no checked-in page may be left over from an old source.
#[test]
fn the_checked_in_pages_are_current() {
    let tmp: PathBuf = std::env::temp_dir().join(format!("dipc-man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let out = Command::new(env!("CARGO_BIN_EXE_dipc-man"))
        .arg("--out")
        .arg(&tmp)
        .output()
        .expect("dipc-man runs");
    assert!(
        out.status.success(),
        "dipc-man failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dist = repo().join("dist/man");
    let made = pages_in(&tmp);
    assert_eq!(made.len(), 5, "dipc-man wrote {made:?}");
    let kept = pages_in(&dist);
    assert_eq!(
        kept, made,
        "dist/man holds other pages than dipc-man makes: run tools/man"
    );
    for name in &made {
        let new = std::fs::read_to_string(tmp.join(name)).expect("a generated page");
        let old = std::fs::read_to_string(dist.join(name)).unwrap_or_default();
        assert!(
            new == old,
            "dist/man/{name} is stale (its clap definition or README section changed): run tools/man"
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Every page renders with groff's warnings all on, and through man-db as
/// an installed page would, without a warning.
#[test]
fn every_page_renders_without_warnings() {
    let dist = repo().join("dist/man");
    let pages = pages_in(&dist);
    assert_eq!(pages.len(), 5, "dist/man holds {pages:?}");
    for name in pages {
        let path = dist.join(&name);
        let groff = Command::new("groff")
            .args(["-man", "-ww", "-z"])
            .arg(&path)
            .output()
            .expect("groff runs (tools/test installs groff-base)");
        let err = String::from_utf8_lossy(&groff.stderr);
        assert!(
            groff.status.success() && err.is_empty(),
            "groff -man -ww on {name}: {}\n{err}",
            groff.status
        );
        let man = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(&path)
            .env("MANWIDTH", "80")
            // A locale the machine may lack makes man warn on stderr.
            .env("LC_ALL", "C.UTF-8")
            .output()
            .expect("man runs (tools/test installs man-db)");
        let err = String::from_utf8_lossy(&man.stderr);
        let text = String::from_utf8_lossy(&man.stdout);
        assert!(
            man.status.success() && err.is_empty(),
            "man --warnings -l {name}: {}\n{err}",
            man.status
        );
        assert!(
            text.contains("NAME") && text.contains("DESCRIPTION"),
            "man -l {name} printed:\n{text}"
        );
    }
}
