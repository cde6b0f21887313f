//! The proxy reward-model grid (sizes × data sizes × label-noise levels × ensemble members)
//! and the ensembles it forms; and the cell of one proxy RM: Bradley–Terry on the first `data_size` training pairs (the labelers' labels, with label noise),
//! or, for the held-out proxy, on its own pairs (a per-replicate one draws them here);
//! validated on the validation pairs and
//! standardized on the reference set.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde_json::{json, Value};
use tracing::info;

use crate::cell::make::{load_reward, save_weights, INFER_BATCH, WEIGHTS};
use crate::cell::kind::{CellKind, Inputs, Loaded};
use crate::cell::cost::Work;
use crate::cell::store::Meta;
use crate::config::{Experiment, ProxySizeSpec, Source};
use crate::error::Result;
use crate::model::{frozen, seeded_init, RewardModel};
use crate::train::rm;
use crate::stats::curve::replicate_suffix;

/// One proxy reward model to train.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyCell {
    pub size: ProxySizeSpec,
    /// Training pairs (the first `data_size` of the shared pair set).
    pub data_size: usize,
    /// Label-flip rate.
    pub noise: f64,
    /// Ensemble member index (0-based).
    pub member: usize,
    /// The held-out proxy (trained on its own pairs, never optimized against): each
    /// replicate's own (`proxy.heldout_per_replicate`), else one per world (replicate 0's,
    /// and each replicate's own when `world.per_replicate`).
    pub heldout: bool,
    /// The replicate this member belongs to.
    pub replicate: usize,
    /// Where the members of its ensemble differ (`scratch` for the held-out proxy).
    pub source: Source,
}

impl ProxyCell {
    /// Stable display id, e.g. `proxy/m/d4000/n0.25/k1` (replicate 0),
    /// `proxy/m/d4000/n0.25/k1/r2`, or with a source other than scratch
    /// `proxy/m/d4000/n0.25/finetune/k1`.
    pub fn id(&self) -> String {
        if self.heldout {
            return format!(
                "heldout/{}/d{}/n{:.2}{}",
                self.size.name,
                self.data_size,
                self.noise,
                replicate_suffix(self.replicate)
            );
        }
        format!("proxy/{}/k{}{}", self.ensemble_id(), self.member, replicate_suffix(self.replicate))
    }

    /// The ensemble this member belongs to (the id without the member): `m/d4000/n0.25`, and
    /// `m/d4000/n0.25/finetune` for a source other than scratch.
    pub fn ensemble_id(&self) -> String {
        let source = if self.source == Source::Scratch { String::new() } else { format!("/{}", self.source.name()) };
        format!("{}/d{}/n{:.2}{source}", self.size.name, self.data_size, self.noise)
    }

    /// Whether its cell trains it (a multi-head model's head and WARM's average are made
    /// from other cells' weights).
    pub fn trained(&self) -> bool {
        !matches!(self.source, Source::Multihead | Source::Warm)
    }

    /// The pretraining seed of the trunk it starts from, if its source has one: 0 (the shared
    /// trunk), or its member index for `pretrain`.
    pub fn trunk_seed(&self) -> Option<usize> {
        match self.source {
            Source::Scratch | Source::Warm | Source::Multihead => None,
            Source::Finetune | Source::Bootstrap => Some(0),
            Source::Pretrain => Some(self.member),
        }
    }
}

/// Every proxy cell of replicate `r`, in a fixed order (size, data, noise, source in the
/// order of [`Source::ALL`] — WARM after the ensemble it averages — member).
pub fn proxy_cells(exp: &Experiment, replicate: usize) -> Vec<ProxyCell> {
    let mut cells = Vec::new();
    for size in &exp.proxy.sizes {
        for &data_size in &exp.proxy.data_sizes {
            for &noise in &exp.proxy.noise {
                for source in Source::ALL.into_iter().filter(|s| exp.proxy.sources.contains(s)) {
                    for member in 0..source.members(exp.proxy.members) {
                        cells.push(ProxyCell {
                            size: size.clone(),
                            data_size,
                            noise,
                            member,
                            heldout: false,
                            replicate,
                            source,
                        });
                    }
                }
            }
        }
    }
    cells
}

