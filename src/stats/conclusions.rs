//! Conclusions: the study's claims, each an estimate with a 95% interval across replicates,
//! about the curve a user means (the one expected over replicates), measured on replicates
//! and units that did not choose it, with a p-value adjusted for the claims beside it.
//!
//! The input is per-unit curves ([`UnitCurve`]), read back from the `bon_units` and
//! `ppo_units` tables. A curve's points are matched across replicates by what they mean
//! (best-of-n: n; PPO: the evaluation step), never by their gold. The claims:
//! - **`overopt`**: the fall of the expected gold curve from its peak to its last point.
//!   Leave one replicate out: the peak is the point where the mean curve of the *other*
//!   replicates is highest, and the left-out replicate measures the fall there (its gold at
//!   that point − its gold at the last point). A replicate's own wiggles therefore never
//!   choose the point that measures them, so a flat expected curve gives 0 in expectation
//!   however much each replicate's curve wiggles. Needs 3 replicates for a verdict (with 2
//!   the estimate is given without one); a study of one replicate reports that run's own
//!   fall, cross-fitted over its units (peak chosen on one half of the prompts, measured on
//!   the other, then swapped), labelled as that run's curve.
//! - **`peak`**: the expected curve's gold gain at its peak over its first point (π_ref),
//!   the peak chosen the same way (the "best gold" of a method and aggregator).
//! - **`gap`**: the paired difference of gold between an aggregator and a baseline on the
//!   same units (same prompts and pools for best-of-n, same evaluation prompts for PPO): at
//!   the last point, for PPO also at the largest KL both reach, and at each one's peak
//!   (each chosen as for `peak`). Positive = the aggregator keeps more gold. `single` pools
//!   the single members unit by unit. A shaped group (`mean+par`, and `single+par` pooling
//!   the members shaped alike) is its own group, compared with the same group unshaped and,
//!   for a shaped mean, wco or uwo, with `single` ([`crate::stats::shaping`]).
//! - **`stop`**: the regret of a gold-free stopping rule: gold at the expected curve's peak
//!   (chosen on the other replicates) − gold where the rule stops, the rule reading one half
//!   of a run's units and graded on the other half (its signals and the gold that grades
//!   them are never the same samples). The rule to prefer is chosen by leave-one-replicate-
//!   out cross-validation; the claim says how many folds chose each rule.
//!
//! Per replicate, a claim's value is the mean of its unit contributions; across replicates
//! the estimate is their mean and the interval Student's t with R − 1 degrees of freedom
//! (over units, for a study of one replicate). The p-value is the t test's, two-sided.
//! **Multiplicity**: the study's primary questions ([`Settings::primary`]) form one family
//! whose p-values are Holm-adjusted; every other claim is exploratory, with a
//! Benjamini–Hochberg q-value. The verdict reads the adjusted value: `holds` (estimate > 0,
//! adjusted p < 0.05), `reversed` (< 0), otherwise `inconclusive`. **Missing runs**: a claim
//! states how many replicates it rests on of how many; where a replicate lacks a run the
//! claim needs (a PPO run that failed), the claim is computed again with that run counted at
//! the worst gold any run of its setting reached, and its p-value is the larger of the two
//! (1 when the two estimates disagree in sign). **Power**: an inconclusive primary claim
//! says how many replicates a study would need for [`Settings::power`] at the observed
//! effect and spread and at the smallest effect of interest, at the family's strictest Holm
//! level, and what that costs ([`Cost`]).

use std::collections::{BTreeMap, BTreeSet};

pub use super::claims::{ClaimSelector, ConclusionsSpec};
use crate::stats;
use crate::stats::shaping;
use crate::stats::curve::Traits;
use crate::stats::stopping::{Rule, Series};


/// The level every interval and test is taken at (two-sided).
pub const ALPHA: f64 = 0.05;

/// Fewest replicates for a verdict on the expected curve's peak (the fall, the peak's gain):
/// leaving one out must leave at least two to choose on.
pub const MIN_REPLICATES_PEAK: usize = 3;

/// One curve's values per unit: `gold[point][unit]` and the gold-free signals alike.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitCurve {
    /// The method's name in the tables (`bon`, `ppo`).
    pub method: String,
    /// What the statistics read of the method: its label, Gao form, how its KL is had.
    pub traits: Traits,
    pub replicate: u64,
    pub ensemble: String,
    /// `member0`, `mean`, `wco`, `uwo(0.5)`, … ([`crate::stats::aggregate::label`]).
    pub aggregator: String,
    /// PPO's β; none for best-of-n.
    pub kl_penalty: Option<f64>,
    /// KL(π‖π_ref) per point (best-of-n: the bound of its n; PPO: the checkpoint's mean k1).
    pub kl: Vec<f64>,
    /// Where each point is, the same in every replicate: `n=64`, `step 20`.
    pub at: Vec<String>,
    pub gold: Vec<Vec<f64>>,
    /// The optimized (aggregated) proxy score.
    pub proxy: Vec<Vec<f64>>,
    /// Mean over the ensemble's members of their scores.
    pub member_mean: Vec<Vec<f64>>,
    /// For a single member's curve: the mean of the other members' scores.
    pub other_members: Option<Vec<Vec<f64>>>,
    /// Population variance of the member scores.
    pub disagreement: Vec<Vec<f64>>,
    pub heldout: Option<Vec<Vec<f64>>>,
}

impl UnitCurve {
    pub fn points(&self) -> usize {
        self.gold.len()
    }

    pub fn units(&self) -> usize {
        self.gold.first().map_or(0, Vec::len)
    }

    /// Whether this is one member optimized alone.
    pub fn is_single(&self) -> bool {
        crate::stats::aggregate::member_index(&self.aggregator).is_some()
    }
}

/// The half a unit belongs to (0: even index, 1: odd).
pub fn half_of(unit: usize) -> usize {
    unit % 2
}

/// Mean of `values[unit]` over the units of half `h`.
fn half_mean(values: &[f64], h: usize) -> f64 {
    let (mut s, mut n) = (0.0, 0usize);
    for (u, v) in values.iter().enumerate() {
        if half_of(u) == h {
            s += v;
            n += 1;
        }
    }
    if n == 0 {
        f64::NAN
    } else {
        s / n as f64
    }
}

/// Per point, the mean over half `h`'s units.
fn half_curve(values: &[Vec<f64>], h: usize) -> Vec<f64> {
    values.iter().map(|p| half_mean(p, h)).collect()
}

/// The peak of a curve of means: the index of the largest finite value, earliest on ties
/// (the crate's one definition, [`crate::stats::stopping::argmax`]).
pub fn peak_index(xs: &[f64]) -> Option<usize> {
    crate::stats::stopping::argmax(xs.iter().copied())
}

/// The crate's one mean ([`crate::stats::mean_se`]).
fn mean(xs: &[f64]) -> f64 {
    crate::stats::mean_se(xs).0
}

/// The within-run fall (one replicate only): gold at the peak chosen on the other half of
/// the units minus gold at the last point, one contribution per unit. `None` for fewer than
/// two units or points without a finite mean.
pub fn fall_units(c: &UnitCurve) -> Option<Vec<f64>> {
    gold_fall_units(&c.gold)
}

/// [`fall_units`] of `gold[point][unit]`.
fn gold_fall_units(gold: &[Vec<f64>]) -> Option<Vec<f64>> {
    let last = gold.len().checked_sub(1)?;
    let units = gold.first().map_or(0, Vec::len);
    if units < 2 {
        return None;
    }
    let picks = [peak_index(&half_curve(gold, 0))?, peak_index(&half_curve(gold, 1))?];
    Some((0..units).map(|u| gold[picks[1 - half_of(u)]][u] - gold[last][u]).collect())
}

/// The in-sample fall (peak chosen and measured on the same units): biased upward, kept
/// only to show the winner's curse in tests.
pub fn fall_in_sample(c: &UnitCurve) -> Option<f64> {
    let last = c.points().checked_sub(1)?;
    let means: Vec<f64> = c.gold.iter().map(|p| mean(p)).collect();
    let k = peak_index(&means)?;
    Some(means[k] - means[last])
}

/// A gold-free stopping rule: the rules of [`Rule::defaults`] plus the other members' peak
/// (a single member's curve read by the ensemble's other members).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StopRule {
    Rule(Rule),
    OtherMembersPeak,
}

impl StopRule {
    pub fn all() -> Vec<StopRule> {
        let mut v: Vec<StopRule> = Rule::defaults().into_iter().map(StopRule::Rule).collect();
        v.push(StopRule::OtherMembersPeak);
        v
    }

    pub fn label(&self) -> String {
        match self {
            StopRule::Rule(r) => r.label(),
            StopRule::OtherMembersPeak => crate::stats::analysis::OTHER_MEMBERS_PEAK.to_string(),
        }
    }

    /// The point this rule picks from half `h` of `c`'s gold-free signals.
    pub fn pick(&self, c: &UnitCurve, h: usize) -> Option<usize> {
        match self {
            StopRule::OtherMembersPeak => peak_index(&half_curve(c.other_members.as_ref()?, h)),
            StopRule::Rule(r) => {
                let kl = c.kl.clone();
                let proxy = half_curve(&c.proxy, h);
                let member_mean = half_curve(&c.member_mean, h);
                let disagreement = half_curve(&c.disagreement, h);
                let heldout = c.heldout.as_ref().map(|v| half_curve(v, h));
                let nan = vec![f64::NAN; kl.len()];
                r.choose(&Series {
                    kl: &kl,
                    gold: &nan,
                    proxy: &proxy,
                    member_mean: &member_mean,
                    disagreement: &disagreement,
                    heldout: heldout.as_deref(),
                })
            }
        }
    }
}

/// Regret of `rule` on `c` against a stop at point `oracle` (chosen without this run's
/// gold), one contribution per unit: gold at `oracle` minus gold where the rule stops, the
/// rule reading the other half of the units. `None` where the rule does not apply.
pub fn regret_units_at(c: &UnitCurve, rule: StopRule, oracle: [usize; 2]) -> Option<Vec<f64>> {
    if c.units() < 2 {
        return None;
    }
    let chosen = [rule.pick(c, 0)?, rule.pick(c, 1)?];
    if oracle.iter().chain(&chosen).any(|&k| k >= c.points()) {
        return None;
    }
    Some(
        (0..c.units())
            .map(|u| {
                let other = 1 - half_of(u);
                c.gold[oracle[other]][u] - c.gold[chosen[other]][u]
            })
            .collect(),
    )
}

