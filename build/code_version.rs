//! The code version of each kind of cell, derived from the source rather than listed.
//!
//! A kind is a type with `impl CellKind for TYPE` in some file of `src/`; its code version is
//! a hash of every source file its make can reach from that file — following `crate::`,
//! `super::` and `self::` paths (with `{…}` groups) and the child modules a file names —
//! comment-only and blank lines and indentation left out, plus `Cargo.lock` (the kernels of
//! the dependencies) and what the build adds (the target's architecture and compiled-in
//! vector extensions). The walk stops at the files of [`INERT`], each of which cannot change
//! what a make writes, and says why.
//!
//! `build.rs` exports each version as `GOODHART_CODE_<NAME>` (NAME: the type's name without
//! its `Cell` suffix, upper case); `tests/code_version.rs` checks the walk on a copy of the
//! tree: a changed kernel constant changes every kind's version, a changed report none.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Files a make reaches that cannot change what it writes, and why; the walk does not go on
/// through them.
pub const INERT: &[(&str, &str)] = &[
    ("src/lib.rs", "the crate's module list"),
    ("src/cell/mod.rs", "the cell layer's module list"),
    ("src/cell/kind.rs", "the trait, and Inputs and Loaded, which hand values over"),
    ("src/cell/cost.rs", "the cost model prices cells and makes nothing"),
    ("src/cell/store.rs", "where cells are written: folders and checksums, not contents"),
    ("src/plan/mod.rs", "which cells exist and their keys"),
    ("src/plan/kinds.rs", "the list of kinds"),
    ("src/config/validate.rs", "checks an experiment: a valid experiment's values do not depend on it"),
    ("src/config/fields.rs", "the checks of values and their messages: a valid experiment's values do not depend on them"),
    ("src/config/locate.rs", "where in the file a bad value stands, for error messages"),
    ("src/stats/claims.rs", "which claims the report judges: `[conclusions]` is in no recipe"),
    ("src/error.rs", "error messages"),
    ("src/progress.rs", "progress bars"),
    ("src/parallel.rs", "the work pool: results do not depend on --jobs (tests/smoke.rs)"),
    ("src/device.rs", "the device: not in the key, results do not depend on it"),
    ("src/digest.rs", "hashes for keys and checksums"),
];

/// The code of a file for the walk: each line up to a `//` (comments and doc comments out).
fn code(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        out.push_str(line.split("//").next().unwrap_or(""));
        out.push('\n');
    }
    out
}

