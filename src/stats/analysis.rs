//! The analysis of saved curves, from rows alone: points grouped into curves, a Gao et al.
//! fit of every curve, scaling fits of the fitted coefficients across proxy and data size,
//! every gold-free stopping rule with its regret, and the aggregators compared at matched KL
//! budgets. The report turns these rows into tables, a figure and `report.md`.
//!
//! Conventions shared by every function here:
//! - a curve is every row with the same (method, ensemble, aggregator with λ, β): the key of
//!   [`CurveRow::curve_key`]; its points are ordered by n (best-of-n) or by step (PPO), and
//!   KL is read as measured but clamped at ≥ 0 (a k1 estimate can dip below 0 by sampling
//!   noise near π_ref);
//! - the gain of a curve is its value minus its value at the first point (n = 1 or step 0:
//!   π_ref itself), so R(0) = 0 as in Gao et al.;
//! - gold is in standardized units (π_ref mean 0, std 1), KL in nats;
//! - output order is deterministic: curves sort by method, label noise, proxy size, data
//!   size, ensemble, β, aggregator (members first, then mean, median, wco, uwo, mean_std), λ.

use std::cmp::Ordering;

use crate::stats::fit::{fit_form, linear_fit, Form, FormFit, LinearFit};
use crate::stats::shaping::Objective;
use crate::stats::curve::{CurveRow, Line, Traits};
use crate::stats::stopping::{at_kl, regret, Regret, Rule, Series};

/// What identifies a curve: its line (method, ensemble and its proxies, aggregator, β) and
/// its replicate.
#[derive(Debug, Clone, PartialEq)]
pub struct CurveId {
    /// [`CurveRow::curve_key`]: `METHOD/ENSEMBLE/AGGREGATOR[(λ)][/bβ]`, `/rR` for R > 0.
    pub key: String,
    pub line: Line,
    pub replicate: u64,
}

impl CurveId {
    fn of(r: &CurveRow) -> Self {
        Self {
            key: r.curve_key(),
            line: r.line(),
            replicate: r.replicate,
        }
    }

    /// The aggregator with its λ and shaping: `uwo(0.5)`, `mean`, `mean+par`.
    pub fn aggregator_label(&self) -> String {
        self.line.aggregator.label()
    }

    /// The member index of an unshaped single-member curve (`member3` → 3).
    pub fn single_member(&self) -> Option<usize> {
        self.line.aggregator.member()
    }

    /// The sort order of the module doc.
    fn order(&self, other: &Self) -> Ordering {
        self.line.method
            .cmp(&other.line.method)
            .then(self.line.label_noise.total_cmp(&other.line.label_noise))
            .then(self.line.proxy_params.cmp(&other.line.proxy_params))
            .then(self.line.proxy_size.cmp(&other.line.proxy_size))
            .then(self.line.data_size.cmp(&other.line.data_size))
            .then(self.line.ensemble.cmp(&other.line.ensemble))
            .then(cmp_opt(self.line.kl_penalty, other.line.kl_penalty))
            .then(self.line.aggregator.order(&other.line.aggregator))
            .then(self.key.cmp(&other.key))
    }
}

/// None first, then by value.
fn cmp_opt(a: Option<f64>, b: Option<f64>) -> Ordering {
    match (a, b) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (a, b) => a.is_some().cmp(&b.is_some()),
    }
}

/// One curve: its identity and its points in optimization order (n or step ascending).
#[derive(Debug, Clone)]
pub struct Curve {
    pub id: CurveId,
    /// Its method's traits (the Gao form its fits take).
    pub traits: Traits,
    pub points: Vec<CurveRow>,
}

