//! Assembling a results folder from made cells: the reward-model table, the curve table
//! (best-of-n rows from the best-of-n cell, PPO rows from every run's checkpoints), the PPO
//! training table, the resolved config and `manifest.json`; then the report.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};

use crate::plan::exec::{Event, Exec};
use crate::methods::bon::cell::BonUnits;
use crate::cell::store::{write_atomic, Meta, Origin};
use crate::plan::Kind;
use crate::error::{Error, Result};
use crate::output::table::{self, CurveRow, RmRow, TrainRow};
use crate::methods::ppo::cell::PpoCell;
use crate::train::proxy::ProxyCell;

/// The rows of a results folder.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    pub rm: Vec<RmRow>,
    /// Best-of-n and PPO curve points.
    pub curves: Vec<CurveRow>,
    /// PPO diagnostics, one row per update of every run.
    pub train: Vec<TrainRow>,
    /// PPO runs that failed (run id, one-line error); the other runs carried on.
    pub ppo_failures: Vec<(String, String)>,
    /// (run id, trained | reused | failed)
    pub ppo_runs: Vec<(String, &'static str)>,
    /// Fraction of a one-prompt π_ref pool that repeats an earlier sample.
    pub duplicate_fraction: f64,
    /// Best-of-n per prompt (the `bon_units` table), every replicate's cells.
    pub bon_units: Vec<BonUnits>,
    /// Every finished PPO run with its outcome (the `ppo_units` table: per evaluation
    /// sample of every checkpoint).
    pub ppo_units: Vec<(PpoCell, crate::methods::ppo::Outcome)>,
}

/// Every table's rows, from the plan's cells (all loaded in `x`).
pub fn rows(x: &Exec) -> Result<Rows> {
    let loaded = x.all()?;
    let made: Vec<usize> = x.events().iter().filter(|e| e.origin == Origin::Made).map(|e| e.cell).collect();
    let mut out = Rows::default();
    // Gold first (each world's), then the proxies in plan order, the held-out proxies last.
    let (mut golds, mut heldout) = (Vec::new(), Vec::new());
    let mut bon_units: Vec<&BonUnits> = Vec::new();
    for (i, cell) in x.plan.cells.iter().enumerate() {
        let l = &*loaded[i];
        let meta = &l.meta;
        match &cell.kind {
            // π_ref's diagnostics are replicate 0's world's.
            Kind::Policy(crate::train::policy::PolicyCell { world: 0 }) => {
                out.duplicate_fraction = meta.info.get("duplicate_fraction").and_then(Value::as_f64).unwrap_or(f64::NAN);
            }
            Kind::Gold(g) => {
                let mut row = rm_row(&cell.id, "gold", "gold", "", &x.exp.gold_arch(), None, meta);
                row.distill_r2 = meta.info.get("distill_r2").and_then(Value::as_f64);
                row.replicate = x.exp.world.per_replicate.then_some(g.world as u64);
                golds.push(row);
            }
            Kind::Proxy(c) => {
                let (role, ensemble) = if c.heldout { ("heldout", String::new()) } else { ("proxy", c.ensemble_id()) };
                let mut row = rm_row(&c.id(), role, &c.size.name, &ensemble, &x.exp.proxy_arch(&c.size), Some(c), meta);
                if c.heldout {
                    let own = x.exp.world.per_replicate || x.exp.proxy.heldout_per_replicate;
                    row.replicate = own.then_some(c.replicate as u64);
                    heldout.push(row);
                } else {
                    out.rm.push(row);
                }
            }
            Kind::Bon(_) => bon_units.push(l.get::<BonUnits>()),
            Kind::Ppo(run) => {
                let outcome = l.get::<crate::methods::ppo::cell::PpoOutcome>();
                let status = match (outcome, made.contains(&i)) {
                    (Err(_), _) => "failed",
                    (Ok(_), true) => "trained",
                    (Ok(_), false) => "reused",
                };
                out.ppo_runs.push((run.id(), status));
                match outcome {
                    Ok(o) => {
                        let first = x
                            .plan
                            .proxies()
                            .into_iter()
                            .find(|(_, c)| !c.heldout && c.replicate == run.replicate && c.ensemble_id() == run.ensemble);
                        let proxy = first.map(|(_, c)| c.clone()).expect("a run's ensemble is in the grid");
                        let (rows, train) = ppo_rows(x, run, &proxy, o);
                        out.curves.extend(rows);
                        out.train.extend(train);
                        out.ppo_units.push((run.clone(), o.clone()));
                    }
                    Err(msg) => out.ppo_failures.push((run.id(), msg.clone())),
                }
            }
            _ => {}
        }
    }
    out.rm.splice(0..0, golds);
    out.rm.extend(heldout);
    // Best-of-n rows first, as the curve table has always had them.
    let (mut curves, merged) = bon_rows(x, &bon_units)?;
    curves.append(&mut out.curves);
    out.curves = curves;
    out.bon_units = merged;
    Ok(out)
}