/// The code of a file for the hash: comment-only and blank lines and indentation left out.
pub fn normalized(text: &str) -> String {
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// `src/a/b.rs` or `src/a/b/mod.rs` for the longest prefix of `segs` that is a module file.
fn module_file(root: &Path, segs: &[String]) -> Option<String> {
    for k in (1..=segs.len()).rev() {
        let base = format!("src/{}", segs[..k].join("/"));
        for candidate in [format!("{base}.rs"), format!("{base}/mod.rs")] {
            if root.join(&candidate).is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// The module path of a file (`src/methods/bon/cell.rs` → methods, bon, cell).
fn module_of(file: &str) -> Vec<String> {
    let rel = file.trim_start_matches("src/").trim_end_matches(".rs");
    let mut segs: Vec<String> = rel.split('/').map(String::from).collect();
    if matches!(segs.last().map(String::as_str), Some("mod") | Some("lib")) {
        segs.pop();
    }
    segs
}

fn skip_ws(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    i
}

fn word(chars: &[char], i: usize) -> (String, usize) {
    let mut j = i;
    while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
        j += 1;
    }
    (chars[i..j].iter().collect(), j)
}

/// Parses a path from `i` on, after `prefix`; pushes every full path it names.
fn parse(chars: &[char], mut i: usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let mut segs = prefix;
    loop {
        i = skip_ws(chars, i);
        if i < chars.len() && chars[i] == '{' {
            i += 1;
            loop {
                i = skip_ws(chars, i);
                if i >= chars.len() || chars[i] == '}' {
                    return i + 1;
                }
                if chars[i] == ',' {
                    i += 1;
                    continue;
                }
                i = parse(chars, i, segs.clone(), out);
            }
        }
        let (w, j) = word(chars, i);
        if w.is_empty() {
            out.push(segs);
            return i.max(j);
        }
        segs.push(w);
        i = j;
        if i + 1 < chars.len() && chars[i] == ':' && chars[i + 1] == ':' {
            i += 2;
        } else {
            out.push(segs);
            return i;
        }
    }
}

/// The paths a file's code names: `crate::a::b`, `super::c`, `self::d`, groups expanded.
fn paths(text: &str) -> Vec<Vec<String>> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts_word = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_' || chars[i - 1] == ':');
        if starts_word {
            let (w, j) = word(&chars, i);
            if (w == "crate" || w == "super" || w == "self") && chars.get(j) == Some(&':') && chars.get(j + 1) == Some(&':') {
                i = parse(&chars, j + 2, vec![w], &mut out).max(i + 1);
                continue;
            }
        }
        i += 1;
    }
    out
}

fn read(root: &Path, file: &str) -> String {
    std::fs::read_to_string(root.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// Every file reachable from `start` (a path under `root`, `src/…`), the [`INERT`] ones
/// left out and not walked through.
pub fn reach(root: &Path, start: &str) -> BTreeSet<String> {
    let inert: BTreeSet<&str> = INERT.iter().map(|x| x.0).collect();
    let mut seen = BTreeSet::new();
    let mut todo = vec![start.to_string()];
    while let Some(file) = todo.pop() {
        if !seen.insert(file.clone()) || inert.contains(file.as_str()) {
            continue;
        }
        let text = code(&read(root, &file));
        let here = module_of(&file);
        for p in paths(&text) {
            let mut base: Vec<String> = Vec::new();
            let mut rest = p.as_slice();
            match rest.first().map(String::as_str) {
                Some("crate") => rest = &rest[1..],
                Some("self") => {
                    base = here.clone();
                    rest = &rest[1..];
                }
                Some("super") => {
                    base = here.clone();
                    while rest.first().map(String::as_str) == Some("super") {
                        base.pop();
                        rest = &rest[1..];
                    }
                }
                _ => {}
            }
            let full: Vec<String> = base.into_iter().chain(rest.iter().cloned()).collect();
            if let Some(f) = module_file(root, &full) {
                todo.push(f);
            }
        }
        // Child modules (`mod x;`) that the file names as `x::…`.
        for line in text.lines() {
            let l = line.trim().trim_start_matches("pub ").trim_start_matches("pub(crate) ");
            if let Some(name) = l.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) {
                let name = name.trim();
                if text.matches(&format!("{name}::")).count() > text.matches(&format!("::{name}::")).count() {
                    let mut segs = here.clone();
                    segs.push(name.to_string());
                    if let Some(f) = module_file(root, &segs) {
                        todo.push(f);
                    }
                }
            }
        }
    }
    seen.into_iter().filter(|f| !inert.contains(f.as_str())).collect()
}

/// The kinds of cell in `root/src`: (NAME, the file that implements `CellKind` for it).
pub fn kinds(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut dirs = vec![root.join("src")];
    while let Some(dir) = dirs.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).map(|e| e.unwrap().path()).collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = code(&std::fs::read_to_string(&path).unwrap());
                let file = path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
                for rest in text.split("impl CellKind for ").skip(1) {
                    let (ty, _) = word(&rest.chars().collect::<Vec<_>>(), 0);
                    out.push((ty.trim_end_matches("Cell").to_uppercase(), file.clone()));
                }
            }
        }
    }
    out.sort();
    out
}

/// FNV-1a, 64 bits: enough to tell code versions apart, no build dependency needed.
fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Each kind's code version (16 hex digits) and the files it hashes, for the tree at `root`;
/// `extra` is what the build adds (target, vector extensions).
pub fn versions(root: &Path, extra: &str) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
    let mut out = BTreeMap::new();
    for (name, file) in kinds(root) {
        let files = reach(root, &file);
        let mut all = format!("{name}\n{extra}\nCargo.lock\n{lock}\n");
        for f in &files {
            all.push_str(f);
            all.push('\n');
            all.push_str(&normalized(&read(root, f)));
            all.push('\n');
        }
        out.insert(name, (format!("{:016x}", fnv(all.as_bytes())), files));
    }
    out
}
