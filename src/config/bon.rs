//! Best-of-n's part of an experiment (`[bon]`): its settings, defaults and validation.

use serde::{Deserialize, Serialize};

use super::fields::{count, distinct, limits, list, non_negative, Bad};
use crate::error::Result;

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

    /// Checks the section; an error names its key (`bon.pool`).
    pub fn validate(&self, bad: Bad) -> Result<()> {
        let b = self;
        count(bad, "bon.prompts", b.prompts, 1, limits::COUNT)?;
        count(bad, "bon.pool", b.pool, 2, limits::COUNT)?;
        count(bad, "bon.prompts_per_cell", b.prompts_per_cell, 1, limits::COUNT)?;
        for (key, l) in [("bon.uwo_lambdas", &b.uwo_lambdas), ("bon.mean_std_lambdas", &b.mean_std_lambdas)] {
            list(bad, key, l.len(), 0)?;
            for (i, &v) in l.iter().enumerate() {
                non_negative(bad, &format!("{key}[{i}]"), v, "a finite λ ≥ 0")?;
            }
            distinct(bad, key, l)?;
        }
        Ok(())
    }
}
