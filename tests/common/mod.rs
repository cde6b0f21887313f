//! Shared helpers for the integration tests: a tiny experiment that runs in seconds.
#![allow(dead_code)]

use std::path::Path;

use goodhart::Experiment;

/// The device the model, training and end-to-end tests run on: `GOODHART_TEST_DEVICE`,
/// `cpu` when unset, or `cuda` (`cuda:N`) for a build with `--features cuda` on a GPU
/// machine (scripts/gpu-run sets it). Tests of the fused CPU kernels stay on the CPU.
pub fn device_name() -> String {
    std::env::var("GOODHART_TEST_DEVICE").unwrap_or_else(|_| "cpu".into())
}

/// [`device_name`], opened once per test process: tensors of two separately opened CUDA
/// devices do not mix.
pub fn device() -> candle_core::Device {
    static DEVICE: std::sync::OnceLock<candle_core::Device> = std::sync::OnceLock::new();
    DEVICE
        .get_or_init(|| {
            let name = device_name();
            goodhart::device::parse(&name).unwrap_or_else(|e| panic!("GOODHART_TEST_DEVICE={name}: {e}"))
        })
        .clone()
}

/// Run options for a run into `out` with the store `store`, on the test device.
pub fn run_options(out: std::path::PathBuf, store: std::path::PathBuf) -> goodhart::run::RunOptions {
    goodhart::run::RunOptions {
        device: device(),
        ..goodhart::run::RunOptions::new(out, store)
    }
}

/// `args` with `--device` and the test device added to a `goodhart run` that names none.
pub fn with_device<'a>(args: &[&'a str], name: &'a str) -> Vec<&'a str> {
    let mut v = args.to_vec();
    if v.first() == Some(&"run") && !v.contains(&"--device") {
        v.extend(["--device", name]);
    }
    v
}

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

/// The goodhart binary: cargo's, or `GOODHART_BIN` when the test binaries run away from
/// the build (scripts/gpu-run runs them on a GPU machine, from the repository's root).
pub fn bin() -> std::path::PathBuf {
    std::env::var_os("GOODHART_BIN").map_or_else(|| env!("CARGO_BIN_EXE_goodhart").into(), Into::into)
}

/// Runs the goodhart binary in `cwd` with `args` (a `run` on the test device); returns
/// (success, stdout, stderr).
pub fn goodhart(args: &[&str], cwd: &Path) -> (bool, String, String) {
    let name = device_name();
    let out = std::process::Command::new(bin())
        .args(with_device(args, &name))
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

/// Every text an SVG figure writes (`<text …>TEXT</text>`), trimmed.
pub fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| {
            let body = &t[t.find('>')? + 1..];
            Some(body[..body.find("</text>")?].trim().to_string())
        })
        .collect()
}
