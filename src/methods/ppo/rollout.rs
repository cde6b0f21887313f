//! Step 1 and 2 of a PPO update: sample responses from the current policy, score them with
//! the proxy ensemble, shape the scores (a π_ref response's score per prompt where the
//! shaping reads one), and turn them and the KL penalty into per-token rewards.

use candle_core::Tensor;
use rand::Rng;

use super::{Context, RunSpec};
use crate::stats::aggregate::Aggregator;
use crate::stats::shaping::Shaper;
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
    let score = aggregated(&set, members, agg)?;
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

/// The aggregated score of every sequence of `set` (standardized units): only the members
/// `agg` reads are run.
fn aggregated(set: &SeqSet, members: &[&RewardModel], agg: Aggregator) -> Result<Vec<f32>> {
    Ok(match agg {
        Aggregator::Member(i) => members[i].score_set(set, SCORE_BATCH)?,
        _ => {
            let scores = members.iter().map(|m| m.score_set(set, SCORE_BATCH)).collect::<Result<Vec<_>>>()?;
            agg.apply_all(&scores)
        }
    })
}

/// r_ref of each response of a rollout to `prompts`, which come in runs of `group` copies of
/// one prompt (1 for PPO): the aggregated score (`agg`, standardized units) of one π_ref
/// response per run, sampled at temperature 1 from `rng`, shared by the run's responses.
pub fn reference_scores(
    world: &WorldConfig,
    reference: &Policy,
    members: &[&RewardModel],
    agg: Aggregator,
    prompts: &[Vec<u32>],
    group: usize,
    rng: &mut impl Rng,
) -> Result<Vec<f32>> {
    let distinct: Vec<Vec<u32>> = prompts.chunks(group).map(|c| c[0].clone()).collect();
    let responses = reference.sample(&distinct, 1.0, rng)?;
    let scores = aggregated(&encode_all(world, &distinct, &responses), members, agg)?;
    Ok(scores.iter().flat_map(|&s| std::iter::repeat_n(s, group)).take(prompts.len()).collect())
}

/// The shaped score of each response of `r` (`shaper`, [`Shaper::apply`]), reading `r_ref`
/// (one per response; required where the shaping reads it) and each response's content
/// tokens. Unshaped: the aggregated scores themselves.
pub fn shaped(r: &Rollout, shaper: &Shaper, r_ref: Option<&[f32]>) -> Vec<f32> {
    assert!(r_ref.is_some() || !shaper.shaping.reads_reference(), "shaping {} reads r_ref", shaper.shaping.name());
    (0..r.len())
        .map(|i| shaper.apply(r.score[i], r_ref.map_or(0.0, |v| v[i]), r.responses[i].tokens.len()))
        .collect()
}

/// Run `run`'s shaped scores of its rollout `r` to `prompts` (runs of `group` copies of one
/// prompt): r_ref, only where the shaping reads it, from π_ref samples of the seed's stream
/// `stream` (name it by the update alone: every run of a sweep then shapes by the same π_ref
/// responses at that update).
pub fn shape(ctx: &Context, run: &RunSpec, r: &Rollout, prompts: &[Vec<u32>], group: usize, stream: &str) -> Result<Vec<f32>> {
    let r_ref = if run.shaping.reads_reference() {
        let mut rng = crate::seed::rng(ctx.seed, stream);
        Some(reference_scores(ctx.world, ctx.reference, &ctx.members, run.aggregator, prompts, group, &mut rng)?)
    } else {
        None
    };
    Ok(shaped(r, &ctx.spec.shaper(run.shaping), r_ref.as_deref()))
}

/// Per-token rewards `(b, width)`: `−β·k1` on every response token, plus the response's
/// (shaped) score from `score` on the last one (the end token, or the last token of an
/// unfinished response).
pub fn rewards(r: &Rollout, score: &[f32], beta: f64) -> Vec<f32> {
    assert_eq!(score.len(), r.len(), "one score per response");
    let mut out = vec![0f32; r.logp.len()];
    for (i, &s) in score.iter().enumerate() {
        let row = i * r.width;
        let n = r.tokens_of(i);
        let tokens = row..row + n;
        for ((o, &lp), &lr) in out[tokens.clone()].iter_mut().zip(&r.logp[tokens.clone()]).zip(&r.ref_logp[tokens]) {
            *o = (-beta * super::kl::k1(lp, lr)) as f32;
        }
        if n > 0 {
            out[row + n - 1] += s;
        }
    }
    out
}
