//! The manual pages, generated from what the project already keeps:
//! dipcd(8) and dipcref(8) from their clap definitions (clap_mangen), the
//! rest of every page from the README's own sections, marked there with
//! `<!-- man: PAGE -->` … `<!-- /man -->` and turned from markdown into
//! roff here (pulldown-cmark to read it, roff to write it). So an option,
//! a subcommand or a README paragraph has one source, and `tools/man`
//! brings the pages in `dist/man` up to date.

mod markdown;

pub use markdown::markdown;
use roff::{bold, italic, roman, Inline, Roff};
use std::fmt;

/// Where a page's DESCRIPTION and its other sections come from.
enum Source {
    /// A clap command (synopsis, options and subcommands), then the
    /// README's fragments.
    Command(fn() -> clap::Command),
    /// The README's fragments only, after this NAME line.
    Text(&'static str),
}

struct PageSpec {
    /// The page's name and section: `dipc.conf` and `5` make `dipc.conf.5`.
    name: &'static str,
    section: &'static str,
    source: Source,
    see_also: &'static [&'static str],
}

const PAGES: &[PageSpec] = &[
    PageSpec {
        name: "dipcd",
        section: "8",
        source: Source::Command(dipc_back_end::cli::command),
        see_also: &["dipcref(8)", "dipc.conf(5)", "dipc(7)", "dipc(3)", "systemd.service(5)"],
    },
    PageSpec {
        name: "dipcref",
        section: "8",
        source: Source::Command(crate::dipcref_cli::command),
        see_also: &["dipcd(8)", "dipc.conf(5)", "dipc(7)", "ipcs(1)"],
    },
    PageSpec {
        name: "dipc.conf",
        section: "5",
        source: Source::Text("configuration of the dipc daemons and library"),
        see_also: &["dipcd(8)", "dipcref(8)", "dipc(7)", "dipc(3)"],
    },
    PageSpec {
        name: "dipc",
        section: "7",
        source: Source::Text("distributed System V IPC for Linux clusters: the model and its semantics"),
        see_also: &["dipcd(8)", "dipcref(8)", "dipc.conf(5)", "dipc(3)", "sysvipc(7)"],
    },
    PageSpec {
        name: "dipc",
        section: "3",
        source: Source::Text("the dipc C library: System V IPC calls across hosts, process ids, distributed processes"),
        see_also: &["dipc(7)", "dipc.conf(5)", "msgget(2)", "semget(2)", "shmget(2)", "kill(2)"],
    },
];

/// What is wrong with the README's markers.
#[derive(Debug, PartialEq)]
pub struct MarkerError(pub String);

impl fmt::Display for MarkerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "README.md: {}", self.0)
    }
}

impl std::error::Error for MarkerError {}

/// `.TH`'s date, left empty so that the pages depend on their sources
/// only: written as `""`, since roff writes an empty argument as nothing,
/// which would shift the source and manual into the date's place.
const NO_DATE: &str = "\"\"";

const OPEN: &str = "<!-- man: ";
const CLOSE: &str = "<!-- /man -->";

/// The README's fragments of page `file` (`dipc.conf.5`), in the order
/// they appear, joined.
pub fn fragments(readme: &str, file: &str) -> Result<String, MarkerError> {
    let mut out = String::new();
    let mut open: Option<(usize, String)> = None;
    for (no, line) in readme.lines().enumerate() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix(OPEN) {
            let Some(name) = rest.strip_suffix("-->") else {
                return Err(MarkerError(format!(
                    "line {}: unclosed marker comment",
                    no + 1
                )));
            };
            if let Some((at, _)) = open {
                return Err(MarkerError(format!(
                    "line {}: a man marker inside the one opened at line {at}",
                    no + 1
                )));
            }
            open = Some((no + 1, name.trim().to_string()));
            continue;
        }
        if t == CLOSE {
            match open.take() {
                None => {
                    return Err(MarkerError(format!(
                        "line {}: {CLOSE} without an opening marker",
                        no + 1
                    )))
                }
                // Fragments apart in the README stay apart in the page.
                Some((_, name)) if name == file => out.push('\n'),
                Some(_) => {}
            }
            continue;
        }
        if matches!(&open, Some((_, name)) if name == file) {
            out.push_str(line);
            out.push('\n');
        }
    }
    if let Some((at, name)) = open {
        return Err(MarkerError(format!(
            "line {at}: the marker of {name} is never closed"
        )));
    }
    if out.trim().is_empty() {
        return Err(MarkerError(format!(
            "no section is marked {OPEN}{file} -->"
        )));
    }
    Ok(out)
}

