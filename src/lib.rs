//! goodhart: a harness for reward-model overoptimization experiments.
//!
//! A researcher describes a study in one TOML file; goodhart builds an embedded world with
//! a reference policy π_ref, distills a gold reward model from the world's labeler utility,
//! trains ensembles of proxy reward models on gold-labelled preference pairs, optimizes
//! against the proxies with best-of-n and PPO, and tabulates, fits and reports the
//! gold-versus-proxy curves.
//!
//! The layers, each importing only those listed before it (data flows one way):
//! 1. the foundation: [`error`], [`seed`], [`digest`], [`progress`], [`parallel`], [`device`],
//!    [`frame`] (the one table reader);
//! 2. [`stats`]: aggregators, the curve point, fits, stopping rules, analysis, conclusions —
//!    pure functions and records;
//! 3. [`world`]: the synthetic task, the only place that knows the token layout;
//! 4. [`model`]: the transformer, policy and reward model, and their fused kernels; the
//!    checkpoints ([`model::hf`]);
//!    [`text`]: a world of text on checkpoints (prompts from a file, the programmatic
//!    labeler), behind the world's interface;
//! 5. [`config`]: the experiment schema, its validation and error location;
//! 6. [`cell`]: the contract every kind of cell implements, its cost and the store;
//! 7. [`train`]: SFT, reward-model training, the optimizer, and their cells (π_ref, gold,
//!    pairs, pretrained trunks, multi-head models, proxies);
//! 8. [`methods`]: one folder per optimizer family (best-of-n; PPO; GRPO and RLOO; DPO, IPO
//!    and χPO) with its cells and its
//!    [`methods::Method`] (its cells in a plan, what they become);
//! 9. [`plan`]: the registry of methods, the plan, its execution and Slurm arrays;
//! 10. [`output`]: tables, figures and the report, assembled from cells;
//! 11. [`run`]: plan → execute → assemble, for the binary.

pub mod cell;
pub mod config;
pub mod device;
pub mod digest;
pub mod error;
pub mod frame;
pub mod methods;
pub mod model;
pub mod output;
pub mod parallel;
pub mod plan;
pub mod progress;
pub mod run;
pub mod seed;
pub mod stats;
pub mod text;
pub mod train;
pub mod world;

pub use config::Experiment;
pub use error::{Error, Result};

/// Raises glibc's mmap and trim thresholds: candle allocates per op, and the default
/// thresholds make a small-model run spend much of its time in the kernel. No-op elsewhere.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        // M_MMAP_THRESHOLD = -3, M_TRIM_THRESHOLD = -1 (glibc malloc.h).
        libc::mallopt(-3, 256 << 20);
        libc::mallopt(-1, 512 << 20);
    }
}

/// Hands the allocator's free memory back to the OS (glibc keeps up to the trim threshold
/// that [`tune_allocator`] raises): called between phases of a run, so that what one phase
/// freed does not add to the next one's resident memory.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
}