/// The held-out proxy of replicate `r` (per replicate) or of world `r` (per world), if the
/// study has one: the largest size (by parameters), the largest data size, the lowest noise
/// level; with `proxy.heldout_like`, the first ensemble's size and data size at the lowest
/// noise level.
pub fn heldout_cell(exp: &Experiment, r: usize) -> Option<ProxyCell> {
    let data_size = super::pairs::heldout_data_size(exp)?;
    let noise = exp.proxy.noise.iter().copied().fold(f64::INFINITY, f64::min);
    if exp.proxy.heldout_like {
        let (size, _, noise) = exp.first_ensemble();
        return Some(ProxyCell {
            size: size.clone(),
            data_size,
            noise,
            member: 0,
            heldout: true,
            replicate: r,
            source: Source::Scratch,
        });
    }
    let size = exp
        .proxy
        .sizes
        .iter()
        .max_by_key(|s| exp.proxy_params(s))
        .expect("validated non-empty")
        .clone();
    Some(ProxyCell {
        size,
        data_size,
        noise,
        member: 0,
        heldout: true,
        replicate: r,
        source: Source::Scratch,
    })
}

/// Ensembles of a proxy list: (ensemble id, indices of its members in `cells`), in order
/// of first appearance.
pub fn ensembles(cells: &[ProxyCell]) -> Vec<(String, Vec<usize>)> {
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, cell) in cells.iter().enumerate() {
        match out.iter_mut().find(|(id, _)| *id == cell.ensemble_id()) {
            Some((_, members)) => members.push(i),
            None => out.push((cell.ensemble_id(), vec![i])),
        }
    }
    out
}

/// A member of ensemble `ensemble` of replicate `replicate` among `proxies` (which describes
/// the ensemble: its size, data and noise).
pub fn ensemble_member<'a>(proxies: &[&'a ProxyCell], replicate: usize, ensemble: &str) -> &'a ProxyCell {
    proxies
        .iter()
        .find(|p| !p.heldout && p.replicate == replicate && p.ensemble_id() == ensemble)
        .expect("an ensemble of the plan is in its proxy grid")
}


/// The proxies a cell reads, split once: ensemble members in grid order, and the held-out
/// proxy (never optimized against) if there is one.
pub fn proxies<'a>(x: &'a Inputs) -> (Vec<(&'a ProxyCell, &'a RewardModel)>, Option<&'a RewardModel>) {
    let (mut members, mut heldout) = (Vec::new(), None);
    for d in &x.deps {
        if let Some(p) = d.cell.as_any().downcast_ref::<ProxyCell>() {
            if p.heldout {
                heldout = Some(d.loaded.reward());
            } else {
                members.push((p, d.loaded.reward()));
            }
        }
    }
    (members, heldout)
}

