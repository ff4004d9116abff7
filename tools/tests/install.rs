//! `tools/install`: a prefix install that a C program builds against with
//! pkg-config, and that names the library by its soname.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace holds tools/")
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_prefix_install_builds_a_c_program_with_pkg_config() {
    let root: PathBuf = std::env::temp_dir().join(format!("dipc-install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    run(Command::new(repo().join("tools/install"))
        .args(["--prefix", "/usr", "--no-build", "--destdir"])
        .arg(&root));
    for f in [
        "usr/sbin/dipcd",
        "usr/bin/dipcref",
        "usr/lib/libdipc.so.0",
        "usr/lib/libdipc.so",
        "usr/lib/libdipc_preload.so",
        "usr/include/dipc.h",
        "usr/lib/pkgconfig/dipc.pc",
        "usr/lib/systemd/system/dipcd.service",
        "etc/dipc/dipc.conf",
    ] {
        assert!(root.join(f).exists(), "{f} was not installed");
    }
    let lib = root.join("usr/lib/libdipc.so.0");
    let dynamic = text(&run(Command::new("readelf").arg("-d").arg(&lib)));
    assert!(dynamic.contains("[libdipc.so.0]"), "soname:\n{dynamic}");

    let flags = text(&run(Command::new("pkg-config")
        .args(["--cflags", "--libs", "dipc"])
        .env("PKG_CONFIG_PATH", root.join("usr/lib/pkgconfig"))
        .env("PKG_CONFIG_SYSROOT_DIR", &root)));
    let prog = root.join("hello_send");
    // As the README says: the source, then pkg-config's flags.
    run(Command::new("gcc")
        .arg(repo().join("libdipc/examples/c/hello_send.c"))
        .args(flags.split_whitespace())
        .arg("-o")
        .arg(&prog));
    let needed = text(&run(Command::new("readelf").arg("-d").arg(&prog)));
    assert!(needed.contains("[libdipc.so.0]"), "NEEDED:\n{needed}");
    // The installed library loads (no dipcd here: the program then fails
    // with dipc's error, not the loader's).
    let out = Command::new(&prog)
        .env("LD_LIBRARY_PATH", root.join("usr/lib"))
        .env("DIPC_CONFIG", root.join("no-such.conf"))
        .output()
        .expect("the program runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("error while loading shared libraries"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&root);
}
