//! The conclusions' statistics: the fall of the expected curve calibrated on synthetic studies
//! whose replicates wiggle around a flat expected curve (no false positives beyond the nominal
//! rate at 3, 6, 12 and 30 replicates, best-of-n- and PPO-shaped curves, wiggles from small to
//! larger than the unit noise), a real fall found at the power the formula says; paired gaps,
//! intervals and the worst case for a failed run against hand values; the stopping rule chosen
//! by cross-validation graded on the replicate left out; families and adjusted verdicts.

use goodhart::stats::conclusions::{
    across, claims, conclusions, cross_validate, fall_in_sample, fall_units, regret_units, stop_claims, t_interval, Family, Over,
    Settings, StopRule, UnitCurve,
};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

fn curve(method: &str, replicate: u64, aggregator: &str, beta: Option<f64>, gold: Vec<Vec<f64>>) -> UnitCurve {
    let points = gold.len();
    let units = gold[0].len();
    let zeros = vec![vec![0.0; units]; points];
    UnitCurve {
        method: method.into(),
        traits: goodhart::plan::kinds::traits(method),
        replicate,
        ensemble: "xs/d500/n0.25".into(),
        aggregator: aggregator.into(),
        kl_penalty: beta,
        kl: (0..points).map(|i| i as f64).collect(),
        at: (0..points).map(|i| if method == "bon" { format!("n={}", 1 << i) } else { format!("step {}", 10 * i) }).collect(),
        gold,
        proxy: zeros.clone(),
        member_mean: zeros.clone(),
        other_members: None,
        disagreement: zeros,
        heldout: None,
    }
}

/// The shape of a synthetic study's curves.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// Best-of-n: 13 points (n = 1 … 4,096), 12 prompts per replicate; a prompt's values along
    /// n are a random walk (best-of-n of one pool moves smoothly in n); the replicate's own
    /// proxies bend its curve: a random walk over the points, mean 0 at every point.
    Bon,
    /// PPO: 7 evaluation checkpoints, 64 fresh samples each (independent across checkpoints);
    /// the run's trajectory wanders: independent per-checkpoint offsets, mean 0.
    Ppo,
}

/// One synthetic replicate: `mean[point]` (the expected curve) plus the replicate's wiggle of
/// size `wiggle` plus unit noise of size 1.
fn replicate(rng: &mut rand::rngs::StdRng, shape: Shape, mean: &[f64], wiggle: f64, r: u64) -> UnitCurve {
    let z = Normal::new(0.0, 1.0).unwrap();
    let points = mean.len();
    let (method, units) = match shape {
        Shape::Bon => ("bon", 12),
        Shape::Ppo => ("ppo", 64),
    };
    let mut w = vec![0.0; points];
    let mut walk = 0.0;
    for (k, wk) in w.iter_mut().enumerate() {
        *wk = match shape {
            Shape::Bon => {
                if k > 0 {
                    walk += wiggle * z.sample(rng) / (points as f64).sqrt() * 2.0;
                }
                walk
            }
            Shape::Ppo => {
                if k == 0 {
                    0.0
                } else {
                    wiggle * z.sample(rng)
                }
            }
        };
    }
    let mut gold = vec![vec![0.0; units]; points];
    for u in 0..units {
        let offset = z.sample(rng);
        let mut unit_walk = 0.0;
        for k in 0..points {
            let noise = match shape {
                Shape::Bon => {
                    unit_walk += 0.3 * z.sample(rng);
                    offset + unit_walk
                }
                Shape::Ppo => z.sample(rng),
            };
            gold[k][u] = mean[k] + w[k] + noise;
        }
    }
    curve(method, r, "member0", if method == "ppo" { Some(0.0) } else { None }, gold)
}

fn points(shape: Shape) -> usize {
    match shape {
        Shape::Bon => 13,
        Shape::Ppo => 7,
    }
}

/// Over `trials` synthetic studies of `reps` replicates: how often the fall's unadjusted 95%
/// interval is above 0, and the per-study claims' fall estimates and replicate spreads.
fn fall_rate(shape: Shape, mean: &[f64], wiggle: f64, reps: usize, trials: usize, seed: u64) -> (f64, Vec<(f64, f64)>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut holds = 0;
    let mut stats = Vec::new();
    for _ in 0..trials {
        let curves: Vec<UnitCurve> = (0..reps).map(|r| replicate(&mut rng, shape, mean, wiggle, r as u64)).collect();
        let all = claims(&curves);
        let fall = all.iter().find(|c| c.kind == "overopt").expect("an overopt claim");
        assert_eq!(fall.estimand, "expected curve");
        assert_eq!(fall.interval.replicates, reps);
        assert_eq!(fall.interval.candidates, points(shape) - 1, "simultaneous over every point but the last");
        if fall.interval.verdict() == "holds" {
            holds += 1;
        }
        stats.push((fall.interval.estimate, fall.interval.sd));
    }
    (holds as f64 / trials as f64, stats)
}

