//! The sections of `report.md`, from the [`Analysis`]: fixed order, fixed float formatting.

use std::fmt::Write as _;

use serde_json::Value;

use super::acceptance::{R2_TARGET, REGRET_TARGET};
use super::Analysis;
use crate::analysis::{self, AggRow, CurveId, FitRow, Measure, ScalingRow, SeOver, Target, MEMBERS_AVG, OTHER_MEMBERS_PEAK};
use crate::conclusions::Interval;
use crate::output::table::{CurveRow, RmRow};

/// A float with `d` decimals; "—" for NaN or infinite; never "-0.00".
fn num(x: f64, d: usize) -> String {
    if !x.is_finite() {
        return "—".to_string();
    }
    let s = format!("{x:.d$}");
    if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') {
        s[1..].to_string()
    } else {
        s
    }
}

fn onum(x: Option<f64>, d: usize) -> String {
    x.map_or("—".to_string(), |v| num(v, d))
}

/// A fraction as a percentage with one decimal.
fn pct(x: Option<f64>) -> String {
    x.filter(|v| v.is_finite())
        .map_or("—".to_string(), |v| format!("{}%", num(100.0 * v, 1)))
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// A table row: cells joined by pipes.
fn row(cells: &[String]) -> String {
    format!("| {} |\n", cells.join(" | "))
}

fn header(cells: &[&str]) -> String {
    format!("| {} |\n|{}\n", cells.join(" | "), " --- |".repeat(cells.len()))
}

/// The PPO KL penalty of a curve, or "—" for best-of-n.
fn penalty(id: &CurveId) -> String {
    id.kl_penalty.map_or("—".to_string(), |b| b.to_string())
}

/// report.md: its sections in order.
pub(super) fn markdown(a: &Analysis) -> String {
    [
        title_section(a),
        conclusions_section(a),
        measured_section(a),
        rm_section(a),
        fits_section(a),
        scaling_section(a),
        stopping_section(a),
        aggregators_section(a),
        figures_section(a),
        acceptance_section(a),
    ]
    .concat()
}

fn title_section(a: &Analysis) -> String {
    let m = a.manifest.as_ref();
    let get = |k: &str| m.and_then(|m| m.get(k)).filter(|v| !v.is_null());
    let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    let name = get("experiment").map(text).unwrap_or_else(|| a.dir_name.clone());
    let mut s = format!("# goodhart report: {name}\n\n");
    match m {
        Some(_) => {
            let field = |k: &str| get(k).map(text).unwrap_or_else(|| "unknown".to_string());
            let commit = get("git_commit")
                .map(text)
                .map(|c| c.chars().take(12).collect::<String>());
            let _ = writeln!(
                s,
                "Experiment `{name}`, seed {}, config hash `{}`, device {}, goodhart {}{}.",
                field("seed"),
                field("config_hash"),
                field("device"),
                field("goodhart_version"),
                commit.map(|c| format!(" (commit `{c}`)")).unwrap_or_default()
            );
        }
        None => s.push_str("No `manifest.json` in this folder: seed, config hash and device are unknown.\n"),
    }
    s.push_str(
        "\nWritten by `goodhart report` from the saved tables alone (`rm.parquet`, `curves.parquet`, and the \
         per-unit `bon_units.parquet`, `ppo_units.parquet`); the same tables give this file byte for byte.\n\n",
    );
    s
}

/// An interval as `0.12 [0.05, 0.19]`.
fn ci(i: &Interval) -> String {
    if i.low.is_nan() {
        return format!("{} (measurable in {} replicate only: no interval)", num(i.estimate, 3), i.replicates);
    }
    format!("{} [{}, {}]", num(i.estimate, 3), num(i.low, 3), num(i.high, 3))
}

/// The ensemble of the smallest proxies (fewest parameters, then least data, then least
/// label noise), from the curve table.
fn smallest_ensemble(a: &Analysis) -> Option<String> {
    a.rows
        .iter()
        .min_by(|x, y| {
            x.proxy_params
                .cmp(&y.proxy_params)
                .then(x.data_size.cmp(&y.data_size))
                .then(x.label_noise.total_cmp(&y.label_noise))
        })
        .map(|r| r.ensemble.clone())
}

fn conclusions_section(a: &Analysis) -> String {
    let mut s = String::from("## Conclusions\n\n");
    if a.claims.is_empty() {
        s.push_str(
            "No conclusions: this folder has no per-unit tables (`bon_units.parquet`, `ppo_units.parquet`), or \
             too few units to split.\n\n",
        );
        return s;
    }
    let reps = a.claims.iter().map(|c| c.interval.replicates).max().unwrap_or(0);
    let worlds = a.rm.iter().filter(|r| r.role == "gold").count();
    if reps >= 2 && worlds > 1 {
        let _ = write!(
            s,
            "Every claim is an estimate with a **95% interval across {reps} replicates** (Student t, {} degrees of \
             freedom, over the replicates' estimates). Each replicate has its **own world** ({worlds} worlds: the \
             labeler's affinity, π_ref, gold, preference pairs and held-out proxy, `world.per_replicate`) and \
             redraws the proxies' initialization, data order and label noise, the best-of-n prompts and pools, \
             and the PPO seeds and prompts, so the intervals cover world-to-world variation too. ",
            reps - 1
        );
    } else if reps >= 2 {
        let _ = write!(
            s,
            "Every claim is an estimate with a **95% interval across {reps} replicates** (Student t, {} degrees of \
             freedom, over the replicates' estimates). A replicate redraws the proxies' initialization, data \
             order and label noise, the best-of-n prompts and pools, and the PPO seeds and prompts (and the \
             training pairs, with `preferences.per_replicate`); the world, π_ref, gold, the held-out proxy \
             and otherwise the preference pairs are shared by all replicates (`world.per_replicate` redraws \
             them too), so the intervals do not cover their variation. ",
            reps - 1
        );
    } else {
        s.push_str(
            "**One replicate**: every interval below is over the units (prompts, evaluation samples) of that one \
             replicate and does **not** cover what a new replicate would redraw (proxy seeds, prompts, pools, PPO \
             seeds); set `replicates` ≥ 3 for conclusions. ",
        );
    }
    s.push_str(
        "Units are best-of-n prompts and PPO evaluation samples (one per held-out prompt). Every statistic is \
         measured on units that did not choose it: the fall from the peak picks the peak on one half of the \
         units (even/odd prompt index) and measures it on the other, then swaps; a stopping rule reads one \
         half and is graded by gold on the other. Gold is in π_ref standard deviations. Verdict: `holds` = \
         the interval is above 0, `reversed` = below 0, otherwise `inconclusive`. All rows are in \
         `conclusions.csv`. Each interval is a 95% interval for its own claim, not corrected for \
         multiplicity: among many claims with no true effect, about one in forty holds or is reversed by \
         chance, so the first table's questions are the study's, and the longer tables are for \
         exploration.\n\n",
    );
    // The phenomenon.
    let small = smallest_ensemble(a);
    let find = |kind: &str, method: &str, agg: &str, base: &str, beta: Option<f64>| {
        a.claims.iter().find(|c| {
            c.kind == kind
                && c.method == method
                && Some(&c.ensemble) == small.as_ref()
                && (c.aggregator == agg || (agg == "uwo" && c.aggregator.starts_with("uwo(")))
                && c.baseline == base
                && c.kl_penalty == beta
                && (kind != "gap" || c.at == "final")
        })
    };
    if let Some(e) = &small {
        let _ = writeln!(s, "**Overoptimization, beyond doubt?** The smallest proxies (`{e}`), optimized as single members:\n");
        s.push_str(&header(&["claim", "estimate [95% interval]", "verdict"]));
        let checks = [
            ("best-of-n: gold falls from its peak (single)", find("overopt", "bon", "single", "", None)),
            ("PPO, β = 0: gold falls from its peak (single)", find("overopt", "ppo", "single", "", Some(0.0))),
            ("best-of-n: wco keeps more gold than single", find("gap", "bon", "wco", "single", None)),
            ("best-of-n: uwo keeps more gold than single", find("gap", "bon", "uwo", "single", None)),
            ("PPO, β = 0: wco keeps more gold than single", find("gap", "ppo", "wco", "single", Some(0.0))),
            ("PPO, β = 0: uwo keeps more gold than single", find("gap", "ppo", "uwo", "single", Some(0.0))),
        ];
        for (text, c) in checks {
            match c {
                // The uwo row names its λ (the first configured, if there are several).
                Some(c) => s.push_str(&row(&[text.replace("uwo", &c.aggregator), ci(&c.interval), format!("**{}**", c.interval.verdict())])),
                None => s.push_str(&row(&[text.to_string(), "not measured".to_string(), "—".to_string()])),
            }
        }
        s.push('\n');
    }
    let beta = |b: Option<f64>| b.map_or("—".to_string(), |b| b.to_string());
    s.push_str(
        "**Fall from the peak** (`overopt`: gold at the cross-fitted peak − gold at the last point; positive = \
         gold fell; `single` pools the single members, unit by unit):\n\n",
    );
    s.push_str(&header(&["method", "ensemble", "β", "aggregator", "fall [95% interval]", "verdict"]));
    for c in a.claims.iter().filter(|c| c.kind == "overopt") {
        s.push_str(&row(&[
            c.method.clone(),
            format!("`{}`", c.ensemble),
            beta(c.kl_penalty),
            c.aggregator.clone(),
            ci(&c.interval),
            c.interval.verdict().to_string(),
        ]));
    }
    s.push_str(
        "\n**Aggregators** (`gap`: paired gold difference aggregator − baseline on the same prompts and pools \
         (best-of-n) or the same evaluation prompts (PPO), at the last point and, for PPO, at the largest KL \
         both runs reach (gold interpolated per sample between checkpoints); positive = the aggregator keeps \
         more gold):\n\n",
    );
    s.push_str(&header(&["method", "ensemble", "β", "aggregator − baseline", "at", "difference [95% interval]", "verdict"]));
    for c in a.claims.iter().filter(|c| c.kind == "gap") {
        s.push_str(&row(&[
            c.method.clone(),
            format!("`{}`", c.ensemble),
            beta(c.kl_penalty),
            format!("{} − {}", c.aggregator, c.baseline),
            c.at.clone(),
            ci(&c.interval),
            c.interval.verdict().to_string(),
        ]));
    }
    s.push_str(
        "\n**Where to stop without gold** (`stop`: cross-fitted regret = gold at the point an oracle picks from \
         one half's gold − gold at the point the rule picks from the same half's gold-free signals, both scored \
         on the other half, averaged over every curve of the method; positive = the rule gives up gold; \
         `cross-validated` = the rule with the least regret on the other replicates, graded on the left-out \
         one, so the rule recommended is never graded on the replicates that chose it):\n\n",
    );
    s.push_str(&header(&["method", "rule", "graded", "regret [95% interval]", "verdict"]));
    for c in a.claims.iter().filter(|c| c.kind == "stop") {
        s.push_str(&row(&[
            c.method.clone(),
            format!("`{}`", c.aggregator),
            c.at.clone(),
            ci(&c.interval),
            c.interval.verdict().to_string(),
        ]));
    }
    if !a.dstar.is_empty() {
        s.push_str(
            "\n**Peak location d\\* by proxy size** (single members; d* = √KL at the peak of the Gao form fitted \
             to each curve's mean gold, in sqrt-nats; counted only where the fitted peak lies inside the curve's \
             measured KL range; per replicate the mean over such members, then the interval across \
             replicates):\n\n",
        );
        s.push_str(&header(&["method", "proxy size", "params", "pairs", "β", "curves with a peak in range", "d* [95% interval]"]));
        for d in &a.dstar {
            let v = match (&d.interval, d.single) {
                (Some(i), _) => ci(i),
                (None, Some(x)) => format!("{} (one replicate)", num(x, 3)),
                (None, None) => "no peak in range".to_string(),
            };
            s.push_str(&row(&[
                d.method.clone(),
                d.proxy_size.clone(),
                d.proxy_params.to_string(),
                d.data_size.to_string(),
                beta(d.kl_penalty),
                format!("{} of {}", d.with_peak, d.curves),
                v,
            ]));
        }
    }
    s.push('\n');
    s
}

fn measured_section(a: &Analysis) -> String {
    let mut s = String::from("## What was measured\n\n");
    let bon: Vec<&CurveRow> = a.rows.iter().filter(|r| r.method == "bon").collect();
    let ppo: Vec<&CurveRow> = a.rows.iter().filter(|r| r.method == "ppo").collect();
    let distinct_u = |v: Vec<u64>| {
        let mut v = v;
        v.sort_unstable();
        v.dedup();
        v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
    };
    let mut ensembles: Vec<&str> = a.rows.iter().map(|r| r.ensemble.as_str()).collect();
    ensembles.sort_unstable();
    ensembles.dedup();
    let members = a.rows.iter().map(|r| r.members.len()).max().unwrap_or(0);
    let _ = write!(
        s,
        "A reference policy π_ref was optimized against proxy reward models: {} curves over {} proxy \
         ensemble(s) of up to {members} member(s) each ({}).",
        a.curves.len(),
        ensembles.len(),
        ensembles
            .iter()
            .map(|e| format!("`{e}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !bon.is_empty() {
        let ns = bon.iter().filter_map(|r| r.n).collect::<Vec<_>>();
        let _ = write!(
            s,
            " **Best-of-n**: n = {}…{} from a pool of {} π_ref samples per prompt, mean over {} held-out \
             prompts (unbiased estimator); KL is the analytic bound ln n − (n−1)/n in nats, an upper bound \
             on the true KL.",
            ns.iter().min().unwrap_or(&0),
            ns.iter().max().unwrap_or(&0),
            distinct_u(bon.iter().filter_map(|r| r.pool).collect()),
            distinct_u(bon.iter().map(|r| r.prompts).collect()),
        );
    }
    if !ppo.is_empty() {
        let mut betas: Vec<f64> = ppo.iter().filter_map(|r| r.kl_penalty).collect();
        betas.sort_by(f64::total_cmp);
        betas.dedup();
        let steps = ppo.iter().filter_map(|r| r.step).collect::<Vec<_>>();
        let _ = write!(
            s,
            " **PPO**: KL penalties {}, evaluated at steps {}…{} on {} held-out prompts; KL(π‖π_ref) is \
             the k1 estimate on fresh samples in nats (values below 0, sampling noise near π_ref, are read \
             as 0 here).",
            betas.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(", "),
            steps.iter().min().unwrap_or(&0),
            steps.iter().max().unwrap_or(&0),
            distinct_u(ppo.iter().map(|r| r.prompts).collect()),
        );
    }
    s.push_str(
        "\n\nGold is the gold RM's score in **π_ref standard deviations** (0 = π_ref's mean; \"gold \
         (π_ref std units)\" below), a mean over the evaluation prompts; ± is one standard error (s.e.) \
         over those prompts unless a table says otherwise. KL is in nats. Aggregators over the k member \
         scores: `memberK` = proxy member K alone (a single proxy; `member0` is the single-proxy \
         baseline), `mean`, `median`, `wco` = min (worst case), `uwo(λ)` = mean − λ·variance, \
         `mean_std(λ)` = mean − λ·std.",
    );
    let heldout = a.rows.iter().any(|r| r.heldout.is_some_and(f64::is_finite));
    s.push_str(if heldout {
        " A held-out proxy (trained on disjoint preference data, never optimized against) scored the same \
         samples.\n\n"
    } else {
        " This folder has no held-out proxy scores, so the `heldout_peak` stopping rule picks nothing.\n\n"
    });
    s
}

fn rm_section(a: &Analysis) -> String {
    let mut s = String::from("## Reward models\n\n");
    let worlds = a.rm.iter().filter(|r| r.role == "gold").count();
    if let Some(g) = a.rm.iter().find(|r| r.role == "gold") {
        let _ = writeln!(
            s,
            "Gold RM{}: {} parameters, distilled from the labeler on {} samples (R² {} on held-out distillation \
             samples); it orders {}% of {} held-out π_ref pairs as the labeler does.\n",
            if worlds > 1 { format!(" of replicate 0's world (each of the {worlds} worlds has its own; all in `rm.csv`)") } else { String::new() },
            g.params,
            g.train_examples,
            onum(g.distill_r2, 3),
            num(100.0 * g.val_accuracy, 1),
            g.val_pairs
        );
    }
    s.push_str(
        "Proxies (role `proxy`: the ensembles optimized against; any other role, e.g. a held-out proxy, is \
         never optimized against): validation accuracy = the percentage of held-out π_ref pairs a model \
         orders as gold does; mean ± sample standard deviation over the ensemble's members.\n\n",
    );
    s.push_str(&header(&[
        "role",
        "ensemble",
        "size",
        "params",
        "training pairs",
        "label noise",
        "members",
        "val accuracy (%)",
        "held-out pairs",
    ]));
    let mut groups: Vec<(&str, &str, Vec<&RmRow>)> = Vec::new();
    for r in a.rm.iter().filter(|r| r.role != "gold") {
        match groups.iter_mut().find(|g| g.0 == r.role && g.1 == r.ensemble) {
            Some(g) => g.2.push(r),
            None => groups.push((&r.role, &r.ensemble, vec![r])),
        }
    }
    groups.sort_by(|a, b| {
        let (x, y) = (a.2[0], b.2[0]);
        (a.0 != "proxy", a.0)
            .cmp(&(b.0 != "proxy", b.0))
            .then(x.params.cmp(&y.params))
            .then(x.train_examples.cmp(&y.train_examples))
            .then(x.label_noise.unwrap_or(0.0).total_cmp(&y.label_noise.unwrap_or(0.0)))
            .then(a.1.cmp(b.1))
    });
    for (role, ensemble, rs) in &groups {
        let acc: Vec<f64> = rs.iter().map(|r| 100.0 * r.val_accuracy).collect();
        let m = acc.iter().sum::<f64>() / acc.len() as f64;
        let sd = if acc.len() > 1 {
            (acc.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (acc.len() - 1) as f64).sqrt()
        } else {
            f64::NAN
        };
        let r = rs[0];
        s.push_str(&row(&[
            role.to_string(),
            if ensemble.is_empty() {
                "—".to_string()
            } else {
                format!("`{ensemble}`")
            },
            r.size.clone(),
            r.params.to_string(),
            r.train_examples.to_string(),
            onum(r.label_noise, 2),
            rs.len().to_string(),
            if sd.is_finite() {
                format!("{} ± {}", num(m, 1), num(sd, 1))
            } else {
                num(m, 1)
            },
            r.val_pairs.to_string(),
        ]));
    }
    s.push('\n');
    s
}

/// Columns of the gold and proxy fit tables (gold adds whether the curve clearly falls).
const FIT_COLUMNS: [&str; 12] = [
    "method",
    "ensemble",
    "aggregator",
    "KL penalty",
    "points",
    "α",
    "β",
    "R²",
    "KL* (nats)",
    "predicted peak gain",
    "observed peak gain (at, KL nats)",
    "interior peak",
];

fn fits_section(a: &Analysis) -> String {
    let mut s = String::from("## Functional-form fits\n\n");
    s.push_str(
        "Every curve's **gain** y = gold − gold at its first point (n = 1 or PPO step 0: π_ref itself, \
         KL = 0) is fitted, so R(0) = 0 as in Gao et al. (2023), by least squares without intercept in \
         d = √KL (KL clamped at ≥ 0): best-of-n `d(α − βd)`, PPO `d(α − β ln d)`. α is in gold/√nat; \
         β in gold/nat (best-of-n) or gold/√nat (PPO). KL* = d*² (nats) is the fitted peak and \
         \"predicted\" the fitted peak gain (gold, π_ref std units); \"observed\" is the largest gain on \
         the curve ± its gold s.e. over prompts, where it is, and its KL. Interior = the observed peak is \
         neither the first nor the last point. Clear fall = gold at the last point is below the observed \
         peak by more than 2 paired s.e. (drop ± paired s.e. over prompts): *in-sample*, the peak chosen \
         on the prompts that measure it, so it overstates falls (it fires on flat curves far above its \
         nominal rate); the cross-fitted fall across replicates is in the Conclusions. † = KL* lies beyond the \
         largest KL measured on the curve (an extrapolation); \"no peak\" = the fit never turns down.\n\n",
    );
    let gold_columns: Vec<&str> = FIT_COLUMNS.iter().copied().chain(["clear fall (drop ± s.e.)"]).collect();
    s.push_str(&header(&gold_columns));
    for f in a.fits.iter().filter(|f| f.target == Target::Gold) {
        s.push_str(&fit_cells(f, true));
    }
    s.push_str("\n<details><summary>Proxy fits: the same form on the optimized proxy's gain</summary>\n\n");
    s.push_str(&header(&FIT_COLUMNS));
    for f in a.fits.iter().filter(|f| f.target == Target::Proxy) {
        s.push_str(&fit_cells(f, false));
    }
    s.push_str("\n</details>\n\n");
    s
}

fn fit_cells(f: &FitRow, gold: bool) -> String {
    let fit = f.fit.as_ref();
    let observed = if f.peak.is_some() {
        let se = if f.peak_se.is_finite() {
            format!(" ± {}", num(f.peak_se, 3))
        } else {
            String::new()
        };
        format!("{}{se} ({}, {})", num(f.peak_gain, 3), f.peak_at, num(f.peak_kl, 2))
    } else {
        "—".to_string()
    };
    let mut cells = vec![
        f.id.method.clone(),
        format!("`{}`", f.id.ensemble),
        f.id.aggregator_label(),
        penalty(&f.id),
        f.points.to_string(),
        onum(fit.map(|x| x.alpha), 3),
        onum(fit.map(|x| x.beta), 3),
        onum(fit.map(|x| x.r2), 3),
        match fit {
            None => "no fit".to_string(),
            Some(x) => x.kl_star.map_or("no peak".to_string(), |k| {
                // A fitted peak beyond the largest KL measured is an extrapolation.
                format!("{}{}", num(k, 2), if k > f.last_kl.max(f.peak_kl) { "†" } else { "" })
            }),
        },
        onum(fit.and_then(|x| x.peak_pred), 3),
        observed,
        yes_no(f.interior_peak).to_string(),
    ];
    if gold {
        cells.push(match (f.clear_fall, f.fall, f.fall_se) {
            (Some(c), Some(d), Some(se)) => format!("{} ({} ± {})", yes_no(c), num(d, 3), num(se, 3)),
            _ => "—".to_string(),
        });
    }
    row(&cells)
}

fn scaling_section(a: &Analysis) -> String {
    let mut s = String::from("## Scaling\n\n");
    if a.scaling.is_empty() {
        s.push_str(
            "No scaling fit: no configuration has gold fits at ≥ 2 distinct proxy sizes (data size fixed) \
             or ≥ 2 distinct data sizes (proxy size fixed).\n\n",
        );
        return s;
    }
    s.push_str(
        "Each fitted gold coefficient against x = log10(proxy parameters) with the data size fixed, or \
         against x = log10(training pairs) with the proxy size fixed: `coefficient = slope·x + intercept` \
         (slope per decade of size; intercepts in `scaling.csv`). Units as in the fits (α gold/√nat; β gold/nat for best-of-n, gold/√nat \
         for PPO; d* √nats; KL* nats). With 2 points R² is 1 by construction.\n\n",
    );
    s.push_str(&header(&[
        "method",
        "aggregator",
        "KL penalty",
        "noise",
        "x",
        "held fixed",
        "points",
        "α: slope (R²)",
        "β: slope (R²)",
        "d*: slope (R²)",
        "KL*: slope (R²)",
    ]));
    // One line per group; rows of a group are adjacent (scaling() emits them together).
    let same = |x: &ScalingRow, y: &ScalingRow| {
        x.method == y.method
            && x.aggregator == y.aggregator
            && x.lambda == y.lambda
            && x.kl_penalty == y.kl_penalty
            && x.label_noise == y.label_noise
            && x.axis == y.axis
            && x.fixed_value == y.fixed_value
    };
    let mut i = 0;
    while i < a.scaling.len() {
        let first = &a.scaling[i];
        let group: Vec<&ScalingRow> = a.scaling[i..].iter().take_while(|r| same(first, r)).collect();
        i += group.len();
        let fixed = match first.axis {
            analysis::Axis::ProxyParams => format!("{} pairs", first.fixed_value),
            analysis::Axis::DataSize => format!("{} params", first.fixed_value),
        };
        let mut cells = vec![
            first.method.clone(),
            analysis::aggregator_label(&first.aggregator, first.lambda),
            first.kl_penalty.map_or("—".to_string(), |b| b.to_string()),
            num(first.label_noise, 2),
            first.axis.x_name().to_string(),
            fixed,
            group.iter().map(|r| r.fit.points).max().unwrap_or(0).to_string(),
        ];
        for coef in analysis::SCALING_COEFFICIENTS {
            cells.push(
                group
                    .iter()
                    .find(|r| r.coefficient == coef)
                    .map_or("—".to_string(), |r| {
                        format!("{} ({})", num(r.fit.slope, 3), num(r.fit.r2, 2))
                    }),
            );
        }
        s.push_str(&row(&cells));
    }
    if a.scaling_figure {
        s.push_str(
            "\n![scaling](scaling.png)\n\n`scaling.png` ([svg](scaling.svg)): α, β and KL* of the \
             single-proxy (`member0`) gold fits against log10(proxy parameters), one line per data size.\n",
        );
    }
    s.push('\n');
    s
}

fn stopping_section(a: &Analysis) -> String {
    let mut s = String::from("## Gold-free stopping rules\n\n");
    s.push_str(
        "*In-sample and per curve*: each rule is graded here by gold on the same samples whose signals it \
         read, and the observed peak is chosen on them too (the winner's curse); the cross-fitted, \
         replicated regrets and the cross-validated choice are in the Conclusions. ",
    );
    s.push_str(
        "Each rule picks a point of a curve without reading gold: `heldout_peak` (the held-out proxy's \
         peak), `penalized_peak(kappa=κ)` (the peak of member mean − κ·√disagreement), \
         `disagreement_rise(tau=τ)` (the last point before the members' disagreement exceeds (1 + τ) × its \
         value at π_ref), `proxy_peak` (the optimized proxy's peak: the naive baseline), and, on \
         single-member curves, `other_members_peak` (the peak of the mean of the members not optimized \
         against). Regret = gold at the curve's observed peak − gold at the chosen point (π_ref std units, \
         ≥ 0); as a % of the gain = of (peak gold − gold at the first point), over curves whose gain is \
         > 0 (0% = stopped at the peak, 100% = no better than π_ref).\n\n",
    );
    let present: Vec<&str> = a.stops.iter().map(|r| r.rule.as_str()).collect();
    let silent: Vec<String> = analysis::rule_names()
        .into_iter()
        .filter(|n| !present.contains(&n.as_str()))
        .collect();
    let mut scopes: Vec<&str> = a.summary.iter().map(|r| r.scope.as_str()).collect();
    scopes.dedup();
    for scope in scopes {
        let what = match scope {
            "all" => "all curves".to_string(),
            "bon" => "best-of-n curves".to_string(),
            "ppo" => "PPO curves".to_string(),
            analysis::INTERIOR_SCOPE => {
                "the curves whose gold peaks strictly inside them (where stopping early matters)".to_string()
            }
            m => format!("{m} curves"),
        };
        let _ = writeln!(s, "Rules ranked by median regret fraction, {what}:\n");
        s.push_str(&header(&[
            "rank",
            "rule",
            "curves",
            "curves with gain > 0",
            "median regret (gold)",
            "median regret (% of gain)",
            "worst (% of gain)",
        ]));
        for (i, r) in a.summary.iter().filter(|r| r.scope == scope).enumerate() {
            let x = &r.summary;
            s.push_str(&row(&[
                (i + 1).to_string(),
                format!("`{}`", x.rule),
                x.curves.to_string(),
                x.frac_curves.to_string(),
                num(x.median_regret, 3),
                pct(x.median_regret_frac),
                pct(x.worst_regret_frac),
            ]));
        }
        s.push('\n');
    }
    for name in &silent {
        let why = if name == analysis::OTHER_MEMBERS_PEAK {
            "no single-member curve of an ensemble with ≥ 2 members"
        } else if name.starts_with("heldout_peak") {
            "no held-out proxy scores (`heldout`) in `curves.parquet`"
        } else {
            "its inputs are missing on every curve"
        };
        let _ = writeln!(s, "`{name}` picked nothing: {why}.\n");
    }
    if a.stops.is_empty() {
        return s;
    }
    s.push_str("<details><summary>Every rule on every curve</summary>\n\n");
    s.push_str(&header(&[
        "curve",
        "rule",
        "chosen (KL nats)",
        "gold there",
        "peak (KL nats)",
        "peak gold",
        "regret",
        "% of gain",
    ]));
    for r in &a.stops {
        let g = &r.regret;
        s.push_str(&row(&[
            format!("`{}`", r.id.key),
            format!("`{}`", r.rule),
            format!("{} ({})", r.chosen_at, num(g.chosen_kl, 2)),
            num(g.gold_chosen, 3),
            format!("{} ({})", r.peak_at, num(g.peak_kl, 2)),
            num(g.gold_peak, 3),
            num(g.regret, 3),
            pct(g.regret_frac),
        ]));
    }
    s.push_str("\n</details>\n\n");
    s
}

fn aggregators_section(a: &Analysis) -> String {
    let mut s = String::from("## Aggregators at matched KL\n\n");
    s.push_str(
        "*Per replicate's curves, unpaired*: the paired differences across replicates are in the \
         Conclusions. ",
    );
    let _ = write!(
        s,
        "Gold (π_ref std units) of every aggregator at KL budgets of {} nats (linear in KL between curve \
         points; a budget is shown only where every curve of the configuration reaches it), and each \
         aggregator's best gold with the KL (nats) where it is reached. ± is the s.e. over what the last \
         column says: the evaluation prompts of one curve (interpolated at a budget), or the member \
         seeds of the single-proxy curves (`{MEMBERS_AVG}`: the average single proxy; its s.e. is \
         across seeds scored on the same prompts).\n\n",
        analysis::KL_BUDGETS
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut methods: Vec<&str> = a.aggs.iter().map(|r| r.method.as_str()).collect();
    methods.dedup();
    for method in methods {
        let mine: Vec<&AggRow> = a.aggs.iter().filter(|r| r.method == method).collect();
        let mut budgets: Vec<f64> = mine
            .iter()
            .filter(|r| r.measure == Measure::AtKl)
            .map(|r| r.kl)
            .collect();
        budgets.sort_by(f64::total_cmp);
        budgets.dedup();
        let _ = writeln!(
            s,
            "{}:\n",
            if method == "bon" {
                "Best-of-n"
            } else if method == "ppo" {
                "PPO"
            } else {
                method
            }
        );
        let mut cols: Vec<String> = vec!["ensemble(s)".into(), "KL penalty".into(), "aggregator".into()];
        cols.extend(budgets.iter().map(|b| format!("gold at KL {b} nats")));
        cols.extend(["best gold (KL nats)".into(), "± over".into()]);
        s.push_str(&header(&cols.iter().map(String::as_str).collect::<Vec<_>>()));
        // Rows in order of first appearance of (cell, aggregator).
        let mut keys: Vec<(String, Option<u64>, String)> = Vec::new();
        for r in &mine {
            let k = (
                r.ensembles.clone(),
                r.kl_penalty.map(f64::to_bits),
                r.aggregator.clone(),
            );
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        for (ens, beta, agg) in keys {
            let of = |r: &&&AggRow| r.ensembles == ens && r.kl_penalty.map(f64::to_bits) == beta && r.aggregator == agg;
            let cell: Vec<&&AggRow> = mine.iter().filter(of).collect();
            let best = cell.iter().find(|r| r.measure == Measure::Best);
            let over = best.or(cell.first()).map_or(String::new(), |r| match r.se_over {
                SeOver::Prompts => "prompts".to_string(),
                SeOver::MemberSeeds => format!("{} member seeds", r.replicates),
            });
            let mut cells = vec![
                ens.split(';').map(|e| format!("`{e}`")).collect::<Vec<_>>().join(", "),
                beta.map_or("—".to_string(), |b| f64::from_bits(b).to_string()),
                agg.clone(),
            ];
            for b in &budgets {
                cells.push(
                    cell.iter()
                        .find(|r| r.measure == Measure::AtKl && r.kl == *b)
                        .map_or("—".to_string(), |r| format!("{} ± {}", num(r.gold, 3), num(r.se, 3))),
                );
            }
            cells.push(best.map_or("—".to_string(), |r| {
                format!("{} ± {} ({})", num(r.gold, 3), num(r.se, 3), num(r.kl, 2))
            }));
            cells.push(over);
            s.push_str(&row(&cells));
        }
        s.push('\n');
    }
    s
}

fn figures_section(a: &Analysis) -> String {
    let mut s = String::from("## Figures\n\n");
    if a.figures.is_empty() {
        s.push_str("No figures in this folder.\n\n");
        return s;
    }
    for f in &a.figures {
        let stem = f.trim_end_matches(".png");
        let _ = writeln!(s, "![{stem}]({f})\n\n`{f}` ([svg]({stem}.svg))\n");
    }
    s
}

/// `: best-of-n 20 of 20, PPO 0 of 7` where there are several methods, else empty.
fn r2_by_method(a: &Analysis) -> String {
    let interior: Vec<&FitRow> = a
        .fits
        .iter()
        .filter(|f| f.target == Target::Gold && f.interior_peak)
        .collect();
    let mut methods: Vec<&str> = interior.iter().map(|f| f.id.method.as_str()).collect();
    methods.sort_unstable();
    methods.dedup();
    if methods.len() < 2 {
        return String::new();
    }
    let parts: Vec<String> = methods
        .iter()
        .map(|m| {
            let mine: Vec<&&FitRow> = interior.iter().filter(|f| f.id.method == *m).collect();
            let pass = mine.iter().filter(|f| f.fit.is_some_and(|x| x.r2 >= R2_TARGET)).count();
            let name = match *m {
                "bon" => "best-of-n",
                "ppo" => "PPO",
                m => m,
            };
            format!("{name} {pass} of {}", mine.len())
        })
        .collect();
    format!(" ({})", parts.join(", "))
}

fn acceptance_section(a: &Analysis) -> String {
    let acc = &a.acceptance;
    let mut s = String::from("## Acceptance\n\n");
    let gold_curves = a.fits.iter().filter(|f| f.target == Target::Gold).count();
    match acc.r2_met {
        None => {
            let _ = writeln!(
                s,
                "(a) R² ≥ {R2_TARGET} on every gold curve with an interior observed peak: **not applicable** — \
                 none of the {gold_curves} gold curves has an interior observed peak.\n"
            );
        }
        Some(met) => {
            let _ = writeln!(
                s,
                "(a) R² ≥ {R2_TARGET} on every gold curve with an interior observed peak: **{}** — {} of {} \
                 such curves (of {gold_curves} gold curves) fit with R² ≥ {R2_TARGET}{}.",
                if met { "met" } else { "NOT met" },
                acc.interior_curves - acc.r2_misses.len(),
                acc.interior_curves,
                r2_by_method(a),
            );
            if !acc.r2_misses.is_empty() {
                s.push_str("Curves that miss:\n\n");
                for (key, r2) in &acc.r2_misses {
                    let _ = writeln!(
                        s,
                        "- `{key}`: {}",
                        r2.map_or("no fit".to_string(), |r| format!("R² = {}", num(r, 3)))
                    );
                }
            }
            s.push('\n');
        }
    }
    match (&acc.best_rule, acc.best_median_regret_frac, acc.regret_met) {
        (Some(rule), Some(frac), Some(met)) => {
            let baseline = if rule == "proxy_peak" {
                " (the naive proxy-peak baseline ranks first: no gold-free signal beat trusting the proxy)"
            } else if rule == OTHER_MEMBERS_PEAK {
                " (applies to single-member curves only)"
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "(b) The best gold-free rule's median regret ≤ {}% of the peak's gain: **{}** — `{rule}`{baseline} \
                 has a median regret of {} of the gain over the {} curves whose gain is > 0.\n",
                num(100.0 * REGRET_TARGET, 0),
                if met { "met" } else { "NOT met" },
                pct(Some(frac)),
                acc.regret_curves,
            );
            if let (Some(rule), Some(frac)) = (&acc.interior_best_rule, acc.interior_median_regret_frac) {
                let _ = writeln!(
                    s,
                    "For context (not the target): on the {} curves whose gold peaks strictly inside them, where \
                     stopping early matters, the best rule is `{rule}` with a median regret of {} of the gain; a \
                     curve that peaks at its last point gives no regret to any rule that stops last.\n",
                    acc.interior_regret_curves,
                    pct(Some(frac)),
                );
            }
        }
        _ => {
            let _ = writeln!(
                s,
                "(b) The best gold-free rule's median regret ≤ {}% of the peak's gain: **not applicable** — no \
                 curve has a gold gain > 0 over π_ref (or no rule picked a point).\n",
                num(100.0 * REGRET_TARGET, 0)
            );
        }
    }
    s
}
