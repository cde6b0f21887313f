//! What every goodhart bench shares: the process set-up of `goodhart run` (allocator
//! thresholds, candle's thread variables, the work pool), a `main` that runs the measured
//! code on a work-pool thread as `goodhart run` does (never on criterion's main thread:
//! glibc serves the main thread from its brk arena and other threads from mmap'd arenas, so
//! the same code allocates differently there), the default experiment and its data, and the
//! export of each workload's input rows for the PyTorch twin (benches/twin/twin.py).
//!
//! `GOODHART_BENCH_THREADS` (default 1) is the work pool's size (`goodhart run --jobs`);
//! candle runs single-threaded as in a run. Results go to the
//! criterion group `goodhart_t{threads}`, so the thread counts keep separate histories.
//! `GOODHART_BENCH_SECS` (default 2) is each bench's measurement time.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use criterion::{BenchmarkGroup, Criterion, SamplingMode};
use goodhart::model::{seeded_init, Policy, RewardModel, TransformerConfig};
use goodhart::world::{SeqSet, WorldConfig};

/// Threads the bench runs with (`GOODHART_BENCH_THREADS`, default 1).
pub fn threads() -> usize {
    match std::env::var("GOODHART_BENCH_THREADS") {
        Ok(s) => s.trim().parse().ok().filter(|&n| n > 0).expect("GOODHART_BENCH_THREADS: a positive integer"),
        Err(_) => 1,
    }
}

/// The start-up of `goodhart run` (src/main.rs) with `--jobs threads()`: the allocator,
/// then the work pool, whose `init` makes candle single-threaded unless `CANDLE_NUM_THREADS`
/// / `RAYON_NUM_THREADS` are set, exactly as in a run (the second thread serves the run's
/// data-parallel shards and side-by-side models, not candle's per-op threading). Before
/// any tensor op or other thread.
pub fn setup() -> usize {
    let n = threads();
    goodhart::tune_allocator();
    goodhart::parallel::init(n).expect("bench thread count");
    n
}

/// `main` of a bench (`#[macro_use] mod common;`): set-up, then every group on a work-pool
/// thread, then criterion's summary (what `criterion_main!` does, moved onto the pool).
macro_rules! bench_main {
    ($($group:path),+ $(,)?) => {
        fn main() {
            common::setup();
            goodhart::parallel::pool().install(|| {
                $($group();)+
            });
            criterion::Criterion::default().configure_from_args().final_summary();
        }
    };
}

/// The criterion group of this thread count, with the compare script's sampling.
pub fn group(c: &mut Criterion) -> BenchmarkGroup<'_, criterion::measurement::WallTime> {
    let secs: f64 = std::env::var("GOODHART_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let mut g = c.benchmark_group(format!("goodhart_t{}", threads()));
    // Flat sampling: every sample runs the same number of iterations, so a 100 ms workload
    // fits in the measurement time with 10 samples (linear sampling would run 55 calls).
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs_f64((secs / 2.0).max(0.2)))
        .measurement_time(Duration::from_secs_f64(secs));
    g
}

/// The experiment of src/config/'s defaults: the world, models and batch sizes the
/// PyTorch twin (benches/twin/twin.py) is written for, whatever experiments/quick.toml
/// changes (its proxy sizes, replicates); the default proxy sizes include m.
pub fn defaults() -> goodhart::Experiment {
    goodhart::Experiment::from_toml("name = \"bench\"", Path::new("benches/common/mod.rs")).expect("the defaults are a valid experiment")
}

/// A reward model with seeded weights (training cost does not depend on the weights).
pub fn reward_model(cfg: &TransformerConfig, seed: u64) -> (VarMap, RewardModel) {
    let varmap = VarMap::new();
    let m = RewardModel::new(cfg, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
    seeded_init(&varmap, seed, cfg.layers).unwrap();
    (varmap, m)
}

/// A reward model with seeded weights for inference only, as `goodhart run` scores with
/// (no graph recorded: [`goodhart::model::frozen`]).
pub fn frozen_reward_model(cfg: &TransformerConfig, seed: u64) -> RewardModel {
    let (varmap, _) = reward_model(cfg, seed);
    RewardModel::new(cfg, goodhart::model::frozen(&varmap, &Device::Cpu)).unwrap()
}

/// `varmap`'s policy for inference only (what `goodhart run` samples and evaluates with).
pub fn frozen_policy(cfg: &TransformerConfig, world: &WorldConfig, varmap: &VarMap) -> Policy {
    Policy::new(cfg, world, goodhart::model::frozen(varmap, &Device::Cpu)).unwrap()
}

/// A policy with seeded weights.
pub fn policy(cfg: &TransformerConfig, world: &WorldConfig, seed: u64) -> (VarMap, Policy) {
    let varmap = VarMap::new();
    let p = Policy::new(cfg, world, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
    seeded_init(&varmap, seed, cfg.layers).unwrap();
    (varmap, p)
}

/// `n` demonstrator sequences (the distribution π_ref imitates and pairs are drawn from).
pub fn demonstrations(world: &WorldConfig, n: usize, seed: u64) -> SeqSet {
    let mut rng = goodhart::seed::rng(seed, "bench/data");
    let mut set = SeqSet::new(world.seq_len());
    for _ in 0..n {
        let p = world.sample_prompt(&mut rng);
        let r = world.demonstrate(&p, &mut rng);
        set.push(world, &p, &r);
    }
    set
}

/// Where the twin reads the benches' inputs: `target/bench-data/`.
pub fn data_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target"));
    target.join("bench-data")
}

/// Writes the rows a workload feeds its model (tokens row-major, read-out positions), so
/// the twin runs on the same inputs: the same lengths, so the same truncation.
pub fn export(workload: &str, set: &SeqSet) {
    let dir = data_dir();
    std::fs::create_dir_all(&dir).expect("bench-data folder");
    let json = serde_json::json!({ "seq_len": set.seq_len, "tokens": set.tokens, "ends": set.ends });
    let tmp = dir.join(format!("{workload}.json.tmp"));
    std::fs::write(&tmp, json.to_string()).expect("write bench data");
    std::fs::rename(&tmp, dir.join(format!("{workload}.json"))).expect("rename bench data");
}

/// Forward FLOPs of a trunk over `b` sequences of `t` tokens: the matmuls of every block
/// (qkv 3d², proj d², MLP 2·m·d per token; q·kᵀ and att·v 2·t·d per token, masked half
/// included as computed), 2 FLOPs per multiply-add. Norms, softmax and heads are left out.
pub fn trunk_forward_flops(cfg: &TransformerConfig, b: usize, t: usize) -> u64 {
    let (d, m) = (cfg.width as u64, (cfg.mlp_mult * cfg.width) as u64);
    let tokens = (b * t) as u64;
    let per_token = 2 * (3 * d * d + d * d + 2 * d * m) + 2 * 2 * t as u64 * d;
    cfg.layers as u64 * tokens * per_token
}

/// Forward FLOPs of `raw_set(set, batch)` as it computes them: rows sorted by read-out
/// position and cut into batches, each batch run up to its own longest read-out position.
pub fn set_forward_flops(cfg: &TransformerConfig, set: &SeqSet, batch: usize) -> u64 {
    let mut ends: Vec<u32> = set.ends.clone();
    ends.sort_unstable();
    ends.chunks(batch).map(|c| trunk_forward_flops(cfg, c.len(), *c.last().unwrap() as usize + 1)).sum()
}