#[test]
fn the_expected_curves_fall_is_calibrated_under_replicate_level_wiggles() {
    // 1,000 flat studies per setting: the nominal one-sided rate of a two-sided 95% interval
    // is 2.5%; allow sampling error (s.e. ≈ 0.5 points): at most 5%.
    for shape in [Shape::Bon, Shape::Ppo] {
        let flat = vec![0.0; points(shape)];
        for (i, &wiggle) in [0.1, 0.5, 2.0].iter().enumerate() {
            for (j, &reps) in [3, 6, 12, 30].iter().enumerate() {
                let (rate, _) = fall_rate(shape, &flat, wiggle, reps, 1000, 100 + 10 * i as u64 + j as u64);
                // Shown with `--nocapture`: the rates the README quotes.
                eprintln!("calibration {shape:?} wiggle {wiggle} replicates {reps}: holds {:.1}%", 100.0 * rate);
                assert!(
                    rate <= 0.05,
                    "{} curves, wiggle {wiggle}, {reps} replicates: the fall held on {:.1}% of flat studies",
                    if matches!(shape, Shape::Bon) { "best-of-n" } else { "PPO" },
                    100.0 * rate
                );
            }
        }
    }
}

#[test]
fn each_replicates_own_peak_would_find_a_fall_on_flat_studies() {
    // What the old estimand did: each replicate's own curve, cross-fitted over its units,
    // tends to (its max) − (its last point), which a flat expected curve with wiggling
    // replicates makes positive. The expected-curve fall must not inherit that.
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let flat = vec![0.0; 7];
    let trials = 300;
    let mut own = 0;
    for _ in 0..trials {
        let curves: Vec<UnitCurve> = (0..12).map(|r| replicate(&mut rng, Shape::Ppo, &flat, 1.0, r)).collect();
        let per: Vec<Vec<f64>> = curves.iter().map(|c| fall_units(c).unwrap()).collect();
        if across(&per).unwrap().verdict() == "holds" {
            own += 1;
        }
    }
    assert!(own as f64 / trials as f64 > 0.5, "each replicate's own fall held on only {own} of {trials} flat studies");
}

#[test]
fn a_real_fall_is_found_at_the_power_the_formula_gives() {
    // A PPO-shaped rise and fall of 0.6 (in unit-noise units) with replicate wiggles of 0.5.
    let mean = [0.0, 0.4, 0.6, 0.45, 0.3, 0.15, 0.0];
    let (rate, stats) = fall_rate(Shape::Ppo, &mean, 0.5, 12, 600, 77);
    // The power a report would claim for 12 replicates, from the effect and the spread
    // of the replicates' fall values (their population values, pooled over the studies).
    let effect = stats.iter().map(|s| s.0).sum::<f64>() / stats.len() as f64;
    let sd = (stats.iter().map(|s| s.1 * s.1).sum::<f64>() / stats.len() as f64).sqrt();
    // The interval is simultaneous over the 6 points the peak could be at (Bonferroni), so
    // the report's formula is the power at the peak alone, at level 0.05 / 6: a lower bound
    // on the power of the max over the points, which the other points can only add to.
    // At the true peak (0.6 above the last point; replicate spread √(2·0.5² + 2/64) ≈ 0.73)
    // it must not claim more than is found, nor much less; at the report's inputs (the
    // cross-fitted estimate, the spread at the deciding point), likewise.
    let truth = goodhart::stats::t_test_power(0.6, (2.0 * 0.25f64 + 2.0 / 64.0).sqrt(), 12, 0.05 / 6.0);
    let formula = goodhart::stats::t_test_power(effect, sd, 12, 0.05 / 6.0);
    // The test is one-sided in effect ("holds" only), the formula two-sided: the lower tail
    // is negligible at this effect. Simulation s.e. ≈ 2 points.
    // Shown with `--nocapture`: the numbers the README quotes.
    eprintln!("power: found in {:.1}%; formula at the true peak {:.1}%, at the report's estimates {:.1}%", 100.0 * rate, 100.0 * truth, 100.0 * formula);
    assert!(rate > 0.3, "the fall was found in {:.1}% of studies only", 100.0 * rate);
    for (what, f) in [("at the true peak", truth), ("at the report's estimates", formula)] {
        assert!(f <= rate + 0.04 && rate - f < 0.15, "found in {:.1}%, the formula {what} says {:.1}%", 100.0 * rate, 100.0 * f);
    }
    // And a rising curve is never called a fall.
    let rising: Vec<f64> = (0..7).map(|k| k as f64 / 6.0).collect();
    let (up, _) = fall_rate(Shape::Ppo, &rising, 0.5, 12, 300, 78);
    assert!(up <= 0.05, "a rising curve was called a fall in {:.1}%", 100.0 * up);
}

