//! Evaluating samples: the one routine that scores a set of responses — a best-of-n cell's
//! pools, or the fresh samples of a PPO checkpoint — with gold, every ensemble member and the
//! held-out proxy (standardized scores), and measures what an optimizer exploits (response
//! length, distinct-token ratio).

use crate::error::Result;
use crate::model::RewardModel;
use crate::world::{Response, SeqSet, WorldConfig};

/// Batch size for scoring (no gradients).
pub const SCORE_BATCH: usize = 512;

/// The reward models a set of samples is scored by.
pub struct Scorers<'a> {
    pub gold: &'a RewardModel,
    /// The ensemble's members (best-of-n: every proxy of the replicate, in grid order).
    pub members: Vec<&'a RewardModel>,
    /// The held-out proxy, never optimized against, if the study has one.
    pub heldout: Option<&'a RewardModel>,
}

/// Every sample's scores and response statistics, in sample order.
pub struct Scored {
    /// The samples, encoded.
    pub set: SeqSet,
    pub gold: Vec<f32>,
    /// `members[m][i]`: member m's score of sample i.
    pub members: Vec<Vec<f32>>,
    pub heldout: Option<Vec<f32>>,
    /// Response length (content tokens) and distinct tokens / length (1 when empty).
    pub length: Vec<f32>,
    pub distinct_ratio: Vec<f32>,
}

impl Scored {
    /// Population variance (divide by k) of the member scores of sample `i`: the members'
    /// disagreement.
    pub fn disagreement(&self, i: usize, members: &[usize]) -> f64 {
        let scores: Vec<f32> = members.iter().map(|&m| self.members[m][i]).collect();
        crate::aggregate::population_variance(&scores)
    }
}

/// Scores `responses` to `prompts` (one each) with `s`. `side_by_side`: one model per thread
/// of the work pool (a best-of-n cell, which has the cores to itself); otherwise one after
/// another on this thread (a PPO checkpoint, whose run already shares the pool with others).
/// `done` is called once per model scored, for progress.
pub fn score(
    world: &WorldConfig,
    prompts: &[Vec<u32>],
    responses: &[Response],
    s: &Scorers,
    side_by_side: bool,
    done: &(dyn Fn() + Sync),
) -> Result<Scored> {
    let set = crate::model::policy::encode_all(world, prompts, responses);
    let models: Vec<&RewardModel> = std::iter::once(s.gold).chain(s.members.iter().copied()).chain(s.heldout).collect();
    let one = |m: &&RewardModel| {
        let r = m.score_set(&set, SCORE_BATCH);
        done();
        r
    };
    let scored: Vec<Result<Vec<f32>>> = if side_by_side {
        crate::parallel::map(&models, one)
    } else {
        models.iter().map(one).collect()
    };
    let mut scores = scored.into_iter().collect::<Result<Vec<_>>>()?;
    let heldout = s.heldout.map(|_| scores.pop().expect("the held-out proxy was scored"));
    let gold = scores.remove(0);
    let (length, distinct_ratio) = crate::bon::response_stats(responses);
    Ok(Scored {
        set,
        gold,
        members: scores,
        heldout,
        length,
        distinct_ratio,
    })
}
