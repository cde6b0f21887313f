//! Direct alignment: the policy learns from the preference pairs themselves, no reward model
//! in the loop — on exactly the pairs (the first `data_size`, with the same label flips)
//! that the proxies of an ensemble learn from.
//!
//! With the sequence log-ratio of a response `z(y) = Σ_t log π(y_t|·) − log π_ref(y_t|·)`
//! over its response tokens, `y_w` the preferred and `y_l` the other response of a pair, and
//! `h = z(y_w) − z(y_l)`, the loss of a pair is:
//! - DPO (Rafailov et al. 2023): `−ln σ(β·h)`;
//! - IPO (Azar et al. 2024): `(h − 1/(2β))²`;
//! - χPO (Huang et al. 2024): `−ln σ(clip(β·[φ(y_w) − φ(y_l)], ±c))` with the link
//!   `φ(y) = exp(z(y)) + z(y)` (the χ²-plus-KL link; `exp` reads `z` at most [`Z_MAX`]) and
//!   `c` = `daa.chipo_clip` (their 2R).
//!
//! Minibatches of pairs in a shuffled order per epoch, plain Adam at a constant rate with
//! gradient-norm clipping. Checkpoints: before training and `evals_per_epoch` times per
//! epoch (so several inside the first), each evaluated as PPO's are
//! ([`crate::methods::ppo::evaluate`]: fresh samples at temperature 1 on PPO's evaluation
//! prompts, KL by k1 and k3, gold, every member, the held-out proxy), plus the method's own:
//! its implicit reward `β·z` of those samples, and the log-probability of the chosen and the
//! rejected training responses (likelihood displacement: the chosen one's can fall while the
//! margin grows).

pub mod cell;
pub mod method;

use candle_core::{Tensor, D};
use candle_nn::VarMap;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::config::DaaSpec;
use crate::error::{Error, Result};
use crate::methods::ppo::{evaluate, Context, Evaluation, RunSpec};
use crate::model::Policy;
use crate::stats::mean_se;
use crate::train::optim::Trainer;
use crate::train::rm::bt_loss;
use crate::world::SeqSet;

/// The largest sequence log-ratio χPO's `exp` reads (beyond it the clip holds the loss flat).
pub const Z_MAX: f64 = 20.0;

/// Training pairs whose chosen and rejected log-probabilities a checkpoint records.
pub const DISPLACEMENT_PAIRS: usize = 256;

/// The loss of a direct-alignment method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Loss {
    Dpo,
    Ipo,
    Chipo,
}

impl Loss {
    /// Its method name in tables and `daa.losses` (`dpo`, `ipo`, `chipo`).
    pub fn name(self) -> &'static str {
        match self {
            Loss::Dpo => "dpo",
            Loss::Ipo => "ipo",
            Loss::Chipo => "chipo",
        }
    }

    /// How claims and the report name it.
    pub fn label(self) -> &'static str {
        match self {
            Loss::Dpo => "DPO",
            Loss::Ipo => "IPO",
            Loss::Chipo => "χPO",
        }
    }

    /// The loss of a batch of pairs from the sequence log-ratios of the chosen (`zw`) and the
    /// rejected (`zl`) responses, both `(b,)`: the mean over the batch.
    /// DPO and χPO are the Bradley–Terry loss the reward models train with
    /// ([`crate::train::rm::bt_loss`]) on their implicit rewards.
    pub fn of(self, zw: &Tensor, zl: &Tensor, beta: f64, chipo_clip: f64) -> Result<Tensor> {
        match self {
            Loss::Dpo => bt_loss(&(zw * beta)?, &(zl * beta)?),
            Loss::Ipo => Ok(((zw - zl)? - 1.0 / (2.0 * beta))?.sqr()?.mean_all()?),
            Loss::Chipo => {
                let phi = |z: &Tensor| -> Result<Tensor> { Ok((z.clamp(f64::NEG_INFINITY, Z_MAX)?.exp()? + z)?) };
                let m = ((phi(zw)? - phi(zl)?)? * beta)?.clamp(-chipo_clip, chipo_clip)?;
                bt_loss(&m, &m.zeros_like()?)
            }
        }
    }
}