#[test]
fn two_replicates_give_an_estimate_without_a_verdict_and_one_replicate_its_own_run() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let shape: Vec<f64> = (0..7).map(|k| if k <= 2 { k as f64 } else { 2.0 - (k - 2) as f64 * 0.4 }).collect();
    let two: Vec<UnitCurve> = (0..2).map(|r| replicate(&mut rng, Shape::Ppo, &shape, 0.1, r)).collect();
    let fall = claims(&two).into_iter().find(|c| c.kind == "overopt").unwrap();
    assert!(fall.interval.low.is_nan() && fall.p_value.is_nan(), "{fall:?}");
    assert_eq!(fall.verdict, "inconclusive");
    assert!(fall.note.contains("too few"), "{}", fall.note);
    assert!(fall.interval.estimate > 1.0);
    let one = vec![replicate(&mut rng, Shape::Ppo, &shape, 0.1, 0)];
    let fall = claims(&one).into_iter().find(|c| c.kind == "overopt").unwrap();
    assert_eq!(fall.estimand, "one run's curve");
    assert_eq!(fall.interval.over, Over::Units);
    assert_eq!(fall.verdict, "holds");
}

#[test]
fn the_fall_is_measured_at_the_peak_of_the_other_replicates_mean_curve() {
    // Three replicates, 2 units, 3 points (mean gold per point):
    //   r0 [0, 2, 0], r1 [0, 1, 0], r2 [0, 0, 3]: r0's fall is measured where r1 and r2's mean
    //   [0, 0.5, 1.5] peaks (point 2): 0 − 0 = 0; r1's where r0, r2's [0, 1, 1.5] peaks (2): 0;
    //   r2's where r0, r1's [0, 1.5, 0] peaks (1): 0 − 3 = −3. Estimate −1.
    let cs: Vec<UnitCurve> = [[0.0, 2.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]]
        .iter()
        .enumerate()
        .map(|(r, g)| curve("ppo", r as u64, "member0", Some(0.0), g.iter().map(|&v| vec![v, v]).collect()))
        .collect();
    let fall = claims(&cs).into_iter().find(|c| c.kind == "overopt").unwrap();
    assert!((fall.interval.estimate + 1.0).abs() < 1e-12, "{fall:?}");
    assert!(fall.note.contains("step 20 in 2 of 3 folds, step 10 in 1"), "{}", fall.note);
    // The in-sample within-run fall of r2 would be 0 (it peaks at its last point), r0's 2.
    assert_eq!(fall_in_sample(&cs[0]), Some(2.0));
}

#[test]
fn paired_gaps_and_intervals_match_hand_values() {
    // Two replicates, 2 units, 2 points; gold at the last point:
    //   wco:    r0 [1.0, 2.0]  r1 [0.5, 0.5]
    //   member0 r0 [0.0, 1.0]  r1 [0.0, 0.0];  member1 r0 [1.0, 0.0]  r1 [1.0, 0.0]
    // single pools the members unit by unit: r0 [0.5, 0.5], r1 [0.5, 0.0].
    // wco − single: r0 [0.5, 1.5] → 1.0;  r1 [0.0, 0.5] → 0.25.
    let two = |last: [f64; 2]| vec![vec![0.0, 0.0], last.to_vec()];
    let cs = vec![
        curve("bon", 0, "wco", None, two([1.0, 2.0])),
        curve("bon", 1, "wco", None, two([0.5, 0.5])),
        curve("bon", 0, "member0", None, two([0.0, 1.0])),
        curve("bon", 1, "member0", None, two([0.0, 0.0])),
        curve("bon", 0, "member1", None, two([1.0, 0.0])),
        curve("bon", 1, "member1", None, two([1.0, 0.0])),
    ];
    let all = claims(&cs);
    let gap = all.iter().find(|c| c.kind == "gap" && c.aggregator == "wco" && c.baseline == "single" && c.at == "final").unwrap();
    let (m, sd) = (0.625, ((1.0f64 - 0.625).powi(2) + (0.25f64 - 0.625).powi(2)).sqrt());
    let half = 12.706_204_736 * sd / 2f64.sqrt();
    assert!((gap.interval.estimate - m).abs() < 1e-12);
    assert!((gap.interval.low - (m - half)).abs() < 1e-6 && (gap.interval.high - (m + half)).abs() < 1e-6);
    assert!((gap.interval.sd - sd).abs() < 1e-12);
    // t = m / (sd/√2) = 1.6667 on 1 df: p = 1 − (2/π)·atan(t) = 0.34404.
    let t = m / (sd / 2f64.sqrt());
    let p = 1.0 - 2.0 / std::f64::consts::PI * t.atan();
    assert!((gap.interval.p_value - p).abs() < 1e-9, "{} vs {p}", gap.interval.p_value);
    assert_eq!((gap.interval.replicates, gap.replicates_total), (2, 2));
    assert_eq!(gap.interval.over, Over::Replicates);
    assert_eq!(gap.verdict, "inconclusive");
    // With one replicate the interval is over units, and says so.
    let one = across(&[vec![0.5, 1.5, 1.0, 1.0]]).unwrap();
    assert_eq!(one.over, Over::Units);
    assert!((one.estimate - 1.0).abs() < 1e-12);
    let half1 = 3.182_446_305 * (0.5f64 / 3.0).sqrt() / 2.0;
    assert!((one.low - (1.0 - half1)).abs() < 1e-6);
    assert_eq!(one.verdict(), "holds");
}

