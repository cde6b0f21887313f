//! Experiment configuration: raw `*Spec` structs parsed from TOML (unknown keys rejected),
//! validated once into a resolved [`Experiment`] that the rest of the crate trusts.
//!
//! An experiment file states only what differs from the defaults below; the run writes
//! the fully resolved experiment next to its results.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::TransformerConfig;
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
}

fn default_seed() -> u64 {
    1
}

fn default_replicates() -> usize {
    1
}

/// The most replicates a study may ask for.
pub const MAX_REPLICATES: usize = 1000;

/// The embedded world (see `world.rs` and the README).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WorldSpec {
    /// Number of ordinary content tokens (special and flattery tokens come on top).
    pub content_tokens: usize,
    /// Number of "flattery" tokens: liked in small doses by the labeler, disliked in bulk.
    pub flattery_tokens: usize,
    /// Prompt length in content tokens (every prompt has this length).
    pub prompt_len: usize,
    /// Longest response, end token included.
    pub max_response: usize,
    /// Mean response length (content tokens) of the demonstrator.
    pub mean_response: f64,
    /// Demonstrator's per-token probability of a flattery token.
    pub flattery_rate: f64,
    /// Demonstrator's per-token probability of echoing a prompt token.
    pub echo_rate: f64,
}

impl Default for WorldSpec {
    fn default() -> Self {
        Self {
            content_tokens: 20,
            flattery_tokens: 2,
            prompt_len: 4,
            max_response: 16,
            mean_response: 6.5,
            flattery_rate: 0.05,
            echo_rate: 0.2,
        }
    }
}

/// Transformer shape shared by the policy and the reward models.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ArchSpec {
    pub layers: usize,
    pub width: usize,
    pub heads: usize,
}

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
}

impl Default for PreferenceSpec {
    fn default() -> Self {
        Self {
            label: LabelMode::Deterministic,
            val_pairs: 2000,
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
    /// Also train one held-out proxy, never optimized against: the largest size on the
    /// largest data size at the lowest noise level, from independently sampled pairs. Its
    /// score of what the optimizers select is a gold-free signal for stopping rules.
    pub heldout: bool,
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
    /// Adam learning rate (constant).
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

    /// Parses and validates TOML text; `path` only labels errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self> {
        let spec: ExperimentSpec = toml::from_str(text).map_err(|e| {
            let (line, col) = e
                .span()
                .map(|s| line_col(text, s.start))
                .unwrap_or((0, 0));
            Error::Parse {
                path: path.to_path_buf(),
                line,
                col,
                msg: e.message().replace('\n', " "),
            }
        })?;
        Self::validate(spec, path)
    }

    /// Checks every value once and resolves derived quantities.
    pub fn validate(spec: ExperimentSpec, path: &Path) -> Result<Self> {
        let bad = |key: &str, msg: String| Error::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            msg,
        };
        if spec.name.is_empty()
            || !spec
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(bad(
                "name",
                format!("must be non-empty letters, digits, '_' or '-' (got {:?})", spec.name),
            ));
        }
        if !(1..=MAX_REPLICATES).contains(&spec.replicates) {
            return Err(bad("replicates", format!("must be in 1..={MAX_REPLICATES}, got {}", spec.replicates)));
        }
        let w = &spec.world;
        positive(&bad, "world.content_tokens", w.content_tokens, 4)?;
        positive(&bad, "world.prompt_len", w.prompt_len, 1)?;
        positive(&bad, "world.max_response", w.max_response, 2)?;
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
        let world = WorldConfig::from_spec(w, spec.seed);

        let p = &spec.policy;
        let policy_arch = arch(&bad, "policy", p.layers, p.width, p.heads)?;
        positive(&bad, "policy.demonstrations", p.demonstrations, 1)?;
        positive(&bad, "policy.sft_steps", p.sft_steps, 1)?;
        positive(&bad, "policy.sft_batch", p.sft_batch, 1)?;
        rate(&bad, "policy.sft_lr", p.sft_lr)?;

        positive(&bad, "reference.standardize_samples", spec.reference.standardize_samples, 2)?;
        positive(&bad, "reference.diversity_pool", spec.reference.diversity_pool, 1)?;

        let g = &spec.gold;
        let gold_arch = arch(&bad, "gold", g.layers, g.width, g.heads)?;
        positive(&bad, "gold.samples", g.samples, 2)?;
        positive(&bad, "gold.steps", g.steps, 1)?;
        positive(&bad, "gold.batch", g.batch, 1)?;
        rate(&bad, "gold.lr", g.lr)?;