/// Within-run regret (one replicate only): the oracle too reads one half's gold and both
/// picks are graded on the other half.
pub fn regret_units(c: &UnitCurve, rule: StopRule) -> Option<Vec<f64>> {
    let oracle = [peak_index(&half_curve(&c.gold, 0))?, peak_index(&half_curve(&c.gold, 1))?];
    regret_units_at(c, rule, oracle)
}

/// Gold of every unit at KL `at` ([`crate::stats::stopping::at_kl`], unit by unit); `None` if the
/// curve never reaches `at`.
pub fn gold_at_kl(c: &UnitCurve, at: f64) -> Option<Vec<f64>> {
    units_at_kl(&c.kl, &c.gold, at)
}

/// `values[point][unit]` at KL `at`, unit by unit by [`crate::stats::stopping::at_kl`].
fn units_at_kl(kl: &[f64], values: &[Vec<f64>], at: f64) -> Option<Vec<f64>> {
    let units = values.first()?.len();
    (0..units)
        .map(|u| crate::stats::stopping::at_kl(kl, &values.iter().map(|p| p[u]).collect::<Vec<_>>(), at))
        .collect()
}

/// Largest KL a curve reaches.
pub fn max_kl(c: &UnitCurve) -> f64 {
    c.kl.iter().copied().filter(|k| k.is_finite()).fold(f64::NEG_INFINITY, f64::max)
}

/// Unit by unit mean of several curves' contributions (the pooled single members); `None`
/// if there are none or their unit counts differ.
pub fn pool(parts: &[Vec<f64>]) -> Option<Vec<f64>> {
    let n = parts.first()?.len();
    if parts.iter().any(|p| p.len() != n) {
        return None;
    }
    Some((0..n).map(|u| parts.iter().map(|p| p[u]).sum::<f64>() / parts.len() as f64).collect())
}

/// Paired differences `a − b`, unit by unit; `None` if the unit counts differ.
pub fn paired(a: &[f64], b: &[f64]) -> Option<Vec<f64>> {
    (a.len() == b.len()).then(|| a.iter().zip(b).map(|(x, y)| x - y).collect())
}

/// The 97.5% quantile of Student's t with `df` degrees of freedom (two-sided 95%), computed
/// ([`stats::t_critical`]); NaN for df = 0.
pub fn t975(df: usize) -> f64 {
    if df == 0 {
        return f64::NAN;
    }
    stats::t_critical(ALPHA, df as f64)
}

/// What an interval is taken over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// R ≥ 2 replicates: the spread of the replicates' estimates.
    Replicates,
    /// One replicate: the spread of its units (replicate-to-replicate variation not covered).
    Units,
}

impl Over {
    pub fn name(&self) -> &'static str {
        match self {
            Over::Replicates => "replicates",
            Over::Units => "units of one replicate",
        }
    }
}

/// An estimate with its 95% interval, the spread it came from and its t test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
    /// Replicates it averages.
    pub replicates: usize,
    pub over: Over,
    /// Sample standard deviation of the values averaged (replicates' estimates, or units).
    pub sd: f64,
    /// Two-sided p-value of the t test of a zero mean; NaN without an interval.
    pub p_value: f64,
    /// How many candidate points the interval is simultaneous over (Bonferroni): 1 for a
    /// plain t interval; for a statistic at a peak, every point the peak could be at.
    pub candidates: usize,
}

impl Interval {
    /// The unadjusted reading: `holds` (above 0), `reversed` (below 0) or `inconclusive`.
    pub fn verdict(&self) -> &'static str {
        if self.low > 0.0 {
            "holds"
        } else if self.high < 0.0 {
            "reversed"
        } else {
            "inconclusive"
        }
    }

    /// Which side of 0 the interval points to: the middle of the interval (the estimate, for
    /// a plain t interval), or the estimate where there is no interval.
    pub fn direction(&self) -> f64 {
        if self.low.is_finite() && self.high.is_finite() {
            0.5 * (self.low + self.high)
        } else {
            self.estimate
        }
    }

    /// An estimate without an interval (too few values to judge).
    fn bare(estimate: f64, replicates: usize, over: Over) -> Interval {
        Interval {
            estimate,
            low: f64::NAN,
            high: f64::NAN,
            replicates,
            over,
            sd: f64::NAN,
            p_value: f64::NAN,
            candidates: 1,
        }
    }
}

/// Student-t 95% interval and two-sided t test of the mean of `xs`; `None` for fewer than
/// two values or a non-finite one.
pub fn t_interval(xs: &[f64], over: Over, replicates: usize) -> Option<Interval> {
    if xs.len() < 2 || xs.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let (m, se) = crate::stats::mean_se(xs);
    let df = (xs.len() - 1) as f64;
    let half = t975(xs.len() - 1) * se;
    let p_value = if se > 0.0 {
        stats::t_two_sided(m / se, df)
    } else if m == 0.0 {
        1.0
    } else {
        0.0
    };
    Some(Interval {
        estimate: m,
        low: m - half,
        high: m + half,
        replicates,
        over,
        sd: se * (xs.len() as f64).sqrt(),
        p_value,
        candidates: 1,
    })
}

/// The interval of a statistic at a peak of the expected curve, simultaneous over where the
/// peak could be. `grid[p][q]` holds the replicates' values (one each, the same replicates
/// throughout) of the paired difference between candidate point p of one curve and
/// candidate q of another; the estimand is max over p of min over q of their means (the
/// fall: the peak's value less the last point's, q alone; a gap at each one's peak:
/// max_p μ_a(p) − max_q μ_b(q) = max_p min_q μ(p, q)). Every mean gets a Student-t interval
/// at level 1 − α/M (Bonferroni over the M = |p|·|q| candidates), so all of them hold
/// together with probability at least 1 − α, and then so does
/// [max_p min_q low(p, q), max_p min_q high(p, q)] for the estimand, however the replicates
/// wiggle and whichever point a fold chose. The p-value is the least α at which that
/// interval excludes 0: M times the two-sided p of T = max_p min_q t(p, q), capped at 1.
/// `estimate` is the cross-fitted estimate, reported beside it; the interval's `sd` is the
/// replicates' spread at the candidate that decides the test (where T is reached; `sd` if
/// none does), the spread a study powered at this peak would see. `None` with fewer than two
/// replicates or a non-finite value.
pub fn simultaneous(grid: &[Vec<Vec<f64>>], estimate: f64, sd: f64) -> Option<Interval> {
    if grid.iter().any(Vec::is_empty) {
        return None;
    }
    let reps = grid.first()?.first()?.len();
    if reps < 2 || grid.iter().flatten().any(|v| v.len() != reps || v.iter().any(|x| !x.is_finite())) {
        return None;
    }
    let m: usize = grid.iter().map(Vec::len).sum();
    let df = (reps - 1) as f64;
    let c = stats::t_critical(ALPHA / m as f64, df);
    let (mut low, mut high, mut t) = (f64::NEG_INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY);
    // The spread of the candidate that decides the test (the power lines read it).
    let mut spread = sd;
    for row in grid {
        let (mut lo, mut hi, mut tq, mut sq) = (f64::INFINITY, f64::INFINITY, f64::INFINITY, f64::NAN);
        for v in row {
            let (mean, se) = crate::stats::mean_se(v);
            lo = lo.min(mean - c * se);
            hi = hi.min(mean + c * se);
            let tv = if se > 0.0 {
                mean / se
            } else if mean == 0.0 {
                0.0
            } else {
                mean.signum() * f64::INFINITY
            };
            if tv < tq || sq.is_nan() {
                tq = tv;
                sq = se * (reps as f64).sqrt();
            }
        }
        low = low.max(lo);
        high = high.max(hi);
        if tq > t {
            t = tq;
            spread = sq;
        }
    }
    // The point estimate (each replicate at the other replicates' peak) can fall outside
    // the bounds over fixed candidates; the interval is widened to hold it, which only makes
    // it more conservative.
    if estimate.is_finite() {
        low = low.min(estimate);
        high = high.max(estimate);
    }
    Some(Interval {
        estimate,
        low,
        high,
        replicates: reps,
        over: Over::Replicates,
        sd: spread,
        p_value: (m as f64 * stats::t_two_sided(t, df)).min(1.0),
        candidates: m,
    })
}


/// A claim's interval from its unit contributions, one vector per replicate: across
/// replicates when there are two or more (each replicate's estimate is its units' mean),
/// over units otherwise.
pub fn across(per_replicate: &[Vec<f64>]) -> Option<Interval> {
    across_of(per_replicate, per_replicate.len())
}

/// [`across`] in a study of `study` replicates: a claim measurable in only one of several
/// replicates gets no interval (NaN bounds and p-value) rather than one over units that
/// would not be comparable with the others'.
pub fn across_of(per_replicate: &[Vec<f64>], study: usize) -> Option<Interval> {
    match per_replicate {
        [] => None,
        [one] if study >= 2 => Some(Interval::bare(mean(one), 1, Over::Replicates)),
        [one] => t_interval(one, Over::Units, 1),
        many => {
            let means: Vec<f64> = many.iter().map(|u| mean(u)).collect();
            t_interval(&means, Over::Replicates, many.len())
        }
    }
}

/// The family a claim is judged in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// The study's primary questions: Holm-adjusted together.
    Primary,
    /// Everything else: Benjamini–Hochberg q-values.
    Exploratory,
}

impl Family {
    pub fn name(&self) -> &'static str {
        match self {
            Family::Primary => "primary",
            Family::Exploratory => "exploratory",
        }
    }
}

