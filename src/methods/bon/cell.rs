//! Best-of-n for a range of held-out prompts of one replicate: each prompt's pool of π_ref
//! samples, scored once by gold, every proxy of the replicate and the held-out proxy; then
//! every ensemble × aggregator reads that same pool through the unbiased estimator
//! ([`crate::methods::bon::per_prompt`]). Stored as `units.parquet`: one row per (ensemble,
//! aggregator, prompt, n) with the expected values of best-of-n for that prompt. The curves
//! (means over every prompt of the replicate) are assembled from all of a replicate's cells
//! (the output layer).

use std::path::Path;

use polars::prelude::*;
use serde_json::{json, Value};
use tracing::info;

use crate::cell::make::sample_block;
use crate::stats::aggregate::Aggregator;
use crate::cell::kind::{CellKind, Inputs, Loaded};
use crate::cell::cost::Work;
use crate::cell::store::Meta;
use crate::config::Experiment;
use crate::error::{Error, Result};
use crate::frame::{read_parquet, Columns};
use crate::methods::bon::{unit_columns, Selection};
use crate::model::RewardModel;
use crate::train::proxy::ProxyCell;
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
        let groups: Vec<Value> = crate::train::proxy::ensembles(&crate::train::proxy::proxy_cells(exp, r))
            .into_iter()
            .map(|(id, m)| json!({ "ensemble": id, "members": m }))
            .collect();
        // Prompt i is the i-th draw of the replicate's prompt stream whatever the total, so
        // more prompts (or another split) reuse the cells that exist.
        json!({
            "prompts": [self.start, self.end], "pool": bon.pool,
            "aggregators": { "uwo": bon.uwo_lambdas, "mean_std": bon.mean_std_lambdas, "median": bon.median },
            "ensembles": groups, "pair_block": sample_block(&exp.world_config(0)),
            "replicate": r, "seed": exp.replicate_seed(r),
        })
    }
    fn code_version(&self) -> &'static str {
        env!("GOODHART_CODE_BON")
    }
    fn work(&self, exp: &Experiment) -> Work {
        let seq = exp.world_config(0).seq_len() as f64;
        let n = ((self.end - self.start) * exp.bon.pool) as f64;
        let mut w = Work::default();
        w.infer(n * seq, exp.params.policy);
        w.infer(n * seq, exp.params.gold);
        let grid = exp.proxy.noise.len() * exp.proxy.data_sizes.len() * exp.proxy.source_models();
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

/// One ensemble × aggregator over a cell's prompts: what best-of-n selects, per prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptCurves {
    pub ensemble: String,
    pub aggregator: Aggregator,
    /// Ensemble size k.
    pub members: usize,
    /// `per[prompt][j]`: what best-of-`ns[j]` selects for that prompt.
    pub per: Vec<Vec<Selection>>,
}

/// A best-of-n cell read back: its prompts, the n grid, and every curve's per-prompt values.
#[derive(Debug, Clone, PartialEq)]
pub struct BonUnits {
    pub cell: BonCell,
    pub ns: Vec<usize>,
    pub curves: Vec<PromptCurves>,
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
    let (grid, heldout) = crate::train::proxy::proxies(x);
    let proxies: Vec<&RewardModel> = grid.iter().map(|m| m.1).collect();
    let prompts: Vec<Vec<u32>> = prompts(exp, world, c.replicate, c.end).split_off(c.start);
    let np = prompts.len();
    // Pool: prompt-major, `pool` samples per prompt, in seeded blocks named by the prompt's
    // index in the replicate.
    let size = sample_block(world);
    let per_prompt = b.pool.div_ceil(size);
    let blocks: Vec<(usize, usize)> = (0..np).flat_map(|p| (0..per_prompt).map(move |k| (p, k))).collect();
    // This cell's share of its group's bar (which counts it as one unit until here): every
    // pool block, every model scored (gold, the members, the held-out proxy), the summary.
    pb.inc_length((blocks.len() + 2 + proxies.len() + usize::from(heldout.is_some())) as u64 - 1);
    let parts = crate::parallel::map(&blocks, |&(p, k)| {
        let mut rng = crate::seed::rng(seed, &format!("bon/pool/prompt{}/block{k}", c.start + p));
        let take = size.min(b.pool - k * size);
        let r = policy.sample(&vec![prompts[p].clone(); take], 1.0, &mut rng);
        pb.inc(1);
        r
    });
    let mut responses = Vec::with_capacity(np * b.pool);
    for part in parts {
        responses.extend(part?);
    }
    let pool_prompts: Vec<Vec<u32>> = prompts.iter().flat_map(|p| std::iter::repeat_n(p.clone(), b.pool)).collect();
    let groups = crate::methods::bon::group_ids(&responses, b.pool);
    let dup = responses.chunks(b.pool).map(crate::train::sft::duplicate_fraction).sum::<f64>() / np as f64;
    pb.suspend(|| info!("{}: {np} prompts x {} samples (duplicate fraction {dup:.4})", x.id, b.pool));

