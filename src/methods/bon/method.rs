//! Best-of-n as a method of a study: its cells in the plan (each replicate's held-out
//! prompts in cells of `prompts_per_cell`, each reading every proxy of the replicate), and
//! what they become: each ensemble × aggregator's curve, summarized over all of a
//! replicate's prompts, and the `bon_units` table (per prompt, however the prompts were split
//! into cells).

use std::path::Path;

use polars::prelude::*;

use super::cell::{BonCell, BonUnits, PromptCurves};
use super::{BonPoint, Selection};
use crate::config::Experiment;
use crate::error::{Error, Result};
use crate::stats::aggregate::Aggregator;
use crate::methods::{Assembled, Made, Method, Needs, Part, Planned, PointKl, Table, UnitTable};
use crate::stats::curve::{replicate_suffix, CurveRow, Traits};
use crate::train::proxy::{ensemble_member, ProxyCell};

/// Best-of-n as a method of the plan: each replicate's held-out prompts in cells of
/// `prompts_per_cell`, each reading every proxy of the replicate.
pub struct BestOfN;

impl Method for BestOfN {
    fn name(&self) -> &'static str {
        "bon"
    }

    fn traits(&self) -> Traits {
        Traits { label: "best-of-n", form: crate::stats::fit::Form::BestOfN, kl_measured: false }
    }

    fn cells(&self, exp: &Experiment, r: usize, grid: &[ProxyCell]) -> Vec<Planned> {
        let bon = &exp.bon;
        if !bon.enabled {
            return Vec::new();
        }
        (0..bon.prompts)
            .step_by(bon.prompts_per_cell)
            .map(|start| {
                let end = (start + bon.prompts_per_cell).min(bon.prompts);
                Planned {
                    id: format!("bon/p{start}-{}{}", end - 1, replicate_suffix(r)),
                    pairs: false,
                    cell: Box::new(BonCell { replicate: r, start, end }),
                    members: (0..grid.len()).collect(),
                }
            })
            .collect()
    }

    fn cells_per_replicate(&self, exp: &Experiment) -> u64 {
        let b = &exp.bon;
        if b.enabled { b.prompts.div_ceil(b.prompts_per_cell.max(1)) as u64 } else { 0 }
    }

    fn size_keys(&self) -> &'static str {
        "replicates × bon.prompts × bon.pool × proxy models"
    }

    fn assemble(&self, exp: &Experiment, proxies: &[&ProxyCell], cells: &[Made], store: &Path) -> Result<Assembled> {
        let units: Vec<&BonUnits> = cells.iter().filter(|m| m.cell.as_any().is::<BonCell>()).map(|m| m.loaded.get::<BonUnits>()).collect();
        let (curves, merged) = rows(exp, proxies, &units, store)?;
        let mut tables = Vec::new();
        if !merged.is_empty() {
            tables.push(Table {
                stem: "bon_units",
                build: Box::new(move || units_frame(&merged)),
            });
        }
        Ok(Assembled { curves, tables, runs: None })
    }

    fn needs(&self, exp: &Experiment) -> Needs {
        let (b, x) = (&exp.bon, &exp.proxy);
        if !b.enabled {
            return Needs::default();
        }
        let u = |n: usize| n as u64;
        let per_cell = u(b.prompts.min(b.prompts_per_cell)).saturating_mul(u(b.pool));
        let ensembles = u(crate::train::proxy::ensembles(&crate::train::proxy::proxy_cells(exp, 0)).len());
        let rows = [u(exp.replicates), ensembles, u(b.aggregators(x.members).len()), u(b.prompts), u(super::n_grid(b.pool).len())]
            .iter()
            .fold(1u64, |a, &n| a.saturating_mul(n));
        Needs {
            pools: Some((
                Part { what: "best-of-n pools (bon.prompts_per_cell × bon.pool, one cell per core)", key: "bon.pool", count: per_cell },
                self.cells_per_replicate(exp),
            )),
            scored: per_cell,
            unit_rows: rows,
            unit_values: rows.saturating_mul(10 + u(x.members)),
            unit_keys: "best-of-n: bon.prompts × the n grid of bon.pool × ensembles × aggregators",
            ..Needs::default()
        }
    }

    fn outline(&self, exp: &Experiment, _grid: &[ProxyCell]) -> Vec<String> {
        let b = &exp.bon;
        if !b.enabled {
            return Vec::new();
        }
        vec![format!("best-of-n: {} prompts x {} samples per prompt, per replicate", b.prompts, b.pool)]
    }

    fn in_brief(&self, rows: &[&CurveRow]) -> String {
        format!("best-of-n (n up to {})", rows.iter().filter_map(|r| r.n).max().unwrap_or(0))
    }

    fn measured(&self, rows: &[&CurveRow]) -> String {
        let ns = rows.iter().filter_map(|r| r.n).collect::<Vec<_>>();
        format!(
            "**Best-of-n**: n = {}…{} from a pool of {} π_ref samples per prompt, mean over {} held-out \
             prompts (unbiased estimator); KL is the analytic bound ln n − (n−1)/n in nats, an upper bound \
             on the true KL.",
            ns.iter().min().unwrap_or(&0),
            ns.iter().max().unwrap_or(&0),
            crate::methods::listed(rows.iter().filter_map(|r| r.pool).collect()),
            crate::methods::listed(rows.iter().map(|r| r.prompts).collect()),
        )
    }

    fn unit_table(&self) -> UnitTable {
        UnitTable {
            traits: self.traits(),
            stem: "bon_units",
            point: "n",
            at: |n| format!("n={n}"),
            kl: PointKl::Of(|n| super::kl_bound(n as usize)),
            kl_penalty: false,
            disagreement: true,
        }
    }
}

