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
    pub fn aggregators(&self, k: usize) -> Vec<crate::aggregate::Aggregator> {
        use crate::aggregate::Aggregator as A;
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
    /// Learning rate of PPO's optimizer ([`crate::ppo::PPO_OPTIMIZER`]: plain Adam, no
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
    /// every `eval_every`-th update and the last ([`crate::ppo::train`]).
    pub fn checkpoints(&self) -> usize {
        let every = self.eval_every.max(1);
        1 + self.updates / every + usize::from(self.updates % every != 0)
    }

    /// Aggregators of a PPO sweep over an ensemble of `k`: the single members asked for,
    /// then the named aggregates (only when k > 1: one model has nothing to aggregate).
    pub fn aggregator_list(&self, k: usize) -> Vec<crate::aggregate::Aggregator> {
        use crate::aggregate::Aggregator as A;
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

/// One of the study's claims, as `[conclusions] primary` names it: the claim of `kind` for
/// `method` and `aggregator` (`uwo` matches any λ, the first listed; `uwo(0.1)` one), with
/// `baseline` for a gap. Unset, `ensemble` is the smallest proxies' (fewest pairs of the
/// first size, then the lowest noise), `kl_penalty` the method's smallest β, and a gap's
/// `at` its last point (`final`; also `matched` or `peak`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClaimSelector {
    /// `overopt`, `peak`, `gap` or `stop`.
    pub kind: String,
    /// `bon` or `ppo`.
    pub method: String,
    /// `single`, `mean`, `wco`, `uwo`, `uwo(0.1)`, …; for `stop`, a rule's label.
    pub aggregator: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub baseline: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

impl ClaimSelector {
    fn new(kind: &str, method: &str, aggregator: &str, baseline: &str) -> Self {
        ClaimSelector {
            kind: kind.into(),
            method: method.into(),
            aggregator: aggregator.into(),
            baseline: baseline.into(),
            ensemble: None,
            kl_penalty: None,
            at: None,
        }
    }
}

/// How the report judges the study's claims (read by `goodhart report` from
/// `config.resolved.toml`; no cell depends on it).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConclusionsSpec {
    /// The study's primary questions: one family, Holm-adjusted together; every other claim
    /// is exploratory (Benjamini–Hochberg). Default: for the smallest proxies at the
    /// smallest β, does gold fall under best-of-n and PPO, and do wco and uwo keep more gold
    /// than a single proxy under both.
    pub primary: Vec<ClaimSelector>,
    /// Smallest effect of interest, in π_ref standard deviations: an inconclusive primary
    /// claim says how many replicates would show an effect this large.
    pub smallest_effect: f64,
    /// Power the "replicates needed" lines aim for.
    pub power: f64,
    /// The Slurm cluster the cost lines price: nodes × cores per node.
    pub cluster_nodes: usize,
    pub cluster_cores: usize,
}

impl Default for ConclusionsSpec {
    fn default() -> Self {
        Self {
            primary: vec![
                ClaimSelector::new("overopt", "bon", "single", ""),
                ClaimSelector::new("overopt", "ppo", "single", ""),
                ClaimSelector::new("gap", "bon", "wco", "single"),
                ClaimSelector::new("gap", "bon", "uwo", "single"),
                ClaimSelector::new("gap", "ppo", "wco", "single"),
                ClaimSelector::new("gap", "ppo", "uwo", "single"),
            ],
            smallest_effect: 0.2,
            power: 0.8,
            cluster_nodes: 8,
            cluster_cores: 32,
        }
    }
}

fn validate_conclusions(bad: Bad, c: &ConclusionsSpec) -> Result<()> {
    for (i, s) in c.primary.iter().enumerate() {
        let key = |f: &str| format!("conclusions.primary[{i}].{f}");
        if !["overopt", "peak", "gap", "stop"].contains(&s.kind.as_str()) {
            return Err(bad(&key("kind"), format!("must be overopt, peak, gap or stop, got '{}'", s.kind)));
        }
        if !["bon", "ppo"].contains(&s.method.as_str()) {
            return Err(bad(&key("method"), format!("must be bon or ppo, got '{}'", s.method)));
        }
        if s.aggregator.is_empty() {
            return Err(bad(&key("aggregator"), "must name an aggregator (single, mean, wco, uwo, …) or a rule".into()));
        }
        if (s.kind == "gap") != !s.baseline.is_empty() {
            return Err(bad(&key("baseline"), "a gap needs a baseline (single or mean), and only a gap has one".into()));
        }
        if let Some(b) = s.kl_penalty {
            if !(b.is_finite() && b >= 0.0) {
                return Err(bad(&key("kl_penalty"), format!("must be a finite β ≥ 0, got {b}")));
            }
        }
    }
    if !(c.smallest_effect.is_finite() && c.smallest_effect > 0.0) {
        return Err(bad("conclusions.smallest_effect", format!("must be a finite effect > 0, got {}", c.smallest_effect)));
    }
    if !(c.power > 0.05 && c.power < 1.0) {
        return Err(bad("conclusions.power", format!("must be in (0.05, 1), got {}", c.power)));
    }
    if c.cluster_nodes == 0 || c.cluster_cores == 0 {
        return Err(bad("conclusions.cluster_nodes", "the cluster needs at least one node of at least one core".into()));
    }
    Ok(())
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

    /// Checks every value once and resolves derived quantities: ranges and [`limits`],
    /// distinct list entries, path-safe names, parameter counts and grid sizes by checked
    /// arithmetic. What the run needs (memory, disk, the plan's size) is checked before any
    /// work by [`crate::resources::check_resources`] and [`crate::cell::plan::check`].
    pub fn validate(spec: ExperimentSpec, path: &Path) -> Result<Self> {
        let bad = |key: &str, msg: String| Error::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            msg,
        };
        path_safe(&bad, "name", &spec.name)?;
        if !(1..=MAX_REPLICATES).contains(&spec.replicates) {
            return Err(bad("replicates", format!("must be in 1..={MAX_REPLICATES}, got {}", spec.replicates)));
        }
        let w = &spec.world;
        count(&bad, "world.content_tokens", w.content_tokens, 4, limits::CONTENT_TOKENS)?;
        count(&bad, "world.prompt_len", w.prompt_len, 1, limits::PROMPT_LEN)?;
        count(&bad, "world.max_response", w.max_response, 2, limits::MAX_RESPONSE)?;
        if w.flattery_tokens >= w.content_tokens {
            return Err(bad(
                "world.flattery_tokens",
                format!("must be below world.content_tokens ({}), got {}", w.content_tokens, w.flattery_tokens),
            ));
        }
        if !(w.mean_response.is_finite() && w.mean_response >= 1.0 && w.mean_response < w.max_response as f64) {
            return Err(bad(
                "world.mean_response",
                format!("must be in [1, world.max_response = {}), got {}", w.max_response, w.mean_response),
            ));
        }
        probability(&bad, "world.flattery_rate", w.flattery_rate, 0.5)?;
        probability(&bad, "world.echo_rate", w.echo_rate, 0.9)?;
        if w.flattery_rate + w.echo_rate > 0.95 {
            return Err(bad(
                "world.echo_rate",
                format!("echo_rate + flattery_rate must stay below 0.95, got {}", w.flattery_rate + w.echo_rate),
            ));
        }
        // Every use of prompts draws from its own disjoint set (world::Split): there must be
        // enough distinct prompts for each set to hold many.
        let plain = (w.content_tokens - w.flattery_tokens) as u64;
        let prompts = plain.saturating_pow(w.prompt_len as u32);
        if prompts < crate::world::MIN_DISTINCT_PROMPTS {
            return Err(bad(
                "world.prompt_len",
                format!(
                    "the world has only {prompts} distinct prompts ((content_tokens − flattery_tokens)^prompt_len = {plain}^{}); \
                     the disjoint prompt sets of SFT, preference pairs, PPO and best-of-n need at least {}",
                    w.prompt_len,
                    crate::world::MIN_DISTINCT_PROMPTS
                ),
            ));
        }
        let vocab = crate::world::vocab_size(w.content_tokens);
        let seq_len = crate::world::sequence_len(w.prompt_len, w.max_response);
        let shape = |key: &str, layers, width, heads| arch(&bad, key, vocab, seq_len, layers, width, heads);

        let p = &spec.policy;
        let policy_arch = shape("policy", p.layers, p.width, p.heads)?;
        count(&bad, "policy.demonstrations", p.demonstrations, 1, limits::COUNT)?;
        steps(&bad, "policy.sft_steps", p.sft_steps)?;
        count(&bad, "policy.sft_batch", p.sft_batch, 1, limits::COUNT)?;
        rate(&bad, "policy.sft_lr", p.sft_lr)?;

        count(&bad, "reference.standardize_samples", spec.reference.standardize_samples, 2, limits::COUNT)?;
        count(&bad, "reference.diversity_pool", spec.reference.diversity_pool, 1, limits::COUNT)?;

        let g = &spec.gold;
        let gold_arch = shape("gold", g.layers, g.width, g.heads)?;
        count(&bad, "gold.samples", g.samples, 2, limits::COUNT)?;
        steps(&bad, "gold.steps", g.steps)?;
        count(&bad, "gold.batch", g.batch, 1, limits::COUNT)?;
        rate(&bad, "gold.lr", g.lr)?;

        count(&bad, "preferences.val_pairs", spec.preferences.val_pairs, 1, limits::COUNT)?;

        let x = &spec.proxy;
        list(&bad, "proxy.sizes", x.sizes.len(), 1)?;
        let mut proxies: Vec<(String, usize)> = Vec::new();
        for (i, s) in x.sizes.iter().enumerate() {
            let key = format!("proxy.sizes[{i}]");
            path_safe(&bad, &format!("{key}.name"), &s.name)?;
            if let Some(j) = x.sizes[..i].iter().position(|t| t.name == s.name) {
                return Err(bad(&format!("{key}.name"), format!("{:?} repeats proxy.sizes[{j}].name; names must be unique", s.name)));
            }
            let a = shape(&key, s.layers, s.width, s.heads)?;
            if let Some(j) = x.sizes[..i].iter().position(|t| (t.layers, t.width, t.heads) == (s.layers, s.width, s.heads)) {
                return Err(bad(
                    &key,
                    format!(
                        "shape {}x{} with {} heads repeats proxy.sizes[{j}] ({:?}); every size must differ",
                        s.layers, s.width, s.heads, x.sizes[j].name
                    ),
                ));
            }
            proxies.push((s.name.clone(), reward_params(&bad, &key, &a)?));
        }
        list(&bad, "proxy.data_sizes", x.data_sizes.len(), 1)?;
        for (i, &d) in x.data_sizes.iter().enumerate() {
            count(&bad, &format!("proxy.data_sizes[{i}]"), d, 1, limits::COUNT)?;
        }
        distinct(&bad, "proxy.data_sizes", &x.data_sizes)?;
        list(&bad, "proxy.noise", x.noise.len(), 1)?;
        for (i, &n) in x.noise.iter().enumerate() {
            probability(&bad, &format!("proxy.noise[{i}]"), n, 0.5)?;
        }
        distinct(&bad, "proxy.noise", &x.noise)?;
        noise_ids(&bad, &x.noise)?;
        count(&bad, "proxy.members", x.members, 1, limits::MEMBERS)?;
        if x.heldout_like && !x.heldout {
            return Err(bad("proxy.heldout_like", "needs proxy.heldout = true".to_string()));
        }
        steps(&bad, "proxy.epochs", x.epochs)?;
        count(&bad, "proxy.batch", x.batch, 1, limits::COUNT)?;
        rate(&bad, "proxy.lr", x.lr)?;
        let largest_data = *x.data_sizes.iter().max().expect("checked non-empty");
        let proxy_steps = x.epochs.checked_mul(largest_data.div_ceil(x.batch));
        if proxy_steps.is_none_or(|n| n > limits::STEPS) {
            return Err(bad(
                "proxy.epochs",
                format!(
                    "proxy.epochs ({}) × batches per epoch of the largest data size ({}) must be at most {} steps",
                    x.epochs,
                    largest_data.div_ceil(x.batch),
                    limits::STEPS
                ),
            ));
        }
        let grid = [x.sizes.len(), x.data_sizes.len(), x.noise.len(), x.members]
            .iter()
            .try_fold(1usize, |acc, &n| acc.checked_mul(n));
        if grid.is_none_or(|n| n > limits::MODELS) {
            return Err(bad(
                "proxy.members",
                format!(
                    "the proxy grid (proxy.sizes {} × proxy.data_sizes {} × proxy.noise {} × proxy.members {}) must be at most {} models",
                    x.sizes.len(),
                    x.data_sizes.len(),
                    x.noise.len(),
                    x.members,
                    limits::MODELS
                ),
            ));
        }

        let b = &spec.bon;
        count(&bad, "bon.prompts", b.prompts, 1, limits::COUNT)?;
        count(&bad, "bon.pool", b.pool, 2, limits::COUNT)?;
        count(&bad, "bon.prompts_per_cell", b.prompts_per_cell, 1, limits::COUNT)?;
        for (key, l) in [("bon.uwo_lambdas", &b.uwo_lambdas), ("bon.mean_std_lambdas", &b.mean_std_lambdas)] {
            list(&bad, key, l.len(), 0)?;
            for (i, &v) in l.iter().enumerate() {
                non_negative(&bad, &format!("{key}[{i}]"), v, "a finite λ ≥ 0")?;
            }
            distinct(&bad, key, l)?;
        }

        validate_ppo(&bad, &spec.ppo, x)?;
        validate_conclusions(&bad, &spec.conclusions)?;

        let gold_params = reward_params(&bad, "gold", &gold_arch)?;
        let (largest_name, largest) = proxies
            .iter()
            .max_by_key(|(_, n)| *n)
            .cloned()
            .expect("at least one proxy size");
        if largest.checked_mul(4).is_none_or(|four| gold_params < four) {
            return Err(bad(
                "gold.width",
                format!(
                    "gold RM has {gold_params} params, needs at least 4x the largest proxy ('{largest_name}', {largest} params)"
                ),
            ));
        }
        let policy = policy_arch.checked_policy_params().ok_or_else(|| {
            bad("policy.width", format!("the policy's parameter count overflows ({} layers × width {})", p.layers, p.width))
        })?;
        let params = ParamCounts {
            policy,
            gold: gold_params,
            proxies,
        };
        let exp = Experiment {
            name: spec.name,
            seed: spec.seed,
            replicates: spec.replicates,
            world: spec.world,
            policy: spec.policy,
            reference: spec.reference,
            gold: spec.gold,
            preferences: spec.preferences,
            proxy: spec.proxy,
            bon: spec.bon,
            ppo: spec.ppo,
            conclusions: spec.conclusions,
            params,
        };
        Ok(exp)
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

/// Upper bounds [`Experiment::validate`] enforces. They are far above any study the
/// embedded world is meant for; they exist so that a typo (an extra digit, 2^40) is an
/// error naming the key instead of an allocation failure hours into a run.
pub mod limits {
    /// Characters of the experiment name and of a proxy size name.
    pub const NAME_LEN: usize = 64;
    /// `world.content_tokens` (the labeler's affinity matrix is quadratic in it).
    pub const CONTENT_TOKENS: usize = 4096;
    /// `world.prompt_len`.
    pub const PROMPT_LEN: usize = 256;
    /// `world.max_response`.
    pub const MAX_RESPONSE: usize = 512;
    /// Layers of any transformer.
    pub const LAYERS: usize = 64;
    /// Width of any transformer.
    pub const WIDTH: usize = 4096;
    /// Attention heads of any transformer.
    pub const HEADS: usize = 64;
    /// Any count of samples, pairs, prompts, demonstrations or a batch size.
    pub const COUNT: usize = 100_000_000;
    /// Training steps, PPO updates and epochs, and the optimizer steps of one model.
    pub const STEPS: usize = 10_000_000;
    /// `proxy.members`.
    pub const MEMBERS: usize = 256;
    /// Entries of any list.
    pub const LIST: usize = 64;
    /// Proxy models of the grid, and PPO runs of the sweep.
    pub const MODELS: usize = 10_000;
}

type Bad<'a> = &'a dyn Fn(&str, String) -> Error;

fn validate_ppo(bad: Bad, p: &PpoSpec, x: &ProxySpec) -> Result<()> {
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
    if p.enabled && ppo_runs(p, x).is_none_or(|n| n > limits::MODELS) {
        return Err(bad(
            "ppo.kl_penalties",
            format!("the PPO sweep (ensembles × aggregators × ppo.kl_penalties) must be at most {} runs", limits::MODELS),
        ));
    }
    Ok(())
}

/// PPO runs of a sweep (0 when PPO is off); `None` if the count overflows.
fn ppo_runs(p: &PpoSpec, x: &ProxySpec) -> Option<usize> {
    if !p.enabled {
        return Some(0);
    }
    let sizes = if p.sizes.is_empty() { 1 } else { p.sizes.len() };
    let data = if p.data_sizes.is_empty() { 1 } else { p.data_sizes.len() };
    let noise = if p.noise.is_empty() { x.noise.len() } else { p.noise.len() };
    sizes
        .checked_mul(data)?
        .checked_mul(noise)?
        .checked_mul(p.aggregator_list(x.members).len())?
        .checked_mul(p.kl_penalties.len())
}

/// (line, column), both 1-based, of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.as_bytes().get(..offset).unwrap_or_default();
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = before.iter().rposition(|&b| b == b'\n').map_or(offset + 1, |i| offset - i);
    (line, col)
}

/// One key of a TOML document: its dotted path, the span of the key and of its value.
struct Entry {
    path: String,
    key: std::ops::Range<usize>,
    value: std::ops::Range<usize>,
    /// A `[table]` or `[[array]]` header: the value span is the header, not the body.
    header: bool,
}

fn entries(text: &str) -> Vec<Entry> {
    fn walk(text: &str, v: &toml::de::DeValue, path: &str, out: &mut Vec<Entry>) {
        let is_header = |r: &std::ops::Range<usize>| text.get(r.clone()).is_some_and(|t| t.starts_with('['));
        match v {
            toml::de::DeValue::Table(t) => {
                for (k, val) in t.iter() {
                    let p = if path.is_empty() { k.get_ref().to_string() } else { format!("{path}.{}", k.get_ref()) };
                    let header = val.get_ref().is_table() && is_header(&val.span());
                    out.push(Entry { path: p.clone(), key: k.span(), value: val.span(), header });
                    walk(text, val.get_ref(), &p, out);
                }
            }
            toml::de::DeValue::Array(a) => {
                for (i, val) in a.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    let header = val.get_ref().is_table() && is_header(&val.span());
                    out.push(Entry { path: p.clone(), key: val.span(), value: val.span(), header });
                    walk(text, val.get_ref(), &p, out);
                }
            }
            _ => {}
        }
    }
    let (doc, _) = toml::de::DeTable::parse_recoverable(text);
    let mut out = Vec::new();
    walk(text, &toml::de::DeValue::Table(doc.into_inner()), "", &mut out);
    out
}

