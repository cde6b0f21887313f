//! Preference pairs: two π_ref responses per prompt, scored by gold and labelled (per
//! `preferences.label`, with the bias every labeler shares, `preferences.bias`, in the
//! labels proxies learn from; gold's own labels kept beside them): the training pairs (as
//! many as the largest data size; proxies train on nested prefixes), the per-world held-out
//! proxy's own independently sampled pairs (a per-replicate one draws its own in its cell),
//! and the validation pairs (gold scores only: never biased). Stored as
//! `pairs.safetensors`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde_json::{json, Value};

use crate::cell::make::{sample_block, INFER_BATCH};
use crate::cell::kind::{CellKind, Inputs, Loaded};
use crate::cell::cost::Work;
use crate::cell::store::Meta;
use crate::config::Experiment;
use crate::error::{Error, Result};
use crate::model::{Policy, RewardModel};
use crate::train::rm::{self, Pairs};
use crate::world::{Response, SeqSet, Split, WorldConfig};

const FILE: &str = "pairs.safetensors";

/// Training and validation pairs.
#[derive(Debug, Clone)]
pub struct PairData {
    pub train: Pairs,
    /// The labelers' labels (per the label mode, with their shared bias; no label noise) of
    /// the training pairs; true: a preferred.
    pub labels: Vec<bool>,
    /// Gold's own labels of the training pairs on the same draws (equal to `labels` without
    /// a bias).
    pub gold_labels: Vec<bool>,
    /// The held-out proxy's own pairs, sampled independently of `train`: the pairs, the
    /// labelers' labels and gold's own.
    pub heldout: Option<(Pairs, Vec<bool>, Vec<bool>)>,
    /// Validation pairs: gold scores only (every reader labels them by gold, never biased).
    pub val: Pairs,
}

/// The preference pairs of replicate `replicate` (0 unless `preferences.per_replicate` or
/// `world.per_replicate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairsCell {
    pub replicate: usize,
}

/// How many pairs the held-out proxy trains on, if the experiment has one: the first
/// ensemble's data size when it is trained like the members, else the largest.
pub fn heldout_data_size(exp: &Experiment) -> Option<usize> {
    if !exp.proxy.heldout {
        return None;
    }
    Some(if exp.proxy.heldout_like { exp.first_ensemble().1 } else { *exp.proxy.data_sizes.iter().max().expect("validated non-empty") })
}

impl CellKind for PairsCell {
    fn name(&self) -> &'static str {
        "pairs"
    }
    fn stage(&self) -> &'static str {
        "preference pairs"
    }
    fn replicate(&self) -> usize {
        self.replicate
    }
    fn recipe(&self, exp: &Experiment) -> Value {
        let r = self.replicate;
        let w = exp.world_index(r);
        let mut recipe = json!({
            "train_pairs": exp.proxy.data_sizes.iter().max(),
            "heldout_pairs": if w == r && !exp.proxy.heldout_per_replicate { heldout_data_size(exp) } else { None },
            "val_pairs": exp.preferences.val_pairs,
            "label": exp.preferences.label,
            "pair_block": sample_block(&exp.world_config(0)),
            "seed": exp.world_seed(w),
            "train_seed": exp.replicate_seed(r),
        });
        // Only a biased study's recipe names the bias: without one, the key is unchanged.
        if !exp.preferences.bias.is_off() {
            recipe["bias"] = json!(exp.preferences.bias);
        }
        recipe
    }
    fn code_version(&self) -> &'static str {
        env!("GOODHART_CODE_PAIRS")
    }
    fn work(&self, exp: &Experiment) -> Work {
        let seq = exp.world_config(0).seq_len() as f64;
        let r = self.replicate;
        let heldout = if exp.proxy.heldout && !exp.proxy.heldout_per_replicate && exp.world_index(r) == r { 2 } else { 1 };
        let n = 2.0 * (exp.proxy.data_sizes.iter().max().copied().unwrap_or(0) * heldout + exp.preferences.val_pairs) as f64;
        let mut w = Work::default();
        w.infer(n * seq, exp.params.policy);
        w.infer(n * seq, exp.params.gold);
        w
    }
    fn make(&self, inputs: &Inputs, dir: &Path, pb: &indicatif::ProgressBar) -> Result<Value> {
        make(inputs, self.replicate, dir).inspect(|_| pb.inc(1))
    }
    fn load(&self, _exp: &Experiment, _world: &WorldConfig, _device: &Device, dir: &Path, meta: &Meta) -> Result<Loaded> {
        load(dir).map(|p| Loaded::new(p, meta))
    }
}