/// What a study the size the power lines ask for would cost, from the plan's cost model.
#[derive(Debug, Clone, PartialEq)]
pub struct Cost {
    /// CPU-seconds of the cells a study makes once whatever its size (world 0's).
    pub shared_cpu_s: f64,
    /// CPU-seconds one more replicate adds (its own world's cells too, when worlds are
    /// redrawn).
    pub per_replicate_cpu_s: f64,
    /// Modelled seconds of one replicate's longest chain of cells (the floor on any
    /// cluster's wall time).
    pub chain_s: f64,
    /// Cores of the machine the study ran on (its `--jobs`), for "wall time here".
    pub cores_here: usize,
    /// The Slurm cluster priced: nodes × cores per node.
    pub cluster_nodes: usize,
    pub cluster_cores: usize,
    /// `replicates`, or `worlds` when each replicate redraws its world.
    pub unit: String,
}

impl Cost {
    /// CPU-hours of a study of `n` replicates.
    pub fn cpu_hours(&self, n: usize) -> f64 {
        (self.shared_cpu_s + n as f64 * self.per_replicate_cpu_s) / 3600.0
    }

    /// Wall hours on `cores` cores for a study of `n` replicates: its CPU time spread over
    /// the cores, never below one replicate's longest chain.
    pub fn wall_hours(&self, n: usize, cores: usize) -> f64 {
        (self.cpu_hours(n) / cores.max(1) as f64).max(self.chain_s / 3600.0)
    }
}

/// How the claims are judged: the primary family, the power asked for, the cost model.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The primary questions, in order (a selector that matches no claim is listed as not
    /// measured).
    pub primary: Vec<ClaimSelector>,
    /// Smallest effect of interest, π_ref standard deviations.
    pub smallest_effect: f64,
    /// Power the "replicates needed" lines aim for.
    pub power: f64,
    pub cost: Option<Cost>,
    /// What the `heldout_peak` rule read: `one held-out proxy per replicate`, `one held-out
    /// proxy shared by every replicate`, ….
    pub heldout: String,
    /// The ensemble a primary question without `ensemble` is about (`SIZE/dDATA/nNOISE`): the
    /// study's smallest proxies, from its config (the first size, the fewest pairs, the
    /// lowest noise). Empty: guessed from the claims ([`smallest_ensemble`]).
    pub first_ensemble: String,
}

impl Default for Settings {
    fn default() -> Self {
        let c = ConclusionsSpec::default();
        Settings {
            primary: c.primary,
            smallest_effect: c.smallest_effect,
            power: c.power,
            cost: None,
            heldout: String::new(),
            first_ensemble: String::new(),
        }
    }
}

/// One row of `conclusions.{parquet,csv}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// Readable statement of what is estimated.
    pub claim: String,
    /// `overopt`, `peak`, `gap`, `vs` (one method against another at matched KL) or `stop`.
    pub kind: String,
    pub method: String,
    pub ensemble: String,
    /// The aggregator (`single` pools the single members); a stopping rule for `stop`.
    pub aggregator: String,
    /// The baseline of a gap (`single`, `mean`), or of a `vs` the other method and its line
    /// (`ppo single`); empty otherwise.
    pub baseline: String,
    pub kl_penalty: Option<f64>,
    /// Where it is measured: `peak→last`, `peak`, `final`, `matched kl …`, `cross-fitted`,
    /// `cross-validated`.
    pub at: String,
    /// The quantity estimated: `expected curve` (over replicates), `one run's curve` (a
    /// study of one replicate), `paired, per unit`, `paired, per replicate` (a `vs` with best-of-n).
    pub estimand: String,
    pub interval: Interval,
    /// Replicates the study has (of the method); `interval.replicates` is how many this
    /// claim rests on.
    pub replicates_total: usize,
    /// Replicates lacking a run this claim needs.
    pub missing: Vec<u64>,
    /// The claim with the missing runs counted at the worst gold any run of the setting
    /// reached; `None` when nothing is missing.
    pub worst_case: Option<Interval>,
    /// The p-value judged: the interval's, or with missing runs the larger of it and the
    /// worst case's (1 when they disagree in sign).
    pub p_value: f64,
    pub family: Family,
    /// Holm-adjusted within the primary family; a Benjamini–Hochberg q-value otherwise.
    pub p_adjusted: f64,
    /// `holds`, `reversed` or `inconclusive`, from `p_adjusted` and the estimate's sign.
    pub verdict: String,
    /// Replicates a study would need for the settings' power at the observed effect and
    /// spread, and at the smallest effect of interest (inconclusive primary claims only).
    pub replicates_needed: Option<usize>,
    pub replicates_needed_min_effect: Option<usize>,
    /// CPU-hours of the study of `replicates_needed` (and of `..._min_effect`).
    pub cpu_hours_needed: Option<f64>,
    pub cpu_hours_needed_min_effect: Option<f64>,
    /// Anything else a reader needs: the folds' choices, the peak's location, why there is
    /// no verdict.
    pub note: String,
}

/// Which claim a row of `conclusions` is: what [`Claim::exploratory`] is built from besides
/// its text and judgement.
struct Row<'a> {
    kind: &'a str,
    method: &'a str,
    ensemble: &'a str,
    aggregator: &'a str,
    baseline: String,
    kl_penalty: Option<f64>,
    at: String,
}

impl Claim {
    /// A claim as measured, exploratory until [`judge`] gives it its family, p-value,
    /// verdict and power lines.
    fn exploratory(claim: String, row: Row, j: Judged, replicates_total: usize, missing: Vec<u64>) -> Claim {
        Claim {
            claim,
            kind: row.kind.into(),
            method: row.method.into(),
            ensemble: row.ensemble.into(),
            aggregator: row.aggregator.into(),
            baseline: row.baseline,
            kl_penalty: row.kl_penalty,
            at: row.at,
            estimand: j.estimand,
            interval: j.interval,
            replicates_total,
            missing,
            worst_case: j.worst_case,
            p_value: f64::NAN,
            family: Family::Exploratory,
            p_adjusted: f64::NAN,
            verdict: String::new(),
            replicates_needed: None,
            replicates_needed_min_effect: None,
            cpu_hours_needed: None,
            cpu_hours_needed_min_effect: None,
            note: j.note,
        }
    }
}

/// Aggregator group of a curve: `single` for a member, its label otherwise; a shaped
/// member's `single` with its shaping (`member0+par` → `single+par`).
fn group(c: &UnitCurve) -> String {
    match shaping::split(&c.aggregator) {
        (base, Some(s)) if crate::stats::aggregate::member_index(base).is_some() => format!("single+{s}"),
        _ if c.is_single() => "single".into(),
        _ => c.aggregator.clone(),
    }
}

/// Curves of one optimization setting (method, ensemble, β).
type Setting = (String, String, Option<u64>);

fn setting(c: &UnitCurve) -> Setting {
    (c.method.clone(), c.ensemble.clone(), c.kl_penalty.map(f64::to_bits))
}

/// The order aggregator groups are listed in: `single` (the members), then the aggregators'
/// own order ([`crate::stats::aggregate::order`]: mean, median, wco, uwo, mean_std, others),
/// each group's shaped groups after it.
fn group_rank(g: &str) -> (u8, String) {
    let base = shaping::split(g).0;
    let rank = if base == "single" { 0 } else { crate::stats::aggregate::order(base.split('(').next().unwrap_or(base)).0 };
    (rank, g.to_string())
}

/// The `gap` pairs (group, baseline) of a setting's groups, in claim order: mean, wco and
/// each uwo against `single`, wco and each uwo against `mean`; then each shaped group
/// against the same group unshaped (`single+par` against `single`, `mean+par` against
/// `mean`), and each shaped mean, wco and uwo against `single`.
fn gap_pairs<'a>(groups: impl Iterator<Item = &'a str> + Clone) -> Vec<(String, String)> {
    let of = |kinds: &'static [&'static str], shaped: bool, baseline: &'static str| {
        groups
            .clone()
            .filter(move |g| {
                let (kind, is_shaped) = aggregate_kind(g);
                kinds.contains(&kind) && is_shaped == shaped
            })
            .map(move |g| (g.to_string(), baseline.to_string()))
    };
    let mut pairs: Vec<(String, String)> = of(&["mean", "wco", "uwo"], false, "single").chain(of(&["wco", "uwo"], false, "mean")).collect();
    pairs.extend(groups.clone().filter_map(|g| match shaping::split(g) {
        (base, Some(_)) => Some((g.to_string(), base.to_string())),
        _ => None,
    }));
    pairs.extend(of(&["mean", "wco", "uwo"], true, "single"));
    pairs
}

/// A group's aggregator without its λ, and whether it is shaped: `uwo(0.1)+par` → (`uwo`,
/// true).
fn aggregate_kind(g: &str) -> (&str, bool) {
    let (base, shaped) = shaping::split(g);
    (base.split('(').next().unwrap_or(base), shaped.is_some())
}

fn beta_text(b: Option<f64>) -> String {
    b.map(|b| format!(", β = {b}")).unwrap_or_default()
}

/// The traits of each method of `curves`, by name (the first curve's).
fn traits_by_method(curves: &[UnitCurve]) -> BTreeMap<&str, Traits> {
    let mut out = BTreeMap::new();
    for c in curves {
        out.entry(c.method.as_str()).or_insert(c.traits);
    }
    out
}

/// One replicate's runs of one aggregator group, pooled unit by unit (the single members'
/// mean), at the points of `at`.
#[derive(Debug, Clone)]
struct Pooled {
    at: Vec<String>,
    kl: Vec<f64>,
    gold: Vec<Vec<f64>>,
}

impl Pooled {
    fn of(cs: &[&UnitCurve]) -> Option<Pooled> {
        let first = cs.first()?;
        if cs.iter().any(|c| c.at != first.at || c.units() != first.units()) {
            return None;
        }
        let gold = (0..first.points())
            .map(|k| pool(&cs.iter().map(|c| c.gold[k].clone()).collect::<Vec<_>>()))
            .collect::<Option<Vec<_>>>()?;
        let kl = (0..first.points()).map(|k| cs.iter().map(|c| c.kl[k]).sum::<f64>() / cs.len() as f64).collect();
        Some(Pooled { at: first.at.clone(), kl, gold })
    }

    /// Mean gold per point.
    fn means(&self) -> Vec<f64> {
        self.gold.iter().map(|p| mean(p)).collect()
    }

