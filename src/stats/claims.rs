//! What the study claims: the `[conclusions]` table of an experiment, read by the report
//! (from `config.resolved.toml`) and by [`super::conclusions`]; no cell reads it.

use serde::{Deserialize, Serialize};

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