/// The best-of-n curves of every replicate: each ensemble × aggregator's per-prompt values
/// from all of the replicate's cells, prompts in order, summarized over prompts; and those
/// per-prompt values merged into one [`BonUnits`] per replicate (however the prompts were
/// split into cells).
fn bon_rows(x: &Exec, units: &[&BonUnits]) -> Result<(Vec<CurveRow>, Vec<BonUnits>)> {
    let b = &x.exp.bon;
    let mut rows = Vec::new();
    let mut merged = Vec::new();
    for r in 0..x.exp.replicates {
        let mut cells: Vec<&BonUnits> = units.iter().copied().filter(|u| u.cell.replicate == r).collect();
        if cells.is_empty() {
            continue;
        }
        cells.sort_by_key(|u| u.cell.start);
        let covered: usize = cells.iter().map(|u| u.cell.end - u.cell.start).sum();
        if covered != b.prompts || cells.iter().any(|u| u.curves.len() != cells[0].curves.len()) {
            return Err(Error::Artifact {
                dir: x.store.root().to_path_buf(),
                reason: format!("best-of-n cells of replicate {r} cover {covered} of {} prompts", b.prompts),
            });
        }
        let ns = &cells[0].ns;
        let mut all = BonUnits {
            cell: crate::methods::bon::cell::BonCell { replicate: r, start: 0, end: b.prompts },
            ns: ns.clone(),
            curves: Vec::new(),
        };
        for (j, c) in cells[0].curves.iter().enumerate() {
            let per: Vec<Vec<crate::methods::bon::Selection>> = cells.iter().flat_map(|u| u.curves[j].per.iter().cloned()).collect();
            let proxy = x
                .plan
                .proxies()
                .into_iter()
                .find(|(_, p)| !p.heldout && p.replicate == r && p.ensemble_id() == c.ensemble)
                .map(|(_, p)| p.clone())
                .expect("a curve's ensemble is in the grid");
            let params = x.exp.proxy_arch(&proxy.size).reward_params() as u64;
            for pt in crate::methods::bon::summarize(&per, ns) {
                rows.push(CurveRow {
                    method: "bon".into(),
                    aggregator: c.aggregator.name(),
                    lambda: c.aggregator.lambda(),
                    proxy_size: proxy.size.name.clone(),
                    proxy_params: params,
                    data_size: proxy.data_size as u64,
                    label_noise: proxy.noise,
                    ensemble: c.ensemble.clone(),
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
                    proxy: pt.proxy,
                    members: pt.members,
                    disagreement: pt.disagreement,
                    length: pt.length,
                    distinct_ratio: pt.distinct_ratio,
                    heldout: pt.heldout,
                    gold_below_peak: pt.gold_below_peak,
                    gold_below_peak_se: pt.gold_below_peak_se,
                    prompts: b.prompts as u64,
                    pool: Some(b.pool as u64),
                    replicate: r as u64,
                });
            }
            all.curves.push(crate::methods::bon::cell::PromptCurves { per, ..c.clone() });
        }
        merged.push(all);
    }
    Ok((rows, merged))
}