/// One direct-alignment run.
pub struct Run<'a> {
    pub id: String,
    pub loss: Loss,
    pub beta: f64,
    pub spec: &'a DaaSpec,
    /// The preferred and the other response of each training pair, in pair order.
    pub chosen: SeqSet,
    pub rejected: SeqSet,
}

/// One checkpoint: PPO's evaluation of fresh samples, and the method's own measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Optimizer steps before it (0: π_ref); `epoch` = steps / steps per epoch.
    pub epoch: f64,
    pub evaluation: Evaluation,
    /// Mean implicit reward β·z of the evaluation samples (z: summed k1 of each).
    pub implicit_reward: f64,
    /// Mean log-probability (nats, summed over response tokens) of the chosen and the
    /// rejected responses of the first [`DISPLACEMENT_PAIRS`] training pairs, and the mean of
    /// their log-ratio margin h.
    pub chosen_logp: f64,
    pub rejected_logp: f64,
    pub margin: f64,
    /// Mean training loss over the steps since the last checkpoint (NaN-free: 0 steps → 0).
    pub train_loss: f64,
}

/// A finished run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub checkpoints: Vec<Checkpoint>,
    pub steps_per_epoch: usize,
}

impl Outcome {
    /// The checkpoints' evaluations, in order.
    pub fn evaluations(&self) -> Vec<Evaluation> {
        self.checkpoints.iter().map(|c| c.evaluation.clone()).collect()
    }
}

/// The steps at which a run of `steps_per_epoch × epochs` steps is evaluated: 0, then
/// `evals_per_epoch` evenly spaced steps in each epoch (rounded up, distinct), the last
/// step included.
pub fn checkpoint_steps(steps_per_epoch: usize, epochs: usize, evals_per_epoch: usize) -> Vec<usize> {
    let mut out = vec![0];
    for e in 0..epochs {
        for k in 1..=evals_per_epoch {
            let s = e * steps_per_epoch + (k * steps_per_epoch).div_ceil(evals_per_epoch);
            if s > *out.last().expect("non-empty") {
                out.push(s);
            }
        }
    }
    out
}

/// Summed response log-probs `(b,)` of `set` under `policy` (with a graph when the policy's
/// variables record one).
fn sequence_logp(policy: &Policy, set: &SeqSet, rows: &[u32]) -> Result<Tensor> {
    let device = policy.device();
    let all = Tensor::from_slice(&set.tokens, (set.len(), set.seq_len), device)?;
    let idx = Tensor::from_slice(rows, rows.len(), device)?;
    let (logp, mask) = policy.response_logprobs(&all.index_select(&idx, 0)?)?;
    Ok((logp * mask)?.sum(D::Minus1)?)
}

