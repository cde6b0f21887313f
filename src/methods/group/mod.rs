//! Group-relative RL against a proxy ensemble: critic-free policy gradient with the baseline
//! taken from other responses to the same prompt (π_ref frozen as the KL anchor).
//!
//! One update, in order:
//! 1. sample `group` responses for each of `prompts` training prompts from π at temperature
//!    1 and score each through the run's aggregator (PPO's [`rollout::collect`]), shaped as
//!    PPO's ([`rollout::shape`]; r_ref from one π_ref response per prompt, shared by its
//!    group, so `center` leaves both methods' advantages as they are);
//! 2. [`advantages`], one per response:
//!    - GRPO (Shao et al. 2024): reward = the (shaped) score; advantage = (reward − the
//!      group's mean) / (the group's standard deviation + [`STD_EPS`]); the KL to π_ref is a
//!      term of the loss, β·k3 per response token;
//!    - RLOO (Ahmadian et al. 2024): reward = the (shaped) score − β·(summed k1 of the
//!      response); advantage = reward − the mean reward of the group's other responses;
//! 3. [`optimize`]: epochs of shuffled minibatches of the clipped surrogate (every token of a
//!    response carries its response's advantage), with GRPO's KL term, gradient-norm
//!    clipping and plain Adam at a constant rate, as PPO's;
//! 4. every `eval_every` updates (and at update 0 and at the end): PPO's evaluation
//!    ([`crate::methods::ppo::evaluate`]) on PPO's evaluation prompts with PPO's sample
//!    streams, so a checkpoint of every method is measured the same way, and at update 0
//!    on the same samples.
//!
//! [`cell`]: the cell of one run; [`method`]: the two methods in a study's plan.

pub mod cell;
pub mod method;

use candle_core::Tensor;
use candle_nn::VarMap;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::config::GroupSpec;
use crate::error::{Error, Result};
use crate::methods::ppo::kl::sequence_kl;
use crate::methods::ppo::loss::{clipped_surrogate, k3, masked_mean};
use crate::methods::ppo::rollout::{self, Rollout};
use crate::methods::ppo::{evaluate, Context, Evaluation, RunSpec};
use crate::model::Policy;
use crate::stats::aggregate::mean;
use crate::stats::mean_se;
use crate::train::optim::Trainer;

/// Added to a group's standard deviation before GRPO divides by it (a group of equal
/// rewards has advantage 0, not NaN).
pub const STD_EPS: f64 = 1e-4;

/// Which baseline and where the KL goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Estimator {
    Grpo,
    Rloo,
}

impl Estimator {
    /// Its method name in tables and runs (`grpo`, `rloo`).
    pub fn name(self) -> &'static str {
        match self {
            Estimator::Grpo => "grpo",
            Estimator::Rloo => "rloo",
        }
    }

    /// How claims and the report name it.
    pub fn label(self) -> &'static str {
        match self {
            Estimator::Grpo => "GRPO",
            Estimator::Rloo => "RLOO",
        }
    }
}

/// Diagnostics of one update (the `grpo_train`, `rloo_train` tables).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateStats {
    /// 1-based: the policy after this update has had `update` updates.
    pub update: usize,
    /// Rollout means: aggregated proxy score, summed k1 per response (nats), reward (RLOO:
    /// score − β·k1; GRPO: the score).
    pub proxy: f64,
    pub kl_k1: f64,
    pub reward: f64,
    /// Means over the update's minibatches: the clipped surrogate, GRPO's β·k3 term (0 for
    /// RLOO), the k3 estimate of KL(π_old‖π_new) and the fraction of clipped tokens.
    pub policy_loss: f64,
    pub kl_loss: f64,
    pub approx_kl: f64,
    pub clipfrac: f64,
    /// Largest pre-clipping gradient norm of the update's minibatches.
    pub grad_norm: f64,
}

/// A finished run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub evaluations: Vec<Evaluation>,
    pub updates: Vec<UpdateStats>,
}

