//! Best-of-n from a pool: the unbiased estimator (Nakano et al. 2021) and its KL.
//!
//! For a pool of N samples sorted by the aggregated proxy score ascending, the expected
//! value of best-of-n (the best of n samples drawn without replacement) is
//! `Σ_{i=n..N} C(i−1, n−1)/C(N, n) · v_(i)` for any per-sample value v (gold, proxy, a
//! member's score). Weights are computed in log space. Values are looked up through the
//! sort order, so each stays with the sample it belongs to.
//!
//! [`cell`]: the best-of-n cell, which draws the pools and writes each prompt's curve;
//! [`method`]: best-of-n in a study's plan, and its curves and unit table.

pub mod cell;
pub mod method;

use crate::stats::curve::Measures;
use crate::stats::mean_se;

/// `ln k!` for k = 0..=max.
#[derive(Debug, Clone)]
pub struct LogFactorials(Vec<f64>);

impl LogFactorials {
    pub fn new(max: usize) -> Self {
        let mut v = Vec::with_capacity(max + 1);
        let mut acc = 0f64;
        v.push(0.0);
        for k in 1..=max {
            acc += (k as f64).ln();
            v.push(acc);
        }
        Self(v)
    }

    /// `ln C(a, b)` for b ≤ a ≤ max.
    pub fn ln_choose(&self, a: usize, b: usize) -> f64 {
        self.0[a] - self.0[b] - self.0[a - b]
    }
}

/// Weights of best-of-n over a pool of `pool` samples sorted ascending: index i (0-based,
/// rank i + 1) gets `C(i, n−1) / C(pool, n)` if i + 1 ≥ n, else 0. They sum to 1.
pub fn weights(pool: usize, n: usize, lf: &LogFactorials) -> Vec<f64> {
    assert!(n >= 1 && n <= pool, "best-of-{n} needs 1 ≤ n ≤ pool ({pool})");
    let denom = lf.ln_choose(pool, n);
    (0..pool)
        .map(|i| if i + 1 < n { 0.0 } else { (lf.ln_choose(i, n - 1) - denom).exp() })
        .collect()
}

/// Indices that sort `scores` ascending (stable: equal scores keep pool order).
pub fn ascending_order(scores: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    idx
}

/// Expected `values` under best-of-n: `Σ_i weights[i] · values[order[i]]`.
pub fn expect(order: &[usize], weights: &[f64], values: &[f32]) -> f64 {
    order.iter().zip(weights).map(|(&j, &w)| w * values[j] as f64).sum()
}

/// The grid of n: powers of two up to `pool`, and `pool` itself.
pub fn n_grid(pool: usize) -> Vec<usize> {
    let mut v: Vec<usize> = std::iter::successors(Some(1usize), |&n| n.checked_mul(2))
        .take_while(|&n| n <= pool)
        .collect();
    if v.last() != Some(&pool) {
        v.push(pool);
    }
    v
}

/// `ln n − (n−1)/n`: the analytic KL(best-of-n ‖ π_ref), an upper bound on the true KL
/// (Beirami et al. 2024), exact for a continuous score distribution.
pub fn kl_bound(n: usize) -> f64 {
    let n = n as f64;
    n.ln() - (n - 1.0) / n
}

/// KL(best-of-n ‖ π_ref) over the pool, read as the empirical distribution of π_ref: the
/// same definition for every pool. `group[i]` names the distinct response sample i is
/// (equal responses share a group and a score); `order` sorts the pool by score ascending
/// (ties in pool order, as for [`weights`]). Distinct response j, in score order, has π_ref
/// mass `p_j = m_j / N` (m_j its copies among the N samples) and best-of-n mass
/// `q_j = F_j^n − F_{j−1}^n`, F the CDF of p in score order (the best of n independent
/// draws from p); the KL is `Σ_j q_j ln(q_j / p_j)`. It is at most [`kl_bound`]`(n)`, and
/// below it even when no response repeats (N distinct samples: q_j = (j^n − (j−1)^n)/N^n).
pub fn kl_exact(order: &[usize], group: &[u32], n: usize) -> f64 {
    // Masses of the distinct responses in score order (first appearance in `order`).
    let mut first: std::collections::HashMap<u32, usize> = std::collections::HashMap::with_capacity(order.len());
    let mut masses: Vec<usize> = Vec::new();
    for &i in order {
        match first.get(&group[i]) {
            Some(&k) => masses[k] += 1,
            None => {
                first.insert(group[i], masses.len());
                masses.push(1);
            }
        }
    }
    discrete_kl(&masses, order.len(), n)
}

