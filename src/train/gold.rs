//! The gold RM: distilled by regression from the labeler utility, standardized on the
//! reference set, and checked against the labeler on held-out π_ref pairs.

use std::path::Path;
use std::time::Instant;

use candle_core::DType;
use candle_nn::{VarBuilder, VarMap};
use serde_json::{json, Value};
use tracing::info;

use super::pairs::{pair_samples, scored_pairs, PairSamples};
use crate::cell::make::{load_reward, save_weights, shards, INFER_BATCH};
use crate::cell::kind::{CellKind, Inputs, Loaded};
use crate::cell::cost::Work;
use crate::cell::store::Meta;
use crate::config::Experiment;
use crate::error::Result;
use crate::model::{frozen, seeded_init, RewardModel};
use crate::train::rm::{self, Pairs};
use crate::world::WorldConfig;

/// The gold RM of world `world`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoldCell {
    pub world: usize,
}

impl CellKind for GoldCell {
    fn name(&self) -> &'static str {
        "gold"
    }
    fn stage(&self) -> &'static str {
        "gold RM"
    }
    fn replicate(&self) -> usize {
        self.world
    }
    fn world_index(&self, _exp: &Experiment) -> usize {
        self.world
    }
    fn recipe(&self, exp: &Experiment) -> Value {
        if exp.text().is_some() {
            return json!({
                "world": exp.world_recipe(),
                "seed": exp.world_seed(self.world),
                "reference_samples": exp.reference.standardize_samples,
            });
        }
        json!({
            "world": exp.world_recipe(),
            "utility": crate::world::utility::recipe(),
            "arch": exp.gold_arch(),
            "distill": exp.gold,
            "seed": exp.world_seed(self.world),
            "reference_samples": exp.reference.standardize_samples,
            "val_pairs": exp.preferences.val_pairs,
        })
    }
    fn code_version(&self) -> &'static str {
        env!("GOODHART_CODE_GOLD")
    }
    fn work(&self, exp: &Experiment) -> Work {
        let seq = exp.world_config(0).seq_len() as f64;
        let (g, reference, val) = (&exp.gold, exp.reference.standardize_samples as f64, exp.preferences.val_pairs as f64);
        let mut w = Work::default();
        if exp.text().is_some() {
            w.infer(reference * seq, exp.params.gold);
            return w;
        }
        w.train((g.steps * g.batch) as f64 * seq, exp.params.gold);
        w.infer((reference + 2.0 * val) * seq, exp.params.policy);
        w.infer((g.samples as f64 / 10.0 + reference + 4.0 * val) * seq, exp.params.gold);
        w
    }
    fn standardizes(&self) -> bool {
        true
    }
    fn make(&self, inputs: &Inputs, dir: &Path, pb: &indicatif::ProgressBar) -> Result<Value> {
        make(inputs, dir, pb)
    }
    fn load(&self, exp: &Experiment, _world: &WorldConfig, device: &candle_core::Device, dir: &Path, meta: &Meta) -> Result<Loaded> {
        if exp.text().is_some() {
            return Ok(Loaded::new(crate::cell::make::standardized(crate::cell::make::text_gold(exp, device)?, dir, meta)?, meta));
        }
        Ok(Loaded::new(load_reward(&exp.gold_arch(), device, dir, meta)?, meta))
    }
}

