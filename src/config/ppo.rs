//! PPO's part of an experiment (`[ppo]`): its settings, defaults and validation.

use serde::{Deserialize, Serialize};

use super::fields::{count, distinct, limits, list, non_negative, probability, rate, shown, steps, Bad};
use super::data::ProxySpec;
use crate::error::Result;
use crate::stats::shaping::{Shaper, Shaping};

/// PPO against proxy ensembles: one run per (ensemble, aggregator, shaping, β).
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
    /// Reward shapings of the aggregated score, each a repeat of the sweep: any of "none",
    /// "par", "center", "clip", "length" ([`crate::stats::shaping`]). Written in the resolved
    /// config only where it is not the default, as are the two below, so that the config
    /// hash of a study without shaping is what it was before shaping existed.
    #[serde(skip_serializing_if = "PpoSpec::no_shaping")]
    pub shaping: Vec<String>,
    /// c of `clip`: the score is clamped to [−c, c] (standardized proxy units).
    #[serde(skip_serializing_if = "PpoSpec::default_shaping_clip")]
    pub shaping_clip: f64,
    /// α of `length`: the score less α per content token of the response (standardized
    /// proxy units per token).
    #[serde(skip_serializing_if = "PpoSpec::default_length_penalty")]
    pub length_penalty: f64,
}

/// `ppo.shaping_clip` by default: one π_ref standard deviation either side of π_ref's mean.
pub const SHAPING_CLIP: f64 = 1.0;

/// `ppo.length_penalty` by default, per content token: π_ref's responses are about 6.5 tokens
/// and at most `world.max_response` − 1 = 15, so padding to the longest costs ≈ 0.4 of π_ref's
/// standard deviation, a fraction of the few standard deviations of proxy PPO gains.
pub const LENGTH_PENALTY: f64 = 0.05;

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
            shaping: vec!["none".into()],
            shaping_clip: SHAPING_CLIP,
            length_penalty: LENGTH_PENALTY,
        }
    }
}

impl PpoSpec {
    /// Whether `shaping` is the default, `["none"]`.
    fn no_shaping(shaping: &[String]) -> bool {
        shaping.len() == 1 && shaping[0] == "none"
    }

    fn default_shaping_clip(c: &f64) -> bool {
        *c == SHAPING_CLIP
    }

    fn default_length_penalty(a: &f64) -> bool {
        *a == LENGTH_PENALTY
    }

    /// The shapings of `ppo.shaping` (validated), in its order.
    pub fn shapings(&self) -> Vec<Shaping> {
        self.shaping.iter().map(|s| Shaping::from_name(s).expect("validated")).collect()
    }

    /// `shaping` with this section's parameters.
    pub fn shaper(&self, shaping: Shaping) -> Shaper {
        Shaper { shaping, clip: self.shaping_clip, length_penalty: self.length_penalty }
    }

    /// Whether some run of the sweep reads r_ref (one π_ref response per training prompt per
    /// update, scored by the run's members).
    pub fn reads_reference(&self) -> bool {
        self.shaping.iter().any(|s| Shaping::from_name(s).is_some_and(Shaping::reads_reference))
    }

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
        let mut v: Vec<A> = (0..self.single_members.min(k)).map(A::Member).collect();
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