/// The pairs of replicate `r`: its training pairs from its own seed (replicate 0: the
/// study's); the held-out proxy's pairs (the first replicate of a world only) and the
/// validation pairs from its world's seed, shared by the replicates of that world.
pub fn make(x: &Inputs, r: usize, dir: &Path) -> Result<Value> {
    let exp = x.exp;
    let w = x.world_index;
    let (world, world_seed) = (x.world, exp.world_seed(w));
    let policy = x.policy();
    let gold = x.gold();
    let max = *exp.proxy.data_sizes.iter().max().expect("validated non-empty");
    let seed = exp.replicate_seed(r);
    let samples = pair_samples(policy, world, Split::Pairs, max, seed, "pairs/train")?;
    let train = scored_pairs(world, &samples, gold)?;
    let mut rng = crate::seed::rng(seed, "pairs/labels");
    let shift = bias_shifts(exp, world, &samples);
    let (labels, gold_labels) = rm::label_pairs_shifted(&train.gold_a, &train.gold_b, &shift, exp.preferences.label, &mut rng);
    let heldout = match heldout_data_size(exp) {
        Some(n) if r == w && !exp.proxy.heldout_per_replicate => Some(heldout_pairs(exp, policy, world, gold, n, world_seed)?),
        _ => None,
    };
    let val_samples = pair_samples(policy, world, Split::ValidationPairs, exp.preferences.val_pairs, world_seed, "pairs/val")?;
    let val = scored_pairs(world, &val_samples, gold)?;
    let data = PairData {
        train,
        labels,
        gold_labels,
        heldout,
        val,
    };
    save(&data, &dir.join(FILE))?;
    Ok(json!({
        "train_pairs": data.train.len(),
        "heldout_pairs": data.heldout.as_ref().map(|h| h.0.len()),
        "val_pairs": data.val.len(),
        // Labels the labelers' shared bias made differ from gold's own (before label noise).
        "train_labels_biased": differing(&data.labels, &data.gold_labels),
        "heldout_labels_biased": data.heldout.as_ref().map(|h| differing(&h.1, &h.2)),
    }))
}

/// `n` held-out pairs, the labelers' labels (a held-out proxy learns from the same labelers:
/// their shared bias included, no label noise) and gold's own, from `seed` (the world's for
/// a per-world held-out proxy, the replicate's for a per-replicate one): prompts of their
/// own split, so no prompt is shared with the training or validation pairs.
pub fn heldout_pairs(
    exp: &crate::Experiment,
    policy: &Policy,
    world: &WorldConfig,
    gold: &RewardModel,
    n: usize,
    seed: u64,
) -> Result<(Pairs, Vec<bool>, Vec<bool>)> {
    let s = pair_samples(policy, world, Split::HeldoutPairs, n, seed, "pairs/heldout")?;
    let pairs = scored_pairs(world, &s, gold)?;
    let mut rng = crate::seed::rng(seed, "pairs/heldout/labels");
    let shift = bias_shifts(exp, world, &s);
    let (labels, gold_labels) = rm::label_pairs_shifted(&pairs.gold_a, &pairs.gold_b, &shift, exp.preferences.label, &mut rng);
    Ok((pairs, labels, gold_labels))
}

/// `B(a) − B(b)` of each pair of `s`: what the labelers' shared bias adds to gold's
/// standardized margin (see [`rm::labeler_bias`]); all 0 without a bias.
pub fn bias_shifts(exp: &Experiment, world: &WorldConfig, s: &PairSamples) -> Vec<f64> {
    let bias = &exp.preferences.bias;
    s.a.iter().zip(&s.b).map(|(a, b)| rm::labeler_bias(bias, world, a) - rm::labeler_bias(bias, world, b)).collect()
}

/// How many of two label lists differ, position by position.
pub fn differing(a: &[bool], b: &[bool]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x != y).count()
}

pub fn load(dir: &Path) -> Result<PairData> {
    let path = dir.join(FILE);
    let bad = |reason: String| Error::Artifact {
        dir: dir.to_path_buf(),
        reason: format!("{FILE}: {reason}"),
    };
    let t = candle_core::safetensors::load(&path, &Device::Cpu).map_err(|e| bad(e.to_string()))?;
    let get = |name: &str| t.get(name).ok_or_else(|| bad(format!("no tensor {name}")));
    let u32s = |name: &str| -> Result<Vec<u32>> { Ok(get(name)?.flatten_all()?.to_vec1::<u32>()?) };
    let f32s = |name: &str| -> Result<Vec<f32>> { Ok(get(name)?.to_vec1::<f32>()?) };
    let set = |prefix: &str| -> Result<SeqSet> {
        let tokens = get(&format!("{prefix}.tokens"))?;
        let (_, seq_len) = tokens.dims2()?;
        Ok(SeqSet {
            seq_len,
            tokens: tokens.flatten_all()?.to_vec1::<u32>()?,
            ends: u32s(&format!("{prefix}.ends"))?,
        })
    };
    let pairs = |prefix: &str| -> Result<Pairs> {
        Ok(Pairs {
            a: set(&format!("{prefix}.a"))?,
            b: set(&format!("{prefix}.b"))?,
            gold_a: f32s(&format!("{prefix}.gold_a"))?,
            gold_b: f32s(&format!("{prefix}.gold_b"))?,
        })
    };
    let labels = |prefix: &str| -> Result<Vec<bool>> { Ok(u32s(&format!("{prefix}.labels"))?.into_iter().map(|l| l == 1).collect()) };
    let heldout = if t.contains_key("heldout.a.tokens") {
        Some((pairs("heldout")?, labels("heldout")?, labels("heldout.gold")?))
    } else {
        None
    };
    Ok(PairData {
        train: pairs("train")?,
        labels: labels("train")?,
        gold_labels: labels("train.gold")?,
        heldout,
        val: pairs("val")?,
    })
}

