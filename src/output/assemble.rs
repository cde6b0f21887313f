//! Assembling a results folder from made cells: the reward-model table, the curve table
//! (every method's points, from its [`crate::methods::Method::assemble`]), each method's own
//! tables, the resolved config and `manifest.json`; then the report.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};

use crate::cell::store::{write_atomic, Meta, Origin};
use crate::error::{Error, Result};
use crate::methods::{Made, Runs, Table};
use crate::output::table::{self, CurveRow, RmRow};
use crate::plan::exec::{Event, Exec};
use crate::plan::kinds::METHODS;
use crate::train::gold::GoldCell;
use crate::train::pairs::PairsCell;
use crate::train::policy::PolicyCell;
use crate::train::proxy::ProxyCell;

/// The rows of a results folder.
#[derive(Debug, Default)]
pub struct Rows {
    pub rm: Vec<RmRow>,
    /// Every method's curve points, method by method in the registry's order.
    pub curves: Vec<CurveRow>,
    /// Every method's own tables, in the registry's order; empty once written.
    pub tables: Vec<Table>,
    /// The runs of each method whose runs can fail and go on without them (its name first).
    pub runs: Vec<(&'static str, Runs)>,
    /// Fraction of a one-prompt π_ref pool that repeats an earlier sample.
    pub duplicate_fraction: f64,
}

/// Every table's rows, from the plan's cells (all loaded in `x`): the reward models' here,
/// each method's from its own [`crate::methods::Method::assemble`].
pub fn rows(x: &Exec) -> Result<Rows> {
    let loaded = x.all()?;
    let mut made = vec![false; x.plan.cells.len()];
    for e in x.events().iter().filter(|e| e.origin == Origin::Made) {
        made[e.cell] = true;
    }
    let mut out = Rows::default();
    // Gold first (each world's), then the proxies in plan order, the held-out proxies last.
    let (mut golds, mut heldout) = (Vec::new(), Vec::new());
    for (i, cell) in x.plan.cells.iter().enumerate() {
        let meta = &loaded[i].meta;
        let kind = &cell.kind;
        // π_ref's diagnostics are replicate 0's world's.
        if kind.get::<PolicyCell>().is_some_and(|p| p.world == 0) {
            out.duplicate_fraction = meta.info.get("duplicate_fraction").and_then(Value::as_f64).unwrap_or(f64::NAN);
        } else if let Some(g) = kind.get::<GoldCell>() {
            let mut row = rm_row(&cell.id, "gold", "gold", "", x.exp.gold_shape(), None, meta);
            row.distill_r2 = meta.info.get("distill_r2").and_then(Value::as_f64);
            row.replicate = x.exp.world.per_replicate.then_some(g.world as u64);
            golds.push(row);
        } else if let Some(c) = kind.get::<ProxyCell>() {
            let (role, ensemble) = if c.heldout { ("heldout", String::new()) } else { ("proxy", c.ensemble_id()) };
            let mut row = rm_row(&c.id(), role, &c.size.name, &ensemble, x.exp.proxy_shape(&c.size), Some(c), meta);
            if c.heldout {
                let own = x.exp.world.per_replicate || x.exp.proxy.heldout_per_replicate;
                row.replicate = own.then_some(c.replicate as u64);
                heldout.push(row);
            } else {
                out.rm.push(row);
            }
        }
    }
    out.rm.splice(0..0, golds);
    out.rm.extend(heldout);
    if x.exp.proxy.sources.iter().any(|s| s.pretrained()) {
        let costs = ensemble_costs(x, &loaded);
        out.tables.push(Table { stem: "ensembles", build: Box::new(move || table::ensemble_frame(&costs)) });
    }
    let proxies: Vec<&ProxyCell> = x.plan.proxies().into_iter().map(|(_, p)| p).collect();
    let cells: Vec<Made> = (0..x.plan.cells.len())
        .map(|i| Made {
            cell: x.plan.cells[i].kind.spec(),
            loaded: &loaded[i],
            made: made[i],
        })
        .collect();
    for method in METHODS {
        let a = method.assemble(x.exp, &proxies, &cells, x.store.root())?;
        out.curves.extend(a.curves);
        out.tables.extend(a.tables);
        out.runs.extend(a.runs.map(|r| (method.name(), r)));
    }
    Ok(out)
}

/// What each ensemble of each replicate cost to make: every cell its members are made from
/// (their own training, the pretrained trunks they start from, the multi-head model, the
/// members WARM averages), each counted once per ensemble even where ensembles share it.
fn ensemble_costs(x: &Exec, loaded: &[std::sync::Arc<crate::cell::Loaded>]) -> Vec<table::EnsembleCost> {
    use std::collections::{BTreeMap, BTreeSet};
    let cells = &x.plan.cells;
    let mut by: BTreeMap<(usize, String), (crate::config::Source, usize, BTreeSet<usize>)> = BTreeMap::new();
    for (i, cell) in cells.iter().enumerate() {
        let Some(c) = cell.kind.get::<ProxyCell>().filter(|c| !c.heldout) else { continue };
        let entry = by.entry((c.replicate, c.ensemble_id())).or_insert((c.source, 0, BTreeSet::new()));
        entry.1 += 1;
        // This member and what it is made from, transitively (proxies, trunks, heads).
        let mut stack = vec![i];
        while let Some(j) = stack.pop() {
            if entry.2.insert(j) {
                stack.extend(cells[j].deps.iter().copied().filter(|&d| matches!(cells[d].kind.name(), "proxy" | "trunk" | "multihead")));
            }
        }
    }
    by.into_iter()
        .map(|((replicate, ensemble), (source, members, made_from))| {
            let info = |j: usize, k: &str| loaded[j].meta.info.get(k).and_then(Value::as_f64).unwrap_or(0.0);
            let trained: Vec<usize> = made_from.into_iter().filter(|&j| info(j, "train_seconds") > 0.0 || cells[j].kind.name() != "proxy").collect();
            table::EnsembleCost {
                replicate: replicate as u64,
                ensemble,
                source: source.name().to_string(),
                members: members as u64,
                models_trained: trained.len() as u64,
                params_trained: trained
                    .iter()
                    .map(|&j| loaded[j].meta.info.get("params_trained").and_then(Value::as_f64).unwrap_or_else(|| info(j, "params")) as u64)
                    .sum(),
                train_seconds: trained.iter().map(|&j| info(j, "train_seconds")).sum(),
            }
        })
        .collect()
}

fn rm_row(
    id: &str,
    role: &str,
    size: &str,
    ensemble: &str,
    (layers, width): (usize, usize),
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
        layers: layers as u64,
        width: width as u64,
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

/// Writes the tables, resolved config and manifest of `rows` into `ctx.out`. Each method's
/// own tables are written and let go (the report reads them back from disk), so that they
/// do not stay in memory beside it.
pub fn write(x: &Exec, rows: &mut Rows, ctx: &Context) -> Result<()> {
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
    for t in std::mem::take(&mut rows.tables) {
        let mut frame = (t.build)()?;
        record(table::write(&mut frame, out, t.stem)?);
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
    let mut m = json!({
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
    });
    for (method, runs) in &rows.runs {
        m[format!("{method}_runs")] = json!(runs.status);
        m[format!("{method}_failures")] = runs.failures.iter().map(|(run, error)| json!({ "run": run, "error": error })).collect();
    }
    if !x.exp.preferences.bias.is_off() {
        m["labeler_bias"] = labeler_bias(x);
    }
    m["tables"] = tables;
    m
}

/// A biased study's `labeler_bias` (absent without a bias): the weights, and per training
/// set (each pairs cell's training and held-out pairs, each held-out proxy that draws its
/// own) how many labels the shared bias made differ from gold's own, before label noise.
fn labeler_bias(x: &Exec) -> Value {
    let loaded = x.all().ok();
    let info = |i: usize, k: &str| loaded.as_ref().and_then(|l| l[i].meta.info.get(k).cloned()).unwrap_or(Value::Null);
    let mut sets = Vec::new();
    for (i, c) in x.plan.cells.iter().enumerate() {
        if c.kind.get::<PairsCell>().is_some() {
            sets.push(json!({ "cell": c.id, "set": "train", "pairs": info(i, "train_pairs"), "labels_biased": info(i, "train_labels_biased") }));
            if !info(i, "heldout_pairs").is_null() {
                sets.push(json!({ "cell": c.id, "set": "heldout", "pairs": info(i, "heldout_pairs"), "labels_biased": info(i, "heldout_labels_biased") }));
            }
        } else if c.kind.get::<ProxyCell>().is_some_and(|p| p.heldout && x.exp.proxy.heldout_per_replicate) {
            sets.push(json!({ "cell": c.id, "set": "heldout", "pairs": info(i, "train_examples"), "labels_biased": info(i, "labels_biased") }));
        }
    }
    json!({ "weights": x.exp.preferences.bias, "label_sets": sets })
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
