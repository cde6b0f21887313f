//! The models' part of an experiment: π_ref and its fine-tuning (`[policy]`), the reference
//! samples (`[reference]`), the gold reward model (`[gold]`).

use serde::{Deserialize, Serialize};

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