fn save(data: &PairData, path: &Path) -> Result<()> {
    let mut t: HashMap<String, Tensor> = HashMap::new();
    let put_set = |t: &mut HashMap<String, Tensor>, prefix: String, s: &SeqSet| -> Result<()> {
        t.insert(format!("{prefix}.tokens"), Tensor::from_vec(s.tokens.clone(), (s.len(), s.seq_len), &Device::Cpu)?);
        t.insert(format!("{prefix}.ends"), Tensor::from_vec(s.ends.clone(), s.len(), &Device::Cpu)?);
        Ok(())
    };
    let put_pairs = |t: &mut HashMap<String, Tensor>, prefix: &str, p: &Pairs| -> Result<()> {
        put_set(t, format!("{prefix}.a"), &p.a)?;
        put_set(t, format!("{prefix}.b"), &p.b)?;
        t.insert(format!("{prefix}.gold_a"), Tensor::from_vec(p.gold_a.clone(), p.len(), &Device::Cpu)?);
        t.insert(format!("{prefix}.gold_b"), Tensor::from_vec(p.gold_b.clone(), p.len(), &Device::Cpu)?);
        Ok(())
    };
    let labels = |l: &[bool]| Tensor::from_vec(l.iter().map(|&b| b as u32).collect::<Vec<u32>>(), l.len(), &Device::Cpu);
    put_pairs(&mut t, "train", &data.train)?;
    t.insert("train.labels".into(), labels(&data.labels)?);
    t.insert("train.gold.labels".into(), labels(&data.gold_labels)?);
    put_pairs(&mut t, "val", &data.val)?;
    if let Some((p, l, g)) = &data.heldout {
        put_pairs(&mut t, "heldout", p)?;
        t.insert("heldout.labels".into(), labels(l)?);
        t.insert("heldout.gold.labels".into(), labels(g)?);
    }
    candle_core::safetensors::save(&t, path).map_err(|e| match e {
        candle_core::Error::Io(io) => Error::io(path, io),
        e => Error::Artifact {
            dir: path.to_path_buf(),
            reason: format!("saving pairs: {e}"),
        },
    })
}

/// Prompts of `split` and two π_ref responses each, generated in seeded blocks of
/// [`sample_block`].
pub struct PairSamples {
    pub prompts: Vec<Vec<u32>>,
    pub a: Vec<Response>,
    pub b: Vec<Response>,
}

pub fn pair_samples(policy: &Policy, world: &WorldConfig, split: Split, n: usize, seed: u64, label: &str) -> Result<PairSamples> {
    let size = sample_block(world);
    let blocks: Vec<usize> = (0..n.div_ceil(size)).collect();
    let parts = crate::parallel::map(&blocks, |&block| -> Result<_> {
        let mut rng = crate::seed::rng(seed, &format!("{label}/block{block}"));
        let prompts: Vec<Vec<u32>> = (0..size).map(|_| world.prompt_in(split, &mut rng)).collect();
        let a = policy.sample(&prompts, 1.0, &mut rng)?;
        let b = policy.sample(&prompts, 1.0, &mut rng)?;
        let take = size.min(n - block * size);
        Ok((prompts, a, b, take))
    });
    let mut out = PairSamples {
        prompts: Vec::with_capacity(n),
        a: Vec::with_capacity(n),
        b: Vec::with_capacity(n),
    };
    for part in parts {
        let (prompts, a, b, take) = part?;
        out.prompts.extend(prompts.into_iter().take(take));
        out.a.extend(a.into_iter().take(take));
        out.b.extend(b.into_iter().take(take));
    }
    Ok(out)
}

/// Encodes pair samples and scores them with gold (standardized).
pub fn scored_pairs(world: &WorldConfig, s: &PairSamples, gold: &RewardModel) -> Result<Pairs> {
    let a = crate::model::policy::encode_all(world, &s.prompts, &s.a);
    let b = crate::model::policy::encode_all(world, &s.prompts, &s.b);
    let gold_a = gold.score_set(&a, INFER_BATCH)?;
    let gold_b = gold.score_set(&b, INFER_BATCH)?;
    Ok(Pairs { a, b, gold_a, gold_b })
}
