//! Rows → polars DataFrames → parquet + csv, written atomically with their checksums; and
//! back: the curve and reward-model tables read into rows, refused when damaged.

use std::fs;
use std::io::Write;
use std::path::Path;

use polars::prelude::*;
use sha2::{Digest, Sha256};

use crate::cell::store::{hex, write_atomic_with};
use crate::error::{Error, Result};
pub use crate::frame::{read_parquet, Columns};
use crate::output::check;
use crate::stats::shaping::Objective;

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
    /// The replicate a proxy belongs to (gold and the held-out proxy: none, shared).
    pub replicate: Option<u64>,
}

/// What one ensemble of one replicate cost to make (`ensembles.csv`).
#[derive(Debug, Clone, PartialEq)]
pub struct EnsembleCost {
    pub replicate: u64,
    pub ensemble: String,
    /// Where its members differ (`proxy.sources`).
    pub source: String,
    pub members: u64,
    /// Models trained to make it: its members (those trained, not derived), the pretrained
    /// trunks they start from, the multi-head model; each once.
    pub models_trained: u64,
    /// Their parameters, summed (a trunk counted with its LM head).
    pub params_trained: u64,
    /// Their training wall time, summed (seconds; every cell ran on the work pool's cores).
    pub train_seconds: f64,
}

/// The ensembles' costs as a DataFrame, columns as in [`EnsembleCost`].
pub fn ensemble_frame(rows: &[EnsembleCost]) -> Result<DataFrame> {
    let columns = vec![
        Column::new("replicate".into(), rows.iter().map(|r| r.replicate).collect::<Vec<_>>()),
        Column::new("ensemble".into(), rows.iter().map(|r| r.ensemble.clone()).collect::<Vec<_>>()),
        Column::new("source".into(), rows.iter().map(|r| r.source.clone()).collect::<Vec<_>>()),
        Column::new("members".into(), rows.iter().map(|r| r.members).collect::<Vec<_>>()),
        Column::new("models_trained".into(), rows.iter().map(|r| r.models_trained).collect::<Vec<_>>()),
        Column::new("params_trained".into(), rows.iter().map(|r| r.params_trained).collect::<Vec<_>>()),
        Column::new("train_seconds".into(), rows.iter().map(|r| r.train_seconds).collect::<Vec<_>>()),
    ];
    DataFrame::new(rows.len(), columns).map_err(|e| Error::Table { path: "ensembles".into(), msg: e.to_string() })
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
        // Empty for a gold that has no labeler to agree with (a text study's checkpoint).
        Column::new("val_accuracy".into(), rows.iter().map(|r| (!r.val_accuracy.is_nan()).then_some(r.val_accuracy)).collect::<Vec<_>>()),
        Column::new("val_bt_loss_nats".into(), x(|r| r.val_bt_loss)),
        Column::new("gold_distill_r2".into(), rows.iter().map(|r| r.distill_r2).collect::<Vec<_>>()),
        Column::new("train_steps".into(), u(|r| r.train_steps)),
        Column::new("train_seconds".into(), x(|r| r.train_seconds)),
        Column::new("score_offset".into(), x(|r| r.score_offset)),
        Column::new("score_scale".into(), x(|r| r.score_scale)),
        Column::new("artifact".into(), s(|r| r.artifact.clone())),
        Column::new("replicate".into(), rows.iter().map(|r| r.replicate).collect::<Vec<_>>()),
    ];
    DataFrame::new(rows.len(), columns).map_err(|e| Error::Table {
        path: "rm".into(),
        msg: e.to_string(),
    })
}

/// Writes `df` as `DIR/STEM.parquet` and `DIR/STEM.csv`, each through a temporary file
/// renamed into place. Returns `(file name, SHA-256 hex of its bytes)` of each, parquet
/// first: what manifest.json's `tables` records so that `goodhart report` can tell a table
/// edited since.
pub fn write(df: &mut DataFrame, dir: &Path, stem: &str) -> Result<Vec<(String, String)>> {
    let mut sums = Vec::with_capacity(2);
    for (name, parquet) in [(format!("{stem}.parquet"), true), (format!("{stem}.csv"), false)] {
        let path = dir.join(&name);
        let sum = write_atomic_with(&path, |f| stream(df, f, &path, parquet))?;
        sums.push((name, sum));
    }
    Ok(sums)
}

