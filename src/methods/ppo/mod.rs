//! PPO against a proxy ensemble (token-level, π_ref frozen as the KL anchor).
//!
//! One update, in order (each step one function):
//! 1. [`rollout::collect`]: sample one response per training prompt from π at temperature 1;
//!    score it with the ensemble through the run's [`Aggregator`] (standardized units);
//! 2. [`rollout::shape`]: the run's shaping of each aggregated score (`ppo.shaping`:
//!    none, PAR, centering, clipping, a length penalty; PAR and centering read r_ref, the
//!    score of one π_ref response per training prompt); [`rollout::rewards`]: reward = the
//!    shaped score at the response's last token, minus β·k1 = β·(log π − log π_ref) on every
//!    response token;
//! 3. [`advantages`]: GAE (γ, λ from the config) per response, advantages whitened over
//!    the rollout's tokens;
//! 4. [`optimize`]: several epochs of shuffled minibatches of the clipped surrogate and the
//!    clipped value loss, with gradient-norm clipping, stepped by plain Adam at a constant
//!    rate ([`PPO_OPTIMIZER`]); diagnostics (approx_kl, clipfrac,
//!    entropy, value loss, explained variance) per update;
//! 5. [`evaluate`] every `eval_every` updates (and at update 0 and at the end): fresh
//!    samples at temperature 1 for held-out prompts; KL(π‖π_ref) as the k1 mean (k3 too),
//!    gold, the aggregated proxy, every member, disagreement, length, distinct ratio.
//!
//! A NaN or infinite value anywhere ends the run with an error naming the run and update.
//!
//! [`cell`]: the PPO runs of the grid and the cell of one; [`method`]: PPO in a study's
//! plan, and its curves and tables.

pub mod cell;
pub mod method;
pub mod gae;
pub mod kl;
pub mod loss;
pub mod rollout;

use candle_core::Tensor;
use candle_nn::VarMap;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::stats::aggregate::{mean, population_variance, Aggregator};
use crate::stats::shaping::Shaping;
use crate::stats::curve::Measures;
use crate::stats::mean_se;
use crate::config::PpoSpec;
use crate::error::{Error, Result};
use crate::model::{Policy, RewardModel};
use crate::train::optim::Trainer;
use crate::world::WorldConfig;

use loss::{LossConfig, Targets};
use rollout::Rollout;

/// PPO's optimizer, exactly: what [`train`] steps the policy (and its value head) with.
/// Recorded in manifests.
pub const PPO_OPTIMIZER: &str = "Adam (candle AdamW with weight decay 0; beta1 0.9, beta2 0.999, eps 1e-8), \
constant learning rate ppo.lr, global gradient-norm clipping at ppo.max_grad_norm";

/// What a run reads but never changes.
pub struct Context<'a> {
    pub world: &'a WorldConfig,
    /// π_ref, frozen.
    pub reference: &'a Policy,
    pub gold: &'a RewardModel,
    /// Every member of the ensemble (standardized scores).
    pub members: Vec<&'a RewardModel>,
    /// The held-out proxy, scored at evaluations only (never optimized against).
    pub heldout: Option<&'a RewardModel>,
    pub spec: &'a PpoSpec,
    pub seed: u64,
    /// Held-out evaluation prompts, the same for every run and checkpoint.
    pub eval_prompts: &'a [Vec<u32>],
}

/// One run of a sweep.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// `ppo/ENSEMBLE/AGGREGATOR[λ][+SHAPING]/bBETA`, names the run in logs and errors.
    pub id: String,
    pub aggregator: Aggregator,
    /// The shaping of the aggregated score (its parameters are the context's `[ppo]`'s).
    pub shaping: Shaping,
    /// KL-penalty coefficient β.
    pub beta: f64,
}

/// One evaluation checkpoint (fresh samples for the held-out prompts, one each).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Updates done before this checkpoint (0: the policy is π_ref).
    pub step: usize,
    /// KL(π‖π_ref) in nats: mean over samples of the summed per-token k1, and of k3.
    pub kl_k1: f64,
    pub kl_k3: f64,
    /// Standardized gold of each prompt's sample, in prompt order.
    pub gold_by_prompt: Vec<f64>,
    /// What is measured of the checkpoint's samples besides gold: means over samples.
    #[serde(flatten)]
    pub measures: Measures,
    /// Per sample, in prompt order (the `ppo_units` table): what the statistics of a
    /// report are recomputed from.
    pub units: EvalUnits,
}

