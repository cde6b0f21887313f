//! Gold-free stopping rules and their regret.
//!
//! A curve is a sequence of points ordered by increasing KL: the n grid of a best-of-n run
//! or the evaluation checkpoints of a PPO run. A stopping rule picks one point from
//! quantities a user has without gold (proxy ensemble scores, their disagreement, a
//! held-out proxy trained on disjoint data); it never reads gold. Its quality is its
//! [`regret`]: gold at the observed peak minus gold at the chosen point, also as a
//! fraction of the gold gained from the first point to the peak.
//!
//! Contract: pure functions over slices; no panics on bad data. A rule returns `None` when
//! the input it uses is missing, empty, has a different length from `kl`, has no finite
//! value, or when its parameter is invalid. Ties go to the earliest (least-KL) point, the
//! cautious choice.

/// One curve: parallel slices, `(points,)` each, ordered by increasing KL.
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    /// KL(π‖π_ref) in nats, ascending.
    pub kl: &'a [f64],
    /// Standardized gold reward. Used only by [`regret`], never by a rule.
    pub gold: &'a [f64],
    /// The optimized aggregated proxy score (standardized units).
    pub proxy: &'a [f64],
    /// Mean over ensemble members of their scores of the selected samples.
    pub member_mean: &'a [f64],
    /// Mean over selected samples of the population variance (divide by k) of the member
    /// scores: squared standardized units.
    pub disagreement: &'a [f64],
    /// A held-out proxy (trained on disjoint data, never optimized) scoring the same
    /// selected samples, if the run has one.
    pub heldout: Option<&'a [f64]>,
}

impl Series<'_> {
    /// Number of points (the length of `kl`).
    pub fn len(&self) -> usize {
        self.kl.len()
    }

    /// Whether the curve has no points.
    pub fn is_empty(&self) -> bool {
        self.kl.is_empty()
    }
}

/// A gold-free stopping rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// Uses `heldout` only: the index where the held-out proxy is highest. A proxy that
    /// was never optimized is not overfitted by the optimization, so its peak estimates
    /// gold's. `None` without a held-out proxy.
    HeldoutPeak,
    /// Uses `member_mean` and `disagreement`: the index maximizing
    /// `member_mean − κ·sqrt(disagreement)`, a conservative (lower) estimate of the reward
    /// that discounts points where the ensemble disagrees. κ ≥ 0 (default
    /// [`Rule::DEFAULT_KAPPA`]); κ = 0 is the plain ensemble-mean peak. Negative
    /// disagreement (rounding) counts as 0; a point with a non-finite member mean or
    /// disagreement is skipped.
    PenalizedPeak { kappa: f64 },
    /// Uses `disagreement` only: the last index before the disagreement first exceeds
    /// `(1 + τ)` times its value at the first point (stop when the ensemble starts to
    /// disagree); the last index if it never does. τ ≥ 0 (default [`Rule::DEFAULT_TAU`]:
    /// doubling). Non-finite points never trigger. `None` if the first point's
    /// disagreement is negative or not finite.
    DisagreementRise { tau: f64 },
    /// Uses `proxy` only: the index where the optimized proxy is highest. The naïve rule
    /// that trusts the proxy, so it ignores overoptimization by construction and usually
    /// picks the last point; a baseline that the other rules' regret should beat.
    ProxyPeak,
}

impl Rule {
    /// Default κ for [`Rule::PenalizedPeak`]: one ensemble standard deviation.
    pub const DEFAULT_KAPPA: f64 = 1.0;
    /// Default τ for [`Rule::DisagreementRise`]: stop before the disagreement doubles.
    pub const DEFAULT_TAU: f64 = 1.0;

    /// Every rule with its default parameter.
    pub fn defaults() -> Vec<Rule> {
        vec![
            Rule::HeldoutPeak,
            Rule::PenalizedPeak {
                kappa: Self::DEFAULT_KAPPA,
            },
            Rule::DisagreementRise { tau: Self::DEFAULT_TAU },
            Rule::ProxyPeak,
        ]
    }

