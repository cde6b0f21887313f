//! The two acceptance checks `report.md` states, from the conclusions' statistics (the
//! expected curves, judged across replicates), never from one run's in-sample curve:
//! (a) every expected gold curve whose fall from its peak holds is described by its Gao form
//! with R² ≥ [`R2_TARGET`]; (b) for each method, the gold-free stopping rule chosen by
//! cross-validation gives up at most [`REGRET_TARGET`] of the gold the expected curves gain
//! at their peak.

use crate::stats::conclusions::{self, Claim, ExpectedFit, Interval, UnitCurve};

/// Acceptance threshold: R² of the Gao fit of every expected gold curve whose fall holds.
pub const R2_TARGET: f64 = 0.9;
/// Acceptance threshold: the cross-validated rule's regret, as a fraction of the peak's gain.
pub const REGRET_TARGET: f64 = 0.2;

/// Check (b) for one method.
#[derive(Debug, Clone, PartialEq)]
pub struct RegretCheck {
    pub method: String,
    /// The rule all replicates recommend (the folds' choices are graded in `regret`).
    pub rule: String,
    /// The cross-validated regret, across replicates.
    pub regret: Interval,
    /// Gold the method's curves gain at the expected curve's peak over π_ref.
    pub gain: Interval,
    /// `regret.estimate / gain.estimate`; `None` when the gain is not positive.
    pub fraction: Option<f64>,
    pub met: Option<bool>,
}

/// The two acceptance checks of `report.md`, with their numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Acceptance {
    /// Expected gold curves whose `overopt` claim holds (after adjustment).
    pub falling_curves: usize,
    /// Those among them whose expected-curve fit has R² < [`R2_TARGET`] (or no fit): the
    /// curve and its R².
    pub r2_misses: Vec<(String, Option<f64>)>,
    /// Every falling expected curve fits with R² ≥ [`R2_TARGET`]; `None` when no fall holds
    /// (nothing to check).
    pub r2_met: Option<bool>,
    /// Check (b), per method with a cross-validated rule.
    pub regret: Vec<RegretCheck>,
    /// Every method's check (b) is met; `None` when no method has one.
    pub regret_met: Option<bool>,
}

fn key(method: &str, ensemble: &str, aggregator: &str, beta: Option<f64>) -> String {
    format!("{method}/{ensemble}/{aggregator}{}", beta.map(|b| format!("/b{b}")).unwrap_or_default())
}

/// The acceptance checks from the claims, the expected curves' fits and the unit curves.
pub(super) fn acceptance(claims: &[Claim], fits: &[ExpectedFit], units: &[UnitCurve]) -> Acceptance {
    let falling: Vec<&Claim> = claims.iter().filter(|c| c.kind == "overopt" && c.verdict == "holds").collect();
    let r2_misses: Vec<(String, Option<f64>)> = falling
        .iter()
        .map(|c| {
            let fit = fits
                .iter()
                .find(|f| f.method == c.method && f.ensemble == c.ensemble && f.aggregator == c.aggregator && f.kl_penalty == c.kl_penalty);
            (key(&c.method, &c.ensemble, &c.aggregator, c.kl_penalty), fit.and_then(|f| f.r2))
        })
        .filter(|(_, r2)| !r2.is_some_and(|r| r >= R2_TARGET))
        .collect();
    let regret: Vec<RegretCheck> = claims
        .iter()
        .filter(|c| c.kind == "stop" && c.at == "cross-validated")
        .filter_map(|c| {
            let gain = conclusions::peak_gain(units, &c.method)?;
            let fraction = (gain.estimate > 0.0).then(|| c.interval.estimate / gain.estimate);
            Some(RegretCheck {
                method: c.method.clone(),
                rule: c.aggregator.clone(),
                regret: c.interval,
                gain,
                fraction,
                met: fraction.map(|f| f <= REGRET_TARGET),
            })
        })
        .collect();
    Acceptance {
        falling_curves: falling.len(),
        r2_met: (!falling.is_empty()).then_some(r2_misses.is_empty()),
        r2_misses,
        regret_met: if regret.is_empty() || regret.iter().any(|r| r.met.is_none()) {
            None
        } else {
            Some(regret.iter().all(|r| r.met == Some(true)))
        },
        regret,
    }
}