/// The dotted key a parse error at `span` is about, and its message (a duplicate key's
/// message says where the key was first set). Keys the parser kept are looked up by span;
/// a key it dropped (a duplicate) or a syntax error is placed under the innermost
/// enclosing inline table or else the last `[table]` header before it.
fn locate(text: &str, span: std::ops::Range<usize>, msg: &str) -> (String, String) {
    let all = entries(text);
    let at = span.start;
    let join = |base: &str, key: &str| if base.is_empty() { key.to_string() } else { format!("{base}.{key}") };
    let inside = |e: &Entry| !e.header && e.value.start <= at && span.end <= e.value.end && e.value.start < e.value.end;
    let innermost = all.iter().filter(|e| inside(e)).min_by_key(|e| e.value.len());
    let header = all.iter().filter(|e| e.header && e.value.start <= at).max_by_key(|e| e.value.start);
    let context = innermost.filter(|e| e.value != span).or(header).map_or("", |e| e.path.as_str());
    if let Some(field) = msg.strip_prefix("missing field `").and_then(|m| m.split('`').next()) {
        let base = innermost.filter(|e| e.value == span).map_or("", |e| e.path.as_str());
        return (join(base, field), msg.to_string());
    }
    if let Some(e) = all.iter().rev().find(|e| e.key.contains(&at) && e.key.start != e.value.start) {
        return (e.path.clone(), msg.to_string());
    }
    if let Some(e) = innermost.filter(|e| e.value == span) {
        return (e.path.clone(), msg.to_string());
    }
    let token = text.get(span.clone()).unwrap_or("").trim_matches(|c| c == '"' || c == '\'');
    let key_like = !token.is_empty() && token.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if msg.starts_with("duplicate key") && key_like {
        let key = join(context, token);
        let first = all.iter().find(|e| e.path == key).map(|e| line_col(text, e.key.start).0);
        let msg = match first {
            Some(line) => format!("{msg} (first set at line {line})"),
            None => msg.to_string(),
        };
        return (key, msg);
    }
    // A syntax error: the key set on the error's line, if any, else the enclosing table.
    let line_start = text.get(..at).and_then(|t| t.rfind('\n')).map_or(0, |i| i + 1);
    let on_line = all
        .iter()
        .filter(|e| !e.header && e.key.start >= line_start && e.key.start <= at)
        .max_by_key(|e| e.key.start);
    match on_line.or(innermost).or(header) {
        Some(e) => (e.path.clone(), msg.to_string()),
        None => ("(document)".to_string(), msg.to_string()),
    }
}