/// Groups rows into curves by [`CurveRow::curve_key`]; curves in the module's order, points
/// by n (best-of-n) or step (PPO), then by KL. `traits` says what each method is (by its
/// name in the rows).
pub fn group_curves(rows: &[CurveRow], traits: impl Fn(&str) -> Traits) -> Vec<Curve> {
    let mut curves: Vec<Curve> = Vec::new();
    let mut index = std::collections::HashMap::new();
    for r in rows {
        let key = r.curve_key();
        let i = *index.entry(key).or_insert_with(|| {
            curves.push(Curve {
                id: CurveId::of(r),
                traits: traits(&r.method),
                points: Vec::new(),
            });
            curves.len() - 1
        });
        curves[i].points.push(r.clone());
    }
    for c in &mut curves {
        c.points
            .sort_by(|a, b| a.n.or(a.step).cmp(&b.n.or(b.step)).then(a.kl.total_cmp(&b.kl)));
    }
    curves.sort_by(|a, b| a.id.order(&b.id));
    curves
}

impl Curve {
    /// KL in nats, clamped at ≥ 0 (NaN stays NaN).
    pub fn kl(&self) -> Vec<f64> {
        self.points
            .iter()
            .map(|p| if p.kl < 0.0 { 0.0 } else { p.kl })
            .collect()
    }

    pub fn gold(&self) -> Vec<f64> {
        self.points.iter().map(|p| p.gold).collect()
    }

    pub fn proxy(&self) -> Vec<f64> {
        self.points.iter().map(|p| p.measures.proxy).collect()
    }

    pub fn disagreement(&self) -> Vec<f64> {
        self.points.iter().map(|p| p.measures.disagreement).collect()
    }

    /// Mean of the member scores at each point (NaN where a point has none).
    pub fn member_mean(&self) -> Vec<f64> {
        self.points.iter().map(|p| mean(&p.measures.members)).collect()
    }

    /// The held-out proxy's scores (NaN where null); `None` when no point has one.
    pub fn heldout(&self) -> Option<Vec<f64>> {
        let h: Vec<f64> = self.points.iter().map(|p| p.measures.heldout.unwrap_or(f64::NAN)).collect();
        h.iter().any(|v| v.is_finite()).then_some(h)
    }

    /// For a single-member curve (`memberK`) of an ensemble of ≥ 2: at each point the mean
    /// score of the members not optimized against (gold-free). `None` otherwise.
    pub fn other_members_mean(&self) -> Option<Vec<f64>> {
        let k = self.id.single_member()?;
        if self.points.iter().any(|p| p.measures.members.len() < 2 || k >= p.measures.members.len()) {
            return None;
        }
        Some(
            self.points
                .iter()
                .map(|p| {
                    let others: Vec<f64> = p
                        .measures.members
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != k)
                        .map(|(_, v)| *v)
                        .collect();
                    mean(&others)
                })
                .collect(),
        )
    }

    /// The functional form of this curve's method ([`Traits::form`]).
    pub fn form(&self) -> Form {
        self.traits.form
    }

    /// Where point `i` is: `n=64`, `step 20`, or `#i`.
    pub fn at(&self, i: usize) -> String {
        let p = &self.points[i];
        match (p.n, p.step) {
            (Some(n), _) => format!("n={n}"),
            (None, Some(s)) => format!("step {s}"),
            _ => format!("#{i}"),
        }
    }

}

fn mean(xs: &[f64]) -> f64 {
    crate::stats::mean_se(xs).0
}

/// Mean and standard error across replicates ([`crate::stats::mean_se`]); the s.e. is NaN
/// (unknown) for fewer than 2 replicates rather than 0.
fn replicate_mean_se(xs: &[f64]) -> (f64, f64) {
    let (m, se) = crate::stats::mean_se(xs);
    (m, if xs.len() < 2 { f64::NAN } else { se })
}

fn argmax(xs: &[f64]) -> Option<usize> {
    crate::stats::stopping::argmax(xs.iter().copied())
}

// ------------------------------------------------------------------------------- fits

/// What a fit is of: the gold reward, or the optimized (aggregated) proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Gold,
    Proxy,
}

impl Target {
    pub fn name(&self) -> &'static str {
        match self {
            Target::Gold => "gold",
            Target::Proxy => "proxy",
        }
    }
}