/// One checkpoint's samples, one value per held-out prompt, in prompt order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalUnits {
    /// The aggregated proxy score of each sample.
    pub proxy: Vec<f32>,
    /// `members[m][i]`: member m's score of sample i.
    pub members: Vec<Vec<f32>>,
    /// The held-out proxy's score of each sample, if the experiment has one.
    pub heldout: Option<Vec<f32>>,
    /// Summed per-token k1 (nats) of each sample.
    pub kl_k1: Vec<f32>,
}

/// Diagnostics of one update (`ppo/…` in the training table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateStats {
    /// 1-based: the policy after this update has had `update` updates.
    pub update: usize,
    /// Rollout means: aggregated proxy score, summed k1 per response (nats), total reward
    /// (the shaped score less β·k1).
    pub proxy: f64,
    pub kl_k1: f64,
    pub reward: f64,
    /// Means over the update's minibatches.
    pub policy_loss: f64,
    pub value_loss: f64,
    pub entropy: f64,
    pub approx_kl: f64,
    pub clipfrac: f64,
    /// 1 − Var(returns − values)/Var(returns) over the rollout's tokens, before the update.
    pub explained_variance: f64,
    /// Largest pre-clipping gradient norm of the update's minibatches.
    pub grad_norm: f64,
}

/// A finished run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub evaluations: Vec<Evaluation>,
    pub updates: Vec<UpdateStats>,
    /// The run stopped early because its measured KL passed `kl_budget`.
    pub stopped_at_budget: bool,
}

/// Trains `policy` (initialized to π_ref, variables in `varmap`) for one run.
pub fn train(ctx: &Context, run: &RunSpec, policy: &Policy, varmap: &VarMap, progress: &indicatif::ProgressBar) -> Result<Outcome> {
    let s = ctx.spec;
    let mut trainer = Trainer::constant(varmap, s.lr, s.max_grad_norm, &run.id)?;
    // Rollouts and evaluations only infer: they read a view of the same variables that
    // records no graph (it follows the optimizer's in-place updates).
    let view = policy.with_weights(crate::model::frozen(varmap, policy.device()))?;
    let mut out = Outcome {
        evaluations: vec![evaluate(ctx, run, &view, 0)?],
        updates: Vec::with_capacity(s.updates),
        stopped_at_budget: false,
    };
    for u in 0..s.updates {
        let stats = update(ctx, run, policy, &view, &mut trainer, u + 1)?;
        out.updates.push(stats);
        progress.inc(1);
        let done = u + 1 == s.updates;
        if (u + 1) % s.eval_every == 0 || done {
            let e = evaluate(ctx, run, &view, u + 1)?;
            let over = s.kl_budget.is_some_and(|b| e.kl_k1 > b);
            out.evaluations.push(e);
            if over && !done {
                out.stopped_at_budget = true;
                progress.inc((s.updates - u - 1) as u64);
                break;
            }
        }
    }
    Ok(out)
}

/// Steps 1–4: one PPO update (the `update`-th, 1-based) of `policy`; `view` is the same
/// weights without a graph (see [`crate::model::frozen`]), for the rollout.
pub fn update(ctx: &Context, run: &RunSpec, policy: &Policy, view: &Policy, trainer: &mut Trainer, update: usize) -> Result<UpdateStats> {
    let prompts = training_prompts(ctx, update - 1);
    let mut rng = crate::seed::rng(ctx.seed, &format!("{}/rollout{}", run.id, update - 1));
    let ro = rollout::collect(ctx.world, view, ctx.reference, &ctx.members, run.aggregator, &prompts, &mut rng)?;
    let shaped = rollout::shape(ctx, run, &ro, &prompts, 1, &format!("ppo/train/update{}/reference", update - 1))?;
    let rewards = rollout::rewards(&ro, &shaped, run.beta);
    check_finite(&rewards, run, update, "rewards")?;
    check_finite(&ro.values, run, update, "values")?;
    let (adv, ret) = advantages(&ro, &rewards, ctx.spec.gamma, ctx.spec.gae_lambda);
    optimize(ctx, run, policy, trainer, &ro, &rewards, (&adv, &ret), update)
}

/// Training prompts of update `u`: the same for every run of a sweep.
fn training_prompts(ctx: &Context, u: usize) -> Vec<Vec<u32>> {
    let mut rng = crate::seed::rng(ctx.seed, &format!("ppo/train/update{u}"));
    (0..ctx.spec.rollout).map(|_| ctx.world.prompt_in(crate::world::Split::PpoTrain, &mut rng)).collect()
}

