//! Best-of-n for a range of held-out prompts of one replicate: each prompt's pool of π_ref
//! samples, scored once by gold, every proxy of the replicate and the held-out proxy; then
//! every ensemble × aggregator reads that same pool through the unbiased estimator
//! ([`crate::bon::per_prompt`]). Stored as `units.parquet`: one row per (ensemble,
//! aggregator, prompt, n) with the expected values of best-of-n for that prompt. The curves
//! (means over every prompt of the replicate) are assembled from all of a replicate's cells
//! ([`crate::output::assemble`]).

use std::path::Path;

use polars::prelude::*;
use serde_json::{json, Value};
use tracing::info;

use super::PAIR_BLOCK;
use crate::aggregate::Aggregator;
use crate::cell::kind::{CellKind, Inputs, Loaded};
use crate::cell::cost::Work;
use crate::cell::store::Meta;
use crate::config::Experiment;
use crate::error::{Error, Result};
use crate::model::RewardModel;
use crate::sweep::ProxyCell;
use crate::world::WorldConfig;

const FILE: &str = "units.parquet";

/// A best-of-n cell: prompts `start..end` of replicate `replicate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BonCell {
    pub replicate: usize,
    pub start: usize,
    pub end: usize,
}

impl CellKind for BonCell {
    fn name(&self) -> &'static str {
        "bon"
    }
    fn stage(&self) -> &'static str {
        "best-of-n"
    }
    fn replicate(&self) -> usize {
        self.replicate
    }
    fn recipe(&self, exp: &Experiment) -> Value {
        let (bon, r) = (&exp.bon, self.replicate);
        let groups: Vec<Value> = crate::sweep::ensembles(&crate::sweep::proxy_cells(exp, r))
            .into_iter()
            .map(|(id, m)| json!({ "ensemble": id, "members": m }))
            .collect();
        // Prompt i is the i-th draw of the replicate's prompt stream whatever the total, so
        // more prompts (or another split) reuse the cells that exist.
        json!({
            "prompts": [self.start, self.end], "pool": bon.pool,
            "aggregators": { "uwo": bon.uwo_lambdas, "mean_std": bon.mean_std_lambdas, "median": bon.median },
            "ensembles": groups, "pair_block": PAIR_BLOCK,
            "replicate": r, "seed": exp.replicate_seed(r),
        })
    }
    fn code_version(&self) -> &'static str {
        env!("GOODHART_CODE_BON")
    }
    fn work(&self, exp: &Experiment) -> Work {
        let seq = exp.world().seq_len() as f64;
        let n = ((self.end - self.start) * exp.bon.pool) as f64;
        let mut w = Work::default();
        w.infer(n * seq, exp.params.policy);
        w.infer(n * seq, exp.params.gold);
        let grid = exp.proxy.noise.len() * exp.proxy.data_sizes.len() * exp.proxy.members;
        for (_, p) in &exp.params.proxies {
            for _ in 0..grid {
                w.infer(n * seq, *p);
            }
        }
        w
    }
    fn per_replicate(&self) -> bool {
        true
    }
    fn make(&self, inputs: &Inputs, dir: &Path, pb: &indicatif::ProgressBar) -> Result<Value> {
        make(inputs, *self, dir, pb)
    }
    fn load(&self, _exp: &Experiment, _world: &WorldConfig, _device: &candle_core::Device, dir: &Path, meta: &Meta) -> Result<Loaded> {
        load(dir, *self).map(|u| Loaded::new(u, meta))
    }
}

/// One ensemble × aggregator over a cell's prompts.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitCurve {
    pub ensemble: String,
    pub aggregator: Aggregator,
    /// Ensemble size k.
    pub members: usize,
    /// `per[prompt][j]`: best-of-`ns[j]` values in [`crate::bon::unit_columns`] order.
    pub per: Vec<Vec<Vec<f64>>>,
}

/// A best-of-n cell read back: its prompts, the n grid, and every curve's per-prompt values.
#[derive(Debug, Clone, PartialEq)]
pub struct BonUnits {
    pub cell: BonCell,
    pub ns: Vec<usize>,
    pub curves: Vec<UnitCurve>,
}

/// The held-out prompts of a replicate (in `world`, its world), `0..end` (prompt i is the
/// same whatever `end`).
pub fn prompts(exp: &Experiment, world: &WorldConfig, replicate: usize, end: usize) -> Vec<Vec<u32>> {
    let mut rng = crate::seed::rng(exp.replicate_seed(replicate), "bon/prompts");
    (0..end).map(|_| world.prompt_in(crate::world::Split::BestOfN, &mut rng)).collect()
}