/// The fit of one curve's gain (value − value at the first point) and its observed peak.
#[derive(Debug, Clone, PartialEq)]
pub struct FitRow {
    pub id: CurveId,
    pub target: Target,
    pub form: Form,
    /// Points on the curve.
    pub points: usize,
    /// The value at the first point (π_ref), subtracted to give the gain.
    pub baseline: f64,
    /// The least-squares fit of the gain against KL (clamped at ≥ 0); `None` when
    /// [`fit_form`] has too few usable points or a singular system.
    pub fit: Option<FormFit>,
    /// The observed peak of the gain (earliest on ties): index, KL, gain, and the gold s.e.
    /// over prompts there (NaN for proxy).
    pub peak: Option<usize>,
    /// Where the peak is (`n=64`, `step 20`); empty without a peak.
    pub peak_at: String,
    pub peak_kl: f64,
    pub peak_gain: f64,
    pub peak_se: f64,
    /// The peak is neither the first nor the last point.
    pub interior_peak: bool,
    /// The last point: KL and gain.
    pub last_kl: f64,
    pub last_gain: f64,
}

/// Fits the gain of `target` on one curve with its method's form.
pub fn fit_curve(c: &Curve, target: Target) -> FitRow {
    let kl = c.kl();
    let values = match target {
        Target::Gold => c.gold(),
        Target::Proxy => c.proxy(),
    };
    let baseline = values.first().copied().unwrap_or(f64::NAN);
    let gain: Vec<f64> = values.iter().map(|v| v - baseline).collect();
    let form = c.form();
    let peak = argmax(&gain);
    let last = c.points.len().checked_sub(1);
    FitRow {
        id: c.id.clone(),
        target,
        form,
        points: c.points.len(),
        baseline,
        fit: fit_form(form, &kl, &gain),
        peak,
        peak_at: peak.map(|i| c.at(i)).unwrap_or_default(),
        peak_kl: peak.map_or(f64::NAN, |i| kl[i]),
        peak_gain: peak.map_or(f64::NAN, |i| gain[i]),
        peak_se: match (target, peak) {
            (Target::Gold, Some(i)) => c.points[i].gold_se,
            _ => f64::NAN,
        },
        interior_peak: matches!((peak, last), (Some(p), Some(l)) if p > 0 && p < l),
        last_kl: last.map_or(f64::NAN, |i| kl[i]),
        last_gain: last.map_or(f64::NAN, |i| gain[i]),
    }
}

/// Every curve's gold fit, then every curve's proxy fit, in curve order.
pub fn fits(curves: &[Curve]) -> Vec<FitRow> {
    [Target::Gold, Target::Proxy]
        .iter()
        .flat_map(|&t| curves.iter().map(move |c| fit_curve(c, t)))
        .collect()
}

// ---------------------------------------------------------------------------- scaling

/// The size a scaling fit runs along (x = log10 of it); the other one is held fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Axis {
    /// x = log10(proxy parameters), data size held fixed.
    ProxyParams,
    /// x = log10(training pairs), proxy size held fixed.
    DataSize,
}

impl Axis {
    /// `log10_proxy_params` or `log10_data_size`.
    pub fn x_name(&self) -> &'static str {
        match self {
            Axis::ProxyParams => "log10_proxy_params",
            Axis::DataSize => "log10_data_size",
        }
    }

    /// The variable held fixed: `data_size` or `proxy_params`.
    pub fn fixed_name(&self) -> &'static str {
        match self {
            Axis::ProxyParams => "data_size",
            Axis::DataSize => "proxy_params",
        }
    }
}

/// The fitted coefficients a scaling fit can be of.
pub const SCALING_COEFFICIENTS: [&str; 4] = ["alpha", "beta", "d_star", "kl_star"];

fn coefficient(f: &FormFit, name: &str) -> Option<f64> {
    match name {
        "alpha" => Some(f.alpha),
        "beta" => Some(f.beta),
        "d_star" => f.d_star,
        "kl_star" => f.kl_star,
        _ => None,
    }
}

