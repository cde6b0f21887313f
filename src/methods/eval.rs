//! Evaluating samples: the one routine that scores a set of responses — a best-of-n cell's
//! pools, or the fresh samples of a PPO checkpoint — with gold, every ensemble member and the
//! held-out proxy (standardized scores), and measures what an optimizer exploits (response
//! length, distinct-token ratio).

use crate::error::Result;
use crate::model::RewardModel;
use crate::world::{Response, SeqSet, WorldConfig};

pub use crate::model::SCORE_BATCH;

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
        crate::stats::aggregate::population_variance(&scores)
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
    let (length, distinct_ratio) = response_stats(responses);
    Ok(Scored {
        set,
        gold,
        members: scores,
        heldout,
        length,
        distinct_ratio,
    })
}

/// One reward-model shape's measured scoring rate ([`bench_scoring`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScoreRate {
    /// `gold`, or `proxy/SIZE`.
    pub model: String,
    pub params: usize,
    /// How many models of this shape a best-of-n cell scores its pool with.
    pub per_bon_cell: usize,
    pub samples: usize,
    pub seconds: f64,
    pub samples_per_s: f64,
}

/// Times [`RewardModel::score_set`] (batches of [`SCORE_BATCH`]) over `samples`
/// demonstrations of the experiment's world, once per reward-model shape (gold, each proxy
/// size) on `device`, after one untimed batch (a GPU's first kernels load then). Weights are
/// seeded, not trained: the rate depends on the shape alone.
pub fn bench_scoring(exp: &crate::Experiment, device: &candle_core::Device, samples: usize) -> Result<Vec<ScoreRate>> {
    use candle_nn::{VarBuilder, VarMap};
    let world = exp.world_config(0);
    let mut rng = crate::seed::rng(exp.seed, "bench/score");
    let (prompts, responses) = crate::train::sft::demonstrations(&world, samples.max(1), &mut rng);
    let set = crate::model::policy::encode_all(&world, &prompts, &responses);
    let warm = set.select(&(0..set.len().min(SCORE_BATCH)).collect::<Vec<_>>());
    let grid = exp.proxy.data_sizes.len() * exp.proxy.noise.len() * exp.proxy.source_models();
    let heldout = crate::train::proxy::heldout_cell(exp, 0).map(|c| c.size.name);
    let mut shapes = vec![("gold".to_string(), exp.gold_arch(), 1)];
    for s in &exp.proxy.sizes {
        let n = grid + usize::from(heldout.as_deref() == Some(s.name.as_str()));
        shapes.push((format!("proxy/{}", s.name), exp.proxy_arch(s), n));
    }
    let mut out = Vec::new();
    for (model, cfg, per_bon_cell) in shapes {
        let varmap = VarMap::new();
        let m = RewardModel::new(&cfg, VarBuilder::from_varmap(&varmap, candle_core::DType::F32, device))?;
        crate::model::seeded_init(&varmap, exp.seed, cfg.layers)?;
        m.score_set(&warm, SCORE_BATCH)?;
        let start = std::time::Instant::now();
        m.score_set(&set, SCORE_BATCH)?;
        let seconds = start.elapsed().as_secs_f64();
        out.push(ScoreRate {
            model,
            params: crate::model::param_count(&varmap),
            per_bon_cell,
            samples: set.len(),
            seconds,
            samples_per_s: set.len() as f64 / seconds.max(1e-9),
        });
    }
    Ok(out)
}

/// Length (content tokens) and distinct-token ratio of each response.
pub fn response_stats(responses: &[crate::world::Response]) -> (Vec<f32>, Vec<f32>) {
    responses
        .iter()
        .map(|r| {
            let mut t = r.tokens.clone();
            t.sort_unstable();
            t.dedup();
            let len = r.tokens.len();
            (len as f32, if len == 0 { 1.0 } else { t.len() as f32 / len as f32 })
        })
        .unzip()
}
