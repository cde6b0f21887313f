//! Shared helpers for the integration tests: a tiny experiment that runs in seconds.
#![allow(dead_code)]

use std::path::Path;

use goodhart::Experiment;

/// A tiny but complete experiment: every stage runs, in a few seconds on 2 cores.
pub const TINY: &str = include_str!("../fixtures/tiny.toml");

pub fn tiny() -> Experiment {
    Experiment::from_toml(TINY, Path::new("tiny.toml")).expect("tiny config is valid")
}

/// TINY with `extra` TOML lines inserted at the top level (before the first table).
pub fn tiny_with(replace: &str, with: &str) -> String {
    assert!(TINY.contains(replace), "TINY has no {replace:?}");
    TINY.replacen(replace, with, 1)
}

/// Columns that measure wall-clock time, left out when tables are compared.
pub const WALL_CLOCK_COLUMNS: [&str; 1] = ["train_seconds"];

/// Every CSV table of a results folder, by file name, without the wall-clock columns.
pub fn tables_without_timings(dir: &Path) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "csv") {
            let text = std::fs::read_to_string(&path).unwrap();
            let header: Vec<&str> = text.lines().next().unwrap_or("").split(',').collect();
            let keep: Vec<usize> = (0..header.len()).filter(|&i| !WALL_CLOCK_COLUMNS.contains(&header[i])).collect();
            let body: Vec<String> = text
                .lines()
                .map(|l| {
                    let cells: Vec<&str> = l.split(',').collect();
                    keep.iter().filter_map(|&i| cells.get(i).copied()).collect::<Vec<_>>().join(",")
                })
                .collect();
            out.insert(path.file_name().unwrap().to_string_lossy().to_string(), body.join("\n"));
        }
    }
    assert!(out.contains_key("rm.csv") && out.contains_key("curves.csv"), "{} holds no tables", dir.display());
    out
}

/// Runs the goodhart binary in `cwd` with `args`; returns (success, stdout, stderr).
pub fn goodhart(args: &[&str], cwd: &Path) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_goodhart"))
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .output()
        .expect("goodhart runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Store entries that a finished run must not leave behind: temporaries and locks.
pub fn leftovers(store: &Path) -> Vec<String> {
    std::fs::read_dir(store)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with('.') && n != ".quarantine" || n.ends_with(".lock"))
        .collect()
}