/// One scaling fit: a coefficient of the gold fits against log10 of a size, the other
/// size (and method, aggregator, λ, β, noise) held fixed.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingRow {
    pub method: String,
    /// The aggregator and its shaping.
    pub aggregator: Objective,
    pub kl_penalty: Option<f64>,
    pub label_noise: f64,
    pub axis: Axis,
    /// The held-fixed size: training pairs (axis ProxyParams) or proxy parameters.
    pub fixed_value: u64,
    /// `alpha`, `beta`, `d_star` or `kl_star`.
    pub coefficient: &'static str,
    pub fit: LinearFit,
    /// Distinct x values among the fitted points (≥ 2).
    pub distinct_x: usize,
    /// The fitted points: x = log10(size), y = the coefficient.
    pub xs: Vec<f64>,
    pub ys: Vec<f64>,
}

/// Scaling fits from gold fits: for every (method, aggregator, λ, β, noise, held-fixed
/// size, coefficient) whose curves span ≥ 2 distinct values of the other size, the line
/// `coefficient = slope·log10(size) + intercept`. Curves without a fit (or, for d* and KL*,
/// without a fitted peak) are left out.
pub fn scaling(fits: &[FitRow]) -> Vec<ScalingRow> {
    let gold: Vec<(&FitRow, &FormFit)> = fits
        .iter()
        .filter(|f| f.target == Target::Gold)
        .filter_map(|f| f.fit.as_ref().map(|x| (f, x)))
        .collect();
    let mut out = Vec::new();
    for axis in [Axis::ProxyParams, Axis::DataSize] {
        // Group keys in first-appearance order over curves already in a stable order.
        // (curve identity of the group's first fit, held-fixed size, (x, fit) pairs)
        type Group<'a> = (&'a CurveId, u64, Vec<(f64, &'a FormFit)>);
        let mut groups: Vec<Group> = Vec::new();
        for (f, fit) in &gold {
            let (x, fixed) = match axis {
                Axis::ProxyParams => (f.id.line.proxy_params, f.id.line.data_size),
                Axis::DataSize => (f.id.line.data_size, f.id.line.proxy_params),
            };
            if x == 0 {
                continue;
            }
            let same = |g: &CurveId, gf: u64| {
                g.line.method == f.id.line.method
                    && g.line.aggregator == f.id.line.aggregator
                    && g.line.kl_penalty == f.id.line.kl_penalty
                    && g.line.label_noise == f.id.line.label_noise
                    && gf == fixed
            };
            let x = (x as f64).log10();
            match groups.iter_mut().find(|(g, gf, _)| same(g, *gf)) {
                Some(g) => g.2.push((x, fit)),
                None => groups.push((&f.id, fixed, vec![(x, fit)])),
            }
        }
        groups.sort_by(|a, b| {
            a.0.line.method
                .cmp(&b.0.line.method)
                .then(a.0.line.label_noise.total_cmp(&b.0.line.label_noise))
                .then(a.0.line.aggregator.order(&b.0.line.aggregator))
                .then(cmp_opt(a.0.line.kl_penalty, b.0.line.kl_penalty))
                .then(a.1.cmp(&b.1))
        });
        for (id, fixed, pts) in &groups {
            for name in SCALING_COEFFICIENTS {
                let (xs, ys): (Vec<f64>, Vec<f64>) = pts
                    .iter()
                    .filter_map(|(x, f)| coefficient(f, name).filter(|y| y.is_finite()).map(|y| (*x, y)))
                    .unzip();
                let mut distinct = xs.clone();
                distinct.sort_by(f64::total_cmp);
                distinct.dedup();
                if distinct.len() < 2 {
                    continue;
                }
                if let Some(fit) = linear_fit(&xs, &ys) {
                    out.push(ScalingRow {
                        method: id.line.method.clone(),
                        aggregator: id.line.aggregator,
                        kl_penalty: id.line.kl_penalty,
                        label_noise: id.line.label_noise,
                        axis,
                        fixed_value: *fixed,
                        coefficient: name,
                        fit,
                        distinct_x: distinct.len(),
                        xs,
                        ys,
                    });
                }
            }
        }
    }
    out
}

// --------------------------------------------------------------------------- stopping

/// The extra rule for single-member curves: the peak of the mean of the members not
/// optimized against (gold-free: a user has those scores).
pub const OTHER_MEMBERS_PEAK: &str = "other_members_peak";

/// The names of every rule applied, in order: [`Rule::defaults`] by label, then
/// [`OTHER_MEMBERS_PEAK`].
pub fn rule_names() -> Vec<String> {
    let mut v: Vec<String> = Rule::defaults().iter().map(Rule::label).collect();
    v.push(OTHER_MEMBERS_PEAK.to_string());
    v
}

/// One stopping rule applied to one curve.
#[derive(Debug, Clone, PartialEq)]
pub struct StopRow {
    pub id: CurveId,
    /// [`Rule::label`] or [`OTHER_MEMBERS_PEAK`].
    pub rule: String,
    /// Where the chosen and the peak point are (`n=64`, `step 20`).
    pub chosen_at: String,
    pub peak_at: String,
    /// Regret on the raw gold, KL clamped at ≥ 0.
    pub regret: Regret,
    /// Points on the curve.
    pub points: usize,
}

impl StopRow {
    /// The curve's gold peaks strictly inside it (neither the first nor the last point):
    /// the curves where stopping early matters.
    pub fn interior_peak(&self) -> bool {
        self.regret.peak > 0 && self.regret.peak + 1 < self.points
    }
}

/// Every rule (see [`rule_names`]) on every curve; a rule that picks nothing on a curve
/// (its input is missing, e.g. no held-out proxy) gives no row.
pub fn stopping(curves: &[Curve]) -> Vec<StopRow> {
    let mut out = Vec::new();
    for c in curves {
        let (kl, gold, proxy, mm, dis) = (c.kl(), c.gold(), c.proxy(), c.member_mean(), c.disagreement());
        let heldout = c.heldout();
        let series = Series {
            kl: &kl,
            gold: &gold,
            proxy: &proxy,
            member_mean: &mm,
            disagreement: &dis,
            heldout: heldout.as_deref(),
        };
        let mut choices: Vec<(String, Option<usize>)> = Rule::defaults()
            .iter()
            .map(|r| (r.label(), r.choose(&series)))
            .collect();
        let others = c.other_members_mean();
        if let Some(o) = &others {
            // The other members stand in for a held-out proxy: never optimized against.
            let s = Series {
                heldout: Some(o),
                ..series
            };
            choices.push((OTHER_MEMBERS_PEAK.to_string(), Rule::HeldoutPeak.choose(&s)));
        }
        for (rule, chosen) in choices {
            if let Some(r) = chosen.and_then(|i| regret(&series, i)) {
                out.push(StopRow {
                    id: c.id.clone(),
                    rule,
                    chosen_at: c.at(r.chosen),
                    peak_at: c.at(r.peak),
                    regret: r,
                    points: c.points.len(),
                });
            }
        }
    }
    out
}

// ------------------------------------------------------------------------ aggregators

/// The KL budgets (nats) at which aggregators are compared.
pub const KL_BUDGETS: [f64; 6] = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0];