    /// Restricted to the points of `at` (which it must all have).
    fn at_points(&self, at: &[String]) -> Pooled {
        let idx: Vec<usize> = at.iter().map(|a| self.at.iter().position(|x| x == a).expect("a common point")).collect();
        Pooled {
            at: at.to_vec(),
            kl: idx.iter().map(|&i| self.kl[i]).collect(),
            gold: idx.iter().map(|&i| self.gold[i].clone()).collect(),
        }
    }
}

/// The points every replicate has, in the first replicate's order.
fn common_points<'a>(reps: impl Iterator<Item = &'a Pooled> + Clone) -> Vec<String> {
    let Some(first) = reps.clone().next() else { return Vec::new() };
    first.at.iter().filter(|a| reps.clone().all(|p| p.at.contains(a))).cloned().collect()
}

/// For each replicate, the peak of the mean curve of the OTHER replicates (mean over them of
/// their mean gold per point): index into the common points. `None` with fewer than two
/// replicates.
fn loro_peaks(means: &[Vec<f64>]) -> Option<Vec<usize>> {
    if means.len() < 2 {
        return None;
    }
    let points = means[0].len();
    (0..means.len())
        .map(|r| {
            let other: Vec<f64> = (0..points)
                .map(|k| {
                    let v: Vec<f64> = (0..means.len()).filter(|&q| q != r).map(|q| means[q][k]).collect();
                    mean(&v)
                })
                .collect();
            peak_index(&other)
        })
        .collect()
}

