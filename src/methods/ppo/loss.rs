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

/// Mean of `x` over the entries where `mask` is 1.
pub fn masked_mean(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    Ok(((x * mask)?.sum_all()? / mask.sum_all()?)?)
}

/// k3 per token, `(e^x − 1) − x` with `x` = log q − log p: the tensor form of
/// [`super::kl::k3`] (KL(p‖q) from samples of p; never negative).
pub fn k3(log_rho: &Tensor) -> Result<Tensor> {
    Ok(((log_rho.exp()? - 1.0)? - log_rho)?)
}

/// The clipped surrogate of one minibatch and what says whether the step was sane.
#[derive(Debug, Clone)]
pub struct Surrogate {
    /// Mean over response tokens of `max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε))`, ρ = π_new/π_old.
    pub loss: Tensor,
    /// Mean k3 estimate of KL(π_old‖π_new) per token.
    pub approx_kl: f32,
    /// Fraction of tokens whose ratio was clipped.
    pub clipfrac: f32,
}

/// The clipped surrogate from the new policy's log-probs; every input `(b, max_response)`,
/// `advantages` per token (the policy-gradient methods' one objective: PPO's policy term,
/// GRPO's and RLOO's whole surrogate).
pub fn clipped_surrogate(old_logp: &Tensor, new_logp: &Tensor, advantages: &Tensor, mask: &Tensor, clip: f64) -> Result<Surrogate> {
    let log_ratio = (new_logp - old_logp)?;
    let ratio = log_ratio.exp()?;
    let clipped = ratio.clamp(1.0 - clip, 1.0 + clip)?;
    let neg_adv = advantages.neg()?;
    let pg = (&neg_adv * &ratio)?.maximum(&(&neg_adv * &clipped)?)?;
    let loss = masked_mean(&pg, mask)?;
    let log_ratio = log_ratio.detach();
    // k3 of KL(π_old‖π_new) from samples of π_old: x = log π_new − log π_old.
    let approx_kl = masked_mean(&k3(&log_ratio)?, mask)?;
    let outside = (ratio.detach() - 1.0)?.abs()?.gt(clip)?.to_dtype(candle_core::DType::F32)?;
    let clipfrac = masked_mean(&outside, mask)?;
    Ok(Surrogate {
        loss,
        approx_kl: approx_kl.to_scalar::<f32>()?,
        clipfrac: clipfrac.to_scalar::<f32>()?,
    })
}

/// The PPO loss from the new policy's log-probs, values and entropies.
///
/// policy: mean of `max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε))`;
/// value: mean of `½·max((V − R)², (V_old + clip(V − V_old, ±ε_v) − R)²)`.
pub fn ppo_loss(t: &Targets, new_logp: &Tensor, new_values: &Tensor, entropy: &Tensor, c: LossConfig) -> Result<Loss> {
    let s = clipped_surrogate(&t.old_logp, new_logp, &t.advantages, &t.mask, c.clip)?;
    let policy = s.loss;

    let v_clipped = (&t.old_values + (new_values - &t.old_values)?.clamp(-c.value_clip, c.value_clip)?)?;
    let err = (new_values - &t.returns)?.sqr()?;
    let err_clipped = (v_clipped - &t.returns)?.sqr()?;
    let value = (masked_mean(&err.maximum(&err_clipped)?, &t.mask)? * 0.5)?;

    let ent = masked_mean(entropy, &t.mask)?;
    let total = ((&policy + (&value * c.value_coef)?)? - (&ent * c.entropy_coef)?)?;

    Ok(Loss {
        total,
        policy: policy.to_scalar::<f32>()?,
        value: value.to_scalar::<f32>()?,
        entropy: ent.to_scalar::<f32>()?,
        approx_kl: s.approx_kl,
        clipfrac: s.clipfrac,
    })
}
