//! Rows → polars DataFrames → parquet + csv, written atomically.

use std::fs;
use std::path::Path;

use polars::prelude::*;

use crate::error::{Error, Result};

/// One row of the reward-model table (`rm.parquet`, `rm.csv`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct RmRow {
    /// `gold` or `proxy/SIZE/dDATA/nNOISE/kMEMBER`.
    pub model: String,
    /// `gold` or `proxy`.
    pub role: String,
    /// Proxy size name (`gold` for the gold RM).
    pub size: String,
    /// Ensemble id `SIZE/dDATA/nNOISE` (empty for gold).
    pub ensemble: String,
    pub params: u64,
    pub layers: u64,
    pub width: u64,
    /// Training pairs (proxies) or distillation samples (gold).
    pub train_examples: u64,
    /// Label-flip rate of the training labels (gold: none).
    pub label_noise: Option<f64>,
    /// Ensemble member index (gold: none).
    pub member: Option<u64>,
    /// Held-out π_ref pairs evaluated on.
    pub val_pairs: u64,
    /// Fraction of held-out pairs ordered as gold orders them (gold: as the labeler utility does).
    pub val_accuracy: f64,
    /// Bradley–Terry loss on held-out pairs, raw scores, nats per pair.
    pub val_bt_loss: f64,
    /// Gold only: R² of gold's raw score against its distillation target (the soft-clipped,
    /// standardized labeler utility) on held-out distillation samples.
    pub distill_r2: Option<f64>,
    pub train_steps: u64,
    pub train_seconds: f64,
    /// Standardization: raw-score mean and std on the π_ref reference set.
    pub score_offset: f64,
    pub score_scale: f64,
    /// Artifact folder (KIND-KEY) in the model store.
    pub artifact: String,
}

/// The reward-model table as a DataFrame, one row per RM, columns as in [`RmRow`].
pub fn rm_frame(rows: &[RmRow]) -> Result<DataFrame> {
    let s = |f: fn(&RmRow) -> String| rows.iter().map(f).collect::<Vec<_>>();
    let u = |f: fn(&RmRow) -> u64| rows.iter().map(f).collect::<Vec<_>>();
    let x = |f: fn(&RmRow) -> f64| rows.iter().map(f).collect::<Vec<_>>();
    let columns = vec![
        Column::new("model".into(), s(|r| r.model.clone())),
        Column::new("role".into(), s(|r| r.role.clone())),
        Column::new("size".into(), s(|r| r.size.clone())),
        Column::new("ensemble".into(), s(|r| r.ensemble.clone())),
        Column::new("params".into(), u(|r| r.params)),
        Column::new("layers".into(), u(|r| r.layers)),
        Column::new("width".into(), u(|r| r.width)),
        Column::new("train_examples".into(), u(|r| r.train_examples)),
        Column::new("label_noise".into(), rows.iter().map(|r| r.label_noise).collect::<Vec<_>>()),
        Column::new("member".into(), rows.iter().map(|r| r.member).collect::<Vec<_>>()),
        Column::new("val_pairs".into(), u(|r| r.val_pairs)),
        Column::new("val_accuracy".into(), x(|r| r.val_accuracy)),
        Column::new("val_bt_loss_nats".into(), x(|r| r.val_bt_loss)),
        Column::new("gold_distill_r2".into(), rows.iter().map(|r| r.distill_r2).collect::<Vec<_>>()),
        Column::new("train_steps".into(), u(|r| r.train_steps)),
        Column::new("train_seconds".into(), x(|r| r.train_seconds)),
        Column::new("score_offset".into(), x(|r| r.score_offset)),
        Column::new("score_scale".into(), x(|r| r.score_scale)),
        Column::new("artifact".into(), s(|r| r.artifact.clone())),
    ];
    DataFrame::new(rows.len(), columns).map_err(|e| Error::Table {
        path: "rm".into(),
        msg: e.to_string(),
    })
}

/// Writes `df` as `DIR/STEM.parquet` and `DIR/STEM.csv`, each through a temporary file
/// renamed into place.
pub fn write(df: &mut DataFrame, dir: &Path, stem: &str) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let err = |path: &Path, e: PolarsError| Error::Table {
        path: path.to_path_buf(),
        msg: e.to_string(),
    };
    let pq = dir.join(format!("{stem}.parquet"));
    let tmp = dir.join(format!(".{stem}.parquet.tmp"));
    let f = fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    ParquetWriter::new(f).finish(df).map_err(|e| err(&pq, e))?;
    fs::rename(&tmp, &pq).map_err(|e| Error::io(&pq, e))?;
    let csv = dir.join(format!("{stem}.csv"));
    let tmp = dir.join(format!(".{stem}.csv.tmp"));
    let mut f = fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    CsvWriter::new(&mut f).finish(df).map_err(|e| err(&csv, e))?;
    fs::rename(&tmp, &csv).map_err(|e| Error::io(&csv, e))?;
    Ok(())
}

/// Reads a parquet table back (used by tests and, later, `goodhart report`).
pub fn read_parquet(path: &Path) -> Result<DataFrame> {
    let f = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    ParquetReader::new(f).finish().map_err(|e| Error::Table {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })
}