fn count(bad: Bad, key: &str, v: usize, min: usize, max: usize) -> Result<()> {
    if v < min {
        return Err(bad(key, format!("must be at least {min}, got {v}")));
    }
    if v > max {
        return Err(bad(key, format!("must be at most {max} (goodhart's limit), got {v}")));
    }
    Ok(())
}

fn steps(bad: Bad, key: &str, v: usize) -> Result<()> {
    count(bad, key, v, 1, limits::STEPS)
}

fn list(bad: Bad, key: &str, len: usize, min: usize) -> Result<()> {
    if len < min {
        return Err(bad(key, format!("needs at least {min} entr{}, got {len}", if min == 1 { "y" } else { "ies" })));
    }
    if len > limits::LIST {
        return Err(bad(key, format!("must have at most {} entries, got {len}", limits::LIST)));
    }
    Ok(())
}

/// Every entry of `items` differs from the ones before it.
fn distinct<T: PartialEq + std::fmt::Debug>(bad: Bad, key: &str, items: &[T]) -> Result<()> {
    for (i, v) in items.iter().enumerate() {
        if let Some(j) = items[..i].iter().position(|u| u == v) {
            return Err(bad(&format!("{key}[{i}]"), format!("{v:?} repeats {key}[{j}]; entries must be distinct")));
        }
    }
    Ok(())
}

