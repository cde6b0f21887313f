//! Shared helpers for the integration tests: a tiny experiment that runs in seconds.
#![allow(dead_code)]

use std::path::Path;

use goodhart::Experiment;

/// A tiny but complete experiment: every stage runs, in a few seconds on 2 cores.
pub const TINY: &str = r#"
name = "tiny"
seed = 7

[policy]
layers = 1
width = 16
heads = 2
demonstrations = 400
sft_steps = 20
sft_batch = 16

[reference]
standardize_samples = 64
diversity_pool = 128

[gold]
layers = 1
width = 32
heads = 2
samples = 300
steps = 20
batch = 16

[preferences]
val_pairs = 50

[proxy]
sizes = [{ name = "a", layers = 1, width = 8, heads = 2 }]
data_sizes = [40]
noise = [0.0]
members = 2
epochs = 1
batch = 16

[bon]
prompts = 3
pool = 64
uwo_lambdas = [0.0, 0.5]
mean_std_lambdas = [1.0]
"#;

pub fn tiny() -> Experiment {
    Experiment::from_toml(TINY, Path::new("tiny.toml")).expect("tiny config is valid")
}

/// TINY with `extra` TOML lines inserted at the top level (before the first table).
pub fn tiny_with(replace: &str, with: &str) -> String {
    assert!(TINY.contains(replace), "TINY has no {replace:?}");
    TINY.replacen(replace, with, 1)
}