/// Encodes `df` into `f` as it goes (the largest tables are tens of MB as CSV: never held
/// whole in memory); returns the SHA-256 hex of the bytes written.
fn stream(df: &mut DataFrame, f: &mut fs::File, path: &Path, parquet: bool) -> Result<String> {
    let mut w = Hashing {
        inner: std::io::BufWriter::new(f),
        sha: Sha256::new(),
    };
    let encoded = if parquet {
        ParquetWriter::new(&mut w).finish(df).map(|_| ())
    } else {
        CsvWriter::new(&mut w).finish(df)
    };
    encoded.map_err(|e| Error::Table {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    w.inner.flush().map_err(|e| Error::io(path, e))?;
    Ok(hex(&w.sha.finalize()))
}

/// A writer that hashes what passes through it.
struct Hashing<W: Write> {
    inner: W,
    sha: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

pub use crate::stats::curve::CurveRow;

/// The curve table, one row per point; member scores as `member_0`, `member_1`, ….
pub fn curve_frame(rows: &[CurveRow]) -> Result<DataFrame> {
    let s = |f: fn(&CurveRow) -> String| rows.iter().map(f).collect::<Vec<_>>();
    let u = |f: fn(&CurveRow) -> u64| rows.iter().map(f).collect::<Vec<_>>();
    let x = |f: fn(&CurveRow) -> f64| rows.iter().map(f).collect::<Vec<_>>();
    let ox = |f: fn(&CurveRow) -> Option<f64>| rows.iter().map(f).collect::<Vec<_>>();
    let ou = |f: fn(&CurveRow) -> Option<u64>| rows.iter().map(f).collect::<Vec<_>>();
    let mut columns = vec![
        Column::new("method".into(), s(|r| r.method.clone())),
        Column::new("aggregator".into(), s(|r| r.aggregator.name())),
        Column::new("lambda".into(), ox(|r| r.aggregator.lambda())),
        Column::new("proxy_size".into(), s(|r| r.proxy_size.clone())),
        Column::new("proxy_params".into(), u(|r| r.proxy_params)),
        Column::new("data_size".into(), u(|r| r.data_size)),
        Column::new("label_noise".into(), x(|r| r.label_noise)),
        Column::new("ensemble".into(), s(|r| r.ensemble.clone())),
        Column::new("n".into(), ou(|r| r.n)),
        Column::new("step".into(), ou(|r| r.step)),
        Column::new("kl_penalty".into(), ox(|r| r.kl_penalty)),
        Column::new("kl".into(), x(|r| r.kl)),
        Column::new("kl_kind".into(), s(|r| r.kl_kind.clone())),
        Column::new("kl_k3".into(), ox(|r| r.kl_k3)),
        Column::new("kl_bound".into(), ox(|r| r.kl_bound)),
        Column::new("kl_exact".into(), ox(|r| r.kl_exact)),
        Column::new("sqrt_kl".into(), x(|r| r.sqrt_kl)),
        Column::new("gold".into(), x(|r| r.gold)),
        Column::new("gold_se".into(), x(|r| r.gold_se)),
        Column::new("proxy".into(), x(|r| r.measures.proxy)),
    ];
    let k = rows.iter().map(|r| r.measures.members.len()).max().unwrap_or(0);
    for j in 0..k {
        columns.push(Column::new(
            format!("member_{j}").into(),
            rows.iter().map(|r| r.measures.members.get(j).copied()).collect::<Vec<_>>(),
        ));
    }
    columns.extend([
        Column::new("disagreement".into(), x(|r| r.measures.disagreement)),
        Column::new("length".into(), x(|r| r.measures.length)),
        Column::new("distinct_ratio".into(), x(|r| r.measures.distinct_ratio)),
        Column::new("heldout".into(), ox(|r| r.measures.heldout)),
        Column::new("gold_below_peak".into(), x(|r| r.gold_below_peak)),
        Column::new("gold_below_peak_se".into(), x(|r| r.gold_below_peak_se)),
        Column::new("prompts".into(), u(|r| r.prompts)),
        Column::new("pool".into(), ou(|r| r.pool)),
        Column::new("replicate".into(), rows.iter().map(|r| r.replicate).collect::<Vec<_>>()),
    ]);
    DataFrame::new(rows.len(), columns).map_err(|e| Error::Table {
        path: "curves".into(),
        msg: e.to_string(),
    })
}

/// Reads the curve table (`curves.parquet`) back into rows, for `goodhart report`.
///
/// Tolerates tables written by older versions: a column they lack reads as null (`None`,
/// NaN for the non-optional numbers, "" for `kl_kind`); `sqrt_kl` is recomputed when absent.
/// Member scores are read from `member_0`, `member_1`, … up to the last non-null one of each
/// row. Required: `method`, `aggregator`, `proxy_size`, `proxy_params`, `data_size`,
/// `label_noise`, `ensemble`, `kl`, `gold`, `gold_se`, `proxy`, `prompts`.
///
/// A damaged table is refused: no rows; a required column missing; a column of the wrong
/// type; a null, NaN or infinite value where the writer always puts a finite number (`gold`,
/// `gold_se`, `kl`, `proxy`, …); a negative count; a method other than `bon` and `ppo`; a
/// best-of-n row without `n` or with a negative KL; a PPO row without `step` or
/// `kl_penalty`; two rows with one key (method, ensemble, aggregator, λ, β, n or step, and
/// `replicate` where present). Each is one [`Error::BadTable`] naming the file and, where
/// there is one, the column and the row (counted from 0).
pub fn read_curves(path: &Path) -> Result<Vec<CurveRow>> {
    let df = read_parquet(path)?;
    check::curves(&df, path)?;
    let c = Columns { df: &df, path };
    let nan = |v: Vec<Option<f64>>| v.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect::<Vec<_>>();
    let method = c.str("method")?;
    let aggregator = c.str("aggregator")?;
    let lambda = c.maybe_f64("lambda")?;
    let aggregators = (0..aggregator.len())
        .map(|i| {
            Objective::from_parts(&aggregator[i], lambda[i])
                .ok_or_else(|| c.error(format!("row {i}: no aggregator is named {:?} with λ {:?}", aggregator[i], lambda[i])))
        })
        .collect::<Result<Vec<_>>>()?;
    let proxy_size = c.str("proxy_size")?;
    let proxy_params = c.u64("proxy_params")?;
    let data_size = c.u64("data_size")?;
    let label_noise = c.f64("label_noise")?;
    let ensemble = c.str("ensemble")?;
    let n = c.maybe_u64("n")?;
    let step = c.maybe_u64("step")?;
    let kl_penalty = c.maybe_f64("kl_penalty")?;
    let kl = c.f64("kl")?;
    let kl_kind = if c.has("kl_kind") { c.str("kl_kind")? } else { vec![String::new(); df.height()] };
    let kl_k3 = c.maybe_f64("kl_k3")?;
    let kl_bound = c.maybe_f64("kl_bound")?;
    let kl_exact = c.maybe_f64("kl_exact")?;
    let sqrt_kl = c.maybe_f64("sqrt_kl")?;
    let gold = c.f64("gold")?;
    let gold_se = c.f64("gold_se")?;
    let proxy = c.f64("proxy")?;
    let mut members = Vec::new();
    while c.has(&format!("member_{}", members.len())) {
        members.push(c.opt_f64(&format!("member_{}", members.len()))?);
    }
    let disagreement = nan(c.maybe_f64("disagreement")?);
    let length = nan(c.maybe_f64("length")?);
    let distinct_ratio = nan(c.maybe_f64("distinct_ratio")?);
    let heldout = c.maybe_f64("heldout")?;
    let gold_below_peak = nan(c.maybe_f64("gold_below_peak")?);
    let gold_below_peak_se = nan(c.maybe_f64("gold_below_peak_se")?);
    let prompts = c.u64("prompts")?;
    let pool = c.maybe_u64("pool")?;
    let replicate = c.maybe_u64("replicate")?;
    Ok((0..df.height())
        .map(|i| {
            let mut m: Vec<Option<f64>> = members.iter().map(|col| col[i]).collect();
            while m.last() == Some(&None) {
                m.pop();
            }
            CurveRow {
                method: method[i].clone(),
                aggregator: aggregators[i],
                proxy_size: proxy_size[i].clone(),
                proxy_params: proxy_params[i],
                data_size: data_size[i],
                label_noise: label_noise[i],
                ensemble: ensemble[i].clone(),
                n: n[i],
                step: step[i],
                kl_penalty: kl_penalty[i],
                kl: kl[i],
                kl_kind: kl_kind[i].clone(),
                kl_k3: kl_k3[i],
                kl_bound: kl_bound[i],
                kl_exact: kl_exact[i],
                sqrt_kl: sqrt_kl[i].unwrap_or_else(|| kl[i].max(0.0).sqrt()),
                gold: gold[i],
                gold_se: gold_se[i],
                measures: crate::stats::curve::Measures {
                    proxy: proxy[i],
                    members: m.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect(),
                    disagreement: disagreement[i],
                    length: length[i],
                    distinct_ratio: distinct_ratio[i],
                    heldout: heldout[i],
                },
                gold_below_peak: gold_below_peak[i],
                gold_below_peak_se: gold_below_peak_se[i],
                prompts: prompts[i],
                pool: pool[i],
                replicate: replicate[i].unwrap_or(0),
            }
        })
        .collect())
}

/// Reads the ensembles' costs (`ensembles.parquet`) back, for `goodhart report`; none when
/// the study has no such table (every ensemble from scratch).
pub fn read_ensembles(path: &Path) -> Result<Vec<EnsembleCost>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let df = read_parquet(path)?;
    let c = Columns { df: &df, path };
    let (replicate, ensemble, source, members) = (c.u64("replicate")?, c.str("ensemble")?, c.str("source")?, c.u64("members")?);
    let (models, params, seconds) = (c.u64("models_trained")?, c.u64("params_trained")?, c.f64("train_seconds")?);
    Ok((0..df.height())
        .map(|i| EnsembleCost {
            replicate: replicate[i],
            ensemble: ensemble[i].clone(),
            source: source[i].clone(),
            members: members[i],
            models_trained: models[i],
            params_trained: params[i],
            train_seconds: seconds[i],
        })
        .collect())
}

/// Reads the reward-model table (`rm.parquet`) back into rows, for `goodhart report`.
/// Columns older tables may lack read as null (0 or NaN for the non-optional numbers, ""
/// for `artifact`). Required: `model`, `role`, `size`, `ensemble`, `params`,
/// `train_examples`, `val_accuracy`. A damaged table (no rows, a required column missing, a
/// column of the wrong type, a null or non-finite `val_accuracy`, a model twice, …) is one
/// [`Error::BadTable`] naming the file and, where there is one, the column and the row.
pub fn read_rm(path: &Path) -> Result<Vec<RmRow>> {
    let df = read_parquet(path)?;
    check::rm(&df, path)?;
    let c = Columns { df: &df, path };
    let nan = |v: Vec<Option<f64>>| v.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect::<Vec<_>>();
    let zero = |v: Vec<Option<u64>>| v.into_iter().map(|x| x.unwrap_or(0)).collect::<Vec<_>>();
    let model = c.str("model")?;
    let role = c.str("role")?;
    let size = c.str("size")?;
    let ensemble = c.str("ensemble")?;
    let params = c.u64("params")?;
    let layers = zero(c.maybe_u64("layers")?);
    let width = zero(c.maybe_u64("width")?);
    let train_examples = c.u64("train_examples")?;
    let label_noise = c.maybe_f64("label_noise")?;
    let member = c.maybe_u64("member")?;
    let val_pairs = zero(c.maybe_u64("val_pairs")?);
    let val_accuracy = nan(c.maybe_f64("val_accuracy")?);
    let val_bt_loss = nan(c.maybe_f64("val_bt_loss_nats")?);
    let distill_r2 = c.maybe_f64("gold_distill_r2")?;
    let train_steps = zero(c.maybe_u64("train_steps")?);
    let train_seconds = nan(c.maybe_f64("train_seconds")?);
    let score_offset = nan(c.maybe_f64("score_offset")?);
    let score_scale = nan(c.maybe_f64("score_scale")?);
    let artifact = if c.has("artifact") { c.str("artifact")? } else { vec![String::new(); df.height()] };
    let replicate = c.maybe_u64("replicate")?;
    Ok((0..df.height())
        .map(|i| RmRow {
            model: model[i].clone(),
            role: role[i].clone(),
            size: size[i].clone(),
            ensemble: ensemble[i].clone(),
            params: params[i],
            layers: layers[i],
            width: width[i],
            train_examples: train_examples[i],
            label_noise: label_noise[i],
            member: member[i],
            val_pairs: val_pairs[i],
            val_accuracy: val_accuracy[i],
            val_bt_loss: val_bt_loss[i],
            distill_r2: distill_r2[i],
            train_steps: train_steps[i],
            train_seconds: train_seconds[i],
            score_offset: score_offset[i],
            score_scale: score_scale[i],
            artifact: artifact[i].clone(),
            replicate: replicate[i],
        })
        .collect())
}
