//! Conclusions: the study's claims, each an estimate with a 95% interval across replicates,
//! measured on units (best-of-n prompts, PPO evaluation samples) that did not choose it.
//!
//! The input is per-unit curves ([`UnitCurve`]), read back from the `bon_units` and
//! `ppo_units` tables. Three kinds of claim:
//! - **`overopt`**: the fall of gold from its peak to the last point, cross-fitted: the
//!   units are split in two halves (even and odd unit index); the peak is chosen on one
//!   half's mean gold and the fall measured on the other half, then the halves swap. Each
//!   unit contributes `gold(peak chosen on the other half) − gold(last point)`, so a curve
//!   with no true fall gives 0 in expectation (choosing the peak on the units that measure
//!   it, the winner's curse, would not). Positive = gold fell.
//! - **`gap`**: the paired difference of final gold (and, for PPO, of gold at a matched
//!   KL) between an aggregator and a baseline on the same units: same prompts and pools
//!   (best-of-n), same evaluation prompts (PPO). Positive = the aggregator keeps more gold.
//!   The `single` baseline and the `single` aggregator pool the single members: each unit's
//!   value is the mean over the members' curves.
//! - **`stop`**: the regret of a gold-free stopping rule, cross-fitted the same way: the
//!   rule reads one half's gold-free signals and picks a point, an oracle reads the same
//!   half's gold and picks one, and both are scored by gold on the other half; a unit
//!   contributes `gold(oracle's pick) − gold(rule's pick)`. Positive = the rule gives up gold.
//!   The rule to prefer is chosen by leave-one-replicate-out cross-validation, so its
//!   regret is never graded on the replicates that chose it.
//!
//! Per replicate, a claim's estimate is the mean of its unit contributions; across
//! replicates, the estimate is the mean of those and its interval a Student-t interval
//! with R − 1 degrees of freedom: it covers what varies between replicates (proxy seeds and
//! data order, best-of-n prompts and pools, PPO seeds and prompts; with `world.per_replicate`
//! the world, π_ref, gold and pairs too) as well as the units
//! within each. With one replicate the interval is over units only and says so.
//! Verdict: `holds` (interval above 0), `reversed` (below 0), `inconclusive`.

use std::collections::BTreeMap;

use crate::stopping::{Rule, Series};

/// One curve's values per unit: `gold[point][unit]` and the gold-free signals alike.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitCurve {
    /// `bon` or `ppo`.
    pub method: String,
    pub replicate: u64,
    pub ensemble: String,
    /// `member0`, `mean`, `wco`, `uwo(0.5)`, … ([`crate::analysis::aggregator_label`]).
    pub aggregator: String,
    /// PPO's β; none for best-of-n.
    pub kl_penalty: Option<f64>,
    /// KL(π‖π_ref) per point (best-of-n: the bound of its n; PPO: the checkpoint's mean k1).
    pub kl: Vec<f64>,
    /// Where each point is, for labels: `n=64`, `step 20`.
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
        self.aggregator.starts_with("member")
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

/// Index of the largest finite value, earliest on ties.
fn argmax(xs: &[f64]) -> Option<usize> {
    crate::stopping::argmax(xs.iter().copied())
}

/// For each half, the point `pick` chooses from that half's mean curves; then each unit's
/// contribution `score(point picked on the OTHER half, unit)`. `None` if either half picks
/// nothing (or there are fewer than 2 units).
fn cross_fitted(c: &UnitCurve, pick: impl Fn(&UnitCurve, usize) -> Option<usize>, score: impl Fn(usize, usize) -> f64) -> Option<Vec<f64>> {
    if c.units() < 2 {
        return None;
    }
    let picks = [pick(c, 0)?, pick(c, 1)?];
    Some((0..c.units()).map(|u| score(picks[1 - half_of(u)], u)).collect())
}

/// Cross-fitted fall from the peak, one contribution per unit: gold at the peak chosen on
/// the other half minus gold at the last point. See the module doc.
pub fn fall_units(c: &UnitCurve) -> Option<Vec<f64>> {
    let last = c.points().checked_sub(1)?;
    cross_fitted(c, |c, h| argmax(&half_curve(&c.gold, h)), |k, u| c.gold[k][u] - c.gold[last][u])
}

