//! Reward-model training: the gold RM distilled from the labeler utility, preference pairs
//! labelled by gold (with the labelers' shared bias and label noise), and Bradley–Terry
//! proxies.

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use rand::seq::SliceRandom;
use rand::Rng;

use crate::config::{Experiment, LabelMode, LabelerBias};
use crate::error::Result;
use crate::model::RewardModel;
use crate::train::optim::{Batches, RecentMean, Trainer};
use crate::world::{Response, SeqSet, WorldConfig};

/// Bradley–Terry loss: mean of `−ln σ(chosen − rejected)` = softplus(rejected − chosen),
/// computed stably as `relu(z) + ln(1 + exp(−|z|))`. chosen, rejected: (b,).
pub fn bt_loss(chosen: &Tensor, rejected: &Tensor) -> Result<Tensor> {
    Ok(softplus_t(&(rejected - chosen)?)?.mean_all()?)
}

/// `ln(1 + eᶻ)` elementwise on a tensor ([`softplus`] on one number), computed stably as `relu(z) + ln(1 + exp(−|z|))`: the
/// Bradley–Terry loss of a margin −z.
pub fn softplus_t(z: &Tensor) -> Result<Tensor> {
    Ok((z.relu()? + (z.abs()?.neg()?.exp()? + 1.0)?.log()?)?)
}

/// Flips each label with probability `rate`; returns how many were flipped.
pub fn apply_label_noise(labels: &mut [bool], rate: f64, rng: &mut impl Rng) -> usize {
    let mut flipped = 0;
    for l in labels.iter_mut() {
        if rng.random::<f64>() < rate {
            *l = !*l;
            flipped += 1;
        }
    }
    flipped
}

/// The labels replicate `replicate`'s proxies at label-noise `noise` learn from: `clean`
/// (the labelers' labels, their shared bias included) with each flipped at rate `noise`, in the stream of that replicate and level (the
/// held-out proxy's own), so every member of an ensemble — and direct alignment on its
/// pairs — sees the same flips. Returns the labels and how many were flipped.
pub fn noisy_labels(exp: &Experiment, replicate: usize, noise: f64, clean: &[bool], heldout: bool) -> (Vec<bool>, usize) {
    let mut labels = clean.to_vec();
    let noise_stream = if heldout { "pairs/heldout/noise" } else { "pairs/noise" };
    let mut rng = crate::seed::rng(exp.replicate_seed(replicate), &format!("{noise_stream}/{noise:.4}"));
    let flipped = apply_label_noise(&mut labels, noise, &mut rng);
    (labels, flipped)
}

/// Gold's label of each pair: `true` when response a is preferred.
pub fn label_pairs(gold_a: &[f32], gold_b: &[f32], mode: LabelMode, rng: &mut impl Rng) -> Vec<bool> {
    label_pairs_shifted(gold_a, gold_b, &vec![0.0; gold_a.len()], mode, rng).0
}

/// The labels of labelers who add `shift[i]` = B(a_i) − B(b_i) (standardized gold units, see
/// [`labeler_bias`]) to gold's margin `gold_a − gold_b`: `a ≻ b` iff the shifted margin is
/// positive (deterministic), or with probability σ(shifted margin) (Bradley–Terry: one
/// uniform draw per pair, whatever the shift). Returns them and gold's own labels (shift 0)
/// on the same draws, so the two differ only where the shift changed a label.
pub fn label_pairs_shifted(gold_a: &[f32], gold_b: &[f32], shift: &[f64], mode: LabelMode, rng: &mut impl Rng) -> (Vec<bool>, Vec<bool>) {
    assert_eq!(gold_a.len(), shift.len(), "{} pairs, {} shifts", gold_a.len(), shift.len());
    let (mut labels, mut gold) = (Vec::with_capacity(shift.len()), Vec::with_capacity(shift.len()));
    for ((&a, &b), &s) in gold_a.iter().zip(gold_b).zip(shift) {
        let margin = (a - b) as f64;
        let (own, shifted) = match mode {
            LabelMode::Deterministic => (a > b, if s == 0.0 { a > b } else { margin + s > 0.0 }),
            LabelMode::BradleyTerry => {
                let u = rng.random::<f64>();
                (u < sigmoid(margin), u < sigmoid(margin + s))
            }
        };
        labels.push(shifted);
        gold.push(own);
    }
    (labels, gold)
}

