//! `include/dipc.h` is written by hand beside the `extern "C"` functions
//! that implement it (`src/capi/`, `src/migrate/capi.rs`). This test reads
//! both and fails on any difference a C program would meet: a function
//! declared on one side only, a parameter or return type that differs, a
//! callback typedef or a struct whose fields differ from the Rust type
//! passed for it, or a `#define` whose value differs from the Rust constant
//! of that name.
//!
//! It compares types, not names (the header names parameters and fields
//! as the System V manual pages do). Rust types are written in C through
//! [`c_of_rust`]; one that it does not know fails the test (naming it),
//! so a new type is added there deliberately. `dipc_semctl` is declared
//! variadic in C and takes its fourth argument as the union `SemUn` in Rust
//! (see `capi/sysv.rs` for why that is the same call): `SemUn` is written
//! `...`.
//!
//! The parsers are for these two files as they are written (one
//! declaration per statement, no macros in declarations), not for C or
//! Rust in general: what they cannot read fails the test too.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A function's type: its return type and its parameters' types, in C.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sig {
    ret: String,
    params: Vec<String>,
}

impl std::fmt::Display for Sig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.ret, self.params.join(", "))
    }
}

/// What one side declares.
#[derive(Debug, Default)]
struct Decls {
    functions: BTreeMap<String, Sig>,
    /// Callback typedefs, by their C name.
    callbacks: BTreeMap<String, Sig>,
    /// Struct fields' types in order, by the struct's C name.
    structs: BTreeMap<String, Vec<String>>,
    /// Constants, by name: their value as text (a number or a name).
    constants: BTreeMap<String, String>,
}

// ------------------------------------------------------------------ C

/// Removes `/* */` and `//` comments.
fn strip_c_comments(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("/*") {
        out.push_str(&rest[..i]);
        let end = rest[i..]
            .find("*/")
            .expect("an unterminated comment in dipc.h");
        rest = &rest[i + end + 2..];
    }
    out.push_str(rest);
    out.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn tokens(s: &str) -> Vec<String> {
    let mut v = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_alphanumeric() || c == '_' {
            cur.push(c);
            continue;
        }
        if !cur.is_empty() {
            v.push(std::mem::take(&mut cur));
        }
        if c == '.' {
            v.push("...".into());
            chars.next();
            chars.next();
        } else if !c.is_whitespace() {
            v.push(c.to_string());
        }
    }
    if !cur.is_empty() {
        v.push(cur);
    }
    v
}

/// A C type with its declarator name, if any, left out: `const void *msgp`
/// gives `const void *`.
fn c_type(decl: &str, typedefs: &BTreeMap<String, String>) -> String {
    let mut t = tokens(decl);
    let words = t
        .iter()
        .filter(|w| {
            w.chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
        })
        .filter(|w| !matches!(w.as_str(), "const" | "struct"))
        .count();
    if words >= 2 && t.last().is_some_and(|w| w != "*") {
        t.pop();
    }
    let t: Vec<String> = t
        .into_iter()
        .map(|w| typedefs.get(&w).cloned().unwrap_or(w))
        .collect();
    t.join(" ")
}