impl CellKind for ProxyCell {
    fn name(&self) -> &'static str {
        "proxy"
    }
    fn stage(&self) -> &'static str {
        "proxy RMs"
    }
    fn replicate(&self) -> usize {
        self.replicate
    }
    fn recipe(&self, exp: &Experiment) -> Value {
        let x = &exp.proxy;
        let mut r = json!({
            "id": self.id(),
            "arch": exp.proxy_arch(&self.size),
            "data_size": self.data_size,
            "noise": self.noise,
            "member": self.member,
            "heldout": self.heldout,
            // Its own pairs, drawn in the cell from the replicate's seed.
            "own_pairs": self.heldout && x.heldout_per_replicate,
            "replicate": self.replicate,
            "train": { "epochs": x.epochs, "batch": x.batch, "lr": x.lr, "bootstrap": x.bootstrap },
            "reference_samples": exp.reference.standardize_samples,
            "seed": exp.replicate_seed(self.replicate),
        });
        // Scratch, the only source before sources existed, keeps its recipe.
        if self.source != Source::Scratch {
            r["source"] = json!(self.source);
        }
        if let Some(t) = exp.text() {
            r["arch"] = json!({ "trunk": t.digests.trunk, "proxy_layers": t.spec().proxy_layers });
        }
        r
    }
    fn code_version(&self) -> &'static str {
        env!("GOODHART_CODE_PROXY")
    }
    fn work(&self, exp: &Experiment) -> Work {
        let seq = exp.world_config(0).seq_len() as f64;
        let params = exp.params.proxies.iter().find(|(n, _)| *n == self.size.name).map(|p| p.1).unwrap_or(0);
        let mut w = Work::default();
        if self.heldout && exp.proxy.heldout_per_replicate {
            // Its own pairs: sampled with π_ref, scored with gold.
            let n = 2.0 * self.data_size as f64;
            w.infer(n * seq, exp.params.policy);
            w.infer(n * seq, exp.params.gold);
        }
        if self.trained() {
            w.train((2 * exp.proxy.epochs * self.data_size) as f64 * seq, params);
        }
        w.infer((2.0 * exp.preferences.val_pairs as f64 + exp.reference.standardize_samples as f64) * seq, params);
        w
    }
    fn units(&self, exp: &Experiment) -> u64 {
        if self.trained() {
            steps(exp, self)
        } else {
            1
        }
    }
    fn standardizes(&self) -> bool {
        true
    }
    fn per_replicate(&self) -> bool {
        true
    }
    fn make(&self, inputs: &Inputs, dir: &Path, pb: &indicatif::ProgressBar) -> Result<Value> {
        make(inputs, self, dir, pb)
    }
    fn load(&self, exp: &Experiment, _world: &crate::world::WorldConfig, device: &candle_core::Device, dir: &Path, meta: &Meta) -> Result<Loaded> {
        if exp.text().is_some() {
            let path = dir.join(crate::cell::make::WEIGHTS);
            let weights = candle_core::safetensors::load(&path, device).map_err(|e| crate::error::Error::Artifact {
                dir: dir.to_path_buf(),
                reason: format!("weights: {}", e.to_string().lines().next().unwrap_or("")),
            })?;
            return Ok(Loaded::new(crate::cell::make::standardized(text_proxy(exp, device, weights)?, dir, meta)?, meta));
        }
        Ok(Loaded::new(load_reward(&exp.proxy_arch(&self.size), device, dir, meta)?, meta))
    }
}