fn check_finite(x: &[f32], run: &RunSpec, update: usize, what: &str) -> Result<()> {
    match x.iter().find(|v| !v.is_finite()) {
        None => Ok(()),
        Some(&v) => Err(Error::NonFiniteLoss {
            model: format!("{} ({what})", run.id),
            step: update,
            value: v,
        }),
    }
}

/// Step 3: GAE per response over its tokens, then advantages whitened over all tokens.
/// Returns (advantages, returns), both `(b, width)` with 0 past each response.
pub fn advantages(ro: &Rollout, rewards: &[f32], gamma: f64, lambda: f64) -> (Vec<f32>, Vec<f32>) {
    let mut adv = vec![0f32; rewards.len()];
    let mut ret = vec![0f32; rewards.len()];
    for i in 0..ro.len() {
        let row = i * ro.width;
        let n = ro.tokens_of(i);
        let (a, r) = gae::gae(&rewards[row..row + n], &ro.values[row..row + n], gamma, lambda);
        adv[row..row + n].copy_from_slice(&a);
        ret[row..row + n].copy_from_slice(&r);
    }
    gae::whiten(&mut adv, &ro.mask);
    (adv, ret)
}

/// 1 − Var(y − pred)/Var(y) over the entries where `mask` is 1 (population variances).
pub fn explained_variance(pred: &[f32], y: &[f32], mask: &[f32]) -> f64 {
    let pick = |f: &dyn Fn(usize) -> f32| -> Vec<f32> { (0..y.len()).filter(|&i| mask[i] > 0.0).map(f).collect() };
    let ys = pick(&|i| y[i]);
    let res = pick(&|i| y[i] - pred[i]);
    let var_y = population_variance(&ys);
    if var_y <= 0.0 {
        return f64::NAN;
    }
    1.0 - population_variance(&res) / var_y
}

/// Step 4: `epochs` passes of shuffled minibatches over the rollout.
#[allow(clippy::too_many_arguments)]
fn optimize(
    ctx: &Context,
    run: &RunSpec,
    policy: &Policy,
    trainer: &mut Trainer,
    ro: &Rollout,
    rewards: &[f32],
    (adv, ret): (&[f32], &[f32]),
    update: usize,
) -> Result<UpdateStats> {
    let s = ctx.spec;
    let device = policy.device();
    let (b, w) = (ro.len(), ro.width);
    let t = |x: &[f32]| -> Result<Tensor> { Ok(Tensor::from_slice(x, (b, w), device)?) };
    let tokens = ro.tokens(policy)?;
    let all = Targets {
        old_logp: t(&ro.logp)?,
        old_values: t(&ro.values)?,
        advantages: t(adv)?,
        returns: t(ret)?,
        mask: t(&ro.mask)?,
    };
    let cfg = LossConfig {
        clip: s.clip,
        value_clip: s.value_clip,
        value_coef: s.value_coef,
        entropy_coef: s.entropy_coef,
    };
    let mut rng = crate::seed::rng(ctx.seed, &format!("{}/minibatches{update}", run.id));
    let mut order: Vec<u32> = (0..b as u32).collect();
    let mut sums = [0f64; 5];
    let mut count = 0usize;
    let mut grad_norm = 0f64;
    for _ in 0..s.epochs {
        order.shuffle(&mut rng);
        for chunk in order.chunks(s.minibatch) {
            let idx = Tensor::from_slice(chunk, chunk.len(), device)?;
            let pick = |x: &Tensor| -> Result<Tensor> { Ok(x.index_select(&idx, 0)?) };
            let view = policy.response_view(&pick(&tokens)?)?;
            let mb = Targets {
                old_logp: pick(&all.old_logp)?,
                old_values: pick(&all.old_values)?,
                advantages: pick(&all.advantages)?,
                returns: pick(&all.returns)?,
                mask: pick(&all.mask)?,
            };
            let l = loss::ppo_loss(&mb, &view.logp, &view.values, &view.entropy, cfg)?;
            let st = trainer.step(&l.total, update)?;
            grad_norm = grad_norm.max(st.grad_norm);
            for (acc, v) in sums.iter_mut().zip([l.policy, l.value, l.entropy, l.approx_kl, l.clipfrac]) {
                *acc += v as f64;
            }
            count += 1;
        }
    }
    let n = count.max(1) as f64;
    let (k1s, _) = kl::sequence_kl(&ro.logp, &ro.ref_logp, &ro.mask, w);
    Ok(UpdateStats {
        update,
        proxy: mean(&ro.score),
        kl_k1: mean_se(&k1s).0,
        reward: rewards.iter().map(|&r| r as f64).sum::<f64>() / b as f64,
        policy_loss: sums[0] / n,
        value_loss: sums[1] / n,
        entropy: sums[2] / n,
        approx_kl: sums[3] / n,
        clipfrac: sums[4] / n,
        explained_variance: explained_variance(&ro.values, ret, &ro.mask),
        grad_norm,
    })
}