/// One point of an optimization curve (best-of-n now, PPO later): `results/NAME/curves.*`.
#[derive(Debug, Clone, PartialEq)]
pub struct CurveRow {
    /// `bon` (or `ppo`).
    pub method: String,
    /// Aggregator name (`member0`, `mean`, `wco`, `uwo`, `median`, `mean_std`).
    pub aggregator: String,
    /// The aggregator's λ, where it has one.
    pub lambda: Option<f64>,
    pub proxy_size: String,
    pub proxy_params: u64,
    /// Training pairs of the ensemble's proxies.
    pub data_size: u64,
    pub label_noise: f64,
    /// `SIZE/dDATA/nNOISE`.
    pub ensemble: String,
    /// Best-of-n: n.
    pub n: Option<u64>,
    /// The KL (nats) the curve is drawn against, and what it is (`bon_bound`: ln n − (n−1)/n,
    /// an upper bound on the true KL).
    pub kl: f64,
    pub kl_kind: String,
    /// Best-of-n: the analytic bound and the exact KL of the pool's discrete best-of-n
    /// distribution (equal to the bound when the pool has no repeated response).
    pub kl_bound: Option<f64>,
    pub kl_exact: Option<f64>,
    /// sqrt(kl), nats^½.
    pub sqrt_kl: f64,
    /// Gold (standardized: π_ref mean 0, π_ref std 1): mean over prompts and its standard error.
    pub gold: f64,
    pub gold_se: f64,
    /// The aggregated proxy score (standardized units).
    pub proxy: f64,
    /// Each member's score of the selected samples (standardized units).
    pub members: Vec<f64>,
    /// Mean population variance of the member scores of the selected samples.
    pub disagreement: f64,
    /// Response length (content tokens) and distinct-token ratio of the selected samples:
    /// what the optimizer exploits.
    pub length: f64,
    pub distinct_ratio: f64,
    /// Gold at the curve's peak minus gold here (standardized units), and its standard error
    /// paired over prompts. A fall is significant when this exceeds a few of its s.e.
    pub gold_below_peak: f64,
    pub gold_below_peak_se: f64,
    pub prompts: u64,
    /// Best-of-n: samples per prompt.
    pub pool: Option<u64>,
}

/// The curve table, one row per point; member scores as `member_0`, `member_1`, ….
pub fn curve_frame(rows: &[CurveRow]) -> Result<DataFrame> {
    let s = |f: fn(&CurveRow) -> String| rows.iter().map(f).collect::<Vec<_>>();
    let u = |f: fn(&CurveRow) -> u64| rows.iter().map(f).collect::<Vec<_>>();
    let x = |f: fn(&CurveRow) -> f64| rows.iter().map(f).collect::<Vec<_>>();
    let ox = |f: fn(&CurveRow) -> Option<f64>| rows.iter().map(f).collect::<Vec<_>>();
    let ou = |f: fn(&CurveRow) -> Option<u64>| rows.iter().map(f).collect::<Vec<_>>();
    let mut columns = vec![
        Column::new("method".into(), s(|r| r.method.clone())),
        Column::new("aggregator".into(), s(|r| r.aggregator.clone())),
        Column::new("lambda".into(), ox(|r| r.lambda)),
        Column::new("proxy_size".into(), s(|r| r.proxy_size.clone())),
        Column::new("proxy_params".into(), u(|r| r.proxy_params)),
        Column::new("data_size".into(), u(|r| r.data_size)),
        Column::new("label_noise".into(), x(|r| r.label_noise)),
        Column::new("ensemble".into(), s(|r| r.ensemble.clone())),
        Column::new("n".into(), ou(|r| r.n)),
        Column::new("kl".into(), x(|r| r.kl)),
        Column::new("kl_kind".into(), s(|r| r.kl_kind.clone())),
        Column::new("kl_bound".into(), ox(|r| r.kl_bound)),
        Column::new("kl_exact".into(), ox(|r| r.kl_exact)),
        Column::new("sqrt_kl".into(), x(|r| r.sqrt_kl)),
        Column::new("gold".into(), x(|r| r.gold)),
        Column::new("gold_se".into(), x(|r| r.gold_se)),
        Column::new("proxy".into(), x(|r| r.proxy)),
    ];
    let k = rows.iter().map(|r| r.members.len()).max().unwrap_or(0);
    for j in 0..k {
        columns.push(Column::new(
            format!("member_{j}").into(),
            rows.iter().map(|r| r.members.get(j).copied()).collect::<Vec<_>>(),
        ));
    }
    columns.extend([
        Column::new("disagreement".into(), x(|r| r.disagreement)),
        Column::new("length".into(), x(|r| r.length)),
        Column::new("distinct_ratio".into(), x(|r| r.distinct_ratio)),
        Column::new("gold_below_peak".into(), x(|r| r.gold_below_peak)),
        Column::new("gold_below_peak_se".into(), x(|r| r.gold_below_peak_se)),
        Column::new("prompts".into(), u(|r| r.prompts)),
        Column::new("pool".into(), ou(|r| r.pool)),
    ]);
    DataFrame::new(rows.len(), columns).map_err(|e| Error::Table {
        path: "curves".into(),
        msg: e.to_string(),
    })
}
