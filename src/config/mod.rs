//! Experiment configuration: raw `*Spec` structs parsed from TOML (unknown keys rejected),
//! validated once into a resolved [`Experiment`] that the rest of the crate trusts.
//!
//! An experiment file states only what differs from the defaults below; the run writes
//! the fully resolved experiment next to its results.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::TransformerConfig;
pub use crate::world::WorldSpec;
use crate::world::WorldConfig;
pub use crate::stats::claims::{ClaimSelector, ConclusionsSpec};
use locate::{line_col, locate};
use validate::ppo_runs;
pub use validate::limits;

mod locate;
mod validate;

/// Raw experiment file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    /// Names the results folder `results/NAME/`.
    pub name: String,
    /// The one seed every RNG of the run derives from.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Replicates of the study: each redraws what a conclusion should average over (proxy
    /// initialization, data order and label noise; best-of-n prompts and pools; PPO
    /// seeds and prompts), sharing the world, π_ref, gold, the preference pairs and the
    /// held-out proxy. Replicate 0 draws what a study with one replicate draws, so adding
    /// replicates to a finished study makes only the new ones.
    #[serde(default = "default_replicates")]
    pub replicates: usize,
    #[serde(default)]
    pub world: WorldSpec,
    #[serde(default)]
    pub policy: PolicySpec,
    #[serde(default)]
    pub reference: ReferenceSpec,
    #[serde(default)]
    pub gold: GoldSpec,
    #[serde(default)]
    pub preferences: PreferenceSpec,
    #[serde(default)]
    pub proxy: ProxySpec,
    #[serde(default)]
    pub bon: BonSpec,
    #[serde(default)]
    pub ppo: PpoSpec,
    #[serde(default)]
    pub conclusions: ConclusionsSpec,
}

fn default_seed() -> u64 {
    1
}

fn default_replicates() -> usize {
    1
}

/// The most replicates a study may ask for.
pub const MAX_REPLICATES: usize = 1000;

/// The reference policy and its supervised fine-tuning.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySpec {
    pub layers: usize,
    pub width: usize,
    pub heads: usize,
    /// Number of demonstrations (prompt, response) in the SFT set.
    pub demonstrations: usize,
    pub sft_steps: usize,
    pub sft_batch: usize,
    pub sft_lr: f64,
}

impl Default for PolicySpec {
    fn default() -> Self {
        Self {
            layers: 2,
            width: 48,
            heads: 4,
            demonstrations: 20_000,
            sft_steps: 500,
            sft_batch: 64,
            sft_lr: 3e-3,
        }
    }
}

/// What the reference samples are used for besides training data.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReferenceSpec {
    /// π_ref samples every RM's scores are standardized against.
    pub standardize_samples: usize,
    /// Size of the one-prompt pool whose duplicate fraction is reported.
    pub diversity_pool: usize,
}

impl Default for ReferenceSpec {
    fn default() -> Self {
        Self {
            standardize_samples: 2048,
            diversity_pool: 16_384,
        }
    }
}

/// The gold reward model: a transformer distilled from the world's labeler utility.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GoldSpec {
    pub layers: usize,
    pub width: usize,
    pub heads: usize,
    /// Labeler-scored responses the gold RM is distilled from.
    pub samples: usize,
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
}

impl Default for GoldSpec {
    fn default() -> Self {
        Self {
            layers: 4,
            width: 64,
            heads: 4,
            samples: 30_000,
            steps: 1200,
            batch: 64,
            lr: 3e-3,
        }
    }
}

/// How preference pairs are labelled by gold.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LabelMode {
    /// The response gold scores higher wins.
    Deterministic,
    /// Winner drawn with P(a ≻ b) = σ(gold_a − gold_b) (standardized gold).
    BradleyTerry,
}

/// Preference data: pairs of π_ref responses to one prompt.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PreferenceSpec {
    pub label: LabelMode,
    /// Held-out pairs, labelled deterministically by gold without noise.
    pub val_pairs: usize,
    /// Each replicate draws its own training pairs (responses and labels) instead of
    /// sharing replicate 0's; the validation pairs and the held-out proxy's pairs stay
    /// shared. Replicate 0's pairs are the same either way.
    pub per_replicate: bool,
}

impl Default for PreferenceSpec {
    fn default() -> Self {
        Self {
            label: LabelMode::Deterministic,
            val_pairs: 2000,
            per_replicate: false,
        }
    }
}

/// One proxy size.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProxySizeSpec {
    pub name: String,
    pub layers: usize,
    pub width: usize,
    pub heads: usize,
}