pub fn make(x: &Inputs, c: BonCell, dir: &Path, pb: &indicatif::ProgressBar) -> Result<Value> {
    let exp = x.exp;
    let world = x.world;
    let b = &exp.bon;
    let seed = exp.replicate_seed(c.replicate);
    let policy = x.policy();
    let gold = x.gold();
    // This replicate's proxies, in grid order, and the held-out proxy: the cell's deps.
    let (grid, heldout) = x.proxies();
    let proxies: Vec<&RewardModel> = grid.iter().map(|m| m.1).collect();
    let prompts: Vec<Vec<u32>> = prompts(exp, world, c.replicate, c.end).split_off(c.start);
    let np = prompts.len();
    // Pool: prompt-major, `pool` samples per prompt, in seeded blocks named by the prompt's
    // index in the replicate.
    let per_prompt = b.pool.div_ceil(PAIR_BLOCK);
    let blocks: Vec<(usize, usize)> = (0..np).flat_map(|p| (0..per_prompt).map(move |k| (p, k))).collect();
    // This cell's share of its group's bar (which counts it as one unit until here): every
    // pool block, every model scored (gold, the members, the held-out proxy), the summary.
    pb.inc_length((blocks.len() + 2 + proxies.len() + usize::from(heldout.is_some())) as u64 - 1);
    let parts = crate::parallel::map(&blocks, |&(p, k)| {
        let mut rng = crate::seed::rng(seed, &format!("bon/pool/prompt{}/block{k}", c.start + p));
        let take = PAIR_BLOCK.min(b.pool - k * PAIR_BLOCK);
        let r = policy.sample(&vec![prompts[p].clone(); take], 1.0, &mut rng);
        pb.inc(1);
        r
    });
    let mut responses = Vec::with_capacity(np * b.pool);
    for part in parts {
        responses.extend(part?);
    }
    let pool_prompts: Vec<Vec<u32>> = prompts.iter().flat_map(|p| std::iter::repeat_n(p.clone(), b.pool)).collect();
    let groups = crate::bon::group_ids(&responses, b.pool);
    let dup = responses.chunks(b.pool).map(crate::sft::duplicate_fraction).sum::<f64>() / np as f64;
    pb.suspend(|| info!("{}: {np} prompts x {} samples (duplicate fraction {dup:.4})", x.cell.id, b.pool));

    // Score once: gold and every proxy, one model per thread.
    let scorers = crate::eval::Scorers {
        gold,
        members: proxies,
        heldout,
    };
    let sc = crate::eval::score(world, &pool_prompts, &responses, &scorers, true, &|| pb.inc(1))?;
    let view = crate::bon::PoolView {
        prompts: np,
        size: b.pool,
        gold: &sc.gold,
        groups: &groups,
        length: &sc.length,
        distinct_ratio: &sc.distinct_ratio,
        heldout: sc.heldout.as_deref(),
    };
    // Ensembles: proxies sharing size, data and noise, in grid order.
    let cells: Vec<ProxyCell> = grid.iter().map(|m| m.0.clone()).collect();
    let ns = crate::bon::n_grid(b.pool);
    let lf = crate::bon::LogFactorials::new(b.pool);
    let mut jobs = Vec::new();
    for (id, members) in crate::sweep::ensembles(&cells) {
        for agg in b.aggregators(members.len()) {
            jobs.push((id.clone(), members.clone(), agg));
        }
    }
    let per = crate::parallel::map(&jobs, |(_, members, agg)| {
        let member_scores: Vec<&[f32]> = members.iter().map(|&m| sc.members[m].as_slice()).collect();
        crate::bon::per_prompt(*agg, &member_scores, view, &ns, &lf)
    });
    let units = BonUnits {
        cell: c,
        ns,
        curves: jobs
            .into_iter()
            .zip(per)
            .map(|((ensemble, members, aggregator), per)| UnitCurve {
                ensemble,
                aggregator,
                members: members.len(),
                per,
            })
            .collect(),
    };
    pb.inc(1);
    let path = dir.join(FILE);
    let mut df = frame(&units)?;
    let f = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
    ParquetWriter::new(f).finish(&mut df).map_err(|e| Error::Table {
        path: path.clone(),
        msg: e.to_string(),
    })?;
    Ok(json!({ "prompts": [c.start, c.end], "curves": units.curves.len(), "pool_duplicate_fraction": dup }))
}