/// The best-of-n curves of every replicate: each ensemble × aggregator's per-prompt values
/// from all of the replicate's cells, prompts in order, summarized over prompts; and those
/// per-prompt values merged into one [`BonUnits`] per replicate (however the prompts were
/// split into cells).
fn rows(exp: &Experiment, proxies: &[&ProxyCell], units: &[&BonUnits], store: &Path) -> Result<(Vec<CurveRow>, Vec<BonUnits>)> {
    let b = &exp.bon;
    let mut rows = Vec::new();
    let mut merged = Vec::new();
    for r in 0..exp.replicates {
        let mut cells: Vec<&BonUnits> = units.iter().copied().filter(|u| u.cell.replicate == r).collect();
        if cells.is_empty() {
            continue;
        }
        cells.sort_by_key(|u| u.cell.start);
        let covered: usize = cells.iter().map(|u| u.cell.end - u.cell.start).sum();
        if covered != b.prompts || cells.iter().any(|u| u.curves.len() != cells[0].curves.len()) {
            return Err(Error::Artifact {
                dir: store.to_path_buf(),
                reason: format!("best-of-n cells of replicate {r} cover {covered} of {} prompts", b.prompts),
            });
        }
        let ns = &cells[0].ns;
        let mut all = BonUnits {
            cell: BonCell { replicate: r, start: 0, end: b.prompts },
            ns: ns.clone(),
            curves: Vec::new(),
        };
        for (j, c) in cells[0].curves.iter().enumerate() {
            let per: Vec<Vec<Selection>> = cells.iter().flat_map(|u| u.curves[j].per.iter().cloned()).collect();
            let proxy = ensemble_member(proxies, r, &c.ensemble);
            let params = exp.proxy_params(&proxy.size);
            for pt in super::summarize(&per, ns) {
                rows.push(point_row(pt, c.aggregator, proxy, params, b.prompts, b.pool));
            }
            all.curves.push(PromptCurves { per, ..c.clone() });
        }
        merged.push(all);
    }
    Ok((rows, merged))
}

/// The `bon_units` table: best-of-n per prompt, replicate by replicate, curve by curve,
/// prompts in order; `heldout` empty when the study has no held-out proxy.
fn units_frame(units: &[BonUnits]) -> Result<DataFrame> {
    let mut sorted: Vec<&BonUnits> = units.iter().collect();
    sorted.sort_by_key(|u| (u.cell.replicate, u.cell.start));
    let mut all: Option<DataFrame> = None;
    for u in sorted {
        let mut df = super::cell::frame(u)?;
        let reps = Column::new("replicate".into(), vec![u.cell.replicate as u64; df.height()]);
        df.insert_column(0, reps).map_err(|e| Error::Table { path: "bon_units".into(), msg: e.to_string() })?;
        all = Some(match all {
            None => df,
            Some(a) => a.vstack(&df).map_err(|e| Error::Table { path: "bon_units".into(), msg: e.to_string() })?,
        });
    }
    Ok(all.unwrap_or_default())
}

/// The curve row of best-of-n point `pt` through `aggregator`, over the ensemble of `proxy`
/// (one of its members; `params` its parameters), summarized over `prompts` prompts with
/// pools of `pool`.
pub fn point_row(pt: BonPoint, aggregator: Aggregator, proxy: &ProxyCell, params: u64, prompts: usize, pool: usize) -> CurveRow {
    CurveRow {
        method: "bon".into(),
        aggregator: aggregator.into(),
        proxy_size: proxy.size.name.clone(),
        proxy_params: params,
        data_size: proxy.data_size as u64,
        label_noise: proxy.noise,
        ensemble: proxy.ensemble_id(),
        n: Some(pt.n as u64),
        step: None,
        kl_penalty: None,
        kl: pt.kl_bound,
        kl_kind: "bon_bound".into(),
        kl_k3: None,
        kl_bound: Some(pt.kl_bound),
        kl_exact: Some(pt.kl_exact),
        sqrt_kl: pt.kl_bound.sqrt(),
        gold: pt.gold,
        gold_se: pt.gold_se,
        measures: pt.measures,
        gold_below_peak: pt.gold_below_peak,
        gold_below_peak_se: pt.gold_below_peak_se,
        prompts: prompts as u64,
        pool: Some(pool as u64),
        replicate: proxy.replicate as u64,
    }
}