/// Step 2: one advantage per response. `scores` and `k1` (summed per response) are in
/// rollout order, groups of `group` consecutive responses to one prompt. Returns
/// (rewards, advantages).
pub fn advantages(estimator: Estimator, scores: &[f64], k1: &[f64], group: usize, beta: f64) -> (Vec<f64>, Vec<f64>) {
    let rewards: Vec<f64> = match estimator {
        Estimator::Grpo => scores.to_vec(),
        Estimator::Rloo => scores.iter().zip(k1).map(|(s, k)| s - beta * k).collect(),
    };
    let mut adv = vec![0f64; rewards.len()];
    for (g, r) in rewards.chunks(group).enumerate() {
        let n = r.len() as f64;
        let sum: f64 = r.iter().sum();
        for (i, &ri) in r.iter().enumerate() {
            adv[g * group + i] = match estimator {
                Estimator::Grpo => {
                    let m = sum / n;
                    let sd = (r.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n).sqrt();
                    (ri - m) / (sd + STD_EPS)
                }
                Estimator::Rloo if n > 1.0 => ri - (sum - ri) / (n - 1.0),
                Estimator::Rloo => 0.0,
            };
        }
    }
    (rewards, adv)
}

/// One run's training: `policy` (initialized to π_ref, variables in `varmap`) against the
/// run's aggregator. `ctx` is PPO's context (the same world, π_ref, gold, members,
/// held-out proxy, seed and evaluation prompts).
pub fn train(
    ctx: &Context,
    run: &RunSpec,
    estimator: Estimator,
    spec: &GroupSpec,
    policy: &Policy,
    varmap: &VarMap,
    progress: &indicatif::ProgressBar,
) -> Result<Outcome> {
    let mut trainer = Trainer::constant(varmap, spec.lr, spec.max_grad_norm, &run.id)?;
    let view = policy.with_weights(crate::model::frozen(varmap, policy.device()))?;
    let mut out = Outcome {
        evaluations: vec![evaluate(ctx, run, &view, 0)?],
        updates: Vec::with_capacity(spec.updates),
    };
    for u in 0..spec.updates {
        out.updates.push(update(ctx, run, estimator, spec, policy, &view, &mut trainer, u + 1)?);
        progress.inc(1);
        if (u + 1) % spec.eval_every == 0 || u + 1 == spec.updates {
            out.evaluations.push(evaluate(ctx, run, &view, u + 1)?);
        }
    }
    Ok(out)
}

/// Training prompts of update `u`, each `group` times in a row: the same for every run of
/// both methods.
fn training_prompts(ctx: &Context, spec: &GroupSpec, u: usize) -> Vec<Vec<u32>> {
    let mut rng = crate::seed::rng(ctx.seed, &format!("group/train/update{u}"));
    let mut out = Vec::with_capacity(spec.prompts * spec.group);
    for _ in 0..spec.prompts {
        let p = ctx.world.prompt_in(crate::world::Split::PpoTrain, &mut rng);
        out.extend(std::iter::repeat_n(p, spec.group));
    }
    out
}