    /// Checks the section against the proxies it names; an error names its key
    /// (`ppo.minibatch`).
    pub fn validate(&self, bad: Bad, x: &ProxySpec) -> Result<()> {
        let p = self;
        list(bad, "ppo.sizes", p.sizes.len(), 0)?;
        for (i, name) in p.sizes.iter().enumerate() {
            if !x.sizes.iter().any(|s| &s.name == name) {
                return Err(bad(&format!("ppo.sizes[{i}]"), format!("no proxy size named {:?} in proxy.sizes", shown(name))));
            }
        }
        distinct(bad, "ppo.sizes", &p.sizes)?;
        list(bad, "ppo.data_sizes", p.data_sizes.len(), 0)?;
        for (i, d) in p.data_sizes.iter().enumerate() {
            if !x.data_sizes.contains(d) {
                return Err(bad(&format!("ppo.data_sizes[{i}]"), format!("{d} is not in proxy.data_sizes")));
            }
        }
        distinct(bad, "ppo.data_sizes", &p.data_sizes)?;
        list(bad, "ppo.noise", p.noise.len(), 0)?;
        for (i, n) in p.noise.iter().enumerate() {
            if !x.noise.contains(n) {
                return Err(bad(&format!("ppo.noise[{i}]"), format!("{n} is not in proxy.noise")));
            }
        }
        distinct(bad, "ppo.noise", &p.noise)?;
        list(bad, "ppo.kl_penalties", p.kl_penalties.len(), 1)?;
        for (key, l) in [
            ("ppo.kl_penalties", &p.kl_penalties),
            ("ppo.uwo_lambdas", &p.uwo_lambdas),
            ("ppo.mean_std_lambdas", &p.mean_std_lambdas),
        ] {
            list(bad, key, l.len(), 0)?;
            for (i, &v) in l.iter().enumerate() {
                non_negative(bad, &format!("{key}[{i}]"), v, "finite and ≥ 0")?;
            }
            distinct(bad, key, l)?;
        }
        const KNOWN: [&str; 5] = ["mean", "wco", "uwo", "median", "mean_std"];
        list(bad, "ppo.aggregators", p.aggregators.len(), 0)?;
        for (i, a) in p.aggregators.iter().enumerate() {
            if !KNOWN.contains(&a.as_str()) {
                return Err(bad(&format!("ppo.aggregators[{i}]"), format!("unknown aggregator {:?}; one of {KNOWN:?}", shown(a))));
            }
        }
        distinct(bad, "ppo.aggregators", &p.aggregators)?;
        if p.aggregators.iter().any(|a| a == "uwo") && p.uwo_lambdas.is_empty() {
            return Err(bad("ppo.uwo_lambdas", "aggregator \"uwo\" needs at least one λ".into()));
        }
        if p.aggregators.iter().any(|a| a == "mean_std") && p.mean_std_lambdas.is_empty() {
            return Err(bad("ppo.mean_std_lambdas", "aggregator \"mean_std\" needs at least one λ".into()));
        }
        if p.single_members > x.members {
            return Err(bad(
                "ppo.single_members",
                format!("must be at most proxy.members ({}), got {}", x.members, p.single_members),
            ));
        }
        if p.enabled && p.single_members == 0 && (p.aggregators.is_empty() || x.members == 1) {
            return Err(bad("ppo.aggregators", "nothing to optimize: no single member and no aggregate".into()));
        }
        steps(bad, "ppo.updates", p.updates)?;
        count(bad, "ppo.rollout", p.rollout, 2, limits::COUNT)?;
        count(bad, "ppo.minibatch", p.minibatch, 1, limits::COUNT)?;
        if p.minibatch > p.rollout {
            return Err(bad("ppo.minibatch", format!("must be at most ppo.rollout ({}), got {}", p.rollout, p.minibatch)));
        }
        steps(bad, "ppo.epochs", p.epochs)?;
        let per_update = p.epochs.checked_mul(p.rollout.div_ceil(p.minibatch));
        if per_update.and_then(|n| n.checked_mul(p.updates)).is_none_or(|n| n > limits::STEPS) {
            return Err(bad(
                "ppo.updates",
                format!(
                    "ppo.updates ({}) × ppo.epochs ({}) × minibatches per rollout ({}) must be at most {} optimizer steps per run",
                    p.updates,
                    p.epochs,
                    p.rollout.div_ceil(p.minibatch),
                    limits::STEPS
                ),
            ));
        }
        rate(bad, "ppo.lr", p.lr)?;
        for (key, v) in [("ppo.clip", p.clip), ("ppo.value_clip", p.value_clip)] {
            if !(v.is_finite() && v > 0.0 && v < 1.0) {
                return Err(bad(key, format!("must be in (0, 1), got {v}")));
            }
        }
        for (key, v) in [("ppo.value_coef", p.value_coef), ("ppo.entropy_coef", p.entropy_coef)] {
            non_negative(bad, key, v, "finite and ≥ 0")?;
        }
        probability(bad, "ppo.gae_lambda", p.gae_lambda, 1.0)?;
        probability(bad, "ppo.gamma", p.gamma, 1.0)?;
        if !(p.max_grad_norm.is_finite() && p.max_grad_norm > 0.0) {
            return Err(bad("ppo.max_grad_norm", format!("must be > 0, got {}", p.max_grad_norm)));
        }
        steps(bad, "ppo.eval_every", p.eval_every)?;
        count(bad, "ppo.eval_prompts", p.eval_prompts, 2, limits::COUNT)?;
        if let Some(b) = p.kl_budget {
            if !(b.is_finite() && b > 0.0) {
                return Err(bad("ppo.kl_budget", format!("must be > 0 nats, got {b}")));
            }
        }
        p.validate_shaping(bad)?;
        if p.enabled && p.runs(x).is_none_or(|n| n > limits::MODELS) {
            return Err(bad(
                "ppo.kl_penalties",
                format!("the PPO sweep (ensembles × aggregators × ppo.kl_penalties × ppo.shaping) must be at most {} runs", limits::MODELS),
            ));
        }
        Ok(())
    }