/// Curve rows (one per evaluation checkpoint) and training rows (one per update) of a run.
fn ppo_rows(x: &Exec, run: &PpoCell, cell: &ProxyCell, o: &crate::methods::ppo::Outcome) -> (Vec<CurveRow>, Vec<TrainRow>) {
    let params = x.exp.proxy_arch(&cell.size).reward_params() as u64;
    let below = crate::methods::ppo::below_peak(&o.evaluations);
    let rows = o
        .evaluations
        .iter()
        .zip(below)
        .map(|(e, (gold_below_peak, gold_below_peak_se))| {
            let (gold, gold_se) = crate::stats::mean_se(&e.gold_by_prompt);
            CurveRow {
                method: "ppo".into(),
                aggregator: run.aggregator.name(),
                lambda: run.aggregator.lambda(),
                proxy_size: cell.size.name.clone(),
                proxy_params: params,
                data_size: cell.data_size as u64,
                label_noise: cell.noise,
                ensemble: run.ensemble.clone(),
                n: None,
                step: Some(e.step as u64),
                kl_penalty: Some(run.beta),
                kl: e.kl_k1,
                kl_kind: "ppo_k1".into(),
                kl_k3: Some(e.kl_k3),
                kl_bound: None,
                kl_exact: None,
                sqrt_kl: e.kl_k1.max(0.0).sqrt(),
                gold,
                gold_se,
                proxy: e.proxy,
                members: e.members.clone(),
                disagreement: e.disagreement,
                length: e.length,
                distinct_ratio: e.distinct_ratio,
                heldout: e.heldout,
                gold_below_peak,
                gold_below_peak_se,
                prompts: e.gold_by_prompt.len() as u64,
                pool: None,
                replicate: run.replicate as u64,
            }
        })
        .collect();
    let train = o
        .updates
        .iter()
        .map(|u| TrainRow {
            run: run.id(),
            aggregator: run.aggregator.name(),
            lambda: run.aggregator.lambda(),
            ensemble: run.ensemble.clone(),
            kl_penalty: run.beta,
            replicate: run.replicate as u64,
            stats: u.clone(),
        })
        .collect();
    (rows, train)
}

fn rm_row(
    id: &str,
    role: &str,
    size: &str,
    ensemble: &str,
    cfg: &crate::model::TransformerConfig,
    cell: Option<&ProxyCell>,
    meta: &Meta,
) -> RmRow {
    let f = |k: &str| meta.info.get(k).and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
    let u = |k: &str| meta.info.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    RmRow {
        model: id.to_string(),
        role: role.to_string(),
        size: size.to_string(),
        ensemble: ensemble.to_string(),
        params: u("params"),
        layers: cfg.layers as u64,
        width: cfg.width as u64,
        train_examples: u("train_examples"),
        label_noise: cell.map(|c| c.noise),
        member: cell.filter(|c| !c.heldout).map(|c| c.member as u64),
        val_pairs: u("val_pairs"),
        val_accuracy: f("val_accuracy"),
        val_bt_loss: f("val_bt_loss"),
        distill_r2: None,
        train_steps: u("train_steps"),
        train_seconds: f("train_seconds"),
        score_offset: f("offset"),
        score_scale: f("scale"),
        artifact: format!("{}-{}", meta.kind, meta.key),
        replicate: cell.filter(|c| !c.heldout).map(|c| c.replicate as u64),
    }
}

/// Where the results go and what the run did, for the manifest.
pub struct Context<'a> {
    pub out: &'a Path,
    pub config_hash: &'a str,
    pub started: Instant,
}

/// Writes the tables, resolved config and manifest of `rows` into `ctx.out`.
pub fn write(x: &Exec, rows: &Rows, ctx: &Context) -> Result<()> {
    let out = ctx.out;
    let mut tables = serde_json::Map::new();
    let mut record = |files: Vec<(String, String)>| {
        for (name, sha) in files {
            tables.insert(name, json!(sha));
        }
    };
    record(table::write(&mut table::rm_frame(&rows.rm)?, out, "rm")?);
    if !rows.curves.is_empty() {
        // Figures are drawn by the report, from this table.
        record(table::write(&mut table::curve_frame(&rows.curves)?, out, "curves")?);
    }
    if !rows.train.is_empty() {
        record(table::write(&mut table::train_frame(&rows.train)?, out, "ppo_train")?);
    }
    if !rows.bon_units.is_empty() {
        record(table::write(&mut bon_units_frame(&rows.bon_units)?, out, "bon_units")?);
    }
    if !rows.ppo_units.is_empty() {
        record(table::write(&mut ppo_units_frame(&rows.ppo_units)?, out, "ppo_units")?);
    }
    write_atomic(&out.join("config.resolved.toml"), x.exp.to_toml().as_bytes())?;
    let manifest = manifest(x, rows, ctx, Value::Object(tables));
    write_atomic(
        &out.join("manifest.json"),
        serde_json::to_string_pretty(&manifest).expect("manifest serializes").as_bytes(),
    )
}

