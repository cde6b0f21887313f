//! The polars frames `report` writes: `fits`, `scaling`, `stopping`,
//! `aggregators` and `conclusions`, one row per analysis row, columns as documented on each.

use polars::prelude::*;

use crate::stats::analysis::{AggRow, CurveId, FitRow, ScalingRow, StopRow};

fn frame(name: &str, height: usize, columns: Vec<Column>) -> DataFrame {
    DataFrame::new(height, columns).unwrap_or_else(|e| panic!("{name}: columns are built with one length: {e}"))
}

/// The curve-identity columns shared by the fit and stopping tables.
fn id_columns<'a>(ids: impl Iterator<Item = &'a CurveId> + Clone) -> Vec<Column> {
    let s = |f: fn(&CurveId) -> String| ids.clone().map(f).collect::<Vec<_>>();
    vec![
        Column::new("curve".into(), s(|i| i.key.clone())),
        Column::new("method".into(), s(|i| i.line.method.clone())),
        Column::new("ensemble".into(), s(|i| i.line.ensemble.clone())),
        Column::new("proxy_size".into(), s(|i| i.line.proxy_size.clone())),
        Column::new(
            "proxy_params".into(),
            ids.clone().map(|i| i.line.proxy_params).collect::<Vec<_>>(),
        ),
        Column::new("data_size".into(), ids.clone().map(|i| i.line.data_size).collect::<Vec<_>>()),
        Column::new(
            "label_noise".into(),
            ids.clone().map(|i| i.line.label_noise).collect::<Vec<_>>(),
        ),
        Column::new("aggregator".into(), s(|i| i.line.aggregator.name())),
        Column::new("lambda".into(), ids.clone().map(|i| i.line.aggregator.lambda()).collect::<Vec<_>>()),
        Column::new(
            "kl_penalty".into(),
            ids.clone().map(|i| i.line.kl_penalty).collect::<Vec<_>>(),
        ),
        Column::new("replicate".into(), ids.clone().map(|i| i.replicate).collect::<Vec<_>>()),
    ]
}

/// `fits`: one row per curve and target (gold, proxy).
pub(super) fn fits_frame(fits: &[FitRow]) -> DataFrame {
    let x = |f: fn(&FitRow) -> f64| fits.iter().map(f).collect::<Vec<_>>();
    let ox = |f: fn(&FitRow) -> Option<f64>| fits.iter().map(f).collect::<Vec<_>>();
    let mut cols = id_columns(fits.iter().map(|f| &f.id));
    cols.extend([
        Column::new(
            "target".into(),
            fits.iter().map(|f| f.target.name()).collect::<Vec<_>>(),
        ),
        Column::new("form".into(), fits.iter().map(|f| f.form.name()).collect::<Vec<_>>()),
        Column::new(
            "points".into(),
            fits.iter().map(|f| f.points as u64).collect::<Vec<_>>(),
        ),
        Column::new("baseline".into(), x(|f| f.baseline)),
        Column::new("alpha".into(), ox(|f| f.fit.map(|x| x.alpha))),
        Column::new("beta".into(), ox(|f| f.fit.map(|x| x.beta))),
        Column::new("r2".into(), ox(|f| f.fit.map(|x| x.r2))),
        Column::new(
            "fit_points".into(),
            fits.iter().map(|f| f.fit.map(|x| x.points as u64)).collect::<Vec<_>>(),
        ),
        Column::new("d_star".into(), ox(|f| f.fit.and_then(|x| x.d_star))),
        Column::new("kl_star".into(), ox(|f| f.fit.and_then(|x| x.kl_star))),
        Column::new("peak_gain_pred".into(), ox(|f| f.fit.and_then(|x| x.peak_pred))),
        Column::new(
            "peak_index".into(),
            fits.iter().map(|f| f.peak.map(|i| i as u64)).collect::<Vec<_>>(),
        ),
        Column::new(
            "peak_at".into(),
            fits.iter().map(|f| f.peak_at.clone()).collect::<Vec<_>>(),
        ),
        Column::new("peak_kl".into(), x(|f| f.peak_kl)),
        Column::new("peak_gain".into(), x(|f| f.peak_gain)),
        Column::new("peak_gold_se".into(), x(|f| f.peak_se)),
        Column::new(
            "interior_peak".into(),
            fits.iter().map(|f| f.interior_peak).collect::<Vec<_>>(),
        ),
        Column::new("last_kl".into(), x(|f| f.last_kl)),
        Column::new("last_gain".into(), x(|f| f.last_gain)),
    ]);
    frame("fits", fits.len(), cols)
}