#[test]
fn ppo_gaps_are_also_taken_at_a_matched_kl() {
    // wco reaches KL 2, the member KL 4: matched at 2, where the member is interpolated.
    let mut a = curve("ppo", 0, "wco", Some(0.0), vec![vec![0.0, 0.0], vec![1.0, 1.0], vec![2.0, 2.0]]);
    a.kl = vec![0.0, 1.0, 2.0];
    let mut b = curve("ppo", 0, "member0", Some(0.0), vec![vec![0.0, 0.0], vec![2.0, 1.0], vec![4.0, 2.0]]);
    b.kl = vec![0.0, 2.0, 4.0];
    let mut a1 = a.clone();
    a1.replicate = 1;
    let mut b1 = b.clone();
    b1.replicate = 1;
    let all = claims(&[a, b, a1, b1]);
    let matched = all.iter().find(|c| c.kind == "gap" && c.at.starts_with("matched")).unwrap();
    // member at KL 2: [2.0, 1.0]; wco [2.0, 2.0] → differences [0, 1], mean 0.5 in both replicates.
    assert!((matched.interval.estimate - 0.5).abs() < 1e-12, "{matched:?}");
    let last = all.iter().find(|c| c.kind == "gap" && c.at == "final").unwrap();
    // At the last points: wco [2, 2] − member [4, 2] = [−2, 0] → −1.
    assert!((last.interval.estimate + 1.0).abs() < 1e-12);
}

#[test]
fn a_failed_run_is_counted_and_the_verdict_must_survive_its_worst_case() {
    // PPO, three replicates, 2 units, 3 points. wco's run failed in replicate 2.
    //   member0: r0, r1, r2 gold per point [0, 1, 0.5] (both units)
    //   wco:     r0 [0, 1, 1.5], r1 [0, 1, 1.4]; r2 missing.
    // wco − single at the last point: r0 1.0, r1 0.9 → 0.95 over 2 of 3 replicates.
    // The worst gold any run of the setting reached: 0 (the first points). With r2's wco at 0
    // throughout: r2's gap = 0 − 0.5 = −0.5 → worst case mean (1.0 + 0.9 − 0.5)/3 = 0.4667.
    let g = |v: [f64; 3]| v.iter().map(|&x| vec![x, x]).collect::<Vec<_>>();
    let mut cs = Vec::new();
    for r in 0..3 {
        cs.push(curve("ppo", r, "member0", Some(0.0), g([0.0, 1.0, 0.5])));
    }
    cs.push(curve("ppo", 0, "wco", Some(0.0), g([0.0, 1.0, 1.5])));
    cs.push(curve("ppo", 1, "wco", Some(0.0), g([0.0, 1.0, 1.4])));
    let all = claims(&cs);
    let gap = all.iter().find(|c| c.kind == "gap" && c.aggregator == "wco" && c.at == "final").unwrap();
    assert_eq!((gap.interval.replicates, gap.replicates_total), (2, 3));
    assert_eq!(gap.missing, vec![2]);
    assert!((gap.interval.estimate - 0.95).abs() < 1e-12);
    let w = gap.worst_case.expect("a worst case");
    assert!((w.estimate - 1.4 / 3.0).abs() < 1e-12, "{w:?}");
    assert_eq!(w.replicates, 3);
    // The p judged is the larger of the two.
    assert_eq!(gap.p_value, gap.interval.p_value.max(w.p_value));
    assert!(gap.note.contains("runs missing in r2"), "{}", gap.note);
    // A worst case that flips the sign makes the claim inconclusive (p = 1).
    cs.retain(|c| !(c.aggregator == "wco" && c.replicate == 1));
    let mut c1 = curve("ppo", 1, "wco", Some(0.0), g([0.0, 1.0, 0.6]));
    c1.replicate = 1;
    cs.push(c1);
    let all = claims(&cs);
    let gap = all.iter().find(|c| c.kind == "gap" && c.aggregator == "wco" && c.at == "final").unwrap();
    // Without r2: r0 1.0, r1 0.1 → 0.55 > 0; with r2 at its worst: (1.0 + 0.1 − 0.5)/3 = 0.2 > 0:
    // same sign, p = the larger. Make the worst case negative: r2 counted at 0 against 0.5 is
    // −0.5; with r0 and r1 at 0.1 and 0.1 the worst case is −0.1.
    assert!(gap.worst_case.unwrap().estimate > 0.0);
    let cs2: Vec<UnitCurve> = cs
        .iter()
        .map(|c| {
            let mut c = c.clone();
            if c.aggregator == "wco" {
                c.gold[2] = vec![0.6, 0.6];
            }
            c
        })
        .collect();
    let gap = claims(&cs2).into_iter().find(|c| c.kind == "gap" && c.aggregator == "wco" && c.at == "final").unwrap();
    assert!(gap.interval.estimate > 0.0 && gap.worst_case.unwrap().estimate < 0.0);
    assert_eq!(gap.p_value, 1.0);
    assert_eq!(gap.verdict, "inconclusive");
}