fn discrete_kl(masses: &[usize], pool: usize, n: usize) -> f64 {
    let (mut cum, mut kl) = (0usize, 0f64);
    for &m in masses {
        let f_prev = cum as f64 / pool as f64;
        cum += m;
        let f = cum as f64 / pool as f64;
        let q = f.powi(n as i32) - f_prev.powi(n as i32);
        if q > 0.0 {
            kl += q * (q / (m as f64 / pool as f64)).ln();
        }
    }
    kl
}

/// Scores of a pool of `prompts × size` samples (prompt-major), for one ensemble.
#[derive(Debug, Clone, Copy)]
pub struct PoolView<'a> {
    pub prompts: usize,
    pub size: usize,
    /// Standardized gold score of every sample.
    pub gold: &'a [f32],
    /// Distinct-response id of every sample within its prompt (for `kl_exact`).
    pub groups: &'a [u32],
    /// Response length (content tokens) of every sample.
    pub length: &'a [f32],
    /// Distinct tokens / length of every sample's response (1 for an empty one).
    pub distinct_ratio: &'a [f32],
    /// The held-out proxy's standardized score of every sample, if there is one.
    pub heldout: Option<&'a [f32]>,
}

/// One point of a best-of-n curve, averaged over prompts.
#[derive(Debug, Clone, PartialEq)]
pub struct BonPoint {
    pub n: usize,
    pub kl_bound: f64,
    /// Mean over prompts of [`kl_exact`].
    pub kl_exact: f64,
    /// Gold of best-of-n: mean over prompts, and its standard error over prompts.
    pub gold: f64,
    pub gold_se: f64,
    /// What best-of-n selects besides gold: means over prompts.
    pub measures: Measures,
    /// Gold at the curve's peak n (the n with the highest mean gold) minus gold at this n,
    /// and the standard error of that difference paired over prompts (the between-prompt
    /// spread, shared by both points, cancels).
    pub gold_below_peak: f64,
    pub gold_below_peak_se: f64,
}

/// What best-of-n selects for one prompt at one n, in expectation over the draw (each
/// measure through the unbiased estimator): one row of the best-of-n unit tables.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub gold: f64,
    /// The aggregated proxy score (what is optimized).
    pub proxy: f64,
    /// Each member's score.
    pub members: Vec<f64>,
    /// The population variance of the member scores.
    pub disagreement: f64,
    /// The KL of the pool's discrete best-of-n distribution ([`kl_exact`]).
    pub kl_exact: f64,
    /// Response length (content tokens) and distinct-token ratio.
    pub length: f64,
    pub distinct_ratio: f64,
    /// The held-out proxy's score, where the experiment has one.
    pub heldout: Option<f64>,
}

/// The unit tables' value columns of [`Selection`] for an ensemble of `k` members, in the
/// order the tables have them.
pub fn unit_columns(k: usize) -> Vec<String> {
    let mut c = vec!["gold".to_string(), "proxy".to_string()];
    c.extend((0..k).map(|m| format!("member_{m}")));
    c.extend(["disagreement", "kl_exact", "length", "distinct_ratio", "heldout"].map(String::from));
    c
}