/// Sets `manifest.json`'s `peak_rss_bytes` in `out` to `peak` (the whole run's, once its
/// report is written), rewriting the file atomically.
pub fn record_peak_rss(out: &Path, peak: u64) -> Result<()> {
    let path = out.join("manifest.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let mut manifest: Value = serde_json::from_str(&text).map_err(|e| Error::Artifact {
        dir: out.to_path_buf(),
        reason: format!("manifest.json does not parse: {e}"),
    })?;
    manifest["peak_rss_bytes"] = Value::from(peak);
    write_atomic(&path, serde_json::to_string_pretty(&manifest).expect("manifest serializes").as_bytes())
}

/// The `bon_units` table: best-of-n per prompt, replicate by replicate, curve by curve,
/// prompts in order; `heldout` empty when the study has no held-out proxy.
fn bon_units_frame(units: &[BonUnits]) -> Result<polars::prelude::DataFrame> {
    use polars::prelude::*;
    let mut sorted: Vec<&BonUnits> = units.iter().collect();
    sorted.sort_by_key(|u| (u.cell.replicate, u.cell.start));
    let mut all: Option<DataFrame> = None;
    for u in sorted {
        let mut df = crate::methods::bon::cell::frame(u)?;
        let reps = Column::new("replicate".into(), vec![u.cell.replicate as u64; df.height()]);
        df.insert_column(0, reps).map_err(|e| Error::Table { path: "bon_units".into(), msg: e.to_string() })?;
        all = Some(match all {
            None => df,
            Some(a) => a.vstack(&df).map_err(|e| Error::Table { path: "bon_units".into(), msg: e.to_string() })?,
        });
    }
    Ok(all.unwrap_or_default())
}