/// The proxy reward-model grid: sizes × data sizes × noise levels × ensemble members.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySpec {
    pub sizes: Vec<ProxySizeSpec>,
    /// Training-pair counts (nested subsets of one pair set).
    pub data_sizes: Vec<usize>,
    /// Label-flip rates in [0, 0.5].
    pub noise: Vec<f64>,
    /// Ensemble size k; members differ by seed (init and data order).
    pub members: usize,
    /// Resample each member's training set with replacement.
    pub bootstrap: bool,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    /// Also train a held-out proxy, never optimized against: the largest size on the
    /// largest data size at the lowest noise level, from independently sampled pairs. Its
    /// score of what the optimizers select is a gold-free signal for stopping rules.
    pub heldout: bool,
    /// Each replicate trains its own held-out proxy on its own pairs (drawn from its own
    /// seed), so a stopping rule's interval covers the held-out proxy's draw too. Off: one
    /// held-out proxy per world (replicate 0's, shared by the replicates of its world).
    pub heldout_per_replicate: bool,
    /// The held-out proxy is like the members of the study's first ensemble (the smallest
    /// proxies: the first size, the fewest pairs, the lowest noise) instead of the largest
    /// and best-trained one, so that ensemble's stopping rules read a proxy like their own.
    pub heldout_like: bool,
}

impl Default for ProxySpec {
    fn default() -> Self {
        let size = |name: &str, layers, width, heads| ProxySizeSpec {
            name: name.into(),
            layers,
            width,
            heads,
        };
        Self {
            sizes: vec![size("xs", 1, 8, 2), size("s", 2, 16, 2), size("m", 2, 40, 4)],
            data_sizes: vec![2000, 8000],
            noise: vec![0.0],
            members: 3,
            bootstrap: false,
            epochs: 3,
            batch: 64,
            lr: 3e-3,
            heldout: true,
            heldout_per_replicate: true,
            heldout_like: false,
        }
    }
}

/// Best-of-n against every proxy ensemble, from one pool of π_ref samples.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BonSpec {
    pub enabled: bool,
    /// Held-out evaluation prompts.
    pub prompts: usize,
    /// π_ref samples per prompt (N); n runs over powers of two up to N, and N.
    pub pool: usize,
    /// λ of each `uwo` aggregator (mean − λ·population variance); 0 means no penalty.
    pub uwo_lambdas: Vec<f64>,
    /// λ of each `mean_std` aggregator (mean − λ·std); empty for none.
    pub mean_std_lambdas: Vec<f64>,
    /// Add the median aggregator.
    pub median: bool,
    /// Prompts per best-of-n cell: each cell samples and scores the pools of this many
    /// prompts, so a large study splits into cells a shard or an array task can take. The
    /// results do not depend on it.
    pub prompts_per_cell: usize,
}

impl Default for BonSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            prompts: 32,
            pool: 4096,
            uwo_lambdas: vec![0.5],
            mean_std_lambdas: vec![],
            median: true,
            prompts_per_cell: 8,
        }
    }
}

impl BonSpec {
    /// Every aggregator of an ensemble of `k`: each member, mean, wco, uwo(λ)…, median,
    /// mean_std(λ)…. A single model (k = 1) has only itself: every aggregate equals it.
    pub fn aggregators(&self, k: usize) -> Vec<crate::stats::aggregate::Aggregator> {
        use crate::stats::aggregate::Aggregator as A;
        let mut v: Vec<A> = (0..k).map(A::Member).collect();
        if k == 1 {
            return v;
        }
        v.extend([A::Mean, A::Wco]);
        v.extend(self.uwo_lambdas.iter().map(|&l| A::Uwo(l)));
        if self.median {
            v.push(A::Median);
        }
        v.extend(self.mean_std_lambdas.iter().map(|&l| A::MeanStd(l)));
        v
    }
}

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

/// A validated experiment. Everything downstream trusts these values.
#[derive(Debug, Clone, Serialize)]
pub struct Experiment {
    pub name: String,
    pub seed: u64,
    pub replicates: usize,
    pub world: WorldSpec,
    pub policy: PolicySpec,
    pub reference: ReferenceSpec,
    pub gold: GoldSpec,
    pub preferences: PreferenceSpec,
    pub proxy: ProxySpec,
    pub bon: BonSpec,
    pub ppo: PpoSpec,
    pub conclusions: ConclusionsSpec,
    /// Parameter counts, resolved from the shapes.
    pub params: ParamCounts,
}


/// Parameter counts of every model the experiment trains.
#[derive(Debug, Clone, Serialize)]
pub struct ParamCounts {
    pub policy: usize,
    pub gold: usize,
    /// One entry per proxy size, in `proxy.sizes` order.
    pub proxies: Vec<(String, usize)>,
}

