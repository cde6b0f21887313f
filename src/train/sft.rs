//! Supervised fine-tuning of the reference policy π_ref on the demonstrator's responses:
//! cross-entropy on response tokens (end token included), prompt and padding masked out.

use candle_core::Tensor;
use candle_nn::VarMap;
use rand::Rng;

use crate::error::Result;
use crate::model::Policy;
use crate::train::optim::{Batches, RecentMean, Trainer};

use crate::world::{Response, SeqSet, WorldConfig};

/// Demonstrations: `n` prompts with one demonstrator response each.
pub fn demonstrations(world: &WorldConfig, n: usize, rng: &mut impl Rng) -> (Vec<Vec<u32>>, Vec<Response>) {
    let prompts: Vec<Vec<u32>> = (0..n).map(|_| world.prompt_in(crate::world::Split::Demonstrations, rng)).collect();
    let responses = prompts.iter().map(|p| world.demonstrate(p, rng)).collect();
    (prompts, responses)
}

/// Mean negative log-likelihood per response token of `tokens: (b, seq_len)`.
pub fn sft_loss(policy: &Policy, tokens: &Tensor) -> Result<Tensor> {
    let (logp, mask) = policy.response_logprobs(tokens)?;
    let total = (logp * &mask)?.sum_all()?;
    let count = mask.sum_all()?;
    Ok((total.neg()? / count)?)
}

/// SFT hyper-parameters.
#[derive(Debug, Clone)]
pub struct SftParams {
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub seed: u64,
    /// Data-parallel shards per batch (see [`Trainer::step_sharded`]).
    pub shards: usize,
}

/// What SFT reached.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SftReport {
    pub steps: usize,
    /// Mean of the last 20 training losses (nats/token).
    pub train_loss: f32,
    /// Held-out demonstrations (nats/token).
    pub val_loss: f32,
}

/// Trains `policy` (whose variables live in `varmap`) on `train`; reports on `val`.
pub fn train(
    policy: &Policy,
    varmap: &VarMap,
    train: &SeqSet,
    val: &SeqSet,
    p: &SftParams,
    progress: &indicatif::ProgressBar,
) -> Result<SftReport> {
    let device = policy.device().clone();
    let mut trainer = Trainer::new(varmap, p.lr, p.steps, 1.0, "reference policy (SFT)")?;
    let mut batches = Batches::new(train.len(), crate::seed::rng(p.seed, "sft/order"));
    let mut recent = RecentMean::new(20);
    for step in 0..p.steps {
        let sub = train.select(batches.next_batch(p.batch));
        let stats = trainer.step_sharded(sub.len(), p.shards, step, |r| {
            let part = sub.select(&r.collect::<Vec<_>>());
            let tokens = Tensor::from_slice(&part.tokens, (part.len(), part.seq_len), &device)?;
            sft_loss(policy, &tokens)
        })?;
        recent.push(stats.loss);
        progress.inc(1);
    }
    // Evaluated through a view of the same weights that records no graph: the same
    // arithmetic, without holding every layer's activations of a 512-sequence batch.
    let view = policy.with_weights(crate::model::frozen(varmap, &device))?;
    let val_loss = eval_loss(&view, val, 512)?;
    Ok(SftReport {
        steps: p.steps,
        train_loss: recent.mean(),
        val_loss,
    })
}

/// Mean NLL per response token over a whole set.
pub fn eval_loss(policy: &Policy, set: &SeqSet, batch: usize) -> Result<f32> {
    let device = policy.device().clone();
    let (mut total, mut count) = (0f64, 0f64);
    let idx: Vec<usize> = (0..set.len()).collect();
    for chunk in idx.chunks(batch.max(1)) {
        let sub = set.select(chunk);
        let tokens = Tensor::from_slice(&sub.tokens, (sub.len(), sub.seq_len), &device)?;
        let (logp, mask) = policy.response_logprobs(&tokens)?;
        total -= (logp * &mask)?.sum_all()?.to_scalar::<f32>()? as f64;
        count += mask.sum_all()?.to_scalar::<f32>()? as f64;
    }
    Ok((total / count.max(1.0)) as f32)
}

/// Fraction of a pool that repeats an earlier response: `1 − distinct / n`.
pub fn duplicate_fraction(responses: &[Response]) -> f64 {
    let distinct: std::collections::HashSet<&Response> = responses.iter().collect();
    1.0 - distinct.len() as f64 / responses.len().max(1) as f64
}
