//! The group-relative RL methods' parts of an experiment (`[grpo]`, `[rloo]`, one
//! [`GroupSpec`] each): their settings, defaults and validation. Each runs PPO's sweep —
//! the ensembles, aggregators and KL penalties `[ppo]` selects, whether or not PPO itself
//! runs — so the methods are compared run for run, on the same evaluation prompts.

use serde::{Deserialize, Serialize};

use super::data::ProxySpec;
use super::fields::{count, limits, rate, steps, Bad};
use super::ppo::PpoSpec;
use crate::error::Result;

/// A critic-free policy-gradient method against proxy ensembles: `group` responses per
/// training prompt, each scored through the run's aggregator, advantages relative to the
/// group (GRPO: the group's mean and standard deviation; RLOO: the mean of the others).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GroupSpec {
    pub enabled: bool,
    /// Responses sampled per training prompt (G).
    pub group: usize,
    /// Training prompts per update; an update's rollout is `prompts × group` responses.
    pub prompts: usize,
    /// Updates per run (one rollout each).
    pub updates: usize,
    /// Minibatch size (responses) and passes over each rollout.
    pub minibatch: usize,
    pub epochs: usize,
    /// Learning rate of plain Adam, constant over the run (as PPO's).
    pub lr: f64,
    /// ε of the ratio clip.
    pub clip: f64,
    pub max_grad_norm: f64,
    /// Evaluate every this many updates (and at update 0 and at the end), on PPO's
    /// evaluation prompts (`ppo.eval_prompts`).
    pub eval_every: usize,
}

impl Default for GroupSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            group: 4,
            prompts: 16,
            updates: 60,
            minibatch: 32,
            epochs: 2,
            lr: 3e-4,
            clip: 0.2,
            max_grad_norm: 1.0,
            eval_every: 5,
        }
    }
}

impl GroupSpec {
    /// Evaluation checkpoints of a run: update 0, every `eval_every`-th update and the last.
    pub fn checkpoints(&self) -> usize {
        let every = self.eval_every.max(1);
        1 + self.updates / every + usize::from(self.updates % every != 0)
    }

    /// Runs of the method: PPO's sweep when the method is on, else 0.
    pub fn run_count(&self, ppo: &PpoSpec, x: &ProxySpec) -> usize {
        if self.enabled {
            ppo.sweep_runs(x).expect("validated: the PPO sweep size fits usize")
        } else {
            0
        }
    }

    /// Checks the section `[name]`; an error names its key (`grpo.group`).
    pub fn validate(&self, name: &str, bad: Bad, ppo: &PpoSpec, x: &ProxySpec) -> Result<()> {
        let key = |k: &str| format!("{name}.{k}");
        count(bad, &key("group"), self.group, 2, limits::COUNT)?;
        count(bad, &key("prompts"), self.prompts, 1, limits::COUNT)?;
        if self.group.checked_mul(self.prompts).is_none_or(|n| n > limits::COUNT) {
            return Err(bad(&key("prompts"), format!("{name}.prompts × {name}.group must be at most {}", limits::COUNT)));
        }
        steps(bad, &key("updates"), self.updates)?;
        count(bad, &key("minibatch"), self.minibatch, 1, limits::COUNT)?;
        if self.minibatch > self.prompts * self.group {
            return Err(bad(
                &key("minibatch"),
                format!("must be at most {name}.prompts × {name}.group ({}), the responses of an update, got {}", self.prompts * self.group, self.minibatch),
            ));
        }
        steps(bad, &key("epochs"), self.epochs)?;
        rate(bad, &key("lr"), self.lr)?;
        if !(self.clip.is_finite() && self.clip > 0.0 && self.clip < 1.0) {
            return Err(bad(&key("clip"), format!("must be in (0, 1), got {}", self.clip)));
        }
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm > 0.0) {
            return Err(bad(&key("max_grad_norm"), format!("must be > 0, got {}", self.max_grad_norm)));
        }
        steps(bad, &key("eval_every"), self.eval_every)?;
        if self.enabled && ppo.sweep_runs(x).is_none_or(|n| n > limits::MODELS) {
            return Err(bad(
                "ppo.kl_penalties",
                format!("the sweep {name} runs (ensembles × aggregators × ppo.kl_penalties) must be at most {} runs", limits::MODELS),
            ));
        }
        Ok(())
    }
}