/// `scaling`: one row per scaling fit.
pub(super) fn scaling_frame(rows: &[ScalingRow]) -> DataFrame {
    let x = |f: fn(&ScalingRow) -> f64| rows.iter().map(f).collect::<Vec<_>>();
    let cols = vec![
        Column::new(
            "method".into(),
            rows.iter().map(|r| r.method.clone()).collect::<Vec<_>>(),
        ),
        Column::new(
            "aggregator".into(),
            rows.iter().map(|r| r.aggregator.name()).collect::<Vec<_>>(),
        ),
        Column::new("lambda".into(), rows.iter().map(|r| r.aggregator.lambda()).collect::<Vec<_>>()),
        Column::new(
            "kl_penalty".into(),
            rows.iter().map(|r| r.kl_penalty).collect::<Vec<_>>(),
        ),
        Column::new("label_noise".into(), x(|r| r.label_noise)),
        Column::new("x".into(), rows.iter().map(|r| r.axis.x_name()).collect::<Vec<_>>()),
        Column::new(
            "fixed".into(),
            rows.iter().map(|r| r.axis.fixed_name()).collect::<Vec<_>>(),
        ),
        Column::new(
            "fixed_value".into(),
            rows.iter().map(|r| r.fixed_value).collect::<Vec<_>>(),
        ),
        Column::new(
            "coefficient".into(),
            rows.iter().map(|r| r.coefficient).collect::<Vec<_>>(),
        ),
        Column::new("slope".into(), x(|r| r.fit.slope)),
        Column::new("intercept".into(), x(|r| r.fit.intercept)),
        Column::new("r2".into(), x(|r| r.fit.r2)),
        Column::new(
            "points".into(),
            rows.iter().map(|r| r.fit.points as u64).collect::<Vec<_>>(),
        ),
        Column::new(
            "distinct_x".into(),
            rows.iter().map(|r| r.distinct_x as u64).collect::<Vec<_>>(),
        ),
    ];
    frame("scaling", rows.len(), cols)
}

/// `stopping`: one row per curve and rule that chose a point.
pub(super) fn stopping_frame(rows: &[StopRow]) -> DataFrame {
    let x = |f: fn(&StopRow) -> f64| rows.iter().map(f).collect::<Vec<_>>();
    let mut cols = id_columns(rows.iter().map(|r| &r.id));
    cols.extend([
        Column::new("rule".into(), rows.iter().map(|r| r.rule.clone()).collect::<Vec<_>>()),
        Column::new(
            "chosen_index".into(),
            rows.iter().map(|r| r.regret.chosen as u64).collect::<Vec<_>>(),
        ),
        Column::new(
            "chosen_at".into(),
            rows.iter().map(|r| r.chosen_at.clone()).collect::<Vec<_>>(),
        ),
        Column::new("chosen_kl".into(), x(|r| r.regret.chosen_kl)),
        Column::new("gold_chosen".into(), x(|r| r.regret.gold_chosen)),
        Column::new(
            "peak_index".into(),
            rows.iter().map(|r| r.regret.peak as u64).collect::<Vec<_>>(),
        ),
        Column::new(
            "peak_at".into(),
            rows.iter().map(|r| r.peak_at.clone()).collect::<Vec<_>>(),
        ),
        Column::new("peak_kl".into(), x(|r| r.regret.peak_kl)),
        Column::new("gold_peak".into(), x(|r| r.regret.gold_peak)),
        Column::new("regret".into(), x(|r| r.regret.regret)),
        Column::new("gain".into(), x(|r| r.regret.gain)),
        Column::new(
            "regret_frac".into(),
            rows.iter().map(|r| r.regret.regret_frac).collect::<Vec<_>>(),
        ),
    ]);
    frame("stopping", rows.len(), cols)
}

