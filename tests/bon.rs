//! Best-of-n and aggregation pinned to brute force and hand values.

use goodhart::stats::aggregate::{population_variance, Aggregator};
use goodhart::methods::bon::{ascending_order, expect, kl_bound, kl_exact, n_grid, weights, LogFactorials};
use rand::{Rng, SeedableRng};

/// Mean over all size-n subsets of the value of the subset's highest-scoring sample.
fn brute_force(scores: &[f32], values: &[f32], n: usize) -> f64 {
    let pool = scores.len();
    let (mut total, mut count) = (0f64, 0usize);
    for mask in 0u32..(1 << pool) {
        if mask.count_ones() as usize != n {
            continue;
        }
        let best = (0..pool)
            .filter(|i| mask & (1 << i) != 0)
            .max_by(|&a, &b| scores[a].total_cmp(&scores[b]))
            .unwrap();
        total += values[best] as f64;
        count += 1;
    }
    total / count as f64
}

#[test]
fn estimator_matches_brute_force_on_small_pools() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for pool in [1usize, 2, 5, 9, 12] {
        let lf = LogFactorials::new(pool);
        let scores: Vec<f32> = (0..pool).map(|_| rng.random::<f32>()).collect();
        let gold: Vec<f32> = (0..pool).map(|_| rng.random::<f32>() * 4.0 - 2.0).collect();
        let order = ascending_order(&scores);
        for n in 1..=pool {
            let w = weights(pool, n, &lf);
            assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-9, "weights of n={n} sum to {}", w.iter().sum::<f64>());
            let est = expect(&order, &w, &gold);
            let bf = brute_force(&scores, &gold, n);
            assert!((est - bf).abs() < 1e-5, "pool {pool}, n {n}: estimator {est}, brute force {bf}");
        }
    }
}

#[test]
fn n_one_is_the_pool_mean_and_n_pool_is_the_argmax() {
    let scores = [0.3f32, -1.0, 2.5, 0.0, 1.1];
    let gold = [1.0f32, 2.0, -3.0, 4.0, 5.0];
    let lf = LogFactorials::new(5);
    let order = ascending_order(&scores);
    let mean = gold.iter().sum::<f32>() as f64 / 5.0;
    assert!((expect(&order, &weights(5, 1, &lf), &gold) - mean).abs() < 1e-9);
    // the argmax of the proxy is sample 2, whose gold is −3
    assert!((expect(&order, &weights(5, 5, &lf), &gold) + 3.0).abs() < 1e-9);
}

#[test]
fn gold_stays_aligned_with_its_sample_through_the_sort() {
    // Regression: re-sorting by the aggregated proxy must carry gold along. A pool where
    // gold equals the sample index shows any misalignment at once.
    let scores = [5.0f32, 1.0, 4.0, 2.0, 3.0];
    let gold = [0.0f32, 1.0, 2.0, 3.0, 4.0];
    let order = ascending_order(&scores);
    assert_eq!(order, vec![1, 3, 4, 2, 0]);
    let lf = LogFactorials::new(5);
    // best-of-5 picks sample 0 (score 5) → gold 0, not the gold at sorted position 4.
    assert_eq!(expect(&order, &weights(5, 5, &lf), &gold), 0.0);
    // best-of-4: C(i−1,3)/C(5,4) for ranks 4, 5 → 1/5 on rank 4 (sample 2), 4/5 on rank 5 (sample 0)
    assert!((expect(&order, &weights(5, 4, &lf), &gold) - 0.4).abs() < 1e-9);
}

#[test]
fn weights_stay_finite_for_large_pools() {
    let pool = 1 << 20;
    let lf = LogFactorials::new(pool);
    for n in [1, 2, 1024, pool] {
        let w = weights(pool, n, &lf);
        assert!(w.iter().all(|x| x.is_finite()));
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-6, "n {n}");
    }
}