/// Every page as (file name, roff source), from the README's text.
pub fn pages(readme: &str) -> Result<Vec<(String, String)>, MarkerError> {
    PAGES.iter().map(|p| page(p, readme)).collect()
}

fn page(spec: &PageSpec, readme: &str) -> Result<(String, String), MarkerError> {
    let file = format!("{}.{}", spec.name, spec.section);
    let body = fragments(readme, &file)?;
    let title = spec.name.to_uppercase();
    let source = format!("dipc {}", env!("CARGO_PKG_VERSION"));
    let mut out = String::new();
    match &spec.source {
        Source::Command(command) => {
            let mut cmd = command();
            cmd.build();
            let man = clap_mangen::Man::new(cmd.clone())
                .title(title)
                .section(spec.section)
                .date(NO_DATE)
                .source(source)
                .manual("dipc manual");
            let mut buf = Vec::new();
            // Writing to a Vec cannot fail.
            let _ = man.render_title(&mut buf);
            let _ = man.render_name_section(&mut buf);
            let _ = man.render_synopsis_section(&mut buf);
            out.push_str(&String::from_utf8_lossy(&buf));
            let mut r = Roff::new();
            r.control("SH", ["DESCRIPTION"]);
            markdown(&mut r, &body);
            out.push_str(&r.render());
            buf.clear();
            let _ = man.render_options_section(&mut buf);
            out.push_str(&String::from_utf8_lossy(&buf));
            let mut r = Roff::new();
            subcommands(&mut r, &cmd);
            see_also(&mut r, spec.see_also);
            out.push_str(&r.render());
        }
        Source::Text(what) => {
            let mut r = Roff::new();
            r.control(
                "TH",
                [
                    title.as_str(),
                    spec.section,
                    NO_DATE,
                    &source,
                    "dipc manual",
                ],
            );
            r.control("SH", ["NAME"]);
            r.text([roman(format!("{} - {what}", spec.name))]);
            r.control("SH", ["DESCRIPTION"]);
            markdown(&mut r, &body);
            see_also(&mut r, spec.see_also);
            out.push_str(&r.render());
        }
    }
    Ok((file, ascii(&one_preamble(&out))))
}

/// clap_mangen writes roff's apostrophe preamble before each section it
/// renders; a page needs it once, at the top.
fn one_preamble(page: &str) -> String {
    let preamble = Roff::new().render();
    if preamble.is_empty() {
        return page.to_string();
    }
    let rest = page.replace(&preamble, "");
    format!("{preamble}{rest}")
}

/// The page with every character past ASCII as groff's `\\[uXXXX]`:
/// groff reads its input as Latin-1 unless told otherwise (man-db tells
/// it, a plain `groff -man` does not), so µ, × or — would come out wrong.
fn ascii(page: &str) -> String {
    let mut out = String::with_capacity(page.len());
    for c in page.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(&format!("\\[u{:04X}]", c as u32));
        }
    }
    out
}

fn see_also(r: &mut Roff, pages: &[&str]) {
    r.control("SH", ["SEE ALSO"]);
    let mut inlines = Vec::new();
    for (i, p) in pages.iter().enumerate() {
        let (name, sect) = p.split_once('(').unwrap_or((p, ""));
        if i > 0 {
            inlines.push(roman(", "));
        }
        inlines.push(bold(name));
        inlines.push(roman(format!("({sect}")));
    }
    r.text(inlines);
}

/// A COMMANDS section: each subcommand's usage, help and arguments (the
/// global options are under OPTIONS already).
fn subcommands(r: &mut Roff, cmd: &clap::Command) {
    let subs: Vec<&clap::Command> = cmd.get_subcommands().filter(|s| !s.is_hide_set()).collect();
    if subs.is_empty() {
        return;
    }
    r.control("SH", ["COMMANDS"]);
    for sub in subs {
        let usage = sub.clone().render_usage().to_string();
        let usage = usage.trim().trim_start_matches("Usage:").trim();
        r.control("SS", [sub.get_name()]);
        r.text([bold(usage)]);
        if let Some(about) = sub.get_long_about().or(sub.get_about()) {
            r.control("PP", []);
            r.text([roman(about.to_string())]);
        }
        for arg in sub.get_arguments() {
            let id = arg.get_id().as_str();
            if arg.is_hide_set() || arg.is_global_set() || id == "help" || id == "version" {
                continue;
            }
            r.control("TP", []);
            r.text(arg_tag(arg));
            let mut help = arg
                .get_long_help()
                .or(arg.get_help())
                .map(|h| h.to_string())
                .unwrap_or_default();
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            if !defaults.is_empty() && !arg.is_hide_default_value_set() {
                help.push_str(&format!(" [default: {}]", defaults.join(", ")));
            }
            r.text([roman(help)]);
        }
    }
}