/// The in-sample fall (peak chosen and measured on all units): biased upward, for
/// comparison only (the winner's curse the cross-fitting removes).
pub fn fall_in_sample(c: &UnitCurve) -> Option<f64> {
    let last = c.points().checked_sub(1)?;
    let means: Vec<f64> = c.gold.iter().map(|p| mean(p)).collect();
    let k = argmax(&means)?;
    Some(means[k] - means[last])
}

/// A gold-free stopping rule: the four of [`Rule::defaults`] plus the other members' peak
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
            StopRule::OtherMembersPeak => crate::analysis::OTHER_MEMBERS_PEAK.to_string(),
        }
    }

    /// The point this rule picks from half `h` of `c`'s gold-free signals.
    pub fn pick(&self, c: &UnitCurve, h: usize) -> Option<usize> {
        match self {
            StopRule::OtherMembersPeak => argmax(&half_curve(c.other_members.as_ref()?, h)),
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

/// Cross-fitted regret of `rule` on `c`, one contribution per unit: gold at the oracle's
/// pick minus gold at the rule's, both picked on the other half. `None` where the rule
/// does not apply (no held-out proxy, not a single member's curve, …).
pub fn regret_units(c: &UnitCurve, rule: StopRule) -> Option<Vec<f64>> {
    let oracle = [argmax(&half_curve(&c.gold, 0))?, argmax(&half_curve(&c.gold, 1))?];
    let chosen = [rule.pick(c, 0)?, rule.pick(c, 1)?];
    if c.units() < 2 {
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

/// Gold of every unit at KL `at`, linearly interpolated between the checkpoints around the
/// first one that reaches it; `None` if the curve never reaches `at`.
pub fn gold_at_kl(c: &UnitCurve, at: f64) -> Option<Vec<f64>> {
    let j = c.kl.iter().position(|&k| k >= at)?;
    if j == 0 || c.kl[j] == c.kl[j - 1] {
        return Some(c.gold[j].clone());
    }
    let w = (at - c.kl[j - 1]) / (c.kl[j] - c.kl[j - 1]);
    Some(c.gold[j - 1].iter().zip(&c.gold[j]).map(|(a, b)| a + w * (b - a)).collect())
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

/// The crate's one mean ([`crate::bon::mean_se`]).
fn mean(xs: &[f64]) -> f64 {
    crate::bon::mean_se(xs).0
}

/// The 97.5% quantile of Student's t with `df` degrees of freedom (two-sided 95%): exact
/// to three decimals for df ≤ 30 (the standard table), the Cornish–Fisher expansion in
/// 1/df above (within 0.001 of the table at 30).
pub fn t975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101,
        2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => TABLE[df - 1],
        _ => t975_expansion(df),
    }
}

/// Cornish–Fisher expansion of t's 97.5% quantile, two terms in 1/df.
pub fn t975_expansion(df: usize) -> f64 {
    let z: f64 = 1.959_963_984_540_054;
    let n = df as f64;
    z + (z.powi(3) + z) / (4.0 * n) + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * n * n)
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

/// An estimate with its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
    /// Replicates it averages.
    pub replicates: usize,
    pub over: Over,
}

impl Interval {
    /// `holds` (above 0), `reversed` (below 0) or `inconclusive`.
    pub fn verdict(&self) -> &'static str {
        if self.low > 0.0 {
            "holds"
        } else if self.high < 0.0 {
            "reversed"
        } else {
            "inconclusive"
        }
    }
}

/// Student-t 95% interval of the mean of `xs`; `None` for fewer than two values.
pub fn t_interval(xs: &[f64], over: Over, replicates: usize) -> Option<Interval> {
    if xs.len() < 2 || xs.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let (m, se) = crate::bon::mean_se(xs);
    let half = t975(xs.len() - 1) * se;
    Some(Interval {
        estimate: m,
        low: m - half,
        high: m + half,
        replicates,
        over,
    })
}

/// A claim's interval from its unit contributions, one vector per replicate: across
/// replicates when there are two or more (each replicate's estimate is its units' mean),
/// over units otherwise.
pub fn across(per_replicate: &[Vec<f64>]) -> Option<Interval> {
    across_of(per_replicate, per_replicate.len())
}

/// [`across`] in a study of `study` replicates: a claim measurable in only one of several
/// replicates gets no interval (NaN bounds, verdict `inconclusive`) rather than one over
/// units that would not be comparable with the others'.
pub fn across_of(per_replicate: &[Vec<f64>], study: usize) -> Option<Interval> {
    match per_replicate {
        [] => None,
        [one] if study >= 2 => Some(Interval {
            estimate: mean(one),
            low: f64::NAN,
            high: f64::NAN,
            replicates: 1,
            over: Over::Replicates,
        }),
        [one] => t_interval(one, Over::Units, 1),
        many => {
            let means: Vec<f64> = many.iter().map(|u| mean(u)).collect();
            t_interval(&means, Over::Replicates, many.len())
        }
    }
}

/// One row of `conclusions.{parquet,csv}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// Readable statement of what is estimated.
    pub claim: String,
    /// `overopt`, `gap` or `stop`.
    pub kind: String,
    pub method: String,
    pub ensemble: String,
    /// The aggregator (`single` pools the single members); a stopping rule for `stop`.
    pub aggregator: String,
    /// The baseline of a gap (`single`, `mean`); empty otherwise.
    pub baseline: String,
    pub kl_penalty: Option<f64>,
    /// Where it is measured: `peak→last`, `final`, `kl=X` (matched), `cross-validated`.
    pub at: String,
    pub interval: Interval,
}