/// "n=16 in 11 of 12 folds, n=32 in 1": how often each point was chosen.
fn fold_text(at: &[String], picks: &[usize]) -> String {
    let mut count: BTreeMap<usize, usize> = BTreeMap::new();
    for &p in picks {
        *count.entry(p).or_default() += 1;
    }
    let mut v: Vec<(usize, usize)> = count.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.iter()
        .enumerate()
        .map(|(i, (p, n))| if i == 0 { format!("{} in {n} of {} folds", at[*p], picks.len()) } else { format!("{} in {n}", at[*p]) })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Per replicate unit contributions of a peak statistic on the expected curve: for each
/// replicate, the point where the other replicates' mean curve peaks, then `value(pooled,
/// k)` on the left-out replicate's units. Also a note on where the peaks fell, and every
/// point's value in every replicate (`[point][replicate]`, the mean over its units) for the
/// interval simultaneous over the points ([`simultaneous`]).
fn loro_values(reps: &[&Pooled], value: impl Fn(&Pooled, usize) -> Vec<f64>) -> Option<(Vec<Vec<f64>>, String, Vec<Vec<f64>>)> {
    let at = common_points(reps.iter().copied());
    if at.is_empty() {
        return None;
    }
    let aligned: Vec<Pooled> = reps.iter().map(|p| p.at_points(&at)).collect();
    let means: Vec<Vec<f64>> = aligned.iter().map(Pooled::means).collect();
    let picks = loro_peaks(&means)?;
    let kls: Vec<f64> = picks.iter().zip(&aligned).map(|(&k, p)| p.kl[k]).collect();
    let note = format!("peak (chosen on the other replicates) at {} (mean KL there {:.2} nats)", fold_text(&at, &picks), mean(&kls));
    let every = (0..at.len()).map(|k| aligned.iter().map(|p| mean(&value(p, k))).collect()).collect();
    Some((aligned.iter().zip(&picks).map(|(p, &k)| value(p, k)).collect(), note, every))
}

/// A group's runs in every replicate that has them.
type Reps<'a> = BTreeMap<u64, Vec<&'a UnitCurve>>;

/// A claim's values before judging: per-replicate unit contributions, what they estimate.
struct Measured {
    per: Vec<Vec<f64>>,
    estimand: &'static str,
    note: String,
    /// Too few replicates for an interval on the expected curve (the estimate stands alone).
    too_few: bool,
    /// For a statistic at a peak: the candidates' values per replicate, `[p][q][replicate]`
    /// (see [`simultaneous`]); the interval is then simultaneous over them.
    grid: Option<Vec<Vec<Vec<f64>>>>,
}

/// The fall (`fall` = true) or the peak's gain over the first point, of a group's expected
/// curve; within the one run of a one-replicate study.
fn peak_measure(reps: &BTreeMap<u64, Pooled>, study: usize, fall: bool) -> Option<Measured> {
    let list: Vec<&Pooled> = reps.values().collect();
    if study <= 1 {
        let p = list.first()?;
        let gold = &p.gold;
        let units = if fall {
            gold_fall_units(gold)?
        } else {
            let picks = [peak_index(&half_curve(gold, 0))?, peak_index(&half_curve(gold, 1))?];
            (0..gold.first().map_or(0, Vec::len)).map(|u| gold[picks[1 - half_of(u)]][u] - gold[0][u]).collect()
        };
        return Some(Measured {
            per: vec![units],
            estimand: "one run's curve",
            note: "one replicate: this run's own curve (peak chosen on one half of its units, measured on the other)".into(),
            too_few: false,
            grid: None,
        });
    }
    let (per, note, every) = loro_values(&list, |p, k| {
        let base = if fall { p.gold.len() - 1 } else { 0 };
        p.gold[k].iter().zip(&p.gold[base]).map(|(a, b)| a - b).collect()
    })?;
    // Where the peak could be: any point but the one it is measured against.
    let base = if fall { every.len() - 1 } else { 0 };
    let grid: Vec<Vec<Vec<f64>>> = every.into_iter().enumerate().filter(|(k, _)| *k != base).map(|(_, v)| vec![v]).collect();
    let too_few = per.len() < MIN_REPLICATES_PEAK;
    Some(Measured {
        note: if too_few {
            format!("{} replicates: too few to judge the expected curve's peak (at least {MIN_REPLICATES_PEAK}); {note}", per.len())
        } else {
            format!("{note}; interval simultaneous over the {} points the peak could be at", grid.len())
        },
        per,
        estimand: "expected curve",
        too_few,
        grid: (!grid.is_empty()).then_some(grid),
    })
}

/// Pooled runs per replicate of one group; replicates whose runs do not pool are left out.
fn pooled(reps: &Reps) -> BTreeMap<u64, Pooled> {
    reps.iter().filter_map(|(&r, cs)| Some((r, Pooled::of(cs)?))).collect()
}

/// A stand-in for a replicate's missing runs: the shape of `like` with every unit's gold at
/// `worst` at every point.
fn worst_run(like: &Pooled, worst: f64) -> Pooled {
    Pooled {
        at: like.at.clone(),
        kl: like.kl.clone(),
        gold: like.gold.iter().map(|p| vec![worst; p.len()]).collect(),
    }
}

/// The values a claim is judged on: the interval from the replicates that have the runs,
/// and, if some lack them, the interval with those counted at their worst.
struct Judged {
    interval: Interval,
    worst_case: Option<Interval>,
    estimand: String,
    note: String,
}

fn judged(m: Measured, study: usize, worst: Option<Measured>) -> Option<Judged> {
    let interval = if m.too_few {
        Interval::bare(m.per.iter().map(|u| mean(u)).sum::<f64>() / m.per.len() as f64, m.per.len(), Over::Replicates)
    } else {
        interval_of(&m, study)?
    };
    let worst_case = worst.and_then(|w| if w.too_few { None } else { interval_of(&w, study) });
    Some(Judged {
        interval,
        worst_case,
        estimand: m.estimand.to_string(),
        note: m.note,
    })
}

/// A measured claim's interval: across replicates (or units of one), simultaneous over the
/// candidates of a statistic at a peak, beside the cross-fitted estimate.
fn interval_of(m: &Measured, study: usize) -> Option<Interval> {
    let plain = across_of(&m.per, study)?;
    match &m.grid {
        Some(grid) if plain.over == Over::Replicates && plain.replicates >= 2 => simultaneous(grid, plain.estimate, plain.sd),
        _ => Some(plain),
    }
}

/// Every claim of the study with default settings (see [`conclusions`]).
pub fn claims(curves: &[UnitCurve]) -> Vec<Claim> {
    conclusions(curves, &Settings::default())
}

/// Every claim of the study, judged: in a fixed order, `overopt` and `peak` for every
/// method × ensemble × β × aggregator group; `gap` of mean, wco and each uwo against
/// `single` and of wco and each uwo against `mean`, then of each shaped group against it
/// unshaped and of each shaped mean, wco and uwo against `single` (at the last point, for PPO at matched
/// KL, and at each one's peak); `vs` for every pair of methods whose KL is measured, at
/// matched KL ([`method_gaps`]); `stop` for every rule and the cross-validated choice, per
/// method. Then families, p-values, adjusted verdicts and power lines.
pub fn conclusions(curves: &[UnitCurve], settings: &Settings) -> Vec<Claim> {
    // setting → group → replicate → curves
    let mut by: BTreeMap<Setting, BTreeMap<(u8, String), Reps>> = BTreeMap::new();
    for c in curves {
        by.entry(setting(c))
            .or_default()
            .entry(group_rank(&group(c)))
            .or_default()
            .entry(c.replicate)
            .or_default()
            .push(c);
    }
    // The replicates of each method: a replicate without a run some other replicate has is
    // missing it.
    let mut method_reps: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for c in curves {
        method_reps.entry(c.method.as_str()).or_default().insert(c.replicate);
    }
    let traits = traits_by_method(curves);
    let mut out = Vec::new();
    for ((method, ensemble, beta), groups) in &by {
        let beta = beta.map(f64::from_bits);
        let Traits { label, kl_measured, .. } = traits[method.as_str()];
        let all_reps = &method_reps[method.as_str()];
        let study = all_reps.len();
        // The worst gold any run of this setting reached: the stand-in for a missing run.
        let worst = groups
            .values()
            .flat_map(|reps| reps.values().flatten())
            .flat_map(|c| c.gold.iter().map(|p| mean(p)))
            .filter(|v| v.is_finite())
            .fold(f64::INFINITY, f64::min);
        let pooled_groups: BTreeMap<String, BTreeMap<u64, Pooled>> = groups.iter().map(|((_, g), reps)| (g.clone(), pooled(reps))).collect();
        let missing_of = |g: &str| -> Vec<u64> { all_reps.iter().filter(|r| !pooled_groups[g].contains_key(r)).copied().collect() };
        // The group's runs with the missing ones at their worst.
        let with_worst = |g: &str| -> BTreeMap<u64, Pooled> {
            let mut m = pooled_groups[g].clone();
            if let Some(like) = m.values().next().cloned() {
                for r in missing_of(g) {
                    m.insert(r, worst_run(&like, worst));
                }
            }
            m
        };
        let base = |kind: &str, g: &str, baseline: &str, at: &str, claim: String, j: Judged, missing: Vec<u64>| {
            let row = Row { kind, method, ensemble, aggregator: g, baseline: baseline.to_string(), kl_penalty: beta, at: at.to_string() };
            Claim::exploratory(claim, row, j, study, missing)
        };
        // overopt and peak
        for ((_, g), _) in groups {
            let missing = missing_of(g);
            for (kind, fall) in [("overopt", true), ("peak", false)] {
                let Some(m) = peak_measure(&pooled_groups[g], study, fall) else { continue };
                let w = (!missing.is_empty()).then(|| peak_measure(&with_worst(g), study, fall)).flatten();
                let Some(j) = judged(m, study, w) else { continue };
                let claim = if fall {
                    format!("{label}: gold falls from its peak ({ensemble}, {g}{})", beta_text(beta))
                } else {
                    format!("{label}: gold gained at the peak over π_ref ({ensemble}, {g}{})", beta_text(beta))
                };
                out.push(base(kind, g, "", if fall { "peak→last" } else { "peak" }, claim, j, missing.clone()));
            }
        }
        // gap
        for (agg, baseline) in gap_pairs(groups.keys().map(|(_, g)| g.as_str())) {
            let baseline = baseline.as_str();
            if !pooled_groups.contains_key(baseline) {
                continue;
            }
            let missing: Vec<u64> = {
                let mut m = missing_of(&agg);
                m.extend(missing_of(baseline));
                m.sort_unstable();
                m.dedup();
                m
            };
            let text = |at: &str| {
                format!("{label}: {agg} keeps more gold than {baseline} at {at} ({ensemble}{})", beta_text(beta))
            };
            // At the last point, and (where KL is measured) at the largest KL both reach.
            let (a, b) = (&pooled_groups[&agg], &pooled_groups[baseline]);
            let (wa, wb) = (with_worst(&agg), with_worst(baseline));
            let mut kinds = vec![false];
            if kl_measured {
                kinds.push(true);
            }
            for matched in kinds {
                let (per, kls) = pointwise(a, b, matched);
                if per.is_empty() {
                    continue;
                }
                let worst_m = (!missing.is_empty()).then(|| Measured {
                    per: pointwise(&wa, &wb, matched).0,
                    estimand: "",
                    note: String::new(),
                    too_few: false,
                    grid: None,
                });
                let at = if matched { format!("matched kl (mean {:.2} nats)", mean(&kls)) } else { "final".to_string() };
                let m = Measured {
                    per,
                    estimand: "paired, per unit",
                    note: String::new(),
                    too_few: false,
                    grid: None,
                };
                let Some(j) = judged(m, study, worst_m) else { continue };
                let words = if matched { at.clone() } else { "the last point".to_string() };
                out.push(base("gap", &agg, baseline, &at, text(&words), j, missing.clone()));
            }
            // At each one's own peak (the expected curves', each chosen on the other replicates).
            if study >= 2 {
                // The interval is simultaneous over every pair of points the two peaks could be at.
                type PeakGap = (Vec<Vec<f64>>, String, Vec<Vec<Vec<f64>>>);
                let peak_gap = |a: &BTreeMap<u64, Pooled>, b: &BTreeMap<u64, Pooled>| -> Option<PeakGap> {
                    let common: Vec<u64> = a.keys().filter(|r| b.contains_key(r)).copied().collect();
                    let la: Vec<&Pooled> = common.iter().map(|r| &a[r]).collect();
                    let lb: Vec<&Pooled> = common.iter().map(|r| &b[r]).collect();
                    let (va, na, ea) = loro_values(&la, |p, k| p.gold[k].clone())?;
                    let (vb, _, eb) = loro_values(&lb, |p, k| p.gold[k].clone())?;
                    let per = va.iter().zip(&vb).map(|(x, y)| paired(x, y)).collect::<Option<Vec<_>>>()?;
                    let grid = ea.iter().map(|x| eb.iter().map(|y| x.iter().zip(y).map(|(a, b)| a - b).collect()).collect()).collect();
                    Some((per, na, grid))
                };
                if let Some((per, note, grid)) = peak_gap(a, b) {
                    let too_few = per.len() < MIN_REPLICATES_PEAK;
                    let worst_m = if missing.is_empty() {
                        None
                    } else {
                        peak_gap(&wa, &wb).map(|(per, _, grid)| Measured {
                            too_few: per.len() < MIN_REPLICATES_PEAK,
                            per,
                            estimand: "",
                            note: String::new(),
                            grid: Some(grid),
                        })
                    };
                    let pairs: usize = grid.iter().map(Vec::len).sum();
                    let m = Measured {
                        per,
                        estimand: "expected curve",
                        note: format!(
                            "each at its own {}; interval simultaneous over the {pairs} pairs of points the peaks could be at",
                            note.replacen("peak ", "peak; the aggregator's ", 1)
                        ),
                        too_few,
                        grid: Some(grid),
                    };
                    if let Some(j) = judged(m, study, worst_m) {
                        out.push(base("gap", &agg, baseline, "peak", text("each one's peak"), j, missing.clone()));
                    }
                }
            }
        }
    }
    out.extend(method_gaps(&by, &traits));
    out.extend(source_gaps(&by, &traits));
    out.extend(stop_claims_with(curves, &settings.heldout));
    judge(&mut out, settings);
    out
}

/// Each method's line in the cross-method comparison: its `single` group (or `direct`, for a
/// method that optimizes no proxy) at its smallest β, pooled by replicate.
type MethodLine = (Option<f64>, String, BTreeMap<u64, Pooled>);

/// Cross-method gaps at matched KL (`vs`): for every ensemble and every pair of methods, each
/// read on its [`MethodLine`], the gold difference at each budget of
/// [`crate::stats::analysis::KL_BUDGETS`] both reach in every replicate, and at the largest
/// KL both reach in each replicate, judged across the replicates both have. Two methods whose
/// KL is measured share their units (the same evaluation prompts and samples): the
/// difference is paired unit by unit. With a method whose KL is set by its design
/// (best-of-n: its own prompts, its KL the bound of its n) the units differ: each
/// replicate contributes the difference of its two means.
fn method_gaps(by: &BTreeMap<Setting, BTreeMap<(u8, String), Reps>>, traits: &BTreeMap<&str, Traits>) -> Vec<Claim> {
    let mut lines: BTreeMap<&str, BTreeMap<&str, MethodLine>> = BTreeMap::new();
    for ((method, ensemble, beta), groups) in by {
        let Some(((_, g), reps)) = groups.iter().find(|((_, g), _)| g == "single" || g == "direct") else { continue };
        let b = beta.map(f64::from_bits);
        let entry = lines.entry(ensemble.as_str()).or_default();
        if entry.get(method.as_str()).is_none_or(|(old, _, _)| b.unwrap_or(0.0) < old.unwrap_or(0.0)) {
            entry.insert(method.as_str(), (b, g.clone(), pooled(reps)));
        }
    }
    let mut out = Vec::new();
    for (ensemble, methods) in &lines {
        let list: Vec<(&&str, &MethodLine)> = methods.iter().collect();
        for (i, (ma, (ba, ga, pa))) in list.iter().enumerate() {
            for (mb, (bb, gb, pb)) in &list[i + 1..] {
                let all: BTreeSet<u64> = pa.keys().chain(pb.keys()).copied().collect();
                let missing: Vec<u64> = all.iter().filter(|r| !(pa.contains_key(r) && pb.contains_key(r))).copied().collect();
                let both: Vec<(&Pooled, &Pooled)> = pa.iter().filter_map(|(r, a)| Some((a, pb.get(r)?))).collect();
                let unit_paired = traits[**ma].kl_measured && traits[**mb].kl_measured;
                // Every budget both reach in every replicate both have, then the largest KL
                // both reach in each replicate.
                let reach = both.iter().map(|(a, b)| max_kl_of(a).min(max_kl_of(b))).fold(f64::INFINITY, f64::min);
                let budgets: Vec<Option<f64>> = crate::stats::analysis::KL_BUDGETS.iter().filter(|&&b| b <= reach).map(|&b| Some(b)).chain([None]).collect();
                for budget in budgets {
                    let mut kls = Vec::new();
                    let per: Vec<Vec<f64>> = both
                        .iter()
                        .filter_map(|(a, b)| {
                            let kl = budget.unwrap_or_else(|| max_kl_of(a).min(max_kl_of(b)));
                            if !kl.is_finite() || kl <= 0.0 {
                                return None;
                            }
                            let (ga, gb) = (pooled_at_kl(a, kl)?, pooled_at_kl(b, kl)?);
                            let d = if unit_paired { paired(&ga, &gb)? } else { vec![mean(&ga) - mean(&gb)] };
                            kls.push(kl);
                            Some(d)
                        })
                        .collect();
                    if per.is_empty() {
                        continue;
                    }
                    let (at, words) = match budget {
                        Some(b) => (format!("kl {b}"), format!("at KL {b} nats")),
                        None => (format!("matched kl (mean {:.2} nats)", mean(&kls)), "at matched KL".to_string()),
                    };
                    let m = Measured {
                        per,
                        estimand: if unit_paired { "paired, per unit" } else { "paired, per replicate" },
                        note: format!(
                            "{ma}'s {ga}{} − {mb}'s {gb}{}, {}{}",
                            beta_text(*ba),
                            beta_text(*bb),
                            if budget.is_some() { "each replicate at this KL (a budget every replicate of both reaches)" } else { "each replicate at the largest KL both reach" },
                            if unit_paired { "" } else { "; the difference of each replicate's means (the methods' units differ; best-of-n's KL is the bound of its n)" }
                        ),
                        too_few: false,
                        grid: None,
                    };
                    let Some(j) = judged(m, all.len(), None) else { continue };
                    let (la, lb) = (traits[**ma].label, traits[**mb].label);
                    let claim = format!("{la} keeps more gold than {lb} {words} ({ensemble}, {ga}{} vs {gb}{})", beta_text(*ba), beta_text(*bb));
                    let row = Row { kind: "vs", method: ma, ensemble, aggregator: ga, baseline: format!("{mb} {gb}"), kl_penalty: *ba, at };
                    out.push(Claim::exploratory(claim, row, j, all.len(), missing.clone()));
                }
            }
        }
    }
    out
}

/// The paired gold differences of two groups' runs, replicate by replicate (those both
/// have), unit by unit: at the last point, or (`matched`) at the largest KL both reach in
/// that replicate, interpolated; and those KLs.
fn pointwise(a: &BTreeMap<u64, Pooled>, b: &BTreeMap<u64, Pooled>, matched: bool) -> (Vec<Vec<f64>>, Vec<f64>) {
    let mut kls = Vec::new();
    let per = a
        .iter()
        .filter_map(|(r, pa)| {
            let pb = b.get(r)?;
            if !matched {
                return paired(pa.gold.last()?, pb.gold.last()?);
            }
            let kl = max_kl_of(pa).min(max_kl_of(pb));
            if !kl.is_finite() || kl <= 0.0 {
                return None;
            }
            kls.push(kl);
            paired(&pooled_at_kl(pa, kl)?, &pooled_at_kl(pb, kl)?)
        })
        .collect();
    (per, kls)
}

/// An ensemble id's proxies (size, data size, noise) and source: `s/d500/n0.25/finetune` →
/// (`s/d500/n0.25`, `finetune`); no source is `scratch`.
pub fn ensemble_source(ensemble: &str) -> (&str, &str) {
    match ensemble.match_indices('/').nth(2) {
        Some((i, _)) => (&ensemble[..i], &ensemble[i + 1..]),
        None => (ensemble, "scratch"),
    }
}

/// The sources an ensemble id may end in, in the grid's order (`config::Source::ALL`'s
/// names; a test holds them equal).
pub const SOURCES: [&str; 6] = ["scratch", "finetune", "pretrain", "bootstrap", "multihead", "warm"];

/// The rank of a source in the grid's order (unknown names last).
fn source_rank(source: &str) -> usize {
    SOURCES.iter().position(|s| *s == source).unwrap_or(usize::MAX)
}

/// Which lines of two ensembles of one method, β and proxies a `source` claim compares: the
/// same aggregator group in both; a one-model ensemble (WARM) against every line of the
/// other; a multi-head ensemble's lines against the other's single models (its cost-matched
/// alternative: one trunk's training).
fn source_pairs<'a>(a: (&str, &'a [String]), b: (&str, &'a [String])) -> Vec<(&'a str, &'a str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for ga in a.1 {
        for gb in b.1 {
            let one_model = a.1.len() == 1 || b.1.len() == 1;
            let cost_matched = a.0 == "multihead" && gb == "single";
            if (ga == gb || one_model || cost_matched) && !out.contains(&(ga.as_str(), gb.as_str())) {
                out.push((ga, gb));
            }
        }
    }
    out
}

