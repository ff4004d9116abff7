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

/// `man -l PAGE` renders the installed page (plain or gzipped) without a
/// warning, with its NAME line.
fn man_renders(page: &Path, name: &str) {
    assert!(page.exists(), "{} was not installed", page.display());
    let out = run(Command::new("man")
        .args(["--warnings", "-l"])
        .arg(page)
        .env("MANWIDTH", "80")
        // A locale the machine may lack makes man warn on stderr.
        .env("LC_ALL", "C.UTF-8"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.is_empty(), "man -l {}: {err}", page.display());
    let shown = text(&out);
    // man justifies the lines: compare words.
    let words = shown.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains(&format!("NAME {name} - ")),
        "man -l {}:\n{shown}",
        page.display()
    );
}

const PAGES: [(&str, &str); 5] = [
    ("man8/dipcd.8", "dipcd"),
    ("man8/dipcref.8", "dipcref"),
    ("man5/dipc.conf.5", "dipc.conf"),
    ("man7/dipc.7", "dipc"),
    ("man3/dipc.3", "dipc"),
];

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
    for (page, name) in PAGES {
        man_renders(&root.join("usr/share/man").join(page), name);
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

/// `tools/deb` builds a package that dpkg installs into a clean root, with
/// the configuration as a conffile, and whose library and pkg-config file
/// work from there.
#[test]
fn the_debian_package_installs_into_a_clean_root() {
    let tmp: PathBuf = std::env::temp_dir().join(format!("dipc-deb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let out = tmp.join("out");
    let deb = text(&run(Command::new(repo().join("tools/deb"))
        .args(["--no-build", "--out"])
        .arg(&out)));
    let deb = deb.trim();
    let info = text(&run(Command::new("dpkg-deb").args(["-I", deb])));
    assert!(info.contains("Package: dipc"), "{info}");
    let root = tmp.join("root");
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates"] {
        std::fs::create_dir_all(root.join(d)).expect("the clean root");
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").expect("dpkg's status");
    // libc6 is not in the clean root: the one dependency dpkg is told to
    // let pass.
    run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(["--force-depends", "--force-not-root", "-i", deb]));
    let status = text(&run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(["-s", "dipc"])));
    assert!(status.contains("Status: install ok installed"), "{status}");
    assert!(
        status.contains("/etc/dipc/dipc.conf"),
        "conffiles: {status}"
    );
    for f in [
        "usr/sbin/dipcd",
        "usr/lib/libdipc.so.0",
        "usr/include/dipc.h",
        "usr/lib/pkgconfig/dipc.pc",
        "usr/lib/systemd/system/dipcd.service",
        "etc/dipc/dipc.conf",
    ] {
        assert!(root.join(f).exists(), "{f} is not in the installed package");
    }
    // Compressed, as Debian ships manual pages.
    for (page, name) in PAGES {
        man_renders(&root.join(format!("usr/share/man/{page}.gz")), name);
    }
    let flags = text(&run(Command::new("pkg-config")
        .args(["--cflags", "--libs", "dipc"])
        .env("PKG_CONFIG_PATH", root.join("usr/lib/pkgconfig"))
        .env("PKG_CONFIG_SYSROOT_DIR", &root)));
    run(Command::new("gcc")
        .arg(repo().join("libdipc/examples/c/hello_recv.c"))
        .args(flags.split_whitespace())
        .arg("-o")
        .arg(tmp.join("hello_recv")));
    let _ = std::fs::remove_dir_all(&tmp);
}