/// Splits `s` at top-level commas.
fn split_params(s: &str) -> Vec<String> {
    let mut v = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' | '<' | '[' => depth += 1,
            ')' | '>' | ']' => depth -= 1,
            ',' if depth == 0 => {
                v.push(std::mem::take(&mut cur).trim().to_string());
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        v.push(cur.trim().to_string());
    }
    v
}

fn c_params(p: &str, typedefs: &BTreeMap<String, String>) -> Vec<String> {
    match p.trim() {
        "void" => Vec::new(),
        p => split_params(p)
            .iter()
            .map(|x| c_type(x, typedefs))
            .collect(),
    }
}

fn parse_header(text: &str) -> Decls {
    let text = strip_c_comments(text);
    let mut d = Decls::default();
    let mut body = String::new();
    let mut skip = false;
    for line in text.lines() {
        let l = line.trim();
        if l == "#ifdef __cplusplus" {
            skip = true;
            continue;
        }
        if skip {
            skip = l != "#endif";
            continue;
        }
        if let Some(def) = l.strip_prefix("#define ") {
            let mut it = def.splitn(2, char::is_whitespace);
            let (name, value) = (it.next().unwrap_or(""), it.next().unwrap_or("").trim());
            if !value.is_empty() {
                d.constants.insert(name.to_string(), value.to_string());
            }
            continue;
        }
        if l.starts_with('#') {
            continue;
        }
        body.push_str(line);
        body.push('\n');
    }
    // Plain typedefs first (`typedef int64_t pid_d;`): types are compared
    // with them resolved.
    let mut typedefs = BTreeMap::new();
    let mut statements = Vec::new();
    let mut rest = body.as_str();
    while let Some(semi) = rest.find(';') {
        let mut stmt = &rest[..semi];
        let mut next = &rest[semi + 1..];
        if stmt.contains('{') {
            // A struct: its body (no braces inside) holds the `;`s.
            let close = rest.find('}').expect("an unterminated struct in dipc.h");
            stmt = &rest[..close + 1];
            let after = &rest[close + 1..];
            let semi = after.find(';').expect("a struct without ';' in dipc.h");
            next = &after[semi + 1..];
        }
        statements.push(stmt.trim().to_string());
        rest = next;
    }
    for s in &statements {
        let t = tokens(s);
        if t.first().map(String::as_str) == Some("typedef") && !s.contains('(') {
            let name = t.last().expect("an empty typedef").clone();
            typedefs.insert(name, t[1..t.len() - 1].join(" "));
        }
    }
    for s in &statements {
        if s.is_empty() || (s.starts_with("typedef") && !s.contains('(')) {
            continue;
        }
        if let Some(st) = s.strip_prefix("struct ") {
            let (name, fields) = st.split_once('{').expect("a struct without a body");
            let fields = fields.trim_end_matches('}');
            let types = fields
                .split(';')
                .filter(|f| !f.trim().is_empty())
                .map(|f| c_type(f, &typedefs))
                .collect();
            d.structs.insert(name.trim().to_string(), types);
            continue;
        }
        if let Some(td) = s.strip_prefix("typedef ") {
            // typedef RET (*NAME)(PARAMS)
            let (ret, rest) = td.split_once("(*").expect("a typedef that is no callback");
            let (name, params) = rest
                .split_once(")")
                .expect("a callback typedef without a name");
            let params = params.trim().trim_start_matches('(').trim_end_matches(')');
            d.callbacks.insert(
                name.trim().to_string(),
                Sig {
                    ret: c_type(ret, &typedefs),
                    params: c_params(params, &typedefs),
                },
            );
            continue;
        }
        let open = s
            .find('(')
            .unwrap_or_else(|| panic!("cannot read `{s}` in dipc.h"));
        let head = &s[..open];
        let params = s[open + 1..]
            .trim_end()
            .strip_suffix(')')
            .expect("a prototype without ')'");
        let mut t = tokens(head);
        let name = t.pop().expect("a prototype without a name");
        d.functions.insert(
            name,
            Sig {
                ret: c_type(&t.join(" "), &typedefs),
                params: c_params(params, &typedefs),
            },
        );
    }
    // Return types and parameters compare as token strings.
    for sig in d.functions.values_mut().chain(d.callbacks.values_mut()) {
        sig.ret = tokens(&sig.ret).join(" ");
    }
    d
}

// --------------------------------------------------------------- Rust

/// The C spelling of a Rust type of the C interface; `None` for one this
/// test does not know.
fn c_of_rust(t: &str) -> Option<String> {
    let t = t.trim().replace("libc::", "").replace("std::ffi::", "");
    if let Some(inner) = t.strip_prefix("*const ") {
        return Some(format!("const {} *", c_of_rust(inner)?));
    }
    if let Some(inner) = t.strip_prefix("*mut ") {
        return Some(format!("{} *", c_of_rust(inner)?));
    }
    // A nullable callback is the callback's pointer type.
    if let Some(inner) = t.strip_prefix("Option<").and_then(|x| x.strip_suffix('>')) {
        return c_of_rust(inner);
    }
    let c = match t.as_str() {
        "()" => "void",
        "c_int" | "i32" => "int",
        "c_uint" | "u32" => "unsigned",
        "c_long" => "long",
        "c_char" => "char",
        "c_void" => "void",
        "i64" => "int64_t",
        "size_t" | "usize" => "size_t",
        "ssize_t" | "isize" => "ssize_t",
        "key_t" => "key_t",
        "uid_t" => "uid_t",
        "msqid_ds" => "struct msqid_ds",
        "shmid_ds" => "struct shmid_ds",
        "sembuf" => "struct sembuf",
        "timespec" => "struct timespec",
        "DipcCallInfo" => "struct dipc_call_info",
        "DipcProc" => "struct dipc_proc",
        "DipcProcFn" => "dipc_proc_fn",
        "DipcInitialFn" => "dipc_initial_fn",
        "SaveFn" => "dipc_save_fn",
        "RestoreFn" => "dipc_restore_fn",
        // Variadic in C (see the module docs).
        "SemUn" => "...",
        _ => return None,
    };
    Some(c.to_string())
}

fn c_of(t: &str, what: &str) -> String {
    c_of_rust(t).unwrap_or_else(|| {
        panic!(
            "{what}: the Rust type `{t}` has no C spelling in tests/header.rs \
             (c_of_rust): add it there"
        )
    })
}

/// The Rust sources of the crate.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).expect("reading libdipc/src") {
        let p = e.expect("a directory entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `(params) -> ret` after a function's name, up to its body or `;`.
fn rust_sig(after_name: &str, what: &str) -> Sig {
    let mut depth = 0;
    let mut end = 0;
    for (i, c) in after_name.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    end = i;
                    break;
                }
            }
            _ => {}
        }
    }
    let params = &after_name[1..end];
    let tail = &after_name[end + 1..];
    let tail = &tail[..tail.find(['{', ';']).unwrap_or(tail.len())];
    let ret = tail.trim().strip_prefix("->").map_or("()", str::trim);
    Sig {
        ret: c_of(ret, what),
        params: split_params(params)
            .iter()
            .map(|p| {
                // `name: Type`; a callback's parameters have no names.
                let ty = p.split_once(": ").map_or(p.as_str(), |(_, t)| t);
                c_of(ty, what)
            })
            .collect(),
    }
}