        positive(&bad, "preferences.val_pairs", spec.preferences.val_pairs, 1)?;

        let x = &spec.proxy;
        if x.sizes.is_empty() {
            return Err(bad("proxy.sizes", "needs at least one size".into()));
        }
        let mut proxies = Vec::new();
        for (i, s) in x.sizes.iter().enumerate() {
            let key = format!("proxy.sizes[{i}]");
            if s.name.is_empty() || proxies.iter().any(|(n, _)| n == &s.name) {
                return Err(bad(&format!("{key}.name"), format!("must be non-empty and unique, got {:?}", s.name)));
            }
            let a = arch(&bad, &key, s.layers, s.width, s.heads)?;
            proxies.push((s.name.clone(), a.reward_params(&world)));
        }
        if x.data_sizes.is_empty() {
            return Err(bad("proxy.data_sizes", "needs at least one size".into()));
        }
        for (i, &d) in x.data_sizes.iter().enumerate() {
            positive(&bad, &format!("proxy.data_sizes[{i}]"), d, 1)?;
        }
        if x.noise.is_empty() {
            return Err(bad("proxy.noise", "needs at least one level (0.0 for none)".into()));
        }
        for (i, &n) in x.noise.iter().enumerate() {
            probability(&bad, &format!("proxy.noise[{i}]"), n, 0.5)?;
        }
        positive(&bad, "proxy.members", x.members, 1)?;
        positive(&bad, "proxy.epochs", x.epochs, 1)?;
        positive(&bad, "proxy.batch", x.batch, 1)?;
        rate(&bad, "proxy.lr", x.lr)?;

        let b = &spec.bon;
        positive(&bad, "bon.prompts", b.prompts, 1)?;
        positive(&bad, "bon.pool", b.pool, 2)?;
        for (key, list) in [("bon.uwo_lambdas", &b.uwo_lambdas), ("bon.mean_std_lambdas", &b.mean_std_lambdas)] {
            for (i, &l) in list.iter().enumerate() {
                if !(l.is_finite() && l >= 0.0) {
                    return Err(bad(&format!("{key}[{i}]"), format!("must be a finite λ ≥ 0, got {l}")));
                }
            }
        }

        validate_ppo(&bad, &spec.ppo, x)?;

        let gold_params = gold_arch.reward_params(&world);
        let (largest_name, largest) = proxies
            .iter()
            .max_by_key(|(_, n)| *n)
            .cloned()
            .expect("at least one proxy size");
        if gold_params < 4 * largest {
            return Err(bad(
                "gold.width",
                format!(
                    "gold RM has {gold_params} params, needs at least 4x the largest proxy ('{largest_name}', {largest} params)"
                ),
            ));
        }
        let params = ParamCounts {
            policy: policy_arch.policy_params(&world),
            gold: gold_params,
            proxies,
        };
        Ok(Experiment {
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
            params,
        })
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

    /// The world this experiment runs in.
    pub fn world(&self) -> WorldConfig {
        WorldConfig::from_spec(&self.world, self.seed)
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

    /// The resolved experiment as TOML (written next to the results).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("experiment serializes")
    }

    /// Short hash of the resolved experiment; names what a results folder holds.
    pub fn config_hash(&self) -> String {
        crate::cell::store::hash_hex(self.to_toml().as_bytes())[..16].to_string()
    }

    /// Default results folder for this experiment.
    pub fn default_out(&self) -> PathBuf {
        PathBuf::from("results").join(&self.name)
    }
}