/// The gold RM of its world, from the world's seed.
pub fn make(x: &Inputs, dir: &Path, pb: &indicatif::ProgressBar) -> Result<Value> {
    if x.exp.text().is_some() {
        return make_text(x);
    }
    let exp = x.exp;
    let (world, seed) = (x.world, exp.world_seed(x.world_index));
    let policy = x.policy();
    let reference = x.reference();
    let cfg = exp.gold_arch();
    let g = &exp.gold;
    let varmap = VarMap::new();
    let gold = RewardModel::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, x.device))?;
    seeded_init(&varmap, crate::seed::derive(seed, "init/gold"), cfg.layers)?;
    let mut rng = crate::seed::rng(seed, "gold/data");
    let n_val = (g.samples / 10).clamp(1, 4000);
    let (set, target) = rm::gold_dataset(world, g.samples + n_val, &mut rng);
    let train = set.select(&(0..g.samples).collect::<Vec<_>>());
    let val = set.select(&(g.samples..g.samples + n_val).collect::<Vec<_>>());
    let t = Instant::now();
    // This cell's share of its group's bar (one unit until here): one per step.
    pb.inc_length((g.steps as u64).saturating_sub(1));
    let params = rm::GoldParams {
        steps: g.steps,
        batch: g.batch,
        lr: g.lr,
        seed: crate::seed::derive(seed, "gold"),
        shards: shards(x.device),
    };
    let (mean, std) = rm::gold_target_stats(&target[..g.samples]);
    let z: Vec<f32> = target.iter().map(|&u| rm::gold_target(u, mean, std)).collect();
    let train_loss = rm::train_gold(&gold, &varmap, &train, &z[..g.samples], &params, pb)?;
    let train_seconds = t.elapsed().as_secs_f64();
    // Inference from here on: the same weights, no graph.
    let mut gold = RewardModel::new(&cfg, frozen(&varmap, x.device))?;
    let r2 = rm::r_squared(&gold.raw_set(&val, INFER_BATCH)?, &z[g.samples..]);
    gold.standardize(&gold.raw_set(reference, INFER_BATCH)?);
    let samples = pair_samples(policy, world, crate::world::Split::ValidationPairs, exp.preferences.val_pairs, seed, "pairs/val")?;
    let pairs = scored_pairs(world, &samples, &gold)?;
    let (acc, bt, counted) = labeler_agreement(world, &gold, &samples, &pairs)?;
    pb.suspend(|| {
        info!(
            "gold RM: {} params, distill MSE {:.3} (z-units), R² {:.3} against its distillation target on held-out samples, \
             orders {:.1}% of {counted} untied π_ref pairs as the labeler does",
            crate::model::param_count(&varmap),
            train_loss,
            r2,
            acc * 100.0
        )
    });
    save_weights(&varmap, dir)?;
    Ok(json!({
        "offset": gold.offset, "scale": gold.scale,
        "train_mse_z": train_loss, "distill_r2": r2,
        "val_accuracy": acc, "val_bt_loss": bt, "val_pairs": counted,
        "train_examples": g.samples, "train_steps": g.steps, "train_seconds": train_seconds,
        "params": crate::model::param_count(&varmap),
    }))
}

/// A text study's gold is its reward-model checkpoint or the programmatic labeler, as it
/// is: only its standardization on the reference set is made here.
fn make_text(x: &Inputs) -> Result<Value> {
    let exp = x.exp;
    let mut gold = crate::cell::make::text_gold(exp, x.device)?;
    gold.standardize(&gold.raw_set(x.reference(), INFER_BATCH)?);
    let what = match &exp.text().expect("a text study").spec().gold {
        Some(dir) => format!("the reward-model checkpoint {} ({} params)", dir.display(), exp.params.gold),
        None => "the programmatic labeler (a stand-in, not a model of people)".to_string(),
    };
    info!("gold: {what}; π_ref's reference samples score {:.3} ± {:.3} raw", gold.offset, gold.scale);
    Ok(json!({
        "offset": gold.offset, "scale": gold.scale,
        "gold": what,
        "train_examples": 0, "train_steps": 0, "train_seconds": 0.0,
        "params": exp.params.gold,
    }))
}

/// How often gold orders held-out pairs as the labeler utility does (utility ties
/// excluded), and the Bradley–Terry loss of gold's raw scores against those labels.
fn labeler_agreement(world: &WorldConfig, gold: &RewardModel, s: &PairSamples, pairs: &Pairs) -> Result<(f64, f64, usize)> {
    let ra = gold.raw_set(&pairs.a, INFER_BATCH)?;
    let rb = gold.raw_set(&pairs.b, INFER_BATCH)?;
    let (mut n, mut correct, mut loss) = (0usize, 0usize, 0f64);
    for i in 0..s.prompts.len() {
        let ua = world.utility(&s.prompts[i], &s.a[i]);
        let ub = world.utility(&s.prompts[i], &s.b[i]);
        if (ua - ub).abs() < 1e-9 {
            continue;
        }
        n += 1;
        let margin = if ua > ub { ra[i] - rb[i] } else { rb[i] - ra[i] } as f64;
        correct += (margin > 0.0) as usize;
        loss += margin.min(0.0).abs() + (-margin.abs()).exp().ln_1p();
    }
    let d = n.max(1) as f64;
    Ok((correct as f64 / d, loss / d, n))
}