fn rust_item_after<'a>(text: &'a str, key: &str) -> impl Iterator<Item = (String, &'a str)> + 'a {
    let key = key.to_string();
    text.match_indices(key.clone().as_str())
        .map(|(i, _)| &text[i..])
        .map(move |s| {
            let s = &s[key.len()..];
            let n = s
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(s.len());
            (s[..n].to_string(), &s[n..])
        })
        .collect::<Vec<_>>()
        .into_iter()
}

fn parse_rust() -> Decls {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut d = Decls::default();
    for f in files {
        let text = fs::read_to_string(&f).expect("reading a source file");
        let shown = f.strip_prefix(root()).unwrap_or(&f).display().to_string();
        for (i, _) in text.match_indices("#[no_mangle]") {
            let item = &text[i..];
            let at = item
                .find("fn ")
                .expect("#[no_mangle] on something other than a fn");
            let decl = &item[..at];
            assert!(
                decl.contains("extern \"C\""),
                "{shown}: a #[no_mangle] function that is not extern \"C\""
            );
            let s = &item[at + 3..];
            let n = s.find('(').expect("a fn without parameters");
            let name = s[..n].trim().to_string();
            let sig = rust_sig(&s[n..], &format!("{shown}: {name}"));
            d.functions.insert(name, sig);
        }
        for (name, rest) in rust_item_after(&text, "pub type ") {
            let Some(def) = rest.trim_start().strip_prefix('=') else {
                continue;
            };
            let def = def.trim_start();
            // A nullable callback: `Option<unsafe extern "C" fn(..) -> R>;`.
            let (def, nullable) = match def.strip_prefix("Option<") {
                Some(d) => (d, true),
                None => (def, false),
            };
            let def = def.trim_start_matches("unsafe ");
            let Some(f) = def.strip_prefix("extern \"C\" fn") else {
                continue;
            };
            let f = match nullable {
                true => f.replacen(">;", ";", 1),
                false => f.to_string(),
            };
            let Some(c) = c_of_rust(&name) else {
                panic!("{shown}: the callback type {name} has no C spelling (c_of_rust)");
            };
            d.callbacks
                .insert(c, rust_sig(&f, &format!("{shown}: {name}")));
        }
        for (name, rest) in rust_item_after(&text, "#[repr(C)]\npub struct ") {
            let body = &rest[rest.find('{').expect("a struct body") + 1..];
            let body = &body[..body.find('}').expect("a struct's end")];
            let fields = body
                .lines()
                .map(str::trim)
                .filter(|l| l.starts_with("pub "))
                .map(|l| {
                    let ty = l.split_once(": ").expect("a field without a type").1;
                    c_of(ty.trim_end_matches(','), &format!("{shown}: {name}"))
                })
                .collect();
            let c = c_of(&name, &shown);
            d.structs
                .insert(c.trim_start_matches("struct ").to_string(), fields);
        }
        for (name, rest) in rust_item_after(&text, "pub const ") {
            let Some((_, value)) = rest.split_once('=') else {
                continue;
            };
            let value = value[..value.find(';').expect("a const without ';'")].trim();
            d.constants.insert(name, value.replace("libc::", ""));
        }
    }
    d
}

// ------------------------------------------------------------ compare

/// A constant's value as a number when it is one (C's octal `0` prefix,
/// Rust's `0o`, `0x`, parentheses and a sign), else its text.
fn value(v: &str) -> String {
    let v = v
        .trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .trim();
    let (neg, d) = match v.strip_prefix('-') {
        Some(d) => (true, d.trim()),
        None => (false, v),
    };
    let n = if let Some(h) = d.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok()
    } else if let Some(o) = d.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()
    } else if d.len() > 1 && d.starts_with('0') {
        i64::from_str_radix(&d[1..], 8).ok()
    } else {
        d.parse::<i64>().ok()
    };
    match n {
        Some(n) if neg => (-n).to_string(),
        Some(n) => n.to_string(),
        None => v.to_string(),
    }
}

