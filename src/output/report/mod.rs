//! `goodhart report DIR`: the analysis of a results folder from its saved tables alone (no
//! models, no retraining), written beside them.
//!
//! Reads `rm.parquet`, `curves.parquet` and, when present, `manifest.json`, and refuses
//! damaged input before writing anything (`inputs.rs`); then writes
//! - `fits.{parquet,csv}`: a Gao et al. fit of every curve's gold gain and proxy gain;
//! - `scaling.{parquet,csv}` and, where there are ≥ 2 proxy sizes, `scaling.{png,svg}`;
//! - `stopping.{parquet,csv}` (every gold-free rule on every curve) and
//!   `stopping_summary.{parquet,csv}` (rules ranked by median regret fraction);
//! - `aggregators.{parquet,csv}`: aggregators at matched KL budgets and at their best;
//! - the best-of-n and PPO figures `bon_*.{png,svg}` and `ppo_*.{png,svg}`;
//! - `conclusions.{parquet,csv}`: the study's claims with 95% intervals across replicates,
//!   from the per-unit tables (`bon_units`, `ppo_units`; see [`crate::conclusions`]);
//! - `report.md`, which opens with the conclusions and states the acceptance checks plainly.
//!
//! Submodules by idea: `inputs` (what is read, and refused), `frames` (the tables written),
//! `figures`, `markdown` (the sections of report.md) and `acceptance` (its two checks).
//!
//! The output is a function of the input tables only: no timestamps, a fixed order and fixed
//! float formatting, so a second report on the same tables is byte-for-byte the same. Every
//! file goes through a temporary name renamed into place. The analysis itself is in
//! [`crate::analysis`].

mod acceptance;
mod figures;
mod frames;
mod inputs;
mod markdown;

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::analysis::{self, AggRow, Curve, FitRow, ScalingRow, StopRow, SummaryRow};
use crate::cell::store::write_atomic;
use crate::conclusions::{self, Claim, DstarRow, PeakFit};
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
    summary: Vec<SummaryRow>,
    aggs: Vec<AggRow>,
    acceptance: Acceptance,
    scaling_figure: bool,
    /// PNG figures to embed, by file name: the curve figures sorted, then `scaling.png`.
    figures: Vec<String>,
    /// The conclusions (from the unit tables) and d* by proxy size across replicates.
    claims: Vec<Claim>,
    dstar: Vec<DstarRow>,
}

/// The single members' gold fits, for d* by proxy size.
fn peak_fits(fits: &[FitRow]) -> Vec<PeakFit> {
    fits.iter()
        .filter(|f| f.target == analysis::Target::Gold && f.id.single_member().is_some())
        .map(|f| PeakFit {
            method: f.id.method.clone(),
            proxy_size: f.id.proxy_size.clone(),
            proxy_params: f.id.proxy_params,
            data_size: f.id.data_size,
            kl_penalty: f.id.kl_penalty,
            replicate: f.id.replicate,
            // A fitted peak beyond the measured KL range is an extrapolation, not a location.
            d_star: f.fit.and_then(|x| x.d_star).filter(|&d| d * d <= f.last_kl.max(0.0)),
        })
        .collect()
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
    let curves = analysis::group_curves(&rows);
    let fits = analysis::fits(&curves);
    let scaling = analysis::scaling(&fits);
    let stops = analysis::stopping(&curves);
    let summary = analysis::stopping_summary(&stops);
    let aggs = analysis::aggregators(&curves);
    let acceptance = acceptance::acceptance(&fits, &summary);
    let claims = conclusions::claims(&units);
    let dstar = conclusions::dstar(&peak_fits(&fits));

    let mut written = Vec::new();
    for (stem, mut df) in [
        ("fits", frames::fits_frame(&fits)),
        ("scaling", frames::scaling_frame(&scaling)),
        ("stopping", frames::stopping_frame(&stops)),
        ("stopping_summary", frames::summary_frame(&summary)),
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
        summary,
        aggs,
        acceptance,
        scaling_figure,
        claims,
        dstar,
    };
    write_atomic(&dir.join("report.md"), markdown::markdown(&a).as_bytes())?;
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
    })
}