/// Label-noise levels appear in ensemble ids with 2 decimals (`n0.25`): two levels must not
/// share an id, and a level must be exactly what its id shows.
fn noise_ids(bad: Bad, noise: &[f64]) -> Result<()> {
    let id = |n: f64| format!("n{n:.2}");
    for (i, &n) in noise.iter().enumerate() {
        if let Some(j) = noise[..i].iter().position(|&m| id(m) == id(n)) {
            return Err(bad(
                &format!("proxy.noise[{i}]"),
                format!("{n} and proxy.noise[{j}] = {} share the ensemble id {}; use levels that differ in 2 decimals", noise[j], id(n)),
            ));
        }
    }
    for (i, &n) in noise.iter().enumerate() {
        if format!("{n:.2}").parse::<f64>() != Ok(n) {
            return Err(bad(
                &format!("proxy.noise[{i}]"),
                format!("{n} has more precision than its ensemble id {} shows; use at most 2 decimals", id(n)),
            ));
        }
    }
    Ok(())
}

/// A value in [0, max] (negative zero excluded: it would print as `-0`).
fn probability(bad: Bad, key: &str, v: f64, max: f64) -> Result<()> {
    if !(v.is_finite() && (0.0..=max).contains(&v) && v.is_sign_positive()) {
        return Err(bad(key, format!("must be in [0, {max}], got {v}")));
    }
    Ok(())
}

