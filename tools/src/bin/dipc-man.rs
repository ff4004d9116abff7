//! `dipc-man --out DIR`: writes the manual pages (dipcd.8, dipcref.8,
//! dipc.conf.5, dipc.7, dipc.3) into DIR from the clap definitions and
//! README.md's marked sections (see `dipc_tools::man`). `tools/man` runs
//! it into `dist/man`; the tests run it into a temp dir and compare.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "dipc-man", about = "Generate dipc's manual pages")]
struct Cli {
    /// Directory to write the pages into (created if missing)
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The README to take the pages' text from [default: the workspace's]
    #[arg(long, value_name = "PATH")]
    readme: Option<PathBuf>,
}

fn run(cli: Cli) -> Result<(), String> {
    let readme = cli
        .readme
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")));
    let text = std::fs::read_to_string(&readme)
        .map_err(|e| format!("cannot read {}: {e}", readme.display()))?;
    let pages = dipc_tools::man::pages(&text).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&cli.out)
        .map_err(|e| format!("cannot create {}: {e}", cli.out.display()))?;
    for (name, roff) in pages {
        let path = cli.out.join(&name);
        std::fs::write(&path, roff).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dipc-man: {e}");
            ExitCode::from(1)
        }
    }
}