/// Aggregator group of a curve: `single` for a member, its label otherwise.
fn group(c: &UnitCurve) -> &str {
    if c.is_single() {
        "single"
    } else {
        &c.aggregator
    }
}

/// Curves of one optimization setting (method, ensemble, β) in one replicate.
type Setting = (String, String, Option<u64>);

fn setting(c: &UnitCurve) -> Setting {
    (c.method.clone(), c.ensemble.clone(), c.kl_penalty.map(f64::to_bits))
}

/// The order aggregators are listed in: single, mean, median, wco, uwo, mean_std, others.
fn group_rank(g: &str) -> (u8, String) {
    let r = match g.split('(').next().unwrap_or(g) {
        "single" => 0,
        "mean" => 1,
        "median" => 2,
        "wco" => 3,
        "uwo" => 4,
        "mean_std" => 5,
        _ => 6,
    };
    (r, g.to_string())
}

fn beta_text(b: Option<f64>) -> String {
    b.map(|b| format!(", β = {b}")).unwrap_or_default()
}

fn method_text(m: &str) -> &str {
    match m {
        "bon" => "best-of-n",
        "ppo" => "PPO",
        other => other,
    }
}

/// Every claim of the study, in a fixed order: `overopt` for every method × ensemble × β ×
/// aggregator group; `gap` of mean, wco and each uwo against `single` and of wco and each
/// uwo against `mean`, at the final point (and for PPO at matched KL); `stop` for every
/// rule and the cross-validated choice, per method.
pub fn claims(curves: &[UnitCurve]) -> Vec<Claim> {
    // setting → group → replicate → curves
    let mut by: BTreeMap<Setting, BTreeMap<(u8, String), BTreeMap<u64, Vec<&UnitCurve>>>> = BTreeMap::new();
    for c in curves {
        by.entry(setting(c))
            .or_default()
            .entry(group_rank(group(c)))
            .or_default()
            .entry(c.replicate)
            .or_default()
            .push(c);
    }
    let study = curves.iter().map(|c| c.replicate).collect::<std::collections::BTreeSet<_>>().len();
    let across = |per: &[Vec<f64>]| across_of(per, study);
    let mut out = Vec::new();
    for ((method, ensemble, beta), groups) in &by {
        let beta = beta.map(f64::from_bits);
        // overopt
        for ((_, g), reps) in groups {
            let per: Vec<Vec<f64>> = reps
                .values()
                .filter_map(|cs| pool(&cs.iter().map(|c| fall_units(c)).collect::<Option<Vec<_>>>()?))
                .collect();
            if let Some(iv) = across(&per) {
                out.push(Claim {
                    claim: format!("{}: gold falls from its peak ({ensemble}, {g}{})", method_text(method), beta_text(beta)),
                    kind: "overopt".into(),
                    method: method.clone(),
                    ensemble: ensemble.clone(),
                    aggregator: g.clone(),
                    baseline: String::new(),
                    kl_penalty: beta,
                    at: "peak→last".into(),
                    interval: iv,
                });
            }
        }
        // gap
        let find = |g: &str| groups.iter().find(|((_, name), _)| name == g).map(|(_, reps)| reps);
        let mut pairs: Vec<(String, &str)> = Vec::new();
        for ((_, g), _) in groups {
            let base = g.split('(').next().unwrap_or(g);
            if matches!(base, "mean" | "wco" | "uwo") {
                pairs.push((g.clone(), "single"));
            }
        }
        for ((_, g), _) in groups {
            let base = g.split('(').next().unwrap_or(g);
            if matches!(base, "wco" | "uwo") {
                pairs.push((g.clone(), "mean"));
            }
        }
        for (agg, baseline) in pairs {
            let (Some(a), Some(b)) = (find(&agg), find(baseline)) else { continue };
            let common: Vec<u64> = a.keys().filter(|r| b.contains_key(r)).copied().collect();
            let last = |cs: &[&UnitCurve]| pool(&cs.iter().map(|c| c.gold.last().cloned()).collect::<Option<Vec<_>>>()?);
            let at_final: Vec<Vec<f64>> = common.iter().filter_map(|r| paired(&last(&a[r])?, &last(&b[r])?)).collect();
            let mut rows = vec![("final".to_string(), at_final)];
            if method == "ppo" {
                let mut kls = Vec::new();
                let matched: Vec<Vec<f64>> = common
                    .iter()
                    .filter_map(|r| {
                        let all: Vec<&&UnitCurve> = a[r].iter().chain(&b[r]).collect();
                        let kl = all.iter().map(|c| max_kl(c)).fold(f64::INFINITY, f64::min);
                        if !kl.is_finite() || kl <= 0.0 {
                            return None;
                        }
                        kls.push(kl);
                        let at = |cs: &[&UnitCurve]| pool(&cs.iter().map(|c| gold_at_kl(c, kl)).collect::<Option<Vec<_>>>()?);
                        paired(&at(&a[r])?, &at(&b[r])?)
                    })
                    .collect();
                if !kls.is_empty() {
                    rows.push((format!("matched kl (mean {:.2} nats)", mean(&kls)), matched));
                }
            }
            for (at, per) in rows {
                if let Some(iv) = across(&per) {
                    out.push(Claim {
                        claim: format!(
                            "{}: {agg} keeps more gold than {baseline} at {} ({ensemble}{})",
                            method_text(method),
                            if at == "final" { "the last point".to_string() } else { at.clone() },
                            beta_text(beta)
                        ),
                        kind: "gap".into(),
                        method: method.clone(),
                        ensemble: ensemble.clone(),
                        aggregator: agg.clone(),
                        baseline: baseline.to_string(),
                        kl_penalty: beta,
                        at,
                        interval: iv,
                    });
                }
            }
        }
    }
    out.extend(stop_claims(curves));
    out
}