/// The pseudo-aggregator averaging the single-member curves of a cell.
pub const MEMBERS_AVG: &str = "members_avg";

/// What an aggregator row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// Gold interpolated (linearly in KL) at a KL budget.
    AtKl,
}

impl Measure {
    pub fn name(&self) -> &'static str {
        match self {
            Measure::AtKl => "gold_at_kl",
        }
    }
}

/// Over what a standard error is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeOver {
    /// The evaluation prompts of one curve (`gold_se`; interpolated at a budget).
    Prompts,
    /// The single-member curves of the cell: member seeds, on the same prompts.
    MemberSeeds,
}

impl SeOver {
    pub fn name(&self) -> &'static str {
        match self {
            SeOver::Prompts => "prompts",
            SeOver::MemberSeeds => "member_seeds",
        }
    }
}

/// One aggregator's gold in one cell (method × proxy size × data size × noise × β) at a
/// KL budget or at its best.
#[derive(Debug, Clone, PartialEq)]
pub struct AggRow {
    pub method: String,
    pub proxy_size: String,
    pub proxy_params: u64,
    pub data_size: u64,
    pub label_noise: f64,
    pub kl_penalty: Option<f64>,
    /// The cell's ensemble (a cell is one ensemble: a run trains one per proxy size, data
    /// size and noise level).
    pub ensembles: String,
    /// Aggregator with λ (`uwo(0.5)`), or [`MEMBERS_AVG`].
    pub aggregator: String,
    pub measure: Measure,
    /// The budget (AtKl) or the KL of the best point (Best; mean over member seeds for
    /// [`MEMBERS_AVG`]), nats.
    pub kl: f64,
    /// Gold (mean over member seeds for [`MEMBERS_AVG`]) and its standard error.
    pub gold: f64,
    pub se: f64,
    pub se_over: SeOver,
    /// Curves averaged: member seeds ([`MEMBERS_AVG`]), or 1.
    pub replicates: usize,
}

