//! What a run will need: a rough, deliberately generous estimate of its peak memory and of
//! the disk its stored models take, and the check that refuses a run this machine cannot
//! hold before any work starts.
//!
//! Peak memory = every model resident at once (π_ref, gold, every proxy, the held-out proxy
//! and the PPO policy being trained) + the optimizer state of the largest trained model
//! (gradients, Adam's two moments) + the activations of the largest training or scoring batch + the
//! largest data set of any stage (SFT demonstrations, gold samples, preference pairs,
//! reference samples, the best-of-n pool with one f32 score per scoring model per sample,
//! PPO rollouts and evaluation samples). Disk = the safetensors weights (f32) and metadata
//! of every stored model, counted as if none were stored yet.

use std::path::Path;

use crate::config::Experiment;
use crate::error::{Error, Result};
use crate::methods::{Needs, Part};
use crate::plan::kinds::METHODS;

/// Bytes of an f32 weight, score or activation, and of a u32 token.
const F32: u64 = 4;
/// Floats kept per position, layer and unit of width for a backward pass (residual
/// stream, norms, q/k/v, attention output, the 4×-wide MLP and their gradients).
const ACT_PER_WIDTH: u64 = 16;
/// Floats live per position and unit of width in one forward-only layer (residual, q/k/v,
/// the MLP's hidden layer).
const ACT_INFER_PER_WIDTH: u64 = 6;
/// Metadata and safetensors header of one stored model.
const META_BYTES: u64 = 4096;
/// Heap overhead of one stored response (its `Vec` and flags) besides its tokens.
const RESPONSE_OVERHEAD: u64 = 32;
/// The code and runtime before any work (binary, libraries, allocator, thread pools).
const RUNTIME: u64 = 12 << 20;
/// Code paged in and allocator arenas kept after training (best-of-n, PPO, tables, figures).
const LATE_RUNTIME: u64 = 20 << 20;
/// Bytes per pool sample (best-of-n) per scoring model.
const POOL_SCORE_BYTES: u64 = 32;
/// Bytes per value of a unit row, across its copies (cells, rows, frames written and read).
const UNIT_VALUE_BYTES: u64 = 24;

/// What a run will need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Estimate {
    /// Estimated peak resident memory, bytes.
    pub peak_memory_bytes: u64,
    /// Weights and metadata of every model the run stores, bytes.
    pub disk_bytes: u64,
    /// The largest part of the memory estimate and the keys that drive it.
    pub largest_memory_part: &'static str,
}

/// A part of the estimate that does not fit in 64 bits: which, and the keys that drive it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Overflow {
    pub keys: &'static str,
    pub what: &'static str,
    pub resource: &'static str,
}

/// The estimate of an experiment; a part beyond 64 bits saturates (see [`check_resources`],
/// which refuses such a run).
pub fn estimate(exp: &Experiment) -> Estimate {
    try_estimate(exp).unwrap_or(Estimate {
        peak_memory_bytes: u64::MAX,
        disk_bytes: u64::MAX,
        largest_memory_part: "a part beyond 2^64 bytes",
    })
}

fn product(xs: &[u64]) -> Option<u64> {
    xs.iter().try_fold(1u64, |a, &x| a.checked_mul(x))
}

fn sum(xs: &[u64]) -> Option<u64> {
    xs.iter().try_fold(0u64, |a, &x| a.checked_add(x))
}

