//! The per-unit tables read back into [`UnitCurve`]s for the conclusions, each as its
//! method's [`UnitTable`] says: `bon_units` (best-of-n per prompt and n), `ppo_units` (PPO per
//! evaluation sample and checkpoint).
//!
//! A curve is one replicate × ensemble × aggregator (× β); its points are ordered by n or
//! step, its units by prompt. Every point of a curve must have the same prompts, every
//! value must be finite (the held-out column may be empty throughout): a table that breaks
//! this is refused with a one-line error naming the file and the curve.

use std::collections::BTreeMap;
use std::path::Path;

use crate::stats::aggregate::label as aggregator_label;
use crate::stats::conclusions::UnitCurve;
use crate::error::Result;
use crate::methods::{PointKl, UnitTable};
use crate::output::table::{read_parquet, Columns};

/// One row's values, before grouping.
struct Row {
    prompt: u64,
    gold: f64,
    proxy: f64,
    members: Vec<f64>,
    disagreement: f64,
    heldout: Option<f64>,
}

type Key = (u64, String, String, Option<u64>);
type Points = BTreeMap<u64, (f64, Vec<Row>)>;

/// Reads the unit table of `method` (named `name`) at `path`, as its [`UnitTable`] says.
pub fn read(path: &Path, name: &str, table: &UnitTable) -> Result<Vec<UnitCurve>> {
    let df = read_parquet(path)?;
    let c = Columns { df: &df, path };
    let h = df.height();
    if h == 0 {
        return Err(c.error("no rows"));
    }
    let replicate = c.u64("replicate")?;
    let ensemble = c.str("ensemble")?;
    let aggregator = c.str("aggregator")?;
    let lambda = c.maybe_f64("lambda")?;
    let prompt = c.u64("prompt")?;
    let gold = c.f64("gold")?;
    let proxy = c.f64("proxy")?;
    let mut members = Vec::new();
    while c.has(&format!("member_{}", members.len())) {
        members.push(c.opt_f64(&format!("member_{}", members.len()))?);
    }
    let heldout = c.maybe_f64("heldout")?;
    let point = c.u64(table.point)?;
    let kl = match table.kl {
        PointKl::Column(name) => c.f64(name)?,
        PointKl::Of(f) => point.iter().map(|&p| f(p)).collect(),
    };
    let beta = if table.kl_penalty { c.opt_f64("kl_penalty")? } else { vec![None; h] };
    let disagreement = if table.disagreement { Some(c.f64("disagreement")?) } else { None };
    let mut curves: BTreeMap<Key, Points> = BTreeMap::new();
    for i in 0..h {
        let m: Vec<f64> = members.iter().filter_map(|col| col[i]).collect();
        let dis = match &disagreement {
            Some(d) => d[i],
            None => crate::stats::aggregate::population_variance(&m.iter().map(|&v| v as f32).collect::<Vec<_>>()),
        };
        let row = Row {
            prompt: prompt[i],
            gold: gold[i],
            proxy: proxy[i],
            disagreement: dis,
            heldout: heldout[i],
            members: m,
        };
        let finite = [row.gold, row.proxy, row.disagreement, kl[i]].iter().chain(&row.members).chain(&row.heldout).all(|v| v.is_finite());
        if !finite {
            return Err(c.error(format!("row {i}: a value is null, NaN or infinite")));
        }
        let key = (replicate[i], ensemble[i].clone(), aggregator_label(&aggregator[i], lambda[i]), beta[i].map(f64::to_bits));
        curves.entry(key).or_default().entry(point[i]).or_insert_with(|| (kl[i], Vec::new())).1.push(row);
    }
    curves
        .into_iter()
        .map(|(key, points)| curve(name, table, key, points).map_err(|msg| c.error(msg)))
        .collect()
}

fn curve(method: &str, table: &UnitTable, (replicate, ensemble, aggregator, beta): Key, points: Points) -> std::result::Result<UnitCurve, String> {
    let name = format!("curve {method}/{ensemble}/{aggregator} of replicate {replicate}");
    let single: Option<usize> = crate::stats::aggregate::member_index(&aggregator);
    let mut prompts: Option<Vec<u64>> = None;
    let mut c = UnitCurve {
        method: method.to_string(),
        traits: table.traits,
        replicate,
        ensemble,
        aggregator: aggregator.clone(),
        kl_penalty: beta.map(f64::from_bits),
        kl: Vec::new(),
        at: Vec::new(),
        gold: Vec::new(),
        proxy: Vec::new(),
        member_mean: Vec::new(),
        other_members: single.map(|_| Vec::new()),
        disagreement: Vec::new(),
        heldout: Some(Vec::new()),
    };
    for (p, (kl, mut rows)) in points {
        rows.sort_by_key(|r| r.prompt);
        let these: Vec<u64> = rows.iter().map(|r| r.prompt).collect();
        match &prompts {
            None => prompts = Some(these),
            Some(first) if *first != these => return Err(format!("{name}: its points do not share the same prompts")),
            Some(_) => {}
        }
        if rows.windows(2).any(|w| w[0].prompt == w[1].prompt) {
            return Err(format!("{name}: a prompt appears twice at one point"));
        }
        c.kl.push(kl);
        c.at.push((table.at)(p));
        c.gold.push(rows.iter().map(|r| r.gold).collect());
        c.proxy.push(rows.iter().map(|r| r.proxy).collect());
        c.member_mean.push(rows.iter().map(|r| crate::stats::mean_se(&r.members).0).collect());
        c.disagreement.push(rows.iter().map(|r| r.disagreement).collect());
        if let (Some(o), Some(m)) = (c.other_members.as_mut(), single) {
            o.push(
                rows.iter()
                    .map(|r| {
                        let others: Vec<f64> = r.members.iter().enumerate().filter(|&(j, _)| j != m).map(|(_, &v)| v).collect();
                        if others.is_empty() {
                            f64::NAN
                        } else {
                            crate::stats::mean_se(&others).0
                        }
                    })
                    .collect(),
            );
        }
        match (&mut c.heldout, rows.iter().map(|r| r.heldout).collect::<Option<Vec<f64>>>()) {
            (Some(h), Some(v)) => h.push(v),
            (h, _) => *h = None,
        }
    }
    if c.other_members.as_ref().is_some_and(|o| o.iter().flatten().any(|v| v.is_nan())) {
        c.other_members = None;
    }
    Ok(c)
}