/// Trains `policy` (a trainable copy of π_ref, variables in `varmap`) on the run's pairs.
pub fn train(ctx: &Context, run: &Run, policy: &Policy, varmap: &VarMap, progress: &indicatif::ProgressBar) -> Result<Outcome> {
    let s = run.spec;
    let n = run.chosen.len();
    let steps_per_epoch = n.div_ceil(s.batch);
    let evals = checkpoint_steps(steps_per_epoch, s.epochs, s.evals_per_epoch);
    let mut trainer = Trainer::constant(varmap, s.lr, s.max_grad_norm, &run.id)?;
    let view = policy.with_weights(crate::model::frozen(varmap, policy.device()))?;
    // π_ref's log-probs of every training response, once.
    let all: Vec<u32> = (0..n as u32).collect();
    let ref_of = |set: &SeqSet| -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(n);
        for chunk in all.chunks(crate::model::SCORE_BATCH) {
            out.extend(sequence_logp(ctx.reference, set, chunk)?.to_vec1::<f32>()?);
        }
        Ok(out)
    };
    let (ref_w, ref_l) = (ref_of(&run.chosen)?, ref_of(&run.rejected)?);
    let spec = RunSpec {
        id: run.id.clone(),
        aggregator: crate::stats::aggregate::Aggregator::Direct,
        shaping: crate::stats::shaping::Shaping::None,
        beta: run.beta,
    };
    let (mut losses, mut out) = (Vec::new(), Outcome { checkpoints: Vec::new(), steps_per_epoch });
    out.checkpoints.push(checkpoint(ctx, run, &spec, &view, (&ref_w, &ref_l), 0, steps_per_epoch, &mut losses)?);
    let mut order: Vec<u32> = all.clone();
    let mut step = 0;
    for epoch in 0..s.epochs {
        let mut rng = crate::seed::rng(ctx.seed, &format!("{}/order{epoch}", run.id));
        order.shuffle(&mut rng);
        for chunk in order.chunks(s.batch) {
            step += 1;
            let pick = |r: &[f32]| -> Result<Tensor> {
                let v: Vec<f32> = chunk.iter().map(|&i| r[i as usize]).collect();
                Ok(Tensor::from_slice(&v, v.len(), policy.device())?)
            };
            let zw = (sequence_logp(policy, &run.chosen, chunk)? - pick(&ref_w)?)?;
            let zl = (sequence_logp(policy, &run.rejected, chunk)? - pick(&ref_l)?)?;
            let loss = run.loss.of(&zw, &zl, run.beta, s.chipo_clip)?;
            let st = trainer.step(&loss, step)?;
            losses.push(st.loss as f64);
            progress.inc(1);
            if evals.contains(&step) {
                out.checkpoints.push(checkpoint(ctx, run, &spec, &view, (&ref_w, &ref_l), step, steps_per_epoch, &mut losses)?);
            }
        }
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn checkpoint(
    ctx: &Context,
    run: &Run,
    spec: &RunSpec,
    view: &Policy,
    (ref_w, ref_l): (&[f32], &[f32]),
    step: usize,
    steps_per_epoch: usize,
    losses: &mut Vec<f64>,
) -> Result<Checkpoint> {
    let evaluation = evaluate(ctx, spec, view, step)?;
    let rows: Vec<u32> = (0..run.chosen.len().min(DISPLACEMENT_PAIRS) as u32).collect();
    let w: Vec<f32> = sequence_logp(view, &run.chosen, &rows)?.to_vec1()?;
    let l: Vec<f32> = sequence_logp(view, &run.rejected, &rows)?.to_vec1()?;
    let margin: Vec<f64> = rows
        .iter()
        .map(|&i| {
            let i = i as usize;
            (w[i] - ref_w[i]) as f64 - (l[i] - ref_l[i]) as f64
        })
        .collect();
    let k1: Vec<f64> = evaluation.units.kl_k1.iter().map(|&v| run.beta * v as f64).collect();
    let c = Checkpoint {
        epoch: step as f64 / steps_per_epoch.max(1) as f64,
        implicit_reward: mean_se(&k1).0,
        chosen_logp: mean_se(&w.iter().map(|&v| v as f64).collect::<Vec<_>>()).0,
        rejected_logp: mean_se(&l.iter().map(|&v| v as f64).collect::<Vec<_>>()).0,
        margin: mean_se(&margin).0,
        train_loss: if losses.is_empty() { 0.0 } else { losses.iter().sum::<f64>() / losses.len() as f64 },
        evaluation,
    };
    losses.clear();
    if let Some(v) = [c.implicit_reward, c.chosen_logp, c.rejected_logp, c.margin, c.train_loss].into_iter().find(|v| !v.is_finite()) {
        return Err(Error::NonFiniteLoss { model: format!("{} (checkpoint)", run.id), step, value: v as f32 });
    }
    Ok(c)
}