#[test]
fn the_cross_validated_choice_is_graded_on_the_replicate_left_out() {
    // Regret per replicate of two rules: A [0, 0, 10], B [1, 1, 1]. On all replicates B wins
    // (3 < 10). Leaving r0 out: A 10, B 2 → B, graded on r0: 1; r1 likewise: 1; leaving r2
    // out: A 0, B 2 → A, graded on r2: 10. Cross-validated: [1, 1, 10], mean 4; choosing on
    // all replicates and grading there would say 1.
    let (graded, folds) = cross_validate(&[vec![0.0, 0.0, 10.0], vec![1.0, 1.0, 1.0]]).unwrap();
    assert_eq!(graded, vec![1.0, 1.0, 10.0]);
    assert_eq!(folds, vec![1, 1, 0]);
    assert!(cross_validate(&[vec![1.0]]).is_none(), "one replicate cannot be cross-validated");
}

#[test]
fn the_stop_claim_grades_each_folds_choice_and_names_the_rule_all_replicates_recommend() {
    // Three replicates; gold per point [0, 1, 0.4, −0.5] in each (the expected peak is point 1).
    // proxy_peak: the proxy peaks at point 1 in r0 and r1 (regret 0) and at point 3 in r2
    // (regret 1.5): total 1.5. heldout_peak: the held-out proxy peaks at point 2 everywhere
    // (regret 0.6 each): total 1.8. penalized_peak: the member mean falls from point 0 (regret
    // 1 each); disagreement_rise never fires (last point, 1.5 each). On all replicates
    // proxy_peak wins; leaving r0 or r1 out, heldout_peak does (1.2 < 1.5), graded 0.6 there;
    // leaving r2 out proxy_peak does (0 < 1.2), graded 1.5 on r2: mean (0.6 + 0.6 + 1.5)/3.
    let curves: Vec<UnitCurve> = (0..3)
        .map(|r| {
            let units = 4;
            let gold: Vec<Vec<f64>> = [0.0, 1.0, 0.4, -0.5].iter().map(|&g| vec![g; units]).collect();
            let mut c = curve("bon", r, "mean", None, gold);
            let proxy = if r < 2 { [0.0, 2.0, 1.0, 0.5] } else { [0.0, 1.0, 2.0, 3.0] };
            c.proxy = proxy.iter().map(|&p| vec![p; units]).collect();
            c.member_mean = [3.0, 2.0, 1.0, 0.0].iter().map(|&m| vec![m; units]).collect();
            c.disagreement = vec![vec![0.1; units]; 4];
            c.heldout = Some([0.0, 1.0, 2.0, 1.0].iter().map(|&h| vec![h; units]).collect());
            c
        })
        .collect();
    assert!(regret_units(&curves[0], StopRule::OtherMembersPeak).is_none(), "not a single member's curve");
    let stops = stop_claims(&curves);
    let rule = |name: &str| stops.iter().find(|c| c.at == "cross-fitted" && c.aggregator == name).unwrap().interval.estimate;
    assert!((rule("proxy_peak") - 0.5).abs() < 1e-12);
    assert!((rule("heldout_peak") - 0.6).abs() < 1e-12);
    let cv = stops.iter().find(|c| c.at == "cross-validated").unwrap();
    assert!((cv.interval.estimate - 0.9).abs() < 1e-12, "{cv:?}");
    assert_eq!(cv.aggregator, "proxy_peak", "the rule all replicates recommend");
    assert!(cv.note.contains("heldout_peak in 2 of 3, proxy_peak in 1 of 3"), "{}", cv.note);
    assert_eq!(cv.interval.replicates, 3);
    assert_eq!(cv.estimand, "expected curve");
}