#[test]
fn kl_bound_values() {
    // python3: [math.log(n) - (n-1)/n for n in (1, 2, 4, 4096)]
    //   [0.0, 0.1931471805599453, 0.6362943611198906, 7.318010307344343]
    for (n, v) in [(1, 0.0), (2, 0.193_147_180_559_945_3), (4, 0.636_294_361_119_890_6), (4096, 7.318_010_307_344_343)] {
        assert!((kl_bound(n) - v).abs() < 1e-12, "n {n}");
    }
    assert_eq!(n_grid(10), vec![1, 2, 4, 8, 10]);
    assert_eq!(n_grid(8), vec![1, 2, 4, 8]);
}

/// KL(best-of-n ‖ pool) by enumerating every ordered n-tuple of independent draws from the
/// pool: the best draw is the highest score (a tie goes to the later sample, as in the
/// stable ascending sort), its response gets the tuple's probability N^−n, and the KL is
/// taken against each distinct response's share of the pool.
fn brute_force_kl(scores: &[f32], groups: &[u32], n: usize) -> f64 {
    let pool = scores.len();
    let mut q: std::collections::HashMap<u32, f64> = std::collections::HashMap::new();
    let tuples = pool.pow(n as u32);
    for t in 0..tuples {
        let (mut rest, mut best) = (t, None::<usize>);
        for _ in 0..n {
            let i = rest % pool;
            rest /= pool;
            best = Some(match best {
                Some(b) if (scores[b], b) > (scores[i], i) => b,
                _ => i,
            });
        }
        *q.entry(groups[best.unwrap()]).or_default() += 1.0 / tuples as f64;
    }
    q.iter()
        .map(|(g, &qg)| {
            let p = groups.iter().filter(|&h| h == g).count() as f64 / pool as f64;
            qg * (qg / p).ln()
        })
        .sum()
}

#[test]
fn kl_exact_matches_brute_force_with_and_without_repeats() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for trial in 0..20 {
        let pool = 2 + trial % 5;
        // Responses drawn from a few distinct ones (equal responses share a score); trial 0
        // and every fifth trial: all distinct.
        let kinds = if trial % 5 == 0 { pool } else { 1 + trial % 3 };
        let kind_scores: Vec<f32> = (0..kinds).map(|_| rng.random::<f32>()).collect();
        let groups: Vec<u32> = (0..pool).map(|i| if kinds == pool { i as u32 } else { rng.random_range(0..kinds as u32) }).collect();
        let scores: Vec<f32> = groups.iter().map(|&g| kind_scores[g as usize]).collect();
        let order = ascending_order(&scores);
        for n in 1..=4.min(pool + 1) {
            let (k, bf) = (kl_exact(&order, &groups, n), brute_force_kl(&scores, &groups, n));
            assert!((k - bf).abs() < 1e-9, "pool {pool}, groups {groups:?}, n {n}: kl_exact {k}, brute force {bf}");
            assert!(k <= kl_bound(n) + 1e-12, "above the bound: {k} > {}", kl_bound(n));
        }
    }
    // Distinct scores tied across two different responses: the later sample ranks higher.
    let (scores, groups) = ([0.5f32, 0.5, 0.1], [0u32, 1, 2]);
    let bf = brute_force_kl(&scores, &groups, 2);
    assert!((kl_exact(&ascending_order(&scores), &groups, 2) - bf).abs() < 1e-12);
}

#[test]
fn kl_exact_hand_values() {
    // No repeats, N = 2, n = 2: q = (1/4, 3/4), p = (1/2, 1/2):
    // python3: 0.25*math.log(0.5) + 0.75*math.log(1.5) = 0.130812035941137
    // (below the bound ln 2 − 1/2 = 0.1931: the pool is a finite sample, one definition).
    let k = kl_exact(&ascending_order(&[0.2, 0.9]), &[0, 1], 2);
    assert!((k - 0.130_812_035_941_137).abs() < 1e-12, "kl_exact {k}");
    // Samples 1 and 3 are the same response (same score); p = (1/4, 1/4, 1/2) in score
    // order (0.1, 0.3, 0.5=0.5). Best-of-2: F = 1/4, 1/2, 1 → q = 1/16, 3/16, 12/16.
    // python3: sum(q*math.log(q/p) for q,p in ((1/16,1/4),(3/16,1/4),(12/16,1/2)))
    //   = 0.163515 (below the bound 0.1931)
    let scores = [0.1f32, 0.5, 0.3, 0.5];
    let order = ascending_order(&scores);
    let groups = [0u32, 1, 2, 1];
    let k = kl_exact(&order, &groups, 2);
    assert!((k - 0.163_515_045).abs() < 1e-6, "kl_exact {k}");
    assert!(k < kl_bound(2));
    // n = 1 is π_ref itself.
    assert!(kl_exact(&order, &groups, 1).abs() < 1e-15);
}