pub fn make(x: &Inputs, cell: &ProxyCell, dir: &Path, pb: &indicatif::ProgressBar) -> Result<Value> {
    match cell.source {
        Source::Multihead => {
            let d = x.deps.iter().find(|d| d.name == "multihead").expect("the plan wires its multi-head model into a head");
            let weights = super::multihead::head_of(d.loaded.get(), cell.member, &d.dir)?;
            let model = d.cell.as_any().downcast_ref::<super::multihead::MultiHeadCell>().map(|m| m.id()).unwrap_or_default();
            let from = json!({ "head_of": model });
            return derived(x, cell, weights, dir, (format!("head {} of {model}", cell.member), from));
        }
        Source::Warm => {
            let members: Vec<_> = x.deps.iter().filter(|d| d.name == "proxy").collect();
            let mut weights = Vec::with_capacity(members.len());
            for d in &members {
                weights.push(read_weights(&d.dir, x.device)?);
            }
            let averaged = average(&weights, dir)?;
            let from = json!({ "weight_average_of": members.len() });
            return derived(x, cell, averaged, dir, (format!("the weight average of {} finetune members", members.len()), from));
        }
        _ => {}
    }
    let exp = x.exp;
    let p = &exp.proxy;
    let id = cell.id();
    let data: &super::pairs::PairData = x.dep("pairs");
    let reference = x.reference();
    let cfg = exp.proxy_arch(&cell.size);
    // From the id alone (not the store key, which also hashes code and format).
    let member_seed = crate::seed::derive(exp.seed, &format!("init/{id}"));
    let (model, varmap) = if exp.text().is_some() {
        // A text study's proxy: the trunk checkpoint and a fresh head.
        let (rm, varmap) = crate::model::hf::TextReward::from_trunk(&text_trunk(exp)?, x.device, member_seed, text_trainable(exp))?;
        (RewardModel::text(rm, x.device), varmap)
    } else {
        let mut varmap = VarMap::new();
        let model = RewardModel::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, x.device))?;
        seeded_init(&varmap, member_seed, cfg.layers)?;
        if cell.trunk_seed().is_some() {
            let d = x.deps.iter().find(|d| d.name == "trunk").expect("the plan wires a pretrained trunk into its fine-tunes");
            super::trunk::start_from(&mut varmap, d.loaded.get(), &d.dir)?;
        }
        (model, varmap)
    };
    // A per-replicate held-out proxy's pairs: drawn here, from the replicate's seed.
    let own = if cell.heldout && p.heldout_per_replicate {
        let seed = crate::seed::derive(exp.replicate_seed(cell.replicate), "heldout");
        Some(super::pairs::heldout_pairs(exp, x.policy(), x.world, x.gold(), cell.data_size, seed)?)
    } else {
        None
    };
    // The labelers' labels (their shared bias included) and gold's own, before noise.
    let (train, clean, gold_own) = match (&own, &data.heldout, cell.heldout) {
        (Some((pairs, labels, gold)), _, true) | (None, Some((pairs, labels, gold)), true) => (pairs, labels, gold),
        _ => (&data.train, &data.labels, &data.gold_labels),
    };
    let (labels, _) = rm::noisy_labels(exp, cell.replicate, cell.noise, clean, cell.heldout);
    let n = cell.data_size;
    let n_flip = super::pairs::differing(&labels[..n], &clean[..n]);
    let n_biased = super::pairs::differing(&clean[..n], &gold_own[..n]);
    let t = Instant::now();
    let params = rm::ProxyParams {
        epochs: p.epochs,
        batch: p.batch,
        lr: p.lr,
        bootstrap: p.bootstrap || cell.source == Source::Bootstrap,
        seed: member_seed,
    };
    let steps = rm::train_proxy(&model, &varmap, train, &labels, cell.data_size, &params, &id, pb)?;
    let train_seconds = t.elapsed().as_secs_f64();
    // Inference from here on: the same weights, no graph.
    let mut model = if exp.text().is_some() {
        text_proxy(exp, x.device, variables(&varmap))?
    } else {
        RewardModel::new(&cfg, frozen(&varmap, x.device))?
    };
    let (acc, bt) = rm::evaluate_pairs(&model, &data.val, INFER_BATCH)?;
    model.standardize(&model.raw_set(reference, INFER_BATCH)?);
    let biased = match exp.preferences.bias.is_off() {
        true => String::new(),
        false => format!(", {n_biased} changed by the labelers' bias"),
    };
    pb.suspend(|| {
        info!(
            "{id}: {} params, {} pairs ({n_flip} labels flipped{biased}), val accuracy {:.1}%, val BT loss {:.3}",
            match exp.text() {
                Some(_) => format!("{} ({} trained)", exp.params.proxies[0].1, crate::model::param_count(&varmap)),
                None => crate::model::param_count(&varmap).to_string(),
            },
            cell.data_size,
            acc * 100.0,
            bt
        )
    });
    save_weights(&varmap, dir)?;
    Ok(json!({
        "offset": model.offset, "scale": model.scale,
        "val_accuracy": acc, "val_bt_loss": bt, "val_pairs": data.val.len(),
        "labels_flipped": n_flip,
        // Of its training pairs, labels the labelers' shared bias made differ from gold's own.
        "labels_biased": n_biased,
        "train_examples": cell.data_size, "train_steps": steps, "train_seconds": train_seconds,
        // The whole model; of a text study's proxy only the top layers may train.
        "params": match exp.text() {
            Some(_) => exp.params.proxies[0].1,
            None => crate::model::param_count(&varmap),
        },
        "params_trained": crate::model::param_count(&varmap),
    }))
}

/// A text study's proxy trunk: `text.proxy_trunk`, or the policy checkpoint.
fn text_trunk(exp: &Experiment) -> Result<crate::model::hf::Checkpoint> {
    let s = exp.text().expect("a text study").spec();
    crate::model::hf::Checkpoint::open(s.proxy_trunk.as_deref().unwrap_or(&s.policy))
}

