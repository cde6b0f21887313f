//! Step 1 and 2 of a PPO update: sample responses from the current policy, score them with
//! the proxy ensemble, and turn scores and the KL penalty into per-token rewards.

use candle_core::Tensor;
use rand::Rng;

use crate::stats::aggregate::Aggregator;
use crate::error::Result;
use crate::model::policy::encode_all;
use crate::model::{Policy, RewardModel};
use crate::world::{Response, SeqSet, WorldConfig};

/// Batch size for scoring (no gradients).
use crate::model::SCORE_BATCH;

/// One rollout of `b` responses. Per-token fields are `(b, width)` row-major, width =
/// the world's `max_response`; positions past a response's end have mask 0.
#[derive(Debug, Clone)]
pub struct Rollout {
    pub responses: Vec<Response>,
    pub set: SeqSet,
    pub width: usize,
    /// log π_old(y_t|·) of the sampled tokens (the policy that sampled them).
    pub logp: Vec<f32>,
    /// log π_ref(y_t|·) of the same tokens.
    pub ref_logp: Vec<f32>,
    /// Value estimates of the state before each token.
    pub values: Vec<f32>,
    pub mask: Vec<f32>,
    /// The aggregated, standardized proxy score of each response (b,).
    pub score: Vec<f32>,
}

impl Rollout {
    pub fn len(&self) -> usize {
        self.responses.len()
    }

    pub fn is_empty(&self) -> bool {
        self.responses.is_empty()
    }

    /// (b, seq_len) token tensor on `policy`'s device.
    pub fn tokens(&self, policy: &Policy) -> Result<Tensor> {
        Ok(Tensor::from_slice(&self.set.tokens, (self.set.len(), self.set.seq_len), policy.device())?)
    }

    /// Number of response tokens of row i (end token included).
    pub fn tokens_of(&self, i: usize) -> usize {
        self.mask[i * self.width..(i + 1) * self.width].iter().filter(|&&m| m > 0.0).count()
    }
}

/// Samples one response per prompt from `policy` at temperature 1 and scores it.
/// `members` is the whole ensemble; only the members `agg` reads are run.
pub fn collect(
    world: &WorldConfig,
    policy: &Policy,
    reference: &Policy,
    members: &[&RewardModel],
    agg: Aggregator,
    prompts: &[Vec<u32>],
    rng: &mut impl Rng,
) -> Result<Rollout> {
    let responses = policy.sample(prompts, 1.0, rng)?;
    let set = encode_all(world, prompts, &responses);
    let tokens = Tensor::from_slice(&set.tokens, (set.len(), set.seq_len), policy.device())?;
    let view = policy.response_view(&tokens)?;
    let (ref_logp, _) = reference.response_logprobs(&tokens)?;
    let flat = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.detach().flatten_all()?.to_vec1::<f32>()?) };
    let score = match agg {
        Aggregator::Member(i) => members[i].score_set(&set, SCORE_BATCH)?,
        _ => {
            let scores = members
                .iter()
                .map(|m| m.score_set(&set, SCORE_BATCH))
                .collect::<Result<Vec<_>>>()?;
            agg.apply_all(&scores)
        }
    };
    Ok(Rollout {
        width: view.logp.dim(1)?,
        logp: flat(&view.logp)?,
        ref_logp: flat(&ref_logp)?,
        values: flat(&view.values)?,
        mask: flat(&view.mask)?,
        responses,
        set,
        score,
    })
}

/// Per-token rewards `(b, width)`: `−β·k1` on every response token, plus the aggregated
/// proxy score on the last one (the end token, or the last token of an unfinished response).
pub fn rewards(r: &Rollout, beta: f64) -> Vec<f32> {
    let mut out = vec![0f32; r.logp.len()];
    for i in 0..r.len() {
        let row = i * r.width;
        let n = r.tokens_of(i);
        let tokens = row..row + n;
        for ((o, &lp), &lr) in out[tokens.clone()].iter_mut().zip(&r.logp[tokens.clone()]).zip(&r.ref_logp[tokens]) {
            *o = (-beta * super::kl::k1(lp, lr)) as f32;
        }
        if n > 0 {
            out[row + n - 1] += r.score[i];
        }
    }
    out
}