#[test]
fn primary_claims_are_holm_adjusted_and_the_rest_get_q_values() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let shape: Vec<f64> = (0..13).map(|k| if k <= 6 { k as f64 / 3.0 } else { 2.0 - (k - 6) as f64 / 3.0 }).collect();
    let mut curves: Vec<UnitCurve> = Vec::new();
    for r in 0..6 {
        for agg in ["member0", "member1", "mean", "wco"] {
            let mut c = replicate(&mut rng, Shape::Bon, &shape, 0.2, r);
            c.aggregator = agg.into();
            curves.push(c);
        }
    }
    let all = conclusions(&curves, &Settings::default());
    let primary: Vec<_> = all.iter().filter(|c| c.family == Family::Primary).collect();
    // Of the six default questions, best-of-n's fall (single) and wco − single exist here.
    assert_eq!(primary.len(), 2, "{:?}", primary.iter().map(|c| &c.claim).collect::<Vec<_>>());
    let p: Vec<f64> = primary.iter().map(|c| c.p_value).collect();
    let holm = goodhart::stats::holm(&p);
    for (c, h) in primary.iter().zip(holm) {
        assert_eq!(c.p_adjusted, h);
    }
    let fall = primary.iter().find(|c| c.kind == "overopt").unwrap();
    assert_eq!(fall.verdict, "holds", "{fall:?}");
    let explore: Vec<_> = all.iter().filter(|c| c.family == Family::Exploratory).collect();
    let q = goodhart::stats::benjamini_hochberg(&explore.iter().map(|c| c.p_value).collect::<Vec<_>>());
    for (c, q) in explore.iter().zip(q) {
        assert!(c.p_adjusted == q || (c.p_adjusted.is_nan() && q.is_nan()));
    }
    // A verdict reads the adjusted p: holds only below 0.05 with a positive estimate, and an
    // interval that agrees (the estimate always inside it).
    for c in &all {
        let iv = &c.interval;
        assert!(!(iv.low.is_finite() && iv.high.is_finite()) || (iv.low <= iv.estimate && iv.estimate <= iv.high), "{}: {iv:?}", c.claim);
        let want = if c.p_adjusted < 0.05 && iv.direction() > 0.0 && iv.low > 0.0 {
            "holds"
        } else if c.p_adjusted < 0.05 && iv.direction() < 0.0 && iv.high < 0.0 {
            "reversed"
        } else {
            "inconclusive"
        };
        assert_eq!(c.verdict, want, "{}", c.claim);
    }
}

#[test]
fn primary_questions_are_about_the_configs_first_ensemble_not_the_first_name_in_order() {
    // Two sizes whose names sort the other way round from the config's order ("s" < "xs").
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let shape: Vec<f64> = (0..13).map(|k| (k as f64 / 3.0).min(1.0)).collect();
    let mut curves: Vec<UnitCurve> = Vec::new();
    for r in 0..4 {
        for ensemble in ["s/d500/n0.25", "xs/d500/n0.25"] {
            for (method, shape_of) in [("bon", Shape::Bon), ("ppo", Shape::Ppo)] {
                if method == "ppo" && ensemble.starts_with('s') {
                    continue; // PPO runs on the first size only, as by default
                }
                let mut c = replicate(&mut rng, shape_of, &shape[..points(shape_of)], 0.2, r);
                c.ensemble = ensemble.into();
                c.aggregator = "member0".into();
                curves.push(c);
            }
        }
    }
    let about = |settings: &Settings| -> Vec<String> {
        let all = conclusions(&curves, settings);
        all.iter().filter(|c| c.family == Family::Primary).map(|c| c.ensemble.clone()).collect()
    };
    // Without the config: the size PPO runs on.
    assert_eq!(about(&Settings::default()), ["xs/d500/n0.25", "xs/d500/n0.25"]);
    // With it: its first ensemble, whatever sorts first.
    let mut named = Settings::default();
    named.first_ensemble = "s/d500/n0.25".into();
    assert_eq!(about(&named), ["s/d500/n0.25"]);
}

#[test]
fn an_inconclusive_primary_claim_says_how_many_replicates_would_settle_it() {
    // A small true gap (wco − single 0.1) with a spread across replicates of about 0.5: six
    // replicates cannot show it.
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let z = Normal::new(0.0, 0.5).unwrap();
    let mut curves = Vec::new();
    for r in 0..6 {
        let d = 0.1 + z.sample(&mut rng);
        let g = |last: f64| vec![vec![0.0; 8], vec![last; 8]];
        curves.push(curve("ppo", r, "member0", Some(0.0), g(0.0)));
        curves.push(curve("ppo", r, "wco", Some(0.0), g(d)));
    }
    let settings = Settings::default();
    let all = conclusions(&curves, &settings);
    let gap = all.iter().find(|c| c.kind == "gap" && c.aggregator == "wco" && c.at == "final").unwrap();
    assert_eq!(gap.family, Family::Primary);
    assert_eq!(gap.verdict, "inconclusive");
    let m = all.iter().filter(|c| c.family == Family::Primary && c.p_value.is_finite()).count();
    let alpha = 0.05 / m as f64;
    let n = gap.replicates_needed.expect("replicates needed at the observed effect");
    let power = |n: usize, e: f64| goodhart::stats::t_test_power(e, gap.interval.sd, n, alpha);
    assert!(power(n, gap.interval.estimate) >= 0.8 && power(n - 1, gap.interval.estimate) < 0.8);
    let n_min = gap.replicates_needed_min_effect.expect("at the smallest effect of interest");
    assert!(power(n_min, settings.smallest_effect) >= 0.8 && power(n_min - 1, settings.smallest_effect) < 0.8);
    // Without a cost model there are no CPU-hours; a claim that holds has no power line.
    assert!(gap.cpu_hours_needed.is_none());
    assert!(all.iter().filter(|c| c.verdict != "inconclusive").all(|c| c.replicates_needed.is_none()));
}