impl Experiment {
    /// Reads, parses and validates an experiment file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml(&text, path)
    }

    /// Reads a results folder's `config.resolved.toml`: the input with defaults filled in,
    /// then the derived `[params]` table (the last one written, which no input may set).
    /// The table is dropped and recomputed, and must agree with what was written.
    pub fn from_resolved(text: &str, path: &Path) -> Result<Self> {
        let cut = text
            .lines()
            .scan(0usize, |at, line| {
                let start = *at;
                *at += line.len() + 1;
                Some((start, line))
            })
            .find(|(_, line)| line.trim_start().starts_with("[params"))
            .map_or(text.len(), |(start, _)| start.min(text.len()));
        let exp = Self::from_toml(&text[..cut], path)?;
        let full = exp.to_toml();
        let recomputed = full.find("\n[params").map_or("", |i| &full[i + 1..]);
        if cut < text.len() && text[cut..].trim_end() != recomputed.trim_end() {
            return Err(Error::Invalid {
                path: path.to_path_buf(),
                key: "params".to_string(),
                msg: "the parameter counts written do not match the settings above them".to_string(),
            });
        }
        Ok(exp)
    }

    /// Parses and validates TOML text; `path` only labels errors. A parse error names the
    /// dotted key it is at (`proxy.sizes[1].width`), found from the error's span.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self> {
        let spec: ExperimentSpec = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let (line, col) = line_col(text, span.start);
            let (key, msg) = locate(text, span, &e.message().replace('\n', " "));
            Error::Parse {
                path: path.to_path_buf(),
                line,
                col,
                msg: format!("{key}: {msg}"),
            }
        })?;
        Self::validate(spec, path)
    }

    /// Number of PPO runs: the selected ensembles × the aggregators of each × the β values.
    pub fn ppo_run_count(&self) -> usize {
        ppo_runs(&self.ppo, &self.proxy).expect("validated: the PPO sweep size fits usize")
    }

    /// The seed of replicate `r`'s own draws: the experiment's seed for replicate 0 (so a
    /// one-replicate study draws what it always drew), a seed derived from it otherwise.
    pub fn replicate_seed(&self, r: usize) -> u64 {
        if r == 0 {
            self.seed
        } else {
            crate::seed::derive(self.seed, &format!("replicate/{r}"))
        }
    }

    /// The world of replicate 0 (every replicate's, unless `world.per_replicate`). Its shapes
    /// (vocabulary, sequence length) are every world's.
    pub fn world(&self) -> WorldConfig {
        self.world_of(0)
    }

    /// The world replicate `r` runs in: its own (`r`) when `world.per_replicate`, else 0.
    pub fn world_index(&self, r: usize) -> usize {
        if self.world.per_replicate {
            r
        } else {
            0
        }
    }

    /// How many worlds the study draws (1, or one per replicate).
    pub fn worlds(&self) -> usize {
        if self.world.per_replicate {
            self.replicates
        } else {
            1
        }
    }

    /// The seed of world `w`'s draws (the labeler's affinity, π_ref, gold, the validation
    /// and held-out proxy's pairs, the reference samples): the experiment's seed for world 0,
    /// one derived from it otherwise.
    pub fn world_seed(&self, w: usize) -> u64 {
        if w == 0 {
            self.seed
        } else {
            crate::seed::derive(self.seed, &format!("world/{w}"))
        }
    }

    /// World `w`.
    pub fn world_of(&self, w: usize) -> WorldConfig {
        WorldConfig::from_spec(&self.world, self.world_seed(w))
    }

    /// The world's part of a cell recipe: the world's settings without `per_replicate`
    /// (which world a cell reads is in its seed), so replicate 0's cells are the same cells
    /// whether or not the other replicates redraw their worlds.
    pub fn world_recipe(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.world).expect("world spec serializes");
        v.as_object_mut().expect("world spec is a table").remove("per_replicate");
        v
    }

    /// Transformer shape of the reference policy.
    pub fn policy_arch(&self) -> TransformerConfig {
        TransformerConfig::new(&self.world(), self.policy.layers, self.policy.width, self.policy.heads)
    }

    /// Transformer shape of the gold RM.
    pub fn gold_arch(&self) -> TransformerConfig {
        TransformerConfig::new(&self.world(), self.gold.layers, self.gold.width, self.gold.heads)
    }

    /// Transformer shape of one proxy size.
    pub fn proxy_arch(&self, size: &ProxySizeSpec) -> TransformerConfig {
        TransformerConfig::new(&self.world(), size.layers, size.width, size.heads)
    }

    /// The study's first ensemble, the smallest proxies: the first size, the fewest pairs, the
    /// lowest noise (what primary questions without an `ensemble` are about, and what
    /// `proxy.heldout_like` copies). (size, data size, noise).
    pub fn first_ensemble(&self) -> (&ProxySizeSpec, usize, f64) {
        (
            &self.proxy.sizes[0],
            *self.proxy.data_sizes.iter().min().expect("validated non-empty"),
            self.proxy.noise.iter().copied().fold(f64::INFINITY, f64::min),
        )
    }

    /// The resolved experiment as TOML (written next to the results).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("experiment serializes")
    }

    /// Short hash of the resolved experiment; names what a results folder holds.
    pub fn config_hash(&self) -> String {
        crate::digest::hash_hex(self.to_toml().as_bytes())[..16].to_string()
    }

    /// Default results folder for this experiment.
    pub fn default_out(&self) -> PathBuf {
        PathBuf::from("results").join(&self.name)
    }
}
