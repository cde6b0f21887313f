//! The PPO objective on one minibatch: clipped surrogate, clipped value loss, entropy
//! bonus, and the diagnostics that tell whether an update was sane.
//!
//! Every input is `(b, max_response)`; means run over response tokens only (`mask`).

use candle_core::Tensor;

use crate::error::Result;

/// Weights and clip ranges of the objective.
#[derive(Debug, Clone, Copy)]
pub struct LossConfig {
    /// ε of the ratio clip `clip(ρ, 1 − ε, 1 + ε)`.
    pub clip: f64,
    /// Largest change of the value estimate credited before its loss is clipped.
    pub value_clip: f64,
    pub value_coef: f64,
    pub entropy_coef: f64,
}

/// What the rollout fixed for a minibatch (no gradient flows through these).
#[derive(Debug, Clone)]
pub struct Targets {
    pub old_logp: Tensor,
    pub old_values: Tensor,
    pub advantages: Tensor,
    pub returns: Tensor,
    pub mask: Tensor,
}

/// The loss to minimize and its parts (parts as host numbers, means over tokens).
#[derive(Debug, Clone)]
pub struct Loss {
    /// policy + value_coef·value − entropy_coef·entropy.
    pub total: Tensor,
    pub policy: f32,
    pub value: f32,
    /// Mean token entropy (nats).
    pub entropy: f32,
    /// k3 estimate of KL(π_old‖π_new) per token: mean of (ρ − 1) − ln ρ, ρ = π_new/π_old.
    pub approx_kl: f32,
    /// Fraction of tokens whose ratio was clipped.
    pub clipfrac: f32,
}

fn masked_mean(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    Ok(((x * mask)?.sum_all()? / mask.sum_all()?)?)
}

/// The PPO loss from the new policy's log-probs, values and entropies.
///
/// policy: mean of `max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε))`;
/// value: mean of `½·max((V − R)², (V_old + clip(V − V_old, ±ε_v) − R)²)`.
pub fn ppo_loss(t: &Targets, new_logp: &Tensor, new_values: &Tensor, entropy: &Tensor, c: LossConfig) -> Result<Loss> {
    let log_ratio = (new_logp - &t.old_logp)?;
    let ratio = log_ratio.exp()?;
    let clipped = ratio.clamp(1.0 - c.clip, 1.0 + c.clip)?;
    let neg_adv = t.advantages.neg()?;
    let pg = (&neg_adv * &ratio)?.maximum(&(&neg_adv * &clipped)?)?;
    let policy = masked_mean(&pg, &t.mask)?;

    let v_clipped = (&t.old_values + (new_values - &t.old_values)?.clamp(-c.value_clip, c.value_clip)?)?;
    let err = (new_values - &t.returns)?.sqr()?;
    let err_clipped = (v_clipped - &t.returns)?.sqr()?;
    let value = (masked_mean(&err.maximum(&err_clipped)?, &t.mask)? * 0.5)?;

    let ent = masked_mean(entropy, &t.mask)?;
    let total = ((&policy + (&value * c.value_coef)?)? - (&ent * c.entropy_coef)?)?;

    let log_ratio = log_ratio.detach();
    let approx_kl = masked_mean(&((log_ratio.exp()? - 1.0)? - &log_ratio)?, &t.mask)?;
    let outside = (ratio.detach() - 1.0)?.abs()?.gt(c.clip)?.to_dtype(candle_core::DType::F32)?;
    let clipfrac = masked_mean(&outside, &t.mask)?;
    Ok(Loss {
        total,
        policy: policy.to_scalar::<f32>()?,
        value: value.to_scalar::<f32>()?,
        entropy: ent.to_scalar::<f32>()?,
        approx_kl: approx_kl.to_scalar::<f32>()?,
        clipfrac: clipfrac.to_scalar::<f32>()?,
    })
}