/// The `ppo_units` table: one row per evaluation sample (one per held-out prompt) of every
/// checkpoint of every run, runs in plan order: the run (replicate, ensemble, aggregator,
/// λ, β), the checkpoint (`step`, its mean k1 `kl`), the `prompt` index, the sample's gold,
/// aggregated proxy, member scores (`member_M`, empty past the ensemble's size), held-out
/// proxy score (empty without one) and summed k1 (`kl_k1`).
fn ppo_units_frame(runs: &[(PpoCell, crate::methods::ppo::Outcome)]) -> Result<polars::prelude::DataFrame> {
    use polars::prelude::*;
    let k_max = runs
        .iter()
        .flat_map(|(_, o)| o.evaluations.iter().map(|e| e.units.members.len()))
        .max()
        .unwrap_or(0);
    let rows: usize = runs.iter().flat_map(|(_, o)| o.evaluations.iter().map(|e| e.gold_by_prompt.len())).sum();
    let (mut rep, mut ens, mut agg, mut lam, mut beta) = (Vec::with_capacity(rows), Vec::with_capacity(rows), Vec::with_capacity(rows), Vec::with_capacity(rows), Vec::with_capacity(rows));
    let (mut step, mut kl, mut prompt, mut gold, mut proxy, mut heldout, mut k1) = (
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
    );
    let mut members: Vec<Vec<Option<f64>>> = vec![Vec::with_capacity(rows); k_max];
    for (run, o) in runs {
        for e in &o.evaluations {
            let u = &e.units;
            for (i, &g) in e.gold_by_prompt.iter().enumerate() {
                rep.push(run.replicate as u64);
                ens.push(run.ensemble.clone());
                agg.push(run.aggregator.name());
                lam.push(run.aggregator.lambda());
                beta.push(run.beta);
                step.push(e.step as u64);
                kl.push(e.kl_k1);
                prompt.push(i as u64);
                gold.push(g);
                proxy.push(u.proxy[i] as f64);
                for (m, col) in members.iter_mut().enumerate() {
                    col.push(u.members.get(m).map(|s| s[i] as f64));
                }
                heldout.push(u.heldout.as_ref().map(|h| h[i] as f64));
                k1.push(u.kl_k1[i] as f64);
            }
        }
    }
    let mut columns = vec![
        Column::new("replicate".into(), rep),
        Column::new("ensemble".into(), ens),
        Column::new("aggregator".into(), agg),
        Column::new("lambda".into(), lam),
        Column::new("kl_penalty".into(), beta),
        Column::new("step".into(), step),
        Column::new("kl".into(), kl),
        Column::new("prompt".into(), prompt),
        Column::new("gold".into(), gold),
        Column::new("proxy".into(), proxy),
    ];
    columns.extend(members.into_iter().enumerate().map(|(m, v)| Column::new(format!("member_{m}").into(), v)));
    columns.push(Column::new("heldout".into(), heldout));
    columns.push(Column::new("kl_k1".into(), k1));
    DataFrame::new(rows, columns).map_err(|e| Error::Table {
        path: "ppo_units".into(),
        msg: e.to_string(),
    })
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git").args(["rev-parse", "HEAD"]).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn manifest(x: &Exec, rows: &Rows, ctx: &Context, tables: Value) -> Value {
    let events = x.events();
    let ids = |origin: Origin| -> Vec<String> {
        events.iter().filter(|e| e.origin == origin).map(|e| x.plan.cells[e.cell].id.clone()).collect()
    };
    let cell_row = |e: &Event| {
        let c = &x.plan.cells[e.cell];
        json!({
            "cell": c.id, "kind": c.kind.name(), "key": c.key,
            "origin": match e.origin { Origin::Made => "made", Origin::Reused => "reused" },
            "make_seconds": e.make_seconds,
        })
    };
    let policy = x.plan.find("policy").and_then(|i| x.all().ok().map(|l| l[i].clone()));
    json!({
        "goodhart_version": env!("CARGO_PKG_VERSION"),
        "git_commit": git_commit(),
        "experiment": x.exp.name,
        "config_hash": ctx.config_hash,
        "seed": x.exp.seed,
        "device": crate::device::describe(&x.device),
        "jobs": crate::parallel::jobs(),
        "cpu": crate::model::cpu::describe().to_json(),
        "store": absolute(x.store.root()),
        "out": absolute(ctx.out),
        "stage_seconds": x.stages(),
        // The process's so far; `goodhart run` rewrites it once the report is written.
        "peak_rss_bytes": crate::plan::exec::process_peak_rss(),
        "total_seconds_before_tables": ctx.started.elapsed().as_secs_f64(),
        "models_trained": ids(Origin::Made),
        "models_reused": ids(Origin::Reused),
        "cells": events.iter().map(cell_row).collect::<Vec<_>>(),
        "params": x.exp.params,
        "worlds": x.exp.worlds(),
        "reference_policy": {
            "artifact": x.plan.find("policy").map(|i| format!("policy-{}", x.plan.cells[i].key)),
            "sft": policy.as_ref().and_then(|p| p.meta.info.get("sft").cloned()),
            "diversity_pool_samples": x.exp.reference.diversity_pool,
            "duplicate_fraction": rows.duplicate_fraction,
        },
        "ppo_runs": rows.ppo_runs,
        "ppo_failures": rows.ppo_failures.iter().map(|(run, error)| json!({ "run": run, "error": error })).collect::<Vec<_>>(),
        "tables": tables,
    })
}

/// Refuses to mix results of two configs in one folder, and checks that the folder can be
/// written — before any work, so a bad `--out` costs nothing.
pub fn check_out_dir(out: &Path, config_hash: &str, force: bool) -> Result<()> {
    if out.exists() && !out.is_dir() {
        return Err(Error::io(out, std::io::Error::new(std::io::ErrorKind::AlreadyExists, "exists and is not a folder")));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let probe = crate::cell::store::temp_sibling(&out.join("write-probe"));
    crate::cell::store::write_synced(&probe, b"probe")?;
    std::fs::remove_file(&probe).map_err(|e| Error::io(&probe, e))?;
    let manifest = out.join("manifest.json");
    if force || !manifest.exists() {
        return Ok(());
    }
    let text = std::fs::read_to_string(&manifest).map_err(|e| Error::io(&manifest, e))?;
    let found = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.get("config_hash").and_then(|h| h.as_str()).map(String::from))
        .unwrap_or_else(|| "unreadable".into());
    if found != config_hash {
        return Err(Error::ResultsConflict {
            dir: out.to_path_buf(),
            found,
            expected: config_hash.to_string(),
        });
    }
    Ok(())
}