/// σ(z) = 1 / (1 + e^(−z)).
fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// What every labeler adds to `response`'s standardized gold score (`preferences.bias`):
/// `B(y) = length·|y| + flattery·#flattery(y) + style·#style(y) + rare·1[y holds the rare
/// bigram]`, with `|y|` its content tokens (end token excluded), the style token and rare
/// bigram the world's ([`WorldConfig::style_token`], [`WorldConfig::rare_bigram`]); in
/// standardized gold units. 0 when every weight is.
pub fn labeler_bias(bias: &LabelerBias, world: &WorldConfig, response: &Response) -> f64 {
    if bias.is_off() {
        return 0.0;
    }
    let r = &response.tokens;
    let flattery = r.iter().filter(|&&t| world.is_flattery(t)).count() as f64;
    let style = r.iter().filter(|&&t| t == world.style_token()).count() as f64;
    let rare = if world.has_rare_bigram(r) { 1.0 } else { 0.0 };
    bias.length * r.len() as f64 + bias.flattery * flattery + bias.style * style + bias.rare * rare
}

/// Preference pairs: two π_ref responses to one prompt each, with their gold scores.
#[derive(Debug, Clone)]
pub struct Pairs {
    pub a: SeqSet,
    pub b: SeqSet,
    /// Standardized gold scores.
    pub gold_a: Vec<f32>,
    pub gold_b: Vec<f32>,
}

impl Pairs {
    pub fn len(&self) -> usize {
        self.a.len()
    }

    pub fn is_empty(&self) -> bool {
        self.a.is_empty()
    }
}

/// Bradley–Terry training hyper-parameters for one proxy.
#[derive(Debug, Clone)]
pub struct ProxyParams {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    pub bootstrap: bool,
    /// The member's seed: data order and bootstrap sample.
    pub seed: u64,
}

/// Trains `rm` on the first `n` pairs with labels `labels` (true: a preferred). Returns the
/// number of steps taken.
pub fn train_proxy(
    rm: &RewardModel,
    varmap: &VarMap,
    pairs: &Pairs,
    labels: &[bool],
    n: usize,
    p: &ProxyParams,
    name: &str,
    progress: &indicatif::ProgressBar,
) -> Result<usize> {
    let mut rng = crate::seed::rng(p.seed, "proxy/order");
    let mut base: Vec<usize> = (0..n).collect();
    if p.bootstrap {
        base = (0..n).map(|_| rng.random_range(0..n)).collect();
    }
    let per_epoch = n.div_ceil(p.batch);
    let total = per_epoch * p.epochs;
    let mut trainer = Trainer::new(varmap, p.lr, total, 1.0, name)?;
    let mut step = 0;
    for _ in 0..p.epochs {
        let mut order = base.clone();
        order.shuffle(&mut rng);
        for chunk in order.chunks(p.batch) {
            // One forward over both sides: rows [0, b) are the a responses, [b, 2b) the b ones.
            let mut both = pairs.a.select(chunk);
            let other = pairs.b.select(chunk);
            both.tokens.extend_from_slice(&other.tokens);
            both.ends.extend_from_slice(&other.ends);
            let s = rm.raw_batch(&both)?;
            let b = chunk.len();
            let (sa, sb) = (s.narrow(0, 0, b)?, s.narrow(0, b, b)?);
            let sign: Vec<f32> = chunk.iter().map(|&i| if labels[i] { 1.0 } else { -1.0 }).collect();
            let sign = Tensor::from_vec(sign, chunk.len(), sa.device())?;
            // margin = ±(a − b): chosen minus rejected for every pair.
            let margin = ((sa - sb)? * sign)?;
            let loss = bt_loss(&margin, &margin.zeros_like()?)?;
            trainer.step(&loss, step)?;
            step += 1;
            progress.inc(1);
        }
    }
    Ok(step)
}

/// Held-out quality of an RM on pairs: accuracy against gold's deterministic labels and
/// the Bradley–Terry loss (nats) of its raw scores with gold's preferred response as winner.
pub fn evaluate_pairs(rm: &RewardModel, pairs: &Pairs, batch: usize) -> Result<(f64, f64)> {
    let sa = rm.raw_set(&pairs.a, batch)?;
    let sb = rm.raw_set(&pairs.b, batch)?;
    let (mut correct, mut loss) = (0usize, 0f64);
    for i in 0..pairs.len() {
        let gold_prefers_a = pairs.gold_a[i] > pairs.gold_b[i];
        let margin = if gold_prefers_a { sa[i] - sb[i] } else { sb[i] - sa[i] } as f64;
        if margin > 0.0 {
            correct += 1;
        }
        loss += softplus(-margin);
    }
    let n = pairs.len().max(1) as f64;
    Ok((correct as f64 / n, loss / n))
}

fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

/// The gold RM's distillation set: three in four default-demonstrator responses (the
/// distribution preferences are drawn from), one in four "broad" ones whose demonstrator
/// knobs are randomized toward the tails; targets are the labeler's utility.
pub fn gold_dataset(world: &WorldConfig, n: usize, rng: &mut impl Rng) -> (SeqSet, Vec<f32>) {
    let mut set = SeqSet::new(world.seq_len());
    let mut target = Vec::with_capacity(n);
    for i in 0..n {
        let prompt = world.prompt_in(crate::world::Split::Demonstrations, rng);
        let response = if i % 4 != 3 {
            world.demonstrate(&prompt, rng)
        } else {
            let d = world.broad_params(rng);
            world.demonstrate_with(&prompt, &d, rng)
        };
        target.push(world.utility(&prompt, &response) as f32);
        set.push(world, &prompt, &response);
    }
    (set, target)
}

/// Gold distillation hyper-parameters.
#[derive(Debug, Clone)]
pub struct GoldParams {
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub seed: u64,
    /// Data-parallel shards per batch (see [`Trainer::step_sharded`]).
    pub shards: usize,
}

/// Soft clip bound of the distillation target, in π_ref standard deviations.
pub const GOLD_TARGET_CLIP: f32 = 3.0;

/// The distillation target of a utility: z-scored with `(mean, std)` of the
/// default-demonstrator samples, then softly clipped, `c·tanh(z/c)`. The clip keeps every
/// ordering but stops a few extreme tail samples from dominating the squared error, so
/// gold also learns the fine distinctions that decide most π_ref pairs.
pub fn gold_target(utility: f32, mean: f32, std: f32) -> f32 {
    let z = (utility - mean) / std;
    GOLD_TARGET_CLIP * (z / GOLD_TARGET_CLIP).tanh()
}

/// Mean and std of the utilities of the default-demonstrator part of a [`gold_dataset`]
/// (indices ≢ 3 mod 4): the standardization of [`gold_target`].
pub fn gold_target_stats(utilities: &[f32]) -> (f32, f32) {
    let demo: Vec<f32> = utilities.iter().enumerate().filter(|(i, _)| i % 4 != 3).map(|(_, &t)| t).collect();
    crate::model::reward::mean_std(&demo)
}

/// Regresses `rm`'s raw score on `z`, the distillation targets (see [`gold_target`]), by
/// mean squared error. Returns the mean of the last 20 training losses.
pub fn train_gold(
    rm: &RewardModel,
    varmap: &VarMap,
    set: &SeqSet,
    z: &[f32],
    p: &GoldParams,
    progress: &indicatif::ProgressBar,
) -> Result<f32> {
    let device: Device = varmap.all_vars()[0].device().clone();
    let mut trainer = Trainer::new(varmap, p.lr, p.steps, 1.0, "gold RM")?;
    let mut batches = Batches::new(set.len(), crate::seed::rng(p.seed, "gold/order"));
    let mut recent = RecentMean::new(20);
    for step in 0..p.steps {
        let idx = batches.next_batch(p.batch).to_vec();
        let stats = trainer.step_sharded(idx.len(), p.shards, step, |r| {
            let part = &idx[r];
            let pred = rm.raw_rows(set, part)?;
            let y: Vec<f32> = part.iter().map(|&i| z[i]).collect();
            let y = Tensor::from_vec(y, part.len(), &device)?;
            Ok((pred - y)?.sqr()?.mean_all()?)
        })?;
        recent.push(stats.loss);
        progress.inc(1);
    }
    Ok(recent.mean())
}

/// Coefficient of determination of `pred` as a predictor of `target`, as it stands (no
/// refitted slope or offset): R² = 1 − SSE/SST, SSE = Σ (target − pred)², SST = Σ (target −
/// mean target)². 1 is a perfect fit, 0 is no better than the target's mean, and it is
/// negative for a predictor worse than that. NaN when the target is constant.
pub fn r_squared(pred: &[f32], target: &[f32]) -> f64 {
    assert_eq!(pred.len(), target.len(), "r_squared of {} predictions for {} targets", pred.len(), target.len());
    let mean = crate::stats::aggregate::mean(target);
    let sse: f64 = pred.iter().zip(target).map(|(&p, &t)| (t as f64 - p as f64).powi(2)).sum();
    let sst: f64 = target.iter().map(|&t| (t as f64 - mean).powi(2)).sum();
    if sst == 0.0 {
        return f64::NAN;
    }
    1.0 - sse / sst
}
