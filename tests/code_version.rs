//! The code version's coverage: every source file a kind's make can reach — following
//! `crate::` and `super::` paths and the child modules a file names, from the kind's file in
//! `src/cell/make/` — is hashed into that kind's code version (its list in `build.rs`), or is
//! one of the files below that cannot change what a make writes. A new file a make starts to
//! use fails here until it is listed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Files a make reaches that cannot change what it writes, and why; the walk does not go on
/// through them.
const INERT: &[(&str, &str)] = &[
    ("src/lib.rs", "the crate's module list"),
    ("src/cell/mod.rs", "the list of kinds"),
    ("src/cell/kind.rs", "the trait, and Inputs and Loaded, which hand values over"),
    ("src/cell/cost.rs", "the cost model prices cells and makes nothing"),
    ("src/cell/store.rs", "where cells are written: folders and checksums, not contents"),
    ("src/cell/plan.rs", "which cells exist and their keys"),
    ("src/config.rs", "the experiment's values, which each recipe holds"),
    ("src/error.rs", "error messages"),
    ("src/progress.rs", "progress bars"),
    ("src/parallel.rs", "the work pool: results do not depend on --jobs (tests/smoke.rs)"),
    ("src/device.rs", "the device: not in the key, results do not depend on it"),
    ("src/digest.rs", "hashes for keys and checksums"),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The code of a file without comments and string contents.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = String::new();
    for line in text.lines() {
        let line = line.split("//").next().unwrap_or("");
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `src/a/b.rs` or `src/a/b/mod.rs` for the longest prefix of `segs` that is a module file.
fn module_file(segs: &[String]) -> Option<String> {
    for k in (1..=segs.len()).rev() {
        let base = format!("src/{}", segs[..k].join("/"));
        for candidate in [format!("{base}.rs"), format!("{base}/mod.rs")] {
            if root().join(&candidate).is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// The module path of a file (`src/cell/make/bon.rs` → cell, make, bon).
fn module_of(file: &str) -> Vec<String> {
    let rel = file.trim_start_matches("src/").trim_end_matches(".rs");
    let mut segs: Vec<String> = rel.split('/').map(String::from).collect();
    if segs.last().map(String::as_str) == Some("mod") || segs.last().map(String::as_str) == Some("lib") {
        segs.pop();
    }
    segs
}

/// The paths a file names: `crate::a::b`, `super::c`, `self::d`, with `{…}` groups expanded.
fn paths(text: &str) -> Vec<Vec<String>> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let word = |i: usize| -> (String, usize) {
        let mut j = i;
        while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
            j += 1;
        }
        (chars[i..j].iter().collect(), j)
    };
    fn skip_ws(chars: &[char], mut i: usize) -> usize {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        i
    }
    // Parses a path from `i` after `prefix`; pushes every full path it names.
    fn parse(chars: &[char], mut i: usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>, word: &dyn Fn(usize) -> (String, usize)) -> usize {
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
                    i = parse(chars, i, segs.clone(), out, word);
                }
            }
            let (w, j) = word(i);
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
    let mut i = 0;
    while i < chars.len() {
        let starts_word = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_' || chars[i - 1] == ':');
        if starts_word {
            let (w, j) = word(i);
            if (w == "crate" || w == "super" || w == "self") && chars.get(j) == Some(&':') && chars.get(j + 1) == Some(&':') {
                let mut v = Vec::new();
                let end = parse(&chars, j + 2, vec![w], &mut v, &word);
                out.extend(v);
                i = end.max(i + 1);
                continue;
            }
        }
        i += 1;
    }
    out
}

/// Every file reachable from `start`, not going on through [`INERT`] files.
fn reach(start: &str) -> BTreeSet<String> {
    let inert: BTreeSet<&str> = INERT.iter().map(|x| x.0).collect();
    let mut seen = BTreeSet::new();
    let mut todo = vec![start.to_string()];
    while let Some(file) = todo.pop() {
        if !seen.insert(file.clone()) || inert.contains(file.as_str()) {
            continue;
        }
        let text = code(&root().join(&file));
        let here = module_of(&file);
        let dir_module = file.ends_with("mod.rs") || file.ends_with("lib.rs");
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
            if let Some(f) = module_file(&full) {
                todo.push(f);
            }
        }
        // Child modules (`mod x;`) the file names as `x::…`.
        for line in text.lines() {
            let l = line.trim().trim_start_matches("pub ").trim_start_matches("pub(crate) ");
            if let Some(name) = l.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) {
                let name = name.trim();
                let named = text.matches(&format!("{name}::")).count() > text.matches(&format!("::{name}::")).count();
                if named {
                    let mut segs = if dir_module { here.clone() } else { here.clone() };
                    segs.push(name.to_string());
                    if let Some(f) = module_file(&segs) {
                        todo.push(f);
                    }
                }
            }
        }
    }
    seen.into_iter().filter(|f| !inert.contains(f.as_str())).collect()
}

/// Each kind's files in build.rs: COMMON plus its own list.
fn listed() -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(root().join("build.rs")).unwrap();
    let strings = |s: &str| -> Vec<String> { s.split('"').skip(1).step_by(2).filter(|x| x.starts_with("src/")).map(String::from).collect() };
    let common_start = text.find("const COMMON").expect("build.rs lists COMMON");
    let common_end = common_start + text[common_start..].find("];").unwrap();
    let common = strings(&text[common_start..common_end]);
    let kinds_start = text.find("const KINDS").expect("build.rs lists KINDS");
    let kinds_end = kinds_start + text[kinds_start..].find("\n];").unwrap();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut kind = String::new();
    // The strings of KINDS in order: a kind's name (upper case), then its files.
    for s in text[kinds_start..kinds_end].split('"').skip(1).step_by(2) {
        if !s.is_empty() && s.chars().all(|c| c.is_ascii_uppercase()) {
            kind = s.to_lowercase();
            out.insert(kind.clone(), common.iter().cloned().collect());
        } else if s.starts_with("src/") {
            out.get_mut(&kind).expect("a file after its kind").insert(s.to_string());
        }
    }
    out
}

#[test]
fn every_file_a_make_reaches_is_in_its_code_version() {
    let lists = listed();
    assert_eq!(lists.len(), 6, "{:?}", lists.keys());
    let mut missing = Vec::new();
    for (kind, files) in &lists {
        let reached = reach(&format!("src/cell/make/{kind}.rs"));
        // The walk sees the kernels: a kernel edit must change every key.
        assert!(reached.contains("src/model/ops.rs"), "{kind} reaches {reached:?}");
        for f in reached.difference(files) {
            missing.push(format!("{kind}: {f}"));
        }
    }
    assert!(missing.is_empty(), "files a make reaches that its code version does not hash (add them to build.rs, or to INERT with why): {missing:#?}");
}

#[test]
fn the_report_is_in_no_code_version() {
    for (kind, files) in listed() {
        assert!(files.iter().all(|f| !f.starts_with("src/output/") && !f.ends_with("conclusions.rs")), "{kind}: {files:?}");
    }
}
