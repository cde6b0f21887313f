//! The two acceptance checks `report.md` states: (a) every gold curve with an interior
//! observed peak fits with R² ≥ [`R2_TARGET`]; (b) the best gold-free stopping rule's median
//! regret is at most [`REGRET_TARGET`] of the gain.

use crate::analysis::{self, FitRow, SummaryRow, Target};

/// Acceptance threshold: R² of the gold fit of every curve with an interior observed peak.
pub const R2_TARGET: f64 = 0.9;
/// Acceptance threshold: the best gold-free rule's median regret, as a fraction of the gain.
pub const REGRET_TARGET: f64 = 0.2;

/// The two acceptance checks of `report.md`, with their numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Acceptance {
    /// Gold curves whose observed peak is interior (neither first nor last point).
    pub interior_curves: usize,
    /// Those among them whose gold fit has R² < [`R2_TARGET`] (or no fit): key and R².
    pub r2_misses: Vec<(String, Option<f64>)>,
    /// Every interior-peak curve fits with R² ≥ [`R2_TARGET`]; `None` when no curve has an
    /// interior peak (nothing to check).
    pub r2_met: Option<bool>,
    /// The rule ranked first over all curves (gold-free; may be the naive `proxy_peak`).
    pub best_rule: Option<String>,
    /// Its median regret fraction over curves with gain > 0, and how many those are.
    pub best_median_regret_frac: Option<f64>,
    pub regret_curves: usize,
    /// `best_median_regret_frac ≤ REGRET_TARGET`; `None` when no curve has a gain.
    pub regret_met: Option<bool>,
    /// For context, not the target: the best rule over the curves whose gold peaks strictly
    /// inside them, its median regret fraction, and how many such curves (with gain > 0).
    pub interior_best_rule: Option<String>,
    pub interior_median_regret_frac: Option<f64>,
    pub interior_regret_curves: usize,
}

/// The acceptance checks: (a) R² of interior-peak gold fits, (b) best rule's median regret.
pub(super) fn acceptance(fits: &[FitRow], summary: &[SummaryRow]) -> Acceptance {
    let interior: Vec<&FitRow> = fits
        .iter()
        .filter(|f| f.target == Target::Gold && f.interior_peak)
        .collect();
    let r2_misses: Vec<(String, Option<f64>)> = interior
        .iter()
        .map(|f| (f.id.key.clone(), f.fit.map(|x| x.r2)))
        .filter(|(_, r2)| !r2.is_some_and(|r| r >= R2_TARGET))
        .collect();
    let best = summary.iter().find(|s| s.scope == "all").map(|s| &s.summary);
    let best_frac = best.and_then(|b| b.median_regret_frac);
    let interior_best = summary
        .iter()
        .find(|s| s.scope == analysis::INTERIOR_SCOPE)
        .map(|s| &s.summary);
    Acceptance {
        interior_curves: interior.len(),
        r2_met: (!interior.is_empty()).then_some(r2_misses.is_empty()),
        r2_misses,
        best_rule: best.map(|b| b.rule.clone()),
        best_median_regret_frac: best_frac,
        regret_curves: best.map_or(0, |b| b.frac_curves),
        regret_met: best_frac.map(|f| f <= REGRET_TARGET),
        interior_best_rule: interior_best.map(|b| b.rule.clone()),
        interior_median_regret_frac: interior_best.and_then(|b| b.median_regret_frac),
        interior_regret_curves: interior_best.map_or(0, |b| b.frac_curves),
    }
}