fn validate_ppo(bad: &dyn Fn(&str, String) -> Error, p: &PpoSpec, x: &ProxySpec) -> Result<()> {
    for (i, name) in p.sizes.iter().enumerate() {
        if !x.sizes.iter().any(|s| &s.name == name) {
            return Err(bad(&format!("ppo.sizes[{i}]"), format!("no proxy size named {name:?} in proxy.sizes")));
        }
    }
    for (i, d) in p.data_sizes.iter().enumerate() {
        if !x.data_sizes.contains(d) {
            return Err(bad(&format!("ppo.data_sizes[{i}]"), format!("{d} is not in proxy.data_sizes")));
        }
    }
    for (i, n) in p.noise.iter().enumerate() {
        if !x.noise.contains(n) {
            return Err(bad(&format!("ppo.noise[{i}]"), format!("{n} is not in proxy.noise")));
        }
    }
    if p.kl_penalties.is_empty() {
        return Err(bad("ppo.kl_penalties", "needs at least one β (0.0 for none)".into()));
    }
    for (key, list) in [
        ("ppo.kl_penalties", &p.kl_penalties),
        ("ppo.uwo_lambdas", &p.uwo_lambdas),
        ("ppo.mean_std_lambdas", &p.mean_std_lambdas),
    ] {
        for (i, &l) in list.iter().enumerate() {
            if !(l.is_finite() && l >= 0.0) {
                return Err(bad(&format!("{key}[{i}]"), format!("must be finite and ≥ 0, got {l}")));
            }
        }
    }
    const KNOWN: [&str; 5] = ["mean", "wco", "uwo", "median", "mean_std"];
    for (i, a) in p.aggregators.iter().enumerate() {
        if !KNOWN.contains(&a.as_str()) {
            return Err(bad(&format!("ppo.aggregators[{i}]"), format!("unknown aggregator {a:?}; one of {KNOWN:?}")));
        }
    }
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
    positive(bad, "ppo.updates", p.updates, 1)?;
    positive(bad, "ppo.rollout", p.rollout, 2)?;
    positive(bad, "ppo.minibatch", p.minibatch, 1)?;
    if p.minibatch > p.rollout {
        return Err(bad("ppo.minibatch", format!("must be at most ppo.rollout ({}), got {}", p.rollout, p.minibatch)));
    }
    positive(bad, "ppo.epochs", p.epochs, 1)?;
    rate(bad, "ppo.lr", p.lr)?;
    for (key, v) in [("ppo.clip", p.clip), ("ppo.value_clip", p.value_clip)] {
        if !(v.is_finite() && v > 0.0 && v < 1.0) {
            return Err(bad(key, format!("must be in (0, 1), got {v}")));
        }
    }
    for (key, v) in [("ppo.value_coef", p.value_coef), ("ppo.entropy_coef", p.entropy_coef)] {
        if !(v.is_finite() && v >= 0.0) {
            return Err(bad(key, format!("must be finite and ≥ 0, got {v}")));
        }
    }
    probability(bad, "ppo.gae_lambda", p.gae_lambda, 1.0)?;
    probability(bad, "ppo.gamma", p.gamma, 1.0)?;
    if !(p.max_grad_norm.is_finite() && p.max_grad_norm > 0.0) {
        return Err(bad("ppo.max_grad_norm", format!("must be > 0, got {}", p.max_grad_norm)));
    }
    positive(bad, "ppo.eval_every", p.eval_every, 1)?;
    positive(bad, "ppo.eval_prompts", p.eval_prompts, 2)?;
    if let Some(b) = p.kl_budget {
        if !(b.is_finite() && b > 0.0) {
            return Err(bad("ppo.kl_budget", format!("must be > 0 nats, got {b}")));
        }
    }
    Ok(())
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map(|i| offset - i).unwrap_or(offset + 1);
    (line, col)
}

fn positive(bad: &dyn Fn(&str, String) -> Error, key: &str, v: usize, min: usize) -> Result<()> {
    if v < min {
        return Err(bad(key, format!("must be at least {min}, got {v}")));
    }
    Ok(())
}

fn probability(bad: &dyn Fn(&str, String) -> Error, key: &str, v: f64, max: f64) -> Result<()> {
    if !(v.is_finite() && (0.0..=max).contains(&v)) {
        return Err(bad(key, format!("must be in [0, {max}], got {v}")));
    }
    Ok(())
}

fn rate(bad: &dyn Fn(&str, String) -> Error, key: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && v > 0.0 && v < 1.0) {
        return Err(bad(key, format!("learning rate must be in (0, 1), got {v}")));
    }
    Ok(())
}

fn arch(
    bad: &dyn Fn(&str, String) -> Error,
    key: &str,
    layers: usize,
    width: usize,
    heads: usize,
) -> Result<ArchSpec> {
    positive(bad, &format!("{key}.layers"), layers, 1)?;
    positive(bad, &format!("{key}.width"), width, 2)?;
    positive(bad, &format!("{key}.heads"), heads, 1)?;
    if width % heads != 0 {
        return Err(bad(
            &format!("{key}.heads"),
            format!("width {width} must be divisible by heads {heads}"),
        ));
    }
    Ok(ArchSpec { layers, width, heads })
}

impl ArchSpec {
    fn cfg(&self, world: &WorldConfig) -> TransformerConfig {
        TransformerConfig::new(world, self.layers, self.width, self.heads)
    }
    fn reward_params(&self, world: &WorldConfig) -> usize {
        self.cfg(world).reward_params()
    }
    fn policy_params(&self, world: &WorldConfig) -> usize {
        self.cfg(world).policy_params()
    }
}
