//! goodhart: a harness for reward-model overoptimization experiments.
//!
//! A researcher describes a study in one TOML file; goodhart builds an embedded world with
//! a reference policy π_ref, distills a gold reward model from the world's labeler utility,
//! trains ensembles of proxy reward models on gold-labelled preference pairs, optimizes
//! against the proxies with best-of-n and PPO, and tabulates, fits and reports the
//! gold-versus-proxy curves.
//!
//! Data flows one way: [`config`] → [`world`] → [`sft`] (π_ref) → [`rm`] (gold, pairs,
//! proxies) → [`bon`] and [`ppo`] (through one [`aggregate::Aggregator`]) → [`output`]
//! (tables, figures) → [`fit`], [`stopping`] → report. [`sweep`] expands the grid; [`cell`]
//! turns an experiment into a plan of cells, each made once into a store that many processes
//! share (`cell::make` is where each is made, `cell::store` where it lives); [`run`] is plan →
//! execute → assemble.

pub mod aggregate;
pub mod analysis;
pub mod bon;
pub mod cell;
pub mod conclusions;
pub mod config;
pub mod curve;
pub mod cpu;
pub mod device;
pub mod digest;
pub mod error;
pub mod eval;
pub mod fit;
pub mod model;
pub mod optim;
pub mod output;
pub mod parallel;
pub mod ppo;
pub mod progress;
pub mod resources;
pub mod rm;
pub mod run;
pub mod seed;
pub mod sft;
pub mod stats;
pub mod stopping;
pub mod sweep;
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