    // Score once: gold and every proxy, one model per thread.
    let scorers = crate::methods::eval::Scorers {
        gold,
        members: proxies,
        heldout,
    };
    let sc = crate::methods::eval::score(world, &pool_prompts, &responses, &scorers, true, &|| pb.inc(1))?;
    let view = crate::methods::bon::PoolView {
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
    let ns = crate::methods::bon::n_grid(b.pool);
    let lf = crate::methods::bon::LogFactorials::new(b.pool);
    let mut jobs = Vec::new();
    for (id, members) in crate::train::proxy::ensembles(&cells) {
        for agg in b.aggregators(members.len()) {
            jobs.push((id.clone(), members.clone(), agg));
        }
    }
    let per = crate::parallel::map(&jobs, |(_, members, agg)| {
        let member_scores: Vec<&[f32]> = members.iter().map(|&m| sc.members[m].as_slice()).collect();
        crate::methods::bon::per_prompt(*agg, &member_scores, view, &ns, &lf)
    });
    let units = BonUnits {
        cell: c,
        ns,
        curves: jobs
            .into_iter()
            .zip(per)
            .map(|((ensemble, members, aggregator), per)| PromptCurves {
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
/// replicate), `n`, then the [`Selection`] in [`unit_columns`] (member columns up to the
/// largest ensemble, null past an ensemble's own size; `heldout` null without one).
pub fn frame(u: &BonUnits) -> Result<DataFrame> {
    let k_max = u.curves.iter().map(|c| c.members).max().unwrap_or(0);
    let rows = u.curves.iter().map(|c| c.per.len() * u.ns.len()).sum::<usize>();
    let (mut ens, mut agg, mut lam, mut prompt, mut n) = (Vec::with_capacity(rows), Vec::with_capacity(rows), Vec::with_capacity(rows), Vec::with_capacity(rows), Vec::with_capacity(rows));
    let mut sel: Vec<&Selection> = Vec::with_capacity(rows);
    for c in &u.curves {
        for (p, per_n) in c.per.iter().enumerate() {
            for (j, s) in per_n.iter().enumerate() {
                ens.push(c.ensemble.clone());
                agg.push(c.aggregator.name());
                lam.push(c.aggregator.lambda());
                prompt.push((u.cell.start + p) as u64);
                n.push(u.ns[j] as u64);
                sel.push(s);
            }
        }
    }
    let value = |f: &dyn Fn(&Selection) -> Option<f64>| sel.iter().map(|s| f(s)).collect::<Vec<Option<f64>>>();
    let mut columns = vec![
        Column::new("ensemble".into(), ens),
        Column::new("aggregator".into(), agg),
        Column::new("lambda".into(), lam),
        Column::new("prompt".into(), prompt),
        Column::new("n".into(), n),
    ];
    for name in unit_columns(k_max) {
        let v = match name.as_str() {
            "gold" => value(&|s| Some(s.gold)),
            "proxy" => value(&|s| Some(s.proxy)),
            "disagreement" => value(&|s| Some(s.disagreement)),
            "kl_exact" => value(&|s| Some(s.kl_exact)),
            "length" => value(&|s| Some(s.length)),
            "distinct_ratio" => value(&|s| Some(s.distinct_ratio)),
            "heldout" => value(&|s| s.heldout),
            member => {
                let m: usize = member.trim_start_matches("member_").parse().expect("unit_columns names members member_M");
                value(&|s| s.members.get(m).copied())
            }
        };
        columns.push(Column::new(name.as_str().into(), v));
    }
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
    // A table that does not read back is a damaged cell (quarantined and made again).
    let damaged = |e: Error| match e {
        e @ Error::Io { .. } => e,
        e => bad(e.to_string()),
    };
    let df = read_parquet(&path).map_err(damaged)?;
    let table = Columns { df: &df, path: &path };
    let col = |name: &str| table.opt_f64(name).map_err(damaged);
    let (ens, agg, lam, n) = (table.str("ensemble").map_err(damaged)?, table.str("aggregator").map_err(damaged)?, col("lambda")?, table.u64("n").map_err(damaged)?);
    let k_max = (0..).take_while(|m| table.has(&format!("member_{m}"))).count();
    let (gold, proxy, disagreement, kl_exact) = (col("gold")?, col("proxy")?, col("disagreement")?, col("kl_exact")?);
    let (length, distinct_ratio, heldout) = (col("length")?, col("distinct_ratio")?, col("heldout")?);
    let members: Vec<Vec<Option<f64>>> = (0..k_max).map(|m| col(&format!("member_{m}"))).collect::<Result<_>>()?;
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
    let value = |v: &[Option<f64>], r: usize| v[r].unwrap_or(f64::NAN);
    let mut curves = Vec::new();
    for start in (0..n.len()).step_by(width * prompts) {
        let aggregator = Aggregator::from_parts(&agg[start], lam[start]).ok_or_else(|| bad(format!("unknown aggregator {:?}", agg[start])))?;
        let k = members.iter().take_while(|m| m[start].is_some()).count();
        let per = (0..prompts)
            .map(|p| {
                (0..width)
                    .map(|j| {
                        let r = start + p * width + j;
                        Selection {
                            gold: value(&gold, r),
                            proxy: value(&proxy, r),
                            members: members[..k].iter().map(|m| value(m, r)).collect(),
                            disagreement: value(&disagreement, r),
                            kl_exact: value(&kl_exact, r),
                            length: value(&length, r),
                            distinct_ratio: value(&distinct_ratio, r),
                            heldout: heldout[r],
                        }
                    })
                    .collect()
            })
            .collect();
        curves.push(PromptCurves {
            ensemble: ens[start].clone(),
            aggregator,
            members: k,
            per,
        });
    }
    Ok(BonUnits { cell: c, ns, curves })
}