/// Aggregators compared within each cell (method × ensemble × β): every aggregator's gold
/// at each budget of [`KL_BUDGETS`] that every curve of the cell reaches, and its best gold,
/// each with its s.e. over prompts. Where a cell has ≥ 2 single-member curves,
/// [`MEMBERS_AVG`] averages them with the standard error across member seeds.
pub fn aggregators(curves: &[Curve]) -> Vec<AggRow> {
    type Cell<'a> = (&'a CurveId, Vec<&'a Curve>);
    let same_cell = |a: &CurveId, b: &CurveId| {
        a.line.method == b.line.method
            && a.line.ensemble == b.line.ensemble
            && a.line.proxy_size == b.line.proxy_size
            && a.line.proxy_params == b.line.proxy_params
            && a.line.data_size == b.line.data_size
            && a.line.label_noise == b.line.label_noise
            && a.line.kl_penalty == b.line.kl_penalty
    };
    let mut cells: Vec<Cell> = Vec::new();
    for c in curves {
        match cells.iter_mut().find(|(id, _)| same_cell(id, &c.id)) {
            Some(cell) => cell.1.push(c),
            None => cells.push((&c.id, vec![c])),
        }
    }
    let mut out = Vec::new();
    for (cid, members) in &cells {
        let row = |aggregator: String, measure, kl, gold, se, se_over, replicates| AggRow {
            method: cid.line.method.clone(),
            proxy_size: cid.line.proxy_size.clone(),
            proxy_params: cid.line.proxy_params,
            data_size: cid.line.data_size,
            label_noise: cid.line.label_noise,
            kl_penalty: cid.line.kl_penalty,
            ensembles: cid.line.ensemble.clone(),
            aggregator,
            measure,
            kl,
            gold,
            se,
            se_over,
            replicates,
        };
        let singles: Vec<&Curve> = members
            .iter()
            .copied()
            .filter(|c| c.id.single_member().is_some())
            .collect();
        // Gold at a budget: the crate's one definition (the first point reaching it, in the
        // curve's own order).
        let at = |c: &Curve, budget: f64| {
            let (kl, gold) = (c.kl(), c.gold());
            let se: Vec<f64> = c.points.iter().map(|p| p.gold_se).collect();
            at_kl(&kl, &gold, budget).map(|g| (g, at_kl(&kl, &se, budget).unwrap_or(f64::NAN)))
        };
        for budget in KL_BUDGETS {
            if !members.iter().all(|c| at(c, budget).is_some()) {
                continue;
            }
            for c in members {
                let (gold, se) = at(c, budget).expect("every curve of the cell reaches the budget");
                out.push(row(c.id.aggregator_label(), Measure::AtKl, budget, gold, se, SeOver::Prompts, 1));
            }
            if singles.len() >= 2 {
                let vals: Vec<f64> = singles.iter().filter_map(|c| at(c, budget)).map(|v| v.0).collect();
                let (m, se) = replicate_mean_se(&vals);
                out.push(row(MEMBERS_AVG.into(), Measure::AtKl, budget, m, se, SeOver::MemberSeeds, vals.len()));
            }
        }
    }
    out
}