#[test]
fn t_intervals_need_two_finite_values() {
    assert!(t_interval(&[1.0], Over::Replicates, 1).is_none());
    assert!(t_interval(&[1.0, f64::NAN], Over::Replicates, 2).is_none());
    let iv = t_interval(&[1.0, 1.0, 1.0], Over::Replicates, 3).unwrap();
    assert_eq!((iv.estimate, iv.p_value), (1.0, 0.0));
}

#[test]
fn methods_are_compared_at_matched_kl_on_their_single_lines_best_of_n_by_replicate() {
    let g = |last: f64| vec![vec![0.0, 0.0], vec![1.0, 1.0], vec![last, last]];
    let mut cs = Vec::new();
    for r in 0..3u64 {
        cs.push(curve("ppo", r, "member0", Some(0.0), g(2.0 + 0.1 * r as f64)));
        // A larger β of the same method is not its line: the smallest is.
        cs.push(curve("ppo", r, "member0", Some(0.5), g(9.0)));
        cs.push(curve("grpo", r, "member0", Some(0.0), g(0.5)));
        cs.push(curve("bon", r, "member0", None, g(5.0)));
    }
    let all: Vec<_> = claims(&cs).into_iter().filter(|c| c.kind == "vs").collect();
    // Best-of-n's units are other prompts: it is compared by each replicate's means,
    // 5 − 0.5 at KL 2 against GRPO in every replicate.
    let bon = all.iter().find(|c| c.method == "bon" && c.baseline == "grpo single" && c.at.starts_with("matched")).expect("bon vs grpo");
    assert_eq!(bon.estimand, "paired, per replicate");
    assert!((bon.interval.estimate - 4.5).abs() < 1e-9, "{:?}", bon.interval);
    let vs: Vec<_> = all.into_iter().filter(|c| c.method == "grpo").collect();
    // Every budget both reach in every replicate (0.5, 1 and 2 nats), then the largest both
    // reach in each.
    let at: Vec<&str> = vs.iter().map(|c| c.at.as_str()).collect();
    assert_eq!(at, ["kl 0.5", "kl 1", "kl 2", "matched kl (mean 2.00 nats)"], "{vs:#?}");
    for c in &vs {
        assert_eq!((c.method.as_str(), c.baseline.as_str(), c.kl_penalty), ("grpo", "ppo single", Some(0.0)));
        assert!(c.claim.starts_with("GRPO keeps more gold than PPO at"), "{}", c.claim);
    }
    // At KL 1 both curves are at 1; at KL 2 (their last point) 0.5 − (2 + 0.1r), r = 0, 1, 2.
    assert!(vs[1].interval.estimate.abs() < 1e-9, "{:?}", vs[1].interval);
    for c in &vs[2..] {
        assert!((c.interval.estimate + 1.6).abs() < 1e-9, "{:?}", c.interval);
        assert_eq!(c.interval.replicates, 3);
        assert_eq!(c.verdict, "reversed");
    }
}

#[test]
fn cross_method_claims_are_calibrated_when_two_methods_share_the_expected_curve() {
    // Two policy methods with the same expected curve (a rise and fall), each replicate's run
    // wiggling on its own (size 0.5) over unit noise of 1, on the same units: every `vs`
    // claim (budgets 0.5, 1, 2, 4 nats and the largest both reach) is decided (holds or
    // reversed) at the nominal two-sided 5%; the five claims of a study are correlated, so
    // allow about two standard errors of 600 studies: at most 7% (measured: 4.9%).
    let mean = [0.0, 0.4, 0.6, 0.45, 0.3, 0.15, 0.0];
    let mut rng = rand::rngs::StdRng::seed_from_u64(31);
    let (mut decided, mut total) = (0usize, 0usize);
    for _ in 0..600 {
        let mut curves = Vec::new();
        for r in 0..6u64 {
            curves.push(replicate(&mut rng, Shape::Ppo, &mean, 0.5, r));
            let mut other = replicate(&mut rng, Shape::Ppo, &mean, 0.5, r);
            other.method = "grpo".into();
            other.traits = goodhart::plan::kinds::traits("grpo");
            curves.push(other);
        }
        for c in claims(&curves).iter().filter(|c| c.kind == "vs") {
            total += 1;
            if c.interval.verdict() != "inconclusive" {
                decided += 1;
            }
        }
    }
    assert_eq!(total, 600 * 5, "five vs claims per study");
    let rate = decided as f64 / total as f64;
    eprintln!("vs calibration: decided {:.1}%", 100.0 * rate);
    assert!(rate <= 0.07, "a vs claim was decided on {:.1}% of null studies", 100.0 * rate);
}