fn arg_tag(arg: &clap::Arg) -> Vec<Inline> {
    let value = arg
        .get_value_names()
        .and_then(|v| v.first())
        .map(|v| v.to_string())
        .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
    if arg.is_positional() {
        return vec![italic(value)];
    }
    let mut tag = Vec::new();
    if let Some(s) = arg.get_short() {
        tag.push(bold(format!("-{s}")));
    }
    if let Some(l) = arg.get_long() {
        if !tag.is_empty() {
            tag.push(roman(", "));
        }
        tag.push(bold(format!("--{l}")));
    }
    if arg.get_action().takes_values() {
        tag.push(roman(" "));
        tag.push(italic(value));
    }
    tag
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_join_in_order_and_skip_other_pages() {
        let md = "a\n<!-- man: x.5 -->\none\n<!-- /man -->\nb\n<!-- man: y.7 -->\nno\n<!-- /man -->\n<!-- man: x.5 -->\ntwo\n<!-- /man -->\n";
        assert_eq!(fragments(md, "x.5").unwrap(), "one\n\ntwo\n\n");
        assert_eq!(fragments(md, "y.7").unwrap(), "no\n\n");
    }

    #[test]
    fn broken_markers_are_refused_with_their_line() {
        let e = fragments("<!-- man: x.5 -->\none\n", "x.5").unwrap_err();
        assert!(
            e.0.contains("line 1") && e.0.contains("never closed"),
            "{e}"
        );
        let e = fragments("<!-- /man -->\n", "x.5").unwrap_err();
        assert!(e.0.contains("without an opening"), "{e}");
        let e = fragments("<!-- man: y.7 -->\nz\n<!-- /man -->\n", "x.5").unwrap_err();
        assert!(e.0.contains("no section is marked"), "{e}");
    }

    /// `.TH TITLE SECTION DATE SOURCE MANUAL`: with the date written as
    /// nothing, man showed the version as the date and the manual's name
    /// as the source.
    #[test]
    fn the_title_line_keeps_source_and_manual_in_place() {
        let readme = include_str!("../../README.md");
        let version = env!("CARGO_PKG_VERSION");
        for (file, page) in pages(readme).expect("the pages") {
            let th = page
                .lines()
                .find(|l| l.starts_with(".TH "))
                .unwrap_or_else(|| panic!("{file}: no .TH"));
            let (name, sect) = file.rsplit_once('.').expect("NAME.SECTION");
            let want = format!(
                ".TH {} {sect} \"\" \"dipc {version}\" \"dipc manual\"",
                name.to_uppercase()
            );
            assert_eq!(th, want, "{file}");
        }
    }

    #[test]
    fn markdown_becomes_roff_without_raw_control_lines() {
        let mut r = Roff::new();
        markdown(
            &mut r,
            "## Head\n\nText `code` and *it*.\n.starts with a dot\n\n\
             - one\n- two\n\n| key | default | meaning |\n|---|---|---|\n| `a` | `1` | what a is |\n\n\
             ```c\n.x = 1;\n```\n",
        );
        let out = r.to_roff();
        assert!(out.contains(".SH HEAD\n"), "{out}");
        assert!(out.contains("\\fBcode\\fR"), "{out}");
        assert!(out.contains("\\fIit\\fR"), "{out}");
        assert!(out.contains("\n\\&.starts with a dot"), "{out}");
        assert!(out.contains(".IP \\(bu 2\none\n"), "{out}");
        assert!(
            out.contains(".TP\n\\fBa\\fR\ndefault: \\fB1\\fR\n.br\nwhat a is\n"),
            "{out}"
        );
        assert!(out.contains(".nf\n\\&.x = 1;\n.fi\n"), "{out}");
    }
}
