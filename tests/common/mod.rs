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
