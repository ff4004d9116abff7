//! The README's commands work as written, on this machine's toolchain.

use std::path::Path;
use std::process::Command;

/// The C examples' build line, as the README gives it (Debian's linker
/// drops a library named before the objects that need it, so the order
/// of the arguments matters).
#[test]
fn the_readmes_build_line_for_the_c_examples_links() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace holds tools/");
    let readme = std::fs::read_to_string(repo.join("README.md")).expect("README.md");
    let lead = "build them with `";
    let start = readme.find(lead).expect("the README gives the build line") + lead.len();
    let len = readme[start..].find('`').expect("the build line ends");
    let line = readme[start..start + len]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(line.starts_with("gcc "), "{line}");
    let out = Command::new("sh")
        .arg("-c")
        .arg(&line)
        .current_dir(repo)
        .env("PWD", repo)
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "`{line}` failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