/// The estimate, or the part that overflows 64 bits ([`check_resources`] refuses it).
pub(crate) fn try_estimate(exp: &Experiment) -> std::result::Result<Estimate, Overflow> {
    let u = |n: usize| n as u64;
    let memory = |keys, what| Overflow { keys, what, resource: "memory" };
    let seq = u(crate::world::sequence_len(exp.world.prompt_len, exp.world.max_response));
    let vocab = u(crate::world::vocab_size(exp.world.content_tokens));
    let x = &exp.proxy;
    // Every replicate's proxies and PPO runs are stored, and stay loaded while a run assembles.
    let reps = u(exp.replicates);
    let grid = product(&[u(x.data_sizes.len()), u(x.noise.len()), u(x.source_models()), reps]).ok_or(memory("replicates", "proxy models"))?;
    // The held-out proxy's parameters (its size: the largest, or the first with
    // `proxy.heldout_like`), and how many there are: one per replicate
    // (`proxy.heldout_per_replicate`), else one per world.
    let heldout = crate::train::proxy::heldout_cell(exp, 0)
        .and_then(|h| exp.params.proxies.iter().find(|p| p.0 == h.size.name))
        .map_or(0, |p| u(p.1));
    // One π_ref and gold per world (one world unless `world.per_replicate`).
    let worlds = u(exp.worlds());
    let heldouts = if x.heldout_per_replicate { reps } else { worlds };
    let proxy_params = exp
        .params
        .proxies
        .iter()
        .try_fold(heldout.checked_mul(heldouts).ok_or(memory("replicates", "held-out proxies"))?, |acc, p| {
            acc.checked_add(u(p.1).checked_mul(grid)?)
        })
        .ok_or(memory("proxy.members", "proxy models"))?;
    // What every method's cells hold.
    let needs: Vec<Needs> = METHODS.iter().map(|m| m.needs(exp)).collect();
    let trained_policies = product(&[needs.iter().fold(0u64, |a, n| a.saturating_add(n.policies)), reps]).ok_or(memory("replicates", "trained policies"))?;
    let policy = u(exp.params.policy);
    let gold = u(exp.params.gold);
    let (policies, golds) = (product(&[policy, worlds]).ok_or(memory("replicates", "π_ref models"))?, product(&[gold, worlds]).ok_or(memory("replicates", "gold models"))?);
    let resident = sum(&[policies, golds, proxy_params, if trained_policies > 0 { policy } else { 0 }]);
    let trained_max = policy.max(gold).max(heldout);
    let models = resident
        .and_then(|r| r.checked_add(product(&[3, trained_max])?))
        .and_then(|n| n.checked_mul(F32))
        .ok_or(memory("proxy.members", "models"))?;

    // Activations of one training batch of `b` sequences through a model of `layers` × `width`
    // with `heads` (and, for the policy, its vocabulary-wide logits).
    let act = |b: usize, layers: usize, width: usize, heads: usize, lm: bool| -> Option<u64> {
        let per_position = sum(&[product(&[ACT_PER_WIDTH, u(width)])?, product(&[3, u(heads), seq])?])?;
        let trunk = product(&[u(b), seq, u(layers), per_position])?;
        let logits = if lm { product(&[u(b), seq, vocab, 3])? } else { 0 };
        product(&[sum(&[trunk, logits])?, F32])
    };
    let p = &exp.policy;
    let g = &exp.gold;
    // Proxies train, and sets are scored, one per core at once.
    let cores = u(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    // A scoring batch is at most the largest set scored.
    let scored = [u(g.samples), u(exp.reference.standardize_samples + exp.reference.diversity_pool), u(p.demonstrations)];
    let scored = scored.into_iter().chain(needs.iter().map(|n| n.scored)).max().unwrap_or(1);
    let score_batch = (crate::model::SCORE_BATCH as u64).min(scored);
    let largest_proxy = x
        .sizes
        .iter()
        .max_by_key(|s| u(s.layers) * u(s.width))
        .expect("validated: at least one proxy size");
    // The shapes that train and score: the world's, or a text study's checkpoints' (which
    // train no SFT and no gold).
    let text = exp.text();
    let (pl, pw, ph) = text.map_or((p.layers, p.width, p.heads), |t| t.policy_dims);
    let (xl, xw, xh) = text.map_or((largest_proxy.layers, largest_proxy.width, largest_proxy.heads), |t| t.trunk_dims);
    let (sw, sh) = if text.is_some() { (pw.max(xw), ph.max(xh)) } else { (g.width.max(p.width), g.heads.max(p.heads)) };
    let mut activations = vec![
        (
            "one proxy batch per core (proxy.batch)",
            "proxy.batch",
            act(2 * x.batch, xl, xw, xh, false).and_then(|a| a.checked_mul(cores)),
        ),
        (
            "one scoring batch per core (gold.width)",
            "gold.width",
            // Forward only, through weights that record no graph: one layer's activations
            // live at a time, and the logits once.
            sum(&[product(&[ACT_INFER_PER_WIDTH, u(sw)]).unwrap_or(u64::MAX), product(&[u(sh), seq]).unwrap_or(u64::MAX)])
                .and_then(|per_position| product(&[score_batch, seq, sum(&[per_position, vocab])?, F32, cores])),
        ),
    ];
    if text.is_none() {
        activations.insert(0, ("one gold batch (gold.batch)", "gold.batch", act(g.batch, g.layers, g.width, g.heads, false)));
        activations.insert(0, ("one SFT batch (policy.sft_batch)", "policy.sft_batch", act(p.sft_batch, p.layers, p.width, p.heads, true)));
    }
    // Each method's training batch through the policy.
    for Part { what, key, count } in needs.iter().filter_map(|n| n.batch) {
        activations.push((what, key, usize::try_from(count).ok().and_then(|b| act(b, pl, pw, ph, true))));
    }
    let mut act_max = (0u64, "");
    for (what, key, bytes) in activations {
        let bytes = bytes.ok_or(memory(key, "activations"))?;
        if bytes > act_max.0 {
            act_max = (bytes, what);
        }
    }

    // One stored sequence: tokens and mask of its encoded form, and its response.
    let sequence = seq * 2 * F32 + RESPONSE_OVERHEAD + u(exp.world.max_response) * F32;
    // A best-of-n cell scores its prompts' pools with every proxy of one replicate, gold and
    // the held-out proxy; a process makes up to one cell per core at once.
    let scorers = u(x.sizes.len()) * (grid / reps.max(1)) + 2;
    let largest_data = u(*x.data_sizes.iter().max().expect("validated non-empty"));
    let mut data = vec![
        ("SFT demonstrations (policy.demonstrations)", "policy.demonstrations", product(&[u(p.demonstrations) + u(p.demonstrations / 10).clamp(1, 2000), sequence])),
        ("gold samples (gold.samples)", "gold.samples", product(&[u(g.samples) + u(g.samples / 10).clamp(1, 4000), sequence + F32])),
        (
            "preference pairs (proxy.data_sizes)",
            "proxy.data_sizes",
            sum(&[largest_data, largest_data, u(exp.preferences.val_pairs)]).and_then(|n| product(&[n, 2, sequence + F32])),
        ),
        (
            "reference samples (reference.diversity_pool)",
            "reference.diversity_pool",
            product(&[u(exp.reference.standardize_samples) + u(exp.reference.diversity_pool), sequence]),
        ),
    ];
    // Each method's rollouts: a sequence with its response's per-token statistics.
    for Part { what, key, count } in needs.iter().filter_map(|n| n.rollouts) {
        data.push((what, key, product(&[count, sequence + u(exp.world.max_response) * 8 * F32])));
    }
    let mut data_max = (0u64, "");
    for (what, key, bytes) in data {
        let bytes = bytes.ok_or(memory(key, "data"))?;
        if bytes > data_max.0 {
            data_max = (bytes, what);
        }
    }
    // Phase 1, training: the code and runtime, the models, one batch's activations, the
    // largest data set.
    let training = sum(&[RUNTIME, models, act_max.0, data_max.0]).ok_or(memory("proxy.members", "peak memory"))?;
    // Later phases start from training's peak (the allocator keeps most of what training
    // freed) plus the code they page in. Best-of-n: one cell per core holds its pool, each
    // sample with its sequence and every scorer's score (raw, standardized, per aggregator).
    let mut pools = (0u64, "");
    for (Part { what, key, count }, cells) in needs.iter().filter_map(|n| n.pools) {
        let bytes = product(&[scorers, POOL_SCORE_BYTES])
            .and_then(|s| sum(&[seq * F32 + F32, s]))
            .and_then(|per_sample| product(&[count, cells.saturating_mul(reps).min(cores).max(1), per_sample]))
            .ok_or(memory(key, "pools"))?;
        if bytes > pools.0 {
            pools = (bytes, what);
        }
    }
    // Tables and report: every unit row (best-of-n per prompt and n, PPO per evaluation
    // sample) held as cells, as rows, as a frame being written and read back.
    let unit_values = needs.iter().fold(0u64, |a, n| a.saturating_add(n.unit_values));
    let tables = unit_values
        .checked_mul(UNIT_VALUE_BYTES)
        .filter(|_| unit_values < u64::MAX)
        .ok_or(memory("replicates", "result tables"))?;
    // Every replicate's preference pairs stay loaded once made (training pairs of the largest
    // data size, the held-out proxy's, validation), and every world's reference samples.
    let heldout_data = crate::train::proxy::heldout_cell(exp, 0).map_or(0, |h| u(h.data_size));
    let stored_sequence = seq * F32 + F32;
    let pairs = sum(&[largest_data, heldout_data, u(exp.preferences.val_pairs)])
        // Per pair: two sequences, two gold scores, the labelers' label and gold's own.
        .and_then(|n| product(&[n, 2 * stored_sequence + 2 * F32 + 2, reps]))
        .and_then(|b| b.checked_add(product(&[u(exp.reference.standardize_samples), stored_sequence, worlds])?))
        .ok_or(memory("replicates", "preference pairs"))?;
    let later = pools.0.max(tables);
    let peak = sum(&[training, LATE_RUNTIME, pairs, later]).ok_or(memory("proxy.members", "peak memory"))?;
    let largest_memory_part = if later > training {
        if pools.0 >= tables {
            pools.1
        } else {
            "result tables (each method's unit rows × replicates; see `goodhart validate`)"
        }
    } else if models >= act_max.0 && models >= data_max.0 {
        "resident models and optimizer state (proxy.sizes × proxy.data_sizes × proxy.noise × proxy.members)"
    } else if act_max.0 >= data_max.0 {
        act_max.1
    } else {
        data_max.1
    };
    let stored = sum(&[policies, golds, proxy_params, product(&[trained_policies, policy]).unwrap_or(u64::MAX)]);
    let disk = stored
        .and_then(|n| n.checked_mul(F32))
        .and_then(|n| n.checked_add(product(&[u(x.sizes.len()) * grid + 2 * worlds + u(usize::from(x.heldout)) * heldouts + trained_policies, META_BYTES])?))
        .ok_or(Overflow { keys: "replicates", what: "stored models", resource: "disk" })?;
    Ok(Estimate {
        peak_memory_bytes: peak,
        disk_bytes: disk,
        largest_memory_part,
    })
}

/// The rows of every method's unit table over the study (best-of-n per replicate,
/// ensemble, aggregator, prompt and n; PPO per replicate, run, checkpoint and evaluation
/// prompt) and their values (rows × columns), saturating at `u64::MAX`.
pub fn unit_rows(exp: &Experiment) -> (u64, u64) {
    METHODS.iter().map(|m| m.needs(exp)).fold((0u64, 0u64), |(r, v), n| (r.saturating_add(n.unit_rows), v.saturating_add(n.unit_values)))
}

/// Refuses an experiment whose estimated peak memory exceeds this machine's memory
/// (`MemTotal` in /proc/meminfo) or whose stored models would not fit in the free space
/// at `store` (statvfs of the store, or of its nearest existing ancestor). A limit that
/// cannot be read (no /proc/meminfo, no statvfs) is not checked.
pub fn check_resources(exp: &Experiment, store: Option<&Path>) -> Result<()> {
    let e = try_estimate(exp).map_err(|part| Error::Overflow {
        keys: part.keys,
        what: part.what,
        resource: part.resource,
    })?;
    if let Some(total) = mem_total() {
        if e.peak_memory_bytes > total {
            return Err(Error::Resources {
                what: "memory",
                needed: human(e.peak_memory_bytes),
                available: human(total),
                source_of_limit: "this machine has (MemTotal, /proc/meminfo)".into(),
                detail: format!("estimated peak; largest part: {}", e.largest_memory_part),
            });
        }
    }
    if let Some(store) = store {
        if let Some(free) = free_space(store) {
            if e.disk_bytes > free {
                return Err(Error::Resources {
                    what: "disk",
                    needed: human(e.disk_bytes),
                    available: human(free),
                    source_of_limit: format!("free at {}", store.display()),
                    detail: "the weights of every stored model: proxy grid, trained policies (PPO runs: ppo.kl_penalties × aggregators)".into(),
                });
            }
        }
    }
    Ok(())
}

/// `bytes` in binary units with one decimal, e.g. `1.5 GiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Total memory of this machine, bytes (`MemTotal` of /proc/meminfo).
fn mem_total() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Bytes free to an unprivileged user on the file system of `path`, or of its nearest
/// existing ancestor when `path` does not exist yet.
#[cfg(unix)]
fn free_space(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let mut dir = path;
    while !dir.exists() {
        dir = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
    }
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is a NUL-terminated path and `st` a properly sized, writable statvfs.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    (st.f_bavail as u64).checked_mul(st.f_frsize as u64)
}

#[cfg(not(unix))]
fn free_space(_path: &Path) -> Option<u64> {
    None
}
