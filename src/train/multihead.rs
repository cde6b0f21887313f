//! The multi-head ensemble (`proxy.sources` `multihead`): one reward model, the shared
//! pretrained trunk with k linear heads, trained jointly — every head by its own
//! Bradley–Terry loss on its own bootstrap weights of the pairs, the trunk by all of them
//! (the mean of the heads' losses). One cell per ensemble; member m's proxy cell is head m.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Value};
use tracing::info;

use crate::cell::cost::Work;
use crate::cell::kind::{CellKind, Inputs, Loaded};
use crate::cell::make::{save_weights, WEIGHTS};
use crate::cell::store::Meta;
use crate::config::{Experiment, ProxySizeSpec};
use crate::error::{Error, Result};
use crate::model::{seeded_init, RewardModel};
use crate::stats::curve::replicate_suffix;
use crate::train::optim::Trainer;
use crate::train::rm::Pairs;
use crate::world::WorldConfig;

/// The head variables of a reward model.
pub const HEAD_WEIGHT: &str = "score_head.weight";
pub const HEAD_BIAS: &str = "score_head.bias";

/// One multi-head model: the ensemble `size/d…/n…/multihead` of a replicate.
#[derive(Debug, Clone, PartialEq)]
pub struct MultiHeadCell {
    pub size: ProxySizeSpec,
    pub data_size: usize,
    pub noise: f64,
    pub replicate: usize,
}

/// A multi-head model read back: every variable by name.
pub struct HeadsWeights(pub std::collections::HashMap<String, Tensor>);

impl MultiHeadCell {
    /// `multihead/s/d500/n0.25` (replicate 0) or `…/r2`.
    pub fn id(&self) -> String {
        format!("multihead/{}/d{}/n{:.2}{}", self.size.name, self.data_size, self.noise, replicate_suffix(self.replicate))
    }
}

impl CellKind for MultiHeadCell {
    fn name(&self) -> &'static str {
        "multihead"
    }
    fn stage(&self) -> &'static str {
        "proxy RMs"
    }
    fn replicate(&self) -> usize {
        self.replicate
    }
    fn recipe(&self, exp: &Experiment) -> Value {
        let x = &exp.proxy;
        json!({
            "id": self.id(),
            "arch": exp.proxy_arch(&self.size),
            "heads": x.members,
            "data_size": self.data_size,
            "noise": self.noise,
            "train": { "epochs": x.epochs, "batch": x.batch, "lr": x.lr },
            "seed": exp.replicate_seed(self.replicate),
        })
    }
    fn code_version(&self) -> &'static str {
        env!("GOODHART_CODE_MULTIHEAD")
    }
    fn work(&self, exp: &Experiment) -> Work {
        let seq = exp.world_config(0).seq_len() as f64;
        let params = exp.proxy_arch(&self.size).reward_params() + (exp.proxy.members - 1) * (self.size.width + 1);
        let mut w = Work::default();
        w.train((2 * exp.proxy.epochs * self.data_size) as f64 * seq, params);
        w
    }
    fn units(&self, exp: &Experiment) -> u64 {
        (self.data_size.div_ceil(exp.proxy.batch) * exp.proxy.epochs) as u64
    }
    fn per_replicate(&self) -> bool {
        true
    }
    fn make(&self, inputs: &Inputs, dir: &Path, pb: &indicatif::ProgressBar) -> Result<Value> {
        make(inputs, self, dir, pb)
    }
    fn load(&self, _exp: &Experiment, _world: &WorldConfig, device: &candle_core::Device, dir: &Path, meta: &Meta) -> Result<Loaded> {
        let all = candle_core::safetensors::load(dir.join(WEIGHTS), device).map_err(|e| Error::Artifact {
            dir: dir.to_path_buf(),
            reason: format!("reading the multi-head model: {}", e.to_string().lines().next().unwrap_or("")),
        })?;
        Ok(Loaded::new(HeadsWeights(all), meta))
    }
}

/// Bootstrap weights of `n` examples for `k` heads: `w[h][i]` = how many times head h's
/// resample (n draws with replacement) holds example i.
pub fn bootstrap_counts(n: usize, k: usize, rng: &mut impl Rng) -> Vec<Vec<f32>> {
    (0..k)
        .map(|_| {
            let mut w = vec![0f32; n];
            for _ in 0..n {
                w[rng.random_range(0..n)] += 1.0;
            }
            w
        })
        .collect()
}

/// The k heads' losses (k,) on one batch: head h's Bradley–Terry loss with chosen-minus-
/// rejected `margins[:, h]` (b, k), each pair weighted by `weights[:, h]` (b, k), normalized
/// by the head's weight in the batch (a head whose resample holds none of the batch adds 0).
pub fn head_losses(margins: &Tensor, weights: &Tensor) -> Result<Tensor> {
    let soft = crate::train::rm::softplus_t(&margins.neg()?)?;
    let num = (soft * weights)?.sum(0)?;
    let den = weights.sum(0)?.clamp(1e-6f32, f32::MAX)?;
    Ok((num / den)?)
}

