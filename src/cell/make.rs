//! What the makes of several kinds share: seeded block sampling, batch sizes and shards, and
//! the model folders' weights file (written, read back, checked).

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};

pub use super::kind::{Inputs, Loaded};
use super::store::Meta;
use crate::config::Experiment;
use crate::error::{Error, Result};
use crate::model::{Policy, RewardModel, TransformerConfig};
use crate::world::{Response, SeqSet, Split, WorldConfig};

/// Pairs and samples are generated in blocks of this many, each block from its own seed,
/// so the first n pairs are the same whatever the largest data size is.
pub const PAIR_BLOCK: usize = 512;

/// The sampling block of a world: [`PAIR_BLOCK`], or [`TEXT_BLOCK`] for a world of text,
/// whose large models sample a block in seconds, so that its blocks fill every core.
pub fn sample_block(world: &WorldConfig) -> usize {
    if world.text.is_some() {
        TEXT_BLOCK
    } else {
        PAIR_BLOCK
    }
}

/// A world of text's sampling block (see [`sample_block`]).
pub const TEXT_BLOCK: usize = 16;

/// Weights of a model cell.
pub const WEIGHTS: &str = "model.safetensors";
/// Batch size for scoring (no gradients).
pub const INFER_BATCH: usize = crate::model::SCORE_BATCH;
/// Data-parallel shards per SFT and gold batch on the CPU. Fixed (not the core count) so
/// that the same config gives the same models on any CPU.
const CPU_SHARDS: usize = 2;

/// Shards of one training batch on `device`.
pub fn shards(device: &Device) -> usize {
    if device.is_cpu() {
        CPU_SHARDS
    } else {
        1
    }
}

/// A fresh policy of the experiment's shape in `world` with the weights of the folder `dir`.
pub fn load_policy_weights(exp: &Experiment, world: &WorldConfig, device: &Device, dir: &Path) -> Result<(Policy, VarMap)> {
    if exp.text().is_some() {
        let (policy, map) = text_policy(exp, device, true)?;
        return Ok((policy, map.expect("a trainable policy has variables")));
    }
    let mut varmap = VarMap::new();
    let policy = Policy::new(&exp.policy_arch(), world, VarBuilder::from_varmap(&varmap, DType::F32, device))?;
    load_weights(&mut varmap, dir)?;
    Ok((policy, varmap))
}

/// A text study's π_ref: its policy checkpoint, frozen, or with `train` every weight (and a
/// zero value head) a variable of the returned map.
pub fn text_policy(exp: &Experiment, device: &Device, train: bool) -> Result<(Policy, Option<VarMap>)> {
    let task = exp.text().expect("a text study");
    let ckpt = crate::model::hf::Checkpoint::open(&task.spec().policy)?;
    let (p, map) = crate::model::hf::TextPolicy::load(&ckpt, task.layout().clone(), device, train)?;
    Ok((Policy::text(p), map))
}

/// A reward model of shape `cfg` with the weights of `dir` and the standardization in `meta`.
pub fn load_reward(cfg: &TransformerConfig, device: &Device, dir: &Path, meta: &Meta) -> Result<RewardModel> {
    let model = frozen_weights(dir, device, |vb| RewardModel::new(cfg, vb))?;
    standardized(model, dir, meta)
}

/// A text study's gold: its reward-model checkpoint, or the programmatic labeler (not yet
/// standardized).
pub fn text_gold(exp: &Experiment, device: &Device) -> Result<RewardModel> {
    let task = exp.text_task.clone().expect("a text study");
    Ok(match &task.spec().gold {
        Some(dir) => {
            let ckpt = crate::model::hf::Checkpoint::open(dir)?;
            RewardModel::text(crate::model::hf::TextReward::load(&ckpt, device)?, device)
        }
        None => RewardModel::labeler(task, device),
    })
}