/// What of a text study's proxy trains: `text.proxy_layers` top layers (and the final norm
/// and head), or every weight.
fn text_trainable(exp: &Experiment) -> crate::model::hf::Trainable {
    match exp.text().expect("a text study").spec().proxy_layers {
        Some(n) => crate::model::hf::Trainable::Top(n),
        None => crate::model::hf::Trainable::All,
    }
}

/// A text study's proxy for inference: the trunk with `weights` (its trained variables).
fn text_proxy(exp: &Experiment, device: &candle_core::Device, weights: HashMap<String, Tensor>) -> Result<RewardModel> {
    let rm = crate::model::hf::TextReward::with_weights(&text_trunk(exp)?, device, weights)?;
    Ok(RewardModel::text(rm, device))
}

/// The values of `varmap`'s variables, detached.
fn variables(varmap: &VarMap) -> HashMap<String, Tensor> {
    varmap.data().lock().expect("varmap lock").iter().map(|(k, v)| (k.clone(), v.as_tensor().detach())).collect()
}

/// Training steps of a proxy (for progress).
pub fn steps(exp: &Experiment, cell: &ProxyCell) -> u64 {
    (cell.data_size.div_ceil(exp.proxy.batch) * exp.proxy.epochs) as u64
}

/// A proxy made from other cells' weights, not trained here (a head of a multi-head model,
/// WARM's weight average): validated and standardized as a trained one; `from` says where its
/// weights came from, in words and as the meta records it (its cost is that cell's, or its
/// members').
fn derived(x: &Inputs, cell: &ProxyCell, weights: HashMap<String, Tensor>, dir: &Path, (words, from): (String, Value)) -> Result<Value> {
    let exp = x.exp;
    let data: &super::pairs::PairData = x.dep("pairs");
    let cfg = exp.proxy_arch(&cell.size);
    let params: usize = weights.values().map(|t| t.elem_count()).sum();
    let mut model = RewardModel::new(&cfg, VarBuilder::from_tensors(weights.clone(), DType::F32, x.device))?;
    let (acc, bt) = rm::evaluate_pairs(&model, &data.val, INFER_BATCH)?;
    model.standardize(&model.raw_set(x.reference(), INFER_BATCH)?);
    info!("{}: {words}, val accuracy {:.1}%, val BT loss {bt:.3}", cell.id(), acc * 100.0);
    let path = dir.join(WEIGHTS);
    candle_core::safetensors::save(&weights, &path).map_err(|e| crate::error::Error::Artifact { dir: dir.to_path_buf(), reason: format!("saving weights: {e}") })?;
    Ok(json!({
        "offset": model.offset, "scale": model.scale,
        "val_accuracy": acc, "val_bt_loss": bt, "val_pairs": data.val.len(),
        "labels_flipped": 0, "train_examples": 0, "train_steps": 0, "train_seconds": 0.0,
        "params": params, "derived": from,
    }))
}

/// The variables of the model in `dir`, by name.
fn read_weights(dir: &Path, device: &candle_core::Device) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load(dir.join(WEIGHTS), device).map_err(|e| crate::error::Error::Artifact {
        dir: dir.to_path_buf(),
        reason: format!("reading weights: {}", e.to_string().lines().next().unwrap_or("")),
    })
}

/// The weight average of models given as named variables (WARM): every variable the mean of
/// the models' (every model must hold the same names and shapes). `dir`: for errors.
pub fn average(models: &[HashMap<String, Tensor>], dir: &Path) -> Result<HashMap<String, Tensor>> {
    let bad = |reason: String| crate::error::Error::Artifact { dir: dir.to_path_buf(), reason };
    let first = models.first().ok_or_else(|| bad("no model to average".into()))?;
    let mut out = HashMap::new();
    for (name, t) in first {
        let mut sum = t.clone();
        for m in &models[1..] {
            let other = m.get(name).ok_or_else(|| bad(format!("a member lacks {name}")))?;
            sum = sum.add(other).map_err(|e| bad(format!("{name}: {}", e.to_string().lines().next().unwrap_or(""))))?;
        }
        out.insert(name.clone(), (sum / models.len() as f64)?);
    }
    if models.iter().any(|m| m.len() != first.len()) {
        return Err(bad("the members hold different variables".into()));
    }
    Ok(out)
}
