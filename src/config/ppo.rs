//! PPO's part of an experiment (`[ppo]`), read by `crate::methods::ppo`.

use serde::{Deserialize, Serialize};

/// PPO against proxy ensembles: one run per (ensemble, aggregator, β).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PpoSpec {
    pub enabled: bool,
    /// Proxy sizes (names) whose ensembles PPO optimizes against; empty: the first size.
    pub sizes: Vec<String>,
    /// Training-pair counts of those ensembles; empty: the first data size.
    pub data_sizes: Vec<usize>,
    /// Label-noise levels of those ensembles; empty: every level.
    pub noise: Vec<f64>,
    /// KL-penalty coefficients β (reward − β·k1 per response token); 0 is no penalty.
    pub kl_penalties: Vec<f64>,
    /// Single members optimized alone (members 0..single_members), besides the aggregates.
    pub single_members: usize,
    /// Ensemble aggregators: any of "mean", "wco", "uwo", "median", "mean_std".
    pub aggregators: Vec<String>,
    /// λ of each `uwo` (mean − λ·population variance); 0.1 is the literature's PPO value.
    pub uwo_lambdas: Vec<f64>,
    /// λ of each `mean_std` (mean − λ·std).
    pub mean_std_lambdas: Vec<f64>,
    /// PPO updates per run (one rollout each).
    pub updates: usize,
    /// Prompts per rollout (one response each).
    pub rollout: usize,
    /// Minibatch size (sequences) and passes over each rollout.
    pub minibatch: usize,
    pub epochs: usize,
    /// Learning rate of PPO's optimizer ([`crate::methods::ppo::PPO_OPTIMIZER`]: plain Adam, no
    /// weight decay), constant over the run.
    pub lr: f64,
    /// Clip range of the probability ratio and of the value change.
    pub clip: f64,
    pub value_clip: f64,
    /// Weight of the value loss and of the entropy bonus in the total loss.
    pub value_coef: f64,
    pub entropy_coef: f64,
    /// GAE λ and discount γ.
    pub gae_lambda: f64,
    pub gamma: f64,
    pub max_grad_norm: f64,
    /// Evaluate every this many updates (and at update 0 and at the end).
    pub eval_every: usize,
    /// Held-out prompts per evaluation (one fresh sample each, temperature 1).
    pub eval_prompts: usize,
    /// Stop a run once its measured KL (k1, nats) passes this budget; none by default.
    pub kl_budget: Option<f64>,
}

impl Default for PpoSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            sizes: vec![],
            data_sizes: vec![],
            noise: vec![],
            kl_penalties: vec![0.0, 0.1],
            single_members: 1,
            aggregators: vec!["mean".into(), "wco".into(), "uwo".into()],
            uwo_lambdas: vec![0.1],
            mean_std_lambdas: vec![],
            updates: 60,
            rollout: 64,
            minibatch: 32,
            epochs: 4,
            lr: 3e-4,
            clip: 0.2,
            value_clip: 0.2,
            value_coef: 0.1,
            entropy_coef: 0.0,
            gae_lambda: 0.95,
            gamma: 1.0,
            max_grad_norm: 1.0,
            eval_every: 5,
            eval_prompts: 256,
            kl_budget: None,
        }
    }
}

impl PpoSpec {
    /// Evaluation checkpoints of a run that is not stopped early (`kl_budget`): update 0,
    /// every `eval_every`-th update and the last ([`crate::methods::ppo::train`]).
    pub fn checkpoints(&self) -> usize {
        let every = self.eval_every.max(1);
        1 + self.updates / every + usize::from(self.updates % every != 0)
    }

    /// Aggregators of a PPO sweep over an ensemble of `k`: the single members asked for,
    /// then the named aggregates (only when k > 1: one model has nothing to aggregate).
    pub fn aggregator_list(&self, k: usize) -> Vec<crate::stats::aggregate::Aggregator> {
        use crate::stats::aggregate::Aggregator as A;
        let mut v: Vec<A> = (0..self.single_members).map(A::Member).collect();
        if k == 1 {
            return v;
        }
        for name in &self.aggregators {
            match name.as_str() {
                "mean" => v.push(A::Mean),
                "wco" => v.push(A::Wco),
                "median" => v.push(A::Median),
                "uwo" => v.extend(self.uwo_lambdas.iter().map(|&l| A::Uwo(l))),
                "mean_std" => v.extend(self.mean_std_lambdas.iter().map(|&l| A::MeanStd(l))),
                _ => unreachable!("validated"),
            }
        }
        v
    }
}