/// `aggregators`: one row per cell, aggregator and budget (or best).
pub(super) fn aggregators_frame(rows: &[AggRow]) -> DataFrame {
    let x = |f: fn(&AggRow) -> f64| rows.iter().map(f).collect::<Vec<_>>();
    let s = |f: fn(&AggRow) -> String| rows.iter().map(f).collect::<Vec<_>>();
    let cols = vec![
        Column::new("method".into(), s(|r| r.method.clone())),
        Column::new("proxy_size".into(), s(|r| r.proxy_size.clone())),
        Column::new(
            "proxy_params".into(),
            rows.iter().map(|r| r.proxy_params).collect::<Vec<_>>(),
        ),
        Column::new("data_size".into(), rows.iter().map(|r| r.data_size).collect::<Vec<_>>()),
        Column::new("label_noise".into(), x(|r| r.label_noise)),
        Column::new(
            "kl_penalty".into(),
            rows.iter().map(|r| r.kl_penalty).collect::<Vec<_>>(),
        ),
        Column::new("ensembles".into(), s(|r| r.ensembles.clone())),
        Column::new("aggregator".into(), s(|r| r.aggregator.clone())),
        Column::new(
            "measure".into(),
            rows.iter().map(|r| r.measure.name()).collect::<Vec<_>>(),
        ),
        Column::new("kl".into(), x(|r| r.kl)),
        Column::new("gold".into(), x(|r| r.gold)),
        Column::new("gold_se".into(), x(|r| r.se)),
        Column::new(
            "se_over".into(),
            rows.iter().map(|r| r.se_over.name()).collect::<Vec<_>>(),
        ),
        Column::new(
            "replicates".into(),
            rows.iter().map(|r| r.replicates as u64).collect::<Vec<_>>(),
        ),
    ];
    frame("aggregators", rows.len(), cols)
}


/// `conclusions`: one row per claim (see [`crate::stats::conclusions`]).
pub(super) fn conclusions_frame(claims: &[crate::stats::conclusions::Claim]) -> DataFrame {
    let s = |f: fn(&crate::stats::conclusions::Claim) -> String| claims.iter().map(f).collect::<Vec<_>>();
    let x = |f: fn(&crate::stats::conclusions::Claim) -> f64| claims.iter().map(f).collect::<Vec<_>>();
    let u = |f: fn(&crate::stats::conclusions::Claim) -> Option<usize>| claims.iter().map(|c| f(c).map(|v| v as u64)).collect::<Vec<_>>();
    let o = |f: fn(&crate::stats::conclusions::Claim) -> Option<f64>| claims.iter().map(f).collect::<Vec<_>>();
    frame(
        "conclusions",
        claims.len(),
        vec![
            Column::new("claim".into(), s(|c| c.claim.clone())),
            Column::new("kind".into(), s(|c| c.kind.clone())),
            Column::new("family".into(), s(|c| c.family.name().to_string())),
            Column::new("method".into(), s(|c| c.method.clone())),
            Column::new("ensemble".into(), s(|c| c.ensemble.clone())),
            Column::new("aggregator".into(), s(|c| c.aggregator.clone())),
            Column::new("baseline".into(), s(|c| c.baseline.clone())),
            Column::new("kl_penalty".into(), claims.iter().map(|c| c.kl_penalty).collect::<Vec<_>>()),
            Column::new("at".into(), s(|c| c.at.clone())),
            Column::new("estimand".into(), s(|c| c.estimand.clone())),
            Column::new("estimate".into(), x(|c| c.interval.estimate)),
            Column::new("ci_low".into(), x(|c| c.interval.low)),
            Column::new("ci_high".into(), x(|c| c.interval.high)),
            Column::new("sd".into(), x(|c| c.interval.sd)),
            Column::new("replicates".into(), claims.iter().map(|c| c.interval.replicates as u64).collect::<Vec<_>>()),
            Column::new("replicates_total".into(), claims.iter().map(|c| c.replicates_total as u64).collect::<Vec<_>>()),
            Column::new("interval_over".into(), s(|c| c.interval.over.name().to_string())),
            Column::new("missing".into(), s(|c| c.missing.iter().map(|r| format!("r{r}")).collect::<Vec<_>>().join(" "))),
            Column::new("worst_case_estimate".into(), o(|c| c.worst_case.map(|w| w.estimate))),
            Column::new("p_value".into(), x(|c| c.p_value)),
            Column::new("p_adjusted".into(), x(|c| c.p_adjusted)),
            Column::new("verdict".into(), s(|c| c.verdict.clone())),
            Column::new("replicates_needed".into(), u(|c| c.replicates_needed)),
            Column::new("replicates_needed_min_effect".into(), u(|c| c.replicates_needed_min_effect)),
            Column::new("cpu_hours_needed".into(), o(|c| c.cpu_hours_needed)),
            Column::new("cpu_hours_needed_min_effect".into(), o(|c| c.cpu_hours_needed_min_effect)),
            Column::new("note".into(), s(|c| c.note.clone())),
        ],
    )
}