/// Best-of-n of one aggregator over one pool, per prompt: `out[prompt][j]` is what
/// best-of-`ns[j]` selects. `members[m]` are member m's standardized scores of every pool
/// sample. Every aggregator sorts the same pool; gold and the members' scores are read
/// through that order, so they stay with their samples.
pub fn per_prompt(
    agg: crate::stats::aggregate::Aggregator,
    members: &[&[f32]],
    pool: PoolView,
    ns: &[usize],
    lf: &LogFactorials,
) -> Vec<Vec<Selection>> {
    let (p, size) = (pool.prompts, pool.size);
    let k = members.len();
    let w: Vec<Vec<f64>> = ns.iter().map(|&n| weights(size, n, lf)).collect();
    let mut buf = vec![0f32; k];
    (0..p)
        .map(|prompt| {
            let range = prompt * size..(prompt + 1) * size;
            let agg_scores: Vec<f32> = range
                .clone()
                .map(|i| {
                    for (b, m) in buf.iter_mut().zip(members) {
                        *b = m[i];
                    }
                    agg.apply(&buf)
                })
                .collect();
            let var: Vec<f32> = range
                .clone()
                .map(|i| {
                    for (b, m) in buf.iter_mut().zip(members) {
                        *b = m[i];
                    }
                    crate::stats::aggregate::population_variance(&buf) as f32
                })
                .collect();
            let gold = &pool.gold[range.clone()];
            let groups = &pool.groups[range.clone()];
            let order = ascending_order(&agg_scores);
            ns.iter()
                .zip(&w)
                .map(|(&n, wn)| Selection {
                    gold: expect(&order, wn, gold),
                    proxy: expect(&order, wn, &agg_scores),
                    members: members.iter().map(|member| expect(&order, wn, &member[range.clone()])).collect(),
                    disagreement: expect(&order, wn, &var),
                    kl_exact: kl_exact(&order, groups, n),
                    length: expect(&order, wn, &pool.length[range.clone()]),
                    distinct_ratio: expect(&order, wn, &pool.distinct_ratio[range.clone()]),
                    heldout: pool.heldout.map(|h| expect(&order, wn, &h[range.clone()])),
                })
                .collect()
        })
        .collect()
}

/// The curve of per-prompt selections `per` (from [`per_prompt`], prompts concatenated in
/// order): means over prompts, gold's standard error over prompts, and the drop below the
/// peak paired over prompts.
pub fn summarize(per: &[Vec<Selection>], ns: &[usize]) -> Vec<BonPoint> {
    let p = per.len();
    let mean_gold: Vec<f64> = (0..ns.len()).map(|j| per.iter().map(|o| o[j].gold).sum::<f64>() / p as f64).collect();
    let peak = (0..ns.len()).max_by(|&a, &b| mean_gold[a].total_cmp(&mean_gold[b])).unwrap_or(0);
    ns.iter()
        .enumerate()
        .map(|(j, &n)| {
            let mean = |f: &dyn Fn(&Selection) -> f64| mean_se(&per.iter().map(|o| f(&o[j])).collect::<Vec<f64>>()).0;
            let below: Vec<f64> = per.iter().map(|o| o[peak].gold - o[j].gold).collect();
            let (gold_below_peak, gold_below_peak_se) = mean_se(&below);
            let (gold, gold_se) = mean_se(&per.iter().map(|o| o[j].gold).collect::<Vec<f64>>());
            let k = per.first().map_or(0, |o| o[j].members.len());
            BonPoint {
                n,
                kl_bound: kl_bound(n),
                kl_exact: mean(&|s| s.kl_exact),
                gold,
                gold_se,
                measures: Measures {
                    proxy: mean(&|s| s.proxy),
                    members: (0..k).map(|m| mean(&|s| s.members[m])).collect(),
                    disagreement: mean(&|s| s.disagreement),
                    length: mean(&|s| s.length),
                    distinct_ratio: mean(&|s| s.distinct_ratio),
                    heldout: per.first().and_then(|o| o[j].heldout).map(|_| mean(&|s| s.heldout.unwrap_or(f64::NAN))),
                },
                gold_below_peak,
                gold_below_peak_se,
            }
        })
        .collect()
}

/// Best-of-n curve of one aggregator over one pool: [`summarize`] of [`per_prompt`].
pub fn curve(
    agg: crate::stats::aggregate::Aggregator,
    members: &[&[f32]],
    pool: PoolView,
    ns: &[usize],
    lf: &LogFactorials,
) -> Vec<BonPoint> {
    summarize(&per_prompt(agg, members, pool, ns, lf), ns)
}


/// Distinct-response ids within each prompt's block of `size` responses.
pub fn group_ids(responses: &[crate::world::Response], size: usize) -> Vec<u32> {
    let mut out = Vec::with_capacity(responses.len());
    for block in responses.chunks(size) {
        let mut ids: std::collections::HashMap<&crate::world::Response, u32> = std::collections::HashMap::new();
        for r in block {
            let next = ids.len() as u32;
            out.push(*ids.entry(r).or_insert(next));
        }
    }
    out
}