    /// Stable snake_case name, without parameters: `heldout_peak`, `penalized_peak`,
    /// `disagreement_rise`, `proxy_peak`.
    pub fn name(&self) -> &'static str {
        match self {
            Rule::HeldoutPeak => "heldout_peak",
            Rule::PenalizedPeak { .. } => "penalized_peak",
            Rule::DisagreementRise { .. } => "disagreement_rise",
            Rule::ProxyPeak => "proxy_peak",
        }
    }

    /// The name with its parameter, for comparing one rule at several parameters:
    /// `penalized_peak(kappa=1)`, `disagreement_rise(tau=0.5)`; parameter-free rules give
    /// their [`name`](Rule::name).
    pub fn label(&self) -> String {
        match self {
            Rule::PenalizedPeak { kappa } => format!("{}(kappa={kappa})", self.name()),
            Rule::DisagreementRise { tau } => format!("{}(tau={tau})", self.name()),
            _ => self.name().to_string(),
        }
    }

    /// The index of the point this rule stops at, or `None` (see the module contract).
    pub fn choose(&self, s: &Series) -> Option<usize> {
        let n = s.len();
        let usable = |v: &[f64]| v.len() == n && n > 0;
        match *self {
            Rule::HeldoutPeak => {
                let h = s.heldout?;
                if !usable(h) {
                    return None;
                }
                argmax(h.iter().copied())
            }
            Rule::PenalizedPeak { kappa } => {
                if !kappa.is_finite() || kappa < 0.0 || !usable(s.member_mean) || !usable(s.disagreement) {
                    return None;
                }
                argmax(
                    s.member_mean
                        .iter()
                        .zip(s.disagreement)
                        // Not `v.max(0.0)`: that would turn a NaN disagreement into 0.
                        .map(|(&m, &v)| m - kappa * if v < 0.0 { 0.0 } else { v.sqrt() }),
                )
            }
            Rule::DisagreementRise { tau } => {
                if !tau.is_finite() || tau < 0.0 || !usable(s.disagreement) {
                    return None;
                }
                let first = s.disagreement[0];
                if !first.is_finite() || first < 0.0 {
                    return None;
                }
                let limit = (1.0 + tau) * first;
                // The first point never exceeds its own limit (τ ≥ 0), so a crossing is at ≥ 1.
                match s.disagreement.iter().position(|&v| v.is_finite() && v > limit) {
                    Some(j) => j.checked_sub(1),
                    None => Some(n - 1),
                }
            }
            Rule::ProxyPeak => {
                if !usable(s.proxy) {
                    return None;
                }
                argmax(s.proxy.iter().copied())
            }
        }
    }
}

/// Index of the largest finite value, earliest on ties; `None` if there is none.
pub fn argmax(xs: impl Iterator<Item = f64>) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, x) in xs.enumerate() {
        if x.is_finite() && best.is_none_or(|(_, b)| x > b) {
            best = Some((i, x));
        }
    }
    best.map(|(i, _)| i)
}

/// How much gold a choice of stopping point gives up. Gold in standardized units, KL in
/// nats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Regret {
    /// The chosen point's index, its KL and its gold.
    pub chosen: usize,
    pub chosen_kl: f64,
    pub gold_chosen: f64,
    /// The observed gold peak (earliest on ties): index, KL and gold.
    pub peak: usize,
    pub peak_kl: f64,
    pub gold_peak: f64,
    /// `gold_peak − gold_chosen` ≥ 0.
    pub regret: f64,
    /// `gold_peak − gold[0]`: the improvement available over the first (least-optimized)
    /// point. ≥ 0.
    pub gain: f64,
    /// `regret / gain`: the fraction of the available improvement lost (0 = stopped at the
    /// peak, 1 = no better than the first point, > 1 = worse than it). `None` when
    /// `gain ≤ 0` (no improvement to lose).
    pub regret_frac: Option<f64>,
}

/// The regret of stopping at point `chosen` of `series`. The peak is the largest finite
/// gold. `None` when `chosen` is out of range, `kl` and `gold` differ in length, or gold
/// at the first or the chosen point is not finite.
pub fn regret(series: &Series, chosen: usize) -> Option<Regret> {
    let (kl, gold) = (series.kl, series.gold);
    if kl.len() != gold.len() || chosen >= gold.len() {
        return None;
    }
    let (first, gold_chosen) = (gold[0], gold[chosen]);
    if !first.is_finite() || !gold_chosen.is_finite() {
        return None;
    }
    // Finite gold exists (the first point), so argmax finds a peak.
    let peak = argmax(gold.iter().copied())?;
    let gold_peak = gold[peak];
    let regret = gold_peak - gold_chosen;
    let gain = gold_peak - first;
    Some(Regret {
        chosen,
        chosen_kl: kl[chosen],
        gold_chosen,
        peak,
        peak_kl: kl[peak],
        gold_peak,
        regret,
        gain,
        regret_frac: (gain > 0.0).then(|| regret / gain),
    })
}

/// `y` at KL `at`, the crate's one definition of a curve's value at a KL: at the FIRST point
/// (in the curve's own order: n, or the PPO step) whose KL reaches `at`, linearly
/// interpolated in KL from the point before it; the first point's value when it already
/// reaches `at`. A PPO policy's KL can go back between checkpoints; what counts is when the
/// run first got there. `None` when the curve never reaches `at`, the slices differ in length
/// or `at` is not finite.
pub fn at_kl(kl: &[f64], y: &[f64], at: f64) -> Option<f64> {
    if kl.len() != y.len() || !at.is_finite() {
        return None;
    }
    let j = kl.iter().position(|&k| k >= at)?;
    if j == 0 || kl[j] == kl[j - 1] {
        return Some(y[j]);
    }
    let w = (at - kl[j - 1]) / (kl[j] - kl[j - 1]);
    Some(y[j - 1] + w * (y[j] - y[j - 1]))
}
