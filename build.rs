//! Code versions of the cells: for each kind of cell, a hash of the source files that decide
//! what its make produces (comments and blank lines left out), exported as
//! `GOODHART_CODE_<KIND>`. A cell's store key includes its kind's hash, so a model made by
//! older code is never reused after that code changes (see `src/cell/mod.rs`).

use std::path::Path;

/// Files every kind reads: the world, the models and their fused kernels, seeding, the
/// aggregator (reward models standardize through it), the shared make helpers.
const COMMON: &[&str] = &[
    "src/world.rs",
    "src/seed.rs",
    "src/model/mod.rs",
    "src/model/transformer.rs",
    "src/model/policy.rs",
    "src/model/reward.rs",
    "src/model/ops.rs",
    "src/aggregate.rs",
    "src/cell/make/mod.rs",
];

/// Per kind, the files beyond [`COMMON`]. `tests/code_version.rs` walks each kind's make
/// through the imports and fails on a file it reaches that is not listed here.
const KINDS: &[(&str, &[&str])] = &[
    ("POLICY", &["src/sft.rs", "src/optim.rs", "src/rm.rs", "src/cell/make/policy.rs"]),
    ("GOLD", &["src/rm.rs", "src/optim.rs", "src/sweep.rs", "src/cell/make/pairs.rs", "src/cell/make/gold.rs"]),
    ("PAIRS", &["src/rm.rs", "src/optim.rs", "src/sweep.rs", "src/cell/make/pairs.rs"]),
    ("PROXY", &["src/rm.rs", "src/optim.rs", "src/sweep.rs", "src/cell/make/pairs.rs", "src/cell/make/proxy.rs"]),
    ("BON", &["src/bon.rs", "src/sft.rs", "src/eval.rs", "src/sweep.rs", "src/rm.rs", "src/optim.rs", "src/cell/make/bon.rs"]),
    (
        "PPO",
        &[
            "src/ppo/mod.rs",
            "src/ppo/gae.rs",
            "src/ppo/kl.rs",
            "src/ppo/loss.rs",
            "src/ppo/rollout.rs",
            "src/optim.rs",
            "src/bon.rs",
            "src/eval.rs",
            "src/sweep.rs",
            "src/rm.rs",
            "src/sft.rs",
            "src/cell/make/ppo.rs",
        ],
    ),
];

/// The code of a file without comment-only lines, blank lines and indentation.
fn normalized(path: &str) -> String {
    let text = std::fs::read_to_string(Path::new(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
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

fn main() {
    for f in COMMON.iter().chain(KINDS.iter().flat_map(|(_, fs)| fs.iter())) {
        println!("cargo:rerun-if-changed={f}");
    }
    for (kind, files) in KINDS {
        let mut all = String::new();
        for f in COMMON.iter().chain(files.iter()) {
            all.push_str(f);
            all.push('\n');
            all.push_str(&normalized(f));
            all.push('\n');
        }
        println!("cargo:rustc-env=GOODHART_CODE_{kind}={:016x}", fnv(all.as_bytes()));
    }
}