/// Gaps between ensembles that differ only in where their members differ (`source`): for
/// every method and β, every two sources of the same proxies, the later source of the grid's
/// order (a mitigation: pretraining, pretraining seeds, bootstrap, heads, weight averaging)
/// against the earlier on the lines [`source_pairs`] names — at the last point and, where
/// KL is measured, at the largest KL both reach — paired unit by unit (the same prompts:
/// best-of-n's pool, the policy methods' evaluation prompts).
fn source_gaps(by: &BTreeMap<Setting, BTreeMap<(u8, String), Reps>>, traits: &BTreeMap<&str, Traits>) -> Vec<Claim> {
    // (method, proxies, β) → source → group → pooled replicates
    type Lines = BTreeMap<String, BTreeMap<u64, Pooled>>;
    let mut sets: BTreeMap<(&str, &str, Option<u64>), Vec<(&str, Lines)>> = BTreeMap::new();
    for ((method, ensemble, beta), groups) in by {
        let (proxies, source) = ensemble_source(ensemble);
        let lines: Lines = groups.iter().map(|((_, g), reps)| (g.clone(), pooled(reps))).collect();
        sets.entry((method.as_str(), proxies, *beta)).or_default().push((source, lines));
    }
    let mut out = Vec::new();
    for ((method, proxies, beta), mut sources) in sets {
        sources.sort_by_key(|(s, _)| source_rank(s));
        let Traits { label, kl_measured, .. } = traits[method];
        let beta = beta.map(f64::from_bits);
        for (j, (sb, lb)) in sources.iter().enumerate() {
            for (sa, la) in &sources[j + 1..] {
                let (ka, kb): (Vec<String>, Vec<String>) = (la.keys().cloned().collect(), lb.keys().cloned().collect());
                for (ga, gb) in source_pairs((sa, &ka), (sb, &kb)) {
                    let (pa, pb) = (&la[ga], &lb[gb]);
                    let all: BTreeSet<u64> = pa.keys().chain(pb.keys()).copied().collect();
                    let missing: Vec<u64> = all.iter().filter(|r| !(pa.contains_key(r) && pb.contains_key(r))).copied().collect();
                    for matched in [false, true] {
                        if matched && !kl_measured {
                            continue;
                        }
                        let (per, kls) = pointwise(pa, pb, matched);
                        if per.is_empty() {
                            continue;
                        }
                        let (at, words) = if matched {
                            (format!("matched kl (mean {:.2} nats)", mean(&kls)), "at matched KL".to_string())
                        } else {
                            ("final".to_string(), "at the last point".to_string())
                        };
                        let m = Measured {
                            per,
                            estimand: "paired, per unit",
                            note: format!("{sa} ensemble's {ga} − {sb} ensemble's {gb}"),
                            too_few: false,
                            grid: None,
                        };
                        let Some(jd) = judged(m, all.len(), None) else { continue };
                        let claim = format!("{label}: {sa} {ga} keeps more gold than {sb} {gb} {words} ({proxies}{})", beta_text(beta));
                        let row = Row { kind: "source", method, ensemble: &format!("{proxies}/{sa}"), aggregator: ga, baseline: format!("{sb} {gb}"), kl_penalty: beta, at };
                        out.push(Claim::exploratory(claim, row, jd, all.len(), missing.clone()));
                    }
                }
            }
        }
    }
    out
}

/// Largest KL of a pooled run.
fn max_kl_of(p: &Pooled) -> f64 {
    p.kl.iter().copied().filter(|k| k.is_finite()).fold(f64::NEG_INFINITY, f64::max)
}

/// [`gold_at_kl`] of a pooled run.
fn pooled_at_kl(p: &Pooled, at: f64) -> Option<Vec<f64>> {
    units_at_kl(&p.kl, &p.gold, at)
}

/// Whether a selector picks a claim: kind, method, aggregator (`uwo` matches any λ, `uwo+par`
/// any λ shaped by PAR) and
/// baseline as given; the ensemble as given or, if unset, the smallest one (the first in
/// `smallest`); β as given or, if unset, the smallest one of the method; `at` as given or,
/// for a gap, `final`.
fn selects(s: &ClaimSelector, c: &Claim, smallest: &str, least_beta: Option<f64>) -> bool {
    let any_lambda = || {
        let ((claim, claim_shaping), (asked, asked_shaping)) = (shaping::split(&c.aggregator), shaping::split(&s.aggregator));
        !asked.contains('(') && claim.split('(').next() == Some(asked) && claim_shaping == asked_shaping
    };
    let agg_ok = c.aggregator == s.aggregator || (c.kind != "stop" && any_lambda());
    let at_ok = match &s.at {
        Some(a) => c.at == *a || (a == "matched" && c.at.starts_with("matched")),
        None => !(c.kind == "gap" || c.kind == "source") || c.at == "final",
    };
    let ens_ok = c.kind == "stop" || s.ensemble.as_deref().map_or(c.ensemble == smallest, |e| c.ensemble == e);
    let beta_ok = c.kind == "stop" || s.kl_penalty.or(least_beta) == c.kl_penalty;
    c.kind == s.kind && c.method == s.method && agg_ok && c.baseline == s.baseline && at_ok && ens_ok && beta_ok
}

/// For each of `settings.primary`, the index of the claim it picks (the first that matches);
/// a selector without `ensemble` is about `settings.first_ensemble`.
pub fn primary_indices(claims: &[Claim], settings: &Settings) -> Vec<Option<usize>> {
    let smallest = if settings.first_ensemble.is_empty() { smallest_ensemble(claims) } else { settings.first_ensemble.clone() };
    settings
        .primary
        .iter()
        .map(|s| {
            let least_beta = claims
                .iter()
                .filter(|c| c.method == s.method)
                .filter_map(|c| c.kl_penalty)
                .fold(None, |m: Option<f64>, b| Some(m.map_or(b, |m| m.min(b))));
            claims.iter().position(|c| selects(s, c, &smallest, least_beta))
        })
        .collect()
}

