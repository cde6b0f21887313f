//! `goodhart report DIR`: the analysis of a results folder from its saved tables alone (no
//! models, no retraining), written beside them.
//!
//! Reads `rm.parquet`, `curves.parquet` and, when present, `manifest.json`, and refuses
//! damaged input before writing anything (`inputs.rs`); then writes
//! - `fits.{parquet,csv}`: a Gao et al. fit of every curve's gold gain and proxy gain;
//! - `scaling.{parquet,csv}` and, where there are ≥ 2 proxy sizes, `scaling.{png,svg}`;
//! - `stopping.{parquet,csv}`: every gold-free rule on every curve, in-sample (a description
//!   of each run's curve; the honest regrets are the `stop` claims);
//! - `aggregators.{parquet,csv}`: aggregators at matched KL budgets, per curve;
//! - the best-of-n and PPO figures `bon_*.{png,svg}` and `ppo_*.{png,svg}`;
//! - `conclusions.{parquet,csv}`: the study's claims with 95% intervals across replicates,
//!   from the per-unit tables (`bon_units`, `ppo_units`; see [`crate::stats::conclusions`]);
//! - `report.md`, which opens with the conclusions and states the acceptance checks plainly.
//!
//! Submodules by idea: `inputs` (what is read, and refused), `frames` (the tables written),
//! `figures`, `markdown` (the sections of report.md) and `acceptance` (its two checks).
//!
//! The output is a function of the input tables only: no timestamps, a fixed order and fixed
//! float formatting, so a second report on the same tables is byte-for-byte the same. Every
//! file goes through a temporary name renamed into place. The analysis itself is in
//! [`crate::stats::analysis`].

mod acceptance;
mod figures;
mod frames;
mod inputs;
mod markdown;

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::stats::analysis::{self, AggRow, Curve, FitRow, ScalingRow, StopRow};
use crate::cell::store::write_atomic;
use crate::stats::conclusions::{self, Claim, Cost, DstarRow, Settings};
use crate::error::{Error, Result};
use crate::output::table::{self, CurveRow, RmRow};

pub use acceptance::{Acceptance, R2_TARGET, REGRET_TARGET};

/// What [`report`] wrote and found.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportSummary {
    pub dir: PathBuf,
    /// Files written, by name relative to `dir`, sorted.
    pub written: Vec<String>,
    pub curves: usize,
    pub fit_rows: usize,
    pub scaling_rows: usize,
    pub stopping_rows: usize,
    pub aggregator_rows: usize,
    /// Whether `scaling.{png,svg}` was drawn.
    pub scaling_figure: bool,
    pub acceptance: Acceptance,
    /// The primary questions' verdicts, one line each (what a run prints at its end).
    pub answer: Vec<String>,
}

/// Everything the writer needs, computed once.
struct Analysis {
    dir_name: String,
    manifest: Option<Value>,
    rm: Vec<RmRow>,
    rows: Vec<CurveRow>,
    curves: Vec<Curve>,
    fits: Vec<FitRow>,
    scaling: Vec<ScalingRow>,
    stops: Vec<StopRow>,
    aggs: Vec<AggRow>,
    acceptance: Acceptance,
    scaling_figure: bool,
    /// PNG figures to embed, by file name: the curve figures sorted, then `scaling.png`.
    figures: Vec<String>,
    /// The conclusions (from the unit tables) and d* by proxy size across replicates.
    claims: Vec<Claim>,
    dstar: Vec<DstarRow>,
    settings: Settings,
    /// What each ensemble cost to make (`ensembles.parquet`; none when every ensemble is
    /// from scratch).
    ensembles: Vec<table::EnsembleCost>,
}