#[test]
fn shaped_groups_are_compared_with_themselves_unshaped_and_with_single() {
    // Two replicates, 2 units, 2 points (step 0: all 0); gold at the last point:
    //   member0 r0 [0, 1]  r1 [0, 0];    member1 r0 [1, 0]  r1 [1, 0]  → single r0 [.5, .5]  r1 [.5, 0]
    //   member0+par r0 [1, 2]  r1 [1, 2]; member1+par r0 [2, 1]  r1 [2, 1] → single+par [1.5, 1.5] both
    //   mean r0 [.5, .5]  r1 [0, .5];    mean+par r0 [1, 1.5]  r1 [.5, .5]
    // single+par − single: r0 [1, 1] → 1, r1 [1, 1.5] → 1.25: 1.125.
    // mean+par − mean: r0 [.5, 1] → .75, r1 [.5, 0] → .25: 0.5; mean+par − single: .75, .25: 0.5.
    let two = |last: [f64; 2]| vec![vec![0.0, 0.0], last.to_vec()];
    let beta = Some(0.1);
    let runs = [
        ("member0", [[0.0, 1.0], [0.0, 0.0]]),
        ("member1", [[1.0, 0.0], [1.0, 0.0]]),
        ("member0+par", [[1.0, 2.0], [1.0, 2.0]]),
        ("member1+par", [[2.0, 1.0], [2.0, 1.0]]),
        ("mean", [[0.5, 0.5], [0.0, 0.5]]),
        ("mean+par", [[1.0, 1.5], [0.5, 0.5]]),
    ];
    let curves: Vec<UnitCurve> = runs.iter().flat_map(|(agg, last)| (0..2).map(move |r| curve("ppo", r, agg, beta, two(last[r as usize])))).collect();
    let all = claims(&curves);
    let final_gap = |agg: &str, baseline: &str| {
        all.iter()
            .find(|c| c.kind == "gap" && c.aggregator == agg && c.baseline == baseline && c.at == "final")
            .unwrap_or_else(|| panic!("no gap {agg} − {baseline}"))
    };
    let par = final_gap("single+par", "single");
    assert!((par.interval.estimate - 1.125).abs() < 1e-12, "{par:?}");
    assert_eq!(par.claim, "PPO: single+par keeps more gold than single at the last point (xs/d500/n0.25, β = 0.1)");
    assert!((final_gap("mean+par", "mean").interval.estimate - 0.5).abs() < 1e-12);
    assert!((final_gap("mean+par", "single").interval.estimate - 0.5).abs() < 1e-12);
    // The shaped groups get their fall and peak; shaped members pool, never stand alone.
    for g in ["single+par", "mean+par"] {
        for kind in ["overopt", "peak"] {
            assert!(all.iter().any(|c| c.kind == kind && c.aggregator == g), "no {kind} of {g}");
        }
    }
    assert!(all.iter().all(|c| !c.aggregator.starts_with("member") && c.baseline != "single+par" && c.baseline != "mean+par"));
    // Adding shaped runs leaves the unshaped groups' claims as they were (a method's stopping
    // rules read every curve of it, shaped ones too).
    let plain: Vec<UnitCurve> = curves.iter().filter(|c| !c.aggregator.contains('+')).cloned().collect();
    for c in claims(&plain).into_iter().filter(|c| c.kind != "stop") {
        let same = all.iter().find(|d| (&d.kind, &d.aggregator, &d.baseline, &d.at) == (&c.kind, &c.aggregator, &c.baseline, &c.at)).unwrap();
        assert_eq!(same.interval.estimate.to_bits(), c.interval.estimate.to_bits(), "{}", c.claim);
    }
    // A primary question names a shaped group as it is labelled.
    let settings = Settings {
        primary: vec![goodhart::stats::conclusions::ClaimSelector {
            kind: "gap".into(),
            method: "ppo".into(),
            aggregator: "single+par".into(),
            baseline: "single".into(),
            ensemble: None,
            kl_penalty: None,
            at: None,
        }],
        ..Settings::default()
    };
    let primary: Vec<_> = conclusions(&curves, &settings).into_iter().filter(|c| c.family == Family::Primary).collect();
    assert_eq!(primary.len(), 1);
    assert_eq!((primary[0].aggregator.as_str(), primary[0].at.as_str()), ("single+par", "final"));
}
