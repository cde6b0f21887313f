//! Best-of-n: one pool of π_ref samples for held-out prompts, scored once by gold, every
//! proxy and the held-out proxy; every ensemble × aggregator then reads that same pool
//! through the unbiased estimator ([`crate::bon::curve`]). Stored as `rows.parquet`, one
//! curve-table row per (ensemble, aggregator, n).

use std::path::Path;

use polars::prelude::ParquetWriter;
use serde_json::{json, Value};
use tracing::info;

use std::sync::Arc;

use super::{Loaded, INFER_BATCH, PAIR_BLOCK};
use crate::cell::exec::Exec;
use crate::cell::Kind;
use crate::error::{Error, Result};
use crate::model::RewardModel;
use crate::output::table::{self, CurveRow};
use crate::sweep::ProxyCell;

const FILE: &str = "rows.parquet";

pub fn make(x: &Exec, i: usize, replicate: usize, dir: &Path, pb: &indicatif::ProgressBar) -> Result<Value> {
    let exp = x.exp;
    let seed = exp.replicate_seed(replicate);
    let world = &x.world;
    let b = &exp.bon;
    let policy = x.dep(i, "policy")?;
    let policy = policy.policy();
    let gold = x.dep(i, "gold")?;
    let gold = gold.reward();
    // This replicate's proxies, in grid order, and the held-out proxy: the cell's deps.
    let (mut grid, mut heldout_cell): (Vec<(ProxyCell, Arc<Loaded>)>, Option<Arc<Loaded>>) = (Vec::new(), None);
    for &d in &x.plan.cells[i].deps {
        if let Kind::Proxy(c) = &x.plan.cells[d].kind {
            if c.heldout {
                heldout_cell = Some(x.loaded(d)?);
            } else {
                grid.push((c.clone(), x.loaded(d)?));
            }
        }
    }
    let proxies: Vec<&RewardModel> = grid.iter().map(|(_, l)| l.reward()).collect();
    let heldout: Option<&RewardModel> = heldout_cell.as_deref().map(Loaded::reward);
    let mut rng = crate::seed::rng(seed, "bon/prompts");
    let prompts: Vec<Vec<u32>> = (0..b.prompts).map(|_| world.sample_prompt(&mut rng)).collect();
    // Pool: prompt-major, `pool` samples per prompt, in seeded blocks.
    let per_prompt = b.pool.div_ceil(PAIR_BLOCK);
    let blocks: Vec<(usize, usize)> = (0..b.prompts).flat_map(|p| (0..per_prompt).map(move |k| (p, k))).collect();
    pb.set_length((blocks.len() + 2 + proxies.len()) as u64);
    let parts = crate::parallel::map(&blocks, |&(p, k)| {
        let mut rng = crate::seed::rng(seed, &format!("bon/pool/prompt{p}/block{k}"));
        let take = PAIR_BLOCK.min(b.pool - k * PAIR_BLOCK);
        let r = policy.sample(&vec![prompts[p].clone(); take], 1.0, &mut rng);
        pb.inc(1);
        r
    });
    let mut responses = Vec::with_capacity(b.prompts * b.pool);
    for part in parts {
        responses.extend(part?);
    }
    let pool_prompts: Vec<Vec<u32>> = prompts.iter().flat_map(|p| std::iter::repeat_n(p.clone(), b.pool)).collect();
    let set = crate::model::policy::encode_all(world, &pool_prompts, &responses);
    let groups = crate::bon::group_ids(&responses, b.pool);
    let (length, distinct_ratio) = crate::bon::response_stats(&responses);
    let dup = responses.chunks(b.pool).map(crate::sft::duplicate_fraction).sum::<f64>() / b.prompts as f64;
    pb.suspend(|| info!("best-of-n pools: {} prompts x {} samples (duplicate fraction {:.4})", b.prompts, b.pool, dup));

    // Score once: gold and every proxy, one model per job.
    let models: Vec<&RewardModel> = std::iter::once(gold).chain(proxies.iter().copied()).chain(heldout).collect();
    let scored = crate::parallel::map(&models, |m| {
        let s = m.score_set(&set, INFER_BATCH);
        pb.inc(1);
        s
    });
    let mut scores = Vec::with_capacity(models.len());
    for s in scored {
        scores.push(s?);
    }
    let view = crate::bon::PoolView {
        prompts: b.prompts,
        size: b.pool,
        gold: &scores[0],
        groups: &groups,
        length: &length,
        distinct_ratio: &distinct_ratio,
        heldout: heldout.map(|_| scores[proxies.len() + 1].as_slice()),
    };

    // Ensembles: proxies sharing size, data and noise, in grid order.
    let cells: Vec<ProxyCell> = grid.iter().map(|(c, _)| c.clone()).collect();
    let ns = crate::bon::n_grid(b.pool);
    let lf = crate::bon::LogFactorials::new(b.pool);
    let mut jobs = Vec::new();
    for (id, members) in crate::sweep::ensembles(&cells) {
        for agg in b.aggregators(members.len()) {
            jobs.push((id.clone(), members.clone(), agg));
        }
    }
    let curves = crate::parallel::map(&jobs, |(_, members, agg)| {
        let member_scores: Vec<&[f32]> = members.iter().map(|&i| scores[i + 1].as_slice()).collect();
        crate::bon::curve(*agg, &member_scores, view, &ns, &lf)
    });
    let mut rows = Vec::new();
    for ((id, members, agg), points) in jobs.iter().zip(curves) {
        let cell = &cells[members[0]];
        let params = exp.proxy_arch(&cell.size).reward_params() as u64;
        for pt in points {
            rows.push(CurveRow {
                method: "bon".into(),
                aggregator: agg.name(),
                lambda: agg.lambda(),
                proxy_size: cell.size.name.clone(),
                proxy_params: params,
                data_size: cell.data_size as u64,
                label_noise: cell.noise,
                ensemble: id.clone(),
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
                replicate: replicate as u64,
            });
        }
    }
    pb.inc(1);
    let path = dir.join(FILE);
    let mut df = table::curve_frame(&rows)?;
    let f = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
    ParquetWriter::new(f).finish(&mut df).map_err(|e| Error::Table {
        path: path.clone(),
        msg: e.to_string(),
    })?;
    Ok(json!({ "rows": rows.len(), "pool_duplicate_fraction": dup }))
}

pub fn load(dir: &Path) -> Result<Vec<CurveRow>> {
    table::read_curves(&dir.join(FILE)).map_err(|e| Error::Artifact {
        dir: dir.to_path_buf(),
        reason: e.to_string(),
    })
}