/// A finite value ≥ 0 (negative zero excluded: it would print as `-0` in run ids).
fn non_negative(bad: Bad, key: &str, v: f64, what: &str) -> Result<()> {
    if !(v.is_finite() && v >= 0.0 && v.is_sign_positive()) {
        return Err(bad(key, format!("must be {what}, got {v}")));
    }
    Ok(())
}

fn rate(bad: Bad, key: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && v > 0.0 && v < 1.0) {
        return Err(bad(key, format!("learning rate must be in (0, 1), got {v}")));
    }
    Ok(())
}

/// A name that is safe as one path component and in ids: 1 to [`limits::NAME_LEN`]
/// characters of letters, digits, `_`, `-` and `.`, not starting with `.`, without `..`.
fn path_safe(bad: Bad, key: &str, name: &str) -> Result<()> {
    let chars_ok = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    let len = name.chars().count();
    if len == 0 || len > limits::NAME_LEN || !chars_ok || name.starts_with('.') || name.contains("..") {
        return Err(bad(
            key,
            format!(
                "must be 1 to {} characters of letters, digits, '_', '-' and '.', not starting with '.' and without '..' \
                 (it names files and ids), got {:?}{}",
                limits::NAME_LEN,
                shown(name),
                if len > 40 { format!(" ({len} characters)") } else { String::new() }
            ),
        ));
    }
    Ok(())
}

/// `s`, cut to its first 40 characters for an error message.
fn shown(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn arch(bad: Bad, key: &str, vocab: usize, max_len: usize, layers: usize, width: usize, heads: usize) -> Result<TransformerConfig> {
    count(bad, &format!("{key}.layers"), layers, 1, limits::LAYERS)?;
    count(bad, &format!("{key}.width"), width, 2, limits::WIDTH)?;
    count(bad, &format!("{key}.heads"), heads, 1, limits::HEADS)?;
    if !width.is_multiple_of(heads) {
        return Err(bad(
            &format!("{key}.heads"),
            format!("width {width} must be divisible by heads {heads}"),
        ));
    }
    Ok(TransformerConfig::with_dims(vocab, max_len, layers, width, heads))
}

fn reward_params(bad: Bad, key: &str, a: &TransformerConfig) -> Result<usize> {
    a.checked_reward_params()
        .ok_or_else(|| bad(&format!("{key}.width"), format!("the parameter count overflows ({} layers × width {})", a.layers, a.width)))
}