#[test]
fn aggregators_match_hand_values() {
    // scores 1, 2, 6: mean 3, population variance ((−2)² + (−1)² + 3²)/3 = 14/3, min 1, median 2
    let s = [1.0f32, 2.0, 6.0];
    assert!((population_variance(&s) - 14.0 / 3.0).abs() < 1e-9);
    assert_eq!(Aggregator::Mean.apply(&s), 3.0);
    assert_eq!(Aggregator::Wco.apply(&s), 1.0);
    assert_eq!(Aggregator::Median.apply(&s), 2.0);
    assert_eq!(Aggregator::Member(2).apply(&s), 6.0);
    assert!((Aggregator::Uwo(0.5).apply(&s) - (3.0 - 0.5 * 14.0 / 3.0) as f32).abs() < 1e-6);
    assert!((Aggregator::MeanStd(1.0).apply(&s) - (3.0 - (14.0f64 / 3.0).sqrt()) as f32).abs() < 1e-6);
    // Regression: λ = 0 means no penalty (not a weight of 1).
    assert_eq!(Aggregator::Uwo(0.0).apply(&s), 3.0);
    assert_eq!(Aggregator::Median.apply(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    let members = vec![vec![1.0f32, 0.0], vec![2.0, 0.0], vec![6.0, 3.0]];
    assert_eq!(Aggregator::Wco.apply_all(&members), vec![1.0, 0.0]);
}

#[test]
fn response_stats_hand_values() {
    use goodhart::world::Response;
    let r = |t: &[u32]| Response { tokens: t.to_vec(), finished: true };
    let (len, ratio) = goodhart::methods::eval::response_stats(&[r(&[4, 4, 5, 6]), r(&[])]);
    assert_eq!(len, vec![4.0, 0.0]);
    assert_eq!(ratio, vec![0.75, 1.0]);
}

#[test]
fn drop_below_peak_is_paired_over_prompts() {
    // Two prompts of 2 samples; the proxy prefers sample 1 in both. Gold: prompt 0 (0, 1),
    // prompt 1 (10, 8). n = 1 gives the pool mean (0.5, 9), n = 2 the argmax (1, 8).
    // Mean gold: n=1 → 4.75, n=2 → 4.5: the peak is n = 1.
    // Drop at n = 2 per prompt: 0.5 − 1 = −0.5 and 9 − 8 = 1 → mean 0.25,
    // paired se = std([−0.5, 1]) / sqrt(2) = 1.06066 / 1.41421 = 0.75.
    // (The end-point se over prompts, |1 − 8| / 2 = 3.5, is far larger.)
    let gold = [0.0f32, 1.0, 10.0, 8.0];
    let proxy = [0.0f32, 1.0, 0.0, 1.0];
    let groups = [0u32, 1, 0, 1];
    let ones = [1.0f32; 4];
    let view = goodhart::methods::bon::PoolView { prompts: 2, size: 2, gold: &gold, groups: &groups, length: &ones, distinct_ratio: &ones, heldout: None };
    let lf = LogFactorials::new(2);
    let c = goodhart::methods::bon::curve(goodhart::stats::aggregate::Aggregator::Member(0), &[&proxy], view, &[1, 2], &lf);
    assert!((c[0].gold - 4.75).abs() < 1e-9 && (c[1].gold - 4.5).abs() < 1e-9);
    assert_eq!(c[0].gold_below_peak, 0.0);
    assert!((c[1].gold_below_peak - 0.25).abs() < 1e-9);
    assert!((c[1].gold_below_peak_se - 0.75).abs() < 1e-9, "{}", c[1].gold_below_peak_se);
    assert!((c[1].gold_se - 3.5).abs() < 1e-9);
}