/// The per-unit frame: `ensemble`, `aggregator`, `lambda`, `prompt` (index in the
/// replicate), `n`, then the values of [`crate::bon::unit_columns`] (member columns up to
/// the largest ensemble; null past an ensemble's own size).
pub fn frame(u: &BonUnits) -> Result<DataFrame> {
    let k_max = u.curves.iter().map(|c| c.members).max().unwrap_or(0);
    let names = crate::bon::unit_columns(k_max);
    let rows = u.curves.iter().map(|c| c.per.len() * u.ns.len()).sum::<usize>();
    let (mut ens, mut agg, mut lam, mut prompt, mut n) = (Vec::with_capacity(rows), Vec::with_capacity(rows), Vec::with_capacity(rows), Vec::with_capacity(rows), Vec::with_capacity(rows));
    let mut vals: Vec<Vec<Option<f64>>> = vec![Vec::with_capacity(rows); names.len()];
    for c in &u.curves {
        let k = c.members;
        for (p, per_n) in c.per.iter().enumerate() {
            for (j, v) in per_n.iter().enumerate() {
                ens.push(c.ensemble.clone());
                agg.push(c.aggregator.name());
                lam.push(c.aggregator.lambda());
                prompt.push((u.cell.start + p) as u64);
                n.push(u.ns[j] as u64);
                // Layout of `v`: gold, proxy, k members, then 5 more; align members to k_max.
                for (col, out) in vals.iter_mut().enumerate() {
                    let src = if col < 2 {
                        Some(col)
                    } else if col < 2 + k_max {
                        (col - 2 < k).then_some(col)
                    } else {
                        Some(col - k_max + k)
                    };
                    out.push(src.map(|s| v[s]));
                }
            }
        }
    }
    let mut columns = vec![
        Column::new("ensemble".into(), ens),
        Column::new("aggregator".into(), agg),
        Column::new("lambda".into(), lam),
        Column::new("prompt".into(), prompt),
        Column::new("n".into(), n),
    ];
    columns.extend(names.iter().zip(vals).map(|(name, v)| Column::new(name.as_str().into(), v)));
    DataFrame::new(rows, columns).map_err(|e| Error::Table {
        path: FILE.into(),
        msg: e.to_string(),
    })
}

pub fn load(dir: &Path, c: BonCell) -> Result<BonUnits> {
    let path = dir.join(FILE);
    let bad = |reason: String| Error::Artifact {
        dir: dir.to_path_buf(),
        reason: format!("{FILE}: {reason}"),
    };
    let f = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
    let df = ParquetReader::new(f).finish().map_err(|e| bad(e.to_string()))?;
    let strs = |name: &str| -> Result<Vec<String>> {
        let col = df.column(name).map_err(|e| bad(e.to_string()))?;
        let ca = col.str().map_err(|e| bad(e.to_string()))?;
        Ok(ca.iter().map(|v| v.unwrap_or("").to_string()).collect())
    };
    let u64s = |name: &str| -> Result<Vec<u64>> {
        let col = df.column(name).map_err(|e| bad(e.to_string()))?;
        let ca = col.u64().map_err(|e| bad(e.to_string()))?;
        ca.iter().map(|v| v.ok_or_else(|| bad(format!("null in {name}")))).collect()
    };
    let f64s = |name: &str| -> Result<Vec<Option<f64>>> {
        let col = df.column(name).map_err(|e| bad(e.to_string()))?;
        Ok(col.f64().map_err(|e| bad(e.to_string()))?.iter().collect())
    };
    let (ens, agg, lam, n) = (strs("ensemble")?, strs("aggregator")?, f64s("lambda")?, u64s("n")?);
    let k_max = (0..).take_while(|m| df.column(&format!("member_{m}")).is_ok()).count();
    let names = crate::bon::unit_columns(k_max);
    let vals: Vec<Vec<Option<f64>>> = names.iter().map(|nm| f64s(nm)).collect::<Result<_>>()?;
    // Rows come curve by curve, prompt-major, n ascending (see `frame`).
    let mut ns: Vec<usize> = Vec::new();
    for &v in &n {
        if ns.contains(&(v as usize)) {
            break;
        }
        ns.push(v as usize);
    }
    let (width, prompts) = (ns.len(), c.end - c.start);
    if width == 0 || n.len() % (width * prompts) != 0 {
        return Err(bad(format!("{} rows do not make whole curves of {prompts} prompts x {width} n", n.len())));
    }
    let mut curves = Vec::new();
    for start in (0..n.len()).step_by(width * prompts) {
        let aggregator = Aggregator::from_parts(&agg[start], lam[start]).ok_or_else(|| bad(format!("unknown aggregator {:?}", agg[start])))?;
        let k = (0..k_max).take_while(|&m| vals[2 + m][start].is_some()).count();
        let mut per = Vec::with_capacity(prompts);
        for p in 0..prompts {
            let mut row = Vec::with_capacity(width);
            for j in 0..width {
                let r = start + p * width + j;
                let mut v: Vec<f64> = vec![vals[0][r].unwrap_or(f64::NAN), vals[1][r].unwrap_or(f64::NAN)];
                v.extend((0..k).map(|m| vals[2 + m][r].unwrap_or(f64::NAN)));
                v.extend((2 + k_max..names.len()).map(|col| vals[col][r].unwrap_or(f64::NAN)));
                row.push(v);
            }
            per.push(row);
        }
        curves.push(UnitCurve {
            ensemble: ens[start].clone(),
            aggregator,
            members: k,
            per,
        });
    }
    Ok(BonUnits { cell: c, ns, curves })
}