/// Every difference between the header and the Rust declarations.
fn differences(h: &Decls, r: &Decls) -> Vec<String> {
    let mut out = Vec::new();
    let norm = |s: &Sig| Sig {
        ret: tokens(&s.ret).join(" "),
        params: s.params.iter().map(|p| tokens(p).join(" ")).collect(),
    };
    for (kind, hs, rs) in [
        ("function", &h.functions, &r.functions),
        ("callback typedef", &h.callbacks, &r.callbacks),
    ] {
        for (name, hsig) in hs {
            match rs.get(name) {
                None => out.push(format!("{kind} {name}: in dipc.h, not in Rust")),
                Some(rsig) if norm(rsig) != norm(hsig) => out.push(format!(
                    "{kind} {name}: dipc.h has {}, Rust has {}",
                    norm(hsig),
                    norm(rsig)
                )),
                Some(_) => {}
            }
        }
        for name in rs.keys().filter(|n| !hs.contains_key(*n)) {
            out.push(format!("{kind} {name}: exported by Rust, not in dipc.h"));
        }
    }
    for (name, hf) in &h.structs {
        let hf: Vec<String> = hf.iter().map(|t| tokens(t).join(" ")).collect();
        match r.structs.get(name) {
            None => out.push(format!("struct {name}: in dipc.h, not in Rust")),
            Some(rf) => {
                let rf: Vec<String> = rf.iter().map(|t| tokens(t).join(" ")).collect();
                if rf != hf {
                    out.push(format!(
                        "struct {name}: dipc.h has fields {hf:?}, Rust has {rf:?}"
                    ));
                }
            }
        }
    }
    for (name, hv) in &h.constants {
        if name == "DIPC_H" {
            continue;
        }
        match r.constants.get(name) {
            None => out.push(format!("constant {name}: in dipc.h, not in Rust")),
            Some(rv) if value(rv) != value(hv) => {
                out.push(format!("constant {name}: dipc.h has {hv}, Rust has {rv}"))
            }
            Some(_) => {}
        }
    }
    out
}

#[test]
fn dipc_h_declares_what_the_rust_code_exports() {
    let path = root().join("include").join("dipc.h");
    let text = fs::read_to_string(&path).expect("reading include/dipc.h");
    let h = parse_header(&text);
    let r = parse_rust();
    // The parsers found what there is to compare (a parser that reads
    // nothing would find no difference).
    assert!(h.functions.len() >= 25, "{:?}", h.functions.keys());
    assert_eq!(h.callbacks.len(), 4, "{:?}", h.callbacks.keys());
    assert_eq!(h.structs.len(), 2, "{:?}", h.structs.keys());
    for c in ["IPC_DIPC", "DIPC_NOWAIT", "DIPC_WAIT", "DIPC_STEP"] {
        assert!(h.constants.contains_key(c), "{c}");
    }
    let diff = differences(&h, &r);
    assert!(
        diff.is_empty(),
        "include/dipc.h and the Rust declarations disagree:\n  {}\n\
         Change dipc.h (or the Rust declaration) so that they agree.",
        diff.join("\n  ")
    );
}

#[test]
fn a_changed_declaration_is_a_difference() {
    let text = fs::read_to_string(root().join("include").join("dipc.h")).expect("dipc.h");
    let r = parse_rust();
    let before = differences(&parse_header(&text), &r).len();
    for (from, to) in [
        (
            "int dipc_msgget(key_t key, int msgflg);",
            "int dipc_msgget(key_t key, long msgflg);",
        ),
        ("ssize_t dipc_msgrcv(", "int dipc_msgrcv("),
        (
            "int dipc_shmdt(const void *shmaddr);",
            "int dipc_shmdt(void *shmaddr);",
        ),
        ("#define DIPC_STEP 1", "#define DIPC_STEP 2"),
        ("    size_t outlen;", "    int outlen;"),
        (
            "typedef void (*dipc_restore_fn)(void *ctx, const void *state, size_t len);",
            "typedef void (*dipc_restore_fn)(void *ctx, void *state, size_t len);",
        ),
        ("int dipc_poll(int timeout_ms);", ""),
    ] {
        assert!(text.contains(from), "dipc.h no longer has `{from}`");
        let h = parse_header(&text.replacen(from, to, 1));
        assert_eq!(differences(&h, &r).len(), before + 1, "{from} -> {to}");
    }
}