/// Step 5: one checkpoint on the held-out prompts with fresh samples at temperature 1.
pub fn evaluate(ctx: &Context, run: &RunSpec, policy: &Policy, step: usize) -> Result<Evaluation> {
    // The same stream for every run at a given step (common random numbers): at step 0 every
    // run draws the same samples from π_ref, and later differences between runs are less noisy.
    let mut rng = crate::seed::rng(ctx.seed, &format!("ppo/eval/step{step}"));
    let prompts = ctx.eval_prompts;
    let responses = policy.sample(prompts, 1.0, &mut rng)?;
    let scorers = crate::methods::eval::Scorers {
        gold: ctx.gold,
        members: ctx.members.clone(),
        heldout: ctx.heldout,
    };
    let sc = crate::methods::eval::score(ctx.world, prompts, &responses, &scorers, false, &|| {})?;
    let set = &sc.set;
    let tokens = Tensor::from_slice(&set.tokens, (set.len(), set.seq_len), policy.device())?;
    let (logp, mask) = policy.response_logprobs(&tokens)?;
    let (ref_logp, _) = ctx.reference.response_logprobs(&tokens)?;
    let w = logp.dim(1)?;
    let flat = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.detach().flatten_all()?.to_vec1::<f32>()?) };
    let (k1s, k3s) = kl::sequence_kl(&flat(&logp)?, &flat(&ref_logp)?, &flat(&mask)?, w);
    let members = &sc.members;
    let agg = run.aggregator.apply_all(members);
    let all: Vec<usize> = (0..members.len()).collect();
    let var: Vec<f64> = (0..set.len()).map(|i| sc.disagreement(i, &all)).collect();
    let e = Evaluation {
        step,
        kl_k1: mean_se(&k1s).0,
        kl_k3: mean_se(&k3s).0,
        gold_by_prompt: sc.gold.iter().map(|&g| g as f64).collect(),
        measures: Measures {
            proxy: mean(&agg),
            members: members.iter().map(|m| mean(m)).collect(),
            disagreement: mean_se(&var).0,
            length: mean(&sc.length),
            distinct_ratio: mean(&sc.distinct_ratio),
            heldout: sc.heldout.as_deref().map(mean),
        },
        units: EvalUnits {
            proxy: agg.clone(),
            members: members.clone(),
            heldout: sc.heldout.clone(),
            kl_k1: k1s.iter().map(|&v| v as f32).collect(),
        },
    };
    let m = &e.measures;
    let scalars = [e.kl_k1, e.kl_k3, m.proxy, m.disagreement, m.length, m.distinct_ratio];
    let mut all = scalars.iter().chain(&m.members).chain(&e.gold_by_prompt).chain(&m.heldout);
    if let Some(&v) = all.find(|v| !v.is_finite()) {
        return Err(Error::NonFiniteLoss {
            model: format!("{} (evaluation)", run.id),
            step,
            value: v as f32,
        });
    }
    Ok(e)
}

/// Per checkpoint: gold at the run's peak checkpoint (highest mean gold) minus gold here,
/// and its standard error paired over the held-out prompts.
pub fn below_peak(evals: &[Evaluation]) -> Vec<(f64, f64)> {
    let means: Vec<f64> = evals.iter().map(|e| mean_se(&e.gold_by_prompt).0).collect();
    let Some(peak) = (0..evals.len()).max_by(|&a, &b| means[a].total_cmp(&means[b])) else {
        return Vec::new();
    };
    evals
        .iter()
        .map(|e| {
            let d: Vec<f64> = evals[peak].gold_by_prompt.iter().zip(&e.gold_by_prompt).map(|(p, g)| p - g).collect();
            mean_se(&d)
        })
        .collect()
}