/// Per replicate, the unit-by-unit mean over every curve of `method` of `rule`'s regret
/// contributions (curves where the rule does not apply are left out; a replicate where it
/// applies to none is left out), and how many curves it applies to.
fn rule_regret(curves: &[&UnitCurve], rule: StopRule) -> (BTreeMap<u64, Vec<f64>>, usize) {
    let mut by: BTreeMap<u64, Vec<Vec<f64>>> = BTreeMap::new();
    let mut applied = 0;
    for c in curves {
        if let Some(u) = regret_units(c, rule) {
            by.entry(c.replicate).or_default().push(u);
            applied += 1;
        }
    }
    (by.into_iter().filter_map(|(r, parts)| Some((r, pool(&parts)?))).collect(), applied)
}

/// The stopping claims of each method: every rule's cross-fitted regret, then the rule a
/// user should prefer, chosen by leave-one-replicate-out cross-validation (the rule with
/// the lowest mean regret on the other replicates, graded on the left-out one).
pub fn stop_claims(curves: &[UnitCurve]) -> Vec<Claim> {
    let mut out = Vec::new();
    let study = curves.iter().map(|c| c.replicate).collect::<std::collections::BTreeSet<_>>().len();
    for method in ["bon", "ppo"] {
        let cs: Vec<&UnitCurve> = curves.iter().filter(|c| c.method == method).collect();
        if cs.is_empty() {
            continue;
        }
        let rules = StopRule::all();
        let (regrets, applied): (Vec<BTreeMap<u64, Vec<f64>>>, Vec<usize>) = rules.iter().map(|&r| rule_regret(&cs, r)).unzip();
        for (rule, per) in rules.iter().zip(&regrets) {
            let per: Vec<Vec<f64>> = per.values().cloned().collect();
            if let Some(iv) = across_of(&per, study) {
                out.push(stop_claim(method, &rule.label(), "cross-fitted", iv, format!("stopping by {} gives up gold against a gold-picked stop", rule.label())));
            }
        }
        // Leave-one-replicate-out: only rules that apply to every curve compete, so each is
        // graded on the same curves.
        let reps: Vec<u64> = cs.iter().map(|c| c.replicate).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        let complete: Vec<usize> = (0..rules.len())
            .filter(|&i| applied[i] == cs.len() && reps.iter().all(|r| regrets[i].contains_key(r)))
            .collect();
        if reps.len() < 2 || complete.is_empty() {
            continue;
        }
        let rep_mean = |i: usize, r: u64| mean(&regrets[i][&r]);
        let mut held_out = Vec::new();
        for &r in &reps {
            let best = complete
                .iter()
                .copied()
                .min_by(|&a, &b| {
                    let score = |i: usize| reps.iter().filter(|&&q| q != r).map(|&q| rep_mean(i, q)).sum::<f64>();
                    score(a).total_cmp(&score(b))
                })
                .expect("complete is not empty");
            held_out.push(rep_mean(best, r));
        }
        let chosen = complete
            .iter()
            .copied()
            .min_by(|&a, &b| {
                let score = |i: usize| reps.iter().map(|&q| rep_mean(i, q)).sum::<f64>();
                score(a).total_cmp(&score(b))
            })
            .expect("complete is not empty");
        if let Some(iv) = t_interval(&held_out, Over::Replicates, reps.len()) {
            out.push(stop_claim(
                method,
                &rules[chosen].label(),
                "cross-validated",
                iv,
                format!(
                    "the rule chosen by leave-one-replicate-out cross-validation ({}) gives up gold against a gold-picked stop",
                    rules[chosen].label()
                ),
            ));
        }
    }
    out
}