/// The primary questions' verdicts as terminal lines: `holds  best-of-n: gold falls … 0.21
/// [0.08, 0.33], p (Holm) 0.004, 12 replicates`.
fn answer_lines(claims: &[Claim], settings: &Settings) -> Vec<String> {
    conclusions::primary_indices(claims, settings)
        .iter()
        .zip(&settings.primary)
        .map(|(i, s)| match i {
            Some(i) => {
                let c = &claims[*i];
                let iv = &c.interval;
                let range = if iv.low.is_finite() { format!(" [{:.2}, {:.2}]", iv.low, iv.high) } else { String::new() };
                format!(
                    "{:<12} {}: {:.2}{range}, p (Holm) {}, {} of {} replicates",
                    c.verdict,
                    c.claim,
                    iv.estimate,
                    if c.p_adjusted.is_finite() { format!("{:.3}", c.p_adjusted) } else { "—".into() },
                    iv.replicates,
                    c.replicates_total
                )
            }
            None => format!("{:<12} {} {} {} {}: not measured", "—", s.kind, s.method, s.aggregator, s.baseline),
        })
        .collect()
}

/// How the claims are judged: `[conclusions]` of the folder's `config.resolved.toml` (the
/// defaults without one), the cost model of its plan, the machine's cores from
/// `manifest.json` (`jobs`), and which held-out proxy the `heldout_peak` rule read (from
/// `rm.parquet`). A `config.resolved.toml` that does not parse is refused.
fn settings(dir: &Path, manifest: Option<&Value>, rm: &[RmRow]) -> Result<Settings> {
    let mut s = Settings::default();
    let heldout: Vec<&RmRow> = rm.iter().filter(|r| r.role == "heldout").collect();
    // What the held-out proxies are: their size, pairs and noise, and whether they are like
    // an ensemble's members (the same three).
    let what = heldout.first().map_or(String::new(), |h| {
        let noise = h.label_noise.unwrap_or(0.0);
        let ensemble = format!("{}/d{}/n{noise:.2}", h.size, h.train_examples);
        let like = if rm.iter().any(|r| r.role == "proxy" && r.ensemble == ensemble) {
            format!(": like the members of {ensemble}")
        } else {
            ": like no ensemble's members".to_string()
        };
        format!(" ({}, {} pairs of its own, noise {noise:.2}{like})", h.size, h.train_examples)
    });
    s.heldout = match heldout.len() {
        0 => String::new(),
        1 => format!("one held-out proxy shared by every replicate{what}"),
        _ if heldout.iter().all(|r| r.replicate.is_some()) => format!("each replicate's own held-out proxy{what}"),
        n => format!("{n} held-out proxies, one per world{what}"),
    };
    let path = dir.join("config.resolved.toml");
    if !path.exists() {
        return Ok(s);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let exp = crate::Experiment::from_resolved(&text, &path)?;
    s.primary = exp.conclusions.primary.clone();
    let (size, data_size, noise) = exp.first_ensemble();
    s.first_ensemble = crate::train::proxy::ProxyCell { size: size.clone(), data_size, noise, member: 0, heldout: false, replicate: 0, source: exp.proxy.first_source() }.ensemble_id();
    s.smallest_effect = exp.conclusions.smallest_effect;
    s.power = exp.conclusions.power;
    // The cost model: a plan of two replicates prices replicate 1 (and its world, when
    // worlds are redrawn); the rest is replicate 0 and what every replicate shares.
    let mut two = exp.clone();
    two.replicates = 2;
    let plan = crate::plan::Plan::new(&two);
    let per: f64 = plan.cells.iter().filter(|c| c.id.ends_with("/r1")).map(|c| c.cost_cpu_s).sum();
    let total: f64 = plan.cells.iter().map(|c| c.cost_cpu_s).sum();
    let chain: f64 = (0..plan.levels())
        .map(|l| plan.level(l).iter().map(|&i| plan.cells[i].cost_cpu_s).fold(0.0, f64::max))
        .sum();
    s.cost = Some(Cost {
        shared_cpu_s: (total - 2.0 * per).max(0.0),
        per_replicate_cpu_s: per,
        chain_s: chain,
        cores_here: manifest.and_then(|m| m.get("jobs")).and_then(Value::as_u64).unwrap_or(2) as usize,
        cluster_nodes: exp.conclusions.cluster_nodes,
        cluster_cores: exp.conclusions.cluster_cores,
        unit: if exp.world.per_replicate { "worlds" } else { "replicates" }.to_string(),
    });
    Ok(s)
}

/// Regenerates the analysis tables, every figure and `report.md` of the results folder `dir`
/// from `rm.parquet` and `curves.parquet` (and `manifest.json` if there is one).
///
/// Input that is missing, damaged, or (unless `allow_edited`) changed since the run wrote it
/// is refused before anything is written: a one-line [`Error::BadTable`] naming the file and,
/// where there is one, the column and row. The checks on a table's content are those of
/// [`table::read_curves`] and [`table::read_rm`]; the checksums are manifest.json's `tables`.
pub fn report(dir: &Path, allow_edited: bool) -> Result<ReportSummary> {
    let inputs::Inputs {
        manifest,
        rm,
        rows,
        units,
    } = inputs::read(dir, allow_edited)?;
    let curves = analysis::group_curves(&rows, crate::plan::kinds::traits);
    let fits = analysis::fits(&curves);
    let scaling = analysis::scaling(&fits);
    let stops = analysis::stopping(&curves);
    let aggs = analysis::aggregators(&curves);
    let settings = settings(dir, manifest.as_ref(), &rm)?;
    let claims = conclusions::conclusions(&units, &settings);
    let dstar = conclusions::dstar(&units);
    let expected_fits = conclusions::expected_fits(&units);
    let acceptance = acceptance::acceptance(&claims, &expected_fits, &units);
    let answer = answer_lines(&claims, &settings);

    let mut written = Vec::new();
    for (stem, mut df) in [
        ("fits", frames::fits_frame(&fits)),
        ("scaling", frames::scaling_frame(&scaling)),
        ("stopping", frames::stopping_frame(&stops)),
        ("aggregators", frames::aggregators_frame(&aggs)),
        ("conclusions", frames::conclusions_frame(&claims)),
    ] {
        table::write(&mut df, dir, stem).map_err(|e| match e {
            Error::Table { msg, .. } => Error::Table {
                path: dir.join(format!("{stem}.parquet")),
                msg,
            },
            e => e,
        })?;
        written.extend([format!("{stem}.parquet"), format!("{stem}.csv")]);
    }
    let drawn = figures::curve_figures(&rows, dir)?;
    let scaling_figure = figures::scaling_figure(&fits, dir)?;
    // PNGs to embed in report.md: the curve figures, sorted, then the scaling figure.
    let mut pngs: Vec<String> = drawn.iter().filter(|f| f.ends_with(".png")).cloned().collect();
    pngs.sort();
    written.extend(drawn);
    if scaling_figure {
        pngs.push("scaling.png".to_string());
        written.extend(["scaling.png".to_string(), "scaling.svg".to_string()]);
    }
    let a = Analysis {
        dir_name: dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().to_string()))
            .unwrap_or_default(),
        figures: pngs,
        manifest,
        rm,
        rows,
        curves,
        fits,
        scaling,
        stops,
        aggs,
        acceptance,
        scaling_figure,
        claims,
        dstar,
        settings,
        ensembles: table::read_ensembles(&dir.join("ensembles.parquet"))?,
    };
    let (report_md, appendix) = markdown::markdown(&a);
    write_atomic(&dir.join(markdown::APPENDIX), appendix.as_bytes())?;
    written.push(markdown::APPENDIX.to_string());
    write_atomic(&dir.join("report.md"), report_md.as_bytes())?;
    written.push("report.md".to_string());
    written.sort();
    Ok(ReportSummary {
        dir: dir.to_path_buf(),
        written,
        curves: a.curves.len(),
        fit_rows: a.fits.len(),
        scaling_rows: a.scaling.len(),
        stopping_rows: a.stops.len(),
        aggregator_rows: a.aggs.len(),
        scaling_figure: a.scaling_figure,
        acceptance: a.acceptance,
        answer,
    })
}