    /// Checks `ppo.shaping` (known names, no repeats) and its parameters.
    fn validate_shaping(&self, bad: Bad) -> Result<()> {
        list(bad, "ppo.shaping", self.shaping.len(), 1)?;
        for (i, name) in self.shaping.iter().enumerate() {
            if Shaping::from_name(name).is_none() {
                let known: Vec<&str> = Shaping::ALL.iter().map(|s| s.name()).collect();
                return Err(bad(&format!("ppo.shaping[{i}]"), format!("unknown shaping {:?}; one of {known:?}", shown(name))));
            }
        }
        distinct(bad, "ppo.shaping", &self.shaping)?;
        if !(self.shaping_clip.is_finite() && self.shaping_clip > 0.0) {
            return Err(bad("ppo.shaping_clip", format!("must be finite and > 0 (standardized proxy units), got {}", self.shaping_clip)));
        }
        non_negative(bad, "ppo.length_penalty", self.length_penalty, "finite and ≥ 0 (standardized proxy units per token)")
    }

    /// PPO runs of a sweep (0 when PPO is off); `None` if the count overflows.
    pub fn runs(&self, x: &ProxySpec) -> Option<usize> {
        if !self.enabled {
            return Some(0);
        }
        self.sweep_runs(x)
    }

    /// Runs of the sweep this section selects, whether or not PPO runs (the group-relative
    /// methods run the same sweep); `None` if the count overflows.
    pub fn sweep_runs(&self, x: &ProxySpec) -> Option<usize> {
        let p = self;
        let sizes = if p.sizes.is_empty() { 1 } else { p.sizes.len() };
        let data = if p.data_sizes.is_empty() { 1 } else { p.data_sizes.len() };
        let noise = if p.noise.is_empty() { x.noise.len() } else { p.noise.len() };
        // Each source is an ensemble of its own (WARM one model: its single member alone).
        let per_source = x.sources.iter().try_fold(0usize, |acc, s| acc.checked_add(p.aggregator_list(s.members(x.members)).len()))?;
        sizes
            .checked_mul(data)?
            .checked_mul(noise)?
            .checked_mul(per_source)?
            .checked_mul(p.kl_penalties.len())?
            .checked_mul(p.shaping.len())
    }

    /// PPO runs of a validated sweep: the selected ensembles × the aggregators of each × the
    /// β values × the shapings (0 when PPO is off).
    pub fn run_count(&self, x: &ProxySpec) -> usize {
        self.runs(x).expect("validated: the PPO sweep size fits usize")
    }
}