/// Trains the multi-head `rm` (k heads) on the first `n` pairs with `labels` (true: a
/// preferred), each head on its own bootstrap weights; the loss is the mean of the heads'
/// losses. Returns the steps taken.
#[allow(clippy::too_many_arguments)]
pub fn train_heads(
    rm: &RewardModel,
    varmap: &VarMap,
    pairs: &Pairs,
    labels: &[bool],
    n: usize,
    k: usize,
    p: &crate::train::rm::ProxyParams,
    name: &str,
    progress: &indicatif::ProgressBar,
) -> Result<usize> {
    let mut rng = crate::seed::rng(p.seed, "multihead/order");
    let weights = bootstrap_counts(n, k, &mut crate::seed::rng(p.seed, "multihead/bootstrap"));
    let total = n.div_ceil(p.batch) * p.epochs;
    let mut trainer = Trainer::new(varmap, p.lr, total, 1.0, name)?;
    let device = varmap.all_vars()[0].device().clone();
    let mut step = 0;
    for _ in 0..p.epochs {
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        for chunk in order.chunks(p.batch) {
            let b = chunk.len();
            let mut both = pairs.a.select(chunk);
            let other = pairs.b.select(chunk);
            both.tokens.extend_from_slice(&other.tokens);
            both.ends.extend_from_slice(&other.ends);
            let s = rm.raw_batch_heads(&both)?;
            let sign: Vec<f32> = chunk.iter().map(|&i| if labels[i] { 1.0 } else { -1.0 }).collect();
            let sign = Tensor::from_vec(sign, (b, 1), &device)?;
            let margins = (s.narrow(0, 0, b)? - s.narrow(0, b, b)?)?.broadcast_mul(&sign)?;
            let w: Vec<f32> = chunk.iter().flat_map(|&i| weights.iter().map(move |h| h[i])).collect();
            let w = Tensor::from_vec(w, (b, k), &device)?;
            let loss = head_losses(&margins, &w)?.mean_all()?;
            trainer.step(&loss, step)?;
            step += 1;
            progress.inc(1);
        }
    }
    Ok(step)
}

fn make(x: &Inputs, cell: &MultiHeadCell, dir: &Path, pb: &indicatif::ProgressBar) -> Result<Value> {
    let exp = x.exp;
    let p = &exp.proxy;
    let id = cell.id();
    let data: &super::pairs::PairData = x.dep("pairs");
    let cfg = exp.proxy_arch(&cell.size);
    let mut varmap = VarMap::new();
    let model = RewardModel::with_heads(&cfg, p.members, VarBuilder::from_varmap(&varmap, DType::F32, x.device))?;
    let seed = crate::seed::derive(exp.seed, &format!("init/{id}"));
    seeded_init(&varmap, seed, cfg.layers)?;
    let trunk = x.deps.iter().find(|d| d.name == "trunk").expect("the plan wires a trunk into a multi-head model");
    super::trunk::start_from(&mut varmap, trunk.loaded.get(), &trunk.dir)?;
    let (labels, _) = super::rm::noisy_labels(exp, cell.replicate, cell.noise, &data.labels, false);
    let t = Instant::now();
    let params = crate::train::rm::ProxyParams { epochs: p.epochs, batch: p.batch, lr: p.lr, bootstrap: false, seed };
    let steps = train_heads(&model, &varmap, &data.train, &labels, cell.data_size, p.members, &params, &id, pb)?;
    let train_seconds = t.elapsed().as_secs_f64();
    pb.suspend(|| info!("{id}: {} heads on one trunk, {} params, {} pairs", p.members, crate::model::param_count(&varmap), cell.data_size));
    save_weights(&varmap, dir)?;
    Ok(json!({
        "heads": p.members,
        "train_examples": cell.data_size, "train_steps": steps, "train_seconds": train_seconds,
        "params": crate::model::param_count(&varmap),
    }))
}

/// Head `m` of a multi-head model as the variables of a one-head reward model (the trunk's
/// as they are, row m of the head).
pub fn head_of(heads: &HeadsWeights, m: usize, dir: &Path) -> Result<std::collections::HashMap<String, Tensor>> {
    let bad = |reason: String| Error::Artifact { dir: dir.to_path_buf(), reason };
    let get = |k: &str| heads.0.get(k).ok_or_else(|| bad(format!("the multi-head model lacks {k}")));
    let (w, b) = (get(HEAD_WEIGHT)?, get(HEAD_BIAS)?);
    if m >= w.dim(0)? {
        return Err(bad(format!("the multi-head model has {} heads; head {m} asked for", w.dim(0)?)));
    }
    let mut out: std::collections::HashMap<String, Tensor> =
        heads.0.iter().filter(|(k, _)| k.starts_with(super::trunk::TRUNK)).map(|(k, v)| (k.clone(), v.clone())).collect();
    out.insert(HEAD_WEIGHT.into(), w.narrow(0, m, 1)?);
    out.insert(HEAD_BIAS.into(), b.narrow(0, m, 1)?);
    Ok(out)
}