/// `model` with the standardization its cell's `meta` records.
pub fn standardized(mut model: RewardModel, dir: &Path, meta: &Meta) -> Result<RewardModel> {
    let get = |k: &str| meta.info.get(k).and_then(|v| v.as_f64()).map(|v| v as f32);
    match (get("offset"), get("scale")) {
        (Some(offset), Some(scale)) if scale.is_finite() && scale > 0.0 && offset.is_finite() => {
            model.offset = offset;
            model.scale = scale;
        }
        _ => {
            return Err(Error::Artifact {
                dir: dir.to_path_buf(),
                reason: "meta.json lacks a finite standardization (offset, scale > 0)".into(),
            })
        }
    }
    Ok(model)
}

/// A model for inference only (no graph recorded; see [`crate::model::frozen`]) built by
/// `build` from the weights of `dir/model.safetensors`.
pub fn frozen_weights<M>(dir: &Path, device: &Device, build: impl FnOnce(VarBuilder<'static>) -> Result<M>) -> Result<M> {
    let artifact = |e: Error| Error::Artifact {
        dir: dir.to_path_buf(),
        reason: format!("weights do not fit the model: {}", e.to_string().lines().next().unwrap_or("")),
    };
    build(crate::model::frozen_file(&dir.join(WEIGHTS), device).map_err(artifact)?).map_err(artifact)
}

/// Loads `dir/model.safetensors` into `varmap`, whose variables define the expected shapes.
fn load_weights(varmap: &mut VarMap, dir: &Path) -> Result<()> {
    varmap.load(dir.join(WEIGHTS)).map_err(|e| Error::Artifact {
        dir: dir.to_path_buf(),
        reason: format!("weights do not fit the model: {}", e.to_string().lines().next().unwrap_or("")),
    })
}

/// Saves `varmap` as the cell's weights.
pub fn save_weights(varmap: &VarMap, dir: &Path) -> Result<()> {
    let path = dir.join(WEIGHTS);
    varmap.save(&path).map_err(|e| match e {
        candle_core::Error::Io(io) => Error::io(&path, io),
        e => Error::Artifact {
            dir: dir.to_path_buf(),
            reason: format!("saving weights: {e}"),
        },
    })
}

/// Prompts of `split` and one π_ref response each, sampled in seeded blocks of
/// [`PAIR_BLOCK`] on the work pool, from the stream `label`.
pub fn prompts_and_samples(
    policy: &Policy,
    world: &WorldConfig,
    split: Split,
    n: usize,
    seed: u64,
    label: &str,
) -> Result<(Vec<Vec<u32>>, Vec<Response>)> {
    let size = sample_block(world);
    let blocks: Vec<usize> = (0..n.div_ceil(size)).collect();
    let parts = crate::parallel::map(&blocks, |&block| -> Result<_> {
        let mut rng = crate::seed::rng(seed, &format!("{label}/block{block}"));
        let take = size.min(n - block * size);
        let prompts: Vec<Vec<u32>> = (0..take).map(|_| world.prompt_in(split, &mut rng)).collect();
        let responses = policy.sample(&prompts, 1.0, &mut rng)?;
        Ok((prompts, responses))
    });
    let (mut prompts, mut responses) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for part in parts {
        let (p, r) = part?;
        prompts.extend(p);
        responses.extend(r);
    }
    Ok((prompts, responses))
}

/// `n` π_ref samples at temperature 1 for fresh prompts, encoded, from the stream `label`.
pub fn sample_set(policy: &Policy, world: &WorldConfig, split: Split, n: usize, seed: u64, label: &str) -> Result<SeqSet> {
    let s = prompts_and_samples(policy, world, split, n, seed, label)?;
    Ok(crate::model::policy::encode_all(world, &s.0, &s.1))
}

/// The reference set every RM of world `w` is standardized against: π_ref samples from one
/// stream of the world's seed.
pub fn reference_set(policy: &Policy, exp: &Experiment, world: &WorldConfig, w: usize) -> Result<SeqSet> {
    sample_set(policy, world, Split::Reference, exp.reference.standardize_samples, exp.world_seed(w), "reference/standardize")
}