/// Steps 1–3: one update (the `update`-th, 1-based).
#[allow(clippy::too_many_arguments)]
fn update(
    ctx: &Context,
    run: &RunSpec,
    estimator: Estimator,
    spec: &GroupSpec,
    policy: &Policy,
    view: &Policy,
    trainer: &mut Trainer,
    update: usize,
) -> Result<UpdateStats> {
    let prompts = training_prompts(ctx, spec, update - 1);
    let mut rng = crate::seed::rng(ctx.seed, &format!("{}/rollout{}", run.id, update - 1));
    let ro = rollout::collect(ctx.world, view, ctx.reference, &ctx.members, run.aggregator, &prompts, &mut rng)?;
    let (k1, _) = sequence_kl(&ro.logp, &ro.ref_logp, &ro.mask, ro.width);
    let stream = format!("group/train/update{}/reference", update - 1);
    let scores: Vec<f64> = rollout::shape(ctx, run, &ro, &prompts, spec.group, &stream)?.iter().map(|&s| s as f64).collect();
    let (rewards, adv) = advantages(estimator, &scores, &k1, spec.group, run.beta);
    if let Some(&v) = rewards.iter().chain(&adv).find(|v| !v.is_finite()) {
        return Err(Error::NonFiniteLoss {
            model: format!("{} (advantages)", run.id),
            step: update,
            value: v as f32,
        });
    }
    let sums = optimize(run, estimator, spec, policy, trainer, &ro, &adv, ctx.seed, update)?;
    Ok(UpdateStats {
        update,
        proxy: mean(&ro.score),
        kl_k1: mean_se(&k1).0,
        reward: mean_se(&rewards).0,
        policy_loss: sums[0],
        kl_loss: sums[1],
        approx_kl: sums[2],
        clipfrac: sums[3],
        grad_norm: sums[4],
    })
}

/// Step 3: `epochs` passes of shuffled minibatches. Returns the means over minibatches of
/// the surrogate, the KL term, approx_kl and clipfrac, and the largest gradient norm.
#[allow(clippy::too_many_arguments)]
fn optimize(
    run: &RunSpec,
    estimator: Estimator,
    spec: &GroupSpec,
    policy: &Policy,
    trainer: &mut Trainer,
    ro: &Rollout,
    adv: &[f64],
    seed: u64,
    update: usize,
) -> Result<[f64; 5]> {
    let device = policy.device();
    let (b, w) = (ro.len(), ro.width);
    let t = |x: &[f32]| -> Result<Tensor> { Ok(Tensor::from_slice(x, (b, w), device)?) };
    let tokens = ro.tokens(policy)?;
    let token_adv: Vec<f32> = (0..b * w).map(|i| adv[i / w] as f32).collect();
    let (old_logp, ref_logp, advantages, mask) = (t(&ro.logp)?, t(&ro.ref_logp)?, t(&token_adv)?, t(&ro.mask)?);
    let beta_kl = if estimator == Estimator::Grpo { run.beta } else { 0.0 };
    let mut rng = crate::seed::rng(seed, &format!("{}/minibatches{update}", run.id));
    let mut order: Vec<u32> = (0..b as u32).collect();
    let (mut sums, mut count, mut grad_norm) = ([0f64; 4], 0usize, 0f64);
    for _ in 0..spec.epochs {
        order.shuffle(&mut rng);
        for chunk in order.chunks(spec.minibatch) {
            let idx = Tensor::from_slice(chunk, chunk.len(), device)?;
            let pick = |x: &Tensor| -> Result<Tensor> { Ok(x.index_select(&idx, 0)?) };
            let view = policy.response_view(&pick(&tokens)?)?;
            let (old, reference, a, m) = (pick(&old_logp)?, pick(&ref_logp)?, pick(&advantages)?, pick(&mask)?);
            let s = clipped_surrogate(&old, &view.logp, &a, &m, spec.clip)?;
            // k3 of KL(π‖π_ref) per token, on the current policy's log-probs.
            let kl = masked_mean(&k3(&(&reference - &view.logp)?)?, &m)?;
            let total = (&s.loss + (&kl * beta_kl)?)?;
            let st = trainer.step(&total, update)?;
            grad_norm = grad_norm.max(st.grad_norm);
            for (acc, v) in sums.iter_mut().zip([
                s.loss.to_scalar::<f32>()? as f64,
                beta_kl * kl.to_scalar::<f32>()? as f64,
                s.approx_kl as f64,
                s.clipfrac as f64,
            ]) {
                *acc += v;
            }
            count += 1;
        }
    }
    let n = count.max(1) as f64;
    Ok([sums[0] / n, sums[1] / n, sums[2] / n, sums[3] / n, grad_norm])
}
