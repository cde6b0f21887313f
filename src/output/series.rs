//! What the curve figures draw, computed apart from the drawing: the EXPECTED curve of each
//! line across replicates (the curve the conclusions' verdicts are about), its 95% band across
//! replicates, and each replicate's own curve.
//!
//! A line is one (method, ensemble, aggregator, λ, β). Its points are aligned across
//! replicates by the point of optimization (best-of-n: n; PPO: the evaluation step) and kept
//! where every replicate of the line has one (as the conclusions align them). At each such
//! point:
//!
//! - **x** = sqrt(mean over replicates of max(KL, 0)): the square root of the replicates' mean
//!   KL (KL clamped at 0 as the conclusions clamp it), not the mean of their square roots.
//!   Best-of-n's KL is the analytic bound of n, the same in every replicate;
//! - **mean** = the mean over replicates of the value (gold or the aggregated proxy);
//! - **band** = mean ± t(0.975, R − 1) · sd / √R, sd the sample deviation across the R
//!   replicates (the Student-t interval of [`crate::stats::conclusions::t975`]); none with R = 1;
//! - **x spread** = the smallest and largest of the replicates' sqrt(max(KL, 0)).
//!
//! Points are in the order of optimization (n or step), so a line follows the optimizer and
//! never runs backwards through its points.

use crate::output::table::CurveRow;
use crate::stats::curve::Line;

/// Which value of a curve row a series carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// `gold`: gold reward (standardized).
    Gold,
    /// `proxy`: the aggregated proxy reward (standardized).
    Proxy,
}

impl Measure {
    fn of(self, r: &CurveRow) -> f64 {
        match self {
            Measure::Gold => r.gold,
            Measure::Proxy => r.measures.proxy,
        }
    }
}

/// One point of an expected curve.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectedPoint {
    /// Best-of-n: n; PPO: the evaluation step.
    pub at: u64,
    /// sqrt(mean over replicates of max(KL, 0)), nats^½.
    pub x: f64,
    /// The smallest and largest replicate's sqrt(max(KL, 0)) at this point.
    pub x_min: f64,
    pub x_max: f64,
    /// Mean over replicates.
    pub mean: f64,
    /// 95% band across replicates, `(low, high)` = mean ∓ t(0.975, R − 1)·sd/√R; `None`
    /// with one replicate.
    pub band: Option<(f64, f64)>,
    /// One replicate and gold only: that run's standard error over prompts (what the
    /// figures show in place of a band).
    pub prompt_se: Option<f64>,
}

/// One replicate's own curve: its points in order of optimization.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicateCurve {
    pub replicate: u64,
    /// (sqrt(max(KL, 0)), value) of this replicate, n or step ascending.
    pub points: Vec<(f64, f64)>,
}

/// The expected curve of one line and the curves it averages.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectedSeries {
    pub line: Line,
    /// Replicates averaged (R).
    pub replicates: usize,
    /// Points every replicate has, in order of optimization.
    pub points: Vec<ExpectedPoint>,
    /// Every replicate's curve (all its points), replicate ascending.
    pub curves: Vec<ReplicateCurve>,
}

/// Mean and 95% Student-t interval across replicates of `values`: `(mean, Some((low, high)))`,
/// the interval mean ∓ t(0.975, R − 1)·sd/√R; `(value, None)` for one value; `(NaN, None)` for
/// none.
pub fn replicate_interval(values: &[f64]) -> (f64, Option<(f64, f64)>) {
    if values.is_empty() {
        return (f64::NAN, None);
    }
    let (mean, sd) = crate::stats::mean_sd(values);
    if values.len() < 2 {
        return (mean, None);
    }
    let half = crate::stats::conclusions::t975(values.len() - 1) * sd / (values.len() as f64).sqrt();
    (mean, Some((mean - half, mean + half)))
}

/// The point of optimization of a row: n (best-of-n) or the step (PPO).
fn at(r: &CurveRow) -> u64 {
    r.n.or(r.step).unwrap_or(0)
}

/// The expected series of every line of `rows` (any methods), in order of each line's first
/// row. See the module documentation for what each number is.
pub fn expected_series(rows: &[CurveRow], measure: Measure) -> Vec<ExpectedSeries> {
    let mut groups: Vec<(String, Vec<&CurveRow>)> = Vec::new();
    for r in rows {
        let k = r.line_key();
        match groups.iter_mut().find(|(g, _)| *g == k) {
            Some((_, v)) => v.push(r),
            None => groups.push((k, vec![r])),
        }
    }
    groups
        .into_iter()
        .map(|(_, members)| {
            let mut reps: Vec<u64> = members.iter().map(|r| r.replicate).collect();
            reps.sort_unstable();
            reps.dedup();
            let curves: Vec<ReplicateCurve> = reps
                .iter()
                .map(|&rep| {
                    let mut own: Vec<&&CurveRow> = members.iter().filter(|r| r.replicate == rep).collect();
                    own.sort_by_key(|r| at(r));
                    ReplicateCurve {
                        replicate: rep,
                        points: own.iter().map(|r| (r.kl.max(0.0).sqrt(), measure.of(r))).collect(),
                    }
                })
                .collect();
            let mut ats: Vec<u64> = members.iter().map(|r| at(r)).collect();
            ats.sort_unstable();
            ats.dedup();
            let points = ats
                .into_iter()
                .filter_map(|a| {
                    // One row per replicate here (a point listed twice is refused on reading).
                    let here: Vec<&CurveRow> = reps
                        .iter()
                        .map(|&rep| members.iter().copied().find(|r| r.replicate == rep && at(r) == a))
                        .collect::<Option<Vec<_>>>()?;
                    let kls: Vec<f64> = here.iter().map(|r| r.kl.max(0.0)).collect();
                    let roots: Vec<f64> = kls.iter().map(|k| k.sqrt()).collect();
                    let values: Vec<f64> = here.iter().map(|r| measure.of(r)).collect();
                    let (mean, band) = replicate_interval(&values);
                    Some(ExpectedPoint {
                        at: a,
                        x: (kls.iter().sum::<f64>() / kls.len() as f64).sqrt(),
                        x_min: roots.iter().copied().fold(f64::INFINITY, f64::min),
                        x_max: roots.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                        mean,
                        band,
                        prompt_se: (here.len() == 1 && measure == Measure::Gold).then(|| here[0].gold_se),
                    })
                })
                .collect();
            let first = members[0];
            ExpectedSeries {
                line: first.line(),
                replicates: reps.len(),
                points,
                curves,
            }
        })
        .collect()
}

/// How many replicates `series` average, as a figure's title says it: `one replicate`,
/// `mean of 12 replicates` or `mean of 3–4 replicates` (lines differ).
pub fn replicates_phrase(series: &[&ExpectedSeries]) -> String {
    let lo = series.iter().map(|s| s.replicates).min().unwrap_or(0);
    let hi = series.iter().map(|s| s.replicates).max().unwrap_or(0);
    match (lo, hi) {
        (1, 1) => "one replicate".to_string(),
        (a, b) if a == b => format!("mean of {a} replicates"),
        (a, b) => format!("mean of {a}–{b} replicates"),
    }
}

/// A tick label: plotters' own formatting of `v`, but never a negative zero (`-0.0` reads 0.0).
pub fn tick_label(v: f64) -> String {
    let s = plotters::data::float::FloatPrettyPrinter {
        allow_scientific: false,
        min_decimal: 1,
        max_decimal: 5,
    }
    .print(v);
    match s.strip_prefix('-') {
        Some(rest) if rest.chars().all(|c| c == '0' || c == '.') => rest.to_string(),
        _ => s,
    }
}