/// The ensemble the default primary questions are about when the study's config is not at
/// hand: a guess from the ensemble ids (`SIZE/dDATA/nNOISE`): the first size every method's
/// claims use (best-of-n reads every size, PPO the first by default), else the first
/// claim's; among its ensembles the fewest training pairs, then the lowest noise.
pub fn smallest_ensemble(claims: &[Claim]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for c in claims {
        if !c.ensemble.is_empty() && !seen.contains(&c.ensemble.as_str()) {
            seen.push(&c.ensemble);
        }
    }
    let parse = |e: &str| -> (u64, f64) {
        let mut it = e.split('/').skip(1);
        let d = it.next().and_then(|d| d.strip_prefix('d')).and_then(|d| d.parse().ok()).unwrap_or(u64::MAX);
        let n = it.next().and_then(|n| n.strip_prefix('n')).and_then(|n| n.parse().ok()).unwrap_or(f64::INFINITY);
        (d, n)
    };
    let size = |e: &str| e.split('/').next().unwrap_or("").to_string();
    let methods: BTreeSet<&str> = claims.iter().filter(|c| !c.ensemble.is_empty()).map(|c| c.method.as_str()).collect();
    let used_by_all = |s: &String| methods.iter().all(|m| claims.iter().any(|c| c.method == *m && !c.ensemble.is_empty() && size(&c.ensemble) == *s));
    let first_size = seen.iter().map(|e| size(e)).find(used_by_all).or(seen.first().map(|e| size(e))).unwrap_or_default();
    seen.iter()
        .filter(|e| size(e) == first_size)
        .min_by(|a, b| {
            let (x, y) = (parse(a), parse(b));
            x.0.cmp(&y.0).then(x.1.total_cmp(&y.1))
        })
        .map(|e| e.to_string())
        .unwrap_or_default()
}

/// Families, p-values, adjusted verdicts and, for inconclusive primary claims, power lines.
fn judge(claims: &mut [Claim], settings: &Settings) {
    let primary: BTreeSet<usize> = primary_indices(claims, settings).into_iter().flatten().collect();
    for (i, c) in claims.iter_mut().enumerate() {
        c.family = if primary.contains(&i) { Family::Primary } else { Family::Exploratory };
        c.p_value = match &c.worst_case {
            None => c.interval.p_value,
            Some(w) if w.direction().signum() != c.interval.direction().signum() => 1.0,
            Some(w) => c.interval.p_value.max(w.p_value),
        };
    }
    let adjust = |fam: Family, f: fn(&[f64]) -> Vec<f64>, claims: &mut [Claim]| {
        let idx: Vec<usize> = (0..claims.len()).filter(|&i| claims[i].family == fam).collect();
        let p: Vec<f64> = idx.iter().map(|&i| claims[i].p_value).collect();
        for (&i, q) in idx.iter().zip(f(&p)) {
            claims[i].p_adjusted = q;
        }
    };
    adjust(Family::Primary, stats::holm, claims);
    adjust(Family::Exploratory, stats::benjamini_hochberg, claims);
    let m = claims.iter().filter(|c| c.family == Family::Primary && c.p_value.is_finite()).count().max(1);
    for c in claims.iter_mut() {
        let sig = c.p_adjusted < ALPHA;
        // The side of 0 the interval lies on (its middle: the estimate for a plain t
        // interval; for one simultaneous over a peak's candidates, the side its test found).
        let side = c.interval.direction();
        // And never a verdict its own interval contradicts.
        c.verdict = match (sig, side > 0.0) {
            (true, true) if c.interval.low > 0.0 => "holds",
            (true, false) if side < 0.0 && c.interval.high < 0.0 => "reversed",
            _ => "inconclusive",
        }
        .to_string();
        if !c.missing.is_empty() {
            let w = c.worst_case.map(|w| format!("{:.3} [{:.3}, {:.3}]", w.estimate, w.low, w.high)).unwrap_or_else(|| "not measurable".into());
            let list = c.missing.iter().map(|r| format!("r{r}")).collect::<Vec<_>>().join(", ");
            let more = format!("runs missing in {list}; with them at the worst gold any run reached: {w}");
            c.note = if c.note.is_empty() { more } else { format!("{}; {more}", c.note) };
        }
        if c.family == Family::Primary && c.verdict == "inconclusive" && c.interval.over == Over::Replicates && c.interval.sd.is_finite() {
            // Holm's strictest level, and for a statistic at a peak, Bonferroni's over its
            // candidates (the power of the interval it is judged by, at the estimated peak).
            let alpha = ALPHA / m as f64 / c.interval.candidates as f64;
            let need = |effect: f64| stats::replicates_needed(effect, c.interval.sd, alpha, settings.power, 100_000);
            c.replicates_needed = need(c.interval.estimate);
            c.replicates_needed_min_effect = need(settings.smallest_effect);
            if let Some(cost) = &settings.cost {
                c.cpu_hours_needed = c.replicates_needed.map(|n| cost.cpu_hours(n));
                c.cpu_hours_needed_min_effect = c.replicates_needed_min_effect.map(|n| cost.cpu_hours(n));
            }
        }
    }
}

/// Per replicate, the unit-by-unit mean over every curve of `method` of `rule`'s regret
/// contributions (curves where the rule does not apply are left out; a replicate where it
/// applies to none is left out), and how many curves it applies to. `oracle` gives each
/// curve's stop chosen without its own gold (per half).
fn rule_regret(curves: &[&UnitCurve], rule: StopRule, oracle: &dyn Fn(&UnitCurve) -> Option<[usize; 2]>) -> (BTreeMap<u64, Vec<f64>>, usize) {
    let mut by: BTreeMap<u64, Vec<Vec<f64>>> = BTreeMap::new();
    let mut applied = 0;
    for c in curves {
        if let Some(u) = oracle(c).and_then(|o| regret_units_at(c, rule, o)) {
            by.entry(c.replicate).or_default().push(u);
            applied += 1;
        }
    }
    (by.into_iter().filter_map(|(r, parts)| Some((r, pool(&parts)?))).collect(), applied)
}

/// Leave-one-replicate-out choice among rules, from each rule's mean regret per replicate
/// (`regret[rule][replicate]`, every rule measured on every replicate): for each replicate,
/// the rule with the least total regret on the others (ties: the earlier rule), graded on
/// the left-out one. Returns the graded values and each fold's chosen rule; `None` for fewer
/// than two replicates or no rule.
pub fn cross_validate(regret: &[Vec<f64>]) -> Option<(Vec<f64>, Vec<usize>)> {
    let reps = regret.first()?.len();
    if reps < 2 || regret.iter().any(|r| r.len() != reps) {
        return None;
    }
    let mut graded = Vec::new();
    let mut chosen = Vec::new();
    for left in 0..reps {
        let score = |i: usize| (0..reps).filter(|&q| q != left).map(|q| regret[i][q]).sum::<f64>();
        let best = (0..regret.len()).min_by(|&a, &b| score(a).total_cmp(&score(b)).then(a.cmp(&b)))?;
        graded.push(regret[best][left]);
        chosen.push(best);
    }
    Some((graded, chosen))
}

/// Where a stop is graded against, for each curve of one method: the expected curve's peak
/// (its group's mean curve over the OTHER replicates), or in a one-replicate study the run's
/// own peak chosen on the other half of its units.
struct Oracle {
    study: usize,
    /// (ensemble, group, β, replicate) → the point's label.
    peak_at: BTreeMap<(String, String, Option<u64>, u64), String>,
}

impl Oracle {
    fn of(cs: &[&UnitCurve]) -> Oracle {
        let study = cs.iter().map(|c| c.replicate).collect::<BTreeSet<_>>().len();
        let mut groups: BTreeMap<(String, String, Option<u64>), Reps> = BTreeMap::new();
        for c in cs {
            groups.entry((c.ensemble.clone(), group(c), c.kl_penalty.map(f64::to_bits))).or_default().entry(c.replicate).or_default().push(c);
        }
        let mut peak_at = BTreeMap::new();
        if study >= 2 {
            for (id, reps) in &groups {
                let p = pooled(reps);
                let list: Vec<(&u64, &Pooled)> = p.iter().collect();
                let at = common_points(list.iter().map(|(_, p)| *p));
                if at.is_empty() {
                    continue;
                }
                let means: Vec<Vec<f64>> = list.iter().map(|(_, p)| p.at_points(&at).means()).collect();
                if let Some(picks) = loro_peaks(&means) {
                    for ((r, _), k) in list.iter().zip(picks) {
                        peak_at.insert((id.0.clone(), id.1.clone(), id.2, **r), at[k].clone());
                    }
                }
            }
        }
        Oracle { study, peak_at }
    }

    /// The oracle's point for each half of `c`'s units (the same point for both halves when
    /// it is the expected curve's).
    fn pick(&self, c: &UnitCurve) -> Option<[usize; 2]> {
        if self.study < 2 {
            return Some([peak_index(&half_curve(&c.gold, 0))?, peak_index(&half_curve(&c.gold, 1))?]);
        }
        let at = self.peak_at.get(&(c.ensemble.clone(), group(c), c.kl_penalty.map(f64::to_bits), c.replicate))?;
        let k = c.at.iter().position(|a| a == at)?;
        Some([k, k])
    }
}

/// The gold a method's curves gain at the oracle's stop over their first point (π_ref), the
/// mean over every curve of each replicate, then across replicates: the denominator the
/// stopping rules' regret is read against.
pub fn peak_gain(curves: &[UnitCurve], method: &str) -> Option<Interval> {
    let cs: Vec<&UnitCurve> = curves.iter().filter(|c| c.method == method).collect();
    let oracle = Oracle::of(&cs);
    let mut by: BTreeMap<u64, Vec<Vec<f64>>> = BTreeMap::new();
    for c in &cs {
        if let Some(o) = oracle.pick(c) {
            by.entry(c.replicate).or_default().push((0..c.units()).map(|u| c.gold[o[1 - half_of(u)]][u] - c.gold[0][u]).collect());
        }
    }
    let per: Vec<Vec<f64>> = by.into_values().filter_map(|parts| pool(&parts)).collect();
    across_of(&per, oracle.study)
}

/// The stopping claims with default wording (see [`stop_claims_with`]).
pub fn stop_claims(curves: &[UnitCurve]) -> Vec<Claim> {
    stop_claims_with(curves, "")
}

