//! How each kind of cell is made from its dependencies, and read back from its folder.
//!
//! One file per kind; each has `make` (writes the cell's files into the folder it is given
//! and returns the cell's `info`) and `load`. This file holds what several kinds share:
//! the loaded forms of cells, seeded block sampling and the model folders' weights file.

pub mod bon;
pub mod gold;
pub mod pairs;
pub mod policy;
pub mod ppo;
pub mod proxy;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use serde_json::Value;

pub use super::plan::PAIR_BLOCK;
use super::store::Meta;
use super::{Cell, Kind};
use crate::config::Experiment;
use crate::error::{Error, Result};
use crate::model::{Policy, RewardModel, TransformerConfig};
use crate::sweep::ProxyCell;
use crate::world::{Response, SeqSet, Split, WorldConfig};

/// What a make reads, handed to it already loaded: the experiment, the cell's world, the
/// device, and the cell's dependencies (a make never asks the executor for more).
pub struct Inputs<'a> {
    pub exp: &'a Experiment,
    /// The cell being made (its id names it in messages).
    pub cell: &'a Cell,
    /// The cell's world and its index.
    pub world: &'a WorldConfig,
    pub world_index: usize,
    pub device: &'a Device,
    /// Each dependency, in the plan's order: its cell, its folder in the store, its loaded form.
    pub deps: Vec<(&'a Cell, PathBuf, Arc<Loaded>)>,
    /// The set every reward model of the world is standardized on (gold and proxy cells).
    pub reference: Option<Arc<SeqSet>>,
}

impl Inputs<'_> {
    fn dep_of(&self, kind: &str) -> &(&Cell, PathBuf, Arc<Loaded>) {
        self.deps
            .iter()
            .find(|d| d.0.kind.name() == kind)
            .unwrap_or_else(|| panic!("the plan wires a {kind} cell into {}", self.cell.id))
    }

    /// The world's π_ref.
    pub fn policy(&self) -> &Policy {
        self.dep_of("policy").2.policy()
    }

    /// The folder of the world's π_ref (its weights, for a trainable copy).
    pub fn policy_dir(&self) -> &Path {
        &self.dep_of("policy").1
    }

    /// The world's gold RM.
    pub fn gold(&self) -> &RewardModel {
        self.dep_of("gold").2.reward()
    }

    /// The preference pairs the cell reads.
    pub fn pairs(&self) -> &pairs::PairData {
        match &*self.dep_of("pairs").2 {
            Loaded::Pairs(p) => p,
            _ => unreachable!("a pairs cell loads as pairs"),
        }
    }

    /// The reference set of the cell's world.
    pub fn reference(&self) -> &SeqSet {
        self.reference.as_deref().unwrap_or_else(|| panic!("{} reads no reference set", self.cell.id))
    }

    /// The proxies the cell reads, split once: ensemble members in grid order, and the
    /// held-out proxy (never optimized against) if there is one.
    pub fn proxies(&self) -> (Vec<(&ProxyCell, &RewardModel)>, Option<&RewardModel>) {
        let (mut members, mut heldout) = (Vec::new(), None);
        for (c, _, l) in &self.deps {
            if let Kind::Proxy(p) = &c.kind {
                if p.heldout {
                    heldout = Some(l.reward());
                } else {
                    members.push((p, l.reward()));
                }
            }
        }
        (members, heldout)
    }
}

/// Weights of a model cell.
pub const WEIGHTS: &str = "model.safetensors";
/// Batch size for scoring (no gradients): the one of [`crate::eval`].
pub const INFER_BATCH: usize = crate::eval::SCORE_BATCH;
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

/// A cell read back from the store.
pub enum Loaded {
    Policy { policy: Policy, meta: Meta },
    /// Gold or a proxy, standardized.
    Reward { model: RewardModel, meta: Meta },
    Pairs(pairs::PairData),
    /// Best-of-n per prompt of every ensemble × aggregator, for a range of prompts.
    Bon(bon::BonUnits),
    /// A PPO run's outcome, or the one-line error that ended it (a diverged run is a
    /// result too: stored, so it is not retried with the same code).
    Ppo { outcome: std::result::Result<crate::ppo::Outcome, String>, meta: Meta },
}

impl Loaded {
    pub fn policy(&self) -> &Policy {
        match self {
            Loaded::Policy { policy, .. } => policy,
            _ => unreachable!("the plan wires a policy here"),
        }
    }

    pub fn reward(&self) -> &RewardModel {
        match self {
            Loaded::Reward { model, .. } => model,
            _ => unreachable!("the plan wires a reward model here"),
        }
    }

    pub fn meta(&self) -> Option<&Meta> {
        match self {
            Loaded::Policy { meta, .. } | Loaded::Reward { meta, .. } | Loaded::Ppo { meta, .. } => Some(meta),
            _ => None,
        }
    }
}

/// Makes the cell of `inputs` into `dir`.
pub fn make(inputs: &Inputs, dir: &Path, pb: &indicatif::ProgressBar) -> Result<Value> {
    match &inputs.cell.kind {
        Kind::Policy(_) => policy::make(inputs, dir, pb),
        Kind::Gold(_) => gold::make(inputs, dir, pb),
        Kind::Pairs(r) => pairs::make(inputs, *r, dir).inspect(|_| pb.inc(1)),
        Kind::Proxy(c) => proxy::make(inputs, c, dir, pb),
        Kind::Bon(c) => bon::make(inputs, *c, dir, pb),
        Kind::Ppo(run) => ppo::make(inputs, run, dir, pb),
    }
}

/// Reads `cell` (of world `world`) back from its folder.
pub fn load(exp: &Experiment, cell: &Cell, world: &WorldConfig, device: &Device, dir: &Path, meta: &Meta) -> Result<Loaded> {
    match &cell.kind {
        Kind::Policy(_) => policy::load(exp, world, device, dir, meta),
        Kind::Gold(_) => Ok(Loaded::Reward {
            model: load_reward(&exp.gold_arch(), device, dir, meta)?,
            meta: meta.clone(),
        }),
        Kind::Proxy(c) => Ok(Loaded::Reward {
            model: load_reward(&exp.proxy_arch(&c.size), device, dir, meta)?,
            meta: meta.clone(),
        }),
        Kind::Pairs(_) => pairs::load(dir).map(Loaded::Pairs),
        Kind::Bon(c) => bon::load(dir, *c).map(Loaded::Bon),
        Kind::Ppo(_) => ppo::load(meta),
    }
}

/// A fresh policy of the experiment's shape in `world` with the weights of the folder `dir`.
pub fn load_policy_weights(exp: &Experiment, world: &WorldConfig, device: &Device, dir: &Path) -> Result<(Policy, VarMap)> {
    let mut varmap = VarMap::new();
    let policy = Policy::new(&exp.policy_arch(), world, VarBuilder::from_varmap(&varmap, DType::F32, device))?;
    load_weights(&mut varmap, dir)?;
    Ok((policy, varmap))
}

/// A reward model of shape `cfg` with the weights of `dir` and the standardization in `meta`.
fn load_reward(cfg: &TransformerConfig, device: &Device, dir: &Path, meta: &Meta) -> Result<RewardModel> {
    let mut model = frozen_weights(dir, device, |vb| RewardModel::new(cfg, vb))?;
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
    let blocks: Vec<usize> = (0..n.div_ceil(PAIR_BLOCK)).collect();
    let parts = crate::parallel::map(&blocks, |&block| -> Result<_> {
        let mut rng = crate::seed::rng(seed, &format!("{label}/block{block}"));
        let take = PAIR_BLOCK.min(n - block * PAIR_BLOCK);
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