fn stop_claim(method: &str, rule: &str, at: &str, iv: Interval, text: String) -> Claim {
    Claim {
        claim: format!("{}: {text}", method_text(method)),
        kind: "stop".into(),
        method: method.to_string(),
        ensemble: String::new(),
        aggregator: rule.to_string(),
        baseline: String::new(),
        kl_penalty: None,
        at: at.to_string(),
        interval: iv,
    }
}

/// A fitted peak location of one curve, for [`dstar`].
#[derive(Debug, Clone, PartialEq)]
pub struct PeakFit {
    pub method: String,
    pub proxy_size: String,
    pub proxy_params: u64,
    pub data_size: u64,
    pub kl_penalty: Option<f64>,
    pub replicate: u64,
    /// d* of the Gao form fitted to the curve's gold (sqrt-nats); none without an interior peak.
    pub d_star: Option<f64>,
}

/// d* by proxy size, for the single members: per replicate the mean d* of the members
/// whose fit has a peak, then its interval across replicates.
#[derive(Debug, Clone, PartialEq)]
pub struct DstarRow {
    pub method: String,
    pub proxy_size: String,
    pub proxy_params: u64,
    pub data_size: u64,
    pub kl_penalty: Option<f64>,
    /// Curves fitted, and how many of them have a fitted peak.
    pub curves: usize,
    pub with_peak: usize,
    /// Across the replicates where at least one member has a peak (`None` for fewer than
    /// two such replicates; then `single` holds the one value, if any).
    pub interval: Option<Interval>,
    pub single: Option<f64>,
}

/// [`DstarRow`]s of `fits` (single members' gold fits), by method, size, data size and β.
pub fn dstar(fits: &[PeakFit]) -> Vec<DstarRow> {
    type K = (String, u64, String, u64, Option<u64>);
    let mut by: BTreeMap<K, (Vec<&PeakFit>, BTreeMap<u64, Vec<f64>>)> = BTreeMap::new();
    for f in fits {
        let e = by
            .entry((f.method.clone(), f.proxy_params, f.proxy_size.clone(), f.data_size, f.kl_penalty.map(f64::to_bits)))
            .or_default();
        e.0.push(f);
        if let Some(d) = f.d_star.filter(|d| d.is_finite()) {
            e.1.entry(f.replicate).or_default().push(d);
        }
    }
    by.into_iter()
        .map(|((method, params, size, data, beta), (all, reps))| {
            let per: Vec<f64> = reps.values().map(|v| mean(v)).collect();
            DstarRow {
                method,
                proxy_size: size,
                proxy_params: params,
                data_size: data,
                kl_penalty: beta.map(f64::from_bits),
                curves: all.len(),
                with_peak: reps.values().map(Vec::len).sum(),
                interval: t_interval(&per, Over::Replicates, per.len()),
                single: (per.len() == 1).then(|| per[0]),
            }
        })
        .collect()
}