/// The stopping claims of each method: every rule's regret against a stop at the expected
/// curve's peak (chosen on the other replicates; in a one-replicate study, on the other half
/// of the run's units), then the cross-validated choice. `heldout` says what the
/// `heldout_peak` rule read.
pub fn stop_claims_with(curves: &[UnitCurve], heldout: &str) -> Vec<Claim> {
    let mut out = Vec::new();
    for (method, traits) in traits_by_method(curves) {
        let cs: Vec<&UnitCurve> = curves.iter().filter(|c| c.method == method).collect();
        let reps: Vec<u64> = cs.iter().map(|c| c.replicate).collect::<BTreeSet<_>>().into_iter().collect();
        let study = reps.len();
        let oracle = Oracle::of(&cs);
        let oracle = |c: &UnitCurve| oracle.pick(c);
        let estimand = if study < 2 { "one run's curve" } else { "expected curve" };
        let rules = StopRule::all();
        let (regrets, applied): (Vec<BTreeMap<u64, Vec<f64>>>, Vec<usize>) = rules.iter().map(|&r| rule_regret(&cs, r, &oracle)).unzip();
        let read = |rule: &StopRule| -> String {
            if matches!(rule, StopRule::Rule(Rule::HeldoutPeak)) && !heldout.is_empty() {
                format!("reads {heldout}")
            } else {
                String::new()
            }
        };
        for (rule, per) in rules.iter().zip(&regrets) {
            let per: Vec<Vec<f64>> = per.values().cloned().collect();
            if let Some(iv) = across_of(&per, study) {
                out.push(stop_claim(
                    method,
                    traits.label,
                    &rule.label(),
                    "cross-fitted",
                    estimand,
                    iv,
                    study,
                    format!("stopping by {} gives up gold against a stop at the expected curve's peak", rule.label()),
                    read(rule),
                ));
            }
        }
        // Leave-one-replicate-out: only rules that apply to every curve compete, so each is
        // graded on the same curves.
        let complete: Vec<usize> = (0..rules.len())
            .filter(|&i| applied[i] == cs.len() && reps.iter().all(|r| regrets[i].contains_key(r)))
            .collect();
        if reps.len() < 2 || complete.is_empty() {
            continue;
        }
        let matrix: Vec<Vec<f64>> = complete.iter().map(|&i| reps.iter().map(|r| mean(&regrets[i][r])).collect()).collect();
        let Some((graded, folds)) = cross_validate(&matrix) else { continue };
        // The rule to recommend: chosen on every replicate (its regret is the one graded
        // above, fold by fold, never on the replicates that chose it).
        let all = (0..matrix.len())
            .min_by(|&a, &b| matrix[a].iter().sum::<f64>().total_cmp(&matrix[b].iter().sum::<f64>()).then(a.cmp(&b)))
            .expect("complete is not empty");
        let mut count: BTreeMap<usize, usize> = BTreeMap::new();
        for &f in &folds {
            *count.entry(f).or_default() += 1;
        }
        let mut counted: Vec<(usize, usize)> = count.into_iter().collect();
        counted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let fold_list = counted
            .iter()
            .map(|(i, n)| format!("{} in {n} of {}", rules[complete[*i]].label(), folds.len()))
            .collect::<Vec<_>>()
            .join(", ");
        if let Some(iv) = t_interval(&graded, Over::Replicates, reps.len()) {
            let recommended = rules[complete[all]];
            let mut note = format!("folds chose {fold_list}; recommended (chosen on all {} replicates): {}", reps.len(), recommended.label());
            let r = read(&recommended);
            if !r.is_empty() {
                note = format!("{note}, which {r}");
            }
            out.push(stop_claim(
                method,
                traits.label,
                &recommended.label(),
                "cross-validated",
                estimand,
                iv,
                study,
                "the rule chosen by leave-one-replicate-out cross-validation, graded on the replicate left out, gives up gold against a stop at the expected curve's peak".into(),
                note,
            ));
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn stop_claim(method: &str, label: &str, rule: &str, at: &str, estimand: &str, iv: Interval, study: usize, text: String, note: String) -> Claim {
    let row = Row { kind: "stop", method, ensemble: "", aggregator: rule, baseline: String::new(), kl_penalty: None, at: at.to_string() };
    let j = Judged { interval: iv, worst_case: None, estimand: estimand.to_string(), note };
    Claim::exploratory(format!("{label}: {text}"), row, j, study, Vec::new())
}

/// d* by proxy size: the peak of the Gao form fitted to the expected gold curve of the single
/// members (mean over replicates of each replicate's pooled members, gain over the first
/// point, against the mean KL per point), with a jackknife interval over replicates.
#[derive(Debug, Clone, PartialEq)]
pub struct DstarRow {
    pub method: String,
    pub ensemble: String,
    pub kl_penalty: Option<f64>,
    /// Replicates averaged.
    pub replicates: usize,
    /// The full fit's d* (sqrt-nats), or `None` when its peak is not inside the measured KL
    /// range.
    pub d_star: Option<f64>,
    /// R² of that fit (about the mean).
    pub r2: Option<f64>,
    /// Jackknife 95% interval (t, R − 1 degrees of freedom) over the leave-one-out fits;
    /// `None` with fewer than 3 replicates or where a leave-one-out fit has no peak in range.
    pub interval: Option<Interval>,
}

/// The expected curve of `reps` (mean over replicates per common point): (KL, gold gain over
/// the first point).
fn expected_curve(reps: &[&Pooled]) -> Option<(Vec<f64>, Vec<f64>)> {
    let at = common_points(reps.iter().copied());
    if at.len() < 3 {
        return None;
    }
    let aligned: Vec<Pooled> = reps.iter().map(|p| p.at_points(&at)).collect();
    let kl: Vec<f64> = (0..at.len()).map(|k| aligned.iter().map(|p| p.kl[k].max(0.0)).sum::<f64>() / aligned.len() as f64).collect();
    let means: Vec<Vec<f64>> = aligned.iter().map(Pooled::means).collect();
    let gold: Vec<f64> = (0..at.len()).map(|k| means.iter().map(|m| m[k] - m[0]).sum::<f64>() / means.len() as f64).collect();
    Some((kl, gold))
}

/// The Gao fit of the expected curve of `reps`: (fit, largest KL measured).
fn expected_fit(form: crate::stats::fit::Form, reps: &[&Pooled]) -> Option<(crate::stats::fit::FormFit, f64)> {
    let (kl, gold) = expected_curve(reps)?;
    let max = kl.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some((crate::stats::fit::fit_form(form, &kl, &gold)?, max))
}

/// A fitted peak inside the measured KL range.
fn in_range(f: &crate::stats::fit::FormFit, max_kl: f64) -> Option<f64> {
    f.d_star.filter(|d| d.is_finite() && d * d <= max_kl.max(0.0))
}

/// [`DstarRow`]s: every method × ensemble × β with single members (or a `direct` curve).
pub fn dstar(curves: &[UnitCurve]) -> Vec<DstarRow> {
    let traits = traits_by_method(curves);
    expected_groups(curves, true)
        .into_iter()
        .map(|((method, ensemble, beta, _), reps)| {
            let list: Vec<&Pooled> = reps.values().collect();
            let form = traits[method.as_str()].form;
            let full = expected_fit(form, &list);
            let d_star = full.as_ref().and_then(|(f, m)| in_range(f, *m));
            let interval = if list.len() >= MIN_REPLICATES_PEAK && d_star.is_some() {
                let n = list.len() as f64;
                let loo: Option<Vec<f64>> = (0..list.len())
                    .map(|r| {
                        let others: Vec<&Pooled> = list.iter().enumerate().filter(|&(q, _)| q != r).map(|(_, p)| *p).collect();
                        let (f, m) = expected_fit(form, &others)?;
                        in_range(&f, m)
                    })
                    .collect();
                loo.and_then(|loo| {
                    let d = d_star.expect("checked");
                    let pseudo: Vec<f64> = loo.iter().map(|x| n * d - (n - 1.0) * x).collect();
                    t_interval(&pseudo, Over::Replicates, list.len()).map(|mut iv| {
                        // Centre on the full fit's d* (the jackknife's bias correction is
                        // not applied to the estimate).
                        let half = (iv.high - iv.low) / 2.0;
                        iv.estimate = d;
                        iv.low = d - half;
                        iv.high = d + half;
                        iv
                    })
                })
            } else {
                None
            };
            DstarRow {
                method,
                ensemble,
                kl_penalty: beta.map(f64::from_bits),
                replicates: list.len(),
                d_star,
                r2: full.map(|(f, _)| f.r2),
                interval,
            }
        })
        .collect()
}

/// The Gao fit of every expected curve: method × ensemble × β × aggregator group.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectedFit {
    pub method: String,
    pub ensemble: String,
    pub kl_penalty: Option<f64>,
    pub aggregator: String,
    pub replicates: usize,
    pub r2: Option<f64>,
    /// Fitted peak inside the measured range (sqrt-nats).
    pub d_star: Option<f64>,
}

/// [`ExpectedFit`]s of every group.
pub fn expected_fits(curves: &[UnitCurve]) -> Vec<ExpectedFit> {
    let traits = traits_by_method(curves);
    expected_groups(curves, false)
        .into_iter()
        .map(|((method, ensemble, beta, g), reps)| {
            let list: Vec<&Pooled> = reps.values().collect();
            let fit = expected_fit(traits[method.as_str()].form, &list);
            ExpectedFit {
                d_star: fit.as_ref().and_then(|(f, m)| in_range(f, *m)),
                r2: fit.map(|(f, _)| f.r2),
                method,
                ensemble,
                kl_penalty: beta.map(f64::from_bits),
                aggregator: g,
                replicates: list.len(),
            }
        })
        .collect()
}

type GroupKey = (String, String, Option<u64>, String);

/// Pooled runs per replicate of every (method, ensemble, β, group), in claim order; only the
/// single members' (and a `direct` method's, which optimizes no proxy) if `singles`.
fn expected_groups(curves: &[UnitCurve], singles: bool) -> Vec<(GroupKey, BTreeMap<u64, Pooled>)> {
    let mut by: BTreeMap<(String, String, Option<u64>, (u8, String)), Reps> = BTreeMap::new();
    for c in curves.iter().filter(|c| !singles || c.is_single() || c.aggregator == "direct") {
        by.entry((c.method.clone(), c.ensemble.clone(), c.kl_penalty.map(f64::to_bits), group_rank(&group(c))))
            .or_default()
            .entry(c.replicate)
            .or_default()
            .push(c);
    }
    by.into_iter().map(|((m, e, b, (_, g)), reps)| ((m, e, b, g), pooled(&reps))).filter(|(_, p)| !p.is_empty()).collect()
}
