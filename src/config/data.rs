//! The preference data and the proxies learnt from it: `[preferences]` (pairs of π_ref
//! responses labelled by gold) and `[proxy]` (the grid of proxy reward models).

use serde::{Deserialize, Serialize};

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
    /// Biases every labeler shares, in the labels the proxies (the held-out proxy and direct
    /// alignment too) learn from; never in gold or the validation pairs. All 0 (the
    /// default): gold's own labels, and a resolved config without the table.
    #[serde(skip_serializing_if = "LabelerBias::is_off")]
    pub bias: LabelerBias,
}

/// `[preferences.bias]`: what every labeler adds to a response's standardized gold score
/// before comparing two (`B(y)`; `a ≻ b` iff `gold_a + B(a) > gold_b + B(b)`, or drawn with
/// σ of that difference in Bradley–Terry mode; `proxy.noise` flips on top). Each weight is in
/// standardized gold units (π_ref standard deviations of gold's score) per unit of its
/// feature; a negative weight is the opposite taste (short answers, say). See
/// `crate::train::rm::labeler_bias`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LabelerBias {
    /// Per content token of the response (its length, end token excluded).
    pub length: f64,
    /// Per flattery token (linear, on top of gold's concave flattery term).
    pub flattery: f64,
    /// Per occurrence of the world's "confident style" token
    /// (`crate::world::WorldConfig::style_token`).
    pub style: f64,
    /// Once for a response that holds the world's rare bigram
    /// (`crate::world::WorldConfig::rare_bigram`): a rare feature rewarded hugely.
    pub rare: f64,
}

impl LabelerBias {
    /// Every weight 0: the labels are gold's own.
    pub fn is_off(&self) -> bool {
        self.weights().iter().all(|(_, w)| *w == 0.0)
    }

    /// Each weight with its key under `preferences.bias`.
    pub fn weights(&self) -> [(&'static str, f64); 4] {
        [("length", self.length), ("flattery", self.flattery), ("style", self.style), ("rare", self.rare)]
    }
}

impl Default for PreferenceSpec {
    fn default() -> Self {
        Self {
            label: LabelMode::Deterministic,
            val_pairs: 2000,
            per_replicate: false,
            bias: LabelerBias::default(),
        }
    }
}

/// Where an ensemble's members differ: each source listed in `proxy.sources` is an ensemble
/// of its own for every size × data size × noise level.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// From random weights; members differ by seed (initialization and data order).
    Scratch,
    /// From one shared pretrained trunk; members differ by fine-tuning seed (head
    /// initialization and data order).
    Finetune,
    /// Each member from its own pretraining run (pretraining seed), then fine-tuned.
    Pretrain,
    /// From one shared pretrained trunk; each member fine-tuned on its own bootstrap sample
    /// of the pairs.
    Bootstrap,
    /// One model: the shared pretrained trunk with k linear heads trained jointly (each head
    /// on its own bootstrap weights of the pairs); member m is head m.
    Multihead,
    /// WARM: one reward model, the weight average of the `finetune` ensemble's members.
    Warm,
}

impl Source {
    pub const ALL: [Source; 6] = [Source::Scratch, Source::Finetune, Source::Pretrain, Source::Bootstrap, Source::Multihead, Source::Warm];

    /// The name configs and ensemble ids use.
    pub fn name(self) -> &'static str {
        match self {
            Source::Scratch => "scratch",
            Source::Finetune => "finetune",
            Source::Pretrain => "pretrain",
            Source::Bootstrap => "bootstrap",
            Source::Multihead => "multihead",
            Source::Warm => "warm",
        }
    }

    /// Whether its members start from a pretrained trunk.
    pub fn pretrained(self) -> bool {
        self != Source::Scratch
    }

    /// Members of its ensemble given `proxy.members` (WARM is one model).
    pub fn members(self, members: usize) -> usize {
        if self == Source::Warm {
            1
        } else {
            members
        }
    }
}

/// The pretraining of the trunks proxies of a pretrained source start from: a language model
/// of the proxy's size trained on the world's text (fresh demonstrations, next-token loss).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PretrainSpec {
    pub demonstrations: usize,
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
}

impl Default for PretrainSpec {
    fn default() -> Self {
        Self {
            demonstrations: 10_000,
            steps: 300,
            batch: 64,
            lr: 3e-3,
        }
    }
}

/// One proxy size.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProxySizeSpec {
    pub name: String,
    /// The shape (a text study's proxies take their trunk checkpoint's: leave it out there).
    #[serde(default)]
    pub layers: usize,
    #[serde(default)]
    pub width: usize,
    #[serde(default)]
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
    /// Where the members of an ensemble differ ([`Source`]); each source is its own ensemble.
    pub sources: Vec<Source>,
    /// The trunks of the pretrained sources.
    pub pretrain: PretrainSpec,
}

impl ProxySpec {
    /// Models per size, data size and noise level: every source's members.
    pub fn source_models(&self) -> usize {
        self.sources.iter().map(|s| s.members(self.members)).sum()
    }

    /// The first source in the grid's order (the ensembles one-per-pair-set methods use).
    pub fn first_source(&self) -> Source {
        self.sources.iter().copied().min().unwrap_or(Source::Scratch)
    }
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
            sources: vec![Source::Finetune],
            pretrain: PretrainSpec::default(),
        }
    }
}
